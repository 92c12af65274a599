//! Audit events: one JSON object per security decision, shaped as OCSF 1.1 (Open Cybersecurity
//! Schema Framework) events so that a SIEM ingests them without custom parsing. `docs/audit-events.md`
//! documents every kind and its class.
//!
//! Events are built from typed fields only (addresses, the normalized path, the subject, reason
//! codes), never from headers, query strings or bodies, so a credential cannot reach the audit log by
//! construction. They travel through a bounded queue to a writer task: the request path never waits
//! on a sink; when the queue is full an event is dropped and counted, and the writer reports the
//! count as an event of its own once it can write again.

pub mod event;
pub mod log;
pub(crate) mod otlp;
mod syslog;

pub use event::{AuditEvent, EventKind, RequestFacts, WorkloadFacts, OCSF_VERSION};
pub use log::{AuditLog, AuditMetrics, AuditSink};
pub use otlp::OtlpTarget;
pub use syslog::SyslogTarget;
