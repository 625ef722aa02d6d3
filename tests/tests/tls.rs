//! Real `mesh-node` processes serving TLS (`--tls-cert`, `--tls-key`, `--tls-ca`) with
//! certificates each test generates: HTTPS only on the listen address, hops over HTTPS between
//! the nodes of a cluster, and a clear error and a failed start for files that cannot be used.

use std::time::Duration;

use mesh_tests::{
    counter, json, metric_value, metrics, Api, Certs, Client, MeshNode, NodeTls, ALL_CAPABILITIES,
};

/// How long a cluster may take to agree on its members.
const CONVERGE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_node_serving_tls_answers_https_only() {
    let certs = Certs::new();
    let tls = certs.self_signed("node");
    let node = MeshNode::standard().tls(&tls).start().await;
    assert!(
        node.log()
            .contains(&format!("listening on https://{}", node.addr())),
        "{}",
        node.log()
    );

    let c = node.client();
    assert_eq!(c.get("/health").await.ok(), &json!({"status": "ok"}));
    for count in 1..=2 {
        let r = c.call(&counter("over-tls", json!({}))).await;
        assert_eq!(r.result(), &json!({"ok": count}), "{r}");
    }

    // TLS connections count against the connection bound like plain ones (the one asking is
    // open).
    let text = c.get("/metrics").await;
    let open = metrics(&text.text)
        .iter()
        .find(|s| s.metric == "mesh_connections")
        .and_then(metric_value);
    assert!(open.is_some_and(|n| n >= 1.0), "{}", text.text);

    // Plain HTTP on the same address gets no HTTP answer: the TLS acceptor closes it.
    let plain = Client::new(format!("http://{}", node.addr())).with_timeout(Duration::from_secs(5));
    let r = plain.try_get("/health").await;
    assert!(r.is_err(), "plain HTTP was answered: {r:?}");
    // Nor does a client that does not trust the certificate get one.
    let stranger = Client::new(node.base_url()).with_timeout(Duration::from_secs(5));
    let r = stranger.try_get("/health").await;
    assert!(r.is_err(), "an untrusted certificate was accepted: {r:?}");
}

/// Calls entering through every node reach ids owned by another one, over HTTPS hops: the
/// owner answers, and a later call through the owner reaches the same activation.
async fn calls_are_forwarded_between(nodes: &[MeshNode]) {
    for (i, entry) in nodes.iter().enumerate() {
        let c = entry.client();
        let mut elsewhere = None;
        for n in 0..1000 {
            let id = format!("tls-{i}-{n}");
            let owner = c.owner(&id, "counter").await.ok()["node"].clone();
            if owner != json!(entry.id()) {
                elsewhere = Some((id, owner));
                break;
            }
        }
        let (id, owner) = elsewhere.expect("an id owned by another node");
        let r = c.call(&counter(&id, json!({}))).await;
        assert_eq!(r.result(), &json!({"ok": 1}), "via {}: {r}", entry.id());
        assert_eq!(json!(r.node()), owner, "via {}: {r}", entry.id());
        let owner = nodes.iter().find(|n| json!(n.id()) == owner).unwrap();
        let again = owner.client().call(&counter(&id, json!({}))).await;
        assert_eq!(again.result(), &json!({"ok": 2}), "{again}");
        assert_eq!(again.pid(), r.pid(), "one activation: {again}");
    }
}

#[tokio::test]
async fn a_cluster_sharing_one_self_signed_certificate_forwards_calls_over_https() {
    let certs = Certs::new();
    let tls = certs.self_signed("cluster");
    // With a secret: hops are signed and encrypted.
    let nodes = mesh_tests::start_cluster(2, CONVERGE, |_| {
        MeshNode::builder()
            .capabilities(["counter"])
            .secret("s3cret")
            .tls(&tls)
    })
    .await;
    calls_are_forwarded_between(&nodes).await;
}

#[tokio::test]
async fn a_cluster_with_certificates_from_its_ca_forwards_calls_over_https() {
    let certs = Certs::new();
    let ca = certs.ca("cluster");
    let files: Vec<NodeTls> = (0..3).map(|i| ca.issue(&format!("node-{i}"))).collect();
    let nodes = mesh_tests::start_cluster(3, CONVERGE, |i| {
        let node = MeshNode::builder()
            .capabilities(ALL_CAPABILITIES)
            .tls(&files[i]);
        // MESH_TLS_CERT, MESH_TLS_KEY and MESH_TLS_CA too.
        if i == 1 {
            node.via_env()
        } else {
            node
        }
    })
    .await;
    calls_are_forwarded_between(&nodes).await;
}

/// Starts a node with `args`, expects it to fail to start with exit status 1 and `message`
/// in its log.
async fn refused_start(args: &[&str], message: &str) {
    let mut node = MeshNode::standard();
    for arg in args {
        node = node.arg(*arg);
    }
    let error = match node.try_start().await {
        Ok(node) => panic!("started with {args:?}; log:\n{}", node.log()),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        error.contains("exited with exit status: 1 ")
            || error.contains("exited with exit status: 2 "),
        "{args:?}: {error}"
    );
    assert!(
        error.contains(message),
        "{args:?}: no {message:?} in {error}"
    );
}

#[tokio::test]
async fn unusable_tls_files_fail_the_start_with_a_clear_error() {
    let certs = Certs::new();
    let good = certs.self_signed("good");
    let other = certs.self_signed("other");
    let (cert, key) = (good.cert.to_str().unwrap(), good.key.to_str().unwrap());
    let missing = certs.path("missing.pem");
    let missing = missing.to_str().unwrap();
    let junk = certs.write("junk.pem", "not a certificate\n");
    let junk = junk.to_str().unwrap();

    refused_start(&["--tls-cert", cert], "--tls-key").await;
    refused_start(&["--tls-key", key], "--tls-cert").await;
    refused_start(
        &["--tls-cert", missing, "--tls-key", key],
        &format!("cannot read the certificate {missing}"),
    )
    .await;
    refused_start(
        &["--tls-cert", cert, "--tls-key", missing],
        &format!("cannot read the private key {missing}"),
    )
    .await;
    refused_start(
        &["--tls-cert", junk, "--tls-key", key],
        "no PEM certificate in it",
    )
    .await;
    refused_start(
        &["--tls-cert", cert, "--tls-key", junk],
        "no PEM private key in it",
    )
    .await;
    refused_start(
        &["--tls-cert", cert, "--tls-key", other.key.to_str().unwrap()],
        "unusable with the certificate",
    )
    .await;
    refused_start(
        &["--tls-cert", cert, "--tls-key", key, "--tls-ca", junk],
        &format!("the CA certificate {junk}: no PEM certificate in it"),
    )
    .await;
}
