//! Owner selection: rendezvous hashing over the nodes that may own a capability, precomputed
//! into one array per capability so that routing a call is an index, not a hash per node.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use rendezvous_hash::{NodeHasher, RendezvousNodes};
use xxhash_rust::xxh3::Xxh3;

use crate::{Member, MembershipView, ShardCount, ShardId};

/// The rendezvous weight of (node, shard): XXH3-64 over the node id's UTF-8 bytes, then the
/// item as written by [`Hash`] into a hasher that encodes integers little-endian.
///
/// Shards are `u32`, so the item is always 4 little-endian bytes: the weight is the same on
/// every platform and build, unlike the crate's default (`DefaultHasher`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StableNodeHasher;

impl NodeHasher<&str> for StableNodeHasher {
    fn hash<T: Hash>(&self, node: &&str, item: &T) -> u64 {
        let mut hasher = LittleEndianXxh3(Xxh3::new());
        hasher.0.update(node.as_bytes());
        item.hash(&mut hasher);
        hasher.0.digest()
    }
}

/// std's `Hasher` writes integers in native byte order; pinning little-endian keeps weights
/// equal across architectures.
struct LittleEndianXxh3(Xxh3);

impl Hasher for LittleEndianXxh3 {
    fn finish(&self) -> u64 {
        self.0.digest()
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn write_u16(&mut self, i: u16) {
        self.0.update(&i.to_le_bytes());
    }
    fn write_u32(&mut self, i: u32) {
        self.0.update(&i.to_le_bytes());
    }
    fn write_u64(&mut self, i: u64) {
        self.0.update(&i.to_le_bytes());
    }
    fn write_usize(&mut self, i: usize) {
        self.0.update(&(i as u64).to_le_bytes());
    }
}

/// The owner of every shard for one capability: `owner[shard]` indexes the routing table's
/// members.
#[derive(Debug, Clone)]
pub(crate) struct OwnerTable {
    /// Shared by every capability with the same candidate nodes.
    owners: Arc<[u16]>,
}

impl OwnerTable {
    fn build(members: &[Member], candidates: &[usize], shards: ShardCount) -> OwnerTable {
        let mut nodes = RendezvousNodes::new(StableNodeHasher);
        for &i in candidates {
            nodes.insert(members[i].node.as_str());
        }
        let index: HashMap<&str, u16> = candidates
            .iter()
            .map(|&i| (members[i].node.as_str(), i as u16))
            .collect();
        let owners = shards
            .iter()
            .map(|shard| {
                let winner = nodes
                    .calc_candidates(&shard.0)
                    .next()
                    .expect("a table is built only for a non-empty candidate set");
                index[winner]
            })
            .collect();
        OwnerTable { owners }
    }
}

/// An immutable routing snapshot: members, and the owner of every shard of every capability.
///
/// Built once per membership change and shared read-only by every caller.
///
/// ```
/// use mesh_core::{Member, MembershipView, NodeId, RoutingTable, ShardCount};
///
/// let mut view = MembershipView::default();
/// view.upsert(Member::alive(NodeId::new("a").unwrap(), "a:1", ["counter"]).unwrap());
/// let table = RoutingTable::build(&view, ShardCount::default());
/// let shard = table.shards().shard_for("counter_1");
/// assert_eq!(table.owner(shard, "counter").unwrap().node.as_str(), "a");
/// assert!(table.owner(shard, "game").is_none());
/// ```
#[derive(Debug, Clone)]
pub struct RoutingTable {
    epoch: u64,
    shards: ShardCount,
    members: Arc<[Member]>,
    tables: HashMap<String, OwnerTable>,
}

impl RoutingTable {
    /// Computes owner tables for every capability some alive member registered.
    pub fn build(view: &MembershipView, shards: ShardCount) -> RoutingTable {
        let members: Arc<[Member]> = view.members().cloned().collect();
        assert!(
            members.len() <= usize::from(u16::MAX),
            "more than 65535 members"
        );
        let mut candidates: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, member) in members.iter().enumerate() {
            for capability in &member.capabilities {
                if member.can_own(capability.as_str()) {
                    candidates.entry(capability.as_str()).or_default().push(i);
                }
            }
        }
        // Capabilities registered by the same nodes have the same owners: one table each set
        // of candidates, however many capabilities share it (a node may declare 1024).
        let mut built: HashMap<Vec<usize>, OwnerTable> = HashMap::new();
        let tables = candidates
            .into_iter()
            .map(|(capability, nodes)| {
                let table = built
                    .entry(nodes)
                    .or_insert_with_key(|nodes| OwnerTable::build(&members, nodes, shards))
                    .clone();
                (capability.to_owned(), table)
            })
            .collect();
        RoutingTable {
            epoch: view.epoch(),
            shards,
            members: members.clone(),
            tables,
        }
    }

    /// The epoch of the membership view this table was built from.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The shard count the table was built for.
    pub fn shards(&self) -> ShardCount {
        self.shards
    }

    /// Every member of the view, alive or not, ordered by node id.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The owner of `shard` for `capability`, or `None` if no alive member registered it.
    pub fn owner(&self, shard: ShardId, capability: &str) -> Option<&Member> {
        let table = self.tables.get(capability)?;
        let index = *table.owners.get(shard.0 as usize)?;
        Some(&self.members[usize::from(index)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemberStatus, NodeId};

    fn view(nodes: &[(&str, &[&str])]) -> MembershipView {
        let mut view = MembershipView::default();
        for (node, caps) in nodes {
            let addr = format!("{node}:1");
            view.upsert(Member::alive(NodeId::new(node).unwrap(), addr, caps.iter()).unwrap());
        }
        view
    }

    fn owners(table: &RoutingTable, capability: &str, shards: &[u32]) -> Vec<String> {
        shards
            .iter()
            .map(|&s| {
                table
                    .owner(ShardId(s), capability)
                    .map(|m| m.node.to_string())
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Pins owner selection (cross-checked with an independent Python implementation:
    /// max of xxh3_64(node id bytes ++ shard as u32 LE), ties to the larger node id): nodes of different builds must agree on owners. Never update these
    /// to make a change pass.
    #[test]
    fn golden_owners_are_stable() {
        let all = ["counter"];
        let table = RoutingTable::build(
            &view(&[("node-a", &all), ("node-b", &all), ("node-c", &all)]),
            ShardCount::default(),
        );
        assert_eq!(
            owners(&table, "counter", &[0, 1, 2, 3, 100, 2464, 4095]),
            GOLDEN_ABC
        );
    }

    const GOLDEN_ABC: [&str; 7] = [
        "node-c", "node-a", "node-a", "node-c", "node-a", "node-a", "node-c",
    ];

    #[test]
    fn every_node_with_the_same_view_computes_the_same_owners() {
        let nodes: &[(&str, &[&str])] = &[("x", &["c"]), ("y", &["c"]), ("z", &["c"])];
        let mut reversed = MembershipView::default();
        for (node, caps) in nodes.iter().rev() {
            reversed.upsert(Member::alive(NodeId::new(node).unwrap(), "h:1", caps.iter()).unwrap());
        }
        let a = RoutingTable::build(&view(nodes), ShardCount::default());
        let b = RoutingTable::build(&reversed, ShardCount::default());
        let all: Vec<u32> = (0..4096).collect();
        assert_eq!(owners(&a, "c", &all), owners(&b, "c", &all));
    }

    #[test]
    fn only_alive_nodes_with_the_capability_own_shards() {
        let mut v = view(&[
            ("a", &["counter"]),
            ("b", &["game"]),
            ("c", &["counter", "game"]),
        ]);
        let table = RoutingTable::build(&v, ShardCount::new(64).unwrap());
        let all: Vec<u32> = (0..64).collect();
        assert!(owners(&table, "counter", &all)
            .iter()
            .all(|n| n == "a" || n == "c"));
        assert!(owners(&table, "game", &all)
            .iter()
            .all(|n| n == "b" || n == "c"));
        assert!(table.owner(ShardId(0), "nothing").is_none());

        let mut dead = v.get("c").unwrap().clone();
        dead.status = MemberStatus::Dead;
        v.upsert(dead);
        let table = RoutingTable::build(&v, ShardCount::new(64).unwrap());
        assert!(owners(&table, "counter", &all).iter().all(|n| n == "a"));
        assert_eq!(table.members().len(), 3);
    }

    #[test]
    fn a_leaving_node_moves_only_its_own_shards() {
        let caps: &[&str] = &["c"];
        let before = RoutingTable::build(
            &view(&[("a", caps), ("b", caps), ("c", caps)]),
            ShardCount::default(),
        );
        let after = RoutingTable::build(&view(&[("a", caps), ("b", caps)]), ShardCount::default());
        let all: Vec<u32> = (0..4096).collect();
        let (before, after) = (owners(&before, "c", &all), owners(&after, "c", &all));
        for (old, new) in before.iter().zip(&after) {
            if old != "c" {
                assert_eq!(old, new, "a shard moved between surviving nodes");
            }
        }
        let share = before.iter().filter(|n| *n == "c").count();
        assert!(
            (1100..1650).contains(&share),
            "node c owned {share} of 4096 shards"
        );
    }
}
