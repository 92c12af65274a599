//! The running configuration: everything compiled from a [`Config`] that the request path reads.
//! A `Runtime` is immutable; a reload builds a new one and swaps it in whole, while requests already
//! in flight finish on the one they started with.

use std::collections::BTreeMap;
use std::sync::Arc;

use palisade_auth::identity::InternalSigner;
use palisade_auth::{AuthMethodKind, Authenticator, RouteAuth};
use palisade_core::config::{Config, RouteConfig, StoreTlsConfig, UpstreamProtocol};
use palisade_core::{parse_cidr, ConfigErrors, Diagnostics, Spanned};
use palisade_limits::{InFlight, IpRules, RateLimit, ResponseTable, SharedStore, StoreHealth, StoreTls};
use palisade_telemetry::access_log::Destination;
use palisade_telemetry::audit::{AuditLog, AuditSink, OtlpTarget, SyslogTarget};
use palisade_telemetry::{AccessLog, AuthMetrics, LimitMetrics, Metrics, RouteMetrics};
use rustls::sign::CertifiedKey;

use crate::detection::{DetectionFeed, DetectionTally};
use crate::pipeline::cors::Cors;
use crate::pipeline::forwarded::TrustedProxies;
use crate::pipeline::lifecycle::Lifecycle;
use crate::pipeline::route::Router;
use crate::pipeline::security_headers::SecurityHeaders;
use crate::tls;
use crate::upstream::tls::UpstreamTls;
use crate::upstream::Cluster;

/// A route's settings, by its index in the config.
pub struct RouteRuntime {
    pub name: String,
    /// Answers counted for the anomaly detectors; kept across reloads.
    pub detection: Arc<DetectionTally>,
    pub cluster: Arc<Cluster>,
    pub protocol: UpstreamProtocol,
    pub max_body_bytes: u64,
    /// `None`: the route is `public: true`.
    pub auth: Option<RouteAuth>,
    pub auth_metrics: Option<AuthMetrics>,
    /// `None` on public routes.
    pub authorization: Option<palisade_authz::RouteRules>,
    /// The `route` label of this route's metrics: its name, its `metrics_group`, or `other` past
    /// `metrics.max_route_labels`.
    pub metrics_label: String,
    pub metrics: RouteMetrics,
    pub ip_rules: Option<IpRules>,
    pub rate_limits: Vec<(RateLimit, LimitMetrics)>,
    /// The `RateLimit-Policy` value, the same on every response of the route.
    pub rate_limit_policy: http::HeaderValue,
    pub in_flight: Option<InFlight>,
    pub cors: Option<Cors>,
    pub lifecycle: Option<Lifecycle>,
    /// The OpenAPI operation(s) requests must match, on routes with `validate`.
    pub validator: Option<palisade_validate::RouteValidator>,
    /// The protocols a client may upgrade to here (see `pipeline::upgrade`).
    pub upgrades: Vec<String>,
    /// Method-override headers are honoured here (see `pipeline::method_override`).
    pub method_override: bool,
}

pub struct Runtime {
    pub config: Config,
    pub router: Router,
    pub routes: Vec<RouteRuntime>,
    pub clusters: BTreeMap<String, Arc<Cluster>>,
    pub trusted_proxies: TrustedProxies,
    /// The largest body any route accepts: a chunk declared larger is refused by the framing
    /// inspector before the request goes anywhere.
    pub max_body_bytes_any_route: u64,
    pub access_log: Option<AccessLog>,
    /// Security decisions as OCSF events; kept across reloads while its settings do not change.
    pub audit: Option<AuditLog>,
    /// Server certificates by listener name.
    pub certificates: BTreeMap<String, Arc<CertifiedKey>>,
    /// Client certificate verifiers by listener name (listeners with `client_certificates`).
    pub client_verifiers: BTreeMap<String, Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    pub authenticator: Authenticator,
    /// The key for internal identity tokens: made once, kept across reloads.
    pub signer: Arc<InternalSigner>,
    /// Global IP rules, checked before routing.
    pub ip_rules: Option<IpRules>,
    /// The shared rate-limit store, when `rate_limits.store` is Redis; kept across reloads.
    pub limit_store: Option<Arc<SharedStore>>,
    pub metrics: Metrics,
    pub security_headers: SecurityHeaders,
    /// Blocks and tightened limits in force; kept across reloads.
    pub responses: Arc<ResponseTable>,
    /// The queue into the anomaly detectors and their alerts; kept across reloads.
    pub detection: Arc<DetectionFeed>,
    unrouted_metrics: RouteMetrics,
    _alive: Alive,
}

/// Counts a `Runtime` in `palisade_config_generations` for as long as it exists.
struct Alive(prometheus_client::metrics::gauge::Gauge);

impl Alive {
    fn new(metrics: &Metrics) -> Alive {
        metrics.config_generations.inc();
        Alive(metrics.config_generations.clone())
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Runtime {
    /// The name of the route at `index` (the context's `route_index`), if one matched.
    pub fn route_name(&self, index: Option<usize>) -> Option<&str> {
        index.and_then(|i| self.routes.get(i)).map(|route| route.name.as_str())
    }

    /// The `route` label metrics carry for the route at `index` (`none` when no route matched).
    pub fn route_label(&self, index: Option<usize>) -> &str {
        index
            .and_then(|i| self.routes.get(i))
            .map_or(palisade_core::config::UNROUTED_LABEL, |route| {
                route.metrics_label.as_str()
            })
    }

    pub fn route_metrics(&self, index: Option<usize>) -> RouteMetrics {
        index
            .and_then(|i| self.routes.get(i))
            .map_or_else(|| self.unrouted_metrics.clone(), |r| r.metrics.clone())
    }

    /// Compiles `config`. Clusters whose settings did not change are taken over from `previous`, so a
    /// reload keeps their pooled connections and health state.
    /// `diagnostics` holds what validation already found; compiling adds its own findings (route
    /// ties, TLS material) and fails if there are any.
    pub async fn compile(
        config: Config,
        mut diagnostics: Diagnostics,
        previous: Option<&Runtime>,
        metrics: &Metrics,
        workers: usize,
        fetch_remote_keys: bool,
    ) -> Result<Runtime, ConfigErrors> {
        let router = Router::compile(&config.routes, &mut diagnostics);
        let certificates = tls::load_certificates(&config, &mut diagnostics);
        let client_verifiers = tls::load_client_verifiers(&config, &mut diagnostics);
        let policy_sets = load_policy_sets(&config, &mut diagnostics);
        check_named_actions(&config, &policy_sets, &mut diagnostics);
        let authenticator = Authenticator::compile(
            &config.authentication,
            previous.map(|p| &p.authenticator),
            &mut diagnostics,
            fetch_remote_keys,
        )
        .await;
        let signer = match previous {
            Some(previous) => previous.signer.clone(),
            None => match InternalSigner::generate() {
                Ok(signer) => Arc::new(signer),
                Err(message) => {
                    diagnostics.general(format!("cannot create the internal token key: {message}"));
                    return Err(ConfigErrors(diagnostics.into_errors()));
                }
            },
        };
        let access_log = start_access_log(&config, previous, metrics, &mut diagnostics).await;
        let audit = start_audit_log(&config, previous, metrics, &mut diagnostics).await;
        let ip_rules = load_ip_rules(&config.ip_rules, &mut diagnostics);
        let route_ip_rules: Vec<Option<IpRules>> = config
            .routes
            .iter()
            .map(|route| load_ip_rules(route.value.ip_rules.as_ref()?, &mut diagnostics))
            .collect();
        let limit_store = connect_limit_store(&config, previous, metrics, &mut diagnostics);
        let mut validators: Vec<Option<palisade_validate::RouteValidator>> = config
            .routes
            .iter()
            .map(|route| load_validator(&route.value, &mut diagnostics))
            .collect();
        let upstream_tls: BTreeMap<String, Arc<UpstreamTls>> = config
            .clusters
            .iter()
            .filter_map(|(name, cluster)| {
                let tls = UpstreamTls::load(cluster.value.tls.as_ref()?, &mut diagnostics)?;
                Some((name.clone(), tls))
            })
            .collect();
        if !diagnostics.is_empty() {
            return Err(ConfigErrors(diagnostics.into_errors()));
        }
        let clusters = build_clusters(&config, previous, &upstream_tls, metrics, workers);
        // One RouteRuntime per configured route, in config order: the router refers to routes by that
        // index, so a route that could not be built is an error here, never a gap that shifts the rest.
        let mut routes: Vec<RouteRuntime> = Vec::with_capacity(config.routes.len());
        let labels = config.route_metric_labels();
        for (((spanned, ip_rules), validator), label) in config
            .routes
            .iter()
            .zip(route_ip_rules)
            .zip(validators.drain(..))
            .zip(labels)
        {
            let route = &spanned.value;
            let (Some(cluster), Some(cluster_config)) = (
                clusters.get(&route.cluster.value),
                config.clusters.get(&route.cluster.value),
            ) else {
                diagnostics.on(
                    &route.cluster,
                    format!("route {:?}: its cluster was not built", route.name.value),
                );
                return Err(ConfigErrors(diagnostics.into_errors()));
            };
            let previous_route = previous.and_then(|p| p.routes.iter().find(|r| r.name == route.name.value));
            let limits = RouteLimits::build(&config, route, &label, limit_store.as_ref(), previous_route, metrics);
            let (cluster, protocol) = (cluster.clone(), cluster_config.value.protocol);
            routes.push(RouteRuntime {
                name: route.name.value.clone(),
                detection: previous_route.map_or_else(Default::default, |p| p.detection.clone()),
                cluster,
                protocol,
                max_body_bytes: route.max_body_bytes.unwrap_or(config.limits.max_body_bytes).get(),
                auth: route
                    .authentication
                    .as_ref()
                    .map(|methods| authenticator.route(&methods.value)),
                authorization: route
                    .authorization
                    .as_ref()
                    .map(|a| palisade_authz::RouteRules::compile(&a.value, &policy_sets)),
                auth_metrics: route.authentication.as_ref().map(|methods| {
                    let names: Vec<&'static str> = methods
                        .value
                        .iter()
                        .map(|m| AuthMethodKind::from(&m.value).as_str())
                        .collect();
                    metrics.route_auth(&label, &names)
                }),
                metrics: metrics.route(&label),
                ip_rules,
                rate_limits: limits.rate_limits,
                rate_limit_policy: limits.policy,
                in_flight: limits.in_flight,
                cors: route
                    .cors
                    .as_ref()
                    .map(|cors| Cors::compile(&cors.value, route.matcher.value.methods.as_deref())),
                lifecycle: match (&route.deprecated, &route.retired) {
                    (Some(deprecated), _) => Some(Lifecycle::deprecated(&deprecated.value, metrics.deprecated(&label))),
                    (None, Some(retired)) => Some(Lifecycle::retired(&retired.value)),
                    (None, None) => None,
                },
                validator,
                upgrades: match &route.upgrades {
                    Some(list) => list.value.iter().map(|p| p.to_ascii_lowercase()).collect(),
                    None => palisade_core::config::DEFAULT_UPGRADES.map(String::from).to_vec(),
                },
                method_override: route.method_override,
                metrics_label: label,
            });
        }
        if routes.len() != config.routes.len() {
            diagnostics.general("every route must be compiled once, in config order");
            return Err(ConfigErrors(diagnostics.into_errors()));
        }
        let trusted_proxies = TrustedProxies::new(
            config
                .trusted_proxies
                .iter()
                .filter_map(|p| parse_cidr(&p.value))
                .collect(),
        );
        let max_body_bytes_any_route = routes
            .iter()
            .map(|route| route.max_body_bytes)
            .fold(config.limits.max_body_bytes.get(), u64::max);
        Ok(Runtime {
            max_body_bytes_any_route,
            router,
            routes,
            clusters,
            trusted_proxies,
            access_log,
            audit,
            certificates,
            client_verifiers,
            authenticator,
            signer,
            ip_rules,
            limit_store,
            metrics: metrics.clone(),
            security_headers: SecurityHeaders::compile(&config.security_headers),
            responses: previous.map_or_else(
                || Arc::new(ResponseTable::new(config.detection.max_responses)),
                |p| p.responses.clone(),
            ),
            detection: previous.map_or_else(|| Arc::new(DetectionFeed::new()), |p| p.detection.clone()),
            unrouted_metrics: metrics.route(palisade_core::config::UNROUTED_LABEL),
            _alive: Alive::new(metrics),
            config,
        })
    }
}

/// A route's traffic limits, built from its config and taking over state from the route of the
/// same name in the runtime being replaced.
struct RouteLimits {
    rate_limits: Vec<(RateLimit, LimitMetrics)>,
    policy: http::HeaderValue,
    in_flight: Option<InFlight>,
}

impl RouteLimits {
    fn build(
        config: &Config,
        route: &RouteConfig,
        label: &str,
        store: Option<&Arc<SharedStore>>,
        previous: Option<&RouteRuntime>,
        metrics: &Metrics,
    ) -> RouteLimits {
        let name = &route.name.value;
        let shared = store.map(|store| (store.clone(), config.rate_limits.on_store_error));
        let rate_limits: Vec<(RateLimit, LimitMetrics)> = route
            .rate_limits
            .iter()
            .map(|limit| {
                let limit = &limit.value;
                let before = previous.and_then(|p| p.rate_limits.iter().find(|(l, _)| l.name == limit.name.value));
                let built = RateLimit::new(
                    name,
                    limit,
                    config.rate_limits.max_keys,
                    shared.clone(),
                    before.map(|(l, _)| l),
                );
                (built, metrics.rate_limit(label, &limit.name.value))
            })
            .collect();
        let policy = rate_limits
            .iter()
            .map(|(limit, _)| limit.policy_header_item())
            .collect::<Vec<_>>()
            .join(", ");
        let in_flight = route
            .max_in_flight
            .as_ref()
            .map(|max| match previous.and_then(|p| p.in_flight.as_ref()) {
                Some(before) => InFlight::sharing(before, max.value),
                None => InFlight::new(max.value),
            });
        RouteLimits {
            rate_limits,
            // Names are validated tokens and the rest are numbers, so the value is always valid.
            policy: http::HeaderValue::from_str(&policy).unwrap_or(http::HeaderValue::from_static("")),
            in_flight,
        }
    }
}

fn load_validator(route: &RouteConfig, diagnostics: &mut Diagnostics) -> Option<palisade_validate::RouteValidator> {
    let settings = route.validate.as_ref()?;
    match palisade_validate::RouteValidator::load(&settings.value, route.matcher.value.path.as_deref()) {
        Ok(validator) => Some(validator),
        Err(errors) => {
            diagnostics.absorb(errors);
            None
        }
    }
}

fn load_ip_rules(config: &palisade_core::config::IpRulesConfig, diagnostics: &mut Diagnostics) -> Option<IpRules> {
    if config.is_empty() {
        return None;
    }
    match IpRules::load(config) {
        Ok(rules) => Some(rules),
        Err(errors) => {
            diagnostics.absorb(errors);
            None
        }
    }
}

/// The Redis store named by `rate_limits.store`, or `None` for `local`. The previous runtime's
/// connection is kept when the store settings did not change.
fn connect_limit_store(
    config: &Config,
    previous: Option<&Runtime>,
    metrics: &Metrics,
    diagnostics: &mut Diagnostics,
) -> Option<Arc<SharedStore>> {
    let settings = &config.rate_limits;
    if settings.store.value == "local" {
        return None;
    }
    let tls = match &settings.store_tls {
        Some(tls) => Some(read_store_tls(tls, diagnostics)?),
        None => None,
    };
    if let Some(previous) = previous {
        let old = &previous.config.rate_limits;
        if old.store.value == settings.store.value && old.store_timeout == settings.store_timeout {
            if let Some(store) = previous
                .limit_store
                .as_ref()
                .filter(|store| store.tls() == tls.as_ref())
            {
                return Some(store.clone());
            }
        }
    }
    let health = StoreHealth {
        up: metrics.rate_limit_store_up.clone(),
        errors: metrics.rate_limit_store_errors.clone(),
        fallbacks: metrics.rate_limit_store_fallbacks.clone(),
    };
    match SharedStore::connect(
        &settings.store.value,
        settings.store_timeout.get(),
        tls.as_ref(),
        health,
    ) {
        Ok(store) => Some(Arc::new(store)),
        Err(error) => {
            diagnostics.on(&settings.store, error.to_string());
            None
        }
    }
}

/// The PEM files of `rate_limits.store_tls`, read now (at load and on every reload, so that a renewed
/// certificate makes a new connection).
fn read_store_tls(tls: &Spanned<StoreTlsConfig>, diagnostics: &mut Diagnostics) -> Option<StoreTls> {
    let mut read = |file: &Spanned<std::path::PathBuf>| match std::fs::read(&file.value) {
        Ok(bytes) => Some(bytes),
        Err(error) => {
            diagnostics.on(file, format!("cannot read {}: {error}", file.value.display()));
            None
        }
    };
    let ca_pem = match &tls.value.ca {
        Some(ca) => Some(read(ca)?),
        None => None,
    };
    let client_pem = match (&tls.value.cert, &tls.value.key) {
        (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
        _ => None,
    };
    Some(StoreTls { ca_pem, client_pem })
}

/// Loads every Cedar policy set; a set that does not parse or validate is a diagnostic at its file.
fn load_policy_sets(
    config: &Config,
    diagnostics: &mut Diagnostics,
) -> BTreeMap<String, Arc<palisade_authz::CedarPolicies>> {
    let mut sets = BTreeMap::new();
    for (name, set) in &config.policies {
        match palisade_authz::CedarPolicies::load(name, set) {
            Ok(loaded) => {
                sets.insert(name.clone(), Arc::new(loaded));
            }
            Err(errors) => diagnostics.absorb(errors),
        }
    }
    sets
}

/// A route's named operations (`authorization.actions`) must be actions of its policy set's
/// schema: a misspelt name would otherwise deny every request without a word.
fn check_named_actions(
    config: &Config,
    policy_sets: &BTreeMap<String, Arc<palisade_authz::CedarPolicies>>,
    diagnostics: &mut Diagnostics,
) {
    for route in &config.routes {
        let Some(authorization) = &route.value.authorization else {
            continue;
        };
        let Some(set) = authorization
            .value
            .policies
            .as_ref()
            .and_then(|n| policy_sets.get(&n.value))
        else {
            continue;
        };
        for (method, action) in &authorization.value.actions {
            if !set.declares_action(&action.value) {
                diagnostics.on(
                    action,
                    format!(
                        "route {:?}: {method} names action {:?}, which the policy set's schema does not declare",
                        route.value.name.value, action.value
                    ),
                );
            }
        }
    }
}

/// Clusters whose settings did not change are kept (with their pools and health state); their TLS
/// material is swapped in place, so a renewed certificate needs no new cluster.
fn build_clusters(
    config: &Config,
    previous: Option<&Runtime>,
    upstream_tls: &BTreeMap<String, Arc<UpstreamTls>>,
    metrics: &Metrics,
    workers: usize,
) -> BTreeMap<String, Arc<Cluster>> {
    let mut clusters = BTreeMap::new();
    for (name, cluster) in &config.clusters {
        let fresh_fingerprint = crate::upstream::fingerprint(&cluster.value);
        let kept = previous
            .and_then(|p| p.clusters.get(name))
            .filter(|c| c.fingerprint == fresh_fingerprint);
        let tls = upstream_tls.get(name).cloned();
        let built = match kept {
            Some(existing) => {
                existing.tls.store(tls);
                existing.clone()
            }
            None => Cluster::start(name, &cluster.value, tls, metrics, workers),
        };
        clusters.insert(name.clone(), built);
    }
    if let Some(previous) = previous {
        for (name, old) in &previous.clusters {
            for target in &old.targets {
                let still_there = clusters
                    .get(name)
                    .is_some_and(|c| c.targets.iter().any(|t| t.address == target.address));
                if !still_there {
                    metrics.forget_target(name, &target.address);
                }
            }
        }
    }
    clusters
}

async fn start_audit_log(
    config: &Config,
    previous: Option<&Runtime>,
    metrics: &Metrics,
    diagnostics: &mut Diagnostics,
) -> Option<AuditLog> {
    let settings = &config.audit;
    if !settings.enabled {
        return None;
    }
    if let Some(previous) = previous.filter(|p| p.config.audit == *settings) {
        return previous.audit.clone();
    }
    let mut sinks = Vec::new();
    match settings.path.as_str() {
        "none" => {}
        "stdout" | "-" => sinks.push(AuditSink::Stdout),
        path => sinks.push(AuditSink::File {
            path: path.into(),
            max_bytes: settings.max_file_bytes.get(),
            keep: settings.keep_files,
        }),
    }
    if let Some(syslog) = &settings.syslog {
        sinks.push(AuditSink::Syslog(SyslogTarget {
            address: syslog.address.clone(),
            tls: syslog.tls.as_ref().map(|tls| (tls.ca.clone(), tls.server_name.clone())),
            hostname: syslog.hostname.clone().unwrap_or_else(|| "palisade".into()),
        }));
    }
    if let Some(otlp) = &settings.otlp {
        // Secret references were checked at validation; a value that vanished since is an error here.
        let mut headers = Vec::new();
        for (name, reference) in &otlp.headers {
            match reference.value.resolve() {
                Ok(value) => headers.push((name.clone(), value.expose().to_string())),
                Err(error) => diagnostics.general(format!("audit.otlp.headers.{name}: {error}")),
            }
        }
        sinks.push(AuditSink::Otlp(OtlpTarget {
            endpoint: otlp.endpoint.clone(),
            headers,
            ca: otlp.ca.clone(),
            service_name: otlp.service_name.clone().unwrap_or_else(|| "palisade".into()),
        }));
    }
    match AuditLog::start(sinks, settings.buffer, metrics.audit.clone()).await {
        Ok(log) => Some(log),
        Err(error) => {
            diagnostics.general(format!(
                "audit.path {:?} cannot be opened: {}",
                settings.path,
                error.kind()
            ));
            None
        }
    }
}

async fn start_access_log(
    config: &Config,
    previous: Option<&Runtime>,
    metrics: &Metrics,
    diagnostics: &mut Diagnostics,
) -> Option<AccessLog> {
    let settings = &config.access_log;
    if !settings.enabled {
        return None;
    }
    if let Some(previous) = previous {
        let old = &previous.config.access_log;
        if old.enabled && old.path == settings.path && old.buffer == settings.buffer {
            return previous.access_log.clone();
        }
    }
    match AccessLog::start(
        Destination::parse(&settings.path),
        settings.buffer,
        metrics.access_log_dropped.clone(),
    )
    .await
    {
        Ok(log) => Some(log),
        Err(error) => {
            diagnostics.general(format!(
                "access_log.path {:?} cannot be opened: {}",
                settings.path,
                error.kind()
            ));
            None
        }
    }
}
