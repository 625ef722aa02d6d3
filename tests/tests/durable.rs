//! Durable actors in real `mesh-node` processes (shared/CONTRACT.md rules 12-14), with the
//! embedded store of each node (`--data-dir`): an `Account`'s acknowledged balance survives
//! kill -9 and restarts of its node, moves with its identity across a join and a graceful
//! leave, and comes back after idle passivation. A node's death loses what only its own
//! store held, as documented.

use std::time::{Duration, Instant};

use mesh_tests::{account, eventually, game, json, unique, wait_converged, Api, MeshNode, Resp};

/// How long a cluster may take to agree on its members.
const CONVERGE: Duration = Duration::from_secs(30);
/// How long a node may take to exit after SIGTERM (leave, drain, hand over, stop).
const EXIT_AFTER_SIGTERM: Duration = Duration::from_secs(20);
/// How long a poll waits for what must happen (a hang guard, not a speed bound).
const EVENTUALLY: Duration = Duration::from_secs(30);

fn deposit(n: u64) -> serde_json::Value {
    json!({"action": "deposit", "amount": n})
}

fn balance() -> serde_json::Value {
    json!({"action": "balance"})
}

/// A data directory that outlives the nodes started on it; removed when the test ends.
struct DataDir(std::path::PathBuf);

impl DataDir {
    fn new() -> DataDir {
        let dir = std::env::temp_dir()
            .join("mesh-test-data")
            .join(unique("durable"));
        DataDir(dir)
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn start_on(dir: &DataDir, extra: &[&str]) -> MeshNode {
    let mut builder = MeshNode::builder()
        .capabilities(["account"])
        .data_dir(&dir.0);
    for arg in extra {
        builder = builder.arg(*arg);
    }
    builder.start().await
}

async fn call_ok(node: &MeshNode, body: &serde_json::Value) -> Resp {
    let r = node.client().call(body).await;
    r.expect_status(200);
    r
}

#[tokio::test]
async fn an_acknowledged_deposit_survives_kill_9_right_after_the_reply() {
    let dir = DataDir::new();
    let mut expected = 0;
    // Each round: restart on the same store, check every deposit acknowledged so far is
    // there, deposit once more and kill the node the moment the 200 arrives.
    for round in 1..=8u64 {
        let mut node = start_on(&dir, &[]).await;
        let r = call_ok(&node, &account("alice", balance())).await;
        assert_eq!(r.result(), &json!({"ok": expected}), "round {round}: {r}");
        let r = call_ok(&node, &account("alice", deposit(round))).await;
        expected += round;
        assert_eq!(r.result(), &json!({"ok": expected}), "round {round}: {r}");
        node.sigkill();
        assert!(node.wait_exit(Duration::from_secs(10)).await.is_some());
    }
    let node = start_on(&dir, &[]).await;
    let r = call_ok(&node, &account("alice", balance())).await;
    assert_eq!(r.result(), &json!({"ok": expected}), "{r}");
    // A withdrawal beyond the balance changes nothing, across a restart too.
    let r = call_ok(
        &node,
        &account("alice", json!({"action": "withdraw", "amount": 1000})),
    )
    .await;
    assert_eq!(
        r.result(),
        &json!({"error": "insufficient_funds", "balance": expected}),
        "{r}"
    );
    drop(node);
    let node = start_on(&dir, &[]).await;
    let r = call_ok(&node, &account("alice", balance())).await;
    assert_eq!(r.result(), &json!({"ok": expected}), "{r}");
}

/// Identity is `(capability, module, id)`: one account id under two capabilities is two
/// accounts, in memory and in the store.
#[tokio::test]
async fn one_account_id_under_two_capabilities_is_two_accounts_across_a_restart() {
    let dir = DataDir::new();
    let under = |capability: &str, payload| {
        let mut body = account("twin", payload);
        body["capability"] = json!(capability);
        body
    };
    let start = || {
        MeshNode::builder()
            .capabilities(["account", "counter"])
            .data_dir(&dir.0)
            .start()
    };
    let mut node = start().await;
    let r = call_ok(&node, &under("account", deposit(5))).await;
    assert_eq!(r.result(), &json!({"ok": 5}), "{r}");
    let r = call_ok(&node, &under("counter", deposit(2))).await;
    assert_eq!(r.result(), &json!({"ok": 2}), "its own balance: {r}");
    node.sigkill();
    assert!(node.wait_exit(Duration::from_secs(10)).await.is_some());

    let node = start().await;
    for (capability, expected) in [("account", 5), ("counter", 2)] {
        let r = call_ok(&node, &under(capability, balance())).await;
        assert_eq!(r.result(), &json!({"ok": expected}), "{capability}: {r}");
    }
}

#[tokio::test]
async fn an_idle_account_is_passivated_and_continues_from_the_store() {
    let dir = DataDir::new();
    let node = start_on(&dir, &["--idle-timeout", "1"]).await;
    let ids: Vec<String> = (0..20).map(|k| format!("idle-{k}")).collect();
    let mut pids = Vec::new();
    for (k, id) in ids.iter().enumerate() {
        let r = call_ok(&node, &account(id, deposit(k as u64 + 1))).await;
        pids.push(r.pid());
    }
    // (Not checked: that all 20 are live now. With a slow disk the first may already have
    // been idle for a second.)
    eventually("every idle account is passivated", EVENTUALLY, || async {
        (node.metric("mesh_activations").await == 0.0).then_some(())
    })
    .await;
    assert_eq!(node.metric("mesh_passivations_total").await, 20.0);
    for (k, id) in ids.iter().enumerate() {
        let r = call_ok(&node, &account(id, balance())).await;
        assert_eq!(r.result(), &json!({"ok": k + 1}), "{r}");
        assert_ne!(r.pid(), pids[k], "{id} was activated again: {r}");
    }
}

#[tokio::test]
async fn accounts_keep_their_balance_across_a_join_and_a_sigterm_leave() {
    let capabilities = ["account"];
    let mut nodes = mesh_tests::start_cluster(2, CONVERGE, |_| {
        MeshNode::builder().capabilities(capabilities)
    })
    .await;
    let ids: Vec<String> = (0..30).map(|k| format!("moving-{k}")).collect();
    for (k, id) in ids.iter().enumerate() {
        let r = call_ok(&nodes[k % 2], &account(id, deposit(k as u64 + 1))).await;
        assert_eq!(r.result(), &json!({"ok": k + 1}), "{r}");
    }

    let joined = MeshNode::builder()
        .capabilities(capabilities)
        .seeds([nodes[0].addr().to_string()])
        .start()
        .await;
    nodes.push(joined);
    wait_converged(&nodes, CONVERGE).await;
    let newcomer = nodes[2].id().to_string();
    let mut moved = 0;
    for (k, id) in ids.iter().enumerate() {
        let r = call_ok(&nodes[k % 3], &account(id, deposit(100))).await;
        assert_eq!(
            r.result(),
            &json!({"ok": k + 101}),
            "{id} kept its balance: {r}"
        );
        moved += usize::from(r.node() == newcomer);
    }
    assert!(moved > 0, "the new node took some accounts");

    nodes[2].sigterm();
    nodes[2]
        .expect_clean_exit(EXIT_AFTER_SIGTERM, "SIGTERM")
        .await;
    for (k, id) in ids.iter().enumerate() {
        let r = call_ok(&nodes[k % 2], &account(id, balance())).await;
        assert_ne!(r.node(), newcomer, "{r}");
        assert_eq!(
            r.result(),
            &json!({"ok": k + 101}),
            "{id} kept its balance: {r}"
        );
    }
}

#[tokio::test]
async fn with_node_local_stores_a_killed_nodes_accounts_start_over_elsewhere() {
    let mut nodes = mesh_tests::start_cluster(2, CONVERGE, |_| {
        MeshNode::builder().capabilities(["account", "game"])
    })
    .await;
    let victim = nodes[1].id().to_string();
    let on_victim = |body: fn(&str) -> serde_json::Value| {
        let (entry, victim) = (&nodes[0], victim.clone());
        async move {
            for k in 0.. {
                let candidate = format!("lost-{k}");
                if call_ok(entry, &body(&candidate)).await.node() == victim {
                    return candidate;
                }
            }
            unreachable!()
        }
    };
    let id = on_victim(|id| account(id, deposit(5))).await;
    // A `snapshot` type keeps its state in memory only: it starts over too.
    let player = on_victim(|id| game(id, json!({"action": "increment"}))).await;
    nodes[1].sigkill();
    assert!(nodes[1].wait_exit(Duration::from_secs(10)).await.is_some());
    let started = Instant::now();
    let r = loop {
        let r = nodes[0].client().call(&account(&id, balance())).await;
        if r.status == 200 {
            break r;
        }
        assert!(started.elapsed() < EVENTUALLY, "never served again: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Documented: only a shared store (--store) keeps state through a node's death.
    assert_eq!(r.result(), &json!({"ok": 0}), "{r}");
    assert_eq!(r.node(), nodes[0].id(), "{r}");
    let r = call_ok(&nodes[0], &game(&player, json!({"action": "get_state"}))).await;
    let fresh = json!({"ok": {"id": player, "level": 1, "score": 0}});
    assert_eq!(r.result(), &fresh, "{r}");
}

#[tokio::test]
async fn with_the_postgres_store_a_killed_nodes_accounts_continue_on_the_new_owner() {
    let postgres = mesh_tests::PostgresServer::start();
    let url = postgres.url();
    let mut nodes = mesh_tests::start_cluster(2, CONVERGE, |_| {
        MeshNode::builder()
            .capabilities(["account"])
            .arg("--store")
            .arg(url.clone())
    })
    .await;
    let victim = nodes[1].id().to_string();
    let mut on_victim = Vec::new();
    for k in 0..40 {
        let id = format!("shared-{k}");
        let r = call_ok(&nodes[k % 2], &account(&id, deposit(k as u64 + 1))).await;
        if r.node() == victim {
            on_victim.push((id, k as u64 + 1));
        }
    }
    assert!(!on_victim.is_empty(), "some accounts live on the victim");
    nodes[1].sigkill();
    assert!(nodes[1].wait_exit(Duration::from_secs(10)).await.is_some());
    for (id, balance) in &on_victim {
        let started = Instant::now();
        let r = loop {
            let r = nodes[0].client().call(&account(id, deposit(100))).await;
            if r.status == 200 {
                break r;
            }
            assert!(
                started.elapsed() < EVENTUALLY,
                "{id} never served again: {r}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(r.node(), nodes[0].id(), "{r}");
        assert_eq!(
            r.result(),
            &json!({"ok": balance + 100}),
            "{id} continues from its last acknowledged balance: {r}"
        );
    }
}
