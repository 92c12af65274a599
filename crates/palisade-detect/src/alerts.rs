//! Alerts with deduplication and hysteresis: a condition opens an alert once (not once per request or
//! per second); the alert closes only after the condition has stayed clear for a while, so a value
//! hovering around its threshold does not flap.

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub id: u64,
    /// Which detector: `rate_spike`, `auth_failures`, `scanning`, `probing`, `upstream_errors`.
    pub detector: &'static str,
    /// What it is about: a route, a client address, a cluster.
    pub subject: String,
    pub severity: Severity,
    pub message: String,
    /// Seconds since the Unix epoch.
    pub opened_at: u64,
    pub closed_at: Option<u64>,
    /// The value that opened it, and the worst seen while open.
    pub value: f64,
    pub peak: f64,
}

/// What a tick changed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum AlertChange {
    Opened(Alert),
    Closed(Alert),
}

/// A condition's verdict for one subject at one tick.
pub struct Finding {
    pub detector: &'static str,
    pub subject: String,
    pub firing: bool,
    pub severity: Severity,
    pub value: f64,
    /// `value` over the detector's threshold (for the anomaly score metric).
    pub score: f64,
    pub message: String,
}

impl Finding {
    /// The condition does not hold (e.g. its subject was forgotten): an open alert counts a clear tick.
    pub fn clear(detector: &'static str, subject: String) -> Finding {
        Finding {
            detector,
            subject,
            firing: false,
            severity: Severity::Low,
            value: 0.0,
            score: 0.0,
            message: String::new(),
        }
    }
}

struct Tracked {
    alert: Alert,
    clear_for: u32,
}

/// Open alerts by (detector, subject), and the most recently closed ones.
pub struct AlertBook {
    open: BTreeMap<(&'static str, String), Tracked>,
    closed: Vec<Alert>,
    next_id: u64,
    /// Ticks a condition must stay clear before its alert closes.
    clear_ticks: u32,
    keep_closed: usize,
}

impl AlertBook {
    pub fn new(clear_ticks: u32, keep_closed: usize) -> Self {
        Self {
            open: BTreeMap::new(),
            closed: Vec::new(),
            next_id: 1,
            clear_ticks,
            keep_closed,
        }
    }

    /// Applies one finding; returns a change when an alert opened or closed.
    pub fn apply(&mut self, now: u64, finding: Finding) -> Option<AlertChange> {
        let key = (finding.detector, finding.subject.clone());
        match (self.open.get_mut(&key), finding.firing) {
            (Some(tracked), true) => {
                tracked.clear_for = 0;
                tracked.alert.peak = tracked.alert.peak.max(finding.value);
                None
            }
            (Some(tracked), false) => {
                tracked.clear_for += 1;
                if tracked.clear_for < self.clear_ticks {
                    return None;
                }
                let mut alert = self.open.remove(&key)?.alert;
                alert.closed_at = Some(now);
                self.closed.push(alert.clone());
                if self.closed.len() > self.keep_closed {
                    self.closed.remove(0);
                }
                Some(AlertChange::Closed(alert))
            }
            (None, true) => {
                let alert = Alert {
                    id: self.next_id,
                    detector: finding.detector,
                    subject: finding.subject,
                    severity: finding.severity,
                    message: finding.message,
                    opened_at: now,
                    closed_at: None,
                    value: finding.value,
                    peak: finding.value,
                };
                self.next_id += 1;
                self.open.insert(
                    key,
                    Tracked {
                        alert: alert.clone(),
                        clear_for: 0,
                    },
                );
                Some(AlertChange::Opened(alert))
            }
            (None, false) => None,
        }
    }

    pub fn set_clear_ticks(&mut self, clear_ticks: u32) {
        self.clear_ticks = clear_ticks;
    }

    /// The subjects with an open alert of `detector`.
    pub fn open_subjects(&self, detector: &'static str) -> Vec<String> {
        self.open
            .keys()
            .filter(|(d, _)| *d == detector)
            .map(|(_, s)| s.clone())
            .collect()
    }

    pub fn is_open(&self, detector: &'static str, subject: &str) -> bool {
        self.open.contains_key(&(detector, subject.to_string()))
    }

    pub fn open_alerts(&self) -> Vec<Alert> {
        self.open.values().map(|t| t.alert.clone()).collect()
    }

    pub fn closed_alerts(&self) -> &[Alert] {
        &self.closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(firing: bool, value: f64) -> Finding {
        Finding {
            detector: "auth_failures",
            subject: "192.0.2.1".into(),
            firing,
            severity: Severity::High,
            value,
            score: 1.0,
            message: "m".into(),
        }
    }

    #[test]
    fn an_alert_opens_once_and_closes_after_staying_clear() {
        let mut book = AlertBook::new(3, 10);
        assert!(matches!(
            book.apply(1, finding(true, 20.0)),
            Some(AlertChange::Opened(_))
        ));
        assert_eq!(book.apply(2, finding(true, 30.0)), None, "no duplicate");
        assert_eq!(book.apply(3, finding(false, 0.0)), None);
        assert_eq!(
            book.apply(4, finding(true, 25.0)),
            None,
            "flapping resets the clear count"
        );
        assert_eq!(book.apply(5, finding(false, 0.0)), None);
        assert_eq!(book.apply(6, finding(false, 0.0)), None);
        match book.apply(7, finding(false, 0.0)) {
            Some(AlertChange::Closed(alert)) => {
                assert_eq!((alert.opened_at, alert.closed_at, alert.peak), (1, Some(7), 30.0));
            }
            other => panic!("{other:?}"),
        }
        assert!(book.open_alerts().is_empty());
        assert_eq!(book.closed_alerts().len(), 1);
    }
}
