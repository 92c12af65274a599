//! A policy's conditions specialized to one caller doing one action, once, with Cedar's evaluator:
//! the parts that depend only on who is calling (`principal.scopes.contains("orders:read")`,
//! `principal in Role::"admin"`, `principal.claims.tenant == "acme"`) are evaluated when the caller
//! is first seen, and a request evaluates what is left. A condition that folds to `true` holds for
//! every request of the caller, one that folds to `false` for none, and neither builds a request.
//!
//! Why the answer is the same:
//! - A caller's part evaluates the same for the caller and for any of their requests. It mentions
//!   neither `resource` nor `context`, nor an entity literal of the route type; the caller's
//!   entity store differs from a request's only by the route entity, and without those three no
//!   evaluation can reach the route's uid (no value Palisade builds for the principal holds an
//!   entity). Cedar's evaluation is otherwise pure (extension functions included).
//! - Only the boolean skeleton is rebuilt, in Cedar's order of evaluation: `a && b`, `a || b` and
//!   `if a then b else c` with their operands folded. `false && b` is `false` and `true || b` is
//!   `true` (Cedar does not evaluate `b`), and `if true then b else c` is `b`. A part is replaced
//!   only by the boolean it evaluated to; a part that fails to evaluate, or is not a boolean, stays
//!   as it was and fails per request exactly as before.
//!
//! The oracle test in `mod.rs` holds this to Cedar's authorizer on the whole request.

use cedar_policy_core::ast::{EntityType, Expr, ExprKind, Literal, SlotEnv, Value, ValueKind, Var};
use cedar_policy_core::evaluator::Evaluator;
use smol_str::SmolStr;

use super::direct::{Check, Scalar};
use super::reads::Reads;

/// A candidate policy's conditions for one caller.
pub enum CallerConditions {
    /// They hold for every request of the caller.
    Hold,
    /// They hold for none (the policy is not a candidate at all).
    Never,
    /// What is left to evaluate per request, what of a request it reads, and the same as a check
    /// that answers it without Cedar where it can (see [`Check`]).
    Evaluate {
        conditions: Expr,
        reads: Reads,
        check: Box<Check>,
    },
}

/// What conditions are specialized with for one caller: an evaluator whose request knows the
/// principal and the action (and whose entity store holds their entities), the route entity type,
/// and the configured context headers with their record keys.
pub struct Specializer<'a> {
    pub caller: &'a Evaluator<'a>,
    pub route: &'a EntityType,
    pub headers: &'a [(http::HeaderName, SmolStr)],
}

impl CallerConditions {
    /// A policy's `conditions` (with its `slots`) specialized for one caller.
    pub fn new(conditions: &Expr, slots: &SlotEnv, specializer: &Specializer<'_>) -> CallerConditions {
        let folder = Folder {
            caller: specializer.caller,
            slots,
            route: specializer.route,
            headers: specializer.headers,
        };
        let folded = folder.fold(conditions);
        match boolean(&folded) {
            Some(true) => CallerConditions::Hold,
            Some(false) => CallerConditions::Never,
            None => CallerConditions::Evaluate {
                reads: Reads::of(&folded),
                check: Box::new(Check::new(&folded, &folder)),
                conditions: folded,
            },
        }
    }
}

/// A [`Specializer`] for one policy's slots.
pub struct Folder<'a> {
    caller: &'a Evaluator<'a>,
    slots: &'a SlotEnv,
    route: &'a EntityType,
    pub headers: &'a [(http::HeaderName, SmolStr)],
}

impl Folder<'_> {
    fn fold(&self, expr: &Expr) -> Expr {
        if self.is_callers(expr) {
            return match self.caller.interpret(expr, self.slots) {
                Ok(Value {
                    value: ValueKind::Lit(Literal::Bool(value)),
                    ..
                }) => Expr::val(value).with_maybe_source_loc(expr.source_loc().cloned()),
                // Left to fail (or to be a type error) per request, as it would have.
                _ => expr.clone(),
            };
        }
        let loc = || expr.source_loc().cloned();
        match expr.expr_kind() {
            ExprKind::And { left, right } => {
                let left = self.fold(left);
                if boolean(&left) == Some(false) {
                    return left;
                }
                Expr::and(left, self.fold(right)).with_maybe_source_loc(loc())
            }
            ExprKind::Or { left, right } => {
                let left = self.fold(left);
                if boolean(&left) == Some(true) {
                    return left;
                }
                Expr::or(left, self.fold(right)).with_maybe_source_loc(loc())
            }
            ExprKind::If {
                test_expr,
                then_expr,
                else_expr,
            } => {
                let test = self.fold(test_expr);
                match boolean(&test) {
                    Some(true) => self.fold(then_expr),
                    Some(false) => self.fold(else_expr),
                    None => Expr::ite(test, self.fold(then_expr), self.fold(else_expr)).with_maybe_source_loc(loc()),
                }
            }
            _ => expr.clone(),
        }
    }

    /// The string, number or boolean a caller's part evaluates to (`None`: it fails, or is a value
    /// of another type).
    pub fn constant(&self, expr: &Expr) -> Option<Scalar> {
        match self.caller.interpret(expr, self.slots).ok()?.value {
            ValueKind::Lit(Literal::Bool(value)) => Some(Scalar::Bool(value)),
            ValueKind::Lit(Literal::Long(value)) => Some(Scalar::Long(value)),
            ValueKind::Lit(Literal::String(text)) => Some(Scalar::Text(text)),
            _ => None,
        }
    }

    /// Whether a caller's part evaluates without an error.
    pub fn evaluates(&self, expr: &Expr) -> bool {
        self.is_callers(expr) && self.caller.interpret(expr, self.slots).is_ok()
    }

    /// Whether `expr` depends only on the caller (see the module's comment).
    pub fn is_callers(&self, expr: &Expr) -> bool {
        expr.subexpressions().all(|part| match part.expr_kind() {
            ExprKind::Var(Var::Resource | Var::Context) | ExprKind::Unknown(_) | ExprKind::Slot(_) => false,
            ExprKind::Lit(Literal::EntityUID(uid)) => uid.entity_type() != self.route,
            _ => true,
        })
    }
}

fn boolean(expr: &Expr) -> Option<bool> {
    match expr.expr_kind() {
        ExprKind::Lit(Literal::Bool(value)) => Some(*value),
        _ => None,
    }
}
