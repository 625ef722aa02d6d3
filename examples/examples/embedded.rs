//! Mesh inside an existing actix-web service: the service keeps its own routes and state, and
//! one `configure` call mounts every mesh route beside them.
//!
//! ```text
//! cargo run -p mesh-examples --example embedded -- 127.0.0.1:8080
//! curl -s localhost:8080/hello
//! curl -s -XPOST localhost:8080/call -H 'content-type: application/json' \
//!      -d '{"module":"Counter","id":"visits","capability":"counter"}'
//! curl -s -XPOST localhost:8080/visit/alice
//! ```

use actix_web::{web, App, HttpResponse, HttpServer};
use mesh_actix::{Mesh, MeshConfig, NodeId, Request};

/// The service's own route, calling an actor through the Rust API (no HTTP hop, no JSON
/// encoding of the payload).
async fn visit(mesh: web::Data<Mesh>, who: web::Path<String>) -> HttpResponse {
    let request = match Request::new("Counter", format!("visits:{who}"), "counter") {
        Ok(request) => request,
        Err(e) => return HttpResponse::BadRequest().body(e.to_string()),
    };
    match mesh.call(request).await {
        Ok(reply) => HttpResponse::Ok().body(format!("{who} visited {}\n", reply.result["ok"])),
        Err(e) => HttpResponse::ServiceUnavailable().body(e.to_string()),
    }
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let mesh = Mesh::start(MeshConfig::new(NodeId::new("embedded")?, listen.clone()))?;
    mesh_examples::register_examples(&mesh);
    mesh.register_capabilities(["counter", "game"]).await?;

    eprintln!("embedded service on http://{listen}: /hello, /visit/<name> and the mesh routes");
    HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(mesh.clone()))
            .route(
                "/hello",
                web::get().to(|| async { "hello from the host service\n" }),
            )
            .route("/visit/{who}", web::post().to(visit))
            .configure(mesh_http::configure(mesh.clone()))
    })
    .bind(&listen)?
    .run()
    .await?;
    Ok(())
}
