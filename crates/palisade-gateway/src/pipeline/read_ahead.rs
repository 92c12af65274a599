//! Part of the upstream stage, for HTTP/2 clients: the upstream's response body is read ahead of the
//! client into at most `limits.response_read_ahead` bytes. One HTTP/2 connection carries many
//! streams, and a client that stops reading them (its flow-control window held at zero) would
//! otherwise hold one upstream connection per stream, for as long as it likes. With read-ahead, an
//! answer that fits ends at the upstream at once and its connection goes back to the pool; a longer
//! one holds its upstream connection only while the client keeps taking data, and a client that
//! takes nothing for `limits.send_timeout` is cut off (nginx's `send_timeout`): the stream is reset,
//! the upstream connection closed, and the log says `client_stalled`, the client's fault.
//!
//! HTTP/1 clients are not read ahead: one connection is one upstream exchange at a time, already
//! capped by `limits.max_connections_per_client`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::upstream::{BoxError, ProxyBody};

/// The client took no response data for `limits.send_timeout`: the error the read-ahead body ends
/// with, which `observe` records as the client's fault.
#[derive(Debug)]
pub struct ClientStalled;

impl std::fmt::Display for ClientStalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the client took no response data within the send timeout")
    }
}

impl std::error::Error for ClientStalled {}

/// Whether a response body's error is a stalled client (and not a failing upstream).
pub fn is_client_stall(error: &BoxError) -> bool {
    error.downcast_ref::<ClientStalled>().is_some()
}

type Item = (Result<Frame<Bytes>, BoxError>, Option<OwnedSemaphorePermit>);

/// `body`, read ahead by a task of its own into at most `budget` bytes.
pub fn read_ahead(body: ProxyBody, budget: usize, send_timeout: Duration) -> ProxyBody {
    if body.is_end_stream() {
        return body;
    }
    let hint = body.size_hint();
    let (sender, receiver) = mpsc::unbounded_channel();
    let space = Arc::new(Semaphore::new(budget));
    tokio::spawn(pump(body, sender, space, budget, send_timeout));
    ReadAhead {
        receiver,
        hint,
        done: false,
    }
    .boxed()
}

/// Moves frames from the upstream body to the client's side while they fit in the budget. Ends when
/// the body does, when the client's side is dropped (the client went away), or when no room was made
/// for `send_timeout`; in each case the upstream body is dropped here, which returns its connection
/// to the pool if it ended and closes it otherwise.
async fn pump(
    mut body: ProxyBody,
    sender: mpsc::UnboundedSender<Item>,
    space: Arc<Semaphore>,
    budget: usize,
    send_timeout: Duration,
) {
    loop {
        let frame = tokio::select! {
            frame = body.frame() => frame,
            () = sender.closed() => return,
        };
        let Some(frame) = frame else {
            return;
        };
        let size = match &frame {
            Ok(frame) => frame.data_ref().map_or(0, Bytes::len),
            Err(_) => 0,
        };
        // A frame larger than the whole budget waits for all of it (the client has taken the rest).
        let wanted = u32::try_from(size.min(budget)).unwrap_or(u32::MAX);
        let permit = if wanted == 0 {
            None
        } else {
            let acquired = tokio::select! {
                acquired = tokio::time::timeout(send_timeout, space.clone().acquire_many_owned(wanted)) => acquired,
                () = sender.closed() => return,
            };
            match acquired {
                Ok(Ok(permit)) => Some(permit),
                // The semaphore is never closed; a timeout is the client's stall.
                Ok(Err(_)) | Err(_) => {
                    let _ = sender.send((Err(Box::new(ClientStalled)), None));
                    return;
                }
            }
        };
        let failed = frame.is_err();
        if sender.send((frame, permit)).is_err() || failed {
            return;
        }
    }
}

/// The client's side: frames as the pump read them; handing one to hyper gives its room back.
struct ReadAhead {
    receiver: mpsc::UnboundedReceiver<Item>,
    hint: SizeHint,
    done: bool,
}

impl Body for ReadAhead {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.receiver.poll_recv(cx) {
            Poll::Ready(Some((frame, _permit))) => Poll::Ready(Some(frame)),
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}
