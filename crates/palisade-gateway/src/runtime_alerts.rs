//! `POST /runtime-alerts/falco` and `POST /runtime-alerts/webhook` on the admin listener: a runtime
//! sensor's alert (Falco, or anything that speaks the generic shape) mapped by the configured rules
//! to a quarantine of the workload's SPIFFE identity, or only recorded. A quarantine is a block on
//! that identity in the responses table: every gateway and sidecar sharing the store refuses it as a
//! caller (its client certificate) and as a destination (a cluster that expects it), until the TTL
//! ends or someone lifts it (admin API, console). Every step is an audit event; a refused alert
//! changes nothing.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode};
use palisade_core::config::runtime_alerts::AlertPriority;
use palisade_detect::runtime::{self, AlertSource, RuntimeDecision};
use palisade_limits::responses::{Action, ActiveResponse, Target};
use palisade_telemetry::{AuditEvent, EventKind};
use subtle::ConstantTimeEq;

use crate::admin::{json, problem_with as problem};
use crate::pipeline::responses::now_secs;
use crate::runtime::Runtime;

/// Alerts received by this process (the audit events' finding ids).
static RECEIVED: AtomicU64 = AtomicU64::new(0);

pub(crate) fn owns(path: &str) -> bool {
    path.starts_with("/runtime-alerts/")
}

fn operation(source: AlertSource) -> &'static str {
    match source {
        AlertSource::Falco => "POST /runtime-alerts/falco",
        AlertSource::Webhook => "POST /runtime-alerts/webhook",
    }
}

/// Everything decided before the body is read: the endpoint, that alerts are accepted at all, the
/// method and the sensor's token. An unauthenticated caller gets its answer without the gateway
/// reading what it sent.
pub(crate) fn admit(
    runtime: &Runtime,
    peer: IpAddr,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<AlertSource, Box<Response<Bytes>>> {
    let source = match path {
        "/runtime-alerts/falco" => AlertSource::Falco,
        "/runtime-alerts/webhook" => AlertSource::Webhook,
        _ => return Err(Box::new(problem(StatusCode::NOT_FOUND, "not-found", "Not Found", None))),
    };
    let operation = operation(source);
    let Some(config) = &runtime.config.runtime_alerts else {
        crate::admin::record_console(runtime, peer, operation, Some("runtime_alerts_not_configured"));
        return Err(Box::new(problem(
            StatusCode::FORBIDDEN,
            "runtime-alerts-disabled",
            "Forbidden",
            Some("Set runtime_alerts in the gateway config to accept runtime alerts.".into()),
        )));
    };
    if method != Method::POST {
        return Err(Box::new(crate::admin::method_not_allowed("POST")));
    }
    if let Err(reason) = check_token(
        config.value.token.value.resolve().ok().as_ref().map(|s| s.expose()),
        headers,
    ) {
        crate::admin::record_console(runtime, peer, operation, Some(reason));
        runtime.metrics.runtime_alert(source.as_str(), "refused");
        let mut response = problem(StatusCode::UNAUTHORIZED, "unauthenticated", "Unauthorized", None);
        response.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer realm=\"palisade-runtime-alerts\""),
        );
        return Err(Box::new(response));
    }
    Ok(source)
}

/// An admitted alert whose body could not be read or is over the size limit: refused like any other
/// invalid alert.
pub(crate) fn unreadable(runtime: &Runtime, peer: IpAddr, source: AlertSource) -> Response<Bytes> {
    crate::admin::record_console(runtime, peer, operation(source), Some("invalid_alert"));
    runtime.metrics.runtime_alert(source.as_str(), "refused");
    let detail = format!(
        "The body is unreadable or larger than {} bytes.",
        runtime::MAX_ALERT_BYTES
    );
    problem(StatusCode::BAD_REQUEST, "invalid-alert", "Bad Request", Some(detail))
}

/// An admitted alert's body, read (at most `MAX_ALERT_BYTES`) and acted on.
pub(crate) fn answer(runtime: &Runtime, peer: IpAddr, source: AlertSource, body: &[u8]) -> Response<Bytes> {
    let operation = operation(source);
    let Some(config) = &runtime.config.runtime_alerts else {
        return problem(StatusCode::FORBIDDEN, "runtime-alerts-disabled", "Forbidden", None);
    };
    let parsed = match source {
        AlertSource::Falco => runtime::parse_falco(body),
        AlertSource::Webhook => runtime::parse_webhook(body),
    };
    let alert = match parsed {
        Ok(alert) => alert,
        Err(error) => {
            crate::admin::record_console(runtime, peer, operation, Some("invalid_alert"));
            runtime.metrics.runtime_alert(source.as_str(), "refused");
            return problem(
                StatusCode::BAD_REQUEST,
                "invalid-alert",
                "Bad Request",
                Some(error.to_string()),
            );
        }
    };
    let id = RECEIVED.fetch_add(1, Ordering::Relaxed) + 1;
    let detector = match source {
        AlertSource::Falco => "runtime_falco",
        AlertSource::Webhook => "runtime_webhook",
    };
    let summary = format!("{}: {} ({})", source.as_str(), alert.rule, alert.priority.as_str());
    match runtime::decide(&alert, &config.value) {
        RuntimeDecision::Record { .. } => {
            let subject = runtime::workload(&alert, &config.value)
                .map(|w| w.spiffe_id)
                .unwrap_or_default();
            record_alert(runtime, id, detector, &subject, alert.priority, &summary);
            runtime.metrics.runtime_alert(source.as_str(), "record");
            json(
                StatusCode::ACCEPTED,
                &serde_json::json!({ "action": "record", "alert_id": id }),
            )
        }
        RuntimeDecision::Quarantine { ttl, .. } => {
            let workload = match runtime::workload(&alert, &config.value) {
                Ok(workload) => workload,
                Err(error) => {
                    crate::admin::record_console(runtime, peer, operation, Some("no_workload_identity"));
                    runtime.metrics.runtime_alert(source.as_str(), "refused");
                    return problem(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "no-workload-identity",
                        "Unprocessable Content",
                        Some(format!("A rule says quarantine, but {error}; nothing was applied.")),
                    );
                }
            };
            record_alert(runtime, id, detector, &workload.spiffe_id, alert.priority, &summary);
            let mut response = ActiveResponse::new(
                Target::Subject(workload.spiffe_id.clone()),
                Action::Block,
                None,
                ttl,
                now_secs(),
            );
            response.source = format!("runtime:{}", source.as_str());
            response.alert_id = Some(id);
            response.reason = match &workload.pod {
                Some(pod) => format!("quarantined: {summary} in pod {}/{pod}", workload.namespace),
                None => format!("quarantined: {summary}"),
            };
            response.reason.truncate(500);
            match crate::detection::take(runtime, response.clone()) {
                Ok(()) => {
                    runtime.metrics.runtime_alert(source.as_str(), "quarantine");
                    json(
                        StatusCode::ACCEPTED,
                        &serde_json::json!({
                            "action": "quarantine",
                            "alert_id": id,
                            "identity": workload.spiffe_id,
                            "response": response,
                        }),
                    )
                }
                Err(error) => problem(
                    StatusCode::CONFLICT,
                    "too-many-responses",
                    "Conflict",
                    Some(error.to_string()),
                ),
            }
        }
    }
}

/// The bearer token against `runtime_alerts.token`, in constant time.
fn check_token(expected: Option<&str>, headers: &HeaderMap) -> Result<(), &'static str> {
    let expected = expected.ok_or("runtime_alerts_token_unreadable")?;
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .ok_or("runtime_alerts_token_missing")?;
    if bool::from(presented.trim().as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err("runtime_alerts_token_invalid")
    }
}

fn record_alert(runtime: &Runtime, id: u64, detector: &str, subject: &str, priority: AlertPriority, summary: &str) {
    let Some(log) = &runtime.audit else {
        return;
    };
    let severity = match priority {
        AlertPriority::Emergency | AlertPriority::Alert | AlertPriority::Critical | AlertPriority::Error => "high",
        AlertPriority::Warning => "medium",
        _ => "low",
    };
    log.record(AuditEvent::for_alert(
        EventKind::AlertOpened,
        id,
        detector,
        subject,
        severity,
        summary,
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_configured_bearer_token_passes() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            check_token(Some("s3cret"), &headers),
            Err("runtime_alerts_token_missing")
        );
        headers.insert("authorization", "Bearer nope".parse().unwrap());
        assert_eq!(
            check_token(Some("s3cret"), &headers),
            Err("runtime_alerts_token_invalid")
        );
        headers.insert("authorization", "Bearer s3cret".parse().unwrap());
        assert_eq!(check_token(Some("s3cret"), &headers), Ok(()));
        assert_eq!(check_token(None, &headers), Err("runtime_alerts_token_unreadable"));
    }
}
