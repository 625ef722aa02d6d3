//! `mesh-node`: a ready mesh node serving the HTTP API, with the example actors registered
//! (see [`mesh_examples::node`]).

fn main() -> anyhow::Result<()> {
    mesh_examples::node::run()
}
