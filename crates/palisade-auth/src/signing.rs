//! Signing keys the gateway holds: its own internal-token key, the demo's key, and keys that
//! `palisade token` loads to mint test tokens. Each knows its JWS algorithm (from the key type, never
//! from the caller) and its public JWK.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    #[error("cannot read the private key: {0}")]
    Parse(String),
    #[error("unsupported key type; use an RSA, P-256, P-384 or Ed25519 private key")]
    Unsupported,
    #[error("cannot sign: {0}")]
    Sign(String),
}

pub struct SigningKey {
    pub algorithm: Algorithm,
    pub kid: String,
    key: EncodingKey,
    jwk: Value,
}

impl SigningKey {
    /// A fresh P-256 key (ES256).
    pub fn generate_es256() -> Result<SigningKey, SigningKeyError> {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| SigningKeyError::Parse(e.to_string()))?;
        Self::from_key_pair(&pair)
    }

    /// A PEM private key (PKCS#8; RSA, P-256, P-384 or Ed25519).
    pub fn from_pem(pem: &str) -> Result<SigningKey, SigningKeyError> {
        let pair = rcgen::KeyPair::from_pem(pem).map_err(|e| SigningKeyError::Parse(e.to_string()))?;
        Self::from_key_pair(&pair)
    }

    fn from_key_pair(pair: &rcgen::KeyPair) -> Result<SigningKey, SigningKeyError> {
        let der = pair.serialize_der();
        let spki = rcgen::PublicKeyData::subject_public_key_info(pair);
        let kid = URL_SAFE_NO_PAD.encode(&Sha256::digest(&spki)[..12]);
        let (_, info) = SubjectPublicKeyInfo::from_der(&spki).map_err(|e| SigningKeyError::Parse(e.to_string()))?;
        let (algorithm, key, mut jwk) = match info.parsed().map_err(|_| SigningKeyError::Unsupported)? {
            PublicKey::RSA(rsa) => (
                Algorithm::RS256,
                EncodingKey::from_rsa_der(&rsa_pkcs1(pair)?),
                json!({"kty": "RSA", "n": b64(trim_zeros(rsa.modulus)), "e": b64(trim_zeros(rsa.exponent))}),
            ),
            PublicKey::EC(point) => {
                let point = point.data();
                let (algorithm, curve, size) = match point.len() {
                    65 => (Algorithm::ES256, "P-256", 32),
                    97 => (Algorithm::ES384, "P-384", 48),
                    _ => return Err(SigningKeyError::Unsupported),
                };
                let jwk = json!({"kty": "EC", "crv": curve,
                    "x": b64(&point[1..1 + size]), "y": b64(&point[1 + size..])});
                (algorithm, EncodingKey::from_ec_der(&der), jwk)
            }
            _ if pair.algorithm() == &rcgen::PKCS_ED25519 => {
                let raw = info.subject_public_key.data.to_vec();
                (
                    Algorithm::EdDSA,
                    EncodingKey::from_ed_der(&der),
                    json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&raw)}),
                )
            }
            _ => return Err(SigningKeyError::Unsupported),
        };
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        jwk["alg"] = json!(format!("{algorithm:?}"));
        Ok(SigningKey {
            algorithm,
            kid,
            key,
            jwk,
        })
    }

    /// The public key as a JWK Set.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk] })
    }

    pub fn sign(&self, claims: &Value) -> Result<String, SigningKeyError> {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).map_err(|e| SigningKeyError::Sign(e.to_string()))
    }
}

/// jsonwebtoken's RSA signer wants PKCS#1; rcgen hands out PKCS#8, which wraps it.
fn rsa_pkcs1(pair: &rcgen::KeyPair) -> Result<Vec<u8>, SigningKeyError> {
    let der = pair.serialize_der();
    let (_, info) =
        x509_parser::der_parser::der::parse_der_sequence(&der).map_err(|e| SigningKeyError::Parse(e.to_string()))?;
    let items = info.as_sequence().map_err(|e| SigningKeyError::Parse(e.to_string()))?;
    let octets = items
        .get(2)
        .and_then(|item| item.as_slice().ok())
        .ok_or_else(|| SigningKeyError::Parse("not a PKCS#8 RSA key".into()))?;
    Ok(octets.to_vec())
}

fn trim_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::keys::KeySet;

    fn verifies(key: &SigningKey) {
        let token = key.sign(&json!({"sub": "t", "exp": 4_000_000_000u64})).unwrap();
        let (set, skipped) = KeySet::from_jwks(&key.jwks()).unwrap();
        assert_eq!(skipped, 0);
        let candidate = set
            .candidates(key.algorithm, Some(&key.kid))
            .next()
            .expect("a key for the algorithm");
        let validation = jsonwebtoken::Validation::new(key.algorithm);
        jsonwebtoken::decode::<Value>(&token, &candidate.key, &validation).expect("verifies");
    }

    #[test]
    fn generated_and_loaded_keys_sign_tokens_their_jwks_verifies() {
        verifies(&SigningKey::generate_es256().unwrap());
        for algorithm in [&rcgen::PKCS_ECDSA_P384_SHA384, &rcgen::PKCS_ED25519] {
            let pem = rcgen::KeyPair::generate_for(algorithm).unwrap().serialize_pem();
            verifies(&SigningKey::from_pem(&pem).unwrap());
        }
        let rsa = include_str!("../../palisade-gateway/tests/fixtures/test-rsa-key.pem");
        let key = SigningKey::from_pem(rsa).unwrap();
        assert_eq!(key.algorithm, Algorithm::RS256);
        verifies(&key);
        assert!(SigningKey::from_pem("not a key").is_err());
    }
}
