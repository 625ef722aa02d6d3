//! How a node reaches the other nodes: implemented over HTTP by `mesh-http`, and in memory by
//! tests that want a deterministic cluster in one process.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use mesh_core::{
    Handoff, HopError, Member, MeshError, NodeId, Refusal, RenewReply, RenewRequest, Reply, Request,
};

use crate::provider::Hops;
use parking_lot::RwLock;

use crate::builder::MeshBuilder;
use crate::mesh::{Mesh, StartError, WeakMesh};

/// Carries what one node sends another: requests to their owner, which serves them with
/// [`Hops::forwarded_call`] and never forwards them again; lease renewals, which it answers
/// with [`Hops::renew_lease`]; and handoffs of identities that moved, which it takes with
/// [`Hops::accept_handoff`] (the receiving end, [`crate::provider`]).
///
/// A failed hop says what became of the request ([`HopError`](crate::provider::HopError)): a transport reports
/// [`HopError::NotDelivered`] only when the request certainly did not reach the owner (no
/// connection could be made, or the owner refused it with a [`Refusal`]), since mesh sends such
/// a request again; anything that may have reached it is [`HopError::MaybeDelivered`].
///
/// A transport that reaches no node, say before the network is up:
///
/// ```
/// use std::time::Duration;
/// use futures_util::future::{self, BoxFuture, FutureExt};
/// use mesh_actix::provider::{Handoff, HopError, Refusal, RemoteTransport, RenewReply};
/// use mesh_actix::provider::RenewRequest;
/// use mesh_actix::{Member, Mesh, MeshError, NodeId, Reply, Request};
///
/// type Hop<T> = BoxFuture<'static, Result<T, HopError>>;
///
/// struct Nowhere;
///
/// /// Nothing was sent: mesh may route the request again while its deadline allows.
/// fn unreachable<T: Send + 'static>(to: &Member) -> Hop<T> {
///     let message = format!("no connection to {}", to.node);
///     future::ready(Err(HopError::refused(Refusal::Unreachable, message))).boxed()
/// }
///
/// impl RemoteTransport for Nowhere {
///     fn call(&self, owner: &Member, _: Request, _: Duration) -> Hop<Reply> {
///         unreachable(owner)
///     }
///     fn cast(&self, owner: &Member, _: Request, _: Duration) -> Hop<()> {
///         unreachable(owner)
///     }
///     fn renew(
///         &self,
///         peer: &Member,
///         _: RenewRequest,
///         _: Duration,
///     ) -> BoxFuture<'static, Result<RenewReply, MeshError>> {
///         let message = format!("no connection to {}", peer.node);
///         future::ready(Err(MeshError::OwnerUnavailable(message))).boxed()
///     }
///     fn handoff(&self, to: &Member, _: Handoff, _: Duration) -> Hop<()> {
///         unreachable(to)
///     }
/// }
///
/// let owner = Member::alive(NodeId::new("node-2").unwrap(), "10.0.0.2:4000", ["counter"]);
/// let request = Request::new("Counter", "c1", "counter").unwrap();
/// let hop = Nowhere.call(&owner.unwrap(), request, Duration::from_secs(1));
/// let hop = hop.now_or_never().expect("ready at once");
/// assert!(matches!(hop, Err(HopError::NotDelivered(Refusal::Unreachable, _))));
///
/// // Given to a node at its start.
/// # actix_rt::System::new().block_on(async {
/// let node = Mesh::builder(NodeId::new("node-1").unwrap(), "10.0.0.1:4000")
///     .transport(Nowhere)
///     .start()
///     .unwrap();
/// assert_eq!(node.node_id().as_str(), "node-1");
/// # });
/// ```
pub trait RemoteTransport: Send + Sync + 'static {
    /// Delivers a call and waits for its reply for at most `remaining`.
    fn call(
        &self,
        owner: &Member,
        request: Request,
        remaining: Duration,
    ) -> BoxFuture<'static, Result<Reply, HopError>>;

    /// Delivers a cast; resolves once the owner has accepted it (or within `remaining`).
    fn cast(
        &self,
        owner: &Member,
        request: Request,
        remaining: Duration,
    ) -> BoxFuture<'static, Result<(), HopError>>;

    /// Asks `peer` to grant this node's lease; gives up after `timeout`.
    fn renew(
        &self,
        peer: &Member,
        request: RenewRequest,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<RenewReply, MeshError>>;

    /// Hands an identity over to its new owner; resolves once the owner accepted it (or
    /// within `timeout`).
    fn handoff(
        &self,
        to: &Member,
        handoff: Handoff,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<(), HopError>>;
}

/// A transport between [`Mesh`] nodes of one process: a forwarded request is handed straight
/// to the owner's `Mesh`. For tests that want a deterministic cluster without sockets, and for
/// hosting several nodes in one service.
///
/// It holds the nodes weakly: a node that has been dropped is unreachable, like a crashed
/// process.
///
/// ```
/// use mesh_actix::provider::MembershipFeed;
/// use mesh_actix::{InProcessTransport, Mesh, NodeId, Request};
/// # use mesh_actix::{InitError, MeshActor, MeshInit, Payload};
/// # use mesh_actix::actix::{Actor, Context, Handler, MessageResult};
/// # use serde_json::{json, Value};
/// # #[derive(MeshActor)]
/// # struct Counter { count: u64 }
/// # impl Actor for Counter { type Context = Context<Self>; }
/// # impl MeshInit for Counter {
/// #     fn init(_: &mesh_actix::ActorId, _: Option<&Value>) -> Result<Self, InitError> { Ok(Counter { count: 0 }) }
/// # }
/// # impl Handler<Payload> for Counter {
/// #     type Result = MessageResult<Payload>;
/// #     fn handle(&mut self, _: Payload, _: &mut Context<Self>) -> Self::Result {
/// #         self.count += 1;
/// #         MessageResult(json!({"ok": self.count}))
/// #     }
/// # }
/// # actix_rt::System::new().block_on(async {
/// let network = InProcessTransport::new();
/// let node = |id: &str| Mesh::builder(NodeId::new(id).unwrap(), format!("{id}:1"))
///     .register::<Counter>()
///     .capabilities(["counter"]);
/// let a = network.start(node("a")).unwrap();
/// let b = network.start(node("b")).unwrap();
/// // What the membership layer would do: tell each node about the other.
/// a.update_members(vec![b.local_member()]).await;
/// b.update_members(vec![a.local_member()]).await;
///
/// // Whichever node a call enters, it reaches the one activation on the owner.
/// let id = (0..).map(|i| format!("c{i}")).find(|id| a.owner(a.shard_for(id), "counter").unwrap().as_str() == "b").unwrap();
/// let request = Request::new("Counter", &id, "counter").unwrap();
/// let first = a.call(request.clone()).await.unwrap();
/// let second = b.call(request).await.unwrap();
/// assert_eq!((first.node.as_str(), second.node.as_str()), ("b", "b"));
/// assert_eq!(second.result, json!({"ok": 2}));
/// # });
/// ```
#[derive(Clone, Default)]
pub struct InProcessTransport {
    nodes: Arc<RwLock<HashMap<NodeId, WeakMesh>>>,
    /// Links that drop what is sent over them, as `(from, to)`.
    cut: Arc<RwLock<BTreeSet<(NodeId, NodeId)>>>,
}

impl InProcessTransport {
    /// An empty transport.
    pub fn new() -> InProcessTransport {
        InProcessTransport::default()
    }

    /// Starts the node `builder` describes on this transport: it reaches the other nodes
    /// through it, and they reach it.
    pub fn start(&self, builder: MeshBuilder) -> Result<Mesh, StartError> {
        let link = InProcessLink {
            from: builder.node_id().clone(),
            net: self.clone(),
        };
        let mesh = builder.transport(link).start()?;
        self.nodes
            .write()
            .insert(mesh.node_id().clone(), mesh.downgrade());
        Ok(mesh)
    }

    /// Cuts the link from `from` to `to`: what is sent over it is lost, as on a network that
    /// drops packets (a request hangs until its timeout). The reverse link stays up.
    pub fn cut_one_way(&self, from: &NodeId, to: &NodeId) {
        self.cut.write().insert((from.clone(), to.clone()));
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut(&self, a: &NodeId, b: &NodeId) {
        self.cut_one_way(a, b);
        self.cut_one_way(b, a);
    }

    /// Splits the connected nodes into these groups: links between groups are cut, links
    /// within a group are up. A node in no group is cut from every other.
    pub fn partition(&self, groups: &[&[&NodeId]]) {
        let nodes: Vec<NodeId> = self.nodes.read().keys().cloned().collect();
        let group_of = |n: &NodeId| groups.iter().position(|g| g.contains(&n));
        let mut cut = self.cut.write();
        cut.clear();
        for a in &nodes {
            for b in &nodes {
                if a != b && (group_of(a).is_none() || group_of(a) != group_of(b)) {
                    cut.insert((a.clone(), b.clone()));
                }
            }
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.cut.write().clear();
    }

    fn is_cut(&self, from: &NodeId, to: &NodeId) -> bool {
        self.cut.read().contains(&(from.clone(), to.clone()))
    }

    fn node(&self, owner: &Member) -> Option<Mesh> {
        self.nodes
            .read()
            .get(owner.node.as_str())
            .and_then(WeakMesh::upgrade)
    }
}

/// One node's end of an [`InProcessTransport`].
struct InProcessLink {
    from: NodeId,
    net: InProcessTransport,
}

impl InProcessLink {
    /// Runs `deliver` on `to` as the network allows: a dropped request or reply hangs until
    /// `timeout` and then may have been delivered, as on a real network; an absent node
    /// refuses at once.
    fn hop<T: Send + 'static>(
        &self,
        to: &Member,
        timeout: Duration,
        deliver: impl FnOnce(Mesh) -> BoxFuture<'static, Result<T, HopError>> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, HopError>> {
        let (net, from, to_member) = (self.net.clone(), self.from.clone(), to.clone());
        async move {
            let to = to_member.node.clone();
            let lost = || {
                Err(HopError::MaybeDelivered(format!(
                    "no answer from node {to}; the request may have run"
                )))
            };
            if net.is_cut(&from, &to) {
                tokio::time::sleep(timeout).await;
                return lost();
            }
            let Some(node) = net.node(&to_member) else {
                let message = format!("node {to} is not reachable");
                return Err(HopError::refused(Refusal::Unreachable, message));
            };
            let result = deliver(node).await;
            if net.is_cut(&to, &from) {
                tokio::time::sleep(timeout).await;
                return lost();
            }
            result
        }
        .boxed()
    }
}

impl RemoteTransport for InProcessLink {
    fn call(
        &self,
        owner: &Member,
        request: Request,
        remaining: Duration,
    ) -> BoxFuture<'static, Result<Reply, HopError>> {
        self.hop(owner, remaining, move |node| {
            async move { node.forwarded_call(request).await }.boxed()
        })
    }

    fn cast(
        &self,
        owner: &Member,
        request: Request,
        remaining: Duration,
    ) -> BoxFuture<'static, Result<(), HopError>> {
        self.hop(owner, remaining, move |node| {
            async move { node.forwarded_cast(request).await }.boxed()
        })
    }

    fn renew(
        &self,
        peer: &Member,
        request: RenewRequest,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<RenewReply, MeshError>> {
        let renewed = self.hop(peer, timeout, move |node| {
            async move { Ok(node.renew_lease(request).await) }.boxed()
        });
        async move { renewed.await.map_err(HopError::into_error) }.boxed()
    }

    fn handoff(
        &self,
        to: &Member,
        handoff: Handoff,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<(), HopError>> {
        self.hop(to, timeout, move |node| {
            async move { node.accept_handoff(handoff).await }.boxed()
        })
    }
}
