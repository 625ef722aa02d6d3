//! An activation placed on an actix-web worker (`Placement::CallerThread`, the default) ends
//! when that worker shuts down while its `Mesh` lives on (mesh embedded in a service whose
//! HTTP server stops), and the identity activates afresh on its next call instead of hanging
//! on a dead mailbox.

use std::net::TcpListener;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use actix_web::{App, HttpServer};
use mesh_actix::{MeshBuilder, MeshConfig, NodeId, Placement, Request};
use serde_json::{json, Value};

/// A hang guard for polls, not a speed bound.
const EVENTUALLY: Duration = Duration::from_secs(20);

async fn eventually(what: &str, done: impl Fn() -> bool) {
    let give_up = Instant::now() + EVENTUALLY;
    while !done() {
        assert!(Instant::now() < give_up, "{what}: still not the case");
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
}

#[actix_rt::test]
async fn activations_on_a_stopped_http_worker_are_replaced_on_the_next_call() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = MeshConfig::new(NodeId::new("w1").unwrap(), addr.to_string());
    assert_eq!(config.placement, Placement::CallerThread);
    config.arbiters = NonZeroUsize::MIN;
    let mesh = mesh_examples::register_examples(MeshBuilder::from_config(config))
        .start()
        .unwrap();
    mesh.register_capabilities(["counter"]).await.unwrap();
    let server = HttpServer::new({
        let mesh = mesh.clone();
        move || App::new().configure(mesh_http::configure(mesh.clone()))
    })
    .workers(2)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    let server_handle = server.handle();
    let serving = actix_rt::spawn(server);
    eventually("the node serves", || mesh.readiness().is_ok()).await;

    let http = reqwest::Client::new();
    let body = json!({"module": "Counter", "id": "on-a-worker", "capability": "counter"});
    let first: Value = http
        .post(format!("http://{addr}/call"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first["result"], json!({"ok": 1}), "{first}");
    assert_eq!(mesh.activations(), 1);

    // Only the HTTP server stops (its workers' arbiters with it); the Mesh lives on.
    server_handle.stop(true).await;
    serving.await.unwrap().unwrap();
    eventually("the activation ended with its worker", || {
        mesh.activations() == 0
    })
    .await;

    let request = Request::new("Counter", "on-a-worker", "counter").unwrap();
    let again = mesh.call(request).await.unwrap();
    assert_eq!(again.result, json!({"ok": 1}), "a fresh activation");
    assert_ne!(Some(again.pid.as_str()), first["pid"].as_str());
}
