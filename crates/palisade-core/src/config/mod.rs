//! The typed configuration. Every struct denies unknown keys so that a typo is an error at load time
//! instead of a silently ignored setting. Defaults are the secure ones; `docs/configuration.md` documents
//! each field and a test loads every example that document points at.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::units::{ByteSize, Duration};

pub mod auth;
pub mod detection;
pub mod runtime_alerts;
pub mod sidecar;
pub mod traffic;
pub use auth::{AuthMethod, AuthenticationConfig, AuthorizationConfig, ClientCertificatesConfig, PolicySetConfig};
pub use detection::{ClientDetector, DetectionConfig, ResponseAction, ResponseConfig, WebhookConfig};
pub use traffic::{
    CorsConfig, DeprecationConfig, IpRulesConfig, LimitKey, Rate, RateLimitsConfig, RetiredConfig, RouteRateLimit,
    SecurityHeadersConfig, StoreErrorPolicy, StoreTlsConfig, ValidationConfig,
};

/// The whole gateway configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where clients connect. At least one.
    pub listeners: Vec<Spanned<ListenerConfig>>,
    /// Worker threads serving client connections, each with its own event loop and upstream pools;
    /// 0 means one per CPU core. Takes effect at start only.
    #[serde(default)]
    pub workers: usize,
    #[serde(default)]
    pub admin: AdminConfig,
    /// Limits that protect the HTTP edge itself.
    #[serde(default)]
    pub limits: EdgeLimits,
    /// Peers whose `X-Forwarded-For`/`Forwarded`/`X-Real-IP` are believed. Empty: nobody's.
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
    #[serde(default)]
    pub access_log: AccessLogConfig,
    /// How routes appear in `/metrics`.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Security decisions as OCSF events (docs/audit-events.md).
    #[serde(default)]
    pub audit: AuditConfig,
    /// Anomaly detection, alerts and automatic responses (docs/observability.md).
    #[serde(default)]
    pub detection: DetectionConfig,
    /// Runtime alerts (Falco) that quarantine workload identities (docs/runtime-alerts.md).
    #[serde(default)]
    pub runtime_alerts: Option<Spanned<runtime_alerts::RuntimeAlertsConfig>>,
    #[serde(default)]
    pub reload: ReloadConfig,
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    /// Identity providers, API keys and what the upstream learns of the caller.
    #[serde(default)]
    pub authentication: AuthenticationConfig,
    /// Cedar policy sets by name; routes refer to them as `authorization: { policies: NAME }`.
    #[serde(default)]
    pub policies: BTreeMap<String, Spanned<PolicySetConfig>>,
    /// Where rate-limit counters live (`local` or Redis) and how many keys each limit tracks.
    #[serde(default)]
    pub rate_limits: RateLimitsConfig,
    /// Networks refused (or the only ones allowed) on every route, checked before routing.
    #[serde(default)]
    pub ip_rules: IpRulesConfig,
    /// Headers added to (and removed from) every response.
    #[serde(default)]
    pub security_headers: SecurityHeadersConfig,
    /// Named groups of upstream targets.
    pub clusters: BTreeMap<String, Spanned<ClusterConfig>>,
    /// Routes, matched most specific first (order in the file does not matter).
    pub routes: Vec<Spanned<RouteConfig>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub name: String,
    pub address: Spanned<String>,
    /// Terminate TLS on this listener (TLS 1.2 and 1.3 only; ALPN h2 and http/1.1).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: Spanned<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Spanned<PathBuf>,
    /// Ask clients for a certificate (mTLS at the edge). Absent: never asked.
    #[serde(default)]
    pub client_certificates: Option<Spanned<ClientCertificatesConfig>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default = "AdminConfig::default_address")]
    pub address: Spanned<String>,
    /// Bearer token for `/alerts` and `/responses` (`${ENV}` or `file:`). Without it, those answer
    /// 403: nothing on the admin listener can change state unauthenticated.
    #[serde(default)]
    pub token: Option<Spanned<crate::secret::SecretRef>>,
}

impl AdminConfig {
    fn default_address() -> Spanned<String> {
        unspanned("127.0.0.1:9901".to_string())
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            address: Self::default_address(),
            token: None,
        }
    }
}

/// Protections of the HTTP edge: framing limits, slow clients, connection counts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeLimits {
    /// Open client connections at once, over all listeners; a connection beyond it is closed at once
    /// and counted in `palisade_connections_rejected_total`.
    pub max_connections: usize,
    /// Open connections from one client address (an IPv6 client by its /64), so that one address
    /// cannot take all of `max_connections`. Peers in `trusted_proxies` (load balancers, which carry
    /// many clients) are not capped. 0 turns the cap off.
    pub max_connections_per_client: usize,
    /// Time a client has to send the complete request head (slowloris protection), counted from the
    /// moment the connection is accepted (after the TLS handshake on TLS listeners), so a connection
    /// that never sends a byte is closed like a slow one. It also bounds how long an idle HTTP/1
    /// keep-alive connection waits for its next request.
    pub header_read_timeout: Duration,
    /// Time a client has to complete the TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Total size of the request head (request line and headers); more → 431.
    pub max_header_bytes: ByteSize,
    /// Number of request headers; more → 431.
    pub max_headers: usize,
    /// Request body size for routes that do not set their own; more → 413.
    pub max_body_bytes: ByteSize,
    /// HTTP/2 concurrent streams per connection.
    pub max_concurrent_streams: u32,
    /// For HTTP/2 clients: response bytes read from the upstream ahead of the client. An answer that
    /// fits releases its upstream connection even if the client stops reading it.
    pub response_read_ahead: ByteSize,
    /// For HTTP/2 clients: a client that takes no response data for this long while the read-ahead
    /// is full is cut off (the stream reset, the upstream connection closed). nginx's `send_timeout`.
    pub send_timeout: Duration,
    /// Accept `;` (raw or `%3B`) in request paths. Off by default: servlet containers (Tomcat, Spring)
    /// strip `;…` path parameters, so `/admin;x=1` would be routed as one path and served as `/admin`.
    pub allow_path_parameters: bool,
}

impl Default for EdgeLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_connections_per_client: 512,
            header_read_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
            max_header_bytes: ByteSize(16 * 1024),
            max_headers: 100,
            max_body_bytes: ByteSize(10 * 1024 * 1024),
            max_concurrent_streams: 200,
            response_read_ahead: ByteSize(16 * 1024),
            send_timeout: Duration::from_secs(60),
            allow_path_parameters: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLogConfig {
    pub enabled: bool,
    /// `stdout` or a file path (appended to).
    pub path: String,
    /// Lines waiting to be written; when full, lines are dropped and counted, never waited for.
    pub buffer: usize,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "stdout".into(),
            buffer: 8192,
        }
    }
}

/// The audit log: one OCSF JSON event per security decision, through a bounded queue.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    pub enabled: bool,
    /// `stdout`, a file path (appended to, mode 0600, rotated by size), or `none` (only syslog).
    pub path: String,
    /// A file is rotated to `PATH.1` before it would grow past this.
    pub max_file_bytes: ByteSize,
    /// Rotated files kept (`PATH.1` … `PATH.N`).
    pub keep_files: usize,
    /// Events waiting for the sink; when full, events are dropped, counted and reported later.
    pub buffer: usize,
    /// Also record successful authentications (one event per authenticated request).
    pub authentication_successes: bool,
    /// Also send every event to a syslog collector (RFC 5424 over TCP or TLS).
    pub syslog: Option<AuditSyslogConfig>,
    /// Also send every event to an OpenTelemetry collector (OTLP/HTTP logs).
    pub otlp: Option<AuditOtlpConfig>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditOtlpConfig {
    /// The collector's base URL, `https://…:4318` (plain `http://` only to a loopback address);
    /// events are POSTed to `/v1/logs`.
    pub endpoint: String,
    /// Request headers, e.g. the collector's token; values are secrets (`${ENV}` or `file:`).
    #[serde(default)]
    pub headers: BTreeMap<String, Spanned<crate::secret::SecretRef>>,
    /// A PEM bundle trusted besides the Mozilla roots.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// The resource's `service.name`. Default `palisade`.
    #[serde(default)]
    pub service_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSyslogConfig {
    /// `host:port` of the collector.
    pub address: String,
    /// TLS (RFC 5425). Absent: plain TCP (RFC 6587 octet counting).
    #[serde(default)]
    pub tls: Option<AuditSyslogTls>,
    /// The HOSTNAME field. Default: `palisade`.
    #[serde(default)]
    pub hostname: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSyslogTls {
    /// PEM bundle to verify the collector with. Absent: the Mozilla root set.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// The collector's DNS name, verified in its certificate.
    pub server_name: String,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "stdout".into(),
            max_file_bytes: ByteSize(100 * 1024 * 1024),
            keep_files: 5,
            buffer: 8192,
            authentication_successes: false,
            syslog: None,
            otlp: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadConfig {
    /// Reload when the config file (or a TLS file it names) changes on disk. SIGHUP always reloads.
    pub watch: bool,
    pub poll_interval: Duration,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self {
            watch: true,
            poll_interval: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    pub drain_timeout: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge (h2c).
    Http2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    #[default]
    RoundRobin,
    /// Power of two random choices on in-flight requests.
    LeastRequest,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `host:port` of each target.
    pub targets: Vec<Spanned<String>>,
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    #[serde(default)]
    pub balance: Balance,
    #[serde(default = "ClusterConfig::default_connect_timeout")]
    pub connect_timeout: Duration,
    /// From sending the request to receiving the response head; → 504.
    #[serde(default = "ClusterConfig::default_request_timeout")]
    pub request_timeout: Duration,
    /// Pooled keep-alive connections idle for longer are closed.
    #[serde(default = "ClusterConfig::default_idle_timeout")]
    pub idle_timeout: Duration,
    #[serde(default = "ClusterConfig::default_max_idle")]
    pub max_idle_per_target: usize,
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    #[serde(default)]
    pub passive_health: PassiveHealthConfig,
    #[serde(default)]
    pub retries: RetryConfig,
    /// Reach the targets over TLS (HTTP/1.1 only), optionally with a client certificate (mTLS) and
    /// verifying the targets' SPIFFE ID.
    #[serde(default)]
    pub tls: Option<Spanned<UpstreamTlsConfig>>,
}

/// TLS towards a cluster's targets. The files are re-read on reload (and when they change on disk);
/// connections opened afterwards use the new certificate, open ones finish on the old.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// PEM bundle the targets' certificates must chain to. Absent: the Mozilla root set (not with
    /// `spiffe_id`, which needs the mesh's trust bundle).
    #[serde(default)]
    pub ca: Option<Spanned<PathBuf>>,
    /// The SPIFFE ID the targets must present (exact, or a pattern such as
    /// `spiffe://example.org/ns/shop/*`); DNS names are then not checked.
    #[serde(default)]
    pub spiffe_id: Option<Spanned<String>>,
    /// The DNS name verified and sent as SNI. Default: the target's host.
    #[serde(default)]
    pub server_name: Option<Spanned<String>>,
    /// PEM certificate chain presented to the targets (mTLS); with `key`.
    #[serde(default)]
    pub cert: Option<Spanned<PathBuf>>,
    #[serde(default)]
    pub key: Option<Spanned<PathBuf>>,
}

impl ClusterConfig {
    /// A cluster of `targets` with every other setting at its default.
    pub fn with_targets(targets: Vec<Spanned<String>>) -> Self {
        Self {
            targets,
            protocol: UpstreamProtocol::default(),
            balance: Balance::default(),
            connect_timeout: Self::default_connect_timeout(),
            request_timeout: Self::default_request_timeout(),
            idle_timeout: Self::default_idle_timeout(),
            max_idle_per_target: Self::default_max_idle(),
            health_check: None,
            passive_health: PassiveHealthConfig::default(),
            retries: RetryConfig::default(),
            tls: None,
        }
    }

    fn default_connect_timeout() -> Duration {
        Duration::from_secs(2)
    }
    fn default_request_timeout() -> Duration {
        Duration::from_secs(30)
    }
    fn default_idle_timeout() -> Duration {
        Duration::from_secs(60)
    }
    fn default_max_idle() -> usize {
        256
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    pub path: Spanned<String>,
    #[serde(default = "HealthCheckConfig::default_interval")]
    pub interval: Duration,
    #[serde(default = "HealthCheckConfig::default_timeout")]
    pub timeout: Duration,
    #[serde(default = "HealthCheckConfig::default_healthy")]
    pub healthy_threshold: u32,
    #[serde(default = "HealthCheckConfig::default_unhealthy")]
    pub unhealthy_threshold: u32,
}

impl HealthCheckConfig {
    fn default_interval() -> Duration {
        Duration::from_secs(5)
    }
    fn default_timeout() -> Duration {
        Duration::from_secs(1)
    }
    fn default_healthy() -> u32 {
        2
    }
    fn default_unhealthy() -> u32 {
        3
    }
}

/// Outlier ejection from live traffic: a target that fails this many requests in a row (connect
/// errors, timeouts, 5xx) is taken out of rotation for `ejection_time`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveHealthConfig {
    /// 0 disables passive ejection.
    pub consecutive_failures: u32,
    /// How long a first ejection lasts; each ejection that follows soon after the last doubles it
    /// (as Envoy's outlier detection does), up to `max_ejection_time`. Active health checks that pass
    /// `healthy_threshold` times bring an ejected target back before that.
    pub ejection_time: Duration,
    /// Default: 300 s, or `ejection_time` when that is longer.
    pub max_ejection_time: Option<Duration>,
}

impl PassiveHealthConfig {
    /// The longest an ejection may last.
    pub fn max_ejection(&self) -> std::time::Duration {
        self.max_ejection_time.map_or(
            std::time::Duration::from_secs(300).max(self.ejection_time.get()),
            |max| max.get(),
        )
    }
}

impl Default for PassiveHealthConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            ejection_time: Duration::from_secs(30),
            max_ejection_time: None,
        }
    }
}

/// Retries apply only to idempotent methods without a request body, and only while the budget allows,
/// so that retries cannot multiply load on an upstream that is already failing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Extra attempts after the first; 0 disables retries.
    pub attempts: u32,
    /// Retries may add at most this fraction of the recent request volume...
    pub budget_ratio: f32,
    /// ...plus this many retries per second.
    pub budget_min_per_second: u32,
    /// Which failures are retried.
    pub on: Vec<RetryOn>,
}

/// A failure after which a request may be tried again on another target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryOn {
    /// Refused, reset or timed out while connecting, or the TLS handshake failed: the request was
    /// never sent. The default, as in nginx (`proxy_next_upstream error timeout`) and HAProxy
    /// (`retry-on conn-failure`).
    ConnectFailure,
    /// The connection broke (reset or closed) after the request was sent and before any response
    /// head arrived: the target died or dropped a kept-alive connection under it. Idempotent
    /// requests only, as every retry. On by default, as nginx's `proxy_next_upstream error`; it costs
    /// a copy of each retryable request's head, kept until the answer's head arrives.
    Reset,
    /// The target answered 503. Off by default: a 503 often means the service is overloaded, and it
    /// costs a copy of every retryable request's headers, kept in case the answer is 503.
    Unavailable,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: 1,
            budget_ratio: 0.2,
            budget_min_per_second: 10,
            on: vec![RetryOn::ConnectFailure, RetryOn::Reset],
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Unique name, used in metrics and the access log.
    pub name: Spanned<String>,
    #[serde(rename = "match")]
    pub matcher: Spanned<RouteMatch>,
    /// Name of the cluster that serves this route.
    pub cluster: Spanned<String>,
    /// Request body limit for this route; default `limits.max_body_bytes`.
    #[serde(default)]
    pub max_body_bytes: Option<ByteSize>,
    /// Reachable without credentials. A route must be `public: true` or list `authentication`.
    #[serde(default)]
    pub public: bool,
    /// Accepted ways to authenticate; any one of them succeeding is enough.
    #[serde(default)]
    pub authentication: Option<Spanned<Vec<Spanned<AuthMethod>>>>,
    /// Who may use the route once authenticated (default deny). Required with `authentication`.
    #[serde(default)]
    pub authorization: Option<Spanned<AuthorizationConfig>>,
    /// Rate limits; a request must pass every one (429 otherwise).
    #[serde(default)]
    pub rate_limits: Vec<Spanned<RouteRateLimit>>,
    /// Requests this route may have in flight at once (per gateway process); more → 503.
    #[serde(default)]
    pub max_in_flight: Option<Spanned<usize>>,
    /// Networks refused (or the only ones allowed) on this route, after the global rules.
    #[serde(default)]
    pub ip_rules: Option<IpRulesConfig>,
    /// Cross-origin access for browsers; preflights are answered at the gateway.
    #[serde(default)]
    pub cors: Option<Spanned<CorsConfig>>,
    /// Still served, with `Deprecation`, `Sunset` and `Link` headers.
    #[serde(default)]
    pub deprecated: Option<Spanned<DeprecationConfig>>,
    /// No longer served: 410 Gone naming the successor.
    #[serde(default)]
    pub retired: Option<Spanned<RetiredConfig>>,
    /// Check requests against an OpenAPI operation before they reach the upstream (400).
    #[serde(default)]
    pub validate: Option<Spanned<ValidationConfig>>,
    /// Protocols a client may switch to with `Upgrade` on this route. Absent: `[websocket]`; `[]`
    /// lets no upgrade through. `h2c` is never allowed: the client would then speak HTTP/2 straight
    /// to the upstream, past routing. A request asking for anything else goes on as a plain request
    /// without its `Upgrade`.
    #[serde(default)]
    pub upgrades: Option<Spanned<Vec<String>>>,
    /// Honour `X-HTTP-Method-Override` (and `X-HTTP-Method`, `X-Method-Override`) on POST: the route
    /// is chosen, authorized and sent upstream with the overriding method. Off: the headers are
    /// removed, so an upstream framework cannot run a DELETE that was authorized as a POST.
    #[serde(default)]
    pub method_override: bool,
    /// The `route` label of this route's metrics, shared with every route naming the same group.
    /// Absent: the route's name.
    #[serde(default)]
    pub metrics_group: Option<Spanned<String>>,
}

/// The upgrades a route allows when it does not say: WebSocket.
pub const DEFAULT_UPGRADES: [&str; 1] = ["websocket"];

impl RouteConfig {
    /// A route with every optional setting absent (not public, no authentication: complete it).
    pub fn new(name: Spanned<String>, matcher: Spanned<RouteMatch>, cluster: Spanned<String>) -> Self {
        Self {
            name,
            matcher,
            cluster,
            max_body_bytes: None,
            public: false,
            authentication: None,
            authorization: None,
            rate_limits: Vec::new(),
            max_in_flight: None,
            ip_rules: None,
            cors: None,
            deprecated: None,
            retired: None,
            validate: None,
            upgrades: None,
            method_override: false,
            metrics_group: None,
        }
    }
}

/// How routes appear in `/metrics`: every route label costs a set of series, so their number is
/// bounded.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Distinct route labels (route names, or `metrics_group`s where routes name one). Routes beyond
    /// them, in file order, are counted under `route="other"` (and `check-config` says so).
    pub max_route_labels: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { max_route_labels: 1000 }
    }
}

/// The route label metrics use for routes past `metrics.max_route_labels`.
pub const OTHER_ROUTES_LABEL: &str = "other";
/// The route label of requests no route matched.
pub const UNROUTED_LABEL: &str = "none";

impl Config {
    /// The metrics label of each route, in config order: its group or name, or
    /// [`OTHER_ROUTES_LABEL`] once `metrics.max_route_labels` distinct labels are taken.
    pub fn route_metric_labels(&self) -> Vec<String> {
        let mut taken = std::collections::HashSet::new();
        self.routes
            .iter()
            .map(|route| {
                let route = &route.value;
                let wanted = route
                    .metrics_group
                    .as_ref()
                    .map_or(&route.name.value, |group| &group.value);
                if taken.contains(wanted.as_str()) || taken.len() < self.metrics.max_route_labels {
                    taken.insert(wanted.as_str());
                    wanted.clone()
                } else {
                    OTHER_ROUTES_LABEL.to_string()
                }
            })
            .collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// `api.example.com` (exact) or `*.example.com` (any subdomain). Absent: any host.
    #[serde(default)]
    pub host: Option<String>,
    /// Exact path or template: `/orders`, `/orders/{id}`. Exclusive with `prefix`.
    #[serde(default)]
    pub path: Option<String>,
    /// Path prefix on segment boundaries: `/api` matches `/api` and `/api/x`, not `/apix`.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Allowed methods. Absent: any method.
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// Only requests that arrived on these listeners (by name). Absent: every listener.
    #[serde(default)]
    pub listeners: Option<Vec<String>>,
    /// `false`: the path's letters match in any ASCII case (`/Admin` is routed here like `/admin`),
    /// for services that do not tell case apart. Set it on a protected route that has a public
    /// neighbour such as a catch-all, or `/ADMIN` reaches the service through the neighbour.
    #[serde(default = "yes")]
    pub case_sensitive: bool,
}

fn yes() -> bool {
    true
}

impl Config {
    /// Files the config names whose contents matter (certificates, CA bundles, key sets, API
    /// keys): the reload watcher polls them with the config file itself.
    pub fn referenced_files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for listener in &self.listeners {
            if let Some(tls) = &listener.value.tls {
                files.push(tls.cert.value.clone());
                files.push(tls.key.value.clone());
                if let Some(client) = &tls.client_certificates {
                    files.extend(client.value.ca.iter().map(|f| f.value.clone()));
                }
            }
        }
        for cluster in self.clusters.values() {
            if let Some(tls) = &cluster.value.tls {
                let named = [&tls.value.ca, &tls.value.cert, &tls.value.key];
                files.extend(named.into_iter().flatten().map(|f| f.value.clone()));
            }
        }
        let auth = &self.authentication;
        for provider in auth.jwt_providers.values() {
            files.extend(provider.value.keys.value.jwks_file.iter().map(|f| f.value.clone()));
        }
        files.extend(auth.api_keys.file.iter().map(|f| f.value.clone()));
        files.extend(self.ip_rules.files().cloned());
        for route in &self.routes {
            files.extend(route.value.ip_rules.iter().flat_map(|rules| rules.files().cloned()));
            files.extend(route.value.validate.iter().map(|v| v.value.openapi.value.clone()));
        }
        for set in self.policies.values() {
            files.push(set.value.schema.value.clone());
            files.extend(set.value.files.iter().map(|f| f.value.clone()));
        }
        files
    }
}

/// A value that did not come from the file (a default) and so has no location.
pub fn unspanned<T>(value: T) -> Spanned<T> {
    Spanned::new(value, serde_saphyr::Location::UNKNOWN, serde_saphyr::Location::UNKNOWN)
}
