//! The floor for the gateway's benchmark: a hyper 1 HTTP/1 proxy that does nothing but proxy, built
//! the way the gateway is (one single-threaded runtime per core on `SO_REUSEPORT` sockets, a
//! per-thread pool of hyper client connections). What Palisade costs above this is its own work per
//! request (bench/RESULTS.md, 2026-12-01).
//!
//!   cargo run --release -p palisade-gateway --example bare_proxy -- 127.0.0.1:19090 127.0.0.1:19000 [WORKERS]
//!
//! With `BARE_HEADERS=1` it also does the per-request header work that bench/nginx.conf and
//! bench/haproxy.cfg do (and Palisade's defaults): forwarding headers and a UUID request id to the
//! upstream; the request id and three security headers to the client, `Server` and `X-Powered-By`
//! removed. That is the floor for a hyper proxy doing the same work as the peers.
//!
//! Benchmark code: no limits, no timeouts, no error answers; never a model for the gateway.

use std::cell::RefCell;
use std::error::Error;
use std::net::SocketAddr;
use std::rc::Rc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use socket2::{Domain, Socket, Type};

type Body = BoxBody<Bytes, hyper::Error>;
type Pool = Rc<RefCell<Vec<SendRequest<Body>>>>;

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args.next().unwrap_or_else(|| "127.0.0.1:19090".into()).parse()?;
    let upstream: SocketAddr = args.next().unwrap_or_else(|| "127.0.0.1:19000".into()).parse()?;
    let workers = match args.next() {
        Some(count) => count.parse()?,
        None => std::thread::available_parallelism().map_or(1, usize::from),
    };
    let headers = std::env::var_os("BARE_HEADERS").is_some_and(|value| value == "1");
    let threads: Vec<_> = (0..workers)
        .map(|_| std::thread::spawn(move || worker(listen, upstream, headers).map_err(|error| error.to_string())))
        .collect();
    for thread in threads {
        thread.join().map_err(|_| "worker panicked")??;
    }
    Ok(())
}

fn worker(listen: SocketAddr, upstream: SocketAddr, headers: bool) -> Result<(), Box<dyn Error>> {
    let socket = Socket::new(Domain::for_address(listen), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&listen.into())?;
    socket.listen(1024)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = tokio::net::TcpListener::from_std(socket.into())?;
        let pool: Pool = Rc::default();
        loop {
            let (stream, peer) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let pool = pool.clone();
            tokio::task::spawn_local(async move {
                let service = hyper::service::service_fn(move |request| {
                    proxy(pool.clone(), upstream, request, headers.then_some(peer))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

async fn proxy(
    pool: Pool,
    upstream: SocketAddr,
    request: http::Request<Incoming>,
    header_work_for: Option<SocketAddr>,
) -> Result<http::Response<Full<Bytes>>, Box<dyn Error + Send + Sync>> {
    let (mut parts, body) = request.into_parts();
    let request_id = match header_work_for {
        Some(peer) => Some(forwarding_headers(&mut parts.headers, peer)?),
        None => None,
    };
    parts.uri = match parts.uri.path_and_query() {
        Some(path) => path.as_str().parse()?,
        None => "/".parse()?,
    };
    let idle = pool.borrow_mut().pop();
    let mut sender = match idle {
        Some(sender) => sender,
        None => {
            let stream = tokio::net::TcpStream::connect(upstream).await?;
            stream.set_nodelay(true)?;
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::task::spawn_local(connection);
            sender
        }
    };
    let response = sender
        .send_request(http::Request::from_parts(parts, body.boxed()))
        .await?;
    let (mut parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    pool.borrow_mut().push(sender);
    if let Some(request_id) = request_id {
        response_headers(&mut parts.headers, request_id);
    }
    Ok(http::Response::from_parts(parts, Full::new(body)))
}

/// What bench/nginx.conf does to a request: hop-by-hop headers out, the forwarding headers and a
/// new request id in. Returns the id for the response.
fn forwarding_headers(
    headers: &mut http::HeaderMap,
    peer: SocketAddr,
) -> Result<http::HeaderValue, Box<dyn Error + Send + Sync>> {
    use http::header::{CONNECTION, FORWARDED, HOST};
    for name in [
        CONNECTION,
        http::header::TE,
        http::header::TRAILER,
        http::header::UPGRADE,
    ] {
        headers.remove(name);
    }
    let ip = http::HeaderValue::from_str(&peer.ip().to_string())?;
    let host = headers.get(HOST).cloned().unwrap_or_else(|| ip.clone());
    headers.insert("x-forwarded-for", ip.clone());
    headers.insert(
        FORWARDED,
        http::HeaderValue::from_str(&format!("for={};proto=http", peer.ip()))?,
    );
    headers.insert("x-real-ip", ip);
    headers.insert("x-forwarded-proto", http::HeaderValue::from_static("http"));
    headers.insert("x-forwarded-host", host);
    let request_id = http::HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())?;
    headers.insert("x-request-id", request_id.clone());
    Ok(request_id)
}

/// What bench/nginx.conf does to a response: the request id and three security headers in,
/// `Server` and `X-Powered-By` out.
fn response_headers(headers: &mut http::HeaderMap, request_id: http::HeaderValue) {
    headers.remove(http::header::SERVER);
    headers.remove("x-powered-by");
    headers.insert("x-request-id", request_id);
    headers.insert("x-content-type-options", http::HeaderValue::from_static("nosniff"));
    headers.insert(
        "referrer-policy",
        http::HeaderValue::from_static("strict-origin-when-cross-origin"),
    );
    headers.insert("x-frame-options", http::HeaderValue::from_static("DENY"));
}
