//! The one place where mesh errors become HTTP responses.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use mesh_actix::MeshError;
use serde_json::json;

/// A [`MeshError`] as an HTTP response: the contract's status for its code and the body
/// `{"error": {"code": "...", "message": "..."}}`.
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
        error_body(
            self.status_code(),
            self.0.code().as_str(),
            &self.0.to_string(),
        )
    }
}

/// An error response in the contract's shape, also for codes outside the mesh's own table
/// (`not_found`, `method_not_allowed`).
pub(crate) fn error_body(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({"error": {"code": code, "message": message}}))
}
