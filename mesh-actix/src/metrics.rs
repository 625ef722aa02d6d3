//! Counters of calls and casts by outcome, and a call-latency histogram: plain atomics,
//! written on every request and read by whoever renders them (e.g. `GET /metrics`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mesh_core::{ErrorCode, MeshError};

use crate::actor::Delivery;

/// Upper bounds of the latency histogram buckets, in seconds (Prometheus `le` labels).
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// One slot per outcome: `ok`, then every error code in contract order.
const OUTCOMES: usize = 1 + ErrorCode::ALL.len();

#[derive(Default)]
pub(crate) struct RequestMetrics {
    calls: [AtomicU64; OUTCOMES],
    casts: [AtomicU64; OUTCOMES],
    /// Per-bucket (not cumulative) counts; the last slot is `+Inf`.
    latency: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_sum_nanos: AtomicU64,
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
                let seconds = elapsed.as_secs_f64();
                let bucket = LATENCY_BUCKETS
                    .iter()
                    .position(|le| seconds <= *le)
                    .unwrap_or(LATENCY_BUCKETS.len());
                self.latency[bucket].fetch_add(1, Ordering::Relaxed);
                self.latency_sum_nanos
                    .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
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

    pub(crate) fn snapshot(&self) -> RequestStats {
        let load = |a: &[AtomicU64]| a.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        RequestStats {
            calls: load(&self.calls),
            casts: load(&self.casts),
            latency_buckets: load(&self.latency),
            latency_sum: Duration::from_nanos(self.latency_sum_nanos.load(Ordering::Relaxed)),
        }
    }
}

/// A reading of the request counters.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestStats {
    calls: Vec<u64>,
    casts: Vec<u64>,
    latency_buckets: Vec<u64>,
    latency_sum: Duration,
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

    /// Cumulative `(upper bound in seconds, count)` pairs of call latency, ending with
    /// `(f64::INFINITY, total)`.
    pub fn latency_cumulative(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        LATENCY_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(&self.latency_buckets)
            .map(|(le, n)| {
                total += n;
                (le, total)
            })
            .collect()
    }

    /// The sum of all call latencies.
    pub fn latency_sum(&self) -> Duration {
        self.latency_sum
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
        let cumulative = s.latency_cumulative();
        assert_eq!(cumulative.first(), Some(&(0.0001, 1)));
        assert_eq!(cumulative.last(), Some(&(f64::INFINITY, 2)));
        assert_eq!(s.latency_sum(), Duration::from_micros(9_000_050));
    }
}
