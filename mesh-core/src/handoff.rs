//! The release half of a planned move, as it travels from the old owner to the new one.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{ActorId, Capability, Module, NodeId};

/// What the old owner of one identity sends its new owner when a join, a graceful leave or
/// a capability change moves the identity: sent after the old activation has stopped (no
/// handler of it runs any more), and before the old owner acknowledges the change that lets
/// the new owner serve, so that the new owner never serves the identity without it.
///
/// `state` is the actor's snapshot for types that can take one (`#[mesh(snapshot)]`); the new
/// owner restores the activation from it instead of calling `init`. Without it the new owner
/// starts afresh, as after a crash.
///
/// ```
/// use mesh_core::{ActorId, Capability, Handoff, Module, NodeId};
/// use serde_json::json;
///
/// let handoff = Handoff {
///     capability: Capability::new("counter").unwrap(),
///     module: Module::new("Counter").unwrap(),
///     id: ActorId::new("counter_1").unwrap(),
///     init_arg: None,
///     state: Some(json!({"count": 13})),
///     from: NodeId::new("node-a").unwrap(),
///     incarnation: 7,
/// };
/// let wire = serde_json::to_vec(&handoff).unwrap();
/// assert_eq!(serde_json::from_slice::<Handoff>(&wire).unwrap(), handoff);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Handoff {
    /// The identity's capability.
    pub capability: Capability,
    /// The identity's actor type.
    pub module: Module,
    /// The identity's id.
    pub id: ActorId,
    /// The `init_arg` the activation was started with: a restart after a crash on the new
    /// owner calls `init` with it, as it would have on the old one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_arg: Option<Value>,
    /// The actor's state when it stopped, if its type can snapshot it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Value>,
    /// The old owner.
    pub from: NodeId,
    /// The old owner's incarnation, for the logs of the new one.
    pub incarnation: u64,
}
