//! `GET /openapi.json`: an OpenAPI 3 document of every route [`crate::configure`] mounts.
//!
//! Written as data rather than derived (utoipa and the like): the handlers read raw bodies
//! (bounded in size and time, `crate::body`) and errors come from one table
//! ([`ErrorCode`]), so annotations would restate by hand what this module states once. The
//! tests below keep it true: every mounted route is documented, every documented route is
//! mounted, every `$ref` resolves, and every error code of the table appears with its status.
//!
//! Like `/health`, the document needs no secret: it describes the API, which is public
//! anyway, and nothing of the node or its actors.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use actix_web::HttpResponse;
use mesh_actix::ErrorCode;
use serde_json::{json, Map, Value};

use crate::error::REFUSAL_HEADER;
use crate::signing::SIGNATURE_HEADER;

/// Codes of error replies outside [`ErrorCode`], with their statuses.
const NOT_FOUND: (&str, u16) = ("not_found", 404);
const METHOD_NOT_ALLOWED: (&str, u16) = ("method_not_allowed", 405);
const NOT_READY: (&str, u16) = ("not_ready", 503);

/// `GET /openapi.json`.
pub(crate) async fn openapi() -> HttpResponse {
    static BODY: LazyLock<String> = LazyLock::new(|| document().to_string());
    HttpResponse::Ok()
        .content_type("application/json")
        .body(BODY.as_str())
}

/// When the route replies with `code`, for a person.
fn when(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::BadRequest => "the body is not JSON, a required field is missing or of the wrong type, a field is unknown, `module`/`id`/`capability` is empty or too long, `timeout_ms` is out of range, or a capability set is over its bounds",
        ErrorCode::Unauthorized => "a secret is configured and the request does not carry it (public routes), or the hop's signature does not hold (node-to-node routes)",
        ErrorCode::UnknownModule => "the owner has no actor type registered under `module`",
        ErrorCode::RequestTimeout => "the body did not arrive completely within the body timeout; the connection is closed",
        ErrorCode::PayloadTooLarge => "the body is over the configured limit (default 1 MiB)",
        ErrorCode::InitFailed => "the actor's init rejected `init_arg`, or its stored state does not restore",
        ErrorCode::ActorCrashed => "the actor panicked while handling this call (it has been restarted)",
        ErrorCode::NoCapableNode => "no live node has registered `capability`",
        ErrorCode::OwnerUnavailable => "the owner could not be reached or could not confirm its ownership within the deadline (the request did not run), the actor's mailbox is full (cast), or a durable state could not be saved",
        ErrorCode::Timeout => "no reply within `timeout_ms`, or the request may have run but its reply was lost",
    }
}

/// The responses of the errors `codes` (each with its status), grouped by status as OpenAPI
/// wants them.
fn errors(codes: &[(&str, u16, &str)]) -> BTreeMap<String, Value> {
    let mut by_status: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for (code, status, when) in codes {
        by_status
            .entry(*status)
            .or_default()
            .push(format!("`{code}`: {when}"));
    }
    by_status
        .into_iter()
        .map(|(status, lines)| {
            let response = json!({
                "description": lines.join("; "),
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            });
            (status.to_string(), response)
        })
        .collect()
}

/// The errors of the table with these codes.
fn table(codes: &[ErrorCode]) -> Vec<(&'static str, u16, &'static str)> {
    codes
        .iter()
        .map(|c| (c.as_str(), c.http_status(), when(*c)))
        .collect()
}

/// What a route that reads a body, and needs the secret or a signature, can fail with
/// before it does anything.
const BODY_ERRORS: [ErrorCode; 4] = [
    ErrorCode::BadRequest,
    ErrorCode::Unauthorized,
    ErrorCode::RequestTimeout,
    ErrorCode::PayloadTooLarge,
];

/// An operation: `ok` maps statuses to responses, `errors` are added to them; `security` is
/// the OpenAPI security requirement (`None`: no scheme at all).
fn operation(
    id: &str,
    tag: &str,
    summary: &str,
    body: Option<&str>,
    ok: Value,
    errors: BTreeMap<String, Value>,
    security: Option<Value>,
) -> Value {
    let mut responses = ok.as_object().cloned().unwrap_or_default();
    responses.extend(errors);
    let mut op = Map::new();
    op.insert("operationId".into(), json!(id));
    op.insert("tags".into(), json!([tag]));
    op.insert("summary".into(), json!(summary));
    if let Some(schema) = body {
        op.insert(
            "requestBody".into(),
            json!({"required": true, "content": {"application/json": {"schema": {"$ref": schema}}}}),
        );
    }
    op.insert("responses".into(), Value::Object(responses));
    op.insert("security".into(), security.unwrap_or_else(|| json!([])));
    if tag == "internal" {
        op.insert("x-internal".into(), json!(true));
    }
    Value::Object(op)
}

fn json_reply(description: &str, schema: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": schema}}}})
}

/// The schema of `/dashboard.json` (its own `json!`: one literal for the whole document would
/// pass the macro's recursion limit).
fn dashboard_schema() -> Value {
    json!({
        "type": "object", "required": ["node", "shards", "members", "capabilities"],
        "properties": {
            "node": {"type": "string", "description": "the node that took the reading"},
            "shards": {"type": "integer", "minimum": 1},
            "members": {"type": "array", "items": {
                "type": "object", "required": ["node", "addr", "status", "capabilities", "load"],
                "properties": {
                    "node": {"type": "string"},
                    "addr": {"type": "string", "description": "host:port"},
                    "status": {"type": "string", "enum": ["alive", "suspect", "dead"]},
                    "capabilities": {"type": "array", "items": {"type": "string"}},
                    "load": {
                        "type": "object", "nullable": true,
                        "description": "this node's from its own counters, another's read from its `/metrics` (800 ms timeout); null when it could not be read",
                        "required": ["activations", "calls", "casts"],
                        "properties": {
                            "activations": {"type": "integer", "minimum": 0, "description": "live on the node"},
                            "calls": {"type": "integer", "minimum": 0, "description": "received since the node started, any outcome; a rate is the difference of two readings"},
                            "casts": {"type": "integer", "minimum": 0},
                        },
                    },
                    "load_error": {"type": "string", "description": "why `load` is null: dead, no answer, ..."},
                },
            }},
            "capabilities": {"type": "array", "items": {
                "type": "object", "required": ["capability", "owners"],
                "properties": {
                    "capability": {"type": "string"},
                    "owners": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 1},
                               "description": "node id -> shards of the capability it owns; the counts add up to `shards` (empty when no alive member registered it)"},
                },
            }},
        },
    })
}

/// The document, as served.
pub(crate) fn document() -> Value {
    let all = table(&ErrorCode::ALL);
    let with = |codes: &[ErrorCode]| errors(&table(codes));
    let client = Some(json!([{}, {"bearer": []}, {"meshSecret": []}]));
    let node = Some(json!([{}, {"hopSignature": []}]));
    let refusal = (
        "owner_unavailable",
        503,
        "refused before any activation saw it: the response's refusal header (see `hopSignature`) names why, and the sender may route the request again",
    );
    let mut hop_errors = table(&ErrorCode::ALL);
    hop_errors.push(refusal);
    let call = operation(
        "call",
        "public",
        "Calls an actor by (module, id) with a capability and returns its reply",
        Some("#/components/schemas/Request"),
        json!({"200": json_reply("the actor's reply", "#/components/schemas/Reply")}),
        errors(&all),
        client.clone(),
    );
    let cast = operation(
        "cast",
        "public",
        "Delivers a payload to an actor and returns once the request is accepted",
        Some("#/components/schemas/Request"),
        json!({"202": json_reply("accepted", "#/components/schemas/Accepted")}),
        errors(&all),
        client.clone(),
    );
    let mut owner = operation(
        "owner",
        "public",
        "Which node owns an id under a capability, and its shard; a node that is not serving \
         yet (joining, or unable to confirm its view) waits for it up to 5 s",
        None,
        json!({"200": json_reply("the owner", "#/components/schemas/Owner")}),
        with(&[
            ErrorCode::BadRequest,
            ErrorCode::Unauthorized,
            ErrorCode::NoCapableNode,
            ErrorCode::OwnerUnavailable,
        ]),
        client.clone(),
    );
    owner["parameters"] = json!([
        {"name": "id", "in": "query", "required": true, "schema": {"type": "string", "minLength": 1, "maxLength": 4096}},
        {"name": "capability", "in": "query", "required": true, "schema": {"type": "string", "minLength": 1, "maxLength": 255}},
    ]);
    let cluster = operation(
        "cluster",
        "public",
        "This node's view of the cluster",
        None,
        json!({"200": json_reply("this node, its live activations and every member it knows", "#/components/schemas/Cluster")}),
        with(&[ErrorCode::Unauthorized]),
        client.clone(),
    );
    let capabilities = operation(
        "capabilities",
        "public",
        "Registers more capabilities on this node",
        Some("#/components/schemas/Capabilities"),
        json!({"200": json_reply("all of this node's capabilities", "#/components/schemas/Capabilities")}),
        with(&BODY_ERRORS),
        client.clone(),
    );
    let health = operation(
        "health",
        "probes",
        "Liveness: 200 while the process serves HTTP",
        None,
        json!({"200": json_reply("serving HTTP", "#/components/schemas/Status")}),
        BTreeMap::new(),
        None,
    );
    let ready = operation(
        "ready",
        "probes",
        "Readiness: 200 while the node serves (it has joined, holds its lease, is not draining)",
        None,
        json!({"200": json_reply("serving", "#/components/schemas/Status")}),
        errors(&[(
            NOT_READY.0,
            NOT_READY.1,
            "the node joins, drains or cannot confirm its ownership; the message says which",
        )]),
        None,
    );
    let metrics = operation(
        "metrics",
        "probes",
        "Prometheus metrics",
        None,
        json!({"200": {"description": "Prometheus text format 0.0.4",
                       "content": {"text/plain": {"schema": {"type": "string"}}}}}),
        BTreeMap::new(),
        None,
    );
    let openapi = operation(
        "openapi",
        "probes",
        "This document",
        None,
        json!({"200": {"description": "an OpenAPI 3 document",
                       "content": {"application/json": {"schema": {"type": "object"}}}}}),
        BTreeMap::new(),
        None,
    );
    let dashboard = operation(
        "dashboard",
        "dashboard",
        "A live page of the cluster: members, capabilities, shard owners, activations and call rates",
        None,
        json!({"200": {"description": "a self-contained HTML page (nothing fetched from elsewhere); it holds no cluster data and refreshes itself from `dashboard.json`",
                       "content": {"text/html": {"schema": {"type": "string"}}}}}),
        BTreeMap::new(),
        None,
    );
    let dashboard_reading = operation(
        "dashboardReading",
        "dashboard",
        "What the dashboard shows: every member with its status, capabilities and load, and the owners of every capability's shards",
        None,
        json!({"200": json_reply("one reading of the cluster, as this node sees it", "#/components/schemas/DashboardReading")}),
        with(&[ErrorCode::Unauthorized]),
        client,
    );
    let internal_call = operation(
        "internalCall",
        "internal",
        "A call forwarded by another node: served only by the owner, never forwarded again",
        Some("#/components/schemas/Request"),
        json!({"200": json_reply("the actor's reply", "#/components/schemas/Reply")}),
        errors(&hop_errors),
        node.clone(),
    );
    let internal_cast = operation(
        "internalCast",
        "internal",
        "A cast forwarded by another node",
        Some("#/components/schemas/Request"),
        json!({"202": json_reply("accepted", "#/components/schemas/Accepted")}),
        errors(&hop_errors),
        node.clone(),
    );
    let batch = operation(
        "internalBatch",
        "internal",
        "Calls forwarded by another node in one request (an array of requests, at most 64); \
         answered 200 with one JSON line per call, in completion order",
        Some("#/components/schemas/Internal"),
        json!({"200": {"description": "one line per call: {\"i\", \"reply\"} or {\"i\", \"error\", \"refusal\"}",
                       "content": {"application/x-ndjson": {"schema": {"$ref": "#/components/schemas/Internal"}}}}}),
        with(&BODY_ERRORS),
        node.clone(),
    );
    let lease = operation(
        "internalLease",
        "internal",
        "Another node asks this one to grant (or refuse) its lease",
        Some("#/components/schemas/Internal"),
        json!({"200": json_reply("the grant or refusal", "#/components/schemas/Internal")}),
        with(&BODY_ERRORS),
        node.clone(),
    );
    let mut handoff_errors = table(&BODY_ERRORS);
    handoff_errors.push(refusal);
    let handoff = operation(
        "internalHandoff",
        "internal",
        "The old owner of an identity hands it, and its state, over to this node",
        Some("#/components/schemas/Internal"),
        json!({"204": {"description": "accepted"}}),
        errors(&handoff_errors),
        node,
    );

    let mut codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    codes.extend([NOT_FOUND.0, METHOD_NOT_ALLOWED.0, NOT_READY.0]);
    let name = |max: u32| json!({"type": "string", "minLength": 1, "maxLength": max});
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "mesh",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!(
                "A virtual-actor mesh node. Paths are relative to where mesh is mounted. Every error reply is `{{\"error\": {{\"code\", \"message\"}}}}`; an unknown path is {} `{}`, a wrong method {} `{}`. With a secret, public routes but the probes need it (any one of the security schemes); node-to-node routes (`x-internal`) need a signature instead, never the secret.",
                NOT_FOUND.1, NOT_FOUND.0, METHOD_NOT_ALLOWED.1, METHOD_NOT_ALLOWED.0,
            ),
        },
        "tags": [
            {"name": "public", "description": "The API for clients"},
            {"name": "probes", "description": "Health, readiness, metrics and this document: no secret needed"},
            {"name": "dashboard", "description": "The dashboard page (no secret needed) and its reading (the secret needed, as for `/cluster`)"},
            {"name": "internal", "description": "Node-to-node hops; not for clients"},
        ],
        "paths": {
            "/call": {"post": call},
            "/cast": {"post": cast},
            "/owner": {"get": owner},
            "/cluster": {"get": cluster},
            "/capabilities": {"post": capabilities},
            "/health": {"get": health},
            "/ready": {"get": ready},
            "/metrics": {"get": metrics},
            "/openapi.json": {"get": openapi},
            "/dashboard": {"get": dashboard},
            "/dashboard.json": {"get": dashboard_reading},
            "/internal/call": {"post": internal_call},
            "/internal/cast": {"post": internal_cast},
            "/internal/batch": {"post": batch},
            "/internal/lease": {"post": lease},
            "/internal/handoff": {"post": handoff},
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "`Authorization: Bearer <secret>` (or `Authorization: <secret>`), when the node has a secret"},
                "meshSecret": {"type": "apiKey", "in": "header", "name": "x-mesh-secret",
                               "description": "the secret, when the node has one"},
                "hopSignature": {"type": "apiKey", "in": "header", "name": SIGNATURE_HEADER,
                                 "description": format!("node-to-node: a signature of the method, path, body, time and a nonce under a key derived from the secret; a refused hop's 503 names why in `{REFUSAL_HEADER}`")},
            },
            "schemas": {
                "Request": {
                    "type": "object",
                    "required": ["module", "id", "capability"],
                    "additionalProperties": false,
                    "properties": {
                        "module": name(255),
                        "id": name(4096),
                        "capability": name(255),
                        "payload": {"description": "handed to the actor; default null", "nullable": true},
                        "init_arg": {"description": "used only by the call that activates the actor", "nullable": true},
                        "timeout_ms": {"type": "integer", "minimum": 1, "maximum": 3_600_000, "default": 5000},
                    },
                },
                "Reply": {
                    "type": "object",
                    "required": ["pid", "node", "result"],
                    "properties": {
                        "pid": {"type": "string"},
                        "node": {"type": "string"},
                        "result": {"description": "the actor's reply", "nullable": true},
                    },
                },
                "Accepted": {
                    "type": "object", "required": ["status"],
                    "properties": {"status": {"type": "string", "enum": ["accepted"]}},
                },
                "Owner": {
                    "type": "object", "required": ["shard", "node"],
                    "properties": {"shard": {"type": "integer", "minimum": 0}, "node": {"type": "string"}},
                },
                "Cluster": {
                    "type": "object", "required": ["node", "activations", "members"],
                    "properties": {
                        "node": {"type": "string"},
                        "activations": {"type": "integer", "minimum": 0},
                        "members": {"type": "array", "items": {"$ref": "#/components/schemas/Member"}},
                    },
                },
                "Member": {
                    "type": "object", "required": ["node", "addr", "capabilities", "status"],
                    "properties": {
                        "node": {"type": "string"},
                        "addr": {"type": "string", "description": "host:port"},
                        "capabilities": {"type": "array", "items": {"type": "string"}},
                        "status": {"type": "string", "enum": ["alive", "suspect", "dead"]},
                        "incarnation": {"type": "integer", "minimum": 0},
                        "version": {"type": "integer", "minimum": 0},
                        "leaving": {"type": "boolean"},
                    },
                },
                "DashboardReading": dashboard_schema(),
                "Capabilities": {
                    "type": "object", "required": ["capabilities"], "additionalProperties": false,
                    "properties": {"capabilities": {"type": "array", "maxItems": 1024, "items": name(255)}},
                },
                "Status": {
                    "type": "object", "required": ["status"],
                    "properties": {"status": {"type": "string", "enum": ["ok", "ready"]}},
                },
                "Error": {
                    "type": "object", "required": ["error"],
                    "properties": {"error": {
                        "type": "object", "required": ["code", "message"],
                        "properties": {
                            "code": {"type": "string", "enum": codes},
                            "message": {"type": "string", "description": "what went wrong, for a person"},
                        },
                    }},
                },
                "Internal": {
                    "type": "object",
                    "description": "a node-to-node message; its shape is mesh's own and may change between versions",
                },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::num::NonZeroUsize;

    use actix_web::http::{Method, StatusCode};
    use actix_web::test::{call_service, init_service, read_body, TestRequest};
    use actix_web::App;
    use mesh_actix::{Mesh, MeshConfig, NodeId};

    use super::*;
    use crate::{configure, configure_with, HttpOptions};

    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

    fn mesh() -> Mesh {
        let mut config = MeshConfig::new(NodeId::new("node-1").unwrap(), "127.0.0.1:4000");
        config.arbiters = NonZeroUsize::MIN;
        Mesh::start(config).expect("inside an actix System")
    }

    /// The (path, method) pairs of the document.
    fn operations(doc: &Value) -> BTreeSet<(String, String)> {
        let paths = doc["paths"].as_object().expect("paths is an object");
        paths
            .iter()
            .flat_map(|(path, item)| {
                let item = item.as_object().expect("a path item is an object");
                item.keys()
                    .map(move |method| (path.clone(), method.clone()))
            })
            .collect()
    }

    /// Every `$ref` in `value`, with where it was found.
    fn refs<'a>(value: &'a Value, at: String, found: &mut Vec<(String, &'a str)>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("$ref", Value::String(target)) => found.push((at.clone(), target)),
                        _ => refs(v, format!("{at}/{key}"), found),
                    }
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    refs(v, format!("{at}/{i}"), found);
                }
            }
            _ => {}
        }
    }

    /// The fields OpenAPI 3.0 requires, and the links inside the document.
    #[test]
    fn the_document_is_openapi_3_and_every_reference_resolves() {
        let doc = document();
        assert!(
            doc["openapi"].as_str().unwrap().starts_with("3.0."),
            "{}",
            doc["openapi"]
        );
        assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
        let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
        let tags: BTreeSet<&str> = doc["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        let mut ids = BTreeSet::new();
        for (path, method) in operations(&doc) {
            assert!(path.starts_with('/'), "{path}");
            assert!(METHODS.contains(&method.as_str()), "{path}: {method}");
            let op = &doc["paths"][&path][&method];
            assert!(
                ids.insert(op["operationId"].as_str().unwrap().to_owned()),
                "{path}: duplicate operationId"
            );
            for tag in op["tags"].as_array().unwrap() {
                assert!(
                    tags.contains(tag.as_str().unwrap()),
                    "{path}: undeclared tag {tag}"
                );
            }
            let responses = op["responses"].as_object().unwrap();
            assert!(!responses.is_empty(), "{path} {method}: no responses");
            for (status, response) in responses {
                let code: u16 = status
                    .parse()
                    .unwrap_or_else(|_| panic!("{path}: status {status}"));
                assert!((100..600).contains(&code), "{path}: {status}");
                assert!(
                    response["description"].is_string(),
                    "{path} {status}: no description"
                );
            }
            for requirement in op["security"].as_array().unwrap() {
                for scheme in requirement.as_object().unwrap().keys() {
                    assert!(
                        schemes.contains_key(scheme),
                        "{path}: unknown scheme {scheme}"
                    );
                }
            }
            let internal = path.starts_with("/internal/");
            assert_eq!(op["x-internal"] == json!(true), internal, "{path}");
        }
        let mut found = Vec::new();
        refs(&doc, String::new(), &mut found);
        assert!(found.len() > 20, "{found:?}");
        for (at, target) in found {
            let pointer = target
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("{at}: {target}"));
            assert!(
                doc.pointer(pointer).is_some(),
                "{at}: {target} does not resolve"
            );
        }
    }

    #[test]
    fn every_error_of_the_table_is_documented_with_its_status() {
        let doc = document();
        let call = &doc["paths"]["/call"]["post"]["responses"];
        let codes = &doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]
            ["code"]["enum"];
        for code in ErrorCode::ALL {
            let response = &call[code.http_status().to_string()];
            let description = response["description"].as_str().unwrap_or_default();
            assert!(
                description.contains(&format!("`{}`", code.as_str())),
                "{code:?}: {response}"
            );
            assert!(
                codes.as_array().unwrap().contains(&json!(code.as_str())),
                "{code:?}"
            );
        }
        assert!(
            doc["paths"]["/ready"]["get"]["responses"]["503"]["description"]
                .as_str()
                .unwrap()
                .contains("`not_ready`")
        );
    }

    /// The pairs `mount` serves, read from its source: actix-web cannot list a config's routes.
    fn mounted() -> BTreeSet<(String, String)> {
        let source = include_str!("routes.rs");
        let mount = source.split("pub(crate) fn mount").nth(1).unwrap();
        let mount = mount.split("\n}\n").next().unwrap();
        let routes: BTreeSet<(String, String)> = mount
            .split(".service(")
            .skip(1)
            .map(|route| {
                // `route("/path", access).route(web::method()...)`: the first string is the path.
                let mut parts = route.splitn(3, '"');
                let (path, rest) = (parts.nth(1).unwrap(), parts.next().unwrap());
                let method = rest
                    .split("web::")
                    .nth(1)
                    .unwrap()
                    .split('(')
                    .next()
                    .unwrap();
                (path.to_owned(), method.to_owned())
            })
            .collect();
        assert!(routes.len() >= 13, "{routes:?}");
        routes
    }

    #[actix_web::test]
    async fn the_document_and_the_mounted_routes_agree() {
        let doc = document();
        assert_eq!(operations(&doc), mounted());
        let app = init_service(App::new().configure(configure(mesh()))).await;
        let paths: BTreeSet<String> = operations(&doc).into_iter().map(|(p, _)| p).collect();
        for path in paths {
            for method in ["get", "post", "put", "delete", "patch"] {
                let documented = doc["paths"][&path].get(method).is_some();
                let request = TestRequest::default()
                    .method(Method::from_bytes(method.to_uppercase().as_bytes()).unwrap())
                    .uri(&path)
                    .set_payload("{}");
                let status = call_service(&app, request.to_request()).await.status();
                if documented {
                    let served =
                        ![StatusCode::NOT_FOUND, StatusCode::METHOD_NOT_ALLOWED].contains(&status);
                    assert!(served, "{method} {path}: {status}");
                } else {
                    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
                }
            }
        }
    }

    #[actix_web::test]
    async fn the_document_is_served_without_the_secret() {
        let options = HttpOptions {
            secret: Some("s3cret".into()),
            ..HttpOptions::default()
        };
        let app = init_service(App::new().configure(configure_with(mesh(), options))).await;
        let response =
            call_service(&app, TestRequest::get().uri("/openapi.json").to_request()).await;
        assert_eq!(response.status(), StatusCode::OK);
        let served: Value = serde_json::from_slice(&read_body(response).await).unwrap();
        assert_eq!(served, document());
    }
}
