//! The `mesh-node` process itself: settings from environment variables, signals.

use std::time::Duration;

use mesh_tests::{counter, json, MeshNode};

/// How long a node may take to exit after SIGTERM/SIGINT.
const EXIT_WITHIN: Duration = Duration::from_secs(10);

#[tokio::test]
async fn settings_can_come_from_environment_variables() {
    let node = MeshNode::builder()
        .capabilities(["counter", "game"])
        .shards(8)
        .secret("env-secret")
        .via_env()
        .start()
        .await;
    let c = node.client();

    let cluster = c.cluster().await;
    assert_eq!(cluster["node"], json!(node.id()), "MESH_NODE_ID: {cluster}");
    let me = cluster["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["node"] == json!(node.id())))
        .unwrap_or_else(|| panic!("this node is not among the members: {cluster}"));
    assert_eq!(
        me["addr"],
        json!(node.addr().to_string()),
        "MESH_LISTEN: {cluster}"
    );
    let mut caps: Vec<_> = me["capabilities"]
        .as_array()
        .unwrap_or_else(|| panic!("{cluster}"))
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    caps.sort();
    assert_eq!(caps, ["counter", "game"], "MESH_CAPABILITIES: {cluster}");

    for i in 0..32 {
        let r = c.owner(&format!("e-{i}"), "counter").await;
        assert!(
            r.ok()["shard"].as_u64().is_some_and(|s| s < 8),
            "MESH_SHARDS: {r}"
        );
    }

    node.client_without_secret()
        .call(&counter("e", json!({})))
        .await
        .expect_error(401, "unauthorized");
    assert_eq!(c.count("e").await, 1, "MESH_SECRET");
}

/// Waits for `node` to exit after `signal` and asserts status 0; panics with the node's log if it
/// is still running after [`EXIT_WITHIN`] or exits otherwise.
async fn assert_exits_with_status_zero(node: &mut MeshNode, signal: &str) {
    let status = node.wait_exit(EXIT_WITHIN).await;
    let status = status.unwrap_or_else(|| {
        panic!(
            "still running {EXIT_WITHIN:?} after {signal}; log:\n{}",
            node.log()
        )
    });
    assert!(
        status.success(),
        "exit status after {signal}: {status}; log:\n{}",
        node.log()
    );
}

#[tokio::test]
async fn sigterm_exits_with_status_zero() {
    let mut node = MeshNode::start().await;
    {
        let c = node.client();
        assert_eq!(c.count("before-term").await, 1);
    } // the client and its keep-alive connections are gone

    node.sigterm();
    assert_exits_with_status_zero(&mut node, "SIGTERM").await;
}

#[tokio::test]
async fn sigterm_exits_while_a_client_keeps_a_connection_open() {
    let mut node = MeshNode::start().await;
    let c = node.client();
    assert_eq!(c.count("held").await, 1); // leaves an idle keep-alive connection in c's pool

    node.sigterm();
    assert_exits_with_status_zero(&mut node, "SIGTERM with an idle client connection").await;
    drop(c);
}

#[tokio::test]
async fn sigint_exits_with_status_zero() {
    let mut node = MeshNode::start().await;
    node.client().get("/health").await.ok();

    node.sigint();
    assert_exits_with_status_zero(&mut node, "SIGINT").await;
}
