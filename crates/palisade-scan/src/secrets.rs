//! Hard-coded credentials (SEC0xx): one regex per credential format, compiled once into a set that
//! tells which detectors can match a file before any of them runs; an entropy floor and placeholder
//! list for the generic `password = "…"` detector; values are masked in every output.

use std::sync::LazyLock;

use regex::{Regex, RegexSet};

use crate::dockerfile::is_secret_name;
use crate::finding::Finding;
use crate::rules::{self, Rule};

struct Detector {
    rule: &'static Rule,
    pattern: &'static str,
    /// Judges the captured value (group 1): false drops the match.
    accept: fn(&str) -> bool,
}

fn always(_: &str) -> bool {
    true
}

/// A JWT-shaped value is the JWT detector's to judge (an unsigned token is no credential).
fn not_jwt(value: &str) -> bool {
    !value.starts_with("eyJ")
}

/// AWS documentation keys end in EXAMPLE; they are not credentials.
fn not_aws_example(value: &str) -> bool {
    !value.contains("EXAMPLE") && !is_placeholder(value)
}

/// Documentation and templates fill a key's shape with filler: `sk_live_XXXXXXXXXXXXXXXXXXXXXXXX`,
/// `ghp_000000…`, `<your-key>`. Applied to every detector, whatever the file format.
fn not_placeholder(value: &str) -> bool {
    !is_placeholder(value)
}

fn is_placeholder(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    const WORDS: &[&str] = &[
        "example",
        "placeholder",
        "your",
        "dummy",
        "redacted",
        "changeme",
        "sample",
        "fake",
    ];
    if WORDS.iter().any(|w| lower.contains(w)) || value.contains("...") || value.contains('…') {
        return true;
    }
    // A run of six of the same character (`XXXXXX`, `000000`, `******`).
    let bytes = value.as_bytes();
    bytes.windows(6).any(|w| w.iter().all(|&b| b == w[0]))
}

/// A password in a URL: not a placeholder, not a reference (`$PASS`, `${PASS}`, `%s`).
fn url_password(value: &str) -> bool {
    !is_placeholder(value)
        && !value.starts_with(['$', '%', '{', '<'])
        && !matches!(
            value.to_ascii_lowercase().as_str(),
            "password" | "pass" | "passwd" | "secret" | "pwd" | "x-oauth-basic"
        )
}

static DETECTORS: &[Detector] = &[
    Detector {
        rule: &rules::SECRET_AWS_ACCESS_KEY,
        pattern: r"\b((?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16})\b",
        accept: not_aws_example,
    },
    Detector {
        rule: &rules::SECRET_AWS_SECRET_KEY,
        pattern: r#"(?i)aws_?secret_?access_?key["']?\s*[:=]\s*["']?([A-Za-z0-9/+=]{40})(?:[^A-Za-z0-9/+=]|$)"#,
        accept: not_aws_example,
    },
    Detector {
        rule: &rules::SECRET_GITHUB_TOKEN,
        pattern: r"\b((?:gh[pousr]_[A-Za-z0-9]{36,255})|(?:github_pat_[A-Za-z0-9_]{60,255}))\b",
        accept: not_placeholder,
    },
    Detector {
        rule: &rules::SECRET_GITLAB_TOKEN,
        pattern: r"\b(glpat-[A-Za-z0-9_-]{20,})",
        accept: not_placeholder,
    },
    Detector {
        rule: &rules::SECRET_SLACK_TOKEN,
        pattern: r"(xox[baprs]-[0-9]{8,}-[0-9A-Za-z-]{8,}|https://hooks\.slack\.com/services/T[A-Z0-9]{6,}/B[A-Z0-9]{6,}/[A-Za-z0-9]{16,})",
        accept: not_placeholder,
    },
    Detector {
        rule: &rules::SECRET_STRIPE_KEY,
        pattern: r"\b((?:sk|rk)_live_[0-9a-zA-Z]{24,})\b",
        accept: not_placeholder,
    },
    Detector {
        rule: &rules::SECRET_PRIVATE_KEY,
        // The header alone (in docs, regexes, error messages) is not a key: a body must follow.
        pattern: r"(-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----)(?:\\n|\s)+(?:[A-Za-z-]+: [^\n]*(?:\\n|\s)+)*[A-Za-z0-9+/=]{40,}",
        accept: always,
    },
    Detector {
        rule: &rules::SECRET_JWT,
        // An unsigned token (`alg: none`, empty signature) authenticates nothing.
        pattern: r"\b(eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{20,})",
        accept: always,
    },
    Detector {
        rule: &rules::SECRET_GOOGLE_API_KEY,
        pattern: r"\b(AIza[0-9A-Za-z_-]{35})(?:[^0-9A-Za-z_-]|$)",
        accept: not_placeholder,
    },
    Detector {
        rule: &rules::SECRET_AZURE_STORAGE_KEY,
        pattern: r"(?i)AccountKey=([A-Za-z0-9+/]{86}==)",
        accept: not_placeholder,
    },
    Detector {
        rule: &rules::SECRET_SENDGRID_KEY,
        pattern: r"\b(SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43})\b",
        accept: not_placeholder,
    },
    Detector {
        rule: &rules::SECRET_URL_PASSWORD,
        // scheme://user:password@host — group 1 is the password.
        pattern: r#"\b[a-zA-Z][a-zA-Z0-9+.-]{1,20}://[^\s/:@'"`<>]*:([^\s/:@'"`<>]{4,200})@[A-Za-z0-9.\[\]-]+"#,
        accept: url_password,
    },
    Detector {
        rule: &rules::SECRET_GENERIC_ASSIGNMENT,
        // `name = value`, `name: value`, `"name": "value"`, `name := value`; not `a::b`, `a == b`.
        pattern: r#"(?i)([a-z0-9_.-]*(?:passw(?:or)?d|passwd|pwd|secret|token|api_?key|access_?key|auth_?key)[a-z0-9_.-]*)["']?\s*(?::=|=>|=|:[\s"'])\s*(["']?)([^"'\s,;`=][^"'\s,;`]{7,199})"#,
        accept: not_jwt,
    },
];

static SET: LazyLock<RegexSet> =
    LazyLock::new(|| RegexSet::new(DETECTORS.iter().map(|d| d.pattern)).expect("static secret patterns"));
static COMPILED: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    DETECTORS
        .iter()
        .map(|d| Regex::new(d.pattern).expect("static secret pattern"))
        .collect()
});

/// Values the scan must not report (from the ignore file's `secrets.allow`).
#[derive(Debug, Default, Clone)]
pub struct Allowlist {
    pub values: Vec<Regex>,
}

impl Allowlist {
    pub fn allows(&self, value: &str) -> bool {
        self.values.iter().any(|pattern| pattern.is_match(value))
    }
}

pub fn check(path: &str, text: &str, allow: &Allowlist) -> Vec<Finding> {
    let matched = SET.matches(text);
    if !matched.matched_any() {
        return Vec::new();
    }
    let lines = LineIndex::new(text);
    let mut findings = Vec::new();
    for index in matched.iter() {
        let detector = &DETECTORS[index];
        for captures in COMPILED[index].captures_iter(text) {
            let (Some(whole), Some(first)) = (captures.get(0), captures.get(1)) else {
                continue;
            };
            let (secret, name, quoted) = match captures.get(3) {
                Some(value) => (
                    value.as_str(),
                    Some(first.as_str()),
                    captures.get(2).is_some_and(|q| !q.is_empty()),
                ),
                None => (first.as_str(), None, true),
            };
            if !(detector.accept)(secret) || allow.allows(secret) {
                continue;
            }
            if let Some(name) = name {
                if !is_secret_name(name) || !looks_random(secret) || (!quoted && !is_bare_token(secret)) {
                    continue;
                }
            }
            let what = match name {
                Some(name) => format!("{name} = {}", mask(secret)),
                None if detector.rule.id == rules::SECRET_PRIVATE_KEY.id => secret.to_string(),
                None => mask(secret),
            };
            findings.push(Finding::of(
                detector.rule,
                path,
                lines.line_of(whole.start()),
                format!("{}: {what}", detector.rule.title),
            ));
        }
    }
    // A value matched by a specific detector is not reported again as a generic assignment.
    let specific: Vec<usize> = findings
        .iter()
        .filter(|f| f.rule != rules::SECRET_GENERIC_ASSIGNMENT.id)
        .map(|f| f.line)
        .collect();
    findings.retain(|f| f.rule != rules::SECRET_GENERIC_ASSIGNMENT.id || !specific.contains(&f.line));
    findings.sort_by_key(|f| f.line);
    findings
}

/// The first four characters and the length: enough to find and rotate it, not to use it.
pub fn mask(secret: &str) -> String {
    let shown: String = secret.chars().take(4).collect();
    format!("{shown}… ({} chars)", secret.chars().count())
}

/// Real secrets are random: letters and digits mixed, and at least 3 bits of Shannon entropy per
/// character. Placeholders, references and words are not.
fn looks_random(value: &str) -> bool {
    const PLACEHOLDERS: &[&str] = &[
        "example",
        "changeme",
        "change_me",
        "placeholder",
        "your",
        "dummy",
        "redacted",
        "xxxx",
        "****",
        "<",
        "{{",
        "${",
        "%(",
        "(",
    ];
    let lower = value.to_ascii_lowercase();
    if PLACEHOLDERS.iter().any(|p| lower.contains(p)) || lower.starts_with('$') || lower.starts_with("file:") {
        return false;
    }
    // Words joined by `-` or `_` (`service-account-token`, `not_a_service_account_token`) name
    // something; a credential has digits or mixed case in it.
    let segments: Vec<&str> = value.split(['-', '_']).collect();
    if segments.len() >= 2 && segments.iter().all(|s| s.chars().all(|c| c.is_ascii_lowercase())) {
        return false;
    }
    let classes = [
        value.chars().any(|c| c.is_ascii_lowercase()),
        value.chars().any(|c| c.is_ascii_uppercase()),
        value.chars().any(|c| c.is_ascii_digit()),
        value.chars().any(|c| !c.is_ascii_alphanumeric()),
    ]
    .into_iter()
    .filter(|&present| present)
    .count();
    // Short values need three character classes (`password123` has two); long ones (hex, base64) two.
    let mixed = classes >= 3 || (value.len() >= 20 && classes >= 2);
    mixed && shannon_entropy(value) >= 3.0
}

/// An unquoted value (`.env`, shell, YAML) counts only if it is one token of credential
/// characters with a digit; in source code an unquoted right-hand side is an expression
/// (`config.api_key`, `Kind::Token`, `&secret`), not a secret.
fn is_bare_token(value: &str) -> bool {
    value.chars().any(|c| c.is_ascii_digit())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '_' | '-'))
}

pub fn shannon_entropy(value: &str) -> f64 {
    let mut counts = [0u32; 256];
    for byte in value.bytes() {
        counts[byte as usize] += 1;
    }
    let len = value.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / len;
            -p * p.log2()
        })
        .sum()
}

/// Byte offset → 1-based line.
pub struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self { starts }
    }

    pub fn line_of(&self, offset: usize) -> usize {
        self.starts.partition_point(|&start| start <= offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_never_show_the_secret() {
        assert_eq!(mask("ghp_abcdefghijklmnop"), "ghp_… (20 chars)");
    }

    #[test]
    fn placeholders_and_identifiers_are_not_secrets() {
        let allow = Allowlist::default();
        let placeholders = "STRIPE_SECRET_KEY=sk_live_XXXXXXXXXXXXXXXXXXXXXXXXXXXX\nGITHUB_TOKEN=ghp_000000000000000000000000000000000000\nDATABASE_URL=postgres://app:${DB_PASSWORD}@db:5432/app\nREDIS_URL=redis://:password@redis:6379\nkind: not-a-service-account-token\ntoken_kind = \"service-account-token-projected\"\nNotAServiceAccountToken = not_a_service_account_token\n";
        let found = check(".env.example", placeholders, &allow);
        assert!(found.is_empty(), "{found:?}");
        // palisade:ignore SEC006,SEC013 made-up credentials the detectors must find
        let real = "STRIPE_SECRET_KEY=sk_live_4eC39HqLyjWDarjtT1zdp7dc9K\nDATABASE_URL=postgres://app:Qx7pL2mZ9vRt@db.internal:5432/app\n";
        let rules: Vec<String> = check(".env", real, &allow).into_iter().map(|f| f.rule).collect();
        assert_eq!(rules, ["SEC006", "SEC013"]);
    }

    #[test]
    fn entropy_separates_random_from_words() {
        assert!(looks_random("q8Zr2LmX0vT7pKs1"));
        assert!(!looks_random("password123"), "{}", shannon_entropy("password123"));
        assert!(!looks_random("${DB_PASSWORD}"));
        assert!(!looks_random("changeme2024"));
    }

    #[test]
    fn line_index() {
        let index = LineIndex::new("a\nbb\n\nc");
        assert_eq!(index.line_of(0), 1);
        assert_eq!(index.line_of(2), 2);
        assert_eq!(index.line_of(5), 3);
        assert_eq!(index.line_of(6), 4);
    }
}
