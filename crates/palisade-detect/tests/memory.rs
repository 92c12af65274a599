//! What a tracked client costs on the heap, and that a flood of addresses is given back once it goes
//! idle. One test in this file: dhat's heap accounting is process-wide.

use std::net::{IpAddr, Ipv6Addr};

use palisade_core::decision::{Decision, Fault, Stage};
use palisade_detect::{hash_path, Detector, DetectorConfig, RequestRecord};

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

const FLOOD: u32 = 100_000;

fn heap_bytes() -> usize {
    dhat::HeapStats::get().curr_bytes
}

#[test]
fn a_tracked_client_costs_about_half_a_kilobyte_and_a_flood_is_given_back() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let mut detector = Detector::new(DetectorConfig::default());
    let start = 1_000_000;
    detector.tick(start);
    let before = heap_bytes();
    // Every client of the flood uses all three per-client detectors: a refused credential, an
    // authorization refusal and a few unknown paths.
    let authorize = Decision::new(Stage::Authorize, Fault::Client, "forbidden");
    for n in 0..FLOOD {
        let client = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, (n >> 16) as u16, n as u16));
        let mut record = RequestRecord {
            route: None,
            client,
            status: 401,
            decision: None,
            path_hash: 0,
            cluster: None,
            upstream_ms: None,
            attempted_subject: None,
            principal: None,
        };
        detector.observe_client(start, &record);
        record.status = 403;
        record.decision = Some(authorize);
        detector.observe_client(start, &record);
        record.status = 404;
        for path in ["/.env", "/.git/config", "/wp-login.php"] {
            record.path_hash = hash_path(path);
            detector.observe_client(start, &record);
        }
    }
    assert!(
        detector.tick(start + 1).is_empty(),
        "one event of each kind per client alerts nothing"
    );
    assert_eq!(detector.tracked_clients(), FLOOD as usize);
    let per_client = (heap_bytes() - before) / FLOOD as usize;
    eprintln!("{per_client} bytes per tracked client");
    assert!(per_client <= 600, "{per_client} bytes per tracked client");
    // The flood goes idle: its clients are forgotten and the map's memory returned.
    detector.tick(start + 600);
    assert_eq!(detector.tracked_clients(), 0);
    let left = heap_bytes().saturating_sub(before);
    eprintln!("{left} bytes still held after the flood");
    assert!(left < 512 * 1024, "{left} bytes still held after the flood");
}
