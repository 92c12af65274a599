//! The one place where a gateway error becomes a response: status, RFC 9457 body, reason code.
//! Bodies describe the problem in general terms and never include internal addresses or raw input.

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use palisade_auth::AuthFailure;
use palisade_core::decision::{Decision, Fault, Stage};
use palisade_core::problem::{self, Problem};
use palisade_telemetry::tally::RefusalKind;

use crate::pipeline::normalize::PathError;
use crate::upstream::ProxyBody;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayError {
    /// Ambiguous or invalid message framing (request smuggling defence); the connection is closed.
    BadFraming(&'static str),
    BadPath(PathError),
    BadRequest(&'static str),
    NotFound,
    MethodNotAllowed(String),
    /// No verified identity; `challenge` is the `WWW-Authenticate` value.
    Unauthenticated {
        failure: AuthFailure,
        challenge: String,
    },
    /// Authenticated, but no rule allows this principal here.
    Forbidden,
    /// A Cedar `forbid` failed to evaluate and denied (fail closed); the client sees a plain 403.
    PolicyFailed,
    /// The identity provider is unreachable and nothing cached can answer (fail closed).
    AuthUnavailable,
    /// The client address is on a deny list or missing from an allow list.
    IpDenied,
    /// An active response (an alert's automatic block, or an operator's) blocks this client address.
    ClientBlocked,
    /// An active response blocks this principal.
    PrincipalBlocked,
    /// The workload identity of the connection's client certificate is quarantined (a runtime
    /// alert, or an operator): refused on every route.
    WorkloadQuarantined,
    /// The cluster's expected SPIFFE identity is quarantined: nothing is sent to it.
    DestinationQuarantined,
    /// A rate limit of the route is exhausted for this caller.
    RateLimited {
        retry_after_secs: u64,
    },
    /// The route already has `max_in_flight` requests in progress.
    TooManyInFlight,
    /// The shared rate-limit store is unreachable and `on_store_error: deny` refuses: not the
    /// caller's limit, the gateway's dependency.
    LimitStoreUnavailable {
        retry_after_secs: u64,
    },
    /// A CORS preflight from an origin, for a method or with headers the route does not allow.
    CorsRejected,
    /// The route is retired; `successor` is where its callers should go.
    Gone {
        successor: Option<String>,
    },
    /// The request does not match the route's OpenAPI operation.
    Invalid(Vec<palisade_core::problem::Violation>),
    PayloadTooLarge,
    NoHealthyUpstream,
    UpstreamUnreachable,
    /// The upstream's certificate did not verify (or it refused ours).
    UpstreamTls,
    UpstreamTimeout,
    UpstreamFailed,
    /// The client's request body broke off or was malformed while it was streamed upstream
    /// (`client_closed`: the connection ended or was reset mid-body; `invalid_body`: bad chunk
    /// framing). The client's fault: never counted against the upstream, never retried.
    ClientBody(&'static str),
    /// The upstream's answer timed out while the client had not finished sending the body.
    ClientBodyTimeout,
}

impl GatewayError {
    /// How the console's decision chart counts this refusal, if it is one it charts.
    pub fn refusal_kind(&self) -> Option<RefusalKind> {
        Some(match self {
            GatewayError::BadFraming(_)
            | GatewayError::BadPath(_)
            | GatewayError::BadRequest(_)
            | GatewayError::ClientBody(_)
            | GatewayError::Invalid(_) => RefusalKind::BadRequest,
            GatewayError::Unauthenticated { .. } => RefusalKind::Unauthenticated,
            GatewayError::Forbidden
            | GatewayError::PolicyFailed
            | GatewayError::IpDenied
            | GatewayError::CorsRejected => RefusalKind::Forbidden,
            GatewayError::ClientBlocked | GatewayError::PrincipalBlocked | GatewayError::WorkloadQuarantined => {
                RefusalKind::Blocked
            }
            GatewayError::RateLimited { .. } => RefusalKind::RateLimited,
            _ => return None,
        })
    }

    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::BadFraming(_)
            | GatewayError::BadPath(_)
            | GatewayError::BadRequest(_)
            | GatewayError::ClientBody(_)
            | GatewayError::Invalid(_) => StatusCode::BAD_REQUEST,
            GatewayError::NotFound => StatusCode::NOT_FOUND,
            GatewayError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            GatewayError::Forbidden
            | GatewayError::PolicyFailed
            | GatewayError::IpDenied
            | GatewayError::CorsRejected
            | GatewayError::ClientBlocked
            | GatewayError::PrincipalBlocked
            | GatewayError::WorkloadQuarantined => StatusCode::FORBIDDEN,
            GatewayError::DestinationQuarantined => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Gone { .. } => StatusCode::GONE,
            GatewayError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::TooManyInFlight | GatewayError::LimitStoreUnavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            GatewayError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::NoHealthyUpstream | GatewayError::AuthUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::UpstreamUnreachable | GatewayError::UpstreamTls | GatewayError::UpstreamFailed => {
                StatusCode::BAD_GATEWAY
            }
            GatewayError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::ClientBodyTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// Stable reason code for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            GatewayError::BadFraming(reason) | GatewayError::BadRequest(reason) | GatewayError::ClientBody(reason) => {
                reason
            }
            GatewayError::BadPath(error) => error.reason(),
            GatewayError::NotFound => "no_route",
            GatewayError::MethodNotAllowed(_) => "method_not_allowed",
            GatewayError::Unauthenticated { failure, .. } => failure.reason(),
            GatewayError::AuthUnavailable => AuthFailure::ProviderUnavailable.reason(),
            GatewayError::Forbidden => "forbidden",
            GatewayError::PolicyFailed => "policy_evaluation_failed",
            GatewayError::IpDenied => "ip_denied",
            GatewayError::ClientBlocked => "client_blocked",
            GatewayError::PrincipalBlocked => "principal_blocked",
            GatewayError::WorkloadQuarantined => "workload_quarantined",
            GatewayError::DestinationQuarantined => "destination_quarantined",
            GatewayError::RateLimited { .. } => "rate_limited",
            GatewayError::TooManyInFlight => "too_many_in_flight",
            GatewayError::LimitStoreUnavailable { .. } => "limit_store_unavailable",
            GatewayError::CorsRejected => "cors_rejected",
            GatewayError::Gone { .. } => "retired",
            GatewayError::Invalid(_) => "validation_failed",
            GatewayError::PayloadTooLarge => "body_too_large",
            GatewayError::NoHealthyUpstream => "no_healthy_upstream",
            GatewayError::UpstreamUnreachable => "upstream_unreachable",
            GatewayError::UpstreamTls => "upstream_tls_failed",
            GatewayError::UpstreamTimeout => "upstream_timeout",
            GatewayError::UpstreamFailed => "upstream_failed",
            GatewayError::ClientBodyTimeout => "client_body_timeout",
        }
    }

    /// Which stage decided and whose fault the answer is, with the reason code.
    pub fn decision(&self) -> Decision {
        let (stage, fault) = match self {
            GatewayError::BadFraming(_) | GatewayError::BadPath(_) | GatewayError::BadRequest(_) => {
                (Stage::Normalize, Fault::Client)
            }
            GatewayError::NotFound | GatewayError::MethodNotAllowed(_) => (Stage::Route, Fault::Client),
            GatewayError::Unauthenticated { .. } | GatewayError::PrincipalBlocked => {
                (Stage::Authenticate, Fault::Client)
            }
            GatewayError::AuthUnavailable => (Stage::Authenticate, Fault::Gateway),
            GatewayError::Forbidden | GatewayError::PolicyFailed => (Stage::Authorize, Fault::Client),
            GatewayError::IpDenied => (Stage::IpRules, Fault::Client),
            GatewayError::ClientBlocked | GatewayError::WorkloadQuarantined => (Stage::Responses, Fault::Client),
            // The gateway's own decision about a destination: never counted against the target.
            GatewayError::DestinationQuarantined => (Stage::Upstream, Fault::Gateway),
            GatewayError::RateLimited { .. } => (Stage::RateLimit, Fault::Client),
            GatewayError::TooManyInFlight | GatewayError::LimitStoreUnavailable { .. } => {
                (Stage::RateLimit, Fault::Gateway)
            }
            GatewayError::CorsRejected => (Stage::Cors, Fault::Client),
            GatewayError::Gone { .. } => (Stage::Lifecycle, Fault::Client),
            GatewayError::Invalid(_) => (Stage::Validate, Fault::Client),
            GatewayError::PayloadTooLarge => (Stage::BodyLimit, Fault::Client),
            GatewayError::ClientBody(_) | GatewayError::ClientBodyTimeout => (Stage::Upstream, Fault::Client),
            GatewayError::NoHealthyUpstream
            | GatewayError::UpstreamUnreachable
            | GatewayError::UpstreamTls
            | GatewayError::UpstreamTimeout
            | GatewayError::UpstreamFailed => (Stage::Upstream, Fault::Upstream),
        };
        Decision::new(stage, fault, self.reason())
    }

    fn problem(&self) -> Problem {
        let status = self.status();
        match self {
            GatewayError::BadFraming(_) => Problem::new(status, "bad-framing", "Bad Request")
                .with_detail("The request's Content-Length and Transfer-Encoding headers are ambiguous or invalid."),
            GatewayError::BadPath(_) => {
                Problem::new(status, "bad-path", "Bad Request").with_detail("The request path is not allowed.")
            }
            GatewayError::BadRequest(_) => Problem::new(status, "bad-request", "Bad Request"),
            GatewayError::ClientBody(_) => Problem::new(status, "bad-request-body", "Bad Request")
                .with_detail("The request body ended early or its chunked framing is invalid."),
            GatewayError::NotFound => Problem::new(status, "not-found", "Not Found"),
            GatewayError::MethodNotAllowed(_) => Problem::new(status, "method-not-allowed", "Method Not Allowed"),
            GatewayError::Unauthenticated { failure, .. } => {
                Problem::new(status, "unauthenticated", "Unauthorized").with_detail(failure.description())
            }
            GatewayError::Forbidden | GatewayError::PolicyFailed => Problem::new(status, "forbidden", "Forbidden")
                .with_detail("You are not allowed to perform this request."),
            GatewayError::IpDenied => Problem::new(status, "ip-denied", "Forbidden")
                .with_detail("Requests from your network are not allowed here."),
            GatewayError::ClientBlocked | GatewayError::PrincipalBlocked => {
                Problem::new(status, "temporarily-blocked", "Forbidden")
                    .with_detail("Requests from this client are temporarily blocked.")
            }
            GatewayError::WorkloadQuarantined => Problem::new(status, "workload-quarantined", "Forbidden")
                .with_detail("This workload's identity is quarantined."),
            GatewayError::DestinationQuarantined => {
                Problem::new(status, "destination-quarantined", "Service Unavailable")
                    .with_detail("The service this route leads to is quarantined.")
            }
            GatewayError::RateLimited { .. } => Problem::new(status, "rate-limited", "Too Many Requests")
                .with_detail("You have sent too many requests; retry after the time in the Retry-After header."),
            GatewayError::TooManyInFlight => Problem::new(status, "too-many-in-flight", "Service Unavailable")
                .with_detail("This service is handling as many requests as it can; retry shortly."),
            GatewayError::LimitStoreUnavailable { .. } => {
                Problem::new(status, "rate-limit-store-unavailable", "Service Unavailable").with_detail(
                    "Rate limits cannot be checked right now, so this route refuses requests; retry shortly.",
                )
            }
            GatewayError::Invalid(violations) => Problem::new(status, "validation-failed", "Bad Request")
                .with_detail("The request does not match the API contract; see violations.")
                .with_violations(violations.clone()),
            GatewayError::CorsRejected => Problem::new(status, "cors-rejected", "Forbidden")
                .with_detail("This cross-origin request is not allowed."),
            GatewayError::Gone { successor } => {
                let detail = match successor {
                    Some(successor) => format!("This API version has been retired; use {successor} instead."),
                    None => "This API version has been retired.".to_string(),
                };
                Problem::new(status, "retired", "Gone").with_detail(detail)
            }
            GatewayError::AuthUnavailable => {
                Problem::new(status, "identity-provider-unavailable", "Service Unavailable")
                    .with_detail(AuthFailure::ProviderUnavailable.description())
            }
            GatewayError::PayloadTooLarge => Problem::new(status, "payload-too-large", "Content Too Large")
                .with_detail("The request body exceeds the limit for this route."),
            GatewayError::NoHealthyUpstream => Problem::new(status, "no-healthy-upstream", "Service Unavailable"),
            GatewayError::UpstreamUnreachable => Problem::new(status, "upstream-unreachable", "Bad Gateway"),
            GatewayError::UpstreamTls => Problem::new(status, "upstream-tls-failed", "Bad Gateway"),
            GatewayError::UpstreamTimeout => Problem::new(status, "upstream-timeout", "Gateway Timeout"),
            GatewayError::UpstreamFailed => Problem::new(status, "upstream-failed", "Bad Gateway"),
            GatewayError::ClientBodyTimeout => Problem::new(status, "request-timeout", "Request Timeout")
                .with_detail("The request body did not arrive in time."),
        }
    }

    pub fn into_response(self, request_id: &HeaderValue) -> Response<ProxyBody> {
        let id = request_id.to_str().unwrap_or_default().to_string();
        let body = self.problem().with_request_id(Some(id)).to_json();
        let mut response = problem_response(self.status(), body);
        let headers = response.headers_mut();
        headers.insert(crate::pipeline::forwarded::X_REQUEST_ID, request_id.clone());
        match &self {
            GatewayError::MethodNotAllowed(allow) => {
                if let Ok(value) = HeaderValue::from_str(allow) {
                    headers.insert(ALLOW, value);
                }
            }
            GatewayError::BadFraming(_) | GatewayError::ClientBody(_) | GatewayError::ClientBodyTimeout => {
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            GatewayError::Unauthenticated { challenge, .. } if !challenge.is_empty() => {
                if let Ok(value) = HeaderValue::from_str(challenge) {
                    headers.insert(WWW_AUTHENTICATE, value);
                }
            }
            GatewayError::AuthUnavailable => {
                headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            GatewayError::TooManyInFlight => {
                headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            GatewayError::Gone {
                successor: Some(successor),
            } => {
                if let Ok(value) = HeaderValue::from_str(&format!("<{successor}>; rel=\"successor-version\"")) {
                    headers.insert(http::header::LINK, value);
                }
            }
            GatewayError::RateLimited { retry_after_secs }
            | GatewayError::LimitStoreUnavailable { retry_after_secs } => {
                headers.insert(http::header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            _ => {}
        }
        response
    }
}

/// A body with nothing in it. `Empty` and the mapping are zero-sized, so boxing them allocates nothing.
pub fn empty_body() -> ProxyBody {
    http_body_util::Empty::new().map_err(|never| match never {}).boxed()
}

pub fn problem_response(status: StatusCode, body: Vec<u8>) -> Response<ProxyBody> {
    let mut response = Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(problem::CONTENT_TYPE));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_charts_client_refusals_by_kind_and_nothing_else() {
        assert_eq!(GatewayError::ClientBlocked.refusal_kind(), Some(RefusalKind::Blocked));
        assert_eq!(
            GatewayError::PrincipalBlocked.refusal_kind(),
            Some(RefusalKind::Blocked)
        );
        assert_eq!(
            GatewayError::WorkloadQuarantined.refusal_kind(),
            Some(RefusalKind::Blocked)
        );
        assert_eq!(GatewayError::Forbidden.refusal_kind(), Some(RefusalKind::Forbidden));
        assert_eq!(
            GatewayError::RateLimited { retry_after_secs: 1 }.refusal_kind(),
            Some(RefusalKind::RateLimited)
        );
        assert_eq!(
            GatewayError::BadRequest("x").refusal_kind(),
            Some(RefusalKind::BadRequest)
        );
        for not_a_refusal in [
            GatewayError::NotFound,
            GatewayError::UpstreamFailed,
            GatewayError::NoHealthyUpstream,
            GatewayError::DestinationQuarantined,
            GatewayError::TooManyInFlight,
        ] {
            assert_eq!(not_a_refusal.refusal_kind(), None, "{not_a_refusal:?}");
        }
    }

    /// A deny by a failing policy looks to the client exactly like any other deny; only the reason
    /// code (logs, audit, metrics) tells them apart.
    #[test]
    fn a_failed_policy_answers_the_plain_forbidden_problem() {
        let plain = GatewayError::Forbidden.problem();
        let failed = GatewayError::PolicyFailed.problem();
        assert_eq!(failed.kind, plain.kind);
        assert_eq!(failed.title, plain.title);
        assert_eq!(failed.detail, plain.detail);
        assert_eq!(GatewayError::PolicyFailed.status(), StatusCode::FORBIDDEN);
        assert_ne!(GatewayError::PolicyFailed.reason(), GatewayError::Forbidden.reason());
    }
}
