//! Observability of real `mesh-node` processes: the per-module metrics, and traces: `--log-format json` with `RUST_LOG=mesh_http=debug`,
//! a call forwarded once shows as one trace (the caller's `traceparent`) in both nodes' log
//! lines; every reply carries the call's `traceparent`; a missing or malformed one starts a
//! fresh trace, never an error.

use std::time::Duration;

use mesh_tests::{counter, crasher, eventually, json, Api, MeshNode, Value, ALL_CAPABILITIES};

const CONVERGE: Duration = Duration::from_secs(30);
const LOGGED_WITHIN: Duration = Duration::from_secs(10);

/// A trace id and parent span of the caller's own.
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Posts a `Counter` call for `id` to `node`, with `traceparent` if given; returns the status
/// and the reply's `traceparent`.
async fn call(node: &MeshNode, id: &str, traceparent: Option<&str>) -> (u16, String) {
    let http = reqwest::Client::new();
    let mut post = http
        .post(format!("{}/call", node.base_url()))
        .header("content-type", "application/json")
        .timeout(Duration::from_secs(20))
        .body(counter(id, json!({})).to_string());
    if let Some(traceparent) = traceparent {
        post = post.header("traceparent", traceparent);
    }
    let response = post.send().await.expect("the node answers");
    let status = response.status().as_u16();
    let header = response
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no traceparent on the reply for {id}"))
        .to_owned();
    (status, header)
}

/// The trace id of a valid version-00 `traceparent`; panics on anything else.
fn trace_id_of(traceparent: &str) -> &str {
    let parts: Vec<&str> = traceparent.split('-').collect();
    let hex = |s: &str, n| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    assert!(
        parts.len() == 4
            && parts[0] == "00"
            && hex(parts[1], 32)
            && hex(parts[2], 16)
            && hex(parts[3], 2)
            && parts[1] != "0".repeat(32)
            && parts[2] != "0".repeat(16),
        "not a valid traceparent: {traceparent}"
    );
    parts[1]
}

/// The trace ids of `node`'s JSON log lines that close a call span for the actor `id`.
fn logged_traces(node: &MeshNode, id: &str) -> Vec<String> {
    node.log()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["fields"]["message"] == "call done")
        .filter(|line| line["span"]["id"] == id && line["span"]["name"] == "call")
        .filter_map(|line| line["span"]["trace_id"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn a_forwarded_call_is_one_trace_in_both_nodes_logs() {
    let nodes = mesh_tests::start_cluster(2, CONVERGE, |_| {
        MeshNode::builder()
            .capabilities(ALL_CAPABILITIES)
            .arg("--log-format")
            .arg("json")
            .env("RUST_LOG", "warn,mesh_http=debug")
    })
    .await;
    let (first, second) = (&nodes[0], &nodes[1]);
    // An id the second node owns, so that the first forwards it.
    let c = first.client();
    let mut owned = (0..).map(|i| format!("traced-{i}"));
    let id = loop {
        let id = owned.next().unwrap();
        let owner = c.owner(&id, "counter").await;
        if owner.ok()["node"] == json!(second.id()) {
            break id;
        }
    };

    let (status, reply_trace) = call(first, &id, Some(CALLER)).await;
    assert_eq!(status, 200);
    assert_eq!(trace_id_of(&reply_trace), CALLER_TRACE);
    assert_ne!(reply_trace, CALLER, "the reply names this node's span");

    for node in [first, second] {
        let traces = eventually("the call's log line", LOGGED_WITHIN, || async {
            Some(logged_traces(node, &id)).filter(|t| !t.is_empty())
        })
        .await;
        assert_eq!(traces, [CALLER_TRACE], "on {}:\n{}", node.id(), node.log());
    }
    // The caller's node logged where the call went.
    let routed = first
        .log()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["span"]["id"] == id.as_str() && line["fields"]["message"] == "call done")
        .expect("logged above");
    assert_eq!(routed["span"]["owner"], json!(second.id()), "{routed}");
    assert_eq!(routed["span"]["capability"], "counter");
    assert_eq!(routed["span"]["module"], "Counter");
    assert_eq!(routed["span"]["outcome"], "ok");
    assert!(routed["span"]["shard"].is_u64(), "{routed}");
}

#[tokio::test]
async fn a_missing_or_malformed_traceparent_starts_a_fresh_trace() {
    let node = MeshNode::start().await;
    let (status, fresh) = call(&node, "untraced", None).await;
    assert_eq!(status, 200);
    let first = trace_id_of(&fresh).to_owned();

    for malformed in [
        "garbage",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
    ] {
        let (status, replaced) = call(&node, "untraced", Some(malformed)).await;
        assert_eq!(status, 200, "{malformed} refused");
        let trace = trace_id_of(&replaced);
        assert_ne!(trace, first, "a new trace for each call");
        assert_ne!(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
    }
    // An error reply carries its trace too.
    let http = reqwest::Client::new();
    let refused = http
        .post(format!("{}/call", node.base_url()))
        .header("traceparent", CALLER)
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 400);
    let header = refused.headers()["traceparent"].to_str().unwrap();
    assert_eq!(trace_id_of(header), CALLER_TRACE);
}

#[tokio::test]
async fn every_route_serves_in_a_request_span_of_the_callers_trace() {
    let node = MeshNode::builder()
        .capabilities(ALL_CAPABILITIES)
        .arg("--log-format")
        .arg("json")
        .env("RUST_LOG", "warn,mesh_http=debug")
        .start()
        .await;
    let http = reqwest::Client::new();
    // Routes of every kind: reads, a bad request, a wrong method (the resource's 405).
    let routes = [
        ("GET", "/cluster", 200),
        ("GET", "/health", 200),
        ("GET", "/metrics", 200),
        ("GET", "/owner", 400),
        ("DELETE", "/call", 405),
    ];
    for (method, route, expected) in routes {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = http
            .request(method.clone(), format!("{}{route}", node.base_url()))
            .header("traceparent", CALLER)
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .expect("the node answers");
        assert_eq!(response.status().as_u16(), expected, "{method} {route}");
        let header = response.headers()["traceparent"].to_str().unwrap();
        assert_eq!(trace_id_of(header), CALLER_TRACE, "{method} {route}");

        let served = eventually("the request's log line", LOGGED_WITHIN, || async {
            node.log()
                .lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .find(|line| {
                    line["fields"]["message"] == "request served"
                        && line["span"]["route"] == route
                        && line["span"]["trace_id"] == CALLER_TRACE
                })
        })
        .await;
        assert_eq!(served["fields"]["status"], expected, "{served}");
        assert!(served["fields"]["duration_us"].is_u64(), "{served}");
    }
}

/// The value of `name` with exactly these labels in `text`; panics if there is none.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    mesh_tests::metrics(text)
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .find_map(mesh_tests::metric_value)
        .unwrap_or_else(|| panic!("no {name}{labels:?} in:\n{text}"))
}

#[tokio::test]
async fn metrics_count_calls_and_activations_per_capability_and_module() {
    let node = MeshNode::start().await;
    let c = node.client();
    for i in 0..5 {
        c.call(&counter(&format!("m-{}", i % 2), json!({})))
            .await
            .ok();
    }
    c.call(&crasher("m-crash", json!({"action": "crash"})))
        .await
        .expect_error(500, "actor_crashed");
    // Counted when enqueued, before the 202.
    for _ in 0..3 {
        c.cast(&counter("m-cast", json!({})))
            .await
            .expect_status(202);
    }

    let text = c.get("/metrics").await.text;
    let counters = [("capability", "counter"), ("module", "Counter")];
    let with = |extra: (&'static str, &'static str)| {
        let mut labels = counters.to_vec();
        labels.push(extra);
        labels
    };
    assert_eq!(
        sample(&text, "mesh_module_calls_total", &with(("outcome", "ok"))),
        5.0
    );
    assert_eq!(sample(&text, "mesh_module_casts_total", &counters), 3.0);
    assert_eq!(
        sample(
            &text,
            "mesh_module_calls_total",
            &with(("outcome", "timeout"))
        ),
        0.0
    );
    assert_eq!(
        sample(&text, "mesh_module_call_duration_seconds_count", &counters),
        5.0
    );
    assert_eq!(sample(&text, "mesh_module_activations", &counters), 3.0);
    assert_eq!(
        sample(&text, "mesh_module_activations_started_total", &counters),
        3.0
    );
    assert_eq!(
        sample(&text, "mesh_module_passivations_total", &counters),
        0.0
    );
    let crashers = [
        ("capability", "crasher"),
        ("module", "Crasher"),
        ("outcome", "actor_crashed"),
    ];
    assert_eq!(sample(&text, "mesh_module_calls_total", &crashers), 1.0);
    // A module that never activated here has no series (the label set stays bounded).
    assert!(!text.contains("module=\"GameActor\""), "{text}");
}
