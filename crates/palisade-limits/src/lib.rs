//! Traffic limits: GCRA rate limits counted locally (governor over a bounded store) or shared by all
//! gateways through Redis, in-flight limits, and IP allow/deny rules.
//!
//! The gateway derives each limit's key (client address, subject, …) and asks [`RateLimit::check`];
//! everything about counting, sharing and failing over lives here.
#![forbid(unsafe_code)]

pub mod in_flight;
pub mod ip;
pub mod local;
pub mod responses;
pub mod shared;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use palisade_core::config::{LimitKey, Rate, RouteRateLimit, StoreErrorPolicy};

pub use in_flight::{InFlight, InFlightGuard};
pub use ip::{IpRules, IpSet};
pub use local::LocalLimit;
pub use responses::{ActiveResponse, Enforcement, ResponseTable};
pub use shared::{SharedStore, StoreHealth, StoreTls};

/// Who a limit counts, as the store keys it: addresses as numbers (no text to build per request),
/// everything else as text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// An IPv6 address or an IPv4 one mapped into IPv6 (possibly a /64 prefix).
    Address(u128),
    Text(String),
}

impl Key {
    /// The bytes a shared store names the bucket after.
    fn bytes(&self) -> std::borrow::Cow<'_, [u8]> {
        match self {
            Key::Address(address) => std::borrow::Cow::Owned(address.to_be_bytes().to_vec()),
            Key::Text(text) => std::borrow::Cow::Borrowed(text.as_bytes()),
        }
    }
}

/// One limit's answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// `remaining`: requests still allowed at once; `reset`: until the budget is full again.
    Allowed {
        remaining: u32,
        reset: Duration,
    },
    Denied {
        retry_after: Duration,
    },
}

/// How a verdict was reached, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Local,
    Shared,
    /// The shared store was down and `on_store_error: fallback_local` counted locally.
    Fallback,
    /// The shared store was down and `on_store_error: deny` refused.
    StoreDown,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Local => "local",
            Source::Shared => "shared",
            Source::Fallback => "fallback",
            Source::StoreDown => "store_down",
        }
    }
}

/// One configured rate limit of one route.
pub struct RateLimit {
    pub name: String,
    pub key: LimitKey,
    pub rate: Rate,
    pub burst: u32,
    route: String,
    local: Arc<LocalLimit>,
    shared: Option<(Arc<SharedStore>, StoreErrorPolicy)>,
}

impl RateLimit {
    /// `previous` is the same limit in the runtime being replaced: its local counts are kept when
    /// the rate, burst and key did not change, so a reload does not hand everyone a fresh budget.
    pub fn new(
        route: &str,
        config: &RouteRateLimit,
        max_keys: usize,
        shared: Option<(Arc<SharedStore>, StoreErrorPolicy)>,
        previous: Option<&RateLimit>,
    ) -> RateLimit {
        let rate = config.rate.value;
        let burst = config.burst();
        let key = config.key.value.clone();
        let local = previous
            .filter(|p| p.rate == rate && p.burst == burst && p.key == key)
            .map(|p| p.local.clone())
            .unwrap_or_else(|| Arc::new(LocalLimit::new(rate.interval(), burst, max_keys)));
        RateLimit {
            name: config.name.value.clone(),
            key,
            rate,
            burst,
            route: route.to_string(),
            local,
            shared,
        }
    }

    pub async fn check(&self, key: &Key) -> (Verdict, Source) {
        let Some((store, on_error)) = &self.shared else {
            return (self.local.check(key), Source::Local);
        };
        let bucket = SharedStore::bucket(&self.route, &self.name, &key.bytes());
        match store.check(bucket, self.rate.interval(), self.burst).await {
            Ok(verdict) => (verdict, Source::Shared),
            Err(_) => {
                store.health().fallbacks.inc();
                match on_error {
                    StoreErrorPolicy::FallbackLocal => (self.local.check(key), Source::Fallback),
                    StoreErrorPolicy::Deny => (
                        Verdict::Denied {
                            retry_after: shared::BREAKER_OPEN,
                        },
                        Source::StoreDown,
                    ),
                }
            }
        }
    }

    /// The `RateLimit-Policy` member for this limit: quota `q` per window `w` seconds.
    pub fn policy_header_item(&self) -> String {
        format!(
            "\"{}\";q={};w={}",
            self.name,
            self.rate.count,
            ceil_secs(self.rate.period).max(1)
        )
    }
}

/// Appends the `RateLimit` member for one verdict to `out` (comma-separated from earlier ones):
/// `r` requests remaining, `t` seconds until reset.
pub fn write_status_item(out: &mut String, name: &str, verdict: &Verdict) {
    use std::fmt::Write;
    if !out.is_empty() {
        out.push_str(", ");
    }
    // Writing to a String cannot fail.
    let _ = match verdict {
        Verdict::Allowed { remaining, reset } => write!(out, "\"{name}\";r={remaining};t={}", ceil_secs(*reset)),
        Verdict::Denied { retry_after } => write!(out, "\"{name}\";r=0;t={}", retry_after_secs(*retry_after)),
    };
}

/// Whole seconds for `Retry-After`: rounded up, at least 1 (0 would invite an immediate retry).
pub fn retry_after_secs(wait: Duration) -> u64 {
    ceil_secs(wait).max(1)
}

fn ceil_secs(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
    }

    #[test]
    fn header_items_follow_the_draft_syntax() {
        let allowed = Verdict::Allowed {
            remaining: 4,
            reset: Duration::from_millis(600),
        };
        let mut header = String::new();
        write_status_item(&mut header, "per-client", &allowed);
        assert_eq!(header, "\"per-client\";r=4;t=1");
        let denied = Verdict::Denied {
            retry_after: Duration::from_millis(2100),
        };
        write_status_item(&mut header, "everyone", &denied);
        assert_eq!(header, "\"per-client\";r=4;t=1, \"everyone\";r=0;t=3");
    }
}
