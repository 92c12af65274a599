//! Stage authorize: default deny. An authenticated request passes only when its route's
//! authorization allows the principal (a rule, or `allow: authenticated`); otherwise 403, whose body
//! does not say which rule would have allowed it. The deciding rule is recorded in the context for
//! the access log and counted by route and outcome.

use http::{HeaderMap, Method};
use palisade_authz::RequestFacts;

use crate::context::{ConnectionInfo, RequestContext};
use crate::respond::GatewayError;
use crate::runtime::RouteRuntime;

pub fn authorize(
    route: &RouteRuntime,
    method: &Method,
    headers: &HeaderMap,
    connection: &ConnectionInfo,
    context: &mut RequestContext,
) -> Result<(), GatewayError> {
    let (Some(rules), Some(principal)) = (&route.authorization, &context.principal) else {
        // Public routes have neither; validation guarantees an authenticated route has rules.
        return Ok(());
    };
    let mtls_identity = connection
        .client_certificate
        .as_ref()
        .and_then(|certificate| certificate.as_ref().ok())
        .map(|principal| principal.subject.as_str());
    let facts = RequestFacts {
        principal,
        method,
        route: &route.name,
        path: &context.path,
        params: &context.params,
        client_ip: context.client_ip,
        headers,
        mtls_identity,
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs()),
    };
    let decision = rules.decide(&facts);
    if let Some(metrics) = &route.auth_metrics {
        metrics.authorized(decision.allowed, &decision.decided_by);
    }
    context.decided_by = Some(decision.decided_by);
    match (decision.allowed, decision.evaluation_failed) {
        (true, _) => Ok(()),
        (false, false) => Err(GatewayError::Forbidden),
        (false, true) => Err(GatewayError::PolicyFailed),
    }
}
