//! A standalone node in one call: the HTTP server with every mesh route, the HTTP transport
//! to other nodes, and gossip membership, with an orderly way out.

use std::net::{SocketAddr, TcpListener};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{ServerHandle, Service as _};
use actix_web::{web, App, HttpServer};
use mesh_actix::{Mesh, MeshBuilder, StartError};

use crate::cluster::{join_observed, ClusterNode, JoinOptions};
use crate::connections::{default_max_connections, default_max_connections_per_ip, Connections};
use crate::membership::MembershipError;
use crate::routes::{not_found, HttpOptions};
use crate::tls::TlsConfig;

/// How long a TLS handshake may take by default before its connection is closed (actix-web's
/// default, named here because the README documents it).
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long the head of a connection's first request may take to arrive by default.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an idle keep-alive connection stays open by default.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(5);

/// How [`serve`] runs a node.
///
/// ```no_run
/// use std::net::TcpListener;
/// use mesh_actix::{Mesh, NodeId};
/// use mesh_http::ServeOptions;
///
/// #[actix_web::main]
/// async fn main() -> anyhow::Result<()> {
///     let listener = TcpListener::bind("127.0.0.1:4001")?;
///     let builder = Mesh::builder(NodeId::new("node-2")?, "127.0.0.1:4001");
///     let options = ServeOptions { seeds: vec!["127.0.0.1:4000".into()], ..ServeOptions::default() };
///     let node = mesh_http::serve(builder, listener, options).await?;
///     actix_web::rt::signal::ctrl_c().await?;
///     node.shutdown().await?;
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Other nodes' HTTP (and gossip) addresses to join; empty to start a cluster.
    pub seeds: Vec<String>,
    /// Where other nodes reach this one, when the listener's address is not routable
    /// (`0.0.0.0`, NAT). Must match the mesh's `MeshConfig::addr`.
    pub advertise: Option<SocketAddr>,
    /// Body limit and secret of the routes; the secret also keys the signatures of hops and the
    /// sealing of gossip (it is never sent).
    pub http: HttpOptions,
    /// HTTP worker threads; one per core when `None`.
    pub workers: Option<NonZeroUsize>,
    /// How long an idle keep-alive connection stays open; [`DEFAULT_KEEP_ALIVE`] when `None`.
    pub keep_alive: Option<Duration>,
    /// How long the head of a connection's first request may take to arrive (from the
    /// connection, or the end of its TLS handshake), however steadily its bytes trickle in;
    /// then `408` and the connection is closed. [`DEFAULT_HEADER_TIMEOUT`] when `None`.
    pub header_timeout: Option<Duration>,
    /// How long a TLS handshake may take before its connection is closed;
    /// [`TLS_HANDSHAKE_TIMEOUT`] when `None`. Only with [`ServeOptions::tls`].
    pub tls_handshake_timeout: Option<Duration>,
    /// The most connections held at once; beyond it each new connection closes the oldest
    /// one. [`default_max_connections`] when `None` (what the fd limit allows).
    pub max_connections: Option<usize>,
    /// The most connections held at once from one client IP (an IPv6 client counts by its
    /// /64); beyond it each new connection from there closes that IP's oldest one, so that one
    /// address cannot take the room of all the others. Half of the connection bound when `None`
    /// ([`default_max_connections_per_ip`]).
    pub max_connections_per_ip: Option<usize>,
    /// Serve HTTPS only, and make hops over HTTPS trusting its roots; plain HTTP when `None`.
    pub tls: Option<TlsConfig>,
}

/// Why a node could not start serving (or joining: [`crate::join`]).
///
/// ```
/// use mesh_actix::{Mesh, NodeId, StartError};
/// use mesh_http::{JoinOptions, ServeError};
///
/// # actix_rt::System::new().block_on(async {
/// let builder = Mesh::builder(NodeId::new("web-1").unwrap(), "127.0.0.1:8080").capabilities([""]);
/// let options = JoinOptions::new("127.0.0.1:8080".parse().unwrap(), Vec::new());
/// match mesh_http::join(builder, options).await {
///     Err(ServeError::Start(StartError::Capabilities(error))) => {
///         assert_eq!(error.code().as_str(), "bad_request");
///     }
///     Err(other) => panic!("{other}"),
///     Ok(_) => panic!("started with an empty capability"),
/// }
/// # });
/// ```
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listener or the server failed.
    #[error("HTTP server: {0}")]
    Io(#[from] std::io::Error),
    /// The HTTP client for node-to-node hops could not be built.
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// The mesh could not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// Gossip could not start.
    #[error(transparent)]
    Membership(#[from] MembershipError),
}

/// A node serving HTTP and taking part in the cluster: what [`serve`] returns (see
/// [`ServeOptions`] for the options). [`ServingNode::shutdown`] it before the process exits.
///
/// A node alone on the loopback, as a test of a service might run one:
///
/// ```
/// use std::net::TcpListener;
/// use mesh_actix::{Mesh, NodeId};
/// use mesh_http::ServeOptions;
///
/// # actix_rt::System::new().block_on(async {
/// let listener = TcpListener::bind("127.0.0.1:0").unwrap();
/// let addr = listener.local_addr().unwrap();
/// let builder = Mesh::builder(NodeId::new("node-1").unwrap(), addr.to_string());
/// let node = mesh_http::serve(builder, listener, ServeOptions::default()).await.unwrap();
/// assert_eq!(node.mesh().node_id().as_str(), "node-1");
///
/// let health = reqwest::get(format!("http://{addr}/health")).await.unwrap();
/// assert!(health.status().is_success());
/// node.shutdown().await.unwrap();
/// # });
/// ```
pub struct ServingNode {
    node: ClusterNode,
    http: ServerHandle,
    serving: actix_web::rt::task::JoinHandle<std::io::Result<()>>,
}

/// Starts the node `builder` describes and serves it on `listener`: every mesh route, the
/// HTTP transport to other nodes, gossip on the same address over UDP, joining
/// `options.seeds` ([`crate::join`] and an `HttpServer` of its own). Other nodes reach this
/// one at `options.advertise`, or at the listener's address, which should be the mesh's
/// `MeshConfig::addr`.
pub async fn serve(
    builder: MeshBuilder,
    listener: TcpListener,
    options: ServeOptions,
) -> Result<ServingNode, ServeError> {
    let listen = listener.local_addr()?;
    let bound = options
        .max_connections
        .unwrap_or_else(default_max_connections);
    let per_ip = options
        .max_connections_per_ip
        .unwrap_or_else(|| default_max_connections_per_ip(bound));
    let keep_alive = options.keep_alive.unwrap_or(DEFAULT_KEEP_ALIVE);
    let header_timeout = options.header_timeout.unwrap_or(DEFAULT_HEADER_TIMEOUT);
    let connections = Connections::new(bound, per_ip, keep_alive + header_timeout);
    actix_web::rt::spawn(Connections::sweep(Arc::downgrade(&connections)));
    tracing::info!(
        max_connections = bound,
        max_connections_per_ip = connections.bound_per_ip(),
        "connections bounded"
    );
    let join = JoinOptions {
        listen,
        advertise: options.advertise,
        seeds: options.seeds,
        http: options.http,
        path_prefix: None,
        tls: options.tls.clone(),
    };
    let node = join_observed(builder, join, Some(connections.clone())).await?;
    let routes = node.routes();
    let server = HttpServer::new(move || {
        App::new()
            // Each request marks its connection busy while it is served: the sweep closes
            // only connections with none.
            .wrap_fn(|request, service| {
                let busy = crate::connections::busy(request.request());
                let response = service.call(request);
                async move {
                    let response = response.await;
                    drop(busy);
                    response
                }
            })
            .configure(routes.clone())
            .default_service(web::to(not_found))
    })
    .disable_signals()
    .shutdown_timeout(5)
    // A first request's head must arrive within the header timeout (a later one within the
    // keep-alive and the header timeout, by the sweep), its body within the routes' body
    // timeout, and an idle connection closes after the keep-alive: no connection is held for
    // ever.
    .client_request_timeout(header_timeout)
    .keep_alive(keep_alive)
    // Replies leave at once: a batch's reply is written a line per call as each completes,
    // and with Nagle's algorithm a line behind an unacknowledged one waited for the other
    // side's delayed ACK (~40 ms per batch; BENCHMARKS.md, "Hops").
    .tcp_nodelay(true)
    // With TLS, the handshake (before the head) must end within its own timeout.
    .tls_handshake_timeout(
        options
            .tls_handshake_timeout
            .unwrap_or(TLS_HANDSHAKE_TIMEOUT),
    )
    .on_connect(move |connection, data| connections.on_connect(connection, data));
    let mut server = match options.tls {
        Some(tls) => server.listen_rustls_0_23(listener, tls.server().clone())?,
        None => server.listen(listener)?,
    };
    let workers = options
        .workers
        .or_else(|| std::thread::available_parallelism().ok())
        .map_or(1, NonZeroUsize::get);
    // Twice the bound across the workers (see `crate::connections`): room for connections
    // shed but not yet closed, without running out of descriptors.
    server = server
        .workers(workers)
        .max_connections((2 * bound).div_ceil(workers));
    let server = server.run();
    let http = server.handle();
    let serving = actix_web::rt::spawn(server);
    Ok(ServingNode {
        node,
        http,
        serving,
    })
}

impl ServingNode {
    /// The node's mesh.
    pub fn mesh(&self) -> &Mesh {
        self.node.mesh()
    }

    /// Leaves the cluster gracefully ([`ClusterNode::leave`]: stops serving and stops every
    /// activation, for at most 5 s, announces the leave so that others take this node's shards
    /// at once, lets the news spread), finishes in-flight requests (for at most 5 s) and stops
    /// the server.
    pub async fn shutdown(self) -> std::io::Result<()> {
        self.node.leave().await;
        self.http.stop(true).await;
        self.serving.await.map_err(std::io::Error::other)?
    }
}
