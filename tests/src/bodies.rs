//! Request bodies for `/call` and `/cast`, for the example actors of `mesh-examples`.

use serde_json::{json, Value};

/// The capabilities of the standard test node: one per example actor.
pub const ALL_CAPABILITIES: [&str; 5] = ["counter", "game", "crasher", "sleeper", "account"];

/// The body of a `/call` or `/cast` request.
pub fn req(module: &str, id: &str, capability: &str, payload: Value) -> Value {
    json!({"module": module, "id": id, "capability": capability, "payload": payload})
}

/// A request body for the example `Counter` (capability `counter`).
pub fn counter(id: &str, payload: Value) -> Value {
    req("Counter", id, "counter", payload)
}

/// A request body for the example `GameActor` (capability `game`).
pub fn game(id: &str, payload: Value) -> Value {
    req("GameActor", id, "game", payload)
}

/// A request body for the example `Crasher` (capability `crasher`).
pub fn crasher(id: &str, payload: Value) -> Value {
    req("Crasher", id, "crasher", payload)
}

/// A request body asking the example `Sleeper` (capability `sleeper`) to sleep `sleep_ms`.
pub fn sleeper(id: &str, sleep_ms: u64) -> Value {
    req("Sleeper", id, "sleeper", json!({"sleep_ms": sleep_ms}))
}

/// A request body for the example `Account` (capability `account`).
pub fn account(id: &str, payload: Value) -> Value {
    req("Account", id, "account", payload)
}

/// `body` with `field` set to `value`, e.g. `with_field(game(..), "init_arg", json!({..}))`.
pub fn with_field(mut body: Value, field: &str, value: Value) -> Value {
    body[field] = value;
    body
}
