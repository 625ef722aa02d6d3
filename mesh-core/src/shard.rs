//! The stable shard function.

use std::fmt;
use std::num::NonZeroU32;

use serde::{Deserialize, Serialize};

/// The default number of shards, as in the Elixir Mesh.
pub const DEFAULT_SHARDS: u32 = 4096;

/// A shard number, in `0..ShardCount`.
///
/// ```
/// use mesh_core::{ShardCount, ShardId};
///
/// let shards = ShardCount::default(); // 4096
/// let shard: ShardId = shards.shard_for("counter_1");
/// assert!(shard.0 < shards.get());
/// assert_eq!(shard, shards.shard_for("counter_1"), "stable");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ShardId(pub u32);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How many shards the id space is cut into. Every node of a cluster must use the same count.
///
/// ```
/// use mesh_core::ShardCount;
///
/// assert_eq!(ShardCount::default().get(), 4096);
/// assert_eq!(ShardCount::new(16).unwrap().get(), 16);
/// assert!(ShardCount::new(0).is_none());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShardCount(NonZeroU32);

impl ShardCount {
    /// A shard count; `None` for zero.
    pub fn new(count: u32) -> Option<Self> {
        NonZeroU32::new(count).map(ShardCount)
    }

    /// The number of shards.
    pub fn get(self) -> u32 {
        self.0.get()
    }

    /// The shard of an actor id: `xxh3_64(utf8 bytes of id, seed 0) mod shards`.
    ///
    /// XXH3 is specified byte for byte and independent of platform, endianness and compiler,
    /// so every node of every build computes the same shard (std's `DefaultHasher` promises
    /// none of that). The golden test below pins it.
    ///
    /// ```
    /// use mesh_core::{ShardCount, ShardId};
    /// assert_eq!(ShardCount::default().shard_for("counter_1"), ShardId(1395));
    /// ```
    pub fn shard_for(self, id: &str) -> ShardId {
        let hash = xxhash_rust::xxh3::xxh3_64(id.as_bytes());
        ShardId((hash % u64::from(self.0.get())) as u32)
    }

    /// Every shard, in order.
    pub fn iter(self) -> impl Iterator<Item = ShardId> {
        (0..self.0.get()).map(ShardId)
    }
}

impl Default for ShardCount {
    fn default() -> Self {
        ShardCount::new(DEFAULT_SHARDS).expect("non-zero")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the shard function (values cross-checked with Python's `xxhash.xxh3_64_intdigest`): if this fails, nodes of different builds would disagree
    /// about where actors live. Never update these numbers to make a change pass.
    #[test]
    fn golden_shards_are_stable() {
        let shards = ShardCount::default();
        let golden: Vec<(&str, u32)> = GOLDEN.to_vec();
        let actual: Vec<(&str, u32)> = GOLDEN
            .iter()
            .map(|(id, _)| (*id, shards.shard_for(id).0))
            .collect();
        assert_eq!(actual, golden);
    }

    const GOLDEN: [(&str, u32); 8] = [
        ("counter_1", 1395),
        ("counter_2", 1436),
        ("player_123", 326),
        ("crasher_1", 807),
        ("", 1218),
        ("é🦀", 3194),
        ("a", 3615),
        (
            "a-much-longer-actor-identifier-with-more-than-sixty-four-bytes-in-it-0001",
            2914,
        ),
    ];

    #[test]
    fn shards_stay_in_range_for_any_count() {
        for count in [1, 2, 7, 4096, 65_536] {
            let shards = ShardCount::new(count).unwrap();
            for i in 0..1000 {
                assert!(shards.shard_for(&format!("id-{i}")).0 < count);
            }
        }
        assert!(ShardCount::new(0).is_none());
    }

    #[test]
    fn shards_spread_ids_evenly() {
        let shards = ShardCount::new(16).unwrap();
        let mut buckets = [0u32; 16];
        for i in 0..16_000 {
            buckets[shards.shard_for(&format!("user-{i}")).0 as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&n| (800..1200).contains(&n)),
            "{buckets:?}"
        );
    }
}
