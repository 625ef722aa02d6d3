//! Every route of the HTTP API, success paths, against a node in the test process per test
//! ([`InProcessNode`]: every mesh route on an `actix_web::test` app). What needs a real process
//! (flags, the address a node listens on, two processes agreeing): `node_process.rs`.

use std::collections::BTreeSet;
use std::time::Duration;

use mesh_tests::{
    counter, eventually, game, json, metric_value, metrics, req, strings, unique, Api,
    InProcessNode, ALL_CAPABILITIES,
};

const POLL: Duration = Duration::from_secs(10);

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[actix_rt::test]
async fn health_answers_ok() {
    let node = InProcessNode::start().await;
    let r = node.client().get("/health").await;
    assert_eq!(r.ok(), &json!({"status": "ok"}), "{r}");
    r.expect_json();
}

#[actix_rt::test]
async fn call_counter_counts_up_on_one_activation() {
    let node = InProcessNode::start().await;
    let c = node.client();
    let body = counter("counter_1", json!({}));

    let first = c.call(&body).await;
    assert_eq!(first.result(), &json!({"ok": 1}), "{first}");
    assert_eq!(first.node(), node.id(), "{first}");
    let pid = first.pid();

    for expected in 2..=3 {
        let r = c.call(&body).await;
        assert_eq!(r.result(), &json!({"ok": expected}), "{r}");
        assert_eq!(r.pid(), pid, "same identity, same activation: {r}");
        assert_eq!(r.node(), node.id(), "{r}");
    }
}

#[actix_rt::test]
async fn call_payload_defaults_to_null() {
    let node = InProcessNode::start().await;
    let c = node.client();
    let body = json!({"module": "Counter", "id": "no-payload", "capability": "counter"});
    assert_eq!(c.call(&body).await.result(), &json!({"ok": 1}));
    assert_eq!(c.call(&body).await.result(), &json!({"ok": 2}));
}

#[actix_rt::test]
async fn different_ids_are_independent() {
    let node = InProcessNode::start().await;
    let c = node.client();

    assert_eq!(c.count("a").await, 1);
    assert_eq!(c.count("a").await, 2);
    assert_eq!(c.count("b").await, 1);
    assert_eq!(c.count("a").await, 3);
    assert_eq!(c.count("b").await, 2);

    let pid_a = c.call(&counter("a", json!({}))).await.pid();
    let pid_b = c.call(&counter("b", json!({}))).await.pid();
    assert_ne!(pid_a, pid_b, "two identities, two activations");
}

#[actix_rt::test]
async fn same_id_in_two_modules_is_two_identities() {
    let node = InProcessNode::start().await;
    let c = node.client();
    let id = "shared-id";
    assert_eq!(c.count(id).await, 1);
    let game = c.call(&game(id, json!({"action": "get_state"}))).await;
    assert_eq!(
        game.result(),
        &json!({"ok": {"id": id, "level": 1, "score": 0}}),
        "{game}"
    );
    assert_eq!(c.count(id).await, 2);
}

#[actix_rt::test]
async fn ids_may_hold_any_characters() {
    let node = InProcessNode::start().await;
    let c = node.client();
    let ids = [
        "with space",
        "slash/and?query=1&x#frag",
        "ünïcødé-日本",
        "percent%20sign",
        "+plus",
    ];
    for id in ids {
        assert_eq!(c.count(id).await, 1, "{id:?}");
    }
    for id in ids {
        assert_eq!(c.count(id).await, 2, "{id:?}");
        let r = c.owner(id, "counter").await;
        assert!(r.ok()["shard"].is_u64(), "{id:?}: {r}");
        assert_eq!(r.ok()["node"], json!(node.id()), "{id:?}: {r}");
    }
    let r = c
        .call(&game("ünïcødé-日本", json!({"action": "get_state"})))
        .await;
    assert_eq!(r.result()["ok"]["id"], json!("ünïcødé-日本"), "{r}");
}

#[actix_rt::test]
async fn reset_via_call() {
    let node = InProcessNode::start().await;
    let c = node.client();
    let id = "reset-me";
    for _ in 0..3 {
        c.count(id).await;
    }
    let pid = c.call(&counter(id, json!({}))).await.pid();

    let r = c.call(&counter(id, json!({"action": "reset"}))).await;
    assert_eq!(r.result(), &json!({"ok": 0}), "{r}");
    assert_eq!(r.pid(), pid, "reset keeps the activation: {r}");

    assert_eq!(c.count(id).await, 1);
    assert_eq!(c.count(id).await, 2);
}

#[actix_rt::test]
async fn cast_is_accepted_with_202() {
    let node = InProcessNode::start().await;
    let r = node.client().cast(&counter("cast-202", json!({}))).await;
    r.expect_status(202);
    assert_eq!(r.body, json!({"status": "accepted"}), "{r}");
}

#[actix_rt::test]
async fn cast_effect_is_observable_by_a_later_call() {
    let node = InProcessNode::start().await;
    let c = node.client();
    let id = unique("game");

    for _ in 0..3 {
        c.cast(&game(&id, json!({"action": "increment"})))
            .await
            .expect_status(202);
    }

    // get_state does not change the state, so it can be polled.
    let c = &c;
    let id = &id;
    let state = eventually("three cast increments to land", POLL, || async move {
        let r = c.call(&game(id, json!({"action": "get_state"}))).await;
        let state = r.result()["ok"].clone();
        (state["score"] == 3).then_some(state)
    })
    .await;
    assert_eq!(state, json!({"id": id, "level": 1, "score": 3}));
}

#[actix_rt::test]
async fn cast_activates_a_counter() {
    let node = InProcessNode::start().await;
    let c = node.client();
    let id = unique("cast-counter");
    c.cast(&counter(&id, json!({}))).await.expect_status(202);

    // Each poll is itself a call that adds 1, so the count seen is (1 from the cast, if it landed) +
    // (polls so far). The cast has landed once a count exceeds the number of calls made.
    let c = &c;
    let id = &id;
    let mut calls = 0;
    eventually("the cast to reach the Counter", POLL, || {
        calls += 1;
        let made = calls;
        async move { (c.count(id).await > made).then_some(()) }
    })
    .await;
}

#[actix_rt::test]
async fn reset_via_cast() {
    let node = InProcessNode::start().await;
    let c = node.client();
    let id = unique("cast-reset");
    for expected in 1..=10 {
        assert_eq!(c.count(&id).await, expected);
    }

    c.cast(&counter(&id, json!({"action": "reset"})))
        .await
        .expect_status(202);

    // Without the reset, counts would go on 11, 12, ...; once it lands they restart from 1.
    let c = &c;
    let id = &id;
    let seen = eventually("the cast reset to land", POLL, || async move {
        let n = c.count(id).await;
        (n < 10).then_some(n)
    })
    .await;
    assert!(seen >= 1, "count after reset is {seen}");
}

#[actix_rt::test]
async fn stop_deactivates_and_next_call_starts_afresh() {
    let node = InProcessNode::start().await;
    let c = node.client();
    let id = "stopper";
    let body = counter(id, json!({}));

    c.call(&body).await.result();
    let r = c.call(&body).await;
    assert_eq!(r.result(), &json!({"ok": 2}));
    let old_pid = r.pid();

    let stop = c.call(&counter(id, json!({"action": "stop"}))).await;
    assert_eq!(stop.result(), &json!({"ok": "stopping"}), "{stop}");

    let after = c.call(&body).await;
    assert_eq!(
        after.result(),
        &json!({"ok": 1}),
        "a stopped actor starts afresh: {after}"
    );
    assert_ne!(after.pid(), old_pid, "new activation, new pid: {after}");

    let again = c.call(&body).await;
    assert_eq!(again.result(), &json!({"ok": 2}), "{again}");
    assert_eq!(again.pid(), after.pid(), "{again}");
}

#[actix_rt::test]
async fn owner_names_this_node_and_a_shard() {
    let node = InProcessNode::start().await;
    let c = node.client();
    for cap in ALL_CAPABILITIES {
        let r = c.owner("counter_1", cap).await;
        let body = r.ok();
        let shard = body["shard"]
            .as_u64()
            .unwrap_or_else(|| panic!("shard is not a non-negative integer: {r}"));
        assert!(shard < 4096, "default is 4096 shards: {r}");
        assert_eq!(body["node"], json!(node.id()), "{r}");
    }
    // The shard depends on the id only, not on the capability.
    let a = c.owner("counter_1", "counter").await.ok()["shard"].clone();
    let b = c.owner("counter_1", "game").await.ok()["shard"].clone();
    assert_eq!(a, b);
}

#[actix_rt::test]
async fn owner_of_unregistered_capability_is_no_capable_node() {
    let node = InProcessNode::start().await;
    node.client()
        .owner("counter_1", "nobody-has-this")
        .await
        .expect_error(503, "no_capable_node");
}

#[actix_rt::test]
async fn owner_without_params_is_bad_request() {
    let node = InProcessNode::start().await;
    let c = node.client();
    for path in [
        "/owner",
        "/owner?id=counter_1",
        "/owner?capability=counter",
        "/owner?id=&capability=counter",
        "/owner?id=counter_1&capability=",
    ] {
        let r = c.get(path).await;
        assert_eq!(r.status, 400, "GET {path}: {r}");
        r.expect_error(400, "bad_request");
    }
}

#[actix_rt::test]
async fn cluster_counts_live_activations() {
    let node = InProcessNode::start().await;
    let c = node.client();
    let activations = |cluster: serde_json::Value| {
        cluster["activations"]
            .as_u64()
            .unwrap_or_else(|| panic!("activations is not an integer: {cluster}"))
    };
    let before = activations(c.cluster().await);

    for i in 0..5 {
        c.count(&format!("act-{i}")).await;
    }
    // Calls to existing activations add none.
    c.count("act-0").await;
    c.count("act-1").await;
    assert_eq!(activations(c.cluster().await), before + 5);

    c.call(&game("act-0", json!({}))).await.result();
    assert_eq!(activations(c.cluster().await), before + 6);

    // An actor that stops itself leaves the registry (rule 7).
    let r = c.call(&counter("act-4", json!({"action": "stop"}))).await;
    assert_eq!(r.result(), &json!({"ok": "stopping"}));
    let c = &c;
    eventually(
        "the stopped actor to leave the count",
        POLL,
        || async move { (activations(c.cluster().await) == before + 5).then_some(()) },
    )
    .await;
}

#[actix_rt::test]
async fn capabilities_can_be_added_at_run_time() {
    let node = InProcessNode::builder()
        .capabilities(["counter"])
        .start()
        .await;
    let c = node.client();
    let body = req("Counter", "extra-1", "extra", json!({}));

    c.call(&body).await.expect_error(503, "no_capable_node");
    c.owner("extra-1", "extra")
        .await
        .expect_error(503, "no_capable_node");

    let r = c
        .post_json("/capabilities", &json!({"capabilities": ["extra", "more"]}))
        .await;
    assert_eq!(
        strings(&r.ok()["capabilities"]),
        set(&["counter", "extra", "more"]),
        "the reply lists all of this node's capabilities: {r}"
    );

    let r = c.call(&body).await;
    assert_eq!(r.result(), &json!({"ok": 1}), "{r}");
    assert_eq!(r.node(), node.id());
    assert_eq!(
        c.owner("extra-1", "extra").await.ok()["node"],
        json!(node.id())
    );

    // Adding again is harmless and still returns everything.
    let r = c
        .post_json("/capabilities", &json!({"capabilities": ["extra"]}))
        .await;
    assert_eq!(
        strings(&r.ok()["capabilities"]),
        set(&["counter", "extra", "more"]),
        "{r}"
    );

    let c = &c;
    let id = node.id().to_string();
    let id = &id;
    eventually(
        "/cluster to show the new capabilities",
        POLL,
        || async move {
            let cluster = c.cluster().await;
            let me = cluster["members"]
                .as_array()?
                .iter()
                .find(|m| m["node"] == json!(id))?
                .clone();
            (strings(&me["capabilities"]) == set(&["counter", "extra", "more"])).then_some(())
        },
    )
    .await;
}

#[actix_rt::test]
async fn metrics_are_prometheus_text_and_count_calls() {
    let node = InProcessNode::start().await;
    let c = node.client();
    for i in 0..5 {
        c.count(&format!("m-{i}")).await;
    }

    let r = c.get("/metrics").await;
    // Prometheus text format is served as text/plain.
    r.expect_status(200).expect_content_type("text/plain");
    assert!(r.text.contains("# TYPE "), "no # TYPE lines: {r}");

    let samples = metrics(&r.text);
    assert!(
        samples.iter().any(|s| s.metric.starts_with("mesh_")),
        "no mesh_ metric: {r}"
    );
    let calls: Vec<_> = samples
        .iter()
        .filter(|s| {
            s.metric.starts_with("mesh_")
                && s.metric.contains("call")
                && metric_value(s).is_some_and(|v| v > 0.0)
        })
        .collect();
    assert!(
        !calls.is_empty(),
        "after 5 calls, no mesh_*call* sample has a positive value:\n{}",
        r.text
    );
    // Process and build metrics, as every Prometheus target has them.
    let value = |name: &str| {
        samples
            .iter()
            .find(|s| s.metric == name)
            .and_then(metric_value)
            .unwrap_or_else(|| panic!("no {name}:\n{}", r.text))
    };
    assert!(value("process_resident_memory_bytes") > 1e6);
    assert!(value("process_open_fds") >= 3.0);
    assert!(value("process_max_fds") >= value("process_open_fds"));
    assert!(value("process_cpu_seconds_total") > 0.0);
    let started = value("process_start_time_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        started <= now + 1.0 && started > now - 86_400.0,
        "{started} vs {now}"
    );
    assert_eq!(value("mesh_build_info"), 1.0);
    // No hop on a lone node: the counters are there, at zero.
    assert_eq!(value("mesh_hops_total"), 0.0);
    assert_eq!(value("mesh_hop_duration_seconds_count"), 0.0);
}

#[actix_rt::test]
async fn metrics_count_calls_by_outcome_including_refused_bodies() {
    let node = InProcessNode::builder()
        .capabilities(ALL_CAPABILITIES)
        .secret("s3cret")
        .start()
        .await;
    let c = node.client();
    c.count(&unique("ok")).await;
    c.count(&unique("ok")).await;
    c.post_raw("/call", b"{not json", Some("application/json"))
        .await
        .expect_status(400);
    node.client_without_secret()
        .post_json("/call", &counter(&unique("no-secret"), json!({})))
        .await
        .expect_status(401);
    c.post_json("/cast", &req("Nope", &unique("x"), "counter", json!({})))
        .await
        .expect_status(404);

    let r = c.get("/metrics").await;
    let samples = metrics(&r.text);
    // The value of the one sample named `name` whose labels are exactly `labels`.
    let value = |name: &str, labels: &[(&str, &str)]| {
        let found: Vec<f64> = samples
            .iter()
            .filter(|s| {
                s.metric == name
                    && s.labels.len() == labels.len()
                    && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
            })
            .map(|s| metric_value(s).unwrap_or_else(|| panic!("{name} is not a number")))
            .collect();
        match found[..] {
            [v] => v,
            _ => panic!("{} samples {name}{labels:?} in:\n{}", found.len(), r.text),
        }
    };
    assert_eq!(value("mesh_calls_total", &[("outcome", "ok")]), 2.0);
    assert_eq!(
        value("mesh_calls_total", &[("outcome", "bad_request")]),
        1.0
    );
    assert_eq!(
        value("mesh_calls_total", &[("outcome", "unauthorized")]),
        1.0
    );
    assert_eq!(
        value("mesh_casts_total", &[("outcome", "unknown_module")]),
        1.0
    );
    assert_eq!(value("mesh_call_duration_seconds_count", &[]), 2.0);
    assert_eq!(value("mesh_activations", &[]), 2.0);
}
