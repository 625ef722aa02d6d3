//! The activation registry: the one record of which actors live on this node.
//!
//! Entries are keyed by `(module, id)` and striped by shard, so concurrent calls to different
//! actors rarely touch the same lock, and a rebalance can walk the stripes shard by shard.
//! A hit is a read lock and an enqueue; only a miss (an activation) takes a write lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use mesh_core::{ActorId, MeshError, Module, ShardId};
use parking_lot::RwLock;

use crate::activation::{ActivationCell, Envelope};

/// Number of lock stripes; a power of two well above the core count.
const STRIPES: usize = 64;

pub(crate) struct Entry {
    pub(crate) cell: Arc<ActivationCell>,
    pub(crate) recipient: Recipient<Envelope>,
}

#[derive(Default)]
struct Stripe {
    modules: HashMap<Module, HashMap<ActorId, Entry>>,
}

impl Stripe {
    fn get(&self, module: &str, id: &str) -> Option<&Entry> {
        self.modules.get(module)?.get(id)
    }
}

/// Counters the registry keeps about activations, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RegistryStats {
    /// Activations live on this node now.
    pub live: usize,
    /// Activations started since the node started.
    pub activated: u64,
    /// Restarts after a caught panic since the node started.
    pub restarts: u64,
}

/// Which actors are live on this node, by `(module, id)`.
pub(crate) struct ActivationRegistry {
    stripes: Box<[RwLock<Stripe>]>,
    live: AtomicUsize,
    activated: AtomicU64,
    restarts: AtomicU64,
}

impl ActivationRegistry {
    pub(crate) fn new() -> ActivationRegistry {
        ActivationRegistry {
            stripes: (0..STRIPES).map(|_| RwLock::default()).collect(),
            live: AtomicUsize::new(0),
            activated: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
        }
    }

    fn stripe(&self, shard: ShardId) -> &RwLock<Stripe> {
        &self.stripes[shard.0 as usize % STRIPES]
    }

    /// Runs `send` on the entry of `(module, id)`, activating it with `activate` first if
    /// there is none. Concurrent first calls for one identity activate it once.
    ///
    /// `activate` runs under the stripe's write lock: it must be quick (the user's `init` and
    /// an enqueue onto an arbiter).
    pub(crate) fn with_entry<R>(
        &self,
        shard: ShardId,
        module: &Module,
        id: &ActorId,
        activate: impl FnOnce() -> Result<Entry, MeshError>,
        send: impl FnOnce(&Entry) -> R,
    ) -> Result<R, MeshError> {
        let stripe = self.stripe(shard);
        if let Some(entry) = stripe.read().get(module.as_str(), id.as_str()) {
            return Ok(send(entry));
        }
        let mut guard = stripe.write();
        if let Some(entry) = guard.get(module.as_str(), id.as_str()) {
            return Ok(send(entry));
        }
        let entry = activate()?;
        let result = send(&entry);
        guard
            .modules
            .entry(module.clone())
            .or_default()
            .insert(id.clone(), entry);
        self.live.fetch_add(1, Ordering::Relaxed);
        self.activated.fetch_add(1, Ordering::Relaxed);
        Ok(result)
    }

    /// Removes the entry of `cell`, if it is still the registered one.
    pub(crate) fn remove(&self, cell: &Arc<ActivationCell>) {
        let mut guard = self.stripe(cell.shard).write();
        let Some(ids) = guard.modules.get_mut(cell.module.as_str()) else {
            return;
        };
        let current = ids.get(cell.id.as_str());
        if current.is_some_and(|entry| Arc::ptr_eq(&entry.cell, cell)) {
            ids.remove(cell.id.as_str());
            self.live.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Every live activation whose `(capability, shard)` fails `keep`, for rebalancing.
    pub(crate) fn unwanted(&self, keep: impl Fn(&ActivationCell) -> bool) -> Vec<Entry> {
        let mut out = Vec::new();
        for stripe in self.stripes.iter() {
            let guard = stripe.read();
            for entry in guard.modules.values().flat_map(HashMap::values) {
                if !keep(&entry.cell) {
                    out.push(Entry {
                        cell: entry.cell.clone(),
                        recipient: entry.recipient.clone(),
                    });
                }
            }
        }
        out
    }

    pub(crate) fn record_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> RegistryStats {
        RegistryStats {
            live: self.live.load(Ordering::Relaxed),
            activated: self.activated.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
        }
    }
}
