//! The `ShardRouter` actor: the single writer of this node's membership view and capabilities.
//!
//! Callers never message it on the hot path: after every change it builds a new immutable
//! [`RoutingTable`] and publishes it through an [`ArcSwap`], which every call reads lock-free.
//! Changes are serialised through its mailbox, so two updates never race to publish.

use std::collections::BTreeSet;
use std::sync::Arc;

use actix::prelude::*;
use arc_swap::ArcSwap;
use mesh_core::{Capability, Member, MembershipView, NodeId, RoutingTable, ShardCount};

/// Where the current routing snapshot is published; cheap to read from any thread.
pub(crate) type RoutingSnapshot = Arc<ArcSwap<RoutingTable>>;

/// Told after each publication, so that activations whose shards moved away can be stopped.
pub(crate) type OnPublish = Box<dyn Fn(&RoutingTable) + Send + 'static>;

/// Owns the membership view and publishes routing snapshots.
pub struct ShardRouter {
    local: NodeId,
    view: MembershipView,
    shards: ShardCount,
    snapshot: RoutingSnapshot,
    on_publish: OnPublish,
}

impl ShardRouter {
    pub(crate) fn new(
        local: Member,
        shards: ShardCount,
        snapshot: RoutingSnapshot,
        on_publish: OnPublish,
    ) -> ShardRouter {
        let mut view = MembershipView::default();
        let node = local.node.clone();
        view.upsert(local);
        let router = ShardRouter {
            local: node,
            view,
            shards,
            snapshot,
            on_publish,
        };
        router.publish();
        router
    }

    /// The first snapshot, before the actor runs.
    pub(crate) fn initial(local: &Member, shards: ShardCount) -> RoutingSnapshot {
        let mut view = MembershipView::default();
        view.upsert(local.clone());
        Arc::new(ArcSwap::from_pointee(RoutingTable::build(&view, shards)))
    }

    fn publish(&self) {
        let table = RoutingTable::build(&self.view, self.shards);
        self.snapshot.store(Arc::new(table));
        (self.on_publish)(&self.snapshot.load());
    }

    fn local_member(&self) -> Member {
        self.view
            .get(self.local.as_str())
            .cloned()
            .expect("the local node is always a member of its own view")
    }
}

impl Actor for ShardRouter {
    type Context = Context<Self>;
}

/// Adds capabilities to this node; replies with all of them.
pub(crate) struct RegisterCapabilities(pub(crate) Vec<Capability>);

impl Message for RegisterCapabilities {
    type Result = BTreeSet<Capability>;
}

impl Handler<RegisterCapabilities> for ShardRouter {
    type Result = MessageResult<RegisterCapabilities>;

    fn handle(&mut self, msg: RegisterCapabilities, _: &mut Context<Self>) -> Self::Result {
        let mut local = self.local_member();
        local.capabilities.extend(msg.0);
        let all = local.capabilities.clone();
        if self.view.upsert(local) {
            self.publish();
        }
        MessageResult(all)
    }
}

/// Replaces what this node knows of the other members (from the membership layer). The local
/// member is kept as this node describes itself.
pub(crate) struct UpdateMembers(pub(crate) Vec<Member>);

impl Message for UpdateMembers {
    type Result = ();
}

impl Handler<UpdateMembers> for ShardRouter {
    type Result = ();

    fn handle(&mut self, msg: UpdateMembers, _: &mut Context<Self>) {
        let mut changed = false;
        let incoming: BTreeSet<NodeId> = msg.0.iter().map(|m| m.node.clone()).collect();
        let gone: Vec<NodeId> = self
            .view
            .members()
            .map(|m| m.node.clone())
            .filter(|n| *n != self.local && !incoming.contains(n))
            .collect();
        for node in gone {
            changed |= self.view.remove(node.as_str());
        }
        for member in msg.0.into_iter().filter(|m| m.node != self.local) {
            changed |= self.view.upsert(member);
        }
        if changed {
            self.publish();
        }
    }
}
