//! Authentication at the gateway, end to end on real sockets: JWT (inline keys, JWKS URL, OIDC
//! discovery, shared secret), API keys, introspection, and the attack suite. Every refusal must be
//! a 401 whose body never repeats the credential.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};
use support::tokens::{self, claims, forge, EcKey, AUDIENCE, ISSUER};
use support::{call, echoed, Reply};

async fn bearer(url: &str, token: &str) -> Reply {
    call(url, &[("authorization", &format!("Bearer {token}"))]).await
}

/// A gateway with a public route `/open`, and `/orders` accepting the `idp` provider.
fn config(echo: SocketAddr, providers: &str, more_auth: &str, orders_methods: &str) -> String {
    format!(
        "clusters:\n  echo: {{ targets: [\"{echo}\"] }}\nauthentication:\n  jwt_providers:\n{providers}{more_auth}routes:\n  - {{ name: open, match: {{ prefix: /open }}, cluster: echo, public: true }}\n  - {{ name: orders, match: {{ prefix: /orders }}, cluster: echo, authentication: {orders_methods}, authorization: {{ allow: authenticated }} }}\n"
    )
}

/// A gateway whose `/orders` takes tokens of one provider `idp` signed by `ec`.
async fn one_provider(ec: &EcKey) -> support::Running {
    let echo = support::echo("orders").await;
    support::start(&config(
        echo,
        &tokens::provider_yaml("idp", &tokens::jwks([&ec.jwk]), ""),
        "",
        "[{ jwt: idp }]",
    ))
    .await
}

fn refused(reply: &Reply, token: &str, case: &str) {
    assert_eq!(reply.status, 401, "{case}: {}", reply.body);
    assert!(
        reply.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/problem+json"),
        "{case}"
    );
    assert!(
        !token.is_empty() && !reply.body.contains(token),
        "{case}: the body repeats the token"
    );
    let challenge = reply.headers["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with("Bearer realm=\"palisade\""),
        "{case}: {challenge}"
    );
}

#[tokio::test]
async fn valid_tokens_pass_with_their_identity_and_spoofed_identity_headers_are_removed() {
    let echo = support::echo("orders").await;
    let ec = EcKey::generate("ec-1");
    let keys = tokens::jwks([&ec.jwk, &tokens::rsa_jwk()]);
    let identity = "  identity:\n    headers:\n      x-palisade-subject: \"{sub}\"\n      x-user-roles: \"{roles}\"\n      x-tenant: \"{claims.tenant}\"\n";
    let gw = support::start(&config(
        echo,
        &tokens::provider_yaml("idp", &keys, ""),
        identity,
        "[{ jwt: idp }]",
    ))
    .await;

    let mut alice = claims("alice");
    alice["tenant"] = json!("acme");
    for (name, token) in [
        ("ES256", ec.sign(&alice)),
        (
            "RS256",
            tokens::sign_with(Algorithm::RS256, Some("rsa-1"), &alice, &tokens::rsa_key()),
        ),
        (
            "PS256",
            tokens::sign_with(Algorithm::PS256, Some("rsa-1"), &alice, &tokens::rsa_key()),
        ),
    ] {
        let reply = call(
            &gw.url("/orders/1"),
            &[
                ("authorization", &format!("Bearer {token}")),
                ("x-palisade-subject", "mallory"),
                ("x-user-roles", "admin"),
                ("x-palisade-anything", "forged"),
            ],
        )
        .await;
        assert_eq!(reply.status, 200, "{name}: {}", reply.body);
        let seen = &echoed(&reply.body)["headers"];
        assert_eq!(seen["x-palisade-subject"][0], "alice", "{name}");
        assert_eq!(seen["x-user-roles"][0], "clerk", "{name}");
        assert_eq!(seen["x-tenant"][0], "acme", "{name}");
        assert!(seen.get("x-palisade-anything").is_none(), "{name}");
    }

    // On a public route nobody is authenticated, and forged identity headers still never arrive.
    let reply = call(
        &gw.url("/open"),
        &[("x-palisade-subject", "admin"), ("x-user-roles", "admin")],
    )
    .await;
    assert_eq!(reply.status, 200);
    let seen = &echoed(&reply.body)["headers"];
    assert!(seen.get("x-palisade-subject").is_none() && seen.get("x-user-roles").is_none());
}

#[tokio::test]
async fn no_credentials_is_a_401_with_a_bare_bearer_challenge() {
    let ec = EcKey::generate("ec-1");
    let gw = one_provider(&ec).await;
    let reply = call(&gw.url("/orders/1"), &[]).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.headers["www-authenticate"], "Bearer realm=\"palisade\"");
    let problem: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(problem["type"], "https://palisade.dev/problems/unauthenticated");
    assert_eq!(problem["status"], 401);
    // A bad token names what is wrong in general terms.
    let expired = {
        let mut c = claims("alice");
        c["exp"] = json!(tokens::now() - 3600);
        ec.sign(&c)
    };
    let reply = bearer(&gw.url("/orders/1"), &expired).await;
    refused(&reply, &expired, "expired");
    assert!(reply.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("error=\"invalid_token\""));
    assert!(reply.body.contains("expired"), "{}", reply.body);
}

/// Every known way to slip a token past a JWT verifier, each refused with 401.
#[tokio::test]
async fn the_attack_suite_is_refused() {
    let echo = support::echo("orders").await;
    let ec = EcKey::generate("ec-1");
    let attacker = EcKey::generate("attacker");
    let keys = tokens::jwks([&ec.jwk, &tokens::rsa_jwk()]);
    let gw = support::start(&config(
        echo,
        &tokens::provider_yaml("idp", &keys, ""),
        "",
        "[{ jwt: idp }]",
    ))
    .await;
    let url = gw.url("/orders/1");
    let good = claims("alice");
    let valid = ec.sign(&good);
    assert_eq!(bearer(&url, &valid).await.status, 200, "the control token passes");

    let with_claims = |edit: &dyn Fn(&mut Value)| {
        let mut c = claims("alice");
        edit(&mut c);
        ec.sign(&c)
    };
    let attacker_signed = |header: Value| {
        let mut full = header;
        full["alg"] = json!("ES256");
        let mut jwt_header: jsonwebtoken::Header = serde_json::from_value(full).unwrap();
        jwt_header.alg = Algorithm::ES256;
        jsonwebtoken::encode(&jwt_header, &good, &attacker.encoding).unwrap()
    };
    let parts: Vec<&str> = valid.split('.').collect();
    let mut tampered = good.clone();
    tampered["sub"] = json!("admin");
    let huge = {
        let mut c = claims("alice");
        c["padding"] = json!("x".repeat(9000));
        ec.sign(&c)
    };

    let mut cases: Vec<(&str, String)> = vec![
        ("alg none", forge(&json!({"alg": "none", "typ": "JWT"}), &good, "")),
        (
            "alg none with a signature",
            forge(&json!({"alg": "none"}), &good, parts[2]),
        ),
        ("alg None", forge(&json!({"alg": "None"}), &good, "x")),
        ("alg NONE", forge(&json!({"alg": "NONE"}), &good, "x")),
        ("alg nOnE", forge(&json!({"alg": "nOnE"}), &good, "x")),
        (
            "HS256 signed with the RSA public key",
            tokens::sign_with(
                Algorithm::HS256,
                Some("rsa-1"),
                &good,
                &EncodingKey::from_secret(tokens::RSA_PUBLIC),
            ),
        ),
        (
            "HS256 signed with the RSA public key, no kid",
            tokens::sign_with(
                Algorithm::HS256,
                None,
                &good,
                &EncodingKey::from_secret(tokens::RSA_PUBLIC),
            ),
        ),
        (
            "jku to the attacker's keys",
            attacker_signed(json!({"kid": "attacker", "jku": "http://127.0.0.1:1/jwks"})),
        ),
        (
            "x5u to the attacker's certificate",
            attacker_signed(json!({"kid": "attacker", "x5u": "http://127.0.0.1:1/cert.pem"})),
        ),
        ("embedded jwk", attacker_signed(json!({"jwk": attacker.jwk.clone()}))),
        (
            "embedded jwk with the real kid",
            attacker_signed(json!({"kid": "ec-1", "jwk": attacker.jwk.clone()})),
        ),
        (
            "kid path traversal",
            attacker_signed(json!({"kid": "../../../../../../dev/null"})),
        ),
        (
            "kid SQL injection",
            attacker_signed(json!({"kid": "x' UNION SELECT 'secret' --"})),
        ),
        ("no kid, attacker key", attacker_signed(json!({}))),
        ("stripped signature", format!("{}.{}.", parts[0], parts[1])),
        ("two parts", format!("{}.{}", parts[0], parts[1])),
        (
            "modified payload, old signature",
            format!("{}.{}.{}", parts[0], tokens::b64(&tampered), parts[2]),
        ),
        (
            "JWE shape",
            format!("{}.{}.{}.{}.{}", parts[0], parts[1], parts[2], parts[1], parts[2]),
        ),
        ("expired", with_claims(&|c| c["exp"] = json!(tokens::now() - 3600))),
        (
            "not yet valid",
            with_claims(&|c| c["nbf"] = json!(tokens::now() + 3600)),
        ),
        (
            "issued in the future",
            with_claims(&|c| c["iat"] = json!(tokens::now() + 3600)),
        ),
        ("wrong issuer", with_claims(&|c| c["iss"] = json!("https://evil.test"))),
        ("issuer as an array", with_claims(&|c| c["iss"] = json!([ISSUER]))),
        ("wrong audience", with_claims(&|c| c["aud"] = json!("billing-api"))),
        (
            "no audience",
            with_claims(&|c| {
                c.as_object_mut().unwrap().remove("aud");
            }),
        ),
        (
            "no exp",
            with_claims(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
        ),
        (
            "no subject",
            with_claims(&|c| {
                c.as_object_mut().unwrap().remove("sub");
            }),
        ),
        ("over-size token", huge),
        ("garbage", "not-a-token".to_string()),
    ];
    // An unknown critical header, signed by the real key: valid signature, still refused.
    let crit = {
        let header = json!({"alg": "ES256", "kid": "ec-1", "crit": ["exp"], "exp": 1});
        let signing_input = format!("{}.{}", tokens::b64(&header), tokens::b64(&good));
        let signature = jsonwebtoken::crypto::sign(signing_input.as_bytes(), &ec.encoding, Algorithm::ES256).unwrap();
        format!("{signing_input}.{signature}")
    };
    cases.push(("unknown crit", crit));
    // A real key's type with another curve's algorithm.
    cases.push(("ES384 header on a P-256 key", {
        let header = json!({"alg": "ES384", "kid": "ec-1"});
        forge(&header, &good, parts[2])
    }));

    for (case, token) in &cases {
        refused(&bearer(&url, token).await, token, case);
    }

    // The right token in the wrong place is no credential at all.
    let misplaced = [
        call(&format!("{url}?access_token={valid}"), &[]).await,
        call(&url, &[("x-token", &valid)]).await,
        call(&url, &[("cookie", &format!("access_token={valid}"))]).await,
        call(&url, &[("authorization", &format!("Basic {valid}"))]).await,
        call(&url, &[("authorization", &valid)]).await,
    ];
    for reply in misplaced {
        assert_eq!(reply.status, 401, "{}", reply.body);
        assert_eq!(reply.headers["www-authenticate"], "Bearer realm=\"palisade\"");
    }
    // Two Authorization headers are ambiguous, even if one is valid.
    let twice = call(
        &url,
        &[
            ("authorization", &format!("Bearer {valid}")),
            ("authorization", "Bearer x.y.z"),
        ],
    )
    .await;
    assert_eq!(twice.status, 401);
}

#[tokio::test]
async fn tokens_from_a_header_or_cookie_and_shared_secrets() {
    let echo = support::echo("orders").await;
    let secret = "0123456789abcdef0123456789abcdef-long-enough";
    std::env::set_var("PALISADE_TEST_HS_SECRET", secret);
    let providers = format!(
        "    hs:\n      issuer: {ISSUER}\n      audiences: [{AUDIENCE}]\n      keys: {{ shared_secret: \"${{PALISADE_TEST_HS_SECRET}}\" }}\n      token: {{ cookie: session }}\n"
    );
    let gw = support::start(&config(echo, &providers, "", "[{ jwt: hs }]")).await;
    let token = tokens::sign_with(
        Algorithm::HS256,
        None,
        &claims("carol"),
        &EncodingKey::from_secret(secret.as_bytes()),
    );
    let reply = call(
        &gw.url("/orders"),
        &[("cookie", &format!("theme=dark; session={token}"))],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(echoed(&reply.body)["headers"]["x-palisade-subject"][0], "carol");
    // The same token as a bearer is not where this provider looks.
    assert_eq!(bearer(&gw.url("/orders"), &token).await.status, 401);
    let wrong_secret = tokens::sign_with(
        Algorithm::HS256,
        None,
        &claims("carol"),
        &EncodingKey::from_secret(b"another-secret-of-32-bytes-or-more!!"),
    );
    let reply = call(&gw.url("/orders"), &[("cookie", &format!("session={wrong_secret}"))]).await;
    assert_eq!(reply.status, 401);
}

#[tokio::test]
async fn audiences_are_required_unless_any_is_written_out() {
    let dir = tempfile::tempdir().unwrap();
    let errors = support::config_errors(
        dir.path(),
        "clusters:\n  c: { targets: [\"127.0.0.1:9\"] }\nauthentication:\n  jwt_providers:\n    quiet:\n      issuer: https://idp.test\n      keys: { jwks: '{\"keys\": []}' }\n    empty:\n      issuer: https://idp.test\n      audiences: []\n      keys: { jwks: '{\"keys\": []}' }\n  introspection:\n    corp: { endpoint: \"https://idp.test/introspect\", client_id: g, client_secret: \"${HOME}\" }\nroutes:\n  - { name: r, match: { prefix: / }, cluster: c, public: true }\n",
    )
    .await;
    for expected in [
        "jwt provider \"quiet\": audiences is required",
        "jwt provider \"empty\": audiences is empty",
        "introspection \"corp\": audiences is required",
    ] {
        assert!(errors.contains(expected), "missing {expected:?} in:\n{errors}");
    }
    let word = support::config_errors(
        dir.path(),
        "clusters:\n  c: { targets: [\"127.0.0.1:9\"] }\nauthentication:\n  jwt_providers:\n    word:\n      issuer: https://idp.test\n      audiences: all\n      keys: { jwks: '{\"keys\": []}' }\nroutes:\n  - { name: r, match: { prefix: / }, cluster: c, public: true }\n",
    )
    .await;
    assert!(
        word.contains("audiences must be a list of audiences or `any`, not \"all\""),
        "{word}"
    );
    // Written out, it loads, and check-config names it as a warning with its place.
    let path = dir.path().join("any.yaml");
    let jwks = serde_json::to_string(&tokens::jwks([&EcKey::generate("k").jwk])).unwrap();
    std::fs::write(
        &path,
        support::with_listeners(&format!("clusters:\n  c: {{ targets: [\"127.0.0.1:9\"] }}\nauthentication:\n  jwt_providers:\n    open:\n      issuer: https://idp.test\n      audiences: any\n      keys: {{ jwks: '{jwks}' }}\nroutes:\n  - {{ name: r, match: {{ prefix: / }}, cluster: c, public: true }}\n")),
    )
    .unwrap();
    let config = palisade_gateway::check_config(&path, palisade_core::ConfigKind::Gateway)
        .await
        .expect("loads");
    let warnings = palisade_core::warnings(&config, "any.yaml");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].to_string().starts_with("any.yaml:"), "{}", warnings[0]);
    assert!(warnings[0].message.contains("audiences: any"), "{}", warnings[0]);
}

/// A provider whose key set never loaded answers its tokens 503; `/readyz` says so, and stays 200
/// (everything else is served).
#[tokio::test]
async fn readyz_names_a_key_set_that_never_loaded() {
    let echo = support::echo("orders").await;
    let dead = support::dead_address().await;
    let providers = format!(
        "    down:\n      issuer: {ISSUER}\n      audiences: [{AUDIENCE}]\n      keys: {{ jwks_url: \"http://{dead}/jwks\", refresh: {{ timeout: 200ms }} }}\n"
    );
    let gw = support::start(&config(echo, &providers, "", "[{ jwt: down }]")).await;
    let (status, body) = support::get(&format!("http://{}/readyz", gw.gateway.admin_addr())).await;
    assert_eq!(status, 200, "{body}");
    let readyz: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(readyz["degraded"][0]["dependency"], "jwt_key_set", "{readyz}");
    assert_eq!(readyz["degraded"][0]["provider"], "down", "{readyz}");
}

/// `check-config` stays on this machine unless asked: it fetches no key set, and with `--online`
/// it does, and says when one cannot be loaded.
#[tokio::test]
async fn check_config_fetches_key_sets_only_when_online() {
    let key = EcKey::generate("k1");
    let idp = support::idp::start(tokens::jwks([&key.jwk])).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    let write = |jwks_url: &str| {
        let providers = format!(
            "    idp:\n      issuer: {ISSUER}\n      audiences: [{AUDIENCE}]\n      keys: {{ jwks_url: \"{jwks_url}\", refresh: {{ timeout: 300ms }} }}\n"
        );
        let yaml = config("127.0.0.1:9".parse().unwrap(), &providers, "", "[{ jwt: idp }]");
        std::fs::write(&path, support::with_listeners(&yaml)).unwrap();
    };
    write(&format!("{}/jwks", idp.url()));
    let kind = palisade_core::ConfigKind::Gateway;
    palisade_gateway::check_config(&path, kind).await.expect("valid");
    assert_eq!(idp.fetches(), 0, "an offline check fetches nothing");
    palisade_gateway::check_config_with(&path, kind, true)
        .await
        .expect("loads online");
    assert!(idp.fetches() >= 1, "an online check loads the key set");
    let dead = support::dead_address().await;
    write(&format!("http://{dead}/jwks"));
    palisade_gateway::check_config(&path, kind)
        .await
        .expect("offline, a dead IdP is not noticed");
    let errors = palisade_gateway::check_config_with(&path, kind, true)
        .await
        .expect_err("online, it is");
    assert!(errors.to_string().contains("could not be loaded"), "{errors}");
}

#[tokio::test]
async fn a_token_minted_for_another_audience_is_refused() {
    let ec = EcKey::generate("ec-1");
    let gw = one_provider(&ec).await;
    let mut other = claims("mallory");
    other["aud"] = json!("billing");
    let reply = bearer(&gw.url("/orders"), &ec.sign(&other)).await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    let mut none = claims("mallory");
    none.as_object_mut().unwrap().remove("aud");
    assert_eq!(
        bearer(&gw.url("/orders"), &ec.sign(&none)).await.status,
        401,
        "no aud at all"
    );
    assert_eq!(bearer(&gw.url("/orders"), &ec.sign(&claims("frank"))).await.status, 200);
}

#[tokio::test]
async fn short_shared_secrets_and_hmac_with_public_keys_are_config_errors() {
    std::env::set_var("PALISADE_TEST_SHORT_SECRET", "too-short");
    let dir = tempfile::tempdir().unwrap();
    let errors = support::config_errors(
        dir.path(),
        "clusters:\n  c: { targets: [\"127.0.0.1:9\"] }\nauthentication:\n  jwt_providers:\n    short:\n      issuer: x\n      keys: { shared_secret: \"${PALISADE_TEST_SHORT_SECRET}\" }\n    mixed:\n      issuer: y\n      algorithms: [RS256, HS256]\n      keys: { jwks: '{\"keys\": []}' }\n    none:\n      issuer: z\n      algorithms: [none]\n      keys: { jwks_url: \"http://idp.example.com/jwks\" }\nroutes:\n  - { name: r, match: { prefix: / }, cluster: c }\n",
    )
    .await;
    for expected in [
        "shared_secret must be at least 32 bytes",
        "HS256: HS256/384/512 go with keys.shared_secret",
        "unknown or refused algorithm \"none\"",
        "must be https://",
        "route \"r\" has no authentication",
    ] {
        assert!(errors.contains(expected), "missing {expected:?} in:\n{errors}");
    }
}

#[tokio::test]
async fn jwks_rotation_is_picked_up_and_an_idp_outage_keeps_the_last_keys() {
    let echo = support::echo("orders").await;
    let first = EcKey::generate("k1");
    let second = EcKey::generate("k2");
    let idp = support::idp::start(tokens::jwks([&first.jwk])).await;
    let providers = format!(
        "    idp:\n      issuer: {ISSUER}\n      audiences: [{AUDIENCE}]\n      keys:\n        jwks_url: {}/jwks\n        refresh: {{ interval: 1h, min_interval: 200ms }}\n",
        idp.url()
    );
    let gw = support::start(&config(echo, &providers, "", "[{ jwt: idp }]")).await;
    let url = gw.url("/orders");
    assert_eq!(bearer(&url, &first.sign(&claims("a"))).await.status, 200);
    assert_eq!(idp.fetches(), 1);

    // The IdP rotates: a token with the new kid triggers a refresh and passes, without a restart.
    idp.set_jwks(tokens::jwks([&first.jwk, &second.jwk]));
    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    assert_eq!(bearer(&url, &second.sign(&claims("b"))).await.status, 200);

    // Random kids cannot make the gateway hammer the IdP: at most one refresh per min_interval.
    let before = idp.fetches();
    for i in 0..20 {
        let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
        header.kid = Some(format!("random-{i}"));
        let token = jsonwebtoken::encode(&header, &claims("x"), &second.encoding).unwrap();
        assert_eq!(bearer(&url, &token).await.status, 401);
    }
    assert!(
        idp.fetches() - before <= 2,
        "{} fetches for 20 unknown kids",
        idp.fetches() - before
    );

    // The IdP goes down: new tokens signed with known keys still verify with the last good set.
    idp.fail(true);
    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    let third = EcKey::generate("k3");
    assert_eq!(
        bearer(&url, &third.sign(&claims("c"))).await.status,
        401,
        "unknown kid during the outage"
    );
    assert_eq!(
        bearer(&url, &first.sign(&claims("d"))).await.status,
        200,
        "last good keys keep serving"
    );
    assert_eq!(bearer(&url, &second.sign(&claims("e"))).await.status, 200);
}

#[tokio::test]
async fn oidc_discovery_finds_the_keys_and_refuses_a_document_for_another_issuer() {
    let echo = support::echo("orders").await;
    let key = EcKey::generate("d1");
    let idp = support::idp::start(tokens::jwks([&key.jwk])).await;
    let issuer = idp.url();
    let providers = format!(
        "    oidc:\n      issuer: {issuer}\n      audiences: [{AUDIENCE}]\n      keys: {{ discovery: true }}\n"
    );
    let gw = support::start(&config(echo, &providers, "", "[{ jwt: oidc }]")).await;
    let mut c = claims("dora");
    c["iss"] = json!(issuer);
    assert_eq!(bearer(&gw.url("/orders"), &key.sign(&c)).await.status, 200);

    // A discovery document naming another issuer is never trusted: no keys, so 503 (fail closed).
    let other = support::idp::start(tokens::jwks([&key.jwk])).await;
    *other.state.discovery_issuer.lock().unwrap() = Some("https://evil.test".into());
    let providers = format!(
        "    oidc:\n      issuer: {}\n      audiences: [{AUDIENCE}]\n      keys: {{ discovery: true, refresh: {{ timeout: 1s, min_interval: 1h }} }}\n",
        other.url()
    );
    let gw = support::start(&config(echo, &providers, "", "[{ jwt: oidc }]")).await;
    let mut c = claims("dora");
    c["iss"] = json!(other.url());
    let reply = bearer(&gw.url("/orders"), &key.sign(&c)).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(other.fetches(), 0);
}

#[tokio::test]
async fn api_keys_authenticate_from_config_and_a_reloadable_file() {
    let echo = support::echo("orders").await;
    let (key, hash) = palisade_auth::apikey::generate();
    let (file_key, file_hash) = palisade_auth::apikey::generate();
    let dir = tempfile::tempdir().unwrap();
    let keys_file = dir.path().join("keys.yaml");
    std::fs::write(&keys_file, "[]\n").unwrap();
    let ec = EcKey::generate("ec-1");
    let more = format!(
        "  api_keys:\n    keys:\n      - {{ name: reporting, hash: \"{hash}\", scopes: [orders:read] }}\n    file: {}\n",
        keys_file.display()
    );
    let yaml = config(
        echo,
        &tokens::provider_yaml("idp", &tokens::jwks([&ec.jwk]), ""),
        &more,
        "[{ jwt: idp }, api_key]",
    );
    let gw = support::start(&yaml).await;
    let url = gw.url("/orders");
    let reply = call(&url, &[("x-api-key", &key)]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let seen = &echoed(&reply.body)["headers"];
    assert_eq!(seen["x-palisade-subject"][0], "reporting");
    assert_eq!(seen["x-palisade-auth"][0], "api_key");
    assert!(
        seen.get("x-api-key").is_none(),
        "the upstream never sees the key itself"
    );

    // Any accepted method may succeed: a broken JWT beside a good key still passes.
    assert_eq!(
        call(&url, &[("x-api-key", &key), ("authorization", "Bearer a.b.c")])
            .await
            .status,
        200
    );
    let wrong = call(&url, &[("x-api-key", "psk_not-a-real-key")]).await;
    assert_eq!(wrong.status, 401);
    assert!(!wrong.body.contains("psk_not-a-real-key"));
    assert!(wrong.headers["www-authenticate"].to_str().unwrap().contains("ApiKey"));
    assert_eq!(call(&url, &[("x-api-key", &file_key)]).await.status, 401);

    // A key added to the file works after the reload, without touching the config.
    std::fs::write(&keys_file, format!("- {{ name: batch, hash: \"{file_hash}\" }}\n")).unwrap();
    gw.gateway.reload().await.expect("reload");
    let reply = call(&url, &[("x-api-key", &file_key)]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(echoed(&reply.body)["headers"]["x-palisade-subject"][0], "batch");

    // A broken key file is refused with its location; the keys in force stay.
    std::fs::write(&keys_file, "- { name: x, hash: nope }\n").unwrap();
    let errors = gw.gateway.reload().await.unwrap_err().to_string();
    assert!(errors.contains("keys.yaml:1:"), "{errors}");
    assert_eq!(call(&url, &[("x-api-key", &file_key)]).await.status, 200);
}

#[tokio::test]
async fn introspection_accepts_active_tokens_caches_them_and_fails_closed() {
    let echo = support::echo("orders").await;
    let idp = support::idp::start(tokens::jwks(std::iter::empty())).await;
    std::env::set_var("PALISADE_TEST_INTROSPECTION_SECRET", "s3cret");
    *idp.state.client_basic.lock().unwrap() = format!("Basic {}", base64_of("gateway:s3cret"));
    idp.state.introspection.lock().unwrap().insert(
        "opaque-good".into(),
        json!({"active": true, "sub": "erin", "scope": "orders:read", "exp": tokens::now() + 600, "aud": [AUDIENCE, "other"]}),
    );
    // Active, but minted for another service of the same authorization server.
    idp.state.introspection.lock().unwrap().insert(
        "opaque-elsewhere".into(),
        json!({"active": true, "sub": "erin", "exp": tokens::now() + 600, "aud": "billing"}),
    );
    let more = format!(
        "  introspection:\n    corp:\n      endpoint: {}/introspect\n      client_id: gateway\n      client_secret: \"${{PALISADE_TEST_INTROSPECTION_SECRET}}\"\n      audiences: [{AUDIENCE}]\n      timeout: 1s\n",
        idp.url()
    );
    let gw = support::start(
        &config(echo, "    {}\n", &more, "[{ introspection: corp }]")
            .replace("jwt_providers:\n    {}\n", "jwt_providers: {}\n"),
    )
    .await;
    let url = gw.url("/orders");
    let reply = bearer(&url, "opaque-good").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(echoed(&reply.body)["headers"]["x-palisade-subject"][0], "erin");
    assert_eq!(bearer(&url, "opaque-good").await.status, 200);
    assert_eq!(
        idp.state.introspections.load(Ordering::SeqCst),
        1,
        "the second request is answered from the cache"
    );
    let elsewhere = bearer(&url, "opaque-elsewhere").await;
    assert_eq!(elsewhere.status, 401, "{}", elsewhere.body);
    assert!(elsewhere.body.contains("audience"), "{}", elsewhere.body);
    let inactive = bearer(&url, "opaque-revoked").await;
    assert_eq!(inactive.status, 401);
    assert!(inactive.body.contains("not active"));

    // The endpoint is down: a token not in the cache is a 503, never a pass.
    idp.fail(true);
    let reply = bearer(&url, "opaque-new").await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.headers["retry-after"], "5");
    assert_eq!(
        bearer(&url, "opaque-good").await.status,
        200,
        "cached answers still hold"
    );
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test]
async fn the_internal_token_verifies_against_the_admin_key_set() {
    let echo = support::echo("orders").await;
    let ec = EcKey::generate("ec-1");
    let identity = "  identity:\n    strip_authorization: true\n    internal_token: { ttl: 30s, audience: orders }\n";
    let gw = support::start(&config(
        echo,
        &tokens::provider_yaml("idp", &tokens::jwks([&ec.jwk]), ""),
        identity,
        "[{ jwt: idp }]",
    ))
    .await;
    let reply = bearer(&gw.url("/orders"), &ec.sign(&claims("frank"))).await;
    assert_eq!(reply.status, 200);
    let seen = &echoed(&reply.body)["headers"];
    assert!(seen.get("authorization").is_none(), "the client's token is stripped");
    let internal = seen["x-palisade-token"][0]
        .as_str()
        .expect("internal token")
        .to_string();

    let (status, jwks) = support::get(&format!("http://{}/.well-known/jwks.json", gw.gateway.admin_addr())).await;
    assert_eq!(status, 200);
    let jwks: Value = serde_json::from_str(&jwks).unwrap();
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwks["keys"][0].clone()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(Algorithm::ES256);
    validation.set_audience(&["orders"]);
    validation.set_issuer(&["palisade"]);
    let decoded = jsonwebtoken::decode::<Value>(
        &internal,
        &jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap(),
        &validation,
    )
    .expect("the internal token verifies");
    assert_eq!(decoded.claims["sub"], "frank");
    assert!(decoded.claims["exp"].as_u64().unwrap() <= tokens::now() + 31);
}

#[tokio::test]
async fn a_key_removed_from_the_key_file_stops_working_at_reload_even_for_cached_tokens() {
    let echo = support::echo("orders").await;
    let old = EcKey::generate("old");
    let new = EcKey::generate("new");
    let dir = tempfile::tempdir().unwrap();
    let keys_file = dir.path().join("jwks.json");
    std::fs::write(&keys_file, tokens::jwks([&old.jwk, &new.jwk]).to_string()).unwrap();
    let providers = format!(
        "    idp:\n      issuer: {ISSUER}\n      audiences: [{AUDIENCE}]\n      keys: {{ jwks_file: {} }}\n",
        keys_file.display()
    );
    let gw = support::start(&config(echo, &providers, "", "[{ jwt: idp }]")).await;
    let url = gw.url("/orders");
    let by_old_key = old.sign(&claims("gina"));
    assert_eq!(bearer(&url, &by_old_key).await.status, 200, "verified, and now cached");

    std::fs::write(&keys_file, tokens::jwks([&new.jwk]).to_string()).unwrap();
    gw.gateway.reload().await.expect("reload");
    let reply = bearer(&url, &by_old_key).await;
    refused(&reply, &by_old_key, "a token signed by a removed key");
    assert_eq!(bearer(&url, &new.sign(&claims("gina"))).await.status, 200);

    // Decisions are counted by route, outcome and reason code: never by subject or token.
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("palisade_auth_decisions_total{route=\"orders\",outcome=\"authenticated\",reason=\"jwt\"} 2"),
        "{metrics}"
    );
    assert!(metrics
        .contains("palisade_auth_decisions_total{route=\"orders\",outcome=\"refused\",reason=\"unknown_key\"} 1"));
    assert!(!metrics.contains("gina") && !metrics.contains(&by_old_key));
}
