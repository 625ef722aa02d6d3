// Registering an actor that lacks `#[derive(MeshActor)]`: the error says to add it.
use mesh_actix::actix::{Actor, Context};
use mesh_actix::Mesh;

struct Plain;

impl Actor for Plain {
    type Context = Context<Self>;
}

fn register(mesh: &Mesh) {
    mesh.register::<Plain>();
}

fn main() {}
