//! The `mesh-node` process itself: settings from flags and environment variables, the address it
//! reports, shards that agree across processes, signals. (The HTTP API's shapes and errors, and the
//! example actors, are tested in process: `http_api.rs`, `http_errors.rs`, `actors.rs`.)

use std::collections::BTreeSet;
use std::time::Duration;

use mesh_tests::{counter, json, strings, Api, MeshNode, ALL_CAPABILITIES};

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

// --- Flags, addresses, shards ----------------------------------------------------------------

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn secret_is_required_when_configured() {
    let node = MeshNode::standard().secret("s3cret").start().await;

    let anonymous = node.client_without_secret();
    anonymous
        .call(&counter("guarded", json!({})))
        .await
        .expect_error(401, "unauthorized");

    let wrong = node.client_without_secret().with_secret("wrong");
    wrong
        .call(&counter("guarded", json!({})))
        .await
        .expect_error(401, "unauthorized");
    let wrong_header = node
        .client_without_secret()
        .with_header("x-mesh-secret", "S3CRET");
    wrong_header
        .call(&counter("guarded", json!({})))
        .await
        .expect_error(401, "unauthorized");

    // Nothing reached the actor: the first authorized call counts 1.
    let bearer = node
        .client_without_secret()
        .with_header("authorization", "Bearer s3cret");
    let r = bearer.call(&counter("guarded", json!({}))).await;
    assert_eq!(r.result(), &json!({"ok": 1}), "{r}");

    let header = node
        .client_without_secret()
        .with_header("x-mesh-secret", "s3cret");
    let r = header.call(&counter("guarded", json!({}))).await;
    assert_eq!(r.result(), &json!({"ok": 2}), "{r}");
}

#[tokio::test]
async fn shards_flag_bounds_the_shard_number() {
    let node = MeshNode::standard().shards(16).start().await;
    let c = node.client();
    let mut seen = BTreeSet::new();
    for i in 0..64 {
        let r = c.owner(&format!("id-{i}"), "counter").await;
        let shard = r.ok()["shard"].as_u64().unwrap_or_else(|| panic!("{r}"));
        assert!(shard < 16, "--shards 16: {r}");
        seen.insert(shard);
    }
    assert!(
        seen.len() >= 4,
        "64 ids should spread over several of 16 shards, got {seen:?}"
    );
}

#[tokio::test]
async fn shard_of_an_id_is_the_same_in_every_process() {
    let (a, b) = tokio::join!(MeshNode::start(), MeshNode::start());
    let (ca, cb) = (a.client(), b.client());
    let ids = (0..20)
        .map(|i| format!("stable-{i}"))
        .chain(["with space".to_string(), "ünïcødé".to_string()]);
    for id in ids {
        let sa = ca.owner(&id, "counter").await.ok()["shard"].clone();
        let sb = cb.owner(&id, "counter").await.ok()["shard"].clone();
        assert!(sa.is_u64(), "{sa}");
        assert_eq!(sa, sb, "shard of {id} differs between two processes");
    }
}

#[tokio::test]
async fn cluster_describes_this_node() {
    let node = MeshNode::start().await;
    let cluster = node.client().cluster().await;

    assert_eq!(cluster["node"], json!(node.id()), "{cluster}");
    assert!(cluster["activations"].is_u64(), "{cluster}");
    let members = cluster["members"]
        .as_array()
        .unwrap_or_else(|| panic!("members is not an array: {cluster}"));
    let me = members
        .iter()
        .find(|m| m["node"] == json!(node.id()))
        .unwrap_or_else(|| panic!("this node is not among the members: {cluster}"));
    assert_eq!(me["addr"], json!(node.addr().to_string()), "{cluster}");
    assert_eq!(me["status"], json!("alive"), "{cluster}");
    assert_eq!(
        strings(&me["capabilities"]),
        set(&ALL_CAPABILITIES),
        "{cluster}"
    );
}

#[tokio::test]
async fn the_secret_can_come_from_a_file_and_never_shows_on_the_command_line() {
    let path = std::env::temp_dir().join(mesh_tests::unique("mesh-secret"));
    std::fs::write(&path, "from-a-file\n").unwrap();
    let node = MeshNode::standard()
        .arg("--secret-file")
        .arg(path.display().to_string())
        .start()
        .await;
    let cmdline = std::fs::read_to_string(format!("/proc/{}/cmdline", node.pid())).unwrap();
    assert!(!cmdline.contains("from-a-file"), "{cmdline:?}");

    node.client_without_secret()
        .call(&counter("filed", json!({})))
        .await
        .expect_error(401, "unauthorized");
    let r = node
        .client_without_secret()
        .with_secret("from-a-file")
        .call(&counter("filed", json!({})))
        .await;
    assert_eq!(r.result(), &json!({"ok": 1}), "{r}");
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn a_node_with_its_activations_on_the_pool_serves_calls() {
    let node = MeshNode::standard()
        .arg("--placement")
        .arg("pool")
        .arg("--workers")
        .arg("2")
        .start()
        .await;
    let c = node.client();
    // Concurrent first calls from several connections, then more calls: each id keeps one
    // activation (one pid) and its state, wherever the pool runs it.
    let ids: Vec<String> = (0..16).map(|i| format!("pooled-{i}")).collect();
    let first = futures_util::future::join_all(ids.iter().map(|id| {
        let c = node.client();
        async move { c.call(&counter(id, json!({}))).await.pid() }
    }))
    .await;
    for (id, pid) in ids.iter().zip(&first) {
        let r = c.call(&counter(id, json!({}))).await;
        assert_eq!(r.result(), &json!({"ok": 2}), "{id}: {r}");
        assert_eq!(&r.pid(), pid, "{id}: one activation");
    }
}

#[test]
fn an_unknown_placement_is_refused_at_start() {
    let out = std::process::Command::new(mesh_tests::node_bin())
        .args(["--listen", "127.0.0.1:0", "--placement", "nowhere"])
        .output()
        .expect("mesh-node runs");
    assert!(!out.status.success(), "started with --placement nowhere");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--placement")
            && stderr.contains("caller-thread")
            && stderr.contains("pool"),
        "the error names the flag and its values: {stderr}"
    );
}
