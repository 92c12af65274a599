//! OAuth 2.0 token introspection (RFC 7662) for opaque tokens. The gateway authenticates to the
//! endpoint with client credentials (HTTP Basic, RFC 6749 §2.3.1), caches active answers until the
//! token's `exp` (never longer than `max_cache_ttl`), and fails closed: an endpoint that cannot be
//! reached or answers nonsense is a 503, never a pass.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{Request, Uri};
use http_body_util::Full;
use palisade_core::config::auth::{ClaimMapping, IntrospectionConfig, TokenLocation};
use palisade_core::secret::SecretValue;
use serde_json::{Map, Value};

use crate::cache::TokenCache;
use crate::fetch::Fetcher;
use crate::principal::AuthMethodKind;
use crate::{AuthFailure, Principal};

pub struct Introspector {
    pub name: String,
    cache_id: u32,
    endpoint: Uri,
    /// `Basic base64(client_id:client_secret)`; held as a secret so it never prints.
    credentials: SecretValue,
    fetcher: Fetcher,
    max_cache_ttl: Duration,
    pub token: TokenLocation,
    pub max_token_bytes: usize,
    claims: ClaimMapping,
    /// An answer carrying `aud` must name one of these; empty for `audiences: any`.
    audiences: Vec<String>,
    cache: TokenCache,
}

impl Introspector {
    pub fn new(
        name: &str,
        cache_id: u32,
        config: &IntrospectionConfig,
        endpoint: Uri,
        client_secret: &SecretValue,
        fetcher: Fetcher,
        cache: TokenCache,
    ) -> Introspector {
        let encode = |text: &str| form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
        let pair = format!("{}:{}", encode(&config.client_id), encode(client_secret.expose()));
        Introspector {
            name: name.to_string(),
            cache_id,
            endpoint,
            credentials: SecretValue::new(format!("Basic {}", STANDARD.encode(pair))),
            fetcher,
            max_cache_ttl: config.max_cache_ttl.get(),
            token: config.token.clone(),
            max_token_bytes: usize::try_from(config.max_token_bytes.get()).unwrap_or(usize::MAX),
            claims: config.claims.clone(),
            audiences: config
                .audiences
                .as_ref()
                .map(|a| a.value.accepted().to_vec())
                .unwrap_or_default(),
            cache,
        }
    }

    pub async fn verify(&self, token: &str) -> Result<Arc<Principal>, AuthFailure> {
        let cache_key = TokenCache::key(self.cache_id, token);
        if let Some(principal) = self.cache.get(&cache_key) {
            return Ok(principal);
        }
        let answer = self.ask(token).await?;
        let principal = Arc::new(self.principal_from(answer)?);
        self.cache.insert(cache_key, principal.clone(), self.max_cache_ttl);
        Ok(principal)
    }

    async fn ask(&self, token: &str) -> Result<Map<String, Value>, AuthFailure> {
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("token", token)
            .append_pair("token_type_hint", "access_token")
            .finish();
        let request = Request::post(self.endpoint.clone())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .header(AUTHORIZATION, self.credentials.expose())
            .body(Full::new(Bytes::from(form)))
            .map_err(|_| AuthFailure::ProviderUnavailable)?;
        match self.fetcher.send_json(request).await {
            Ok(Value::Object(answer)) => Ok(answer),
            Ok(_) => {
                tracing::warn!(endpoint = %self.name, "introspection answer is not a JSON object");
                Err(AuthFailure::ProviderUnavailable)
            }
            Err(error) => {
                tracing::warn!(endpoint = %self.name, %error, "introspection failed; refusing the request");
                Err(AuthFailure::ProviderUnavailable)
            }
        }
    }

    fn principal_from(&self, mut answer: Map<String, Value>) -> Result<Principal, AuthFailure> {
        if answer.get("active") != Some(&Value::Bool(true)) {
            return Err(AuthFailure::TokenInactive);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        if answer.get("exp").and_then(Value::as_u64).is_some_and(|exp| exp <= now) {
            return Err(AuthFailure::Expired);
        }
        if !audience_accepted(answer.get("aud"), &self.audiences) {
            return Err(AuthFailure::WrongAudience);
        }
        // Client-credentials tokens often have no `sub`; their client is the subject.
        if self.claims.subject == "sub" && !answer.contains_key("sub") {
            if let Some(client) = answer.get("client_id").cloned() {
                answer.insert("sub".into(), client);
            }
        }
        let issuer = answer
            .get("iss")
            .and_then(Value::as_str)
            .map_or_else(|| self.endpoint.to_string(), str::to_string);
        Principal::from_claims(AuthMethodKind::Introspection, issuer, answer, &self.claims)
            .ok_or(AuthFailure::MissingClaim)
    }
}

/// An answer's `aud` (a string or a list, RFC 7662 2.2) names one of `accepted`; an answer without
/// `aud`, or `audiences: any` (nothing listed), passes.
fn audience_accepted(aud: Option<&Value>, accepted: &[String]) -> bool {
    let Some(aud) = aud.filter(|_| !accepted.is_empty()) else {
        return true;
    };
    let names = |value: &Value| value.as_str().is_some_and(|name| accepted.iter().any(|a| a == name));
    match aud {
        Value::Array(list) => list.iter().any(names),
        single => names(single),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_answer_for_another_audience_is_refused() {
        let accepted = vec!["orders".to_string()];
        assert!(audience_accepted(Some(&json!("orders")), &accepted));
        assert!(audience_accepted(Some(&json!(["billing", "orders"])), &accepted));
        assert!(!audience_accepted(Some(&json!("billing")), &accepted));
        assert!(!audience_accepted(Some(&json!(["billing"])), &accepted));
        assert!(!audience_accepted(Some(&json!(42)), &accepted));
        assert!(
            audience_accepted(None, &accepted),
            "an answer without aud is the server's decision"
        );
        assert!(audience_accepted(Some(&json!("billing")), &[]), "audiences: any");
    }
}
