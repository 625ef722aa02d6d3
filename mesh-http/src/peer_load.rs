//! The load of a node (activations, calls, casts) for the dashboard: this node's from its own
//! registry and request counters, another node's from its `GET /metrics`.
//!
//! `/metrics` needs no secret, so reading it sends nothing secret between nodes (the secret never
//! travels on the wire). Every read has a short timeout and a bounded body; a node that does not
//! answer in time is reported as unreachable, never waited for.

use std::time::Duration;

use futures_util::StreamExt;
use mesh_actix::{Delivery, Mesh};
use serde::Serialize;

use crate::tls::TlsConfig;

/// How long one read of another node's `/metrics` may take, connection included.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

/// How many nodes are read at the same time.
pub(crate) const MAX_PROBES_IN_FLIGHT: usize = 16;

/// How many other nodes one dashboard reading reads at most; the rest are shown without load.
pub(crate) const MAX_PROBED_PEERS: usize = 64;

/// The most bytes of another node's `/metrics` read before giving up on it.
const MAX_METRICS_BYTES: usize = 1 << 20;

/// What a node is doing: its live activations and the calls and casts it has received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Load {
    /// Activations live on the node.
    pub activations: u64,
    /// Calls received since it started, whatever their outcome.
    pub calls: u64,
    /// Casts received since it started, whatever their outcome.
    pub casts: u64,
}

impl Load {
    /// This node's load, from its registry and request counters.
    pub(crate) fn of(mesh: &Mesh) -> Load {
        let requests = mesh.request_stats();
        let total = |delivery| requests.by_outcome(delivery).map(|(_, n)| n).sum();
        Load {
            activations: mesh.activations() as u64,
            calls: total(Delivery::Call),
            casts: total(Delivery::Cast),
        }
    }

    /// A node's load from its `/metrics` text: `mesh_activations`, and the sums of
    /// `mesh_calls_total` and `mesh_casts_total` over their outcomes. `None` without
    /// `mesh_activations` (not a mesh node's metrics).
    pub(crate) fn from_metrics(text: &str) -> Option<Load> {
        let mut load = Load::default();
        let mut seen_activations = false;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let name = series.split('{').next().unwrap_or(series);
            // Counters are integers; a float rendering of one is read as its integer part.
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let value = value.max(0.0) as u64;
            match name {
                "mesh_activations" => {
                    load.activations = value;
                    seen_activations = true;
                }
                "mesh_calls_total" => load.calls = load.calls.saturating_add(value),
                "mesh_casts_total" => load.casts = load.casts.saturating_add(value),
                _ => {}
            }
        }
        seen_activations.then_some(load)
    }
}

/// Reads other nodes' load over HTTP (HTTPS when the node serves TLS).
pub(crate) struct PeerProbe {
    client: reqwest::Client,
    scheme: &'static str,
}

impl PeerProbe {
    /// A probe for nodes that serve plain HTTP, or with `tls` HTTPS trusting only its roots.
    pub(crate) fn new(tls: Option<&TlsConfig>) -> Result<PeerProbe, reqwest::Error> {
        let mut client = reqwest::Client::builder()
            .connect_timeout(PROBE_TIMEOUT)
            .timeout(PROBE_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none());
        let scheme = match tls {
            Some(tls) => {
                client = client.tls_certs_only(tls.roots()?).https_only(true);
                "https"
            }
            None => "http",
        };
        Ok(PeerProbe {
            client: client.build()?,
            scheme,
        })
    }

    /// The load of the nodes at `addrs` (each `host:port`, with the mesh routes under
    /// `prefix`), in the order given, at most [`MAX_PROBES_IN_FLIGHT`] read at once.
    pub(crate) async fn loads(&self, addrs: &[&str], prefix: &str) -> Vec<Result<Load, String>> {
        let reads = addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| async move { (i, self.load(addr, prefix).await) });
        let mut loads: Vec<_> = futures_util::stream::iter(reads)
            .buffer_unordered(MAX_PROBES_IN_FLIGHT)
            .collect()
            .await;
        loads.sort_by_key(|(i, _)| *i);
        loads.into_iter().map(|(_, load)| load).collect()
    }

    async fn load(&self, addr: &str, prefix: &str) -> Result<Load, String> {
        let url = format!("{}://{addr}{prefix}/metrics", self.scheme);
        let read = async {
            let mut response = self.client.get(&url).send().await.map_err(describe)?;
            if !response.status().is_success() {
                return Err(format!("/metrics answered {}", response.status()));
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(describe)? {
                if body.len() + chunk.len() > MAX_METRICS_BYTES {
                    return Err(format!("/metrics is over {MAX_METRICS_BYTES} bytes"));
                }
                body.extend_from_slice(&chunk);
            }
            let text = String::from_utf8_lossy(&body);
            Load::from_metrics(&text).ok_or_else(|| "/metrics has no mesh_activations".to_owned())
        };
        // The client's timeout covers the request; this one covers reading the body too.
        actix_web::rt::time::timeout(PROBE_TIMEOUT, read)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {PROBE_TIMEOUT:?}")))
    }
}

/// A failed read, said briefly: the dashboard shows it beside the node.
fn describe(error: reqwest::Error) -> String {
    if error.is_timeout() {
        format!("no answer within {PROBE_TIMEOUT:?}")
    } else if error.is_connect() {
        "connection refused or unreachable".to_owned()
    } else {
        format!("could not read /metrics: {error}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_activations_and_sums_calls_and_casts_over_their_outcomes() {
        let text = "# HELP mesh_calls_total Calls.\n\
                    # TYPE mesh_calls_total counter\n\
                    mesh_calls_total{outcome=\"ok\"} 7\n\
                    mesh_calls_total{outcome=\"timeout\"} 2\n\
                    mesh_casts_total{outcome=\"ok\"} 3\n\
                    mesh_call_duration_seconds_count 9\n\
                    mesh_activations 4\n\
                    mesh_activations_started_total 11\n";
        assert_eq!(
            Load::from_metrics(text),
            Some(Load {
                activations: 4,
                calls: 9,
                casts: 3
            })
        );
    }

    #[test]
    fn metrics_without_activations_are_not_a_mesh_nodes() {
        assert_eq!(Load::from_metrics("up 1\n"), None);
        assert_eq!(Load::from_metrics(""), None);
        assert_eq!(Load::from_metrics("mesh_activations many\n"), None);
    }

    #[actix_web::test]
    async fn a_node_that_does_not_answer_or_refuses_is_unreachable() {
        // A listener that accepts nothing: connections wait in its backlog unanswered.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let silent = listener.local_addr().unwrap().to_string();
        // Nothing listens on a port just freed.
        let closed = {
            let freed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            freed.local_addr().unwrap().to_string()
        };
        let probe = PeerProbe::new(None).unwrap();
        let loads = probe.loads(&[&silent, &closed], "").await;
        assert_eq!(loads.len(), 2);
        assert!(
            loads[0].as_ref().is_err_and(|e| e.contains("no answer")),
            "{loads:?}"
        );
        assert!(loads[1].is_err(), "{loads:?}");
    }
}
