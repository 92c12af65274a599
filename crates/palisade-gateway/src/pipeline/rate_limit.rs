//! Stage rate limit (after authenticate, so limits can be keyed by who is calling; before
//! authorize, so a client cannot probe policies faster than its budget). Every limit of the route is
//! checked; the request passes only if all allow it, otherwise 429 with `Retry-After`. The route's
//! in-flight limit is taken here too (503 when full) and held until the response body ends.
//!
//! Responses carry the IETF draft fields: `RateLimit-Policy` (each limit's quota and window) and
//! `RateLimit` (what is left of each), so well-behaved clients can slow down before they hit 429.

use std::net::IpAddr;

use http::{HeaderMap, HeaderValue};
use palisade_auth::Principal;
use palisade_core::config::LimitKey;
use palisade_limits::{Key, Verdict};

use crate::context::RequestContext;
use crate::respond::GatewayError;
use crate::runtime::RouteRuntime;

/// Header values longer than this are cut before they become a key: the key only has to tell
/// clients apart, and cutting can merge keys (stricter), never split them.
const MAX_KEY_BYTES: usize = 256;

pub const RATELIMIT_POLICY: http::HeaderName = http::HeaderName::from_static("ratelimit-policy");
pub const RATELIMIT: http::HeaderName = http::HeaderName::from_static("ratelimit");

pub async fn check(
    route: &RouteRuntime,
    headers: &HeaderMap,
    context: &mut RequestContext,
) -> Result<(), GatewayError> {
    if let Some(in_flight) = &route.in_flight {
        match in_flight.try_acquire() {
            Some(guard) => context.in_flight = Some(guard),
            None => return Err(GatewayError::TooManyInFlight),
        }
    }
    if route.rate_limits.is_empty() {
        return Ok(());
    }
    let mut status = String::with_capacity(32 * route.rate_limits.len());
    let mut longest_wait = None;
    // A refusal because the shared store is down (`on_store_error: deny`) is not the caller's limit.
    let mut store_down = None;
    for (limit, metrics) in &route.rate_limits {
        let key = key_of(&limit.key, context.client_ip, context.principal.as_deref(), headers);
        let (verdict, source) = limit.check(&key).await;
        let allowed = matches!(verdict, Verdict::Allowed { .. });
        metrics.record(allowed, source.as_str());
        if let Verdict::Denied { retry_after } = verdict {
            if source == palisade_limits::Source::StoreDown {
                store_down = store_down.max(Some(retry_after));
            } else {
                longest_wait = longest_wait.max(Some(retry_after));
            }
        }
        palisade_limits::write_status_item(&mut status, &limit.name, &verdict);
    }
    context.rate_limit_headers = HeaderValue::from_maybe_shared(bytes::Bytes::from(status))
        .ok()
        .map(|status| (route.rate_limit_policy.clone(), status));
    match (longest_wait, store_down) {
        (Some(wait), _) => Err(GatewayError::RateLimited {
            retry_after_secs: palisade_limits::retry_after_secs(wait),
        }),
        (None, Some(wait)) => Err(GatewayError::LimitStoreUnavailable {
            retry_after_secs: palisade_limits::retry_after_secs(wait),
        }),
        (None, None) => Ok(()),
    }
}

/// The value that identifies the caller for one limit. Absent values (no header, no principal)
/// share one budget rather than escaping the limit.
fn key_of(key: &LimitKey, client_ip: IpAddr, principal: Option<&Principal>, headers: &HeaderMap) -> Key {
    let text = match key {
        LimitKey::ClientIp => return client_key(client_ip),
        LimitKey::Subject => principal.map_or_else(String::new, |p| format!("{}|{}", p.issuer, p.subject)),
        LimitKey::ApiKey => principal
            .filter(|p| p.method == palisade_auth::AuthMethodKind::ApiKey)
            .map_or_else(String::new, |p| p.subject.clone()),
        LimitKey::Route => String::new(),
        LimitKey::Header(name) => headers.get(name.as_str()).map_or_else(String::new, |value| {
            let bytes = value.as_bytes();
            String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_KEY_BYTES)]).into_owned()
        }),
    };
    Key::Text(text)
}

/// IPv4 clients by address; IPv6 clients by their /64, since one subscriber usually holds a whole
/// /64 and could otherwise take a fresh budget from each of its 2^64 addresses.
fn client_key(ip: IpAddr) -> Key {
    match ip {
        IpAddr::V4(v4) => Key::Address(u128::from(v4.to_ipv6_mapped())),
        IpAddr::V6(v6) => Key::Address(u128::from(v6) & !u128::from(u64::MAX)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_share_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        assert_ne!(
            client_key("192.0.2.1".parse().expect("ip")),
            client_key("192.0.2.2".parse().expect("ip"))
        );
    }

    #[test]
    fn header_keys_are_bounded_and_missing_headers_share_a_budget() {
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let key = LimitKey::Header("x-tenant".into());
        let mut headers = HeaderMap::new();
        let empty = Key::Text(String::new());
        assert_eq!(key_of(&key, ip, None, &headers), empty);
        headers.insert("x-tenant", HeaderValue::from_str(&"t".repeat(5000)).expect("value"));
        assert_eq!(key_of(&key, ip, None, &headers), Key::Text("t".repeat(MAX_KEY_BYTES)));
        assert_eq!(key_of(&LimitKey::Subject, ip, None, &headers), empty);
    }
}
