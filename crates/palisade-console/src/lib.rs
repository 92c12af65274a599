//! The web console on the admin listener (`/ui`): live traffic, decisions, alerts and responses,
//! upstreams, mesh identities, config and audit events, for a person rather than a scraper.
//!
//! Behind the admin token: a login opens a session (an HttpOnly, SameSite=Strict cookie scoped to
//! `/ui`); every state-changing call must carry the session's CSRF token in `X-CSRF-Token` and come
//! from the console's own origin. Every answer carries a strict Content-Security-Policy (scripts and
//! styles only from the embedded files, no inline code), and the page holds no data until its
//! scripts ask the JSON API with the session. All assets are compiled into the binary.
//!
//! The gateway supplies what only it knows through [`Backend`]; this crate owns the HTTP surface,
//! the sessions, and the last hour of traffic and decisions ([`history`]).
#![forbid(unsafe_code)]

pub mod assets;
pub mod history;
pub mod session;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE};
use http::{Method, Response, StatusCode};
use palisade_core::problem::Problem;
use serde_json::{json, Value};

use crate::history::History;
use crate::session::{Opened, Sessions, COOKIE};

/// The Content-Security-Policy of every console answer: nothing inline, nothing from elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The largest request body the console reads.
pub const MAX_BODY: usize = 16 * 1024;

/// The views the page polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Alerts,
    Upstreams,
    Mesh,
    Config,
}

/// Filters of the audit view (`?kind=&q=`), both optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// An event kind (`unmapped.event`, e.g. `admin_refused`), exactly.
    pub kind: Option<String>,
    /// Text the event's JSON must contain (case-insensitive).
    pub text: Option<String>,
}

/// What the console needs from the gateway.
pub trait Backend {
    /// The admin token, if one is configured.
    fn admin_token(&self) -> Option<String>;
    fn view(&self, view: View) -> Value;
    /// The latest audit events matching `filter`, newest first.
    fn audit(&self, filter: &AuditFilter) -> Value;
    /// Refusals by reason, client and principal (the top `n` of each).
    fn top_refusals(&self, n: usize) -> Value;
    /// Adds a block or limit from a JSON body (the admin API's `POST /responses`).
    fn add_response(&self, body: &[u8], peer: IpAddr) -> Response<Bytes>;
    /// Lifts a block or limit (the admin API's `DELETE /responses/{id}`).
    fn lift_response(&self, id: &str, peer: IpAddr) -> Response<Bytes>;
    /// Records a console login, logout, or refused call as an audit event.
    fn record(&self, peer: IpAddr, operation: &'static str, refused: Option<&'static str>);
}

/// One console request, its body already read (at most [`MAX_BODY`]).
pub struct Call<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: Bytes,
    pub peer: IpAddr,
}

pub struct Console {
    pub sessions: Sessions,
    pub history: Arc<History>,
}

impl Console {
    pub fn new(tallies: Arc<palisade_telemetry::tally::Tallies>) -> Console {
        Console {
            sessions: Sessions::default(),
            history: Arc::new(History::new(tallies)),
        }
    }

    /// Whether `path` is the console's.
    pub fn owns(path: &str) -> bool {
        path == "/ui" || path.starts_with("/ui/")
    }

    pub fn answer(&self, backend: &dyn Backend, call: Call<'_>) -> Response<Bytes> {
        let mut response = self.route(backend, &call);
        secure(response.headers_mut());
        response
    }

    fn route(&self, backend: &dyn Backend, call: &Call<'_>) -> Response<Bytes> {
        let method = call.method;
        match call.path {
            "/ui" => redirect("/ui/"),
            "/ui/" | "/ui/index.html" if is_read(method) => asset("index.html"),
            path if path.starts_with("/ui/assets/") && is_read(method) => asset(&path["/ui/assets/".len()..]),
            "/ui/login" if method == Method::POST => self.login(backend, call),
            "/ui/login" => method_not_allowed("POST"),
            _ if call.path.starts_with("/ui/api/") || call.path == "/ui/logout" => {
                let token = backend.admin_token();
                let Some(session) =
                    cookie(call.headers).and_then(|id| self.sessions.find(&id, token.as_deref(), Instant::now()))
                else {
                    // The page asks this first: "not logged in" is an answer, not an error.
                    if call.path == "/ui/api/session" && is_read(method) {
                        return json_response(&json!({ "authenticated": false }));
                    }
                    return problem(
                        StatusCode::UNAUTHORIZED,
                        "unauthenticated",
                        "Log in with the admin token.",
                    );
                };
                if !is_read(method) {
                    if let Err(reason) = same_origin(call.headers).and_then(|()| {
                        let presented = call.headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
                        if session::csrf_matches(&session, presented) {
                            Ok(())
                        } else {
                            Err("csrf_token_invalid")
                        }
                    }) {
                        backend.record(call.peer, "POST /ui/api", Some(reason));
                        return problem(
                            StatusCode::FORBIDDEN,
                            "csrf-refused",
                            "The request did not carry this session's CSRF token from the console's own page.",
                        );
                    }
                }
                self.api(backend, call, &session)
            }
            _ => problem(StatusCode::NOT_FOUND, "not-found", "Not Found"),
        }
    }

    fn login(&self, backend: &dyn Backend, call: &Call<'_>) -> Response<Bytes> {
        if let Err(reason) = same_origin(call.headers) {
            backend.record(call.peer, "POST /ui/login", Some(reason));
            return problem(
                StatusCode::FORBIDDEN,
                "csrf-refused",
                "Log in from the console's own page.",
            );
        }
        let presented = form_field(&call.body, "token").unwrap_or_default();
        match self
            .sessions
            .login(backend.admin_token().as_deref(), &presented, Instant::now())
        {
            Ok(opened) => {
                backend.record(call.peer, "POST /ui/login", None);
                let mut response = empty(StatusCode::NO_CONTENT);
                let cookie = format!(
                    "{COOKIE}={}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}",
                    opened.id,
                    session::ABSOLUTE_TIMEOUT.as_secs()
                );
                if let Ok(value) = HeaderValue::from_str(&cookie) {
                    response.headers_mut().insert(SET_COOKIE, value);
                }
                response
            }
            Err(refused) => {
                backend.record(call.peer, "POST /ui/login", Some(refused.reason()));
                match refused {
                    session::LoginRefused::NotConfigured => problem(
                        StatusCode::FORBIDDEN,
                        "admin-api-disabled",
                        "Set admin.token to use the console.",
                    ),
                    session::LoginRefused::WrongToken => problem(
                        StatusCode::UNAUTHORIZED,
                        "unauthenticated",
                        "That is not the admin token.",
                    ),
                    session::LoginRefused::Throttled => {
                        let mut response = problem(
                            StatusCode::TOO_MANY_REQUESTS,
                            "login-throttled",
                            "Too many failed logins; try again in a minute.",
                        );
                        response
                            .headers_mut()
                            .insert(http::header::RETRY_AFTER, HeaderValue::from_static("60"));
                        response
                    }
                }
            }
        }
    }

    fn api(&self, backend: &dyn Backend, call: &Call<'_>, session: &Opened) -> Response<Bytes> {
        let method = call.method;
        let path = call.path;
        match path {
            "/ui/logout" if method == Method::POST => {
                self.sessions.end(&session.id);
                backend.record(call.peer, "POST /ui/logout", None);
                let mut response = empty(StatusCode::NO_CONTENT);
                response.headers_mut().insert(
                    SET_COOKIE,
                    HeaderValue::from_static("palisade_console=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0"),
                );
                response
            }
            "/ui/api/session" if is_read(method) => json_response(&json!({
                "authenticated": true,
                "csrf": session.csrf,
                "idle_timeout_seconds": session::IDLE_TIMEOUT.as_secs(),
            })),
            "/ui/api/traffic" if is_read(method) => json_response(&self.history.traffic()),
            "/ui/api/decisions" if is_read(method) => {
                let series = self.history.decisions();
                json_response(&json!({ "series": series, "top": backend.top_refusals(10) }))
            }
            "/ui/api/alerts" if is_read(method) => json_response(&backend.view(View::Alerts)),
            "/ui/api/upstreams" if is_read(method) => json_response(&backend.view(View::Upstreams)),
            "/ui/api/mesh" if is_read(method) => json_response(&backend.view(View::Mesh)),
            "/ui/api/config" if is_read(method) => json_response(&backend.view(View::Config)),
            "/ui/api/audit" if is_read(method) => json_response(&backend.audit(&audit_filter(call.query))),
            "/ui/api/responses" if method == Method::POST => backend.add_response(&call.body, call.peer),
            id if id.starts_with("/ui/api/responses/") && method == Method::DELETE => {
                backend.lift_response(&id["/ui/api/responses/".len()..], call.peer)
            }
            "/ui/logout" | "/ui/api/responses" => method_not_allowed("POST"),
            id if id.starts_with("/ui/api/responses/") => method_not_allowed("DELETE"),
            "/ui/api/session" | "/ui/api/traffic" | "/ui/api/decisions" | "/ui/api/alerts" | "/ui/api/upstreams"
            | "/ui/api/mesh" | "/ui/api/config" | "/ui/api/audit" => method_not_allowed("GET"),
            _ => problem(StatusCode::NOT_FOUND, "not-found", "Not Found"),
        }
    }
}

/// SHA-256 of `bytes`, in hex.
pub fn digest_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn is_read(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// A browser tells where a request comes from: `Sec-Fetch-Site` (every current browser) and
/// `Origin` (on every POST). Either naming another site refuses the call; a client that sends
/// neither (curl) must still hold the session and the CSRF token.
fn same_origin(headers: &HeaderMap) -> Result<(), &'static str> {
    if let Some(site) = headers.get("sec-fetch-site") {
        if site.as_bytes() != b"same-origin" {
            return Err("cross_site_request");
        }
    }
    if let Some(origin) = headers.get(http::header::ORIGIN) {
        let host = headers
            .get(http::header::HOST)
            .map(HeaderValue::as_bytes)
            .unwrap_or_default();
        let origin = origin.as_bytes();
        let authority = origin
            .strip_prefix(b"http://")
            .or_else(|| origin.strip_prefix(b"https://"))
            .unwrap_or_default();
        if authority.is_empty() || authority != host {
            return Err("cross_site_request");
        }
    }
    Ok(())
}

/// The session cookie's value, if the request carries one.
fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
}

/// A field of an `application/x-www-form-urlencoded` body.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .and_then(|(_, value)| percent_decode(value))
}

fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn audit_filter(query: Option<&str>) -> AuditFilter {
    let mut filter = AuditFilter::default();
    for pair in query.unwrap_or_default().split('&') {
        let Some((key, value)) = pair.split_once('=') else {
            continue;
        };
        let Some(value) = percent_decode(value).filter(|v| !v.is_empty()) else {
            continue;
        };
        let value: String = value.chars().take(200).collect();
        match key {
            "kind" => filter.kind = Some(value),
            "q" => filter.text = Some(value),
            _ => {}
        }
    }
    filter
}

/// Headers on every console answer.
fn secure(headers: &mut HeaderMap) {
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    headers.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    headers.insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
    headers
        .entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
}

fn asset(name: &str) -> Response<Bytes> {
    match assets::get(name) {
        Some(asset) => {
            let mut response = Response::new(Bytes::from_static(asset.body));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
            response
        }
        None => problem(StatusCode::NOT_FOUND, "not-found", "Not Found"),
    }
}

fn redirect(to: &'static str) -> Response<Bytes> {
    let mut response = empty(StatusCode::PERMANENT_REDIRECT);
    response.headers_mut().insert(LOCATION, HeaderValue::from_static(to));
    response
}

fn empty(status: StatusCode) -> Response<Bytes> {
    let mut response = Response::new(Bytes::new());
    *response.status_mut() = status;
    response
}

pub fn json_response(value: &impl serde::Serialize) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from(serde_json::to_vec(value).unwrap_or_default()));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn problem(status: StatusCode, slug: &str, detail: &str) -> Response<Bytes> {
    let title = status.canonical_reason().unwrap_or("Error");
    let body = Problem::new(status, slug, title)
        .with_detail(detail.to_string())
        .to_json();
    let mut response = Response::new(Bytes::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(palisade_core::problem::CONTENT_TYPE),
    );
    response
}

fn method_not_allowed(allow: &'static str) -> Response<Bytes> {
    let mut response = problem(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method Not Allowed",
    );
    response
        .headers_mut()
        .insert(http::header::ALLOW, HeaderValue::from_static(allow));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_site_requests_are_told_apart() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, HeaderValue::from_static(value));
            }
            map
        };
        assert!(same_origin(&headers(&[])).is_ok(), "curl sends neither");
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin")])).is_ok());
        assert!(same_origin(&headers(&[("sec-fetch-site", "cross-site")])).is_err());
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-site")])).is_err());
        assert!(same_origin(&headers(&[("host", "127.0.0.1:9"), ("origin", "http://127.0.0.1:9")])).is_ok());
        assert!(same_origin(&headers(&[("host", "127.0.0.1:9"), ("origin", "http://evil.test")])).is_err());
        assert!(same_origin(&headers(&[("host", "127.0.0.1:9"), ("origin", "null")])).is_err());
    }

    #[test]
    fn cookies_forms_and_filters_are_read() {
        let mut headers = HeaderMap::new();
        headers.insert("cookie", HeaderValue::from_static("a=1; palisade_console=abc; b=2"));
        assert_eq!(cookie(&headers).as_deref(), Some("abc"));
        assert_eq!(form_field(b"x=1&token=a%2Bb+c", "token").as_deref(), Some("a+b c"));
        assert_eq!(form_field(b"token=%zz", "token"), None);
        assert_eq!(form_field(b"token=%e2%82", "token"), None, "not UTF-8");
        let filter = audit_filter(Some("kind=admin_action&q=%2Fresponses&other=1"));
        assert_eq!(filter.kind.as_deref(), Some("admin_action"));
        assert_eq!(filter.text.as_deref(), Some("/responses"));
    }
}
