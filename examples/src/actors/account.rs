use actix::prelude::*;
use mesh_actix::{ActorId, InitError, MeshActor, MeshInit, Payload, Snapshot};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// A bank account, durable: its balance is in the node's store, saved before every reply
/// that changed it, so a reply means the balance survives a crash, a restart of the node, a
/// move to another node and passivation (and, with a shared store, the node's death).
///
/// `{"action": "deposit", "amount": n}` (n a positive integer) adds n and replies
/// `{"ok": balance}`; `{"action": "withdraw", "amount": n}` takes n away and replies
/// `{"ok": balance}`, or `{"error": "insufficient_funds", "balance": balance}` when the
/// balance is less than n (nothing changes); `{"action": "balance"}` replies
/// `{"ok": balance}`; anything else replies `{"error": "unknown_action"}`. A deposit that
/// would overflow the balance (2^64 - 1) replies `{"error": "balance_overflow", "balance":
/// balance}` and changes nothing.
#[derive(MeshActor)]
#[mesh(durable)]
pub struct Account {
    balance: u64,
}

impl Actor for Account {
    type Context = Context<Self>;
}

impl MeshInit for Account {
    fn init(_id: &ActorId, _init_arg: Option<&Value>) -> Result<Self, InitError> {
        Ok(Account { balance: 0 })
    }
}

/// What an `Account` stores: `{"balance": n}`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountState {
    balance: u64,
}

impl Snapshot for Account {
    type State = AccountState;

    fn snapshot(&self) -> AccountState {
        AccountState {
            balance: self.balance,
        }
    }

    fn restore(_id: &ActorId, state: AccountState) -> Result<Self, InitError> {
        Ok(Account {
            balance: state.balance,
        })
    }
}

/// The `amount` of a deposit or withdrawal: a positive integer, or none.
fn amount(payload: &Payload) -> Option<u64> {
    payload
        .body
        .get("amount")
        .and_then(Value::as_u64)
        .filter(|&n| n > 0)
}

impl Handler<Payload> for Account {
    type Result = MessageResult<Payload>;

    fn handle(&mut self, msg: Payload, _ctx: &mut Context<Self>) -> Self::Result {
        let balance = self.balance;
        MessageResult(match (msg.action(), amount(&msg)) {
            (Some("deposit"), Some(n)) => match balance.checked_add(n) {
                Some(new) => {
                    self.balance = new;
                    json!({"ok": new})
                }
                None => json!({"error": "balance_overflow", "balance": balance}),
            },
            (Some("withdraw"), Some(n)) if n > balance => {
                json!({"error": "insufficient_funds", "balance": balance})
            }
            (Some("withdraw"), Some(n)) => {
                self.balance = balance - n;
                json!({"ok": self.balance})
            }
            (Some("balance"), _) => json!({"ok": balance}),
            _ => json!({"error": "unknown_action"}),
        })
    }
}
