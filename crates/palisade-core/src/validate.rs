//! Structural validation of a parsed config: everything that can be checked without building the
//! runtime objects. The gateway adds what needs them (route conflicts, TLS material) with the same
//! located diagnostics.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_saphyr::Spanned;

use crate::config::{ClusterConfig, Config, RouteConfig};
use crate::diagnostic::Diagnostics;

/// hyper refuses read buffers below 8 KiB, and a head above 1 MiB is an attack, not a request.
const HEADER_BYTES_RANGE: std::ops::RangeInclusive<u64> = 8 * 1024..=1024 * 1024;

pub(crate) fn validate(config: &Config, diagnostics: &mut Diagnostics) {
    validate_listeners(config, diagnostics);
    validate_limits(config, diagnostics);
    for proxy in &config.trusted_proxies {
        if parse_cidr(&proxy.value).is_none() {
            diagnostics.on(
                proxy,
                format!("trusted_proxies: {:?} is not an IP address or CIDR", proxy.value),
            );
        }
    }
    if config.access_log.buffer == 0 {
        diagnostics.general("access_log.buffer must be at least 1");
    }
    if config.audit.buffer == 0 || config.audit.max_file_bytes.get() < 4096 {
        diagnostics.general("audit.buffer must be at least 1 and audit.max_file_bytes at least 4KiB");
    }
    if let Some(otlp) = &config.audit.otlp {
        let endpoint = &otlp.endpoint;
        if !is_secure_url(endpoint) {
            diagnostics.general(format!(
                "audit.otlp.endpoint {endpoint:?} must be an https:// URL (http:// only to a loopback address)"
            ));
        }
        for (name, value) in &otlp.headers {
            if let Err(error) = value.value.resolve() {
                diagnostics.on(value, format!("audit.otlp.headers.{name}: {error}"));
            }
        }
    }
    if let Some(syslog) = &config.audit.syslog {
        if !is_host_port(&syslog.address) {
            diagnostics.general(format!("audit.syslog.address {:?} is not host:port", syslog.address));
        }
        if let Some(ca) = syslog.tls.as_ref().and_then(|tls| tls.ca.as_ref()) {
            if !ca.is_file() {
                diagnostics.general(format!("audit.syslog.tls.ca {} does not exist", ca.display()));
            }
        }
    }
    validate_detection(config, diagnostics);
    if let Some(alerts) = &config.runtime_alerts {
        validate_runtime_alerts(&alerts.value, diagnostics);
    }
    for (name, cluster) in &config.clusters {
        validate_cluster(name, &cluster.value, diagnostics);
        if cluster.value.targets.is_empty() {
            diagnostics.on(cluster, format!("cluster {name:?} has no targets"));
        }
    }
    validate_routes(config, diagnostics);
    crate::validate_auth::validate(config, diagnostics);
    crate::validate_traffic::validate(config, diagnostics);
}

/// Accepts `10.0.0.0/8`, `::1/128` and bare addresses (as a single-host network).
pub fn parse_cidr(text: &str) -> Option<ipnet::IpNet> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| text.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

fn validate_listeners(config: &Config, diagnostics: &mut Diagnostics) {
    if config.listeners.is_empty() {
        diagnostics.general("listeners: at least one listener is required");
    }
    let mut names = HashSet::new();
    for listener in &config.listeners {
        let value = &listener.value;
        if !names.insert(value.name.as_str()) {
            diagnostics.on(listener, format!("listener name {:?} is used twice", value.name));
        }
        if value.address.value.parse::<SocketAddr>().is_err() {
            diagnostics.on(
                &value.address,
                format!("{:?} is not an address such as 0.0.0.0:8080", value.address.value),
            );
        }
        if let Some(tls) = &value.tls {
            check_tls_files([&tls.cert, &tls.key], diagnostics);
        }
    }
    if config.admin.address.value.parse::<SocketAddr>().is_err() {
        let address = &config.admin.address;
        diagnostics.on(
            address,
            format!(
                "admin.address {:?} is not an address such as 127.0.0.1:9901",
                address.value
            ),
        );
    }
}

fn validate_limits(config: &Config, diagnostics: &mut Diagnostics) {
    let limits = &config.limits;
    if limits.max_connections == 0 {
        diagnostics.general("limits.max_connections must be at least 1");
    }
    if !HEADER_BYTES_RANGE.contains(&limits.max_header_bytes.get()) {
        diagnostics.general("limits.max_header_bytes must be between 8KiB and 1MiB");
    }
    if !(1..=10_000).contains(&limits.max_headers) {
        diagnostics.general("limits.max_headers must be between 1 and 10000");
    }
    if limits.header_read_timeout.get().is_zero() {
        diagnostics.general("limits.header_read_timeout must be more than 0");
    }
    if limits.tls_handshake_timeout.get().is_zero() {
        diagnostics.general("limits.tls_handshake_timeout must be more than 0");
    }
    if limits.max_concurrent_streams == 0 {
        diagnostics.general("limits.max_concurrent_streams must be at least 1");
    }
    if !(1024..=16 * 1024 * 1024).contains(&limits.response_read_ahead.get()) {
        diagnostics.general("limits.response_read_ahead must be between 1KiB and 16MiB");
    }
    if limits.send_timeout.get().is_zero() {
        diagnostics.general("limits.send_timeout must be more than 0");
    }
}

fn validate_cluster(name: &str, cluster: &ClusterConfig, diagnostics: &mut Diagnostics) {
    for target in &cluster.targets {
        if !is_host_port(&target.value) {
            diagnostics.on(
                target,
                format!("cluster {name:?}: target {:?} is not host:port", target.value),
            );
        }
    }
    if let Some(check) = &cluster.health_check {
        if !check.path.value.starts_with('/') {
            diagnostics.on(&check.path, "health_check.path must start with /");
        }
        if check.healthy_threshold == 0 || check.unhealthy_threshold == 0 {
            diagnostics.on(&check.path, "health_check thresholds must be at least 1");
        }
        if check.interval.get().is_zero() || check.timeout.get().is_zero() {
            diagnostics.on(&check.path, "health_check interval and timeout must be more than 0");
        }
    }
    let passive = &cluster.passive_health;
    if passive
        .max_ejection_time
        .is_some_and(|max| max.get() < passive.ejection_time.get())
    {
        diagnostics.general(format!(
            "cluster {name:?}: passive_health.max_ejection_time must not be less than ejection_time"
        ));
    }
    if !(0.0..=1.0).contains(&cluster.retries.budget_ratio) {
        diagnostics.general(format!(
            "cluster {name:?}: retries.budget_ratio must be between 0 and 1"
        ));
    }
    if cluster.request_timeout.get().is_zero() || cluster.connect_timeout.get().is_zero() {
        diagnostics.general(format!("cluster {name:?}: timeouts must be more than 0"));
    }
    if let Some(tls) = &cluster.tls {
        validate_upstream_tls(name, cluster, tls, diagnostics);
    }
}

/// Each named TLS file (certificate, key, CA bundle) must exist; a diagnostic at each one that does not.
pub(crate) fn check_tls_files<'a>(
    files: impl IntoIterator<Item = &'a Spanned<PathBuf>>,
    diagnostics: &mut Diagnostics,
) {
    for file in files {
        if !file.value.is_file() {
            diagnostics.on(file, format!("TLS file {} does not exist", file.value.display()));
        }
    }
}

fn validate_upstream_tls(
    name: &str,
    cluster: &ClusterConfig,
    tls: &Spanned<crate::config::UpstreamTlsConfig>,
    diagnostics: &mut Diagnostics,
) {
    let value = &tls.value;
    if cluster.protocol != crate::config::UpstreamProtocol::Http1 {
        diagnostics.on(
            tls,
            format!("cluster {name:?}: tls works with protocol http1 only (for now)"),
        );
    }
    check_tls_files([&value.ca, &value.cert, &value.key].into_iter().flatten(), diagnostics);
    if value.cert.is_some() != value.key.is_some() {
        diagnostics.on(tls, format!("cluster {name:?}: tls.cert and tls.key go together"));
    }
    if let Some(id) = &value.spiffe_id {
        if let Err(error) = crate::spiffe::SpiffePattern::parse(&id.value) {
            diagnostics.on(id, format!("spiffe_id {:?}: {error}", id.value));
        }
        if value.ca.is_none() {
            diagnostics.on(id, "spiffe_id needs `ca`: the trust bundle the identity chains to");
        }
        if value.server_name.is_some() {
            diagnostics.on(
                id,
                "spiffe_id and server_name exclude each other: a workload is verified by one",
            );
        }
    }
    if let Some(server_name) = &value.server_name {
        if rustls_pki_types::ServerName::try_from(server_name.value.as_str()).is_err() {
            diagnostics.on(
                server_name,
                format!("{:?} is not a DNS name or IP address", server_name.value),
            );
        }
    }
}

fn is_host_port(text: &str) -> bool {
    if text.parse::<SocketAddr>().is_ok() {
        return true;
    }
    match text.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && port.parse::<u16>().is_ok_and(|p| p != 0)
                && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        }
        None => false,
    }
}

fn validate_routes(config: &Config, diagnostics: &mut Diagnostics) {
    if config.routes.is_empty() {
        diagnostics.general("routes: at least one route is required");
    }
    if config.metrics.max_route_labels == 0 {
        diagnostics.general("metrics.max_route_labels must be at least 1");
    }
    let mut names = HashSet::new();
    for route in &config.routes {
        let RouteConfig {
            name, matcher, cluster, ..
        } = &route.value;
        if name.value.is_empty() || !names.insert(name.value.as_str()) {
            diagnostics.on(name, format!("route name {:?} is empty or used twice", name.value));
        }
        if let Some(group) = &route.value.metrics_group {
            let reserved = [crate::config::OTHER_ROUTES_LABEL, crate::config::UNROUTED_LABEL];
            if group.value.is_empty() || group.value.len() > 128 || reserved.contains(&group.value.as_str()) {
                diagnostics.on(
                    group,
                    format!(
                        "metrics_group {:?} must be 1 to 128 bytes and not `other` or `none` (the labels of routes past the cap and of unrouted requests)",
                        group.value
                    ),
                );
            }
        }
        if !config.clusters.contains_key(&cluster.value) {
            let known: Vec<&str> = config.clusters.keys().map(String::as_str).collect();
            diagnostics.on(
                cluster,
                format!("unknown cluster {:?}; defined clusters: {known:?}", cluster.value),
            );
        }
        for listener in matcher.value.listeners.iter().flatten() {
            if !config.listeners.iter().any(|l| &l.value.name == listener) {
                diagnostics.on(matcher, format!("no listener is named {listener:?}"));
            }
        }
        match (&matcher.value.path, &matcher.value.prefix) {
            (Some(_), Some(_)) => diagnostics.on(matcher, "a route matches either `path` or `prefix`, not both"),
            (None, None) => diagnostics.on(matcher, "a route needs `path` or `prefix`"),
            _ => {}
        }
    }
}

/// Makes file paths relative to the config file's directory, so a config works from any cwd.
/// The files a client TLS setting names (CA bundle, certificate, key), those that are set.
fn pem_files<'a>(
    ca: &'a mut Option<Spanned<PathBuf>>,
    cert: &'a mut Option<Spanned<PathBuf>>,
    key: &'a mut Option<Spanned<PathBuf>>,
) -> impl Iterator<Item = &'a mut Spanned<PathBuf>> {
    ca.as_mut().into_iter().chain(cert.as_mut()).chain(key.as_mut())
}

pub(crate) fn resolve_relative_paths(config: &mut Config, dir: &Path) {
    let mut files: Vec<&mut Spanned<PathBuf>> = Vec::new();
    for listener in &mut config.listeners {
        if let Some(tls) = &mut listener.value.tls {
            files.push(&mut tls.cert);
            files.push(&mut tls.key);
            if let Some(client) = &mut tls.client_certificates {
                files.extend(client.value.ca.iter_mut());
            }
        }
    }
    let auth = &mut config.authentication;
    for provider in auth.jwt_providers.values_mut() {
        let keys = &mut provider.value.keys.value;
        files.extend(keys.jwks_file.as_mut());
        files.extend(keys.ca.as_mut());
        files.extend(keys.bearer_token_file.as_mut());
    }
    for endpoint in auth.introspection.values_mut() {
        files.extend(endpoint.value.ca.as_mut());
    }
    files.extend(auth.api_keys.file.as_mut());
    for cluster in config.clusters.values_mut() {
        if let Some(tls) = cluster.value.tls.as_mut() {
            let tls = &mut tls.value;
            files.extend(pem_files(&mut tls.ca, &mut tls.cert, &mut tls.key));
        }
    }
    if let Some(tls) = config.rate_limits.store_tls.as_mut() {
        let tls = &mut tls.value;
        files.extend(pem_files(&mut tls.ca, &mut tls.cert, &mut tls.key));
    }
    let global = &mut config.ip_rules;
    files.extend(global.allow_files.iter_mut().chain(global.deny_files.iter_mut()));
    for route in &mut config.routes {
        let route = &mut route.value;
        if let Some(rules) = route.ip_rules.as_mut() {
            files.extend(rules.allow_files.iter_mut().chain(rules.deny_files.iter_mut()));
        }
        files.extend(route.validate.as_mut().map(|v| &mut v.value.openapi));
    }
    for set in config.policies.values_mut() {
        files.push(&mut set.value.schema);
        files.extend(set.value.files.iter_mut());
    }
    for file in files {
        if file.value.is_relative() {
            file.value = dir.join(&file.value);
        }
    }
    let syslog_ca = config
        .audit
        .syslog
        .as_mut()
        .and_then(|s| s.tls.as_mut())
        .and_then(|t| t.ca.as_mut());
    let otlp_ca = config.audit.otlp.as_mut().and_then(|o| o.ca.as_mut());
    let webhook_ca = config.detection.webhook.as_mut().and_then(|w| w.ca.as_mut());
    for ca in syslog_ca.into_iter().chain(otlp_ca).chain(webhook_ca) {
        if ca.is_relative() {
            *ca = dir.join(&*ca);
        }
    }
}

/// The highest event-count threshold of a detector (palisade-detect counts in 16-bit slots).
const MAX_COUNT_THRESHOLD: u32 = 65_535;
/// The highest distinct-path threshold (palisade-detect's `window::MAX_DISTINCT`).
const MAX_DISTINCT_THRESHOLD: u32 = 1000;

/// Detection thresholds in range, responses complete, the webhook secure and its secrets resolvable.
fn validate_detection(config: &Config, diagnostics: &mut Diagnostics) {
    let detection = &config.detection;
    if detection.max_clients == 0 || detection.max_responses == 0 {
        diagnostics.general("detection.max_clients and detection.max_responses must be at least 1");
    }
    let clear = detection.clear_after.get();
    if clear < std::time::Duration::from_secs(1) || clear > std::time::Duration::from_secs(3600) {
        diagnostics.general("detection.clear_after must be between 1s and 1h");
    }
    let spike = &detection.rate_spike;
    if !(spike.min_ratio >= 1.0 && spike.min_ratio.is_finite()) || spike.min_requests == 0 {
        diagnostics.general("detection.rate_spike: min_ratio must be at least 1 and min_requests at least 1");
    }
    let latency = &detection.upstream_latency;
    if !(latency.min_ratio >= 1.0 && latency.min_ratio.is_finite()) {
        diagnostics.general("detection.upstream_latency.min_ratio must be at least 1");
    }
    let subject = &detection.targeted_subject;
    let subject_window = subject.window.get();
    if subject.threshold == 0
        || subject.threshold > MAX_COUNT_THRESHOLD
        || subject_window < std::time::Duration::from_secs(1)
        || subject_window > std::time::Duration::from_secs(3600)
    {
        diagnostics.general(format!(
            "detection.targeted_subject: threshold must be between 1 and {MAX_COUNT_THRESHOLD} and window between 1s and 1h"
        ));
    }
    let upstream = &detection.upstream_errors;
    if !(upstream.error_ratio > 0.0 && upstream.error_ratio <= 1.0) {
        diagnostics.general("detection.upstream_errors.error_ratio must be above 0 and at most 1");
    }
    for (name, detector) in [
        ("auth_failures", &detection.auth_failures),
        ("scanning", &detection.scanning),
        ("probing", &detection.probing),
    ] {
        // Counts are kept in 16-bit slots and distinct paths in a sketch that tells apart about a
        // thousand (palisade-detect's window.rs): a higher threshold could never be reached.
        let most = if name == "scanning" {
            MAX_DISTINCT_THRESHOLD
        } else {
            MAX_COUNT_THRESHOLD
        };
        if detector
            .threshold
            .is_some_and(|threshold| threshold == 0 || threshold > most)
        {
            diagnostics.general(format!("detection.{name}.threshold must be between 1 and {most}"));
        }
        let window_ok = detector.window.is_none_or(|w| {
            (std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(3600)).contains(&w.get())
        });
        if !window_ok {
            diagnostics.general(format!("detection.{name}.window must be between 1s and 1h"));
        }
        if let Some(respond) = &detector.respond {
            validate_response(name, respond, diagnostics);
        }
    }
    if let Some(webhook) = &detection.webhook {
        if !is_secure_url(&webhook.url) {
            diagnostics.general(format!(
                "detection.webhook.url {:?} must be an https:// URL (http:// only to a loopback address)",
                webhook.url
            ));
        }
        if webhook.max_attempts == 0 {
            diagnostics.general("detection.webhook.max_attempts must be at least 1");
        }
        for (name, value) in &webhook.headers {
            if let Err(error) = value.value.resolve() {
                diagnostics.on(value, format!("detection.webhook.headers.{name}: {error}"));
            }
        }
    }
    if let Some(token) = &config.admin.token {
        if let Err(error) = token.value.resolve() {
            diagnostics.on(token, format!("admin.token: {error}"));
        }
    }
}

fn validate_runtime_alerts(alerts: &crate::config::runtime_alerts::RuntimeAlertsConfig, diagnostics: &mut Diagnostics) {
    use crate::config::runtime_alerts::RuntimeAction;
    if let Err(error) = alerts.token.value.resolve() {
        diagnostics.on(&alerts.token, format!("runtime_alerts.token: {error}"));
    }
    if let Err(error) = crate::spiffe::SpiffeId::parse(&format!("spiffe://{}/ns/x/sa/y", alerts.trust_domain.value)) {
        diagnostics.on(
            &alerts.trust_domain,
            format!(
                "runtime_alerts.trust_domain {:?} is not a SPIFFE trust domain: {error}",
                alerts.trust_domain.value
            ),
        );
    }
    if alerts.namespace_fields.is_empty() || alerts.service_account_fields.is_empty() {
        diagnostics.general("runtime_alerts: namespace_fields and service_account_fields name at least one field each");
    }
    for rule in &alerts.rules {
        let ttl = rule.value.ttl.map(|ttl| ttl.get());
        match (rule.value.action, ttl) {
            (RuntimeAction::Quarantine, None) => diagnostics.on(
                rule,
                "runtime_alerts.rules: action quarantine needs a ttl, e.g. ttl: 1h",
            ),
            (RuntimeAction::Quarantine, Some(ttl))
                if ttl < std::time::Duration::from_secs(1) || ttl > std::time::Duration::from_secs(7 * 24 * 3600) =>
            {
                diagnostics.on(rule, "runtime_alerts.rules: ttl must be between 1s and 7d")
            }
            (RuntimeAction::Record, Some(_)) => {
                diagnostics.on(rule, "runtime_alerts.rules: action record takes no ttl")
            }
            _ => {}
        }
    }
}

fn validate_response(detector: &str, respond: &Spanned<crate::config::ResponseConfig>, diagnostics: &mut Diagnostics) {
    use crate::config::ResponseAction;
    let ttl = respond.value.ttl.get();
    if ttl < std::time::Duration::from_secs(1) || ttl > std::time::Duration::from_secs(7 * 24 * 3600) {
        diagnostics.on(
            respond,
            format!("detection.{detector}.respond.ttl must be between 1s and 7d"),
        );
    }
    match (respond.value.action, &respond.value.rate) {
        (ResponseAction::Limit, None) => diagnostics.on(
            respond,
            format!("detection.{detector}.respond: action limit needs a rate, e.g. rate: 1/s"),
        ),
        (ResponseAction::Block, Some(_)) => diagnostics.on(
            respond,
            format!("detection.{detector}.respond: action block takes no rate"),
        ),
        _ => {}
    }
}

/// `https://host…`, or `http://` to a loopback address.
fn is_secure_url(url: &str) -> bool {
    match url.parse::<http::Uri>() {
        Ok(uri) if uri.scheme_str() == Some("https") => uri.host().is_some(),
        Ok(uri) if uri.scheme_str() == Some("http") => crate::validate_auth::is_loopback_http(&uri),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_accepts_names_and_addresses_only() {
        assert!(is_host_port("127.0.0.1:80"));
        assert!(is_host_port("[::1]:8080"));
        assert!(is_host_port("orders.internal:9000"));
        assert!(!is_host_port("orders.internal"));
        assert!(!is_host_port("orders:0"));
        assert!(!is_host_port("http://orders:80"));
    }
}
