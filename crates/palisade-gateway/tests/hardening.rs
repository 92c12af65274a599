//! The hardened HTTP edge, attacked over raw sockets.

mod support;

use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn gateway(extra: &str) -> (Running, std::net::SocketAddr) {
    let a = echo("a").await;
    let yaml = format!("{extra}{}", one_cluster(&[a], ""));
    (start(&yaml).await, a)
}

/// Each smuggling vector must get a 400 and must not let a second request through on the connection.
#[tokio::test]
async fn ambiguous_framing_is_refused_with_400_and_no_smuggled_request() {
    let (gw, _) = gateway("").await;
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let cases = [
        ("CL.TE", format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}")),
        ("TE.CL", format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n{smuggled}")),
        ("duplicate CL", format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n{smuggled}")),
        ("conflicting CL", format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 40\r\n\r\n{smuggled}")),
        ("CL list", format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0, 0\r\n\r\n{smuggled}")),
        ("signed CL", format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +0\r\n\r\n{smuggled}")),
        ("TE not chunked", format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n{smuggled}")),
        ("TE chunked not alone", format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n{smuggled}")),
        ("TE twice", format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}")),
        ("TE obfuscated", format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n{smuggled}")),
        ("TE space before colon", format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n{smuggled}")),
        ("obs-fold", format!("GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n{smuggled}")),
        ("bare LF in header value", format!("GET / HTTP/1.1\r\nHost: x\r\nX-Bad: a\rb\r\n\r\n{smuggled}")),
        ("NUL in header", format!("GET / HTTP/1.1\r\nHost: x\r\nX-Bad: a\0b\r\n\r\n{smuggled}")),
        ("TE on HTTP/1.0", format!("POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}")),
    ];
    for (name, request) in cases {
        let response = raw(gw.address, request.as_bytes()).await;
        assert_eq!(status_of(&response), 400, "{name}: {response}");
        assert_eq!(
            response_count(&response),
            1,
            "{name}: the smuggled request must not be answered: {response}"
        );
    }
}

/// The statuses of the responses in a raw exchange, in order.
fn statuses(response: &str) -> Vec<u16> {
    response
        .match_indices("HTTP/1.1 ")
        .filter_map(|(at, _)| response.get(at + 9..at + 12)?.parse().ok())
        .collect()
}

/// An earlier request on the same connection must not make the inspector lose track of where the
/// next head starts: bare-LF heads and empty lines (which hyper accepts), a refused upgrade, and a
/// chunk line too long to follow (later requests are then refused, failing closed).
#[tokio::test]
async fn an_earlier_request_does_not_open_the_way_for_smuggling() {
    let (gw, _) = gateway("").await;
    let ambiguous = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let long_extension = "e".repeat(5000);
    let cases = [
        ("bare LF head", "GET /a HTTP/1.1\nHost: x\n\n".to_string(), ambiguous, 200),
        ("empty line between requests", "GET /a HTTP/1.1\r\nHost: x\r\n\r\n\r\n".to_string(), ambiguous, 200),
        // Refused by the gateway (the path escapes the root), so hyper goes on reading HTTP/1.
        (
            "refused upgrade",
            "GET /../a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".to_string(),
            ambiguous,
            400,
        ),
        (
            "chunk line too long to follow",
            format!("POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;{long_extension}\r\nhello\r\n0\r\n\r\n"),
            "GET /next HTTP/1.1\r\nHost: x\r\n\r\n",
            200,
        ),
    ];
    for (name, earlier, next, first) in cases {
        let response = raw(gw.address, format!("{earlier}{next}").as_bytes()).await;
        assert_eq!(statuses(&response), vec![first, 400], "{name}: {response}");
        assert!(!response.contains("/smuggled"), "{name}: {response}");
    }
}

/// `X_Forwarded_For` and the like reach a CGI-style app (WSGI, Rack, PHP) as the very variable the
/// gateway's own `X-Forwarded-For` becomes, so those spellings of the headers the gateway writes or
/// protects never reach the upstream; other names with underscores do.
#[tokio::test]
async fn underscore_spellings_cannot_pose_as_the_gateways_headers() {
    let (gw, _) = gateway("").await;
    let reply = call(
        &gw.url("/a"),
        &[
            ("x_forwarded_for", "6.6.6.6"),
            ("X_Real_IP", "6.6.6.6"),
            ("x-forwarded_proto", "https"),
            ("x_request_id", "forged"),
            ("x_palisade_subject", "admin"),
            ("x_app_flag", "kept"),
        ],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let seen = &echoed(&reply.body)["headers"];
    for name in [
        "x_forwarded_for",
        "x_real_ip",
        "x-forwarded_proto",
        "x_request_id",
        "x_palisade_subject",
    ] {
        assert!(seen.get(name).is_none(), "{name} reached the upstream: {seen}");
    }
    assert_eq!(seen["x_app_flag"][0], "kept");
    assert_eq!(seen["x-forwarded-for"][0], "127.0.0.1");
}

/// The host a request is routed by is the host the upstream sees: a second `Host`, none on HTTP/1.1,
/// or one that is no authority is refused (RFC 9112 §3.2); an absolute-form target's authority
/// replaces the client's `Host`.
#[tokio::test]
async fn a_request_names_exactly_one_host_and_the_upstream_sees_that_one() {
    let (gw, _) = gateway("").await;
    let refused = [
        (
            "two Host headers",
            "GET /a HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
        ),
        ("no Host on HTTP/1.1", "GET /a HTTP/1.1\r\n\r\n"),
        (
            "a list for a Host",
            "GET /a HTTP/1.1\r\nHost: a.example, b.example\r\n\r\n",
        ),
        (
            "user information",
            "GET http://u@a.example/a HTTP/1.1\r\nHost: a.example\r\n\r\n",
        ),
    ];
    for (name, request) in refused {
        let response = raw(
            gw.address,
            format!("{request}GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(statuses(&response), vec![400, 200], "{name}: {response}");
    }
    let response = raw(
        gw.address,
        b"GET http://a.example/a HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&response), 200, "{response}");
    let seen = &echoed(response.split("\r\n\r\n").nth(1).unwrap_or_default())["headers"];
    assert_eq!(seen["host"], serde_json::json!(["a.example"]), "{response}");
    assert_eq!(seen["x-forwarded-host"], serde_json::json!(["a.example"]), "{response}");
    // HTTP/1.0 needs no Host.
    let response = raw(gw.address, b"GET /a HTTP/1.0\r\n\r\n").await;
    assert_eq!(status_of(&response), 200, "{response}");
}

/// `/admin;x=1` is `/admin` to a servlet container but no `/admin` route to the router: with a public
/// catch-all beside a protected `/admin` prefix, it would pass. So `;` is refused unless allowed.
#[tokio::test]
async fn path_parameters_are_refused_unless_the_config_allows_them() {
    let a = echo("a").await;
    let routes = format!(
        "clusters:\n  echo: {{ targets: [\"{a}\"] }}\nroutes:\n  - {{ name: open, match: {{ prefix: / }}, cluster: echo, public: true }}\n  - {{ name: admin, match: {{ prefix: /admin }}, cluster: echo, ip_rules: {{ allow: [192.0.2.0/24] }}, public: true }}\n"
    );
    let gw = start(&routes).await;
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(
        status_of(&raw(gw.address, get("/admin").as_bytes()).await),
        403,
        "the prefix is protected"
    );
    for path in ["/admin;x=1", "/admin;", "/admin%3bx=1", "/%61dmin;jsessionid=1"] {
        let response = raw(gw.address, get(path).as_bytes()).await;
        assert_eq!(status_of(&response), 400, "{path}: {response}");
        assert!(response.contains("bad-path"), "{path}: {response}");
    }
    let allowing = start(&format!("limits:\n  allow_path_parameters: true\n{routes}")).await;
    let response = raw(allowing.address, get("/files;v=2").as_bytes()).await;
    assert_eq!(status_of(&response), 200, "{response}");
    assert!(response.contains("\"path\": \"/files;v=2\""), "{response}");
}

#[tokio::test]
async fn valid_pipelined_requests_with_bodies_all_pass() {
    let (gw, _) = gateway("").await;
    let request = "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let response = raw(gw.address, request.as_bytes()).await;
    assert_eq!(response.matches("HTTP/1.1 200").count(), 3, "{response}");
    assert_eq!(response.matches("\"body_length\": 5").count(), 2, "{response}");
}

#[tokio::test]
async fn oversized_heads_get_431() {
    let (gw, _) = gateway("limits:\n  max_header_bytes: 8KiB\n  max_headers: 20\n").await;
    let big = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(10_000));
    assert_eq!(status_of(&raw(gw.address, big.as_bytes()).await), 431);
    let many: String = (0..30).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    assert_eq!(status_of(&raw(gw.address, many.as_bytes()).await), 431);
    let fine = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert_eq!(status_of(&raw(gw.address, fine.as_bytes()).await), 200);
}

/// The default limit (100) is hyper's own, which the gateway then leaves unset (see `listener.rs`):
/// this pins that the two agree. The path has no route, so the gateway answers itself (404) and the
/// upstream's own header limit plays no part.
#[tokio::test]
async fn the_default_header_count_limit_is_100() {
    let a = echo("a").await;
    let gw = start(&one_cluster(&[a], "").replace("prefix: /", "prefix: /routed")).await;
    let head = |total: usize| {
        let extra: String = (2..total).map(|i| format!("X-H{i}: v\r\n")).collect();
        format!("GET /elsewhere HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n")
    };
    assert_eq!(status_of(&raw(gw.address, head(100).as_bytes()).await), 404);
    assert_eq!(status_of(&raw(gw.address, head(101).as_bytes()).await), 431);
}

#[tokio::test]
async fn bodies_over_the_route_limit_get_413_declared_or_streamed() {
    let a = echo("a").await;
    let yaml = format!(
        "limits:\n  max_body_bytes: 1KiB\nclusters:\n  echo: {{ targets: [\"{a}\"] }}\nroutes:\n  - {{ name: small, match: {{ prefix: / }}, cluster: echo, public: true }}\n  - {{ name: big, match: {{ prefix: /big }}, cluster: echo, public: true, max_body_bytes: 64KiB }}\n"
    );
    let gw = start(&yaml).await;
    let body = "x".repeat(2048);
    let declared = format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2048\r\nConnection: close\r\n\r\n{body}");
    let response = raw(gw.address, declared.as_bytes()).await;
    assert_eq!(status_of(&response), 413, "{response}");
    assert!(response.contains("application/problem+json"));
    let chunked = format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n800\r\n{body}\r\n0\r\n\r\n");
    assert_eq!(status_of(&raw(gw.address, chunked.as_bytes()).await), 413);
    let per_route = format!("POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 2048\r\nConnection: close\r\n\r\n{body}");
    let response = raw(gw.address, per_route.as_bytes()).await;
    assert_eq!(status_of(&response), 200, "the route's own limit applies: {response}");
}

#[tokio::test]
async fn slowloris_heads_are_cut_off_by_the_header_read_timeout() {
    let (gw, _) = gateway("limits:\n  header_read_timeout: 300ms\n").await;
    let mut stream = TcpStream::connect(gw.address).await.unwrap();
    let started = std::time::Instant::now();
    assert!(drip_head(&mut stream).await, "connection was not cut");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_slow_second_head_on_a_kept_alive_connection_is_cut_off_too() {
    let (gw, _) = gateway("limits:\n  header_read_timeout: 300ms\n").await;
    let mut stream = TcpStream::connect(gw.address).await.unwrap();
    assert_eq!(exchange_one(&mut stream).await, 200);
    assert!(drip_head(&mut stream).await, "connection was not cut");
}

/// Each head has the whole timeout: a connection whose requests come faster than the timeout lives
/// on however long it lasts in all (the timer is moved, not left at the first head's deadline).
#[tokio::test]
async fn heads_that_arrive_in_time_keep_a_connection_open_past_the_timeout() {
    let (gw, _) = gateway("limits:\n  header_read_timeout: 300ms\n").await;
    let mut stream = TcpStream::connect(gw.address).await.unwrap();
    for round in 0..10 {
        assert_eq!(exchange_one(&mut stream).await, 200, "request {round}");
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
}

/// One keep-alive `GET /` (the echo answer fits one read); its status.
async fn exchange_one(stream: &mut TcpStream) -> u16 {
    stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buffer = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buffer)).await;
    let n = read.unwrap().unwrap();
    status_of(&String::from_utf8_lossy(&buffer[..n]))
}

/// Starts a head and sends one more header line every 50 ms for 2 s. True when the gateway cut the
/// connection: a write failed, or the connection ends (end of stream or reset) within 2 s after.
async fn drip_head(stream: &mut TcpStream) -> bool {
    stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if stream.write_all(b"X-Drip: 1\r\n").await.is_err() {
            return true;
        }
    }
    // `read_all` returns at the end of the stream or a reset; still reading after 2 s means open.
    let ended = tokio::time::timeout(Duration::from_secs(2), read_all(stream, Duration::from_secs(3)));
    ended.await.is_ok()
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_at_once() {
    let (gw, _) = gateway("limits:\n  max_connections: 2\n").await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(gw.address).await.unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buffer = [0u8; 1024];
        let n = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::io::AsyncReadExt::read(&mut stream, &mut buffer),
        )
        .await
        .unwrap()
        .unwrap();
        assert!(n > 0, "held connections are served");
        held.push(stream);
    }
    let third = raw(gw.address, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(third, "", "the third connection is closed without an answer");
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("palisade_connections_rejected_total{reason=\"max_connections\"} 1"),
        "{metrics}"
    );
    drop(held);
    eventually("capacity returns when connections close", || async {
        let again = raw(gw.address, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        status_of(&again) == 200
    })
    .await;
}

#[tokio::test]
async fn path_tricks_are_refused_with_400() {
    let (gw, _) = gateway("").await;
    for path in [
        "/a%2fb",
        "/a%2F..%2Fb",
        "/a%5cb",
        "/a\\b",
        "/a%00b",
        "/..",
        "/a/../../etc/passwd",
        "/%2e%2e/x",
        "/%zz",
        "*",
    ] {
        let response = raw(
            gw.address,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(status_of(&response), 400, "{path}: {response}");
        assert!(!response.contains("\"upstream\""), "{path} reached the upstream");
    }
}

#[tokio::test]
async fn absolute_form_targets_are_normalized_too() {
    let (gw, _) = gateway("").await;
    let response = raw(
        gw.address,
        b"GET http://x/a/../b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&response), 200, "{response}");
    assert!(response.contains("\"path\": \"/b\""), "{response}");
}
