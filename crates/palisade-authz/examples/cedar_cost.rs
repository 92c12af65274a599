//! Run by hand: `cargo run --release -p palisade-authz --example cedar_cost [ROUNDS]`. Times one
//! Cedar decision of the benchmark policy set (bench/authz-policies.cedar) when no decision repeats.
//! Under callgrind (`valgrind --tool=callgrind target/release/examples/cedar_cost 20000`) it counts
//! instructions instead, which a shared VM cannot make noisy.
use std::sync::Arc;
use std::time::Instant;

use palisade_auth::{AuthMethodKind, Principal, PrincipalKind};
use palisade_authz::{CedarPolicies, RequestFacts};
use palisade_core::config::{unspanned, PolicySetConfig};

fn main() {
    let bench = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench");
    let config = unspanned(PolicySetConfig {
        schema: unspanned(bench.join("authz.cedarschema")),
        files: vec![unspanned(bench.join("authz-policies.cedar"))],
        context_headers: vec!["x-tenant".into()],
    });
    let policies = CedarPolicies::load("bench", &config).expect("bench policies load");
    let claims = serde_json::json!({"sub": "alice", "iss": "https://idp.bench", "aud": "bench-api",
        "scope": "orders:read", "exp": 4_000_000_000u64});
    let principal = Arc::new(Principal {
        kind: PrincipalKind::User,
        method: AuthMethodKind::Jwt,
        subject: "alice".into(),
        issuer: "https://idp.bench".into(),
        scopes: vec!["orders:read".into()],
        roles: vec![],
        groups: vec![],
        claims: claims.as_object().cloned().unwrap_or_default(),
        expires_at: Some(4_000_000_000),
    });
    let headers = http::HeaderMap::new();
    let action: Arc<str> = Arc::from("GET");
    let rounds: u32 = std::env::args()
        .nth(1)
        .map_or(Ok(200_000), |arg| arg.parse())
        .expect("ROUNDS is a number");
    let mut allowed = 0u32;
    let started = Instant::now();
    for n in 0..rounds {
        let path = format!("/cedar/{n}");
        let params = [("id".to_string(), n.to_string())];
        let facts = RequestFacts {
            principal: &principal,
            method: &http::Method::GET,
            route: "cedar",
            path: &path,
            params: &params,
            client_ip: "127.0.0.1".parse().expect("address"),
            headers: &headers,
            mtls_identity: None,
            unix_time: 1_790_000_000,
        };
        allowed += u32::from(policies.decide(&facts, &action).allowed);
    }
    let per = started.elapsed() / rounds;
    println!("{rounds} distinct decisions, {allowed} allowed, {per:?} per decision");
}
