//! A signed hop replayed on another connection of a served node (`mesh_http::serve`) is refused,
//! whichever worker thread that connection lands on: the workers share one record of nonces.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::num::NonZeroUsize;
use std::time::Duration;

use mesh_actix::provider::RenewRequest;
use mesh_actix::{Member, Mesh, NodeId};
use mesh_http::{ClusterKey, HttpOptions, ServeOptions, SIGNATURE_HEADER};

/// Posts `body` to `/internal/lease` with `signature` on a connection of its own; the status.
fn post(addr: SocketAddr, signature: &str, body: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let head = format!(
        "POST /internal/lease HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: application/json\r\n{SIGNATURE_HEADER}: {signature}\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply.lines().next().unwrap_or_default().to_owned()
}

#[actix_web::test]
async fn a_hop_replayed_to_another_worker_is_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let builder = Mesh::builder(NodeId::new("replayed").unwrap(), addr.to_string());
    let options = ServeOptions {
        http: HttpOptions {
            secret: Some("s3cret".into()),
            ..HttpOptions::default()
        },
        workers: NonZeroUsize::new(2),
        ..ServeOptions::default()
    };
    let node = mesh_http::serve(builder, listener, options).await.unwrap();
    let renewal = RenewRequest {
        from: Member::alive(NodeId::new("peer").unwrap(), "127.0.0.1:1", ["c"]).unwrap(),
        round: 1,
        established: false,
    };
    let body = serde_json::to_vec(&renewal).unwrap();
    let signature = ClusterKey::of("s3cret").sign("POST", "/internal/lease", &body);
    let statuses = tokio::task::spawn_blocking(move || {
        // Connections go to the workers in turn: four cover both of them.
        (0..4)
            .map(|_| post(addr, &signature, &body))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert!(statuses[0].starts_with("HTTP/1.1 200"), "{statuses:?}");
    for status in &statuses[1..] {
        assert!(status.starts_with("HTTP/1.1 401"), "{statuses:?}");
    }
    node.shutdown().await.unwrap();
}
