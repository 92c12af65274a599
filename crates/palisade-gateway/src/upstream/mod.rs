//! Upstream clusters: their targets, how a target is chosen, and the pooled client that reaches them.

mod health;
pub mod pool;
pub mod tls;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use palisade_core::config::{Balance, ClusterConfig, PassiveHealthConfig, RetryOn, UpstreamProtocol};
use palisade_telemetry::Metrics;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use tower::retry::budget::{Budget, TpsBudget};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type on both sides of the proxy.
pub type ProxyBody = BoxBody<Bytes, BoxError>;
pub type UpstreamClient = Client<HttpConnector, ProxyBody>;

/// One upstream address with its live state.
pub struct Target {
    /// Position in the cluster's target list (the key of per-target pools).
    index: usize,
    pub address: String,
    pub authority: http::uri::Authority,
    in_flight: AtomicUsize,
    active_healthy: AtomicBool,
    ejected_until_ms: AtomicU64,
    consecutive_failures: AtomicU32,
    /// Ejections that followed each other closely (each doubles the next one's length); back to 0
    /// once the target has stayed in rotation as long as its last ejection lasted.
    ejections_in_a_row: AtomicU32,
    healthy_gauge: Gauge,
    ejections: Counter,
    /// Recent time to the response head, exponentially weighted (1/16 per exchange), microseconds.
    latency_us: AtomicU64,
}

impl Target {
    /// Counts one exchange's time to the response head in the target's recent latency. Updates
    /// that race may lose one another: it is a display value, not worth a lock.
    pub fn observe_latency(&self, elapsed: Duration) {
        let sample = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let current = self.latency_us.load(Ordering::Relaxed);
        let next = if current == 0 {
            sample
        } else {
            current - current / 16 + sample / 16
        };
        self.latency_us.store(next.max(1), Ordering::Relaxed);
    }

    /// In rotation: passing active checks and not ejected by passive ones.
    fn available(&self, now_ms: u64) -> bool {
        self.active_healthy.load(Ordering::Relaxed) && self.ejected_until_ms.load(Ordering::Relaxed) <= now_ms
    }

    fn update_gauge(&self, now_ms: u64) {
        self.healthy_gauge.set(i64::from(self.available(now_ms)));
    }
}

/// Whether a target is in rotation, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetHealth {
    Healthy,
    /// Failing its active health checks.
    Unhealthy,
    /// Taken out by passive health after failures, for a while.
    Ejected,
}

/// A target's state as the console shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TargetStatus {
    pub address: String,
    pub health: TargetHealth,
    pub ejected_for_seconds: Option<u64>,
    pub ejections: u64,
    pub in_flight: usize,
    /// Recent time to the response head; `None` before the first exchange.
    pub latency_ms: Option<f64>,
}

/// Counts a request in flight on a target for as long as it lives (least-request balancing).
pub struct InFlight(Arc<Target>);

impl InFlight {
    pub fn target(&self) -> &Arc<Target> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How an attempt on a target ended, as far as passive health is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
}

/// How a cluster's requests travel: HTTP/1 over per-worker pools of single connections, or HTTP/2
/// multiplexed over per-worker clients.
enum Transport {
    Http1(Vec<Arc<pool::Http1Pool>>),
    Http2(Vec<UpstreamClient>),
}

/// Why an exchange with an upstream failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Refused or reset while connecting: the request was never sent.
    Unreachable,
    ConnectTimeout,
    /// The TLS handshake failed: the target's identity did not verify, or it refused ours.
    TlsHandshake,
    /// The connection broke after the request was (maybe) sent.
    Exchange,
}

#[derive(Debug, thiserror::Error)]
#[error("{kind:?}: {source}")]
pub struct UpstreamError {
    pub kind: FailureKind,
    #[source]
    source: BoxError,
}

impl UpstreamError {
    /// Failed before the request could reach the upstream, so another target may be tried.
    pub fn is_connect(&self) -> bool {
        matches!(
            self.kind,
            FailureKind::Unreachable | FailureKind::ConnectTimeout | FailureKind::TlsHandshake
        )
    }

    /// The connection broke (closed or reset) after the request went out and before a response
    /// head came back: not a malformed answer, and not a timeout.
    pub fn is_reset(&self) -> bool {
        if self.kind != FailureKind::Exchange {
            return false;
        }
        let mut current: Option<&(dyn std::error::Error + 'static)> = Some(self.source.as_ref());
        while let Some(error) = current {
            if let Some(hyper) = error.downcast_ref::<hyper::Error>() {
                if hyper.is_incomplete_message() || hyper.is_canceled() || hyper.is_closed() {
                    return true;
                }
                if hyper.is_parse() || hyper.is_timeout() || hyper.is_user() {
                    return false;
                }
            }
            if let Some(io) = error.downcast_ref::<std::io::Error>() {
                return matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::BrokenPipe
                        | std::io::ErrorKind::UnexpectedEof
                );
            }
            current = error.source();
        }
        false
    }
}

/// A send that failed, with the request when it never reached the target (see [`pool::Failed`]).
#[derive(Debug)]
pub struct SendFailure {
    pub error: UpstreamError,
    pub unsent: Option<Request<ProxyBody>>,
}

impl From<pool::Failed> for SendFailure {
    fn from(failed: pool::Failed) -> Self {
        Self {
            error: failed.error.into(),
            unsent: failed.unsent,
        }
    }
}

impl From<hyper_util::client::legacy::Error> for SendFailure {
    fn from(error: hyper_util::client::legacy::Error) -> Self {
        Self {
            error: error.into(),
            unsent: None,
        }
    }
}

impl From<pool::SendError> for UpstreamError {
    fn from(error: pool::SendError) -> Self {
        let kind = match &error {
            pool::SendError::Connect(_) => FailureKind::Unreachable,
            pool::SendError::ConnectTimeout => FailureKind::ConnectTimeout,
            pool::SendError::Handshake(_) => FailureKind::TlsHandshake,
            pool::SendError::Exchange(_) => FailureKind::Exchange,
        };
        Self {
            kind,
            source: Box::new(error),
        }
    }
}

impl From<hyper_util::client::legacy::Error> for UpstreamError {
    fn from(error: hyper_util::client::legacy::Error) -> Self {
        let kind = match error.is_connect() {
            true if has_timeout_source(&error) => FailureKind::ConnectTimeout,
            true => FailureKind::Unreachable,
            false => FailureKind::Exchange,
        };
        Self {
            kind,
            source: Box::new(error),
        }
    }
}

fn has_timeout_source(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::TimedOut;
        }
        if error.to_string().contains("timed out") {
            return true;
        }
        current = error.source();
    }
    false
}

pub struct Cluster {
    pub name: String,
    pub targets: Vec<Arc<Target>>,
    transport: Transport,
    pub request_timeout: Duration,
    pub retry_attempts: u32,
    /// Whether a 503 answer is retried (`retries.on: [unavailable]`).
    pub retry_unavailable: bool,
    /// Whether a connect failure is retried (`retries.on: [connect_failure]`, the default).
    pub retry_connect_failure: bool,
    /// Whether a connection broken before the response head is retried (`retries.on: [reset]`, the
    /// default).
    pub retry_reset: bool,
    pub upstream_duration: Histogram,
    pub retries: Counter,
    balance: Balance,
    passive: PassiveHealthConfig,
    budget: TpsBudget,
    epoch: Instant,
    next: AtomicUsize,
    /// Identifies the settings this cluster was built from, to keep it (pool, health) across reloads.
    pub fingerprint: String,
    /// The one SPIFFE ID the targets must present (`tls.spiffe_id` without a wildcard): while it is
    /// quarantined, nothing is sent here.
    pub expected_identity: Option<String>,
    health_task: Option<tokio::task::AbortHandle>,
    /// TLS towards the targets, replaced on reload (new connections use the current value).
    pub tls: Arc<ArcSwapOption<tls::UpstreamTls>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(task) = &self.health_task {
            task.abort();
        }
    }
}

impl Cluster {
    /// Builds the cluster and starts its health checks (needs a Tokio runtime).
    pub fn start(
        name: &str,
        config: &ClusterConfig,
        tls: Option<Arc<tls::UpstreamTls>>,
        metrics: &Metrics,
        workers: usize,
    ) -> Arc<Cluster> {
        let tls = Arc::new(ArcSwapOption::new(tls));
        let targets: Vec<Arc<Target>> = config
            .targets
            .iter()
            .filter_map(|t| {
                let authority: http::uri::Authority = t.value.parse().ok()?;
                Some((t, authority))
            })
            .enumerate()
            .map(|(index, (t, authority))| {
                let healthy_gauge = metrics.upstream_healthy(name, &t.value);
                healthy_gauge.set(1);
                Arc::new(Target {
                    index,
                    address: t.value.clone(),
                    authority,
                    in_flight: AtomicUsize::new(0),
                    active_healthy: AtomicBool::new(true),
                    ejected_until_ms: AtomicU64::new(0),
                    consecutive_failures: AtomicU32::new(0),
                    ejections_in_a_row: AtomicU32::new(0),
                    healthy_gauge,
                    ejections: metrics.upstream_ejections(name, &t.value),
                    latency_us: AtomicU64::new(0),
                })
            })
            .collect();
        let workers = workers.max(1);
        let transport = match config.protocol {
            UpstreamProtocol::Http1 => Transport::Http1(
                (0..workers)
                    .map(|_| {
                        let (connect, idle) = (config.connect_timeout.get(), config.idle_timeout.get());
                        Arc::new(pool::Http1Pool::new(
                            targets.len(),
                            connect,
                            idle,
                            config.max_idle_per_target,
                            tls.clone(),
                        ))
                    })
                    .collect(),
            ),
            UpstreamProtocol::Http2 => Transport::Http2((0..workers).map(|_| build_client(config)).collect()),
        };
        let epoch = Instant::now();
        let health_task = config.health_check.as_ref().map(|check| {
            // TLS clusters are probed over TLS through a pool of their own that keeps no idle connection.
            let prober = match config.tls {
                Some(_) => health::Prober::Direct(Arc::new(pool::Http1Pool::new(
                    targets.len(),
                    config.connect_timeout.get(),
                    config.idle_timeout.get(),
                    0,
                    tls.clone(),
                ))),
                None => health::Prober::Client(Box::new(build_client(config))),
            };
            let checker = health::ActiveChecker::new(check, targets.clone(), prober, epoch);
            tokio::spawn(checker.run()).abort_handle()
        });
        let retries = &config.retries;
        Arc::new(Cluster {
            name: name.to_string(),
            targets,
            transport,
            request_timeout: config.request_timeout.get(),
            retry_attempts: retries.attempts,
            retry_unavailable: retries.on.contains(&RetryOn::Unavailable),
            retry_connect_failure: retries.on.contains(&RetryOn::ConnectFailure),
            retry_reset: retries.on.contains(&RetryOn::Reset),
            upstream_duration: metrics.upstream_duration(name),
            retries: metrics.upstream_retries(name),
            balance: config.balance,
            passive: config.passive_health.clone(),
            budget: TpsBudget::new(
                Duration::from_secs(10),
                retries.budget_min_per_second,
                retries.budget_ratio,
            ),
            epoch,
            next: AtomicUsize::new(0),
            fingerprint: fingerprint(config),
            expected_identity: config
                .tls
                .as_ref()
                .and_then(|tls| tls.value.spiffe_id.as_ref())
                .map(|id| id.value.clone())
                .filter(|id| !id.contains('*')),
            health_task,
            tls,
        })
    }

    /// Sends `request` (origin-form URI) to `target` over the current worker's connections. Over
    /// HTTP/1 a request that could not be sent comes back in the failure; HTTP/2's pooled client
    /// keeps it.
    pub async fn send(
        &self,
        target: &Target,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, SendFailure> {
        let worker = crate::workers::current_index();
        match &self.transport {
            Transport::Http1(pools) => {
                let response = pools[worker % pools.len()]
                    .send(target.index, &target.address, request)
                    .await?;
                Ok(response.map(|body| body.map_err(Into::into).boxed()))
            }
            Transport::Http2(clients) => {
                // The pooled HTTP/2 client finds its connection from the absolute URI.
                let mut parts = request.uri().clone().into_parts();
                parts.scheme = Some(http::uri::Scheme::HTTP);
                parts.authority = Some(target.authority.clone());
                if let Ok(absolute) = Uri::from_parts(parts) {
                    *request.uri_mut() = absolute;
                }
                let response = clients[worker % clients.len()].request(request).await?;
                Ok(response.map(|body| body.map_err(Into::into).boxed()))
            }
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Each target's state now, for the console.
    pub fn status(&self) -> Vec<TargetStatus> {
        let now = self.now_ms();
        self.targets
            .iter()
            .map(|target| {
                let ejected_until = target.ejected_until_ms.load(Ordering::Relaxed);
                let health = if ejected_until > now {
                    TargetHealth::Ejected
                } else if !target.active_healthy.load(Ordering::Relaxed) {
                    TargetHealth::Unhealthy
                } else {
                    TargetHealth::Healthy
                };
                TargetStatus {
                    address: target.address.clone(),
                    health,
                    ejected_for_seconds: (ejected_until > now).then(|| (ejected_until - now).div_ceil(1000)),
                    ejections: target.ejections.get(),
                    in_flight: target.in_flight.load(Ordering::Relaxed),
                    latency_ms: match target.latency_us.load(Ordering::Relaxed) {
                        0 => None,
                        us => Some(us as f64 / 1000.0),
                    },
                }
            })
            .collect()
    }

    /// Whether any target is in rotation (for `/readyz`).
    pub fn has_available_target(&self) -> bool {
        let now = self.now_ms();
        self.targets.iter().any(|t| t.available(now))
    }

    /// Chooses a target in rotation, avoiding `avoid` (the one that just failed) when there is another.
    pub fn pick(&self, avoid: Option<&Arc<Target>>) -> Option<InFlight> {
        let now = self.now_ms();
        let usable = |t: &Arc<Target>| t.available(now) && avoid.is_none_or(|a| !Arc::ptr_eq(a, t));
        let chosen = match self.balance {
            Balance::LeastRequest => self.pick_two_choices(&usable),
            Balance::RoundRobin => None,
        }
        .or_else(|| self.pick_round_robin(&usable))
        .or_else(|| avoid.filter(|a| a.available(now)).cloned())?;
        chosen.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(InFlight(chosen))
    }

    fn pick_round_robin(&self, usable: &impl Fn(&Arc<Target>) -> bool) -> Option<Arc<Target>> {
        let count = self.targets.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..count)
            .map(|k| &self.targets[(start + k) % count])
            .find(|t| usable(t))
            .cloned()
    }

    /// Power of two choices: two random targets, the one with fewer requests in flight.
    fn pick_two_choices(&self, usable: &impl Fn(&Arc<Target>) -> bool) -> Option<Arc<Target>> {
        let count = self.targets.len();
        if count == 0 {
            return None;
        }
        let first = rand::random_range(0..count);
        let second = if count > 1 {
            (first + rand::random_range(1..count)) % count
        } else {
            first
        };
        let (a, b) = (&self.targets[first], &self.targets[second]);
        match (usable(a), usable(b)) {
            (true, true) => Some(
                if b.in_flight.load(Ordering::Relaxed) < a.in_flight.load(Ordering::Relaxed) {
                    b
                } else {
                    a
                }
                .clone(),
            ),
            (true, false) => Some(a.clone()),
            (false, true) => Some(b.clone()),
            (false, false) => None,
        }
    }

    /// Feeds passive health: enough failures in a row eject the target, for `ejection_time` doubled
    /// for each ejection that closely followed the last (up to `max_ejection_time`). Failures of
    /// requests still in flight while it is out are the same outage, not another ejection.
    pub fn record(&self, target: &Target, outcome: Outcome) {
        let now = self.now_ms();
        match outcome {
            Outcome::Success => {
                target.consecutive_failures.store(0, Ordering::Relaxed);
                let in_a_row = target.ejections_in_a_row.load(Ordering::Relaxed);
                if in_a_row > 0 {
                    // Back for as long as the last ejection lasted: the next one starts short again.
                    let back_since = target.ejected_until_ms.load(Ordering::Relaxed);
                    if now >= back_since.saturating_add(self.ejection_ms(in_a_row)) {
                        target.ejections_in_a_row.store(0, Ordering::Relaxed);
                    }
                }
                if target.healthy_gauge.get() == 0 {
                    target.update_gauge(now);
                }
            }
            Outcome::Failure => {
                let threshold = self.passive.consecutive_failures;
                if threshold == 0 || target.ejected_until_ms.load(Ordering::Relaxed) > now {
                    return;
                }
                let failures = target.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
                if failures >= threshold {
                    let in_a_row = target.ejections_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
                    let until = now.saturating_add(self.ejection_ms(in_a_row));
                    target.ejected_until_ms.store(until, Ordering::Relaxed);
                    target.consecutive_failures.store(0, Ordering::Relaxed);
                    target.ejections.inc();
                    target.update_gauge(now);
                    tracing::warn!(cluster = %self.name, target = %target.address, ejection = in_a_row, "target ejected after consecutive failures");
                }
            }
        }
    }

    /// How long the `nth` ejection in a row lasts: `ejection_time` × 2^(n-1), at most
    /// `max_ejection_time`.
    fn ejection_ms(&self, nth: u32) -> u64 {
        let base = u64::try_from(self.passive.ejection_time.get().as_millis()).unwrap_or(u64::MAX / 2);
        let max = u64::try_from(self.passive.max_ejection().as_millis()).unwrap_or(u64::MAX / 2);
        base.saturating_mul(1u64 << nth.saturating_sub(1).min(32))
            .min(max.max(base))
    }

    /// Every request pays into the retry budget; a retry may happen only if it can withdraw.
    pub fn deposit_request(&self) {
        self.budget.deposit();
    }

    pub fn withdraw_retry(&self) -> bool {
        self.budget.withdraw()
    }
}

fn build_client(config: &ClusterConfig) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(config.connect_timeout.get()));
    connector.set_nodelay(true);
    connector.set_keepalive(Some(Duration::from_secs(60)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(config.idle_timeout.get())
        .pool_max_idle_per_host(config.max_idle_per_target)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .http2_only(config.protocol == UpstreamProtocol::Http2)
        .build(connector)
}

pub(crate) fn fingerprint(config: &ClusterConfig) -> String {
    let targets: Vec<&str> = config.targets.iter().map(|t| t.value.as_str()).collect();
    let health = config.health_check.as_ref().map(|h| {
        (
            h.path.value.as_str(),
            h.interval,
            h.timeout,
            h.healthy_threshold,
            h.unhealthy_threshold,
        )
    });
    // TLS settings are in: a cluster that gains or loses TLS needs new pools. Only the files' contents
    // may change under a kept cluster (swapped through `Cluster::tls`).
    let tls = config.tls.as_ref().map(|t| format!("{:?}", t.value));
    format!(
        "{targets:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{}|{health:?}|{:?}|{:?}|{tls:?}",
        config.protocol,
        config.balance,
        config.connect_timeout,
        config.request_timeout,
        config.idle_timeout,
        config.max_idle_per_target,
        config.passive_health,
        config.retries
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(balance: &str, targets: usize) -> Arc<Cluster> {
        let list: Vec<String> = (0..targets).map(|i| format!("'127.0.0.1:{}'", 1000 + i)).collect();
        let text = format!(
            "listeners: [{{name: a, address: '127.0.0.1:1'}}]\nclusters: {{c: {{targets: [{}], balance: {balance}, passive_health: {{consecutive_failures: 2, ejection_time: 1h, max_ejection_time: 2h}}}}}}\nroutes: [{{name: r, match: {{prefix: /}}, cluster: c, public: true}}]\n",
            list.join(", ")
        );
        let config = palisade_core::parse_str("t.yaml", &text, None).expect("valid");
        Cluster::start("c", &config.clusters["c"].value, None, &Metrics::new(), 1)
    }

    #[tokio::test]
    async fn round_robin_visits_every_target_in_turn() {
        let cluster = cluster("round_robin", 3);
        let picks: Vec<String> = (0..6)
            .map(|_| cluster.pick(None).unwrap().target().address.clone())
            .collect();
        assert_eq!(picks[0..3], picks[3..6]);
        let distinct: std::collections::BTreeSet<_> = picks.iter().collect();
        assert_eq!(distinct.len(), 3);
    }

    #[tokio::test]
    async fn least_request_prefers_the_idle_target() {
        let cluster = cluster("least_request", 2);
        let busy = cluster.pick(None).unwrap();
        let busy_address = busy.target().address.clone();
        let _more: Vec<InFlight> = (0..5)
            .map(|_| cluster.pick(Some(&busy.target().clone())).unwrap())
            .collect();
        // The first target now has one request, the other five; the two-choice pick takes the first.
        for _ in 0..20 {
            assert_eq!(cluster.pick(None).unwrap().target().address, busy_address);
        }
    }

    #[tokio::test]
    async fn one_outage_is_one_ejection_and_closely_following_ones_last_longer() {
        let cluster = cluster("round_robin", 2);
        let target = cluster.targets[0].clone();
        for _ in 0..10 {
            cluster.record(&target, Outcome::Failure);
        }
        assert_eq!(target.ejections.get(), 1, "failures while ejected are the same outage");
        let first = target.ejected_until_ms.load(Ordering::Relaxed) - cluster.now_ms();
        // Back in rotation (as an active check would bring it), then failing again at once.
        target.ejected_until_ms.store(0, Ordering::Relaxed);
        cluster.record(&target, Outcome::Success);
        cluster.record(&target, Outcome::Failure);
        cluster.record(&target, Outcome::Failure);
        assert_eq!(target.ejections.get(), 2);
        let second = target.ejected_until_ms.load(Ordering::Relaxed) - cluster.now_ms();
        assert!(
            second > first + first / 2,
            "the second ejection is twice as long: {first} ms, then {second} ms"
        );
        assert_eq!(cluster.ejection_ms(1), 3_600_000);
        assert_eq!(cluster.ejection_ms(2), 7_200_000, "capped at max_ejection_time");
        assert_eq!(cluster.ejection_ms(40), 7_200_000);
    }

    #[tokio::test]
    async fn consecutive_failures_eject_and_the_others_take_over() {
        let cluster = cluster("round_robin", 2);
        let failing = cluster.targets[0].clone();
        cluster.record(&failing, Outcome::Failure);
        assert!(cluster.targets.iter().all(|t| t.available(cluster.now_ms())));
        cluster.record(&failing, Outcome::Failure);
        for _ in 0..4 {
            assert_ne!(cluster.pick(None).unwrap().target().address, failing.address);
        }
        cluster.record(&cluster.targets[1].clone(), Outcome::Failure);
        cluster.record(&cluster.targets[1].clone(), Outcome::Failure);
        assert!(cluster.pick(None).is_none(), "no target in rotation means no pick");
        assert!(!cluster.has_available_target());
    }
}
