//! `mesh-bench`: every figure of mesh measured side by side with its floor, in one run.
//!
//! `cargo run --release --bin mesh-bench [-- --json] [--reps N] [--only a,b] [--smoke]`
//!
//! A floor is real code doing the same work without mesh, on the same thread layout: raw actix
//! `Addr::send` to actors where mesh places its activations (`--placement`: on the caller's
//! thread, or spread over as many arbiters as mesh has); a raw actix actor start and
//! its first message; a bare actix-web endpoint that parses the same JSON body and renders a
//! reply of the same shape. Each figure is measured `--reps` times, mesh and floor alternating
//! (the first of the pair swaps every repetition); the table shows medians and mesh/floor.
//!
//! The figures, their floors and what limits each: BENCHMARKS.md ("mesh-bench").

mod api;
mod client;
mod figures;
mod http;
mod memory;

use std::future::Future;
use std::io::Write as _;
use std::num::NonZeroUsize;

use anyhow::Context as _;
use clap::Parser;
use mesh_actix::Placement;
use mesh_examples::PlacementArg;

use figures::{Figure, Name};

/// Measures mesh against its floors.
#[derive(Debug, Parser)]
#[command(name = "mesh-bench")]
struct Args {
    /// Print one JSON object per figure: {"name", "unit", "mesh", "floor", "ratio"}.
    #[arg(long)]
    json: bool,

    /// Tiny sizes and one repetition: checks that every figure runs, in seconds.
    #[arg(long)]
    smoke: bool,

    /// Repetitions of each figure (default 5, or 1 with --smoke).
    #[arg(long)]
    reps: Option<NonZeroUsize>,

    /// Measure only these figures (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,

    /// Measure only one side of every figure (`mesh` or `floor`), e.g. to profile it; the
    /// other side's figures are then NaN.
    #[arg(long)]
    side: Option<Side>,

    /// Where mesh starts activations, and so where the actix floor's actors live:
    /// `caller-thread` (mesh's default: on the caller's arbiter) or `pool`.
    #[arg(long, value_enum, default_value_t = PlacementArg::from(Placement::default()))]
    placement: PlacementArg,

    /// Arbiters of each mesh node, arbiters of the actix floor, and HTTP workers of every
    /// server (default: one per core).
    #[arg(long)]
    threads: Option<NonZeroUsize>,

    /// Internal: measure memory in this fresh process (`mesh` or `floor`) and print bytes per
    /// activation.
    #[arg(long, hide = true)]
    memory_child: Option<String>,

    /// Internal: how many activations the memory child starts.
    #[arg(long, hide = true, default_value_t = 0)]
    count: usize,
}

/// Which side of a figure to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Side {
    Mesh,
    Floor,
}

/// The sizes of one run.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub reps: usize,
    /// Measure mesh, the floor, or (`None`) both.
    pub side: Option<Side>,
    pub threads: usize,
    /// Where mesh starts activations (and the API floors their actors).
    pub placement: Placement,
    /// Actors of `api_calls`.
    pub actors: usize,
    /// Calls per measurement of `api_calls` and `api_hot_calls`.
    pub calls: usize,
    /// Callers (tasks) of the throughput figures, connections of `http_call`.
    pub concurrency: usize,
    /// Calls per measurement of `api_sequential_p50_us`.
    pub sequential: usize,
    /// Activations per measurement of `activations`.
    pub activations: usize,
    /// Activations per process of `memory_per_activation_bytes`.
    pub memory_activations: usize,
    /// Warm-up and measured time of each HTTP throughput measurement.
    pub http_warmup: std::time::Duration,
    pub http_measure: std::time::Duration,
    /// Distinct ids of the HTTP figures.
    pub http_ids: usize,
    /// Requests per measurement of `http_call_p50_us`.
    pub http_sequential: usize,
}

impl Sizes {
    pub fn measures(&self, side: Side) -> bool {
        self.side.is_none_or(|s| s == side)
    }

    fn new(args: &Args) -> Sizes {
        use std::time::Duration;
        let threads = args
            .threads
            .or_else(|| std::thread::available_parallelism().ok())
            .map_or(1, NonZeroUsize::get);
        let reps = args.reps.map(NonZeroUsize::get);
        if args.smoke {
            Sizes {
                reps: reps.unwrap_or(1),
                side: args.side,
                threads,
                placement: args.placement.into(),
                actors: 500,
                calls: 5_000,
                concurrency: 64,
                sequential: 300,
                activations: 2_000,
                memory_activations: 5_000,
                http_warmup: Duration::from_millis(50),
                http_measure: Duration::from_millis(200),
                http_ids: 100,
                http_sequential: 200,
            }
        } else {
            Sizes {
                reps: reps.unwrap_or(5),
                side: args.side,
                threads,
                placement: args.placement.into(),
                actors: 10_000,
                calls: 500_000,
                concurrency: 64,
                sequential: 20_000,
                activations: 100_000,
                memory_activations: 1_000_000,
                http_warmup: Duration::from_millis(500),
                http_measure: Duration::from_secs(3),
                http_ids: 10_000,
                http_sequential: 5_000,
            }
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    mesh_examples::log_panics_briefly("mesh-bench");
    let sizes = Sizes::new(&args);
    if let Some(kind) = &args.memory_child {
        let per_activation = memory::child(kind, args.count, sizes.threads, sizes.placement)?;
        println!("{per_activation}");
        return Ok(());
    }
    let only: Vec<Name> = args
        .only
        .iter()
        .map(|name| name.parse())
        .collect::<Result<_, _>>()
        .map_err(anyhow::Error::msg)?;
    let wanted = |name: Name| only.is_empty() || only.contains(&name);
    let json = args.json;
    eprintln!(
        "mesh-bench: {} repetition(s), placement {}, {} thread(s) per pool, {} core(s){}",
        sizes.reps,
        args.placement.name(),
        sizes.threads,
        std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
        if args.smoke { ", smoke sizes" } else { "" }
    );

    let figures = actix_rt::System::new().block_on(async move {
        let mut figures: Vec<Figure> = Vec::new();
        let mut report = |figure: Figure| {
            eprintln!("{}", figure.progress_line());
            if json {
                println!("{}", figure.json());
                let _ = std::io::stdout().flush();
            }
            figures.push(figure);
        };
        let api_names = [
            Name::ApiCalls,
            Name::ApiHotCalls,
            Name::ApiSequentialP50Us,
            Name::Activations,
        ];
        if api_names.into_iter().any(wanted) {
            for figure in api::run(&sizes, &wanted).await.context("API figures")? {
                report(figure);
            }
        }
        if wanted(Name::MemoryPerActivationBytes) {
            let sizes = sizes;
            report(off_thread(move || memory::run(&sizes)).await?);
        }
        if [Name::HttpCall, Name::HttpCallP50Us]
            .into_iter()
            .any(wanted)
        {
            for figure in http::run_single(&sizes, &wanted)
                .await
                .context("HTTP figures")?
            {
                report(figure);
            }
        }
        if [Name::HttpForwarded, Name::HttpForwardedP50Us]
            .into_iter()
            .any(wanted)
        {
            for figure in http::run_forwarded(&sizes, &wanted)
                .await
                .context("forwarded HTTP figures")?
            {
                report(figure);
            }
        }
        anyhow::Ok(figures)
    })?;

    if !json {
        println!("{}", figures::table(&figures));
    }
    Ok(())
}

/// Runs blocking work (a load generator, a child process) on a thread of its own, so that the
/// System thread keeps serving what runs on it (gossip, timers) meanwhile.
pub fn off_thread<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> impl Future<Output = anyhow::Result<T>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(work());
    });
    async move { rx.await.context("the worker thread panicked")? }
}
