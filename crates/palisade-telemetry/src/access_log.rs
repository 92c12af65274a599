//! The access log: one JSON line per request. Entries go through a bounded queue to a writer task, so
//! a slow disk or a blocked stdout never holds up a request; when the queue is full the entry is
//! dropped and counted in `palisade_access_log_dropped_total`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::SystemTime;

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::queued::{self, Queued};

/// One finished request. Paths are the normalized ones that were routed; query strings are left out
/// because they often carry tokens.
#[derive(Debug, Clone, Serialize)]
pub struct AccessLogEntry {
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
    pub request_id: String,
    pub client_ip: Option<IpAddr>,
    pub method: String,
    pub path: String,
    pub route: Option<String>,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_ms: f64,
    pub upstream: Option<String>,
    pub upstream_ms: Option<f64>,
    /// The authenticated subject and how it authenticated (`jwt`, `api_key`…); never the credential.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_method: Option<&'static str>,
    /// The authorization rule that allowed or denied the request (`default-deny` when none allowed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// Why the gateway answered itself, e.g. `no_route`, `upstream_timeout`; absent when proxied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// With `reason`: the stage that decided and whose fault it is (`client`, `upstream`, `gateway`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<palisade_core::decision::Stage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<palisade_core::decision::Fault>,
}

fn rfc3339<S: serde::Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_rfc3339_millis(*time))
}

/// Where lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Stdout,
    File(PathBuf),
}

impl Destination {
    pub fn parse(text: &str) -> Self {
        if text == "stdout" || text == "-" {
            Destination::Stdout
        } else {
            Destination::File(PathBuf::from(text))
        }
    }
}

/// A handle to the access log; cloning shares the queue. The writer task ends once every handle is gone.
#[derive(Clone)]
pub struct AccessLog {
    /// Entries are boxed: an entry is large and a flush request small, and the queue's slots take the
    /// larger size.
    queue: mpsc::Sender<Queued<Box<AccessLogEntry>>>,
    dropped: Counter,
}

impl AccessLog {
    /// Starts the writer task (needs a Tokio runtime). Opening a file may fail; stdout cannot.
    pub async fn start(destination: Destination, buffer: usize, dropped: Counter) -> std::io::Result<Self> {
        let (queue, entries) = mpsc::channel(buffer.max(1));
        match destination {
            Destination::Stdout => {
                tokio::spawn(write_lines(tokio::io::stdout(), entries));
            }
            Destination::File(path) => {
                let file = tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .await?;
                tokio::spawn(write_lines(file, entries));
            }
        }
        Ok(Self { queue, dropped })
    }

    /// Queues one entry without waiting.
    pub fn log(&self, entry: AccessLogEntry) {
        if self.queue.try_send(Queued::Item(Box::new(entry))).is_err() {
            self.dropped.inc();
        }
    }

    /// Waits until every entry queued before this call has been written (graceful shutdown: the
    /// process must not exit with lines still in the queue). May wait for room in a full queue.
    pub async fn flush(&self) {
        if let Some(written) = queued::request_flush(&self.queue).await {
            let _ = written.await;
        }
    }
}

async fn write_lines<W: AsyncWrite + Unpin>(mut out: W, mut queue: mpsc::Receiver<Queued<Box<AccessLogEntry>>>) {
    let mut received = Vec::with_capacity(256);
    let mut entries = Vec::with_capacity(256);
    let mut bytes = Vec::with_capacity(64 * 1024);
    let mut flushes = Vec::new();
    while queue.recv_many(&mut received, 256).await > 0 {
        queued::sort_received(&mut received, &mut entries, &mut flushes);
        bytes.clear();
        for entry in entries.drain(..) {
            if serde_json::to_writer(&mut bytes, &entry).is_ok() {
                bytes.push(b'\n');
            }
        }
        // A destination that is gone (closed pipe, full disk) is not retried: the queue keeps draining
        // so that senders never block.
        if !bytes.is_empty() && out.write_all(&bytes).await.is_ok() {
            let _ = out.flush().await;
        }
        queued::answer(&mut flushes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u64) -> AccessLogEntry {
        AccessLogEntry {
            time: SystemTime::now(),
            request_id: format!("id-{n}"),
            client_ip: None,
            method: "GET".into(),
            path: "/".into(),
            route: None,
            status: 200,
            bytes_in: 0,
            bytes_out: n,
            duration_ms: 0.1,
            upstream: None,
            upstream_ms: None,
            principal: None,
            auth_method: None,
            decided_by: None,
            reason: None,
            stage: None,
            fault: None,
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn flush_returns_once_every_queued_line_is_written() {
        let dir = tempfile_dir("flush");
        let path = dir.join("access.log");
        let log = AccessLog::start(Destination::File(path.clone()), 64, Counter::default())
            .await
            .unwrap();
        for n in 0..10 {
            log.log(entry(n));
        }
        // Nothing has been written yet: this single-threaded test has not yielded to the writer.
        log.flush().await;
        let written = std::fs::read_to_string(&path).unwrap();
        assert_eq!(written.lines().count(), 10, "{written}");
        assert!(written.contains("\"request_id\":\"id-9\""));
    }

    fn tempfile_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("palisade-access-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let dir = std::env::temp_dir().join(format!("palisade-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dropped = Counter::default();
        let log = AccessLog::start(Destination::File(dir.join("access.log")), 4, dropped.clone())
            .await
            .unwrap();
        // The writer task cannot run while this single-threaded test never yields, so the queue fills.
        let started = std::time::Instant::now();
        for n in 0..1000 {
            log.log(entry(n));
        }
        assert!(
            started.elapsed() < std::time::Duration::from_millis(500),
            "logging never waits"
        );
        assert_eq!(
            dropped.get(),
            996,
            "everything past the 4 queued lines is dropped and counted"
        );
        tokio::task::yield_now().await;
        drop(log);
    }
}
