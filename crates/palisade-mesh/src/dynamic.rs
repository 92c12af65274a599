//! A client certificate verifier that asks, at every handshake, for the verifier currently in force:
//! a reloaded gateway config, or a trust bundle the identity service re-read. `None` means client
//! certificates are not asked for (and one offered anyway is refused).

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};

type Current = dyn Fn() -> Option<Arc<dyn ClientCertVerifier>> + Send + Sync;

pub struct DelegatingClientVerifier {
    /// Names the verifier in debug output (a listener name).
    name: String,
    current: Box<Current>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl DelegatingClientVerifier {
    pub fn new(
        name: impl Into<String>,
        current: impl Fn() -> Option<Arc<dyn ClientCertVerifier>> + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            current: Box::new(current),
            algorithms: palisade_tls::provider().signature_verification_algorithms,
        }
    }
}

impl fmt::Debug for DelegatingClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DelegatingClientVerifier({})", self.name)
    }
}

impl ClientCertVerifier for DelegatingClientVerifier {
    fn offer_client_auth(&self) -> bool {
        (self.current)().is_some_and(|v| v.offer_client_auth())
    }

    fn client_auth_mandatory(&self) -> bool {
        (self.current)().is_some_and(|v| v.client_auth_mandatory())
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints are optional (RFC 8446 §4.2.4); an empty list lets the client choose.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match (self.current)() {
            Some(verifier) => verifier.verify_client_cert(end_entity, intermediates, now),
            None => Err(rustls::Error::General(
                "client certificates are not accepted here".into(),
            )),
        }
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
