//! `palisade ca serve`: the identity service. Workloads send a CSR (their private key never leaves
//! them) and prove who they are for their first certificate with a one-time join token or with a
//! credential an attestor checks (a Kubernetes ServiceAccount token), and with their current
//! certificate (mutual TLS) for a renewal. Every issuance and every refusal is an audit event.
//!
//! ```text
//! POST /v1/certificates  {"csr": PEM, "join_token"? | "service_account_token"?: "…", "ttl_seconds"?: N}
//!                        → {"spiffe_id", "certificate_chain", "trust_bundle", "expires_at"}
//! GET  /v1/bundle        → the trust bundle (PEM), so that workloads follow root rotations
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use palisade_telemetry::{AuditEvent, AuditLog, EventKind};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::attest::{Attested, WorkloadAttestor};
use crate::ca::{unix_seconds, BUNDLE};
use crate::dynamic::DelegatingClientVerifier;
use crate::spiffe::SpiffeId;
use crate::tokens::{self, TokenError};
use crate::verify::{load_bundle, spiffe_id_of, TrustDomainClientVerifier};
use crate::{CaError, CertificateAuthority, LeafRequest};

/// The path below the trust domain that names the identity service itself.
pub const SERVICE_PATH: &str = "/palisade/ca";
const MAX_BODY: usize = 64 * 1024;
/// Shortest lifetime a workload may ask for.
const MIN_TTL: Duration = Duration::from_secs(60);
const REFRESH_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub dir: PathBuf,
    pub listen: SocketAddr,
    /// Lifetime of issued certificates unless the workload asks for less.
    pub default_ttl: Duration,
    /// The longest lifetime a workload may ask for.
    pub max_ttl: Duration,
    /// DNS names in the service's own certificate (for clients that check host names).
    pub dns_names: Vec<String>,
    /// Where issuances and refusals are recorded (OCSF Entity Management events).
    pub audit: Option<AuditLog>,
    /// Checks ServiceAccount tokens (first certificates without a join token).
    pub attestor: Option<Arc<dyn WorkloadAttestor>>,
    /// The CA directory is a read-only copy shared by replicas: nothing is written, so join
    /// tokens (which are spent by writing) are refused.
    pub read_only: bool,
}

impl std::fmt::Debug for dyn WorkloadAttestor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WorkloadAttestor({})", self.proof())
    }
}

/// The running service.
pub struct CaServer {
    pub address: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl CaServer {
    pub async fn start(options: ServeOptions) -> Result<CaServer, CaError> {
        let ca = open_ca(&options)?;
        let service_id = SpiffeId::parse(&format!("spiffe://{}{SERVICE_PATH}", ca.trust_domain()))
            .map_err(|e| CaError::Invalid(e.to_string()))?;
        let state = Arc::new(State {
            trust_domain: ca.trust_domain().to_string(),
            certificate: ArcSwap::from_pointee(service_certificate(&options, &service_id)?),
            verifier: Arc::new(ArcSwap::from_pointee(client_verifier(&options.dir, ca.trust_domain())?)),
            bundle_text: ArcSwap::from_pointee(ca.bundle_pem()?),
            service_id,
            options: options.clone(),
        });
        let listener = TcpListener::bind(options.listen).await.map_err(|source| CaError::Io {
            path: PathBuf::from(options.listen.to_string()),
            source,
        })?;
        let address = listener.local_addr().map_err(|source| CaError::Io {
            path: PathBuf::from(options.listen.to_string()),
            source,
        })?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(listener, state, stopped));
        Ok(CaServer { address, stop, task })
    }

    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

struct State {
    trust_domain: String,
    service_id: SpiffeId,
    certificate: ArcSwap<CertifiedKey>,
    /// Replaced when the bundle changes; handshakes read the current one.
    verifier: Arc<ArcSwap<Arc<dyn ClientCertVerifier>>>,
    bundle_text: ArcSwap<String>,
    options: ServeOptions,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CaServer({})", self.service_id)
    }
}

impl ResolvesServerCert for State {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.certificate.load_full())
    }
}

async fn run(listener: TcpListener, state: Arc<State>, mut stopped: watch::Receiver<bool>) {
    let tls = match server_config(state.clone()) {
        Ok(config) => TlsAcceptor::from(config),
        Err(error) => {
            tracing::error!(%error, "identity service: TLS setup failed");
            return;
        }
    };
    let refresher = tokio::spawn(refresh(state.clone()));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.wait_for(|s| *s) => break,
        };
        let Ok((stream, peer)) = accepted else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        tokio::spawn(serve_connection(stream, peer, tls.clone(), state.clone()));
    }
    refresher.abort();
}

async fn serve_connection(stream: tokio::net::TcpStream, peer: SocketAddr, tls: TlsAcceptor, state: Arc<State>) {
    let stream = match tokio::time::timeout(Duration::from_secs(10), tls.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::info!(event = "tls_handshake_refused", %peer, detail = %error, "identity service: handshake refused");
            return;
        }
        Err(_) => return,
    };
    // The handshake verified the chain and the trust domain; this is the caller's identity, if any.
    let caller = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| spiffe_id_of(leaf).ok());
    let service = hyper::service::service_fn(move |request| {
        let state = state.clone();
        let caller = caller.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(&state, caller, peer, request).await) }
    });
    // A connection that stops sending mid-request is closed, not held open.
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    let _ = builder.serve_connection(TokioIo::new(stream), service).await;
}

async fn handle(
    state: &State,
    caller: Option<SpiffeId>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    match (request.method(), request.uri().path()) {
        (&Method::POST, "/v1/certificates") => sign(state, caller, peer, request).await,
        (&Method::GET, "/v1/bundle") => text(
            StatusCode::OK,
            "application/x-pem-file",
            state.bundle_text.load().to_string(),
        ),
        (&Method::GET, "/healthz") => text(StatusCode::OK, "text/plain", "ok\n"),
        _ => problem(StatusCode::NOT_FOUND, "not-found", "Not Found", None),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignRequest {
    csr: String,
    #[serde(default)]
    join_token: Option<String>,
    #[serde(default)]
    service_account_token: Option<String>,
    #[serde(default)]
    ttl_seconds: Option<u64>,
}

fn open_ca(options: &ServeOptions) -> Result<CertificateAuthority, CaError> {
    if options.read_only {
        CertificateAuthority::open_read_only(&options.dir)
    } else {
        CertificateAuthority::open(&options.dir)
    }
}

#[derive(Serialize)]
pub struct SignResponse {
    pub spiffe_id: String,
    pub certificate_chain: String,
    pub trust_bundle: String,
    pub expires_at: u64,
}

/// How the caller proved who it is.
#[derive(Clone, Copy)]
enum Proof {
    JoinToken,
    Renewal,
    /// A credential an attestor checked (`service_account_token`).
    Attested(&'static str),
}

impl Proof {
    fn as_str(self) -> &'static str {
        match self {
            Proof::JoinToken => "join_token",
            Proof::Renewal => "renewal",
            Proof::Attested(proof) => proof,
        }
    }
}

/// The one credential a request carries.
enum Credential {
    None,
    Certificate(SpiffeId),
    JoinToken(String),
    ServiceAccountToken(String),
}

async fn sign(
    state: &State,
    caller: Option<SpiffeId>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return problem(StatusCode::PAYLOAD_TOO_LARGE, "too-large", "Request too large", None),
    };
    let Ok(asked) = serde_json::from_slice::<SignRequest>(&body) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "invalid-request",
            "Bad Request",
            Some("expected JSON {\"csr\": PEM, \"join_token\"?: string, \"ttl_seconds\"?: number}"),
        );
    };
    // A malformed CSR is refused before a join token is spent on it.
    if let Err(CaError::Csr(message)) = CertificateAuthority::check_csr(&asked.csr) {
        audit_refusal(state, peer, caller.as_ref(), None, "invalid_csr");
        return problem(StatusCode::BAD_REQUEST, "invalid-csr", "Bad Request", Some(&message));
    }
    let credentials = [
        caller.map(Credential::Certificate),
        asked.join_token.map(Credential::JoinToken),
        asked.service_account_token.map(Credential::ServiceAccountToken),
    ];
    let mut given = credentials.into_iter().flatten();
    let credential = match (given.next(), given.next()) {
        (None, _) => Credential::None,
        (Some(one), None) => one,
        (Some(_), Some(_)) => {
            let detail = "one credential: the client certificate (renewal), a join token or a ServiceAccount token";
            return problem(StatusCode::BAD_REQUEST, "invalid-request", "Bad Request", Some(detail));
        }
    };
    let mut workload = None;
    let (id, proof) = match credential {
        Credential::Certificate(id) => (id, Proof::Renewal),
        Credential::None => {
            audit_refusal(state, peer, None, None, "no_credential");
            let detail =
                "present your current certificate, or a join token or ServiceAccount token for a first certificate";
            return problem(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "Unauthorized",
                Some(detail),
            );
        }
        Credential::ServiceAccountToken(token) => {
            let Some(attestor) = &state.options.attestor else {
                audit_refusal(state, peer, None, None, "attestation_not_configured");
                let detail = "this identity service does not accept ServiceAccount tokens";
                return problem(
                    StatusCode::UNAUTHORIZED,
                    "attestation-refused",
                    "Unauthorized",
                    Some(detail),
                );
            };
            match attestor.attest(&token).await {
                Ok(Attested {
                    spiffe_id,
                    workload: attested,
                }) => {
                    workload = Some(attested);
                    (spiffe_id, Proof::Attested(attestor.proof()))
                }
                Err(refused) => {
                    audit_refusal(state, peer, None, refused.workload.as_ref(), refused.reason);
                    if refused.unavailable {
                        let mut answer = problem(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "attestor-unavailable",
                            "Service Unavailable",
                            Some(refused.reason),
                        );
                        answer
                            .headers_mut()
                            .insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("5"));
                        return answer;
                    }
                    return problem(
                        StatusCode::UNAUTHORIZED,
                        "attestation-refused",
                        "Unauthorized",
                        Some(refused.reason),
                    );
                }
            }
        }
        Credential::JoinToken(_) if state.options.read_only => {
            audit_refusal(state, peer, None, None, "join_tokens_disabled");
            let detail = "this identity service runs on a read-only CA and does not accept join tokens";
            return problem(
                StatusCode::UNAUTHORIZED,
                "join-token-refused",
                "Unauthorized",
                Some(detail),
            );
        }
        Credential::JoinToken(token) => {
            let dir = state.options.dir.clone();
            let redeemed = tokio::task::spawn_blocking(move || tokens::redeem(&dir, &token, SystemTime::now())).await;
            match redeemed {
                Ok(Ok(Ok(id))) => (id, Proof::JoinToken),
                Ok(Ok(Err(refused))) => {
                    audit_refusal(state, peer, None, None, token_reason(&refused));
                    return problem(StatusCode::UNAUTHORIZED, "join-token-refused", "Unauthorized", None);
                }
                Ok(Err(error)) => return internal(&error),
                Err(_) => {
                    return problem(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        "Internal Server Error",
                        None,
                    )
                }
            }
        }
    };
    let ttl = asked
        .ttl_seconds
        .map(Duration::from_secs)
        .unwrap_or(state.options.default_ttl)
        .clamp(MIN_TTL, state.options.max_ttl.max(MIN_TTL));
    let options = state.options.clone();
    let leaf = LeafRequest::new(id.clone(), ttl);
    let csr = asked.csr;
    let signed = tokio::task::spawn_blocking(move || {
        let mut ca = open_ca(&options)?;
        ca.sign_csr(&csr, &leaf)
    })
    .await;
    match signed {
        Ok(Ok(issued)) => {
            let expires_at = unix_seconds(issued.not_after);
            tracing::info!(spiffe_id = %id, serial = %issued.serial, expires_at, proof = proof.as_str(), %peer, "certificate issued");
            if let Some(log) = &state.options.audit {
                let message = format!("certificate issued to {id} ({})", proof.as_str());
                let mut event = AuditEvent::new(EventKind::CertificateIssued, Some(proof.as_str()), message)
                    .with_certificate(id.as_str(), Some(&issued.serial), Some(expires_at))
                    .with_source(peer.ip(), Some(peer.port()));
                if let Some(workload) = &workload {
                    event = event.with_workload(workload_facts(workload));
                }
                log.record(event);
            }
            let response = SignResponse {
                spiffe_id: id.to_string(),
                certificate_chain: issued.chain_pem,
                trust_bundle: issued.bundle_pem,
                expires_at,
            };
            let body = serde_json::to_vec(&response).unwrap_or_default();
            json(StatusCode::OK, body)
        }
        Ok(Err(CaError::Csr(message))) => {
            audit_refusal(state, peer, Some(&id), workload.as_ref(), "invalid_csr");
            problem(StatusCode::BAD_REQUEST, "invalid-csr", "Bad Request", Some(&message))
        }
        Ok(Err(error)) => internal(&error),
        Err(_) => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal Server Error",
            None,
        ),
    }
}

fn token_reason(error: &TokenError) -> &'static str {
    match error {
        TokenError::Unknown => "unknown_join_token",
        TokenError::Used => "join_token_replayed",
        TokenError::Expired => "join_token_expired",
    }
}

fn audit_refusal(
    state: &State,
    peer: SocketAddr,
    id: Option<&SpiffeId>,
    workload: Option<&crate::attest::Workload>,
    reason: &'static str,
) {
    let id = id.map(ToString::to_string).unwrap_or_default();
    let namespace = workload.map(|w| w.namespace.as_str()).unwrap_or_default();
    let pod = workload.and_then(|w| w.pod_name.as_deref()).unwrap_or_default();
    tracing::warn!(reason, spiffe_id = %id, namespace, pod, %peer, "certificate refused");
    if let Some(log) = &state.options.audit {
        let mut event = AuditEvent::new(
            EventKind::CertificateRefused,
            Some(reason),
            format!("certificate refused: {reason}"),
        )
        .with_certificate(&id, None, None)
        .with_source(peer.ip(), Some(peer.port()));
        if let Some(workload) = workload {
            event = event.with_workload(workload_facts(workload));
        }
        log.record(event);
    }
}

fn workload_facts(workload: &crate::attest::Workload) -> palisade_telemetry::WorkloadFacts {
    palisade_telemetry::WorkloadFacts {
        namespace: workload.namespace.clone(),
        service_account: workload.service_account.clone(),
        pod_name: workload.pod_name.clone(),
        pod_uid: workload.pod_uid.clone(),
    }
}

fn internal(error: &CaError) -> Response<Full<Bytes>> {
    tracing::error!(%error, "identity service: cannot sign");
    problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "Internal Server Error",
        None,
    )
}

fn problem(status: StatusCode, kind: &str, title: &str, detail: Option<&str>) -> Response<Full<Bytes>> {
    let mut body = palisade_core::problem::Problem::new(status, kind, title);
    if let Some(detail) = detail {
        body = body.with_detail(detail);
    }
    text(status, palisade_core::problem::CONTENT_TYPE, body.to_json())
}

fn json(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    text(status, "application/json", body)
}

fn text(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    response
}

fn server_config(state: Arc<State>) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let provider = Arc::new(palisade_tls::provider());
    let current = state.verifier.clone();
    let verifier = Arc::new(DelegatingClientVerifier::new("identity service", move || {
        Some(current.load().as_ref().clone())
    }));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(palisade_tls::PROTOCOL_VERSIONS)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(state);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Client certificates are optional (a first request has none) and, when given, must chain to the
/// bundle and name a workload of this trust domain.
fn client_verifier(dir: &Path, trust_domain: &str) -> Result<Arc<dyn ClientCertVerifier>, CaError> {
    let roots = load_bundle(&dir.join(BUNDLE)).map_err(CaError::Invalid)?;
    let provider = Arc::new(palisade_tls::provider());
    let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .allow_unauthenticated()
        .build()
        .map_err(|e| CaError::Invalid(e.to_string()))?;
    Ok(Arc::new(TrustDomainClientVerifier::new(
        inner,
        vec![trust_domain.to_string()],
    )))
}

/// The service's own certificate, signed by the CA it serves; renewed by [`refresh`].
fn service_certificate(options: &ServeOptions, id: &SpiffeId) -> Result<CertifiedKey, CaError> {
    let mut ca = open_ca(options)?;
    let mut request = LeafRequest::new(id.clone(), options.default_ttl.max(Duration::from_secs(3600)));
    request.dns_names = options.dns_names.clone();
    let issued = ca.issue(&request)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(issued.issued.chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| CaError::Invalid(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).map_err(|e| CaError::Invalid(e.to_string()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| CaError::Invalid(e.to_string()))?;
    Ok(CertifiedKey::new(chain, signing))
}

/// Follows the CA directory: a changed bundle (root rotation) updates what renewals are checked
/// against and what `/v1/bundle` serves; the service's own certificate is renewed at half-life.
async fn refresh(state: Arc<State>) {
    let mut issued_at = SystemTime::now();
    let lifetime = state.options.default_ttl.max(Duration::from_secs(3600));
    loop {
        tokio::time::sleep(REFRESH_EVERY).await;
        let bundle = std::fs::read_to_string(state.options.dir.join(BUNDLE)).unwrap_or_default();
        if !bundle.is_empty() && bundle != **state.bundle_text.load() {
            match client_verifier(&state.options.dir, &state.trust_domain) {
                Ok(verifier) => {
                    state.verifier.store(Arc::new(verifier));
                    state.bundle_text.store(Arc::new(bundle));
                    tracing::info!("identity service: trust bundle changed");
                }
                Err(error) => tracing::error!(%error, "identity service: cannot load the new trust bundle"),
            }
        }
        if issued_at.elapsed().unwrap_or_default() > lifetime / 2 {
            match service_certificate(&state.options, &state.service_id) {
                Ok(certificate) => {
                    state.certificate.store(Arc::new(certificate));
                    issued_at = SystemTime::now();
                }
                Err(error) => tracing::error!(%error, "identity service: cannot renew its own certificate"),
            }
        }
    }
}
