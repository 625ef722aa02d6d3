//! One real `mesh-node` process: [`NodeBuilder`] starts it, [`MeshNode`] owns it.
//!
//! How a node never outlives its test: the program started is `mesh-node-under-test` (a binary of
//! this package, built by cargo with the tests, found through `CARGO_BIN_EXE_mesh-node-under-test`),
//! the very same `mesh_examples::node::run` as `mesh-node`, which also exits when its standard input
//! closes. [`MeshNode`] gives it a pipe as standard input and holds the write end. So:
//! - a test that ends, passes or panics drops its [`MeshNode`]s, which kill (SIGKILL) and reap them;
//! - a test process that dies without running destructors (SIGKILL, an abort, a runner's timeout)
//!   has its end of every pipe closed by the kernel, and each node exits on its own.
//!
//! No `unsafe` is needed for this (the harness used `PR_SET_PDEATHSIG` before, which Linux also fires
//! when only the spawning *thread* exits), and it holds for nodes started through `ip netns exec`
//! too, which execs the program in place (the pid [`MeshNode::pid`] reports is the node's).

use std::fs::{self, File};
use std::future::Future;
use std::io::Read as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::client::Client;
use crate::netns::Host;
use crate::tls::NodeTls;
use crate::{unique, ALL_CAPABILITIES};

/// How long a node may take from spawn to answering `GET /health`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Environment variables `mesh-node` reads; removed from the inherited environment of every node so
/// that the caller's environment cannot change what a test starts.
const NODE_ENV_VARS: &[&str] = &[
    "MESH_NODE_ID",
    "MESH_LISTEN",
    "MESH_ADVERTISE",
    "MESH_SEEDS",
    "MESH_CAPABILITIES",
    "MESH_SHARDS",
    "MESH_SECRET",
    "MESH_SECRET_FILE",
    "MESH_BODY_LIMIT",
    "MESH_BODY_TIMEOUT",
    "MESH_HEADER_TIMEOUT",
    "MESH_KEEP_ALIVE",
    "MESH_MAX_CONNECTIONS",
    "MESH_MAX_CONNECTIONS_PER_IP",
    "MESH_WORKERS",
    "MESH_LEASE_MS",
    "MESH_LOG_FORMAT",
    "MESH_TLS_CERT",
    "MESH_TLS_KEY",
    "MESH_TLS_CA",
    "MESH_TLS_HANDSHAKE_TIMEOUT",
    "MESH_DATA_DIR",
    "MESH_STORE",
    "MESH_IDLE_TIMEOUT",
    // The trace export (mesh-node built with `otel`, as the tests build it).
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_BSP_SCHEDULE_DELAY",
];

/// What a node prints once it serves: `mesh-node <id> listening on http://<addr>` (`https://`
/// with TLS).
const LISTENING: &str = " listening on ";

/// Path of the `mesh-node-under-test` executable, which cargo builds with this package's tests and
/// names in `CARGO_BIN_EXE_mesh-node-under-test` while it runs them (as `cargo nextest` does).
pub fn node_bin() -> PathBuf {
    Program::MeshNode.path()
}

/// Which program a [`NodeBuilder`] starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// `mesh-node` (as `mesh-node-under-test`): every flag of the builder applies.
    MeshNode,
    /// The embedded example's service, `mesh_examples::embedded` (as `embedded-under-test`):
    /// it takes `--node-id`, `--listen`, `--seeds` and `--capabilities`, and keeps no store.
    Embedded,
}

impl Program {
    /// The executable, which cargo builds with this package's tests and names in
    /// `CARGO_BIN_EXE_<name>` while it runs them.
    pub fn path(self) -> PathBuf {
        let var = match self {
            Program::MeshNode => "CARGO_BIN_EXE_mesh-node-under-test",
            Program::Embedded => "CARGO_BIN_EXE_embedded-under-test",
        };
        let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
            panic!("{var} is not set: run the tests with cargo test (or nextest)")
        });
        assert!(path.is_file(), "{var}={} is not a file", path.display());
        path
    }
}

/// Directory for node logs: `mesh-test-logs` in the system temp dir. A passing test deletes its
/// nodes' logs; a failing one prints the end of each and keeps the file.
fn log_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("mesh-test-logs");
    let _ = fs::create_dir_all(&dir);
    dir
}

/// How to start a node. Obtain with [`MeshNode::builder`].
#[derive(Debug, Clone)]
pub struct NodeBuilder {
    program: Program,
    node_id: String,
    capabilities: Vec<String>,
    secret: Option<String>,
    shards: Option<u32>,
    seeds: Vec<String>,
    extra_args: Vec<String>,
    env: Vec<(String, String)>,
    via_env: bool,
    ready_timeout: Duration,
    host: Option<Host>,
    fd_limit: Option<u64>,
    tls: Option<NodeTls>,
    data_dir: Option<PathBuf>,
}

/// Where a node's embedded store lives unless the test gives a directory: a fresh one per
/// start in the system temp dir, removed with the node.
fn temp_data_dir(node_id: &str) -> PathBuf {
    std::env::temp_dir()
        .join("mesh-test-data")
        .join(unique(node_id))
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

    /// Start the node with this `RLIMIT_NOFILE`, soft and hard (through `prlimit`, which execs
    /// the node in place).
    pub fn fd_limit(mut self, limit: u64) -> Self {
        self.fd_limit = Some(limit);
        self
    }

    /// Serve TLS with these files (`--tls-cert`, `--tls-key`, and `--tls-ca` if it has one);
    /// the node's [`Client`]s then use `https://` and trust `tls.trust`.
    pub fn tls(mut self, tls: &NodeTls) -> Self {
        self.tls = Some(tls.clone());
        self
    }

    /// `--data-dir`: the node's embedded state store, kept when the node stops, so that a
    /// node started again with the same directory finds its durable state. Without it every
    /// start gets a fresh directory that is removed with the node.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Pass the settings as `MESH_*` environment variables instead of flags.
    pub fn via_env(mut self) -> Self {
        self.via_env = true;
        self
    }

    /// Run the node in the network namespace of `host` (see [`crate::Network`]), listening on its
    /// address: `ip netns exec <namespace> mesh-node-under-test --listen <host ip>:0 ...`.
    /// Without it the node runs beside the test and listens on `127.0.0.1:0`.
    pub fn host(mut self, host: &Host) -> Self {
        self.host = Some(host.clone());
        self
    }

    /// Starts the node and waits until it is ready; panics (with the node's log) on failure.
    pub async fn start(self) -> MeshNode {
        match self.try_start().await {
            Ok(node) => node,
            Err(e) => panic!("starting mesh-node failed: {e:#}"),
        }
    }

    /// Starts the node on a port the OS picks (`--listen <ip>:0`), reads the address it prints and
    /// waits until `GET /health` answers 200. A node picks one port number for HTTP (TCP) and
    /// gossip (UDP): a start that fails because that number was taken for UDP is retried.
    pub async fn try_start(self) -> anyhow::Result<MeshNode> {
        let mut last_err = None;
        for attempt in 0..5 {
            match self.start_once(attempt).await {
                Ok(node) => return Ok(node),
                Err((e, log)) if log.contains("Address already in use") => last_err = Some(e),
                Err((e, _)) => return Err(e),
            }
        }
        Err(last_err
            .expect("five attempts")
            .context("the port was taken on every attempt"))
    }

    fn command(&self, listen: &str, data_dir: &std::path::Path) -> Command {
        let mut cmd = match &self.host {
            Some(host) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", host.namespace()])
                    .arg(self.program.path());
                cmd
            }
            None => Command::new(self.program.path()),
        };
        if let Some(limit) = self.fd_limit {
            let mut limited = Command::new("prlimit");
            limited
                .arg(format!("--nofile={limit}:{limit}"))
                .arg(cmd.get_program())
                .args(cmd.get_args());
            cmd = limited;
        }
        for var in NODE_ENV_VARS {
            cmd.env_remove(var);
        }
        let caps = self.capabilities.join(",");
        let seeds = self.seeds.join(",");
        let shards = self.shards.map(|s| s.to_string());
        let mut tls_files: Vec<(&str, &str, String)> = Vec::new();
        if let Some(tls) = &self.tls {
            let path = |p: &std::path::Path| p.display().to_string();
            tls_files.push(("--tls-cert", "MESH_TLS_CERT", path(&tls.cert)));
            tls_files.push(("--tls-key", "MESH_TLS_KEY", path(&tls.key)));
            if let Some(ca) = &tls.ca {
                tls_files.push(("--tls-ca", "MESH_TLS_CA", path(ca)));
            }
        }
        let mut settings: Vec<(&str, &str, &str)> = vec![
            ("--node-id", "MESH_NODE_ID", &self.node_id),
            ("--listen", "MESH_LISTEN", listen),
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
        for (flag, var, path) in &tls_files {
            settings.push((flag, var, path.as_str()));
        }
        let data_dir = data_dir.display().to_string();
        if self.program == Program::MeshNode {
            settings.push(("--data-dir", "MESH_DATA_DIR", &data_dir));
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
        // The node lives as long as this pipe (see the module docs).
        cmd.stdin(Stdio::piped());
        cmd
    }

    /// One attempt; on failure, the error and the node's log.
    async fn start_once(&self, attempt: u32) -> Result<MeshNode, (anyhow::Error, String)> {
        let ip = self.host.as_ref().map_or(Ipv4Addr::LOCALHOST, |h| h.ip());
        let log_path = log_dir().join(format!("{}-{attempt}.log", self.node_id));
        let (data_dir, temp_data) = match &self.data_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let dir = temp_data_dir(&self.node_id);
                (dir.clone(), Some(dir))
            }
        };
        let spawned = File::create(&log_path)
            .and_then(|log| Ok((log.try_clone()?, log)))
            .with_context(|| format!("creating {}", log_path.display()))
            .and_then(|(out, err)| {
                let mut cmd = self.command(&format!("{ip}:0"), &data_dir);
                cmd.stdout(out).stderr(err);
                let child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
                Ok((cmd, child))
            });
        let (cmd, mut child) = spawned.map_err(|e| (e, String::new()))?;
        let stdin = child.stdin.take();
        let mut node = MeshNode {
            program: self.program,
            id: self.node_id.clone(),
            // Until the node says where it listens.
            addr: SocketAddr::new(IpAddr::V4(ip), 0),
            secret: self.secret.clone(),
            trust: self.tls.as_ref().map(|tls| tls.trust.clone()),
            capabilities: self.capabilities.clone(),
            child,
            _lifeline: stdin,
            log_path,
            print_log_on_panic: true,
            temp_data,
        };
        match node.wait_ready(self.ready_timeout).await {
            Ok(()) if self.host.is_some() || self.fd_limit.is_some() => match node.check_exec() {
                Ok(()) => Ok(node),
                Err(e) => Err((e, node.log())),
            },
            Ok(()) => Ok(node),
            Err(e) => {
                node.print_log_on_panic = false;
                let log = node.log();
                drop(node); // kill and reap
                Err((e.context(format!("{cmd:?}\n--- node log ---\n{log}")), log))
            }
        }
    }
}

/// One running `mesh-node` process. Killed (SIGKILL) and reaped on drop; see the module docs for why
/// it cannot outlive the test process either.
#[derive(Debug)]
pub struct MeshNode {
    program: Program,
    id: String,
    addr: SocketAddr,
    secret: Option<String>,
    /// With TLS: the PEM roots its clients trust.
    trust: Option<Vec<u8>>,
    capabilities: Vec<String>,
    child: Child,
    /// The write end of the node's standard input: the node exits when it closes.
    _lifeline: Option<ChildStdin>,
    log_path: PathBuf,
    print_log_on_panic: bool,
    /// The data directory the harness made for this node, removed with it.
    temp_data: Option<PathBuf>,
}

impl MeshNode {
    /// A builder with a unique node id and no capabilities.
    pub fn builder() -> NodeBuilder {
        NodeBuilder {
            program: Program::MeshNode,
            node_id: unique("node"),
            capabilities: Vec::new(),
            secret: None,
            shards: None,
            seeds: Vec::new(),
            extra_args: Vec::new(),
            env: Vec::new(),
            via_env: false,
            ready_timeout: READY_TIMEOUT,
            host: None,
            fd_limit: None,
            tls: None,
            data_dir: None,
        }
    }

    /// A builder of the embedded example's service ([`Program::Embedded`]) with a unique node
    /// id and no capabilities; only the node id, capabilities and seeds apply to it.
    pub fn embedded() -> NodeBuilder {
        NodeBuilder {
            program: Program::Embedded,
            node_id: unique("embedded"),
            ..Self::builder()
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

    /// The address the node listens on (as it printed it).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<host>:<port>`, or `https://` for a node serving TLS.
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme(), self.addr)
    }

    /// `https` for a node serving TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.trust.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The capabilities given at start.
    pub fn capabilities(&self) -> &[String] {
        &self.capabilities
    }

    /// The OS process id (the node's own, also when started through `ip netns exec`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A client that sends this node's secret, if it has one.
    pub fn client(&self) -> Client {
        let c = self.client_without_secret();
        match &self.secret {
            Some(s) => c.with_secret(s),
            None => c,
        }
    }

    /// A client that sends no secret (and trusts the node's certificates, with TLS).
    pub fn client_without_secret(&self) -> Client {
        let c = Client::new(self.base_url());
        match &self.trust {
            Some(pem) => c.with_roots(pem),
            None => c,
        }
    }

    /// Everything the node printed so far (stdout and stderr).
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The sum of the samples of `name` in the node's `/metrics` (its one value, or the sum
    /// over its labels, e.g. every `reason` of `mesh_connections_shed_total`); panics if there
    /// is none.
    pub async fn metric(&self, name: &str) -> f64 {
        use crate::Api as _;
        let text = self.client().get("/metrics").await.text;
        let values: Vec<f64> = crate::metrics(&text)
            .iter()
            .filter(|s| s.metric == name)
            .filter_map(crate::metric_value)
            .collect();
        assert!(!values.is_empty(), "no {name} in {text}");
        values.iter().sum()
    }

    /// Sends a signal (e.g. `libc::SIGTERM`) to the node, unless it has already exited.
    pub fn signal(&mut self, signal: i32) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
            // SAFETY: plain kill(2) on our own child, which has not been reaped (try_wait said so),
            // so the pid cannot belong to another process.
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

    /// Checks that the process is the node itself, as `ip netns exec` and `prlimit` exec the program in place
    /// (rather than waiting for it as a parent): killing [`MeshNode::pid`] must kill the node.
    fn check_exec(&self) -> anyhow::Result<()> {
        let exe = fs::read_link(format!("/proc/{}/exe", self.pid())).context("reading /proc")?;
        if exe != self.program.path() {
            bail!(
                "process {} runs {}, not the node",
                self.pid(),
                exe.display()
            );
        }
        Ok(())
    }

    /// The address in the node's `listening on http://<addr>` line (`https://` with TLS), once
    /// it has printed it.
    fn printed_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        let log = self.log();
        let Some(line) = log.lines().find(|l| l.contains(LISTENING)) else {
            return Ok(None);
        };
        let url = line.split(LISTENING).nth(1).unwrap_or("").trim();
        let scheme = format!("{}://", self.scheme());
        let Some(addr) = url.strip_prefix(&scheme) else {
            bail!("node printed {line:?}, not an address starting {scheme}");
        };
        addr.parse()
            .map(Some)
            .with_context(|| format!("node printed an unreadable address: {line}"))
    }

    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("it has not printed its address yet");
        loop {
            if let Some(status) = self.child.try_wait().context("try_wait")? {
                bail!("mesh-node exited with {status} before it was ready ({last})");
            }
            if self.addr.port() == 0 {
                if let Some(addr) = self.printed_addr()? {
                    self.addr = addr;
                }
            }
            if self.addr.port() != 0 {
                match self
                    .client()
                    .with_timeout(Duration::from_secs(2))
                    .try_get("/health")
                    .await
                {
                    Ok(r) if r.status == 200 => return Ok(()),
                    Ok(r) => last = format!("GET /health: {r}"),
                    Err(e) => last = format!("GET /health: {e}"),
                }
            }
            if Instant::now() >= deadline {
                bail!("mesh-node not ready after {timeout:?}: {last}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for MeshNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.temp_data {
            let _ = fs::remove_dir_all(dir);
        }
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
