//! The API of those who connect a node to the world, not of those who call actors: a
//! transport ([`RemoteTransport`], the sending end, given to
//! [`MeshBuilder::transport`](crate::MeshBuilder::transport)) and its receiving end
//! ([`Hops`]), a membership layer ([`MembershipFeed`]) and a front end that refuses requests
//! before they reach the mesh ([`FrontEnd`]).
//!
//! Each audience gets an extension trait, implemented by [`Mesh`](crate::Mesh) alone (they are sealed),
//! rather than inherent methods: a user's page of [`Mesh`](crate::Mesh) lists only what a user calls, and
//! code that reaches below the user API says so by its `use mesh_actix::provider::...`.
//! `mesh-http` is built on these traits (its routes, `HttpTransport` and gossip
//! `Membership`), as is [`InProcessTransport`](crate::InProcessTransport); a user of those
//! needs none of them.
//!
//! The types only these traits speak of are
//! here too: what a hop can come to ([`HopError`], [`Refusal`]), lease renewals
//! ([`RenewRequest`], [`RenewReply`]) and handed-over identities ([`Handoff`]).
//!
//! ```
//! use mesh_actix::provider::MembershipFeed;
//! use mesh_actix::{InProcessTransport, Mesh, NodeId};
//!
//! # actix_rt::System::new().block_on(async {
//! // Two nodes in one process; a membership layer tells each about the other.
//! let network = InProcessTransport::new();
//! let a = network.start(Mesh::builder(NodeId::new("a").unwrap(), "a:1")).unwrap();
//! let b = network.start(Mesh::builder(NodeId::new("b").unwrap(), "b:1")).unwrap();
//! a.update_members(vec![b.local_member()]).await;
//! b.update_members(vec![a.local_member()]).await;
//! assert_eq!(a.routing().members().len(), 2);
//! # });
//! ```

use std::future::Future;

pub use mesh_core::{Handoff, HopError, Refusal, RenewReply, RenewRequest};

pub use crate::transport::RemoteTransport;

use mesh_core::{Member, MeshError, Reply, Request};

use crate::actor::Delivery;

/// The receiving end of a [`RemoteTransport`]: what another node sent
/// this one, served here.
///
/// ```
/// use mesh_actix::provider::{HopError, Hops, MembershipFeed, Refusal};
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
/// a.update_members(vec![b.local_member()]).await;
/// b.update_members(vec![a.local_member()]).await;
/// // A request for an id that `node` owns in `a`'s view.
/// let owned_by = |node: &Mesh| {
///     let owns = |id: &String| a.owner(a.shard_for(id), "counter").unwrap() == *node.node_id();
///     let id = (0..).map(|i| format!("c{i}")).find(owns).unwrap();
///     Request::new("Counter", id, "counter").unwrap()
/// };
///
/// // What a transport's server does with a call another node forwarded to `a`.
/// let reply = a.forwarded_call(owned_by(&a)).await.unwrap();
/// assert_eq!((reply.node.as_str(), &reply.result), ("a", &json!({"ok": 1})));
///
/// // `b` owns this one in `a`'s view: refused, never forwarded again, so the sender may
/// // route it again (its view was stale).
/// let refused = a.forwarded_call(owned_by(&b)).await.unwrap_err();
/// assert!(matches!(refused, HopError::NotDelivered(Refusal::NotOwner, _)));
/// # });
/// ```
pub trait Hops: sealed::Sealed {
    /// Serves a call another node forwarded here: served only if this node owns the actor
    /// under its current view and serves, refused otherwise (never forwarded again), with the
    /// typed outcome the sender needs to decide whether it may send the request again.
    fn forwarded_call(
        &self,
        request: Request,
    ) -> impl Future<Output = Result<Reply, HopError>> + Send;

    /// Serves a cast another node forwarded here; see [`Hops::forwarded_call`].
    fn forwarded_cast(&self, request: Request)
        -> impl Future<Output = Result<(), HopError>> + Send;

    /// Answers another node's lease renewal.
    fn renew_lease(&self, request: RenewRequest) -> impl Future<Output = RenewReply> + Send;

    /// Accepts an identity handed over by its old owner: kept until the identity's first
    /// call here, which starts it from the handed-over state.
    ///
    /// A durable type's state goes into this node's store before the handoff is accepted
    /// (a node-local store: what it may hold for the identity is older), or is already there
    /// (a shared store); its first call here loads it.
    fn accept_handoff(&self, handoff: Handoff)
        -> impl Future<Output = Result<(), HopError>> + Send;
}

/// What a membership layer (gossip, a static list, a test) tells a node and learns from it.
///
/// ```
/// use mesh_actix::provider::MembershipFeed;
/// use mesh_actix::{InProcessTransport, Mesh, NodeId};
///
/// # actix_rt::System::new().block_on(async {
/// let network = InProcessTransport::new();
/// let a = network.start(Mesh::builder(NodeId::new("a").unwrap(), "a:1")).unwrap();
/// let b = network.start(Mesh::builder(NodeId::new("b").unwrap(), "b:1")).unwrap();
/// let mut updates = a.routing_updates();
/// let epoch = *updates.borrow_and_update();
///
/// // `b` as it describes itself (what gossip announces), told to `a`.
/// let announced = b.local_member();
/// assert_eq!((announced.node.as_str(), announced.addr.as_str()), ("b", "b:1"));
/// a.update_members(vec![announced]).await;
///
/// updates.changed().await.unwrap();
/// assert!(*updates.borrow() > epoch);
/// assert_eq!(a.routing().members().len(), 2);
/// # });
/// ```
pub trait MembershipFeed: sealed::Sealed {
    /// Tells this node what the membership layer knows of the other members. Members are
    /// learned from it; ownership moves only when the lease protocol fences a member or a
    /// member announces its leave. The local member is always kept as this node describes
    /// itself.
    fn update_members(&self, members: Vec<Member>) -> impl Future<Output = ()> + Send;

    /// Says that this node joins an existing cluster (the membership layer was given seeds):
    /// like [`MeshConfig::joining`](crate::MeshConfig::joining), for a node that was started
    /// before it knew. Until it has heard from another member it serves nothing; requests
    /// through it wait.
    fn await_cluster(&self) -> impl Future<Output = ()> + Send;

    /// Changes whenever a new routing snapshot is published (a capability registered, a
    /// member joined, changed or left); the value is the snapshot's epoch.
    fn routing_updates(&self) -> tokio::sync::watch::Receiver<u64>;

    /// This node as it describes itself to the cluster: id, address, capabilities,
    /// incarnation; what the membership layer announces.
    fn local_member(&self) -> Member;
}

/// What a front end (the HTTP routes) tells a node about requests it refused itself.
///
/// ```
/// use mesh_actix::provider::FrontEnd;
/// use mesh_actix::{Delivery, Mesh, NodeId, Request};
///
/// # actix_rt::System::new().block_on(async {
/// let mesh = Mesh::builder(NodeId::new("node-1").unwrap(), "127.0.0.1:4000")
///     .start()
///     .unwrap();
/// // A body without `id` and `capability` never becomes a request the mesh could count.
/// let error = Request::from_json(br#"{"module": "Counter"}"#).unwrap_err();
/// mesh.record_rejection(Delivery::Call, &error);
/// let stats = mesh.request_stats();
/// let calls: Vec<_> = stats.by_outcome(Delivery::Call).filter(|(_, n)| *n > 0).collect();
/// assert_eq!(calls, [("bad_request", 1)]);
/// # });
/// ```
pub trait FrontEnd: sealed::Sealed {
    /// Counts a call or cast that the front end refused before it could reach the mesh (a
    /// malformed body, a missing secret), so that the request counters cover every outcome.
    fn record_rejection(&self, delivery: Delivery, error: &MeshError);
}

mod sealed {
    /// Only [`Mesh`](crate::Mesh) implements the provider traits, so that methods can be added
    /// to them.
    pub trait Sealed {}

    impl Sealed for crate::Mesh {}
}
