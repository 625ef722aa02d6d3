//! The one place where mesh errors become HTTP responses.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use mesh_actix::MeshError;
use serde_json::json;

/// The header of a node-to-node 503 that names why the request was certainly not executed
/// (a [`Refusal`](mesh_actix::provider::Refusal)): its sender may route it again.
pub const REFUSAL_HEADER: &str = "x-mesh-refusal";

/// A [`MeshError`] as an HTTP response: the contract's status for its code and the body
/// `{"error": {"code": "...", "message": "..."}}`.
///
/// ```
/// use actix_web::ResponseError;
/// use mesh_actix::MeshError;
/// use mesh_http::HttpError;
///
/// let error = HttpError(MeshError::no_capable_node("counter"));
/// assert_eq!(error.status_code().as_u16(), 503);
/// ```
#[derive(Debug)]
pub struct HttpError(pub MeshError);

impl From<MeshError> for HttpError {
    fn from(e: MeshError) -> HttpError {
        HttpError(e)
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ResponseError for HttpError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.0.code().http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = error_body(
            self.status_code(),
            self.0.code().as_str(),
            &self.0.to_string(),
        );
        if self.0.code() == mesh_actix::ErrorCode::RequestTimeout {
            // The rest of a stalled body may never come: the connection goes, not just the
            // request.
            response
                .head_mut()
                .set_connection_type(actix_web::http::ConnectionType::Close);
        }
        response
    }
}

/// An error response in the contract's shape, also for codes outside the mesh's own table
/// (`not_found`, `method_not_allowed`).
pub(crate) fn error_body(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({"error": {"code": code, "message": message}}))
}

#[cfg(test)]
mod tests {
    use actix_web::body::to_bytes;
    use actix_web::http::header::CONTENT_TYPE;
    use mesh_actix::ErrorCode;
    use serde_json::Value;

    use super::*;

    /// The error table of the contract, written out rather than read from `ErrorCode`.
    const CONTRACT: [(&str, u16); 10] = [
        ("bad_request", 400),
        ("unauthorized", 401),
        ("unknown_module", 404),
        ("request_timeout", 408),
        ("payload_too_large", 413),
        ("init_failed", 422),
        ("actor_crashed", 500),
        ("no_capable_node", 503),
        ("owner_unavailable", 503),
        ("timeout", 504),
    ];

    async fn json_body(response: HttpResponse) -> Value {
        let bytes = to_bytes(response.into_body()).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[actix_web::test]
    async fn every_code_gets_the_contracts_status_and_body() {
        assert_eq!(
            CONTRACT.len(),
            ErrorCode::ALL.len(),
            "the table covers every code"
        );
        let message = "owner said: \"no\" — ünïcode, {braces}";
        for (code, status) in CONTRACT {
            let error = HttpError::from(MeshError::from_code(code, message).unwrap());
            assert_eq!(error.status_code().as_u16(), status, "{code}");
            assert_eq!(error.to_string(), message);
            let response = error.error_response();
            assert_eq!(response.status().as_u16(), status, "{code}");
            assert_eq!(
                response.headers().get(CONTENT_TYPE).unwrap(),
                "application/json"
            );
            assert_eq!(
                json_body(response).await,
                json!({"error": {"code": code, "message": message}}),
                "{code}"
            );
        }
    }

    #[actix_web::test]
    async fn the_message_is_the_errors_own_word_for_word() {
        let errors = [
            MeshError::unauthorized(),
            MeshError::payload_too_large(1024),
            MeshError::timeout(std::time::Duration::from_millis(250)),
            MeshError::no_capable_node("counter"),
        ];
        for error in errors {
            let expected =
                json!({"error": {"code": error.code().as_str(), "message": error.message()}});
            let response = HttpError(error).error_response();
            assert_eq!(json_body(response).await, expected);
        }
    }

    #[actix_web::test]
    async fn error_body_renders_codes_outside_the_mesh_table() {
        let response = error_body(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "no");
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            json_body(response).await,
            json!({"error": {"code": "method_not_allowed", "message": "no"}})
        );
    }
}
