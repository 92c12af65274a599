//! Active health checks: each target is asked `GET {path}` every interval; `unhealthy_threshold`
//! failures in a row take it out of rotation and `healthy_threshold` successes bring it back.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_core::config::HealthCheckConfig;

use super::pool::Http1Pool;
use super::{Target, UpstreamClient};

/// How probes travel: the shared client for plain clusters, or (TLS clusters) the cluster's own
/// TLS connection code.
pub(super) enum Prober {
    Client(Box<UpstreamClient>),
    Direct(Arc<Http1Pool>),
}

pub(super) struct ActiveChecker {
    path: String,
    interval: Duration,
    timeout: Duration,
    healthy_threshold: u32,
    unhealthy_threshold: u32,
    targets: Vec<Arc<Target>>,
    prober: Prober,
    epoch: Instant,
}

impl ActiveChecker {
    pub(super) fn new(config: &HealthCheckConfig, targets: Vec<Arc<Target>>, prober: Prober, epoch: Instant) -> Self {
        Self {
            path: config.path.value.clone(),
            interval: config.interval.get(),
            timeout: config.timeout.get(),
            healthy_threshold: config.healthy_threshold,
            unhealthy_threshold: config.unhealthy_threshold,
            targets,
            prober,
            epoch,
        }
    }

    pub(super) async fn run(self) {
        // Successes (positive) or failures (negative) in a row, per target.
        let mut streaks = vec![0i64; self.targets.len()];
        // Each target's ejection count when last seen: a new ejection restarts its streak, so only
        // passes after it count as evidence that it is back.
        let mut ejections: Vec<u64> = self.targets.iter().map(|t| t.ejections.get()).collect();
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let probes = self.targets.iter().map(|target| self.probe(target));
            let results = futures_util::future::join_all(probes).await;
            for (((target, passed), streak), seen) in self
                .targets
                .iter()
                .zip(results)
                .zip(streaks.iter_mut())
                .zip(ejections.iter_mut())
            {
                let now = target.ejections.get();
                if now != *seen {
                    *seen = now;
                    *streak = 0;
                }
                self.apply(target, passed, streak);
            }
        }
    }

    async fn probe(&self, target: &Target) -> bool {
        let uri = match &self.prober {
            Prober::Client(_) => format!("http://{}{}", target.authority, self.path),
            Prober::Direct(_) => self.path.clone(),
        };
        let Ok(request) = http::Request::get(uri)
            .header(http::header::HOST, target.authority.as_str())
            .header(http::header::USER_AGENT, "palisade-health-check")
            .body(crate::respond::empty_body())
        else {
            return false;
        };
        let status = async {
            match &self.prober {
                Prober::Client(client) => client.request(request).await.ok().map(|r| r.status()),
                Prober::Direct(pool) => pool
                    .send(target.index, &target.address, request)
                    .await
                    .ok()
                    .map(|r| r.status()),
            }
        };
        matches!(tokio::time::timeout(self.timeout, status).await, Ok(Some(s)) if s.is_success())
    }

    fn apply(&self, target: &Target, passed: bool, streak: &mut i64) {
        *streak = match (passed, *streak) {
            (true, s) if s > 0 => s + 1,
            (true, _) => 1,
            (false, s) if s < 0 => s - 1,
            (false, _) => -1,
        };
        let healthy = target.active_healthy.load(Ordering::Relaxed);
        let flip = if healthy {
            -*streak >= i64::from(self.unhealthy_threshold)
        } else {
            *streak >= i64::from(self.healthy_threshold)
        };
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        if flip {
            target.active_healthy.store(!healthy, Ordering::Relaxed);
            target.update_gauge(now);
            tracing::warn!(target = %target.address, healthy = !healthy, "health check changed target state");
        }
        // Evidence beats the clock: passes since a passive ejection bring the target back at once (as
        // Envoy's successful_active_health_check_uneject_host does).
        if *streak >= i64::from(self.healthy_threshold) && target.ejected_until_ms.load(Ordering::Relaxed) > now {
            target.ejected_until_ms.store(0, Ordering::Relaxed);
            target.update_gauge(now);
            tracing::info!(target = %target.address, "passively ejected target back: active health checks pass");
        }
    }
}
