//! The `Mesh` handle: the Rust API of one node.

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use actix::dev::SendError;
use actix::prelude::*;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, TryFutureExt};
use mesh_core::{
    Capability, Member, MeshError, Module, NodeId, Reply, Request, RoutingTable, ShardCount,
    ShardId,
};
use parking_lot::RwLock;

use crate::activation::{
    ActivationCell, Activator, Delivered, Envelope, TypedActivator, Undelivered,
};
use crate::actor::{Delivery, MeshActor, Payload};
use crate::metrics::{RequestMetrics, RequestStats};
use crate::registry::{ActivationRegistry, Entry, RegistryStats};
use crate::router::{RegisterCapabilities, RoutingSnapshot, ShardRouter, UpdateMembers};
use crate::transport::RemoteTransport;

/// The default bound of each activation's mailbox.
pub const DEFAULT_MAILBOX_CAPACITY: usize = 1024;

/// How many times one request is routed: again after landing on an activation that was just
/// deactivated, or after its remote owner refused it or could not be reached.
const MAX_ROUTE_ATTEMPTS: usize = 4;

/// How long to let membership settle before routing a request again after its remote owner
/// refused it or could not be reached.
const REROUTE_BACKOFF: Duration = Duration::from_millis(100);

/// How to start a node's [`Mesh`].
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// This node's id, unique in the cluster.
    pub node_id: NodeId,
    /// Where this node serves HTTP (`host:port`), as other nodes should dial it.
    pub addr: String,
    /// The shard count; every node of a cluster must use the same.
    pub shards: ShardCount,
    /// How many arbiters (threads) host activations; defaults to the number of cores.
    pub arbiters: NonZeroUsize,
    /// The bound of each activation's mailbox. A call waits (within its timeout) for room in a
    /// full mailbox; a cast to a full mailbox fails at once with `owner_unavailable`.
    pub mailbox_capacity: usize,
}

impl MeshConfig {
    /// A config with default shards, one arbiter per core and default mailboxes.
    pub fn new(node_id: NodeId, addr: impl Into<String>) -> MeshConfig {
        MeshConfig {
            node_id,
            addr: addr.into(),
            shards: ShardCount::default(),
            arbiters: std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN),
            mailbox_capacity: DEFAULT_MAILBOX_CAPACITY,
        }
    }
}

/// Why a [`Mesh`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Arbiters and actors need a running actix `System` (e.g. `#[actix_web::main]`).
    #[error("Mesh::start must be called inside a running actix System")]
    NoSystem,
}

/// The handle to this node's mesh: register actor types and capabilities, call and cast.
///
/// Cheap to clone; all clones share one node. Dropping the last clone stops the node's
/// arbiters and with them every activation.
///
/// ```
/// use mesh_actix::{Mesh, MeshConfig, NodeId, Request};
/// # use mesh_actix::{InitError, MeshActor, MeshInit, Payload};
/// # use mesh_actix::__private::actix::{Actor, Context, Handler, MessageResult};
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
    registry: Arc<ActivationRegistry>,
    modules: RwLock<HashMap<Module, Arc<dyn Activator>>>,
    arbiters: Vec<Arbiter>,
    next_arbiter: AtomicUsize,
    next_serial: AtomicU64,
    metrics: RequestMetrics,
    transport: OnceLock<Arc<dyn RemoteTransport>>,
}

impl Drop for MeshInner {
    fn drop(&mut self) {
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }
}

impl Mesh {
    /// Starts this node's mesh: its arbiter pool and its `ShardRouter`. Must run inside an
    /// actix `System`.
    pub fn start(config: MeshConfig) -> Result<Mesh, StartError> {
        if System::try_current().is_none() {
            return Err(StartError::NoSystem);
        }
        let arbiters: Vec<Arbiter> = (0..config.arbiters.get()).map(|_| Arbiter::new()).collect();
        let registry = Arc::new(ActivationRegistry::new());
        let local = Member::alive(
            config.node_id.clone(),
            config.addr.clone(),
            Vec::<&str>::new(),
        )
        .expect("no capabilities to validate");
        let routing = ShardRouter::initial(&local, config.shards);
        let (updates, routing_updates) = tokio::sync::watch::channel(routing.load().epoch());
        let router = {
            let (routing, registry, shards) = (routing.clone(), registry.clone(), config.shards);
            let node = config.node_id.clone();
            ShardRouter::start_in_arbiter(&arbiters[0].handle(), move |_| {
                let on_publish = Box::new(move |table: &RoutingTable| {
                    stop_moved_activations(&registry, table, &node);
                    updates.send_replace(table.epoch());
                });
                ShardRouter::new(local, shards, routing, on_publish)
            })
        };
        Ok(Mesh {
            inner: Arc::new(MeshInner {
                config,
                routing,
                routing_updates,
                router,
                registry,
                modules: RwLock::default(),
                arbiters,
                next_arbiter: AtomicUsize::new(0),
                next_serial: AtomicU64::new(0),
                metrics: RequestMetrics::default(),
                transport: OnceLock::new(),
            }),
        })
    }

    /// Registers actor type `A` under its module name ([`MeshActor::MODULE`]). Registering a
    /// type again replaces the earlier registration for new activations.
    pub fn register<A: MeshActor>(&self) -> &Mesh {
        let module = Module::new(A::MODULE).expect("the derive rejects empty module names");
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
    /// them through the membership layer.
    pub async fn register_capabilities<C: AsRef<str>>(
        &self,
        capabilities: impl IntoIterator<Item = C>,
    ) -> Result<BTreeSet<Capability>, MeshError> {
        let capabilities = capabilities
            .into_iter()
            .map(Capability::new)
            .collect::<Result<Vec<_>, _>>()?;
        self.inner
            .router
            .send(RegisterCapabilities(capabilities))
            .await
            .map_err(|_| MeshError::OwnerUnavailable("the shard router has stopped".into()))
    }

    /// Replaces what this node knows about the other members of the cluster. Called by the
    /// membership layer; the local member is always kept as this node describes itself.
    pub async fn update_members(&self, members: Vec<Member>) {
        // The router only stops with the arbiters, i.e. with this Mesh.
        let _ = self.inner.router.send(UpdateMembers(members)).await;
    }

    /// Sets how this node reaches other nodes. Without one, a request owned by another node
    /// fails with `owner_unavailable`. Can be set once.
    pub fn set_transport(&self, transport: Arc<dyn RemoteTransport>) -> Result<(), MeshError> {
        self.inner
            .transport
            .set(transport)
            .map_err(|_| MeshError::BadRequest("the transport is already set".into()))
    }

    /// Calls the actor `(request.module, request.id)` wherever it lives, activating it on
    /// its owner first if needed, and waits for its reply within the request's timeout.
    pub async fn call(&self, request: Request) -> Result<Reply, MeshError> {
        self.call_from(request, Origin::Client).await
    }

    /// Delivers `request.payload` to the actor like [`Mesh::call`] but discards the reply:
    /// returns as soon as the owner has accepted the request.
    ///
    /// A cast that meets a full mailbox fails with `owner_unavailable` rather than queueing
    /// without bound. Like a cast to a dying GenServer, a cast that races with the actor's
    /// deactivation may be dropped.
    pub async fn cast(&self, request: Request) -> Result<(), MeshError> {
        self.cast_from(request, Origin::Client).await
    }

    /// [`Mesh::call`] for a request that comes from `origin`. A request another node
    /// forwarded is served here only if this node owns the actor under its current view, and
    /// refused with `owner_unavailable` otherwise: a request is forwarded at most once.
    pub async fn call_from(&self, request: Request, origin: Origin) -> Result<Reply, MeshError> {
        let reply = self.timed(request, origin, Delivery::Call).await?;
        Ok(reply.expect("a call always ends with a reply"))
    }

    /// [`Mesh::cast`] for a request that comes from `origin`; see [`Mesh::call_from`].
    pub async fn cast_from(&self, request: Request, origin: Origin) -> Result<(), MeshError> {
        self.timed(request, origin, Delivery::Cast).await.map(drop)
    }

    async fn timed(
        &self,
        request: Request,
        origin: Origin,
        delivery: Delivery,
    ) -> Result<Option<Reply>, MeshError> {
        let started = Instant::now();
        let result = self.route(request, origin, delivery).await;
        let outcome = result.as_ref().map(drop);
        self.inner
            .metrics
            .record(delivery, outcome, started.elapsed());
        result
    }

    /// The shard of an actor id.
    pub fn shard_for(&self, id: &str) -> ShardId {
        self.inner.config.shards.shard_for(id)
    }

    /// The node that owns `shard` for `capability` under this node's current view.
    pub fn owner(&self, shard: ShardId, capability: &str) -> Result<NodeId, MeshError> {
        self.inner
            .routing
            .load()
            .owner(capability, shard)
            .map(|member| member.node.clone())
            .ok_or_else(|| MeshError::no_capable_node(capability))
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

    /// Changes whenever a new routing snapshot is published (a capability registered, a
    /// member joined, changed or left); the value is the snapshot's epoch.
    pub fn routing_updates(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.routing_updates.clone()
    }

    /// This node as it describes itself to the cluster: id, address, capabilities.
    pub fn local_member(&self) -> Member {
        let node = &self.inner.config.node_id;
        self.routing()
            .members()
            .iter()
            .find(|m| m.node == *node)
            .cloned()
            .expect("the local node is always a member of its own view")
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

    /// Counts a call or cast that a front end (e.g. the HTTP routes) refused before it could
    /// reach the mesh — a malformed body, a missing secret — so that the request counters
    /// cover every outcome.
    pub fn record_rejection(&self, delivery: Delivery, error: &MeshError) {
        self.inner.metrics.record_rejection(delivery, error);
    }

    /// Request counters and the call-latency histogram of this node.
    pub fn request_stats(&self) -> RequestStats {
        self.inner.metrics.snapshot()
    }

    /// Where the request goes next under the current snapshot: here, or once to its owner.
    fn next_hop(&self, request: &Request, origin: Origin) -> Result<NextHop, MeshError> {
        let table = self.inner.routing.load();
        let shard = table.shards().shard_for(request.id.as_str());
        let owner = table
            .owner(request.capability.as_str(), shard)
            .ok_or_else(|| MeshError::no_capable_node(request.capability.as_str()))?;
        if owner.node == self.inner.config.node_id {
            return Ok(NextHop::Local(shard));
        }
        match origin {
            Origin::Client => Ok(NextHop::Remote(owner.clone())),
            Origin::Forwarded => Err(MeshError::OwnerUnavailable(format!(
                "this node does not own the actor under its current view (owner: {}); \
                 a request is never forwarded twice",
                owner.node
            ))),
        }
    }

    fn transport(&self, owner: &Member) -> Result<&Arc<dyn RemoteTransport>, MeshError> {
        self.inner.transport.get().ok_or_else(|| {
            MeshError::OwnerUnavailable(format!(
                "node {} owns the actor and this node has no transport to reach it",
                owner.node
            ))
        })
    }

    /// Routes a call (its reply comes back) or a cast (`Ok(None)` once accepted).
    async fn route(
        &self,
        mut request: Request,
        origin: Origin,
        delivery: Delivery,
    ) -> Result<Option<Reply>, MeshError> {
        let timeout = request.effective_timeout();
        let deadline = tokio::time::Instant::now() + timeout;
        for attempt in 1..=MAX_ROUTE_ATTEMPTS {
            let owner = match self.next_hop(&request, origin)? {
                NextHop::Remote(owner) => owner,
                NextHop::Local(shard) => {
                    let body = std::mem::take(&mut request.payload);
                    let delivered = match delivery {
                        Delivery::Call => {
                            let payload = Payload::call(body);
                            let reply =
                                self.call_local(&request, shard, payload, deadline, timeout);
                            reply.await?.map(Some)
                        }
                        Delivery::Cast => {
                            let payload = Payload::cast(body);
                            self.cast_local(&request, shard, payload)?.map(|()| None)
                        }
                    };
                    match delivered {
                        Ok(reply) => return Ok(reply),
                        Err(payload) => request.payload = payload.body,
                    }
                    continue;
                }
            };
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let transport = self.transport(&owner)?;
            let forward = match delivery {
                Delivery::Call => transport
                    .call(&owner, request.clone(), remaining)
                    .map_ok(Some)
                    .boxed(),
                Delivery::Cast => transport
                    .cast(&owner, request.clone(), remaining)
                    .map_ok(|()| None)
                    .boxed(),
            };
            let last = attempt == MAX_ROUTE_ATTEMPTS;
            if let Some(result) = settle_forward(forward, deadline, timeout, last).await {
                return result;
            }
        }
        Err(churn(&request))
    }

    /// Delivers a call to the local activation. `Ok(Err(payload))`: the activation was
    /// deactivated before it got to the payload; route it again.
    async fn call_local(
        &self,
        request: &Request,
        shard: ShardId,
        payload: Payload,
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<Result<Reply, Payload>, MeshError> {
        let (cell, pending) = self.with_activation(request, shard, |entry| {
            let envelope = Envelope::deliver(entry.cell.clone(), payload);
            (entry.cell.clone(), entry.recipient.send(envelope))
        })?;
        let handled = match tokio::time::timeout_at(deadline, pending).await {
            Err(_) => return Err(MeshError::timeout(timeout)),
            Ok(Err(MailboxError::Timeout)) => return Err(MeshError::timeout(timeout)),
            Ok(Err(MailboxError::Closed)) => {
                return Err(MeshError::OwnerUnavailable(format!(
                    "activation {}/{} stopped before replying",
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
            Err(Undelivered::Crashed(reason)) => Err(MeshError::actor_crashed(&reason)),
            Err(Undelivered::Retired(Some(payload))) => Ok(Err(payload)),
            Err(Undelivered::Retired(None)) => Err(churn(request)),
        }
    }

    /// Enqueues a cast on the local activation. `Ok(Err(payload))`: its mailbox had closed;
    /// route it again.
    fn cast_local(
        &self,
        request: &Request,
        shard: ShardId,
        payload: Payload,
    ) -> Result<Result<(), Payload>, MeshError> {
        let sent = self.with_activation(request, shard, |entry| {
            let envelope = Envelope::deliver(entry.cell.clone(), payload);
            entry
                .recipient
                .try_send(envelope)
                .map_err(|e| (entry.cell.clone(), e))
        })?;
        match sent {
            Ok(()) => Ok(Ok(())),
            Err((_, SendError::Full(_))) => Err(MeshError::OwnerUnavailable(format!(
                "the mailbox of {}/{} is full ({} messages); retry later",
                request.module, request.id, self.inner.config.mailbox_capacity
            ))),
            Err((cell, SendError::Closed(envelope))) => {
                cell.deactivate();
                Ok(Err(envelope.into_payload().expect("a delivery envelope")))
            }
        }
    }

    /// Runs `send` on the request's activation, activating it first if this node has none.
    fn with_activation<R>(
        &self,
        request: &Request,
        shard: ShardId,
        send: impl FnOnce(&Entry) -> R,
    ) -> Result<R, MeshError> {
        let activate = || self.activate(request, shard);
        let registry = &self.inner.registry;
        registry.with_entry(shard, &request.module, &request.id, activate, send)
    }

    fn activate(&self, request: &Request, shard: ShardId) -> Result<Entry, MeshError> {
        let inner = &self.inner;
        let activator = inner
            .modules
            .read()
            .get(request.module.as_str())
            .cloned()
            .ok_or_else(|| MeshError::unknown_module(request.module.as_str()))?;
        let cell = Arc::new(ActivationCell::new(
            request.module.clone(),
            request.id.clone(),
            request.capability.clone(),
            shard,
            request.init_arg.clone(),
            inner.config.node_id.clone(),
            inner.next_serial.fetch_add(1, Ordering::Relaxed),
            Arc::downgrade(&inner.registry),
        ));
        let next = inner.next_arbiter.fetch_add(1, Ordering::Relaxed) % inner.arbiters.len();
        let recipient = activator.start(
            cell.clone(),
            &inner.arbiters[next].handle(),
            inner.config.mailbox_capacity,
        )?;
        Ok(Entry { cell, recipient })
    }
}

/// Where a request comes from, which decides whether it may still be forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// From a client of this node: forwarded once to the owner if another node owns it.
    Client,
    /// Forwarded by another node: served here or refused, never forwarded again.
    Forwarded,
}

enum NextHop {
    /// This node owns the shard.
    Local(ShardId),
    /// Another node does; forward once.
    Remote(Member),
}

/// Awaits a forwarded request within its deadline: its result, or `None` to route it again.
///
/// A remote owner that refused the request (its view differs from ours) or could not be
/// reached (it may be leaving or dead) gets another try after membership had a moment to
/// settle, unless this was the last attempt or the deadline leaves no room for one.
async fn settle_forward<T>(
    forward: BoxFuture<'static, Result<T, MeshError>>,
    deadline: tokio::time::Instant,
    timeout: Duration,
    last_attempt: bool,
) -> Option<Result<T, MeshError>> {
    let Ok(result) = tokio::time::timeout_at(deadline, forward).await else {
        return Some(Err(MeshError::timeout(timeout)));
    };
    let resume = tokio::time::Instant::now() + REROUTE_BACKOFF;
    let refused = matches!(result, Err(MeshError::OwnerUnavailable(_)));
    if refused && !last_attempt && resume + REROUTE_BACKOFF <= deadline {
        tokio::time::sleep_until(resume).await;
        return None;
    }
    Some(result)
}

fn churn(request: &Request) -> MeshError {
    MeshError::OwnerUnavailable(format!(
        "activation {}/{} kept being deactivated while routing; retry",
        request.module, request.id
    ))
}

/// After a membership change: stop every local activation this node no longer owns.
fn stop_moved_activations(registry: &ActivationRegistry, table: &RoutingTable, local: &NodeId) {
    let moved = registry.unwanted(|cell| {
        table
            .owner(cell.capability.as_str(), cell.shard)
            .is_some_and(|owner| owner.node == *local)
    });
    for entry in moved {
        entry.cell.deactivate();
        entry.recipient.do_send(Envelope::stop(entry.cell));
    }
}
