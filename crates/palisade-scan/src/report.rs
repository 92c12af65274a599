//! Output: a table grouped by file (for people), JSON (for scripts), SARIF 2.1.0 (for code-scanning
//! dashboards such as GitHub's).

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::{json, Value};

use crate::finding::{Finding, Severity};
use crate::rules;
use crate::{Report, Suppressed};

const TOOL_URI: &str = "https://github.com/palisade-dev/palisade/blob/main/docs/scan-rules.md";

fn counts(findings: &[Finding]) -> BTreeMap<Severity, usize> {
    let mut counts = BTreeMap::new();
    for finding in findings {
        *counts.entry(finding.severity).or_insert(0) += 1;
    }
    counts
}

fn summary_line(report: &Report) -> String {
    let counts = counts(&report.findings);
    let by_severity: Vec<String> = counts
        .iter()
        .rev()
        .map(|(severity, n)| format!("{n} {severity}"))
        .collect();
    let files = report
        .findings
        .iter()
        .map(|f| &f.path)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let mut line = format!("{} findings", report.findings.len());
    if !by_severity.is_empty() {
        let _ = write!(line, " ({})", by_severity.join(", "));
    }
    let _ = write!(
        line,
        " in {files} files; {} files and {} packages scanned; {} suppressed",
        report.files_scanned,
        report.packages_checked,
        report.suppressed.len()
    );
    line
}

pub fn table(report: &Report) -> String {
    let mut out = String::new();
    let mut by_file: BTreeMap<&str, Vec<&Finding>> = BTreeMap::new();
    for finding in &report.findings {
        by_file.entry(&finding.path).or_default().push(finding);
    }
    for (path, findings) in by_file {
        let _ = writeln!(out, "{path}");
        for finding in findings {
            let line = if finding.line == 0 {
                "-".to_string()
            } else {
                finding.line.to_string()
            };
            let _ = writeln!(
                out,
                "  {line:>5}  {:<8}  {:<8}  {}",
                finding.severity.as_str(),
                finding.rule,
                finding.message
            );
        }
        out.push('\n');
    }
    for warning in &report.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    let _ = writeln!(out, "{}", summary_line(report));
    out
}

pub fn json(report: &Report) -> String {
    let value = json!({
        "tool": { "name": "palisade", "version": env!("CARGO_PKG_VERSION") },
        "target": report.target,
        "summary": {
            "findings": report.findings.len(),
            "by_severity": counts(&report.findings).into_iter().map(|(s, n)| (s.as_str().to_string(), n)).collect::<BTreeMap<_, _>>(),
            "files_scanned": report.files_scanned,
            "packages_checked": report.packages_checked,
            "suppressed": report.suppressed.len(),
        },
        "findings": report.findings,
        "suppressed": report.suppressed,
        "warnings": report.warnings,
    });
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

fn level(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical | Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low | Severity::Info => "note",
    }
}

/// GitHub code scanning ranks security results by this CVSS-like number.
fn security_severity(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "9.5",
        Severity::High => "8.0",
        Severity::Medium => "5.5",
        Severity::Low => "3.0",
        Severity::Info => "0.0",
    }
}

fn sarif_rule(finding: &Finding) -> Value {
    let (description, help, help_uri) = match rules::find(&finding.rule) {
        Some(rule) => (
            rule.rationale.to_string(),
            format!("{}\n\nFix: {}", rule.rationale, rule.remediation),
            format!("{TOOL_URI}#{}", rule.id.to_ascii_lowercase()),
        ),
        None => {
            let aliases = finding
                .vulnerability
                .as_ref()
                .map(|v| v.aliases.join(", "))
                .unwrap_or_default();
            let text = if aliases.is_empty() {
                finding.title.clone()
            } else {
                format!("{} ({aliases})", finding.title)
            };
            let advisory = format!("https://osv.dev/vulnerability/{}", finding.rule);
            let help = format!("{text}\n\nUpgrade the package to a fixed version. See {advisory}");
            (text, help, advisory)
        }
    };
    json!({
        "id": finding.rule,
        "name": finding.rule,
        "shortDescription": { "text": finding.title },
        "fullDescription": { "text": description },
        "help": { "text": help },
        "helpUri": help_uri,
        "defaultConfiguration": { "level": level(finding.severity) },
        "properties": { "security-severity": security_severity(finding.severity), "tags": ["security"] },
    })
}

fn sarif_result(finding: &Finding, rule_index: usize, suppression: Option<&crate::suppress::Suppression>) -> Value {
    let mut result = json!({
        "ruleId": finding.rule,
        "ruleIndex": rule_index,
        "level": level(finding.severity),
        "message": { "text": finding.message },
        "locations": [{
            "physicalLocation": {
                "artifactLocation": { "uri": finding.path, "uriBaseId": "%SRCROOT%" },
                "region": { "startLine": finding.line.max(1) },
            }
        }],
    });
    if let Some(suppression) = suppression {
        result["suppressions"] = json!([{ "kind": suppression.kind, "justification": suppression.reason }]);
    }
    result
}

pub fn sarif(report: &Report) -> String {
    let mut rules: Vec<Value> = Vec::new();
    let mut index_of: BTreeMap<String, usize> = BTreeMap::new();
    let everything = report.findings.iter().map(|f| (f, None)).chain(
        report
            .suppressed
            .iter()
            .map(|Suppressed { finding, suppression }| (finding, Some(suppression))),
    );
    let mut results = Vec::new();
    for (finding, suppression) in everything {
        let index = *index_of.entry(finding.rule.clone()).or_insert_with(|| {
            rules.push(sarif_rule(finding));
            rules.len() - 1
        });
        results.push(sarif_result(finding, index, suppression));
    }
    let value = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "palisade",
                "semanticVersion": env!("CARGO_PKG_VERSION"),
                "informationUri": TOOL_URI,
                "rules": rules,
            }},
            "originalUriBaseIds": { "%SRCROOT%": { "uri": "file:///" } },
            "results": results,
        }],
    });
    serde_json::to_string_pretty(&value).unwrap_or_default()
}
