//! Last stage, observe: when the response body has been sent (or abandoned), record the request in the
//! route's metrics and the access log. Doing it at the end of the body, not when the head is ready,
//! gives the true duration and byte count of streamed responses. With detection on, the answer is
//! also handed to the anomaly detectors.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use palisade_telemetry::{AccessLogEntry, RouteMetrics};

use crate::context::RequestContext;
use crate::detection::Observation;
use crate::runtime::Runtime;
use crate::upstream::{BoxError, ProxyBody};

pub struct ObservedBody {
    inner: ProxyBody,
    record: Option<Record>,
}

struct Record {
    context: RequestContext,
    status: u16,
    bytes_out: u64,
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
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let (Some(data), Some(record)) = (frame.data_ref(), self.record.as_mut()) {
                record.bytes_out += data.len() as u64;
            }
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
        let reached_upstream = context.upstream_target.is_some()
            || context
                .reason
                .is_some_and(|reason| reason.starts_with("upstream") || reason == "no_healthy_upstream");
        route.detection.record(status, reached_upstream, context.upstream_ms);
    }
    if !palisade_detect::concerns_clients(status) {
        return;
    }
    let observation = Observation {
        client: context.client_ip,
        status,
        reason: context.reason,
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

impl Record {
    fn finish(self) {
        let context = self.context;
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
            reason: context.reason,
        });
    }
}
