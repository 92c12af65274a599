//! A pod gets its first certificate from `palisade ca serve` with its projected ServiceAccount
//! token, verified against a cluster served over HTTPS on 127.0.0.1 the way kube-apiserver serves
//! it; every kind of bad token is refused and audited.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use palisade_mesh::agent::{Agent, AgentConfig, AgentError};
use palisade_mesh::server::{CaServer, ServeOptions};
use palisade_mesh::{CertificateAuthority, IdentityPaths, Lifetimes, SpiffePattern};
use serde_json::{json, Value};
use support::*;

struct IdentityService {
    server: CaServer,
    ca_dir: PathBuf,
    audit: PathBuf,
}

/// The CA (made read-only once created, as a mounted Secret is) and its identity service with the
/// attestor the YAML configures.
async fn identity_service(dir: &Path, settings_yaml: &str) -> IdentityService {
    let ca_dir = dir.join("ca");
    CertificateAuthority::init(&ca_dir, TRUST_DOMAIN, Lifetimes::default()).unwrap();
    let settings_file = dir.join("identity.yaml");
    std::fs::write(&settings_file, settings_yaml).unwrap();
    let settings = palisade_kubernetes::config::load(&settings_file)
        .unwrap_or_else(|e| panic!("{e}"))
        .expect("a kubernetes section");
    let mut diagnostics = palisade_core::Diagnostics::new("identity.yaml");
    let attestor = palisade_kubernetes::ServiceAccountAttestor::start(TRUST_DOMAIN, settings, &mut diagnostics, true)
        .await
        .expect("the attestor starts");
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let audit = dir.join("audit.log");
    let log = palisade_telemetry::AuditLog::start(
        vec![palisade_telemetry::audit::AuditSink::File {
            path: audit.clone(),
            max_bytes: 1 << 20,
            keep: 1,
        }],
        1024,
        Default::default(),
    )
    .await
    .unwrap();
    let server = CaServer::start(ServeOptions {
        dir: ca_dir.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
        default_ttl: Duration::from_secs(3600),
        max_ttl: Duration::from_secs(3600),
        dns_names: vec!["localhost".into()],
        audit: Some(log),
        attestor: Some(Arc::new(attestor)),
        read_only: true,
    })
    .await
    .unwrap();
    IdentityService { server, ca_dir, audit }
}

fn offline_settings(cluster: &Cluster, extra: &str) -> String {
    format!(
        "kubernetes:\n  issuer: {issuer}\n  keys:\n    discovery: true\n    ca: {ca}\n    bearer_token_file: {token}\n  allow: [\"*\"]\n  deny: [kube-system]\n{extra}",
        issuer = cluster.issuer,
        ca = cluster.ca_file.display(),
        token = cluster.reader_token_file.display(),
    )
}

/// A sidecar's agent: only the ServiceAccount token and the CA's bundle (as the trust ConfigMap
/// mounts it); its identity files go to an empty directory.
fn pod_agent(service: &IdentityService, pod_dir: &Path, token: &str) -> Agent {
    std::fs::create_dir_all(pod_dir).unwrap();
    let token_file = pod_dir.join("token");
    std::fs::write(&token_file, token).unwrap();
    Agent::new(AgentConfig {
        url: format!("https://{}", service.server.address),
        server_id: SpiffePattern::parse(&format!("spiffe://{TRUST_DOMAIN}/palisade/ca")).unwrap(),
        paths: IdentityPaths::in_dir(&pod_dir.join("identity")),
        join_token: None,
        service_account_token_file: Some(token_file),
        bootstrap_bundle: Some(service.ca_dir.join("bundle.pem")),
        ttl: None,
        on_status: None,
        audit: None,
    })
}

fn spiffe_id_in(cert: &Path) -> String {
    let pem = std::fs::read(cert).unwrap();
    let der = rustls_pki_types::pem::PemObject::pem_slice_iter(&pem)
        .next()
        .map(|r: Result<rustls_pki_types::CertificateDer<'static>, _>| r.unwrap())
        .unwrap();
    palisade_mesh::spiffe_id_of(&der).unwrap().to_string()
}

#[tokio::test]
async fn a_pod_gets_its_certificate_with_its_service_account_token_and_no_join_token() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path()).await;
    let service = identity_service(dir.path(), &offline_settings(&cluster, "")).await;
    let files_before = snapshot(&service.ca_dir);

    let token = cluster.pod_token("shop", "orders", "orders-7c9d5-x2x4q");
    let agent = pod_agent(&service, &dir.path().join("pod"), &token);
    let validity = agent.ensure_identity().await.expect("the pod gets a certificate");
    assert!(validity.not_after > std::time::SystemTime::now());
    let identity = dir.path().join("pod/identity");
    assert_eq!(
        spiffe_id_in(&identity.join("svid.pem")),
        format!("spiffe://{TRUST_DOMAIN}/ns/shop/sa/orders"),
        "the identity is derived from the namespace and ServiceAccount"
    );
    assert!(identity.join("bundle.pem").is_file(), "the bundle is written beside it");

    // Renewal goes over mTLS with the certificate, without the token.
    std::fs::remove_file(dir.path().join("pod/token")).unwrap();
    agent.renew().await.expect("renewal with the certificate alone");

    let issued = audit_lines(&service.audit, "certificate_issued", 1).await;
    let event = &issued[0];
    assert_eq!(event["status_detail"], "service_account_token");
    assert_eq!(event["unmapped"]["workload"]["namespace"], "shop");
    assert_eq!(event["unmapped"]["workload"]["service_account"], "orders");
    assert_eq!(event["unmapped"]["workload"]["pod_name"], "orders-7c9d5-x2x4q");
    assert_eq!(event["unmapped"]["workload"]["pod_uid"], "orders-7c9d5-x2x4q-uid");
    assert_eq!(event["actor"]["user"]["uid"], "system:serviceaccount:shop:orders");
    let text = std::fs::read_to_string(&service.audit).unwrap();
    assert!(!text.contains(&token), "the token is never written");
    assert!(!text.contains(READER_TOKEN));

    // Read-only: the CA directory is not written to (no lock, no state) and join tokens are refused.
    assert_eq!(snapshot(&service.ca_dir), files_before);
    let join = Agent::new(AgentConfig {
        join_token: Some("pjt_anything".into()),
        service_account_token_file: None,
        paths: IdentityPaths::in_dir(&dir.path().join("joiner")),
        ..agent_config(&service)
    });
    match join.ensure_identity().await {
        Err(AgentError::Refused { status: 401, detail }) => assert!(detail.contains("read-only"), "{detail}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(cluster.unauthenticated.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// Every file in `dir` with its content and modification time.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>, std::time::SystemTime)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
            (path.clone(), std::fs::read(&path).unwrap_or_default(), modified)
        })
        .collect();
    files.sort();
    files
}

fn agent_config(service: &IdentityService) -> AgentConfig {
    AgentConfig {
        url: format!("https://{}", service.server.address),
        server_id: SpiffePattern::parse(&format!("spiffe://{TRUST_DOMAIN}/palisade/ca")).unwrap(),
        paths: IdentityPaths::in_dir(Path::new("/nonexistent")),
        join_token: None,
        service_account_token_file: None,
        bootstrap_bundle: Some(service.ca_dir.join("bundle.pem")),
        ttl: None,
        on_status: None,
        audit: None,
    }
}

/// Each case: a token, and the reason the identity service must give.
fn bad_tokens(cluster: &Cluster) -> Vec<(&'static str, String, &'static str)> {
    let base = || pod_token_claims(&cluster.issuer, "shop", "orders", "orders-1");
    let with = |change: &dyn Fn(&mut Value)| {
        let mut claims = base();
        change(&mut claims);
        claims
    };
    let now = now();
    let other_cluster = EcKey::generate(EC_KID);
    vec![
        (
            "wrong audience",
            cluster.sign(&with(&|c| c["aud"] = json!(["https://kubernetes.default.svc"]))),
            "wrong_audience",
        ),
        (
            "expired",
            cluster.sign(&with(&|c| {
                c["iat"] = json!(now - 1200);
                c["nbf"] = json!(now - 1200);
                c["exp"] = json!(now - 600);
            })),
            "token_expired",
        ),
        (
            "not yet valid",
            cluster.sign(&with(&|c| c["nbf"] = json!(now + 600))),
            "token_not_yet_valid",
        ),
        (
            "too old",
            cluster.sign(&with(&|c| {
                c["iat"] = json!(now - 7200);
                c["nbf"] = json!(now - 7200);
                c["exp"] = json!(now + 600);
            })),
            "token_too_old",
        ),
        (
            "wrong issuer",
            cluster.sign(&with(&|c| c["iss"] = json!("https://other-cluster.example"))),
            "wrong_issuer",
        ),
        (
            "unknown key",
            sign(Algorithm::ES256, Some("retired-key"), &base(), &other_cluster.encoding),
            "unknown_key",
        ),
        ("alg none, no signature", unsigned(&base(), ""), "malformed_token"),
        (
            "alg none, any signature",
            unsigned(&base(), "c2lnbmF0dXJl"),
            "algorithm_not_allowed",
        ),
        (
            "namespace not allowed",
            cluster.pod_token("kube-system", "orders", "kube-proxy-abc"),
            "workload_not_allowed",
        ),
        (
            "another cluster's key under a known kid",
            sign(Algorithm::ES256, Some(EC_KID), &base(), &other_cluster.encoding),
            "bad_signature",
        ),
        (
            "subject disagrees with the kubernetes.io claims",
            cluster.sign(&with(&|c| c["sub"] = json!("system:serviceaccount:shop:admin"))),
            "subject_mismatch",
        ),
        (
            "not bound to a pod",
            cluster.sign(&with(&|c| {
                c["kubernetes.io"].as_object_mut().unwrap().remove("pod");
            })),
            "not_bound_to_a_pod",
        ),
        (
            "a legacy Secret-based token",
            cluster.sign(&json!({
                "iss": "kubernetes/serviceaccount",
                "kubernetes.io/serviceaccount/namespace": "shop",
                "kubernetes.io/serviceaccount/service-account.name": "orders",
                "sub": "system:serviceaccount:shop:orders",
            })),
            "missing_claim",
        ),
    ]
}

#[tokio::test]
async fn bad_tokens_are_refused_and_audited_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path()).await;
    let service = identity_service(dir.path(), &offline_settings(&cluster, "  max_token_age: 1h\n")).await;
    let cases = bad_tokens(&cluster);
    for (index, (case, token, reason)) in cases.iter().enumerate() {
        let agent = pod_agent(&service, &dir.path().join(format!("pod-{index}")), token);
        match agent.ensure_identity().await {
            Err(AgentError::Refused { status: 401, detail }) => {
                assert!(detail.contains(reason), "{case}: expected {reason}, got {detail}")
            }
            other => panic!("{case}: {other:?}"),
        }
    }
    let refused = audit_lines(&service.audit, "certificate_refused", cases.len()).await;
    let reasons: Vec<&str> = refused.iter().filter_map(|e| e["status_detail"].as_str()).collect();
    let wanted: Vec<&str> = cases.iter().map(|(_, _, reason)| *reason).collect();
    assert_eq!(reasons, wanted);
    // A real pod's expired token names the pod; a forged one names nobody.
    let at = |name: &str| cases.iter().position(|(case, _, _)| *case == name).unwrap();
    let expired = &refused[at("expired")];
    assert_eq!(expired["unmapped"]["workload"]["pod_name"], "orders-1");
    let forged = &refused[at("another cluster's key under a known kid")];
    assert!(forged["unmapped"].get("workload").is_none(), "{forged}");
    let text = std::fs::read_to_string(&service.audit).unwrap();
    for (case, token, _) in &cases {
        assert!(!text.contains(token.as_str()), "{case}: the token is in the audit log");
    }
    assert!(
        audit_lines(&service.audit, "certificate_issued", 0).await.is_empty(),
        "nothing was issued"
    );
}

#[tokio::test]
async fn the_token_review_api_verifies_tokens_when_the_keys_cannot_be_fetched() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path()).await;
    let settings = format!(
        "kubernetes:\n  issuer: {issuer}\n  token_review:\n    url: {issuer}\n    ca: {ca}\n    bearer_token_file: {token}\n  allow: [shop]\n",
        issuer = cluster.issuer,
        ca = cluster.ca_file.display(),
        token = cluster.reader_token_file.display(),
    );
    let service = identity_service(dir.path(), &settings).await;
    let good = pod_agent(
        &service,
        &dir.path().join("good"),
        &cluster.pod_token("shop", "orders", "orders-1"),
    );
    good.ensure_identity()
        .await
        .expect("a reviewed token gets a certificate");
    assert_eq!(
        spiffe_id_in(&dir.path().join("good/identity/svid.pem")),
        format!("spiffe://{TRUST_DOMAIN}/ns/shop/sa/orders")
    );
    let refusals = [
        (
            cluster.sign(&{
                let mut c = pod_token_claims(&cluster.issuer, "shop", "orders", "orders-1");
                c["aud"] = json!(["https://kubernetes.default.svc"]);
                c
            }),
            "token_review_refused",
        ),
        (cluster.pod_token("billing", "api", "api-1"), "workload_not_allowed"),
        (
            sign(
                Algorithm::ES256,
                Some(EC_KID),
                &pod_token_claims(&cluster.issuer, "shop", "orders", "x"),
                &EcKey::generate(EC_KID).encoding,
            ),
            "token_review_refused",
        ),
    ];
    for (index, (token, reason)) in refusals.iter().enumerate() {
        let agent = pod_agent(&service, &dir.path().join(format!("bad-{index}")), token);
        match agent.ensure_identity().await {
            Err(AgentError::Refused { status: 401, detail }) => assert!(detail.contains(reason), "{detail}"),
            other => panic!("{reason}: {other:?}"),
        }
    }
    assert_eq!(cluster.reviews.load(std::sync::atomic::Ordering::SeqCst), 4);
    assert_eq!(cluster.unauthenticated.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_unreachable_cluster_is_an_outage_not_a_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path()).await;
    let token = cluster.pod_token("shop", "orders", "orders-1");
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let settings = format!(
        "kubernetes:\n  issuer: https://{dead}\n  token_review:\n    url: https://{dead}\n    bearer_token_file: {token}\n    timeout: 1s\n  allow: [\"*\"]\n",
        token = cluster.reader_token_file.display(),
    );
    let service = identity_service(dir.path(), &settings).await;
    let agent = pod_agent(&service, &dir.path().join("pod"), &token);
    match agent.ensure_identity().await {
        Err(AgentError::Refused { status: 503, detail }) => {
            assert!(detail.contains("attestor_unavailable"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn settings_errors_are_reported_with_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("identity.yaml");
    let load = |yaml: &str| {
        std::fs::write(&file, yaml).unwrap();
        palisade_kubernetes::config::load(&file)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let no_allow = load("kubernetes:\n  issuer: https://k8s.test\n  keys: { discovery: true }\n");
    assert!(no_allow.contains("allow"), "{no_allow}");
    let both = load(
        "kubernetes:\n  issuer: https://k8s.test\n  keys: { discovery: true }\n  token_review: { url: https://k8s.test, bearer_token_file: t }\n  allow: [\"*\"]\n",
    );
    assert!(both.contains("identity.yaml:4:"), "{both}");
    let secret =
        load("kubernetes:\n  issuer: https://k8s.test\n  keys: { shared_secret: \"${X}\" }\n  allow: [\"*\"]\n");
    assert!(secret.contains("private key"), "{secret}");
    let pattern = load("kubernetes:\n  issuer: https://k8s.test\n  keys: { discovery: true }\n  allow: [Shop]\n");
    assert!(
        pattern.contains("identity.yaml:4:") && pattern.contains("Shop"),
        "{pattern}"
    );
    let unknown = load("kubernetes:\n  issuer: https://k8s.test\n  audiences: [x]\n");
    assert!(unknown.contains("identity.yaml:3:"), "{unknown}");
}
