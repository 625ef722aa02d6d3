//! Harness for black-box tests of the `mesh-node` binary.
//!
//! Every test starts its own real `mesh-node` process(es) on free loopback ports and talks to them over
//! HTTP, exactly as a user would. The pieces:
//!
//! - [`node_bin`] finds (and, once per test process, builds) the `mesh-node` executable.
//! - [`MeshNode`] is one running node: started by [`NodeBuilder::start`], ready once `GET /health`
//!   answers, killed and reaped on drop (its log is printed if the test is failing).
//! - [`Client`] is an HTTP client bound to one node, with a timeout on every request, returning
//!   [`Resp`] values that carry assertion helpers.
//! - [`eventually`] polls a condition with a deadline, instead of fixed sleeps.
//! - [`Partition`] cuts the network between nodes listening on different loopback IPs
//!   (`127.0.0.2`, `127.0.0.3`, ...; see [`NodeBuilder::host`]) with nftables rules, and heals it.
//! - [`observe`] records `Counter` calls as a client sees them and checks the record against the
//!   contract's "one live activation" rule in real time.
//!
//! Locating the binary: `MESH_NODE_BIN`, when set, is used as is. Otherwise `$CARGO build -p
//! mesh-examples --bin mesh-node` runs once per test process, with the profile and target directory of
//! the running test executable (`target/<profile>/deps/<test>`), and the executable cargo reports for
//! it (normally `target/<profile>/mesh-node`) is used.

use std::fs::{self, File};
use std::future::Future;
use std::io::{Read, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
pub use serde_json::{json, Value};

/// The capabilities of the standard test node: one per example actor.
pub const ALL_CAPABILITIES: [&str; 4] = ["counter", "game", "crasher", "sleeper"];

/// How long a node may take from spawn to answering `GET /health`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Timeout applied to every HTTP request made through [`Client`].
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Requests slower than this are reported on stderr (shown when a test fails).
const SLOW_REQUEST: Duration = Duration::from_secs(1);

/// Environment variables `mesh-node` reads; removed from the inherited environment of every node so that
/// the caller's environment cannot change what a test starts.
const NODE_ENV_VARS: [&str; 6] = [
    "MESH_NODE_ID",
    "MESH_LISTEN",
    "MESH_SEEDS",
    "MESH_CAPABILITIES",
    "MESH_SHARDS",
    "MESH_SECRET",
];

// ---------------------------------------------------------------------------------------------------
// Locating the binary
// ---------------------------------------------------------------------------------------------------

static NODE_BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// Path of the `mesh-node` executable; builds it on first use (once per test process).
///
/// Panics with cargo's output if the build fails.
pub fn node_bin() -> &'static Path {
    match NODE_BIN.get_or_init(|| locate_node_bin().map_err(|e| format!("{e:#}"))) {
        Ok(path) => path,
        Err(e) => panic!("cannot locate the mesh-node binary: {e}"),
    }
}

/// The workspace root (the parent of this package's directory).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// `(target dir, profile dir name)` of the running test executable, from
/// `<target>/<profile>/deps/<test exe>`.
fn target_layout() -> anyhow::Result<(PathBuf, String)> {
    let exe = std::env::current_exe().context("current_exe")?;
    let mut dir = exe.parent().context("test executable has no parent")?;
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().context("deps dir has no parent")?;
    }
    let profile = dir
        .file_name()
        .and_then(|n| n.to_str())
        .context("profile dir has no name")?
        .to_string();
    let target = dir
        .parent()
        .context("profile dir has no parent")?
        .to_path_buf();
    Ok((target, profile))
}

fn locate_node_bin() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("MESH_NODE_BIN") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("MESH_NODE_BIN={} is not a file", path.display());
        }
        return Ok(path);
    }

    let (target, profile) = target_layout()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(workspace_root().join("Cargo.toml"))
        .args(["-p", "mesh-examples", "--bin", "mesh-node"])
        .arg("--message-format=json-render-diagnostics");
    match profile.as_str() {
        "debug" => {
            cmd.args(["--profile", "dev"]);
        }
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    // Build into the same target directory as the running tests (it is the default one unless the outer
    // cargo was given `--target-dir`, which the environment does not carry).
    if target.join("CACHEDIR.TAG").is_file() {
        cmd.arg("--target-dir").arg(&target);
    }
    cmd.stdin(Stdio::null());

    let started = Instant::now();
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("{cmd:?} failed ({}):\n{stderr}", out.status);
    }

    // cargo reports the executable it produced; fall back to the conventional path.
    let reported = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "mesh-node")
        .filter_map(|msg| msg["executable"].as_str().map(PathBuf::from))
        .next_back();
    let conventional = target
        .join(&profile)
        .join(format!("mesh-node{}", std::env::consts::EXE_SUFFIX));
    let path = reported.unwrap_or(conventional);
    if !path.is_file() {
        bail!(
            "{cmd:?} succeeded but {} does not exist:\n{stderr}",
            path.display()
        );
    }
    eprintln!(
        "mesh-tests: using {} (cargo build took {:.1?})",
        path.display(),
        started.elapsed()
    );
    Ok(path)
}

// ---------------------------------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------------------------------

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// A string unique within this test process (and, through the pid, across test processes running
/// at the same time): `<prefix>-<pid>-<n>`.
pub fn unique(prefix: &str) -> String {
    let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// A free TCP port on 127.0.0.1, as the OS hands it out (bind port 0, read it back, close).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// A port that is free on `ip` for TCP and for UDP (a node serves HTTP and gossip on the same
/// port): the OS picks it for TCP (bind `ip:0`), and it is kept only if UDP can bind it too.
pub fn free_port_on(ip: Ipv4Addr) -> u16 {
    for _ in 0..50 {
        let listener = TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("bind {ip}:0: {e}"));
        let port = listener.local_addr().expect("local_addr").port();
        if UdpSocket::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both TCP and UDP on {ip} after 50 attempts");
}

/// Directory for node logs: `<target>/mesh-test-logs`, or the system temp dir.
fn log_dir() -> PathBuf {
    let dir = match target_layout() {
        Ok((target, _)) => target.join("mesh-test-logs"),
        Err(_) => std::env::temp_dir().join("mesh-test-logs"),
    };
    let _ = fs::create_dir_all(&dir);
    dir
}

/// Percent-encodes a query-string component.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The body of a `/call` or `/cast` request.
pub fn req(module: &str, id: &str, capability: &str, payload: Value) -> Value {
    json!({"module": module, "id": id, "capability": capability, "payload": payload})
}

/// A request body for the example `Counter` (capability `counter`).
pub fn counter(id: &str, payload: Value) -> Value {
    req("Counter", id, "counter", payload)
}

/// A request body for the example `GameActor` (capability `game`).
pub fn game(id: &str, payload: Value) -> Value {
    req("GameActor", id, "game", payload)
}

/// A request body for the example `Crasher` (capability `crasher`).
pub fn crasher(id: &str, payload: Value) -> Value {
    req("Crasher", id, "crasher", payload)
}

/// A request body asking the example `Sleeper` (capability `sleeper`) to sleep `sleep_ms`.
pub fn sleeper(id: &str, sleep_ms: u64) -> Value {
    req("Sleeper", id, "sleeper", json!({"sleep_ms": sleep_ms}))
}

/// `body` with `field` set to `value`, e.g. `with_field(game(..), "init_arg", json!({..}))`.
pub fn with_field(mut body: Value, field: &str, value: Value) -> Value {
    body[field] = value;
    body
}

/// Polls `f` every 25 ms until it returns `Some`, or panics after `timeout` naming `what`.
///
/// Closures that use a client should copy a reference into an `async move` block:
/// `let c = &client; eventually("x", t, || async move { c.get("/health").await ... }).await`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Parses Prometheus text format into `(series, value)` pairs, where `series` is the metric name with
/// its labels (e.g. `mesh_calls_total{module="Counter"}`). Comment lines are skipped.
pub fn metric_samples(text: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // The series ends after the closing brace of the labels, or at the first space.
        let series_end = match line.find('{') {
            Some(open) if line[..open].find(' ').is_none() => match line[open..].find('}') {
                Some(close) => open + close + 1,
                None => continue,
            },
            _ => match line.find(' ') {
                Some(sp) => sp,
                None => continue,
            },
        };
        let (series, rest) = line.split_at(series_end);
        let Some(value) = rest.split_whitespace().next() else {
            continue;
        };
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => match v.parse::<f64>() {
                Ok(v) => v,
                Err(_) => continue,
            },
        };
        out.push((series.to_string(), value));
    }
    out
}

// ---------------------------------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------------------------------

/// How to start a node. Obtain with [`MeshNode::builder`].
#[derive(Debug, Clone)]
pub struct NodeBuilder {
    node_id: String,
    capabilities: Vec<String>,
    secret: Option<String>,
    shards: Option<u32>,
    seeds: Vec<String>,
    extra_args: Vec<String>,
    env: Vec<(String, String)>,
    via_env: bool,
    ready_timeout: Duration,
    host: Ipv4Addr,
}

impl NodeBuilder {
    /// The node id (default: a unique `node-<pid>-<n>`).
    pub fn node_id(mut self, id: impl Into<String>) -> Self {
        self.node_id = id.into();
        self
    }

    /// The capabilities passed with `--capabilities` (default: none).
    pub fn capabilities<I, S>(mut self, caps: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.capabilities = caps.into_iter().map(Into::into).collect();
        self
    }

    /// `--secret`; the node's [`Client`]s then send `Authorization: Bearer <secret>`.
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.secret = Some(secret.into());
        self
    }

    /// `--shards`.
    pub fn shards(mut self, shards: u32) -> Self {
        self.shards = Some(shards);
        self
    }

    /// `--seeds` (the `--listen` addresses of other nodes).
    pub fn seeds<I, S>(mut self, seeds: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.seeds = seeds.into_iter().map(Into::into).collect();
        self
    }

    /// An extra command-line argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// An extra environment variable for the node process.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Pass the settings as `MESH_*` environment variables instead of flags.
    pub fn via_env(mut self) -> Self {
        self.via_env = true;
        self
    }

    /// The loopback IP the node listens on (`--listen <host>:<port>`; default `127.0.0.1`), e.g.
    /// `127.0.0.2`: nodes on different IPs can be cut apart with a [`Partition`] while clients
    /// (which connect from `127.0.0.1`) still reach all of them. Every `127.0.0.0/8` address is on
    /// `lo` on Linux, so no setup is needed. The port is still picked free (on this IP).
    pub fn host(mut self, host: Ipv4Addr) -> Self {
        self.host = host;
        self
    }

    /// Starts the node and waits until it is ready; panics (with the node's log) on failure.
    pub async fn start(self) -> MeshNode {
        match self.try_start().await {
            Ok(node) => node,
            Err(e) => panic!("starting mesh-node failed: {e:#}"),
        }
    }

    /// Starts the node on a free port (of its [`host`](NodeBuilder::host)) and waits until
    /// `GET /health` answers 200. A start that fails because the port was taken in the meantime is
    /// retried on another port.
    pub async fn try_start(self) -> anyhow::Result<MeshNode> {
        let bin = node_bin();
        let mut last_err = anyhow!("no attempt made");
        for attempt in 0..5 {
            let port = free_port_on(self.host);
            match self.start_on(bin, port, attempt).await {
                Ok(node) => return Ok(node),
                Err(StartError::PortTaken(e)) => last_err = e,
                Err(StartError::Fatal(e)) => return Err(e),
            }
        }
        Err(last_err.context("the listen port was taken on every attempt"))
    }

    fn command(&self, bin: &Path, addr: &str) -> Command {
        let mut cmd = Command::new(bin);
        for var in NODE_ENV_VARS {
            cmd.env_remove(var);
        }
        let caps = self.capabilities.join(",");
        let seeds = self.seeds.join(",");
        let shards = self.shards.map(|s| s.to_string());
        let mut settings: Vec<(&str, &str, &str)> = vec![
            ("--node-id", "MESH_NODE_ID", &self.node_id),
            ("--listen", "MESH_LISTEN", addr),
        ];
        if !self.capabilities.is_empty() {
            settings.push(("--capabilities", "MESH_CAPABILITIES", &caps));
        }
        if !self.seeds.is_empty() {
            settings.push(("--seeds", "MESH_SEEDS", &seeds));
        }
        if let Some(shards) = &shards {
            settings.push(("--shards", "MESH_SHARDS", shards));
        }
        if let Some(secret) = &self.secret {
            settings.push(("--secret", "MESH_SECRET", secret));
        }
        for (flag, var, value) in settings {
            if self.via_env {
                cmd.env(var, value);
            } else {
                cmd.arg(flag).arg(value);
            }
        }
        cmd.args(&self.extra_args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null());
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt as _;
            // If the test process dies without running destructors (e.g. killed), take the node with it.
            // (Linux sends this when the spawning *thread* exits: start nodes from the test's own thread,
            // as `#[tokio::test]` bodies do, not from a short-lived helper thread.)
            // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        cmd
    }

    async fn start_on(&self, bin: &Path, port: u16, attempt: u32) -> Result<MeshNode, StartError> {
        let addr: SocketAddr = (self.host, port).into();
        let log_path = log_dir().join(format!("{}-{attempt}.log", self.node_id));
        let log = File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))
            .map_err(StartError::Fatal)?;
        let log2 = log
            .try_clone()
            .context("cloning log file")
            .map_err(StartError::Fatal)?;
        let mut cmd = self.command(bin, &addr.to_string());
        cmd.stdout(log).stderr(log2);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {cmd:?}"))
            .map_err(StartError::Fatal)?;
        let mut node = MeshNode {
            id: self.node_id.clone(),
            addr,
            secret: self.secret.clone(),
            capabilities: self.capabilities.clone(),
            child,
            log_path,
            print_log_on_panic: true,
        };
        match node.wait_ready(self.ready_timeout).await {
            Ok(()) => Ok(node),
            Err(e) => {
                node.print_log_on_panic = false;
                let log = node.log();
                let cmdline = format!("{cmd:?}");
                drop(node); // kill and reap
                let lower = log.to_lowercase();
                let err = e.context(format!("{cmdline}\n--- node log ---\n{log}"));
                if lower.contains("address already in use")
                    || lower.contains("addrinuse")
                    || lower.contains("os error 98")
                    || matches!(err.downcast_ref::<ReadyError>(), Some(ReadyError::NotUs(_)))
                {
                    Err(StartError::PortTaken(err))
                } else {
                    Err(StartError::Fatal(err))
                }
            }
        }
    }
}

enum StartError {
    PortTaken(anyhow::Error),
    Fatal(anyhow::Error),
}

#[derive(Debug)]
enum ReadyError {
    /// Something else answered on our port.
    NotUs(String),
}

impl std::fmt::Display for ReadyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadyError::NotUs(other) => write!(f, "another node ({other}) answers on this port"),
        }
    }
}

impl std::error::Error for ReadyError {}

/// One running `mesh-node` process. Killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct MeshNode {
    id: String,
    addr: SocketAddr,
    secret: Option<String>,
    capabilities: Vec<String>,
    child: Child,
    log_path: PathBuf,
    print_log_on_panic: bool,
}

impl MeshNode {
    /// A builder with a unique node id and no capabilities.
    pub fn builder() -> NodeBuilder {
        NodeBuilder {
            node_id: unique("node"),
            capabilities: Vec::new(),
            secret: None,
            shards: None,
            seeds: Vec::new(),
            extra_args: Vec::new(),
            env: Vec::new(),
            via_env: false,
            ready_timeout: READY_TIMEOUT,
            host: Ipv4Addr::LOCALHOST,
        }
    }

    /// A builder with [`ALL_CAPABILITIES`].
    pub fn standard() -> NodeBuilder {
        Self::builder().capabilities(ALL_CAPABILITIES)
    }

    /// Starts a standard node (all example capabilities, no secret, default shards).
    pub async fn start() -> MeshNode {
        Self::standard().start().await
    }

    /// The node id given with `--node-id`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The listen address, `<host>:<port>` (`127.0.0.1:<port>` unless [`NodeBuilder::host`] said
    /// otherwise).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<host>:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The capabilities given at start.
    pub fn capabilities(&self) -> &[String] {
        &self.capabilities
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A client that sends this node's secret, if it has one.
    pub fn client(&self) -> Client {
        let c = Client::new(self.base_url());
        match &self.secret {
            Some(s) => c.with_secret(s),
            None => c,
        }
    }

    /// A client that sends no secret.
    pub fn client_without_secret(&self) -> Client {
        Client::new(self.base_url())
    }

    /// Everything the node printed so far (stdout and stderr).
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Path of the node's log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Sends a signal (e.g. `libc::SIGTERM`) to the node, unless it has already exited.
    pub fn signal(&mut self, signal: i32) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
            // SAFETY: plain kill(2) on our own child, which has not been reaped (try_wait said so).
            let rc = unsafe { libc::kill(pid, signal) };
            assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
        }
    }

    /// Sends SIGTERM.
    pub fn sigterm(&mut self) {
        self.signal(libc::SIGTERM);
    }

    /// Sends SIGINT (what ctrl-c sends).
    pub fn sigint(&mut self) {
        self.signal(libc::SIGINT);
    }

    /// Sends SIGKILL: the node dies at once, without leaving the cluster. (Dropping a
    /// [`MeshNode`] also kills it, but reaps it too; this leaves the [`MeshNode`] in place.)
    pub fn sigkill(&mut self) {
        self.signal(libc::SIGKILL);
    }

    /// Waits up to `timeout` for the process to exit and asserts it exited with status 0;
    /// panics with the node's log if it is still running or exited otherwise. `after` says
    /// what should have made it exit (e.g. `"SIGTERM"`), for the message.
    #[track_caller]
    pub fn expect_clean_exit(
        &mut self,
        timeout: Duration,
        after: &str,
    ) -> impl Future<Output = ExitStatus> + '_ {
        let caller = std::panic::Location::caller();
        let after = after.to_string();
        async move {
            let Some(status) = self.wait_exit(timeout).await else {
                panic!(
                    "{caller}: node {} still running {timeout:?} after {after}; log:\n{}",
                    self.id,
                    self.log()
                );
            };
            assert!(
                status.success(),
                "{caller}: node {} exited with {status} after {after}; log:\n{}",
                self.id,
                self.log()
            );
            status
        }
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `true` while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let probe = Client::new(self.base_url()).with_timeout(Duration::from_secs(2));
        let probe = match &self.secret {
            Some(s) => probe.with_secret(s),
            None => probe,
        };
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no answer yet");
        loop {
            if let Some(status) = self.child.try_wait().context("try_wait")? {
                bail!("mesh-node exited with {status} before it was ready ({last})");
            }
            match probe.try_get("/health").await {
                Ok(r) if r.status == 200 => break,
                Ok(r) => last = format!("GET /health: {r}"),
                Err(e) => last = format!("GET /health: {e}"),
            }
            if Instant::now() >= deadline {
                bail!("mesh-node not ready after {timeout:?}: {last}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Make sure it is our process that answered, not another one that took the port first.
        if let Ok(r) = probe.try_get("/cluster").await {
            if let Some(node) = r.body["node"].as_str() {
                if node != self.id {
                    return Err(ReadyError::NotUs(node.to_string()).into());
                }
            }
        }
        if let Some(status) = self.child.try_wait().context("try_wait")? {
            bail!("mesh-node exited with {status} right after answering /health");
        }
        Ok(())
    }
}

impl Drop for MeshNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            // Passing tests leave no logs behind; failing ones keep theirs.
            let _ = fs::remove_file(&self.log_path);
        } else if self.print_log_on_panic {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(200)..];
            eprintln!(
                "--- log of node {} ({}), last {} lines, full log in {} ---\n{}\n--- end of log ---",
                self.id,
                self.addr,
                tail.len(),
                self.log_path.display(),
                tail.join("\n")
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// HTTP client
// ---------------------------------------------------------------------------------------------------

/// An HTTP client bound to one node. Every request has a timeout ([`REQUEST_TIMEOUT`] by default).
/// The non-`try_` methods panic on transport errors (connection refused, timeout, ...).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    timeout: Duration,
    headers: Vec<(String, String)>,
}

impl Client {
    /// A client for `base` (e.g. `http://127.0.0.1:1234`).
    pub fn new(base: impl Into<String>) -> Client {
        Client {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()
                .expect("building reqwest client"),
            base: base.into(),
            timeout: REQUEST_TIMEOUT,
            headers: Vec::new(),
        }
    }

    /// The same client, with a new connection pool that drops connections idle for `idle`.
    ///
    /// A node's server closes keep-alive connections idle for 5 s (actix-web's default); a
    /// request sent on a pooled connection at the moment the node closes it fails without a
    /// reply (`IncompleteMessage`). Tests that count every reply as meaningful should keep
    /// `idle` well under 5 s.
    pub fn with_pool_idle_timeout(mut self, idle: Duration) -> Client {
        self.http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(idle)
            .build()
            .expect("building reqwest client");
        self
    }

    /// The same client with another per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// The same client, sending `Authorization: Bearer <secret>` on every request.
    pub fn with_secret(self, secret: &str) -> Client {
        self.with_header("authorization", &format!("Bearer {secret}"))
    }

    /// The same client, sending this header on every request.
    pub fn with_header(mut self, name: &str, value: &str) -> Client {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends one request. `body` is sent as is, with `content_type` if given.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
        content_type: Option<&str>,
    ) -> reqwest::Result<Resp> {
        let started = Instant::now();
        let what = format!("{method} {}{path}", self.base);
        let mut rb = self
            .http
            .request(method, format!("{}{path}", self.base))
            .timeout(self.timeout);
        for (k, v) in &self.headers {
            rb = rb.header(k.as_str(), v.as_str());
        }
        if let Some(ct) = content_type {
            rb = rb.header("content-type", ct);
        }
        if let Some(body) = body {
            rb = rb.body(body);
        }
        let resp = rb.send().await?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = resp.bytes().await?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let elapsed = started.elapsed();
        if elapsed > SLOW_REQUEST {
            // Shown with the output of a failing test.
            eprintln!("mesh-tests: slow request: {what} -> {status} after {elapsed:?}");
        }
        Ok(Resp {
            status,
            body,
            text,
            content_type,
            elapsed,
        })
    }

    /// `GET path`, returning transport errors.
    pub async fn try_get(&self, path: &str) -> reqwest::Result<Resp> {
        self.request(reqwest::Method::GET, path, None, None).await
    }

    /// `POST path` with raw bytes, returning transport errors.
    pub async fn try_post_raw(
        &self,
        path: &str,
        body: impl Into<Vec<u8>>,
        content_type: Option<&str>,
    ) -> reqwest::Result<Resp> {
        self.request(reqwest::Method::POST, path, Some(body.into()), content_type)
            .await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Resp {
        match self.try_get(path).await {
            Ok(r) => r,
            Err(e) => panic!("GET {}{path} failed: {e:?}", self.base),
        }
    }

    /// `POST path` with raw bytes and an optional content type.
    pub async fn post_raw(
        &self,
        path: &str,
        body: impl Into<Vec<u8>>,
        content_type: Option<&str>,
    ) -> Resp {
        match self.try_post_raw(path, body, content_type).await {
            Ok(r) => r,
            Err(e) => panic!("POST {}{path} failed: {e:?}", self.base),
        }
    }

    /// `POST path` with a JSON body (`Content-Type: application/json`).
    pub async fn post_json(&self, path: &str, body: &Value) -> Resp {
        let bytes = serde_json::to_vec(body).expect("serialize JSON");
        self.post_raw(path, bytes, Some("application/json")).await
    }

    /// `POST /call`.
    pub async fn call(&self, body: &Value) -> Resp {
        self.post_json("/call", body).await
    }

    /// `POST /cast`.
    pub async fn cast(&self, body: &Value) -> Resp {
        self.post_json("/cast", body).await
    }

    /// `GET /owner?id=..&capability=..`.
    pub async fn owner(&self, id: &str, capability: &str) -> Resp {
        self.get(&format!(
            "/owner?id={}&capability={}",
            encode(id),
            encode(capability)
        ))
        .await
    }

    /// `GET /cluster`, asserting 200.
    pub async fn cluster(&self) -> Value {
        self.get("/cluster").await.ok().clone()
    }

    /// `POST /call` to `Counter` with capability `counter` and an empty payload; returns the count.
    pub async fn count(&self, id: &str) -> i64 {
        let r = self.call(&counter(id, json!({}))).await;
        r.result()["ok"]
            .as_i64()
            .unwrap_or_else(|| panic!("Counter reply is not {{\"ok\": <int>}}: {r}"))
    }
}

/// A response: status, body as JSON (`Value::Null` if it is not JSON), raw text, timing.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub text: String,
    pub content_type: Option<String>,
    pub elapsed: Duration,
}

impl std::fmt::Display for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = if self.text.len() > 2000 {
            let mut end = 2000;
            while !self.text.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}... ({} bytes)", &self.text[..end], self.text.len())
        } else {
            self.text.clone()
        };
        write!(f, "HTTP {} after {:?}: {text}", self.status, self.elapsed)
    }
}

impl Resp {
    /// Asserts the status.
    #[track_caller]
    pub fn expect_status(&self, status: u16) -> &Resp {
        assert_eq!(self.status, status, "unexpected status: {self}");
        self
    }

    /// Asserts 200 and returns the JSON body.
    #[track_caller]
    pub fn ok(&self) -> &Value {
        self.expect_status(200);
        &self.body
    }

    /// Asserts that the reply is served with a `Content-Type` that starts with `media_type`.
    #[track_caller]
    pub fn expect_content_type(&self, media_type: &str) -> &Resp {
        assert!(
            self.content_type
                .as_deref()
                .is_some_and(|ct| ct.starts_with(media_type)),
            "Content-Type is {:?}, not {media_type}: {self}",
            self.content_type
        );
        self
    }

    /// Asserts that the reply is served as `application/json`.
    #[track_caller]
    pub fn expect_json(&self) -> &Resp {
        self.expect_content_type("application/json")
    }

    /// Asserts a successful `/call` reply (`200 {"pid": <non-empty string>, "node": <string>,
    /// "result": ..}`) and returns `result`.
    #[track_caller]
    pub fn result(&self) -> &Value {
        self.expect_status(200);
        self.expect_json();
        assert!(
            self.body["pid"].as_str().is_some_and(|p| !p.is_empty()),
            "call reply without a non-empty string pid: {self}"
        );
        assert!(
            self.body["node"].is_string(),
            "call reply without a string node: {self}"
        );
        let obj = self.body.as_object().expect("object");
        assert!(
            obj.contains_key("result"),
            "call reply without result: {self}"
        );
        &self.body["result"]
    }

    /// The `pid` of a successful `/call` reply.
    #[track_caller]
    pub fn pid(&self) -> String {
        self.result();
        self.body["pid"].as_str().unwrap().to_string()
    }

    /// The `node` of a successful `/call` reply.
    #[track_caller]
    pub fn node(&self) -> String {
        self.result();
        self.body["node"].as_str().unwrap().to_string()
    }

    /// Asserts an error reply: this status and `{"error": {"code": code, "message": <non-empty>}}`.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) -> &Resp {
        assert_eq!(self.status, status, "expected {status} {code}, got: {self}");
        self.expect_json();
        let err = &self.body["error"];
        assert!(
            err.is_object(),
            "error reply is not {{\"error\": {{..}}}}: {self}"
        );
        assert_eq!(err["code"].as_str(), Some(code), "wrong error code: {self}");
        assert!(
            err["message"]
                .as_str()
                .is_some_and(|m| !m.trim().is_empty()),
            "error reply without a non-empty message: {self}"
        );
        self
    }
}

/// `v` as a set of strings; panics (failing the test) if it is not an array of strings.
pub fn strings(v: &Value) -> std::collections::BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("not a string: {s}"))
                .to_string()
        })
        .collect()
}

/// The panic message of the example `Crasher`.
pub const EXAMPLE_CRASH: &str = "boom!";

/// Keeps panics that actors raise on purpose out of the test output: the example `Crasher`'s,
/// and any whose message contains one of `markers`. Any other panic (a failed assertion) is
/// reported as usual. Installed once per test process.
pub fn quiet_intentional_panics(markers: &'static [&'static str]) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("");
            let intended = message == EXAMPLE_CRASH || markers.iter().any(|m| message.contains(m));
            if !intended {
                default(info);
            }
        }));
    });
}

// ---------------------------------------------------------------------------------------------------
// Network partitions
// ---------------------------------------------------------------------------------------------------

/// The nftables family and chain name of every [`Partition`] table.
const NFT_FAMILY: &str = "inet";
const NFT_CHAIN: &str = "out";
/// Prefix of the nftables tables made by [`Partition`]: `mesh_test_<pid>_<n>`.
const NFT_TABLE_PREFIX: &str = "mesh_test_";

/// A network partition between nodes, made with nftables (`nft`, package `nftables`; needs root).
///
/// [`Partition::new`] creates a table of its own, `inet mesh_test_<pid>_<n>`, with a chain on the
/// `output` hook (every packet on `lo` passes it once). [`cut`](Partition::cut) installs rules that
/// drop every packet between a node of one group and a node of another, both ways;
/// [`heal`](Partition::heal) removes them; dropping the guard deletes the table (also when the test
/// panics). A table left behind by a test process that was killed is deleted by the next
/// [`Partition::new`].
///
/// Nodes are named by their listen addresses ([`MeshNode::addr`]), which must be on distinct IPs
/// other than `127.0.0.1` (see [`NodeBuilder::host`]): a node's HTTP and gossip traffic leaves from
/// the IP it listens on and goes to the other node's port, so a rule matches it by source IP,
/// destination IP and that port. A test client connects from `127.0.0.1` and still reaches every
/// node. Matching the ports too keeps two test processes that use the same IPs at the same time
/// from cutting each other's clusters.
#[derive(Debug)]
pub struct Partition {
    table: String,
    rules: usize,
}

impl Partition {
    /// A new table with no rules; panics if `nft` is missing or fails (a test that needs a
    /// partition fails rather than skipping: CI installs nftables).
    pub fn new() -> Partition {
        match Self::try_new() {
            Ok(p) => p,
            Err(e) => panic!("cannot set up a network partition with nft: {e:#}"),
        }
    }

    /// As [`Partition::new`], returning the error.
    pub fn try_new() -> anyhow::Result<Partition> {
        ensure_nft_installed()?;
        remove_stale_tables();
        let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
        let table = format!("{NFT_TABLE_PREFIX}{}_{n}", std::process::id());
        nft(&format!(
            "add table {NFT_FAMILY} {table}\n\
             add chain {NFT_FAMILY} {table} {NFT_CHAIN} \
             {{ type filter hook output priority 0; policy accept; }}\n"
        ))
        .context("creating the nftables table (is nftables installed, and are we root?)")?;
        Ok(Partition { table, rules: 0 })
    }

    /// The table's name (family `inet`).
    pub fn table(&self) -> &str {
        &self.table
    }

    /// How many drop rules are installed.
    pub fn rules(&self) -> usize {
        self.rules
    }

    /// Cuts every node of each group off from every node of every other group, both ways,
    /// replacing any earlier cut in one nftables transaction. Panics on failure.
    pub fn cut(&mut self, groups: &[&[SocketAddr]]) {
        if let Err(e) = self.try_cut(groups) {
            panic!("cutting {groups:?} failed: {e:#}");
        }
    }

    /// As [`Partition::cut`], returning the error.
    pub fn try_cut(&mut self, groups: &[&[SocketAddr]]) -> anyhow::Result<()> {
        let mut seen: Vec<(Ipv4Addr, usize)> = Vec::new();
        let mut v4: Vec<Vec<SocketAddrV4>> = Vec::new();
        for (g, group) in groups.iter().enumerate() {
            let mut addrs = Vec::new();
            for addr in group.iter() {
                let SocketAddr::V4(a) = addr else {
                    bail!("{addr} is not IPv4");
                };
                if *a.ip() == Ipv4Addr::LOCALHOST || !a.ip().is_loopback() {
                    bail!("{addr}: partitioned nodes must listen on 127.0.0.2-127.255.255.254");
                }
                if let Some((_, other)) =
                    seen.iter().find(|(ip, other)| ip == a.ip() && *other != g)
                {
                    bail!("{} is in group {other} and in group {g}", a.ip());
                }
                seen.push((*a.ip(), g));
                addrs.push(*a);
            }
            v4.push(addrs);
        }
        let mut script = format!("flush chain {NFT_FAMILY} {} {NFT_CHAIN}\n", self.table);
        let mut rules = 0;
        for (i, from_group) in v4.iter().enumerate() {
            for (j, to_group) in v4.iter().enumerate() {
                if i == j {
                    continue;
                }
                for from in from_group {
                    for to in to_group {
                        // Everything `from` sends to `to`'s port (requests, gossip), and everything
                        // it sends from its own port to `to` (replies, gossip).
                        for (dir, port) in [("dport", to.port()), ("sport", from.port())] {
                            script.push_str(&format!(
                                "add rule {NFT_FAMILY} {} {NFT_CHAIN} ip saddr {} ip daddr {} \
                                 meta l4proto {{ tcp, udp }} th {dir} {port} drop\n",
                                self.table,
                                from.ip(),
                                to.ip()
                            ));
                            rules += 1;
                        }
                    }
                }
            }
        }
        nft(&script).with_context(|| format!("installing the rules:\n{script}"))?;
        self.rules = rules;
        Ok(())
    }

    /// Removes every rule: the network is whole again. Panics on failure.
    pub fn heal(&mut self) {
        if let Err(e) = nft(&format!(
            "flush chain {NFT_FAMILY} {} {NFT_CHAIN}\n",
            self.table
        )) {
            panic!("healing the partition failed: {e:#}");
        }
        self.rules = 0;
    }
}

impl Default for Partition {
    fn default() -> Partition {
        Partition::new()
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        if let Err(e) = nft(&format!("delete table {NFT_FAMILY} {}\n", self.table)) {
            eprintln!(
                "mesh-tests: could not delete nftables table {NFT_FAMILY} {}: {e:#}",
                self.table
            );
        }
    }
}

/// Installs Debian's `nftables` when `nft` is missing (once per test process), so that
/// `cargo test --workspace` on a fresh machine needs nothing installed by hand. Needs root
/// and apt, as on CI; elsewhere the error says what to install.
fn ensure_nft_installed() -> anyhow::Result<()> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    let result = INSTALLED.get_or_init(|| {
        let present = |cmd: &str| {
            Command::new("sh")
                .args(["-c", &format!("command -v {cmd}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if present("nft") {
            return Ok(());
        }
        if !present("apt-get") {
            return Err("nft is missing: install the nftables package".into());
        }
        eprintln!("mesh-tests: nft is missing; installing Debian's nftables");
        let status = Command::new("sh")
            .args([
                "-c",
                "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables",
            ])
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("running apt-get: {e}"))?;
        if status.success() && present("nft") {
            Ok(())
        } else {
            Err(format!("installing nftables failed ({status}); install it as root"))
        }
    });
    result.clone().map_err(|e| anyhow!(e))
}

/// Runs `nft -f -` with `script` on its stdin.
fn nft(script: &str) -> anyhow::Result<String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft (package nftables)")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(script.as_bytes())
        .context("writing to nft")?;
    let out = child.wait_with_output().context("waiting for nft")?;
    if !out.status.success() {
        bail!(
            "nft -f - exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Deletes the [`Partition`] tables of test processes that no longer run (killed before their
/// guards were dropped). Best effort.
fn remove_stale_tables() {
    let Ok(out) = Command::new("nft")
        .args(["list", "tables", NFT_FAMILY])
        .stdin(Stdio::null())
        .output()
    else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line
            .trim()
            .strip_prefix(&format!("table {NFT_FAMILY} "))
            .filter(|n| n.starts_with(NFT_TABLE_PREFIX))
        else {
            continue;
        };
        let pid = name[NFT_TABLE_PREFIX.len()..]
            .split('_')
            .next()
            .unwrap_or("");
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = nft(&format!("delete table {NFT_FAMILY} {name}\n"));
        }
    }
}

/// Whether a TCP connection from `from` (any port) to `to` is established within `within`: the
/// way to check that a [`Partition`] is in force. Blocks the calling thread (use
/// `tokio::task::spawn_blocking` from async code).
pub fn tcp_connects(from: Ipv4Addr, to: SocketAddrV4, within: Duration) -> std::io::Result<bool> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    fn check(rc: libc::c_int) -> std::io::Result<libc::c_int> {
        if rc < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(rc)
        }
    }
    fn sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
        libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: a.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            },
            sin_zero: [0; 8],
        }
    }
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor this function owns (closed by `OwnedFd`), with
    // pointers to live, correctly sized values.
    unsafe {
        let fd = check(libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        ))?;
        let fd = OwnedFd::from_raw_fd(fd);
        let local = sockaddr(SocketAddrV4::new(from, 0));
        check(libc::bind(
            fd.as_raw_fd(),
            std::ptr::addr_of!(local).cast(),
            len,
        ))?;
        let remote = sockaddr(to);
        if libc::connect(fd.as_raw_fd(), std::ptr::addr_of!(remote).cast(), len) == 0 {
            return Ok(true);
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(err);
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        let ms = libc::c_int::try_from(within.as_millis()).unwrap_or(libc::c_int::MAX);
        if check(libc::poll(&mut pfd, 1, ms))? == 0 {
            return Ok(false);
        }
        let mut so_error: libc::c_int = 0;
        let mut so_len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        check(libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            std::ptr::addr_of_mut!(so_error).cast(),
            &mut so_len,
        ))?;
        if so_error == 0 {
            Ok(true)
        } else {
            Err(std::io::Error::from_raw_os_error(so_error))
        }
    }
}

/// Runs `test` on a fresh current-thread runtime on the test's own thread (nodes must be spawned
/// from it: the harness ties them to it with PR_SET_PDEATHSIG), one such test of the test
/// executable at a time (for tests whose timing figures mean something only if two clusters are
/// not fighting over the cores of a CI machine).
pub fn serial(test: impl Future<Output = ()>) {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building a tokio runtime")
        .block_on(test);
}

// ---------------------------------------------------------------------------------------------------
// Clusters
// ---------------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------------
// Observing calls
// ---------------------------------------------------------------------------------------------------

pub mod observe {
    //! `Counter` calls as a client sees them, and a check of the record against the contract's
    //! "one live activation" rule (8) and "at most once" rule (9), using only real time as the
    //! client measured it.
    //!
    //! Record every call with [`Entry::call`] (one [`Obs`] per call, with when it was sent and
    //! when its reply came), then [`check`] the whole record. Calls for one id may overlap
    //! (several clients calling it at once through different nodes): the check only uses orderings
    //! that the timings prove (a reply received before another call was sent), so overlapping
    //! calls never cause a false alarm, and sequential ones are checked as strictly as a replay
    //! would.

    use std::collections::{BTreeMap, BTreeSet};
    use std::time::{Duration, Instant};

    use super::{counter, json, with_field, Client, MeshNode};

    /// What one `POST /call` to a `Counter` got.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Outcome {
        /// 200 with `{"pid", "node", "result": {"ok": <count>}}`.
        Ack {
            count: i64,
            pid: String,
            node: String,
        },
        /// Any other HTTP reply (or a 200 of the wrong shape, with code `malformed`).
        Refused {
            status: u16,
            code: String,
            text: String,
        },
        /// No HTTP reply at all (connection refused, reset, or the client's timeout).
        NoReply(String),
    }

    impl Outcome {
        /// A short label for tallies: `200`, `503 owner_unavailable`, `no reply`, ...
        pub fn label(&self) -> String {
            match self {
                Outcome::Ack { .. } => "200".to_string(),
                Outcome::Refused { status, code, .. } => format!("{status} {code}"),
                Outcome::NoReply(_) => "no reply".to_string(),
            }
        }

        /// Whether this is a 200.
        pub fn is_ack(&self) -> bool {
            matches!(self, Outcome::Ack { .. })
        }

        /// Whether this is an error reply with this status and code.
        pub fn is_error(&self, status: u16, code: &str) -> bool {
            matches!(self, Outcome::Refused { status: s, code: c, .. } if *s == status && c == code)
        }

        /// 503 `owner_unavailable` or 504 `timeout`: the errors a fault may cause.
        pub fn is_fault_error(&self) -> bool {
            self.is_error(503, "owner_unavailable") || self.is_error(504, "timeout")
        }

        /// Whether the call may have been executed without the caller learning the result
        /// (rule 9: an error reply means "not executed", except `timeout` and `actor_crashed`).
        pub fn maybe_executed(&self) -> bool {
            match self {
                Outcome::Ack { .. } => false,
                Outcome::NoReply(_) => true,
                Outcome::Refused { .. } => {
                    self.is_error(504, "timeout") || self.is_error(500, "actor_crashed")
                }
            }
        }
    }

    impl std::fmt::Display for Outcome {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                Outcome::Ack { count, pid, node } => {
                    write!(f, "200 count {count} pid {pid} node {node}")
                }
                Outcome::Refused { text, .. } => write!(f, "{}: {text}", self.label()),
                Outcome::NoReply(e) => write!(f, "no reply: {e}"),
            }
        }
    }

    /// One call: its id, the entry node, when it was sent (since the test's `t0`), how long it
    /// took, what came back.
    #[derive(Debug, Clone)]
    pub struct Obs {
        pub id: String,
        pub via: String,
        pub at: Duration,
        pub took: Duration,
        pub outcome: Outcome,
    }

    impl Obs {
        /// When the reply arrived, since `t0`.
        pub fn done(&self) -> Duration {
            self.at + self.took
        }

        /// `(count, pid, node)` of a 200.
        pub fn ack(&self) -> Option<(i64, &str, &str)> {
            match &self.outcome {
                Outcome::Ack { count, pid, node } => Some((*count, pid, node)),
                _ => None,
            }
        }
    }

    impl std::fmt::Display for Obs {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(
                f,
                "[{} sent at {:.3}s via {}, {:.0?}] {}",
                self.id,
                self.at.as_secs_f64(),
                self.via,
                self.took,
                self.outcome
            )
        }
    }

    /// How long an [`Entry`] keeps an idle connection (see [`Client::with_pool_idle_timeout`]).
    const POOL_IDLE: Duration = Duration::from_secs(2);

    /// A client of one entry node, remembering the node's id for the record.
    #[derive(Debug, Clone)]
    pub struct Entry {
        pub node: String,
        pub client: Client,
    }

    impl Entry {
        /// A client of `node` with this per-request timeout.
        pub fn of(node: &MeshNode, http_timeout: Duration) -> Entry {
            Entry {
                node: node.id().to_string(),
                client: node
                    .client()
                    .with_timeout(http_timeout)
                    .with_pool_idle_timeout(POOL_IDLE),
            }
        }

        /// `POST /call` to the `Counter` `id` with `timeout_ms`, timed from `t0`.
        pub async fn call(&self, t0: Instant, id: &str, timeout_ms: u64) -> Obs {
            let body = with_field(counter(id, json!({})), "timeout_ms", json!(timeout_ms));
            let bytes = serde_json::to_vec(&body).expect("serialize JSON");
            let sent = Instant::now();
            let reply = self
                .client
                .try_post_raw("/call", bytes, Some("application/json"))
                .await;
            let took = sent.elapsed();
            let outcome = match reply {
                Err(e) => Outcome::NoReply(format!("{e:?}")),
                Ok(r) => {
                    let b = &r.body;
                    match (
                        r.status,
                        b["result"]["ok"].as_i64(),
                        b["pid"].as_str(),
                        b["node"].as_str(),
                    ) {
                        (200, Some(count), Some(pid), Some(node)) if !pid.is_empty() => {
                            Outcome::Ack {
                                count,
                                pid: pid.to_string(),
                                node: node.to_string(),
                            }
                        }
                        (200, ..) => Outcome::Refused {
                            status: 200,
                            code: "malformed".to_string(),
                            text: r.text.clone(),
                        },
                        (status, ..) => Outcome::Refused {
                            status,
                            code: b["error"]["code"].as_str().unwrap_or("?").to_string(),
                            text: r.text.clone(),
                        },
                    }
                }
            };
            Obs {
                id: id.to_string(),
                via: self.node.clone(),
                at: sent.duration_since(t0),
                took,
                outcome,
            }
        }
    }

    /// Tally of outcomes by label.
    pub fn tally<'a>(obs: impl IntoIterator<Item = &'a Obs>) -> BTreeMap<String, usize> {
        let mut t = BTreeMap::new();
        for o in obs {
            *t.entry(o.outcome.label()).or_default() += 1;
        }
        t
    }

    /// At most `max` of `lines`, one a line, and how many were left out.
    pub fn listing(lines: &[String], max: usize) -> String {
        let mut out: Vec<String> = lines.iter().take(max).cloned().collect();
        if lines.len() > max {
            out.push(format!("... and {} more", lines.len() - max));
        }
        out.join("\n")
    }

    /// One pid's replies for one id.
    #[derive(Debug, Clone)]
    pub struct PidSpan {
        pub pid: String,
        /// The `node` of its first reply.
        pub node: String,
        /// When its first reply was sent.
        pub first_at: Duration,
        /// The lowest count it acknowledged.
        pub first_count: i64,
        /// Whether it continued an earlier pid's count (state handed over) rather than starting
        /// afresh.
        pub continued: bool,
        pub acks: usize,
    }

    /// What [`check`] found.
    #[derive(Debug, Default)]
    pub struct Check {
        /// Everything that breaks rule 8 or 9, for a failure message.
        pub violations: Vec<String>,
        /// Ids that a pid answered after another pid had answered after it (rule 8).
        pub superseded: BTreeSet<String>,
        /// Every id's pids, in the order of their first replies.
        pub pids: BTreeMap<String, Vec<PidSpan>>,
        /// Counts missing within a pid's acknowledged counts (explained by calls that may have
        /// been executed without an acknowledgement, or a violation).
        pub skipped: usize,
    }

    /// Checks every id's record (`obs` in any order) for:
    /// - a pid that answers again after another pid answered after it: "an activation that may
    ///   have been superseded never answers again";
    /// - within one pid, a count that does not go up from a reply received before its call was
    ///   sent, or the same count acknowledged twice (two executions saw the same state);
    /// - within one pid, more counts skipped than calls that may have been executed without an
    ///   acknowledgement (`504 timeout`, no reply);
    /// - a new pid whose lowest count is neither fresh (1, or a little more when calls that may
    ///   have run unacknowledged came first) nor above every count acknowledged before it (state
    ///   handed over): state went back in time.
    pub fn check<'a>(obs: impl IntoIterator<Item = &'a Obs>) -> Check {
        let mut by_id: BTreeMap<&str, Vec<&Obs>> = BTreeMap::new();
        for o in obs {
            by_id.entry(&o.id).or_default().push(o);
        }
        let mut out = Check::default();
        for (id, calls) in by_id {
            let before = out.violations.len();
            check_id(id, &calls, &mut out);
            // A broken id usually breaks many times over: keep the first few.
            if out.violations.len() > before + 4 {
                let extra = out.violations.len() - before - 4;
                out.violations.truncate(before + 4);
                out.violations
                    .push(format!("id {id}: {extra} further violations not listed"));
            }
        }
        out
    }

    fn check_id(id: &str, calls: &[&Obs], out: &mut Check) {
        let maybe = calls.iter().filter(|o| o.outcome.maybe_executed()).count();
        let mut acks: Vec<(&Obs, i64, &str)> = calls
            .iter()
            .filter_map(|o| o.ack().map(|(count, pid, _)| (*o, count, pid)))
            .collect();
        acks.sort_by_key(|(o, ..)| o.at);
        let mut by_pid: BTreeMap<&str, Vec<(&Obs, i64)>> = BTreeMap::new();
        for (o, count, pid) in &acks {
            by_pid.entry(pid).or_default().push((o, *count));
        }

        // Superseded pids answering again.
        for (pid, mine) in &by_pid {
            let first_done = mine.iter().map(|(o, _)| o.done()).min().unwrap();
            // The earliest reply of another pid to a call sent after this pid had answered.
            let Some((sup, ..)) = acks
                .iter()
                .filter(|(o, _, p)| p != pid && o.at > first_done)
                .min_by_key(|(o, ..)| o.done())
            else {
                continue;
            };
            let late: Vec<&&Obs> = mine
                .iter()
                .map(|(o, _)| o)
                .filter(|o| o.at > sup.done())
                .collect();
            if let Some(first_late) = late.first() {
                out.superseded.insert(id.to_string());
                out.violations.push(format!(
                    "id {id}: SUPERSEDED pid {pid} answered again ({} times), first: {first_late}; \
                     after it had answered (first reply received at {:.3}s), another pid answered: \
                     {sup}",
                    late.len(),
                    first_done.as_secs_f64()
                ));
            }
        }

        // Counts within each pid.
        for (pid, mine) in &by_pid {
            let mut seen: BTreeMap<i64, &Obs> = BTreeMap::new();
            for (o, count) in mine {
                if let Some(other) = seen.insert(*count, o) {
                    out.violations.push(format!(
                        "id {id}: pid {pid} acknowledged count {count} twice: {other} and {o}"
                    ));
                }
            }
            for (y, cy) in mine {
                if let Some((x, cx)) = mine
                    .iter()
                    .filter(|(x, _)| x.done() < y.at)
                    .max_by_key(|(_, cx)| *cx)
                {
                    if cy <= cx {
                        out.violations.push(format!(
                            "id {id}: pid {pid} acknowledged count {cy} after count {cx}: {y}; \
                             previous: {x}"
                        ));
                    }
                }
            }
            let (lo, hi) = (
                *seen.keys().next().unwrap(),
                *seen.keys().next_back().unwrap(),
            );
            let missing = usize::try_from(hi - lo + 1).unwrap_or(0) - seen.len();
            out.skipped += missing;
            if missing > maybe {
                out.violations.push(format!(
                    "id {id}: pid {pid} skipped {missing} counts between {lo} and {hi}, but only \
                     {maybe} calls for the id may have been executed without an acknowledgement"
                ));
            }
        }

        // Where each pid started: at 1 (fresh state; or a little higher when calls that may have
        // run without an acknowledgement went first), or above every count acknowledged before
        // it (state handed over).
        let mut spans: Vec<PidSpan> = Vec::new();
        for (pid, mine) in &by_pid {
            let (first, _) = mine.iter().min_by_key(|(o, _)| o.at).unwrap();
            let (lowest, lowest_count) = mine.iter().min_by_key(|(_, c)| *c).unwrap();
            let unacked_before = calls
                .iter()
                .filter(|o| o.outcome.maybe_executed() && o.at < lowest.done())
                .count();
            let fresh =
                usize::try_from(*lowest_count).is_ok_and(|c| c >= 1 && c <= 1 + unacked_before);
            let earlier = acks
                .iter()
                .filter(|(o, _, p)| p != pid && o.done() < lowest.at)
                .max_by_key(|(_, c, _)| *c);
            let continued = earlier.is_some_and(|(_, ce, _)| lowest_count > ce);
            if let Some((e, ce, _)) = earlier {
                if !fresh && !continued {
                    out.violations.push(format!(
                        "id {id}: new pid {pid} started at count {lowest_count}, neither fresh (1, \
                         or at most 1 + {unacked_before} calls that may have run unacknowledged) \
                         nor above the count {ce} acknowledged before it: {lowest}; earlier: {e}"
                    ));
                }
            }
            spans.push(PidSpan {
                pid: pid.to_string(),
                node: first
                    .ack()
                    .map(|(_, _, n)| n.to_string())
                    .unwrap_or_default(),
                first_at: first.at,
                first_count: *lowest_count,
                continued: continued && !fresh,
                acks: mine.len(),
            });
        }
        spans.sort_by_key(|s| s.first_at);
        out.pids.insert(id.to_string(), spans);
    }

    /// How strictly counts must follow each other within one pid.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Counts {
        /// Every acknowledged count is greater than the pid's previous one.
        Increasing,
        /// Every acknowledged count is the previous one plus 1, unless a call in between may have been
        /// executed without an acknowledgement (504 `timeout`, no reply): then it is greater. A new pid
        /// starts at 1 or continues (state handed over).
        Continuous,
    }

    /// The last acknowledged reply of one pid for one id.
    #[derive(Debug, Clone)]
    struct Last {
        pid: String,
        node: String,
        count: i64,
        obs: String,
    }

    #[derive(Debug, Default)]
    struct IdHistory {
        current: Option<Last>,
        /// Pids that were replaced by a later one, with their last acknowledged reply and the reply
        /// that superseded them.
        retired: BTreeMap<String, (Last, String)>,
        /// A call since the last acknowledgement may have been executed.
        unacked: bool,
        reported: usize,
    }

    /// Replays every id's calls in order and collects violations of rules 8 and 9 as seen from
    /// outside.
    ///
    /// Unlike [`check`], which only uses orderings the timings prove and so allows overlapping calls,
    /// a `History` needs each id's calls to be sequential and fed in the order they were made; in
    /// [`Counts::Continuous`] mode it is stricter than [`check`] (each count exactly one more than the
    /// last unless a call in between may have run unacknowledged; a new pid starts at 1 or continues).
    #[derive(Debug)]
    pub struct History {
        mode: Counts,
        ids: BTreeMap<String, IdHistory>,
        pub violations: Vec<String>,
        /// Ids answered by a pid after that pid had been superseded.
        pub superseded: BTreeSet<String>,
        /// Acknowledged counts that skipped a value although no call since the previous acknowledgement
        /// may have been executed (informational in [`Counts::Increasing`] mode).
        pub skips: usize,
    }

    impl History {
        pub fn new(mode: Counts) -> History {
            History {
                mode,
                ids: BTreeMap::new(),
                violations: Vec::new(),
                superseded: BTreeSet::new(),
                skips: 0,
            }
        }

        /// Feeds observations; each id's observations must come in the order they were made.
        pub fn feed<'a>(&mut self, all: impl IntoIterator<Item = &'a Obs>) {
            for o in all {
                self.one(o);
            }
        }

        /// How many pids answered each id (every id fed, in id order).
        pub fn pids_per_id(&self) -> Vec<usize> {
            self.ids.values().map(|h| h.retired.len() + 1).collect()
        }

        fn violation(&mut self, id: &str, message: String) {
            let h = self.ids.get_mut(id).unwrap();
            h.reported += 1;
            if h.reported <= 3 {
                self.violations.push(message);
            } else if h.reported == 4 {
                self.violations
                    .push(format!("id {id}: further violations not listed"));
            }
        }

        fn one(&mut self, o: &Obs) {
            let h = self.ids.entry(o.id.clone()).or_default();
            let Outcome::Ack { count, pid, node } = &o.outcome else {
                h.unacked |= o.outcome.maybe_executed();
                return;
            };
            let (count, unacked) = (*count, h.unacked);
            h.unacked = false;
            let this = Last {
                pid: pid.clone(),
                node: node.clone(),
                count,
                obs: o.to_string(),
            };
            let id = &o.id;
            let Some(cur) = h.current.clone() else {
                h.current = Some(this);
                return;
            };
            if cur.pid == *pid {
                let ok = match self.mode {
                    Counts::Increasing => count > cur.count,
                    Counts::Continuous => count == cur.count + 1 || (unacked && count > cur.count),
                };
                if count > cur.count + 1 && !unacked {
                    self.skips += 1;
                }
                h.current = Some(this);
                if !ok {
                    self.violation(
                        id,
                        format!(
                            "id {id}: pid {pid} acknowledged count {count} after count {} \
                             (expected {}): {o}; previous: {}",
                            cur.count,
                            match self.mode {
                                Counts::Increasing => format!("more than {}", cur.count),
                                Counts::Continuous => format!("{}", cur.count + 1),
                            },
                            cur.obs
                        ),
                    );
                }
                return;
            }
            // A pid other than the current one answered.
            let resurrected = h.retired.remove(pid);
            h.retired
                .insert(cur.pid.clone(), (cur.clone(), o.to_string()));
            h.current = Some(this);
            if let Some((old_last, superseded_by)) = resurrected {
                self.superseded.insert(id.clone());
                self.violation(
                    id,
                    format!(
                        "id {id}: SUPERSEDED pid {pid} (node {node}) answered again, count {count}: \
                         {o}; it had been superseded by {superseded_by}; its last reply before that: \
                         {}; the newer pid it answered after: {} (node {}, last count {})",
                        old_last.obs, cur.pid, cur.node, cur.count
                    ),
                );
                return;
            }
            if self.mode == Counts::Continuous
                && !(count == 1 || count == cur.count + 1 || (unacked && count > cur.count))
            {
                self.violation(
                    id,
                    format!(
                        "id {id}: new pid {pid} (node {node}) started at count {count}, neither 1 nor \
                         a continuation of pid {}'s count {}: {o}; previous: {}",
                        cur.pid, cur.count, cur.obs
                    ),
                );
            }
        }
    }
}
