//! Routing, error bodies, both HTTP versions, and what the upstream receives.

mod support;

use bytes::Bytes;
use http_body_util::Full;
use support::*;

const ROUTES: &str = r#"
routes:
  - name: catch-all
    match: { prefix: / }
    cluster: a
    public: true
  - name: order
    match: { path: "/orders/{id}", methods: [GET, DELETE] }
    cluster: b
    public: true
  - name: admin
    match: { host: admin.example.com, prefix: /admin }
    cluster: b
    public: true
  - name: only-get
    match: { path: /only-get, methods: [GET] }
    cluster: b
    public: true
  - name: wildcard-host
    match: { host: "*.tenants.example.com", prefix: / }
    cluster: b
    public: true
"#;

async fn two_clusters() -> Running {
    let (a, b) = (echo("a").await, echo("b").await);
    let yaml = format!("clusters:\n  a: {{ targets: [\"{a}\"] }}\n  b: {{ targets: [\"{b}\"] }}\n{ROUTES}");
    start(&yaml).await
}

fn get_with_host(url: &str, host: &str) -> http::Request<Full<Bytes>> {
    http::Request::get(url)
        .header("host", host)
        .body(Full::default())
        .unwrap()
}

#[tokio::test]
async fn most_specific_route_selects_the_cluster() {
    let gw = two_clusters().await;
    let cases = [
        ("/anything", "x", "a"),
        ("/orders/7", "x", "b"),
        ("/orders/7/extra", "x", "a"),
        ("/admin/users", "admin.example.com", "b"),
        ("/admin/users", "other.example.com", "a"),
        ("/", "acme.tenants.example.com", "b"),
        ("/", "ACME.Tenants.Example.COM.", "b"),
    ];
    for (path, host, upstream) in cases {
        let (status, _, body) = send_full(&client(), get_with_host(&gw.url(path), host)).await;
        assert_eq!(status, 200, "{host}{path}");
        assert_eq!(echoed(&body)["upstream"], upstream, "{host}{path}");
    }
}

#[tokio::test]
async fn unknown_path_is_404_problem_json_without_internals() {
    let b = echo("b").await;
    let yaml = format!(
        "clusters:\n  b: {{ targets: [\"{b}\"] }}\nroutes:\n  - {{ name: r, match: {{ path: /known }}, cluster: b, public: true }}\n"
    );
    let gw = start(&yaml).await;
    let (status, headers, body) = send_full(
        &client(),
        http::Request::get(gw.url("/unknown")).body(Full::default()).unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(headers["content-type"], "application/problem+json");
    let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(problem["status"], 404);
    assert_eq!(problem["type"], "https://palisade.dev/problems/not-found");
    assert!(!body.contains(&b.to_string()), "no upstream address in error bodies");
    assert_eq!(
        problem["request_id"],
        headers["x-request-id"].to_str().unwrap(),
        "errors carry the request id too"
    );
}

#[tokio::test]
async fn wrong_method_is_405_with_allow_unless_a_broader_route_takes_it() {
    let b = echo("b").await;
    let yaml = format!("clusters:\n  b: {{ targets: [\"{b}\"] }}\nroutes:\n  - {{ name: r, match: {{ path: \"/orders/{{id}}\", methods: [GET, DELETE] }}, cluster: b, public: true }}\n");
    let only = start(&yaml).await;
    let (status, headers, body) = send_full(
        &client(),
        http::Request::post(only.url("/orders/1"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(status, 405, "{body}");
    assert_eq!(headers["allow"], "DELETE, GET");
    assert_eq!(headers["content-type"], "application/problem+json");
    // With a catch-all prefix route, the method-restricted route is not the only candidate.
    let gw = two_clusters().await;
    let (status, _, body) = send_full(
        &client(),
        http::Request::post(gw.url("/only-get")).body(Full::default()).unwrap(),
    )
    .await;
    assert_eq!((status, echoed(&body)["upstream"].as_str()), (200, Some("a")));
}

#[tokio::test]
async fn http2_prior_knowledge_is_routed_like_http1() {
    let gw = two_clusters().await;
    let request = http::Request::get(gw.url("/orders/9")).body(Full::default()).unwrap();
    let (status, _, body) = send_full(&h2_client(), request).await;
    assert_eq!(status, 200);
    let echo = echoed(&body);
    assert_eq!(echo["upstream"], "b");
    assert_eq!(echo["path"], "/orders/9");
    assert_eq!(echo["version"], "HTTP/1.1", "upstream spoke HTTP/1.1");
    assert!(
        echo["headers"]["host"][0].as_str().unwrap().starts_with("127.0.0.1:"),
        "Host is set from :authority"
    );
}

#[tokio::test]
async fn upstream_sees_exactly_the_normalized_path_and_query() {
    let gw = two_clusters().await;
    let cases = [
        ("/x/../orders/%37", "/orders/7", "b"),
        ("//orders//7", "/orders/7", "b"),
        ("/./%6Frders/7", "/orders/7", "b"),
        ("/a%20b/%7e", "/a%20b/~", "a"),
    ];
    for (raw_path, normalized, upstream) in cases {
        let response = raw(
            gw.address,
            format!("GET {raw_path}?q=1&r=%2F HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(status_of(&response), 200, "{raw_path}: {response}");
        let body = &response[response.find("\r\n\r\n").unwrap() + 4..];
        let echo = echoed(body);
        assert_eq!(echo["path"], normalized, "{raw_path}");
        assert_eq!(echo["query"], "q=1&r=%2F", "query passes unchanged");
        assert_eq!(echo["upstream"], upstream, "{raw_path}");
    }
}

#[tokio::test]
async fn request_id_is_generated_or_kept_and_returned() {
    let gw = two_clusters().await;
    let kept = http::Request::get(gw.url("/"))
        .header("x-request-id", "abc-123")
        .body(Full::default())
        .unwrap();
    let (_, headers, body) = send_full(&client(), kept).await;
    assert_eq!(headers["x-request-id"], "abc-123");
    assert_eq!(echoed(&body)["headers"]["x-request-id"][0], "abc-123");
    let hostile = http::Request::get(gw.url("/"))
        .header("x-request-id", "x\"}{\"injected")
        .body(Full::default())
        .unwrap();
    let (_, headers, body) = send_full(&client(), hostile).await;
    let generated = headers["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(generated.len(), 36, "a malformed id is replaced by a UUID");
    assert_eq!(echoed(&body)["headers"]["x-request-id"][0], generated.as_str());
}

#[tokio::test]
async fn spoofed_forwarding_headers_are_replaced_and_hop_by_hop_removed() {
    let gw = two_clusters().await;
    let request = http::Request::get(gw.url("/"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-real-ip", "6.6.6.6")
        .header("forwarded", "for=6.6.6.6")
        .header("x-forwarded-proto", "https")
        .header("connection", "x-internal-secret")
        .header("x-internal-secret", "leak")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .body(Full::default())
        .unwrap();
    let (_, _, body) = send_full(&client(), request).await;
    let headers = &echoed(&body)["headers"];
    assert_eq!(headers["x-forwarded-for"][0], "127.0.0.1");
    assert_eq!(headers["x-real-ip"][0], "127.0.0.1");
    assert_eq!(headers["forwarded"][0], "for=127.0.0.1;proto=http");
    assert_eq!(headers["x-forwarded-proto"][0], "http");
    for removed in ["x-internal-secret", "keep-alive", "proxy-authorization", "connection"] {
        assert!(
            headers.get(removed).is_none(),
            "{removed} must not reach the upstream: {headers}"
        );
    }
}

#[tokio::test]
async fn trusted_proxy_chain_is_extended_not_replaced() {
    let a = echo("a").await;
    let yaml = format!("trusted_proxies: [\"127.0.0.0/8\"]\n{}", one_cluster(&[a], ""));
    let gw = start(&yaml).await;
    let request = http::Request::get(gw.url("/"))
        .header("x-forwarded-for", "198.51.100.7")
        .body(Full::default())
        .unwrap();
    let (_, _, body) = send_full(&client(), request).await;
    let headers = &echoed(&body)["headers"];
    assert_eq!(headers["x-forwarded-for"][0], "198.51.100.7, 127.0.0.1");
    assert_eq!(
        headers["x-real-ip"][0], "198.51.100.7",
        "client ip comes from the trusted chain"
    );
}

#[tokio::test]
async fn access_log_records_each_request_as_json() {
    let a = echo("a").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let yaml = format!("access_log:\n  path: {}\n{}", log.display(), one_cluster(&[a], ""));
    let gw = start(&yaml).await;
    let request = http::Request::get(gw.url("/logged/path?token=secret"))
        .header("authorization", "Bearer sekrit")
        .body(Full::default())
        .unwrap();
    let (status, headers, _) = send_full(&client(), request).await;
    assert_eq!(status, 200);
    let request_id = headers["x-request-id"].to_str().unwrap().to_string();
    let post = http::Request::post(gw.url("/logged/upload"))
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap();
    assert_eq!(send(post).await.0, 200);
    let mut line = String::new();
    for _ in 0..100 {
        line = std::fs::read_to_string(&log).unwrap_or_default();
        if line.lines().count() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let upload: serde_json::Value = serde_json::from_str(line.lines().nth(1).expect("a second line")).unwrap();
    assert_eq!(upload["bytes_in"], 5, "the request body is counted: {upload}");
    let entry: serde_json::Value = serde_json::from_str(line.lines().next().expect("a line")).unwrap();
    assert_eq!(entry["bytes_in"], 0);
    assert_eq!(entry["request_id"], request_id.as_str());
    assert_eq!(entry["path"], "/logged/path");
    assert_eq!(entry["route"], "all");
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["client_ip"], "127.0.0.1");
    assert!(entry["bytes_out"].as_u64().unwrap() > 0);
    assert_eq!(entry["upstream"], a.to_string());
    for field in ["time", "duration_ms", "upstream_ms", "method", "bytes_in"] {
        assert!(entry.get(field).is_some(), "{field} missing: {entry}");
    }
    assert!(
        !line.contains("secret") && !line.contains("sekrit"),
        "no query strings or credentials in the access log"
    );
}

#[tokio::test]
async fn metrics_count_requests_by_route_method_and_status_class() {
    let gw = two_clusters().await;
    for _ in 0..3 {
        get(&gw.url("/orders/1")).await;
    }
    get(&gw.url("/x")).await;
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(r#"palisade_requests_total{route="order",method="GET",status_class="2xx"} 3"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"palisade_request_duration_seconds_count{route="order"} 3"#));
    assert!(metrics.contains("palisade_open_connections"));
    assert!(metrics.contains(r#"palisade_upstream_healthy{cluster="a""#));
    assert!(!metrics.contains("127.0.0.1\",method"), "no client addresses as labels");
}

/// Route series are bounded: a label appears only for what it counted (not all methods × status
/// classes up front), routes naming one `metrics_group` share its series, and routes past
/// `metrics.max_route_labels` are counted under `route="other"` — which `check-config` warns about.
#[tokio::test]
async fn route_series_are_created_on_use_grouped_and_capped() {
    let a = echo("a").await;
    let yaml = format!(
        "metrics: {{ max_route_labels: 2 }}
clusters: {{ a: {{ targets: [\"{a}\"] }} }}
routes:
  - {{ name: orders-list, match: {{ path: /orders }}, cluster: a, public: true, metrics_group: orders }}
  - {{ name: orders-one, match: {{ path: '/orders/{{id}}' }}, cluster: a, public: true, metrics_group: orders }}
  - {{ name: users, match: {{ prefix: /users/ }}, cluster: a, public: true }}
  - {{ name: reports, match: {{ prefix: /reports/ }}, cluster: a, public: true }}
  - {{ name: billing, match: {{ prefix: /billing/ }}, cluster: a, public: true }}
"
    );
    let gw = start(&yaml).await;
    let before = gw.metrics().await;
    assert!(
        !before.contains("palisade_requests_total{"),
        "no route series before any request:\n{before}"
    );
    for path in ["/orders", "/orders/7", "/users/1", "/reports/1", "/billing/1"] {
        assert_eq!(get(&gw.url(path)).await.0, 200, "{path}");
    }
    let metrics = gw.metrics().await;
    for expected in [
        r#"palisade_requests_total{route="orders",method="GET",status_class="2xx"} 2"#,
        r#"palisade_requests_total{route="users",method="GET",status_class="2xx"} 1"#,
        r#"palisade_requests_total{route="other",method="GET",status_class="2xx"} 2"#,
        r#"palisade_request_duration_seconds_count{route="other"} 2"#,
    ] {
        assert!(metrics.contains(expected), "missing {expected} in:\n{metrics}");
    }
    for absent in [
        "orders-list",
        "reports",
        "billing",
        r#"method="POST""#,
        r#"status_class="5xx""#,
    ] {
        assert!(!metrics.contains(absent), "{absent} is not a series:\n{metrics}");
    }
    let config = palisade_core::parse_str("gateway.yaml", &with_listeners(&yaml), None).unwrap();
    let warnings = palisade_core::warnings(&config, "gateway.yaml");
    let warnings: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("2 routes are past metrics.max_route_labels (2)")),
        "{warnings:?}"
    );
}
