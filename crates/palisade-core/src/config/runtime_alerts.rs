//! Runtime alerts in, containment out: Falco's JSON alerts (its `http_output`, or as Falcosidekick
//! forwards them) and generic webhook alerts, mapped by rule and priority to a response: quarantine
//! the workload's SPIFFE identity, or only record the alert.

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::units::Duration;

/// `runtime_alerts:` in the gateway config. Absent: the endpoints answer 403.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeAlertsConfig {
    /// Bearer token the alert sender presents (`${ENV}` or `file:`); not the admin token, so a
    /// runtime sensor cannot lift blocks or read the console.
    pub token: Spanned<crate::secret::SecretRef>,
    /// The trust domain quarantined identities are in: `spiffe://TRUST_DOMAIN/ns/NS/sa/SA`.
    pub trust_domain: Spanned<String>,
    /// Alert fields that name the pod's namespace, first present wins.
    #[serde(default = "RuntimeAlertsConfig::default_namespace_fields")]
    pub namespace_fields: Vec<String>,
    /// Alert fields that name the pod's ServiceAccount, first present wins. Falco's own fields do not
    /// carry it; `palisade inject` labels pods with it (`palisade.dev/service-account`).
    #[serde(default = "RuntimeAlertsConfig::default_service_account_fields")]
    pub service_account_fields: Vec<String>,
    /// How alerts map to responses, first match wins; an alert no rule matches is recorded only.
    #[serde(default)]
    pub rules: Vec<Spanned<RuntimeAlertRule>>,
}

impl RuntimeAlertsConfig {
    pub fn default_namespace_fields() -> Vec<String> {
        vec!["k8s.ns.name".into(), "k8smeta.ns.name".into()]
    }

    pub fn default_service_account_fields() -> Vec<String> {
        vec![
            "k8s.pod.label[palisade.dev/service-account]".into(),
            "k8smeta.pod.label[palisade.dev/service-account]".into(),
        ]
    }
}

/// One mapping: which alerts (all conditions given must hold) and what to do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeAlertRule {
    /// The alert's rule name, exactly (Falco's `rule`).
    #[serde(default)]
    pub rule: Option<String>,
    /// At least one of these tags (Falco's `tags`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// The alert's priority is this or more severe.
    #[serde(default)]
    pub min_priority: Option<AlertPriority>,
    pub action: RuntimeAction,
    /// How long a quarantine lasts (1s to 7d); required for `quarantine`.
    #[serde(default)]
    pub ttl: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeAction {
    /// Refuse the workload's identity as a caller and as a destination, cluster-wide.
    Quarantine,
    /// Record the alert (audit event), change nothing.
    Record,
}

/// Falco's priorities, most severe first (syslog's order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertPriority {
    Emergency,
    Alert,
    Critical,
    Error,
    Warning,
    Notice,
    #[serde(alias = "info")]
    Informational,
    Debug,
}

impl AlertPriority {
    /// Falco writes priorities capitalized (`Critical`), sometimes upper case; both are read.
    pub fn parse(text: &str) -> Option<AlertPriority> {
        Some(match text.trim().to_ascii_lowercase().as_str() {
            "emergency" => AlertPriority::Emergency,
            "alert" => AlertPriority::Alert,
            "critical" => AlertPriority::Critical,
            "error" => AlertPriority::Error,
            "warning" => AlertPriority::Warning,
            "notice" => AlertPriority::Notice,
            "informational" | "info" => AlertPriority::Informational,
            "debug" => AlertPriority::Debug,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AlertPriority::Emergency => "emergency",
            AlertPriority::Alert => "alert",
            AlertPriority::Critical => "critical",
            AlertPriority::Error => "error",
            AlertPriority::Warning => "warning",
            AlertPriority::Notice => "notice",
            AlertPriority::Informational => "informational",
            AlertPriority::Debug => "debug",
        }
    }

    /// At least as severe as `other`.
    pub fn at_least(self, other: AlertPriority) -> bool {
        self <= other
    }
}
