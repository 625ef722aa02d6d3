use actix::prelude::*;
use mesh_actix::{ActorId, InitError, MeshActor, MeshInit, Payload, Snapshot};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Counts calls: every payload adds 1 and replies `{"ok": count}`;
/// `{"action": "reset"}` sets the count to 0 and `{"action": "stop"}` stops the actor
/// (the next call activates a fresh one). Its count is handed over when a planned change
/// (a join, a graceful leave) moves it to another node.
#[derive(MeshActor)]
#[mesh(snapshot)]
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

/// What a `Counter` hands over: `{"count": n}`.
#[derive(Serialize, Deserialize)]
pub struct CounterState {
    count: u64,
}

impl Snapshot for Counter {
    type State = CounterState;

    fn snapshot(&self) -> CounterState {
        CounterState { count: self.count }
    }

    fn restore(_id: &ActorId, state: CounterState) -> Result<Self, InitError> {
        Ok(Counter { count: state.count })
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
