// `#[mesh(durable)]` without `impl Snapshot`: the error says what to add.
use mesh_actix::actix::{Actor, Context, Handler, MessageResult};
use mesh_actix::{ActorId, InitError, MeshActor, MeshInit, Payload};
use serde_json::{json, Value};

#[derive(MeshActor)]
#[mesh(durable)]
struct Ledger {
    balance: u64,
}

impl Actor for Ledger {
    type Context = Context<Self>;
}

impl MeshInit for Ledger {
    fn init(_: &ActorId, _: Option<&Value>) -> Result<Self, InitError> {
        Ok(Ledger { balance: 0 })
    }
}

impl Handler<Payload> for Ledger {
    type Result = MessageResult<Payload>;
    fn handle(&mut self, _: Payload, _: &mut Context<Self>) -> Self::Result {
        MessageResult(json!({"ok": self.balance}))
    }
}

fn main() {}
