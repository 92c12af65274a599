//! Runtime alerts from outside the gateway: Falco's JSON alerts (`json_output: true`, sent by its
//! `http_output` or forwarded by Falcosidekick) and a generic webhook shape, read into one typed
//! [`RuntimeAlert`]; the workload identity they concern; and what the configured rules say to do.
//!
//! Everything here reads untrusted input: sizes are bounded, unknown fields ignored, and names that
//! become part of a SPIFFE ID must be Kubernetes names (no `/`, no `..`), so an alert cannot make the
//! gateway quarantine an identity outside the `ns/NAMESPACE/sa/NAME` shape.

use std::collections::BTreeMap;

use palisade_core::config::runtime_alerts::{AlertPriority, RuntimeAction, RuntimeAlertRule, RuntimeAlertsConfig};
use serde::Deserialize;
use serde_json::Value;

/// The largest alert body read.
pub const MAX_ALERT_BYTES: usize = 64 * 1024;
const MAX_TEXT: usize = 2048;
const MAX_FIELDS: usize = 256;
const MAX_TAGS: usize = 64;

/// Where an alert came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertSource {
    Falco,
    Webhook,
}

impl AlertSource {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertSource::Falco => "falco",
            AlertSource::Webhook => "webhook",
        }
    }
}

/// One runtime alert, as read.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeAlert {
    pub source: AlertSource,
    pub rule: String,
    pub priority: AlertPriority,
    pub tags: Vec<String>,
    /// The human-readable line (Falco's `output`), truncated.
    pub output: String,
    /// Falco's `output_fields` (values as text); for webhook alerts, the fields it names.
    pub fields: BTreeMap<String, String>,
}

/// Why an alert body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertError {
    #[error("the body is larger than {MAX_ALERT_BYTES} bytes")]
    TooLarge,
    #[error("the body is not an alert: {0}")]
    Shape(String),
    #[error("`{0}` is missing or empty")]
    Missing(&'static str),
    #[error("priority {0:?} is not one of emergency, alert, critical, error, warning, notice, informational, debug")]
    Priority(String),
}

#[derive(Deserialize)]
struct FalcoBody {
    rule: Option<String>,
    priority: Option<String>,
    #[serde(default)]
    output: String,
    #[serde(default)]
    tags: Vec<Value>,
    #[serde(default)]
    output_fields: serde_json::Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookBody {
    rule: Option<String>,
    priority: Option<String>,
    #[serde(default)]
    message: String,
    #[serde(default)]
    tags: Vec<String>,
    namespace: Option<String>,
    service_account: Option<String>,
    pod: Option<String>,
}

/// The field webhook alerts' `namespace`, `service_account` and `pod` are kept under.
pub const WEBHOOK_NAMESPACE: &str = "namespace";
pub const WEBHOOK_SERVICE_ACCOUNT: &str = "service_account";
const POD_FIELDS: [&str; 3] = ["k8s.pod.name", "k8smeta.pod.name", "pod"];

fn bounded(text: &str) -> String {
    let mut end = text.len().min(MAX_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

fn required(value: Option<String>, name: &'static str) -> Result<String, AlertError> {
    value
        .filter(|v| !v.trim().is_empty())
        .map(|v| bounded(v.trim()))
        .ok_or(AlertError::Missing(name))
}

fn priority(value: Option<String>) -> Result<AlertPriority, AlertError> {
    let text = required(value, "priority")?;
    AlertPriority::parse(&text).ok_or(AlertError::Priority(text.chars().take(40).collect()))
}

fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(bounded(text)),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        // Falco writes `<NA>` or null for fields it could not fill.
        _ => None,
    }
}

/// Reads a Falco alert (`rule`, `priority`, `output`, `tags`, `output_fields`).
pub fn parse_falco(body: &[u8]) -> Result<RuntimeAlert, AlertError> {
    if body.len() > MAX_ALERT_BYTES {
        return Err(AlertError::TooLarge);
    }
    let alert: FalcoBody = serde_json::from_slice(body).map_err(|e| AlertError::Shape(shape_error(&e)))?;
    let fields = alert
        .output_fields
        .iter()
        .take(MAX_FIELDS)
        .filter_map(|(key, value)| {
            let text = as_text(value).filter(|t| t != "<NA>" && !t.is_empty())?;
            Some((bounded(key), text))
        })
        .collect();
    Ok(RuntimeAlert {
        source: AlertSource::Falco,
        rule: required(alert.rule, "rule")?,
        priority: priority(alert.priority)?,
        tags: alert.tags.iter().take(MAX_TAGS).filter_map(as_text).collect(),
        output: bounded(&alert.output),
        fields,
    })
}

/// Reads a generic webhook alert: `rule`, `priority`, and the workload as `namespace`,
/// `service_account` (and `pod`); `message` and `tags` optional. Unknown keys are refused, so a
/// misspelt `serviceaccount` is an error rather than an alert that quarantines nothing.
pub fn parse_webhook(body: &[u8]) -> Result<RuntimeAlert, AlertError> {
    if body.len() > MAX_ALERT_BYTES {
        return Err(AlertError::TooLarge);
    }
    let alert: WebhookBody = serde_json::from_slice(body).map_err(|e| AlertError::Shape(shape_error(&e)))?;
    let mut fields = BTreeMap::new();
    for (key, value) in [
        (WEBHOOK_NAMESPACE, alert.namespace),
        (WEBHOOK_SERVICE_ACCOUNT, alert.service_account),
        ("pod", alert.pod),
    ] {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            fields.insert(key.to_string(), bounded(&value));
        }
    }
    Ok(RuntimeAlert {
        source: AlertSource::Webhook,
        rule: required(alert.rule, "rule")?,
        priority: priority(alert.priority)?,
        tags: alert.tags.iter().take(MAX_TAGS).map(|t| bounded(t)).collect(),
        output: bounded(&alert.message),
        fields,
    })
}

fn shape_error(error: &serde_json::Error) -> String {
    let mut text = error.to_string();
    text.truncate(200);
    text
}

/// The Kubernetes workload an alert is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub namespace: String,
    pub service_account: String,
    pub pod: Option<String>,
    /// `spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT`.
    pub spiffe_id: String,
}

/// Why an alert names no workload identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the alert names no namespace (fields tried: {0})")]
    NoNamespace(String),
    #[error("the alert names no ServiceAccount (fields tried: {0})")]
    NoServiceAccount(String),
    #[error("{0:?} is not a Kubernetes name")]
    NotAName(String),
}

/// A Kubernetes object name (DNS subdomain: lower-case letters, digits, `-` and `.`, at most 253,
/// starting and ending alphanumeric; no `..`).
fn is_kubernetes_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 253
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'.')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && !name.contains("..")
}

/// The workload (and its SPIFFE ID) `alert` concerns, from the configured fields.
pub fn workload(alert: &RuntimeAlert, config: &RuntimeAlertsConfig) -> Result<Workload, IdentityError> {
    let first = |names: &[String], webhook: &str| -> Option<String> {
        if alert.source == AlertSource::Webhook {
            return alert.fields.get(webhook).cloned();
        }
        names.iter().find_map(|name| alert.fields.get(name).cloned())
    };
    let namespace = first(&config.namespace_fields, WEBHOOK_NAMESPACE)
        .ok_or_else(|| IdentityError::NoNamespace(tried(&config.namespace_fields, alert.source, WEBHOOK_NAMESPACE)))?;
    let service_account = first(&config.service_account_fields, WEBHOOK_SERVICE_ACCOUNT).ok_or_else(|| {
        IdentityError::NoServiceAccount(tried(
            &config.service_account_fields,
            alert.source,
            WEBHOOK_SERVICE_ACCOUNT,
        ))
    })?;
    for name in [&namespace, &service_account] {
        if !is_kubernetes_name(name) {
            return Err(IdentityError::NotAName(name.chars().take(80).collect()));
        }
    }
    let pod = POD_FIELDS.iter().find_map(|name| alert.fields.get(*name).cloned());
    Ok(Workload {
        spiffe_id: format!(
            "spiffe://{}/ns/{namespace}/sa/{service_account}",
            config.trust_domain.value
        ),
        namespace,
        service_account,
        pod,
    })
}

fn tried(names: &[String], source: AlertSource, webhook: &str) -> String {
    match source {
        AlertSource::Webhook => webhook.to_string(),
        AlertSource::Falco => names.join(", "),
    }
}

/// What to do with an alert: the first rule it matches, or record only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeDecision {
    Quarantine {
        ttl: std::time::Duration,
        rule_index: usize,
    },
    Record {
        rule_index: Option<usize>,
    },
}

fn matches(rule: &RuntimeAlertRule, alert: &RuntimeAlert) -> bool {
    rule.rule.as_ref().is_none_or(|name| *name == alert.rule)
        && (rule.tags.is_empty() || rule.tags.iter().any(|tag| alert.tags.contains(tag)))
        && rule.min_priority.is_none_or(|least| alert.priority.at_least(least))
}

pub fn decide(alert: &RuntimeAlert, config: &RuntimeAlertsConfig) -> RuntimeDecision {
    for (index, rule) in config.rules.iter().enumerate() {
        if !matches(&rule.value, alert) {
            continue;
        }
        return match (rule.value.action, rule.value.ttl) {
            (RuntimeAction::Quarantine, Some(ttl)) => RuntimeDecision::Quarantine {
                ttl: ttl.get(),
                rule_index: index,
            },
            _ => RuntimeDecision::Record {
                rule_index: Some(index),
            },
        };
    }
    RuntimeDecision::Record { rule_index: None }
}

/// Property check for the `runtime_alert` fuzz target (replayed by `cargo test` over its corpus):
/// any bytes, read as a Falco alert and as a webhook alert, never panic; whatever is read is
/// bounded; an identity made from it is always `spiffe://TD/ns/NAME/sa/NAME` and parses as a SPIFFE
/// ID; deciding never panics.
pub fn fuzz_check(data: &[u8]) {
    let config: RuntimeAlertsConfig = serde_saphyr::from_str(
        "token: file:/dev/null\ntrust_domain: cluster.local\nrules:\n  - { rule: r, action: quarantine, ttl: 1h }\n  - { min_priority: warning, action: record }\n",
    )
    .expect("the fuzz config loads");
    for alert in [parse_falco(data), parse_webhook(data)].into_iter().flatten() {
        assert!(!alert.rule.is_empty() && alert.rule.len() <= MAX_TEXT);
        assert!(alert.output.len() <= MAX_TEXT && alert.fields.len() <= MAX_FIELDS && alert.tags.len() <= MAX_TAGS);
        let _ = decide(&alert, &config);
        if let Ok(workload) = workload(&alert, &config) {
            let id = palisade_core::spiffe::SpiffeId::parse(&workload.spiffe_id).expect("a valid SPIFFE ID");
            assert_eq!(id.trust_domain(), "cluster.local");
            assert_eq!(
                workload.spiffe_id,
                format!(
                    "spiffe://cluster.local/ns/{}/sa/{}",
                    workload.namespace, workload.service_account
                )
            );
            assert!(!workload.namespace.contains('/') && !workload.service_account.contains('/'));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(rules: &str) -> RuntimeAlertsConfig {
        let rules = if rules == "[]" {
            " []".to_string()
        } else {
            format!("\n{rules}")
        };
        let yaml = format!("token: file:/dev/null\ntrust_domain: cluster.local\nrules:{rules}");
        serde_saphyr::from_str(&yaml).unwrap()
    }

    /// A Falco alert as `json_output: true` writes it (stock rule, with the pod's labels field).
    pub const FALCO_SHELL: &str = r#"{"hostname":"node-1","output":"10:31:02.123: Notice A shell was spawned in a container with an attached terminal (evt_type=execve user=root process=sh k8s_ns=shop k8s_pod=orders-7c9d)","priority":"Notice","rule":"Terminal shell in container","source":"syscall","tags":["container","mitre_execution","shell","T1059"],"time":"2026-12-08T10:31:02.123456789Z","output_fields":{"container.id":"3ad7b26ded6d","evt.time":1796725862123456789,"k8s.ns.name":"shop","k8s.pod.name":"orders-7c9d","k8s.pod.label[palisade.dev/service-account]":"orders","proc.cmdline":"sh","user.name":"root","fd.name":null}}"#;

    #[test]
    fn a_falco_alert_is_read_and_names_its_workload() {
        let alert = parse_falco(FALCO_SHELL.as_bytes()).unwrap();
        assert_eq!(alert.rule, "Terminal shell in container");
        assert_eq!(alert.priority, AlertPriority::Notice);
        assert!(alert.tags.contains(&"shell".to_string()));
        assert_eq!(alert.fields["evt.time"], "1796725862123456789");
        assert!(!alert.fields.contains_key("fd.name"), "null fields are left out");
        let workload = workload(&alert, &config("[]")).unwrap();
        assert_eq!(workload.spiffe_id, "spiffe://cluster.local/ns/shop/sa/orders");
        assert_eq!(workload.pod.as_deref(), Some("orders-7c9d"));
    }

    #[test]
    fn bad_alerts_are_refused_with_a_reason() {
        assert!(matches!(parse_falco(b"not json"), Err(AlertError::Shape(_))));
        assert_eq!(
            parse_falco(br#"{"priority":"Notice"}"#),
            Err(AlertError::Missing("rule"))
        );
        assert_eq!(
            parse_falco(br#"{"rule":"x","priority":"Loud"}"#),
            Err(AlertError::Priority("Loud".into()))
        );
        assert_eq!(parse_falco(&vec![b' '; MAX_ALERT_BYTES + 1]), Err(AlertError::TooLarge));
        assert!(matches!(
            parse_webhook(br#"{"rule":"x","priority":"critical","serviceaccount":"a"}"#),
            Err(AlertError::Shape(_))
        ));
    }

    #[test]
    fn names_that_are_not_kubernetes_names_never_become_identities() {
        let cfg = config("[]");
        for (namespace, account) in [
            ("shop", "../../admin"),
            ("shop/sa/x", "y"),
            ("Shop", "orders"),
            ("shop", "a..b"),
            ("", "x"),
        ] {
            let body =
                serde_json::json!({"rule":"r","priority":"critical","namespace":namespace,"service_account":account});
            let alert = parse_webhook(body.to_string().as_bytes()).unwrap();
            assert!(workload(&alert, &cfg).is_err(), "{namespace}/{account}");
        }
        let falco =
            parse_falco(br#"{"rule":"r","priority":"critical","output_fields":{"k8s.ns.name":"shop"}}"#).unwrap();
        assert!(matches!(
            workload(&falco, &cfg),
            Err(IdentityError::NoServiceAccount(_))
        ));
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let cfg = config(
            "  - { rule: Terminal shell in container, action: quarantine, ttl: 1h }\n  - { tags: [mitre_exfiltration], action: quarantine, ttl: 10m }\n  - { min_priority: critical, action: quarantine, ttl: 30m }\n  - { min_priority: warning, action: record }\n",
        );
        let alert = |rule: &str, priority: &str, tags: &[&str]| {
            let body = serde_json::json!({"rule": rule, "priority": priority, "tags": tags});
            parse_falco(body.to_string().as_bytes()).unwrap()
        };
        let hour = std::time::Duration::from_secs(3600);
        assert_eq!(
            decide(&alert("Terminal shell in container", "Notice", &[]), &cfg),
            RuntimeDecision::Quarantine {
                ttl: hour,
                rule_index: 0
            }
        );
        assert!(matches!(
            decide(&alert("Exfil", "Notice", &["mitre_exfiltration"]), &cfg),
            RuntimeDecision::Quarantine { rule_index: 1, .. }
        ));
        assert!(matches!(
            decide(&alert("Other", "Emergency", &[]), &cfg),
            RuntimeDecision::Quarantine { rule_index: 2, .. }
        ));
        assert_eq!(
            decide(&alert("Other", "Warning", &[]), &cfg),
            RuntimeDecision::Record { rule_index: Some(3) }
        );
        assert_eq!(
            decide(&alert("Other", "Debug", &[]), &cfg),
            RuntimeDecision::Record { rule_index: None }
        );
    }
}
