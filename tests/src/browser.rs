//! A real browser: Debian's `chromium`, headless, against a page a node serves. It gives the DOM
//! after the page's scripts have run (`--dump-dom`) and screenshots; every run has a fresh
//! profile, a deadline, and is killed with every process it started, however the test ends.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::unique;
use crate::util::install_if_missing;

/// Where Debian installs Chromium (`apt-get install chromium`).
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// How long one run of Chromium may take, start to exit.
pub const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);

/// Debian's Chromium, headless.
pub struct Chromium {
    program: PathBuf,
}

impl Chromium {
    /// Chromium, at `$MESH_TEST_CHROMIUM` or [`CHROMIUM`], which is installed (Debian's
    /// `chromium`, as root with apt: [`install_if_missing`]) if it is missing; panics saying
    /// how to install it when it cannot be (the browser tests fail rather than skip).
    pub fn find() -> Chromium {
        static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
        let program = match std::env::var_os("MESH_TEST_CHROMIUM") {
            Some(program) => PathBuf::from(program),
            None => {
                let present = || Path::new(CHROMIUM).is_file();
                if let Err(e) = install_if_missing(&INSTALLED, &["chromium"], present) {
                    panic!("no Chromium at {CHROMIUM} ({e}): the browser tests need it");
                }
                PathBuf::from(CHROMIUM)
            }
        };
        assert!(
            program.is_file(),
            "no Chromium at {}: the browser tests need it (`apt-get install -y chromium`, \
             or set MESH_TEST_CHROMIUM to a Chromium binary)",
            program.display()
        );
        Chromium { program }
    }

    /// The DOM of `url` once its scripts have had `budget` of virtual time (timers run as fast
    /// as the page lets them; network waits do not count).
    pub async fn dump_dom(&self, url: &str, budget: Duration) -> Result<String, String> {
        let run = self.run(url, budget, &["--dump-dom"]).await?;
        std::fs::read_to_string(run.dir.join("stdout")).map_err(|e| format!("stdout: {e}"))
    }

    /// A PNG screenshot of `url` in a window of `width` x `height`, after `budget` of virtual
    /// time, written to `png`.
    pub async fn screenshot(
        &self,
        url: &str,
        budget: Duration,
        (width, height): (u32, u32),
        png: &Path,
    ) -> Result<(), String> {
        let screenshot = format!("--screenshot={}", png.display());
        let size = format!("--window-size={width},{height}");
        let args = [screenshot.as_str(), size.as_str(), "--hide-scrollbars"];
        self.run(url, budget, &args).await.map(drop)
    }

    /// Runs Chromium on `url` with `args` until it exits (within [`BROWSER_TIMEOUT`]); its
    /// output is in the returned run's directory.
    async fn run(&self, url: &str, budget: Duration, args: &[&str]) -> Result<Run, String> {
        let dir = std::env::temp_dir().join(unique("mesh-chromium"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let file =
            |name: &str| std::fs::File::create(dir.join(name)).map_err(|e| format!("{name}: {e}"));
        let (stdout, stderr) = (file("stdout")?, file("stderr")?);
        let mut command = Command::new(&self.program);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
            ])
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            .arg(format!("--virtual-time-budget={}", budget.as_millis()))
            .args(args)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            // Its own process group, so that the renderer and the other helpers it starts are
            // killed with it.
            .process_group(0);
        let child = command
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.program.display()))?;
        let mut run = Run {
            dir,
            child: Some(child),
        };
        let deadline = Instant::now() + BROWSER_TIMEOUT;
        loop {
            let child = run.child.as_mut().expect("not reaped yet");
            match child.try_wait() {
                Ok(Some(status)) if status.success() => {
                    run.reaped();
                    return Ok(run);
                }
                Ok(Some(status)) => {
                    run.reaped();
                    return Err(format!("chromium exited with {status}: {}", run.stderr()));
                }
                Ok(None) if Instant::now() >= deadline => {
                    return Err(format!(
                        "chromium still running after {BROWSER_TIMEOUT:?}: {}",
                        run.stderr()
                    ));
                }
                Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => return Err(format!("waiting for chromium: {e}")),
            }
        }
    }
}

/// One run of Chromium: its process group is killed and its directory removed on drop.
struct Run {
    dir: PathBuf,
    /// `None` once reaped.
    child: Option<Child>,
}

impl Run {
    /// Chromium exited: whatever it left running in its group goes too.
    fn reaped(&mut self) {
        if let Some(child) = self.child.take() {
            kill_group(&child);
        }
    }

    /// The end of what Chromium wrote to stderr, for failure messages.
    fn stderr(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default();
        let start = text.len().saturating_sub(2000);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        text[start..].to_owned()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&child);
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// SIGKILL to the process group Chromium leads (its own pid: see `process_group(0)`).
fn kill_group(child: &Child) {
    let group = child.id() as libc::pid_t;
    // SAFETY: kill(2) on a process group this test started; no memory is involved.
    unsafe {
        libc::kill(-group, libc::SIGKILL);
    }
}
