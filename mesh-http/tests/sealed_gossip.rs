//! Sealed gossip between served nodes (`mesh_http::serve`), seen from the network: what a node
//! sends reveals neither the secret, nor a fast hash of it, nor the cluster's names; forged,
//! tampered, stale and replayed datagrams are dropped and counted in `/metrics`; a node with
//! another secret or none never joins; capability sets up to the bound still propagate.

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant, SystemTime};

use mesh_actix::{Mesh, NodeId, ShardCount};
use mesh_http::{ClusterKey, GossipOptions, HttpOptions, ServeOptions, ServingNode};
use tokio::net::UdpSocket;

const SECRET: &str = "correct horse battery staple";

/// A served node on a free port of 127.0.0.1 with these capabilities, joining `seeds`.
async fn node(
    id: &str,
    secret: Option<&str>,
    seeds: &[String],
    capabilities: &[String],
) -> (ServingNode, Mesh, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let builder =
        Mesh::builder(NodeId::new(id).unwrap(), addr.to_string()).capabilities(capabilities);
    let options = ServeOptions {
        seeds: seeds.to_vec(),
        http: HttpOptions {
            secret: secret.map(str::to_owned),
            ..HttpOptions::default()
        },
        ..ServeOptions::default()
    };
    let serving = mesh_http::serve(builder, listener, options).await.unwrap();
    let mesh = serving.mesh().clone();
    (serving, mesh, addr)
}

/// `mesh_gossip_datagrams_refused_total{reason}` of the node at `addr`.
async fn refused(addr: SocketAddr, reason: &str) -> u64 {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = format!("mesh_gossip_datagrams_refused_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&line))
        .unwrap_or_else(|| panic!("no {line} in\n{text}"))
        .parse()
        .unwrap()
}

/// Polls `check` every 20 ms until it holds; panics with `what` after `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next datagram on `socket`, within 10 s.
async fn next_datagram(socket: &UdpSocket) -> Vec<u8> {
    let mut buf = vec![0; 65_535];
    let (len, _) = tokio::time::timeout(Duration::from_secs(10), socket.recv_from(&mut buf))
        .await
        .expect("a datagram within 10 s")
        .unwrap();
    buf.truncate(len);
    buf
}

/// A chitchat Syn (protocol V0) with an empty digest: what a node that knows nobody sends.
fn empty_syn(cluster_id: &str) -> Vec<u8> {
    let mut syn = Vec::new();
    syn.extend_from_slice(&45_139u16.to_le_bytes()); // chitchat's magic number
    syn.extend_from_slice(&[0, 0]); // protocol V0, message Syn
    syn.extend_from_slice(&0u16.to_le_bytes()); // no node in the digest
    syn.extend_from_slice(&(cluster_id.len() as u16).to_le_bytes());
    syn.extend_from_slice(cluster_id.as_bytes());
    syn
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[actix_web::test]
async fn gossip_reveals_nothing_and_refuses_forged_tampered_stale_and_replayed_datagrams() {
    // A "seed" that only listens: the node gossips its Syn to it.
    let capture = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let seed = capture.local_addr().unwrap().to_string();
    let names = ["a-very-secret-capability".to_owned()];
    let (serving, _mesh, addr) = node("node-alpha-7", Some(SECRET), &[seed], &names).await;

    let syn = next_datagram(&capture).await;
    // A Syn with an empty digest, sealed with the key: the node answers with all it knows of
    // itself (node id, address, capabilities), sealed.
    let cluster_id = GossipOptions::new(addr, Vec::new(), ShardCount::default(), Some(SECRET));
    let ask =
        ClusterKey::of(SECRET).seal_gossip(&empty_syn(&cluster_id.cluster_id), SystemTime::now());
    capture.send_to(&ask[0], addr).await.unwrap();
    let mut reply = next_datagram(&capture).await;
    while reply.len() <= syn.len() {
        // More Syns to the seed may come first: the reply carries the node's state.
        reply = next_datagram(&capture).await;
    }

    let fast = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(SECRET.as_bytes()));
    let tag = ClusterKey::of(SECRET).tag().to_owned();
    let listen = addr.to_string();
    let leaks = [
        SECRET,
        fast.as_str(),
        tag.as_str(),
        "mesh-4096",
        "node-alpha-7",
        "a-very-secret-capability",
        listen.as_str(),
    ];
    for sent in [&syn, &reply] {
        for leak in leaks {
            assert!(!contains(sent, leak.as_bytes()), "{leak:?} in a datagram");
        }
    }

    // Replayed: the sealed Syn again.
    capture.send_to(&ask[0], addr).await.unwrap();
    // Tampered: one bit of the reply flipped.
    let mut tampered = reply.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    capture.send_to(&tampered, addr).await.unwrap();
    // Forged: sealed with another secret, and plain bytes.
    let other = ClusterKey::of("a guess").seal_gossip(b"anything", SystemTime::now());
    capture.send_to(&other[0], addr).await.unwrap();
    capture.send_to(b"\x00\x00plain", addr).await.unwrap();
    // Stale: sealed with the right key a minute ago.
    let old = SystemTime::now() - Duration::from_secs(60);
    let stale = ClusterKey::of(SECRET).seal_gossip(b"anything", old);
    capture.send_to(&stale[0], addr).await.unwrap();

    for (reason, count) in [("replayed", 1), ("forged", 3), ("stale", 1)] {
        eventually(Duration::from_secs(5), reason, || async {
            refused(addr, reason).await >= count
        })
        .await;
    }
    assert_eq!(refused(addr, "busy").await, 0);
    serving.shutdown().await.unwrap();
}

#[actix_web::test]
async fn nodes_with_another_secret_or_none_never_join() {
    let caps = ["counter".to_owned()];
    let (a, mesh_a, addr_a) = node("sealed-a", Some(SECRET), &[], &caps).await;
    let seeds = [addr_a.to_string()];
    let members = |mesh: &Mesh| -> Vec<String> {
        let routing = mesh.routing();
        routing
            .members()
            .iter()
            .map(|m| m.node.as_str().to_owned())
            .collect()
    };

    // One at a time, so that each one's datagrams are seen refused.
    let mut outsiders = Vec::new();
    for (id, secret) in [("plain-b", None), ("guess-c", Some("a guess"))] {
        let before = refused(addr_a, "forged").await;
        let (serving, mesh, _) = node(id, secret, &seeds, &caps).await;
        eventually(
            Duration::from_secs(10),
            &format!("{id}'s gossip reaches sealed-a and is refused"),
            || async { refused(addr_a, "forged").await > before },
        )
        .await;
        outsiders.push((serving, mesh, id));
    }
    // A node with the secret joins, so the outsiders had time to as well.
    let (d, mesh_d, _) = node("sealed-d", Some(SECRET), &seeds, &caps).await;
    eventually(Duration::from_secs(10), "sealed-d joins", || async {
        members(&mesh_a).contains(&"sealed-d".to_owned())
            && members(&mesh_d).contains(&"sealed-a".to_owned())
    })
    .await;
    for (serving, mesh, id) in outsiders {
        assert!(!members(&mesh_a).contains(&id.to_owned()), "{id} joined");
        assert!(
            !members(&mesh).contains(&"sealed-a".to_owned()),
            "{id} joined"
        );
        serving.shutdown().await.unwrap();
    }
    d.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
}

/// Capability sets near the bound, on three nodes, reach a node that joins: sealing leaves
/// chitchat room for them (the sealing unit tests cover datagrams that need two fragments).
#[actix_web::test]
async fn capability_sets_up_to_the_bound_propagate_sealed() {
    let big = |node: usize| -> Vec<String> {
        // 120 names of 255 bytes: about 31 KB as gossiped, under the 32 KiB bound; random
        // printable characters, so that chitchat's compression cannot shrink them much.
        let mut x = 0x9e37_79b9_7f4a_7c15_u64 ^ node as u64;
        (0..120)
            .map(|i| {
                let noise: String = (0..249)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        // '#'..='~' without '\\', which JSON would escape.
                        let c = b'#' + (x % 91) as u8;
                        char::from(if c == b'\\' { b'!' } else { c })
                    })
                    .collect();
                format!("{node}-{i:03}-{noise}")
            })
            .collect()
    };
    let (a, _, addr_a) = node("big-a", Some(SECRET), &[], &big(0)).await;
    let seeds = [addr_a.to_string()];
    let (b, _, _) = node("big-b", Some(SECRET), &seeds, &big(1)).await;
    let (c, _, _) = node("big-c", Some(SECRET), &seeds, &big(2)).await;
    let (d, mesh_d, _) = node("big-d", Some(SECRET), &seeds, &[]).await;
    eventually(
        Duration::from_secs(20),
        "big-d learns every capability of big-a, big-b and big-c",
        || async {
            let routing = mesh_d.routing();
            let members = routing.members();
            (0..3).all(|n| {
                let id = format!("big-{}", ["a", "b", "c"][n]);
                members.iter().any(|m| {
                    m.node.as_str() == id
                        && m.capabilities.len() == 120
                        && big(n).iter().all(|c| m.can_own(c))
                })
            })
        },
    )
    .await;
    for serving in [d, c, b, a] {
        serving.shutdown().await.unwrap();
    }
}
