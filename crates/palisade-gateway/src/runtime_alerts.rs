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
use palisade_core::config::runtime_alerts::{AlertPriority, RuntimeAlertsConfig};
use palisade_detect::runtime::{self, AlertSource, RuntimeDecision};
use palisade_limits::responses::{Action, ActiveResponse, Target};
use palisade_telemetry::{AuditEvent, EventKind};

use crate::admin::{json, problem_with as problem, Bearer};
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
pub(crate) fn admit<'a>(
    runtime: &'a Runtime,
    peer: IpAddr,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<(AlertSource, &'a RuntimeAlertsConfig), Box<Response<Bytes>>> {
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
    let token = config.value.token.value.resolve();
    let reason = match token
        .as_ref()
        .map(|token| crate::admin::bearer(headers, token.expose()))
    {
        Ok(Ok(())) => return Ok((source, &config.value)),
        Ok(Err(Bearer::Missing)) => "runtime_alerts_token_missing",
        Ok(Err(Bearer::Wrong)) => "runtime_alerts_token_invalid",
        Err(_) => "runtime_alerts_token_unreadable",
    };
    let mut response = refuse(
        runtime,
        peer,
        source,
        reason,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        None,
    );
    response.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer realm=\"palisade-runtime-alerts\""),
    );
    Err(Box::new(response))
}

/// A refused alert: audited with `reason`, counted, answered with a problem; nothing applied.
fn refuse(
    runtime: &Runtime,
    peer: IpAddr,
    source: AlertSource,
    reason: &'static str,
    status: StatusCode,
    slug: &str,
    detail: Option<String>,
) -> Response<Bytes> {
    crate::admin::record_console(runtime, peer, operation(source), Some(reason));
    runtime.metrics.runtime_alert(source.as_str(), "refused");
    let title = match status {
        // RFC 9110's name; the `http` crate still says "Unprocessable Entity".
        StatusCode::UNPROCESSABLE_ENTITY => "Unprocessable Content",
        _ => status.canonical_reason().unwrap_or("Error"),
    };
    problem(status, slug, title, detail)
}

/// An admitted alert whose body could not be read or is over the size limit: refused like any other
/// invalid alert.
pub(crate) fn unreadable(runtime: &Runtime, peer: IpAddr, source: AlertSource) -> Response<Bytes> {
    let detail = format!(
        "The body is unreadable or larger than {} bytes.",
        runtime::MAX_ALERT_BYTES
    );
    refuse(
        runtime,
        peer,
        source,
        "invalid_alert",
        StatusCode::BAD_REQUEST,
        "invalid-alert",
        Some(detail),
    )
}

/// An admitted alert's body, read (at most `MAX_ALERT_BYTES`) and acted on.
pub(crate) fn answer(
    runtime: &Runtime,
    config: &RuntimeAlertsConfig,
    peer: IpAddr,
    source: AlertSource,
    body: &[u8],
) -> Response<Bytes> {
    let parsed = match source {
        AlertSource::Falco => runtime::parse_falco(body),
        AlertSource::Webhook => runtime::parse_webhook(body),
    };
    let alert = match parsed {
        Ok(alert) => alert,
        Err(error) => {
            let detail = Some(error.to_string());
            return refuse(
                runtime,
                peer,
                source,
                "invalid_alert",
                StatusCode::BAD_REQUEST,
                "invalid-alert",
                detail,
            );
        }
    };
    let id = RECEIVED.fetch_add(1, Ordering::Relaxed) + 1;
    let detector = match source {
        AlertSource::Falco => "runtime_falco",
        AlertSource::Webhook => "runtime_webhook",
    };
    let summary = format!("{}: {} ({})", source.as_str(), alert.rule, alert.priority.as_str());
    match runtime::decide(&alert, config) {
        RuntimeDecision::Record { .. } => {
            let subject = runtime::workload(&alert, config)
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
            let workload = match runtime::workload(&alert, config) {
                Ok(workload) => workload,
                Err(error) => {
                    let detail = Some(format!("A rule says quarantine, but {error}; nothing was applied."));
                    return refuse(
                        runtime,
                        peer,
                        source,
                        "no_workload_identity",
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "no-workload-identity",
                        detail,
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
