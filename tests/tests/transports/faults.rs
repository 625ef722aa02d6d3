//! Fenced ownership through the real runtime, on the in-process transport whose links the test
//! cuts and heals: partitions, an owner fenced while a call is in flight, and a join and a leave
//! under load whose handoffs lose no count. (The protocol itself is driven through many more
//! schedules in mesh-core's simulator; real processes, signals and partitions between network
//! namespaces are in `faults.rs` and `partition.rs`.)

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use mesh_actix::{Mesh, MeshError, Reply};
use serde_json::json;

use crate::cluster::*;

/// Every reply's pid per id, checking that once a new pid answered, an old one never does.
#[derive(Default)]
struct Pids {
    current: BTreeMap<String, String>,
    retired: BTreeMap<String, Vec<String>>,
}

impl Pids {
    fn saw(&mut self, id: &str, reply: &Reply) {
        let retired = self.retired.entry(id.to_owned()).or_default();
        assert!(
            !retired.contains(&reply.pid),
            "{id} answered by the superseded activation {} ({reply:?})",
            reply.pid
        );
        match self.current.insert(id.to_owned(), reply.pid.clone()) {
            Some(old) if old != reply.pid => retired.push(old),
            _ => {}
        }
    }
}

/// Every acknowledged count per Counter id, checking that a planned move loses none: where no
/// call failed, each reply is exactly one more than the last one acknowledged.
#[derive(Default)]
struct Counts(BTreeMap<String, u64>);

impl Counts {
    fn saw(&mut self, id: &str, reply: &Reply) {
        let count = reply.result["ok"].as_u64().expect("a count");
        let last = self.0.insert(id.to_owned(), count).unwrap_or(0);
        assert_eq!(
            count,
            last + 1,
            "{id} answered {count} after {last} had been acknowledged ({reply:?})"
        );
    }
}

fn ids_of(cluster: &Cluster, owner: usize, prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|k| {
            find_id(&format!("{prefix}-{k}"), |id| {
                cluster.owner_of(id, "counter") == owner
            })
        })
        .collect()
}

/// How long a call may wait while a partition or a fencing plays out: short, so that the
/// refusals of a minority show as such.
const FAULT_CALL: Duration = Duration::from_secs(1);

/// How long a call may wait during a planned change: a join's admission and its handoffs take
/// about 0.3 s, much more on an overloaded machine, and every call must succeed.
const MOVE_CALL: Duration = Duration::from_secs(10);

async fn call_all(mesh: &Mesh, ids: &[String], pids: &mut Pids) -> Vec<Result<Reply, MeshError>> {
    call_all_within(mesh, ids, pids, FAULT_CALL).await
}

async fn call_all_within(
    mesh: &Mesh,
    ids: &[String],
    pids: &mut Pids,
    timeout: Duration,
) -> Vec<Result<Reply, MeshError>> {
    let calls = ids
        .iter()
        .map(|id| mesh.call(counter(id).with_timeout(timeout)));
    let results = join_all(calls).await;
    for (id, result) in ids.iter().zip(&results) {
        if let Ok(reply) = result {
            pids.saw(id, reply);
        }
    }
    results
}

#[actix_rt::test]
async fn a_partitioned_minority_refuses_and_the_majority_takes_its_ids() {
    let cluster = Cluster::start(Transport::InProcess, 3).await;
    let ids = cluster.ids();
    let minority_ids = ids_of(&cluster, 0, "minority", 6);
    let majority_ids = ids_of(&cluster, 1, "majority", 6);
    let mut pids = Pids::default();
    for _ in 0..3 {
        for result in call_all(cluster.node(0), &minority_ids, &mut pids).await {
            result.expect("a settled cluster serves");
        }
    }
    for result in call_all(cluster.node(1), &majority_ids, &mut pids).await {
        result.expect("a settled cluster serves");
    }

    cluster
        .network()
        .partition(&[&[&ids[0]], &[&ids[1], &ids[2]]]);

    // The minority loses its lease, refuses, and drops every activation.
    eventually("node-0 to refuse its own ids", || {
        cluster.node(0).readiness().is_err()
    })
    .await;
    let refused = cluster.node(0).call(counter(&minority_ids[0])).await;
    assert!(
        matches!(refused, Err(MeshError::OwnerUnavailable(_))),
        "{refused:?}"
    );
    eventually("node-0 to drop its activations", || {
        cluster.node(0).activations() == 0
    })
    .await;

    // The majority fences it and serves its ids, under new activations.
    let started = Instant::now();
    loop {
        let results = call_all(cluster.node(1), &minority_ids, &mut pids).await;
        if results
            .iter()
            .all(|r| r.as_ref().is_ok_and(|r| r.node != ids[0]))
        {
            break;
        }
        assert!(
            started.elapsed() < EVENTUALLY,
            "the majority never took node-0's ids: {results:?}"
        );
    }
    // And it kept serving its own, with their state.
    for result in call_all(cluster.node(2), &majority_ids, &mut pids).await {
        assert_eq!(
            result.expect("the majority serves").result,
            json!({"ok": 2})
        );
    }

    // Healed, node-0 rejoins as a new incarnation and serves again; nothing old answers.
    cluster.network().heal();
    eventually("node-0 to be ready again", || {
        cluster.node(0).readiness().is_ok()
    })
    .await;
    let started = Instant::now();
    loop {
        let results = call_all(cluster.node(0), &minority_ids, &mut pids).await;
        if results
            .iter()
            .all(|r| r.as_ref().is_ok_and(|r| r.node == ids[0]))
        {
            break;
        }
        assert!(
            started.elapsed() < EVENTUALLY,
            "node-0 never served again: {results:?}"
        );
    }
    for result in call_all(cluster.node(0), &majority_ids, &mut pids).await {
        assert_eq!(result.expect("served").result, json!({"ok": 3}));
    }
}

#[actix_rt::test]
async fn a_call_in_flight_to_an_owner_that_gets_fenced_ends_at_once_as_a_timeout() {
    let cluster = Cluster::start(Transport::InProcess, 3).await;
    let ids = cluster.ids();
    let id = &ids_of(&cluster, 0, "inflight", 1)[0];
    ok(cluster.node(1), counter(id)).await;

    cluster
        .network()
        .partition(&[&[&ids[0]], &[&ids[1], &ids[2]]]);
    let timeout = Duration::from_secs(15);
    let started = Instant::now();
    let e = err(cluster.node(1), counter(id).with_timeout(timeout)).await;
    let elapsed = started.elapsed();

    // The hop hangs (the network drops it) until node-0 is fenced: then the call may have run
    // there, so it is not sent again, and it is reported as a timeout, long before its own.
    assert!(matches!(e, MeshError::Timeout(_)), "{e:?}");
    assert!(e.to_string().contains("declared dead"), "{e}");
    assert!(elapsed < timeout / 2, "ended after {elapsed:?}");
    // The next call is served by the new owner.
    let reply = ok(cluster.node(1), counter(id)).await;
    assert_ne!(reply.node, ids[0]);
}

/// Calls every id through `mesh` round after round until `done`, failing on any error and on
/// any count that does not continue from the last one acknowledged.
async fn load_until(
    mesh: &Mesh,
    ids: &[String],
    pids: &mut Pids,
    counts: &mut Counts,
    done: impl Fn() -> bool,
) -> usize {
    let mut rounds = 0;
    while !done() || rounds < 5 {
        for (id, result) in ids
            .iter()
            .zip(call_all_within(mesh, ids, pids, MOVE_CALL).await)
        {
            let reply = result.unwrap_or_else(|e| panic!("{id} failed during the change: {e:?}"));
            counts.saw(id, &reply);
        }
        rounds += 1;
    }
    rounds
}

#[actix_rt::test]
async fn a_leave_under_load_moves_the_leavers_ids_without_a_failed_call_or_a_lost_count() {
    let cluster = Cluster::start(Transport::InProcess, 3).await;
    let ids = cluster.ids();
    let leaver_ids = ids_of(&cluster, 2, "leaver", 8);
    let other_ids = ids_of(&cluster, 1, "stayer", 8);
    let all: Vec<String> = leaver_ids.iter().chain(&other_ids).cloned().collect();
    let (mut pids, mut counts) = (Pids::default(), Counts::default());

    let leaver = cluster.node(2).clone();
    let drain = actix_rt::spawn(async move { leaver.drain(Duration::from_secs(5)).await });
    load_until(cluster.node(0), &all, &mut pids, &mut counts, || {
        drain.is_finished()
    })
    .await;
    drain.await.expect("drain");
    for result in call_all(cluster.node(1), &leaver_ids, &mut pids).await {
        let reply = result.expect("served");
        assert_ne!(reply.node, ids[2]);
    }
    assert_eq!(cluster.node(2).activations(), 0);
    let handed = cluster.node(2).activation_stats();
    assert_eq!((handed.handoffs_sent, handed.handoffs_failed), (8, 0));
}

#[actix_rt::test]
async fn a_join_under_load_moves_ids_to_the_new_node_without_a_failed_call_or_a_lost_count() {
    let mut cluster = Cluster::start(Transport::InProcess, 2).await;
    let all: Vec<String> = (0..40).map(|n| format!("joining-{n}")).collect();
    let (mut pids, mut counts) = (Pids::default(), Counts::default());
    load_until(cluster.node(0), &all, &mut pids, &mut counts, || true).await;

    let entry = cluster.node(0).clone();
    let (stop, stopped) = (
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
        std::sync::atomic::Ordering::Relaxed,
    );
    let load = {
        let (all, stop) = (all.clone(), stop.clone());
        actix_rt::spawn(async move {
            load_until(&entry, &all, &mut pids, &mut counts, || stop.load(stopped)).await;
            (pids, counts)
        })
    };
    let joined = cluster.add_node(&EXAMPLE_CAPABILITIES).await;
    cluster.sync_views().await;
    let moved: Vec<&String> = all
        .iter()
        .filter(|id| cluster.owner_of(id, "counter") == joined)
        .collect();
    assert!(!moved.is_empty(), "the new node owns some of the ids");
    eventually("the new node serves the ids it took over", || {
        cluster.node(joined).activations() == moved.len()
    })
    .await;
    stop.store(true, stopped);
    let (mut pids, mut counts) = load.await.expect("the load ran without a failure");

    for (id, result) in all
        .iter()
        .zip(call_all(cluster.node(1), &all, &mut pids).await)
    {
        counts.saw(id, &result.expect("served"));
    }
    let sent: u64 = (0..2)
        .map(|i| cluster.node(i).activation_stats().handoffs_sent)
        .sum();
    assert_eq!(sent, moved.len() as u64, "one handoff per moved id");
    cluster.shutdown().await;
}
