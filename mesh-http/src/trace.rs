//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>) for calls and casts: the
//! `traceparent` header a request arrives with (or a fresh trace when it has none, or an
//! invalid one), carried to the owner on a hop, and returned on the reply.
//!
//! The context of the request being served is a task-local ([`scope`]): the route sets it
//! around `Mesh::call_from`, and [`crate::HttpTransport`] reads it ([`current`]) when it
//! forwards the request, from the same task, so that mesh-actix needs to know nothing of it.
//! Ids come from a thread-local xorshift generator seeded once per thread: no lock, no
//! syscall and no allocation per request.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

/// The header of the W3C Trace Context.
pub const TRACEPARENT: &str = "traceparent";

/// The traceparents of a batch's calls, comma-separated in the order of its calls (a batch
/// is one request, so one `traceparent` cannot carry them).
pub(crate) const BATCH_TRACEPARENTS: &str = "x-mesh-traceparents";

/// The length of a version-00 `traceparent`: `00-<32 hex>-<16 hex>-<2 hex>`.
const LEN: usize = 55;

/// Where a request is in its trace: the trace it belongs to and the span that sent it.
///
/// ```
/// use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
/// use mesh_http::{TraceContext, TRACEPARENT};
///
/// let mut headers = HeaderMap::new();
/// let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// headers.insert(HeaderName::from_static(TRACEPARENT), HeaderValue::from_static(traceparent));
/// let sender = TraceContext::from_headers(&headers);
/// assert_eq!(sender.span_id, 0x00f0_67aa_0ba9_02b7);
/// assert_eq!(sender.flags & 1, 1, "sampled");
///
/// // This node's span: the same trace, a span of its own, which the reply carries back.
/// let own = sender.child();
/// assert_eq!(own.trace_id, sender.trace_id);
/// assert_ne!(own.span_id, sender.span_id);
/// assert!(own.to_string().starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
///
/// // A traceparent the specification says to ignore starts a trace rather than fail.
/// let upper_case = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01";
/// assert_eq!(TraceContext::parse(upper_case), None);
/// headers.insert(HeaderName::from_static(TRACEPARENT), HeaderValue::from_static("garbage"));
/// assert_ne!(TraceContext::from_headers(&headers).trace_id, sender.trace_id);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace, never 0.
    pub trace_id: u128,
    /// The span: the sender's (parsed) or this node's (after [`TraceContext::child`]), never 0.
    pub span_id: u64,
    /// The trace flags; bit 0 is `sampled`.
    pub flags: u8,
}

impl TraceContext {
    /// Parses a `traceparent` value; `None` for anything the specification says to ignore
    /// (wrong length or separators, upper-case or non-hex digits, version `ff`, all-zero ids).
    /// A later version is read for its first four fields, as the specification asks.
    pub fn parse(value: &str) -> Option<TraceContext> {
        let bytes = value.as_bytes();
        if bytes.len() < LEN {
            return None;
        }
        let version = hex(&bytes[0..2])? as u8;
        let exact = version == 0 && bytes.len() == LEN;
        let later = version != 0 && version != 0xff && (bytes.len() == LEN || bytes[LEN] == b'-');
        if !(exact || later) || bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return None;
        }
        let trace_id = hex(&bytes[3..35])?;
        let span_id = hex(&bytes[36..52])? as u64;
        let flags = hex(&bytes[53..55])? as u8;
        (trace_id != 0 && span_id != 0).then_some(TraceContext {
            trace_id,
            span_id,
            flags,
        })
    }

    /// A new trace, sampled.
    pub fn fresh() -> TraceContext {
        TraceContext {
            trace_id: loop {
                let id = (u128::from(next_id()) << 64) | u128::from(next_id());
                if id != 0 {
                    break id;
                }
            },
            span_id: next_id(),
            flags: 1,
        }
    }

    /// The context of `headers`' `traceparent`, or a fresh trace when it has none or an
    /// invalid one (never an error).
    pub fn from_headers(headers: &HeaderMap) -> TraceContext {
        TraceContext::incoming(headers).unwrap_or_else(TraceContext::fresh)
    }

    /// The context of `headers`' `traceparent`, if it has a valid one: the sender's span.
    pub(crate) fn incoming(headers: &HeaderMap) -> Option<TraceContext> {
        headers
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(TraceContext::parse)
    }

    /// This node's span of the request `parent` sent: its child, or a fresh trace without one.
    pub(crate) fn continuing(parent: Option<TraceContext>) -> TraceContext {
        parent.map_or_else(TraceContext::fresh, TraceContext::child)
    }

    /// A span of the same trace, with a new id: this node's span, or a hop's.
    pub fn child(self) -> TraceContext {
        TraceContext {
            span_id: next_id(),
            ..self
        }
    }

    /// The trace id as its 32 hex digits, for log fields.
    pub fn trace_id(self) -> TraceId {
        TraceId(self.trace_id)
    }

    /// This context as a `traceparent` header value (version 00).
    pub fn header_value(self) -> HeaderValue {
        HeaderValue::from_bytes(&self.encode()).expect("hex digits and dashes are a valid header")
    }

    /// This context as the bytes of a `traceparent` (version 00), written on the stack.
    pub fn encode(self) -> [u8; LEN] {
        let mut out = [0u8; LEN];
        out[..3].copy_from_slice(b"00-");
        write_hex(&mut out[3..35], self.trace_id);
        out[35] = b'-';
        write_hex(&mut out[36..52], u128::from(self.span_id));
        out[52] = b'-';
        write_hex(&mut out[53..55], u128::from(self.flags));
        out
    }

    /// Adds this context to a response as its `traceparent`.
    pub(crate) fn set_on(self, headers: &mut HeaderMap) {
        headers.insert(HeaderName::from_static(TRACEPARENT), self.header_value());
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let encoded = self.encode();
        f.write_str(std::str::from_utf8(&encoded).expect("ascii"))
    }
}

/// A trace id written as 32 lower-case hex digits (a log field).
///
/// ```
/// use mesh_http::{TraceContext, TraceId};
///
/// let context = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
/// let id: TraceId = context.unwrap().trace_id();
/// assert_eq!(id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// // Always 32 digits, as a trace backend looks it up.
/// assert_eq!(TraceId(1).to_string(), format!("{:0>32}", 1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceId(pub u128);

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// The value of `hex` (lower-case digits only, as the specification requires).
fn hex(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |value, &digit| {
        let nibble = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            _ => return None,
        };
        Some((value << 4) | u128::from(nibble))
    })
}

/// Writes the low `out.len()` nibbles of `value` as lower-case hex.
fn write_hex(out: &mut [u8], mut value: u128) {
    for digit in out.iter_mut().rev() {
        *digit = b"0123456789abcdef"[(value & 0xf) as usize];
        value >>= 4;
    }
}

thread_local! {
    /// xorshift64* state, seeded once per thread from std's random hasher keys.
    static RNG: Cell<u64> = Cell::new(
        std::collections::hash_map::RandomState::new().build_hasher().finish() | 1,
    );
}

/// A non-zero random 64-bit id. Trace ids need to be unique, not unpredictable.
pub(crate) fn next_id() -> u64 {
    RNG.with(|state| loop {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        let id = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        if id != 0 {
            return id;
        }
    })
}

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// Runs `future` with `context` as the trace of the request it serves.
pub(crate) async fn scope<F: Future>(context: TraceContext, future: F) -> F::Output {
    CURRENT.scope(context, future).await
}

impl TraceContext {
    /// Runs `future` in this trace: the hops [`crate::HttpTransport`] makes while it runs (in
    /// its task) carry it to the owners. For calls made from Rust, e.g. by a service that
    /// embeds mesh and has a trace of its own:
    ///
    /// ```no_run
    /// # async fn run(mesh: mesh_actix::Mesh, request: mesh_actix::Request) {
    /// use mesh_http::TraceContext;
    /// let trace = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    ///     .unwrap_or_else(TraceContext::fresh);
    /// let reply = trace.child().scope(mesh.call(request)).await;
    /// # }
    /// ```
    pub async fn scope<F: Future>(self, future: F) -> F::Output {
        scope(self, future).await
    }
}

/// The trace of the request this task serves, if a route set one.
pub(crate) fn current() -> Option<TraceContext> {
    CURRENT.try_with(|context| *context).ok()
}

/// The [`BATCH_TRACEPARENTS`] value of a batch's calls: one entry per call, in order, `-`
/// for a call without a trace (which the owner gives a fresh one).
pub(crate) fn batch_value<'a>(traces: impl Iterator<Item = Option<&'a TraceContext>>) -> Vec<u8> {
    let mut value = Vec::new();
    for (i, trace) in traces.enumerate() {
        if i > 0 {
            value.push(b',');
        }
        match trace {
            Some(trace) => value.extend_from_slice(&trace.encode()),
            None => value.push(b'-'),
        }
    }
    value
}

/// The traceparents of a batch header, in order; `None` for an invalid or missing entry (a
/// call that starts a fresh trace).
pub(crate) fn parse_batch(headers: &HeaderMap) -> impl Iterator<Item = Option<TraceContext>> + '_ {
    let value = headers
        .get(BATCH_TRACEPARENTS)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut entries = value.split(',');
    std::iter::from_fn(move || Some(entries.next().and_then(|e| TraceContext::parse(e.trim()))))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_specifications_example() {
        let context = TraceContext::parse(EXAMPLE).unwrap();
        assert_eq!(context.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(context.span_id, 0x00f067aa0ba902b7);
        assert_eq!(context.flags, 1);
        assert_eq!(context.to_string(), EXAMPLE);
        assert_eq!(
            context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }

    #[test]
    fn refuses_what_the_specification_says_to_ignore() {
        for bad in [
            "",
            "garbage",
            // Upper case.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            // All-zero ids.
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // Version ff, and version 00 with trailing data.
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            // Wrong separators or lengths.
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
        // A later version may carry more fields after a dash.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more";
        assert!(TraceContext::parse(later).is_some());
    }

    #[test]
    fn a_child_keeps_the_trace_and_gets_a_new_span() {
        let parent = TraceContext::parse(EXAMPLE).unwrap();
        let child = parent.child();
        assert_eq!(child.trace_id, parent.trace_id);
        assert_ne!(child.span_id, parent.span_id);
        assert_ne!(
            TraceContext::fresh().trace_id,
            TraceContext::fresh().trace_id
        );
    }

    #[test]
    fn batch_entries_are_read_in_order_and_bad_ones_replaced() {
        let mut headers = HeaderMap::new();
        let example = TraceContext::parse(EXAMPLE).unwrap();
        let value = batch_value([Some(&example), None].into_iter());
        assert_eq!(value, format!("{EXAMPLE},-").into_bytes());
        headers.insert(
            HeaderName::from_static(BATCH_TRACEPARENTS),
            HeaderValue::from_bytes(&value).unwrap(),
        );
        let read: Vec<_> = parse_batch(&headers).take(3).collect();
        assert_eq!(
            read,
            [Some(example), None, None],
            "past the list: fresh traces"
        );
    }

    proptest! {
        #[test]
        fn every_context_round_trips(trace_id in 1..=u128::MAX, span_id in 1..=u64::MAX, flags: u8) {
            let context = TraceContext { trace_id, span_id, flags };
            prop_assert_eq!(TraceContext::parse(&context.to_string()), Some(context));
        }

        #[test]
        fn no_input_panics_and_what_parses_is_valid(value in "[0-9a-fA-F-]{0,60}|.{0,80}") {
            if let Some(context) = TraceContext::parse(&value) {
                prop_assert!(context.trace_id != 0 && context.span_id != 0);
                prop_assert_eq!(&value[3..55], &context.to_string()[3..55]);
            }
        }
    }
}
