//! `GET /dashboard`, a page that shows the cluster as a person would look at it, and
//! `GET /dashboard.json`, the reading it refreshes itself from.
//!
//! The page is one self-contained file (HTML, CSS and JS inline; nothing fetched from
//! elsewhere). It holds no cluster data, so it is served like `/openapi.json`, without the
//! secret; the reading needs the secret like `/cluster`, and the page asks for it when refused.
//! Call rates are computed by the page from successive readings of the call counters.

use std::collections::{BTreeMap, BTreeSet};

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::HttpResponse;
use mesh_actix::{Capability, Member, MemberStatus, Mesh, NodeId, RoutingTable};
use serde::Serialize;

use crate::peer_load::{Load, PeerProbe, MAX_PROBED_PEERS};

/// The page, as served.
const PAGE: &str = include_str!("../assets/dashboard.html");

/// The path of the reading, relative to where the mesh routes are mounted.
pub(crate) const READING_PATH: &str = "/dashboard.json";

/// `GET /dashboard`.
pub(crate) async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((CACHE_CONTROL, "no-cache"))
        .body(PAGE)
}

/// One reading of the cluster as this node sees it.
#[derive(Debug, Serialize)]
pub(crate) struct Reading {
    /// The node that took the reading.
    node: NodeId,
    /// The shard count of the cluster.
    shards: u32,
    /// Every member this node knows of, ordered by node id.
    members: Vec<MemberReading>,
    /// Every capability some member registered, by name, with its shards' owners.
    capabilities: Vec<CapabilityReading>,
}

#[derive(Debug, Serialize)]
struct MemberReading {
    node: NodeId,
    addr: String,
    status: MemberStatus,
    capabilities: BTreeSet<Capability>,
    /// `None` when it could not be read; `load_error` says why.
    load: Option<Load>,
    #[serde(skip_serializing_if = "Option::is_none")]
    load_error: Option<String>,
}

#[derive(Debug, Serialize)]
struct CapabilityReading {
    capability: String,
    /// How many shards of the capability each node owns; only owners are listed, and the
    /// counts add up to the shard count (nothing, when no alive member registered it).
    owners: BTreeMap<NodeId, u32>,
}

impl Reading {
    /// Takes a reading: members, capabilities and shard owners from this node's routing table,
    /// this node's load from its own counters, the others' from their `/metrics` (the mesh
    /// routes mounted under `prefix` on every node, as hops assume too).
    pub(crate) async fn take(mesh: &Mesh, peers: Option<&PeerProbe>, prefix: &str) -> Reading {
        let routing = mesh.routing();
        let members = routing.members();
        let loads = member_loads(mesh, members, peers, prefix).await;
        Reading {
            node: mesh.node_id().clone(),
            shards: routing.shards().get(),
            members: members
                .iter()
                .zip(loads)
                .map(|(member, load)| {
                    let (load, load_error) = match load {
                        Ok(load) => (Some(load), None),
                        Err(why) => (None, Some(why)),
                    };
                    MemberReading {
                        node: member.node.clone(),
                        addr: member.addr.clone(),
                        status: member.status,
                        capabilities: member.capabilities.clone(),
                        load,
                        load_error,
                    }
                })
                .collect(),
            capabilities: shard_owners(&routing),
        }
    }
}

/// The load of every member, in order: this node's own, the others' read from them when they
/// may be running (not dead), the first [`MAX_PROBED_PEERS`] of them.
async fn member_loads(
    mesh: &Mesh,
    members: &[Member],
    peers: Option<&PeerProbe>,
    prefix: &str,
) -> Vec<Result<Load, String>> {
    let me = mesh.node_id();
    let probed: Vec<&Member> = members
        .iter()
        .filter(|m| &m.node != me && m.status != MemberStatus::Dead)
        .take(MAX_PROBED_PEERS)
        .collect();
    let addrs: Vec<&str> = probed.iter().map(|m| m.addr.as_str()).collect();
    let mut read = match peers {
        Some(peers) => peers.loads(&addrs, prefix).await,
        None => vec![Err("this node cannot read other nodes".to_owned()); addrs.len()],
    }
    .into_iter();
    let mut probed = probed.into_iter().peekable();
    members
        .iter()
        .map(|member| {
            if &member.node == me {
                Ok(Load::of(mesh))
            } else if probed.next_if(|m| m.node == member.node).is_some() {
                read.next().expect("one reading per probed member")
            } else if member.status == MemberStatus::Dead {
                Err("dead".to_owned())
            } else {
                Err(format!(
                    "not read: more than {MAX_PROBED_PEERS} other nodes"
                ))
            }
        })
        .collect()
}

/// For every capability a member registered, how many shards each node owns.
///
/// Capabilities that the same members may own have the same owners (the routing table shares
/// one owner table between them), so each such set is counted once: a node may declare 1024
/// capabilities, and a reading must not walk every shard of every one of them.
fn shard_owners(routing: &RoutingTable) -> Vec<CapabilityReading> {
    let members = routing.members();
    let capabilities: BTreeSet<&Capability> =
        members.iter().flat_map(|m| &m.capabilities).collect();
    let mut counted: BTreeMap<Vec<&NodeId>, BTreeMap<NodeId, u32>> = BTreeMap::new();
    capabilities
        .into_iter()
        .map(|capability| {
            let capability = capability.as_str();
            let candidates = members
                .iter()
                .filter(|m| m.can_own(capability))
                .map(|m| &m.node)
                .collect();
            let owners = counted
                .entry(candidates)
                .or_insert_with(|| {
                    let mut owners = BTreeMap::new();
                    for shard in routing.shards().iter() {
                        if let Some(owner) = routing.owner(shard, capability) {
                            *owners.entry(owner.node.clone()).or_default() += 1;
                        }
                    }
                    owners
                })
                .clone();
            CapabilityReading {
                capability: capability.to_owned(),
                owners,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_actix::{MeshConfig, ShardCount};
    use mesh_core::MembershipView;
    use serde_json::{json, Value};

    fn lone_mesh() -> Mesh {
        let mut config = MeshConfig::new(NodeId::new("node-1").unwrap(), "127.0.0.1:4000");
        config.arbiters = std::num::NonZeroUsize::MIN;
        Mesh::start(config).unwrap()
    }

    fn member(node: &str, status: MemberStatus, capabilities: &[&str]) -> Member {
        let mut member = Member::alive(NodeId::new(node).unwrap(), "127.0.0.1:1", capabilities)
            .expect("valid capabilities");
        member.status = status;
        member
    }

    #[actix_web::test]
    async fn the_page_is_html_needs_no_secret_and_fetches_nothing_from_elsewhere() {
        use actix_web::test::{call_service, init_service, read_body, TestRequest};
        let options = crate::HttpOptions {
            secret: Some("s3cret".into()),
            ..crate::HttpOptions::default()
        };
        let app = init_service(
            actix_web::App::new().configure(crate::configure_with(lone_mesh(), options)),
        )
        .await;
        let page = call_service(&app, TestRequest::get().uri("/dashboard").to_request()).await;
        assert_eq!(page.status(), actix_web::http::StatusCode::OK);
        assert_eq!(
            page.headers().get(CONTENT_TYPE).unwrap(),
            "text/html; charset=utf-8"
        );
        let page = read_body(page).await;
        assert_eq!(page, PAGE.as_bytes());
        // Self-contained: no URL of another origin, no external script, style or font.
        for outside in ["http:", "https:", "//", "@import", "src="] {
            let found = PAGE.lines().find(|l| {
                let code = l.split_once("// ").map_or(*l, |(code, _)| code);
                code.contains(outside)
            });
            assert_eq!(found, None, "{outside}");
        }
        assert!(PAGE.contains(&format!("\"{}\"", &READING_PATH[1..])));
    }

    #[test]
    fn every_capability_lists_its_owners_and_their_shards_add_up() {
        let mut view = MembershipView::default();
        view.upsert(member(
            "a",
            MemberStatus::Alive,
            &["counter", "game", "twin"],
        ));
        view.upsert(member("b", MemberStatus::Alive, &["counter", "twin"]));
        view.upsert(member("c", MemberStatus::Dead, &["counter", "lonely"]));
        let shards = ShardCount::new(64).unwrap();
        let owners = shard_owners(&RoutingTable::build(&view, shards));
        let by_name: BTreeMap<&str, &BTreeMap<NodeId, u32>> = owners
            .iter()
            .map(|c| (c.capability.as_str(), &c.owners))
            .collect();
        assert_eq!(
            by_name.keys().copied().collect::<Vec<_>>(),
            ["counter", "game", "lonely", "twin"]
        );
        // The same candidates, the same owners: one count serves both.
        assert_eq!(by_name["twin"], by_name["counter"]);
        let counter = by_name["counter"];
        let nodes: Vec<&str> = counter.keys().map(NodeId::as_str).collect();
        assert_eq!(nodes, ["a", "b"], "a dead node owns nothing");
        assert_eq!(counter.values().sum::<u32>(), 64);
        assert!(counter.values().all(|&n| n > 0), "{counter:?}");
        assert_eq!(by_name["game"].values().sum::<u32>(), 64);
        assert_eq!(
            by_name["game"]
                .keys()
                .map(NodeId::as_str)
                .collect::<Vec<_>>(),
            ["a"]
        );
        assert!(by_name["lonely"].is_empty(), "only a dead node has it");
    }

    #[actix_web::test]
    async fn a_lone_node_reads_its_own_load_and_owns_every_shard() {
        let mesh = lone_mesh();
        mesh.register_capabilities(["counter"]).await.unwrap();
        let reading = Reading::take(&mesh, None, "").await;
        let reading: Value = serde_json::to_value(reading).unwrap();
        let shards = mesh.config().shards.get();
        assert_eq!(reading["node"], "node-1");
        assert_eq!(reading["shards"], shards);
        assert_eq!(
            reading["members"],
            json!([{
                "node": "node-1",
                "addr": "127.0.0.1:4000",
                "status": "alive",
                "capabilities": ["counter"],
                "load": {"activations": 0, "calls": 0, "casts": 0},
            }])
        );
        assert_eq!(
            reading["capabilities"],
            json!([{"capability": "counter", "owners": {"node-1": shards}}])
        );
    }
}
