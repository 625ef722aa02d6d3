use actix::prelude::*;
use mesh_actix::{ActorId, InitError, MeshActor, MeshInit, Payload};
use serde_json::{json, Value};

/// Counts calls: every payload adds 1 and replies `{"ok": count}`;
/// `{"action": "reset"}` sets the count to 0 and `{"action": "stop"}` stops the actor
/// (the next call activates a fresh one).
#[derive(MeshActor)]
pub struct Counter {
    count: u64,
}

impl Actor for Counter {
    type Context = Context<Self>;
}

impl MeshInit for Counter {
    fn init(_id: &ActorId, _init_arg: Option<&Value>) -> Result<Self, InitError> {
        Ok(Counter { count: 0 })
    }
}

impl Handler<Payload> for Counter {
    type Result = MessageResult<Payload>;

    fn handle(&mut self, msg: Payload, ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(match msg.action() {
            Some("reset") => {
                self.count = 0;
                json!({"ok": 0})
            }
            Some("stop") => {
                ctx.stop();
                json!({"ok": "stopping"})
            }
            _ => {
                self.count += 1;
                json!({"ok": self.count})
            }
        })
    }
}
