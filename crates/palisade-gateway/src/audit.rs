//! Which gateway decisions become audit events, built from the request context (never from headers,
//! so no credential can reach the audit log). The events themselves and their OCSF mapping live in
//! `palisade_telemetry::audit`.

use std::net::SocketAddr;

use palisade_telemetry::{AuditEvent, EventKind, RequestFacts};

use crate::context::RequestContext;
use crate::respond::GatewayError;
use crate::runtime::Runtime;

/// The audit kind of a refusal, or `None` for answers that are not security decisions (404, 5xx).
fn kind_of(error: &GatewayError) -> Option<EventKind> {
    Some(match error {
        GatewayError::Unauthenticated { .. } | GatewayError::AuthUnavailable => EventKind::AuthenticationFailed,
        GatewayError::Forbidden | GatewayError::PolicyFailed => EventKind::AuthorizationDenied,
        GatewayError::IpDenied | GatewayError::ClientBlocked => EventKind::IpBlocked,
        GatewayError::PrincipalBlocked | GatewayError::WorkloadQuarantined | GatewayError::DestinationQuarantined => {
            EventKind::AuthorizationDenied
        }
        GatewayError::RateLimited { .. } => EventKind::RateLimited,
        GatewayError::Invalid(_) => EventKind::ValidationFailed,
        GatewayError::BadFraming(_) | GatewayError::BadPath(_) => EventKind::RequestRejected,
        GatewayError::CorsRejected => EventKind::CorsRejected,
        _ => return None,
    })
}

fn facts(runtime: &Runtime, context: &RequestContext, status: u16) -> RequestFacts {
    RequestFacts {
        request_id: context.request_id().to_string(),
        method: context.method.to_string(),
        path: context.path.clone(),
        host: context.host.clone(),
        client_ip: Some(context.client_ip),
        route: runtime.route_name(context.route_index).map(str::to_string),
        listener: Some(context.listener.to_string()),
        status: Some(status),
    }
}

/// Counts a refused request and records it as an audit event if the refusal is a security decision.
pub fn refusal(runtime: &Runtime, context: &RequestContext, error: &GatewayError) {
    let Some(kind) = kind_of(error) else {
        return;
    };
    let decision = error.decision();
    runtime
        .metrics
        .denied(runtime.route_label(context.route_index), decision);
    let Some(log) = &runtime.audit else {
        return;
    };
    let mut event = AuditEvent::for_request(kind, decision.reason, facts(runtime, context, error.status().as_u16()));
    event.unmapped.stage = Some(decision.stage);
    event.unmapped.fault = Some(decision.fault);
    if let Some(principal) = &context.principal {
        event = event.with_subject(&principal.subject, Some(principal.method.as_str()));
    }
    event.unmapped.decided_by = context.decided_by.as_deref().map(str::to_string);
    log.record(event);
}

/// Records a successful authentication, when the config asks for them.
pub fn authenticated(runtime: &Runtime, context: &RequestContext) {
    let (Some(log), Some(principal)) = (&runtime.audit, &context.principal) else {
        return;
    };
    if !runtime.config.audit.authentication_successes {
        return;
    }
    let facts = facts(runtime, context, 0);
    let facts = RequestFacts { status: None, ..facts };
    let event = AuditEvent::for_request(EventKind::AuthenticationSucceeded, principal.method.as_str(), facts)
        .with_subject(&principal.subject, Some(principal.method.as_str()));
    log.record(event);
}

/// Records a connection refused or cut before a whole request was read: the per-client connection
/// cap, a silent connection, a head too slow or too large. `head` is what was read of its request
/// line.
pub fn connection_refused(
    runtime: &Runtime,
    listener: &str,
    peer: SocketAddr,
    decision: palisade_core::decision::Decision,
    head: Option<&crate::framing::PartialHead>,
) {
    runtime.metrics.denied(palisade_core::config::UNROUTED_LABEL, decision);
    let Some(log) = &runtime.audit else {
        return;
    };
    let facts = RequestFacts {
        request_id: String::new(),
        method: head.map(|h| h.method.clone()).unwrap_or_default(),
        path: head.map(|h| h.path.clone()).unwrap_or_default(),
        host: String::new(),
        client_ip: Some(crate::pipeline::forwarded::canonical(peer.ip())),
        route: None,
        listener: Some(listener.to_string()),
        status: None,
    };
    let client = crate::pipeline::forwarded::canonical(peer.ip());
    let mut event = AuditEvent::for_request(EventKind::RequestRejected, decision.reason, facts)
        .with_source(client, Some(peer.port()));
    event.message = format!("connection from {client} refused: {}", decision.reason);
    event.unmapped.stage = Some(decision.stage);
    event.unmapped.fault = Some(decision.fault);
    log.record(event);
}

/// Records a refused TLS handshake (not a client that merely went away).
pub fn handshake_refused(runtime: &Runtime, listener: &str, peer: SocketAddr, reason: &'static str) {
    let Some(log) = &runtime.audit else {
        return;
    };
    let mut event = AuditEvent::new(
        EventKind::TlsHandshakeRefused,
        Some(reason),
        format!("TLS handshake on listener {listener} refused: {reason}"),
    )
    .with_source(peer.ip(), Some(peer.port()));
    event.unmapped.listener = Some(listener.to_string());
    log.record(event);
}

/// Records a reload: applied, or refused with its first error (a config location, no secret).
pub fn reload(runtime: &Runtime, applied: bool, detail: Option<&str>) {
    let Some(log) = &runtime.audit else {
        return;
    };
    let event = if applied {
        AuditEvent::new(EventKind::ConfigReloaded, None, "configuration reloaded")
    } else {
        let message = format!(
            "configuration rejected; the previous one stays in force: {}",
            detail.unwrap_or("invalid")
        );
        AuditEvent::new(EventKind::ConfigRejected, Some("invalid_config"), message)
    };
    log.record(event);
}

/// Audit events for the shared rate-limit store going down and coming back, polled once a second
/// from its health metrics (the store itself only logs). A failed call since the last poll counts as
/// an outage even if the store answers again by now (the breaker kept it out for a second), so a
/// short outage is reported too. A store that never answered since start is reported once after a
/// grace period for the first connection.
pub(crate) async fn watch_limit_store(
    shared: std::sync::Arc<crate::Shared>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    const FIRST_CONNECTION_GRACE: u32 = 5;
    let mut ticker = tokio::time::interval(std::time::Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut reported_up: Option<bool> = None;
    let mut seconds = 0u32;
    let mut errors_seen = shared.metrics.rate_limit_store_errors.get();
    let mut failed_since = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        let runtime = shared.runtime.load_full();
        if runtime.limit_store.is_none() {
            reported_up = None;
            continue;
        }
        seconds = seconds.saturating_add(1);
        let up = runtime.metrics.rate_limit_store_up.get() == 1;
        let errors = runtime.metrics.rate_limit_store_errors.get();
        // A failure not yet reported (kept while the first state is still unknown).
        failed_since |= errors > errors_seen;
        errors_seen = errors;
        let mut changes = Vec::new();
        match reported_up {
            None if up => {
                if failed_since {
                    changes.push(false);
                    changes.push(true);
                } else {
                    reported_up = Some(true);
                }
            }
            None if seconds >= FIRST_CONNECTION_GRACE => changes.push(false),
            None => {}
            Some(true) if !up || failed_since => {
                changes.push(false);
                if up {
                    changes.push(true);
                }
            }
            Some(false) if up => changes.push(true),
            Some(_) => {}
        }
        for now_up in changes {
            reported_up = Some(now_up);
            if let Some(log) = &runtime.audit {
                log.record(store_event(&runtime, now_up));
            }
        }
        if reported_up.is_some() {
            failed_since = false;
        }
    }
}

fn store_event(runtime: &Runtime, up: bool) -> AuditEvent {
    if up {
        return AuditEvent::new(
            EventKind::LimitStoreRecovered,
            None,
            "the shared rate-limit store answers again: limits are shared",
        );
    }
    let consequence = match runtime.config.rate_limits.on_store_error {
        palisade_core::config::StoreErrorPolicy::FallbackLocal => "limits are counted per process until it is back",
        palisade_core::config::StoreErrorPolicy::Deny => "limited routes refuse requests until it is back",
    };
    AuditEvent::new(
        EventKind::LimitStoreUnavailable,
        Some("limit_store_unavailable"),
        format!("the shared rate-limit store is unreachable: {consequence}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_refusals_are_audited_and_plain_misses_are_not() {
        assert_eq!(kind_of(&GatewayError::Forbidden), Some(EventKind::AuthorizationDenied));
        assert_eq!(
            kind_of(&GatewayError::PolicyFailed),
            Some(EventKind::AuthorizationDenied)
        );
        assert_eq!(kind_of(&GatewayError::IpDenied), Some(EventKind::IpBlocked));
        assert_eq!(
            kind_of(&GatewayError::BadFraming("x")),
            Some(EventKind::RequestRejected)
        );
        assert_eq!(kind_of(&GatewayError::NotFound), None);
        assert_eq!(kind_of(&GatewayError::UpstreamTimeout), None);
    }
}
