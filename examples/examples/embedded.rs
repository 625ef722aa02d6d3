//! Mesh inside an existing actix-web service, joined to a cluster of `mesh-node`s: see
//! [`mesh_examples::embedded`] (`examples/src/embedded.rs`), where the service is written.
//!
//! ```text
//! cargo run -p mesh-examples --example embedded -- --listen 127.0.0.1:8080 --seeds 127.0.0.1:4000
//! ```

fn main() -> anyhow::Result<()> {
    mesh_examples::embedded::run()
}
