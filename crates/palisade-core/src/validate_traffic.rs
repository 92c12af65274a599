//! Checks of the traffic protection settings that need more than one value to decide.

use std::collections::HashSet;

use crate::config::auth::AuthMethod;
use crate::config::traffic::{parse_date, StoreTlsConfig};
use crate::config::{Config, IpRulesConfig, LimitKey, RouteConfig, SecurityHeadersConfig};
use crate::diagnostic::Diagnostics;
use crate::validate::{check_tls_files, parse_cidr};
use serde_saphyr::Spanned;

pub(crate) fn validate(config: &Config, diagnostics: &mut Diagnostics) {
    let limits = &config.rate_limits;
    let store = &limits.store;
    let schemes = [
        "redis://",
        "rediss://",
        "redis+cluster://",
        "rediss+cluster://",
        "redis+sentinel://",
    ];
    if store.value != "local" && !schemes.iter().any(|scheme| store.value.starts_with(scheme)) {
        diagnostics.on(
            store,
            format!(
                "rate_limits.store {:?}: expected local, redis://…, rediss://…, redis+cluster://host:port,host:port or redis+sentinel://host:port,host:port/service",
                store.value
            ),
        );
    }
    if let Some(tls) = &limits.store_tls {
        validate_store_tls(&store.value, tls, diagnostics);
    }
    if limits.store_timeout.get().is_zero() {
        diagnostics.on(store, "rate_limits.store_timeout must be more than 0");
    }
    if limits.max_keys == 0 {
        diagnostics.on(store, "rate_limits.max_keys must be at least 1");
    }
    validate_ip_rules(&config.ip_rules, diagnostics);
    validate_security_headers(&config.security_headers, diagnostics);
    for route in &config.routes {
        validate_route(&route.value, diagnostics);
        validate_browser_facing(&route.value, diagnostics);
    }
}

fn validate_store_tls(store: &str, tls: &Spanned<StoreTlsConfig>, diagnostics: &mut Diagnostics) {
    if !store.starts_with("rediss") {
        diagnostics.on(
            tls,
            "rate_limits.store_tls needs a TLS store URL (rediss://… or rediss+cluster://…)",
        );
    }
    let value = &tls.value;
    check_tls_files([&value.ca, &value.cert, &value.key].into_iter().flatten(), diagnostics);
    if value.cert.is_some() != value.key.is_some() {
        diagnostics.on(tls, "rate_limits.store_tls: cert and key go together");
    }
}

fn validate_security_headers(headers: &SecurityHeadersConfig, diagnostics: &mut Diagnostics) {
    let values = [
        ("referrer_policy", &headers.referrer_policy),
        ("frame_options", &headers.frame_options),
        ("content_security_policy", &headers.content_security_policy),
    ];
    for (key, value) in values {
        if http::HeaderValue::from_str(value).is_err() {
            diagnostics.general(format!("security_headers.{key} is not a valid header value"));
        }
    }
    for name in &headers.remove {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            diagnostics.general(format!("security_headers.remove: {name:?} is not a header name"));
        }
    }
}

/// CORS and the API lifecycle: what browsers and API clients are told.
fn validate_browser_facing(route: &RouteConfig, diagnostics: &mut Diagnostics) {
    if let Some(cors) = &route.cors {
        let value = &cors.value;
        for origin in &value.allow_origins {
            if origin.value == "*" {
                if value.allow_credentials {
                    diagnostics.on(
                        origin,
                        "cors: `*` cannot be combined with allow_credentials; list the origins",
                    );
                }
            } else if !is_origin(&origin.value) {
                diagnostics.on(
                    origin,
                    format!(
                        "cors: {:?} is not an origin such as https://app.example.com",
                        origin.value
                    ),
                );
            }
        }
        if value.allow_origins.is_empty() {
            diagnostics.on(cors, "cors.allow_origins must list at least one origin");
        }
        let names = value.allow_headers.iter().chain(&value.expose_headers);
        for name in names {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                diagnostics.on(cors, format!("cors: {name:?} is not a header name"));
            }
        }
        for method in &value.allow_methods {
            if http::Method::from_bytes(method.as_bytes()).is_err() {
                diagnostics.on(cors, format!("cors: {method:?} is not a method"));
            }
        }
    }
    if let (Some(deprecated), Some(_)) = (&route.deprecated, &route.retired) {
        diagnostics.on(deprecated, "a route is either deprecated or retired, not both");
    }
    if let Some(deprecated) = &route.deprecated {
        let value = &deprecated.value;
        let since = parse_date(&value.since.value);
        if let Err(message) = &since {
            diagnostics.on(&value.since, format!("deprecated.since: {message}"));
        }
        if let Some(sunset) = &value.sunset {
            match (parse_date(&sunset.value), &since) {
                (Err(message), _) => diagnostics.on(sunset, format!("deprecated.sunset: {message}")),
                (Ok(sunset_time), Ok(since_time)) if sunset_time < *since_time => {
                    diagnostics.on(sunset, "deprecated.sunset is before deprecated.since")
                }
                _ => {}
            }
        }
        let links = value.successor.iter().chain(&value.documentation);
        for link in links {
            if link.is_empty() || link.contains(['<', '>', '"', ' ']) || http::HeaderValue::from_str(link).is_err() {
                diagnostics.on(deprecated, format!("deprecated: {link:?} is not a usable link"));
            }
        }
    }
}

/// `scheme://host[:port]`, nothing after.
fn is_origin(text: &str) -> bool {
    let Ok(uri) = text.parse::<http::Uri>() else {
        return false;
    };
    matches!(uri.scheme_str(), Some("http" | "https"))
        && uri.host().is_some()
        && uri
            .path_and_query()
            .is_none_or(|p| p.as_str().is_empty() || p.as_str() == "/")
        && !text.ends_with('/')
}

fn validate_route(route: &RouteConfig, diagnostics: &mut Diagnostics) {
    if let Some(upgrades) = &route.upgrades {
        for protocol in &upgrades.value {
            if protocol.eq_ignore_ascii_case("h2c") {
                diagnostics.on(
                    upgrades,
                    "upgrades must not name h2c: the client would speak HTTP/2 straight to the upstream, past routing",
                );
            } else if protocol.is_empty() || !protocol.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
                diagnostics.on(upgrades, format!("upgrade {protocol:?} is not a protocol name"));
            }
        }
    }
    let mut names = HashSet::new();
    let methods: Vec<&AuthMethod> = route
        .authentication
        .iter()
        .flat_map(|methods| methods.value.iter().map(|m| &m.value))
        .collect();
    for limit in &route.rate_limits {
        let name = &limit.value.name;
        if name.value.is_empty() || !names.insert(name.value.as_str()) || !is_token(&name.value) {
            diagnostics.on(
                name,
                format!(
                    "rate limit name {:?} must be unique in the route and made of letters, digits, - and _",
                    name.value
                ),
            );
        }
        let key = &limit.value.key;
        if key.value.needs_principal() && methods.is_empty() {
            diagnostics.on(
                key,
                format!(
                    "route {:?}: a limit keyed by {} needs a route with authentication",
                    route.name.value,
                    key.value.as_str()
                ),
            );
        }
        if key.value == LimitKey::ApiKey && !methods.contains(&&AuthMethod::ApiKey) {
            diagnostics.on(
                key,
                format!(
                    "route {:?}: key api_key needs `api_key` among the route's authentication",
                    route.name.value
                ),
            );
        }
    }
    if let Some(max) = &route.max_in_flight {
        if max.value == 0 {
            diagnostics.on(max, "max_in_flight must be at least 1");
        }
    }
    if let Some(rules) = &route.ip_rules {
        validate_ip_rules(rules, diagnostics);
    }
}

fn validate_ip_rules(rules: &IpRulesConfig, diagnostics: &mut Diagnostics) {
    for network in rules.allow.iter().chain(&rules.deny) {
        if parse_cidr(&network.value).is_none() {
            diagnostics.on(network, format!("{:?} is not an IP address or CIDR", network.value));
        }
    }
}

/// Names that go into header values and metric labels verbatim.
fn is_token(name: &str) -> bool {
    name.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
