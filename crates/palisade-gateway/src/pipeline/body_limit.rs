//! Stage body limit: A declared `Content-Length` over the route's limit is refused before anything is
//! sent upstream; a streamed body is counted as it passes and cut off with an error once it exceeds
//! the limit, so the gateway never buffers a body to check its size.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// The error a limited body yields when the client's body breaks off or is malformed: the
/// connection ended or was reset before the body did (`client_closed`), or its chunked framing is
/// invalid (`invalid_body`). Found again in the upstream client's error, it makes the failure the
/// client's.
#[derive(Debug, thiserror::Error)]
#[error("the client's request body failed ({reason}): {source}")]
pub struct ClientBodyFailed {
    pub reason: &'static str,
    #[source]
    source: hyper::Error,
}

impl ClientBodyFailed {
    fn new(source: hyper::Error) -> Self {
        // hyper's chunked decoder reports bad framing (sizes that overflow, bad extensions, a missing
        // CRLF) as InvalidInput or InvalidData; an early end as UnexpectedEof or an incomplete message.
        let malformed = find_in_chain::<std::io::Error>(&source).is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData
            )
        });
        let reason = if malformed || source.is_parse() {
            "invalid_body"
        } else {
            "client_closed"
        };
        Self { reason, source }
    }
}

/// The first error of type `T` in `error`'s source chain.
fn find_in_chain<'a, T: std::error::Error + 'static>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a T> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(found) = error.downcast_ref::<T>() {
            return Some(found);
        }
        current = error.source();
    }
    None
}

/// Whether an upstream error was caused by the limit cutting the request body off.
pub fn caused_by_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    find_in_chain::<BodyTooLarge>(error).is_some()
}

/// The reason code when an upstream error was caused by the client's body failing.
pub fn client_body_failure(error: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    find_in_chain::<ClientBodyFailed>(error).map(|failed| failed.reason)
}

/// How much of a request body has arrived, and whether all of it has.
#[derive(Debug, Default)]
pub struct BodyProgress {
    received: AtomicU64,
    complete: AtomicBool,
}

impl BodyProgress {
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// The whole body arrived (or the client broke it off, which the upstream exchange reports).
    pub fn complete(&self) -> bool {
        self.complete.load(Ordering::Relaxed)
    }
}

/// The client's body, counted into `progress` and limited to `limit` bytes.
pub struct LimitedBody {
    inner: Incoming,
    limit: u64,
    progress: Arc<BodyProgress>,
}

impl LimitedBody {
    pub fn new(inner: Incoming, limit: u64, progress: Arc<BodyProgress>) -> Self {
        Self { inner, limit, progress }
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
                    let total =
                        self.progress.received.fetch_add(data.len() as u64, Ordering::Relaxed) + data.len() as u64;
                    if total > limit {
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge(limit)))));
                    }
                }
                if self.inner.is_end_stream() {
                    self.progress.complete.store(true, Ordering::Relaxed);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(Box::new(ClientBodyFailed::new(error))))),
            Poll::Ready(None) => {
                self.progress.complete.store(true, Ordering::Relaxed);
                Poll::Ready(None)
            }
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
