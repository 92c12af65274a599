//! CORS, answered at the gateway from an explicit origin allowlist.
//!
//! A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is routed by the method
//! it asks about and answered here, before authentication (browsers send preflights without
//! credentials): 204 with the allowed methods and headers, or 403 when the origin, method or a
//! header is not allowed. Actual requests from an allowed origin get `Access-Control-Allow-Origin`
//! (the origin itself, never `*` with credentials) and `Vary: Origin`; from any other origin they get
//! no CORS headers, so the browser withholds the response. CORS is not access control for
//! non-browser clients: authentication and authorization still decide.

use std::collections::HashSet;

use http::header::{
    HeaderValue, ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS,
    ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use palisade_core::config::CorsConfig;

use crate::respond::GatewayError;
use crate::upstream::ProxyBody;

pub struct Cors {
    any_origin: bool,
    origins: HashSet<String>,
    methods: Vec<Method>,
    methods_value: HeaderValue,
    headers: HashSet<String>,
    expose: Option<HeaderValue>,
    credentials: bool,
    max_age: HeaderValue,
}

/// The method a preflight asks about, when `request` is a preflight.
pub fn preflight_method<B>(request: &Request<B>) -> Option<Method> {
    if request.method() != Method::OPTIONS || !request.headers().contains_key(ORIGIN) {
        return None;
    }
    let asked = request.headers().get(ACCESS_CONTROL_REQUEST_METHOD)?;
    Method::from_bytes(asked.as_bytes()).ok()
}

impl Cors {
    pub fn compile(config: &CorsConfig, route_methods: Option<&[String]>) -> Cors {
        let methods: Vec<Method> = if config.allow_methods.is_empty() {
            route_methods
                .map(|m| m.to_vec())
                .unwrap_or_else(|| vec!["GET".into(), "HEAD".into(), "POST".into()])
        } else {
            config.allow_methods.clone()
        }
        .iter()
        .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
        .collect();
        let join = |items: Vec<&str>| HeaderValue::from_str(&items.join(", ")).ok();
        Cors {
            any_origin: config.allow_origins.iter().any(|o| o.value == "*"),
            origins: config
                .allow_origins
                .iter()
                .map(|o| o.value.to_ascii_lowercase())
                .collect(),
            methods_value: join(methods.iter().map(Method::as_str).collect())
                .unwrap_or(HeaderValue::from_static("GET")),
            methods,
            headers: config.allow_headers.iter().map(|h| h.to_ascii_lowercase()).collect(),
            expose: (!config.expose_headers.is_empty())
                .then(|| join(config.expose_headers.iter().map(String::as_str).collect()))
                .flatten(),
            credentials: config.allow_credentials,
            max_age: HeaderValue::from(config.max_age.get().as_secs()),
        }
    }

    fn allows_origin(&self, origin: &HeaderValue) -> bool {
        self.any_origin
            || origin
                .to_str()
                .is_ok_and(|origin| self.origins.contains(&origin.to_ascii_lowercase()))
    }

    /// The answer to a preflight for `method`.
    pub fn preflight(&self, headers: &HeaderMap, method: &Method) -> Result<Response<ProxyBody>, GatewayError> {
        let origin = headers.get(ORIGIN).ok_or(GatewayError::CorsRejected)?;
        if !self.allows_origin(origin) || !self.methods.contains(method) {
            return Err(GatewayError::CorsRejected);
        }
        let asked_headers: Vec<String> = headers
            .get_all(ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        if asked_headers.iter().any(|h| !self.headers.contains(h)) {
            return Err(GatewayError::CorsRejected);
        }
        let mut response = Response::new(crate::respond::empty_body());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let out = response.headers_mut();
        out.append(VARY, HeaderValue::from_static("Origin"));
        self.allow_origin(origin, out);
        out.insert(ACCESS_CONTROL_ALLOW_METHODS, self.methods_value.clone());
        if let Ok(value) = HeaderValue::from_str(&asked_headers.join(", ")) {
            if !asked_headers.is_empty() {
                out.insert(ACCESS_CONTROL_ALLOW_HEADERS, value);
            }
        }
        out.insert(ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        Ok(response)
    }

    /// CORS headers for an actual response to a request from `origin`. `Vary: Origin` is added beside
    /// any `Vary` the upstream sent (replacing it would break caching on its other keys).
    pub fn decorate(&self, origin: Option<&HeaderValue>, out: &mut HeaderMap) {
        out.append(VARY, HeaderValue::from_static("Origin"));
        let Some(origin) = origin.filter(|origin| self.allows_origin(origin)) else {
            return;
        };
        self.allow_origin(origin, out);
        if let Some(expose) = &self.expose {
            out.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }

    fn allow_origin(&self, origin: &HeaderValue, out: &mut HeaderMap) {
        if self.any_origin && !self.credentials {
            out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        } else {
            out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        }
        if self.credentials {
            out.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
    }
}

/// Request headers every CORS decision needs, copied before the request is consumed.
pub fn origin_of(headers: &HeaderMap) -> Option<HeaderValue> {
    headers.get(ORIGIN).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(yaml: &str) -> Cors {
        let config: CorsConfig = palisade_core::parse_fragment(yaml).expect("valid cors");
        Cors::compile(&config, None)
    }

    fn preflight_headers(origin: &str, asked: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(ORIGIN, HeaderValue::from_str(origin).expect("value"));
        if !asked.is_empty() {
            headers.insert(
                ACCESS_CONTROL_REQUEST_HEADERS,
                HeaderValue::from_str(asked).expect("value"),
            );
        }
        headers
    }

    #[test]
    fn preflights_are_answered_only_for_listed_origins_methods_and_headers() {
        let cors = cors(
            "allow_origins: [https://app.example.com]\nallow_methods: [GET, PUT]\nallow_headers: [authorization, content-type]\nallow_credentials: true\n",
        );
        let ok = cors
            .preflight(
                &preflight_headers("https://app.example.com", "Content-Type, authorization"),
                &Method::PUT,
            )
            .expect("allowed");
        assert_eq!(ok.status(), StatusCode::NO_CONTENT);
        assert_eq!(ok.headers()[ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.com");
        assert_eq!(ok.headers()[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(ok.headers()[ACCESS_CONTROL_ALLOW_METHODS], "GET, PUT");
        let refused = [
            (preflight_headers("https://evil.example", ""), Method::GET),
            (
                preflight_headers("https://app.example.com.evil.example", ""),
                Method::GET,
            ),
            (preflight_headers("https://app.example.com", ""), Method::DELETE),
            (preflight_headers("https://app.example.com", "x-debug"), Method::GET),
        ];
        for (headers, method) in refused {
            assert_eq!(
                cors.preflight(&headers, &method).err(),
                Some(GatewayError::CorsRejected)
            );
        }
    }

    #[test]
    fn actual_responses_name_the_allowed_origin_only() {
        let cors = cors("allow_origins: [https://app.example.com]\nexpose_headers: [ratelimit]\n");
        let mut allowed = HeaderMap::new();
        cors.decorate(Some(&HeaderValue::from_static("https://app.example.com")), &mut allowed);
        assert_eq!(allowed[ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.com");
        assert_eq!(allowed[ACCESS_CONTROL_EXPOSE_HEADERS], "ratelimit");
        let mut upstream_vary = HeaderMap::new();
        upstream_vary.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
        cors.decorate(
            Some(&HeaderValue::from_static("https://app.example.com")),
            &mut upstream_vary,
        );
        let vary: Vec<_> = upstream_vary.get_all(VARY).iter().collect();
        assert_eq!(vary, ["Accept-Encoding", "Origin"], "the upstream's Vary is kept");
        let mut other = HeaderMap::new();
        cors.decorate(Some(&HeaderValue::from_static("https://evil.example")), &mut other);
        assert!(other.get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        assert_eq!(other[VARY], "Origin");
    }
}
