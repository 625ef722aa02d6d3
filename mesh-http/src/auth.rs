//! The optional shared secret.

use actix_web::http::header::{HeaderMap, AUTHORIZATION};

/// The header that may carry the secret instead of `Authorization`.
pub(crate) const SECRET_HEADER: &str = "x-mesh-secret";

/// Whether the request carries `secret`, as `Authorization: Bearer <secret>`,
/// `Authorization: <secret>` or `x-mesh-secret: <secret>`.
pub(crate) fn carries_secret(headers: &HeaderMap, secret: &str) -> bool {
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| match v.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case("bearer ") => &v[7..],
            _ => v,
        });
    let plain = headers.get(SECRET_HEADER).and_then(|v| v.to_str().ok());
    [bearer, plain]
        .into_iter()
        .flatten()
        .any(|offered| constant_time_eq(offered.as_bytes(), secret.as_bytes()))
}

/// Compares without an early exit, so response timing does not reveal a prefix of the secret.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn accepts_the_secret_in_authorization_or_the_mesh_header_and_nothing_else() {
        assert!(carries_secret(
            &headers(&[("authorization", "Bearer s3cret")]),
            "s3cret"
        ));
        assert!(carries_secret(
            &headers(&[("x-mesh-secret", "s3cret")]),
            "s3cret"
        ));
        assert!(!carries_secret(
            &headers(&[("authorization", "Bearer s3cre")]),
            "s3cret"
        ));
        assert!(carries_secret(
            &headers(&[("authorization", "s3cret")]),
            "s3cret"
        ));
        assert!(carries_secret(
            &headers(&[("authorization", "bearer s3cret")]),
            "s3cret"
        ));
        assert!(!carries_secret(
            &headers(&[("authorization", "Basic s3cret")]),
            "s3cret"
        ));
        assert!(!carries_secret(
            &headers(&[("x-mesh-secret", "Bearer s3cret")]),
            "s3cret"
        ));
        assert!(!carries_secret(&headers(&[]), "s3cret"));
    }
}
