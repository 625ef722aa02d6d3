//! A node in the test process: a [`Mesh`](mesh_actix::Mesh) with the example actors and every route of `mesh-http`
//! mounted on an actix-web app that [`actix_web::test`](mod@actix_web::test) serves, with no socket and no process.
//!
//! For tests of HTTP shapes, errors and the example actors' behaviour, which need neither signals,
//! gossip, flags nor a second process. [`InProcessNode`] implements [`Api`] like
//! [`Client`](crate::Client) (`call`, `cast`, `get`, `post_raw`, `owner`, ...) and returns the same
//! [`Resp`], so a test reads the same whether its node is a process or not. Tests using it run
//! inside an actix System (`#[actix_rt::test]`).

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Instant;

use actix_web::body::BoxBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::http::Method;
use actix_web::{test, web, App};
use mesh_actix::{MeshBuilder, MeshConfig, NodeId};
use mesh_http::HttpOptions;
use serde_json::Value;

use crate::{quiet_intentional_panics, unique, Api, Resp, ALL_CAPABILITIES, REQUEST_TIMEOUT};

type Served = Pin<Box<dyn Future<Output = ServiceResponse<BoxBody>>>>;

/// How to start an [`InProcessNode`]. Obtain with [`InProcessNode::builder`].
#[derive(Debug, Clone)]
pub struct InProcessBuilder {
    capabilities: Vec<String>,
    secret: Option<String>,
}

impl InProcessBuilder {
    /// The capabilities it registers (default: none).
    pub fn capabilities<I, S>(mut self, caps: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.capabilities = caps.into_iter().map(Into::into).collect();
        self
    }

    /// The secret of [`HttpOptions`]; [`InProcessNode::client`] then sends it.
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.secret = Some(secret.into());
        self
    }

    /// Starts the mesh (inside the current actix System) and the app.
    pub async fn start(self) -> InProcessNode {
        quiet_intentional_panics(&[]);
        let id = unique("in-process");
        let config = MeshConfig::new(NodeId::new(&id).expect("a valid node id"), "127.0.0.1:1");
        let mesh = mesh_examples::register_examples(MeshBuilder::from_config(config))
            .start()
            .expect("inside an actix System (#[actix_rt::test])");
        mesh.register_capabilities(self.capabilities.iter().map(String::as_str))
            .await
            .expect("registering capabilities");
        let options = HttpOptions {
            secret: self.secret.clone(),
            ..HttpOptions::default()
        };
        // As `mesh_http::serve` mounts it.
        let app = App::new()
            .configure(mesh_http::configure_with(mesh.clone(), options))
            .default_service(web::to(mesh_http::not_found));
        let service = Rc::new(test::init_service(app).await);
        let serve = Rc::new(move |req: actix_http::Request| -> Served {
            let service = service.clone();
            Box::pin(async move {
                test::call_service(&*service, req)
                    .await
                    .map_into_boxed_body()
            })
        });
        InProcessNode {
            id,
            serve,
            headers: Vec::new(),
            secret: self.secret,
        }
    }
}

/// A node in the test process (see the module docs). Clones share the node.
#[derive(Clone)]
pub struct InProcessNode {
    id: String,
    serve: Rc<dyn Fn(actix_http::Request) -> Served>,
    headers: Vec<(String, String)>,
    secret: Option<String>,
}

impl std::fmt::Debug for InProcessNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessNode")
            .field("id", &self.id)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

impl InProcessNode {
    /// A builder with no capabilities and no secret.
    pub fn builder() -> InProcessBuilder {
        InProcessBuilder {
            capabilities: Vec::new(),
            secret: None,
        }
    }

    /// Starts a node with [`ALL_CAPABILITIES`] and no secret.
    pub async fn start() -> InProcessNode {
        Self::builder().capabilities(ALL_CAPABILITIES).start().await
    }

    /// The node id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The same node, sending its secret (if it has one) on every request.
    pub fn client(&self) -> InProcessNode {
        match &self.secret {
            Some(s) => self.client_without_secret().with_secret(s),
            None => self.client_without_secret(),
        }
    }

    /// The same node, sending no secret.
    pub fn client_without_secret(&self) -> InProcessNode {
        InProcessNode {
            headers: Vec::new(),
            ..self.clone()
        }
    }

    /// The same node, sending `Authorization: Bearer <secret>` on every request.
    pub fn with_secret(self, secret: &str) -> InProcessNode {
        self.with_header("authorization", &format!("Bearer {secret}"))
    }

    /// The same node, sending this header on every request.
    pub fn with_header(mut self, name: &str, value: &str) -> InProcessNode {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Serves one request (`path` may carry a query string); panics if no reply comes within
    /// [`REQUEST_TIMEOUT`].
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        content_type: Option<&str>,
    ) -> Resp {
        let started = Instant::now();
        let mut req = test::TestRequest::default()
            .method(method.clone())
            .uri(path);
        for (k, v) in &self.headers {
            req = req.insert_header((k.as_str(), v.as_str()));
        }
        if let Some(ct) = content_type {
            req = req.insert_header((CONTENT_TYPE, ct));
        }
        if let Some(body) = body {
            req = req.set_payload(body);
        }
        let served = async {
            let resp = (self.serve)(req.to_request()).await;
            let status = resp.status().as_u16();
            let content_type = resp
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let bytes = test::read_body(resp).await;
            (status, content_type, bytes)
        };
        let Ok((status, content_type, bytes)) = tokio::time::timeout(REQUEST_TIMEOUT, served).await
        else {
            panic!("{method} {path}: no reply within {REQUEST_TIMEOUT:?}");
        };
        Resp {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            text: String::from_utf8_lossy(&bytes).into_owned(),
            content_type,
            elapsed: started.elapsed(),
        }
    }
}

impl Api for InProcessNode {
    /// `GET path`.
    async fn get(&self, path: &str) -> Resp {
        self.request(Method::GET, path, None, None).await
    }

    /// `POST path` with raw bytes and an optional content type.
    async fn post_raw(
        &self,
        path: &str,
        body: impl Into<Vec<u8>>,
        content_type: Option<&str>,
    ) -> Resp {
        self.request(Method::POST, path, Some(body.into()), content_type)
            .await
    }

    /// `GET /owner?id=..&capability=..` (the query encoded by `url`, as reqwest does).
    async fn owner(&self, id: &str, capability: &str) -> Resp {
        let mut url = reqwest::Url::parse("http://in-process/owner").expect("a URL");
        url.query_pairs_mut()
            .append_pair("id", id)
            .append_pair("capability", capability);
        let path = format!("{}?{}", url.path(), url.query().unwrap_or(""));
        self.get(&path).await
    }
}
