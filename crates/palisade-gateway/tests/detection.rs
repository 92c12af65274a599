//! Anomaly detection on a real gateway: baseline traffic from many clients with injected attacks,
//! reporting how long each took to alert (the evaluation harness of docs/observability.md); the
//! automatic block applies, expires and is audited; the admin API lists and revokes responses and
//! refuses callers without the token. Clients are told apart with `X-Forwarded-For` from the
//! trusted loopback peer.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use serde_json::Value;

const ADMIN_TOKEN: &str = "adm_4f1d0c9e8b7a6f5e4d3c2b1a";

fn set_token() {
    std::env::set_var("PALISADE_TEST_ADMIN_TOKEN", ADMIN_TOKEN);
}

async fn admin(
    gateway: &support::Running,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> support::Reply {
    let url = format!("http://{}{path}", gateway.gateway.admin_addr());
    let mut request = http::Request::builder().method(method).uri(url);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let (status, headers, body) = support::send_full(&support::client(), request).await;
    support::Reply { status, headers, body }
}

async fn alerts(gateway: &support::Running) -> Value {
    let reply = admin(gateway, "GET", "/alerts", Some(ADMIN_TOKEN), "").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    serde_json::from_str(&reply.body).unwrap()
}

/// Polls `/alerts` until an alert of `detector` about `subject` is open; returns when it was seen.
async fn wait_for_alert(gateway: &support::Running, detector: &str, subject: &str, limit: Duration) -> Option<Instant> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let view = alerts(gateway).await;
        let open = view["open"].as_array().cloned().unwrap_or_default();
        if open
            .iter()
            .any(|a| a["detector"] == detector && a["subject"] == subject)
        {
            return Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

async fn from(gateway: &support::Running, client: &str, path: &str, extra: &[(&str, &str)]) -> u16 {
    let mut headers = vec![("x-forwarded-for", client)];
    headers.extend_from_slice(extra);
    support::call(&gateway.url(path), &headers).await.status
}

fn events(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

fn config(echo: SocketAddr, audit: &std::path::Path, hook: SocketAddr, key_hash: &str) -> String {
    format!(
        "trusted_proxies: [127.0.0.1]
admin:
  address: 127.0.0.1:0
  token: ${{PALISADE_TEST_ADMIN_TOKEN}}
audit:
  path: {audit}
authentication:
  api_keys:
    keys: [{{ name: reporting, hash: \"{hash}\" }}]
detection:
  enabled: true
  clear_after: 2s
  rate_spike: {{ warm_up: 5s, min_requests: 40 }}
  auth_failures:
    threshold: 20
    respond: {{ action: block, ttl: 3s }}
  scanning:
    threshold: 50
    respond: {{ action: limit, rate: 1/min, ttl: 30s }}
  webhook: {{ url: \"http://{hook}/hooks/palisade\" }}
clusters:
  echo: {{ targets: [\"{echo}\"] }}
routes:
  - name: api
    match: {{ prefix: /api }}
    cluster: echo
    public: true
  - name: login
    match: {{ path: /login }}
    cluster: echo
    authentication: [api_key]
    authorization: {{ allow: authenticated }}
",
        audit = audit.display(),
        hash = key_hash,
    )
}

/// Baseline traffic: `per_second` requests a second to /api from ten clients, a few of them to
/// unknown paths, until `stop`.
fn baseline(base: String, per_second: Arc<AtomicUsize>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let client = support::client();
        let mut sent = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let rate = per_second.load(Ordering::Relaxed);
            for n in 0..rate {
                let path = if n % 10 == 9 {
                    format!("/missing/{}", n % 3)
                } else {
                    "/api/items".into()
                };
                let request = http::Request::get(format!("{base}{path}"))
                    .header("x-forwarded-for", format!("10.0.0.{}", n % 10 + 1))
                    .body(Full::default())
                    .unwrap();
                let _ = client.request(request).await;
                sent += 1;
            }
            tokio::time::sleep(Duration::from_secs(1).saturating_sub(started.elapsed())).await;
        }
        sent
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_attacks_alert_and_a_steady_baseline_does_not() {
    set_token();
    let echo = support::echo("api").await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let (hook, notifications) = support::json_receiver().await;
    let gateway = support::start(&config(echo, &audit, hook, &palisade_auth::apikey::generate().1)).await;

    let rate = Arc::new(AtomicUsize::new(20));
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = baseline(gateway.base.clone(), rate.clone(), stop.clone());
    // Past the rate detector's warm-up, with normal traffic only.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(
        alerts(&gateway).await["open"].as_array().unwrap().is_empty(),
        "baseline alone raised an alert"
    );

    // 1. Credential stuffing: 20 wrong API keys from one client.
    let stuffer = "203.0.113.5";
    for n in 0..20 {
        let key = format!("pk_wrong_{n}");
        assert_eq!(from(&gateway, stuffer, "/login", &[("x-api-key", &key)]).await, 401);
    }
    let twentieth = Instant::now();
    let seen = wait_for_alert(&gateway, "auth_failures", stuffer, Duration::from_secs(5)).await;
    let auth_delay = seen.expect("20 failed logins alert").duration_since(twentieth);
    // The block is taken in the same evaluation as the alert: within a second of it.
    let mut blocked_after = None;
    while blocked_after.is_none() && Instant::now() < seen.unwrap() + Duration::from_secs(1) {
        if from(&gateway, stuffer, "/api/items", &[]).await == 403 {
            blocked_after = Some(seen.unwrap().elapsed());
        }
    }
    assert!(blocked_after.is_some(), "blocked within 1 s of the alert");
    assert_eq!(
        from(&gateway, "10.0.0.1", "/api/items", &[]).await,
        200,
        "other clients pass"
    );
    let responses: Value =
        serde_json::from_str(&admin(&gateway, "GET", "/responses", Some(ADMIN_TOKEN), "").await.body).unwrap();
    let block = &responses["responses"][0];
    assert_eq!(
        (block["ip"].as_str(), block["action"].as_str()),
        (Some(stuffer), Some("block"))
    );
    assert_eq!(block["source"], "detector:auth_failures");
    // The block expires on time (3 s ttl, expired within a second of that).
    let expires_at = block["expires_at"].as_u64().unwrap();
    let mut lifted_at = None;
    let give_up = Instant::now() + Duration::from_secs(6);
    while lifted_at.is_none() && Instant::now() < give_up {
        if from(&gateway, stuffer, "/api/items", &[]).await == 200 {
            lifted_at = Some(palisade_gateway::pipeline::responses::now_secs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lifted_at = lifted_at.expect("the block expires");
    assert!(
        lifted_at >= expires_at && lifted_at <= expires_at + 1,
        "lifted at {lifted_at}, expiry {expires_at}"
    );

    // 2. A scan of 64 distinct unknown paths from one client (the threshold is 50; the distinct count
    // is an estimate a few paths either side of the truth, so the scan goes a little past it).
    let scanner = "203.0.113.9";
    // Should an evaluation fall inside the scan, its last requests meet the limit (1/min) already.
    let mut limited_during_scan = false;
    for n in 0..64 {
        let status = from(&gateway, scanner, &format!("/.git/objects/{n:02x}"), &[]).await;
        limited_during_scan |= status == 429;
        assert!(status == 404 || (n >= 40 && status == 429), "path {n}: {status}");
    }
    let fiftieth = Instant::now();
    let seen = wait_for_alert(&gateway, "scanning", scanner, Duration::from_secs(5)).await;
    let scan_delay = seen.expect("a 64-path scan alerts").duration_since(fiftieth);
    // The scanner is now held to 1/min: one more request passes (unless the scan used it), the next
    // is refused.
    let statuses = [
        from(&gateway, scanner, "/api/x", &[]).await,
        from(&gateway, scanner, "/api/x", &[]).await,
    ];
    let first = if limited_during_scan { 429 } else { 200 };
    assert_eq!(statuses, [first, 429]);

    // 3. A 10x rate spike on the route.
    rate.store(200, Ordering::Relaxed);
    let spike_start = Instant::now();
    let seen = wait_for_alert(&gateway, "rate_spike", "api", Duration::from_secs(10)).await;
    let spike_delay = seen
        .expect("a 10x spike alerts within 10 s")
        .duration_since(spike_start);
    rate.store(20, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let sent = traffic.await.unwrap();

    let view = alerts(&gateway).await;
    let all: Vec<Value> = [
        view["open"].as_array().unwrap().clone(),
        view["recent"].as_array().unwrap().clone(),
    ]
    .concat();
    let expected = [("auth_failures", stuffer), ("scanning", scanner), ("rate_spike", "api")];
    let false_alerts: Vec<&Value> = all
        .iter()
        .filter(|a| !expected.iter().any(|(d, s)| a["detector"] == *d && a["subject"] == *s))
        .collect();
    eprintln!(
        "evaluation on a real gateway ({sent} baseline requests): 20 failed logins alerted {auth_delay:?} after the 20th, \
         blocked {:?} after the alert; 64-path scan alerted {scan_delay:?} after the 64th; 10x spike alerted after {spike_delay:?}; \
         false alerts: {}",
        blocked_after.unwrap(),
        false_alerts.len()
    );
    assert!(false_alerts.is_empty(), "false alerts: {false_alerts:?}");

    // The webhook got each alert, the first with the block it caused.
    support::eventually("three opened alerts reach the webhook", || async {
        let notified = notifications.lock().unwrap();
        notified.iter().filter(|(_, body)| body["change"] == "opened").count() >= 3
    })
    .await;
    let notified: Vec<Value> = notifications
        .lock()
        .unwrap()
        .iter()
        .map(|(_, body)| body.clone())
        .collect();
    let opened: Vec<&Value> = notified.iter().filter(|n| n["change"] == "opened").collect();
    assert!(opened.len() >= 3, "{notified:?}");
    let stuffing = opened
        .iter()
        .find(|n| n["detector"] == "auth_failures")
        .expect("auth alert notified");
    assert_eq!(stuffing["response"]["action"], "block");

    // And the audit log has the alerts and the response's life, as OCSF findings.
    let recorded = events(&audit);
    let kinds = |kind: &str| recorded.iter().filter(|e| e["unmapped"]["event"] == kind).count();
    assert!(kinds("alert_opened") >= 3);
    assert_eq!(kinds("response_taken"), 2);
    assert!(kinds("response_lifted") >= 1);
    let opened = recorded
        .iter()
        .find(|e| e["unmapped"]["event"] == "alert_opened")
        .unwrap();
    assert_eq!(
        (opened["class_uid"].as_u64(), opened["activity_id"].as_u64()),
        (Some(2004), Some(1))
    );
    assert!(opened["finding_info"]["uid"].is_string() && opened["finding_info"]["types"][0].is_string());
    let metrics = gateway.metrics().await;
    assert!(metrics.contains("palisade_alerts_opened_total{detector=\"auth_failures\",severity=\"high\"} 1"));
    assert!(metrics.contains("palisade_anomaly_score{detector=\"rate_spike\"}"));
    assert!(metrics.contains("palisade_responses_taken_total{action=\"block\",source=\"detector\"} 1"));
}

#[tokio::test]
async fn operators_list_add_and_revoke_responses_with_the_admin_token_only() {
    set_token();
    let echo = support::echo("api").await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let (hook, _) = support::json_receiver().await;
    let (key, hash) = palisade_auth::apikey::generate();
    let gateway = support::start(&config(echo, &audit, hook, &hash)).await;
    let client = "198.51.100.7";

    // No token, a wrong token: refused, and nothing changed.
    let body = r#"{"ip": "198.51.100.7", "action": "block", "ttl": "10m", "reason": "ticket SEC-1"}"#;
    let missing = admin(&gateway, "POST", "/responses", None, body).await;
    assert_eq!(missing.status, 401);
    assert!(missing.header("www-authenticate").starts_with("Bearer"));
    let wrong = admin(&gateway, "POST", "/responses", Some("adm_guess"), body).await;
    assert_eq!(wrong.status, 401);
    assert_eq!(
        admin(&gateway, "GET", "/alerts", None, "").await.status,
        401,
        "reads need the token too"
    );
    assert_eq!(from(&gateway, client, "/api/a", &[]).await, 200);

    // Bad requests are refused with a reason.
    for bad in [
        r#"{"ip": "not-an-ip", "action": "block", "ttl": "10m"}"#,
        r#"{"ip": "198.51.100.7", "subject": "x", "action": "block", "ttl": "10m"}"#,
        r#"{"ip": "198.51.100.7", "action": "limit", "ttl": "10m"}"#,
        r#"{"ip": "198.51.100.7", "action": "block", "ttl": "30d"}"#,
        r#"{"ip": "198.51.100.7", "action": "block", "ttl": "10m", "extra": 1}"#,
    ] {
        let reply = admin(&gateway, "POST", "/responses", Some(ADMIN_TOKEN), bad).await;
        assert_eq!(reply.status, 400, "{bad}: {}", reply.body);
        assert!(reply.header("content-type").starts_with("application/problem+json"));
    }

    // A block by address, and one by principal.
    let created = admin(&gateway, "POST", "/responses", Some(ADMIN_TOKEN), body).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let created: Value = serde_json::from_str(&created.body).unwrap();
    let blocked = support::call(&gateway.url("/api/a"), &[("x-forwarded-for", client)]).await;
    assert_eq!(blocked.status, 403);
    assert!(blocked.body.contains("temporarily-blocked"), "{}", blocked.body);
    assert!(!blocked.body.contains("SEC-1"), "the reason is not shown to the client");
    assert_eq!(from(&gateway, "198.51.100.8", "/api/a", &[]).await, 200);

    // Responses survive a reload.
    gateway.gateway.reload().await.unwrap();
    assert_eq!(from(&gateway, "10.1.1.1", "/login", &[("x-api-key", &key)]).await, 200);
    let principal = r#"{"subject": "reporting", "action": "block", "ttl": "1h"}"#;
    let reply = admin(&gateway, "POST", "/responses", Some(ADMIN_TOKEN), principal).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let listed: Value =
        serde_json::from_str(&admin(&gateway, "GET", "/responses", Some(ADMIN_TOKEN), "").await.body).unwrap();
    assert_eq!(
        listed["responses"].as_array().unwrap().len(),
        2,
        "kept across the reload: {listed}"
    );
    let principal_blocked = from(&gateway, "10.1.1.1", "/login", &[("x-api-key", &key)]).await;

    // Revoked: the client passes again at once.
    let id = created["id"].as_str().unwrap();
    assert_eq!(
        admin(&gateway, "DELETE", &format!("/responses/{id}"), Some(ADMIN_TOKEN), "")
            .await
            .status,
        204
    );
    assert_eq!(
        admin(&gateway, "DELETE", &format!("/responses/{id}"), Some(ADMIN_TOKEN), "")
            .await
            .status,
        404
    );
    assert_eq!(from(&gateway, client, "/api/a", &[]).await, 200);

    support::eventually("the revocation reaches the audit log", || async {
        events(&audit)
            .iter()
            .any(|e| e["api"]["operation"] == "DELETE /responses/{id}")
    })
    .await;
    let recorded = events(&audit);
    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(
        !text.contains(ADMIN_TOKEN) && !text.contains("adm_guess") && !text.contains(&key),
        "no token in the audit log"
    );
    let refused = recorded
        .iter()
        .filter(|e| e["unmapped"]["event"] == "admin_refused")
        .count();
    assert!(refused >= 2 + 5, "missing/wrong token and bad bodies are audited");
    let actions: Vec<&Value> = recorded
        .iter()
        .filter(|e| e["unmapped"]["event"] == "admin_action")
        .collect();
    assert!(actions
        .iter()
        .any(|e| e["api"]["operation"] == "DELETE /responses/{id}" && e["class_uid"] == 6003 && e["activity_id"] == 4));
    assert!(recorded
        .iter()
        .any(|e| e["unmapped"]["event"] == "response_lifted" && e["status_detail"] == "revoked"));
    // The principal block held (checked last so that the subject's format is reported if it differs).
    assert_eq!(principal_blocked, 403, "a blocked principal is refused: {listed}");
}

#[tokio::test]
async fn without_an_admin_token_the_responses_api_is_off() {
    let echo = support::echo("api").await;
    let gateway = support::start(&support::one_cluster(&[echo], "")).await;
    let reply = admin(&gateway, "POST", "/responses", Some("anything"), "{}").await;
    assert_eq!(reply.status, 403);
    assert!(reply.body.contains("admin-api-disabled"));
    assert_eq!(admin(&gateway, "GET", "/alerts", None, "").await.status, 403);
}

#[tokio::test]
async fn incomplete_responses_and_an_insecure_webhook_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let errors = support::config_errors(
        dir.path(),
        "admin: { address: 127.0.0.1:0, token: plain-text-token }
detection:
  enabled: true
  auth_failures: { threshold: 0, respond: { action: limit, ttl: 10m } }
  scanning: { threshold: 5000, respond: { action: block, rate: 1/s, ttl: 30d } }
  webhook: { url: http://alerts.example.org/hook }
clusters: { echo: { targets: ['127.0.0.1:9'] } }
routes: [{ name: all, match: { prefix: / }, cluster: echo, public: true }]
",
    )
    .await;
    for expected in [
        "admin.token",
        "detection.auth_failures.threshold must be between 1 and 65535",
        "detection.scanning.threshold must be between 1 and 1000",
        "detection.auth_failures.respond: action limit needs a rate",
        "detection.scanning.respond: action block takes no rate",
        "detection.scanning.respond.ttl must be between 1s and 7d",
        "detection.webhook.url",
    ] {
        assert!(errors.contains(expected), "missing {expected:?} in:\n{errors}");
    }
    assert!(errors.contains("gateway.yaml:"), "located: {errors}");
}

#[tokio::test]
async fn forged_tokens_for_one_subject_from_many_addresses_alert_on_the_subject() {
    use support::tokens::{claims, EcKey, AUDIENCE, ISSUER};
    set_token();
    let echo = support::echo("api").await;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let real = EcKey::generate("real");
    let forger = EcKey::generate("real");
    let jwks = support::tokens::jwks([&real.jwk]);
    let gateway = support::start(&format!(
        "trusted_proxies: [127.0.0.1]
admin: {{ address: 127.0.0.1:0, token: '${{PALISADE_TEST_ADMIN_TOKEN}}' }}
audit: {{ path: {audit} }}
authentication:
  jwt_providers:
    idp: {{ issuer: {ISSUER}, audiences: [{AUDIENCE}], keys: {{ jwks: '{jwks}' }} }}
detection:
  enabled: true
  targeted_subject: {{ threshold: 10, window: 60s }}
clusters: {{ echo: {{ targets: [\"{echo}\"] }} }}
routes:
  - {{ name: api, match: {{ prefix: /api }}, cluster: echo, authentication: [{{ jwt: idp }}], authorization: {{ allow: authenticated }} }}
",
        audit = audit.display()
    ))
    .await;
    // Ten tokens for "root" signed with the wrong key, each from another address: no client
    // repeats, so only the subject ties them together.
    let mut forged = Vec::new();
    for n in 0..10 {
        let token = forger.sign(&claims("root"));
        let bearer = format!("Bearer {token}");
        let address = format!("198.51.100.{}", n + 10);
        let reply = support::call(
            &gateway.url("/api/x"),
            &[("authorization", &bearer), ("x-forwarded-for", &address)],
        )
        .await;
        assert_eq!(reply.status, 401);
        forged.push(token);
    }
    let seen = wait_for_alert(&gateway, "targeted_subject", "root", Duration::from_secs(5)).await;
    assert!(seen.is_some(), "{}", alerts(&gateway).await);
    let view = alerts(&gateway).await;
    assert!(
        !view["open"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["detector"] == "auth_failures"),
        "no single client crossed its own threshold"
    );
    // The subject is named; the tokens are not.
    support::eventually("the alert reaches the audit log", || async {
        std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .contains("\"types\":[\"targeted_subject\"]")
    })
    .await;
    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(text.contains("\"types\":[\"targeted_subject\"]"), "{text}");
    for token in &forged {
        let signature = token.rsplit('.').next().unwrap();
        assert!(!text.contains(signature), "a token reached the audit log");
    }
}

#[tokio::test]
async fn a_principal_probing_from_many_addresses_is_blocked_as_a_principal() {
    set_token();
    let echo = support::echo("api").await;
    let (key, hash) = palisade_auth::apikey::generate();
    let gateway = support::start(&format!(
        "trusted_proxies: [127.0.0.1]
admin: {{ address: 127.0.0.1:0, token: '${{PALISADE_TEST_ADMIN_TOKEN}}' }}
authentication:
  api_keys:
    keys: [{{ name: reporting, hash: \"{hash}\", scopes: [reports:read] }}]
detection:
  enabled: true
  probing: {{ threshold: 5, respond: {{ action: block, ttl: 60s }} }}
clusters: {{ echo: {{ targets: [\"{echo}\"] }} }}
routes:
  - name: reports
    match: {{ prefix: /reports }}
    cluster: echo
    authentication: [api_key]
    authorization: {{ rules: [{{ id: readers, any_of: {{ scopes: [reports:read] }} }}] }}
  - name: admin
    match: {{ prefix: /admin }}
    cluster: echo
    authentication: [api_key]
    authorization: {{ rules: [{{ id: admins, any_of: {{ scopes: [admin] }} }}] }}
"
    ))
    .await;
    let with_key = |address: &'static str| [("x-api-key", key.as_str()), ("x-forwarded-for", address)];
    assert_eq!(
        support::call(&gateway.url("/reports/1"), &with_key("198.51.100.1"))
            .await
            .status,
        200
    );
    for address in [
        "198.51.100.2",
        "198.51.100.3",
        "198.51.100.4",
        "198.51.100.5",
        "198.51.100.6",
    ] {
        assert_eq!(
            support::call(&gateway.url("/admin/users"), &with_key(address))
                .await
                .status,
            403
        );
    }
    let seen = wait_for_alert(&gateway, "probing", "principal:reporting", Duration::from_secs(5)).await;
    assert!(seen.is_some(), "{}", alerts(&gateway).await);
    // The principal is blocked wherever it calls from, even where it is allowed; others are not.
    let blocked = support::call(&gateway.url("/reports/1"), &with_key("198.51.100.99")).await;
    assert_eq!(blocked.status, 403);
    assert!(blocked.body.contains("temporarily-blocked"), "{}", blocked.body);
    let listed: Value =
        serde_json::from_str(&admin(&gateway, "GET", "/responses", Some(ADMIN_TOKEN), "").await.body).unwrap();
    assert_eq!(listed["responses"][0]["subject"], "reporting");
    assert_eq!(listed["responses"][0]["source"], "detector:probing");
}

#[tokio::test]
async fn a_failing_cluster_alerts_from_the_per_route_tallies() {
    set_token();
    let dead = support::dead_address().await;
    let gateway = support::start(&format!(
        "admin: {{ address: 127.0.0.1:0, token: '${{PALISADE_TEST_ADMIN_TOKEN}}' }}
detection: {{ enabled: true }}
clusters: {{ payments: {{ targets: [\"{dead}\"], passive_health: {{ consecutive_failures: 0 }} }} }}
routes: [{{ name: pay, match: {{ prefix: / }}, cluster: payments, public: true }}]
"
    ))
    .await;
    for _ in 0..25 {
        assert_eq!(support::get(&gateway.url("/charge")).await.0, 502);
    }
    let seen = wait_for_alert(&gateway, "upstream_errors", "payments", Duration::from_secs(5)).await;
    assert!(seen.is_some(), "{}", alerts(&gateway).await);
}
