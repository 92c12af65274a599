//! OpenAPI request validation on real sockets: parameters, headers, content type and JSON bodies
//! checked against the example contract, violations reported with JSON pointers, valid requests
//! (and their bodies) forwarded unchanged, and invalid ones never reaching the upstream.

mod support;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::Value;

fn contract() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/traffic/orders.openapi.yaml");
    path.display().to_string()
}

async fn gateway() -> support::Running {
    let echo = support::echo("orders").await;
    let contract = contract();
    support::start(&format!(
        r#"clusters:
  echo: {{ targets: ["{echo}"] }}
routes:
  - name: orders
    match: {{ path: /orders, methods: [GET, POST] }}
    cluster: echo
    public: true
    max_body_bytes: 2KiB
    validate: {{ openapi: "{contract}", reject_unknown_query: true }}
  - name: order
    match: {{ path: "/orders/{{id}}", methods: [GET] }}
    cluster: echo
    public: true
    validate: {{ openapi: "{contract}", operation: getOrder }}
"#
    ))
    .await
}

async fn post(url: &str, content_type: &str, tenant: Option<&str>, body: &str) -> support::Reply {
    let mut request = http::Request::post(url).header("content-type", content_type);
    if let Some(tenant) = tenant {
        request = request.header("x-tenant-id", tenant);
    }
    let (status, headers, body) = support::send_full(
        &support::client(),
        request.body(Full::new(Bytes::from(body.to_string()))).unwrap(),
    )
    .await;
    support::Reply { status, headers, body }
}

fn violations(reply: &support::Reply) -> Vec<String> {
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(reply.header("content-type").starts_with("application/problem+json"));
    let problem: Value = serde_json::from_str(&reply.body).expect("problem+json");
    assert!(problem["type"].as_str().unwrap_or("").ends_with("/validation-failed"));
    problem["violations"]
        .as_array()
        .expect("violations")
        .iter()
        .map(|v| v["pointer"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test]
async fn parameters_are_checked_against_the_operation() {
    let gw = gateway().await;
    assert_eq!(
        support::call(&gw.url("/orders?limit=5&status=open&tag=x"), &[])
            .await
            .status,
        200
    );
    let bad = support::call(&gw.url("/orders?limit=1000&status=lost&debug=1"), &[]).await;
    assert_eq!(violations(&bad), ["/query/limit", "/query/status", "/query/debug"]);
    assert!(
        !bad.body.contains("lost"),
        "offending values are not echoed: {}",
        bad.body
    );
    assert_eq!(support::call(&gw.url("/orders/7"), &[]).await.status, 200);
    assert_eq!(
        violations(&support::call(&gw.url("/orders/0"), &[]).await),
        ["/path/id"]
    );
    assert_eq!(
        violations(&support::call(&gw.url("/orders/seven"), &[]).await),
        ["/path/id"]
    );
}

#[tokio::test]
async fn bodies_are_checked_and_valid_ones_forwarded_unchanged() {
    let gw = gateway().await;
    let url = gw.url("/orders");
    let good = r#"{"items":[{"sku":"A-1","quantity":2}]}"#;
    let reply = post(&url, "application/json", Some("t-1"), good).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(support::echoed(&reply.body)["body_length"], good.len());

    let bad = post(
        &url,
        "application/json",
        Some("t-1"),
        r#"{"items":[{"sku":"a b","quantity":0}]}"#,
    )
    .await;
    let found = violations(&bad);
    assert!(found.contains(&"/body/items/0/sku".to_string()), "{found:?}");
    assert!(found.contains(&"/body/items/0/quantity".to_string()), "{found:?}");
    assert!(!bad.header("x-request-id").is_empty());

    assert_eq!(
        violations(&post(&url, "text/plain", Some("t-1"), "hello").await),
        ["/content-type"]
    );
    assert_eq!(
        violations(&post(&url, "application/json", None, good).await),
        ["/header/x-tenant-id"]
    );
    assert_eq!(
        violations(&post(&url, "application/json", Some("t-1"), "{oops").await),
        ["/body"]
    );

    // Buffering is bounded by the route's body limit.
    let huge = format!(
        r#"{{"items":[{{"sku":"A","quantity":1}}],"note":"{}"}}"#,
        "x".repeat(4096)
    );
    assert_eq!(post(&url, "application/json", Some("t-1"), &huge).await.status, 413);
}

/// The validator checks one value; an upstream parser that keeps the first of two would read another.
#[tokio::test]
async fn a_body_with_a_repeated_key_is_refused() {
    let gw = gateway().await;
    let url = gw.url("/orders");
    for (body, pointer) in [
        (
            r#"{"items":[{"sku":"A-1","quantity":1000,"quantity":1}]}"#,
            "/body/items/0/quantity",
        ),
        (r#"{"items":[{"sku":"A-1","quantity":1}],"items":[]}"#, "/body/items"),
    ] {
        let reply = post(&url, "application/json", Some("t-1"), body).await;
        assert_eq!(violations(&reply), [pointer], "{body}");
    }
}

#[tokio::test]
async fn a_contract_that_does_not_load_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let contract = contract();
    let yaml = format!(
        "clusters:\n  echo: {{ targets: [\"127.0.0.1:9\"] }}\nroutes:\n  - name: r\n    match: {{ prefix: /x }}\n    cluster: echo\n    public: true\n    validate: {{ openapi: \"{contract}\", operation: noSuchOperation }}\n"
    );
    let error = support::config_errors(dir.path(), &yaml).await;
    assert!(error.contains("noSuchOperation"), "{error}");
}
