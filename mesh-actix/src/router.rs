//! The `ShardRouter` actor: the single writer of this node's membership view, capabilities
//! and lease state ([`Fencing`]).
//!
//! Callers never message it on the hot path: after every change it builds a new immutable
//! [`RoutingTable`] and publishes it through an [`ArcSwap`], which every call reads lock-free,
//! and it opens or closes the serving gate that every delivery checks. Changes are serialised
//! through its mailbox, so two updates never race to publish. It runs on an arbiter of its
//! own, so that a busy actor cannot delay lease renewals.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use arc_swap::ArcSwap;
use mesh_core::{
    Capability, Fencing, FencingEvent, Handoff, LeaseConfig, Member, NodeId, RenewReply,
    RenewRequest, RoutingTable, ShardCount,
};

use crate::gate::Gate;
use crate::mesh::WeakMesh;
use crate::registry::ActivationRegistry;
use crate::transport::RemoteTransport;

/// Where the current routing snapshot is published; cheap to read from any thread.
pub(crate) type RoutingSnapshot = Arc<ArcSwap<RoutingTable>>;

/// How often the router advances its lease state (expiries, renewals).
const TICK: Duration = Duration::from_millis(20);

/// How long a handoff waits for the activations this node stopped to end before it
/// acknowledges their new owner anyway: a handler that never returns must not block a join
/// for ever. Logged when it happens.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the router is alive, for the rest of the node. The router only ends with its
/// `Mesh` (which marks `shutting_down` first) or by a panic in one of its handlers, after
/// which actix drops it: then nothing renews the lease, admits or fences any more.
#[derive(Default)]
pub(crate) struct RouterHealth {
    shutting_down: AtomicBool,
    failure: std::sync::Mutex<Option<String>>,
    failed: tokio::sync::Notify,
}

impl RouterHealth {
    /// The node is stopping: the router's end is expected.
    pub(crate) fn shut_down(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    /// Why the router died, if it did.
    pub(crate) fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Resolves once the router has died, with the reason.
    pub(crate) async fn failed(&self) -> String {
        loop {
            let notified = self.failed.notified();
            if let Some(reason) = self.failure() {
                return reason;
            }
            notified.await;
        }
    }

    fn fail(&self, reason: String) {
        *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
        self.failed.notify_waiters();
    }
}

/// What the router shares with the rest of the node.
pub(crate) struct RouterLinks {
    pub(crate) snapshot: RoutingSnapshot,
    pub(crate) updates: tokio::sync::watch::Sender<u64>,
    pub(crate) registry: Arc<ActivationRegistry>,
    pub(crate) gate: Arc<Gate>,
    pub(crate) transport: Option<Arc<dyn RemoteTransport>>,
    /// The node's `Mesh`, to send handoffs.
    pub(crate) mesh: WeakMesh,
    pub(crate) health: Arc<RouterHealth>,
}

/// Owns the membership view and lease state; publishes routing snapshots.
pub(crate) struct ShardRouter {
    fencing: Fencing,
    shards: ShardCount,
    links: RouterLinks,
    published: Option<u64>,
    /// Since when stopped activations have been waiting to end (see [`RELEASE_TIMEOUT`]).
    unsettled_since: Option<Duration>,
}

impl ShardRouter {
    pub(crate) fn new(
        local: Member,
        shards: ShardCount,
        lease: LeaseConfig,
        joining: bool,
        links: RouterLinks,
    ) -> ShardRouter {
        let now = links.gate.now();
        let mut router = ShardRouter {
            fencing: Fencing::new(local, lease, joining, now),
            shards,
            links,
            published: None,
            unsettled_since: None,
        };
        router.fencing.tick(now);
        router.apply();
        router
    }

    /// The first snapshot, before the actor runs.
    pub(crate) fn initial(local: &Member, shards: ShardCount) -> RoutingSnapshot {
        let mut view = mesh_core::MembershipView::default();
        view.upsert(local.clone());
        Arc::new(ArcSwap::from_pointee(RoutingTable::build(&view, shards)))
    }

    fn now(&self) -> Duration {
        self.links.gate.now()
    }

    fn local(&self) -> &NodeId {
        &self.fencing.local().node
    }

    /// Acts on what the lease state says after any change: logs its events, stops
    /// activations when the lease is lost, republishes routing, and sets the gate.
    fn apply(&mut self) {
        let now = self.now();
        for event in self.fencing.take_events() {
            self.on_event(event);
        }
        let view = self.fencing.view();
        if self.published != Some(view.epoch()) {
            self.published = Some(view.epoch());
            let table = RoutingTable::build(view, self.shards);
            self.links.snapshot.store(Arc::new(table));
            let table = self.links.snapshot.load_full();
            let local = self.local().clone();
            let moved = self.release(&table, |cell| {
                table
                    .owner(cell.shard, cell.capability.as_str())
                    .is_some_and(|owner| owner.node == local)
            });
            if moved > 0 {
                tracing::info!(node = %local, activations = moved, epoch = table.epoch(),
                    "stopped activations whose shards moved away; handing them over");
            }
            // A state handed over here for an identity that has moved on since goes on to its
            // owner, unless that is the node it came from: a node that drains hands over
            // before the others stop routing to it.
            self.pass_on_handoffs(&table, |handoff, owner| {
                owner.node != local && owner.node != handoff.from
            });
            self.links.updates.send_replace(table.epoch());
        }
        let until = self.fencing.serving_until();
        self.links.gate.set(until, self.fencing.refusal(now));
    }

    /// Stops every activation that fails `keep` and hands each over to its owner under
    /// `successors` (the planned half of a move). Returns how many.
    fn release(
        &self,
        successors: &RoutingTable,
        keep: impl Fn(&crate::activation::ActivationCell) -> bool,
    ) -> usize {
        let members: std::collections::HashMap<&NodeId, Arc<Member>> = successors
            .members()
            .iter()
            .map(|m| (&m.node, Arc::new(m.clone())))
            .collect();
        let local = self.local();
        self.links.registry.stop_unwanted(keep, |cell| {
            let owner = successors.owner(cell.shard, cell.capability.as_str())?;
            (owner.node != *local).then(|| members[&owner.node].clone())
        })
    }

    /// Sends on the waiting handoffs whose identity's owner under `table` passes `pick`.
    fn pass_on_handoffs(&self, table: &RoutingTable, pick: impl Fn(&Handoff, &Member) -> bool) {
        let Some(mesh) = self.links.mesh.upgrade() else {
            return;
        };
        let owner = |handoff: &Handoff| {
            let shard = self.shards.shard_for(handoff.id.as_str());
            table.owner(shard, handoff.capability.as_str())
        };
        let passed = self
            .links
            .registry
            .take_handoffs(|handoff| owner(handoff).is_some_and(|o| pick(handoff, o)));
        if passed.is_empty() {
            return;
        }
        tracing::info!(node = %self.local(), handoffs = passed.len(),
            "passing handed-over states on to their identities' new owners");
        for handoff in passed {
            if let Some(to) = owner(&handoff) {
                mesh.hand_off(Arc::new(to.clone()), handoff);
            }
        }
    }

    fn on_event(&mut self, event: FencingEvent) {
        let node = self.local().clone();
        let incarnation = self.fencing.local().incarnation;
        match event {
            FencingEvent::LeaseLost | FencingEvent::Reincarnated { .. } => {
                // Close the gate first: nothing executes from here on.
                self.links.gate.set(None, self.fencing.refusal(self.now()));
                // Not handed over: the cluster may have moved them already.
                let stopped = self.links.registry.stop_unwanted(|_| false, |_| None);
                if let FencingEvent::Reincarnated { incarnation } = event {
                    // What was handed over to the old incarnation may have been superseded.
                    let dropped = self.links.registry.take_handoffs(|_| true).len();
                    tracing::warn!(%node, incarnation, activations = stopped, handoffs_dropped = dropped,
                        "fenced by the cluster: rejoining as a new incarnation");
                } else {
                    tracing::warn!(%node, incarnation, activations = stopped,
                        "lease lost: refusing requests and stopping every activation");
                }
            }
            FencingEvent::LeaseAcquired => {
                tracing::info!(%node, incarnation, "lease acquired");
            }
            FencingEvent::Admitted { version } => {
                tracing::info!(%node, incarnation, version, "admitted: every member acknowledged this node");
            }
            FencingEvent::MemberJoined {
                node: member,
                incarnation: theirs,
            } => {
                tracing::info!(%node, member = %member, member_incarnation = theirs, "member joined");
            }
            FencingEvent::MemberFenced {
                node: member,
                incarnation: theirs,
            } => {
                tracing::warn!(%node, member = %member, member_incarnation = theirs,
                    "member fenced: its lease has surely expired; its shards move");
            }
            FencingEvent::MemberLeft { node: member } => {
                tracing::info!(%node, member = %member, "member left; its shards move");
            }
        }
    }

    /// Whether every activation this node stopped has ended, so that a new owner may start
    /// them: the release half of a handoff, bounded by [`RELEASE_TIMEOUT`].
    fn released(&mut self, now: Duration) -> bool {
        if self.links.registry.is_settled() {
            self.unsettled_since = None;
            return true;
        }
        let since = *self.unsettled_since.get_or_insert(now);
        let overdue = now.saturating_sub(since) >= RELEASE_TIMEOUT;
        if overdue {
            tracing::warn!(node = %self.local(), waited_ms = RELEASE_TIMEOUT.as_millis() as u64,
                "stopped activations are still running; handing their shards over anyway");
        }
        overdue
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let now = self.now();
        let requests = self.fencing.tick(now);
        self.apply();
        let Some(transport) = self.links.transport.clone() else {
            return;
        };
        let timeout = self.fencing.config().lease;
        for (peer, request) in requests {
            let renewal = transport.renew(&peer, request, timeout);
            ctx.spawn(renewal.into_actor(self).map(|reply, router, _| {
                if let Ok(reply) = reply {
                    router.fencing.on_reply(reply, router.now());
                    router.apply();
                }
            }));
        }
    }
}

impl Drop for ShardRouter {
    /// A router that ends while its node lives has panicked: the node can no longer confirm
    /// its ownership, so it stops serving for good (every request is refused, `/ready` says
    /// why) and reports the failure, which `mesh-node` turns into an exit for its supervisor
    /// to restart it. Restarting the router in place would need a new incarnation anyway.
    fn drop(&mut self) {
        if self.links.health.shutting_down.load(Ordering::Acquire) {
            return;
        }
        let reason = "the shard router of this node stopped unexpectedly (a bug: it panicked); \
                      this node refuses every request until it is restarted"
            .to_owned();
        self.links
            .gate
            .set(None, Some((mesh_core::Refusal::NoLease, reason.clone())));
        let stopped = self.links.registry.stop_unwanted(|_| false, |_| None);
        tracing::error!(node = %self.local(), incarnation = self.fencing.local().incarnation,
            activations = stopped, "{reason}");
        self.links.health.fail(reason);
    }
}

impl Actor for ShardRouter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.tick(ctx);
        ctx.run_interval(TICK, |router, ctx| router.tick(ctx));
    }
}

/// Adds capabilities to this node; replies with all of them, or refuses a set that would
/// exceed the bounds of [`mesh_core::check_capabilities`] (and changes nothing).
pub(crate) struct RegisterCapabilities(pub(crate) Vec<Capability>);

impl Message for RegisterCapabilities {
    type Result = Result<BTreeSet<Capability>, mesh_core::MeshError>;
}

impl Handler<RegisterCapabilities> for ShardRouter {
    type Result = MessageResult<RegisterCapabilities>;

    fn handle(&mut self, msg: RegisterCapabilities, _: &mut Context<Self>) -> Self::Result {
        let mut local = self.fencing.local().clone();
        local.capabilities.extend(msg.0);
        if let Err(error) = mesh_core::check_capabilities(&local.capabilities) {
            return MessageResult(Err(error));
        }
        let all = local.capabilities.clone();
        self.fencing.set_local(local, self.now());
        self.apply();
        MessageResult(Ok(all))
    }
}

/// What the membership layer (gossip) knows of the other members. Members are learned from
/// it; they are never forgotten because gossip stopped mentioning them (only a fencing or a
/// leave removes a member's shards), and this node's own entry is ignored.
pub(crate) struct UpdateMembers(pub(crate) Vec<Member>);

impl Message for UpdateMembers {
    type Result = ();
}

impl Handler<UpdateMembers> for ShardRouter {
    type Result = ();

    fn handle(&mut self, msg: UpdateMembers, _: &mut Context<Self>) {
        let now = self.now();
        for member in msg.0 {
            self.fencing.observe(member, now);
        }
        self.apply();
    }
}

/// Another node asks for a grant of its lease.
pub(crate) struct Renew(pub(crate) RenewRequest);

impl Message for Renew {
    type Result = RenewReply;
}

impl Handler<Renew> for ShardRouter {
    type Result = MessageResult<Renew>;

    fn handle(&mut self, msg: Renew, _: &mut Context<Self>) -> Self::Result {
        let now = self.now();
        // Route by the asker's descriptor (stopping what it takes over) before answering, so
        // that an acknowledgement is true when it is sent.
        self.fencing.observe(msg.0.from.clone(), now);
        self.apply();
        let settled = self.released(now);
        let reply = self.fencing.on_request(msg.0, now, settled);
        self.apply();
        MessageResult(reply)
    }
}

/// This node joins an existing cluster: it serves nothing until it has heard from it.
pub(crate) struct AwaitCluster;

impl Message for AwaitCluster {
    type Result = ();
}

impl Handler<AwaitCluster> for ShardRouter {
    type Result = ();

    fn handle(&mut self, _: AwaitCluster, _: &mut Context<Self>) {
        self.fencing.expect_cluster(self.now());
        self.apply();
    }
}

/// Stops serving: the first step of a graceful leave.
pub(crate) struct Drain;

impl Message for Drain {
    type Result = ();
}

impl Handler<Drain> for ShardRouter {
    type Result = ();

    fn handle(&mut self, _: Drain, _: &mut Context<Self>) {
        self.fencing.drain(self.now());
        self.apply();
        // Who owns what once this node has left: the successors of its identities.
        let mut view = self.fencing.view().clone();
        let mut leaving = self.fencing.local().clone();
        leaving.leaving = true;
        view.upsert(leaving);
        let successors = RoutingTable::build(&view, self.shards);
        let stopped = self.release(&successors, |_| false);
        self.pass_on_handoffs(&successors, |_, _| true);
        tracing::info!(node = %self.local(), activations = stopped,
            "draining: stopped every activation, handing each over to its successor");
    }
}

/// Announces the leave, once every activation has stopped.
pub(crate) struct Leave;

impl Message for Leave {
    type Result = ();
}

impl Handler<Leave> for ShardRouter {
    type Result = ();

    fn handle(&mut self, _: Leave, ctx: &mut Context<Self>) {
        self.fencing.leave(self.now());
        self.apply();
        tracing::info!(node = %self.local(), "leaving the cluster");
        // Tell every member now rather than at the next round.
        self.tick(ctx);
    }
}

/// Makes the router panic, for the tests of what its death does.
#[cfg(test)]
pub(crate) struct Panic;

#[cfg(test)]
impl Message for Panic {
    type Result = ();
}

#[cfg(test)]
impl Handler<Panic> for ShardRouter {
    type Result = ();

    fn handle(&mut self, _: Panic, _: &mut Context<Self>) {
        panic!("a bug in the router");
    }
}

#[cfg(test)]
mod tests {
    use mesh_core::{MemberStatus, ShardId};

    use super::*;

    fn node(id: &str) -> NodeId {
        NodeId::new(id).unwrap()
    }

    fn member(id: &str, capabilities: &[&str]) -> Member {
        Member::alive(node(id), format!("{id}:4000"), capabilities).unwrap()
    }

    struct Fixture {
        router: Addr<ShardRouter>,
        snapshot: RoutingSnapshot,
        gate: Arc<Gate>,
        shards: ShardCount,
        health: Arc<RouterHealth>,
    }

    impl Fixture {
        /// A router for `local` (no capabilities yet, no transport).
        fn start(joining: bool) -> Fixture {
            let local = member("local", &[]);
            let shards = ShardCount::new(16).unwrap();
            let snapshot = ShardRouter::initial(&local, shards);
            let gate = Arc::new(Gate::new());
            let health = Arc::new(RouterHealth::default());
            let links = RouterLinks {
                snapshot: snapshot.clone(),
                updates: tokio::sync::watch::channel(0).0,
                registry: Arc::new(ActivationRegistry::new()),
                gate: gate.clone(),
                transport: None,
                mesh: WeakMesh::detached(),
                health: health.clone(),
            };
            let lease = LeaseConfig::default();
            let router = ShardRouter::new(local, shards, lease, joining, links).start();
            Fixture {
                router,
                snapshot,
                gate,
                shards,
                health,
            }
        }

        fn epoch(&self) -> u64 {
            self.snapshot.load().epoch()
        }

        fn members(&self) -> Vec<Member> {
            self.snapshot.load().members().to_vec()
        }

        fn owners(&self, capability: &str) -> BTreeSet<Option<NodeId>> {
            let table = self.snapshot.load();
            self.shards
                .iter()
                .map(|shard: ShardId| table.owner(shard, capability).map(|m| m.node.clone()))
                .collect()
        }

        async fn register(&self, capabilities: &[&str]) -> BTreeSet<Capability> {
            let capabilities = capabilities
                .iter()
                .map(|c| Capability::new(c).unwrap())
                .collect();
            self.router
                .send(RegisterCapabilities(capabilities))
                .await
                .unwrap()
                .unwrap()
        }

        async fn update(&self, members: Vec<Member>) {
            self.router.send(UpdateMembers(members)).await.unwrap();
        }
    }

    fn names(capabilities: &BTreeSet<Capability>) -> Vec<&str> {
        capabilities.iter().map(Capability::as_str).collect()
    }

    #[actix_rt::test]
    async fn registering_capabilities_publishes_a_snapshot_that_routes_them_here() {
        let f = Fixture::start(false);
        let epoch = f.epoch();
        assert_eq!(f.owners("counter"), BTreeSet::from([None]));

        let all = f.register(&["counter"]).await;
        assert_eq!(names(&all), ["counter"]);
        assert!(f.epoch() > epoch);
        assert_eq!(f.owners("counter"), BTreeSet::from([Some(node("local"))]));

        let all = f.register(&["game"]).await;
        assert_eq!(names(&all), ["counter", "game"]);
        assert_eq!(f.owners("game"), BTreeSet::from([Some(node("local"))]));

        // Known capabilities change nothing.
        let epoch = f.epoch();
        let all = f.register(&["game"]).await;
        assert_eq!(names(&all), ["counter", "game"]);
        assert_eq!(f.epoch(), epoch);
    }

    #[actix_rt::test]
    async fn a_lone_node_opens_its_gate_and_a_joining_one_does_not() {
        let alone = Fixture::start(false);
        alone.register(&["counter"]).await;
        assert!(alone.gate.is_open(), "a lone node is its own quorum");

        let joining = Fixture::start(true);
        joining.register(&["counter"]).await;
        assert!(!joining.gate.is_open());
        assert!(joining.gate.refusal().unwrap().1.contains("not learned"));
    }

    #[actix_rt::test]
    async fn members_are_learned_and_never_forgotten_for_missing_from_gossip() {
        let f = Fixture::start(false);
        f.register(&["counter"]).await;
        let (a, b) = (member("a", &["counter"]), member("b", &["game"]));
        f.update(vec![a.clone(), b.clone()]).await;
        let nodes: Vec<_> = f.members().into_iter().map(|m| m.node).collect();
        assert_eq!(nodes, [node("a"), node("b"), node("local")]);
        assert_eq!(f.owners("game"), BTreeSet::from([Some(node("b"))]));
        assert!(f.owners("counter").contains(&Some(node("a"))));
        // Newly learned members are suspects until they answer, and keep their shards.
        assert!(f.members()[..2]
            .iter()
            .all(|m| m.status == MemberStatus::Suspect));
        // Its lease is re-checked in the base of three at once: its own grant alone is no
        // quorum of it (until the others grant, it refuses).
        assert!(!f.gate.is_open());

        // Gossip that forgets a member does not move its shards: only fencing or a leave does.
        f.update(Vec::new()).await;
        assert_eq!(f.owners("game"), BTreeSet::from([Some(node("b"))]));

        // A leave does.
        let b_leaving = Member {
            leaving: true,
            version: 1,
            ..b
        };
        f.update(vec![b_leaving]).await;
        assert_eq!(f.owners("game"), BTreeSet::from([None]));
    }

    #[actix_rt::test]
    async fn the_local_member_is_kept_as_the_router_describes_it() {
        let f = Fixture::start(false);
        f.register(&["counter"]).await;
        let local = f.members()[0].clone();
        let epoch = f.epoch();
        // Another node's idea of this node (stale address, other capabilities) is ignored.
        let impostor = Member {
            addr: "10.9.9.9:1".into(),
            version: 99,
            ..member("local", &["game"])
        };
        f.update(vec![impostor]).await;
        assert_eq!(f.members(), std::slice::from_ref(&local));
        assert_eq!(f.epoch(), epoch);
    }

    #[actix_rt::test]
    async fn a_router_that_panics_closes_the_gate_for_good_and_reports_it() {
        let f = Fixture::start(false);
        f.register(&["counter"]).await;
        assert!(f.gate.is_open());
        assert!(f.health.failure().is_none());

        let _ = f.router.send(Panic).await;
        let reason = tokio::time::timeout(Duration::from_secs(5), f.health.failed())
            .await
            .expect("the router's death is reported");
        assert!(reason.contains("stopped unexpectedly"), "{reason}");
        assert!(!f.router.connected());
        let (refusal, why) = f.gate.refusal().expect("the gate is closed");
        assert_eq!((refusal, why), (mesh_core::Refusal::NoLease, reason));
    }
}
