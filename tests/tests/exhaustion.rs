//! A real `mesh-node` under a connection-exhaustion attack: started with a low file-descriptor
//! limit, flooded with more stalled connections (half a request head, then nothing) than it
//! has descriptors, it still answers `GET /health` on a fresh connection, because each
//! connection beyond its bound closes the oldest. How fast it answers is measured and printed,
//! not asserted tightly: the machine is shared.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_tests::MeshNode;

/// Soft and hard `RLIMIT_NOFILE` of the node under attack.
const FD_LIMIT: u64 = 256;
/// Stalled connections held open at once by the attacker: more than the node's descriptors.
const STALLED: usize = 400;
/// How long one health check may take, retries included (generous: a shared CI machine).
const HEALTH_DEADLINE: Duration = Duration::from_secs(30);

/// One `GET /health` on a fresh connection: `true` if it answered 200.
fn health_once(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    if stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    reply.starts_with(b"HTTP/1.1 200")
}

/// Time until a fresh connection gets a 200 from `/health`, retrying within the deadline.
fn time_health(addr: SocketAddr) -> (Duration, u32) {
    let started = Instant::now();
    let mut attempts = 1;
    while !health_once(addr) {
        assert!(
            started.elapsed() < HEALTH_DEADLINE,
            "/health did not answer within {HEALTH_DEADLINE:?} ({attempts} attempts)"
        );
        attempts += 1;
    }
    (started.elapsed(), attempts)
}

/// Opens stalled connections until `stop`, keeping the newest [`STALLED`] open (the node closes
/// older ones; the attacker opens more to take their place).
fn flood(addr: SocketAddr, stop: Arc<AtomicBool>, opened: Arc<AtomicUsize>) {
    let mut held = std::collections::VecDeque::new();
    while !stop.load(Ordering::Relaxed) {
        if let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            let _ = stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n");
            held.push_back(stream);
            opened.fetch_add(1, Ordering::Relaxed);
            if held.len() > STALLED {
                held.pop_front();
            }
        }
    }
}

#[tokio::test]
async fn health_answers_with_more_stalled_connections_than_file_descriptors() {
    let mut node = MeshNode::standard().fd_limit(FD_LIMIT).start().await;
    let addr = node.addr();
    let max = node.metric("mesh_connections_max").await;
    assert!(max < FD_LIMIT as f64 / 2.0, "bound {max} leaves no reserve");
    // By default one client IP (the attacker's, and the health checks', 127.0.0.1) holds at
    // most half of the bound.
    let per_ip = node.metric("mesh_connections_per_ip_max").await;
    assert_eq!(per_ip, (max / 2.0).ceil(), "the default per-IP bound");

    let (stop, opened) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let attacker = {
        let (stop, opened) = (stop.clone(), opened.clone());
        std::thread::spawn(move || flood(addr, stop, opened))
    };
    // Under attack once the attacker holds more connections than the node has descriptors.
    let flooded = Instant::now();
    while opened.load(Ordering::Relaxed) < STALLED {
        assert!(
            flooded.elapsed() < HEALTH_DEADLINE,
            "the attacker could open only {} connections",
            opened.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut times =
        tokio::task::spawn_blocking(move || (0..20).map(|_| time_health(addr)).collect::<Vec<_>>())
            .await
            .unwrap();
    stop.store(true, Ordering::Relaxed);
    attacker.join().unwrap();

    times.sort();
    let retried: u32 = times.iter().map(|(_, attempts)| attempts - 1).sum();
    eprintln!(
        "/health under a flood of {} stalled connections (fd limit {FD_LIMIT}, bound {max}): \
         median {:?}, max {:?}, {retried} retries in 20 checks",
        opened.load(Ordering::Relaxed),
        times[times.len() / 2].0,
        times[times.len() - 1].0,
    );
    assert!(node.is_running(), "the node died under the flood");
    assert!(node.metric("mesh_connections_shed_total").await > 0.0);
    assert!(node.metric("mesh_connections").await <= max);
    assert!(
        !node.log().contains("Too many open files"),
        "the node ran out of descriptors:\n{}",
        node.log()
    );
}
