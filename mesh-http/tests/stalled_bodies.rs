//! Raw-socket tests of the connection limits of a served node (`mesh_http::serve`): a body
//! that stalls is answered 408 and its connection closed, within the body timeout; an idle
//! keep-alive connection is closed; a request head trickled a byte at a time is cut off after
//! the header timeout (10 s); none holds the node's other connections up.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use mesh_actix::{Mesh, NodeId};
use mesh_http::{HttpOptions, ServeOptions};

/// A node on a free port of 127.0.0.1 with a short body timeout and keep-alive.
async fn node() -> (mesh_http::ServingNode, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let builder = Mesh::builder(NodeId::new("limits").unwrap(), addr.to_string());
    let options = ServeOptions {
        http: HttpOptions {
            body_timeout: Duration::from_millis(300),
            ..HttpOptions::default()
        },
        keep_alive: Some(Duration::from_millis(500)),
        ..ServeOptions::default()
    };
    (
        mesh_http::serve(builder, listener, options).await.unwrap(),
        addr,
    )
}

/// Everything the server sends until it closes the connection (or `within` passes, which
/// fails the test: a connection held open is what these tests exist to catch).
fn read_to_close(mut stream: TcpStream, within: Duration) -> String {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut received = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return String::from_utf8_lossy(&received).into_owned(),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) => panic!(
                "the connection stayed open ({e}); received so far: {:?}",
                String::from_utf8_lossy(&received)
            ),
        }
    }
}

fn health_answers(addr: SocketAddr) -> bool {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    read_to_close(stream, Duration::from_secs(10)).starts_with("HTTP/1.1 200")
}

#[actix_web::test]
async fn a_stalled_body_gets_408_and_its_connection_is_closed() {
    let (node, addr) = node().await;
    let stalled = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        // Content-Length 1000, and 10 bytes of it.
        stream
            .write_all(
                b"POST /call HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                  Content-Length: 1000\r\n\r\n{\"module\":",
            )
            .unwrap();
        let reply = read_to_close(stream, Duration::from_secs(10));
        (reply, health_answers(addr))
    });
    let (reply, healthy) = stalled.await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("\"code\":\"request_timeout\""), "{reply}");
    assert!(healthy, "the node answers on a fresh connection");
    node.shutdown().await.unwrap();
}

#[actix_web::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let (node, addr) = node().await;
    let idle = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        // One answer, then nothing more is asked: the server closes the connection.
        read_to_close(stream, Duration::from_secs(10))
    });
    let reply = idle.await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    node.shutdown().await.unwrap();
}

#[actix_web::test]
async fn trickled_headers_do_not_hold_their_connection() {
    let (node, addr) = node().await;
    let trickled = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .write_all(b"GET /health HTTP/1.1\r\nX-Trickle: ")
            .unwrap();
        // One byte of a never-ending header value every 100 ms: the server must give up on the
        // request head after its header timeout (10 s) however steadily bytes arrive. A
        // write fails, or a read sees the close, once it has.
        let started = std::time::Instant::now();
        let (mut closed, mut received) = (false, Vec::new());
        while started.elapsed() < Duration::from_secs(30) {
            if stream.write_all(b"a").is_err() {
                closed = true;
                break;
            }
            stream
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let mut buf = [0; 512];
            match stream.read(&mut buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        (closed, started.elapsed(), health_answers(addr))
    });
    let (closed, after, healthy) = trickled.await.unwrap();
    assert!(
        closed,
        "a trickling request head kept its connection for {after:?}"
    );
    assert!(healthy, "the node answers on a fresh connection");
    node.shutdown().await.unwrap();
}
