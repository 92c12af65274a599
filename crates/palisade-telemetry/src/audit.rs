//! Audit events: one JSON object per security decision, shaped as OCSF 1.1 (Open Cybersecurity
//! Schema Framework) events so that a SIEM ingests them without custom parsing. `docs/audit-events.md`
//! documents every kind and its class.
//!
//! Events are built from typed fields only (addresses, the normalized path, the subject, reason
//! codes), never from headers, query strings or bodies, so a credential cannot reach the audit log by
//! construction. They travel through a bounded queue to a writer task: the request path never waits
//! on a sink; when the queue is full an event is dropped and counted, and the writer reports the
//! count as an event of its own once it can write again.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// The OCSF schema version the events follow.
pub const OCSF_VERSION: &str = "1.1.0";

/// What happened, in Palisade's terms; each kind maps to one OCSF class and activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    AuthenticationFailed,
    AuthenticationSucceeded,
    AuthorizationDenied,
    IpBlocked,
    RateLimited,
    ValidationFailed,
    /// Refused before routing as malformed or an attack (ambiguous framing, path tricks).
    RequestRejected,
    CorsRejected,
    TlsHandshakeRefused,
    ConfigReloaded,
    ConfigRejected,
    CertificateIssued,
    CertificateRefused,
    CertificateRenewed,
    CertificateExpiring,
    /// Events lost while the sink was behind (counted, reported when it caught up).
    AuditEventsDropped,
}

struct Class {
    class_uid: u32,
    class_name: &'static str,
    category_uid: u32,
    category_name: &'static str,
}

const AUTHENTICATION: Class = Class {
    class_uid: 3002,
    class_name: "Authentication",
    category_uid: 3,
    category_name: "Identity & Access Management",
};
const ENTITY_MANAGEMENT: Class = Class {
    class_uid: 3004,
    class_name: "Entity Management",
    category_uid: 3,
    category_name: "Identity & Access Management",
};
const NETWORK_ACTIVITY: Class = Class {
    class_uid: 4001,
    class_name: "Network Activity",
    category_uid: 4,
    category_name: "Network Activity",
};
const HTTP_ACTIVITY: Class = Class {
    class_uid: 4002,
    class_name: "HTTP Activity",
    category_uid: 4,
    category_name: "Network Activity",
};
const APPLICATION_LIFECYCLE: Class = Class {
    class_uid: 6002,
    class_name: "Application Lifecycle",
    category_uid: 6,
    category_name: "Application Activity",
};

impl EventKind {
    fn class(self) -> &'static Class {
        use EventKind::*;
        match self {
            AuthenticationFailed | AuthenticationSucceeded => &AUTHENTICATION,
            AuthorizationDenied | IpBlocked | RateLimited | ValidationFailed | RequestRejected | CorsRejected => {
                &HTTP_ACTIVITY
            }
            TlsHandshakeRefused => &NETWORK_ACTIVITY,
            ConfigReloaded | ConfigRejected | AuditEventsDropped => &APPLICATION_LIFECYCLE,
            CertificateIssued | CertificateRefused | CertificateRenewed | CertificateExpiring => &ENTITY_MANAGEMENT,
        }
    }

    /// OCSF severity: 1 informational, 2 low, 3 medium, 4 high.
    fn severity(self) -> (u8, &'static str) {
        use EventKind::*;
        match self {
            AuthenticationSucceeded | ConfigReloaded | CertificateIssued | CertificateRenewed => (1, "Informational"),
            AuthorizationDenied | IpBlocked | RateLimited | ValidationFailed | CorsRejected | TlsHandshakeRefused
            | CertificateRefused => (2, "Low"),
            AuthenticationFailed | RequestRejected | ConfigRejected | AuditEventsDropped => (3, "Medium"),
            CertificateExpiring => (4, "High"),
        }
    }

    fn succeeded(self) -> bool {
        use EventKind::*;
        matches!(
            self,
            AuthenticationSucceeded | ConfigReloaded | CertificateIssued | CertificateRenewed
        )
    }
}

/// The request an event is about.
#[derive(Debug, Clone, Default)]
pub struct RequestFacts {
    pub request_id: String,
    pub method: String,
    /// The normalized path (never the query string).
    pub path: String,
    pub host: String,
    pub client_ip: Option<IpAddr>,
    pub route: Option<String>,
    pub listener: Option<String>,
    pub status: Option<u16>,
}

/// One audit event, serialized as an OCSF object.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent {
    /// Milliseconds since the Unix epoch (OCSF `timestamp_t`).
    pub time: u64,
    pub class_uid: u32,
    pub class_name: &'static str,
    pub category_uid: u32,
    pub category_name: &'static str,
    pub activity_id: u32,
    pub activity_name: &'static str,
    pub type_uid: u64,
    pub severity_id: u8,
    pub severity: &'static str,
    /// 1 success, 2 failure.
    pub status_id: u8,
    pub status: &'static str,
    /// The reason code (the same codes as metrics and the access log).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_detail: Option<String>,
    /// HTTP Activity only: 2 denied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action_id: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<&'static str>,
    pub message: String,
    pub metadata: Metadata,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_endpoint: Option<Endpoint>,
    /// Authentication: who logged on (or tried to).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
    /// Other classes: who acted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_request: Option<HttpRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_response: Option<HttpResponse>,
    /// Entity Management: the certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity: Option<Entity>,
    /// Palisade's own fields, under OCSF's `unmapped`.
    pub unmapped: Unmapped,
}

#[derive(Debug, Clone, Serialize)]
pub struct Metadata {
    pub version: &'static str,
    pub product: Product,
    pub log_name: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Product {
    pub name: &'static str,
    pub vendor_name: &'static str,
    pub version: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    pub ip: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub uid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub type_name: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Actor {
    pub user: User,
}

#[derive(Debug, Clone, Serialize)]
pub struct HttpRequest {
    pub uid: String,
    pub http_method: String,
    pub url: Url,
}

#[derive(Debug, Clone, Serialize)]
pub struct Url {
    pub hostname: String,
    pub path: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct HttpResponse {
    pub code: u16,
}

#[derive(Debug, Clone, Serialize)]
pub struct Entity {
    pub name: String,
    pub r#type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Unmapped {
    /// The Palisade event kind: the stable name to filter on.
    pub event: EventKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listener: Option<String>,
    /// The rule or policy that decided, for authorization.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// How the principal authenticated (`jwt`, `api_key`, `mtls`…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_method: Option<String>,
    /// Free-form numbers (e.g. `dropped`, `expires_at`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

impl AuditEvent {
    /// An event of `kind` with the common fields filled in; `reason` is the reason code.
    pub fn new(kind: EventKind, reason: Option<&str>, message: impl Into<String>) -> Self {
        let class = kind.class();
        let (severity_id, severity) = kind.severity();
        let (activity_id, activity_name) = default_activity(kind);
        let succeeded = kind.succeeded();
        Self {
            time: now_ms(),
            class_uid: class.class_uid,
            class_name: class.class_name,
            category_uid: class.category_uid,
            category_name: class.category_name,
            activity_id,
            activity_name,
            type_uid: u64::from(class.class_uid) * 100 + u64::from(activity_id),
            severity_id,
            severity,
            status_id: if succeeded { 1 } else { 2 },
            status: if succeeded { "Success" } else { "Failure" },
            status_detail: reason.map(str::to_string),
            action_id: None,
            action: None,
            message: message.into(),
            metadata: Metadata {
                version: OCSF_VERSION,
                product: Product {
                    name: "Palisade",
                    vendor_name: "Palisade",
                    version: env!("CARGO_PKG_VERSION"),
                },
                log_name: "audit",
            },
            src_endpoint: None,
            user: None,
            actor: None,
            http_request: None,
            http_response: None,
            entity: None,
            unmapped: Unmapped {
                event: kind,
                route: None,
                listener: None,
                decided_by: None,
                auth_method: None,
                count: None,
                expires_at: None,
            },
        }
    }

    /// An event about one HTTP request: HTTP Activity (denied, activity by method) or
    /// Authentication, with the client, the request and the answer filled in.
    pub fn for_request(kind: EventKind, reason: &str, facts: RequestFacts) -> Self {
        let message = format!("{} {} refused: {reason}", facts.method, facts.path);
        let mut event = Self::new(kind, Some(reason), message);
        if kind.class().class_uid == HTTP_ACTIVITY.class_uid {
            let (id, name) = http_activity(&facts.method);
            event.set_activity(id, name);
            event.action_id = Some(2);
            event.action = Some("Denied");
        }
        if kind == EventKind::AuthenticationSucceeded {
            event.message = format!("{} {} authenticated", facts.method, facts.path);
        }
        event.src_endpoint = facts.client_ip.map(|ip| Endpoint { ip, port: None });
        event.http_request = Some(HttpRequest {
            uid: facts.request_id,
            http_method: facts.method,
            url: Url {
                hostname: facts.host,
                path: facts.path,
            },
        });
        event.http_response = facts.status.map(|code| HttpResponse { code });
        event.unmapped.route = facts.route;
        event.unmapped.listener = facts.listener;
        event
    }

    /// The subject the request was made as (Authentication: `user`; others: `actor.user`).
    pub fn with_subject(mut self, subject: &str, auth_method: Option<&str>) -> Self {
        let user = User {
            uid: subject.to_string(),
            type_name: None,
        };
        if self.class_uid == AUTHENTICATION.class_uid {
            self.user = Some(user);
        } else {
            self.actor = Some(Actor { user });
        }
        self.unmapped.auth_method = auth_method.map(str::to_string);
        self
    }

    pub fn with_source(mut self, ip: IpAddr, port: Option<u16>) -> Self {
        self.src_endpoint = Some(Endpoint { ip, port });
        self
    }

    pub fn with_certificate(mut self, spiffe_id: &str, serial: Option<&str>, expires_at: Option<u64>) -> Self {
        self.entity = Some(Entity {
            name: spiffe_id.to_string(),
            r#type: "X.509 certificate",
            uid: serial.map(str::to_string),
        });
        self.unmapped.expires_at = expires_at;
        self
    }

    fn set_activity(&mut self, id: u32, name: &'static str) {
        self.activity_id = id;
        self.activity_name = name;
        self.type_uid = u64::from(self.class_uid) * 100 + u64::from(id);
    }
}

fn default_activity(kind: EventKind) -> (u32, &'static str) {
    use EventKind::*;
    match kind {
        AuthenticationFailed | AuthenticationSucceeded => (1, "Logon"),
        TlsHandshakeRefused => (5, "Refuse"),
        ConfigReloaded | ConfigRejected => (8, "Update"),
        AuditEventsDropped => (99, "Other"),
        CertificateIssued | CertificateRenewed => (1, "Create"),
        CertificateRefused | CertificateExpiring => (99, "Other"),
        AuthorizationDenied | IpBlocked | RateLimited | ValidationFailed | RequestRejected | CorsRejected => {
            (99, "Other")
        }
    }
}

/// OCSF HTTP Activity activities by method.
fn http_activity(method: &str) -> (u32, &'static str) {
    match method {
        "CONNECT" => (1, "Connect"),
        "DELETE" => (2, "Delete"),
        "GET" => (3, "Get"),
        "HEAD" => (4, "Head"),
        "OPTIONS" => (5, "Options"),
        "POST" => (6, "Post"),
        "PUT" => (7, "Put"),
        "TRACE" => (8, "Trace"),
        _ => (99, "Other"),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

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
}

/// The counters a sink reports to.
#[derive(Clone, Default)]
pub struct AuditMetrics {
    pub written: Counter,
    pub dropped: Counter,
    pub queue_depth: Gauge,
}

/// A handle to the audit log; cloning shares the queue.
#[derive(Clone)]
pub struct AuditLog {
    queue: mpsc::Sender<AuditEvent>,
    /// Drops not yet reported as an event.
    unreported_drops: Arc<AtomicU64>,
    metrics: AuditMetrics,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "AuditLog(queued {})",
            self.queue.max_capacity() - self.queue.capacity()
        )
    }
}

impl AuditLog {
    /// Starts the writer (needs a Tokio runtime). Opening the file may fail.
    pub async fn start(sink: AuditSink, buffer: usize, metrics: AuditMetrics) -> std::io::Result<Self> {
        let (queue, events) = mpsc::channel(buffer.max(1));
        let unreported_drops = Arc::new(AtomicU64::new(0));
        let writer = Writer::open(sink).await?;
        tokio::spawn(writer.run(events, unreported_drops.clone(), metrics.clone()));
        Ok(Self {
            queue,
            unreported_drops,
            metrics,
        })
    }

    /// Queues one event without waiting; a full queue drops it and counts the drop.
    pub fn record(&self, event: AuditEvent) {
        if self.queue.try_send(event).is_err() {
            self.metrics.dropped.inc();
            self.unreported_drops.fetch_add(1, Ordering::Relaxed);
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
        };
        Ok(Writer { output })
    }

    async fn run(
        mut self,
        mut events: mpsc::Receiver<AuditEvent>,
        unreported_drops: Arc<AtomicU64>,
        metrics: AuditMetrics,
    ) {
        let mut batch = Vec::with_capacity(256);
        let mut lines = Vec::with_capacity(256);
        while events.recv_many(&mut batch, 256).await > 0 {
            metrics.queue_depth.set(i64::try_from(events.len()).unwrap_or(i64::MAX));
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
                if let Ok(mut line) = serde_json::to_vec(&event) {
                    line.push(b'\n');
                    lines.push(line);
                }
            }
            if self.write(&lines).await.is_ok() {
                metrics.written.inc_by(count);
            } else {
                // The sink is gone (closed pipe, full disk): count the loss; keep draining so that
                // senders never block.
                metrics.dropped.inc_by(count);
            }
        }
    }

    /// Writes whole lines; a file is rotated before the line that would take it past its limit.
    async fn write(&mut self, lines: &[Vec<u8>]) -> std::io::Result<()> {
        match &mut self.output {
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

    fn request() -> RequestFacts {
        RequestFacts {
            request_id: "r-1".into(),
            method: "GET".into(),
            path: "/admin".into(),
            host: "api.example.com".into(),
            client_ip: Some("192.0.2.7".parse().unwrap()),
            route: Some("admin".into()),
            listener: Some("public".into()),
            status: Some(403),
        }
    }

    #[test]
    fn a_denied_request_is_an_ocsf_http_activity() {
        let event = AuditEvent::for_request(EventKind::AuthorizationDenied, "forbidden", request())
            .with_subject("alice", Some("jwt"));
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["class_uid"], 4002);
        assert_eq!(json["category_uid"], 4);
        assert_eq!(json["activity_id"], 3, "GET");
        assert_eq!(json["type_uid"], 400203);
        assert_eq!(json["action_id"], 2);
        assert_eq!(json["status_id"], 2);
        assert_eq!(json["status_detail"], "forbidden");
        assert_eq!(json["actor"]["user"]["uid"], "alice");
        assert_eq!(json["src_endpoint"]["ip"], "192.0.2.7");
        assert_eq!(json["http_request"]["url"]["path"], "/admin");
        assert_eq!(json["http_response"]["code"], 403);
        assert_eq!(json["metadata"]["version"], OCSF_VERSION);
        assert_eq!(json["unmapped"]["event"], "authorization_denied");
    }

    #[test]
    fn an_authentication_failure_is_an_ocsf_logon_failure() {
        let event = AuditEvent::for_request(EventKind::AuthenticationFailed, "token_expired", request());
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            (json["class_uid"].as_u64(), json["activity_id"].as_u64()),
            (Some(3002), Some(1))
        );
        assert_eq!(json["type_uid"], 300201);
        assert_eq!(json["status"], "Failure");
        assert!(json.get("action_id").is_none());
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
        let log = AuditLog::start(sink, 4, metrics.clone()).await.unwrap();
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
        let log = AuditLog::start(sink, 1024, metrics.clone()).await.unwrap();
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
