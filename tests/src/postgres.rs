//! A real PostgreSQL server for one test: [`PostgresServer`].
//!
//! [`PostgresServer::start`] finds the server binaries (`/usr/lib/postgresql/<major>/bin`, where
//! Debian's `postgresql` package puts them, the newest major first; else the directory on `PATH`
//! holding both `initdb` and `postgres`), runs `initdb` into a temporary directory
//! (`<tmp>/mesh-pg-<pid>-<n>`), starts `postgres` listening on 127.0.0.1 on a port the OS picked
//! and on a unix socket in that directory, polls `pg_isready` until it accepts connections, and
//! creates the database `mesh`. The superuser `mesh` logs in over TCP with a password
//! (scram-sha-256), over the socket without one. Its log is `postgres.log` in the directory.
//!
//! PostgreSQL refuses to run as root, and CI runs the tests as root: then `initdb` and `postgres`
//! run as the `postgres` system user (which Debian's package creates), and the directory belongs
//! to it (so the temporary directory, `TMPDIR` or /tmp, must be one that user can reach). Missing binaries are installed (Debian's `postgresql`, as root with apt, once per test
//! process); without root or apt, missing binaries or user fail the test with a message saying
//! what to install; nothing skips.
//!
//! [`PostgresServer::kill`] (a crash: kill -9 of every process of the server),
//! [`PostgresServer::pause`] (SIGSTOP of every process) and [`PostgresServer::stop`] (immediate
//! shutdown) stop it; [`PostgresServer::start_again`] starts it on the same port and data.
//! PostgreSQL puts each of its processes in a session of its own, so "every process" is the
//! postmaster and its children as /proc lists them, the postmaster stopped first so that it forks
//! no more. Dropping it stops the server (immediate shutdown, kill -9 if it lingers) and deletes
//! the directory. The servers of a test process that died without dropping them are killed, and
//! their directories deleted, by the next test process that starts one.

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::util::{free_port, install_if_missing, unique};

/// How long the server may take from spawn to accepting connections.
pub const POSTGRES_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an immediate shutdown may take before the server is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the harness looks whether the server is ready, or gone.
const POLL: Duration = Duration::from_millis(20);

/// The superuser and the database the tests use.
const USER: &str = "mesh";
const DATABASE: &str = "mesh";

/// One PostgreSQL server in a temporary directory (see the module docs).
#[derive(Debug)]
pub struct PostgresServer {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    password: String,
    /// The uid and gid the server runs as, when the tests run as root.
    run_as: Option<(u32, u32)>,
    /// The postmaster, while the server runs.
    postmaster: Option<Child>,
}

impl PostgresServer {
    /// Initialises and starts a server, and creates the database `mesh`; panics (failing the
    /// test) if it cannot, saying why.
    pub fn start() -> PostgresServer {
        remove_leftovers();
        let bin = server_bin_dir().unwrap_or_else(|e| panic!("{e}"));
        let run_as = if is_root() {
            Some(postgres_user().unwrap_or_else(|e| panic!("{e}")))
        } else {
            None
        };
        let dir = std::env::temp_dir().join(unique("mesh-pg"));
        let mut server = PostgresServer {
            bin,
            dir,
            port: 0,
            password: unique("pw"),
            run_as,
            postmaster: None,
        };
        server.init();
        // The port is free when picked but may be taken before the server binds it: another
        // one then.
        let mut attempts = 0;
        loop {
            server.port = free_port();
            attempts += 1;
            match server.try_start(false) {
                Ok(()) => break,
                Err(e) if attempts < 3 => eprintln!("postgres did not start, another port: {e}"),
                Err(e) => panic!("cannot start postgres: {e}"),
            }
        }
        server.admin(&["createdb", "-U", USER, DATABASE]);
        server
    }

    /// `postgres://mesh:<password>@127.0.0.1:<port>/mesh`.
    pub fn url(&self) -> String {
        self.url_with_password(&self.password)
    }

    /// The server's URL with another `password` (for a login that must fail).
    pub fn url_with_password(&self, password: &str) -> String {
        format!(
            "postgres://{USER}:{password}@127.0.0.1:{}/{DATABASE}",
            self.port
        )
    }

    /// The password of the superuser `mesh`.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The TCP port the server listens on, the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// Whether the server's postmaster is running (it may be paused).
    pub fn is_running(&mut self) -> bool {
        match &mut self.postmaster {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills every process of the server with SIGKILL, as a crash would, and reaps the
    /// postmaster. Committed transactions survive it (they are in the WAL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.postmaster.take() {
            signal_server(pid_of(&child), libc::SIGKILL);
            let _ = child.wait();
        }
    }

    /// Immediate shutdown (SIGQUIT: the server stops without a checkpoint, as `pg_ctl stop -m
    /// immediate` does); kills it if it has not exited within 10 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.postmaster.take() else {
            return;
        };
        // A paused server could not act on the signal.
        signal_server(pid_of(&child), libc::SIGCONT);
        signal(pid_of(&child), libc::SIGQUIT);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        if matches!(child.try_wait(), Ok(None)) {
            signal_server(pid_of(&child), libc::SIGKILL);
        }
        let _ = child.wait();
    }

    /// Starts the stopped (or killed) server again on the same port and data directory, and
    /// waits until it accepts connections; panics if it cannot.
    pub fn start_again(&mut self) {
        assert!(self.postmaster.is_none(), "the server is still running");
        if let Err(e) = self.try_start(true) {
            panic!("cannot start postgres again on port {}: {e}", self.port);
        }
    }

    /// Stops every process of the server (SIGSTOP): it keeps its connections open and answers
    /// nothing, as a hung or unreachable server would.
    pub fn pause(&self) {
        if let Some(child) = &self.postmaster {
            signal_server(pid_of(child), libc::SIGSTOP);
        }
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn resume(&self) {
        if let Some(child) = &self.postmaster {
            signal_server(pid_of(child), libc::SIGCONT);
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.join("socket")
    }

    /// A command for a server binary, run as the server's user.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        // Not the test's directory, which the server's user may not be allowed to enter.
        command.current_dir(&self.dir);
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        command
    }

    /// Creates the directory (owned by the server's user) and runs `initdb` into it.
    fn init(&mut self) {
        fs::create_dir(&self.dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", self.dir.display()));
        fs::create_dir(self.socket_dir()).expect("create the socket directory");
        let password_file = self.dir.join("password");
        fs::write(&password_file, &self.password).expect("write the password file");
        fs::set_permissions(&password_file, fs::Permissions::from_mode(0o600))
            .expect("chmod the password file");
        if let Some((uid, gid)) = self.run_as {
            for path in [&self.dir, &self.socket_dir(), &password_file] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .unwrap_or_else(|e| panic!("cannot chown {}: {e}", path.display()));
            }
        }
        let output = self
            .command("initdb")
            .arg("--pgdata")
            .arg(self.data_dir())
            .args(["--username", USER, "--encoding", "UTF8", "--locale", "C"])
            .arg(format!("--pwfile={}", password_file.display()))
            // Over TCP (what the store uses) the password is checked; over the socket (the
            // harness's `createdb`) not.
            .args(["--auth-host", "scram-sha-256", "--auth-local", "trust"])
            // A test's server need not survive a crash of the machine during initdb.
            .arg("--no-sync")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}/initdb: {e}", self.bin.display()));
        assert!(
            output.status.success(),
            "initdb failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Spawns the postmaster and waits until it accepts connections over TCP. With `retry`,
    /// tries again, within the ready timeout, a server that exits at once: after a kill -9 the
    /// processes of the previous one may hold its shared memory for a moment. Without, such a
    /// server is an error at once (the first start, which picks another port then).
    fn try_start(&mut self, retry: bool) -> Result<(), String> {
        let deadline = Instant::now() + POSTGRES_READY_TIMEOUT;
        loop {
            let log = File::options()
                .create(true)
                .append(true)
                .open(self.log_path())
                .map_err(|e| format!("cannot open the log: {e}"))?;
            let log_err = log
                .try_clone()
                .map_err(|e| format!("cannot open the log: {e}"))?;
            let mut child = self
                .command("postgres")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-p", &self.port.to_string()])
                .args(["-c", "listen_addresses=127.0.0.1"])
                .arg("-c")
                .arg(format!(
                    "unix_socket_directories={}",
                    self.socket_dir().display()
                ))
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err)
                .spawn()
                .map_err(|e| format!("cannot run {}/postgres: {e}", self.bin.display()))?;
            match self.wait_ready(&mut child, deadline) {
                Ok(()) => {
                    self.postmaster = Some(child);
                    return Ok(());
                }
                Err(exited) if exited && retry && Instant::now() < deadline => {
                    std::thread::sleep(POLL);
                }
                Err(exited) => {
                    signal_server(pid_of(&child), libc::SIGKILL);
                    let _ = child.wait();
                    let what = if exited {
                        "postgres exited".to_string()
                    } else {
                        format!("postgres was not ready within {POSTGRES_READY_TIMEOUT:?}")
                    };
                    return Err(format!("{what}; its log:\n{}", self.log_tail()));
                }
            }
        }
    }

    /// Polls `pg_isready` until the server accepts connections. `Err(true)`: it exited.
    fn wait_ready(&self, child: &mut Child, deadline: Instant) -> Result<(), bool> {
        loop {
            if !matches!(child.try_wait(), Ok(None)) {
                return Err(true);
            }
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-t", "1"])
                .stdin(Stdio::null())
                .status()
                .is_ok_and(|status| status.success());
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(false);
            }
            std::thread::sleep(POLL);
        }
    }

    /// Runs an admin program (`createdb`, `psql`) as the superuser over the unix socket.
    fn admin(&self, args: &[&str]) {
        let (program, args) = args.split_first().expect("a program");
        let output = Command::new(self.bin.join(program))
            .arg("-h")
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        assert!(
            output.status.success(),
            "{program} {args:?} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Sends `sig` to `postmaster` and every process it forked. The postmaster is stopped
/// first, so that it forks no more while they are listed, and gets `sig` last.
fn signal_server(postmaster: libc::pid_t, sig: libc::c_int) {
    if sig != libc::SIGCONT {
        signal(postmaster, libc::SIGSTOP);
    }
    for pid in children_of(postmaster) {
        signal(pid, sig);
    }
    signal(postmaster, sig);
}

fn pid_of(child: &Child) -> libc::pid_t {
    libc::pid_t::try_from(child.id()).expect("a pid fits pid_t")
}

fn signal(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: kill(2) takes no pointers. `pid` is a postmaster (ours, not yet reaped, or a
    // leftover one just checked by its command line), or a child of it that /proc just listed.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// The processes whose parent is `parent`, from /proc/<pid>/status.
fn children_of(parent: libc::pid_t) -> Vec<libc::pid_t> {
    let wanted = parent.to_string();
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid: libc::pid_t = entry.file_name().to_str()?.parse().ok()?;
            let status = fs::read_to_string(entry.path().join("status")).ok()?;
            let ppid = status.lines().find_map(|l| l.strip_prefix("PPid:"))?.trim();
            (ppid == wanted).then_some(pid)
        })
        .collect()
}

/// Kills the servers of test processes that died without dropping them (a runner's timeout, a
/// kill -9), and deletes their directories: `mesh-pg-<pid>-<n>` whose test process `<pid>` is
/// gone. Once per test process.
fn remove_leftovers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for entry in fs::read_dir(std::env::temp_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("mesh-pg-")) else {
                continue;
            };
            let Some(owner) = rest.split('-').next() else {
                continue;
            };
            if owner.parse::<u32>().is_err() || Path::new("/proc").join(owner).exists() {
                continue;
            }
            let data = entry.path().join("data");
            let postmaster = fs::read_to_string(data.join("postmaster.pid"))
                .ok()
                .and_then(|pid_file| pid_file.lines().next()?.trim().parse::<libc::pid_t>().ok());
            if let Some(postmaster) = postmaster {
                // Only if that pid still is this directory's server: pids are reused.
                let command = fs::read(format!("/proc/{postmaster}/cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&command).contains(&*data.to_string_lossy()) {
                    signal_server(postmaster, libc::SIGKILL);
                }
            }
            let _ = fs::remove_dir_all(entry.path());
        }
    });
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) takes no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The uid and gid of the `postgres` system user, from /etc/passwd.
fn postgres_user() -> Result<(u32, u32), String> {
    let passwd =
        fs::read_to_string("/etc/passwd").map_err(|e| format!("cannot read /etc/passwd: {e}"))?;
    passwd
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            match fields.as_slice() {
                ["postgres", _, uid, gid, ..] => Some((uid.parse().ok()?, gid.parse().ok()?)),
                _ => None,
            }
        })
        .next()
        .ok_or_else(|| {
            "the tests run as root, and PostgreSQL refuses to: they run it as the `postgres` \
             user, which does not exist (Debian's `postgresql` package creates it)"
                .to_string()
        })
}

/// The directory of the server binaries (see the module docs), after installing Debian's
/// `postgresql` if they are nowhere (as root with apt: [`install_if_missing`]).
fn server_bin_dir() -> Result<PathBuf, String> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    install_if_missing(&INSTALLED, &["postgresql"], || {
        find_server_bin_dir().is_ok()
    })?;
    find_server_bin_dir()
}

fn find_server_bin_dir() -> Result<PathBuf, String> {
    let has_server = |dir: &Path| {
        ["initdb", "postgres", "pg_isready", "createdb"]
            .iter()
            .all(|program| dir.join(program).is_file())
    };
    let mut debian: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse().ok()?;
            Some((major, entry.path().join("bin")))
        })
        .filter(|(_, bin)| has_server(bin))
        .collect();
    debian.sort();
    if let Some((_, bin)) = debian.pop() {
        return Ok(bin);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|dir| has_server(dir))
        .ok_or_else(|| {
            "the PostgreSQL server binaries (initdb, postgres, pg_isready, createdb) are in neither \
             /usr/lib/postgresql/*/bin nor PATH: install Debian's `postgresql` package \
             (apt-get install postgresql; .ci/run does)"
                .to_string()
        })
}
