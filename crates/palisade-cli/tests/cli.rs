//! The `palisade` binary as users run it: exit codes, diagnostics, signals.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

mod support;

use support::*;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Copies an example next to freshly generated TLS files, so examples can name `certs/…`.
fn example_in_temp(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join(name);
    std::fs::copy(repository().join("examples").join(name), &target).unwrap();
    std::fs::create_dir_all(dir.path().join("certs")).unwrap();
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.path().join("certs/gateway.crt"), generated.cert.pem()).unwrap();
    std::fs::write(
        dir.path().join("certs/gateway.key"),
        generated.signing_key.serialize_pem(),
    )
    .unwrap();
    // Files examples name beside them (policies, IP lists, OpenAPI documents) live in subfolders.
    for entry in std::fs::read_dir(repository().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            copy_dir(&path, &dir.path().join(path.file_name().unwrap()));
        }
    }
    let clients_ca = rcgen::generate_simple_self_signed(vec!["clients-ca".to_string()]).unwrap();
    std::fs::write(dir.path().join("certs/clients-ca.pem"), clients_ca.cert.pem()).unwrap();
    (dir, target)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

#[test]
fn every_example_config_passes_check_config() {
    let mut checked = 0;
    for entry in std::fs::read_dir(repository().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let (_dir, copy) = example_in_temp(&name);
        // The secrets the examples reference (by name only: the files never hold them).
        let output = palisade()
            .arg("check-config")
            .arg(&copy)
            .env("IDP_CLIENT_SECRET", "example-client-secret")
            .env("WEB_JWT_SECRET", "an-example-secret-of-at-least-32-bytes")
            .env("PALISADE_ADMIN_TOKEN", "adm_example_token")
            .env("ALERT_WEBHOOK_TOKEN", "Bearer example-hook-token")
            .env("FALCO_ALERT_TOKEN", "falco-example-token")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 3);
}

#[test]
fn check_config_prints_every_error_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "listeners:\n  - { name: p, address: 'nope' }\nclusters:\n  c: { targets: ['127.0.0.1:9'] }\nroutes:\n  - { name: a, match: { path: \"/x/{id}\" }, cluster: c, public: true }\n  - { name: b, match: { path: \"/x/{other}\" }, cluster: c, public: true }\n  - { name: c, match: { prefix: / }, cluster: missing, public: true }\n",
    )
    .unwrap();
    let output = palisade().arg("check-config").arg(&path).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let file = path.display().to_string();
    assert!(
        stderr.contains(&format!("{file}:2:")) && stderr.contains("not an address"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{file}:7:")) && stderr.contains("ties with route"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{file}:8:")) && stderr.contains("unknown cluster"),
        "{stderr}"
    );
    assert!(stderr.contains("3 error(s) found"), "{stderr}");
}

#[test]
fn version_prints_the_crate_version() {
    let output = palisade().arg("version").output().unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains(env!("CARGO_PKG_VERSION")));
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

fn config_with_route(path: &str) -> String {
    format!(
        "listeners: [{{ name: public, address: '127.0.0.1:0' }}]\nadmin: {{ address: '127.0.0.1:0' }}\nreload: {{ watch: false }}\naccess_log: {{ enabled: false }}\nclusters:\n  c: {{ targets: ['127.0.0.1:9'] }}\nroutes:\n  - {{ name: r, match: {{ path: {path} }}, cluster: c, public: true }}\n"
    )
}

#[test]
fn sighup_reloads_and_sigterm_drains_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gw.yaml");
    std::fs::write(&config, config_with_route("/before")).unwrap();
    let mut gateway = start_gateway(&config);
    // The target refuses connections, so a routed request is 502 and an unrouted one 404.
    assert_eq!(http_status(&gateway.address, "/before"), 502);
    assert_eq!(http_status(&gateway.address, "/after"), 404);
    std::fs::write(&config, config_with_route("/after")).unwrap();
    signal(&gateway.child, "HUP");
    assert!(
        wait_for(|| http_status(&gateway.address, "/after") == 502),
        "SIGHUP reloaded the config"
    );
    signal(&gateway.child, "TERM");
    let exited = wait_for(|| matches!(gateway.child.try_wait(), Ok(Some(_))));
    assert!(exited, "SIGTERM stops the gateway");
    assert_eq!(gateway.child.wait().unwrap().code(), Some(0));
}

/// A SIGTERM that arrives while the gateway is still starting (its listener already bound) drains it
/// like any other: exit code 0, never killed by the signal's default action.
#[test]
fn sigterm_during_start_up_drains_instead_of_killing() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("gw.yaml");
    std::fs::write(
        &config,
        config_with_route("/x").replace("'127.0.0.1:0' }]", &format!("'127.0.0.1:{port}' }}]")),
    )
    .unwrap();
    let mut child = palisade()
        .args(["gateway", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // As soon as the listener accepts: the rest of the start-up is still running.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "the gateway listens");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    signal(&child, "TERM");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "drained and exited 0, not killed: {status:?}");
}

fn run_ok(args: &[&str]) -> String {
    let output = palisade().args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A gateway whose `/secure` route accepts the JWKS in `jwks_file` and the API key `hash`; the
/// upstream refuses connections, so 502 means "authenticated" and 401 "refused".
fn secure_config(dir: &Path, jwks: &str, hash: &str) -> PathBuf {
    std::fs::write(dir.join("jwks.json"), jwks).unwrap();
    let config = dir.join("gw.yaml");
    std::fs::write(
        &config,
        format!(
            "listeners: [{{ name: public, address: '127.0.0.1:0' }}]\nadmin: {{ address: '127.0.0.1:0' }}\nreload: {{ watch: false }}\naccess_log: {{ path: stdout }}\nclusters:\n  c: {{ targets: ['127.0.0.1:9'], retries: {{ attempts: 0 }} }}\nauthentication:\n  jwt_providers:\n    dev:\n      issuer: https://issuer.test\n      audiences: [api]\n      keys: {{ jwks_file: jwks.json }}\n  api_keys:\n    keys: [{{ name: ci, hash: \"{hash}\" }}]\nroutes:\n  - {{ name: secure, match: {{ prefix: /secure }}, cluster: c, authentication: [{{ jwt: dev }}, api_key], authorization: {{ allow: authenticated }} }}\n"
        ),
    )
    .unwrap();
    config
}

#[test]
fn apikey_and_token_helpers_mint_credentials_the_gateway_accepts_and_no_secret_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("signing.pem");
    std::fs::write(&key_path, rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
    let key_arg = key_path.to_str().unwrap();

    let printed = run_ok(&["apikey", "new", "--name", "ci", "--scopes", "orders:read,orders:write"]);
    let api_key = printed
        .split_whitespace()
        .find(|w| w.starts_with("psk_"))
        .expect("a key")
        .to_string();
    let hash_start = printed.find("sha256:").expect("a hash");
    let hash = &printed[hash_start..hash_start + 71];
    assert!(printed.contains("scopes: [orders:read, orders:write]"), "{printed}");

    let jwks = run_ok(&["token", "--key", key_arg, "--jwks"]);
    let token = run_ok(&[
        "token",
        "--key",
        key_arg,
        "--sub",
        "alice",
        "--iss",
        "https://issuer.test",
        "--aud",
        "api",
        "--scope",
        "orders:read",
        "--ttl",
        "5m",
    ]);
    let token = token.trim();
    let expired = run_ok(&[
        "token",
        "--key",
        key_arg,
        "--iss",
        "https://issuer.test",
        "--aud",
        "api",
        "--ttl",
        "0s",
        "--claim",
        "exp=1",
    ]);
    let expired = expired.trim();

    let config = secure_config(dir.path(), &jwks, hash);
    let (mut gateway, captured) = start_gateway_capturing(&config, "debug");
    let address = gateway.address.clone();
    let bearer = format!("Bearer {token}");
    assert_eq!(request_status(&address, "/secure", &[("authorization", &bearer)]), 502);
    assert_eq!(request_status(&address, "/secure", &[("x-api-key", &api_key)]), 502);
    assert_eq!(request_status(&address, "/secure", &[]), 401);
    let expired_bearer = format!("Bearer {expired}");
    assert_eq!(
        request_status(&address, "/secure", &[("authorization", &expired_bearer)]),
        401
    );
    let wrong_key = format!("{api_key}x");
    assert_eq!(request_status(&address, "/secure", &[("x-api-key", &wrong_key)]), 401);
    let cookie = "session=cookie-secret-value";
    assert_eq!(
        request_status(
            &address,
            "/secure",
            &[("cookie", cookie), ("authorization", "Basic dXNlcjpodW50ZXIy")]
        ),
        401
    );

    signal(&gateway.child, "TERM");
    assert!(wait_for(|| matches!(gateway.child.try_wait(), Ok(Some(_)))));
    // The gateway writes every queued access-log line before it exits; the reader threads may still be
    // catching up on the pipes.
    let logged = |text: &str| captured.lock().unwrap().iter().any(|line| line.contains(text));
    assert!(wait_for(
        || logged("\"principal\":\"ci\"") && logged("\"principal\":\"alice\"")
    ));
    let lines = captured.lock().unwrap().join("\n");
    assert!(
        lines.contains("\"principal\":\"alice\""),
        "the access log names the subject:\n{lines}"
    );
    assert!(lines.contains("\"principal\":\"ci\""));
    let signature = token.rsplit('.').next().unwrap();
    for secret in [
        token,
        signature,
        expired,
        &api_key,
        &wrong_key,
        "cookie-secret-value",
        "dXNlcjpodW50ZXIy",
    ] {
        assert!(!lines.contains(secret), "a secret reached the logs: {secret}\n{lines}");
    }
}

/// `palisade policy explain` of one case of the example's tests: what it prints.
fn policy_explain(dir: &Path, case: &str) -> String {
    let output = palisade()
        .args(["policy", "explain"])
        .arg(dir.join("authorization/tests.yaml"))
        .args(["--case", case])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn policy_test_passes(dir: &Path) -> (bool, String) {
    let output = palisade()
        .args(["policy", "test"])
        .arg(dir.join("authorization/tests.yaml"))
        .output()
        .unwrap();
    (output.status.success(), support::output_text(&output))
}

/// `palisade … | head`: the reader goes away before the report is written. The command must end
/// with its own exit code, not the panic `println!` raises on a closed pipe.
#[test]
fn reports_to_a_closed_pipe_end_quietly() {
    let (dir, _) = example_in_temp("authorization.yaml");
    let tests = dir.path().join("authorization/tests.yaml");
    let runs: [&[&std::ffi::OsStr]; 2] = [
        &["policy".as_ref(), "test".as_ref(), tests.as_os_str()],
        &["scan".as_ref(), "--list-rules".as_ref(), "table".as_ref()],
    ];
    for args in runs {
        let mut child = palisade()
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Close the read end before the command has written anything.
        drop(child.stdout.take());
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(output.status.code(), Some(0), "{args:?}: {stderr}");
    }
}

#[test]
fn policy_test_runs_the_example_cases_and_fails_on_a_wrong_expectation() {
    let (dir, _) = example_in_temp("authorization.yaml");
    let (passed, output) = policy_test_passes(dir.path());
    assert!(passed, "{output}");
    assert!(output.contains("18 cases, 0 failed"), "{output}");

    let explained = policy_explain(dir.path(), "a suspended admin is stopped by the forbid");
    assert!(
        explained.contains("deny (route user-orders, by suspended-accounts, as Action::\"cancelOrder\")"),
        "{explained}"
    );
    // A policy that fails to evaluate is named with Cedar's message (this one overflows on
    // today's clock; a failing permit permits nothing, so the answer stays the same).
    let policies = dir.path().join("authorization/shop.cedar");
    let mut text = std::fs::read_to_string(&policies).unwrap();
    text.push_str(
        "\n@id(\"overflowing\") permit (principal, action, resource) when { context.time * 10000000000 > 0 };\n",
    );
    std::fs::write(&policies, text).unwrap();
    let explained = policy_explain(dir.path(), "a suspended admin is stopped by the forbid");
    assert!(explained.contains("by suspended-accounts"), "{explained}");
    assert!(
        explained.contains("  policy overflowing failed to evaluate (integer_overflow): "),
        "{explained}"
    );

    let tests = dir.path().join("authorization/tests.yaml");
    let text = std::fs::read_to_string(&tests).unwrap();
    std::fs::write(&tests, text.replacen("expect: deny", "expect: allow", 1)).unwrap();
    let (passed, output) = policy_test_passes(dir.path());
    assert!(!passed, "{output}");
    assert!(
        output.contains("FAIL  an owner cannot read someone else's order"),
        "{output}"
    );
}

/// The mutation check: removing any single policy or rule of the example makes a case fail, so no
/// policy or rule goes untested.
#[test]
fn removing_any_policy_or_rule_of_the_example_fails_a_case() {
    let (dir, config) = example_in_temp("authorization.yaml");
    let policies_path = dir.path().join("authorization/shop.cedar");
    let policies = std::fs::read_to_string(&policies_path).unwrap();
    let blocks: Vec<&str> = policies.split("\n\n").filter(|b| b.contains("@id(")).collect();
    assert!(blocks.len() >= 5);
    for block in &blocks {
        std::fs::write(&policies_path, policies.replace(block, "")).unwrap();
        let (passed, output) = policy_test_passes(dir.path());
        assert!(!passed, "removing this policy changed no case:\n{block}\n{output}");
    }
    std::fs::write(&policies_path, &policies).unwrap();

    let gateway = std::fs::read_to_string(&config).unwrap();
    let rules: Vec<&str> = gateway
        .lines()
        .filter(|l| l.trim_start().starts_with("- { id:"))
        .collect();
    assert!(rules.len() >= 3);
    for rule in rules {
        std::fs::write(&config, gateway.replace(&format!("{rule}\n"), "")).unwrap();
        let (passed, output) = policy_test_passes(dir.path());
        assert!(!passed, "removing this rule changed no case: {rule}\n{output}");
    }
}

#[test]
fn the_demo_shows_a_429_a_deprecated_route_a_400_from_validation_and_the_mesh() {
    use std::io::{BufRead, BufReader};
    let mut child = palisade()
        .args(["demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok);
    let base = lines
        .find_map(|line| {
            let rest = line.split("Palisade is listening on http://").nth(1)?;
            Some(rest.split_whitespace().next()?.to_string())
        })
        .expect("the demo prints its address");
    // The intruder's curl command: a valid identity of the demo's trust domain, not allowed.
    let intruder_command: Vec<String> = lines
        .find(|line| line.contains("--cert"))
        .map(|line| {
            line.split('#')
                .next()
                .unwrap()
                .split_whitespace()
                .map(str::to_string)
                .collect()
        })
        .expect("the demo prints the intruder's command");
    // The observability commands: the admin address and token, as printed.
    let alerts_command = lines
        .find(|line| line.contains("/alerts"))
        .expect("the demo prints how to list alerts");
    let admin_token = alerts_command
        .split("Bearer ")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .expect("the command carries the admin token")
        .to_string();
    let admin = alerts_command
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("the command names the admin address")
        .to_string();
    let demo = Gateway {
        child,
        address: base,
        admin,
    };
    let statuses: Vec<u16> = (0..4).map(|_| http_status(&demo.address, "/limited")).collect();
    assert_eq!(statuses, [200, 200, 200, 429]);
    assert_eq!(http_status(&demo.address, "/v1/orders"), 200);
    let order = |body: &str| {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&demo.address).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let request = format!(
            "POST /shop/orders HTTP/1.1\r\nHost: demo\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response
    };
    assert!(order(r#"{"sku":"A-1","quantity":2}"#).starts_with("HTTP/1.1 200"));
    // gateway → sidecar → app over mTLS.
    assert_eq!(http_status(&demo.address, "/mesh/orders/1"), 200);
    if std::process::Command::new("curl").arg("--version").output().is_ok() {
        let mut curl = std::process::Command::new(&intruder_command[0]);
        curl.args(&intruder_command[1..])
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"]);
        let status = String::from_utf8(curl.output().unwrap().stdout).unwrap();
        assert_eq!(status, "403", "the intruder's identity is refused by the sidecar");
    }
    let refused = order(r#"{"sku":"a 1","quantity":0}"#);
    assert!(refused.starts_with("HTTP/1.1 400"), "{refused}");
    assert!(
        refused.contains("/body/sku") && refused.contains("/body/quantity"),
        "{refused}"
    );

    // A burst of forged tokens opens an alert and blocks the client (last: it blocks this test's
    // address for a minute).
    for n in 0..10 {
        let forged = format!("Bearer forged{n}");
        assert_eq!(
            request_status(&demo.address, "/secure", &[("authorization", &forged)]),
            401
        );
    }
    let admin_get = |path: &str| {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&demo.admin).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {admin_token}\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response
    };
    assert!(
        wait_for(|| admin_get("/alerts").contains("\"detector\":\"auth_failures\"")),
        "the alert opens: {}",
        admin_get("/alerts")
    );
    assert_eq!(http_status(&demo.address, "/api/hello"), 403, "the client is blocked");
    assert!(admin_get("/responses").contains("\"action\":\"block\""));
}

/// `palisade scan` exit codes: 0 clean, 1 findings at or above `--fail-on`, 2 input errors.
#[test]
fn scan_exit_codes_formats_and_suppressions() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("repo");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(
        tree.join("Dockerfile"),
        "FROM debian:12.8-slim\nHEALTHCHECK CMD true\nUSER root\n",
    )
    .unwrap();
    let scan = |args: &[&str]| {
        let output = palisade().arg("scan").args(args).output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).to_string(),
        )
    };
    let root = tree.to_str().unwrap();

    let (code, table) = scan(&[root]);
    assert_eq!(code, Some(1), "{table}");
    assert!(table.contains("Dockerfile") && table.contains("DF001"), "{table}");
    assert_eq!(scan(&[root, "--fail-on", "critical"]).0, Some(0));

    let (_, json) = scan(&[root, "--format", "json", "--fail-on", "never"]);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let root_user = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "DF001")
        .unwrap();
    assert_eq!(root_user["line"], 3);
    assert_eq!(root_user["severity"], "high");

    for (format, key, value) in [
        ("cyclonedx", "specVersion", "1.6"),
        ("spdx-json", "spdxVersion", "SPDX-2.3"),
    ] {
        let (code, sbom) = scan(&[root, "--format", format, "--fail-on", "never"]);
        assert_eq!(code, Some(0), "an SBOM needs no advisory database");
        let sbom: serde_json::Value = serde_json::from_str(&sbom).unwrap();
        assert_eq!(sbom[key], value);
    }

    let (_, sarif) = scan(&[root, "--format", "sarif", "--fail-on", "never"]);
    let sarif: serde_json::Value = serde_json::from_str(&sarif).unwrap();
    assert_eq!(sarif["version"], "2.1.0");

    // An ignore entry with a reason silences the rule; without a reason the file is refused.
    std::fs::write(
        tree.join(".palisadeignore.yaml"),
        "ignore:\n  - rule: DF001\n    reason: the base image drops privileges itself\n",
    )
    .unwrap();
    assert_eq!(scan(&[root]).0, Some(0));
    std::fs::write(tree.join(".palisadeignore.yaml"), "ignore:\n  - rule: DF001\n").unwrap();
    assert_eq!(scan(&[root]).0, Some(2));

    assert_eq!(scan(&[dir.path().join("missing").to_str().unwrap()]).0, Some(2));
    assert_eq!(scan(&[root, "--format", "xml"]).0, Some(2), "usage error");
}

/// `kubectl get -A -o yaml | palisade scan -`: stdin is scanned as manifests.
#[test]
fn scan_reads_stdin() {
    use std::io::Write as _;
    let mut child = palisade()
        .args(["scan", "-", "--format", "json", "--skip", "vulnerabilities"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: p, namespace: a}\n  spec:\n    hostPID: true\n    containers: [{name: c, image: x}]\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1), "high findings");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let host_pid = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "K8S007")
        .expect("hostPID found");
    assert_eq!(
        (host_pid["path"].as_str(), host_pid["line"].as_u64()),
        (Some("stdin"), Some(8))
    );
}

/// A target that is no path but an image reference goes to its registry; failures are input
/// errors (exit 2) that say what to do. (palisade-scan's registry tests push to a real registry.)
#[test]
fn scan_of_an_image_reference_reports_registry_failures() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let host = format!("127.0.0.1:{port}");
    let docker = tempfile::tempdir().unwrap();
    let scan = |args: &[&str]| {
        let output = palisade()
            .arg("scan")
            .args(args)
            .env("DOCKER_CONFIG", docker.path())
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };
    let reference = format!("{host}/shop/web:1.0");
    let (code, stderr) = scan(&[&reference, "--insecure", &host]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains(&format!("{host}: cannot connect")), "{stderr}");
    let (code, stderr) = scan(&[&reference, "--platform", "linux"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--platform linux: expected os/arch"), "{stderr}");
    std::fs::write(docker.path().join("config.json"), "{\"auths\": 3}").unwrap();
    let (code, stderr) = scan(&[&reference, "--insecure", &host]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("config.json: invalid type"), "{stderr}");
}

/// The pipeline integrations in the repository (pre-commit hooks, the GitHub composite action, the
/// GitLab template): the scan commands they run are valid and pass on this repository, inputs
/// never reach a shell script by interpolation, and nothing pipes an installer into a shell.
#[test]
fn pipeline_integrations_run_valid_scans_and_no_installer_pipes() {
    let read = |path: &str| -> (String, serde_json::Value) {
        let text = std::fs::read_to_string(repository().join(path)).unwrap();
        let value = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
        (text, value)
    };
    let scan_passes = |args: &[String]| {
        let output = palisade().args(args).output().unwrap();
        assert_eq!(
            output.status.code(),
            Some(0),
            "palisade {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    for path in [
        ".pre-commit-hooks.yaml",
        "action.yml",
        "ci/gitlab/palisade-scan.gitlab-ci.yml",
    ] {
        let text = std::fs::read_to_string(repository().join(path)).unwrap();
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            assert!(
                !(line.contains("curl") || line.contains("| sh") || line.contains("| bash")),
                "{path}: {line}"
            );
        }
    }

    let (_, hooks) = read(".pre-commit-hooks.yaml");
    for hook in hooks.as_array().unwrap() {
        let entry = hook["entry"].as_str().unwrap();
        let command: Vec<&str> = match hook["language"].as_str().unwrap() {
            "docker_image" => entry.split_whitespace().skip(1).collect(),
            "system" => entry.split_whitespace().skip(1).collect(),
            other => panic!("unexpected language {other}"),
        };
        assert!(hook["pass_filenames"] == false, "the hook scans the repository");
        let mut args: Vec<String> = command.iter().map(|s| s.to_string()).collect();
        args.extend(
            hook["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string()),
        );
        args.push(repository().display().to_string());
        scan_passes(&args);
    }

    let (_, action) = read("action.yml");
    assert_eq!(action["runs"]["using"], "composite");
    for step in action["runs"]["steps"].as_array().unwrap() {
        if let Some(script) = step["run"].as_str() {
            assert!(
                !script.contains("${{"),
                "inputs reach scripts through env only: {script}"
            );
            if script.contains(" scan ") {
                assert!(
                    script.contains("--format sarif") && script.contains("--fail-on"),
                    "{script}"
                );
            }
        }
    }
    let upload = action["runs"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("github/codeql-action/upload-sarif@"))
        })
        .expect("an upload step");
    assert!(
        upload["if"].as_str().unwrap().contains("always()"),
        "uploads even when findings fail the job"
    );

    let (_, gitlab) = read("ci/gitlab/palisade-scan.gitlab-ci.yml");
    let scripts = gitlab["palisade-scan"]["script"].as_array().unwrap();
    let mut scans = 0;
    for line in scripts.iter().filter_map(|l| l.as_str()) {
        let Some(rest) = line.strip_prefix("palisade scan ") else {
            continue;
        };
        let output = tempfile::tempdir().unwrap();
        let args: Vec<String> = std::iter::once("scan".to_string())
            .chain(rest.split_whitespace().map(|word| match word {
                "\"$PALISADE_TARGET\"" => repository().display().to_string(),
                "\"$PALISADE_FAIL_ON\"" => "high".to_string(),
                "palisade.sarif" => output.path().join("palisade.sarif").display().to_string(),
                other => other.to_string(),
            }))
            .chain(["--skip".to_string(), "vulnerabilities".to_string()])
            .collect();
        scan_passes(&args);
        scans += 1;
    }
    assert_eq!(scans, 2);
}

/// CI runs this too: the repository's own Dockerfile, manifests and configs pass the scan.
#[test]
fn the_repository_passes_its_own_scan() {
    let output = palisade()
        .args(["scan", "--skip", "vulnerabilities"])
        .arg(repository())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stdout));
}

/// Answers every HTTP request on a loopback port with `body`, counting the requests.
fn serve_bytes(body: Vec<u8>) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = [0u8; 4096];
            let _ = stream.read(&mut head);
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let header = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/zip\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(header.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    (format!("http://{address}"), requests)
}

/// `palisade db update` downloads `<source>/<ecosystem>/all.zip` and imports it; the scan then
/// finds the vulnerable pin.
#[test]
fn db_update_downloads_and_imports_osv_archives() {
    let fixtures = repository().join("crates/palisade-scan/tests/fixtures");
    let mut archive = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    archive
        .start_file("GHSA-j8r2-6x86-q33q.json", zip::write::SimpleFileOptions::default())
        .unwrap();
    std::io::Write::write_all(
        &mut archive,
        &std::fs::read(fixtures.join("osv/GHSA-j8r2-6x86-q33q.json")).unwrap(),
    )
    .unwrap();
    let (source, requests) = serve_bytes(archive.finish().unwrap().into_inner());

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let output = palisade()
        .args(["db", "update", "--ecosystem", "PyPI", "--source", &source, "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("imported 1 advisories"));
    assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 1);

    std::fs::write(dir.path().join("requirements.txt"), "requests==2.30.0\n").unwrap();
    let output = palisade()
        .args(["scan", "--format", "json", "--db"])
        .arg(&db)
        .arg(dir.path().join("requirements.txt"))
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "a medium finding is below --fail-on high"
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["findings"][0]["rule"], "GHSA-j8r2-6x86-q33q");
    assert_eq!(report["findings"][0]["vulnerability"]["fixed"], "2.31.0");
}
