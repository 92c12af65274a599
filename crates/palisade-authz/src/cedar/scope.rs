//! Policy slicing by scope. Cedar evaluates every policy of a set for every request; most of them
//! cannot apply because their scope (`principal in Role::"admin"`, `action == Action::"GET"`,
//! `resource == Route::"orders"`) already rules the request out. A scope is checked here without
//! Cedar, and only the policies whose scope can hold are handed to the authorizer.
//!
//! The answer is the same as evaluating the whole set: Cedar checks a policy's scope before its
//! conditions (they are joined with a short-circuiting `&&`), so a policy whose scope is false is
//! never satisfied and never raises an evaluation error. A unit test compares both over many
//! principals, actions and resources.

use std::collections::HashSet;
use std::sync::Arc;

use cedar_policy::{
    ActionConstraint, EntityTypeName, EntityUid, Policy, PolicySet, PrincipalConstraint, ResourceConstraint,
};

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

/// The scopes of a set's policies, in the set's order, and the sub-sets already built.
pub struct ScopeIndex {
    policies: Vec<(Scope, Policy)>,
    everything: Arc<PolicySet>,
    /// Sub-sets by the positions of their policies; few distinct ones exist (one per kind of caller
    /// and route), so this stays small.
    slices: quick_cache::sync::Cache<Box<[u32]>, Arc<PolicySet>>,
}

/// At most this many distinct sub-sets are kept.
const SLICES: usize = 1024;

impl ScopeIndex {
    pub fn new(set: &PolicySet) -> ScopeIndex {
        let policies = set
            .policies()
            .map(|policy| {
                let scope = Scope {
                    principal: policy.principal_constraint(),
                    action: policy.action_constraint(),
                    resource: policy.resource_constraint(),
                };
                (scope, policy.clone())
            })
            .collect();
        ScopeIndex {
            policies,
            everything: Arc::new(set.clone()),
            slices: quick_cache::sync::Cache::new(SLICES),
        }
    }

    /// The whole set (what slicing must agree with).
    #[cfg(test)]
    pub fn everything(&self) -> &PolicySet {
        &self.everything
    }

    /// The policies that can apply to the request; `None` when none can (the answer is then the
    /// default deny, without asking Cedar).
    pub fn slice(&self, facts: &ScopeFacts<'_>) -> Option<Arc<PolicySet>> {
        let positions: Box<[u32]> = self
            .policies
            .iter()
            .enumerate()
            .filter(|(_, (scope, _))| scope.admits(facts))
            .filter_map(|(position, _)| u32::try_from(position).ok())
            .collect();
        if positions.is_empty() {
            return None;
        }
        if positions.len() == self.policies.len() {
            return Some(Arc::clone(&self.everything));
        }
        if let Some(slice) = self.slices.get(&positions) {
            return Some(slice);
        }
        let slice = Arc::new(self.build(&positions)?);
        self.slices.insert(positions, Arc::clone(&slice));
        Some(slice)
    }

    fn build(&self, positions: &[u32]) -> Option<PolicySet> {
        let chosen = positions
            .iter()
            .filter_map(|&position| self.policies.get(position as usize))
            .map(|(_, policy)| policy.clone());
        // Cannot fail: the policies came out of one valid set, ids and all.
        PolicySet::from_policies(chosen).ok()
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
