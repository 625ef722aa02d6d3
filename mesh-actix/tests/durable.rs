//! Durable actors on one node (shared/CONTRACT.md rules 12 and 14): write-through saves,
//! restarts from the last saved state, versioned states that a stale activation cannot
//! overwrite, a store that fails, and idle passivation.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use mesh_actix::store::{MemoryStore, StateKey, StateStore, StoreError, StoredState};
use mesh_actix::{
    ActorId, Capability, ErrorCode, InitError, Mesh, MeshActor, MeshConfig, MeshError, MeshInit,
    Module, NodeId, Payload, Reply, Request, Snapshot,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// How long a poll waits for something that must happen (a hang guard, not a speed bound).
const EVENTUALLY: Duration = Duration::from_secs(20);

/// Durable: `{"add": n}` adds n and replies the total; `{"action": "get"}` replies it;
/// `{"action": "panic"}` adds 1000, then panics (a change that must not survive).
#[derive(MeshActor)]
#[mesh(durable)]
struct Vault {
    total: u64,
}

impl Actor for Vault {
    type Context = Context<Self>;
}

impl MeshInit for Vault {
    fn init(_: &ActorId, _: Option<&Value>) -> Result<Self, InitError> {
        Ok(Vault { total: 0 })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VaultState {
    total: u64,
}

impl Snapshot for Vault {
    type State = VaultState;
    fn snapshot(&self) -> VaultState {
        VaultState { total: self.total }
    }
    fn restore(_: &ActorId, state: VaultState) -> Result<Self, InitError> {
        Ok(Vault { total: state.total })
    }
}

impl Handler<Payload> for Vault {
    type Result = MessageResult<Payload>;
    fn handle(&mut self, msg: Payload, _: &mut Context<Self>) -> Self::Result {
        if let Some(n) = msg.body.get("add").and_then(Value::as_u64) {
            self.total += n;
        } else if msg.action() == Some("panic") {
            self.total += 1000;
            panic!("vault panics on purpose");
        }
        MessageResult(json!({"ok": self.total}))
    }
}

/// Keeps no store but opts into passivation after a second idle; counts its calls.
#[derive(MeshActor)]
#[mesh(idle_timeout_secs = 1)]
struct Scratch {
    calls: u64,
}

/// Keeps no store and never opts in; counts its calls.
#[derive(MeshActor)]
struct Plain {
    calls: u64,
}

macro_rules! counting_actor {
    ($ty:ident) => {
        impl Actor for $ty {
            type Context = Context<Self>;
        }
        impl MeshInit for $ty {
            fn init(_: &ActorId, _: Option<&Value>) -> Result<Self, InitError> {
                Ok($ty { calls: 0 })
            }
        }
        impl Handler<Payload> for $ty {
            type Result = MessageResult<Payload>;
            fn handle(&mut self, _: Payload, _: &mut Context<Self>) -> Self::Result {
                self.calls += 1;
                MessageResult(json!({"ok": self.calls}))
            }
        }
    };
}
counting_actor!(Scratch);
counting_actor!(Plain);

/// A [`MemoryStore`] whose saves can be made to fail, as a store that went away.
#[derive(Clone, Default)]
struct FlakyStore {
    inner: MemoryStore,
    failing: Arc<AtomicBool>,
    saves: Arc<AtomicU64>,
}

impl StateStore for FlakyStore {
    fn kind(&self) -> &'static str {
        "flaky"
    }
    fn is_shared(&self) -> bool {
        false
    }
    fn load(&self, key: &StateKey) -> BoxFuture<'static, Result<Option<StoredState>, StoreError>> {
        self.inner.load(key)
    }
    fn save(
        &self,
        key: &StateKey,
        state: Vec<u8>,
        expected: u64,
    ) -> BoxFuture<'static, Result<u64, StoreError>> {
        self.saves.fetch_add(1, Ordering::Relaxed);
        if self.failing.load(Ordering::Relaxed) {
            let error = StoreError::Unavailable("the test took the store away".into());
            return futures_util::future::ready(Err(error)).boxed();
        }
        self.inner.save(key, state, expected)
    }
    fn overwrite(
        &self,
        key: &StateKey,
        state: Vec<u8>,
    ) -> BoxFuture<'static, Result<u64, StoreError>> {
        self.inner.overwrite(key, state)
    }
    fn remove(&self, key: &StateKey) -> BoxFuture<'static, Result<(), StoreError>> {
        self.inner.remove(key)
    }
}

async fn node(store: Option<FlakyStore>, idle_timeout: Option<Duration>) -> Mesh {
    let mut config = MeshConfig::new(NodeId::new("durable-node").unwrap(), "127.0.0.1:1");
    config.store = store.map(|s| Arc::new(s) as Arc<dyn StateStore>);
    config.idle_timeout = idle_timeout;
    let mesh = Mesh::start(config).unwrap();
    mesh.register::<Vault>()
        .register::<Scratch>()
        .register::<Plain>();
    mesh.register_capabilities(["vault", "scratch"])
        .await
        .unwrap();
    mesh
}

fn vault(id: &str, payload: Value) -> Request {
    Request::new("Vault", id, "vault")
        .unwrap()
        .with_payload(payload)
}

fn key(id: &str) -> StateKey {
    StateKey {
        capability: Capability::new("vault").unwrap(),
        module: Module::new("Vault").unwrap(),
        id: ActorId::new(id).unwrap(),
    }
}

async fn stored(store: &FlakyStore, id: &str) -> Option<(u64, Value)> {
    let stored = store.inner.load(&key(id)).await.unwrap()?;
    Some((
        stored.version,
        serde_json::from_slice(&stored.state).unwrap(),
    ))
}

async fn call(mesh: &Mesh, request: Request) -> Reply {
    match mesh.call(request).await {
        Ok(reply) => reply,
        Err(e) => panic!("call failed: {e}"),
    }
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(
            started.elapsed() < EVENTUALLY,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[actix_rt::test]
async fn a_reply_means_the_new_state_is_in_the_store_and_unchanged_state_is_not_written() {
    let store = FlakyStore::default();
    let mesh = node(Some(store.clone()), None).await;
    assert_eq!(
        call(&mesh, vault("v1", json!({"add": 5}))).await.result,
        json!({"ok": 5})
    );
    assert_eq!(stored(&store, "v1").await, Some((1, json!({"total": 5}))));

    let saves = store.saves.load(Ordering::Relaxed);
    assert_eq!(
        call(&mesh, vault("v1", json!({"action": "get"})))
            .await
            .result,
        json!({"ok": 5})
    );
    assert_eq!(
        store.saves.load(Ordering::Relaxed),
        saves,
        "a read writes nothing"
    );
    assert_eq!(stored(&store, "v1").await, Some((1, json!({"total": 5}))));

    assert_eq!(
        call(&mesh, vault("v1", json!({"add": 2}))).await.result,
        json!({"ok": 7})
    );
    assert_eq!(stored(&store, "v1").await, Some((2, json!({"total": 7}))));

    // A cast is saved the same way; nobody waits for it, so poll.
    mesh.cast(vault("v1", json!({"add": 3}))).await.unwrap();
    let started = Instant::now();
    while stored(&store, "v1").await != Some((3, json!({"total": 10}))) {
        assert!(started.elapsed() < EVENTUALLY, "the cast was never saved");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(mesh.activation_stats().state_saves, 3);
}

#[actix_rt::test]
async fn a_crash_restarts_the_actor_from_its_last_saved_state() {
    let store = FlakyStore::default();
    let mesh = node(Some(store.clone()), None).await;
    let before = call(&mesh, vault("v2", json!({"add": 5}))).await;
    let error = mesh
        .call(vault("v2", json!({"action": "panic"})))
        .await
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::ActorCrashed, "{error}");
    let after = call(&mesh, vault("v2", json!({"action": "get"}))).await;
    assert_eq!(
        after.result,
        json!({"ok": 5}),
        "the change made before the panic is gone"
    );
    assert_ne!(after.pid, before.pid, "a restart is a new pid");
    assert_eq!(stored(&store, "v2").await, Some((1, json!({"total": 5}))));
    assert_eq!(mesh.activation_stats().restarts, 1);
}

#[actix_rt::test]
async fn a_stored_state_that_no_longer_deserialises_fails_activation_and_is_kept() {
    let store = FlakyStore::default();
    let mesh = node(Some(store.clone()), None).await;
    let old_format = br#"{"total": 5, "currency": "EUR"}"#.to_vec();
    store
        .inner
        .save(&key("v3"), old_format.clone(), 0)
        .await
        .unwrap();

    let error = mesh.call(vault("v3", json!({"add": 1}))).await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::InitFailed, "{error}");
    assert!(error.to_string().contains("does not restore"), "{error}");
    assert_eq!(mesh.activations(), 0);
    let kept = store.inner.load(&key("v3")).await.unwrap().unwrap();
    assert_eq!(
        (kept.version, kept.state),
        (1, old_format),
        "never reset silently"
    );
}

#[actix_rt::test]
async fn a_stale_activation_cannot_overwrite_a_newer_state() {
    let store = FlakyStore::default();
    let mesh = node(Some(store.clone()), None).await;
    let first = call(&mesh, vault("v4", json!({"add": 5}))).await;
    // Another owner (say, across a partition) saved a newer state behind this one's back.
    let newer = serde_json::to_vec(&json!({"total": 100})).unwrap();
    assert_eq!(store.inner.save(&key("v4"), newer, 1).await, Ok(2));

    // This activation's save is refused; the call is routed again to a fresh activation
    // that starts from the newer state.
    let reply = call(&mesh, vault("v4", json!({"add": 1}))).await;
    assert_eq!(reply.result, json!({"ok": 101}));
    assert_ne!(reply.pid, first.pid);
    assert_eq!(stored(&store, "v4").await, Some((3, json!({"total": 101}))));
    assert_eq!(mesh.activation_stats().state_conflicts, 1);
}

#[actix_rt::test]
async fn a_save_that_fails_fails_the_call_and_leaves_no_effect() {
    let store = FlakyStore::default();
    let mesh = node(Some(store.clone()), None).await;
    let first = call(&mesh, vault("v5", json!({"add": 5}))).await;
    store.failing.store(true, Ordering::Relaxed);
    let error = mesh.call(vault("v5", json!({"add": 3}))).await.unwrap_err();
    assert!(matches!(error, MeshError::OwnerUnavailable(_)), "{error}");
    assert!(error.to_string().contains("could not be saved"), "{error}");
    assert_eq!(mesh.activation_stats().state_failures, 1);

    store.failing.store(false, Ordering::Relaxed);
    let reply = call(&mesh, vault("v5", json!({"action": "get"}))).await;
    assert_eq!(
        reply.result,
        json!({"ok": 5}),
        "the failed call left nothing behind"
    );
    assert_ne!(
        reply.pid, first.pid,
        "the activation that ran it was discarded"
    );
}

#[actix_rt::test]
async fn idle_durable_activations_are_passivated_and_come_back_from_the_store() {
    let store = FlakyStore::default();
    let mesh = node(Some(store.clone()), Some(Duration::from_millis(200))).await;
    let ids: Vec<String> = (0..50).map(|n| format!("idle-{n}")).collect();
    let mut pids = Vec::new();
    for id in &ids {
        pids.push(call(&mesh, vault(id, json!({"add": 5}))).await.pid);
    }
    assert_eq!(mesh.activations(), 50);
    eventually("every idle vault is passivated", || mesh.activations() == 0).await;
    assert_eq!(mesh.activation_stats().passivations, 50);
    for (id, pid) in ids.iter().zip(&pids) {
        let reply = call(&mesh, vault(id, json!({"action": "get"}))).await;
        assert_eq!(
            reply.result,
            json!({"ok": 5}),
            "{id} continues from the store"
        );
        assert_ne!(&reply.pid, pid);
    }
}

#[actix_rt::test]
async fn a_busy_activation_is_not_passivated() {
    let store = FlakyStore::default();
    let mesh = node(Some(store.clone()), Some(Duration::from_millis(300))).await;
    let first = call(&mesh, vault("busy", json!({"add": 1}))).await;
    // Calls every 50 ms for twice the idle timeout: never idle for long enough.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(600) {
        let reply = call(&mesh, vault("busy", json!({"action": "get"}))).await;
        assert_eq!(reply.pid, first.pid, "passivated while in use");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(mesh.activation_stats().passivations, 0);
}

#[actix_rt::test]
async fn types_without_a_store_are_passivated_only_if_they_opt_in() {
    let mesh = node(Some(FlakyStore::default()), Some(Duration::from_millis(50))).await;
    let scratch = Request::new("Scratch", "s", "scratch").unwrap();
    let plain = Request::new("Plain", "p", "scratch").unwrap();
    call(&mesh, scratch.clone()).await;
    let first_plain = call(&mesh, plain.clone()).await;
    assert_eq!(mesh.activations(), 2);
    // Scratch opted into a 1 s timeout; the node's default (50 ms here) is for durable
    // types only, so Plain stays.
    eventually("Scratch is passivated", || mesh.activations() == 1).await;
    assert_eq!(mesh.activation_stats().passivations, 1);
    let again = call(&mesh, plain).await;
    assert_eq!(
        (again.pid, again.result),
        (first_plain.pid, json!({"ok": 2}))
    );
    // Without a store, a passivated activation's state is gone (as in Orleans).
    assert_eq!(call(&mesh, scratch).await.result, json!({"ok": 1}));
}

#[actix_rt::test]
async fn a_durable_type_on_a_node_without_a_store_fails_to_activate() {
    let mesh = node(None, None).await;
    let error = mesh.call(vault("v6", json!({"add": 1}))).await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::InitFailed, "{error}");
    assert!(error.to_string().contains("MeshConfig::store"), "{error}");
    assert_eq!(mesh.activations(), 0);
}
