//! The Rust API figures, each against raw actix on the same thread layout. Callers are tasks
//! on the System thread. With `--placement caller-thread` (mesh's default) mesh starts the
//! activations on that thread, and the floor's actors live there too; with `--placement pool`
//! mesh's activations live on its arbiter pool, the floor's actors on as many arbiters of
//! their own, spread round-robin as mesh spreads activations.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use anyhow::Context as _;
use futures_util::future::join_all;
use mesh_actix::{
    Mesh, MeshBuilder, MeshConfig, NodeId, Placement, Request, DEFAULT_MAILBOX_CAPACITY,
};
use serde_json::{json, Value};

use crate::figures::{Figure, Name};
use crate::{Side, Sizes};

/// The floor's actor: does what `Counter` does, without mesh.
pub struct Bare {
    count: u64,
}

/// The floor's message: a payload in, a JSON reply out, as mesh's `Payload`.
pub struct Bump(pub Value);

impl Message for Bump {
    type Result = Value;
}

impl Actor for Bare {
    type Context = Context<Self>;
}

impl Handler<Bump> for Bare {
    type Result = MessageResult<Bump>;

    fn handle(&mut self, msg: Bump, ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(match msg.0.get("action").and_then(Value::as_str) {
            Some("reset") => {
                self.count = 0;
                json!({"ok": 0})
            }
            Some("stop") => {
                ctx.stop();
                json!({"ok": "stopping"})
            }
            _ => {
                self.count += 1;
                json!({"ok": self.count})
            }
        })
    }
}

/// Starts one bare actor on `arbiter` with mesh's mailbox bound.
pub fn start_bare(arbiter: &ArbiterHandle) -> Addr<Bare> {
    Bare::start_in_arbiter(arbiter, |ctx: &mut Context<Bare>| {
        ctx.set_mailbox_capacity(DEFAULT_MAILBOX_CAPACITY);
        Bare { count: 0 }
    })
}

/// A lone mesh node (no HTTP) with the example actors and `counter` registered.
pub async fn lone_mesh(name: &str, threads: usize, placement: Placement) -> anyhow::Result<Mesh> {
    let mut config = MeshConfig::new(NodeId::new(name)?, "127.0.0.1:1");
    config.arbiters = NonZeroUsize::new(threads).context("at least one thread")?;
    config.placement = placement;
    let mesh = mesh_examples::register_examples(MeshBuilder::from_config(config)).start()?;
    mesh.register_capabilities(["counter"]).await?;
    Ok(mesh)
}

pub fn counter(id: &str) -> Request {
    Request::new("Counter", id, "counter").expect("valid names")
}

/// `concurrency` tasks make `calls` calls through `mesh`, call `n` to `requests[n % len]`;
/// calls per second.
async fn mesh_rate(
    mesh: &Mesh,
    requests: &Arc<Vec<Request>>,
    calls: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let tasks = (0..concurrency).map(|t| {
        let (mesh, requests) = (mesh.clone(), requests.clone());
        actix_rt::spawn(async move {
            for call in (t..calls).step_by(concurrency) {
                mesh.call(requests[call % requests.len()].clone())
                    .await
                    .map_err(|e| anyhow::anyhow!("mesh call failed: {e:?}"))?;
            }
            anyhow::Ok(())
        })
    });
    for task in join_all(tasks).await {
        task??;
    }
    Ok(calls as f64 / started.elapsed().as_secs_f64())
}

/// The same with raw `Addr::send` to `actors[n % len]`.
async fn floor_rate(
    actors: &Arc<Vec<Addr<Bare>>>,
    calls: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let tasks = (0..concurrency).map(|t| {
        let actors = actors.clone();
        actix_rt::spawn(async move {
            for call in (t..calls).step_by(concurrency) {
                actors[call % actors.len()].send(Bump(Value::Null)).await?;
            }
            anyhow::Ok(())
        })
    });
    for task in join_all(tasks).await {
        task??;
    }
    Ok(calls as f64 / started.elapsed().as_secs_f64())
}

/// The median round trip of `n` sequential calls, in microseconds, from a spawned task.
async fn sequential_p50<F, Fut>(n: usize, call: F) -> anyhow::Result<f64>
where
    F: Fn() -> Fut + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let task = actix_rt::spawn(async move {
        for _ in 0..n.min(200) {
            call().await?;
        }
        let mut latencies = Vec::with_capacity(n);
        for _ in 0..n {
            let started = Instant::now();
            call().await?;
            latencies.push(started.elapsed());
        }
        anyhow::Ok(latencies)
    });
    let latencies = task.await??;
    Ok(p50_us(latencies))
}

pub fn p50_us(mut latencies: Vec<Duration>) -> f64 {
    latencies.sort();
    latencies[latencies.len() / 2].as_secs_f64() * 1e6
}

/// Starts `n` activations, `concurrency` at a time, each by its first call; activations per second.
pub async fn mesh_activations(
    mesh: &Mesh,
    prefix: &str,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    activate_all(mesh, &counter_requests(prefix, n), concurrency).await
}

/// The first calls of `n` fresh `Counter` ids, `<prefix>-<i>`.
pub fn counter_requests(prefix: &str, n: usize) -> Arc<Vec<Request>> {
    Arc::new((0..n).map(|i| counter(&format!("{prefix}-{i}"))).collect())
}

/// Sends every one of `requests` (first calls of fresh ids), `concurrency` at a time; the
/// activations per second.
pub async fn activate_all(
    mesh: &Mesh,
    requests: &Arc<Vec<Request>>,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let n = requests.len();
    let before = mesh.activations();
    let rate = mesh_rate(mesh, requests, n, concurrency).await?;
    anyhow::ensure!(
        mesh.activations() == before + n,
        "expected {n} new activations, the mesh has {} more",
        mesh.activations() - before
    );
    Ok(rate)
}

/// Starts `n` bare actors round-robin on `arbiters` and sends each its first message,
/// `concurrency` at a time; the actors (kept alive) and the rate per second.
pub async fn floor_activations(
    arbiters: &[ArbiterHandle],
    n: usize,
    concurrency: usize,
) -> anyhow::Result<(Vec<Addr<Bare>>, f64)> {
    let arbiters = Arc::new(arbiters.to_vec());
    let started = Instant::now();
    let tasks = (0..concurrency).map(|t| {
        let arbiters = arbiters.clone();
        actix_rt::spawn(async move {
            let mut started = Vec::with_capacity(n / concurrency + 1);
            for i in (t..n).step_by(concurrency) {
                let addr = start_bare(&arbiters[i % arbiters.len()]);
                addr.send(Bump(Value::Null)).await?;
                started.push(addr);
            }
            anyhow::Ok(started)
        })
    });
    let mut actors = Vec::with_capacity(n);
    for task in join_all(tasks).await {
        actors.extend(task??);
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    Ok((actors, rate))
}

/// The CPU time this process has used (user + system), from /proc/self/stat.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) end with `)`.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(Duration::from_millis(ticks * 10))
}

/// Waits (at most 10 s) until this process is idle: a stopped node's arbiters tear their
/// actors down on their own threads after it is dropped, and that work must not land in the
/// next measurement.
pub async fn quiesce() {
    let deadline = Instant::now() + Duration::from_secs(10);
    let Some(mut before) = cpu_time() else {
        actix_rt::time::sleep(Duration::from_millis(500)).await;
        return;
    };
    while Instant::now() < deadline {
        actix_rt::time::sleep(Duration::from_millis(100)).await;
        let Some(now) = cpu_time() else { return };
        if now.saturating_sub(before) <= Duration::from_millis(10) {
            return;
        }
        before = now;
    }
}

/// Where the floor's actors start, laid out as mesh places its activations: on the caller's
/// (this) thread, or on `count` arbiters of their own (with the arbiters, to stop).
pub fn arbiters(placement: Placement, count: usize) -> (Vec<Arbiter>, Vec<ArbiterHandle>) {
    if placement == Placement::CallerThread {
        return (Vec::new(), vec![Arbiter::current()]);
    }
    let arbiters: Vec<Arbiter> = (0..count).map(|_| Arbiter::new()).collect();
    let handles = arbiters.iter().map(Arbiter::handle).collect();
    (arbiters, handles)
}

pub fn stop(arbiters: Vec<Arbiter>) {
    for arbiter in arbiters {
        arbiter.stop();
        let _ = arbiter.join();
    }
}

/// Runs `mesh` and `floor` once per repetition, swapping which goes first every time, each
/// once the process is idle.
async fn alternate<M, F, MF, FF>(
    sizes: &Sizes,
    mut mesh: M,
    mut floor: F,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)>
where
    M: FnMut(usize) -> MF,
    F: FnMut(usize) -> FF,
    MF: std::future::Future<Output = anyhow::Result<f64>>,
    FF: std::future::Future<Output = anyhow::Result<f64>>,
{
    let (mut m, mut f) = (Vec::new(), Vec::new());
    let (with_mesh, with_floor) = (sizes.measures(Side::Mesh), sizes.measures(Side::Floor));
    for rep in 0..sizes.reps {
        if rep % 2 == 1 && with_floor {
            quiesce().await;
            f.push(floor(rep).await?);
        }
        if with_mesh {
            quiesce().await;
            m.push(mesh(rep).await?);
        }
        if rep % 2 == 0 && with_floor {
            quiesce().await;
            f.push(floor(rep).await?);
        }
    }
    Ok((m, f))
}

pub async fn run(sizes: &Sizes, wanted: &dyn Fn(Name) -> bool) -> anyhow::Result<Vec<Figure>> {
    let mut figures = Vec::new();
    let s = *sizes;
    let mesh = lone_mesh("bench-api", s.threads, s.placement).await?;
    let (floor_arbiters, handles) = arbiters(s.placement, s.threads);

    // Every actor of api_calls exists before it is measured, on both sides.
    let spread: Arc<Vec<Request>> = Arc::new(
        (0..s.actors)
            .map(|i| counter(&format!("spread-{i}")))
            .collect(),
    );
    mesh_rate(&mesh, &spread, s.actors, s.concurrency).await?;
    let spread_actors: Arc<Vec<Addr<Bare>>> = Arc::new(
        floor_activations(&handles, s.actors, s.concurrency)
            .await?
            .0,
    );
    let hot = Arc::new(vec![counter("hot")]);
    mesh_rate(&mesh, &hot, 1, 1).await?;
    let hot_actor = Arc::new(vec![start_bare(&handles[0])]);

    if wanted(Name::ApiCalls) {
        let (m, f) = alternate(
            &s,
            |_| mesh_rate(&mesh, &spread, s.calls, s.concurrency),
            |_| floor_rate(&spread_actors, s.calls, s.concurrency),
        )
        .await?;
        figures.push(Figure {
            name: Name::ApiCalls,
            mesh: m,
            floor: f,
        });
    }
    if wanted(Name::ApiHotCalls) {
        let (m, f) = alternate(
            &s,
            |_| mesh_rate(&mesh, &hot, s.calls, s.concurrency),
            |_| floor_rate(&hot_actor, s.calls, s.concurrency),
        )
        .await?;
        figures.push(Figure {
            name: Name::ApiHotCalls,
            mesh: m,
            floor: f,
        });
    }
    if wanted(Name::ApiSequentialP50Us) {
        let (m, f) = alternate(
            &s,
            |_| {
                let mesh = mesh.clone();
                let hot = counter("hot");
                sequential_p50(s.sequential, move || {
                    let (mesh, hot) = (mesh.clone(), hot.clone());
                    async move {
                        mesh.call(hot)
                            .await
                            .map(drop)
                            .map_err(|e| anyhow::anyhow!("mesh call failed: {e:?}"))
                    }
                })
            },
            |_| {
                let actor = hot_actor[0].clone();
                sequential_p50(s.sequential, move || {
                    let send = actor.send(Bump(Value::Null));
                    async move { send.await.map(drop).map_err(Into::into) }
                })
            },
        )
        .await?;
        figures.push(Figure {
            name: Name::ApiSequentialP50Us,
            mesh: m,
            floor: f,
        });
    }
    if wanted(Name::Activations) {
        // A fresh node and fresh arbiters each time, so that neither side starts its actors
        // beside the ones of earlier repetitions.
        let (m, f) = alternate(
            &s,
            |rep| async move {
                let mesh = lone_mesh(&format!("bench-act-{rep}"), s.threads, s.placement).await?;
                let rate = mesh_activations(&mesh, "fresh", s.activations, s.concurrency).await;
                // Dropping the node stops its arbiters; let them tear its actors down before
                // the floor is measured.
                drop(mesh);
                quiesce().await;
                rate
            },
            |_| async move {
                let (arbiters, handles) = arbiters(s.placement, s.threads);
                let (actors, rate) =
                    floor_activations(&handles, s.activations, s.concurrency).await?;
                drop(actors);
                stop(arbiters);
                quiesce().await;
                Ok(rate)
            },
        )
        .await?;
        figures.push(Figure {
            name: Name::Activations,
            mesh: m,
            floor: f,
        });
    }
    drop((spread_actors, hot_actor));
    stop(floor_arbiters);
    Ok(figures)
}
