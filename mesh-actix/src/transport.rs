//! How a node reaches the other nodes: implemented over HTTP by `mesh-http`, and in memory by
//! tests that want a deterministic cluster in one process.

use std::time::Duration;

use futures_util::future::BoxFuture;
use mesh_core::{Member, MeshError, Reply, Request};

/// Carries a request to its owner on another node, which serves it with
/// [`Mesh::serve_forwarded_call`](crate::Mesh::serve_forwarded_call) and never forwards it
/// again.
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
