//! The detectors against simulated traffic: a steady baseline with jitter and the attacks the issue
//! names. Time is simulated (one tick per second), so a 30-minute run takes milliseconds and the
//! detection delays are exact. Run with `--nocapture` to see the delays.

use std::net::{IpAddr, Ipv4Addr};

use palisade_core::decision::{Decision, Fault, Stage};
use palisade_detect::{hash_path, AlertChange, Detector, DetectorConfig, RequestRecord};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The decision the gateway makes for each reason code these simulations use.
fn decided(reason: &'static str) -> Decision {
    let (stage, fault) = match reason {
        "forbidden" => (Stage::Authorize, Fault::Client),
        "no_route" => (Stage::Route, Fault::Client),
        "upstream_unreachable" | "upstream_timeout" => (Stage::Upstream, Fault::Upstream),
        _ => (Stage::Authenticate, Fault::Client),
    };
    Decision::new(stage, fault, reason)
}

const START: u64 = 1_800_000_000;

fn client(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
}

/// An answer to `client` with nothing but its status and reason; tests fill in what they need.
fn answer(client: IpAddr, status: u16, decision: Option<Decision>) -> RequestRecord<'static> {
    RequestRecord {
        route: None,
        client,
        status,
        decision,
        path_hash: 0,
        upstream_ms: None,
        attempted_subject: None,
        principal: None,
        cluster: None,
    }
}

/// One second of ordinary traffic: ~100 requests/s ±40% from 50 clients, a few failed logins,
/// typos (404), refusals (403) and upstream failures, as a healthy service sees them.
fn normal_second(detector: &mut Detector, rng: &mut StdRng, now: u64, rate: u32) {
    second_with_latency(detector, rng, now, rate, 30.0);
}

/// Like `normal_second`, with upstream answers taking around `latency_ms` (±50%, 1% outliers at 8×).
/// Failed logins name one of 50 users, as real typos do.
fn second_with_latency(detector: &mut Detector, rng: &mut StdRng, now: u64, rate: u32, latency_ms: f64) {
    let requests = rng.random_range(rate * 6 / 10..=rate * 14 / 10);
    for _ in 0..requests {
        let who = client(rng.random_range(0..50));
        let roll = rng.random_range(0..1000);
        let (status, decision, path) = match roll {
            0..=29 => (401, Some(decided("token_expired")), "/api/orders".to_string()),
            30..=49 => (
                404,
                Some(decided("no_route")),
                format!("/api/typo{}", rng.random_range(0..5)),
            ),
            50..=59 => (403, Some(decided("forbidden")), "/api/admin".to_string()),
            60..=64 => (502, Some(decided("upstream_unreachable")), "/api/orders".to_string()),
            _ => (200, None, "/api/orders".to_string()),
        };
        let upstream_ms = (status == 200).then(|| {
            let outlier = if rng.random_range(0..100) == 0 { 8.0 } else { 1.0 };
            latency_ms * rng.random_range(0.5..1.5) * outlier
        });
        let user = format!("user{}", rng.random_range(0..50));
        let record = RequestRecord {
            route: (status != 404).then_some("api"),
            client: who,
            status,
            decision,
            path_hash: hash_path(&path),
            upstream_ms,
            attempted_subject: (status == 401).then_some(user.as_str()),
            principal: (status == 403).then_some(user.as_str()),
            cluster: matches!(status, 200 | 502).then_some("orders"),
        };
        detector.observe(now, &record);
    }
}

fn opened(changes: &[AlertChange], detector: &str) -> Option<String> {
    changes.iter().find_map(|change| match change {
        AlertChange::Opened(alert) if alert.detector == detector => Some(alert.subject.clone()),
        _ => None,
    })
}

#[test]
fn a_30_minute_steady_baseline_with_normal_jitter_raises_no_alert() {
    let mut rng = StdRng::seed_from_u64(7);
    let mut detector = Detector::new(DetectorConfig::default());
    let mut alerts = Vec::new();
    for second in 0..1800 {
        let now = START + second;
        normal_second(&mut detector, &mut rng, now, 100);
        alerts.extend(detector.tick(now));
    }
    eprintln!("30-minute baseline: {} alert changes", alerts.len());
    assert!(alerts.is_empty(), "false alerts: {alerts:#?}");
}

#[test]
fn a_tenfold_rate_spike_alerts_within_ten_seconds_and_closes_after_it_ends() {
    let mut rng = StdRng::seed_from_u64(11);
    let mut detector = Detector::new(DetectorConfig::default());
    let spike_start = START + 600;
    let mut delay = None;
    let mut closed_after = None;
    for second in 0..900 {
        let now = START + second;
        let spiking = (spike_start..spike_start + 120).contains(&now);
        normal_second(&mut detector, &mut rng, now, if spiking { 1000 } else { 100 });
        let changes = detector.tick(now);
        if delay.is_none() && opened(&changes, "rate_spike").is_some() {
            assert!(now >= spike_start, "alerted before the spike at {}", now - START);
            delay = Some(now - spike_start + 1);
        }
        if changes
            .iter()
            .any(|c| matches!(c, AlertChange::Closed(a) if a.detector == "rate_spike"))
        {
            closed_after = Some(now - (spike_start + 120));
        }
    }
    let delay = delay.expect("the spike was detected");
    eprintln!("10x rate spike: detected after {delay} s; closed {closed_after:?} s after it ended");
    assert!(delay <= 10, "{delay} s");
    assert!(closed_after.is_some_and(|after| after <= 60), "{closed_after:?}");
}

#[test]
fn twenty_failed_logins_from_one_address_in_a_minute_alert() {
    let mut rng = StdRng::seed_from_u64(13);
    let mut detector = Detector::new(DetectorConfig::default());
    let attacker = client(4000);
    let attack_start = START + 300;
    let mut delay = None;
    for second in 0..420 {
        let now = START + second;
        normal_second(&mut detector, &mut rng, now, 100);
        // One failed login every 3 s: 20 within 57 s.
        if now >= attack_start && (now - attack_start).is_multiple_of(3) && now < attack_start + 60 {
            let record = RequestRecord {
                route: Some("login"),
                path_hash: hash_path("/login"),
                ..answer(attacker, 401, Some(decided("bad_signature")))
            };
            detector.observe(now, &record);
        }
        let changes = detector.tick(now);
        if let Some(subject) = opened(&changes, "auth_failures") {
            assert_eq!(subject, attacker.to_string(), "only the attacker");
            delay.get_or_insert(now - attack_start + 1);
        }
    }
    let delay = delay.expect("the burst was detected");
    eprintln!("20 failed logins in a minute: detected {delay} s after the first");
    assert!(delay <= 60);
}

#[test]
fn a_scan_past_fifty_unknown_paths_alerts() {
    let mut rng = StdRng::seed_from_u64(17);
    let mut detector = Detector::new(DetectorConfig::default());
    let scanner = client(5000);
    let scan_start = START + 300;
    let mut delay = None;
    for second in 0..400 {
        let now = START + second;
        normal_second(&mut detector, &mut rng, now, 100);
        // 64 paths: the distinct count is an estimate a few paths either side of the truth.
        if (scan_start..scan_start + 32).contains(&now) {
            for n in 0..2 {
                let path = format!("/.env{}{n}", now - scan_start);
                let record = RequestRecord {
                    path_hash: hash_path(&path),
                    ..answer(scanner, 404, Some(decided("no_route")))
                };
                detector.observe(now, &record);
            }
        }
        let changes = detector.tick(now);
        if opened(&changes, "scanning").is_some() {
            delay.get_or_insert(now - scan_start + 1);
        }
    }
    let delay = delay.expect("the scan was detected");
    eprintln!("scan of 64 distinct unknown paths (2/s, threshold 50): detected after {delay} s");
    assert!(delay <= 32);
}

#[test]
fn failing_upstreams_alert_per_cluster() {
    let mut rng = StdRng::seed_from_u64(19);
    let mut detector = Detector::new(DetectorConfig::default());
    let mut alerted = None;
    for second in 0..200 {
        let now = START + second;
        normal_second(&mut detector, &mut rng, now, 100);
        if second >= 100 {
            for _ in 0..40 {
                let record = RequestRecord {
                    route: Some("api"),
                    path_hash: hash_path("/api/orders"),
                    cluster: Some("orders"),
                    ..answer(client(1), 503, Some(decided("upstream_timeout")))
                };
                detector.observe(now, &record);
            }
        }
        if let Some(cluster) = opened(&detector.tick(now), "upstream_errors") {
            alerted.get_or_insert((cluster, second - 100 + 1));
        }
    }
    let (cluster, delay) = alerted.expect("the failures were detected");
    eprintln!("upstream failing (~35% of exchanges): detected after {delay} s");
    assert_eq!(cluster, "orders");
    assert!(delay <= 10);
}

#[test]
fn client_state_stays_bounded_under_address_spraying() {
    let config = DetectorConfig {
        max_clients: 1000,
        ..DetectorConfig::default()
    };
    let mut detector = Detector::new(config);
    for n in 0..200_000u32 {
        let now = START + u64::from(n / 2000);
        let record = RequestRecord {
            route: Some("login"),
            path_hash: hash_path("/login"),
            ..answer(client(n), 401, Some(decided("bad_signature")))
        };
        detector.observe(now, &record);
        assert!(detector.tracked_clients() <= 1000);
        if n % 2000 == 1999 {
            detector.tick(now);
        }
    }
}

#[test]
fn a_latency_jump_on_an_upstream_alerts() {
    let mut rng = StdRng::seed_from_u64(23);
    let mut detector = Detector::new(DetectorConfig::default());
    let mut alerted = None;
    for second in 0..400 {
        let now = START + second;
        // From second 300 the upstream answers in ~300 ms instead of ~30 ms.
        let latency = if second >= 300 { 300.0 } else { 30.0 };
        second_with_latency(&mut detector, &mut rng, now, 100, latency);
        let changes = detector.tick(now);
        if let Some(cluster) = opened(&changes, "upstream_latency") {
            assert!(second >= 300, "false latency alert at {second}");
            alerted.get_or_insert((cluster, second - 300 + 1));
        }
    }
    let (cluster, delay) = alerted.expect("the latency jump was detected");
    eprintln!("upstream latency 30 ms -> 300 ms: detected after {delay} s");
    assert_eq!(cluster, "orders");
    assert!(delay <= 5);
}

/// Runs normal traffic for `seconds` with one `attack` request per second from `attack_from` on,
/// each from a new address; returns the subject of the first `detector` alert and at which attack
/// request it opened, and every detector that opened an alert.
fn one_request_a_second_from_new_addresses(
    seed: u64,
    attack_from: u64,
    seconds: u64,
    detector_name: &str,
    attack: RequestRecord<'static>,
) -> (Option<(String, u64)>, Vec<&'static str>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut detector = Detector::new(DetectorConfig::default());
    let mut alerted = None;
    let mut detectors = Vec::new();
    for second in 0..seconds {
        let now = START + second;
        normal_second(&mut detector, &mut rng, now, 100);
        if second >= attack_from {
            let address = client(10_000 + u32::try_from(second).unwrap());
            detector.observe(
                now,
                &RequestRecord {
                    client: address,
                    ..attack
                },
            );
        }
        let changes = detector.tick(now);
        for change in &changes {
            if let AlertChange::Opened(alert) = change {
                detectors.push(alert.detector);
            }
        }
        if let Some(subject) = opened(&changes, detector_name) {
            alerted.get_or_insert((subject, second - attack_from + 1));
        }
    }
    (alerted, detectors)
}

#[test]
fn refused_logins_against_one_subject_from_many_addresses_alert() {
    let forged_login = RequestRecord {
        route: Some("login"),
        attempted_subject: Some("admin"),
        ..answer(client(0), 401, Some(decided("bad_signature")))
    };
    let (alerted, detectors) = one_request_a_second_from_new_addresses(29, 200, 400, "targeted_subject", forged_login);
    let (subject, attempts) = alerted.expect("the distributed attack was detected");
    eprintln!("distributed brute force on one subject (1/s from new addresses): detected at attempt {attempts}");
    assert_eq!(subject, "admin");
    assert_eq!(attempts, 50);
    assert!(
        !detectors.contains(&"auth_failures"),
        "no client crossed its own threshold"
    );
}

#[test]
fn a_principal_probing_from_many_addresses_alerts_on_the_principal() {
    let forbidden = RequestRecord {
        route: Some("api"),
        principal: Some("mallory"),
        ..answer(client(0), 403, Some(decided("forbidden")))
    };
    let (alerted, _) = one_request_a_second_from_new_addresses(31, 100, 200, "probing", forbidden);
    let (subject, attempts) = alerted.expect("the principal's probing was detected");
    eprintln!("403 probing by one principal from new addresses (1/s): detected at request {attempts}");
    assert_eq!(subject, "principal:mallory");
    assert_eq!(attempts, 30);
}
