//! Traffic protection on real sockets: rate limits by each key, draft RateLimit headers, 429 bodies,
//! the in-flight limit, IP rules (global, per route, IPv6, IPv4-mapped, reloadable files) and the
//! accuracy of a limit under steady overload.
//!
//! Clients are told apart by `X-Forwarded-For`, which the gateway believes only because these
//! configs trust 127.0.0.1 as a proxy; a test checks that it is ignored otherwise.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;

use support::{call, Reply};

async fn from(url: &str, client_ip: &str) -> Reply {
    call(url, &[("x-forwarded-for", client_ip)]).await
}

/// A gateway with one public catch-all route `api` to a fresh echo, with `route_extra` added to the
/// route and `global` before the clusters.
async fn one_route(global: &str, route_extra: &str) -> support::Running {
    let echo = support::echo("api").await;
    support::start(&format!(
        "{global}clusters:\n  echo: {{ targets: [\"{echo}\"] }}\nroutes:\n  - name: api\n    match: {{ prefix: / }}\n    cluster: echo\n    public: true\n{route_extra}"
    ))
    .await
}

#[tokio::test]
async fn per_client_limits_answer_429_with_retry_after_and_draft_headers() {
    let limit = "    rate_limits:\n      - { name: per-client, rate: 1/min, burst: 3, key: client_ip }\n";
    let gw = one_route("trusted_proxies: [127.0.0.1]\n", limit).await;
    let url = gw.url("/api/items");
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let reply = from(&url, "198.51.100.1").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.header("ratelimit-policy"), "\"per-client\";q=1;w=60");
        remaining.push(reply.header("ratelimit").to_string());
    }
    assert!(remaining[0].starts_with("\"per-client\";r=2;t="), "{remaining:?}");
    assert!(remaining[2].starts_with("\"per-client\";r=0;t="), "{remaining:?}");

    let limited = from(&url, "198.51.100.1").await;
    assert_eq!(limited.status, 429);
    let retry_after: u64 = limited.header("retry-after").parse().expect("Retry-After seconds");
    assert!((55..=60).contains(&retry_after), "one interval of 1/min: {retry_after}");
    assert!(limited.header("content-type").starts_with("application/problem+json"));
    let problem: Value = serde_json::from_str(&limited.body).expect("problem+json");
    assert_eq!(problem["status"], 429);
    assert!(limited.header("ratelimit").starts_with("\"per-client\";r=0;t="));

    // Another client has its own budget.
    assert_eq!(from(&url, "198.51.100.2").await.status, 200);
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(
            r#"palisade_rate_limit_decisions_total{route="api",limit="per-client",outcome="limited",source="local"} 1"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn route_header_subject_and_api_key_limits_each_count_their_own_key() {
    let echo = support::echo("api").await;
    let (key_a, hash_a) = palisade_auth::apikey::generate();
    let (key_b, hash_b) = palisade_auth::apikey::generate();
    let gw = support::start(&format!(
        r#"trusted_proxies: [127.0.0.1]
authentication:
  api_keys:
    keys:
      - {{ name: team-a, hash: "{hash_a}" }}
      - {{ name: team-b, hash: "{hash_b}" }}
clusters:
  echo: {{ targets: ["{echo}"] }}
routes:
  - name: shared
    match: {{ prefix: /shared }}
    cluster: echo
    public: true
    rate_limits:
      - {{ name: whole-route, rate: 1/min, burst: 2, key: route }}
  - name: tenants
    match: {{ prefix: /tenants }}
    cluster: echo
    public: true
    rate_limits:
      - {{ name: per-tenant, rate: 1/min, burst: 1, key: "header:X-Tenant" }}
  - name: keyed
    match: {{ prefix: /keyed }}
    cluster: echo
    authentication: [api_key]
    authorization: {{ allow: authenticated }}
    rate_limits:
      - {{ name: per-key, rate: 1/min, burst: 1, key: api_key }}
      - {{ name: per-subject, rate: 1/min, burst: 5, key: subject }}
"#
    ))
    .await;
    // `route`: every client draws from one budget.
    let shared = gw.url("/shared");
    assert_eq!(from(&shared, "198.51.100.1").await.status, 200);
    assert_eq!(from(&shared, "198.51.100.2").await.status, 200);
    assert_eq!(from(&shared, "198.51.100.3").await.status, 429);

    // `header:X-Tenant`: one budget per value; requests without it share one.
    let tenants = gw.url("/tenants");
    assert_eq!(call(&tenants, &[("x-tenant", "acme")]).await.status, 200);
    assert_eq!(call(&tenants, &[("x-tenant", "acme")]).await.status, 429);
    assert_eq!(call(&tenants, &[("x-tenant", "globex")]).await.status, 200);
    assert_eq!(call(&tenants, &[]).await.status, 200);
    assert_eq!(
        call(&tenants, &[]).await.status,
        429,
        "no header is not a way around the limit"
    );

    // `api_key` (and `subject`): by who is calling, wherever they call from.
    let keyed = gw.url("/keyed");
    let reply = call(&keyed, &[("x-api-key", &key_a), ("x-forwarded-for", "198.51.100.1")]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.header("ratelimit-policy"),
        "\"per-key\";q=1;w=60, \"per-subject\";q=1;w=60"
    );
    assert_eq!(
        call(&keyed, &[("x-api-key", &key_a), ("x-forwarded-for", "198.51.100.9")])
            .await
            .status,
        429
    );
    assert_eq!(call(&keyed, &[("x-api-key", &key_b)]).await.status, 200);
    // Unauthenticated requests are refused before they can use anyone's budget.
    assert_eq!(call(&keyed, &[]).await.status, 401);
}

#[tokio::test]
async fn forwarded_addresses_from_untrusted_peers_do_not_buy_a_new_budget() {
    let limit = "    rate_limits:\n      - { name: per-client, rate: 1/min, burst: 1, key: client_ip }\n";
    let gw = one_route("", limit).await;
    let url = gw.url("/");
    assert_eq!(from(&url, "198.51.100.1").await.status, 200);
    assert_eq!(from(&url, "198.51.100.2").await.status, 429);
}

#[tokio::test]
async fn the_in_flight_limit_refuses_with_503_and_frees_slots_when_responses_end() {
    let held = support::HeldUpstream::start().await;
    let gw = support::start(&format!(
        "clusters:\n  echo: {{ targets: [\"{}\"] }}\nroutes:\n  - name: api\n    match: {{ prefix: / }}\n    cluster: echo\n    public: true\n    max_in_flight: 2\n",
        held.address
    ))
    .await;
    let url = gw.url("/");
    let slow = |url: String| async move { call(&url, &[]).await.status };
    let first = tokio::spawn(slow(url.clone()));
    let second = tokio::spawn(slow(url.clone()));
    held.arrived(2).await;
    let refused = call(&url, &[]).await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("retry-after"), "1");
    held.release();
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(second.await.unwrap(), 200);
    assert_eq!(call(&url, &[]).await.status, 200, "slots are free again");
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(r#"palisade_traffic_refusals_total{route="api",reason="too_many_in_flight"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn ip_rules_deny_globally_and_per_route_for_v4_v6_and_mapped_addresses() {
    let echo = support::echo("api").await;
    let dir = tempfile::tempdir().unwrap();
    let deny_file = dir.path().join("deny.txt");
    std::fs::write(&deny_file, "# known bad\n203.0.113.0/24\n").unwrap();
    let yaml = format!(
        r#"trusted_proxies: [127.0.0.1]
ip_rules:
  deny: [192.0.2.0/24, "2001:db8:bad::/48"]
  deny_files: [{deny}]
clusters:
  echo: {{ targets: ["{echo}"] }}
routes:
  - name: internal
    match: {{ prefix: /internal }}
    cluster: echo
    public: true
    ip_rules:
      allow: [10.0.0.0/8, "fd00::/8"]
  - name: open
    match: {{ prefix: / }}
    cluster: echo
    public: true
"#,
        deny = deny_file.display()
    );
    let gw = support::start(&yaml).await;
    let open = gw.url("/anything");
    assert_eq!(from(&open, "198.51.100.1").await.status, 200);
    let denied = from(&open, "192.0.2.55").await;
    assert_eq!(denied.status, 403);
    assert!(denied.body.contains("ip-denied"), "{}", denied.body);
    assert!(!denied.body.contains("192.0.2"), "the body does not echo the address");
    assert_eq!(
        from(&open, "::ffff:192.0.2.55").await.status,
        403,
        "IPv4-mapped IPv6 is the same client"
    );
    assert_eq!(from(&open, "2001:db8:bad:1::7").await.status, 403);
    assert_eq!(from(&open, "2001:db8:900d::7").await.status, 200);
    assert_eq!(from(&open, "203.0.113.9").await.status, 403, "from the list file");
    // Global rules apply before routing: a blocked client cannot even map which paths exist.
    assert_eq!(from(&gw.url("/internal/x"), "192.0.2.55").await.status, 403);

    let internal = gw.url("/internal/x");
    assert_eq!(from(&internal, "10.1.2.3").await.status, 200);
    assert_eq!(from(&internal, "::ffff:10.1.2.3").await.status, 200);
    assert_eq!(from(&internal, "fd00::1").await.status, 200);
    assert_eq!(from(&internal, "198.51.100.1").await.status, 403);

    // The list file is reloaded when it changes.
    std::fs::write(&deny_file, "203.0.113.0/24\n198.51.100.0/24\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while from(&open, "198.51.100.1").await.status != 403 {
        assert!(Instant::now() < deadline, "the deny file was not reloaded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(r#"palisade_traffic_refusals_total{route="none",reason="ip_denied"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_bad_line_in_an_ip_list_is_a_config_error_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("allow.txt");
    std::fs::write(&list, "10.0.0.0/8\n\n  10.0.0.300\n").unwrap();
    let yaml = format!(
        "ip_rules:\n  allow_files: [{}]\nclusters:\n  echo: {{ targets: [\"127.0.0.1:9\"] }}\nroutes:\n  - name: all\n    match: {{ prefix: / }}\n    cluster: echo\n    public: true\n",
        list.display()
    );
    let error = support::config_errors(dir.path(), &yaml).await;
    assert!(error.contains("allow.txt:3:3"), "{error}");
}

/// Under a steady 3× overload the accepted rate converges on the configured one. The tolerance is
/// generous (CI machines are noisy); bench/ reports the precise figure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_steady_overload_the_accepted_rate_matches_the_limit() {
    let limit = "    rate_limits:\n      - { name: whole-route, rate: 50/s, burst: 5, key: route }\n";
    let gw = one_route("", limit).await;
    let url = gw.url("/");
    let run_for = Duration::from_secs(3);
    let started = Instant::now();
    let mut accepted = 0u32;
    let mut sent = 0u32;
    // 150 requests/s: one every ~6.7 ms.
    let mut tick = tokio::time::interval(Duration::from_micros(6_667));
    while started.elapsed() < run_for {
        tick.tick().await;
        sent += 1;
        if call(&url, &[]).await.status == 200 {
            accepted += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let expected = 50.0 * elapsed + 5.0;
    let ratio = f64::from(accepted) / expected;
    assert!(f64::from(sent) > 2.0 * expected, "the test must overload: sent {sent}");
    assert!(
        (0.85..=1.15).contains(&ratio),
        "accepted {accepted}, expected {expected:.0}"
    );
}
