//! Anomaly detection on the live decision stream. Every answered request is observed (route, client,
//! status, reason code); once a second, `tick` evaluates the detectors and returns the alerts that
//! opened or closed:
//!
//! - `rate_spike` (per route): requests per tick against a streaming baseline (robust z-score and a
//!   ratio, after a warm-up; the baseline does not learn from a spike it is alerting on);
//! - `auth_failures` (per client address): refused credentials in a sliding minute (stuffing, brute force);
//! - `scanning` (per client): distinct unknown paths (404/405) in a sliding minute;
//! - `probing` (per client address, and per authenticated principal as `principal:<subject>`):
//!   authorization refusals (403) in a sliding minute;
//! - `upstream_errors` (per cluster): the share of failed upstream exchanges over ten seconds;
//! - `upstream_latency` (per cluster): mean upstream latency per tick against a streaming baseline;
//! - `targeted_subject` (per attempted subject): refused credentials naming one principal, from any
//!   number of addresses (distributed brute force against one account).
//!
//! State per client is bounded: idle clients are forgotten, and past `max_clients` the least
//! recently seen go first, so an attacker spraying addresses costs bounded memory.
//! Time is passed in (seconds), which makes the detectors deterministic to test and to simulate.
#![forbid(unsafe_code)]

pub mod alerts;
pub mod baseline;
pub mod runtime;
pub mod window;

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::BuildHasher;
use std::net::IpAddr;

use alerts::Finding;
pub use alerts::{Alert, AlertBook, AlertChange, Severity};
use baseline::Baseline;
use palisade_core::decision::{Decision, Stage};
use window::{DistinctCount, SlidingCount};

/// One answered request, as the detectors see it.
#[derive(Debug, Clone, Copy)]
pub struct RequestRecord<'a> {
    /// `None` when no route matched.
    pub route: Option<&'a str>,
    pub client: IpAddr,
    pub status: u16,
    /// What the gateway decided when it answered itself.
    pub decision: Option<Decision>,
    /// [`hash_path`] of the normalized path, for 404/405 answers (distinct unknown paths are
    /// counted by hash; no path is kept).
    pub path_hash: u64,
    /// The cluster, when the request was sent upstream.
    pub cluster: Option<&'a str>,
    /// How long the upstream took to answer (milliseconds), when it did.
    pub upstream_ms: Option<f64>,
    /// On a refused credential: the subject it claimed, unverified (e.g. a forged token's `sub`).
    pub attempted_subject: Option<&'a str>,
    /// The authenticated principal's subject (needed on 403 answers only).
    pub principal: Option<&'a str>,
}

/// A 403 of the authorization stage: what probing for permissions looks like (a blocked client or an
/// IP rule is not probing).
fn refused_by_authorization(record: &RequestRecord<'_>) -> bool {
    record.status == 403 && record.decision.is_some_and(|d| d.stage == Stage::Authorize)
}

/// The hash [`RequestRecord::path_hash`] expects. Keyed with a random key per process: the scanning
/// sketch keeps only a few bits of it, and a client that could compute them could choose paths that
/// share one.
pub fn hash_path(path: &str) -> u64 {
    static KEY: std::sync::OnceLock<RandomState> = std::sync::OnceLock::new();
    KEY.get_or_init(RandomState::new).hash_one(path)
}

/// Exchanges with one cluster, summed (a gateway tallies them in atomics between ticks).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ClusterTally {
    pub requests: u32,
    /// Answered 502, 503 or 504.
    pub failures: u32,
    /// Sum of the latencies of the answered exchanges, and how many there were.
    pub latency_ms: f64,
    pub answered: u32,
}

/// Whether the per-client detectors need to see an answer with this status (the rest are counted
/// per route and cluster only).
pub fn concerns_clients(status: u16) -> bool {
    matches!(status, 401 | 403 | 404 | 405)
}

#[derive(Debug, Clone, PartialEq)]
pub struct DetectorConfig {
    pub rate_spike: RateSpikeConfig,
    pub auth_failures: ThresholdConfig,
    pub scanning: ThresholdConfig,
    pub probing: ThresholdConfig,
    pub upstream_errors: UpstreamConfig,
    pub upstream_latency: LatencyConfig,
    /// Refused credentials naming one subject, from any address.
    pub targeted_subject: ThresholdConfig,
    /// Clients tracked at once; beyond it the least recently seen are forgotten.
    pub max_clients: usize,
    /// Ticks a condition must stay clear before its alert closes.
    pub clear_ticks: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RateSpikeConfig {
    pub enabled: bool,
    /// Baseline half-life, in ticks.
    pub half_life: f64,
    /// Ticks of history before the detector may fire.
    pub warm_up: u64,
    /// Robust z-score that counts as a spike…
    pub min_score: f64,
    /// …when also at least this many times the baseline…
    pub min_ratio: f64,
    /// …and at least this many requests per tick…
    pub min_count: f64,
    /// …for this many ticks in a row.
    pub sustain: u32,
}

/// Events of one kind from one client in a sliding window: open at `open_at`, close below `close_below`.
#[derive(Debug, Clone, PartialEq)]
pub struct ThresholdConfig {
    pub enabled: bool,
    pub window_seconds: usize,
    pub open_at: u32,
    pub close_below: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    pub enabled: bool,
    pub window_seconds: usize,
    pub min_requests: u32,
    /// Failed share that opens an alert.
    pub open_ratio: f64,
}

/// Mean upstream latency per tick: fires at `min_ratio` × the baseline and at least `min_increase_ms`
/// above it, for `sustain` ticks, once `warm_up` ticks with traffic were learned.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyConfig {
    pub enabled: bool,
    pub half_life: f64,
    pub warm_up: u64,
    pub min_ratio: f64,
    pub min_increase_ms: f64,
    /// Exchanges in a tick below which the tick is neither learned nor judged.
    pub min_requests: u32,
    pub sustain: u32,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            rate_spike: RateSpikeConfig {
                enabled: true,
                half_life: 300.0,
                warm_up: 60,
                min_score: 8.0,
                min_ratio: 3.0,
                min_count: 20.0,
                sustain: 2,
            },
            auth_failures: ThresholdConfig {
                enabled: true,
                window_seconds: 60,
                open_at: 20,
                close_below: 5,
            },
            scanning: ThresholdConfig {
                enabled: true,
                window_seconds: 60,
                open_at: 50,
                close_below: 10,
            },
            probing: ThresholdConfig {
                enabled: true,
                window_seconds: 60,
                open_at: 30,
                close_below: 5,
            },
            upstream_errors: UpstreamConfig {
                enabled: true,
                window_seconds: 10,
                min_requests: 20,
                open_ratio: 0.25,
            },
            upstream_latency: LatencyConfig {
                enabled: true,
                half_life: 300.0,
                warm_up: 60,
                min_ratio: 3.0,
                min_increase_ms: 100.0,
                min_requests: 5,
                sustain: 3,
            },
            targeted_subject: ThresholdConfig {
                enabled: true,
                window_seconds: 300,
                open_at: 50,
                close_below: 10,
            },
            max_clients: 100_000,
            clear_ticks: 30,
        }
    }
}

struct RouteState {
    since_tick: u32,
    baseline: Baseline,
    spiking_for: u32,
}

/// Everything kept about one client address: fixed size, inline in the map (no allocation of its
/// own), so forgetting clients gives their memory back.
struct ClientState {
    last_seen: u64,
    auth_failures: SlidingCount,
    forbidden: SlidingCount,
    /// Hashes of the paths of recent 404/405 answers.
    unknown_paths: DistinctCount,
}

struct ClusterState {
    requests: SlidingCount,
    failures: SlidingCount,
    /// Latency of this tick's answered exchanges (sum, count), the learned baseline and the run of
    /// slow ticks.
    latency_ms: f64,
    answered: u32,
    latency: Baseline,
    slow_for: u32,
}

struct SubjectState {
    last_seen: u64,
    failures: SlidingCount,
}

pub struct Detector {
    config: DetectorConfig,
    routes: HashMap<String, RouteState>,
    clients: HashMap<IpAddr, ClientState>,
    clusters: HashMap<String, ClusterState>,
    subjects: HashMap<String, SubjectState>,
    /// Authorization refusals per authenticated principal.
    principals: HashMap<String, SubjectState>,
    alerts: AlertBook,
    /// The highest score of each detector at the last tick (1.0 = at its threshold).
    scores: BTreeMap<&'static str, f64>,
}

const RATE_SPIKE: &str = "rate_spike";
const AUTH_FAILURES: &str = "auth_failures";
const SCANNING: &str = "scanning";
const PROBING: &str = "probing";
const UPSTREAM_ERRORS: &str = "upstream_errors";
const UPSTREAM_LATENCY: &str = "upstream_latency";
const TARGETED_SUBJECT: &str = "targeted_subject";
/// How a principal is named as an alert subject (never confused with an address).
pub const PRINCIPAL_PREFIX: &str = "principal:";
/// Attempted subjects are text a client chose: kept short.
const MAX_SUBJECT_BYTES: usize = 256;
/// A client unseen this long is forgotten (longer than every window).
const CLIENT_IDLE_SECONDS: u64 = 180;

impl Detector {
    pub fn new(config: DetectorConfig) -> Self {
        let alerts = AlertBook::new(config.clear_ticks, 1000);
        Self {
            config,
            routes: HashMap::new(),
            clients: HashMap::new(),
            clusters: HashMap::new(),
            subjects: HashMap::new(),
            principals: HashMap::new(),
            alerts,
            scores: BTreeMap::new(),
        }
    }

    /// Applies new settings (a reload). Per-client and per-cluster counts start over, since their
    /// windows may have changed; route baselines and open alerts are kept.
    pub fn reconfigure(&mut self, config: DetectorConfig) {
        if config == self.config {
            return;
        }
        self.clients.clear();
        self.clusters.clear();
        self.subjects.clear();
        self.principals.clear();
        self.alerts.set_clear_ticks(config.clear_ticks);
        self.config = config;
    }

    /// The highest score of each detector at the last tick: the measured value over its threshold.
    pub fn scores(&self) -> &BTreeMap<&'static str, f64> {
        &self.scores
    }

    /// Records one answered request at second `now`.
    pub fn observe(&mut self, now: u64, record: &RequestRecord<'_>) {
        if let Some(route) = record.route {
            self.count_route(route, 1);
        }
        if let Some(cluster) = record.cluster {
            let ms = record.upstream_ms.filter(|ms| ms.is_finite() && *ms >= 0.0);
            let exchanges = ClusterTally {
                requests: 1,
                failures: u32::from(matches!(record.status, 502..=504)),
                latency_ms: ms.unwrap_or(0.0),
                answered: u32::from(ms.is_some()),
            };
            self.count_cluster(now, cluster, &exchanges);
        }
        self.observe_client(now, record);
    }

    /// Adds `count` requests to a route's current second (a gateway tallies them without a queue).
    pub fn count_route(&mut self, route: &str, count: u32) {
        if let Some(state) = self.routes.get_mut(route) {
            state.since_tick = state.since_tick.saturating_add(count);
            return;
        }
        let state = RouteState {
            since_tick: count,
            baseline: Baseline::new(self.config.rate_spike.half_life),
            spiking_for: 0,
        };
        self.routes.insert(route.to_string(), state);
    }

    /// Adds exchanges with a cluster's targets at second `now`.
    pub fn count_cluster(&mut self, now: u64, cluster: &str, tally: &ClusterTally) {
        if !self.clusters.contains_key(cluster) {
            let window = self.config.upstream_errors.window_seconds;
            let state = ClusterState {
                requests: SlidingCount::new(window),
                failures: SlidingCount::new(window),
                latency_ms: 0.0,
                answered: 0,
                latency: Baseline::new(self.config.upstream_latency.half_life),
                slow_for: 0,
            };
            self.clusters.insert(cluster.to_string(), state);
        }
        let Some(state) = self.clusters.get_mut(cluster) else {
            return;
        };
        state.requests.add(now, tally.requests);
        state.failures.add(now, tally.failures);
        state.latency_ms += tally.latency_ms;
        state.answered = state.answered.saturating_add(tally.answered);
    }

    /// The per-client and per-subject part of one answer (refusals and unknown paths); route and
    /// cluster counts are left to [`Detector::count_route`] and [`Detector::count_cluster`].
    pub fn observe_client(&mut self, now: u64, record: &RequestRecord<'_>) {
        if let (401, Some(subject)) = (record.status, record.attempted_subject) {
            let window = self.config.targeted_subject.window_seconds;
            count_for(&mut self.subjects, self.config.max_clients, window, now, subject);
        }
        if let (true, Some(principal)) = (refused_by_authorization(record), record.principal) {
            let window = self.config.probing.window_seconds;
            count_for(&mut self.principals, self.config.max_clients, window, now, principal);
        }
        if !concerns_clients(record.status) {
            return;
        }
        let client = self.client(now, record.client);
        match record.status {
            401 => client.auth_failures.add(now, 1),
            403 if refused_by_authorization(record) => client.forbidden.add(now, 1),
            404 | 405 => client.unknown_paths.add(now, record.path_hash),
            _ => {}
        }
    }

    fn client(&mut self, now: u64, address: IpAddr) -> &mut ClientState {
        if !self.clients.contains_key(&address) && self.clients.len() >= self.config.max_clients {
            self.forget_clients(now);
        }
        let (auth, probing, scanning) = (
            self.config.auth_failures.window_seconds,
            self.config.probing.window_seconds,
            self.config.scanning.window_seconds,
        );
        let state = self.clients.entry(address).or_insert_with(|| ClientState {
            last_seen: now,
            auth_failures: SlidingCount::new(auth),
            forbidden: SlidingCount::new(probing),
            unknown_paths: DistinctCount::new(scanning),
        });
        state.last_seen = now;
        state
    }

    /// Makes room: idle clients first; if that is not enough, the least recently seen eighth.
    fn forget_clients(&mut self, now: u64) {
        self.clients
            .retain(|_, state| now.saturating_sub(state.last_seen) < CLIENT_IDLE_SECONDS);
        if self.clients.len() >= self.config.max_clients {
            let mut seen: Vec<u64> = self.clients.values().map(|s| s.last_seen).collect();
            let cut = seen.len() / 8;
            seen.select_nth_unstable(cut);
            let oldest_kept = seen[cut];
            self.clients.retain(|_, state| state.last_seen > oldest_kept);
        }
    }

    pub fn tracked_clients(&self) -> usize {
        self.clients.len()
    }

    /// Evaluates every detector for second `now`; returns alerts that opened or closed.
    pub fn tick(&mut self, now: u64) -> Vec<AlertChange> {
        let mut findings = Vec::new();
        self.scores.clear();
        self.evaluate_routes(&mut findings);
        self.evaluate_clients(now, &mut findings);
        self.evaluate_clusters(now, &mut findings);
        self.evaluate_subjects(now, &mut findings);
        for finding in &mut findings {
            // A disabled detector still closes the alerts it had open.
            if !self.enabled(finding.detector) {
                finding.firing = false;
                finding.score = 0.0;
            }
            let score = self.scores.entry(finding.detector).or_insert(0.0);
            *score = score.max(finding.score);
        }
        findings
            .into_iter()
            .filter_map(|finding| self.alerts.apply(now, finding))
            .collect()
    }

    fn enabled(&self, detector: &str) -> bool {
        match detector {
            RATE_SPIKE => self.config.rate_spike.enabled,
            AUTH_FAILURES => self.config.auth_failures.enabled,
            SCANNING => self.config.scanning.enabled,
            PROBING => self.config.probing.enabled,
            UPSTREAM_LATENCY => self.config.upstream_latency.enabled,
            TARGETED_SUBJECT => self.config.targeted_subject.enabled,
            _ => self.config.upstream_errors.enabled,
        }
    }

    fn evaluate_routes(&mut self, findings: &mut Vec<Finding>) {
        let config = &self.config.rate_spike;
        for (route, state) in &mut self.routes {
            let count = f64::from(std::mem::take(&mut state.since_tick));
            let baseline = &mut state.baseline;
            let mean = baseline.mean();
            let warmed_up = baseline.samples() >= config.warm_up;
            let unusual = warmed_up
                && baseline.score(count, mean.sqrt().max(1.0)) >= config.min_score
                && count >= config.min_ratio * mean.max(1.0)
                && count >= config.min_count;
            state.spiking_for = if unusual { state.spiking_for + 1 } else { 0 };
            let open = self.alerts.is_open(RATE_SPIKE, route);
            // While a spike is being reported the baseline does not learn it as the new normal.
            if !unusual && !open {
                baseline.update(count);
            }
            let firing = state.spiking_for >= config.sustain || (open && count >= config.min_ratio * mean.max(1.0));
            findings.push(Finding {
                detector: RATE_SPIKE,
                subject: route.clone(),
                firing,
                severity: Severity::Medium,
                value: count,
                score: if warmed_up {
                    count / (config.min_ratio * mean.max(1.0)).max(config.min_count)
                } else {
                    0.0
                },
                message: format!("route {route}: {count:.0} requests/s against a baseline of {mean:.1}"),
            });
        }
    }

    fn evaluate_clients(&mut self, now: u64, findings: &mut Vec<Finding>) {
        self.clients
            .retain(|_, state| now.saturating_sub(state.last_seen) < CLIENT_IDLE_SECONDS);
        release_spare(&mut self.clients);
        // A finding is made only for a client at or above a detector's closing threshold, or one
        // with an open alert: a hundred thousand quiet clients cost no string and no finding a tick.
        let open = |detector| -> HashSet<IpAddr> {
            let subjects = self.alerts.open_subjects(detector);
            subjects.iter().filter_map(|subject| subject.parse().ok()).collect()
        };
        let open_alerts = [open(AUTH_FAILURES), open(PROBING), open(SCANNING)];
        let config = &self.config;
        let mut quiet = [0.0f64; 3];
        for (address, state) in &mut self.clients {
            let counts = [
                (
                    AUTH_FAILURES,
                    &config.auth_failures,
                    state.auth_failures.total(now),
                    Severity::High,
                    "refused credentials",
                ),
                (
                    PROBING,
                    &config.probing,
                    state.forbidden.total(now),
                    Severity::Medium,
                    "forbidden requests",
                ),
                (
                    SCANNING,
                    &config.scanning,
                    state.unknown_paths.estimate(now),
                    Severity::Medium,
                    "distinct unknown paths",
                ),
            ];
            for (index, (detector, threshold_config, count, severity, what)) in counts.into_iter().enumerate() {
                let is_open = open_alerts[index].contains(address);
                if count < threshold_config.close_below && !is_open {
                    quiet[index] = quiet[index].max(f64::from(count) / f64::from(threshold_config.open_at.max(1)));
                    continue;
                }
                let subject = address.to_string();
                let message = format!("{subject}: {count} {what} in {} s", threshold_config.window_seconds);
                findings.push(threshold(
                    &self.alerts,
                    detector,
                    &subject,
                    count,
                    threshold_config,
                    severity,
                    message,
                ));
            }
        }
        for (detector, score) in [AUTH_FAILURES, PROBING, SCANNING].into_iter().zip(quiet) {
            self.note_score(detector, score);
        }
        // Alerts of clients that were forgotten (idle) are evaluated as clear.
        for detector in [AUTH_FAILURES, PROBING, SCANNING] {
            for subject in self.alerts.open_subjects(detector) {
                let tracked = match subject.strip_prefix(PRINCIPAL_PREFIX) {
                    Some(principal) => self.principals.contains_key(principal),
                    None => subject.parse().is_ok_and(|ip: IpAddr| self.clients.contains_key(&ip)),
                };
                if !tracked {
                    findings.push(Finding::clear(detector, subject));
                }
            }
        }
    }

    /// Records a detector's score from subjects that made no finding this tick.
    fn note_score(&mut self, detector: &'static str, score: f64) {
        let score = if self.enabled(detector) { score } else { 0.0 };
        let best = self.scores.entry(detector).or_insert(0.0);
        *best = best.max(score);
    }

    fn evaluate_clusters(&mut self, now: u64, findings: &mut Vec<Finding>) {
        let config = &self.config.upstream_errors;
        let latency = &self.config.upstream_latency;
        for (cluster, state) in &mut self.clusters {
            findings.push(latency_finding(&self.alerts, latency, cluster, state));
            let requests = state.requests.total(now);
            let failures = state.failures.total(now);
            let ratio = if requests == 0 {
                0.0
            } else {
                f64::from(failures) / f64::from(requests)
            };
            let open = self.alerts.is_open(UPSTREAM_ERRORS, cluster);
            let firing = requests >= config.min_requests && ratio >= config.open_ratio
                || open && ratio >= config.open_ratio / 2.0;
            findings.push(Finding {
                detector: UPSTREAM_ERRORS,
                subject: cluster.clone(),
                firing,
                severity: Severity::High,
                value: ratio,
                score: if requests >= config.min_requests {
                    ratio / config.open_ratio
                } else {
                    0.0
                },
                message: format!(
                    "cluster {cluster}: {failures} of {requests} upstream exchanges failed in {} s",
                    config.window_seconds
                ),
            });
        }
    }

    /// Refused credentials naming one subject, from anywhere, and authorization refusals per
    /// principal; forgotten subjects close as clear.
    fn evaluate_subjects(&mut self, now: u64, findings: &mut Vec<Finding>) {
        let probing = &self.config.probing;
        let idle = (probing.window_seconds as u64).max(CLIENT_IDLE_SECONDS);
        self.principals
            .retain(|_, state| now.saturating_sub(state.last_seen) < idle);
        release_spare(&mut self.principals);
        for (principal, state) in &mut self.principals {
            let refusals = state.failures.total(now);
            let subject = format!("{PRINCIPAL_PREFIX}{principal}");
            let message = format!(
                "principal {principal:?}: {refusals} forbidden requests in {} s",
                probing.window_seconds
            );
            findings.push(threshold(
                &self.alerts,
                PROBING,
                &subject,
                refusals,
                probing,
                Severity::Medium,
                message,
            ));
        }
        let config = &self.config.targeted_subject;
        let idle = (config.window_seconds as u64).max(CLIENT_IDLE_SECONDS);
        self.subjects
            .retain(|_, state| now.saturating_sub(state.last_seen) < idle);
        release_spare(&mut self.subjects);
        for (subject, state) in &mut self.subjects {
            let failures = state.failures.total(now);
            findings.push(threshold(
                &self.alerts,
                TARGETED_SUBJECT,
                subject,
                failures,
                config,
                Severity::High,
                format!(
                    "subject {subject:?}: {failures} refused credentials in {} s",
                    config.window_seconds
                ),
            ));
        }
        for subject in self.alerts.open_subjects(TARGETED_SUBJECT) {
            if !self.subjects.contains_key(&subject) {
                findings.push(Finding::clear(TARGETED_SUBJECT, subject));
            }
        }
    }

    pub fn open_alerts(&self) -> Vec<Alert> {
        self.alerts.open_alerts()
    }

    pub fn closed_alerts(&self) -> &[Alert] {
        self.alerts.closed_alerts()
    }
}

/// Gives a map's spare capacity back once most of it is unused (after a flood of addresses has gone
/// idle), keeping room to double.
fn release_spare<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) {
    const KEEP: usize = 256;
    if map.capacity() > KEEP && map.capacity() > 4 * map.len() {
        map.shrink_to((2 * map.len()).max(KEEP));
    }
}

/// Counts one event for `key` in a bounded map of sliding windows (idle keys go first at the cap;
/// if none is idle the event is not counted rather than growing the map).
fn count_for(map: &mut HashMap<String, SubjectState>, max: usize, window: usize, now: u64, key: &str) {
    if key.is_empty() || key.len() > MAX_SUBJECT_BYTES {
        return;
    }
    if !map.contains_key(key) && map.len() >= max {
        map.retain(|_, state| now.saturating_sub(state.last_seen) < CLIENT_IDLE_SECONDS);
        if map.len() >= max {
            return;
        }
    }
    let state = map.entry(key.to_string()).or_insert_with(|| SubjectState {
        last_seen: now,
        failures: SlidingCount::new(window),
    });
    state.last_seen = now;
    state.failures.add(now, 1);
}

/// This tick's mean upstream latency of one cluster against its baseline; learns quiet ticks only.
fn latency_finding(alerts: &AlertBook, config: &LatencyConfig, cluster: &str, state: &mut ClusterState) -> Finding {
    let answered = std::mem::take(&mut state.answered);
    let total = std::mem::take(&mut state.latency_ms);
    let judged = answered >= config.min_requests;
    let mean_ms = if answered == 0 {
        0.0
    } else {
        total / f64::from(answered)
    };
    let baseline = state.latency.mean();
    let warmed_up = state.latency.samples() >= config.warm_up;
    let slow =
        judged && warmed_up && mean_ms >= config.min_ratio * baseline && mean_ms >= baseline + config.min_increase_ms;
    let open = alerts.is_open(UPSTREAM_LATENCY, cluster);
    if judged {
        state.slow_for = if slow { state.slow_for + 1 } else { 0 };
        if !slow && !open {
            state.latency.update(mean_ms);
        }
    }
    // While open, a tick without enough traffic neither confirms nor clears the alert.
    let still_slow = open && (!judged || mean_ms >= baseline + config.min_increase_ms / 2.0);
    let threshold_ms = (config.min_ratio * baseline).max(baseline + config.min_increase_ms);
    Finding {
        detector: UPSTREAM_LATENCY,
        subject: cluster.to_string(),
        firing: state.slow_for >= config.sustain || still_slow,
        severity: Severity::Medium,
        value: mean_ms,
        score: if judged && warmed_up && threshold_ms > 0.0 {
            mean_ms / threshold_ms
        } else {
            0.0
        },
        message: format!(
            "cluster {cluster}: upstream answers in {mean_ms:.0} ms on average against a baseline of {baseline:.0} ms"
        ),
    }
}

/// A count against open/close thresholds, with hysteresis on the value as well.
fn threshold(
    alerts: &AlertBook,
    detector: &'static str,
    subject: &str,
    count: u32,
    config: &ThresholdConfig,
    severity: Severity,
    message: String,
) -> Finding {
    let open = alerts.is_open(detector, subject);
    Finding {
        detector,
        subject: subject.to_string(),
        firing: count >= config.open_at || (open && count >= config.close_below),
        severity,
        value: f64::from(count),
        score: f64::from(count) / f64::from(config.open_at.max(1)),
        message,
    }
}
