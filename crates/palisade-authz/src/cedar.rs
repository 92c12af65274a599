//! Cedar policies (ABAC). A policy set is a schema and policy files, validated against the schema
//! at load (errors name file, line and column) and swapped in whole with the config. Each request
//! becomes a Cedar request:
//!
//! - principal `Palisade::User | Palisade::Service | Palisade::ApiKey::"<subject>"`, attributes
//!   `subject`, `issuer`, `scopes`, `roles`, `groups`, `claims` (the token's claims as a record),
//!   parents `Palisade::Role::"<role>"` and `Palisade::Group::"<group>"`;
//! - action `Palisade::Action::"<METHOD>"`;
//! - resource `Palisade::Route::"<route name>"`, attributes `path` and `params` (path parameters);
//! - context `ip` (ipaddr), `method`, `path`, `time` (Unix seconds), `headers` (configured ones), and
//!   `mtls_identity` when the connection presented a client certificate.
//!
//! `forbid` wins over `permit`; without a `permit` the answer is deny; an evaluation error denies.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{
    Authorizer, Context, Entities, EntityUid, PolicyId, PolicySet, Request, Schema, ValidationMode, Validator,
};
use palisade_auth::PrincipalKind;
use palisade_core::config::PolicySetConfig;
use palisade_core::{ConfigErrors, Diagnostic, Spanned};
use serde_json::{json, Map, Value};

use crate::{Decision, RequestFacts, DEFAULT_DENY};

/// Claims nested deeper than this are left out of `principal.claims`.
const MAX_CLAIM_DEPTH: usize = 4;

pub struct CedarPolicies {
    policies: PolicySet,
    /// Display ids (`@id("…")` annotation, or `file.cedar#N`) by Cedar's own policy id.
    names: HashMap<PolicyId, Arc<str>>,
    context_headers: Vec<(http::HeaderName, String)>,
    authorizer: Authorizer,
    default_deny: Arc<str>,
}

impl CedarPolicies {
    /// Loads and validates the set. Every problem is a diagnostic at its file, line and column.
    pub fn load(name: &str, config: &Spanned<PolicySetConfig>) -> Result<CedarPolicies, ConfigErrors> {
        let settings = &config.value;
        let schema_path = &settings.schema.value;
        let schema_text = read(schema_path)?;
        let schema = Schema::from_cedarschema_str(&schema_text)
            .map(|(schema, _warnings)| schema)
            .map_err(|error| {
                located(
                    schema_path,
                    &schema_text,
                    &error,
                    format!("policy set {name:?}: {error}"),
                )
            })?;
        let mut policies = PolicySet::new();
        let mut names = HashMap::new();
        let mut sources = HashMap::new();
        for file in &settings.files {
            let text = read(&file.value)?;
            let parsed =
                PolicySet::from_str(&text).map_err(|error| located(&file.value, &text, &error, format!("{error}")))?;
            let stem = file
                .value
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            for (index, policy) in parsed.policies().enumerate() {
                let display = policy
                    .annotation("id")
                    .map_or_else(|| format!("{stem}#{}", index + 1), str::to_string);
                let id = PolicyId::new(format!("{stem}#{}", index + 1));
                let renamed = policy.new_id(id.clone());
                policies
                    .add(renamed)
                    .map_err(|error| general(&file.value, format!("{error}")))?;
                names.insert(id.clone(), Arc::from(display));
                sources.insert(id, (file.value.clone(), text.clone()));
            }
        }
        let validation = Validator::new(schema).validate(&policies, ValidationMode::Strict);
        if !validation.validation_passed() {
            let errors = validation
                .validation_errors()
                .map(|error| {
                    let (path, text) = &sources[error.policy_id()];
                    located_diagnostic(
                        path,
                        text,
                        error,
                        format!("policy {} does not match the schema: {error}", names[error.policy_id()]),
                    )
                })
                .collect();
            return Err(ConfigErrors(errors));
        }
        let context_headers = settings
            .context_headers
            .iter()
            .filter_map(|name| {
                let header = http::HeaderName::from_bytes(name.as_bytes()).ok()?;
                Some((header, name.to_ascii_lowercase().replace('-', "_")))
            })
            .collect();
        Ok(CedarPolicies {
            policies,
            names,
            context_headers,
            authorizer: Authorizer::new(),
            default_deny: DEFAULT_DENY.into(),
        })
    }

    pub fn decide(&self, facts: &RequestFacts<'_>) -> Decision {
        let deny = || Decision {
            allowed: false,
            decided_by: self.default_deny.clone(),
        };
        let Some((request, entities)) = self.cedar_request(facts) else {
            return deny();
        };
        let response = self.authorizer.is_authorized(&request, &self.policies, &entities);
        let deciding: Vec<&str> = response
            .diagnostics()
            .reason()
            .filter_map(|id| self.names.get(id).map(|n| &**n))
            .collect();
        let allowed = response.decision() == cedar_policy::Decision::Allow;
        match deciding.as_slice() {
            [] => deny(),
            [one] => Decision {
                allowed,
                decided_by: Arc::from(*one),
            },
            many => Decision {
                allowed,
                decided_by: Arc::from(many.join(",")),
            },
        }
    }

    fn cedar_request(&self, facts: &RequestFacts<'_>) -> Option<(Request, Entities)> {
        let principal = facts.principal;
        let principal_type = match principal.kind {
            PrincipalKind::User => "Palisade::User",
            PrincipalKind::Service => "Palisade::Service",
            PrincipalKind::ApiKey => "Palisade::ApiKey",
        };
        let parents: Vec<Value> = principal
            .roles
            .iter()
            .map(|role| json!({"type": "Palisade::Role", "id": role}))
            .chain(
                principal
                    .groups
                    .iter()
                    .map(|group| json!({"type": "Palisade::Group", "id": group})),
            )
            .collect();
        let params: Map<String, Value> = facts.params.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        let entities = json!([
            {
                "uid": {"type": principal_type, "id": principal.subject},
                "attrs": {
                    "subject": principal.subject,
                    "issuer": principal.issuer,
                    "scopes": principal.scopes,
                    "roles": principal.roles,
                    "groups": principal.groups,
                    "claims": cedar_record(&principal.claims, 0),
                },
                "parents": parents,
            },
            {
                "uid": {"type": "Palisade::Route", "id": facts.route},
                "attrs": {"path": facts.path, "params": params},
                "parents": [],
            },
        ]);
        let entities = Entities::from_json_value(entities, None).ok()?;
        let mut headers = Map::new();
        for (header, key) in &self.context_headers {
            if let Some(value) = facts.headers.get(header).and_then(|v| v.to_str().ok()) {
                headers.insert(key.clone(), json!(value));
            }
        }
        let mut context = json!({
            "ip": {"__extn": {"fn": "ip", "arg": facts.client_ip.to_string()}},
            "method": facts.method.as_str(),
            "path": facts.path,
            "time": facts.unix_time,
            "headers": headers,
        });
        if let Some(identity) = facts.mtls_identity {
            context["mtls_identity"] = json!(identity);
        }
        let context = Context::from_json_value(context, None).ok()?;
        let uid = |kind: &str, id: &str| EntityUid::from_json(json!({"type": kind, "id": id})).ok();
        let request = Request::new(
            uid(principal_type, &principal.subject)?,
            uid("Palisade::Action", facts.method.as_str())?,
            uid("Palisade::Route", facts.route)?,
            context,
            None,
        )
        .ok()?;
        Some((request, entities))
    }
}

/// Claims as a Cedar record: strings, booleans, integers, sets and nested records. Keys that Cedar's
/// JSON format would read as escapes (`__entity`, `__extn`) are dropped, so a claim can never turn
/// into an entity reference or an extension value.
fn cedar_record(claims: &Map<String, Value>, depth: usize) -> Value {
    let fields: Map<String, Value> = claims
        .iter()
        .filter(|(key, _)| !key.starts_with("__"))
        .filter_map(|(key, value)| Some((key.clone(), cedar_value(value, depth)?)))
        .collect();
    Value::Object(fields)
}

fn cedar_value(value: &Value, depth: usize) -> Option<Value> {
    match value {
        Value::String(_) | Value::Bool(_) => Some(value.clone()),
        Value::Number(number) => number.as_i64().map(|n| json!(n)),
        Value::Array(items) if depth < MAX_CLAIM_DEPTH => Some(Value::Array(
            items.iter().filter_map(|v| cedar_value(v, depth + 1)).collect(),
        )),
        Value::Object(map) if depth < MAX_CLAIM_DEPTH => Some(cedar_record(map, depth + 1)),
        _ => None,
    }
}

fn read(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|e| general(path, format!("cannot read: {}", e.kind())))
}

fn general(path: &Path, message: String) -> ConfigErrors {
    ConfigErrors(vec![Diagnostic {
        file: path.display().to_string(),
        line: 0,
        column: 0,
        message,
    }])
}

fn located(path: &Path, text: &str, error: &dyn miette::Diagnostic, message: String) -> ConfigErrors {
    ConfigErrors(vec![located_diagnostic(path, text, error, message)])
}

/// The first labelled span of a Cedar error, as `line:column` in `text`.
fn located_diagnostic(path: &Path, text: &str, error: &dyn miette::Diagnostic, message: String) -> Diagnostic {
    let offset = error
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|label| label.offset());
    let (line, column) = offset.map_or((0, 0), |offset| line_column(text, offset));
    Diagnostic {
        file: path.display().to_string(),
        line,
        column,
        message: message.lines().next().unwrap_or_default().to_string(),
    }
}

fn line_column(text: &str, offset: usize) -> (u64, u64) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |newline| before.len() - newline - 1)
        + 1;
    (line as u64, column as u64)
}
