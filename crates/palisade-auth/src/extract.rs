//! Finding the credential in a request: `Authorization: Bearer`, a named header or a cookie. The
//! size limit is applied here, before any decoding.

use http::header::{AUTHORIZATION, COOKIE};
use http::HeaderMap;

use palisade_core::config::auth::TokenLocation;

use crate::AuthFailure;

/// The token at `location`: `Ok(None)` when the request has none, `Err` when it has one that cannot
/// be used (ambiguous, not text, or longer than `max_bytes`).
pub fn token<'a>(
    headers: &'a HeaderMap,
    location: &TokenLocation,
    max_bytes: usize,
) -> Result<Option<&'a str>, AuthFailure> {
    let found = match location {
        TokenLocation::Bearer => bearer(headers)?,
        TokenLocation::Header(name) => single_header(headers, name.as_str())?,
        TokenLocation::Cookie(name) => cookie(headers, name)?,
    };
    match found {
        Some(token) if token.len() > max_bytes => Err(AuthFailure::TokenTooLarge),
        Some("") => Err(AuthFailure::MalformedToken),
        other => Ok(other),
    }
}

/// RFC 6750 §2.1: the scheme is case-insensitive; exactly one `Authorization` header.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, AuthFailure> {
    let Some(value) = single_header(headers, AUTHORIZATION.as_str())? else {
        return Ok(None);
    };
    let Some((scheme, token)) = value.split_once(' ') else {
        // `Bearer` with nothing after it is a broken bearer credential, not another scheme.
        return if value.eq_ignore_ascii_case("bearer") {
            Err(AuthFailure::MalformedToken)
        } else {
            Ok(None)
        };
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        // Another scheme (Basic, an API gateway's own) is not a bearer token: not ours to judge.
        return Ok(None);
    }
    Ok(Some(token.trim()))
}

/// A header that appears twice is refused: two credentials are an attempt to confuse.
pub(crate) fn single_header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, AuthFailure> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(value), None) => value
            .to_str()
            .map(|v| Some(v.trim()))
            .map_err(|_| AuthFailure::MalformedToken),
        (Some(_), Some(_)) => Err(AuthFailure::MalformedToken),
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, AuthFailure> {
    let mut found = None;
    for header in headers.get_all(COOKIE) {
        let Ok(text) = header.to_str() else { continue };
        for pair in text.split(';') {
            let Some((key, value)) = pair.trim().split_once('=') else {
                continue;
            };
            if key == name {
                if found.is_some() {
                    return Err(AuthFailure::MalformedToken);
                }
                found = Some(value.trim_matches('"'));
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_other_schemes_are_not_tokens() {
        let bearer = headers(&[("authorization", "bEaReR abc.def.ghi")]);
        assert_eq!(token(&bearer, &TokenLocation::Bearer, 100), Ok(Some("abc.def.ghi")));
        let basic = headers(&[("authorization", "Basic dXNlcjpwYXNz")]);
        assert_eq!(token(&basic, &TokenLocation::Bearer, 100), Ok(None));
        assert_eq!(token(&headers(&[]), &TokenLocation::Bearer, 100), Ok(None));
    }

    #[test]
    fn duplicates_oversize_and_empty_tokens_are_refused() {
        let twice = headers(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]);
        assert_eq!(
            token(&twice, &TokenLocation::Bearer, 100),
            Err(AuthFailure::MalformedToken)
        );
        let long = headers(&[("authorization", "Bearer aaaaaaaaaaaaaaaaaaaa")]);
        assert_eq!(
            token(&long, &TokenLocation::Bearer, 10),
            Err(AuthFailure::TokenTooLarge)
        );
        let empty = headers(&[("authorization", "Bearer ")]);
        assert_eq!(
            token(&empty, &TokenLocation::Bearer, 10),
            Err(AuthFailure::MalformedToken)
        );
    }

    #[test]
    fn cookies_and_headers_are_read_by_name() {
        let map = headers(&[("cookie", "theme=dark; session=tok123"), ("x-token", "t2")]);
        assert_eq!(
            token(&map, &TokenLocation::Cookie("session".into()), 100),
            Ok(Some("tok123"))
        );
        assert_eq!(
            token(&map, &TokenLocation::Header("x-token".into()), 100),
            Ok(Some("t2"))
        );
        // A token elsewhere than configured does not count.
        assert_eq!(token(&map, &TokenLocation::Bearer, 100), Ok(None));
        let twice = headers(&[("cookie", "session=a"), ("cookie", "session=b")]);
        assert_eq!(
            token(&twice, &TokenLocation::Cookie("session".into()), 100),
            Err(AuthFailure::MalformedToken)
        );
    }
}
