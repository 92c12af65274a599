//! Stage: body limit. A declared `Content-Length` over the route's limit is refused before anything is
//! sent upstream; a streamed body is counted as it passes and cut off with an error once it exceeds
//! the limit, so the gateway never buffers a body to check its size.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::respond::GatewayError;
use crate::upstream::BoxError;

/// The error a limited body yields when the client sends more than allowed.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the limit of {0} bytes")]
pub struct BodyTooLarge(pub u64);

/// Refuses a declared length over the limit.
pub fn check_declared(headers: &http::HeaderMap, limit: u64) -> Result<(), GatewayError> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(length) if length > limit => Err(GatewayError::PayloadTooLarge),
        _ => Ok(()),
    }
}

/// Whether an upstream error was caused by the limit cutting the request body off.
pub fn caused_by_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<BodyTooLarge>() {
            return true;
        }
        current = error.source();
    }
    false
}

/// The client's body, counted into `received` and limited to `limit` bytes.
pub struct LimitedBody {
    inner: Incoming,
    limit: u64,
    received: Arc<AtomicU64>,
}

impl LimitedBody {
    pub fn new(inner: Incoming, limit: u64, received: Arc<AtomicU64>) -> Self {
        Self { inner, limit, received }
    }
}

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let limit = self.limit;
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let total = self.received.fetch_add(data.len() as u64, Ordering::Relaxed) + data.len() as u64;
                    if total > limit {
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge(limit)))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(Box::new(error)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
