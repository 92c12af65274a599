//! Stage authenticate: the route's accepted methods are tried in order; the first success puts
//! the principal in the request context. A public route skips this stage; any other route without
//! a verified identity ends here with 401 (or 503 when the identity provider is down: fail closed).
//!
//! The identity headers the upstream receives are set in the transform stage ([`forward_identity`]),
//! which also removes any copy a client sent, on every route.

use std::sync::Arc;

use http::header::AUTHORIZATION;
use http::HeaderMap;
use palisade_auth::identity::InternalSigner;
use palisade_auth::{Authenticator, Principal};

use crate::context::ConnectionInfo;
use crate::pipeline::forwarded::remove_where;
use crate::respond::GatewayError;
use crate::runtime::RouteRuntime;

pub async fn authenticate(
    authenticator: &Authenticator,
    route: &RouteRuntime,
    headers: &HeaderMap,
    connection: &ConnectionInfo,
) -> Result<Option<Arc<Principal>>, GatewayError> {
    let Some(auth) = &route.auth else {
        return Ok(None);
    };
    let outcome = authenticator
        .authenticate(auth, headers, connection.client_certificate.as_ref())
        .await;
    let metrics = route.auth_metrics.as_ref();
    match outcome {
        Ok(principal) => {
            metrics.inspect(|m| m.authenticated(principal.method.as_str()));
            Ok(Some(principal))
        }
        Err(failure) => {
            metrics.inspect(|m| m.refused(failure.reason(), failure.is_unavailable()));
            if failure.is_unavailable() {
                Err(GatewayError::AuthUnavailable)
            } else {
                Err(GatewayError::Unauthenticated {
                    failure,
                    challenge: authenticator.challenge(auth, failure),
                })
            }
        }
    }
}

/// The subject a refused bearer token claimed (unverified), for the detectors that count attacks on
/// one account. Only read after the credential was refused; never used for access.
pub fn attempted_subject(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    palisade_auth::jwt::unverified_subject(token.trim())
}

/// Removes client-sent identity headers, the API key (unless `api_keys.forward`) and
/// `Authorization` (when configured), then sets the
/// principal's. Runs on every route, public ones included, so that no client can pose as verified.
pub fn forward_identity(
    authenticator: &Authenticator,
    signer: &InternalSigner,
    headers: &mut HeaderMap,
    principal: Option<&Principal>,
) {
    let identity = &authenticator.identity;
    // A scan of the request's keys (a lookup by the configured API key header's name would parse that
    // name on every request).
    let api_key_header = (!authenticator.forward_api_key).then_some(authenticator.api_key_header.as_str());
    remove_where(headers, |name| {
        identity.is_protected(name)
            || (identity.strip_authorization && *name == AUTHORIZATION)
            || api_key_header.is_some_and(|api_key| name.as_str().eq_ignore_ascii_case(api_key))
    });
    if let Some(principal) = principal {
        for (name, value) in identity.render(principal, signer) {
            headers.insert(name, value);
        }
    }
}
