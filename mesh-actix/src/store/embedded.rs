//! The embedded [`StateStore`]: one redb file per node.
//!
//! redb is a pure-Rust, ACID, copy-on-write B-tree store: a committed write transaction is on
//! disk (fsync'd, `Durability::Immediate`) before `commit` returns, and a process killed at
//! any point reopens at its last commit. Reads run on the caller's thread against the last
//! commit (MVCC: they never wait for a writer). Writes go to one writer thread that commits
//! everything queued as one transaction (group commit): one fsync covers every save that
//! arrived while the previous one ran, so concurrent actors share its cost.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::future::{self, BoxFuture, FutureExt};
use redb::{Database, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use super::{StateKey, StateStore, StoreError, StoredState};

/// States by `(capability, module, id)`: `(version, serialised state)`.
const STATES: TableDefinition<(&str, &str, &str), (u64, &[u8])> = TableDefinition::new("states");

/// The file inside the data directory.
const FILE_NAME: &str = "state.redb";

/// How many writes may wait for the writer thread. A save beyond it waits for room (its
/// actor's next calls wait behind it; their callers' deadlines still hold).
pub const MAX_QUEUED_WRITES: usize = 16_384;

/// The most writes one transaction commits, and roughly the most bytes: a bound on the
/// latency one commit adds to the saves queued behind it.
const MAX_BATCH_WRITES: usize = 1024;
const MAX_BATCH_BYTES: usize = 8 << 20;

enum Op {
    Save { expected: u64 },
    Overwrite,
    Remove,
}

struct Write {
    key: StateKey,
    state: Vec<u8>,
    op: Op,
    done: oneshot::Sender<Result<u64, StoreError>>,
}

/// A node's embedded store: the file `state.redb` in its data directory (`mesh-node
/// --data-dir`, default `mesh-data/<node-id>`). Node-local: [`StateStore::is_shared`] is
/// false. Only one process may open a file at a time.
///
/// ```
/// use mesh_actix::store::{EmbeddedStore, StateKey, StateStore};
/// use mesh_actix::{ActorId, Capability, Module};
///
/// # actix_rt::System::new().block_on(async {
/// let dir = std::env::temp_dir().join(format!("mesh-doc-{}", std::process::id()));
/// let key = StateKey {
///     capability: Capability::new("account").unwrap(),
///     module: Module::new("Account").unwrap(),
///     id: ActorId::new("alice").unwrap(),
/// };
/// {
///     let store = EmbeddedStore::open(&dir).unwrap();
///     store.save(&key, b"{\"balance\":5}".to_vec(), 0).await.unwrap();
/// }
/// // Another life of the node reads what the first one saved.
/// let store = EmbeddedStore::open(&dir).unwrap();
/// assert_eq!(store.load(&key).await.unwrap().unwrap().state, b"{\"balance\":5}");
/// # drop(store);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # });
/// ```
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Database>,
    /// `None` once dropping: closing the queue ends the writer thread.
    writes: Option<mpsc::Sender<Write>>,
    writer: Option<std::thread::JoinHandle<()>>,
    path: PathBuf,
}

impl Drop for Inner {
    /// Lets the writer commit what is queued and end, so that the file is closed (and can be
    /// opened again, by this process or another) once the last clone is gone.
    fn drop(&mut self) {
        self.writes.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl EmbeddedStore {
    /// Opens (creating them if needed) the directory `dir` and its store file, and starts the
    /// writer thread, which ends when the last clone is dropped.
    pub fn open(dir: impl AsRef<Path>) -> Result<EmbeddedStore, StoreError> {
        let dir = dir.as_ref();
        let unavailable = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Unavailable(format!("{what} {}: {e}", dir.display()))
        };
        std::fs::create_dir_all(dir).map_err(|e| unavailable("cannot create", &e))?;
        let path = dir.join(FILE_NAME);
        let db =
            Database::create(&path).map_err(|e| unavailable("cannot open the store in", &e))?;
        // The table exists from the start, so that reads never meet a missing one.
        let init = || -> Result<(), StoreError> {
            let txn = db.begin_write().map_err(db_error)?;
            txn.open_table(STATES).map_err(db_error)?;
            txn.commit().map_err(db_error)
        };
        init().map_err(|e| unavailable("cannot initialise the store in", &e))?;
        let db = Arc::new(db);
        let (writes, queue) = mpsc::channel(MAX_QUEUED_WRITES);
        let writer_db = db.clone();
        let writer = std::thread::Builder::new()
            .name("mesh-store-writer".into())
            .spawn(move || write_loop(&writer_db, queue))
            .map_err(|e| unavailable("cannot start the writer thread for", &e))?;
        Ok(EmbeddedStore {
            inner: Arc::new(Inner {
                db,
                writes: Some(writes),
                writer: Some(writer),
                path,
            }),
        })
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn read(&self, key: &StateKey) -> Result<Option<StoredState>, StoreError> {
        let txn = self.inner.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(STATES).map_err(db_error)?;
        let stored = table.get(table_key(key)).map_err(db_error)?.map(|guard| {
            let (version, state) = guard.value();
            StoredState {
                version,
                state: state.to_vec(),
            }
        });
        Ok(stored)
    }

    fn write(
        &self,
        key: &StateKey,
        state: Vec<u8>,
        op: Op,
    ) -> BoxFuture<'static, Result<u64, StoreError>> {
        let (done, result) = oneshot::channel();
        let write = Write {
            key: key.clone(),
            state,
            op,
            done,
        };
        let writes = self.inner.writes.clone();
        async move {
            let gone = || StoreError::Unavailable("the store's writer thread has stopped".into());
            let writes = writes.ok_or_else(gone)?;
            writes.send(write).await.map_err(|_| gone())?;
            // Not held while waiting: the writer ends once the store and every send are gone.
            drop(writes);
            result.await.map_err(|_| gone())?
        }
        .boxed()
    }
}

/// A redb failure as the store reports it.
fn db_error(error: impl Into<redb::Error>) -> StoreError {
    StoreError::Unavailable(error.into().to_string())
}

fn table_key(key: &StateKey) -> (&str, &str, &str) {
    (
        key.capability.as_str(),
        key.module.as_str(),
        key.id.as_str(),
    )
}

/// The writer thread: takes every write queued, applies them in order in one transaction,
/// commits, then answers each.
fn write_loop(db: &Database, mut queue: mpsc::Receiver<Write>) {
    while let Some(first) = queue.blocking_recv() {
        let mut batch = vec![first];
        let mut bytes = batch[0].state.len();
        while batch.len() < MAX_BATCH_WRITES && bytes < MAX_BATCH_BYTES {
            match queue.try_recv() {
                Ok(write) => {
                    bytes += write.state.len();
                    batch.push(write);
                }
                Err(_) => break,
            }
        }
        match commit(db, &batch) {
            Ok(results) => {
                for (write, result) in batch.into_iter().zip(results) {
                    let _ = write.done.send(result);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, writes = batch.len(), "the embedded store could not commit");
                for write in batch {
                    let _ = write.done.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Applies `batch` in one transaction; the outer error fails all of it (nothing committed).
fn commit(db: &Database, batch: &[Write]) -> Result<Vec<Result<u64, StoreError>>, StoreError> {
    let txn = db.begin_write().map_err(db_error)?;
    let mut results = Vec::with_capacity(batch.len());
    {
        let mut table = txn.open_table(STATES).map_err(db_error)?;
        for write in batch {
            let key = table_key(&write.key);
            let found = table
                .get(key)
                .map_err(db_error)?
                .map_or(0, |guard| guard.value().0);
            let result = match write.op {
                Op::Save { expected } if found != expected => {
                    Err(StoreError::Conflict { expected, found })
                }
                Op::Save { .. } | Op::Overwrite => {
                    table
                        .insert(key, (found + 1, write.state.as_slice()))
                        .map_err(db_error)?;
                    Ok(found + 1)
                }
                Op::Remove => {
                    table.remove(key).map_err(db_error)?;
                    Ok(0)
                }
            };
            results.push(result);
        }
    }
    txn.commit().map_err(db_error)?;
    Ok(results)
}

impl StateStore for EmbeddedStore {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn is_shared(&self) -> bool {
        false
    }

    fn load(&self, key: &StateKey) -> BoxFuture<'static, Result<Option<StoredState>, StoreError>> {
        let result = self.read(key);
        future::ready(result).boxed()
    }

    fn save(
        &self,
        key: &StateKey,
        state: Vec<u8>,
        expected: u64,
    ) -> BoxFuture<'static, Result<u64, StoreError>> {
        self.write(key, state, Op::Save { expected })
    }

    fn overwrite(
        &self,
        key: &StateKey,
        state: Vec<u8>,
    ) -> BoxFuture<'static, Result<u64, StoreError>> {
        self.write(key, state, Op::Overwrite)
    }

    fn remove(&self, key: &StateKey) -> BoxFuture<'static, Result<(), StoreError>> {
        self.write(key, Vec::new(), Op::Remove)
            .map(|r| r.map(drop))
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mesh-embedded-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[actix_rt::test]
    async fn embedded_store_passes_the_conformance_checks() {
        let dir = temp_dir("conformance");
        let store = EmbeddedStore::open(&dir).unwrap();
        super::super::conformance::check(&store).await;
        assert!(!store.is_shared());
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[actix_rt::test]
    async fn what_was_saved_is_there_after_reopening() {
        let dir = temp_dir("reopen");
        let key = StateKey {
            capability: mesh_core::Capability::new("account").unwrap(),
            module: mesh_core::Module::new("Account").unwrap(),
            id: mesh_core::ActorId::new("a").unwrap(),
        };
        {
            let store = EmbeddedStore::open(&dir).unwrap();
            assert_eq!(store.save(&key, b"7".to_vec(), 0).await, Ok(1));
            assert_eq!(store.save(&key, b"8".to_vec(), 1).await, Ok(2));
        }
        // Dropping the first closed the file: it opens again at once.
        let store = EmbeddedStore::open(&dir).unwrap();
        let stored = store.load(&key).await.unwrap().unwrap();
        assert_eq!((stored.version, stored.state), (2, b"8".to_vec()));
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[actix_rt::test]
    async fn a_second_open_of_one_file_is_refused() {
        let dir = temp_dir("locked");
        let store = EmbeddedStore::open(&dir).unwrap();
        let error = EmbeddedStore::open(&dir).err().expect("the file is in use");
        assert!(matches!(error, StoreError::Unavailable(_)), "{error}");
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
