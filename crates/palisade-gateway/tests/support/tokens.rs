//! Token minting for tests: an ES256 key made per test run and the RSA test key in `fixtures/`,
//! plus helpers to forge tokens by hand for the attack cases.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

pub const ISSUER: &str = "https://idp.test";
pub const AUDIENCE: &str = "orders-api";
pub const RSA_PRIVATE: &[u8] = include_bytes!("../fixtures/test-rsa-key.pem");
pub const RSA_PUBLIC: &[u8] = include_bytes!("../fixtures/test-rsa-public.pem");
pub const RSA_JWKS: &str = include_str!("../fixtures/test-rsa-jwks.json");

/// An ES256 signing key with its public JWK.
pub struct EcKey {
    pub kid: String,
    pub encoding: EncodingKey,
    pub jwk: Value,
}

impl EcKey {
    pub fn generate(kid: &str) -> EcKey {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let point = pair.public_key_raw();
        EcKey {
            kid: kid.to_string(),
            encoding: EncodingKey::from_ec_der(&pair.serialize_der()),
            jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65])}),
        }
    }

    pub fn sign(&self, claims: &Value) -> String {
        sign_with(Algorithm::ES256, Some(&self.kid), claims, &self.encoding)
    }
}

pub fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap()
}

pub fn rsa_jwk() -> Value {
    let set: Value = serde_json::from_str(RSA_JWKS).unwrap();
    set["keys"][0].clone()
}

pub fn jwks<'a>(keys: impl IntoIterator<Item = &'a Value>) -> Value {
    json!({ "keys": keys.into_iter().collect::<Vec<_>>() })
}

pub fn sign_with(algorithm: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Valid claims for `sub`, for the test issuer and audience, expiring in ten minutes.
pub fn claims(sub: &str) -> Value {
    let now = now();
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 600,
           "scope": "orders:read orders:write", "realm_access": {"roles": ["clerk"]}})
}

pub fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

/// A token assembled by hand: any header, any claims, any signature text.
pub fn forge(header: &Value, claims: &Value, signature: &str) -> String {
    format!("{}.{}.{signature}", b64(header), b64(claims))
}

/// The provider block used by most tests: inline JWKS, the test issuer and audience.
pub fn provider_yaml(name: &str, jwks: &Value, extra: &str) -> String {
    format!(
        "    {name}:\n      issuer: {ISSUER}\n      audiences: [{AUDIENCE}]\n      keys:\n        jwks: '{}'\n{extra}",
        serde_json::to_string(jwks).unwrap()
    )
}
