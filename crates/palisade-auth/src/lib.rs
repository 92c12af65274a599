//! Authentication for the gateway: who is calling. A route lists the methods it accepts (JWT from a
//! named provider, API key, client certificate, introspection); any one succeeding yields the
//! [`Principal`] that rate limiting, authorization, audit and the upstream see.
//!
//! Modules: [`extract`] finds credentials in a request, [`jwt`] verifies tokens against key sets
//! ([`jwt::keys`], [`jwt::remote`]), [`apikey`], [`introspection`] and [`mtls`] are the other
//! methods, [`cache`] keeps verified tokens, [`identity`] renders what the upstream receives.
#![forbid(unsafe_code)]

pub mod apikey;
pub mod cache;
pub mod extract;
mod failure;
pub mod fetch;
pub mod identity;
pub mod introspection;
pub mod jwt;
pub mod mtls;
mod principal;
pub mod signing;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use http::HeaderMap;
use jsonwebtoken::Algorithm;
use palisade_core::config::auth::{AuthenticationConfig, IntrospectionConfig, JwtProviderConfig};
use palisade_core::config::AuthMethod;
use palisade_core::{Diagnostics, Spanned};

pub use failure::AuthFailure;
pub use principal::{claim_at, AuthMethodKind, Principal, PrincipalKind};

use apikey::ApiKeyStore;
use cache::TokenCache;
use fetch::Fetcher;
use identity::IdentityHeaders;
use introspection::Introspector;
use jwt::keys::KeySet;
use jwt::remote::{RemoteKeys, RemoteSource};
use jwt::{JwtProvider, KeySource};

/// HMAC secrets shorter than this are refused (RFC 7518 §3.2 asks for at least the hash size).
const MIN_SHARED_SECRET_BYTES: usize = 32;

/// What a TLS handshake learned from a verified client certificate: its principal, or why it has
/// none (no subject the listener accepts).
pub type ClientCertificate = Result<Arc<Principal>, AuthFailure>;

/// A compiled route's accepted methods, in the order they are tried.
pub struct RouteAuth {
    methods: Vec<RouteMethod>,
}

enum RouteMethod {
    Jwt(Arc<JwtProvider>),
    ApiKey,
    Mtls,
    Introspection(Arc<Introspector>),
}

/// Everything compiled from `authentication`. Immutable; rebuilt on reload, taking over remote key
/// sets and the token cache from the previous one.
pub struct Authenticator {
    providers: BTreeMap<String, Arc<JwtProvider>>,
    remote_keys: BTreeMap<String, (String, Arc<RemoteKeys>)>,
    introspectors: BTreeMap<String, Arc<Introspector>>,
    api_keys: ApiKeyStore,
    pub identity: IdentityHeaders,
    pub api_key_header: String,
    /// `api_keys.forward`: when false, the key header is removed before forwarding.
    pub forward_api_key: bool,
    cache: TokenCache,
    /// The settings this was built from, to tell whether a reload changed them.
    settings: String,
}

impl Authenticator {
    /// `fetch_remote_keys`: load remote key sets (JWKS URLs, OIDC discovery) now and keep them fresh;
    /// false for an offline config check, which must not reach out to identity providers.
    pub async fn compile(
        config: &AuthenticationConfig,
        previous: Option<&Authenticator>,
        diagnostics: &mut Diagnostics,
        fetch_remote_keys: bool,
    ) -> Authenticator {
        let max_bytes = config.token_cache.max_bytes.get();
        // Remote key sets and the cache are taken over together: a remote set flushes the cache it
        // was started with.
        let kept = previous.filter(|p| p.cache.max_bytes() == max_bytes);
        let cache = kept.map_or_else(|| TokenCache::new(max_bytes), |p| p.cache.clone());
        let mut cache_ids = 0u32..;
        let mut providers = BTreeMap::new();
        let mut remote_keys = BTreeMap::new();
        for (name, provider) in &config.jwt_providers {
            let reuse = kept
                .and_then(|p| p.remote_keys.get(name))
                .filter(|(fp, _)| *fp == remote_fingerprint(&provider.value));
            let reused = reuse.map(|(_, k)| k.clone());
            let Some(keys) = key_source(name, provider, reused, &cache, diagnostics, fetch_remote_keys).await else {
                continue;
            };
            if let KeySource::Remote(remote) = &keys {
                remote_keys.insert(name.clone(), (remote_fingerprint(&provider.value), remote.clone()));
            }
            let algorithms = algorithms_of(&provider.value);
            let id = cache_ids.next().unwrap_or_default();
            let built = JwtProvider::new(name, id, &provider.value, algorithms, keys, cache.clone());
            providers.insert(name.clone(), Arc::new(built));
        }
        let mut introspectors = BTreeMap::new();
        for (name, endpoint) in &config.introspection {
            let id = cache_ids.next().unwrap_or_default();
            if let Some(built) = introspector(name, id, endpoint, &cache, diagnostics) {
                introspectors.insert(name.clone(), Arc::new(built));
            }
        }
        // What earlier verdicts depended on: the settings and the static key material (a JWKS file
        // or a secret can change without the config text changing).
        let mut settings = format!("{config:?}");
        for provider in providers.values() {
            settings.push_str(&provider.key_fingerprint());
        }
        if kept.is_some_and(|p| p.settings != settings) {
            // A key was removed or a provider's audiences changed: cached verdicts are void.
            cache.flush();
        }
        let api_keys = ApiKeyStore::compile(&config.api_keys, diagnostics);
        let identity = IdentityHeaders::compile(&config.identity).unwrap_or_else(|message| {
            diagnostics.general(format!("authentication.identity: {message}"));
            IdentityHeaders::compile(&Default::default()).expect("the default identity headers compile")
        });
        Authenticator {
            providers,
            remote_keys,
            introspectors,
            api_keys,
            identity,
            api_key_header: config.api_keys.header.clone(),
            forward_api_key: config.api_keys.forward,
            cache,
            settings,
        }
    }

    /// The route's methods, resolved against the compiled providers. Names were validated at load.
    pub fn route(&self, methods: &[Spanned<AuthMethod>]) -> RouteAuth {
        let methods = methods
            .iter()
            .filter_map(|method| match &method.value {
                AuthMethod::Jwt(name) => self.providers.get(name).cloned().map(RouteMethod::Jwt),
                AuthMethod::ApiKey => Some(RouteMethod::ApiKey),
                AuthMethod::Mtls => Some(RouteMethod::Mtls),
                AuthMethod::Introspection(name) => {
                    self.introspectors.get(name).cloned().map(RouteMethod::Introspection)
                }
            })
            .collect();
        RouteAuth { methods }
    }

    /// Tries the route's methods in order; the first success wins. When all fail, the most telling
    /// failure is returned (see [`AuthFailure::rank`]).
    pub async fn authenticate(
        &self,
        route: &RouteAuth,
        headers: &HeaderMap,
        client_certificate: Option<&ClientCertificate>,
    ) -> Result<Arc<Principal>, AuthFailure> {
        let mut worst = AuthFailure::MissingCredentials;
        for method in &route.methods {
            let outcome = match method {
                RouteMethod::Jwt(provider) => {
                    match extract::token(headers, &provider.token, provider.max_token_bytes) {
                        Ok(Some(token)) => provider.verify(token).await,
                        Ok(None) => Err(AuthFailure::MissingCredentials),
                        Err(failure) => Err(failure),
                    }
                }
                RouteMethod::Introspection(endpoint) => {
                    match extract::token(headers, &endpoint.token, endpoint.max_token_bytes) {
                        Ok(Some(token)) => endpoint.verify(token).await,
                        Ok(None) => Err(AuthFailure::MissingCredentials),
                        Err(failure) => Err(failure),
                    }
                }
                RouteMethod::ApiKey => self
                    .api_keys
                    .authenticate(headers)
                    .and_then(|found| found.ok_or(AuthFailure::MissingCredentials)),
                RouteMethod::Mtls => match client_certificate {
                    Some(certificate) => certificate.clone(),
                    None => Err(AuthFailure::NoClientCertificate),
                },
            };
            match outcome {
                Ok(principal) => return Ok(principal),
                Err(failure) if failure.rank() > worst.rank() => worst = failure,
                Err(_) => {}
            }
        }
        Err(worst)
    }

    /// The `WWW-Authenticate` value for a 401 on this route (RFC 6750 §3 for bearer tokens).
    pub fn challenge(&self, route: &RouteAuth, failure: AuthFailure) -> String {
        let mut challenges = Vec::new();
        let bearer = route
            .methods
            .iter()
            .any(|m| matches!(m, RouteMethod::Jwt(_) | RouteMethod::Introspection(_)));
        if bearer {
            challenges.push(match failure {
                AuthFailure::MissingCredentials | AuthFailure::NoClientCertificate => {
                    "Bearer realm=\"palisade\"".to_string()
                }
                _ => format!(
                    "Bearer realm=\"palisade\", error=\"invalid_token\", error_description=\"{}\"",
                    failure.description()
                ),
            });
        }
        if route.methods.iter().any(|m| matches!(m, RouteMethod::ApiKey)) {
            challenges.push(format!("ApiKey realm=\"palisade\", header=\"{}\"", self.api_key_header));
        }
        challenges.join(", ")
    }

    /// The JWT providers whose remote key set was never loaded (their tokens are answered 503).
    pub fn key_sets_not_loaded(&self) -> Vec<&str> {
        self.remote_keys
            .iter()
            .filter(|(_, (_, keys))| !keys.is_loaded())
            .map(|(name, _)| name.as_str())
            .collect()
    }

    pub fn api_key_count(&self) -> usize {
        self.api_keys.len()
    }
}

/// One JWT provider on its own, outside any gateway config (the identity service verifies
/// Kubernetes ServiceAccount tokens with it). `None` with the reasons in `diagnostics` when its
/// keys cannot be set up. With `fetch` false, remote keys are not fetched (an offline check).
pub async fn standalone_jwt_provider(
    name: &str,
    provider: &Spanned<JwtProviderConfig>,
    max_cached_bytes: u64,
    diagnostics: &mut Diagnostics,
    fetch: bool,
) -> Option<JwtProvider> {
    let cache = TokenCache::new(max_cached_bytes);
    let keys = key_source(name, provider, None, &cache, diagnostics, fetch).await?;
    let algorithms = algorithms_of(&provider.value);
    Some(JwtProvider::new(name, 0, &provider.value, algorithms, keys, cache))
}

fn algorithms_of(config: &JwtProviderConfig) -> Vec<Algorithm> {
    let names: Vec<&str> = match &config.algorithms {
        Some(listed) => listed.value.iter().map(String::as_str).collect(),
        None if config.keys.value.shared_secret.is_some() => palisade_core::JWT_HMAC_ALGORITHMS.to_vec(),
        None => palisade_core::JWT_DEFAULT_ALGORITHMS.to_vec(),
    };
    names
        .into_iter()
        .filter_map(|name| Algorithm::from_str(name).ok())
        .collect()
}

/// What identifies a remote key set: where it comes from and how it is refreshed.
fn remote_fingerprint(config: &JwtProviderConfig) -> String {
    let keys = &config.keys.value;
    format!(
        "{:?}|{}|{}|{:?}|{:?}|{:?}",
        keys.jwks_url.as_ref().map(|u| &u.value),
        keys.discovery,
        config.issuer.value,
        keys.refresh,
        keys.ca.as_ref().map(|c| &c.value),
        keys.bearer_token_file.as_ref().map(|f| &f.value)
    )
}

async fn key_source(
    name: &str,
    provider: &Spanned<JwtProviderConfig>,
    reuse: Option<Arc<RemoteKeys>>,
    cache: &TokenCache,
    diagnostics: &mut Diagnostics,
    fetch: bool,
) -> Option<KeySource> {
    let config = &provider.value;
    let keys = &config.keys.value;
    if let Some(secret) = &keys.shared_secret {
        let value = match secret.value.resolve() {
            Ok(value) => value,
            Err(error) => {
                diagnostics.on(secret, format!("jwt provider {name:?}: shared_secret: {error}"));
                return None;
            }
        };
        if value.expose().len() < MIN_SHARED_SECRET_BYTES {
            diagnostics.on(
                secret,
                format!("jwt provider {name:?}: shared_secret must be at least {MIN_SHARED_SECRET_BYTES} bytes"),
            );
            return None;
        }
        let set = KeySet::from_secret(value.expose().as_bytes(), algorithms_of(config));
        return Some(KeySource::Static(Arc::new(set)));
    }
    if let Some(document) = static_jwks(name, provider, diagnostics) {
        return match KeySet::from_jwks(&document) {
            Ok((set, _)) if !set.keys.is_empty() => Some(KeySource::Static(Arc::new(set))),
            Ok(_) => {
                diagnostics.on(
                    &config.keys,
                    format!("jwt provider {name:?}: the key set has no usable signature key"),
                );
                None
            }
            Err(error) => {
                diagnostics.on(&config.keys, format!("jwt provider {name:?}: {error}"));
                None
            }
        };
    }
    if let Some(existing) = reuse {
        return Some(KeySource::Remote(existing));
    }
    let source = match &keys.jwks_url {
        Some(url) => RemoteSource::JwksUrl(url.value.parse().ok()?),
        None if keys.discovery => RemoteSource::Discovery(config.issuer.value.clone()),
        None => return None,
    };
    let origin = match &source {
        RemoteSource::JwksUrl(uri) => uri.clone(),
        RemoteSource::Discovery(issuer) => issuer.parse().ok()?,
    };
    let fetcher =
        Fetcher::new(keys.ca.as_ref().map(|c| c.value.as_path()), keys.refresh.timeout.get()).and_then(|fetcher| {
            match &keys.bearer_token_file {
                Some(file) => fetcher.with_bearer_token_file(&file.value, &origin),
                None => Ok(fetcher),
            }
        });
    let fetcher = match fetcher {
        Ok(fetcher) => fetcher,
        Err(message) => {
            diagnostics.on(&config.keys, format!("jwt provider {name:?}: {message}"));
            return None;
        }
    };
    let flush = cache.clone();
    let remote = RemoteKeys::start(
        name,
        source,
        fetcher,
        keys.refresh.clone(),
        Box::new(move || flush.flush()),
        fetch,
    )
    .await;
    Some(KeySource::Remote(remote))
}

/// The inline or file JWK Set, if the provider has one.
fn static_jwks(
    name: &str,
    provider: &Spanned<JwtProviderConfig>,
    diagnostics: &mut Diagnostics,
) -> Option<serde_json::Value> {
    let keys = &provider.value.keys;
    if let Some(inline) = &keys.value.jwks {
        return match inline {
            serde_json::Value::String(text) => match serde_json::from_str(text) {
                Ok(document) => Some(document),
                Err(error) => {
                    diagnostics.on(keys, format!("jwt provider {name:?}: jwks is not JSON: {error}"));
                    None
                }
            },
            other => Some(other.clone()),
        };
    }
    let file = keys.value.jwks_file.as_ref()?;
    let parsed = std::fs::read(&file.value)
        .map_err(|e| e.kind().to_string())
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()));
    match parsed {
        Ok(document) => Some(document),
        Err(error) => {
            diagnostics.on(file, format!("cannot read JWK Set {}: {error}", file.value.display()));
            None
        }
    }
}

fn introspector(
    name: &str,
    cache_id: u32,
    endpoint: &Spanned<IntrospectionConfig>,
    cache: &TokenCache,
    diagnostics: &mut Diagnostics,
) -> Option<Introspector> {
    let config = &endpoint.value;
    let secret = match config.client_secret.value.resolve() {
        Ok(secret) => secret,
        Err(error) => {
            diagnostics.on(
                &config.client_secret,
                format!("introspection {name:?}: client_secret: {error}"),
            );
            return None;
        }
    };
    let uri = config.endpoint.value.parse().ok()?;
    let fetcher = match Fetcher::new(config.ca.as_ref().map(|c| c.value.as_path()), config.timeout.get()) {
        Ok(fetcher) => fetcher,
        Err(message) => {
            diagnostics.on(endpoint, format!("introspection {name:?}: {message}"));
            return None;
        }
    };
    Some(Introspector::new(
        name,
        cache_id,
        config,
        uri,
        &secret,
        fetcher,
        cache.clone(),
    ))
}
