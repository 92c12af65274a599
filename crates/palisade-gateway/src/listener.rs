//! Client listeners: accept, enforce the connection limit, terminate TLS, and serve HTTP/1.1 and
//! HTTP/2 (ALPN on TLS, prior knowledge on plain TCP) with the edge limits of the current runtime.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::context::ConnectionInfo;
use crate::framing::{Inspected, Inspector, Verdicts};
use crate::pipeline;
use crate::Shared;

/// Counts an open connection for as long as it lives.
struct OpenConnection(Arc<Shared>);

impl OpenConnection {
    fn try_open(shared: &Arc<Shared>, limit: usize) -> Option<Self> {
        let opened = shared.open_connections.fetch_add(1, Ordering::AcqRel) + 1;
        if opened > limit {
            shared.open_connections.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        shared.metrics.open_connections.inc();
        Some(Self(shared.clone()))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.open_connections.dec();
    }
}

pub(crate) type OpenCount = AtomicUsize;

/// Accepts until `stop` turns true; connections already open watch `stop` themselves and drain (see
/// `serve_connection`). Runs on a worker's runtime; `listener` is that worker's own `SO_REUSEPORT` socket.
pub(crate) async fn accept_loop(
    listener: std::net::TcpListener,
    name: Arc<str>,
    tls: Option<TlsEndpoint>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, "cannot register listener with the worker's event loop");
            return;
        }
    };
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and similar: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        let limit = shared.runtime.load().config.limits.max_connections;
        let Some(open) = OpenConnection::try_open(&shared, limit) else {
            shared.metrics.connections_rejected.inc();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(
            stream,
            peer,
            name.clone(),
            tls.clone(),
            shared.clone(),
            stop.clone(),
            open,
        ));
    }
}

/// A TLS listener's acceptor and name (to find its certificate settings in the current runtime).
#[derive(Clone)]
pub(crate) struct TlsEndpoint {
    pub acceptor: TlsAcceptor,
    pub listener: Arc<str>,
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<str>,
    tls: Option<TlsEndpoint>,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    _open: OpenConnection,
) {
    let runtime = shared.runtime.load_full();
    let limits = &runtime.config.limits;
    let max_head = usize::try_from(limits.max_header_bytes.get()).unwrap_or(usize::MAX);
    let verdicts = Verdicts::default();
    let inspector = Inspector::new(max_head, verdicts.clone());
    let builder = http_builder(&runtime.config.limits, max_head);
    let connection_info = |client_certificate| {
        Arc::new(ConnectionInfo {
            listener: listener.clone(),
            peer,
            tls: tls.is_some(),
            verdicts: verdicts.clone(),
            hop: crate::pipeline::forwarded::HopValues::new(peer.ip(), tls.is_some()),
            client_certificate,
        })
    };
    let service_for = |info: Arc<ConnectionInfo>| {
        let service_shared = shared.clone();
        hyper::service::service_fn(move |request| {
            pipeline::handle(service_shared.runtime.load_full(), info.clone(), request)
        })
    };
    // Serves the connection; once `stop` turns true, asks it to finish gracefully (HTTP/1: close after
    // the current response; HTTP/2: GOAWAY) and waits for that. A macro because the two IO types
    // give two connection types.
    macro_rules! serve_until_drained {
        ($io:expr, $service:expr) => {{
            let service = $service;
            let connection = builder.serve_connection_with_upgrades($io, service);
            tokio::pin!(connection);
            let mut stop = stop;
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = stop.wait_for(|stopped| *stopped) => {}
            }
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }};
    }
    match &tls {
        None => {
            let service = service_for(connection_info(None));
            serve_until_drained!(TokioIo::new(Inspected::new(stream, inspector)), service)
        }
        Some(endpoint) => {
            let handshake =
                tokio::time::timeout(limits.header_read_timeout.get(), endpoint.acceptor.accept(stream)).await;
            let stream = match handshake {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => return handshake_refused(&shared, &endpoint.listener, peer, Some(&error)),
                Err(_) => return handshake_refused(&shared, &endpoint.listener, peer, None),
            };
            let certificate = crate::tls::client_principal(stream.get_ref().1, &endpoint.listener, &runtime);
            let service = service_for(connection_info(certificate));
            serve_until_drained!(TokioIo::new(Inspected::new(stream, inspector)), service)
        }
    }
}

/// Records a failed TLS handshake: a metric by reason code, and an event naming the peer and why. A
/// refused client certificate is a security decision; a client that just went away is only counted.
fn handshake_refused(shared: &Shared, listener: &str, peer: SocketAddr, error: Option<&std::io::Error>) {
    let reason = crate::tls::handshake_failure_reason(error);
    shared.metrics.tls_handshake_failed(listener, reason);
    let detail = error.map(ToString::to_string).unwrap_or_else(|| "timed out".into());
    if crate::tls::is_refusal(reason) {
        crate::audit::handshake_refused(&shared.runtime.load(), listener, peer, reason);
        tracing::warn!(event = "tls_handshake_refused", listener, %peer, reason, detail = %detail, "TLS handshake refused");
    } else {
        tracing::debug!(listener, %peer, reason, detail = %detail, "TLS handshake failed");
    }
}

/// hyper's `DEFAULT_MAX_HEADERS` (not exported); `the_default_header_count_limit_is_100` in
/// tests/hardening.rs pins it.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

fn http_builder(limits: &palisade_core::config::EdgeLimits, max_head: usize) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(crate::header_timer::HeaderTimer::default())
        .header_read_timeout(limits.header_read_timeout.get())
        .max_buf_size(max_head)
        .keep_alive(true);
    // hyper's own limit is 100 headers. Setting any limit, even 100, makes it size its header arrays on
    // the heap and initialise them for every request (~1.7k instructions), so only set one that differs.
    if limits.max_headers != HYPER_DEFAULT_MAX_HEADERS {
        builder.http1().max_headers(limits.max_headers);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(u32::try_from(max_head).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(Some(100))
        .keep_alive_interval(Some(std::time::Duration::from_secs(30)));
    builder
}
