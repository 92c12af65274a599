//! Getting events to their sinks: a bounded queue per sink and a writer task each, so a slow or
//! broken sink delays nothing and loses only what it must, counted.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::event::{AuditEvent, EventKind};
use super::otlp::{Otlp, OtlpTarget};
use super::syslog::{Syslog, SyslogTarget};
use crate::queued::{self, Queued};

/// Where events are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSink {
    Stdout,
    /// JSON lines appended to a file, rotated by size: `PATH.1` is the newest rotated file.
    File {
        path: PathBuf,
        max_bytes: u64,
        keep: usize,
    },
    /// RFC 5424 over TCP or TLS to a collector.
    Syslog(SyslogTarget),
    /// OpenTelemetry logs over OTLP/HTTP (JSON).
    Otlp(OtlpTarget),
}

/// The counters a sink reports to.
#[derive(Clone, Default)]
pub struct AuditMetrics {
    pub written: Counter,
    pub dropped: Counter,
    pub queue_depth: Gauge,
}

/// A handle to the audit log; cloning shares the queues. Each sink has its own queue and writer, so
/// a slow collector delays neither the requests nor the other sinks.
#[derive(Clone)]
pub struct AuditLog {
    sinks: Arc<[SinkQueue]>,
    metrics: AuditMetrics,
    /// The latest events, newest last, for the web console.
    recent: Arc<std::sync::Mutex<std::collections::VecDeque<AuditEvent>>>,
}

/// How many of the latest events the console can show.
pub const RECENT_EVENTS: usize = 500;

struct SinkQueue {
    /// Events stay unboxed, as they were before flush requests shared the queue: boxing would cost an
    /// allocation per event for a request sent once per shutdown.
    queue: mpsc::Sender<Queued<AuditEvent>>,
    /// Drops not yet reported as an event.
    unreported_drops: Arc<AtomicU64>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditLog({} sinks)", self.sinks.len())
    }
}

impl AuditLog {
    /// Starts one writer per sink (needs a Tokio runtime). Opening a file or preparing TLS may fail.
    pub async fn start(sinks: Vec<AuditSink>, buffer: usize, metrics: AuditMetrics) -> std::io::Result<Self> {
        let mut queues = Vec::with_capacity(sinks.len());
        for sink in sinks {
            let (queue, events) = mpsc::channel(buffer.max(1));
            let unreported_drops = Arc::new(AtomicU64::new(0));
            let writer = Writer::open(sink).await?;
            tokio::spawn(writer.run(events, unreported_drops.clone(), metrics.clone()));
            queues.push(SinkQueue {
                queue,
                unreported_drops,
            });
        }
        Ok(Self {
            sinks: queues.into(),
            metrics,
            recent: Arc::default(),
        })
    }

    /// Queues the event for every sink without waiting; a full queue drops it there and counts it.
    pub fn record(&self, event: AuditEvent) {
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() == RECENT_EVENTS {
                recent.pop_front();
            }
            recent.push_back(event.clone());
        }
        let Some((last, others)) = self.sinks.split_last() else {
            return;
        };
        for sink in others {
            self.offer(sink, event.clone());
        }
        self.offer(last, event);
    }

    /// The latest events (at most [`RECENT_EVENTS`]), oldest first.
    pub fn recent(&self) -> Vec<AuditEvent> {
        self.recent
            .lock()
            .map(|recent| recent.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Returns once every event queued before the call is written (or its sink failed). A full queue
    /// is waited on, so callers bound the wait (shutdown gives it two seconds).
    pub async fn flush(&self) {
        let mut written = Vec::with_capacity(self.sinks.len());
        for sink in self.sinks.iter() {
            written.extend(queued::request_flush(&sink.queue).await);
        }
        for answer in written {
            let _ = answer.await;
        }
    }

    fn offer(&self, sink: &SinkQueue, event: AuditEvent) {
        if sink.queue.try_send(Queued::Item(event)).is_err() {
            self.metrics.dropped.inc();
            sink.unreported_drops.fetch_add(1, Ordering::Relaxed);
        }
    }
}

enum Output {
    Stdout(tokio::io::Stdout),
    File {
        file: tokio::fs::File,
        path: PathBuf,
        size: u64,
        max_bytes: u64,
        keep: usize,
    },
    Syslog(Box<Syslog>),
    Otlp(Box<Otlp>),
}

struct Writer {
    output: Output,
}

impl Writer {
    async fn open(sink: AuditSink) -> std::io::Result<Writer> {
        let output = match sink {
            AuditSink::Stdout => Output::Stdout(tokio::io::stdout()),
            AuditSink::File { path, max_bytes, keep } => {
                let file = open_append(&path).await?;
                let size = file.metadata().await.map(|m| m.len()).unwrap_or(0);
                Output::File {
                    file,
                    path,
                    size,
                    max_bytes,
                    keep,
                }
            }
            AuditSink::Syslog(target) => Output::Syslog(Box::new(Syslog::new(target)?)),
            AuditSink::Otlp(target) => Output::Otlp(Box::new(Otlp::new(target)?)),
        };
        Ok(Writer { output })
    }

    async fn run(
        mut self,
        mut queue: mpsc::Receiver<Queued<AuditEvent>>,
        unreported_drops: Arc<AtomicU64>,
        metrics: AuditMetrics,
    ) {
        let mut received = Vec::with_capacity(256);
        let mut batch = Vec::with_capacity(256);
        let mut flushes = Vec::new();
        let mut lines = Vec::with_capacity(256);
        while queue.recv_many(&mut received, 256).await > 0 {
            queued::sort_received(&mut received, &mut batch, &mut flushes);
            metrics.queue_depth.set(i64::try_from(queue.len()).unwrap_or(i64::MAX));
            let dropped = unreported_drops.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                let mut report = AuditEvent::new(
                    EventKind::AuditEventsDropped,
                    Some("queue_full"),
                    format!("{dropped} audit events were dropped while the sink was behind"),
                );
                report.unmapped.count = Some(dropped);
                batch.push(report);
            }
            lines.clear();
            let count = batch.len() as u64;
            for event in batch.drain(..) {
                if let Some(line) = self.encode(&event) {
                    lines.push(line);
                }
            }
            // A batch of flush requests alone has nothing to write.
            if !lines.is_empty() {
                if self.write(&lines).await.is_ok() {
                    metrics.written.inc_by(count);
                } else {
                    // The sink is gone (closed pipe, full disk, collector down): count the loss,
                    // report it once the sink works again, and keep draining so that senders never
                    // block.
                    metrics.dropped.inc_by(count);
                    unreported_drops.fetch_add(count, Ordering::Relaxed);
                }
            }
            // Everything queued before these requests has been written (or counted as lost).
            queued::answer(&mut flushes);
        }
    }

    /// One event as the sink wants it: a JSON line, or a framed syslog message.
    fn encode(&self, event: &AuditEvent) -> Option<Vec<u8>> {
        let json = serde_json::to_vec(event).ok()?;
        match &self.output {
            Output::Syslog(syslog) => {
                let mut framed = Vec::with_capacity(json.len() + 96);
                syslog.frame(event, &json, &mut framed);
                Some(framed)
            }
            Output::Otlp(_) => serde_json::to_vec(&Otlp::record(event, &json)).ok(),
            _ => {
                let mut line = json;
                line.push(b'\n');
                Some(line)
            }
        }
    }

    /// Writes whole lines; a file is rotated before the line that would take it past its limit.
    async fn write(&mut self, lines: &[Vec<u8>]) -> std::io::Result<()> {
        match &mut self.output {
            Output::Syslog(syslog) => syslog.write(&lines.concat()).await,
            Output::Otlp(otlp) => otlp.send(lines).await,
            Output::Stdout(out) => {
                out.write_all(&lines.concat()).await?;
                out.flush().await
            }
            Output::File {
                file,
                path,
                size,
                max_bytes,
                keep,
            } => {
                let mut chunk = Vec::new();
                for line in lines {
                    if *size > 0 && *size + line.len() as u64 > *max_bytes {
                        file.write_all(&chunk).await?;
                        file.flush().await?;
                        chunk.clear();
                        rotate(path, *keep).await?;
                        *file = open_append(path).await?;
                        *size = 0;
                    }
                    chunk.extend_from_slice(line);
                    *size += line.len() as u64;
                }
                file.write_all(&chunk).await?;
                file.flush().await
            }
        }
    }
}

async fn open_append(path: &Path) -> std::io::Result<tokio::fs::File> {
    let mut options = tokio::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(path).await
}

/// `PATH` → `PATH.1` → … → `PATH.keep` (the oldest falls off).
async fn rotate(path: &Path, keep: usize) -> std::io::Result<()> {
    let numbered = |n: usize| {
        let mut name = path.as_os_str().to_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    };
    if keep == 0 {
        return tokio::fs::remove_file(path).await;
    }
    let _ = tokio::fs::remove_file(numbered(keep)).await;
    for n in (1..keep).rev() {
        let _ = tokio::fs::rename(numbered(n), numbered(n + 1)).await;
    }
    tokio::fs::rename(path, numbered(1)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::event::{EventKind, RequestFacts};

    fn request() -> RequestFacts {
        crate::audit::event::sample_request()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_queue_drops_counts_and_reports_once_the_sink_catches_up() {
        let dir = std::env::temp_dir().join(format!("palisade-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.log");
        let _ = std::fs::remove_file(&path);
        let metrics = AuditMetrics::default();
        let sink = AuditSink::File {
            path: path.clone(),
            max_bytes: 1 << 20,
            keep: 2,
        };
        let log = AuditLog::start(vec![sink], 4, metrics.clone()).await.unwrap();
        // The writer cannot run while this single-threaded test does not yield: the queue fills.
        for _ in 0..10 {
            log.record(AuditEvent::for_request(
                EventKind::RateLimited,
                "rate_limited",
                request(),
            ));
        }
        assert_eq!(metrics.dropped.get(), 6);
        for _ in 0..50 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            if metrics.written.get() >= 5 {
                break;
            }
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let report = text
            .lines()
            .find(|l| l.contains("audit_events_dropped"))
            .expect("a drop report");
        let report: serde_json::Value = serde_json::from_str(report).unwrap();
        assert_eq!(report["unmapped"]["count"], 6);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn flush_returns_once_every_queued_event_is_written_to_every_sink() {
        let dir = std::env::temp_dir().join(format!("palisade-audit-flush-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sink = |name: &str| AuditSink::File {
            path: dir.join(name),
            max_bytes: 1 << 20,
            keep: 1,
        };
        let metrics = AuditMetrics::default();
        let log = AuditLog::start(vec![sink("a.log"), sink("b.log")], 64, metrics.clone())
            .await
            .unwrap();
        for _ in 0..10 {
            log.record(AuditEvent::for_request(EventKind::IpBlocked, "ip_denied", request()));
        }
        // Nothing has been written yet: this single-threaded test has not yielded to the writers.
        log.flush().await;
        for name in ["a.log", "b.log"] {
            let written = std::fs::read_to_string(dir.join(name)).unwrap();
            assert_eq!(written.lines().count(), 10, "{name}: {written}");
        }
        assert_eq!(metrics.written.get(), 20);
        // A flush with nothing queued returns too.
        log.flush().await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn files_rotate_by_size_keeping_the_newest() {
        let dir = std::env::temp_dir().join(format!("palisade-audit-rotate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.log");
        let metrics = AuditMetrics::default();
        let sink = AuditSink::File {
            path: path.clone(),
            max_bytes: 2000,
            keep: 2,
        };
        let log = AuditLog::start(vec![sink], 1024, metrics.clone()).await.unwrap();
        for n in 0..40 {
            log.record(AuditEvent::for_request(EventKind::IpBlocked, "ip_denied", request()));
            if n % 4 == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
        for _ in 0..50 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            if metrics.written.get() >= 40 {
                break;
            }
        }
        assert!(dir.join("audit.log.1").exists() && dir.join("audit.log.2").exists());
        assert!(!dir.join("audit.log.3").exists(), "only `keep` rotated files");
        for file in ["audit.log", "audit.log.1"] {
            let size = std::fs::metadata(dir.join(file)).unwrap().len();
            assert!(size <= 2000, "{file} is {size} bytes");
        }
    }
}
