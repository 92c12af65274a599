//! Authentication settings: JWT providers, API keys, OAuth2 introspection, the verified-token cache,
//! client certificates on TLS listeners, and the identity the upstream receives.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::secret::SecretRef;
use crate::units::{ByteSize, Duration};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthenticationConfig {
    /// JWT issuers by name; routes refer to them as `jwt: NAME`.
    pub jwt_providers: BTreeMap<String, Spanned<JwtProviderConfig>>,
    pub api_keys: ApiKeysConfig,
    /// RFC 7662 introspection endpoints by name; routes refer to them as `introspection: NAME`.
    pub introspection: BTreeMap<String, Spanned<IntrospectionConfig>>,
    pub token_cache: TokenCacheConfig,
    pub identity: IdentityConfig,
}

/// One accepted way to authenticate on a route.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// A JWT verified by the named provider.
    Jwt(String),
    /// An API key from `authentication.api_keys`.
    ApiKey,
    /// The client certificate verified by the listener.
    Mtls,
    /// An opaque token checked at the named introspection endpoint.
    Introspection(String),
}

/// The `aud` values a token may carry: one of a list, or (said explicitly) any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audiences {
    Any,
    OneOf(Vec<String>),
}

impl Audiences {
    /// The accepted audiences; empty for [`Audiences::Any`].
    pub fn accepted(&self) -> &[String] {
        match self {
            Audiences::Any => &[],
            Audiences::OneOf(list) => list,
        }
    }
}

impl<'de> Deserialize<'de> for Audiences {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Word(String),
            List(Vec<String>),
        }
        match Written::deserialize(deserializer)? {
            Written::Word(word) if word == "any" => Ok(Audiences::Any),
            Written::Word(word) => Err(serde::de::Error::custom(format!(
                "audiences must be a list of audiences or `any`, not {word:?}"
            ))),
            Written::List(list) => Ok(Audiences::OneOf(list)),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtProviderConfig {
    /// The exact `iss` value tokens must carry.
    pub issuer: Spanned<String>,
    /// `aud` must contain one of these. Required: a provider without them is a config error, so a
    /// token the same identity provider minted for another service cannot pass by accident.
    /// `audiences: any` turns the check off, explicitly (check-config warns).
    #[serde(default)]
    pub audiences: Option<Spanned<Audiences>>,
    /// Accepted `alg` values. Default: RS256/384/512, PS256/384/512, ES256/384, EdDSA. HS256/384/512
    /// only with `keys.shared_secret`.
    #[serde(default)]
    pub algorithms: Option<Spanned<Vec<String>>>,
    pub keys: Spanned<JwtKeysConfig>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    #[serde(default = "JwtProviderConfig::default_leeway")]
    pub leeway: Duration,
    /// Claims every token must have.
    #[serde(default = "JwtProviderConfig::default_required_claims")]
    pub required_claims: Vec<String>,
    #[serde(default)]
    pub token: TokenLocation,
    /// Longer tokens are refused before any parsing.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: ByteSize,
    #[serde(default)]
    pub claims: ClaimMapping,
}

impl JwtProviderConfig {
    fn default_leeway() -> Duration {
        Duration::from_secs(60)
    }
    fn default_required_claims() -> Vec<String> {
        vec!["exp".into()]
    }
}

fn default_max_token_bytes() -> ByteSize {
    ByteSize(8 * 1024)
}

/// Where a provider's verification keys come from: exactly one of `jwks`, `jwks_file`, `jwks_url`,
/// `discovery` or `shared_secret`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtKeysConfig {
    /// An inline JWK Set (a YAML mapping or a JSON string).
    #[serde(default)]
    pub jwks: Option<serde_json::Value>,
    /// A JWK Set file, re-read on reload.
    #[serde(default)]
    pub jwks_file: Option<Spanned<PathBuf>>,
    /// A JWK Set URL (https, or http to a loopback address), cached and refreshed.
    #[serde(default)]
    pub jwks_url: Option<Spanned<String>>,
    /// Find `jwks_uri` in `{issuer}/.well-known/openid-configuration`.
    #[serde(default)]
    pub discovery: bool,
    /// For HS256/384/512 only: a `${ENV}` or `file:` reference to a secret of at least 32 bytes.
    #[serde(default)]
    pub shared_secret: Option<Spanned<SecretRef>>,
    #[serde(default)]
    pub refresh: KeyRefreshConfig,
    /// PEM CA bundle for the IdP's HTTPS certificate, in addition to the public web roots.
    #[serde(default)]
    pub ca: Option<Spanned<PathBuf>>,
    /// A file whose content is sent as `Authorization: Bearer` to the key set's own origin (the
    /// `jwks_url`'s, or the issuer's for discovery), never to another host: a Kubernetes API server
    /// serves its keys only to authenticated callers. Re-read at every fetch (the token rotates).
    #[serde(default)]
    pub bearer_token_file: Option<Spanned<PathBuf>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeyRefreshConfig {
    /// Scheduled refresh of a remote key set.
    pub interval: Duration,
    /// A token with an unknown `kid` triggers a refresh at most this often.
    pub min_interval: Duration,
    /// One fetch attempt.
    pub timeout: Duration,
    /// Failed fetches are retried with doubling delays up to this.
    pub max_backoff: Duration,
}

impl Default for KeyRefreshConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(300),
            min_interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            max_backoff: Duration::from_secs(300),
        }
    }
}

/// Where the token is read from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenLocation {
    /// `Authorization: Bearer <token>`.
    #[default]
    Bearer,
    /// The whole value of this header.
    Header(String),
    /// This cookie.
    Cookie(String),
}

/// Where the principal's attributes are found in the claims. Paths use dots for nesting
/// (`realm_access.roles`); a value may be a space-separated string or an array of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClaimMapping {
    pub subject: String,
    pub scopes: Vec<String>,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        Self {
            subject: "sub".into(),
            scopes: vec!["scope".into(), "scp".into()],
            roles: vec!["roles".into(), "realm_access.roles".into()],
            groups: vec!["groups".into()],
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiKeysConfig {
    /// Request header that carries the key.
    pub header: String,
    pub keys: Vec<Spanned<ApiKeyEntry>>,
    /// A YAML file holding a list of entries like `keys`; re-read on reload and watched.
    pub file: Option<Spanned<PathBuf>>,
    /// Pass the key header on to the upstream. Off: the upstream never sees the credential.
    pub forward: bool,
}

impl Default for ApiKeysConfig {
    fn default() -> Self {
        Self {
            header: "x-api-key".into(),
            keys: Vec::new(),
            file: None,
            forward: false,
        }
    }
}

/// An API key, stored only as the SHA-256 of the key (`palisade apikey new` prints both).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    /// The principal's subject; unique.
    pub name: String,
    /// `sha256:` followed by 64 hex digits.
    pub hash: Spanned<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    /// RFC 3339 time after which the key is refused.
    #[serde(default)]
    pub expires: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionConfig {
    /// The RFC 7662 endpoint (https, or http to a loopback address).
    pub endpoint: Spanned<String>,
    /// An answer that carries `aud` must name one of these. Required, as for JWT providers;
    /// `audiences: any` turns the check off.
    #[serde(default)]
    pub audiences: Option<Spanned<Audiences>>,
    pub client_id: String,
    pub client_secret: Spanned<SecretRef>,
    #[serde(default = "IntrospectionConfig::default_timeout")]
    pub timeout: Duration,
    /// Answers are cached until the token's `exp`, but never longer than this.
    #[serde(default = "IntrospectionConfig::default_max_cache_ttl")]
    pub max_cache_ttl: Duration,
    #[serde(default)]
    pub token: TokenLocation,
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: ByteSize,
    #[serde(default)]
    pub claims: ClaimMapping,
    #[serde(default)]
    pub ca: Option<Spanned<PathBuf>>,
}

impl IntrospectionConfig {
    fn default_timeout() -> Duration {
        Duration::from_secs(2)
    }
    fn default_max_cache_ttl() -> Duration {
        Duration::from_secs(300)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenCacheConfig {
    /// Memory for verified tokens (JWT and introspection answers); least recently used go first.
    pub max_bytes: ByteSize,
}

impl Default for TokenCacheConfig {
    fn default() -> Self {
        Self {
            max_bytes: ByteSize(16 * 1024 * 1024),
        }
    }
}

/// What the upstream learns about the caller.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// Header name → template. Placeholders: `{sub}`, `{iss}`, `{kind}`, `{method}`, `{scopes}`,
    /// `{roles}`, `{groups}`, `{claims.PATH}`. Client-sent copies of these headers are always removed.
    pub headers: BTreeMap<String, String>,
    /// Remove the client's `Authorization` header before forwarding.
    pub strip_authorization: bool,
    /// Mint a short-lived ES256 JWT for the upstream (its key set is served at
    /// `/.well-known/jwks.json` on the admin listener).
    pub internal_token: Option<InternalTokenConfig>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        let headers = [
            ("x-palisade-subject", "{sub}"),
            ("x-palisade-issuer", "{iss}"),
            ("x-palisade-auth", "{method}"),
            ("x-palisade-scopes", "{scopes}"),
        ];
        Self {
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            strip_authorization: false,
            internal_token: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InternalTokenConfig {
    #[serde(default = "InternalTokenConfig::default_header")]
    pub header: String,
    /// At most 60 s.
    #[serde(default = "InternalTokenConfig::default_ttl")]
    pub ttl: Duration,
    #[serde(default = "InternalTokenConfig::default_issuer")]
    pub issuer: String,
    #[serde(default)]
    pub audience: Option<String>,
}

impl InternalTokenConfig {
    fn default_header() -> String {
        "x-palisade-token".into()
    }
    fn default_ttl() -> Duration {
        Duration::from_secs(30)
    }
    fn default_issuer() -> String {
        "palisade".into()
    }
}

/// Client certificates on a TLS listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCertificatesConfig {
    /// `request`: ask, and verify when given; `require`: refuse the handshake without one.
    #[serde(default)]
    pub mode: ClientCertificateMode,
    /// PEM CA bundles that client certificates must chain to.
    pub ca: Vec<Spanned<PathBuf>>,
    /// Where the subject comes from, first found wins.
    #[serde(default = "ClientCertificatesConfig::default_subject_from")]
    pub subject_from: Vec<CertificateSubject>,
    /// Accept only workload certificates (X.509-SVIDs) whose one URI SAN is a SPIFFE ID in one of
    /// these trust domains; anything else is refused in the handshake. Empty: no such requirement.
    #[serde(default)]
    pub trust_domains: Vec<Spanned<String>>,
}

impl ClientCertificatesConfig {
    fn default_subject_from() -> Vec<CertificateSubject> {
        vec![
            CertificateSubject::UriSan,
            CertificateSubject::DnsSan,
            CertificateSubject::CommonName,
        ]
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientCertificateMode {
    #[default]
    Request,
    Require,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertificateSubject {
    UriSan,
    DnsSan,
    CommonName,
}

/// Who may use a route once authenticated. Default deny: a request passes only when `allow:
/// authenticated` is set or one of the rules allows it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationConfig {
    /// `authenticated`: any verified principal may use the route (no rules).
    #[serde(default)]
    pub allow: Option<AllowAll>,
    /// Allowing rules; the first one that matches the request and the principal decides.
    #[serde(default)]
    pub rules: Vec<Spanned<RuleConfig>>,
    /// The name of a Cedar policy set (top-level `policies`) that decides for this route.
    #[serde(default)]
    pub policies: Option<Spanned<String>>,
    /// Named operations for the Cedar policies: the action for each method (`GET: readOrder`).
    /// Methods not listed are their own action (`Palisade::Action::"DELETE"`). Each name must be an
    /// action of the policy set's schema.
    #[serde(default)]
    pub actions: BTreeMap<String, Spanned<String>>,
}

/// A Cedar policy set: policies validated against a schema at load, reloaded with the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySetConfig {
    /// The Cedar schema (`.cedarschema`) the policies are validated against.
    pub schema: Spanned<PathBuf>,
    /// Policy files (`.cedar`).
    pub files: Vec<Spanned<PathBuf>>,
    /// Request headers offered to policies as `context.headers` (names lower-cased, `-` → `_`).
    #[serde(default)]
    pub context_headers: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllowAll {
    Authenticated,
}

/// One allowing rule. Every condition given must hold; a rule names at least one.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Recorded as the deciding rule (audit, access log); default `rule-N` (1-based).
    #[serde(default)]
    pub id: Option<String>,
    /// The rule applies to these methods only. Absent: every method.
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// Every listed scope, role and group.
    #[serde(default)]
    pub all_of: Option<Requirement>,
    /// At least one of the listed scopes, roles or groups.
    #[serde(default)]
    pub any_of: Option<Requirement>,
    /// Principal kinds: `user`, `service`, `api_key`.
    #[serde(default)]
    pub kinds: Option<Vec<PrincipalKindName>>,
    /// Exact issuers.
    #[serde(default)]
    pub issuers: Option<Vec<String>>,
    /// Exact subjects; a workload's SPIFFE ID may also be named by a pattern
    /// (`spiffe://example.org/ns/shop/*`: every ID below that path).
    #[serde(default)]
    pub subjects: Option<Vec<String>>,
}

impl RuleConfig {
    /// The rule's id: its own, or `rule-N` for the rule at `index` (0-based) of its route.
    pub fn id_at(&self, index: usize) -> String {
        self.id.clone().unwrap_or_else(|| format!("rule-{}", index + 1))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Requirement {
    pub scopes: Vec<String>,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
}

impl Requirement {
    pub fn is_empty(&self) -> bool {
        self.scopes.is_empty() && self.roles.is_empty() && self.groups.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKindName {
    User,
    Service,
    ApiKey,
}
