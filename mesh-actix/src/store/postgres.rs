//! The PostgreSQL [`StateStore`]: one table shared by every node of a cluster.
//!
//! # Schema
//!
//! [`PostgresStore::connect`] creates the table if it is missing (PostgreSQL 12 or newer: it
//! uses a generated column):
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS mesh_actor_state (
//!     capability bytea  NOT NULL,
//!     module     bytea  NOT NULL,
//!     id         bytea  NOT NULL,
//!     id_sha256  bytea  NOT NULL GENERATED ALWAYS AS (sha256(id)) STORED,
//!     version    bigint NOT NULL CHECK (version > 0),
//!     state      bytea  NOT NULL,
//!     updated_at timestamptz NOT NULL DEFAULT now(),
//!     PRIMARY KEY (capability, module, id_sha256)
//! )
//! ```
//!
//! One row per identity `(capability, module, id)`, holding the version of the save that wrote
//! it (1 for the first) and the serialised state. The identity columns are `bytea`, the UTF-8
//! bytes of the names, because mesh names may contain NUL, which `text` cannot hold
//! (`convert_from(id, 'UTF8')` shows them as text). The primary key holds the SHA-256 of the id
//! rather than the id because an id may be 4096 bytes and a btree key at most about 2700.
//!
//! # Operations
//!
//! - `load`: one `SELECT`.
//! - `save` from version 0: `INSERT ... ON CONFLICT DO NOTHING RETURNING version`; from version
//!   `n > 0`: `UPDATE ... SET version = version + 1 ... WHERE <key> AND version = n RETURNING
//!   version`. One round trip when the save is written. Row locks make concurrent saves from one
//!   version serialise: exactly one writes, the others find the row changed and write nothing.
//!   A refused save reads the version it met in a second statement (the refused one's snapshot
//!   may predate the save that won) and reports [`StoreError::Conflict`] with it.
//! - `overwrite`: `INSERT ... ON CONFLICT DO UPDATE SET version = version + 1`, one round trip.
//! - `remove`: one `DELETE`.
//!
//! # Bounds and timeouts
//!
//! - **Runtime**: the store's I/O runs on a tokio runtime of its own, on one thread
//!   (`mesh-store-postgres`), because its callers are actix arbiters, current-thread runtimes
//!   that may stop while a connection of the pool still needs driving. Every method hands its work
//!   to that runtime and awaits the result; the thread ends when the last clone of the store is
//!   dropped (and no caller still awaits an operation), closing the connections.
//! - **Pool**: at most [`PostgresOptions::pool_size`] connections (default [`POOL_SIZE`], 16),
//!   opened on demand and reused. An operation that finds them all busy waits for one, within its
//!   operation timeout. A connection that closed is dropped when it comes back to the pool and a
//!   new one opened on the next demand.
//! - **Connect timeout** ([`PostgresOptions::connect_timeout`], default [`CONNECT_TIMEOUT`], 5
//!   s): bounds each attempt to open a connection, the TCP connect and the login together.
//!   [`PostgresStore::connect`] blocks for at most this plus one operation timeout (opening the
//!   first connection, then creating the table) and fails with [`StoreError::Unavailable`]
//!   beyond.
//! - **Operation timeout** ([`PostgresOptions::operation_timeout`], default
//!   [`OPERATION_TIMEOUT`], 2 s, under the 5 s default deadline of a mesh call so that the call
//!   reports the store's error rather than its own timeout): bounds each operation from the
//!   moment it starts, waiting for a connection included. At it, the operation fails with
//!   [`StoreError::Unavailable`] and its connection, which may still be running the statement, is
//!   closed rather than reused. The server enforces the same bound on each statement
//!   (`statement_timeout`), so that a statement abandoned by the client does not hold its row
//!   locks for longer. A save that timed out may or may not have been written: a retry of it
//!   then reports a [`StoreError::Conflict`] naming the version it wrote.
//! - **PostgreSQL down**: a refused or failed connection, a connection lost mid-statement or a
//!   server that does not answer is [`StoreError::Unavailable`] within the operation timeout,
//!   never a hang or a panic; the store recovers by itself once the server is back (each
//!   operation opens a connection if the pool has none alive).
//!
//! The password in the URL is never logged nor part of an error: the store shows its URL as
//! [`PostgresStore::url`], without it. Connections are unencrypted (no TLS yet): use the store on
//! a trusted network.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use futures_util::future::{BoxFuture, FutureExt};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::time::{timeout_at, Instant};
use tokio_postgres::config::Host;
use tokio_postgres::NoTls;

use super::{StateKey, StateStore, StoreError, StoredState};

/// The default most connections a store opens.
const POOL_SIZE: usize = 16;
/// The default bound on opening one connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The default bound on one operation, waiting for a connection included.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(2);

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS mesh_actor_state (
    capability bytea NOT NULL,
    module bytea NOT NULL,
    id bytea NOT NULL,
    id_sha256 bytea NOT NULL GENERATED ALWAYS AS (sha256(id)) STORED,
    version bigint NOT NULL CHECK (version > 0),
    state bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (capability, module, id_sha256)
)";

/// Serialises the table creation of nodes starting together: two concurrent `CREATE TABLE IF
/// NOT EXISTS` of one table can fail with a unique violation in the catalog. Any constant: the
/// key of a transaction-scoped advisory lock ("mesh" in ASCII).
const SCHEMA_LOCK: i64 = 0x6d65_7368;

const LOAD: &str = "SELECT version, state FROM mesh_actor_state
    WHERE capability = $1 AND module = $2 AND id_sha256 = sha256($3)";
const VERSION: &str = "SELECT version FROM mesh_actor_state
    WHERE capability = $1 AND module = $2 AND id_sha256 = sha256($3)";
const INSERT: &str = "INSERT INTO mesh_actor_state (capability, module, id, version, state)
    VALUES ($1, $2, $3, 1, $4)
    ON CONFLICT (capability, module, id_sha256) DO NOTHING
    RETURNING version";
const UPDATE: &str =
    "UPDATE mesh_actor_state SET version = version + 1, state = $4, updated_at = now()
    WHERE capability = $1 AND module = $2 AND id_sha256 = sha256($3) AND version = $5
    RETURNING version";
const OVERWRITE: &str = "INSERT INTO mesh_actor_state (capability, module, id, version, state)
    VALUES ($1, $2, $3, 1, $4)
    ON CONFLICT (capability, module, id_sha256) DO UPDATE
    SET version = mesh_actor_state.version + 1, state = EXCLUDED.state, updated_at = now()
    RETURNING version";
const REMOVE: &str = "DELETE FROM mesh_actor_state
    WHERE capability = $1 AND module = $2 AND id_sha256 = sha256($3)";

/// Every statement the operations run, prepared once per connection.
const STATEMENTS: [&str; 6] = [LOAD, VERSION, INSERT, UPDATE, OVERWRITE, REMOVE];

/// How many times a save tries again when the row it was refused by is gone or back at the
/// version it expects by the time it looks (a remove, then new saves, in between): rare, and
/// bounded so that a key changing without pause cannot keep a save busy.
const SAVE_ATTEMPTS: usize = 3;

/// The store's bounds (see the module docs); [`Default`] gives the documented defaults.
///
/// ```
/// use std::time::Duration;
/// use mesh_actix::store::{PostgresOptions, PostgresStore, StoreError};
///
/// // A small node: fewer connections, the other bounds as documented.
/// let options = PostgresOptions {
///     pool_size: 4,
///     ..PostgresOptions::default()
/// };
/// assert_eq!(options.connect_timeout, Duration::from_secs(5));
/// assert_eq!(options.operation_timeout, Duration::from_secs(2));
///
/// // At the node's start, with the database there.
/// fn open(options: PostgresOptions) -> Result<PostgresStore, StoreError> {
///     PostgresStore::connect_with("postgres://mesh:secret@db.internal:5432/mesh", options)
/// }
/// # let _ = open;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// The most connections open at once (at least 1; default 16). An operation that finds
    /// them all busy waits for one, within its operation timeout.
    pub pool_size: usize,
    /// The bound on opening one connection (default 5 s).
    pub connect_timeout: Duration,
    /// The bound on one operation, waiting for a connection included (default 2 s, under the
    /// default deadline of a mesh call); also the server's `statement_timeout` on the store's
    /// connections. Beyond it the operation fails with [`StoreError::Unavailable`].
    pub operation_timeout: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            pool_size: POOL_SIZE,
            connect_timeout: CONNECT_TIMEOUT,
            operation_timeout: OPERATION_TIMEOUT,
        }
    }
}

/// A store shared by the whole cluster, in a PostgreSQL database (`mesh-node --store
/// postgres://...`): [`StateStore::is_shared`] is true. Cheap to clone; the clones share one
/// pool and one runtime thread.
///
/// States are rows of the table `mesh_actor_state` (created at connect if missing; PostgreSQL
/// 12 or newer), keyed by `(capability, module, sha256(id))`, with a `version bigint` and the
/// state as `bytea`. A save is one conditional `INSERT` or `UPDATE` on the version it read.
/// Every operation is bounded by the operation timeout and fails with
/// [`StoreError::Unavailable`] when PostgreSQL is down, slow or unreachable; the store recovers
/// by itself once it is back. The password is never logged nor part of an error.
///
/// ```no_run
/// use mesh_actix::store::{PostgresStore, StateStore};
///
/// // At a node's start, from sync code: fails (after at most 7 s) if PostgreSQL is not there.
/// let store = PostgresStore::connect("postgres://mesh:secret@db.internal:5432/mesh")?;
/// assert!(store.is_shared());
/// assert_eq!(store.url(), "postgres://mesh@db.internal:5432/mesh");
/// # Ok::<(), mesh_actix::store::StoreError>(())
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    runtime: Handle,
    url: String,
    operation_timeout: Duration,
    /// Dropped with the last reference to the store: ends the runtime's thread.
    _stop: oneshot::Sender<()>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.inner.url)
            .field("pool", &self.inner.pool.status())
            .finish()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` with the default bounds (see
    /// [`connect_with`](Self::connect_with)).
    pub fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        Self::connect_with(url, PostgresOptions::default())
    }

    /// Connects to the database at `url` (`postgres://user:password@host:port/database`, or
    /// any form tokio-postgres reads, key-value strings included) and creates the table if it
    /// is missing. Blocks the calling thread (it is meant for a node's start, from sync code)
    /// for at most the connect timeout plus the operation timeout; fails with
    /// [`StoreError::Unavailable`] saying why, the password left out, when the URL is invalid,
    /// the server cannot be reached, refuses the login, or the table has another shape.
    pub fn connect_with(url: &str, options: PostgresOptions) -> Result<PostgresStore, StoreError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            StoreError::Unavailable(format!("invalid PostgreSQL URL: {}", describe(&e)))
        })?;
        let shown = redacted_url(&config);
        if options.pool_size == 0 {
            return Err(StoreError::Unavailable(format!(
                "the PostgreSQL store at {shown} needs a pool of at least 1 connection"
            )));
        }
        config.connect_timeout(options.connect_timeout);
        let statement_timeout = format!(
            "-c statement_timeout={}",
            options.operation_timeout.as_millis().max(1)
        );
        let server_options = match config.get_options() {
            Some(theirs) => format!("{theirs} {statement_timeout}"),
            None => statement_timeout,
        };
        config.options(&server_options);
        if config.get_application_name().is_none() {
            // Names the store's sessions in pg_stat_activity.
            config.application_name("mesh");
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                // A closed connection is dropped on its return to the pool, without the extra
                // round trip per operation that a verifying query would cost.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            // tokio-postgres bounds only the TCP connect; this bounds the login too (a server
            // that accepts connections and then answers nothing).
            .create_timeout(Some(options.connect_timeout))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot build the pool for {shown}: {e}"))
            })?;
        let (runtime, stop) = start_runtime().map_err(|e| {
            StoreError::Unavailable(format!("cannot start the store's thread: {e}"))
        })?;

        let bound = options.connect_timeout + options.operation_timeout;
        let (done, initialised) = std::sync::mpsc::sync_channel(1);
        let init_pool = pool.clone();
        runtime.spawn(async move {
            let result = match tokio::time::timeout(bound, initialise(&init_pool)).await {
                Ok(result) => result,
                Err(_) => Err(StoreError::Unavailable(format!(
                    "no answer within {bound:?}"
                ))),
            };
            let _ = done.send(result);
        });
        // The task answers within `bound`; the margin only covers its scheduling, and the
        // thread dying (the channel closes) ends the wait too.
        let result = initialised
            .recv_timeout(bound + Duration::from_secs(1))
            .unwrap_or_else(|_| {
                Err(StoreError::Unavailable(format!(
                    "no answer within {bound:?}"
                )))
            });
        if let Err(e) = result {
            let reason = match e {
                StoreError::Unavailable(reason) => reason,
                conflict => conflict.to_string(),
            };
            tracing::warn!(store = "postgres", url = %shown, error = %reason, "cannot connect to the state store");
            return Err(StoreError::Unavailable(format!(
                "cannot connect to the PostgreSQL store at {shown}: {reason}"
            )));
        }
        tracing::info!(
            store = "postgres",
            url = %shown,
            pool_size = options.pool_size,
            connect_timeout_ms = options.connect_timeout.as_millis() as u64,
            operation_timeout_ms = options.operation_timeout.as_millis() as u64,
            "connected to the state store"
        );
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                pool,
                runtime,
                url: shown,
                operation_timeout: options.operation_timeout,
                _stop: stop,
            }),
        })
    }

    /// The store's URL without its password (`postgres://user@host:port/database`), for logs.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// Runs `work` on the store's runtime, within the operation timeout that it enforces
    /// itself, and logs a failure.
    fn run<T: Send + 'static>(
        &self,
        op: &'static str,
        key: &StateKey,
        work: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, StoreError>> {
        let inner = self.inner.clone();
        let key = key.clone();
        async move {
            let result = match inner.runtime.spawn(work).await {
                Ok(result) => result,
                Err(e) if e.is_panic() => Err(StoreError::Unavailable(format!(
                    "the PostgreSQL store's {op} panicked"
                ))),
                Err(_) => Err(StoreError::Unavailable(
                    "the PostgreSQL store's runtime has stopped".into(),
                )),
            };
            match &result {
                Err(StoreError::Unavailable(reason)) => tracing::warn!(
                    store = "postgres",
                    url = %inner.url,
                    op,
                    key = %key,
                    error = %reason,
                    "state store operation failed"
                ),
                Err(StoreError::Conflict { expected, found }) => tracing::debug!(
                    store = "postgres",
                    op,
                    key = %key,
                    expected,
                    found,
                    "save refused: version conflict"
                ),
                Ok(_) => {}
            }
            result
        }
        .boxed()
    }

    fn limits(&self) -> (Pool, Duration) {
        (self.inner.pool.clone(), self.inner.operation_timeout)
    }
}

/// Starts the store's runtime on a thread of its own; it runs until the sender is dropped.
fn start_runtime() -> std::io::Result<(Handle, oneshot::Sender<()>)> {
    let (stop, stopped) = oneshot::channel::<()>();
    let (handle_tx, handle_rx) = std::sync::mpsc::sync_channel(1);
    // The runtime is built and dropped on its own thread: dropping a runtime on a thread that is
    // running another (an actix arbiter) panics.
    std::thread::Builder::new()
        .name("mesh-store-postgres".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = handle_tx.send(Err(e));
                    return;
                }
            };
            let _ = handle_tx.send(Ok(runtime.handle().clone()));
            // Drives the pool's connections and the operations until the store is dropped.
            let _ = runtime.block_on(stopped);
        })?;
    let handle = handle_rx
        .recv()
        .map_err(|_| std::io::Error::other("the store's thread ended before its runtime ran"))??;
    Ok((handle, stop))
}

/// Creates the table if it is missing, then prepares every statement, so that a table of
/// another shape fails the connect rather than the first save.
async fn initialise(pool: &Pool) -> Result<(), StoreError> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let transaction = client.transaction().await.map_err(db_error)?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
        .await
        .map_err(db_error)?;
    transaction
        .batch_execute(CREATE_TABLE)
        .await
        .map_err(db_error)?;
    transaction.commit().await.map_err(db_error)?;
    for statement in STATEMENTS {
        client.prepare_cached(statement).await.map_err(db_error)?;
    }
    Ok(())
}

/// A connection from `pool`, waiting at most until `deadline`.
async fn checkout(pool: &Pool, deadline: Instant) -> Result<Object, StoreError> {
    match timeout_at(deadline, pool.get()).await {
        Ok(client) => client.map_err(pool_error),
        Err(_) => Err(timed_out("waiting for a connection")),
    }
}

/// The result of an operation on `client` that ran until `deadline`. A connection whose
/// statement timed out is closed rather than returned to the pool: it may still be running it,
/// or the server behind it may be gone without a word.
fn settle<T>(
    client: Object,
    outcome: Result<Result<T, StoreError>, tokio::time::error::Elapsed>,
) -> Result<T, StoreError> {
    match outcome {
        Ok(result) => result,
        Err(_) => {
            drop(Object::take(client));
            Err(timed_out("running the statement"))
        }
    }
}

fn timed_out(doing: &str) -> StoreError {
    StoreError::Unavailable(format!(
        "PostgreSQL did not answer within the operation timeout ({doing})"
    ))
}

fn db_error(error: tokio_postgres::Error) -> StoreError {
    StoreError::Unavailable(describe(&error))
}

fn pool_error(error: deadpool_postgres::PoolError) -> StoreError {
    match error {
        deadpool_postgres::PoolError::Backend(error) => db_error(error),
        // The only timeout the pool has: opening a connection (the others are the store's).
        deadpool_postgres::PoolError::Timeout(_) => StoreError::Unavailable(
            "PostgreSQL accepted no new connection within the connect timeout".into(),
        ),
        other => StoreError::Unavailable(other.to_string()),
    }
}

/// `error` and its causes: tokio-postgres shows only its kind ("db error"), and the server's
/// message ("FATAL: password authentication failed ...") is its source.
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        text.push_str(": ");
        text.push_str(&error.to_string());
        cause = error.source();
    }
    text
}

/// The key as the statements' first three parameters.
fn key_bytes(key: &StateKey) -> [&[u8]; 3] {
    [
        key.capability.as_str().as_bytes(),
        key.module.as_str().as_bytes(),
        key.id.as_str().as_bytes(),
    ]
}

/// A version as the store holds it (the table's check keeps it positive).
fn version(row: &tokio_postgres::Row) -> Result<u64, StoreError> {
    let version: i64 = row.try_get(0).map_err(db_error)?;
    u64::try_from(version)
        .map_err(|_| StoreError::Unavailable(format!("the table holds version {version}")))
}

async fn load(client: &Object, key: &StateKey) -> Result<Option<StoredState>, StoreError> {
    let [capability, module, id] = key_bytes(key);
    let statement = client.prepare_cached(LOAD).await.map_err(db_error)?;
    let row = client
        .query_opt(&statement, &[&capability, &module, &id])
        .await
        .map_err(db_error)?;
    match row {
        None => Ok(None),
        Some(row) => Ok(Some(StoredState {
            version: version(&row)?,
            state: row.try_get(1).map_err(db_error)?,
        })),
    }
}

/// The version the store holds for `key` (0: none).
async fn stored_version(client: &Object, key: &StateKey) -> Result<u64, StoreError> {
    let [capability, module, id] = key_bytes(key);
    let statement = client.prepare_cached(VERSION).await.map_err(db_error)?;
    match client
        .query_opt(&statement, &[&capability, &module, &id])
        .await
        .map_err(db_error)?
    {
        Some(row) => version(&row),
        None => Ok(0),
    }
}

async fn save(
    client: &Object,
    key: &StateKey,
    state: &[u8],
    expected: u64,
) -> Result<u64, StoreError> {
    let [capability, module, id] = key_bytes(key);
    for _ in 0..SAVE_ATTEMPTS {
        let written = if expected == 0 {
            let statement = client.prepare_cached(INSERT).await.map_err(db_error)?;
            client
                .query_opt(&statement, &[&capability, &module, &id, &state])
                .await
        } else {
            // A version beyond what the table can hold is never the stored one.
            let Ok(expected_db) = i64::try_from(expected) else {
                let found = stored_version(client, key).await?;
                return Err(StoreError::Conflict { expected, found });
            };
            let statement = client.prepare_cached(UPDATE).await.map_err(db_error)?;
            client
                .query_opt(
                    &statement,
                    &[&capability, &module, &id, &state, &expected_db],
                )
                .await
        };
        if let Some(row) = written.map_err(db_error)? {
            return version(&row);
        }
        // Refused. The version that refused it is read by a new statement, whose snapshot
        // includes the concurrent save that won (the refused statement waited for it to commit).
        let found = stored_version(client, key).await?;
        if found != expected {
            return Err(StoreError::Conflict { expected, found });
        }
    }
    Err(StoreError::Unavailable(format!(
        "the state of {key} kept changing during the save"
    )))
}

async fn overwrite(client: &Object, key: &StateKey, state: &[u8]) -> Result<u64, StoreError> {
    let [capability, module, id] = key_bytes(key);
    let statement = client.prepare_cached(OVERWRITE).await.map_err(db_error)?;
    let row = client
        .query_one(&statement, &[&capability, &module, &id, &state])
        .await
        .map_err(db_error)?;
    version(&row)
}

async fn remove(client: &Object, key: &StateKey) -> Result<(), StoreError> {
    let [capability, module, id] = key_bytes(key);
    let statement = client.prepare_cached(REMOVE).await.map_err(db_error)?;
    client
        .execute(&statement, &[&capability, &module, &id])
        .await
        .map_err(db_error)?;
    Ok(())
}

/// `config` as a URL without its password: `postgres://user@host:port,host:port/database`.
fn redacted_url(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let host = match host {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            };
            // One port for all hosts, or one per host; 5432 when none is given.
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            format!("{host}:{port}")
        })
        .collect();
    let user = config
        .get_user()
        .map(|user| format!("{user}@"))
        .unwrap_or_default();
    let database = config.get_dbname().unwrap_or_default();
    format!("postgres://{user}{}/{database}", hosts.join(","))
}

impl StateStore for PostgresStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn load(&self, key: &StateKey) -> BoxFuture<'static, Result<Option<StoredState>, StoreError>> {
        let (pool, limit) = self.limits();
        let owned = key.clone();
        self.run("load", key, async move {
            let deadline = Instant::now() + limit;
            let client = checkout(&pool, deadline).await?;
            let outcome = timeout_at(deadline, load(&client, &owned)).await;
            settle(client, outcome)
        })
    }

    fn save(
        &self,
        key: &StateKey,
        state: Vec<u8>,
        expected: u64,
    ) -> BoxFuture<'static, Result<u64, StoreError>> {
        let (pool, limit) = self.limits();
        let owned = key.clone();
        self.run("save", key, async move {
            let deadline = Instant::now() + limit;
            let client = checkout(&pool, deadline).await?;
            let outcome = timeout_at(deadline, save(&client, &owned, &state, expected)).await;
            settle(client, outcome)
        })
    }

    fn overwrite(
        &self,
        key: &StateKey,
        state: Vec<u8>,
    ) -> BoxFuture<'static, Result<u64, StoreError>> {
        let (pool, limit) = self.limits();
        let owned = key.clone();
        self.run("overwrite", key, async move {
            let deadline = Instant::now() + limit;
            let client = checkout(&pool, deadline).await?;
            let outcome = timeout_at(deadline, overwrite(&client, &owned, &state)).await;
            settle(client, outcome)
        })
    }

    fn remove(&self, key: &StateKey) -> BoxFuture<'static, Result<(), StoreError>> {
        let (pool, limit) = self.limits();
        let owned = key.clone();
        self.run("remove", key, async move {
            let deadline = Instant::now() + limit;
            let client = checkout(&pool, deadline).await?;
            let outcome = timeout_at(deadline, remove(&client, &owned)).await;
            settle(client, outcome)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_shown_has_no_password() {
        let config: tokio_postgres::Config = "postgres://mesh:s3cret@db.example:6543/state"
            .parse()
            .unwrap();
        assert_eq!(
            redacted_url(&config),
            "postgres://mesh@db.example:6543/state"
        );
        let config: tokio_postgres::Config = "host=a,b port=1,2 user=u password=s3cret dbname=d"
            .parse()
            .unwrap();
        assert_eq!(redacted_url(&config), "postgres://u@a:1,b:2/d");
    }

    #[test]
    fn a_bad_url_or_pool_size_is_an_error_not_a_panic() {
        let error = PostgresStore::connect("postgres://mesh:s3cret@host:notaport/db").unwrap_err();
        assert!(
            matches!(&error, StoreError::Unavailable(m) if m.starts_with("invalid PostgreSQL URL")),
            "{error}"
        );
        assert!(!error.to_string().contains("s3cret"), "{error}");
        let options = PostgresOptions {
            pool_size: 0,
            ..PostgresOptions::default()
        };
        let error =
            PostgresStore::connect_with("postgres://mesh:s3cret@host/db", options).unwrap_err();
        assert!(error.to_string().contains("at least 1"), "{error}");
        assert!(!error.to_string().contains("s3cret"), "{error}");
    }
}
