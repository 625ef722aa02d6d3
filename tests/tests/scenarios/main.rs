//! The scenarios of the Elixir Mesh guide and the contract's semantics, on one node, through
//! the Rust `Mesh` API, against the contract's example actors (`mesh-examples`) and a few
//! test-only actors (see `fixtures`). Each test starts its own node inside its own actix System.

mod fixtures;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use fixtures::*;
use futures_util::future::join_all;
use mesh_actix::{Delivery, Mesh, MeshConfig, MeshError, NodeId, Request, StartError};
use mesh_examples::Counter;
use serde_json::json;

// --- Lifecycle: creation and reuse (rule 2) -----------------------------------------------------

#[actix_rt::test]
async fn first_call_creates_the_actor_on_this_node() {
    let mesh = start_mesh().await;
    assert_eq!(mesh.activations(), 0);

    let reply = ok(&mesh, counter("counter_1", json!({}))).await;

    assert_eq!(reply.result, json!({"ok": 1}));
    assert_eq!(reply.node.as_str(), NODE);
    assert!(!reply.pid.is_empty());
    assert_eq!(mesh.activations(), 1);
    assert_eq!(mesh.activation_stats().activated, 1);
}

#[actix_rt::test]
async fn later_calls_reuse_the_activation_and_its_state() {
    let mesh = start_mesh().await;

    let first = ok(&mesh, counter("counter_1", json!({}))).await;
    let second = ok(&mesh, counter("counter_1", json!({}))).await;
    let third = ok(&mesh, counter("counter_1", json!({}))).await;

    assert_eq!(first.result, json!({"ok": 1}));
    assert_eq!(second.result, json!({"ok": 2}));
    assert_eq!(third.result, json!({"ok": 3}));
    assert_eq!(first.pid, second.pid);
    assert_eq!(second.pid, third.pid);
    assert_eq!(mesh.activations(), 1);
    assert_eq!(mesh.activation_stats().activated, 1);
}

#[actix_rt::test]
async fn different_ids_are_independent_actors() {
    let mesh = start_mesh().await;

    for _ in 0..3 {
        ok(&mesh, counter("a", json!({}))).await;
    }
    let a = ok(&mesh, counter("a", json!({}))).await;
    let b = ok(&mesh, counter("b", json!({}))).await;

    assert_eq!(a.result, json!({"ok": 4}));
    assert_eq!(b.result, json!({"ok": 1}));
    assert_ne!(a.pid, b.pid);
    assert_eq!(mesh.activations(), 2);
}

#[actix_rt::test]
async fn the_same_id_under_two_modules_is_two_actors() {
    let mesh = start_mesh().await;

    let c = ok(&mesh, counter("shared_id", json!({}))).await;
    let g = ok(&mesh, game("shared_id", json!({"action": "get_state"}))).await;

    assert_eq!(c.result, json!({"ok": 1}));
    assert_eq!(
        g.result,
        json!({"ok": {"id": "shared_id", "level": 1, "score": 0}})
    );
    assert_ne!(c.pid, g.pid);
    assert_eq!(mesh.activations(), 2);
}

#[actix_rt::test]
async fn a_null_payload_reaches_the_handler() {
    let mesh = start_mesh().await;
    let request = Request::new("GameActor", "g_null", "game").unwrap();
    assert_eq!(request.payload, serde_json::Value::Null);

    let reply = ok(&mesh, request).await;

    assert_eq!(reply.result, json!({"ok": "noop"}));
}

#[actix_rt::test]
async fn a_mesh_name_attribute_overrides_the_module_name() {
    let mesh = start_mesh().await;

    let reply = ok(&mesh, req("Renamed", "r1", "named", json!({}))).await;
    assert_eq!(reply.result, json!({"ok": "renamed"}));

    let e = err(&mesh, req("NamedActor", "r1", "named", json!({}))).await;
    assert!(
        matches!(e, MeshError::UnknownModule(ref m) if m.contains("`NamedActor`")),
        "{e:?}"
    );
    assert!(mesh.modules().iter().any(|m| m.as_str() == "Renamed"));
}

// --- init_arg (rule 2) --------------------------------------------------------------------------

#[actix_rt::test]
async fn init_arg_sets_the_starting_state() {
    let mesh = start_mesh().await;

    let reply = ok(
        &mesh,
        game("player_123", json!({"action": "get_state"}))
            .with_init_arg(json!({"starting_level": 10})),
    )
    .await;

    assert_eq!(
        reply.result,
        json!({"ok": {"id": "player_123", "level": 10, "score": 0}})
    );
}

#[actix_rt::test]
async fn init_arg_is_used_only_on_first_activation() {
    let mesh = start_mesh().await;

    let first = ok(
        &mesh,
        game("g1", json!({"action": "increment"})).with_init_arg(json!({"starting_level": 10})),
    )
    .await;
    assert_eq!(first.result, json!({"ok": 1}));

    // A different init_arg later is ignored: the activation already exists, with its state.
    let second = ok(
        &mesh,
        game("g1", json!({"action": "get_state"})).with_init_arg(json!({"starting_level": 99})),
    )
    .await;
    assert_eq!(
        second.result,
        json!({"ok": {"id": "g1", "level": 10, "score": 1}})
    );
    assert_eq!(first.pid, second.pid);

    // And no init_arg at all does not reset it either.
    let third = ok(&mesh, game("g1", json!({"action": "get_state"}))).await;
    assert_eq!(
        third.result,
        json!({"ok": {"id": "g1", "level": 10, "score": 1}})
    );
}

#[actix_rt::test]
async fn without_init_arg_the_default_level_is_used() {
    let mesh = start_mesh().await;

    let reply = ok(&mesh, game("g_default", json!({"action": "get_state"}))).await;

    assert_eq!(
        reply.result,
        json!({"ok": {"id": "g_default", "level": 1, "score": 0}})
    );
}

#[actix_rt::test]
async fn a_rejected_init_arg_fails_with_init_failed_and_activates_nothing() {
    let mesh = start_mesh().await;
    ok(&mesh, counter("bystander", json!({}))).await;
    let before = mesh.activation_stats();

    for bad in [
        json!(-1),
        json!("ten"),
        json!(1.5),
        json!(null),
        json!({"n": 1}),
    ] {
        let e = err(
            &mesh,
            game("g_bad", json!({"action": "get_state"}))
                .with_init_arg(json!({"starting_level": bad})),
        )
        .await;
        assert!(matches!(e, MeshError::InitFailed(_)), "{bad}: {e:?}");
        assert_eq!(e.code().as_str(), "init_failed");
    }

    let after = mesh.activation_stats();
    assert_eq!(mesh.activations(), 1, "only the bystander is live");
    assert_eq!(after.activated, before.activated);
    assert_eq!(after.restarts, before.restarts);

    // Nothing was activated, so a later call with a valid init_arg is the first activation.
    let reply = ok(
        &mesh,
        game("g_bad", json!({"action": "get_state"})).with_init_arg(json!({"starting_level": 0})),
    )
    .await;
    assert_eq!(
        reply.result,
        json!({"ok": {"id": "g_bad", "level": 0, "score": 0}})
    );
    assert_eq!(mesh.activations(), 2);
}

// --- cast (rule 3) ------------------------------------------------------------------------------

#[actix_rt::test]
async fn cast_returns_ok_and_its_effect_is_seen_by_a_later_call() {
    let mesh = start_mesh().await;

    // A cast may be the first request for an identity: it activates the actor.
    for _ in 0..3 {
        mesh.cast(
            game("g_cast", json!({"action": "increment"}))
                .with_init_arg(json!({"starting_level": 7})),
        )
        .await
        .expect("cast accepted");
    }

    let get_state = || game("g_cast", json!({"action": "get_state"}));
    let deadline = Instant::now() + EVENTUALLY;
    loop {
        let reply = ok(&mesh, get_state()).await;
        if reply.result == json!({"ok": {"id": "g_cast", "level": 7, "score": 3}}) {
            break;
        }
        assert!(Instant::now() < deadline, "casts never applied: {reply:?}");
        actix::clock::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(mesh.activations(), 1);
}

#[actix_rt::test]
async fn cast_of_reset_sets_the_counter_to_zero() {
    let mesh = start_mesh().await;
    for n in 1..=3 {
        let reply = ok(&mesh, counter("c_reset", json!({}))).await;
        assert_eq!(reply.result, json!({"ok": n}));
    }

    mesh.cast(counter("c_reset", json!({"action": "reset"})))
        .await
        .expect("cast accepted");

    // The cast was enqueued before `cast` returned, so this call is behind it in the mailbox.
    let reply = ok(&mesh, counter("c_reset", json!({}))).await;
    assert_eq!(reply.result, json!({"ok": 1}));
}

#[actix_rt::test]
async fn call_of_reset_replies_zero() {
    let mesh = start_mesh().await;
    ok(&mesh, counter("c_reset_call", json!({}))).await;
    ok(&mesh, counter("c_reset_call", json!({}))).await;

    let reset = ok(&mesh, counter("c_reset_call", json!({"action": "reset"}))).await;
    let next = ok(&mesh, counter("c_reset_call", json!({}))).await;

    assert_eq!(reset.result, json!({"ok": 0}));
    assert_eq!(next.result, json!({"ok": 1}));
    assert_eq!(reset.pid, next.pid);
}

// --- Crashes (rule 4) ---------------------------------------------------------------------------

#[actix_rt::test]
async fn a_crash_fails_that_call_and_the_next_call_gets_a_fresh_actor() {
    let mesh = start_mesh().await;
    let first = ok(&mesh, crasher("crasher_1", json!({}))).await;
    let second = ok(&mesh, crasher("crasher_1", json!({}))).await;
    assert_eq!(first.result, json!({"ok": 1}));
    assert_eq!(second.result, json!({"ok": 2}));
    assert_eq!(mesh.activation_stats().restarts, 0);

    let e = err(&mesh, crasher("crasher_1", json!({"action": "crash"}))).await;
    assert!(matches!(e, MeshError::ActorCrashed(_)), "{e:?}");
    assert_eq!(e.code().as_str(), "actor_crashed");

    let after = ok(&mesh, crasher("crasher_1", json!({}))).await;
    assert_eq!(
        after.result,
        json!({"ok": 1}),
        "fresh state after the crash"
    );
    assert_ne!(after.pid, first.pid, "a new pid after the crash");
    assert_eq!(mesh.activation_stats().restarts, 1);
    assert_eq!(mesh.activations(), 1);

    // And the restarted activation is reused like any other.
    let again = ok(&mesh, crasher("crasher_1", json!({}))).await;
    assert_eq!(again.result, json!({"ok": 2}));
    assert_eq!(again.pid, after.pid);
}

#[actix_rt::test]
async fn twenty_crashes_in_a_row_and_the_node_still_serves() {
    let mesh = start_mesh().await;
    ok(&mesh, counter("steady", json!({}))).await;
    let mut pids = HashSet::new();
    pids.insert(ok(&mesh, crasher("crash_loop", json!({}))).await.pid);

    for i in 0..20 {
        let e = err(&mesh, crasher("crash_loop", json!({"action": "crash"}))).await;
        assert!(matches!(e, MeshError::ActorCrashed(_)), "crash #{i}: {e:?}");
        let reply = ok(&mesh, crasher("crash_loop", json!({}))).await;
        assert_eq!(
            reply.result,
            json!({"ok": 1}),
            "fresh state after crash #{i}"
        );
        assert!(pids.insert(reply.pid), "a pid seen before after crash #{i}");
    }

    assert_eq!(mesh.activation_stats().restarts, 20);
    let steady = ok(&mesh, counter("steady", json!({}))).await;
    assert_eq!(steady.result, json!({"ok": 2}));
    let other = ok(&mesh, crasher("another_crasher", json!({}))).await;
    assert_eq!(other.result, json!({"ok": 1}));
    assert_eq!(mesh.activations(), 3);
}

#[actix_rt::test]
async fn twenty_crashes_back_to_back_without_calls_between() {
    let mesh = start_mesh().await;
    let before = ok(&mesh, crasher("crash_burst", json!({}))).await;

    for i in 0..20 {
        let e = err(&mesh, crasher("crash_burst", json!({"action": "crash"}))).await;
        assert!(matches!(e, MeshError::ActorCrashed(_)), "crash #{i}: {e:?}");
    }

    let after = ok(&mesh, crasher("crash_burst", json!({}))).await;
    assert_eq!(after.result, json!({"ok": 1}));
    assert_ne!(after.pid, before.pid);
    assert_eq!(mesh.activation_stats().restarts, 20);
    assert_eq!(mesh.activations(), 1);
}

#[actix_rt::test]
async fn a_crash_does_not_affect_other_actors() {
    let mesh = start_mesh().await;
    let c1 = ok(&mesh, counter("neighbour", json!({}))).await;
    ok(&mesh, counter("neighbour", json!({}))).await;
    ok(&mesh, crasher("c_other", json!({}))).await;
    ok(&mesh, crasher("c_other", json!({}))).await;

    let e = err(&mesh, crasher("c_victim", json!({"action": "crash"}))).await;
    assert!(matches!(e, MeshError::ActorCrashed(_)), "{e:?}");

    let c3 = ok(&mesh, counter("neighbour", json!({}))).await;
    assert_eq!(c3.result, json!({"ok": 3}));
    assert_eq!(c3.pid, c1.pid);
    let other = ok(&mesh, crasher("c_other", json!({}))).await;
    assert_eq!(
        other.result,
        json!({"ok": 3}),
        "same module, other id: untouched"
    );
}

#[actix_rt::test]
async fn calls_queued_behind_a_crash_are_served_by_the_fresh_actor() {
    let mesh = start_mesh().await;
    let id = "c_queue";
    ok(&mesh, holding(id, json!({}))).await; // activate; calls = 1

    // `hold` keeps the actor off its mailbox for a while, so all the rest queue up behind it
    // in this order.
    let results = queued_behind_a_hold(
        &mesh,
        id,
        [json!({}), json!({"action": "crash"}), json!({}), json!({})],
    )
    .await;

    let [held, before, crashed, after1, after2] = results.try_into().unwrap();
    let (held, before, after1, after2) = (
        held.unwrap(),
        before.unwrap(),
        after1.unwrap(),
        after2.unwrap(),
    );
    assert_eq!(held.result, json!({"ok": "held"}));
    assert_eq!(before.result, json!({"ok": 2}));
    assert!(
        matches!(crashed, Err(MeshError::ActorCrashed(_))),
        "{crashed:?}"
    );
    assert_eq!(after1.result, json!({"ok": 1}));
    assert_eq!(after2.result, json!({"ok": 2}));
    assert_eq!(held.pid, before.pid);
    assert_ne!(before.pid, after1.pid);
    assert_eq!(after1.pid, after2.pid);
    assert_eq!(mesh.activation_stats().restarts, 1);
}

/// The payloads of two crashes queued back to back, then of a call behind them.
fn two_crashes_then_a_call() -> [serde_json::Value; 3] {
    [
        json!({"action": "crash"}),
        json!({"action": "crash"}),
        json!({}),
    ]
}

/// Two crashes queued back to back, then a later crash: each must restart the actor in place
/// (same activation, new incarnation), never deactivate it.
#[actix_rt::test]
async fn crashes_queued_back_to_back_restart_in_place() {
    let mesh = start_mesh().await;
    let id = "c_double";
    ok(&mesh, holding(id, json!({}))).await;

    let results = queued_behind_a_hold(&mesh, id, two_crashes_then_a_call()).await;
    assert!(results[0].is_ok(), "{:?}", results[0]);
    assert!(
        matches!(results[1], Err(MeshError::ActorCrashed(_))),
        "{:?}",
        results[1]
    );
    assert!(
        matches!(results[2], Err(MeshError::ActorCrashed(_))),
        "{:?}",
        results[2]
    );
    assert_eq!(results[3].as_ref().unwrap().result, json!({"ok": 1}));

    // One more crash, on its own.
    let e = err(&mesh, holding(id, json!({"action": "crash"}))).await;
    assert!(matches!(e, MeshError::ActorCrashed(_)), "{e:?}");
    let reply = ok(&mesh, holding(id, json!({}))).await;
    assert_eq!(reply.result, json!({"ok": 1}));

    let stats = mesh.activation_stats();
    assert_eq!(stats.restarts, 3);
    assert_eq!(
        stats.activated, 1,
        "a crash restarts the activation in place; it must not deactivate and re-activate it"
    );
    assert_eq!(stats.live, 1);
}

/// After crashes queued back to back and one more crash, exactly one actor value remains: the
/// live activation's. None may linger after its activation is gone.
#[actix_rt::test]
async fn no_actor_outlives_its_activation_after_queued_crashes() {
    let mesh = start_mesh().await;
    let id = "values_1";
    ok(&mesh, holding(id, json!({}))).await;
    let results = queued_behind_a_hold(&mesh, id, two_crashes_then_a_call()).await;
    assert!(
        matches!(results[2], Err(MeshError::ActorCrashed(_))),
        "{:?}",
        results[2]
    );
    err(&mesh, holding(id, json!({"action": "crash"}))).await;
    ok(&mesh, holding(id, json!({}))).await;

    assert_eq!(mesh.activations(), 1);
    let deadline = Instant::now() + EVENTUALLY;
    loop {
        let alive = live_holding_counters(id);
        if alive == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{alive} HoldingCounter values still alive after {EVENTUALLY:?}, for 1 live activation"
        );
        actix::clock::sleep(Duration::from_millis(10)).await;
    }
}

#[actix_rt::test]
async fn a_panic_inside_an_async_handler_is_a_crash() {
    let mesh = start_mesh().await;
    let first = ok(&mesh, async_crasher("a1", json!({}))).await;
    let second = ok(&mesh, async_crasher("a1", json!({}))).await;
    assert_eq!(first.result, json!({"ok": 1}));
    assert_eq!(second.result, json!({"ok": 2}));
    assert_eq!(first.pid, second.pid);

    let e = err(&mesh, async_crasher("a1", json!({"action": "crash"}))).await;
    assert!(matches!(e, MeshError::ActorCrashed(_)), "{e:?}");

    let after = ok(&mesh, async_crasher("a1", json!({}))).await;
    assert_eq!(
        after.result,
        json!({"ok": 1}),
        "fresh state after the crash"
    );
    assert_ne!(after.pid, first.pid);
    assert_eq!(mesh.activation_stats().restarts, 1);
    assert_eq!(mesh.activations(), 1);
}

// --- Concurrency --------------------------------------------------------------------------------

#[actix_rt::test]
async fn two_hundred_concurrent_calls_on_one_actor_are_serialised() {
    let mesh = start_mesh().await;

    let replies = join_all((0..200).map(|_| mesh.call(counter("hot", json!({}))))).await;

    let replies: Vec<_> = replies
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("every call succeeds");
    let mut counts: Vec<u64> = replies
        .iter()
        .map(|r| r.result["ok"].as_u64().expect("a count"))
        .collect();
    counts.sort_unstable();
    assert_eq!(counts, (1..=200).collect::<Vec<u64>>());
    let pids: HashSet<_> = replies.iter().map(|r| r.pid.as_str()).collect();
    assert_eq!(pids.len(), 1, "one activation: {pids:?}");
    assert_eq!(mesh.activations(), 1);
    assert_eq!(mesh.activation_stats().activated, 1);
}

#[actix_rt::test]
async fn concurrent_first_calls_activate_once() {
    let mesh = start_mesh().await;

    let replies =
        join_all((0..50).map(|_| {
            mesh.call(game("race", json!({"action": "increment"})).with_init_arg(json!({})))
        }))
        .await;

    let pids: HashSet<_> = replies
        .iter()
        .map(|r| r.as_ref().expect("ok").pid.clone())
        .collect();
    assert_eq!(pids.len(), 1);
    assert_eq!(mesh.activation_stats().activated, 1);
    let state = ok(&mesh, game("race", json!({"action": "get_state"}))).await;
    assert_eq!(state.result["ok"]["score"], json!(50));
}

// --- Errors -------------------------------------------------------------------------------------

#[actix_rt::test]
async fn an_unregistered_module_is_unknown_module() {
    let mesh = start_mesh().await;

    let e = err(&mesh, req("NoSuchActor", "x", "counter", json!({}))).await;

    assert!(
        matches!(e, MeshError::UnknownModule(ref m) if m.contains("`NoSuchActor`")),
        "{e:?}"
    );
    assert_eq!(e.code().as_str(), "unknown_module");
    assert_eq!(mesh.activations(), 0);
    let cast = mesh
        .cast(req("NoSuchActor", "x", "counter", json!({})))
        .await;
    assert!(matches!(cast, Err(MeshError::UnknownModule(_))), "{cast:?}");
}

#[actix_rt::test]
async fn a_capability_no_node_registered_is_no_capable_node() {
    let mesh = start_mesh().await;

    let e = err(&mesh, req("Counter", "x", "unregistered", json!({}))).await;

    assert!(
        matches!(e, MeshError::NoCapableNode(ref c) if c.contains("`unregistered`")),
        "{e:?}"
    );
    assert_eq!(e.code().as_str(), "no_capable_node");
    assert_eq!(mesh.activations(), 0);
    let cast = mesh
        .cast(req("Counter", "x", "unregistered", json!({})))
        .await;
    assert!(matches!(cast, Err(MeshError::NoCapableNode(_))), "{cast:?}");
}

#[actix_rt::test]
async fn a_node_without_capabilities_owns_nothing() {
    let mesh = Mesh::start(config()).unwrap();
    mesh.register::<Counter>();

    let e = err(&mesh, counter("c", json!({}))).await;
    assert!(matches!(e, MeshError::NoCapableNode(_)), "{e:?}");

    mesh.register_capabilities(["counter"]).await.unwrap();
    let reply = ok(&mesh, counter("c", json!({}))).await;
    assert_eq!(reply.result, json!({"ok": 1}));
}

#[test]
fn empty_names_are_bad_requests() {
    for (module, id, capability, field) in [
        ("", "x", "counter", "module"),
        ("Counter", "", "counter", "id"),
        ("Counter", "x", "", "capability"),
    ] {
        let e = Request::new(module, id, capability).unwrap_err();
        assert!(
            matches!(e, MeshError::BadRequest(ref m) if m.contains(field)),
            "{e:?}"
        );
        assert_eq!(e.code().as_str(), "bad_request");
    }
}

#[actix_rt::test]
async fn an_empty_capability_name_is_a_bad_request_when_registering() {
    let mesh = start_mesh().await;
    let e = mesh.register_capabilities(["ok", ""]).await.unwrap_err();
    assert!(matches!(e, MeshError::BadRequest(_)), "{e:?}");
}

#[test]
fn mesh_start_needs_an_actix_system() {
    let started = Mesh::start(config());
    assert!(matches!(started, Err(StartError::NoSystem)));
}

// --- Timeouts and non-blocking waits ------------------------------------------------------------

#[actix_rt::test]
async fn a_call_past_its_timeout_fails_with_timeout_promptly() {
    let mesh = start_mesh().await;
    let started = Instant::now();

    let e = err(
        &mesh,
        sleeper("slow", 2000).with_timeout(Duration::from_millis(100)),
    )
    .await;

    let elapsed = started.elapsed();
    assert!(matches!(e, MeshError::Timeout(_)), "{e:?}");
    assert_eq!(e.code().as_str(), "timeout");
    assert!(
        elapsed >= Duration::from_millis(90),
        "timed out too early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(1500),
        "the timeout did not cut the wait short: {elapsed:?}"
    );

    // The actor itself is fine and keeps answering.
    let reply = ok(&mesh, sleeper("slow", 1)).await;
    assert_eq!(reply.result, json!({"ok": 1}));
}

#[actix_rt::test]
async fn while_a_sleeper_sleeps_other_actors_answer() {
    // One arbiter: the sleeper and the counter share a thread, so this shows the sleeper's
    // wait does not block it.
    let mut config = config();
    config.arbiters = NonZeroUsize::MIN;
    let mesh = start_mesh_with(config).await;

    let sleeping = actix_rt::spawn({
        let mesh = mesh.clone();
        async move { mesh.call(sleeper("sleepy", 3000)).await }
    });
    eventually("the sleeper to be activated", || mesh.activations() == 1).await;

    let started = Instant::now();
    for n in 1..=20 {
        let reply = ok(&mesh, counter("awake", json!({}))).await;
        assert_eq!(reply.result, json!({"ok": n}));
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_millis(1500),
        "20 calls took {elapsed:?} while a sleeper slept"
    );
    assert!(
        !sleeping.is_finished(),
        "the sleeper should still be asleep"
    );

    // The sleeper answers too, in due time.
    let slept = sleeping.await.expect("task").expect("sleeper reply");
    assert_eq!(slept.result, json!({"ok": 3000}));
}

#[actix_rt::test]
async fn a_sleeping_actor_still_serves_its_own_mailbox() {
    let mesh = start_mesh().await;

    let sleeping = actix_rt::spawn({
        let mesh = mesh.clone();
        async move { mesh.call(sleeper("self_serving", 3000)).await }
    });
    eventually("the sleeper to be activated", || mesh.activations() == 1).await;

    let started = Instant::now();
    let quick = ok(&mesh, sleeper("self_serving", 0)).await;
    assert_eq!(quick.result, json!({"ok": 0}));
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert!(!sleeping.is_finished());
    let slept = sleeping.await.expect("task").expect("sleeper reply");
    assert_eq!(slept.pid, quick.pid);
}

#[actix_rt::test]
async fn a_cast_to_a_full_mailbox_fails_at_once_and_accepted_casts_are_all_handled() {
    let mut config = config();
    config.mailbox_capacity = 4;
    let mesh = start_mesh_with(config).await;
    let held = ok(
        &mesh,
        holding("bounded", json!({"action": "hold", "ms": 300})),
    )
    .await;
    assert_eq!(held.result, json!({"ok": "held"}));

    let mut accepted = 0;
    let mut rejected = Vec::new();
    for _ in 0..50 {
        match mesh.cast(holding("bounded", json!({}))).await {
            Ok(()) => accepted += 1,
            Err(e) => rejected.push(e),
        }
    }

    assert!(accepted >= 1, "the mailbox accepted nothing");
    assert!(!rejected.is_empty(), "50 casts fit a mailbox bounded at 4");
    for e in &rejected {
        assert!(
            matches!(e, MeshError::OwnerUnavailable(m) if m.contains("full")),
            "a full mailbox is owner_unavailable, got {e:?}"
        );
    }
    let after = ok(&mesh, holding("bounded", json!({}))).await;
    assert_eq!(
        after.result,
        json!({"ok": accepted + 1}),
        "every accepted cast was handled"
    );
}

// --- Self-stop (rule 7) -------------------------------------------------------------------------

#[actix_rt::test]
async fn an_actor_that_stops_itself_is_activated_afresh_by_the_next_call() {
    let mesh = start_mesh().await;
    let first = ok(&mesh, counter("c_stop", json!({}))).await;
    ok(&mesh, counter("c_stop", json!({}))).await;
    assert_eq!(mesh.activations(), 1);

    let stopping = ok(&mesh, counter("c_stop", json!({"action": "stop"}))).await;
    assert_eq!(stopping.result, json!({"ok": "stopping"}));
    eventually("the stopped actor to leave the registry", || {
        mesh.activations() == 0
    })
    .await;

    let next = ok(&mesh, counter("c_stop", json!({}))).await;
    assert_eq!(next.result, json!({"ok": 1}), "fresh state");
    assert_ne!(next.pid, first.pid, "a new pid");
    let stats = mesh.activation_stats();
    assert_eq!(stats.restarts, 0, "a self-stop is not a crash");
    assert_eq!(stats.activated, 2);
    assert_eq!(stats.live, 1);
}

#[actix_rt::test]
async fn an_actor_that_stops_itself_by_cast_is_activated_afresh() {
    let mesh = start_mesh().await;
    let first = ok(&mesh, counter("c_stop_cast", json!({}))).await;

    mesh.cast(counter("c_stop_cast", json!({"action": "stop"})))
        .await
        .unwrap();
    eventually("the stopped actor to leave the registry", || {
        mesh.activations() == 0
    })
    .await;

    let next = ok(&mesh, counter("c_stop_cast", json!({}))).await;
    assert_eq!(next.result, json!({"ok": 1}));
    assert_ne!(next.pid, first.pid);
}

#[actix_rt::test]
async fn calls_queued_behind_a_self_stop_reach_a_fresh_activation() {
    let mesh = start_mesh().await;
    let id = "c_stop_queue";
    let first = ok(&mesh, holding(id, json!({}))).await;

    let results =
        queued_behind_a_hold(&mesh, id, [json!({"action": "stop"}), json!({}), json!({})]).await;

    let [held, stopping, next1, next2] = results.try_into().unwrap();
    assert_eq!(held.unwrap().result, json!({"ok": "held"}));
    assert_eq!(stopping.unwrap().result, json!({"ok": "stopping"}));
    let next1 = next1.expect("a call queued behind the stop is served");
    let next2 = next2.expect("a call queued behind the stop is served");
    let mut counts = [&next1, &next2].map(|r| r.result["ok"].as_u64().unwrap());
    counts.sort_unstable();
    assert_eq!(counts, [1, 2], "served by one fresh activation");
    assert_eq!(next1.pid, next2.pid);
    assert_ne!(next1.pid, first.pid);
    assert_eq!(mesh.activations(), 1);
}

#[actix_rt::test]
async fn an_actor_that_stops_itself_after_an_idle_period_is_deactivated() {
    let mesh = start_mesh().await;

    let first = ok(&mesh, idle("sleepy_head", 100)).await;
    assert_eq!(first.result, json!({"ok": 1}));
    assert_eq!(mesh.activations(), 1);

    // The idle timer calls ctx.stop() outside any handler.
    eventually("the idle actor to leave the registry", || {
        mesh.activations() == 0
    })
    .await;

    let next = ok(&mesh, idle("sleepy_head", 100)).await;
    assert_eq!(next.result, json!({"ok": 1}), "fresh state");
    assert_ne!(next.pid, first.pid, "a new pid");
    let stats = mesh.activation_stats();
    assert_eq!(stats.restarts, 0, "an idle stop is not a crash");
    assert_eq!(stats.activated, 2);
}

#[actix_rt::test]
async fn an_idle_actor_is_deactivated_again_after_its_reactivation() {
    let mesh = start_mesh().await;
    let mut pids = HashSet::new();

    for round in 0..3 {
        let reply = ok(&mesh, idle("cycler", 50)).await;
        assert_eq!(reply.result, json!({"ok": 1}), "round {round}");
        assert!(pids.insert(reply.pid), "round {round}: a new pid each time");
        eventually("the idle actor to leave the registry", || {
            mesh.activations() == 0
        })
        .await;
    }
    assert_eq!(mesh.activation_stats().activated, 3);
}

#[actix_rt::test]
async fn an_idle_actor_that_crashed_still_deactivates_when_idle() {
    let mesh = start_mesh().await;
    let first = ok(&mesh, idle("crash_then_idle", 500)).await;

    let e = err(
        &mesh,
        idle("crash_then_idle", 500).with_payload(json!({"action": "crash"})),
    )
    .await;
    assert!(matches!(e, MeshError::ActorCrashed(_)), "{e:?}");
    let restarted = ok(&mesh, idle("crash_then_idle", 500)).await;
    assert_eq!(
        restarted.result,
        json!({"ok": 1}),
        "fresh state after the crash"
    );
    assert_ne!(restarted.pid, first.pid);
    assert_eq!(mesh.activation_stats().restarts, 1);

    // The restarted incarnation runs `started` again, so it idles out like the first would.
    eventually("the restarted idle actor to leave the registry", || {
        mesh.activations() == 0
    })
    .await;
    let next = ok(&mesh, idle("crash_then_idle", 500)).await;
    assert_eq!(next.result, json!({"ok": 1}));
    assert_ne!(next.pid, restarted.pid);
}

// --- Capabilities and routing (rule 1) ----------------------------------------------------------

#[actix_rt::test]
async fn register_capabilities_returns_all_of_this_nodes_capabilities() {
    let mesh = Mesh::start(config()).unwrap();

    let first = mesh.register_capabilities(["counter"]).await.unwrap();
    let names: Vec<&str> = first.iter().map(|c| c.as_str()).collect();
    assert_eq!(names, ["counter"]);

    let all = mesh
        .register_capabilities(["game", "crasher"])
        .await
        .unwrap();
    let names: BTreeSet<&str> = all.iter().map(|c| c.as_str()).collect();
    assert_eq!(names, BTreeSet::from(["counter", "crasher", "game"]));

    // Registering one again changes nothing.
    let again = mesh.register_capabilities(["counter"]).await.unwrap();
    assert_eq!(again, all);
    assert_eq!(mesh.capabilities(), all);
}

#[actix_rt::test]
async fn this_node_owns_every_shard_of_its_capabilities() {
    let mesh = start_mesh().await;

    for id in [
        "counter_1",
        "player_123",
        "x",
        "a much longer id with spaces",
    ] {
        let shard = mesh.shard_for(id);
        assert!(shard.0 < mesh.config().shards.get());
        assert_eq!(shard, mesh.shard_for(id), "stable");
        assert_eq!(mesh.owner(shard, "counter").unwrap().as_str(), NODE);
        assert_eq!(mesh.owner(shard, "game").unwrap().as_str(), NODE);
        let e = mesh.owner(shard, "nope").unwrap_err();
        assert!(
            matches!(e, MeshError::NoCapableNode(ref c) if c.contains("`nope`")),
            "{e:?}"
        );
    }
    assert_eq!(mesh.node_id(), &NodeId::new(NODE).unwrap());
}

#[actix_rt::test]
async fn the_default_shard_count_is_4096() {
    let mesh = start_mesh().await;
    assert_eq!(mesh.config().shards.get(), 4096);
    let shards: HashSet<u32> = (0..2000)
        .map(|i| mesh.shard_for(&format!("id_{i}")).0)
        .collect();
    assert!(shards.iter().all(|s| *s < 4096));
    assert!(
        shards.len() > 1000,
        "ids spread over shards: {}",
        shards.len()
    );
}

// --- Metrics ------------------------------------------------------------------------------------

#[actix_rt::test]
async fn request_stats_count_calls_and_casts_by_outcome() {
    let mesh = start_mesh().await;

    for _ in 0..3 {
        ok(&mesh, counter("m", json!({}))).await;
    }
    err(&mesh, req("Nope", "m", "counter", json!({}))).await;
    err(&mesh, req("Counter", "m", "nope", json!({}))).await;
    err(&mesh, req("Counter", "m", "nope", json!({}))).await;
    err(&mesh, crasher("m", json!({"action": "crash"}))).await;
    err(
        &mesh,
        game("m", json!({})).with_init_arg(json!({"starting_level": "high"})),
    )
    .await;
    err(
        &mesh,
        sleeper("m", 1000).with_timeout(Duration::from_millis(20)),
    )
    .await;
    mesh.cast(counter("m", json!({}))).await.unwrap();
    mesh.cast(counter("m", json!({}))).await.unwrap();
    mesh.cast(req("Nope", "m", "counter", json!({})))
        .await
        .unwrap_err();

    let stats = mesh.request_stats();
    let calls: BTreeMap<&str, u64> = stats
        .by_outcome(Delivery::Call)
        .filter(|(_, n)| *n > 0)
        .collect();
    assert_eq!(
        calls,
        BTreeMap::from([
            ("ok", 3),
            ("unknown_module", 1),
            ("no_capable_node", 2),
            ("actor_crashed", 1),
            ("init_failed", 1),
            ("timeout", 1),
        ])
    );
    let casts: BTreeMap<&str, u64> = stats
        .by_outcome(Delivery::Cast)
        .filter(|(_, n)| *n > 0)
        .collect();
    assert_eq!(casts, BTreeMap::from([("ok", 2), ("unknown_module", 1)]));

    let cumulative = stats.call_latency().cumulative();
    assert_eq!(
        cumulative.last().map(|(_, n)| *n),
        Some(9),
        "every call timed"
    );
    assert!(
        stats.call_latency().sum() >= Duration::from_millis(20),
        "includes the timeout"
    );
}

// --- Scale --------------------------------------------------------------------------------------

#[actix_rt::test]
async fn five_thousand_activations() {
    let mesh = start_mesh().await;
    let ids: Vec<String> = (0..5000).map(|i| format!("many_{i}")).collect();

    let mut pids = HashSet::new();
    for chunk in ids.chunks(500) {
        let replies = join_all(chunk.iter().map(|id| mesh.call(counter(id, json!({}))))).await;
        for (id, reply) in chunk.iter().zip(replies) {
            let reply = reply.unwrap_or_else(|e| panic!("{id}: {e:?}"));
            assert_eq!(reply.result, json!({"ok": 1}), "{id}");
            assert_eq!(reply.node.as_str(), NODE);
            pids.insert(reply.pid);
        }
    }

    assert_eq!(mesh.activations(), 5000);
    assert_eq!(mesh.activation_stats().activated, 5000);
    assert_eq!(pids.len(), 5000, "one pid per activation");

    // They are all still there with their state.
    let again = ok(&mesh, counter("many_4999", json!({}))).await;
    assert_eq!(again.result, json!({"ok": 2}));
}

// --- Config ------------------------------------------------------------------------------------

#[actix_rt::test]
async fn a_custom_config_is_kept() {
    let mut config = MeshConfig::new(NodeId::new("custom").unwrap(), "127.0.0.1:9");
    config.mailbox_capacity = 16;
    let mesh = start_mesh_with(config).await;
    assert_eq!(mesh.config().mailbox_capacity, 16);
    let reply = ok(&mesh, counter("c", json!({}))).await;
    assert_eq!(reply.node.as_str(), "custom");
}
