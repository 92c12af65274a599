//! Thread-per-core serving. Each worker is an OS thread with its own single-threaded Tokio runtime, its
//! own `SO_REUSEPORT` socket for every listener (the kernel spreads connections across them), and its
//! own upstream connection pools. A request is handled start to finish on one thread: no work stealing,
//! no cross-thread wake-ups, which measured about 30% less CPU per proxied request than a work-stealing
//! runtime (bench/RESULTS.md). This is the model of nginx workers, HAProxy threads and Envoy workers.
//!
//! The control plane (admin listener, reload, health checks, access log writer) stays on the runtime
//! that started the gateway.

use std::cell::Cell;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::runtime::Handle;
use tokio::sync::watch;

thread_local! {
    static WORKER_INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The index of the worker running the current thread (0 outside workers).
pub fn current_index() -> usize {
    WORKER_INDEX.with(Cell::get)
}

/// Worker count for a configured value: `0` means one per available core.
pub fn resolve_count(configured: usize) -> usize {
    match configured {
        0 => std::thread::available_parallelism().map(usize::from).unwrap_or(1),
        n => n,
    }
}

/// Running worker threads. They exit when `exit` turns true (after draining, or on drop).
pub struct Workers {
    handles: Vec<Handle>,
    exit: watch::Sender<bool>,
}

impl Workers {
    pub fn start(count: usize) -> std::io::Result<Workers> {
        let (exit, exit_signal) = watch::channel(false);
        let mut handles = Vec::with_capacity(count);
        for index in 0..count {
            let (handle_sender, handle_receiver) = std::sync::mpsc::channel();
            let mut exit_signal = exit_signal.clone();
            std::thread::Builder::new()
                .name(format!("palisade-worker-{index}"))
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                        Ok(runtime) => runtime,
                        Err(error) => {
                            let _ = handle_sender.send(Err(error));
                            return;
                        }
                    };
                    WORKER_INDEX.with(|cell| cell.set(index));
                    let _ = handle_sender.send(Ok(runtime.handle().clone()));
                    runtime.block_on(async move {
                        let _ = exit_signal.wait_for(|exit| *exit).await;
                    });
                })?;
            let handle = handle_receiver
                .recv()
                .map_err(|_| std::io::Error::other("worker thread died at start"))??;
            handles.push(handle);
        }
        Ok(Workers { handles, exit })
    }

    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    pub fn count(&self) -> usize {
        self.handles.len()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        let _ = self.exit.send(true);
    }
}

/// Binds `count` sockets to one address with `SO_REUSEPORT` (port 0: see [`bind_shared_ephemeral`]).
///
/// `SO_REUSEPORT` would also let a second gateway started by mistake on the same port silently take
/// half the connections, so the address is first probed with a plain bind: a port that anyone holds
/// is an error, as it would be without workers.
pub fn bind_reuseport(address: SocketAddr, count: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    if address.port() == 0 {
        return bind_shared_ephemeral(address, count);
    }
    drop(std::net::TcpListener::bind(address)?);
    let mut sockets = Vec::with_capacity(count);
    let mut bound = address;
    for _ in 0..count.max(1) {
        let socket = Socket::new(Domain::for_address(bound), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&bound.into())?;
        socket.listen(4096)?;
        let listener: std::net::TcpListener = socket.into();
        bound = listener.local_addr()?;
        sockets.push(listener);
    }
    Ok(sockets)
}

/// Port 0 (tests, `demo --listen 127.0.0.1:0`): the kernel may hand a `SO_REUSEPORT` socket a port that
/// another process's reuseport listener of the same user already holds, and then split connections
/// between the two. So an ephemeral port gets one ordinary socket, and each worker accepts on its own
/// duplicate of it.
fn bind_shared_ephemeral(address: SocketAddr, count: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(4096)?;
    let listener: std::net::TcpListener = socket.into();
    let mut sockets = Vec::with_capacity(count.max(1));
    for _ in 1..count.max(1) {
        sockets.push(listener.try_clone()?);
    }
    sockets.push(listener);
    Ok(sockets)
}
