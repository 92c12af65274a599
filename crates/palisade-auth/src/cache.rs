//! The verified-token cache. Verifying a signature (or asking an introspection endpoint) is the
//! expensive part of authentication; it is done once per token, and the resulting principal is kept
//! until the token expires. The key is a SHA-256 of the token, never the token itself, and the cache
//! is bounded by an estimate of the memory its entries use.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use moka::sync::Cache;
use sha2::{Digest, Sha256};

use crate::Principal;

/// (which verifier, SHA-256 of the token): the same token checked by two providers is two entries.
pub type CacheKey = (u32, [u8; 32]);

#[derive(Clone)]
struct Entry {
    principal: Arc<Principal>,
    valid_until: Instant,
}

#[derive(Clone)]
pub struct TokenCache {
    entries: Cache<CacheKey, Entry>,
    max_bytes: u64,
}

struct UntilValid;

impl moka::Expiry<CacheKey, Entry> for UntilValid {
    fn expire_after_create(&self, _key: &CacheKey, entry: &Entry, now: Instant) -> Option<Duration> {
        Some(entry.valid_until.saturating_duration_since(now))
    }
}

impl TokenCache {
    pub fn new(max_bytes: u64) -> TokenCache {
        let entries = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_key: &CacheKey, entry: &Entry| entry.principal.weight().saturating_add(64))
            .expire_after(UntilValid)
            .build();
        TokenCache { entries, max_bytes }
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    pub fn key(verifier: u32, token: &str) -> CacheKey {
        (verifier, Sha256::digest(token.as_bytes()).into())
    }

    pub fn get(&self, key: &CacheKey) -> Option<Arc<Principal>> {
        let entry = self.entries.get(key)?;
        // moka expires lazily; never hand out an entry past its time.
        (entry.valid_until > Instant::now()).then_some(entry.principal)
    }

    /// Keeps `principal` until its `exp`, and never longer than `max_ttl`.
    pub fn insert(&self, key: CacheKey, principal: Arc<Principal>, max_ttl: Duration) {
        let now = Instant::now();
        let mut ttl = max_ttl;
        if let Some(expires_at) = principal.expires_at {
            let unix_now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            ttl = ttl.min(Duration::from_secs(expires_at).saturating_sub(unix_now));
        }
        if ttl.is_zero() {
            return;
        }
        let entry = Entry {
            principal,
            valid_until: now + ttl,
        };
        self.entries.insert(key, entry);
    }

    /// Forgets everything: a key set changed, so earlier verdicts may no longer hold.
    pub fn flush(&self) {
        self.entries.invalidate_all();
    }

    pub fn entry_count(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::{AuthMethodKind, PrincipalKind};

    fn principal(expires_at: Option<u64>) -> Arc<Principal> {
        Arc::new(Principal {
            kind: PrincipalKind::User,
            method: AuthMethodKind::Jwt,
            subject: "alice".into(),
            issuer: "i".into(),
            scopes: vec![],
            roles: vec![],
            groups: vec![],
            claims: Default::default(),
            expires_at,
        })
    }

    fn unix_now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    #[test]
    fn entries_live_until_exp_and_are_keyed_by_verifier_and_hash() {
        let cache = TokenCache::new(1 << 20);
        let key = TokenCache::key(1, "token-a");
        cache.insert(key, principal(Some(unix_now() + 60)), Duration::from_secs(300));
        assert!(cache.get(&key).is_some());
        assert!(cache.get(&TokenCache::key(2, "token-a")).is_none());
        assert!(cache.get(&TokenCache::key(1, "token-b")).is_none());
        let expired = TokenCache::key(1, "token-c");
        cache.insert(expired, principal(Some(unix_now() - 1)), Duration::from_secs(300));
        assert!(cache.get(&expired).is_none());
        cache.flush();
        assert!(cache.get(&key).is_none());
    }

    #[test]
    fn memory_is_bounded() {
        let cache = TokenCache::new(64 * 1024);
        for i in 0..10_000 {
            cache.insert(
                TokenCache::key(1, &format!("t{i}")),
                principal(None),
                Duration::from_secs(60),
            );
        }
        // Each entry weighs a few hundred bytes: at most a few hundred fit in 64 KiB.
        assert!(cache.entry_count() < 300, "{} entries", cache.entry_count());
    }
}
