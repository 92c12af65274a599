//! Last stage, observe: when the response body has been sent (or abandoned), record the request in the
//! route's metrics and the access log. Doing it at the end of the body, not when the head is ready,
//! gives the true duration and byte count of streamed responses. With detection on, the answer is
//! also handed to the anomaly detectors.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use palisade_core::decision::{Decision, Fault};
use palisade_telemetry::{AccessLogEntry, RouteMetrics};

use crate::context::RequestContext;
use crate::detection::Observation;
use crate::runtime::Runtime;
use crate::upstream::{BoxError, ProxyBody};

/// A request not yet answered, holding its context. hyper drops a request's future when its client
/// goes away before the answer (a closed or reset connection, an HTTP/2 stream reset); dropped so,
/// this records the request as `client_closed` with status 499 (nginx's code for it), the client's
/// fault, so that no request leaves the access log and the metrics unaccounted.
pub struct Unanswered {
    /// Present until [`Unanswered::answer`] takes it.
    context: Option<RequestContext>,
    runtime: Arc<Runtime>,
}

/// The status logged for a request whose client went away before it was answered.
pub const CLIENT_CLOSED_STATUS: u16 = 499;

impl Unanswered {
    pub fn new(context: RequestContext, runtime: Arc<Runtime>) -> Self {
        Self {
            context: Some(context),
            runtime,
        }
    }

    /// The runtime, and the context for the stages to fill in.
    pub fn parts(&mut self) -> (&Runtime, &mut RequestContext) {
        let context = self.context.as_mut().expect("the context is present until answered");
        (&self.runtime, context)
    }

    /// The request is answered with `response`: it is recorded when the response's body ends.
    pub fn answer(mut self, response: http::Response<ProxyBody>) -> http::Response<ObservedBody> {
        let context = self.context.take().expect("the context is present until answered");
        observe(response, context, self.runtime.clone())
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        let Some(mut context) = self.context.take() else {
            return;
        };
        context.decision = Some(Decision::new(context.stage, Fault::Client, "client_closed"));
        let metrics = self.runtime.route_metrics(context.route_index);
        Record {
            context,
            status: CLIENT_CLOSED_STATUS,
            bytes_out: 0,
            upstream_broke: false,
            client_stalled: false,
            metrics,
            runtime: self.runtime.clone(),
        }
        .finish();
    }
}

pub struct ObservedBody {
    inner: ProxyBody,
    record: Option<Record>,
}

struct Record {
    context: RequestContext,
    status: u16,
    bytes_out: u64,
    /// The upstream's response body failed (a reset or a malformed body after the head).
    upstream_broke: bool,
    /// An HTTP/2 client stopped taking the response for `limits.send_timeout` (`read_ahead`).
    client_stalled: bool,
    metrics: RouteMetrics,
    runtime: Arc<Runtime>,
}

/// Wraps `response` so that it is recorded when its body ends.
pub fn observe(
    response: http::Response<ProxyBody>,
    context: RequestContext,
    runtime: Arc<Runtime>,
) -> http::Response<ObservedBody> {
    let status = response.status().as_u16();
    let metrics = runtime.route_metrics(context.route_index);
    response.map(|inner| ObservedBody {
        inner,
        record: Some(Record {
            context,
            status,
            bytes_out: 0,
            upstream_broke: false,
            client_stalled: false,
            metrics,
            runtime,
        }),
    })
}

impl Body for ObservedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match (&polled, self.record.as_mut()) {
            (Poll::Ready(Some(Ok(frame))), Some(record)) => {
                if let Some(data) = frame.data_ref() {
                    record.bytes_out += data.len() as u64;
                }
            }
            // Only an upstream's body can fail (the gateway's own answers are complete bytes), or the
            // read-ahead that cut off a client that stopped reading.
            (Poll::Ready(Some(Err(error))), Some(record)) => {
                if crate::pipeline::read_ahead::is_client_stall(error) {
                    record.client_stalled = true;
                } else {
                    record.upstream_broke = true;
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        if let Some(record) = self.record.take() {
            record.finish();
        }
    }
}

/// Counts the answer for the route and cluster detectors, and hands the answers the per-client
/// detectors need to their queue (bounded; a full one is counted).
fn detect(runtime: &Runtime, context: &RequestContext, status: u16) {
    if let Some(route) = context.route_index.and_then(|index| runtime.routes.get(index)) {
        // The upstream's own 502-504 answers count as its failures, as in passive health.
        let upstream_failed = match context.decision {
            Some(decision) => decision.fault == Fault::Upstream,
            None => matches!(status, 502..=504),
        };
        let reached_upstream = context.upstream_target.is_some() || upstream_failed;
        route
            .detection
            .record(reached_upstream, upstream_failed, context.upstream_ms);
    }
    if !palisade_detect::concerns_clients(status) {
        return;
    }
    let observation = Observation {
        client: context.client_ip,
        status,
        decision: context.decision,
        path_hash: if matches!(status, 404 | 405) {
            palisade_detect::hash_path(&context.path)
        } else {
            0
        },
        attempted_subject: context.attempted_subject.clone(),
        principal: if status == 403 {
            context.principal.as_ref().map(|p| p.subject.clone())
        } else {
            None
        },
    };
    if !runtime.detection.offer(observation) {
        runtime.metrics.detection_dropped.inc();
    }
}

/// The access-log line of a connection the gateway closed before it read a whole request (refused
/// at accept, silent, a head too slow or too large, a refused TLS handshake); `head` is what was read
/// of the request line. Not a request in `palisade_requests_total`: the connection counters have them.
pub fn log_connection_refusal(
    runtime: &Runtime,
    peer: std::net::SocketAddr,
    head: Option<&crate::framing::PartialHead>,
    status: u16,
    decision: Decision,
) {
    let Some(log) = &runtime.access_log else {
        return;
    };
    let request_id = crate::pipeline::forwarded::request_id(&http::HeaderMap::new());
    log.log(AccessLogEntry {
        time: std::time::SystemTime::now(),
        request_id: request_id.to_str().unwrap_or_default().to_string(),
        client_ip: Some(crate::pipeline::forwarded::canonical(peer.ip())),
        method: head.map(|h| h.method.clone()).unwrap_or_default(),
        path: head.map(|h| h.path.clone()).unwrap_or_default(),
        route: None,
        status,
        bytes_in: 0,
        bytes_out: 0,
        duration_ms: 0.0,
        upstream: None,
        upstream_ms: None,
        principal: None,
        auth_method: None,
        decided_by: None,
        reason: Some(decision.reason),
        stage: Some(decision.stage),
        fault: Some(decision.fault),
    });
}

/// An HTTP/2 client took no response data for `limits.send_timeout` and was cut off.
const CLIENT_STALLED: Decision = Decision::new(
    palisade_core::decision::Stage::Upstream,
    Fault::Client,
    "client_stalled",
);

/// Passive health for an answer the upstream gave: a success once its body ended well (or the
/// client stopped reading it), a failure when the body broke off, which is then the request's
/// decision. Heads of 502-504 were counted when they arrived (`upstream::forward`).
fn record_upstream_outcome(runtime: &Runtime, context: &mut RequestContext, status: u16, broke: bool) {
    let (None, Some(target)) = (&context.decision, &context.upstream_target) else {
        return;
    };
    let Some(route) = context.route_index.and_then(|index| runtime.routes.get(index)) else {
        return;
    };
    if broke {
        route.cluster.record(target, crate::upstream::Outcome::Failure);
        context.decision = Some(Decision::new(
            palisade_core::decision::Stage::Upstream,
            Fault::Upstream,
            "upstream_body_failed",
        ));
    } else if !matches!(status, 502..=504) {
        route.cluster.record(target, crate::upstream::Outcome::Success);
    }
}

impl Record {
    fn finish(self) {
        let mut context = self.context;
        if self.client_stalled && context.decision.is_none() {
            context.decision = Some(CLIENT_STALLED);
        }
        record_upstream_outcome(&self.runtime, &mut context, self.status, self.upstream_broke);
        let elapsed = context.started.elapsed();
        self.metrics
            .observe(&context.method, self.status, elapsed.as_secs_f64());
        if self.runtime.config.detection.enabled {
            detect(&self.runtime, &context, self.status);
        }
        let Some(log) = &self.runtime.access_log else {
            return;
        };
        let bytes_in = context.bytes_received();
        log.log(AccessLogEntry {
            time: context.arrived_at(),
            request_id: context.request_id().to_string(),
            client_ip: Some(context.client_ip),
            method: context.method.to_string(),
            path: context.path,
            route: self.runtime.route_name(context.route_index).map(str::to_string),
            status: self.status,
            bytes_in,
            bytes_out: self.bytes_out,
            duration_ms: elapsed.as_secs_f64() * 1000.0,
            upstream: context.upstream_target.map(|target| target.address.clone()),
            upstream_ms: context.upstream_ms,
            principal: context.principal.as_ref().map(|p| p.subject.clone()),
            auth_method: context.principal.as_ref().map(|p| p.method.as_str()),
            decided_by: context.decided_by.as_deref().map(str::to_string),
            reason: context.decision.map(|d| d.reason),
            stage: context.decision.map(|d| d.stage),
            fault: context.decision.map(|d| d.fault),
        });
    }
}
