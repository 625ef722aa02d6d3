//! Clusters of real nodes: start one, wait until every node agrees on the members and is ready.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{eventually, strings, Api, Client, MeshNode, NodeBuilder};

/// Starts `n` nodes, the `i`-th (from 0) built by `node(i)` and every one after the first seeded
/// with the first's address; returns once they have converged and are ready ([`wait_converged`],
/// within `within`).
pub async fn start_cluster(
    n: usize,
    within: Duration,
    node: impl Fn(usize) -> NodeBuilder,
) -> Vec<MeshNode> {
    let started = Instant::now();
    let mut nodes: Vec<MeshNode> = Vec::new();
    for i in 0..n {
        let mut builder = node(i);
        if let Some(first) = nodes.first() {
            builder = builder.seeds([first.addr().to_string()]);
        }
        nodes.push(builder.start().await);
    }
    wait_converged(&nodes, within).await;
    eprintln!(
        "cluster of {n} on {:?} started, converged and ready in {:.1?}",
        nodes
            .iter()
            .map(|n| n.addr().to_string())
            .collect::<Vec<_>>(),
        started.elapsed()
    );
    nodes
}

/// Polls every node's `/cluster` (asserting 200) until each lists exactly `nodes`, all alive, with
/// their addresses and capabilities ([`disagreement`]), and answers `GET /ready` 200 (admitted by
/// every member, with a lease).
pub async fn wait_converged(nodes: &[MeshNode], within: Duration) {
    let clients: Vec<Client> = nodes.iter().map(MeshNode::client).collect();
    let (nodes, clients) = (&nodes, &clients);
    let names: Vec<&str> = nodes.iter().map(MeshNode::id).collect();
    let what = format!("every node of {names:?} to list all of them alive and be ready");
    eventually(&what, within, || async move {
        for c in clients {
            if disagreement(&c.cluster().await, nodes).is_some() {
                return None;
            }
            if c.try_get("/ready").await.map_or(true, |r| r.status != 200) {
                return None;
            }
        }
        Some(())
    })
    .await;
}

/// Why `view` (a `/cluster` body) does not list exactly `nodes`, all alive with their address and
/// capabilities; `None` if it does. Panics if a member's capabilities are not an array of strings.
pub fn disagreement(view: &Value, nodes: &[MeshNode]) -> Option<String> {
    let Some(members) = view["members"].as_array() else {
        return Some(format!("no members: {view}"));
    };
    if members.len() != nodes.len() {
        return Some(format!(
            "{} members, expected {}",
            members.len(),
            nodes.len()
        ));
    }
    for node in nodes {
        let Some(m) = member(view, node.id()) else {
            return Some(format!("{} missing", node.id()));
        };
        if m["status"] != "alive" {
            return Some(format!("{} is {}", node.id(), m["status"]));
        }
        if m["addr"] != node.addr().to_string() {
            return Some(format!("{} has addr {}", node.id(), m["addr"]));
        }
        if strings(&m["capabilities"]) != node.capabilities().iter().cloned().collect() {
            return Some(format!(
                "{} has capabilities {}",
                node.id(),
                m["capabilities"]
            ));
        }
    }
    None
}

/// The entry for `node` in a `/cluster` body.
pub fn member<'a>(view: &'a Value, node: &str) -> Option<&'a Value> {
    view["members"]
        .as_array()?
        .iter()
        .find(|m| m["node"] == node)
}
