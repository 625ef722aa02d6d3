//! The HTTP figures. Every server runs in this process on 127.0.0.1:0: mesh nodes as
//! `mesh-node` runs them (`mesh_http::serve`: every route, gossip, the HTTP transport), and the
//! floor, a bare actix-web endpoint with as many workers that parses the same `POST /call`
//! body, counts calls per id and renders a reply of the same shape. The load comes from
//! [`crate::client`] on a thread of its own.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::{bail, Context as _};
use mesh_actix::{MemberStatus, Mesh, MeshBuilder, MeshConfig, NodeId, Reply, Request};
use mesh_http::{ServeOptions, ServingNode};
use serde_json::json;

use crate::api::quiesce;
use crate::client;
use crate::figures::{Figure, Name};
use crate::{off_thread, Side, Sizes};

/// A mesh node serving HTTP, as `mesh-node` does, with `Counter` under `counter`.
struct Node {
    mesh: Mesh,
    addr: SocketAddr,
    serving: ServingNode,
}

async fn start_node(name: &str, seeds: Vec<String>, sizes: &Sizes) -> anyhow::Result<Node> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let threads = NonZeroUsize::new(sizes.threads).context("at least one thread")?;
    let mut config = MeshConfig::new(NodeId::new(name)?, addr.to_string());
    config.arbiters = threads;
    config.placement = sizes.placement;
    let builder = mesh_examples::register_examples(MeshBuilder::from_config(config));
    let builder = builder.capabilities(["counter"]);
    let options = ServeOptions {
        seeds,
        workers: Some(threads),
        ..ServeOptions::default()
    };
    let serving = mesh_http::serve(builder, listener, options).await?;
    let mesh = serving.mesh().clone();
    Ok(Node {
        mesh,
        addr,
        serving,
    })
}

/// Waits until every node sees `nodes.len()` live members and serves.
async fn converge(nodes: &[&Node]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let ready = |node: &Node| {
        let alive = node
            .mesh
            .routing()
            .members()
            .iter()
            .filter(|m| m.status == MemberStatus::Alive)
            .count();
        alive == nodes.len() && node.mesh.readiness().is_ok()
    };
    while !nodes.iter().all(|n| ready(n)) {
        if Instant::now() > deadline {
            bail!("the bench's nodes did not form a cluster within 30 s");
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

thread_local! {
    /// The floor's per-worker call counts (each worker thread has its own: no lock).
    static COUNTS: RefCell<HashMap<String, u64>> = RefCell::new(HashMap::new());
}

/// The floor: parse the body as mesh does, count, render a reply of mesh's shape.
async fn bare_call(body: web::Bytes) -> HttpResponse {
    let request = match Request::from_json(&body) {
        Ok(request) => request,
        Err(e) => {
            return HttpResponse::BadRequest()
                .json(json!({"error": {"code": "bad_request", "message": e.to_string()}}))
        }
    };
    let count = COUNTS.with(|counts| {
        let mut counts = counts.borrow_mut();
        match counts.get_mut(request.id.as_str()) {
            Some(count) => {
                *count += 1;
                *count
            }
            None => {
                counts.insert(request.id.as_str().to_owned(), 1);
                1
            }
        }
    });
    HttpResponse::Ok().json(Reply {
        pid: "<floor.1.0>".to_owned(),
        node: NodeId::new("floor").expect("a valid node id"),
        result: json!({"ok": count}),
    })
}

fn start_floor(threads: usize) -> anyhow::Result<(SocketAddr, ServerHandle)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = HttpServer::new(|| App::new().route("/call", web::post().to(bare_call)))
        .workers(threads)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)?
        .run();
    let handle = server.handle();
    actix_rt::spawn(server);
    Ok((addr, handle))
}

async fn throughput(
    sizes: &Sizes,
    addr: SocketAddr,
    requests: &std::sync::Arc<Vec<Vec<u8>>>,
) -> anyhow::Result<f64> {
    let (requests, s) = (requests.clone(), *sizes);
    off_thread(move || {
        client::throughput(addr, requests, s.concurrency, s.http_warmup, s.http_measure)
    })
    .await
}

async fn sequential(
    sizes: &Sizes,
    addr: SocketAddr,
    requests: &std::sync::Arc<Vec<Vec<u8>>>,
) -> anyhow::Result<f64> {
    let (requests, n) = (requests.clone(), sizes.http_sequential);
    off_thread(move || client::sequential_p50(addr, requests, n)).await
}

/// Measures `a` (mesh) and `b` (floor) once per repetition, swapping which goes first every
/// time, each once the process is idle.
async fn alternate(
    sizes: &Sizes,
    mut measure: impl AsyncFnMut(bool) -> anyhow::Result<f64>,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let (with_a, with_b) = (sizes.measures(Side::Mesh), sizes.measures(Side::Floor));
    for rep in 0..sizes.reps {
        if rep % 2 == 1 && with_b {
            quiesce().await;
            b.push(measure(false).await?);
        }
        if with_a {
            quiesce().await;
            a.push(measure(true).await?);
        }
        if rep % 2 == 0 && with_b {
            quiesce().await;
            b.push(measure(false).await?);
        }
    }
    Ok((a, b))
}

/// `http_call` and `http_call_p50_us`: a lone mesh node against the floor endpoint.
pub async fn run_single(
    sizes: &Sizes,
    wanted: &dyn Fn(Name) -> bool,
) -> anyhow::Result<Vec<Figure>> {
    let node = start_node("bench-http", Vec::new(), sizes).await?;
    converge(&[&node]).await?;
    let (floor, floor_server) = start_floor(sizes.threads)?;
    let ids: Vec<String> = (0..sizes.http_ids).map(|i| format!("http-{i}")).collect();
    let requests = client::call_requests(&ids);
    // Every id is activated (and every connection path warm) before the first measurement,
    // by as many connections as the throughput load has: with `Placement::CallerThread` an
    // id stays on the worker that took its first call, and one connection would put them all
    // on one worker.
    for addr in [node.addr, floor] {
        let (requests, connections) = (requests.clone(), sizes.concurrency);
        off_thread(move || client::each_once(addr, requests, connections)).await?;
    }

    let mut figures = Vec::new();
    if wanted(Name::HttpCall) {
        let (mesh, floor) = alternate(sizes, async |mesh| {
            throughput(sizes, if mesh { node.addr } else { floor }, &requests).await
        })
        .await?;
        figures.push(Figure {
            name: Name::HttpCall,
            mesh,
            floor,
        });
    }
    if wanted(Name::HttpCallP50Us) {
        let (mesh, floor) = alternate(sizes, async |mesh| {
            sequential(sizes, if mesh { node.addr } else { floor }, &requests).await
        })
        .await?;
        figures.push(Figure {
            name: Name::HttpCallP50Us,
            mesh,
            floor,
        });
    }
    floor_server.stop(false).await;
    node.serving.shutdown().await?;
    Ok(figures)
}

/// `http_forwarded` and `http_forwarded_p50_us`: two mesh nodes gossiping and forwarding over
/// HTTP; calls for ids that node B owns, sent to node A (one hop) against the same calls sent
/// to B.
pub async fn run_forwarded(
    sizes: &Sizes,
    wanted: &dyn Fn(Name) -> bool,
) -> anyhow::Result<Vec<Figure>> {
    let b = start_node("bench-b", Vec::new(), sizes).await?;
    let a = start_node("bench-a", vec![b.addr.to_string()], sizes).await?;
    converge(&[&a, &b]).await?;
    let owned_by_b = |id: &str| {
        [&a, &b].iter().all(|n| {
            n.mesh.owner(n.mesh.shard_for(id), "counter").ok().as_ref() == Some(b.mesh.node_id())
        })
    };
    let ids: Vec<String> = (0..)
        .map(|i| format!("fwd-{i}"))
        .filter(|id| owned_by_b(id))
        .take(sizes.http_ids)
        .collect();
    let requests = client::call_requests(&ids);
    {
        let (requests, addr, connections) = (requests.clone(), a.addr, sizes.concurrency);
        off_thread(move || client::each_once(addr, requests, connections)).await?;
    }
    if a.mesh.activations() != 0 || b.mesh.activations() != ids.len() {
        bail!(
            "expected every id on node B: A has {} activations, B {} of {}",
            a.mesh.activations(),
            b.mesh.activations(),
            ids.len()
        );
    }

    let mut figures = Vec::new();
    if wanted(Name::HttpForwarded) {
        let (forwarded, direct) = alternate(sizes, async |through_a| {
            throughput(sizes, if through_a { a.addr } else { b.addr }, &requests).await
        })
        .await?;
        figures.push(Figure {
            name: Name::HttpForwarded,
            mesh: forwarded,
            floor: direct,
        });
    }
    if wanted(Name::HttpForwardedP50Us) {
        let (forwarded, direct) = alternate(sizes, async |through_a| {
            sequential(sizes, if through_a { a.addr } else { b.addr }, &requests).await
        })
        .await?;
        figures.push(Figure {
            name: Name::HttpForwardedP50Us,
            mesh: forwarded,
            floor: direct,
        });
    }
    if a.mesh.activations() != 0 {
        bail!("node A started activations of ids node B owns");
    }
    a.serving.shutdown().await?;
    b.serving.shutdown().await?;
    Ok(figures)
}
