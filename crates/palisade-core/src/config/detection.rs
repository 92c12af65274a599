//! Anomaly detection, alerts and automatic responses (docs/observability.md). Every threshold has a
//! default; a config only names what it changes. Responses are opt-in per detector.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::traffic::Rate;
use crate::secret::SecretRef;
use crate::units::Duration;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectionConfig {
    /// Watch the decision stream. Responses added through the admin API apply either way.
    pub enabled: bool,
    /// Clients (addresses) tracked at once; beyond it the least recently seen are forgotten.
    pub max_clients: usize,
    /// How long a condition must stay clear before its alert closes.
    pub clear_after: Duration,
    /// Active responses at once (automatic and manual); beyond it new ones are refused.
    pub max_responses: usize,
    /// Requests per second on a route far above its learned baseline.
    pub rate_spike: RateSpikeDetector,
    /// Refused credentials from one client address (credential stuffing, brute force).
    pub auth_failures: ClientDetector,
    /// Distinct unknown paths (404/405) from one client address.
    pub scanning: ClientDetector,
    /// Authorization refusals (403) for one client address.
    pub probing: ClientDetector,
    /// The share of failed exchanges with a cluster's targets.
    pub upstream_errors: UpstreamDetector,
    /// A cluster's mean latency far above its learned baseline.
    pub upstream_latency: LatencyDetector,
    /// Refused credentials naming one subject (a token's unverified `sub`), from any address:
    /// distributed brute force against one account. Alert only (blocking the target would lock the
    /// victim out).
    pub targeted_subject: SubjectDetector,
    /// Alerts are POSTed here as JSON (retried with backoff).
    pub webhook: Option<WebhookConfig>,
}

impl Default for DetectionConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            max_clients: 100_000,
            clear_after: Duration::from_secs(30),
            max_responses: 10_000,
            rate_spike: RateSpikeDetector::default(),
            auth_failures: ClientDetector::default(),
            scanning: ClientDetector::default(),
            probing: ClientDetector::default(),
            upstream_errors: UpstreamDetector::default(),
            upstream_latency: LatencyDetector::default(),
            targeted_subject: SubjectDetector::default(),
            webhook: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateSpikeDetector {
    pub enabled: bool,
    /// Seconds of traffic learned before the detector may fire.
    pub warm_up: Duration,
    /// A spike is at least this many times the baseline…
    pub min_ratio: f64,
    /// …and at least this many requests per second.
    pub min_requests: u32,
}

impl Default for RateSpikeDetector {
    fn default() -> Self {
        Self {
            enabled: true,
            warm_up: Duration::from_secs(60),
            min_ratio: 3.0,
            min_requests: 20,
        }
    }
}

/// A per-client detector: `threshold` events in `window` open an alert.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientDetector {
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// Default: 20 refused credentials, 50 distinct unknown paths, 30 refusals.
    #[serde(default)]
    pub threshold: Option<u32>,
    /// Default 60s.
    #[serde(default)]
    pub window: Option<Duration>,
    /// What to do to the client when the alert opens. Absent: alert only.
    #[serde(default)]
    pub respond: Option<Spanned<ResponseConfig>>,
}

fn enabled() -> bool {
    true
}

impl Default for ClientDetector {
    fn default() -> Self {
        Self {
            enabled: true,
            threshold: None,
            window: None,
            respond: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamDetector {
    pub enabled: bool,
    /// Failed share (502/503/504) that opens an alert.
    pub error_ratio: f64,
    /// Exchanges in the window below which no alert opens.
    pub min_requests: u32,
    pub window: Duration,
}

impl Default for UpstreamDetector {
    fn default() -> Self {
        Self {
            enabled: true,
            error_ratio: 0.25,
            min_requests: 20,
            window: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LatencyDetector {
    pub enabled: bool,
    /// Seconds with traffic learned before it may fire.
    pub warm_up: Duration,
    /// Slow is at least this many times the baseline…
    pub min_ratio: f64,
    /// …and at least this much above it.
    pub min_increase: Duration,
}

impl Default for LatencyDetector {
    fn default() -> Self {
        Self {
            enabled: true,
            warm_up: Duration::from_secs(60),
            min_ratio: 3.0,
            min_increase: Duration::from_millis(100),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubjectDetector {
    pub enabled: bool,
    pub threshold: u32,
    pub window: Duration,
}

impl Default for SubjectDetector {
    fn default() -> Self {
        Self {
            enabled: true,
            threshold: 50,
            window: Duration::from_secs(300),
        }
    }
}

/// An automatic response to an alert about a client.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseConfig {
    pub action: ResponseAction,
    /// How long it applies (1s to 7d).
    pub ttl: Duration,
    /// For `limit`: the rate the client is held to, e.g. `1/s`.
    #[serde(default)]
    pub rate: Option<Rate>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseAction {
    /// Refuse every request from the client (403 `client-blocked`).
    Block,
    /// Hold the client to `rate` (429 beyond it).
    Limit,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `https://…` (plain `http://` only to a loopback address).
    pub url: String,
    /// Request headers, e.g. a token; values are secrets (`${ENV}` or `file:`).
    #[serde(default)]
    pub headers: BTreeMap<String, Spanned<SecretRef>>,
    /// A PEM bundle trusted besides the Mozilla roots.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Tries per alert before it is given up (and counted); waits double from 500ms.
    #[serde(default = "WebhookConfig::default_attempts")]
    pub max_attempts: u32,
}

impl WebhookConfig {
    fn default_attempts() -> u32 {
        6
    }
}
