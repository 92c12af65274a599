//! Helpers shared by the CLI tests: the binary, a gateway process and its output, raw requests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn palisade() -> Command {
    Command::new(env!("CARGO_BIN_EXE_palisade"))
}

pub struct Gateway {
    pub child: Child,
    pub address: String,
    pub admin: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// Starts `command` with `RUST_LOG=info` and waits for the stderr line containing `marker` that
/// logs an `address=`; the rest of stderr is drained. The process is killed when dropped.
pub fn start_logging_address(command: &mut Command, marker: &str) -> Gateway {
    let mut child = command
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let address = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("the process ended before logging {marker:?}"))
            .unwrap();
        if let (true, Some(start)) = (line.contains(marker), line.find("address=")) {
            break line[start + "address=".len()..]
                .split_whitespace()
                .next()
                .unwrap()
                .to_string();
        }
    };
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    Gateway {
        child,
        address: address.clone(),
        admin: address,
    }
}

/// A finished command's stdout and stderr, one after the other.
pub fn output_text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

pub fn start_gateway(config: &Path) -> Gateway {
    start_gateway_capturing(config, "info").0
}

pub fn http_status(address: &str, path: &str) -> u16 {
    request_status(address, path, &[])
}

pub fn wait_for(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Output lines of a running gateway, collected from both streams.
pub type Captured = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

pub fn start_gateway_capturing(config: &Path, log_level: &str) -> (Gateway, Captured) {
    start_capturing(
        palisade().args(["gateway", "--config"]).arg(config),
        log_level,
        "public",
    )
}

/// Starts `command` (a `palisade` gateway or sidecar) and waits until it logs the address of
/// `listener` and of its admin listener.
pub fn start_capturing(command: &mut Command, log_level: &str, listener: &str) -> (Gateway, Captured) {
    let mut child = command
        .env("RUST_LOG", log_level)
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let captured: Captured = Default::default();
    let stdout = child.stdout.take().unwrap();
    let sink = captured.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (mut address, mut admin) = (None, None);
    while address.is_none() || admin.is_none() {
        let line = lines.next().expect("gateway logs its addresses").unwrap();
        captured.lock().unwrap().push(line.clone());
        let logged_address = || {
            let start = line.find("address=").unwrap() + "address=".len();
            line[start..].split_whitespace().next().unwrap().to_string()
        };
        if line.starts_with("palisade: ") {
            panic!("the process failed to start: {line}");
        }
        if line.contains("listening") && line.contains(&format!("listener={listener}")) {
            address = Some(logged_address());
        } else if line.contains("admin listening") {
            admin = Some(logged_address());
        }
    }
    let (address, admin) = (address.unwrap(), admin.unwrap());
    let sink = captured.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    (Gateway { child, address, admin }, captured)
}

pub fn request_status(address: &str, path: &str, headers: &[(&str, &str)]) -> u16 {
    request(address, path, headers).0
}

/// `GET path` on a fresh connection: the status and the whole response text.
pub fn http_exchange(address: &str, path: &str) -> (u16, String) {
    request(address, path, &[])
}

fn request(address: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}
