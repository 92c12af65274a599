//! Authorization at the gateway on real sockets: default deny, route rules by scope, role, group,
//! kind and method, 403 bodies that reveal nothing, and path tricks that must not change a decision.

mod support;

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{json, Value};
use support::tokens::{self, claims, EcKey};

fn config(echo: SocketAddr, key: &EcKey) -> String {
    format!(
        r#"clusters:
  echo: {{ targets: ["{echo}"] }}
authentication:
  jwt_providers:
{provider}routes:
  - name: orders
    match: {{ prefix: /orders }}
    cluster: echo
    authentication: [{{ jwt: idp }}]
    authorization:
      rules:
        - {{ id: read, methods: [GET], all_of: {{ scopes: [orders:read] }} }}
        - {{ id: write, methods: [POST, PUT], all_of: {{ scopes: [orders:write], roles: [clerk] }} }}
        - {{ id: staff, methods: [DELETE], any_of: {{ roles: [manager], groups: [/ops] }} }}
  - name: admin
    match: {{ prefix: /admin }}
    cluster: echo
    authentication: [{{ jwt: idp }}]
    authorization:
      rules:
        - {{ id: admins, all_of: {{ roles: [admin] }} }}
  - name: workloads
    match: {{ prefix: /internal }}
    cluster: echo
    authentication: [{{ jwt: idp }}]
    authorization:
      rules:
        - {{ id: services-only, kinds: [service] }}
  - name: me
    match: {{ prefix: /me }}
    cluster: echo
    authentication: [{{ jwt: idp }}]
    authorization: {{ allow: authenticated }}
"#,
        provider = tokens::provider_yaml("idp", &tokens::jwks([&key.jwk]), "")
    )
}

/// A token for `sub` with exactly these scopes, roles and groups.
fn token(key: &EcKey, sub: &str, scopes: &str, roles: &[&str], groups: &[&str]) -> String {
    let mut c = claims(sub);
    c["scope"] = json!(scopes);
    c["realm_access"] = json!({ "roles": roles });
    c["groups"] = json!(groups);
    key.sign(&c)
}

async fn send(url: &str, method: &str, token: &str) -> (u16, String) {
    let request = http::Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {token}"))
        .body(Full::<Bytes>::default())
        .unwrap();
    support::send(request).await
}

#[tokio::test]
async fn rules_allow_by_scope_role_group_kind_and_method_and_deny_everything_else() {
    let echo = support::echo("orders").await;
    let key = EcKey::generate("k");
    let gw = support::start(&config(echo, &key)).await;
    let url = |path: &str| gw.url(path);

    let reader = token(&key, "rita", "orders:read", &[], &[]);
    let writer_without_role = token(&key, "walt", "orders:write", &[], &[]);
    let clerk = token(&key, "carl", "orders:read orders:write", &["clerk"], &[]);
    let manager = token(&key, "mona", "", &["manager"], &[]);
    let ops = token(&key, "otto", "", &[], &["/ops"]);
    let admin = token(&key, "ada", "", &["admin"], &[]);
    let nobody = token(&key, "nina", "profile", &["guest"], &["/guests"]);
    let service = {
        let mut c = claims("billing");
        c["client_id"] = json!("billing");
        key.sign(&c)
    };

    let cases: Vec<(&str, &str, &str, &String, u16)> = vec![
        ("scope allows GET", "GET", "/orders/1", &reader, 200),
        ("read scope does not allow POST", "POST", "/orders", &reader, 403),
        (
            "all_of needs the role too",
            "POST",
            "/orders",
            &writer_without_role,
            403,
        ),
        ("clerk with write scope posts", "POST", "/orders", &clerk, 200),
        ("clerk puts", "PUT", "/orders/1", &clerk, 200),
        ("no rule for PATCH: default deny", "PATCH", "/orders/1", &clerk, 403),
        ("clerk cannot delete", "DELETE", "/orders/1", &clerk, 403),
        ("any_of: manager role deletes", "DELETE", "/orders/1", &manager, 200),
        ("any_of: ops group deletes", "DELETE", "/orders/1", &ops, 200),
        (
            "manager cannot read without the scope",
            "GET",
            "/orders/1",
            &manager,
            403,
        ),
        ("admin route needs admin", "GET", "/admin/users", &clerk, 403),
        ("admin", "GET", "/admin/users", &admin, 200),
        ("admin role is not an orders scope", "GET", "/orders/1", &admin, 403),
        ("users are not services", "GET", "/internal/jobs", &clerk, 403),
        ("services pass", "GET", "/internal/jobs", &service, 200),
        ("allow: authenticated", "GET", "/me", &nobody, 200),
        ("nobody reads orders", "GET", "/orders/1", &nobody, 403),
    ];
    for (case, method, path, token, expected) in cases {
        let (status, body) = send(&url(path), method, token).await;
        assert_eq!(status, expected, "{case}: {body}");
        if status == 403 {
            let problem: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(problem["type"], "https://palisade.dev/problems/forbidden", "{case}");
            for secret in ["admin", "clerk", "orders:", "rule", "scope"] {
                assert!(
                    !body.contains(secret),
                    "{case}: the 403 body reveals {secret:?}: {body}"
                );
            }
        }
    }
    // Authentication still comes first: no token is 401, not 403.
    let (status, _) = support::get(&url("/admin/users")).await;
    assert_eq!(status, 401);

    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(
            "palisade_authz_decisions_total{route=\"orders\",outcome=\"denied\",decided_by=\"default-deny\"}"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("palisade_authz_decisions_total{route=\"orders\",outcome=\"allowed\",decided_by=\"write\"} 2")
    );
}

const PATH_TRICKS: [&str; 10] = [
    "/admin",
    "/admin/",
    "//admin",
    "/x/../admin",
    "/%61dmin",
    "/%41dmin",
    "/./admin",
    "/admin/./x/..",
    "/ADMIN",
    "/Admin",
];

async fn raw_get(gw: &support::Running, path: &str, token: &str) -> (u16, String) {
    let raw = format!("GET {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n");
    let response = support::raw(gw.address, raw.as_bytes()).await;
    (support::status_of(&response), response)
}

/// The path the echo upstream saw, from a raw chunked response.
fn upstream_path(response: &str) -> String {
    let body = &response[response.find("\r\n\r\n").unwrap() + 4..];
    let seen = support::echoed(body.trim_start_matches(|c: char| c.is_ascii_hexdigit() || c.is_whitespace()));
    seen["path"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn path_tricks_do_not_reach_the_protected_route_unprotected() {
    let echo = support::echo("admin").await;
    let key = EcKey::generate("k");
    let gw = support::start(&config(echo, &key)).await;
    let clerk = token(&key, "carl", "orders:read", &["clerk"], &[]);
    let admin = token(&key, "ada", "", &["admin"], &[]);
    for path in PATH_TRICKS {
        // Normalized to /admin (denied for a clerk), or no route at all: never served.
        let (status, response) = raw_get(&gw, path, &clerk).await;
        assert!(matches!(status, 403 | 404 | 400), "{path}: {status}\n{response}");
        let (status, response) = raw_get(&gw, path, &admin).await;
        if status == 200 {
            let seen = upstream_path(&response);
            assert!(seen.starts_with("/admin"), "{path} reached the upstream as {seen}");
        }
    }
}

/// Beside a public catch-all, a protected route must catch every spelling of its path, or `/ADMIN`
/// reaches the service through the catch-all: `case_sensitive: false` does that.
#[tokio::test]
async fn beside_a_public_catch_all_every_spelling_of_a_protected_path_is_authorized() {
    let echo = support::echo("admin").await;
    let key = EcKey::generate("k");
    let catch_all = "  - { name: everything-else, match: { prefix: / }, cluster: echo, public: true }\n";
    let sensitive = format!("{}{catch_all}", config(echo, &key));
    let insensitive = sensitive.replace(
        "match: { prefix: /admin }",
        "match: { prefix: /admin, case_sensitive: false }",
    );
    assert_ne!(sensitive, insensitive);
    let clerk = token(&key, "carl", "orders:read", &["clerk"], &[]);
    let admin = token(&key, "ada", "", &["admin"], &[]);

    let gw = support::start(&insensitive).await;
    for path in PATH_TRICKS {
        let (status, response) = raw_get(&gw, path, &clerk).await;
        assert_eq!(status, 403, "{path}\n{response}");
        let (status, response) = raw_get(&gw, path, &admin).await;
        assert_eq!(status, 200, "{path}\n{response}");
        let seen = upstream_path(&response);
        assert!(
            seen.to_ascii_lowercase().starts_with("/admin"),
            "{path} reached the upstream as {seen}"
        );
    }
    let (status, _) = raw_get(&gw, "/administrator", &clerk).await;
    assert_eq!(status, 200, "only whole segments match");

    // Case-sensitive (the default), `/ADMIN` is another path, served by the public catch-all.
    let gw = support::start(&sensitive).await;
    let (status, response) = raw_get(&gw, "/ADMIN", &clerk).await;
    assert_eq!((status, upstream_path(&response)), (200, "/ADMIN".to_string()));
    assert_eq!(raw_get(&gw, "/%61dmin", &clerk).await.0, 403);
}
