//! One-time join tokens: how a workload proves, for its first certificate, which SPIFFE ID it may
//! have. A token is 256 random bits shown once; the CA keeps only its SHA-256 (in `tokens.json`, mode
//! 0600) with the ID it is bound to and its expiry. Redeeming marks it used before anything is signed,
//! so a replay is refused even if the first use failed half-way.

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::ca::unix_seconds;
use crate::files::{write_atomically, Access, DirectoryLock};
use crate::spiffe::SpiffeId;
use crate::CaError;

const FILE: &str = "tokens.json";
const PREFIX: &str = "pjt_";
/// Used or expired tokens are forgotten this long after they expire.
const KEEP_AFTER_EXPIRY: Duration = Duration::from_secs(86_400);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("unknown join token")]
    Unknown,
    #[error("join token already used")]
    Used,
    #[error("join token expired")]
    Expired,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    tokens: Vec<TokenRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRecord {
    /// Hex SHA-256 of the token text.
    sha256: String,
    spiffe_id: String,
    expires_at: u64,
    used: bool,
}

/// A token as created: the secret (to hand to the workload) and what it allows.
#[derive(Debug, Clone)]
pub struct JoinToken {
    pub secret: String,
    pub spiffe_id: SpiffeId,
    pub expires_at: SystemTime,
}

/// Creates a token for `spiffe_id`, valid for `ttl`, in the CA directory `dir`.
pub fn create(dir: &Path, spiffe_id: &SpiffeId, ttl: Duration) -> Result<JoinToken, CaError> {
    let _lock = DirectoryLock::acquire(dir)?;
    let random: [u8; 32] = rand::random();
    let secret = format!("{PREFIX}{}", hex(&random));
    let expires_at = SystemTime::now() + ttl;
    let mut file = read(dir)?;
    forget_stale(&mut file, SystemTime::now());
    file.tokens.push(TokenRecord {
        sha256: digest(&secret),
        spiffe_id: spiffe_id.to_string(),
        expires_at: unix_seconds(expires_at),
        used: false,
    });
    write(dir, &file)?;
    Ok(JoinToken {
        secret,
        spiffe_id: spiffe_id.clone(),
        expires_at,
    })
}

/// Uses up `secret` and returns the ID it was bound to. `Ok(Err(_))`: the token is refused.
pub fn redeem(dir: &Path, secret: &str, now: SystemTime) -> Result<Result<SpiffeId, TokenError>, CaError> {
    let _lock = DirectoryLock::acquire(dir)?;
    let mut file = read(dir)?;
    let presented = digest(secret);
    // Compare against every record in constant time so timing tells nothing about near misses.
    let mut found = None;
    for (index, record) in file.tokens.iter().enumerate() {
        if bool::from(record.sha256.as_bytes().ct_eq(presented.as_bytes())) {
            found = Some(index);
        }
    }
    let Some(index) = found else {
        return Ok(Err(TokenError::Unknown));
    };
    let record = &mut file.tokens[index];
    if record.used {
        return Ok(Err(TokenError::Used));
    }
    if unix_seconds(now) >= record.expires_at {
        return Ok(Err(TokenError::Expired));
    }
    record.used = true;
    let id = SpiffeId::parse(&record.spiffe_id).map_err(|e| CaError::Invalid(format!("{FILE}: {e}")));
    write(dir, &file)?;
    id.map(Ok)
}

fn forget_stale(file: &mut TokenFile, now: SystemTime) {
    let cutoff = unix_seconds(now).saturating_sub(KEEP_AFTER_EXPIRY.as_secs());
    file.tokens.retain(|record| record.expires_at > cutoff);
}

fn read(dir: &Path) -> Result<TokenFile, CaError> {
    let path = dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| CaError::Invalid(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TokenFile::default()),
        Err(source) => Err(CaError::Io { path, source }),
    }
}

fn write(dir: &Path, file: &TokenFile) -> Result<(), CaError> {
    let text = serde_json::to_string_pretty(file).map_err(|e| CaError::Invalid(e.to_string()))?;
    write_atomically(&dir.join(FILE), text.as_bytes(), Access::OwnerOnly)
}

fn digest(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_redeems_once_for_its_id_and_never_again() {
        let dir = tempdir("tokens-once");
        let id = SpiffeId::parse("spiffe://example.org/ns/shop/sa/orders").unwrap();
        let token = create(&dir, &id, Duration::from_secs(600)).unwrap();
        assert!(token.secret.starts_with(PREFIX));
        let stored = std::fs::read_to_string(dir.join(FILE)).unwrap();
        assert!(!stored.contains(&token.secret), "only the hash is stored");
        let now = SystemTime::now();
        assert_eq!(redeem(&dir, &token.secret, now).unwrap(), Ok(id));
        assert_eq!(redeem(&dir, &token.secret, now).unwrap(), Err(TokenError::Used));
        assert_eq!(redeem(&dir, "pjt_00", now).unwrap(), Err(TokenError::Unknown));
    }

    #[test]
    fn an_expired_token_is_refused() {
        let dir = tempdir("tokens-expired");
        let id = SpiffeId::parse("spiffe://example.org/a").unwrap();
        let token = create(&dir, &id, Duration::from_secs(60)).unwrap();
        let later = SystemTime::now() + Duration::from_secs(61);
        assert_eq!(redeem(&dir, &token.secret, later).unwrap(), Err(TokenError::Expired));
    }

    fn tempdir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("palisade-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
