//! The example actors of the mesh contract, registered by `mesh-node`:
//! [`Counter`], [`GameActor`], [`Crasher`], [`Sleeper`] and the durable [`Account`]. Each lives in its own module and
//! is an ordinary actix actor with `#[derive(MeshActor)]`.

mod actors;
pub mod embedded;
pub mod node;
#[cfg(feature = "otel")]
pub mod otel;

pub use actors::{Account, Counter, Crasher, GameActor, Sleeper};

use mesh_actix::{MeshBuilder, Placement};

/// Logs every panic as one line. Actor panics are caught and answered with `actor_crashed`,
/// so a node's log needs to say that one happened, not to print a backtrace for each.
pub fn log_panics_briefly(program: &'static str) {
    std::panic::set_hook(Box::new(move |info| {
        eprintln!("{program}: caught panic: {info}")
    }));
}

/// How a binary writes its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per event.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format `{other}` (expected text or json)"
            )),
        }
    }
}

/// The log lines, to stderr in `format`, filtered by `RUST_LOG` (default `info` for mesh,
/// `warn` for the rest): one layer, so that the trace export (`otel`) adds its own beside it.
fn log_layer<S>(format: LogFormat) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::{EnvFilter, Layer as _};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("warn,mesh_actix=info,mesh_http=info,mesh_node=info,mesh_examples=info")
    });
    let log = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Text => log.with_ansi(false).with_filter(filter).boxed(),
        LogFormat::Json => log.json().with_filter(filter).boxed(),
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default: `info` for mesh, `warn` for the rest).
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let _ = tracing_subscriber::registry()
        .with(log_layer(format))
        .try_init();
}

/// Resolves on ctrl-c or SIGTERM: how the example binaries learn it is time to leave.
pub async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            ctrl_c = tokio::signal::ctrl_c() => ctrl_c,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await
}

/// Registers every example actor type on the node `builder` describes.
pub fn register_examples(builder: MeshBuilder) -> MeshBuilder {
    builder
        .register::<Counter>()
        .register::<GameActor>()
        .register::<Crasher>()
        .register::<Sleeper>()
        .register::<Account>()
}

/// `--placement`: [`Placement`] on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlacementArg {
    /// [`Placement::CallerThread`].
    CallerThread,
    /// [`Placement::Pool`].
    Pool,
}

impl PlacementArg {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            PlacementArg::CallerThread => "caller-thread",
            PlacementArg::Pool => "pool",
        }
    }
}

impl From<Placement> for PlacementArg {
    fn from(placement: Placement) -> PlacementArg {
        match placement {
            Placement::CallerThread => PlacementArg::CallerThread,
            Placement::Pool => PlacementArg::Pool,
        }
    }
}

impl From<PlacementArg> for Placement {
    fn from(placement: PlacementArg) -> Placement {
        match placement {
            PlacementArg::CallerThread => Placement::CallerThread,
            PlacementArg::Pool => Placement::Pool,
        }
    }
}
