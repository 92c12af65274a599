//! The verified identity of a caller, handed to rate limiting, authorization, audit and the upstream.

use serde::Serialize;
use serde_json::{Map, Value};

use palisade_core::config::auth::ClaimMapping;

/// What kind of caller this is; authorization rules and audit events use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    /// A person, from a token issued to a user.
    User,
    /// A workload: client credentials tokens and client certificates.
    Service,
    ApiKey,
}

/// How the caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethodKind {
    Jwt,
    ApiKey,
    Mtls,
    Introspection,
}

impl From<&palisade_core::config::AuthMethod> for AuthMethodKind {
    fn from(method: &palisade_core::config::AuthMethod) -> Self {
        use palisade_core::config::AuthMethod;
        match method {
            AuthMethod::Jwt(_) => AuthMethodKind::Jwt,
            AuthMethod::ApiKey => AuthMethodKind::ApiKey,
            AuthMethod::Mtls => AuthMethodKind::Mtls,
            AuthMethod::Introspection(_) => AuthMethodKind::Introspection,
        }
    }
}

impl AuthMethodKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethodKind::Jwt => "jwt",
            AuthMethodKind::ApiKey => "api_key",
            AuthMethodKind::Mtls => "mtls",
            AuthMethodKind::Introspection => "introspection",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Principal {
    pub kind: PrincipalKind,
    pub method: AuthMethodKind,
    pub subject: String,
    /// The issuer (JWT `iss`), the CA-verified certificate's issuer, or `api_keys`.
    pub issuer: String,
    pub scopes: Vec<String>,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
    /// All claims of the token (or introspection answer); empty for API keys and certificates.
    pub claims: Map<String, Value>,
    /// Unix time after which the identity must be verified again, when the credential says.
    pub expires_at: Option<u64>,
}

impl Principal {
    /// Builds a principal from verified claims with the provider's claim mapping. `None` when the
    /// subject claim is missing or not a string: an identity without a subject is refused.
    pub fn from_claims(
        method: AuthMethodKind,
        issuer: String,
        claims: Map<String, Value>,
        mapping: &ClaimMapping,
    ) -> Option<Principal> {
        let subject = claim_at(&claims, &mapping.subject)?.as_str()?.to_string();
        let scopes = strings_at(&claims, &mapping.scopes);
        let roles = strings_at(&claims, &mapping.roles);
        let groups = strings_at(&claims, &mapping.groups);
        // Client-credentials tokens are issued to a client, not a person: their subject is the client.
        let client = ["client_id", "azp"]
            .iter()
            .find_map(|name| claims.get(*name).and_then(Value::as_str));
        let kind = if client == Some(subject.as_str()) {
            PrincipalKind::Service
        } else {
            PrincipalKind::User
        };
        let expires_at = claims.get("exp").and_then(Value::as_u64);
        Some(Principal {
            kind,
            method,
            subject,
            issuer,
            scopes,
            roles,
            groups,
            claims,
            expires_at,
        })
    }

    /// Rough heap size, for bounding caches by memory.
    pub fn weight(&self) -> u32 {
        let strings: usize = [&self.scopes, &self.roles, &self.groups]
            .iter()
            .flat_map(|list| list.iter())
            .map(|s| s.len() + 24)
            .sum();
        let claims = serde_json::to_vec(&self.claims).map_or(0, |v| v.len() * 3);
        let total = 256 + self.subject.len() + self.issuer.len() + strings + claims;
        u32::try_from(total).unwrap_or(u32::MAX)
    }
}

/// A claim by dotted path: `realm_access.roles` → `claims["realm_access"]["roles"]`. A claim whose
/// own name contains a dot (`https://example.com/roles`) is found by its full name first.
pub fn claim_at<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(path) {
        return Some(value);
    }
    let mut parts = path.split('.');
    let mut current = claims.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

/// Values at all `paths`, each a space-separated string (`scope`) or an array of strings (`scp`).
fn strings_at(claims: &Map<String, Value>, paths: &[String]) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for path in paths {
        match claim_at(claims, path) {
            Some(Value::String(text)) => found.extend(text.split_whitespace().map(str::to_string)),
            Some(Value::Array(items)) => found.extend(items.iter().filter_map(Value::as_str).map(str::to_string)),
            _ => {}
        }
    }
    found.sort();
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn scopes_roles_and_groups_come_from_strings_arrays_and_nested_paths() {
        let claims = claims(json!({
            "sub": "alice", "scope": "orders:read orders:write", "scp": ["admin:read"],
            "realm_access": {"roles": ["admin", "user"]}, "groups": ["/eng"], "exp": 2000000000u64
        }));
        let principal =
            Principal::from_claims(AuthMethodKind::Jwt, "iss".into(), claims, &ClaimMapping::default()).unwrap();
        assert_eq!(principal.scopes, ["admin:read", "orders:read", "orders:write"]);
        assert_eq!(principal.roles, ["admin", "user"]);
        assert_eq!(principal.groups, ["/eng"]);
        assert_eq!(principal.kind, PrincipalKind::User);
        assert_eq!(principal.expires_at, Some(2_000_000_000));
    }

    #[test]
    fn a_client_credentials_token_is_a_service_and_a_missing_subject_is_refused() {
        let service = claims(json!({"sub": "billing", "client_id": "billing"}));
        let principal =
            Principal::from_claims(AuthMethodKind::Jwt, "i".into(), service, &ClaimMapping::default()).unwrap();
        assert_eq!(principal.kind, PrincipalKind::Service);
        let no_subject = claims(json!({"scope": "a"}));
        assert!(
            Principal::from_claims(AuthMethodKind::Jwt, "i".into(), no_subject, &ClaimMapping::default()).is_none()
        );
        let numeric_subject = claims(json!({"sub": 7}));
        assert!(Principal::from_claims(
            AuthMethodKind::Jwt,
            "i".into(),
            numeric_subject,
            &ClaimMapping::default()
        )
        .is_none());
    }
}
