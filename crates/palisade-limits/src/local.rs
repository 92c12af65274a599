//! One rate limit counted in this process: governor's GCRA over a [`BoundedStore`].

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, QuantaClock};
use governor::middleware::StateInformationMiddleware;
use governor::{Quota, RateLimiter};

use crate::store::BoundedStore;
use crate::{Key, Verdict};

type Limiter = RateLimiter<Key, BoundedStore<Key>, QuantaClock, StateInformationMiddleware>;

pub struct LocalLimit {
    limiter: Limiter,
    store: BoundedStore<Key>,
    clock: QuantaClock,
    interval: Duration,
    burst: u32,
}

impl LocalLimit {
    pub fn new(interval: Duration, burst: u32, max_keys: usize) -> Self {
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        // `with_period` refuses only a zero interval, which config validation already excludes.
        let quota = Quota::with_period(interval.max(Duration::from_nanos(1)))
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        let clock = QuantaClock::default();
        let store = BoundedStore::new(max_keys, clock.clone());
        let limiter: Limiter = RateLimiter::new(quota, store.clone(), clock.clone());
        Self {
            limiter,
            store,
            clock,
            interval,
            burst: burst.get(),
        }
    }

    pub fn check(&self, key: &Key) -> Verdict {
        match self.limiter.check_key(key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity().min(self.burst);
                Verdict::Allowed {
                    remaining,
                    reset: self.interval * (self.burst - remaining),
                }
            }
            Err(not_until) => Verdict::Denied {
                retry_after: not_until.wait_time_from(self.clock.now()),
            },
        }
    }

    /// Keys currently tracked.
    pub fn tracked_keys(&self) -> usize {
        self.store.len()
    }

    pub fn evicted_keys(&self) -> u64 {
        self.store.evicted()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_the_key_waits_one_interval() {
        let limit = LocalLimit::new(Duration::from_secs(10), 3, 100);
        let key = Key::Text("client".to_string());
        let remaining: Vec<u32> = (0..3)
            .map(|_| match limit.check(&key) {
                Verdict::Allowed { remaining, .. } => remaining,
                denied => panic!("within the burst: {denied:?}"),
            })
            .collect();
        assert_eq!(remaining, [2, 1, 0]);
        match limit.check(&key) {
            Verdict::Denied { retry_after } => {
                assert!(retry_after > Duration::from_secs(9) && retry_after <= Duration::from_secs(10))
            }
            allowed => panic!("beyond the burst: {allowed:?}"),
        }
        assert!(matches!(limit.check(&Key::Address(7)), Verdict::Allowed { .. }));
    }

    #[test]
    fn key_spraying_keeps_the_store_bounded() {
        let limit = LocalLimit::new(Duration::from_secs(60), 1, 1_000);
        for i in 0..50_000 {
            let _ = limit.check(&Key::Address(i));
        }
        assert!(limit.tracked_keys() <= 1_008, "{} keys", limit.tracked_keys());
        assert!(limit.evicted_keys() >= 49_000);
    }
}
