//! Prometheus metrics. Labels are bounded by construction: route and cluster names come from the
//! config, methods outside the standard set are folded into `OTHER`, statuses into classes. No client
//! address, subject or path is ever a label.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Methods that get their own label value; anything else is `OTHER`.
pub const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];
const OTHER_METHOD: usize = METHODS.len();
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const LATENCY_BUCKETS: [f64; 15] = [
    0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status_class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    cluster: String,
    target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabel {
    cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthLabels {
    route: String,
    /// `authenticated`, `refused` (401) or `unavailable` (503).
    outcome: String,
    /// The method that succeeded, or the failure's reason code; both come from fixed sets.
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthzLabels {
    route: String,
    /// `allowed` or `denied`.
    outcome: String,
    /// The rule id from the config, `authenticated` or `default-deny`.
    decided_by: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    route: String,
    limit: String,
    /// `allowed` or `limited`.
    outcome: String,
    /// `local`, `shared`, `fallback` or `store_down`.
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    /// `none` for the global IP rules (checked before routing).
    route: String,
    /// `ip_denied` or `too_many_in_flight`.
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabel {
    /// A fixed set: see [`Metrics::connection_rejected`] and [`Metrics::connection_cut`].
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeprecatedLabels {
    route: String,
    /// A principal's subject (the first [`DEPRECATED_PRINCIPALS`] seen per route), `other` beyond
    /// them, `anonymous` on public routes.
    principal: String,
}

/// Distinct principals a deprecated route labels before folding the rest into `other`.
pub const DEPRECATED_PRINCIPALS: usize = 50;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DetectorLabel {
    /// A detector name: a fixed set.
    detector: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabels {
    detector: String,
    severity: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResponseLabels {
    /// `block` or `limit`.
    action: String,
    /// `detector` or `admin`.
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DenialLabels {
    /// A route name from the config, or `none` before routing.
    route: String,
    /// The pipeline stage that refused: a fixed set.
    stage: String,
    /// A reason code: a fixed set.
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandshakeLabels {
    listener: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuntimeAlertLabels {
    source: String,
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// All metrics of one process. Cheap to clone (every metric is reference-counted).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// What the web console samples (kept with the registry across reloads).
    tallies: Arc<crate::tally::Tallies>,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<RouteLabel, Histogram, fn() -> Histogram>,
    upstream_duration: Family<ClusterLabel, Histogram, fn() -> Histogram>,
    upstream_healthy: Family<TargetLabels, Gauge>,
    upstream_retries: Family<ClusterLabel, Counter>,
    upstream_ejections: Family<TargetLabels, Counter>,
    reloads: Family<OutcomeLabel, Counter>,
    auth_decisions: Family<AuthLabels, Counter>,
    authz_decisions: Family<AuthzLabels, Counter>,
    rate_limit_decisions: Family<LimitLabels, Counter>,
    traffic_refusals: Family<RefusalLabels, Counter>,
    deprecated_calls: Family<DeprecatedLabels, Counter>,
    tls_handshake_failures: Family<HandshakeLabels, Counter>,
    denials: Family<DenialLabels, Counter>,
    alerts_opened: Family<AlertLabels, Counter>,
    alerts_open: Family<DetectorLabel, Gauge>,
    anomaly_scores: Family<DetectorLabel, Gauge<f64, AtomicU64>>,
    responses_taken: Family<ResponseLabels, Counter>,
    responses_active: Family<ResponseLabels, Gauge>,
    /// Requests the detectors never saw because their queue was full.
    pub detection_dropped: Counter,
    /// Alert notifications given up after every webhook attempt failed.
    pub alert_webhook_failures: Counter,
    pub rate_limit_store_up: Gauge,
    pub rate_limit_store_errors: Counter,
    pub rate_limit_store_fallbacks: Counter,
    pub last_reload_ok: Gauge,
    /// Compiled configurations alive: the running one, plus any a reload replaced that something
    /// still holds (a request finishing on it). Stays above 1 only if an old world leaks.
    pub config_generations: Gauge,
    pub open_connections: Gauge,
    runtime_alerts: Family<RuntimeAlertLabels, Counter>,
    connections_rejected: Family<ConnectionLabel, Counter>,
    connections_cut: Family<ConnectionLabel, Counter>,
    pub access_log_dropped: Counter,
    /// Seconds until the workload certificate expires (sidecars that renew their own identity).
    pub identity_expiry_seconds: Gauge,
    /// The audit log's counters (written, dropped, queue depth).
    pub audit: crate::audit::AuditMetrics,
}

/// The counters of one route label, each resolved once on its first use: the request path does no
/// label hashing or allocation after that, and a series exists only once something was counted in
/// it (a route label costs the methods and status classes it really saw, not all 50).
#[derive(Clone)]
pub struct RouteMetrics {
    series: Arc<RouteSeries>,
}

struct RouteSeries {
    route: String,
    family: Family<RequestLabels, Counter>,
    durations: Family<RouteLabel, Histogram, fn() -> Histogram>,
    requests: [[OnceLock<Counter>; STATUS_CLASSES.len()]; METHODS.len() + 1],
    duration: OnceLock<Histogram>,
    tally: Arc<crate::tally::RouteTally>,
}

impl RouteMetrics {
    pub fn observe(&self, method: &http::Method, status: u16, seconds: f64) {
        let series = &*self.series;
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        let method = method_index(method);
        let counter = series.requests[method][class].get_or_init(|| {
            let labels = RequestLabels {
                route: series.route.clone(),
                method: METHODS.get(method).copied().unwrap_or("OTHER").to_string(),
                status_class: STATUS_CLASSES[class].to_string(),
            };
            series.family.get_or_create(&labels).clone()
        });
        counter.inc();
        let duration = series.duration.get_or_init(|| {
            let label = RouteLabel {
                route: series.route.clone(),
            };
            series.durations.get_or_create(&label).clone()
        });
        duration.observe(seconds);
        series.tally.record(status, seconds);
    }
}

/// Authentication outcomes of one route.
#[derive(Clone)]
pub struct AuthMetrics {
    route: Arc<str>,
    succeeded: Arc<Vec<(&'static str, Counter)>>,
    family: Family<AuthLabels, Counter>,
    authz_family: Family<AuthzLabels, Counter>,
    /// Authorization counters already resolved, so a decision seen before is counted without
    /// building labels: a route decides by few rules or policies.
    authorized: Arc<std::sync::RwLock<Vec<ResolvedDecision>>>,
}

struct ResolvedDecision {
    allowed: bool,
    decided_by: Arc<str>,
    counter: Counter,
}

/// Distinct decisions a route keeps resolved; rarer ones are looked up by their labels.
const RESOLVED_DECISIONS: usize = 64;

impl AuthMetrics {
    pub fn authenticated(&self, method: &str) {
        if let Some((_, counter)) = self.succeeded.iter().find(|(m, _)| *m == method) {
            counter.inc();
        }
    }

    /// An authorization decision; `decided_by` is a rule id from the config, Cedar policy ids, or a
    /// fixed word. The same rule's id is usually the same `Arc`, so most lookups compare pointers.
    pub fn authorized(&self, allowed: bool, decided_by: &Arc<str>) {
        let same = |known: &ResolvedDecision| {
            known.allowed == allowed && (Arc::ptr_eq(&known.decided_by, decided_by) || known.decided_by == *decided_by)
        };
        if let Ok(resolved) = self.authorized.read() {
            if let Some(known) = resolved.iter().find(|known| same(known)) {
                known.counter.inc();
                return;
            }
        }
        let labels = AuthzLabels {
            route: self.route.to_string(),
            outcome: if allowed { "allowed" } else { "denied" }.to_string(),
            decided_by: decided_by.to_string(),
        };
        let counter = self.authz_family.get_or_create(&labels).clone();
        counter.inc();
        if let Ok(mut resolved) = self.authorized.write() {
            if resolved.len() < RESOLVED_DECISIONS && !resolved.iter().any(same) {
                resolved.push(ResolvedDecision {
                    allowed,
                    decided_by: Arc::clone(decided_by),
                    counter,
                });
            }
        }
    }

    /// `reason` is a reason code (a fixed set), never anything from the request.
    pub fn refused(&self, reason: &'static str, unavailable: bool) {
        let labels = AuthLabels {
            route: self.route.to_string(),
            outcome: if unavailable { "unavailable" } else { "refused" }.to_string(),
            reason: reason.to_string(),
        };
        self.family.get_or_create(&labels).inc();
    }
}

/// Calls to one deprecated route, by principal.
#[derive(Clone)]
pub struct DeprecatedMetrics {
    route: Arc<str>,
    seen: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    family: Family<DeprecatedLabels, Counter>,
}

impl DeprecatedMetrics {
    pub fn record(&self, subject: Option<&str>) {
        let principal = match subject {
            None => "anonymous".to_string(),
            Some(subject) => {
                let mut seen = self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if seen.contains(subject) || seen.len() < DEPRECATED_PRINCIPALS && seen.insert(subject.to_string()) {
                    subject.to_string()
                } else {
                    "other".to_string()
                }
            }
        };
        let labels = DeprecatedLabels {
            route: self.route.to_string(),
            principal,
        };
        self.family.get_or_create(&labels).inc();
    }
}

/// Decisions of one rate limit; the common outcomes are pre-resolved.
#[derive(Clone)]
pub struct LimitMetrics {
    route: Arc<str>,
    limit: Arc<str>,
    allowed_local: Counter,
    allowed_shared: Counter,
    family: Family<LimitLabels, Counter>,
}

impl LimitMetrics {
    /// `source` is one of `local`, `shared`, `fallback`, `store_down`.
    pub fn record(&self, allowed: bool, source: &'static str) {
        match (allowed, source) {
            (true, "local") => self.allowed_local.inc(),
            (true, "shared") => self.allowed_shared.inc(),
            _ => {
                let labels = LimitLabels {
                    route: self.route.to_string(),
                    limit: self.limit.to_string(),
                    outcome: if allowed { "allowed" } else { "limited" }.to_string(),
                    source: source.to_string(),
                };
                self.family.get_or_create(&labels).inc()
            }
        };
    }
}

fn method_index(method: &http::Method) -> usize {
    METHODS
        .iter()
        .position(|m| *m == method.as_str())
        .unwrap_or(OTHER_METHOD)
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("palisade");
        let metrics = Self {
            registry: Arc::new(Registry::default()),
            tallies: Arc::default(),
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            upstream_duration: Family::new_with_constructor(latency_histogram),
            upstream_healthy: Family::default(),
            upstream_retries: Family::default(),
            upstream_ejections: Family::default(),
            reloads: Family::default(),
            auth_decisions: Family::default(),
            authz_decisions: Family::default(),
            rate_limit_decisions: Family::default(),
            traffic_refusals: Family::default(),
            deprecated_calls: Family::default(),
            tls_handshake_failures: Family::default(),
            denials: Family::default(),
            alerts_opened: Family::default(),
            alerts_open: Family::default(),
            anomaly_scores: Family::default(),
            responses_taken: Family::default(),
            responses_active: Family::default(),
            detection_dropped: Counter::default(),
            alert_webhook_failures: Counter::default(),
            rate_limit_store_up: Gauge::default(),
            rate_limit_store_errors: Counter::default(),
            rate_limit_store_fallbacks: Counter::default(),
            last_reload_ok: Gauge::default(),
            config_generations: Gauge::default(),
            open_connections: Gauge::default(),
            runtime_alerts: Family::default(),
            connections_rejected: Family::default(),
            connections_cut: Family::default(),
            access_log_dropped: Counter::default(),
            identity_expiry_seconds: Gauge::default(),
            audit: crate::audit::AuditMetrics::default(),
        };
        let m = &metrics;
        registry.register(
            "requests",
            "Requests answered, by route, method and status class",
            m.requests.clone(),
        );
        registry.register(
            "auth_decisions",
            "Authentication decisions by route, outcome and method or reason code",
            m.auth_decisions.clone(),
        );
        registry.register(
            "authz_decisions",
            "Authorization decisions by route, outcome and the rule that decided",
            m.authz_decisions.clone(),
        );
        registry.register(
            "rate_limit_decisions",
            "Rate limit decisions by route, limit, outcome and where they were counted",
            m.rate_limit_decisions.clone(),
        );
        registry.register(
            "audit_events_written",
            "Audit events written to the sink",
            m.audit.written.clone(),
        );
        registry.register(
            "audit_events_dropped",
            "Audit events lost because the queue was full or the sink failed (reported as an event later)",
            m.audit.dropped.clone(),
        );
        registry.register(
            "audit_queue_depth",
            "Audit events waiting for the sink",
            m.audit.queue_depth.clone(),
        );
        registry.register(
            "identity_expiry_seconds",
            "Seconds until this workload's certificate expires (0: expired or none)",
            m.identity_expiry_seconds.clone(),
        );
        registry.register(
            "denials",
            "Requests refused by a security stage, by route, stage and reason code (the audited decisions)",
            m.denials.clone(),
        );
        registry.register(
            "alerts_opened",
            "Alerts opened by the anomaly detectors, by detector and severity",
            m.alerts_opened.clone(),
        );
        registry.register("alerts_open", "Alerts open now, by detector", m.alerts_open.clone());
        registry.register(
            "anomaly_score",
            "The highest score of each detector at its last evaluation (1 = at its alert threshold)",
            m.anomaly_scores.clone(),
        );
        registry.register(
            "responses_taken",
            "Automatic and manual responses (blocks, tightened limits) applied, by action and source",
            m.responses_taken.clone(),
        );
        registry.register(
            "responses_active",
            "Responses in force now, by action and source",
            m.responses_active.clone(),
        );
        registry.register(
            "detection_dropped",
            "Requests the anomaly detectors did not see because their queue was full",
            m.detection_dropped.clone(),
        );
        registry.register(
            "alert_webhook_failures",
            "Alert notifications given up after every webhook attempt failed",
            m.alert_webhook_failures.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes refused or abandoned on client listeners, by listener and reason code",
            m.tls_handshake_failures.clone(),
        );
        registry.register(
            "traffic_refusals",
            "Requests refused by IP rules or the in-flight limit, by route and reason",
            m.traffic_refusals.clone(),
        );
        registry.register(
            "deprecated_calls",
            "Calls to deprecated routes by route and principal (bounded: the first 50 principals per route, then other)",
            m.deprecated_calls.clone(),
        );
        registry.register(
            "rate_limit_store_up",
            "Whether the shared rate-limit store (Redis) answers: 1 yes, 0 no",
            m.rate_limit_store_up.clone(),
        );
        registry.register(
            "rate_limit_store_errors",
            "Calls to the shared rate-limit store that failed or timed out",
            m.rate_limit_store_errors.clone(),
        );
        registry.register(
            "rate_limit_store_fallbacks",
            "Rate limit decisions made without the shared store because it was down",
            m.rate_limit_store_fallbacks.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request head to the end of the response, by route",
            m.request_duration.clone(),
        );
        registry.register(
            "upstream_duration_seconds",
            "Time from sending a request upstream to its response head, by cluster",
            m.upstream_duration.clone(),
        );
        registry.register(
            "upstream_healthy",
            "1 when a target is in rotation, 0 when not",
            m.upstream_healthy.clone(),
        );
        registry.register(
            "upstream_retries",
            "Requests retried on another attempt",
            m.upstream_retries.clone(),
        );
        registry.register(
            "upstream_ejections",
            "Targets ejected by passive health checks",
            m.upstream_ejections.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration reloads by outcome (ok, rejected)",
            m.reloads.clone(),
        );
        registry.register(
            "config_last_reload_ok",
            "1 when the last reload succeeded",
            m.last_reload_ok.clone(),
        );
        registry.register(
            "config_generations",
            "Compiled configurations alive: 1, plus replaced ones that requests still finish on",
            m.config_generations.clone(),
        );
        registry.register(
            "open_connections",
            "Client connections open now",
            m.open_connections.clone(),
        );
        registry.register(
            "runtime_alerts",
            "Runtime alerts received (Falco, webhook) by what was done: quarantine, record, refused",
            m.runtime_alerts.clone(),
        );
        registry.register(
            "connections_rejected",
            "Client connections closed at once by reason (max_connections, max_connections_per_client)",
            m.connections_rejected.clone(),
        );
        registry.register(
            "connections_cut",
            "Client connections closed by a deadline by reason (silent, header_timeout)",
            m.connections_cut.clone(),
        );
        registry.register(
            "access_log_dropped",
            "Access log lines dropped because the writer fell behind",
            m.access_log_dropped.clone(),
        );
        Self {
            registry: Arc::new(registry),
            ..metrics
        }
    }

    /// The request counters of one route label (series appear as they are used).
    /// The running totals the web console samples.
    pub fn tallies(&self) -> &Arc<crate::tally::Tallies> {
        &self.tallies
    }

    pub fn route(&self, route: &str) -> RouteMetrics {
        RouteMetrics {
            series: Arc::new(RouteSeries {
                route: route.to_string(),
                family: self.requests.clone(),
                durations: self.request_duration.clone(),
                requests: Default::default(),
                duration: OnceLock::new(),
                tally: self.tallies.route(route),
            }),
        }
    }

    /// Authentication counters of a route that accepts `methods`: successes are pre-resolved (they
    /// are the hot path), refusals are looked up when they happen.
    pub fn route_auth(&self, route: &str, methods: &[&'static str]) -> AuthMetrics {
        let succeeded = methods
            .iter()
            .map(|method| (*method, self.auth_counter(route, "authenticated", method)))
            .collect();
        AuthMetrics {
            route: route.into(),
            succeeded: Arc::new(succeeded),
            family: self.auth_decisions.clone(),
            authz_family: self.authz_decisions.clone(),
            authorized: Arc::default(),
        }
    }

    fn auth_counter(&self, route: &str, outcome: &str, reason: &str) -> Counter {
        let labels = AuthLabels {
            route: route.to_string(),
            outcome: outcome.to_string(),
            reason: reason.to_string(),
        };
        self.auth_decisions.get_or_create(&labels).clone()
    }

    pub fn rate_limit(&self, route: &str, limit: &str) -> LimitMetrics {
        LimitMetrics {
            route: route.into(),
            limit: limit.into(),
            allowed_local: self.limit_counter(route, limit, "allowed", "local"),
            allowed_shared: self.limit_counter(route, limit, "allowed", "shared"),
            family: self.rate_limit_decisions.clone(),
        }
    }

    fn limit_counter(&self, route: &str, limit: &str, outcome: &str, source: &str) -> Counter {
        let labels = LimitLabels {
            route: route.to_string(),
            limit: limit.to_string(),
            outcome: outcome.to_string(),
            source: source.to_string(),
        };
        self.rate_limit_decisions.get_or_create(&labels).clone()
    }

    pub fn deprecated(&self, route: &str) -> DeprecatedMetrics {
        DeprecatedMetrics {
            route: route.into(),
            seen: Arc::new(std::sync::Mutex::new(std::collections::HashSet::new())),
            family: self.deprecated_calls.clone(),
        }
    }

    /// A request refused by a stage for a reason (both from fixed sets) on `route` (a config name).
    pub fn denied(&self, route: &str, decision: palisade_core::decision::Decision) {
        let labels = DenialLabels {
            route: route.to_string(),
            stage: decision.stage.as_str().to_string(),
            reason: decision.reason.to_string(),
        };
        self.denials.get_or_create(&labels).inc();
    }

    /// An alert opened (`detector` and `severity` from fixed sets).
    pub fn alert_opened(&self, detector: &str, severity: &str) {
        let labels = AlertLabels {
            detector: detector.to_string(),
            severity: severity.to_string(),
        };
        self.alerts_opened.get_or_create(&labels).inc();
    }

    /// The detectors' state after one evaluation: open alerts and highest score per detector.
    pub fn detector_state(&self, detector: &str, open: i64, score: f64) {
        let label = DetectorLabel {
            detector: detector.to_string(),
        };
        self.alerts_open.get_or_create(&label).set(open);
        self.anomaly_scores.get_or_create(&label).set(score);
    }

    /// A response applied (`action`: block or limit; `source`: detector or admin).
    pub fn response_taken(&self, action: &str, source: &str) {
        self.responses_taken
            .get_or_create(&response_labels(action, source))
            .inc();
    }

    /// A runtime alert received from `source` (`falco`, `webhook`) and what was done (`quarantine`,
    /// `record`, `refused`).
    pub fn runtime_alert(&self, source: &'static str, action: &'static str) {
        self.runtime_alerts
            .get_or_create(&RuntimeAlertLabels {
                source: source.to_string(),
                action: action.to_string(),
            })
            .inc();
    }

    /// Responses in force, per action and source.
    pub fn responses_active(&self, action: &str, source: &str, count: i64) {
        self.responses_active
            .get_or_create(&response_labels(action, source))
            .set(count);
    }

    /// `reason` is one of a fixed set of codes (see `docs/errors.md`).
    pub fn tls_handshake_failed(&self, listener: &str, reason: &'static str) {
        let labels = HandshakeLabels {
            listener: listener.to_string(),
            reason: reason.to_string(),
        };
        self.tls_handshake_failures.get_or_create(&labels).inc();
    }

    /// A connection closed as soon as it was accepted: `max_connections` or
    /// `max_connections_per_client`.
    pub fn connection_rejected(&self, reason: &'static str) {
        let label = ConnectionLabel {
            reason: reason.to_string(),
        };
        self.connections_rejected.get_or_create(&label).inc();
    }

    /// A connection closed by a deadline: `silent` (no byte before the header timeout) or
    /// `header_timeout` (a request head not complete in time).
    pub fn connection_cut(&self, reason: &'static str) {
        let label = ConnectionLabel {
            reason: reason.to_string(),
        };
        self.connections_cut.get_or_create(&label).inc();
    }

    /// `reason` is `ip_denied` or `too_many_in_flight`.
    pub fn traffic_refused(&self, route: &str, reason: &'static str) {
        let labels = RefusalLabels {
            route: route.to_string(),
            reason: reason.to_string(),
        };
        self.traffic_refusals.get_or_create(&labels).inc();
    }

    pub fn upstream_duration(&self, cluster: &str) -> Histogram {
        self.upstream_duration
            .get_or_create(&ClusterLabel {
                cluster: cluster.to_string(),
            })
            .clone()
    }

    pub fn upstream_retries(&self, cluster: &str) -> Counter {
        self.upstream_retries
            .get_or_create(&ClusterLabel {
                cluster: cluster.to_string(),
            })
            .clone()
    }

    pub fn upstream_healthy(&self, cluster: &str, target: &str) -> Gauge {
        let labels = TargetLabels {
            cluster: cluster.to_string(),
            target: target.to_string(),
        };
        self.upstream_healthy.get_or_create(&labels).clone()
    }

    pub fn upstream_ejections(&self, cluster: &str, target: &str) -> Counter {
        let labels = TargetLabels {
            cluster: cluster.to_string(),
            target: target.to_string(),
        };
        self.upstream_ejections.get_or_create(&labels).clone()
    }

    /// Records a reload attempt and sets the "last reload ok" gauge.
    pub fn record_reload(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "rejected" };
        self.reloads
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
        self.last_reload_ok.set(i64::from(ok));
    }

    /// Reloads counted so far that were applied (`ok`) or rejected.
    pub fn reloads(&self, ok: bool) -> u64 {
        let outcome = if ok { "ok" } else { "rejected" };
        self.reloads
            .get(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .map_or(0, |counter| counter.get())
    }

    /// Drops the health gauge of targets that left the config, so `/metrics` shows only live ones.
    pub fn forget_target(&self, cluster: &str, target: &str) {
        let labels = TargetLabels {
            cluster: cluster.to_string(),
            target: target.to_string(),
        };
        self.upstream_healthy.remove(&labels);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// The content type of [`Metrics::encode`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn response_labels(action: &str, source: &str) -> ResponseLabels {
    ResponseLabels {
        action: action.to_string(),
        source: source.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reload_counts_are_read_back_without_making_series() {
        let metrics = Metrics::new();
        assert_eq!((metrics.reloads(true), metrics.reloads(false)), (0, 0));
        assert!(
            !metrics.encode().contains("config_reloads_total{"),
            "reading made no series"
        );
        metrics.record_reload(true);
        metrics.record_reload(true);
        metrics.record_reload(false);
        assert_eq!((metrics.reloads(true), metrics.reloads(false)), (2, 1));
    }

    #[test]
    fn unusual_methods_fold_into_other() {
        let metrics = Metrics::new();
        let route = metrics.route("orders");
        route.observe(&http::Method::from_bytes(b"BREW").unwrap(), 418, 0.001);
        route.observe(&http::Method::GET, 200, 0.001);
        let text = metrics.encode();
        assert!(
            text.contains(r#"palisade_requests_total{route="orders",method="OTHER",status_class="4xx"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"palisade_requests_total{route="orders",method="GET",status_class="2xx"} 1"#));
        assert!(!text.contains("BREW"));
    }

    #[test]
    fn authorization_decisions_count_by_id_whether_or_not_the_id_is_the_same_allocation() {
        let metrics = Metrics::new();
        let route = metrics.route_auth("orders", &["jwt"]);
        let rule: Arc<str> = Arc::from("readers");
        route.authorized(true, &rule);
        route.authorized(true, &rule);
        // Equal text in another allocation (a Cedar decision that joins policy ids) is the same series.
        route.authorized(true, &Arc::from("readers"));
        route.authorized(false, &rule);
        route.authorized(false, &Arc::from("default-deny"));
        let text = metrics.encode();
        let count = |outcome: &str, decided_by: &str| {
            let series = format!(
                r#"palisade_authz_decisions_total{{route="orders",outcome="{outcome}",decided_by="{decided_by}"}} "#
            );
            text.lines()
                .find_map(|line| line.strip_prefix(series.as_str()).map(str::to_string))
        };
        assert_eq!(count("allowed", "readers").as_deref(), Some("3"), "{text}");
        assert_eq!(count("denied", "readers").as_deref(), Some("1"), "{text}");
        assert_eq!(count("denied", "default-deny").as_deref(), Some("1"), "{text}");
    }
}

#[cfg(test)]
mod examples {
    //! The example Prometheus rules and the Grafana dashboard name only metrics the gateway
    //! exports, and promtool accepts the rules.

    /// Metric names (without the `palisade_` prefix) this module registers. Read from the
    /// `registry.register(` calls: a family without a series yet has no `# TYPE` line to read.
    fn exported() -> Vec<String> {
        let source = include_str!("metrics.rs");
        let mut names = Vec::new();
        let mut rest = source;
        while let Some(at) = rest.find("registry.register(") {
            rest = &rest[at + "registry.register(".len()..];
            let Some(start) = rest.find('"') else { break };
            let tail = &rest[start + 1..];
            if let Some(end) = tail.find('"') {
                names.push(tail[..end].to_string());
            }
        }
        // The exposition agrees for the families that always have a series.
        for always in ["open_connections", "config_generations", "audit_queue_depth"] {
            assert!(
                super::Metrics::new()
                    .encode()
                    .contains(&format!("# TYPE palisade_{always} gauge")),
                "{always}"
            );
        }
        names
    }

    /// Every `palisade_*` metric `text` names, each checked against `exported`; the count of uses.
    fn check_names(file: &str, text: &str, exported: &[String]) -> usize {
        let mut used = 0;
        // Recording rule names (`route:palisade_requests:rate1m`) are ours, not exported metrics.
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
            let Some(name) = word.strip_prefix("palisade_").filter(|name| !name.is_empty()) else {
                continue;
            };
            let base = ["_total", "_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            assert!(
                exported.iter().any(|e| e == base),
                "{file} uses palisade_{name}, which the gateway does not export (exported: {exported:?})"
            );
            used += 1;
        }
        used
    }

    const ALERTS: &str = include_str!("../../../examples/prometheus/palisade-alerts.yaml");
    const RECORDING: &str = include_str!("../../../examples/prometheus/palisade-recording.yaml");
    const DASHBOARD: &str = include_str!("../../../examples/grafana/palisade-dashboard.json");

    #[test]
    fn every_metric_the_rules_and_the_dashboard_name_is_exported() {
        let exported = exported();
        assert!(exported.len() > 30, "{exported:?}");
        assert!(check_names("palisade-alerts.yaml", ALERTS, &exported) >= 12);
        assert!(check_names("palisade-recording.yaml", RECORDING, &exported) >= 8);
        let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
        let mut expressions = 0;
        for panel in dashboard["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().expect("every target has a PromQL expression");
                assert!(
                    check_names("palisade-dashboard.json", expr, &exported) >= 1,
                    "panel {:?} queries no Palisade metric: {expr}",
                    panel["title"]
                );
                expressions += 1;
            }
        }
        assert!(expressions >= 25, "{expressions} dashboard queries");
    }

    #[test]
    fn a_metric_that_does_not_exist_is_caught() {
        let exported = exported();
        let result = std::panic::catch_unwind(|| check_names("test", "rate(palisade_requests_totall[5m])", &exported));
        assert!(result.is_err(), "a misspelt metric must fail the check");
    }

    /// `promtool check rules` (Debian's `prometheus` package; CI installs it).
    #[test]
    fn promtool_accepts_the_rules() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/prometheus");
        let run = std::process::Command::new("promtool")
            .arg("check")
            .arg("rules")
            .arg(format!("{dir}/palisade-alerts.yaml"))
            .arg(format!("{dir}/palisade-recording.yaml"))
            .output();
        let output = match run {
            Ok(output) => output,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("promtool not installed (Debian: prometheus); skipped");
                return;
            }
            Err(error) => panic!("promtool: {error}"),
        };
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "{text}");
        assert!(text.contains("SUCCESS"), "{text}");
    }
}
