//! What of a request a policy's conditions can read: the context's fields and the route's
//! attributes. A request builds only what its admitted policies read, so a set whose conditions
//! look at the route's parameters does not pay for the client address, the time and the headers.
//!
//! Found from the conditions' expressions at load, conservatively:
//! - a context field is read by `context.f`, `context has f` (or `context has f.g`); `context`
//!   used any other way (compared whole, put in a record or a set, chosen by an `if`) reads all;
//! - an entity's attribute is read only through `.a` or `has a` on an expression that evaluates to
//!   it. The route is the only entity whose attributes are built per request, and no value Palisade
//!   builds holds an entity, so any `.path` or `has path` (`params` likewise) reads the route's,
//!   except on `principal`, `action` or `context` (never the route).
//!
//! A field that is left out is one no admitted policy can observe, so the decision, its failures
//! and their messages are the same (Cedar's messages name the missing attribute, not the others;
//! the oracle test in `mod.rs` compares with Cedar's authorizer on the full request).

use std::ops::{BitOr, BitOrAssign};

use cedar_policy_core::ast::{Expr, ExprKind, Var};

/// A set of request parts, one bit each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reads(u16);

impl Reads {
    pub const NOTHING: Reads = Reads(0);
    pub const CONTEXT_IP: Reads = Reads(1);
    pub const CONTEXT_METHOD: Reads = Reads(1 << 1);
    pub const CONTEXT_PATH: Reads = Reads(1 << 2);
    pub const CONTEXT_TIME: Reads = Reads(1 << 3);
    pub const CONTEXT_HEADERS: Reads = Reads(1 << 4);
    pub const CONTEXT_MTLS_IDENTITY: Reads = Reads(1 << 5);
    pub const ROUTE_PATH: Reads = Reads(1 << 6);
    pub const ROUTE_PARAMS: Reads = Reads(1 << 7);
    pub const CONTEXT: Reads = Reads(0b11_1111);
    /// Everything (the whole request, as Cedar's authorizer gets it in the tests).
    #[cfg(test)]
    pub const ALL: Reads = Reads(0b1111_1111);

    /// Whether every part of `parts` is in the set.
    pub fn has(self, parts: Reads) -> bool {
        self.0 & parts.0 == parts.0
    }

    /// What `conditions` can read (see the module's comment).
    pub fn of(conditions: &Expr) -> Reads {
        let mut reads = Reads::NOTHING;
        for expr in conditions.subexpressions() {
            match expr.expr_kind() {
                ExprKind::GetAttr { expr: object, attr } | ExprKind::HasAttr { expr: object, attr } => {
                    reads |= Reads::attribute(object, attr);
                }
                ExprKind::ExtHasAttr { expr: object, attrs } => reads |= Reads::attribute(object, attrs.first()),
                _ => {}
            }
            if Reads::uses_context_whole(expr) {
                reads |= Reads::CONTEXT;
            }
        }
        reads
    }

    /// `object.attr` (or `object has attr`).
    fn attribute(object: &Expr, attr: &str) -> Reads {
        match object.expr_kind() {
            ExprKind::Var(Var::Context) => Reads::context_field(attr),
            ExprKind::Var(Var::Principal | Var::Action) => Reads::NOTHING,
            _ => Reads::route_attribute(attr),
        }
    }

    /// Whether `expr` has `context` as an operand other than of `.f` or `has f`.
    fn uses_context_whole(expr: &Expr) -> bool {
        match expr.expr_kind() {
            ExprKind::GetAttr { .. } | ExprKind::HasAttr { .. } | ExprKind::ExtHasAttr { .. } => false,
            _ => operands(expr).any(|operand| matches!(operand.expr_kind(), ExprKind::Var(Var::Context))),
        }
    }

    fn context_field(name: &str) -> Reads {
        match name {
            "ip" => Reads::CONTEXT_IP,
            "method" => Reads::CONTEXT_METHOD,
            "path" => Reads::CONTEXT_PATH,
            "time" => Reads::CONTEXT_TIME,
            "headers" => Reads::CONTEXT_HEADERS,
            "mtls_identity" => Reads::CONTEXT_MTLS_IDENTITY,
            // Not a field Palisade sets: absent however the context is built.
            _ => Reads::NOTHING,
        }
    }

    fn route_attribute(name: &str) -> Reads {
        match name {
            "path" => Reads::ROUTE_PATH,
            "params" => Reads::ROUTE_PARAMS,
            _ => Reads::NOTHING,
        }
    }
}

/// An expression's direct operands.
fn operands(expr: &Expr) -> Box<dyn Iterator<Item = &Expr> + '_> {
    use std::iter::once;
    match expr.expr_kind() {
        ExprKind::If {
            test_expr,
            then_expr,
            else_expr,
        } => Box::new(once(&**test_expr).chain(once(&**then_expr)).chain(once(&**else_expr))),
        ExprKind::And { left, right } | ExprKind::Or { left, right } => Box::new(once(&**left).chain(once(&**right))),
        ExprKind::UnaryApp { arg, .. } => Box::new(once(&**arg)),
        ExprKind::BinaryApp { arg1, arg2, .. } => Box::new(once(&**arg1).chain(once(&**arg2))),
        ExprKind::ExtensionFunctionApp { args, .. } => Box::new(args.iter()),
        ExprKind::GetAttr { expr, .. }
        | ExprKind::HasAttr { expr, .. }
        | ExprKind::ExtHasAttr { expr, .. }
        | ExprKind::Like { expr, .. }
        | ExprKind::Is { expr, .. } => Box::new(once(&**expr)),
        ExprKind::Set(items) => Box::new(items.iter()),
        ExprKind::Record(fields) => Box::new(fields.values()),
        // Leaves have none. Anything else (no other kind exists in the pinned Cedar) gives all its
        // subexpressions: more than its operands, so at worst the whole context is built.
        _ => Box::new(expr.subexpressions().skip(1)),
    }
}

impl BitOr for Reads {
    type Output = Reads;
    fn bitor(self, other: Reads) -> Reads {
        Reads(self.0 | other.0)
    }
}

impl BitOrAssign for Reads {
    fn bitor_assign(&mut self, other: Reads) {
        self.0 |= other.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads(policy: &str) -> Reads {
        let parsed = cedar_policy_core::parser::parse_policy(None, policy).expect("policy parses");
        parsed.non_scope_constraints().map_or(Reads::NOTHING, Reads::of)
    }

    /// What a `permit` of everything `when { body }` reads.
    fn permit(body: &str) -> Reads {
        reads(&format!("permit (principal, action, resource) when {{ {body} }};"))
    }

    #[test]
    fn fields_read_by_name_are_the_only_ones_built() {
        assert_eq!(permit("context.ip.isInRange(ip(\"10.0.0.0/8\"))"), Reads::CONTEXT_IP);
        assert_eq!(permit("context has mtls_identity"), Reads::CONTEXT_MTLS_IDENTITY);
        assert_eq!(
            permit("context has headers.x_tenant && context.time > 3"),
            Reads::CONTEXT_HEADERS | Reads::CONTEXT_TIME
        );
        assert_eq!(
            permit("resource.params has id && resource.params.id == principal.subject"),
            Reads::ROUTE_PARAMS
        );
        assert_eq!(permit("resource.path like \"/a*\""), Reads::ROUTE_PATH);
        // `principal.path` is the principal's, never the route's; `context.path` is the context's.
        assert_eq!(
            permit("principal has path || context.path == \"/\""),
            Reads::CONTEXT_PATH
        );
        // A name Palisade never sets reads nothing: it is absent however the request is built.
        assert_eq!(permit("context has tenant || resource has tenant"), Reads::NOTHING);
        assert_eq!(permit("principal.scopes.contains(\"a\")"), Reads::NOTHING);
        assert_eq!(reads("permit (principal, action, resource);"), Reads::NOTHING);
    }

    #[test]
    fn context_used_whole_reads_all_of_it() {
        assert_eq!(permit("context == {}"), Reads::CONTEXT);
        assert_eq!(permit("[context].contains({ip: ip(\"1.2.3.4\")})"), Reads::CONTEXT);
        assert_eq!(permit("{c: context}.c has time"), Reads::CONTEXT);
        assert_eq!(permit("(if true then context else {}).time == 1"), Reads::CONTEXT);
    }

    #[test]
    fn the_route_reached_any_other_way_is_read_by_attribute_name() {
        assert_eq!(permit("Palisade::Route::\"orders\".path == \"/\""), Reads::ROUTE_PATH);
        assert_eq!(
            permit("(if true then resource else principal) has params"),
            Reads::ROUTE_PARAMS
        );
    }
}
