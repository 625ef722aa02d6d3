//! The `mesh-node` program: a ready mesh node serving the HTTP API, with the example actors
//! registered. The `mesh-node` binary is [`run`]; so is the test harness's copy of it (package
//! `mesh-tests`), which is how tests start the very same program without building this package's
//! binary themselves.

use std::net::{SocketAddr, TcpListener};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Parser;
use mesh_actix::store::{EmbeddedStore, PostgresStore, StateStore};
use mesh_actix::{LeaseConfig, MeshBuilder, MeshConfig, NodeId, ShardCount};
use mesh_http::{HttpOptions, ServeOptions};

use crate::LogFormat;

/// A mesh node: owns the shards of its capabilities, activates actors on first use and
/// serves the mesh HTTP API.
#[derive(Debug, Parser)]
#[command(name = "mesh-node", version)]
struct Args {
    /// This node's id, unique in the cluster (default: `node@<listen>`)
    #[arg(long, env = "MESH_NODE_ID")]
    node_id: Option<String>,

    /// The address to serve HTTP on (host:port; port 0 picks a free one).
    #[arg(long, env = "MESH_LISTEN", default_value = "127.0.0.1:4000")]
    listen: String,

    /// Where other nodes reach this node (ip:port), when --listen is not routable, e.g.
    /// `0.0.0.0:4000` (default: the --listen address).
    #[arg(long, env = "MESH_ADVERTISE")]
    advertise: Option<SocketAddr>,

    /// Other nodes' --listen addresses to join (host:port,...). A host may be a DNS name
    /// that resolves to many nodes (a Kubernetes headless Service): it is resolved again
    /// every 5 s.
    #[arg(long, env = "MESH_SEEDS", value_delimiter = ',')]
    seeds: Vec<String>,

    /// Capabilities this node registers at start (a,b,...).
    #[arg(long, env = "MESH_CAPABILITIES", value_delimiter = ',')]
    capabilities: Vec<String>,

    /// The shard count; every node of a cluster must use the same.
    #[arg(long, env = "MESH_SHARDS", default_value_t = mesh_actix::ShardCount::default().get())]
    shards: u32,

    /// A shared secret every client request (but /health, /ready, /metrics, /openapi.json and the
    /// /dashboard page) must carry, as
    /// `Authorization: Bearer <secret>` (or just the secret) or `x-mesh-secret: <secret>`.
    #[arg(
        long,
        env = "MESH_SECRET",
        hide_env_values = true,
        conflicts_with = "secret_file"
    )]
    secret: Option<String>,

    /// Reads the secret from this file (its first line), so that it does not show in `ps`.
    #[arg(long, env = "MESH_SECRET_FILE")]
    secret_file: Option<std::path::PathBuf>,

    /// Seconds a request body may take to arrive completely; a slower one gets 408 and its
    /// connection is closed.
    #[arg(long, env = "MESH_BODY_TIMEOUT", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    body_timeout: u64,

    /// Seconds an idle keep-alive connection stays open.
    #[arg(long, env = "MESH_KEEP_ALIVE", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    keep_alive: u64,

    /// Seconds the head of a connection's first request may take to arrive, however steadily
    /// it trickles in; a slower one gets 408 and its connection is closed.
    #[arg(long, env = "MESH_HEADER_TIMEOUT", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    header_timeout: u64,

    /// Seconds a TLS handshake may take (with --tls-cert); a slower one's connection is closed.
    #[arg(long, env = "MESH_TLS_HANDSHAKE_TIMEOUT", default_value_t = 3,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    tls_handshake_timeout: u64,

    /// The largest request body accepted, in bytes.
    #[arg(long, env = "MESH_BODY_LIMIT", default_value_t = mesh_http::DEFAULT_BODY_LIMIT)]
    body_limit: usize,

    /// The most HTTP connections held at once; each new one beyond closes the oldest (default:
    /// what the file-descriptor limit allows, three descriptors per connection and 128 kept
    /// free, at most 25,000).
    #[arg(long, env = "MESH_MAX_CONNECTIONS")]
    max_connections: Option<NonZeroUsize>,

    /// The most HTTP connections held at once from one client IP (an IPv6 one by its /64);
    /// each new one beyond closes that IP's oldest (default: half of --max-connections). Raise
    /// it to --max-connections behind a proxy, whose connections all come from one IP.
    #[arg(long, env = "MESH_MAX_CONNECTIONS_PER_IP")]
    max_connections_per_ip: Option<NonZeroUsize>,

    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "MESH_WORKERS")]
    workers: Option<NonZeroUsize>,

    /// The ownership lease, in milliseconds: a node serves only while a quorum renewed it
    /// within this time; a dead node's shards move after about lease + 40 %. Every node of a
    /// cluster should use the same.
    #[arg(long, env = "MESH_LEASE_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(100..=60_000))]
    lease_ms: u64,

    /// Serve HTTPS only, with this PEM certificate chain (needs --tls-key); hops then go over
    /// HTTPS too. The certificate must name the address others dial (--advertise or --listen).
    #[arg(long, env = "MESH_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(long, env = "MESH_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,

    /// PEM certificates hops trust as roots (the cluster's CA); default: those of --tls-cert,
    /// enough for a cluster sharing one self-signed certificate.
    #[arg(long, env = "MESH_TLS_CA", requires = "tls_cert")]
    tls_ca: Option<std::path::PathBuf>,

    /// The directory of this node's embedded state store, where durable actors (`Account`)
    /// keep their state (default: `mesh-data/<node-id>` under the working directory). Not
    /// used with --store.
    #[arg(long, env = "MESH_DATA_DIR")]
    data_dir: Option<std::path::PathBuf>,

    /// A state store shared by the whole cluster instead of the embedded one, so that durable
    /// state survives the death of any node: `postgres://user:pass@host:port/db`.
    #[arg(long, env = "MESH_STORE", hide_env_values = true)]
    store: Option<String>,

    /// Seconds a durable activation may stay idle before it is passivated (its state is in
    /// the store; the next call activates it again), for actor types that set no timeout of
    /// their own; 0: never.
    #[arg(long, env = "MESH_IDLE_TIMEOUT", default_value_t = 600)]
    idle_timeout: u64,

    /// Which thread a new activation runs on: `caller-thread` (the HTTP worker that received
    /// its first call, so that its later calls there never cross threads) or `pool` (mesh's
    /// arbiters, one per core: for actors whose handlers block or run long).
    #[arg(long, env = "MESH_PLACEMENT", value_enum,
          default_value_t = crate::PlacementArg::from(mesh_actix::Placement::default()))]
    placement: crate::PlacementArg,

    /// Log lines as `text` or `json` (filter with RUST_LOG, e.g. `RUST_LOG=mesh_actix=debug`).
    #[arg(long, env = "MESH_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

/// Parses the command line (and `MESH_*` environment variables) and runs a node until SIGTERM or
/// ctrl-c, then leaves the cluster. Returns an error if the settings are wrong or the node cannot
/// start.
pub fn run() -> anyhow::Result<()> {
    actix_web::rt::System::new().block_on(serve(Args::parse()))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    crate::log_panics_briefly("mesh-node");
    // Before anything binds or joins: a wrong file fails the start at once.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            mesh_http::TlsConfig::from_pem_files(cert, key, args.tls_ca.as_deref())
                .context("cannot serve TLS (--tls-cert, --tls-key, --tls-ca)")?,
        ),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let listener = TcpListener::bind(&args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let advertise = args.advertise.unwrap_or(listener.local_addr()?);
    if advertise.ip().is_unspecified() {
        bail!(
            "--listen {} is not an address other nodes can dial: add --advertise <ip:port>",
            args.listen
        );
    }
    // Keep the address as the operator wrote it (e.g. a host name) unless the OS picked the
    // port or --advertise overrides it.
    let addr = match args.advertise {
        None if !args.listen.ends_with(":0") => args.listen.clone(),
        _ => advertise.to_string(),
    };
    let node_id = args
        .node_id
        .clone()
        .unwrap_or_else(|| format!("node@{addr}"));
    // Logging starts once the node id is known: the trace export names the node.
    #[cfg(feature = "otel")]
    let export = crate::otel::init_logging(args.log_format, &node_id)?;
    #[cfg(not(feature = "otel"))]
    crate::init_logging(args.log_format);
    // As many connections as the system lets this process hold, before sizing the bound.
    match mesh_http::raise_fd_limit() {
        Ok(limit) => tracing::debug!(limit, "file descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the file descriptor limit"),
    }
    let Some(shards) = ShardCount::new(args.shards) else {
        bail!("--shards must be at least 1");
    };
    let capabilities: Vec<&str> = args
        .capabilities
        .iter()
        .map(|c| c.trim())
        .filter(|c| !c.is_empty())
        .collect();

    let mut config = MeshConfig::new(NodeId::new(&node_id)?, addr.clone());
    config.shards = shards;
    config.lease = LeaseConfig::with_lease(Duration::from_millis(args.lease_ms));
    config.idle_timeout = Some(Duration::from_secs(args.idle_timeout)).filter(|t| !t.is_zero());
    config.store = Some(open_store(&args, &node_id)?);
    config.placement = args.placement.into();
    let builder = crate::register_examples(MeshBuilder::from_config(config));
    let builder = builder.capabilities(capabilities);

    let secret = match &args.secret_file {
        Some(path) => Some(read_secret(path)?),
        None => args.secret.clone().filter(|s| !s.is_empty()),
    };
    let options = ServeOptions {
        seeds: args.seeds.clone(),
        advertise: Some(advertise),
        http: HttpOptions {
            body_limit: args.body_limit,
            body_timeout: Duration::from_secs(args.body_timeout),
            secret,
        },
        workers: args.workers,
        keep_alive: Some(Duration::from_secs(args.keep_alive)),
        header_timeout: Some(Duration::from_secs(args.header_timeout)),
        tls_handshake_timeout: Some(Duration::from_secs(args.tls_handshake_timeout)),
        max_connections: args.max_connections.map(NonZeroUsize::get),
        max_connections_per_ip: args.max_connections_per_ip.map(NonZeroUsize::get),
        tls,
    };
    let node = mesh_http::serve(builder, listener, options).await?;
    let watched = node.mesh().clone();
    eprintln!("mesh-node {node_id} listening on {scheme}://{addr}");

    tokio::select! {
        signal = crate::shutdown_signal() => signal?,
        reason = watched.router_failure() => {
            // The node can no longer confirm its ownership and refuses everything: exit, so
            // that a supervisor restarts it as a new incarnation (EX_SOFTWARE).
            eprintln!("mesh-node {node_id}: {reason}; exiting");
            #[cfg(feature = "otel")]
            if let Some(export) = export {
                export.shutdown();
            }
            std::process::exit(70);
        }
    }
    eprintln!("mesh-node {node_id} leaving the cluster");
    node.shutdown().await?;
    // Last: the spans of the calls served while draining go too.
    #[cfg(feature = "otel")]
    if let Some(export) = export {
        export.shutdown();
    }
    eprintln!("mesh-node {node_id} stopped");
    Ok(())
}

/// The node's state store: the shared one of `--store`, else the embedded one in
/// `--data-dir` (default `mesh-data/<node-id>`).
fn open_store(args: &Args, node_id: &str) -> anyhow::Result<Arc<dyn StateStore>> {
    if let Some(url) = &args.store {
        let scheme = url.split("://").next().unwrap_or_default();
        if scheme != "postgres" && scheme != "postgresql" {
            bail!("--store must be a postgres://user:pass@host:port/db URL");
        }
        // The error never shows the password.
        let store = PostgresStore::connect(url).context("cannot use --store")?;
        return Ok(Arc::new(store));
    }
    let dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        // A node id may hold characters a file name cannot.
        None => std::path::Path::new("mesh-data").join(node_id.replace(['/', '\0'], "_")),
    };
    let store = EmbeddedStore::open(&dir).with_context(|| {
        format!(
            "cannot open the state store in --data-dir {}",
            dir.display()
        )
    })?;
    tracing::info!(path = %store.path().display(), "embedded state store");
    Ok(Arc::new(store))
}

/// The secret in `path`: its first line, without surrounding whitespace; never empty.
fn read_secret(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --secret-file {}", path.display()))?;
    let secret = text.lines().next().unwrap_or_default().trim();
    if secret.is_empty() {
        bail!("--secret-file {} is empty", path.display());
    }
    Ok(secret.to_owned())
}
