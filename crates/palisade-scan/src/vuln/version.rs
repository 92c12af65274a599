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
    /// Gem::Version: dotted segments, a letter segment makes a pre-release.
    RubyGems,
    /// Maven's ComparableVersion, for the forms artifacts use (below).
    Maven,
    /// Composer's order (PHP's version_compare on normalized versions).
    Packagist,
    /// rpm's order of `[epoch:]version-release`.
    Rpm,
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
            "RubyGems" => Some(Self::RubyGems),
            "Maven" => Some(Self::Maven),
            "Packagist" => Some(Self::Packagist),
            "Red Hat" | "Rocky Linux" | "AlmaLinux" | "Fedora" | "Amazon Linux" | "openSUSE" | "SUSE" => {
                Some(Self::Rpm)
            }
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
            Self::RubyGems => Some(gem_segments(a)?.compare(&gem_segments(b)?)),
            Self::Maven => Some(compare_items(&maven_items(a)?, &maven_items(b)?, maven_padding)),
            Self::Packagist => Some(compare_items(
                &composer_items(a)?,
                &composer_items(b)?,
                composer_padding,
            )),
            Self::Rpm => super::rpm::compare(a, b),
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

/// Numbers and words of a version, split at `.`, `-`, `_`, `+` and between digits and letters.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Number(u64),
    Word(String),
}

fn items(text: &str) -> Option<Vec<Item>> {
    let mut out = Vec::new();
    let mut current = String::new();
    let flush = |current: &mut String, out: &mut Vec<Item>| -> Option<()> {
        if !current.is_empty() {
            let item = if current.bytes().all(|b| b.is_ascii_digit()) {
                Item::Number(current.parse().ok()?)
            } else {
                Item::Word(current.to_ascii_lowercase())
            };
            out.push(item);
            current.clear();
        }
        Some(())
    };
    for c in text.trim().chars() {
        if matches!(c, '.' | '-' | '_' | '+') {
            flush(&mut current, &mut out)?;
            continue;
        }
        if !c.is_ascii_alphanumeric() {
            return None;
        }
        let switches = current
            .chars()
            .last()
            .is_some_and(|last| last.is_ascii_digit() != c.is_ascii_digit());
        if switches {
            flush(&mut current, &mut out)?;
        }
        current.push(c);
    }
    flush(&mut current, &mut out)?;
    (!out.is_empty()).then_some(out)
}

/// Item by item; the shorter list is padded with what `padding` says an absent item compares as.
fn compare_items(a: &[Item], b: &[Item], padding: fn(&Item) -> Ordering) -> Ordering {
    for i in 0..a.len().max(b.len()) {
        let order = match (a.get(i), b.get(i)) {
            (Some(x), Some(y)) => match (x, y) {
                (Item::Number(x), Item::Number(y)) => x.cmp(y),
                (Item::Number(_), Item::Word(_)) => Ordering::Greater,
                (Item::Word(_), Item::Number(_)) => Ordering::Less,
                (Item::Word(x), Item::Word(y)) => qualifier_rank(x).cmp(&qualifier_rank(y)).then_with(|| x.cmp(y)),
            },
            (Some(x), None) => padding(x),
            (None, Some(y)) => padding(y).reverse(),
            (None, None) => Ordering::Equal,
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    Ordering::Equal
}

/// Pre-release qualifiers before a release, then the release's own names, then post-releases;
/// unknown words after them all (Maven) in text order.
fn qualifier_rank(word: &str) -> i8 {
    match word {
        "dev" => -6,
        "alpha" | "a" => -5,
        "beta" | "b" => -4,
        "milestone" | "m" => -3,
        "rc" | "cr" => -2,
        "snapshot" => -1,
        "" | "ga" | "final" | "release" | "stable" => 0,
        "sp" | "pl" | "p" | "patch" => 1,
        _ => 2,
    }
}

/// `1.0` = `1.0.0` = `1-ga`; `1.0-alpha1` < `1.0-beta` < `1.0-rc1` < `1.0-SNAPSHOT` < `1.0` <
/// `1.0-sp1`; numbers after words. Maven nests lists at `-`; that is not modelled (the forms
/// published artifacts use compare the same either way).
fn maven_items(text: &str) -> Option<Vec<Item>> {
    Some(normalized(items(text)?))
}

/// Maven's normalization, which also keeps the item order total: zeros at the end or right before
/// a word say nothing (`1.0-alpha` = `1-alpha`, `1.0.0` = `1`), and neither do release words at the
/// end (`1.0.Final` = `1`). Without it `1` = `1.0` but `1.0` > `1-h` > `1` (a number outranks a
/// word, an absent item does not): found by the `version_order` fuzz target.
fn normalized(mut items: Vec<Item>) -> Vec<Item> {
    loop {
        let before = items.len();
        while let Some(last) = items.last() {
            match last {
                Item::Number(0) => {}
                Item::Word(word) if qualifier_rank(word) == 0 => {}
                _ => break,
            }
            items.pop();
        }
        let mut i = 0;
        while i + 1 < items.len() {
            if items[i] == Item::Number(0) && matches!(items[i + 1], Item::Word(_)) {
                items.remove(i);
            } else {
                i += 1;
            }
        }
        if items.len() == before {
            return items;
        }
    }
}

fn maven_padding(item: &Item) -> Ordering {
    match item {
        Item::Number(n) => n.cmp(&0),
        Item::Word(word) => qualifier_rank(word).cmp(&0),
    }
}

/// Composer normalizes to four numbers (`v1.2` → `1.2.0.0`) and orders `dev` < `alpha` < `beta`
/// < `RC` < stable < `patch`/`pl`/`p`.
fn composer_items(text: &str) -> Option<Vec<Item>> {
    let text = text.trim();
    let text = text
        .strip_prefix('v')
        .or_else(|| text.strip_prefix('V'))
        .unwrap_or(text);
    // Composer pads to four numbers; dropping the zeros instead compares the same (see normalized).
    Some(normalized(items(text)?))
}

fn composer_padding(item: &Item) -> Ordering {
    maven_padding(item)
}

/// Gem::Version's canonical segments: numbers until the first letter segment (the pre-release
/// part), trailing zeros of each part dropped.
#[derive(Debug)]
struct GemVersion(Vec<Item>);

fn gem_segments(text: &str) -> Option<GemVersion> {
    let text = text.trim();
    if text.is_empty() || !text.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-') {
        return None;
    }
    // RubyGems reads `-` as `.pre.`.
    let mut segments = items(&text.replace('-', ".pre."))?;
    let first_word = segments
        .iter()
        .position(|s| matches!(s, Item::Word(_)))
        .unwrap_or(segments.len());
    let mut release: Vec<Item> = segments.drain(..first_word).collect();
    while release.len() > 1 && release.last() == Some(&Item::Number(0)) {
        release.pop();
    }
    while segments.last() == Some(&Item::Number(0)) {
        segments.pop();
    }
    release.extend(segments);
    Some(GemVersion(release))
}

impl GemVersion {
    fn compare(&self, other: &Self) -> Ordering {
        let zero = Item::Number(0);
        for i in 0..self.0.len().max(other.0.len()) {
            let (a, b) = (self.0.get(i).unwrap_or(&zero), other.0.get(i).unwrap_or(&zero));
            let order = match (a, b) {
                (Item::Number(x), Item::Number(y)) => x.cmp(y),
                (Item::Word(_), Item::Number(_)) => Ordering::Less,
                (Item::Number(_), Item::Word(_)) => Ordering::Greater,
                (Item::Word(x), Item::Word(y)) => x.cmp(y),
            };
            if order != Ordering::Equal {
                return order;
            }
        }
        Ordering::Equal
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
            ("RubyGems", "1.0.0", "1", Equal),
            ("RubyGems", "1.0.a1", "1.0", Less),
            ("RubyGems", "1.0.0.pre", "1.0.0", Less),
            ("RubyGems", "1.0.b1", "1.0.a2", Greater),
            ("RubyGems", "1.0-rc1", "1.0", Less),
            ("RubyGems", "2.2.10", "2.2.9", Greater),
            ("RubyGems", "1.0.0.rc1", "1.0.0.beta2", Greater),
            ("Maven", "1.0", "1.0.0", Equal),
            ("Maven", "1.0-ga", "1", Equal),
            ("Maven", "1.0.Final", "1.0", Equal),
            ("Maven", "1.0-alpha1", "1.0-beta", Less),
            ("Maven", "1.0-rc1", "1.0-SNAPSHOT", Less),
            ("Maven", "1.0-SNAPSHOT", "1.0", Less),
            ("Maven", "1.0-sp1", "1.0", Greater),
            ("Maven", "2.14.1", "2.15.0", Less),
            ("Maven", "2.17.1", "2.3.2", Greater),
            ("Maven", "1.0.1", "1.0-rc", Greater),
            ("Maven", "5.3.18.RELEASE", "5.3.18", Equal),
            ("Packagist", "v1.2", "1.2.0.0", Equal),
            ("Packagist", "1.0.0-RC1", "1.0.0", Less),
            ("Packagist", "1.0.0-beta2", "1.0.0-alpha3", Greater),
            ("Packagist", "1.0.0-dev", "1.0.0-alpha1", Less),
            ("Packagist", "1.0.0-patch1", "1.0.0", Greater),
            ("Packagist", "7.4.10", "7.4.9", Greater),
            ("Rocky Linux:9", "1:3.0.7-24.el9", "3.0.8-1.el9", Greater),
            (
                "Red Hat:enterprise_linux:9",
                "7.76.1-26.el9_3.2",
                "7.76.1-26.el9",
                Greater,
            ),
            ("AlmaLinux:9", "1.0~rc1-1", "1.0-1", Less),
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
