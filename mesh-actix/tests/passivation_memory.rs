//! Passivation frees what idle activations held: 100,000 of them go to 0 after their idle
//! timeout and the process's resident memory falls back. Alone in its test binary, so that no
//! other test's allocations move the figures.

use std::time::{Duration, Instant};

use actix::prelude::*;
use mesh_actix::{
    ActorId, InitError, Mesh, MeshActor, MeshConfig, MeshInit, NodeId, Payload, Request,
};
use serde_json::{json, Value};

const ACTIVATIONS: usize = 100_000;

/// Keeps no store and opts into passivation after 15 s idle: long enough for a debug build to
/// activate all of them before the first goes (the test does not depend on it); holds a
/// little state.
#[derive(MeshActor)]
#[mesh(idle_timeout_secs = 15)]
struct Session {
    seen: Vec<u64>,
}

impl Actor for Session {
    type Context = Context<Self>;
}

impl MeshInit for Session {
    fn init(_: &ActorId, _: Option<&Value>) -> Result<Self, InitError> {
        Ok(Session {
            seen: Vec::with_capacity(32),
        })
    }
}

impl Handler<Payload> for Session {
    type Result = MessageResult<Payload>;
    fn handle(&mut self, _: Payload, _: &mut Context<Self>) -> Self::Result {
        self.seen.push(self.seen.len() as u64);
        MessageResult(json!({"ok": self.seen.len()}))
    }
}

/// This process's resident set, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[actix_rt::test]
async fn passivating_100_000_idle_activations_frees_their_memory() {
    let mut config = MeshConfig::new(NodeId::new("memory-node").unwrap(), "127.0.0.1:1");
    config.arbiters = std::num::NonZeroUsize::new(1).unwrap();
    let mesh = Mesh::start(config).unwrap();
    mesh.register::<Session>();
    mesh.register_capabilities(["session"]).await.unwrap();
    fn request(n: usize) -> Request {
        Request::new("Session", format!("session-{n}"), "session").unwrap()
    }
    // Warm up the allocator and the runtime, then measure from there.
    for n in 0..1000 {
        let warm_up = Request::new("Session", format!("warm-up-{n}"), "session").unwrap();
        mesh.call(warm_up).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = rss();

    // Two callers, each on an arbiter of its own (activations start on their caller's
    // thread), to use both cores.
    let activating = Instant::now();
    let halves = [0, ACTIVATIONS / 2].map(|from| {
        let mesh = mesh.clone();
        let arbiter = Arbiter::new();
        let (done, finished) = tokio::sync::oneshot::channel();
        arbiter.spawn(async move {
            let ids: Vec<usize> = (from..from + ACTIVATIONS / 2).collect();
            for batch in ids.chunks(1000) {
                let calls = batch.iter().map(|&n| mesh.call(request(n)));
                for reply in futures_util::future::join_all(calls).await {
                    reply.unwrap();
                }
            }
            let _ = done.send(());
        });
        (arbiter, finished)
    });
    let mut arbiters = Vec::new();
    for (arbiter, finished) in halves {
        finished.await.expect("the caller finished");
        arbiters.push(arbiter);
    }
    let peak = rss();
    let live = mesh.activations();
    eprintln!(
        "{live} live after activating for {:.1?}",
        activating.elapsed()
    );
    assert!(mesh.activation_stats().activated >= (ACTIVATIONS + 1000) as u64);
    assert!(
        peak > baseline + 50 * 1024 * 1024,
        "{ACTIVATIONS} activations should take well over 50 MB ({baseline} -> {peak} bytes)"
    );

    let started = Instant::now();
    while mesh.activations() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "never passivated"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let passivated = mesh.activation_stats().passivations;
    assert!(passivated >= ACTIVATIONS as u64, "{passivated}");
    for arbiter in arbiters {
        arbiter.stop();
    }
    // The actors end on their arbiter after being told to stop: give it a moment.
    let after = loop {
        let now = rss();
        let freed = peak.saturating_sub(now);
        if freed * 4 >= (peak - baseline) * 3 || started.elapsed() > Duration::from_secs(120) {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "rss: baseline {} MB, {ACTIVATIONS} activations {} MB, after passivation {} MB",
        baseline >> 20,
        peak >> 20,
        after >> 20
    );
    assert!(
        (peak - after) * 4 >= (peak - baseline) * 3,
        "passivation should give back at least 3/4 of what the activations took: baseline \
         {baseline}, peak {peak}, after {after} bytes"
    );
}
