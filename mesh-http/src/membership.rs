//! Cluster membership over gossip: chitchat (scuttlebutt with a phi-accrual failure detector)
//! on UDP, on the same port number as the node's HTTP listener.
//!
//! Each node publishes its descriptor (HTTP address, capabilities, incarnation, version,
//! leaving) as gossip keys. Whenever the nodes chitchat knows or their keys change, the whole
//! member list goes to the node's `ShardRouter` (`MembershipFeed::update_members`), which learns new
//! members and descriptors from it. Gossip only *discovers*: chitchat's own failure detector
//! decides nothing here; who may serve is decided by the lease protocol
//! ([`Hops::renew_lease`](mesh_actix::provider::Hops::renew_lease)), whose messages carry descriptors too. Whenever this
//! node's own descriptor changes, its keys follow.
//!
//! Seeds are `host:port`; a host may be a DNS name that stands for many nodes (a Kubernetes
//! headless Service). This module resolves them itself, rather than letting chitchat do it: each
//! lookup is bounded ([`SEED_LOOKUP_TIMEOUT`]), chitchat is handed every address of every name,
//! and the names are resolved again every [`GossipOptions::seed_refresh`] (chitchat's own
//! re-resolution waits a minute, unbounded), so that nodes which appear behind a name later
//! are found, and a cluster whose nodes all started before they could see each other forms.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chitchat::transport::UdpTransport;
use chitchat::{
    spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, NodeState,
};
use futures_util::future::join_all;
use mesh_actix::provider::MembershipFeed;
use mesh_actix::{Member, MemberStatus, Mesh, NodeId, ShardCount};
use tokio::sync::oneshot;

use crate::sealing::{GossipStats, SealedTransport};
use crate::signing::ClusterKey;

const KEY_ADDR: &str = "addr";
const KEY_CAPABILITIES: &str = "capabilities";
const KEY_LEAVING: &str = "leaving";
const KEY_INCARNATION: &str = "incarnation";
const KEY_VERSION: &str = "version";

/// How long the lookup of one seed may take. A DNS server that does not answer must not hold up
/// a join: the seed is skipped until its next resolution.
pub const SEED_LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// How a node joins the gossip.
///
/// ```
/// use mesh_actix::ShardCount;
/// use mesh_http::GossipOptions;
///
/// let listen = "127.0.0.1:4001".parse().unwrap();
/// let seeds = vec!["127.0.0.1:4000".to_owned()];
/// let sealed = GossipOptions::new(listen, seeds.clone(), ShardCount::default(), Some("s3cret"));
/// let plain = GossipOptions::new(listen, seeds, ShardCount::default(), None);
/// assert!(sealed.key.is_some() && plain.key.is_none());
/// assert_ne!(sealed.cluster_id, plain.cluster_id, "they never gossip together");
/// ```
#[derive(Debug, Clone)]
pub struct GossipOptions {
    /// Where to gossip (UDP); by convention the HTTP listen address.
    pub listen: SocketAddr,
    /// Where other nodes reach this node's gossip: `listen` unless that is not routable
    /// (e.g. `0.0.0.0`, or behind a NAT).
    pub advertise: SocketAddr,
    /// Gossip addresses of nodes to join (`host:port`, the host an IP address or a DNS name,
    /// which may resolve to many nodes); empty for the first node.
    pub seeds: Vec<String>,
    /// How often the seeds are resolved again (more than zero); this node then gossips once
    /// with each address that is not a live member yet.
    pub seed_refresh: Duration,
    /// Nodes gossip only with nodes of the same cluster id.
    pub cluster_id: String,
    /// How often a node gossips with a few others.
    pub interval: Duration,
    /// With a key, every datagram is sealed with it (see [`GossipStats`] for what is refused);
    /// without, gossip is plain chitchat: readable and forgeable by anyone on the network.
    pub key: Option<Arc<ClusterKey>>,
}

impl GossipOptions {
    /// Gossip on `listen` every 100 ms, resolving the seeds again every 5 s. Nodes with
    /// different shard counts or secrets get different cluster ids, so they never merge into
    /// one cluster whose nodes would disagree on owners or refuse each other's hops.
    pub fn new(
        listen: SocketAddr,
        seeds: Vec<String>,
        shards: ShardCount,
        secret: Option<&str>,
    ) -> GossipOptions {
        let mut cluster_id = format!("mesh-{}", shards.get());
        let key = secret.map(ClusterKey::of);
        if let Some(key) = &key {
            // Sealed datagrams never open under another secret; the tag keeps clusters apart
            // even so, and (a tag of the slow-derived key) says nothing about the secret.
            cluster_id.push('-');
            cluster_id.push_str(key.tag());
        }
        GossipOptions {
            listen,
            advertise: listen,
            seeds,
            seed_refresh: Duration::from_secs(5),
            cluster_id,
            interval: Duration::from_millis(100),
            key,
        }
    }
}

/// Why membership could not start.
///
/// ```
/// use mesh_actix::{Mesh, NodeId};
/// use mesh_http::{GossipOptions, Membership};
///
/// # actix_rt::System::new().block_on(async {
/// let mesh = Mesh::builder(NodeId::new("node-2").unwrap(), "127.0.0.1:4001").start().unwrap();
/// let listen = "127.0.0.1:4001".parse().unwrap();
/// // A seed without its port: a mistake to report at start, not a name to look up for ever.
/// let seeds = vec!["mesh-headless".to_owned()];
/// let options = GossipOptions::new(listen, seeds, mesh.config().shards, None);
/// let Err(error) = Membership::join(mesh, options).await else {
///     panic!("joined with a seed that names no port");
/// };
/// let message = error.to_string();
/// assert!(message.starts_with("cannot start gossip on 127.0.0.1:4001"), "{message}");
/// assert!(message.contains("\"mesh-headless\" is not host:port"), "{message}");
/// # });
/// ```
#[derive(Debug, thiserror::Error)]
#[error("cannot start gossip on {listen}: {reason}")]
pub struct MembershipError {
    listen: SocketAddr,
    reason: String,
}

/// This node's membership in the cluster; [`Membership::leave`] it before exiting.
/// [`crate::join`] starts one with the node; by hand:
///
/// ```no_run
/// use mesh_actix::{Mesh, NodeId};
/// use mesh_http::{GossipOptions, HttpTransport, Membership};
///
/// #[actix_web::main]
/// async fn main() -> anyhow::Result<()> {
///     let listen = "127.0.0.1:4001".parse()?;
///     let seeds = vec!["127.0.0.1:4000".to_owned()];
///     let mesh = Mesh::builder(NodeId::new("node-2")?, "127.0.0.1:4001")
///         .transport(HttpTransport::new(None)?)
///         .joining(true)
///         .start()?;
///     let shards = mesh.config().shards;
///     let membership = Membership::join(mesh.clone(), GossipOptions::new(listen, seeds, shards, None)).await?;
///     // ... serve mesh_http::configure(mesh.clone()) on `listen` ...
///     mesh.drain(std::time::Duration::from_secs(5)).await;
///     membership.leave().await;
///     Ok(())
/// }
/// ```
pub struct Membership {
    /// The task that resolves the seeds again; it holds chitchat's handle, and gives it back
    /// (for the shutdown) once told to stop.
    reseed: actix_web::rt::task::JoinHandle<ChitchatHandle>,
    stop_reseeding: oneshot::Sender<()>,
    sync: actix_web::rt::task::JoinHandle<()>,
    interval: Duration,
    sealed: Option<Arc<GossipStats>>,
}

impl Membership {
    /// Joins the cluster of `options.seeds` (or starts one) and keeps `mesh`'s view of the
    /// other members up to date until [`Membership::leave`].
    ///
    /// With seeds, the node serves nothing until it has heard from their cluster (rule 10),
    /// even if its `Mesh` was not started with `MeshConfig::joining`. A seed that is not
    /// `host:port` is an error; one that does not resolve (yet) is retried every
    /// `seed_refresh`.
    pub async fn join(mesh: Mesh, options: GossipOptions) -> Result<Membership, MembershipError> {
        let error = |reason: String| MembershipError {
            listen: options.listen,
            reason,
        };
        for seed in &options.seeds {
            check_seed(seed).map_err(error)?;
        }
        if options.seed_refresh.is_zero() {
            return Err(error(
                "the seed refresh interval must be more than zero".into(),
            ));
        }
        if !options.seeds.is_empty() {
            mesh.await_cluster().await;
        }
        let generation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let id = ChitchatId::new(mesh.node_id().as_str(), generation, options.advertise);
        // Addresses only: chitchat would look names up itself, without a bound.
        let seeds = resolve_seeds(&options.seeds, options.listen, options.advertise).await;
        let config = chitchat_config(&options, id, &seeds);
        let keys = descriptor_keys(&mesh.local_member());
        let sealed = options
            .key
            .as_ref()
            .map(|_| Arc::new(GossipStats::default()));
        let spawned = match (&options.key, &sealed) {
            (Some(key), Some(stats)) => {
                let transport = SealedTransport::new(key.clone(), stats.clone());
                spawn_chitchat(config, keys, &transport).await
            }
            _ => spawn_chitchat(config, keys, &UdpTransport).await,
        };
        let handle = spawned.map_err(|e| error(format!("{e:#}")))?;
        let sync = actix_web::rt::spawn(sync_forever(mesh, handle.chitchat()));
        let (stop_reseeding, stopped) = oneshot::channel();
        let reseed = actix_web::rt::spawn(reseed_forever(handle, options.clone(), stopped));
        Ok(Membership {
            reseed,
            stop_reseeding,
            sync,
            interval: options.interval,
            sealed,
        })
    }

    /// The counts of refused datagrams when gossip is sealed (a key in [`GossipOptions`]).
    pub fn gossip_stats(&self) -> Option<Arc<GossipStats>> {
        self.sealed.clone()
    }

    /// Gives the news of this node's leave (announced by [`Mesh::drain`]) a few gossip rounds
    /// to spread, then stops gossiping. Other nodes take its shards as soon as they hear of it
    /// (by gossip or by its lease renewals), rather than after fencing it.
    pub async fn leave(self) {
        actix_web::rt::time::sleep(self.interval * 5).await;
        self.sync.abort();
        let _ = self.stop_reseeding.send(());
        // An error: the task panicked, and took the handle (and the gossip) down with it.
        if let Ok(handle) = self.reseed.await {
            let _ = handle.shutdown().await;
        }
    }
}

/// The chitchat settings of `options`, for the node `id`, with the seed addresses `seeds`.
fn chitchat_config(
    options: &GossipOptions,
    id: ChitchatId,
    seeds: &BTreeSet<SocketAddr>,
) -> ChitchatConfig {
    ChitchatConfig {
        chitchat_id: id,
        cluster_id: options.cluster_id.clone(),
        gossip_interval: options.interval,
        listen_addr: options.listen,
        seed_nodes: seeds.iter().map(SocketAddr::to_string).collect(),
        failure_detector_config: FailureDetectorConfig {
            initial_interval: options.interval,
            dead_node_grace_period: Duration::from_secs(600),
            ..FailureDetectorConfig::default()
        },
        marked_for_deletion_grace_period: Duration::from_secs(600),
        catchup_callback: None,
        extra_liveness_predicate: None,
        protocol_version: chitchat::ProtocolVersion::V0,
    }
}

/// Checks that a seed is `host:port` (an IPv6 host in brackets): anything else is a mistake to
/// report at start, not a name to look up forever.
fn check_seed(seed: &str) -> Result<(), String> {
    if seed.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let named = seed.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && !host.contains([':', '/', ' '])
            && port.parse::<u16>().is_ok_and(|p| p != 0)
    });
    if named {
        Ok(())
    } else {
        Err(format!(
            "seed {seed:?} is not host:port (a port from 1 to 65535, e.g. mesh-0.mesh:4000 or 10.0.0.2:4000)"
        ))
    }
}

/// Every address the `seeds` resolve to, `own` excepted, of the address family of `listen`
/// (gossip leaves through a socket bound there, which cannot send to the other family:
/// `localhost` also resolves to `::1`). A seed that does not resolve within
/// [`SEED_LOOKUP_TIMEOUT`] is logged and left out: a name may stand for no node yet (a
/// headless Service before its first pod has an address).
async fn resolve_seeds(
    seeds: &[String],
    listen: SocketAddr,
    own: SocketAddr,
) -> BTreeSet<SocketAddr> {
    let lookups = seeds.iter().map(|seed| async move {
        let lookup = tokio::net::lookup_host(seed.as_str());
        match tokio::time::timeout(SEED_LOOKUP_TIMEOUT, lookup).await {
            Ok(Ok(addrs)) => addrs.collect(),
            Ok(Err(e)) => {
                tracing::warn!(seed, error = %e, "cannot resolve a seed");
                Vec::new()
            }
            Err(_) => {
                tracing::warn!(seed, timeout = ?SEED_LOOKUP_TIMEOUT, "a seed did not resolve in time");
                Vec::new()
            }
        }
    });
    join_all(lookups)
        .await
        .into_iter()
        .flatten()
        .filter(|addr| addr.is_ipv4() == listen.is_ipv4() && *addr != own)
        .collect()
}

/// Resolves the seeds again every `seed_refresh` and gossips once with each address that is
/// no live member: nodes that appear behind a name after this one started (pods started
/// together, or restarted with new addresses) are found, and two halves of a cluster that
/// formed apart meet. Returns chitchat's handle once `stop` fires (or its sender is gone).
async fn reseed_forever(
    handle: ChitchatHandle,
    options: GossipOptions,
    mut stop: oneshot::Receiver<()>,
) -> ChitchatHandle {
    if options.seeds.is_empty() {
        let _ = stop.await;
        return handle;
    }
    let mut ticks = actix_web::rt::time::interval(options.seed_refresh);
    // The first tick is now: `join` has just resolved them.
    ticks.tick().await;
    loop {
        let round = async {
            ticks.tick().await;
            resolve_seeds(&options.seeds, options.listen, options.advertise).await
        };
        let resolved = tokio::select! {
            _ = &mut stop => return handle,
            resolved = round => resolved,
        };
        let live: BTreeSet<SocketAddr> = {
            let chitchat = handle.chitchat();
            let chitchat = chitchat.lock().await;
            chitchat
                .live_nodes()
                .map(|id| id.gossip_advertise_addr)
                .collect()
        };
        for addr in resolved.difference(&live) {
            tracing::debug!(%addr, "gossiping with a seed address");
            // Fails only once the gossip has stopped, which `leave` does after this task.
            let _ = handle.gossip(*addr);
        }
    }
}

type Chitchat = std::sync::Arc<tokio::sync::Mutex<chitchat::Chitchat>>;

/// Feeds membership changes to the mesh and this node's capability changes to the gossip.
async fn sync_forever(mesh: Mesh, chitchat: Chitchat) {
    let mut live = chitchat.lock().await.live_nodes_watcher();
    let mut routing = mesh.routing_updates();
    loop {
        let members = members(&*chitchat.lock().await, mesh.node_id());
        mesh.update_members(members).await;
        let keys = descriptor_keys(&mesh.local_member());
        let mut chitchat_guard = chitchat.lock().await;
        let state = chitchat_guard.self_node_state();
        for (key, value) in keys {
            state.set(key, value);
        }
        drop(chitchat_guard);
        tokio::select! {
            changed = live.changed() => if changed.is_err() { return },
            changed = routing.changed() => if changed.is_err() { return },
        }
    }
}

/// Every other node chitchat knows, alive or not in chitchat's eyes (the lease protocol
/// decides liveness). A node that restarted (a newer generation) hides its old self.
fn members(chitchat: &chitchat::Chitchat, local: &NodeId) -> Vec<Member> {
    let mut by_node: BTreeMap<&str, (&ChitchatId, Member)> = BTreeMap::new();
    let known = chitchat.dead_nodes().chain(chitchat.live_nodes());
    for id in known {
        if *id.node_id == *local.as_str() {
            continue;
        }
        let Some(member) = chitchat.node_state(id).and_then(|state| member(id, state)) else {
            continue;
        };
        match by_node.get(&*id.node_id) {
            Some((known, _)) if known.generation_id > id.generation_id => {}
            _ => {
                by_node.insert(&id.node_id, (id, member));
            }
        }
    }
    by_node.into_values().map(|(_, member)| member).collect()
}

fn member(id: &ChitchatId, state: &NodeState) -> Option<Member> {
    let node = NodeId::new(&*id.node_id).ok()?;
    let addr = state.get(KEY_ADDR)?.to_owned();
    let capabilities = serde_json::from_str(state.get(KEY_CAPABILITIES)?).ok()?;
    let number = |key| state.get(key).and_then(|v| v.parse().ok()).unwrap_or(0);
    Some(Member {
        node,
        addr,
        capabilities,
        status: MemberStatus::Suspect,
        incarnation: number(KEY_INCARNATION),
        version: number(KEY_VERSION),
        leaving: state.get(KEY_LEAVING) == Some("true"),
    })
}

/// The gossip keys of a descriptor.
fn descriptor_keys(member: &Member) -> Vec<(String, String)> {
    vec![
        (KEY_ADDR.to_owned(), member.addr.clone()),
        (KEY_CAPABILITIES.to_owned(), join_capabilities(member)),
        (KEY_INCARNATION.to_owned(), member.incarnation.to_string()),
        (KEY_VERSION.to_owned(), member.version.to_string()),
        (KEY_LEAVING.to_owned(), member.leaving.to_string()),
    ]
}

/// Capabilities travel as a JSON array: a capability name may contain any character.
fn join_capabilities(member: &Member) -> String {
    serde_json::to_string(&member.capabilities).expect("strings serialize")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use mesh_actix::Capability;

    use super::*;

    fn chitchat_id(node: &str) -> ChitchatId {
        ChitchatId::new(node, 1, ([127, 0, 0, 1], 4000).into())
    }

    fn state(keys: &[(&str, &str)]) -> NodeState {
        let mut state = NodeState::for_test();
        for (key, value) in keys {
            state.set(*key, *value);
        }
        state
    }

    fn capabilities(names: &[&str]) -> BTreeSet<Capability> {
        names.iter().map(|c| Capability::new(c).unwrap()).collect()
    }

    #[test]
    fn member_reads_the_descriptor_keys() {
        let state = state(&[
            (KEY_ADDR, "10.0.0.2:4000"),
            (KEY_CAPABILITIES, r#"["counter","game"]"#),
            (KEY_INCARNATION, "17"),
            (KEY_VERSION, "3"),
            (KEY_LEAVING, "false"),
        ]);
        let parsed = member(&chitchat_id("node-2"), &state);
        assert_eq!(
            parsed,
            Some(Member {
                node: NodeId::new("node-2").unwrap(),
                addr: "10.0.0.2:4000".into(),
                capabilities: capabilities(&["counter", "game"]),
                status: MemberStatus::Suspect,
                incarnation: 17,
                version: 3,
                leaving: false,
            })
        );
    }

    #[test]
    fn a_leaving_node_says_so() {
        let state = state(&[
            (KEY_ADDR, "10.0.0.2:4000"),
            (KEY_CAPABILITIES, r#"["counter"]"#),
            (KEY_LEAVING, "true"),
        ]);
        let parsed = member(&chitchat_id("node-2"), &state).unwrap();
        assert!(parsed.leaving);
        assert!(!parsed.can_own("counter"));
    }

    #[test]
    fn a_node_without_usable_keys_is_no_member() {
        let id = chitchat_id("node-2");
        let no_addr = state(&[(KEY_CAPABILITIES, "[]")]);
        assert_eq!(member(&id, &no_addr), None);
        let no_capabilities = state(&[(KEY_ADDR, "10.0.0.2:4000")]);
        assert_eq!(member(&id, &no_capabilities), None);
        let bad_json = state(&[(KEY_ADDR, "10.0.0.2:4000"), (KEY_CAPABILITIES, "counter")]);
        assert_eq!(member(&id, &bad_json), None);
        let empty_capability = state(&[(KEY_ADDR, "a:1"), (KEY_CAPABILITIES, r#"[""]"#)]);
        assert_eq!(member(&id, &empty_capability), None);
    }

    #[test]
    fn capabilities_round_trip_through_their_gossip_key() {
        let names = ["counter", "a,b", "with \"quotes\"", "ünïcode", "[]"];
        let local = Member::alive(NodeId::new("node-1").unwrap(), "127.0.0.1:4000", names).unwrap();
        let keys = descriptor_keys(&local);
        let keys: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let parsed = member(&chitchat_id("node-1"), &state(&keys));
        let expected = Member {
            status: MemberStatus::Suspect,
            ..local
        };
        assert_eq!(parsed, Some(expected));

        let none = Member::alive(NodeId::new("n").unwrap(), "a:1", Vec::<&str>::new()).unwrap();
        assert_eq!(join_capabilities(&none), "[]");
    }

    #[test]
    fn a_seed_must_be_host_and_port() {
        for seed in [
            "10.0.0.2:4000",
            "[::1]:4000",
            "localhost:4000",
            "mesh.default.svc:1",
        ] {
            assert_eq!(check_seed(seed), Ok(()), "{seed}");
        }
        for seed in [
            "",
            "localhost",
            "localhost:",
            ":4000",
            "host:0",
            "host:65536",
            "::1",
            "h:x",
            "a b:1",
        ] {
            let error = check_seed(seed).expect_err(seed);
            assert!(error.contains("is not host:port"), "{seed}: {error}");
        }
    }

    #[actix_web::test]
    async fn a_dns_seed_gives_every_address_of_the_gossip_family_but_this_node_own() {
        let listen: SocketAddr = ([127, 0, 0, 1], 4000).into();
        let seeds = vec!["localhost:4001".to_owned(), "127.0.0.1:4000".to_owned()];
        let resolved = resolve_seeds(&seeds, listen, listen).await;
        // `localhost` is also `::1`, which an IPv4 socket cannot send to; 4000 is this node.
        assert_eq!(resolved, BTreeSet::from([([127, 0, 0, 1], 4001).into()]));

        let v6: SocketAddr = "[::1]:4000".parse().unwrap();
        let resolved = resolve_seeds(&seeds, v6, v6).await;
        assert!(resolved.iter().all(SocketAddr::is_ipv6), "{resolved:?}");

        // A name that does not resolve is left out, and the others still count.
        let seeds = vec![
            "no-such-host.invalid:4000".to_owned(),
            "127.0.0.2:4000".to_owned(),
        ];
        let resolved = resolve_seeds(&seeds, listen, listen).await;
        assert_eq!(resolved, BTreeSet::from([([127, 0, 0, 2], 4000).into()]));
    }

    /// The re-resolution alone leads a node to the nodes behind a name: chitchat is given no
    /// seed at all here, as when a name resolved to nothing at start.
    #[actix_web::test]
    async fn seeds_resolved_again_lead_to_nodes_chitchat_was_not_given() {
        let free = || {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.local_addr().unwrap()
        };
        let shards = ShardCount::new(8).unwrap();
        let start = |name: &'static str, options: GossipOptions| async move {
            let id = ChitchatId::new(name, 1, options.listen);
            let config = chitchat_config(&options, id, &BTreeSet::new());
            spawn_chitchat(config, Vec::new(), &UdpTransport)
                .await
                .unwrap()
        };
        let a_addr = free();
        let a = start("a", GossipOptions::new(a_addr, Vec::new(), shards, None)).await;
        let seeds = vec![format!("localhost:{}", a_addr.port())];
        let mut options = GossipOptions::new(free(), seeds, shards, None);
        options.seed_refresh = Duration::from_millis(100);
        let b = start("b", options.clone()).await;
        let b_chitchat = b.chitchat();
        let (stop, stopped) = oneshot::channel();
        let reseed = actix_web::rt::spawn(reseed_forever(b, options, stopped));

        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !b_chitchat
            .lock()
            .await
            .node_states()
            .keys()
            .any(|id| &*id.node_id == "a")
        {
            assert!(std::time::Instant::now() < deadline, "b never heard of a");
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
        stop.send(()).unwrap();
        reseed.await.unwrap().shutdown().await.unwrap();
        a.shutdown().await.unwrap();
    }

    #[test]
    fn cluster_id_separates_shard_counts_and_secrets() {
        let listen: SocketAddr = ([127, 0, 0, 1], 4000).into();
        let id = |shards: u32, secret: Option<&str>| {
            let shards = ShardCount::new(shards).unwrap();
            GossipOptions::new(listen, Vec::new(), shards, secret).cluster_id
        };
        assert_eq!(id(64, None), id(64, None));
        assert_eq!(id(64, Some("s3cret")), id(64, Some("s3cret")));
        assert_ne!(id(64, None), id(128, None));
        assert_ne!(id(64, Some("s3cret")), id(128, Some("s3cret")));
        assert_ne!(id(64, Some("s3cret")), id(64, Some("other")));
        assert_ne!(id(64, Some("s3cret")), id(64, None));
        // The id travels in the clear: it must not reveal the secret, nor a fast hash of it.
        assert!(!id(64, Some("s3cret")).contains("s3cret"));
        let fast = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(b"s3cret"));
        assert!(!id(64, Some("s3cret")).contains(&fast));
    }
}
