//! Telemetry shared by every Palisade component: the Prometheus registry with bounded-cardinality
//! labels, and the non-blocking JSON access log.

pub mod access_log;
pub mod metrics;

pub use access_log::{AccessLog, AccessLogEntry};
pub use metrics::{AuthMetrics, DeprecatedMetrics, LimitMetrics, Metrics, RouteMetrics};
