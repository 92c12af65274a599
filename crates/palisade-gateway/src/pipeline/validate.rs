//! Stage validate: on routes with `validate`, the request must match its OpenAPI operation.
//! Parameters, headers and `Content-Type` are checked from the head; a JSON body is then read (up to
//! the route's body limit — only these routes buffer bodies), checked, and forwarded as read.
//! Violations → 400 problem+json listing them with JSON pointers (at most `max_violations`).

use bytes::Bytes;
use http::Request;
use http_body::Body;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use palisade_validate::{BodyRules, RequestView};

use crate::context::RequestContext;
use crate::respond::GatewayError;
use crate::runtime::RouteRuntime;
use crate::upstream::ProxyBody;

/// Checks the request head; `Some(rules)` when the body must be checked with them as well.
pub fn check_head<'r>(
    route: &'r RouteRuntime,
    request: &Request<Incoming>,
    context: &RequestContext,
) -> Result<Option<&'r BodyRules>, GatewayError> {
    let Some(validator) = &route.validator else {
        return Ok(None);
    };
    let view = RequestView {
        method: request.method(),
        path_params: &context.params,
        query: request.uri().query(),
        headers: request.headers(),
        has_body: !request.body().is_end_stream(),
    };
    validator.check(&view).map_err(GatewayError::Invalid)
}

/// Reads the whole (already size-limited) body, checks it, and returns it for the upstream.
pub async fn check_body(
    rules: &BodyRules,
    content_type: Option<&str>,
    body: ProxyBody,
) -> Result<ProxyBody, GatewayError> {
    let bytes: Bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if crate::pipeline::body_limit::caused_by_limit(error.as_ref()) => {
            return Err(GatewayError::PayloadTooLarge)
        }
        Err(_) => return Err(GatewayError::BadRequest("incomplete_body")),
    };
    let violations = rules.check(content_type, &bytes);
    if !violations.is_empty() {
        return Err(GatewayError::Invalid(violations));
    }
    Ok(Full::new(bytes).map_err(|never| match never {}).boxed())
}
