//! Reading a request body under a size limit.

use actix_web::http::header::CONTENT_LENGTH;
use actix_web::{web, HttpRequest};
use futures_util::StreamExt;
use mesh_actix::MeshError;

/// Reads the whole body, failing with `payload_too_large` as soon as it exceeds `limit`
/// (at once when `Content-Length` says so) and with `bad_request` if the stream breaks.
pub(crate) async fn read_limited(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, MeshError> {
    let too_large = || MeshError::payload_too_large(limit);
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(0));
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| MeshError::BadRequest(format!("could not read the body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
