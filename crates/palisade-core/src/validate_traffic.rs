//! Checks of the traffic protection settings that need more than one value to decide.

use std::collections::HashSet;

use crate::config::auth::AuthMethod;
use crate::config::{Config, IpRulesConfig, LimitKey, RouteConfig};
use crate::diagnostic::Diagnostics;
use crate::validate::parse_cidr;

pub(crate) fn validate(config: &Config, diagnostics: &mut Diagnostics) {
    let limits = &config.rate_limits;
    let store = &limits.store;
    if store.value != "local" && !store.value.starts_with("redis://") && !store.value.starts_with("rediss://") {
        diagnostics.on(
            store,
            format!(
                "rate_limits.store {:?}: expected local, redis://… or rediss://…",
                store.value
            ),
        );
    }
    if limits.store_timeout.get().is_zero() {
        diagnostics.on(store, "rate_limits.store_timeout must be more than 0");
    }
    if limits.max_keys == 0 {
        diagnostics.on(store, "rate_limits.max_keys must be at least 1");
    }
    validate_ip_rules(&config.ip_rules, diagnostics);
    for route in &config.routes {
        validate_route(&route.value, diagnostics);
    }
}

fn validate_route(route: &RouteConfig, diagnostics: &mut Diagnostics) {
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
