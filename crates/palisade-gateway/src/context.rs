//! The per-request context: what each stage learned, read by later stages and by the access log.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::Method;
use palisade_auth::{ClientCertificate, Principal};

/// Facts about the client connection, shared by all its requests.
pub struct ConnectionInfo {
    /// The name of the listener the connection arrived on (routes may be bound to listeners).
    pub listener: Arc<str>,
    pub peer: SocketAddr,
    pub tls: bool,
    pub verdicts: crate::framing::Verdicts,
    pub hop: crate::pipeline::forwarded::HopValues,
    /// The client certificate the TLS handshake verified, if one was presented: its principal, or
    /// why it has none.
    pub client_certificate: Option<ClientCertificate>,
    /// Requests handed to the pipeline so far (a drain waits for the first one).
    pub requests: std::sync::atomic::AtomicU32,
    /// Set when the gateway drains: every HTTP/1 response from then on says `Connection: close`, so
    /// the client learns it before hyper closes the connection (whatever the order of the two).
    pub draining: std::sync::atomic::AtomicBool,
}

pub struct RequestContext {
    pub started: Instant,
    /// Kept as the header value it is sent as (upstream and in the response); cloning it shares it.
    /// Always visible ASCII (see `forwarded::request_id`).
    pub request_id: http::HeaderValue,
    pub method: Method,
    pub peer: IpAddr,
    pub client_ip: IpAddr,
    /// The normalized path; empty until the normalize stage ran.
    pub path: String,
    pub host: String,
    pub listener: Arc<str>,
    pub route_index: Option<usize>,
    pub params: Vec<(String, String)>,
    /// Who is calling, once the authenticate stage succeeded; `None` on public routes.
    pub principal: Option<Arc<Principal>>,
    /// What the authorize stage's decision rests on: a rule id, `authenticated` or `default-deny`.
    pub decided_by: Option<Arc<str>>,
    pub upstream_target: Option<Arc<crate::upstream::Target>>,
    pub upstream_ms: Option<f64>,
    /// On a refused credential, with detection on: the subject the credential claimed (unverified).
    pub attempted_subject: Option<String>,
    /// Made when the request has a body to count.
    pub body: Option<Arc<crate::pipeline::body_limit::BodyProgress>>,
    /// The stage the request is in (the one that waits, when its client goes away).
    pub stage: palisade_core::decision::Stage,
    /// What the gateway decided when it answered itself (stage, fault, reason); `None` when the
    /// upstream answered.
    pub decision: Option<palisade_core::decision::Decision>,
    /// `RateLimit-Policy` and `RateLimit` for the response, once the rate limit stage ran.
    pub rate_limit_headers: Option<(http::HeaderValue, http::HeaderValue)>,
    /// The route's in-flight slot, freed when this context is dropped at the end of the response.
    pub in_flight: Option<palisade_limits::InFlightGuard>,
    /// The request's `Origin`, for the CORS headers of its response.
    pub origin: Option<http::HeaderValue>,
    /// A CORS preflight answered at the gateway (its answer carries its own CORS headers).
    pub preflight: bool,
}

impl RequestContext {
    /// The wall-clock time the request arrived, worked out when a log line needs it rather than read
    /// from the clock for every request.
    pub fn arrived_at(&self) -> SystemTime {
        SystemTime::now()
            .checked_sub(self.started.elapsed())
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// Request body bytes received so far (0 for a request without a body).
    pub fn bytes_received(&self) -> u64 {
        self.body.as_ref().map_or(0, |body| body.received())
    }

    pub fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or_default()
    }

    pub fn new(connection: &ConnectionInfo, method: Method) -> Self {
        let peer = crate::pipeline::forwarded::canonical(connection.peer.ip());
        Self {
            started: Instant::now(),
            request_id: http::HeaderValue::from_static(""),
            method,
            peer,
            client_ip: peer,
            path: String::new(),
            host: String::new(),
            listener: connection.listener.clone(),
            route_index: None,
            params: Vec::new(),
            principal: None,
            decided_by: None,
            upstream_target: None,
            upstream_ms: None,
            attempted_subject: None,
            body: None,
            stage: palisade_core::decision::Stage::Normalize,
            decision: None,
            rate_limit_headers: None,
            in_flight: None,
            origin: None,
            preflight: false,
        }
    }
}
