//! SARIF output validated against the OASIS SARIF 2.1.0 JSON schema (the copy in
//! `fixtures/sarif-schema-2.1.0.json` is the one serde-sarif generates its types from), with a
//! suppressed result, whole-file results and a vulnerability result among them.

use std::path::Path;

use palisade_scan::vuln::Database;
use palisade_scan::{report, scan, Options};

#[test]
fn sarif_output_is_valid_sarif_2_1_0() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dir = tempfile::tempdir().expect("tempdir");
    let database = Database::open(dir.path().join("db"));
    database.import(&[fixtures.join("osv")]).expect("import");
    let ignore = dir.path().join("ignore.yaml");
    std::fs::write(
        &ignore,
        "ignore:\n  - rule: K8S011\n    reason: limits come from a LimitRange\n",
    )
    .expect("write");
    let options = Options {
        database,
        ignore_file: Some(ignore),
        ..Options::default()
    };
    let report = scan(&fixtures, &options).expect("scan");
    assert!(report.findings.iter().any(|f| f.vulnerability.is_some()));
    assert!(!report.suppressed.is_empty());

    let sarif: serde_json::Value = serde_json::from_str(&report::sarif(&report)).expect("json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("sarif-schema-2.1.0.json")).expect("schema"))
            .expect("schema json");
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(&sarif)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .take(10)
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let mut broken = sarif.clone();
    broken["runs"][0]["results"][0]["level"] = "fatal".into();
    assert!(!validator.is_valid(&broken), "the schema check has teeth");

    let run = &sarif["runs"][0];
    let rules = run["tool"]["driver"]["rules"].as_array().expect("rules");
    let results = run["results"].as_array().expect("results");
    assert_eq!(results.len(), report.findings.len() + report.suppressed.len());
    for result in results {
        let index = result["ruleIndex"].as_u64().expect("ruleIndex") as usize;
        assert_eq!(
            rules[index]["id"], result["ruleId"],
            "ruleIndex points at the result's rule"
        );
        assert!(result["locations"][0]["physicalLocation"]["region"]["startLine"].as_u64() >= Some(1));
    }
    let suppressed = results.iter().filter(|r| r.get("suppressions").is_some()).count();
    assert_eq!(suppressed, report.suppressed.len());
    let privileged = results.iter().find(|r| r["ruleId"] == "K8S001").expect("K8S001 result");
    assert_eq!(privileged["level"], "error");
    assert_eq!(
        privileged["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
        "kubernetes/bad.yaml"
    );
    assert_eq!(
        privileged["locations"][0]["physicalLocation"]["region"]["startLine"],
        15
    );
}
