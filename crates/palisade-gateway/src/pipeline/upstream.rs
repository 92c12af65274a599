//! Stage: upstream. Send the request to a target of the route's cluster and stream the answer back.
//!
//! Timeouts bound every wait (connect, then response head), so an unreachable or stuck upstream is a
//! 502/503/504, never a hang. A request is retried on another target only when that is safe: an
//! idempotent method, no request body, a failure before any response (or a 503), and room in the
//! cluster's retry budget.

use std::sync::Arc;
use std::time::Instant;

use http::header::{HeaderValue, HOST};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Empty};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::context::RequestContext;
use crate::pipeline::body_limit::caused_by_limit;
use crate::pipeline::forwarded::{remove_hop_by_hop, X_REQUEST_ID};
use crate::respond::GatewayError;
use crate::upstream::{Cluster, FailureKind, Outcome, ProxyBody, Target, UpstreamError};
use palisade_core::config::UpstreamProtocol;

/// What the earlier stages prepared for the upstream.
pub struct Prepared {
    pub method: Method,
    pub path_and_query: String,
    pub headers: http::HeaderMap,
    pub body: ProxyBody,
    /// Set when the client asked to upgrade (WebSocket) and the body is empty.
    pub client_upgrade: Option<OnUpgrade>,
}

pub async fn forward(
    cluster: &Cluster,
    protocol: UpstreamProtocol,
    context: &mut RequestContext,
    prepared: Prepared,
) -> Result<Response<ProxyBody>, GatewayError> {
    cluster.deposit_request();
    let Prepared {
        method,
        path_and_query,
        headers,
        body,
        client_upgrade,
    } = prepared;
    let retryable = cluster.retry_attempts > 0
        && is_idempotent(&method)
        && http_body::Body::is_end_stream(&body)
        && client_upgrade.is_none();
    let mut body = Some(body);
    // Only a retryable request can have a second attempt, so only it pays for a copy of its headers.
    let mut headers = Some(headers);
    // The origin-form target, parsed once for all attempts; the transport adds the target's authority
    // where its protocol needs one.
    let origin = Uri::from_maybe_shared(bytes::Bytes::from(path_and_query))
        .map_err(|_| GatewayError::BadRequest("bad_request_target"))?;
    let mut failed: Option<Arc<Target>> = None;
    let mut attempt = 0;
    loop {
        let in_flight = cluster.pick(failed.as_ref()).ok_or(GatewayError::NoHealthyUpstream)?;
        let target = in_flight.target().clone();
        context.upstream_target = Some(target.clone());
        let attempt_body = body
            .take()
            .unwrap_or_else(|| Empty::new().map_err(|never| match never {}).boxed());
        let mut request = Request::new(attempt_body);
        *request.method_mut() = method.clone();
        *request.uri_mut() = origin.clone();
        *request.version_mut() = if protocol == UpstreamProtocol::Http2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        *request.headers_mut() = match retryable {
            true => headers.clone().unwrap_or_default(),
            false => headers.take().unwrap_or_default(),
        };

        let sent = Instant::now();
        let result = tokio::time::timeout(cluster.request_timeout, cluster.send(&target, request)).await;
        let elapsed = sent.elapsed();
        cluster.upstream_duration.observe(elapsed.as_secs_f64());
        context.upstream_ms = Some(elapsed.as_secs_f64() * 1000.0);
        drop(in_flight);

        let error = match result {
            Ok(Ok(response)) => {
                let unavailable = response.status() == StatusCode::SERVICE_UNAVAILABLE;
                let failure = matches!(response.status().as_u16(), 502..=504);
                cluster.record(&target, if failure { Outcome::Failure } else { Outcome::Success });
                if unavailable && retryable && can_retry(cluster, attempt) {
                    attempt += 1;
                    failed = Some(target);
                    continue;
                }
                return Ok(finish_response(
                    response,
                    client_upgrade,
                    context.request_id_header.as_ref(),
                ));
            }
            Ok(Err(error)) => error,
            Err(_elapsed) => {
                cluster.record(&target, Outcome::Failure);
                return Err(GatewayError::UpstreamTimeout);
            }
        };
        if caused_by_limit(&error) {
            return Err(GatewayError::PayloadTooLarge);
        }
        cluster.record(&target, Outcome::Failure);
        let classified = classify(&error);
        if error.kind == FailureKind::TlsHandshake {
            // A misconfiguration or an impostor, never load: say so where operators look.
            tracing::warn!(cluster = %cluster.name, target = %target.address, error = %error, "upstream TLS handshake refused");
        } else {
            tracing::debug!(cluster = %cluster.name, target = %target.address, error = %error, "upstream request failed");
        }
        if retryable && error.is_connect() && can_retry(cluster, attempt) {
            attempt += 1;
            failed = Some(target);
            continue;
        }
        return Err(classified);
    }
}

fn can_retry(cluster: &Cluster, attempt: u32) -> bool {
    let allowed = attempt < cluster.retry_attempts && cluster.withdraw_retry();
    if allowed {
        cluster.retries.inc();
    }
    allowed
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

fn classify(error: &UpstreamError) -> GatewayError {
    match error.kind {
        FailureKind::Unreachable => GatewayError::UpstreamUnreachable,
        FailureKind::ConnectTimeout => GatewayError::UpstreamTimeout,
        FailureKind::TlsHandshake => GatewayError::UpstreamTls,
        FailureKind::Exchange => GatewayError::UpstreamFailed,
    }
}

fn finish_response(
    mut response: Response<ProxyBody>,
    client_upgrade: Option<OnUpgrade>,
    request_id: Option<&HeaderValue>,
) -> Response<ProxyBody> {
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching {
        if let Some(client_upgrade) = client_upgrade {
            tunnel(client_upgrade, hyper::upgrade::on(&mut response));
        }
    }
    remove_hop_by_hop(response.headers_mut(), switching);
    if let Some(value) = request_id {
        response.headers_mut().insert(X_REQUEST_ID, value.clone());
    }
    response
}

/// Joins the two upgraded connections once both sides have switched protocols.
fn tunnel(client: OnUpgrade, upstream: OnUpgrade) {
    tokio::spawn(async move {
        let (Ok(client), Ok(upstream)) = (client.await, upstream.await) else {
            return;
        };
        let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    });
}

/// HTTP/1 needs a `Host`. An HTTP/2 client sends `:authority` instead, and an HTTP/1 request in absolute
/// form carries one in its target; the URI has it, the route was chosen by it, so the upstream's `Host`
/// is set from it whatever `Host` the client sent (RFC 9112 §3.2.2). `forwarded::request_host` refused
/// an authority with user information.
pub fn ensure_host(headers: &mut http::HeaderMap, uri: &Uri) {
    match uri.authority().map(|a| HeaderValue::from_str(a.as_str())) {
        Some(Ok(value)) => {
            headers.insert(HOST, value);
        }
        Some(Err(_)) => {
            headers.remove(HOST);
        }
        None => {}
    }
}
