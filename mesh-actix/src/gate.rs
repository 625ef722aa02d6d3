//! The serving gate: whether this node may execute requests right now, readable from any
//! thread at the cost of one clock read and one atomic load.
//!
//! The `ShardRouter` opens it to the end of the node's lease once the node is admitted, and
//! closes it on a drain. Every delivery checks it twice: before routing to a local activation,
//! and inside the activation right before the user's handler runs, so a node that was paused
//! past its lease executes nothing it had queued, whatever thread wakes up first.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mesh_core::Refusal;
use parking_lot::Mutex;
use tokio::sync::watch;

pub(crate) struct Gate {
    origin: Instant,
    /// Nanoseconds after `origin` until which this node serves; 0: it does not.
    serving_until: AtomicU64,
    /// Why it does not serve (kept while closed).
    reason: Mutex<(Refusal, String)>,
    /// Bumped whenever the gate changes, for requests waiting for it.
    changes: watch::Sender<u64>,
}

impl Gate {
    pub(crate) fn new() -> Gate {
        Gate {
            origin: Instant::now(),
            serving_until: AtomicU64::new(0),
            reason: Mutex::new((
                Refusal::NotReady,
                "this node has not started serving yet".into(),
            )),
            changes: watch::channel(0).0,
        }
    }

    /// The node's monotonic clock: time since the gate was made.
    pub(crate) fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    pub(crate) fn is_open(&self) -> bool {
        let until = self.serving_until.load(Ordering::Acquire);
        until != 0 && (self.now().as_nanos() as u64) < until
    }

    /// Why the gate is closed, or `None` when it is open.
    pub(crate) fn refusal(&self) -> Option<(Refusal, String)> {
        (!self.is_open()).then(|| self.reason.lock().clone())
    }

    /// Opens the gate until `until` (node clock), or closes it with `reason`.
    pub(crate) fn set(&self, until: Option<Duration>, reason: Option<(Refusal, String)>) {
        let nanos = until.map_or(0, |u| (u.as_nanos() as u64).max(1));
        if let Some(reason) = reason {
            *self.reason.lock() = reason;
        }
        let old = self.serving_until.swap(nanos, Ordering::AcqRel);
        if old != nanos {
            self.changes.send_modify(|n| *n += 1);
        }
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_is_open_only_until_its_lease_ends() {
        let gate = Gate::new();
        assert!(!gate.is_open());
        assert!(gate.refusal().unwrap().1.contains("not started"));
        gate.set(Some(gate.now() + Duration::from_secs(60)), None);
        assert!(gate.is_open());
        assert_eq!(gate.refusal(), None);
        let lost = (Refusal::NoLease, "lease lost".to_owned());
        gate.set(Some(gate.now()), Some(lost.clone()));
        assert!(!gate.is_open());
        assert_eq!(gate.refusal(), Some(lost));
        let draining = (Refusal::Draining, "draining".to_owned());
        gate.set(None, Some(draining.clone()));
        assert_eq!(gate.refusal(), Some(draining));
    }
}
