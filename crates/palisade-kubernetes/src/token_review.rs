//! The TokenReview API (`authentication.k8s.io/v1`): the API server checks a token for us, for
//! clusters whose signing keys the identity service cannot fetch. It also knows what offline
//! verification cannot: that the pod the token is bound to still exists.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Uri};
use http_body_util::Full;
use palisade_auth::fetch::Fetcher;
use serde_json::{json, Value};

use crate::attest::Refusal;
use crate::config::TokenReviewConfig;

pub struct TokenReview {
    fetcher: Fetcher,
    endpoint: Uri,
    audience: String,
}

/// What the API server said about an authenticated token.
#[derive(Debug)]
pub struct Reviewed {
    pub username: String,
}

impl TokenReview {
    pub fn new(config: &TokenReviewConfig, audience: &str) -> Result<TokenReview, String> {
        let endpoint: Uri = format!(
            "{}/apis/authentication.k8s.io/v1/tokenreviews",
            config.url.value.trim_end_matches('/')
        )
        .parse()
        .map_err(|_| format!("{:?} is not a URL", config.url.value))?;
        let timeout: Duration = config.timeout.get();
        let fetcher = Fetcher::new(config.ca.as_ref().map(|c| c.value.as_path()), timeout)?
            .with_bearer_token_file(&config.bearer_token_file.value, &endpoint)?;
        Ok(TokenReview {
            fetcher,
            endpoint,
            audience: audience.to_string(),
        })
    }

    /// Asks whether `token` is a valid token for our audience. The token travels only in the
    /// request body to the configured API server.
    pub async fn review(&self, token: &str) -> Result<Reviewed, Refusal> {
        let body = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": { "token": token, "audiences": [self.audience] },
        });
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.endpoint.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|_| Refusal::Unavailable)?;
        self.fetcher.authorize(&mut request).map_err(|error| {
            tracing::warn!(%error, "TokenReview: cannot authenticate to the API server");
            Refusal::Unavailable
        })?;
        let answer = self.fetcher.send_json(request).await.map_err(|error| {
            tracing::warn!(%error, "TokenReview: the API server did not answer");
            Refusal::Unavailable
        })?;
        interpret(&answer, &self.audience)
    }
}

/// A review's `status`: authenticated, for our audience, as a ServiceAccount.
fn interpret(answer: &Value, audience: &str) -> Result<Reviewed, Refusal> {
    let status = answer.get("status").ok_or(Refusal::Unavailable)?;
    if status.get("authenticated").and_then(Value::as_bool) != Some(true) {
        return Err(Refusal::ReviewRefused);
    }
    // An API server that ignores `spec.audiences` answers with its own: never take that as ours.
    let audiences = status.get("audiences").and_then(Value::as_array);
    if !audiences.is_some_and(|list| list.iter().any(|a| a.as_str() == Some(audience))) {
        return Err(Refusal::Token(palisade_auth::AuthFailure::WrongAudience));
    }
    let username = status
        .get("user")
        .and_then(|u| u.get("username"))
        .and_then(Value::as_str)
        .ok_or(Refusal::NotAServiceAccountToken)?;
    if !username.starts_with("system:serviceaccount:") {
        return Err(Refusal::NotAServiceAccountToken);
    }
    Ok(Reviewed {
        username: username.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_authenticated_service_account_for_our_audience_passes() {
        let ok = json!({"status": {"authenticated": true, "audiences": ["palisade-ca"],
            "user": {"username": "system:serviceaccount:shop:orders"}}});
        assert_eq!(
            interpret(&ok, "palisade-ca").unwrap().username,
            "system:serviceaccount:shop:orders"
        );
        let refused = json!({"status": {"authenticated": false, "error": "token expired"}});
        assert_eq!(interpret(&refused, "palisade-ca").unwrap_err(), Refusal::ReviewRefused);
        let other_audience = json!({"status": {"authenticated": true, "audiences": ["https://kubernetes.default.svc"],
            "user": {"username": "system:serviceaccount:shop:orders"}}});
        assert!(interpret(&other_audience, "palisade-ca").is_err());
        let person = json!({"status": {"authenticated": true, "audiences": ["palisade-ca"],
            "user": {"username": "oidc:alice"}}});
        assert_eq!(
            interpret(&person, "palisade-ca").unwrap_err(),
            Refusal::NotAServiceAccountToken
        );
        assert_eq!(interpret(&json!({}), "palisade-ca").unwrap_err(), Refusal::Unavailable);
    }
}
