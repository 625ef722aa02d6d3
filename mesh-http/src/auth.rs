//! The optional shared secret, and who may use each route: every resource [`crate::routes`]
//! mounts declares its [`Access`], and [`Guard`] (middleware on the resource) refuses a client
//! without the secret before any handler runs, so a new route cannot forget to.

use std::future::{ready, Ready};
use std::task::{Context, Poll};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{HeaderMap, AUTHORIZATION};
use actix_web::http::Method;
use actix_web::ResponseError;
use futures_util::future::{Either, MapOk, TryFutureExt};
use mesh_actix::provider::FrontEnd;
use mesh_actix::{Delivery, MeshError};

use crate::error::HttpError;
use crate::routes::Shared;

/// Who may use a route when the node has a secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// Anyone: the probes, the metrics, the OpenAPI document and the dashboard's page (which
    /// holds no data; its reading needs the secret).
    Open,
    /// Clients carrying the secret, else `401 unauthorized` (a wrong method too: a client
    /// without the secret learns nothing of the route). A refused call or cast (a `POST`) is
    /// counted in the request metrics under its [`Delivery`].
    Secret(Option<Delivery>),
    /// Other nodes: a hop's signature covers its body, so it is checked where the body is read
    /// (`State::hop_body`), not here.
    Signed,
}

/// Middleware: enforces a resource's [`Access`].
pub(crate) struct Guard {
    pub(crate) access: Access,
    pub(crate) state: Shared,
}

impl<S, B> Transform<S, ServiceRequest> for Guard
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = actix_web::Error;
    type Transform = GuardService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(GuardService {
            service,
            access: self.access,
            state: self.state.clone(),
        }))
    }
}

pub(crate) struct GuardService<S> {
    service: S,
    access: Access,
    state: Shared,
}

type Boxed<B> = fn(ServiceResponse<B>) -> ServiceResponse<BoxBody>;

impl<S, B> Service<ServiceRequest> for GuardService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<BoxBody>;
    type Error = actix_web::Error;
    // No allocation: a refusal is ready at once, anything else is the route's own future.
    type Future =
        Either<Ready<Result<ServiceResponse, actix_web::Error>>, MapOk<S::Future, Boxed<B>>>;

    fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.service.poll_ready(cx)
    }

    fn call(&self, req: ServiceRequest) -> Self::Future {
        if let (Access::Secret(counted), Some(secret)) = (self.access, &self.state.secret()) {
            if !carries_secret(req.headers(), secret) {
                let error = MeshError::unauthorized();
                // A wrong method is no call or cast to count.
                if let (Some(delivery), &Method::POST) = (counted, req.method()) {
                    self.state.mesh.record_rejection(delivery, &error);
                }
                let response = HttpError(error).error_response();
                return Either::Left(ready(Ok(req.into_response(response))));
            }
        }
        let boxed: Boxed<B> = ServiceResponse::map_into_boxed_body;
        Either::Right(self.service.call(req).map_ok(boxed))
    }
}

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
