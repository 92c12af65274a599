//! OSV matching end to end: advisory records (abbreviated copies of published ones, plus one
//! withdrawn) imported into a fresh database, lockfiles of each ecosystem scanned against it.
//! Covers semver (crates.io, npm), Go pseudo-versions, PEP 440, `introduced: 0`, `last_affected`,
//! several ranges in one record, and exact range boundaries.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use palisade_scan::vuln::Database;
use palisade_scan::{scan, Checks, Options, Severity};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// (path, line, advisory, "package version", fixed in) of a finding.
type Matched = (String, usize, String, String, Option<String>);

fn database(dir: &Path) -> Database {
    let database = Database::open(dir.join("db"));
    let summary = database.import(&[fixtures().join("osv")]).expect("import");
    assert_eq!(summary.records, 13);
    database
}

#[test]
fn lockfiles_of_every_ecosystem_match_exactly_the_affected_versions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options {
        checks: Checks {
            misconfigurations: false,
            secrets: false,
            vulnerabilities: true,
        },
        database: database(dir.path()),
        ..Options::default()
    };
    let report = scan(&fixtures().join("lockfiles"), &options).expect("scan");
    let found: BTreeSet<Matched> = report
        .findings
        .iter()
        .map(|f| {
            let v = f.vulnerability.as_ref().expect("vulnerability finding");
            (
                f.path.clone(),
                f.line,
                f.rule.clone(),
                format!("{} {}", v.package, v.installed),
                v.fixed.clone(),
            )
        })
        .collect();
    let expected: BTreeSet<Matched> = [
        ("Cargo.lock", 9, "RUSTSEC-2021-0078", "hyper 0.14.9", Some("0.14.10")),
        (
            "go.sum",
            1,
            "GO-2022-1059",
            "golang.org/x/text v0.0.0-20170915032832-14c0d48ead0c",
            Some("0.3.8"),
        ),
        (
            "package-lock.json",
            6,
            "GHSA-35jh-r3h4-6jhm",
            "lodash 4.17.20",
            Some("4.17.21"),
        ),
        // An alias (`"lodash-legacy": "npm:lodash@4.17.15"`) is checked as the real package.
        (
            "package-lock.json",
            16,
            "GHSA-35jh-r3h4-6jhm",
            "lodash 4.17.15",
            Some("4.17.21"),
        ),
        // last_affected: 4.5.0 itself is affected, and there is no fix to name.
        (
            "package-lock.json",
            10,
            "GHSA-35jh-r3h4-6jhm",
            "lodash.template 4.5.0",
            None,
        ),
        (
            "requirements.txt",
            2,
            "GHSA-j8r2-6x86-q33q",
            "requests 2.30.0",
            Some("2.31.0"),
        ),
        // The second of three ranges; the fix named is the one above the installed version.
        (
            "requirements.txt",
            3,
            "GHSA-jh3w-4vvf-mjgr",
            "Django 4.1.9",
            Some("4.1.10"),
        ),
        ("yarn.lock", 4, "GHSA-35jh-r3h4-6jhm", "lodash.template 4.4.0", None),
    ]
    .into_iter()
    .map(|(p, l, id, pkg, fixed)| {
        (
            p.to_string(),
            l,
            id.to_string(),
            pkg.to_string(),
            fixed.map(str::to_string),
        )
    })
    .collect();
    assert_eq!(found, expected);
    assert_eq!(report.packages_checked, 15);
    let severity = |id: &str| report.findings.iter().find(|f| f.rule == id).map(|f| f.severity);
    assert_eq!(severity("GHSA-35jh-r3h4-6jhm"), Some(Severity::High), "GitHub's rating");
    assert_eq!(severity("GHSA-j8r2-6x86-q33q"), Some(Severity::Medium), "MODERATE");
    assert_eq!(
        severity("RUSTSEC-2021-0078"),
        Some(Severity::Medium),
        "CVSS 5.3 from the vector"
    );
}

#[test]
fn a_bad_record_leaves_the_database_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let database = database(dir.path());
    let before = std::fs::read_to_string(database.dir().join("PyPI.jsonl")).expect("family file");
    let bad = dir.path().join("bad");
    std::fs::create_dir(&bad).expect("mkdir");
    std::fs::copy(fixtures().join("osv/GO-2022-1059.json"), bad.join("a.json")).expect("copy");
    std::fs::write(bad.join("b.json"), "{\"id\": 5}").expect("write");
    let error = database.import(std::slice::from_ref(&bad)).expect_err("invalid record");
    assert!(error.to_string().contains("b.json"), "{error}");
    assert_eq!(
        std::fs::read_to_string(database.dir().join("PyPI.jsonl")).expect("family file"),
        before
    );
}

#[test]
fn all_zip_archives_import_like_the_files_they_hold() {
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("all.zip");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&archive).expect("create"));
    for name in ["GHSA-j8r2-6x86-q33q.json", "GHSA-jh3w-4vvf-mjgr.json"] {
        zip.start_file(name, zip::write::SimpleFileOptions::default())
            .expect("start");
        let bytes = std::fs::read(fixtures().join("osv").join(name)).expect("fixture");
        std::io::Write::write_all(&mut zip, &bytes).expect("write");
    }
    zip.finish().expect("finish");
    let database = Database::open(dir.path().join("db"));
    let summary = database.import(&[archive]).expect("import");
    assert_eq!(summary.records, 2);
    assert_eq!(summary.entries_by_family.get("PyPI"), Some(&2));
}

#[test]
fn scanning_packages_without_a_database_is_an_error_not_a_silent_pass() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options {
        database: Database::open(dir.path().join("missing")),
        ..Options::default()
    };
    let error = scan(&fixtures().join("lockfiles/Cargo.lock"), &options).expect_err("no database");
    assert!(error.to_string().contains("palisade db import"), "{error}");
}
