//! Small helpers: unique names, polling, panics on purpose, Prometheus text, running a test alone.

use std::future::Future;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// A number unique within this test process.
pub(crate) fn next_unique() -> u64 {
    UNIQUE.fetch_add(1, Ordering::Relaxed)
}

/// A string unique within this test process (and, through the pid, across test processes running
/// at the same time): `<prefix>-<pid>-<n>`.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), next_unique())
}

/// A free TCP port on 127.0.0.1, as the OS hands it out (bind port 0, read it back, close), for
/// in-process servers that must know their address before they bind.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
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

/// The samples of a Prometheus text exposition (parsed by the `prometheus-parse` crate); panics if
/// it cannot be read. Histogram buckets are grouped into one sample per label set; their `_sum`
/// and `_count` series are samples of their own.
pub fn metrics(text: &str) -> Vec<prometheus_parse::Sample> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines)
        .unwrap_or_else(|e| panic!("not Prometheus text ({e}):\n{text}"))
        .samples
}

/// The value of a counter, gauge or untyped sample (`None` for histograms and summaries).
pub fn metric_value(sample: &prometheus_parse::Sample) -> Option<f64> {
    use prometheus_parse::Value as V;
    match sample.value {
        V::Counter(v) | V::Gauge(v) | V::Untyped(v) => Some(v),
        V::Histogram(_) | V::Summary(_) => None,
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

/// Runs `test` on a fresh current-thread runtime, one such test of the test executable at a time
/// (for tests whose timing figures mean something only if two clusters are not fighting over the
/// cores of a CI machine).
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

/// Installs the Debian `packages` with apt when `present()` says what they provide is missing,
/// so that `cargo test --workspace` on a fresh machine needs nothing installed by hand. Needs
/// root and apt, as on CI (`.ci/run` installs the same packages up front); elsewhere the error
/// says what to install. apt runs at most once per test process for each `once` (the caller's
/// static), however many tests ask at the same time.
pub fn install_if_missing(
    once: &'static OnceLock<Result<(), String>>,
    packages: &[&str],
    present: impl Fn() -> bool,
) -> Result<(), String> {
    once.get_or_init(|| {
        if present() {
            return Ok(());
        }
        let list = packages.join(" ");
        if !command_exists("apt-get") {
            return Err(format!("missing: install Debian's {list}"));
        }
        eprintln!("mesh-tests: installing Debian's {list} (missing)");
        let script = format!(
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {list}"
        );
        let status = Command::new("sh")
            .args(["-c", &script])
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("running apt-get for {list}: {e}"))?;
        if status.success() && present() {
            Ok(())
        } else {
            Err(format!(
                "installing {list} failed ({status}); install them as root"
            ))
        }
    })
    .clone()
}

/// Whether `program` is on `PATH`.
pub fn command_exists(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
