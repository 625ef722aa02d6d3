//! The embedded example's service (`mesh_examples::embedded`: an actix-web service with a mesh
//! node inside, joined with `mesh_http::join`) in a cluster with a real `mesh-node`: both
//! processes see each other, each serves, through the Rust API and over HTTP, ids the other
//! owns, and the service's unknown paths answer the contract's JSON 404.

use std::time::Duration;

use mesh_tests::{counter, json, start_cluster, Api, MeshNode};

/// How long the two nodes may take to list each other alive and be ready.
const CONVERGE: Duration = Duration::from_secs(30);

/// The first `<prefix>-<n>` that `via` says `owner` owns for `counter`.
async fn id_owned_by(via: &MeshNode, owner: &str, prefix: &str) -> String {
    let client = via.client();
    for i in 0..1000 {
        let id = format!("{prefix}-{i}");
        if client.owner(&id, "counter").await.ok()["node"] == owner {
            return id;
        }
    }
    panic!("no id of 1000 is owned by {owner}");
}

#[tokio::test]
async fn an_embedded_service_forms_a_cluster_with_mesh_node() {
    // mesh-node first; the embedded service joins it (`--seeds` its address).
    let nodes = start_cluster(2, CONVERGE, |i| match i {
        0 => MeshNode::builder().capabilities(["counter"]),
        _ => MeshNode::embedded().capabilities(["counter"]),
    })
    .await;
    let (standalone, embedded) = (&nodes[0], &nodes[1]);

    // An id each owns, called through the other: one hop, served by its owner, whose state
    // every later call reaches whichever node it enters.
    for (owner, entry) in [(standalone, embedded), (embedded, standalone)] {
        let id = id_owned_by(entry, owner.id(), "embedded").await;
        let first = entry.client().call(&counter(&id, json!(null))).await;
        assert_eq!(first.node(), owner.id(), "{first}");
        assert_eq!(first.result(), &json!({"ok": 1}));
        let second = owner.client().call(&counter(&id, json!(null))).await;
        assert_eq!(second.result(), &json!({"ok": 2}));
        assert_eq!(second.pid(), first.pid(), "one activation");
    }

    // The service's own route calls through the Rust API, wherever the id lives.
    let visit = embedded
        .client()
        .post_raw("/visit/alice", Vec::new(), None)
        .await;
    assert_eq!(visit.status, 200, "{visit}");
    assert!(visit.text.starts_with("alice visited 1 times"), "{visit}");

    // Unknown paths and wrong methods get the contract's error shape, as on mesh-node.
    embedded
        .client()
        .get("/no-such-route")
        .await
        .expect_error(404, "not_found");
    embedded
        .client()
        .get("/call")
        .await
        .expect_error(405, "method_not_allowed");
}
