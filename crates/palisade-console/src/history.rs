//! The last hour of traffic and decisions, sampled from the gateway's tallies every [`STEP`]. The
//! sampler runs beside the gateway, never on the request path; the console reads the samples.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_telemetry::tally::{quantile, RefusalKind, RouteReading, Tallies, LATENCY_BUCKETS};
use serde::Serialize;

/// Time between samples.
pub const STEP: Duration = Duration::from_secs(5);
/// Samples kept: one hour.
pub const SAMPLES: usize = 720;
/// Routes kept per sample (the busiest); the rest are added up as `other`.
pub const ROUTES_PER_SAMPLE: usize = 20;

/// One route label's answers in one step.
#[derive(Clone, Debug, Default)]
struct RouteStep {
    label: usize,
    classes: [u64; 5],
    latency: [u64; LATENCY_BUCKETS],
}

#[derive(Clone, Debug, Default)]
struct Sample {
    /// Unix seconds at the end of the step.
    at: u64,
    routes: Vec<RouteStep>,
    refusals: [u64; 5],
}

struct State {
    samples: VecDeque<Sample>,
    /// `other`, then the route labels in the tallies' order (a label's index there never changes).
    labels: Vec<String>,
    /// The last reading of each route label, in the same order.
    previous_routes: Vec<RouteReading>,
    previous_refusals: [u64; 5],
    started: bool,
}

pub struct History {
    tallies: Arc<Tallies>,
    state: Mutex<State>,
}

/// `/ui/api/traffic`.
#[derive(Serialize, Debug)]
pub struct Traffic {
    pub step_seconds: u64,
    /// Unix seconds at the end of each step.
    pub times: Vec<u64>,
    /// Requests per second by status class (`1xx`…`5xx`), per step.
    pub classes: Vec<(String, Vec<f64>)>,
    /// Latency percentiles over all routes per step, in milliseconds (`null` for an idle step).
    pub latency_ms: Vec<(String, Vec<Option<f64>>)>,
    /// Per route: requests per second per step, and its totals over the hour.
    pub routes: Vec<RouteTraffic>,
}

#[derive(Serialize, Debug)]
pub struct RouteTraffic {
    pub route: String,
    pub rps: Vec<f64>,
    pub requests: u64,
    pub errors_5xx: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// `/ui/api/decisions` (the series part).
#[derive(Serialize, Debug)]
pub struct DecisionSeries {
    pub step_seconds: u64,
    pub times: Vec<u64>,
    /// Refusals per step by kind.
    pub kinds: Vec<(RefusalKind, Vec<u64>)>,
    /// Totals over the hour by kind.
    pub totals: Vec<(RefusalKind, u64)>,
}

const CLASS_NAMES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn sub(now: &[u64], before: &[u64], out: &mut [u64]) {
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = now[i].saturating_sub(before.get(i).copied().unwrap_or(0));
    }
}

impl History {
    pub fn new(tallies: Arc<Tallies>) -> History {
        History {
            tallies,
            state: Mutex::new(State {
                samples: VecDeque::with_capacity(SAMPLES),
                labels: vec!["other".to_string()],
                previous_routes: Vec::new(),
                previous_refusals: [0; 5],
                started: false,
            }),
        }
    }

    /// Takes one sample ending at `at` (Unix seconds). The first call only sets the baseline.
    pub fn sample(&self, at: u64) {
        let routes_now = self.tallies.read_routes();
        let refusals_now = self.tallies.refusals.kinds();
        let Ok(mut state) = self.state.lock() else { return };
        let state = &mut *state;
        if !state.started {
            state.started = true;
            state.previous_routes = routes_now.into_iter().map(|(_, reading)| reading).collect();
            state.previous_refusals = refusals_now;
            return;
        }
        let mut steps: Vec<RouteStep> = Vec::new();
        for (index, (_, reading)) in routes_now.iter().enumerate() {
            let before = state.previous_routes.get(index);
            let mut step = RouteStep {
                label: index + 1,
                ..RouteStep::default()
            };
            sub(
                &reading.classes,
                before.map_or(&[][..], |b| &b.classes[..]),
                &mut step.classes,
            );
            sub(
                &reading.latency,
                before.map_or(&[][..], |b| &b.latency[..]),
                &mut step.latency,
            );
            if step.classes.iter().sum::<u64>() > 0 {
                steps.push(step);
            }
        }
        steps.sort_by_key(|step| std::cmp::Reverse(step.classes.iter().sum::<u64>()));
        let mut routes = Vec::new();
        let mut other = RouteStep::default();
        for (i, step) in steps.into_iter().enumerate() {
            if i < ROUTES_PER_SAMPLE {
                routes.push(step);
            } else {
                for c in 0..5 {
                    other.classes[c] += step.classes[c];
                }
                for b in 0..LATENCY_BUCKETS {
                    other.latency[b] += step.latency[b];
                }
            }
        }
        if other.classes.iter().sum::<u64>() > 0 {
            routes.push(other);
        }
        let mut refusals = [0; 5];
        sub(&refusals_now, &state.previous_refusals, &mut refusals);
        if state.samples.len() == SAMPLES {
            state.samples.pop_front();
        }
        state.samples.push_back(Sample { at, routes, refusals });
        state.labels.truncate(1);
        state.labels.extend(routes_now.iter().map(|(label, _)| label.clone()));
        state.previous_routes = routes_now.into_iter().map(|(_, reading)| reading).collect();
        state.previous_refusals = refusals_now;
    }

    pub fn traffic(&self) -> Traffic {
        let Ok(state) = self.state.lock() else {
            return Traffic {
                step_seconds: STEP.as_secs(),
                times: Vec::new(),
                classes: Vec::new(),
                latency_ms: Vec::new(),
                routes: Vec::new(),
            };
        };
        let step = STEP.as_secs_f64();
        let times = state.samples.iter().map(|s| s.at).collect();
        let classes = (0..5)
            .map(|c| {
                let series = state
                    .samples
                    .iter()
                    .map(|s| s.routes.iter().map(|r| r.classes[c]).sum::<u64>() as f64 / step)
                    .collect();
                (CLASS_NAMES[c].to_string(), series)
            })
            .collect();
        let latency_ms = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)]
            .iter()
            .map(|(name, q)| {
                let series = state
                    .samples
                    .iter()
                    .map(|s| {
                        let mut all = [0u64; LATENCY_BUCKETS];
                        for route in &s.routes {
                            for (b, count) in route.latency.iter().enumerate() {
                                all[b] += count;
                            }
                        }
                        quantile(&all, *q).map(|seconds| (seconds * 1000.0 * 1000.0).round() / 1000.0)
                    })
                    .collect();
                (name.to_string(), series)
            })
            .collect();
        // One pass over the samples: each route's rate per step, totals and latency buckets.
        struct Totals {
            rps: Vec<f64>,
            requests: u64,
            errors_5xx: u64,
            latency: [u64; LATENCY_BUCKETS],
        }
        let mut per_label: BTreeMap<usize, Totals> = BTreeMap::new();
        for (at, sample) in state.samples.iter().enumerate() {
            for route in &sample.routes {
                let totals = per_label.entry(route.label).or_insert_with(|| Totals {
                    rps: vec![0.0; state.samples.len()],
                    requests: 0,
                    errors_5xx: 0,
                    latency: [0; LATENCY_BUCKETS],
                });
                let count: u64 = route.classes.iter().sum();
                totals.rps[at] = count as f64 / step;
                totals.requests += count;
                totals.errors_5xx += route.classes[4];
                for (b, n) in route.latency.iter().enumerate() {
                    totals.latency[b] += n;
                }
            }
        }
        let mut routes: Vec<RouteTraffic> = per_label
            .into_iter()
            .map(|(label, totals)| {
                let ms = |q| quantile(&totals.latency, q).map(|s| (s * 1_000_000.0).round() / 1000.0);
                RouteTraffic {
                    route: state.labels.get(label).cloned().unwrap_or_default(),
                    p50_ms: ms(0.5),
                    p99_ms: ms(0.99),
                    rps: totals.rps,
                    requests: totals.requests,
                    errors_5xx: totals.errors_5xx,
                }
            })
            .collect();
        routes.sort_by_key(|r| std::cmp::Reverse(r.requests));
        Traffic {
            step_seconds: STEP.as_secs(),
            times,
            classes,
            latency_ms,
            routes,
        }
    }

    pub fn decisions(&self) -> DecisionSeries {
        let (times, kinds) = match self.state.lock() {
            Ok(state) => (
                state.samples.iter().map(|s| s.at).collect::<Vec<_>>(),
                RefusalKind::ALL
                    .iter()
                    .map(|kind| {
                        (
                            *kind,
                            state
                                .samples
                                .iter()
                                .map(|s| s.refusals[kind.index()])
                                .collect::<Vec<_>>(),
                        )
                    })
                    .collect::<Vec<_>>(),
            ),
            Err(_) => (Vec::new(), Vec::new()),
        };
        let totals = kinds
            .iter()
            .map(|(kind, series)| (*kind, series.iter().sum()))
            .collect();
        DecisionSeries {
            step_seconds: STEP.as_secs(),
            times,
            kinds,
            totals,
        }
    }

    /// Samples every [`STEP`] until `stop` is dropped or sends.
    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut ticks = tokio::time::interval(STEP);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = ticks.tick() => self.sample(unix_now()),
                _ = stop.wait_for(|stopped| *stopped) => return,
            }
        }
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::decision::{Decision, Fault, Stage};

    #[test]
    fn samples_are_rates_per_step_by_class_route_and_kind() {
        let tallies = Arc::new(Tallies::default());
        let history = History::new(tallies.clone());
        let orders = tallies.route("orders");
        orders.record(200, 0.002);
        history.sample(1000);
        assert!(history.traffic().times.is_empty(), "the first sample is the baseline");
        for _ in 0..10 {
            orders.record(200, 0.002);
        }
        orders.record(502, 0.2);
        tallies.refusals.record(
            RefusalKind::Unauthenticated,
            Decision::new(Stage::Authenticate, Fault::Client, "invalid_token"),
            "192.0.2.1".parse().unwrap(),
            None,
        );
        history.sample(1005);
        history.sample(1010);
        let traffic = history.traffic();
        assert_eq!(traffic.times, vec![1005, 1010]);
        let twoxx = &traffic.classes.iter().find(|(c, _)| c == "2xx").unwrap().1;
        assert_eq!(twoxx, &vec![2.0, 0.0]);
        assert_eq!(traffic.routes.len(), 1);
        assert_eq!(traffic.routes[0].route, "orders");
        assert_eq!(traffic.routes[0].requests, 11);
        assert_eq!(traffic.routes[0].errors_5xx, 1);
        assert!(traffic.latency_ms[0].1[0].unwrap() > 1.0);
        assert_eq!(traffic.latency_ms[0].1[1], None, "an idle step has no latency");
        let decisions = history.decisions();
        let unauthenticated = decisions
            .kinds
            .iter()
            .find(|(kind, _)| *kind == RefusalKind::Unauthenticated)
            .unwrap();
        assert_eq!(unauthenticated.1, vec![1, 0]);
    }

    #[test]
    fn an_hour_is_kept_and_routes_per_sample_are_bounded() {
        let tallies = Arc::new(Tallies::default());
        let history = History::new(tallies.clone());
        let routes: Vec<_> = (0..ROUTES_PER_SAMPLE + 5)
            .map(|i| tallies.route(&format!("r{i}")))
            .collect();
        history.sample(0);
        for at in 1..=(SAMPLES as u64 + 10) {
            for route in &routes {
                route.record(200, 0.001);
            }
            history.sample(at * 5);
        }
        let traffic = history.traffic();
        assert_eq!(traffic.times.len(), SAMPLES);
        assert_eq!(traffic.routes.len(), ROUTES_PER_SAMPLE + 1, "the busiest, and other");
        assert!(traffic.routes.iter().any(|r| r.route == "other"));
    }
}
