//! Raw-socket tests of a real `mesh-node`'s connection limits: its read deadlines, each set
//! short by its flag or environment variable (a request head trickled past `--header-timeout`, a
//! body stalled past `--body-timeout`, a later head trickled on a kept-alive connection, an idle
//! keep-alive connection, a stalled TLS handshake past `--tls-handshake-timeout`), the size of a
//! request head, and one client IP flooding past `--max-connections-per-ip`. (The flood of more
//! connections than descriptors is `exhaustion.rs`.)
//!
//! A deadline is asserted to act, within a bound generous for a slow shared machine, and never
//! to act fast; where a test must tell its setting from the default, it says how.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use mesh_tests::{eventually, json, metric_value, metrics, Api, Certs, Client, MeshNode, RawConn};

/// How often a trickling client sends its next byte.
const TRICKLE: Duration = Duration::from_millis(100);

/// A request head cut short: the blank line that ends it never comes.
const HALF_HEAD: &[u8] = b"GET /health HTTP/1.1\r\nHost: x\r\n";

/// The value of the sample of `name` with `label` = `value` (or the only sample of `name`).
async fn metric(client: &Client, name: &str, label: Option<(&str, &str)>) -> f64 {
    let text = client.get("/metrics").await.text;
    metrics(&text)
        .iter()
        .find(|s| {
            s.metric == name && label.is_none_or(|(key, value)| s.labels.get(key) == Some(value))
        })
        .and_then(metric_value)
        .unwrap_or_else(|| panic!("no {name} {label:?} in {text}"))
}

async fn health_answers(node: &MeshNode) {
    assert_eq!(
        node.client().get("/health").await.ok(),
        &json!({"status": "ok"})
    );
}

#[tokio::test]
async fn a_request_head_trickled_past_the_header_timeout_gets_408_and_is_closed() {
    let node = MeshNode::standard()
        .arg("--header-timeout")
        .arg("1")
        .start()
        .await;
    let mut conn = RawConn::open(node.addr());
    assert!(conn.send(b"GET /health HTTP/1.1\r\nX-Trickle: "));
    // One byte of a header value that never ends every 100 ms. Within 9 s: nine times the
    // setting, and before the default 10 s would close it, so that a flag that did not reach
    // the server fails here.
    let closed = conn
        .trickle_until_closed(b'a', TRICKLE, Duration::from_secs(9))
        .expect("a trickling request head kept its connection past 9 s");
    assert!(closed.received.starts_with("HTTP/1.1 408"), "{closed:?}");
    health_answers(&node).await;
}

#[tokio::test]
async fn a_body_stalled_past_the_body_timeout_gets_408_and_is_closed() {
    let node = MeshNode::standard()
        .env("MESH_BODY_TIMEOUT", "1")
        .start()
        .await;
    // Content-Length 1000, and 10 bytes of it. Closed within 9 s: before the default 10 s
    // would answer.
    let closed = RawConn::open(node.addr()).close_after(
        b"POST /call HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 1000\r\n\r\n{\"module\":",
        Duration::from_secs(9),
    );
    assert!(closed.received.starts_with("HTTP/1.1 408"), "{closed:?}");
    assert!(
        closed.received.contains(r#""code":"request_timeout""#),
        "{closed:?}"
    );
    health_answers(&node).await;
}

#[tokio::test]
async fn a_kept_alive_connection_closes_when_idle_and_cannot_trickle_its_next_head() {
    let node = MeshNode::standard()
        .arg("--keep-alive")
        .arg("1")
        .env("MESH_HEADER_TIMEOUT", "1")
        .start()
        .await;
    let request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";

    // Answered, then nothing more asked: closed after the keep-alive.
    let closed = RawConn::open(node.addr()).close_after(request, Duration::from_secs(10));
    assert!(closed.received.starts_with("HTTP/1.1 200"), "{closed:?}");

    // Answered, then the next head trickled: actix-web's own head timer covers only a
    // connection's first request, so the node closes it once no request has been in flight for
    // the keep-alive and the header timeout (2 s). Within 20 s: ten times that; without the
    // node's own deadline it stays open for as long as the trickle goes on.
    let mut trickling = RawConn::open(node.addr());
    assert!(trickling.send(request));
    assert!(trickling.send(b"GET /health HTTP/1.1\r\nX-Trickle: "));
    let closed = trickling
        .trickle_until_closed(b'a', TRICKLE, Duration::from_secs(20))
        .expect("a second request head trickled on a kept-alive connection for 20 s");
    assert!(closed.received.starts_with("HTTP/1.1 200"), "{closed:?}");
    assert!(
        metric(
            &node.client(),
            "mesh_connections_shed_total",
            Some(("reason", "idle"))
        )
        .await
            >= 1.0
    );
    health_answers(&node).await;
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_closed_after_the_tls_handshake_timeout() {
    let certs = Certs::new();
    let tls = certs.self_signed("node");
    let node = MeshNode::standard()
        .tls(&tls)
        .arg("--tls-handshake-timeout")
        .arg("6")
        .start()
        .await;
    let mut conn = RawConn::open(node.addr());
    // The header of a TLS handshake record of 512 bytes, and none of them.
    assert!(conn.send(&[0x16, 0x03, 0x01, 0x02, 0x00]));
    // Still open after 4 s, when the default 3 s would have closed it: the setting took. (Only
    // a lower bound: a slow machine cannot make the node close it early.)
    assert!(
        conn.closed_within(Duration::from_secs(4)).is_none(),
        "the handshake was cut off before --tls-handshake-timeout 6"
    );
    conn.closed_within(Duration::from_secs(60))
        .expect("a stalled TLS handshake kept its connection past 60 s");
    health_answers(&node).await;
}

#[tokio::test]
async fn one_client_ip_beyond_its_bound_sheds_only_its_own_connections() {
    const PER_IP: usize = 4;
    let node = MeshNode::standard()
        .arg("--max-connections")
        .arg("12")
        .env("MESH_MAX_CONNECTIONS_PER_IP", PER_IP.to_string())
        // Long enough that no deadline closes the stalled connections during the test.
        .arg("--header-timeout")
        .arg("120")
        .start()
        .await;
    // One client, so one connection from 127.0.0.1 while the test asks.
    let client = node.client();
    assert_eq!(
        metric(&client, "mesh_connections_per_ip_max", None).await,
        PER_IP as f64
    );
    // Linux routes all of 127.0.0.0/8 to loopback: each address is a client IP of its own.
    let (victim, flooder) = (
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)),
    );
    let mut victims = Vec::new();
    for _ in 0..3 {
        let mut conn = RawConn::open_from(victim, node.addr()).await;
        assert!(conn.send(HALF_HEAD));
        victims.push(conn);
    }
    // 3 + 20 stalled connections against a bound of 12: without the per-IP bound the flood
    // would shed the victims, the oldest.
    let mut flood = Vec::new();
    for _ in 0..20 {
        let mut conn = RawConn::open_from(flooder, node.addr()).await;
        conn.send(HALF_HEAD);
        flood.push(conn);
    }
    let shed = Some(("reason", "per_ip"));
    let c = &client;
    eventually("the flood's shedding", Duration::from_secs(10), || async move {
        (metric(c, "mesh_connections_shed_total", shed).await >= 16.0).then_some(())
    })
    .await;
    let open = flood
        .iter_mut()
        .map(RawConn::is_open)
        .filter(|open| *open)
        .count();
    assert_eq!(open, PER_IP, "the flooding IP keeps its newest connections");
    assert_eq!(
        metric(
            &client,
            "mesh_connections_shed_total",
            Some(("reason", "bound"))
        )
        .await,
        0.0
    );
    // Each victim's request is still there to be finished and answered.
    for mut conn in victims {
        let closed = conn.close_after(b"Connection: close\r\n\r\n", Duration::from_secs(10));
        assert!(closed.received.starts_with("HTTP/1.1 200"), "{closed:?}");
    }
}

#[tokio::test]
async fn a_request_head_over_128_kib_or_96_headers_gets_431_and_is_closed() {
    let node = MeshNode::standard().start().await;
    // Exactly 128 KiB of a head that has not ended, so that the node reads all of it: a
    // socket closed with bytes unread would reset, and the client could lose the answer.
    let start = "GET /health HTTP/1.1\r\nX-Long: ";
    let long = format!("{start}{}", "a".repeat((128 << 10) - start.len()));
    let many = format!(
        "GET /health HTTP/1.1\r\n{}\r\n",
        (0..97).map(|i| format!("X-{i}: a\r\n")).collect::<String>()
    );
    // Just under both bounds is served: 96 headers, 121 KiB.
    let fits = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Long: {}\r\n{}\r\n",
        "a".repeat(120 << 10),
        (0..93).map(|i| format!("X-{i}: a\r\n")).collect::<String>()
    );
    for (head, status) in [(long, "431"), (many, "431"), (fits, "200")] {
        let closed =
            RawConn::open(node.addr()).close_after(head.as_bytes(), Duration::from_secs(10));
        assert!(
            closed.received.starts_with(&format!("HTTP/1.1 {status}")),
            "{closed:?}"
        );
    }
}
