//! What the upstream learns about the caller: headers rendered from the principal, and optionally
//! a short-lived internal JWT signed with the gateway's own ES256 key, so that a service can verify
//! that a request came through the gateway (the key set is served on the admin listener).

use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderName, HeaderValue};
use palisade_core::config::auth::{IdentityConfig, InternalTokenConfig};
use serde_json::{json, Value};

use crate::principal::claim_at;
use crate::signing::SigningKey;
use crate::Principal;

/// Headers with this prefix are the gateway's; a client can never set them.
pub const RESERVED_PREFIX: &str = "x-palisade-";

enum Part {
    Literal(String),
    Subject,
    Issuer,
    Kind,
    Method,
    Scopes,
    Roles,
    Groups,
    Claim(String),
}

struct HeaderTemplate {
    name: HeaderName,
    parts: Vec<Part>,
}

/// The compiled `authentication.identity` settings.
pub struct IdentityHeaders {
    templates: Vec<HeaderTemplate>,
    /// Every header name a client must not be able to send: the templates' and the internal token's.
    pub protected: Vec<HeaderName>,
    pub strip_authorization: bool,
    internal: Option<(HeaderName, InternalTokenConfig)>,
}

impl IdentityHeaders {
    /// Header names were validated at load; a template with an unknown placeholder is `Err`.
    pub fn compile(config: &IdentityConfig) -> Result<IdentityHeaders, String> {
        let mut templates = Vec::new();
        for (name, template) in &config.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("{name:?} is not a header name"))?;
            templates.push(HeaderTemplate {
                name,
                parts: parse_template(template)?,
            });
        }
        let internal = match &config.internal_token {
            Some(settings) => {
                let name = HeaderName::from_bytes(settings.header.as_bytes())
                    .map_err(|_| format!("{:?} is not a header name", settings.header))?;
                Some((name, settings.clone()))
            }
            None => None,
        };
        let mut protected: Vec<HeaderName> = templates.iter().map(|t| t.name.clone()).collect();
        protected.extend(internal.iter().map(|(name, _)| name.clone()));
        Ok(IdentityHeaders {
            templates,
            protected,
            strip_authorization: config.strip_authorization,
            internal,
        })
    }

    /// Whether a client-sent header must be removed before forwarding.
    pub fn is_protected(&self, name: &HeaderName) -> bool {
        name.as_str().starts_with(RESERVED_PREFIX) || self.protected.contains(name)
    }

    /// The headers to add for `principal`. A value that cannot be a header value (control
    /// characters in a claim) is left out rather than forwarded half-escaped.
    pub fn render(&self, principal: &Principal, signer: &InternalSigner) -> Vec<(HeaderName, HeaderValue)> {
        let mut rendered = Vec::with_capacity(self.templates.len() + 1);
        for template in &self.templates {
            let text = render_template(&template.parts, principal);
            if let Ok(value) = HeaderValue::from_str(&text) {
                rendered.push((template.name.clone(), value));
            }
        }
        if let Some((name, settings)) = &self.internal {
            if let Some(value) = signer
                .mint(principal, settings)
                .and_then(|t| HeaderValue::from_str(&t).ok())
            {
                rendered.push((name.clone(), value));
            }
        }
        rendered
    }
}

fn parse_template(template: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(Part::Literal(rest[..open].to_string()));
        }
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("unclosed placeholder in {template:?}"))?;
        let field = &rest[open + 1..open + close];
        parts.push(match field {
            "sub" => Part::Subject,
            "iss" => Part::Issuer,
            "kind" => Part::Kind,
            "method" => Part::Method,
            "scopes" => Part::Scopes,
            "roles" => Part::Roles,
            "groups" => Part::Groups,
            other => match other.strip_prefix("claims.") {
                Some(path) if !path.is_empty() => Part::Claim(path.to_string()),
                _ => return Err(format!("unknown placeholder {{{other}}} in {template:?}")),
            },
        });
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Literal(rest.to_string()));
    }
    Ok(parts)
}

fn render_template(parts: &[Part], principal: &Principal) -> String {
    let mut text = String::new();
    for part in parts {
        match part {
            Part::Literal(literal) => text.push_str(literal),
            Part::Subject => text.push_str(&principal.subject),
            Part::Issuer => text.push_str(&principal.issuer),
            Part::Kind => text.push_str(kind_name(principal)),
            Part::Method => text.push_str(principal.method.as_str()),
            Part::Scopes => text.push_str(&principal.scopes.join(" ")),
            Part::Roles => text.push_str(&principal.roles.join(",")),
            Part::Groups => text.push_str(&principal.groups.join(",")),
            Part::Claim(path) => match claim_at(&principal.claims, path) {
                Some(Value::String(value)) => text.push_str(value),
                Some(other) => text.push_str(&other.to_string()),
                None => {}
            },
        }
    }
    text
}

fn kind_name(principal: &Principal) -> &'static str {
    match principal.kind {
        crate::PrincipalKind::User => "user",
        crate::PrincipalKind::Service => "service",
        crate::PrincipalKind::ApiKey => "api_key",
    }
}

/// The gateway's own signing key for internal tokens. Generated at start and kept across reloads;
/// it never leaves the process.
pub struct InternalSigner {
    key: SigningKey,
    jwks: Value,
}

impl InternalSigner {
    pub fn generate() -> Result<InternalSigner, String> {
        let key = SigningKey::generate_es256().map_err(|e| e.to_string())?;
        let jwks = key.jwks();
        Ok(InternalSigner { key, jwks })
    }

    /// The public key set, served at `/.well-known/jwks.json` on the admin listener.
    pub fn jwks(&self) -> &Value {
        &self.jwks
    }

    fn mint(&self, principal: &Principal, settings: &InternalTokenConfig) -> Option<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        let mut claims = json!({
            "iss": settings.issuer,
            "sub": principal.subject,
            "iat": now,
            "exp": now + settings.ttl.get().as_secs(),
            "palisade_kind": kind_name(principal),
            "palisade_method": principal.method.as_str(),
            "palisade_issuer": principal.issuer,
            "scope": principal.scopes.join(" "),
            "roles": principal.roles,
            "groups": principal.groups,
        });
        if let Some(audience) = &settings.audience {
            claims["aud"] = json!(audience);
        }
        self.key.sign(&claims).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::{AuthMethodKind, PrincipalKind};

    fn alice() -> Principal {
        let claims = json!({"sub": "alice", "tenant": {"id": "t-1"}, "bad": "a\nb"});
        Principal {
            kind: PrincipalKind::User,
            method: AuthMethodKind::Jwt,
            subject: "alice".into(),
            issuer: "https://idp".into(),
            scopes: vec!["a".into(), "b".into()],
            roles: vec!["admin".into()],
            groups: vec![],
            claims: claims.as_object().cloned().unwrap(),
            expires_at: None,
        }
    }

    #[test]
    fn templates_render_principal_fields_and_skip_unsafe_values() {
        let mut config = IdentityConfig::default();
        config
            .headers
            .insert("x-tenant".into(), "tenant={claims.tenant.id}".into());
        config.headers.insert("x-bad".into(), "{claims.bad}".into());
        let identity = IdentityHeaders::compile(&config).unwrap();
        let signer = InternalSigner::generate().unwrap();
        let rendered: std::collections::HashMap<String, String> = identity
            .render(&alice(), &signer)
            .into_iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        assert_eq!(rendered["x-palisade-subject"], "alice");
        assert_eq!(rendered["x-palisade-scopes"], "a b");
        assert_eq!(rendered["x-tenant"], "tenant=t-1");
        assert!(!rendered.contains_key("x-bad"));
        assert!(identity.is_protected(&HeaderName::from_static("x-tenant")));
        assert!(identity.is_protected(&HeaderName::from_static("x-palisade-anything")));
        assert!(!identity.is_protected(&HeaderName::from_static("x-other")));
        config.headers.insert("x-oops".into(), "{password}".into());
        assert!(IdentityHeaders::compile(&config).is_err());
    }

    #[test]
    fn internal_tokens_verify_against_the_published_key_set() {
        let signer = InternalSigner::generate().unwrap();
        let settings = InternalTokenConfig {
            header: "x-palisade-token".into(),
            ttl: palisade_core::units::Duration::from_secs(30),
            issuer: "palisade".into(),
            audience: Some("orders".into()),
        };
        let token = signer.mint(&alice(), &settings).unwrap();
        let (set, _) = crate::jwt::keys::KeySet::from_jwks(signer.jwks()).unwrap();
        let key = set
            .candidates(jsonwebtoken::Algorithm::ES256, Some(&signer.key.kid))
            .next()
            .unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        validation.set_audience(&["orders"]);
        let data = jsonwebtoken::decode::<Value>(&token, &key.key, &validation).unwrap();
        assert_eq!(data.claims["sub"], "alice");
        assert!(data.claims["exp"].as_u64().unwrap() - data.claims["iat"].as_u64().unwrap() <= 60);
    }
}
