//! What one node believes about the cluster.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::{Capability, MeshError, NodeId};

/// Whether a member is believed to be running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberStatus {
    /// Heard from recently; owns shards.
    Alive,
    /// Not heard from for a while; owns nothing until it is heard from again.
    Suspect,
    /// Gone; owns nothing.
    Dead,
}

/// One node as seen from this node, in the JSON shape of `GET /cluster`'s `members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The node's id.
    pub node: NodeId,
    /// Where the node serves HTTP, `host:port`.
    pub addr: String,
    /// The capabilities the node registered.
    pub capabilities: BTreeSet<Capability>,
    /// Whether it is believed to be running.
    pub status: MemberStatus,
}

impl Member {
    /// An alive member with these capabilities.
    pub fn alive<C: AsRef<str>>(
        node: NodeId,
        addr: impl Into<String>,
        capabilities: impl IntoIterator<Item = C>,
    ) -> Result<Member, MeshError> {
        Ok(Member {
            node,
            addr: addr.into(),
            capabilities: capabilities
                .into_iter()
                .map(Capability::new)
                .collect::<Result<_, _>>()?,
            status: MemberStatus::Alive,
        })
    }

    /// Whether this member may own shards of `capability`.
    pub fn can_own(&self, capability: &str) -> bool {
        self.status == MemberStatus::Alive && self.capabilities.contains(capability)
    }
}

/// The set of members one node knows, with an epoch that grows on every change.
///
/// Two nodes with equal member sets compute equal routing tables, whatever their epochs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MembershipView {
    epoch: u64,
    members: BTreeMap<NodeId, Member>,
}

impl MembershipView {
    /// How many changes this view has seen.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Adds or replaces a member. Returns whether anything changed (the epoch then grows).
    pub fn upsert(&mut self, member: Member) -> bool {
        if self.members.get(&member.node) == Some(&member) {
            return false;
        }
        self.members.insert(member.node.clone(), member);
        self.epoch += 1;
        true
    }

    /// Forgets a member. Returns whether it was known.
    pub fn remove(&mut self, node: &str) -> bool {
        let removed = self.members.remove(node).is_some();
        if removed {
            self.epoch += 1;
        }
        removed
    }

    /// One member by id.
    pub fn get(&self, node: &str) -> Option<&Member> {
        self.members.get(node)
    }

    /// Every member, ordered by node id.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(node: &str, caps: &[&str]) -> Member {
        Member::alive(NodeId::new(node).unwrap(), "127.0.0.1:1", caps.iter()).unwrap()
    }

    #[test]
    fn epoch_grows_only_on_real_changes() {
        let mut view = MembershipView::default();
        assert!(view.upsert(member("a", &["counter"])));
        assert_eq!(view.epoch(), 1);
        assert!(!view.upsert(member("a", &["counter"])));
        assert_eq!(view.epoch(), 1);
        assert!(view.upsert(member("a", &["counter", "game"])));
        assert!(view.remove("a"));
        assert!(!view.remove("a"));
        assert_eq!(view.epoch(), 3);
    }

    #[test]
    fn only_alive_members_with_the_capability_may_own() {
        let mut m = member("a", &["counter"]);
        assert!(m.can_own("counter"));
        assert!(!m.can_own("game"));
        m.status = MemberStatus::Suspect;
        assert!(!m.can_own("counter"));
    }

    #[test]
    fn members_serialize_in_the_cluster_route_shape() {
        let json = serde_json::to_value(member("a", &["counter"])).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"node": "a", "addr": "127.0.0.1:1", "capabilities": ["counter"], "status": "alive"})
        );
    }
}
