//! Policy slicing by scope. Cedar's authorizer evaluates every policy of a set for every request;
//! most of them cannot apply because their scope (`principal in Role::"admin"`, `action ==
//! Action::"GET"`, `resource == Route::"orders"`) already rules the request out. A scope is checked
//! here without Cedar, and only the policies whose scope can hold are evaluated.
//!
//! The answer is the same as evaluating the whole set: Cedar checks a policy's scope before its
//! conditions (they are joined with a short-circuiting `&&`), so a policy whose scope is false is
//! never satisfied and never raises an evaluation error. A unit test compares both over many
//! principals, actions and resources.
//!
//! So an admitted policy's scope is already known to hold, and only its conditions (`when` and
//! `unless`, Cedar's "non-scope constraints") are evaluated: Cedar's `Policy::condition` joins them
//! to the scope with `&&`, and `true && c` is `c` (a scope constraint compares or looks up entity
//! uids and never fails). A policy without conditions holds outright. Cedar's authorizer builds the
//! joined condition anew, as a fresh expression tree, for every policy of every request, and
//! evaluates the scope again inside it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cedar_policy::{
    ActionConstraint, EntityTypeName, EntityUid, PolicyId, PolicySet, PrincipalConstraint, ResourceConstraint,
};
use cedar_policy_core::ast;

/// The request's side of a scope check. The principal's ancestors are its roles and groups (they
/// have no parents of their own); the action's come from the schema; routes have none.
pub struct ScopeFacts<'a> {
    pub principal: &'a EntityUid,
    pub principal_ancestors: &'a HashSet<EntityUid>,
    pub action: &'a EntityUid,
    pub action_ancestors: &'a HashSet<EntityUid>,
    pub resource: &'a EntityUid,
}

/// One policy's scope, copied out of Cedar once at load.
struct Scope {
    principal: PrincipalConstraint,
    action: ActionConstraint,
    resource: ResourceConstraint,
}

/// One policy, ready to evaluate: its scope for the check without Cedar, its whole condition, and
/// what a decision reports about it.
pub struct CompiledPolicy {
    scope: Scope,
    /// Its display id (`@id("…")`, or `file.cedar#N`).
    pub name: Arc<str>,
    pub forbid: bool,
    /// The `when` and `unless` conditions (what is left to evaluate once the scope holds); `None`
    /// for a policy that has none.
    pub conditions: Option<ast::Expr>,
    /// The policy's slot values (none: templates are refused at load).
    pub slots: ast::SlotEnv,
}

/// A set's policies in the set's order.
pub struct ScopeIndex {
    policies: Vec<CompiledPolicy>,
    /// The whole set (what slicing and Palisade's evaluation must agree with).
    #[cfg(test)]
    everything: PolicySet,
}

impl ScopeIndex {
    /// `names` gives each policy's display id; a policy without one is named by Cedar's id.
    pub fn new(set: &PolicySet, names: &HashMap<PolicyId, Arc<str>>) -> ScopeIndex {
        let policies = set
            .policies()
            .map(|policy| {
                let core: &ast::Policy = policy.as_ref();
                CompiledPolicy {
                    scope: Scope {
                        principal: policy.principal_constraint(),
                        action: policy.action_constraint(),
                        resource: policy.resource_constraint(),
                    },
                    name: names
                        .get(policy.id())
                        .cloned()
                        .unwrap_or_else(|| Arc::from(policy.id().to_string())),
                    forbid: policy.effect() == cedar_policy::Effect::Forbid,
                    conditions: core.non_scope_constraints().cloned(),
                    slots: core.env().clone(),
                }
            })
            .collect();
        ScopeIndex {
            policies,
            #[cfg(test)]
            everything: set.clone(),
        }
    }

    #[cfg(test)]
    pub fn everything(&self) -> &PolicySet {
        &self.everything
    }

    /// The policies that can apply to the request, in the set's order.
    pub fn admitted<'a>(&'a self, facts: &'a ScopeFacts<'a>) -> impl Iterator<Item = &'a CompiledPolicy> + 'a {
        self.policies.iter().filter(|policy| policy.scope.admits(facts))
    }
}

impl Scope {
    fn admits(&self, facts: &ScopeFacts<'_>) -> bool {
        self.admits_principal(facts) && self.admits_action(facts) && self.admits_resource(facts)
    }

    fn admits_principal(&self, facts: &ScopeFacts<'_>) -> bool {
        let within = |group: &EntityUid| group == facts.principal || facts.principal_ancestors.contains(group);
        match &self.principal {
            PrincipalConstraint::Any => true,
            PrincipalConstraint::Eq(uid) => uid == facts.principal,
            PrincipalConstraint::In(group) => within(group),
            PrincipalConstraint::Is(kind) => is(facts.principal, kind),
            PrincipalConstraint::IsIn(kind, group) => is(facts.principal, kind) && within(group),
        }
    }

    fn admits_action(&self, facts: &ScopeFacts<'_>) -> bool {
        let within = |group: &EntityUid| group == facts.action || facts.action_ancestors.contains(group);
        match &self.action {
            ActionConstraint::Any => true,
            ActionConstraint::Eq(uid) => uid == facts.action,
            ActionConstraint::In(groups) => groups.iter().any(within),
        }
    }

    /// Routes have no parents, so `in` is equality.
    fn admits_resource(&self, facts: &ScopeFacts<'_>) -> bool {
        match &self.resource {
            ResourceConstraint::Any => true,
            ResourceConstraint::Eq(uid) | ResourceConstraint::In(uid) => uid == facts.resource,
            ResourceConstraint::Is(kind) => is(facts.resource, kind),
            ResourceConstraint::IsIn(kind, uid) => is(facts.resource, kind) && uid == facts.resource,
        }
    }
}

fn is(uid: &EntityUid, kind: &EntityTypeName) -> bool {
    uid.type_name() == kind
}
