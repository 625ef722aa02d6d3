//! The HTTP face of a mesh node, on actix-web.
//!
//! Three ways to put a node on HTTP, from the most to the least given:
//! - [`serve`]: a standalone node (what `mesh-node` runs): the node, its own `HttpServer`
//!   with every route and the connection bounds, the HTTP transport and gossip;
//! - [`join`]: a node of a cluster inside your own actix-web service: the node, the HTTP
//!   transport and gossip, and the routes ([`ClusterNode::routes`]) to mount in your `App`;
//! - [`configure`]: the routes of a node alone, mounted into any `App`, beside the app's own
//!   routes. Pair it with [`not_found`] as the app's default service, so that unknown paths
//!   get the JSON 404 of the contract:
//!
//! ```no_run
//! use actix_web::{web, App, HttpServer};
//! use mesh_actix::{Mesh, NodeId};
//!
//! #[actix_web::main]
//! async fn main() -> std::io::Result<()> {
//!     let mesh = Mesh::builder(NodeId::new("node-1").unwrap(), "127.0.0.1:8080")
//!         .start()
//!         .expect("inside an actix System");
//!     HttpServer::new(move || {
//!         App::new()
//!             .configure(mesh_http::configure(mesh.clone()))
//!             .route("/hello", web::get().to(|| async { "hello" }))
//!             .default_service(web::to(mesh_http::not_found))
//!     })
//!     .bind("127.0.0.1:8080")?
//!     .run()
//!     .await
//! }
//! ```
//!
//! Routes: `POST /call`, `POST /cast`, `GET /owner`, `GET /cluster`, `POST /capabilities`,
//! `GET /health`, `GET /ready`, `GET /metrics`, `GET /openapi.json` (an OpenAPI 3 document of
//! them all, served without the secret), `GET /dashboard` (a live page of the cluster, served
//! without the secret) and `GET /dashboard.json` (the reading it refreshes from), and the node-to-node routes [`HttpTransport`] posts
//! to: `POST /internal/call` and `POST /internal/cast`, which serve a request only if this
//! node owns it (a request is forwarded at most once), `POST /internal/batch` (many
//! calls in one request, answered a JSON line each as they complete: see
//! [`HttpTransport::with_max_in_flight`]), `POST /internal/lease` and `POST /internal/handoff`. Every error is `{"error": {"code", "message"}}` with the
//! contract's status for its code ([`HttpError`]). Handlers are thin: they parse, call
//! [`Mesh`](mesh_actix::Mesh), and render.

mod auth;
mod batch;
mod body;
mod cluster;
mod connections;
mod dashboard;
mod error;
mod membership;
mod metrics;
mod openapi;
#[cfg(feature = "otel")]
pub mod otel;
mod peer_load;
mod routes;
mod sealing;
mod serve;
mod signing;
mod spans;
mod tls;
mod trace;
mod transport;

pub use batch::MAX_BATCH_CALLS;
pub use cluster::{join, ClusterNode, JoinOptions, DRAIN_TIMEOUT};
pub use connections::{
    default_max_connections, default_max_connections_per_ip, fd_limits, raise_fd_limit, FD_RESERVE,
};
pub use error::HttpError;
pub use membership::{GossipOptions, Membership, MembershipError, SEED_LOOKUP_TIMEOUT};
pub use routes::{
    configure, configure_with, not_found, HttpOptions, DEFAULT_BODY_LIMIT, DEFAULT_BODY_TIMEOUT,
};
pub use sealing::{GossipStats, MAX_DATAGRAM, MAX_SEEN_DATAGRAMS, SEAL_OVERHEAD};
pub use serve::{
    serve, ServeError, ServeOptions, ServingNode, DEFAULT_HEADER_TIMEOUT, DEFAULT_KEEP_ALIVE,
    TLS_HANDSHAKE_TIMEOUT,
};
pub use signing::{ClusterKey, SignatureError, MAX_NONCES, MAX_SKEW, SIGNATURE_HEADER};
pub use tls::{TlsConfig, TlsError};
pub use trace::{TraceContext, TraceId, TRACEPARENT};
pub use transport::{BatchStats, HttpTransport};
