//! Running totals the web console samples into its last-hour history: per route label, answers by
//! status class and a latency histogram; and refusals by kind, reason, client and principal.
//!
//! Prometheus counters cannot be read back bucket by bucket, so the request path also adds to these:
//! two relaxed atomic additions per answer, and a short lock only for refusals. The console reads
//! them from a background sampler, never on the request path.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use palisade_core::decision::{Decision, Stage};
use serde::Serialize;

/// Latency buckets: bucket `i` holds answers that took less than `2^i` microseconds (the last one
/// everything slower), so 25 buckets reach past 16 s.
pub const LATENCY_BUCKETS: usize = 25;

/// The upper bound of latency bucket `i`, in seconds.
pub fn bucket_upper_seconds(i: usize) -> f64 {
    (1u64 << i.min(63)) as f64 / 1_000_000.0
}

fn latency_bucket(seconds: f64) -> usize {
    let micros = (seconds.max(0.0) * 1_000_000.0) as u64;
    // The smallest i with micros < 2^i.
    let bits = (u64::BITS - micros.leading_zeros()) as usize;
    bits.min(LATENCY_BUCKETS - 1)
}

/// One route label's answers since the process started.
#[derive(Default)]
pub struct RouteTally {
    /// 1xx..5xx.
    classes: [AtomicU64; 5],
    latency: [AtomicU64; LATENCY_BUCKETS],
}

/// A reading of a [`RouteTally`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RouteReading {
    pub classes: [u64; 5],
    pub latency: [u64; LATENCY_BUCKETS],
}

impl RouteTally {
    pub fn record(&self, status: u16, seconds: f64) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.classes[class].fetch_add(1, Ordering::Relaxed);
        self.latency[latency_bucket(seconds)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn read(&self) -> RouteReading {
        RouteReading {
            classes: std::array::from_fn(|i| self.classes[i].load(Ordering::Relaxed)),
            latency: std::array::from_fn(|i| self.latency[i].load(Ordering::Relaxed)),
        }
    }
}

/// The latency at `quantile` (0..1) of the answers counted in `buckets`, interpolated inside its
/// bucket; `None` when there were none.
pub fn quantile(buckets: &[u64; LATENCY_BUCKETS], quantile: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (quantile.clamp(0.0, 1.0) * total as f64).max(1.0);
    let mut seen = 0u64;
    for (i, count) in buckets.iter().enumerate() {
        if *count == 0 {
            continue;
        }
        if (seen + count) as f64 >= rank {
            let lower = if i == 0 { 0.0 } else { bucket_upper_seconds(i - 1) };
            let upper = bucket_upper_seconds(i);
            let within = (rank - seen as f64) / *count as f64;
            return Some(lower + (upper - lower) * within);
        }
        seen += count;
    }
    Some(bucket_upper_seconds(LATENCY_BUCKETS - 1))
}

/// What a refusal was, as the console's decision chart groups them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalKind {
    /// 400: a malformed request, a broken body, a path trick, a failed validation.
    BadRequest,
    /// 401: missing or refused credentials.
    Unauthenticated,
    /// 403: authorization, IP rules, CORS.
    Forbidden,
    /// 429: a rate limit.
    RateLimited,
    /// An active response (an alert's or an operator's block), by address or principal.
    Blocked,
}

impl RefusalKind {
    pub const ALL: [RefusalKind; 5] = [
        RefusalKind::BadRequest,
        RefusalKind::Unauthenticated,
        RefusalKind::Forbidden,
        RefusalKind::RateLimited,
        RefusalKind::Blocked,
    ];

    pub fn index(self) -> usize {
        self as usize
    }
}

/// How many distinct clients, principals and reasons the refusal tally keeps.
const TOP_CAPACITY: usize = 64;

/// Counts with bounded memory: the space-saving top-k sketch. When it is full, a new key replaces
/// the smallest count and inherits it, so a heavy hitter is never missed and counts are upper bounds.
struct TopCounts<K> {
    counts: HashMap<K, u64>,
}

impl<K> Default for TopCounts<K> {
    fn default() -> Self {
        TopCounts { counts: HashMap::new() }
    }
}

impl<K: std::hash::Hash + Eq + Clone> TopCounts<K> {
    fn add(&mut self, key: K) {
        if let Some(count) = self.counts.get_mut(&key) {
            *count += 1;
            return;
        }
        let mut inherited = 0;
        if self.counts.len() >= TOP_CAPACITY {
            if let Some((smallest, count)) = self
                .counts
                .iter()
                .min_by_key(|(_, count)| **count)
                .map(|(key, count)| (key.clone(), *count))
            {
                self.counts.remove(&smallest);
                inherited = count;
            }
        }
        self.counts.insert(key, inherited + 1);
    }

    fn top(&self, n: usize) -> Vec<(K, u64)> {
        let mut all: Vec<(K, u64)> = self.counts.iter().map(|(k, c)| (k.clone(), *c)).collect();
        all.sort_by_key(|entry| std::cmp::Reverse(entry.1));
        all.truncate(n);
        all
    }
}

#[derive(Default)]
struct Refusals {
    reasons: TopCounts<(Stage, &'static str)>,
    clients: TopCounts<IpAddr>,
    principals: TopCounts<String>,
}

/// Refusals since the process started.
#[derive(Default)]
pub struct RefusalTally {
    kinds: [AtomicU64; 5],
    top: Mutex<Refusals>,
}

/// One entry of a top list.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Ranked {
    pub name: String,
    /// For reasons, the stage that decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    pub count: u64,
}

impl RefusalTally {
    /// One refused request: its kind, its decision, the client's address, and the principal it was
    /// (or claimed to be; a subject, never a credential).
    pub fn record(&self, kind: RefusalKind, decision: Decision, client: IpAddr, principal: Option<&str>) {
        self.kinds[kind.index()].fetch_add(1, Ordering::Relaxed);
        let Ok(mut top) = self.top.lock() else {
            return;
        };
        top.reasons.add((decision.stage, decision.reason));
        top.clients.add(client);
        if let Some(principal) = principal.filter(|p| !p.is_empty()) {
            // Bounded: a subject a client made up cannot grow the tally.
            let principal: String = principal.chars().take(256).collect();
            top.principals.add(principal);
        }
    }

    /// The totals by kind, in [`RefusalKind::ALL`] order.
    pub fn kinds(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.kinds[i].load(Ordering::Relaxed))
    }

    /// The `n` most frequent reasons, clients and principals.
    pub fn top(&self, n: usize) -> (Vec<Ranked>, Vec<Ranked>, Vec<Ranked>) {
        let Ok(top) = self.top.lock() else {
            return Default::default();
        };
        let reasons = top
            .reasons
            .top(n)
            .into_iter()
            .map(|((stage, reason), count)| Ranked {
                name: reason.to_string(),
                stage: Some(stage),
                count,
            })
            .collect();
        let clients = top
            .clients
            .top(n)
            .into_iter()
            .map(|(ip, count)| Ranked {
                name: ip.to_string(),
                stage: None,
                count,
            })
            .collect();
        let principals = top
            .principals
            .top(n)
            .into_iter()
            .map(|(name, count)| Ranked {
                name,
                stage: None,
                count,
            })
            .collect();
        (reasons, clients, principals)
    }
}

/// Every tally of the process, kept across reloads (route labels are looked up when a config is
/// compiled, never per request).
#[derive(Default)]
pub struct Tallies {
    /// Append-only: a label's position never changes (the console's history relies on it).
    routes: RwLock<Vec<(String, Arc<RouteTally>)>>,
    pub refusals: RefusalTally,
}

impl Tallies {
    /// The tally of route label `label`, made on first use.
    pub fn route(&self, label: &str) -> Arc<RouteTally> {
        if let Ok(routes) = self.routes.read() {
            if let Some((_, tally)) = routes.iter().find(|(name, _)| name == label) {
                return tally.clone();
            }
        }
        let Ok(mut routes) = self.routes.write() else {
            return Arc::default();
        };
        if let Some((_, tally)) = routes.iter().find(|(name, _)| name == label) {
            return tally.clone();
        }
        let tally = Arc::new(RouteTally::default());
        routes.push((label.to_string(), tally.clone()));
        tally
    }

    /// Every route label's reading, in the order the labels were first used.
    pub fn read_routes(&self) -> Vec<(String, RouteReading)> {
        self.routes
            .read()
            .map(|routes| {
                routes
                    .iter()
                    .map(|(name, tally)| (name.clone(), tally.read()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::decision::Fault;

    #[test]
    fn latency_buckets_and_quantiles() {
        assert_eq!(latency_bucket(0.0), 0);
        assert_eq!(latency_bucket(0.000_001), 1);
        assert_eq!(latency_bucket(0.001), 10); // 1000 µs < 1024
        assert_eq!(latency_bucket(1e9), LATENCY_BUCKETS - 1);
        let tally = RouteTally::default();
        for _ in 0..99 {
            tally.record(200, 0.001);
        }
        tally.record(503, 0.5);
        let reading = tally.read();
        assert_eq!(reading.classes, [0, 99, 0, 0, 1]);
        let p50 = quantile(&reading.latency, 0.5).unwrap();
        assert!((0.000_512..=0.001_024).contains(&p50), "{p50}");
        let p100 = quantile(&reading.latency, 1.0).unwrap();
        assert!((0.262..=0.525).contains(&p100), "{p100}");
        assert_eq!(quantile(&[0; LATENCY_BUCKETS], 0.5), None);
    }

    #[test]
    fn the_top_lists_are_bounded_and_keep_heavy_hitters() {
        let tally = RefusalTally::default();
        let decision = Decision::new(Stage::Authenticate, Fault::Client, "invalid_token");
        let heavy: IpAddr = "192.0.2.1".parse().unwrap();
        for i in 0..10_000u32 {
            let one_off = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            tally.record(
                RefusalKind::Unauthenticated,
                decision,
                one_off,
                Some(&format!("user-{i}")),
            );
            if i % 10 == 0 {
                tally.record(RefusalKind::Unauthenticated, decision, heavy, Some("mallory"));
            }
        }
        let (reasons, clients, principals) = tally.top(5);
        assert_eq!(reasons[0].name, "invalid_token");
        assert_eq!(clients[0].name, "192.0.2.1");
        assert_eq!(principals[0].name, "mallory");
        let top = tally.top.lock().unwrap();
        assert!(top.clients.counts.len() <= TOP_CAPACITY);
        assert!(top.principals.counts.len() <= TOP_CAPACITY);
        assert_eq!(tally.kinds()[RefusalKind::Unauthenticated.index()], 11_000);
    }
}
