//! Verifying peers by SPIFFE identity with rustls: the chain is checked by webpki against the trust
//! bundle (signatures, validity, EKU, path length), then the leaf's one URI SAN must be a SPIFFE ID of
//! an accepted trust domain, and, when calling out, the exact ID expected for the destination. DNS
//! names play no part: a workload is named by its SPIFFE ID, not by where it runs.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use x509_parser::extensions::GeneralName;

use palisade_core::spiffe::{SpiffeId, SpiffePattern};

/// Why a verified certificate still does not name an acceptable workload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the certificate cannot be parsed")]
    Unparsable,
    #[error("the certificate carries no URI SAN (SPIFFE ID)")]
    NoSpiffeId,
    #[error("the certificate carries more than one URI SAN")]
    SeveralUris,
    #[error("the certificate's URI SAN is not a valid SPIFFE ID")]
    InvalidSpiffeId,
    #[error("SPIFFE ID {0} is not in an accepted trust domain")]
    ForeignTrustDomain(String),
    #[error("peer is {actual}, expected {expected}")]
    Unexpected { actual: String, expected: String },
}

impl From<IdentityError> for rustls::Error {
    fn from(error: IdentityError) -> Self {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(error))))
    }
}

/// The SPIFFE ID of a certificate: its one URI SAN (X.509-SVID specification §2).
pub fn spiffe_id_of(der: &[u8]) -> Result<SpiffeId, IdentityError> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).map_err(|_| IdentityError::Unparsable)?;
    let names = certificate
        .subject_alternative_name()
        .map_err(|_| IdentityError::Unparsable)?
        .map(|san| san.value.general_names.clone())
        .unwrap_or_default();
    let mut uris = names.iter().filter_map(|name| match name {
        GeneralName::URI(uri) => Some(*uri),
        _ => None,
    });
    let uri = uris.next().ok_or(IdentityError::NoSpiffeId)?;
    if uris.next().is_some() {
        return Err(IdentityError::SeveralUris);
    }
    SpiffeId::parse(uri).map_err(|_| IdentityError::InvalidSpiffeId)
}

pub use crate::load_bundle;

fn algorithms() -> WebPkiSupportedAlgorithms {
    crate::provider().signature_verification_algorithms
}

/// Verifies the server of an outgoing connection: chain to the bundle, then the expected identity.
pub struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    expected: SpiffePattern,
    algorithms: WebPkiSupportedAlgorithms,
}

impl SpiffeServerVerifier {
    pub fn new(roots: Arc<RootCertStore>, expected: SpiffePattern) -> Self {
        Self {
            roots,
            expected,
            algorithms: algorithms(),
        }
    }
}

impl fmt::Debug for SpiffeServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeServerVerifier({})", self.expected)
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        let actual = spiffe_id_of(end_entity)?;
        if !self.expected.matches(actual.as_str()) {
            return Err(IdentityError::Unexpected {
                actual: actual.to_string(),
                expected: self.expected.to_string(),
            }
            .into());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A client verifier that, after the chain checks of `inner`, accepts only certificates naming a
/// SPIFFE ID in one of `trust_domains`. Refusing in the handshake keeps a workload of another trust
/// domain (or a certificate without an identity) from reaching routing at all.
pub struct TrustDomainClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    trust_domains: Vec<String>,
}

impl TrustDomainClientVerifier {
    pub fn new(inner: Arc<dyn ClientCertVerifier>, trust_domains: Vec<String>) -> Self {
        Self { inner, trust_domains }
    }

    pub fn check(&self, end_entity: &[u8]) -> Result<SpiffeId, IdentityError> {
        let id = spiffe_id_of(end_entity)?;
        if !self.trust_domains.iter().any(|domain| domain == id.trust_domain()) {
            return Err(IdentityError::ForeignTrustDomain(id.to_string()));
        }
        Ok(id)
    }
}

impl fmt::Debug for TrustDomainClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustDomainClientVerifier({:?})", self.trust_domains)
    }
}

impl ClientCertVerifier for TrustDomainClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        self.check(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
