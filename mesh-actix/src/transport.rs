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
