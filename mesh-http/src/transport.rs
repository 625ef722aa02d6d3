//! The node-to-node hop over HTTP: a pooled reqwest client posting to the other nodes'
//! internal routes (`POST /internal/call`, `/internal/cast`, `/internal/lease`,
//! `/internal/handoff`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use mesh_actix::provider::{Handoff, HopError, Refusal, RemoteTransport, RenewReply, RenewRequest};
use mesh_actix::{ErrorCode, Member, MeshError, NodeId, Reply, Request};
use parking_lot::RwLock;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::batch::{batch_body, Admission, Lane, Outcome, Queued, Slot};
use crate::error::REFUSAL_HEADER;
use crate::signing::{ClusterKey, SIGNATURE_HEADER};
use crate::tls::TlsConfig;
use crate::trace::{batch_value, TraceContext, BATCH_TRACEPARENTS, TRACEPARENT};

/// Forwards requests to their owner over HTTP/JSON, reusing pooled keep-alive connections.
/// With a secret, every hop is signed with a key derived from it (see [`ClusterKey`]); the
/// secret itself is never sent. With TLS ([`HttpTransport::over_tls`]), hops are HTTPS.
/// [`crate::join`] and [`crate::serve`] build one; a service that wires its node by hand gives
/// one to the builder:
///
/// ```
/// use mesh_actix::{Mesh, NodeId};
/// use mesh_http::HttpTransport;
///
/// # actix_rt::System::new().block_on(async {
/// // The other nodes mount their mesh routes under /mesh, as this one does.
/// let transport = HttpTransport::new(Some("s3cret".into())).unwrap().with_path_prefix("/mesh");
/// let mesh = Mesh::builder(NodeId::new("web-1").unwrap(), "127.0.0.1:8080")
///     .transport(transport)
///     .start()
///     .unwrap();
/// # drop(mesh);
/// # });
/// ```
///
/// Cloning is cheap (a few reference counts): the connection pool and the cache of the other
/// nodes' route URLs are shared by every clone.
#[derive(Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
    key: Option<Arc<ClusterKey>>,
    scheme: &'static str,
    routes: Arc<RoutePaths>,
    peers: Arc<RwLock<HashMap<NodeId, Arc<Peer>>>>,
    max_in_flight: usize,
    batches: Arc<BatchCounters>,
}

/// How many calls left in batches ([`HttpTransport::with_max_in_flight`]); read with
/// [`HttpTransport::batch_stats`].
///
/// ```
/// use std::num::NonZeroUsize;
/// use mesh_actix::{Mesh, NodeId};
/// use mesh_http::{BatchStats, HttpTransport};
///
/// // Batches as soon as two calls to one peer overlap.
/// let transport = HttpTransport::new(None).unwrap().with_max_in_flight(NonZeroUsize::MIN);
/// // The node gets a clone; clones count together, so this one reads what the node sends.
/// let node = Mesh::builder(NodeId::new("web-1").unwrap(), "10.0.0.1:8080");
/// let node = node.transport(transport.clone());
/// # drop(node);
/// let stats = transport.batch_stats();
/// assert_eq!(stats, BatchStats { batches: 0, calls: 0 }, "nothing sent yet");
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Batches sent.
    pub batches: u64,
    /// Calls those batches carried.
    pub calls: u64,
}

#[derive(Default)]
struct BatchCounters {
    batches: std::sync::atomic::AtomicU64,
    calls: std::sync::atomic::AtomicU64,
}

/// The most peers whose URLs are kept; past it the cache starts again (a cluster this large
/// pays one URL parse per peer per refill, not per hop).
const MAX_CACHED_PEERS: usize = 1024;

/// Hops in flight to one peer before further calls to it are batched, by default: twice the
/// cores (at least 4), enough to keep the peer's workers busy without a batch.
fn default_max_in_flight() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (2 * cores).max(4)
}

/// One of the internal routes a hop posts to.
#[derive(Clone, Copy)]
pub(crate) enum Route {
    Call,
    Cast,
    Lease,
    Handoff,
    Batch,
}

/// The trace context a hop carries: none (lease renewals, handoffs), one `traceparent`, or
/// a batch's list of them.
pub(crate) enum HopTrace<'a> {
    None,
    One(TraceContext),
    Batch(&'a [u8]),
}

/// The paths of the internal routes, with the transport's prefix: what a signature covers.
struct RoutePaths([String; 5]);

impl RoutePaths {
    fn under(prefix: &str) -> RoutePaths {
        let at = |route: &str| format!("{prefix}/internal/{route}");
        RoutePaths([
            at("call"),
            at("cast"),
            at("lease"),
            at("handoff"),
            at("batch"),
        ])
    }

    fn path(&self, route: Route) -> &str {
        &self.0[route as usize]
    }
}

/// Another node as hops see it: its id and address for messages, its routes' URLs parsed
/// once (not per hop), and the lane its calls are batched on.
pub(crate) struct Peer {
    pub(crate) node: NodeId,
    addr: String,
    urls: [reqwest::Url; 5],
    pub(crate) lane: Lane,
}

impl HttpTransport {
    /// A transport that signs its hops with `secret` (if any), which the other nodes must share.
    pub fn new(secret: Option<String>) -> Result<HttpTransport, reqwest::Error> {
        HttpTransport::build(secret, None, None)
    }

    /// A transport whose connections leave from `local` (the node's own listen address), so
    /// that other nodes and firewalls see every hop come from the address the node serves on.
    pub fn from_address(
        secret: Option<String>,
        local: Option<std::net::IpAddr>,
    ) -> Result<HttpTransport, reqwest::Error> {
        HttpTransport::build(secret, local, None)
    }

    /// As [`HttpTransport::from_address`], over HTTPS: the other nodes must serve TLS with
    /// certificates that chain to `tls`'s roots (only those: not the system's) and name the
    /// addresses they advertise.
    pub fn over_tls(
        secret: Option<String>,
        local: Option<std::net::IpAddr>,
        tls: &TlsConfig,
    ) -> Result<HttpTransport, reqwest::Error> {
        HttpTransport::build(secret, local, Some(tls))
    }

    fn build(
        secret: Option<String>,
        local: Option<std::net::IpAddr>,
        tls: Option<&TlsConfig>,
    ) -> Result<HttpTransport, reqwest::Error> {
        // The connect timeout covers the TLS handshake too. Internal routes never redirect:
        // a redirect would be a misconfiguration (or an attack), not something to follow.
        let mut client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .local_address(local);
        let scheme = match tls {
            Some(tls) => {
                client = client.tls_certs_only(tls.roots()?).https_only(true);
                "https"
            }
            None => "http",
        };
        Ok(HttpTransport {
            client: client.build()?,
            key: secret.as_deref().map(ClusterKey::of),
            scheme,
            routes: Arc::new(RoutePaths::under("")),
            peers: Arc::default(),
            max_in_flight: default_max_in_flight(),
            batches: Arc::default(),
        })
    }

    /// How many calls may be in flight to one peer, each its own request, before further
    /// calls to it wait and leave together as one batch (`POST /internal/batch`) when one of
    /// those returns. Default: twice the cores, at least 4. Batches form only at this bound,
    /// so below it nothing waits; 1 batches as soon as two calls overlap.
    pub fn with_max_in_flight(mut self, calls: std::num::NonZeroUsize) -> HttpTransport {
        self.max_in_flight = calls.get();
        self
    }

    /// Posts hops to `<prefix>/internal/...`: for nodes that mount the mesh routes under a
    /// scope, e.g. `web::scope("/mesh").configure(mesh_http::configure(mesh))` and
    /// `with_path_prefix("/mesh")`. Every node of a cluster must use the same prefix.
    pub fn with_path_prefix(mut self, prefix: impl Into<String>) -> HttpTransport {
        self.routes = Arc::new(RoutePaths::under(prefix.into().trim_end_matches('/')));
        self.peers = Arc::default();
        self
    }

    /// The batches this transport (and its clones) sent so far.
    pub fn batch_stats(&self) -> BatchStats {
        use std::sync::atomic::Ordering::Relaxed;
        BatchStats {
            batches: self.batches.batches.load(Relaxed),
            calls: self.batches.calls.load(Relaxed),
        }
    }

    /// `member` with its route URLs, from the cache while its address is unchanged.
    fn peer(&self, member: &Member) -> Result<Arc<Peer>, HopError> {
        if let Some(peer) = self.peers.read().get(&member.node) {
            if peer.addr == member.addr {
                return Ok(peer.clone());
            }
        }
        let url = |route| {
            let text = format!(
                "{}://{}{}",
                self.scheme,
                member.addr,
                self.routes.path(route)
            );
            reqwest::Url::parse(&text).map_err(|e| {
                HopError::refused(
                    Refusal::Unreachable,
                    format!(
                        "node {} advertises an address that is not a URL ({}): {e}",
                        member.node, member.addr
                    ),
                )
            })
        };
        let peer = Arc::new(Peer {
            node: member.node.clone(),
            addr: member.addr.clone(),
            urls: [
                url(Route::Call)?,
                url(Route::Cast)?,
                url(Route::Lease)?,
                url(Route::Handoff)?,
                url(Route::Batch)?,
            ],
            lane: Lane::default(),
        });
        let mut peers = self.peers.write();
        if peers.len() >= MAX_CACHED_PEERS {
            peers.clear();
        }
        peers.insert(member.node.clone(), peer.clone());
        Ok(peer)
    }

    /// Posts `body` to `route` on `peer`. A connection that could not be made is
    /// [`Refusal::Unreachable`] (nothing was sent: the router may try again, and does, with
    /// backoff); any later failure may have delivered the request.
    pub(crate) async fn post(
        &self,
        peer: &Peer,
        route: Route,
        body: Vec<u8>,
        remaining: Duration,
        trace: HopTrace<'_>,
    ) -> Result<reqwest::Response, HopError> {
        let mut post = self
            .client
            .post(peer.urls[route as usize].clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .timeout(remaining);
        match trace {
            HopTrace::None => {}
            HopTrace::One(context) => post = post.header(TRACEPARENT, &context.encode()[..]),
            HopTrace::Batch(value) => post = post.header(BATCH_TRACEPARENTS, value),
        }
        if let Some(key) = &self.key {
            post = post.header(
                SIGNATURE_HEADER,
                key.sign("POST", self.routes.path(route), &body),
            );
        }
        match post.body(body).send().await {
            Ok(response) => Ok(response),
            Err(e) if e.is_connect() => Err(HopError::refused(
                Refusal::Unreachable,
                format!(
                    "node {} at {} could not be reached: {}",
                    peer.node,
                    peer.addr,
                    error_chain(&e)
                ),
            )),
            Err(e) => Err(HopError::MaybeDelivered(format!(
                "no reply from node {} at {} ({}); the request may have run",
                peer.node,
                peer.addr,
                error_chain(&e)
            ))),
        }
    }

    /// Posts `body` and turns an error reply back into the outcome it stood for.
    async fn exchange(
        &self,
        peer: &Peer,
        route: Route,
        body: Vec<u8>,
        remaining: Duration,
        trace: Option<TraceContext>,
    ) -> Result<reqwest::Response, HopError> {
        let trace = trace.map_or(HopTrace::None, HopTrace::One);
        let response = self.post(peer, route, body, remaining, trace).await?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(remote_error(peer, response).await)
        }
    }

    /// A call as a hop of its own.
    async fn call_alone(
        &self,
        peer: &Peer,
        request: &Request,
        remaining: Duration,
        trace: Option<TraceContext>,
    ) -> Result<Reply, HopError> {
        let body = request.to_json_bytes(Some(remaining));
        let response = self
            .exchange(peer, Route::Call, body, remaining, trace)
            .await?;
        response.json::<Reply>().await.map_err(|e| {
            HopError::MaybeDelivered(format!(
                "node {} sent an unreadable reply ({e}); the request may have run",
                peer.node
            ))
        })
    }

    fn count_batch(&self, calls: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        self.batches.batches.fetch_add(1, Relaxed);
        self.batches.calls.fetch_add(calls as u64, Relaxed);
    }

    /// Sends `calls` as one batch on `slot` and answers each as its outcome line arrives.
    pub(crate) async fn send_batch(self, slot: Slot, mut calls: Vec<Queued>) {
        let peer = slot.peer().clone();
        let now = Instant::now();
        // Calls whose callers gave up or ran out of time were never sent; they stay unsent.
        calls.retain(|call| call.deadline > now && !call.reply.is_closed());
        let Some(remaining) = calls.iter().map(|call| call.deadline - now).max() else {
            return;
        };
        if let [_] = calls.as_slice() {
            // A batch of one would only add framing: it goes as a call of its own.
            let call = calls.pop().expect("one call");
            let result = self
                .call_alone(&peer, &call.request, remaining, call.trace)
                .await;
            let _ = call.reply.send(result);
            return;
        }
        let body = batch_body(&calls, now);
        let traces = batch_value(calls.iter().map(|call| call.trace.as_ref()));
        self.count_batch(calls.len());
        let trace = HopTrace::Batch(&traces);
        let response = match self.post(&peer, Route::Batch, body, remaining, trace).await {
            Ok(response) => response,
            Err(error) => return answer_all(calls, &error),
        };
        let status = response.status();
        if [
            StatusCode::NOT_FOUND,
            StatusCode::METHOD_NOT_ALLOWED,
            StatusCode::PAYLOAD_TOO_LARGE,
        ]
        .contains(&status)
        {
            // The peer does not serve batches (an older node, another prefix) or not of this
            // size: nothing ran. Each call goes alone, now and from now on.
            peer.lane.single_only();
            drop(slot);
            for call in calls {
                let (transport, peer) = (self.clone(), peer.clone());
                tokio::spawn(async move {
                    let remaining = call.deadline.saturating_duration_since(Instant::now());
                    let result = transport
                        .call_alone(&peer, &call.request, remaining, call.trace)
                        .await;
                    let _ = call.reply.send(result);
                });
            }
            return;
        }
        if !status.is_success() {
            return answer_all(calls, &remote_error(&peer, response).await);
        }
        let mut waiting: Vec<_> = calls.into_iter().map(|call| Some(call.reply)).collect();
        let mut response = response;
        let mut buffer = Vec::new();
        let broke = loop {
            match response.chunk().await {
                Ok(Some(chunk)) => buffer.extend_from_slice(&chunk),
                Ok(None) => break None,
                Err(e) => break Some(error_chain(&e)),
            }
            let mut start = 0;
            while let Some(end) = buffer[start..].iter().position(|&b| b == b'\n') {
                let line = &buffer[start..start + end];
                start += end + 1;
                let Ok(outcome) = serde_json::from_slice::<Outcome>(line) else {
                    continue;
                };
                if let Some(reply) = waiting.get_mut(outcome.i).and_then(Option::take) {
                    let _ = reply.send(outcome.into_result(&peer));
                }
            }
            buffer.drain(..start);
        };
        let cause = broke.unwrap_or_else(|| "its reply ended early".to_owned());
        for reply in waiting.into_iter().flatten() {
            let _ = reply.send(Err(HopError::MaybeDelivered(format!(
                "no reply from node {} at {} to a batched call ({cause}); it may have run",
                peer.node, peer.addr
            ))));
        }
    }
}

/// Answers every call of a batch with the batch's own outcome.
fn answer_all(calls: Vec<Queued>, error: &HopError) {
    for call in calls {
        let _ = call.reply.send(Err(error.clone()));
    }
}

/// The JSON of a lease renewal or a handoff (a request is written by
/// [`Request::to_json_bytes`]).
fn json_bytes(value: &impl serde::Serialize) -> Result<Vec<u8>, HopError> {
    serde_json::to_vec(value)
        .map_err(|e| HopError::Failed(MeshError::BadRequest(format!("unserialisable hop: {e}"))))
}

/// An error with its causes, `outer: inner: ...`: reqwest's own message rarely says what
/// happened on the socket.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct ErrorDetail {
    pub(crate) code: String,
    pub(crate) message: String,
}

/// Turns the owner's error reply back into the outcome it stood for.
async fn remote_error(owner: &Peer, response: reqwest::Response) -> HopError {
    let status = response.status();
    let refusal = response
        .headers()
        .get(REFUSAL_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(Refusal::parse);
    match response.json::<ErrorBody>().await {
        Ok(body) => outcome_of(owner, refusal, body.error, &format!("with {status}")),
        Err(_) => HopError::MaybeDelivered(format!(
            "node {} answered {status} without an error body; the request may have run",
            owner.node
        )),
    }
}

/// The outcome an error answer of `owner` stands for (`how`: how it answered, for messages).
pub(crate) fn outcome_of(
    owner: &Peer,
    refusal: Option<Refusal>,
    error: ErrorDetail,
    how: &str,
) -> HopError {
    match refusal {
        Some(refusal) => HopError::refused(refusal, error.message),
        // The hop itself was refused before any routing: the caller's request was fine, the
        // cluster's configuration is not.
        None if error.code == ErrorCode::Unauthorized.as_str() => HopError::refused(
            Refusal::Unreachable,
            format!(
                "node {} refused this node's signature: {}",
                owner.node, error.message
            ),
        ),
        None => HopError::Failed(
            MeshError::from_code(&error.code, &error.message).unwrap_or_else(|| {
                MeshError::OwnerUnavailable(format!(
                    "node {} answered {how}: {}",
                    owner.node, error.message
                ))
            }),
        ),
    }
}

impl RemoteTransport for HttpTransport {
    fn call(
        &self,
        owner: &Member,
        request: Request,
        remaining: Duration,
    ) -> BoxFuture<'static, Result<Reply, HopError>> {
        let transport = self.clone();
        let peer = self.peer(owner);
        // Read here, in the task of the request being served. The hop carries this node's
        // span, so that the owner's span is its child (a hop has no span of its own).
        let trace = crate::trace::current();
        async move {
            let peer = peer?;
            let deadline = Instant::now() + remaining;
            match Lane::admit(
                &transport,
                &peer,
                request,
                trace,
                deadline,
                transport.max_in_flight,
            ) {
                Admission::Alone(_slot, request) => {
                    transport
                        .call_alone(&peer, &request, remaining, trace)
                        .await
                }
                Admission::Queued(waiting) => {
                    match tokio::time::timeout_at(deadline, waiting).await {
                        Ok(Ok(result)) => result,
                        Ok(Err(_)) => Err(HopError::MaybeDelivered(format!(
                            "the batch carrying a call to node {} was dropped; it may have run",
                            peer.node
                        ))),
                        Err(_) => Err(HopError::MaybeDelivered(format!(
                            "no reply from node {} within {remaining:?} to a batched call; it may \
                         have run",
                            peer.node
                        ))),
                    }
                }
            }
        }
        .boxed()
    }

    fn cast(
        &self,
        owner: &Member,
        request: Request,
        remaining: Duration,
    ) -> BoxFuture<'static, Result<(), HopError>> {
        let transport = self.clone();
        let peer = self.peer(owner);
        let trace = crate::trace::current();
        async move {
            let body = request.to_json_bytes(Some(remaining));
            transport
                .exchange(&*peer?, Route::Cast, body, remaining, trace)
                .await
                .map(drop)
        }
        .boxed()
    }

    fn renew(
        &self,
        peer: &Member,
        request: RenewRequest,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<RenewReply, MeshError>> {
        let transport = self.clone();
        let peer = self.peer(peer);
        async move {
            let peer = peer.map_err(HopError::into_error)?;
            let body = json_bytes(&request).map_err(HopError::into_error)?;
            let response = transport
                .exchange(&peer, Route::Lease, body, timeout, None)
                .await
                .map_err(HopError::into_error)?;
            response.json::<RenewReply>().await.map_err(|e| {
                MeshError::OwnerUnavailable(format!(
                    "node {} sent an unreadable lease reply: {e}",
                    peer.node
                ))
            })
        }
        .boxed()
    }

    fn handoff(
        &self,
        to: &Member,
        handoff: Handoff,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<(), HopError>> {
        let transport = self.clone();
        let peer = self.peer(to);
        async move {
            let body = json_bytes(&handoff)?;
            transport
                .exchange(&*peer?, Route::Handoff, body, timeout, None)
                .await
                .map(drop)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::num::NonZeroUsize;
    use std::time::Duration;

    use actix_web::{web, App, HttpServer};
    use futures_util::future::join_all;
    use mesh_actix::actix::{
        Actor, Context, Handler, MessageResult, ResponseActFuture, WrapFuture,
    };
    use mesh_actix::provider::MembershipFeed;
    use mesh_actix::{ActorId, InitError, Mesh, MeshActor, MeshInit, NodeId, Payload, Request};
    use serde_json::{json, Value};
    use tokio::sync::Semaphore;

    use super::{BatchStats, HttpTransport};
    use crate::{configure_with, HttpOptions};

    #[derive(MeshActor)]
    struct Echo;

    impl Actor for Echo {
        type Context = Context<Self>;
    }

    impl MeshInit for Echo {
        fn init(_: &ActorId, _: Option<&Value>) -> Result<Self, InitError> {
            Ok(Echo)
        }
    }

    impl Handler<Payload> for Echo {
        type Result = MessageResult<Payload>;
        fn handle(&mut self, msg: Payload, _: &mut Context<Self>) -> Self::Result {
            MessageResult(msg.body)
        }
    }

    /// Permits for [`Gate`]'s calls: each waits for one.
    static GATE: Semaphore = Semaphore::const_new(0);

    /// Replies with its payload once the test adds a permit to [`GATE`].
    #[derive(MeshActor)]
    struct Gate;

    impl Actor for Gate {
        type Context = Context<Self>;
    }

    impl MeshInit for Gate {
        fn init(_: &ActorId, _: Option<&Value>) -> Result<Self, InitError> {
            Ok(Gate)
        }
    }

    impl Handler<Payload> for Gate {
        type Result = ResponseActFuture<Self, Value>;
        fn handle(&mut self, msg: Payload, _: &mut Context<Self>) -> Self::Result {
            let opened = async move {
                GATE.acquire().await.expect("never closed").forget();
                msg.body
            };
            Box::pin(opened.into_actor(self))
        }
    }

    struct Node {
        mesh: Mesh,
        transport: HttpTransport,
        server: actix_web::dev::ServerHandle,
    }

    /// A node whose mesh routes are mounted under `/mesh`, reached with the same prefix,
    /// batching past `max_in_flight` hops per peer, refusing bodies over `body_limit`.
    async fn node(id: &str, max_in_flight: usize, body_limit: usize) -> Node {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let transport = HttpTransport::new(None)
            .unwrap()
            .with_path_prefix("/mesh/")
            .with_max_in_flight(NonZeroUsize::new(max_in_flight).unwrap());
        let mesh = Mesh::builder(NodeId::new(id).unwrap(), addr)
            .arbiters(NonZeroUsize::MIN)
            .register::<Echo>()
            .register::<Gate>()
            .capabilities(["echo"])
            .transport(transport.clone())
            .start()
            .unwrap();
        let routes = configure_with(
            mesh.clone(),
            HttpOptions {
                body_limit,
                ..HttpOptions::default()
            },
        );
        let server = HttpServer::new(move || {
            App::new().service(web::scope("/mesh").configure(routes.clone()))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Node {
            mesh,
            transport,
            server: handle,
        }
    }

    async fn pair(max_in_flight: usize, body_limit: usize) -> (Node, Node) {
        let a = node("a", max_in_flight, body_limit).await;
        let b = node("b", max_in_flight, body_limit).await;
        a.mesh.update_members(vec![b.mesh.local_member()]).await;
        b.mesh.update_members(vec![a.mesh.local_member()]).await;
        (a, b)
    }

    /// `count` ids of `a`'s cluster that `b` owns.
    fn owned_by_b(a: &Mesh, count: usize) -> Vec<String> {
        (0..)
            .map(|i| format!("e{i}"))
            .filter(|id| a.owner(a.shard_for(id), "echo").unwrap().as_str() == "b")
            .take(count)
            .collect()
    }

    fn echo(module: &str, id: &str, payload: Value) -> Request {
        Request::new(module, id, "echo")
            .unwrap()
            .with_payload(payload)
            .with_timeout(Duration::from_secs(20))
    }

    #[actix_web::test]
    async fn hops_reach_routes_mounted_under_a_prefix() {
        let (a, b) = pair(4, crate::DEFAULT_BODY_LIMIT).await;
        let id = &owned_by_b(&a.mesh, 1)[0];

        let reply = a.mesh.call(echo("Echo", id, json!({"hello": "b"}))).await;
        let reply = reply.expect("forwarded to b under /mesh");

        assert_eq!(reply.node.as_str(), "b");
        assert_eq!(reply.result, json!({"hello": "b"}));
        assert_eq!(
            a.transport.batch_stats(),
            BatchStats::default(),
            "one call: no batch"
        );
        a.server.stop(true).await;
        b.server.stop(true).await;
    }

    #[actix_web::test]
    async fn calls_past_the_in_flight_bound_leave_in_batches_each_with_its_own_reply() {
        let (a, b) = pair(1, crate::DEFAULT_BODY_LIMIT).await;
        let ids = owned_by_b(&a.mesh, 20);

        // 200 calls at once: one goes alone, the others queue behind it and leave in batches.
        let calls = (0..200).map(|n| {
            let id = &ids[n % ids.len()];
            a.mesh.call(echo("Echo", id, json!({"n": n})))
        });
        let replies = join_all(calls).await;

        for (n, reply) in replies.into_iter().enumerate() {
            let reply = reply.unwrap_or_else(|e| panic!("call {n}: {e}"));
            assert_eq!(
                reply.result,
                json!({"n": n}),
                "call {n} got another's reply"
            );
            assert_eq!(reply.node.as_str(), "b");
        }
        let stats = a.transport.batch_stats();
        assert!(stats.batches >= 1, "{stats:?}");
        assert!(
            stats.calls >= stats.batches && stats.calls < 200,
            "{stats:?}"
        );
        // The owner served each of them, and counts them in its metrics.
        let url = format!("http://{}/mesh/metrics", b.mesh.local_member().addr);
        let metrics = reqwest::get(url).await.unwrap().text().await.unwrap();
        let served = |name: &str| {
            let line = metrics.lines().find(|l| l.starts_with(&format!("{name} ")));
            let value = line.and_then(|l| l.split(' ').nth(1)?.parse::<u64>().ok());
            value.unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
        };
        assert_eq!(served("mesh_hop_batches_served_total"), stats.batches);
        assert_eq!(served("mesh_hop_batched_calls_served_total"), stats.calls);
        a.server.stop(true).await;
        b.server.stop(true).await;
    }

    #[actix_web::test]
    async fn a_slow_call_holds_up_no_other_call_of_its_batch() {
        let (a, b) = pair(1, crate::DEFAULT_BODY_LIMIT).await;
        let ids = owned_by_b(&a.mesh, 11);

        // A gated call takes the one slot and holds it until the first permit.
        let mesh = a.mesh.clone();
        let hold = echo("Gate", &ids[0], json!("held"));
        let held = actix_web::rt::spawn(async move { mesh.call(hold).await });
        let since = std::time::Instant::now();
        while b.mesh.activations() == 0 {
            assert!(
                since.elapsed() < Duration::from_secs(10),
                "the held call never arrived"
            );
            actix_web::rt::time::sleep(Duration::from_millis(5)).await;
        }
        // Another gated call and ten quick ones queue behind it, and leave as one batch
        // when the first permit releases the held call.
        let mut gated = Box::pin(a.mesh.call(echo("Gate", &ids[1], json!("gated"))));
        let quick = join_all(
            ids[1..]
                .iter()
                .map(|id| a.mesh.call(echo("Echo", id, json!(id)))),
        );
        let mut quick = Box::pin(quick);
        tokio::select! {
            biased;
            _ = &mut quick => panic!("a quick call returned before the slot was free"),
            _ = &mut gated => panic!("the gated call returned unreleased"),
            _ = actix_web::rt::time::sleep(Duration::from_millis(50)) => {}
        }
        GATE.add_permits(1);
        assert_eq!(held.await.unwrap().unwrap().result, json!("held"));

        let quick = tokio::time::timeout(Duration::from_secs(15), async {
            tokio::select! {
                biased;
                done = &mut quick => done,
                gated = &mut gated => panic!("the gated call returned unreleased: {gated:?}"),
            }
        })
        .await
        .expect("the quick calls were answered while the gated one still waited");
        for (id, reply) in ids[1..].iter().zip(quick) {
            assert_eq!(reply.unwrap().result, json!(id));
        }
        assert!(
            a.transport.batch_stats().batches >= 1,
            "batches carried them"
        );
        GATE.add_permits(1);
        assert_eq!(gated.await.unwrap().result, json!("gated"));
        a.server.stop(true).await;
        b.server.stop(true).await;
    }

    /// Calls every id at once with a 300-byte payload; each gets its own reply.
    async fn round(mesh: &Mesh, ids: &[String], round: u32) {
        let filler = "x".repeat(300);
        let calls = ids.iter().map(|id| {
            let payload = json!({"round": round, "filler": filler});
            mesh.call(echo("Echo", id, payload))
        });
        for reply in join_all(calls).await {
            assert_eq!(reply.unwrap().result["round"], json!(round));
        }
    }

    #[actix_web::test]
    async fn a_peer_that_refuses_a_batch_gets_its_calls_one_by_one() {
        // b refuses bodies over 600 bytes: one call fits, a batch of two or more does not
        // (413), and a batch has at least two.
        let (a, b) = pair(1, 600).await;
        let ids = owned_by_b(&a.mesh, 10);

        // A refused batch's connection may close under it (which the router takes as
        // unreachable and retries, in another batch) before the 413 is read: a few rounds.
        for n in 0..3 {
            round(&a.mesh, &ids, n).await;
        }
        let refused = a.transport.batch_stats();
        assert!(refused.batches >= 1, "{refused:?}");
        round(&a.mesh, &ids, 3).await;
        assert_eq!(
            a.transport.batch_stats(),
            refused,
            "after the refusal, no more batches"
        );
        a.server.stop(true).await;
        b.server.stop(true).await;
    }
}
