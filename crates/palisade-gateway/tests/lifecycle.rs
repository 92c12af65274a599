//! Hot reload, TLS listeners, and graceful shutdown.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use palisade_gateway::{ConfigSource, Gateway};
use rustls_pki_types::ServerName;
use support::*;

fn route_config(a: std::net::SocketAddr, routes: &str) -> String {
    format!("reload:\n  poll_interval: 100ms\nclusters:\n  echo: {{ targets: [\"{a}\"] }}\nroutes:\n{routes}")
}

#[tokio::test]
async fn file_change_reloads_and_an_invalid_file_keeps_the_old_config() {
    let a = echo("a").await;
    let gw = start(&route_config(
        a,
        "  - { name: one, match: { path: /one }, cluster: echo, public: true }\n",
    ))
    .await;
    assert_eq!(get(&gw.url("/one")).await.0, 200);
    assert_eq!(get(&gw.url("/two")).await.0, 404);

    gw.rewrite_config(&route_config(
        a,
        "  - { name: two, match: { path: /two }, cluster: echo, public: true }\n",
    ));
    let mut reloaded = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if get(&gw.url("/two")).await.0 == 200 {
            reloaded = true;
            break;
        }
    }
    assert!(reloaded, "the file change was picked up");
    assert_eq!(get(&gw.url("/one")).await.0, 404);

    gw.rewrite_config(&route_config(
        a,
        "  - { name: three, match: { path: /three }, cluster: missing, public: true }\n",
    ));
    eventually("the watcher refuses the broken file", || async {
        gw.metrics()
            .await
            .contains("palisade_config_reloads_total{outcome=\"rejected\"} 1")
    })
    .await;
    assert_eq!(get(&gw.url("/two")).await.0, 200, "the old config keeps serving");
    assert_eq!(get(&gw.url("/three")).await.0, 404);
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("palisade_config_reloads_total{outcome=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("palisade_config_reloads_total{outcome=\"rejected\"} 1"));
    assert!(metrics.contains("palisade_config_last_reload_ok 0"));
}

#[tokio::test]
async fn explicit_reload_reports_every_error_with_location() {
    let a = echo("a").await;
    let gw = start(&format!("reload: {{ watch: false }}\n{}", one_cluster(&[a], ""))).await;
    std::fs::write(&gw.config_path, with_listeners("clusters: {}\nroutes:\n  - { name: r, match: { prefix: / }, cluster: nope, public: true }\n  - { name: r, match: { prefix: /x }, cluster: nope, public: true }\n")).unwrap();
    let errors = gw.gateway.reload().await.expect_err("invalid config is refused");
    let text = errors.to_string();
    assert!(text.contains("gateway.yaml:"), "{text}");
    assert!(
        errors.0.len() >= 3,
        "unknown cluster twice and the duplicate name: {text}"
    );
    assert_eq!(get(&gw.url("/")).await.0, 200, "still serving the old config");
    gw.rewrite_config(&format!("reload: {{ watch: false }}\n{}", one_cluster(&[a], "")));
    gw.gateway.reload().await.expect("valid config reloads");
    assert!(gw.metrics().await.contains("palisade_config_last_reload_ok 1"));
}

#[tokio::test]
async fn reloads_that_change_listeners_are_refused_and_the_old_config_stays() {
    let a = echo("a").await;
    let routes = one_cluster(&[a], "");
    let gw = start(&format!("reload: {{ watch: false }}\n{routes}")).await;
    let renamed = format!(
        "listeners:\n  - name: renamed\n    address: 127.0.0.1:0\nreload: {{ watch: false }}\n{}",
        routes.replace("prefix: /", "prefix: /other")
    );
    gw.rewrite_config(&renamed);
    let errors = gw
        .gateway
        .reload()
        .await
        .expect_err("a listener change needs a restart");
    assert!(errors.to_string().contains("only with a restart"), "{errors}");
    assert_eq!(
        get(&gw.url("/")).await.0,
        200,
        "the running config, listener and routes alike, stays"
    );
    assert!(gw
        .metrics()
        .await
        .contains("palisade_config_reloads_total{outcome=\"rejected\"} 1"));
}

#[tokio::test]
async fn in_flight_requests_finish_on_the_config_they_started_with() {
    let held = HeldUpstream::start().await;
    let gw = start(&format!(
        "reload: {{ watch: false }}\n{}",
        one_cluster(&[held.address], "")
    ))
    .await;
    let in_flight = tokio::spawn(get_owned(gw.url("/slow")));
    held.arrived(1).await;
    gw.rewrite_config("reload: { watch: false }\nclusters:\n  echo: { targets: [\"127.0.0.1:1\"] }\nroutes:\n  - { name: other, match: { path: /elsewhere }, cluster: echo, public: true }\n");
    gw.gateway.reload().await.unwrap();
    held.release();
    let (status, body) = in_flight.await.unwrap();
    assert_eq!((status, body.as_str()), (200, "held"));
    assert_eq!(get(&gw.url("/slow")).await.0, 404, "new requests see the new config");
}

struct TlsFiles {
    _dir: tempfile::TempDir,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

fn write_cert(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), name.to_string()]).unwrap();
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    (cert, key, generated.cert.der().to_vec())
}

async fn tls_connect(
    address: std::net::SocketAddr,
    root: &[u8],
    alpn: &[u8],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(root.to_vec()))
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(address).await?;
    connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await
}

async fn tls_get(address: std::net::SocketAddr, root: &[u8], alpn: &[u8]) -> (u16, String) {
    let stream = tls_connect(address, root, alpn).await.expect("TLS handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(alpn));
    let request = http::Request::get("https://localhost/tls")
        .header("host", "localhost")
        .body(Full::<Bytes>::default())
        .unwrap();
    let response = if alpn == b"h2" {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        sender.send_request(request).await.unwrap()
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        sender.send_request(request).await.unwrap()
    };
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn tls_listener_serves_http1_and_http2_by_alpn_and_reloads_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, first_root) = write_cert(dir.path(), "first");
    let files = TlsFiles {
        cert: cert.clone(),
        key: key.clone(),
        _dir: dir,
    };
    let a = echo("a").await;
    let yaml = format!(
        "listeners:\n  - name: public\n    address: 127.0.0.1:0\n    tls: {{ cert: {}, key: {} }}\nreload: {{ poll_interval: 100ms }}\n{}",
        files.cert.display(),
        files.key.display(),
        one_cluster(&[a], "")
    );
    let gw = start(&yaml).await;
    for alpn in [b"http/1.1".as_slice(), b"h2".as_slice()] {
        let (status, body) = tls_get(gw.address, &first_root, alpn).await;
        assert_eq!(status, 200);
        assert_eq!(echoed(&body)["headers"]["x-forwarded-proto"][0], "https");
    }
    let plain = raw(gw.address, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(!plain.contains("200 OK"), "plain HTTP is not served on a TLS listener");

    // Replace the certificate files: new handshakes present the new certificate.
    let rotated_dir = tempfile::tempdir().unwrap();
    let (new_cert, new_key, second_root) = write_cert(rotated_dir.path(), "second");
    std::fs::copy(&new_cert, &files.cert).unwrap();
    std::fs::copy(&new_key, &files.key).unwrap();
    let mut rotated = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if tls_connect(gw.address, &second_root, b"http/1.1").await.is_ok() {
            rotated = true;
            break;
        }
    }
    assert!(rotated, "the renewed certificate is served without a restart");
    assert!(
        tls_connect(gw.address, &first_root, b"http/1.1").await.is_err(),
        "the old certificate is gone"
    );
}

#[tokio::test]
async fn graceful_shutdown_drains_in_flight_requests_and_stops_accepting() {
    let held = HeldUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.yaml");
    std::fs::write(&path, with_listeners(&one_cluster(&[held.address], ""))).unwrap();
    let gateway = Gateway::start(ConfigSource::File(path)).await.unwrap();
    let address = gateway.listener_addr("public").unwrap();
    let in_flight = tokio::spawn(get_owned(format!("http://{address}/slow")));
    held.arrived(1).await;
    let shutdown = tokio::spawn(gateway.shutdown_within(Duration::from_secs(5)));
    eventually("the listener is closed for the drain", || async {
        tokio::net::TcpStream::connect(address).await.is_err()
    })
    .await;
    assert!(!in_flight.is_finished(), "the drain waits for the held request");
    held.release();
    let (status, _) = in_flight.await.unwrap();
    assert_eq!(status, 200, "the in-flight request completed");
    assert!(shutdown.await.unwrap(), "drained within the deadline");
}

#[tokio::test]
async fn drain_deadline_bounds_shutdown() {
    let held = HeldUpstream::start().await;
    let gw = start(&one_cluster(&[held.address], "")).await;
    let _in_flight = tokio::spawn(get_owned(gw.url("/slow")));
    held.arrived(1).await;
    let started = std::time::Instant::now();
    assert!(
        !gw.gateway.shutdown_within(Duration::from_millis(300)).await,
        "reports that it did not drain"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// An upstream that counts the health probes (`GET /healthz`) it receives and answers everything 200.
async fn probe_counter() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind(LOCAL).await.unwrap();
    let address = listener.local_addr().unwrap();
    let probes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = probes.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counted = counted.clone();
            let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                if request.uri().path() == "/healthz" {
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                async { Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok")))) }
            });
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    (address, probes)
}

/// Probes `probes` sees during `window`.
async fn probes_during(probes: &std::sync::atomic::AtomicUsize, window: Duration) -> usize {
    let before = probes.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(window).await;
    probes.load(std::sync::atomic::Ordering::SeqCst) - before
}

fn probed_cluster(name: &str, target: std::net::SocketAddr, request_timeout_secs: u32) -> String {
    format!(
        "  {name}:\n    targets: [\"{target}\"]\n    request_timeout: {request_timeout_secs}s\n    health_check: {{ path: /healthz, interval: 100ms, timeout: 100ms }}\n"
    )
}

/// A reload frees the configuration it replaced, even while connections accepted under it stay
/// open: its clusters' health checks stop (every reload here makes a new cluster, as a changed
/// timeout does), and a cluster the reload removed is probed no more.
#[tokio::test]
async fn reloads_free_the_old_world_while_connections_stay_open() {
    let (kept, kept_probes) = probe_counter().await;
    let (removed, removed_probes) = probe_counter().await;
    let config = |n: u32, with_removed: bool| {
        let mut clusters = probed_cluster("kept", kept, 10 + n);
        if with_removed {
            clusters.push_str(&probed_cluster("gone", removed, 10));
        }
        format!("reload:\n  watch: false\nclusters:\n{clusters}routes:\n  - {{ name: all, match: {{ prefix: / }}, cluster: kept, public: true }}\n")
    };
    let gw = start(&config(0, true)).await;
    let mut held = Vec::new();
    for n in 1..=30 {
        let mut stream = tokio::net::TcpStream::connect(gw.address).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut stream, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buffer = [0u8; 1024];
        let read = tokio::io::AsyncReadExt::read(&mut stream, &mut buffer).await.unwrap();
        assert!(read > 0, "served");
        held.push(stream);
        gw.rewrite_config(&config(n, n < 30));
        gw.gateway.reload().await.expect("reloads");
    }
    let window = Duration::from_millis(1000);
    let kept_now = probes_during(&kept_probes, window).await;
    // One checker at a 100 ms interval: about 10 a second; 31 live configs would make about 310.
    assert!(
        (5..=15).contains(&kept_now),
        "one probe per interval for the target, not one per old config: {kept_now}"
    );
    assert_eq!(
        probes_during(&removed_probes, Duration::from_millis(300)).await,
        0,
        "the removed cluster is not probed"
    );
    // Every replaced configuration is freed, although a connection accepted under each stays open.
    let metrics = gw.metrics().await;
    assert!(metrics.contains("palisade_config_generations 1\n"), "{metrics}");
    drop(held);
}

/// Connections accepted before the stop whose request was not read yet are answered (and then
/// closed), not dropped: 20 connections are open when the drain starts, each sends its request only
/// once the listener has closed, and each gets its 200 with `Connection: close`.
#[tokio::test]
async fn a_drain_answers_every_connection_accepted_before_it() {
    let a = echo("a").await;
    let gw = start(&one_cluster(&[a], "")).await;
    let mut accepted = Vec::new();
    for _ in 0..20 {
        accepted.push(tokio::net::TcpStream::connect(gw.address).await.unwrap());
    }
    let open = async {
        while !gw.metrics().await.contains("palisade_open_connections 20") {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), open)
        .await
        .expect("all 20 accepted");
    let Running { gateway, address, .. } = gw;
    let shutdown = tokio::spawn(gateway.shutdown_within(Duration::from_secs(10)));
    // The listener closes first: once it refuses, the drain has begun.
    let refused = async {
        while tokio::net::TcpStream::connect(address).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), refused)
        .await
        .expect("the listener closes");
    let mut answered = 0;
    for stream in &mut accepted {
        tokio::io::AsyncWriteExt::write_all(stream, b"GET /late HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
    }
    for stream in &mut accepted {
        let answer = read_all(stream, Duration::from_secs(5)).await;
        if status_of(&answer) == 200 && answer.to_ascii_lowercase().contains("connection: close") {
            answered += 1;
        }
    }
    assert_eq!(answered, 20, "every accepted connection is answered");
    assert!(shutdown.await.unwrap(), "and the drain ends in time");
}
