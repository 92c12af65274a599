//! Cluster-wide rate limits: two gateway processes share one budget through a real `redis-server`,
//! and when Redis dies they fall back (or fail closed) and recover on their own once it is back.
//!
//! Needs `redis-server` on PATH (`.ci/run` installs it). Routes point at a closed port, so a request
//! the limit allows is answered 502 by the upstream stage and one it refuses is 429.

mod support;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::*;

struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start_on(port: u16) -> Redis {
        Redis::start_with(port, &[])
    }

    fn start_with(port: u16, extra: &[&str]) -> Redis {
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (apt-get install -y redis-server)");
        assert!(
            wait_for(|| TcpStream::connect(("127.0.0.1", port)).is_ok()),
            "redis-server accepts connections"
        );
        // Tests run in parallel: make sure the server answering is this one, not another test's.
        assert!(
            matches!(child.try_wait(), Ok(None)),
            "redis-server on port {port} is running"
        );
        Redis { child, port }
    }

    fn start() -> Redis {
        Redis::start_on(free_port())
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A three-primary Redis Cluster on 127.0.0.1 (no replicas), its files in `dir`.
fn start_cluster(dir: &std::path::Path) -> Vec<Redis> {
    let nodes: Vec<Redis> = (0..3)
        .map(|i| {
            let port = free_port();
            let config_file = dir.join(format!("nodes-{i}.conf"));
            let dir = dir.display().to_string();
            let config_file = config_file.display().to_string();
            let extra = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &config_file,
                "--dir",
                &dir,
            ];
            Redis::start_with(port, &extra)
        })
        .collect();
    let addresses: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
    let created = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addresses)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .expect("redis-cli is installed (Debian package redis-tools, a dependency of redis-server)");
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stdout));
    let ready = wait_for(|| {
        nodes.iter().all(|node| {
            Command::new("redis-cli")
                .args(["-p", &node.port.to_string(), "cluster", "info"])
                .output()
                .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("cluster_state:ok"))
        })
    });
    assert!(ready, "the cluster reaches state ok");
    nodes
}

/// One Redis test at a time: a test that stops its server and restarts it on the same port must
/// not find that port taken by another test's server in between.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn config(port: u16, on_store_error: &str) -> String {
    format!(
        "listeners: [{{ name: public, address: '127.0.0.1:0' }}]
admin: {{ address: '127.0.0.1:0' }}
access_log: {{ enabled: false }}
rate_limits:
  store: redis://127.0.0.1:{port}/
  on_store_error: {on_store_error}
  store_timeout: 1s
clusters:
  closed: {{ targets: ['127.0.0.1:9'], passive_health: {{ consecutive_failures: 0 }} }}
routes:
  - name: api
    match: {{ prefix: / }}
    cluster: closed
    public: true
    rate_limits:
      - {{ name: whole-route, rate: 1/min, burst: 6, key: route }}
"
    )
}

fn metrics(gateway: &Gateway) -> String {
    http_exchange(&gateway.admin, "/metrics").1
}

/// A path on the gateway's admin listener: the status and the whole response.
fn admin_status(gateway: &Gateway, path: &str) -> (u16, String) {
    http_exchange(&gateway.admin, path)
}

fn store_up(gateway: &Gateway) -> bool {
    metrics(gateway).contains("\npalisade_rate_limit_store_up 1\n")
}

fn start(dir: &std::path::Path, name: &str, yaml: &str) -> (Gateway, Captured) {
    let path = dir.join(name);
    std::fs::write(&path, yaml).unwrap();
    let (gateway, logs) = start_gateway_capturing(&path, "info");
    assert!(wait_for(|| store_up(&gateway)), "{name} connects to redis");
    (gateway, logs)
}

/// Eight requests, alternating between two gateways on one store, against the `whole-route` budget
/// of six: the first six are allowed (502 from the closed upstream), the rest refused.
fn assert_one_budget(first: &Gateway, second: &Gateway, logs: &Captured, how: &str) {
    let statuses: Vec<u16> = (0..8)
        .map(|i| http_status(if i % 2 == 0 { &first.address } else { &second.address }, "/"))
        .collect();
    assert_eq!(
        statuses,
        [502, 502, 502, 502, 502, 502, 429, 429],
        "one budget across processes, {how}; {:#?}",
        logs.lock().unwrap()
    );
}

#[test]
fn two_gateway_processes_share_one_limit_and_survive_a_redis_restart() {
    let _serial = one_at_a_time();
    let mut redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("first-audit.log");
    let yaml = config(redis.port, "fallback_local");
    let first_yaml = yaml.replace(
        "access_log: { enabled: false }",
        &format!(
            "access_log: {{ enabled: false }}\naudit: {{ path: '{}' }}",
            audit.display()
        ),
    );
    let (first, first_logs) = start(dir.path(), "first.yaml", &first_yaml);
    let (second, _) = start(dir.path(), "second.yaml", &yaml);

    // Six requests in all are allowed, whichever gateway they reach.
    assert_one_budget(&first, &second, &first_logs, "counted in Redis");

    // Redis dies: each gateway falls back to its own local budget (which it has not used).
    redis.stop();
    assert_eq!(http_status(&first.address, "/"), 502, "fallback_local keeps serving");
    assert!(metrics(&first).contains("\npalisade_rate_limit_store_up 0\n"));
    let fallback = metrics(&first);
    assert!(
        fallback.contains(r#"palisade_rate_limit_decisions_total{route="api",limit="whole-route",outcome="allowed",source="fallback"}"#),
        "{fallback}"
    );

    // Redis comes back (empty): both gateways reconnect by themselves and share again.
    let _redis = Redis::start_on(redis.port);
    assert!(
        wait_for(|| {
            // Probe through the gateway: a decision after the breaker closes reconnects.
            let _ = http_status(&first.address, "/");
            store_up(&first)
        }),
        "the first gateway recovers"
    );
    assert!(
        wait_for(|| {
            let _ = http_status(&second.address, "/");
            store_up(&second)
        }),
        "the second gateway recovers"
    );
    let shared: Vec<u16> = (0..8).map(|_| http_status(&second.address, "/")).collect();
    assert!(shared.contains(&429), "shared counting resumed: {shared:?}");
    // The outage and the recovery are audit events, not only log lines.
    let audited = |event: &str| {
        std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .any(|line| line.contains(&format!("\"event\":\"{event}\"")))
    };
    assert!(
        wait_for(|| audited("limit_store_unavailable") && audited("limit_store_recovered")),
        "audit log: {:?}",
        std::fs::read_to_string(&audit)
    );
    let text = std::fs::read_to_string(&audit).unwrap();
    let down = text.find("limit_store_unavailable").unwrap();
    assert!(
        down < text.find("limit_store_recovered").unwrap(),
        "down, then up: {text}"
    );
}

#[test]
fn fail_closed_refuses_while_redis_is_down() {
    let _serial = one_at_a_time();
    let mut redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let (gateway, logs) = start(dir.path(), "closed.yaml", &config(redis.port, "deny"));
    assert_eq!(http_status(&gateway.address, "/"), 502, "{:#?}", logs.lock().unwrap());
    assert_eq!(admin_status(&gateway, "/readyz").0, 200);
    redis.stop();
    let (refused, body) = http_exchange(&gateway.address, "/");
    assert_eq!(
        refused, 503,
        "on_store_error: deny fails closed, and says it is not the caller's limit: {body}"
    );
    assert!(
        body.contains("rate-limit-store-unavailable"),
        "its own problem type: {body}"
    );
    let text = metrics(&gateway);
    assert!(text.contains("palisade_rate_limit_store_errors_total"), "{text}");
    assert!(!text.contains("palisade_rate_limit_store_errors_total 0\n"), "{text}");
    let (status, readyz) = admin_status(&gateway, "/readyz");
    assert_eq!(
        status, 503,
        "a gateway refusing its limited routes is not ready: {readyz}"
    );
    assert!(
        readyz.contains("rate_limit_store") && readyz.contains("on_store_error: deny"),
        "{readyz}"
    );
}

/// Under a steady 3x overload, the limit counted in Redis lets through what it should. The
/// tolerance is generous (CI machines are noisy); bench/ reports the precise figure.
#[test]
fn under_steady_overload_the_shared_limit_accepts_its_configured_rate() {
    let _serial = one_at_a_time();
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(redis.port, "fallback_local").replace("rate: 1/min, burst: 6", "rate: 50/s, burst: 5");
    let (gateway, _) = start(dir.path(), "accuracy.yaml", &yaml);
    let run_for = Duration::from_secs(3);
    let started = std::time::Instant::now();
    let (mut sent, mut accepted) = (0u32, 0u32);
    // 150 requests/s, evenly spaced.
    while started.elapsed() < run_for {
        let due = started + Duration::from_micros(6_667) * sent;
        if let Some(wait) = due.checked_duration_since(std::time::Instant::now()) {
            std::thread::sleep(wait);
        }
        sent += 1;
        if http_status(&gateway.address, "/") != 429 {
            accepted += 1;
        }
    }
    let expected = 50.0 * started.elapsed().as_secs_f64() + 5.0;
    let ratio = f64::from(accepted) / expected;
    assert!(f64::from(sent) > 2.0 * expected, "the test must overload: sent {sent}");
    assert!(
        (0.85..=1.15).contains(&ratio),
        "accepted {accepted}, expected {expected:.0}"
    );
    assert!(store_up(&gateway), "the decisions were shared, not local fallbacks");
}

#[test]
fn two_gateway_processes_share_one_limit_through_a_redis_cluster() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(dir.path());
    let seeds: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
    let yaml = config(nodes[0].port, "deny").replace(
        &format!("redis://127.0.0.1:{}/", nodes[0].port),
        &format!("redis+cluster://{}", seeds.join(",")),
    );
    let (first, logs) = start(dir.path(), "first.yaml", &yaml);
    let (second, _) = start(dir.path(), "second.yaml", &yaml);
    assert_one_budget(&first, &second, &logs, "counted in the cluster");
}

/// One admin API call with the test token, on a fresh connection: (status, body).
fn admin_call(gateway: &Gateway, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(&gateway.admin).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {SHARED_ADMIN_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

const SHARED_ADMIN_TOKEN: &str = "adm_shared_9c8b7a6d5e4f";

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_block_taken_on_one_gateway_applies_on_the_other_and_so_does_its_revocation() {
    let _serial = one_at_a_time();
    std::env::set_var("PALISADE_SHARED_ADMIN_TOKEN", SHARED_ADMIN_TOKEN);
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(redis.port, "fallback_local")
        .replace(
            "admin: { address: '127.0.0.1:0' }",
            "admin: { address: '127.0.0.1:0', token: '${PALISADE_SHARED_ADMIN_TOKEN}' }\ntrusted_proxies: [127.0.0.1]",
        )
        .replace("rate: 1/min, burst: 6", "rate: 1000/s, burst: 1000");
    let (first, _) = start(dir.path(), "first.yaml", &yaml);
    let (second, second_logs) = start(dir.path(), "second.yaml", &yaml);
    let attacker = [("x-forwarded-for", "203.0.113.77")];
    assert_eq!(
        request_status(&second.address, "/", &attacker),
        502,
        "allowed (closed upstream)"
    );

    let (status, body) = admin_call(
        &first,
        "POST",
        "/responses",
        r#"{"ip": "203.0.113.77", "action": "block", "ttl": "10m", "reason": "shared test"}"#,
    );
    assert_eq!(status, 201, "{body}");
    let id = body
        .split("\"id\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_string();
    assert_eq!(
        request_status(&first.address, "/", &attacker),
        403,
        "at once where it was taken"
    );
    assert!(
        wait_for(|| request_status(&second.address, "/", &attacker) == 403),
        "the other gateway applies it: {:#?}",
        second_logs.lock().unwrap()
    );

    // Redis loses its data (a restart without persistence): the gateways publish it again.
    redis_cli(redis.port, &["FLUSHALL"]);
    assert!(
        wait_for(|| redis_cli(redis.port, &["HLEN", "palisade:responses"]) == "1"),
        "republished"
    );
    assert_eq!(request_status(&second.address, "/", &attacker), 403, "still in force");

    // Revoked on the second gateway: lifted on both.
    let (status, _) = admin_call(&second, "DELETE", &format!("/responses/{id}"), "");
    assert_eq!(status, 204);
    assert_eq!(request_status(&second.address, "/", &attacker), 502);
    assert!(
        wait_for(|| request_status(&first.address, "/", &attacker) == 502),
        "the revocation reaches the first gateway"
    );
    let (_, listed) = admin_call(&first, "GET", "/responses", "");
    assert_eq!(listed, r#"{"responses":[]}"#);

    // The same address blocked on both gateways one after the other: the newer block wins on both.
    let block =
        |reason: &str| format!(r#"{{"ip": "203.0.113.77", "action": "block", "ttl": "10m", "reason": "{reason}"}}"#);
    let (status, _) = admin_call(&first, "POST", "/responses", &block("older"));
    assert_eq!(status, 201);
    std::thread::sleep(Duration::from_millis(1100));
    let (status, _) = admin_call(&second, "POST", "/responses", &block("newer"));
    assert_eq!(status, 201);
    let converged = |gateway: &Gateway| {
        let (_, listed) = admin_call(gateway, "GET", "/responses", "");
        listed.matches("\"id\"").count() == 1 && listed.contains("\"reason\":\"newer\"")
    };
    assert!(
        wait_for(|| converged(&first) && converged(&second)),
        "one block, the newer, on both"
    );
    assert!(
        wait_for(|| redis_cli(redis.port, &["HLEN", "palisade:responses"]) == "1"),
        "and in the store"
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all from that CA, plus a
/// second CA that signed nothing here; PEM files in `dir`.
fn write_redis_pki(dir: &std::path::Path) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};
    let new_ca = |name: &str| {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    };
    let ca = new_ca("redis test CA");
    let issue = |name: &str, sans: Vec<SanType>| {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.subject_alt_names = sans;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    };
    issue("redis", vec![SanType::IpAddress([127, 0, 0, 1].into())]);
    issue("gateway", vec![SanType::DnsName("gateway".try_into().unwrap())]);
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("other-ca.pem"), new_ca("someone else").pem()).unwrap();
}

/// `config` for a `rediss://` store verified with `ca` (a file in `dir`), presenting the gateway's
/// client certificate.
fn tls_config(dir: &std::path::Path, port: u16, ca: &str) -> String {
    let d = dir.display();
    config(port, "deny").replace("redis://", "rediss://").replace(
        "  store_timeout: 1s\n",
        &format!("  store_timeout: 1s\n  store_tls: {{ ca: {d}/{ca}, cert: {d}/gateway.pem, key: {d}/gateway.key }}\n"),
    )
}

#[test]
fn a_tls_store_is_verified_with_its_ca_and_shares_the_limit() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    write_redis_pki(dir.path());
    let port = free_port();
    let file = |name: &str| dir.path().join(name).display().to_string();
    let tls_port = port.to_string();
    let _redis = Redis::start_with(
        port,
        &[
            "--port",
            "0",
            "--tls-port",
            &tls_port,
            "--tls-cert-file",
            &file("redis.pem"),
            "--tls-key-file",
            &file("redis.key"),
            "--tls-ca-cert-file",
            &file("ca.pem"),
            "--tls-auth-clients",
            "yes",
        ],
    );

    let (first, logs) = start(dir.path(), "first.yaml", &tls_config(dir.path(), port, "ca.pem"));
    let (second, _) = start(dir.path(), "second.yaml", &tls_config(dir.path(), port, "ca.pem"));
    assert_one_budget(&first, &second, &logs, "over TLS");

    // A gateway that does not trust the server's CA never talks to it: with `on_store_error: deny`
    // its limited route refuses, and the store stays down.
    let untrusting = dir.path().join("untrusting.yaml");
    std::fs::write(&untrusting, tls_config(dir.path(), port, "other-ca.pem")).unwrap();
    let (gateway, _) = start_gateway_capturing(&untrusting, "info");
    let errors_counted = || {
        metrics(&gateway)
            .lines()
            .any(|line| line.starts_with("palisade_rate_limit_store_errors_total ") && !line.ends_with(" 0"))
    };
    assert!(wait_for(errors_counted), "the handshake fails and is counted");
    assert_eq!(http_status(&gateway.address, "/"), 503);
    assert!(!store_up(&gateway));
}

/// `redis-cli -p port args…` on 127.0.0.1, its output as text.
fn redis_info(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli is installed");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn limits_follow_the_primary_that_sentinel_names_after_a_failover() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    // Replication writes RDB files: each server gets a directory of its own in the test's.
    let data_dir = |name: &str| {
        let path = dir.path().join(name);
        std::fs::create_dir(&path).unwrap();
        path.display().to_string()
    };
    // Both servers want a password (and the replica uses it with the primary); Sentinels do not.
    let password = ["--requirepass", "s3cret/pw", "--masterauth", "s3cret/pw"];
    let primary_dir = ["--dir".to_string(), data_dir("primary")];
    let primary_args: Vec<&str> = password
        .iter()
        .copied()
        .chain(primary_dir.iter().map(String::as_str))
        .collect();
    let primary = Redis::start_with(free_port(), &primary_args);
    let primary_port = primary.port.to_string();
    let replica_dir = data_dir("replica");
    let replica_of = ["--dir", &replica_dir, "--replicaof", "127.0.0.1", &primary_port];
    let replica_args: Vec<&str> = password.iter().chain(replica_of.iter()).copied().collect();
    let replica = Redis::start_with(free_port(), &replica_args);
    let authenticated = |port: u16, args: &[&str]| {
        let with_password = ["--no-auth-warning", "-a", "s3cret/pw"].iter().chain(args).copied();
        redis_info(port, &with_password.collect::<Vec<_>>())
    };
    let sentinel_port = free_port();
    let sentinel_file = dir.path().join("sentinel.conf");
    std::fs::write(
        &sentinel_file,
        format!(
            "port {sentinel_port}\nbind 127.0.0.1\nsentinel monitor shop 127.0.0.1 {} 1\nsentinel auth-pass shop s3cret/pw\nsentinel down-after-milliseconds shop 1000\nsentinel failover-timeout shop 5000\n",
            primary.port
        ),
    )
    .unwrap();
    let mut sentinel = Command::new("redis-server")
        .arg(&sentinel_file)
        .arg("--sentinel")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server runs as a Sentinel");
    // `flags` exactly `slave`: known and healthy (no `s_down`, no `disconnected`).
    let sentinel_knows_replica =
        || redis_info(sentinel_port, &["sentinel", "replicas", "shop"]).contains("\nflags\nslave\n");
    assert!(wait_for(sentinel_knows_replica), "the Sentinel sees the replica");

    let yaml = config(primary.port, "deny").replace(
        &format!("redis://127.0.0.1:{}/", primary.port),
        // The password percent-encoded, as in any redis:// URL.
        // palisade:ignore SEC013 a made-up password the test gives its own Redis
        &format!("redis+sentinel://:s3cret%2Fpw@127.0.0.1:{sentinel_port}/shop"),
    );
    let (gateway, logs) = start(dir.path(), "sentinel.yaml", &yaml);
    assert!(
        !logs.lock().unwrap().iter().any(|line| line.contains("s3cret")),
        "the password is never logged"
    );
    let statuses: Vec<u16> = (0..4).map(|_| http_status(&gateway.address, "/")).collect();
    assert_eq!(statuses, [502; 4], "counted on the primary");
    assert!(
        wait_for(|| authenticated(replica.port, &["info", "replication"]).contains("master_link_status:up")),
        "the replica follows the primary"
    );

    // The Sentinel promotes the replica; the gateway moves its counting there within seconds and the
    // budget (replicated) goes on where it was: two more allowed, then refused.
    assert!(redis_info(sentinel_port, &["sentinel", "failover", "shop"]).contains("OK"));
    let promoted = || authenticated(replica.port, &["role"]).starts_with("master");
    assert!(wait_for(promoted), "the replica is promoted");
    assert!(
        wait_for(|| logs
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains("rate_limit_store_failover"))),
        "the gateway follows the failover: {:#?}",
        logs.lock().unwrap()
    );
    assert!(
        wait_for(|| http_status(&gateway.address, "/") == 502),
        "counting resumes on the new primary"
    );
    assert_eq!(http_status(&gateway.address, "/"), 502);
    assert_eq!(
        http_status(&gateway.address, "/"),
        429,
        "the budget carried over the failover"
    );
    let _ = sentinel.kill();
    let _ = sentinel.wait();
}
