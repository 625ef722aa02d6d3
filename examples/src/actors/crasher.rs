use actix::prelude::*;
use mesh_actix::{ActorId, InitError, MeshActor, MeshInit, Payload};
use serde_json::{json, Value};

/// Panics on `{"action": "crash"}`; otherwise replies how many calls this activation handled.
#[derive(MeshActor)]
pub struct Crasher {
    handled: u64,
}

impl Actor for Crasher {
    type Context = Context<Self>;
}

impl MeshInit for Crasher {
    fn init(_id: &ActorId, _init_arg: Option<&Value>) -> Result<Self, InitError> {
        Ok(Crasher { handled: 0 })
    }
}

impl Handler<Payload> for Crasher {
    type Result = MessageResult<Payload>;

    fn handle(&mut self, msg: Payload, _ctx: &mut Context<Self>) -> Self::Result {
        if msg.action() == Some("crash") {
            panic!("boom!");
        }
        self.handled += 1;
        MessageResult(json!({"ok": self.handled}))
    }
}
