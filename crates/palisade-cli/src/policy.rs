//! `palisade policy test FILE.yaml` and `palisade policy explain FILE.yaml --case NAME`: authorization
//! tested as code. The file names a gateway config and lists cases, each a request, a principal and
//! the expected decision; the cases run through the gateway's own routing and authorization.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use palisade_auth::{AuthMethodKind, Principal, PrincipalKind};
use palisade_gateway::policy_check::{PolicyCase, PolicyChecker, Verdict};
use serde::Deserialize;

use crate::report::emit_line;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    /// The gateway config, relative to the test file.
    config: PathBuf,
    cases: Vec<TestCase>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestCase {
    name: String,
    request: CaseRequest,
    principal: CasePrincipal,
    expect: Expected,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseRequest {
    method: String,
    path: String,
    #[serde(default = "default_host")]
    host: String,
    #[serde(default = "default_ip")]
    ip: IpAddr,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    mtls_identity: Option<String>,
    /// Unix seconds; default now.
    #[serde(default)]
    time: Option<u64>,
}

fn default_host() -> String {
    "localhost".into()
}

fn default_ip() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CasePrincipal {
    #[serde(default = "default_kind")]
    kind: String,
    sub: String,
    #[serde(default)]
    iss: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    claims: serde_json::Map<String, serde_json::Value>,
}

fn default_kind() -> String {
    "user".into()
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
enum Expected {
    /// The request reaches the service (allowed, or a public route).
    Allow,
    /// It does not (denied, not routed, refused path).
    Deny,
}

struct Loaded {
    checker: PolicyChecker,
    cases: Vec<TestCase>,
}

async fn load(file: &Path) -> anyhow::Result<Loaded> {
    let test: TestFile = palisade_core::load_yaml_file(file).map_err(|e| anyhow::anyhow!("{e}"))?;
    let config = file.parent().unwrap_or(Path::new(".")).join(&test.config);
    let checker = PolicyChecker::load(&config)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("loading {}", config.display()))?;
    Ok(Loaded {
        checker,
        cases: test.cases,
    })
}

fn decide(checker: &PolicyChecker, case: &TestCase) -> anyhow::Result<Verdict> {
    let principal = std::sync::Arc::new(principal_of(&case.principal)?);
    let headers: Vec<(String, String)> = case.request.headers.clone().into_iter().collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let method = case
        .request
        .method
        .parse()
        .with_context(|| format!("case {:?}: bad method", case.name))?;
    Ok(checker.decide(&PolicyCase {
        method,
        path: &case.request.path,
        host: &case.request.host,
        client_ip: case.request.ip,
        headers: &headers,
        mtls_identity: case.request.mtls_identity.as_deref(),
        principal: &principal,
        unix_time: case.request.time.unwrap_or(now),
    }))
}

fn principal_of(case: &CasePrincipal) -> anyhow::Result<Principal> {
    let kind = match case.kind.as_str() {
        "user" => PrincipalKind::User,
        "service" => PrincipalKind::Service,
        "api_key" => PrincipalKind::ApiKey,
        other => anyhow::bail!("principal kind {other:?}: expected user, service or api_key"),
    };
    Ok(Principal {
        kind,
        method: AuthMethodKind::Jwt,
        subject: case.sub.clone(),
        issuer: case.iss.clone(),
        scopes: case.scopes.clone(),
        roles: case.roles.clone(),
        groups: case.groups.clone(),
        claims: case.claims.clone(),
        expires_at: None,
    })
}

fn describe(verdict: &Verdict) -> String {
    // Cedar actions are named as a policy would write them.
    let action = |action: &Option<String>| match action {
        Some(action) => format!(", as Action::{action:?}"),
        None => String::new(),
    };
    match verdict {
        Verdict::Allow {
            route,
            decided_by,
            action: cedar,
            ..
        } => format!("allow (route {route}, by {decided_by}{})", action(cedar)),
        Verdict::Deny {
            route,
            decided_by,
            action: cedar,
            ..
        } => format!("deny (route {route}, by {decided_by}{})", action(cedar)),
        Verdict::Public { route } => format!("allow (route {route} is public)"),
        Verdict::NotRouted { reason } => format!("deny (not routed: {reason})"),
    }
}

/// Runs every case; prints one line each and a summary; exit 1 when any case fails.
pub async fn test(file: &Path) -> anyhow::Result<ExitCode> {
    let loaded = load(file).await?;
    let mut failures = 0;
    for case in &loaded.cases {
        let verdict = decide(&loaded.checker, case)?;
        let got = if verdict.reaches_upstream() {
            Expected::Allow
        } else {
            Expected::Deny
        };
        if got == case.expect {
            emit_line(&format!("ok    {}: {}", case.name, describe(&verdict)))?;
        } else {
            failures += 1;
            emit_line(&format!(
                "FAIL  {}: expected {:?}, got {}",
                case.name,
                case.expect,
                describe(&verdict)
            ))?;
        }
    }
    emit_line(&format!("{} cases, {} failed", loaded.cases.len(), failures))?;
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Answers one case with the route and the deciding rule or policies.
pub async fn explain(file: &Path, name: &str) -> anyhow::Result<ExitCode> {
    let loaded = load(file).await?;
    let case = loaded
        .cases
        .iter()
        .find(|c| c.name == name)
        .with_context(|| format!("no case named {name:?} in {}", file.display()))?;
    let verdict = decide(&loaded.checker, case)?;
    emit_line(&format!("{}: {}", case.name, describe(&verdict)))?;
    // Why a policy did not count: a failing permit permits nothing, a failing forbid denies.
    if let Verdict::Allow { failures, .. } | Verdict::Deny { failures, .. } = &verdict {
        for failure in failures {
            emit_line(&format!(
                "  policy {} failed to evaluate ({}): {}",
                failure.policy, failure.kind, failure.message
            ))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
