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

use super::fold::{CallerConditions, Specializer};

/// A caller's side of a scope check: who (with their roles and groups, which have no parents of
/// their own) does which action (with the schema's action groups above it).
pub struct CallerScope<'a> {
    pub principal: &'a EntityUid,
    pub principal_ancestors: &'a HashSet<EntityUid>,
    pub action: &'a EntityUid,
    pub action_ancestors: &'a HashSet<EntityUid>,
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

    /// The policies whose principal and action constraints hold for `caller`, with their
    /// conditions specialized to the caller by `specializer` (see [`CallerConditions`]); those that
    /// can never hold for the caller are left out. Found once per caller and action, so that a
    /// request checks only the candidates' resource constraints.
    pub fn candidates(&self, caller: &CallerScope<'_>, specializer: &Specializer<'_>) -> Box<[Candidate]> {
        self.policies
            .iter()
            .enumerate()
            .filter(|(_, policy)| policy.scope.admits_principal(caller) && policy.scope.admits_action(caller))
            .filter_map(|(at, policy)| {
                let conditions = match &policy.conditions {
                    None => CallerConditions::Hold,
                    Some(conditions) => CallerConditions::new(conditions, &policy.slots, specializer),
                };
                let possible = !matches!(conditions, CallerConditions::Never);
                possible.then_some(Candidate { at, conditions })
            })
            .collect()
    }

    /// The `candidates` (of this set) whose resource constraint holds for `resource`, in the set's order.
    pub fn admitted<'a>(
        &'a self,
        candidates: &'a [Candidate],
        resource: &'a EntityUid,
    ) -> impl Iterator<Item = (&'a CompiledPolicy, &'a CallerConditions)> + 'a {
        candidates
            .iter()
            .filter_map(|candidate| Some((self.policies.get(candidate.at)?, &candidate.conditions)))
            .filter(|(policy, _)| policy.scope.admits_resource(resource))
    }
}

/// A policy that can apply to a caller: its position in the set and its conditions for the caller.
pub struct Candidate {
    at: usize,
    conditions: CallerConditions,
}

impl Scope {
    fn admits_principal(&self, caller: &CallerScope<'_>) -> bool {
        let within = |group: &EntityUid| group == caller.principal || caller.principal_ancestors.contains(group);
        match &self.principal {
            PrincipalConstraint::Any => true,
            PrincipalConstraint::Eq(uid) => uid == caller.principal,
            PrincipalConstraint::In(group) => within(group),
            PrincipalConstraint::Is(kind) => is(caller.principal, kind),
            PrincipalConstraint::IsIn(kind, group) => is(caller.principal, kind) && within(group),
        }
    }

    fn admits_action(&self, caller: &CallerScope<'_>) -> bool {
        let within = |group: &EntityUid| group == caller.action || caller.action_ancestors.contains(group);
        match &self.action {
            ActionConstraint::Any => true,
            ActionConstraint::Eq(uid) => uid == caller.action,
            ActionConstraint::In(groups) => groups.iter().any(within),
        }
    }

    /// Routes have no parents, so `in` is equality.
    fn admits_resource(&self, resource: &EntityUid) -> bool {
        match &self.resource {
            ResourceConstraint::Any => true,
            ResourceConstraint::Eq(uid) | ResourceConstraint::In(uid) => uid == resource,
            ResourceConstraint::Is(kind) => is(resource, kind),
            ResourceConstraint::IsIn(kind, uid) => is(resource, kind) && uid == resource,
        }
    }
}

fn is(uid: &EntityUid, kind: &EntityTypeName) -> bool {
    uid.type_name() == kind
}
