//! The Redis store against a real `redis-server` (`.ci/run` installs it): concurrent decisions for
//! one bucket are coalesced into fewer script calls without changing a single answer.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_limits::{SharedStore, StoreHealth, Verdict};

struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (apt-get install -y redis-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server accepts connections");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { child, port }
    }

    /// How many times the rate-limit script ran on this server.
    fn script_calls(&self) -> u64 {
        let output = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "info", "commandstats"])
            .output()
            .expect("redis-cli is installed");
        let text = String::from_utf8_lossy(&output.stdout);
        text.lines()
            .filter(|line| line.starts_with("cmdstat_evalsha:") || line.starts_with("cmdstat_eval:"))
            .filter_map(|line| line.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok())
            .sum()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn connected_store(redis: &Redis) -> Arc<SharedStore> {
    let url = format!("redis://127.0.0.1:{}/", redis.port);
    let store = Arc::new(
        SharedStore::connect(&url, Duration::from_secs(2), None, StoreHealth::default()).expect("a valid URL"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.health().up.get() != 1 {
        assert!(Instant::now() < deadline, "the store connects");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_decisions_for_one_bucket_share_calls_and_keep_every_answer() {
    let redis = Redis::start();
    let store = connected_store(&redis).await;
    let before = redis.script_calls();

    // 400 requests at once against a budget of 100 (one per minute, so none refills meanwhile).
    let interval = Duration::from_secs(60);
    let decisions: Vec<_> = (0..400)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.check("palisade:rl:test:hot".into(), interval, 100).await })
        })
        .collect();
    let mut remaining_seen = Vec::new();
    let mut denied = 0;
    for decision in decisions {
        match decision.await.expect("the task ran").expect("the store answered") {
            Verdict::Allowed { remaining, .. } => remaining_seen.push(remaining),
            Verdict::Denied { retry_after } => {
                assert!(retry_after > Duration::ZERO);
                denied += 1;
            }
        }
    }

    // Exactly the budget was allowed, each allowed request saw its own place in it...
    remaining_seen.sort_unstable();
    assert_eq!(remaining_seen, (0..100).collect::<Vec<u32>>());
    assert_eq!(denied, 300);
    // ...and Redis ran the script far fewer times than there were requests.
    let calls = redis.script_calls() - before;
    assert!(calls < 200, "400 decisions took {calls} script calls");

    // A request after the burst is still refused: the batches wrote the bucket's state.
    let after = store.check("palisade:rl:test:hot".into(), interval, 100).await;
    assert!(matches!(after, Ok(Verdict::Denied { .. })), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_are_decided_apart() {
    let redis = Redis::start();
    let store = connected_store(&redis).await;
    let interval = Duration::from_secs(60);
    let decisions: Vec<_> = (0..60)
        .map(|i| {
            let store = store.clone();
            let bucket = format!("palisade:rl:test:client-{}", i % 3);
            tokio::spawn(async move { store.check(bucket, interval, 10).await })
        })
        .collect();
    let mut allowed = 0;
    for decision in decisions {
        if let Ok(Verdict::Allowed { .. }) = decision.await.expect("the task ran") {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 30, "each of the three buckets allows its own burst of 10");
}
