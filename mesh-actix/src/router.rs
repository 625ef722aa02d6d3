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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

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
        publications: Arc<AtomicUsize>,
        shards: ShardCount,
    }

    impl Fixture {
        /// A router for `local` (no capabilities yet), counting its publications.
        fn start() -> Fixture {
            let local = member("local", &[]);
            let shards = ShardCount::new(16).unwrap();
            let snapshot = ShardRouter::initial(&local, shards);
            let publications = Arc::new(AtomicUsize::new(0));
            let on_publish: OnPublish = {
                let (publications, snapshot) = (publications.clone(), snapshot.clone());
                Box::new(move |table: &RoutingTable| {
                    // `on_publish` sees the table that was just stored.
                    assert_eq!(table.epoch(), snapshot.load().epoch());
                    publications.fetch_add(1, Ordering::SeqCst);
                })
            };
            let router = ShardRouter::new(local, shards, snapshot.clone(), on_publish).start();
            Fixture {
                router,
                snapshot,
                publications,
                shards,
            }
        }

        fn publications(&self) -> usize {
            self.publications.load(Ordering::SeqCst)
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
                .map(|shard: ShardId| table.owner(capability, shard).map(|m| m.node.clone()))
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
        let f = Fixture::start();
        // The constructor publishes once, before the actor runs.
        assert_eq!(f.publications(), 1);
        let epoch = f.epoch();
        assert_eq!(f.owners("counter"), BTreeSet::from([None]));

        let all = f.register(&["counter"]).await;
        assert_eq!(names(&all), ["counter"]);
        assert_eq!(f.publications(), 2);
        assert!(f.epoch() > epoch);
        assert_eq!(f.owners("counter"), BTreeSet::from([Some(node("local"))]));

        let all = f.register(&["game"]).await;
        assert_eq!(names(&all), ["counter", "game"]);
        assert_eq!(f.publications(), 3);
        assert_eq!(f.owners("game"), BTreeSet::from([Some(node("local"))]));
        assert_eq!(f.owners("counter"), BTreeSet::from([Some(node("local"))]));
    }

    #[actix_rt::test]
    async fn registering_known_capabilities_does_not_republish() {
        let f = Fixture::start();
        f.register(&["counter", "game"]).await;
        let (epoch, publications) = (f.epoch(), f.publications());

        let all = f.register(&["game"]).await;
        assert_eq!(names(&all), ["counter", "game"]);
        let all = f.register(&[]).await;
        assert_eq!(names(&all), ["counter", "game"]);
        assert_eq!((f.epoch(), f.publications()), (epoch, publications));
    }

    #[actix_rt::test]
    async fn update_members_adds_and_removes_other_members() {
        let f = Fixture::start();
        f.register(&["counter"]).await;
        let local = f.members()[0].clone();
        let (a, b) = (member("a", &["counter"]), member("b", &["game"]));

        let (epoch, publications) = (f.epoch(), f.publications());
        f.update(vec![a.clone(), b.clone()]).await;
        let nodes: Vec<_> = f.members().into_iter().map(|m| m.node).collect();
        assert_eq!(nodes, [node("a"), node("b"), node("local")]);
        assert!(f.epoch() > epoch);
        assert_eq!(f.publications(), publications + 1);
        assert_eq!(f.owners("game"), BTreeSet::from([Some(node("b"))]));
        assert!(f.owners("counter").contains(&Some(node("a"))));

        // The same members again change nothing.
        let (epoch, publications) = (f.epoch(), f.publications());
        f.update(vec![b.clone(), a.clone()]).await;
        assert_eq!((f.epoch(), f.publications()), (epoch, publications));

        // A member missing from the update is forgotten; a changed one is replaced.
        let b_dead = Member {
            status: MemberStatus::Dead,
            ..b.clone()
        };
        f.update(vec![b_dead.clone()]).await;
        assert_eq!(f.members(), [b_dead, local.clone()]);
        assert_eq!(f.owners("game"), BTreeSet::from([None]));
        assert_eq!(f.owners("counter"), BTreeSet::from([Some(node("local"))]));
        assert_eq!(f.publications(), publications + 1);

        f.update(Vec::new()).await;
        assert_eq!(f.members(), [local]);
        assert_eq!(f.publications(), publications + 2);
    }

    #[actix_rt::test]
    async fn update_members_keeps_the_local_member_as_the_router_describes_it() {
        let f = Fixture::start();
        f.register(&["counter"]).await;
        let local = f.members()[0].clone();
        let (epoch, publications) = (f.epoch(), f.publications());

        // Another node's idea of this node (stale address, other capabilities, dead) is ignored.
        let impostor = Member {
            addr: "10.9.9.9:1".into(),
            status: MemberStatus::Dead,
            ..member("local", &["game"])
        };
        f.update(vec![impostor.clone()]).await;
        assert_eq!(f.members(), std::slice::from_ref(&local));
        assert_eq!((f.epoch(), f.publications()), (epoch, publications));

        // Also alongside real members, and an update without it does not remove it.
        f.update(vec![impostor, member("a", &["game"])]).await;
        assert_eq!(f.members(), [member("a", &["game"]), local.clone()]);
        f.update(Vec::new()).await;
        assert_eq!(f.members(), [local]);
        assert_eq!(f.owners("counter"), BTreeSet::from([Some(node("local"))]));
    }
}
