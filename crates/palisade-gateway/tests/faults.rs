//! Whose fault an outcome is. A client that breaks its own request body (an overflowing chunk size,
//! a body shorter than its Content-Length, a reset mid-body, an invalid chunk line) is answered 400
//! or logged as `client_closed`, and never counts against the upstream; an upstream that resets
//! does.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// An upstream that records the path of every request it is sent and announces each one when its
/// head arrives (before its body), then reads the body and answers 200.
struct Recording {
    address: SocketAddr,
    paths: Arc<Mutex<Vec<String>>>,
    heads: mpsc::UnboundedReceiver<String>,
}

async fn recording_upstream() -> Recording {
    let listener = TcpListener::bind(LOCAL).await.unwrap();
    let address = listener.local_addr().unwrap();
    let paths: Arc<Mutex<Vec<String>>> = Arc::default();
    let (announce, heads) = mpsc::unbounded_channel();
    let store = paths.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (store, announce) = (store.clone(), announce.clone());
            let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let path = request.uri().path().to_string();
                store.lock().unwrap().push(path.clone());
                let _ = announce.send(path);
                async move {
                    let body = request.into_body().collect().await;
                    let text = if body.is_ok() { "ok" } else { "broken" };
                    Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from(text),
                    )))
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    Recording { address, paths, heads }
}

/// The access log's lines once there are at least `count` (waits up to 5 s for them).
async fn log_lines(path: &std::path::Path, count: usize) -> Vec<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        if lines.len() >= count || tokio::time::Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

/// Sends one broken request of kind `kind` (0..4) and returns what the client got back.
async fn broken_request(gw: &Running, upstream: &mut Recording, kind: usize) -> String {
    let head = "POST /upload HTTP/1.1\r\nHost: x\r\n";
    // A short body's head may have reached the upstream too: only a head announced from now on is
    // this request's.
    while upstream.heads.try_recv().is_ok() {}
    match kind {
        // A chunk size that overflows 64 bits, with a request smuggled behind it.
        0 => {
            let request =
                format!("{head}Transfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\nhello\r\n0\r\n\r\n{SMUGGLED}");
            raw(gw.address, request.as_bytes()).await
        }
        // A body shorter than its Content-Length, then the client stops sending.
        1 => {
            let mut stream = TcpStream::connect(gw.address).await.unwrap();
            let request = format!("{head}Content-Length: 100\r\n\r\n0123456789");
            stream.write_all(request.as_bytes()).await.unwrap();
            stream.shutdown().await.unwrap();
            read_all(&mut stream, Duration::from_secs(5)).await
        }
        // A reset in the middle of the body, once the upstream has the head.
        2 => {
            let stream = TcpStream::connect(gw.address).await.unwrap();
            let mut stream = stream;
            let request = format!("{head}Content-Length: 100\r\n\r\n0123456789");
            stream.write_all(request.as_bytes()).await.unwrap();
            upstream.heads.recv().await.expect("the upstream gets the head");
            stream.set_zero_linger().unwrap();
            drop(stream);
            String::new()
        }
        // An invalid chunk line after the upstream already has the head and a first chunk: too
        // late to refuse before anything goes upstream, so hyper's decoder finds it.
        _ => {
            let mut stream = TcpStream::connect(gw.address).await.unwrap();
            let request = format!("{head}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
            stream.write_all(request.as_bytes()).await.unwrap();
            upstream.heads.recv().await.expect("the upstream gets the head");
            stream.write_all(format!("zz\r\n{SMUGGLED}").as_bytes()).await.unwrap();
            read_all(&mut stream, Duration::from_secs(5)).await
        }
    }
}

#[tokio::test]
async fn client_body_faults_are_the_clients_and_never_eject_the_only_target() {
    let mut upstream = recording_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    // passive_health is left at its default (5 failures in a row eject for 30 s).
    let yaml = format!(
        "access_log:\n  path: {}\n{}",
        log.display(),
        one_cluster(&[upstream.address], "")
    );
    let gw = start(&yaml).await;
    let rounds = 52;
    for round in 0..rounds {
        let kind = round % 4;
        let response = broken_request(&gw, &mut upstream, kind).await;
        let status = status_of(&response);
        assert!(
            status == 400 || (response.is_empty() && kind != 0),
            "kind {kind}: 400, or nobody left to answer: {response}"
        );
        assert!(response_count(&response) <= 1, "kind {kind}: {response}");
    }
    while upstream.heads.try_recv().is_ok() {}
    let (status, body) = get(&gw.url("/after")).await;
    assert_eq!(status, 200, "the only target is still in rotation: {body}");
    let metrics = gw.metrics().await;
    let healthy = format!(
        "palisade_upstream_healthy{{cluster=\"echo\",target=\"{}\"}} 1",
        upstream.address
    );
    assert!(metrics.contains(&healthy), "{metrics}");
    let ejections = format!(
        "palisade_upstream_ejections_total{{cluster=\"echo\",target=\"{}\"}} ",
        upstream.address
    );
    let ejected = metrics
        .lines()
        .find_map(|line| line.strip_prefix(&ejections))
        .unwrap_or("0");
    assert_eq!(ejected, "0", "no ejection: {metrics}");
    let paths = upstream.paths.lock().unwrap().clone();
    assert!(
        !paths.iter().any(|p| p == "/smuggled"),
        "no smuggled request reached the upstream: {paths:?}"
    );
    let reached = paths.iter().filter(|p| *p == "/upload").count();
    assert!(
        (rounds / 2..=rounds * 3 / 4).contains(&reached),
        "the overflowing chunk sizes were refused before the upstream saw anything of them; resets and late \
         bad chunks reached it as far as their head (a short body may or may not have): {paths:?}"
    );

    let lines = log_lines(&log, rounds + 1).await;
    let refused: Vec<&serde_json::Value> = lines.iter().filter(|l| l["path"] == "/upload").collect();
    // A framing refusal is logged with the path that was read, though it is refused before the path
    // is normalized.
    assert_eq!(
        refused.len(),
        rounds,
        "every broken request has its log line: {lines:?}"
    );
    for line in &refused {
        assert_eq!(line["fault"], "client", "{line}");
        let reason = line["reason"].as_str().unwrap_or_default();
        assert!(
            ["invalid_chunked_body", "invalid_body", "client_closed"].contains(&reason),
            "{line}"
        );
    }
    for reason in ["invalid_chunked_body", "invalid_body", "client_closed"] {
        assert!(
            refused.iter().any(|l| l["reason"] == reason),
            "{reason} seen: {refused:?}"
        );
    }
}

/// A gateway whose only target `upstream` is ejected after two failures in a row, and its access log.
async fn ejecting_after_two(upstream: SocketAddr) -> (Running, std::path::PathBuf, tempfile::TempDir) {
    ejecting_after_two_with(upstream, "").await
}

/// [`ejecting_after_two`] with more top-level settings (`settings` ends with a newline).
async fn ejecting_after_two_with(
    upstream: SocketAddr,
    settings: &str,
) -> (Running, std::path::PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let cluster = "    passive_health: { consecutive_failures: 2, ejection_time: 1h }\n";
    let yaml = format!(
        "{settings}access_log:\n  path: {}\n{}",
        log.display(),
        one_cluster(&[upstream], cluster)
    );
    (start(&yaml).await, log, dir)
}

#[tokio::test]
async fn an_upstream_that_resets_counts_against_it() {
    let upstream = resetting_upstream(false).await;
    let (gw, log, _dir) = ejecting_after_two(upstream).await;
    for _ in 0..2 {
        let post = http::Request::post(gw.url("/upload"))
            .body(http_body_util::Full::new(bytes::Bytes::from_static(b"hello")))
            .unwrap();
        assert_eq!(send(post).await.0, 502);
    }
    let (status, body) = get(&gw.url("/next")).await;
    assert_eq!(status, 503, "two upstream failures ejected the only target: {body}");
    let lines = log_lines(&log, 3).await;
    assert_eq!(lines[0]["fault"], "upstream", "{lines:?}");
    assert_eq!(lines[0]["stage"], "upstream", "{lines:?}");
    assert_eq!(lines[0]["reason"], "upstream_failed", "{lines:?}");
    assert_eq!(lines[2]["reason"], "no_healthy_upstream", "{lines:?}");
}

#[tokio::test]
async fn an_upstream_that_resets_mid_response_counts_against_it() {
    let upstream = resetting_upstream(true).await;
    let (gw, log, _dir) = ejecting_after_two(upstream).await;
    for _ in 0..2 {
        let answer = raw(
            gw.address,
            b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(status_of(&answer), 200, "the head was already on its way: {answer}");
    }
    let lines = log_lines(&log, 2).await;
    assert_eq!(lines[0]["reason"], "upstream_body_failed", "{lines:?}");
    assert_eq!(lines[0]["fault"], "upstream", "{lines:?}");
    let (status, body) = get(&gw.url("/next")).await;
    assert_eq!(status, 503, "two broken bodies ejected the only target: {body}");
}

#[tokio::test]
async fn a_chunk_larger_than_any_route_takes_never_goes_upstream() {
    let mut upstream = recording_upstream().await;
    let gw = start(&one_cluster(&[upstream.address], "")).await;
    // The default limits.max_body_bytes (10 MiB) is the largest any route here takes.
    let request = "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nA00001\r\nhello";
    let answer = raw(gw.address, request.as_bytes()).await;
    assert_eq!(status_of(&answer), 400, "{answer}");
    assert!(upstream.heads.try_recv().is_err(), "the upstream saw nothing of it");
    let fits = "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    assert_eq!(status_of(&raw(gw.address, fits.as_bytes()).await), 200);
}

/// An upstream whose every answer is `size` bytes, counting its open connections.
async fn large_answer_upstream(size: usize) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind(LOCAL).await.unwrap();
    let address = listener.local_addr().unwrap();
    let open = Arc::new(AtomicUsize::new(0));
    let counter = open.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let counter = counter.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |_request: http::Request<hyper::body::Incoming>| async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from(vec![b'x'; size]),
                        )))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                counter.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (address, open)
}

/// An HTTP/2 client that opens ten streams and reads none of them (its window stays at 1 KiB) holds
/// no upstream connection past `limits.send_timeout`: the streams are reset, the upstream
/// connections closed, the log says `client_stalled` (the client's fault) and the target, ejected
/// after two failures, is still in rotation. An answer that fits in the read-ahead releases its
/// upstream connection while the client still has not read it.
#[tokio::test]
async fn a_stalled_http2_reader_holds_no_upstream_connection() {
    use std::sync::atomic::Ordering;
    let (upstream, open) = large_answer_upstream(1024 * 1024).await;
    let limits = "limits: { send_timeout: 1s, response_read_ahead: 32KiB }\n";
    let (gw, log, _dir) = ejecting_after_two_with(upstream, limits).await;
    let stream = TcpStream::connect(gw.address).await.unwrap();
    let (sender, connection) = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .initial_stream_window_size(1024)
        .handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut held = Vec::new();
    for n in 0..10 {
        let request = http::Request::get(format!("http://x/large/{n}"))
            .body(http_body_util::Full::<bytes::Bytes>::default())
            .unwrap();
        let mut sender = sender.clone();
        held.push(tokio::spawn(async move { sender.send_request(request).await.unwrap() }));
    }
    let mut responses = Vec::new();
    for response in held {
        let response = response.await.unwrap();
        assert_eq!(response.status(), 200);
        responses.push(response);
    }
    // Every stream was cut after the send timeout: the upstream's connections close.
    let closed = async {
        while open.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .expect("no upstream connection is held for a client that stopped reading");
    for response in responses {
        assert!(response.into_body().collect().await.is_err(), "the stream was reset");
    }
    let lines = log_lines(&log, 10).await;
    assert_eq!(lines.len(), 10, "{lines:?}");
    for line in &lines {
        assert_eq!(line["reason"], "client_stalled", "{line}");
        assert_eq!(line["fault"], "client", "{line}");
    }
    // Ten stalls, the target ejected after two failures: still served.
    let (status, body) = get(&gw.url("/after")).await;
    assert_eq!(status, 200, "a client's stall never counts against the upstream");
    assert_eq!(body.len(), 1024 * 1024);
}

/// An answer that fits in the read-ahead is read to its end while the HTTP/2 client still has not
/// read it: the upstream connection goes back to the pool (the next request reuses it).
#[tokio::test]
async fn an_answer_that_fits_the_read_ahead_frees_its_upstream_connection() {
    use std::sync::atomic::Ordering;
    let (upstream, open) = large_answer_upstream(48 * 1024).await;
    let yaml = format!(
        "workers: 1\nlimits: {{ response_read_ahead: 64KiB }}\n{}",
        one_cluster(&[upstream], "")
    );
    let gw = start(&yaml).await;
    let stream = TcpStream::connect(gw.address).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .initial_stream_window_size(1024)
        .handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get("http://x/stalled")
        .body(http_body_util::Full::<bytes::Bytes>::default())
        .unwrap();
    let unread = sender.send_request(request).await.unwrap();
    assert_eq!(unread.status(), 200);
    // The next request, from another client, is served over the same upstream connection.
    let (status, body) = get(&gw.url("/next")).await;
    assert_eq!((status, body.len()), (200, 48 * 1024));
    assert_eq!(open.load(Ordering::SeqCst), 1, "one upstream connection served both");
    let body = unread
        .into_body()
        .collect()
        .await
        .expect("the stalled answer is whole")
        .to_bytes();
    assert_eq!(body.len(), 48 * 1024);
}
