//! The Palisade edge gateway: listeners, the request pipeline, upstream clusters, the admin listener
//! and hot reload. [`Gateway::start`] runs it inside the caller's Tokio runtime; the `palisade` binary
//! and the integration tests both use it the same way.
#![forbid(unsafe_code)]

pub mod admin;
pub mod audit;
mod console;
pub mod context;
pub mod detection;
pub mod framing;
pub mod header_timer;
pub mod listener;
pub mod pipeline;
pub mod policy_check;
pub mod reload;
pub mod respond;
pub mod runtime;
mod runtime_alerts;
pub mod tls;
pub mod upstream;
pub mod workers;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use palisade_core::{Config, ConfigErrors, ConfigKind, Diagnostics};
use palisade_telemetry::Metrics;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::runtime::Runtime;

use palisade_telemetry::FLUSH_AT_EXIT;

/// State shared by every task of one gateway.
pub struct Shared {
    pub runtime: Arc<ArcSwap<Runtime>>,
    pub metrics: Metrics,
    config_path: Option<PathBuf>,
    config_kind: ConfigKind,
    reload_lock: tokio::sync::Mutex<()>,
    open_connections: listener::OpenCount,
    client_connections: listener::ClientConnections,
    /// Worker threads (each with its own upstream pools).
    pub workers: usize,
    /// A sidecar's workload identity, as its agent last reported it (`None` without an agent).
    identity: std::sync::Mutex<Option<IdentityHealth>>,
    /// The web console on the admin listener (sessions and the last hour of samples).
    console: palisade_console::Console,
    config_status: std::sync::Mutex<ConfigStatus>,
}

/// The running config as the console shows it.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConfigStatus {
    /// A digest of the config in force (changes with any change of its content).
    pub version: String,
    /// Unix seconds when it was loaded.
    pub loaded_at: u64,
    pub last_reload: Option<ReloadRecord>,
}

#[derive(Debug, Clone)]
pub(crate) struct ReloadRecord {
    pub at: u64,
    pub applied: bool,
    /// The first diagnostic of a rejected reload.
    pub detail: Option<String>,
}

/// A sidecar's workload certificate and its renewal by the identity service (`/readyz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentityHealth {
    /// Seconds left on the certificate (0: expired or missing).
    pub seconds_left: i64,
    /// The last renewal attempt failed.
    pub renewal_failing: bool,
}

impl Shared {
    /// Records what the identity agent last reported.
    pub fn set_identity(&self, health: IdentityHealth) {
        *self.identity.lock().unwrap_or_else(|e| e.into_inner()) = Some(health);
    }

    pub(crate) fn identity(&self) -> Option<IdentityHealth> {
        *self.identity.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn config_status(&self) -> ConfigStatus {
        self.config_status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records a reload's outcome (and, when applied, the new config's version).
    pub(crate) fn record_reload(&self, applied: bool, detail: Option<String>) {
        let now = palisade_console::history::unix_now();
        let version = applied.then(|| config_version(&self.runtime.load().config));
        let mut status = self.config_status.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(version) = version {
            status.version = version;
            status.loaded_at = now;
        }
        status.last_reload = Some(ReloadRecord {
            at: now,
            applied,
            detail,
        });
    }
}

/// A short digest of everything a config says (its parsed form, so a reload of the same content keeps
/// the version).
fn config_version(config: &Config) -> String {
    palisade_console::digest_hex(format!("{config:?}").as_bytes())[..12].to_string()
}

/// Where the configuration comes from. Only a file can be reloaded.
pub enum ConfigSource {
    File(PathBuf),
    /// A sidecar config (`palisade sidecar`), translated into a gateway config at every load.
    SidecarFile(PathBuf),
    /// Already parsed (the demo's embedded config, tests); `name` appears in diagnostics.
    Parsed {
        name: String,
        config: Box<Config>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("cannot listen on {address}: {source}")]
    Bind { address: String, source: std::io::Error },
    #[error("cannot start worker threads: {0}")]
    Workers(std::io::Error),
    #[error("TLS setup for listener {listener:?} failed: {source}")]
    Tls { listener: String, source: rustls::Error },
}

/// A running gateway.
pub struct Gateway {
    shared: Arc<Shared>,
    listeners: Vec<(String, SocketAddr)>,
    admin: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    workers: workers::Workers,
}

impl Gateway {
    /// Loads and compiles the config, binds every listener and the admin address, and starts serving.
    /// Nothing is served unless everything succeeded.
    pub async fn start(source: ConfigSource) -> Result<Gateway, StartError> {
        let (config, diagnostics, config_path, config_kind) = match source {
            ConfigSource::File(path) => {
                let (config, diagnostics) = ConfigKind::Gateway.load_partially(&path)?;
                (config, diagnostics, Some(path), ConfigKind::Gateway)
            }
            ConfigSource::SidecarFile(path) => {
                let (config, diagnostics) = ConfigKind::Sidecar.load_partially(&path)?;
                (config, diagnostics, Some(path), ConfigKind::Sidecar)
            }
            ConfigSource::Parsed { name, config } => (*config, Diagnostics::new(name), None, ConfigKind::Gateway),
        };
        let metrics = Metrics::new();
        let version = config_version(&config);
        let worker_count = workers::resolve_count(config.workers);
        let runtime = Runtime::compile(config, diagnostics, None, &metrics, worker_count, true).await?;
        metrics.last_reload_ok.set(1);
        let shared = Arc::new(Shared {
            runtime: Arc::new(ArcSwap::from_pointee(runtime)),
            metrics: metrics.clone(),
            config_path,
            config_kind,
            reload_lock: tokio::sync::Mutex::new(()),
            open_connections: listener::OpenCount::new(0),
            client_connections: Default::default(),
            workers: worker_count,
            identity: std::sync::Mutex::new(None),
            console: palisade_console::Console::new(metrics.tallies().clone()),
            config_status: std::sync::Mutex::new(ConfigStatus {
                version,
                loaded_at: palisade_console::history::unix_now(),
                ..ConfigStatus::default()
            }),
        });
        let (stop, stopped) = watch::channel(false);
        let workers = workers::Workers::start(worker_count).map_err(StartError::Workers)?;
        let mut tasks = Vec::new();
        let mut bound = Vec::new();
        let config = shared.runtime.load_full();
        for entry in &config.config.listeners {
            let listener_config = &entry.value;
            let address = &listener_config.address.value;
            let parsed = parse_address(address)?;
            let sockets =
                workers::bind_reuseport(parsed, workers.count()).map_err(|source| bind_error(address, source))?;
            let local = sockets[0].local_addr().map_err(|source| bind_error(address, source))?;
            bound.push((listener_config.name.clone(), local));
            let tls = match listener_config.tls {
                Some(_) => {
                    let server_config =
                        tls::server_config(&listener_config.name, shared.runtime.clone()).map_err(|source| {
                            StartError::Tls {
                                listener: listener_config.name.clone(),
                                source,
                            }
                        })?;
                    Some(listener::TlsEndpoint {
                        acceptor: tokio_rustls::TlsAcceptor::from(server_config),
                        listener: listener_config.name.as_str().into(),
                    })
                }
                None => None,
            };
            for (socket, worker) in sockets.into_iter().zip(workers.handles()) {
                let accept = listener::accept_loop(
                    socket,
                    listener_config.name.as_str().into(),
                    tls.clone(),
                    shared.clone(),
                    stopped.clone(),
                );
                tasks.push(worker.spawn(accept));
            }
        }
        let admin_listener = bind(&config.config.admin.address.value).await?;
        let admin = admin_listener
            .local_addr()
            .map_err(|source| bind_error(&config.config.admin.address.value, source))?;
        tasks.push(tokio::spawn(admin::serve(
            admin_listener,
            shared.clone(),
            stopped.clone(),
        )));
        tasks.push(tokio::spawn(shared.console.history.clone().run(stopped.clone())));
        tasks.push(tokio::spawn(detection::run(shared.clone(), stopped.clone())));
        tasks.push(tokio::spawn(detection::maintain_responses(
            shared.clone(),
            stopped.clone(),
        )));
        tasks.push(tokio::spawn(audit::watch_limit_store(shared.clone(), stopped.clone())));
        tasks.push(tokio::spawn(reload::watch_files(shared.clone(), stopped)));
        Ok(Gateway {
            shared,
            listeners: bound,
            admin,
            stop,
            tasks,
            workers,
        })
    }

    /// The bound address of a listener (useful when the config asked for port 0).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners.iter().find(|(n, _)| n == name).map(|(_, a)| *a)
    }

    pub fn listeners(&self) -> &[(String, SocketAddr)] {
        &self.listeners
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Re-reads the config file; on any error the running config stays in force.
    pub async fn reload(&self) -> Result<(), ConfigErrors> {
        reload::reload(&self.shared).await
    }

    /// Stops accepting, lets in-flight requests finish within the configured drain timeout, then
    /// closes what is left. Returns whether everything drained in time.
    pub async fn shutdown(self) -> bool {
        let deadline = self.shared.runtime.load().config.shutdown.drain_timeout.get();
        self.shutdown_within(deadline).await
    }

    pub async fn shutdown_within(self, deadline: Duration) -> bool {
        let _ = self.stop.send(true);
        let open = &self.shared.open_connections;
        let wait_for_drain = async {
            while open.load(std::sync::atomic::Ordering::Acquire) > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let drained = tokio::time::timeout(deadline, wait_for_drain).await.is_ok();
        // The last requests' access-log lines and audit events may still be queued: write them before
        // the process exits (bounded, so a blocked stdout or a dead collector cannot hold the exit).
        let runtime = self.shared.runtime.load_full();
        let access_log = async {
            if let Some(log) = &runtime.access_log {
                log.flush().await;
            }
        };
        let audit = async {
            if let Some(log) = &runtime.audit {
                log.flush().await;
            }
        };
        let _ = tokio::time::timeout(FLUSH_AT_EXIT, async { tokio::join!(access_log, audit) }).await;
        for task in &self.tasks {
            task.abort();
        }
        // Ends the worker threads and with them any connection that did not drain in time.
        drop(self.workers);
        drained
    }

    /// Serves until SIGTERM or SIGINT (then drains); SIGHUP reloads the config.
    #[cfg(unix)]
    pub async fn run_until_signal(self) -> std::io::Result<bool> {
        let signals = StopSignals::install()?;
        Ok(self.run_until(signals).await)
    }

    /// Serves until `signals` brings SIGTERM or SIGINT (then drains), reloading on SIGHUP. A signal
    /// that arrived after `signals` were installed but before this call (during start-up) counts.
    pub async fn run_until(self, mut signals: StopSignals) -> bool {
        loop {
            tokio::select! {
                _ = signals.hangup.recv() => { let _ = self.reload().await; }
                _ = signals.terminate.recv() => break,
                _ = signals.interrupt.recv() => break,
            }
        }
        tracing::info!("shutting down: draining in-flight requests");
        self.shutdown().await
    }
}

/// SIGHUP, SIGTERM and SIGINT taken over from their default actions. Installed before the gateway
/// starts, so that a SIGTERM sent while it binds its listeners drains it instead of killing it.
pub struct StopSignals {
    hangup: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignals {
    pub fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            hangup: signal(SignalKind::hangup())?,
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Until SIGTERM or SIGINT (SIGHUP is ignored): for services without a config to reload.
    pub async fn wait(mut self) {
        loop {
            tokio::select! {
                _ = self.hangup.recv() => {}
                _ = self.terminate.recv() => return,
                _ = self.interrupt.recv() => return,
            }
        }
    }
}

async fn bind(address: &str) -> Result<TcpListener, StartError> {
    TcpListener::bind(parse_address(address)?)
        .await
        .map_err(|source| bind_error(address, source))
}

/// Validation already checked the address; this only turns a surprise into a start error, not a panic.
fn parse_address(address: &str) -> Result<SocketAddr, StartError> {
    address
        .parse()
        .map_err(|_| bind_error(address, std::io::ErrorKind::InvalidInput.into()))
}

fn bind_error(address: &str, source: std::io::Error) -> StartError {
    StartError::Bind {
        address: address.to_string(),
        source,
    }
}

/// Runs every check that `palisade check-config` promises: parse, validate, and compile (routes, TLS
/// material). Needs a Tokio runtime because compiling prepares upstream clients.
pub async fn check_config(path: &std::path::Path, kind: ConfigKind) -> Result<Config, ConfigErrors> {
    check_config_with(path, kind, false).await
}

/// [`check_config`], and with `online` also fetches remote key sets (JWKS URLs, OIDC discovery) to
/// see that they load; without it nothing leaves the machine.
pub async fn check_config_with(path: &std::path::Path, kind: ConfigKind, online: bool) -> Result<Config, ConfigErrors> {
    let (config, runtime) = compile_for_checking(path, kind, online).await?;
    if online {
        let unloaded = runtime.authenticator.key_sets_not_loaded();
        if !unloaded.is_empty() {
            let mut diagnostics = palisade_core::Diagnostics::new(path.display().to_string());
            for provider in unloaded {
                diagnostics.general(format!("jwt provider {provider:?}: its key set could not be loaded"));
            }
            return Err(ConfigErrors(diagnostics.into_errors()));
        }
    }
    drop(runtime);
    Ok(config)
}

/// Loads and compiles a config without serving it: no access log file is opened, no health checks
/// run against real targets, and remote key sets are fetched only when `online`.
pub(crate) async fn compile_for_checking(
    path: &std::path::Path,
    kind: ConfigKind,
    online: bool,
) -> Result<(Config, Runtime), ConfigErrors> {
    let (config, diagnostics) = kind.load_partially(path)?;
    let mut check = config.clone();
    check.access_log.enabled = false;
    check.audit.enabled = false;
    for cluster in check.clusters.values_mut() {
        cluster.value.health_check = None;
    }
    let runtime = Runtime::compile(check, diagnostics, None, &Metrics::new(), 1, online).await?;
    Ok((config, runtime))
}
