//! Stage route: choose the one route for a request from its host, normalized path and method.
//!
//! Routes are sorted once, at compile time, most specific first, and the first that matches wins:
//! an exact host beats a wildcard host beats any host; then an exact path beats a template
//! (`/orders/{id}`, literal segments beating parameters from left to right) beats a prefix (longer
//! first); then a route that names methods beats one that takes any method. Two routes that compare
//! equal and could match the same request are a configuration error, so the order in the file never
//! decides anything.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use http::Method;
use palisade_core::config::RouteConfig;
use palisade_core::{Diagnostics, Spanned};

use crate::context::RequestContext;
use crate::respond::GatewayError;
use crate::runtime::Runtime;

/// The route for the request's host and path and `method`, recorded in the context
/// (404 when nothing matches, 405 with `Allow` when only the method does not).
pub fn find(runtime: &Runtime, context: &mut RequestContext, method: &Method) -> Result<usize, GatewayError> {
    context.route_index = None;
    match runtime
        .router
        .find(Some(&context.listener), &context.host, &context.path, method)
    {
        RouteMatch::Found { index, params } => {
            context.params = params
                .into_iter()
                .map(|(name, value)| (name.to_string(), value))
                .collect();
            context.route_index = Some(index);
            Ok(index)
        }
        RouteMatch::MethodNotAllowed(allow) => Err(GatewayError::MethodNotAllowed(allow)),
        RouteMatch::NotFound => Err(GatewayError::NotFound),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Any,
    /// `*.example.com`, stored as `.example.com`.
    Suffix(String),
    Exact(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PathPattern {
    Exact(String),
    Template(Vec<Segment>),
    /// On segment boundaries: `/api` matches `/api` and anything below it; with a trailing slash
    /// (`/api/`, and `/`) only what starts with it.
    Prefix(String),
}

/// How a pattern's literal text is compared with the request's path. A case-insensitive pattern
/// is stored lower-case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Case {
    /// Ranks below `Sensitive`: at equal specificity a route that spells the path exactly wins.
    Insensitive,
    Sensitive,
}

impl Case {
    fn same(self, pattern: &str, text: &str) -> bool {
        match self {
            Case::Sensitive => pattern == text,
            Case::Insensitive => pattern.eq_ignore_ascii_case(text),
        }
    }

    /// What follows `prefix` in `text`, when `text` starts with it.
    fn strip_prefix<'t>(self, text: &'t str, prefix: &str) -> Option<&'t str> {
        let head = text.get(..prefix.len())?;
        self.same(prefix, head).then(|| &text[prefix.len()..])
    }
}

/// A compiled route; `index` is its position in the config, to find its settings.
#[derive(Debug, Clone)]
pub struct RouteEntry {
    pub index: usize,
    pub name: String,
    host: HostPattern,
    path: PathPattern,
    case: Case,
    methods: Option<BTreeSet<Method>>,
    listeners: Option<BTreeSet<String>>,
}

/// The outcome of routing one request.
#[derive(Debug, PartialEq, Eq)]
pub enum RouteMatch<'a> {
    Found {
        index: usize,
        params: Vec<(&'a str, String)>,
    },
    /// The path exists for this host, but not with this method; the value is the `Allow` header.
    MethodNotAllowed(String),
    NotFound,
}

#[derive(Debug, Default)]
pub struct Router {
    routes: Vec<RouteEntry>,
}

impl Router {
    pub fn compile(routes: &[Spanned<RouteConfig>], diagnostics: &mut Diagnostics) -> Router {
        let mut compiled = Vec::with_capacity(routes.len());
        for (index, route) in routes.iter().enumerate() {
            if let Some(entry) = compile_route(index, route, diagnostics) {
                compiled.push(entry);
            }
        }
        compiled.sort_by(specificity);
        for pair in compiled.windows(2) {
            if specificity(&pair[0], &pair[1]) == Ordering::Equal && methods_overlap(&pair[0], &pair[1]) {
                let later = &routes[pair[0].index.max(pair[1].index)];
                let other = if pair[0].index < pair[1].index {
                    &pair[0].name
                } else {
                    &pair[1].name
                };
                diagnostics.on(
                    &later.value.matcher,
                    format!("route ties with route {other:?}: same host, path and methods"),
                );
            }
        }
        Router { routes: compiled }
    }

    pub fn routes(&self) -> &[RouteEntry] {
        &self.routes
    }

    /// `host` is lower-case without port; `path` is normalized; `listener` is the name of the listener
    /// the request arrived on (`None`: any, for policy tests).
    pub fn find<'a>(&'a self, listener: Option<&str>, host: &str, path: &str, method: &Method) -> RouteMatch<'a> {
        let mut allowed: Option<BTreeSet<&str>> = None;
        // Made when the first case-insensitive route is tried, and only then.
        let mut windows_path: Option<std::borrow::Cow<'_, str>> = None;
        for route in &self.routes {
            if !serves_listener(route, listener) || !host_matches(&route.host, host) {
                continue;
            }
            let path = match route.case {
                Case::Sensitive => path,
                Case::Insensitive => windows_path.get_or_insert_with(|| windows_name(path)),
            };
            let Some(params) = path_matches(&route.path, route.case, path) else {
                continue;
            };
            match &route.methods {
                Some(methods) if !methods.contains(method) => {
                    allowed
                        .get_or_insert_with(BTreeSet::new)
                        .extend(methods.iter().map(Method::as_str));
                }
                // CONNECT opens a tunnel past routing: only a route that names it takes it.
                None if method == Method::CONNECT => {
                    allowed.get_or_insert_with(BTreeSet::new);
                }
                _ => {
                    return RouteMatch::Found {
                        index: route.index,
                        params,
                    }
                }
            }
        }
        match allowed {
            Some(methods) => RouteMatch::MethodNotAllowed(methods.into_iter().collect::<Vec<_>>().join(", ")),
            None => RouteMatch::NotFound,
        }
    }
}

fn compile_route(index: usize, route: &Spanned<RouteConfig>, diagnostics: &mut Diagnostics) -> Option<RouteEntry> {
    let matcher = &route.value.matcher;
    let host = match matcher.value.host.as_deref() {
        None => HostPattern::Any,
        Some(text) => match parse_host(text) {
            Some(host) => host,
            None => {
                diagnostics.on(matcher, format!("host {text:?} is not a host name or *.domain"));
                return None;
            }
        },
    };
    let path = match (&matcher.value.path, &matcher.value.prefix) {
        (Some(path), None) => parse_path(path),
        (None, Some(prefix)) => parse_prefix(prefix),
        _ => return None, // reported by structural validation
    };
    let case = if matcher.value.case_sensitive {
        Case::Sensitive
    } else {
        Case::Insensitive
    };
    let path = match path {
        Ok(path) if case == Case::Insensitive => lower_case(path),
        Ok(path) => path,
        Err(message) => {
            diagnostics.on(matcher, message);
            return None;
        }
    };
    let methods = match &matcher.value.methods {
        None => None,
        Some(list) => {
            let mut set = BTreeSet::new();
            for text in list {
                match Method::from_bytes(text.as_bytes()) {
                    Ok(method) if text.bytes().all(|b| b.is_ascii_uppercase()) => {
                        set.insert(method);
                    }
                    _ => diagnostics.on(matcher, format!("method {text:?} is not an upper-case HTTP method")),
                }
            }
            if set.is_empty() {
                diagnostics.on(matcher, "methods must not be empty; leave it out to allow any method");
            }
            Some(set)
        }
    };
    Some(RouteEntry {
        index,
        name: route.value.name.value.clone(),
        host,
        path,
        case,
        methods,
        listeners: matcher.value.listeners.as_ref().map(|l| l.iter().cloned().collect()),
    })
}

fn parse_host(text: &str) -> Option<HostPattern> {
    let text = text.trim().to_ascii_lowercase();
    let (pattern, name) = match text.strip_prefix("*.") {
        Some(rest) => (HostPattern::Suffix(format!(".{rest}")), rest.to_string()),
        None => (HostPattern::Exact(text.clone()), text),
    };
    let valid = !name.is_empty()
        && name
            .split('.')
            .all(|label| !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    valid.then_some(pattern)
}

fn check_pattern_text(text: &str) -> Result<(), String> {
    if !text.starts_with('/') {
        return Err(format!("path {text:?} must start with /"));
    }
    match crate::pipeline::normalize::normalize_path(&text.replace(['{', '}'], "")) {
        Ok(normal) if normal == text.replace(['{', '}'], "") => Ok(()),
        _ => Err(format!(
            "path {text:?} is not in normalized form (no //, . or .., escapes only where needed)"
        )),
    }
}

fn parse_path(text: &str) -> Result<PathPattern, String> {
    check_pattern_text(text)?;
    if !text.contains('{') {
        return Ok(PathPattern::Exact(text.to_string()));
    }
    let mut segments = Vec::new();
    let mut names = BTreeSet::new();
    for part in text[1..].split('/') {
        if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid || !names.insert(name.to_string()) {
                return Err(format!(
                    "template parameter {{{name}}} in {text:?} is empty, invalid or repeated"
                ));
            }
            segments.push(Segment::Param(name.to_string()));
        } else if part.contains(['{', '}']) {
            return Err(format!(
                "in {text:?}, a parameter must be a whole segment such as /{{id}}"
            ));
        } else {
            segments.push(Segment::Literal(part.to_string()));
        }
    }
    Ok(PathPattern::Template(segments))
}

fn parse_prefix(text: &str) -> Result<PathPattern, String> {
    if text.contains(['{', '}']) {
        return Err(format!("prefix {text:?} cannot contain template parameters"));
    }
    check_pattern_text(text)?;
    // Kept as written: `/public/` matches only below `/public/`, never `/public` itself.
    Ok(PathPattern::Prefix(text.to_string()))
}

fn lower_case(path: PathPattern) -> PathPattern {
    match path {
        PathPattern::Exact(exact) => PathPattern::Exact(exact.to_ascii_lowercase()),
        PathPattern::Prefix(prefix) => PathPattern::Prefix(prefix.to_ascii_lowercase()),
        PathPattern::Template(segments) => PathPattern::Template(
            segments
                .into_iter()
                .map(|segment| match segment {
                    Segment::Literal(literal) => Segment::Literal(literal.to_ascii_lowercase()),
                    param => param,
                })
                .collect(),
        ),
    }
}

/// The path as a Windows (IIS) upstream resolves it, for case-insensitive routes: a segment's
/// trailing dots and spaces (raw or `%20`) do not count, so `/admin.` and `/admin%20` are `/admin`
/// there and must be routed as `/admin` here. A segment of nothing but dots and spaces is left alone.
fn windows_name(path: &str) -> std::borrow::Cow<'_, str> {
    let fold = |segment: &str| -> usize {
        let mut end = segment.len();
        loop {
            let rest = &segment[..end];
            if rest.ends_with(['.', ' ']) {
                end -= 1;
            } else if rest.ends_with("%20") {
                end -= 3;
            } else {
                return end;
            }
        }
    };
    let changes = path.split('/').any(|segment| {
        let end = fold(segment);
        end < segment.len() && end > 0
    });
    if !changes {
        return std::borrow::Cow::Borrowed(path);
    }
    let folded: Vec<&str> = path
        .split('/')
        .map(|segment| match fold(segment) {
            0 => segment,
            end => &segment[..end],
        })
        .collect();
    std::borrow::Cow::Owned(folded.join("/"))
}

fn host_matches(pattern: &HostPattern, host: &str) -> bool {
    match pattern {
        HostPattern::Any => true,
        HostPattern::Exact(name) => name == host,
        HostPattern::Suffix(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
    }
}

fn path_matches<'a>(pattern: &'a PathPattern, case: Case, path: &str) -> Option<Vec<(&'a str, String)>> {
    match pattern {
        PathPattern::Exact(exact) => case.same(exact, path).then(Vec::new),
        PathPattern::Prefix(prefix) => {
            let rest = case.strip_prefix(path, prefix)?;
            (prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/')).then(Vec::new)
        }
        PathPattern::Template(segments) => {
            let parts: Vec<&str> = path[1..].split('/').collect();
            if parts.len() != segments.len() {
                return None;
            }
            let mut params = Vec::new();
            for (segment, part) in segments.iter().zip(parts) {
                match segment {
                    Segment::Literal(literal) if case.same(literal, part) => {}
                    Segment::Param(name) if !part.is_empty() => params.push((name.as_str(), part.to_string())),
                    _ => return None,
                }
            }
            Some(params)
        }
    }
}

/// Most specific first.
fn specificity(a: &RouteEntry, b: &RouteEntry) -> Ordering {
    host_rank(&b.host)
        .cmp(&host_rank(&a.host))
        .then_with(|| folded_rank(&b.path).cmp(&folded_rank(&a.path)))
        .then_with(|| b.case.cmp(&a.case))
        .then_with(|| b.methods.is_some().cmp(&a.methods.is_some()))
}

fn host_rank(host: &HostPattern) -> (u8, usize) {
    match host {
        HostPattern::Exact(_) => (2, 0),
        HostPattern::Suffix(suffix) => (1, suffix.len()),
        HostPattern::Any => (0, 0),
    }
}

/// A comparable rank; equal ranks mean the two patterns match exactly the same paths.
fn path_rank(path: &PathPattern) -> (u8, Vec<u8>, usize, String) {
    match path {
        PathPattern::Exact(exact) => (3, Vec::new(), 0, exact.clone()),
        PathPattern::Template(segments) => {
            let shape: Vec<u8> = segments
                .iter()
                .map(|s| u8::from(matches!(s, Segment::Literal(_))))
                .collect();
            let literals = segments
                .iter()
                .map(|s| if let Segment::Literal(l) = s { l.as_str() } else { "{}" })
                .collect::<Vec<_>>()
                .join("/");
            (2, shape, segments.len(), literals)
        }
        PathPattern::Prefix(prefix) => (1, Vec::new(), prefix.len(), prefix.clone()),
    }
}

/// The rank with the literal text in lower case: `/Admin` and `/admin` are equally specific, and
/// then a case-sensitive route comes before a case-insensitive one that also matches.
fn folded_rank(path: &PathPattern) -> (u8, Vec<u8>, usize, String) {
    let mut rank = path_rank(path);
    rank.3.make_ascii_lowercase();
    rank
}

fn serves_listener(route: &RouteEntry, listener: Option<&str>) -> bool {
    match (&route.listeners, listener) {
        (Some(names), Some(listener)) => names.contains(listener),
        _ => true,
    }
}

fn methods_overlap(a: &RouteEntry, b: &RouteEntry) -> bool {
    // Routes bound to different listeners never see the same request.
    if let (Some(x), Some(y)) = (&a.listeners, &b.listeners) {
        if x.is_disjoint(y) {
            return false;
        }
    }
    // Different host names or paths never collide, even with equal rank.
    let same_host = match (&a.host, &b.host) {
        (HostPattern::Exact(x), HostPattern::Exact(y)) | (HostPattern::Suffix(x), HostPattern::Suffix(y)) => x == y,
        (HostPattern::Any, HostPattern::Any) => true,
        _ => false,
    };
    // Case-insensitive patterns are stored lower-case, so equal ranks of two of them mean the same
    // paths; a case-sensitive and a case-insensitive route never tie (the former comes first).
    if !same_host || a.case != b.case || path_rank(&a.path) != path_rank(&b.path) {
        return false;
    }
    match (&a.methods, &b.methods) {
        (Some(x), Some(y)) => !x.is_disjoint(y),
        (None, None) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(yaml: &str) -> Result<Router, Vec<String>> {
        let routes: Vec<Spanned<RouteConfig>> = serde_saphyr_routes(yaml);
        let mut diagnostics = Diagnostics::new("routes.yaml");
        let router = Router::compile(&routes, &mut diagnostics);
        diagnostics
            .finish(router)
            .map_err(|e| e.0.iter().map(ToString::to_string).collect())
    }

    fn serde_saphyr_routes(yaml: &str) -> Vec<Spanned<RouteConfig>> {
        let listeners =
            ["a", "inbound", "outbound", "x", "y"].map(|name| format!("{{name: {name}, address: '127.0.0.1:1'}}"));
        let text = format!(
            "listeners: [{}]\nclusters: {{c: {{targets: ['127.0.0.1:2']}}}}\nroutes:\n{yaml}",
            listeners.join(", ")
        );
        palisade_core::parse_str("routes.yaml", &text, None)
            .expect("structurally valid")
            .routes
    }

    fn found(router: &Router, host: &str, path: &str, method: Method) -> Option<String> {
        match router.find(None, host, path, &method) {
            RouteMatch::Found { index, .. } => router.routes.iter().find(|r| r.index == index).map(|r| r.name.clone()),
            _ => None,
        }
    }

    const ROUTES: &str = r#"
  - { name: catch-all, match: { prefix: / }, cluster: c, public: true }
  - { name: orders-any, match: { prefix: /orders }, cluster: c, public: true }
  - { name: order, match: { path: "/orders/{id}", methods: [GET, DELETE] }, cluster: c, public: true }
  - { name: order-new, match: { path: /orders/new }, cluster: c, public: true }
  - { name: item, match: { path: "/orders/{id}/items/{item}" }, cluster: c, public: true }
  - { name: item-first, match: { path: "/orders/{id}/items/first" }, cluster: c, public: true }
  - { name: api-host, match: { host: api.example.com, prefix: / }, cluster: c, public: true }
  - { name: wild-host, match: { host: "*.example.com", prefix: / }, cluster: c, public: true }
  - { name: admin, match: { path: /admin, methods: [GET] }, cluster: c, public: true }
"#;

    #[test]
    fn case_insensitive_routes_read_trailing_dots_and_spaces_as_windows_does() {
        let routes = router(
            "  - { name: admin, match: { path: /admin, case_sensitive: false }, cluster: c, public: true }\n  - { name: files, match: { prefix: /files, case_sensitive: false }, cluster: c, public: true }\n  - { name: root, match: { prefix: / }, cluster: c, public: true }\n",
        )
        .expect("valid");
        for path in ["/admin", "/ADMIN.", "/admin..", "/admin%20", "/Admin.%20 "] {
            assert_eq!(
                found(&routes, "x", path, Method::GET).as_deref(),
                Some("admin"),
                "{path}"
            );
        }
        assert_eq!(
            found(&routes, "x", "/files. /a.txt.", Method::GET).as_deref(),
            Some("files")
        );
        assert_eq!(found(&routes, "x", "/adminx", Method::GET).as_deref(), Some("root"));
        assert_eq!(found(&routes, "x", "/admin/...", Method::GET).as_deref(), Some("root"));
        let sensitive =
            router("  - { name: admin, match: { path: /admin }, cluster: c, public: true }\n").expect("valid");
        assert_eq!(
            found(&sensitive, "x", "/admin.", Method::GET),
            None,
            "only where the route says so"
        );
        assert_eq!(windows_name("/a/b"), "/a/b");
        assert_eq!(windows_name("/a./b%20/..."), "/a/b/...");
    }

    #[test]
    fn a_prefix_with_a_trailing_slash_matches_only_below_it() {
        let routes = router(
            "  - { name: public, match: { prefix: /public/ }, cluster: c, public: true }\n  - { name: exact, match: { path: /public }, cluster: c, public: true }\n  - { name: root, match: { prefix: / }, cluster: c, public: true }\n",
        )
        .expect("valid");
        assert_eq!(found(&routes, "x", "/public/a", Method::GET).as_deref(), Some("public"));
        assert_eq!(found(&routes, "x", "/public/", Method::GET).as_deref(), Some("public"));
        assert_eq!(found(&routes, "x", "/public", Method::GET).as_deref(), Some("exact"));
        assert_eq!(found(&routes, "x", "/publicity", Method::GET).as_deref(), Some("root"));
        let only =
            router("  - { name: public, match: { prefix: /public/ }, cluster: c, public: true }\n").expect("valid");
        assert_eq!(
            found(&only, "x", "/public", Method::GET),
            None,
            "never widened to /public"
        );
    }

    #[test]
    fn connect_is_routed_only_where_a_route_names_it() {
        let routes = router(ROUTES).expect("valid");
        assert!(matches!(
            routes.find(None, "x", "/", &Method::CONNECT),
            RouteMatch::MethodNotAllowed(_)
        ));
        let tunnel =
            router("  - { name: tunnel, match: { prefix: /, methods: [CONNECT] }, cluster: c, public: true }\n")
                .expect("valid");
        assert_eq!(found(&tunnel, "x", "/", Method::CONNECT).as_deref(), Some("tunnel"));
    }

    #[test]
    fn most_specific_route_wins() {
        let router = router(ROUTES).expect("valid");
        let cases = [
            ("x", "/", "catch-all"),
            ("x", "/ordersx", "catch-all"),
            ("x", "/orders", "orders-any"),
            ("x", "/orders/7/items", "orders-any"),
            ("x", "/orders/7", "order"),
            ("x", "/orders/new", "order-new"),
            ("x", "/orders/7/items/9", "item"),
            ("x", "/orders/7/items/first", "item-first"),
            ("api.example.com", "/orders/7", "api-host"),
            ("www.example.com", "/", "wild-host"),
            ("example.com", "/", "catch-all"),
        ];
        for (host, path, expected) in cases {
            assert_eq!(
                found(&router, host, path, Method::GET).as_deref(),
                Some(expected),
                "{host}{path}"
            );
        }
    }

    #[test]
    fn a_route_bound_to_listeners_serves_only_their_requests() {
        let routes = "  - { name: inside, match: { prefix: /, listeners: [inbound] }, cluster: c, public: true }\n  - { name: outside, match: { prefix: /, listeners: [outbound] }, cluster: c, public: true }\n";
        let router = router(routes).expect("same match on disjoint listeners is no tie");
        let name = |listener| match router.find(Some(listener), "x", "/a", &Method::GET) {
            RouteMatch::Found { index, .. } => index,
            other => panic!("{other:?}"),
        };
        assert_eq!((name("inbound"), name("outbound")), (0, 1));
        assert_eq!(
            router.find(Some("admin"), "x", "/a", &Method::GET),
            RouteMatch::NotFound
        );
        let tie = "  - { name: a, match: { prefix: /, listeners: [x, y] }, cluster: c, public: true }\n  - { name: b, match: { prefix: /, listeners: [y] }, cluster: c, public: true }\n";
        assert!(router_result_is_tie(tie));
    }

    fn router_result_is_tie(routes: &str) -> bool {
        router(routes).is_err_and(|errors| errors.iter().any(|e| e.contains("ties")))
    }

    #[test]
    fn template_parameters_are_captured() {
        let router = router(ROUTES).expect("valid");
        match router.find(None, "x", "/orders/42/items/9", &Method::GET) {
            RouteMatch::Found { params, .. } => {
                assert_eq!(params, vec![("id", "42".to_string()), ("item", "9".to_string())])
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wrong_method_is_405_with_allow_only_when_nothing_else_matches() {
        let only =
            router("  - { name: admin, match: { path: /admin, methods: [GET, POST] }, cluster: c, public: true }\n")
                .expect("valid");
        assert_eq!(
            only.find(None, "x", "/admin", &Method::PUT),
            RouteMatch::MethodNotAllowed("GET, POST".into())
        );
        assert_eq!(only.find(None, "x", "/other", &Method::PUT), RouteMatch::NotFound);
        let with_fallback = router(ROUTES).expect("valid");
        assert_eq!(
            found(&with_fallback, "x", "/orders/7", Method::POST).as_deref(),
            Some("orders-any")
        );
    }

    #[test]
    fn ties_are_configuration_errors_with_location() {
        let errors = router(
            "  - { name: a, match: { path: \"/o/{id}\", methods: [GET] }, cluster: c, public: true }\n  - { name: b, match: { path: \"/o/{x}\", methods: [GET, PUT] }, cluster: c, public: true }\n",
        )
        .unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("routes.yaml:5:") && errors[0].contains("ties with route \"a\""),
            "{errors:?}"
        );
        // Disjoint methods on the same path are not a tie.
        assert!(router("  - { name: a, match: { path: /o, methods: [GET] }, cluster: c, public: true }\n  - { name: b, match: { path: /o, methods: [POST] }, cluster: c, public: true }\n").is_ok());
    }

    const CASE_ROUTES: &str = r#"
  - { name: catch-all, match: { prefix: / }, cluster: c, public: true }
  - { name: admin, match: { prefix: /Admin, case_sensitive: false }, cluster: c, public: true }
  - { name: order, match: { path: "/Orders/{id}", case_sensitive: false }, cluster: c, public: true }
  - { name: exact-spelling, match: { path: /Report }, cluster: c, public: true }
  - { name: any-spelling, match: { path: /report, case_sensitive: false }, cluster: c, public: true }
"#;

    #[test]
    fn case_insensitive_routes_match_any_ascii_case() {
        let router = router(CASE_ROUTES).expect("valid");
        let cases = [
            ("/admin", "admin"),
            ("/Admin", "admin"),
            ("/ADMIN/users", "admin"),
            ("/aDmIn/", "admin"),
            ("/administrator", "catch-all"),
            ("/ORDERS/7", "order"),
            ("/orders/7/x", "catch-all"),
            // The exact spelling goes to the case-sensitive route, every other to the other one.
            ("/Report", "exact-spelling"),
            ("/report", "any-spelling"),
            ("/REPORT", "any-spelling"),
        ];
        for (path, expected) in cases {
            assert_eq!(
                found(&router, "x", path, Method::GET).as_deref(),
                Some(expected),
                "{path}"
            );
        }
        // Parameters keep the request's spelling.
        match router.find(None, "x", "/oRdErS/AbC", &Method::GET) {
            RouteMatch::Found { params, .. } => assert_eq!(params, vec![("id", "AbC".to_string())]),
            other => panic!("{other:?}"),
        }
        // Two case-insensitive routes that differ only in case tie.
        assert!(router_result_is_tie(
            "  - { name: a, match: { path: /x, case_sensitive: false }, cluster: c, public: true }\n  - { name: b, match: { path: /X, case_sensitive: false }, cluster: c, public: true }\n"
        ));
    }

    #[test]
    fn patterns_must_be_normalized_and_well_formed() {
        for bad in [
            "{ path: /a//b }",
            "{ path: /a/../b }",
            "{ path: \"/a/{}\" }",
            "{ path: \"/a/x{id}\" }",
            "{ prefix: \"/{id}\" }",
            "{ host: \"*.\", prefix: / }",
            "{ path: /a, methods: [get] }",
        ] {
            let yaml = format!("  - {{ name: a, match: {bad}, cluster: c, public: true }}\n");
            assert!(router(&yaml).is_err(), "{bad} should be refused");
        }
    }
}
