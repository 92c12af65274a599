//! Rate-limit state shared by every gateway process through Redis.
//!
//! One decision is one round trip: a Lua script runs GCRA atomically on the server, with the
//! server's clock (`TIME`), so gateways with skewed clocks still agree. The connection is redis-rs's
//! `ConnectionManager` (one multiplexed connection that pipelines concurrent calls and reconnects by
//! itself). A failed or slow call opens a breaker for [`BREAKER_OPEN`]: during it the store is not
//! asked at all, so an outage costs one timeout per second, not one per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{RedisResult, Script};
use sha2::{Digest, Sha256};

use crate::Verdict;

/// How long the store is left alone after a failure before one call probes it again.
pub const BREAKER_OPEN: Duration = Duration::from_secs(1);

/// The longest wait of a background command (response sharing), whatever the decision timeout.
const BACKGROUND_TIMEOUT: Duration = Duration::from_secs(1);

/// GCRA on the server. KEYS[1]: the bucket. ARGV[1]: emission interval (µs), ARGV[2]: burst.
/// Returns {1, remaining, reset µs} or {0, retry after µs, reset µs}. Times are µs since the epoch,
/// below 2^53, so Lua's doubles hold them exactly; `%.0f` keeps `SET` from writing them in
/// exponent notation.
const GCRA_SCRIPT: &str = r"
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
local capacity = interval * burst
local new_tat = tat + interval
if new_tat - now > capacity then
  return {0, new_tat - capacity - now, tat - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.floor((new_tat - now) / 1000) + 1)
return {1, math.floor((now + capacity - new_tat) / interval), new_tat - now}
";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the rate-limit store URL is invalid: {0}")]
    InvalidUrl(String),
    #[error("the rate-limit store is unavailable")]
    Unavailable,
}

/// What the gateway's metrics learn about the store (the gauge and counters are registered by the
/// caller).
#[derive(Default, Clone)]
pub struct StoreHealth {
    /// 1 while the store answers.
    pub up: Gauge,
    /// Calls that failed or timed out.
    pub errors: Counter,
    /// Decisions made locally (or refused) because the store was down.
    pub fallbacks: Counter,
}

/// A connection to one Redis primary, or to a Redis Cluster (keys routed to their slot's node).
/// Both reconnect on their own once made.
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Connection {
    async fn gcra(self, script: &Script, key: &str, interval_us: u64, burst: u32) -> RedisResult<(i64, i64, i64)> {
        let mut invocation = script.key(key);
        invocation.arg(interval_us).arg(burst);
        match self {
            Connection::Single(mut connection) => invocation.invoke_async(&mut connection).await,
            Connection::Cluster(mut connection) => invocation.invoke_async(&mut connection).await,
        }
    }

    /// Loads the script now so that the first decision is one round trip, not three (EVALSHA,
    /// NOSCRIPT, SCRIPT LOAD). After a Redis restart it is reloaded on demand.
    async fn preload(&self, script: &Script) -> RedisResult<String> {
        match self.clone() {
            Connection::Single(mut connection) => script.load_async(&mut connection).await,
            Connection::Cluster(mut connection) => script.load_async(&mut connection).await,
        }
    }
}

/// How to reach the store: `redis://`/`rediss://` for one primary,
/// `redis+cluster://host:port,host:port` (or `rediss+cluster://`) for a cluster's seed nodes.
enum Target {
    Single(redis::Client, ConnectionManagerConfig),
    Cluster(ClusterClient),
}

impl Target {
    fn parse(url: &str, timeout: Duration) -> Result<Target, StoreError> {
        let invalid = |e: redis::RedisError| StoreError::InvalidUrl(format!("{:?}", e.kind()));
        let connect_timeout = timeout.max(Duration::from_millis(200));
        let cluster = [("redis+cluster://", "redis://"), ("rediss+cluster://", "rediss://")]
            .iter()
            .find_map(|(prefix, scheme)| url.strip_prefix(prefix).map(|nodes| (nodes, scheme)));
        match cluster {
            Some((nodes, scheme)) => {
                let seeds: Vec<String> = nodes
                    .split(',')
                    .map(|node| format!("{scheme}{}", node.trim()))
                    .collect();
                let client = ClusterClient::builder(seeds)
                    .connection_timeout(connect_timeout)
                    .response_timeout(timeout)
                    .retries(1)
                    .build()
                    .map_err(invalid)?;
                Ok(Target::Cluster(client))
            }
            None => {
                let client = redis::Client::open(url).map_err(invalid)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(connect_timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1);
                Ok(Target::Single(client, config))
            }
        }
    }

    async fn connect(&self) -> RedisResult<Connection> {
        match self {
            Target::Single(client, config) => client
                .get_connection_manager_with_config(config.clone())
                .await
                .map(Connection::Single),
            Target::Cluster(client) => client.get_async_connection().await.map(Connection::Cluster),
        }
    }
}

pub struct SharedStore {
    /// Set once the first connection succeeded; it reconnects on its own afterwards.
    connection: Arc<OnceLock<Connection>>,
    script: Script,
    timeout: Duration,
    created: Instant,
    /// Milliseconds since `created` until which the breaker is open.
    open_until_ms: AtomicU64,
    health: StoreHealth,
    /// Shown in logs: scheme, host and port only (a URL may carry a password).
    display: String,
    connector: tokio::task::JoinHandle<()>,
}

impl SharedStore {
    /// Parses `url` and starts connecting in the background; never waits for Redis, so a gateway
    /// starts (on its fallback) while Redis is down. Needs a Tokio runtime.
    pub fn connect(url: &str, timeout: Duration, health: StoreHealth) -> Result<SharedStore, StoreError> {
        let target = Target::parse(url, timeout)?;
        let display = describe(url);
        let connection = Arc::new(OnceLock::new());
        let connector = tokio::spawn(keep_connecting(
            target,
            connection.clone(),
            health.clone(),
            display.clone(),
        ));
        Ok(SharedStore {
            connection,
            script: Script::new(GCRA_SCRIPT),
            timeout,
            created: Instant::now(),
            open_until_ms: AtomicU64::new(0),
            health,
            display,
            connector,
        })
    }

    pub fn health(&self) -> &StoreHealth {
        &self.health
    }

    /// One GCRA decision for `key`; `Err` when the store cannot answer in time.
    pub async fn check(&self, key: &str, interval: Duration, burst: u32) -> Result<Verdict, StoreError> {
        let now_ms = self.created.elapsed().as_millis() as u64;
        if now_ms < self.open_until_ms.load(Ordering::Relaxed) {
            tracing::debug!(store = %self.display, "rate-limit store skipped: breaker open");
            return Err(StoreError::Unavailable);
        }
        let Some(connection) = self.connection.get() else {
            tracing::debug!(store = %self.display, "rate-limit store not connected yet");
            return Err(StoreError::Unavailable);
        };
        let interval_us = interval.as_micros().max(1) as u64;
        let call = connection.clone().gcra(&self.script, key, interval_us, burst);
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(answer)) => {
                self.mark_up();
                Ok(verdict(answer))
            }
            Ok(Err(error)) => {
                self.mark_down(now_ms, &error.to_string());
                Err(StoreError::Unavailable)
            }
            Err(_) => {
                self.mark_down(now_ms, "timed out");
                Err(StoreError::Unavailable)
            }
        }
    }

    fn mark_up(&self) {
        if self.health.up.set(1) != 1 {
            tracing::info!(
                event = "rate_limit_store_recovered",
                store = %self.display,
                "rate-limit store is reachable: limits are shared again"
            );
        }
    }

    fn mark_down(&self, now_ms: u64, why: &str) {
        self.health.errors.inc();
        self.open_until_ms
            .store(now_ms + BREAKER_OPEN.as_millis() as u64, Ordering::Relaxed);
        if self.health.up.set(0) == 1 {
            tracing::warn!(
                event = "rate_limit_store_unavailable",
                store = %self.display,
                error = why,
                "rate-limit store is unreachable: applying rate_limits.on_store_error"
            );
        }
    }

    /// Runs one command for a background task (not the request path): waits for the first
    /// connection no longer than the timeout, and does not touch the breaker.
    pub async fn query<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> Result<T, StoreError> {
        let connection = self.connection.get().ok_or(StoreError::Unavailable)?.clone();
        let call = async move {
            match connection {
                Connection::Single(mut connection) => command.query_async(&mut connection).await,
                Connection::Cluster(mut connection) => command.query_async(&mut connection).await,
            }
        };
        match tokio::time::timeout(self.timeout.max(BACKGROUND_TIMEOUT), call).await {
            Ok(Ok(value)) => Ok(value),
            _ => Err(StoreError::Unavailable),
        }
    }

    /// The Redis key of one bucket. Values are hashed: a keyed header might carry something
    /// sensitive, and the store needs no more than a stable name.
    pub fn bucket(route: &str, limit: &str, value: &[u8]) -> String {
        let digest = Sha256::digest(value);
        let mut key = format!("palisade:rl:{route}:{limit}:");
        for byte in &digest[..16] {
            key.push_str(&format!("{byte:02x}"));
        }
        key
    }
}

impl Drop for SharedStore {
    fn drop(&mut self) {
        self.connector.abort();
    }
}

fn verdict((allowed, value, reset_us): (i64, i64, i64)) -> Verdict {
    let micros = |v: i64| Duration::from_micros(v.max(0) as u64);
    if allowed == 1 {
        Verdict::Allowed {
            remaining: value.clamp(0, u32::MAX as i64) as u32,
            reset: micros(reset_us),
        }
    } else {
        Verdict::Denied {
            retry_after: micros(value),
        }
    }
}

async fn keep_connecting(target: Target, slot: Arc<OnceLock<Connection>>, health: StoreHealth, shown: String) {
    let mut delay = Duration::from_millis(100);
    loop {
        match target.connect().await {
            Ok(connection) => {
                if let Err(error) = connection.preload(&Script::new(GCRA_SCRIPT)).await {
                    tracing::warn!(event = "rate_limit_store_unavailable", store = %shown, error = %error, "cannot load the rate-limit script");
                }
                let _ = slot.set(connection);
                health.up.set(1);
                tracing::info!(event = "rate_limit_store_connected", store = %shown, "rate-limit store connected");
                return;
            }
            Err(error) => {
                health.errors.inc();
                tracing::warn!(
                    event = "rate_limit_store_unavailable",
                    store = %shown,
                    error = %error,
                    "cannot connect to the rate-limit store; retrying"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// `redis://user:secret@host:6379/0` → `redis://host:6379/0`.
fn describe(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            format!("{scheme}://{rest}")
        }
        None => "redis".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_reach_the_description() {
        assert_eq!(
            describe("redis://:hunter2@127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(describe("rediss://u:p@cache:6380"), "rediss://cache:6380");
        assert!(!describe("redis+cluster://:pw@a:7000,:pw@b:7001").contains("pw"));
    }

    #[test]
    fn bucket_names_hash_the_value() {
        let bucket = SharedStore::bucket("r", "l", b"secret-header-value");
        assert!(bucket.starts_with("palisade:rl:r:l:"));
        assert!(!bucket.contains("secret"));
        assert_eq!(bucket.len(), "palisade:rl:r:l:".len() + 32);
    }
}
