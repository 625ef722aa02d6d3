//! Reading a request body under a size limit and a time limit.

use actix_web::http::header::CONTENT_LENGTH;
use actix_web::{web, HttpRequest};
use futures_util::StreamExt;
use mesh_actix::MeshError;

/// Reads the whole body, failing with `payload_too_large` as soon as it exceeds `limit`
/// (at once when `Content-Length` says so), with `bad_request` if the stream breaks, and with
/// `request_timeout` if it has not arrived completely within `timeout` (a stalled or
/// trickled body must not hold its connection for ever).
pub(crate) async fn read_limited(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<web::Bytes, MeshError> {
    tokio::time::timeout(timeout, read_within(req, payload, limit))
        .await
        .unwrap_or_else(|_| Err(MeshError::request_timeout(timeout)))
}

async fn read_within(
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

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::time::Duration;

    use actix_web::error::PayloadError;
    use actix_web::test::TestRequest;
    use actix_web::{dev, FromRequest};
    use futures_util::stream::{self, Stream};

    use super::*;

    type Chunks = Pin<Box<dyn Stream<Item = Result<web::Bytes, PayloadError>>>>;

    /// Reads `body` through `read_limited` as a request with `Content-Length` would carry it.
    async fn read_sized(body: &'static [u8], limit: usize) -> Result<web::Bytes, MeshError> {
        let (req, mut payload) = TestRequest::post().set_payload(body).to_http_parts();
        let payload = web::Payload::from_request(&req, &mut payload)
            .await
            .unwrap();
        read_limited(&req, payload, limit, Duration::from_secs(10)).await
    }

    /// Reads a chunked stream, with `declared` as its `Content-Length` if any.
    async fn read_stream(
        chunks: Chunks,
        declared: Option<usize>,
        limit: usize,
    ) -> Result<web::Bytes, MeshError> {
        let mut request = TestRequest::post();
        if let Some(n) = declared {
            request = request.insert_header((CONTENT_LENGTH, n));
        }
        let (req, _) = request.to_http_parts();
        let mut payload = dev::Payload::Stream { payload: chunks };
        let payload = web::Payload::from_request(&req, &mut payload)
            .await
            .unwrap();
        read_limited(&req, payload, limit, Duration::from_secs(10)).await
    }

    fn chunks(parts: &[&'static [u8]]) -> Chunks {
        let items: Vec<Result<web::Bytes, PayloadError>> = parts
            .iter()
            .map(|p| Ok(web::Bytes::from_static(p)))
            .collect();
        Box::pin(stream::iter(items))
    }

    /// A stream that fails if it is ever read.
    fn broken() -> Chunks {
        Box::pin(stream::iter([Err(PayloadError::Incomplete(None))]))
    }

    #[actix_web::test]
    async fn accepts_a_body_of_exactly_the_limit() {
        assert_eq!(read_sized(b"12345", 5).await.unwrap(), &b"12345"[..]);
        assert_eq!(read_sized(b"", 0).await.unwrap(), &b""[..]);
        let streamed = read_stream(chunks(&[b"12", b"345"]), None, 5).await;
        assert_eq!(streamed.unwrap(), &b"12345"[..]);
    }

    #[actix_web::test]
    async fn rejects_one_byte_over_the_limit() {
        assert_eq!(
            read_sized(b"123456", 5).await,
            Err(MeshError::payload_too_large(5))
        );
        // Without a Content-Length, while streaming.
        let streamed = read_stream(chunks(&[b"123", b"456"]), None, 5).await;
        assert_eq!(streamed, Err(MeshError::payload_too_large(5)));
    }

    #[actix_web::test]
    async fn rejects_a_declared_length_over_the_limit_before_reading() {
        // The body is never read: reading it would fail with bad_request.
        let early = read_stream(broken(), Some(6), 5).await;
        assert_eq!(early, Err(MeshError::payload_too_large(5)));
        // A declared length within the limit reads on, and reports the broken stream.
        let read = read_stream(broken(), Some(5), 5).await;
        assert!(
            matches!(read, Err(MeshError::BadRequest(ref m)) if m.starts_with("could not read the body")),
            "{read:?}"
        );
    }

    #[actix_web::test]
    async fn a_body_that_stalls_is_a_request_timeout() {
        let stalled: Chunks =
            Box::pin(stream::iter([Ok(web::Bytes::from_static(b"12"))]).chain(stream::pending()));
        let (req, _) = TestRequest::post()
            .insert_header((CONTENT_LENGTH, 1000))
            .to_http_parts();
        let mut payload = dev::Payload::Stream { payload: stalled };
        let payload = web::Payload::from_request(&req, &mut payload)
            .await
            .unwrap();
        let read = read_limited(&req, payload, 5000, Duration::from_millis(50)).await;
        assert_eq!(
            read,
            Err(MeshError::request_timeout(Duration::from_millis(50)))
        );
    }
}
