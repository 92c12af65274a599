//! Hot reload: a new config is read, validated and compiled completely before it replaces the running
//! one in a single atomic swap. A config with any error is refused as a whole, logged with every
//! diagnostic, counted, and the old config keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use palisade_core::{ConfigErrors, Diagnostics};
use tokio::sync::watch;

use crate::runtime::Runtime;
use crate::Shared;

pub(crate) async fn reload(shared: &Shared) -> Result<(), ConfigErrors> {
    let Some(path) = &shared.config_path else {
        return Ok(());
    };
    let _one_at_a_time = shared.reload_lock.lock().await;
    let outcome = load_and_compile(shared, path).await;
    shared.metrics.record_reload(outcome.is_ok());
    match outcome {
        Ok(runtime) => {
            shared.runtime.store(Arc::new(runtime));
            shared.record_reload(true, None);
            crate::audit::reload(&shared.runtime.load(), true, None);
            tracing::info!(config = %path.display(), "configuration reloaded");
            Ok(())
        }
        Err(errors) => {
            for diagnostic in &errors.0 {
                tracing::error!(%diagnostic, "configuration rejected; the previous configuration stays in force");
            }
            let first = errors.0.first().map(ToString::to_string);
            shared.record_reload(false, first.clone());
            crate::audit::reload(&shared.runtime.load(), false, first.as_deref());
            Err(errors)
        }
    }
}

async fn load_and_compile(shared: &Shared, path: &Path) -> Result<Runtime, ConfigErrors> {
    let (config, mut diagnostics) = shared.config_kind.load_partially(path)?;
    let previous = shared.runtime.load_full();
    refuse_restart_only_changes(&previous.config, &config, &mut diagnostics);
    Runtime::compile(
        config,
        diagnostics,
        Some(&previous),
        &shared.metrics,
        shared.workers,
        true,
    )
    .await
}

/// Listener sockets, the admin address and the worker threads are set up once, at start, and a TLS
/// listener finds its certificate by name. A reload that changes them could not be applied as written
/// (and a renamed TLS listener would fail every handshake), so it is refused as a whole.
fn refuse_restart_only_changes(
    old: &palisade_core::Config,
    new: &palisade_core::Config,
    diagnostics: &mut Diagnostics,
) {
    let shape = |c: &palisade_core::Config| -> Vec<(String, String, bool)> {
        let listeners = c.listeners.iter().map(|l| &l.value);
        listeners
            .map(|l| (l.name.clone(), l.address.value.clone(), l.tls.is_some()))
            .collect()
    };
    if shape(old) != shape(new) {
        let message = "listeners (names, addresses, TLS on or off) change only with a restart";
        match new.listeners.first() {
            Some(listener) => diagnostics.on(listener, message),
            None => diagnostics.general(message),
        }
    }
    if old.admin.address.value != new.admin.address.value {
        diagnostics.on(&new.admin.address, "admin.address changes only with a restart");
    }
    if old.workers != new.workers {
        diagnostics.general("workers changes only with a restart");
    }
}

/// What identifies the files' contents cheaply: size and modification time of each.
fn watched_state(shared: &Shared, path: &Path) -> Vec<Option<(u64, SystemTime)>> {
    let runtime = shared.runtime.load();
    let mut files: Vec<PathBuf> = vec![path.to_path_buf()];
    files.extend(runtime.config.referenced_files());
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .and_then(|m| Some((m.len(), m.modified().ok()?)))
        })
        .collect()
}

/// Polls the config file and the files it names (certificates, key sets, API keys); a change triggers a reload. Polling (rather than
/// inotify) also sees Kubernetes ConfigMap updates, which swap a symlink.
/// The returned future compares against the files as they are when this is called (not when the
/// task first runs), so a change made right after start is not missed.
pub(crate) fn watch_files(
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> + Send {
    let path = shared.config_path.clone();
    let initial = path.as_ref().map(|path| watched_state(&shared, path));
    async move {
        let (Some(path), Some(last)) = (path, initial) else {
            return;
        };
        poll_files(shared, path, last, &mut stop).await;
    }
}

async fn poll_files(
    shared: Arc<Shared>,
    path: PathBuf,
    mut last: Vec<Option<(u64, SystemTime)>>,
    stop: &mut watch::Receiver<bool>,
) {
    loop {
        let interval = shared.runtime.load().config.reload.poll_interval.get();
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        if !shared.runtime.load().config.reload.watch {
            continue;
        }
        let now = watched_state(&shared, &path);
        if now != last {
            let _ = reload(&shared).await;
            // A reload may change which files are watched.
            last = watched_state(&shared, &path);
        }
    }
}
