//! No tunnel past routing: `Upgrade: h2c` never switches protocols (the echo upstream, like any
//! h2c-capable server, would answer 101 and the client would then speak HTTP/2 straight to it),
//! only the upgrades a route allows pass, a 101 nobody asked for is the upstream's failure, CONNECT
//! is refused at the edge, and method-override headers cannot turn an authorized POST into a DELETE.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const H2C_WITH_SETTINGS: &str = "GET /x HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n";
const H2C_WITHOUT_SETTINGS: &str = "GET /x HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n";
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The first response on `stream` (head and a Content-Length body), as text.
async fn one_response(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buffer = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = String::from_utf8_lossy(&received).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if received.len() >= end + 4 + length {
                return text;
            }
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return text,
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
        }
    }
}

#[tokio::test]
async fn an_h2c_upgrade_never_yields_a_tunnel() {
    let a = echo("a").await;
    let gw = start(&one_cluster(&[a], "")).await;
    for request in [H2C_WITH_SETTINGS, H2C_WITHOUT_SETTINGS] {
        let mut stream = TcpStream::connect(gw.address).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let response = one_response(&mut stream).await;
        assert_eq!(status_of(&response), 200, "a plain request, not a switch: {response}");
        let body = &response[response.find("\r\n\r\n").unwrap() + 4..];
        let seen = echoed(body);
        assert!(seen["headers"].get("upgrade").is_none(), "{seen}");
        assert!(seen["headers"].get("http2-settings").is_none(), "{seen}");
        // What follows on the connection is HTTP/1 to the gateway, not HTTP/2 to the upstream.
        stream.write_all(PREFACE).await.unwrap();
        let after = read_all(&mut stream, Duration::from_secs(2)).await;
        assert!(
            !after.contains("PRI * HTTP/2.0"),
            "nothing is echoed back through a tunnel: {after}"
        );
        assert!(after.is_empty() || status_of(&after) == 400, "{after}");
    }
}

#[tokio::test]
async fn websocket_passes_only_where_the_route_allows_it() {
    let a = echo("a").await;
    let yaml = format!(
        "clusters:\n  echo:\n    targets: [\"{a}\"]\nroutes:\n  - {{ name: ws, match: {{ prefix: /ws }}, cluster: echo, public: true }}\n  - {{ name: plain, match: {{ prefix: /plain }}, cluster: echo, public: true, upgrades: [] }}\n"
    );
    let gw = start(&yaml).await;
    let handshake = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    };
    let mut allowed = TcpStream::connect(gw.address).await.unwrap();
    allowed.write_all(handshake("/ws").as_bytes()).await.unwrap();
    let head = one_response(&mut allowed).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    allowed.write_all(b"through").await.unwrap();
    let mut echoed_back = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(2), allowed.read(&mut echoed_back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echoed_back[..n], b"through");

    let mut refused = TcpStream::connect(gw.address).await.unwrap();
    refused.write_all(handshake("/plain").as_bytes()).await.unwrap();
    let response = one_response(&mut refused).await;
    assert_eq!(status_of(&response), 200, "served as a plain request: {response}");
}

#[tokio::test]
async fn an_h2c_upgrade_route_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let errors = config_errors(
        dir.path(),
        "clusters:\n  c:\n    targets: [\"127.0.0.1:1\"]\nroutes:\n  - { name: r, match: { prefix: / }, cluster: c, public: true, upgrades: [websocket, h2c] }\n",
    )
    .await;
    assert!(errors.contains("h2c"), "{errors}");
}

/// An upstream that answers every request with a 101 nobody asked for.
async fn switching_upstream() -> SocketAddr {
    canned_upstream(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n").await
}

#[tokio::test]
async fn a_101_nobody_asked_for_is_the_upstreams_failure() {
    let upstream = switching_upstream().await;
    let cluster = "    passive_health: { consecutive_failures: 2, ejection_time: 1h }\n";
    let gw = start(&one_cluster(&[upstream], cluster)).await;
    for _ in 0..2 {
        let (status, body) = get(&gw.url("/x")).await;
        assert_eq!(status, 502, "{body}");
    }
    assert_eq!(get(&gw.url("/x")).await.0, 503, "two such answers ejected the target");
}

#[tokio::test]
async fn connect_is_refused_at_the_edge() {
    let a = echo("a").await;
    let gw = start(&one_cluster(&[a], "")).await;
    for request in [
        "CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\nConnection: close\r\n\r\n",
        "CONNECT http://x/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ] {
        let response = raw(gw.address, request.as_bytes()).await;
        let status = status_of(&response);
        assert!(matches!(status, 400 | 405), "{request:?}: {response}");
        assert!(response.contains("application/problem+json"), "{response}");
        assert!(
            !response.contains("\"upstream\""),
            "never reached the upstream: {response}"
        );
    }
}

#[tokio::test]
async fn method_override_headers_cannot_change_what_was_authorized() {
    let a = echo("a").await;
    let (_, hash) = palisade_auth::apikey::generate();
    let routes = |override_on: bool| {
        format!(
            "clusters:\n  echo:\n    targets: [\"{a}\"]\nauthentication:\n  api_keys:\n    keys:\n      - {{ name: ops, hash: \"{hash}\" }}\nroutes:\n  - {{ name: create, match: {{ path: /orders, methods: [POST] }}, cluster: echo, public: true, method_override: {override_on} }}\n  - {{ name: remove, match: {{ path: /orders, methods: [DELETE] }}, cluster: echo, method_override: {override_on}, authentication: [api_key], authorization: {{ allow: authenticated }} }}\n"
        )
    };
    let post = |gw: &Running, name: &str| {
        http::Request::post(gw.url("/orders"))
            .header(name, "DELETE")
            .body(http_body_util::Full::default())
            .unwrap()
    };
    // Off (the default): the headers are removed and the POST stays a POST.
    let gw = start(&routes(false)).await;
    for name in ["x-http-method-override", "x-http-method", "x-method-override"] {
        let (status, body) = send(post(&gw, name)).await;
        assert_eq!(status, 200, "{body}");
        let seen = echoed(&body);
        assert_eq!(seen["method"], "POST", "{seen}");
        assert!(seen["headers"].get(name).is_none(), "{name} removed: {seen}");
    }
    // On: the overriding method is what is routed and authorized (the DELETE route wants a key).
    let gw = start(&routes(true)).await;
    let (status, body) = send(post(&gw, "x-http-method-override")).await;
    assert_eq!(status, 401, "authorized as the DELETE it is: {body}");
}
