//! Audit events on real sockets: every kind the gateway emits carries the OCSF fields the schema
//! requires, and no credential a client sent (token, API key, cookie, query secret) ever appears in
//! the audit file.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::mesh::{id, Mesh, DOMAIN};
use support::tokens::{claims, EcKey, AUDIENCE, ISSUER};

/// Every event in the audit file.
fn events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect()
}

/// Waits until the file holds an event of each kind in `kinds` (the writer runs asynchronously).
async fn wait_for_kinds(path: &Path, kinds: &[&str]) -> Vec<Value> {
    for _ in 0..100 {
        let found = events(path);
        if kinds
            .iter()
            .all(|kind| found.iter().any(|e| e["unmapped"]["event"] == *kind))
        {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    events(path)
}

#[tokio::test]
async fn every_decision_is_an_ocsf_event_and_no_secret_reaches_the_audit_log() {
    let echo = support::echo("api").await;
    let dir = tempfile::tempdir().unwrap();
    let audit_path = dir.path().join("audit.log");
    let key = EcKey::generate("k1");
    let jwks = support::tokens::jwks([&key.jwk]);
    let (api_key, api_key_hash) = palisade_auth::apikey::generate();
    std::fs::write(
        dir.path().join("orders.openapi.yaml"),
        "openapi: 3.1.0\ninfo: { title: t, version: '1' }\npaths:\n  /orders:\n    post:\n      requestBody:\n        required: true\n        content:\n          application/json:\n            schema: { type: object, required: [sku], properties: { sku: { type: string } } }\n      responses: { '200': { description: ok } }\n",
    )
    .unwrap();
    // A TLS listener that requires client certificates from the mesh CA.
    let mut mesh = Mesh::new(DOMAIN);
    let server = mesh.identity("server", &id("/gateway"));
    let yaml = format!(
        "listeners:\n  - {{ name: public, address: 127.0.0.1:0 }}\n  - name: secure\n    address: 127.0.0.1:0\n    tls:\n      cert: {cert}\n      key: {key_file}\n      client_certificates: {{ mode: require, ca: [{bundle}] }}\naudit:\n  path: {audit}\n  authentication_successes: true\ntrusted_proxies: [127.0.0.1]\nreload: {{ poll_interval: 100ms }}\nauthentication:\n  jwt_providers:\n    idp:\n      issuer: {ISSUER}\n      audiences: [{AUDIENCE}]\n      keys: {{ jwks: '{jwks}' }}\n  api_keys:\n    keys: [{{ name: reporting, hash: \"{api_key_hash}\", scopes: [reports:read] }}]\nclusters:\n  echo: {{ targets: [\"{echo}\"] }}\nroutes:\n  - name: admin\n    match: {{ prefix: /admin }}\n    cluster: echo\n    authentication: [{{ jwt: idp }}, api_key]\n    authorization: {{ rules: [{{ id: admins, any_of: {{ roles: [admin] }} }}] }}\n  - name: secure\n    match: {{ prefix: /secure }}\n    cluster: echo\n    authentication: [{{ jwt: idp }}, api_key]\n    authorization: {{ allow: authenticated }}\n  - name: limited\n    match: {{ prefix: /limited }}\n    cluster: echo\n    public: true\n    rate_limits: [{{ name: tiny, rate: 1/min, burst: 1, key: client_ip }}]\n  - name: walled\n    match: {{ prefix: /walled }}\n    cluster: echo\n    public: true\n    ip_rules: {{ deny: [203.0.113.0/24] }}\n  - name: orders\n    match: {{ path: /orders, methods: [POST] }}\n    cluster: echo\n    public: true\n    validate: {{ openapi: {openapi} }}\n",
        cert = server.cert.display(),
        key_file = server.key.display(),
        bundle = server.bundle.display(),
        audit = audit_path.display(),
        openapi = dir.path().join("orders.openapi.yaml").display(),
    );
    let gw = support::start(&yaml).await;
    let token = key.sign(&claims("alice"));
    let cookie = "session=cookie-secret-0123456789";
    let query_secret = "query-secret-9876543210";

    // authentication_succeeded, authorization_denied (alice is no admin), with every secret on board
    let denied = support::call(
        &gw.url(&format!("/admin?access_token={query_secret}")),
        &[("authorization", &format!("Bearer {token}")), ("cookie", cookie)],
    )
    .await;
    assert_eq!(denied.status, 403);
    // authentication_failed: a tampered token, and an unknown API key
    let tampered = format!("{token}x");
    let failed = support::call(&gw.url("/secure"), &[("authorization", &format!("Bearer {tampered}"))]).await;
    assert_eq!(failed.status, 401);
    let wrong_key = format!("{api_key}0");
    assert_eq!(
        support::call(&gw.url("/secure"), &[("x-api-key", &wrong_key)])
            .await
            .status,
        401
    );
    assert_eq!(
        support::call(&gw.url("/secure"), &[("x-api-key", &api_key)])
            .await
            .status,
        200
    );
    // rate_limited, ip_blocked, validation_failed, request_rejected (path trick)
    assert_eq!(support::call(&gw.url("/limited"), &[]).await.status, 200);
    assert_eq!(support::call(&gw.url("/limited"), &[]).await.status, 429);
    let blocked = support::call(&gw.url("/walled"), &[("x-forwarded-for", "203.0.113.9")]).await;
    assert_eq!(blocked.status, 403);
    let invalid = support::call_with("POST", &gw.url("/orders"), &[("content-type", "application/json")]).await;
    assert_eq!(invalid.status, 400);
    let raw = support::raw(
        gw.address,
        b"GET /a/%2e%2e/%2e%2e/etc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(support::status_of(&raw), 400, "{raw}");
    // tls_handshake_refused: no client certificate on the secure listener
    let secure = gw.gateway.listener_addr("secure").unwrap();
    let outcome =
        support::mesh::mtls_exchange(secure, &server.bundle, &id("/gateway"), None, "GET / HTTP/1.1\r\n\r\n").await;
    assert!(outcome.is_err());
    // config_rejected, then config_reloaded
    let good = std::fs::read_to_string(&gw.config_path).unwrap();
    std::fs::write(
        &gw.config_path,
        good.replace("routes:", "routes:\n  - { name: broken }"),
    )
    .unwrap();
    support::eventually("the watcher refuses the broken file", || async {
        gw.metrics()
            .await
            .contains("palisade_config_reloads_total{outcome=\"rejected\"} 1")
    })
    .await;
    std::fs::write(&gw.config_path, &good).unwrap();

    let kinds = [
        "authentication_succeeded",
        "authentication_failed",
        "authorization_denied",
        "rate_limited",
        "ip_blocked",
        "validation_failed",
        "request_rejected",
        "tls_handshake_refused",
        "config_rejected",
        "config_reloaded",
    ];
    let found = wait_for_kinds(&audit_path, &kinds).await;
    for kind in kinds {
        let event = found
            .iter()
            .find(|e| e["unmapped"]["event"] == kind)
            .unwrap_or_else(|| panic!("no {kind} event in {found:#?}"));
        for field in [
            "time",
            "class_uid",
            "category_uid",
            "activity_id",
            "type_uid",
            "severity_id",
            "status_id",
            "message",
        ] {
            assert!(!event[field].is_null(), "{kind}: {field} missing in {event}");
        }
        assert_eq!(event["metadata"]["product"]["name"], "Palisade", "{kind}");
        assert_eq!(event["metadata"]["version"], "1.1.0", "{kind}");
        let type_uid = event["class_uid"].as_u64().unwrap() * 100 + event["activity_id"].as_u64().unwrap();
        assert_eq!(event["type_uid"].as_u64(), Some(type_uid), "{kind}");
    }
    let by_kind = |kind: &str| found.iter().find(|e| e["unmapped"]["event"] == kind).unwrap().clone();
    let denial = by_kind("authorization_denied");
    assert_eq!(
        (denial["class_uid"].as_u64(), denial["action_id"].as_u64()),
        (Some(4002), Some(2))
    );
    assert_eq!(denial["actor"]["user"]["uid"], "alice");
    assert_eq!(denial["http_request"]["url"]["path"], "/admin");
    assert_eq!(denial["unmapped"]["decided_by"], "default-deny");
    let failure = by_kind("authentication_failed");
    assert_eq!(
        (failure["class_uid"].as_u64(), failure["status_id"].as_u64()),
        (Some(3002), Some(2))
    );
    assert_eq!(by_kind("ip_blocked")["src_endpoint"]["ip"], "203.0.113.9");
    assert_eq!(
        by_kind("tls_handshake_refused")["status_detail"],
        "no_client_certificate"
    );

    // The same decisions, counted by route, stage and reason.
    let metrics = gw.metrics().await;
    for line in [
        "palisade_denials_total{route=\"admin\",stage=\"authorize\",reason=\"forbidden\"} 1",
        "palisade_denials_total{route=\"secure\",stage=\"authenticate\",reason=\"malformed_token\"} 1",
        "palisade_denials_total{route=\"limited\",stage=\"rate_limit\",reason=\"rate_limited\"} 1",
        "palisade_denials_total{route=\"walled\",stage=\"ip_rules\",reason=\"ip_denied\"} 1",
        "palisade_denials_total{route=\"orders\",stage=\"validate\",reason=\"validation_failed\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }

    // No secret in any event, in any form.
    let text = std::fs::read_to_string(&audit_path).unwrap();
    let signature = token.rsplit('.').next().unwrap();
    for (name, secret) in [
        ("token", token.as_str()),
        ("token signature", signature),
        ("tampered token", tampered.as_str()),
        ("API key", api_key.as_str()),
        ("wrong API key", wrong_key.as_str()),
        ("cookie", "cookie-secret-0123456789"),
        ("query secret", query_secret),
    ] {
        assert!(!text.contains(secret), "the {name} reached the audit log");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&audit_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the audit file is readable by its owner only");
    }
}

#[tokio::test]
async fn a_slow_sink_never_slows_requests_and_loses_only_counted_events() {
    // The sink is a FIFO read one small piece every 20 ms: the writer soon blocks on a full pipe.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("audit.fifo");
    if !std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success())
    {
        eprintln!("SKIPPED: mkfifo is not available");
        return;
    }
    let reader_path = fifo.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_reader = stop.clone();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut pipe = std::fs::File::open(reader_path).unwrap();
        let mut piece = [0u8; 256];
        while !stop_reader.load(std::sync::atomic::Ordering::Relaxed) {
            if pipe.read(&mut piece).unwrap_or(0) == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let echo = support::echo("api").await;
    let yaml = format!(
        "audit: {{ path: {}, buffer: 16 }}\ntrusted_proxies: [127.0.0.1]\nclusters:\n  echo: {{ targets: [\"{echo}\"] }}\nroutes:\n  - {{ name: walled, match: {{ prefix: / }}, cluster: echo, public: true, ip_rules: {{ deny: [203.0.113.0/24] }} }}\n",
        fifo.display()
    );
    let gw = support::start(&yaml).await;
    let url = gw.url("/x");
    let started = std::time::Instant::now();
    let mut refusals = 0;
    for _ in 0..10 {
        let calls = (0..100).map(|_| support::call(&url, &[("x-forwarded-for", "203.0.113.1")]));
        for reply in futures_util::future::join_all(calls).await {
            refusals += u32::from(reply.status == 403);
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(refusals, 1000);
    // Reading 1000 events (~800 bytes each) at 256 bytes per 20 ms would take over a minute.
    assert!(
        elapsed < Duration::from_secs(15),
        "1000 refusals took {elapsed:?} behind a slow sink"
    );
    let metrics = gw.metrics().await;
    let value = |name: &str| support::mesh::metric(&metrics, name);
    let dropped = value("palisade_audit_events_dropped_total");
    assert!(dropped > 0.0, "the queue overflowed behind the slow sink: {metrics}");
    assert!(dropped < 1000.0, "only what did not fit was lost");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(gw);
    let _ = reader.join();
}

#[tokio::test]
async fn events_also_reach_an_opentelemetry_collector_with_its_token_from_the_environment() {
    let (collector, received) = support::json_receiver().await;
    std::env::set_var("PALISADE_TEST_OTLP_TOKEN", "Bearer otlp-secret-token");
    let echo = support::echo("api").await;
    let yaml = format!(
        "audit:\n  path: none\n  otlp:\n    endpoint: http://{collector}\n    headers: {{ authorization: \"${{PALISADE_TEST_OTLP_TOKEN}}\" }}\n    service_name: edge\ntrusted_proxies: [127.0.0.1]\nclusters:\n  echo: {{ targets: [\"{echo}\"] }}\nroutes:\n  - {{ name: walled, match: {{ prefix: / }}, cluster: echo, public: true, ip_rules: {{ deny: [203.0.113.0/24] }} }}\n"
    );
    let gw = support::start(&yaml).await;
    let reply = support::call(&gw.url("/x"), &[("x-forwarded-for", "203.0.113.5")]).await;
    assert_eq!(reply.status, 403);
    for _ in 0..100 {
        if !received.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let received = received.lock().unwrap();
    let (token, body) = received.first().expect("the collector received the event");
    assert_eq!(token, "Bearer otlp-secret-token");
    let resource = &body["resourceLogs"][0];
    assert_eq!(resource["resource"]["attributes"][0]["value"]["stringValue"], "edge");
    let record = &resource["scopeLogs"][0]["logRecords"][0];
    let event: Value = serde_json::from_str(record["body"]["stringValue"].as_str().unwrap()).unwrap();
    assert_eq!(event["unmapped"]["event"], "ip_blocked");
    assert_eq!(event["src_endpoint"]["ip"], "203.0.113.5");
}

#[tokio::test]
async fn an_audit_collector_over_plain_http_to_another_host_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let errors = support::config_errors(
        dir.path(),
        "audit:\n  otlp: { endpoint: \"http://collector.example.org:4318\" }\nclusters:\n  c: { targets: [\"127.0.0.1:9\"] }\nroutes:\n  - { name: r, match: { prefix: / }, cluster: c, public: true }\n",
    )
    .await;
    assert!(errors.contains("must be an https:// URL"), "{errors}");
}
