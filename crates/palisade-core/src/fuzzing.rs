//! The properties the fuzz targets under `fuzz/` check on arbitrary input, here so that `cargo test`
//! replays the checked-in corpora with the same code on stable (`tests/fuzz_corpora.rs`). Each
//! function panics when a property breaks.

use crate::spiffe::{SpiffeId, SpiffePattern};

/// `config`: loading any text never panics, and a config that loads is valid again when loaded again
/// from the same text (loading is a function of the text).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let first = crate::parse_str("fuzz.yaml", text, None).map(|_| ());
    let second = crate::parse_str("fuzz.yaml", text, None).map(|_| ());
    assert_eq!(first.is_ok(), second.is_ok(), "loading is deterministic");
}

/// `spiffe`: an ID that parses prints back as the same text and parses again to the same ID; its
/// trust domain passes the trust-domain check; a pattern that parses matches the ID it was made from
/// when it names no wildcard.
pub fn spiffe(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = SpiffeId::parse(text) {
        assert_eq!(id.to_string(), text, "an accepted ID is kept as written");
        assert_eq!(
            SpiffeId::parse(&id.to_string()).map(|again| again.to_string()),
            Ok(id.to_string())
        );
        assert!(crate::spiffe::check_trust_domain(id.trust_domain()).is_ok(), "{text:?}");
        if let Ok(pattern) = SpiffePattern::parse(text) {
            assert!(pattern.matches(id.as_str()), "{text:?} does not match itself");
        }
    }
    let _ = SpiffePattern::parse(text).map(|pattern| pattern.matches(text));
}

/// `cidr`: an accepted network contains its own network address, and printing it gives a network
/// that parses to the same one.
pub fn cidr(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(net) = crate::parse_cidr(text) {
        assert!(net.contains(&net.network()), "{text:?}");
        assert_eq!(crate::parse_cidr(&net.to_string()), Some(net), "{text:?}");
    }
}
