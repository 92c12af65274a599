//! Test harness: real servers on 127.0.0.1 ephemeral ports, real clients and raw sockets.
#![allow(dead_code)]

pub mod idp;
pub mod mesh;
pub mod tokens;
pub mod webdriver;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use palisade_gateway::{ConfigSource, Gateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const LOCAL: &str = "127.0.0.1:0";

pub async fn echo(name: &str) -> SocketAddr {
    palisade_echo::spawn(LOCAL.parse().unwrap(), name)
        .await
        .expect("echo starts")
        .0
}

/// An upstream that answers every read on a connection with the same raw bytes (a canned answer to
/// each body-less request on a kept-alive connection).
pub async fn canned_upstream(answer: &'static [u8]) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(LOCAL).await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                while matches!(stream.read(&mut buffer).await, Ok(n) if n > 0) {
                    if stream.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    address
}

/// An upstream that tells the test when each request has arrived and holds every answer until the
/// test releases them: tests that need a request "in flight" wait for that event, not for a sleep.
pub struct HeldUpstream {
    pub address: SocketAddr,
    arrivals: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<String>>,
    release: tokio::sync::watch::Sender<bool>,
}

impl HeldUpstream {
    pub async fn start() -> HeldUpstream {
        let listener = tokio::net::TcpListener::bind(LOCAL).await.unwrap();
        let address = listener.local_addr().unwrap();
        let (announce, arrivals) = tokio::sync::mpsc::unbounded_channel();
        let (release, released) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (announce, released) = (announce.clone(), released.clone());
                let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let _ = announce.send(request.uri().path().to_string());
                    let mut released = released.clone();
                    async move {
                        let _ = released.wait_for(|released| *released).await;
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from_static(b"held"))))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        HeldUpstream {
            address,
            arrivals: tokio::sync::Mutex::new(arrivals),
            release,
        }
    }

    /// Waits (up to 10 s) until `count` more requests have reached the upstream.
    pub async fn arrived(&self, count: usize) {
        let mut arrivals = self.arrivals.lock().await;
        for seen in 0..count {
            tokio::time::timeout(Duration::from_secs(10), arrivals.recv())
                .await
                .unwrap_or_else(|_| panic!("only {seen} of {count} requests reached the upstream"));
        }
    }

    /// Lets every held request, and every later one, be answered.
    pub fn release(&self) {
        let _ = self.release.send(true);
    }
}

/// An upstream that reads the request head, then resets the connection: at once, or after the
/// head and part of the body of its answer (`mid_response`).
pub async fn resetting_upstream(mid_response: bool) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(LOCAL).await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buffer = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tokio::io::AsyncReadExt::read(&mut stream, &mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buffer[..n]),
                    }
                }
                if mid_response {
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
                        .await;
                    let _ = stream.flush().await;
                }
                let _ = stream.set_zero_linger();
            });
        }
    });
    address
}

/// An address where nothing listens (bound, then released).
pub async fn dead_address() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(LOCAL).await.unwrap();
    listener.local_addr().unwrap()
}

pub struct Running {
    pub gateway: Gateway,
    pub base: String,
    pub address: SocketAddr,
    pub config_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn metrics(&self) -> String {
        let (status, body) = get(&format!("http://{}/metrics", self.gateway.admin_addr())).await;
        assert_eq!(status, 200);
        body
    }

    pub fn rewrite_config(&self, yaml: &str) {
        std::fs::write(&self.config_path, with_listeners(yaml)).unwrap();
    }
}

/// Adds a local listener and admin listener (and a quiet access log) unless the YAML has its own.
pub fn with_listeners(yaml: &str) -> String {
    let mut text = String::new();
    if !yaml.contains("listeners:") {
        text.push_str("listeners:\n  - name: public\n    address: 127.0.0.1:0\n");
    }
    if !yaml.contains("admin:") {
        text.push_str("admin:\n  address: 127.0.0.1:0\n");
    }
    if !yaml.contains("access_log:") {
        text.push_str("access_log:\n  enabled: false\n");
    }
    if !yaml.contains("audit:") {
        text.push_str("audit:\n  enabled: false\n");
    }
    text.push_str(yaml);
    text
}

/// Writes `yaml` (with the test listeners) into `dir` and returns every error `check-config`
/// reports for it; fails the test if it loads.
pub async fn config_errors(dir: &std::path::Path, yaml: &str) -> String {
    let path = dir.join("gateway.yaml");
    std::fs::write(&path, with_listeners(yaml)).unwrap();
    match palisade_gateway::check_config(&path, palisade_core::ConfigKind::Gateway).await {
        Ok(_) => panic!("this config must not load:\n{yaml}"),
        Err(errors) => errors.to_string(),
    }
}

pub async fn start(yaml: &str) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("gateway.yaml");
    std::fs::write(&config_path, with_listeners(yaml)).unwrap();
    let gateway = Gateway::start(ConfigSource::File(config_path.clone()))
        .await
        .unwrap_or_else(|e| panic!("gateway starts: {e}"));
    let address = gateway.listener_addr("public").expect("public listener");
    Running {
        gateway,
        base: format!("http://{address}"),
        address,
        config_path,
        _dir: dir,
    }
}

/// A config with one cluster `echo` of the given targets and a catch-all route to it.
pub fn one_cluster(targets: &[SocketAddr], cluster_extra: &str) -> String {
    let list: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        "clusters:\n  echo:\n    targets: [{}]\n{cluster_extra}routes:\n  - name: all\n    match: {{ prefix: / }}\n    cluster: echo\n    public: true\n",
        list.join(", ")
    )
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn h2_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).http2_only(true).build_http()
}

pub async fn get(url: &str) -> (u16, String) {
    send(http::Request::get(url).body(Full::default()).unwrap()).await
}

/// `get` for a spawned task (owns its URL).
pub async fn get_owned(url: String) -> (u16, String) {
    get(&url).await
}

pub async fn send(request: http::Request<Full<Bytes>>) -> (u16, String) {
    let (status, _, body) = send_full(&client(), request).await;
    (status, body)
}

/// A response as tests look at it.
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Reply {
    /// A header's value as text ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

/// `method url` with `headers` and no body.
pub async fn call_with(method: &str, url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let (status, headers, body) = send_full(&client(), request.body(Full::default()).unwrap()).await;
    Reply { status, headers, body }
}

/// `GET url` with `headers`.
pub async fn call(url: &str, headers: &[(&str, &str)]) -> Reply {
    call_with("GET", url, headers).await
}

/// Sends a request and returns (status, headers, body); fails the test instead of hanging.
pub async fn send_full(
    client: &Client<HttpConnector, Full<Bytes>>,
    request: http::Request<Full<Bytes>>,
) -> (u16, http::HeaderMap, String) {
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .expect("no hang")
        .expect("response");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// Writes `request` on a fresh connection and reads until the server closes it (or 5 s pass).
pub async fn raw(address: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(request).await.expect("write");
    read_all(&mut stream, Duration::from_secs(5)).await
}

pub async fn read_all(stream: &mut TcpStream, limit: Duration) -> String {
    let mut received = Vec::new();
    let mut buffer = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

/// The status code of the first response in a raw exchange.
pub fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// How many HTTP responses a raw exchange holds.
pub fn response_count(response: &str) -> usize {
    response.matches("HTTP/1.1 ").count()
}

/// The echo's JSON description, parsed.
pub fn echoed(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("echo JSON expected ({e}): {body}"))
}

/// A receiver on 127.0.0.1 (an OTLP collector, a webhook) that keeps the JSON bodies POSTed to it
/// with their Authorization header.
pub async fn json_receiver() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>>,
) {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let received: std::sync::Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>> = Default::default();
    let store = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let store = store.clone();
            let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let store = store.clone();
                async move {
                    let token = request
                        .headers()
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    let body = request.into_body().collect().await.unwrap().to_bytes();
                    store
                        .lock()
                        .unwrap()
                        .push((token, serde_json::from_slice(&body).unwrap()));
                    Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                        bytes::Bytes::new(),
                    )))
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    (address, received)
}

/// Waits (up to 10 s, checking every 20 ms) until `condition` holds; panics naming `what` if it
/// never does. Tests wait for the event they need, never a fixed time.
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
