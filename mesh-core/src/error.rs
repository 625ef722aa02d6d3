//! The one error type of mesh and its stable codes.

use std::time::Duration;

/// Every way a mesh request can fail. Each variant maps to exactly one code of the
/// contract's error table ([`ErrorCode`]) and so to one HTTP status, and carries the message
/// for a person. The constructors below write the messages; an error received from another
/// node keeps the owner's message word for word ([`MeshError::from_code`]).
///
/// ```
/// use mesh_core::{ErrorCode, MeshError};
///
/// let error = MeshError::no_capable_node("counter");
/// assert_eq!(error.code(), ErrorCode::NoCapableNode);
/// assert_eq!(error.code().as_str(), "no_capable_node");
/// assert_eq!(error.code().http_status(), 503);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeshError {
    /// The request is malformed: not JSON, a missing or mistyped field, an empty name.
    #[error("{0}")]
    BadRequest(String),
    /// A secret is configured and the request does not carry it.
    #[error("{0}")]
    Unauthorized(String),
    /// The owner has no actor type registered under this module name.
    #[error("{0}")]
    UnknownModule(String),
    /// The request body did not arrive completely within the node's body timeout (the
    /// connection is closed too). Beyond the contract's table: 408 `request_timeout`.
    #[error("{0}")]
    RequestTimeout(String),
    /// The request body is larger than the configured limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The actor's init rejected `init_arg`.
    #[error("{0}")]
    InitFailed(String),
    /// The actor panicked while handling this call; it has been restarted with fresh state.
    #[error("{0}")]
    ActorCrashed(String),
    /// No live node has registered the capability.
    #[error("{0}")]
    NoCapableNode(String),
    /// The owner could not be reached (or could not accept the request) after retries.
    #[error("{0}")]
    OwnerUnavailable(String),
    /// No reply arrived within the call's timeout.
    #[error("{0}")]
    Timeout(String),
}

impl MeshError {
    /// `unauthorized`: the request lacks the configured secret.
    pub fn unauthorized() -> MeshError {
        MeshError::Unauthorized("missing or wrong secret".into())
    }

    /// `unknown_module`: nothing is registered under `module`.
    pub fn unknown_module(module: &str) -> MeshError {
        MeshError::UnknownModule(format!(
            "no actor type is registered under module `{module}`"
        ))
    }

    /// `payload_too_large`: the body exceeds `limit` bytes.
    pub fn payload_too_large(limit: usize) -> MeshError {
        MeshError::PayloadTooLarge(format!("request body exceeds the limit of {limit} bytes"))
    }

    /// `request_timeout`: the body did not arrive within `timeout`.
    pub fn request_timeout(timeout: Duration) -> MeshError {
        MeshError::RequestTimeout(format!(
            "the request body did not arrive within {} ms",
            timeout.as_millis()
        ))
    }

    /// `init_failed`: the actor's init refused, for `reason`.
    pub fn init_failed(reason: &str) -> MeshError {
        MeshError::InitFailed(format!("init rejected init_arg: {reason}"))
    }

    /// `actor_crashed`: the handler panicked with `reason`.
    pub fn actor_crashed(reason: &str) -> MeshError {
        MeshError::ActorCrashed(format!(
            "actor panicked while handling the call ({reason}); it has been restarted"
        ))
    }

    /// `no_capable_node`: no live node registered `capability`.
    pub fn no_capable_node(capability: &str) -> MeshError {
        MeshError::NoCapableNode(format!(
            "no live node has registered capability `{capability}`"
        ))
    }

    /// `timeout`: no reply within `timeout`.
    pub fn timeout(timeout: Duration) -> MeshError {
        MeshError::Timeout(format!("no reply within {} ms", timeout.as_millis()))
    }

    /// The stable code of this error, as written in the contract.
    pub fn code(&self) -> ErrorCode {
        match self {
            MeshError::BadRequest(_) => ErrorCode::BadRequest,
            MeshError::Unauthorized(_) => ErrorCode::Unauthorized,
            MeshError::UnknownModule(_) => ErrorCode::UnknownModule,
            MeshError::RequestTimeout(_) => ErrorCode::RequestTimeout,
            MeshError::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            MeshError::InitFailed(_) => ErrorCode::InitFailed,
            MeshError::ActorCrashed(_) => ErrorCode::ActorCrashed,
            MeshError::NoCapableNode(_) => ErrorCode::NoCapableNode,
            MeshError::OwnerUnavailable(_) => ErrorCode::OwnerUnavailable,
            MeshError::Timeout(_) => ErrorCode::Timeout,
        }
    }

    /// The message for a person.
    pub fn message(&self) -> &str {
        match self {
            MeshError::BadRequest(m)
            | MeshError::Unauthorized(m)
            | MeshError::UnknownModule(m)
            | MeshError::RequestTimeout(m)
            | MeshError::PayloadTooLarge(m)
            | MeshError::InitFailed(m)
            | MeshError::ActorCrashed(m)
            | MeshError::NoCapableNode(m)
            | MeshError::OwnerUnavailable(m)
            | MeshError::Timeout(m) => m,
        }
    }

    /// Rebuilds an error from its code and message, as received from another node.
    pub fn from_code(code: &str, message: &str) -> Option<MeshError> {
        let message = message.to_owned();
        Some(match ErrorCode::parse(code)? {
            ErrorCode::BadRequest => MeshError::BadRequest(message),
            ErrorCode::Unauthorized => MeshError::Unauthorized(message),
            ErrorCode::UnknownModule => MeshError::UnknownModule(message),
            ErrorCode::RequestTimeout => MeshError::RequestTimeout(message),
            ErrorCode::PayloadTooLarge => MeshError::PayloadTooLarge(message),
            ErrorCode::InitFailed => MeshError::InitFailed(message),
            ErrorCode::ActorCrashed => MeshError::ActorCrashed(message),
            ErrorCode::NoCapableNode => MeshError::NoCapableNode(message),
            ErrorCode::OwnerUnavailable => MeshError::OwnerUnavailable(message),
            ErrorCode::Timeout => MeshError::Timeout(message),
        })
    }
}

/// The stable error codes of the contract, with their HTTP statuses.
///
/// ```
/// use mesh_core::ErrorCode;
///
/// assert_eq!(ErrorCode::Timeout.as_str(), "timeout");
/// assert_eq!(ErrorCode::Timeout.http_status(), 504);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 400 `bad_request`
    BadRequest,
    /// 401 `unauthorized`
    Unauthorized,
    /// 404 `unknown_module`
    UnknownModule,
    /// 408 `request_timeout` (beyond the contract's table)
    RequestTimeout,
    /// 413 `payload_too_large`
    PayloadTooLarge,
    /// 422 `init_failed`
    InitFailed,
    /// 500 `actor_crashed`
    ActorCrashed,
    /// 503 `no_capable_node`
    NoCapableNode,
    /// 503 `owner_unavailable`
    OwnerUnavailable,
    /// 504 `timeout`
    Timeout,
}

impl ErrorCode {
    /// Every code, in the contract's order (and `request_timeout` by its status).
    pub const ALL: [ErrorCode; 10] = [
        ErrorCode::BadRequest,
        ErrorCode::Unauthorized,
        ErrorCode::UnknownModule,
        ErrorCode::RequestTimeout,
        ErrorCode::PayloadTooLarge,
        ErrorCode::InitFailed,
        ErrorCode::ActorCrashed,
        ErrorCode::NoCapableNode,
        ErrorCode::OwnerUnavailable,
        ErrorCode::Timeout,
    ];

    /// The code as it appears in JSON error bodies and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::UnknownModule => "unknown_module",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::InitFailed => "init_failed",
            ErrorCode::ActorCrashed => "actor_crashed",
            ErrorCode::NoCapableNode => "no_capable_node",
            ErrorCode::OwnerUnavailable => "owner_unavailable",
            ErrorCode::Timeout => "timeout",
        }
    }

    /// The HTTP status the contract assigns to this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::UnknownModule => 404,
            ErrorCode::RequestTimeout => 408,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::InitFailed => 422,
            ErrorCode::ActorCrashed => 500,
            ErrorCode::NoCapableNode | ErrorCode::OwnerUnavailable => 503,
            ErrorCode::Timeout => 504,
        }
    }

    /// Parses a code written by [`ErrorCode::as_str`].
    pub fn parse(code: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses_follow_the_contract_table() {
        let table = [
            (400, "bad_request"),
            (401, "unauthorized"),
            (404, "unknown_module"),
            (408, "request_timeout"),
            (413, "payload_too_large"),
            (422, "init_failed"),
            (500, "actor_crashed"),
            (503, "no_capable_node"),
            (503, "owner_unavailable"),
            (504, "timeout"),
        ];
        let actual: Vec<_> = ErrorCode::ALL
            .iter()
            .map(|c| (c.http_status(), c.as_str()))
            .collect();
        assert_eq!(actual, table);
    }

    #[test]
    fn every_code_round_trips_through_its_name() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            let err = MeshError::from_code(code.as_str(), "why").unwrap();
            assert_eq!(err.code(), code);
            assert_eq!(
                err.to_string(),
                "why",
                "a remote message is kept word for word"
            );
        }
        assert_eq!(ErrorCode::parse("nope"), None);
    }
}
