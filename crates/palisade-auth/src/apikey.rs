//! API keys. Only SHA-256 hashes are stored (in the config or a separate file); a presented key is
//! hashed and compared in constant time. Keys are 32 random bytes, so a plain hash is as strong as a
//! slow one would be and costs a microsecond.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::HeaderMap;
use palisade_core::config::auth::{ApiKeyEntry, ApiKeysConfig};
use palisade_core::{ConfigErrors, Diagnostics, Spanned};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::principal::{AuthMethodKind, PrincipalKind};
use crate::{extract, AuthFailure, Principal};

/// Longer values are not keys we issued; refuse before hashing.
const MAX_KEY_BYTES: usize = 256;
const KEY_PREFIX: &str = "psk_";

struct StoredKey {
    hash: [u8; 32],
    principal: Arc<Principal>,
    expires: Option<SystemTime>,
}

pub struct ApiKeyStore {
    header: String,
    /// By the first 8 bytes of the hash; the full hash is then compared in constant time.
    keys: HashMap<[u8; 8], Vec<StoredKey>>,
}

impl ApiKeyStore {
    /// Builds the store from the config's keys and the key file; problems become diagnostics at
    /// their place in the config or in the key file.
    pub fn compile(config: &ApiKeysConfig, diagnostics: &mut Diagnostics) -> ApiKeyStore {
        let mut store = ApiKeyStore {
            header: config.header.to_ascii_lowercase(),
            keys: HashMap::new(),
        };
        let mut names = HashSet::new();
        store.add_entries(&config.keys, &mut names, diagnostics);
        if let Some(file) = &config.file {
            match palisade_core::load_yaml_file::<Vec<Spanned<ApiKeyEntry>>>(&file.value) {
                Ok(from_file) => {
                    let mut in_file = Diagnostics::new(file.value.display().to_string());
                    store.add_entries(&from_file, &mut names, &mut in_file);
                    diagnostics.absorb(ConfigErrors(in_file.into_errors()));
                }
                Err(errors) => diagnostics.absorb(errors),
            }
        }
        store
    }

    fn add_entries(
        &mut self,
        entries: &[Spanned<ApiKeyEntry>],
        names: &mut HashSet<String>,
        diagnostics: &mut Diagnostics,
    ) {
        for entry in entries {
            let value = &entry.value;
            if !names.insert(value.name.clone()) {
                diagnostics.on(entry, format!("API key name {:?} is used twice", value.name));
                continue;
            }
            let Some(hash) = parse_hash(&value.hash.value) else {
                diagnostics.on(&value.hash, "an API key hash is `sha256:` and 64 hex digits");
                continue;
            };
            let expires = match &value.expires {
                Some(text) => match humantime::parse_rfc3339_weak(&text.value) {
                    Ok(time) => Some(time),
                    Err(_) => {
                        diagnostics.on(text, "expires must be an RFC 3339 time such as 2027-01-31T00:00:00Z");
                        continue;
                    }
                },
                None => None,
            };
            self.insert(hash, principal_for(value, expires), expires);
        }
    }

    fn insert(&mut self, hash: [u8; 32], principal: Principal, expires: Option<SystemTime>) {
        let prefix = prefix_of(&hash);
        self.keys.entry(prefix).or_default().push(StoredKey {
            hash,
            principal: Arc::new(principal),
            expires,
        });
    }

    pub fn len(&self) -> usize {
        self.keys.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// `Ok(None)` when the request carries no key.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Option<Arc<Principal>>, AuthFailure> {
        let Some(presented) = extract::single_header(headers, &self.header)? else {
            return Ok(None);
        };
        if presented.is_empty() || presented.len() > MAX_KEY_BYTES {
            return Err(AuthFailure::UnknownApiKey);
        }
        let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let candidates = self.keys.get(&prefix_of(&hash)).map(Vec::as_slice).unwrap_or_default();
        let found = candidates.iter().find(|stored| bool::from(stored.hash.ct_eq(&hash)));
        let stored = found.ok_or(AuthFailure::UnknownApiKey)?;
        if stored.expires.is_some_and(|at| at <= SystemTime::now()) {
            return Err(AuthFailure::ApiKeyExpired);
        }
        Ok(Some(stored.principal.clone()))
    }
}

// Looking the hash up by a prefix reveals, through timing, at most which bucket a SHA-256 output
// falls in: nothing an attacker can steer towards a valid key without a preimage.
fn prefix_of(hash: &[u8; 32]) -> [u8; 8] {
    let mut prefix = [0; 8];
    prefix.copy_from_slice(&hash[..8]);
    prefix
}

fn principal_for(entry: &ApiKeyEntry, expires: Option<SystemTime>) -> Principal {
    let expires_at = expires
        .and_then(|at| at.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    Principal {
        kind: PrincipalKind::ApiKey,
        method: AuthMethodKind::ApiKey,
        subject: entry.name.clone(),
        issuer: "api_keys".into(),
        scopes: entry.scopes.clone(),
        roles: entry.roles.clone(),
        groups: Vec::new(),
        claims: Default::default(),
        expires_at,
    }
}

fn parse_hash(text: &str) -> Option<[u8; 32]> {
    let hex = text.strip_prefix("sha256:")?;
    if hex.len() != 64 {
        return None;
    }
    let mut hash = [0u8; 32];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(hash)
}

/// A new key and its stored form: `(key, "sha256:…")`. The key is shown once and never stored.
pub fn generate() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let key = format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash_key(&key);
    (key, hash)
}

pub fn hash_key(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use palisade_core::config::unspanned;

    fn entry(name: &str, key: &str, expires: Option<&str>) -> Spanned<ApiKeyEntry> {
        unspanned(ApiKeyEntry {
            name: name.into(),
            hash: unspanned(hash_key(key)),
            scopes: vec!["orders:read".into()],
            roles: vec![],
            expires: expires.map(|e| unspanned(e.to_string())),
        })
    }

    fn request(key: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", HeaderValue::from_str(key).unwrap());
        headers
    }

    #[test]
    fn only_the_right_unexpired_key_authenticates() {
        let (good, _) = generate();
        let config = ApiKeysConfig {
            keys: vec![
                entry("reporting", &good, None),
                entry("old", "psk_old", Some("2020-01-01T00:00:00Z")),
            ],
            ..Default::default()
        };
        let mut diagnostics = Diagnostics::new("test");
        let store = ApiKeyStore::compile(&config, &mut diagnostics);
        assert!(diagnostics.is_empty());
        let principal = store.authenticate(&request(&good)).unwrap().unwrap();
        assert_eq!(principal.subject, "reporting");
        assert_eq!(principal.kind, PrincipalKind::ApiKey);
        assert_eq!(
            store.authenticate(&request("psk_wrong")),
            Err(AuthFailure::UnknownApiKey)
        );
        assert_eq!(store.authenticate(&request("psk_old")), Err(AuthFailure::ApiKeyExpired));
        assert_eq!(store.authenticate(&HeaderMap::new()), Ok(None));
    }

    #[test]
    fn malformed_hashes_and_times_are_config_errors() {
        let mut bad_hash = entry("a", "k", None);
        bad_hash.value.hash = unspanned("md5:abc".into());
        let config = ApiKeysConfig {
            keys: vec![bad_hash, entry("b", "k2", Some("next tuesday"))],
            ..Default::default()
        };
        let mut diagnostics = Diagnostics::new("test");
        let store = ApiKeyStore::compile(&config, &mut diagnostics);
        assert_eq!(diagnostics.into_errors().len(), 2);
        assert!(store.is_empty());
    }

    #[test]
    fn generated_keys_are_random_and_hash_to_what_is_printed() {
        let (a, hash_a) = generate();
        let (b, _) = generate();
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX) && a.len() > 40);
        assert_eq!(parse_hash(&hash_a), Some(Sha256::digest(a.as_bytes()).into()));
    }
}
