//! The admin listener (loopback by default): `/healthz` (the process answers), `/readyz` (a config is
//! loaded and every cluster has a target in rotation) and `/metrics` (Prometheus/OpenMetrics text)
//! answer anyone who can reach it. `/alerts` and `/responses` (list, add, revoke blocks and limits)
//! need `Authorization: Bearer` with `admin.token`; without a configured token they are refused,
//! so nothing here changes state unauthenticated. The web console (`/ui`, `crate::console`) logs in
//! with the same token; runtime alerts (`/runtime-alerts/*`, `crate::runtime_alerts`) have their own.
//! Changes and refusals are audit events.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use palisade_core::config::{Rate, ResponseAction};
use palisade_core::problem::Problem;
use palisade_limits::responses::{Action, ActiveResponse, Target};
use palisade_limits::ResponseTable;
use palisade_telemetry::{AuditEvent, EventKind};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::pipeline::responses::now_secs;
use crate::runtime::Runtime;
use crate::Shared;

pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => continue,
            },
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(answer(shared, peer.ip(), request).await.map(Full::new)) }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10));
            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn answer(shared: Arc<Shared>, peer: IpAddr, request: Request<Incoming>) -> Response<Bytes> {
    let path = request.uri().path();
    if palisade_console::Console::owns(path) {
        return crate::console::answer(&shared, peer, request).await;
    }
    if crate::runtime_alerts::owns(path) {
        let runtime = shared.runtime.load_full();
        let (parts, body) = request.into_parts();
        let (source, config) =
            match crate::runtime_alerts::admit(&runtime, peer, &parts.method, parts.uri.path(), &parts.headers) {
                Ok(admitted) => admitted,
                Err(refused) => return *refused,
            };
        let body = match Limited::new(body, palisade_detect::runtime::MAX_ALERT_BYTES)
            .collect()
            .await
        {
            Ok(body) => body.to_bytes(),
            Err(_) => return crate::runtime_alerts::unreadable(&runtime, peer, source),
        };
        return crate::runtime_alerts::answer(&runtime, config, peer, source, &body);
    }
    if path == "/alerts" || path == "/responses" || path.starts_with("/responses/") {
        let runtime = shared.runtime.load_full();
        return match check_token(&runtime, &request) {
            Ok(()) => responses_api(&runtime, peer, request).await,
            Err(refusal) => {
                record(&runtime, peer, &request, Some(refusal.reason()));
                refusal.response()
            }
        };
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method Not Allowed",
        );
    }
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n"),
        "/readyz" => readiness(&shared),
        "/metrics" => text(
            StatusCode::OK,
            palisade_telemetry::metrics::CONTENT_TYPE,
            shared.metrics.encode(),
        ),
        // The public half of the internal identity token key, for upstreams that verify it.
        "/.well-known/jwks.json" => text(
            StatusCode::OK,
            "application/jwk-set+json",
            shared.runtime.load().signer.jwks().to_string(),
        ),
        _ => problem(StatusCode::NOT_FOUND, "not-found", "Not Found"),
    }
}

/// `/readyz`: 503 when the gateway cannot serve what it is configured for (a cluster with no target
/// in rotation, or the shared rate-limit store down under `on_store_error: deny`, which refuses every
/// limited route); 200 otherwise, with `degraded` naming what works in a lesser way (the store down
/// under `fallback_local`, a JWT provider whose key set was never loaded, a sidecar whose identity
/// service does not renew its certificate; 503 once that certificate has expired).
fn readiness(shared: &Shared) -> Response<Bytes> {
    let runtime = shared.runtime.load();
    let unready: Vec<&str> = runtime
        .clusters
        .iter()
        .filter(|(_, c)| !c.has_available_target())
        .map(|(n, _)| n.as_str())
        .collect();
    let mut degraded = Vec::new();
    let mut refusing = false;
    if runtime.limit_store.is_some() && runtime.metrics.rate_limit_store_up.get() == 0 {
        let deny = runtime.config.rate_limits.on_store_error == palisade_core::config::StoreErrorPolicy::Deny;
        refusing = deny;
        degraded.push(serde_json::json!({
            "dependency": "rate_limit_store",
            "detail": "the shared rate-limit store does not answer",
            "effect": if deny { "limited routes refuse requests (on_store_error: deny)" } else { "limits are counted per process (on_store_error: fallback_local)" },
        }));
    }
    for provider in runtime.authenticator.key_sets_not_loaded() {
        degraded.push(serde_json::json!({
            "dependency": "jwt_key_set",
            "provider": provider,
            "detail": "the provider's key set was never loaded",
            "effect": "its tokens are answered 503 until it is",
        }));
    }
    let mut identity_expired = false;
    if let Some(identity) = shared.identity() {
        identity_expired = identity.seconds_left <= 0;
        if identity_expired || identity.renewal_failing {
            degraded.push(serde_json::json!({
                "dependency": "certificate_authority",
                "detail": if identity_expired { "the workload certificate has expired and the identity service has not renewed it" } else { "the identity service did not renew the workload certificate" },
                "effect": if identity_expired { "peers refuse this workload's certificate".to_string() } else { format!("serving on the current certificate, valid for {} s more; renewal is retried", identity.seconds_left) },
            }));
        }
    }
    let ready = unready.is_empty() && !refusing && !identity_expired;
    let body = serde_json::json!({
        "ready": ready,
        "clusters_without_healthy_target": unready,
        "degraded": degraded,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    text(status, "application/json", body.to_string())
}

fn text(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Bytes> {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn problem(status: StatusCode, slug: &str, title: &str) -> Response<Bytes> {
    problem_with(status, slug, title, None)
}

/// A problem+json answer, with a detail when there is one to give.
pub(crate) fn problem_with(status: StatusCode, slug: &str, title: &str, detail: Option<String>) -> Response<Bytes> {
    let mut problem = Problem::new(status, slug, title);
    if let Some(detail) = detail {
        problem = problem.with_detail(detail);
    }
    text(status, palisade_core::problem::CONTENT_TYPE, problem.to_json())
}

/// Why an admin call was refused before it did anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// `admin.token` is not set: the state-changing API is off.
    NotConfigured,
    MissingToken,
    WrongToken,
}

impl Refusal {
    fn reason(self) -> &'static str {
        match self {
            Refusal::NotConfigured => "admin_token_not_configured",
            Refusal::MissingToken => "admin_token_missing",
            Refusal::WrongToken => "admin_token_invalid",
        }
    }

    fn response(self) -> Response<Bytes> {
        if self == Refusal::NotConfigured {
            let body = Problem::new(StatusCode::FORBIDDEN, "admin-api-disabled", "Forbidden")
                .with_detail("Set admin.token to use this endpoint.")
                .to_json();
            return text(StatusCode::FORBIDDEN, palisade_core::problem::CONTENT_TYPE, body);
        }
        let mut response = problem(StatusCode::UNAUTHORIZED, "unauthenticated", "Unauthorized");
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"palisade-admin\""),
        );
        response
    }
}

/// The bearer token against `admin.token`, compared in constant time.
fn check_token(runtime: &Runtime, request: &Request<Incoming>) -> Result<(), Refusal> {
    let configured = runtime.config.admin.token.as_ref().ok_or(Refusal::NotConfigured)?;
    let expected = configured.value.resolve().map_err(|_| Refusal::NotConfigured)?;
    match bearer(request.headers(), expected.expose()) {
        Ok(()) => Ok(()),
        Err(Bearer::Missing) => Err(Refusal::MissingToken),
        Err(Bearer::Wrong) => Err(Refusal::WrongToken),
    }
}

/// Why a bearer token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bearer {
    Missing,
    Wrong,
}

/// `Authorization: Bearer <expected>`, compared in constant time (the admin API and runtime alerts).
pub(crate) fn bearer(headers: &http::HeaderMap, expected: &str) -> Result<(), Bearer> {
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .ok_or(Bearer::Missing)?;
    if bool::from(presented.trim().as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(Bearer::Wrong)
    }
}

/// `/alerts` and `/responses`, once the caller is authenticated.
async fn responses_api(runtime: &Runtime, peer: IpAddr, request: Request<Incoming>) -> Response<Bytes> {
    let path = request.uri().path().to_string();
    let method = request.method().clone();
    match (&method, path.as_str()) {
        (&Method::GET, "/alerts") => json(StatusCode::OK, &runtime.detection.alerts()),
        (&Method::GET, "/responses") => json(
            StatusCode::OK,
            &serde_json::json!({ "responses": runtime.responses.list() }),
        ),
        (&Method::POST, "/responses") => {
            let answer = add_response(runtime, request).await;
            let refused = (!answer.status().is_success()).then_some("invalid_request");
            record_call(runtime, peer, &method, "/responses", refused);
            answer
        }
        (&Method::DELETE, id) if id.starts_with("/responses/") => {
            let id = &id["/responses/".len()..];
            let answer = revoke_response(runtime, id);
            let refused = (!answer.status().is_success()).then_some("unknown_response");
            record_call(runtime, peer, &method, "/responses/{id}", refused);
            answer
        }
        (_, "/alerts") => method_not_allowed("GET"),
        (_, "/responses") => method_not_allowed("GET, POST"),
        (_, _) if path.starts_with("/responses/") => method_not_allowed("DELETE"),
        _ => problem(StatusCode::NOT_FOUND, "not-found", "Not Found"),
    }
}

/// The body of `POST /responses`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewResponse {
    ip: Option<String>,
    subject: Option<String>,
    action: ResponseAction,
    ttl: palisade_core::units::Duration,
    rate: Option<Rate>,
    reason: Option<String>,
}

pub(crate) const MAX_BODY: usize = 16 * 1024;
const MAX_TTL: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

async fn add_response(runtime: &Runtime, request: Request<Incoming>) -> Response<Bytes> {
    match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(body) => add_response_from(runtime, &body.to_bytes()),
        Err(_) => bad_request("The body is unreadable or larger than 16KiB."),
    }
}

/// Adds a block or limit described by a `POST /responses` body (the admin API and the console).
pub(crate) fn add_response_from(runtime: &Runtime, body: &[u8]) -> Response<Bytes> {
    let new: NewResponse = match serde_json::from_slice(body) {
        Ok(new) => new,
        Err(error) => {
            let mut detail = format!("The body is not a response: {error}");
            detail.truncate(300);
            return bad_request(&detail);
        }
    };
    let target = match (&new.ip, &new.subject) {
        (Some(ip), None) => match ip.parse::<IpAddr>() {
            Ok(ip) => Target::ip(ip),
            Err(_) => return bad_request("ip is not an IP address."),
        },
        (None, Some(subject)) if !subject.is_empty() && subject.len() <= 1024 => Target::Subject(subject.clone()),
        _ => return bad_request("Give exactly one of ip or subject (at most 1024 characters)."),
    };
    let ttl = new.ttl.get();
    if ttl < std::time::Duration::from_secs(1) || ttl > MAX_TTL {
        return bad_request("ttl must be between 1s and 7d.");
    }
    let action = match (new.action, new.rate) {
        (ResponseAction::Block, None) => Action::Block,
        (ResponseAction::Limit, Some(_)) => Action::Limit,
        _ => return bad_request("action limit needs a rate (e.g. \"1/s\"); action block takes none."),
    };
    let mut response = ActiveResponse::new(target, action, new.rate, ttl, now_secs());
    response.reason = new.reason.unwrap_or_else(|| "set through the admin API".into());
    response.reason.truncate(500);
    match crate::detection::take(runtime, response.clone()) {
        Ok(()) => json(StatusCode::CREATED, &response),
        Err(error) => {
            let body = Problem::new(StatusCode::CONFLICT, "too-many-responses", "Conflict")
                .with_detail(error.to_string())
                .to_json();
            text(StatusCode::CONFLICT, palisade_core::problem::CONTENT_TYPE, body)
        }
    }
}

pub(crate) fn revoke_response(runtime: &Runtime, id: &str) -> Response<Bytes> {
    let Some(response) = runtime.responses.remove(id) else {
        return problem(StatusCode::NOT_FOUND, "not-found", "Not Found");
    };
    crate::detection::lifted(runtime, &response, "revoked");
    if let Some(store) = runtime.limit_store.clone() {
        // Every gateway lifts it at its next synchronization.
        tokio::spawn(async move {
            if let Err(error) = ResponseTable::publish_revocation(&store, &response).await {
                tracing::warn!(%error, id = %response.id, "revocation not shared; other gateways keep the response until it expires");
            }
        });
    }
    let mut answer = text(StatusCode::NO_CONTENT, "text/plain", Bytes::new());
    answer.headers_mut().remove(CONTENT_TYPE);
    answer
}

/// A state change, or a refused call, as an API Activity audit event.
fn record(runtime: &Runtime, peer: IpAddr, request: &Request<Incoming>, refused: Option<&'static str>) {
    let path = request.uri().path();
    let operation = if path.starts_with("/responses/") {
        "/responses/{id}"
    } else {
        path
    };
    record_call(runtime, peer, request.method(), operation, refused);
}

fn record_call(runtime: &Runtime, peer: IpAddr, method: &Method, operation: &str, refused: Option<&'static str>) {
    let Some(log) = &runtime.audit else {
        return;
    };
    // Only an admin path is ever recorded (never a caller-chosen string beyond it).
    let operation = match operation {
        "/alerts" | "/responses" | "/responses/{id}" => format!("{method} {operation}"),
        _ => return,
    };
    let kind = if refused.is_some() {
        EventKind::AdminRefused
    } else {
        EventKind::AdminAction
    };
    log.record(AuditEvent::for_admin(kind, operation, peer, refused));
}

/// A console login, logout, change or refused call (`operation` is one of the console's own fixed
/// names, e.g. `POST /ui/login`) as an API Activity audit event.
pub(crate) fn record_console(runtime: &Runtime, peer: IpAddr, operation: &'static str, refused: Option<&'static str>) {
    let Some(log) = &runtime.audit else {
        return;
    };
    let kind = if refused.is_some() {
        EventKind::AdminRefused
    } else {
        EventKind::AdminAction
    };
    log.record(AuditEvent::for_admin(kind, operation.to_string(), peer, refused));
}

pub(crate) fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Bytes> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    text(status, "application/json", body)
}

fn bad_request(detail: &str) -> Response<Bytes> {
    let body = Problem::new(StatusCode::BAD_REQUEST, "bad-request", "Bad Request")
        .with_detail(detail.to_string())
        .to_json();
    text(StatusCode::BAD_REQUEST, palisade_core::problem::CONTENT_TYPE, body)
}

pub(crate) fn method_not_allowed(allow: &'static str) -> Response<Bytes> {
    let mut response = problem(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method Not Allowed",
    );
    response.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
    response
}
