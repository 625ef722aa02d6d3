//! What the fuzz targets assert, shared with the stable test that runs their seed corpus
//! (`mesh-core/tests/fuzz_corpus.rs` includes this file), so both check the same thing.

use mesh_core::{ErrorCode, MeshError, Request};

/// Parses `body` as a `/call` or `/cast` body (the request parser of every node) and checks the
/// contract: the outcome is a request or a `bad_request` with a message, never a panic; and a
/// parsed request's own JSON (what a hop sends) parses again.
pub fn request(body: &[u8]) -> Result<Request, MeshError> {
    let parsed = Request::from_json(body);
    match &parsed {
        Ok(request) => {
            let hop = serde_json::to_vec(&request.to_json(None)).expect("a request serializes");
            if let Err(e) = Request::from_json(&hop) {
                panic!("a parsed request's own JSON is refused: {e}");
            }
        }
        Err(e) => {
            assert_eq!(e.code(), ErrorCode::BadRequest, "{e}");
            assert!(
                !e.to_string().trim().is_empty(),
                "an error without a message"
            );
        }
    }
    parsed
}
