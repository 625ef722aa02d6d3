//! Clusters of real `mesh-node` processes on 127.0.0.1, driven over HTTP like a user would:
//! membership over gossip, owner agreement, forwarding (contract semantics 5), shards moving when
//! nodes join, leave or die (semantics 6), and errors crossing the node-to-node hop.
//!
//! Each test starts its own cluster with [`start_cluster`]: node 1 first, the others with
//! `--seeds <node 1>`, then it polls every node's `/cluster` until every member is `alive` there with
//! its address and capabilities. Nothing sleeps for a fixed time: every wait polls with a generous
//! deadline (CI is a small machine running other tests at the same time). Every node is killed
//! when its [`MeshNode`] is dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mesh_tests::{
    counter, crasher, eventually, game, json, member, req, sleeper, strings, unique,
    wait_converged, with_field, Api, Client, MeshNode, Resp, ALL_CAPABILITIES,
};

/// How long a cluster may take to agree on its members (start, join, capability changes).
const CONVERGE: Duration = Duration::from_secs(30);
/// How long the failure detector may take to declare a SIGKILL'd node dead.
const DEAD_AFTER_KILL: Duration = Duration::from_secs(10);
/// How long the others may take to mark a node that announced it is leaving as dead.
const DEAD_AFTER_LEAVE: Duration = Duration::from_secs(3);
/// How long a node may take to exit after SIGTERM (leave, drain, stop).
const EXIT_AFTER_SIGTERM: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------------
// Cluster helpers
// ---------------------------------------------------------------------------------------------------

/// Starts `n` nodes with `capabilities`: node 1, then the others seeded with node 1's address; returns
/// once every node lists every node alive with its address and capabilities, and is ready.
async fn start_cluster(n: usize, capabilities: &[&str]) -> Vec<MeshNode> {
    mesh_tests::start_cluster(n, CONVERGE, |_| {
        MeshNode::builder().capabilities(capabilities.iter().copied())
    })
    .await
}

/// Starts one more node, seeded with the first node of `nodes`, and waits until the grown cluster
/// has converged.
async fn join_cluster(nodes: &mut Vec<MeshNode>, capabilities: &[&str]) {
    let started = Instant::now();
    let node = MeshNode::builder()
        .capabilities(capabilities.iter().copied())
        .seeds([nodes[0].addr().to_string()])
        .start()
        .await;
    nodes.push(node);
    wait_converged(nodes, CONVERGE).await;
    eprintln!(
        "node {} joined; cluster converged in {:.1?}",
        nodes.last().unwrap().id(),
        started.elapsed()
    );
}

/// The status of `node` as `observer` sees it (`None` if it does not list it).
async fn status_seen_by(observer: &Client, node: &str) -> Option<String> {
    let view = observer.cluster().await;
    member(&view, node).map(|m| m["status"].as_str().unwrap_or("?").to_string())
}

/// Polls each observer's `/cluster` until it lists `node` as dead; returns how long that took.
async fn wait_marked_dead(observers: &[&MeshNode], node: &str, within: Duration) -> Duration {
    let started = Instant::now();
    for observer in observers {
        let c = &observer.client();
        let what = format!("{} to mark {node} dead", observer.id());
        let remaining = within.saturating_sub(started.elapsed());
        eventually(&what, remaining, || async move {
            (status_seen_by(c, node).await.as_deref() == Some("dead")).then_some(())
        })
        .await;
    }
    started.elapsed()
}

/// `activations` of a `/cluster` body.
async fn activations(node: &MeshNode) -> u64 {
    let view = node.client().cluster().await;
    view["activations"]
        .as_u64()
        .unwrap_or_else(|| panic!("/cluster of {} without activations: {view}", node.id()))
}

/// The node `client`'s node names as the owner of `id` for `capability` (asserting 200).
async fn owner(client: &Client, id: &str, capability: &str) -> String {
    let r = client.owner(id, capability).await;
    r.ok()["node"]
        .as_str()
        .unwrap_or_else(|| panic!("/owner without a node: {r}"))
        .to_string()
}

/// The owner of `id` for `capability`, asserting every node of `nodes` names the same one.
async fn agreed_owner(nodes: &[&MeshNode], id: &str, capability: &str) -> String {
    let mut seen = BTreeMap::new();
    for node in nodes {
        seen.insert(
            node.id().to_string(),
            owner(&node.client(), id, capability).await,
        );
    }
    let owners: BTreeSet<String> = seen.values().cloned().collect();
    assert_eq!(
        owners.len(),
        1,
        "nodes disagree on the owner of {id:?} ({capability}): {seen:?}"
    );
    owners.into_iter().next().unwrap()
}

/// Fresh ids (with `prefix`) whose owner for `capability`, as `client` sees it, satisfies `wanted`;
/// `count` of them, with their owners.
async fn ids_where(
    client: &Client,
    prefix: &str,
    capability: &str,
    count: usize,
    wanted: impl Fn(&str) -> bool,
) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for _ in 0..count * 200 {
        let id = unique(prefix);
        let owner = owner(client, &id, capability).await;
        if wanted(&owner) {
            found.push((id, owner));
            if found.len() == count {
                return found;
            }
        }
    }
    panic!("found only {} of {count} wanted {prefix} ids", found.len());
}

/// A fresh id whose owner for `capability` is not `entry`; returns `(id, owner)`.
async fn id_owned_elsewhere(entry: &MeshNode, capability: &str) -> (String, String) {
    let not_entry = |owner: &str| owner != entry.id();
    ids_where(&entry.client(), capability, capability, 1, not_entry)
        .await
        .remove(0)
}

fn node_capabilities(node: &MeshNode) -> BTreeSet<String> {
    node.capabilities().iter().cloned().collect()
}

fn ids<'a>(nodes: impl Iterator<Item = &'a MeshNode>) -> Vec<String> {
    nodes.map(|n| n.id().to_string()).collect()
}

/// Asserts an error reply (status, code, non-empty message) whose message reads once: it does not
/// embed an error body, and no fragment of it is repeated (as happens when each hop wraps the
/// message it got in its own).
#[track_caller]
fn expect_hop_error(r: &Resp, status: u16, code: &str) -> String {
    r.expect_error(status, code);
    let message = r.body["error"]["message"].as_str().unwrap().to_string();
    assert!(
        !message.contains("{\"") && !message.contains("\"error\""),
        "the message embeds another error body: {r}"
    );
    if let Some(fragment) = repeated_fragment(&message, 16) {
        panic!("the message repeats {fragment:?}: {r}");
    }
    message
}

/// A fragment of `window` characters that occurs twice (without overlapping) in `s`, if any.
fn repeated_fragment(s: &str, window: usize) -> Option<String> {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() < 2 * window {
        return None;
    }
    for start in 0..=chars.len() - 2 * window {
        let fragment: String = chars[start..start + window].iter().collect();
        let rest: String = chars[start + window..].iter().collect();
        if rest.contains(&fragment) {
            return Some(fragment);
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------------
// 1. Convergence
// ---------------------------------------------------------------------------------------------------

#[tokio::test]
async fn three_nodes_converge_on_one_member_list() {
    let nodes = start_cluster(3, &ALL_CAPABILITIES).await;

    for node in &nodes {
        let view = node.client().cluster().await;
        assert_eq!(view["node"], node.id(), "{view}");
        assert_eq!(view["activations"], 0, "{view}");
        let listed: BTreeSet<String> = view["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["node"].as_str().unwrap().to_string())
            .collect();
        let expected: BTreeSet<String> = ids(nodes.iter()).into_iter().collect();
        assert_eq!(listed, expected, "{} lists: {view}", node.id());
        for other in &nodes {
            let m = member(&view, other.id()).unwrap();
            assert_eq!(
                m["status"],
                "alive",
                "{} on {}: {view}",
                other.id(),
                node.id()
            );
            assert_eq!(m["addr"], other.addr().to_string(), "{view}");
            assert_eq!(
                strings(&m["capabilities"]),
                node_capabilities(other),
                "{view}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// 2. Owner agreement
// ---------------------------------------------------------------------------------------------------

#[tokio::test]
async fn every_node_names_the_same_owner_and_owners_are_spread() {
    let nodes = start_cluster(3, &ALL_CAPABILITIES).await;
    let all: Vec<&MeshNode> = nodes.iter().collect();

    let mut per_owner: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..50 {
        let id = format!("agree-{i}");
        let mut shard = None;
        for node in &nodes {
            let r = node.client().owner(&id, "counter").await;
            let body = r.ok();
            let s = body["shard"].as_u64().unwrap_or_else(|| panic!("{r}"));
            assert_eq!(
                *shard.get_or_insert(s),
                s,
                "shard of {id} differs on {}",
                node.id()
            );
        }
        let owner = agreed_owner(&all, &id, "counter").await;
        assert!(
            nodes.iter().any(|n| n.id() == owner),
            "owner {owner} is not a node of the cluster"
        );
        *per_owner.entry(owner).or_default() += 1;
    }
    assert!(
        per_owner.len() >= 2,
        "50 ids all owned by one node: {per_owner:?}"
    );
    eprintln!("owners of 50 ids: {per_owner:?}");
}

// ---------------------------------------------------------------------------------------------------
// 3. Location transparency
// ---------------------------------------------------------------------------------------------------

#[tokio::test]
async fn calls_through_any_node_reach_the_one_activation() {
    let nodes = start_cluster(3, &ALL_CAPABILITIES).await;
    let all: Vec<&MeshNode> = nodes.iter().collect();
    let id = "counter_everywhere";
    let owner = agreed_owner(&all, id, "counter").await;

    let mut pid = None;
    for count in 1..=6 {
        let entry = &nodes[(count - 1) % 3];
        let r = entry.client().call(&counter(id, json!({}))).await;
        assert_eq!(r.result(), &json!({"ok": count}), "via {}: {r}", entry.id());
        assert_eq!(r.node(), owner, "via {}: {r}", entry.id());
        assert_eq!(
            pid.get_or_insert_with(|| r.pid()),
            &r.pid(),
            "one identity, one activation: {r}"
        );
    }
    let owner_node = nodes.iter().find(|n| n.id() == owner).unwrap();
    assert_eq!(activations(owner_node).await, 1);
    for other in nodes.iter().filter(|n| n.id() != owner) {
        assert_eq!(
            activations(other).await,
            0,
            "{} activated a copy",
            other.id()
        );
    }

    // A cast entering through a non-owner reaches the same activation.
    let non_owners: Vec<&MeshNode> = nodes.iter().filter(|n| n.id() != owner).collect();
    let r = non_owners[0]
        .client()
        .cast(&counter(id, json!({"action": "reset"})))
        .await;
    r.expect_status(202);
    assert_eq!(r.body, json!({"status": "accepted"}), "{r}");
    // Each non-owner forwarded what it took in, and counted the hops with their latency.
    let hops = non_owners[0].metric("mesh_hops_total").await;
    assert!(hops >= 2.0, "calls and the cast went through hops: {hops}");
    assert_eq!(
        non_owners[0]
            .metric("mesh_hop_duration_seconds_count")
            .await,
        hops
    );
    let (later, pid) = (non_owners[1].client(), pid.unwrap());
    let (later, pid, owner) = (&later, &pid, &owner);
    // Counts 7, 8, ... until the reset lands, then 1.
    eventually(
        "a later call to see the cast's reset",
        CONVERGE,
        || async move {
            let r = later.call(&counter(id, json!({}))).await;
            assert_eq!(&r.pid(), pid, "{r}");
            assert_eq!(&r.node(), owner, "{r}");
            (r.result() == &json!({"ok": 1})).then_some(())
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------------
// 4. Errors cross the hop
// ---------------------------------------------------------------------------------------------------

#[tokio::test]
async fn errors_of_a_remote_owner_reach_the_caller_intact() {
    let nodes = start_cluster(3, &ALL_CAPABILITIES).await;
    let entry = &nodes[0];
    let c = entry.client();

    // unknown_module: the owner has no actor type under that name.
    let (id, _) = id_owned_elsewhere(entry, "counter").await;
    let r = c.call(&req("NoSuchActor", &id, "counter", json!({}))).await;
    let message = expect_hop_error(&r, 404, "unknown_module");
    eprintln!("unknown_module across the hop: {message}");

    // init_failed: GameActor rejects a negative starting level.
    let (id, owner) = id_owned_elsewhere(entry, "game").await;
    let body = with_field(
        game(&id, json!({"action": "get_state"})),
        "init_arg",
        json!({"starting_level": -1}),
    );
    let message = expect_hop_error(&c.call(&body).await, 422, "init_failed");
    eprintln!("init_failed across the hop: {message}");
    // Nothing was activated: a valid init_arg starts the actor afresh.
    let body = with_field(
        game(&id, json!({"action": "get_state"})),
        "init_arg",
        json!({"starting_level": 4}),
    );
    let r = c.call(&body).await;
    assert_eq!(
        r.result(),
        &json!({"ok": {"id": id, "level": 4, "score": 0}}),
        "{r}"
    );
    assert_eq!(r.node(), owner, "{r}");

    // actor_crashed: the remote actor panics, is restarted, and the next call meets a new pid.
    let (id, owner) = id_owned_elsewhere(entry, "crasher").await;
    let first = c.call(&crasher(&id, json!({}))).await;
    assert_eq!(first.result(), &json!({"ok": 1}), "{first}");
    assert_eq!(first.node(), owner, "{first}");
    let r = c.call(&crasher(&id, json!({"action": "crash"}))).await;
    let message = expect_hop_error(&r, 500, "actor_crashed");
    eprintln!("actor_crashed across the hop: {message}");
    let next = c.call(&crasher(&id, json!({}))).await;
    assert_eq!(next.result(), &json!({"ok": 1}), "fresh state: {next}");
    assert_eq!(next.node(), owner, "{next}");
    assert_ne!(next.pid(), first.pid(), "restarted: {next}");

    // timeout: the remote Sleeper does not answer within timeout_ms.
    let (id, owner) = id_owned_elsewhere(entry, "sleeper").await;
    let body = with_field(sleeper(&id, 3000), "timeout_ms", json!(300));
    let r = c.call(&body).await;
    let message = expect_hop_error(&r, 504, "timeout");
    eprintln!("timeout across the hop after {:?}: {message}", r.elapsed);
    assert!(
        r.elapsed < Duration::from_millis(2500),
        "the caller waited for the sleeper instead of timing out: {r}"
    );
    // The node lives on and the Sleeper still answers.
    let r = c.call(&sleeper(&id, 10)).await;
    assert_eq!(r.result(), &json!({"ok": 10}), "{r}");
    assert_eq!(r.node(), owner, "{r}");
}

// ---------------------------------------------------------------------------------------------------
// 5. Capability placement
// ---------------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_capability_only_one_node_has_is_placed_there() {
    let nodes = start_cluster(3, &ALL_CAPABILITIES).await;
    let third = &nodes[2];
    let capability = "only-on-three";

    // Nobody has it yet.
    nodes[0]
        .client()
        .owner("special-0", capability)
        .await
        .expect_error(503, "no_capable_node");

    let r = third
        .client()
        .post_json("/capabilities", &json!({"capabilities": [capability]}))
        .await;
    let mut expected: BTreeSet<String> = node_capabilities(third);
    expected.insert(capability.to_string());
    assert_eq!(strings(&r.ok()["capabilities"]), expected, "{r}");

    let started = Instant::now();
    for node in &nodes[..2] {
        let c = &node.client();
        let what = format!("{} to see {capability} on {}", node.id(), third.id());
        eventually(&what, CONVERGE, || async move {
            let r = c.owner("special-0", capability).await;
            (r.status == 200 && r.body["node"] == third.id()).then_some(())
        })
        .await;
        let view = c.cluster().await;
        let m = member(&view, third.id()).unwrap();
        assert_eq!(strings(&m["capabilities"]), expected, "{view}");
    }
    eprintln!("capability propagated in {:.1?}", started.elapsed());

    for i in 0..5 {
        let id = format!("special-{i}");
        let body = req("Counter", &id, capability, json!({}));
        for (count, entry) in [&nodes[0], &nodes[1]].into_iter().enumerate() {
            let r = entry.client().call(&body).await;
            assert_eq!(r.node(), third.id(), "via {}: {r}", entry.id());
            assert_eq!(r.result(), &json!({"ok": count + 1}), "{r}");
        }
    }
    assert_eq!(activations(third).await, 5);
}

// ---------------------------------------------------------------------------------------------------
// 6. A node killed with SIGKILL
// ---------------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_killed_node_is_declared_dead_and_its_ids_move_to_survivors() {
    let mut nodes = start_cluster(3, &ALL_CAPABILITIES).await;
    let victim_id = nodes[2].id().to_string();
    let c1 = nodes[0].client();

    // Five counters living on the victim, called twice each.
    let victims = |owner: &str| owner == victim_id;
    let owned = ids_where(&c1, "doomed", "counter", 5, victims).await;
    let mut old_pids = BTreeMap::new();
    for (id, _) in &owned {
        c1.call(&counter(id, json!({}))).await.result();
        let r = c1.call(&counter(id, json!({}))).await;
        assert_eq!(r.result(), &json!({"ok": 2}), "{r}");
        assert_eq!(r.node(), victim_id, "{r}");
        old_pids.insert(id.clone(), r.pid());
    }

    nodes[2].sigkill();
    let status = nodes[2].wait_exit(Duration::from_secs(10)).await;
    assert!(status.is_some(), "SIGKILL'd node still running");
    let survivors: Vec<&MeshNode> = nodes[..2].iter().collect();
    let took = wait_marked_dead(&survivors, &victim_id, DEAD_AFTER_KILL).await;
    eprintln!("killed node declared dead by both survivors after {took:.1?}");

    for (i, (id, _)) in owned.iter().enumerate() {
        let owner = agreed_owner(&survivors, id, "counter").await;
        assert_ne!(owner, victim_id, "{id} still owned by the dead node");
        let entry = survivors[i % 2];
        let r = entry.client().call(&counter(id, json!({}))).await;
        assert_eq!(r.result(), &json!({"ok": 1}), "activated afresh: {r}");
        assert_eq!(r.node(), owner, "{r}");
        assert_ne!(r.pid(), old_pids[id], "{r}");
    }
    for i in 0..50 {
        let id = format!("after-death-{i}");
        let owner = agreed_owner(&survivors, &id, "counter").await;
        assert_ne!(owner, victim_id, "/owner names the dead node for {id}");
    }
}

// ---------------------------------------------------------------------------------------------------
// 7. Graceful leave
// ---------------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_node_leaving_on_sigterm_exits_cleanly_and_is_marked_dead() {
    let mut nodes = start_cluster(3, &ALL_CAPABILITIES).await;
    let leaver_id = nodes[1].id().to_string();
    // Identities the leaver owns, with state: they are handed over before it exits.
    let is_leaver = |owner: &str| owner == leaver_id;
    let counters = ids_where(&nodes[0].client(), "handed", "counter", 6, is_leaver).await;
    for (k, (id, _)) in counters.iter().enumerate() {
        for _ in 0..=k {
            nodes[0]
                .client()
                .call(&counter(id, json!({})))
                .await
                .result();
        }
    }
    let players = ids_where(&nodes[2].client(), "player", "game", 3, is_leaver).await;
    for (id, _) in &players {
        let start = with_field(
            game(id, json!({"action": "increment"})),
            "init_arg",
            json!({"starting_level": 4}),
        );
        assert_eq!(
            nodes[2].client().call(&start).await.result(),
            &json!({"ok": 1})
        );
    }

    nodes[1].sigterm();
    let others = [&nodes[0], &nodes[2]];
    let took = wait_marked_dead(&others, &leaver_id, DEAD_AFTER_LEAVE).await;
    eprintln!("leaving node marked dead by the others after {took:.1?}");

    nodes[1]
        .expect_clean_exit(EXIT_AFTER_SIGTERM, "SIGTERM")
        .await;

    let others = [&nodes[0], &nodes[2]];
    for i in 0..20 {
        let id = format!("after-leave-{i}");
        let owner = agreed_owner(&others, &id, "counter").await;
        assert_ne!(owner, leaver_id, "/owner names the node that left for {id}");
        let r = nodes[0].client().call(&counter(&id, json!({}))).await;
        assert_eq!(r.result(), &json!({"ok": 1}), "{r}");
        assert_eq!(r.node(), owner, "{r}");
    }
    // The leaver's identities continue where they were, on their new owners.
    for (k, (id, _)) in counters.iter().enumerate() {
        let r = nodes[2].client().call(&counter(id, json!({}))).await;
        assert_ne!(r.node(), leaver_id, "{r}");
        assert_eq!(
            r.result(),
            &json!({"ok": k + 2}),
            "{id} kept its count: {r}"
        );
    }
    for (id, _) in &players {
        let r = nodes[0]
            .client()
            .call(&game(id, json!({"action": "get_state"})))
            .await;
        let state = json!({"ok": {"id": id, "level": 4, "score": 1}});
        assert_eq!(r.result(), &state, "{id} kept its state: {r}");
    }
}

// ---------------------------------------------------------------------------------------------------
// 8. A join moves shards
// ---------------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_joining_node_takes_over_shards_and_old_owners_let_go() {
    let mut nodes = start_cluster(2, &ALL_CAPABILITIES).await;
    let c1 = nodes[0].client();

    let ids: Vec<String> = (0..60).map(|i| format!("moving-{i}")).collect();
    let mut before = BTreeMap::new();
    for id in &ids {
        let r = c1.call(&counter(id, json!({}))).await;
        assert_eq!(r.result(), &json!({"ok": 1}), "{r}");
        before.insert(id.clone(), (r.node(), r.pid()));
    }
    assert_eq!(
        activations(&nodes[0]).await + activations(&nodes[1]).await,
        60
    );

    join_cluster(&mut nodes, &ALL_CAPABILITIES).await;
    let newcomer = nodes[2].id().to_string();

    let all: Vec<&MeshNode> = nodes.iter().collect();
    let mut moved = Vec::new();
    let mut stayed = Vec::new();
    for id in &ids {
        let owner = agreed_owner(&all, id, "counter").await;
        let old_owner = &before[id].0;
        if owner == newcomer {
            moved.push(id.clone());
        } else {
            assert_eq!(&owner, old_owner, "{id} moved between two old nodes");
            stayed.push(id.clone());
        }
    }
    eprintln!("{} of 60 ids moved to the new node", moved.len());
    assert!(!moved.is_empty(), "no id moved to the new node");

    // The old owners stop the activations that moved away.
    let (n1, n2) = (&nodes[0], &nodes[1]);
    let expected = stayed.len() as u64;
    let started = Instant::now();
    let what = format!("activations on the old nodes to drop to {expected}");
    eventually(&what, CONVERGE, || async move {
        let sum = activations(n1).await + activations(n2).await;
        assert!(
            sum >= expected,
            "old nodes stopped ids they still own ({sum})"
        );
        (sum == expected).then_some(())
    })
    .await;
    eprintln!("old owners let go in {:.1?}", started.elapsed());
    assert_eq!(activations(&nodes[2]).await, 0);

    // Moved ids continue on the new node from the count handed over; the others keep their
    // activation and state.
    for (i, id) in moved.iter().enumerate() {
        let entry = &nodes[i % 2];
        let r = entry.client().call(&counter(id, json!({}))).await;
        assert_eq!(r.node(), newcomer, "{r}");
        assert_ne!(r.pid(), before[id].1, "{r}");
        assert_eq!(r.result(), &json!({"ok": 2}), "{r}");
    }
    for id in &stayed {
        let r = nodes[2].client().call(&counter(id, json!({}))).await;
        assert_eq!(r.result(), &json!({"ok": 2}), "{r}");
        assert_eq!((r.node(), r.pid()), before[id], "{r}");
    }
    assert_eq!(activations(&nodes[2]).await, moved.len() as u64);
}

// ---------------------------------------------------------------------------------------------------
// 9. Calls during a kill
// ---------------------------------------------------------------------------------------------------

/// One call of the burst: its id, when it started, and what came back.
struct Outcome {
    id: String,
    started: Instant,
    reply: Result<Resp, String>,
}

#[tokio::test]
async fn calls_during_a_kill_get_answers_refusals_or_timeouts_and_never_hang() {
    const WORKERS: usize = 8;
    const CALL_TIMEOUT_MS: u64 = 2000;
    // A reply later than this counts as a hang (the node promised one within timeout_ms).
    const HANG: Duration = Duration::from_secs(6);

    let mut nodes = start_cluster(3, &ALL_CAPABILITIES).await;
    let victim_id = nodes[2].id().to_string();
    let entry = nodes[0].client().with_timeout(Duration::from_secs(15));

    // Half the ids live on the victim, half elsewhere.
    let on_victim = ids_where(&entry, "burst", "counter", 12, |o| o == victim_id).await;
    let elsewhere = ids_where(&entry, "burst", "counter", 12, |o| o != victim_id).await;
    let victim_ids: BTreeSet<String> = on_victim.iter().map(|(id, _)| id.clone()).collect();
    let ids: Arc<Vec<String>> = Arc::new(
        on_victim
            .into_iter()
            .chain(elsewhere)
            .map(|(id, _)| id)
            .collect(),
    );

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let outcomes = Arc::new(Mutex::new(Vec::<Outcome>::new()));
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (entry, ids, stop, done, outcomes) = (
            entry.clone(),
            ids.clone(),
            stop.clone(),
            done.clone(),
            outcomes.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                let id = ids[i % ids.len()].clone();
                i += WORKERS;
                let body = with_field(
                    counter(&id, json!({})),
                    "timeout_ms",
                    json!(CALL_TIMEOUT_MS),
                );
                let started = Instant::now();
                let bytes = serde_json::to_vec(&body).unwrap();
                let reply = entry
                    .try_post_raw("/call", bytes, Some("application/json"))
                    .await
                    .map_err(|e| format!("{e:?}"));
                outcomes
                    .lock()
                    .unwrap()
                    .push(Outcome { id, started, reply });
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let done_now = || done.load(Ordering::Relaxed);

    // Some traffic first, then the kill in the middle of it.
    let d = &done_now;
    eventually("the burst to get going", CONVERGE, || async move {
        (d() >= 48).then_some(())
    })
    .await;
    nodes[2].sigkill();
    let killed_at = Instant::now();
    let survivors: Vec<&MeshNode> = nodes[..2].iter().collect();
    let took = wait_marked_dead(&survivors, &victim_id, DEAD_AFTER_KILL).await;
    let settled_at = Instant::now();
    eprintln!("victim declared dead by both survivors after {took:.1?}");

    // Keep the burst going on the settled cluster for a while.
    let target = done_now() + 96;
    eventually(
        "the burst to go on after the death",
        CONVERGE,
        || async move { (d() >= target).then_some(()) },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("burst worker panicked");
    }

    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    let mut victim_ids_served_after = BTreeSet::new();
    for o in &outcomes {
        let r = match &o.reply {
            Ok(r) => r,
            Err(e) => panic!("call for {} failed without an answer: {e}", o.id),
        };
        assert!(
            r.elapsed <= HANG,
            "call for {} took {:?}: {r}",
            o.id,
            r.elapsed
        );
        match r.status {
            200 => {
                r.result();
            }
            503 => {
                r.expect_error(503, "owner_unavailable");
            }
            // Rule 9: a call in flight when its owner died may have run there; it is reported
            // as a timeout, never as an error that would claim it did not run.
            504 if o.started < settled_at => {
                r.expect_error(504, "timeout");
            }
            _ => panic!(
                "call for {} got neither 200, 503 owner_unavailable nor (in flight at the \
                 kill) 504 timeout: {r}",
                o.id
            ),
        }
        let phase = if o.started < killed_at {
            "before kill"
        } else if o.started < settled_at {
            "while dying"
        } else {
            "after death"
        };
        *tally.entry(format!("{phase}: {}", r.status)).or_default() += 1;
        if o.started >= settled_at {
            // Both survivors agree the victim is dead: nothing is routed to it any more.
            assert_eq!(r.status, 200, "call for {} after the death: {r}", o.id);
            assert_ne!(r.node(), victim_id, "{r}");
            if victim_ids.contains(&o.id) {
                victim_ids_served_after.insert(o.id.clone());
            }
        }
    }
    eprintln!("{} calls: {tally:?}", outcomes.len());
    assert!(
        !victim_ids_served_after.is_empty(),
        "no id of the dead node was served after its death"
    );
}

// ---------------------------------------------------------------------------------------------------
// The message check itself
// ---------------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_forwarded_request_reaching_a_non_owner_is_owner_unavailable() {
    let nodes = start_cluster(2, &ALL_CAPABILITIES).await;
    let (entry, owned_elsewhere) = (&nodes[0], &nodes[1]);
    let (id, owner) = id_owned_elsewhere(entry, "counter").await;
    assert_eq!(owner, owned_elsewhere.id());

    // What a node with a stale view would send: a hop to a node that does not own the id. It is
    // refused, not served and not forwarded again.
    let c = entry.client();
    for path in ["/internal/call", "/internal/cast"] {
        let r = c.post_json(path, &counter(&id, json!({}))).await;
        let message = expect_hop_error(&r, 503, "owner_unavailable");
        assert!(message.contains(owned_elsewhere.id()), "{path}: {message}");
    }
    assert_eq!(activations(entry).await, 0);
    assert_eq!(
        activations(owned_elsewhere).await,
        0,
        "a refused hop was forwarded"
    );

    // Through the public route the same request reaches its owner.
    let reply = c.call(&counter(&id, json!({}))).await;
    assert_eq!(reply.node(), owned_elsewhere.id());
    assert_eq!(reply.result(), &json!({"ok": 1}));
}

#[tokio::test]
async fn nodes_with_another_shard_count_or_secret_never_join_the_cluster() {
    let caps = ["counter"];
    let first = MeshNode::builder().capabilities(caps).start().await;
    let seed = first.addr().to_string();
    let other_shards = MeshNode::builder()
        .capabilities(caps)
        .shards(64)
        .seeds([seed.clone()])
        .start()
        .await;
    let other_secret = MeshNode::builder()
        .capabilities(caps)
        .secret("another-secret")
        .seeds([seed.clone()])
        .start()
        .await;
    let compatible = MeshNode::builder()
        .capabilities(caps)
        .seeds([seed])
        .start()
        .await;

    // The compatible node gossiped with the seed as often as the other two tried to: once it is
    // in, they had every chance to get in too.
    let both = [first, compatible];
    wait_converged(&both, CONVERGE).await;
    for node in &both {
        let view = node.client().cluster().await;
        assert!(member(&view, other_shards.id()).is_none(), "{view}");
        assert!(member(&view, other_secret.id()).is_none(), "{view}");
    }
    for loner in [&other_shards, &other_secret] {
        let view = loner.client().cluster().await;
        let members = view["members"].as_array().expect("members");
        assert_eq!(
            members.len(),
            1,
            "{} joined a cluster it must not: {view}",
            loner.id()
        );
    }
}

/// Refused gossip datagrams of `reason` counted by `node`.
async fn gossip_refused(node: &MeshNode, reason: &str) -> f64 {
    let r = node.client().get("/metrics").await;
    let samples = mesh_tests::metrics(&r.text);
    samples
        .iter()
        .find(|s| {
            s.metric == "mesh_gossip_datagrams_refused_total"
                && s.labels.get("reason") == Some(reason)
        })
        .and_then(mesh_tests::metric_value)
        .unwrap_or_else(|| panic!("no refused {reason} gossip in {}", r.text))
}

#[tokio::test]
async fn a_cluster_with_a_secret_forms_over_sealed_gossip_and_nodes_without_it_stay_out() {
    let secret = "sealed-cluster-secret";
    let nodes = mesh_tests::start_cluster(3, CONVERGE, |_| {
        MeshNode::builder().capabilities(["counter"]).secret(secret)
    })
    .await;
    // Forwarded (signed) through every node to the one activation.
    let id = unique("sealed");
    for (n, node) in nodes.iter().enumerate() {
        let r = node.client().call(&counter(&id, json!({}))).await;
        assert_eq!(r.result(), &json!({"ok": n + 1}), "{r}");
    }

    let before = gossip_refused(&nodes[0], "forged").await;
    let outsider = MeshNode::builder()
        .capabilities(["counter"])
        .seeds([nodes[0].addr().to_string()])
        .start()
        .await;
    eventually(
        "the outsider's plain gossip to be refused as forged",
        CONVERGE,
        || async { (gossip_refused(&nodes[0], "forged").await > before).then_some(()) },
    )
    .await;
    let view = nodes[0].client().cluster().await;
    assert!(member(&view, outsider.id()).is_none(), "{view}");
    let alone = outsider.client().cluster().await;
    assert_eq!(
        alone["members"].as_array().map(Vec::len),
        Some(1),
        "{alone}"
    );
    assert_eq!(gossip_refused(&nodes[1], "replayed").await, 0.0);
}

#[test]
fn repeated_fragment_spots_a_message_wrapped_in_itself() {
    let once = "actor panicked while handling the call (boom!); it has been restarted";
    assert_eq!(repeated_fragment(once, 16), None);
    let wrapped = format!("node-2 answered 500 actor_crashed: {once}: {once}");
    assert!(repeated_fragment(&wrapped, 16).is_some());
    let nested = "no reply within 300 ms: owner said: no reply within 300 ms";
    assert!(repeated_fragment(nested, 16).is_some());
}
