//! What write-through costs: `Account` deposits with and without a store, on one node.
//!
//! `cargo run --release --example write_through [-- <postgres://user:pass@host:port/db>]`
//!
//! For each store (none: the same calls to `Counter`, a `snapshot` type that keeps its state
//! in memory only; `memory`; `embedded`, redb in a temporary directory; and `postgres` when a
//! URL is given): calls/s with 64 concurrent callers over 1,000 accounts, then p50 and p99 of
//! 2,000 sequential calls to one account. Every call changes the state, so every call saves.
//! A benchmark, not a test: BENCHMARKS.md ("Write-through") records its output.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use mesh_actix::store::{EmbeddedStore, MemoryStore, StateStore};
use mesh_actix::{MeshBuilder, MeshConfig, NodeId, Request};
use serde_json::json;

const CONCURRENCY: usize = 64;
const IDS: usize = 1_000;
const CALLS: usize = 20_000;
const SEQUENTIAL: usize = 2_000;

fn request(module: &str, capability: &str, id: usize) -> Request {
    Request::new(module, format!("bench-{id}"), capability)
        .expect("valid names")
        .with_payload(json!({"action": "deposit", "amount": 1}))
}

async fn measure(name: &str, store: Option<Arc<dyn StateStore>>) -> anyhow::Result<()> {
    let (module, capability) = match store {
        Some(_) => ("Account", "account"),
        None => ("Counter", "counter"),
    };
    let mut config = MeshConfig::new(NodeId::new(format!("bench-{name}"))?, "127.0.0.1:1");
    config.store = store;
    let mesh = mesh_examples::register_examples(MeshBuilder::from_config(config)).start()?;
    mesh.register_capabilities([capability]).await?;
    for id in 0..IDS {
        mesh.call(request(module, capability, id)).await?;
    }

    let started = Instant::now();
    let callers = (0..CONCURRENCY).map(|t| {
        let mesh = mesh.clone();
        actix_rt::spawn(async move {
            for call in (t..CALLS).step_by(CONCURRENCY) {
                mesh.call(request(module, capability, call % IDS)).await?;
            }
            anyhow::Ok(())
        })
    });
    for caller in join_all(callers).await {
        caller??;
    }
    let rate = CALLS as f64 / started.elapsed().as_secs_f64();

    let mut latencies: Vec<Duration> = Vec::with_capacity(SEQUENTIAL);
    for _ in 0..SEQUENTIAL {
        let started = Instant::now();
        mesh.call(request(module, capability, 0)).await?;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let us = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    println!(
        "{name:>9}: {rate:>9.0} calls/s (64 callers x {IDS} ids)   sequential p50 {:>8.1} us   p99 {:>8.1} us",
        us(0.5),
        us(0.99)
    );
    Ok(())
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("mesh-write-through-{}", std::process::id()));
    measure("none", None).await?;
    measure("memory", Some(Arc::new(MemoryStore::new()))).await?;
    measure("embedded", Some(Arc::new(EmbeddedStore::open(&dir)?))).await?;
    if let Some(url) = std::env::args().nth(1) {
        let store = mesh_actix::store::PostgresStore::connect(&url)?;
        measure("postgres", Some(Arc::new(store))).await?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
