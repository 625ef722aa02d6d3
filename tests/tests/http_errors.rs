//! Every error code of the contract: status and `{"error": {"code", "message"}}` body, through a
//! node in the test process ([`InProcessNode`]: every mesh route on an `actix_web::test` app).
//! (`owner_unavailable` needs a cluster whose owner is unreachable: `transports/`, `cluster.rs`,
//! `partition.rs`; `--secret` itself: `node_process.rs`.)

use std::time::Duration;

use mesh_tests::{
    counter, crasher, game, json, req, sleeper, with_field, Api, InProcessNode, Value,
    ALL_CAPABILITIES,
};

const JSON: Option<&str> = Some("application/json");

/// A `Counter` body with one field replaced (or removed, for `None`).
fn counter_with(id: &str, field: &str, value: Option<Value>) -> Value {
    let mut body = counter(id, json!({}));
    let obj = body.as_object_mut().unwrap();
    match value {
        Some(v) => {
            obj.insert(field.to_string(), v);
        }
        None => {
            obj.remove(field);
        }
    }
    body
}

// --- 400 bad_request --------------------------------------------------------------------------------

#[actix_rt::test]
async fn body_that_is_not_json_is_bad_request() {
    let node = InProcessNode::start().await;
    let c = node.client();
    for path in ["/call", "/cast"] {
        for body in [
            &b"{not json"[..],
            b"",
            b"{\"module\": \"Counter\", \"id\": \"x\", \"capability\": \"counter\"",
            b"\xff\xfe",
            b"module=Counter&id=x",
        ] {
            let r = c.post_raw(path, body, JSON).await;
            assert_eq!(
                r.status,
                400,
                "POST {path} {:?}: {r}",
                String::from_utf8_lossy(body)
            );
            r.expect_error(400, "bad_request");
        }
    }
}

#[actix_rt::test]
async fn json_that_is_not_an_object_is_bad_request() {
    let node = InProcessNode::start().await;
    let c = node.client();
    for body in [json!([1, 2]), json!("Counter"), json!(42), json!(null)] {
        let r = c.call(&body).await;
        assert_eq!(r.status, 400, "{body}: {r}");
        r.expect_error(400, "bad_request");
    }
}

#[actix_rt::test]
async fn missing_required_fields_are_bad_request() {
    let node = InProcessNode::start().await;
    let c = node.client();
    for field in ["module", "id", "capability"] {
        for path in ["/call", "/cast"] {
            let body = counter_with("missing", field, None);
            let r = c.post_json(path, &body).await;
            assert_eq!(r.status, 400, "POST {path} without {field}: {r}");
            r.expect_error(400, "bad_request");
        }
    }
    let r = c.call(&json!({})).await;
    r.expect_error(400, "bad_request");
}

#[actix_rt::test]
async fn fields_of_the_wrong_type_are_bad_request() {
    let node = InProcessNode::start().await;
    let c = node.client();
    let cases = [
        ("id", json!(42)),
        ("id", json!(null)),
        ("id", json!(["a"])),
        ("module", json!(7)),
        ("module", json!({"name": "Counter"})),
        ("capability", json!(true)),
        ("capability", json!(["counter"])),
        ("timeout_ms", json!("5000")),
        ("timeout_ms", json!(-1)),
        ("timeout_ms", json!(1.5)),
        ("timeout_ms", json!({})),
    ];
    for (field, value) in cases {
        for path in ["/call", "/cast"] {
            let body = counter_with("typed", field, Some(value.clone()));
            let r = c.post_json(path, &body).await;
            assert_eq!(r.status, 400, "POST {path} with {field} = {value}: {r}");
            r.expect_error(400, "bad_request");
        }
    }
}

#[actix_rt::test]
async fn empty_module_id_or_capability_is_bad_request() {
    let node = InProcessNode::start().await;
    let c = node.client();
    for field in ["module", "id", "capability"] {
        for path in ["/call", "/cast"] {
            let body = counter_with("empty", field, Some(json!("")));
            let r = c.post_json(path, &body).await;
            assert_eq!(r.status, 400, "POST {path} with empty {field}: {r}");
            r.expect_error(400, "bad_request");
        }
    }
}

#[actix_rt::test]
async fn payload_may_be_any_json_value() {
    let node = InProcessNode::start().await;
    let c = node.client();
    let payloads = [
        json!("a string"),
        json!(12),
        json!(-3.5),
        json!(true),
        json!(null),
        json!([1, "two", {"three": 3}]),
        json!({"action": "no-such-action", "nested": {"deep": [1, 2]}}),
    ];
    for (i, payload) in payloads.iter().enumerate() {
        let r = c
            .call(&counter_with("anything", "payload", Some(payload.clone())))
            .await;
        assert_eq!(
            r.result(),
            &json!({"ok": i + 1}),
            "payload {payload} is just a payload: {r}"
        );
    }
    // Without a payload at all.
    let r = c.call(&counter_with("anything", "payload", None)).await;
    assert_eq!(r.result(), &json!({"ok": payloads.len() + 1}), "{r}");
    // timeout_ms given as a number is fine.
    let r = c
        .call(&counter_with("anything", "timeout_ms", Some(json!(5000))))
        .await;
    r.result();
}

// --- 404 unknown_module -----------------------------------------------------------------------------

#[actix_rt::test]
async fn unknown_module_is_404() {
    let node = InProcessNode::start().await;
    let c = node.client();
    for module in ["NoSuchActor", "Count"] {
        let r = c.call(&req(module, "x", "counter", json!({}))).await;
        assert_eq!(r.status, 404, "module {module:?}: {r}");
        r.expect_error(404, "unknown_module");
    }
    // The node is fine afterwards.
    assert_eq!(c.count("x").await, 1);
}

// --- 413 payload_too_large --------------------------------------------------------------------------

fn body_of_size(bytes: usize) -> Vec<u8> {
    let mut body = counter("big", json!({}));
    let overhead = serde_json::to_vec(&body).unwrap().len() + 2;
    body["payload"] = json!("x".repeat(bytes.saturating_sub(overhead)));
    let out = serde_json::to_vec(&body).unwrap();
    assert!(out.len() <= bytes);
    out
}

#[actix_rt::test]
async fn body_over_one_mib_is_payload_too_large() {
    let node = InProcessNode::start().await;
    let c = node.client();
    let body = body_of_size(2 * 1024 * 1024);
    for path in ["/call", "/cast"] {
        let r = c.post_raw(path, body.clone(), JSON).await;
        assert_eq!(r.status, 413, "POST {path} with a 2 MiB body: {r}");
        r.expect_error(413, "payload_too_large");
    }
    // The node still serves.
    assert_eq!(c.count("after-413").await, 1);
}

#[actix_rt::test]
async fn body_under_one_mib_is_accepted() {
    let node = InProcessNode::start().await;
    let body = body_of_size(900 * 1024);
    let r = node.client().post_raw("/call", body, JSON).await;
    assert_eq!(r.result(), &json!({"ok": 1}), "{r}");
}

// --- 422, 500, 503, 504 -----------------------------------------------------------------------------

#[actix_rt::test]
async fn init_rejecting_init_arg_is_422_init_failed() {
    let node = InProcessNode::start().await;
    let body = with_field(
        game("g", json!({"action": "get_state"})),
        "init_arg",
        json!({"starting_level": -1}),
    );
    node.client()
        .call(&body)
        .await
        .expect_error(422, "init_failed");
}

#[actix_rt::test]
async fn panicking_actor_is_500_actor_crashed() {
    let node = InProcessNode::start().await;
    node.client()
        .call(&crasher("c", json!({"action": "crash"})))
        .await
        .expect_error(500, "actor_crashed");
}

#[actix_rt::test]
async fn unregistered_capability_is_503_no_capable_node() {
    let node = InProcessNode::start().await;
    node.client()
        .call(&req("Counter", "x", "nobody-has-this", json!({})))
        .await
        .expect_error(503, "no_capable_node");
}

#[actix_rt::test]
async fn cast_to_unregistered_capability_is_503_no_capable_node() {
    // No node can accept it, so it is not accepted.
    let node = InProcessNode::start().await;
    node.client()
        .cast(&req("Counter", "x", "nobody-has-this", json!({})))
        .await
        .expect_error(503, "no_capable_node");
}

#[actix_rt::test]
async fn node_without_capabilities_is_503_no_capable_node() {
    let node = InProcessNode::builder().start().await;
    let c = node.client();
    c.call(&counter("x", json!({})))
        .await
        .expect_error(503, "no_capable_node");
    c.owner("x", "counter")
        .await
        .expect_error(503, "no_capable_node");
}

#[actix_rt::test]
async fn no_reply_within_timeout_ms_is_504_timeout() {
    let node = InProcessNode::start().await;
    let body = with_field(sleeper("s", 3000), "timeout_ms", json!(200));
    let r = node.client().call(&body).await;
    r.expect_error(504, "timeout");
    assert!(r.elapsed < Duration::from_millis(2500), "{r}");
}

// --- 401 unauthorized -------------------------------------------------------------------------------

#[actix_rt::test]
async fn health_needs_no_secret() {
    let node = InProcessNode::builder()
        .capabilities(ALL_CAPABILITIES)
        .secret("s3cret")
        .start()
        .await;
    let r = node.client_without_secret().get("/health").await;
    assert_eq!(r.ok(), &json!({"status": "ok"}), "{r}");
}

#[actix_rt::test]
async fn every_api_route_needs_the_secret() {
    let node = InProcessNode::builder()
        .capabilities(ALL_CAPABILITIES)
        .secret("s3cret")
        .start()
        .await;
    let anonymous = node.client_without_secret();
    let authorized = node.client();

    let cases: [(&str, &str, Option<Value>); 5] = [
        ("POST", "/call", Some(counter("r", json!({})))),
        ("POST", "/cast", Some(counter("r", json!({})))),
        ("GET", "/owner?id=r&capability=counter", None),
        ("GET", "/cluster", None),
        (
            "POST",
            "/capabilities",
            Some(json!({"capabilities": ["extra"]})),
        ),
    ];
    for (method, path, body) in cases {
        let send = |c: &InProcessNode| {
            let c = c.clone();
            let body = body.clone();
            async move {
                match body {
                    Some(b) => c.post_json(path, &b).await,
                    None => c.get(path).await,
                }
            }
        };
        let r = send(&anonymous).await;
        assert_eq!(r.status, 401, "{method} {path} without the secret: {r}");
        r.expect_error(401, "unauthorized");

        let r = send(&authorized).await;
        assert!(
            (200..300).contains(&r.status),
            "{method} {path} with the secret: {r}"
        );
    }
}
