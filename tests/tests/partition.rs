//! Real network partitions between `mesh-node` processes (contract rule 8: "By default a
//! partition's minority side refuses and its majority side serves (ties go to the side holding
//! the lowest node id)", refusals being 503 `owner_unavailable`; and `GET /ready`).
//!
//! Each node runs in a network namespace of its own, on a private [`Network`] of the test (veth
//! pairs onto a bridge in the test's namespace, `10.77.<s>.<i>/24`); the cut is nftables rules in
//! the namespaces of the nodes, dropping everything between the nodes of different sides, while
//! the test's clients, on the bridge, still reach every node. Needs root, `ip` and `nft` (the
//! harness installs `iproute2` and `nftables` when missing, CI is root); without them the tests
//! fail rather than skip. The network is deleted whatever the way out of the test, panics
//! included.
//!
//! One scenario, run for two splits:
//! 1. a converged cluster; a few `Counter` ids owned by each node, each called a few times;
//! 2. load on every id through both sides at once (one sequential caller per id and side), then
//!    the cut; the refusing side must stop serving within its lease and refuse with 503
//!    `owner_unavailable`, its `/ready` must turn 503 `not_ready`; the serving side must go on
//!    serving its own ids without a hitch and take over the refusing side's ids;
//! 3. heal; every node must be ready again and every id must answer through every node, and the
//!    serving side's ids (whose owner never changed) must still be served by the activation they
//!    had before the cut.
//!
//! Over the whole record (every reply, with the times the client sent the call and got the
//! reply) [`observe::check`] verifies that a pid that was superseded never answers again and that
//! counts never go back; the refusing side's pids from before the cut must never answer once its
//! lease has run out. The measured figures are printed (`--nocapture` shows them).
//!
//! The tests of this file run one at a time: their timings mean something only if two clusters
//! are not fighting over the 2 cores of a CI machine.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mesh_tests::netns::tcp_connects;
use mesh_tests::observe::{self, listing, tally, Entry, Obs};
use mesh_tests::{disagreement, serial, unique, Api, Client, MeshNode, Network};

/// How long a cluster may take to agree on its members.
const CONVERGE: Duration = Duration::from_secs(20);
/// Client-side limit on one HTTP request; calls carry a much shorter `timeout_ms`.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// `timeout_ms` of every call.
const TIMEOUT_MS: u64 = 1200;
/// The capability every test node registers.
const CAPS: [&str; 1] = ["counter"];
/// Calls per id before the cut.
const WARM_CALLS: usize = 3;
/// Pause between two calls of one caller.
const PAUSE: Duration = Duration::from_millis(100);
/// How long the load runs before the cut.
const LOAD_BEFORE_CUT: Duration = Duration::from_millis(600);

/// A lease runs 1 s from the moment its holder asked for it, and a round asked just before the
/// cut may still be granted: no node serves from a lease it got before the cut later than 1 s
/// after it. A call *sent* this long after the cut to the refusing side must not be served.
const LEASE_GRACE: Duration = Duration::from_millis(1500);
/// Calls to the refusing side sent this long after the cut must all be refused with 503
/// `owner_unavailable` (about 1-2 s expected; room for a slow CI machine).
const REFUSE_WITHIN: Duration = Duration::from_secs(3);
/// Every id must have been answered through the serving side this soon after the cut (about
/// 1.5-2.5 s expected: the lease, the fencing, the takeover), and from then on every call through
/// the serving side must succeed.
const SERVE_WITHIN: Duration = Duration::from_secs(5);
/// The cut lasts at least this long, and at most [`CUT_MAX`] while waiting for the serving side
/// to serve every id and the refusing side to say `not_ready`.
const CUT_MIN: Duration = Duration::from_secs(6);
/// The longest cut (see [`CUT_MIN`]).
const CUT_MAX: Duration = Duration::from_secs(10);
/// After the heal: every node ready and every id answered through every node within this.
const RECOVER_WITHIN: Duration = Duration::from_secs(20);
/// After recovery the load goes on this much longer.
const AFTER_RECOVERY: Duration = Duration::from_secs(1);
/// How many violations a failure message lists.
const LISTED: usize = 40;

// ---------------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------------

/// 3 nodes, `A` (the lowest node id, and the seed) cut off from `B` and `C`: `A` refuses,
/// `B` and `C` serve every id, `A`'s included.
#[test]
fn a_minority_refuses_and_the_majority_serves_then_heals() {
    serial(split(3, &[0], 10));
}

/// 4 nodes `n1`..`n4`, cut into `{n1, n2}` and `{n3, n4}`: the half holding the lowest node id
/// (`n1`) serves every id, the other half refuses.
#[test]
fn a_tie_goes_to_the_side_with_the_lowest_node_id() {
    serial(split(4, &[2, 3], 6));
}

/// A test that panics while its nodes run in a [`Network`] leaves nothing behind: its nodes are
/// killed, its namespaces, veth pairs and bridge deleted.
#[test]
fn a_panicking_test_leaves_no_node_namespace_or_link_behind() {
    use futures_util::FutureExt as _;
    const MARKER: &str = "intentional test panic";
    mesh_tests::quiet_intentional_panics(&[MARKER]);
    let left = Arc::new(Mutex::new(None));
    let seen = left.clone();
    serial(async move {
        let test = async move {
            let net = Network::new(2);
            let node = MeshNode::builder()
                .host(net.host(1))
                .capabilities(CAPS)
                .start()
                .await;
            assert_eq!(node.client().count("before-the-panic").await, 1);
            let ns: Vec<String> = (0..2)
                .map(|i| net.host(i).namespace().to_string())
                .collect();
            *seen.lock().unwrap() = Some((node.pid(), ns, net.bridge().to_string()));
            panic!("{MARKER}");
        };
        let outcome = std::panic::AssertUnwindSafe(test).catch_unwind().await;
        assert!(outcome.is_err(), "the test did not panic");
    });
    let (pid, namespaces, bridge) = left.lock().unwrap().take().expect("the test ran");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "node process {pid} is still there"
    );
    let out = |args: &[&str]| {
        let o = std::process::Command::new("ip")
            .args(args)
            .output()
            .expect("ip");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let listed = out(&["netns", "list"]);
    for ns in &namespaces {
        assert!(
            !listed
                .lines()
                .any(|l| l.split_whitespace().next() == Some(ns)),
            "namespace {ns} left behind: {listed}"
        );
    }
    let links = out(&["-o", "link", "show"]);
    let tag = bridge.trim_start_matches("mb");
    assert!(
        !links
            .lines()
            .any(|l| l.contains(&bridge) || l.contains(&format!("mv{tag}h"))),
        "bridge {bridge} or its veths left behind:\n{links}"
    );
}

// ---------------------------------------------------------------------------------------------------
// Cluster helpers
// ---------------------------------------------------------------------------------------------------

/// Starts `n` counter nodes with ids `n1-…`, `n2-…`, ... (in that order by node id), node `i` on
/// host `i` of `net`, the others seeded with the first; waits until every node lists all of them
/// alive and answers `GET /ready` 200.
async fn start_cluster(net: &Network, n: usize) -> Vec<MeshNode> {
    mesh_tests::start_cluster(n, CONVERGE, |i| {
        MeshNode::builder()
            .node_id(unique(&format!("n{}", i + 1)))
            .host(net.host(i))
            .capabilities(CAPS)
    })
    .await
}

/// Whether every node's `/cluster` lists exactly `nodes`, all alive.
async fn converged(nodes: &[MeshNode], clients: &[Client]) -> bool {
    for c in clients {
        let Ok(r) = c.try_get("/cluster").await else {
            return false;
        };
        if r.status != 200 || disagreement(&r.body, nodes).is_some() {
            return false;
        }
    }
    true
}

/// The owner of `id` for `counter` as `client`'s node names it (asserting 200).
async fn owner(client: &Client, id: &str) -> String {
    let r = client.owner(id, "counter").await;
    r.ok()["node"]
        .as_str()
        .unwrap_or_else(|| panic!("/owner without a node: {r}"))
        .to_string()
}

// ---------------------------------------------------------------------------------------------------
// Load and probes
// ---------------------------------------------------------------------------------------------------

type Log<T> = Arc<Mutex<Vec<T>>>;

/// Calls `id` through `entries` in turn, one call at a time, until `stop` (at most `max_calls`).
fn spawn_caller(
    id: String,
    entries: Vec<Entry>,
    t0: Instant,
    stop: Arc<AtomicBool>,
    log: Log<Obs>,
    max_calls: usize,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for n in 0..max_calls {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let obs = entries[n % entries.len()].call(t0, &id, TIMEOUT_MS).await;
            log.lock().unwrap().push(obs);
            tokio::time::sleep(PAUSE).await;
        }
    })
}

/// What `GET /ready` answered, and when.
#[derive(Debug, Clone)]
struct ReadyObs {
    node: String,
    at: Duration,
    /// `200 ready`, `503 not_ready`, `HTTP <status>`, `no reply`.
    label: String,
    text: String,
}

impl ReadyObs {
    fn ready(&self) -> bool {
        self.label == "200 ready"
    }
    fn not_ready(&self) -> bool {
        self.label == "503 not_ready"
    }
}

impl std::fmt::Display for ReadyObs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{:.3}s {}] {}: {}",
            self.at.as_secs_f64(),
            self.node,
            self.label,
            self.text
        )
    }
}

/// Polls `GET /ready` of `node` every 100 ms until `stop`.
fn spawn_ready_probe(
    node: &MeshNode,
    t0: Instant,
    stop: Arc<AtomicBool>,
    log: Log<ReadyObs>,
) -> tokio::task::JoinHandle<()> {
    let (id, client) = (
        node.id().to_string(),
        node.client_without_secret()
            .with_timeout(Duration::from_secs(2))
            .with_pool_idle_timeout(Duration::from_secs(2)),
    );
    tokio::spawn(async move {
        for _ in 0..2000 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let at = t0.elapsed();
            let (label, text) = match client.try_get("/ready").await {
                Ok(r) if r.status == 200 && r.body == serde_json::json!({"status": "ready"}) => {
                    ("200 ready".to_string(), r.text)
                }
                Ok(r)
                    if r.status == 503
                        && r.body["error"]["code"] == "not_ready"
                        && r.body["error"]["message"]
                            .as_str()
                            .is_some_and(|m| !m.trim().is_empty()) =>
                {
                    ("503 not_ready".to_string(), r.text)
                }
                Ok(r) => (format!("HTTP {}", r.status), r.text),
                Err(e) => ("no reply".to_string(), format!("{e:?}")),
            };
            log.lock().unwrap().push(ReadyObs {
                node: id.clone(),
                at,
                label,
                text,
            });
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

/// min / median / max of `times`, for the report.
fn spread(times: &[Duration]) -> String {
    let mut t = times.to_vec();
    t.sort();
    match (t.first(), t.get(t.len() / 2), t.last()) {
        (Some(min), Some(median), Some(max)) => format!(
            "min {}, median {}, max {} ({} values)",
            secs(*min),
            secs(*median),
            secs(*max),
            t.len()
        ),
        _ => "no values".to_string(),
    }
}

// ---------------------------------------------------------------------------------------------------
// The scenario
// ---------------------------------------------------------------------------------------------------

/// Starts `n` nodes, cuts the nodes at the indexes `refusing` off from the others (which must
/// serve: a majority, or half with the lowest node id), checks both sides, heals and checks the
/// recovery. `per_node` ids owned by each node are called throughout.
async fn split(n: usize, refusing: &[usize], per_node: usize) {
    // Declared before the nodes, so that it is dropped (deleted) after they are killed.
    let mut net = Network::new(n);
    let nodes = start_cluster(&net, n).await;
    let t0 = Instant::now();
    let serving: Vec<usize> = (0..n).filter(|i| !refusing.contains(i)).collect();
    let name =
        |set: &[usize]| -> Vec<String> { set.iter().map(|&i| nodes[i].id().to_string()).collect() };
    let (refusing_ids, serving_ids) = (name(refusing), name(&serving));
    let is_refusing = |node: &str| refusing_ids.iter().any(|r| r == node);
    let entries: Vec<Entry> = nodes.iter().map(|n| Entry::of(n, HTTP_TIMEOUT)).collect();
    let side_entries =
        |set: &[usize]| -> Vec<Entry> { set.iter().map(|&i| entries[i].clone()).collect() };
    let (refusing_entries, serving_entries) = (side_entries(refusing), side_entries(&serving));

    // Ids owned by each node, every node agreeing on the owner.
    let mut owner_of: BTreeMap<String, String> = BTreeMap::new();
    let mut wanted: BTreeMap<String, usize> = nodes.iter().map(|n| (n.id().into(), 0)).collect();
    for _ in 0..per_node * n * 50 {
        if wanted.values().all(|&c| c >= per_node) {
            break;
        }
        let id = unique("split");
        let o = owner(&entries[0].client, &id).await;
        if wanted[&o] < per_node {
            for e in &entries[1..] {
                assert_eq!(
                    owner(&e.client, &id).await,
                    o,
                    "owner of {id} via {}",
                    e.node
                );
            }
            *wanted.get_mut(&o).unwrap() += 1;
            owner_of.insert(id, o);
        }
    }
    assert!(
        wanted.values().all(|&c| c == per_node),
        "could not find {per_node} ids owned by every node: {wanted:?}"
    );
    let ids: Vec<String> = owner_of.keys().cloned().collect();
    let refusing_owned: BTreeSet<&String> =
        ids.iter().filter(|i| is_refusing(&owner_of[*i])).collect();

    // Warm-up: every id called WARM_CALLS times through different nodes; remember the pids.
    let mut record: Vec<Obs> = Vec::new();
    let mut pid_before: BTreeMap<String, String> = BTreeMap::new();
    for (k, id) in ids.iter().enumerate() {
        for c in 0..WARM_CALLS {
            let o = entries[(k + c) % n].call(t0, id, TIMEOUT_MS).await;
            match o.ack() {
                Some((count, pid, node))
                    if count == c as i64 + 1
                        && node == owner_of[id]
                        && pid_before.get(id).is_none_or(|p| p == pid) =>
                {
                    pid_before.insert(id.clone(), pid.to_string());
                }
                _ => panic!(
                    "warm-up call {} for {id} (owner {}): {o}",
                    c + 1,
                    owner_of[id]
                ),
            }
            record.push(o);
        }
    }
    let old_refusing_pids: BTreeSet<&String> =
        refusing_owned.iter().map(|id| &pid_before[*id]).collect();

    // Load through both sides at once, then the cut.
    let stop = Arc::new(AtomicBool::new(false));
    let log: Log<Obs> = Arc::default();
    let ready_log: Log<ReadyObs> = Arc::default();
    let mut tasks = Vec::new();
    for (k, id) in ids.iter().enumerate() {
        for side in [&serving_entries, &refusing_entries] {
            let mut side = side.clone();
            let shift = k % side.len();
            side.rotate_left(shift);
            tasks.push(spawn_caller(
                id.clone(),
                side,
                t0,
                stop.clone(),
                log.clone(),
                1000,
            ));
        }
    }
    for node in &nodes {
        tasks.push(spawn_ready_probe(node, t0, stop.clone(), ready_log.clone()));
    }
    tokio::time::sleep(LOAD_BEFORE_CUT).await;

    net.cut(&[refusing, &serving]);
    let cut_at = t0.elapsed();
    eprintln!(
        "cut {refusing_ids:?} | {serving_ids:?} at {} (nftables rules in the nodes' namespaces)",
        secs(cut_at)
    );
    // The cut is in force: no TCP between the sides, while the test reaches both.
    let (r, s) = (refusing[0], serving[0]);
    let (r_addr, s_addr) = (nodes[r].addr(), nodes[s].addr());
    let (r_host, s_host) = (net.host(r).clone(), net.host(s).clone());
    let probe = tokio::task::spawn_blocking(move || {
        let w = Duration::from_millis(500);
        [
            tcp_connects(Some(&r_host), s_addr, w),
            tcp_connects(Some(&s_host), r_addr, w),
            tcp_connects(None, r_addr, w),
            tcp_connects(None, s_addr, w),
        ]
        .map(|r| r.map_err(|e| format!("{e:#}")))
    })
    .await
    .expect("TCP probe panicked");
    assert!(
        matches!(probe, [Ok(false), Ok(false), Ok(true), Ok(true)]),
        "the partition is not what it should be: TCP {r_addr}->{s_addr}, {s_addr}->{r_addr}, \
         test->{r_addr}, test->{s_addr} connected: {probe:?} (expected false, false, true, true)"
    );

    // The cut lasts until the serving side has served every id and the refusing side says
    // not_ready (at least CUT_MIN, at most CUT_MAX).
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let since = t0.elapsed() - cut_at;
        if since >= CUT_MAX {
            break;
        }
        if since < CUT_MIN {
            continue;
        }
        let served: BTreeSet<String> = log
            .lock()
            .unwrap()
            .iter()
            .filter(|o| o.at >= cut_at && !is_refusing(&o.via))
            .filter(|o| o.ack().is_some_and(|(_, _, node)| !is_refusing(node)))
            .map(|o| o.id.clone())
            .collect();
        let not_ready: BTreeSet<String> = ready_log
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.at >= cut_at && p.not_ready())
            .map(|p| p.node.clone())
            .collect();
        if served.len() == ids.len() && refusing_ids.iter().all(|r| not_ready.contains(r)) {
            break;
        }
    }

    net.heal();
    let heal_at = t0.elapsed();
    eprintln!("healed at {}", secs(heal_at));
    // Recovery: every node ready and listing all alive, every id answered through every node.
    let clients: Vec<Client> = nodes.iter().map(MeshNode::client).collect();
    let mut recovered_at = None;
    while t0.elapsed() < heal_at + RECOVER_WITHIN {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let answered: BTreeSet<(String, String)> = log
            .lock()
            .unwrap()
            .iter()
            .filter(|o| o.at >= heal_at && o.outcome.is_ack())
            .map(|o| (o.id.clone(), o.via.clone()))
            .collect();
        let ready = nodes.iter().all(|node| {
            ready_log
                .lock()
                .unwrap()
                .iter()
                .rev()
                .find(|p| p.node == node.id())
                .is_some_and(|p| p.at >= heal_at && p.ready())
        });
        if answered.len() == ids.len() * n && ready && converged(&nodes, &clients).await {
            recovered_at = Some(t0.elapsed());
            break;
        }
    }
    if let Some(at) = recovered_at {
        tokio::time::sleep(AFTER_RECOVERY).await;
        eprintln!(
            "recovered {} after the heal (every node ready and converged, every id answered \
             through every node)",
            secs(at - heal_at)
        );
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("load task panicked");
    }
    let load_ended_at = t0.elapsed();
    // A last round: every id through every node, one call at a time.
    let mut last_round = Vec::new();
    for id in &ids {
        for e in &entries {
            last_round.push(e.call(t0, id, TIMEOUT_MS).await);
        }
    }
    let mut owner_after: BTreeMap<&String, String> = BTreeMap::new();
    for id in &ids {
        owner_after.insert(id, owner(&entries[0].client, id).await);
    }
    let final_ready: Vec<(String, u16)> = {
        let mut v = Vec::new();
        for node in &nodes {
            let r = node.client_without_secret().get("/ready").await;
            v.push((node.id().to_string(), r.status));
        }
        v
    };

    let load = std::mem::take(&mut *log.lock().unwrap());
    record.extend(load.iter().cloned());
    record.extend(last_round.iter().cloned());
    record.sort_by_key(|o| o.at);
    let probes = std::mem::take(&mut *ready_log.lock().unwrap());

    // ---------------------------------------------------------------------------------------------
    // Checks
    // ---------------------------------------------------------------------------------------------
    let mut violations = Violations::default();
    let during_cut = |o: &Obs| o.at >= cut_at && o.at < heal_at;

    // Only 200, 503 owner_unavailable and 504 timeout; no reply at all is never right (every
    // node stays reachable from 127.0.0.1).
    for o in &record {
        if !o.outcome.is_ack() && !o.outcome.is_fault_error() {
            violations.add(
                "reply not allowed",
                format!(
                    "reply not allowed (only 200, 503 owner_unavailable and 504 timeout are): {o}"
                ),
            );
        }
        if o.done() < cut_at && !o.outcome.is_ack() {
            violations.add(
                "failed before the cut",
                format!("call before the cut failed: {o}"),
            );
        }
    }

    // The refusing side.
    let through_refusing: Vec<&Obs> = record
        .iter()
        .filter(|o| during_cut(o) && is_refusing(&o.via))
        .collect();
    let mut refusing_acks = Vec::new();
    for o in &through_refusing {
        let since = o.at - cut_at;
        // A call held over the heal may be served by the healed cluster.
        let answered_during_cut = o.done() < heal_at;
        if let Some((_, pid, _)) = o.ack().filter(|_| answered_during_cut) {
            refusing_acks.push(*o);
            if since >= LEASE_GRACE {
                violations.add(
                    "refusing side served after its lease",
                    format!(
                        "the refusing side served a call sent {} after the cut (its lease cannot \
                     have lasted beyond {}): {o}",
                        secs(since),
                        secs(LEASE_GRACE)
                    ),
                );
            } else if pid != pid_before[&o.id] {
                violations.add(
                    "refusing side served with a new pid",
                    format!(
                    "the refusing side answered after the cut with a pid it did not have before \
                     ({}): {o}",
                    pid_before[&o.id]
                ),
                );
            }
        }
        if answered_during_cut
            && since >= REFUSE_WITHIN
            && !o.outcome.is_error(503, "owner_unavailable")
        {
            violations.add(
                "refusing side did not refuse with 503 owner_unavailable",
                format!(
                    "the refusing side did not refuse with 503 owner_unavailable a call sent {} \
                 after the cut: {o}",
                    secs(since)
                ),
            );
        }
    }
    let last_not_refused = through_refusing
        .iter()
        .filter(|o| o.done() < heal_at && !o.outcome.is_error(503, "owner_unavailable"))
        .map(|o| o.at - cut_at)
        .max();
    // Any node of the refusing side answering during the cut (through any entry) after its lease.
    for o in record.iter().filter(|o| during_cut(o)) {
        if let Some((_, _, node)) = o.ack() {
            if is_refusing(node)
                && o.at - cut_at >= LEASE_GRACE
                && o.done() < heal_at
                && !is_refusing(&o.via)
            {
                violations.add(
                    "refusing side's node served through the serving side",
                    format!(
                        "a node of the refusing side answered through the serving side during the \
                     cut: {o}"
                    ),
                );
            }
        }
    }
    // The refusing side's activations from before the cut never answer again once its lease
    // has run out, not even after the heal.
    for o in &record {
        if let Some((_, pid, _)) = o.ack() {
            if o.at >= cut_at + LEASE_GRACE && old_refusing_pids.contains(&pid.to_string()) {
                violations.add(
                    "refusing side's old pid answered again",
                    format!(
                    "a pid of the refusing side from before the cut answered {} after the cut: \
                     {o}",
                    secs(o.at - cut_at)
                ),
                );
            }
        }
    }

    // The serving side.
    let through_serving: Vec<&Obs> = record
        .iter()
        .filter(|o| during_cut(o) && !is_refusing(&o.via))
        .collect();
    let mut own_failures_in_grace = Vec::new();
    for o in &through_serving {
        let since = o.at - cut_at;
        let id_of_refusing = refusing_owned.contains(&o.id);
        if let Some((_, pid, node)) = o.ack() {
            if !id_of_refusing && (pid != pid_before[&o.id] || node != owner_of[&o.id]) {
                violations.add(
                    "serving side's id changed hands during the cut",
                    format!(
                        "id {} of {} (serving side) changed hands during the cut (was pid {}): {o}",
                        o.id, owner_of[&o.id], pid_before[&o.id]
                    ),
                );
            }
        } else if o.done() >= heal_at {
            // Held over the heal: the ids move back then.
        } else if !id_of_refusing {
            if since >= LEASE_GRACE {
                violations.add(
                    "serving side's id failed after the first lease period",
                    format!(
                        "id {} of the serving side's {} failed through the serving side {} after \
                     the cut: {o}",
                        o.id,
                        owner_of[&o.id],
                        secs(since)
                    ),
                );
            } else {
                own_failures_in_grace.push(*o);
            }
        } else if since >= SERVE_WITHIN {
            violations.add(
                "refusing side's id failed through the serving side after the takeover limit",
                format!(
                    "id {} of the refusing side's {} failed through the serving side {} after the \
                 cut: {o}",
                    o.id,
                    owner_of[&o.id],
                    secs(since)
                ),
            );
        }
    }
    // How soon the serving side served the refusing side's ids.
    let mut takeover: Vec<Duration> = Vec::new();
    for id in &refusing_owned {
        let first = through_serving
            .iter()
            .find(|o| o.id == **id && o.ack().is_some_and(|(_, _, node)| !is_refusing(node)));
        match first {
            Some(o) => {
                let t = o.done() - cut_at;
                takeover.push(t);
                if t >= SERVE_WITHIN {
                    violations.add(
                        "takeover too slow",
                        format!(
                            "id {id} of {} first answered by the serving side {} after the cut \
                         (limit {}): {o}",
                            owner_of[*id],
                            secs(t),
                            secs(SERVE_WITHIN)
                        ),
                    );
                }
                if o.ack().is_some_and(|(_, pid, _)| pid == pid_before[*id]) {
                    violations.add(
                        "taken over with the old pid",
                        format!(
                        "id {id} answered by the serving side with the refusing side's pid: {o}"
                    ),
                    );
                }
            }
            None => violations.add(
                "never taken over",
                format!(
                    "id {id} of {} never answered by the serving side during the cut ({} long)",
                    owner_of[*id],
                    secs(heal_at - cut_at)
                ),
            ),
        }
    }

    // GET /ready during the cut.
    let mut first_not_ready = BTreeMap::new();
    for node in &refusing_ids {
        let mine: Vec<&ReadyObs> = probes
            .iter()
            .filter(|p| p.node == *node && p.at >= cut_at && p.at < heal_at)
            .collect();
        match mine.iter().find(|p| p.not_ready()) {
            Some(p) => {
                first_not_ready.insert(node.clone(), p.at - cut_at);
            }
            None => violations.add(
                "GET /ready on the refusing side",
                format!(
                    "GET /ready on {node} (refusing side) never answered 503 not_ready during the \
                 cut; last: {}",
                    mine.last().map_or("-".to_string(), ToString::to_string)
                ),
            ),
        }
        for p in mine.iter().filter(|p| p.at - cut_at >= REFUSE_WITHIN) {
            if !p.not_ready() {
                violations.add(
                    "GET /ready on the refusing side",
                    format!(
                        "GET /ready on {node} (refusing side) {} after the cut: {p}",
                        secs(p.at - cut_at)
                    ),
                );
            }
        }
    }
    for node in &serving_ids {
        let last = probes
            .iter()
            .rfind(|p| p.node == *node && p.at >= cut_at && p.at < heal_at);
        if !last.is_some_and(|p| p.ready()) {
            violations.add(
                "GET /ready on the serving side",
                format!(
                    "GET /ready on {node} (serving side) at the end of the cut: {}",
                    last.map_or("-".to_string(), ToString::to_string)
                ),
            );
        }
    }

    // After the heal.
    if recovered_at.is_none() {
        violations.add(
            "not recovered after the heal",
            format!(
                "not recovered within {} of the heal (every node ready and converged, every id \
             answered through every node)",
                secs(RECOVER_WITHIN)
            ),
        );
    }
    for o in &last_round {
        if !o.outcome.is_ack() {
            violations.add(
                "failed in the last round after the heal",
                format!("last round after the heal: {o}"),
            );
        }
    }
    for (node, status) in &final_ready {
        if *status != 200 {
            violations.add(
                "GET /ready after the heal",
                format!("GET /ready on {node} after the heal: {status}"),
            );
        }
    }
    // Ids of the serving side that stay where they were keep their activation all along.
    for o in &record {
        if let Some((_, pid, _)) = o.ack() {
            let id = &o.id;
            if !refusing_owned.contains(id)
                && owner_after[id] == owner_of[id]
                && pid != pid_before[id]
            {
                violations.add(
                    "serving side's id changed pid although its owner stayed",
                    format!(
                        "id {id} of {} (serving side, still its owner) changed pid from {}: {o}",
                        owner_of[id], pid_before[id]
                    ),
                );
            }
        }
    }

    // The whole record: superseded pids, counts.
    let check = observe::check(&record);

    // ---------------------------------------------------------------------------------------------
    // Report
    // ---------------------------------------------------------------------------------------------
    let phase = |o: &Obs| {
        if o.at < cut_at {
            "1 before the cut"
        } else if o.at < cut_at + LEASE_GRACE {
            "2 cut, first lease period"
        } else if o.at < heal_at {
            "3 cut, after the lease"
        } else if o.at < load_ended_at {
            "4 healed"
        } else {
            "5 last round"
        }
    };
    let mut table: BTreeMap<(&str, &str), BTreeMap<String, usize>> = BTreeMap::new();
    for o in &record {
        let side = if is_refusing(&o.via) {
            "through the refusing side"
        } else {
            "through the serving side"
        };
        *table
            .entry((phase(o), side))
            .or_default()
            .entry(o.outcome.label())
            .or_default() += 1;
    }
    eprintln!(
        "split {refusing_ids:?} | {serving_ids:?}: {} ids ({} owned by the refusing side), {} \
         calls; cut at {}, healed at {} ({} cut)",
        ids.len(),
        refusing_owned.len(),
        record.len(),
        secs(cut_at),
        secs(heal_at),
        secs(heal_at - cut_at)
    );
    for ((p, side), t) in &table {
        eprintln!("  {p}, {side}: {t:?}");
    }
    eprintln!(
        "  refusing side: {} calls served after the cut (the last sent {} after it); every call \
         sent later than {} after the cut was refused with 503 owner_unavailable; refusals \
         during the cut: {}",
        refusing_acks.len(),
        refusing_acks
            .iter()
            .map(|o| o.at - cut_at)
            .max()
            .map_or("-".to_string(), secs),
        last_not_refused.map_or("0s".to_string(), secs),
        through_refusing
            .iter()
            .filter(|o| o.outcome.is_error(503, "owner_unavailable"))
            .count()
    );
    // What the refusing side answered once its lease was surely gone, by whose ids they were.
    for (whose, of_refusing) in [("its own ids", true), ("the serving side's ids", false)] {
        let calls: Vec<&Obs> = through_refusing
            .iter()
            .filter(|o| o.at >= cut_at + LEASE_GRACE && o.done() < heal_at)
            .filter(|o| refusing_owned.contains(&o.id) == of_refusing)
            .copied()
            .collect();
        let took: Vec<Duration> = calls.iter().map(|o| o.took).collect();
        eprintln!(
            "  refusing side, calls for {whose} sent from {} after the cut until the heal: {:?}; \
             reply after {}",
            secs(LEASE_GRACE),
            tally(calls.iter().copied()),
            spread(&took)
        );
    }
    eprintln!(
        "  refusing side: GET /ready first 503 not_ready after the cut: {:?}",
        first_not_ready
            .iter()
            .map(|(n, t)| format!("{n} {}", secs(*t)))
            .collect::<Vec<_>>()
    );
    for node in nodes.iter().map(MeshNode::id) {
        let t = |from: Duration, to: Duration| {
            let mut m: BTreeMap<&str, usize> = BTreeMap::new();
            for p in probes
                .iter()
                .filter(|p| p.node == node && p.at >= from && p.at < to)
            {
                *m.entry(p.label.as_str()).or_default() += 1;
            }
            m
        };
        eprintln!(
            "  GET /ready on {node}: during the cut {:?}; after the heal {:?}",
            t(cut_at, heal_at),
            t(heal_at, load_ended_at)
        );
    }
    eprintln!(
        "  serving side: time from the cut until each of the refusing side's ids was answered \
         through it: {}",
        spread(&takeover)
    );
    eprintln!(
        "  serving side: its own ids failed {} times in the first lease period ({:?}), never \
         later{}",
        own_failures_in_grace.len(),
        tally(own_failures_in_grace.iter().copied()),
        if violations.has("serving side's id failed after the first lease period")
            || violations.has("serving side's id changed hands during the cut")
        {
            " (see violations)"
        } else {
            ""
        }
    );
    let moved_back = ids
        .iter()
        .filter(|id| owner_after[*id] != owner_of[*id])
        .count();
    let (mut fresh, mut continued) = (0, 0);
    for spans in check.pids.values() {
        for s in spans.iter().skip(1) {
            if s.first_at >= heal_at {
                if s.continued {
                    continued += 1;
                } else {
                    fresh += 1;
                }
            }
        }
    }
    eprintln!(
        "  after the heal: {moved_back} ids owned by another node than before the cut; new pids \
         after the heal: {continued} continued the count, {fresh} started at 1"
    );
    eprintln!(
        "  pids per id: max {}; counts skipped (explained by timed-out calls): {}; ids answered \
         by a superseded pid: {}",
        check.pids.values().map(Vec::len).max().unwrap_or(0),
        check.skipped,
        check.superseded.len()
    );

    for v in &check.violations {
        let kind = if v.contains("SUPERSEDED") {
            "a superseded pid answered again"
        } else {
            "counts (rule 9) or state going back"
        };
        violations.add(kind, v.clone());
    }
    if !violations.is_empty() {
        eprintln!("  violations by kind: {:?}", violations.counts());
        for node in &nodes {
            let log = node.log();
            let interesting: Vec<&str> = log
                .lines()
                .filter(|l| l.contains(" mesh_"))
                .filter(|l| {
                    [
                        "lease",
                        "fenc",
                        "admi",
                        "incarnation",
                        "joined",
                        "moved",
                        "left",
                    ]
                    .iter()
                    .any(|w| l.contains(w))
                })
                .collect();
            eprintln!(
                "--- {} ({}): {} log lines about leases, fencing and membership, the last \
                 30 ---\n{}",
                node.id(),
                node.addr(),
                interesting.len(),
                interesting[interesting.len().saturating_sub(30)..].join("\n")
            );
        }
    }
    assert!(
        violations.is_empty(),
        "split {refusing_ids:?} | {serving_ids:?}: ids answered by a superseded pid: {} ({:?}); \
         {} violations {:?}; the first of each kind:\n{}",
        check.superseded.len(),
        check.superseded,
        violations.len(),
        violations.counts(),
        violations.listing(3, LISTED)
    );
}

/// Violations of what a test expects, by kind.
#[derive(Debug, Default)]
struct Violations {
    by_kind: BTreeMap<&'static str, Vec<String>>,
}

impl Violations {
    fn add(&mut self, kind: &'static str, message: String) {
        self.by_kind.entry(kind).or_default().push(message);
    }

    fn has(&self, kind: &str) -> bool {
        self.by_kind.contains_key(kind)
    }

    fn is_empty(&self) -> bool {
        self.by_kind.is_empty()
    }

    fn len(&self) -> usize {
        self.by_kind.values().map(Vec::len).sum()
    }

    fn counts(&self) -> BTreeMap<&'static str, usize> {
        self.by_kind.iter().map(|(k, v)| (*k, v.len())).collect()
    }

    /// The first `per_kind` of each kind, at most `max` in all.
    fn listing(&self, per_kind: usize, max: usize) -> String {
        let mut lines = Vec::new();
        for (kind, all) in &self.by_kind {
            for v in all.iter().take(per_kind) {
                lines.push(format!("[{kind}] {v}"));
            }
            if all.len() > per_kind {
                lines.push(format!("[{kind}] ... and {} more", all.len() - per_kind));
            }
        }
        listing(&lines, max)
    }
}
