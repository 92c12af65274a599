//! What every response tells the client, on real sockets: security headers (and upstream headers
//! that advertise internals removed), CORS preflights and actual requests, and the API lifecycle
//! (deprecated routes still served with RFC 9745/8594 headers, retired routes 410).

mod support;

use serde_json::Value;

async fn call(method: &str, url: &str, headers: &[(&str, &str)]) -> (u16, http::HeaderMap, String) {
    let reply = support::call_with(method, url, headers).await;
    (reply.status, reply.headers, reply.body)
}

fn config(echo: std::net::SocketAddr, key_hash: &str) -> String {
    format!(
        r#"security_headers:
  content_security_policy: "default-src 'none'"
authentication:
  api_keys:
    keys:
      - {{ name: mobile-app, hash: "{key_hash}" }}
clusters:
  echo: {{ targets: ["{echo}"] }}
routes:
  - name: api
    match: {{ prefix: /api, methods: [GET, PUT] }}
    cluster: echo
    authentication: [api_key]
    authorization: {{ allow: authenticated }}
    cors:
      allow_origins: [https://app.example.com]
      allow_headers: [x-api-key, content-type]
      expose_headers: [ratelimit]
      allow_credentials: true
      max_age: 5m
  - name: orders-v1
    match: {{ prefix: /v1/orders }}
    cluster: echo
    authentication: [api_key]
    authorization: {{ allow: authenticated }}
    deprecated:
      since: 2025-01-01
      sunset: 2026-06-30T00:00:00Z
      successor: /v2/orders
  - name: legacy
    match: {{ prefix: /v0 }}
    cluster: echo
    public: true
    retired: {{ successor: /v2/orders }}
  - name: open
    match: {{ prefix: / }}
    cluster: echo
    public: true
"#
    )
}

#[tokio::test]
async fn security_headers_are_added_and_upstream_banners_removed() {
    let echo = support::echo("app").await;
    let (_, hash) = palisade_auth::apikey::generate();
    let gw = support::start(&config(echo, &hash)).await;
    for path in ["/anything", "/missing-route/../v0"] {
        let (_, headers, _) = call("GET", &gw.url(path), &[]).await;
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["referrer-policy"], "strict-origin-when-cross-origin");
        assert_eq!(headers["content-security-policy"], "default-src 'none'");
        assert!(
            headers.get("strict-transport-security").is_none(),
            "no HSTS on plain HTTP"
        );
    }
    let (status, headers, _) = call("GET", &gw.url("/anything"), &[]).await;
    assert_eq!(status, 200);
    assert!(headers.get("server").is_none(), "the upstream's Server is removed");
    assert!(headers.get("x-powered-by").is_none());
}

#[tokio::test]
async fn cors_preflights_are_answered_at_the_gateway_from_the_allowlist() {
    let echo = support::echo("app").await;
    let (key, hash) = palisade_auth::apikey::generate();
    let gw = support::start(&config(echo, &hash)).await;
    let url = gw.url("/api/items");
    let preflight = |origin: &'static str, method: &'static str, headers: &'static str| {
        let url = url.clone();
        async move {
            let mut asked = vec![("origin", origin), ("access-control-request-method", method)];
            if !headers.is_empty() {
                asked.push(("access-control-request-headers", headers));
            }
            call("OPTIONS", &url, &asked).await
        }
    };
    // Answered without credentials (browsers send none on a preflight) and without the upstream.
    let (status, headers, body) = preflight("https://app.example.com", "PUT", "x-api-key, content-type").await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(headers["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(headers["access-control-allow-credentials"], "true");
    assert_eq!(headers["access-control-allow-methods"], "GET, PUT");
    assert_eq!(headers["access-control-allow-headers"], "x-api-key, content-type");
    assert_eq!(headers["access-control-max-age"], "300");
    assert_eq!(
        headers.get_all("vary").iter().count(),
        1,
        "one Vary: Origin on a preflight"
    );
    assert!(headers.get("access-control-expose-headers").is_none());
    for (origin, method, asked) in [
        ("https://evil.example", "GET", ""),
        ("null", "GET", ""),
        ("https://app.example.com", "GET", "x-internal-debug"),
    ] {
        let (status, headers, _) = preflight(origin, method, asked).await;
        assert_eq!(status, 403, "{origin} {method} {asked}");
        assert!(headers.get("access-control-allow-origin").is_none());
    }
    // DELETE /api/items would reach the catch-all route, which has no CORS: the preflight goes
    // there as a plain OPTIONS and comes back without CORS headers, so the browser refuses.
    let (_, headers, _) = preflight("https://app.example.com", "DELETE", "").await;
    assert!(headers.get("access-control-allow-origin").is_none());

    // Actual requests: the allowed origin can read the response (including a 401), others cannot.
    let (status, headers, _) = call(
        "GET",
        &url,
        &[("origin", "https://app.example.com"), ("x-api-key", &key)],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(headers["access-control-expose-headers"], "ratelimit");
    assert_eq!(headers["vary"], "Origin");
    let (status, headers, _) = call("GET", &url, &[("origin", "https://app.example.com")]).await;
    assert_eq!(status, 401);
    assert_eq!(headers["access-control-allow-origin"], "https://app.example.com");
    let (_, headers, _) = call("GET", &url, &[("origin", "https://evil.example"), ("x-api-key", &key)]).await;
    assert!(headers.get("access-control-allow-origin").is_none());
    // An OPTIONS that is not a preflight is routed as itself: here to the catch-all route, whose
    // upstream answers it.
    let (status, _, body) = call("OPTIONS", &url, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(support::echoed(&body)["method"], "OPTIONS");
}

#[tokio::test]
async fn deprecated_routes_say_so_and_retired_routes_are_gone() {
    let echo = support::echo("app").await;
    let (key, hash) = palisade_auth::apikey::generate();
    let gw = support::start(&config(echo, &hash)).await;
    let (status, headers, _) = call("GET", &gw.url("/v1/orders/7"), &[("x-api-key", &key)]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["deprecation"], "@1735689600");
    assert_eq!(headers["sunset"], "Tue, 30 Jun 2026 00:00:00 GMT");
    assert_eq!(headers["link"], "</v2/orders>; rel=\"successor-version\"");
    let (status, headers, _) = call("GET", &gw.url("/anything"), &[]).await;
    assert_eq!(status, 200);
    assert!(headers.get("deprecation").is_none());

    let (status, headers, body) = call("GET", &gw.url("/v0/orders"), &[]).await;
    assert_eq!(status, 410);
    assert_eq!(headers["link"], "</v2/orders>; rel=\"successor-version\"");
    let problem: Value = serde_json::from_str(&body).expect("problem+json");
    assert!(
        problem["detail"].as_str().unwrap_or("").contains("/v2/orders"),
        "{body}"
    );

    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(r#"palisade_deprecated_calls_total{route="orders-v1",principal="mobile-app"} 1"#),
        "{metrics}"
    );
}
