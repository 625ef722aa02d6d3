// A mesh actor without `impl MeshInit`: the error says what to add.
use mesh_actix::actix::{Actor, Context, Handler, MessageResult};
use mesh_actix::{MeshActor, Payload};
use serde_json::json;

#[derive(MeshActor)]
struct NoInit;

impl Actor for NoInit {
    type Context = Context<Self>;
}

impl Handler<Payload> for NoInit {
    type Result = MessageResult<Payload>;
    fn handle(&mut self, _: Payload, _: &mut Context<Self>) -> Self::Result {
        MessageResult(json!({"ok": 1}))
    }
}

fn main() {}
