//! A verification key set. Each key is bound to the algorithms its type allows (RSA → RS*/PS*,
//! P-256 → ES256, P-384 → ES384, Ed25519 → EdDSA, a shared secret → HS*), and narrowed further by
//! the JWK's own `alg`. A token's `alg` therefore can never make a key verify with another
//! algorithm: an RSA public key can never verify an HS256 token.

use std::str::FromStr;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use sha2::Digest;

pub struct VerificationKey {
    pub kid: Option<String>,
    pub algorithms: Vec<Algorithm>,
    pub key: DecodingKey,
}

#[derive(Default)]
pub struct KeySet {
    pub keys: Vec<VerificationKey>,
    /// Identifies the content, to tell whether a refresh changed anything.
    pub fingerprint: String,
}

const RSA_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

impl KeySet {
    /// Parses a JWK Set. Keys that are not signature keys, are symmetric, or cannot be parsed are
    /// skipped (and counted in the second value) so that one odd key does not take down the rest.
    pub fn from_jwks(document: &Value) -> Result<(KeySet, usize), String> {
        let Some(entries) = document.get("keys").and_then(Value::as_array) else {
            return Err("not a JWK Set: no `keys` array".into());
        };
        let mut keys = Vec::new();
        let mut skipped = 0;
        for entry in entries {
            match serde_json::from_value::<Jwk>(entry.clone())
                .ok()
                .and_then(|jwk| verification_key(&jwk))
            {
                Some(key) => keys.push(key),
                None => skipped += 1,
            }
        }
        let fingerprint = serde_json::to_string(entries).unwrap_or_default();
        Ok((KeySet { keys, fingerprint }, skipped))
    }

    /// A set holding one HMAC secret, usable only with the HS* algorithms listed.
    pub fn from_secret(secret: &[u8], algorithms: Vec<Algorithm>) -> KeySet {
        let key = VerificationKey {
            kid: None,
            algorithms: algorithms
                .into_iter()
                .filter(|a| matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512))
                .collect(),
            key: DecodingKey::from_secret(secret),
        };
        // The digest, not the secret: the fingerprint is compared and kept, never shown.
        let digest = sha2::Sha256::digest(secret);
        KeySet {
            keys: vec![key],
            fingerprint: digest.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    /// Keys that may verify a token with this `alg` and `kid`: keys of a compatible type whose id is
    /// the token's `kid`. A token without `kid`, or a key without one, leaves the id unconstrained
    /// (the key still comes only from this set).
    pub fn candidates<'a>(
        &'a self,
        algorithm: Algorithm,
        kid: Option<&'a str>,
    ) -> impl Iterator<Item = &'a VerificationKey> + 'a {
        self.keys.iter().filter(move |key| {
            let id_matches = kid.is_none() || key.kid.is_none() || key.kid.as_deref() == kid;
            key.algorithms.contains(&algorithm) && id_matches
        })
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

fn verification_key(jwk: &Jwk) -> Option<VerificationKey> {
    if matches!(&jwk.common.public_key_use, Some(usage) if *usage != PublicKeyUse::Signature) {
        return None;
    }
    let by_type: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => RSA_ALGORITHMS.to_vec(),
        AlgorithmParameters::EllipticCurve(params) => match params.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(params) if params.curve == EllipticCurve::Ed25519 => vec![Algorithm::EdDSA],
        // Symmetric keys never come from a key set: anyone who can read the set could sign.
        _ => return None,
    };
    let algorithms = match jwk.common.key_algorithm {
        Some(declared) => {
            let declared = declared_algorithm(declared)?;
            if !by_type.contains(&declared) {
                return None;
            }
            vec![declared]
        }
        None => by_type,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(VerificationKey {
        kid: jwk.common.key_id.clone(),
        algorithms,
        key,
    })
}

fn declared_algorithm(declared: KeyAlgorithm) -> Option<Algorithm> {
    Algorithm::from_str(&declared.to_string()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // A P-256 public key (RFC 7515 appendix A.3).
    fn ec_jwk(kid: &str, alg: Option<&str>) -> Value {
        let mut jwk = json!({
            "kty": "EC", "crv": "P-256", "kid": kid,
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRjm7AK_B0F83ZQ91v7e2S6i_xq7X0xxNAgDfvs"
        });
        if let Some(alg) = alg {
            jwk["alg"] = json!(alg);
        }
        jwk
    }

    #[test]
    fn keys_are_bound_to_the_algorithms_of_their_type() {
        let (set, skipped) = KeySet::from_jwks(&json!({"keys": [ec_jwk("a", None)]})).unwrap();
        assert_eq!(skipped, 0);
        assert_eq!(set.candidates(Algorithm::ES256, Some("a")).count(), 1);
        assert_eq!(set.candidates(Algorithm::ES384, Some("a")).count(), 0);
        assert_eq!(set.candidates(Algorithm::HS256, Some("a")).count(), 0);
        assert_eq!(set.candidates(Algorithm::RS256, None).count(), 0);
        assert_eq!(set.candidates(Algorithm::ES256, Some("b")).count(), 0);
        let mut anonymous = ec_jwk("x", None);
        anonymous.as_object_mut().unwrap().remove("kid");
        let (set, _) = KeySet::from_jwks(&json!({"keys": [anonymous]})).unwrap();
        assert_eq!(set.candidates(Algorithm::ES256, Some("any")).count(), 1);
        assert_eq!(set.candidates(Algorithm::RS256, Some("any")).count(), 0);
    }

    #[test]
    fn symmetric_encryption_and_mismatched_keys_are_skipped() {
        let document = json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0", "kid": "hmac"},
            ec_jwk("wrong-alg", Some("RS256")),
            {"kty": "EC", "crv": "P-256", "use": "enc", "kid": "enc",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRjm7AK_B0F83ZQ91v7e2S6i_xq7X0xxNAgDfvs"},
            {"kty": "XYZ", "kid": "unknown"},
            ec_jwk("ok", Some("ES256")),
        ]});
        let (set, skipped) = KeySet::from_jwks(&document).unwrap();
        assert_eq!(skipped, 4);
        assert_eq!(set.keys.len(), 1);
        assert!(set.has_kid("ok"));
        assert!(KeySet::from_jwks(&json!({"nokeys": []})).is_err());
    }
}
