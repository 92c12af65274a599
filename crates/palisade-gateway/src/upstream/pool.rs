//! A per-worker pool of HTTP/1 connections to upstream targets, on hyper's connection-level client.
//!
//! hyper-util's pooled client spawns a task for every HTTP/1 request (to return the connection once it
//! is ready again) and shares one locked pool among all threads. Here each worker has its own pool, a
//! connection goes back to it when the response body has been read to the end, and the only task per
//! connection is the connection itself, on the worker's thread.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::tls::UpstreamTls;
use super::ProxyBody;

/// What an upstream connection reads at a time, and so the most it buffers (a response head must
/// fit; nginx's `proxy_buffer_size` is 4–8 KiB). hyper's default grows the buffer to about 400 KiB
/// while a large body streams and keeps it while the client reading the answer is stalled; a fixed
/// size also bounds each body chunk handed on.
const UPSTREAM_READ_BUFFER: usize = 16 * 1024;
/// Why a request could not be exchanged with a target.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    #[error("connect timed out")]
    ConnectTimeout,
    /// The TLS handshake failed (the target's identity did not verify, or it refused ours).
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    #[error("upstream exchange failed: {0}")]
    Exchange(#[source] hyper::Error),
}

/// A send that failed. The request comes back when it never left (the connection could not be made),
/// so that it can go to another target without having been copied beforehand.
#[derive(Debug)]
pub struct Failed {
    pub error: SendError,
    pub unsent: Option<Request<ProxyBody>>,
}

impl From<SendError> for Failed {
    fn from(error: SendError) -> Self {
        Self { error, unsent: None }
    }
}

struct Idle {
    sender: SendRequest<ProxyBody>,
    since: Instant,
}

pub struct Http1Pool {
    /// Idle connections per target (by index in the cluster), most recently used last.
    idle: Vec<Mutex<Vec<Idle>>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    tls: Arc<ArcSwapOption<UpstreamTls>>,
}

impl Http1Pool {
    pub fn new(
        targets: usize,
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
        tls: Arc<ArcSwapOption<UpstreamTls>>,
    ) -> Self {
        Self {
            idle: (0..targets).map(|_| Mutex::new(Vec::new())).collect(),
            connect_timeout,
            idle_timeout,
            max_idle,
            tls,
        }
    }

    /// Sends `request` (origin-form URI) to the target, on an idle connection when there is one.
    pub async fn send(
        self: &Arc<Self>,
        target: usize,
        address: &str,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<PooledBody>, Failed> {
        while let Some(mut sender) = self.checkout(target) {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.attach(response, sender, target)),
                Err(mut error) => match error.take_message() {
                    // The connection closed before taking the request: try the next one.
                    Some(returned) => request = returned,
                    None => return Err(SendError::Exchange(error.into_error()).into()),
                },
            }
        }
        // Boxed: connecting (with a possible TLS handshake) is rare but its future is ~5 KiB, and an
        // inline one would make every request's future that large, copied at each move.
        let mut sender = match Box::pin(self.connect(address)).await {
            Ok(sender) => sender,
            Err(error) => {
                return Err(Failed {
                    error,
                    unsent: Some(request),
                })
            }
        };
        let response = sender.send_request(request).await.map_err(SendError::Exchange)?;
        Ok(self.attach(response, sender, target))
    }

    fn checkout(&self, target: usize) -> Option<SendRequest<ProxyBody>> {
        let mut idle = self.idle.get(target)?.lock().ok()?;
        while let Some(candidate) = idle.pop() {
            if !candidate.sender.is_closed() && candidate.since.elapsed() < self.idle_timeout {
                return Some(candidate.sender);
            }
        }
        None
    }

    fn give_back(&self, target: usize, sender: SendRequest<ProxyBody>) {
        if sender.is_closed() {
            return;
        }
        if let Some(Ok(mut idle)) = self.idle.get(target).map(Mutex::lock) {
            if idle.len() < self.max_idle {
                idle.push(Idle {
                    sender,
                    since: Instant::now(),
                });
            }
        }
    }

    async fn connect(&self, address: &str) -> Result<SendRequest<ProxyBody>, SendError> {
        let stream = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return Err(SendError::Connect(error)),
            Err(_) => return Err(SendError::ConnectTimeout),
        };
        let _ = stream.set_nodelay(true);
        match self.tls.load_full() {
            None => Self::handshake(stream).await,
            Some(tls) => {
                // The connect timeout covers the TLS handshake too: a target that accepts TCP and then
                // stalls must not hold the request.
                let secured = tokio::time::timeout(self.connect_timeout, tls.connect(address, stream)).await;
                match secured {
                    Ok(Ok(stream)) => Self::handshake(stream).await,
                    Ok(Err(error)) => Err(SendError::Handshake(error)),
                    Err(_) => Err(SendError::ConnectTimeout),
                }
            }
        }
    }

    async fn handshake<T>(stream: T) -> Result<SendRequest<ProxyBody>, SendError>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let (sender, connection) = hyper::client::conn::http1::Builder::new()
            .read_buf_exact_size(Some(UPSTREAM_READ_BUFFER))
            .handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::Exchange)?;
        tokio::spawn(async move {
            // Errors here surface on the request that was in flight; nothing else to do with them.
            let _ = connection.with_upgrades().await;
        });
        Ok(sender)
    }

    /// The connection returns to the pool when the response body has been read to the end; an upgraded
    /// connection or a body abandoned half-way never does.
    fn attach(
        self: &Arc<Self>,
        response: Response<Incoming>,
        sender: SendRequest<ProxyBody>,
        target: usize,
    ) -> Response<PooledBody> {
        let reusable = response.status() != StatusCode::SWITCHING_PROTOCOLS;
        let finished = response.body().is_end_stream();
        let mut lease = reusable.then(|| Lease {
            pool: self.clone(),
            target,
            sender,
        });
        if finished {
            if let Some(lease) = lease.take() {
                lease.release();
            }
        }
        response.map(|inner| PooledBody { inner, lease })
    }
}

struct Lease {
    pool: Arc<Http1Pool>,
    target: usize,
    sender: SendRequest<ProxyBody>,
}

impl Lease {
    fn release(self) {
        self.pool.give_back(self.target, self.sender);
    }
}

/// An upstream response body that gives its connection back when it ends.
pub struct PooledBody {
    inner: Incoming,
    lease: Option<Lease>,
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let ended = matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream();
        if ended {
            if let Some(lease) = self.lease.take() {
                lease.release();
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
