//! `GET /metrics` in the Prometheus text exposition format.

use std::fmt::Write;

use mesh_actix::{Delivery, MemberStatus, Mesh, ModuleStats};

use crate::batch::ServedBatches;
use crate::connections::Connections;
use crate::sealing::GossipStats;

/// Renders this node's counters. Names: `mesh_calls_total{outcome}`,
/// `mesh_casts_total{outcome}`, `mesh_call_duration_seconds` (histogram),
/// `mesh_activations`, `mesh_activations_started_total`, `mesh_restarts_total`,
/// `mesh_passivations_total`, `mesh_state_saves_total{outcome}`,
/// `mesh_hops_total{outcome}`, `mesh_hop_refusals_total{reason}`,
/// `mesh_hop_duration_seconds` (histogram), `mesh_hop_batches_served_total`,
/// `mesh_hop_batched_calls_served_total`,
/// `mesh_handoffs_total{outcome}`, `mesh_handoffs_waiting`, `mesh_members{status}`, per
/// `(capability, module)` `mesh_module_calls_total{capability,module,outcome}`,
/// `mesh_module_call_duration_seconds{capability,module}` (histogram),
/// `mesh_module_casts_total`, `mesh_module_activations`, `mesh_module_activations_started_total` and
/// `mesh_module_passivations_total` (each `{capability,module}`), and with
/// sealed gossip `mesh_gossip_datagrams_refused_total{reason}`, and when served by
/// [`crate::serve`] `mesh_connections`, `mesh_connections_max`, `mesh_connections_per_ip_max`
/// and `mesh_connections_shed_total{reason}`.
pub(crate) fn render(
    mesh: &Mesh,
    gossip: Option<&GossipStats>,
    connections: Option<&Connections>,
    batches: &ServedBatches,
) -> String {
    let requests = mesh.request_stats();
    let activations = mesh.activation_stats();
    let mut out = String::with_capacity(4096);
    for (name, help, delivery) in [
        (
            "mesh_calls_total",
            "Calls by outcome (ok or error code).",
            Delivery::Call,
        ),
        (
            "mesh_casts_total",
            "Casts by outcome (ok or error code).",
            Delivery::Cast,
        ),
    ] {
        header(&mut out, name, help, "counter");
        for (outcome, count) in requests.by_outcome(delivery) {
            let _ = writeln!(out, "{name}{{outcome=\"{outcome}\"}} {count}");
        }
    }

    histogram(
        &mut out,
        "mesh_call_duration_seconds",
        "Latency of calls, from entering the mesh to the reply.",
        requests.call_latency(),
    );

    let name = "mesh_hops_total";
    header(
        &mut out,
        name,
        "Requests forwarded to another node, by outcome: ok, error (the owner answered with an \
         error), refused (certainly not executed; routed again if time allowed), \
         maybe_delivered (no answer; reported as timeout).",
        "counter",
    );
    for (outcome, count) in requests.hops() {
        let _ = writeln!(out, "{name}{{outcome=\"{outcome}\"}} {count}");
    }
    let name = "mesh_hop_refusals_total";
    header(
        &mut out,
        name,
        "Hops refused by their owner (or never connected), certainly not executed, by reason.",
        "counter",
    );
    for (reason, count) in requests.hop_refusals() {
        let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {count}");
    }
    histogram(
        &mut out,
        "mesh_hop_duration_seconds",
        "Latency of hops to other nodes, from sending one to its answer.",
        requests.hop_latency(),
    );
    let (served, carried) = batches.reading();
    for (name, help, value) in [
        (
            "mesh_hop_batches_served_total",
            "Batches of calls other nodes sent here (POST /internal/batch) when they had more \
             calls in flight to this node than their hops.",
            served,
        ),
        (
            "mesh_hop_batched_calls_served_total",
            "Calls those batches carried.",
            carried,
        ),
    ] {
        header(&mut out, name, help, "counter");
        let _ = writeln!(out, "{name} {value}");
    }

    for (name, help, kind, value) in [
        (
            "mesh_activations",
            "Activations live on this node.",
            "gauge",
            activations.live as u64,
        ),
        (
            "mesh_activations_started_total",
            "Activations started on this node.",
            "counter",
            activations.activated,
        ),
        (
            "mesh_restarts_total",
            "Actor restarts after a caught panic.",
            "counter",
            activations.restarts,
        ),
        (
            "mesh_passivations_total",
            "Activations stopped after staying idle past their idle timeout.",
            "counter",
            activations.passivations,
        ),
    ] {
        header(&mut out, name, help, kind);
        let _ = writeln!(out, "{name} {value}");
    }

    modules(&mut out, &mesh.module_stats());

    let name = "mesh_handoffs_total";
    header(
        &mut out,
        name,
        "Handoffs of moved identities: sent (accepted by the new owner), failed (the identity \
         started afresh there), received (accepted here as the new owner).",
        "counter",
    );
    for (outcome, count) in [
        ("sent", activations.handoffs_sent),
        ("failed", activations.handoffs_failed),
        ("received", activations.handoffs_received),
    ] {
        let _ = writeln!(out, "{name}{{outcome=\"{outcome}\"}} {count}");
    }
    let name = "mesh_handoffs_waiting";
    header(
        &mut out,
        name,
        "Handed-over states waiting here for their identity's first call.",
        "gauge",
    );
    let _ = writeln!(out, "{name} {}", activations.handoffs_waiting);

    let name = "mesh_state_saves_total";
    header(
        &mut out,
        name,
        "Saves of durable actors' state: ok (durable before the reply), conflict (a newer \
         state was in the store; the stale activation was discarded and the call routed \
         again), unavailable (the store failed; the call failed with no lasting effect).",
        "counter",
    );
    for (outcome, count) in [
        ("ok", activations.state_saves),
        ("conflict", activations.state_conflicts),
        ("unavailable", activations.state_failures),
    ] {
        let _ = writeln!(out, "{name}{{outcome=\"{outcome}\"}} {count}");
    }

    let name = "mesh_members";
    header(
        &mut out,
        name,
        "Members of this node's view, by status.",
        "gauge",
    );
    let routing = mesh.routing();
    for (status, label) in [
        (MemberStatus::Alive, "alive"),
        (MemberStatus::Suspect, "suspect"),
        (MemberStatus::Dead, "dead"),
    ] {
        let count = routing
            .members()
            .iter()
            .filter(|m| m.status == status)
            .count();
        let _ = writeln!(out, "{name}{{status=\"{label}\"}} {count}");
    }

    if let Some(gossip) = gossip {
        let name = "mesh_gossip_datagrams_refused_total";
        header(
            &mut out,
            name,
            "Gossip datagrams dropped unopened: forged (not sealed with this cluster's key, or \
             tampered), stale (sealed too far from this node's clock), replayed (seen before), \
             busy (too many recent datagrams to remember).",
            "counter",
        );
        for (reason, count) in gossip.refused() {
            let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {count}");
        }
    }

    if let Some(connections) = connections {
        for (name, help, value) in [
            (
                "mesh_connections",
                "HTTP connections open on this node.",
                connections.open(),
            ),
            (
                "mesh_connections_max",
                "The most HTTP connections this node holds; each one beyond closes the oldest.",
                connections.bound(),
            ),
            (
                "mesh_connections_per_ip_max",
                "The most HTTP connections this node holds from one client IP; each one beyond \
                 closes that IP's oldest.",
                connections.bound_per_ip(),
            ),
        ] {
            header(&mut out, name, help, "gauge");
            let _ = writeln!(out, "{name} {value}");
        }
        let name = "mesh_connections_shed_total";
        header(
            &mut out,
            name,
            "HTTP connections this node closed: to make room for newer ones, as it held its \
             most (bound) or their client IP held its most (per_ip); or as no request came \
             within the keep-alive and header timeout of the last (idle).",
            "counter",
        );
        for (reason, count) in connections.closed_counts() {
            let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {count}");
        }
    }
    process(&mut out);
    out
}

/// `mesh_build_info{version}` and the standard `process_*` metrics, read from `/proc/self`
/// (Linux; elsewhere only the build info).
fn process(out: &mut String) {
    let name = "mesh_build_info";
    header(
        out,
        name,
        "The version of mesh this node runs; always 1.",
        "gauge",
    );
    let _ = writeln!(out, "{name}{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
    let Some(stats) = ProcessStats::read() else {
        return;
    };
    for (name, help, kind, value) in [
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            "gauge",
            stats.resident_bytes,
        ),
        (
            "process_cpu_seconds_total",
            "User and system CPU time spent, in seconds.",
            "counter",
            stats.cpu_seconds,
        ),
        (
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds.",
            "gauge",
            stats.start_time_seconds,
        ),
        (
            "process_open_fds",
            "Open file descriptors.",
            "gauge",
            stats.open_fds,
        ),
        (
            "process_max_fds",
            "The soft limit on open file descriptors.",
            "gauge",
            stats.max_fds,
        ),
    ] {
        header(out, name, help, kind);
        let _ = writeln!(out, "{name} {value}");
    }
}

/// What `/proc` says about this process.
struct ProcessStats {
    resident_bytes: f64,
    cpu_seconds: f64,
    start_time_seconds: f64,
    open_fds: f64,
    max_fds: f64,
}

impl ProcessStats {
    #[cfg(target_os = "linux")]
    fn read() -> Option<ProcessStats> {
        // SAFETY: sysconf only reads system constants.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let (ticks, page) = (ticks.max(1) as f64, page.max(1) as f64);
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name (field 2) may hold spaces: count fields after its `)`.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|line| line.strip_prefix("btime ")?.trim().parse::<f64>().ok())?;
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let max_fds = limits
            .lines()
            .find(|line| line.starts_with("Max open files"))
            .and_then(|line| line.split_whitespace().nth(3)?.parse::<f64>().ok())
            .unwrap_or(f64::NAN);
        Some(ProcessStats {
            resident_bytes: field(24)? * page,
            cpu_seconds: (field(14)? + field(15)?) / ticks,
            start_time_seconds: boot + field(22)? / ticks,
            open_fds: std::fs::read_dir("/proc/self/fd").ok()?.count() as f64,
            max_fds,
        })
    }

    #[cfg(not(target_os = "linux"))]
    fn read() -> Option<ProcessStats> {
        None
    }
}

/// Writes `latency` as the Prometheus histogram `name`.
fn histogram(out: &mut String, name: &str, help: &str, latency: &mesh_actix::LatencyStats) {
    header(out, name, help, "histogram");
    histogram_series(out, name, "", latency);
}

/// The series of one histogram's label set; `labels` is empty or `a="x",b="y"`.
fn histogram_series(
    out: &mut String,
    name: &str,
    labels: &str,
    latency: &mesh_actix::LatencyStats,
) {
    let cumulative = latency.cumulative();
    let (inner, outer) = if labels.is_empty() {
        (String::new(), String::new())
    } else {
        (format!("{labels},"), format!("{{{labels}}}"))
    };
    for (le, count) in &cumulative {
        let le = if le.is_infinite() {
            "+Inf".to_owned()
        } else {
            le.to_string()
        };
        let _ = writeln!(out, "{name}_bucket{{{inner}le=\"{le}\"}} {count}");
    }
    let total = cumulative.last().map_or(0, |(_, n)| *n);
    let _ = writeln!(out, "{name}_sum{outer} {}", latency.sum().as_secs_f64());
    let _ = writeln!(out, "{name}_count{outer} {total}");
}

/// The `mesh_module_*` families: one label set per `(capability, module)` that activated on
/// this node (bounded: registered actor types times this node's capabilities).
fn modules(out: &mut String, stats: &[ModuleStats]) {
    let labels: Vec<String> = stats
        .iter()
        .map(|m| {
            format!(
                "capability=\"{}\",module=\"{}\"",
                escape(&m.capability),
                escape(&m.module)
            )
        })
        .collect();
    let name = "mesh_module_calls_total";
    header(
        out,
        name,
        "Calls delivered to this node's activations, by capability, module and outcome (ok or \
         error code).",
        "counter",
    );
    for (m, labels) in stats.iter().zip(&labels) {
        for (outcome, count) in m.calls() {
            let _ = writeln!(out, "{name}{{{labels},outcome=\"{outcome}\"}} {count}");
        }
    }
    let name = "mesh_module_call_duration_seconds";
    header(
        out,
        name,
        "Latency of calls delivered to this node's activations, by capability and module.",
        "histogram",
    );
    for (m, labels) in stats.iter().zip(&labels) {
        histogram_series(out, name, labels, m.call_latency());
    }
    type Reading = fn(&ModuleStats) -> u64;
    let families: [(&str, &str, &str, Reading); 4] = [
        (
            "mesh_module_casts_total",
            "Casts enqueued on this node's activations, by capability and module.",
            "counter",
            |m| m.casts,
        ),
        (
            "mesh_module_activations",
            "Activations live on this node, by capability and module.",
            "gauge",
            |m| m.live,
        ),
        (
            "mesh_module_activations_started_total",
            "Activations started on this node, by capability and module.",
            "counter",
            |m| m.started,
        ),
        (
            "mesh_module_passivations_total",
            "Activations passivated on this node after staying idle, by capability and module.",
            "counter",
            |m| m.passivations,
        ),
    ];
    for (name, help, kind, read) in families {
        header(out, name, help, kind);
        for (m, labels) in stats.iter().zip(&labels) {
            let _ = writeln!(out, "{name}{{{labels}}} {}", read(m));
        }
    }
}

/// A label value as the exposition format writes it.
fn escape(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return value.into();
    }
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .into()
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("Counter"), "Counter");
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
