//! The routes of the contract. Each handler parses, asks the [`Mesh`], and renders.

use std::collections::BTreeSet;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use mesh_actix::provider::{FrontEnd, Handoff, HopError, Hops, RenewRequest};
use mesh_actix::{Capability, Delivery, Mesh, MeshError, Request};
use serde::Deserialize;
use serde_json::json;

use crate::auth::{Access, Guard};
use crate::batch::{serve_batch, ServedBatches};
use crate::body::read_limited;
use crate::connections::Connections;
use crate::dashboard::{self, Reading, READING_PATH};
use crate::error::{error_body, HttpError, REFUSAL_HEADER};
use crate::metrics::render;
use crate::openapi::openapi;
use crate::peer_load::PeerProbe;
use crate::sealing::GossipStats;
use crate::signing::{ClusterKey, Verifier, SIGNATURE_HEADER};
use crate::spans::{call_span, observed, RequestSpans};

/// The default limit of a request body: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1 << 20;

/// How long a request body may take to arrive by default: 10 s.
pub const DEFAULT_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How the routes behave.
///
/// ```
/// use std::time::Duration;
/// use mesh_http::HttpOptions;
///
/// let options = HttpOptions {
///     body_limit: 64 << 10,
///     body_timeout: Duration::from_secs(2),
///     secret: Some("s3cret".into()),
/// };
/// # let _ = options;
/// assert_eq!(HttpOptions::default().body_limit, mesh_http::DEFAULT_BODY_LIMIT);
/// ```
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Bodies over this many bytes get `413 payload_too_large`.
    pub body_limit: usize,
    /// A body that has not arrived completely this long after the request's head gets
    /// `408 request_timeout`, and its connection is closed.
    pub body_timeout: std::time::Duration,
    /// When set, every route but `/health`, `/ready`, `/metrics`, `/openapi.json` and
    /// `/dashboard` (the page, which holds no data; its reading `/dashboard.json` does need it)
    /// requires it, as `Authorization: Bearer <secret>`, `Authorization: <secret>` or
    /// `x-mesh-secret: <secret>`; without it: `401`, whatever the method.
    pub secret: Option<String>,
}

impl Default for HttpOptions {
    fn default() -> HttpOptions {
        HttpOptions {
            body_limit: DEFAULT_BODY_LIMIT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            secret: None,
        }
    }
}

pub(crate) struct State {
    pub(crate) mesh: Mesh,
    options: HttpOptions,
    /// Checks the signatures of hops from other nodes, when a secret is configured.
    hops: Option<Verifier>,
    /// Refused gossip datagrams, when gossip is sealed, for `/metrics`.
    gossip: Option<Arc<GossipStats>>,
    /// The connections of the node, when [`crate::serve`] bounds them, for `/metrics`.
    connections: Option<Arc<Connections>>,
    /// Reads the other nodes' load for `/dashboard.json`; `None` if its client could not be
    /// built (the dashboard then shows them without load).
    peers: Option<PeerProbe>,
    /// The batches of calls other nodes sent here, for `/metrics`.
    pub(crate) batches: ServedBatches,
}

impl State {
    /// The body of a hop from another node (`/internal/...`): with a secret, its signature
    /// must hold (the secret itself is never sent between nodes; see [`crate::ClusterKey`]).
    pub(crate) async fn hop_body(
        &self,
        req: &HttpRequest,
        body: web::Payload,
    ) -> Result<web::Bytes, HttpError> {
        let (limit, timeout) = (self.options.body_limit, self.options.body_timeout);
        let bytes = read_limited(req, body, limit, timeout).await?;
        if let Some(hops) = &self.hops {
            let header = req
                .headers()
                .get(SIGNATURE_HEADER)
                .and_then(|v| v.to_str().ok());
            let (method, path) = (req.method().as_str(), req.path());
            let now = std::time::SystemTime::now();
            hops.verify(header, method, path, &bytes, now)
                .map_err(|e| {
                    tracing::warn!(path, error = %e, "refused a hop");
                    MeshError::Unauthorized(e.to_string())
                })?;
        }
        Ok(bytes)
    }

    /// The secret clients must carry, if the node has one (see [`Access`]).
    pub(crate) fn secret(&self) -> Option<&str> {
        self.options.secret.as_deref()
    }

    /// The request of a call or cast body, from a client (whose secret [`Access`] checked) or
    /// from another node (whose hop must be signed); a refusal is counted in the metrics.
    async fn request(
        &self,
        req: &HttpRequest,
        body: web::Payload,
        delivery: Delivery,
        sender: Sender,
    ) -> Result<Request, HttpError> {
        let parsed = async {
            let bytes = match sender {
                Sender::Client => {
                    let (limit, timeout) = (self.options.body_limit, self.options.body_timeout);
                    read_limited(req, body, limit, timeout).await?
                }
                Sender::Node => self.hop_body(req, body).await?,
            };
            Ok(Request::from_json(&bytes)?)
        };
        parsed
            .await
            .inspect_err(|e: &HttpError| self.mesh.record_rejection(delivery, &e.0))
    }
}

/// Who sends a call or cast: a client of the public routes or another node (a hop).
#[derive(Clone, Copy)]
enum Sender {
    Client,
    Node,
}

pub(crate) type Shared = web::Data<Arc<State>>;
type HttpResult = Result<HttpResponse, HttpError>;

/// Mounts every mesh route with default [`HttpOptions`]:
/// `App::new().configure(mesh_http::configure(mesh.clone()))`.
pub fn configure(mesh: Mesh) -> impl Fn(&mut web::ServiceConfig) + Clone {
    configure_with(mesh, HttpOptions::default())
}

/// Mounts every mesh route with these options.
///
/// An `HttpServer` calls its app factory once per worker. Call this once, outside the factory,
/// and clone the result into it: the workers then share one record of recent hop nonces, so a
/// hop replayed to another worker is refused as well.
pub fn configure_with(
    mesh: Mesh,
    options: HttpOptions,
) -> impl Fn(&mut web::ServiceConfig) + Clone {
    let peers = PeerProbe::new(None)
        .inspect_err(|e| tracing::warn!(error = %e, "the dashboard cannot read other nodes"))
        .ok();
    mount(shared_state(mesh, options, None, None, peers))
}

/// The state of the routes: build it once per node and [`mount`] it in every worker.
pub(crate) fn shared_state(
    mesh: Mesh,
    options: HttpOptions,
    gossip: Option<Arc<GossipStats>>,
    connections: Option<Arc<Connections>>,
    peers: Option<PeerProbe>,
) -> Shared {
    let hops = options
        .secret
        .as_deref()
        .map(|secret| Verifier::new(ClusterKey::of(secret)));
    web::Data::new(Arc::new(State {
        mesh,
        options,
        hops,
        gossip,
        connections,
        peers,
        batches: ServedBatches::default(),
    }))
}

/// Mounts every mesh route on `state`, each with its [`Access`].
pub(crate) fn mount(state: Shared) -> impl Fn(&mut web::ServiceConfig) + Clone {
    use Access::{Open, Secret, Signed};
    move |cfg| {
        // Every request in its `request` span and trace, outermost, so that a refusal has its
        // span and `traceparent` too.
        let route = |path, access| guarded(&state, path, access).wrap(RequestSpans { route: path });
        let (calls, casts) = (Secret(Some(Delivery::Call)), Secret(Some(Delivery::Cast)));
        // The one resource without a `request` span: each call of a batch continues a trace of
        // its own (one span each, see `crate::batch`); a span of the batch would start a trace
        // per batch that no caller asked for.
        let untraced = |path, access| guarded(&state, path, access);
        cfg.app_data(state.clone())
            .service(route("/call", calls).route(web::post().to(call)))
            .service(route("/cast", casts).route(web::post().to(cast)))
            .service(route("/internal/call", Signed).route(web::post().to(forwarded_call)))
            .service(route("/internal/cast", Signed).route(web::post().to(forwarded_cast)))
            .service(untraced("/internal/batch", Signed).route(web::post().to(serve_batch)))
            .service(route("/internal/lease", Signed).route(web::post().to(renew_lease)))
            .service(route("/internal/handoff", Signed).route(web::post().to(accept_handoff)))
            .service(route("/owner", Secret(None)).route(web::get().to(owner)))
            .service(route("/cluster", Secret(None)).route(web::get().to(cluster)))
            .service(route("/capabilities", Secret(None)).route(web::post().to(capabilities)))
            .service(route("/health", Open).route(web::get().to(health)))
            .service(route("/ready", Open).route(web::get().to(ready)))
            .service(route("/metrics", Open).route(web::get().to(metrics)))
            .service(route("/openapi.json", Open).route(web::get().to(openapi)))
            .service(route("/dashboard", Open).route(web::get().to(dashboard::page)))
            .service(
                route("/dashboard.json", Secret(None)).route(web::get().to(dashboard_reading)),
            );
    }
}

/// The resource of a route: its [`Access`] enforced, and a JSON 405 for other methods.
fn guarded(
    state: &Shared,
    path: &'static str,
    access: Access,
) -> actix_web::Resource<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let state = state.clone();
    web::resource(path)
        .default_service(web::to(method_not_allowed))
        .wrap(Guard { access, state })
}

async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    error_body(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &format!("{} is not supported on {}", req.method(), req.path()),
    )
}

/// A JSON 404 (`not_found`, in the contract's error shape) for paths no route serves: the
/// default service of `mesh-node`'s app, and of any app that mounts the mesh routes
/// (`App::new().configure(routes).default_service(web::to(mesh_http::not_found))`), where
/// actix-web would answer an empty 404.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    error_body(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("no route for {} {}", req.method(), req.path()),
    )
}

async fn call(state: Shared, req: HttpRequest, body: web::Payload) -> HttpResult {
    let request = state
        .request(&req, body, Delivery::Call, Sender::Client)
        .await?;
    let span = call_span(&state.mesh, &request);
    let reply = observed(span, state.mesh.call(request)).await?;
    Ok(HttpResponse::Ok().json(reply))
}

async fn cast(state: Shared, req: HttpRequest, body: web::Payload) -> HttpResult {
    let request = state
        .request(&req, body, Delivery::Cast, Sender::Client)
        .await?;
    let span = call_span(&state.mesh, &request);
    observed(span, state.mesh.cast(request)).await?;
    Ok(HttpResponse::Accepted().json(json!({"status": "accepted"})))
}

/// A hop's outcome as a response: a refusal carries its reason in [`REFUSAL_HEADER`] so the
/// sender knows the request was not executed and may route it again.
fn hop_response(result: Result<HttpResponse, HopError>) -> HttpResponse {
    match result {
        Ok(response) => response,
        Err(HopError::NotDelivered(refusal, error)) => {
            let mut response = HttpError(error).error_response();
            let value = actix_web::http::header::HeaderValue::from_static(refusal.as_str());
            let name = actix_web::http::header::HeaderName::from_static(REFUSAL_HEADER);
            response.headers_mut().insert(name, value);
            response
        }
        Err(error) => HttpError(error.into_error()).error_response(),
    }
}

/// `POST /internal/call`: a call another node forwards, run only if this node owns it.
async fn forwarded_call(state: Shared, req: HttpRequest, body: web::Payload) -> HttpResult {
    let request = state
        .request(&req, body, Delivery::Call, Sender::Node)
        .await?;
    let span = call_span(&state.mesh, &request);
    let reply = observed(span, state.mesh.forwarded_call(request)).await;
    Ok(hop_response(reply.map(|r| HttpResponse::Ok().json(r))))
}

/// `POST /internal/cast`: a cast another node forwards, accepted only if this node owns it.
async fn forwarded_cast(state: Shared, req: HttpRequest, body: web::Payload) -> HttpResult {
    let request = state
        .request(&req, body, Delivery::Cast, Sender::Node)
        .await?;
    let span = call_span(&state.mesh, &request);
    let accepted = observed(span, state.mesh.forwarded_cast(request)).await;
    let accepted = accepted.map(|()| HttpResponse::Accepted().json(json!({"status": "accepted"})));
    Ok(hop_response(accepted))
}

/// `POST /internal/lease`: another node asks for a grant of its lease.
async fn renew_lease(state: Shared, req: HttpRequest, body: web::Payload) -> HttpResult {
    let bytes = state.hop_body(&req, body).await?;
    let request: RenewRequest = serde_json::from_slice(&bytes)
        .map_err(|e| MeshError::BadRequest(format!("invalid lease renewal: {e}")))?;
    Ok(HttpResponse::Ok().json(state.mesh.renew_lease(request).await))
}

/// `POST /internal/handoff`: the old owner of an identity hands it (and its state) over to
/// this node, its new owner. 204 once accepted; the body is bounded like every other.
async fn accept_handoff(state: Shared, req: HttpRequest, body: web::Payload) -> HttpResult {
    let bytes = state.hop_body(&req, body).await?;
    let handoff: Handoff = serde_json::from_slice(&bytes)
        .map_err(|e| MeshError::BadRequest(format!("invalid handoff: {e}")))?;
    let accepted = state.mesh.accept_handoff(handoff).await;
    Ok(hop_response(
        accepted.map(|()| HttpResponse::NoContent().finish()),
    ))
}

/// `GET /ready`: 200 while this node serves; 503 `not_ready` while it joins, drains or cannot
/// confirm its ownership.
async fn ready(state: Shared) -> HttpResponse {
    match state.mesh.readiness() {
        Ok(()) => HttpResponse::Ok().json(json!({"status": "ready"})),
        Err(reason) => error_body(StatusCode::SERVICE_UNAVAILABLE, "not_ready", &reason),
    }
}

#[derive(Deserialize)]
struct OwnerQuery {
    id: String,
    capability: String,
}

async fn owner(state: Shared, req: HttpRequest) -> HttpResult {
    let query = web::Query::<OwnerQuery>::from_query(req.query_string())
        .map_err(|e| MeshError::BadRequest(format!("expected ?id=<id>&capability=<cap>: {e}")))?;
    let id = mesh_actix::ActorId::new(&query.id)?;
    let capability = Capability::new(&query.capability)?;
    let shard = state.mesh.shard_for(id.as_str());
    let timeout = mesh_actix::DEFAULT_TIMEOUT;
    let node = state
        .mesh
        .serving_owner(shard, capability.as_str(), timeout)
        .await?;
    Ok(HttpResponse::Ok().json(json!({"shard": shard.0, "node": node})))
}

async fn cluster(state: Shared) -> HttpResult {
    let routing = state.mesh.routing();
    Ok(HttpResponse::Ok().json(json!({
        "node": state.mesh.node_id(),
        "activations": state.mesh.activations(),
        "members": routing.members(),
    })))
}

/// `GET /dashboard.json`: needs the secret, like `/cluster`.
async fn dashboard_reading(state: Shared, req: HttpRequest) -> HttpResult {
    // Where the mesh routes are mounted here, and so (as hops assume) on every node.
    let prefix = req.path().strip_suffix(READING_PATH).unwrap_or("");
    let reading = Reading::take(&state.mesh, state.peers.as_ref(), prefix).await;
    Ok(HttpResponse::Ok().json(reading))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CapabilitiesBody {
    capabilities: Vec<String>,
}

async fn capabilities(state: Shared, req: HttpRequest, body: web::Payload) -> HttpResult {
    let bytes = read_limited(
        &req,
        body,
        state.options.body_limit,
        state.options.body_timeout,
    )
    .await?;
    let parsed: CapabilitiesBody = serde_json::from_slice(&bytes)
        .map_err(|e| MeshError::BadRequest(format!("invalid capabilities body: {e}")))?;
    let all: BTreeSet<Capability> = state
        .mesh
        .register_capabilities(parsed.capabilities)
        .await?;
    Ok(HttpResponse::Ok().json(json!({"capabilities": all})))
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn metrics(state: Shared) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(render(
            &state.mesh,
            state.gossip.as_deref(),
            state.connections.as_deref(),
            &state.batches,
        ))
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;
    use std::time::{Duration, SystemTime};

    use actix_web::dev::{Service, ServiceResponse};
    use actix_web::test::{call_service, init_service, read_body, TestRequest};
    use actix_web::App;
    use mesh_actix::{MeshConfig, NodeId};
    use serde_json::Value;

    use super::*;
    use crate::signing::MAX_SKEW;

    fn mesh() -> Mesh {
        let mut config = MeshConfig::new(NodeId::new("node-1").unwrap(), "127.0.0.1:4000");
        config.arbiters = NonZeroUsize::MIN;
        Mesh::start(config).expect("inside an actix System")
    }

    fn with_secret(secret: &str) -> HttpOptions {
        HttpOptions {
            secret: Some(secret.to_owned()),
            ..HttpOptions::default()
        }
    }

    /// Calls the app; `request` is a `TestRequest::to_request()`.
    async fn send<S, R>(app: &S, request: R) -> (StatusCode, Value)
    where
        S: Service<R, Response = ServiceResponse, Error = actix_web::Error>,
    {
        let response = call_service(app, request).await;
        let status = response.status();
        let body = read_body(response).await;
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        (status, json)
    }

    fn error(code: &str) -> impl Fn(&Value) -> bool + '_ {
        move |body| body["error"]["code"] == code && body["error"]["message"].is_string()
    }

    #[actix_web::test]
    async fn a_wrong_method_is_a_json_405() {
        let app = init_service(App::new().configure(configure(mesh()))).await;
        let (status, body) = send(&app, TestRequest::get().uri("/call").to_request()).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            body,
            json!({"error": {
                "code": "method_not_allowed",
                "message": "GET is not supported on /call",
            }})
        );
        for (method, path) in [
            ("POST", "/health"),
            ("DELETE", "/cluster"),
            ("PUT", "/owner"),
        ] {
            let method = actix_web::http::Method::from_bytes(method.as_bytes()).unwrap();
            let (status, body) = send(
                &app,
                TestRequest::default().method(method).uri(path).to_request(),
            )
            .await;
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
            assert!(error("method_not_allowed")(&body), "{path}: {body}");
        }
    }

    #[actix_web::test]
    async fn ready_says_whether_the_node_serves_and_needs_no_secret() {
        let lone = mesh();
        lone.register_capabilities(["counter"]).await.unwrap();
        let app = init_service(App::new().configure(configure_with(lone, with_secret("s")))).await;
        let (status, body) = send(&app, TestRequest::get().uri("/ready").to_request()).await;
        assert_eq!((status, body), (StatusCode::OK, json!({"status": "ready"})));

        // A node that joins a cluster it has not heard from yet is not ready.
        let mut config = MeshConfig::new(NodeId::new("node-2").unwrap(), "127.0.0.1:4001");
        config.arbiters = NonZeroUsize::MIN;
        config.joining = true;
        let joining = Mesh::start(config).unwrap();
        joining.register_capabilities(["counter"]).await.unwrap();
        let app = init_service(App::new().configure(configure(joining))).await;
        let (status, body) = send(&app, TestRequest::get().uri("/ready").to_request()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(error("not_ready")(&body), "{body}");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not learned"));
        // Nor does it name an owner (it owns nothing yet, rule 10): `/owner` waits for it as
        // a call would, then says why not.
        let owner = TestRequest::get().uri("/owner?id=a&capability=counter");
        let (status, body) = send(&app, owner.to_request()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(error("owner_unavailable")(&body), "{body}");
    }

    #[actix_web::test]
    async fn a_missing_secret_is_401_except_on_the_open_routes() {
        let mesh = mesh();
        let app =
            init_service(App::new().configure(configure_with(mesh.clone(), with_secret("s3cret"))))
                .await;
        let refused = [
            TestRequest::get().uri("/cluster"),
            TestRequest::get().uri("/dashboard.json"),
            TestRequest::get().uri("/owner?id=a&capability=counter"),
            TestRequest::post().uri("/call").set_payload("{}"),
            TestRequest::post().uri("/capabilities").set_payload("{}"),
            TestRequest::get()
                .uri("/cluster")
                .insert_header(("x-mesh-secret", "wrong")),
            // A wrong method too: without the secret a client learns nothing of the route.
            TestRequest::delete().uri("/call"),
        ];
        for request in refused {
            let (status, body) = send(&app, request.to_request()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
            assert!(error("unauthorized")(&body), "{body}");
        }
        // The refused call is counted.
        let unauthorized = mesh
            .request_stats()
            .by_outcome(Delivery::Call)
            .find(|(outcome, _)| *outcome == "unauthorized")
            .map(|(_, n)| n);
        assert_eq!(unauthorized, Some(1));

        let (status, body) = send(&app, TestRequest::get().uri("/health").to_request()).await;
        assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
        for open in ["/metrics", "/openapi.json", "/dashboard", "/ready"] {
            let response = call_service(&app, TestRequest::get().uri(open).to_request()).await;
            let status = response.status();
            assert_ne!(status, StatusCode::UNAUTHORIZED, "{open}");
            assert!(response.headers().contains_key("traceparent"), "{open}");
        }
        // With the secret, a wrong method is the route's 405.
        let request = TestRequest::delete()
            .uri("/call")
            .insert_header(("x-mesh-secret", "s3cret"));
        let (status, body) = send(&app, request.to_request()).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(error("method_not_allowed")(&body), "{body}");
        for header in [
            ("x-mesh-secret", "s3cret"),
            ("authorization", "Bearer s3cret"),
        ] {
            let request = TestRequest::get().uri("/cluster").insert_header(header);
            let (status, body) = send(&app, request.to_request()).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body["node"], "node-1");
        }
    }

    #[actix_web::test]
    async fn owner_needs_an_id_and_a_capability() {
        let mesh = mesh();
        let app = init_service(App::new().configure(configure(mesh.clone()))).await;
        for query in [
            "",
            "?id=counter_1",
            "?capability=counter",
            "?id=&capability=counter",
            "?id=counter_1&capability=",
        ] {
            let uri = format!("/owner{query}");
            let (status, body) = send(&app, TestRequest::get().uri(&uri).to_request()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
            assert!(error("bad_request")(&body), "{uri}: {body}");
        }

        let uri = "/owner?id=counter_1&capability=counter";
        let (status, body) = send(&app, TestRequest::get().uri(uri).to_request()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(error("no_capable_node")(&body), "{body}");

        mesh.register_capabilities(["counter"]).await.unwrap();
        let (status, body) = send(&app, TestRequest::get().uri(uri).to_request()).await;
        assert_eq!(status, StatusCode::OK);
        let shard = mesh.shard_for("counter_1").0;
        assert_eq!(body, json!({"shard": shard, "node": "node-1"}));
    }

    #[actix_web::test]
    async fn mounts_beside_the_apps_own_routes_and_under_a_scope() {
        let mesh = mesh();
        mesh.register_capabilities(["counter"]).await.unwrap();
        let app = init_service(
            App::new()
                .route("/hello", web::get().to(|| async { "hello" }))
                .service(web::scope("/mesh").configure(configure(mesh.clone()))),
        )
        .await;

        let hello = call_service(&app, TestRequest::get().uri("/hello").to_request()).await;
        assert_eq!(hello.status(), StatusCode::OK);
        assert_eq!(read_body(hello).await, "hello");
        let (status, body) = send(&app, TestRequest::get().uri("/mesh/health").to_request()).await;
        assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
        let owner = TestRequest::get().uri("/mesh/owner?id=a&capability=counter");
        let (status, body) = send(&app, owner.to_request()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["node"], json!("node-1"));
    }

    #[actix_web::test]
    async fn bodies_and_names_beyond_their_bounds_are_bad_requests_naming_why() {
        let mesh = mesh();
        let app = init_service(App::new().configure(configure(mesh.clone()))).await;
        let post = |uri: &str, body: Value| {
            TestRequest::post()
                .uri(uri)
                .set_payload(body.to_string())
                .to_request()
        };
        let cases = [
            (
                json!({"module": "Counter", "id": "c", "capability": "counter", "paylod": {}}),
                "unknown field `paylod`",
            ),
            (
                json!({"module": "Counter", "id": "i".repeat(4097), "capability": "counter"}),
                "`id` must be at most 4096 bytes",
            ),
            (
                json!({"module": "M".repeat(256), "id": "c", "capability": "counter"}),
                "`module` must be at most 255 bytes",
            ),
            (
                json!({"module": "Counter", "id": "c", "capability": "c".repeat(256)}),
                "`capability` must be at most 255 bytes",
            ),
        ];
        let names: Vec<String> = (0..1025).map(|i| format!("cap-{i}")).collect();
        let wide: Vec<String> = (0..200).map(|i| format!("{i:0255}")).collect();
        let capabilities = [
            (json!({"capabilities": names}), "at most 1024"),
            (json!({"capabilities": wide}), "bytes of gossip"),
            (json!({"capabilitis": ["a"]}), "unknown field"),
        ];
        let routes = ["/call", "/cast"]
            .iter()
            .flat_map(|r| cases.iter().map(move |c| (*r, c)));
        let routes = routes.chain(capabilities.iter().map(|c| ("/capabilities", c)));
        for (route, (body, why)) in routes {
            let (status, reply) = send(&app, post(route, body.clone())).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{route} {body}");
            let message = reply["error"]["message"].as_str().unwrap();
            assert!(message.contains(why), "{route}: {message}");
        }
        // Nothing of the refused sets was registered; a set within the bounds is.
        assert!(mesh.capabilities().is_empty());
        let fits: Vec<String> = (0..1024).map(|i| format!("cap-{i}")).collect();
        let (status, reply) =
            send(&app, post("/capabilities", json!({"capabilities": fits}))).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        assert_eq!(reply["capabilities"].as_array().unwrap().len(), 1024);
        let (status, _) = send(
            &app,
            post("/capabilities", json!({"capabilities": ["one-more"]})),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[actix_web::test]
    async fn hops_must_be_signed_and_a_signature_serves_once() {
        let mesh = mesh();
        let app =
            init_service(App::new().configure(configure_with(mesh.clone(), with_secret("s3cret"))))
                .await;
        let renewal = RenewRequest {
            from: mesh_actix::Member::alive(NodeId::new("peer").unwrap(), "127.0.0.1:1", ["c"])
                .unwrap(),
            round: 1,
            established: false,
        };
        let body = serde_json::to_vec(&renewal).unwrap();
        let signed = |path: &str, signature: String, body: &[u8]| {
            TestRequest::post()
                .uri(path)
                .insert_header((SIGNATURE_HEADER, signature))
                .set_payload(body.to_vec())
                .to_request()
        };
        let key = ClusterKey::of("s3cret");
        let signature = key.sign("POST", "/internal/lease", &body);
        let (status, reply) = send(&app, signed("/internal/lease", signature.clone(), &body)).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        assert_eq!(reply["from"]["node"], "node-1");

        let refused = [
            // The same signature again: a replay.
            ("replayed", signed("/internal/lease", signature, &body)),
            // A body that is not the one signed.
            (
                "tampered",
                signed(
                    "/internal/lease",
                    key.sign("POST", "/internal/lease", b"{}"),
                    &body,
                ),
            ),
            // Signed further from this node's clock than the skew allowed.
            (
                "stale",
                signed(
                    "/internal/lease",
                    key.sign_at(
                        "POST",
                        "/internal/lease",
                        &body,
                        SystemTime::now() - MAX_SKEW - Duration::from_secs(1),
                    ),
                    &body,
                ),
            ),
            // Signed with another secret.
            (
                "forged",
                signed(
                    "/internal/lease",
                    ClusterKey::of("guess").sign("POST", "/internal/lease", &body),
                    &body,
                ),
            ),
            // The secret itself opens the public routes, not the node-to-node ones.
            (
                "bearer",
                TestRequest::post()
                    .uri("/internal/call")
                    .insert_header(("authorization", "Bearer s3cret"))
                    .set_payload(r#"{"module":"M","id":"a","capability":"c"}"#)
                    .to_request(),
            ),
        ];
        for (what, request) in refused {
            let (status, reply) = send(&app, request).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {reply}");
            assert!(error("unauthorized")(&reply), "{what}: {reply}");
        }
    }
}
