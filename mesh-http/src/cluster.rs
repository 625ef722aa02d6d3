//! A node of a cluster inside any actix-web service, in one call: [`join`] starts the mesh
//! with the HTTP transport, joins the gossip, and hands back the routes to mount.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use mesh_actix::{Mesh, MeshBuilder};

use crate::connections::Connections;
use crate::membership::{GossipOptions, Membership};
use crate::peer_load::PeerProbe;
use crate::routes::{mount, shared_state, HttpOptions, Shared};
use crate::serve::ServeError;
use crate::tls::TlsConfig;
use crate::transport::HttpTransport;

/// How long [`ClusterNode::leave`] waits at most for this node's activations to stop (and
/// hand over) before it announces the leave anyway.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How a node takes part in its cluster over HTTP and gossip.
///
/// ```
/// use mesh_http::{HttpOptions, JoinOptions};
///
/// let listen = "0.0.0.0:8080".parse().unwrap();
/// let mut options = JoinOptions::new(listen, vec!["mesh-headless:4000".into()]);
/// options.advertise = Some("10.0.0.7:8080".parse().unwrap()); // what the others dial
/// options.http = HttpOptions { secret: Some("s3cret".into()), ..HttpOptions::default() };
/// options.path_prefix = Some("/mesh".into()); // every node mounts the routes there
/// ```
#[derive(Debug, Clone)]
pub struct JoinOptions {
    /// The address the service's HTTP server listens on; gossip uses UDP on the same address,
    /// and hops to other nodes leave from its IP when it names one.
    pub listen: SocketAddr,
    /// Where other nodes reach this one (HTTP and gossip) when `listen` is not routable
    /// (`0.0.0.0`, NAT); `listen` when `None`. The mesh's `MeshConfig::addr` must name the same
    /// address.
    pub advertise: Option<SocketAddr>,
    /// Other nodes' addresses (`host:port`, a DNS name may stand for many); empty to start a
    /// cluster. With seeds the node serves nothing until it has heard from their cluster.
    pub seeds: Vec<String>,
    /// Body limit, body timeout and secret of the routes; the secret also keys the signatures
    /// of hops and the sealing of gossip (it is never sent).
    pub http: HttpOptions,
    /// Where the service mounts the mesh routes (`"/mesh"` for
    /// `web::scope("/mesh").configure(node.routes())`), so that this node's hops find the
    /// others' `/mesh/internal/...`. Every node of a cluster must mount them at the same
    /// place: `mesh-node` mounts them at the root, the default (`None`).
    pub path_prefix: Option<String>,
    /// Hops over HTTPS, trusting its roots (the service then serves HTTPS with it too);
    /// plain HTTP when `None`.
    pub tls: Option<TlsConfig>,
}

impl JoinOptions {
    /// Listen on `listen` and join `seeds` (none: start a cluster), with default routes, at
    /// the root, over plain HTTP.
    pub fn new(listen: SocketAddr, seeds: Vec<String>) -> JoinOptions {
        JoinOptions {
            listen,
            advertise: None,
            seeds,
            http: HttpOptions::default(),
            path_prefix: None,
            tls: None,
        }
    }
}

/// A started node that takes part in its cluster: its [`Mesh`], its gossip membership and its
/// routes. [`ClusterNode::leave`] it before the service exits. See [`join`] for a service that
/// serves one.
///
/// ```
/// use actix_web::{test, App};
/// use mesh_actix::{Mesh, NodeId};
/// use mesh_http::JoinOptions;
///
/// # actix_rt::System::new().block_on(async {
/// // A cluster of one (no seeds) on the loopback, on a port the system picks.
/// let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
/// let listen = listener.local_addr().unwrap();
/// let builder = Mesh::builder(NodeId::new("web-1").unwrap(), listen.to_string());
/// let node = mesh_http::join(builder, JoinOptions::new(listen, Vec::new())).await.unwrap();
/// assert_eq!(node.mesh().node_id().as_str(), "web-1");
///
/// // The routes, mounted as in the service's `App`.
/// let app = test::init_service(App::new().configure(node.routes())).await;
/// let request = test::TestRequest::get().uri("/health").to_request();
/// let health = test::call_service(&app, request).await;
/// assert!(health.status().is_success());
/// node.leave().await;
/// # });
/// ```
pub struct ClusterNode {
    mesh: Mesh,
    membership: Membership,
    routes: Shared,
}

/// Starts the node `builder` describes as a member of the cluster of `options.seeds` (or of a
/// new one): with the HTTP transport to the other nodes and gossip on `options.listen`. Mount
/// [`ClusterNode::routes`] in the service's `App` and serve it on `options.listen`.
///
/// ```no_run
/// use actix_web::{web, App, HttpServer};
/// use mesh_actix::{Mesh, NodeId};
/// use mesh_http::JoinOptions;
///
/// #[actix_web::main]
/// async fn main() -> anyhow::Result<()> {
///     let listen = "127.0.0.1:8080".parse()?;
///     let builder = Mesh::builder(NodeId::new("web-1")?, "127.0.0.1:8080");
///     let seeds = vec!["127.0.0.1:4000".to_owned()];
///     let node = mesh_http::join(builder, JoinOptions::new(listen, seeds)).await?;
///     let routes = node.routes();
///     HttpServer::new(move || {
///         App::new()
///             .configure(routes.clone())
///             .default_service(web::to(mesh_http::not_found))
///     })
///     .bind(listen)?
///     .run()
///     .await?;
///     node.leave().await;
///     Ok(())
/// }
/// ```
pub async fn join(builder: MeshBuilder, options: JoinOptions) -> Result<ClusterNode, ServeError> {
    join_observed(builder, options, None).await
}

/// [`join`], with the connections of [`crate::serve`]'s server shown in `/metrics`.
pub(crate) async fn join_observed(
    builder: MeshBuilder,
    options: JoinOptions,
    connections: Option<Arc<Connections>>,
) -> Result<ClusterNode, ServeError> {
    let JoinOptions {
        listen,
        advertise,
        seeds,
        http,
        path_prefix,
        tls,
    } = options;
    let secret = http.secret.clone();
    // Hops leave from the address this node listens on, when it names one.
    let local = Some(listen.ip()).filter(|ip| !ip.is_unspecified());
    let mut transport = match &tls {
        Some(tls) => HttpTransport::over_tls(secret.clone(), local, tls)?,
        None => HttpTransport::from_address(secret.clone(), local)?,
    };
    if let Some(prefix) = path_prefix {
        transport = transport.with_path_prefix(prefix);
    }
    let joining = builder.config().joining || !seeds.is_empty();
    let shards = builder.config().shards;
    let mesh = builder.joining(joining).transport(transport).start()?;
    let mut gossip = GossipOptions::new(listen, seeds, shards, secret.as_deref());
    gossip.advertise = advertise.unwrap_or(listen);
    let membership = Membership::join(mesh.clone(), gossip).await?;
    // One state for every worker: a hop's nonce is refused as a replay whichever worker it
    // reaches.
    // The dashboard reads the other nodes' load from their /metrics, over HTTPS when hops are.
    let peers = Some(PeerProbe::new(tls.as_ref())?);
    let gossip_stats = membership.gossip_stats();
    let routes = shared_state(mesh.clone(), http, gossip_stats, connections, peers);
    Ok(ClusterNode {
        mesh,
        membership,
        routes,
    })
}

impl ClusterNode {
    /// This node's mesh, for the service's own handlers.
    pub fn mesh(&self) -> &Mesh {
        &self.mesh
    }

    /// Every mesh route, to mount in each worker's `App` (`.configure(routes.clone())`, or
    /// under the scope of [`JoinOptions::path_prefix`]). Every worker shares one state.
    pub fn routes(&self) -> impl Fn(&mut web::ServiceConfig) + Clone {
        mount(self.routes.clone())
    }

    /// Leaves the cluster gracefully: stops serving and stops every activation (handing each
    /// over to its new owner; at most [`DRAIN_TIMEOUT`]), announces the leave so that the
    /// others take this node's shards at once, lets the news spread and stops gossiping. Stop
    /// the HTTP server after it: hops still in flight are answered meanwhile.
    pub async fn leave(self) {
        self.mesh.drain(DRAIN_TIMEOUT).await;
        self.membership.leave().await;
    }
}
