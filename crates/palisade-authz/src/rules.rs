//! Route rules (RBAC): each rule may be limited to some methods and allows a principal that meets
//! all of its conditions: `all_of` scopes/roles/groups, `any_of` them, principal kinds, issuers,
//! subjects. Rules only allow; whatever no rule allows is denied.

use palisade_core::spiffe::SpiffePattern;
use std::sync::Arc;

use std::collections::BTreeMap;

use http::Method;
use palisade_auth::{Principal, PrincipalKind};
use palisade_core::config::auth::{AllowAll, AuthorizationConfig, PrincipalKindName, Requirement, RuleConfig};

use crate::{CedarPolicies, RequestFacts};

/// The outcome of authorization, with what decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The allowing rule's id, `authenticated` for `allow: authenticated`, or `default-deny`.
    pub decided_by: Arc<str>,
    /// Denied because a Cedar `forbid` failed to evaluate (it is `decided_by`).
    pub evaluation_failed: bool,
    /// The Cedar policies whose evaluation failed for this request, `permit`s included (a failing
    /// `permit` permits nothing); `None` when none failed, and always for route rules.
    pub failures: Option<Arc<[PolicyFailure]>>,
}

/// A Cedar policy that failed to evaluate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFailure {
    /// The policy's id (`@id`, or `file.cedar#N`).
    pub policy: Arc<str>,
    /// What went wrong (`integer_overflow`, `type_error`, `missing_attribute`, …); safe to log.
    pub kind: &'static str,
    /// Cedar's own message. It may quote request values (claims, headers), so `policy explain`
    /// shows it and the gateway never logs it.
    pub message: String,
}

pub const DEFAULT_DENY: &str = "default-deny";

struct Rule {
    id: Arc<str>,
    methods: Option<Vec<Method>>,
    all_of: Requirement,
    any_of: Requirement,
    kinds: Option<Vec<PrincipalKind>>,
    issuers: Option<Vec<String>>,
    subjects: Option<Vec<SubjectMatcher>>,
}

/// A subject a rule names: exact text, or for workload identities a SPIFFE pattern
/// (`spiffe://example.org/ns/shop/*`), which config validation has already checked.
enum SubjectMatcher {
    Exact(String),
    Spiffe(SpiffePattern),
}

impl SubjectMatcher {
    fn new(text: &str) -> Self {
        match text.starts_with("spiffe://").then(|| SpiffePattern::parse(text)) {
            Some(Ok(pattern)) => Self::Spiffe(pattern),
            _ => Self::Exact(text.to_string()),
        }
    }

    fn matches(&self, subject: &str) -> bool {
        match self {
            Self::Exact(text) => text == subject,
            Self::Spiffe(pattern) => pattern.matches(subject),
        }
    }
}

/// A route's compiled authorization.
pub struct RouteRules {
    allow_authenticated: bool,
    rules: Vec<Rule>,
    policies: Option<Arc<CedarPolicies>>,
    /// The Cedar action for each method: its named operation, or the method's own name.
    actions: CedarActions,
    default_deny: Arc<str>,
    authenticated: Arc<str>,
}

impl RouteRules {
    /// Compiles validated settings (see `palisade_core` validation for what is refused at load);
    /// `policy_sets` are the loaded Cedar sets by name.
    pub fn compile(config: &AuthorizationConfig, policy_sets: &BTreeMap<String, Arc<CedarPolicies>>) -> RouteRules {
        let rules = config
            .rules
            .iter()
            .enumerate()
            .map(|(index, rule)| compile_rule(index, &rule.value))
            .collect();
        RouteRules {
            allow_authenticated: config.allow == Some(AllowAll::Authenticated),
            rules,
            policies: config
                .policies
                .as_ref()
                .and_then(|name| policy_sets.get(&name.value).cloned()),
            actions: CedarActions::new(config),
            default_deny: DEFAULT_DENY.into(),
            authenticated: "authenticated".into(),
        }
    }

    pub fn decide(&self, facts: &RequestFacts<'_>) -> Decision {
        if let Some(policies) = &self.policies {
            return policies.decide(facts, &self.actions.of(facts.method));
        }
        self.decide_by_rules(facts.principal, facts.method)
    }

    fn decide_by_rules(&self, principal: &Principal, method: &Method) -> Decision {
        if self.allow_authenticated {
            return Decision {
                allowed: true,
                decided_by: self.authenticated.clone(),
                evaluation_failed: false,
                failures: None,
            };
        }
        match self.rules.iter().find(|rule| rule.allows(principal, method)) {
            Some(rule) => Decision {
                allowed: true,
                decided_by: rule.id.clone(),
                evaluation_failed: false,
                failures: None,
            },
            None => Decision {
                allowed: false,
                decided_by: self.default_deny.clone(),
                evaluation_failed: false,
                failures: None,
            },
        }
    }

    /// The Cedar action a request with `method` is decided as, when the route has policies.
    pub fn cedar_action(&self, method: &Method) -> Option<Arc<str>> {
        self.policies.as_ref().map(|_| self.actions.of(method))
    }

    /// Rule ids in order (for `policy explain` and the mutation test).
    pub fn rule_ids(&self) -> Vec<&str> {
        self.rules.iter().map(|r| &*r.id).collect()
    }
}

/// Methods' Cedar actions, named ones first; the common methods' own names are allocated once.
struct CedarActions(Vec<(Method, Arc<str>)>);

impl CedarActions {
    fn new(config: &AuthorizationConfig) -> CedarActions {
        let named = config
            .actions
            .iter()
            .filter_map(|(method, action)| Some((method.parse().ok()?, Arc::from(action.value.as_str()))));
        let common = [
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ]
        .map(|method| {
            let name = Arc::from(method.as_str());
            (method, name)
        });
        CedarActions(named.chain(common).collect())
    }

    fn of(&self, method: &Method) -> Arc<str> {
        self.0
            .iter()
            .find(|(known, _)| known == method)
            .map_or_else(|| Arc::from(method.as_str()), |(_, action)| Arc::clone(action))
    }
}

fn compile_rule(index: usize, config: &RuleConfig) -> Rule {
    let id = config.id_at(index);
    Rule {
        id: id.into(),
        methods: config
            .methods
            .as_ref()
            .map(|methods| methods.iter().filter_map(|m| m.parse().ok()).collect()),
        all_of: config.all_of.clone().unwrap_or_default(),
        any_of: config.any_of.clone().unwrap_or_default(),
        kinds: config
            .kinds
            .as_ref()
            .map(|kinds| kinds.iter().map(|k| kind_of(*k)).collect()),
        issuers: config.issuers.clone(),
        subjects: config
            .subjects
            .as_ref()
            .map(|subjects| subjects.iter().map(|s| SubjectMatcher::new(s)).collect()),
    }
}

fn kind_of(name: PrincipalKindName) -> PrincipalKind {
    match name {
        PrincipalKindName::User => PrincipalKind::User,
        PrincipalKindName::Service => PrincipalKind::Service,
        PrincipalKindName::ApiKey => PrincipalKind::ApiKey,
    }
}

impl Rule {
    fn allows(&self, principal: &Principal, method: &Method) -> bool {
        if self.methods.as_ref().is_some_and(|methods| !methods.contains(method)) {
            return false;
        }
        let has_all = |wanted: &[String], held: &[String]| wanted.iter().all(|w| held.contains(w));
        let all_of = has_all(&self.all_of.scopes, &principal.scopes)
            && has_all(&self.all_of.roles, &principal.roles)
            && has_all(&self.all_of.groups, &principal.groups);
        let any_of = self.any_of.is_empty()
            || self.any_of.scopes.iter().any(|s| principal.scopes.contains(s))
            || self.any_of.roles.iter().any(|r| principal.roles.contains(r))
            || self.any_of.groups.iter().any(|g| principal.groups.contains(g));
        let kind = self.kinds.as_ref().is_none_or(|kinds| kinds.contains(&principal.kind));
        let issuer = self
            .issuers
            .as_ref()
            .is_none_or(|issuers| issuers.contains(&principal.issuer));
        let subject = self
            .subjects
            .as_ref()
            .is_none_or(|subjects| subjects.iter().any(|s| s.matches(&principal.subject)));
        all_of && any_of && kind && issuer && subject
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_auth::AuthMethodKind;

    const RULES: &str = r#"
rules:
  - { id: read, methods: [GET, HEAD], all_of: { scopes: [orders:read] } }
  - { id: write, methods: [POST, PUT], all_of: { scopes: [orders:write], roles: [clerk] } }
  - { id: admins, any_of: { roles: [admin], groups: [/ops] } }
  - { id: batch, methods: [DELETE], kinds: [service], issuers: ["https://idp"] }
  - { id: owner, methods: [DELETE], subjects: [alice] }
"#;

    fn rules(text: &str) -> RouteRules {
        let config: AuthorizationConfig = parse_rules(text);
        RouteRules::compile(&config, &BTreeMap::new())
    }

    fn parse_rules(text: &str) -> AuthorizationConfig {
        palisade_core::parse_fragment(text).expect("valid rules")
    }

    fn principal(subject: &str, kind: PrincipalKind, scopes: &[&str], roles: &[&str], groups: &[&str]) -> Principal {
        let strings = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
        Principal {
            kind,
            method: AuthMethodKind::Jwt,
            subject: subject.into(),
            issuer: "https://idp".into(),
            scopes: strings(scopes),
            roles: strings(roles),
            groups: strings(groups),
            claims: Default::default(),
            expires_at: None,
        }
    }

    /// (case, principal, method, expected decider or None for deny)
    fn cases() -> Vec<(&'static str, Principal, Method, Option<&'static str>)> {
        use PrincipalKind::*;
        vec![
            (
                "reader reads",
                principal("bob", User, &["orders:read"], &[], &[]),
                Method::GET,
                Some("read"),
            ),
            (
                "reader cannot write",
                principal("bob", User, &["orders:read"], &[], &[]),
                Method::POST,
                None,
            ),
            (
                "write needs scope and role",
                principal("bob", User, &["orders:write"], &[], &[]),
                Method::POST,
                None,
            ),
            (
                "clerk writes",
                principal("bob", User, &["orders:write"], &["clerk"], &[]),
                Method::PUT,
                Some("write"),
            ),
            (
                "admin role anything",
                principal("eve", User, &[], &["admin"], &[]),
                Method::PATCH,
                Some("admins"),
            ),
            (
                "ops group anything",
                principal("eve", User, &[], &[], &["/ops"]),
                Method::DELETE,
                Some("admins"),
            ),
            (
                "service deletes",
                principal("job", Service, &[], &[], &[]),
                Method::DELETE,
                Some("batch"),
            ),
            (
                "user is not a service",
                principal("job", User, &[], &[], &[]),
                Method::DELETE,
                None,
            ),
            (
                "api key is not a service",
                principal("job", ApiKey, &[], &[], &[]),
                Method::DELETE,
                None,
            ),
            (
                "owner deletes",
                principal("alice", User, &[], &[], &[]),
                Method::DELETE,
                Some("owner"),
            ),
            (
                "owner cannot read without scope",
                principal("alice", User, &[], &[], &[]),
                Method::GET,
                None,
            ),
            (
                "nobody",
                principal("zed", User, &["other"], &["guest"], &["/x"]),
                Method::GET,
                None,
            ),
        ]
    }

    #[test]
    fn rules_allow_exactly_what_they_say_and_deny_the_rest() {
        let compiled = rules(RULES);
        for (case, principal, method, expected) in cases() {
            let decision = compiled.decide_by_rules(&principal, &method);
            assert_eq!(decision.allowed, expected.is_some(), "{case}");
            assert_eq!(&*decision.decided_by, expected.unwrap_or(DEFAULT_DENY), "{case}");
        }
    }

    /// Mutation check: removing any single rule changes at least one case's outcome, so no rule in
    /// the set is untested.
    #[test]
    fn removing_any_rule_makes_a_case_fail() {
        let config = parse_rules(RULES);
        for removed in 0..config.rules.len() {
            let mut mutated = config.clone();
            mutated.rules.remove(removed);
            let compiled = RouteRules::compile(&mutated, &BTreeMap::new());
            let changed = cases().into_iter().any(|(_, principal, method, expected)| {
                compiled.decide_by_rules(&principal, &method).allowed != expected.is_some()
            });
            assert!(changed, "removing rule {removed} changed no decision");
        }
    }

    #[test]
    fn allow_authenticated_allows_any_principal() {
        let compiled = rules("allow: authenticated\n");
        let decision = compiled.decide_by_rules(&principal("x", PrincipalKind::ApiKey, &[], &[], &[]), &Method::DELETE);
        assert!(decision.allowed);
        assert_eq!(&*decision.decided_by, "authenticated");
    }
}
