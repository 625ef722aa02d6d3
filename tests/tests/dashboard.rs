//! `GET /dashboard` in a real browser: a cluster of three `mesh-node` processes, some calls, then
//! headless Chromium loads the first node's dashboard, and the test reads from the DOM what a
//! person would see: every node, its status and capabilities, the shards each owns per capability
//! (adding up to the shard count), the activations where the calls went, a call rate, and a
//! node killed with SIGKILL shown without its load. With a secret, the page shows no data and
//! asks for it.
//! Chromium is required: without it the test fails, saying how to install it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mesh_tests::{start_cluster, Api, Chromium, MeshNode, BROWSER_TIMEOUT};

/// How long the cluster may take to agree on its members.
const CONVERGE: Duration = Duration::from_secs(30);
/// Virtual time the page gets per load: its first reading, then more every 2 s.
const PAGE_TIME: Duration = Duration::from_secs(7);
/// How many times, and for how long in all, the DOM is read again until it shows everything.
const ATTEMPTS: usize = 8;
const ATTEMPTS_WITHIN: Duration = Duration::from_secs(180);
/// The capabilities of each node: the first has them all, the others fewer, so that each
/// capability's shards are split among a different set of nodes.
const CAPABILITIES: [&[&str]; 3] = [
    &["counter", "game", "crasher", "sleeper", "account"],
    &["counter", "game"],
    &["counter"],
];

#[tokio::test]
async fn the_dashboard_shows_members_capabilities_shards_and_load_in_a_browser() {
    let chromium = Chromium::find();
    let mut nodes = start_cluster(3, CONVERGE, |i| {
        MeshNode::builder().capabilities(CAPABILITIES[i].iter().copied())
    })
    .await;
    let client = nodes[0].client();

    // Calls through the first node; each id activates one Counter on its owner.
    let mut activations: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..30 {
        let id = format!("dash-{i}");
        assert_eq!(client.count(&id).await, 1);
        let owner = client.owner(&id, "counter").await.ok()["node"].clone();
        let owner = owner.as_str().expect("an owner").to_owned();
        *activations.entry(owner).or_default() += 1;
    }
    let shards = client.get("/dashboard.json").await.ok()["shards"].as_u64();
    let shards = shards.expect("a shard count");

    let url = format!("{}/dashboard", nodes[0].base_url());
    until_shown(&chromium, &url, "the cluster", |dom| {
        missing(dom, &nodes, &activations, shards)
    })
    .await;
    screenshot(&chromium, &url).await;

    // A node that dies is shown without its load, saying why, while the others keep theirs.
    nodes[2].sigkill();
    let dead = nodes[2].id().to_owned();
    until_shown(&chromium, &url, "the killed node as unreachable", |dom| {
        let row = |node: &str| between(dom, &format!("<tr data-node=\"{node}\">"), "</tr>");
        let (Some(killed), Some(alive)) = (row(&dead), row(nodes[0].id())) else {
            return Some(format!("no row for {dead} or {}", nodes[0].id()));
        };
        if !killed.contains("<td class=\"unreachable\"") {
            return Some(format!("{dead} is shown with its load: {killed}"));
        }
        if !alive.contains("<td class=\"num activations\">") {
            return Some(format!("{} lost its load: {alive}", nodes[0].id()));
        }
        None
    })
    .await;
}

/// Loads `url` in Chromium until `missing` finds nothing missing in its DOM (it says what it
/// missed otherwise), at most [`ATTEMPTS`] times within [`ATTEMPTS_WITHIN`]; panics with the
/// last reason and DOM.
async fn until_shown(
    chromium: &Chromium,
    url: &str,
    what: &str,
    missing: impl Fn(&str) -> Option<String>,
) {
    let started = Instant::now();
    let mut why = String::new();
    for attempt in 1..=ATTEMPTS {
        if started.elapsed() > ATTEMPTS_WITHIN {
            break;
        }
        match chromium.dump_dom(url, PAGE_TIME).await {
            Ok(dom) => match missing(&dom) {
                None => {
                    eprintln!("the dashboard showed {what} on load {attempt}");
                    return;
                }
                Some(missed) => why = format!("{missed}; DOM:\n{dom}"),
            },
            Err(e) => why = e,
        }
    }
    panic!(
        "the dashboard did not show {what} after {ATTEMPTS} loads ({:?}, each within \
         {BROWSER_TIMEOUT:?}): {why}",
        started.elapsed()
    );
}

/// What the page does not show (the first thing found), or `None` if it shows everything.
fn missing(
    dom: &str,
    nodes: &[MeshNode],
    activations: &BTreeMap<String, u64>,
    shards: u64,
) -> Option<String> {
    let served_by = format!("<b id=\"served-by\">{}</b>", nodes[0].id());
    if !dom.contains(&served_by) {
        return Some(format!("not `{served_by}`"));
    }
    for (node, capabilities) in nodes.iter().zip(CAPABILITIES) {
        let id = node.id();
        let Some(row) = between(dom, &format!("<tr data-node=\"{id}\">"), "</tr>") else {
            return Some(format!("no row for {id}"));
        };
        for shown in [
            "<span class=\"pill alive\">alive</span>".to_owned(),
            format!("<td class=\"addr\">{}</td>", node.addr()),
        ] {
            if !row.contains(&shown) {
                return Some(format!("{id}'s row has no `{shown}`: {row}"));
            }
        }
        for capability in capabilities {
            if !row.contains(&format!("<span class=\"chip\">{capability}</span>")) {
                return Some(format!("{id}'s row does not show {capability}: {row}"));
            }
        }
        let expected = activations.get(id).copied().unwrap_or(0);
        let shown = number(row, "<td class=\"num activations\">");
        if shown != Some(expected) {
            return Some(format!("{id}: {shown:?} activations, expected {expected}"));
        }
        // A rate appears from the second reading on.
        let rate = between(row, "<td class=\"num call-rate\">", "</td>");
        if rate.and_then(|r| r.parse::<f64>().ok()).is_none() {
            return Some(format!("{id}: no call rate ({rate:?})"));
        }
    }
    let every_capability = CAPABILITIES[0];
    for capability in every_capability {
        let mut sum = 0;
        for (node, capabilities) in nodes.iter().zip(CAPABILITIES) {
            let cell = format!(
                "<td class=\"num shards\" data-capability=\"{capability}\" data-node=\"{}\">",
                node.id()
            );
            let Some(owned) = number(dom, &cell) else {
                return Some(format!("no shard count of {capability} for {}", node.id()));
            };
            if !capabilities.contains(capability) && owned != 0 {
                return Some(format!("{} owns {owned} {capability} shards", node.id()));
            }
            sum += owned;
        }
        let total = number(
            dom,
            &format!("<td class=\"num total\" data-capability=\"{capability}\">"),
        );
        if sum != shards || total != Some(shards) {
            return Some(format!(
                "{capability}: shards add up to {sum}, total shown {total:?}, expected {shards}"
            ));
        }
    }
    None
}

/// The text after the first `start` up to the next `end`.
fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

/// The integer right after `start`, up to the next tag.
fn number(text: &str, start: &str) -> Option<u64> {
    between(text, start, "<")?.trim().parse().ok()
}

/// A screenshot of the page: a PNG of some size (a blank page compresses to almost nothing).
/// With `MESH_TEST_SCREENSHOT=<path>` it is kept there, to look at.
async fn screenshot(chromium: &Chromium, url: &str) {
    let png = std::env::temp_dir()
        .join(mesh_tests::unique("dashboard"))
        .with_extension("png");
    let taken = chromium.screenshot(url, PAGE_TIME, (1280, 900), &png).await;
    let bytes = std::fs::read(&png);
    let _ = std::fs::remove_file(&png);
    taken.unwrap_or_else(|e| panic!("no screenshot: {e}"));
    let bytes = bytes.unwrap_or_else(|e| panic!("no screenshot at {}: {e}", png.display()));
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        bytes.len() > 20_000,
        "a near-empty PNG: {} bytes",
        bytes.len()
    );
    if let Some(keep) = std::env::var_os("MESH_TEST_SCREENSHOT") {
        std::fs::write(&keep, &bytes).expect("keeping the screenshot");
    }
}

#[tokio::test]
async fn the_dashboard_of_a_node_with_a_secret_asks_for_it_and_shows_nothing_without_it() {
    let chromium = Chromium::find();
    let node = MeshNode::standard().secret("s3cret").start().await;
    let url = format!("{}/dashboard", node.base_url());
    until_shown(&chromium, &url, "the secret form", |dom| {
        for shown in [
            "<form id=\"secret\" class=\"shown\">",
            "<span id=\"state\" class=\"refused\">needs the secret</span>",
        ] {
            if !dom.contains(shown) {
                return Some(format!("no `{shown}`"));
            }
        }
        dom.contains(node.id())
            .then(|| format!("{} is shown without the secret", node.id()))
    })
    .await;
}
