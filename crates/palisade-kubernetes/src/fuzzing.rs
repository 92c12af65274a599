//! Property checks for the fuzz targets (fuzz/fuzz_targets), replayed on stable by `cargo test`
//! over the checked-in corpora (crates/palisade-cli/tests/fuzz_corpora.rs).

use serde_json::Value;

use crate::inject::{inject_text, InjectOptions};
use crate::webhook::{apply_json_patch, review};

const BUNDLE: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

fn options() -> InjectOptions {
    InjectOptions::new("https://palisade-ca.palisade-system.svc:8443", "cluster.local", BUNDLE)
}

/// `inject`: any text as manifests: writing what was read gives back the same values (no value
/// changes type or content through our YAML output: `"true"`, `"0755"`, `"1e3"` stay strings),
/// injection never panics, and injecting its own output again changes nothing (idempotence).
pub fn inject(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok((format, documents)) = crate::inject::parse_documents(&text) {
        let written = crate::inject::render_documents(format, &documents).expect("what was read can be written");
        let (_, again) = crate::inject::parse_documents(&written).expect("what we write parses");
        assert_eq!(again, documents, "writing changed a value:\n{written}");
    }
    let Ok((once, _)) = inject_text(&text, &options()) else {
        return;
    };
    let (twice, reports) = inject_text(&once, &options()).expect("our own output parses");
    assert_eq!(twice, once, "injecting twice changed the output");
    assert!(
        reports.iter().all(|r| r.outcome != crate::inject::Outcome::Injected),
        "{reports:?}"
    );
}

/// `admission_review`: any bytes as an AdmissionReview: answered or refused, never a panic; an
/// answer echoes the request's uid and always allows; its patch applies to the request's object,
/// and the patched pod, reviewed again, needs no patch.
pub fn admission_review(data: &[u8]) {
    let Ok(answer) = review(data, &options()) else {
        return;
    };
    let request: Value = serde_json::from_slice(data).expect("a reviewed request is JSON");
    let response = &answer["response"];
    assert_eq!(response["uid"], request["request"]["uid"]);
    assert_eq!(response["allowed"], true);
    let Some(patch) = response.get("patch").and_then(Value::as_str) else {
        return;
    };
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .expect("the patch is base64");
    let operations: Vec<Value> = serde_json::from_slice(&bytes).expect("the patch is JSON");
    let mut pod = request["request"]["object"].clone();
    apply_json_patch(&mut pod, &operations).expect("the patch applies to the pod");
    let mut again = request.clone();
    again["request"]["object"] = pod;
    let second = review(again.to_string().as_bytes(), &options()).expect("the patched review reads");
    assert!(
        second["response"].get("patch").is_none(),
        "a patched pod was patched again"
    );
}
