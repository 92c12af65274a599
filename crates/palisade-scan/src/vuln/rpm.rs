//! RPM databases in images: the SQLite `rpmdb.sqlite` of RHEL 9, UBI, Rocky, Alma, Fedora 33+,
//! Amazon Linux 2023 and openSUSE (`var/lib/rpm/` or `usr/lib/sysimage/rpm/`), read from memory
//! (the database is deserialized, never written out), each package's header parsed as rpm
//! stores it; and rpm's version order (`rpmvercmp`).

use std::cmp::Ordering;

/// One installed package, as its header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpmPackage {
    pub name: String,
    pub epoch: Option<u32>,
    pub version: String,
    pub release: String,
    pub arch: Option<String>,
    /// `openssl-3.0.7-24.el9.src.rpm`.
    pub source_rpm: Option<String>,
    pub license: Option<String>,
}

impl RpmPackage {
    /// `[epoch:]version-release`, the form advisories' ranges use.
    pub fn evr(&self) -> String {
        match self.epoch {
            Some(epoch) if epoch > 0 => format!("{epoch}:{}-{}", self.version, self.release),
            _ => format!("{}-{}", self.version, self.release),
        }
    }
}

/// Where images keep the SQLite database.
pub fn is_rpmdb(path: &str) -> bool {
    matches!(path, "var/lib/rpm/rpmdb.sqlite" | "usr/lib/sysimage/rpm/rpmdb.sqlite")
}

/// Every package of an `rpmdb.sqlite` (its bytes). A database that does not open, or a header
/// that does not parse, is an error or a skipped row, never a panic.
pub fn packages(database: &[u8]) -> Result<Vec<RpmPackage>, String> {
    if !database.starts_with(b"SQLite format 3\0") {
        return Err("not an SQLite database (the Berkeley DB `Packages` of RHEL 8 and older is not read)".into());
    }
    let mut database = database.to_vec();
    // rpm keeps its database in WAL mode (header bytes 18 and 19 are 2); a database in memory
    // has no shared-memory file for a WAL, so it is read as a rollback-journal database (1),
    // which the file's pages already are.
    if database.len() >= 100 {
        for byte in &mut database[18..20] {
            if *byte == 2 {
                *byte = 1;
            }
        }
    }
    let mut connection = rusqlite::Connection::open_in_memory().map_err(|e| e.to_string())?;
    connection
        .deserialize_read_exact(rusqlite::MAIN_DB, database.as_slice(), database.len(), true)
        .map_err(|e| format!("not an SQLite database ({e})"))?;
    let mut statement = connection
        .prepare("SELECT blob FROM Packages")
        .map_err(|e| format!("no Packages table ({e})"))?;
    let rows = statement
        .query_map([], |row| row.get::<_, Vec<u8>>(0))
        .map_err(|e| e.to_string())?;
    let mut found = Vec::new();
    for row in rows {
        let blob = row.map_err(|e| e.to_string())?;
        if let Some(package) = parse_header(&blob) {
            // gpg-pubkey "packages" are keys imported into the database, not software.
            if package.name != "gpg-pubkey" {
                found.push(package);
            }
        }
    }
    Ok(found)
}

const TAG_NAME: u32 = 1000;
const TAG_VERSION: u32 = 1001;
const TAG_RELEASE: u32 = 1002;
const TAG_EPOCH: u32 = 1003;
const TAG_LICENSE: u32 = 1014;
const TAG_ARCH: u32 = 1022;
const TAG_SOURCERPM: u32 = 1044;

const TYPE_INT32: u32 = 4;
const TYPE_STRING: u32 = 6;
const TYPE_I18NSTRING: u32 = 9;

/// A header blob as the rpmdb stores it: entry count and data length (big-endian), the index
/// entries (tag, type, offset, count), then the data store.
pub fn parse_header(blob: &[u8]) -> Option<RpmPackage> {
    let word = |at: usize| -> Option<u32> { Some(u32::from_be_bytes(blob.get(at..at + 4)?.try_into().ok()?)) };
    let entries = word(0)? as usize;
    let data_length = word(4)? as usize;
    let data_start = 8usize.checked_add(entries.checked_mul(16)?)?;
    let data = blob.get(data_start..data_start.checked_add(data_length)?)?;
    let mut name = None;
    let mut version = None;
    let mut release = None;
    let mut epoch = None;
    let mut arch = None;
    let mut source_rpm = None;
    let mut license = None;
    for index in 0..entries {
        let at = 8 + index * 16;
        let (tag, kind, offset) = (word(at)?, word(at + 4)?, word(at + 8)? as usize);
        let string = || -> Option<String> {
            if kind != TYPE_STRING && kind != TYPE_I18NSTRING {
                return None;
            }
            let bytes = data.get(offset..)?;
            let end = bytes.iter().position(|&b| b == 0)?;
            Some(String::from_utf8_lossy(&bytes[..end]).into_owned())
        };
        match tag {
            TAG_NAME => name = string(),
            TAG_VERSION => version = string(),
            TAG_RELEASE => release = string(),
            TAG_ARCH => arch = string(),
            TAG_SOURCERPM => source_rpm = string(),
            TAG_LICENSE => license = string(),
            TAG_EPOCH if kind == TYPE_INT32 => {
                epoch = data
                    .get(offset..offset + 4)
                    .and_then(|b| b.try_into().ok())
                    .map(u32::from_be_bytes);
            }
            _ => {}
        }
    }
    Some(RpmPackage {
        name: name.filter(|n| !n.is_empty())?,
        epoch,
        version: version?,
        release: release?,
        arch,
        source_rpm,
        license,
    })
}

/// The OSV ecosystem of an RPM distribution's os-release (`ID`, `VERSION_ID`).
pub fn os_ecosystem(id: &str, version_id: &str) -> Option<String> {
    let major = version_id.split('.').next().unwrap_or(version_id);
    match id {
        "rhel" => Some(format!("Red Hat:enterprise_linux:{major}")),
        "rocky" => Some(format!("Rocky Linux:{major}")),
        "almalinux" => Some(format!("AlmaLinux:{major}")),
        "fedora" => Some(format!("Fedora:{major}")),
        "amzn" => Some(format!("Amazon Linux:{major}")),
        "opensuse-leap" => Some(format!("openSUSE:Leap {version_id}")),
        _ => None,
    }
}

/// rpm's order of `[epoch:]version[-release]`: epochs as numbers (absent = 0), then version and
/// release by `rpmvercmp`.
pub fn compare(a: &str, b: &str) -> Option<Ordering> {
    let split = |text: &str| -> Option<(u64, String, Option<String>)> {
        let (epoch, rest) = match text.split_once(':') {
            Some((epoch, rest)) => (epoch.parse().ok()?, rest),
            None => (0, text),
        };
        let (version, release) = match rest.rsplit_once('-') {
            Some((version, release)) => (version.to_string(), Some(release.to_string())),
            None => (rest.to_string(), None),
        };
        (!version.is_empty()).then_some((epoch, version, release))
    };
    let (ea, va, ra) = split(a)?;
    let (eb, vb, rb) = split(b)?;
    // A missing release sorts before every release: an order, not rpm's dependency wildcard (which
    // is not transitive: the version_order fuzz target found `1-g` <= `1` <= `1-d` < `1-g`).
    Some(
        ea.cmp(&eb)
            .then_with(|| rpmvercmp(&va, &vb))
            .then_with(|| match (ra, rb) {
                (Some(ra), Some(rb)) => rpmvercmp(&ra, &rb),
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Less,
                (Some(_), None) => Ordering::Greater,
            }),
    )
}

/// rpm's `rpmvercmp`: alternating runs of digits and letters compared in turn (digits as numbers,
/// a digit run newer than a letter run), other characters separate; `~` sorts before everything,
/// even the end; `^` after the end but before anything else.
pub fn rpmvercmp(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let (mut one, mut two) = (a.as_bytes(), b.as_bytes());
    loop {
        let separator = |c: &u8| !c.is_ascii_alphanumeric() && *c != b'~' && *c != b'^';
        while one.first().is_some_and(separator) {
            one = &one[1..];
        }
        while two.first().is_some_and(separator) {
            two = &two[1..];
        }
        match (one.first(), two.first()) {
            (Some(b'~'), Some(b'~')) => {
                one = &one[1..];
                two = &two[1..];
                continue;
            }
            (Some(b'~'), _) => return Ordering::Less,
            (_, Some(b'~')) => return Ordering::Greater,
            (Some(b'^'), Some(b'^')) => {
                one = &one[1..];
                two = &two[1..];
                continue;
            }
            (Some(b'^'), None) => return Ordering::Greater,
            (None, Some(b'^')) => return Ordering::Less,
            (Some(b'^'), _) => return Ordering::Less,
            (_, Some(b'^')) => return Ordering::Greater,
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            _ => {}
        }
        let numeric = one[0].is_ascii_digit();
        let take = |s: &[u8]| {
            let n = s
                .iter()
                .take_while(|c| {
                    if numeric {
                        c.is_ascii_digit()
                    } else {
                        c.is_ascii_alphabetic()
                    }
                })
                .count();
            n
        };
        let (n1, n2) = (take(one), take(two));
        let (seg1, seg2) = (&one[..n1], &two[..n2]);
        if n2 == 0 {
            // Different kinds of segment: a number is newer than letters.
            return if numeric { Ordering::Greater } else { Ordering::Less };
        }
        let order = if numeric {
            let trim = |s: &[u8]| -> usize { s.iter().take_while(|&&c| c == b'0').count() };
            let (s1, s2) = (&seg1[trim(seg1)..], &seg2[trim(seg2)..]);
            s1.len().cmp(&s2.len()).then_with(|| s1.cmp(s2))
        } else {
            seg1.cmp(seg2)
        };
        if order != Ordering::Equal {
            return order;
        }
        one = &one[n1..];
        two = &two[n2..];
    }
}

/// Writes a header blob as rpm stores one: for tests and fuzzing.
#[doc(hidden)]
pub fn encode_header(strings: &[(u32, &str)], epoch: Option<u32>) -> Vec<u8> {
    let mut index = Vec::new();
    let mut data = Vec::new();
    if let Some(epoch) = epoch {
        while data.len() % 4 != 0 {
            data.push(0);
        }
        index.push((TAG_EPOCH, TYPE_INT32, data.len() as u32));
        data.extend_from_slice(&epoch.to_be_bytes());
    }
    for (tag, text) in strings {
        index.push((*tag, TYPE_STRING, data.len() as u32));
        data.extend_from_slice(text.as_bytes());
        data.push(0);
    }
    let mut blob = Vec::new();
    blob.extend_from_slice(&(index.len() as u32).to_be_bytes());
    blob.extend_from_slice(&(data.len() as u32).to_be_bytes());
    for (tag, kind, offset) in index {
        for word in [tag, kind, offset, 1] {
            blob.extend_from_slice(&word.to_be_bytes());
        }
    }
    blob.extend_from_slice(&data);
    blob
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn rpmvercmp_as_rpm_orders() {
        // Cases from rpm's own test suite (tests/rpmvercmp.at).
        let cases = [
            ("1.0", "1.0", Equal),
            ("1.0", "2.0", Less),
            ("2.0.1", "2.0", Greater),
            ("5.5p1", "5.5p10", Less),
            ("5.5p10", "5.5p1", Greater),
            ("10xyz", "10.1xyz", Less),
            ("xyz10", "xyz10.1", Less),
            ("xyz.4", "8", Less),
            ("1.0aa", "1.0a", Greater),
            ("1.0010", "1.9", Greater),
            ("1.05", "1.5", Equal),
            ("20101121", "20101122", Less),
            ("2_0", "2.0", Equal),
            ("a", "a", Equal),
            ("a+", "a_", Equal),
            ("+", "_", Equal),
            ("1.0~rc1", "1.0", Less),
            ("1.0~rc1", "1.0~rc2", Less),
            ("1.0~rc1~git123", "1.0~rc1", Less),
            ("1.0^", "1.0", Greater),
            ("1.0^git1", "1.0.1", Less),
            ("1.0^git1", "1.0^git2", Less),
            ("1.0~rc1^git1", "1.0~rc1", Greater),
        ];
        for (a, b, expected) in cases {
            assert_eq!(rpmvercmp(a, b), expected, "{a} vs {b}");
        }
    }

    #[test]
    fn epoch_version_release() {
        assert_eq!(
            compare("1:3.0.7-24.el9", "3.0.8-1.el9"),
            Some(Greater),
            "the epoch wins"
        );
        assert_eq!(compare("3.0.7-24.el9", "3.0.7-25.el9"), Some(Less));
        assert_eq!(compare("7.76.1-26.el9_3.2", "7.76.1-26.el9"), Some(Greater));
        assert_eq!(compare("0:1.2-3", "1.2-3"), Some(Equal));
        assert_eq!(compare("x:1", "1"), None);
    }

    #[test]
    fn headers_parse_and_garbage_does_not() {
        let blob = encode_header(
            &[
                (TAG_NAME, "openssl-libs"),
                (TAG_VERSION, "3.0.7"),
                (TAG_RELEASE, "24.el9"),
                (TAG_ARCH, "x86_64"),
                (TAG_SOURCERPM, "openssl-3.0.7-24.el9.src.rpm"),
                (TAG_LICENSE, "ASL 2.0"),
            ],
            Some(1),
        );
        let package = parse_header(&blob).expect("parses");
        assert_eq!(package.evr(), "1:3.0.7-24.el9");
        assert_eq!(package.source_rpm.as_deref(), Some("openssl-3.0.7-24.el9.src.rpm"));
        for cut in [0, 4, 8, 20, blob.len() - 1] {
            let _ = parse_header(&blob[..cut]);
        }
        let mut huge = blob.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(parse_header(&huge).is_none());
        assert!(packages(b"not sqlite").is_err());
    }
}
