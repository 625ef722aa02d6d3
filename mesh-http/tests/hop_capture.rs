//! What one node sends another over HTTP, captured on the wire: the secret never travels on a
//! hop, nor a fast hash of it; a signature does.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use mesh_actix::provider::RemoteTransport;
use mesh_actix::{Member, NodeId, Request};
use mesh_http::HttpTransport;

#[actix_web::test]
async fn a_forwarded_call_carries_a_signature_and_not_the_secret() {
    let secret = "correct horse battery staple";
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // The "owner": reads one request and answers that it is not the owner.
    let capture = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut received = Vec::new();
        let mut buf = [0; 4096];
        while !request_complete(&received) {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
        let body = r#"{"error":{"code":"owner_unavailable","message":"not mine"}}"#;
        let reply = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
             x-mesh-refusal: not_owner\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(reply.as_bytes());
        String::from_utf8_lossy(&received).into_owned()
    });

    let transport = HttpTransport::new(Some(secret.to_owned())).unwrap();
    let owner = Member::alive(NodeId::new("owner").unwrap(), addr.to_string(), ["c"]).unwrap();
    let request = Request::new("Counter", "counter_1", "c").unwrap();
    let result = transport
        .call(&owner, request, Duration::from_secs(5))
        .await;
    assert!(result.is_err(), "the capture refuses every hop");

    let sent = capture.join().unwrap().to_lowercase();
    assert!(sent.starts_with("post /internal/call"), "{sent}");
    assert!(sent.contains("x-mesh-signature: t="), "{sent}");
    let fast = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(secret.as_bytes()));
    for leak in [secret, fast.as_str(), "x-mesh-secret", "authorization"] {
        assert!(!sent.contains(leak), "{leak:?} in {sent}");
    }
}

/// Whether `received` holds a whole request: its head and `content-length` bytes of body.
fn request_complete(received: &[u8]) -> bool {
    let text = String::from_utf8_lossy(received);
    let Some(head_end) = text.find("\r\n\r\n") else {
        return false;
    };
    let length = text[..head_end]
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    received.len() >= head_end + 4 + length
}
