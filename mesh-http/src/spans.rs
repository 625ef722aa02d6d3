//! The `tracing` spans of a request: `request` (route, trace_id, status, duration_us) around
//! every request a mesh route serves, and `call` (trace_id, capability, module, id, shard,
//! owner, outcome) around the trip of a call or cast through the mesh, each closed by a
//! `debug` event that carries the outcome.
//!
//! The `request` span is middleware ([`RequestSpans`]) on every resource [`crate::routes`]
//! mounts, so a new route cannot forget it; it also continues the W3C trace of the request's
//! `traceparent` (or starts one), makes it the trace of the hops the route makes meanwhile,
//! and writes this node's span of it on the response, errors included.
//!
//! Both are `debug` spans: at the default filter they are disabled, which costs a level check
//! per request, no allocation beyond the middleware's future; with `RUST_LOG=mesh_http=debug`
//! every call logs one line per node it crosses, all with the caller's trace id.
//!
//! With the `otel` feature each is an OpenTelemetry span as well (module `otel`), under the
//! ids of its trace, for the binary to export: `request` of kind server, its status an error
//! when the response is a 5xx.

use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use mesh_actix::provider::HopError;
use mesh_actix::{Mesh, MeshError, Request};
use tracing::field::{display, Empty};
use tracing::{Instrument, Span};

use crate::trace::{self, TraceContext};

/// Middleware: serves each request of `route` in its `request` span and trace (see the
/// module's docs).
#[derive(Clone, Copy)]
pub(crate) struct RequestSpans {
    pub(crate) route: &'static str,
}

impl<S, B> Transform<S, ServiceRequest> for RequestSpans
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = actix_web::Error;
    type Transform = RequestSpanService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RequestSpanService {
            service,
            route: self.route,
        }))
    }
}

pub(crate) struct RequestSpanService<S> {
    service: S,
    route: &'static str,
}

type Served = Pin<Box<dyn Future<Output = Result<ServiceResponse<BoxBody>, actix_web::Error>>>>;

impl<S, B> Service<ServiceRequest> for RequestSpanService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = actix_web::Error;
    type Future = Served;

    fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.service.poll_ready(cx)
    }

    fn call(&self, req: ServiceRequest) -> Served {
        let parent = TraceContext::incoming(req.headers());
        let context = TraceContext::continuing(parent);
        let trace_id = display(context.trace_id());
        // The fields `tracing-opentelemetry` reads are left out of the logs of other builds.
        #[cfg(feature = "otel")]
        let span = tracing::debug_span!(
            "request",
            route = self.route,
            trace_id,
            status = Empty,
            duration_us = Empty,
            otel.kind = "server",
            otel.status_code = Empty
        );
        #[cfg(not(feature = "otel"))]
        let span = tracing::debug_span!(
            "request",
            route = self.route,
            trace_id,
            status = Empty,
            duration_us = Empty
        );
        continue_trace(&span, parent, context);
        let started = (!span.is_disabled()).then(Instant::now);
        // An error of the service (an extractor's, say) becomes its response here, so that it
        // carries the traceparent and its status is logged like any other.
        let request = req.request().clone();
        let served = trace::scope(context, self.service.call(req).instrument(span.clone()));
        Box::pin(async move {
            let mut response = match served.await {
                Ok(response) => response.map_into_boxed_body(),
                Err(error) => ServiceResponse::from_err(error, request),
            };
            context.set_on(response.headers_mut());
            if let Some(started) = started {
                let status = response.status();
                let duration_us = started.elapsed().as_micros() as u64;
                span.record("status", status.as_u16());
                span.record("duration_us", duration_us);
                if status.is_server_error() {
                    span.record("otel.status_code", "error");
                }
                let status = status.as_u16();
                span.in_scope(|| tracing::debug!(status, duration_us, "request served"));
            }
            Ok(response)
        })
    }
}

#[cfg(feature = "otel")]
pub(crate) use crate::otel::continue_trace;

/// Without the `otel` feature there is no OpenTelemetry span to start.
#[cfg(not(feature = "otel"))]
pub(crate) fn continue_trace(_: &Span, _: Option<TraceContext>, _: TraceContext) {}

/// The span of `request`'s trip through the mesh, in the trace of the request being served;
/// shard and owner are looked up only when the span is enabled.
pub(crate) fn call_span(mesh: &Mesh, request: &Request) -> Span {
    let trace_id = trace::current().map(|context| display(context.trace_id()));
    let span = tracing::debug_span!("call", trace_id,
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
