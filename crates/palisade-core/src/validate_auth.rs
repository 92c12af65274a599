//! Structural checks of the authentication settings. What needs the key material itself (secret
//! length, JWK parsing) is checked when the authenticator is built, with the same located diagnostics.

use crate::config::auth::{Audiences, ClaimMapping, IdentityConfig, JwtProviderConfig, TokenLocation};
use crate::config::{AuthMethod, Config};
use crate::diagnostic::Diagnostics;
use crate::Spanned;

/// Every algorithm a provider may list.
pub const JWT_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA", "HS256", "HS384", "HS512",
];
/// The default allowlist: asymmetric algorithms only.
pub const JWT_DEFAULT_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];
pub const JWT_HMAC_ALGORITHMS: &[&str] = &["HS256", "HS384", "HS512"];

pub(crate) fn validate(config: &Config, diagnostics: &mut Diagnostics) {
    let auth = &config.authentication;
    for (name, provider) in &auth.jwt_providers {
        validate_provider(name, provider, diagnostics);
    }
    for (name, endpoint) in &auth.introspection {
        check_audiences(
            &format!("introspection {name:?}"),
            &endpoint.value.audiences,
            endpoint,
            diagnostics,
        );
        let endpoint_url = &endpoint.value.endpoint;
        check_fetch_url(endpoint_url, &format!("introspection {name:?}: endpoint"), diagnostics);
        check_claims(&endpoint.value.claims, diagnostics, endpoint);
        check_token_location(&endpoint.value.token, diagnostics, endpoint);
    }
    validate_identity(&auth.identity, diagnostics);
    let mtls_listener = config.listeners.iter().any(|l| {
        l.value
            .tls
            .as_ref()
            .is_some_and(|tls| tls.client_certificates.is_some())
    });
    for listener in &config.listeners {
        let Some(client) = listener.value.tls.as_ref().and_then(|t| t.client_certificates.as_ref()) else {
            continue;
        };
        if client.value.ca.is_empty() {
            diagnostics.on(client, "client_certificates.ca needs at least one CA bundle");
        }
        for file in &client.value.ca {
            if !file.value.is_file() {
                diagnostics.on(file, format!("CA file {} does not exist", file.value.display()));
            }
        }
        for domain in &client.value.trust_domains {
            if let Err(error) = crate::spiffe::check_trust_domain(&domain.value) {
                diagnostics.on(domain, format!("trust domain {:?}: {error}", domain.value));
            }
        }
    }
    let policy_sets: Vec<&str> = config.policies.keys().map(String::as_str).collect();
    for (name, set) in &config.policies {
        for file in std::iter::once(&set.value.schema).chain(&set.value.files) {
            if !file.value.is_file() {
                diagnostics.on(
                    file,
                    format!("policy set {name:?}: {} does not exist", file.value.display()),
                );
            }
        }
        if set.value.files.is_empty() {
            diagnostics.on(set, format!("policy set {name:?} lists no policy files"));
        }
    }
    for route in &config.routes {
        let route = &route.value;
        let methods = route.authentication.as_ref();
        match (route.public, methods) {
            (true, Some(methods)) => diagnostics.on(
                methods,
                format!(
                    "route {:?} is `public: true` and lists authentication; choose one",
                    route.name.value
                ),
            ),
            (false, None) => diagnostics.on(
                &route.name,
                format!(
                    "route {:?} has no authentication; list `authentication` methods or say `public: true`",
                    route.name.value
                ),
            ),
            (false, Some(methods)) if methods.value.is_empty() => {
                diagnostics.on(methods, "authentication lists no methods")
            }
            _ => {}
        }
        validate_authorization(route, &policy_sets, diagnostics);
        for method in methods.map(|m| m.value.as_slice()).unwrap_or_default() {
            match &method.value {
                AuthMethod::Jwt(provider) if !auth.jwt_providers.contains_key(provider) => {
                    let known: Vec<&str> = auth.jwt_providers.keys().map(String::as_str).collect();
                    diagnostics.on(method, format!("unknown jwt provider {provider:?}; defined: {known:?}"));
                }
                AuthMethod::Introspection(endpoint) if !auth.introspection.contains_key(endpoint) => {
                    let known: Vec<&str> = auth.introspection.keys().map(String::as_str).collect();
                    diagnostics.on(
                        method,
                        format!("unknown introspection endpoint {endpoint:?}; defined: {known:?}"),
                    );
                }
                AuthMethod::Mtls if !mtls_listener => diagnostics.on(
                    method,
                    "`mtls` needs a TLS listener with `client_certificates`; none is configured",
                ),
                AuthMethod::ApiKey if auth.api_keys.keys.is_empty() && auth.api_keys.file.is_none() => {
                    diagnostics.on(method, "`api_key` needs `authentication.api_keys.keys` or `.file`")
                }
                _ => {}
            }
        }
    }
}

fn validate_authorization(
    route: &crate::config::RouteConfig,
    known_policy_sets: &[&str],
    diagnostics: &mut Diagnostics,
) {
    let name = &route.name.value;
    let Some(authorization) = &route.authorization else {
        if route.authentication.is_some() {
            diagnostics.on(
                &route.name,
                format!("route {name:?} authenticates but has no `authorization`; add rules or `allow: authenticated`"),
            );
        }
        return;
    };
    if route.public {
        diagnostics.on(
            authorization,
            format!("route {name:?} is public; `authorization` needs authentication"),
        );
    }
    let rules = &authorization.value.rules;
    let policies = &authorization.value.policies;
    let chosen = [
        authorization.value.allow.is_some(),
        !rules.is_empty(),
        policies.is_some(),
    ];
    match chosen.iter().filter(|c| **c).count() {
        0 => diagnostics.on(
            authorization,
            "authorization needs `rules`, `policies` or `allow: authenticated`",
        ),
        1 => {}
        _ => diagnostics.on(
            authorization,
            "`allow: authenticated`, `rules` and `policies` exclude each other; choose one",
        ),
    }
    let actions = &authorization.value.actions;
    if !actions.is_empty() && policies.is_none() {
        diagnostics.on(authorization, "`actions` name Cedar operations; they need `policies`");
    }
    for (method, action) in actions {
        if method.parse::<http::Method>().is_err() || method.to_ascii_uppercase() != *method {
            diagnostics.on(action, format!("actions: {method:?} is not an upper-case method"));
        }
    }
    if let Some(name) = policies {
        if !known_policy_sets.contains(&name.value.as_str()) {
            diagnostics.on(
                name,
                format!("unknown policy set {:?}; defined: {known_policy_sets:?}", name.value),
            );
        }
    }
    let mut ids = std::collections::HashSet::new();
    for (index, rule) in rules.iter().enumerate() {
        let value = &rule.value;
        let id = value.id_at(index);
        if !ids.insert(id.clone()) {
            diagnostics.on(rule, format!("rule id {id:?} is used twice in route {name:?}"));
        }
        let conditions = [
            value.all_of.as_ref().is_some_and(|r| !r.is_empty()),
            value.any_of.as_ref().is_some_and(|r| !r.is_empty()),
            value.kinds.as_ref().is_some_and(|k| !k.is_empty()),
            value.issuers.as_ref().is_some_and(|i| !i.is_empty()),
            value.subjects.as_ref().is_some_and(|s| !s.is_empty()),
        ];
        if !conditions.contains(&true) {
            diagnostics.on(
                rule,
                format!("rule {id:?} has no condition; it would allow everyone (say `allow: authenticated` if meant)"),
            );
        }
        for method in value.methods.iter().flatten() {
            if method.parse::<http::Method>().is_err() || method.to_ascii_uppercase() != *method {
                diagnostics.on(rule, format!("rule {id:?}: {method:?} is not an upper-case method"));
            }
        }
        for subject in value.subjects.iter().flatten().filter(|s| s.starts_with("spiffe://")) {
            if let Err(error) = crate::spiffe::SpiffePattern::parse(subject) {
                diagnostics.on(rule, format!("rule {id:?}: subject {subject:?}: {error}"));
            }
        }
    }
}

/// Audiences are required: absent or an empty list is an error; `any` must be written out.
fn check_audiences<T>(
    what: &str,
    audiences: &Option<Spanned<Audiences>>,
    owner: &Spanned<T>,
    diagnostics: &mut Diagnostics,
) {
    match audiences {
        None => diagnostics.on(
            owner,
            format!(
                "{what}: audiences is required: list the `aud` values this gateway accepts, or write \
                 `audiences: any` to accept tokens minted for any service"
            ),
        ),
        Some(list) if list.value == Audiences::OneOf(Vec::new()) => diagnostics.on(
            list,
            format!("{what}: audiences is empty; list at least one, or write `any`"),
        ),
        Some(list) => {
            if list.value.accepted().iter().any(|audience| audience.is_empty()) {
                diagnostics.on(list, format!("{what}: an audience is empty"));
            }
        }
    }
}

/// What a config allows that is legal but weakens a default, located in `file`: check-config
/// prints these.
pub fn warnings(config: &Config, file: &str) -> Vec<crate::Diagnostic> {
    let mut found = Diagnostics::new(file);
    let auth = &config.authentication;
    let providers = auth
        .jwt_providers
        .iter()
        .map(|(name, p)| (format!("jwt provider {name:?}"), &p.value.audiences));
    let endpoints = auth
        .introspection
        .iter()
        .map(|(name, e)| (format!("introspection {name:?}"), &e.value.audiences));
    for (what, audiences) in providers.chain(endpoints) {
        if let Some(audiences) = audiences.as_ref().filter(|a| a.value == Audiences::Any) {
            found.on(
                audiences,
                format!(
                    "{what} has `audiences: any`: tokens minted for any service of this identity provider are accepted"
                ),
            );
        }
    }
    let folded = config
        .routes
        .iter()
        .zip(config.route_metric_labels())
        .filter(|(route, label)| {
            let wanted = route.value.metrics_group.as_ref().unwrap_or(&route.value.name);
            *label != wanted.value
        })
        .count();
    if folded > 0 {
        found.general(format!(
            "{folded} routes are past metrics.max_route_labels ({}) and share route=\"other\" in /metrics; give related routes a metrics_group or raise the cap",
            config.metrics.max_route_labels
        ));
    }
    found.into_errors()
}

/// The checks on one JWT provider; also used for providers outside a gateway config.
pub fn validate_provider(name: &str, provider: &Spanned<JwtProviderConfig>, diagnostics: &mut Diagnostics) {
    let value = &provider.value;
    check_audiences(
        &format!("jwt provider {name:?}"),
        &value.audiences,
        provider,
        diagnostics,
    );
    let keys = &value.keys.value;
    if value.issuer.value.is_empty() {
        diagnostics.on(&value.issuer, format!("jwt provider {name:?}: issuer is empty"));
    }
    let sources = [
        keys.jwks.is_some(),
        keys.jwks_file.is_some(),
        keys.jwks_url.is_some(),
        keys.discovery,
        keys.shared_secret.is_some(),
    ];
    if sources.iter().filter(|set| **set).count() != 1 {
        diagnostics.on(
            &value.keys,
            format!(
                "jwt provider {name:?}: keys needs exactly one of jwks, jwks_file, jwks_url, discovery, shared_secret"
            ),
        );
    }
    if let Some(url) = &keys.jwks_url {
        check_fetch_url(url, &format!("jwt provider {name:?}: jwks_url"), diagnostics);
    }
    if keys.discovery {
        check_fetch_url(
            &value.issuer,
            &format!("jwt provider {name:?}: issuer (for discovery)"),
            diagnostics,
        );
    }
    if let Some(file) = &keys.bearer_token_file {
        if keys.jwks_url.is_none() && !keys.discovery {
            diagnostics.on(
                file,
                format!("jwt provider {name:?}: bearer_token_file goes with jwks_url or discovery"),
            );
        }
    }
    if let Some(file) = &keys.jwks_file {
        if !file.value.is_file() {
            diagnostics.on(file, format!("JWKS file {} does not exist", file.value.display()));
        }
    }
    if let Some(algorithms) = &value.algorithms {
        if algorithms.value.is_empty() {
            diagnostics.on(algorithms, "algorithms is empty");
        }
        for algorithm in &algorithms.value {
            if !JWT_ALGORITHMS.contains(&algorithm.as_str()) {
                diagnostics.on(
                    algorithms,
                    format!("unknown or refused algorithm {algorithm:?}; allowed: {JWT_ALGORITHMS:?}"),
                );
            }
            let hmac = JWT_HMAC_ALGORITHMS.contains(&algorithm.as_str());
            if hmac != keys.shared_secret.is_some() {
                diagnostics.on(
                    algorithms,
                    format!("{algorithm}: HS256/384/512 go with keys.shared_secret, and only with it"),
                );
            }
        }
    }
    let refresh = &keys.refresh;
    if refresh.interval.get().is_zero() || refresh.timeout.get().is_zero() {
        diagnostics.on(&value.keys, "keys.refresh interval and timeout must be more than 0");
    }
    check_claims(&value.claims, diagnostics, provider);
    check_token_location(&value.token, diagnostics, provider);
}

fn check_token_location<T>(location: &TokenLocation, diagnostics: &mut Diagnostics, at: &Spanned<T>) {
    match location {
        TokenLocation::Header(name) if http::HeaderName::from_bytes(name.as_bytes()).is_err() => {
            diagnostics.on(at, format!("token.header {name:?} is not a header name"))
        }
        TokenLocation::Cookie(name) if name.is_empty() || name.contains([';', '=', ' ']) => {
            diagnostics.on(at, format!("token.cookie {name:?} is not a cookie name"))
        }
        _ => {}
    }
}

fn check_claims<T>(claims: &ClaimMapping, diagnostics: &mut Diagnostics, at: &Spanned<T>) {
    if claims.subject.is_empty() {
        diagnostics.on(at, "claims.subject must name a claim");
    }
}

/// Key sets and introspection are fetched over HTTPS; plain HTTP only to this machine (tests, a
/// local IdP sidecar), where nobody on the network can change the answer.
fn check_fetch_url(url: &Spanned<String>, what: &str, diagnostics: &mut Diagnostics) {
    let Ok(uri) = url.value.parse::<http::Uri>() else {
        diagnostics.on(url, format!("{what}: {:?} is not a URL", url.value));
        return;
    };
    let secure = match uri.scheme_str() {
        Some("https") => uri.host().is_some(),
        Some("http") => is_loopback_http(&uri),
        _ => false,
    };
    if !secure {
        diagnostics.on(
            url,
            format!(
                "{what}: {:?} must be https:// (plain http only to a loopback address)",
                url.value
            ),
        );
    }
}

pub fn is_loopback_http(uri: &http::Uri) -> bool {
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']');
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn validate_identity(identity: &IdentityConfig, diagnostics: &mut Diagnostics) {
    for name in identity.headers.keys() {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            diagnostics.general(format!(
                "authentication.identity.headers: {name:?} is not a header name"
            ));
        }
    }
    if let Some(internal) = &identity.internal_token {
        let ttl = internal.ttl.get();
        if ttl.is_zero() || ttl > std::time::Duration::from_secs(60) {
            diagnostics.general("authentication.identity.internal_token.ttl must be between 1s and 60s");
        }
        if http::HeaderName::from_bytes(internal.header.as_bytes()).is_err() {
            diagnostics.general("authentication.identity.internal_token.header is not a header name");
        }
    }
}
