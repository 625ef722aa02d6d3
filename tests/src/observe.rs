//! `Counter` calls as a client sees them, and a check of the record against the contract's
//! "one live activation" rule (8) and "at most once" rule (9), using only real time as the
//! client measured it.
//!
//! Record every call with [`Entry::call`] (one [`Obs`] per call, with when it was sent and
//! when its reply came), then [`check`] the whole record. Calls for one id may overlap
//! (several clients calling it at once through different nodes): the check only uses orderings
//! that the timings prove (a reply received before another call was sent), so overlapping
//! calls never cause a false alarm, and sequential ones are checked as strictly as a replay
//! would.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::{counter, json, with_field, Client, MeshNode};

/// What one `POST /call` to a `Counter` got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 200 with `{"pid", "node", "result": {"ok": <count>}}`.
    Ack {
        count: i64,
        pid: String,
        node: String,
    },
    /// Any other HTTP reply (or a 200 of the wrong shape, with code `malformed`).
    Refused {
        status: u16,
        code: String,
        text: String,
    },
    /// No HTTP reply at all (connection refused, reset, or the client's timeout).
    NoReply(String),
}

impl Outcome {
    /// A short label for tallies: `200`, `503 owner_unavailable`, `no reply`, ...
    pub fn label(&self) -> String {
        match self {
            Outcome::Ack { .. } => "200".to_string(),
            Outcome::Refused { status, code, .. } => format!("{status} {code}"),
            Outcome::NoReply(_) => "no reply".to_string(),
        }
    }

    /// Whether this is a 200.
    pub fn is_ack(&self) -> bool {
        matches!(self, Outcome::Ack { .. })
    }

    /// Whether this is an error reply with this status and code.
    pub fn is_error(&self, status: u16, code: &str) -> bool {
        matches!(self, Outcome::Refused { status: s, code: c, .. } if *s == status && c == code)
    }

    /// 503 `owner_unavailable` or 504 `timeout`: the errors a fault may cause.
    pub fn is_fault_error(&self) -> bool {
        self.is_error(503, "owner_unavailable") || self.is_error(504, "timeout")
    }

    /// Whether the call may have been executed without the caller learning the result
    /// (rule 9: an error reply means "not executed", except `timeout` and `actor_crashed`).
    pub fn maybe_executed(&self) -> bool {
        match self {
            Outcome::Ack { .. } => false,
            Outcome::NoReply(_) => true,
            Outcome::Refused { .. } => {
                self.is_error(504, "timeout") || self.is_error(500, "actor_crashed")
            }
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Ack { count, pid, node } => {
                write!(f, "200 count {count} pid {pid} node {node}")
            }
            Outcome::Refused { text, .. } => write!(f, "{}: {text}", self.label()),
            Outcome::NoReply(e) => write!(f, "no reply: {e}"),
        }
    }
}

/// One call: its id, the entry node, when it was sent (since the test's `t0`), how long it
/// took, what came back.
#[derive(Debug, Clone)]
pub struct Obs {
    pub id: String,
    pub via: String,
    pub at: Duration,
    pub took: Duration,
    pub outcome: Outcome,
}

impl Obs {
    /// When the reply arrived, since `t0`.
    pub fn done(&self) -> Duration {
        self.at + self.took
    }

    /// `(count, pid, node)` of a 200.
    pub fn ack(&self) -> Option<(i64, &str, &str)> {
        match &self.outcome {
            Outcome::Ack { count, pid, node } => Some((*count, pid, node)),
            _ => None,
        }
    }
}

impl std::fmt::Display for Obs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{} sent at {:.3}s via {}, {:.0?}] {}",
            self.id,
            self.at.as_secs_f64(),
            self.via,
            self.took,
            self.outcome
        )
    }
}

/// How long an [`Entry`] keeps an idle connection (see [`Client::with_pool_idle_timeout`]).
const POOL_IDLE: Duration = Duration::from_secs(2);

/// A client of one entry node, remembering the node's id for the record.
#[derive(Debug, Clone)]
pub struct Entry {
    pub node: String,
    pub client: Client,
}

impl Entry {
    /// A client of `node` with this per-request timeout.
    pub fn of(node: &MeshNode, http_timeout: Duration) -> Entry {
        Entry {
            node: node.id().to_string(),
            client: node
                .client()
                .with_timeout(http_timeout)
                .with_pool_idle_timeout(POOL_IDLE),
        }
    }

    /// `POST /call` to the `Counter` `id` with `timeout_ms`, timed from `t0`.
    pub async fn call(&self, t0: Instant, id: &str, timeout_ms: u64) -> Obs {
        let body = with_field(counter(id, json!({})), "timeout_ms", json!(timeout_ms));
        let bytes = serde_json::to_vec(&body).expect("serialize JSON");
        let sent = Instant::now();
        let reply = self
            .client
            .try_post_raw("/call", bytes, Some("application/json"))
            .await;
        let took = sent.elapsed();
        let outcome = match reply {
            Err(e) => Outcome::NoReply(format!("{e:?}")),
            Ok(r) => {
                let b = &r.body;
                match (
                    r.status,
                    b["result"]["ok"].as_i64(),
                    b["pid"].as_str(),
                    b["node"].as_str(),
                ) {
                    (200, Some(count), Some(pid), Some(node)) if !pid.is_empty() => Outcome::Ack {
                        count,
                        pid: pid.to_string(),
                        node: node.to_string(),
                    },
                    (200, ..) => Outcome::Refused {
                        status: 200,
                        code: "malformed".to_string(),
                        text: r.text.clone(),
                    },
                    (status, ..) => Outcome::Refused {
                        status,
                        code: b["error"]["code"].as_str().unwrap_or("?").to_string(),
                        text: r.text.clone(),
                    },
                }
            }
        };
        Obs {
            id: id.to_string(),
            via: self.node.clone(),
            at: sent.duration_since(t0),
            took,
            outcome,
        }
    }
}

/// Tally of outcomes by label.
pub fn tally<'a>(obs: impl IntoIterator<Item = &'a Obs>) -> BTreeMap<String, usize> {
    let mut t = BTreeMap::new();
    for o in obs {
        *t.entry(o.outcome.label()).or_default() += 1;
    }
    t
}

/// At most `max` of `lines`, one a line, and how many were left out.
pub fn listing(lines: &[String], max: usize) -> String {
    let mut out: Vec<String> = lines.iter().take(max).cloned().collect();
    if lines.len() > max {
        out.push(format!("... and {} more", lines.len() - max));
    }
    out.join("\n")
}

/// One pid's replies for one id.
#[derive(Debug, Clone)]
pub struct PidSpan {
    pub pid: String,
    /// The `node` of its first reply.
    pub node: String,
    /// When its first reply was sent.
    pub first_at: Duration,
    /// The lowest count it acknowledged.
    pub first_count: i64,
    /// Whether it continued an earlier pid's count (state handed over) rather than starting
    /// afresh.
    pub continued: bool,
    pub acks: usize,
}

/// What [`check`] found.
#[derive(Debug, Default)]
pub struct Check {
    /// Everything that breaks rule 8 or 9, for a failure message.
    pub violations: Vec<String>,
    /// Ids that a pid answered after another pid had answered after it (rule 8).
    pub superseded: BTreeSet<String>,
    /// Every id's pids, in the order of their first replies.
    pub pids: BTreeMap<String, Vec<PidSpan>>,
    /// Counts missing within a pid's acknowledged counts (explained by calls that may have
    /// been executed without an acknowledgement, or a violation).
    pub skipped: usize,
}

/// Checks every id's record (`obs` in any order) for:
/// - a pid that answers again after another pid answered after it: "an activation that may
///   have been superseded never answers again";
/// - within one pid, a count that does not go up from a reply received before its call was
///   sent, or the same count acknowledged twice (two executions saw the same state);
/// - within one pid, more counts skipped than calls that may have been executed without an
///   acknowledgement (`504 timeout`, no reply);
/// - a new pid whose lowest count is neither fresh (1, or a little more when calls that may
///   have run unacknowledged came first) nor above every count acknowledged before it (state
///   handed over): state went back in time.
pub fn check<'a>(obs: impl IntoIterator<Item = &'a Obs>) -> Check {
    let mut by_id: BTreeMap<&str, Vec<&Obs>> = BTreeMap::new();
    for o in obs {
        by_id.entry(&o.id).or_default().push(o);
    }
    let mut out = Check::default();
    for (id, calls) in by_id {
        let before = out.violations.len();
        check_id(id, &calls, &mut out);
        // A broken id usually breaks many times over: keep the first few.
        if out.violations.len() > before + 4 {
            let extra = out.violations.len() - before - 4;
            out.violations.truncate(before + 4);
            out.violations
                .push(format!("id {id}: {extra} further violations not listed"));
        }
    }
    out
}

fn check_id(id: &str, calls: &[&Obs], out: &mut Check) {
    let maybe = calls.iter().filter(|o| o.outcome.maybe_executed()).count();
    let mut acks: Vec<(&Obs, i64, &str)> = calls
        .iter()
        .filter_map(|o| o.ack().map(|(count, pid, _)| (*o, count, pid)))
        .collect();
    acks.sort_by_key(|(o, ..)| o.at);
    let mut by_pid: BTreeMap<&str, Vec<(&Obs, i64)>> = BTreeMap::new();
    for (o, count, pid) in &acks {
        by_pid.entry(pid).or_default().push((o, *count));
    }

    // Superseded pids answering again.
    for (pid, mine) in &by_pid {
        let first_done = mine.iter().map(|(o, _)| o.done()).min().unwrap();
        // The earliest reply of another pid to a call sent after this pid had answered.
        let Some((sup, ..)) = acks
            .iter()
            .filter(|(o, _, p)| p != pid && o.at > first_done)
            .min_by_key(|(o, ..)| o.done())
        else {
            continue;
        };
        let late: Vec<&&Obs> = mine
            .iter()
            .map(|(o, _)| o)
            .filter(|o| o.at > sup.done())
            .collect();
        if let Some(first_late) = late.first() {
            out.superseded.insert(id.to_string());
            out.violations.push(format!(
                "id {id}: SUPERSEDED pid {pid} answered again ({} times), first: {first_late}; \
                 after it had answered (first reply received at {:.3}s), another pid answered: \
                 {sup}",
                late.len(),
                first_done.as_secs_f64()
            ));
        }
    }

    // Counts within each pid.
    for (pid, mine) in &by_pid {
        let mut seen: BTreeMap<i64, &Obs> = BTreeMap::new();
        for (o, count) in mine {
            if let Some(other) = seen.insert(*count, o) {
                out.violations.push(format!(
                    "id {id}: pid {pid} acknowledged count {count} twice: {other} and {o}"
                ));
            }
        }
        for (y, cy) in mine {
            if let Some((x, cx)) = mine
                .iter()
                .filter(|(x, _)| x.done() < y.at)
                .max_by_key(|(_, cx)| *cx)
            {
                if cy <= cx {
                    out.violations.push(format!(
                        "id {id}: pid {pid} acknowledged count {cy} after count {cx}: {y}; \
                         previous: {x}"
                    ));
                }
            }
        }
        let (lo, hi) = (
            *seen.keys().next().unwrap(),
            *seen.keys().next_back().unwrap(),
        );
        let missing = usize::try_from(hi - lo + 1).unwrap_or(0) - seen.len();
        out.skipped += missing;
        if missing > maybe {
            out.violations.push(format!(
                "id {id}: pid {pid} skipped {missing} counts between {lo} and {hi}, but only \
                 {maybe} calls for the id may have been executed without an acknowledgement"
            ));
        }
    }

    // Where each pid started: at 1 (fresh state; or a little higher when calls that may have
    // run without an acknowledgement went first), or above every count acknowledged before
    // it (state handed over).
    let mut spans: Vec<PidSpan> = Vec::new();
    for (pid, mine) in &by_pid {
        let (first, _) = mine.iter().min_by_key(|(o, _)| o.at).unwrap();
        let (lowest, lowest_count) = mine.iter().min_by_key(|(_, c)| *c).unwrap();
        let unacked_before = calls
            .iter()
            .filter(|o| o.outcome.maybe_executed() && o.at < lowest.done())
            .count();
        let fresh = usize::try_from(*lowest_count).is_ok_and(|c| c >= 1 && c <= 1 + unacked_before);
        let earlier = acks
            .iter()
            .filter(|(o, _, p)| p != pid && o.done() < lowest.at)
            .max_by_key(|(_, c, _)| *c);
        let continued = earlier.is_some_and(|(_, ce, _)| lowest_count > ce);
        if let Some((e, ce, _)) = earlier {
            if !fresh && !continued {
                out.violations.push(format!(
                    "id {id}: new pid {pid} started at count {lowest_count}, neither fresh (1, \
                     or at most 1 + {unacked_before} calls that may have run unacknowledged) \
                     nor above the count {ce} acknowledged before it: {lowest}; earlier: {e}"
                ));
            }
        }
        spans.push(PidSpan {
            pid: pid.to_string(),
            node: first
                .ack()
                .map(|(_, _, n)| n.to_string())
                .unwrap_or_default(),
            first_at: first.at,
            first_count: *lowest_count,
            continued: continued && !fresh,
            acks: mine.len(),
        });
    }
    spans.sort_by_key(|s| s.first_at);
    out.pids.insert(id.to_string(), spans);
}

/// How strictly counts must follow each other within one pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counts {
    /// Every acknowledged count is greater than the pid's previous one.
    Increasing,
    /// Every acknowledged count is the previous one plus 1, unless a call in between may have been
    /// executed without an acknowledgement (504 `timeout`, no reply): then it is greater. A new pid
    /// starts at 1 or continues (state handed over).
    Continuous,
}

/// The last acknowledged reply of one pid for one id.
#[derive(Debug, Clone)]
struct Last {
    pid: String,
    node: String,
    count: i64,
    obs: String,
}

#[derive(Debug, Default)]
struct IdHistory {
    current: Option<Last>,
    /// Pids that were replaced by a later one, with their last acknowledged reply and the reply
    /// that superseded them.
    retired: BTreeMap<String, (Last, String)>,
    /// A call since the last acknowledgement may have been executed.
    unacked: bool,
    reported: usize,
}

/// Replays every id's calls in order and collects violations of rules 8 and 9 as seen from
/// outside.
///
/// Unlike [`check`], which only uses orderings the timings prove and so allows overlapping calls,
/// a `History` needs each id's calls to be sequential and fed in the order they were made; in
/// [`Counts::Continuous`] mode it is stricter than [`check`] (each count exactly one more than the
/// last unless a call in between may have run unacknowledged; a new pid starts at 1 or continues).
#[derive(Debug)]
pub struct History {
    mode: Counts,
    ids: BTreeMap<String, IdHistory>,
    pub violations: Vec<String>,
    /// Ids answered by a pid after that pid had been superseded.
    pub superseded: BTreeSet<String>,
    /// Acknowledged counts that skipped a value although no call since the previous acknowledgement
    /// may have been executed (informational in [`Counts::Increasing`] mode).
    pub skips: usize,
}

impl History {
    pub fn new(mode: Counts) -> History {
        History {
            mode,
            ids: BTreeMap::new(),
            violations: Vec::new(),
            superseded: BTreeSet::new(),
            skips: 0,
        }
    }

    /// Feeds observations; each id's observations must come in the order they were made.
    pub fn feed<'a>(&mut self, all: impl IntoIterator<Item = &'a Obs>) {
        for o in all {
            self.one(o);
        }
    }

    /// How many pids answered each id (every id fed, in id order).
    pub fn pids_per_id(&self) -> Vec<usize> {
        self.ids.values().map(|h| h.retired.len() + 1).collect()
    }

    fn violation(&mut self, id: &str, message: String) {
        let h = self.ids.get_mut(id).unwrap();
        h.reported += 1;
        if h.reported <= 3 {
            self.violations.push(message);
        } else if h.reported == 4 {
            self.violations
                .push(format!("id {id}: further violations not listed"));
        }
    }

    fn one(&mut self, o: &Obs) {
        let h = self.ids.entry(o.id.clone()).or_default();
        let Outcome::Ack { count, pid, node } = &o.outcome else {
            h.unacked |= o.outcome.maybe_executed();
            return;
        };
        let (count, unacked) = (*count, h.unacked);
        h.unacked = false;
        let this = Last {
            pid: pid.clone(),
            node: node.clone(),
            count,
            obs: o.to_string(),
        };
        let id = &o.id;
        let Some(cur) = h.current.clone() else {
            h.current = Some(this);
            return;
        };
        if cur.pid == *pid {
            let ok = match self.mode {
                Counts::Increasing => count > cur.count,
                Counts::Continuous => count == cur.count + 1 || (unacked && count > cur.count),
            };
            if count > cur.count + 1 && !unacked {
                self.skips += 1;
            }
            h.current = Some(this);
            if !ok {
                self.violation(
                    id,
                    format!(
                        "id {id}: pid {pid} acknowledged count {count} after count {} \
                         (expected {}): {o}; previous: {}",
                        cur.count,
                        match self.mode {
                            Counts::Increasing => format!("more than {}", cur.count),
                            Counts::Continuous => format!("{}", cur.count + 1),
                        },
                        cur.obs
                    ),
                );
            }
            return;
        }
        // A pid other than the current one answered.
        let resurrected = h.retired.remove(pid);
        h.retired
            .insert(cur.pid.clone(), (cur.clone(), o.to_string()));
        h.current = Some(this);
        if let Some((old_last, superseded_by)) = resurrected {
            self.superseded.insert(id.clone());
            self.violation(
                id,
                format!(
                    "id {id}: SUPERSEDED pid {pid} (node {node}) answered again, count {count}: \
                     {o}; it had been superseded by {superseded_by}; its last reply before that: \
                     {}; the newer pid it answered after: {} (node {}, last count {})",
                    old_last.obs, cur.pid, cur.node, cur.count
                ),
            );
            return;
        }
        if self.mode == Counts::Continuous
            && !(count == 1 || count == cur.count + 1 || (unacked && count > cur.count))
        {
            self.violation(
                id,
                format!(
                    "id {id}: new pid {pid} (node {node}) started at count {count}, neither 1 nor \
                     a continuation of pid {}'s count {}: {o}; previous: {}",
                    cur.pid, cur.count, cur.obs
                ),
            );
        }
    }
}
