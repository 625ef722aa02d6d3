//! Counters of calls and casts by outcome, of hops to other nodes by outcome, and latency
//! histograms of both: plain atomics, written on every request and read by whoever renders
//! them (e.g. `GET /metrics`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

use mesh_core::{ErrorCode, HopError, MeshError, Refusal};

use crate::actor::Delivery;

/// Upper bounds of the latency histogram buckets, in seconds (Prometheus `le` labels).
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// One slot per outcome: `ok`, then every error code in contract order.
const OUTCOMES: usize = 1 + ErrorCode::ALL.len();

/// What a hop to another node came to, as `mesh_hops_total{outcome}` names it.
pub const HOP_OUTCOMES: [&str; 4] = ["ok", "error", "refused", "maybe_delivered"];

fn hop_outcome_index(result: Result<(), &HopError>) -> usize {
    match result {
        Ok(()) => 0,
        // The owner handled it and answered with an error.
        Err(HopError::Failed(_)) => 1,
        // Certainly not executed (refused, never connected): it may have been sent again.
        Err(HopError::NotDelivered(..)) => 2,
        Err(HopError::MaybeDelivered(_)) => 3,
    }
}

/// A latency histogram: per-bucket (not cumulative) counts, the last slot `+Inf`.
#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn record(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|le| seconds <= *le)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
    }

    fn snapshot(&self) -> LatencyStats {
        LatencyStats {
            buckets: self
                .buckets
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            sum: Duration::from_nanos(self.sum_nanos.load(Ordering::Relaxed)),
        }
    }
}

#[derive(Default)]
pub(crate) struct RequestMetrics {
    calls: [AtomicU64; OUTCOMES],
    casts: [AtomicU64; OUTCOMES],
    latency: Histogram,
    hops: [AtomicU64; HOP_OUTCOMES.len()],
    /// The refused hops by reason, in [`Refusal::ALL`] order.
    hop_refusals: [AtomicU64; Refusal::ALL.len()],
    hop_latency: Histogram,
}

fn outcome_index(result: Result<(), &MeshError>) -> usize {
    match result {
        Ok(()) => 0,
        Err(e) => {
            1 + ErrorCode::ALL
                .iter()
                .position(|c| *c == e.code())
                .expect("every code is in ALL")
        }
    }
}

impl RequestMetrics {
    pub(crate) fn record(
        &self,
        delivery: Delivery,
        result: Result<(), &MeshError>,
        elapsed: Duration,
    ) {
        let index = outcome_index(result);
        match delivery {
            Delivery::Call => {
                self.calls[index].fetch_add(1, Ordering::Relaxed);
                self.latency.record(elapsed);
            }
            Delivery::Cast => {
                self.casts[index].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Counts a request refused before it could be routed; it has no latency to speak of.
    pub(crate) fn record_rejection(&self, delivery: Delivery, error: &MeshError) {
        let index = outcome_index(Err(error));
        match delivery {
            Delivery::Call => &self.calls[index],
            Delivery::Cast => &self.casts[index],
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one hop to another node (a call or cast forwarded there) and its latency.
    pub(crate) fn record_hop(&self, result: Result<(), &HopError>, elapsed: Duration) {
        self.hops[hop_outcome_index(result)].fetch_add(1, Ordering::Relaxed);
        if let Err(HopError::NotDelivered(refusal, _)) = result {
            let reason = Refusal::ALL.iter().position(|r| r == refusal);
            let reason = reason.expect("every refusal is in ALL");
            self.hop_refusals[reason].fetch_add(1, Ordering::Relaxed);
        }
        self.hop_latency.record(elapsed);
    }

    pub(crate) fn snapshot(&self) -> RequestStats {
        let load = |a: &[AtomicU64]| a.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        RequestStats {
            calls: load(&self.calls),
            casts: load(&self.casts),
            latency: self.latency.snapshot(),
            hops: load(&self.hops),
            hop_refusals: load(&self.hop_refusals),
            hop_latency: self.hop_latency.snapshot(),
        }
    }
}

/// A reading of a latency histogram, in the shape of a Prometheus histogram.
///
/// ```
/// use mesh_actix::{Mesh, NodeId, Request, LATENCY_BUCKETS};
/// # use mesh_actix::{InitError, MeshActor, MeshInit, Payload};
/// # use mesh_actix::actix::{Actor, Context, Handler, MessageResult};
/// # use serde_json::{json, Value};
/// # #[derive(MeshActor)]
/// # struct Counter { count: u64 }
/// # impl Actor for Counter { type Context = Context<Self>; }
/// # impl MeshInit for Counter {
/// #     fn init(_: &mesh_actix::ActorId, _: Option<&Value>) -> Result<Self, InitError> { Ok(Counter { count: 0 }) }
/// # }
/// # impl Handler<Payload> for Counter {
/// #     type Result = MessageResult<Payload>;
/// #     fn handle(&mut self, _: Payload, _: &mut Context<Self>) -> Self::Result {
/// #         self.count += 1;
/// #         MessageResult(json!({"ok": self.count}))
/// #     }
/// # }
/// # actix_rt::System::new().block_on(async {
/// let mesh = Mesh::builder(NodeId::new("node-1").unwrap(), "127.0.0.1:4000")
///     .register::<Counter>()
///     .capabilities(["counter"])
///     .start()
///     .unwrap();
/// mesh.call(Request::new("Counter", "c1", "counter").unwrap()).await.unwrap();
///
/// let latency = mesh.request_stats().call_latency().clone();
/// let buckets = latency.cumulative();
/// assert_eq!(buckets.len(), LATENCY_BUCKETS.len() + 1);
/// // Cumulative: the last bucket (`le="+Inf"`) counts every call.
/// assert_eq!(buckets.last(), Some(&(f64::INFINITY, 1)));
/// assert!(latency.sum() > std::time::Duration::ZERO);
/// # });
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyStats {
    buckets: Vec<u64>,
    sum: Duration,
}

impl LatencyStats {
    /// Cumulative `(upper bound in seconds, count)` pairs, ending with
    /// `(f64::INFINITY, total)`.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        LATENCY_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(&self.buckets)
            .map(|(le, n)| {
                total += n;
                (le, total)
            })
            .collect()
    }

    /// The sum of all latencies.
    pub fn sum(&self) -> Duration {
        self.sum
    }
}

/// A reading of the request counters; read with
/// [`Mesh::request_stats`](crate::Mesh::request_stats).
///
/// ```
/// use mesh_actix::{Delivery, Mesh, NodeId, Request};
/// # use mesh_actix::{InitError, MeshActor, MeshInit, Payload};
/// # use mesh_actix::actix::{Actor, Context, Handler, MessageResult};
/// # use serde_json::{json, Value};
/// # #[derive(MeshActor)]
/// # struct Counter { count: u64 }
/// # impl Actor for Counter { type Context = Context<Self>; }
/// # impl MeshInit for Counter {
/// #     fn init(_: &mesh_actix::ActorId, _: Option<&Value>) -> Result<Self, InitError> { Ok(Counter { count: 0 }) }
/// # }
/// # impl Handler<Payload> for Counter {
/// #     type Result = MessageResult<Payload>;
/// #     fn handle(&mut self, _: Payload, _: &mut Context<Self>) -> Self::Result {
/// #         self.count += 1;
/// #         MessageResult(json!({"ok": self.count}))
/// #     }
/// # }
/// # actix_rt::System::new().block_on(async {
/// let mesh = Mesh::builder(NodeId::new("node-1").unwrap(), "127.0.0.1:4000")
///     .register::<Counter>()
///     .capabilities(["counter"])
///     .start()
///     .unwrap();
/// mesh.call(Request::new("Counter", "c1", "counter").unwrap()).await.unwrap();
/// mesh.call(Request::new("Nope", "c1", "counter").unwrap()).await.unwrap_err();
///
/// let stats = mesh.request_stats();
/// let calls: Vec<_> = stats.by_outcome(Delivery::Call).filter(|(_, n)| *n > 0).collect();
/// assert_eq!(calls, [("ok", 1), ("unknown_module", 1)]);
/// // A node alone sends nothing to other nodes.
/// assert!(stats.hops().all(|(_, n)| n == 0));
/// # });
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RequestStats {
    calls: Vec<u64>,
    casts: Vec<u64>,
    latency: LatencyStats,
    hops: Vec<u64>,
    hop_refusals: Vec<u64>,
    hop_latency: LatencyStats,
}

impl RequestStats {
    /// `(outcome, count)` for calls (`delivery = Call`) or casts, outcome `"ok"` or an error
    /// code.
    pub fn by_outcome(&self, delivery: Delivery) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        let counts = match delivery {
            Delivery::Call => &self.calls,
            Delivery::Cast => &self.casts,
        };
        std::iter::once("ok")
            .chain(ErrorCode::ALL.iter().map(|c| c.as_str()))
            .zip(counts.iter().copied())
    }

    /// The latency of calls, from entering the mesh to the reply.
    pub fn call_latency(&self) -> &LatencyStats {
        &self.latency
    }

    /// `(outcome, count)` of hops to other nodes, outcomes as in [`HOP_OUTCOMES`].
    pub fn hops(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        HOP_OUTCOMES.into_iter().zip(self.hops.iter().copied())
    }

    /// `(reason, count)` of refused hops (outcome `refused`), reasons as [`Refusal::as_str`]
    /// names them.
    pub fn hop_refusals(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Refusal::ALL
            .iter()
            .map(|r| r.as_str())
            .zip(self.hop_refusals.iter().copied())
    }

    /// The latency of hops, from sending one to its answer.
    pub fn hop_latency(&self) -> &LatencyStats {
        &self.hop_latency
    }
}

/// The counters of one `(capability, module)`: calls and casts delivered to its activations
/// here, and the activations themselves.
#[derive(Default)]
pub(crate) struct ModuleCounters {
    calls: [AtomicU64; OUTCOMES],
    latency: Histogram,
    casts: AtomicU64,
    live: AtomicI64,
    started: AtomicU64,
    passivations: AtomicU64,
}

impl ModuleCounters {
    /// An activation of the pair started.
    pub(crate) fn activated(&self) {
        self.live.fetch_add(1, Ordering::Relaxed);
        self.started.fetch_add(1, Ordering::Relaxed);
    }

    /// An activation left the registry.
    pub(crate) fn deactivated(&self) {
        self.live.fetch_sub(1, Ordering::Relaxed);
    }

    /// An activation was passivated (it leaves the registry too).
    pub(crate) fn passivated(&self) {
        self.passivations.fetch_add(1, Ordering::Relaxed);
    }

    /// A call delivered to a local activation of the pair ended with `result`.
    pub(crate) fn record_call(&self, result: Result<(), &MeshError>, elapsed: Duration) {
        self.calls[outcome_index(result)].fetch_add(1, Ordering::Relaxed);
        self.latency.record(elapsed);
    }

    /// A cast was enqueued on a local activation of the pair.
    pub(crate) fn record_cast(&self) {
        self.casts.fetch_add(1, Ordering::Relaxed);
    }
}

/// Per-`(capability, module)` counters, for the `mesh_module_*` metrics.
///
/// The label set is bounded: a pair gets counters only when one of its activations starts on
/// this node, so `module` is a registered actor type and `capability` one this node owns
/// shards of (at most 1024). Only an activation looks its pair up (a read lock, a write lock
/// for a new pair); it keeps the counters, so calls and stops count without a lookup.
#[derive(Default)]
pub(crate) struct ModuleMetrics {
    pairs: RwLock<HashMap<String, ByModule, Hasher>>,
}

type Hasher = foldhash::fast::RandomState;

/// The counters of one capability's modules.
type ByModule = HashMap<String, Arc<ModuleCounters>, Hasher>;

impl ModuleMetrics {
    fn find(&self, capability: &str, module: &str) -> Option<Arc<ModuleCounters>> {
        self.pairs.read().get(capability)?.get(module).cloned()
    }

    fn find_or_add(&self, capability: &str, module: &str) -> Arc<ModuleCounters> {
        if let Some(found) = self.find(capability, module) {
            return found;
        }
        let mut pairs = self.pairs.write();
        let modules = pairs.entry(capability.to_owned()).or_default();
        modules.entry(module.to_owned()).or_default().clone()
    }

    /// The counters of `(capability, module)`, added at the first activation of the pair:
    /// each activation keeps them, so a call finds them without a lookup.
    pub(crate) fn counters(&self, capability: &str, module: &str) -> Arc<ModuleCounters> {
        self.find_or_add(capability, module)
    }

    /// A reading of every pair, sorted by capability, then module.
    pub(crate) fn snapshot(&self) -> Vec<ModuleStats> {
        let pairs = self.pairs.read();
        let mut stats: Vec<ModuleStats> = pairs
            .iter()
            .flat_map(|(capability, modules)| {
                modules.iter().map(move |(module, c)| ModuleStats {
                    capability: capability.clone(),
                    module: module.clone(),
                    calls: c.calls.iter().map(|n| n.load(Ordering::Relaxed)).collect(),
                    latency: c.latency.snapshot(),
                    casts: c.casts.load(Ordering::Relaxed),
                    live: c.live.load(Ordering::Relaxed).max(0) as u64,
                    started: c.started.load(Ordering::Relaxed),
                    passivations: c.passivations.load(Ordering::Relaxed),
                })
            })
            .collect();
        stats.sort_by(|a, b| (&a.capability, &a.module).cmp(&(&b.capability, &b.module)));
        stats
    }
}

/// A reading of one `(capability, module)`'s counters; read with
/// [`Mesh::module_stats`](crate::Mesh::module_stats).
///
/// ```
/// use mesh_actix::{Mesh, NodeId, Request};
/// # use mesh_actix::{InitError, MeshActor, MeshInit, Payload};
/// # use mesh_actix::actix::{Actor, Context, Handler, MessageResult};
/// # use serde_json::{json, Value};
/// # #[derive(MeshActor)]
/// # struct Counter { count: u64 }
/// # impl Actor for Counter { type Context = Context<Self>; }
/// # impl MeshInit for Counter {
/// #     fn init(_: &mesh_actix::ActorId, _: Option<&Value>) -> Result<Self, InitError> { Ok(Counter { count: 0 }) }
/// # }
/// # impl Handler<Payload> for Counter {
/// #     type Result = MessageResult<Payload>;
/// #     fn handle(&mut self, _: Payload, _: &mut Context<Self>) -> Self::Result {
/// #         self.count += 1;
/// #         MessageResult(json!({"ok": self.count}))
/// #     }
/// # }
/// # actix_rt::System::new().block_on(async {
/// let mesh = Mesh::builder(NodeId::new("node-1").unwrap(), "127.0.0.1:4000")
///     .register::<Counter>()
///     .capabilities(["counter"])
///     .start()
///     .unwrap();
/// for id in ["c1", "c1", "c2"] {
///     mesh.call(Request::new("Counter", id, "counter").unwrap()).await.unwrap();
/// }
///
/// let [counters] = mesh.module_stats().try_into().unwrap();
/// assert_eq!((counters.capability.as_str(), counters.module.as_str()), ("counter", "Counter"));
/// assert_eq!((counters.live, counters.started), (2, 2));
/// let calls: Vec<_> = counters.calls().filter(|(_, n)| *n > 0).collect();
/// assert_eq!(calls, [("ok", 3)]);
/// # });
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleStats {
    /// The capability.
    pub capability: String,
    /// The actor type.
    pub module: String,
    calls: Vec<u64>,
    latency: LatencyStats,
    /// Casts enqueued on this pair's activations here (a cast has no outcome to count: it
    /// runs after it was accepted).
    pub casts: u64,
    /// Activations live here now.
    pub live: u64,
    /// Activations started here.
    pub started: u64,
    /// Activations passivated here.
    pub passivations: u64,
}

impl ModuleStats {
    /// `(outcome, count)` of calls delivered to this pair's activations here, outcome `"ok"`
    /// or an error code.
    pub fn calls(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        std::iter::once("ok")
            .chain(ErrorCode::ALL.iter().map(|c| c.as_str()))
            .zip(self.calls.iter().copied())
    }

    /// The latency of those calls, from delivery to the local activation to its reply.
    pub fn call_latency(&self) -> &LatencyStats {
        &self.latency
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_outcomes_and_cumulative_latency() {
        let m = RequestMetrics::default();
        m.record(Delivery::Call, Ok(()), Duration::from_micros(50));
        m.record(
            Delivery::Call,
            Err(&MeshError::timeout(Duration::ZERO)),
            Duration::from_secs(9),
        );
        m.record(Delivery::Cast, Ok(()), Duration::ZERO);
        let s = m.snapshot();
        let calls: Vec<_> = s
            .by_outcome(Delivery::Call)
            .filter(|(_, n)| *n > 0)
            .collect();
        assert_eq!(calls, [("ok", 1), ("timeout", 1)]);
        let casts: Vec<_> = s
            .by_outcome(Delivery::Cast)
            .filter(|(_, n)| *n > 0)
            .collect();
        assert_eq!(casts, [("ok", 1)]);
        let cumulative = s.call_latency().cumulative();
        assert_eq!(cumulative.first(), Some(&(0.0001, 1)));
        assert_eq!(cumulative.last(), Some(&(f64::INFINITY, 2)));
        assert_eq!(s.call_latency().sum(), Duration::from_micros(9_000_050));
    }

    #[test]
    fn counts_per_module_only_pairs_that_activated_here() {
        let m = ModuleMetrics::default();
        // No activation yet: nothing to count under (bounded labels).
        assert!(m.snapshot().is_empty());

        let counters = m.counters("counter", "Counter");
        assert!(
            Arc::ptr_eq(&counters, &m.counters("counter", "Counter")),
            "one per pair"
        );
        counters.activated();
        counters.activated();
        counters.record_call(Ok(()), Duration::from_micros(10));
        let crashed = MeshError::actor_crashed("boom");
        counters.record_call(Err(&crashed), Duration::from_micros(10));
        counters.record_cast();
        counters.passivated();
        counters.deactivated();
        let [stats] = m.snapshot().try_into().expect("one pair");
        assert_eq!((stats.live, stats.started, stats.passivations), (1, 2, 1));
        assert_eq!(stats.casts, 1);
        let calls: Vec<_> = stats.calls().filter(|(_, n)| *n > 0).collect();
        assert_eq!(calls, [("ok", 1), ("actor_crashed", 1)]);
        assert_eq!(
            stats.call_latency().cumulative().last(),
            Some(&(f64::INFINITY, 2))
        );
    }

    #[test]
    fn records_hops_by_outcome_with_their_latency() {
        let m = RequestMetrics::default();
        m.record_hop(Ok(()), Duration::from_micros(300));
        m.record_hop(Ok(()), Duration::from_micros(300));
        let refused = HopError::refused(mesh_core::Refusal::NotReady, "joining");
        m.record_hop(Err(&refused), Duration::from_millis(2));
        m.record_hop(
            Err(&HopError::MaybeDelivered("gone".into())),
            Duration::from_secs(6),
        );
        let s = m.snapshot();
        let hops: Vec<_> = s.hops().collect();
        assert_eq!(
            hops,
            [
                ("ok", 2),
                ("error", 0),
                ("refused", 1),
                ("maybe_delivered", 1)
            ]
        );
        let refusals: Vec<_> = s.hop_refusals().filter(|(_, n)| *n > 0).collect();
        assert_eq!(refusals, [(Refusal::NotReady.as_str(), 1)]);
        let cumulative = s.hop_latency().cumulative();
        assert_eq!(cumulative[2], (0.0005, 2));
        assert_eq!(cumulative.last(), Some(&(f64::INFINITY, 4)));
        // Calls are counted apart from hops.
        assert_eq!(
            s.call_latency().cumulative().last(),
            Some(&(f64::INFINITY, 0))
        );
    }
}
