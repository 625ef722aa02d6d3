//! `mesh-demo`: a three-node cluster in one process on 127.0.0.1:4000-4002 (or from the port
//! given as the first argument), a short tour of the HTTP API against it, then the cluster
//! keeps serving until ctrl-c so you can try your own calls.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use mesh_actix::{Mesh, NodeId};
use mesh_http::ServeOptions;
use serde_json::{json, Value};

const NODES: u16 = 3;
const CAPABILITIES: [&str; 4] = ["counter", "game", "crasher", "sleeper"];

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    mesh_examples::log_panics_briefly("mesh-demo");
    let base: u16 = match std::env::args().nth(1) {
        Some(port) => port
            .parse()
            .context("the first argument is the first port")?,
        None => 4000,
    };
    let first = format!("127.0.0.1:{base}");
    let mut nodes = Vec::new();
    let mut meshes = Vec::new();
    for i in 0..NODES {
        let addr = format!("127.0.0.1:{}", base + i);
        let listener = TcpListener::bind(&addr)
            .with_context(|| format!("port {} is taken; pass another first port", base + i))?;
        let builder = Mesh::builder(NodeId::new(format!("node-{}", i + 1))?, addr);
        let builder = mesh_examples::register_examples(builder).capabilities(CAPABILITIES);
        let seeds = if i == 0 { vec![] } else { vec![first.clone()] };
        let options = ServeOptions {
            seeds,
            ..ServeOptions::default()
        };
        let node = mesh_http::serve(builder, listener, options).await?;
        meshes.push(node.mesh().clone());
        nodes.push(node);
    }
    converge(&meshes).await?;
    println!(
        "A {NODES}-node mesh cluster is up on 127.0.0.1:{base}-{}.\n",
        base + NODES - 1
    );

    tour(base).await?;

    println!("\nThe cluster keeps running; try your own calls, e.g.\n");
    println!(
        "  curl -s localhost:{base}/call -H 'content-type: application/json' \\\n    -d '{{\"module\": \"Counter\", \"id\": \"mine\", \"capability\": \"counter\"}}'\n"
    );
    println!("Press ctrl-c to stop.");
    mesh_examples::shutdown_signal().await?;
    for node in nodes {
        node.shutdown().await?;
    }
    Ok(())
}

/// Waits until every node sees every node alive.
async fn converge(meshes: &[Mesh]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let alive = |mesh: &Mesh| {
        mesh.routing()
            .members()
            .iter()
            .filter(|m| m.status == mesh_actix::MemberStatus::Alive)
            .count()
    };
    while !meshes.iter().all(|m| alive(m) == meshes.len()) {
        if Instant::now() > deadline {
            bail!("the nodes did not see each other within 20 s");
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// A few calls through different nodes, printed as the curl commands they stand for.
async fn tour(base: u16) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let counter = json!({"module": "Counter", "id": "counter_1", "capability": "counter"});
    let steps: [(&str, u16, &str, Option<Value>); 8] = [
        (
            "the first call activates counter_1 on its owner",
            0,
            "/call",
            Some(counter.clone()),
        ),
        (
            "entering through another node reaches the same activation",
            1,
            "/call",
            Some(counter.clone()),
        ),
        ("and a third", 2, "/call", Some(counter)),
        (
            "init_arg is used when the actor is first activated",
            1,
            "/call",
            Some(
                json!({"module": "GameActor", "id": "player_123", "capability": "game",
                        "payload": {"action": "get_state"}, "init_arg": {"starting_level": 10}}),
            ),
        ),
        (
            "a panic fails only that call; the actor restarts with fresh state",
            0,
            "/call",
            Some(
                json!({"module": "Crasher", "id": "crasher_1", "capability": "crasher",
                        "payload": {"action": "crash"}}),
            ),
        ),
        (
            "the next call reaches the restarted actor: a new pid, fresh state",
            2,
            "/call",
            Some(json!({"module": "Crasher", "id": "crasher_1", "capability": "crasher"})),
        ),
        (
            "who owns an id",
            2,
            "/owner?id=counter_1&capability=counter",
            None,
        ),
        ("the cluster as one node sees it", 0, "/cluster", None),
    ];
    for (what, node, path, body) in steps {
        let url = format!("http://127.0.0.1:{}{path}", base + node);
        println!("# {what}");
        let response = match &body {
            Some(body) => {
                println!(
                    "$ curl -s localhost:{}{path} -H 'content-type: application/json' -d '{body}'",
                    base + node
                );
                client.post(&url).json(body).send().await?
            }
            None => {
                println!("$ curl -s 'localhost:{}{path}'", base + node);
                client.get(&url).send().await?
            }
        };
        let status = response.status();
        println!("{} {}\n", status.as_u16(), response.text().await?);
    }
    Ok(())
}
