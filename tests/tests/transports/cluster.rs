//! The harness of the multi-node scenarios: a [`Cluster`] of N [`Mesh`] nodes inside the test's
//! actix System, wired either in memory ([`InProcessTransport`]) or over real HTTP
//! ([`HttpTransport`] posting to an actix-web server per node on 127.0.0.1).
//!
//! Membership is driven by hand, as the membership layer would: [`Cluster::sync_views`] gives
//! every node the `MembershipFeed::local_member` of every other node. Servers are stopped by
//! [`Cluster::shutdown`], or on drop when a test fails.

use std::net::TcpListener;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpServer};
use mesh_actix::provider::MembershipFeed;
use mesh_actix::store::MemoryStore;
use mesh_actix::{
    Delivery, InProcessTransport, Member, Mesh, MeshBuilder, MeshConfig, MeshError, NodeId, Reply,
    Request,
};
use mesh_http::HttpTransport;
use serde_json::Value;

/// The capabilities of a standard node: one per example actor.
pub const EXAMPLE_CAPABILITIES: [&str; 5] = ["counter", "game", "crasher", "sleeper", "account"];

/// How long polling waits before it gives up: generous, CI machines are small and noisy.
pub const EVENTUALLY: Duration = Duration::from_secs(20);

/// How the nodes of a cluster reach each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `InProcessTransport`: a forwarded request is handed to the owner's `Mesh`.
    InProcess,
    /// `HttpTransport` to the owner's actix-web server (`POST /internal/call|cast`).
    Http,
}

struct Node {
    mesh: Mesh,
    /// Where the node's durable actors keep their state.
    store: MemoryStore,
    /// The node's actix-web server (HTTP clusters only).
    server: Option<ServerHandle>,
}

/// N nodes of one cluster, all in this test's actix System.
pub struct Cluster {
    transport: Transport,
    in_process: InProcessTransport,
    nodes: Vec<Node>,
    /// The first nodes know each other: nodes added from now on join.
    formed: bool,
    /// The store every node shares; without it each node has a node-local one, as
    /// `mesh-node`'s embedded store is.
    shared_store: Option<MemoryStore>,
}

impl Cluster {
    /// `n` nodes with every example capability, each knowing all the others.
    pub async fn start(transport: Transport, n: usize) -> Cluster {
        Cluster::with_capabilities(transport, &vec![&EXAMPLE_CAPABILITIES[..]; n]).await
    }

    /// One node per entry of `capabilities`, registering those, each knowing all the others.
    pub async fn with_capabilities(transport: Transport, capabilities: &[&[&str]]) -> Cluster {
        Cluster::build(transport, capabilities, None).await
    }

    /// `n` nodes with every example capability sharing one state store, as nodes given the
    /// same `mesh-node --store` do.
    pub async fn with_shared_store(transport: Transport, n: usize) -> Cluster {
        let capabilities = vec![&EXAMPLE_CAPABILITIES[..]; n];
        Cluster::build(transport, &capabilities, Some(MemoryStore::shared())).await
    }

    async fn build(
        transport: Transport,
        capabilities: &[&[&str]],
        shared_store: Option<MemoryStore>,
    ) -> Cluster {
        mesh_tests::quiet_intentional_panics(&[]);
        let mut cluster = Cluster {
            transport,
            in_process: InProcessTransport::new(),
            nodes: Vec::new(),
            formed: false,
            shared_store,
        };
        for caps in capabilities {
            cluster.add_node(caps).await;
        }
        cluster.sync_views().await;
        cluster.formed = true;
        // Each node started as a cluster of its own; counting the others, its lease needs
        // their grants before it serves again.
        eventually("every node of the new cluster serves", || {
            cluster.nodes.iter().all(|n| n.mesh.readiness().is_ok())
        })
        .await;
        cluster
    }

    /// Starts one more node (`node-<index>`) with the example actors and `capabilities`,
    /// reachable through the cluster's transport. No view changes: see [`Cluster::sync_views`].
    /// A node added to a formed cluster joins it, as `mesh-node --seeds` does: it serves
    /// nothing until every member has admitted it.
    pub async fn add_node(&mut self, capabilities: &[&str]) -> usize {
        let index = self.nodes.len();
        let node_id = NodeId::new(format!("node-{index}")).expect("a valid node id");
        let listener = match self.transport {
            Transport::InProcess => None,
            Transport::Http => Some(TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")),
        };
        let addr = match &listener {
            Some(listener) => listener.local_addr().expect("local_addr").to_string(),
            None => format!("in-process:{index}"),
        };
        let mut config = MeshConfig::new(node_id, addr);
        config.arbiters = NonZeroUsize::new(2).expect("non-zero");
        config.joining = self.formed;
        let store = self.shared_store.clone().unwrap_or_default();
        config.store = Some(Arc::new(store.clone()));
        let builder = mesh_examples::register_examples(MeshBuilder::from_config(config))
            .capabilities(capabilities.iter().copied());

        let (mesh, server) = match listener {
            None => {
                let mesh = self
                    .in_process
                    .start(builder)
                    .expect("inside an actix System");
                (mesh, None)
            }
            Some(listener) => {
                let transport = HttpTransport::new(None).expect("an HTTP client");
                let mesh = builder
                    .transport(transport)
                    .start()
                    .expect("inside an actix System");
                let app_mesh = mesh.clone();
                let server = HttpServer::new(move || {
                    App::new().configure(mesh_http::configure(app_mesh.clone()))
                })
                .workers(1)
                .disable_signals()
                .shutdown_timeout(1)
                .listen(listener)
                .expect("serve on the bound listener")
                .run();
                let handle = server.handle();
                actix_rt::spawn(server);
                (mesh, Some(handle))
            }
        };
        self.nodes.push(Node {
            mesh,
            store,
            server,
        });
        index
    }

    /// The in-process network, whose links a test can cut and heal.
    pub fn network(&self) -> &InProcessTransport {
        assert_eq!(
            self.transport,
            Transport::InProcess,
            "only in-process links can be cut"
        );
        &self.in_process
    }

    /// Gives every node the current description of every other node.
    pub async fn sync_views(&self) {
        for i in 0..self.nodes.len() {
            self.node(i).update_members(self.members_except(i)).await;
        }
    }

    /// Every node's own description but node `i`'s.
    pub fn members_except(&self, i: usize) -> Vec<Member> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, node)| node.mesh.local_member())
            .collect()
    }

    /// A member no node can reach: over HTTP its address has nothing listening; in process it
    /// was never connected to the transport.
    pub fn unreachable_member(&self, node: &str, capabilities: &[&str]) -> Member {
        let addr = match self.transport {
            Transport::InProcess => format!("in-process:{node}"),
            Transport::Http => format!("127.0.0.1:{}", mesh_tests::free_port()),
        };
        Member::alive(
            NodeId::new(node).expect("a valid node id"),
            addr,
            capabilities,
        )
        .expect("valid capabilities")
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The state store of node `i` (the shared one, in a cluster that shares one).
    pub fn store(&self, i: usize) -> &MemoryStore {
        &self.nodes[i].store
    }

    pub fn node(&self, i: usize) -> &Mesh {
        &self.nodes[i].mesh
    }

    /// The node ids, by index.
    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .map(|n| n.mesh.node_id().clone())
            .collect()
    }

    /// The index of the node with this id.
    pub fn index_of(&self, node: &NodeId) -> usize {
        self.nodes
            .iter()
            .position(|n| n.mesh.node_id() == node)
            .unwrap_or_else(|| panic!("{node} is not a node of this cluster"))
    }

    /// The index of the owner of `id` for `capability`, after checking that every node
    /// computes the same owner.
    pub fn owner_of(&self, id: &str, capability: &str) -> usize {
        let owners: Vec<NodeId> = self
            .nodes
            .iter()
            .map(|n| {
                n.mesh
                    .owner(n.mesh.shard_for(id), capability)
                    .unwrap_or_else(|e| panic!("no owner of {id} on {}: {e:?}", n.mesh.node_id()))
            })
            .collect();
        assert!(
            owners.iter().all(|o| *o == owners[0]),
            "the nodes disagree on the owner of {id}: {owners:?}"
        );
        self.index_of(&owners[0])
    }

    /// Live activations per node, by index.
    pub fn activations(&self) -> Vec<usize> {
        self.nodes.iter().map(|n| n.mesh.activations()).collect()
    }

    /// Stops every HTTP server and waits until they have stopped.
    pub async fn shutdown(mut self) {
        for node in &mut self.nodes {
            if let Some(server) = node.server.take() {
                server.stop(false).await;
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Reached with servers still running only when a test failed: ask them to stop.
        for node in &mut self.nodes {
            if let Some(server) = node.server.take() {
                let _stopping = server.stop(false);
            }
        }
    }
}

// --- Requests -----------------------------------------------------------------------------------

/// A request with a payload.
pub fn req(module: &str, id: &str, capability: &str, payload: Value) -> Request {
    Request::new(module, id, capability)
        .expect("non-empty names")
        .with_payload(payload)
}

pub fn counter(id: &str) -> Request {
    req("Counter", id, "counter", Value::Null)
}

pub fn game(id: &str, payload: Value) -> Request {
    req("GameActor", id, "game", payload)
}

pub fn crasher(id: &str, payload: Value) -> Request {
    req("Crasher", id, "crasher", payload)
}

pub fn account(id: &str, payload: Value) -> Request {
    req("Account", id, "account", payload)
}

pub fn sleeper(id: &str, sleep_ms: u64) -> Request {
    req(
        "Sleeper",
        id,
        "sleeper",
        serde_json::json!({ "sleep_ms": sleep_ms }),
    )
}

/// Calls through `mesh` and expects a reply.
pub async fn ok(mesh: &Mesh, request: Request) -> Reply {
    let what = format!("{request:?} through {}", mesh.node_id());
    match mesh.call(request).await {
        Ok(reply) => reply,
        Err(e) => panic!("{what} failed: {e:?}"),
    }
}

/// Calls through `mesh` and expects an error.
pub async fn err(mesh: &Mesh, request: Request) -> MeshError {
    let what = format!("{request:?} through {}", mesh.node_id());
    match mesh.call(request).await {
        Ok(reply) => panic!("{what} succeeded with {reply:?}, expected an error"),
        Err(e) => e,
    }
}

/// The first of `<prefix>-0`, `<prefix>-1`, ... that satisfies `pred`.
pub fn find_id(prefix: &str, mut pred: impl FnMut(&str) -> bool) -> String {
    (0..100_000)
        .map(|n| format!("{prefix}-{n}"))
        .find(|id| pred(id))
        .unwrap_or_else(|| panic!("no id {prefix}-<n> satisfies the condition"))
}

/// How many calls `mesh` has served (from clients or forwarded), by outcome.
pub fn calls_served(mesh: &Mesh, outcome: &str) -> u64 {
    mesh.request_stats()
        .by_outcome(Delivery::Call)
        .filter(|(o, _)| *o == outcome)
        .map(|(_, n)| n)
        .sum()
}

/// How many calls `mesh` has served, whatever their outcome.
pub fn calls_total(mesh: &Mesh) -> u64 {
    mesh.request_stats()
        .by_outcome(Delivery::Call)
        .map(|(_, n)| n)
        .sum()
}

/// Waits until `cond` holds, for at most [`EVENTUALLY`]; `what` describes it on failure.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    mesh_tests::eventually(what, EVENTUALLY, || {
        std::future::ready(cond().then_some(()))
    })
    .await
}
