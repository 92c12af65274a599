//! Key sets fetched from the IdP (a JWKS URL, or the `jwks_uri` found by OIDC discovery): cached,
//! refreshed on a schedule and when a token names an unknown `kid` (at most once per
//! `min_interval`), retried with backoff when the IdP fails. The last good set keeps serving while
//! the IdP is down.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::Uri;
use palisade_core::config::auth::KeyRefreshConfig;
use serde_json::Value;
use tokio::sync::{watch, Notify};

use super::keys::KeySet;
use crate::fetch::{FetchError, Fetcher};

pub enum RemoteSource {
    JwksUrl(Uri),
    /// OIDC discovery for this issuer.
    Discovery(String),
}

pub struct RemoteKeys {
    provider: String,
    source: RemoteSource,
    fetcher: Fetcher,
    settings: KeyRefreshConfig,
    current: ArcSwap<KeySet>,
    /// Counts fetch attempts; waiters on an unknown `kid` watch it.
    generation: watch::Sender<u64>,
    loaded_once: std::sync::atomic::AtomicBool,
    refresh_now: Arc<Notify>,
    /// Milliseconds since `epoch` of the last fetch attempt.
    last_attempt_ms: AtomicU64,
    epoch: Instant,
    /// Called when the set changes (flushes the verified-token cache).
    on_change: Box<dyn Fn() + Send + Sync>,
}

impl RemoteKeys {
    /// Creates the key set, tries a first load (bounded by `settings.timeout`, so a down IdP delays
    /// start by at most that), and starts the refresh task, which ends when the set is dropped.
    /// With `fetch` false (an offline config check) nothing is fetched: the set stays unloaded.
    pub async fn start(
        provider: &str,
        source: RemoteSource,
        fetcher: Fetcher,
        settings: KeyRefreshConfig,
        on_change: Box<dyn Fn() + Send + Sync>,
        fetch: bool,
    ) -> Arc<RemoteKeys> {
        let keys = Arc::new(RemoteKeys {
            provider: provider.to_string(),
            source,
            fetcher,
            settings,
            current: ArcSwap::from_pointee(KeySet::default()),
            generation: watch::channel(0).0,
            loaded_once: false.into(),
            refresh_now: Arc::new(Notify::new()),
            last_attempt_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            on_change,
        });
        if !fetch {
            return keys;
        }
        let first_ok = keys.refresh().await;
        tokio::spawn(refresh_loop(Arc::downgrade(&keys), keys.refresh_now.clone(), first_ok));
        keys
    }

    pub fn current(&self) -> Arc<KeySet> {
        self.current.load_full()
    }

    /// Whether any key set was ever loaded; before that, failures are outages, not bad tokens.
    pub fn is_loaded(&self) -> bool {
        self.loaded_once.load(Ordering::Acquire)
    }

    /// A token named a `kid` the set does not have. Asks for a refresh unless one happened within
    /// `min_interval` (so random `kid`s cannot make the gateway hammer the IdP), and waits for it at
    /// most `timeout`. Returns the set to try again with, or `None` when no new set came.
    pub async fn refresh_for_unknown_kid(&self) -> Option<Arc<KeySet>> {
        let since_last = self
            .elapsed_ms()
            .saturating_sub(self.last_attempt_ms.load(Ordering::Acquire));
        if since_last < millis(self.settings.min_interval.get()) {
            return None;
        }
        let mut changed = self.generation.subscribe();
        self.refresh_now.notify_one();
        match tokio::time::timeout(self.settings.timeout.get(), changed.changed()).await {
            Ok(Ok(())) => Some(self.current()),
            _ => None,
        }
    }

    fn elapsed_ms(&self) -> u64 {
        millis(self.epoch.elapsed())
    }

    /// One fetch; swaps the set in when it parsed and differs. `true` on success. Requests waiting
    /// on an unknown `kid` are woken either way: the answer, good or bad, is in.
    async fn refresh(&self) -> bool {
        self.last_attempt_ms.store(self.elapsed_ms(), Ordering::Release);
        let loaded = self.fetch_and_swap().await;
        self.generation.send_modify(|g| *g += 1);
        loaded
    }

    async fn fetch_and_swap(&self) -> bool {
        let document = match self.fetch().await {
            Ok(document) => document,
            Err(error) => {
                tracing::warn!(provider = %self.provider, %error, "cannot refresh the JWT key set; keeping the last good one");
                return false;
            }
        };
        let (set, skipped) = match KeySet::from_jwks(&document) {
            Ok(parsed) => parsed,
            Err(error) => {
                tracing::warn!(provider = %self.provider, %error, "the IdP's key set is invalid; keeping the last good one");
                return false;
            }
        };
        if skipped > 0 {
            tracing::info!(provider = %self.provider, skipped, "key set entries skipped (not signature keys or unsupported)");
        }
        self.loaded_once.store(true, Ordering::Release);
        if set.fingerprint != self.current.load().fingerprint {
            tracing::info!(provider = %self.provider, keys = set.keys.len(), "JWT key set loaded");
            self.current.store(Arc::new(set));
            (self.on_change)();
        }
        true
    }

    async fn fetch(&self) -> Result<Value, FetchError> {
        match &self.source {
            RemoteSource::JwksUrl(uri) => self.fetcher.get_json(uri).await,
            RemoteSource::Discovery(issuer) => {
                let uri = discovery_uri(issuer)?;
                let document = self.fetcher.get_json(&uri).await?;
                let jwks_uri = jwks_uri_from_discovery(&document, issuer)?;
                self.fetcher.get_json(&jwks_uri).await
            }
        }
    }
}

fn discovery_uri(issuer: &str) -> Result<Uri, FetchError> {
    format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'))
        .parse()
        .map_err(|_| FetchError::Json("issuer is not a URL".into()))
}

/// OpenID Connect Discovery §4.3: the document's `issuer` must be exactly the configured one, or
/// a compromised or misrouted document could hand us another IdP's keys.
fn jwks_uri_from_discovery(document: &Value, issuer: &str) -> Result<Uri, FetchError> {
    if document.get("issuer").and_then(Value::as_str) != Some(issuer) {
        return Err(FetchError::Json("discovery document names another issuer".into()));
    }
    let uri: Uri = document
        .get("jwks_uri")
        .and_then(Value::as_str)
        .and_then(|u| u.parse().ok())
        .ok_or_else(|| FetchError::Json("discovery document has no valid jwks_uri".into()))?;
    let secure = uri.scheme_str() == Some("https") || palisade_core::is_loopback_http(&uri);
    if !secure {
        return Err(FetchError::Json("jwks_uri is not https".into()));
    }
    Ok(uri)
}

async fn refresh_loop(keys: Weak<RemoteKeys>, refresh_now: Arc<Notify>, first_ok: bool) {
    let Some(settings) = keys.upgrade().map(|k| k.settings.clone()) else {
        return;
    };
    let interval = settings.interval.get();
    let mut backoff = Duration::from_secs(1);
    let mut delay = if first_ok { interval } else { backoff };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = refresh_now.notified() => {}
        }
        let Some(strong) = keys.upgrade() else { return };
        if strong.refresh().await {
            backoff = Duration::from_secs(1);
            delay = interval;
        } else {
            delay = backoff;
            backoff = (backoff * 2).min(settings.max_backoff.get());
        }
        drop(strong);
        // No fetch sooner than `min_interval` after the last one, whatever asks for it.
        tokio::time::sleep(settings.min_interval.get()).await;
        delay = delay.saturating_sub(settings.min_interval.get());
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn discovery_must_name_the_configured_issuer_and_a_secure_key_set() {
        let issuer = "https://idp.example.com";
        let good = json!({"issuer": issuer, "jwks_uri": "https://idp.example.com/keys"});
        assert!(jwks_uri_from_discovery(&good, issuer).is_ok());
        let other = json!({"issuer": "https://evil.example.com", "jwks_uri": "https://idp.example.com/keys"});
        assert!(jwks_uri_from_discovery(&other, issuer).is_err());
        let plain = json!({"issuer": issuer, "jwks_uri": "http://idp.example.com/keys"});
        assert!(jwks_uri_from_discovery(&plain, issuer).is_err());
        let local = json!({"issuer": issuer, "jwks_uri": "http://127.0.0.1:8080/keys"});
        assert!(jwks_uri_from_discovery(&local, issuer).is_ok());
    }
}
