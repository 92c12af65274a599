//! Version order per ecosystem. OSV ranges are only meaningful in the ecosystem's own scheme:
//! `1.10` > `1.9` in all of them, but `1.0rc1` < `1.0` only in PEP 440, `1:0.9` > `2.0` only for
//! Debian, and `1.2_rc1-r0` < `1.2-r0` only for Alpine.

use std::cmp::Ordering;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// crates.io and npm (a leading `v` or `=` tolerated).
    Semver,
    /// Go modules: semver with a `v` prefix; pseudo-versions (`v0.0.0-20191109021931-daa7c04131f5`)
    /// are semver pre-releases and order by their timestamp; `+incompatible` is ignored.
    Go,
    Pep440,
    Debian,
    Alpine,
}

impl Scheme {
    /// The scheme of an OSV ecosystem (`crates.io`, `PyPI`, `Debian:12`, `Alpine:v3.19`…).
    pub fn of(ecosystem: &str) -> Option<Self> {
        match ecosystem.split(':').next().unwrap_or_default() {
            "crates.io" | "npm" => Some(Self::Semver),
            "Go" => Some(Self::Go),
            "PyPI" => Some(Self::Pep440),
            "Debian" | "Ubuntu" => Some(Self::Debian),
            "Alpine" => Some(Self::Alpine),
            _ => None,
        }
    }

    /// `None` when either side is not a version of this scheme (the range is then skipped, never
    /// guessed).
    pub fn compare(self, a: &str, b: &str) -> Option<Ordering> {
        match self {
            Self::Semver | Self::Go => {
                let a = parse_semver(a)?;
                let b = parse_semver(b)?;
                Some(a.cmp_precedence(&b))
            }
            Self::Pep440 => {
                let a = pep440_rs::Version::from_str(a).ok()?;
                let b = pep440_rs::Version::from_str(b).ok()?;
                Some(a.cmp(&b))
            }
            Self::Debian => {
                let a = debversion::Version::from_str(a).ok()?;
                let b = debversion::Version::from_str(b).ok()?;
                Some(a.cmp(&b))
            }
            Self::Alpine => Some(AlpineVersion::parse(a)?.cmp(&AlpineVersion::parse(b)?)),
        }
    }
}

fn parse_semver(text: &str) -> Option<semver::Version> {
    let text = text.trim().trim_start_matches('=').trim_start_matches('v');
    semver::Version::parse(text).ok()
}

/// An apk version: `1.2.3a_rc1_p2-r4`. No maintained Rust crate implements apk-tools' order, so
/// this follows `apk_version_compare` for the forms Alpine's packages use: dotted numbers, an
/// optional letter, `_suffix[N]`s (`alpha` < `beta` < `pre` < `rc` < none < `cvs` < `svn` < `git`
/// < `hg` < `p`) and the `-rN` package revision.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct AlpineVersion {
    numbers: Vec<u64>,
    letter: Option<u8>,
    suffixes: Vec<(i8, u64)>,
    revision: u64,
}

impl AlpineVersion {
    fn parse(text: &str) -> Option<Self> {
        let (base, revision) = match text.rsplit_once("-r") {
            Some((base, revision)) => (base, revision.parse().ok()?),
            None => (text, 0),
        };
        let mut parts = base.split('_');
        let main = parts.next()?;
        let (main, letter) = match main.as_bytes().last() {
            Some(c) if c.is_ascii_lowercase() => (&main[..main.len() - 1], Some(*c)),
            _ => (main, None),
        };
        let numbers = main.split('.').map(|n| n.parse().ok()).collect::<Option<Vec<u64>>>()?;
        let mut suffixes = parts.map(Self::suffix).collect::<Option<Vec<_>>>()?;
        // "No suffix" sorts between the pre-releases and the post-releases.
        suffixes.push((0, 0));
        Some(Self {
            numbers,
            letter,
            suffixes,
            revision,
        })
    }

    fn suffix(text: &str) -> Option<(i8, u64)> {
        const ORDER: &[(&str, i8)] = &[
            ("alpha", -4),
            ("beta", -3),
            ("pre", -2),
            ("rc", -1),
            ("cvs", 1),
            ("svn", 2),
            ("git", 3),
            ("hg", 4),
            ("p", 5),
        ];
        let digits = text.find(|c: char| c.is_ascii_digit()).unwrap_or(text.len());
        let rank = ORDER.iter().find(|(name, _)| *name == &text[..digits])?.1;
        let number = if digits == text.len() {
            0
        } else {
            text[digits..].parse().ok()?
        };
        Some((rank, number))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    fn cmp(ecosystem: &str, a: &str, b: &str) -> Option<Ordering> {
        Scheme::of(ecosystem).and_then(|s| s.compare(a, b))
    }

    #[test]
    fn each_scheme_orders_its_own_way() {
        let cases = [
            ("crates.io", "1.10.0", "1.9.9", Greater),
            ("npm", "1.0.0-rc.1", "1.0.0", Less),
            ("npm", "v2.0.0", "2.0.0", Equal),
            (
                "Go",
                "v0.0.0-20191109021931-daa7c04131f5",
                "v0.0.0-20200101000000-aaaaaaaaaaaa",
                Less,
            ),
            ("Go", "v0.0.0-20191109021931-daa7c04131f5", "v0.1.0", Less),
            ("Go", "v2.0.0+incompatible", "v2.0.0", Equal),
            ("PyPI", "1.0rc1", "1.0", Less),
            ("PyPI", "1.0.post1", "1.0", Greater),
            ("PyPI", "2.0", "2.0.0", Equal),
            ("PyPI", "1!0.5", "2.0", Greater),
            ("Debian:12", "1:0.9-1", "2.0-1", Greater),
            ("Debian:12", "1.2~rc1-1", "1.2-1", Less),
            ("Debian:12", "2.36-9+deb12u4", "2.36-9+deb12u10", Less),
            ("Alpine:v3.19", "1.2_rc1-r0", "1.2-r0", Less),
            ("Alpine:v3.19", "1.2_p1-r0", "1.2-r0", Greater),
            ("Alpine:v3.19", "3.1.4-r5", "3.1.4-r10", Less),
            ("Alpine:v3.19", "1.2a-r0", "1.2-r0", Greater),
            ("Alpine:v3.19", "1.10-r0", "1.9-r3", Greater),
        ];
        for (ecosystem, a, b, expected) in cases {
            assert_eq!(cmp(ecosystem, a, b), Some(expected), "{ecosystem}: {a} vs {b}");
        }
    }

    #[test]
    fn unparsable_versions_compare_as_unknown() {
        assert_eq!(cmp("crates.io", "not-a-version", "1.0.0"), None);
        assert_eq!(cmp("Unknown", "1", "2"), None);
    }
}
