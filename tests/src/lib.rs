//! Harness for the integration tests of `mesh-tests`.
//!
//! Tests that need real processes (signals, gossip, flags, kill -9, SIGSTOP, partitions) start
//! real `mesh-node` programs and talk to them over HTTP, exactly as a user would; the rest run in
//! process. One module per job:
//!
//! - [`node`]: [`MeshNode`], one real node (started by [`NodeBuilder::start`] on a port the OS
//!   picks, ready once `GET /health` answers, killed and reaped on drop, and unable to outlive the
//!   test process), and the [`Program`] it runs: `mesh-node`, or the embedded example's service;
//!   [`lifeline`] is the program's half of "cannot outlive".
//! - [`client`]: [`Client`], an HTTP client bound to one node, with a timeout on every request,
//!   returning [`Resp`] values that carry assertion helpers.
//! - [`in_process`]: [`InProcessNode`], a node in the test process behind `actix_web::test`, with
//!   the same request methods as [`Client`] (both implement [`Api`]), for tests that need no real
//!   process.
//! - [`cluster`]: [`start_cluster`] and [`wait_converged`] for clusters of real nodes.
//! - [`netns`]: [`Network`], hosts in network namespaces of their own, to cut apart and heal.
//! - [`tls`]: [`Certs`], certificates a test generates (self-signed, or from a [`TestCa`]) for
//!   nodes serving TLS ([`NodeBuilder::tls`]).
//! - [`raw`]: [`RawConn`], a raw TCP connection to a node (from any loopback IP) that sends
//!   exactly what a test gives it and tells when the node closes it, for the read deadlines and
//!   connection bounds.
//! - [`postgres`]: [`PostgresServer`], a real PostgreSQL server in a temporary directory for the
//!   tests of the PostgreSQL state store, which a test can kill, pause and start again.
//! - [`observe`]: `Counter` calls as a client sees them, checked against the contract's "one live
//!   activation" rule.
//! - [`browser`]: [`Chromium`], Debian's `chromium` headless against a page a node serves: the
//!   DOM after its scripts ran, and screenshots; each run killed (with its helpers) on every path.
//! - [`bodies`] and [`util`]: request bodies for the example actors, [`eventually`] (polling
//!   instead of fixed sleeps), unique names, Prometheus text, [`serial`].

/// Every ```rust block of README.md, compiled (and run, unless marked `no_run`) as a doc-test
/// of this crate, which depends on everything a reader's crate would: a README example that
/// stops compiling fails `cargo test`.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub mod bodies;
pub mod browser;
pub mod client;
pub mod cluster;
pub mod in_process;
pub mod lifeline;
pub mod netns;
pub mod node;
pub mod observe;
pub mod postgres;
pub mod raw;
pub mod tls;
pub mod util;

pub use bodies::{account, counter, crasher, game, req, sleeper, with_field, ALL_CAPABILITIES};
pub use browser::{Chromium, BROWSER_TIMEOUT, CHROMIUM};
pub use client::{Api, Client, Resp, REQUEST_TIMEOUT};
pub use cluster::{disagreement, member, start_cluster, wait_converged};
pub use in_process::{InProcessBuilder, InProcessNode};
pub use netns::{Host, Network};
pub use node::{node_bin, MeshNode, NodeBuilder, Program, READY_TIMEOUT};
pub use postgres::PostgresServer;
pub use raw::{Closed, RawConn};
pub use serde_json::{json, Value};
pub use tls::{Certs, NodeTls, TestCa};
pub use util::{
    eventually, free_port, metric_value, metrics, quiet_intentional_panics, serial, strings,
    unique, EXAMPLE_CRASH,
};
