//! Upstream behaviour: failover, ejection, timeouts, retries, HTTP/2 upstreams, WebSocket, streaming.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An upstream we can stop and start again on the same address.
struct Switchable {
    address: std::net::SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Switchable {
    async fn new(name: &str) -> Self {
        let listener = TcpListener::bind(LOCAL).await.unwrap();
        let address = listener.local_addr().unwrap();
        Self {
            address,
            task: Some(tokio::spawn(palisade_echo::serve(listener, name.to_string()))),
        }
    }

    fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    async fn restart(&mut self, name: &str) {
        let listener = TcpListener::bind(self.address).await.unwrap();
        self.task = Some(tokio::spawn(palisade_echo::serve(listener, name.to_string())));
    }
}

async fn upstreams_seen(gw: &Running, requests: usize) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..requests {
        let (status, body) = get(&gw.url("/")).await;
        seen.push(if status == 200 {
            echoed(&body)["upstream"].as_str().unwrap().to_string()
        } else {
            status.to_string()
        });
    }
    seen
}

#[tokio::test]
async fn active_health_checks_fail_over_and_bring_targets_back() {
    let mut a = Switchable::new("a").await;
    let b = echo("b").await;
    let checks = "    health_check: { path: /healthz, interval: 100ms, timeout: 100ms, healthy_threshold: 2, unhealthy_threshold: 2 }\n    passive_health: { consecutive_failures: 0 }\n    retries: { attempts: 0 }\n";
    let gw = start(&one_cluster(&[a.address, b], checks)).await;
    let seen = upstreams_seen(&gw, 4).await;
    assert!(
        seen.contains(&"a".to_string()) && seen.contains(&"b".to_string()),
        "{seen:?}"
    );

    a.stop();
    eventually("a is out of rotation", || async {
        upstreams_seen(&gw, 6).await == vec!["b"; 6]
    })
    .await;
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(&format!(
            "palisade_upstream_healthy{{cluster=\"echo\",target=\"{}\"}} 0",
            a.address
        )),
        "{metrics}"
    );

    a.restart("a").await;
    eventually("a is back after healthy_threshold passes", || async {
        upstreams_seen(&gw, 6).await.contains(&"a".to_string())
    })
    .await;
    assert!(upstreams_seen(&gw, 6).await.contains(&"a".to_string()), "a stays back");
}

/// Recovery by evidence: a target passively ejected for an hour is back as soon as active checks see
/// it pass again (well within two intervals of its restart), and one outage counts as one ejection.
#[tokio::test]
async fn a_passively_ejected_target_returns_when_active_checks_pass() {
    let mut a = Switchable::new("a").await;
    let b = echo("b").await;
    let checks = "    balance: round_robin\n    health_check: { path: /healthz, interval: 100ms, timeout: 100ms, healthy_threshold: 1, unhealthy_threshold: 50 }\n    passive_health: { consecutive_failures: 2, ejection_time: 1h }\n    retries: { attempts: 0 }\n";
    let gw = start(&one_cluster(&[a.address, b], checks)).await;
    a.stop();
    // Live traffic finds it down long before the active checks would (unhealthy_threshold 50).
    let seen = upstreams_seen(&gw, 12).await;
    assert_eq!(
        seen.iter().filter(|s| *s == "502").count(),
        2,
        "two failures eject it: {seen:?}"
    );
    let ejections = format!(
        "palisade_upstream_ejections_total{{cluster=\"echo\",target=\"{}\"}} 1",
        a.address
    );
    assert!(gw.metrics().await.contains(&ejections), "one outage, one ejection");
    a.restart("a").await;
    let restarted = tokio::time::Instant::now();
    let back = async {
        loop {
            if upstreams_seen(&gw, 2).await.contains(&"a".to_string()) {
                return restarted.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let after = tokio::time::timeout(Duration::from_secs(5), back)
        .await
        .expect("back long before the hour of its ejection");
    assert!(
        after < Duration::from_millis(1000),
        "back within a few check intervals: {after:?}"
    );
    assert!(gw.metrics().await.contains(&ejections), "still one ejection");
}

/// A sidecar whose identity service does not renew its certificate is ready but degraded, saying
/// how long the current certificate lasts; once it has expired the sidecar is unready.
#[tokio::test]
async fn readyz_reports_a_failing_certificate_authority() {
    let a = echo("a").await;
    let gw = start(&one_cluster(&[a], "")).await;
    let readyz = format!("http://{}/readyz", gw.gateway.admin_addr());
    let shared = gw.gateway.shared();
    shared.set_identity(palisade_gateway::IdentityHealth {
        seconds_left: 3000,
        renewal_failing: false,
    });
    let (status, body) = get(&readyz).await;
    assert_eq!(status, 200);
    assert!(!body.contains("certificate_authority"), "{body}");
    shared.set_identity(palisade_gateway::IdentityHealth {
        seconds_left: 1200,
        renewal_failing: true,
    });
    let (status, body) = get(&readyz).await;
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["degraded"][0]["dependency"], "certificate_authority", "{body}");
    assert!(
        body["degraded"][0]["effect"].as_str().unwrap().contains("1200 s"),
        "{body}"
    );
    shared.set_identity(palisade_gateway::IdentityHealth {
        seconds_left: 0,
        renewal_failing: true,
    });
    let (status, body) = get(&readyz).await;
    assert_eq!(status, 503, "an expired identity: {body}");
    assert!(body.contains("certificate_authority"), "{body}");
}

#[tokio::test]
async fn readyz_reflects_cluster_health() {
    let mut a = Switchable::new("a").await;
    let checks = "    health_check: { path: /healthz, interval: 100ms, timeout: 100ms, unhealthy_threshold: 1 }\n";
    let gw = start(&one_cluster(&[a.address], checks)).await;
    let readyz = format!("http://{}/readyz", gw.gateway.admin_addr());
    assert_eq!(get(&readyz).await.0, 200);
    a.stop();
    let unready = async {
        loop {
            let (status, body) = get(&readyz).await;
            if status == 503 {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let body = tokio::time::timeout(Duration::from_secs(5), unready)
        .await
        .expect("the failing health checks make the gateway unready");
    assert!(body.contains("echo"), "{body}");
    assert_eq!(
        get(&format!("http://{}/healthz", gw.gateway.admin_addr())).await.0,
        200,
        "liveness stays up"
    );
    assert_eq!(get(&gw.url("/")).await.0, 503, "no healthy target: 503");
}

#[tokio::test]
async fn passive_ejection_removes_a_failing_target_from_rotation() {
    let dead = dead_address().await;
    let b = echo("b").await;
    let passive = "    passive_health: { consecutive_failures: 2, ejection_time: 1h }\n    retries: { attempts: 0 }\n";
    let gw = start(&one_cluster(&[dead, b], passive)).await;
    let seen = upstreams_seen(&gw, 8).await;
    assert_eq!(
        seen.iter().filter(|s| *s == "502").count(),
        2,
        "two failures eject the dead target: {seen:?}"
    );
    assert_eq!(upstreams_seen(&gw, 6).await, vec!["b"; 6]);
    assert!(gw.metrics().await.contains(&format!(
        "palisade_upstream_ejections_total{{cluster=\"echo\",target=\"{dead}\"}} 1"
    )));
}

#[tokio::test]
async fn idempotent_requests_are_retried_on_another_target_but_posts_are_not() {
    let dead = dead_address().await;
    let b = echo("b").await;
    let retry =
        "    passive_health: { consecutive_failures: 0 }\n    retries: { attempts: 1, budget_min_per_second: 100 }\n";
    let gw = start(&one_cluster(&[dead, b], retry)).await;
    assert_eq!(
        upstreams_seen(&gw, 6).await,
        vec!["b"; 6],
        "every GET that hit the dead target was retried"
    );
    let mut post_failures = 0;
    for _ in 0..6 {
        let (status, _) = send(
            http::Request::post(gw.url("/"))
                .body(Full::new(Bytes::from_static(b"x")))
                .unwrap(),
        )
        .await;
        post_failures += usize::from(status == 502);
    }
    assert_eq!(post_failures, 3, "a POST with a body is never replayed");
    assert!(!gw
        .metrics()
        .await
        .contains("palisade_upstream_retries_total{cluster=\"echo\"} 0"));
}

/// A target that dies under a request (it resets the connection once it has the head) is not the
/// client's problem when the request can safely go elsewhere: a GET is sent again to the other
/// target, a POST never is. `retries.on: [connect_failure]` alone gives the old behaviour.
#[tokio::test]
async fn a_get_whose_target_resets_before_answering_is_retried_elsewhere() {
    let resetting = resetting_upstream(false).await;
    let b = echo("b").await;
    let cluster = "    balance: round_robin\n    passive_health: { consecutive_failures: 0 }\n    retries: { budget_min_per_second: 100 }\n";
    let gw = start(&one_cluster(&[resetting, b], cluster)).await;
    assert_eq!(
        upstreams_seen(&gw, 6).await,
        vec!["b"; 6],
        "every GET that hit the resetting target was retried"
    );
    let mut post_failures = 0;
    for _ in 0..4 {
        let post = http::Request::post(gw.url("/"))
            .body(Full::new(Bytes::from_static(b"x")))
            .unwrap();
        post_failures += usize::from(send(post).await.0 == 502);
    }
    assert_eq!(post_failures, 2, "a POST is never sent twice");
    let connect_only = "    balance: round_robin\n    passive_health: { consecutive_failures: 0 }\n    retries: { on: [connect_failure], budget_min_per_second: 100 }\n";
    let gw = start(&one_cluster(&[resetting, b], connect_only)).await;
    assert!(
        upstreams_seen(&gw, 4).await.contains(&"502".to_string()),
        "not retried when reset is not named"
    );
}

/// An upstream that answers every request with 503.
async fn always_unavailable() -> std::net::SocketAddr {
    canned_upstream(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n").await
}

#[tokio::test]
async fn a_503_is_retried_only_when_the_cluster_asks_for_it() {
    let unavailable = always_unavailable().await;
    let b = echo("b").await;
    let no_ejection = "    passive_health: { consecutive_failures: 0 }\n";
    // The default (`on: [connect_failure]`): the 503 reaches the client, as with nginx and HAProxy.
    let gw = start(&one_cluster(&[unavailable, b], no_ejection)).await;
    let seen = upstreams_seen(&gw, 6).await;
    assert_eq!(seen.iter().filter(|s| *s == "503").count(), 3, "{seen:?}");
    drop(gw);
    let retry = format!(
        "{no_ejection}    retries: {{ attempts: 1, budget_min_per_second: 100, on: [connect_failure, unavailable] }}\n"
    );
    let gw = start(&one_cluster(&[unavailable, b], &retry)).await;
    assert_eq!(
        upstreams_seen(&gw, 6).await,
        vec!["b"; 6],
        "every 503 was retried on the other target"
    );
}

#[tokio::test]
async fn http2_clusters_retry_connect_failures_too() {
    // HTTP/2's pooled client keeps a request it could not send, so this retry goes out from a copy.
    let dead = dead_address().await;
    let b = echo("b").await;
    let extra = "    protocol: http2\n    passive_health: { consecutive_failures: 0 }\n    retries: { attempts: 1, budget_min_per_second: 100 }\n";
    let gw = start(&one_cluster(&[dead, b], extra)).await;
    assert_eq!(upstreams_seen(&gw, 6).await, vec!["b"; 6]);
}

#[tokio::test]
async fn retry_budget_caps_retries() {
    let dead = dead_address().await;
    let dead2 = dead_address().await;
    let retry = "    passive_health: { consecutive_failures: 0 }\n    retries: { attempts: 5, budget_ratio: 0.0, budget_min_per_second: 1 }\n";
    let gw = start(&one_cluster(&[dead, dead2], retry)).await;
    for _ in 0..20 {
        assert_eq!(get(&gw.url("/")).await.0, 502);
    }
    let metrics = gw.metrics().await;
    let retries: u64 = metrics
        .lines()
        .find(|l| l.starts_with("palisade_upstream_retries_total{cluster=\"echo\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap();
    assert!(
        retries <= 12,
        "20 failing requests with attempts=5 would retry 100 times; the budget allowed {retries}"
    );
}

#[tokio::test]
async fn upstream_down_is_502_and_slow_upstream_is_504_never_a_hang() {
    let dead = dead_address().await;
    let gw = start(&one_cluster(&[dead], "    retries: { attempts: 0 }\n")).await;
    let (status, body) = get(&gw.url("/")).await;
    assert_eq!(status, 502);
    assert!(
        !body.contains(&dead.to_string()),
        "no upstream address in the error body"
    );

    let a = echo("a").await;
    let gw = start(&one_cluster(&[a], "    request_timeout: 200ms\n")).await;
    let started = std::time::Instant::now();
    let slow = http::Request::get(gw.url("/"))
        .header("x-echo-delay-ms", "3000")
        .body(Full::default())
        .unwrap();
    let (status, _) = send(slow).await;
    assert_eq!(status, 504);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "timed out after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn connect_timeout_is_504() {
    // A listener with a full backlog and nobody accepting: connects hang, like a black-holed host.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(LOCAL.parse().unwrap()).unwrap();
    let stuck = socket.listen(1).unwrap();
    let address = stuck.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        if let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_millis(100), TcpStream::connect(address)).await {
            fillers.push(stream);
        }
    }
    let gw = start(&one_cluster(
        &[address],
        "    connect_timeout: 200ms\n    retries: { attempts: 0 }\n",
    ))
    .await;
    let started = std::time::Instant::now();
    let (status, _) = get(&gw.url("/")).await;
    assert!(status == 504 || status == 502, "got {status}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn upstream_5xx_passes_through_unchanged() {
    let a = echo("a").await;
    let gw = start(&one_cluster(&[a], "    retries: { attempts: 0 }\n")).await;
    let request = http::Request::get(gw.url("/"))
        .header("x-echo-status", "500")
        .body(Full::default())
        .unwrap();
    assert_eq!(send(request).await.0, 500);
}

#[tokio::test]
async fn http2_upstream_cluster() {
    let a = echo("a").await;
    let gw = start(&one_cluster(&[a], "    protocol: http2\n")).await;
    let (status, body) = get(&gw.url("/h2")).await;
    assert_eq!(status, 200);
    assert_eq!(echoed(&body)["version"], "HTTP/2.0");
}

#[tokio::test]
async fn large_bodies_stream_through_in_both_directions() {
    let a = echo("a").await;
    let gw = start(&one_cluster(&[a], "")).await;
    let body = vec![b'z'; 5 * 1024 * 1024];
    let (status, echoed_body) = send(
        http::Request::post(gw.url("/upload"))
            .body(Full::new(Bytes::from(body)))
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(echoed(&echoed_body)["body_length"], 5 * 1024 * 1024);
}

#[tokio::test]
async fn websocket_upgrade_passes_through() {
    let a = echo("a").await;
    let gw = start(&one_cluster(&[a], "")).await;
    let mut stream = TcpStream::connect(gw.address).await.unwrap();
    let handshake = "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    stream.write_all(handshake.as_bytes()).await.unwrap();
    let mut head = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut head))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&head[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.to_ascii_lowercase().contains("upgrade: websocket"), "{head}");
    stream.write_all(b"ping-through-the-tunnel").await.unwrap();
    let mut echoed = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echoed[..n], b"ping-through-the-tunnel");
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_reused() {
    let a = echo("a").await;
    let gw = start(&one_cluster(&[a], "")).await;
    let client = client();
    let mut connections = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let (status, _, body) =
            send_full(&client, http::Request::get(gw.url("/")).body(Full::default()).unwrap()).await;
        assert_eq!(status, 200);
        connections.insert(echoed(&body)["connection"].as_u64().unwrap());
    }
    assert_eq!(
        connections.len(),
        1,
        "20 sequential requests used upstream connections {connections:?}"
    );
    // A body abandoned half-way must not hand a half-read connection to the next request.
    let big = http::Request::get(gw.url("/"))
        .header("x-echo-delay-ms", "0")
        .body(Full::default())
        .unwrap();
    let response = client.request(big).await.unwrap();
    drop(response);
    let (status, _, body) = send_full(
        &client,
        http::Request::get(gw.url("/after")).body(Full::default()).unwrap(),
    )
    .await;
    assert_eq!((status, echoed(&body)["path"].as_str()), (200, Some("/after")));
}
