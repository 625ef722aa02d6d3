//! An HTTP client bound to one node ([`Client`]) and what it gets back ([`Resp`], with assertion
//! helpers).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::counter;

/// The requests tests make of one node's HTTP API, over a socket ([`Client`]) or in process
/// ([`InProcessNode`](crate::InProcessNode)): a test reads the same either way.
#[allow(async_fn_in_trait)] // used by this crate's tests only, on one thread
pub trait Api {
    /// `GET path`.
    async fn get(&self, path: &str) -> Resp;

    /// `POST path` with raw bytes and an optional content type.
    async fn post_raw(
        &self,
        path: &str,
        body: impl Into<Vec<u8>>,
        content_type: Option<&str>,
    ) -> Resp;

    /// `GET /owner?id=..&capability=..`, the query encoded.
    async fn owner(&self, id: &str, capability: &str) -> Resp;

    /// `POST path` with a JSON body (`Content-Type: application/json`).
    async fn post_json(&self, path: &str, body: &Value) -> Resp {
        let bytes = serde_json::to_vec(body).expect("serialize JSON");
        self.post_raw(path, bytes, Some("application/json")).await
    }

    /// `POST /call`.
    async fn call(&self, body: &Value) -> Resp {
        self.post_json("/call", body).await
    }

    /// `POST /cast`.
    async fn cast(&self, body: &Value) -> Resp {
        self.post_json("/cast", body).await
    }

    /// `GET /cluster`, asserting 200.
    async fn cluster(&self) -> Value {
        self.get("/cluster").await.ok().clone()
    }

    /// `POST /call` to `Counter` with capability `counter` and an empty payload; returns the
    /// count.
    async fn count(&self, id: &str) -> i64 {
        let r = self.call(&counter(id, json!({}))).await;
        r.result()["ok"]
            .as_i64()
            .unwrap_or_else(|| panic!("Counter reply is not {{\"ok\": <int>}}: {r}"))
    }
}

/// Timeout applied to every HTTP request made through [`Client`].
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Requests slower than this are reported on stderr (shown when a test fails).
const SLOW_REQUEST: Duration = Duration::from_secs(1);

/// An HTTP client bound to one node. Every request has a timeout ([`REQUEST_TIMEOUT`] by default).
/// The non-`try_` methods panic on transport errors (connection refused, timeout, ...).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    timeout: Duration,
    headers: Vec<(String, String)>,
    pool_idle: Option<Duration>,
    roots: Vec<reqwest::Certificate>,
}

impl Client {
    /// A client for `base` (e.g. `http://127.0.0.1:1234`).
    pub fn new(base: impl Into<String>) -> Client {
        Client {
            http: http_client(None, &[]),
            base: base.into(),
            timeout: REQUEST_TIMEOUT,
            headers: Vec::new(),
            pool_idle: None,
            roots: Vec::new(),
        }
    }

    /// The same client, with a new connection pool that drops connections idle for `idle`.
    ///
    /// A node's server closes keep-alive connections idle for 5 s (actix-web's default); a
    /// request sent on a pooled connection at the moment the node closes it fails without a
    /// reply (`IncompleteMessage`). Tests that count every reply as meaningful should keep
    /// `idle` well under 5 s.
    pub fn with_pool_idle_timeout(mut self, idle: Duration) -> Client {
        self.pool_idle = Some(idle);
        self.http = http_client(self.pool_idle, &self.roots);
        self
    }

    /// The same client, trusting only the PEM certificates in `pem` for HTTPS (the
    /// certificates a test generated, not the system's).
    pub fn with_roots(mut self, pem: &[u8]) -> Client {
        self.roots = reqwest::Certificate::from_pem_bundle(pem).expect("PEM certificates");
        self.http = http_client(self.pool_idle, &self.roots);
        self
    }

    /// The same client with another per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// The same client, sending `Authorization: Bearer <secret>` on every request.
    pub fn with_secret(self, secret: &str) -> Client {
        self.with_header("authorization", &format!("Bearer {secret}"))
    }

    /// The same client, sending this header on every request.
    pub fn with_header(mut self, name: &str, value: &str) -> Client {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sends one request. `body` is sent as is, with `content_type` if given.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
        content_type: Option<&str>,
    ) -> reqwest::Result<Resp> {
        self.request_with(method, path, &[], body, content_type)
            .await
    }

    /// Sends one request with these query parameters (encoded by reqwest).
    pub async fn request_with(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Vec<u8>>,
        content_type: Option<&str>,
    ) -> reqwest::Result<Resp> {
        let started = Instant::now();
        let what = format!("{method} {}{path}", self.base);
        let mut rb = self
            .http
            .request(method, format!("{}{path}", self.base))
            .query(query)
            .timeout(self.timeout);
        for (k, v) in &self.headers {
            rb = rb.header(k.as_str(), v.as_str());
        }
        if let Some(ct) = content_type {
            rb = rb.header("content-type", ct);
        }
        if let Some(body) = body {
            rb = rb.body(body);
        }
        let resp = rb.send().await?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = resp.bytes().await?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let elapsed = started.elapsed();
        if elapsed > SLOW_REQUEST {
            // Shown with the output of a failing test.
            eprintln!("mesh-tests: slow request: {what} -> {status} after {elapsed:?}");
        }
        Ok(Resp {
            status,
            body,
            text,
            content_type,
            elapsed,
        })
    }

    /// `GET path`, returning transport errors.
    pub async fn try_get(&self, path: &str) -> reqwest::Result<Resp> {
        self.request(reqwest::Method::GET, path, None, None).await
    }

    /// `POST path` with raw bytes, returning transport errors.
    pub async fn try_post_raw(
        &self,
        path: &str,
        body: impl Into<Vec<u8>>,
        content_type: Option<&str>,
    ) -> reqwest::Result<Resp> {
        self.request(reqwest::Method::POST, path, Some(body.into()), content_type)
            .await
    }
}

impl Api for Client {
    /// `GET path`.
    async fn get(&self, path: &str) -> Resp {
        match self.try_get(path).await {
            Ok(r) => r,
            Err(e) => panic!("GET {}{path} failed: {e:?}", self.base),
        }
    }

    /// `POST path` with raw bytes and an optional content type.
    async fn post_raw(
        &self,
        path: &str,
        body: impl Into<Vec<u8>>,
        content_type: Option<&str>,
    ) -> Resp {
        match self.try_post_raw(path, body, content_type).await {
            Ok(r) => r,
            Err(e) => panic!("POST {}{path} failed: {e:?}", self.base),
        }
    }

    /// `GET /owner?id=..&capability=..`.
    async fn owner(&self, id: &str, capability: &str) -> Resp {
        let query = [("id", id), ("capability", capability)];
        match self
            .request_with(reqwest::Method::GET, "/owner", &query, None, None)
            .await
        {
            Ok(r) => r,
            Err(e) => panic!("GET {}/owner {query:?} failed: {e:?}", self.base),
        }
    }
}

/// A reqwest client with a connect timeout, this pool idle timeout and, if any, only these
/// roots.
fn http_client(pool_idle: Option<Duration>, roots: &[reqwest::Certificate]) -> reqwest::Client {
    let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
    if let Some(idle) = pool_idle {
        builder = builder.pool_idle_timeout(idle);
    }
    if !roots.is_empty() {
        builder = builder.tls_certs_only(roots.iter().cloned());
    }
    builder.build().expect("building reqwest client")
}

/// A response: status, body as JSON (`Value::Null` if it is not JSON), raw text, timing.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub text: String,
    pub content_type: Option<String>,
    pub elapsed: Duration,
}

impl std::fmt::Display for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = if self.text.len() > 2000 {
            let mut end = 2000;
            while !self.text.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}... ({} bytes)", &self.text[..end], self.text.len())
        } else {
            self.text.clone()
        };
        write!(f, "HTTP {} after {:?}: {text}", self.status, self.elapsed)
    }
}

impl Resp {
    /// Asserts the status.
    #[track_caller]
    pub fn expect_status(&self, status: u16) -> &Resp {
        assert_eq!(self.status, status, "unexpected status: {self}");
        self
    }

    /// Asserts 200 and returns the JSON body.
    #[track_caller]
    pub fn ok(&self) -> &Value {
        self.expect_status(200);
        &self.body
    }

    /// Asserts that the reply is served with a `Content-Type` that starts with `media_type`.
    #[track_caller]
    pub fn expect_content_type(&self, media_type: &str) -> &Resp {
        assert!(
            self.content_type
                .as_deref()
                .is_some_and(|ct| ct.starts_with(media_type)),
            "Content-Type is {:?}, not {media_type}: {self}",
            self.content_type
        );
        self
    }

    /// Asserts that the reply is served as `application/json`.
    #[track_caller]
    pub fn expect_json(&self) -> &Resp {
        self.expect_content_type("application/json")
    }

    /// Asserts a successful `/call` reply (`200 {"pid": <non-empty string>, "node": <string>,
    /// "result": ..}`) and returns `result`.
    #[track_caller]
    pub fn result(&self) -> &Value {
        self.expect_status(200);
        self.expect_json();
        assert!(
            self.body["pid"].as_str().is_some_and(|p| !p.is_empty()),
            "call reply without a non-empty string pid: {self}"
        );
        assert!(
            self.body["node"].is_string(),
            "call reply without a string node: {self}"
        );
        let obj = self.body.as_object().expect("object");
        assert!(
            obj.contains_key("result"),
            "call reply without result: {self}"
        );
        &self.body["result"]
    }

    /// The `pid` of a successful `/call` reply.
    #[track_caller]
    pub fn pid(&self) -> String {
        self.result();
        self.body["pid"].as_str().unwrap().to_string()
    }

    /// The `node` of a successful `/call` reply.
    #[track_caller]
    pub fn node(&self) -> String {
        self.result();
        self.body["node"].as_str().unwrap().to_string()
    }

    /// Asserts an error reply: this status and `{"error": {"code": code, "message": <non-empty>}}`.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) -> &Resp {
        assert_eq!(self.status, status, "expected {status} {code}, got: {self}");
        self.expect_json();
        let err = &self.body["error"];
        assert!(
            err.is_object(),
            "error reply is not {{\"error\": {{..}}}}: {self}"
        );
        assert_eq!(err["code"].as_str(), Some(code), "wrong error code: {self}");
        assert!(
            err["message"]
                .as_str()
                .is_some_and(|m| !m.trim().is_empty()),
            "error reply without a non-empty message: {self}"
        );
        self
    }
}
