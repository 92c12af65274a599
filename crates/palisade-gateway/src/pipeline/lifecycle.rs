//! API version lifecycle. A retired route answers 410 Gone (before authentication: there is nothing
//! left to protect) naming its successor. A deprecated route is still served, and every response
//! says so: `Deprecation` (RFC 9745, `@` + Unix time), `Sunset` (RFC 8594, HTTP date) and `Link`
//! to the successor and the deprecation notice. Calls to deprecated routes are counted by principal
//! (bounded) so owners can see who still has to move.

use std::time::UNIX_EPOCH;

use http::header::{HeaderName, HeaderValue, LINK};
use http::HeaderMap;
use palisade_core::config::traffic::parse_date;
use palisade_core::config::{DeprecationConfig, RetiredConfig};
use palisade_telemetry::DeprecatedMetrics;

use crate::respond::GatewayError;

pub const DEPRECATION: HeaderName = HeaderName::from_static("deprecation");
pub const SUNSET: HeaderName = HeaderName::from_static("sunset");

pub enum Lifecycle {
    Deprecated {
        headers: Vec<(HeaderName, HeaderValue)>,
        calls: DeprecatedMetrics,
    },
    Retired {
        successor: Option<String>,
    },
}

impl Lifecycle {
    pub fn deprecated(config: &DeprecationConfig, calls: DeprecatedMetrics) -> Lifecycle {
        let mut headers = Vec::new();
        if let Ok(since) = parse_date(&config.since.value) {
            let seconds = since.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            if let Ok(value) = HeaderValue::from_str(&format!("@{seconds}")) {
                headers.push((DEPRECATION, value));
            }
        }
        if let Some(Ok(sunset)) = config.sunset.as_ref().map(|s| parse_date(&s.value)) {
            if let Ok(value) = HeaderValue::from_str(&httpdate::fmt_http_date(sunset)) {
                headers.push((SUNSET, value));
            }
        }
        let mut links = Vec::new();
        if let Some(successor) = &config.successor {
            links.push(format!("<{successor}>; rel=\"successor-version\""));
        }
        if let Some(documentation) = &config.documentation {
            links.push(format!("<{documentation}>; rel=\"deprecation\""));
        }
        if let (false, Ok(value)) = (links.is_empty(), HeaderValue::from_str(&links.join(", "))) {
            headers.push((LINK, value));
        }
        Lifecycle::Deprecated { headers, calls }
    }

    pub fn retired(config: &RetiredConfig) -> Lifecycle {
        Lifecycle::Retired {
            successor: config.successor.clone(),
        }
    }

    /// Stage after routing: a retired route ends here.
    pub fn check(&self) -> Result<(), GatewayError> {
        match self {
            Lifecycle::Retired { successor } => Err(GatewayError::Gone {
                successor: successor.clone(),
            }),
            Lifecycle::Deprecated { .. } => Ok(()),
        }
    }

    /// Counts a call to a deprecated route by who made it (after authentication).
    pub fn count_call(&self, subject: Option<&str>) {
        if let Lifecycle::Deprecated { calls, .. } = self {
            calls.record(subject);
        }
    }

    pub fn decorate(&self, out: &mut HeaderMap) {
        if let Lifecycle::Deprecated { headers, .. } = self {
            for (name, value) in headers {
                out.append(name.clone(), value.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deprecation_headers_follow_rfc_9745_and_8594() {
        let config: DeprecationConfig = palisade_core::parse_fragment(
            "since: 2025-01-01\nsunset: 2026-06-30T00:00:00Z\nsuccessor: /v2/orders\ndocumentation: https://docs.example.com/v1\n",
        )
        .expect("valid");
        let mut headers = HeaderMap::new();
        let calls = palisade_telemetry::Metrics::new().deprecated("orders-v1");
        Lifecycle::deprecated(&config, calls).decorate(&mut headers);
        assert_eq!(headers["deprecation"], "@1735689600");
        assert_eq!(headers["sunset"], "Tue, 30 Jun 2026 00:00:00 GMT");
        assert_eq!(
            headers["link"],
            "</v2/orders>; rel=\"successor-version\", <https://docs.example.com/v1>; rel=\"deprecation\""
        );
    }
}
