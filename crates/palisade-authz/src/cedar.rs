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

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{
    Authorizer, Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicyId, PolicySet, Request,
    RestrictedExpression, Schema, ValidationMode, Validator,
};
use palisade_auth::PrincipalKind;
use palisade_core::config::PolicySetConfig;
use palisade_core::{ConfigErrors, Diagnostic, Spanned};
use serde_json::{Map, Value};

use crate::{Decision, RequestFacts, DEFAULT_DENY};

/// Claims nested deeper than this are left out of `principal.claims`.
const MAX_CLAIM_DEPTH: usize = 4;

pub struct CedarPolicies {
    policies: PolicySet,
    /// Display ids (`@id("…")` annotation, or `file.cedar#N`) by Cedar's own policy id.
    names: HashMap<PolicyId, Arc<str>>,
    context_headers: Vec<(http::HeaderName, String)>,
    authorizer: Authorizer,
    types: EntityTypes,
    default_deny: Arc<str>,
    /// Decisions by their complete input (see [`DecisionKey`]); dropped with the set at reload.
    memo: moka::sync::Cache<DecisionKey, Decision>,
}

/// Everything a decision depends on. The decision is a pure function of these and of the policy
/// set, and `context.time` has one-second resolution, so an equal key within the same second has the
/// same answer. Keys compare in full (no hash is trusted to tell two inputs apart).
#[derive(Clone, PartialEq, Eq, Hash)]
struct DecisionKey {
    principal: PrincipalKey,
    method: http::Method,
    route: String,
    path: String,
    client_ip: std::net::IpAddr,
    headers: Vec<Option<String>>,
    mtls_identity: Option<String>,
    unix_time: u64,
}

/// A principal compared by value (pointer equality first: the same verified token gives the same
/// `Arc`), hashed by its identifying fields.
#[derive(Clone)]
struct PrincipalKey(Arc<palisade_auth::Principal>);

impl PartialEq for PrincipalKey {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || *self.0 == *other.0
    }
}

impl Eq for PrincipalKey {}

impl std::hash::Hash for PrincipalKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.subject.hash(state);
        self.0.issuer.hash(state);
        self.0.expires_at.hash(state);
    }
}

/// Memoized decisions kept at most this many; each lives two seconds at most.
const MEMO_ENTRIES: u64 = 10_000;

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
        // Each file's path and text once; policies point at their file by index.
        let mut sources: Vec<(std::path::PathBuf, String)> = Vec::new();
        let mut file_of = HashMap::new();
        for (file_index, file) in settings.files.iter().enumerate() {
            let text = read(&file.value)?;
            let parsed =
                PolicySet::from_str(&text).map_err(|error| located(&file.value, &text, &error, format!("{error}")))?;
            let stem = file
                .value
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if parsed.templates().next().is_some() {
                return Err(general(
                    &file.value,
                    "policy templates are not supported; write plain policies".into(),
                ));
            }
            for (index, policy) in parsed.policies().enumerate() {
                let display = policy
                    .annotation("id")
                    .map_or_else(|| format!("{stem}#{}", index + 1), str::to_string);
                // Unique even when two files share a name; the display name is what people see.
                let id = PolicyId::new(format!("{file_index}/{stem}#{}", index + 1));
                let renamed = policy.new_id(id.clone());
                policies
                    .add(renamed)
                    .map_err(|error| general(&file.value, format!("{error}")))?;
                names.insert(id.clone(), Arc::from(display));
                file_of.insert(id, file_index);
            }
            sources.push((file.value.clone(), text));
        }
        let validation = Validator::new(schema).validate(&policies, ValidationMode::Strict);
        if !validation.validation_passed() {
            let errors = validation
                .validation_errors()
                .filter_map(|error| {
                    let (path, text) = sources.get(*file_of.get(error.policy_id())?)?;
                    let policy = names.get(error.policy_id())?;
                    let message = format!("policy {policy} does not match the schema: {error}");
                    Some(located_diagnostic(path, text, error, message))
                })
                .collect::<Vec<_>>();
            if errors.is_empty() {
                return Err(general(
                    schema_path,
                    format!("policy set {name:?} does not match its schema"),
                ));
            }
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
            types: EntityTypes::new()
                .ok_or_else(|| general(schema_path, "Cedar rejected Palisade's entity type names".into()))?,
            default_deny: DEFAULT_DENY.into(),
            memo: moka::sync::Cache::builder()
                .max_capacity(MEMO_ENTRIES)
                .time_to_live(std::time::Duration::from_secs(2))
                .build(),
        })
    }

    pub fn decide(&self, facts: &RequestFacts<'_>) -> Decision {
        let key = DecisionKey {
            principal: PrincipalKey(facts.principal.clone()),
            method: facts.method.clone(),
            route: facts.route.to_string(),
            path: facts.path.to_string(),
            client_ip: facts.client_ip,
            headers: self
                .context_headers
                .iter()
                .map(|(header, _)| {
                    facts
                        .headers
                        .get(header)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                })
                .collect(),
            mtls_identity: facts.mtls_identity.map(str::to_string),
            unix_time: facts.unix_time,
        };
        if let Some(decision) = self.memo.get(&key) {
            return decision;
        }
        let decision = self.evaluate(facts);
        self.memo.insert(key, decision.clone());
        decision
    }

    fn evaluate(&self, facts: &RequestFacts<'_>) -> Decision {
        let deny = || Decision {
            allowed: false,
            decided_by: self.default_deny.clone(),
        };
        let Some((request, entities)) = self.cedar_request(facts) else {
            return deny();
        };
        let response = self.authorizer.is_authorized(&request, &self.policies, &entities);
        let deciding: Vec<&Arc<str>> = response
            .diagnostics()
            .reason()
            .filter_map(|id| self.names.get(id))
            .collect();
        let allowed = response.decision() == cedar_policy::Decision::Allow;
        match deciding.as_slice() {
            [] => deny(),
            [one] => Decision {
                allowed,
                decided_by: Arc::clone(one),
            },
            many => Decision {
                allowed,
                decided_by: Arc::from(many.iter().map(|n| n.as_ref()).collect::<Vec<&str>>().join(",")),
            },
        }
    }

    fn cedar_request(&self, facts: &RequestFacts<'_>) -> Option<(Request, Entities)> {
        let types = &self.types;
        let principal = facts.principal;
        let principal_type = match principal.kind {
            PrincipalKind::User => &types.user,
            PrincipalKind::Service => &types.service,
            PrincipalKind::ApiKey => &types.api_key,
        };
        let principal_uid = uid(principal_type, &principal.subject);
        let parents: HashSet<EntityUid> = principal
            .roles
            .iter()
            .map(|role| uid(&types.role, role))
            .chain(principal.groups.iter().map(|group| uid(&types.group, group)))
            .collect();
        let strings =
            |list: &[String]| RestrictedExpression::new_set(list.iter().cloned().map(RestrictedExpression::new_string));
        let attributes = HashMap::from([
            (
                "subject".to_string(),
                RestrictedExpression::new_string(principal.subject.clone()),
            ),
            (
                "issuer".to_string(),
                RestrictedExpression::new_string(principal.issuer.clone()),
            ),
            ("scopes".to_string(), strings(&principal.scopes)),
            ("roles".to_string(), strings(&principal.roles)),
            ("groups".to_string(), strings(&principal.groups)),
            ("claims".to_string(), claims_record(&principal.claims, 0)?),
        ]);
        let principal_entity = Entity::new(principal_uid.clone(), attributes, parents).ok()?;
        let params = RestrictedExpression::new_record(
            facts
                .params
                .iter()
                .map(|(k, v)| (k.clone(), RestrictedExpression::new_string(v.clone()))),
        )
        .ok()?;
        let resource_uid = uid(&types.route, facts.route);
        let resource = Entity::new(
            resource_uid.clone(),
            HashMap::from([
                (
                    "path".to_string(),
                    RestrictedExpression::new_string(facts.path.to_string()),
                ),
                ("params".to_string(), params),
            ]),
            HashSet::new(),
        )
        .ok()?;
        let entities = Entities::from_entities([principal_entity, resource], None).ok()?;
        let headers = self.context_headers.iter().filter_map(|(header, key)| {
            let value = facts.headers.get(header)?.to_str().ok()?;
            Some((key.clone(), RestrictedExpression::new_string(value.to_string())))
        });
        let mut context = vec![
            (
                "ip".to_string(),
                RestrictedExpression::new_ip(facts.client_ip.to_string()),
            ),
            (
                "method".to_string(),
                RestrictedExpression::new_string(facts.method.as_str().to_string()),
            ),
            (
                "path".to_string(),
                RestrictedExpression::new_string(facts.path.to_string()),
            ),
            (
                "time".to_string(),
                RestrictedExpression::new_long(i64::try_from(facts.unix_time).ok()?),
            ),
            ("headers".to_string(), RestrictedExpression::new_record(headers).ok()?),
        ];
        if let Some(identity) = facts.mtls_identity {
            context.push((
                "mtls_identity".to_string(),
                RestrictedExpression::new_string(identity.to_string()),
            ));
        }
        let context = Context::from_pairs(context).ok()?;
        let action = uid(&types.action, facts.method.as_str());
        let request = Request::new(principal_uid, action, resource_uid, context, None).ok()?;
        Some((request, entities))
    }
}

/// The entity type names, parsed once.
struct EntityTypes {
    user: EntityTypeName,
    service: EntityTypeName,
    api_key: EntityTypeName,
    role: EntityTypeName,
    group: EntityTypeName,
    route: EntityTypeName,
    action: EntityTypeName,
}

impl EntityTypes {
    fn new() -> Option<EntityTypes> {
        let name = |text: &str| EntityTypeName::from_str(text).ok();
        Some(EntityTypes {
            user: name("Palisade::User")?,
            service: name("Palisade::Service")?,
            api_key: name("Palisade::ApiKey")?,
            role: name("Palisade::Role")?,
            group: name("Palisade::Group")?,
            route: name("Palisade::Route")?,
            action: name("Palisade::Action")?,
        })
    }
}

fn uid(kind: &EntityTypeName, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(kind.clone(), EntityId::new(id))
}

/// Claims as a Cedar record: strings, booleans, integers, sets and nested records; other values
/// (floats, nulls, too deep) are left out. Values are built as Cedar values, never parsed from JSON,
/// so a claim can never turn into an entity reference or an extension value.
fn claims_record(claims: &Map<String, Value>, depth: usize) -> Option<RestrictedExpression> {
    let fields: Vec<(String, RestrictedExpression)> = claims
        .iter()
        .filter_map(|(key, value)| Some((key.clone(), claim_value(value, depth)?)))
        .collect();
    RestrictedExpression::new_record(fields).ok()
}

fn claim_value(value: &Value, depth: usize) -> Option<RestrictedExpression> {
    match value {
        Value::String(text) => Some(RestrictedExpression::new_string(text.clone())),
        Value::Bool(flag) => Some(RestrictedExpression::new_bool(*flag)),
        Value::Number(number) => number.as_i64().map(RestrictedExpression::new_long),
        Value::Array(items) if depth < MAX_CLAIM_DEPTH => Some(RestrictedExpression::new_set(
            items.iter().filter_map(|item| claim_value(item, depth + 1)),
        )),
        Value::Object(map) if depth < MAX_CLAIM_DEPTH => claims_record(map, depth + 1),
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
