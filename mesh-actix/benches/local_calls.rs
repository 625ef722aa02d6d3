//! Throughput and latency of the local call path through the Rust API (no HTTP).
//!
//! `cargo bench -p mesh-actix --bench local_calls [-- <calls> <actors> <concurrency>]`
//! Figures and the machine they were measured on: BENCHMARKS.md.

use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::join_all;
use mesh_actix::{
    ActorId, InitError, Mesh, MeshActor, MeshConfig, MeshInit, NodeId, Payload, Request,
};
use serde_json::{json, Value};

#[derive(MeshActor)]
struct Counter {
    count: u64,
}

impl Actor for Counter {
    type Context = Context<Self>;
}

impl MeshInit for Counter {
    fn init(_: &ActorId, _: Option<&Value>) -> Result<Self, InitError> {
        Ok(Counter { count: 0 })
    }
}

impl Handler<Payload> for Counter {
    type Result = MessageResult<Payload>;
    fn handle(&mut self, _: Payload, _: &mut Context<Self>) -> Self::Result {
        self.count += 1;
        MessageResult(json!(self.count))
    }
}

fn request(id: usize) -> Request {
    Request::new("Counter", format!("bench-{id}"), "counter").expect("valid names")
}

/// Runs `calls` calls from `concurrency` tasks over `actors` ids; returns calls per second.
async fn throughput(mesh: &Mesh, calls: usize, actors: usize, concurrency: usize) -> f64 {
    let started = Instant::now();
    let tasks = (0..concurrency).map(|t| {
        let mesh = mesh.clone();
        actix_rt::spawn(async move {
            for call in (t..calls).step_by(concurrency) {
                mesh.call(request(call % actors))
                    .await
                    .expect("call succeeds");
            }
        })
    });
    for task in join_all(tasks).await {
        task.expect("task completes");
    }
    calls as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let calls = args.first().copied().unwrap_or(1_000_000);
    let actors = args.get(1).copied().unwrap_or(10_000);
    let concurrency = args.get(2).copied().unwrap_or(64);
    actix_rt::System::new().block_on(async move {
        let mesh = Mesh::start(MeshConfig::new(
            NodeId::new("bench").unwrap(),
            "127.0.0.1:1",
        ))
        .unwrap();
        mesh.register::<Counter>();
        mesh.register_capabilities(["counter"]).await.unwrap();

        let started = Instant::now();
        let activated = throughput(&mesh, actors, actors, concurrency.min(actors)).await;
        println!(
            "activation: {actors} actors in {:.2?} ({activated:.0} activations/s incl. first call)",
            started.elapsed()
        );
        assert_eq!(mesh.activations(), actors);

        let rate = throughput(&mesh, calls, actors, concurrency).await;
        println!("calls: {calls} over {actors} actors, {concurrency} in flight: {rate:.0} calls/s");

        let mut latencies: Vec<Duration> = Vec::with_capacity(20_000);
        for _ in 0..20_000 {
            let t = Instant::now();
            mesh.call(request(0)).await.unwrap();
            latencies.push(t.elapsed());
        }
        latencies.sort();
        let pct =
            |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
        println!(
            "sequential call latency (one caller, one actor): p50 {:?}, p99 {:?}",
            pct(0.50),
            pct(0.99)
        );
    });
}
