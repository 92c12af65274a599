//! Client listeners: accept, enforce the connection limit, terminate TLS, and serve HTTP/1.1 and
//! HTTP/2 (ALPN on TLS, prior knowledge on plain TCP) with the edge limits of the current runtime.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use palisade_core::decision::{Decision, Fault, Stage};

use crate::context::ConnectionInfo;
use crate::framing::{Inspected, Inspector, Verdicts};
use crate::pipeline;
use crate::pipeline::observe::log_connection_refusal;
use crate::Shared;

/// Counts an open connection for as long as it lives, overall and for its client address.
struct OpenConnection {
    shared: Arc<Shared>,
    /// The client key counted in [`ClientConnections`], when the connection is capped per client.
    client: Option<IpAddr>,
}

/// Why a connection was closed as soon as it was accepted.
enum Refused {
    /// `max_connections` reached.
    Total,
    /// The client address holds `max_connections_per_client`; `first` when this is the first refusal
    /// since it last was below its cap (audited once per such episode, not once per connection).
    PerClient { first: bool },
}

impl OpenConnection {
    fn try_open(shared: &Arc<Shared>, limit: usize, per_client: Option<(IpAddr, usize)>) -> Result<Self, Refused> {
        let opened = shared.open_connections.fetch_add(1, Ordering::AcqRel) + 1;
        if opened > limit {
            shared.open_connections.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Total);
        }
        if let Some((client, cap)) = per_client {
            if let Err(first) = shared.client_connections.open(client, cap) {
                shared.open_connections.fetch_sub(1, Ordering::AcqRel);
                return Err(Refused::PerClient { first });
            }
        }
        shared.metrics.open_connections.inc();
        Ok(Self {
            shared: shared.clone(),
            client: per_client.map(|(client, _)| client),
        })
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if let Some(client) = self.client {
            self.shared.client_connections.close(client);
        }
        self.shared.open_connections.fetch_sub(1, Ordering::AcqRel);
        self.shared.metrics.open_connections.dec();
    }
}

pub(crate) type OpenCount = AtomicUsize;

/// Open connections per client address, for `limits.max_connections_per_client`. Touched once when a
/// connection opens and once when it closes, never per request.
#[derive(Default)]
pub(crate) struct ClientConnections(Mutex<HashMap<IpAddr, ClientCount>>);

#[derive(Default)]
struct ClientCount {
    open: usize,
    /// Refusing since the count last was below the cap.
    refusing: bool,
}

impl ClientConnections {
    /// Counts a connection from `client`, or refuses it at `cap`; the error says whether it is the
    /// first refusal of this episode.
    fn open(&self, client: IpAddr, cap: usize) -> Result<(), bool> {
        let Ok(mut clients) = self.0.lock() else {
            return Err(false);
        };
        let count = clients.entry(client).or_default();
        if count.open >= cap {
            let first = !count.refusing;
            count.refusing = true;
            return Err(first);
        }
        count.open += 1;
        Ok(())
    }

    fn close(&self, client: IpAddr) {
        let Ok(mut clients) = self.0.lock() else {
            return;
        };
        if let Some(count) = clients.get_mut(&client) {
            count.open = count.open.saturating_sub(1);
            count.refusing = false;
            if count.open == 0 {
                clients.remove(&client);
            }
        }
    }
}

/// The address a connection is counted under: an IPv4 address (IPv4-mapped IPv6 included) as it
/// is, an IPv6 client by its /64, which one host usually holds whole.
fn client_key(peer: IpAddr) -> IpAddr {
    match crate::pipeline::forwarded::canonical(peer) {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

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
    // Served connections watch their own copy of `stop`; this one is the accept loop's.
    let watched = stop.clone();
    let admit = |stream: TcpStream, peer: SocketAddr| admit(stream, peer, &name, &tls, &shared, &watched);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stopped| *stopped) => break,
        };
        match accepted {
            Ok((stream, peer)) => admit(stream, peer),
            Err(error) => {
                // Out of file descriptors and similar: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
    // Connections the kernel completed but nobody accepted yet would be reset when the socket
    // closes: take them all first (they are answered with `Connection: close`), then close.
    loop {
        let pending = socket2::SockRef::from(&listener).accept();
        let Ok((socket, peer)) = pending else { break };
        // accept(2) hands out a blocking socket; tokio needs it non-blocking.
        if socket.set_nonblocking(true).is_err() {
            continue;
        }
        let (Some(peer), Ok(stream)) = (peer.as_socket(), TcpStream::from_std(std::net::TcpStream::from(socket)))
        else {
            continue;
        };
        admit(stream, peer);
    }
}

/// Counts a new connection against the limits and serves it, or closes it at once (counted, logged,
/// audited) when a limit is reached.
fn admit(
    stream: TcpStream,
    peer: SocketAddr,
    name: &Arc<str>,
    tls: &Option<TlsEndpoint>,
    shared: &Arc<Shared>,
    stop: &watch::Receiver<bool>,
) {
    let runtime = shared.runtime.load();
    let limits = &runtime.config.limits;
    // Load balancers and other trusted proxies carry many clients over their few addresses.
    let per_client = (limits.max_connections_per_client > 0 && !runtime.trusted_proxies.contains(peer.ip()))
        .then(|| (client_key(peer.ip()), limits.max_connections_per_client));
    let open = match OpenConnection::try_open(shared, limits.max_connections, per_client) {
        Ok(open) => open,
        Err(refused) => {
            let reason = match refused {
                Refused::Total => "max_connections",
                Refused::PerClient { .. } => "max_connections_per_client",
            };
            shared.metrics.connection_rejected(reason);
            let fault = match refused {
                Refused::Total => Fault::Gateway,
                Refused::PerClient { .. } => Fault::Client,
            };
            let decision = Decision::new(Stage::Accept, fault, reason);
            log_connection_refusal(&runtime, peer, None, CLOSED_WITHOUT_RESPONSE, decision);
            if let Refused::PerClient { first: true } = refused {
                crate::audit::connection_refused(&runtime, name, peer, decision, None);
                tracing::warn!(%peer, "connection refused: the client holds max_connections_per_client");
            }
            // Closed only once counted: a client that sees the close can already read the count.
            drop(stream);
            return;
        }
    };
    drop(runtime);
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
    // What the connection needs of the runtime of its accept, taken now: it must not hold the runtime
    // itself, or a reload could never free the one it replaced (its clusters, their health checks).
    let (builder, inspector, verdicts, header_timeout, handshake_timeout) = {
        let runtime = shared.runtime.load();
        let limits = &runtime.config.limits;
        let max_head = usize::try_from(limits.max_header_bytes.get()).unwrap_or(usize::MAX);
        let verdicts = Verdicts::default();
        let inspector =
            Inspector::new(max_head, verdicts.clone()).with_max_chunk_size(runtime.max_body_bytes_any_route);
        let timeouts = (limits.header_read_timeout.get(), limits.tls_handshake_timeout.get());
        (
            http_builder(limits, max_head),
            inspector,
            verdicts,
            timeouts.0,
            timeouts.1,
        )
    };
    let connection_info = |client_certificate| {
        Arc::new(ConnectionInfo {
            listener: listener.clone(),
            peer,
            tls: tls.is_some(),
            verdicts: verdicts.clone(),
            hop: crate::pipeline::forwarded::HopValues::new(peer.ip(), tls.is_some()),
            client_certificate,
            requests: std::sync::atomic::AtomicU32::new(0),
            draining: std::sync::atomic::AtomicBool::new(false),
        })
    };
    let service_for = |info: Arc<ConnectionInfo>| {
        let service_shared = shared.clone();
        hyper::service::service_fn(move |request| {
            pipeline::handle(service_shared.runtime.load_full(), info.clone(), request)
        })
    };
    // Serves the connection; once `stop` turns true, asks it to finish gracefully (HTTP/1: close after
    // the current response; HTTP/2: GOAWAY) and waits for that. A connection that sends nothing
    // within the header timeout is closed (hyper's own header timer starts with the first byte). A
    // macro because the two IO types give two connection types.
    macro_rules! serve_until_drained {
        ($io:expr, $info:expr) => {{
            let info: Arc<ConnectionInfo> = $info;
            let connection = builder.serve_connection_with_upgrades($io, service_for(info.clone()));
            tokio::pin!(connection);
            let mut stop = stop;
            tokio::select! {
                ended = connection.as_mut() => {
                    return connection_ended(&shared, &listener, peer, &verdicts, ended.err());
                }
                _ = silent_for(&verdicts, header_timeout) => {
                    return silent_cut(&shared, &listener, peer);
                }
                _ = stop.wait_for(|stopped| *stopped) => {}
            }
            info.draining.store(true, Ordering::SeqCst);
            // Accepted before the stop but not yet read: its request is read and answered (with
            // `Connection: close`) before the connection closes, as nginx does; hyper would close a
            // connection with no request in progress at once. Bounded by the header timeout here and
            // by the drain deadline overall.
            if info.requests.load(Ordering::SeqCst) == 0 {
                tokio::select! {
                    ended = connection.as_mut() => {
                        return connection_ended(&shared, &listener, peer, &verdicts, ended.err());
                    }
                    _ = first_request(&info, header_timeout) => {}
                }
            }
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }};
    }
    match &tls {
        None => serve_until_drained!(TokioIo::new(Inspected::new(stream, inspector)), connection_info(None)),
        Some(endpoint) => {
            let handshake = tokio::time::timeout(handshake_timeout, endpoint.acceptor.accept(stream)).await;
            let stream = match handshake {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => return handshake_refused(&shared, &endpoint.listener, peer, Some(&error)),
                Err(_) => return handshake_refused(&shared, &endpoint.listener, peer, None),
            };
            let certificate =
                crate::tls::client_principal(stream.get_ref().1, &endpoint.listener, &shared.runtime.load());
            serve_until_drained!(
                TokioIo::new(Inspected::new(stream, inspector)),
                connection_info(certificate)
            )
        }
    }
}

/// The status logged for a connection closed without an HTTP answer (nginx's code for it).
const CLOSED_WITHOUT_RESPONSE: u16 = 444;

/// Resolves once the connection's first request has been handed to the pipeline, or `timeout` has
/// passed. Only used while draining, so it polls rather than making every request signal.
async fn first_request(info: &ConnectionInfo, timeout: std::time::Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    while info.requests.load(Ordering::Relaxed) == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Resolves once `timeout` has passed with no byte from the client; never, once one came.
async fn silent_for(verdicts: &Verdicts, timeout: std::time::Duration) {
    tokio::time::sleep(timeout).await;
    if verdicts.received_any() {
        std::future::pending::<()>().await;
    }
}

/// A connection that sent nothing before the header timeout is closed, counted, logged and audited.
fn silent_cut(shared: &Shared, listener: &str, peer: SocketAddr) {
    shared.metrics.connection_cut("silent");
    let decision = Decision::new(Stage::Accept, Fault::Client, "silent_connection");
    let runtime = shared.runtime.load();
    log_connection_refusal(&runtime, peer, None, 408, decision);
    crate::audit::connection_refused(&runtime, listener, peer, decision, None);
}

/// A connection hyper ended on an error that is a refusal of the client's: a head that was not
/// complete in time (slowloris; an idle keep-alive connection with nothing pending is not one), or
/// one too large (hyper answered 431). Either is counted, logged with what was read of the head,
/// and audited.
fn connection_ended(
    shared: &Shared,
    listener: &str,
    peer: SocketAddr,
    verdicts: &Verdicts,
    error: Option<Box<dyn std::error::Error + Send + Sync>>,
) {
    let Some(error) = error.as_deref().and_then(|e| e.downcast_ref::<hyper::Error>()) else {
        return;
    };
    let (status, reason) = if error.is_parse_too_large() {
        (431, "head_too_large")
    } else if error.is_timeout() {
        (408, "header_timeout")
    } else {
        return;
    };
    let Some(partial) = verdicts.partial_head() else {
        return;
    };
    if reason == "header_timeout" {
        shared.metrics.connection_cut(reason);
    }
    let decision = Decision::new(Stage::Normalize, Fault::Client, reason);
    let runtime = shared.runtime.load();
    log_connection_refusal(&runtime, peer, Some(&partial), status, decision);
    crate::audit::connection_refused(&runtime, listener, peer, decision, Some(&partial));
}

/// Records a failed TLS handshake: a metric by reason code, and an event naming the peer and why. A
/// refused client certificate is a security decision; a client that just went away is only counted.
fn handshake_refused(shared: &Shared, listener: &str, peer: SocketAddr, error: Option<&std::io::Error>) {
    let reason = crate::tls::handshake_failure_reason(error);
    shared.metrics.tls_handshake_failed(listener, reason);
    let detail = error.map(ToString::to_string).unwrap_or_else(|| "timed out".into());
    if crate::tls::is_refusal(reason) {
        let runtime = shared.runtime.load();
        let decision = Decision::new(Stage::Tls, Fault::Client, reason);
        log_connection_refusal(&runtime, peer, None, CLOSED_WITHOUT_RESPONSE, decision);
        crate::audit::handshake_refused(&runtime, listener, peer, reason);
        tracing::warn!(event = "tls_handshake_refused", listener, %peer, reason, detail = %detail, "TLS handshake refused");
    } else {
        tracing::debug!(listener, %peer, reason, detail = %detail, "TLS handshake failed");
    }
}

/// hyper's `DEFAULT_MAX_HEADERS` (not exported); `the_default_header_count_limit_is_100` in
/// tests/hardening.rs pins it.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// Bytes an HTTP/2 stream buffers beyond what the client's window lets out: one maximum-size frame.
const HTTP2_SEND_BUFFER: usize = 16 * 1024;

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
        // hyper's default lets each stream buffer 400 KiB ahead of a client that does not read; one
        // frame's worth is enough to keep a reading client's window full (the read-ahead holds more).
        .max_send_buf_size(HTTP2_SEND_BUFFER)
        .max_header_list_size(u32::try_from(max_head).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(Some(100))
        .keep_alive_interval(Some(std::time::Duration::from_secs(30)));
    builder
}
