//! The request spans as OpenTelemetry spans (feature `otel`), under the ids of their W3C
//! trace: an exported span has the trace id of the request's `traceparent`, the incoming
//! `traceparent`'s span as its parent, and as its own id the span id this node writes on the
//! reply and on the hops it makes. So a call forwarded once exports as one trace, the owner's
//! span a child of the first node's.
//!
//! The `tracing-opentelemetry` layer turns `tracing` spans into OpenTelemetry ones, but the SDK
//! draws every span's id (and a root's trace id) from its [`IdGenerator`]: [`TraceIds`] is that
//! generator, and hands out the ids of our [`TraceContext`] for the span a route starts (it
//! sets them here while the OpenTelemetry span is built). Installing the layer and exporting
//! is the binary's job (mesh-examples' `otel`).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::trace::IdGenerator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::trace::{self, TraceContext};

thread_local! {
    /// The ids of the span being started on this thread by [`continue_trace`], if any.
    static STARTING: Cell<Option<TraceContext>> = const { Cell::new(None) };
}

/// The SDK's [`IdGenerator`] for mesh's spans: the ids of the [`TraceContext`] whose span a
/// route is starting on this thread, else fresh ones (other spans, e.g. a `call`
/// span nested in a `request` span), from the same thread-local generator as ours.
///
/// The binary gives it to its tracer provider:
///
/// ```
/// use mesh_http::otel::TraceIds;
/// use opentelemetry::trace::{SpanId, TraceId};
/// use opentelemetry_sdk::trace::{IdGenerator, SdkTracerProvider};
///
/// let provider = SdkTracerProvider::builder().with_id_generator(TraceIds).build();
/// # drop(provider);
/// // Outside a route's span (a span nested in it, say): fresh ids, never the invalid zero.
/// assert_ne!(TraceIds.new_trace_id(), TraceId::INVALID);
/// assert_ne!(TraceIds.new_span_id(), SpanId::INVALID);
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct TraceIds;

impl IdGenerator for TraceIds {
    fn new_trace_id(&self) -> TraceId {
        let id = STARTING
            .get()
            .map_or_else(|| TraceContext::fresh().trace_id, |c| c.trace_id);
        TraceId::from(id)
    }

    fn new_span_id(&self) -> SpanId {
        SpanId::from(STARTING.get().map_or_else(trace::next_id, |c| c.span_id))
    }
}

/// Starts `span`'s OpenTelemetry span now, as `own` (its trace id and span id), the child of
/// `parent` (the incoming `traceparent`; `None` for a trace this node started: a root).
/// Nothing happens when no OpenTelemetry layer sees `span`.
pub(crate) fn continue_trace(span: &Span, parent: Option<TraceContext>, own: TraceContext) {
    if span.is_disabled() {
        return;
    }
    if let Some(parent) = parent {
        let remote = SpanContext::new(
            TraceId::from(parent.trace_id),
            SpanId::from(parent.span_id),
            TraceFlags::new(parent.flags),
            true,
            TraceState::NONE,
        );
        // An error only says that no OpenTelemetry layer sees this span: nothing to export.
        if span
            .set_parent(opentelemetry::Context::new().with_remote_span_context(remote))
            .is_err()
        {
            return;
        }
    }
    // `context()` builds the OpenTelemetry span, which is when the SDK asks TraceIds for its
    // ids: here, on this thread, while STARTING holds them.
    STARTING.set(Some(own));
    let started = span.context();
    STARTING.set(None);
    check_ids(started.span().span_context(), own);
}

/// Warns once if a span was started with other ids than ours (a `tracing-opentelemetry` that
/// builds its spans at another time than `context()`): its export would not match the
/// `traceparent`s, so say it rather than export quietly wrong traces.
fn check_ids(started: &SpanContext, own: TraceContext) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    let ours = started.span_id() == SpanId::from(own.span_id)
        && started.trace_id() == TraceId::from(own.trace_id);
    if started.is_valid() && !ours && !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            exported = %started.span_id(),
            traceparent = %own,
            "exported spans do not carry the ids of their traceparent"
        );
    }
}
