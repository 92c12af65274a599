//! Cedar policies (ABAC). A policy set is a schema and policy files, validated against the schema
//! at load (errors name file, line and column) and swapped in whole with the config. Each request
//! becomes a Cedar request:
//!
//! - principal `Palisade::User | Palisade::Service | Palisade::ApiKey::"<subject>"`, attributes
//!   `subject`, `issuer`, `scopes`, `roles`, `groups`, `claims` (the token's claims as a record),
//!   parents `Palisade::Role::"<role>"` and `Palisade::Group::"<group>"`;
//! - action `Palisade::Action::"<operation>"`: the route's named operation for the method, or the
//!   method itself; the schema's action groups apply (`action in Action::"read"`);
//! - resource `Palisade::Route::"<route name>"`, attributes `path` and `params` (path parameters);
//! - context `ip` (ipaddr), `method`, `path`, `time` (Unix seconds), `headers` (configured ones), and
//!   `mtls_identity` when the connection presented a client certificate.
//!
//! `forbid` wins over `permit`; without a `permit` the answer is deny. A policy whose evaluation
//! fails does not permit, and a `forbid` whose evaluation fails denies (Cedar's authorizer would
//! skip it). Only the policies whose scope can hold are evaluated (see [`scope`]).
//!
//! A policy's conditions are first specialized to the caller ([`fold`]); what is left is answered
//! from the request's facts where Cedar's answer is certain ([`direct`]), and otherwise evaluated by
//! Cedar's evaluator (cedar-policy-core), one by one; the outcomes are combined here by the rules
//! above. Cedar's authorizer does the same combination, but it first rebuilds each policy's
//! condition as a new expression and afterwards collects every outcome into sets, which a new
//! decision paid for in about a quarter of its instructions. Unit tests hold this evaluation to
//! Cedar's authorizer over the whole set, case by case.

mod direct;
mod fold;
mod load;
mod reads;
mod request;
mod scope;

#[cfg(test)]
use std::collections::HashMap;
use std::sync::Arc;

#[cfg(test)]
use cedar_policy::PolicyId;
use cedar_policy::{EntityUid, Schema};
use cedar_policy_core::ast::{self, Literal, ValueKind};
use cedar_policy_core::evaluator::{EvaluationError, Evaluator};
use cedar_policy_core::extensions::Extensions;
use palisade_core::config::PolicySetConfig;
use palisade_core::{ConfigErrors, Spanned};
use smol_str::SmolStr;

use crate::{Decision, PolicyFailure, RequestFacts, DEFAULT_DENY};
use fold::CallerConditions;
use reads::Reads;
use request::{Caller, PrincipalKey, RequestBuilder};
use scope::{CompiledPolicy, ScopeIndex};

pub struct CedarPolicies {
    schema: Schema,
    scopes: ScopeIndex,
    /// Display ids (`@id("…")` annotation, or `file.cedar#N`) by Cedar's own policy id.
    #[cfg(test)]
    names: HashMap<PolicyId, Arc<str>>,
    requests: RequestBuilder,
    default_deny: Arc<str>,
    /// Decisions by their complete input (see [`DecisionKey`]); dropped with the set at reload.
    memo: quick_cache::sync::Cache<DecisionKey, Decision>,
    /// The set's name in the config, for log lines.
    name: Arc<str>,
    failure_warnings: FailureWarnings,
}

/// Failing policies are logged at most once per [`FAILURE_WARNING_EVERY`] seconds per set: a
/// policy that fails for one request usually fails for every request like it.
#[derive(Default)]
struct FailureWarnings {
    /// The Unix second of the last warning.
    last: std::sync::atomic::AtomicU64,
    /// Failures since the last warning.
    unreported: std::sync::atomic::AtomicU64,
}

const FAILURE_WARNING_EVERY: u64 = 10;

/// Everything a decision depends on. The decision is a pure function of these and of the policy
/// set, and `context.time` has one-second resolution, so an equal key within the same second has the
/// same answer. Keys compare in full (no hash is trusted to tell two inputs apart).
#[derive(Clone, PartialEq, Eq, Hash)]
struct DecisionKey {
    principal: PrincipalKey,
    action: Arc<str>,
    client_ip: std::net::IpAddr,
    unix_time: u64,
    /// The method, route, path, each configured header (or its absence) and the mTLS identity (or
    /// its absence), in one allocation (see [`push_part`]).
    text: Box<[u8]>,
}

impl DecisionKey {
    fn new(
        facts: &RequestFacts<'_>,
        action: &Arc<str>,
        context_headers: &[(http::HeaderName, SmolStr)],
    ) -> DecisionKey {
        // Room for the parts' lengths and a few short headers without growing.
        let mut text = Vec::with_capacity(64 + facts.route.len() + facts.path.len());
        for part in [facts.method.as_str(), facts.route, facts.path] {
            push_part(&mut text, Some(part));
        }
        for (name, _) in context_headers {
            push_part(&mut text, facts.headers.get(name).and_then(|value| value.to_str().ok()));
        }
        push_part(&mut text, facts.mtls_identity);
        DecisionKey {
            principal: PrincipalKey(Arc::clone(facts.principal)),
            action: Arc::clone(action),
            client_ip: facts.client_ip,
            unix_time: facts.unix_time,
            text: text.into_boxed_slice(),
        }
    }
}

/// A part as a presence byte, then (when present) its length and bytes: two different lists of
/// parts never give the same text.
fn push_part(text: &mut Vec<u8>, part: Option<&str>) {
    match part {
        None => text.push(0),
        Some(part) => {
            text.push(1);
            // A part longer than 4 GiB is not in a request the gateway accepted.
            text.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_le_bytes());
            text.extend_from_slice(part.as_bytes());
        }
    }
}

/// Memoized decisions kept at most this many (the oldest and least used go first; a key from a
/// past second can never match again).
const MEMO_ENTRIES: usize = 10_000;

impl CedarPolicies {
    /// Loads and validates the set. Every problem is a diagnostic at its file, line and column.
    pub fn load(name: &str, config: &Spanned<PolicySetConfig>) -> Result<CedarPolicies, ConfigErrors> {
        let settings = &config.value;
        let loaded = load::load_set(name, settings)?;
        let requests = RequestBuilder::new(&loaded.schema, &settings.context_headers).ok_or_else(|| {
            load::general(
                &settings.schema.value,
                "Cedar rejected Palisade's entity type names or the schema's actions".into(),
            )
        })?;
        Ok(CedarPolicies {
            scopes: ScopeIndex::new(&loaded.policies, &loaded.names),
            schema: loaded.schema,
            #[cfg(test)]
            names: loaded.names,
            requests,
            default_deny: DEFAULT_DENY.into(),
            memo: quick_cache::sync::Cache::new(MEMO_ENTRIES),
            name: name.into(),
            failure_warnings: FailureWarnings::default(),
        })
    }

    /// Whether the schema declares `Palisade::Action::"<name>"` (checked for named operations at load).
    pub fn declares_action(&self, name: &str) -> bool {
        let action = self.requests.action_uid(name);
        self.schema.actions().any(|declared| *declared == action)
    }

    /// Decides `action` (a named operation, or the method's name) on the request.
    pub fn decide(&self, facts: &RequestFacts<'_>, action: &Arc<str>) -> Decision {
        let Some(caller) = self.requests.caller(facts.principal, action, &self.scopes) else {
            // Nothing decided: the default deny.
            return self.decided(false, &[]);
        };
        let resource = self.requests.route_uid(facts.route);
        if let Some(decision) = self.decide_directly(facts, &caller, &resource) {
            return decision;
        }
        let key = DecisionKey::new(facts, action, self.requests.context_headers());
        if let Some(decision) = self.memo.get(&key) {
            return decision;
        }
        // Two requests with the same new key may both evaluate it (same answer): cheaper than the
        // placeholder that would make the second wait, which cost a new decision ~1.5k instructions.
        let decision = self.evaluate(facts, &caller, &resource);
        self.memo.insert(key, decision.clone());
        decision
    }

    /// The decision when every admitted policy either holds for the caller or is answered by its
    /// [`Check`](direct::Check): no Cedar request, no memo (a check costs less than the memo's key).
    fn decide_directly(&self, facts: &RequestFacts<'_>, caller: &Caller, resource: &EntityUid) -> Option<Decision> {
        let checked = direct::Facts::new(facts);
        let mut outcomes = Outcomes::default();
        for (policy, conditions) in self.scopes.admitted(&caller.candidates, resource) {
            match conditions {
                CallerConditions::Hold => outcomes.satisfied(policy),
                CallerConditions::Evaluate { check, .. } => {
                    if check.answer(checked.as_ref()?)? {
                        outcomes.satisfied(policy);
                    }
                }
                CallerConditions::Never => {}
            }
        }
        Some(self.answer(outcomes))
    }

    fn evaluate(&self, facts: &RequestFacts<'_>, caller: &Caller, resource: &EntityUid) -> Decision {
        // A policy admitted by its scope whose conditions hold for the caller (or that has none)
        // holds as it is; the request is built only when some admitted policy has conditions left
        // to evaluate, with what those read.
        let mut outcomes = Outcomes::default();
        let mut reads = Reads::NOTHING;
        for (policy, conditions) in self.scopes.admitted(&caller.candidates, resource) {
            match conditions {
                CallerConditions::Hold => outcomes.satisfied(policy),
                CallerConditions::Evaluate { reads: more, .. } => reads |= *more,
                CallerConditions::Never => {}
            }
        }
        let mut conditional = self
            .scopes
            .admitted(&caller.candidates, resource)
            .filter_map(|(policy, conditions)| match conditions {
                CallerConditions::Evaluate { conditions, .. } => Some((policy, conditions)),
                _ => None,
            })
            .peekable();
        // Checked twice rather than collected: the candidates are few, an allocation is not free.
        if conditional.peek().is_some() {
            let Some((request, entities)) = self.requests.build(facts, caller, resource, reads) else {
                return self.decided(false, &[]);
            };
            // The extensions Cedar's authorizer evaluates with (`ip`, `decimal`, `datetime`).
            let evaluator = Evaluator::new(request, &entities, Extensions::all_available());
            for (policy, conditions) in conditional {
                outcomes.record(policy, evaluator.interpret(conditions, &policy.slots));
            }
        }
        if let Some(first) = outcomes.failures.first() {
            self.warn_failure(first, facts, outcomes.failures.len());
        }
        self.answer(outcomes)
    }

    /// The policy and the kind of error, never Cedar's message: it may quote request values.
    fn warn_failure(&self, failure: &PolicyFailure, facts: &RequestFacts<'_>, count: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        let warnings = &self.failure_warnings;
        let unreported = warnings.unreported.fetch_add(count as u64, Relaxed) + count as u64;
        let last = warnings.last.load(Relaxed);
        let due = facts.unix_time >= last.saturating_add(FAILURE_WARNING_EVERY);
        // One thread wins the slot; the others' failures are counted in the next warning.
        if due
            && warnings
                .last
                .compare_exchange(last, facts.unix_time, Relaxed, Relaxed)
                .is_ok()
        {
            warnings.unreported.store(0, Relaxed);
            tracing::warn!(
                policy_set = %self.name,
                policy = %failure.policy,
                error_kind = failure.kind,
                route = facts.route,
                failures = unreported,
                "a Cedar policy failed to evaluate: a failing forbid denies, a failing permit permits nothing \
                 (`palisade policy explain` shows Cedar's message for a test case)"
            );
        }
    }

    /// Cedar's rules, except that a `forbid` whose evaluation failed denies: Cedar skips a policy
    /// that fails (so a failing `permit` permits nothing, which is already closed), and a skipped
    /// `forbid` would let through what it was written to stop.
    fn answer(&self, outcomes: Outcomes<'_>) -> Decision {
        let decision = if !outcomes.failed_forbids.is_empty() {
            Decision {
                evaluation_failed: true,
                ..self.decided(false, &outcomes.failed_forbids)
            }
        } else if !outcomes.forbids.is_empty() {
            self.decided(false, &outcomes.forbids)
        } else {
            self.decided(true, &outcomes.permits)
        };
        with_failures(decision, outcomes.failures)
    }

    /// The decision naming its deciding policies, sorted (Cedar reports them in no fixed order, and
    /// audit records should not change from one request to the next).
    fn decided(&self, allowed: bool, deciding: &[&Arc<str>]) -> Decision {
        let sorted;
        let deciding = if deciding.len() < 2 {
            deciding
        } else {
            let mut copy = deciding.to_vec();
            copy.sort_unstable();
            sorted = copy;
            &sorted
        };
        match deciding {
            [] => Decision {
                allowed: false,
                decided_by: self.default_deny.clone(),
                evaluation_failed: false,
                failures: None,
            },
            [one] => Decision {
                allowed,
                decided_by: Arc::clone(one),
                evaluation_failed: false,
                failures: None,
            },
            many => Decision {
                allowed,
                decided_by: Arc::from(many.iter().map(|n| n.as_ref()).collect::<Vec<&str>>().join(",")),
                evaluation_failed: false,
                failures: None,
            },
        }
    }
}

/// What the admitted policies of one request evaluated to.
#[derive(Default)]
struct Outcomes<'a> {
    permits: Vec<&'a Arc<str>>,
    forbids: Vec<&'a Arc<str>>,
    failed_forbids: Vec<&'a Arc<str>>,
    failures: Vec<PolicyFailure>,
}

impl<'a> Outcomes<'a> {
    /// A condition that is not a boolean is an evaluation error, as in Cedar (a validated set has
    /// none); a failing `permit` counts for nothing.
    fn record(&mut self, policy: &'a CompiledPolicy, evaluated: Result<ast::Value, EvaluationError>) {
        let satisfied = match evaluated {
            Ok(ast::Value {
                value: ValueKind::Lit(Literal::Bool(satisfied)),
                ..
            }) => satisfied,
            Ok(_) => {
                self.failed(policy, "type_error", "the condition is not a boolean".into());
                return;
            }
            Err(error) => {
                self.failed(policy, error_kind(&error), error.to_string());
                return;
            }
        };
        if satisfied {
            self.satisfied(policy);
        }
    }

    fn satisfied(&mut self, policy: &'a CompiledPolicy) {
        if policy.forbid {
            self.forbids.push(&policy.name);
        } else {
            self.permits.push(&policy.name);
        }
    }

    fn failed(&mut self, policy: &'a CompiledPolicy, kind: &'static str, message: String) {
        if policy.forbid {
            self.failed_forbids.push(&policy.name);
        }
        self.failures.push(PolicyFailure {
            policy: Arc::clone(&policy.name),
            kind,
            message,
        });
    }
}

/// `decision` reporting `failures`, in policy-id order (as its deciding policies are).
fn with_failures(decision: Decision, mut failures: Vec<PolicyFailure>) -> Decision {
    failures.sort_unstable_by(|a, b| a.policy.cmp(&b.policy));
    Decision {
        failures: (!failures.is_empty()).then(|| failures.into()),
        ..decision
    }
}

/// A fixed word for the kind of evaluation error (for log lines; the message may quote values).
fn error_kind(error: &EvaluationError) -> &'static str {
    match error {
        EvaluationError::IntegerOverflow(_) => "integer_overflow",
        EvaluationError::TypeError(_) => "type_error",
        EvaluationError::EntityAttrDoesNotExist(_) | EvaluationError::RecordAttrDoesNotExist(_) => "missing_attribute",
        EvaluationError::EntityDoesNotExist(_) => "missing_entity",
        EvaluationError::FailedExtensionFunctionExecution(_) => "extension_function_failed",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_auth::{AuthMethodKind, Principal, PrincipalKind};
    use palisade_core::config::unspanned;

    /// Palisade's principal entity types, as every test schema declares them.
    pub(super) const PRINCIPAL_TYPES: &str = r#"  entity Role;
  entity Group;
  entity User in [Role, Group] {
    subject: String, issuer: String, scopes: Set<String>, roles: Set<String>, groups: Set<String>, claims: {}
  };
  entity Service in [Role, Group] {
    subject: String, issuer: String, scopes: Set<String>, roles: Set<String>, groups: Set<String>, claims: {}
  };
  entity ApiKey in [Role, Group] {
    subject: String, issuer: String, scopes: Set<String>, roles: Set<String>, groups: Set<String>, claims: {}
  };
"#;

    /// The schema of these tests: the principal types, a route with an `id`, and actions in groups.
    pub(super) fn schema(route_and_actions: &str) -> String {
        format!("namespace Palisade {{\n{PRINCIPAL_TYPES}{route_and_actions}}}\n")
    }

    const ROUTE_AND_ACTIONS: &str = r#"  entity Route { path: String, params: { id?: String } };
  action read, write;
  action "GET", readOrder in [read] appliesTo { principal: [User, Service, ApiKey], resource: Route, context: Ctx };
  action "DELETE", cancelOrder in [write] appliesTo { principal: [User, Service, ApiKey], resource: Route, context: Ctx };
  type Ctx = { ip: ipaddr, method: String, path: String, time: Long, headers: { x_tenant?: String }, mtls_identity?: String };
"#;

    /// Every kind of scope, with conditions that hold for some requests and not others, and a
    /// `forbid` that only a scope keeps away from most requests.
    const POLICIES: &str = r#"
@id("any") permit (principal, action, resource) when { resource.params has id && resource.params.id == "1" };
@id("alice") permit (principal == Palisade::User::"alice", action == Palisade::Action::"GET", resource);
@id("admins") permit (principal in Palisade::Role::"admin", action, resource);
@id("services") permit (principal is Palisade::Service, action in [Palisade::Action::"read"], resource);
@id("ops-keys") permit (principal is Palisade::ApiKey in Palisade::Group::"ops", action, resource is Palisade::Route);
@id("orders") permit (principal, action == Palisade::Action::"readOrder", resource == Palisade::Route::"orders");
@id("writers") permit (principal in Palisade::Role::"writer", action in Palisade::Action::"write", resource in Palisade::Route::"orders");
@id("no-night") forbid (principal, action in Palisade::Action::"write", resource) when { context.time > 2000 };
@id("banned") forbid (principal in Palisade::Group::"banned", action, resource);
@id("local-erin") permit (principal == Palisade::User::"erin", action, resource) when { context.ip.isInRange(ip("127.0.0.0/8")) } unless { context.time > 2000 };
@id("kept-out") forbid (principal is Palisade::User in Palisade::Role::"admin", action, resource is Palisade::Route in Palisade::Route::"vault");
@id("writer-2") permit (principal, action == Palisade::Action::"cancelOrder", resource) when { principal.roles.contains("writer") && resource.params has id && resource.params.id == "2" };
@id("admins-late") forbid (principal, action, resource) when { principal in Palisade::Role::"admin" && context.time > 2500 } unless { principal.subject == "bob" };
@id("route-literal") permit (principal == Palisade::User::"erin", action == Palisade::Action::"cancelOrder", resource) when { Palisade::Route::"orders" has path };
@id("billing") permit (principal is Palisade::Service, action == Palisade::Action::"cancelOrder", resource) when { if principal.subject == "billing" then resource.params has id else 1 > 2 };
@id("overflow") forbid (principal == Palisade::User::"dave", action == Palisade::Action::"cancelOrder", resource) when { 9223372036854775807 + (if principal.subject == "dave" then 1 else 0) > 0 };
@id("tenant") forbid (principal, action == Palisade::Action::"DELETE", resource) when { context.headers has x_tenant && context.headers.x_tenant != "acme" };
@id("keys-get") permit (principal is Palisade::ApiKey, action, resource) when { context.path like "/p/1*" && context.method == "GET" && resource.path like "*1" };
@id("mtls") permit (principal is Palisade::User, action == Palisade::Action::"DELETE", resource) when { context has mtls_identity && context.mtls_identity == principal.subject };
@id("networks") permit (principal is Palisade::Service, action == Palisade::Action::"DELETE", resource) when { context.ip.isInRange(ip("2001:db8::/32")) || context.ip.isInRange(ip("10.1.0.0/16")) };
@id("acme-erin") permit (principal == Palisade::User::"erin", action == Palisade::Action::"DELETE", resource) when { context.headers has x_tenant && context.headers.x_tenant == "acme" && resource.params has id };
@id("if-header") permit (principal in Palisade::Group::"ops", action == Palisade::Action::"readOrder", resource) when { if context has headers.x_tenant then resource has params.id && resource.params.id == "2" else context.time <= 1000 };
@id("keys-need-a-certificate") forbid (principal is Palisade::ApiKey, action == Palisade::Action::"DELETE", resource) unless { context has mtls_identity };
@id("late-services") forbid (principal is Palisade::Service, action == Palisade::Action::"cancelOrder", resource) when { context.time >= 3000 && !(context.ip.isInRange(ip("127.0.0.1"))) };
"#;

    fn load(dir: &std::path::Path) -> CedarPolicies {
        load_set(dir, "test", POLICIES)
    }

    /// A set named `name` of `policies` over the tests' schema, written into `dir`.
    fn load_set(dir: &std::path::Path, name: &str, policies: &str) -> CedarPolicies {
        std::fs::write(dir.join("t.cedarschema"), schema(ROUTE_AND_ACTIONS)).expect("schema written");
        std::fs::write(dir.join("t.cedar"), policies).expect("policies written");
        let config = unspanned(PolicySetConfig {
            schema: unspanned(dir.join("t.cedarschema")),
            files: vec![unspanned(dir.join("t.cedar"))],
            context_headers: vec!["X-Tenant".into()],
        });
        CedarPolicies::load(name, &config).expect("test policies load")
    }

    fn principal(kind: PrincipalKind, subject: &str, roles: &[&str], groups: &[&str]) -> Arc<Principal> {
        Arc::new(Principal {
            kind,
            method: AuthMethodKind::Jwt,
            subject: subject.into(),
            issuer: "https://idp".into(),
            scopes: vec![],
            roles: roles.iter().map(|r| r.to_string()).collect(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            claims: serde_json::Map::new(),
            expires_at: None,
        })
    }

    struct Case<'a> {
        principal: &'a Arc<Principal>,
        action: &'a str,
        route: &'a str,
        id: &'a str,
        time: u64,
        /// An index into [`CONTEXTS`].
        context: usize,
    }

    /// What a case's context varies in.
    struct Context {
        address: &'static str,
        /// The `X-Tenant` header's bytes (`0xfc` is not visible ASCII, so not in Cedar's record).
        tenant: Option<&'static [u8]>,
        mtls_identity: Option<&'static str>,
    }

    const CONTEXTS: [Context; 5] = [
        Context {
            address: "127.0.0.1",
            tenant: None,
            mtls_identity: None,
        },
        Context {
            address: "10.1.2.3",
            tenant: Some(b"acme"),
            mtls_identity: Some("erin"),
        },
        Context {
            address: "2001:db8::7",
            tenant: None,
            mtls_identity: None,
        },
        Context {
            address: "192.168.0.1",
            tenant: Some(b"\xfc"),
            mtls_identity: Some("alice"),
        },
        Context {
            address: "10.9.0.1",
            tenant: Some(b"other"),
            mtls_identity: Some("ci"),
        },
    ];

    fn decide(policies: &CedarPolicies, case: &Case<'_>) -> Decision {
        let (path, params) = path_and_params(case);
        let facts = facts(case, &path, &params);
        policies.decide(&facts, &Arc::from(case.action))
    }

    /// `principal` GETs route `other`'s item 2 at `time` (for sets whose policies depend on the time).
    fn get_at(principal: &Arc<Principal>, time: u64) -> Case<'_> {
        Case {
            principal,
            action: "GET",
            route: "other",
            id: "2",
            time,
            context: 0,
        }
    }

    /// As the router would give them: the parameter is part of the path.
    fn path_and_params(case: &Case<'_>) -> (String, [(String, String); 1]) {
        (format!("/p/{}", case.id), [("id".to_string(), case.id.to_string())])
    }

    fn facts<'a>(case: &Case<'a>, path: &'a str, params: &'a [(String, String)]) -> RequestFacts<'a> {
        static HEADERS: std::sync::OnceLock<Vec<http::HeaderMap>> = std::sync::OnceLock::new();
        let headers = HEADERS.get_or_init(|| {
            let tenant = |value: &[u8]| http::HeaderValue::from_bytes(value).expect("header value");
            let map = |context: &Context| {
                let tenant = context
                    .tenant
                    .map(|value| (http::HeaderName::from_static("x-tenant"), tenant(value)));
                tenant.into_iter().collect()
            };
            CONTEXTS.iter().map(map).collect()
        });
        let context = &CONTEXTS[case.context];
        RequestFacts {
            principal: case.principal,
            method: &http::Method::GET,
            route: case.route,
            path,
            params,
            client_ip: context.address.parse().expect("address"),
            headers: &headers[case.context],
            mtls_identity: context.mtls_identity,
            unix_time: case.time,
        }
    }

    /// The whole set, decided by Cedar's own authorizer (no slicing, no evaluation of Palisade's),
    /// with the one rule Palisade adds: a `forbid` that fails to evaluate denies.
    fn decide_unsliced(policies: &CedarPolicies, case: &Case<'_>) -> Decision {
        let (path, params) = path_and_params(case);
        let facts = facts(case, &path, &params);
        let requests = &policies.requests;
        let caller = requests
            .caller(facts.principal, &Arc::from(case.action), &policies.scopes)
            .expect("caller");
        let resource = requests.route_uid(case.route);
        let (request, entities) = requests
            .build_public(&facts, &caller, &resource)
            .expect("request builds");
        let everything = policies.scopes.everything();
        let response = cedar_policy::Authorizer::new().is_authorized(&request, everything, &entities);
        let name = |id: &PolicyId| policies.names.get(id).expect("every policy has a name");
        let is_forbid = |id: &PolicyId| everything.policy(id).expect("policy").effect() == cedar_policy::Effect::Forbid;
        let mut failures = Vec::new();
        let mut failed_forbids: Vec<&Arc<str>> = Vec::new();
        for error in response.diagnostics().errors() {
            let cedar_policy::AuthorizationError::PolicyEvaluationError(failed) = error;
            if is_forbid(failed.policy_id()) {
                failed_forbids.push(name(failed.policy_id()));
            }
            failures.push(PolicyFailure {
                policy: Arc::clone(name(failed.policy_id())),
                kind: error_kind(failed.inner()),
                message: failed.inner().to_string(),
            });
        }
        let decision = if !failed_forbids.is_empty() {
            Decision {
                evaluation_failed: true,
                ..policies.decided(false, &failed_forbids)
            }
        } else {
            let deciding: Vec<&Arc<str>> = response.diagnostics().reason().map(name).collect();
            policies.decided(response.decision() == cedar_policy::Decision::Allow, &deciding)
        };
        with_failures(decision, failures)
    }

    #[test]
    fn decides_exactly_as_cedars_authorizer_over_the_whole_set() {
        let dir = tempfile::tempdir().expect("temp dir");
        let policies = load(dir.path());
        let principals = [
            principal(PrincipalKind::User, "alice", &[], &[]),
            principal(PrincipalKind::User, "bob", &["admin"], &[]),
            principal(PrincipalKind::User, "carol", &["writer"], &["banned"]),
            principal(PrincipalKind::User, "dave", &["writer", "admin"], &["ops"]),
            principal(PrincipalKind::Service, "alice", &[], &[]),
            principal(PrincipalKind::Service, "billing", &["writer"], &[]),
            principal(PrincipalKind::ApiKey, "ci", &[], &["ops"]),
            principal(PrincipalKind::ApiKey, "old", &["admin"], &["banned", "ops"]),
            principal(PrincipalKind::User, "erin", &[], &[]),
        ];
        let actions = ["GET", "readOrder", "DELETE", "cancelOrder", "POST", "read"];
        let routes = ["orders", "vault", "other"];
        let (mut compared, mut allowed) = (0, 0);
        for principal in &principals {
            for action in actions {
                for route in routes {
                    for id in ["1", "2"] {
                        for time in [1000, 3000] {
                            for context in 0..CONTEXTS.len() {
                                let case = Case {
                                    principal,
                                    action,
                                    route,
                                    id,
                                    time,
                                    context,
                                };
                                let sliced = decide(&policies, &case);
                                assert_eq!(
                                    sliced,
                                    decide_unsliced(&policies, &case),
                                    "{} {action} {route} id={id} t={time} context={context}",
                                    principal.subject
                                );
                                compared += 1;
                                allowed += usize::from(sliced.allowed);
                            }
                        }
                    }
                }
            }
        }
        // Both answers occur often, so the comparison means something.
        assert_eq!(compared, 9 * 6 * 3 * 2 * 2 * 5);
        assert!(
            allowed > compared / 5 && allowed < compared * 4 / 5,
            "{allowed} of {compared}"
        );
    }

    /// A request whose admitted policies are all answered by their checks is decided without Cedar,
    /// so without the memo; one with a condition the checks leave to Cedar is memoized.
    #[test]
    fn checks_decide_without_cedar_or_the_memo() {
        let dir = tempfile::tempdir().expect("temp dir");
        let policies = load(dir.path());
        let alice = principal(PrincipalKind::User, "alice", &[], &[]);
        let dave = principal(PrincipalKind::User, "dave", &["writer", "admin"], &["ops"]);
        // `any` (a check on `resource.params`) and `alice` (no conditions) are admitted.
        let checked = Case {
            context: 1,
            ..get_at(&alice, 1000)
        };
        assert_eq!(&*decide(&policies, &checked).decided_by, "alice");
        assert_eq!(policies.memo.len(), 0);
        // `overflow` fails for dave's caller part, and only Cedar reports that.
        let overflowing = Case {
            action: "cancelOrder",
            ..get_at(&dave, 1000)
        };
        assert!(decide(&policies, &overflowing).evaluation_failed);
        assert_eq!(policies.memo.len(), 1);
    }

    #[test]
    fn action_groups_from_the_schema_apply() {
        let dir = tempfile::tempdir().expect("temp dir");
        let policies = load(dir.path());
        let service = principal(PrincipalKind::Service, "reporting", &[], &[]);
        let case = |action| Case {
            principal: &service,
            action,
            route: "other",
            id: "2",
            time: 1000,
            context: 0,
        };
        // `services` permits `action in [Action::"read"]`: GET and readOrder are in it, DELETE is not.
        assert_eq!(&*decide(&policies, &case("GET")).decided_by, "services");
        assert!(decide(&policies, &case("readOrder")).allowed);
        assert!(!decide(&policies, &case("DELETE")).allowed);
    }

    #[test]
    fn a_request_no_scope_admits_is_denied_by_default() {
        let dir = tempfile::tempdir().expect("temp dir");
        let policies = load(dir.path());
        let nobody = principal(PrincipalKind::User, "nobody", &[], &[]);
        let case = Case {
            principal: &nobody,
            action: "POST",
            route: "other",
            id: "2",
            time: 1000,
            context: 0,
        };
        assert_eq!(
            decide(&policies, &case),
            Decision {
                allowed: false,
                decided_by: DEFAULT_DENY.into(),
                evaluation_failed: false,
                failures: None,
            }
        );
    }

    /// Cedar skips a policy whose evaluation fails. For a `forbid` that would fail open: the request
    /// it was written to stop would pass on another policy's `permit`. Palisade denies instead.
    #[test]
    fn a_forbid_that_fails_to_evaluate_denies() {
        let dir = tempfile::tempdir().expect("temp dir");
        let policies = r#"
@id("everyone") permit (principal, action, resource);
@id("overflowing") forbid (principal, action, resource) when { context.time * 10000000000 > 5000000000000 };
@id("overflowing-permit") permit (principal, action, resource) when { context.time * 10000000000 > 0 };
"#;
        let set = load_set(dir.path(), "test", policies);
        let alice = principal(PrincipalKind::User, "alice", &[], &[]);
        let at = |time| get_at(&alice, time);
        // Cedar's authorizer, with Palisade's rule for a failing forbid, agrees at every time.
        for time in [100, 1000, 1_790_000_000] {
            assert_eq!(decide(&set, &at(time)), decide_unsliced(&set, &at(time)), "t={time}");
        }
        // Evaluates: 100 s does not reach the bound, 1,000 s does.
        let early = decide(&set, &at(100));
        assert!(early.allowed);
        assert_eq!(&*early.decided_by, "everyone,overflowing-permit");
        assert_eq!(
            decide(&set, &at(1000)),
            Decision {
                allowed: false,
                decided_by: "overflowing".into(),
                evaluation_failed: false,
                failures: None,
            }
        );
        // Overflows (an evaluation error) in both: the failing permit permits nothing, the
        // failing forbid denies. Both failures are reported, with Cedar's message.
        let overflowed = decide(&set, &at(1_790_000_000));
        assert!(!overflowed.allowed);
        assert_eq!(&*overflowed.decided_by, "overflowing");
        assert!(overflowed.evaluation_failed);
        let failures = overflowed.failures.expect("failures reported");
        let reported: Vec<(&str, &str)> = failures.iter().map(|f| (&*f.policy, f.kind)).collect();
        assert_eq!(
            reported,
            [
                ("overflowing", "integer_overflow"),
                ("overflowing-permit", "integer_overflow")
            ]
        );
        assert!(failures[0].message.contains("overflow"), "{}", failures[0].message);
    }

    /// Log lines written while a closure runs.
    fn logged(run: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Lines(Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("log buffer").extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, run);
        let bytes = lines.0.lock().expect("log buffer").clone();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// A failing policy is logged once per 10 s with the count since, by policy and kind, never with
    /// Cedar's message (it quotes request values: here the time, elsewhere a claim or a header).
    #[test]
    fn a_failing_policy_is_logged_rarely_and_without_cedars_message() {
        let dir = tempfile::tempdir().expect("temp dir");
        let policies =
            r#"@id("overflowing") permit (principal, action, resource) when { context.time * 10000000000000000 > 0 };"#;
        let set = load_set(dir.path(), "audited", policies);
        let alice = principal(PrincipalKind::User, "alice", &[], &[]);
        let at = |time| get_at(&alice, time);
        let text = logged(|| {
            for time in [1000, 1003, 1005, 1011] {
                assert!(!decide(&set, &at(time)).allowed, "a failing permit permits nothing");
            }
        });
        let warnings: Vec<&str> = text
            .lines()
            .filter(|line| line.contains("failed to evaluate"))
            .collect();
        assert_eq!(warnings.len(), 2, "{text}");
        assert!(warnings[0].contains("policy_set=audited policy=overflowing"), "{text}");
        assert!(warnings[0].contains(r#"error_kind="integer_overflow""#), "{text}");
        assert!(warnings[0].contains("failures=1"), "{text}");
        // 1003 and 1005 were counted, not logged; 1011 is 10 s on.
        assert!(warnings[1].contains("failures=3"), "{text}");
        assert!(
            !text.contains("10000000000000000"),
            "Cedar's message was logged: {text}"
        );
    }

    #[test]
    fn declared_actions_are_known() {
        let dir = tempfile::tempdir().expect("temp dir");
        let policies = load(dir.path());
        assert!(policies.declares_action("readOrder"));
        assert!(policies.declares_action("GET"));
        assert!(!policies.declares_action("PATCH"));
        assert!(!policies.declares_action("readorder"));
    }
}
