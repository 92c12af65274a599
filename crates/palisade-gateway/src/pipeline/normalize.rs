//! Stage normalize: turn the request path into the one canonical form that is routed, authorized
//! and sent upstream, so that no spelling of a path reaches a service as something other than what
//! the gateway decided on.
//!
//! - percent-encoded unreserved characters are decoded (`/%61dmin` → `/admin`); other escapes are kept
//!   with upper-case hex, so decoding never happens twice (`%252e` stays `%252E`);
//! - `.` and `..` segments are resolved, `//` is merged;
//! - encoded `/`, `\` and NUL, raw `\`, control or non-ASCII bytes, and paths that climb above the root
//!   are refused;
//! - `;` (raw or `%3B`) is refused unless `limits.allow_path_parameters` (see [`routed_path`]).

/// Why a path was refused; the reason code for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    NotAbsolute,
    BadEscape,
    EncodedSeparator,
    EncodedNul,
    Backslash,
    BadByte,
    EscapesRoot,
    Parameter,
}

impl PathError {
    pub fn reason(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "path_not_absolute",
            PathError::BadEscape => "path_bad_escape",
            PathError::EncodedSeparator => "path_encoded_separator",
            PathError::EncodedNul => "path_encoded_nul",
            PathError::Backslash => "path_backslash",
            PathError::BadByte => "path_bad_byte",
            PathError::EscapesRoot => "path_escapes_root",
            PathError::Parameter => "path_parameter",
        }
    }
}

/// Refuses a normalized path with a `;` in it, raw or encoded, unless path parameters are allowed.
/// Servlet containers (Tomcat, Spring) cut `;…` from each segment before they match it, so
/// `/admin;x=1` is one path to the router (not `/admin`, not under the `/admin` prefix) and `/admin`
/// to such an upstream: a route protecting `/admin` would be passed by. Spring Security's firewall
/// refuses these for the same reason.
/// Checked on the raw path, before normalization: a `;` in a segment that `..` then removes
/// (`/public/;/../admin`) is gone from the normalized path, but a servlet container that strips
/// `;…` first resolves the same bytes to another path than the router did.
fn check_parameters(raw: &str, allowed: bool) -> Result<(), PathError> {
    let bytes = raw.as_bytes();
    let escaped =
        || memchr::memchr_iter(b'%', bytes).any(|at| matches!(bytes.get(at + 1..at + 3), Some([b'3', b'b' | b'B'])));
    if !allowed && (memchr::memchr(b';', bytes).is_some() || escaped()) {
        return Err(PathError::Parameter);
    }
    Ok(())
}

/// The path a request is routed by: normalized, and without path parameters unless they are allowed.
pub fn routed_path(raw: &str, allow_parameters: bool) -> Result<String, PathError> {
    check_parameters(raw, allow_parameters)?;
    normalize_path(raw)
}

/// Returns the normalized path (always starting with `/`).
pub fn normalize_path(raw: &str) -> Result<String, PathError> {
    if is_canonical(raw) {
        return Ok(raw.to_owned());
    }
    resolve(raw)
}

/// Most request paths are already canonical: absolute, printable ASCII without escapes or
/// backslashes, and no empty (but the last), `.` or `..` segment. Recognising that takes one pass
/// and no allocation per segment; anything else goes through [`resolve`].
fn is_canonical(raw: &str) -> bool {
    let Some(rest) = raw.strip_prefix('/') else {
        return false;
    };
    if !rest
        .bytes()
        .all(|byte| matches!(byte, 0x21..=0x7e) && byte != b'%' && byte != b'\\')
    {
        return false;
    }
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if matches!(segment, "." | "..") || (segment.is_empty() && !last) {
            return false;
        }
    }
    true
}

fn resolve(raw: &str) -> Result<String, PathError> {
    let Some(rest) = raw.strip_prefix('/') else {
        return Err(PathError::NotAbsolute);
    };
    let mut segments: Vec<String> = Vec::new();
    let mut trailing_slash = false;
    for raw_segment in rest.split('/') {
        let segment = decode_segment(raw_segment)?;
        trailing_slash = false;
        match segment.as_str() {
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::EscapesRoot);
                }
                trailing_slash = true;
            }
            _ => segments.push(segment),
        }
    }
    let mut path = String::with_capacity(raw.len());
    for segment in &segments {
        path.push('/');
        path.push_str(segment);
    }
    if trailing_slash || segments.is_empty() {
        path.push('/');
    }
    Ok(path)
}

fn decode_segment(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'%' {
            let high = bytes.get(i + 1).and_then(|b| hex_value(*b));
            let low = bytes.get(i + 2).and_then(|b| hex_value(*b));
            let (Some(high), Some(low)) = (high, low) else {
                return Err(PathError::BadEscape);
            };
            let decoded = high << 4 | low;
            match decoded {
                b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                0 => return Err(PathError::EncodedNul),
                _ if is_unreserved(decoded) => out.push(char::from(decoded)),
                _ => {
                    out.push('%');
                    out.push(char::from(HEX_UPPER[usize::from(high)]));
                    out.push(char::from(HEX_UPPER[usize::from(low)]));
                }
            }
            i += 3;
            continue;
        }
        match byte {
            b'\\' => return Err(PathError::Backslash),
            0x21..=0x7e => out.push(char::from(byte)),
            _ => return Err(PathError::BadByte),
        }
        i += 1;
    }
    Ok(out)
}

const HEX_UPPER: [u8; 16] = *b"0123456789ABCDEF";

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// The fuzz target `normalize` (and the replay of its corpus in `cargo test`): whatever path it is
/// given, a normalized path starts with `/`, has no `.` or `..` segment and no empty one but the
/// last, normalizing it again changes nothing, and the routed path (parameters refused) agrees.
#[doc(hidden)]
pub fn fuzz_check(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(path) = normalize_path(raw) else {
        return;
    };
    assert!(path.starts_with('/'), "{raw:?} -> {path:?}");
    let segments: Vec<&str> = path[1..].split('/').collect();
    for (index, segment) in segments.iter().enumerate() {
        assert!(!matches!(*segment, "." | ".."), "{raw:?} -> {path:?}");
        assert!(
            !segment.is_empty() || index + 1 == segments.len(),
            "{raw:?} -> {path:?}"
        );
    }
    assert_eq!(
        normalize_path(&path).as_deref(),
        Ok(path.as_str()),
        "not idempotent for {raw:?}"
    );
    match routed_path(raw, false) {
        Ok(routed) => assert_eq!(routed, path, "{raw:?}"),
        Err(error) => assert_eq!(error, PathError::Parameter, "{raw:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canonical_fast_path_agrees_with_full_resolution() {
        let pieces = [
            "",
            "a",
            ".",
            "..",
            "%61",
            "%2F",
            "b.c",
            "~x",
            "\\",
            "é",
            "a b",
            "%",
            ":@!$&'()*+,;=",
        ];
        let mut checked = 0;
        for first in pieces {
            for second in pieces {
                for third in pieces {
                    let raw = format!("/{first}/{second}/{third}");
                    if is_canonical(&raw) {
                        assert_eq!(resolve(&raw).as_deref(), Ok(raw.as_str()), "{raw}");
                        checked += 1;
                    }
                    assert_eq!(normalize_path(&raw), resolve(&raw), "{raw}");
                }
            }
        }
        for raw in ["/", "/a/", "/a", "//", "/.", "/..", "/a/.", "/a/..", "a", ""] {
            assert_eq!(normalize_path(raw), resolve(raw), "{raw}");
        }
        assert!(checked >= 80, "the fast path took only {checked} paths");
    }

    #[test]
    fn spellings_of_one_path_normalize_to_it() {
        for raw in [
            "/admin",
            "//admin",
            "/x/../admin",
            "/%61dmin",
            "/./admin",
            "/a/b/../../admin",
            "/%2e/admin",
            "/x/%2E%2E/admin",
        ] {
            assert_eq!(normalize_path(raw).as_deref(), Ok("/admin"), "{raw}");
        }
    }

    #[test]
    fn trailing_slashes_and_root_are_kept() {
        assert_eq!(normalize_path("/").as_deref(), Ok("/"));
        assert_eq!(normalize_path("/admin/").as_deref(), Ok("/admin/"));
        assert_eq!(normalize_path("/a/b/..").as_deref(), Ok("/a/"));
        assert_eq!(normalize_path("/a/.").as_deref(), Ok("/a/"));
        assert_eq!(normalize_path("/a/..").as_deref(), Ok("/"));
    }

    #[test]
    fn reserved_escapes_are_kept_and_never_double_decoded() {
        assert_eq!(normalize_path("/a%20b").as_deref(), Ok("/a%20b"));
        assert_eq!(normalize_path("/q%3fx").as_deref(), Ok("/q%3Fx"));
        assert_eq!(normalize_path("/%252e%252e/admin").as_deref(), Ok("/%252e%252e/admin"));
    }

    #[test]
    fn dangerous_paths_are_refused() {
        let cases = [
            ("admin", PathError::NotAbsolute),
            ("*", PathError::NotAbsolute),
            ("/a%2fb", PathError::EncodedSeparator),
            ("/a%2Fb", PathError::EncodedSeparator),
            ("/a%5cb", PathError::EncodedSeparator),
            ("/a%00", PathError::EncodedNul),
            ("/a\\b", PathError::Backslash),
            ("/%zz", PathError::BadEscape),
            ("/%2", PathError::BadEscape),
            ("/..", PathError::EscapesRoot),
            ("/a/../..", PathError::EscapesRoot),
            ("/%2e%2e/etc/passwd", PathError::EscapesRoot),
            ("/a b", PathError::BadByte),
            ("/caf\u{e9}", PathError::BadByte),
        ];
        for (raw, expected) in cases {
            assert_eq!(normalize_path(raw), Err(expected), "{raw}");
        }
    }

    #[test]
    fn path_parameters_are_refused_unless_allowed() {
        for raw in [
            "/admin;x=1",
            "/admin;",
            "/a;b/c",
            "/admin%3bx",
            "/admin%3Bx",
            "/%61dmin;jsessionid=1",
            // Gone from the normalized path, but not from what a servlet container resolves.
            "/public/;/../admin",
            "/public/%3b/../admin",
            "/public/x;y/../../admin",
        ] {
            assert_eq!(routed_path(raw, false), Err(PathError::Parameter), "{raw}");
            assert!(routed_path(raw, true).is_ok(), "{raw}");
        }
        for raw in ["/admin", "/a/%3A/b", "/a/%253B"] {
            assert!(routed_path(raw, false).is_ok(), "{raw}");
        }
    }
}
