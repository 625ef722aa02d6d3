//! A [`StateStore`] in memory.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::{self, BoxFuture, FutureExt};
use parking_lot::Mutex;

use super::{StateKey, StateStore, StoreError, StoredState};

/// Keeps states in this process's memory: what survives is a crash of an actor and its
/// passivation, never a restart of the process. For tests, and for embedders who want the
/// durable-actor semantics (versions, write-through order) without a disk.
///
/// Clones share one map. [`MemoryStore::new`] is node-local (give each node its own);
/// [`MemoryStore::shared`] tells mesh that every node given a clone sees the same states (an
/// in-process cluster), as a shared database would.
///
/// ```
/// use mesh_actix::store::{MemoryStore, StateKey, StateStore};
/// use mesh_actix::{ActorId, Capability, Module};
///
/// # futures_util::FutureExt::now_or_never(async {
/// let store = MemoryStore::new();
/// let key = StateKey {
///     capability: Capability::new("account").unwrap(),
///     module: Module::new("Account").unwrap(),
///     id: ActorId::new("alice").unwrap(),
/// };
/// assert_eq!(store.save(&key, b"{\"balance\":5}".to_vec(), 0).await.unwrap(), 1);
/// assert_eq!(store.load(&key).await.unwrap().unwrap().version, 1);
/// # }).unwrap();
/// ```
#[derive(Clone, Default)]
pub struct MemoryStore {
    states: Arc<Mutex<HashMap<StateKey, StoredState>>>,
    shared: bool,
}

impl MemoryStore {
    /// An empty node-local store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// An empty store that every node given a clone of it shares.
    pub fn shared() -> MemoryStore {
        MemoryStore {
            shared: true,
            ..MemoryStore::default()
        }
    }

    /// How many identities have a state here.
    pub fn len(&self) -> usize {
        self.states.lock().len()
    }

    /// Whether no identity has a state here.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl StateStore for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn is_shared(&self) -> bool {
        self.shared
    }

    fn load(&self, key: &StateKey) -> BoxFuture<'static, Result<Option<StoredState>, StoreError>> {
        future::ready(Ok(self.states.lock().get(key).cloned())).boxed()
    }

    fn save(
        &self,
        key: &StateKey,
        state: Vec<u8>,
        expected: u64,
    ) -> BoxFuture<'static, Result<u64, StoreError>> {
        let mut states = self.states.lock();
        let found = states.get(key).map_or(0, |s| s.version);
        let result = if found == expected {
            let version = expected + 1;
            states.insert(key.clone(), StoredState { version, state });
            Ok(version)
        } else {
            Err(StoreError::Conflict { expected, found })
        };
        future::ready(result).boxed()
    }

    fn overwrite(
        &self,
        key: &StateKey,
        state: Vec<u8>,
    ) -> BoxFuture<'static, Result<u64, StoreError>> {
        let mut states = self.states.lock();
        let version = states.get(key).map_or(0, |s| s.version) + 1;
        states.insert(key.clone(), StoredState { version, state });
        future::ready(Ok(version)).boxed()
    }

    fn remove(&self, key: &StateKey) -> BoxFuture<'static, Result<(), StoreError>> {
        self.states.lock().remove(key);
        future::ready(Ok(())).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn memory_store_passes_the_conformance_checks() {
        super::super::conformance::check(&MemoryStore::new()).await;
        assert!(!MemoryStore::new().is_shared());
        assert!(MemoryStore::shared().is_shared());
    }
}
