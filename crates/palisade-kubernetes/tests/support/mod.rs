//! A Kubernetes API server as the identity service sees it: HTTPS on 127.0.0.1 with its own CA,
//! OIDC discovery and the JWK Set behind a bearer token (as kube-apiserver serves them to
//! ServiceAccounts), the TokenReview API, and tokens minted in exactly kube-apiserver's format.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{json, Value};

pub const AUDIENCE: &str = "palisade-ca";
pub const TRUST_DOMAIN: &str = "cluster.test";
/// What the identity service presents to the API server (its own ServiceAccount token).
pub const READER_TOKEN: &str = "identity-service-own-token";
const RSA_PRIVATE: &[u8] = include_bytes!("../fixtures/cluster-signing-key.pem");
const RSA_JWKS: &str = include_str!("../fixtures/cluster-jwks.json");
pub const RSA_KID: &str = "rsa-1";
pub const EC_KID: &str = "ec-1";

/// An ES256 key (kube-apiserver accepts ECDSA signing keys too; a cluster can have several).
pub struct EcKey {
    pub encoding: EncodingKey,
    pub jwk: Value,
}

impl EcKey {
    pub fn generate(kid: &str) -> EcKey {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let point = pair.public_key_raw();
        EcKey {
            encoding: EncodingKey::from_ec_der(&pair.serialize_der()),
            jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65])}),
        }
    }
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// The claims kube-apiserver puts in a projected ServiceAccount token (v1.30+: with the node).
pub fn pod_token_claims(issuer: &str, namespace: &str, service_account: &str, pod: &str) -> Value {
    let now = now();
    json!({
        "aud": [AUDIENCE],
        "exp": now + 3600,
        "iat": now,
        "iss": issuer,
        "jti": "0b7e2ab4-8f0a-4a53-9d0e-4f7d2c1b9e11",
        "kubernetes.io": {
            "namespace": namespace,
            "node": {"name": "node-a", "uid": "5a9f3c4e-0000-4000-8000-000000000001"},
            "pod": {"name": pod, "uid": format!("{pod}-uid")},
            "serviceaccount": {"name": service_account, "uid": "7d2c1b9e-0000-4000-8000-000000000002"}
        },
        "nbf": now,
        "sub": format!("system:serviceaccount:{namespace}:{service_account}"),
    })
}

pub struct Cluster {
    pub address: SocketAddr,
    pub issuer: String,
    /// The API server's CA (PEM file), as a pod finds it in its ServiceAccount volume.
    pub ca_file: PathBuf,
    /// The identity service's own token file.
    pub reader_token_file: PathBuf,
    pub ec: EcKey,
    /// Requests that came without the reader's bearer token.
    pub unauthenticated: Arc<AtomicUsize>,
    pub reviews: Arc<AtomicUsize>,
}

impl Cluster {
    pub async fn start(dir: &Path) -> Cluster {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let issuer = format!("https://{address}");
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let ca_file = dir.join("apiserver-ca.crt");
        std::fs::write(&ca_file, certified.cert.pem()).unwrap();
        let reader_token_file = dir.join("reader-token");
        std::fs::write(&reader_token_file, format!("{READER_TOKEN}\n")).unwrap();
        let ec = EcKey::generate(EC_KID);
        let mut jwks: Value = serde_json::from_str(RSA_JWKS).unwrap();
        jwks["keys"].as_array_mut().unwrap().push(ec.jwk.clone());
        let state = Arc::new(ApiState {
            issuer: issuer.clone(),
            jwks,
            unauthenticated: Arc::default(),
            reviews: Arc::default(),
        });
        let key = rustls_pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der()).unwrap();
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(palisade_tls::provider()))
            .with_protocol_versions(palisade_tls::PROTOCOL_VERSIONS)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let serving = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, state) = (acceptor.clone(), serving.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(state.answer(request).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Cluster {
            address,
            issuer,
            ca_file,
            reader_token_file,
            ec,
            unauthenticated: state.unauthenticated.clone(),
            reviews: state.reviews.clone(),
        }
    }

    /// A token signed with the cluster's RSA key.
    pub fn sign(&self, claims: &Value) -> String {
        sign(
            Algorithm::RS256,
            Some(RSA_KID),
            claims,
            &EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap(),
        )
    }

    pub fn pod_token(&self, namespace: &str, service_account: &str, pod: &str) -> String {
        self.sign(&pod_token_claims(&self.issuer, namespace, service_account, pod))
    }
}

pub fn sign(algorithm: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(algorithm);
    header.typ = None;
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

/// An `alg: none` token: `header.claims.` followed by `signature` (empty in the classic attack).
pub fn unsigned(claims: &Value, signature: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "kid": RSA_KID}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.{signature}")
}

struct ApiState {
    issuer: String,
    jwks: Value,
    unauthenticated: Arc<AtomicUsize>,
    reviews: Arc<AtomicUsize>,
}

impl ApiState {
    async fn answer(&self, request: http::Request<hyper::body::Incoming>) -> http::Response<Full<Bytes>> {
        let authorized = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            == Some(&format!("Bearer {READER_TOKEN}"));
        if !authorized {
            self.unauthenticated.fetch_add(1, Ordering::SeqCst);
            return reply(
                401,
                json!({"kind": "Status", "status": "Failure", "reason": "Unauthorized", "code": 401}),
            );
        }
        match (request.method().as_str(), request.uri().path()) {
            ("GET", "/.well-known/openid-configuration") => reply(
                200,
                json!({
                    "issuer": self.issuer,
                    "jwks_uri": format!("{}/openid/v1/jwks", self.issuer),
                    "response_types_supported": ["id_token"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                }),
            ),
            ("GET", "/openid/v1/jwks") => reply(200, self.jwks.clone()),
            ("POST", "/apis/authentication.k8s.io/v1/tokenreviews") => {
                self.reviews.fetch_add(1, Ordering::SeqCst);
                let body = request.into_body().collect().await.unwrap().to_bytes();
                let review: Value = serde_json::from_slice(&body).unwrap();
                reply(201, self.review(&review))
            }
            _ => reply(404, json!({"kind": "Status", "code": 404})),
        }
    }

    /// What kube-apiserver answers: the token verified against the cluster's keys for the asked
    /// audiences.
    fn review(&self, review: &Value) -> Value {
        let token = review["spec"]["token"].as_str().unwrap_or_default();
        let audiences: Vec<String> = review["spec"]["audiences"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        let mut validation = Validation::new(Algorithm::RS256);
        validation.algorithms = vec![Algorithm::RS256];
        validation.set_audience(&audiences);
        validation.set_issuer(&[&self.issuer]);
        let key = DecodingKey::from_jwk(&serde_json::from_value(self.jwks["keys"][0].clone()).unwrap()).unwrap();
        let status = match jsonwebtoken::decode::<Value>(token, &key, &validation) {
            Ok(data) => {
                let k = &data.claims["kubernetes.io"];
                json!({"authenticated": true, "audiences": audiences, "user": {
                    "username": data.claims["sub"],
                    "uid": k["serviceaccount"]["uid"],
                    "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{}", k["namespace"].as_str().unwrap_or_default()), "system:authenticated"],
                    "extra": {
                        "authentication.kubernetes.io/pod-name": [k["pod"]["name"]],
                        "authentication.kubernetes.io/pod-uid": [k["pod"]["uid"]],
                    }
                }})
            }
            Err(error) => json!({"authenticated": false, "error": error.to_string()}),
        };
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "metadata": {"creationTimestamp": null},
            "spec": review["spec"].clone(), "status": status})
    }
}

fn reply(status: u16, body: Value) -> http::Response<Full<Bytes>> {
    let mut response = http::Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// Audit lines in `path` once `wanted` of them say `event` (waits up to 10 s).
pub async fn audit_lines(path: &Path, event: &str, wanted: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["unmapped"]["event"] == event)
            .collect();
        if lines.len() >= wanted || tokio::time::Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
