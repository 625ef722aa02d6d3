//! What one node believes about the cluster.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::{Capability, MeshError, NodeId};

/// The most capabilities one node may declare.
pub const MAX_CAPABILITIES: usize = 1024;

/// The largest capability set of one node, as the JSON list it gossips, in bytes: it must fit
/// in one gossip datagram (64 KiB) beside the digest of the cluster, or peers would never
/// learn it.
pub const MAX_CAPABILITIES_BYTES: usize = 32 * 1024;

/// Checks that a node may declare `capabilities`: at most [`MAX_CAPABILITIES`] of them, in at
/// most [`MAX_CAPABILITIES_BYTES`] of gossip. Beyond either, a `bad_request` saying which.
pub fn check_capabilities(capabilities: &BTreeSet<Capability>) -> Result<(), MeshError> {
    if capabilities.len() > MAX_CAPABILITIES {
        return Err(MeshError::BadRequest(format!(
            "a node may declare at most {MAX_CAPABILITIES} capabilities; this would make {}",
            capabilities.len()
        )));
    }
    let bytes = serde_json::to_vec(capabilities).map_or(usize::MAX, |v| v.len());
    if bytes > MAX_CAPABILITIES_BYTES {
        return Err(MeshError::BadRequest(format!(
            "the capabilities of a node must fit in {MAX_CAPABILITIES_BYTES} bytes of gossip \
             (as a JSON list); these would take {bytes}"
        )));
    }
    Ok(())
}

/// Whether a member is believed to be running, as this node's lease protocol judges it
/// (see [`Fencing`](crate::Fencing)); `"alive"`, `"suspect"` or `"dead"` in JSON.
///
/// ```
/// use mesh_core::MemberStatus;
///
/// assert_eq!(serde_json::to_value(MemberStatus::Suspect).unwrap(), "suspect");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberStatus {
    /// Heard from within the last lease period; owns shards.
    Alive,
    /// Not heard from for a while, but not fenced yet: it still owns its shards (requests for
    /// them are refused until it answers again or is fenced), because it may still hold a
    /// lease.
    Suspect,
    /// Fenced (its lease has surely expired) or gracefully left; owns nothing.
    Dead,
}

/// One node as seen from this node, in the JSON shape of `GET /cluster`'s `members`.
///
/// ```
/// use mesh_core::{Member, MemberStatus, NodeId};
///
/// let member = Member::alive(NodeId::new("node-1").unwrap(), "127.0.0.1:4000", ["counter"]).unwrap();
/// assert_eq!(member.status, MemberStatus::Alive);
/// let json = serde_json::to_value(&member).unwrap();
/// assert_eq!(json["status"], "alive");
/// assert_eq!(json["capabilities"], serde_json::json!(["counter"]));
/// ```
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
    /// Which life of the node this is: a restart, or a rejoin after being fenced, starts a new
    /// incarnation, which is a new member with no activations.
    #[serde(default)]
    pub incarnation: u64,
    /// Grows with every change of the member's own descriptor (capabilities, leaving) within
    /// one incarnation, so that a newer descriptor wins over a stale one.
    #[serde(default)]
    pub version: u64,
    /// The member announced a graceful leave: it has stopped serving and owns nothing.
    #[serde(default)]
    pub leaving: bool,
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
            incarnation: 0,
            version: 0,
            leaving: false,
        })
    }

    /// The same member in another incarnation.
    pub fn with_incarnation(mut self, incarnation: u64) -> Member {
        self.incarnation = incarnation;
        self
    }

    /// Whether this member may own shards of `capability`: it registered it, has not left, and
    /// has not been fenced. A suspect member keeps its shards until it is fenced: taking them
    /// earlier could start a second activation beside one it still serves.
    pub fn can_own(&self, capability: &str) -> bool {
        self.status != MemberStatus::Dead && !self.leaving && self.capabilities.contains(capability)
    }

    /// Whether `other` describes this node more recently: a newer incarnation, or a newer
    /// version of the same one.
    pub fn is_superseded_by(&self, other: &Member) -> bool {
        (other.incarnation, other.version) > (self.incarnation, self.version)
    }
}

/// The set of members one node knows, with an epoch that grows on every change.
///
/// Two nodes with equal member sets compute equal routing tables, whatever their epochs.
///
/// ```
/// use mesh_core::{Member, MembershipView, NodeId};
///
/// let a = Member::alive(NodeId::new("a").unwrap(), "127.0.0.1:4000", ["counter"]).unwrap();
/// let mut view = MembershipView::default();
/// assert!(view.upsert(a.clone()));
/// // The same descriptor again is no change: the epoch stays, and nothing is re-routed.
/// assert!(!view.upsert(a));
/// assert_eq!(view.epoch(), 1);
/// assert_eq!(view.get("a").unwrap().addr, "127.0.0.1:4000");
///
/// assert!(view.remove("a"));
/// assert_eq!((view.members().count(), view.epoch()), (0, 2));
/// ```
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
mod bounds {
    use super::*;

    fn names(n: usize, len: usize) -> BTreeSet<Capability> {
        (0..n)
            .map(|i| Capability::new(format!("{i:0len$}")).unwrap())
            .collect()
    }

    #[test]
    fn a_capability_set_is_bounded_in_count_and_in_gossip_bytes() {
        assert!(check_capabilities(&names(1024, 8)).is_ok());
        let too_many = check_capabilities(&names(1025, 8)).unwrap_err();
        assert!(too_many.to_string().contains("at most 1024"), "{too_many}");
        // 200 names of 255 bytes are under the count but over the gossip budget.
        let too_big = check_capabilities(&names(200, 255)).unwrap_err();
        assert!(too_big.to_string().contains("bytes of gossip"), "{too_big}");
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
        assert!(
            m.can_own("counter"),
            "a suspect keeps its shards until fenced"
        );
        m.status = MemberStatus::Dead;
        assert!(!m.can_own("counter"));
        m.status = MemberStatus::Alive;
        m.leaving = true;
        assert!(!m.can_own("counter"));
    }

    #[test]
    fn members_serialize_in_the_cluster_route_shape() {
        let json = serde_json::to_value(member("a", &["counter"])).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"node": "a", "addr": "127.0.0.1:1", "capabilities": ["counter"],
                "status": "alive", "incarnation": 0, "version": 0, "leaving": false})
        );
    }
}
