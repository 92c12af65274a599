//! The gateway's side of the web console (`palisade_console`): the views only the gateway can fill
//! (alerts and responses, upstreams, identities and roots, the running config, audit events) and
//! the changes it allows (add and lift a block), through the same functions and audit trail as the
//! admin API.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use palisade_console::{AuditFilter, Backend, Call, View};
use palisade_core::config::AuthMethod;
use serde_json::{json, Value};

use crate::runtime::Runtime;
use crate::Shared;

pub(crate) async fn answer(shared: &Arc<Shared>, peer: IpAddr, request: Request<Incoming>) -> Response<Bytes> {
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, palisade_console::MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let runtime = shared.runtime.load_full();
    let backend = GatewayConsole {
        shared,
        runtime: &runtime,
    };
    shared.console.answer(
        &backend,
        Call {
            method: &parts.method,
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers: &parts.headers,
            body,
            peer,
        },
    )
}

struct GatewayConsole<'a> {
    shared: &'a Shared,
    runtime: &'a Runtime,
}

impl Backend for GatewayConsole<'_> {
    fn admin_token(&self) -> Option<String> {
        let token = self.runtime.config.admin.token.as_ref()?;
        token.value.resolve().ok().map(|secret| secret.expose().to_string())
    }

    fn view(&self, view: View) -> Value {
        match view {
            View::Alerts => self.alerts(),
            View::Upstreams => self.upstreams(),
            View::Mesh => self.mesh(),
            View::Config => self.config(),
        }
    }

    fn audit(&self, filter: &AuditFilter) -> Value {
        let Some(log) = &self.runtime.audit else {
            return json!({ "configured": false, "events": [] });
        };
        let text = filter.text.as_ref().map(|t| t.to_lowercase());
        let events: Vec<Value> = log
            .recent()
            .iter()
            .rev()
            .filter_map(|event| serde_json::to_value(event).ok())
            .filter(|event| {
                filter
                    .kind
                    .as_ref()
                    .is_none_or(|kind| event["unmapped"]["event"].as_str() == Some(kind.as_str()))
            })
            .filter(|event| {
                text.as_ref()
                    .is_none_or(|text| event.to_string().to_lowercase().contains(text.as_str()))
            })
            .take(200)
            .collect();
        json!({ "configured": true, "events": events })
    }

    fn top_refusals(&self, n: usize) -> Value {
        let (reasons, clients, principals) = self.shared.metrics.tallies().refusals.top(n);
        json!({ "reasons": reasons, "clients": clients, "principals": principals })
    }

    fn add_response(&self, body: &[u8], peer: IpAddr) -> Response<Bytes> {
        let answer = crate::admin::add_response_from(self.runtime, body);
        let refused = (!answer.status().is_success()).then_some("invalid_request");
        crate::admin::record_console(self.runtime, peer, "POST /ui/api/responses", refused);
        answer
    }

    fn lift_response(&self, id: &str, peer: IpAddr) -> Response<Bytes> {
        let answer = crate::admin::revoke_response(self.runtime, id);
        let refused = (!answer.status().is_success()).then_some("unknown_response");
        crate::admin::record_console(self.runtime, peer, "DELETE /ui/api/responses/{id}", refused);
        answer
    }

    fn record(&self, peer: IpAddr, operation: &'static str, refused: Option<&'static str>) {
        crate::admin::record_console(self.runtime, peer, operation, refused);
    }
}

impl GatewayConsole<'_> {
    fn alerts(&self) -> Value {
        let view = self.runtime.detection.alerts();
        let alerts: Vec<Value> = view
            .open
            .iter()
            .map(|alert| (alert, "open"))
            .chain(view.recent.iter().map(|alert| (alert, "closed")))
            .map(|(alert, state)| {
                json!({
                    "id": alert.id,
                    "detector": alert.detector,
                    "subject": alert.subject,
                    "severity": alert.severity,
                    "message": alert.message,
                    "opened_at": alert.opened_at,
                    "closed_at": alert.closed_at,
                    "state": state,
                })
            })
            .collect();
        let responses: Vec<Value> = self
            .runtime
            .responses
            .list()
            .into_iter()
            .map(|response| {
                let target = match &response.target {
                    palisade_limits::responses::Target::Ip(ip) => format!("address {ip}"),
                    palisade_limits::responses::Target::Subject(subject) => format!("principal {subject}"),
                };
                json!({
                    "id": response.id,
                    "target": target,
                    "action": response.action,
                    "rate": response.rate,
                    "source": response.source,
                    "reason": response.reason,
                    "created_at": response.created_at,
                    "expires_at": response.expires_at,
                })
            })
            .collect();
        json!({ "detection_enabled": self.runtime.config.detection.enabled, "alerts": alerts, "responses": responses })
    }

    fn upstreams(&self) -> Value {
        let clusters: Vec<Value> = self
            .runtime
            .clusters
            .values()
            .map(|cluster| {
                let targets: Vec<Value> = cluster
                    .status()
                    .into_iter()
                    .map(|target| {
                        json!({
                            "address": target.address,
                            "health": target.health,
                            "ejected_for_seconds": target.ejected_for_seconds,
                            "ejections": target.ejections,
                            "in_flight": target.in_flight,
                            "latency_ms": target.latency_ms.map(|ms| (ms * 100.0).round() / 100.0),
                        })
                    })
                    .collect();
                json!({
                    "name": cluster.name,
                    "retries": cluster.retries.get(),
                    "targets": targets,
                })
            })
            .collect();
        json!({ "clusters": clusters })
    }

    fn mesh(&self) -> Value {
        let now = palisade_console::history::unix_now() as i64;
        let mut identities = Vec::new();
        for (listener, key) in &self.runtime.certificates {
            if let Some(info) = key
                .cert
                .first()
                .and_then(|der| palisade_tls::certificate_info(der.as_ref()))
            {
                identities.push(json!({
                    "held_by": format!("listener {listener}"),
                    "identity": info.identity,
                    "expires_at": info.not_after,
                    "seconds_left": info.not_after - now,
                    "renewal": "reloaded from its files",
                }));
            }
        }
        if let Some(identity) = self.shared.identity() {
            identities.push(json!({
                "held_by": "workload (sidecar agent)",
                "identity": self.runtime.certificates.values().next()
                    .and_then(|key| key.cert.first())
                    .and_then(|der| palisade_tls::certificate_info(der.as_ref()))
                    .map(|info| info.identity),
                "expires_at": now + identity.seconds_left,
                "seconds_left": identity.seconds_left,
                "renewal": if identity.renewal_failing { "failing: the identity service did not renew" } else { "renewing" },
            }));
        }
        let mut roots = Vec::new();
        let mut add_roots = |used_by: String, path: &std::path::Path| {
            for info in palisade_tls::bundle_info(path) {
                roots.push(json!({
                    "used_by": used_by,
                    "subject": info.identity,
                    "expires_at": info.not_after,
                    "seconds_left": info.not_after - now,
                }));
            }
        };
        for listener in &self.runtime.config.listeners {
            if let Some(client) = listener
                .value
                .tls
                .as_ref()
                .and_then(|tls| tls.client_certificates.as_ref())
            {
                for ca in &client.value.ca {
                    add_roots(
                        format!("listener {} (client certificates)", listener.value.name),
                        &ca.value,
                    );
                }
            }
        }
        for (name, cluster) in &self.runtime.config.clusters {
            if let Some(ca) = cluster.value.tls.as_ref().and_then(|tls| tls.value.ca.as_ref()) {
                add_roots(format!("cluster {name}"), &ca.value);
            }
        }
        json!({ "identities": identities, "roots": roots })
    }

    fn config(&self) -> Value {
        let status = self.shared.config_status();
        let routes: Vec<Value> = self
            .runtime
            .config
            .routes
            .iter()
            .map(|route| {
                let route = &route.value;
                let matcher = &route.matcher.value;
                let mut matches = Vec::new();
                if let Some(host) = &matcher.host {
                    matches.push(format!("host {host}"));
                }
                if let Some(path) = &matcher.path {
                    matches.push(format!("path {path}"));
                }
                if let Some(prefix) = &matcher.prefix {
                    matches.push(format!("prefix {prefix}"));
                }
                if let Some(methods) = &matcher.methods {
                    matches.push(methods.join(","));
                }
                let authentication = if route.public {
                    "public".to_string()
                } else {
                    route
                        .authentication
                        .as_ref()
                        .map(|methods| {
                            methods
                                .value
                                .iter()
                                .map(|method| match &method.value {
                                    AuthMethod::Jwt(provider) => format!("jwt {provider}"),
                                    AuthMethod::ApiKey => "api key".to_string(),
                                    AuthMethod::Mtls => "mtls".to_string(),
                                    AuthMethod::Introspection(name) => format!("introspection {name}"),
                                })
                                .collect::<Vec<_>>()
                                .join(" or ")
                        })
                        .unwrap_or_default()
                };
                let authorization = match &route.authorization {
                    None => "—".to_string(),
                    Some(authz) => {
                        let authz = &authz.value;
                        let mut parts = Vec::new();
                        if authz.allow.is_some() {
                            parts.push("any authenticated".to_string());
                        }
                        if !authz.rules.is_empty() {
                            parts.push(format!("{} rule(s)", authz.rules.len()));
                        }
                        if let Some(policies) = &authz.policies {
                            parts.push(format!("cedar {}", policies.value));
                        }
                        parts.join(", ")
                    }
                };
                let mut limits: Vec<String> = route
                    .rate_limits
                    .iter()
                    .map(|limit| {
                        let rate = limit.value.rate.value;
                        format!("{} {}/{}s", limit.value.name.value, rate.count, rate.period.as_secs())
                    })
                    .collect();
                if let Some(max) = &route.max_in_flight {
                    limits.push(format!("in flight ≤ {}", max.value));
                }
                json!({
                    "name": route.name.value,
                    "match": matches.join(" "),
                    "cluster": route.cluster.value,
                    "authentication": authentication,
                    "authorization": authorization,
                    "limits": if limits.is_empty() { "—".to_string() } else { limits.join(", ") },
                    "validation": if route.validate.is_some() { "OpenAPI" } else { "—" },
                })
            })
            .collect();
        json!({
            "version": status.version,
            "path": self.shared.config_path.as_ref().map(|p| p.display().to_string()),
            "loaded_at": status.loaded_at,
            "last_reload": status.last_reload.as_ref().map(|reload| json!({
                "at": reload.at,
                "outcome": if reload.applied { "applied" } else { "rejected" },
                "detail": reload.detail,
            })),
            "reloads_ok": self.shared.metrics.reloads(true),
            "reloads_rejected": self.shared.metrics.reloads(false),
            "routes": routes,
        })
    }
}
