//! The workload side of the identity service: gets a first certificate with a join token or the
//! pod's ServiceAccount token, then keeps it fresh. The key pair is made here and never leaves; the
//! CA sees only CSRs. Renewal happens at a random point between 50% and 70% of the lifetime (so a
//! fleet does not renew at once), over mTLS with the current certificate. While the CA is unreachable
//! the current certificate keeps serving; retries back off, the seconds to expiry are reported, and
//! an event warns before it runs out.
//!
//! Everything is written to the identity files the sidecar already watches, so a renewal reaches the
//! listener and the outbound clusters through the ordinary reload: connections in flight finish on
//! the old certificate, new ones use the new.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use palisade_telemetry::{AuditEvent, AuditLog, EventKind};
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde::Deserialize;
use tokio::sync::watch;

use crate::identity::IdentityPaths;
use crate::spiffe::SpiffePattern;

const MAX_RESPONSE: usize = 1024 * 1024;
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);
const BUNDLE_REFRESH: Duration = Duration::from_secs(60);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot reach the identity service at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("the identity service refused: {status} {detail}")]
    Refused { status: u16, detail: String },
    #[error("no valid certificate at {path} and no join token or ServiceAccount token to get one")]
    NoCredential { path: String },
    #[error("{0}")]
    Invalid(String),
    #[error("cannot write the identity: {0}")]
    Write(#[from] crate::CaError),
}

#[derive(Clone)]
pub struct AgentConfig {
    /// `https://host:port` of `palisade ca serve`.
    pub url: String,
    /// Who the identity service must be (`spiffe://TD/palisade/ca`).
    pub server_id: SpiffePattern,
    pub paths: IdentityPaths,
    /// For the first certificate only; never logged.
    pub join_token: Option<String>,
    /// A projected ServiceAccount token file (kubelet keeps it fresh): read whenever a certificate
    /// must be obtained without a valid one (at start, and after an expiry). Never logged.
    pub service_account_token_file: Option<std::path::PathBuf>,
    /// Trust anchors for the identity service until the identity's own bundle exists (a
    /// ConfigMap with the CA's bundle on Kubernetes).
    pub bootstrap_bundle: Option<std::path::PathBuf>,
    /// Asked-for lifetime; the service may shorten it.
    pub ttl: Option<Duration>,
    /// Told the state of the identity whenever it is known (a metric, the sidecar's `/readyz`).
    pub on_status: Option<Arc<dyn Fn(IdentityStatus) + Send + Sync>>,
    /// Where renewals and expiry warnings are recorded.
    pub audit: Option<AuditLog>,
}

/// What the agent knows of the workload's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentityStatus {
    /// Seconds left on the certificate on disk (0: none, or expired).
    pub seconds_left: i64,
    /// The last renewal attempt failed (the identity service did not answer or refused).
    pub renewal_failing: bool,
}

/// The validity of the certificate on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    /// When to renew: a random point between 50% and 70% of the lifetime.
    pub fn renewal_time(&self) -> SystemTime {
        let lifetime = self.not_after.duration_since(self.not_before).unwrap_or_default();
        let fraction = 0.5 + rand::random::<f64>() * 0.2;
        self.not_before + lifetime.mul_f64(fraction)
    }

    fn remaining(&self, now: SystemTime) -> Duration {
        self.not_after.duration_since(now).unwrap_or_default()
    }
}

#[derive(Deserialize)]
struct SignResponse {
    certificate_chain: String,
    trust_bundle: String,
}

pub struct Agent {
    config: AgentConfig,
}

impl Agent {
    pub fn new(config: AgentConfig) -> Self {
        Self { config }
    }

    /// Records renewals and expiry warnings in `audit` from now on.
    pub fn audit_to(mut self, audit: Option<AuditLog>) -> Self {
        self.config.audit = audit;
        self
    }

    /// Reports the identity's state to `report` from now on: at every check (every few seconds)
    /// and after every renewal attempt.
    pub fn report_status_to(mut self, report: Arc<dyn Fn(IdentityStatus) + Send + Sync>) -> Self {
        self.config.on_status = Some(report);
        self
    }

    /// The validity of the certificate on disk, if there is a readable one that has not expired.
    pub fn current(&self) -> Option<Validity> {
        let text = std::fs::read_to_string(&self.config.paths.cert).ok()?;
        let validity = validity_of(&text)?;
        (validity.not_after > SystemTime::now()).then_some(validity)
    }

    /// Makes sure a valid identity is on disk: a current one is kept; otherwise the join token
    /// buys the first one. Run before the sidecar starts (its config needs the files).
    pub async fn ensure_identity(&self) -> Result<Validity, AgentError> {
        if let Some(validity) = self.current() {
            return Ok(validity);
        }
        self.obtain_first().await
    }

    /// A certificate without a current one: with the ServiceAccount token when there is one (it is
    /// read fresh each time), else with the join token.
    async fn obtain_first(&self) -> Result<Validity, AgentError> {
        if let Some(file) = &self.config.service_account_token_file {
            let token = std::fs::read_to_string(file)
                .map_err(|e| AgentError::Invalid(format!("ServiceAccount token {}: {}", file.display(), e.kind())))?;
            return self.obtain(Credential::ServiceAccountToken(token.trim()), false).await;
        }
        let Some(token) = self.config.join_token.as_deref() else {
            return Err(AgentError::NoCredential {
                path: self.config.paths.cert.display().to_string(),
            });
        };
        self.obtain(Credential::JoinToken(token), false).await
    }

    /// Renews once, over mTLS with the current certificate; with the ServiceAccount token when the
    /// certificate has expired (a pod that was paused, or a CA outage longer than its lifetime).
    pub async fn renew(&self) -> Result<Validity, AgentError> {
        if self.current().is_none() && self.config.service_account_token_file.is_some() {
            return self.obtain_first().await;
        }
        self.obtain(Credential::Certificate, true).await
    }

    /// Keeps the identity fresh until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut retry = FIRST_RETRY;
        let mut renew_at = self.current().map(|v| v.renewal_time()).unwrap_or_else(SystemTime::now);
        let mut next_bundle = SystemTime::now() + BUNDLE_REFRESH;
        let mut renewal_failing = false;
        loop {
            let validity = self.current();
            self.report(validity, renewal_failing);
            let now = SystemTime::now();
            let wake = renew_at.min(next_bundle);
            let wait = wake.duration_since(now).unwrap_or_default().min(Duration::from_secs(5));
            if !wait.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                continue;
            }
            if now >= next_bundle {
                if let Err(error) = self.refresh_bundle().await {
                    tracing::warn!(%error, "identity: cannot refresh the trust bundle; keeping the current one");
                }
                next_bundle = now + BUNDLE_REFRESH;
            }
            if now < renew_at {
                continue;
            }
            match self.renew().await {
                Ok(renewed) => {
                    tracing::info!(expires_at = unix(renewed.not_after), "identity: certificate renewed");
                    self.audit(EventKind::CertificateRenewed, None, "certificate renewed", renewed);
                    renew_at = renewed.renewal_time();
                    retry = FIRST_RETRY;
                    renewal_failing = false;
                }
                Err(error) => {
                    renewal_failing = true;
                    self.report(validity, renewal_failing);
                    self.warn_unrenewed(validity, &error);
                    renew_at = SystemTime::now() + retry;
                    retry = (retry * 2).min(MAX_RETRY);
                }
            }
        }
    }

    fn report(&self, validity: Option<Validity>, renewal_failing: bool) {
        if let Some(report) = &self.config.on_status {
            let remaining = validity.map(|v| v.remaining(SystemTime::now()).as_secs()).unwrap_or(0);
            report(IdentityStatus {
                seconds_left: i64::try_from(remaining).unwrap_or(i64::MAX),
                renewal_failing,
            });
        }
    }

    /// A failed renewal is a warning while plenty of lifetime is left, and an error (the alert)
    /// once less than a fifth remains or the certificate has expired.
    fn warn_unrenewed(&self, validity: Option<Validity>, error: &AgentError) {
        let now = SystemTime::now();
        match validity {
            Some(v) if v.remaining(now) > v.not_after.duration_since(v.not_before).unwrap_or_default() / 5 => {
                tracing::warn!(%error, expires_at = unix(v.not_after), "identity: renewal failed; serving on the current certificate");
            }
            Some(v) => {
                tracing::error!(
                    event = "identity_expiring",
                    %error,
                    expires_at = unix(v.not_after),
                    seconds_left = v.remaining(now).as_secs(),
                    "identity: certificate expires soon and cannot be renewed"
                );
                let message = format!(
                    "certificate expires in {} s and cannot be renewed",
                    v.remaining(now).as_secs()
                );
                self.audit(EventKind::CertificateExpiring, Some("renewal_failed"), &message, v);
            }
            None => {
                tracing::error!(event = "identity_expired", %error, "identity: certificate expired and cannot be renewed")
            }
        }
    }

    fn audit(&self, kind: EventKind, reason: Option<&str>, message: &str, validity: Validity) {
        let Some(log) = &self.config.audit else {
            return;
        };
        let id = std::fs::read_to_string(&self.config.paths.cert)
            .ok()
            .and_then(|pem| spiffe_id_of_pem(&pem))
            .unwrap_or_default();
        let event = AuditEvent::new(kind, reason, message).with_certificate(&id, None, Some(unix(validity.not_after)));
        log.record(event);
    }

    async fn obtain(&self, credential: Credential<'_>, with_certificate: bool) -> Result<Validity, AgentError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| AgentError::Invalid(e.to_string()))?;
        let csr = CertificateParams::default()
            .serialize_request(&key)
            .and_then(|csr| csr.pem())
            .map_err(|e| AgentError::Invalid(e.to_string()))?;
        let mut body = serde_json::json!({ "csr": csr });
        match credential {
            Credential::JoinToken(token) => body["join_token"] = token.into(),
            Credential::ServiceAccountToken(token) => body["service_account_token"] = token.into(),
            Credential::Certificate => {}
        }
        if let Some(ttl) = self.config.ttl {
            body["ttl_seconds"] = ttl.as_secs().into();
        }
        let request = Request::builder()
            .method(Method::POST)
            .uri("/v1/certificates")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| AgentError::Invalid(e.to_string()))?;
        let (status, reply) = self.exchange(request, with_certificate).await?;
        if status != StatusCode::OK {
            return Err(AgentError::Refused {
                status: status.as_u16(),
                detail: String::from_utf8_lossy(&reply).chars().take(300).collect(),
            });
        }
        let signed: SignResponse =
            serde_json::from_slice(&reply).map_err(|e| AgentError::Invalid(format!("unexpected answer: {e}")))?;
        let validity = validity_of(&signed.certificate_chain)
            .ok_or_else(|| AgentError::Invalid("the answer holds no certificate".into()))?;
        self.config.paths.write(
            &signed.certificate_chain,
            &key.serialize_pem(),
            &signed.trust_bundle,
            true,
        )?;
        Ok(validity)
    }

    /// Fetches the trust bundle and replaces the file if it changed (new or retired roots).
    pub async fn refresh_bundle(&self) -> Result<(), AgentError> {
        let request = Request::get("/v1/bundle")
            .body(Full::new(Bytes::new()))
            .map_err(|e| AgentError::Invalid(e.to_string()))?;
        let (status, reply) = self.exchange(request, false).await?;
        if status != StatusCode::OK || load_bundle_text(&reply).is_none() {
            return Err(AgentError::Refused {
                status: status.as_u16(),
                detail: "no usable bundle".into(),
            });
        }
        self.config.paths.write_bundle(&String::from_utf8_lossy(&reply))?;
        Ok(())
    }

    /// One request on a fresh mTLS connection to the identity service.
    async fn exchange(
        &self,
        mut request: Request<Full<Bytes>>,
        with_certificate: bool,
    ) -> Result<(StatusCode, Bytes), AgentError> {
        let unreachable = |detail: String| AgentError::Unreachable {
            url: self.config.url.clone(),
            detail,
        };
        let uri: http::Uri = self.config.url.parse().map_err(|_| unreachable("not a URL".into()))?;
        let authority = uri
            .authority()
            .ok_or_else(|| unreachable("no host:port".into()))?
            .clone();
        let port = authority.port_u16().unwrap_or(443);
        let address = format!("{}:{port}", authority.host());
        request.headers_mut().insert(
            http::header::HOST,
            http::HeaderValue::from_str(authority.as_str()).map_err(|e| unreachable(e.to_string()))?,
        );
        let connector = tokio_rustls::TlsConnector::from(self.client_config(with_certificate)?);
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let name = ServerName::try_from(host).map_err(|e| unreachable(e.to_string()))?;
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect(&address)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let tls = connector
                .connect(name, tcp)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            tokio::spawn(connection);
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_RESPONSE)
                .collect()
                .await
                .map_err(|e| unreachable(e.to_string()))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| unreachable("timed out".into()))?
    }

    fn client_config(&self, with_certificate: bool) -> Result<Arc<rustls::ClientConfig>, AgentError> {
        let identity = if with_certificate {
            let (cert, key) = (&self.config.paths.cert, &self.config.paths.key);
            Some(
                palisade_tls::read_identity(cert, key)
                    .map_err(|e| AgentError::Invalid(format!("current identity: {e}")))?,
            )
        } else {
            None
        };
        // The identity's own bundle once there is one (it follows root rotations); before that, the
        // bootstrap anchors.
        let bundle = match &self.config.bootstrap_bundle {
            Some(bootstrap) if !self.config.paths.bundle.is_file() => bootstrap,
            _ => &self.config.paths.bundle,
        };
        let config = palisade_tls::client_config(palisade_tls::ClientSettings {
            trust: palisade_tls::Trust::Only(bundle),
            server: palisade_tls::ServerIdentity::Spiffe(self.config.server_id.clone()),
            identity,
            alpn: &[b"http/1.1"],
        })
        .map_err(AgentError::Invalid)?;
        Ok(Arc::new(config))
    }
}

/// What a certificate request proves itself with.
enum Credential<'a> {
    /// The current certificate, on the mTLS connection (a renewal).
    Certificate,
    JoinToken(&'a str),
    ServiceAccountToken(&'a str),
}

fn load_bundle_text(bytes: &[u8]) -> Option<()> {
    let count = CertificateDer::pem_slice_iter(bytes).filter(Result::is_ok).count();
    (count > 0).then_some(())
}

fn spiffe_id_of_pem(pem: &str) -> Option<String> {
    let der = CertificateDer::pem_slice_iter(pem.as_bytes()).next()?.ok()?;
    crate::verify::spiffe_id_of(&der).ok().map(|id| id.to_string())
}

/// The validity of the first certificate in `pem`.
pub fn validity_of(pem: &str) -> Option<Validity> {
    let der = CertificateDer::pem_slice_iter(pem.as_bytes()).next()?.ok()?;
    let (_, certificate) = x509_parser::parse_x509_certificate(&der).ok()?;
    let seconds = |t: i64| UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0));
    Some(Validity {
        not_before: seconds(certificate.validity().not_before.timestamp()),
        not_after: seconds(certificate.validity().not_after.timestamp()),
    })
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The identity service does not answer a renewal that is due: the agent reports it failing,
    /// with the seconds the current certificate has left (what the sidecar's `/readyz` shows).
    #[tokio::test]
    async fn a_failed_renewal_is_reported_with_the_time_left() {
        let dir = tempfile::tempdir().unwrap();
        let paths = IdentityPaths::in_dir(dir.path());
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["workload.test".to_string()]).unwrap();
        let now = time::OffsetDateTime::now_utc();
        // Past half its lifetime: the renewal is due at once.
        params.not_before = now - time::Duration::seconds(100);
        params.not_after = now + time::Duration::seconds(20);
        let certificate = params.self_signed(&key).unwrap();
        std::fs::write(&paths.cert, certificate.pem()).unwrap();
        std::fs::write(&paths.key, key.serialize_pem()).unwrap();
        std::fs::write(&paths.bundle, certificate.pem()).unwrap();
        let nobody = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let (report, mut statuses) = tokio::sync::mpsc::unbounded_channel();
        let agent = Agent::new(AgentConfig {
            url: format!("https://{nobody}"),
            server_id: SpiffePattern::parse("spiffe://example.org/palisade/ca").unwrap(),
            paths,
            join_token: None,
            service_account_token_file: None,
            bootstrap_bundle: None,
            ttl: None,
            on_status: None,
            audit: None,
        })
        .report_status_to(Arc::new(move |status| {
            let _ = report.send(status);
        }));
        let (stop, stopped) = watch::channel(false);
        let running = tokio::spawn(agent.run(stopped));
        let failing = async {
            loop {
                let status: IdentityStatus = statuses.recv().await.expect("the agent reports");
                if status.renewal_failing {
                    return status;
                }
            }
        };
        let status = tokio::time::timeout(Duration::from_secs(10), failing)
            .await
            .expect("the failed renewal is reported");
        assert!((1..=20).contains(&status.seconds_left), "{status:?}");
        stop.send(true).unwrap();
        running.await.unwrap();
    }

    #[test]
    fn renewal_falls_between_half_and_seven_tenths_of_the_lifetime() {
        let start = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let validity = Validity {
            not_before: start,
            not_after: start + Duration::from_secs(1000),
        };
        for _ in 0..1000 {
            let at = validity.renewal_time().duration_since(start).unwrap().as_secs_f64();
            assert!((500.0..=700.0).contains(&at), "{at}");
        }
    }
}
