//! How a node reaches the other nodes: implemented over HTTP by `mesh-http`, and in memory by
//! tests that want a deterministic cluster in one process.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use mesh_core::{Member, MeshError, NodeId, Reply, Request};
use parking_lot::RwLock;

use crate::mesh::{Mesh, Origin, WeakMesh};

/// Carries a request to its owner on another node, which serves it with
/// [`Mesh::call_from`](crate::Mesh::call_from) and [`Origin::Forwarded`](crate::Origin): it
/// never forwards it again.
pub trait RemoteTransport: Send + Sync + 'static {
    /// Delivers a call and waits for its reply for at most `remaining`.
    fn call(
        &self,
        owner: &Member,
        request: Request,
        remaining: Duration,
    ) -> BoxFuture<'static, Result<Reply, MeshError>>;

    /// Delivers a cast; resolves once the owner has accepted it (or within `remaining`).
    fn cast(
        &self,
        owner: &Member,
        request: Request,
        remaining: Duration,
    ) -> BoxFuture<'static, Result<(), MeshError>>;
}

/// A transport between [`Mesh`] nodes of one process: a forwarded request is handed straight
/// to the owner's `Mesh`. For tests that want a deterministic cluster without sockets, and for
/// hosting several nodes in one service.
///
/// It holds the nodes weakly: a node that has been dropped is unreachable, like a crashed
/// process.
///
/// ```
/// use mesh_actix::{InProcessTransport, Mesh, MeshConfig, NodeId, Request};
/// # use mesh_actix::{InitError, MeshActor, MeshInit, Payload};
/// # use mesh_actix::__private::actix::{Actor, Context, Handler, MessageResult};
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
/// let transport = InProcessTransport::new();
/// let a = Mesh::start(MeshConfig::new(NodeId::new("a").unwrap(), "a:1")).unwrap();
/// let b = Mesh::start(MeshConfig::new(NodeId::new("b").unwrap(), "b:1")).unwrap();
/// for node in [&a, &b] {
///     node.register::<Counter>();
///     node.register_capabilities(["counter"]).await.unwrap();
///     transport.connect(node).unwrap();
/// }
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
}

impl InProcessTransport {
    /// An empty transport.
    pub fn new() -> InProcessTransport {
        InProcessTransport::default()
    }

    /// Makes `mesh` reachable through this transport and sets this transport as its way to
    /// reach the others.
    pub fn connect(&self, mesh: &Mesh) -> Result<(), MeshError> {
        mesh.set_transport(Arc::new(self.clone()))?;
        self.nodes
            .write()
            .insert(mesh.node_id().clone(), mesh.downgrade());
        Ok(())
    }

    fn node(&self, owner: &Member) -> Result<Mesh, MeshError> {
        self.nodes
            .read()
            .get(owner.node.as_str())
            .and_then(WeakMesh::upgrade)
            .ok_or_else(|| {
                MeshError::OwnerUnavailable(format!("node {} is not reachable", owner.node))
            })
    }
}

impl RemoteTransport for InProcessTransport {
    fn call(
        &self,
        owner: &Member,
        request: Request,
        _remaining: Duration,
    ) -> BoxFuture<'static, Result<Reply, MeshError>> {
        let node = self.node(owner);
        async move { node?.call_from(request, Origin::Forwarded).await }.boxed()
    }

    fn cast(
        &self,
        owner: &Member,
        request: Request,
        _remaining: Duration,
    ) -> BoxFuture<'static, Result<(), MeshError>> {
        let node = self.node(owner);
        async move { node?.cast_from(request, Origin::Forwarded).await }.boxed()
    }
}
