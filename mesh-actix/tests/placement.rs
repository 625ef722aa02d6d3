//! Where activations run (`Placement`), and that an activation on a thread the `Mesh` does not
//! own still ends with its node, restarts in place and is replaced when its thread goes away.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix::prelude::*;
use mesh_actix::{
    ActorId, ErrorCode, InitError, Mesh, MeshActor, MeshConfig, MeshInit, NodeId, Payload,
    Placement, Reply, Request,
};
use serde_json::{json, Value};

/// How long a poll waits for something that must happen before it gives up (a hang guard,
/// not a speed bound).
const EVENTUALLY: Duration = Duration::from_secs(10);

/// Live `ThreadProbe` values by actor id; each test uses ids of its own.
static LIVE: Mutex<Option<HashMap<String, usize>>> = Mutex::new(None);

fn live_probes(id: &str) -> usize {
    let live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    live.as_ref().and_then(|l| l.get(id).copied()).unwrap_or(0)
}

fn count_probe(id: &str, delta: isize) {
    let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    let n = live
        .get_or_insert_with(HashMap::new)
        .entry(id.to_owned())
        .or_default();
    *n = n
        .checked_add_signed(delta)
        .expect("a probe is dropped once");
}

/// Replies with the id of the thread that handled the call; `crash` panics, `stop` stops it.
#[derive(MeshActor)]
struct ThreadProbe {
    id: String,
}

impl Drop for ThreadProbe {
    fn drop(&mut self) {
        count_probe(&self.id, -1);
    }
}

impl Actor for ThreadProbe {
    type Context = Context<Self>;
}

impl MeshInit for ThreadProbe {
    fn init(id: &ActorId, _: Option<&Value>) -> Result<Self, InitError> {
        count_probe(id.as_str(), 1);
        Ok(ThreadProbe { id: id.to_string() })
    }
}

impl Handler<Payload> for ThreadProbe {
    type Result = MessageResult<Payload>;

    fn handle(&mut self, payload: Payload, ctx: &mut Context<Self>) -> Self::Result {
        match payload.action() {
            Some("crash") => panic!("intentional test crash"),
            Some("stop") => ctx.stop(),
            _ => {}
        }
        MessageResult(json!({ "thread": this_thread() }))
    }
}

fn this_thread() -> String {
    format!("{:?}", std::thread::current().id())
}

async fn start(placement: Placement) -> Mesh {
    let mut config = MeshConfig::new(NodeId::new("n1").unwrap(), "127.0.0.1:1");
    config.placement = placement;
    let mesh = Mesh::start(config).unwrap();
    mesh.register::<ThreadProbe>();
    mesh.register_capabilities(["probe"]).await.unwrap();
    mesh
}

fn probe(id: &str) -> Request {
    Request::new("ThreadProbe", id, "probe").unwrap()
}

fn action(id: &str, action: &str) -> Request {
    let mut request = probe(id);
    request.payload = json!({ "action": action });
    request
}

fn thread_of(reply: &Reply) -> &str {
    reply.result["thread"].as_str().expect("a thread id")
}

/// A fresh arbiter and the id of its thread.
async fn arbiter() -> (Arbiter, String) {
    let arbiter = Arbiter::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    assert!(arbiter.spawn_fn(move || drop(tx.send(this_thread()))));
    (arbiter, rx.await.unwrap())
}

/// Runs `work` as a task on `arbiter` and waits for its result.
async fn on<T: Send + 'static>(
    arbiter: &ArbiterHandle,
    work: impl Future<Output = T> + Send + 'static,
) -> T {
    let (tx, rx) = tokio::sync::oneshot::channel();
    assert!(arbiter.spawn(async move { drop(tx.send(work.await)) }));
    rx.await.expect("the arbiter ran the task")
}

/// Polls until `done` holds; panics after [`EVENTUALLY`].
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let give_up = Instant::now() + EVENTUALLY;
    while !done() {
        assert!(Instant::now() < give_up, "{what}: still not the case");
        actix_rt::time::sleep(Duration::from_millis(1)).await;
    }
}

#[actix_rt::test]
async fn an_activation_runs_on_the_arbiter_of_the_thread_that_first_called_it() {
    let mesh = start(Placement::CallerThread).await;
    // The System thread of this test is an arbiter.
    let here = mesh.call(probe("sys")).await.unwrap();
    assert_eq!(thread_of(&here), this_thread());

    let (arbiter, its_thread) = arbiter().await;
    let there = on(&arbiter.handle(), {
        let mesh = mesh.clone();
        async move { mesh.call(probe("arb")).await }
    })
    .await
    .unwrap();
    assert_eq!(thread_of(&there), its_thread);
    // Called later from elsewhere, it stays where it started.
    let again = mesh.call(probe("arb")).await.unwrap();
    assert_eq!(
        (thread_of(&again), &again.pid),
        (its_thread.as_str(), &there.pid)
    );
    arbiter.stop();
}

#[actix_rt::test]
async fn callers_outside_actix_and_the_pool_placement_use_the_pool() {
    let mesh = start(Placement::CallerThread).await;
    // A plain thread with a tokio runtime of its own is no arbiter.
    let (reply, caller) = std::thread::spawn({
        let mesh = mesh.clone();
        move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            (runtime.block_on(mesh.call(probe("plain"))), this_thread())
        }
    })
    .join()
    .unwrap();
    let reply = reply.unwrap();
    assert_ne!(thread_of(&reply), caller);
    assert_ne!(thread_of(&reply), this_thread());

    let pool = start(Placement::Pool).await;
    let reply = pool.call(probe("pooled")).await.unwrap();
    assert_ne!(thread_of(&reply), this_thread());
}

#[actix_rt::test]
async fn a_crashed_activation_restarts_on_its_thread() {
    let mesh = start(Placement::CallerThread).await;
    let (arbiter, its_thread) = arbiter().await;
    let handle = arbiter.handle();
    let first = on(&handle, {
        let mesh = mesh.clone();
        async move { mesh.call(probe("crashy")).await }
    })
    .await
    .unwrap();
    let crashed = mesh.call(action("crashy", "crash")).await.unwrap_err();
    assert_eq!(crashed.code(), ErrorCode::ActorCrashed);
    let after = mesh.call(probe("crashy")).await.unwrap();
    assert_ne!(after.pid, first.pid);
    assert_eq!(thread_of(&after), its_thread);
    arbiter.stop();
}

#[actix_rt::test]
async fn an_activation_on_the_callers_thread_deactivates_and_reactivates_there() {
    let mesh = start(Placement::CallerThread).await;
    let first = mesh.call(probe("stopper")).await.unwrap();
    mesh.call(action("stopper", "stop")).await.unwrap();
    eventually("the stopped activation is gone", || {
        live_probes("stopper") == 0 && mesh.activations() == 0
    })
    .await;
    let second = mesh.call(probe("stopper")).await.unwrap();
    assert_ne!(second.pid, first.pid);
    assert_eq!(thread_of(&second), this_thread());
}

#[actix_rt::test]
async fn dropping_the_mesh_stops_activations_on_threads_it_does_not_own() {
    let mesh = start(Placement::CallerThread).await;
    let (arbiter, _) = arbiter().await;
    let ids = ["drop-1", "drop-2", "drop-3"];
    for id in ids {
        mesh.call(probe(id)).await.unwrap();
    }
    let on_arbiter = on(&arbiter.handle(), {
        let mesh = mesh.clone();
        async move { mesh.call(probe("drop-arb")).await }
    })
    .await;
    on_arbiter.unwrap();
    assert_eq!(mesh.activations(), 4);
    drop(mesh);
    eventually("every activation ended with its mesh", || {
        ids.iter()
            .chain(&["drop-arb"])
            .all(|id| live_probes(id) == 0)
    })
    .await;
    arbiter.stop();
}

#[actix_rt::test]
async fn the_end_of_the_callers_arbiter_ends_its_activations_and_the_next_call_reactivates() {
    let mesh = start(Placement::CallerThread).await;
    let (arbiter, its_thread) = arbiter().await;
    let first = on(&arbiter.handle(), {
        let mesh = mesh.clone();
        async move { mesh.call(probe("orphan")).await }
    })
    .await
    .unwrap();
    assert_eq!(thread_of(&first), its_thread);
    arbiter.stop();
    arbiter.join().unwrap();
    eventually("the activation ended with its arbiter", || {
        live_probes("orphan") == 0 && mesh.activations() == 0
    })
    .await;
    let second = mesh.call(probe("orphan")).await.unwrap();
    assert_ne!(second.pid, first.pid);
    assert_eq!(thread_of(&second), this_thread());
}

#[actix_rt::test]
async fn an_activation_whose_arbiter_stopped_before_it_started_is_replaced() {
    let mesh = start(Placement::CallerThread).await;
    let (arbiter, _) = arbiter().await;
    // The arbiter's stop is queued before the activation's start: the actor never runs, and
    // its registry entry is left with a closed mailbox and no actor to remove it.
    arbiter.spawn({
        let mesh = mesh.clone();
        async move {
            Arbiter::current().stop();
            let _ = mesh.call(probe("stillborn")).await;
            unreachable!("the arbiter stops before the call can be answered");
        }
    });
    arbiter.join().unwrap();
    assert_eq!(mesh.activations(), 1);
    let reply = mesh.call(probe("stillborn")).await.unwrap();
    assert_eq!(thread_of(&reply), this_thread());
    assert_eq!(mesh.activations(), 1);
    assert_eq!(live_probes("stillborn"), 1);
}
