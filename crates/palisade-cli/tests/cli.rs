//! The `palisade` binary as users run it: exit codes, diagnostics, signals.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn palisade() -> Command {
    Command::new(env!("CARGO_BIN_EXE_palisade"))
}

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
    (dir, target)
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
        let output = palisade().arg("check-config").arg(&copy).output().unwrap();
        assert!(
            output.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 2);
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

struct Gateway {
    child: Child,
    address: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn start_gateway(config: &Path) -> Gateway {
    let mut child = palisade()
        .args(["gateway", "--config"])
        .arg(config)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let address = loop {
        let line = lines.next().expect("gateway logs its address").unwrap();
        if line.contains("listening") && line.contains("listener=public") {
            let start = line.find("address=").unwrap() + "address=".len();
            break line[start..].split_whitespace().next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Gateway { child, address }
}

fn http_status(address: &str, path: &str) -> u16 {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
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

fn wait_for(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
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
