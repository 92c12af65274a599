//! The labelled fixture corpus: every fixture file has a `.expected` file listing the exact
//! `LINE RULE` pairs the scanner must report (empty for files of look-alikes), and every rule of
//! the table (except image rules, tested in `image.rs`) fires somewhere in the corpus.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use palisade_scan::rules::{self, Target};
use palisade_scan::{scan, Checks, Options};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn options() -> Options {
    Options {
        checks: Checks {
            vulnerabilities: false,
            ..Checks::default()
        },
        ..Options::default()
    }
}

fn corpus() -> Vec<(PathBuf, PathBuf)> {
    let mut pairs = Vec::new();
    for group in ["dockerfile", "kubernetes", "palisade", "secrets"] {
        for entry in std::fs::read_dir(fixtures().join(group)).expect("fixture dir") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "expected") {
                let file = path.with_extension("");
                pairs.push((file, path));
            }
        }
    }
    pairs.sort();
    pairs
}

fn parse_expected(path: &Path) -> BTreeSet<(usize, String)> {
    std::fs::read_to_string(path)
        .expect("expected file")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (line, rule) = l.split_once(' ').expect("LINE RULE");
            (line.parse().expect("line number"), rule.to_string())
        })
        .collect()
}

#[test]
fn every_fixture_reports_exactly_its_expected_rules_and_lines() {
    let mut failures = Vec::new();
    for (file, expected_file) in corpus() {
        let report = scan(&file, &options()).expect("scan");
        let found: BTreeSet<(usize, String)> = report.findings.iter().map(|f| (f.line, f.rule.clone())).collect();
        let expected = parse_expected(&expected_file);
        if found != expected {
            let missing: Vec<_> = expected.difference(&found).collect();
            let extra: Vec<_> = found.difference(&expected).collect();
            failures.push(format!(
                "{}:\n  missing {missing:?}\n  unexpected {extra:?}",
                file.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_rule_fires_somewhere_in_the_corpus() {
    let mut fired = BTreeSet::new();
    for (_, expected_file) in corpus() {
        fired.extend(parse_expected(&expected_file).into_iter().map(|(_, rule)| rule));
    }
    let silent: Vec<&str> = rules::ALL
        .iter()
        .filter(|r| r.target != Target::Image && !fired.contains(r.id))
        .map(|r| r.id)
        .collect();
    assert!(silent.is_empty(), "rules without a firing fixture: {silent:?}");
}

#[test]
fn secrets_are_masked_in_every_message() {
    let report = scan(&fixtures().join("secrets/leaky.txt"), &options()).expect("scan");
    let text = std::fs::read_to_string(fixtures().join("secrets/leaky.txt")).expect("fixture");
    for finding in &report.findings {
        for secret in [
            // palisade:ignore SEC001 a leaky.txt fixture value this test checks is masked
            "AKIAZ7QW3RT5YU8IO2PL",
            "q8Zr2LmX0vT7pKs1aB3c",
            "ghp_aB3dE5gH7jK9",
            "Xk9#mQ2$vL7@pR4w",
            "MIIEowIBAAKCAQEA",
        ] {
            assert!(text.contains(secret));
            assert!(
                !finding.message.contains(secret),
                "{} leaks in {:?}",
                secret,
                finding.message
            );
        }
    }
}

#[test]
fn scan_rules_doc_is_generated_from_the_rule_table() {
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/scan-rules.md");
    let committed = std::fs::read_to_string(&doc).unwrap_or_default();
    assert!(
        committed == rules::markdown(),
        "docs/scan-rules.md is stale: run `cargo run -- scan --list-rules markdown > docs/scan-rules.md`"
    );
}

#[test]
fn the_documented_ignore_file_example_loads() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/scan/palisadeignore.yaml");
    let suppressions = palisade_scan::suppress::Suppressions::load(&example, "2026-11-23").expect("valid example");
    assert!(suppressions.warnings.is_empty(), "{:?}", suppressions.warnings);
    assert_eq!(suppressions.secrets.values.len(), 2);
}

/// Hostile and broken inputs under every recognised name: the scan reports or skips, never panics.
#[test]
fn hostile_inputs_never_panic() {
    let deep_flow = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    let deep_block: String = (0..2_000).map(|depth| format!("{}a:\n", " ".repeat(depth))).collect();
    let inputs: Vec<String> = vec![
        String::new(),
        ":".into(),
        "é@1:\n  version \"1\"\n".into(),
        "\u{feff}FROM\nUSER\nRUN <<\nENV\nARG =\nADD\nEXPOSE\n".into(),
        "apiVersion: v1\nkind: List\nitems: 5\n".into(),
        "apiVersion: v1\nkind: Pod\nspec: [1, 2]\n".into(),
        "routes: 7\nlisteners: x\n".into(),
        "[[package]]\nname = 1\n".into(),
        "{\"packages\": {\"node_modules/\": {\"version\": 5}}}".into(),
        "==\n===\n[x]==\n".into(),
        "x\n y z w\n".into(),
        deep_flow,
        deep_block,
        "a".repeat(100_000),
    ];
    let names = [
        "Dockerfile",
        "k.yaml",
        "Cargo.lock",
        "package-lock.json",
        "yarn.lock",
        "requirements.txt",
        "poetry.lock",
        "go.sum",
        "notes.txt",
    ];
    for (index, input) in inputs.iter().enumerate() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in names {
            std::fs::write(dir.path().join(name), input).expect("write");
        }
        scan(dir.path(), &options()).unwrap_or_else(|e| panic!("input {index}: {e}"));
    }
}

/// A file that does not parse is reported with its position, Helm templates included (with the
/// way to scan them); JSON that holds no Kubernetes object is not read as manifests.
#[test]
fn unparsable_files_are_reported_never_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("deployment.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}\n  labels: {{- include \"x\" . | nindent 4 }}\n",
    )
    .expect("write");
    std::fs::write(dir.path().join("broken.yaml"), "a: [1, 2\nb: 3\n").expect("write");
    std::fs::write(
        dir.path().join("broken.json"),
        "{\"apiVersion\": \"v1\", \"kind\": \"Pod\",\n",
    )
    .expect("write");
    std::fs::write(dir.path().join("package.json"), "{\"name\": \"x\", // not JSON\n}").expect("write");
    let report = scan(dir.path(), &options()).expect("scan");
    let warned = |file: &str| report.warnings.iter().find(|w| w.starts_with(file)).cloned();
    let helm = warned("deployment.yaml:").expect("the Helm template is reported");
    assert!(helm.contains("not checked") && helm.contains("helm template"), "{helm}");
    assert!(warned("broken.yaml:").is_some(), "{:?}", report.warnings);
    assert!(warned("broken.json:").is_some(), "{:?}", report.warnings);
    assert!(warned("package.json").is_none(), "{:?}", report.warnings);
}

/// stdin (`kubectl get -A -o yaml | palisade scan -`): manifests or a Dockerfile, by content, with
/// inline suppressions read from the same text.
#[test]
fn text_from_stdin_is_read_as_manifests_or_a_dockerfile() {
    let manifests = std::fs::read_to_string(fixtures().join("kubernetes/manifests.json")).expect("fixture");
    let report = palisade_scan::scan_text("stdin", &manifests, &options()).expect("scan");
    let found: BTreeSet<(usize, String)> = report.findings.iter().map(|f| (f.line, f.rule.clone())).collect();
    assert_eq!(
        found,
        parse_expected(&fixtures().join("kubernetes/manifests.json.expected"))
    );
    assert!(report.findings.iter().all(|f| f.path == "stdin"));
    let dockerfile = "# build\nFROM debian:12.8-slim\nHEALTHCHECK CMD true\n# palisade:ignore DF001 the entrypoint drops privileges\nUSER root\n";
    let report = palisade_scan::scan_text("stdin", dockerfile, &options()).expect("scan");
    let rules: Vec<&str> = report.findings.iter().map(|f| f.rule.as_str()).collect();
    assert_eq!(rules, ["DF003"], "read as a Dockerfile");
    let suppressed: Vec<&str> = report.suppressed.iter().map(|s| s.finding.rule.as_str()).collect();
    assert_eq!(suppressed, ["DF001"], "the inline suppression was read from the text");
}

/// A finding made after every file was read (K8S023 looks across files) is suppressed inline like
/// any other, also in a file that has no other finding.
#[test]
fn findings_made_across_files_honour_inline_suppressions() {
    let good = std::fs::read_to_string(fixtures().join("kubernetes/good.yaml")).expect("fixture");
    let workload_only = good.split("\n---\n").next().expect("first document");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("api.yaml");
    std::fs::write(&file, workload_only).expect("write");
    let report = scan(dir.path(), &options()).expect("scan");
    let rules: Vec<&str> = report.findings.iter().map(|f| f.rule.as_str()).collect();
    assert_eq!(
        rules,
        ["K8S023"],
        "the hardened workload alone lacks only its NetworkPolicy"
    );

    let line = report.findings[0].line;
    let mut lines: Vec<&str> = workload_only.lines().collect();
    lines.insert(
        line - 1,
        "# palisade:ignore K8S023 the platform's default-deny policy covers every namespace",
    );
    std::fs::write(&file, lines.join("\n")).expect("write");
    let report = scan(dir.path(), &options()).expect("scan");
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(report.suppressed.len(), 1);
}
