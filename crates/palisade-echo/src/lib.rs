//! `palisade echo`: an upstream that answers every request with a JSON description of what it received
//! (method, path, query, headers, body length). Tests, the demo and the benchmarks put it behind the
//! gateway to see exactly what the gateway forwarded.
//!
//! Two request headers steer it, for tests of the gateway's upstream handling:
//! - `x-echo-status: 503` answers with that status;
//! - `x-echo-delay-ms: 200` waits that long (at most 60 s) before answering;
//! - `x-echo-size: 1048576` answers with that many bytes of `x` instead of the description (at most
//!   64 MiB), for tests and benchmarks of large answers.
//!
//! Each answer names the connection it came on (`connection`: 1, 2, … in accept order), so tests can
//! see whether a proxy reuses upstream connections.
//!
//! A request with `Upgrade` is answered `101 Switching Protocols` and the upgraded connection echoes
//! bytes back, which is enough to test that WebSocket upgrades pass through the gateway.
#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const MAX_DELAY: Duration = Duration::from_secs(60);
const MAX_SIZE: u64 = 64 * 1024 * 1024;

/// Serves until the task is dropped or aborted; connections belong to the task and end with it, as
/// when a real upstream process dies. Each connection speaks HTTP/1.1 or HTTP/2 (prior knowledge),
/// detected from its first bytes.
pub async fn serve(listener: TcpListener, name: String) {
    let mut connections = tokio::task::JoinSet::new();
    let mut accepted_count: u64 = 0;
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "echo: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let name = name.clone();
        accepted_count += 1;
        let connection = accepted_count;
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| answer(request, name.clone(), connection));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Binds `address` and serves in a background task; returns the bound address (useful with port 0).
pub async fn spawn(address: SocketAddr, name: &str) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    Ok((bound, tokio::spawn(serve(listener, name.to_string()))))
}

async fn answer(
    request: Request<Incoming>,
    name: String,
    connection: u64,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Some(delay) = header_number(&request, "x-echo-delay-ms") {
        tokio::time::sleep(Duration::from_millis(delay).min(MAX_DELAY)).await;
    }
    if request.headers().contains_key(hyper::header::UPGRADE) {
        return Ok(upgrade(request));
    }
    let status = header_number(&request, "x-echo-status")
        .and_then(|code| u16::try_from(code).ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .unwrap_or(StatusCode::OK);
    if let Some(size) = header_number(&request, "x-echo-size") {
        let size = usize::try_from(size.min(MAX_SIZE)).unwrap_or(0);
        let response = Response::builder()
            .status(status)
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from(vec![b'x'; size])));
        return Ok(response.unwrap_or_else(|_| Response::new(Full::default())));
    }
    let description = describe(request, &name, connection).await;
    let body = serde_json::to_vec_pretty(&description).unwrap_or_default();
    let response = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("server", "palisade-echo")
        .header("x-powered-by", "palisade-echo")
        .body(Full::new(Bytes::from(body)));
    Ok(response.unwrap_or_else(|_| Response::new(Full::default())))
}

async fn describe(request: Request<Incoming>, name: &str, connection: u64) -> Value {
    let (parts, body) = request.into_parts();
    let mut headers = Map::new();
    for (header, value) in &parts.headers {
        let value = Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned());
        match headers.get_mut(header.as_str()) {
            Some(Value::Array(values)) => values.push(value),
            _ => {
                headers.insert(header.as_str().to_string(), Value::Array(vec![value]));
            }
        }
    }
    let body_length = match body.collect().await {
        Ok(collected) => collected.to_bytes().len(),
        Err(_) => 0,
    };
    json!({
        "upstream": name,
        "connection": connection,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_length": body_length,
    })
}

fn header_number(request: &Request<Incoming>, name: &str) -> Option<u64> {
    request.headers().get(name)?.to_str().ok()?.trim().parse().ok()
}

fn upgrade(request: Request<Incoming>) -> Response<Full<Bytes>> {
    let protocol = request.headers().get(hyper::header::UPGRADE).cloned();
    tokio::spawn(async move {
        if let Ok(upgraded) = hyper::upgrade::on(request).await {
            let mut io = TokioIo::new(upgraded);
            let mut buffer = [0u8; 4096];
            while let Ok(read) = io.read(&mut buffer).await {
                if read == 0 || io.write_all(&buffer[..read]).await.is_err() {
                    break;
                }
            }
        }
    });
    let mut response = Response::new(Full::default());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    response.headers_mut().insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("upgrade"),
    );
    if let Some(protocol) = protocol {
        response.headers_mut().insert(hyper::header::UPGRADE, protocol);
    }
    response
}
