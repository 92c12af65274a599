//! Cedar policies at the gateway on real sockets: path parameters (owners read only their own
//! orders), context (client IP range, time), roles and groups as parents, `forbid` over `permit`,
//! and invalid policies refused at load and at reload with the old policies kept.

mod support;

use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::json;
use support::tokens::{self, claims, EcKey};

pub const SCHEMA: &str = r#"namespace Palisade {
  entity Role;
  entity Group;
  type Claims = { tenant?: String };
  entity User in [Role, Group] {
    subject: String, issuer: String, scopes: Set<String>, roles: Set<String>, groups: Set<String>, claims: Claims
  };
  entity Service in [Role, Group] {
    subject: String, issuer: String, scopes: Set<String>, roles: Set<String>, groups: Set<String>, claims: Claims
  };
  entity ApiKey in [Role, Group] {
    subject: String, issuer: String, scopes: Set<String>, roles: Set<String>, groups: Set<String>, claims: Claims
  };
  entity Route { path: String, params: { user?: String, id?: String } };
  action "GET", "POST", "DELETE" appliesTo {
    principal: [User, Service, ApiKey],
    resource: Route,
    context: { ip: ipaddr, method: String, path: String, time: Long, headers: { x_tenant?: String }, mtls_identity?: String }
  };
}
"#;

pub const POLICIES: &str = r#"@id("owners-read-their-orders")
permit (principal is Palisade::User, action == Palisade::Action::"GET", resource == Palisade::Route::"user-orders")
when { resource.params has user && resource.params.user == principal.subject };

@id("admins-on-loopback")
permit (principal in Palisade::Role::"admin", action, resource)
when { context.ip.isInRange(ip("127.0.0.0/8")) };

@id("office-admins-from-the-office")
permit (principal in Palisade::Role::"office-admin", action, resource)
when { context.ip.isInRange(ip("10.0.0.0/8")) };

@id("expired-contractors")
permit (principal in Palisade::Role::"contractor", action == Palisade::Action::"GET", resource)
when { context.time < 1000000000 };

@id("current-contractors")
permit (principal in Palisade::Role::"staff", action == Palisade::Action::"GET", resource)
when { context.time > 1000000000 };

@id("tenant-header-must-match")
forbid (principal, action, resource)
when { context.headers has x_tenant && principal.claims has tenant && context.headers.x_tenant != principal.claims.tenant };

@id("suspended-accounts")
forbid (principal in Palisade::Group::"suspended", action, resource);
"#;

fn write_policies(dir: &Path, policies: &str) {
    std::fs::write(dir.join("shop.cedarschema"), SCHEMA).unwrap();
    std::fs::write(dir.join("shop.cedar"), policies).unwrap();
}

fn config(echo: SocketAddr, key: &EcKey, dir: &Path) -> String {
    format!(
        r#"clusters:
  echo: {{ targets: ["{echo}"] }}
authentication:
  jwt_providers:
{provider}policies:
  shop:
    schema: {d}/shop.cedarschema
    files: [{d}/shop.cedar]
    context_headers: [x-tenant]
routes:
  - name: user-orders
    match: {{ path: "/users/{{user}}/orders/{{id}}" }}
    cluster: echo
    authentication: [{{ jwt: idp }}]
    authorization: {{ policies: shop }}
"#,
        provider = tokens::provider_yaml("idp", &tokens::jwks([&key.jwk]), ""),
        d = dir.display()
    )
}

fn token(key: &EcKey, sub: &str, roles: &[&str], groups: &[&str]) -> String {
    let mut c = claims(sub);
    c["realm_access"] = json!({ "roles": roles });
    c["groups"] = json!(groups);
    c["tenant"] = json!("acme");
    key.sign(&c)
}

async fn call(url: &str, method: &str, token: &str, tenant: Option<&str>) -> u16 {
    let mut request = http::Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {token}"));
    if let Some(tenant) = tenant {
        request = request.header("x-tenant", tenant);
    }
    support::send(request.body(Full::<Bytes>::default()).unwrap()).await.0
}

#[tokio::test]
async fn policies_decide_with_path_parameters_context_parents_and_forbid() {
    let echo = support::echo("orders").await;
    let key = EcKey::generate("k");
    let dir = tempfile::tempdir().unwrap();
    write_policies(dir.path(), POLICIES);
    let gw = support::start(&config(echo, &key, dir.path())).await;
    let url = |path: &str| gw.url(path);

    let alice = token(&key, "alice", &[], &[]);
    let admin = token(&key, "root", &["admin"], &[]);
    let office_admin = token(&key, "olga", &["office-admin"], &[]);
    let suspended_admin = token(&key, "sam", &["admin"], &["suspended"]);
    let contractor = token(&key, "carl", &["contractor"], &[]);
    let staff = token(&key, "stan", &["staff"], &[]);

    let cases = [
        (
            "owner reads own order",
            "GET",
            "/users/alice/orders/1",
            &alice,
            None,
            200,
        ),
        (
            "owner cannot read another's order",
            "GET",
            "/users/bob/orders/1",
            &alice,
            None,
            403,
        ),
        (
            "no permit for DELETE",
            "DELETE",
            "/users/alice/orders/1",
            &alice,
            None,
            403,
        ),
        (
            "admin role (a parent) from loopback",
            "DELETE",
            "/users/bob/orders/1",
            &admin,
            None,
            200,
        ),
        (
            "office admin outside the office range",
            "GET",
            "/users/bob/orders/1",
            &office_admin,
            None,
            403,
        ),
        (
            "forbid beats permit",
            "GET",
            "/users/bob/orders/1",
            &suspended_admin,
            None,
            403,
        ),
        (
            "time window closed",
            "GET",
            "/users/bob/orders/1",
            &contractor,
            None,
            403,
        ),
        ("time window open", "GET", "/users/bob/orders/1", &staff, None, 200),
        (
            "matching tenant header",
            "GET",
            "/users/alice/orders/1",
            &alice,
            Some("acme"),
            200,
        ),
        (
            "other tenant header: forbid",
            "GET",
            "/users/alice/orders/1",
            &alice,
            Some("globex"),
            403,
        ),
    ];
    for (case, method, path, token, tenant, expected) in cases {
        assert_eq!(call(&url(path), method, token, tenant).await, expected, "{case}");
    }
    let metrics = gw.metrics().await;
    assert!(metrics.contains("decided_by=\"owners-read-their-orders\""), "{metrics}");
    assert!(
        metrics.contains("outcome=\"denied\",decided_by=\"suspended-accounts\""),
        "{metrics}"
    );
}

#[tokio::test]
async fn invalid_policies_are_refused_at_load_and_reload_keeps_the_old_set() {
    let echo = support::echo("orders").await;
    let key = EcKey::generate("k");
    let dir = tempfile::tempdir().unwrap();

    // Refers to an attribute the schema does not have: a validation error, with its place.
    let unknown_attribute = "permit (principal, action, resource)\nwhen { principal.department == \"sales\" };\n";
    write_policies(dir.path(), unknown_attribute);
    let path = dir.path().join("g.yaml");
    std::fs::write(&path, support::with_listeners(&config(echo, &key, dir.path()))).unwrap();
    let errors = palisade_gateway::check_config(&path, palisade_core::ConfigKind::Gateway)
        .await
        .unwrap_err()
        .to_string();
    assert!(errors.contains("shop.cedar:2:"), "{errors}");

    write_policies(dir.path(), POLICIES);
    let gw = support::start(&config(echo, &key, dir.path())).await;
    let alice = token(&key, "alice", &[], &[]);
    assert_eq!(call(&gw.url("/users/alice/orders/1"), "GET", &alice, None).await, 200);

    // A syntax error on reload: refused with file and line, and the old policies stay in force.
    std::fs::write(
        dir.path().join("shop.cedar"),
        "permit (principal, action, resource)\nwhen { true ;\n",
    )
    .unwrap();
    let errors = gw.gateway.reload().await.unwrap_err().to_string();
    assert!(errors.contains("shop.cedar:2:"), "{errors}");
    assert_eq!(call(&gw.url("/users/alice/orders/1"), "GET", &alice, None).await, 200);
    assert_eq!(call(&gw.url("/users/bob/orders/1"), "GET", &alice, None).await, 403);
}

/// The documented example's schema: named operations `readOrder` and `cancelOrder`, in the action
/// groups `read` and `write`.
const NAMED_SCHEMA: &str = include_str!("../../../examples/authorization/shop.cedarschema");

const NAMED_POLICIES: &str = r#"@id("owners-read")
permit (principal, action == Palisade::Action::"readOrder", resource == Palisade::Route::"user-orders")
when { resource.params has user && resource.params.user == principal.subject };

@id("support-writes")
permit (principal in Palisade::Role::"support", action in Palisade::Action::"write", resource);

@id("auditors-get")
permit (principal in Palisade::Role::"auditor", action == Palisade::Action::"GET", resource);
"#;

fn named_config(echo: SocketAddr, key: &EcKey, dir: &Path, get_action: &str) -> String {
    config(echo, key, dir).replace(
        "authorization: { policies: shop }",
        &format!("authorization: {{ policies: shop, actions: {{ GET: {get_action}, DELETE: cancelOrder }} }}"),
    )
}

#[tokio::test]
async fn named_operations_are_the_cedar_action_and_action_groups_apply() {
    let echo = support::echo("orders").await;
    let key = EcKey::generate("k");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("shop.cedarschema"), NAMED_SCHEMA).unwrap();
    std::fs::write(dir.path().join("shop.cedar"), NAMED_POLICIES).unwrap();
    let named = named_config(echo, &key, dir.path(), "readOrder");
    assert!(named.contains("actions: { GET: readOrder"), "{named}");
    let gw = support::start(&named).await;

    let alice = token(&key, "alice", &[], &[]);
    let support_agent = token(&key, "sue", &["support"], &[]);
    let auditor = token(&key, "audrey", &["auditor"], &[]);
    let order = gw.url("/users/alice/orders/1");
    let cases = [
        ("GET is readOrder: the owner reads", "GET", &alice, 200),
        ("DELETE is cancelOrder: no permit for the owner", "DELETE", &alice, 403),
        ("cancelOrder is in the write group", "DELETE", &support_agent, 200),
        ("readOrder is not in the write group", "GET", &support_agent, 403),
        (
            "the route's GET is readOrder, not Action::\"GET\"",
            "GET",
            &auditor,
            403,
        ),
    ];
    for (case, method, token, expected) in cases {
        assert_eq!(call(&order, method, token, None).await, expected, "{case}");
    }

    // A name the schema does not declare is refused at load, at its place in the file.
    let path = dir.path().join("g.yaml");
    let misspelt = named_config(echo, &key, dir.path(), "readOrdr");
    std::fs::write(&path, support::with_listeners(&misspelt)).unwrap();
    let errors = palisade_gateway::check_config(&path, palisade_core::ConfigKind::Gateway)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        errors.contains("\"readOrdr\", which the policy set's schema does not declare"),
        "{errors}"
    );
    assert!(errors.contains("g.yaml:"), "{errors}");
}

/// A `forbid` whose evaluation fails (here an overflow on today's time) denies: Cedar on its own
/// skips a failing policy, which would let the admin's `permit` through.
#[tokio::test]
async fn a_forbid_that_fails_to_evaluate_denies_over_a_permit() {
    let echo = support::echo("orders").await;
    let key = EcKey::generate("k");
    let dir = tempfile::tempdir().unwrap();
    let failing = r#"
@id("audited-accounts-overflow")
forbid (principal in Palisade::Group::"audited", action, resource)
when { context.time * 10000000000 > 0 };
"#;
    write_policies(dir.path(), &format!("{POLICIES}{failing}"));
    let gw = support::start(&config(echo, &key, dir.path())).await;
    let admin = token(&key, "root", &["admin"], &[]);
    let audited_admin = token(&key, "ada", &["admin"], &["audited"]);
    let url = gw.url("/users/bob/orders/1");
    assert_eq!(call(&url, "GET", &admin, None).await, 200);
    assert_eq!(call(&url, "GET", &audited_admin, None).await, 403);
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("outcome=\"denied\",decided_by=\"audited-accounts-overflow\""),
        "{metrics}"
    );
    // Operators can tell a failing policy from an ordinary deny; the client cannot.
    assert!(
        metrics.contains("stage=\"authorize\",reason=\"policy_evaluation_failed\""),
        "{metrics}"
    );
}
