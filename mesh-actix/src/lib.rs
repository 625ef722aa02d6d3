//! The mesh runtime on one node, on actix.
//!
//! A user writes an ordinary actix actor that handles [`Payload`], says how to build its state
//! ([`MeshInit`]) and derives [`MeshActor`]. A [`Mesh`] then:
//! - routes each request by its id's shard to the owning node for its capability, reading an
//!   immutable routing snapshot that the `ShardRouter` actor publishes (no lock, no message
//!   on the hot path);
//! - on the owner, finds the activation in the `ActivationRegistry` (lock
//!   striped by shard) or starts it under an actix `Supervisor` on the caller's own arbiter
//!   (an actix-web worker, say: later calls from there never cross threads) or, for callers
//!   outside actix, on one arbiter of a pool spread over all cores ([`Placement`]);
//! - delivers the payload by message, with no JSON encoding, through a guard that catches a
//!   panic: the call fails with `actor_crashed`, the supervisor restarts the actor in place
//!   with fresh state from `init` and a new pid, and nothing else on the node notices;
//! - reaches other nodes through a [`RemoteTransport`] (HTTP in `mesh-http`), re-sending a
//!   request only while it was certainly not delivered ([`HopError`]);
//! - serves only while it may: the `ShardRouter` runs the lease protocol
//!   ([`mesh_core::Fencing`]) on a thread of its own and opens a serving gate that every
//!   delivery checks, so at most one activation of an identity answers at any moment, through
//!   joins, leaves, deaths, pauses and partitions ([`Mesh::readiness`] says why a node does
//!   not serve).
//!
//! Every call has a deadline (default 5 s) and every mailbox a bound
//! ([`DEFAULT_MAILBOX_CAPACITY`]).
//!
//! See [`MeshActor`] for an actor and [`Mesh`] for a node.

extern crate self as mesh_actix;

mod activation;
mod actor;
mod gate;
mod mesh;
mod metrics;
mod registry;
mod router;
pub mod store;
mod transport;

pub use actor::{Delivery, HandlesPayload, InitError, MeshActor, MeshInit, Payload, Snapshot};
pub use mesh::{
    Mesh, MeshConfig, Origin, Placement, StartError, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAILBOX_CAPACITY,
};
pub use mesh_core::{
    ActorId, Capability, ErrorCode, Handoff, HopError, LeaseConfig, Member, MemberStatus,
    MeshError, Module, NodeId, Refusal, RenewReply, RenewRequest, Reply, Request, RoutingTable,
    ShardCount, ShardId,
};
pub use mesh_macros::MeshActor;
pub use metrics::{LatencyStats, ModuleStats, RequestStats, HOP_OUTCOMES, LATENCY_BUCKETS};
pub use registry::RegistryStats;
pub use router::ShardRouter;
pub use transport::{InProcessTransport, RemoteTransport};

/// Glue for `#[derive(MeshActor)]` and re-exports for actor authors. Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::activation::{handle_envelope, Envelope, EnvelopeResponse};
    pub use crate::actor::{IntoMeshResponse, MeshResponse, StateGlue};
    pub use actix;
    pub use serde_json;
}
