use std::time::Duration;

use actix::prelude::*;
use mesh_actix::{ActorId, InitError, MeshActor, MeshInit, Payload};
use serde_json::{json, Value};

/// `{"sleep_ms": n}` waits n ms on an actix timer (its thread keeps serving other actors),
/// then replies `{"ok": n}`.
#[derive(MeshActor)]
pub struct Sleeper;

impl Actor for Sleeper {
    type Context = Context<Self>;
}

impl MeshInit for Sleeper {
    fn init(_id: &ActorId, _init_arg: Option<&Value>) -> Result<Self, InitError> {
        Ok(Sleeper)
    }
}

impl Handler<Payload> for Sleeper {
    type Result = ResponseActFuture<Self, Value>;

    fn handle(&mut self, msg: Payload, _ctx: &mut Context<Self>) -> Self::Result {
        let ms = msg
            .body
            .get("sleep_ms")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        Box::pin(
            actix::clock::sleep(Duration::from_millis(ms))
                .into_actor(self)
                .map(move |_, _, _| json!({"ok": ms})),
        )
    }
}
