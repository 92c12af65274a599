//! Stage (route): method-override headers. Frameworks such as Rails, Laravel, Express's
//! method-override and Spring's HiddenHttpMethodFilter run a POST that carries
//! `X-HTTP-Method-Override: DELETE` as a DELETE, so a gateway that routes and authorizes by the POST
//! lets a caller allowed to POST delete. By default the headers are removed; a route with
//! `method_override: true` takes them, and then the overriding method is what is routed, authorized
//! and sent upstream.

use http::{HeaderMap, HeaderName, Method};

use crate::respond::GatewayError;

/// The override headers, in the order they are read.
pub const HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
];

/// Whether the request carries any override header. One pass over the names, comparing only those of
/// an override header's length: cheaper than three hashed lookups for the usual answer, no.
pub fn present(headers: &HeaderMap) -> bool {
    headers
        .keys()
        .any(|name| matches!(name.as_str().len(), 13 | 17 | 22) && HEADERS.contains(name))
}

/// The method the override headers ask for: one upper-case method, the same in every header that
/// is present. Anything else is refused (400), never guessed at.
pub fn requested(headers: &HeaderMap) -> Result<Method, GatewayError> {
    let mut found: Option<&[u8]> = None;
    for name in &HEADERS {
        for value in headers.get_all(name) {
            let text = value.as_bytes().trim_ascii();
            match found {
                Some(earlier) if earlier != text => return Err(GatewayError::BadRequest("invalid_method_override")),
                _ => found = Some(text),
            }
        }
    }
    let text = found.ok_or(GatewayError::BadRequest("invalid_method_override"))?;
    if text.is_empty() || !text.iter().all(u8::is_ascii_uppercase) {
        return Err(GatewayError::BadRequest("invalid_method_override"));
    }
    let method = Method::from_bytes(text).map_err(|_| GatewayError::BadRequest("invalid_method_override"))?;
    if method == Method::CONNECT {
        return Err(GatewayError::BadRequest("invalid_method_override"));
    }
    Ok(method)
}

/// Removes every override header.
pub fn remove(headers: &mut HeaderMap) {
    for name in &HEADERS {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        }
        map
    }

    #[test]
    fn one_clear_method_is_taken_and_anything_else_refused() {
        assert_eq!(
            requested(&headers(&[("x-http-method-override", "DELETE")])),
            Ok(Method::DELETE)
        );
        assert_eq!(
            requested(&headers(&[("x-http-method", "PUT"), ("x-method-override", "PUT")])),
            Ok(Method::PUT)
        );
        for refused in [
            &[("x-http-method-override", "delete")][..],
            &[("x-http-method-override", "DELETE"), ("x-http-method", "PUT")],
            &[("x-http-method-override", "DELETE"), ("x-http-method-override", "GET")],
            &[("x-http-method-override", "")],
            &[("x-http-method-override", "CONNECT")],
        ] {
            assert!(requested(&headers(refused)).is_err(), "{refused:?}");
        }
        let mut all = headers(&[
            ("x-http-method-override", "DELETE"),
            ("x-http-method", "DELETE"),
            ("x-method-override", "DELETE"),
        ]);
        assert!(present(&all));
        remove(&mut all);
        assert!(!present(&all));
        for name in HEADERS {
            let lengths = [13, 17, 22];
            assert!(
                lengths.contains(&name.as_str().len()),
                "{name} is looked for by its length"
            );
            assert!(present(&headers(&[(name.as_str(), "DELETE")])));
        }
        assert!(!present(&headers(&[
            ("x-http-methodx", "DELETE"),
            ("content-length", "1")
        ])));
    }
}
