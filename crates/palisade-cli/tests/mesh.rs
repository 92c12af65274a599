//! The mesh from the command line, as an operator runs it: `palisade ca …`, `palisade ca serve`,
//! and `palisade sidecar` joining with a token; interoperability with curl and openssl.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use support::palisade;

fn run(args: &[&str]) -> Output {
    palisade().args(args).output().unwrap()
}

fn text(output: &Output) -> String {
    support::output_text(output)
}

fn has(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
        || Command::new(tool)
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
}

#[test]
fn ca_commands_init_issue_rotate_and_refuse_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let ca = ca.to_str().unwrap();
    let init = run(&["ca", "init", "--trust-domain", "example.org", "--dir", ca]);
    assert!(init.status.success(), "{}", text(&init));
    let again = run(&["ca", "init", "--trust-domain", "example.org", "--dir", ca]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again).contains("refusing to overwrite"), "{}", text(&again));

    let out = dir.path().join("orders");
    let out = out.to_str().unwrap();
    let id = "spiffe://example.org/ns/shop/sa/orders";
    let issue = run(&[
        "ca",
        "issue",
        "--dir",
        ca,
        "--spiffe-id",
        id,
        "--ttl",
        "1h",
        "--out",
        out,
    ]);
    assert!(issue.status.success(), "{}", text(&issue));
    assert!(
        text(&issue).contains("certificate_issued"),
        "issuance is an event: {}",
        text(&issue)
    );
    let over = run(&["ca", "issue", "--dir", ca, "--spiffe-id", id, "--out", out]);
    assert_eq!(
        over.status.code(),
        Some(1),
        "an existing key is not overwritten by accident"
    );
    let key_before = std::fs::read(Path::new(out).join("svid.key")).unwrap();
    let renewed = run(&["ca", "issue", "--dir", ca, "--spiffe-id", id, "--out", out, "--replace"]);
    assert!(renewed.status.success(), "{}", text(&renewed));
    assert_ne!(std::fs::read(Path::new(out).join("svid.key")).unwrap(), key_before);
    let outside = run(&[
        "ca",
        "issue",
        "--dir",
        ca,
        "--spiffe-id",
        "spiffe://other.org/x",
        "--out",
        out,
    ]);
    assert_eq!(outside.status.code(), Some(1));

    assert!(run(&["ca", "rotate", "--dir", ca]).status.success());
    assert!(run(&["ca", "rotate", "--dir", ca, "--root"]).status.success());
    assert!(run(&["ca", "rotate", "--dir", ca, "--activate-root"]).status.success());
    let early = run(&["ca", "rotate", "--dir", ca, "--retire-old-roots"]);
    assert_eq!(early.status.code(), Some(1), "leaves of the old root are still valid");
    assert!(text(&early).contains("--force"), "{}", text(&early));
    assert!(run(&["ca", "rotate", "--dir", ca, "--retire-old-roots", "--force"])
        .status
        .success());

    let token = run(&["ca", "token", "--dir", ca, "--spiffe-id", id, "--ttl", "10m"]);
    assert!(token.status.success(), "{}", text(&token));
    let secret = String::from_utf8_lossy(&token.stdout).trim().to_string();
    assert!(secret.starts_with("pjt_") && secret.len() > 60, "{secret}");
    let stored = std::fs::read_to_string(Path::new(ca).join("tokens.json")).unwrap();
    assert!(!stored.contains(&secret), "only the hash is stored");
}

/// `palisade ca serve` on an ephemeral port; returns the process and its address.
fn serve_ca(ca: &str) -> (support::Gateway, String) {
    serve_ca_with(ca, &[])
}

fn serve_ca_with(ca: &str, extra: &[&str]) -> (support::Gateway, String) {
    let process = support::start_logging_address(
        palisade()
            .args(["ca", "serve", "--dir", ca, "--listen", "127.0.0.1:0"])
            .args(extra),
        "identity service listening",
    );
    let address = process.address.clone();
    (process, address)
}

/// An ES256 key pair as a cluster's ServiceAccount signer: the signing key and its JWK Set.
fn cluster_signer(kid: &str) -> (jsonwebtoken::EncodingKey, String) {
    use base64::Engine;
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let point = pair.public_key_raw();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let jwks = format!(
        r#"{{"keys": [{{"kty": "EC", "crv": "P-256", "kid": "{kid}", "use": "sig", "alg": "ES256", "x": "{}", "y": "{}"}}]}}"#,
        b64(&point[1..33]),
        b64(&point[33..65])
    );
    (jsonwebtoken::EncodingKey::from_ec_der(&pair.serialize_der()), jwks)
}

#[test]
fn a_sidecar_on_kubernetes_gets_its_identity_from_its_service_account_token() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let ca = ca_dir.to_str().unwrap();
    assert!(run(&["ca", "init", "--trust-domain", "cluster.local", "--dir", ca])
        .status
        .success());
    let issuer = "https://kubernetes.default.svc.cluster.local";
    let (signer, jwks) = cluster_signer("sa-key-1");
    std::fs::write(dir.path().join("jwks.json"), jwks).unwrap();
    let settings = dir.path().join("identity.yaml");
    std::fs::write(
        &settings,
        format!(
            "kubernetes:
  issuer: {issuer}
  keys: {{ jwks_file: jwks.json }}
  allow: [shop]
"
        ),
    )
    .unwrap();
    let settings = settings.to_str().unwrap();
    let (_ca_server, ca_address) = serve_ca_with(ca, &["--config", settings, "--read-only"]);

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "aud": ["palisade-ca"], "exp": now + 3600, "iat": now, "nbf": now, "iss": issuer,
        "kubernetes.io": {"namespace": "shop", "pod": {"name": "orders-5d8f-abcde", "uid": "3f1e0a9c-1111-4a2b-9c3d-000000000001"},
            "serviceaccount": {"name": "orders", "uid": "3f1e0a9c-2222-4a2b-9c3d-000000000002"}},
        "sub": "system:serviceaccount:shop:orders",
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("sa-key-1".into());
    let token = jsonwebtoken::encode(&header, &claims, &signer).unwrap();
    // As the injected pod has it: the projected token, the trust ConfigMap, an empty key volume.
    std::fs::create_dir_all(dir.path().join("tokens")).unwrap();
    std::fs::write(dir.path().join("tokens/palisade-ca"), &token).unwrap();
    let (_app, app_address) = echo_process();
    let config = dir.path().join("sidecar.yaml");
    std::fs::write(
        &config,
        format!(
            r#"trust_domain: cluster.local
identity:
  cert: keys/svid.pem
  key: keys/svid.key
  bundle: keys/bundle.pem
  ca:
    url: "https://{ca_address}"
    service_account_token: tokens/palisade-ca
    bootstrap_bundle: ca/bundle.pem
admin: {{ address: 127.0.0.1:0 }}
inbound:
  address: 127.0.0.1:0
  app: {app_address}
  routes:
    - {{ name: all, match: {{ prefix: / }}, allow: ["spiffe://cluster.local/ns/shop/*"] }}
"#
        ),
    )
    .unwrap();
    let (_sidecar, logs) =
        support::start_capturing(palisade().args(["sidecar", "--config"]).arg(&config), "info", "inbound");
    // The URI SAN is plain ASCII inside the certificate's DER.
    use base64::Engine;
    let pem = std::fs::read_to_string(dir.path().join("keys/svid.pem")).unwrap();
    let body: String = pem.lines().skip(1).take_while(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(body).unwrap();
    let wanted = b"spiffe://cluster.local/ns/shop/sa/orders";
    assert!(der.windows(wanted.len()).any(|w| w == wanted), "the derived SPIFFE ID");
    let logged = logs.lock().unwrap().join("\n");
    assert!(!logged.contains(&token), "the ServiceAccount token is never logged");
    assert!(logged.contains("identity ready"), "{logged}");

    // Identity only (the edge gateway's pod): no listeners, the certificate kept fresh for the
    // pod's other containers, probes on the admin address answered with `palisade probe`.
    let gateway_config = dir.path().join("identity-only.yaml");
    std::fs::write(
        &gateway_config,
        format!(
            "trust_domain: cluster.local\nidentity:\n  cert: gw/svid.pem\n  key: gw/svid.key\n  bundle: gw/bundle.pem\n  ca:\n    url: \"https://{ca_address}\"\n    service_account_token: tokens/palisade-ca\n    bootstrap_bundle: ca/bundle.pem\nadmin: {{ address: 127.0.0.1:0 }}\n"
        ),
    )
    .unwrap();
    let identity_only = support::start_logging_address(
        palisade().args(["sidecar", "--config"]).arg(&gateway_config),
        "admin listening",
    );
    let admin = identity_only.admin.clone();
    assert!(
        dir.path().join("gw/svid.pem").is_file(),
        "the certificate is there before it listens"
    );
    let probe = |path: &str| {
        palisade()
            .args(["probe", &format!("http://{admin}{path}")])
            .output()
            .unwrap()
            .status
            .code()
    };
    assert!(
        support::wait_for(|| probe("/readyz") == Some(0)),
        "ready with a certificate"
    );
    assert_eq!(probe("/healthz"), Some(0));
    assert_eq!(probe("/nowhere"), Some(1), "a 404 fails the probe");
    let metrics = support::http_exchange(&admin, "/metrics").1;
    assert!(metrics.contains("palisade_identity_expiry_seconds"), "{metrics}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let refused = palisade()
        .args(["probe", &format!("http://{closed}/readyz")])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1), "nothing listening fails the probe");
}

#[test]
fn a_sidecar_joins_with_a_token_and_interoperates_with_curl_and_openssl() {
    if !has("curl") || !has("openssl") {
        eprintln!("SKIPPED: curl and openssl are needed (.ci/run installs them)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let ca = ca_dir.to_str().unwrap();
    assert!(run(&["ca", "init", "--trust-domain", "example.org", "--dir", ca])
        .status
        .success());
    let (_ca_server, ca_address) = serve_ca(ca);
    let orders_id = "spiffe://example.org/ns/shop/sa/orders";
    let token = run(&["ca", "token", "--dir", ca, "--spiffe-id", orders_id]);
    let token = String::from_utf8_lossy(&token.stdout).trim().to_string();

    let (_app, app_address) = echo_process();
    let identity = dir.path().join("orders");
    std::fs::create_dir_all(&identity).unwrap();
    std::fs::copy(ca_dir.join("bundle.pem"), identity.join("bundle.pem")).unwrap();
    let config = dir.path().join("orders.yaml");
    std::fs::write(
        &config,
        format!(
            "trust_domain: example.org\nidentity:\n  cert: orders/svid.pem\n  key: orders/svid.key\n  bundle: orders/bundle.pem\n  ca: {{ url: \"https://{ca_address}\", join_token: \"${{ORDERS_JOIN_TOKEN}}\", ttl: 1h }}\nadmin: {{ address: 127.0.0.1:0 }}\ninbound:\n  address: 127.0.0.1:0\n  app: {app_address}\n  routes:\n    - {{ name: orders, match: {{ prefix: /orders }}, allow: [\"spiffe://example.org/ns/shop/*\"] }}\n"
        ),
    )
    .unwrap();
    let (sidecar, logs) = support::start_capturing(
        palisade()
            .args(["sidecar", "--config"])
            .arg(&config)
            .env("ORDERS_JOIN_TOKEN", &token),
        "info",
        "inbound",
    );
    assert!(
        identity.join("svid.key").exists(),
        "the agent wrote the key it generated"
    );
    let joined = logs.lock().unwrap().join("\n");
    assert!(!joined.contains(&token), "the join token is never logged");

    // A second workload with the same token is refused and does not start.
    let replay_config = dir.path().join("replay.yaml");
    let replay_text = std::fs::read_to_string(&config).unwrap().replace("orders/", "replay/");
    std::fs::create_dir_all(dir.path().join("replay")).unwrap();
    std::fs::copy(ca_dir.join("bundle.pem"), dir.path().join("replay/bundle.pem")).unwrap();
    std::fs::write(&replay_config, replay_text).unwrap();
    let replay = palisade()
        .args(["sidecar", "--config"])
        .arg(&replay_config)
        .env("ORDERS_JOIN_TOKEN", &token)
        .output()
        .unwrap();
    assert_eq!(replay.status.code(), Some(1));
    assert!(text(&replay).contains("join-token-refused"), "{}", text(&replay));

    // A caller identity for curl and openssl.
    let web = dir.path().join("web");
    let web_id = "spiffe://example.org/ns/shop/sa/web";
    let issued = run(&[
        "ca",
        "issue",
        "--dir",
        ca,
        "--spiffe-id",
        web_id,
        "--out",
        web.to_str().unwrap(),
    ]);
    assert!(issued.status.success());
    let (cert, key, bundle) = (web.join("svid.pem"), web.join("svid.key"), web.join("bundle.pem"));
    let url = format!("https://{}/orders/1", sidecar.address);

    // curl cannot check a SPIFFE ID (the certificate has no DNS name), hence -k; what is tested is
    // that the sidecar verifies curl's certificate.
    let with_cert = Command::new("curl")
        .args(["-sk", "--cert"])
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .arg(&url)
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&with_cert.stdout);
    assert!(
        body.contains(web_id),
        "curl with a valid identity reaches the app: {body}"
    );
    let without = Command::new("curl").args(["-sk", &url]).output().unwrap();
    assert!(
        !without.status.success(),
        "curl without a certificate is refused in the handshake"
    );

    let request = "GET /orders/1 HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n";
    let openssl = |extra: &[&str]| -> String {
        let mut child = Command::new("openssl")
            .args(["s_client", "-quiet", "-connect", &sidecar.address])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        let _ = child.stdin.take().unwrap().write_all(request.as_bytes());
        let output = child.wait_with_output().unwrap();
        text(&output)
    };
    let (cert, key, bundle) = (cert.to_str().unwrap(), key.to_str().unwrap(), bundle.to_str().unwrap());
    let valid = openssl(&["-cert", cert, "-cert_chain", cert, "-key", key, "-CAfile", bundle]);
    assert!(valid.contains("HTTP/1.1 200"), "openssl with a valid identity: {valid}");
    let anonymous = openssl(&["-CAfile", bundle]);
    assert!(
        !anonymous.contains("HTTP/1.1"),
        "openssl without a certificate: {anonymous}"
    );
    let old_protocol = openssl(&["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0", "-cert", cert, "-key", key]);
    assert!(!old_protocol.contains("HTTP/1.1"), "TLS 1.1 is refused: {old_protocol}");
    let metrics = admin_metrics(&sidecar.admin);
    assert!(
        metrics.contains("palisade_tls_handshake_failures_total{listener=\"inbound\",reason=\"protocol_version\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("palisade_identity_expiry_seconds "), "{metrics}");
}

fn admin_metrics(admin: &str) -> String {
    let output = Command::new("curl")
        .args(["-s", &format!("http://{admin}/metrics")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn echo_process() -> (support::Gateway, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let child = palisade()
        .args(["echo", "--listen", &address, "--name", "orders-app"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(support::wait_for(|| std::net::TcpStream::connect(&address).is_ok()));
    let process = support::Gateway {
        child,
        address: address.clone(),
        admin: String::new(),
    };
    (process, address)
}

#[test]
fn the_mesh_examples_load_with_identities_from_a_fresh_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let ca = ca.to_str().unwrap();
    assert!(run(&["ca", "init", "--trust-domain", "example.org", "--dir", ca])
        .status
        .success());
    for (name, id) in [
        ("orders", "spiffe://example.org/ns/shop/sa/orders"),
        ("web", "spiffe://example.org/ns/shop/sa/web"),
        ("gateway", "spiffe://example.org/gateway"),
    ] {
        let out = dir.path().join(name);
        let issued = run(&[
            "ca",
            "issue",
            "--dir",
            ca,
            "--spiffe-id",
            id,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(issued.status.success(), "{}", text(&issued));
    }
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/mesh");
    for (file, sidecar) in [
        ("orders-sidecar.yaml", true),
        ("web-sidecar.yaml", true),
        ("gateway.yaml", false),
    ] {
        let copy = dir.path().join(file);
        std::fs::copy(examples.join(file), &copy).unwrap();
        let mut check = palisade();
        check
            .arg("check-config")
            .arg(&copy)
            .env("ORDERS_JOIN_TOKEN", "pjt_example");
        if sidecar {
            check.arg("--sidecar");
        }
        let output = check.output().unwrap();
        assert!(output.status.success(), "{file}: {}", text(&output));
    }
}
