//! The `tracing` spans of a request: `request` (route, trace_id, status, duration_us) around
//! every call and cast a route serves, and `call` (trace_id, capability, module, id, shard,
//! owner, outcome) around its trip through the mesh, each closed by a `debug` event that
//! carries the outcome.
//!
//! Both are `debug` spans: at the default filter they are disabled, which costs a level check
//! per request, no allocation; with `RUST_LOG=mesh_http=debug` every call logs one line per
//! node it crosses, all with the caller's trace id.
//!
//! With the `otel` feature each is an OpenTelemetry span as well (module `otel`), under the
//! ids of its trace, for the binary to export.

use std::future::Future;
use std::time::Instant;

use actix_web::{HttpResponse, ResponseError};
use mesh_actix::provider::HopError;
use mesh_actix::{Mesh, MeshError, Request};
use tracing::field::{display, Empty};
use tracing::{Instrument, Span};

use crate::error::HttpError;
use crate::trace::{self, TraceContext};

/// Serves `route` under `context`, this node's span of the request `parent` sent (`None`: a
/// fresh trace): the response carries it as its `traceparent`, errors included, and hops made
/// meanwhile carry it on.
pub(crate) async fn traced(
    route: &'static str,
    parent: Option<TraceContext>,
    context: TraceContext,
    serve: impl Future<Output = Result<HttpResponse, HttpError>>,
) -> HttpResponse {
    let span = tracing::debug_span!("request", route, trace_id = %context.trace_id(),
        status = Empty, duration_us = Empty);
    continue_trace(&span, parent, context);
    let started = (!span.is_disabled()).then(Instant::now);
    let served = trace::scope(context, serve.instrument(span.clone())).await;
    let mut response = served.unwrap_or_else(|error| error.error_response());
    context.set_on(response.headers_mut());
    if let Some(started) = started {
        let status = response.status().as_u16();
        let duration_us = started.elapsed().as_micros() as u64;
        span.record("status", status);
        span.record("duration_us", duration_us);
        span.in_scope(|| tracing::debug!(status, duration_us, "request served"));
    }
    response
}

#[cfg(feature = "otel")]
pub(crate) use crate::otel::continue_trace;

/// Without the `otel` feature there is no OpenTelemetry span to start.
#[cfg(not(feature = "otel"))]
pub(crate) fn continue_trace(_: &Span, _: Option<TraceContext>, _: TraceContext) {}

/// The span of `request`'s trip through the mesh; shard and owner are looked up only when
/// the span is enabled.
pub(crate) fn call_span(mesh: &Mesh, request: &Request, context: TraceContext) -> Span {
    let span = tracing::debug_span!("call", trace_id = %context.trace_id(),
        capability = %request.capability, module = %request.module, id = %request.id,
        shard = Empty, owner = Empty, outcome = Empty);
    if !span.is_disabled() {
        let shard = mesh.shard_for(request.id.as_str());
        span.record("shard", shard.0);
        if let Ok(owner) = mesh.owner(shard, request.capability.as_str()) {
            span.record("owner", display(owner));
        }
    }
    span
}

/// What a call or cast came to, as a log field: `ok` or an error code, and for a hop's
/// refusal `refused` (the sender routes it again).
pub(crate) trait Outcome {
    fn outcome(&self) -> &'static str;
}

impl<T> Outcome for Result<T, MeshError> {
    fn outcome(&self) -> &'static str {
        match self {
            Ok(_) => "ok",
            Err(error) => error.code().as_str(),
        }
    }
}

impl<T> Outcome for Result<T, HopError> {
    fn outcome(&self) -> &'static str {
        match self {
            Ok(_) => "ok",
            Err(HopError::Failed(error)) => error.code().as_str(),
            Err(HopError::NotDelivered(..)) => "refused",
            Err(HopError::MaybeDelivered(_)) => "maybe_delivered",
        }
    }
}

/// Runs `trip` in `span` and logs its outcome there.
pub(crate) async fn observed<R: Outcome>(span: Span, trip: impl Future<Output = R>) -> R {
    let result = trip.instrument(span.clone()).await;
    if !span.is_disabled() {
        let outcome = result.outcome();
        span.record("outcome", outcome);
        span.in_scope(|| tracing::debug!(outcome, "call done"));
    }
    result
}
