//! The node-to-node hop over HTTP: a pooled reqwest client posting to the owner's forward
//! routes (`POST /internal/call`, `POST /internal/cast`).

use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use mesh_actix::{ErrorCode, Member, MeshError, RemoteTransport, Reply, Request};
use serde::Deserialize;

use crate::auth::SECRET_HEADER;

/// Connection attempts per forwarded request: a refused or reset connection is retried
/// (it certainly did not deliver the request) while the deadline allows.
const CONNECT_ATTEMPTS: u32 = 3;
const CONNECT_BACKOFF: Duration = Duration::from_millis(50);

/// Forwards requests to their owner over HTTP/JSON, reusing pooled keep-alive connections.
#[derive(Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
    secret: Option<String>,
}

impl HttpTransport {
    /// A transport that sends `secret` (if any) to the other nodes, which must share it.
    pub fn new(secret: Option<String>) -> Result<HttpTransport, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()?;
        Ok(HttpTransport { client, secret })
    }

    async fn post(
        &self,
        owner: &Member,
        route: &str,
        request: &Request,
        remaining: Duration,
    ) -> Result<reqwest::Response, MeshError> {
        let url = format!("http://{}{route}", owner.addr);
        let body = request.to_json(Some(remaining));
        let deadline = tokio::time::Instant::now() + remaining;
        let mut attempt = 1;
        loop {
            let mut post = self.client.post(&url).json(&body).timeout(remaining);
            if let Some(secret) = &self.secret {
                post = post.header(SECRET_HEADER, secret);
            }
            match post.send().await {
                Ok(response) => return Ok(response),
                Err(e) if e.is_timeout() => return Err(MeshError::timeout(remaining)),
                Err(e)
                    if e.is_connect()
                        && attempt < CONNECT_ATTEMPTS
                        && tokio::time::Instant::now() + CONNECT_BACKOFF < deadline =>
                {
                    attempt += 1;
                    tokio::time::sleep(CONNECT_BACKOFF).await;
                }
                Err(e) => {
                    return Err(MeshError::OwnerUnavailable(format!(
                        "node {} at {} could not be reached after {attempt} attempt(s): {e}",
                        owner.node, owner.addr
                    )))
                }
            }
        }
    }
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

/// Turns the owner's error reply back into the error it stood for.
async fn remote_error(owner: &Member, response: reqwest::Response) -> MeshError {
    let status = response.status();
    match response.json::<ErrorBody>().await {
        // The hop itself was refused: the caller's request was fine, the cluster is not.
        Ok(body) if body.error.code == ErrorCode::Unauthorized.as_str() => {
            MeshError::OwnerUnavailable(format!(
                "node {} refused this node's secret: {}",
                owner.node, body.error.message
            ))
        }
        Ok(body) => {
            MeshError::from_code(&body.error.code, &body.error.message).unwrap_or_else(|| {
                MeshError::OwnerUnavailable(format!(
                    "node {} answered {status}: {}",
                    owner.node, body.error.message
                ))
            })
        }
        Err(_) => MeshError::OwnerUnavailable(format!(
            "node {} answered {status} without an error body",
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
    ) -> BoxFuture<'static, Result<Reply, MeshError>> {
        let (transport, owner) = (self.clone(), owner.clone());
        async move {
            let response = transport
                .post(&owner, "/internal/call", &request, remaining)
                .await?;
            if !response.status().is_success() {
                return Err(remote_error(&owner, response).await);
            }
            response.json::<Reply>().await.map_err(|e| {
                MeshError::OwnerUnavailable(format!(
                    "node {} sent an unreadable reply: {e}",
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
    ) -> BoxFuture<'static, Result<(), MeshError>> {
        let (transport, owner) = (self.clone(), owner.clone());
        async move {
            let response = transport
                .post(&owner, "/internal/cast", &request, remaining)
                .await?;
            if response.status().is_success() {
                Ok(())
            } else {
                Err(remote_error(&owner, response).await)
            }
        }
        .boxed()
    }
}
