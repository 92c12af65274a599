//! Respond stage, security headers: added to every response the upstream did not already set them
//! on (an application that knows better keeps its own), and headers that advertise internals
//! (`Server`, `X-Powered-By`) removed. HSTS only on TLS listeners: on plain HTTP it is ignored by
//! browsers and would only mislead.

use http::header::{HeaderName, HeaderValue, STRICT_TRANSPORT_SECURITY};
use http::HeaderMap;
use palisade_core::config::SecurityHeadersConfig;

pub struct SecurityHeaders {
    add: Vec<(HeaderName, HeaderValue)>,
    hsts: Option<HeaderValue>,
    remove: Vec<HeaderName>,
}

impl SecurityHeaders {
    /// Values were validated at load; one that still fails to convert is left out rather than sent
    /// malformed.
    pub fn compile(config: &SecurityHeadersConfig) -> Self {
        let mut add = Vec::new();
        let mut push = |name: &'static str, value: &str| {
            if let (false, Ok(value)) = (value.is_empty(), HeaderValue::from_str(value)) {
                add.push((HeaderName::from_static(name), value));
            }
        };
        if config.content_type_options {
            push("x-content-type-options", "nosniff");
        }
        push("referrer-policy", &config.referrer_policy);
        push("x-frame-options", &config.frame_options);
        push("content-security-policy", &config.content_security_policy);
        let hsts = config.hsts.as_ref().and_then(|hsts| {
            let mut value = format!("max-age={}", hsts.max_age.get().as_secs());
            if hsts.include_subdomains {
                value.push_str("; includeSubDomains");
            }
            if hsts.preload {
                value.push_str("; preload");
            }
            HeaderValue::from_str(&value).ok()
        });
        let remove = config
            .remove
            .iter()
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            .collect();
        Self { add, hsts, remove }
    }

    pub fn apply(&self, headers: &mut HeaderMap, tls: bool) {
        // Usually two names (`Server`, `X-Powered-By`) that upstreams do send: a lookup by name each
        // costs half of a scan of the keys followed by the removals (callgrind).
        for name in &self.remove {
            headers.remove(name);
        }
        headers.reserve(self.add.len() + 1);
        // An upstream's own value wins; `entry` looks the name up once.
        for (name, value) in &self.add {
            headers.entry(name).or_insert_with(|| value.clone());
        }
        if let (true, Some(hsts)) = (tls, &self.hsts) {
            headers.entry(STRICT_TRANSPORT_SECURITY).or_insert_with(|| hsts.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_add_the_usual_headers_keep_the_upstreams_and_hsts_only_on_tls() {
        let headers = SecurityHeaders::compile(&SecurityHeadersConfig::default());
        let mut plain = HeaderMap::new();
        plain.insert("server", HeaderValue::from_static("nginx/1.2.3"));
        plain.insert("x-frame-options", HeaderValue::from_static("SAMEORIGIN"));
        headers.apply(&mut plain, false);
        assert_eq!(plain["x-content-type-options"], "nosniff");
        assert_eq!(plain["referrer-policy"], "strict-origin-when-cross-origin");
        assert_eq!(plain["x-frame-options"], "SAMEORIGIN", "the upstream's own value stays");
        assert!(plain.get("server").is_none());
        assert!(plain.get("strict-transport-security").is_none());
        assert!(plain.get("content-security-policy").is_none());
        let mut tls = HeaderMap::new();
        headers.apply(&mut tls, true);
        assert_eq!(tls["strict-transport-security"], "max-age=31536000; includeSubDomains");
    }
}
