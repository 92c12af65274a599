//! Rate-limit state shared by every gateway process through Redis.
//!
//! A Lua script runs GCRA atomically on the server, with the server's clock (`TIME`), so gateways
//! with skewed clocks still agree. The connection is redis-rs's `ConnectionManager` (one multiplexed
//! connection that pipelines concurrent calls and reconnects by itself). A failed or slow call opens
//! a breaker for [`BREAKER_OPEN`]: during it the store is not asked at all, so an outage costs one
//! timeout per second, not one per request.
//!
//! Decisions for the same bucket are coalesced per thread: while one call for a bucket is in flight,
//! the requests from that thread that arrive for it wait, and the next call decides all of them at
//! once (the script applies GCRA to each in arrival order, so the answers are the ones separate calls
//! would have given). A hot bucket costs Redis one script run per round trip instead of one per
//! request; a request waits at most for the call in flight and its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{RedisResult, Script};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use crate::Verdict;

/// How long the store is left alone after a failure before one call probes it again.
pub const BREAKER_OPEN: Duration = Duration::from_secs(1);

/// The longest wait of a background command (response sharing), whatever the decision timeout.
const BACKGROUND_TIMEOUT: Duration = Duration::from_secs(1);

/// GCRA on the server for ARGV[3] requests to one bucket, in order. KEYS[1]: the bucket.
/// ARGV[1]: emission interval (µs), ARGV[2]: burst, ARGV[3]: how many requests.
/// Returns three numbers per request: {1, remaining, reset µs} or {0, retry after µs, reset µs}.
/// Times are µs since the epoch, below 2^53, so Lua's doubles hold them exactly; `%.0f` keeps `SET`
/// from writing them in exponent notation.
const GCRA_SCRIPT: &str = r"
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local count = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
local capacity = interval * burst
local answers = {}
local allowed_any = false
for i = 1, count do
  local new_tat = tat + interval
  if new_tat - now > capacity then
    answers[#answers + 1] = 0
    answers[#answers + 1] = new_tat - capacity - now
    answers[#answers + 1] = tat - now
  else
    tat = new_tat
    allowed_any = true
    answers[#answers + 1] = 1
    answers[#answers + 1] = math.floor((now + capacity - new_tat) / interval)
    answers[#answers + 1] = new_tat - now
  end
end
if allowed_any then
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.floor((tat - now) / 1000) + 1)
end
return answers
";

/// At most this many waiting requests are decided by one call (the rest by the next one), so one
/// script run stays short however hot the bucket.
const MAX_BATCH: usize = 256;

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
    async fn gcra(self, script: &Script, bucket: &Bucket, count: usize) -> RedisResult<Vec<i64>> {
        let mut invocation = script.key(&bucket.name);
        invocation.arg(bucket.interval_us).arg(bucket.burst).arg(count);
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
/// `redis+cluster://host:port,host:port` (or `rediss+cluster://`) for a cluster's seed nodes,
/// `redis+sentinel://[user:password@]host:port,host:port/service` for the primary that Sentinels name.
enum Target {
    Single(redis::Client, ConnectionManagerConfig),
    Cluster(ClusterClient),
    Sentinel(Box<SentinelTarget>),
}

/// The Sentinels of one service: redis-rs's client to reach the primary they name (it confirms the
/// primary's role on a connection of its own), and a plain connection to ask them which server that
/// is now, cheaply, every [`FAILOVER_CHECK`].
struct SentinelTarget {
    client: SentinelClient,
    config: ConnectionManagerConfig,
    service: String,
    sentinels: Vec<redis::Client>,
    asked: Option<redis::aio::MultiplexedConnection>,
}

impl SentinelTarget {
    /// `host:port` of the primary the Sentinels name (`None` when they know no such service).
    async fn named_primary(&mut self) -> RedisResult<Option<String>> {
        let mut command = redis::cmd("SENTINEL");
        command.arg("get-master-addr-by-name").arg(&self.service);
        if let Some(mut connection) = self.asked.clone() {
            if let Ok(named) = command.query_async::<Option<(String, u16)>>(&mut connection).await {
                return Ok(named.map(|(host, port)| format!("{host}:{port}")));
            }
            self.asked = None;
        }
        let mut failure = None;
        for sentinel in &self.sentinels {
            let asked = async {
                let mut connection = sentinel
                    .get_multiplexed_async_connection_with_config(&sentinel_config())
                    .await?;
                let named = command.query_async::<Option<(String, u16)>>(&mut connection).await?;
                Ok::<_, redis::RedisError>((connection, named))
            };
            match asked.await {
                Ok((connection, named)) => {
                    self.asked = Some(connection);
                    return Ok(named.map(|(host, port)| format!("{host}:{port}")));
                }
                Err(error) => failure = Some(error),
            }
        }
        Err(failure.unwrap_or_else(|| redis::RedisError::from((redis::ErrorKind::Io, "no Sentinel answered"))))
    }
}

/// PEM contents for a `rediss://` store: roots to verify it with (instead of the web PKI roots) and a
/// client certificate chain and key for servers that ask for one.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StoreTls {
    pub ca_pem: Option<Vec<u8>>,
    pub client_pem: Option<(Vec<u8>, Vec<u8>)>,
}

impl StoreTls {
    fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: self
                .client_pem
                .clone()
                .map(|(client_cert, client_key)| redis::ClientTlsConfig {
                    client_cert,
                    client_key,
                }),
            root_cert: self.ca_pem.clone(),
        }
    }
}

impl Target {
    fn parse(url: &str, timeout: Duration, tls: Option<&StoreTls>) -> Result<Target, StoreError> {
        let invalid = |e: redis::RedisError| StoreError::InvalidUrl(format!("{:?}", e.kind()));
        let connect_timeout = timeout.max(Duration::from_millis(200));
        let cluster = [("redis+cluster://", "redis://"), ("rediss+cluster://", "rediss://")]
            .iter()
            .find_map(|(prefix, scheme)| url.strip_prefix(prefix).map(|nodes| (nodes, scheme)));
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        if let Some(rest) = url.strip_prefix("redis+sentinel://") {
            let (nodes, service) = rest
                .split_once('/')
                .filter(|(_, service)| !service.is_empty() && !service.contains('/'))
                .ok_or_else(|| {
                    StoreError::InvalidUrl("expected redis+sentinel://host:port,host:port/service".into())
                })?;
            // Credentials before the first node are the primary's (Sentinels are asked without).
            let (credentials, nodes) = match nodes.rsplit_once('@') {
                Some((credentials, nodes)) => (Some(credentials), nodes),
                None => (None, nodes),
            };
            let sentinels: Vec<String> = nodes
                .split(',')
                .map(|node| format!("redis://{}", node.trim()))
                .collect();
            let sentinel_clients = sentinels
                .iter()
                .map(|url| redis::Client::open(url.as_str()))
                .collect::<RedisResult<Vec<_>>>()
                .map_err(invalid)?;
            let primary = match (credentials, sentinels.first()) {
                // Parsed as a URL so that percent-encoded passwords decode as in `redis://` URLs.
                (Some(credentials), Some(first)) => {
                    let url = first.replacen("redis://", &format!("redis://{credentials}@"), 1);
                    let info = redis::IntoConnectionInfo::into_connection_info(url.as_str()).map_err(invalid)?;
                    Some(SentinelNodeConnectionInfo::default().set_redis_connection_info(info.redis_settings().clone()))
                }
                _ => None,
            };
            let client =
                SentinelClient::build(sentinels, service, primary, SentinelServerType::Master).map_err(invalid)?;
            return Ok(Target::Sentinel(Box::new(SentinelTarget {
                client,
                config,
                service: service.to_string(),
                sentinels: sentinel_clients,
                asked: None,
            })));
        }
        match cluster {
            Some((nodes, scheme)) => {
                let seeds: Vec<String> = nodes
                    .split(',')
                    .map(|node| format!("{scheme}{}", node.trim()))
                    .collect();
                let mut builder = ClusterClient::builder(seeds);
                if let Some(tls) = tls {
                    builder = builder.certs(tls.certificates());
                }
                let client = builder
                    .connection_timeout(connect_timeout)
                    .response_timeout(timeout)
                    .retries(1)
                    .build()
                    .map_err(invalid)?;
                Ok(Target::Cluster(client))
            }
            None => {
                let client = match tls {
                    Some(tls) => redis::Client::build_with_tls(url, tls.certificates()),
                    None => redis::Client::open(url),
                }
                .map_err(invalid)?;
                Ok(Target::Single(client, config))
            }
        }
    }

    /// A new connection, and for a Sentinel target the address of the primary it goes to.
    async fn connect(&mut self) -> RedisResult<(Connection, Option<String>)> {
        match self {
            Target::Single(client, config) => client
                .get_connection_manager_with_config(config.clone())
                .await
                .map(|connection| (Connection::Single(connection), None)),
            Target::Cluster(client) => client
                .get_async_connection()
                .await
                .map(|connection| (Connection::Cluster(connection), None)),
            Target::Sentinel(sentinel) => {
                let primary = sentinel.client.async_get_client().await?;
                let address = primary.get_connection_info().addr().to_string();
                let connection = primary
                    .get_connection_manager_with_config(sentinel.config.clone())
                    .await?;
                Ok((Connection::Single(connection), Some(address)))
            }
        }
    }

    fn sentinel_count(&self) -> u32 {
        match self {
            Target::Sentinel(sentinel) => u32::try_from(sentinel.sentinels.len()).unwrap_or(u32::MAX),
            _ => 0,
        }
    }

    /// The primary's address as the Sentinels name it now (`None` for other targets).
    async fn primary_address(&mut self) -> RedisResult<Option<String>> {
        match self {
            Target::Sentinel(sentinel) => sentinel.named_primary().await,
            _ => Ok(None),
        }
    }
}

pub struct SharedStore {
    /// Set once the first connection succeeded; it reconnects on its own afterwards. Replaced when
    /// the Sentinels name a new primary.
    connection: Arc<ArcSwapOption<Connection>>,
    script: Script,
    timeout: Duration,
    created: Instant,
    /// Milliseconds since `created` until which the breaker is open.
    open_until_ms: AtomicU64,
    health: StoreHealth,
    /// Shown in logs: scheme, host and port only (a URL may carry a password).
    display: String,
    connector: tokio::task::JoinHandle<()>,
    /// The TLS material the connection was made with (a reload with other material reconnects).
    tls: Option<StoreTls>,
    /// Buckets with a call in flight, and the requests waiting for the next call to them.
    waiting: Mutex<HashMap<Bucket, Vec<Waiter>>>,
}

/// One GCRA bucket as the script sees it. The rate is part of the identity so that requests
/// counted under a reloaded rate never share a call with requests under the old one.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bucket {
    name: String,
    interval_us: u64,
    burst: u32,
    /// Requests are coalesced per thread of the caller. Each gateway worker is a single-threaded
    /// runtime, so the call's task runs on the thread of the requests it answers and waking them
    /// needs no cross-thread wake-up.
    thread: std::thread::ThreadId,
}

type Waiter = oneshot::Sender<Verdict>;

impl SharedStore {
    /// Parses `url` and starts connecting in the background; never waits for Redis, so a gateway
    /// starts (on its fallback) while Redis is down. Needs a Tokio runtime.
    pub fn connect(
        url: &str,
        timeout: Duration,
        tls: Option<&StoreTls>,
        health: StoreHealth,
    ) -> Result<SharedStore, StoreError> {
        let target = Target::parse(url, timeout, tls)?;
        let display = describe(url);
        let connection = Arc::new(ArcSwapOption::empty());
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
            tls: tls.cloned(),
            waiting: Mutex::new(HashMap::new()),
        })
    }

    pub fn tls(&self) -> Option<&StoreTls> {
        self.tls.as_ref()
    }

    pub fn health(&self) -> &StoreHealth {
        &self.health
    }

    /// One GCRA decision for `bucket`; `Err` when the store cannot answer in time.
    ///
    /// The first request for a bucket has the store called at once; requests arriving while that
    /// call is in flight wait and are decided together by the next call (see the module comment).
    pub async fn check(
        self: &Arc<Self>,
        bucket: String,
        interval: Duration,
        burst: u32,
    ) -> Result<Verdict, StoreError> {
        if self.breaker_open() {
            tracing::debug!(store = %self.display, "rate-limit store skipped: breaker open");
            return Err(StoreError::Unavailable);
        }
        if self.connection.load().is_none() {
            tracing::debug!(store = %self.display, "rate-limit store not connected yet");
            return Err(StoreError::Unavailable);
        }
        let bucket = Bucket {
            name: bucket,
            interval_us: interval.as_micros().max(1) as u64,
            burst,
            thread: std::thread::current().id(),
        };
        let (waiter, answer) = oneshot::channel();
        if self.enqueue(&bucket, waiter) {
            // The calls run in a task of their own: a request that goes away (its client
            // disconnected) must not leave the requests queued behind it without a caller.
            let store = self.clone();
            tokio::spawn(async move {
                store.decide_waiting(&bucket).await;
                while store.more_waiting(&bucket) {
                    store.decide_waiting(&bucket).await;
                }
            });
        }
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(Ok(verdict)) => Ok(verdict),
            // The call failed (its waiters' senders were dropped) or took too long.
            _ => Err(StoreError::Unavailable),
        }
    }

    /// Adds a waiter to `bucket`; true when no call for it is in flight (the caller makes one).
    fn enqueue(&self, bucket: &Bucket, waiter: Waiter) -> bool {
        let mut waiting = self.waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match waiting.get_mut(bucket) {
            Some(queue) => {
                queue.push(waiter);
                false
            }
            None => {
                waiting.insert(bucket.clone(), vec![waiter]);
                true
            }
        }
    }

    /// True when requests are waiting for `bucket`; otherwise forgets the bucket (the next request
    /// for it calls the store itself).
    fn more_waiting(&self, bucket: &Bucket) -> bool {
        let mut waiting = self.waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if waiting.get(bucket).is_some_and(|queue| !queue.is_empty()) {
            return true;
        }
        waiting.remove(bucket);
        false
    }

    /// One call to the store for (up to [`MAX_BATCH`] of) the requests waiting for `bucket`; each
    /// gets its verdict, or nothing when the call failed.
    async fn decide_waiting(&self, bucket: &Bucket) {
        let batch: Vec<Waiter> = {
            let mut waiting = self.waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let Some(queue) = waiting.get_mut(bucket) else {
                return;
            };
            let take = queue.len().min(MAX_BATCH);
            queue.drain(..take).collect()
        };
        // With the breaker open (an earlier call just failed), the batch is answered with nothing:
        // its requests apply `on_store_error` at once instead of waiting out another timeout.
        let Some(connection) = self.connection.load_full().filter(|_| !self.breaker_open()) else {
            return;
        };
        let call = Connection::clone(&connection).gcra(&self.script, bucket, batch.len());
        let now_ms = self.created.elapsed().as_millis() as u64;
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(answers)) if answers.len() == 3 * batch.len() => {
                self.mark_up();
                for (waiter, answer) in batch.into_iter().zip(answers.chunks_exact(3)) {
                    // A waiter that gave up (timed out) no longer listens; its request was still
                    // counted, as it would have been with a call of its own.
                    let _ = waiter.send(verdict([answer[0], answer[1], answer[2]]));
                }
            }
            Ok(Ok(answers)) => self.mark_down(
                now_ms,
                &format!("{} numbers answered for {} requests", answers.len(), batch.len()),
            ),
            Ok(Err(error)) => self.mark_down(now_ms, &error.to_string()),
            Err(_) => self.mark_down(now_ms, "timed out"),
        }
    }

    fn breaker_open(&self) -> bool {
        self.created.elapsed().as_millis() < u128::from(self.open_until_ms.load(Ordering::Relaxed))
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
        let connection = Connection::clone(&*self.connection.load_full().ok_or(StoreError::Unavailable)?);
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
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let digest = Sha256::digest(value);
        // Built in one allocation: this runs for every request on a Redis-limited route.
        let mut key = String::with_capacity(13 + route.len() + limit.len() + 32);
        key.push_str("palisade:rl:");
        key.push_str(route);
        key.push(':');
        key.push_str(limit);
        key.push(':');
        for byte in &digest[..16] {
            key.push(char::from(HEX[usize::from(byte >> 4)]));
            key.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        key
    }
}

impl Drop for SharedStore {
    fn drop(&mut self) {
        self.connector.abort();
    }
}

fn verdict([allowed, value, reset_us]: [i64; 3]) -> Verdict {
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

/// How often the Sentinels are asked which server is the primary.
const FAILOVER_CHECK: Duration = Duration::from_secs(1);

/// The longest wait for one Sentinel (to connect, then to answer): a Sentinel that accepts and
/// never answers must not keep the others from being asked.
const SENTINEL_TIMEOUT: Duration = Duration::from_millis(300);

fn sentinel_config() -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(SENTINEL_TIMEOUT))
        .set_response_timeout(Some(SENTINEL_TIMEOUT))
}

/// Makes the first connection (retrying with backoff), then, for a Sentinel target, follows
/// failovers: when the Sentinels name another primary, a connection to it replaces the old one.
async fn keep_connecting(mut target: Target, slot: Arc<ArcSwapOption<Connection>>, health: StoreHealth, shown: String) {
    let mut primary = connect_until_up(&mut target, &slot, &health, &shown).await;
    if primary.is_none() {
        return;
    }
    loop {
        tokio::time::sleep(FAILOVER_CHECK).await;
        // Room for every Sentinel to be tried in turn (each bounded by SENTINEL_TIMEOUT).
        let round = FAILOVER_CHECK + SENTINEL_TIMEOUT * 2 * target.sentinel_count();
        let named = match tokio::time::timeout(round, target.primary_address()).await {
            Ok(Ok(Some(named))) => Some(named),
            Ok(Ok(None)) => continue,
            Ok(Err(error)) => {
                tracing::debug!(store = %shown, error = %error, "cannot ask the Sentinels for the primary");
                continue;
            }
            Err(_) => continue,
        };
        if named == primary {
            continue;
        }
        match target.connect().await {
            Ok((connection, address)) => {
                install(&slot, connection, &shown).await;
                tracing::warn!(
                    event = "rate_limit_store_failover",
                    store = %shown,
                    from = primary.as_deref().unwrap_or("-"),
                    to = address.as_deref().unwrap_or("-"),
                    "the Sentinels name a new primary: rate limits follow it"
                );
                // What the Sentinels said, so that a differently written address (a host name where
                // they answer with an address) does not reconnect every second.
                primary = named;
            }
            Err(error) => tracing::warn!(store = %shown, error = %error, "cannot connect to the new primary"),
        }
    }
}

async fn connect_until_up(
    target: &mut Target,
    slot: &ArcSwapOption<Connection>,
    health: &StoreHealth,
    shown: &str,
) -> Option<String> {
    let mut delay = Duration::from_millis(100);
    loop {
        match target.connect().await {
            Ok((connection, primary)) => {
                install(slot, connection, shown).await;
                health.up.set(1);
                tracing::info!(event = "rate_limit_store_connected", store = %shown, "rate-limit store connected");
                return primary;
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

/// Loads the script on `connection` (so the first decision is one round trip) and makes it the one
/// decisions use.
async fn install(slot: &ArcSwapOption<Connection>, connection: Connection, shown: &str) {
    if let Err(error) = connection.preload(&Script::new(GCRA_SCRIPT)).await {
        tracing::warn!(event = "rate_limit_store_unavailable", store = %shown, error = %error, "cannot load the rate-limit script");
    }
    slot.store(Some(Arc::new(connection)));
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
            // palisade:ignore SEC013 a made-up password: the test checks it is left out
            describe("redis://:hunter2@127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(describe("rediss://u:p@cache:6380"), "rediss://cache:6380");
        assert!(!describe("redis+cluster://:pw@a:7000,:pw@b:7001").contains("pw"));
    }

    #[test]
    fn store_urls_are_checked_before_any_connection() {
        let parse = |url: &str| Target::parse(url, Duration::from_millis(50), None);
        assert!(matches!(
            parse("redis+sentinel://a:26379,b:26379/shop"),
            Ok(Target::Sentinel(..))
        ));
        assert!(matches!(
            // palisade:ignore SEC013 a made-up password in a parser test
            parse("redis+sentinel://:pw%2F1@a:26379/shop"),
            Ok(Target::Sentinel(..))
        ));
        for bad in [
            "redis+sentinel://a:26379",
            "redis+sentinel://a:26379/",
            "redis+sentinel://a:26379/x/y",
        ] {
            assert!(matches!(parse(bad), Err(StoreError::InvalidUrl(_))), "{bad}");
        }
        assert!(matches!(parse("redis+cluster://a:7000,b:7001"), Ok(Target::Cluster(_))));
        assert!(matches!(parse("rediss://cache:6380/0"), Ok(Target::Single(..))));
    }

    #[test]
    fn bucket_names_hash_the_value() {
        let bucket = SharedStore::bucket("r", "l", b"secret-header-value");
        assert!(bucket.starts_with("palisade:rl:r:l:"));
        assert!(!bucket.contains("secret"));
        assert_eq!(bucket.len(), "palisade:rl:r:l:".len() + 32);
        // The first 16 bytes of SHA-256("abc"), as hex (FIPS 180-2 test vector).
        assert_eq!(
            SharedStore::bucket("r", "l", b"abc"),
            "palisade:rl:r:l:ba7816bf8f01cfea414140de5dae2223"
        );
    }
}
