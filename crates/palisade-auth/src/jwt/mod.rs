//! JWT verification for one provider. The order of checks is the attack surface, so it is fixed
//! and explicit:
//!
//! 1. size (before any decoding) and shape: three non-empty parts (a stripped signature is refused);
//! 2. the header, parsed by us: `alg` must be in the allowlist (`none`, in any case, never is) and
//!    `crit` must be absent, since we implement no extensions (RFC 7515 §4.1.11);
//! 3. the key comes only from the provider's own key set, by `kid` and by the algorithms its key
//!    type allows; `jku`, `x5u`, `jwk` and `x5c` in the token are never used;
//! 4. signature, then `exp`/`nbf` with leeway, `iss` and `aud` exactly, `iat` not in the future,
//!    required claims, and a subject.
//!
//! A verified token's principal is cached (see [`crate::cache`]) until its `exp`.

pub mod keys;
pub mod remote;

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use palisade_core::config::auth::{ClaimMapping, JwtProviderConfig, TokenLocation};
use serde_json::{Map, Value};

use crate::cache::TokenCache;
use crate::principal::AuthMethodKind;
use crate::{AuthFailure, Principal};
use keys::KeySet;
use remote::RemoteKeys;

/// Principals from tokens without `exp` (when `exp` is not required) are re-verified this often.
const MAX_CACHE_TTL: Duration = Duration::from_secs(300);

pub enum KeySource {
    Static(Arc<KeySet>),
    Remote(Arc<RemoteKeys>),
}

pub struct JwtProvider {
    pub name: String,
    /// This provider's part of the cache key.
    pub cache_id: u32,
    issuer: String,
    audiences: Vec<String>,
    algorithms: Vec<Algorithm>,
    leeway: u64,
    required_claims: Vec<String>,
    pub token: TokenLocation,
    pub max_token_bytes: usize,
    claims: ClaimMapping,
    keys: KeySource,
    cache: TokenCache,
}

impl JwtProvider {
    pub fn new(
        name: &str,
        cache_id: u32,
        config: &JwtProviderConfig,
        algorithms: Vec<Algorithm>,
        keys: KeySource,
        cache: TokenCache,
    ) -> JwtProvider {
        JwtProvider {
            name: name.to_string(),
            cache_id,
            issuer: config.issuer.value.clone(),
            audiences: config
                .audiences
                .as_ref()
                .map(|a| a.value.accepted().to_vec())
                .unwrap_or_default(),
            algorithms,
            leeway: config.leeway.get().as_secs(),
            required_claims: config.required_claims.clone(),
            token: config.token.clone(),
            max_token_bytes: usize::try_from(config.max_token_bytes.get()).unwrap_or(usize::MAX),
            claims: config.claims.clone(),
            keys,
            cache,
        }
    }

    /// Verifies `token` (already taken from the request and size-checked) and returns its principal.
    pub async fn verify(&self, token: &str) -> Result<Arc<Principal>, AuthFailure> {
        if token.len() > self.max_token_bytes {
            return Err(AuthFailure::TokenTooLarge);
        }
        let cache_key = TokenCache::key(self.cache_id, token);
        if let Some(principal) = self.cache.get(&cache_key) {
            return Ok(principal);
        }
        let header = parse_header(token)?;
        let algorithm = self.allowed_algorithm(&header)?;
        let kid = header.get("kid").and_then(Value::as_str);
        let claims = self.verify_with_keys(token, algorithm, kid).await?;
        self.check_claims(&claims)?;
        let principal = Principal::from_claims(AuthMethodKind::Jwt, self.issuer.clone(), claims, &self.claims)
            .ok_or(AuthFailure::MissingClaim)?;
        let principal = Arc::new(principal);
        self.cache.insert(cache_key, principal.clone(), MAX_CACHE_TTL);
        Ok(principal)
    }

    fn allowed_algorithm(&self, header: &Map<String, Value>) -> Result<Algorithm, AuthFailure> {
        let name = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(AuthFailure::MalformedToken)?;
        if name.eq_ignore_ascii_case("none") {
            return Err(AuthFailure::AlgorithmNotAllowed);
        }
        let algorithm = Algorithm::from_str(name).map_err(|_| AuthFailure::AlgorithmNotAllowed)?;
        if !self.algorithms.contains(&algorithm) {
            return Err(AuthFailure::AlgorithmNotAllowed);
        }
        if header.contains_key("crit") {
            return Err(AuthFailure::UnsupportedCritical);
        }
        Ok(algorithm)
    }

    async fn verify_with_keys(
        &self,
        token: &str,
        algorithm: Algorithm,
        kid: Option<&str>,
    ) -> Result<Map<String, Value>, AuthFailure> {
        let set = match &self.keys {
            KeySource::Static(set) => set.clone(),
            KeySource::Remote(remote) => {
                let set = remote.current();
                let known = kid.map_or(!set.keys.is_empty(), |kid| set.has_kid(kid));
                if known {
                    set
                } else {
                    // Perhaps the IdP rotated keys: refresh (rate-limited) and look again.
                    match remote.refresh_for_unknown_kid().await {
                        Some(fresh) => fresh,
                        None if !remote.is_loaded() => return Err(AuthFailure::ProviderUnavailable),
                        None => set,
                    }
                }
            }
        };
        let validation = self.validation(algorithm);
        let mut outcome = Err(AuthFailure::UnknownKey);
        for candidate in set.candidates(algorithm, kid) {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &candidate.key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(error) => {
                    let failure = failure_of(error.kind());
                    outcome = Err(failure);
                    // Only a signature mismatch is worth trying the next key for.
                    if failure != AuthFailure::BadSignature {
                        break;
                    }
                }
            }
        }
        outcome
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        let mut spec_claims: Vec<&str> = vec!["iss"];
        // Empty only for `audiences: any`: validation made it explicit.
        if self.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.audiences);
            spec_claims.push("aud");
        }
        spec_claims.extend(
            self.required_claims
                .iter()
                .map(String::as_str)
                .filter(|c| ["exp", "nbf", "sub"].contains(c)),
        );
        validation.set_required_spec_claims(&spec_claims);
        validation
    }

    /// What `jsonwebtoken` does not check: `iss` is a string (not an array), `iat` is not in the
    /// future, and the configured required claims are present.
    fn check_claims(&self, claims: &Map<String, Value>) -> Result<(), AuthFailure> {
        if claims.get("iss").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Err(AuthFailure::WrongIssuer);
        }
        if let Some(iat) = claims.get("iat") {
            let iat = iat.as_u64().ok_or(AuthFailure::MalformedToken)?;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            if iat > now + self.leeway {
                return Err(AuthFailure::IssuedInFuture);
            }
        }
        if self.required_claims.iter().any(|name| !claims.contains_key(name)) {
            return Err(AuthFailure::MissingClaim);
        }
        Ok(())
    }

    /// What the key material is now: a static set's content, or `remote` (a remote set flushes the
    /// cache itself when it changes).
    pub fn key_fingerprint(&self) -> String {
        match &self.keys {
            KeySource::Static(set) => set.fingerprint.clone(),
            KeySource::Remote(_) => "remote".into(),
        }
    }
}

/// The JOSE header as a JSON object. Exactly three non-empty dot-separated parts (a JWE's five, or
/// a token with its signature stripped, are refused here).
fn parse_header(token: &str) -> Result<Map<String, Value>, AuthFailure> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthFailure::MalformedToken);
    };
    if header.is_empty() || payload.is_empty() || signature.is_empty() {
        return Err(AuthFailure::MalformedToken);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| AuthFailure::MalformedToken)?;
    serde_json::from_slice(&bytes).map_err(|_| AuthFailure::MalformedToken)
}

fn failure_of(kind: &ErrorKind) -> AuthFailure {
    match kind {
        ErrorKind::InvalidSignature => AuthFailure::BadSignature,
        ErrorKind::ExpiredSignature => AuthFailure::Expired,
        ErrorKind::ImmatureSignature => AuthFailure::NotYetValid,
        ErrorKind::InvalidIssuer => AuthFailure::WrongIssuer,
        ErrorKind::InvalidAudience => AuthFailure::WrongAudience,
        ErrorKind::MissingRequiredClaim(_) => AuthFailure::MissingClaim,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => AuthFailure::AlgorithmNotAllowed,
        ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidEddsaKey | ErrorKind::InvalidRsaKey(_) => {
            AuthFailure::UnknownKey
        }
        _ => AuthFailure::MalformedToken,
    }
}

/// The `sub` a token claims, without verifying anything: for counting refused credentials against
/// one subject (a forged or expired token still names whom it targets). Never use it to decide
/// access. `None` for anything that is not a small JWT with a printable `sub`.
pub fn unverified_subject(token: &str) -> Option<String> {
    const MAX_TOKEN: usize = 16 * 1024;
    const MAX_SUBJECT: usize = 256;
    if token.len() > MAX_TOKEN {
        return None;
    }
    let mut parts = token.split('.');
    let (_header, payload) = (parts.next()?, parts.next()?);
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    #[derive(serde::Deserialize)]
    struct Claims {
        sub: Option<String>,
    }
    let subject = serde_json::from_slice::<Claims>(&bytes).ok()?.sub?;
    let printable = !subject.is_empty() && subject.len() <= MAX_SUBJECT && !subject.chars().any(char::is_control);
    printable.then_some(subject)
}

/// The fuzz target `jwt` (and the replay of its corpus in `cargo test`): reading the JOSE header and
/// the unverified subject of any text never panics; a subject read is bounded and printable, and a
/// header is read only from exactly three non-empty parts.
#[doc(hidden)]
pub fn fuzz_check(data: &[u8]) {
    let token = String::from_utf8_lossy(data);
    if parse_header(&token).is_ok() {
        let parts: Vec<&str> = token.split('.').collect();
        assert!(parts.len() == 3 && parts.iter().all(|p| !p.is_empty()), "{token:?}");
    }
    if let Some(subject) = unverified_subject(&token) {
        assert!(!subject.is_empty() && subject.len() <= 256, "{subject:?}");
        assert!(!subject.chars().any(char::is_control), "{subject:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unverified_subject_is_read_from_any_token_shape_and_bounded() {
        let encode = |json: &str| URL_SAFE_NO_PAD.encode(json);
        let token = format!(
            "{}.{}.forged",
            encode(r#"{"alg":"none"}"#),
            encode(r#"{"sub":"admin"}"#)
        );
        assert_eq!(unverified_subject(&token).as_deref(), Some("admin"));
        let control = format!("x.{}.y", encode("{\"sub\":\"a\\nb\"}"));
        assert_eq!(unverified_subject(&control), None);
        let long = format!("x.{}.y", encode(&format!(r#"{{"sub":"{}"}}"#, "a".repeat(300))));
        assert_eq!(unverified_subject(&long), None);
        assert_eq!(unverified_subject("not a token"), None);
        assert_eq!(unverified_subject(&format!("x.{}.y", encode(r#"{"sub":42}"#))), None);
    }
}
