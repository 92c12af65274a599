//! What the access log's and the audit sinks' queues carry: items for the writer, and flush requests
//! that the writer answers once everything queued before them is written (graceful shutdown, so the
//! process does not exit with lines or events still queued).

use tokio::sync::{mpsc, oneshot};

pub(crate) enum Queued<T> {
    Item(T),
    Flush(oneshot::Sender<()>),
}

/// Puts a flush request at the end of `queue`: the answer comes once the writer has written everything
/// before it (or failed to), and `None` when the writer is gone. Waits for room in a full queue, so
/// callers bound the wait.
pub(crate) async fn request_flush<T>(queue: &mpsc::Sender<Queued<T>>) -> Option<oneshot::Receiver<()>> {
    let (done, answer) = oneshot::channel();
    queue.send(Queued::Flush(done)).await.ok()?;
    Some(answer)
}

/// Moves the received items into `items` and the flush requests into `flushes`, in order.
pub(crate) fn sort_received<T>(
    received: &mut Vec<Queued<T>>,
    items: &mut Vec<T>,
    flushes: &mut Vec<oneshot::Sender<()>>,
) {
    for queued in received.drain(..) {
        match queued {
            Queued::Item(item) => items.push(item),
            Queued::Flush(done) => flushes.push(done),
        }
    }
}

/// Answers the flush requests of a batch that has been written (or counted as lost).
pub(crate) fn answer(flushes: &mut Vec<oneshot::Sender<()>>) {
    for done in flushes.drain(..) {
        let _ = done.send(());
    }
}
