//! An existing actix-web service with a mesh node inside: the service keeps its own routes and
//! state, mounts every mesh route beside them, and takes its place in a cluster of `mesh-node`s
//! (or of other services like it) with one call, [`mesh_http::join`]. Run by the `embedded`
//! example:
//!
//! ```text
//! mesh-node --node-id node-1 --listen 127.0.0.1:4000 --capabilities counter,game
//! cargo run -p mesh-examples --example embedded -- --listen 127.0.0.1:8080 --seeds 127.0.0.1:4000
//! curl -s localhost:8080/hello
//! curl -s -XPOST localhost:8080/visit/alice
//! curl -s localhost:8080/cluster       # both nodes, "alive"
//! curl -s localhost:8080/nope          # {"error":{"code":"not_found",...}}
//! ```

use std::net::TcpListener;

use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::Context as _;
use clap::Parser;
use mesh_actix::{Mesh, NodeId, Request};
use mesh_http::JoinOptions;

use crate::{Counter, GameActor, LogFormat};

/// The service's settings.
#[derive(Debug, Parser)]
#[command(
    name = "embedded",
    about = "An actix-web service with a mesh node inside"
)]
pub struct Args {
    /// Where the service listens: HTTP, and gossip over UDP on the same port (port 0 picks a
    /// free one, printed at start).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Nodes of the cluster to join, as their `--listen` addresses (`host:port,...`); none
    /// starts a cluster.
    #[arg(long, value_delimiter = ',')]
    pub seeds: Vec<String>,
    /// This node's id (default: `embedded@<listen>`).
    #[arg(long)]
    pub node_id: Option<String>,
    /// The capabilities this node can own.
    #[arg(long, value_delimiter = ',', default_value = "counter,game")]
    pub capabilities: Vec<String>,
}

/// Parses the command line and runs the service until SIGTERM or ctrl-c, then leaves the
/// cluster.
pub fn run() -> anyhow::Result<()> {
    actix_web::rt::System::new().block_on(serve(Args::parse()))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    crate::init_logging(LogFormat::Text);
    let listener = TcpListener::bind(&args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let listen = listener.local_addr()?;
    let node_id = args.node_id.unwrap_or_else(|| format!("embedded@{listen}"));

    // Everything the node is made of, before it starts.
    let builder = Mesh::builder(NodeId::new(&node_id)?, listen.to_string())
        .register::<Counter>()
        .register::<GameActor>()
        .capabilities(&args.capabilities);
    // The one call: the mesh, its HTTP transport to the other nodes, gossip on `listen`, and a
    // place in the cluster of the seeds.
    let node = mesh_http::join(builder, JoinOptions::new(listen, args.seeds)).await?;

    let routes = node.routes();
    let mesh = node.mesh().clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(mesh.clone()))
            .route("/hello", web::get().to(hello))
            .route("/visit/{who}", web::post().to(visit))
            .configure(routes.clone())
            // Unknown paths get the JSON 404 of every mesh node, not actix's empty one.
            .default_service(web::to(mesh_http::not_found))
    })
    // The service leaves the cluster before its server stops (below).
    .disable_signals()
    // Hop batches from other nodes are answered a line per call: no Nagle delay between them.
    .tcp_nodelay(true)
    .listen(listener)?
    .run();
    let server_handle = server.handle();
    let serving = actix_web::rt::spawn(server);
    eprintln!("embedded {node_id} listening on http://{listen}");

    crate::shutdown_signal().await?;
    eprintln!("embedded {node_id} leaving the cluster");
    node.leave().await;
    server_handle.stop(true).await;
    serving.await??;
    Ok(())
}

/// The service's own route.
async fn hello() -> &'static str {
    "hello from the host service\n"
}

/// The service's own route, calling an actor through the Rust API: no HTTP hop when this node
/// owns `visits:<who>`, one when another node does.
async fn visit(mesh: web::Data<Mesh>, who: web::Path<String>) -> HttpResponse {
    let request = match Request::new("Counter", format!("visits:{who}"), "counter") {
        Ok(request) => request,
        Err(e) => return HttpResponse::BadRequest().body(e.to_string()),
    };
    match mesh.call(request).await {
        Ok(reply) => HttpResponse::Ok().body(format!(
            "{who} visited {} times (counted on {})\n",
            reply.result["ok"], reply.node
        )),
        Err(e) => HttpResponse::ServiceUnavailable().body(e.to_string()),
    }
}
