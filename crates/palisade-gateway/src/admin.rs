//! The admin listener (loopback by default): `/healthz` (the process answers), `/readyz` (a config is
//! loaded and every cluster has a target in rotation) and `/metrics` (Prometheus/OpenMetrics text).
//! It is read-only; nothing here changes state.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use palisade_core::problem::Problem;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::Shared;

pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => continue,
            },
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| answer(shared.clone(), request));
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10));
            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn answer(shared: Arc<Shared>, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return Ok(problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method Not Allowed",
        ));
    }
    let response = match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n"),
        "/readyz" => readiness(&shared),
        "/metrics" => text(
            StatusCode::OK,
            palisade_telemetry::metrics::CONTENT_TYPE,
            shared.metrics.encode(),
        ),
        // The public half of the internal identity token key, for upstreams that verify it.
        "/.well-known/jwks.json" => text(
            StatusCode::OK,
            "application/jwk-set+json",
            shared.runtime.load().signer.jwks().to_string(),
        ),
        _ => problem(StatusCode::NOT_FOUND, "not-found", "Not Found"),
    };
    Ok(response)
}

fn readiness(shared: &Shared) -> Response<Full<Bytes>> {
    let runtime = shared.runtime.load();
    let unready: Vec<&str> = runtime
        .clusters
        .iter()
        .filter(|(_, c)| !c.has_available_target())
        .map(|(n, _)| n.as_str())
        .collect();
    let body = serde_json::json!({ "ready": unready.is_empty(), "clusters_without_healthy_target": unready });
    let status = if unready.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    text(status, "application/json", body.to_string())
}

fn text(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn problem(status: StatusCode, slug: &str, title: &str) -> Response<Full<Bytes>> {
    let body = Problem::new(status, slug, title).to_json();
    text(status, palisade_core::problem::CONTENT_TYPE, body)
}
