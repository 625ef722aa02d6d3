//! The OpenTelemetry export of real `mesh-node` processes (feature `otel`, which this package
//! builds): with `OTEL_EXPORTER_OTLP_ENDPOINT` set, a call forwarded once exports as one trace,
//! the caller's `traceparent`'s, the owner's span a child of the first node's, each under its
//! node's service and instance; a batched call's owner exports its span too; a node sends what
//! is queued when it stops; a collector that refuses or is not there never fails a call.
//!
//! The collector is a fake one in the test: an HTTP/1.1 server on 127.0.0.1 that records every
//! body POSTed to `/v1/traces` (OTLP/JSON: the nodes run with `OTEL_EXPORTER_OTLP_PROTOCOL=http/json`)
//! and answers each with the status it was given.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mesh_tests::{
    counter, crasher, eventually, free_port, json, Api, MeshNode, NodeBuilder, Value,
    ALL_CAPABILITIES,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const CONVERGE: Duration = Duration::from_secs(30);
/// The nodes export every 200 ms (OTEL_BSP_SCHEDULE_DELAY); this leaves room for a slow CI.
const EXPORTED_WITHIN: Duration = Duration::from_secs(20);

/// A trace id and parent span of the caller's own.
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A fake OTLP/HTTP collector; stops serving when dropped.
struct Collector {
    addr: SocketAddr,
    bodies: Arc<Mutex<Vec<Value>>>,
    server: JoinHandle<()>,
}

impl Collector {
    /// Serves on a port the OS picks, answering every export with `status`.
    async fn start(status: u16) -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let recorded = bodies.clone();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream, status, recorded.clone()));
            }
        });
        Collector {
            addr,
            bodies,
            server,
        }
    }

    /// The value of `OTEL_EXPORTER_OTLP_ENDPOINT` that reaches it.
    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every `/v1/traces` body received so far.
    fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Reads one request from `stream`, records its body if it is `POST /v1/traces`, answers
/// `status` and closes the connection (so the exporter opens one per export).
async fn answer(mut stream: TcpStream, status: u16, bodies: Arc<Mutex<Vec<Value>>>) {
    let mut request = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&request[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while request.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&chunk[..n]),
        }
    }
    if head.starts_with("post /v1/traces ") {
        let body = &request[head_end..head_end + length];
        let body = serde_json::from_slice(body)
            .unwrap_or_else(|e| panic!("an export that is not JSON ({e}): {head}"));
        bodies.lock().unwrap().push(body);
    }
    let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// One exported span, with its resource's service name and instance id.
#[derive(Debug, Clone)]
struct Exported {
    service: String,
    instance: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: Value,
    /// OTLP's span kind: 1 internal, 2 server.
    kind: Value,
    /// OTLP's status code: unset (absent or 0), 1 ok, 2 error.
    status: Value,
}

/// The string value of the OTLP/JSON attribute `key` in `attributes` (a list of key/value).
fn attribute(attributes: &Value, key: &str) -> Option<String> {
    attributes
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .and_then(|a| a["value"]["stringValue"].as_str())
        .map(str::to_owned)
}

/// Every span of the OTLP/JSON export requests `bodies`.
fn spans(bodies: &[Value]) -> Vec<Exported> {
    let mut spans = Vec::new();
    for body in bodies {
        for resource in body["resourceSpans"].as_array().into_iter().flatten() {
            let attrs = &resource["resource"]["attributes"];
            let service = attribute(attrs, "service.name").unwrap_or_default();
            let instance = attribute(attrs, "service.instance.id").unwrap_or_default();
            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                for span in scope["spans"].as_array().into_iter().flatten() {
                    let field = |k: &str| span[k].as_str().unwrap_or_default().to_owned();
                    spans.push(Exported {
                        service: service.clone(),
                        instance: instance.clone(),
                        name: field("name"),
                        trace_id: field("traceId"),
                        span_id: field("spanId"),
                        parent_span_id: field("parentSpanId"),
                        attributes: span["attributes"].clone(),
                        kind: span["kind"].clone(),
                        status: span["status"]["code"].clone(),
                    });
                }
            }
        }
    }
    spans
}

/// A node with every capability exporting to `endpoint`, every 200 ms, as OTLP/JSON.
fn exporting_node(endpoint: &str) -> NodeBuilder {
    MeshNode::builder()
        .capabilities(ALL_CAPABILITIES)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
}

/// `n` actor ids of `capability` that `owner` owns, as `via` sees the routing.
async fn ids_owned_by(via: &MeshNode, owner: &MeshNode, capability: &str, n: usize) -> Vec<String> {
    let c = via.client();
    let mut ids = Vec::new();
    for i in 0.. {
        let id = format!("{capability}-{i}");
        if c.owner(&id, capability).await.ok()["node"] == json!(owner.id()) {
            ids.push(id);
            if ids.len() == n {
                break;
            }
        }
    }
    ids
}

/// A `Counter` id that `owner` owns, as `via` sees the routing.
async fn id_owned_by(via: &MeshNode, owner: &MeshNode) -> String {
    ids_owned_by(via, owner, "counter", 1).await.remove(0)
}

/// Posts a `Counter` call for `id` to `node` with `traceparent`; returns the status and the
/// reply's `traceparent`.
async fn call(node: &MeshNode, id: &str, traceparent: &str) -> (u16, String) {
    post_call(node, counter(id, json!({})), traceparent).await
}

/// Posts the call `body` to `node` with `traceparent`; returns the status and the reply's
/// `traceparent`.
async fn post_call(node: &MeshNode, body: Value, traceparent: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("{}/call", node.base_url()))
        .header("content-type", "application/json")
        .header("traceparent", traceparent)
        .timeout(Duration::from_secs(20))
        .body(body.to_string())
        .send()
        .await
        .expect("the node answers");
    let status = response.status().as_u16();
    let reply = response.headers()["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    (status, reply)
}

#[tokio::test]
async fn a_forwarded_call_exports_one_trace_from_both_nodes() {
    let collector = Collector::start(200).await;
    let endpoint = collector.endpoint();
    let nodes = mesh_tests::start_cluster(2, CONVERGE, |i| {
        let node = exporting_node(&endpoint);
        // The first keeps the default service name; the second is named.
        if i == 1 {
            node.env("OTEL_SERVICE_NAME", "mesh-owner")
        } else {
            node
        }
    })
    .await;
    let (first, second) = (&nodes[0], &nodes[1]);
    let id = id_owned_by(first, second).await;

    let (status, reply) = call(first, &id, CALLER).await;
    assert_eq!(status, 200);
    let first_span = reply.split('-').nth(2).unwrap().to_owned();

    // The request spans of the call (the nodes export those of the test's readiness polls
    // too, each a trace of its own).
    let request_of = |spans: &[Exported], node: &MeshNode| {
        spans
            .iter()
            .find(|s| s.name == "request" && s.instance == node.id() && s.trace_id == CALLER_TRACE)
            .cloned()
    };
    let spans = eventually("both nodes' request spans", EXPORTED_WITHIN, || async {
        let spans = spans(&collector.bodies());
        (request_of(&spans, first).is_some() && request_of(&spans, second).is_some())
            .then_some(spans)
    })
    .await;
    let (a, b) = (
        request_of(&spans, first).unwrap(),
        request_of(&spans, second).unwrap(),
    );
    // One trace, the caller's: the first node's span is the caller's child and the one its
    // reply names; the owner's is the first node's child.
    assert_eq!(a.parent_span_id, CALLER_SPAN, "{a:?}");
    assert_eq!(
        a.span_id, first_span,
        "the reply's traceparent names it: {a:?}"
    );
    assert_eq!(b.parent_span_id, a.span_id, "{b:?}");
    // A request span is the server side of its request, and a 200 is no error.
    for span in [&a, &b] {
        assert_eq!(span.kind, json!(2), "{span:?}");
        assert_ne!(span.status, json!(2), "{span:?}");
    }
    assert_ne!(b.span_id, a.span_id);
    assert_eq!(attribute(&a.attributes, "route").as_deref(), Some("/call"));
    assert_eq!(
        attribute(&b.attributes, "route").as_deref(),
        Some("/internal/call")
    );
    // Each under its node: service name (default or OTEL_SERVICE_NAME) and instance id.
    assert_eq!(a.service, "mesh-node");
    assert_eq!(b.service, "mesh-owner");
    // The `call` span of each node is its `request` span's child, in the same trace.
    for (node, request) in [(first, &a), (second, &b)] {
        let call = spans
            .iter()
            .find(|s| s.name == "call" && s.instance == node.id())
            .unwrap_or_else(|| panic!("no call span from {}: {spans:#?}", node.id()));
        assert_eq!(call.trace_id, CALLER_TRACE);
        assert_eq!(call.parent_span_id, request.span_id, "{call:?}");
        assert_eq!(attribute(&call.attributes, "id").as_deref(), Some(&*id));
    }
}

#[tokio::test]
async fn batched_calls_export_the_owners_spans_as_children_too() {
    let collector = Collector::start(200).await;
    let endpoint = collector.endpoint();
    let nodes = mesh_tests::start_cluster(2, CONVERGE, |_| exporting_node(&endpoint)).await;
    let (first, second) = (&nodes[0], &nodes[1]);
    // More calls in flight to one peer than its hops (2 per core, at least 4) at once: the
    // rest leave in batches, whose calls have a `call` span on the owner but no `request`.
    const CALLS: usize = 64;
    let ids = ids_owned_by(first, second, "sleeper", CALLS).await;
    let traces: Vec<String> = (0..CALLS).map(|i| format!("{:032x}", i + 1)).collect();
    let replies = futures_util::future::join_all(ids.iter().zip(&traces).map(|(id, trace)| {
        let traceparent = format!("00-{trace}-{CALLER_SPAN}-01");
        async move { post_call(first, mesh_tests::sleeper(id, 300), &traceparent).await }
    }))
    .await;
    let first_spans: Vec<String> = replies
        .iter()
        .map(|(status, reply)| {
            assert_eq!(*status, 200, "{reply}");
            reply.split('-').nth(2).unwrap().to_owned()
        })
        .collect();

    // The owner's span of each trace: its `request` span, or a batched call's `call` span
    // (the one whose parent is not on the owner).
    let owners_span = |spans: &[Exported], trace: &str| {
        let mine: Vec<&Exported> = spans
            .iter()
            .filter(|s| s.trace_id == trace && s.instance == second.id())
            .collect();
        mine.iter()
            .find(|s| !mine.iter().any(|p| p.span_id == s.parent_span_id))
            .map(|s| (*s).clone())
    };
    let spans = eventually(
        "the owner's span of every call",
        EXPORTED_WITHIN,
        || async {
            let spans = spans(&collector.bodies());
            traces
                .iter()
                .all(|t| owners_span(&spans, t).is_some())
                .then_some(spans)
        },
    )
    .await;
    let mut batched = 0;
    for (trace, first_span) in traces.iter().zip(&first_spans) {
        let span = owners_span(&spans, trace).unwrap();
        assert_eq!(&span.parent_span_id, first_span, "trace {trace}: {span:?}");
        if span.name == "call" {
            batched += 1;
        }
    }
    assert!(batched > 0, "no call of {CALLS} was batched");
}

#[tokio::test]
async fn a_node_sends_its_queued_spans_when_it_stops() {
    let collector = Collector::start(200).await;
    // No export on a timer while the test runs: only the stop can send the span.
    let mut node = exporting_node(&collector.endpoint())
        .env("OTEL_BSP_SCHEDULE_DELAY", "600000")
        .start()
        .await;
    let (status, reply) = call(&node, "flushed", CALLER).await;
    assert_eq!(status, 200);
    assert!(collector.bodies().is_empty(), "exported before the stop");
    node.sigterm();
    node.expect_clean_exit(Duration::from_secs(20), "SIGTERM")
        .await;
    let spans = spans(&collector.bodies());
    let own = reply.split('-').nth(2).unwrap();
    assert!(
        spans
            .iter()
            .any(|s| s.name == "request" && s.span_id == own),
        "{spans:#?}"
    );
}

#[tokio::test]
async fn a_5xx_is_an_error_span_and_every_route_exports_its_request_span() {
    let collector = Collector::start(200).await;
    let node = exporting_node(&collector.endpoint()).start().await;
    let (status, crashed) =
        post_call(&node, crasher("c", json!({"action": "crash"})), CALLER).await;
    assert_eq!(status, 500);
    let response = reqwest::Client::new()
        .get(format!("{}/cluster", node.base_url()))
        .header("traceparent", CALLER)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("the node answers");
    assert_eq!(response.status().as_u16(), 200);
    let cluster = response.headers()["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();

    let span_of = |spans: &[Exported], traceparent: &str| {
        let own = traceparent.split('-').nth(2).unwrap();
        spans.iter().find(|s| s.span_id == own).cloned()
    };
    let spans = eventually("both request spans", EXPORTED_WITHIN, || async {
        let spans = spans(&collector.bodies());
        (span_of(&spans, &crashed).is_some() && span_of(&spans, &cluster).is_some())
            .then_some(spans)
    })
    .await;
    let crashed = span_of(&spans, &crashed).unwrap();
    assert_eq!(crashed.status, json!(2), "the 500 is an error: {crashed:?}");
    assert_eq!(
        attribute(&crashed.attributes, "route").as_deref(),
        Some("/call")
    );
    let cluster = span_of(&spans, &cluster).unwrap();
    assert_eq!(cluster.name, "request");
    assert_eq!(
        attribute(&cluster.attributes, "route").as_deref(),
        Some("/cluster")
    );
    assert_eq!(
        (cluster.trace_id.as_str(), cluster.kind.clone()),
        (CALLER_TRACE, json!(2))
    );
    assert_ne!(cluster.status, json!(2), "{cluster:?}");
}

#[tokio::test]
async fn a_refusing_or_absent_collector_never_fails_a_call() {
    let refusing = Collector::start(500).await;
    let absent = format!("http://127.0.0.1:{}", free_port());
    let endpoints = [refusing.endpoint(), absent];
    let nodes = mesh_tests::start_cluster(2, CONVERGE, |i| exporting_node(&endpoints[i])).await;
    let (first, second) = (&nodes[0], &nodes[1]);
    // Calls served locally and forwarded, from both nodes, before and after failed exports.
    let ids = [
        id_owned_by(first, first).await,
        id_owned_by(first, second).await,
    ];
    let calls_succeed = || async {
        for node in [first, second] {
            for id in &ids {
                let started = Instant::now();
                let (status, _) = call(node, id, CALLER).await;
                assert_eq!(status, 200, "call of {id} on {}", node.id());
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "a call of {id} on {} took {:?}",
                    node.id(),
                    started.elapsed()
                );
            }
        }
    };
    calls_succeed().await;
    eventually("an export refused", EXPORTED_WITHIN, || async {
        (!refusing.bodies().is_empty()).then_some(())
    })
    .await;
    calls_succeed().await;
}
