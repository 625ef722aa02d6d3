//! mesh-node's OpenTelemetry export (feature `otel`): when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, mesh-http's `request` and `call` spans go to
//! that collector over OTLP/HTTP, under the ids of their `traceparent`
//! ([`mesh_http::otel::TraceIds`]); when neither is set, nothing is set up and nothing is sent.
//!
//! The export runs on the SDK's batch span processor, a thread of its own: a finished span is
//! queued without blocking (at most `OTEL_BSP_MAX_QUEUE_SIZE`, 2,048, spans; beyond that they
//! are dropped and counted, the count logged), sent in batches every `OTEL_BSP_SCHEDULE_DELAY`
//! (5 s), each export bounded by `OTEL_EXPORTER_OTLP_TIMEOUT` (10 s). So a slow, failing or
//! absent collector costs a request nothing but the queueing of its spans.

use std::env;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;

use crate::LogFormat;

/// The service name when `OTEL_SERVICE_NAME` is not set.
const SERVICE_NAME: &str = "mesh-node";

/// Where mesh-http's spans are made (their `tracing` target).
const SPANS_TARGET: &str = "mesh_http::spans";

/// A running export: [`Export::shutdown`] sends what is queued.
pub struct Export {
    provider: SdkTracerProvider,
}

impl Export {
    /// Sends the spans still queued (waiting at most 5 s for the collector) and stops the
    /// export. It blocks the calling thread: for the end of a node's life.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(%error, "cannot flush the trace export");
        }
    }
}

/// Logs as [`crate::init_logging`] does and, when an OTLP endpoint is set, exports mesh-http's
/// spans as the node `node_id` (resource attribute `service.instance.id`); returns the export,
/// to shut down when the node stops. Fails only on OTLP settings the exporter refuses.
pub fn init_logging(format: LogFormat, node_id: &str) -> anyhow::Result<Option<Export>> {
    let set = |var| env::var_os(var).is_some_and(|v| !v.is_empty());
    if !set("OTEL_EXPORTER_OTLP_ENDPOINT") && !set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        crate::init_logging(format);
        return Ok(None);
    }
    // Endpoint, protocol (default http/protobuf), headers and timeout from the standard
    // OTEL_EXPORTER_OTLP_* variables.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .context("cannot export traces (OTEL_EXPORTER_OTLP_*)")?;
    let service = env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| SERVICE_NAME.to_owned());
    let resource = Resource::builder()
        .with_service_name(service)
        .with_attribute(KeyValue::new("service.instance.id", node_id.to_owned()))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_id_generator(mesh_http::otel::TraceIds)
        .with_resource(resource)
        .with_batch_exporter(exporter)
        .build();
    // Its own filter: the spans are `debug`, exported whatever RUST_LOG keeps of the log, and
    // nothing else is (no events, no other crate's spans). No code locations, targets,
    // threads or busy/idle times: a span carries mesh's fields only.
    let spans = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("mesh"))
        .with_location(false)
        .with_target(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_context_activation(false)
        .with_filter(filter_fn(|meta| {
            meta.is_span() && meta.target() == SPANS_TARGET
        }));
    let _ = tracing_subscriber::registry()
        .with(spans)
        .with(crate::log_layer(format))
        .try_init();
    Ok(Some(Export { provider }))
}
