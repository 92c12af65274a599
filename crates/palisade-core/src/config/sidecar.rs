//! The sidecar's configuration: a short file in the terms of one workload (its identity, who may call
//! it, whom it calls), translated into a gateway [`Config`] so that the sidecar runs the very same
//! pipeline (routing, mTLS authentication, default-deny authorization, rate limits, metrics, access
//! log) as the edge gateway. Every translated value keeps the location of the sidecar line it came
//! from, so errors found later still point into the sidecar file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::auth::{
    AuthorizationConfig, CertificateSubject, ClientCertificateMode, ClientCertificatesConfig, RuleConfig,
};
use super::{
    unspanned, AccessLogConfig, AdminConfig, AuditConfig, AuthMethod, ClusterConfig, Config, EdgeLimits,
    ListenerConfig, RateLimitsConfig, ReloadConfig, RouteConfig, RouteMatch, RouteRateLimit, ShutdownConfig, TlsConfig,
    UpstreamTlsConfig,
};
use crate::diagnostic::Diagnostics;
use crate::spiffe::SpiffePattern;

/// Listener names the sidecar's routes are bound to.
pub const INBOUND: &str = "inbound";
pub const OUTBOUND: &str = "outbound";
/// The cluster that is the local application.
pub const APP: &str = "app";
/// The header that carries the verified caller to the application.
pub const PEER_ID_HEADER: &str = "x-palisade-peer-id";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SidecarConfig {
    /// The trust domain of this workload; callers from any other are refused in the handshake.
    pub trust_domain: Spanned<String>,
    /// This workload's certificate, key and trust bundle (kept fresh by `palisade ca` or the agent).
    pub identity: IdentityFiles,
    pub inbound: Option<Spanned<InboundConfig>>,
    pub outbound: Option<Spanned<OutboundConfig>>,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub limits: EdgeLimits,
    #[serde(default)]
    pub access_log: AccessLogConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub reload: ReloadConfig,
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    #[serde(default)]
    pub rate_limits: RateLimitsConfig,
    #[serde(default)]
    pub workers: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityFiles {
    /// PEM chain: this workload's X.509-SVID, then its intermediate.
    pub cert: Spanned<PathBuf>,
    pub key: Spanned<PathBuf>,
    /// PEM trust bundle (the CA's `bundle.pem`): what peers must chain to. With `ca`, it must be
    /// there at start (it is how the sidecar recognizes the identity service) unless
    /// `ca.bootstrap_bundle` is given; later versions are fetched from the service.
    pub bundle: Spanned<PathBuf>,
    /// Obtain and renew the certificate from `palisade ca serve` instead of having it put in place.
    #[serde(default)]
    pub ca: Option<Spanned<IdentityServiceConfig>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityServiceConfig {
    /// `https://host:port` of the identity service.
    pub url: Spanned<String>,
    /// The SPIFFE ID the service must present. Default `spiffe://TRUST_DOMAIN/palisade/ca`.
    #[serde(default)]
    pub server_id: Option<Spanned<String>>,
    /// The one-time join token for the first certificate (`${ENV}` or `file:`); not needed while a
    /// valid certificate is on disk.
    #[serde(default)]
    pub join_token: Option<Spanned<crate::secret::SecretRef>>,
    /// On Kubernetes, instead of a join token: the pod's projected ServiceAccount token file
    /// (audience `palisade-ca` by default), read whenever a certificate is needed and none is valid.
    #[serde(default)]
    pub service_account_token: Option<Spanned<PathBuf>>,
    /// The CA's trust bundle to recognize the identity service by until `identity.bundle` has
    /// been written (a read-only ConfigMap on Kubernetes, while `identity.bundle` is in a writable
    /// volume).
    #[serde(default)]
    pub bootstrap_bundle: Option<Spanned<PathBuf>>,
    /// The lifetime to ask for (the service may shorten it). Default: the service's.
    #[serde(default)]
    pub ttl: Option<crate::units::Duration>,
}

/// Calls into this workload: mTLS in, authorized by caller identity, forwarded to the app.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundConfig {
    pub address: Spanned<String>,
    /// The application, `127.0.0.1:PORT`.
    pub app: Spanned<String>,
    /// Default deny: a request must match a route and its caller be allowed there.
    pub routes: Vec<Spanned<InboundRoute>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundRoute {
    pub name: Spanned<String>,
    #[serde(rename = "match")]
    pub matcher: Spanned<RouteMatch>,
    /// Callers allowed: SPIFFE IDs, or patterns such as `spiffe://example.org/ns/shop/*`.
    pub allow: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub rate_limits: Vec<Spanned<RouteRateLimit>>,
    #[serde(default)]
    pub max_in_flight: Option<Spanned<usize>>,
}

/// Calls out of this workload: the app speaks plain HTTP to a loopback address, the sidecar speaks
/// mTLS to the destination and checks that it is who it should be.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    /// Loopback only: whoever can reach this address calls with this workload's identity.
    pub address: Spanned<String>,
    /// By name; the app picks one with the `Host` header (`http://127.0.0.1:PORT/` + `Host: NAME`).
    pub destinations: BTreeMap<String, Spanned<Destination>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// The destination's sidecars (`host:port` of their inbound listeners).
    pub targets: Vec<Spanned<String>>,
    /// The identity the destination must present (exact, or a pattern).
    pub spiffe_id: Spanned<String>,
}

impl SidecarConfig {
    /// No listeners: the sidecar only obtains and renews the pod's certificate (with `identity.ca`)
    /// for the pod's other containers to use, as the edge gateway does on Kubernetes.
    pub fn identity_only(&self) -> bool {
        self.inbound.is_none() && self.outbound.is_none()
    }

    /// The gateway config that runs this sidecar. Problems only the sidecar form can have are added
    /// to `diagnostics`; the result is then validated like any gateway config.
    pub fn into_gateway(self, diagnostics: &mut Diagnostics) -> Config {
        self.check(diagnostics);
        let mut listeners = Vec::new();
        let mut clusters = BTreeMap::new();
        let mut routes = Vec::new();
        if let Some(inbound) = &self.inbound {
            listeners.push(inbound_listener(&self, &inbound.value));
            clusters.insert(APP.to_string(), unspanned(plain_cluster(&inbound.value.app)));
            routes.extend(inbound.value.routes.iter().map(inbound_route));
        }
        if let Some(outbound) = &self.outbound {
            listeners.push(unspanned(ListenerConfig {
                name: OUTBOUND.to_string(),
                address: outbound.value.address.clone(),
                tls: None,
            }));
            for (name, destination) in &outbound.value.destinations {
                let cluster = destination_cluster(&self.identity, &destination.value);
                clusters.insert(cluster_name(name), at(cluster, destination));
                routes.push(outbound_route(name, destination));
            }
        }
        let mut authentication = super::AuthenticationConfig::default();
        authentication.identity.headers = BTreeMap::from([(PEER_ID_HEADER.to_string(), "{sub}".to_string())]);
        Config {
            listeners,
            workers: self.workers,
            admin: self.admin,
            limits: self.limits,
            trusted_proxies: Vec::new(),
            access_log: self.access_log,
            metrics: Default::default(),
            audit: self.audit,
            detection: Default::default(),
            runtime_alerts: None,
            reload: self.reload,
            shutdown: self.shutdown,
            authentication,
            policies: BTreeMap::new(),
            rate_limits: self.rate_limits,
            ip_rules: Default::default(),
            security_headers: Default::default(),
            clusters,
            routes,
        }
    }

    fn check(&self, diagnostics: &mut Diagnostics) {
        let domain = &self.trust_domain;
        if let Err(error) = crate::spiffe::check_trust_domain(&domain.value) {
            diagnostics.on(domain, format!("trust_domain {:?}: {error}", domain.value));
        }
        if let Some(service) = &self.identity.ca {
            let url = &service.value.url;
            if !url.value.starts_with("https://") || url.value.parse::<http::Uri>().is_err() {
                diagnostics.on(url, format!("{:?} is not an https:// URL", url.value));
            }
            if let Some(id) = &service.value.server_id {
                check_pattern(id, &domain.value, diagnostics);
            }
            if let (Some(_), Some(token)) = (&service.value.join_token, &service.value.service_account_token) {
                diagnostics.on(
                    token,
                    "identity.ca: join_token and service_account_token are two ways to the first certificate; give one",
                );
            }
        }
        if self.identity_only() {
            if self.identity.ca.is_none() {
                diagnostics.general(
                    "a sidecar needs `inbound`, `outbound` or both (or `identity.ca` alone, to keep the pod's certificate fresh for its other containers)",
                );
            }
            if self.admin.address.value.parse::<std::net::SocketAddr>().is_err() {
                diagnostics.on(&self.admin.address, "admin.address is not an address:port");
            }
        }
        for route in self.inbound.iter().flat_map(|i| i.value.routes.iter()) {
            if route.value.allow.value.is_empty() {
                diagnostics.on(&route.value.allow, "allow names no caller: leave the route out instead");
            }
            for caller in &route.value.allow.value {
                check_pattern(caller, &domain.value, diagnostics);
            }
        }
        if let Some(outbound) = &self.outbound {
            let loopback = outbound
                .value
                .address
                .value
                .parse::<std::net::SocketAddr>()
                .is_ok_and(|a| a.ip().is_loopback());
            if !loopback {
                diagnostics.on(
                    &outbound.value.address,
                    "outbound.address must be a loopback address: whoever reaches it calls with this workload's identity",
                );
            }
            for (name, destination) in &outbound.value.destinations {
                check_pattern(&destination.value.spiffe_id, &domain.value, diagnostics);
                if destination.value.targets.is_empty() {
                    diagnostics.on(destination, format!("destination {name:?} has no targets"));
                }
            }
        }
    }
}

fn check_pattern(text: &Spanned<String>, trust_domain: &str, diagnostics: &mut Diagnostics) {
    match SpiffePattern::parse(&text.value) {
        Ok(pattern) if pattern.trust_domain() != trust_domain => diagnostics.on(
            text,
            format!("{} is outside the trust domain {trust_domain:?}", text.value),
        ),
        Ok(_) => {}
        Err(error) => diagnostics.on(text, format!("{:?}: {error}", text.value)),
    }
}

fn inbound_listener(sidecar: &SidecarConfig, inbound: &InboundConfig) -> Spanned<ListenerConfig> {
    let identity = &sidecar.identity;
    let client_certificates = ClientCertificatesConfig {
        mode: ClientCertificateMode::Require,
        ca: vec![identity.bundle.clone()],
        subject_from: vec![CertificateSubject::UriSan],
        trust_domains: vec![sidecar.trust_domain.clone()],
    };
    unspanned(ListenerConfig {
        name: INBOUND.to_string(),
        address: inbound.address.clone(),
        tls: Some(TlsConfig {
            cert: identity.cert.clone(),
            key: identity.key.clone(),
            client_certificates: Some(unspanned(client_certificates)),
        }),
    })
}

fn plain_cluster(target: &Spanned<String>) -> ClusterConfig {
    ClusterConfig::with_targets(vec![target.clone()])
}

fn destination_cluster(identity: &IdentityFiles, destination: &Destination) -> ClusterConfig {
    let mut cluster = ClusterConfig::with_targets(destination.targets.clone());
    cluster.tls = Some(unspanned(UpstreamTlsConfig {
        ca: Some(identity.bundle.clone()),
        spiffe_id: Some(destination.spiffe_id.clone()),
        server_name: None,
        cert: Some(identity.cert.clone()),
        key: Some(identity.key.clone()),
    }));
    cluster
}

fn cluster_name(destination: &str) -> String {
    format!("destination:{destination}")
}

fn inbound_route(route: &Spanned<InboundRoute>) -> Spanned<RouteConfig> {
    let value = &route.value;
    let mut matcher = value.matcher.clone();
    matcher.value.listeners = Some(vec![INBOUND.to_string()]);
    let rule = RuleConfig {
        id: Some("allow".to_string()),
        // Invalid patterns were reported against the sidecar file already; leaving them out here keeps
        // the gateway-level check from reporting them a second time.
        subjects: Some(
            value
                .allow
                .value
                .iter()
                .filter(|s| SpiffePattern::parse(&s.value).is_ok())
                .map(|s| s.value.clone())
                .collect(),
        ),
        ..RuleConfig::default()
    };
    let authorization = AuthorizationConfig {
        rules: vec![at(rule, &value.allow)],
        ..AuthorizationConfig::default()
    };
    let mut config = RouteConfig::new(value.name.clone(), matcher, unspanned(APP.to_string()));
    config.authentication = Some(at(vec![unspanned(AuthMethod::Mtls)], &value.allow));
    config.authorization = Some(at(authorization, &value.allow));
    config.rate_limits = value.rate_limits.clone();
    config.max_in_flight = value.max_in_flight.clone();
    at(config, route)
}

/// Local calls to a destination: public (the caller is this workload's own app on loopback).
fn outbound_route(name: &str, destination: &Spanned<Destination>) -> Spanned<RouteConfig> {
    let matcher = RouteMatch {
        host: Some(name.to_string()),
        path: None,
        prefix: Some("/".to_string()),
        methods: None,
        listeners: Some(vec![OUTBOUND.to_string()]),
        case_sensitive: true,
    };
    let route_name = at(format!("outbound:{name}"), destination);
    let mut config = RouteConfig::new(route_name, unspanned(matcher), unspanned(cluster_name(name)));
    config.public = true;
    at(config, destination)
}

/// `value` at the location of `span` (so diagnostics about it point into the sidecar file).
fn at<T, U>(value: T, span: &Spanned<U>) -> Spanned<T> {
    Spanned::new(value, span.referenced, span.defined)
}
