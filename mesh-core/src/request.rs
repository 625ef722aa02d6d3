//! What a caller asks of an actor and what it gets back, in Rust and on the wire.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{ActorId, Capability, MeshError, Module, NodeId};

/// The timeout of a call that names none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest timeout a request may ask for (one hour); longer ones are a `bad_request`.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// One call or cast: which actor, what to deliver, and how long to wait.
///
/// ```
/// use mesh_core::Request;
/// use serde_json::json;
/// use std::time::Duration;
///
/// let request = Request::new("GameActor", "player_123", "game")
///     .unwrap()
///     .with_payload(json!({"action": "get_state"}))
///     .with_init_arg(json!({"starting_level": 10}))
///     .with_timeout(Duration::from_secs(2));
/// assert_eq!(request.id.as_str(), "player_123");
///
/// let parsed = Request::from_json(br#"{"module": "GameActor", "id": "player_123", "capability": "game"}"#).unwrap();
/// assert_eq!(parsed.payload, serde_json::Value::Null);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The actor type, as registered on the owner.
    pub module: Module,
    /// The actor's id; it picks the shard and so the owner.
    pub id: ActorId,
    /// The capability the owner must have registered.
    pub capability: Capability,
    /// Delivered to the actor's `Payload` handler.
    pub payload: Value,
    /// Given to the actor's init on first activation only.
    pub init_arg: Option<Value>,
    /// How long a call waits for the reply; [`DEFAULT_TIMEOUT`] when `None`.
    pub timeout: Option<Duration>,
}

impl Request {
    /// A request with a `null` payload, no init_arg and the default timeout.
    pub fn new(
        module: impl AsRef<str>,
        id: impl AsRef<str>,
        capability: impl AsRef<str>,
    ) -> Result<Request, MeshError> {
        Ok(Request {
            module: Module::new(module)?,
            id: ActorId::new(id)?,
            capability: Capability::new(capability)?,
            payload: Value::Null,
            init_arg: None,
            timeout: None,
        })
    }

    /// Sets the payload.
    pub fn with_payload(mut self, payload: Value) -> Request {
        self.payload = payload;
        self
    }

    /// Sets the init_arg.
    pub fn with_init_arg(mut self, init_arg: Value) -> Request {
        self.init_arg = Some(init_arg);
        self
    }

    /// Sets the timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Request {
        self.timeout = Some(timeout);
        self
    }

    /// The timeout this request runs under.
    pub fn effective_timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_TIMEOUT)
    }

    /// Parses the JSON body of `POST /call` and `POST /cast`.
    ///
    /// Any problem (not JSON, a missing, mistyped or unknown field, an empty or too long
    /// name, a timeout outside `1..=3600000` ms) is a [`MeshError::BadRequest`] whose message
    /// says what is wrong.
    pub fn from_json(body: &[u8]) -> Result<Request, MeshError> {
        // serde would also read the struct from a JSON array of its fields in order: the
        // body is an object, as the contract shows it, and nothing else is one.
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        if first.is_some_and(|b| *b == b'[') {
            return Err(MeshError::BadRequest(
                "invalid request body: expected a JSON object, got an array".into(),
            ));
        }
        let wire: WireRequest = serde_json::from_slice(body)
            .map_err(|e| MeshError::BadRequest(format!("invalid request body: {e}")))?;
        wire.try_into()
    }

    /// The JSON body of this request, with `timeout_ms` set to `remaining` when given
    /// (a forwarded request carries the caller's remaining deadline).
    pub fn to_json(&self, remaining: Option<Duration>) -> Value {
        serde_json::to_value(self.wire(remaining)).expect("a request always serializes")
    }

    /// [`Request::to_json`] as bytes, written straight from the request (no intermediate
    /// [`Value`] and no copies of its strings): what a node-to-node hop sends.
    pub fn to_json_bytes(&self, remaining: Option<Duration>) -> Vec<u8> {
        serde_json::to_vec(&self.wire(remaining)).expect("a request always serializes")
    }

    fn wire(&self, remaining: Option<Duration>) -> WireRequestRef<'_> {
        let timeout = remaining.or(self.timeout);
        WireRequestRef {
            module: self.module.as_str(),
            id: self.id.as_str(),
            capability: self.capability.as_str(),
            payload: &self.payload,
            init_arg: self.init_arg.as_ref(),
            timeout_ms: timeout.map(|t| t.as_millis().clamp(1, u128::from(u64::MAX)) as u64),
        }
    }
}

/// [`WireRequest`] borrowed from a [`Request`], for writing.
#[derive(Serialize)]
struct WireRequestRef<'a> {
    module: &'a str,
    id: &'a str,
    capability: &'a str,
    payload: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    init_arg: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<u64>,
}

/// The JSON shape of a request; names are plain strings here so that an empty one gets the
/// field-specific message of [`Module::new`] and friends.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRequest {
    module: String,
    id: String,
    capability: String,
    #[serde(default)]
    payload: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    init_arg: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<u64>,
}

impl TryFrom<WireRequest> for Request {
    type Error = MeshError;

    fn try_from(wire: WireRequest) -> Result<Request, MeshError> {
        let timeout = match wire.timeout_ms {
            None => None,
            Some(ms) if ms == 0 || ms > MAX_TIMEOUT.as_millis() as u64 => {
                return Err(MeshError::BadRequest(format!(
                    "`timeout_ms` must be between 1 and {}, got {ms}",
                    MAX_TIMEOUT.as_millis()
                )))
            }
            Some(ms) => Some(Duration::from_millis(ms)),
        };
        Ok(Request {
            module: Module::new(wire.module)?,
            id: ActorId::new(wire.id)?,
            capability: Capability::new(wire.capability)?,
            payload: wire.payload,
            init_arg: wire.init_arg.filter(|arg| !arg.is_null()),
            timeout,
        })
    }
}

/// A call's answer: which activation handled it, on which node, and what the actor replied.
/// Serialised, it is the body of a `POST /call`'s 200:
///
/// ```
/// use mesh_core::{NodeId, Reply};
/// use serde_json::json;
///
/// let reply = Reply {
///     pid: "<node-1.0.0>".into(),
///     node: NodeId::new("node-1").unwrap(),
///     result: json!({"ok": 1}),
/// };
/// assert_eq!(
///     serde_json::to_value(&reply).unwrap(),
///     json!({"pid": "<node-1.0.0>", "node": "node-1", "result": {"ok": 1}})
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// The activation's process id; it changes when the actor restarts or is re-activated.
    pub pid: String,
    /// The node that hosts the activation.
    pub node: NodeId,
    /// The actor's reply.
    pub result: Value,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bad(body: &str) -> String {
        match Request::from_json(body.as_bytes()) {
            Err(MeshError::BadRequest(message)) => message,
            other => panic!("expected bad_request for {body}, got {other:?}"),
        }
    }

    #[test]
    fn parses_the_full_shape() {
        let r = Request::from_json(
            br#"{"module":"GameActor","id":"p1","capability":"game","payload":{"action":"increment"},"init_arg":{"starting_level":3},"timeout_ms":250}"#,
        )
        .unwrap();
        assert_eq!(r.module.as_str(), "GameActor");
        assert_eq!(r.payload, json!({"action": "increment"}));
        assert_eq!(r.init_arg, Some(json!({"starting_level": 3})));
        assert_eq!(r.timeout, Some(Duration::from_millis(250)));
    }

    #[test]
    fn rejects_bad_bodies_with_a_reason() {
        assert!(bad("not json").contains("invalid request body"));
        assert!(bad(r#"{"id":"x","capability":"c"}"#).contains("module"));
        assert!(bad(r#"{"module":"M","id":7,"capability":"c"}"#).contains("invalid type"));
        assert!(
            bad(r#"{"module":"M","id":"x","capability":"c","timeout_ms":"5"}"#)
                .contains("invalid type")
        );
        assert!(
            bad(r#"{"module":"M","id":"x","capability":"c","timeout_ms":-1}"#).contains("invalid")
        );
        assert!(
            bad(r#"{"module":"M","id":"x","capability":"c","timeout_ms":0}"#)
                .contains("timeout_ms")
        );
        // At most an hour: the bound itself parses, one more millisecond does not.
        assert_eq!(
            Request::from_json(br#"{"module":"M","id":"x","capability":"c","timeout_ms":3600000}"#)
                .unwrap()
                .timeout,
            Some(MAX_TIMEOUT)
        );
        assert_eq!(
            bad(r#"{"module":"M","id":"x","capability":"c","timeout_ms":3600001}"#),
            "`timeout_ms` must be between 1 and 3600000, got 3600001"
        );
        assert_eq!(
            bad(r#"{"module":"","id":"x","capability":"c"}"#),
            "`module` must not be empty"
        );
        assert_eq!(
            bad(r#"{"module":"M","id":"","capability":"c"}"#),
            "`id` must not be empty"
        );
        assert_eq!(
            bad(r#"{"module":"M","id":"x","capability":""}"#),
            "`capability` must not be empty"
        );
        assert!(bad("[1,2]").contains("invalid"));
        // The fields as an array, in order, are not a body either.
        let array = bad(r#" ["Counter","arr","counter",null,null,null]"#);
        assert!(array.contains("expected a JSON object"), "{array}");
        // A typo is not silently ignored: the message names the field.
        let typo = bad(r#"{"module":"M","id":"x","capability":"c","paylod":{"action":"reset"}}"#);
        assert!(typo.contains("unknown field `paylod`"), "{typo}");
        let long = format!(
            r#"{{"module":"M","id":"{}","capability":"c"}}"#,
            "x".repeat(4097)
        );
        assert!(bad(&long).contains("at most 4096 bytes"));
    }

    #[test]
    fn forwarding_round_trips_with_the_remaining_deadline() {
        let r = Request::new("Counter", "c1", "counter")
            .unwrap()
            .with_payload(json!({"action": "reset"}))
            .with_timeout(Duration::from_secs(5));
        let wire = r.to_json(Some(Duration::from_millis(1200)));
        assert_eq!(wire["timeout_ms"], json!(1200));
        let back = Request::from_json(wire.to_string().as_bytes()).unwrap();
        assert_eq!(back.payload, r.payload);
        assert_eq!(back.timeout, Some(Duration::from_millis(1200)));
        // The hop's bytes are the same JSON.
        let bytes = r.to_json_bytes(Some(Duration::from_millis(1200)));
        assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap(), wire);
    }
}
