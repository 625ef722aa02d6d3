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
//! - reaches other nodes through a [`RemoteTransport`](provider::RemoteTransport) (HTTP in
//!   `mesh-http`), re-sending a
//!   request only while it was certainly not delivered ([`HopError`](provider::HopError));
//! - serves only while it may: the `ShardRouter` runs the lease protocol
//!   ([`mesh_core::Fencing`]) on a thread of its own and opens a serving gate that every
//!   delivery checks, so at most one activation of an identity answers at any moment, through
//!   joins, leaves, deaths, pauses and partitions ([`Mesh::readiness`] says why a node does
//!   not serve).
//!
//! Every call has a deadline (default 5 s) and every mailbox a bound
//! ([`DEFAULT_MAILBOX_CAPACITY`]).
//!
//! See [`MeshActor`] for an actor and [`Mesh`] for a node. Transports, membership layers and
//! front ends plug in through [`provider`].

extern crate self as mesh_actix;

mod activation;
mod actor;
mod builder;
mod gate;
mod mesh;
mod metrics;
pub mod provider;
mod registry;
mod router;
pub mod store;
mod transport;

pub use actor::{Delivery, HandlesPayload, InitError, MeshActor, MeshInit, Payload, Snapshot};
pub use builder::MeshBuilder;
pub use mesh::{
    Mesh, MeshConfig, Placement, StartError, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAILBOX_CAPACITY,
};
pub use mesh_core::{
    ActorId, Capability, ErrorCode, LeaseConfig, Member, MemberStatus, MeshError, Module, NodeId,
    Reply, Request, RoutingTable, ShardCount, ShardId, DEFAULT_TIMEOUT,
};
pub use mesh_macros::MeshActor;
pub use metrics::{LatencyStats, ModuleStats, RequestStats, HOP_OUTCOMES, LATENCY_BUCKETS};
pub use registry::RegistryStats;
pub use transport::InProcessTransport;

/// The actix crate mesh runs on, re-exported so that an actor is written against the very
/// version mesh uses, without a dependency of its own: `use mesh_actix::actix::prelude::*;`
/// (or add `actix = "0.13"` beside mesh; both name the same crate).
pub use actix;

/// Glue for `#[derive(MeshActor)]` and re-exports for actor authors. Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::activation::{handle_envelope, Envelope, EnvelopeResponse};
    pub use crate::actor::{IntoMeshResponse, MeshResponse, StateGlue};
    pub use actix;
    pub use serde_json;
}
