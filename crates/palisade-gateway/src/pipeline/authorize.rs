//! Stage 4, authorize: default deny. An authenticated request passes only when its route's
//! authorization allows the principal (a rule, or `allow: authenticated`); otherwise 403, whose body
//! does not say which rule would have allowed it. The deciding rule is recorded in the context for
//! the access log and counted by route and outcome.

use http::Method;

use crate::context::RequestContext;
use crate::respond::GatewayError;
use crate::runtime::RouteRuntime;

pub fn authorize(route: &RouteRuntime, method: &Method, context: &mut RequestContext) -> Result<(), GatewayError> {
    let (Some(rules), Some(principal)) = (&route.authorization, &context.principal) else {
        // Public routes have neither; validation guarantees an authenticated route has rules.
        return Ok(());
    };
    let decision = rules.decide(principal, method);
    if let Some(metrics) = &route.auth_metrics {
        metrics.authorized(decision.allowed, &decision.decided_by);
    }
    context.decided_by = Some(decision.decided_by);
    if decision.allowed {
        Ok(())
    } else {
        Err(GatewayError::Forbidden)
    }
}
