// A mesh actor without `impl Handler<Payload>`: one error, saying what to add.
use mesh_actix::actix::{Actor, Context};
use mesh_actix::{ActorId, InitError, MeshActor, MeshInit};
use serde_json::Value;

#[derive(MeshActor)]
struct Forgot {
    count: u64,
}

impl Actor for Forgot {
    type Context = Context<Self>;
}

impl MeshInit for Forgot {
    fn init(_: &ActorId, _: Option<&Value>) -> Result<Self, InitError> {
        Ok(Forgot { count: 0 })
    }
}

fn main() {}
