//! What is left of a caller's conditions (see [`fold`](super::fold)), answered from the request's
//! facts without building a Cedar request, for the forms whose Cedar answer is certain: presence and
//! comparisons of route parameters, the path, the method, configured headers, the mTLS identity and
//! the time, `like`, `isInRange` of the client address, joined by `&&`, `||`, `!` and `if`. A
//! request whose admitted policies are all answered here is decided without Cedar's evaluator, its
//! entity store or the memo.
//!
//! Why the answer is Cedar's:
//! - A check answers `Some(b)` only where Cedar's evaluation of the same expression on the same
//!   request gives the boolean `b` without an error; anything else (a missing attribute, a type
//!   error, an operator not listed here, a value Cedar cannot hold) is `None`, and that policy goes
//!   to Cedar as before, which also reports the error. So errors are never produced here.
//! - `a && b` is `false` when `a` is, whatever `b` is, and `a || b` is `true` when `a` is: Cedar
//!   does not evaluate `b` then. When `a` has no answer, neither has the whole (Cedar would
//!   evaluate `a` first, and it may fail).
//! - Values are compared as Cedar compares them: `==` of a string and a number is `false`, not an
//!   error; `<` is for numbers only; `like` uses Cedar's own pattern matching.
//! - Constants and the caller's values (`principal.subject`) were evaluated once per caller by
//!   Cedar's evaluator; only strings, numbers and booleans are kept.
//!
//! The oracle test in `mod.rs` holds this to Cedar's authorizer on the whole request, over client
//! addresses, headers and mTLS identities as well as principals, actions and routes.

use std::net::IpAddr;

use cedar_policy_core::ast::{BinaryOp, Expr, ExprKind, Literal, Pattern, UnaryOp, Var};
use smol_str::SmolStr;

use super::fold::Folder;
use super::request::names_a_param_twice;
use crate::RequestFacts;

/// A condition answered from the request's facts where Cedar's answer is certain.
pub enum Check {
    Bool(bool),
    And(Box<Check>, Box<Check>),
    Or(Box<Check>, Box<Check>),
    Not(Box<Check>),
    If(Box<[Check; 3]>),
    /// Whether an optional field is there.
    Has(Field),
    Equal(Term, Term),
    /// `left < right` (or `<=`) on numbers.
    Less {
        left: Term,
        right: Term,
        or_equal: bool,
    },
    Like(Term, Pattern),
    /// `context.ip.isInRange(ip("…"))` with a constant range.
    InRange(Range),
    /// Left to Cedar.
    Cedar,
}

/// An operand: a constant (or a value of the caller's), or a field of the request.
pub enum Term {
    Constant(Scalar),
    Field(Field),
}

pub enum Scalar {
    Bool(bool),
    Long(i64),
    Text(SmolStr),
}

/// A field of the request as Cedar sees it.
pub enum Field {
    /// `resource.params.<name>` (optional).
    Param(SmolStr),
    /// `resource.path`.
    RoutePath,
    /// `context.method`.
    Method,
    /// `context.path`.
    Path,
    /// `context.time`.
    Time,
    /// `context.headers.<key>` of a configured header (optional: absent when the request did not
    /// send it, or sent a value that is not visible ASCII, as in the Cedar record).
    Header(http::HeaderName),
    /// `context.mtls_identity` (optional).
    MtlsIdentity,
}

/// An `ipaddr` range as Cedar's extension holds it.
pub struct Range {
    network: IpAddr,
    prefix: u8,
}

/// A request's facts for the checks, with `time` as Cedar's number.
pub struct Facts<'a> {
    facts: &'a RequestFacts<'a>,
    time: i64,
}

impl<'a> Facts<'a> {
    /// `None` for a request that Cedar is left to deny: its time does not fit Cedar's numbers, or
    /// it names a path parameter twice (see `RequestBuilder::build`).
    pub fn new(facts: &'a RequestFacts<'a>) -> Option<Facts<'a>> {
        if names_a_param_twice(facts.params) {
            return None;
        }
        Some(Facts {
            facts,
            time: i64::try_from(facts.unix_time).ok()?,
        })
    }
}

/// A value as a check compares it (Cedar's `==` is equality of type and value).
#[derive(Clone, Copy, PartialEq)]
enum Operand<'a> {
    Bool(bool),
    Long(i64),
    Text(&'a str),
}

impl Check {
    /// Cedar's answer when it is certain (see the module's comment).
    pub fn answer(&self, request: &Facts<'_>) -> Option<bool> {
        match self {
            Check::Bool(value) => Some(*value),
            Check::And(left, right) => match left.answer(request)? {
                false => Some(false),
                true => right.answer(request),
            },
            Check::Or(left, right) => match left.answer(request)? {
                true => Some(true),
                false => right.answer(request),
            },
            Check::Not(inner) => inner.answer(request).map(|value| !value),
            Check::If(parts) => {
                let [test, then, otherwise] = parts.as_ref();
                if test.answer(request)? {
                    then.answer(request)
                } else {
                    otherwise.answer(request)
                }
            }
            Check::Has(field) => Some(field.value(request).is_some()),
            Check::Equal(left, right) => Some(left.value(request)? == right.value(request)?),
            Check::Less { left, right, or_equal } => match (left.value(request)?, right.value(request)?) {
                (Operand::Long(left), Operand::Long(right)) => {
                    Some(if *or_equal { left <= right } else { left < right })
                }
                _ => None,
            },
            Check::Like(text, pattern) => match text.value(request)? {
                Operand::Text(text) => Some(pattern.wildcard_match(text)),
                _ => None,
            },
            Check::InRange(range) => range.holds(request.facts.client_ip),
            Check::Cedar => None,
        }
    }

    /// `expr` (a folded condition) as a check, with `folder`'s caller for the constant parts.
    pub fn new(expr: &Expr, folder: &Folder<'_>) -> Check {
        let check = |expr: &Expr| Box::new(Check::new(expr, folder));
        if folder.is_callers(expr) {
            return match folder.constant(expr) {
                Some(Scalar::Bool(value)) => Check::Bool(value),
                _ => Check::Cedar,
            };
        }
        match expr.expr_kind() {
            ExprKind::And { left, right } => Check::And(check(left), check(right)),
            ExprKind::Or { left, right } => Check::Or(check(left), check(right)),
            ExprKind::UnaryApp { op: UnaryOp::Not, arg } => Check::Not(check(arg)),
            ExprKind::If {
                test_expr,
                then_expr,
                else_expr,
            } => Check::If(Box::new([
                Check::new(test_expr, folder),
                Check::new(then_expr, folder),
                Check::new(else_expr, folder),
            ])),
            ExprKind::HasAttr { expr, attr } => has_field(expr, attr, folder),
            // `resource has params.id`, `context has headers.x_tenant`: Cedar checks `params` (which
            // is always there), then the field.
            ExprKind::ExtHasAttr { expr, attrs } => match (attrs.len(), attrs.first(), attrs.last()) {
                (1, only, _) => has_field(expr, only, folder),
                (2, outer, inner) => match optional_record(expr, outer) {
                    Some(record) => has_optional(record, inner, folder),
                    None => Check::Cedar,
                },
                _ => Check::Cedar,
            },
            ExprKind::BinaryApp { op, arg1, arg2 } => {
                let (Some(left), Some(right)) = (Term::new(arg1, folder), Term::new(arg2, folder)) else {
                    return Check::Cedar;
                };
                match op {
                    BinaryOp::Eq => Check::Equal(left, right),
                    BinaryOp::Less => Check::Less {
                        left,
                        right,
                        or_equal: false,
                    },
                    BinaryOp::LessEq => Check::Less {
                        left,
                        right,
                        or_equal: true,
                    },
                    _ => Check::Cedar,
                }
            }
            ExprKind::Like { expr, pattern } => match Term::new(expr, folder) {
                Some(text) => Check::Like(text, pattern.clone()),
                None => Check::Cedar,
            },
            ExprKind::ExtensionFunctionApp { fn_name, args } => match (fn_name.to_string().as_str(), args.as_slice()) {
                ("isInRange", [address, range]) if is_context_ip(address) => {
                    Range::new(range, folder).map_or(Check::Cedar, Check::InRange)
                }
                _ => Check::Cedar,
            },
            _ => Check::Cedar,
        }
    }
}

/// `expr has attr`: the route and the context always have their fields, and their optional ones
/// when the request has them; they have no others.
fn has_field(expr: &Expr, attr: &SmolStr, folder: &Folder<'_>) -> Check {
    match expr.expr_kind() {
        ExprKind::Var(Var::Resource) => Check::Bool(matches!(attr.as_str(), "path" | "params")),
        ExprKind::Var(Var::Context) => match attr.as_str() {
            "ip" | "method" | "path" | "time" | "headers" => Check::Bool(true),
            "mtls_identity" => Check::Has(Field::MtlsIdentity),
            _ => Check::Bool(false),
        },
        ExprKind::GetAttr {
            expr: base,
            attr: outer,
        } => match optional_record(base, outer) {
            Some(record) => has_optional(record, attr, folder),
            None => Check::Cedar,
        },
        _ => Check::Cedar,
    }
}

/// The records whose fields come and go with the request.
#[derive(Clone, Copy)]
enum OptionalRecord {
    /// `resource.params`
    Params,
    /// `context.headers`
    Headers,
}

/// Whether `base.outer` is one of the [`OptionalRecord`]s.
fn optional_record(base: &Expr, outer: &str) -> Option<OptionalRecord> {
    match (base.expr_kind(), outer) {
        (ExprKind::Var(Var::Resource), "params") => Some(OptionalRecord::Params),
        (ExprKind::Var(Var::Context), "headers") => Some(OptionalRecord::Headers),
        _ => None,
    }
}

/// `record has name`: a header that is not configured is never in the record.
fn has_optional(record: OptionalRecord, name: &SmolStr, folder: &Folder<'_>) -> Check {
    match record {
        OptionalRecord::Params => Check::Has(Field::Param(name.clone())),
        OptionalRecord::Headers => header(name, folder).map_or(Check::Bool(false), Check::Has),
    }
}

/// The configured header whose record key is `key` (`None`: not configured).
fn header(key: &SmolStr, folder: &Folder<'_>) -> Option<Field> {
    let (header, _) = folder.headers.iter().find(|(_, known)| known == key)?;
    Some(Field::Header(header.clone()))
}

fn is_context_ip(expr: &Expr) -> bool {
    matches!(expr.expr_kind(), ExprKind::GetAttr { expr, attr }
        if attr == "ip" && matches!(expr.expr_kind(), ExprKind::Var(Var::Context)))
}

impl Term {
    fn new(expr: &Expr, folder: &Folder<'_>) -> Option<Term> {
        if folder.is_callers(expr) {
            return folder.constant(expr).map(Term::Constant);
        }
        Field::new(expr, folder).map(Term::Field)
    }

    fn value<'a>(&'a self, request: &Facts<'a>) -> Option<Operand<'a>> {
        match self {
            Term::Constant(Scalar::Bool(value)) => Some(Operand::Bool(*value)),
            Term::Constant(Scalar::Long(value)) => Some(Operand::Long(*value)),
            Term::Constant(Scalar::Text(text)) => Some(Operand::Text(text)),
            Term::Field(field) => field.value(request),
        }
    }
}

impl Field {
    /// `resource.path`, `resource.params.<name>`, `context.<field>`, `context.headers.<key>`; a
    /// header that is not configured is a missing attribute (Cedar's error).
    fn new(expr: &Expr, folder: &Folder<'_>) -> Option<Field> {
        let ExprKind::GetAttr { expr: base, attr } = expr.expr_kind() else {
            return None;
        };
        match (base.expr_kind(), attr.as_str()) {
            (ExprKind::Var(Var::Resource), "path") => Some(Field::RoutePath),
            (ExprKind::Var(Var::Context), "method") => Some(Field::Method),
            (ExprKind::Var(Var::Context), "path") => Some(Field::Path),
            (ExprKind::Var(Var::Context), "time") => Some(Field::Time),
            (ExprKind::Var(Var::Context), "mtls_identity") => Some(Field::MtlsIdentity),
            (
                ExprKind::GetAttr {
                    expr: record,
                    attr: outer,
                },
                _,
            ) => match optional_record(record, outer)? {
                OptionalRecord::Params => Some(Field::Param(attr.clone())),
                OptionalRecord::Headers => header(attr, folder),
            },
            _ => None,
        }
    }

    /// The field's value as the request's Cedar record or entity holds it; `None` when absent.
    fn value<'a>(&self, request: &Facts<'a>) -> Option<Operand<'a>> {
        let facts = request.facts;
        match self {
            Field::Param(name) => facts
                .params
                .iter()
                .find(|(known, _)| known == name)
                .map(|(_, value)| Operand::Text(value)),
            Field::RoutePath | Field::Path => Some(Operand::Text(facts.path)),
            Field::Method => Some(Operand::Text(facts.method.as_str())),
            Field::Time => Some(Operand::Long(request.time)),
            Field::Header(header) => Some(Operand::Text(facts.headers.get(header)?.to_str().ok()?)),
            Field::MtlsIdentity => facts.mtls_identity.map(Operand::Text),
        }
    }
}

impl Range {
    /// `ip("…")` of a string that Cedar's extension accepts, parsed by Cedar's rules: an address
    /// (not IPv4 inside IPv6), then optionally `/` and a prefix without leading zeros.
    fn new(expr: &Expr, folder: &Folder<'_>) -> Option<Range> {
        let ExprKind::ExtensionFunctionApp { fn_name, args } = expr.expr_kind() else {
            return None;
        };
        let [text] = args.as_slice() else {
            return None;
        };
        let ExprKind::Lit(Literal::String(text)) = text.expr_kind() else {
            return None;
        };
        // Cedar's own evaluation must accept it too (it also bounds the lengths).
        if fn_name.to_string() != "ip" || !folder.evaluates(expr) || (text.contains(':') && text.contains('.')) {
            return None;
        }
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text.as_str(), None),
        };
        let network: IpAddr = address.parse().ok()?;
        let longest = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => longest,
            Some(digits) => {
                let plain = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
                if !plain || (digits.len() > 1 && digits.starts_with('0')) {
                    return None;
                }
                digits.parse::<u8>().ok().filter(|prefix| *prefix <= longest)?
            }
        };
        Some(Range { network, prefix })
    }

    /// Whether `client` (a single address, as `context.ip` holds it) is in the range; an IPv4
    /// address is never in an IPv6 range, nor the other way. `None` for an IPv6 address that is
    /// written with an IPv4 part (Cedar cannot hold those: see `RequestBuilder::address`).
    fn holds(&self, client: IpAddr) -> Option<bool> {
        match (client, self.network) {
            (IpAddr::V4(client), IpAddr::V4(network)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                Some(u32::from(client) & mask == u32::from(network) & mask)
            }
            (IpAddr::V6(client), _) if client.segments()[..5] == [0; 5] => None,
            (IpAddr::V6(client), IpAddr::V6(network)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                Some(u128::from(client) & mask == u128::from(network) & mask)
            }
            _ => Some(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cedar_policy::RestrictedExpression;
    use cedar_policy_core::evaluator::RestrictedEvaluator;
    use cedar_policy_core::extensions::Extensions;

    /// Cedar refuses `ip("::ffff:10.1.2.3")`, so a request from such an address has no `context.ip`
    /// and is left to Cedar (which denies it when a condition reads the address), never answered here.
    #[test]
    fn an_ipv6_address_with_an_ipv4_part_is_left_to_cedar() {
        let in_cedar = |text: &str| {
            let expression = RestrictedExpression::new_ip(text);
            RestrictedEvaluator::new(Extensions::all_available())
                .interpret(expression.as_ref().as_borrowed())
                .is_ok()
        };
        let everything = Range {
            network: "::".parse().expect("address"),
            prefix: 0,
        };
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().expect("address");
        assert!(!in_cedar(&mapped.to_string()));
        // Left to Cedar too, to be safe: an IPv4-compatible address (Rust writes it in hex).
        for address in [mapped, "::10.1.2.3".parse().expect("address")] {
            assert_eq!(everything.holds(address), None, "{address}");
        }
        assert!(in_cedar("2001:db8::1"));
        assert_eq!(everything.holds("2001:db8::1".parse().expect("address")), Some(true));
        assert_eq!(everything.holds("10.1.2.3".parse().expect("address")), Some(false));
    }
}
