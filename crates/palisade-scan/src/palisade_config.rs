//! Rules for Palisade's own gateway configuration (PAL0xx). They read the YAML tree rather than the
//! typed config so that a file with other errors is still checked and every finding has a line.

use std::net::IpAddr;
use std::sync::LazyLock;

use regex::Regex;

use crate::finding::Finding;
use crate::rules::{self, Rule};
use crate::yaml::Node;

/// A gateway config has `routes` beside `listeners` or `clusters` at the top.
pub fn is_config(document: &Node) -> bool {
    document.get("routes").is_present()
        && (document.get("listeners").is_present() || document.get("clusters").is_present())
}

pub fn check(path: &str, config: &Node) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut report = |rule: &Rule, line: usize, message: String| findings.push(Finding::of(rule, path, line, message));
    for route in config.get("routes").items() {
        check_route(route, &mut report);
    }
    for (name, provider) in config.at(&["authentication", "jwt_providers"]).entries() {
        check_shared_secret(name, provider.at(&["keys", "shared_secret"]), &mut report);
    }
    let admin = config.at(&["admin", "address"]);
    if let Some(address) = admin.as_str() {
        if !is_loopback_address(address) {
            report(
                &rules::PALISADE_PUBLIC_ADMIN,
                admin.line,
                format!("admin.address is {address}"),
            );
        }
    }
    findings
}

fn check_route(route: &Node, report: &mut impl FnMut(&Rule, usize, String)) {
    static SENSITIVE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?i)(^|/)(admin|internal|debug|actuator|metrics|management|private|console|_debug)(/|$|\{)")
            .expect("static regex")
    });
    static AUTH_ENDPOINT: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?i)(login|signin|sign-in|logon|token|oauth|password|passwd|session|signup|register|auth)")
            .expect("static regex")
    });
    let name = route.get("name").as_str().unwrap_or("(unnamed)");
    let matcher = route.get("match");
    let path_node = if matcher.get("path").is_present() {
        matcher.get("path")
    } else {
        matcher.get("prefix")
    };
    let path = path_node.as_str().unwrap_or("/");
    let public = route.get("public");
    if public.as_bool() == Some(true) {
        // A public route open only to listed networks (`ip_rules.allow`) was made public on purpose.
        let network_restricted = !route.at(&["ip_rules", "allow"]).items().is_empty();
        if SENSITIVE.is_match(path) && !network_restricted {
            report(
                &rules::PALISADE_PUBLIC_SENSITIVE_ROUTE,
                public.line,
                format!("route `{name}` ({path}) is public"),
            );
        }
        if !matcher.get("path").is_present() && path.trim_end_matches('/').is_empty() {
            report(
                &rules::PALISADE_PUBLIC_CATCH_ALL,
                public.line,
                format!("route `{name}` is public on every path"),
            );
        }
    }
    if AUTH_ENDPOINT.is_match(path)
        && route.get("rate_limits").items().is_empty()
        && route.get("retired").as_bool().is_none()
    {
        report(
            &rules::PALISADE_UNLIMITED_AUTH_ENDPOINT,
            route.line,
            format!("route `{name}` ({path}) has no rate limit"),
        );
    }
    let cors = route.get("cors");
    let wildcard = cors
        .get("allow_origins")
        .items()
        .iter()
        .find(|o| o.as_str() == Some("*"));
    if let Some(origin) = wildcard {
        if cors.get("allow_credentials").as_bool() == Some(true) {
            report(
                &rules::PALISADE_CORS_WILDCARD_CREDENTIALS,
                origin.line,
                format!("route `{name}` allows any origin with credentials"),
            );
        }
    }
}

/// HS256/384/512 need at least 32 bytes (RFC 7518 §3.2), from `${ENV}` or `file:`.
fn check_shared_secret(provider: &str, secret: &Node, report: &mut impl FnMut(&Rule, usize, String)) {
    let Some(value) = secret.as_str() else { return };
    if value.starts_with("${") || value.starts_with("file:") {
        return;
    }
    let detail = if value.len() < 32 {
        format!("{} bytes, inline", value.len())
    } else {
        "inline".to_string()
    };
    report(
        &rules::PALISADE_WEAK_HMAC_SECRET,
        secret.line,
        format!("provider `{provider}` shared_secret is {detail}"),
    );
}

fn is_loopback_address(address: &str) -> bool {
    let host = match address.rsplit_once(':') {
        Some((host, _port)) => host,
        None => address,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        // `:9901` listens everywhere; a host name (or a template) cannot be judged from the file.
        Err(_) => !host.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_addresses() {
        assert!(is_loopback_address("127.0.0.1:9901"));
        assert!(is_loopback_address("[::1]:9901"));
        assert!(is_loopback_address("localhost:9901"));
        assert!(!is_loopback_address("0.0.0.0:9901"));
        assert!(!is_loopback_address("[::]:9901"));
        assert!(!is_loopback_address("10.0.0.5:9901"));
        assert!(!is_loopback_address(":9901"));
    }
}
