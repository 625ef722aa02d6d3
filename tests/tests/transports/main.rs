//! Multi-node scenarios, written once and run over both transports: in memory
//! (`mesh_actix::InProcessTransport`) and over real HTTP (`mesh_http::HttpTransport` between
//! actix-web servers on 127.0.0.1). Each scenario is an `async fn(Transport)`;
//! `for_both_transports!` turns it into `in_process::<scenario>` and `http::<scenario>` tests.
//!
//! Every node registers the example actors of `mesh-examples`; the membership layer is played by
//! the test (`Cluster::sync_views`, `MembershipFeed::update_members`).

mod cluster;
mod faults;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cluster::*;
use futures_util::future::join_all;
use mesh_actix::provider::{HopError, Hops, MembershipFeed};
use mesh_actix::store::{StateKey, StateStore};
use mesh_actix::{ActorId, Capability, MemberStatus, MeshError, Module, Request};
use serde_json::json;

/// Instantiates each scenario once per transport.
macro_rules! for_both_transports {
    ($($scenario:ident),+ $(,)?) => {
        mod in_process {
            $(
                #[actix_rt::test]
                async fn $scenario() {
                    super::$scenario(super::Transport::InProcess).await;
                }
            )+
        }
        mod http {
            $(
                #[actix_rt::test]
                async fn $scenario() {
                    super::$scenario(super::Transport::Http).await;
                }
            )+
        }
    };
}

for_both_transports!(
    every_node_computes_the_same_owners_spread_over_the_nodes,
    a_call_on_any_node_reaches_the_owner_and_its_one_activation,
    concurrent_calls_through_every_node_reach_one_activation,
    a_cast_through_a_non_owner_reaches_the_owner,
    unknown_module_crosses_the_hop,
    init_failed_crosses_the_hop,
    actor_crashed_crosses_the_hop,
    timeout_crosses_the_hop,
    a_forwarded_request_for_an_actor_the_receiver_does_not_own_is_refused,
    a_forwarded_request_is_never_forwarded_again_when_views_disagree,
    a_capability_registered_by_one_node_lands_on_that_node,
    a_capability_nobody_registered_has_no_capable_node,
    a_joining_node_takes_its_shards_and_the_old_owners_stop_them,
    a_leaving_node_hands_every_identity_over_with_its_state,
    accounts_keep_their_balance_across_a_join_and_a_leave_with_node_local_stores,
    accounts_keep_their_balance_across_a_join_and_a_leave_with_a_shared_store,
    a_capability_added_to_a_node_moves_identities_to_it_with_their_state,
    an_unreachable_owner_is_refused_then_fenced_and_its_ids_fail_over,
);

// --- Placement ----------------------------------------------------------------------------------

async fn every_node_computes_the_same_owners_spread_over_the_nodes(transport: Transport) {
    let cluster = Cluster::start(transport, 3).await;

    let mut owned = vec![0; cluster.len()];
    for n in 0..200 {
        let id = format!("owner-{n}");
        // `owner_of` asserts that every node computes the same owner.
        owned[cluster.owner_of(&id, "counter")] += 1;
        cluster.owner_of(&id, "game");
    }

    assert_eq!(owned.iter().sum::<usize>(), 200);
    assert!(
        owned.iter().all(|&n| n >= 30),
        "200 ids should spread over 3 nodes, got {owned:?}"
    );
    cluster.shutdown().await;
}

// --- Forwarding ---------------------------------------------------------------------------------

async fn a_call_on_any_node_reaches_the_owner_and_its_one_activation(transport: Transport) {
    let cluster = Cluster::start(transport, 3).await;
    let ids = cluster.ids();

    // One id owned by each node, called through each node in turn.
    for owner in 0..cluster.len() {
        let id = find_id(&format!("reach-{owner}"), |id| {
            cluster.owner_of(id, "counter") == owner
        });
        let mut pids = BTreeSet::new();
        for (n, entry) in (0..cluster.len()).enumerate() {
            let reply = ok(cluster.node(entry), counter(&id)).await;
            assert_eq!(reply.node, ids[owner], "{id} through {}", ids[entry]);
            assert_eq!(
                reply.result,
                json!({"ok": n + 1}),
                "{id} through {}",
                ids[entry]
            );
            pids.insert(reply.pid);
        }
        assert_eq!(pids.len(), 1, "one activation of {id}: {pids:?}");
    }
    assert_eq!(cluster.activations(), vec![1, 1, 1]);

    // And any id, through any node, lands on the owner every node computes.
    for n in 0..30 {
        let id = format!("anywhere-{n}");
        let owner = cluster.owner_of(&id, "counter");
        let reply = ok(cluster.node(n % cluster.len()), counter(&id)).await;
        assert_eq!(reply.node, ids[owner], "{id} through {}", ids[n % 3]);
        assert_eq!(reply.result, json!({"ok": 1}));
    }
    assert_eq!(cluster.activations().iter().sum::<usize>(), 33);
    cluster.shutdown().await;
}

async fn concurrent_calls_through_every_node_reach_one_activation(transport: Transport) {
    let cluster = Cluster::start(transport, 3).await;
    let id = "concurrent-1";
    let owner = cluster.owner_of(id, "counter");

    let calls = (0..30).map(|n| cluster.node(n % 3).call(counter(id)));
    let replies: Vec<_> = join_all(calls)
        .await
        .into_iter()
        .map(|r| r.expect("every call succeeds"))
        .collect();

    let counts: BTreeSet<u64> = replies
        .iter()
        .map(|r| r.result["ok"].as_u64().expect("a count"))
        .collect();
    assert_eq!(counts, (1..=30).collect(), "each call counted exactly once");
    let pids: BTreeSet<&str> = replies.iter().map(|r| r.pid.as_str()).collect();
    assert_eq!(pids.len(), 1, "one activation: {pids:?}");
    assert!(replies.iter().all(|r| r.node == cluster.ids()[owner]));
    assert_eq!(cluster.activations().iter().sum::<usize>(), 1);
    assert_eq!(cluster.node(owner).activations(), 1);
    cluster.shutdown().await;
}

async fn a_cast_through_a_non_owner_reaches_the_owner(transport: Transport) {
    let cluster = Cluster::start(transport, 3).await;
    let ids = cluster.ids();

    // A cast as the first request for an identity activates it on its owner, with init_arg.
    let id = find_id("cast-game", |id| cluster.owner_of(id, "game") == 1);
    for _ in 0..3 {
        cluster
            .node(0)
            .cast(
                game(&id, json!({"action": "increment"}))
                    .with_init_arg(json!({"starting_level": 7})),
            )
            .await
            .expect("cast accepted");
    }
    let expected = json!({"ok": {"id": id, "level": 7, "score": 3}});
    let applied = mesh_tests::eventually("the casts are applied", EVENTUALLY, || {
        let call = cluster
            .node(2)
            .call(game(&id, json!({"action": "get_state"})));
        let expected = expected.clone();
        async move {
            let reply = call.await.expect("get_state");
            (reply.result == expected).then_some(reply)
        }
    })
    .await;
    assert_eq!(applied.node, ids[1]);
    assert_eq!(cluster.activations(), vec![0, 1, 0]);

    // A cast is enqueued on the owner before it is accepted: a later call, through yet
    // another node, is behind it.
    let id = find_id("cast-counter", |id| cluster.owner_of(id, "counter") == 2);
    for n in 1..=3 {
        let reply = ok(cluster.node(2), counter(&id)).await;
        assert_eq!(reply.result, json!({"ok": n}));
    }
    cluster
        .node(0)
        .cast(counter(&id).with_payload(json!({"action": "reset"})))
        .await
        .expect("cast accepted");
    let reply = ok(cluster.node(1), counter(&id)).await;
    assert_eq!(reply.result, json!({"ok": 1}), "the reset cast came first");
    assert_eq!(reply.node, ids[2]);
    cluster.shutdown().await;
}

// --- Errors cross the hop with their code -------------------------------------------------------

/// An id for `capability` owned by node 1, so that node 0 forwards it.
fn remote_id(cluster: &Cluster, prefix: &str, capability: &str) -> String {
    find_id(prefix, |id| cluster.owner_of(id, capability) == 1)
}

async fn unknown_module_crosses_the_hop(transport: Transport) {
    let cluster = Cluster::start(transport, 2).await;
    let id = remote_id(&cluster, "unknown", "counter");

    let e = err(
        cluster.node(0),
        req("NoSuchModule", &id, "counter", json!({})),
    )
    .await;

    assert!(matches!(e, MeshError::UnknownModule(_)), "{e:?}");
    assert_eq!(e.code().as_str(), "unknown_module");
    assert!(e.to_string().contains("NoSuchModule"), "{e}");
    assert_eq!(cluster.activations(), vec![0, 0]);
    assert_eq!(calls_served(cluster.node(1), "unknown_module"), 1);
    cluster.shutdown().await;
}

async fn init_failed_crosses_the_hop(transport: Transport) {
    let cluster = Cluster::start(transport, 2).await;
    let id = remote_id(&cluster, "init", "game");
    let get_state = || game(&id, json!({"action": "get_state"}));

    let e = err(
        cluster.node(0),
        get_state().with_init_arg(json!({"starting_level": -1})),
    )
    .await;

    assert!(matches!(e, MeshError::InitFailed(_)), "{e:?}");
    assert_eq!(e.code().as_str(), "init_failed");
    assert_eq!(cluster.activations(), vec![0, 0], "nothing was activated");

    // The failed init left nothing behind: a valid init_arg is the first activation.
    let reply = ok(
        cluster.node(0),
        get_state().with_init_arg(json!({"starting_level": 4})),
    )
    .await;
    assert_eq!(
        reply.result,
        json!({"ok": {"id": id, "level": 4, "score": 0}})
    );
    assert_eq!(reply.node, cluster.ids()[1]);
    cluster.shutdown().await;
}

async fn actor_crashed_crosses_the_hop(transport: Transport) {
    let cluster = Cluster::start(transport, 2).await;
    let id = remote_id(&cluster, "crash", "crasher");
    let before = ok(cluster.node(0), crasher(&id, json!({}))).await;
    assert_eq!(before.result, json!({"ok": 1}));

    let e = err(cluster.node(0), crasher(&id, json!({"action": "crash"}))).await;

    assert!(matches!(e, MeshError::ActorCrashed(_)), "{e:?}");
    assert_eq!(e.code().as_str(), "actor_crashed");
    let after = ok(cluster.node(0), crasher(&id, json!({}))).await;
    assert_eq!(
        after.result,
        json!({"ok": 1}),
        "fresh state after the crash"
    );
    assert_ne!(after.pid, before.pid, "a new pid after the crash");
    assert_eq!(after.node, cluster.ids()[1]);
    assert_eq!(cluster.node(1).activation_stats().restarts, 1);
    assert_eq!(cluster.activations(), vec![0, 1]);
    cluster.shutdown().await;
}

async fn timeout_crosses_the_hop(transport: Transport) {
    let cluster = Cluster::start(transport, 2).await;
    let id = remote_id(&cluster, "sleepy", "sleeper");
    let timeout = Duration::from_millis(300);

    let started = Instant::now();
    let e = err(cluster.node(0), sleeper(&id, 10_000).with_timeout(timeout)).await;
    let elapsed = started.elapsed();

    assert!(matches!(e, MeshError::Timeout(_)), "{e:?}");
    assert_eq!(e.code().as_str(), "timeout");
    assert!(
        elapsed < Duration::from_secs(5),
        "a 300 ms timeout took {elapsed:?} to fire"
    );

    // The owner keeps serving other actors meanwhile.
    let other = remote_id(&cluster, "awake", "sleeper");
    let reply = ok(cluster.node(0), sleeper(&other, 1)).await;
    assert_eq!(reply.result, json!({"ok": 1}));
    assert_eq!(reply.node, cluster.ids()[1]);
    cluster.shutdown().await;
}

// --- One hop at most ----------------------------------------------------------------------------

async fn a_forwarded_request_for_an_actor_the_receiver_does_not_own_is_refused(
    transport: Transport,
) {
    let cluster = Cluster::start(transport, 3).await;
    let id = remote_id(&cluster, "refused", "counter");

    let e = cluster
        .node(0)
        .forwarded_call(counter(&id))
        .await
        .map_err(HopError::into_error)
        .expect_err("node-0 does not own the actor");
    assert!(matches!(e, MeshError::OwnerUnavailable(_)), "{e:?}");
    assert_eq!(e.code().as_str(), "owner_unavailable");

    let e = cluster
        .node(0)
        .forwarded_cast(counter(&id))
        .await
        .map_err(HopError::into_error)
        .expect_err("node-0 does not own the actor");
    assert!(matches!(e, MeshError::OwnerUnavailable(_)), "{e:?}");

    // Not forwarded again: the owner saw nothing, and nothing was activated.
    assert_eq!(calls_total(cluster.node(1)), 0);
    assert_eq!(calls_total(cluster.node(2)), 0);
    assert_eq!(cluster.activations(), vec![0, 0, 0]);

    // The owner serves a forwarded request for it.
    let reply = cluster
        .node(1)
        .forwarded_call(counter(&id))
        .await
        .expect("the owner serves it");
    assert_eq!(reply.result, json!({"ok": 1}));
    cluster.shutdown().await;
}

/// node-0 still believes node-1 owns the id; node-1 knows node-2, which owns it now. node-1
/// refuses the forwarded call rather than forwarding it a second time, and the refusal crosses
/// back to the caller with its code.
async fn a_forwarded_request_is_never_forwarded_again_when_views_disagree(transport: Transport) {
    let cluster = Cluster::start(transport, 3).await;
    let ids = cluster.ids();
    // Node-1 alone knows a member that nobody can reach (gossip has not spread it yet), so for
    // some ids node-0 routes to node-1 and node-1 routes to the phantom.
    let phantom = cluster.unreachable_member("phantom", &["counter"]);
    cluster.node(1).update_members(vec![phantom.clone()]).await;
    let owner_on = |node: usize, id: &str| {
        let mesh = cluster.node(node);
        mesh.owner(mesh.shard_for(id), "counter").expect("an owner")
    };
    let id = find_id("disagree", |id| {
        owner_on(0, id) == ids[1] && owner_on(1, id) == phantom.node
    });

    // Refused by node-1 (not the owner in its view) on every try within the deadline: one
    // shorter than the phantom's fencing (lease + margin after node-1 learned it), with room
    // for a hop on a loaded machine.
    let short = counter(&id).with_timeout(Duration::from_millis(800));
    let e = err(cluster.node(0), short).await;

    assert!(matches!(e, MeshError::OwnerUnavailable(_)), "{e:?}");
    assert_eq!(e.code().as_str(), "owner_unavailable");
    assert!(
        calls_served(cluster.node(1), "owner_unavailable") >= 1,
        "node-1 refused the forwarded call"
    );
    assert_eq!(calls_served(cluster.node(1), "ok"), 0);
    assert_eq!(calls_total(cluster.node(2)), 0, "never forwarded twice");
    assert_eq!(cluster.activations(), vec![0, 0, 0]);

    // The phantom never renews a lease: it is fenced (the others learn of it from node-1's
    // lease replies and report it expired), views agree again, and the call reaches its owner
    // in one hop.
    eventually("the phantom to be fenced everywhere", || {
        (0..3).all(|n| {
            let routing = cluster.node(n).routing();
            let phantom = routing.members().iter().find(|m| m.node == phantom.node);
            phantom.is_some_and(|m| m.status == MemberStatus::Dead)
        })
    })
    .await;
    let reply = ok(cluster.node(0), counter(&id)).await;
    assert_eq!(reply.node, owner_on(0, &id));
    assert_eq!(reply.result, json!({"ok": 1}));
    cluster.shutdown().await;
}

// --- Capabilities -------------------------------------------------------------------------------

async fn a_capability_registered_by_one_node_lands_on_that_node(transport: Transport) {
    let mut solo = EXAMPLE_CAPABILITIES.to_vec();
    solo.push("solo");
    let cluster = Cluster::with_capabilities(
        transport,
        &[&EXAMPLE_CAPABILITIES, &EXAMPLE_CAPABILITIES, &solo],
    )
    .await;
    let ids = cluster.ids();

    for n in 0..5 {
        let id = format!("solo-{n}");
        let mut pids = BTreeSet::new();
        for entry in 0..3 {
            let reply = ok(cluster.node(entry), req("Counter", &id, "solo", json!({}))).await;
            assert_eq!(reply.node, ids[2], "{id} through {}", ids[entry]);
            assert_eq!(reply.result, json!({"ok": entry + 1}));
            pids.insert(reply.pid);
        }
        assert_eq!(pids.len(), 1);
    }
    assert_eq!(cluster.activations(), vec![0, 0, 5]);

    // A capability registered later is learnt with the next view.
    cluster
        .node(1)
        .register_capabilities(["late"])
        .await
        .expect("valid capability");
    cluster.sync_views().await;
    for entry in 0..3 {
        let reply = ok(
            cluster.node(entry),
            req("Counter", &format!("late-{entry}"), "late", json!({})),
        )
        .await;
        assert_eq!(reply.node, ids[1]);
    }
    cluster.shutdown().await;
}

async fn a_capability_nobody_registered_has_no_capable_node(transport: Transport) {
    let cluster = Cluster::start(transport, 3).await;

    for entry in 0..3 {
        let mesh = cluster.node(entry);
        let e = err(mesh, req("Counter", "nobody-1", "nobody", json!({}))).await;
        assert!(matches!(e, MeshError::NoCapableNode(_)), "{e:?}");
        assert_eq!(e.code().as_str(), "no_capable_node");
        let e = mesh
            .cast(req("Counter", "nobody-1", "nobody", json!({})))
            .await
            .expect_err("no capable node");
        assert_eq!(e.code().as_str(), "no_capable_node");
        let e = mesh
            .owner(mesh.shard_for("nobody-1"), "nobody")
            .expect_err("no owner");
        assert_eq!(e.code().as_str(), "no_capable_node");
    }
    assert_eq!(cluster.activations(), vec![0, 0, 0]);
    cluster.shutdown().await;
}

// --- Membership changes -------------------------------------------------------------------------

async fn a_joining_node_takes_its_shards_and_the_old_owners_stop_them(transport: Transport) {
    let mut cluster = Cluster::start(transport, 2).await;
    let ids: Vec<String> = (0..100).map(|n| format!("moving-{n}")).collect();
    let mut before = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        let owner = cluster.owner_of(id, "counter");
        let reply = ok(cluster.node(n % 2), counter(id)).await;
        assert_eq!(reply.result, json!({"ok": 1}));
        before.push((owner, reply.pid));
    }
    assert_eq!(cluster.activations().iter().sum::<usize>(), 100);

    let joined = cluster.add_node(&EXAMPLE_CAPABILITIES).await;
    cluster.sync_views().await;

    let after: Vec<usize> = ids
        .iter()
        .map(|id| cluster.owner_of(id, "counter"))
        .collect();
    let moved: Vec<usize> = (0..ids.len()).filter(|&i| after[i] == joined).collect();
    assert!(
        (10..=60).contains(&moved.len()),
        "the new node should take about a third of the ids, took {}",
        moved.len()
    );
    for (i, (owner, _)) in before.iter().enumerate() {
        assert!(
            after[i] == *owner || after[i] == joined,
            "{} moved between old nodes",
            ids[i]
        );
    }
    let still_owned = |node: usize| after.iter().filter(|&&o| o == node).count();
    let expected = vec![still_owned(0), still_owned(1), 0];
    eventually("the old owners stop the activations that moved", || {
        cluster.activations() == expected
    })
    .await;

    let names = cluster.ids();
    for (k, &i) in moved.iter().enumerate() {
        let reply = ok(cluster.node(k % 3), counter(&ids[i])).await;
        assert_eq!(reply.node, names[joined], "{}", ids[i]);
        assert_ne!(reply.pid, before[i].1, "{} has a new activation", ids[i]);
        assert_eq!(
            reply.result,
            json!({"ok": 2}),
            "{} continues from the count handed over",
            ids[i]
        );
    }
    let handoffs = |i: usize| cluster.node(i).activation_stats();
    assert_eq!(
        handoffs(0).handoffs_sent + handoffs(1).handoffs_sent,
        moved.len() as u64
    );
    assert_eq!(handoffs(joined).handoffs_received, moved.len() as u64);
    assert_eq!(
        handoffs(joined).handoffs_waiting,
        0,
        "every handoff was used"
    );
    for i in (0..ids.len()).filter(|i| !moved.contains(i)) {
        let reply = ok(cluster.node(i % 3), counter(&ids[i])).await;
        assert_eq!(reply.node, names[before[i].0], "{}", ids[i]);
        assert_eq!(reply.result, json!({"ok": 2}), "{} kept its state", ids[i]);
        assert_eq!(reply.pid, before[i].1, "{} kept its activation", ids[i]);
    }
    assert_eq!(
        cluster.activations(),
        vec![still_owned(0), still_owned(1), moved.len()]
    );
    cluster.shutdown().await;
}

async fn a_leaving_node_hands_every_identity_over_with_its_state(transport: Transport) {
    let cluster = Cluster::start(transport, 3).await;
    let names = cluster.ids();
    let counters: Vec<String> = (0..20)
        .map(|k| {
            find_id(&format!("leaving-{k}"), |id| {
                cluster.owner_of(id, "counter") == 2
            })
        })
        .collect();
    let players: Vec<String> = (0..5)
        .map(|k| {
            find_id(&format!("player-{k}"), |id| {
                cluster.owner_of(id, "game") == 2
            })
        })
        .collect();
    for (k, id) in counters.iter().enumerate() {
        for n in 1..=k + 1 {
            let reply = ok(cluster.node(0), counter(id)).await;
            assert_eq!(reply.result, json!({"ok": n}));
        }
    }
    for id in &players {
        let start =
            game(id, json!({"action": "increment"})).with_init_arg(json!({"starting_level": 7}));
        assert_eq!(ok(cluster.node(1), start).await.result, json!({"ok": 1}));
    }

    cluster.node(2).drain(Duration::from_secs(5)).await;
    assert_eq!(cluster.node(2).activations(), 0);
    assert_eq!(
        cluster.node(2).activation_stats().handoffs_sent,
        (counters.len() + players.len()) as u64
    );
    cluster.sync_views().await;

    for (k, id) in counters.iter().enumerate() {
        let reply = ok(cluster.node(k % 2), counter(id)).await;
        assert_ne!(reply.node, names[2], "{id} moved off the leaver");
        assert_eq!(reply.result, json!({"ok": k + 2}), "{id} kept its count");
    }
    for id in &players {
        let reply = ok(cluster.node(0), game(id, json!({"action": "get_state"}))).await;
        assert_eq!(
            reply.result,
            json!({"ok": {"id": id, "level": 7, "score": 1}}),
            "{id} kept its level and score"
        );
    }
    cluster.shutdown().await;
}

// --- Durable actors -----------------------------------------------------------------------------

async fn accounts_keep_their_balance_across_a_join_and_a_leave_with_node_local_stores(
    transport: Transport,
) {
    durable_moves(Cluster::start(transport, 2).await).await;
}

async fn accounts_keep_their_balance_across_a_join_and_a_leave_with_a_shared_store(
    transport: Transport,
) {
    durable_moves(Cluster::with_shared_store(transport, 2).await).await;
}

fn account_key(id: &str) -> StateKey {
    StateKey {
        capability: Capability::new("account").unwrap(),
        module: Module::new("Account").unwrap(),
        id: ActorId::new(id).unwrap(),
    }
}

/// A node that starts declaring a capability takes some of its shards over (rule 13's
/// capability change): the old owner hands each moved identity over, state included, for a
/// `snapshot` type (Counter) and a durable one (Account, node-local stores).
async fn a_capability_added_to_a_node_moves_identities_to_it_with_their_state(
    transport: Transport,
) {
    let others: Vec<&str> = EXAMPLE_CAPABILITIES
        .iter()
        .copied()
        .filter(|c| *c != "counter" && *c != "account")
        .collect();
    let cluster = Cluster::with_capabilities(transport, &[&EXAMPLE_CAPABILITIES, &others]).await;
    let ids: Vec<String> = (0..40).map(|k| format!("widened-{k}")).collect();
    for (k, id) in ids.iter().enumerate() {
        for _ in 0..=k {
            ok(cluster.node(1), counter(id)).await;
        }
        let deposit = json!({"action": "deposit", "amount": k + 1});
        ok(cluster.node(1), account(id, deposit)).await;
        assert_eq!(cluster.owner_of(id, "counter"), 0);
    }

    cluster
        .node(1)
        .register_capabilities(["counter", "account"])
        .await
        .unwrap();
    cluster.sync_views().await;
    let names = cluster.ids();
    let mut moved = 0;
    for (k, id) in ids.iter().enumerate() {
        let owner = cluster.owner_of(id, "counter");
        let reply = ok(cluster.node(k % 2), counter(id)).await;
        assert_eq!(reply.node, names[owner]);
        assert_eq!(reply.result, json!({"ok": k + 2}), "{id} kept its count");
        let balance = ok(
            cluster.node(k % 2),
            account(id, json!({"action": "balance"})),
        )
        .await;
        assert_eq!(balance.node, names[cluster.owner_of(id, "account")]);
        assert_eq!(
            balance.result,
            json!({"ok": k + 1}),
            "{id} kept its balance"
        );
        moved += usize::from(owner == 1);
    }
    assert!(
        moved > 0,
        "the node that added the capability took some ids"
    );
    cluster.shutdown().await;
}

/// The balance node `i`'s store holds for `id`, if any.
async fn stored_balance(cluster: &Cluster, i: usize, id: &str) -> Option<u64> {
    let stored = cluster.store(i).load(&account_key(id)).await.unwrap()?;
    let state: serde_json::Value = serde_json::from_slice(&stored.state).unwrap();
    state["balance"].as_u64()
}

/// Accounts on a 2-node cluster, a third node joins, then leaves gracefully: every balance
/// is served by its owner of the moment, continuing from the last one acknowledged, and the
/// store of the node that serves an account holds that balance.
async fn durable_moves(mut cluster: Cluster) {
    let shared = cluster.store(0).is_shared();
    let deposit = |n: u64| json!({"action": "deposit", "amount": n});
    let ids: Vec<String> = (0..40).map(|k| format!("account-{k}")).collect();
    for (k, id) in ids.iter().enumerate() {
        let reply = ok(cluster.node(k % 2), account(id, deposit(k as u64 + 1))).await;
        assert_eq!(reply.result, json!({"ok": k + 1}));
        let owner = cluster.owner_of(id, "account");
        assert_eq!(
            stored_balance(&cluster, owner, id).await,
            Some(k as u64 + 1)
        );
    }
    let before: Vec<usize> = ids
        .iter()
        .map(|id| cluster.owner_of(id, "account"))
        .collect();

    let joined = cluster.add_node(&EXAMPLE_CAPABILITIES).await;
    cluster.sync_views().await;
    let moved: Vec<usize> = (0..ids.len())
        .filter(|&k| cluster.owner_of(&ids[k], "account") == joined)
        .collect();
    assert!(!moved.is_empty(), "the new node takes some accounts");
    let names = cluster.ids();
    for (k, id) in ids.iter().enumerate() {
        let reply = ok(cluster.node(k % 3), account(id, deposit(100))).await;
        assert_eq!(
            reply.result,
            json!({"ok": k + 101}),
            "{id} kept its balance"
        );
        assert_eq!(reply.node, names[cluster.owner_of(id, "account")]);
    }
    if !shared {
        // The old owners dropped what they handed over: a copy left behind would be stale.
        for &k in &moved {
            assert_eq!(
                stored_balance(&cluster, joined, &ids[k]).await,
                Some(k as u64 + 101)
            );
            let old = before[k];
            let mut left = stored_balance(&cluster, old, &ids[k]).await;
            let started = Instant::now();
            while left.is_some() && started.elapsed() < EVENTUALLY {
                tokio::time::sleep(Duration::from_millis(10)).await;
                left = stored_balance(&cluster, old, &ids[k]).await;
            }
            assert_eq!(
                left, None,
                "{} left node {old}'s store once handed over",
                ids[k]
            );
        }
    }

    cluster.node(joined).drain(Duration::from_secs(5)).await;
    assert_eq!(cluster.node(joined).activations(), 0);
    cluster.sync_views().await;
    for (k, id) in ids.iter().enumerate() {
        let reply = ok(
            cluster.node(k % 2),
            account(id, json!({"action": "balance"})),
        )
        .await;
        assert_ne!(reply.node, names[joined], "{id} moved off the leaver");
        assert_eq!(
            reply.result,
            json!({"ok": k + 101}),
            "{id} kept its balance"
        );
        let owner = cluster.owner_of(id, "account");
        assert_eq!(
            stored_balance(&cluster, owner, id).await,
            Some(k as u64 + 101)
        );
    }
    cluster.shutdown().await;
}

// --- Unreachable owners -------------------------------------------------------------------------

/// Over HTTP the owner's address has nothing listening; in process it was never connected.
async fn an_unreachable_owner_is_refused_then_fenced_and_its_ids_fail_over(transport: Transport) {
    let cluster = Cluster::start(transport, 2).await;
    let ghost = cluster.unreachable_member("ghost", &["counter"]);
    cluster.node(0).update_members(vec![ghost.clone()]).await;
    let node0 = cluster.node(0);
    let id = find_id("haunted", |id| {
        node0
            .owner(node0.shard_for(id), "counter")
            .expect("an owner")
            == ghost.node
    });

    // While the ghost may still hold a lease, its ids are refused (not delivered anywhere),
    // within the caller's deadline.
    let timeout = Duration::from_millis(300);
    let request = || -> Request { counter(&id).with_timeout(timeout) };
    let started = Instant::now();
    let e = err(node0, request()).await;
    let elapsed = started.elapsed();
    assert!(matches!(e, MeshError::OwnerUnavailable(_)), "{e:?}");
    assert!(
        elapsed < Duration::from_secs(5),
        "refused after {elapsed:?}"
    );
    let e = node0.cast(request()).await.expect_err("unreachable owner");
    assert!(matches!(e, MeshError::OwnerUnavailable(_)), "{e:?}");
    assert_eq!(cluster.activations(), vec![0, 0]);

    // A caller with time to spare waits through the fencing and is served by the new owner.
    let reply = ok(node0, counter(&id).with_timeout(Duration::from_secs(10))).await;
    assert_ne!(reply.node, ghost.node);
    assert_eq!(reply.result, json!({"ok": 1}));

    // And node-0 still serves what it can reach.
    let reachable = find_id("reachable", |id| {
        node0
            .owner(node0.shard_for(id), "counter")
            .expect("an owner")
            == cluster.ids()[1]
    });
    let reply = ok(node0, counter(&reachable)).await;
    assert_eq!(reply.node, cluster.ids()[1]);
    cluster.shutdown().await;
}
