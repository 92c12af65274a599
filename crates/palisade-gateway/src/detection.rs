//! The gateway's side of anomaly detection: the observe stage counts every answer in its route's
//! [`DetectionTally`] (a few relaxed atomic additions) and hands only the answers the per-client
//! detectors need (401, 403, 404, 405) to a bounded queue (never waiting; a full queue is counted).
//! One task feeds the detectors, evaluates them once a second, and acts on what opens or closes: an audit event, a webhook notification, the
//! admin API's `/alerts`, and — when the detector asks for it — a response (block or tightened
//! limit) on the client. A second task expires responses and keeps them in step with the other
//! gateways through the shared store.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_core::config::{ClientDetector, DetectionConfig, ResponseAction};
use palisade_detect::{Alert, AlertChange, ClusterTally, Detector, DetectorConfig, RequestRecord};
use palisade_limits::responses::{Action, ActiveResponse, ResponseError, Target};
use palisade_telemetry::webhook::{Webhook, WebhookTarget};
use palisade_telemetry::{AuditEvent, EventKind};
use tokio::sync::{mpsc, watch};

use crate::pipeline::responses::now_secs;
use crate::runtime::Runtime;
use crate::Shared;

/// Requests waiting for the detectors; beyond it they are dropped and counted.
const QUEUE: usize = 65_536;
/// Closed alerts kept for `/alerts`.
const RECENT_ALERTS: usize = 100;

/// One answer the per-client detectors need, as the observe stage hands it over.
pub struct Observation {
    pub client: IpAddr,
    pub status: u16,
    pub decision: Option<palisade_core::decision::Decision>,
    pub path_hash: u64,
    /// On a refused credential: the subject it claimed (unverified).
    pub attempted_subject: Option<String>,
    /// On an authorization refusal: the principal refused.
    pub principal: Option<String>,
}

/// The queue into the detectors and what they found, shared by every runtime of one gateway.
pub struct DetectionFeed {
    queue: mpsc::Sender<Observation>,
    waiting: Mutex<Option<mpsc::Receiver<Observation>>>,
    alerts: Mutex<AlertsView>,
}

/// What `/alerts` shows.
#[derive(Default, Clone, serde::Serialize)]
pub struct AlertsView {
    pub open: Vec<Alert>,
    pub recent: Vec<Alert>,
}

impl DetectionFeed {
    pub fn new() -> Self {
        let (queue, waiting) = mpsc::channel(QUEUE);
        Self {
            queue,
            waiting: Mutex::new(Some(waiting)),
            alerts: Mutex::new(AlertsView::default()),
        }
    }

    /// Hands one request to the detectors; never waits. `false` when the queue was full.
    pub fn offer(&self, observation: Observation) -> bool {
        self.queue.try_send(observation).is_ok()
    }

    pub fn alerts(&self) -> AlertsView {
        self.alerts.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Default for DetectionFeed {
    fn default() -> Self {
        Self::new()
    }
}

/// The detectors' settings from the config (defaults filled in).
pub fn detector_config(config: &DetectionConfig) -> DetectorConfig {
    let mut detector = DetectorConfig {
        max_clients: config.max_clients,
        clear_ticks: u32::try_from(config.clear_after.get().as_secs().max(1)).unwrap_or(u32::MAX),
        ..DetectorConfig::default()
    };
    let spike = &mut detector.rate_spike;
    spike.enabled = config.rate_spike.enabled;
    spike.warm_up = config.rate_spike.warm_up.get().as_secs();
    spike.min_ratio = config.rate_spike.min_ratio;
    spike.min_count = f64::from(config.rate_spike.min_requests);
    for (threshold, from) in [
        (&mut detector.auth_failures, &config.auth_failures),
        (&mut detector.scanning, &config.scanning),
        (&mut detector.probing, &config.probing),
    ] {
        threshold.enabled = from.enabled;
        if let Some(open_at) = from.threshold {
            // Closing below a quarter of the threshold keeps a hovering count from flapping.
            threshold.close_below = (open_at / 4).max(1);
            threshold.open_at = open_at;
        }
        if let Some(window) = from.window {
            threshold.window_seconds = usize::try_from(window.get().as_secs().max(1)).unwrap_or(usize::MAX);
        }
    }
    let upstream = &mut detector.upstream_errors;
    upstream.enabled = config.upstream_errors.enabled;
    upstream.open_ratio = config.upstream_errors.error_ratio;
    upstream.min_requests = config.upstream_errors.min_requests;
    upstream.window_seconds = usize::try_from(config.upstream_errors.window.get().as_secs().max(1)).unwrap_or(10);
    let latency = &mut detector.upstream_latency;
    latency.enabled = config.upstream_latency.enabled;
    latency.warm_up = config.upstream_latency.warm_up.get().as_secs();
    latency.min_ratio = config.upstream_latency.min_ratio;
    latency.min_increase_ms = config.upstream_latency.min_increase.get().as_secs_f64() * 1000.0;
    let subject = &mut detector.targeted_subject;
    subject.enabled = config.targeted_subject.enabled;
    subject.open_at = config.targeted_subject.threshold;
    subject.close_below = (config.targeted_subject.threshold / 4).max(1);
    subject.window_seconds = usize::try_from(config.targeted_subject.window.get().as_secs().max(1)).unwrap_or(300);
    detector
}

fn webhook_target(config: &DetectionConfig) -> Option<WebhookTarget> {
    let webhook = config.webhook.as_ref()?;
    let headers = webhook
        .headers
        .iter()
        .filter_map(|(name, value)| Some((name.clone(), value.value.resolve().ok()?.expose().to_string())))
        .collect();
    Some(WebhookTarget {
        url: webhook.url.clone(),
        headers,
        ca: webhook.ca.clone(),
        max_attempts: webhook.max_attempts,
    })
}

/// Feeds the detectors and acts on their alerts until `stop`.
pub(crate) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    // The runtime of the moment, never held across the loop: a reload must free the one it replaces.
    let (waiting, mut detector) = {
        let runtime = shared.runtime.load();
        let waiting = runtime
            .detection
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        (waiting, Detector::new(detector_config(&runtime.config.detection)))
    };
    let Some(mut waiting) = waiting else {
        return;
    };
    let mut webhook: Option<Webhook> = None;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut batch = Vec::with_capacity(1024);
    loop {
        tokio::select! {
            received = waiting.recv_many(&mut batch, 1024) => {
                if received == 0 {
                    return;
                }
                let now = now_secs();
                for observation in batch.drain(..) {
                    detector.observe_client(now, &record(&observation));
                }
            }
            _ = ticker.tick() => {
                let runtime = shared.runtime.load_full();
                detector.reconfigure(detector_config(&runtime.config.detection));
                let target = webhook_target(&runtime.config.detection);
                if webhook.as_ref().map(|w| w.target()) != target.as_ref() {
                    webhook = target.and_then(|target| start_webhook(&runtime, target));
                }
                let now = now_secs();
                collect_tallies(&runtime, &mut detector, now);
                let changes = detector.tick(now);
                for change in changes {
                    act_on(&runtime, webhook.as_ref(), change);
                }
                publish(&runtime, &detector);
            }
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}

/// Per-route counts of every answer and per-cluster counts of upstream exchanges, summed in atomics
/// by the observe stage and taken once a second. Kept across reloads by route name.
#[derive(Default)]
pub struct DetectionTally {
    requests: AtomicU32,
    upstream: AtomicU32,
    failures: AtomicU32,
    answered: AtomicU32,
    latency_us: AtomicU64,
}

impl DetectionTally {
    /// One answer; `upstream` when the request reached the upstream stage.
    /// One answer of the route: whether it involved the upstream, and whether the upstream failed it
    /// (its fault, never the client's).
    pub fn record(&self, upstream: bool, upstream_failed: bool, upstream_ms: Option<f64>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if !upstream {
            return;
        }
        self.upstream.fetch_add(1, Ordering::Relaxed);
        if upstream_failed {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(ms) = upstream_ms.filter(|ms| ms.is_finite() && *ms >= 0.0) {
            self.answered.fetch_add(1, Ordering::Relaxed);
            self.latency_us.fetch_add((ms * 1000.0) as u64, Ordering::Relaxed);
        }
    }

    /// The counts since the last call, reset.
    fn take(&self) -> (u32, ClusterTally) {
        let requests = self.requests.swap(0, Ordering::Relaxed);
        let exchanges = ClusterTally {
            requests: self.upstream.swap(0, Ordering::Relaxed),
            failures: self.failures.swap(0, Ordering::Relaxed),
            latency_ms: self.latency_us.swap(0, Ordering::Relaxed) as f64 / 1000.0,
            answered: self.answered.swap(0, Ordering::Relaxed),
        };
        (requests, exchanges)
    }
}

fn collect_tallies(runtime: &Runtime, detector: &mut Detector, now: u64) {
    for route in &runtime.routes {
        let (requests, exchanges) = route.detection.take();
        if requests > 0 {
            detector.count_route(&route.name, requests);
        }
        if exchanges.requests > 0 {
            detector.count_cluster(now, &route.cluster.name, &exchanges);
        }
    }
}

fn record(observation: &Observation) -> RequestRecord<'_> {
    RequestRecord {
        route: None,
        client: observation.client,
        status: observation.status,
        decision: observation.decision,
        path_hash: observation.path_hash,
        cluster: None,
        upstream_ms: None,
        attempted_subject: observation.attempted_subject.as_deref(),
        principal: observation.principal.as_deref(),
    }
}

fn start_webhook(runtime: &Runtime, target: WebhookTarget) -> Option<Webhook> {
    match Webhook::start(target, runtime.metrics.alert_webhook_failures.clone()) {
        Ok(webhook) => Some(webhook),
        Err(error) => {
            tracing::warn!(event = "alert_webhook_unusable", %error, "alerts will not be sent to the webhook");
            None
        }
    }
}

/// An alert opened or closed: record it, notify, and respond when the detector is configured to.
fn act_on(runtime: &Runtime, webhook: Option<&Webhook>, change: AlertChange) {
    let (kind, alert) = match &change {
        AlertChange::Opened(alert) => (EventKind::AlertOpened, alert),
        AlertChange::Closed(alert) => (EventKind::AlertClosed, alert),
    };
    let severity = serde_json::to_value(alert.severity)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    if kind == EventKind::AlertOpened {
        runtime.metrics.alert_opened(alert.detector, &severity);
        tracing::warn!(event = "alert_opened", detector = alert.detector, subject = %alert.subject, "{}", alert.message);
    } else {
        tracing::info!(event = "alert_closed", detector = alert.detector, subject = %alert.subject, "alert closed");
    }
    if let Some(log) = &runtime.audit {
        log.record(AuditEvent::for_alert(
            kind,
            alert.id,
            alert.detector,
            &alert.subject,
            &severity,
            &alert.message,
        ));
    }
    let mut notification = serde_json::to_value(&change).unwrap_or_default();
    if let AlertChange::Opened(alert) = &change {
        if let Some(response) = respond_to(runtime, alert) {
            notification["response"] = serde_json::to_value(&response).unwrap_or_default();
        }
    }
    if let Some(webhook) = webhook {
        webhook.notify(&notification);
    }
}

/// The response a client alert asks for, taken; `None` when the detector has none configured.
/// Only client detectors respond (on the address, or on the principal of a `principal:` alert): a
/// route, a cluster or a targeted subject is the victim.
fn respond_to(runtime: &Runtime, alert: &Alert) -> Option<ActiveResponse> {
    let detection = &runtime.config.detection;
    let detector: &ClientDetector = match alert.detector {
        "auth_failures" => &detection.auth_failures,
        "scanning" => &detection.scanning,
        "probing" => &detection.probing,
        _ => return None,
    };
    let respond = &detector.respond.as_ref()?.value;
    let target = match alert.subject.strip_prefix(palisade_detect::PRINCIPAL_PREFIX) {
        Some(principal) => Target::Subject(principal.to_string()),
        None => Target::ip(alert.subject.parse().ok()?),
    };
    let action = match respond.action {
        ResponseAction::Block => Action::Block,
        ResponseAction::Limit => Action::Limit,
    };
    let mut response = ActiveResponse::new(target, action, respond.rate, respond.ttl.get(), now_secs());
    response.source = format!("detector:{}", alert.detector);
    response.alert_id = Some(alert.id);
    response.reason = alert.message.clone();
    take(runtime, response.clone()).ok()?;
    Some(response)
}

/// Applies a response (from a detector or the admin API) and records it.
pub fn take(runtime: &Runtime, response: ActiveResponse) -> Result<(), ResponseError> {
    if let Err(error) = runtime.responses.insert(response.clone()) {
        tracing::warn!(event = "response_refused", %error, "response not applied");
        return Err(error);
    }
    let source = source_label(&response);
    runtime.metrics.response_taken(response.action.as_str(), source);
    tracing::warn!(event = "response_taken", id = %response.id, action = response.action.as_str(),
        expires_at = response.expires_at, "{}", response.reason);
    record_response(runtime, EventKind::ResponseTaken, &response, None);
    Ok(())
}

/// Records a response lifted (`expired` or `revoked`).
pub fn lifted(runtime: &Runtime, response: &ActiveResponse, why: &'static str) {
    tracing::info!(event = "response_lifted", id = %response.id, why, "response lifted");
    record_response(runtime, EventKind::ResponseLifted, response, Some(why));
}

fn record_response(runtime: &Runtime, kind: EventKind, response: &ActiveResponse, why: Option<&str>) {
    let Some(log) = &runtime.audit else {
        return;
    };
    let target = match &response.target {
        Target::Ip(ip) => ip.to_string(),
        Target::Subject(subject) => subject.clone(),
    };
    let message = match why {
        None => format!(
            "{} {target} until {}: {}",
            response.action.as_str(),
            response.expires_at,
            response.reason
        ),
        Some(why) => format!("{} {target} lifted ({why})", response.action.as_str()),
    };
    let mut event = AuditEvent::new(kind, why.or(Some(response.action.as_str())), message);
    if let Target::Ip(ip) = response.target {
        event = event.with_source(ip, None);
    }
    event.unmapped.subject = Some(target);
    event.unmapped.expires_at = Some(response.expires_at);
    event.unmapped.response = serde_json::to_value(response).ok();
    log.record(event);
}

fn source_label(response: &ActiveResponse) -> &'static str {
    if response.source == "admin" {
        "admin"
    } else if response.source.starts_with("runtime:") {
        "runtime"
    } else {
        "detector"
    }
}

/// Metrics and the `/alerts` view after one evaluation.
fn publish(runtime: &Runtime, detector: &Detector) {
    let open = detector.open_alerts();
    for (name, score) in detector.scores() {
        let count = open.iter().filter(|alert| alert.detector == *name).count();
        runtime
            .metrics
            .detector_state(name, i64::try_from(count).unwrap_or(i64::MAX), *score);
    }
    let closed = detector.closed_alerts();
    let recent = closed[closed.len().saturating_sub(RECENT_ALERTS)..].to_vec();
    *runtime.detection.alerts.lock().unwrap_or_else(|e| e.into_inner()) = AlertsView { open, recent };
}

/// Expires responses and, with a shared store, keeps them in step with the other gateways; once a
/// second until `stop`.
pub(crate) async fn maintain_responses(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        let runtime = shared.runtime.load_full();
        let table = &runtime.responses;
        table.set_max(runtime.config.detection.max_responses);
        let now = now_secs();
        for response in table.expire(now) {
            lifted(&runtime, &response, "expired");
        }
        if let Some(store) = &runtime.limit_store {
            match table.synchronize(store, now).await {
                Ok((taken_over, revoked)) => {
                    for response in &taken_over {
                        tracing::info!(event = "response_shared", id = %response.id, "response taken over from another gateway");
                    }
                    for response in &revoked {
                        lifted(&runtime, response, "revoked");
                    }
                }
                Err(error) => tracing::debug!(%error, "responses not synchronized this second"),
            }
        }
        let mut counts: std::collections::BTreeMap<(&'static str, &'static str), i64> = [
            (("block", "detector"), 0),
            (("block", "admin"), 0),
            (("limit", "detector"), 0),
            (("limit", "admin"), 0),
            (("block", "runtime"), 0),
        ]
        .into();
        for response in table.list() {
            *counts
                .entry((response.action.as_str(), source_label(&response)))
                .or_default() += 1;
        }
        for ((action, source), count) in counts {
            runtime.metrics.responses_active(action, source, count);
        }
    }
}
