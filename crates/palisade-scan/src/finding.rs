//! What a scan reports: one finding per rule broken (or advisory matched) at one place.

use std::fmt;

use serde::Serialize;

/// Ordered from least to most severe, so `--fail-on high` is `severity >= High`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "info" | "none" => Some(Self::Info),
            "low" => Some(Self::Low),
            "medium" | "moderate" => Some(Self::Medium),
            "high" => Some(Self::High),
            "critical" => Some(Self::Critical),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }

    /// CVSS v3 qualitative rating of a base score.
    pub fn from_cvss_score(score: f64) -> Self {
        match score {
            s if s >= 9.0 => Self::Critical,
            s if s >= 7.0 => Self::High,
            s if s >= 4.0 => Self::Medium,
            s if s > 0.0 => Self::Low,
            _ => Self::Info,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A known-vulnerable package: what is installed and what fixes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vulnerability {
    pub ecosystem: String,
    pub package: String,
    pub installed: String,
    /// The lowest fixed version above the installed one; absent when no fix is published.
    pub fixed: Option<String>,
    pub aliases: Vec<String>,
    pub summary: String,
}

/// Where in an image a finding came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Layer {
    /// 0-based position in the image's layer list.
    pub index: usize,
    pub digest: String,
    /// The file was removed (whiteout) or replaced by this later layer: it is gone from the running
    /// container, yet anyone with the image can still read it from the layer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed_in: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// A rule id from the rule table (`K8S001`), or an advisory id for vulnerable packages.
    pub rule: String,
    pub severity: Severity,
    pub title: String,
    /// Path relative to the scanned root (an image member as `image.tar!/etc/app.conf`).
    pub path: String,
    /// 1-based; 0 when the finding is about the whole file.
    pub line: usize,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vulnerability: Option<Vulnerability>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<Layer>,
}

impl Finding {
    /// A finding of a rule in the table, with its severity and title.
    pub fn of(rule: &crate::rules::Rule, path: &str, line: usize, message: impl Into<String>) -> Self {
        Self {
            rule: rule.id.to_string(),
            severity: rule.severity,
            title: rule.title.to_string(),
            path: path.to_string(),
            line,
            message: message.into(),
            vulnerability: None,
            layer: None,
        }
    }
}
