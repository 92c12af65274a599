//! The identity service's Kubernetes settings (`palisade ca serve --config FILE`): how
//! ServiceAccount tokens are verified and which workloads may get an identity. Parsed with
//! `file:line:column` errors and validated once, before anything starts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use palisade_core::config::auth::{Audiences, JwtKeysConfig, JwtProviderConfig};
use palisade_core::config::unspanned;
use palisade_core::units::Duration as ConfigDuration;
use palisade_core::{ConfigErrors, Diagnostics, Spanned};
use serde::Deserialize;

/// The audience a token must be minted for unless configured otherwise (Linkerd's is
/// `identity.l5d.io`, Istio's `istio-ca`).
pub const DEFAULT_AUDIENCE: &str = "palisade-ca";

/// The file `palisade ca serve --config` reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityServiceFile {
    /// First certificates for pods, proven with their projected ServiceAccount token.
    #[serde(default)]
    pub kubernetes: Option<Spanned<ServiceAccountTokens>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceAccountTokens {
    /// The cluster's ServiceAccount issuer (kube-apiserver `--service-account-issuer`), exactly.
    pub issuer: Spanned<String>,
    /// The audience the pod's projected token is minted for.
    #[serde(default = "default_audience")]
    pub audience: Spanned<String>,
    /// Verify tokens offline against the cluster's signing keys: `discovery: true` (OIDC discovery
    /// of the issuer), `jwks_url`, or `jwks_file` (`kubectl get --raw /openid/v1/jwks`).
    #[serde(default)]
    pub keys: Option<Spanned<JwtKeysConfig>>,
    /// Or ask the API server (the TokenReview API) for clusters whose keys cannot be fetched.
    #[serde(default)]
    pub token_review: Option<Spanned<TokenReviewConfig>>,
    /// Tokens issued longer ago than this are refused, whatever their `exp` (a token copied off
    /// a node stops working at this age; kubelet replaces a projected token at 80% of its life).
    #[serde(default = "default_max_token_age")]
    pub max_token_age: ConfigDuration,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    #[serde(default = "default_leeway")]
    pub leeway: ConfigDuration,
    /// Only tokens bound to a pod (projected volumes are): a token minted with `kubectl create
    /// token` for a bare ServiceAccount is refused unless this is false.
    #[serde(default = "default_true")]
    pub require_pod: bool,
    /// Who may get an identity: `NAMESPACE` or `NAMESPACE/SERVICEACCOUNT`, `*` for any one
    /// segment. Required: nothing is allowed unless listed (`["*"]` allows every namespace).
    pub allow: Spanned<Vec<String>>,
    /// Refused even when allowed (e.g. `kube-system`, `*/default`).
    #[serde(default)]
    pub deny: Option<Spanned<Vec<String>>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenReviewConfig {
    /// The API server, e.g. `https://kubernetes.default.svc`.
    pub url: Spanned<String>,
    /// The API server's CA (in a pod: `/var/run/secrets/kubernetes.io/serviceaccount/ca.crt`).
    #[serde(default)]
    pub ca: Option<Spanned<PathBuf>>,
    /// The identity service's own token, allowed to create TokenReviews (in a pod:
    /// `/var/run/secrets/kubernetes.io/serviceaccount/token`). Re-read at every review.
    pub bearer_token_file: Spanned<PathBuf>,
    #[serde(default = "default_review_timeout")]
    pub timeout: ConfigDuration,
}

fn default_audience() -> Spanned<String> {
    unspanned(DEFAULT_AUDIENCE.to_string())
}

fn default_max_token_age() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(3600))
}

fn default_leeway() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(30))
}

fn default_review_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(5))
}

fn default_true() -> bool {
    true
}

fn at<T, U>(value: T, place: &Spanned<U>) -> Spanned<T> {
    Spanned {
        value,
        referenced: place.referenced,
        defined: place.defined,
    }
}

/// One allow or deny entry: a namespace, or a namespace and ServiceAccount; `None` is `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadPattern {
    namespace: Option<String>,
    service_account: Option<String>,
}

impl WorkloadPattern {
    pub fn parse(text: &str) -> Result<WorkloadPattern, String> {
        let segment = |part: &str| -> Result<Option<String>, String> {
            if part == "*" {
                return Ok(None);
            }
            if is_dns_subdomain(part) {
                Ok(Some(part.to_string()))
            } else {
                Err(format!(
                    "{part:?} is not a Kubernetes name (lowercase letters, digits, '-' and '.') or *"
                ))
            }
        };
        match text.split_once('/') {
            None => Ok(WorkloadPattern {
                namespace: segment(text)?,
                service_account: None,
            }),
            Some((namespace, service_account)) => Ok(WorkloadPattern {
                namespace: segment(namespace)?,
                service_account: segment(service_account)?,
            }),
        }
    }

    pub fn matches(&self, namespace: &str, service_account: &str) -> bool {
        self.namespace.as_deref().is_none_or(|n| n == namespace)
            && self.service_account.as_deref().is_none_or(|s| s == service_account)
    }
}

/// RFC 1123 subdomain, as Kubernetes names namespaces (labels) and ServiceAccounts.
pub fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// The settings, checked: what the attestor is built from.
#[derive(Debug, Clone)]
pub struct Validated {
    pub issuer: String,
    pub audience: String,
    /// The provider the offline path verifies with (issuer, audience, keys, leeway).
    pub provider: Option<Spanned<JwtProviderConfig>>,
    pub token_review: Option<TokenReviewConfig>,
    pub max_token_age: Duration,
    pub leeway: Duration,
    pub require_pod: bool,
    pub allow: Vec<WorkloadPattern>,
    pub deny: Vec<WorkloadPattern>,
}

impl ServiceAccountTokens {
    /// Every mistake, each at its place in the file.
    pub fn validate(&self, diagnostics: &mut Diagnostics) -> Option<Validated> {
        let before = diagnostics.len();
        if self.audience.value.is_empty() {
            diagnostics.on(&self.audience, "kubernetes.audience is empty");
        }
        match (&self.keys, &self.token_review) {
            (Some(_), Some(review)) => {
                diagnostics.on(
                    review,
                    "kubernetes: keys and token_review are two ways to verify tokens; give one",
                );
            }
            (None, None) => diagnostics.on(
                &self.issuer,
                "kubernetes: give keys (discovery, jwks_url or jwks_file) or token_review",
            ),
            _ => {}
        }
        let provider = self.keys.as_ref().map(|keys| {
            if keys.value.shared_secret.is_some() || keys.value.jwks.is_some() {
                diagnostics.on(
                    keys,
                    "kubernetes.keys: a cluster signs with a private key; use discovery, jwks_url or jwks_file",
                );
            }
            let provider = at(
                JwtProviderConfig {
                    issuer: self.issuer.clone(),
                    audiences: Some(at(Audiences::OneOf(vec![self.audience.value.clone()]), &self.audience)),
                    algorithms: None,
                    keys: keys.clone(),
                    leeway: self.leeway,
                    required_claims: vec!["exp".into(), "iat".into(), "sub".into()],
                    token: Default::default(),
                    max_token_bytes: palisade_core::units::ByteSize(16 * 1024),
                    claims: Default::default(),
                },
                keys,
            );
            palisade_core::validate_jwt_provider("kubernetes", &provider, diagnostics);
            provider
        });
        if let Some(review) = &self.token_review {
            let url = &review.value.url;
            if !url.value.starts_with("https://") || url.value.parse::<http::Uri>().is_err() {
                diagnostics.on(
                    url,
                    format!("kubernetes.token_review.url {:?} is not an https:// URL", url.value),
                );
            }
        }
        if self.issuer.value.is_empty() {
            diagnostics.on(&self.issuer, "kubernetes.issuer is empty");
        }
        if self.max_token_age.get().is_zero() {
            diagnostics.on(&self.issuer, "kubernetes.max_token_age must be more than 0");
        }
        if self.allow.value.is_empty() {
            diagnostics.on(
                &self.allow,
                "kubernetes.allow is empty: nothing would get an identity (list namespaces, or [\"*\"] for all)",
            );
        }
        let mut patterns = |list: &Spanned<Vec<String>>, what: &str| -> Vec<WorkloadPattern> {
            list.value
                .iter()
                .filter_map(|text| match WorkloadPattern::parse(text) {
                    Ok(pattern) => Some(pattern),
                    Err(error) => {
                        diagnostics.on(list, format!("kubernetes.{what}: {error}"));
                        None
                    }
                })
                .collect()
        };
        let allow = patterns(&self.allow, "allow");
        let deny = self
            .deny
            .as_ref()
            .map(|deny| patterns(deny, "deny"))
            .unwrap_or_default();
        if diagnostics.len() > before {
            return None;
        }
        Some(Validated {
            issuer: self.issuer.value.clone(),
            audience: self.audience.value.clone(),
            provider,
            token_review: self.token_review.as_ref().map(|r| r.value.clone()),
            max_token_age: self.max_token_age.get(),
            leeway: self.leeway.get(),
            require_pod: self.require_pod,
            allow,
            deny,
        })
    }
}

/// Reads and validates the identity service's file. Relative paths are taken from its directory.
pub fn load(path: &Path) -> Result<Option<Validated>, ConfigErrors> {
    let mut file: IdentityServiceFile = palisade_core::load_yaml_file(path)?;
    let Some(settings) = file.kubernetes.as_mut() else {
        return Ok(None);
    };
    if let Some(dir) = path.parent() {
        let settings = &mut settings.value;
        let mut files: Vec<&mut Spanned<PathBuf>> = Vec::new();
        if let Some(keys) = settings.keys.as_mut() {
            files.extend(keys.value.jwks_file.as_mut());
            files.extend(keys.value.ca.as_mut());
            files.extend(keys.value.bearer_token_file.as_mut());
        }
        if let Some(review) = settings.token_review.as_mut() {
            files.extend(review.value.ca.as_mut());
            files.push(&mut review.value.bearer_token_file);
        }
        for file in files {
            if file.value.is_relative() {
                file.value = dir.join(&file.value);
            }
        }
    }
    let mut diagnostics = Diagnostics::new(path.display().to_string());
    let validated = settings.value.validate(&mut diagnostics);
    match validated {
        Some(validated) if diagnostics.is_empty() => Ok(Some(validated)),
        _ => Err(ConfigErrors(diagnostics.into_errors())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_a_namespace_or_one_service_account_with_wildcards() {
        let namespace = WorkloadPattern::parse("shop").unwrap();
        assert!(namespace.matches("shop", "orders"));
        assert!(!namespace.matches("shop-2", "orders"));
        let one = WorkloadPattern::parse("shop/orders").unwrap();
        assert!(one.matches("shop", "orders"));
        assert!(!one.matches("shop", "billing"));
        let defaults = WorkloadPattern::parse("*/default").unwrap();
        assert!(defaults.matches("anything", "default"));
        assert!(!defaults.matches("anything", "orders"));
        assert!(WorkloadPattern::parse("*").unwrap().matches("a", "b"));
        for bad in ["", "Shop", "shop/", "a/b/c", "-x", "x_y"] {
            assert!(WorkloadPattern::parse(bad).is_err(), "{bad:?}");
        }
    }
}
