//! Where durable actors keep their state: the [`StateStore`] trait and its implementations.
//!
//! A durable actor type (`#[mesh(durable)]`, see [`Snapshot`](crate::Snapshot)) has its state
//! loaded from the node's store when it activates and saved to it after every call that
//! changed it, before the reply leaves (write-through: a reply means the new state is
//! durable). Each stored state carries a version, incremented by every save; a save names
//! the version it read and is refused with [`StoreError::Conflict`] when the store holds
//! another, so that an activation that may have been superseded (a stale owner behind a
//! partition, a load that raced a newer activation) can never overwrite a newer state.
//!
//! Implementations:
//! - [`EmbeddedStore`]: one redb file per node, crash-safe, the default of `mesh-node`
//!   (`--data-dir`); node-local, so a node's death loses what only it held (until it comes
//!   back with the same file).
//! - [`MemoryStore`]: in memory, for tests and for nodes that need no persistence across
//!   restarts; node-local or shared by every node of one process.
//! - [`PostgresStore`]: one table in a PostgreSQL database, shared by the whole cluster
//!   (`--store postgres://...`), so that state survives the death of any node.

mod embedded;
mod memory;
mod postgres;

use std::fmt;

use futures_util::future::BoxFuture;
use mesh_core::{ActorId, Capability, Module};

pub use embedded::EmbeddedStore;
pub use memory::MemoryStore;
pub use postgres::{PostgresOptions, PostgresStore};

/// The identity a stored state belongs to: `(capability, module, id)`, as everywhere in mesh.
///
/// ```
/// use mesh_actix::store::StateKey;
/// use mesh_actix::{ActorId, Capability, Module};
///
/// let key = StateKey {
///     capability: Capability::new("account").unwrap(),
///     module: Module::new("Account").unwrap(),
///     id: ActorId::new("alice").unwrap(),
/// };
/// // How logs name the identity.
/// assert_eq!(key.to_string(), "account/Account/alice");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StateKey {
    /// The identity's capability.
    pub capability: Capability,
    /// The identity's actor type.
    pub module: Module,
    /// The identity's id.
    pub id: ActorId,
}

impl fmt::Display for StateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.capability, self.module, self.id)
    }
}

/// A state as the store holds it: the actor's serialised
/// [`Snapshot::State`](crate::Snapshot::State), JSON, and the version of the save that wrote it (1 for the
/// first).
///
/// ```
/// use mesh_actix::store::{MemoryStore, StateKey, StateStore, StoredState};
/// use mesh_actix::{ActorId, Capability, Module};
///
/// # futures_util::FutureExt::now_or_never(async {
/// let store = MemoryStore::new();
/// let key = StateKey {
///     capability: Capability::new("account").unwrap(),
///     module: Module::new("Account").unwrap(),
///     id: ActorId::new("alice").unwrap(),
/// };
/// store.save(&key, b"{\"balance\":5}".to_vec(), 0).await.unwrap();
/// store.save(&key, b"{\"balance\":7}".to_vec(), 1).await.unwrap();
/// // The newest state, and the version the next save must name.
/// let stored: StoredState = store.load(&key).await.unwrap().unwrap();
/// assert_eq!((stored.version, stored.state.as_slice()), (2, &b"{\"balance\":7}"[..]));
/// # }).unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredState {
    /// How many saves this identity's state has seen in this store.
    pub version: u64,
    /// The serialised state.
    pub state: Vec<u8>,
}

/// Why a store operation did not happen.
///
/// ```
/// use mesh_actix::store::{MemoryStore, StateKey, StateStore, StoreError};
/// use mesh_actix::{ActorId, Capability, Module};
///
/// # futures_util::FutureExt::now_or_never(async {
/// let store = MemoryStore::new();
/// let key = StateKey {
///     capability: Capability::new("account").unwrap(),
///     module: Module::new("Account").unwrap(),
///     id: ActorId::new("alice").unwrap(),
/// };
/// store.save(&key, b"{\"balance\":5}".to_vec(), 0).await.unwrap();
/// // A second activation that read no state (version 0) may not overwrite the first's.
/// match store.save(&key, b"{\"balance\":0}".to_vec(), 0).await {
///     Err(StoreError::Conflict { expected, found }) => assert_eq!((expected, found), (0, 1)),
///     other => panic!("a stale save went through: {other:?}"),
/// }
/// # }).unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The save named version `expected` but the store holds `found` (0: none): another
    /// activation saved in between, so this one's state is stale. Nothing was written.
    #[error("version conflict: the save expected version {expected}, the store holds {found}")]
    Conflict {
        /// The version the saving activation read.
        expected: u64,
        /// The version in the store.
        found: u64,
    },
    /// The store could not be reached or failed (I/O, connection, a full queue); the
    /// operation may be retried.
    #[error("the state store is unavailable: {0}")]
    Unavailable(String),
}

/// A store for the state of durable actors, shared by every activation of one node.
///
/// Every method returns a `'static` future so that callers on any actix arbiter can await it;
/// implementations do their blocking work on threads of their own.
///
/// A node is given one with [`MeshBuilder::store`](crate::MeshBuilder::store); the versions
/// its operations take and return are what keeps a stale activation from writing:
///
/// ```
/// use std::sync::Arc;
/// use mesh_actix::store::{MemoryStore, StateKey, StateStore};
/// use mesh_actix::{ActorId, Capability, Mesh, Module, NodeId};
///
/// let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
/// assert_eq!((store.kind(), store.is_shared()), ("memory", false));
/// let node = Mesh::builder(NodeId::new("node-1").unwrap(), "127.0.0.1:4000").store(store.clone());
/// assert_eq!(node.config().store.as_ref().unwrap().kind(), "memory");
///
/// # futures_util::FutureExt::now_or_never(async {
/// let key = StateKey {
///     capability: Capability::new("account").unwrap(),
///     module: Module::new("Account").unwrap(),
///     id: ActorId::new("alice").unwrap(),
/// };
/// assert_eq!(store.save(&key, b"1".to_vec(), 0).await.unwrap(), 1);
/// assert_eq!(store.save(&key, b"2".to_vec(), 1).await.unwrap(), 2);
/// // A handed-over state wins whatever the store holds.
/// assert_eq!(store.overwrite(&key, b"3".to_vec()).await.unwrap(), 3);
/// store.remove(&key).await.unwrap();
/// assert_eq!(store.load(&key).await.unwrap(), None);
/// # }).unwrap();
/// ```
pub trait StateStore: Send + Sync + 'static {
    /// A short name for logs and metrics: `"embedded"`, `"memory"`, `"postgres"`.
    fn kind(&self) -> &'static str;

    /// Whether every node of the cluster sees this same store. A shared store already holds
    /// a moved identity's state on its new owner; a node-local one is given it in the
    /// handoff and drops it on the old owner once handed over.
    fn is_shared(&self) -> bool;

    /// The stored state of `key`, if any.
    fn load(&self, key: &StateKey) -> BoxFuture<'static, Result<Option<StoredState>, StoreError>>;

    /// Writes `state` as version `expected + 1` if the store holds version `expected` (0: no
    /// state yet); returns the new version. Durable when the future resolves `Ok`.
    fn save(
        &self,
        key: &StateKey,
        state: Vec<u8>,
        expected: u64,
    ) -> BoxFuture<'static, Result<u64, StoreError>>;

    /// Writes `state` whatever the store holds (a node-local store taking a handed-over
    /// state, which is newer than anything it may hold); returns the new version.
    fn overwrite(
        &self,
        key: &StateKey,
        state: Vec<u8>,
    ) -> BoxFuture<'static, Result<u64, StoreError>>;

    /// Forgets the state of `key` (a node-local store whose identity was handed over).
    fn remove(&self, key: &StateKey) -> BoxFuture<'static, Result<(), StoreError>>;
}

impl fmt::Debug for dyn StateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateStore")
            .field("kind", &self.kind())
            .field("shared", &self.is_shared())
            .finish()
    }
}

/// The conformance checks every [`StateStore`] passes; each implementation's tests run them.
#[doc(hidden)]
pub mod conformance {
    use super::*;

    fn key(id: &str) -> StateKey {
        StateKey {
            capability: Capability::new("account").unwrap(),
            module: Module::new("Account").unwrap(),
            id: ActorId::new(id).unwrap(),
        }
    }

    /// Runs every check against `store`, which must start empty for the ids `conf-*`.
    pub async fn check(store: &dyn StateStore) {
        let a = key("conf-a");
        assert_eq!(
            store.load(&a).await.unwrap(),
            None,
            "a new key has no state"
        );

        // Versions start at 1 and go up by one per save.
        assert_eq!(store.save(&a, b"1".to_vec(), 0).await.unwrap(), 1);
        assert_eq!(store.save(&a, b"2".to_vec(), 1).await.unwrap(), 2);
        let stored = store.load(&a).await.unwrap().unwrap();
        assert_eq!(
            stored,
            StoredState {
                version: 2,
                state: b"2".to_vec()
            }
        );

        // A save that read an older version is refused and writes nothing.
        assert_eq!(
            store.save(&a, b"stale".to_vec(), 1).await,
            Err(StoreError::Conflict {
                expected: 1,
                found: 2
            })
        );
        assert_eq!(
            store.save(&a, b"stale".to_vec(), 0).await,
            Err(StoreError::Conflict {
                expected: 0,
                found: 2
            })
        );
        assert_eq!(store.load(&a).await.unwrap().unwrap().state, b"2".to_vec());

        // Keys are the whole identity: another capability or module is another state.
        let mut other = a.clone();
        other.capability = Capability::new("account-eu").unwrap();
        assert_eq!(store.load(&other).await.unwrap(), None);
        let mut other_module = a.clone();
        other_module.module = Module::new("Ledger").unwrap();
        assert_eq!(store.load(&other_module).await.unwrap(), None);

        // Overwrite ignores the version and still moves it on.
        assert_eq!(store.overwrite(&a, b"handed".to_vec()).await.unwrap(), 3);
        let b = key("conf-b");
        assert_eq!(store.overwrite(&b, b"new".to_vec()).await.unwrap(), 1);

        // Remove forgets; a later save starts from version 0 again.
        store.remove(&a).await.unwrap();
        assert_eq!(store.load(&a).await.unwrap(), None);
        assert_eq!(store.save(&a, b"again".to_vec(), 0).await.unwrap(), 1);
        store.remove(&key("conf-never-stored")).await.unwrap();

        // Concurrent saves of one key from the same version: exactly one wins.
        let c = key("conf-c");
        let saves = (0..8).map(|i| store.save(&c, format!("{i}").into_bytes(), 0));
        let results = futures_util::future::join_all(saves).await;
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "one of concurrent saves wins: {results:?}");
        assert!(results.iter().all(|r| matches!(
            r,
            Ok(1)
                | Err(StoreError::Conflict {
                    expected: 0,
                    found: 1
                })
        )));

        // Many keys, large values.
        let big = vec![b'x'; 256 * 1024];
        let d = key("conf-d");
        store.save(&d, big.clone(), 0).await.unwrap();
        assert_eq!(store.load(&d).await.unwrap().unwrap().state, big);
        let saves = (0..200).map(|i| store.save(&key(&format!("conf-many-{i}")), vec![i as u8], 0));
        for result in futures_util::future::join_all(saves).await {
            assert_eq!(result, Ok(1));
        }
        for i in 0..200u32 {
            let stored = store
                .load(&key(&format!("conf-many-{i}")))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(stored.state, vec![i as u8]);
        }
    }
}
