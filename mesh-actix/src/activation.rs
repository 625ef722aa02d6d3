//! One activation: its cell (identity, incarnation, lifecycle flags), the envelope mesh
//! delivers through, the panic guard, and the supervision glue.
//!
//! Lifecycle of an activation, and where each step happens:
//! - **activate**: [`TypedActivator`] runs the user's `init` on the caller's thread (so a
//!   rejected `init_arg` fails the call synchronously) and starts the actor under an actix
//!   [`Supervisor`] on the arbiter [`Placement`](crate::Placement) picks (the caller's, or
//!   one of the pool). A *sentinel* future, stamped with the incarnation, is spawned into the
//!   actor's context: actix drops context futures exactly when an incarnation ends, so the
//!   sentinel's drop is how mesh learns that an actor stopped, whatever stopped it (a
//!   handler, a timer, a shutdown, its arbiter's end).
//! - **crash**: [`handle_envelope`] runs the handler inside `catch_unwind`. On a panic it
//!   replaces the (possibly inconsistent) state with a fresh `init`, bumps the incarnation (a
//!   new pid), posts itself a `Rearm` for the new incarnation and calls `ctx.stop()`; the
//!   supervisor then restarts the actor in place, keeping its mailbox. The old sentinel sees
//!   a newer incarnation and lets it be. The crashing call fails with `actor_crashed`; calls
//!   queued behind it are served by the fresh state.
//! - **deactivate** (the actor stopped itself, or its shard moved): the cell is retired and
//!   removed from the registry. When its shard moved in a planned change (a join, a leave, a
//!   capability change), the actor takes a snapshot of its state (for `#[mesh(snapshot)]`
//!   types) as the last thing it does, and mesh sends a [`Handoff`] to the new owner, which
//!   starts the identity from it. The actor keeps one address alive until the supervisor has
//!   restarted it, so that the envelopes still queued are answered `Retired` with their
//!   payload, and their callers route them again to a fresh activation instead of losing
//!   them. With its queue drained and no address left, the retired actor ends.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{self, Poll};

use actix::dev::{MessageResponse, OneshotSender};
use actix::prelude::*;
use mesh_core::{
    ActorId, Capability, Handoff, Member, MeshError, Module, NodeId, Refusal, Request, ShardId,
};
use serde_json::Value;

use crate::actor::{Delivery, HandlesPayload, MeshActor, MeshResponse, Payload};
use crate::gate::Gate;
use crate::mesh::WeakMesh;
use crate::metrics::ModuleCounters;
use crate::registry::ActivationRegistry;
use crate::store::{StateKey, StateStore, StoreError, StoredState};

/// What every activation of one node shares: the node's id, registry, serving gate, and the
/// way back to its `Mesh` (to route again a cast that its activation could not execute).
pub(crate) struct Host {
    pub(crate) node: NodeId,
    pub(crate) registry: Weak<ActivationRegistry>,
    pub(crate) gate: Arc<Gate>,
    pub(crate) mesh: WeakMesh,
    /// Where durable actors keep their state.
    pub(crate) store: Option<Arc<dyn StateStore>>,
    /// Milliseconds since the node started (wrapping), as of the idle sweeper's last tick: a
    /// clock a delivery reads without a system call to note when its activation was last
    /// used. 32 bits, like the activation's note of it, to keep activations small.
    pub(crate) clock_ms: AtomicU32,
}

impl Host {
    /// A host linked to nothing, serving for an hour, for tests of single activations.
    #[cfg(test)]
    pub(crate) fn detached(node: &str) -> Arc<Host> {
        let gate = Arc::new(Gate::new());
        gate.set(
            Some(gate.now() + std::time::Duration::from_secs(3600)),
            None,
        );
        Arc::new(Host {
            node: NodeId::new(node).unwrap(),
            registry: Weak::new(),
            gate,
            mesh: WeakMesh::detached(),
            store: None,
            clock_ms: AtomicU32::new(0),
        })
    }
}

impl Host {
    fn record_save(&self, outcome: Result<(), &StoreError>) {
        if let Some(registry) = self.registry.upgrade() {
            registry.record_save(outcome);
        }
    }
}

/// The identity an activation serves.
pub(crate) struct Identity {
    pub(crate) module: Module,
    pub(crate) id: ActorId,
    pub(crate) capability: Capability,
    pub(crate) shard: ShardId,
    pub(crate) init_arg: Option<Value>,
    /// Passivate the activation after this many idle milliseconds (at most
    /// [`MAX_IDLE_MS`]); 0: never.
    pub(crate) idle_after_ms: u32,
    /// Its type keeps its state in the store.
    pub(crate) durable: bool,
    /// The `mesh_module_*` counters of its `(capability, module)`.
    pub(crate) counters: Arc<ModuleCounters>,
}

/// The longest idle timeout, in milliseconds (about 12 days): the host clock and each
/// activation's note of it are 32-bit and compared wrapping, which is exact for idle times
/// below 2^31 ms.
pub(crate) const MAX_IDLE_MS: u32 = 1 << 30;

/// What a durable activation knows of its stored state: the version it was read from or last
/// saved as (0: none yet), and a hash of those bytes, so that a call that changed nothing
/// writes nothing. Only the actor's own thread writes them.
struct StoredMark {
    version: AtomicU64,
    hash: AtomicU64,
}

/// Everything mesh knows about one activation, shared by the registry entry and every
/// envelope sent to it.
pub(crate) struct ActivationCell {
    pub(crate) module: Module,
    pub(crate) id: ActorId,
    pub(crate) capability: Capability,
    pub(crate) shard: ShardId,
    /// Boxed: most activations have none, and every activation pays for the field.
    init_arg: Option<Box<Value>>,
    host: Arc<Host>,
    serial: u64,
    incarnation: AtomicU64,
    retired: AtomicBool,
    stopped: AtomicBool,
    /// The host clock when the activation last got a payload.
    last_used: AtomicU32,
    idle_after_ms: u32,
    /// Durable types only.
    stored: Option<Box<StoredMark>>,
    /// The `mesh_module_*` counters of its `(capability, module)`.
    pub(crate) counters: Arc<ModuleCounters>,
}

impl ActivationCell {
    pub(crate) fn new(identity: Identity, serial: u64, host: Arc<Host>) -> ActivationCell {
        let Identity {
            module,
            id,
            capability,
            shard,
            init_arg,
            idle_after_ms,
            durable,
            counters,
        } = identity;
        let now = host.clock_ms.load(Ordering::Relaxed);
        let stored = durable.then(|| {
            Box::new(StoredMark {
                version: AtomicU64::new(0),
                hash: AtomicU64::new(0),
            })
        });
        ActivationCell {
            module,
            id,
            capability,
            shard,
            init_arg: init_arg.map(Box::new),
            host,
            serial,
            incarnation: AtomicU64::new(0),
            retired: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            last_used: AtomicU32::new(now),
            idle_after_ms: idle_after_ms.min(MAX_IDLE_MS),
            stored,
            counters,
        }
    }

    /// Whether this is the activation of `(capability, <its module>, id)`.
    pub(crate) fn is(&self, capability: &str, id: &str) -> bool {
        self.id.as_str() == id && self.capability.as_str() == capability
    }

    /// The identity's key in the state store.
    pub(crate) fn state_key(&self) -> StateKey {
        StateKey {
            capability: self.capability.clone(),
            module: self.module.clone(),
            id: self.id.clone(),
        }
    }

    fn touch(&self) {
        let now = self.host.clock_ms.load(Ordering::Relaxed);
        self.last_used.store(now, Ordering::Relaxed);
    }

    /// Whether the activation has been idle for longer than its idle timeout as of `now`
    /// (host clock), counting `slack` for the clock's coarseness so that none is passivated
    /// early.
    pub(crate) fn is_idle(&self, now: u32, slack: u32) -> bool {
        self.idle_after_ms != 0
            && now.wrapping_sub(self.last_used.load(Ordering::Relaxed))
                > self.idle_after_ms.saturating_add(slack)
    }

    /// The stored version this durable activation last read or wrote (0 otherwise).
    fn stored_version(&self) -> u64 {
        self.stored
            .as_ref()
            .map_or(0, |s| s.version.load(Ordering::Relaxed))
    }

    fn stored_hash(&self) -> u64 {
        self.stored
            .as_ref()
            .map_or(0, |s| s.hash.load(Ordering::Relaxed))
    }

    fn note_stored(&self, version: u64, hash: u64) {
        if let Some(stored) = &self.stored {
            stored.version.store(version, Ordering::Relaxed);
            stored.hash.store(hash, Ordering::Relaxed);
        }
    }

    /// The pid of one incarnation: node, activation serial, incarnation. A restart after a
    /// crash bumps the incarnation; a re-activation gets a new serial.
    pub(crate) fn pid(&self, incarnation: u64) -> String {
        // Written by hand, not with `format!`: every reply carries one, and the formatting
        // machinery was ~3 % of a local call (BENCHMARKS.md, "Per-call work").
        let (mut serial, mut incarnation_digits) = (itoa::Buffer::new(), itoa::Buffer::new());
        let (serial, incarnation) = (
            serial.format(self.serial),
            incarnation_digits.format(incarnation),
        );
        let node = self.host.node.as_str();
        let mut pid = String::with_capacity(node.len() + serial.len() + incarnation.len() + 4);
        for part in ["<", node, ".", serial, ".", incarnation, ">"] {
            pid.push_str(part);
        }
        pid
    }

    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Retires the activation and removes it from the registry. Idempotent. The registry
    /// counts it as retiring until its actor has stopped.
    pub(crate) fn deactivate(self: &Arc<Self>) {
        if !self.retired.swap(true, Ordering::AcqRel) {
            if let Some(registry) = self.host.registry.upgrade() {
                registry.remove(self);
                if !self.stopped.load(Ordering::Acquire) {
                    registry.record_retiring();
                }
            }
        }
    }

    /// The actor has stopped for good: no handler of it runs any more. Idempotent.
    pub(crate) fn mark_stopped(self: &Arc<Self>) {
        self.deactivate();
        if !self.stopped.swap(true, Ordering::AcqRel) {
            if let Some(registry) = self.host.registry.upgrade() {
                registry.record_stopped();
            }
        }
    }

    fn record_restart(&self) {
        if let Some(registry) = self.host.registry.upgrade() {
            registry.record_restart();
        }
    }

    /// Sends this identity, with the state its actor last had, to its new owner.
    fn hand_off(&self, to: Arc<Member>, state: Option<Result<Value, String>>) {
        let Some(mesh) = self.host.mesh.upgrade() else {
            return;
        };
        let state = match state {
            Some(Ok(state)) => Some(state),
            Some(Err(error)) => {
                tracing::warn!(node = %self.host.node, module = %self.module, id = %self.id, %error,
                    "the actor's snapshot did not serialise; its new owner starts it afresh");
                None
            }
            None => None,
        };
        let handoff = Handoff {
            capability: self.capability.clone(),
            module: self.module.clone(),
            id: self.id.clone(),
            init_arg: self.init_arg.as_deref().cloned(),
            state,
            from: self.host.node.clone(),
            incarnation: mesh.config().incarnation,
        };
        mesh.hand_off(to, handoff);
    }

    /// Routes again a cast this activation will not execute (it was retired, or the node lost
    /// its lease while the cast was queued): nobody waits for its reply, so mesh does.
    fn reroute_cast(&self, payload: Payload) {
        let Some(mesh) = self.host.mesh.upgrade() else {
            return;
        };
        let remaining = payload
            .deadline
            .map(|d| d.saturating_duration_since(std::time::Instant::now()));
        if remaining.is_some_and(|r| r.is_zero()) {
            tracing::debug!(module = %self.module, id = %self.id, "queued cast expired; dropped");
            return;
        }
        let request = Request {
            module: self.module.clone(),
            id: self.id.clone(),
            capability: self.capability.clone(),
            payload: payload.body,
            init_arg: self.init_arg.as_deref().cloned(),
            timeout: remaining,
        };
        actix_rt::spawn(async move {
            if let Err(error) = mesh.cast(request).await {
                tracing::warn!(%error, "a cast re-routed from a retired activation was lost");
            }
        });
    }
}

/// The only message mesh sends to an actor.
#[doc(hidden)]
pub struct Envelope {
    cell: Arc<ActivationCell>,
    kind: EnvelopeKind,
}

enum EnvelopeKind {
    Deliver(Payload),
    /// Deactivate: the actor's shard moved to another node, or this node stopped serving.
    /// With a successor (a planned move), the identity is handed over to it.
    Stop(Option<Arc<Member>>),
    /// Arms the sentinel of the incarnation that follows a crash.
    Rearm(u64),
}

impl Envelope {
    pub(crate) fn deliver(cell: Arc<ActivationCell>, payload: Payload) -> Envelope {
        Envelope {
            cell,
            kind: EnvelopeKind::Deliver(payload),
        }
    }

    /// The payload of a delivery envelope that never reached its actor.
    pub(crate) fn into_payload(self) -> Option<Payload> {
        match self.kind {
            EnvelopeKind::Deliver(payload) => Some(payload),
            EnvelopeKind::Stop(_) | EnvelopeKind::Rearm(_) => None,
        }
    }

    pub(crate) fn stop(cell: Arc<ActivationCell>, successor: Option<Arc<Member>>) -> Envelope {
        Envelope {
            cell,
            kind: EnvelopeKind::Stop(successor),
        }
    }
}

impl Message for Envelope {
    type Result = Result<Delivered, Undelivered>;
}

/// A handled payload: the actor's reply and the incarnation that produced it.
#[doc(hidden)]
pub struct Delivered {
    pub(crate) incarnation: u64,
    pub(crate) value: Value,
}

/// Why an envelope produced no reply.
#[doc(hidden)]
pub enum Undelivered {
    /// The handler panicked; the message says why.
    Crashed(String),
    /// The activation was deactivated before it got to the envelope; the payload comes back
    /// so the caller can re-activate and deliver it.
    Retired(Option<Payload>),
    /// The node stopped serving (lease lost, draining) before the envelope's turn came: not
    /// executed.
    Refused(Refusal, String),
    /// The request's deadline passed while it was queued: dropped, not executed.
    Expired,
    /// A durable actor handled the payload but its new state could not be saved; the
    /// activation was discarded with it, so the call had no lasting effect.
    NotSaved(String),
}

/// The result of the guarded handler: ready now or after the user's future.
#[doc(hidden)]
pub enum EnvelopeResponse<A: MeshActor> {
    Ready(Result<Delivered, Undelivered>),
    Later(Guarded<A>),
    /// A durable actor's reply, sent once its new state is saved.
    Saving(PendingSave),
}

impl<A: MeshActor> MessageResponse<A, Envelope> for EnvelopeResponse<A> {
    fn handle(
        self,
        ctx: &mut Context<A>,
        tx: Option<OneshotSender<Result<Delivered, Undelivered>>>,
    ) {
        let reply = |result| {
            if let Some(tx) = tx {
                // The caller may have timed out and gone; nothing to do then.
                let _ = tx.send(result);
            }
        };
        match self {
            EnvelopeResponse::Ready(result) => reply(result),
            // Like actix's own `ResponseActFuture`: the actor keeps serving its mailbox while
            // the future waits.
            EnvelopeResponse::Later(mut fut) => {
                let cell = fut.cell.clone();
                let retry = fut.retry.take();
                ctx.spawn(fut.map(move |result, act, ctx| match result {
                    Ok(delivered) if A::DURABLE => {
                        let pending = PendingSave::after(act, cell, delivered, retry);
                        finish_save(pending, ctx, reply)
                    }
                    result => reply(result),
                }));
            }
            EnvelopeResponse::Saving(pending) => finish_save(pending, ctx, reply),
        }
    }
}

/// A durable actor's reply waiting for its state to be saved.
#[doc(hidden)]
pub struct PendingSave {
    cell: Arc<ActivationCell>,
    delivered: Delivered,
    save: Result<Option<Save>, String>,
    /// The payload again, to route it once more if the save finds this activation stale.
    retry: Option<Payload>,
}

struct Save {
    write: futures_util::future::BoxFuture<'static, Result<u64, StoreError>>,
    hash: u64,
}

impl PendingSave {
    /// Serialises `act`'s state after a call and starts saving it, unless it is what the
    /// store already holds.
    fn after<A: MeshActor>(
        act: &A,
        cell: Arc<ActivationCell>,
        delivered: Delivered,
        retry: Option<Payload>,
    ) -> Self {
        let save = (|| {
            let state = match act.save_state() {
                Some(Ok(state)) => state,
                Some(Err(error)) => return Err(format!("the state did not serialise: {error}")),
                None => return Ok(None),
            };
            let hash = xxhash_rust::xxh3::xxh3_64(&state);
            if hash == cell.stored_hash() {
                return Ok(None);
            }
            let store = cell
                .host
                .store
                .as_ref()
                .ok_or("this node has no state store")?;
            let expected = cell.stored_version();
            let write = store.save(&cell.state_key(), state, expected);
            Ok(Some(Save { write, hash }))
        })();
        PendingSave {
            cell,
            delivered,
            save,
            retry,
        }
    }
}

/// A copy of a payload a durable actor is about to handle, in case its save finds the
/// activation stale and the payload must run again on a fresh one.
fn retry_copy(payload: &Payload) -> Payload {
    Payload {
        body: payload.body.clone(),
        delivery: payload.delivery,
        deadline: payload.deadline,
    }
}

/// Replies once the state is saved (write-through: the reply says the state is durable).
/// While the save runs the actor handles nothing else, so that saves happen in the order of
/// the calls. A save that fails discards the activation, whose state is now ahead of the
/// store: the call had no lasting effect, and the next one starts from the stored state.
fn finish_save<A: MeshActor>(
    pending: PendingSave,
    ctx: &mut Context<A>,
    reply: impl FnOnce(Result<Delivered, Undelivered>) + 'static,
) {
    let PendingSave {
        cell,
        delivered,
        save,
        retry,
    } = pending;
    let Save { write, hash } = match save {
        Ok(None) => return reply(Ok(delivered)),
        Ok(Some(save)) => save,
        Err(reason) => {
            discard(&cell, ctx, &reason);
            return reply(Err(Undelivered::NotSaved(reason)));
        }
    };
    let saved = move |result: Result<u64, StoreError>| match result {
        Ok(version) => {
            cell.note_stored(version, hash);
            cell.host.record_save(Ok(()));
            reply(Ok(delivered));
            None
        }
        Err(error) => {
            cell.host.record_save(Err(&error));
            let outcome = match &error {
                // A newer activation saved since this one loaded: this one is stale and its
                // effect is discarded. The payload runs again, on an activation that starts
                // from the newer state.
                StoreError::Conflict { .. } => match retry {
                    Some(payload) if payload.delivery == Delivery::Cast => {
                        cell.reroute_cast(payload);
                        Undelivered::Retired(None)
                    }
                    payload => Undelivered::Retired(payload),
                },
                StoreError::Unavailable(reason) => Undelivered::NotSaved(reason.clone()),
            };
            reply(Err(outcome));
            Some((cell, error))
        }
    };
    if ctx.state() == ActorState::Stopping {
        // A stopping actor polls no `wait` future: save on the side (the activation is
        // deactivated already, so nothing else can be handled meanwhile).
        actix_rt::spawn(async move {
            if let Some((cell, error)) = saved(write.await) {
                log_discard(&cell, &error.to_string());
            }
        });
        return;
    }
    ctx.wait(
        actix::fut::wrap_future(write).map(move |result, _: &mut A, ctx| {
            if let Some((cell, error)) = saved(result) {
                discard(&cell, ctx, &error.to_string());
            }
        }),
    );
}

/// The guarded handler every derived `MeshActor` delivers through.
#[doc(hidden)]
pub fn handle_envelope<A: MeshActor>(
    act: &mut A,
    envelope: Envelope,
    ctx: &mut Context<A>,
) -> EnvelopeResponse<A> {
    let Envelope { cell, kind } = envelope;
    match kind {
        EnvelopeKind::Rearm(incarnation) => {
            if cell.is_retired() {
                ctx.stop();
            } else if incarnation == cell.incarnation.load(Ordering::Acquire) {
                // A later crash has already queued the Rearm of a newer incarnation otherwise.
                arm_sentinel(ctx, cell, incarnation);
            }
            EnvelopeResponse::Ready(Err(Undelivered::Retired(None)))
        }
        EnvelopeKind::Stop(successor) => {
            // The last thing this actor does: nothing it had queued runs here any more (each
            // is answered `Retired` and routed again, to the new owner).
            if let Some(to) = successor {
                cell.hand_off(to, act.snapshot_state());
            }
            retire(&cell, ctx);
            ctx.stop();
            EnvelopeResponse::Ready(Err(Undelivered::Retired(None)))
        }
        EnvelopeKind::Deliver(payload) if cell.is_retired() => {
            if payload.delivery == Delivery::Cast {
                cell.reroute_cast(payload);
                return EnvelopeResponse::Ready(Err(Undelivered::Retired(None)));
            }
            EnvelopeResponse::Ready(Err(Undelivered::Retired(Some(payload))))
        }
        EnvelopeKind::Deliver(payload) if !cell.host.gate.is_open() => {
            // Checked right before the handler: a node paused past its lease must not
            // execute what it had queued, whichever of its threads wakes up first.
            if payload.delivery == Delivery::Cast {
                cell.reroute_cast(payload);
                return EnvelopeResponse::Ready(Err(Undelivered::Retired(None)));
            }
            let (refusal, reason) = cell
                .host
                .gate
                .refusal()
                .unwrap_or((Refusal::NoLease, String::new()));
            EnvelopeResponse::Ready(Err(Undelivered::Refused(refusal, reason)))
        }
        EnvelopeKind::Deliver(payload)
            if payload
                .deadline
                .is_some_and(|d| d <= std::time::Instant::now()) =>
        {
            EnvelopeResponse::Ready(Err(Undelivered::Expired))
        }
        EnvelopeKind::Deliver(payload) => {
            cell.touch();
            let retry = A::DURABLE.then(|| retry_copy(&payload));
            let incarnation = cell.incarnation.load(Ordering::Acquire);
            let handled = catch_unwind(AssertUnwindSafe(|| {
                HandlesPayload::handle_payload(act, payload, ctx)
            }));
            match handled {
                Ok(MeshResponse::Ready(value)) => {
                    deactivate_if_stopping(&cell, ctx);
                    let delivered = Delivered { incarnation, value };
                    if A::DURABLE {
                        let pending = PendingSave::after(act, cell, delivered, retry);
                        return EnvelopeResponse::Saving(pending);
                    }
                    EnvelopeResponse::Ready(Ok(delivered))
                }
                Ok(MeshResponse::Later(inner)) => {
                    deactivate_if_stopping(&cell, ctx);
                    EnvelopeResponse::Later(Guarded {
                        inner,
                        retry,
                        cell,
                        incarnation,
                    })
                }
                Err(panic) => EnvelopeResponse::Ready(Err(crash(act, &cell, ctx, panic))),
            }
        }
    }
}

/// A handler that called `ctx.stop()` deactivates its actor now rather than when its
/// sentinel drops, so that no new call reaches it meanwhile.
fn deactivate_if_stopping<A: MeshActor>(cell: &Arc<ActivationCell>, ctx: &mut Context<A>) {
    if ctx.state() == ActorState::Stopping {
        retire(cell, ctx);
    }
}

/// Deactivates `cell` from inside its actor, keeping the mailbox connected until the
/// supervisor has restarted the actor: the restarted (retired) actor then answers every
/// envelope still queued with its payload, and those callers route again instead of seeing
/// their message dropped with the mailbox.
fn retire<A: MeshActor>(cell: &Arc<ActivationCell>, ctx: &mut Context<A>) {
    cell.deactivate();
    let address = ctx.address();
    // Runs after the current poll of this arbiter, i.e. after the supervisor's restart check.
    actix_rt::spawn(async move { drop(address) });
}

/// Ends a durable activation whose state could not be saved: its state is ahead of the
/// store, so it must never answer again; the next call starts from the stored state.
fn discard<A: MeshActor>(cell: &Arc<ActivationCell>, ctx: &mut Context<A>, reason: &str) {
    log_discard(cell, reason);
    retire(cell, ctx);
    ctx.stop();
}

fn log_discard(cell: &ActivationCell, reason: &str) {
    tracing::warn!(node = %cell.host.node, module = %cell.module, id = %cell.id,
        version = cell.stored_version(), %reason,
        "a durable activation's state was not saved; the activation is discarded and the call \
         has no lasting effect");
}

/// Handles a panic caught in `act`: fresh state, new incarnation, restart by the supervisor.
fn crash<A: MeshActor>(
    act: &mut A,
    cell: &Arc<ActivationCell>,
    ctx: &mut Context<A>,
    panic: Box<dyn Any + Send>,
) -> Undelivered {
    let reason = panic_message(&panic);
    cell.record_restart();
    if A::DURABLE {
        // Its last saved state is the one to continue from, and it is in the store: the
        // next call activates the identity from there (a new pid, as after any restart).
        tracing::info!(node = %cell.host.node, module = %cell.module, id = %cell.id,
            shard = cell.shard.0, reason = %reason,
            "durable actor panicked; the next call restarts it from its last saved state");
        retire(cell, ctx);
        ctx.stop();
        return Undelivered::Crashed(reason);
    }
    tracing::info!(node = %cell.host.node, module = %cell.module, id = %cell.id, shard = cell.shard.0,
        reason = %reason, "actor panicked; its supervisor restarts it with fresh state");
    match init::<A>(cell) {
        Ok(fresh) => {
            *act = fresh;
            let incarnation = cell.incarnation.fetch_add(1, Ordering::AcqRel) + 1;
            // The mailbox survives the restart; context futures (and so the sentinel) do not.
            ctx.address().do_send(Envelope {
                cell: cell.clone(),
                kind: EnvelopeKind::Rearm(incarnation),
            });
        }
        // The same init_arg no longer initialises: give up on this activation; the next call
        // activates afresh and reports the init error.
        Err(_) => retire(cell, ctx),
    }
    ctx.stop();
    Undelivered::Crashed(reason)
}

fn panic_message(panic: &Box<dyn Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

/// The user's future of an async handler, polled inside `catch_unwind`.
#[doc(hidden)]
pub struct Guarded<A: MeshActor> {
    inner: ResponseActFuture<A, Value>,
    /// Durable types: the payload again (see [`PendingSave`]).
    retry: Option<Payload>,
    cell: Arc<ActivationCell>,
    incarnation: u64,
}

impl<A: MeshActor> ActorFuture<A> for Guarded<A> {
    type Output = Result<Delivered, Undelivered>;

    fn poll(
        self: Pin<&mut Self>,
        act: &mut A,
        ctx: &mut Context<A>,
        task: &mut task::Context<'_>,
    ) -> Poll<Self::Output> {
        let this = self.get_mut();
        match catch_unwind(AssertUnwindSafe(|| {
            this.inner.as_mut().poll(act, ctx, task)
        })) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(Delivered {
                incarnation: this.incarnation,
                value,
            })),
            Err(panic) => Poll::Ready(Err(crash(act, &this.cell, ctx, panic))),
        }
    }
}

/// What a new activation starts from.
pub(crate) enum Start {
    /// `init` with the cell's `init_arg`.
    Init,
    /// A state handed over by the old owner (types that snapshot but keep no store).
    Handoff(Value),
    /// What the store holds for a durable type (`None`: nothing yet, so `init`).
    Stored(Option<StoredState>),
}

/// Builds the actor for a new activation from `start`.
fn build<A: MeshActor>(cell: &ActivationCell, start: Start) -> Result<A, MeshError> {
    match start {
        Start::Init | Start::Stored(None) => init(cell),
        Start::Handoff(state) => restore_or_init(cell, state),
        Start::Stored(Some(stored)) => {
            let loaded = catch_unwind(AssertUnwindSafe(|| A::load_state(&cell.id, &stored.state)));
            let failure = match loaded {
                Ok(Some(Ok(actor))) => {
                    let hash = xxhash_rust::xxh3::xxh3_64(&stored.state);
                    cell.note_stored(stored.version, hash);
                    return Ok(actor);
                }
                Ok(Some(Err(error))) => error.0,
                Ok(None) => "this node's actor type keeps no durable state".to_owned(),
                Err(panic) => format!("restoring it panicked: {}", panic_message(&panic)),
            };
            // Never start afresh over a stored state: that would lose it at the next save.
            tracing::error!(node = %cell.host.node, module = %cell.module, id = %cell.id,
                version = stored.version, error = %failure, "the stored state does not restore");
            Err(MeshError::init_failed(&format!(
                "the stored state of {}/{} (version {}) does not restore: {failure}",
                cell.module, cell.id, stored.version
            )))
        }
    }
}

/// Rebuilds the actor from a handed-over state if its type can, else (or if that fails, which
/// is logged) runs its init.
fn restore_or_init<A: MeshActor>(cell: &ActivationCell, state: Value) -> Result<A, MeshError> {
    match catch_unwind(AssertUnwindSafe(|| A::restore_state(&cell.id, state))) {
        Ok(Some(Ok(actor))) => return Ok(actor),
        Ok(None) => tracing::warn!(node = %cell.host.node, module = %cell.module, id = %cell.id,
            "a state was handed over but this node's actor type cannot restore one; starting afresh"),
        Ok(Some(Err(error))) => tracing::warn!(node = %cell.host.node, module = %cell.module,
            id = %cell.id, error = %error.0, "the handed-over state did not restore; starting afresh"),
        Err(panic) => tracing::warn!(node = %cell.host.node, module = %cell.module, id = %cell.id,
            reason = %panic_message(&panic), "restoring the handed-over state panicked; starting afresh"),
    }
    init(cell)
}

/// Runs the user's init, turning a rejection or a panic into `init_failed`.
fn init<A: MeshActor>(cell: &ActivationCell) -> Result<A, MeshError> {
    match catch_unwind(AssertUnwindSafe(|| {
        A::init(&cell.id, cell.init_arg.as_deref())
    })) {
        Ok(Ok(actor)) => Ok(actor),
        Ok(Err(e)) => Err(MeshError::init_failed(&e.0)),
        Err(panic) => Err(MeshError::init_failed(&format!(
            "init panicked: {}",
            panic_message(&panic)
        ))),
    }
}

/// Lives in the actor's context for one incarnation; actix drops it when the incarnation ends.
struct Sentinel {
    cell: Arc<ActivationCell>,
    incarnation: u64,
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        // A crash starts a newer incarnation before it stops the actor. An incarnation that
        // ends without one was stopped for good: by the actor itself, by a deactivation, or by
        // its arbiter shutting down.
        if self.cell.incarnation.load(Ordering::Acquire) == self.incarnation {
            self.cell.mark_stopped();
        }
    }
}

fn arm_sentinel<A: MeshActor>(ctx: &mut Context<A>, cell: Arc<ActivationCell>, incarnation: u64) {
    let sentinel = Sentinel { cell, incarnation };
    ctx.spawn(actix::fut::wrap_future(async move {
        let _sentinel = sentinel;
        std::future::pending::<()>().await
    }));
}

/// Builds a starter for actor type `A`, type-erased so the registry can hold many types.
pub(crate) trait Activator: Send + Sync + 'static {
    fn start(
        &self,
        cell: Arc<ActivationCell>,
        arbiter: &ArbiterHandle,
        mailbox_capacity: usize,
        start: Start,
    ) -> Result<Recipient<Envelope>, MeshError>;

    /// Whether the type keeps its state in the store (`#[mesh(durable)]`).
    fn is_durable(&self) -> bool;

    /// The type's own idle timeout, if it declares one (`Some(ZERO)`: never passivate).
    fn idle_timeout(&self) -> Option<std::time::Duration>;
}

pub(crate) struct TypedActivator<A>(std::marker::PhantomData<fn() -> A>);

impl<A> TypedActivator<A> {
    pub(crate) fn new() -> Self {
        TypedActivator(std::marker::PhantomData)
    }
}

impl<A: MeshActor> Activator for TypedActivator<A> {
    fn start(
        &self,
        cell: Arc<ActivationCell>,
        arbiter: &ArbiterHandle,
        mailbox_capacity: usize,
        start: Start,
    ) -> Result<Recipient<Envelope>, MeshError> {
        let actor = build::<A>(&cell, start)?;
        let addr = Supervisor::start_in_arbiter(arbiter, move |ctx: &mut Context<A>| {
            ctx.set_mailbox_capacity(mailbox_capacity);
            arm_sentinel(ctx, cell, 0);
            actor
        });
        Ok(addr.recipient())
    }

    fn is_durable(&self) -> bool {
        A::DURABLE
    }

    fn idle_timeout(&self) -> Option<std::time::Duration> {
        A::IDLE_TIMEOUT_SECS.map(std::time::Duration::from_secs)
    }
}

/// Keeps the compiler honest that envelopes can cross threads.
const _: fn() = || {
    fn assert_send<T: Send>() {}
    assert_send::<Envelope>();
};

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn cell(node: &str, serial: u64) -> Arc<ActivationCell> {
        let identity = Identity {
            module: Module::new("Counter").unwrap(),
            id: ActorId::new("counter_1").unwrap(),
            capability: Capability::new("counter").unwrap(),
            shard: ShardId(3),
            init_arg: None,
            idle_after_ms: 0,
            durable: false,
            counters: Arc::default(),
        };
        Arc::new(ActivationCell::new(identity, serial, Host::detached(node)))
    }

    #[test]
    fn pid_names_node_serial_and_incarnation() {
        let first = cell("node-1", 7);
        assert_eq!(first.pid(0), "<node-1.7.0>");
        assert_eq!(first.pid(1), "<node-1.7.1>");
        // A restart (incarnation) and a re-activation (serial) each give a new pid.
        assert_ne!(first.pid(0), first.pid(1));
        assert_ne!(first.pid(0), cell("node-1", 8).pid(0));
        assert_ne!(first.pid(0), cell("node-2", 7).pid(0));
    }

    #[test]
    fn panic_message_reads_str_and_string_payloads() {
        let from_str: Box<dyn Any + Send> = Box::new("boom");
        assert_eq!(panic_message(&from_str), "boom");
        let from_string: Box<dyn Any + Send> = Box::new(String::from("bang 42"));
        assert_eq!(panic_message(&from_string), "bang 42");
        let other: Box<dyn Any + Send> = Box::new(42_u32);
        assert_eq!(panic_message(&other), "panic with a non-string payload");
    }

    #[test]
    fn into_payload_returns_the_payload_of_a_delivery_only() {
        let c = cell("node-1", 0);
        let payload = Envelope::deliver(c.clone(), Payload::cast(json!({"action": "reset"})))
            .into_payload()
            .expect("a delivery carries its payload");
        assert_eq!(payload.body, json!({"action": "reset"}));
        assert_eq!(payload.delivery, Delivery::Cast);

        assert!(Envelope::stop(c.clone(), None).into_payload().is_none());
        let rearm = Envelope {
            cell: c,
            kind: EnvelopeKind::Rearm(1),
        };
        assert!(rearm.into_payload().is_none());
    }
}
