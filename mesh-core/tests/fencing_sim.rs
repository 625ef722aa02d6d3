//! A deterministic simulator for the lease/fencing state machine ([`mesh_core::Fencing`]).
//!
//! In the style of chitchat's `tests/cluster_test.rs`, every scenario is data: a script of
//! [`Step`]s (faults, load, waits and assertions) that a [`Sim`] drives. There are no threads, no
//! sockets and no real time: one global virtual clock in milliseconds, and a seeded xorshift
//! generator for message delays and the load, so every run replays exactly.
//!
//! What is modelled, and how the modelled runtime drives each node's `Fencing`:
//!
//! - **Clocks.** Every node reads the global virtual time as its monotonic clock. A paused node
//!   (SIGSTOP) executes nothing — no ticks, no messages, no calls — but its clock keeps running,
//!   as `CLOCK_MONOTONIC` does, so it finds its lease expired when it resumes.
//! - **Network.** `RenewRequest`s and `RenewReply`s arrive after 1–5 ms. A link can be cut in one
//!   or both directions (messages in flight on it are lost too) and healed. Messages to a paused
//!   node wait in its socket buffer until it resumes; messages to a dead process are dropped, and
//!   a reply is dropped when the process that asked is gone (it travels on that process's
//!   connection). A graceful leave is announced by gossip, which `observe`s the descriptor; the
//!   leaving process keeps answering for 300 ms before it exits.
//! - **Runtime.** A node ticks every 10 ms and sends the requests `tick` returns. On a request it
//!   first `observe`s the asker, republishes its routing and drops the activations it no longer
//!   owns, then answers with `on_request(.., settled = true)`. Replies go to `on_reply`. After
//!   every call into `Fencing` it rebuilds its `RoutingTable` (64 shards, capability "counter")
//!   from `view()`, drops every activation on `LeaseLost`/`Reincarnated` or whenever it does not
//!   serve, and drops the activations of shards its table gives to others.
//! - **Actors.** Each node holds `id -> (activation serial, count)`. A call picks an id among 100
//!   and a running entry node; the entry routes by its own table to the owner, which executes it
//!   only if, at that moment, it is running, `is_serving(now)` and its own table names it owner.
//!
//! Checked after every millisecond in which any node processed anything (time alone only ends
//! leases), and at every new activation:
//!
//! 1. For every shard, at most one node may serve it: a running node that serves it, a paused
//!    node whose lease is still valid and whose table names it (it would serve the moment it
//!    resumes), and a killed process whose lease had not run out (kill -9 and a long pause look
//!    the same to the others) all count.
//! 2. For every id, the counts acknowledged by one activation strictly increase, and once a newer
//!    activation acknowledged, an older one never does again; an activation held across a pause
//!    that outlived its node's lease (and every lease a reply still in its buffer could give)
//!    never acknowledges again.
//! 3. No acknowledged update is rolled back: within an activation every count is the previous
//!    one plus one, and a new activation (count 1 again) starts only where no other node still
//!    holds the id or a claim on its shard.
//!
//! A failed check names the invariant, the shard or id, the nodes and the virtual time, with
//! the last events. `MESH_SIM_VERBOSE=1` prints the measured virtual time of every wait,
//! `MESH_SIM_TRACE=1` every event as it happens. Besides the scenarios of the brief, the file
//! keeps regressions for the faults that once broke an invariant, and random fault scripts
//! (`explore_chaos`, run on demand).

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt::Write as _;
use std::time::Duration;

use mesh_core::{
    Fencing, FencingEvent, LeaseConfig, Member, NodeId, RenewReply, RenewRequest, RoutingTable,
    ShardCount, ShardId,
};

/// Node ids by index; the ids are ordered, so `a` is always the lowest.
const NAMES: [&str; 6] = ["a", "b", "c", "d", "e", "f"];
const SHARDS: u32 = 64;
const IDS: usize = 100;
const TICK_MS: u64 = 10;
const CAPABILITY: &str = "counter";
const LOG_LINES: usize = 120;
/// How long a leaving node keeps running after it announced its leave.
const LINGER_MS: u64 = 300;

const A: usize = 0;
const B: usize = 1;
const C: usize = 2;
const D: usize = 3;
const E: usize = 4;

fn at(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn index_of(name: &str) -> usize {
    NAMES
        .iter()
        .position(|n| *n == name)
        .unwrap_or_else(|| panic!("{name} is not a simulated node"))
}

fn names(nodes: &[usize]) -> String {
    nodes
        .iter()
        .map(|&n| NAMES[n])
        .collect::<Vec<_>>()
        .join(",")
}

/// xorshift64*: small, deterministic, and no new dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // One splitmix64 step, so that nearby seeds give unrelated streams.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One operation or assertion of a scenario.
#[derive(Debug, Clone)]
enum Step {
    /// Advance virtual time by this many milliseconds.
    Run(u64),
    /// Advance virtual time until this many milliseconds after the last mark.
    RunToMark(u64),
    /// Issue this many calls every millisecond from now on.
    Load(u32),
    /// SIGSTOP: the node executes nothing; its clock keeps running.
    Pause(usize),
    /// SIGCONT: the node runs again, and first sees what queued up in its socket buffer.
    Resume(usize),
    /// kill -9: the process is gone with its activations; messages to it are dropped.
    Kill(usize),
    /// A new process of this node id: a higher incarnation, seeded with one running member.
    Start(usize),
    /// SIGTERM: drain, drop every activation, announce the leave (gossip), keep answering for
    /// `LINGER_MS` as a real process finishing up does, exit.
    Leave(usize),
    /// Cut the link between two nodes, both ways.
    Cut(usize, usize),
    /// Cut one direction only: the first can no longer reach the second.
    CutOneWay(usize, usize),
    /// Replace the network by these groups: every link between different groups is cut (a
    /// node in no group is isolated), every other link works.
    Partition(Vec<Vec<usize>>),
    /// Restore every link.
    Heal,
    /// Start a measurement: waits are timed from here, and call statistics restart.
    Mark(&'static str),
    /// Run until `until` holds, failing if it does not within `within` ms of the last mark;
    /// while it does not hold yet, `meanwhile` must.
    Await {
        what: &'static str,
        until: Cond,
        within: u64,
        meanwhile: Option<Cond>,
    },
    /// Run for `ms` milliseconds, checking `always` every millisecond.
    During { ms: u64, always: Cond },
    /// Check a condition now.
    Assert(Cond),
    /// No call failed since the last mark.
    NoFailedCalls,
    /// Since the last mark, only calls for ids that this node served at the mark failed.
    NoFailedCallsExceptIdsOf(usize),
}

/// A condition on the cluster at one moment.
#[derive(Debug, Clone)]
enum Cond {
    /// Each node runs and may serve (`is_serving`).
    Serving(Vec<usize>),
    /// No node of these serves (running or not).
    NotServing(Vec<usize>),
    /// Each node runs and is admitted.
    Admitted(Vec<usize>),
    /// The node runs an incarnation newer than the one it had at the last mark.
    Reincarnated(usize),
    /// The node serves no shard.
    ServesNothing(usize),
    /// Each node serves at least one shard.
    ServesSome(Vec<usize>),
    /// Every shard in use is served by a running node.
    AllServed,
    /// No node outside these serves any shard.
    NoneServesOutside(Vec<usize>),
    /// A call for any id through any of these entry nodes would succeed now.
    Answerable(Vec<usize>),
    /// Every condition holds.
    All(Vec<Cond>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    Running,
    Paused,
    Killed,
    Left,
}

#[derive(Debug, Clone, Copy)]
struct Activation {
    serial: u64,
    count: u64,
}

#[derive(Debug, Clone)]
enum Payload {
    Request(RenewRequest),
    Reply(Box<RenewReply>),
    Gossip(Member),
}

#[derive(Debug, Clone)]
struct Msg {
    from: usize,
    from_gen: u64,
    to: usize,
    /// For a reply: the process that asked (a reply travels on its connection).
    to_gen: Option<u64>,
    payload: Payload,
}

/// One node id, and its current (or last) process.
struct Node {
    index: usize,
    name: &'static str,
    life: Life,
    fencing: Fencing,
    /// Which process of this node id this is; grows on every start.
    gen: u64,
    /// The epoch of the view that `route` was built from.
    epoch: u64,
    /// The owner of every shard by this node's own routing table.
    route: Vec<Option<usize>>,
    activations: HashMap<usize, Activation>,
    next_tick: u64,
    /// When it last sent a round of renewal requests.
    last_round_at: u64,
    /// A leaving node exits then.
    exit_at: Option<u64>,
    /// Messages that reached the node while it was paused.
    buffer: Vec<Msg>,
}

impl Node {
    fn owns(&self, shard: usize) -> bool {
        self.route[shard] == Some(self.index)
    }

    /// Serves `shard`, or would the moment it runs again: running or paused, its lease valid,
    /// and its own table names it owner.
    fn claims(&self, shard: usize, now: u64) -> bool {
        matches!(self.life, Life::Running | Life::Paused)
            && self.fencing.is_serving(at(now))
            && self.owns(shard)
    }

    fn describe(&self, now: u64) -> String {
        format!(
            "{} ({:?}, incarnation {}, serving until {:?}, admitted {})",
            self.name,
            self.life,
            self.fencing.local().incarnation,
            self.fencing.serving_until().map(|u| u.as_millis()),
            self.fencing.is_admitted()
        ) + if self.fencing.is_serving(at(now)) {
            ""
        } else {
            " [not serving]"
        }
    }
}

/// A killed process whose lease had not run out yet: had it only been paused, it could still
/// serve, so nobody else may serve its shards before its lease ends.
struct Ghost {
    node: usize,
    incarnation: u64,
    fencing: Fencing,
    route: Vec<Option<usize>>,
}

#[derive(Debug, Clone, Copy)]
struct Ack {
    serial: u64,
    count: u64,
    node: usize,
    time: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// The owner was reached but does not serve the id's shard (not the owner by its own
    /// table, no lease, not admitted, or the entry's table had no owner).
    Refused,
    /// The owner is paused or dead, or the link to it is cut.
    Unreachable,
}

#[derive(Debug, Default)]
struct Stats {
    ok: u64,
    refused: u64,
    unreachable: u64,
    failed_by_id: Vec<u64>,
}

struct Sim {
    scenario: &'static str,
    now: u64,
    config: LeaseConfig,
    shards: ShardCount,
    nodes: Vec<Node>,
    ghosts: Vec<Ghost>,
    net: BTreeMap<(u64, u64), Msg>,
    seq: u64,
    /// `cut[x][y]`: messages from x to y are lost.
    cut: [[bool; NAMES.len()]; NAMES.len()],
    rng: Rng,
    /// Message delay bounds in ms.
    delay: (u64, u64),
    load: u32,
    id_shard: Vec<usize>,
    used_shards: Vec<usize>,
    serial: u64,
    acks: Vec<Option<Ack>>,
    /// Serials of activations that must never acknowledge again.
    stale: BTreeSet<u64>,
    stats: Stats,
    mark: (&'static str, u64),
    mark_incarnations: Vec<u64>,
    mark_servers: Vec<Option<usize>>,
    timings: Vec<String>,
    log: VecDeque<String>,
    /// `MESH_SIM_TRACE` is set: print every event as it happens.
    trace: bool,
    /// A fault was injected since the last invariant check.
    dirty: bool,
    /// Per node (life, serving, view epoch, process) at the last invariant check.
    signature: Vec<(Life, bool, u64, u64)>,
}

impl Sim {
    /// `n` nodes started at time 0: `a` alone (it starts the cluster), the others seeded with
    /// `a`'s descriptor.
    fn new(scenario: &'static str, n: usize, seed: u64) -> Sim {
        let shards = ShardCount::new(SHARDS).expect("non-zero");
        let id_shard: Vec<usize> = (0..IDS)
            .map(|id| shards.shard_for(&format!("counter_{id}")).0 as usize)
            .collect();
        let used_shards: BTreeSet<usize> = id_shard.iter().copied().collect();
        let mut sim = Sim {
            scenario,
            now: 0,
            config: LeaseConfig::default(),
            shards,
            nodes: Vec::new(),
            ghosts: Vec::new(),
            net: BTreeMap::new(),
            seq: 0,
            cut: Default::default(),
            rng: Rng::new(seed),
            delay: (1, 5),
            load: 0,
            id_shard,
            used_shards: used_shards.into_iter().collect(),
            serial: 0,
            acks: vec![None; IDS],
            stale: BTreeSet::new(),
            stats: Stats {
                failed_by_id: vec![0; IDS],
                ..Stats::default()
            },
            mark: ("start", 0),
            mark_incarnations: Vec::new(),
            mark_servers: vec![None; IDS],
            timings: Vec::new(),
            log: VecDeque::new(),
            trace: std::env::var_os("MESH_SIM_TRACE").is_some(),
            dirty: true,
            signature: Vec::new(),
        };
        for i in 0..n {
            sim.start(i);
        }
        sim
    }

    fn run(&mut self, steps: &[Step]) {
        for step in steps {
            self.note(format!("step {step:?}"));
            self.apply(step);
        }
        if std::env::var_os("MESH_SIM_VERBOSE").is_some() {
            eprintln!(
                "[{}] {}; calls since last mark: {} ok, {} refused, {} unreachable",
                self.scenario,
                self.timings.join("; "),
                self.stats.ok,
                self.stats.refused,
                self.stats.unreachable
            );
        }
    }

    fn apply(&mut self, step: &Step) {
        self.dirty = true;
        match step {
            Step::Run(ms) => {
                for _ in 0..*ms {
                    self.step();
                }
            }
            Step::RunToMark(ms) => {
                while self.now < self.mark.1 + ms {
                    self.step();
                }
            }
            Step::Load(calls) => self.load = *calls,
            Step::Pause(i) => {
                assert_eq!(self.nodes[*i].life, Life::Running, "scenario error");
                self.nodes[*i].life = Life::Paused;
            }
            Step::Resume(i) => self.resume(*i),
            Step::Kill(i) => self.kill(*i),
            Step::Start(i) => self.start(*i),
            Step::Leave(i) => self.leave(*i),
            Step::Cut(x, y) => {
                self.cut[*x][*y] = true;
                self.cut[*y][*x] = true;
            }
            Step::CutOneWay(x, y) => {
                self.cut[*x][*y] = true;
            }
            Step::Partition(groups) => {
                self.cut = Default::default();
                let group_of = |n: usize| groups.iter().position(|g| g.contains(&n));
                for x in 0..NAMES.len() {
                    for y in 0..NAMES.len() {
                        if x != y && (group_of(x).is_none() || group_of(x) != group_of(y)) {
                            self.cut[x][y] = true;
                        }
                    }
                }
            }
            Step::Heal => self.cut = Default::default(),
            Step::Mark(label) => {
                self.mark = (label, self.now);
                self.stats = Stats {
                    failed_by_id: vec![0; IDS],
                    ..Stats::default()
                };
                self.mark_incarnations = self
                    .nodes
                    .iter()
                    .map(|n| n.fencing.local().incarnation)
                    .collect();
                self.mark_servers = (0..IDS).map(|id| self.server(self.id_shard[id])).collect();
            }
            Step::Await {
                what,
                until,
                within,
                meanwhile,
            } => loop {
                if self.why_not(until).is_none() {
                    let elapsed = self.now - self.mark.1;
                    self.timings
                        .push(format!("{what}: {elapsed} ms after '{}'", self.mark.0));
                    break;
                }
                if let Some(meanwhile) = meanwhile {
                    if let Some(why) = self.why_not(meanwhile) {
                        self.fail(format!(
                            "while waiting for '{what}', a condition that must hold until then \
                             failed: {why}"
                        ));
                    }
                }
                if self.now >= self.mark.1 + within {
                    let why = self.why_not(until).unwrap_or_default();
                    self.fail(format!(
                        "'{what}' did not happen within {within} ms of '{}' (at {} ms): {why}",
                        self.mark.0, self.mark.1
                    ));
                }
                self.step();
            },
            Step::During { ms, always } => {
                for _ in 0..*ms {
                    self.step();
                    if let Some(why) = self.why_not(always) {
                        self.fail(format!(
                            "a condition that must hold throughout failed: {why}"
                        ));
                    }
                }
            }
            Step::Assert(cond) => {
                if let Some(why) = self.why_not(cond) {
                    self.fail(format!("assertion failed: {why}"));
                }
            }
            Step::NoFailedCalls => {
                if self.stats.refused + self.stats.unreachable > 0 {
                    let ids = self.failed_ids(|_| true);
                    self.fail(format!(
                        "{} calls refused and {} unreachable since '{}' ({} ok); failing ids: {ids}",
                        self.stats.refused, self.stats.unreachable, self.mark.0, self.stats.ok
                    ));
                }
            }
            Step::NoFailedCallsExceptIdsOf(node) => {
                let servers = self.mark_servers.clone();
                let ids = self.failed_ids(|id| servers[id] != Some(*node));
                if !ids.is_empty() {
                    self.fail(format!(
                        "calls for ids not served by {} at '{}' failed: {ids}",
                        NAMES[*node], self.mark.0
                    ));
                }
            }
        }
    }

    fn failed_ids(&self, keep: impl Fn(usize) -> bool) -> String {
        (0..IDS)
            .filter(|&id| self.stats.failed_by_id[id] > 0 && keep(id))
            .map(|id| {
                format!(
                    "counter_{id} (shard {}, {} failures, served by {:?} at the mark)",
                    self.id_shard[id],
                    self.stats.failed_by_id[id],
                    self.mark_servers[id].map(|n| NAMES[n])
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    // ----- the passage of time -----

    /// One millisecond: deliver what is due, tick, sweep, call, check.
    fn step(&mut self) {
        self.now += 1;
        while let Some(entry) = self.net.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            let msg = entry.remove();
            self.deliver(msg);
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].life == Life::Running && self.nodes[i].next_tick <= self.now {
                self.tick(i);
            }
            if self.nodes[i].exit_at.is_some_and(|t| t <= self.now) {
                self.nodes[i].exit_at = None;
                self.nodes[i].life = Life::Left;
                self.nodes[i].buffer.clear();
                self.dirty = true;
            }
        }
        let now = at(self.now);
        for node in &mut self.nodes {
            if node.life == Life::Running && !node.fencing.is_serving(now) {
                node.activations.clear();
            }
        }
        self.ghosts.retain(|g| g.fencing.is_serving(now));
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].life == Life::Running)
            .collect();
        for _ in 0..self.load {
            if running.is_empty() {
                break;
            }
            let entry = running[self.rng.below(running.len() as u64) as usize];
            let id = self.rng.below(IDS as u64) as usize;
            self.call(entry, id);
        }
        // Claims follow from each node's life, lease and table (time passing only ends
        // leases); every new activation is checked as it starts.
        let signature: Vec<(Life, bool, u64, u64)> = self
            .nodes
            .iter()
            .map(|n| (n.life, n.fencing.is_serving(now), n.epoch, n.gen))
            .collect();
        if std::mem::take(&mut self.dirty) || signature != self.signature {
            self.signature = signature;
            self.check();
        }
    }

    fn tick(&mut self, i: usize) {
        let requests = self.nodes[i].fencing.tick(at(self.now));
        self.nodes[i].next_tick = self.now + TICK_MS;
        if !requests.is_empty() {
            self.nodes[i].last_round_at = self.now;
        }
        self.sync(i);
        for (member, request) in requests {
            let to = index_of(member.node.as_str());
            self.send(i, to, None, Payload::Request(request));
        }
    }

    fn send(&mut self, from: usize, to: usize, to_gen: Option<u64>, payload: Payload) {
        if self.cut[from][to] {
            return;
        }
        let (min, max) = self.delay;
        let delay = min + self.rng.below(max - min + 1);
        self.seq += 1;
        let msg = Msg {
            from,
            from_gen: self.nodes[from].gen,
            to,
            to_gen,
            payload,
        };
        self.net.insert((self.now + delay, self.seq), msg);
    }

    fn deliver(&mut self, msg: Msg) {
        if self.cut[msg.from][msg.to] {
            return; // lost in flight
        }
        match self.nodes[msg.to].life {
            Life::Running => self.handle(msg),
            Life::Paused => self.nodes[msg.to].buffer.push(msg),
            Life::Killed | Life::Left => {}
        }
    }

    fn handle(&mut self, msg: Msg) {
        let now = at(self.now);
        let i = msg.to;
        match msg.payload {
            Payload::Request(request) => {
                // The runtime learns the asker, republishes its routing and stops what moved
                // away before it answers: the reply is `settled`.
                self.nodes[i].fencing.observe(request.from.clone(), now);
                self.sync(i);
                let reply = self.nodes[i].fencing.on_request(request, now, true);
                self.sync(i);
                self.send(
                    i,
                    msg.from,
                    Some(msg.from_gen),
                    Payload::Reply(Box::new(reply)),
                );
            }
            Payload::Reply(reply) => {
                if msg.to_gen != Some(self.nodes[i].gen) {
                    return; // the asking process is gone, and its connection with it
                }
                self.nodes[i].fencing.on_reply(*reply, now);
                self.sync(i);
            }
            Payload::Gossip(member) => {
                self.nodes[i].fencing.observe(member, now);
                self.sync(i);
            }
        }
    }

    /// What the runtime does after every call into `Fencing`: act on events, republish the
    /// routing table, drop what this node may no longer serve.
    fn sync(&mut self, i: usize) {
        let now = self.now;
        let node = &mut self.nodes[i];
        let events = node.fencing.take_events();
        for event in &events {
            if matches!(
                event,
                FencingEvent::LeaseLost | FencingEvent::Reincarnated { .. }
            ) {
                node.activations.clear();
            }
        }
        if node.fencing.view().epoch() != node.epoch {
            let table = RoutingTable::build(node.fencing.view(), self.shards);
            node.route = (0..SHARDS)
                .map(|s| {
                    table
                        .owner(ShardId(s), CAPABILITY)
                        .map(|m| index_of(m.node.as_str()))
                })
                .collect();
            node.epoch = node.fencing.view().epoch();
        }
        if !node.fencing.is_serving(at(now)) {
            node.activations.clear();
        } else {
            let (route, id_shard, me) = (&node.route, &self.id_shard, node.index);
            node.activations
                .retain(|id, _| route[id_shard[*id]] == Some(me));
        }
        let name = node.name;
        for event in events {
            self.note(format!("{name}: {event:?}"));
        }
    }

    // ----- faults -----

    fn start(&mut self, i: usize) {
        let name = NAMES[i];
        if let Some(node) = self.nodes.get_mut(i) {
            if node.exit_at.take().is_some() {
                node.life = Life::Left; // a leaving process still finishing up exits first
            }
        }
        let (incarnation, gen) = match self.nodes.get(i) {
            None => (0, 1),
            Some(node) => {
                assert!(
                    matches!(node.life, Life::Killed | Life::Left),
                    "scenario error: {name} is still running"
                );
                (node.fencing.local().incarnation + 1, node.gen + 1)
            }
        };
        let me = Member::alive(
            NodeId::new(name).expect("non-empty"),
            format!("{name}:4000"),
            [CAPABILITY],
        )
        .expect("valid capability")
        .with_incarnation(incarnation);
        let seed = (0..self.nodes.len()).find(|&j| j != i && self.nodes[j].life == Life::Running);
        let now = at(self.now);
        let mut fencing = Fencing::new(me, self.config, seed.is_some(), now);
        if let Some(seed) = seed {
            fencing.observe(self.nodes[seed].fencing.local().clone(), now);
        }
        let node = Node {
            index: i,
            name,
            life: Life::Running,
            fencing,
            gen,
            epoch: u64::MAX,
            route: vec![None; SHARDS as usize],
            activations: HashMap::new(),
            // Spread the nodes' ticks over the 10 ms.
            next_tick: self.now + (i as u64 * 3) % TICK_MS,
            buffer: Vec::new(),
            last_round_at: 0,
            exit_at: None,
        };
        if i == self.nodes.len() {
            self.nodes.push(node);
        } else {
            self.nodes[i] = node;
        }
        self.note(format!(
            "{name}: started, incarnation {incarnation}, seed {:?}",
            seed.map(|s| NAMES[s])
        ));
        self.sync(i);
    }

    fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert!(
            matches!(node.life, Life::Running | Life::Paused),
            "scenario error"
        );
        node.life = Life::Killed;
        node.activations.clear();
        node.buffer.clear();
        if node.fencing.is_serving(at(self.now)) {
            self.ghosts.push(Ghost {
                node: i,
                incarnation: node.fencing.local().incarnation,
                fencing: node.fencing.clone(),
                route: node.route.clone(),
            });
        }
    }

    fn resume(&mut self, i: usize) {
        assert_eq!(self.nodes[i].life, Life::Paused, "scenario error");
        let node = &mut self.nodes[i];
        node.life = Life::Running;
        node.next_tick = node.next_tick.min(self.now + 1);
        let lease = self.config.lease.as_millis() as u64;
        if !node.fencing.is_serving(at(self.now)) && node.last_round_at + lease <= self.now {
            // Its lease ran out while it was stopped, and no reply waiting in its buffer can
            // renew it: whatever it holds may have moved.
            self.stale
                .extend(node.activations.values().map(|a| a.serial));
        }
        let held: Vec<usize> = node.activations.keys().copied().collect();
        // The socket buffer is read first thing, in order.
        let buffer = std::mem::take(&mut node.buffer);
        for msg in buffer {
            self.seq += 1;
            self.net.insert((self.now, self.seq), msg);
        }
        // Requests that were waiting for it hit it before it has processed anything.
        for id in held {
            self.call(i, id);
        }
    }

    fn leave(&mut self, i: usize) {
        let now = at(self.now);
        self.nodes[i].fencing.drain(now);
        self.sync(i);
        self.nodes[i].activations.clear();
        self.nodes[i].fencing.leave(now);
        self.sync(i);
        let me = self.nodes[i].fencing.local().clone();
        for j in 0..self.nodes.len() {
            if j != i && matches!(self.nodes[j].life, Life::Running | Life::Paused) {
                self.send(i, j, None, Payload::Gossip(me.clone()));
            }
        }
        self.nodes[i].exit_at = Some(self.now + LINGER_MS);
    }

    // ----- calls -----

    fn call(&mut self, entry: usize, id: usize) -> Outcome {
        let outcome = self.execute(entry, id);
        match outcome {
            Outcome::Ok => self.stats.ok += 1,
            Outcome::Refused => self.stats.refused += 1,
            Outcome::Unreachable => self.stats.unreachable += 1,
        }
        if outcome != Outcome::Ok {
            self.stats.failed_by_id[id] += 1;
        }
        outcome
    }

    /// Where a call for `id` through `entry` would fail now, if it would.
    fn obstacle(&self, serving: &[bool], entry: usize, id: usize) -> Result<usize, Outcome> {
        let shard = self.id_shard[id];
        let owner = self.nodes[entry].route[shard].ok_or(Outcome::Refused)?;
        let linked = owner == entry || (!self.cut[entry][owner] && !self.cut[owner][entry]);
        if self.nodes[owner].life != Life::Running || !linked {
            return Err(Outcome::Unreachable);
        }
        if !(serving[owner] && self.nodes[owner].owns(shard)) {
            return Err(Outcome::Refused);
        }
        Ok(owner)
    }

    fn execute(&mut self, entry: usize, id: usize) -> Outcome {
        let owner = match self.obstacle(&self.serving(), entry, id) {
            Ok(owner) => owner,
            Err(outcome) => return outcome,
        };
        let next_serial = self.serial + 1;
        let (activation, created) = match self.nodes[owner].activations.entry(id) {
            Entry::Occupied(mut e) => {
                e.get_mut().count += 1;
                (*e.get(), false)
            }
            Entry::Vacant(e) => (
                *e.insert(Activation {
                    serial: next_serial,
                    count: 1,
                }),
                true,
            ),
        };
        if created {
            self.serial = next_serial;
            self.check_new_activation(id, owner);
        }
        self.record_ack(id, owner, activation);
        Outcome::Ok
    }

    /// Invariant 3: a new activation starts only where nobody else holds the id or a claim on
    /// its shard.
    fn check_new_activation(&self, id: usize, owner: usize) {
        let shard = self.id_shard[id];
        for (j, node) in self.nodes.iter().enumerate() {
            if j == owner {
                continue;
            }
            if node.life == Life::Running && node.activations.contains_key(&id) {
                self.fail(format!(
                    "invariant 3: counter_{id} (shard {shard}) activated on {} while {} still \
                     holds an activation of it",
                    NAMES[owner],
                    node.describe(self.now)
                ));
            }
            if node.claims(shard, self.now) {
                self.fail(format!(
                    "invariant 3: counter_{id} (shard {shard}) activated on {} while {} still \
                     has a valid claim on its shard",
                    NAMES[owner],
                    node.describe(self.now)
                ));
            }
        }
        for ghost in &self.ghosts {
            if ghost.fencing.is_serving(at(self.now)) && ghost.route[shard] == Some(ghost.node) {
                self.fail(format!(
                    "invariant 3: counter_{id} (shard {shard}) activated on {} before the lease \
                     of killed {} (incarnation {}) ran out",
                    NAMES[owner], NAMES[ghost.node], ghost.incarnation
                ));
            }
        }
    }

    /// Invariants 2 and 3 on one acknowledged call.
    fn record_ack(&mut self, id: usize, node: usize, activation: Activation) {
        let Activation { serial, count } = activation;
        let who = format!(
            "counter_{id} (shard {}) on {} activation {serial} count {count}",
            self.id_shard[id], NAMES[node]
        );
        if self.stale.contains(&serial) {
            self.fail(format!(
                "invariant 2: {who}: this activation was held across a pause that outlived the \
                 node's lease, and it acknowledged again"
            ));
        }
        if let Some(last) = self.acks[id] {
            let last_who = format!(
                "{} activation {} count {} at {} ms",
                NAMES[last.node], last.serial, last.count, last.time
            );
            if serial < last.serial {
                self.fail(format!(
                    "invariant 2: {who} acknowledged after the newer {last_who}"
                ));
            }
            if serial == last.serial && count != last.count + 1 {
                self.fail(format!(
                    "invariant 3: {who} does not follow {last_who}: an acknowledged update was \
                     rolled back"
                ));
            }
            if serial > last.serial && count != 1 {
                self.fail(format!("invariant 3: new {who} does not start at 1"));
            }
        }
        self.acks[id] = Some(Ack {
            serial,
            count,
            node,
            time: self.now,
        });
    }

    // ----- invariants and conditions -----

    /// The running node that serves `shard` now, if one does.
    fn server(&self, shard: usize) -> Option<usize> {
        let serving = self.serving();
        (0..self.nodes.len()).find(|&i| serving[i] && self.nodes[i].owns(shard))
    }

    /// Which nodes run and may serve now.
    fn serving(&self) -> Vec<bool> {
        self.nodes
            .iter()
            .map(|n| n.life == Life::Running && n.fencing.is_serving(at(self.now)))
            .collect()
    }

    /// Invariant 1 (and the activation side of it), after every millisecond.
    fn check(&self) {
        let now = at(self.now);
        let serving: Vec<bool> = self
            .nodes
            .iter()
            .map(|n| matches!(n.life, Life::Running | Life::Paused) && n.fencing.is_serving(now))
            .collect();
        let ghosts: Vec<&Ghost> = self
            .ghosts
            .iter()
            .filter(|g| g.fencing.is_serving(now))
            .collect();
        for shard in 0..SHARDS as usize {
            let claims = (0..self.nodes.len())
                .filter(|&i| serving[i] && self.nodes[i].owns(shard))
                .count()
                + ghosts
                    .iter()
                    .filter(|g| g.route[shard] == Some(g.node))
                    .count();
            if claims > 1 {
                let mut claimants: Vec<String> = self
                    .nodes
                    .iter()
                    .filter(|n| n.claims(shard, self.now))
                    .map(|n| n.describe(self.now))
                    .collect();
                for ghost in ghosts.iter().filter(|g| g.route[shard] == Some(g.node)) {
                    claimants.push(format!(
                        "killed {} (incarnation {}, lease until {:?})",
                        NAMES[ghost.node],
                        ghost.incarnation,
                        ghost.fencing.serving_until().map(|u| u.as_millis())
                    ));
                }
                let ids: Vec<String> = (0..IDS)
                    .filter(|&id| self.id_shard[id] == shard)
                    .map(|id| format!("counter_{id}"))
                    .collect();
                self.fail(format!(
                    "invariant 1 (one live activation per identity): shard {shard} (ids {}) is \
                     served by {}",
                    ids.join(","),
                    claimants.join(" and ")
                ));
            }
        }
        let mut holder: Vec<Option<usize>> = vec![None; IDS];
        for node in self.nodes.iter().filter(|n| n.life == Life::Running) {
            for id in node.activations.keys() {
                if let Some(other) = holder[*id] {
                    self.fail(format!(
                        "invariant 1 (one live activation per identity): counter_{id} is active \
                         on both {} and {}",
                        NAMES[other], node.name
                    ));
                }
                holder[*id] = Some(node.index);
            }
        }
    }

    /// `None` when `cond` holds now, else why not.
    fn why_not(&self, cond: &Cond) -> Option<String> {
        let now = self.now;
        let serving = &self.serving();
        fn first(reasons: impl Iterator<Item = String>) -> Option<String> {
            let reasons: Vec<String> = reasons.take(4).collect();
            (!reasons.is_empty()).then(|| reasons.join("; "))
        }
        match cond {
            Cond::Serving(nodes) => first(
                nodes
                    .iter()
                    .map(|&n| &self.nodes[n])
                    .filter(|n| n.life != Life::Running || !n.fencing.is_serving(at(now)))
                    .map(|n| {
                        format!(
                            "{} does not serve: {}",
                            n.describe(now),
                            n.fencing
                                .refusal(at(now))
                                .map(|(_, why)| why)
                                .unwrap_or_default()
                        )
                    }),
            ),
            Cond::NotServing(nodes) => first(
                nodes
                    .iter()
                    .map(|&n| &self.nodes[n])
                    .filter(|n| n.life == Life::Running && n.fencing.is_serving(at(now)))
                    .map(|n| format!("{} still serves", n.describe(now))),
            ),
            Cond::Admitted(nodes) => first(
                nodes
                    .iter()
                    .map(|&n| &self.nodes[n])
                    .filter(|n| n.life != Life::Running || !n.fencing.is_admitted())
                    .map(|n| {
                        format!(
                            "{} is not admitted: {}",
                            n.describe(now),
                            n.fencing
                                .refusal(at(now))
                                .map(|(_, why)| why)
                                .unwrap_or_default()
                        )
                    }),
            ),
            Cond::Reincarnated(n) => {
                let node = &self.nodes[*n];
                let before = self.mark_incarnations.get(*n).copied().unwrap_or(0);
                (node.fencing.local().incarnation <= before).then(|| {
                    format!(
                        "{} still runs incarnation {before} of '{}'",
                        node.describe(now),
                        self.mark.0
                    )
                })
            }
            Cond::ServesNothing(n) => {
                let served: Vec<usize> = (0..SHARDS as usize)
                    .filter(|&s| serving[*n] && self.nodes[*n].owns(s))
                    .collect();
                (!served.is_empty())
                    .then(|| format!("{} serves shards {served:?}", self.nodes[*n].describe(now)))
            }
            Cond::ServesSome(nodes) => first(
                nodes
                    .iter()
                    .filter(|&&n| {
                        !(0..SHARDS as usize).any(|s| serving[n] && self.nodes[n].owns(s))
                    })
                    .map(|&n| format!("{} serves no shard", self.nodes[n].describe(now))),
            ),
            Cond::AllServed => first(
                self.used_shards
                    .iter()
                    .filter(|&&s| {
                        !(0..self.nodes.len()).any(|i| serving[i] && self.nodes[i].owns(s))
                    })
                    .map(|&s| {
                        format!(
                            "no running node serves shard {s} (owners by table: {})",
                            self.nodes
                                .iter()
                                .filter(|n| n.life == Life::Running)
                                .map(|n| format!("{}->{:?}", n.name, n.route[s].map(|o| NAMES[o])))
                                .collect::<Vec<_>>()
                                .join(" ")
                        )
                    }),
            ),
            Cond::NoneServesOutside(nodes) => first(
                (0..self.nodes.len())
                    .filter(|n| !nodes.contains(n))
                    .flat_map(|n| {
                        (0..SHARDS as usize)
                            .filter(move |&s| serving[n] && self.nodes[n].owns(s))
                            .map(move |s| {
                                format!(
                                    "{} serves shard {s}, outside {}",
                                    self.nodes[n].describe(now),
                                    names(nodes)
                                )
                            })
                    }),
            ),
            Cond::Answerable(entries) => first(entries.iter().flat_map(|&e| {
                (0..IDS).filter_map(move |id| match self.obstacle(serving, e, id) {
                    Ok(_) => None,
                    Err(outcome) => Some(format!(
                        "counter_{id} (shard {}) through {} is {outcome:?}: routed to \
                                 {}",
                        self.id_shard[id],
                        NAMES[e],
                        self.nodes[e].route[self.id_shard[id]]
                            .map_or("nobody".into(), |o| self.nodes[o].describe(now))
                    )),
                })
            })),
            Cond::All(conds) => first(conds.iter().filter_map(|c| self.why_not(c))),
        }
    }

    fn note(&mut self, line: String) {
        if self.trace {
            eprintln!("[{}] {:>6} ms  {line}", self.scenario, self.now);
        }
        if self.log.len() == LOG_LINES {
            self.log.pop_front();
        }
        self.log.push_back(format!("{:>6} ms  {line}", self.now));
    }

    fn fail(&self, message: String) -> ! {
        let mut text = format!(
            "[{}] at {} ms (virtual): {message}\nnodes:\n",
            self.scenario, self.now
        );
        for node in &self.nodes {
            let _ = writeln!(text, "  {}", node.describe(self.now));
        }
        if self.trace {
            for node in &self.nodes {
                eprintln!("{} {:#?}", node.name, node.fencing);
            }
        }
        let _ = writeln!(text, "recent events:");
        for line in &self.log {
            let _ = writeln!(text, "  {line}");
        }
        panic!("{text}");
    }
}

// ----- scenario building blocks -----

fn all(n: usize) -> Vec<usize> {
    (0..n).collect()
}

fn wait(what: &'static str, until: Cond, within: u64) -> Step {
    Step::Await {
        what,
        until,
        within,
        meanwhile: None,
    }
}

/// Every node admitted, serving, and every id answerable through every node.
fn healthy(nodes: Vec<usize>) -> Cond {
    Cond::All(vec![
        Cond::Admitted(nodes.clone()),
        Cond::Serving(nodes.clone()),
        Cond::ServesSome(nodes.clone()),
        Cond::Answerable(nodes),
    ])
}

/// Boot an `n`-node cluster and put it under load.
fn boot(n: usize, calls_per_ms: u32) -> Vec<Step> {
    vec![
        Step::Mark("boot"),
        wait("the cluster formed", healthy(all(n)), 3000),
        Step::Load(calls_per_ms),
        Step::Run(1000),
    ]
}

fn scenario(name: &'static str, n: usize, seed: u64, steps: Vec<Step>) {
    let mut sim = Sim::new(name, n, seed);
    sim.run(&steps);
}

fn script(parts: Vec<Vec<Step>>) -> Vec<Step> {
    parts.into_iter().flatten().collect()
}

// ----- the scenarios of the brief -----

/// Scenario 1: A stable cluster under load: no call fails once it has formed, and every node serves.
#[test]
fn stable_three_node_cluster_serves_every_call() {
    scenario(
        "stable",
        3,
        1,
        script(vec![
            boot(3, 2),
            vec![
                Step::Mark("settled"),
                Step::Run(5000),
                Step::NoFailedCalls,
                Step::Assert(healthy(all(3))),
            ],
        ]),
    );
}

/// Scenario 2: SIGSTOP one node of three for 3 s under load, then SIGCONT: the others serve its shards
/// within 2 s of the pause; once resumed it serves nothing (and its old activations never
/// answer) until it has rejoined as a new incarnation and been admitted.
#[test]
fn a_paused_node_is_replaced_and_rejoins_as_a_new_incarnation() {
    for seed in 1..=2 {
        scenario(
            "pause",
            3,
            seed,
            script(vec![
                boot(3, 2),
                vec![
                    Step::Pause(B),
                    Step::Mark("pause b"),
                    wait(
                        "a and c serve b's shards",
                        Cond::All(vec![Cond::AllServed, Cond::Answerable(vec![A, C])]),
                        2000,
                    ),
                    Step::RunToMark(3000),
                    Step::Resume(B),
                    Step::Mark("resume b"),
                    Step::Await {
                        what: "b re-incarnated and re-admitted",
                        until: Cond::All(vec![Cond::Reincarnated(B), Cond::Admitted(vec![B])]),
                        within: 2000,
                        meanwhile: Some(Cond::ServesNothing(B)),
                    },
                    wait("b serves again", healthy(all(3)), 2000),
                    Step::Run(1000),
                ],
            ]),
        );
    }
}

/// Scenario 3: Partition five nodes 2 | 3: the minority stops serving within one lease, the majority
/// serves every id within 2 s and nothing else serves; after the heal all five serve again.
#[test]
fn a_partition_minority_stops_and_the_majority_serves() {
    scenario(
        "partition 2|3",
        5,
        3,
        script(vec![
            boot(5, 3),
            vec![
                Step::Partition(vec![vec![A, B], vec![C, D, E]]),
                Step::Mark("partition"),
                wait(
                    "the minority stops serving",
                    Cond::NotServing(vec![A, B]),
                    1000,
                ),
                wait(
                    "the majority serves every id",
                    Cond::Answerable(vec![C, D, E]),
                    2000,
                ),
                Step::During {
                    ms: 2000,
                    always: Cond::All(vec![
                        Cond::NoneServesOutside(vec![C, D, E]),
                        Cond::Answerable(vec![C, D, E]),
                    ]),
                },
                Step::Heal,
                Step::Mark("heal"),
                wait("all five serve again", healthy(all(5)), 5000),
                Step::Run(1000),
                Step::Assert(healthy(all(5))),
            ],
        ]),
    );
}

/// Scenario 4: A 2 | 2 tie among four nodes: only the side holding the lowest node id serves.
#[test]
fn a_tie_goes_to_the_side_with_the_lowest_node_id() {
    scenario(
        "tie 2|2",
        4,
        4,
        script(vec![
            boot(4, 2),
            vec![
                Step::Partition(vec![vec![A, B], vec![C, D]]),
                Step::Mark("partition ab|cd"),
                wait("c and d stop serving", Cond::NotServing(vec![C, D]), 1000),
                wait("a and b serve every id", Cond::Answerable(vec![A, B]), 2000),
                Step::During {
                    ms: 2000,
                    always: Cond::All(vec![
                        Cond::NoneServesOutside(vec![A, B]),
                        Cond::Serving(vec![A, B]),
                    ]),
                },
                Step::Heal,
                Step::Mark("heal"),
                wait("all four serve again", healthy(all(4)), 5000),
                Step::Run(1000),
            ],
        ]),
    );
}

/// Scenario 5: A fourth node joins while calls flow: no shard is ever served twice, and it serves its
/// shards once every member acknowledged it.
#[test]
fn a_node_joining_under_load_serves_once_admitted() {
    for seed in 1..=2 {
        scenario(
            "join",
            3,
            seed,
            script(vec![
                boot(3, 3),
                vec![
                    Step::Start(D),
                    Step::Mark("join d"),
                    wait("d admitted and serving", healthy(all(4)), 3000),
                    Step::Run(1000),
                ],
            ]),
        );
    }
}

/// Scenario 6: A graceful leave under load: the others serve the leaver's shards within a few
/// milliseconds (asserted: 300 ms), never twice.
#[test]
fn a_graceful_leave_hands_its_shards_over_promptly() {
    for seed in 1..=2 {
        scenario(
            "leave",
            3,
            seed,
            script(vec![
                boot(3, 3),
                vec![
                    Step::Leave(C),
                    Step::Mark("leave c"),
                    wait(
                        "a and b serve c's shards",
                        Cond::All(vec![Cond::AllServed, Cond::Answerable(vec![A, B])]),
                        300,
                    ),
                    Step::Run(1000),
                    Step::Assert(healthy(vec![A, B])),
                ],
            ]),
        );
    }
}

/// Scenario 7: kill -9 of one node under load: its ids answer again within 2 s, and calls for the ids
/// of the live owners never fail meanwhile.
#[test]
fn after_kill_9_the_dead_nodes_ids_answer_again_within_2_s() {
    for seed in 1..=2 {
        scenario(
            "kill -9",
            3,
            seed,
            script(vec![
                boot(3, 3),
                vec![
                    Step::Mark("kill c"),
                    Step::Kill(C),
                    wait(
                        "c's ids answer again",
                        Cond::All(vec![Cond::AllServed, Cond::Answerable(vec![A, B])]),
                        2000,
                    ),
                    Step::NoFailedCallsExceptIdsOf(C),
                    Step::Run(1000),
                ],
            ]),
        );
    }
}

/// Scenario 8: kill -9 and restart under the same node id (a new incarnation) after 0, 50 and 500 ms,
/// while the old process's lease may still run: the killed process counts as a claimant
/// until its lease ends, so the new one must not serve before.
#[test]
fn a_restarted_node_never_overlaps_its_previous_incarnation() {
    for (seed, downtime) in [(1, 0), (2, 50), (3, 500)] {
        scenario(
            "kill and restart",
            3,
            seed,
            script(vec![
                boot(3, 3),
                vec![
                    Step::Kill(C),
                    Step::Run(downtime),
                    Step::Start(C),
                    Step::Mark("restart c"),
                    wait("the new c serves", healthy(all(3)), 3000),
                    Step::Run(1000),
                ],
            ]),
        );
    }
}

/// Scenario 9: Asymmetric cuts (a cannot reach b, then neither reaches the other; both reach c): no
/// invariant breaks and every shard stays served throughout.
#[test]
fn an_asymmetric_cut_keeps_the_cluster_serving() {
    scenario(
        "asymmetric cut",
        3,
        9,
        script(vec![
            boot(3, 3),
            vec![
                Step::CutOneWay(A, B),
                Step::Mark("cut a->b"),
                Step::During {
                    ms: 3000,
                    always: Cond::All(vec![
                        Cond::AllServed,
                        Cond::Serving(all(3)),
                        Cond::Answerable(vec![C]),
                    ]),
                },
                Step::Heal,
                Step::Run(1000),
                Step::Cut(A, B),
                Step::Mark("cut a<->b"),
                Step::During {
                    ms: 3000,
                    always: Cond::All(vec![Cond::AllServed, Cond::Answerable(vec![C])]),
                },
                Step::Heal,
                Step::Mark("heal"),
                wait("every node serves again", healthy(all(3)), 3000),
                Step::Run(1000),
            ],
        ]),
    );
}

// ----- regressions: faults under which the state machine once broke an invariant -----

/// Every node isolated for 2 s, then healed. Each node had stopped granting the others, so each
/// saw the other two reported expired and fenced them; when a fenced member left the quorum
/// base, a node alone in its base was its own quorum: two nodes served every shard at once.
/// Fenced members now keep counting toward quorums.
#[test]
fn a_total_partition_heals_without_two_owners() {
    for seed in [1, 3, 5, 9] {
        scenario(
            "total partition",
            3,
            seed,
            script(vec![
                boot(3, 3),
                vec![
                    Step::Partition(vec![vec![A], vec![B], vec![C]]),
                    Step::Mark("partition a|b|c"),
                    wait("nobody serves", Cond::NotServing(all(3)), 1000),
                    Step::Run(2000),
                    Step::Heal,
                    Step::Mark("heal"),
                    wait("every node serves again", healthy(all(3)), 5000),
                    Step::Run(1000),
                ],
            ]),
        );
    }
}

/// A 2 | 2 tie, a heal, then the other 2 | 2 tie: the rejoined nodes still refused the old
/// winners, each side fenced the other and shrank its quorum base until a node was alone in
/// it, and both sides served.
#[test]
fn a_second_tie_after_a_heal_still_has_one_winner() {
    scenario(
        "tie twice",
        4,
        4,
        script(vec![
            boot(4, 2),
            vec![
                Step::Partition(vec![vec![A, B], vec![C, D]]),
                Step::Run(3000),
                Step::Heal,
                Step::Mark("heal"),
                wait("all four serve again", healthy(all(4)), 5000),
                Step::Run(1000),
                Step::Partition(vec![vec![B, C], vec![A, D]]),
                Step::Mark("partition bc|ad"),
                wait("b and c stop serving", Cond::NotServing(vec![B, C]), 1000),
                wait("a and d serve every id", Cond::Answerable(vec![A, D]), 2000),
                Step::During {
                    ms: 2000,
                    always: Cond::NoneServesOutside(vec![A, D]),
                },
                Step::Heal,
                Step::Mark("heal again"),
                wait("all four serve again", healthy(all(4)), 5000),
            ],
        ]),
    );
}

/// c is isolated until a and b fence it; b is then restarted and c healed. The new process of
/// b did not remember that b had promised never to grant c again, granted it, and c served
/// the shards a had taken over.
#[test]
fn a_restarted_grantor_does_not_revive_a_fenced_node() {
    scenario(
        "restart grantor",
        3,
        12,
        script(vec![
            boot(3, 3),
            vec![
                Step::Partition(vec![vec![A, B], vec![C]]),
                Step::Mark("isolate c"),
                wait(
                    "a and b serve c's shards",
                    Cond::Answerable(vec![A, B]),
                    2000,
                ),
                Step::Run(300),
                Step::Kill(B),
                Step::Start(B),
                Step::Run(100),
                Step::Heal,
                Step::Mark("heal"),
                wait("every node serves again", healthy(all(3)), 6000),
                Step::Run(1000),
            ],
        ]),
    );
}

/// a and c cannot reach each other and both serve through b's grants; then b leaves. The leave
/// shrank a's quorum base at once, which made c fenced on a's report alone while c still held
/// a lease that b had granted just before it left.
#[test]
fn a_graceful_leave_during_a_cut_never_double_serves() {
    for seed in 1..=2 {
        scenario(
            "leave during a cut",
            3,
            seed,
            script(vec![
                boot(3, 3),
                vec![
                    Step::Cut(A, C),
                    Step::Run(2000),
                    Step::Leave(B),
                    Step::Mark("b leaves"),
                    Step::Run(2500),
                    Step::Heal,
                    Step::Mark("heal"),
                    wait("a and c serve", healthy(vec![A, C]), 5000),
                ],
            ]),
        );
    }
}

/// c dies and is fenced, then b restarts. The new process of b grants nothing before it has
/// heard from every live member; it must not wait for c (a reports it fenced), or a, which
/// needs b's grants, would lose its lease for good.
#[test]
fn a_restart_after_a_fenced_death_serves_again() {
    scenario(
        "restart after a death",
        3,
        5,
        script(vec![
            boot(3, 3),
            vec![
                Step::Kill(C),
                Step::Mark("kill c"),
                wait(
                    "c's ids answer again",
                    Cond::All(vec![Cond::AllServed, Cond::Answerable(vec![A, B])]),
                    2000,
                ),
                Step::Kill(B),
                Step::Start(B),
                Step::Mark("restart b"),
                wait("a and the new b serve", healthy(vec![A, B]), 3000),
                Step::Run(1000),
            ],
        ]),
    );
}

/// Two nodes restart while everything is isolated; each new process stops granting the other
/// for good. The one that was not admitted yet but held a lease never re-incarnated (only a
/// lost lease triggered that), so it waited forever for an acknowledgement that its refuser
/// never sends.
#[test]
fn nodes_restarted_during_a_total_partition_all_serve_again() {
    scenario(
        "restarts while isolated",
        3,
        7,
        script(vec![
            boot(3, 2),
            vec![
                Step::Partition(vec![vec![A], vec![B], vec![C]]),
                Step::Kill(A),
                Step::Start(A),
                Step::Kill(B),
                Step::Start(B),
                Step::Run(2000),
                Step::Heal,
                Step::Mark("heal"),
                wait("every node serves again", healthy(all(3)), 6000),
                Step::Run(1000),
            ],
        ]),
    );
}

/// The pattern of chaos seeds 83, 207 and 243, scripted. While c and d are cut off, e leaves
/// and a and b serve on their own (a tie of the base `{a, b, c, d}` that a wins). Then e comes
/// back, cut off from a and b but not from d, and refuses a and b, which it never heard from.
/// Counted in the base with e, those refusals fenced a and b at the heal while their leases,
/// counted without e, still held: e and a then served the same shards. A member that comes
/// back is a learner now, not counted in quorums until it is acknowledged, and once
/// acknowledged counted both ways until it is admitted.
#[test]
fn a_node_id_rejoining_during_a_partition_does_not_fence_the_smaller_base() {
    for seed in 1..=3 {
        scenario(
            "rejoin during a partition",
            5,
            seed,
            script(vec![
                boot(5, 2),
                vec![
                    Step::Partition(vec![vec![C], vec![A, B, E], vec![D]]),
                    Step::Run(600),
                    Step::Leave(E),
                    Step::Mark("e leaves"),
                    wait(
                        "a and b serve every id",
                        Cond::All(vec![Cond::AllServed, Cond::Answerable(vec![A, B])]),
                        3000,
                    ),
                    Step::Partition(vec![vec![D, E], vec![C], vec![A, B]]),
                    Step::Start(E),
                    Step::Run(1500),
                    Step::Heal,
                    Step::Mark("heal"),
                    wait("every node serves again", healthy(all(5)), 10_000),
                    Step::Run(1000),
                ],
            ]),
        );
    }
}

// ----- random faults -----

/// A random but reproducible script of faults for `n` nodes over about `ms` milliseconds,
/// ending with every fault repaired.
fn chaos(seed: u64, n: usize, ms: u64, leaves: bool) -> Vec<Step> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Up,
        Paused,
        Down,
    }
    let mut rng = Rng::new(seed ^ 0xC4A0_5EED);
    let mut state = vec![State::Up; n];
    let mut steps = boot(n, 2);
    let mut elapsed = 0;
    while elapsed < ms {
        let up: Vec<usize> = (0..n).filter(|&i| state[i] == State::Up).collect();
        let node = |rng: &mut Rng, among: &[usize]| among[rng.below(among.len() as u64) as usize];
        match rng.below(10) {
            0 | 1 if up.len() > 2 => {
                let i = node(&mut rng, &up);
                state[i] = State::Paused;
                steps.push(Step::Pause(i));
            }
            2 if up.len() > 2 => {
                let i = node(&mut rng, &up);
                state[i] = State::Down;
                steps.push(Step::Kill(i));
            }
            3 if leaves && up.len() > 2 => {
                let i = node(&mut rng, &up);
                state[i] = State::Down;
                steps.push(Step::Leave(i));
            }
            4 | 5 => {
                let mut groups = vec![Vec::new(), Vec::new(), Vec::new()];
                for i in 0..n {
                    let sides = if rng.below(3) == 0 { 3 } else { 2 };
                    groups[rng.below(sides) as usize].push(i);
                }
                steps.push(Step::Partition(groups));
            }
            6 => {
                let (x, y) = (rng.below(n as u64) as usize, rng.below(n as u64) as usize);
                if x != y {
                    steps.push(Step::CutOneWay(x, y));
                }
            }
            7 => steps.push(Step::Heal),
            _ => {
                let sleeping: Vec<usize> = (0..n).filter(|&i| state[i] != State::Up).collect();
                if !sleeping.is_empty() {
                    let i = node(&mut rng, &sleeping);
                    steps.push(if state[i] == State::Paused {
                        Step::Resume(i)
                    } else {
                        Step::Start(i)
                    });
                    state[i] = State::Up;
                }
            }
        }
        let pause = 100 + rng.below(1900);
        steps.push(Step::Run(pause));
        elapsed += pause;
    }
    steps.push(Step::Heal);
    for (i, s) in state.iter().enumerate() {
        match s {
            State::Up => {}
            State::Paused => steps.push(Step::Resume(i)),
            State::Down => steps.push(Step::Start(i)),
        }
    }
    steps.push(Step::Mark("repaired"));
    steps.push(wait("every node serves again", healthy(all(n)), 10_000));
    steps
}

/// Random faults (pauses, kills, restarts, partitions, one-way cuts) on 3 to 5 nodes for up
/// to 20 s of virtual time, each ending with everything repaired and the cluster healthy
/// again. These seeds once broke invariant 1: 43 (a fencing that rested on a restarted node's
/// report outlived it, and a re-incarnation of the fencer served the fenced node's shards
/// without its acknowledgement), 157 (a new process that knew only its seed fenced it in
/// that base of two) and 684 (a new process that learned of a restarted one from the process
/// itself did not count it, and fenced a member in the base of two that remained).
#[test]
fn chaos_regressions() {
    for seed in [43, 157, 684] {
        let n = 3 + (seed % 3) as usize;
        scenario("chaos", n, seed, chaos(seed, n, 20_000, false));
    }
}

/// As `chaos_regressions`, with graceful leaves (and rejoins of the same node ids): 1 (a new
/// node granted a member that the others had fenced while the base was smaller, and the two
/// made a quorum of the larger one), 59 (a node left while a fenced member's lease still
/// rested on its grant), 185 (a reporter left, after which the fenced member's other grantors
/// were a quorum of the smaller base), 83, 207 and 243 (a node id rejoined during a partition
/// and its refusals, counted in the base with it, fenced leases of the base without it: see
/// `a_node_id_rejoining_during_a_partition_does_not_fence_the_smaller_base`), 771 (a node that
/// had lost its lease saw the last other member leave and served alone, while a node id that
/// had left and come back meanwhile had fenced it and served in the base with it) and 1315 (a
/// node that won the tie of a base of two resumed from a pause with a round of its own and
/// kept the activations it held across the pause). A script stops at `ms`: a shorter one is a
/// prefix of the longer.
#[test]
fn chaos_regressions_with_leaves() {
    for (seed, ms) in [
        (1, 11_000),
        (59, 20_000),
        (185, 20_000),
        (83, 20_000),
        (207, 20_000),
        (243, 20_000),
        (771, 20_000),
        (1315, 20_000),
    ] {
        let n = 3 + (seed % 3) as usize;
        scenario("chaos with leaves", n, seed, chaos(seed, n, ms, true));
    }
}

/// Explores seeds: `MESH_SIM_CHAOS=0..300 cargo test -p mesh-core --test fencing_sim explore
/// -- --ignored`; `MESH_SIM_LEAVES=1` adds graceful leaves (and rejoins) to odd seeds,
/// `MESH_SIM_KEEP_GOING=1` runs every seed and lists the failing ones at the end.
#[test]
#[ignore = "exploration: run on demand with MESH_SIM_CHAOS"]
fn explore_chaos() {
    let spec = std::env::var("MESH_SIM_CHAOS").unwrap_or_else(|_| "20".into());
    let (from, to) = match spec.split_once("..") {
        Some((from, to)) => (from.parse().unwrap_or(0), to.parse().unwrap_or(0)),
        None => (0, spec.parse().unwrap_or(0)),
    };
    let leaves = std::env::var_os("MESH_SIM_LEAVES").is_some();
    let keep_going = std::env::var_os("MESH_SIM_KEEP_GOING").is_some();
    let mut failed = Vec::new();
    for seed in from..to {
        let n = 3 + (seed % 3) as usize;
        let name: &'static str = Box::leak(format!("chaos seed {seed}").into_boxed_str());
        let steps = chaos(seed, n, 20_000, leaves && seed % 2 == 1);
        if keep_going {
            if let Err(panic) = std::panic::catch_unwind(|| scenario(name, n, seed, steps)) {
                let text = panic.downcast_ref::<String>().map_or("", |s| s.as_str());
                failed.push(text.lines().next().unwrap_or_default().to_owned());
            }
        } else {
            scenario(name, n, seed, steps);
        }
    }
    assert!(
        failed.is_empty(),
        "{} seeds failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}
