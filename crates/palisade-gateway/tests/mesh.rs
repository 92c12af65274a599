//! Service-to-service mTLS through sidecars: identities from the built-in CA, callers authorized by
//! SPIFFE ID, and every way a caller's certificate can be wrong refused in the handshake.

mod support;

use std::time::{Duration, SystemTime};

use support::mesh::{get_request, id, identity_yaml, metric, mtls_exchange, Mesh, Sidecar, DOMAIN};

const ORDERS: &str = "/ns/shop/sa/orders";
const WEB: &str = "/ns/shop/sa/web";
const REPORTS: &str = "/ns/shop/sa/reports";

/// The orders sidecar: GET /orders for anyone in ns/shop, POST only for web.
fn orders_yaml(mesh: &mut Mesh, app: std::net::SocketAddr) -> String {
    let identity = mesh.identity("orders", &id(ORDERS));
    format!(
        "trust_domain: {DOMAIN}\n{}admin: {{ address: 127.0.0.1:0 }}\naccess_log: {{ enabled: false }}\naudit: {{ enabled: false }}\nreload: {{ poll_interval: 100ms }}\ninbound:\n  address: 127.0.0.1:0\n  app: {app}\n  routes:\n    - name: read\n      match: {{ prefix: /orders, methods: [GET] }}\n      allow: [\"spiffe://{DOMAIN}/ns/shop/*\"]\n    - name: write\n      match: {{ prefix: /orders, methods: [POST] }}\n      allow: [\"{}\"]\n",
        identity_yaml(&identity),
        id(WEB)
    )
}

async fn refused(
    sidecar: &Sidecar,
    mesh: &Mesh,
    client: Option<&palisade_mesh::IdentityPaths>,
) -> std::io::Result<String> {
    mtls_exchange(
        sidecar.inbound(),
        &mesh.bundle(),
        &id(ORDERS),
        client,
        &get_request("/orders/1", ""),
    )
    .await
}

#[tokio::test]
async fn callers_are_authorized_by_spiffe_id_and_the_app_learns_who_called() {
    let app = support::echo("orders-app").await;
    let mut mesh = Mesh::new(DOMAIN);
    let dir = tempfile::tempdir().unwrap();
    let sidecar = Sidecar::start(dir.path(), "orders", &orders_yaml(&mut mesh, app)).await;
    let web = mesh.identity("web", &id(WEB));
    let reports = mesh.identity("reports", &id(REPORTS));
    let outsider = mesh.identity("outsider", &id("/ns/billing/sa/ledger"));

    let forged = "x-palisade-peer-id: spiffe://example.org/ns/admin/sa/root\r\n";
    let response = mtls_exchange(
        sidecar.inbound(),
        &mesh.bundle(),
        &id(ORDERS),
        Some(&web),
        &get_request("/orders/7", forged),
    )
    .await
    .unwrap();
    assert_eq!(support::status_of(&response), 200, "{response}");
    let body = &response[response.find("\r\n\r\n").unwrap() + 4..];
    let seen = support::echoed(body);
    assert_eq!(
        seen["headers"]["x-palisade-peer-id"],
        serde_json::json!([id(WEB)]),
        "the forged copy is gone"
    );

    // A pattern allows everyone below the path; the POST rule names only web.
    let read = mtls_exchange(
        sidecar.inbound(),
        &mesh.bundle(),
        &id(ORDERS),
        Some(&reports),
        &get_request("/orders/7", ""),
    )
    .await
    .unwrap();
    assert_eq!(support::status_of(&read), 200);
    let post = "POST /orders HTTP/1.1\r\nhost: app\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}";
    let write = mtls_exchange(sidecar.inbound(), &mesh.bundle(), &id(ORDERS), Some(&reports), post)
        .await
        .unwrap();
    assert_eq!(support::status_of(&write), 403, "{write}");
    assert!(!write.contains("spiffe://"), "the refusal reveals no policy: {write}");
    let write = mtls_exchange(sidecar.inbound(), &mesh.bundle(), &id(ORDERS), Some(&web), post)
        .await
        .unwrap();
    assert_eq!(support::status_of(&write), 200);
    // Outside ns/shop: default deny. No route at all: 404 before anything reaches the app.
    let denied = refused(&sidecar, &mesh, Some(&outsider)).await.unwrap();
    assert_eq!(support::status_of(&denied), 403);
    let unrouted = mtls_exchange(
        sidecar.inbound(),
        &mesh.bundle(),
        &id(ORDERS),
        Some(&web),
        &get_request("/admin", ""),
    )
    .await
    .unwrap();
    assert_eq!(support::status_of(&unrouted), 404);
}

#[tokio::test]
async fn every_bad_client_certificate_is_refused_in_the_handshake_with_its_reason() {
    let app = support::echo("orders-app").await;
    let mut mesh = Mesh::new(DOMAIN);
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = orders_yaml(&mut mesh, app);
    // The sidecar also trusts another trust domain's root (as when bundles are federated): its
    // workloads chain fine, and must still be refused for their trust domain.
    let mut other = Mesh::new("other.org");
    let combined = dir.path().join("combined-bundle.pem");
    let bundles = std::fs::read_to_string(mesh.bundle()).unwrap() + &std::fs::read_to_string(other.bundle()).unwrap();
    std::fs::write(&combined, bundles).unwrap();
    let own_bundle = mesh.dir.path().join("orders/bundle.pem");
    yaml = yaml.replace(&own_bundle.display().to_string(), &combined.display().to_string());
    let sidecar = Sidecar::start(dir.path(), "orders", &yaml).await;

    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    let expired = mesh.identity_valid("expired", &id(WEB), now - 2 * hour, now - hour);
    let not_yet = mesh.identity_valid("not-yet", &id(WEB), now + hour, now + 2 * hour);
    let foreign = other.identity("foreign", "spiffe://other.org/ns/shop/sa/web");
    // A look-alike CA (same names, other keys) and an unrelated one.
    let mut lookalike_ca = Mesh::new(DOMAIN);
    let lookalike = lookalike_ca.identity("lookalike", &id(WEB));
    let mut unrelated_ca = Mesh::new("elsewhere.org");
    let unrelated = unrelated_ca.identity("unrelated", "spiffe://elsewhere.org/ns/shop/sa/web");
    let no_spiffe_id = certificate_without_spiffe_id(&mesh, dir.path());

    for (name, client, reason) in [
        ("no certificate", None, "no_client_certificate"),
        ("a look-alike CA", Some(&lookalike), "bad_signature"),
        ("an unrelated CA", Some(&unrelated), "unknown_issuer"),
        ("expired", Some(&expired), "certificate_expired"),
        ("not yet valid", Some(&not_yet), "certificate_not_yet_valid"),
        ("another trust domain", Some(&foreign), "foreign_trust_domain"),
        ("no SPIFFE ID", Some(&no_spiffe_id), "no_workload_identity"),
    ] {
        let outcome = refused(&sidecar, &mesh, client).await;
        assert!(outcome.is_err(), "{name}: {outcome:?}");
        let line = format!("palisade_tls_handshake_failures_total{{listener=\"inbound\",reason=\"{reason}\"}}");
        let metrics = sidecar.metric_reaches(&line, 1.0).await;
        let reported: Vec<&str> = metrics
            .lines()
            .filter(|l| l.contains("handshake_failures_total"))
            .collect();
        assert_eq!(metric(&metrics, &line), 1.0, "{name}: {line} in\n{reported:#?}");
    }
}

/// A leaf from the right CA whose only name is a DNS name.
fn certificate_without_spiffe_id(mesh: &Mesh, dir: &std::path::Path) -> palisade_mesh::IdentityPaths {
    let ca = mesh.dir.path().join("ca");
    let intermediate_pem = std::fs::read_to_string(ca.join("intermediate.pem")).unwrap();
    let signer = rcgen::KeyPair::from_pem(&std::fs::read_to_string(ca.join("intermediate.key")).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&intermediate_pem, signer).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["web.shop.svc".to_string()]).unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let paths = palisade_mesh::IdentityPaths::in_dir(&dir.join("dns-only"));
    let bundle = std::fs::read_to_string(mesh.bundle()).unwrap();
    paths
        .write(&(cert.pem() + &intermediate_pem), &key.serialize_pem(), &bundle, true)
        .unwrap();
    paths
}

#[tokio::test]
async fn outbound_calls_carry_the_workload_identity_and_verify_the_destination() {
    let app = support::echo("orders-app").await;
    let mut mesh = Mesh::new(DOMAIN);
    let dir = tempfile::tempdir().unwrap();
    let orders = Sidecar::start(dir.path(), "orders", &orders_yaml(&mut mesh, app)).await;
    let web_identity = mesh.identity("web-sidecar", &id(WEB));
    let web_yaml = format!(
        "trust_domain: {DOMAIN}\n{}admin: {{ address: 127.0.0.1:0 }}\naccess_log: {{ enabled: false }}\naudit: {{ enabled: false }}\noutbound:\n  address: 127.0.0.1:0\n  destinations:\n    orders: {{ targets: [\"{o}\"], spiffe_id: \"{}\" }}\n    impostor: {{ targets: [\"{o}\"], spiffe_id: \"{}\" }}\n",
        identity_yaml(&web_identity),
        id(ORDERS),
        id("/ns/shop/sa/payments"),
        o = orders.inbound()
    );
    let web = Sidecar::start(dir.path(), "web", &web_yaml).await;
    let base = format!("http://{}", web.outbound());

    let reply = support::call(
        &format!("{base}/orders/9"),
        &[("host", "orders"), ("x-palisade-peer-id", "forged")],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let seen = support::echoed(&reply.body);
    assert_eq!(seen["headers"]["x-palisade-peer-id"], serde_json::json!([id(WEB)]));
    let post = support::call_with("POST", &format!("{base}/orders"), &[("host", "orders")]).await;
    assert_eq!(post.status, 200, "web may POST: {}", post.body);

    // The destination answers with a different identity than the one expected: nothing is sent.
    let impostor = support::call(&format!("{base}/orders/9"), &[("host", "impostor")]).await;
    assert_eq!(impostor.status, 502);
    assert!(impostor.body.contains("upstream-tls-failed"), "{}", impostor.body);
    // An unknown destination name is not forwarded anywhere.
    let unknown = support::call(&format!("{base}/orders/9"), &[("host", "elsewhere")]).await;
    assert_eq!(unknown.status, 404);
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_failed_request() {
    let app = support::echo("orders-app").await;
    let mut mesh = Mesh::new(DOMAIN);
    let dir = tempfile::tempdir().unwrap();
    let sidecar = Sidecar::start(dir.path(), "orders", &orders_yaml(&mut mesh, app)).await;
    let web = mesh.identity("web", &id(WEB));
    let serial_before = served_serial(&sidecar, &mesh).await;

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let address = sidecar.inbound();
    let bundle = mesh.bundle();
    let web_for_traffic = web.clone();
    let traffic = tokio::spawn(async move {
        let (mut ok, mut failed) = (0u32, 0u32);
        while !*stopped.borrow() {
            let outcome = mtls_exchange(
                address,
                &bundle,
                &id(ORDERS),
                Some(&web_for_traffic),
                &get_request("/orders/1", ""),
            )
            .await;
            match outcome {
                Ok(response) if support::status_of(&response) == 200 => ok += 1,
                _ => failed += 1,
            }
        }
        (ok, failed)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    mesh.identity("orders", &id(ORDERS)); // renewal: new key and certificate in the same files
    let mut serial_after = serial_before.clone();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        serial_after = served_serial(&sidecar, &mesh).await;
        if serial_after != serial_before {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send(true).unwrap();
    let (ok, failed) = traffic.await.unwrap();
    assert_ne!(
        serial_after, serial_before,
        "the sidecar serves the renewed certificate"
    );
    assert_eq!(failed, 0, "{failed} of {} requests failed during renewal", ok + failed);
    assert!(ok > 10, "traffic ran throughout ({ok} requests)");
}

/// The certificate (DER) the sidecar presents now.
async fn served_serial(sidecar: &Sidecar, mesh: &Mesh) -> Vec<u8> {
    let roots = std::sync::Arc::new(palisade_mesh::verify::load_bundle(&mesh.bundle()).unwrap());
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        palisade_mesh::SpiffeServerVerifier::new(roots, palisade_mesh::SpiffePattern::parse(&id(ORDERS)).unwrap());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(verifier))
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(sidecar.inbound()).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let stream = connector
        .connect(rustls_pki_types::ServerName::try_from("x.invalid").unwrap(), tcp)
        .await
        .unwrap();
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn a_root_rotation_keeps_old_and_new_callers_working_until_the_old_root_is_retired() {
    let app = support::echo("orders-app").await;
    let mut mesh = Mesh::new(DOMAIN);
    let dir = tempfile::tempdir().unwrap();
    let sidecar = Sidecar::start(dir.path(), "orders", &orders_yaml(&mut mesh, app)).await;
    let sidecar_bundle = mesh.dir.path().join("orders/bundle.pem");
    let old_caller = mesh.identity("web-old", &id(WEB));
    let publish_bundle = |mesh: &Mesh| std::fs::copy(mesh.bundle(), &sidecar_bundle).unwrap();
    let address = sidecar.inbound();
    let call = |caller: palisade_mesh::IdentityPaths, bundle: std::path::PathBuf| async move {
        mtls_exchange(
            address,
            &bundle,
            &id(ORDERS),
            Some(&caller),
            &get_request("/orders/1", ""),
        )
        .await
    };

    mesh.ca.stage_root().unwrap();
    publish_bundle(&mesh);
    mesh.ca.activate_root().unwrap();
    let new_caller = mesh.identity("web-new", &id(WEB));
    // The sidecar picks up the bundle with both roots (poll interval 100 ms).
    let mut accepted = false;
    for _ in 0..50 {
        let outcome = call(new_caller.clone(), mesh.bundle()).await;
        if outcome.as_ref().is_ok_and(|r| support::status_of(r) == 200) {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        accepted,
        "a caller under the new root is accepted once the bundle is published"
    );
    let old = call(old_caller.clone(), mesh.bundle()).await.unwrap();
    assert_eq!(
        support::status_of(&old),
        200,
        "the old root is still trusted during the overlap"
    );

    // The sidecar's own certificate is renewed under the new root before the old root goes.
    let before = served_serial(&sidecar, &mesh).await;
    mesh.identity("orders", &id(ORDERS));
    for _ in 0..50 {
        if served_serial(&sidecar, &mesh).await != before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    mesh.ca.retire_previous_roots(true, SystemTime::now()).unwrap();
    publish_bundle(&mesh);
    let mut refused = false;
    for _ in 0..50 {
        let _ = call(old_caller.clone(), mesh.bundle()).await;
        let line = "palisade_tls_handshake_failures_total{listener=\"inbound\",reason=\"unknown_issuer\"}";
        if metric(&sidecar.metric_reaches(line, 1.0).await, line) >= 1.0 {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "after retirement, the sidecar refuses a leaf of the old root");
    let new = call(new_caller, mesh.bundle()).await.unwrap();
    assert_eq!(support::status_of(&new), 200);
}

#[tokio::test]
async fn sidecar_config_mistakes_are_reported_at_their_line() {
    let mut mesh = Mesh::new(DOMAIN);
    let dir = tempfile::tempdir().unwrap();
    let identity = mesh.identity("orders", &id(ORDERS));
    let yaml = format!(
        "trust_domain: {DOMAIN}\n{}inbound:\n  address: 127.0.0.1:0\n  app: 127.0.0.1:1\n  routes:\n    - name: read\n      match: {{ prefix: /orders }}\n      allow: [\"spiffe://other.org/ns/shop/*\", \"spiffe://{DOMAIN}/ns/Shop/../x\"]\noutbound:\n  address: 0.0.0.0:15001\n  destinations:\n    orders: {{ targets: [\"127.0.0.1:1\"], spiffe_id: \"{}\" }}\n",
        identity_yaml(&identity),
        id(ORDERS)
    );
    let path = dir.path().join("sidecar.yaml");
    std::fs::write(&path, yaml).unwrap();
    let errors = palisade_gateway::check_config(&path, palisade_core::ConfigKind::Sidecar)
        .await
        .unwrap_err()
        .to_string();
    let file = path.display().to_string();
    assert!(
        errors.contains(&format!(
            "{file}:9:15: spiffe://other.org/ns/shop/* is outside the trust domain"
        )),
        "{errors}"
    );
    assert!(
        errors.contains(&format!("{file}:9:47: ")) && errors.contains("path segments"),
        "{errors}"
    );
    assert!(
        errors.contains(&format!("{file}:11:12: outbound.address must be a loopback address")),
        "{errors}"
    );
    assert_eq!(errors.lines().count(), 3, "each mistake reported once: {errors}");
}

/// The identity service of a test CA, and an agent configured like a sidecar's.
async fn identity_service(mesh: &Mesh) -> palisade_mesh::server::CaServer {
    let options = palisade_mesh::server::ServeOptions {
        dir: mesh.dir.path().join("ca"),
        listen: "127.0.0.1:0".parse().unwrap(),
        default_ttl: Duration::from_secs(3600),
        max_ttl: Duration::from_secs(3600),
        dns_names: vec!["localhost".into()],
        audit: Some(
            palisade_telemetry::AuditLog::start(
                vec![palisade_telemetry::audit::AuditSink::File {
                    path: mesh.dir.path().join("audit.log"),
                    max_bytes: 1 << 20,
                    keep: 1,
                }],
                1024,
                Default::default(),
            )
            .await
            .unwrap(),
        ),
        attestor: None,
        read_only: false,
    };
    palisade_mesh::server::CaServer::start(options).await.unwrap()
}

/// An agent whose identity files live in `dir`, with only the CA's bundle there to start with.
fn agent(
    mesh: &Mesh,
    service: std::net::SocketAddr,
    dir: &std::path::Path,
    join_token: Option<String>,
) -> palisade_mesh::agent::Agent {
    let paths = palisade_mesh::IdentityPaths::in_dir(dir);
    std::fs::create_dir_all(dir).unwrap();
    if !paths.bundle.exists() {
        std::fs::copy(mesh.bundle(), &paths.bundle).unwrap();
    }
    palisade_mesh::agent::Agent::new(palisade_mesh::agent::AgentConfig {
        url: format!("https://{service}"),
        server_id: palisade_mesh::SpiffePattern::parse(&id("/palisade/ca")).unwrap(),
        paths,
        join_token,
        service_account_token_file: None,
        bootstrap_bundle: None,
        ttl: Some(Duration::from_secs(600)),
        on_status: None,
        audit: None,
    })
}

fn spiffe_id_in(dir: &std::path::Path) -> String {
    let pem = std::fs::read_to_string(dir.join("svid.pem")).unwrap();
    let leaf = rustls_pki_types::pem::PemObject::pem_slice_iter(pem.as_bytes())
        .next()
        .map(|r: Result<rustls_pki_types::CertificateDer<'static>, _>| r.unwrap())
        .unwrap();
    palisade_mesh::spiffe_id_of(&leaf).unwrap().to_string()
}

#[tokio::test]
async fn a_join_token_buys_one_first_certificate_and_renewals_need_the_current_one() {
    let mesh = Mesh::new(DOMAIN);
    let service = identity_service(&mesh).await;
    let ca_dir = mesh.dir.path().join("ca");
    let token = palisade_mesh::tokens::create(
        &ca_dir,
        &palisade_mesh::SpiffeId::parse(&id(ORDERS)).unwrap(),
        Duration::from_secs(600),
    )
    .unwrap()
    .secret;
    let workdir = tempfile::tempdir().unwrap();

    // A request with a broken CSR is refused before the token is spent.
    let body = format!("{{\"csr\": \"-----BEGIN CERTIFICATE REQUEST-----\\nAAAA\\n-----END CERTIFICATE REQUEST-----\\n\", \"join_token\": \"{token}\"}}");
    let request = format!(
        "POST /v1/certificates HTTP/1.1\r\nhost: ca\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let answer = mtls_exchange(service.address, &mesh.bundle(), &id("/palisade/ca"), None, &request)
        .await
        .unwrap();
    assert_eq!(support::status_of(&answer), 400, "{answer}");
    assert!(answer.contains("invalid-csr") && !answer.contains(&token), "{answer}");

    let first = agent(
        &mesh,
        service.address,
        &workdir.path().join("orders"),
        Some(token.clone()),
    );
    let validity = first.ensure_identity().await.unwrap();
    assert_eq!(
        spiffe_id_in(&workdir.path().join("orders")),
        id(ORDERS),
        "the ID comes from the token"
    );
    let lifetime = validity.not_after.duration_since(SystemTime::now()).unwrap();
    assert!(
        lifetime <= Duration::from_secs(600),
        "the asked-for lifetime: {lifetime:?}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(workdir.path().join("orders/svid.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // The same token again, from another workload: refused.
    let replay = agent(
        &mesh,
        service.address,
        &workdir.path().join("thief"),
        Some(token.clone()),
    );
    let refused = replay.ensure_identity().await.unwrap_err().to_string();
    assert!(
        refused.contains("401") && refused.contains("join-token-refused"),
        "{refused}"
    );
    assert!(!refused.contains(&token), "the token never appears in an error");
    // Neither a certificate nor a token: nothing to show.
    let nothing = agent(&mesh, service.address, &workdir.path().join("nobody"), None);
    assert!(matches!(
        nothing.ensure_identity().await,
        Err(palisade_mesh::agent::AgentError::NoCredential { .. })
    ));
    let unknown = agent(
        &mesh,
        service.address,
        &workdir.path().join("guess"),
        Some("pjt_guess".into()),
    );
    assert!(unknown.ensure_identity().await.is_err());

    // Renewal over mTLS with the current certificate: a new key and certificate for the same ID.
    let key_before = std::fs::read(workdir.path().join("orders/svid.key")).unwrap();
    let cert_before = std::fs::read(workdir.path().join("orders/svid.pem")).unwrap();
    first.renew().await.unwrap();
    assert_ne!(
        std::fs::read(workdir.path().join("orders/svid.key")).unwrap(),
        key_before
    );
    assert_ne!(
        std::fs::read(workdir.path().join("orders/svid.pem")).unwrap(),
        cert_before
    );
    assert_eq!(spiffe_id_in(&workdir.path().join("orders")), id(ORDERS));

    // A root staged at the CA reaches the workload's bundle (within five seconds at the service).
    let mut ca = palisade_mesh::CertificateAuthority::open(&ca_dir).unwrap();
    ca.stage_root().unwrap();
    let bundle = workdir.path().join("orders/bundle.pem");
    let mut roots = 0;
    for _ in 0..80 {
        first.refresh_bundle().await.unwrap();
        roots = std::fs::read_to_string(&bundle)
            .unwrap()
            .matches("BEGIN CERTIFICATE")
            .count();
        if roots == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(roots, 2, "the staged root is in the workload's bundle");
    service.shutdown().await;

    // Every issuance and every refusal is an audit event; the token appears in none.
    let audit = std::fs::read_to_string(mesh.dir.path().join("audit.log")).unwrap();
    let events: Vec<serde_json::Value> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let of = |kind: &str, detail: &str| {
        events
            .iter()
            .filter(|e| e["unmapped"]["event"] == kind && e["status_detail"] == detail)
            .count()
    };
    assert_eq!(of("certificate_issued", "join_token"), 1);
    assert_eq!(of("certificate_issued", "renewal"), 1);
    assert_eq!(of("certificate_refused", "join_token_replayed"), 1);
    assert_eq!(of("certificate_refused", "unknown_join_token"), 1);
    assert_eq!(of("certificate_refused", "invalid_csr"), 1);
    let issued = events
        .iter()
        .find(|e| e["unmapped"]["event"] == "certificate_issued")
        .unwrap();
    assert_eq!(issued["class_uid"], 3004);
    assert_eq!(issued["entity"]["name"], id(ORDERS));
    assert!(!audit.contains(&token), "the join token never reaches the audit log");
}

#[tokio::test]
async fn a_sidecar_renews_from_the_identity_service_under_traffic_and_outlives_a_ca_outage() {
    let app = support::echo("orders-app").await;
    let mesh = Mesh::new(DOMAIN);
    let service = identity_service(&mesh).await;
    let ca_dir = mesh.dir.path().join("ca");
    let spiffe = |path: &str| palisade_mesh::SpiffeId::parse(&id(path)).unwrap();
    let workdir = tempfile::tempdir().unwrap();
    let token = |path: &str| {
        palisade_mesh::tokens::create(&ca_dir, &spiffe(path), Duration::from_secs(600))
            .unwrap()
            .secret
    };
    let orders = agent(
        &mesh,
        service.address,
        &workdir.path().join("orders"),
        Some(token(ORDERS)),
    );
    orders.ensure_identity().await.unwrap();
    let web = agent(&mesh, service.address, &workdir.path().join("web"), Some(token(WEB)));
    web.ensure_identity().await.unwrap();
    let web_paths = palisade_mesh::IdentityPaths::in_dir(&workdir.path().join("web"));
    let yaml = format!(
        "trust_domain: {DOMAIN}\n{}admin: {{ address: 127.0.0.1:0 }}\naccess_log: {{ enabled: false }}\naudit: {{ enabled: false }}\nreload: {{ poll_interval: 100ms }}\ninbound:\n  address: 127.0.0.1:0\n  app: {app}\n  routes:\n    - name: read\n      match: {{ prefix: /orders }}\n      allow: [\"{}\"]\n",
        identity_yaml(&palisade_mesh::IdentityPaths::in_dir(&workdir.path().join("orders"))),
        id(WEB)
    );
    let sidecar = Sidecar::start(workdir.path(), "orders", &yaml).await;
    let bundle = mesh.bundle();
    let first_served = served_serial(&sidecar, &mesh).await;

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let address = sidecar.inbound();
    let traffic = tokio::spawn(async move {
        let (mut ok, mut failed) = (0u32, 0u32);
        while !*stopped.borrow() {
            let request = get_request("/orders/1", "");
            match mtls_exchange(address, &bundle, &id(ORDERS), Some(&web_paths), &request).await {
                Ok(response) if support::status_of(&response) == 200 => ok += 1,
                _ => failed += 1,
            }
        }
        (ok, failed)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    orders.renew().await.unwrap();
    let mut renewed_served = first_served.clone();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        renewed_served = served_serial(&sidecar, &mesh).await;
        if renewed_served != first_served {
            break;
        }
    }
    assert_ne!(renewed_served, first_served, "the renewed certificate is served");

    // The CA goes away: renewal fails, the sidecar keeps serving on its current certificate.
    service.shutdown().await;
    let outage = orders.renew().await.unwrap_err();
    assert!(
        matches!(outage, palisade_mesh::agent::AgentError::Unreachable { .. }),
        "{outage}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.send(true).unwrap();
    let (ok, failed) = traffic.await.unwrap();
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed across renewal and CA outage",
        ok + failed
    );
    assert!(ok > 10, "traffic ran throughout ({ok})");
    assert!(orders.current().is_some(), "the current certificate is still valid");
}

#[tokio::test]
async fn outbound_destinations_cannot_be_reached_through_the_inbound_port() {
    let orders_app = support::echo("orders-app").await;
    let web_app = support::echo("web-app").await;
    let mut mesh = Mesh::new(DOMAIN);
    let dir = tempfile::tempdir().unwrap();
    let orders = Sidecar::start(dir.path(), "orders", &orders_yaml(&mut mesh, orders_app)).await;
    let web_identity = mesh.identity("web-sidecar", &id(WEB));
    let yaml = format!(
        "trust_domain: {DOMAIN}\n{}admin: {{ address: 127.0.0.1:0 }}\naccess_log: {{ enabled: false }}\naudit: {{ enabled: false }}\ninbound:\n  address: 127.0.0.1:0\n  app: {web_app}\n  routes:\n    - {{ name: web, match: {{ prefix: /web }}, allow: [\"spiffe://{DOMAIN}/ns/shop/*\"] }}\noutbound:\n  address: 127.0.0.1:0\n  destinations:\n    orders: {{ targets: [\"{}\"], spiffe_id: \"{}\" }}\n",
        identity_yaml(&web_identity),
        orders.inbound(),
        id(ORDERS)
    );
    let web = Sidecar::start(dir.path(), "web", &yaml).await;
    let caller = mesh.identity("reports", &id(REPORTS));
    // A valid caller on web's mTLS port, naming web's outbound destination, must not be relayed to it
    // with web's identity (the outbound routes are bound to the loopback listener).
    let request = "GET /orders/1 HTTP/1.1\r\nhost: orders\r\nconnection: close\r\n\r\n";
    let answer = mtls_exchange(web.inbound(), &mesh.bundle(), &id(WEB), Some(&caller), request)
        .await
        .unwrap();
    assert_eq!(support::status_of(&answer), 404, "{answer}");
    assert!(!answer.contains("orders-app"), "{answer}");
    // The same request from the app, on the loopback outbound port, is relayed.
    let reply = support::call(&format!("http://{}/orders/1", web.outbound()), &[("host", "orders")]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.body.contains("orders-app"));
}
