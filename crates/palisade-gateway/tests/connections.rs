//! Every connection has a deadline from its first moment and one client address cannot hold all of
//! them; every connection the gateway closes before a whole request arrived is counted, logged and
//! audited, with what was read of the request.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

struct Logged {
    gw: Running,
    access: PathBuf,
    audit: PathBuf,
    _dir: tempfile::TempDir,
}

async fn gateway(limits: &str) -> Logged {
    let upstream = echo("a").await;
    let dir = tempfile::tempdir().unwrap();
    let access = dir.path().join("access.log");
    let audit = dir.path().join("audit.log");
    let yaml = format!(
        "{}access_log:\n  path: {}\naudit:\n  path: {}\n{}",
        if limits.is_empty() {
            String::new()
        } else {
            format!("limits:\n{limits}")
        },
        access.display(),
        audit.display(),
        one_cluster(&[upstream], "")
    );
    Logged {
        gw: start(&yaml).await,
        access,
        audit,
        _dir: dir,
    }
}

/// The JSON lines of `path` once one of them satisfies `wanted` (waits up to 5 s).
async fn line_where(path: &Path, wanted: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(line) = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(&wanted)
        {
            return line;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no such line in {}: {text}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether the gateway closes `stream` within `limit` (reads until EOF or a reset).
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buffer = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn a_silent_connection_is_closed_at_the_header_timeout() {
    let logged = gateway("  header_read_timeout: 300ms\n").await;
    let mut silent = TcpStream::connect(logged.gw.address).await.unwrap();
    let started = tokio::time::Instant::now();
    assert!(
        closed_within(&mut silent, Duration::from_secs(5)).await,
        "a connection that never sends a byte is closed"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "not before the timeout"
    );
    let line = line_where(&logged.access, |l| l["reason"] == "silent_connection").await;
    assert_eq!(line["status"], 408, "{line}");
    assert_eq!(line["stage"], "accept", "{line}");
    assert_eq!(line["fault"], "client", "{line}");
    let event = line_where(&logged.audit, |e| e["status_detail"] == "silent_connection").await;
    assert_eq!(event["src_endpoint"]["ip"], "127.0.0.1", "{event}");
    assert_eq!(event["unmapped"]["stage"], "accept", "{event}");
    let metrics = logged.gw.metrics().await;
    assert!(
        metrics.contains("palisade_connections_cut_total{reason=\"silent\"} 1"),
        "{metrics}"
    );
    // A connection that speaks in time is served as before.
    let answer = raw(
        logged.gw.address,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), 200, "{answer}");
}

/// A connection to `to` from the loopback address `from` (any of 127.0.0.0/8 is this machine).
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

#[tokio::test]
async fn one_address_at_its_cap_does_not_shut_out_another() {
    let logged = gateway("  header_read_timeout: 10s\n  max_connections_per_client: 5\n").await;
    let address = logged.gw.address;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(connect_from("127.0.0.1", address).await);
    }
    // The cap is counted at accept: wait until the gateway has all five.
    let open = async {
        loop {
            if logged.gw.metrics().await.contains("palisade_open_connections 5") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), open)
        .await
        .expect("five open");
    for _ in 0..3 {
        let mut refused = connect_from("127.0.0.1", address).await;
        assert!(
            closed_within(&mut refused, Duration::from_secs(2)).await,
            "a sixth connection from the same address is closed at once"
        );
    }
    let mut other = connect_from("127.0.0.2", address).await;
    other
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_all(&mut other, Duration::from_secs(5)).await;
    assert_eq!(status_of(&answer), 200, "another client is served at once: {answer}");

    let metrics = logged.gw.metrics().await;
    assert!(
        metrics.contains("palisade_connections_rejected_total{reason=\"max_connections_per_client\"} 3"),
        "{metrics}"
    );
    let line = line_where(&logged.access, |l| l["reason"] == "max_connections_per_client").await;
    assert_eq!(line["status"], 444, "{line}");
    let event = line_where(&logged.audit, |e| e["status_detail"] == "max_connections_per_client").await;
    assert_eq!(event["unmapped"]["fault"], "client", "{event}");
    let audit = std::fs::read_to_string(&logged.audit).unwrap();
    assert_eq!(
        audit
            .matches("\"status_detail\":\"max_connections_per_client\"")
            .count(),
        1,
        "one audit event per episode, not one per refused connection: {audit}"
    );
    // Capacity comes back as the address's connections close.
    drop(held);
    let back = async {
        loop {
            let mut again = connect_from("127.0.0.1", address).await;
            again
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            if status_of(&read_all(&mut again, Duration::from_secs(2)).await) == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), back)
        .await
        .expect("served again");
}

#[tokio::test]
async fn trusted_proxies_are_not_capped() {
    let logged = gateway("  max_connections_per_client: 2\ntrusted_proxies: [127.0.0.1/32]\n").await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = connect_from("127.0.0.1", logged.gw.address).await;
        stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buffer = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buffer))
            .await
            .expect("answered")
            .unwrap();
        assert!(n > 0, "a proxy's connections are served beyond the per-client cap");
        held.push(stream);
    }
}

#[tokio::test]
async fn a_slow_head_is_cut_and_logged_with_its_path() {
    let logged = gateway("  header_read_timeout: 300ms\n").await;
    let mut slow = TcpStream::connect(logged.gw.address).await.unwrap();
    slow.write_all(b"GET /slow/path?token=secret HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(closed_within(&mut slow, Duration::from_secs(5)).await);
    let line = line_where(&logged.access, |l| l["reason"] == "header_timeout").await;
    assert_eq!(line["path"], "/slow/path", "{line}");
    assert_eq!(line["method"], "GET", "{line}");
    assert_eq!(line["status"], 408, "{line}");
    let event = line_where(&logged.audit, |e| e["status_detail"] == "header_timeout").await;
    assert_eq!(event["http_request"]["url"]["path"], "/slow/path", "{event}");
    let access = std::fs::read_to_string(&logged.access).unwrap();
    assert!(!access.contains("secret"), "no query string is logged: {access}");
    let metrics = logged.gw.metrics().await;
    assert!(
        metrics.contains("palisade_connections_cut_total{reason=\"header_timeout\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_head_too_large_is_answered_431_and_logged_with_its_path() {
    let logged = gateway("").await;
    let big = format!(
        "GET /big/path HTTP/1.1\r\nHost: x\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let answer = raw(logged.gw.address, big.as_bytes()).await;
    assert_eq!(status_of(&answer), 431, "{answer}");
    let line = line_where(&logged.access, |l| l["reason"] == "head_too_large").await;
    assert_eq!(line["path"], "/big/path", "{line}");
    assert_eq!(line["status"], 431, "{line}");
    assert_eq!(line["fault"], "client", "{line}");
    line_where(&logged.audit, |e| e["status_detail"] == "head_too_large").await;
}
