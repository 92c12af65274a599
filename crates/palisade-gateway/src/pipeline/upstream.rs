//! Stage upstream: Send the request to a target of the route's cluster and stream the answer back.
//!
//! Timeouts bound every wait (connect, then response head), so an unreachable or stuck upstream is a
//! 502/503/504, never a hang. A request is retried on another target only when that is safe: an
//! idempotent method, no request body, a failure named in the cluster's `retries.on` (by default a
//! connection that could not be made, or one that broke before the response head), and room in the
//! cluster's retry budget.

use std::sync::Arc;
use std::time::Instant;

use http::header::{HeaderValue, HOST};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::context::RequestContext;
use crate::pipeline::body_limit::{caused_by_limit, client_body_failure};
use crate::pipeline::forwarded::{remove_hop_by_hop, X_REQUEST_ID};
use crate::respond::{empty_body, GatewayError};
use crate::upstream::{Cluster, FailureKind, Outcome, ProxyBody, SendFailure, Target, UpstreamError};
use palisade_core::config::UpstreamProtocol;

/// What the earlier stages prepared for the upstream.
pub struct Prepared {
    pub method: Method,
    /// Origin form (`/path?query`): the normalized path that was routed and the client's query. The
    /// transport adds the target's authority where its protocol needs one.
    pub origin: Uri,
    pub headers: http::HeaderMap,
    pub body: ProxyBody,
    /// Set when the client asked to upgrade (WebSocket) and the body is empty.
    pub client_upgrade: Option<OnUpgrade>,
}

/// The head of a retryable request, copied before the first attempt for a retry that the transport
/// cannot hand the request back for: after a 503, or over HTTP/2.
struct Replay {
    origin: Uri,
    headers: http::HeaderMap,
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
        origin,
        headers,
        body,
        client_upgrade,
    } = prepared;
    let retryable = cluster.retry_attempts > 0
        && is_idempotent(&method)
        && http_body::Body::is_end_stream(&body)
        && client_upgrade.is_none();
    // An HTTP/1 request that could not be sent comes back from the pool and goes out again as it is;
    // only the other retries need a copy, so only they pay for one.
    let needs_replay = cluster.retry_unavailable
        || cluster.retry_reset
        || (protocol == UpstreamProtocol::Http2 && cluster.retry_connect_failure);
    let replay = (retryable && needs_replay).then(|| Replay {
        origin: origin.clone(),
        headers: headers.clone(),
    });
    let version = match protocol {
        UpstreamProtocol::Http2 => Version::HTTP_2,
        UpstreamProtocol::Http1 => Version::HTTP_11,
    };
    let mut next = Some(upstream_request(method.clone(), origin, version, headers, body));
    let mut failed: Option<Arc<Target>> = None;
    let mut attempt = 0;
    loop {
        let request = match (next.take(), &replay) {
            (Some(request), _) => request,
            (None, Some(replay)) => {
                let (origin, headers) = (replay.origin.clone(), replay.headers.clone());
                upstream_request(method.clone(), origin, version, headers, empty_body())
            }
            // A retry is decided only when there is a request to send (see below).
            (None, None) => return Err(GatewayError::UpstreamFailed),
        };
        let in_flight = cluster.pick(failed.as_ref()).ok_or(GatewayError::NoHealthyUpstream)?;
        let target = in_flight.target().clone();
        context.upstream_target = Some(target.clone());

        let sent = Instant::now();
        let result = tokio::time::timeout(cluster.request_timeout, cluster.send(&target, request)).await;
        let elapsed = sent.elapsed();
        cluster.upstream_duration.observe(elapsed.as_secs_f64());
        target.observe_latency(elapsed);
        context.upstream_ms = Some(elapsed.as_secs_f64() * 1000.0);
        drop(in_flight);

        let SendFailure { error, unsent } = match result {
            Ok(Ok(response)) => {
                // Switching protocols was not asked for (the request's `Upgrade` did not pass): the
                // upstream's answer cannot be relayed as HTTP, and it is the upstream's fault.
                if response.status() == StatusCode::SWITCHING_PROTOCOLS && client_upgrade.is_none() {
                    cluster.record(&target, Outcome::Failure);
                    return Err(GatewayError::UpstreamFailed);
                }
                let unavailable = response.status() == StatusCode::SERVICE_UNAVAILABLE;
                // A good head is recorded as a success only when its body has ended well too
                // (`observe`): an upstream that resets mid-body has failed.
                if matches!(response.status().as_u16(), 502..=504) {
                    cluster.record(&target, Outcome::Failure);
                }
                if unavailable && cluster.retry_unavailable && replay.is_some() && can_retry(cluster, attempt) {
                    attempt += 1;
                    failed = Some(target);
                    continue;
                }
                return Ok(finish_response(response, client_upgrade, &context.request_id));
            }
            Ok(Err(failure)) => failure,
            Err(_elapsed) => {
                // An upstream still waiting for a body the client has not finished sending is not
                // slow: the client is (nginx's client_body_timeout answers 408).
                if context.body.as_ref().is_some_and(|body| !body.complete()) {
                    return Err(GatewayError::ClientBodyTimeout);
                }
                cluster.record(&target, Outcome::Failure);
                return Err(GatewayError::UpstreamTimeout);
            }
        };
        // The client's body failing is the client's fault: not the upstream's, and never retried.
        if caused_by_limit(&error) {
            return Err(GatewayError::PayloadTooLarge);
        }
        if let Some(reason) = client_body_failure(&error) {
            return Err(GatewayError::ClientBody(reason));
        }
        cluster.record(&target, Outcome::Failure);
        let classified = classify(&error);
        if error.kind == FailureKind::TlsHandshake {
            // A misconfiguration or an impostor, never load: say so where operators look.
            tracing::warn!(cluster = %cluster.name, target = %target.address, error = %error, "upstream TLS handshake refused");
        } else {
            tracing::debug!(cluster = %cluster.name, target = %target.address, error = %error, "upstream request failed");
        }
        let resendable = unsent.is_some() || replay.is_some();
        let retry_on =
            (cluster.retry_connect_failure && error.is_connect()) || (cluster.retry_reset && error.is_reset());
        if retryable && retry_on && resendable && can_retry(cluster, attempt) {
            attempt += 1;
            failed = Some(target);
            next = unsent;
            continue;
        }
        return Err(classified);
    }
}

fn upstream_request(
    method: Method,
    origin: Uri,
    version: Version,
    headers: http::HeaderMap,
    body: ProxyBody,
) -> Request<ProxyBody> {
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = origin;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    request
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
    request_id: &HeaderValue,
) -> Response<ProxyBody> {
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching {
        if let Some(client_upgrade) = client_upgrade {
            tunnel(client_upgrade, hyper::upgrade::on(&mut response));
        }
    }
    remove_hop_by_hop(response.headers_mut(), switching);
    response.headers_mut().insert(X_REQUEST_ID, request_id.clone());
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

/// The origin-form target the upstream gets: the normalized path that was routed and the client's
/// query. The client's own target is passed on as it is when it already is exactly that, which is
/// the common case and needs no copy.
pub fn origin_form(client_target: Uri, path: &str) -> Result<Uri, GatewayError> {
    let origin_form = client_target.scheme().is_none() && client_target.authority().is_none();
    if origin_form && client_target.path() == path {
        return Ok(client_target);
    }
    let query = client_target.query();
    let mut target = String::with_capacity(path.len() + query.map_or(0, |q| q.len() + 1));
    target.push_str(path);
    if let Some(query) = query {
        target.push('?');
        target.push_str(query);
    }
    Uri::from_maybe_shared(bytes::Bytes::from(target)).map_err(|_| GatewayError::BadRequest("bad_request_target"))
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
