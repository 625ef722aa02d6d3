//! The `Mesh` handle: the Rust API of one node.

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::dev::SendError;
use actix::prelude::*;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use mesh_core::{
    Capability, Handoff, HopError, LeaseConfig, Member, MemberStatus, MeshError, Module, NodeId,
    Refusal, RenewReply, RenewRequest, Reply, Request, RoutingTable, ShardCount, ShardId,
};
use parking_lot::RwLock;
use tokio::time::error::Elapsed;

use crate::activation::{
    ActivationCell, Activator, Delivered, Envelope, Host, Identity, Start, TypedActivator,
    Undelivered,
};
use crate::actor::{Delivery, MeshActor, Payload};
use crate::builder::MeshBuilder;
use crate::gate::Gate;
use crate::metrics::{ModuleStats, RequestMetrics, RequestStats};
use crate::provider::{FrontEnd, Hops, MembershipFeed};
use crate::registry::{ActivationRegistry, Entry, RefusedHandoff, RegistryStats};
use crate::router::{
    AwaitCluster, Drain, Leave, RegisterCapabilities, Renew, RouterHealth, RouterLinks,
    RoutingSnapshot, ShardRouter, UpdateMembers,
};
use crate::store::{StateStore, StoredState};
use crate::transport::RemoteTransport;

/// The default bound of each activation's mailbox.
pub const DEFAULT_MAILBOX_CAPACITY: usize = 1024;

/// How many times one request is delivered again locally after landing on an activation that
/// was just deactivated, before it is refused as churn.
const MAX_LOCAL_ATTEMPTS: usize = 8;

/// The first pause before a refused request is routed again; it doubles up to
/// [`MAX_REROUTE_BACKOFF`] while membership and leases settle.
const REROUTE_BACKOFF: Duration = Duration::from_millis(20);
const MAX_REROUTE_BACKOFF: Duration = Duration::from_millis(200);

/// The least time before the deadline worth another try.
const MIN_HOP_ROOM: Duration = Duration::from_millis(50);

/// How long a hop to an owner that was just fenced may still finish: a hop that was refused
/// or never connected says so and can go to the new owner; one that is still waiting then may
/// have been delivered.
const FENCED_HOP_GRACE: Duration = Duration::from_millis(100);

/// How long the old owner waits for the new owner to accept one handoff before it gives up
/// (logged; the identity then starts afresh there).
const HANDOFF_TIMEOUT: Duration = Duration::from_secs(2);

/// Which thread a new activation runs on.
///
/// A local call is a message to the activation's actor: when the actor lives on the caller's
/// thread, the call is a queue push and a poll on that thread; when it lives on another, every
/// call wakes that thread and, for the reply, the caller's (an eventfd write, an epoll wake-up
/// and a context switch each way, most of a local call's cost and nearly all of its latency on
/// an idle machine).
///
/// ```
/// use mesh_actix::{Mesh, NodeId, Placement};
///
/// // A node whose actors block or compute for long: keep them off the HTTP workers.
/// let builder = Mesh::builder(NodeId::new("node-1").unwrap(), "127.0.0.1:4000")
///     .placement(Placement::Pool);
/// assert_eq!(builder.config().placement, Placement::Pool);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// Start an activation on the actix arbiter of the thread whose call activates it (an
    /// actix-web worker, an actor's arbiter, the `System` thread), so that later calls from
    /// that thread stay on it; a caller outside actix (a plain thread, another runtime) gets
    /// the pool. The default: it made the Rust API's calls 2.5-5× faster and a lone HTTP
    /// call's latency 1.4-3× lower (BENCHMARKS.md, "Thread-affine activations").
    ///
    /// The trade-offs: an activation shares its thread with whatever else runs there, so a
    /// handler that blocks or computes for long delays that thread's other work (an HTTP
    /// worker's other requests, its other activations); activations spread over threads
    /// only as their first calls do (all on one worker if one worker took every first call);
    /// calls from other threads still cross (with several HTTP workers, an id called through
    /// connections of several workers is local to one of them). Activations are not moved
    /// afterwards. Use [`Placement::Pool`] for actors that block or run long.
    ///
    /// Placement changes nothing about lifecycle: an activation on a thread mesh does not own
    /// still stops with its node (the `Mesh` dropped, a lost lease, a moved shard, a drain), a
    /// crash restarts it on the same thread, and if that thread's arbiter stops first (an
    /// HTTP server shut down) its activations end with it and the next call starts the
    /// identity afresh.
    #[default]
    CallerThread,
    /// Start every activation on [`MeshConfig::arbiters`]' pool, round-robin: every local
    /// call crosses threads, and the node's HTTP workers never run a handler.
    Pool,
}

/// How to start a node's [`Mesh`]: settings with defaults from [`MeshConfig::new`], set
/// field by field or through [`MeshBuilder`]'s methods.
///
/// ```
/// use std::time::Duration;
/// use mesh_actix::{MeshBuilder, MeshConfig, NodeId, ShardCount};
///
/// let mut config = MeshConfig::new(NodeId::new("node-1").unwrap(), "10.0.0.1:4000");
/// assert_eq!(config.shards, ShardCount::default());
/// config.idle_timeout = Some(Duration::from_secs(60));
/// config.joining = true; // it will be given seeds
/// let builder = MeshBuilder::from(config); // then .register::<A>() ... .start()
/// assert!(builder.config().joining);
/// ```
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// This node's id, unique in the cluster.
    pub node_id: NodeId,
    /// Where this node serves HTTP (`host:port`), as other nodes should dial it.
    pub addr: String,
    /// The shard count; every node of a cluster must use the same.
    pub shards: ShardCount,
    /// How many arbiters (threads) host activations that are not placed on their caller's
    /// thread (see [`Placement`]); defaults to the number of cores.
    pub arbiters: NonZeroUsize,
    /// Which thread a new activation runs on; [`Placement::CallerThread`] by default.
    pub placement: Placement,
    /// The bound of each activation's mailbox. A call waits (within its timeout) for room in a
    /// full mailbox; a cast to a full mailbox fails at once with `owner_unavailable`.
    pub mailbox_capacity: usize,
    /// The lease timings (see [`mesh_core::Fencing`]); every node of a cluster should use the
    /// same. The default 1 s lease moves a dead node's shards within about 1.4 s.
    pub lease: LeaseConfig,
    /// This node joins an existing cluster (it was given seeds): it owns nothing until it has
    /// heard from another member. Without it, a lone node serves at once.
    pub joining: bool,
    /// This life of the node, unique among its restarts: defaults to the start time in
    /// nanoseconds since the Unix epoch.
    pub incarnation: u64,
    /// Where durable actor types (`#[mesh(durable)]`) keep their state; none by default,
    /// and a durable type then fails to activate (`init_failed`) rather than pretend.
    /// `mesh-node` uses an [`EmbeddedStore`](crate::store::EmbeddedStore) in its data
    /// directory, or the shared store of `--store`.
    pub store: Option<Arc<dyn StateStore>>,
    /// How long a durable activation may stay idle before it is passivated (stopped; its
    /// state is in the store already), for types that do not set their own
    /// (`#[mesh(idle_timeout_secs = n)]`); `None`: never. [`DEFAULT_IDLE_TIMEOUT`] by
    /// default. Types that keep no store are passivated only if they set their own. Timeouts
    /// beyond about 12 days (2^30 ms) count as 12 days.
    pub idle_timeout: Option<Duration>,
}

/// The default idle timeout of durable activations (`mesh-node --idle-timeout`).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Bounds of the idle sweeper's period: a tenth of the shortest idle timeout in use, so that
/// an activation is passivated at most about 20 % after its timeout (never before), and a
/// sweep of a large registry runs at most a few times a second.
const MIN_IDLE_SWEEP: Duration = Duration::from_millis(50);
const MAX_IDLE_SWEEP: Duration = Duration::from_secs(5);

impl MeshConfig {
    /// A config with default shards, one arbiter per core and default mailboxes.
    pub fn new(node_id: NodeId, addr: impl Into<String>) -> MeshConfig {
        MeshConfig {
            node_id,
            addr: addr.into(),
            shards: ShardCount::default(),
            arbiters: std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN),
            placement: Placement::default(),
            mailbox_capacity: DEFAULT_MAILBOX_CAPACITY,
            lease: LeaseConfig::default(),
            joining: false,
            incarnation: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64),
            store: None,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
        }
    }
}

/// Why a [`Mesh`] could not start.
///
/// ```
/// use mesh_actix::{Mesh, NodeId, StartError};
///
/// // Outside an actix System (no #[actix_web::main], no System::new().block_on):
/// let started = Mesh::builder(NodeId::new("node-1").unwrap(), "127.0.0.1:4000").start();
/// assert!(matches!(started, Err(StartError::NoSystem)));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Arbiters and actors need a running actix `System` (e.g. `#[actix_web::main]`).
    #[error("Mesh::start must be called inside a running actix System")]
    NoSystem,
    /// A capability given to [`MeshBuilder::capabilities`] is invalid, or the set is over
    /// its bounds (a `bad_request`).
    #[error("invalid capabilities: {0}")]
    Capabilities(MeshError),
}

/// The handle to this node's mesh: register actor types and capabilities, call and cast.
///
/// Cheap to clone; all clones share one node. Dropping the last clone stops every activation
/// of the node (those on its own arbiters and those placed on callers' threads) and its
/// arbiters.
///
/// ```
/// use mesh_actix::{Mesh, MeshConfig, NodeId, Request};
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
///
/// # actix_rt::System::new().block_on(async {
/// let mesh = Mesh::start(MeshConfig::new(NodeId::new("node-1").unwrap(), "127.0.0.1:4000")).unwrap();
/// mesh.register::<Counter>();
/// mesh.register_capabilities(["counter"]).await.unwrap();
///
/// let request = Request::new("Counter", "counter_1", "counter").unwrap();
/// let first = mesh.call(request.clone()).await.unwrap();
/// let second = mesh.call(request).await.unwrap();
/// assert_eq!(first.result, json!({"ok": 1}));
/// assert_eq!(second.result, json!({"ok": 2}));
/// assert_eq!(first.pid, second.pid);
/// # });
/// ```
#[derive(Clone)]
pub struct Mesh {
    inner: Arc<MeshInner>,
}

/// A [`Mesh`] that does not keep its node alive.
#[derive(Clone)]
pub(crate) struct WeakMesh(std::sync::Weak<MeshInner>);

impl WeakMesh {
    /// A handle that never upgrades.
    #[cfg(test)]
    pub(crate) fn detached() -> WeakMesh {
        WeakMesh(std::sync::Weak::new())
    }

    pub(crate) fn upgrade(&self) -> Option<Mesh> {
        self.0.upgrade().map(|inner| Mesh { inner })
    }
}

struct MeshInner {
    config: MeshConfig,
    routing: RoutingSnapshot,
    /// The epoch of each published snapshot, for those who react to changes (membership).
    routing_updates: tokio::sync::watch::Receiver<u64>,
    router: Addr<ShardRouter>,
    router_health: Arc<RouterHealth>,
    /// The router's own thread: a busy actor must not delay lease renewals.
    router_arbiter: Arbiter,
    registry: Arc<ActivationRegistry>,
    gate: Arc<Gate>,
    host: Arc<Host>,
    modules: RwLock<HashMap<Module, Arc<dyn Activator>>>,
    /// One shared copy of each capability name activations hold (with the registered
    /// [`Module`]s, ~64 B less per activation than the request's own copies).
    capability_names: RwLock<std::collections::HashSet<Capability>>,
    arbiters: Vec<Arbiter>,
    next_arbiter: AtomicUsize,
    next_serial: AtomicU64,
    metrics: RequestMetrics,
    /// How this node reaches the others (none: a node alone), fixed at start.
    transport: Option<Arc<dyn RemoteTransport>>,
}

impl Drop for MeshInner {
    fn drop(&mut self) {
        self.router_health.shut_down();
        // Activations on threads this node does not own (see `Placement::CallerThread`) do
        // not end with its arbiters: tell each to stop.
        self.registry.stop_unwanted(|_| false, |_| None);
        self.router_arbiter.stop();
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }
}

impl Mesh {
    /// A builder of a node with default settings: register its actor types, capabilities
    /// and transport on it, then [`MeshBuilder::start`] it.
    pub fn builder(node_id: NodeId, addr: impl Into<String>) -> MeshBuilder {
        MeshBuilder::from_config(MeshConfig::new(node_id, addr))
    }

    /// Starts a node with these settings and nothing registered yet:
    /// `MeshBuilder::from_config(config).start()`. Must run inside an actix `System`.
    pub fn start(config: MeshConfig) -> Result<Mesh, StartError> {
        MeshBuilder::from_config(config).start()
    }

    /// Starts this node's mesh: its arbiter pool and its `ShardRouter`, this node
    /// described with `capabilities` from the start, reaching others through `transport`.
    pub(crate) fn launch(
        config: MeshConfig,
        capabilities: &[String],
        transport: Option<Arc<dyn RemoteTransport>>,
    ) -> Result<Mesh, StartError> {
        if System::try_current().is_none() {
            return Err(StartError::NoSystem);
        }
        let local = Member::alive(config.node_id.clone(), config.addr.clone(), capabilities)
            .and_then(|local| mesh_core::check_capabilities(&local.capabilities).map(|()| local))
            .map_err(StartError::Capabilities)?
            .with_incarnation(config.incarnation);
        let arbiters: Vec<Arbiter> = (0..config.arbiters.get()).map(|_| Arbiter::new()).collect();
        let router_arbiter = Arbiter::new();
        let registry = Arc::new(ActivationRegistry::new());
        let gate = Arc::new(Gate::new());
        let routing = ShardRouter::initial(&local, config.shards);
        let (updates, routing_updates) = tokio::sync::watch::channel(routing.load().epoch());
        let (shards, lease, joining) = (config.shards, config.lease, config.joining);
        let router_health = Arc::new(RouterHealth::default());
        let inner = Arc::new_cyclic(|weak| {
            let links = RouterLinks {
                snapshot: routing.clone(),
                updates,
                registry: registry.clone(),
                gate: gate.clone(),
                transport: transport.clone(),
                mesh: WeakMesh(weak.clone()),
                health: router_health.clone(),
            };
            let router = ShardRouter::start_in_arbiter(&router_arbiter.handle(), move |_| {
                ShardRouter::new(local, shards, lease, joining, links)
            });
            MeshInner {
                host: Arc::new(Host {
                    node: config.node_id.clone(),
                    registry: Arc::downgrade(&registry),
                    gate: gate.clone(),
                    mesh: WeakMesh(weak.clone()),
                    store: config.store.clone(),
                    clock_ms: std::sync::atomic::AtomicU32::new(0),
                }),
                config,
                routing,
                routing_updates,
                router,
                router_health,
                router_arbiter,
                registry,
                gate,
                modules: RwLock::default(),
                capability_names: RwLock::default(),
                arbiters,
                next_arbiter: AtomicUsize::new(0),
                next_serial: AtomicU64::new(0),
                metrics: RequestMetrics::default(),
                transport,
            }
        });
        inner
            .router_arbiter
            .spawn(sweep_idle(WeakMesh(Arc::downgrade(&inner))));
        Ok(Mesh { inner })
    }

    /// How often the idle sweeper runs: see [`MIN_IDLE_SWEEP`].
    fn idle_sweep_period(&self) -> Duration {
        let default = self.inner.config.idle_timeout;
        let shortest = self
            .inner
            .modules
            .read()
            .values()
            .filter_map(|activator| idle_timeout_of(activator.as_ref(), default))
            .min();
        shortest.map_or(MAX_IDLE_SWEEP, |t| {
            (t / 10).clamp(MIN_IDLE_SWEEP, MAX_IDLE_SWEEP)
        })
    }

    /// Registers actor type `A` under its module name ([`MeshActor::MODULE`]). Registering a
    /// type again replaces the earlier registration for new activations.
    pub fn register<A: MeshActor>(&self) -> &Mesh {
        let module = Module::new(A::MODULE).expect("the derive rejects empty module names");
        if A::DURABLE && self.inner.config.store.is_none() {
            tracing::error!(node = %self.node_id(), %module,
                "a durable actor type was registered on a node without a state store \
                 (MeshConfig::store); its activations will fail with init_failed");
        }
        self.inner
            .modules
            .write()
            .insert(module, Arc::new(TypedActivator::<A>::new()));
        self
    }

    /// The module names registered on this node, sorted.
    pub fn modules(&self) -> Vec<Module> {
        let mut modules: Vec<Module> = self.inner.modules.read().keys().cloned().collect();
        modules.sort();
        modules
    }

    /// Declares that this node can own actors of these capabilities. Returns all of this
    /// node's capabilities. Once it returns, routing on this node sees them; other nodes learn
    /// them through the membership layer. A node declares at most
    /// [`MAX_CAPABILITIES`](mesh_core::MAX_CAPABILITIES) capabilities, in at most
    /// [`MAX_CAPABILITIES_BYTES`](mesh_core::MAX_CAPABILITIES_BYTES) of gossip: a set beyond
    /// either is refused as a `bad_request` and changes nothing.
    pub async fn register_capabilities<C: AsRef<str>>(
        &self,
        capabilities: impl IntoIterator<Item = C>,
    ) -> Result<BTreeSet<Capability>, MeshError> {
        let capabilities = capabilities
            .into_iter()
            .map(Capability::new)
            .collect::<Result<BTreeSet<_>, _>>()?;
        if capabilities.len() > mesh_core::MAX_CAPABILITIES {
            // Refused before it costs the router anything.
            mesh_core::check_capabilities(&capabilities)?;
        }
        let capabilities = capabilities.into_iter().collect();
        self.inner
            .router
            .send(RegisterCapabilities(capabilities))
            .await
            .map_err(|_| MeshError::OwnerUnavailable("the shard router has stopped".into()))?
    }

    /// Resolves if this node's `ShardRouter` (the actor that renews its lease and publishes
    /// its routing) dies, which only a bug can cause, with the reason. The node has then
    /// stopped serving for good: every request is refused and [`Mesh::readiness`] says why.
    /// A service should exit and be restarted (as `mesh-node` does, with status 70); it
    /// rejoins as a new incarnation.
    pub async fn router_failure(&self) -> String {
        self.inner.router_health.failed().await
    }

    /// Whether this node serves requests now: it has learned its cluster, every member
    /// acknowledged it, it holds a valid lease and it is not draining. `Err` says why not.
    pub fn readiness(&self) -> Result<(), String> {
        if let Some(reason) = self.inner.router_health.failure() {
            return Err(reason);
        }
        if !self.inner.router.connected() {
            return Err("the shard router of this node has stopped".into());
        }
        self.inner
            .gate
            .refusal()
            .map_or(Ok(()), |(_, reason)| Err(reason))
    }

    /// The first half of a graceful leave: stops serving (requests for this node's shards are
    /// refused as not delivered, so their senders route them again), stops every activation
    /// and waits for them to end (at most `timeout`), then announces the leave, so that the
    /// other members take this node's shards only once nothing of them runs here.
    pub async fn drain(&self, timeout: Duration) {
        let _ = self.inner.router.send(Drain).await;
        let deadline = Instant::now() + timeout;
        let registry = &self.inner.registry;
        while (registry.stats().live > 0 || !registry.is_settled()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if registry.stats().live > 0 || !registry.is_settled() {
            tracing::warn!(node = %self.node_id(), live = registry.stats().live,
                "drain timed out with activations still stopping; leaving anyway");
        }
        let _ = self.inner.router.send(Leave).await;
    }

    /// Calls the actor `(request.module, request.id)` wherever it lives, activating it on
    /// its owner first if needed, and waits for its reply within the request's timeout.
    pub async fn call(&self, request: Request) -> Result<Reply, MeshError> {
        let reply = self.timed(request, Origin::Client, Delivery::Call).await;
        reply
            .map(|r| r.expect("a call always ends with a reply"))
            .map_err(HopError::into_error)
    }

    /// Delivers `request.payload` to the actor like [`Mesh::call`] but discards the reply:
    /// returns as soon as the owner has accepted the request.
    ///
    /// A cast that meets a full mailbox fails with `owner_unavailable` rather than queueing
    /// without bound. Like a cast to a dying GenServer, a cast that races with the actor's
    /// deactivation may be dropped.
    pub async fn cast(&self, request: Request) -> Result<(), MeshError> {
        let result = self.timed(request, Origin::Client, Delivery::Cast).await;
        result.map(drop).map_err(HopError::into_error)
    }

    async fn accept_durable_handoff(
        &self,
        store: &dyn StateStore,
        shard: ShardId,
        handoff: Handoff,
    ) -> Result<(), HopError> {
        let registry = &self.inner.registry;
        if store.is_shared() {
            registry.record_handoff_received();
            return Ok(());
        }
        let Some(state) = handoff.state else {
            // The old owner could not serialise it: nothing to take; the identity starts
            // from what this node's store holds.
            registry.record_handoff_received();
            return Ok(());
        };
        let (capability, module) = (handoff.capability.as_str(), handoff.module.as_str());
        if registry.is_live(shard, capability, module, handoff.id.as_str()) {
            return Err(HopError::Failed(MeshError::OwnerUnavailable(format!(
                "{}/{} is already active on this node; its state is the newer one",
                handoff.module, handoff.id
            ))));
        }
        let key = crate::store::StateKey {
            capability: handoff.capability,
            module: handoff.module,
            id: handoff.id,
        };
        let bytes = serde_json::to_vec(&state).expect("a JSON value serialises");
        match store.overwrite(&key, bytes).await {
            Ok(version) => {
                tracing::debug!(node = %self.node_id(), %key, version, from = %handoff.from,
                    "handed-over state stored");
                registry.record_handoff_received();
                Ok(())
            }
            Err(error) => Err(HopError::Failed(MeshError::OwnerUnavailable(format!(
                "the handed-over state of {key} could not be stored here: {error}"
            )))),
        }
    }

    /// The activator registered for `module`.
    fn activator(&self, module: &Module) -> Option<Arc<dyn Activator>> {
        self.inner.modules.read().get(module.as_str()).cloned()
    }

    /// The registered name of `module` and its activator.
    fn registered(&self, module: &Module) -> Option<(Module, Arc<dyn Activator>)> {
        let modules = self.inner.modules.read();
        let (name, activator) = modules.get_key_value(module.as_str())?;
        Some((name.clone(), activator.clone()))
    }

    /// The shared copy of `capability`'s name (a node activates only capabilities it
    /// registered, so the set stays as small as those).
    fn capability_name(&self, capability: &Capability) -> Capability {
        if let Some(name) = self.inner.capability_names.read().get(capability) {
            return name.clone();
        }
        let mut names = self.inner.capability_names.write();
        if let Some(name) = names.get(capability) {
            return name.clone();
        }
        names.insert(capability.clone());
        capability.clone()
    }

    /// Sends `handoff` to `to`, the identity's new owner, in the background. Until it is
    /// answered this node counts as unsettled, so it acknowledges no change that would let the
    /// new owner serve the identity without it.
    pub(crate) fn hand_off(&self, to: Arc<Member>, handoff: Handoff) {
        let registry = self.inner.registry.clone();
        registry.record_handoff_sending();
        let mesh = self.clone();
        actix_rt::spawn(async move {
            let key = crate::store::StateKey {
                capability: handoff.capability.clone(),
                module: handoff.module.clone(),
                id: handoff.id.clone(),
            };
            let (module, id) = (&key.module, &key.id);
            let result = if to.node == *mesh.node_id() {
                mesh.accept_handoff(handoff).await
            } else if let Some(transport) = &mesh.inner.transport {
                transport.handoff(&to, handoff, HANDOFF_TIMEOUT).await
            } else {
                Err(HopError::Failed(MeshError::OwnerUnavailable(
                    "this node has no transport".into(),
                )))
            };
            match &result {
                Ok(()) => tracing::debug!(node = %mesh.node_id(), %module, %id, to = %to.node,
                    "handed over"),
                Err(error) => tracing::warn!(node = %mesh.node_id(), %module, %id, to = %to.node,
                    error = %error.clone().into_error(),
                    "handoff failed; the identity starts afresh on its new owner"),
            }
            if result.is_ok() && to.node != *mesh.node_id() {
                mesh.forget_handed_over(&key).await;
            }
            registry.record_handoff_done(result.is_ok());
        });
    }

    /// Drops a handed-over durable state from a node-local store: the new owner holds it now,
    /// and a copy left here would be stale if the identity ever came back without a handoff
    /// (after the new owner's death). A failed handoff keeps it.
    async fn forget_handed_over(&self, key: &crate::store::StateKey) {
        let Some(store) = &self.inner.config.store else {
            return;
        };
        let durable = self.activator(&key.module).is_some_and(|a| a.is_durable());
        if durable && !store.is_shared() {
            if let Err(error) = store.remove(key).await {
                tracing::warn!(node = %self.node_id(), %key, %error,
                    "a handed-over state could not be removed from this node's store");
            }
        }
    }

    async fn timed(
        &self,
        request: Request,
        origin: Origin,
        delivery: Delivery,
    ) -> Result<Option<Reply>, HopError> {
        let started = Instant::now();
        let result = self.route(request, origin, delivery).await;
        let outcome = match &result {
            Ok(_) => Ok(()),
            Err(e) => Err(e.clone().into_error()),
        };
        self.inner
            .metrics
            .record(delivery, outcome.as_ref().map(|_| ()), started.elapsed());
        result
    }

    /// The shard of an actor id.
    pub fn shard_for(&self, id: &str) -> ShardId {
        self.inner.config.shards.shard_for(id)
    }

    /// The node that owns `shard` for `capability` under this node's current view
    /// (`no_capable_node` if no live node registered it). Arguments `(shard, capability)`,
    /// as in the contract and [`RoutingTable::owner`].
    pub fn owner(&self, shard: ShardId, capability: &str) -> Result<NodeId, MeshError> {
        self.inner
            .routing
            .load()
            .owner(shard, capability)
            .map(|member| member.node.clone())
            .ok_or_else(|| MeshError::no_capable_node(capability))
    }

    /// [`Mesh::owner`] once this node serves: a node that has not learned its cluster yet
    /// owns nothing and knows no owner (rule 10), nor does one that cannot confirm its view
    /// (no lease), so this waits for that as a call would, at most `timeout`, then answers
    /// `owner_unavailable` saying why. What `GET /owner` answers.
    pub async fn serving_owner(
        &self,
        shard: ShardId,
        capability: &str,
        timeout: Duration,
    ) -> Result<NodeId, MeshError> {
        let deadline = tokio::time::Instant::now() + timeout;
        if let Some(Refusal::NotReady | Refusal::NoLease) = self.inner.gate.refusal().map(|r| r.0) {
            self.wait_for_gate(deadline, Origin::Client)
                .await
                .map_err(HopError::into_error)?;
        }
        self.owner(shard, capability)
    }

    pub(crate) fn downgrade(&self) -> WeakMesh {
        WeakMesh(Arc::downgrade(&self.inner))
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.inner.config.node_id
    }

    /// This node's config.
    pub fn config(&self) -> &MeshConfig {
        &self.inner.config
    }

    /// The current routing snapshot (members and owners), as callers see it.
    pub fn routing(&self) -> Arc<RoutingTable> {
        self.inner.routing.load_full()
    }

    /// This node's registered capabilities.
    pub fn capabilities(&self) -> BTreeSet<Capability> {
        self.local_member().capabilities
    }

    /// Live activations on this node (read from the activation registry).
    pub fn activations(&self) -> usize {
        self.inner.registry.stats().live
    }

    /// Activation counters of this node.
    pub fn activation_stats(&self) -> RegistryStats {
        self.inner.registry.stats()
    }

    /// Request counters and the call-latency histogram of this node.
    pub fn request_stats(&self) -> RequestStats {
        self.inner.metrics.snapshot()
    }

    /// Per `(capability, module)` counters of the activations started on this node and of
    /// the calls delivered to them, sorted by capability, then module.
    pub fn module_stats(&self) -> Vec<ModuleStats> {
        self.inner.registry.modules().snapshot()
    }

    /// Routes a call (its reply comes back) or a cast (`Ok(None)` once accepted), sending it
    /// again while it was certainly not delivered and the deadline allows.
    async fn route(
        &self,
        mut request: Request,
        origin: Origin,
        delivery: Delivery,
    ) -> Result<Option<Reply>, HopError> {
        let timeout = request.effective_timeout();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut backoff = REROUTE_BACKOFF;
        let mut local_attempts = 0;
        loop {
            let outcome = self
                .attempt(&mut request, origin, delivery, deadline, timeout)
                .await;
            match outcome {
                Attempt::Done(result) => return result,
                Attempt::Again if local_attempts < MAX_LOCAL_ATTEMPTS => local_attempts += 1,
                Attempt::Again => {
                    return Err(HopError::refused(Refusal::NotReady, churn(&request)))
                }
                Attempt::Refused(refusal, error) => {
                    // A forwarded request goes back to its sender, which routes it again.
                    // Another try needs time for its hop too: one that could not finish
                    // before the deadline would turn a refusal into a timeout.
                    let resume = tokio::time::Instant::now() + backoff;
                    let room = backoff.max(MIN_HOP_ROOM);
                    if origin == Origin::Forwarded
                        || !refusal.is_transient()
                        || resume + room > deadline
                    {
                        return Err(HopError::NotDelivered(refusal, error));
                    }
                    tracing::debug!(node = %self.node_id(), module = %request.module,
                        id = %request.id, refusal = refusal.as_str(), "routing again");
                    tokio::time::sleep_until(resume).await;
                    backoff = (backoff * 2).min(MAX_REROUTE_BACKOFF);
                }
            }
        }
    }

    /// One try at delivering a request under the current routing snapshot.
    async fn attempt(
        &self,
        request: &mut Request,
        origin: Origin,
        delivery: Delivery,
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> Attempt {
        // Read the snapshot without taking a reference on it; only a remote owner is copied
        // out, to be awaited on.
        let (shard, remote) = {
            let table = self.inner.routing.load();
            let shard = table.shards().shard_for(request.id.as_str());
            let Some(owner) = table.owner(shard, request.capability.as_str()) else {
                let error = MeshError::no_capable_node(request.capability.as_str());
                return Attempt::Done(Err(HopError::Failed(error)));
            };
            let remote = (owner.node != self.inner.config.node_id).then(|| owner.clone());
            (shard, remote)
        };
        let local = remote.is_none();
        if let (Some(owner), Origin::Forwarded) = (&remote, origin) {
            return Attempt::Refused(
                Refusal::NotOwner,
                MeshError::OwnerUnavailable(format!(
                    "this node does not own the actor under its current view (owner: {}); a \
                     request is never forwarded twice",
                    owner.node
                )),
            );
        }
        // A joining node waits until it serves; one that lost its lease refuses its own ids
        // and forwards alike (its view may be stale, and in a partition its hops would hang);
        // a draining node still forwards.
        match self.inner.gate.refusal() {
            None => {}
            Some((Refusal::Draining, _)) if !local => {}
            Some(_) => {
                return match self.wait_for_gate(deadline, origin).await {
                    Ok(()) => Attempt::Again,
                    Err(refused) => Attempt::Done(Err(refused)),
                }
            }
        }
        if let Some(owner) = &remote {
            return self
                .forward(owner, request, delivery, deadline, timeout)
                .await;
        }
        let body = std::mem::take(&mut request.payload);
        let delivered = match delivery {
            Delivery::Call => {
                let payload = Payload::call(body).until(deadline.into_std());
                let delivered = self.call_local(request, shard, payload, timeout).await;
                delivered.map(|r| r.map(Some))
            }
            Delivery::Cast => {
                let payload = Payload::cast(body).until(deadline.into_std());
                self.cast_local(request, shard, payload, deadline, timeout)
                    .await
                    .map(|r| r.map(|()| None))
            }
        };
        match delivered {
            Ok(Ok(reply)) => Attempt::Done(Ok(reply)),
            Ok(Err(payload)) => {
                request.payload = payload.body;
                Attempt::Again
            }
            Err(HopError::NotDelivered(refusal, error)) => Attempt::Refused(refusal, error),
            Err(error) => Attempt::Done(Err(error)),
        }
    }

    /// Waits for this node to serve again: while it joins, until the deadline (rule 10); after
    /// it lost its lease, for one renewal round at most (a node that cannot confirm its
    /// ownership refuses rather than make its callers wait for a partition to heal); while it
    /// drains, not at all (the sender routes the request again, to the next owner). A
    /// forwarded request gives up a little before its deadline, so that the refusal reaches
    /// its sender in time to be a refusal rather than a timeout.
    async fn wait_for_gate(
        &self,
        deadline: tokio::time::Instant,
        origin: Origin,
    ) -> Result<(), HopError> {
        let gate = &self.inner.gate;
        let mut changes = gate.subscribe();
        let started = tokio::time::Instant::now();
        let deadline = match origin {
            Origin::Client => deadline,
            Origin::Forwarded => {
                let margin = deadline.saturating_duration_since(started) / 10;
                deadline - margin.min(Duration::from_millis(50))
            }
        };
        loop {
            let Some((refusal, reason)) = gate.refusal() else {
                return Ok(());
            };
            let budget = match refusal {
                Refusal::NoLease => deadline.min(started + self.inner.config.lease.renew_interval),
                Refusal::Draining => started,
                _ => deadline,
            };
            if tokio::time::Instant::now() >= budget {
                let reason = if self.inner.router.connected() {
                    reason
                } else {
                    "the shard router of this node has stopped".into()
                };
                return Err(HopError::refused(refusal, reason));
            }
            // The gate also closes by itself when a lease runs out, without a change to
            // watch: poll as well.
            let poll = tokio::time::Instant::now() + Duration::from_millis(10);
            tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep_until(poll.min(budget)) => {}
            }
        }
    }

    /// Forwards a request once to its owner. An owner that is fenced or replaced while the
    /// request is in flight ends the wait at once: the request may have run there, so it is
    /// not sent again.
    async fn forward(
        &self,
        owner: &Member,
        request: &Request,
        delivery: Delivery,
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> Attempt {
        let Some(transport) = &self.inner.transport else {
            return Attempt::Done(Err(HopError::Failed(MeshError::OwnerUnavailable(format!(
                "node {} owns the actor and this node has no transport to reach it",
                owner.node
            )))));
        };
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let forward: BoxFuture<'static, Result<Option<Reply>, HopError>> = match delivery {
            Delivery::Call => {
                let call = transport.call(owner, request.clone(), remaining);
                async move { call.await.map(Some) }.boxed()
            }
            Delivery::Cast => {
                let cast = transport.cast(owner, request.clone(), remaining);
                async move { cast.await.map(|()| None) }.boxed()
            }
        };
        let started = Instant::now();
        let mut forward = std::pin::pin!(tokio::time::timeout_at(deadline, forward));
        let timed_out = |_| Err(HopError::Failed(MeshError::timeout(timeout)));
        let result = tokio::select! {
            result = &mut forward => result.unwrap_or_else(timed_out),
            () = self.gone(owner) => {
                match tokio::time::timeout(FENCED_HOP_GRACE, &mut forward).await {
                    Ok(result) => result.unwrap_or_else(timed_out),
                    Err(_) => Err(HopError::MaybeDelivered(format!(
                        "node {} was declared dead while the request was in flight; it may \
                         have run before the node stopped",
                        owner.node
                    ))),
                }
            }
        };
        let outcome = result.as_ref().map(drop);
        self.inner.metrics.record_hop(outcome, started.elapsed());
        match result {
            Err(HopError::NotDelivered(refusal, error)) => Attempt::Refused(refusal, error),
            result => Attempt::Done(result),
        }
    }

    /// Resolves once `owner` (this incarnation of it) is fenced or was replaced.
    async fn gone(&self, owner: &Member) {
        let mut updates = self.routing_updates();
        loop {
            let table = self.inner.routing.load();
            let current = table.members().iter().find(|m| m.node == owner.node);
            // A member that leaves gracefully answers what it accepted (or refuses it as
            // draining): only a fencing or a new incarnation ends the wait.
            let gone = current.is_none_or(|m| {
                (m.status == MemberStatus::Dead && !m.leaving) || m.incarnation != owner.incarnation
            });
            if gone || updates.changed().await.is_err() {
                return;
            }
        }
    }

    /// Delivers a call to the local activation. `Ok(Err(payload))`: the activation was
    /// deactivated before it got to the payload; route it again.
    async fn call_local(
        &self,
        request: &Request,
        shard: ShardId,
        payload: Payload,
        timeout: Duration,
    ) -> Result<Result<Reply, Payload>, HopError> {
        let started = Instant::now();
        let deadline = payload.deadline.map(tokio::time::Instant::from_std);
        let deadline = deadline.unwrap_or_else(|| tokio::time::Instant::now() + timeout);
        let mut payload = Some(payload);
        let sent = self
            .with_activation(request, shard, deadline, timeout, |entry| {
                let payload = payload.take().expect("sent once");
                if !entry.recipient.connected() {
                    return Err((entry.cell.clone(), payload));
                }
                let envelope = Envelope::deliver(entry.cell.clone(), payload);
                Ok((entry.cell.clone(), entry.recipient.send(envelope)))
            })
            .await?;
        let (cell, pending) = match sent {
            Ok(sent) => sent,
            // Its actor is gone without having deactivated itself: the arbiter it ran on
            // stopped (an HTTP worker that shut down, with `Placement::CallerThread`).
            // Nothing was sent; the next attempt activates the identity afresh.
            Err((cell, payload)) => {
                cell.mark_stopped();
                return Ok(Err(payload));
            }
        };
        let delivered = self
            .reply_of(request, &cell, pending, deadline, timeout)
            .await;
        // Counted under the activation's `(capability, module)`; a call that found its
        // activation retired is routed again, and counted then.
        let counted = match &delivered {
            Ok(Ok(_)) => Some(Ok(())),
            Ok(Err(_)) | Err(HopError::NotDelivered(..)) => None,
            Err(error) => Some(Err(error.clone().into_error())),
        };
        if let Some(result) = counted {
            cell.counters
                .record_call(result.as_ref().map(|_| ()), started.elapsed());
        }
        delivered
    }

    /// The outcome of a call sent to `cell`'s activation, once `pending` resolves.
    async fn reply_of(
        &self,
        request: &Request,
        cell: &ActivationCell,
        pending: actix::dev::RecipientRequest<Envelope>,
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<Result<Reply, Payload>, HopError> {
        let handled = match reply_by(deadline, pending).await {
            Err(_) | Ok(Err(MailboxError::Timeout)) => {
                return Err(HopError::Failed(MeshError::timeout(timeout)))
            }
            Ok(Err(MailboxError::Closed)) => {
                return Err(HopError::MaybeDelivered(format!(
                    "activation {}/{} stopped before replying; the request may have run",
                    request.module, request.id
                )))
            }
            Ok(Ok(handled)) => handled,
        };
        match handled {
            Ok(Delivered { incarnation, value }) => Ok(Ok(Reply {
                pid: cell.pid(incarnation),
                node: self.inner.config.node_id.clone(),
                result: value,
            })),
            Err(Undelivered::Crashed(reason)) => {
                Err(HopError::Failed(MeshError::actor_crashed(&reason)))
            }
            Err(Undelivered::Retired(Some(payload))) => Ok(Err(payload)),
            Err(Undelivered::Retired(None)) => {
                Err(HopError::refused(Refusal::NotReady, churn(request)))
            }
            Err(Undelivered::Refused(refusal, reason)) => Err(HopError::refused(refusal, reason)),
            Err(Undelivered::Expired) => Err(HopError::Failed(MeshError::timeout(timeout))),
            Err(Undelivered::NotSaved(reason)) => {
                Err(HopError::Failed(MeshError::OwnerUnavailable(format!(
                    "the new state of {}/{} could not be saved ({reason}); the call has no \
                     lasting effect",
                    request.module, request.id
                ))))
            }
        }
    }

    /// Enqueues a cast on the local activation. `Ok(Err(payload))`: its mailbox had closed;
    /// route it again.
    async fn cast_local(
        &self,
        request: &Request,
        shard: ShardId,
        payload: Payload,
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<Result<(), Payload>, HopError> {
        let mut payload = Some(payload);
        let sent = self
            .with_activation(request, shard, deadline, timeout, |entry| {
                let envelope =
                    Envelope::deliver(entry.cell.clone(), payload.take().expect("sent once"));
                let sent = entry.recipient.try_send(envelope);
                if sent.is_ok() {
                    entry.cell.counters.record_cast();
                }
                sent.map_err(|e| (entry.cell.clone(), e))
            })
            .await?;
        match sent {
            Ok(()) => Ok(Ok(())),
            Err((_, SendError::Full(_))) => Err(HopError::refused(
                Refusal::MailboxFull,
                format!(
                    "the mailbox of {}/{} is full ({} messages); retry later",
                    request.module, request.id, self.inner.config.mailbox_capacity
                ),
            )),
            Err((cell, SendError::Closed(envelope))) => {
                // Closed mailboxes belong to actors that have ended (see `call_local`).
                cell.mark_stopped();
                Ok(Err(envelope.into_payload().expect("a delivery envelope")))
            }
        }
    }

    /// Runs `send` on the request's activation, activating it first if this node has none.
    /// A durable type's state is loaded from the store first, outside the registry's lock
    /// (the store may be a network away); a live activation never waits for it.
    async fn with_activation<R>(
        &self,
        request: &Request,
        shard: ShardId,
        deadline: tokio::time::Instant,
        timeout: Duration,
        mut send: impl FnMut(&Entry) -> R,
    ) -> Result<R, HopError> {
        let registry = &self.inner.registry;
        let (capability, module, id) = (&request.capability, &request.module, &request.id);
        let first = registry.with_entry(
            shard,
            capability,
            module,
            id,
            || self.activate(request, shard, None),
            &mut send,
        );
        let error = match first {
            Ok(sent) => return Ok(sent),
            Err(NotActivated::Failed(error)) => error,
            Err(NotActivated::NeedsState(store)) => {
                let key = crate::store::StateKey {
                    capability: capability.clone(),
                    module: module.clone(),
                    id: id.clone(),
                };
                let stored = match tokio::time::timeout_at(deadline, store.load(&key)).await {
                    Ok(Ok(stored)) => stored,
                    Ok(Err(error)) => {
                        return Err(HopError::Failed(MeshError::OwnerUnavailable(format!(
                            "the state of {key} could not be loaded: {error}"
                        ))))
                    }
                    Err(_) => return Err(HopError::Failed(MeshError::timeout(timeout))),
                };
                // Another call may have activated it meanwhile: that activation is used.
                let activate = || self.activate(request, shard, Some(stored));
                match registry.with_entry(shard, capability, module, id, activate, send) {
                    Ok(sent) => return Ok(sent),
                    Err(NotActivated::Failed(error)) => error,
                    Err(NotActivated::NeedsState(_)) => unreachable!("the state was loaded"),
                }
            }
        };
        Err(HopError::Failed(error))
    }

    /// Starts an activation of the request's identity. A durable type needs `stored`, what
    /// the store holds for it, which the caller loads when told [`NotActivated::NeedsState`].
    fn activate(
        &self,
        request: &Request,
        shard: ShardId,
        stored: Option<Option<StoredState>>,
    ) -> Result<Entry, NotActivated> {
        let inner = &self.inner;
        let (module, activator) = self
            .registered(&request.module)
            .ok_or_else(|| MeshError::unknown_module(request.module.as_str()))?;
        let durable = activator.is_durable();
        let (init_arg, start) = if durable {
            let Some(store) = &inner.config.store else {
                return Err(NotActivated::Failed(MeshError::init_failed(&format!(
                    "{} keeps its state in a store and this node has none (MeshConfig::store)",
                    request.module
                ))));
            };
            let Some(stored) = stored else {
                return Err(NotActivated::NeedsState(store.clone()));
            };
            (request.init_arg.clone(), Start::Stored(stored))
        } else {
            // An identity handed over by its old owner continues from there: its state, and
            // the init_arg it was first started with.
            let handoff = inner.registry.take_handoff(
                shard,
                &request.capability,
                &request.module,
                &request.id,
            );
            match handoff {
                Some(handoff) => {
                    tracing::debug!(node = %inner.config.node_id, module = %request.module,
                        id = %request.id, shard = shard.0, from = %handoff.from,
                        state = handoff.state.is_some(), "activating from a handoff");
                    let start = handoff.state.map_or(Start::Init, Start::Handoff);
                    (handoff.init_arg, start)
                }
                None => (request.init_arg.clone(), Start::Init),
            }
        };
        let idle_after = idle_timeout_of(activator.as_ref(), inner.config.idle_timeout);
        let capability = self.capability_name(&request.capability);
        let counters = inner
            .registry
            .modules()
            .counters(capability.as_str(), module.as_str());
        let identity = Identity {
            module,
            id: request.id.clone(),
            capability,
            shard,
            init_arg,
            // Clamped to `MAX_IDLE_MS` by the cell.
            idle_after_ms: idle_after.map_or(0, |t| t.as_millis().clamp(1, u32::MAX.into()) as u32),
            durable,
            counters,
        };
        let serial = inner.next_serial.fetch_add(1, Ordering::Relaxed);
        let cell = Arc::new(ActivationCell::new(identity, serial, inner.host.clone()));
        let arbiter = self.arbiter_for_activation();
        let recipient =
            activator.start(cell.clone(), &arbiter, inner.config.mailbox_capacity, start)?;
        Ok(Entry { cell, recipient })
    }

    /// The arbiter a new activation starts on, following [`MeshConfig::placement`].
    fn arbiter_for_activation(&self) -> ArbiterHandle {
        let inner = &self.inner;
        if inner.config.placement == Placement::CallerThread {
            if let Some(current) = Arbiter::try_current() {
                return current;
            }
        }
        let next = inner.next_arbiter.fetch_add(1, Ordering::Relaxed) % inner.arbiters.len();
        inner.arbiters[next].handle()
    }
}

impl Hops for Mesh {
    async fn forwarded_call(&self, request: Request) -> Result<Reply, HopError> {
        let reply = self.timed(request, Origin::Forwarded, Delivery::Call).await;
        reply.map(|r| r.expect("a call always ends with a reply"))
    }

    async fn forwarded_cast(&self, request: Request) -> Result<(), HopError> {
        let result = self.timed(request, Origin::Forwarded, Delivery::Cast).await;
        result.map(drop)
    }

    async fn renew_lease(&self, request: RenewRequest) -> RenewReply {
        match self.inner.router.send(Renew(request)).await {
            Ok(reply) => reply,
            Err(_) => RenewReply {
                from: self.local_member(),
                round: 0,
                granted: false,
                fenced: false,
                acknowledged: None,
                members: Vec::new(),
                expired: Vec::new(),
                established: Vec::new(),
            },
        }
    }

    async fn accept_handoff(&self, handoff: Handoff) -> Result<(), HopError> {
        let Some(activator) = self.activator(&handoff.module) else {
            return Err(HopError::Failed(MeshError::unknown_module(
                handoff.module.as_str(),
            )));
        };
        let shard = self.shard_for(handoff.id.as_str());
        if let (true, Some(store)) = (activator.is_durable(), &self.inner.config.store) {
            return self
                .accept_durable_handoff(store.as_ref(), shard, handoff)
                .await;
        }
        tracing::debug!(node = %self.node_id(), module = %handoff.module, id = %handoff.id,
            shard = shard.0, from = %handoff.from, "handoff received");
        match self.inner.registry.put_handoff(shard, handoff) {
            Ok(()) => Ok(()),
            Err(RefusedHandoff::Full(handoff)) => Err(HopError::refused(
                Refusal::MailboxFull,
                format!(
                    "{} handoffs are waiting on this node already; {}/{} was not taken",
                    crate::registry::MAX_WAITING_HANDOFFS,
                    handoff.module,
                    handoff.id
                ),
            )),
            Err(RefusedHandoff::Live(handoff)) => {
                Err(HopError::Failed(MeshError::OwnerUnavailable(format!(
                    "{}/{} is already active on this node; its state is the newer one",
                    handoff.module, handoff.id
                ))))
            }
        }
    }
}

impl MembershipFeed for Mesh {
    async fn update_members(&self, members: Vec<Member>) {
        // The router only stops with the arbiters, i.e. with this Mesh.
        let _ = self.inner.router.send(UpdateMembers(members)).await;
    }

    async fn await_cluster(&self) {
        let _ = self.inner.router.send(AwaitCluster).await;
    }

    fn routing_updates(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.routing_updates.clone()
    }

    fn local_member(&self) -> Member {
        let node = &self.inner.config.node_id;
        self.routing()
            .members()
            .iter()
            .find(|m| m.node == *node)
            .cloned()
            .expect("the local node is always a member of its own view")
    }
}

impl FrontEnd for Mesh {
    fn record_rejection(&self, delivery: Delivery, error: &MeshError) {
        self.inner.metrics.record_rejection(delivery, error);
    }
}

/// Why [`Mesh::activate`] started nothing.
enum NotActivated {
    Failed(MeshError),
    /// A durable type: load its state from this store first.
    NeedsState(Arc<dyn StateStore>),
}

impl From<MeshError> for NotActivated {
    fn from(error: MeshError) -> NotActivated {
        NotActivated::Failed(error)
    }
}

/// The idle timeout of an actor type's activations: its own if it declares one (zero:
/// never), else the node's `default` for durable types, else none.
fn idle_timeout_of(activator: &dyn Activator, default: Option<Duration>) -> Option<Duration> {
    match activator.idle_timeout() {
        Some(own) => (!own.is_zero()).then_some(own),
        None if activator.is_durable() => default.filter(|t| !t.is_zero()),
        None => None,
    }
}

/// Passivates idle activations, and keeps the host clock they are timed by: runs on the
/// router's thread for as long as the node lives.
async fn sweep_idle(mesh: WeakMesh) {
    let started = Instant::now();
    // Activations passivated since the allocator was last asked to give memory back.
    let mut untrimmed = 0;
    loop {
        let Some(period) = mesh.upgrade().map(|mesh| mesh.idle_sweep_period()) else {
            return;
        };
        tokio::time::sleep(period).await;
        let Some(mesh) = mesh.upgrade() else {
            return;
        };
        // Wrapping 32-bit milliseconds: see `MAX_IDLE_MS`.
        let now = started.elapsed().as_millis() as u32;
        mesh.inner.host.clock_ms.store(now, Ordering::Relaxed);
        let slack = period.as_millis() as u32;
        let passivated = mesh.inner.registry.passivate_idle(now, slack);
        if passivated > 0 {
            tracing::debug!(node = %mesh.node_id(), passivated, "idle activations passivated");
        }
        // Once a wave of passivations is over (its actors have ended on their threads by the
        // next tick), hand the memory they held back to the system.
        untrimmed += passivated;
        if passivated == 0 && untrimmed >= TRIM_AFTER_PASSIVATIONS {
            untrimmed = 0;
            release_free_memory();
        }
    }
}

/// How many passivations make it worth asking the allocator to give memory back.
const TRIM_AFTER_PASSIVATIONS: usize = 1024;

/// Returns the allocator's free pages to the system. glibc's malloc keeps what many small
/// frees leave inside its heaps (each thread's arena included), so without it a node's
/// resident memory never falls after passivating many activations.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own heaps, under their locks; it is safe to
    // call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Where a request comes from, which decides whether it may still be forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// From a client of this node: forwarded once to the owner if another node owns it.
    Client,
    /// Forwarded by another node: served here or refused, never forwarded again.
    Forwarded,
}

/// What one try at delivering a request came to.
enum Attempt {
    /// A final outcome.
    Done(Result<Option<Reply>, HopError>),
    /// Certainly not delivered, for this reason: may be routed again.
    Refused(Refusal, MeshError),
    /// Not delivered because routing changed under it (an activation retired, the gate
    /// opened): route again at once.
    Again,
}

/// Waits for a local activation's reply until `deadline`, arming a timer only if the reply is
/// not there after one turn of this thread's task queue.
///
/// An activation on the caller's own thread has handled the message by then (the send woke
/// its task before this one yields, and the queue runs in order), so most local calls finish
/// without registering a timer in the runtime's timer wheel and removing it again, which
/// was one of the few costs left on that path. Every other reply (another thread's
/// activation, an async handler, a full mailbox) gets the timer one turn later: the deadline
/// holds either way, since a timer armed after its deadline fires at once.
async fn reply_by<F: std::future::Future>(
    deadline: tokio::time::Instant,
    reply: F,
) -> Result<F::Output, Elapsed> {
    let mut reply = std::pin::pin!(reply);
    let mut yielded = false;
    let first_turn = std::future::poll_fn(|cx| match reply.as_mut().poll(cx) {
        Poll::Ready(output) => Poll::Ready(Some(output)),
        Poll::Pending if !yielded => {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
        Poll::Pending => Poll::Ready(None),
    })
    .await;
    match first_turn {
        Some(output) => Ok(output),
        None => tokio::time::timeout_at(deadline, reply).await,
    }
}

fn churn(request: &Request) -> String {
    format!(
        "activation {}/{} kept being deactivated while routing; retry",
        request.module, request.id
    )
}
