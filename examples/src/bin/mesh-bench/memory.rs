//! `memory_per_activation_bytes`: the growth of the resident set per live activation, each
//! side measured in a fresh process of its own (this binary again, `--memory-child`), so that
//! memory freed by earlier figures cannot hide what the activations take.

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _};
use mesh_actix::Placement;

use crate::api;
use crate::figures::{Figure, Name};
use crate::{PlacementArg, Side, Sizes};

/// Activations started, and kept, before the baseline: the arbiters' threads, their
/// allocator arenas and the registry's first tables exist before it is read.
const WARM: usize = 1_000;

/// The resident set of this process, in bytes (`VmRSS` of /proc/self/status).
fn rss() -> anyhow::Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("no VmRSS in /proc/self/status")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kib * 1024.0)
}

/// In the child: starts `count` activations of `kind` (`mesh` or `floor`) after [`WARM`] ones,
/// keeps them alive, and returns the RSS growth per activation.
pub fn child(
    kind: &str,
    count: usize,
    threads: usize,
    placement: Placement,
) -> anyhow::Result<f64> {
    let kind = kind.to_owned();
    actix_rt::System::new().block_on(async move {
        let pause = || actix_rt::time::sleep(Duration::from_millis(200));
        match kind.as_str() {
            "mesh" => {
                let mesh = api::lone_mesh("bench-memory", threads, placement).await?;
                api::mesh_activations(&mesh, "warm", WARM, 64).await?;
                // The callers' requests are built first: their memory is the caller's, and
                // freed after the calls it would stay resident and be counted as mesh's.
                let requests = api::counter_requests("live", count);
                pause().await;
                let before = rss()?;
                api::activate_all(&mesh, &requests, 64).await?;
                pause().await;
                let after = rss()?;
                anyhow::ensure!(mesh.activations() == WARM + count);
                Ok((after - before) / count as f64)
            }
            "floor" => {
                let (arbiters, handles) = api::arbiters(placement, threads);
                let (warm, _) = api::floor_activations(&handles, WARM, 64).await?;
                pause().await;
                let before = rss()?;
                let (live, _) = api::floor_activations(&handles, count, 64).await?;
                pause().await;
                let after = rss()?;
                anyhow::ensure!(live.len() == count);
                drop((warm, live, arbiters));
                Ok((after - before) / count as f64)
            }
            other => bail!("unknown memory child `{other}`"),
        }
    })
}

fn in_child(kind: &str, count: usize, sizes: &Sizes) -> anyhow::Result<f64> {
    let exe = std::env::current_exe()?;
    let output = Command::new(exe)
        .args(["--memory-child", kind, "--count", &count.to_string()])
        .args(["--threads", &sizes.threads.to_string()])
        .args(["--placement", PlacementArg::from(sizes.placement).name()])
        .output()
        .context("running the memory child")?;
    if !output.status.success() {
        bail!(
            "the {kind} memory child failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let text = String::from_utf8(output.stdout)?;
    text.trim()
        .parse()
        .with_context(|| format!("the {kind} memory child printed `{text}`"))
}

pub fn run(sizes: &Sizes) -> anyhow::Result<Figure> {
    let (mut mesh, mut floor) = (Vec::new(), Vec::new());
    // Memory barely varies between runs: at most three of each.
    for rep in 0..sizes.reps.min(3) {
        let n = sizes.memory_activations;
        let (with_mesh, with_floor) = (sizes.measures(Side::Mesh), sizes.measures(Side::Floor));
        if rep % 2 == 1 && with_floor {
            floor.push(in_child("floor", n, sizes)?);
        }
        if with_mesh {
            mesh.push(in_child("mesh", n, sizes)?);
        }
        if rep % 2 == 0 && with_floor {
            floor.push(in_child("floor", n, sizes)?);
        }
    }
    Ok(Figure {
        name: Name::MemoryPerActivationBytes,
        mesh,
        floor,
    })
}
