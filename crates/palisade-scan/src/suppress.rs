//! Suppressions: an ignore file (rule, path glob, reason, optional expiry) and inline
//! `# palisade:ignore RULE reason` comments on a finding's line or the line above. Every
//! suppression needs a reason; an expired one stops applying (and says so).

use std::path::Path;

use globset::{Glob, GlobMatcher};
use regex::Regex;
use serde::Deserialize;

use crate::finding::Finding;
use crate::secrets::Allowlist;

/// The ignore file looked for at the root of a scanned directory.
pub const IGNORE_FILE: &str = ".palisadeignore.yaml";

#[derive(Debug, thiserror::Error)]
pub enum IgnoreFileError {
    #[error("{file}: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IgnoreFile {
    #[serde(default)]
    ignore: Vec<serde_saphyr::Spanned<IgnoreEntry>>,
    #[serde(default)]
    secrets: SecretsSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IgnoreEntry {
    /// A rule or advisory id; `*` (every rule) only together with a path.
    rule: String,
    #[serde(default)]
    path: Option<String>,
    reason: String,
    /// `YYYY-MM-DD`: the last day the entry applies.
    #[serde(default)]
    expires: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretsSection {
    /// Regexes of values that are not secrets (test fixtures, public example keys).
    #[serde(default)]
    allow: Vec<serde_saphyr::Spanned<String>>,
}

#[derive(Debug, Clone)]
struct Rule {
    rule: String,
    path: Option<GlobMatcher>,
    reason: String,
}

/// Why a finding was not reported.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Suppression {
    /// `inSource` (a comment) or `external` (the ignore file), as SARIF names them.
    pub kind: &'static str,
    pub reason: String,
}

#[derive(Debug, Default, Clone)]
pub struct Suppressions {
    rules: Vec<Rule>,
    pub secrets: Allowlist,
    /// Expired entries and other things the user should know.
    pub warnings: Vec<String>,
}

impl Suppressions {
    pub fn load(path: &Path, today: &str) -> Result<Self, IgnoreFileError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| IgnoreFileError::Read {
            file: file.clone(),
            source,
        })?;
        Self::parse(&file, &text, today)
    }

    pub fn parse(file: &str, text: &str, today: &str) -> Result<Self, IgnoreFileError> {
        let invalid = |line: usize, column: usize, message: String| IgnoreFileError::Invalid {
            file: file.to_string(),
            line,
            column,
            message,
        };
        let parsed: IgnoreFile = if text.trim().is_empty() {
            IgnoreFile {
                ignore: Vec::new(),
                secrets: SecretsSection::default(),
            }
        } else {
            serde_saphyr::from_str(text).map_err(|e| {
                let (line, column) = e
                    .location()
                    .map(|l| (l.line() as usize, l.column() as usize))
                    .unwrap_or((0, 0));
                let message = e.without_snippet().to_string();
                invalid(
                    line,
                    column,
                    message.lines().next().unwrap_or("invalid ignore file").to_string(),
                )
            })?
        };
        let mut suppressions = Self::default();
        for entry in parsed.ignore {
            let (line, column) = (entry.referenced.line() as usize, entry.referenced.column() as usize);
            let entry = entry.value;
            if entry.reason.trim().is_empty() {
                return Err(invalid(line, column, format!("ignoring {} needs a reason", entry.rule)));
            }
            if let Some(expires) = &entry.expires {
                if !is_date(expires) {
                    return Err(invalid(line, column, format!("expires `{expires}` is not YYYY-MM-DD")));
                }
                if expires.as_str() < today {
                    suppressions
                        .warnings
                        .push(format!("{file}:{line}: ignore of {} expired on {expires}", entry.rule));
                    continue;
                }
            }
            if entry.rule == "*" && entry.path.is_none() {
                return Err(invalid(line, column, "`rule: \"*\"` needs a path".to_string()));
            }
            let path = match &entry.path {
                Some(glob) => Some(
                    Glob::new(glob)
                        .map_err(|e| invalid(line, column, format!("path `{glob}`: {e}")))?
                        .compile_matcher(),
                ),
                None => None,
            };
            suppressions.rules.push(Rule {
                rule: entry.rule,
                path,
                reason: entry.reason,
            });
        }
        for pattern in parsed.secrets.allow {
            let (line, column) = (pattern.referenced.line() as usize, pattern.referenced.column() as usize);
            let regex = Regex::new(&pattern.value).map_err(|e| invalid(line, column, format!("secrets.allow: {e}")))?;
            suppressions.secrets.values.push(regex);
        }
        Ok(suppressions)
    }

    /// The ignore-file entry that covers a finding.
    pub fn external(&self, finding: &Finding) -> Option<Suppression> {
        self.rules
            .iter()
            .find(|r| {
                (r.rule == finding.rule || r.rule == "*")
                    && r.path.as_ref().is_none_or(|glob| glob.is_match(&finding.path))
            })
            .map(|r| Suppression {
                kind: "external",
                reason: r.reason.clone(),
            })
    }
}

fn is_date(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 10
        && bytes.iter().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                *b == b'-'
            } else {
                b.is_ascii_digit()
            }
        })
}

/// Today as `YYYY-MM-DD` (UTC), for expiry.
pub fn today() -> String {
    humantime::format_rfc3339(std::time::SystemTime::now()).to_string()[..10].to_string()
}

/// A `palisade:ignore RULE[,RULE] reason` comment on the finding's line or the one above.
pub fn inline(lines: &[&str], finding: &Finding) -> Option<Suppression> {
    let candidates = [finding.line, finding.line.saturating_sub(1)];
    candidates
        .into_iter()
        .filter(|&line| line >= 1)
        .filter_map(|line| lines.get(line - 1))
        .find_map(|text| {
            let directive = text.split("palisade:ignore").nth(1)?;
            let mut words = directive.split_whitespace();
            let rules = words.next()?;
            let reason = words.collect::<Vec<_>>().join(" ");
            let covers = rules.split(',').any(|r| r == finding.rule);
            (covers && !reason.is_empty()).then_some(Suppression {
                kind: "inSource",
                reason,
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules;

    fn finding(rule: &crate::rules::Rule, path: &str, line: usize) -> Finding {
        Finding::of(rule, path, line, "x")
    }

    #[test]
    fn ignore_file_matches_rule_and_glob_until_expiry() {
        let text = "ignore:\n  - rule: K8S011\n    path: \"deploy/**\"\n    reason: limits set by the platform\n  - rule: DF010\n    reason: probes instead\n    expires: 2026-01-01\n";
        let suppressions = Suppressions::parse("ig", text, "2026-11-23").expect("valid");
        assert!(suppressions
            .external(&finding(&rules::K8S_NO_LIMITS, "deploy/app.yaml", 3))
            .is_some());
        assert!(suppressions
            .external(&finding(&rules::K8S_NO_LIMITS, "other/app.yaml", 3))
            .is_none());
        assert!(
            suppressions
                .external(&finding(&rules::DOCKER_NO_HEALTHCHECK, "Dockerfile", 1))
                .is_none(),
            "expired"
        );
        assert_eq!(suppressions.warnings.len(), 1);
    }

    #[test]
    fn ignore_without_reason_or_with_unknown_key_is_refused_with_position() {
        let error = Suppressions::parse("ig", "ignore:\n  - rule: K8S011\n    reason: \"\"\n", "2026-11-23")
            .expect_err("no reason");
        assert!(error.to_string().starts_with("ig:2:"), "{error}");
        let error =
            Suppressions::parse("ig", "ignore:\n  - rule: K8S011\n    reson: typo\n", "2026-11-23").expect_err("typo");
        assert!(error.to_string().contains("ig:3:"), "{error}");
    }

    #[test]
    fn inline_comment_needs_the_rule_and_a_reason() {
        let lines = [
            "# palisade:ignore DF001,DF010 runs as a distroless nonroot user",
            "FROM x",
            "# palisade:ignore DF002",
        ];
        assert!(inline(&lines, &finding(&rules::DOCKER_RUNS_AS_ROOT, "Dockerfile", 2)).is_some());
        assert!(inline(&lines, &finding(&rules::DOCKER_UNPINNED_TAG, "Dockerfile", 2)).is_none());
        assert!(
            inline(&lines, &finding(&rules::DOCKER_UNPINNED_TAG, "Dockerfile", 3)).is_none(),
            "no reason"
        );
    }
}
