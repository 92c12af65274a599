//! Every fuzz target's corpus (fuzz/corpus/TARGET, grown by `cargo +nightly fuzz run`) replayed on
//! stable through the same property checks the targets call, so a crash found once stays fixed.

use std::path::Path;

/// A fuzz target's property check: panics when the property breaks.
type Check = fn(&[u8]);

const TARGETS: [(&str, Check); 14] = [
    ("framing", palisade_gateway::framing::fuzz_check),
    ("normalize", palisade_gateway::pipeline::normalize::fuzz_check),
    ("config", palisade_core::fuzzing::config),
    ("spiffe", palisade_core::fuzzing::spiffe),
    ("cidr", palisade_core::fuzzing::cidr),
    ("jwt", palisade_auth::jwt::fuzz_check),
    ("dockerfile", palisade_scan::fuzzing::dockerfile),
    ("version_order", palisade_scan::fuzzing::version_order),
    ("scan_yaml", palisade_scan::fuzzing::scan_yaml),
    ("image_tar", palisade_scan::fuzzing::image_tar),
    ("installed", palisade_scan::fuzzing::installed),
    ("inject", palisade_kubernetes::fuzzing::inject),
    ("admission_review", palisade_kubernetes::fuzzing::admission_review),
    ("runtime_alert", palisade_detect::runtime::fuzz_check),
];

#[test]
fn every_fuzz_corpus_replays_without_a_failure() {
    let corpora = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    for (target, check) in TARGETS {
        let dir = corpora.join(target);
        let mut inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("readable").path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "{target}: an empty corpus checks nothing");
        for input in inputs {
            let data = std::fs::read(&input).expect("readable");
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(
                outcome.is_ok(),
                "{target}: {} fails its property check",
                input.display()
            );
        }
    }
}

#[test]
fn every_fuzz_target_has_a_corpus_and_a_replay() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/fuzz_targets");
    let mut targets: Vec<String> = std::fs::read_dir(&root)
        .expect("fuzz/fuzz_targets")
        .map(|entry| entry.expect("readable").path())
        .filter_map(|path| Some(path.file_stem()?.to_str()?.to_string()))
        .collect();
    targets.sort();
    let mut replayed: Vec<String> = TARGETS.iter().map(|(name, _)| name.to_string()).collect();
    replayed.sort();
    assert_eq!(
        targets, replayed,
        "each target under fuzz/fuzz_targets is replayed here"
    );
}
