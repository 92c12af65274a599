//! Traffic protection settings: rate limits (and where their state lives), in-flight limits and IP
//! rules. Values with a syntax of their own (`10/s`, `header:X-Tenant`) are parsed at load, so the
//! runtime never meets an invalid one.

use std::fmt;
use std::path::PathBuf;

use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::units::Duration;

/// Global rate-limit settings: where the counters live and what happens when that store fails.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitsConfig {
    /// `local` (each gateway process counts alone) or `redis://host:port/db` / `rediss://…` (all
    /// gateways sharing the store count together).
    pub store: Spanned<String>,
    /// What a limit does while the shared store is unreachable.
    pub on_store_error: StoreErrorPolicy,
    /// Longest wait for one decision from the shared store before it counts as unreachable.
    pub store_timeout: Duration,
    /// For `rediss://` stores: the CA to verify Redis with (instead of the web PKI roots) and a
    /// client certificate for servers that ask for one (`tls-auth-clients`).
    pub store_tls: Option<Spanned<StoreTlsConfig>>,
    /// Keys (clients, subjects, …) each limit tracks in memory; beyond it the least recently seen
    /// are forgotten, so a client spraying keys cannot exhaust memory.
    pub max_keys: usize,
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        Self {
            store: super::unspanned("local".into()),
            on_store_error: StoreErrorPolicy::FallbackLocal,
            store_timeout: Duration::from_millis(50),
            store_tls: None,
            max_keys: 100_000,
        }
    }
}

/// TLS towards the rate-limit store. The files are read at load and on every reload.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreTlsConfig {
    /// PEM bundle the store's certificate must chain to. Absent: the web PKI roots.
    #[serde(default)]
    pub ca: Option<Spanned<PathBuf>>,
    /// PEM certificate chain presented to the store; with `key`.
    #[serde(default)]
    pub cert: Option<Spanned<PathBuf>>,
    #[serde(default)]
    pub key: Option<Spanned<PathBuf>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StoreErrorPolicy {
    /// Count locally in each process until the store is back.
    #[default]
    FallbackLocal,
    /// Refuse requests on limited routes (429) until the store is back.
    Deny,
}

/// One rate limit on a route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRateLimit {
    /// Names the limit in `RateLimit-Policy`, metrics and logs; unique within the route.
    pub name: Spanned<String>,
    /// Sustained rate: `10/s`, `600/min`, `5/h`, `100/10s`.
    pub rate: Spanned<Rate>,
    /// Requests allowed at once above the sustained rate. Default: the rate's count.
    #[serde(default)]
    pub burst: Option<u32>,
    /// Who shares one budget: `client_ip`, `subject`, `api_key`, `route` or `header:NAME`.
    pub key: Spanned<LimitKey>,
}

impl RouteRateLimit {
    pub fn burst(&self) -> u32 {
        self.burst.unwrap_or(self.rate.value.count).max(1)
    }
}

/// `count` requests per `period`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub period: std::time::Duration,
}

impl Rate {
    pub fn parse(text: &str) -> Result<Rate, String> {
        let expected = "expected a rate such as 10/s, 600/min, 5/h or 100/10s";
        let (count, period) = text
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("{text:?}: {expected}"))?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| format!("{text:?}: the count must be a whole number; {expected}"))?;
        let period = match period.trim() {
            "s" | "sec" | "second" => std::time::Duration::from_secs(1),
            "m" | "min" | "minute" => std::time::Duration::from_secs(60),
            "h" | "hour" => std::time::Duration::from_secs(3600),
            "d" | "day" => std::time::Duration::from_secs(86_400),
            other => humantime::parse_duration(other).map_err(|_| format!("{text:?}: {expected}"))?,
        };
        if count == 0 || period.is_zero() {
            return Err(format!("{text:?}: the count and the period must be more than 0"));
        }
        Ok(Rate { count, period })
    }

    /// Time between two requests at the sustained rate (the GCRA emission interval).
    pub fn interval(&self) -> std::time::Duration {
        self.period / self.count
    }
}

impl fmt::Debug for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, humantime::format_duration(self.period))
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Rate::parse(&text).map_err(de::Error::custom)
    }
}

/// What identifies the caller that a limit counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    /// The client address the gateway derived (trusted proxies only).
    ClientIp,
    /// The authenticated principal's subject.
    Subject,
    /// The name of the API key used.
    ApiKey,
    /// One budget for the whole route.
    Route,
    /// The value of a request header (lower-cased name).
    Header(String),
}

impl LimitKey {
    pub fn parse(text: &str) -> Result<LimitKey, String> {
        match text.trim() {
            "client_ip" => Ok(LimitKey::ClientIp),
            "subject" => Ok(LimitKey::Subject),
            "api_key" => Ok(LimitKey::ApiKey),
            "route" => Ok(LimitKey::Route),
            other => match other.strip_prefix("header:") {
                Some(name) if http::HeaderName::from_bytes(name.trim().as_bytes()).is_ok() => {
                    Ok(LimitKey::Header(name.trim().to_ascii_lowercase()))
                }
                _ => Err(format!(
                    "{text:?} is not a limit key; expected client_ip, subject, api_key, route or header:NAME"
                )),
            },
        }
    }

    /// Keys that only an authenticated request has.
    pub fn needs_principal(&self) -> bool {
        matches!(self, LimitKey::Subject | LimitKey::ApiKey)
    }

    pub fn as_str(&self) -> &str {
        match self {
            LimitKey::ClientIp => "client_ip",
            LimitKey::Subject => "subject",
            LimitKey::ApiKey => "api_key",
            LimitKey::Route => "route",
            LimitKey::Header(_) => "header",
        }
    }
}

impl<'de> Deserialize<'de> for LimitKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        LimitKey::parse(&text).map_err(de::Error::custom)
    }
}

/// Allow and deny lists of networks. A client on the deny list is refused; with a non-empty allow
/// list, a client must also be on it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IpRulesConfig {
    /// CIDRs or addresses (`10.0.0.0/8`, `2001:db8::/32`, `192.0.2.7`).
    pub allow: Vec<Spanned<String>>,
    pub deny: Vec<Spanned<String>>,
    /// Files with one CIDR per line (`#` comments); reloaded when they change.
    pub allow_files: Vec<Spanned<PathBuf>>,
    pub deny_files: Vec<Spanned<PathBuf>>,
}

impl IpRulesConfig {
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty() && self.allow_files.is_empty() && self.deny_files.is_empty()
    }

    pub fn files(&self) -> impl Iterator<Item = &PathBuf> {
        self.allow_files.iter().chain(&self.deny_files).map(|f| &f.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_units_and_custom_periods() {
        let rate = Rate::parse("10/s").expect("valid");
        assert_eq!((rate.count, rate.period.as_secs()), (10, 1));
        assert_eq!(Rate::parse("600/min").expect("valid").interval().as_millis(), 100);
        assert_eq!(Rate::parse("100/10s").expect("valid").period.as_secs(), 10);
        for bad in ["10", "0/s", "x/s", "10/fortnight", "10/0s", "-1/s"] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn limit_keys_parse() {
        assert_eq!(LimitKey::parse("client_ip"), Ok(LimitKey::ClientIp));
        assert_eq!(
            LimitKey::parse("header:X-Tenant"),
            Ok(LimitKey::Header("x-tenant".into()))
        );
        assert!(LimitKey::parse("header:bad name").is_err());
        assert!(LimitKey::parse("ip").is_err());
    }
}

/// Headers added to every response (when the upstream did not set them) and removed from upstream
/// responses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityHeadersConfig {
    /// `Strict-Transport-Security`, sent on TLS listeners only.
    pub hsts: Option<HstsConfig>,
    /// `X-Content-Type-Options: nosniff`.
    pub content_type_options: bool,
    /// `Referrer-Policy` value; empty: not added.
    pub referrer_policy: String,
    /// `X-Frame-Options` value (`DENY`, `SAMEORIGIN`); empty: not added.
    pub frame_options: String,
    /// `Content-Security-Policy` value; empty (default): not added.
    pub content_security_policy: String,
    /// Upstream response headers removed because they advertise internals.
    pub remove: Vec<String>,
}

impl Default for SecurityHeadersConfig {
    fn default() -> Self {
        Self {
            hsts: Some(HstsConfig::default()),
            content_type_options: true,
            referrer_policy: "strict-origin-when-cross-origin".into(),
            frame_options: "DENY".into(),
            content_security_policy: String::new(),
            remove: vec!["server".into(), "x-powered-by".into()],
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HstsConfig {
    pub max_age: Duration,
    pub include_subdomains: bool,
    pub preload: bool,
}

impl Default for HstsConfig {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(365 * 86_400),
            include_subdomains: true,
            preload: false,
        }
    }
}

/// Cross-origin access for browsers, answered at the gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Exact origins (`https://app.example.com`), or `*` (never with `allow_credentials`).
    pub allow_origins: Vec<Spanned<String>>,
    /// Methods a preflight may ask for. Default: the route's methods, or GET, HEAD, POST.
    #[serde(default)]
    pub allow_methods: Vec<String>,
    /// Request headers a preflight may ask for (case-insensitive).
    #[serde(default)]
    pub allow_headers: Vec<String>,
    /// Response headers scripts may read.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// Allow cookies and `Authorization` on cross-origin requests.
    #[serde(default)]
    pub allow_credentials: bool,
    /// How long browsers may cache a preflight answer.
    #[serde(default = "CorsConfig::default_max_age")]
    pub max_age: Duration,
}

impl CorsConfig {
    fn default_max_age() -> Duration {
        Duration::from_secs(600)
    }
}

/// An API version's place in its lifecycle.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeprecationConfig {
    /// When the route was deprecated: `2025-01-31` or `2025-01-31T12:00:00Z`.
    pub since: Spanned<String>,
    /// When it stops working (`Sunset`, RFC 8594).
    #[serde(default)]
    pub sunset: Option<Spanned<String>>,
    /// The route that replaces it (`Link: <…>; rel="successor-version"`).
    #[serde(default)]
    pub successor: Option<String>,
    /// A page explaining the deprecation (`Link: <…>; rel="deprecation"`).
    #[serde(default)]
    pub documentation: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetiredConfig {
    /// The route that replaces it, named in the 410 answer.
    #[serde(default)]
    pub successor: Option<String>,
}

/// `2025-01-31` or an RFC 3339 time → the time it names.
pub fn parse_date(text: &str) -> Result<std::time::SystemTime, String> {
    let text = text.trim();
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_string()
    };
    humantime::parse_rfc3339(&full)
        .map_err(|_| format!("{text:?} is not a date such as 2025-01-31 or 2025-01-31T12:00:00Z"))
}

/// Request validation against an OpenAPI 3.0 or 3.1 document.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationConfig {
    /// The OpenAPI document (YAML or JSON), relative to the config file.
    pub openapi: Spanned<PathBuf>,
    /// The `operationId` this route serves. Absent: the operations under the route's own `match.path`
    /// in the document, chosen by the request's method.
    #[serde(default)]
    pub operation: Option<Spanned<String>>,
    /// Refuse query parameters the operation does not declare.
    #[serde(default)]
    pub reject_unknown_query: bool,
    /// Violations listed in one 400 answer at most.
    #[serde(default = "ValidationConfig::default_max_violations")]
    pub max_violations: usize,
}

impl ValidationConfig {
    fn default_max_violations() -> usize {
        10
    }
}
