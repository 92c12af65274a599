//! Telemetry shared by every Palisade component: the Prometheus registry with bounded-cardinality
//! labels, and the non-blocking JSON access log.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod audit;
pub mod metrics;
mod queued;
pub mod tally;
pub mod webhook;

pub use access_log::{AccessLog, AccessLogEntry};
pub use audit::{AuditEvent, AuditLog, EventKind, RequestFacts, WorkloadFacts};
pub use metrics::{AuthMetrics, DeprecatedMetrics, LimitMetrics, Metrics, RouteMetrics};

/// How long a process that is stopping waits for its queued access-log lines and audit events to
/// be written (a stuck sink must not hold the exit for ever).
pub const FLUSH_AT_EXIT: std::time::Duration = std::time::Duration::from_secs(2);
