//! The floor for the gateway's benchmark: a hyper 1 HTTP/1 proxy that does nothing but proxy, built
//! the way the gateway is (one single-threaded runtime per core on `SO_REUSEPORT` sockets, a
//! per-thread pool of hyper client connections). What Palisade costs above this is its own work per
//! request (bench/RESULTS.md, 2026-12-01).
//!
//!   cargo run --release -p palisade-gateway --example bare_proxy -- 127.0.0.1:19090 127.0.0.1:19000
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
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let threads: Vec<_> = (0..workers)
        .map(|_| std::thread::spawn(move || worker(listen, upstream).map_err(|error| error.to_string())))
        .collect();
    for thread in threads {
        thread.join().map_err(|_| "worker panicked")??;
    }
    Ok(())
}

fn worker(listen: SocketAddr, upstream: SocketAddr) -> Result<(), Box<dyn Error>> {
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
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let pool = pool.clone();
            tokio::task::spawn_local(async move {
                let service = hyper::service::service_fn(move |request| proxy(pool.clone(), upstream, request));
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
) -> Result<http::Response<Full<Bytes>>, Box<dyn Error + Send + Sync>> {
    let (mut parts, body) = request.into_parts();
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
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    pool.borrow_mut().push(sender);
    Ok(http::Response::from_parts(parts, Full::new(body)))
}
