//! The node the scenarios run, the test-only actors it registers next to the contract's example
//! actors, and request helpers.
//!
//! The scenarios use the real example actors of `mesh-examples` (`Counter`, `GameActor`,
//! `Crasher`, `Sleeper`) wherever the contract's behaviour is what they need. The actors here
//! exist only for what the examples do not do:
//! - [`HoldingCounter`] can `hold` its mailbox, to queue calls behind it in a fixed order, and
//!   counts its live values, to see whether one outlives its activation;
//! - [`IdleStopper`] stops itself from a timer, outside any handler (rule 7);
//! - [`AsyncCrasher`] panics inside the future of an async handler;
//! - [`NamedActor`] is registered under a `#[mesh(name = "...")]` override.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use actix::prelude::*;
use futures_util::future::join_all;
use mesh_actix::{
    ActorId, InitError, Mesh, MeshActor, MeshBuilder, MeshConfig, MeshError, MeshInit, NodeId,
    Payload, Reply, Request,
};
use serde_json::{json, Value};

/// The id of the node every scenario runs.
pub const NODE: &str = "n1";

/// Every panic a test-only actor raises on purpose carries this marker, so that the panic hook
/// can keep them out of the test output.
const CRASH_MARKER: &str = "intentional test crash";

/// How long `eventually` waits before it gives up: generous, the machine is noisy.
pub const EVENTUALLY: Duration = Duration::from_secs(10);

// --- Test-only actors ---------------------------------------------------------------------------

/// Live `HoldingCounter` values (built by `init`, not yet dropped), by actor id.
static LIVE_HOLDING_COUNTERS: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());

fn live_holding_counters_mut<R>(f: impl FnOnce(&mut BTreeMap<String, usize>) -> R) -> R {
    f(&mut LIVE_HOLDING_COUNTERS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()))
}

/// How many `HoldingCounter` values of actor `id` exist right now. Every test of this binary
/// shares the count: a test that reads it uses an id no other test uses.
pub fn live_holding_counters(id: &str) -> usize {
    live_holding_counters_mut(|live| live.get(id).copied().unwrap_or(0))
}

/// Replies `{"ok": <calls handled by this activation>}`, and lets a test line calls up in its
/// mailbox: `{"action": "hold", "ms": n}` replies `{"ok": "held"}` at once but makes the actor's
/// context wait n ms (an actix timer, via `ctx.wait`) before it reads its mailbox again.
/// `crash` panics; `stop` replies `{"ok": "stopping"}` and stops the actor itself.
#[derive(MeshActor)]
pub struct HoldingCounter {
    id: ActorId,
    calls: u64,
}

impl Drop for HoldingCounter {
    fn drop(&mut self) {
        live_holding_counters_mut(|live| {
            if let Some(n) = live.get_mut(self.id.as_str()) {
                *n -= 1;
            }
        });
    }
}

impl Actor for HoldingCounter {
    type Context = Context<Self>;
}

impl MeshInit for HoldingCounter {
    fn init(id: &ActorId, _init_arg: Option<&Value>) -> Result<Self, InitError> {
        live_holding_counters_mut(|live| *live.entry(id.to_string()).or_default() += 1);
        Ok(HoldingCounter {
            id: id.clone(),
            calls: 0,
        })
    }
}

impl Handler<Payload> for HoldingCounter {
    type Result = MessageResult<Payload>;

    fn handle(&mut self, msg: Payload, ctx: &mut Context<Self>) -> Self::Result {
        let reply = match msg.action() {
            Some("hold") => {
                let ms = msg.body.get("ms").and_then(Value::as_u64).unwrap_or(100);
                ctx.wait(actix::clock::sleep(Duration::from_millis(ms)).into_actor(self));
                json!("held")
            }
            Some("crash") => panic!("{CRASH_MARKER}: held boom!"),
            Some("stop") => {
                ctx.stop();
                json!("stopping")
            }
            _ => {
                self.calls += 1;
                json!(self.calls)
            }
        };
        MessageResult(json!({ "ok": reply }))
    }
}

/// Stops itself (`ctx.stop()` from a timer, outside any handler) after `idle_ms` (init_arg,
/// default 100) without a message; each message restarts the idle period. `crash` panics.
#[derive(MeshActor)]
pub struct IdleStopper {
    idle: Duration,
    timer: Option<SpawnHandle>,
    calls: u64,
}

impl IdleStopper {
    fn arm(&mut self, ctx: &mut Context<Self>) {
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
        }
        self.timer = Some(ctx.run_later(self.idle, |act, ctx| {
            act.timer = None;
            ctx.stop();
        }));
    }
}

impl Actor for IdleStopper {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.arm(ctx);
    }
}

impl MeshInit for IdleStopper {
    fn init(_id: &ActorId, init_arg: Option<&Value>) -> Result<Self, InitError> {
        let ms = init_arg
            .and_then(|arg| arg.get("idle_ms"))
            .and_then(Value::as_u64)
            .unwrap_or(100);
        Ok(IdleStopper {
            idle: Duration::from_millis(ms),
            timer: None,
            calls: 0,
        })
    }
}

impl Handler<Payload> for IdleStopper {
    type Result = MessageResult<Payload>;

    fn handle(&mut self, msg: Payload, ctx: &mut Context<Self>) -> Self::Result {
        if msg.action() == Some("crash") {
            panic!("{CRASH_MARKER}: idle boom!");
        }
        self.arm(ctx);
        self.calls += 1;
        MessageResult(json!({"ok": self.calls}))
    }
}

/// An async handler: replies `{"ok": <calls>}` after a short actix timer; with `crash` it
/// panics inside the future, after the timer fired.
#[derive(MeshActor)]
pub struct AsyncCrasher {
    calls: u64,
}

impl Actor for AsyncCrasher {
    type Context = Context<Self>;
}

impl MeshInit for AsyncCrasher {
    fn init(_id: &ActorId, _init_arg: Option<&Value>) -> Result<Self, InitError> {
        Ok(AsyncCrasher { calls: 0 })
    }
}

impl Handler<Payload> for AsyncCrasher {
    type Result = ResponseActFuture<Self, Value>;

    fn handle(&mut self, msg: Payload, _ctx: &mut Context<Self>) -> Self::Result {
        let crash = msg.action() == Some("crash");
        Box::pin(
            actix::clock::sleep(Duration::from_millis(5))
                .into_actor(self)
                .map(move |_, act, _| {
                    if crash {
                        panic!("{CRASH_MARKER}: async boom!");
                    }
                    act.calls += 1;
                    json!({"ok": act.calls})
                }),
        )
    }
}

/// Registered under an overridden module name; always replies `{"ok": "renamed"}`.
#[derive(MeshActor)]
#[mesh(name = "Renamed")]
pub struct NamedActor;

impl Actor for NamedActor {
    type Context = Context<Self>;
}

impl MeshInit for NamedActor {
    fn init(_id: &ActorId, _init_arg: Option<&Value>) -> Result<Self, InitError> {
        Ok(NamedActor)
    }
}

impl Handler<Payload> for NamedActor {
    type Result = MessageResult<Payload>;

    fn handle(&mut self, _msg: Payload, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(json!({"ok": "renamed"}))
    }
}

// --- Node ---------------------------------------------------------------------------------------

/// The capabilities `start_mesh` registers: the example actors', then the test-only actors'.
pub const CAPABILITIES: [&str; 8] = [
    "counter", "game", "crasher", "sleeper", "holding", "idle", "async", "named",
];

/// The config of the scenario node.
pub fn config() -> MeshConfig {
    MeshConfig::new(NodeId::new(NODE).expect("a valid node id"), "127.0.0.1:1")
}

/// Starts a node with the example actors, the test-only actors and every capability of
/// [`CAPABILITIES`].
pub async fn start_mesh() -> Mesh {
    start_mesh_with(config()).await
}

/// Like [`start_mesh`] with a custom config.
pub async fn start_mesh_with(config: MeshConfig) -> Mesh {
    mesh_tests::quiet_intentional_panics(&[CRASH_MARKER]);
    let mesh = mesh_examples::register_examples(MeshBuilder::from_config(config))
        .register::<HoldingCounter>()
        .register::<IdleStopper>()
        .register::<AsyncCrasher>()
        .register::<NamedActor>()
        .start()
        .expect("inside an actix System");
    mesh.register_capabilities(CAPABILITIES)
        .await
        .expect("valid capabilities");
    mesh
}

// --- Requests -----------------------------------------------------------------------------------

/// A request with a payload.
pub fn req(module: &str, id: &str, capability: &str, payload: Value) -> Request {
    Request::new(module, id, capability)
        .expect("non-empty names")
        .with_payload(payload)
}

pub fn counter(id: &str, payload: Value) -> Request {
    req("Counter", id, "counter", payload)
}

pub fn game(id: &str, payload: Value) -> Request {
    req("GameActor", id, "game", payload)
}

pub fn crasher(id: &str, payload: Value) -> Request {
    req("Crasher", id, "crasher", payload)
}

pub fn sleeper(id: &str, sleep_ms: u64) -> Request {
    req("Sleeper", id, "sleeper", json!({"sleep_ms": sleep_ms}))
}

pub fn holding(id: &str, payload: Value) -> Request {
    req("HoldingCounter", id, "holding", payload)
}

pub fn idle(id: &str, idle_ms: u64) -> Request {
    req("IdleStopper", id, "idle", Value::Null).with_init_arg(json!({"idle_ms": idle_ms}))
}

pub fn async_crasher(id: &str, payload: Value) -> Request {
    req("AsyncCrasher", id, "async", payload)
}

/// Calls `HoldingCounter` `id` with `{"action": "hold", "ms": 200}` and with each of `payloads`,
/// all at once: the hold keeps the actor off its mailbox, so the others queue up behind it in
/// this order. Returns the hold's reply, then theirs in order.
pub async fn queued_behind_a_hold(
    mesh: &Mesh,
    id: &str,
    payloads: impl IntoIterator<Item = Value>,
) -> Vec<Result<Reply, MeshError>> {
    let hold = json!({"action": "hold", "ms": 200});
    let payloads = std::iter::once(hold).chain(payloads);
    join_all(payloads.map(|payload| mesh.call(holding(id, payload)))).await
}

/// Calls and expects a reply, with the request in the failure message.
pub async fn ok(mesh: &Mesh, request: Request) -> Reply {
    let what = format!("{request:?}");
    match mesh.call(request).await {
        Ok(reply) => reply,
        Err(e) => panic!("{what} failed: {e:?}"),
    }
}

/// Calls and expects an error.
pub async fn err(mesh: &Mesh, request: Request) -> MeshError {
    let what = format!("{request:?}");
    match mesh.call(request).await {
        Ok(reply) => panic!("{what} succeeded with {reply:?}, expected an error"),
        Err(e) => e,
    }
}

// --- Waiting ------------------------------------------------------------------------------------

/// Waits until `cond` holds, for at most [`EVENTUALLY`] (the harness's `eventually` with a
/// plain condition).
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    mesh_tests::eventually(what, EVENTUALLY, || {
        std::future::ready(cond().then_some(()))
    })
    .await
}
