//! The admin listener of an identity-only sidecar (no inbound or outbound: it only keeps the pod's
//! certificate fresh for the pod's other containers): `/healthz`, `/readyz` (a valid certificate
//! is on disk) and `/metrics`, for kubelet probes and Prometheus.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::agent::IdentityStatus;

/// The latest identity status, as the agent reports it.
#[derive(Default)]
pub struct SharedStatus {
    seconds_left: AtomicI64,
    renewal_failing: AtomicBool,
}

impl SharedStatus {
    pub fn set(&self, status: IdentityStatus) {
        self.seconds_left.store(status.seconds_left, Ordering::Release);
        self.renewal_failing.store(status.renewal_failing, Ordering::Release);
    }
}

/// Serves the status on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, status: Arc<SharedStatus>) {
    while let Ok((stream, _)) = listener.accept().await {
        let status = status.clone();
        let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let answer = answer(request.uri().path(), &status);
            async move { Ok::<_, std::convert::Infallible>(answer) }
        });
        tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service));
    }
}

fn answer(path: &str, status: &SharedStatus) -> Response<Full<Bytes>> {
    let seconds_left = status.seconds_left.load(Ordering::Acquire);
    let failing = status.renewal_failing.load(Ordering::Acquire);
    let (code, body) = match path {
        "/healthz" => (StatusCode::OK, "ok\n".to_string()),
        "/readyz" if seconds_left > 0 => (
            StatusCode::OK,
            format!("{{\"status\":\"ready\",\"certificate_seconds_left\":{seconds_left},\"renewal_failing\":{failing}}}\n"),
        ),
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "{\"status\":\"not_ready\",\"reason\":\"no valid certificate\"}\n".to_string(),
        ),
        "/metrics" => (
            StatusCode::OK,
            format!(
                "# HELP palisade_identity_expiry_seconds Seconds until this workload's certificate expires.\n# TYPE palisade_identity_expiry_seconds gauge\npalisade_identity_expiry_seconds {seconds_left}\n# HELP palisade_identity_renewal_failing Whether the last renewal attempt failed.\n# TYPE palisade_identity_renewal_failing gauge\npalisade_identity_renewal_failing {}\n",
                u8::from(failing)
            ),
        ),
        _ => (StatusCode::NOT_FOUND, "not found\n".to_string()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = code;
    response
}
