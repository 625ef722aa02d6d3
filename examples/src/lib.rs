//! The example actors of the mesh contract, registered by `mesh-node`:
//! [`Counter`], [`GameActor`], [`Crasher`] and [`Sleeper`]. Each lives in its own module and
//! is an ordinary actix actor with `#[derive(MeshActor)]`.

mod actors;

pub use actors::{Counter, Crasher, GameActor, Sleeper};

use mesh_actix::Mesh;

/// Registers every example actor type on `mesh`.
pub fn register_examples(mesh: &Mesh) {
    mesh.register::<Counter>()
        .register::<GameActor>()
        .register::<Crasher>()
        .register::<Sleeper>();
}
