//! The node-to-node hop over HTTP: a pooled reqwest client posting to the other nodes'
//! internal routes (`POST /internal/call`, `/internal/cast`, `/internal/lease`,
//! `/internal/handoff`).

use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use mesh_actix::provider::{Handoff, HopError, Refusal, RemoteTransport, RenewReply, RenewRequest};
use mesh_actix::{ErrorCode, Member, MeshError, Reply, Request};
use serde::Deserialize;

use crate::error::REFUSAL_HEADER;
use crate::signing::{ClusterKey, SIGNATURE_HEADER};
use crate::tls::TlsConfig;

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
#[derive(Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
    key: Option<std::sync::Arc<ClusterKey>>,
    scheme: &'static str,
    prefix: String,
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
        // The connect timeout covers the TLS handshake too.
        let mut client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
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
            prefix: String::new(),
        })
    }

    /// Posts hops to `<prefix>/internal/...`: for nodes that mount the mesh routes under a
    /// scope, e.g. `web::scope("/mesh").configure(mesh_http::configure(mesh))` and
    /// `with_path_prefix("/mesh")`. Every node of a cluster must use the same prefix.
    pub fn with_path_prefix(mut self, prefix: impl Into<String>) -> HttpTransport {
        self.prefix = prefix.into().trim_end_matches('/').to_owned();
        self
    }

    /// Posts `body` to `route` on `peer`. A connection that could not be made is
    /// [`Refusal::Unreachable`] (nothing was sent: the router may try again, and does, with
    /// backoff); any later failure may have delivered the request.
    async fn post(
        &self,
        peer: &Member,
        route: &str,
        body: &impl serde::Serialize,
        remaining: Duration,
    ) -> Result<reqwest::Response, HopError> {
        let path = format!("{}{route}", self.prefix);
        let url = format!("{}://{}{path}", self.scheme, peer.addr);
        let body = serde_json::to_vec(body).map_err(|e| {
            HopError::Failed(MeshError::BadRequest(format!("unserialisable hop: {e}")))
        })?;
        let mut post = self
            .client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .timeout(remaining);
        if let Some(key) = &self.key {
            post = post.header(SIGNATURE_HEADER, key.sign("POST", &path, &body));
        }
        let post = post.body(body);
        match post.send().await {
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

    async fn hop(
        &self,
        owner: &Member,
        route: &str,
        request: &Request,
        remaining: Duration,
    ) -> Result<reqwest::Response, HopError> {
        let body = request.to_json(Some(remaining));
        let response = self.post(owner, route, &body, remaining).await?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(remote_error(owner, response).await)
        }
    }
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

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

/// Turns the owner's error reply back into the outcome it stood for.
async fn remote_error(owner: &Member, response: reqwest::Response) -> HopError {
    let status = response.status();
    let refusal = response
        .headers()
        .get(REFUSAL_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(Refusal::parse);
    let body = response.json::<ErrorBody>().await;
    match (refusal, body) {
        (Some(refusal), Ok(body)) => HopError::refused(refusal, body.error.message),
        // The hop itself was refused before any routing: the caller's request was fine, the
        // cluster's configuration is not.
        (None, Ok(body)) if body.error.code == ErrorCode::Unauthorized.as_str() => {
            HopError::refused(
                Refusal::Unreachable,
                format!(
                    "node {} refused this node's signature: {}",
                    owner.node, body.error.message
                ),
            )
        }
        (None, Ok(body)) => HopError::Failed(
            MeshError::from_code(&body.error.code, &body.error.message).unwrap_or_else(|| {
                MeshError::OwnerUnavailable(format!(
                    "node {} answered {status}: {}",
                    owner.node, body.error.message
                ))
            }),
        ),
        (_, Err(_)) => HopError::MaybeDelivered(format!(
            "node {} answered {status} without an error body; the request may have run",
            owner.node
        )),
    }
}

impl RemoteTransport for HttpTransport {
    fn call(
        &self,
        owner: &Member,
        request: Request,
        remaining: Duration,
    ) -> BoxFuture<'static, Result<Reply, HopError>> {
        let (transport, owner) = (self.clone(), owner.clone());
        async move {
            let response = transport
                .hop(&owner, "/internal/call", &request, remaining)
                .await?;
            response.json::<Reply>().await.map_err(|e| {
                HopError::MaybeDelivered(format!(
                    "node {} sent an unreadable reply ({e}); the request may have run",
                    owner.node
                ))
            })
        }
        .boxed()
    }

    fn cast(
        &self,
        owner: &Member,
        request: Request,
        remaining: Duration,
    ) -> BoxFuture<'static, Result<(), HopError>> {
        let (transport, owner) = (self.clone(), owner.clone());
        async move {
            transport
                .hop(&owner, "/internal/cast", &request, remaining)
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
        let (transport, peer) = (self.clone(), peer.clone());
        async move {
            let response = transport
                .post(&peer, "/internal/lease", &request, timeout)
                .await
                .map_err(HopError::into_error)?;
            if !response.status().is_success() {
                return Err(remote_error(&peer, response).await.into_error());
            }
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
        let (transport, to) = (self.clone(), to.clone());
        async move {
            let response = transport
                .post(&to, "/internal/handoff", &handoff, timeout)
                .await?;
            if response.status().is_success() {
                Ok(())
            } else {
                Err(remote_error(&to, response).await)
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::num::NonZeroUsize;

    use actix_web::{web, App, HttpServer};
    use mesh_actix::actix::{Actor, Context, Handler, MessageResult};
    use mesh_actix::provider::MembershipFeed;
    use mesh_actix::{ActorId, InitError, Mesh, MeshActor, MeshInit, NodeId, Payload, Request};
    use serde_json::{json, Value};

    use super::HttpTransport;
    use crate::configure;

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

    /// A node whose mesh routes are mounted under `/mesh`, reached with the same prefix.
    async fn node(id: &str) -> (Mesh, actix_web::dev::ServerHandle) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let transport = HttpTransport::new(None).unwrap().with_path_prefix("/mesh/");
        let mesh = Mesh::builder(NodeId::new(id).unwrap(), addr)
            .arbiters(NonZeroUsize::MIN)
            .register::<Echo>()
            .capabilities(["echo"])
            .transport(transport)
            .start()
            .unwrap();
        let served = mesh.clone();
        let server = HttpServer::new(move || {
            App::new().service(web::scope("/mesh").configure(configure(served.clone())))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        (mesh, handle)
    }

    #[actix_web::test]
    async fn hops_reach_routes_mounted_under_a_prefix() {
        let (a, a_server) = node("a").await;
        let (b, b_server) = node("b").await;
        a.update_members(vec![b.local_member()]).await;
        b.update_members(vec![a.local_member()]).await;
        let id = (0..)
            .map(|i| format!("e{i}"))
            .find(|id| a.owner("echo", a.shard_for(id)).unwrap().as_str() == "b")
            .unwrap();

        let request = Request::new("Echo", &id, "echo")
            .unwrap()
            .with_payload(json!({"hello": "b"}));
        let reply = a.call(request).await.expect("forwarded to b under /mesh");

        assert_eq!(reply.node.as_str(), "b");
        assert_eq!(reply.result, json!({"hello": "b"}));
        a_server.stop(true).await;
        b_server.stop(true).await;
    }
}
