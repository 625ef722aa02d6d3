//! Batched hops: calls to one peer that find [`Lanes`]' in-flight bound reached wait for a
//! hop to come back and then leave together, as one `POST /internal/batch`.
//!
//! No timer is involved: below the bound every call is a hop of its own (no added latency);
//! at it, a call queues, and the next hop to finish takes every queued call with it (Nagle's
//! rule on outstanding requests rather than on a clock). So batches form only under load, and
//! grow with it, which is when the per-request cost of HTTP (a request parse, a reply, a
//! wake-up on each side) is what limits forwarded throughput.
//!
//! The owner answers a batch with one JSON line per call, `{"i": <index>, "reply": {...}}` or
//! `{"i": <index>, "error": {"code", "message"}, "refusal": "<reason>"}`, written as each call
//! completes (a slow call holds up no other call of its batch). A batch is one signed,
//! body-bounded request like any hop; a peer that does not serve the route (404/405) or refuses
//! the batch's size (413) gets its calls as single hops, and that peer no more batches.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::stream::{FuturesUnordered, StreamExt};
use mesh_actix::provider::{FrontEnd, HopError, Hops, Refusal};
use mesh_actix::{MeshError, Reply, Request};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::error::HttpError;
use crate::routes::Shared;
use crate::spans::{call_span, continue_trace, observed};
use crate::trace::{self, parse_batch, TraceContext};
use crate::transport::{outcome_of, ErrorDetail, HttpTransport, Peer};

/// The most calls in one batch (the owner refuses more with 400 `bad_request`).
pub const MAX_BATCH_CALLS: usize = 64;

/// A batch stops growing at this many bytes of requests: well under the default body limit,
/// so that a batch is never refused for its size on a node with default settings.
pub(crate) const MAX_BATCH_BYTES: usize = 256 * 1024;

/// A request larger than this never joins a batch: it goes alone.
const MAX_BATCHED_REQUEST: usize = 16 * 1024;

/// The most calls queued for one peer; past it a call goes alone, on a connection of its own
/// (the bound keeps memory bounded, not the load off the peer: the router's mailbox bounds do).
const MAX_QUEUED_CALLS: usize = 4096;

/// A call waiting for a batch.
pub(crate) struct Queued {
    pub(crate) request: Request,
    /// The trace the call belongs to, carried to the owner.
    pub(crate) trace: Option<TraceContext>,
    /// [`estimated_size`] of the request.
    size: usize,
    pub(crate) deadline: Instant,
    pub(crate) reply: oneshot::Sender<Result<Reply, HopError>>,
}

/// The hops of this node to one peer: how many are in flight and which calls wait.
#[derive(Default)]
pub(crate) struct Lane {
    state: Mutex<LaneState>,
}

#[derive(Default)]
struct LaneState {
    in_flight: usize,
    queued: VecDeque<Queued>,
    /// The peer answered a batch with 404 or 405: it does not serve batches.
    single_only: bool,
}

/// What a call does on its lane.
pub(crate) enum Admission {
    /// Go alone, with `Request`; the slot is released when the [`Slot`] drops.
    Alone(Slot, Request),
    /// Wait here for a batch to carry the call.
    Queued(oneshot::Receiver<Result<Reply, HopError>>),
}

/// One hop in flight to a peer. Dropping it (the hop is done, or its caller went away)
/// frees the slot, or hands it to the calls queued meanwhile, which leave as one batch.
pub(crate) struct Slot {
    peer: Arc<Peer>,
    transport: HttpTransport,
}

impl Lane {
    /// Admits a call to `peer`: alone while fewer than `max_in_flight` hops are in flight
    /// (or when it cannot be batched), else queued for the next batch.
    pub(crate) fn admit(
        transport: &HttpTransport,
        peer: &Arc<Peer>,
        request: Request,
        trace: Option<TraceContext>,
        deadline: Instant,
        max_in_flight: usize,
    ) -> Admission {
        let goes_alone = |state: &LaneState| {
            state.in_flight < max_in_flight
                || state.single_only
                || state.queued.len() >= MAX_QUEUED_CALLS
        };
        let alone = |mut state: parking_lot::MutexGuard<'_, LaneState>, request| {
            state.in_flight += 1;
            let slot = Slot {
                peer: peer.clone(),
                transport: transport.clone(),
            };
            Admission::Alone(slot, request)
        };
        let state = peer.lane.state.lock();
        if goes_alone(&state) {
            return alone(state, request);
        }
        drop(state);
        // Sized outside the lock; a slot may have freed meanwhile, so the state is read again.
        let size = estimated_size(&request);
        let mut state = peer.lane.state.lock();
        if goes_alone(&state) || size > MAX_BATCHED_REQUEST {
            return alone(state, request);
        }
        let (reply, waiting) = oneshot::channel();
        state.queued.push_back(Queued {
            request,
            trace,
            size,
            deadline,
            reply,
        });
        Admission::Queued(waiting)
    }

    /// The peer does not serve batches: its calls go alone from now on.
    pub(crate) fn single_only(&self) {
        self.state.lock().single_only = true;
    }
}

impl Slot {
    /// The calls queued on this slot's lane, up to a batch's bounds; none: the slot is freed.
    fn take_batch(&self) -> Vec<Queued> {
        let mut state = self.peer.lane.state.lock();
        let (mut batch, mut bytes) = (Vec::new(), 0);
        while let Some(next) = state.queued.front() {
            // A caller that gave up is skipped: its call was never sent.
            if next.reply.is_closed() {
                state.queued.pop_front();
                continue;
            }
            if batch.len() == MAX_BATCH_CALLS || bytes >= MAX_BATCH_BYTES {
                break;
            }
            bytes += next.size;
            batch.extend(state.queued.pop_front());
        }
        if batch.is_empty() {
            state.in_flight -= 1;
        }
        batch
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let batch = self.take_batch();
        if batch.is_empty() {
            return;
        }
        // The slot passes to the batch: the lane's in-flight count stays the same.
        let slot = Slot {
            peer: self.peer.clone(),
            transport: self.transport.clone(),
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { slot.transport.clone().send_batch(slot, batch).await });
            }
            // No runtime to send from (the process is shutting down): nothing was sent.
            Err(_) => {
                for call in batch {
                    let refused = HopError::refused(
                        Refusal::Unreachable,
                        format!("no batch could leave for node {}", slot.peer.node),
                    );
                    let _ = call.reply.send(Err(refused));
                }
            }
        }
    }
}

impl Slot {
    /// The peer this slot's hop goes to.
    pub(crate) fn peer(&self) -> &Arc<Peer> {
        &self.peer
    }
}

/// A request's size in a batch, within a few bytes: its strings, its payload and init_arg
/// as JSON (counted, not written), and the field names around them.
fn estimated_size(request: &Request) -> usize {
    /// Counts what JSON would be written.
    struct Counted(usize);
    impl std::io::Write for Counted {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut json = Counted(96);
    let _ = serde_json::to_writer(&mut json, &request.payload);
    if let Some(init_arg) = &request.init_arg {
        let _ = serde_json::to_writer(&mut json, init_arg);
    }
    let strings = request.module.as_str().len() + request.id.as_str().len();
    json.0 + strings + request.capability.as_str().len()
}

/// The body of a batch: the calls' requests as a JSON array, each with its remaining time.
pub(crate) fn batch_body(calls: &[Queued], now: Instant) -> Vec<u8> {
    let mut body = Vec::with_capacity(calls.len() * 160);
    body.push(b'[');
    for (i, call) in calls.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        let remaining = call.deadline.saturating_duration_since(now);
        body.extend(
            call.request
                .to_json_bytes(Some(remaining.max(Duration::from_millis(1)))),
        );
    }
    body.push(b']');
    body
}

/// One line of a batch's reply.
#[derive(Serialize, Deserialize)]
pub(crate) struct Outcome {
    pub(crate) i: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reply: Option<Reply>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<ErrorDetail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) refusal: Option<String>,
}

impl Outcome {
    fn of(i: usize, result: Result<Reply, HopError>) -> Outcome {
        let (reply, error, refusal) = match result {
            Ok(reply) => (Some(reply), None, None),
            Err(HopError::NotDelivered(refusal, error)) => (
                None,
                Some(detail(&error)),
                Some(refusal.as_str().to_owned()),
            ),
            Err(other) => (None, Some(detail(&other.into_error())), None),
        };
        Outcome {
            i,
            reply,
            error,
            refusal,
        }
    }

    /// The call's outcome as the sender's router needs it.
    pub(crate) fn into_result(self, peer: &Peer) -> Result<Reply, HopError> {
        match (self.reply, self.error) {
            (Some(reply), _) => Ok(reply),
            (None, Some(error)) => {
                let refusal = self.refusal.as_deref().and_then(Refusal::parse);
                Err(outcome_of(peer, refusal, error, "in a batch"))
            }
            (None, None) => Err(HopError::MaybeDelivered(format!(
                "node {} answered a batched call with neither a reply nor an error; it may \
                 have run",
                peer.node
            ))),
        }
    }
}

fn detail(error: &MeshError) -> ErrorDetail {
    ErrorDetail {
        code: error.code().as_str().to_owned(),
        message: error.message().to_owned(),
    }
}

/// The batches this node served as the owner of their calls, for `/metrics`.
#[derive(Default)]
pub(crate) struct ServedBatches {
    batches: AtomicU64,
    calls: AtomicU64,
}

impl ServedBatches {
    fn record(&self, calls: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.calls.fetch_add(calls as u64, Ordering::Relaxed);
    }

    /// `(batches, calls they carried)` so far.
    pub(crate) fn reading(&self) -> (u64, u64) {
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        (load(&self.batches), load(&self.calls))
    }
}

/// `POST /internal/batch`: runs every call of a batch (each only if this node owns it, as
/// `/internal/call` does) and streams each outcome as it completes.
pub(crate) async fn serve_batch(
    state: Shared,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, HttpError> {
    let bytes = state.hop_body(&req, body).await?;
    let calls: Vec<&RawValue> = serde_json::from_slice(&bytes)
        .map_err(|e| MeshError::BadRequest(format!("invalid batch: {e}")))?;
    if calls.len() > MAX_BATCH_CALLS {
        return Err(MeshError::BadRequest(format!(
            "a batch holds at most {MAX_BATCH_CALLS} calls, got {}",
            calls.len()
        ))
        .into());
    }
    state.batches.record(calls.len());
    // Each call continues its own trace, from the batch's list of them.
    let outcomes: FuturesUnordered<_> = calls
        .into_iter()
        .zip(parse_batch(req.headers()))
        .enumerate()
        .map(|(i, (call, trace))| {
            let parsed = Request::from_json(call.get().as_bytes());
            let mesh = state.mesh.clone();
            let (parent, trace) = (trace, TraceContext::continuing(trace));
            let served = async move {
                let result = match parsed {
                    Ok(request) => {
                        // A batched call has no `request` span: its `call` span is this
                        // node's span of its trace.
                        let span = call_span(&mesh, &request);
                        continue_trace(&span, parent, trace);
                        observed(span, mesh.forwarded_call(request)).await
                    }
                    Err(error) => {
                        mesh.record_rejection(mesh_actix::Delivery::Call, &error);
                        Err(HopError::Failed(error))
                    }
                };
                Outcome::of(i, result)
            };
            trace::scope(trace, served)
        })
        .collect();
    // The outcomes ready together leave in one write: one write per batch when its calls
    // complete at once, as they usually do, whatever the server's Nagle setting.
    let lines = outcomes.ready_chunks(MAX_BATCH_CALLS).map(|ready| {
        let mut lines = Vec::with_capacity(ready.len() * 128);
        for outcome in ready {
            serde_json::to_writer(&mut lines, &outcome).expect("an outcome always serializes");
            lines.push(b'\n');
        }
        Ok::<_, std::convert::Infallible>(web::Bytes::from(lines))
    });
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .streaming(lines))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_never_larger_in_a_batch_than_its_estimate() {
        let big = "y".repeat(20_000);
        for payload in [
            serde_json::json!(null),
            serde_json::json!({"k": [1, 2, "\u{e9}"]}),
            serde_json::json!(big),
        ] {
            let request = Request::new("Counter", "id-1", "counter")
                .unwrap()
                .with_payload(payload.clone())
                .with_init_arg(payload)
                .with_timeout(Duration::from_secs(3600));
            let written = request.to_json_bytes(Some(Duration::from_secs(3600))).len();
            let estimate = estimated_size(&request);
            assert!(
                estimate >= written && estimate <= written + 96,
                "{estimate} vs {written}"
            );
        }
    }

    #[test]
    fn an_outcome_round_trips_a_refusal() {
        let refused = HopError::refused(Refusal::NotOwner, "moved");
        let line = serde_json::to_string(&Outcome::of(3, Err(refused))).unwrap();
        let back: Outcome = serde_json::from_str(&line).unwrap();
        assert_eq!(back.i, 3);
        assert_eq!(back.refusal.as_deref(), Some(Refusal::NotOwner.as_str()));
        assert!(back.reply.is_none());
    }
}
