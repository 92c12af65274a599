//! ServiceAccount token attestation: the identity service's answer to "which pod is this?".
//!
//! A projected token is checked the way kube-apiserver issues it: signature against the cluster's
//! keys (offline, through the gateway's JWT verifier: algorithm allowlist, never `none`, keys only
//! from the configured set), or by the API server itself (TokenReview); then `iss` exactly, the
//! configured audience, `exp`/`nbf`/`iat` with leeway, an age limit, and the `kubernetes.io`
//! claims, which must agree with `sub`. The SPIFFE ID is derived from the namespace and the
//! ServiceAccount; nothing the workload asks for is used.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use palisade_auth::jwt::JwtProvider;
use palisade_auth::AuthFailure;
use palisade_core::Diagnostics;
use palisade_mesh::attest::{Attestation, Attested, Refused, Workload, WorkloadAttestor};
use palisade_mesh::SpiffeId;
use serde_json::{Map, Value};

use crate::config::{Validated, WorkloadPattern};
use crate::token_review::TokenReview;

/// Why a token was refused. The codes are stable: audit events and the problem answer carry them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The JWT checks (signature, algorithm, issuer, audience, times) refused it.
    Token(AuthFailure),
    /// The API server said the token is not valid (TokenReview).
    ReviewRefused,
    /// The key set or the review API could not be reached: try again.
    Unavailable,
    /// No `kubernetes.io` claims, or not a ServiceAccount's token.
    NotAServiceAccountToken,
    /// The token is not bound to a pod (`require_pod`).
    NotBoundToAPod,
    /// `sub` names another ServiceAccount than the `kubernetes.io` claims.
    SubjectMismatch,
    /// Issued longer ago than `max_token_age`.
    TooOld,
    /// An extended token past the time kube-apiserver would have let it expire (`warnafter`).
    PastWarnAfter,
    /// The namespace and ServiceAccount are not in `allow`, or are in `deny`.
    NotAllowed,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Token(failure) => failure.reason(),
            Refusal::ReviewRefused => "token_review_refused",
            Refusal::Unavailable => "attestor_unavailable",
            Refusal::NotAServiceAccountToken => "not_a_service_account_token",
            Refusal::NotBoundToAPod => "not_bound_to_a_pod",
            Refusal::SubjectMismatch => "subject_mismatch",
            Refusal::TooOld => "token_too_old",
            Refusal::PastWarnAfter => "token_past_warnafter",
            Refusal::NotAllowed => "workload_not_allowed",
        }
    }

    fn unavailable(self) -> bool {
        matches!(
            self,
            Refusal::Unavailable | Refusal::Token(AuthFailure::ProviderUnavailable)
        )
    }
}

/// How tokens are verified.
enum Verifier {
    Offline(Box<JwtProvider>),
    Review(Box<TokenReview>),
}

pub struct ServiceAccountAttestor {
    trust_domain: String,
    settings: Validated,
    verifier: Verifier,
}

impl ServiceAccountAttestor {
    /// Builds the attestor; with `fetch`, a remote key set is loaded now (bounded by its timeout)
    /// and kept fresh. Errors are the config's, with locations.
    pub async fn start(
        trust_domain: &str,
        settings: Validated,
        diagnostics: &mut Diagnostics,
        fetch: bool,
    ) -> Option<ServiceAccountAttestor> {
        let verifier = match (&settings.provider, &settings.token_review) {
            (Some(provider), _) => Verifier::Offline(Box::new(
                palisade_auth::standalone_jwt_provider("kubernetes", provider, 4 << 20, diagnostics, fetch).await?,
            )),
            (None, Some(review)) => match TokenReview::new(review, &settings.audience) {
                Ok(review) => Verifier::Review(Box::new(review)),
                Err(error) => {
                    diagnostics.general(format!("kubernetes.token_review: {error}"));
                    return None;
                }
            },
            (None, None) => return None,
        };
        Some(ServiceAccountAttestor {
            trust_domain: trust_domain.to_string(),
            settings,
            verifier,
        })
    }

    /// The whole check; the workload is named in a refusal whenever the token said who it was.
    pub async fn check(&self, token: &str) -> Result<Attested, (Refusal, Option<Workload>)> {
        let claims = match &self.verifier {
            Verifier::Offline(provider) => provider
                .verify(token)
                .await
                .map(|principal| principal.claims.clone())
                .map_err(|failure| (Refusal::Token(failure), signed_workload(failure, token)))?,
            Verifier::Review(review) => {
                let reviewed = review.review(token).await.map_err(|r| (r, None))?;
                // The API server verified the token; its claims still carry what the review does
                // not answer (the issue time, the binding), and must agree with the review.
                let claims = unverified_claims(token).ok_or((Refusal::NotAServiceAccountToken, None))?;
                self.check_reviewed_claims(&claims, &reviewed.username)
                    .map_err(|r| (r, workload_of(&claims).ok()))?;
                claims
            }
        };
        let workload = workload_of(&claims).map_err(|r| (r, None))?;
        self.check_workload(&claims, &workload)
            .map_err(|refusal| (refusal, Some(workload.clone())))?;
        let id = format!(
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, workload.namespace, workload.service_account
        );
        let spiffe_id = SpiffeId::parse(&id).map_err(|_| (Refusal::NotAServiceAccountToken, Some(workload.clone())))?;
        Ok(Attested { spiffe_id, workload })
    }

    /// What the offline path's JWT checks did and a review does not say (the issuer and the times),
    /// and that the claims name the user the review authenticated.
    fn check_reviewed_claims(&self, claims: &Map<String, Value>, reviewed_user: &str) -> Result<(), Refusal> {
        if claims.get("iss").and_then(Value::as_str) != Some(self.settings.issuer.as_str()) {
            return Err(Refusal::Token(AuthFailure::WrongIssuer));
        }
        let now = now();
        let leeway = self.settings.leeway.as_secs();
        let exp = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or(Refusal::Token(AuthFailure::MissingClaim))?;
        if exp.saturating_add(leeway) <= now {
            return Err(Refusal::Token(AuthFailure::Expired));
        }
        if claims
            .get("nbf")
            .and_then(Value::as_u64)
            .is_some_and(|nbf| nbf > now + leeway)
        {
            return Err(Refusal::Token(AuthFailure::NotYetValid));
        }
        if claims.get("sub").and_then(Value::as_str) != Some(reviewed_user) {
            return Err(Refusal::SubjectMismatch);
        }
        Ok(())
    }

    fn check_workload(&self, claims: &Map<String, Value>, workload: &Workload) -> Result<(), Refusal> {
        let expected = format!(
            "system:serviceaccount:{}:{}",
            workload.namespace, workload.service_account
        );
        if claims.get("sub").and_then(Value::as_str) != Some(expected.as_str()) {
            return Err(Refusal::SubjectMismatch);
        }
        if self.settings.require_pod && (workload.pod_name.is_none() || workload.pod_uid.is_none()) {
            return Err(Refusal::NotBoundToAPod);
        }
        let now = now();
        let leeway = self.settings.leeway.as_secs();
        let iat = claims
            .get("iat")
            .and_then(Value::as_u64)
            .ok_or(Refusal::Token(AuthFailure::MissingClaim))?;
        if iat > now + leeway {
            return Err(Refusal::Token(AuthFailure::IssuedInFuture));
        }
        if now.saturating_sub(iat) > self.settings.max_token_age.as_secs() + leeway {
            return Err(Refusal::TooOld);
        }
        let warn_after = claims
            .get("kubernetes.io")
            .and_then(|k| k.get("warnafter"))
            .and_then(Value::as_u64);
        if warn_after.is_some_and(|at| now > at.saturating_add(leeway)) {
            return Err(Refusal::PastWarnAfter);
        }
        let allowed = |patterns: &[WorkloadPattern]| {
            patterns
                .iter()
                .any(|p| p.matches(&workload.namespace, &workload.service_account))
        };
        if !allowed(&self.settings.allow) || allowed(&self.settings.deny) {
            return Err(Refusal::NotAllowed);
        }
        Ok(())
    }
}

impl WorkloadAttestor for ServiceAccountAttestor {
    fn proof(&self) -> &'static str {
        "service_account_token"
    }

    fn attest<'a>(&'a self, credential: &'a str) -> Attestation<'a> {
        Box::pin(async move {
            self.check(credential).await.map_err(|(refusal, workload)| Refused {
                reason: refusal.as_str(),
                unavailable: refusal.unavailable(),
                workload,
            })
        })
    }
}

/// The workload the `kubernetes.io` claims name (as kube-apiserver writes them for a projected
/// token: `namespace`, `serviceaccount.{name,uid}`, `pod.{name,uid}`).
fn workload_of(claims: &Map<String, Value>) -> Result<Workload, Refusal> {
    let kubernetes = claims.get("kubernetes.io").ok_or(Refusal::NotAServiceAccountToken)?;
    let text = |value: Option<&Value>| value.and_then(Value::as_str).map(str::to_string);
    let namespace = text(kubernetes.get("namespace")).ok_or(Refusal::NotAServiceAccountToken)?;
    let service_account =
        text(kubernetes.get("serviceaccount").and_then(|s| s.get("name"))).ok_or(Refusal::NotAServiceAccountToken)?;
    if !crate::config::is_dns_subdomain(&namespace) || !crate::config::is_dns_subdomain(&service_account) {
        return Err(Refusal::NotAServiceAccountToken);
    }
    let pod = kubernetes.get("pod");
    Ok(Workload {
        namespace,
        service_account,
        pod_name: text(pod.and_then(|p| p.get("name"))),
        pod_uid: text(pod.and_then(|p| p.get("uid"))),
    })
}

/// The claims of a token whose signature someone else checked (the API server, in a review), or
/// that is being refused (to name the workload in the audit event). Bounded: tokens over 16 KiB
/// are not decoded.
fn unverified_claims(token: &str) -> Option<Map<String, Value>> {
    if token.len() > 16 * 1024 {
        return None;
    }
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Who a refused token names, for the audit trail, when the refusal came after its signature was
/// verified (an expired or misaddressed token of a real pod). A forged token names nobody: it could
/// name any pod.
fn signed_workload(failure: AuthFailure, token: &str) -> Option<Workload> {
    let signature_held = matches!(
        failure,
        AuthFailure::Expired
            | AuthFailure::NotYetValid
            | AuthFailure::WrongAudience
            | AuthFailure::WrongIssuer
            | AuthFailure::MissingClaim
            | AuthFailure::IssuedInFuture
    );
    signature_held
        .then(|| unverified_claims(token))
        .flatten()
        .and_then(|claims| workload_of(&claims).ok())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Times at the end of the u64 range (a token the API server vouched for, but odd) are
    /// compared without overflowing.
    #[tokio::test]
    async fn extreme_times_in_claims_do_not_overflow() {
        let settings = crate::config::Validated {
            issuer: "https://k8s.test".into(),
            audience: "palisade-ca".into(),
            provider: None,
            token_review: None,
            max_token_age: std::time::Duration::from_secs(3600),
            leeway: std::time::Duration::from_secs(30),
            require_pod: true,
            allow: vec![WorkloadPattern::parse("*").unwrap()],
            deny: Vec::new(),
        };
        let review = crate::config::TokenReviewConfig {
            url: palisade_core::config::unspanned("https://k8s.test".into()),
            ca: None,
            bearer_token_file: palisade_core::config::unspanned("/nonexistent".into()),
            timeout: palisade_core::units::Duration(std::time::Duration::from_secs(1)),
        };
        let attestor = ServiceAccountAttestor {
            trust_domain: "cluster.test".into(),
            settings,
            verifier: Verifier::Review(Box::new(TokenReview::new(&review, "palisade-ca").unwrap())),
        };
        let claims = json!({"iss": "https://k8s.test", "exp": u64::MAX, "sub": "system:serviceaccount:a:b"});
        let claims = claims.as_object().unwrap();
        assert!(attestor
            .check_reviewed_claims(claims, "system:serviceaccount:a:b")
            .is_ok());
        let workload = Workload {
            namespace: "a".into(),
            service_account: "b".into(),
            pod_name: Some("p".into()),
            pod_uid: Some("u".into()),
        };
        let mut late = claims.clone();
        late.insert("iat".into(), json!(now()));
        late.insert("kubernetes.io".into(), json!({"warnafter": u64::MAX}));
        assert!(attestor.check_workload(&late, &workload).is_ok());
    }
}
