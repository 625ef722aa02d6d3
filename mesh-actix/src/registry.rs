//! The activation registry: the one record of which actors live on this node.
//!
//! Entries are keyed by the identity `(capability, module, id)` (the same `(module, id)` under
//! two capabilities is two actors) and striped by shard, so concurrent calls to different
//! actors rarely touch the same lock, and a rebalance can walk the stripes shard by shard.
//! A hit is a read lock and an enqueue; only a miss (an activation) takes a write lock.

use std::collections::HashMap;
use std::hash::BuildHasher as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use mesh_core::{ActorId, Capability, Handoff, Member, Module, ShardId};
use parking_lot::{Mutex, RwLock};

use crate::activation::{ActivationCell, Envelope};
use crate::metrics::ModuleMetrics;

/// Number of lock stripes; a power of two well above the core count.
const STRIPES: usize = 64;

/// How many handed-over states a node keeps for identities not yet called here. A handoff
/// beyond it is refused (its sender logs the loss and the identity starts afresh): the bound
/// keeps a flood of handoffs from exhausting memory.
pub(crate) const MAX_WAITING_HANDOFFS: usize = 1_000_000;

pub(crate) struct Entry {
    pub(crate) cell: Arc<ActivationCell>,
    pub(crate) recipient: Recipient<Envelope>,
}

/// A hash map of the registry: foldhash with a seed per map instead of SipHash. The keys are
/// ids callers choose, so the hash is seeded (no fixed collisions to aim for), and the lookup
/// is on every call's path, where SipHash of two short strings was ~5 % of a local call.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Default)]
struct Stripe {
    modules: FastMap<Module, Ids>,
}

impl Stripe {
    fn get(&self, capability: &str, module: &str, id: &str) -> Option<&Entry> {
        self.modules.get(module)?.get(capability, id)
    }
}

/// The activations of one module in one stripe, found by the id and capability their cell
/// holds: a slot is the entry alone (24 B), not a key beside it (40 B), which is ~30 B per
/// activation at a million of them (BENCHMARKS.md, "Memory per activation"). Hashed by id
/// only: one id under several capabilities is rare, and its entries differ by capability.
#[derive(Default)]
struct Ids {
    table: hashbrown::HashTable<Entry>,
    hasher: foldhash::fast::RandomState,
}

impl Ids {
    fn hash(&self, id: &str) -> u64 {
        self.hasher.hash_one(id)
    }

    fn get(&self, capability: &str, id: &str) -> Option<&Entry> {
        self.table
            .find(self.hash(id), |entry| entry.cell.is(capability, id))
    }

    /// Adds `entry`, whose identity must not be here yet.
    fn insert_new(&mut self, entry: Entry) {
        let hash = self.hash(entry.cell.id.as_str());
        let hasher = &self.hasher;
        self.table
            .insert_unique(hash, entry, |e| hasher.hash_one(e.cell.id.as_str()));
    }

    /// Removes the entry of `cell`, if it is the one registered for its identity.
    fn remove(&mut self, cell: &Arc<ActivationCell>) -> bool {
        let (capability, id) = (cell.capability.as_str(), cell.id.as_str());
        match self
            .table
            .find_entry(self.hash(id), |entry| entry.cell.is(capability, id))
        {
            Ok(found) if Arc::ptr_eq(&found.get().cell, cell) => {
                found.remove();
                true
            }
            _ => false,
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.table.iter()
    }
}

/// Counters the registry keeps about activations, for metrics; read with
/// [`Mesh::activation_stats`](crate::Mesh::activation_stats).
///
/// ```
/// use mesh_actix::{Mesh, NodeId, RegistryStats, Request};
/// # use mesh_actix::{InitError, MeshActor, MeshInit, Payload};
/// # use mesh_actix::actix::{Actor, Context, Handler, MessageResult};
/// # use serde_json::{json, Value};
/// # #[derive(MeshActor)]
/// # struct Counter { count: u64 }
/// # impl Actor for Counter { type Context = Context<Self>; }
/// # impl MeshInit for Counter {
/// #     fn init(_: &mesh_actix::ActorId, _: Option<&Value>) -> Result<Self, InitError> { Ok(Counter { count: 0 }) }
/// # }
/// # impl Handler<Payload> for Counter {
/// #     type Result = MessageResult<Payload>;
/// #     fn handle(&mut self, _: Payload, _: &mut Context<Self>) -> Self::Result {
/// #         self.count += 1;
/// #         MessageResult(json!({"ok": self.count}))
/// #     }
/// # }
/// # actix_rt::System::new().block_on(async {
/// let mesh = Mesh::builder(NodeId::new("node-1").unwrap(), "127.0.0.1:4000")
///     .register::<Counter>()
///     .capabilities(["counter"])
///     .start()
///     .unwrap();
/// for id in ["c1", "c1", "c2"] {
///     mesh.call(Request::new("Counter", id, "counter").unwrap()).await.unwrap();
/// }
/// let stats: RegistryStats = mesh.activation_stats();
/// // One activation per identity, however many calls it served.
/// assert_eq!((stats.live, stats.activated, stats.restarts), (2, 2, 0));
/// # });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RegistryStats {
    /// Activations live on this node now.
    pub live: usize,
    /// Activations started since the node started.
    pub activated: u64,
    /// Restarts after a caught panic since the node started.
    pub restarts: u64,
    /// Handoffs this node delivered to the new owners of identities it released.
    pub handoffs_sent: u64,
    /// Handoffs this node could not deliver (the identity starts afresh on its new owner).
    pub handoffs_failed: u64,
    /// Handoffs this node accepted as the new owner.
    pub handoffs_received: u64,
    /// Accepted handoffs still waiting for their identity's first call here.
    pub handoffs_waiting: usize,
    /// Activations stopped because they were idle past their idle timeout.
    pub passivations: u64,
    /// States of durable actors saved to the store.
    pub state_saves: u64,
    /// Saves refused because a newer state was in the store (a stale activation, discarded).
    pub state_conflicts: u64,
    /// Saves that failed because the store was unavailable (the call failed, its effect
    /// discarded).
    pub state_failures: u64,
}

/// An identity: `(capability, module, id)`.
type HandoffKey = (Capability, Module, ActorId);

/// Why a handoff was not accepted; the handoff comes back.
#[derive(Debug)]
pub(crate) enum RefusedHandoff {
    /// [`MAX_WAITING_HANDOFFS`] are waiting already.
    Full(Box<Handoff>),
    /// The identity already has a live activation here: its state is the newer one.
    Live(Box<Handoff>),
}

/// Which actors are live on this node, by `(capability, module, id)`.
pub(crate) struct ActivationRegistry {
    stripes: Box<[RwLock<Stripe>]>,
    live: AtomicUsize,
    /// Activations deactivated whose actor has not stopped yet: a handler may still be
    /// running. A node acknowledges a new owner only once this is zero.
    retiring: AtomicUsize,
    activated: AtomicU64,
    restarts: AtomicU64,
    /// Handed-over states waiting for their identity's first call, striped like the entries
    /// (their own locks: they are taken while an entry stripe is write-locked).
    handoffs: Box<[Mutex<HashMap<HandoffKey, Handoff>>]>,
    handoffs_waiting: AtomicUsize,
    /// Handoffs on their way to a new owner: like `retiring`, a node acknowledges a new owner
    /// only once this is zero.
    handoffs_sending: AtomicUsize,
    handoffs_sent: AtomicU64,
    handoffs_failed: AtomicU64,
    handoffs_received: AtomicU64,
    passivations: AtomicU64,
    state_saves: AtomicU64,
    state_conflicts: AtomicU64,
    state_failures: AtomicU64,
    /// The per-`(capability, module)` counters, activations and calls alike.
    modules: ModuleMetrics,
}

impl ActivationRegistry {
    pub(crate) fn new() -> ActivationRegistry {
        ActivationRegistry {
            stripes: (0..STRIPES).map(|_| RwLock::default()).collect(),
            live: AtomicUsize::new(0),
            retiring: AtomicUsize::new(0),
            activated: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            handoffs: (0..STRIPES).map(|_| Mutex::default()).collect(),
            handoffs_waiting: AtomicUsize::new(0),
            handoffs_sending: AtomicUsize::new(0),
            handoffs_sent: AtomicU64::new(0),
            handoffs_failed: AtomicU64::new(0),
            handoffs_received: AtomicU64::new(0),
            passivations: AtomicU64::new(0),
            state_saves: AtomicU64::new(0),
            state_conflicts: AtomicU64::new(0),
            state_failures: AtomicU64::new(0),
            modules: ModuleMetrics::default(),
        }
    }

    /// The per-`(capability, module)` counters.
    pub(crate) fn modules(&self) -> &ModuleMetrics {
        &self.modules
    }

    fn stripe(&self, shard: ShardId) -> &RwLock<Stripe> {
        &self.stripes[shard.0 as usize % STRIPES]
    }

    /// Runs `send` on the entry of `(capability, module, id)`, activating it with `activate`
    /// first if there is none. Concurrent first calls for one identity activate it once.
    ///
    /// `activate` runs under the stripe's write lock: it must be quick (the user's `init` and
    /// an enqueue onto an arbiter).
    pub(crate) fn with_entry<R, E>(
        &self,
        shard: ShardId,
        capability: &Capability,
        module: &Module,
        id: &ActorId,
        activate: impl FnOnce() -> Result<Entry, E>,
        send: impl FnOnce(&Entry) -> R,
    ) -> Result<R, E> {
        let (capability, stripe) = (capability.as_str(), self.stripe(shard));
        if let Some(entry) = stripe.read().get(capability, module.as_str(), id.as_str()) {
            return Ok(send(entry));
        }
        let mut guard = stripe.write();
        if let Some(entry) = guard.get(capability, module.as_str(), id.as_str()) {
            return Ok(send(entry));
        }
        let entry = activate()?;
        let result = send(&entry);
        debug_assert!(entry.cell.is(capability, id.as_str()));
        entry.cell.counters.activated();
        guard
            .modules
            .entry(module.clone())
            .or_default()
            .insert_new(entry);
        self.live.fetch_add(1, Ordering::Relaxed);
        self.activated.fetch_add(1, Ordering::Relaxed);
        Ok(result)
    }

    /// Removes the entry of `cell`, if it is still the registered one.
    pub(crate) fn remove(&self, cell: &Arc<ActivationCell>) {
        let mut guard = self.stripe(cell.shard).write();
        let Some(ids) = guard.modules.get_mut(cell.module.as_str()) else {
            return;
        };
        if ids.remove(cell) {
            self.live.fetch_sub(1, Ordering::Relaxed);
            cell.counters.deactivated();
        }
    }

    /// Every live activation whose `(capability, shard)` fails `keep`, for rebalancing.
    pub(crate) fn unwanted(&self, keep: impl Fn(&ActivationCell) -> bool) -> Vec<Entry> {
        let mut out = Vec::new();
        for stripe in self.stripes.iter() {
            let guard = stripe.read();
            for entry in guard.modules.values().flat_map(Ids::iter) {
                if !keep(&entry.cell) {
                    out.push(Entry {
                        cell: entry.cell.clone(),
                        recipient: entry.recipient.clone(),
                    });
                }
            }
        }
        out
    }

    /// Deactivates every activation that fails `keep` and tells its actor to stop, handing
    /// its identity over to `successor` if there is one. Returns how many.
    pub(crate) fn stop_unwanted(
        &self,
        keep: impl Fn(&ActivationCell) -> bool,
        successor: impl Fn(&ActivationCell) -> Option<Arc<Member>>,
    ) -> usize {
        let unwanted = self.unwanted(keep);
        let stopped = unwanted.len();
        for entry in unwanted {
            entry.cell.deactivate();
            let to = successor(&entry.cell);
            entry.recipient.do_send(Envelope::stop(entry.cell, to));
        }
        stopped
    }

    /// Whether `(capability, module, id)` has a live activation here.
    pub(crate) fn is_live(&self, shard: ShardId, capability: &str, module: &str, id: &str) -> bool {
        self.stripe(shard)
            .read()
            .get(capability, module, id)
            .is_some()
    }

    /// A handoff this node took into its store rather than keeping it here.
    pub(crate) fn record_handoff_received(&self) {
        self.handoffs_received.fetch_add(1, Ordering::Relaxed);
    }

    /// Keeps a handed-over state until its identity's first call here.
    pub(crate) fn put_handoff(
        &self,
        shard: ShardId,
        handoff: Handoff,
    ) -> Result<(), RefusedHandoff> {
        let (capability, module) = (handoff.capability.as_str(), handoff.module.as_str());
        if self.is_live(shard, capability, module, handoff.id.as_str()) {
            return Err(RefusedHandoff::Live(Box::new(handoff)));
        }
        let mut waiting = self.handoffs[shard.0 as usize % STRIPES].lock();
        let key = (
            handoff.capability.clone(),
            handoff.module.clone(),
            handoff.id.clone(),
        );
        if !waiting.contains_key(&key) {
            if self.handoffs_waiting.load(Ordering::Acquire) >= MAX_WAITING_HANDOFFS {
                return Err(RefusedHandoff::Full(Box::new(handoff)));
            }
            self.handoffs_waiting.fetch_add(1, Ordering::AcqRel);
        }
        waiting.insert(key, handoff);
        self.handoffs_received.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The handed-over state of `(capability, module, id)`, if one waits; removes it.
    pub(crate) fn take_handoff(
        &self,
        shard: ShardId,
        capability: &Capability,
        module: &Module,
        id: &ActorId,
    ) -> Option<Handoff> {
        // Activations are hot and handoffs rare: skip the lock when none waits.
        if self.handoffs_waiting.load(Ordering::Acquire) == 0 {
            return None;
        }
        let key = (capability.clone(), module.clone(), id.clone());
        let handoff = self.handoffs[shard.0 as usize % STRIPES]
            .lock()
            .remove(&key)?;
        self.handoffs_waiting.fetch_sub(1, Ordering::AcqRel);
        Some(handoff)
    }

    /// Removes and returns every waiting handoff that `pick` selects.
    pub(crate) fn take_handoffs(&self, pick: impl Fn(&Handoff) -> bool) -> Vec<Handoff> {
        let mut out = Vec::new();
        for stripe in self.handoffs.iter() {
            let mut waiting = stripe.lock();
            waiting.retain(|_, handoff| {
                if pick(handoff) {
                    out.push(handoff.clone());
                    false
                } else {
                    true
                }
            });
        }
        self.handoffs_waiting.fetch_sub(out.len(), Ordering::AcqRel);
        out
    }

    pub(crate) fn record_handoff_sending(&self) {
        self.handoffs_sending.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn record_handoff_done(&self, delivered: bool) {
        let counter = if delivered {
            &self.handoffs_sent
        } else {
            &self.handoffs_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.handoffs_sending.fetch_sub(1, Ordering::AcqRel);
    }

    pub(crate) fn record_retiring(&self) {
        self.retiring.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn record_stopped(&self) {
        self.retiring.fetch_sub(1, Ordering::AcqRel);
    }

    /// Whether every deactivated activation has stopped (no handler of one is still running)
    /// and every handoff of them has been answered: the release half of a planned move.
    pub(crate) fn is_settled(&self) -> bool {
        self.retiring.load(Ordering::Acquire) == 0
            && self.handoffs_sending.load(Ordering::Acquire) == 0
    }

    /// Stops every activation idle past its idle timeout as of `now` (the host clock), with
    /// `slack` for the clock's coarseness. Returns how many.
    pub(crate) fn passivate_idle(&self, now: u32, slack: u32) -> usize {
        let idle = |cell: &ActivationCell| {
            let idle = cell.is_idle(now, slack);
            if idle {
                // Counted before the activation leaves the registry, so that whoever sees
                // it gone also sees it counted.
                cell.counters.passivated();
                self.passivations.fetch_add(1, Ordering::Relaxed);
            }
            !idle
        };
        self.stop_unwanted(idle, |_| None)
    }

    pub(crate) fn record_save(&self, outcome: Result<(), &crate::store::StoreError>) {
        let counter = match outcome {
            Ok(()) => &self.state_saves,
            Err(crate::store::StoreError::Conflict { .. }) => &self.state_conflicts,
            Err(crate::store::StoreError::Unavailable(_)) => &self.state_failures,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> RegistryStats {
        RegistryStats {
            live: self.live.load(Ordering::Relaxed),
            activated: self.activated.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            handoffs_sent: self.handoffs_sent.load(Ordering::Relaxed),
            handoffs_failed: self.handoffs_failed.load(Ordering::Relaxed),
            handoffs_received: self.handoffs_received.load(Ordering::Relaxed),
            handoffs_waiting: self.handoffs_waiting.load(Ordering::Relaxed),
            passivations: self.passivations.load(Ordering::Relaxed),
            state_saves: self.state_saves.load(Ordering::Relaxed),
            state_conflicts: self.state_conflicts.load(Ordering::Relaxed),
            state_failures: self.state_failures.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Barrier;

    use serde_json::{json, Value};

    use super::*;
    use crate::activation::{Activator, Host, Identity, Start, TypedActivator, Undelivered};
    use crate::actor::{InitError, MeshInit, Payload};
    use mesh_core::MeshError;

    /// Replies with its own id, so a test can tell which activation answered.
    #[derive(crate::MeshActor)]
    struct Probe {
        id: String,
    }

    impl Actor for Probe {
        type Context = Context<Self>;
    }

    impl MeshInit for Probe {
        fn init(id: &ActorId, _: Option<&Value>) -> Result<Self, InitError> {
            Ok(Probe { id: id.to_string() })
        }
    }

    impl Handler<Payload> for Probe {
        type Result = MessageResult<Payload>;

        fn handle(&mut self, _: Payload, _: &mut Context<Self>) -> Self::Result {
            MessageResult(json!({ "id": self.id }))
        }
    }

    fn module() -> Module {
        Module::new("Probe").unwrap()
    }

    fn cap() -> Capability {
        Capability::new("cap").unwrap()
    }

    fn id(value: &str) -> ActorId {
        ActorId::new(value).unwrap()
    }

    /// A cell with no link back to a registry: the tests alone decide what the registry holds.
    fn cell(id_: &str, capability: &str, shard: u32, serial: u64) -> Arc<ActivationCell> {
        let identity = Identity {
            module: module(),
            id: id(id_),
            capability: Capability::new(capability).unwrap(),
            shard: ShardId(shard),
            init_arg: None,
            idle_after_ms: 0,
            durable: false,
            counters: Arc::default(),
        };
        Arc::new(ActivationCell::new(
            identity,
            serial,
            Host::detached("node-1"),
        ))
    }

    /// Starts a real `Probe` activation for `cell` on `arbiter`.
    fn start(cell: Arc<ActivationCell>, arbiter: &ArbiterHandle) -> Result<Entry, MeshError> {
        let recipient =
            TypedActivator::<Probe>::new().start(cell.clone(), arbiter, 16, Start::Init)?;
        Ok(Entry { cell, recipient })
    }

    fn never() -> Result<Entry, MeshError> {
        panic!("a hit must not activate")
    }

    /// Runs `with_entry` and hands back the cell of the entry `send` saw.
    fn entry_cell(
        registry: &ActivationRegistry,
        shard: u32,
        (capability, id_): (&str, &str),
        activate: impl FnOnce() -> Result<Entry, MeshError>,
    ) -> Result<Arc<ActivationCell>, MeshError> {
        let capability = Capability::new(capability).unwrap();
        let (module, id) = (module(), id(id_));
        registry.with_entry(
            ShardId(shard),
            &capability,
            &module,
            &id,
            activate,
            |entry| entry.cell.clone(),
        )
    }

    #[actix_rt::test]
    async fn a_miss_activates_once_and_a_hit_reuses_the_entry() {
        let registry = ActivationRegistry::new();
        let arbiter = Arbiter::current();
        let activations = AtomicUsize::new(0);
        let first = cell("a", "cap", 3, 0);
        let activate = || {
            activations.fetch_add(1, Ordering::Relaxed);
            start(first.clone(), &arbiter)
        };
        let pending = registry
            .with_entry(ShardId(3), &cap(), &module(), &id("a"), activate, |entry| {
                assert!(Arc::ptr_eq(&entry.cell, &first), "send sees the new entry");
                entry.recipient.send(Envelope::deliver(
                    entry.cell.clone(),
                    Payload::call(json!(null)),
                ))
            })
            .unwrap();
        assert_eq!(activations.load(Ordering::Relaxed), 1);
        // The entry's recipient reaches the activation it was started for.
        match pending.await.unwrap() {
            Ok(delivered) => assert_eq!(delivered.value, json!({"id": "a"})),
            Err(Undelivered::Crashed(reason)) => panic!("crashed: {reason}"),
            Err(Undelivered::Retired(_)) => panic!("retired"),
            Err(Undelivered::Refused(_, reason)) => panic!("refused: {reason}"),
            Err(Undelivered::Expired) => panic!("expired"),
            Err(Undelivered::NotSaved(reason)) => panic!("not saved: {reason}"),
        }

        for _ in 0..3 {
            let hit = entry_cell(&registry, 3, ("cap", "a"), never).unwrap();
            assert!(Arc::ptr_eq(&hit, &first));
        }
        assert_eq!(activations.load(Ordering::Relaxed), 1);
        let stats = registry.stats();
        assert_eq!((stats.live, stats.activated), (1, 1));
    }

    #[actix_rt::test]
    async fn concurrent_first_calls_for_one_identity_activate_it_once() {
        const CALLERS: usize = 16;
        let registry = ActivationRegistry::new();
        let arbiter = Arbiter::current();
        let activations = AtomicUsize::new(0);
        let barrier = Barrier::new(CALLERS);
        let seen: Vec<Arc<ActivationCell>> = std::thread::scope(|scope| {
            let callers: Vec<_> = (0..CALLERS)
                .map(|serial| {
                    let (registry, arbiter) = (&registry, &arbiter);
                    let (activations, barrier) = (&activations, &barrier);
                    scope.spawn(move || {
                        barrier.wait();
                        entry_cell(registry, 7, ("cap", "shared"), || {
                            activations.fetch_add(1, Ordering::Relaxed);
                            start(cell("shared", "cap", 7, serial as u64), arbiter)
                        })
                        .unwrap()
                    })
                })
                .collect();
            callers.into_iter().map(|c| c.join().unwrap()).collect()
        });
        assert_eq!(activations.load(Ordering::Relaxed), 1);
        assert!(seen.iter().all(|c| Arc::ptr_eq(c, &seen[0])));
        let stats = registry.stats();
        assert_eq!((stats.live, stats.activated), (1, 1));
    }

    #[actix_rt::test]
    async fn one_module_and_id_under_two_capabilities_are_two_identities() {
        let registry = ActivationRegistry::new();
        let arbiter = Arbiter::current();
        let (counter, game) = (cell("a", "counter", 4, 0), cell("a", "game", 4, 1));
        entry_cell(&registry, 4, ("counter", "a"), || {
            start(counter.clone(), &arbiter)
        })
        .unwrap();
        let second = entry_cell(&registry, 4, ("game", "a"), || {
            start(game.clone(), &arbiter)
        });
        assert!(Arc::ptr_eq(&second.unwrap(), &game), "its own activation");
        assert_eq!(registry.stats().live, 2);
        let hit = entry_cell(&registry, 4, ("counter", "a"), never).unwrap();
        assert!(Arc::ptr_eq(&hit, &counter));

        // Each leaves on its own, and a handoff of one is refused only while that one lives.
        registry.remove(&counter);
        assert!(!registry.is_live(ShardId(4), "counter", "Probe", "a"));
        assert!(registry.is_live(ShardId(4), "game", "Probe", "a"));
        let mut handoff = handoff("a", 1);
        handoff.capability = Capability::new("counter").unwrap();
        assert!(registry.put_handoff(ShardId(4), handoff).is_ok());
        assert_eq!(registry.stats().live, 1);
    }

    #[actix_rt::test]
    async fn an_activation_error_is_returned_and_nothing_is_inserted() {
        let registry = ActivationRegistry::new();
        let refused = MeshError::init_failed("no");
        let result = registry.with_entry(
            ShardId(1),
            &cap(),
            &module(),
            &id("a"),
            || Err(refused.clone()),
            |_| panic!("send must not run without an entry"),
        );
        assert_eq!(result.err(), Some(refused));
        assert_eq!(registry.stats(), RegistryStats::default());
        assert!(registry.unwanted(|_| false).is_empty());

        // The next call activates afresh.
        let fresh = cell("a", "cap", 1, 1);
        let got = entry_cell(&registry, 1, ("cap", "a"), || {
            start(fresh.clone(), &Arbiter::current())
        });
        assert!(Arc::ptr_eq(&got.unwrap(), &fresh));
        assert_eq!(registry.stats().live, 1);
    }

    #[actix_rt::test]
    async fn remove_only_removes_the_entry_of_the_same_cell() {
        let registry = ActivationRegistry::new();
        let arbiter = Arbiter::current();
        let old = cell("a", "cap", 2, 0);
        entry_cell(&registry, 2, ("cap", "a"), || start(old.clone(), &arbiter)).unwrap();
        registry.remove(&old);
        assert_eq!(registry.stats().live, 0);

        let new = cell("a", "cap", 2, 1);
        entry_cell(&registry, 2, ("cap", "a"), || start(new.clone(), &arbiter)).unwrap();
        // A stale cell for the same identity leaves the newer entry alone.
        registry.remove(&old);
        let current = entry_cell(&registry, 2, ("cap", "a"), never).unwrap();
        assert!(Arc::ptr_eq(&current, &new));
        assert_eq!(registry.stats().live, 1);

        // A cell never registered (another module's stripe slot is empty) is a no-op too.
        registry.remove(&cell("b", "cap", 2, 2));
        assert_eq!(registry.stats().live, 1);

        registry.remove(&new);
        registry.remove(&new);
        let stats = registry.stats();
        assert_eq!((stats.live, stats.activated), (0, 2));
    }

    #[actix_rt::test]
    async fn counters_follow_activations_removals_and_restarts() {
        let registry = ActivationRegistry::new();
        let arbiter = Arbiter::current();
        let cells: Vec<_> = (0..3)
            .map(|i| cell(&format!("a{i}"), "cap", i, u64::from(i)))
            .collect();
        for (i, c) in cells.iter().enumerate() {
            entry_cell(&registry, i as u32, ("cap", c.id.as_str()), || {
                start(c.clone(), &arbiter)
            })
            .unwrap();
        }
        registry.remove(&cells[0]);
        registry.record_restart();
        registry.record_restart();
        assert_eq!(
            registry.stats(),
            RegistryStats {
                live: 2,
                activated: 3,
                restarts: 2,
                ..RegistryStats::default()
            }
        );
    }

    #[actix_rt::test]
    async fn unwanted_selects_the_cells_the_predicate_rejects() {
        let registry = ActivationRegistry::new();
        let arbiter = Arbiter::current();
        let specs = [
            ("k1", "keep", 1),
            ("m1", "move", 1),
            ("k2", "keep", 40),
            ("m2", "move", 63),
        ];
        for (serial, (id_, capability, shard)) in specs.into_iter().enumerate() {
            let c = cell(id_, capability, shard, serial as u64);
            entry_cell(&registry, shard, (capability, id_), || start(c, &arbiter)).unwrap();
        }
        let mut moved: Vec<String> = registry
            .unwanted(|c| c.capability.as_str() == "keep")
            .into_iter()
            .map(|entry| entry.cell.id.to_string())
            .collect();
        moved.sort();
        assert_eq!(moved, ["m1", "m2"]);
        // Selecting removes nothing.
        assert_eq!(registry.stats().live, 4);
        assert_eq!(registry.unwanted(|_| true).len(), 0);
        assert_eq!(registry.unwanted(|_| false).len(), 4);
    }

    #[actix_rt::test]
    async fn entries_live_in_the_stripe_of_their_shard() {
        let registry = ActivationRegistry::new();
        let arbiter = Arbiter::current();
        let shard = 5;
        let c = cell("a", "cap", shard, 0);
        entry_cell(&registry, shard, ("cap", "a"), || {
            start(c.clone(), &arbiter)
        })
        .unwrap();

        let holds = |s: u32| {
            registry
                .stripe(ShardId(s))
                .read()
                .get("cap", "Probe", "a")
                .is_some()
        };
        assert!(holds(shard));
        assert!(
            holds(shard + STRIPES as u32),
            "shards wrap around the stripes"
        );
        assert!(!holds(shard + 1));
        let holding = (0..STRIPES as u32).filter(|s| holds(*s)).count();
        assert_eq!(holding, 1);

        // Another stripe's write lock does not block this identity.
        let _other = registry.stripe(ShardId(shard + 1)).write();
        let hit = entry_cell(&registry, shard, ("cap", "a"), never).unwrap();
        assert!(Arc::ptr_eq(&hit, &c));

        // `remove` finds the entry through the cell's shard.
        registry.remove(&c);
        assert!(!holds(shard));
    }

    fn handoff(id_: &str, count: u64) -> Handoff {
        Handoff {
            capability: Capability::new("cap").unwrap(),
            module: module(),
            id: id(id_),
            init_arg: None,
            state: Some(json!({"count": count})),
            from: mesh_core::NodeId::new("old").unwrap(),
            incarnation: 1,
        }
    }

    #[actix_rt::test]
    async fn a_handoff_waits_for_its_identity_and_is_taken_once() {
        let registry = ActivationRegistry::new();
        let cap = Capability::new("cap").unwrap();
        registry.put_handoff(ShardId(1), handoff("a", 1)).unwrap();
        // A newer one for the same identity replaces it; it still waits once.
        registry.put_handoff(ShardId(1), handoff("a", 2)).unwrap();
        registry.put_handoff(ShardId(2), handoff("b", 3)).unwrap();
        let stats = registry.stats();
        assert_eq!((stats.handoffs_received, stats.handoffs_waiting), (3, 2));

        // Another capability's identity of the same (module, id) is another actor.
        let other = Capability::new("other").unwrap();
        assert!(registry
            .take_handoff(ShardId(1), &other, &module(), &id("a"))
            .is_none());
        let taken = registry.take_handoff(ShardId(1), &cap, &module(), &id("a"));
        assert_eq!(taken.unwrap().state, Some(json!({"count": 2})));
        assert!(registry
            .take_handoff(ShardId(1), &cap, &module(), &id("a"))
            .is_none());

        let passed = registry.take_handoffs(|h| h.id.as_str() == "b");
        assert_eq!(passed.len(), 1);
        assert_eq!(registry.stats().handoffs_waiting, 0);
    }

    #[actix_rt::test]
    async fn a_handoff_for_a_live_identity_is_refused_and_unsettles_nothing() {
        let registry = ActivationRegistry::new();
        let arbiter = Arbiter::current();
        let live = cell("a", "cap", 1, 0);
        entry_cell(&registry, 1, ("cap", "a"), || start(live.clone(), &arbiter)).unwrap();
        match registry.put_handoff(ShardId(1), handoff("a", 5)) {
            Err(RefusedHandoff::Live(refused)) => assert_eq!(refused.id.as_str(), "a"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(registry.stats().handoffs_waiting, 0);

        // Sending handoffs keeps the node unsettled until each is answered.
        assert!(registry.is_settled());
        registry.record_handoff_sending();
        assert!(!registry.is_settled());
        registry.record_handoff_done(false);
        assert!(registry.is_settled());
        let stats = registry.stats();
        assert_eq!((stats.handoffs_sent, stats.handoffs_failed), (0, 1));
    }
}
