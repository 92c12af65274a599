//! Developer helpers for credentials: `palisade apikey new` and `palisade token`.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use palisade_auth::signing::SigningKey;
use serde_json::{json, Map, Value};

/// Prints a new API key once, and the config entry that stores only its hash.
pub fn new_api_key(name: &str, scopes: &[String], roles: &[String], expires: Option<&str>) -> anyhow::Result<()> {
    if let Some(expires) = expires {
        humantime::parse_rfc3339_weak(expires).context("--expires must be an RFC 3339 time")?;
    }
    let (key, hash) = palisade_auth::apikey::generate();
    println!("API key for {name:?} (shown once; store it in the client's secret store):\n\n  {key}\n");
    println!("Add this entry under authentication.api_keys.keys (or to the api_keys.file):\n");
    let mut entry = format!("  - name: {name}\n    hash: \"{hash}\"\n");
    if !scopes.is_empty() {
        entry.push_str(&format!("    scopes: [{}]\n", scopes.join(", ")));
    }
    if !roles.is_empty() {
        entry.push_str(&format!("    roles: [{}]\n", roles.join(", ")));
    }
    if let Some(expires) = expires {
        entry.push_str(&format!("    expires: \"{expires}\"\n"));
    }
    print!("{entry}");
    Ok(())
}

pub struct TokenRequest<'a> {
    pub key: &'a Path,
    pub subject: &'a str,
    pub issuer: &'a str,
    pub audience: Option<&'a str>,
    pub scopes: &'a [String],
    pub roles: &'a [String],
    pub ttl: Duration,
    pub claims: &'a [String],
}

/// Prints a signed test token, or with `jwks_only` the key's public JWK Set for the gateway config.
pub fn token(request: &TokenRequest<'_>, jwks_only: bool) -> anyhow::Result<()> {
    let pem = std::fs::read_to_string(request.key).with_context(|| format!("cannot read {}", request.key.display()))?;
    let key = SigningKey::from_pem(&pem)?;
    if jwks_only {
        println!("{}", serde_json::to_string_pretty(&key.jwks())?);
        return Ok(());
    }
    println!("{}", key.sign(&Value::Object(claims_for(request)?))?);
    Ok(())
}

pub fn claims_for(request: &TokenRequest<'_>) -> anyhow::Result<Map<String, Value>> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let mut claims = Map::new();
    claims.insert("iss".into(), json!(request.issuer));
    claims.insert("sub".into(), json!(request.subject));
    claims.insert("iat".into(), json!(now));
    claims.insert("exp".into(), json!(now + request.ttl.as_secs()));
    if let Some(audience) = request.audience {
        claims.insert("aud".into(), json!(audience));
    }
    if !request.scopes.is_empty() {
        claims.insert("scope".into(), json!(request.scopes.join(" ")));
    }
    if !request.roles.is_empty() {
        claims.insert("roles".into(), json!(request.roles));
    }
    for pair in request.claims {
        let (name, value) = pair.split_once('=').context("--claim takes NAME=VALUE")?;
        // A JSON value (number, array, object) when it parses as one, a string otherwise.
        let value = serde_json::from_str(value).unwrap_or_else(|_| json!(value));
        claims.insert(name.to_string(), value);
    }
    Ok(claims)
}
