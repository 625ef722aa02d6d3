//! The example actors' behaviour through the HTTP API of a node in the test process
//! ([`InProcessNode`]: every mesh route on an `actix_web::test` app): GameActor, Crasher, Sleeper,
//! concurrency.

use std::time::{Duration, Instant};

use mesh_tests::{
    counter, crasher, eventually, game, json, sleeper, with_field, Api, InProcessNode, Value,
};

fn game_with_init(id: &str, payload: Value, init_arg: Value) -> Value {
    with_field(game(id, payload), "init_arg", init_arg)
}

// --- GameActor --------------------------------------------------------------------------------------

#[actix_rt::test]
async fn game_init_arg_sets_the_starting_level() {
    let node = InProcessNode::start().await;
    let c = node.client();
    let r = c
        .call(&game_with_init(
            "g1",
            json!({"action": "get_state"}),
            json!({"starting_level": 10}),
        ))
        .await;
    assert_eq!(
        r.result(),
        &json!({"ok": {"id": "g1", "level": 10, "score": 0}}),
        "{r}"
    );
    assert_eq!(r.node(), node.id());
}

#[actix_rt::test]
async fn game_init_arg_is_used_only_on_the_first_call() {
    let node = InProcessNode::start().await;
    let c = node.client();
    let first = c
        .call(&game_with_init(
            "g2",
            json!({"action": "increment"}),
            json!({"starting_level": 10}),
        ))
        .await;
    assert_eq!(first.result(), &json!({"ok": 1}), "{first}");

    // A different init_arg later is ignored: the activation already exists.
    let r = c
        .call(&game_with_init(
            "g2",
            json!({"action": "get_state"}),
            json!({"starting_level": 99}),
        ))
        .await;
    assert_eq!(
        r.result(),
        &json!({"ok": {"id": "g2", "level": 10, "score": 1}}),
        "{r}"
    );
    assert_eq!(r.pid(), first.pid());

    // So is an invalid one.
    let r = c
        .call(&game_with_init(
            "g2",
            json!({"action": "get_state"}),
            json!({"starting_level": -1}),
        ))
        .await;
    assert_eq!(r.result()["ok"]["level"], json!(10), "{r}");
}

#[actix_rt::test]
async fn game_increment_adds_to_score() {
    let node = InProcessNode::start().await;
    let c = node.client();
    for expected in 1..=5 {
        let r = c.call(&game("g3", json!({"action": "increment"}))).await;
        assert_eq!(r.result(), &json!({"ok": expected}), "{r}");
    }
    let r = c.call(&game("g3", json!({"action": "get_state"}))).await;
    assert_eq!(
        r.result(),
        &json!({"ok": {"id": "g3", "level": 1, "score": 5}}),
        "{r}"
    );
}

#[actix_rt::test]
async fn game_default_level_is_one() {
    let node = InProcessNode::start().await;
    let c = node.client();
    let r = c.call(&game("g4", json!({"action": "get_state"}))).await;
    assert_eq!(
        r.result(),
        &json!({"ok": {"id": "g4", "level": 1, "score": 0}}),
        "{r}"
    );

    // init_arg without starting_level: level 1 as well.
    let r = c
        .call(&game_with_init(
            "g4b",
            json!({"action": "get_state"}),
            json!({}),
        ))
        .await;
    assert_eq!(
        r.result(),
        &json!({"ok": {"id": "g4b", "level": 1, "score": 0}}),
        "{r}"
    );
}

#[actix_rt::test]
async fn game_starting_level_zero_is_valid() {
    let node = InProcessNode::start().await;
    let r = node
        .client()
        .call(&game_with_init(
            "g0",
            json!({"action": "get_state"}),
            json!({"starting_level": 0}),
        ))
        .await;
    assert_eq!(
        r.result(),
        &json!({"ok": {"id": "g0", "level": 0, "score": 0}}),
        "{r}"
    );
}

#[actix_rt::test]
async fn game_bad_starting_level_is_init_failed() {
    let node = InProcessNode::start().await;
    let c = node.client();
    for (i, bad) in [json!(-1), json!("x"), json!(1.5)].into_iter().enumerate() {
        let id = format!("bad-{i}");
        let r = c
            .call(&game_with_init(
                &id,
                json!({"action": "get_state"}),
                json!({"starting_level": bad}),
            ))
            .await;
        r.expect_error(422, "init_failed");
    }
}

#[actix_rt::test]
async fn game_after_init_failed_a_good_init_arg_starts_it() {
    let node = InProcessNode::start().await;
    let c = node.client();
    c.call(&game_with_init(
        "g5",
        json!({"action": "get_state"}),
        json!({"starting_level": "x"}),
    ))
    .await
    .expect_error(422, "init_failed");

    // Nothing was activated, so the next call is a first call again and its init_arg is used.
    let r = c
        .call(&game_with_init(
            "g5",
            json!({"action": "get_state"}),
            json!({"starting_level": 7}),
        ))
        .await;
    assert_eq!(
        r.result(),
        &json!({"ok": {"id": "g5", "level": 7, "score": 0}}),
        "{r}"
    );
}

#[actix_rt::test]
async fn game_other_payloads_are_noop() {
    let node = InProcessNode::start().await;
    let c = node.client();
    for payload in [
        json!({"action": "dance"}),
        json!({}),
        json!(null),
        json!("increment"),
        json!([1, 2]),
    ] {
        let r = c.call(&game("g6", payload.clone())).await;
        assert_eq!(r.result(), &json!({"ok": "noop"}), "payload {payload}: {r}");
    }
    let r = c.call(&game("g6", json!({"action": "get_state"}))).await;
    assert_eq!(
        r.result()["ok"]["score"],
        json!(0),
        "noop changed nothing: {r}"
    );
}

// --- Crasher ----------------------------------------------------------------------------------------

#[actix_rt::test]
async fn crasher_counts_calls_per_activation() {
    let node = InProcessNode::start().await;
    let c = node.client();
    for expected in 1..=3 {
        let r = c.call(&crasher("c0", json!({}))).await;
        assert_eq!(r.result(), &json!({"ok": expected}), "{r}");
    }
}

#[actix_rt::test]
async fn crash_is_actor_crashed_and_the_actor_restarts_fresh() {
    let node = InProcessNode::start().await;
    let c = node.client();
    c.call(&crasher("c1", json!({}))).await.result();
    let before = c.call(&crasher("c1", json!({}))).await;
    assert_eq!(before.result(), &json!({"ok": 2}), "{before}");

    c.call(&crasher("c1", json!({"action": "crash"})))
        .await
        .expect_error(500, "actor_crashed");

    let after = c.call(&crasher("c1", json!({}))).await;
    assert_eq!(
        after.result(),
        &json!({"ok": 1}),
        "fresh state after a crash: {after}"
    );
    assert_ne!(
        after.pid(),
        before.pid(),
        "a restart gives a new pid: {after}"
    );

    let again = c.call(&crasher("c1", json!({}))).await;
    assert_eq!(again.result(), &json!({"ok": 2}), "{again}");
    assert_eq!(again.pid(), after.pid());
}

#[actix_rt::test]
async fn crash_on_the_first_call_is_actor_crashed() {
    let node = InProcessNode::start().await;
    let c = node.client();
    c.call(&crasher("c-first", json!({"action": "crash"})))
        .await
        .expect_error(500, "actor_crashed");
    let r = c.call(&crasher("c-first", json!({}))).await;
    assert_eq!(r.result(), &json!({"ok": 1}), "{r}");
}

#[actix_rt::test]
async fn twenty_crashes_in_a_row_leave_the_node_serving() {
    let node = InProcessNode::start().await;
    let c = node.client();
    assert_eq!(c.count("bystander").await, 1);

    let mut pids = Vec::new();
    for i in 0..20 {
        let r = c.call(&crasher("c2", json!({"action": "crash"}))).await;
        assert_eq!(r.status, 500, "crash #{i}: {r}");
        r.expect_error(500, "actor_crashed");
        let ok = c.call(&crasher("c2", json!({}))).await;
        assert_eq!(ok.result(), &json!({"ok": 1}), "after crash #{i}: {ok}");
        pids.push(ok.pid());
    }
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), 20, "every restart has its own pid");

    // Back-to-back crashes without a call in between.
    for i in 0..20 {
        c.call(&crasher("c3", json!({"action": "crash"})))
            .await
            .expect_error(500, "actor_crashed");
        let _ = i;
    }

    assert_eq!(c.count("bystander").await, 2, "other actors are untouched");
    assert_eq!(c.count("newcomer").await, 1);
    assert_eq!(
        c.call(&game("g", json!({"action": "increment"})))
            .await
            .result(),
        &json!({"ok": 1})
    );
    assert_eq!(c.get("/health").await.ok(), &json!({"status": "ok"}));
    assert!(node.client().get("/cluster").await.status == 200);
}

#[actix_rt::test]
async fn a_crash_does_not_reset_other_actors() {
    let node = InProcessNode::start().await;
    let c = node.client();
    // Same id string in two modules: still two identities.
    for expected in 1..=3 {
        assert_eq!(c.count("x").await, expected);
    }
    let pid = c.call(&counter("other", json!({}))).await.pid();
    let counter_pid = c.call(&counter("x", json!({}))).await.pid(); // 4

    c.call(&crasher("x", json!({"action": "crash"})))
        .await
        .expect_error(500, "actor_crashed");

    let r = c.call(&counter("x", json!({}))).await;
    assert_eq!(r.result(), &json!({"ok": 5}), "{r}");
    assert_eq!(r.pid(), counter_pid);
    let r = c.call(&counter("other", json!({}))).await;
    assert_eq!(r.result(), &json!({"ok": 2}), "{r}");
    assert_eq!(r.pid(), pid);
}

// --- Sleeper ----------------------------------------------------------------------------------------

#[actix_rt::test]
async fn sleeper_replies_after_sleeping() {
    let node = InProcessNode::start().await;
    let r = node.client().call(&sleeper("s0", 200)).await;
    assert_eq!(r.result(), &json!({"ok": 200}), "{r}");
    assert!(r.elapsed >= Duration::from_millis(200), "{r}");
}

#[actix_rt::test]
async fn sleeping_actor_does_not_block_others() {
    let node = InProcessNode::start().await;
    let c = node.client();
    // Activate the counters first, so that the timed calls below measure plain calls.
    for i in 0..4 {
        c.count(&format!("quick-{i}")).await;
    }

    let activations = |cluster: Value| cluster["activations"].as_u64().expect("activations");
    let before = activations(c.cluster().await);

    let started = Instant::now();
    let sleepers: Vec<_> = (0..2)
        .map(|i| {
            let c = c.clone();
            actix_rt::spawn(async move { c.call(&sleeper(&format!("s1-{i}"), 1500)).await })
        })
        .collect();
    // Wait until both Sleepers are activated (and so asleep) before timing anything.
    let cr = &c;
    eventually(
        "the two Sleepers to be activated",
        Duration::from_secs(10),
        || async move { (activations(cr.cluster().await) >= before + 2).then_some(()) },
    )
    .await;

    let mut calls = 0;
    while calls < 50 && !sleepers.iter().all(|s| s.is_finished()) {
        let r = c
            .call(&counter(&format!("quick-{}", calls % 4), json!({})))
            .await;
        r.result();
        assert!(
            r.elapsed < Duration::from_millis(500),
            "a Counter call took {:?} while Sleepers slept: {r}",
            r.elapsed
        );
        calls += 1;
    }
    assert!(
        calls >= 3,
        "only {calls} Counter calls answered while the Sleepers slept for 1.5 s"
    );

    for s in sleepers {
        let r = s.await.expect("sleeper task");
        assert_eq!(r.result(), &json!({"ok": 1500}), "{r}");
    }
    // Two 1.5 s sleeps ran side by side, not one after the other.
    let total = started.elapsed();
    assert!(total >= Duration::from_millis(1500), "{total:?}");
    assert!(
        total < Duration::from_millis(2900),
        "two concurrent 1.5 s sleeps took {total:?}"
    );
}

#[actix_rt::test]
async fn call_longer_than_timeout_ms_is_timeout() {
    let node = InProcessNode::start().await;
    let c = node.client();
    let body = with_field(sleeper("s2", 5000), "timeout_ms", json!(300));
    let r = c.call(&body).await;
    r.expect_error(504, "timeout");
    assert!(
        r.elapsed < Duration::from_millis(4000),
        "the timeout answers before the actor does: {r}"
    );

    // The node and other actors are fine afterwards.
    assert_eq!(c.count("after-timeout").await, 1);
    let body = with_field(sleeper("s3", 50), "timeout_ms", json!(10_000));
    assert_eq!(c.call(&body).await.result(), &json!({"ok": 50}));
}

// --- Identity -------------------------------------------------------------------------------------

/// The contract's identity is `(capability, module, id)`: one `(module, id)` under two
/// capabilities is two actors, with their own state and pid, even on one node.
#[actix_rt::test]
async fn one_module_and_id_under_two_capabilities_are_two_actors() {
    let node = InProcessNode::start().await;
    let c = node.client();
    let under =
        |capability: &str| with_field(counter("twin", json!({})), "capability", json!(capability));
    let first = c.call(&under("counter")).await;
    assert_eq!(first.result(), &json!({"ok": 1}), "{first}");
    assert_eq!(c.call(&under("counter")).await.result(), &json!({"ok": 2}));
    let other = c.call(&under("game")).await;
    assert_eq!(other.result(), &json!({"ok": 1}), "a second actor: {other}");
    assert_ne!(other.ok()["pid"], first.ok()["pid"]);
    assert_eq!(c.call(&under("counter")).await.result(), &json!({"ok": 3}));
}

// --- Concurrency ------------------------------------------------------------------------------------

#[actix_rt::test]
async fn concurrent_calls_to_one_id_are_serialized() {
    let node = InProcessNode::start().await;
    let c = node.client();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let c = c.clone();
        tasks.spawn_local(async move { c.call(&counter("hot", json!({}))).await });
    }
    let mut counts = Vec::new();
    let mut pids = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let r = r.expect("task");
        counts.push(r.result()["ok"].as_i64().unwrap_or_else(|| panic!("{r}")));
        pids.push(r.pid());
    }
    counts.sort();
    assert_eq!(counts, (1..=200).collect::<Vec<i64>>());
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), 1, "one identity, one activation: {pids:?}");
}

#[actix_rt::test]
async fn concurrent_calls_to_many_ids() {
    let node = InProcessNode::start().await;
    let c = node.client();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let c = c.clone();
        tasks.spawn_local(async move {
            let id = format!("many-{}", i % 20);
            c.call(&counter(&id, json!({}))).await
        });
    }
    let mut per_id = std::collections::BTreeMap::<String, Vec<i64>>::new();
    while let Some(r) = tasks.join_next().await {
        let r = r.expect("task");
        let n = r.result()["ok"].as_i64().unwrap_or_else(|| panic!("{r}"));
        per_id.entry(r.pid()).or_default().push(n);
    }
    assert_eq!(per_id.len(), 20, "20 ids, 20 activations");
    for (pid, mut counts) in per_id {
        counts.sort();
        assert_eq!(counts, (1..=10).collect::<Vec<i64>>(), "pid {pid}");
    }
}
