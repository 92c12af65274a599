//! OSV advisories (https://ossf.github.io/osv-schema/): the parts a package match needs, and the
//! range evaluation the schema specifies.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use super::version::Scheme;
use crate::finding::Severity;

/// One OSV record as published (only the fields used).
#[derive(Debug, Clone, Deserialize)]
pub struct Record {
    pub id: String,
    #[serde(default)]
    pub modified: String,
    #[serde(default)]
    pub withdrawn: Option<String>,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub summary: Option<String>,
    #[serde(default)]
    pub details: Option<String>,
    #[serde(default)]
    pub severity: Vec<SeverityScore>,
    #[serde(default)]
    pub affected: Vec<Affected>,
    #[serde(default)]
    pub database_specific: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SeverityScore {
    #[serde(rename = "type")]
    pub kind: String,
    pub score: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Affected {
    #[serde(default)]
    pub package: Option<PackageId>,
    #[serde(default)]
    pub ranges: Vec<Range>,
    #[serde(default)]
    pub versions: Vec<String>,
    #[serde(default)]
    pub ecosystem_specific: Option<serde_json::Value>,
    #[serde(default)]
    pub database_specific: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PackageId {
    pub ecosystem: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub introduced: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_affected: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
}

/// What the local database keeps of one (advisory, package) pair: one JSON line. `package` is
/// first so that a reader can skip lines of other packages cheaply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub package: String,
    pub ecosystem: String,
    pub id: String,
    #[serde(default)]
    pub modified: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub summary: String,
    pub severity: Option<Severity>,
    #[serde(default)]
    pub ranges: Vec<Range>,
    #[serde(default)]
    pub versions: Vec<String>,
}

impl Record {
    /// One entry per affected package this scanner can match (withdrawn records give none).
    pub fn entries(&self) -> Vec<Entry> {
        if self.withdrawn.is_some() {
            return Vec::new();
        }
        let summary = self
            .summary
            .clone()
            .or_else(|| {
                self.details
                    .as_ref()
                    .map(|d| d.lines().next().unwrap_or_default().chars().take(160).collect())
            })
            .unwrap_or_default();
        self.affected
            .iter()
            .filter_map(|affected| {
                let package = affected.package.as_ref()?;
                Scheme::of(&package.ecosystem)?;
                Some(Entry {
                    package: normalize_name(&package.ecosystem, &package.name),
                    ecosystem: package.ecosystem.clone(),
                    id: self.id.clone(),
                    modified: self.modified.clone(),
                    aliases: self.aliases.clone(),
                    summary: summary.clone(),
                    severity: self.severity_for(affected),
                    ranges: affected.ranges.iter().filter(|r| r.kind != "GIT").cloned().collect(),
                    versions: affected.versions.clone(),
                })
            })
            .collect()
    }

    /// The record's own rating (GitHub's `database_specific.severity`, or the affected entry's),
    /// else the CVSS v3 base score of its vector.
    fn severity_for(&self, affected: &Affected) -> Option<Severity> {
        let rated = [
            &affected.ecosystem_specific,
            &affected.database_specific,
            &self.database_specific,
        ]
        .into_iter()
        .flatten()
        .find_map(|value| value.get("severity").and_then(|s| s.as_str()).and_then(Severity::parse));
        rated.or_else(|| {
            self.severity
                .iter()
                .filter(|s| s.kind == "CVSS_V3")
                .find_map(|s| s.score.parse::<cvss::v3::Vector>().ok())
                .map(|base| Severity::from_cvss_score(base.score().value()))
        })
    }
}

/// Names as the ecosystem compares them: PyPI per PEP 503 (case, `-_.` runs), others exactly.
pub fn normalize_name(ecosystem: &str, name: &str) -> String {
    if ecosystem == "PyPI" {
        let lower = name.to_ascii_lowercase();
        let mut out = String::with_capacity(lower.len());
        for c in lower.chars() {
            let c = if matches!(c, '-' | '_' | '.') { '-' } else { c };
            if !(c == '-' && out.ends_with('-')) {
                out.push(c);
            }
        }
        out
    } else {
        name.to_string()
    }
}

impl Entry {
    /// Whether `version` is affected: listed explicitly, or inside a range (OSV's algorithm:
    /// events sorted by version; `introduced` opens, `fixed` and past-`last_affected` close).
    pub fn affects(&self, scheme: Scheme, version: &str) -> bool {
        if self
            .versions
            .iter()
            .any(|v| scheme.compare(v, version) == Some(Ordering::Equal) || v == version)
        {
            return true;
        }
        self.ranges.iter().any(|range| range_affects(scheme, range, version))
    }

    /// The lowest `fixed` above the installed version.
    pub fn fixed_after(&self, scheme: Scheme, version: &str) -> Option<String> {
        self.ranges
            .iter()
            .flat_map(|r| r.events.iter().filter_map(|e| e.fixed.clone()))
            .filter(|fixed| scheme.compare(fixed, version) == Some(Ordering::Greater))
            .min_by(|a, b| scheme.compare(a, b).unwrap_or(Ordering::Equal))
    }
}

fn range_affects(scheme: Scheme, range: &Range, version: &str) -> bool {
    // Ranges of another kind (GIT) and unparsable bounds are skipped: never guessed.
    let compare = |bound: &str| -> Option<Ordering> {
        if bound == "0" {
            Some(Ordering::Greater) // "introduced: 0" is below every version
        } else {
            scheme.compare(version, bound)
        }
    };
    let mut events: Vec<&Event> = range.events.iter().collect();
    events.sort_by(|a, b| {
        let key = |e: &Event| {
            e.introduced
                .clone()
                .or(e.fixed.clone())
                .or(e.last_affected.clone())
                .or(e.limit.clone())
        };
        match (key(a), key(b)) {
            (Some(x), Some(y)) if x == "0" && y != "0" => Ordering::Less,
            (Some(x), Some(y)) if y == "0" && x != "0" => Ordering::Greater,
            (Some(x), Some(y)) => scheme.compare(&x, &y).unwrap_or(Ordering::Equal),
            _ => Ordering::Equal,
        }
    });
    let mut affected = false;
    for event in events {
        if let Some(introduced) = &event.introduced {
            if compare(introduced).is_some_and(|o| o != Ordering::Less) {
                affected = true;
            }
        } else if let Some(fixed) = &event.fixed {
            if compare(fixed).is_some_and(|o| o != Ordering::Less) {
                affected = false;
            }
        } else if let Some(last) = &event.last_affected {
            if compare(last) == Some(Ordering::Greater) {
                affected = false;
            }
        } else if let Some(limit) = &event.limit {
            if compare(limit).is_some_and(|o| o != Ordering::Less) {
                affected = false;
            }
        }
    }
    affected
}
