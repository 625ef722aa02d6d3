//! The PostgreSQL state store against a real PostgreSQL server (one per test, started by
//! [`PostgresServer`]): the conformance checks, two nodes sharing one database, durability across
//! a server crash, the server down or hung, and a wrong password.

use std::time::{Duration, Instant};

use mesh_actix::store::{
    conformance, PostgresOptions, PostgresStore, StateKey, StateStore, StoreError, StoredState,
};
use mesh_actix::{ActorId, Capability, Module};
use mesh_tests::PostgresServer;

fn key(id: &str) -> StateKey {
    StateKey {
        capability: Capability::new("account").unwrap(),
        module: Module::new("Account").unwrap(),
        id: ActorId::new(id).unwrap(),
    }
}

/// A short operation timeout, so that the failure tests are quick.
fn short_timeouts() -> PostgresOptions {
    PostgresOptions {
        operation_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_millis(500),
        ..PostgresOptions::default()
    }
}

#[actix_rt::test]
async fn postgres_store_passes_the_conformance_checks() {
    let server = PostgresServer::start();
    let store = PostgresStore::connect(&server.url()).unwrap();
    assert_eq!(store.kind(), "postgres");
    assert!(store.is_shared());
    conformance::check(&store).await;
}

#[actix_rt::test]
async fn two_nodes_on_one_database_a_stale_save_is_refused_and_the_newer_state_stays() {
    let server = PostgresServer::start();
    // Both nodes start at once, and both create the table if it is missing.
    let (node_a, node_b) = std::thread::scope(|s| {
        let a = s.spawn(|| PostgresStore::connect(&server.url()));
        let b = s.spawn(|| PostgresStore::connect(&server.url()));
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    let alice = key("alice");

    assert_eq!(node_a.save(&alice, b"a1".to_vec(), 0).await, Ok(1));
    // Node B (the identity moved to it) reads what node A saved, and saves on top of it.
    let read = node_b.load(&alice).await.unwrap().unwrap();
    assert_eq!(read.version, 1);
    assert_eq!(
        node_b.save(&alice, b"b2".to_vec(), read.version).await,
        Ok(2)
    );

    // Node A's activation, superseded without knowing it, saves from the version it read.
    assert_eq!(
        node_a.save(&alice, b"a-stale".to_vec(), 1).await,
        Err(StoreError::Conflict {
            expected: 1,
            found: 2
        })
    );
    let newer = StoredState {
        version: 2,
        state: b"b2".to_vec(),
    };
    assert_eq!(node_a.load(&alice).await.unwrap(), Some(newer.clone()));
    assert_eq!(node_b.load(&alice).await.unwrap(), Some(newer));
}

#[actix_rt::test]
async fn saved_states_survive_a_crash_and_restart_of_the_server() {
    let mut server = PostgresServer::start();
    let store = PostgresStore::connect(&server.url()).unwrap();
    let bob = key("bob");
    assert_eq!(store.save(&bob, b"1".to_vec(), 0).await, Ok(1));
    assert_eq!(store.save(&bob, b"2".to_vec(), 1).await, Ok(2));
    drop(store);

    // kill -9 of every server process: what was committed is in the WAL.
    server.kill();
    assert!(!server.is_running());
    server.start_again();
    assert!(server.is_running());
    let store = PostgresStore::connect(&server.url()).unwrap();
    assert_eq!(
        store.load(&bob).await.unwrap(),
        Some(StoredState {
            version: 2,
            state: b"2".to_vec()
        })
    );

    // An immediate shutdown and a start again, as an operator's restart.
    server.stop();
    server.start_again();
    let store = PostgresStore::connect(&server.url()).unwrap();
    assert_eq!(store.save(&bob, b"3".to_vec(), 2).await, Ok(3));
}

/// Polls `store` with saves until one is written (the server is back), within 15 s; returns
/// the version written.
async fn save_when_back(store: &PostgresStore, key: &StateKey, state: &[u8], expected: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match store.save(key, state.to_vec(), expected).await {
            Ok(version) => return version,
            Err(StoreError::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the store did not recover: {e}"),
        }
    }
}

/// Runs `op` and asserts it fails with `Unavailable` within the operation timeout (plus a
/// margin for a loaded machine).
async fn assert_unavailable_in_time<T: std::fmt::Debug>(
    what: &str,
    options: &PostgresOptions,
    op: impl std::future::Future<Output = Result<T, StoreError>>,
) {
    let started = Instant::now();
    let result = op.await;
    let took = started.elapsed();
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{what}: {result:?}"
    );
    assert!(
        took <= options.operation_timeout + Duration::from_secs(1),
        "{what} took {took:?}, beyond the operation timeout {:?}",
        options.operation_timeout
    );
}

#[actix_rt::test]
async fn with_the_server_down_operations_are_unavailable_in_time_and_the_store_recovers() {
    let mut server = PostgresServer::start();
    let options = short_timeouts();
    let store = PostgresStore::connect_with(&server.url(), options.clone()).unwrap();
    let carol = key("carol");
    assert_eq!(store.save(&carol, b"1".to_vec(), 0).await, Ok(1));

    server.kill();
    assert_unavailable_in_time("a load", &options, store.load(&carol)).await;
    assert_unavailable_in_time("a save", &options, store.save(&carol, b"x".to_vec(), 1)).await;
    assert_unavailable_in_time(
        "an overwrite",
        &options,
        store.overwrite(&carol, b"x".to_vec()),
    )
    .await;
    assert_unavailable_in_time("a remove", &options, store.remove(&carol)).await;
    // A node starting while the server is down is told so within its connect bound.
    let started = Instant::now();
    let error = PostgresStore::connect_with(&server.url(), options.clone()).unwrap_err();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error}");
    assert!(
        started.elapsed()
            <= options.connect_timeout + options.operation_timeout + Duration::from_secs(1),
        "connect took {:?}",
        started.elapsed()
    );

    server.start_again();
    // The same store, with no help: nothing was written while the server was down.
    assert_eq!(save_when_back(&store, &carol, b"2", 1).await, 2);
    assert_eq!(
        store.load(&carol).await.unwrap().unwrap().state,
        b"2".to_vec()
    );
}

#[actix_rt::test]
async fn with_the_server_hung_operations_are_unavailable_in_time_and_the_store_recovers() {
    let server = PostgresServer::start();
    let options = short_timeouts();
    let store = PostgresStore::connect_with(&server.url(), options.clone()).unwrap();
    let dave = key("dave");
    assert_eq!(store.save(&dave, b"1".to_vec(), 0).await, Ok(1));

    // Every server process stopped: connections stay open and nothing answers.
    server.pause();
    assert_unavailable_in_time("a load", &options, store.load(&dave)).await;
    // More operations at once than the pool has connections: each is still bounded.
    let many = (0..40).map(|_| store.load(&dave));
    let started = Instant::now();
    for result in futures_util::future::join_all(many).await {
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{result:?}"
        );
    }
    assert!(
        started.elapsed() <= options.operation_timeout + Duration::from_secs(1),
        "40 loads took {:?}",
        started.elapsed()
    );

    // A node starting meanwhile: the server accepts its TCP connection and never logs it in.
    let started = Instant::now();
    let error = PostgresStore::connect_with(&server.url(), options.clone()).unwrap_err();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error}");
    assert!(
        started.elapsed()
            <= options.connect_timeout + options.operation_timeout + Duration::from_secs(1),
        "connect took {:?}",
        started.elapsed()
    );

    server.resume();
    assert_eq!(save_when_back(&store, &dave, b"2", 1).await, 2);
    assert_eq!(store.load(&dave).await.unwrap().unwrap().version, 2);
}

#[actix_rt::test]
async fn a_wrong_password_is_a_clear_error_that_does_not_show_any_password() {
    let server = PostgresServer::start();
    let wrong = "not-the-Pa55word";
    let error = PostgresStore::connect(&server.url_with_password(wrong)).unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, StoreError::Unavailable(_)), "{text}");
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(
        text.contains(&format!("127.0.0.1:{}", server.port())),
        "{text}"
    );
    assert!(
        !text.contains(wrong),
        "the error shows the password: {text}"
    );
    assert!(!text.contains(server.password()), "{text}");

    // Nor do the store's URL and its Debug form.
    let store = PostgresStore::connect(&server.url()).unwrap();
    assert_eq!(
        store.url(),
        format!("postgres://mesh@127.0.0.1:{}/mesh", server.port())
    );
    assert!(!format!("{store:?}").contains(server.password()));
}

#[actix_rt::test]
async fn the_longest_ids_and_ids_with_nul_are_stored() {
    let server = PostgresServer::start();
    let store = PostgresStore::connect(&server.url()).unwrap();
    // 4096 bytes that do not compress, far beyond what a btree key may hold.
    let long: String = (0..4096u32)
        .map(|i| char::from(b'!' + (i.wrapping_mul(2_654_435_761) >> 7) as u8 % 90))
        .collect();
    assert_eq!(long.len(), ActorId::MAX_LEN);
    let nul = "a\0b";
    for id in [long.as_str(), nul] {
        let k = key(id);
        assert_eq!(
            store.save(&k, id.as_bytes().to_vec(), 0).await,
            Ok(1),
            "{id:?}"
        );
        assert_eq!(store.save(&k, b"2".to_vec(), 1).await, Ok(2));
        assert_eq!(store.load(&k).await.unwrap().unwrap().state, b"2".to_vec());
    }
    // Ids that share a long prefix are other identities.
    let mut near = long.clone();
    near.pop();
    near.push('~');
    assert_eq!(store.load(&key(&near)).await.unwrap(), None);
}

/// Prints how many saves per second 64 concurrent writers get from the local server (a
/// figure, not an assertion; run alone for it to mean something:
/// `cargo test -p mesh-tests --test postgres_store -- --nocapture concurrent_saves`).
#[actix_rt::test]
async fn concurrent_saves_throughput() {
    const WRITERS: usize = 64;
    const SAVES_EACH: u64 = 50;
    let server = PostgresServer::start();
    let store = PostgresStore::connect(&server.url()).unwrap();
    let started = Instant::now();
    let writers = (0..WRITERS).map(|w| {
        let store = store.clone();
        async move {
            let k = key(&format!("writer-{w}"));
            for version in 0..SAVES_EACH {
                let state = format!("{{\"balance\":{version}}}").into_bytes();
                assert_eq!(store.save(&k, state, version).await, Ok(version + 1));
            }
        }
    });
    futures_util::future::join_all(writers).await;
    let took = started.elapsed();
    let saves = WRITERS as u64 * SAVES_EACH;
    println!(
        "{saves} saves by {WRITERS} concurrent writers in {took:?}: {:.0} saves/s",
        saves as f64 / took.as_secs_f64()
    );
}
