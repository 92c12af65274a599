//! SPIFFE IDs (`spiffe://trust-domain/path`) and the patterns that name allowed callers.
//!
//! The parser follows the SPIFFE ID specification strictly: a lower-case trust domain of letters,
//! digits, `.`, `-` and `_`; a path of non-empty segments other than `.` and `..` made of letters,
//! digits, `.`, `-` and `_`; no port, user info, query or fragment. Being strict matters because the
//! ID is compared as a string when deciding who may call: two spellings of one identity must not exist.

use std::fmt;
use std::str::FromStr;

const SCHEME: &str = "spiffe://";
/// The specification's limit for the whole ID (as carried in a URI SAN).
const MAX_LENGTH: usize = 2048;
const MAX_TRUST_DOMAIN: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    #[error("a SPIFFE ID starts with spiffe://")]
    Scheme,
    #[error("a SPIFFE ID is at most {MAX_LENGTH} bytes")]
    TooLong,
    #[error("the trust domain is empty")]
    EmptyTrustDomain,
    #[error("the trust domain may hold only lower-case letters, digits, '.', '-' and '_' (at most 255)")]
    TrustDomainCharacters,
    #[error("path segments may hold only letters, digits, '.', '-' and '_'")]
    PathCharacters,
    #[error("path segments may not be empty, '.' or '..'")]
    PathSegment,
}

/// A valid SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    text: String,
    /// Length of `spiffe://` plus the trust domain: where the path starts.
    path_start: usize,
}

impl SpiffeId {
    pub fn parse(text: &str) -> Result<Self, SpiffeIdError> {
        if text.len() > MAX_LENGTH {
            return Err(SpiffeIdError::TooLong);
        }
        let rest = text.strip_prefix(SCHEME).ok_or(SpiffeIdError::Scheme)?;
        let (domain, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, ""),
        };
        check_trust_domain(domain)?;
        if !path.is_empty() {
            check_path(path)?;
        }
        Ok(Self {
            text: text.to_string(),
            path_start: SCHEME.len() + domain.len(),
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.text[SCHEME.len()..self.path_start]
    }

    pub fn path(&self) -> &str {
        &self.text[self.path_start..]
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

/// Checks a trust domain name as the specification requires.
pub fn check_trust_domain(domain: &str) -> Result<(), SpiffeIdError> {
    if domain.is_empty() {
        return Err(SpiffeIdError::EmptyTrustDomain);
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_');
    if domain.len() > MAX_TRUST_DOMAIN || !domain.chars().all(allowed) {
        return Err(SpiffeIdError::TrustDomainCharacters);
    }
    Ok(())
}

fn check_path(path: &str) -> Result<(), SpiffeIdError> {
    // `path` starts with '/', so the first split item is the empty text before it.
    for segment in path.split('/').skip(1) {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(SpiffeIdError::PathSegment);
        }
        if !segment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            return Err(SpiffeIdError::PathCharacters);
        }
    }
    Ok(())
}

/// Which callers a rule names: one exact SPIFFE ID, or every ID below a path (`spiffe://td/ns/shop/*`,
/// which matches `spiffe://td/ns/shop/sa/orders` but neither `spiffe://td/ns/shop` nor
/// `spiffe://td/ns/shopping/x`), or a whole trust domain (`spiffe://td/*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpiffePattern {
    Exact(SpiffeId),
    /// The ID's text up to and including the final `/` before `*`.
    Below(String),
}

impl SpiffePattern {
    pub fn parse(text: &str) -> Result<Self, SpiffeIdError> {
        match text.strip_suffix("/*") {
            Some(base) => {
                let base = SpiffeId::parse(base)?;
                Ok(Self::Below(format!("{base}/")))
            }
            None => SpiffeId::parse(text).map(Self::Exact),
        }
    }

    pub fn matches(&self, id: &str) -> bool {
        match self {
            Self::Exact(exact) => exact.as_str() == id,
            Self::Below(prefix) => id.len() > prefix.len() && id.starts_with(prefix.as_str()),
        }
    }

    pub fn trust_domain(&self) -> &str {
        let text = match self {
            Self::Exact(id) => id.as_str(),
            Self::Below(prefix) => prefix.as_str(),
        };
        let rest = &text[SCHEME.len()..];
        rest.split('/').next().unwrap_or(rest)
    }
}

impl fmt::Display for SpiffePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(id) => write!(f, "{id}"),
            Self::Below(prefix) => write!(f, "{prefix}*"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ids_split_into_trust_domain_and_path() {
        let id = SpiffeId::parse("spiffe://example.org/ns/shop/sa/orders").unwrap();
        assert_eq!(id.trust_domain(), "example.org");
        assert_eq!(id.path(), "/ns/shop/sa/orders");
        let domain = SpiffeId::parse("spiffe://example.org").unwrap();
        assert_eq!(domain.path(), "");
    }

    #[test]
    fn every_second_spelling_of_an_id_is_refused() {
        for (text, expected) in [
            ("http://example.org/a", SpiffeIdError::Scheme),
            ("SPIFFE://example.org/a", SpiffeIdError::Scheme),
            ("spiffe:///a", SpiffeIdError::EmptyTrustDomain),
            ("spiffe://Example.org/a", SpiffeIdError::TrustDomainCharacters),
            ("spiffe://example.org:443/a", SpiffeIdError::TrustDomainCharacters),
            ("spiffe://user@example.org/a", SpiffeIdError::TrustDomainCharacters),
            ("spiffe://example.org/", SpiffeIdError::PathSegment),
            ("spiffe://example.org/a//b", SpiffeIdError::PathSegment),
            ("spiffe://example.org/a/../b", SpiffeIdError::PathSegment),
            ("spiffe://example.org/a/./b", SpiffeIdError::PathSegment),
            ("spiffe://example.org/a?x=1", SpiffeIdError::PathCharacters),
            ("spiffe://example.org/a#f", SpiffeIdError::PathCharacters),
            ("spiffe://example.org/%61", SpiffeIdError::PathCharacters),
        ] {
            assert_eq!(SpiffeId::parse(text), Err(expected), "{text}");
        }
        let long = format!("spiffe://example.org/{}", "a".repeat(MAX_LENGTH));
        assert_eq!(SpiffeId::parse(&long), Err(SpiffeIdError::TooLong));
    }

    #[test]
    fn patterns_match_below_a_path_on_segment_boundaries() {
        let shop = SpiffePattern::parse("spiffe://example.org/ns/shop/*").unwrap();
        assert!(shop.matches("spiffe://example.org/ns/shop/sa/orders"));
        assert!(!shop.matches("spiffe://example.org/ns/shop"));
        assert!(!shop.matches("spiffe://example.org/ns/shop/"));
        assert!(!shop.matches("spiffe://example.org/ns/shopping/sa/x"));
        assert!(!shop.matches("spiffe://other.org/ns/shop/sa/orders"));
        assert_eq!(shop.trust_domain(), "example.org");
        let domain = SpiffePattern::parse("spiffe://example.org/*").unwrap();
        assert!(domain.matches("spiffe://example.org/anything"));
        assert!(!domain.matches("spiffe://example.org.evil/anything"));
        let exact = SpiffePattern::parse("spiffe://example.org/ns/shop/sa/orders").unwrap();
        assert!(exact.matches("spiffe://example.org/ns/shop/sa/orders"));
        assert!(!exact.matches("spiffe://example.org/ns/shop/sa/orders/x"));
        assert!(SpiffePattern::parse("spiffe://example.org/ns/*/sa/x").is_err());
        assert_eq!(shop.to_string(), "spiffe://example.org/ns/shop/*");
    }
}
