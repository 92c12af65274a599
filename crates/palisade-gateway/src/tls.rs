//! TLS for client listeners: TLS 1.2 and 1.3 only, ALPN `h2` and `http/1.1`, certificates from PEM
//! files, and optionally client certificates verified against CA bundles. The certificate and the
//! client verifier are looked up in the current runtime at every handshake, so a reload (or a
//! renewed file picked up by the watcher) takes effect for new connections without a restart.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use palisade_auth::ClientCertificate;
use palisade_core::config::{Config, TlsConfig};
use palisade_core::Diagnostics;
use palisade_mesh::dynamic::DelegatingClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::runtime::Runtime;

/// Loads every listener's certificate; problems become diagnostics at the config's `cert`/`key`.
pub fn load_certificates(config: &Config, diagnostics: &mut Diagnostics) -> BTreeMap<String, Arc<CertifiedKey>> {
    let mut loaded = BTreeMap::new();
    for listener in &config.listeners {
        let Some(tls) = &listener.value.tls else {
            continue;
        };
        match load_certified_key(tls) {
            Ok(key) => {
                loaded.insert(listener.value.name.clone(), Arc::new(key));
            }
            Err((on_key, message)) => diagnostics.on(if on_key { &tls.key } else { &tls.cert }, message),
        }
    }
    loaded
}

/// `Err((is_key_problem, message))`.
fn load_certified_key(tls: &TlsConfig) -> Result<CertifiedKey, (bool, String)> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert.value)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            (
                false,
                format!("cannot read certificates from {}: {e}", tls.cert.value.display()),
            )
        })?;
    if certs.is_empty() {
        return Err((false, format!("{} holds no PEM certificate", tls.cert.value.display())));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key.value).map_err(|e| {
        (
            true,
            format!("cannot read a private key from {}: {e}", tls.key.value.display()),
        )
    })?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| {
        (
            true,
            format!("unsupported private key in {}: {e}", tls.key.value.display()),
        )
    })?;
    let certified = CertifiedKey::new(certs, signing_key);
    certified
        .keys_match()
        .map_err(|e| (true, format!("the key does not match the certificate: {e}")))?;
    Ok(certified)
}

/// Finds the listener's certificate in whatever runtime is current.
struct CurrentCertificate {
    listener: String,
    runtime: Arc<ArcSwap<Runtime>>,
}

impl fmt::Debug for CurrentCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CurrentCertificate({})", self.listener)
    }
}

impl ResolvesServerCert for CurrentCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.runtime.load().certificates.get(&self.listener).cloned()
    }
}

/// Builds each listener's client certificate verifier; unreadable CA bundles become diagnostics.
pub fn load_client_verifiers(
    config: &Config,
    diagnostics: &mut Diagnostics,
) -> BTreeMap<String, Arc<dyn ClientCertVerifier>> {
    let mut verifiers = BTreeMap::new();
    for listener in &config.listeners {
        let Some(client) = listener.value.tls.as_ref().and_then(|t| t.client_certificates.as_ref()) else {
            continue;
        };
        match palisade_auth::mtls::client_verifier(&client.value) {
            Ok(verifier) => {
                verifiers.insert(listener.value.name.clone(), verifier);
            }
            Err(message) => diagnostics.on(client, message),
        }
    }
    verifiers
}

/// The principal of the verified client certificate on this connection: `None` when none was
/// presented, `Some(Err(_))` when it carries no identity the listener's `subject_from` accepts.
pub fn client_principal(
    connection: &rustls::ServerConnection,
    listener: &str,
    runtime: &Runtime,
) -> Option<ClientCertificate> {
    let leaf = connection.peer_certificates()?.first()?;
    let subject_from = runtime
        .config
        .listeners
        .iter()
        .find(|l| l.value.name == listener)
        .and_then(|l| l.value.tls.as_ref())
        .and_then(|tls| tls.client_certificates.as_ref())
        .map(|settings| settings.value.subject_from.as_slice())
        .unwrap_or_default();
    Some(palisade_auth::mtls::principal_from_certificate(leaf, subject_from).map(Arc::new))
}

pub fn server_config(listener: &str, runtime: Arc<ArcSwap<Runtime>>) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = Arc::new(palisade_tls::provider());
    // Client certificates are asked for and verified with whatever the current runtime configures
    // for the listener; without `client_certificates`, none is asked for.
    let (name, current) = (listener.to_string(), runtime.clone());
    let client_verifier = Arc::new(DelegatingClientVerifier::new(listener, move || {
        current.load().client_verifiers.get(&name).cloned()
    }));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(palisade_tls::PROTOCOL_VERSIONS)?
        .with_client_cert_verifier(client_verifier)
        .with_cert_resolver(Arc::new(CurrentCertificate {
            listener: listener.to_string(),
            runtime,
        }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A bounded reason code for a failed handshake (`None`: it timed out), for metrics and events.
pub fn handshake_failure_reason(error: Option<&std::io::Error>) -> &'static str {
    use rustls::{CertificateError, Error, PeerIncompatible};
    let Some(error) = error else {
        return "timeout";
    };
    let Some(tls) = error.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) else {
        return "connection_closed";
    };
    match tls {
        Error::NoCertificatesPresented => "no_client_certificate",
        Error::InvalidCertificate(certificate) => match certificate {
            CertificateError::UnknownIssuer => "unknown_issuer",
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "certificate_expired",
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => "certificate_not_yet_valid",
            CertificateError::BadSignature => "bad_signature",
            CertificateError::Other(other) => match other.0.downcast_ref::<palisade_mesh::IdentityError>() {
                Some(palisade_mesh::IdentityError::ForeignTrustDomain(_)) => "foreign_trust_domain",
                Some(_) => "no_workload_identity",
                None => "certificate_invalid",
            },
            _ => "certificate_invalid",
        },
        // A TLS 1.0/1.1 ClientHello carries no signature_algorithms extension, which rustls notices
        // before the version itself.
        Error::PeerIncompatible(
            PeerIncompatible::SignatureAlgorithmsExtensionRequired
            | PeerIncompatible::Tls12NotOffered
            | PeerIncompatible::Tls12NotOfferedOrEnabled
            | PeerIncompatible::Tls13RequiredForQuic
            | PeerIncompatible::SupportedVersionsExtensionRequired,
        ) => "protocol_version",
        Error::PeerIncompatible(_) => "incompatible",
        Error::AlertReceived(_) => "alert_received",
        _ => "protocol_error",
    }
}

/// Whether the reason is a decision against the client (as opposed to a client that went away).
pub fn is_refusal(reason: &str) -> bool {
    !matches!(reason, "timeout" | "connection_closed" | "alert_received")
}
