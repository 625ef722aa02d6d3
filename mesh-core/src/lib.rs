//! The pure core of mesh: everything about *where* an actor lives and *what* travels
//! between nodes, with no actix, no async runtime and no I/O.
//!
//! An actor identity is `(capability, module, id)`. Its id picks a **shard**
//! (`shard = xxh3_64(id) mod shards`, see [`ShardCount::shard_for`]); the shard picks an
//! **owner** among the live nodes that registered the request's **capability**, by rendezvous
//! hashing (see [`RoutingTable`]). Both functions are pure: every node holding the same
//! [`MembershipView`] computes the same owner, and golden tests pin them across builds.
//!
//! ```
//! use mesh_core::{MembershipView, Member, NodeId, RoutingTable, ShardCount};
//!
//! let mut view = MembershipView::default();
//! view.upsert(Member::alive(NodeId::new("a").unwrap(), "127.0.0.1:4000", ["counter"]).unwrap());
//! view.upsert(Member::alive(NodeId::new("b").unwrap(), "127.0.0.1:4001", ["counter"]).unwrap());
//!
//! let shards = ShardCount::default();
//! let table = RoutingTable::build(&view, shards);
//! let shard = shards.shard_for("counter_1");
//! let owner = table.owner(shard, "counter").expect("two capable nodes");
//! assert!(owner.node.as_str() == "a" || owner.node.as_str() == "b");
//! assert!(table.owner(shard, "game").is_none());
//! ```

mod delivery;
mod error;
mod fencing;
mod handoff;
mod ids;
mod membership;
mod placement;
mod request;
mod shard;

pub use delivery::{HopError, Refusal};
pub use error::{ErrorCode, MeshError};
pub use fencing::{is_quorum, Fencing, FencingEvent, LeaseConfig, RenewReply, RenewRequest};
pub use handoff::Handoff;
pub use ids::{ActorId, Capability, Module, NodeId, MAX_ID_LEN, MAX_NAME_LEN};
pub use membership::{
    check_capabilities, Member, MemberStatus, MembershipView, MAX_CAPABILITIES,
    MAX_CAPABILITIES_BYTES,
};
pub use placement::RoutingTable;
pub use request::{Reply, Request, DEFAULT_TIMEOUT, MAX_TIMEOUT};
pub use shard::{ShardCount, ShardId, DEFAULT_SHARDS};
