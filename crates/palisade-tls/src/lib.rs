//! TLS as Palisade uses it, decided once: one crypto provider, TLS 1.3 and 1.2 only, trust bundles
//! that must hold at least one usable CA, and [`client_config`], the one builder behind every
//! outgoing TLS connection (upstreams, the identity service, JWKS and introspection, syslog, OTLP,
//! webhooks). Each caller says what it trusts and who it expects; the rules are the same for all.
//! [`verify`] checks peers by SPIFFE identity.
#![forbid(unsafe_code)]

pub mod verify;

use std::path::Path;
use std::sync::Arc;

use palisade_core::spiffe::SpiffePattern;
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub use verify::{spiffe_id_of, IdentityError, SpiffeServerVerifier, TrustDomainClientVerifier};

/// The protocol versions every endpoint speaks, client and server: TLS 1.3 and 1.2.
pub static PROTOCOL_VERSIONS: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The one crypto provider (ring).
pub fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Reads a PEM trust bundle; a file with no usable CA certificate is an error (it would make every
/// handshake fail later, far from the cause). `Err` says what is wrong, for a config diagnostic.
pub fn load_bundle(path: &Path) -> Result<RootCertStore, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read trust bundle {}: {e}", path.display()))?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("{} holds no usable CA certificate", path.display()));
    }
    Ok(roots)
}

/// What a person needs to know of a certificate: who it names and when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// Its SPIFFE ID (a URI SAN) if it has one, otherwise its subject.
    pub identity: String,
    /// Seconds since the Unix epoch.
    pub not_after: i64,
}

/// [`CertificateInfo`] of a DER certificate; `None` if it does not parse.
pub fn certificate_info(der: &[u8]) -> Option<CertificateInfo> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    let identity = spiffe_id_of(der)
        .map(|id| id.to_string())
        .unwrap_or_else(|_| certificate.subject().to_string());
    Some(CertificateInfo {
        identity,
        not_after: certificate.validity().not_after.timestamp(),
    })
}

/// [`CertificateInfo`] of every certificate in a PEM bundle (none if it cannot be read).
pub fn bundle_info(path: &Path) -> Vec<CertificateInfo> {
    CertificateDer::pem_file_iter(path)
        .map(|certs| {
            certs
                .filter_map(Result::ok)
                .filter_map(|der| certificate_info(der.as_ref()))
                .collect()
        })
        .unwrap_or_default()
}

/// Which certificate authorities a client trusts.
#[derive(Debug, Clone, Copy)]
pub enum Trust<'a> {
    /// The public web roots (Mozilla's, built in).
    WebRoots,
    /// The web roots and a private bundle (an identity provider or collector with its own CA).
    WebRootsAnd(&'a Path),
    /// Only this bundle: a private PKI, where a public CA must not vouch for the peer.
    Only(&'a Path),
}

impl Trust<'_> {
    fn roots(self) -> Result<RootCertStore, String> {
        let web = || RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        match self {
            Trust::WebRoots => Ok(web()),
            Trust::WebRootsAnd(path) => {
                let mut roots = web();
                roots.roots.extend(load_bundle(path)?.roots);
                Ok(roots)
            }
            Trust::Only(path) => load_bundle(path),
        }
    }
}

/// How the server is recognised once its chain verifies.
#[derive(Debug, Clone)]
pub enum ServerIdentity {
    /// By the DNS name (or IP address) connected to, as browsers do.
    Name,
    /// By its SPIFFE ID, which must match the pattern; DNS names play no part.
    Spiffe(SpiffePattern),
}

/// What an outgoing TLS connection trusts, expects and presents.
pub struct ClientSettings<'a> {
    pub trust: Trust<'a>,
    pub server: ServerIdentity,
    /// A client certificate chain and its key (mutual TLS).
    pub identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    /// ALPN protocols offered, most preferred first; empty offers none.
    pub alpn: &'a [&'a [u8]],
}

impl<'a> ClientSettings<'a> {
    /// Verify the server by name against `trust`, no client certificate, no ALPN.
    pub fn new(trust: Trust<'a>) -> Self {
        Self {
            trust,
            server: ServerIdentity::Name,
            identity: None,
            alpn: &[],
        }
    }
}

/// The client config for `settings`. `Err` says what is wrong, for a config diagnostic.
pub fn client_config(settings: ClientSettings<'_>) -> Result<ClientConfig, String> {
    let roots = settings.trust.roots()?;
    let builder = ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|e| e.to_string())?;
    let builder = match settings.server {
        ServerIdentity::Name => builder.with_root_certificates(roots),
        ServerIdentity::Spiffe(expected) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(Arc::new(roots), expected))),
    };
    let mut config = match settings.identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("the client certificate and key do not fit: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = settings.alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A certificate chain and key from PEM files (mutual TLS identities).
pub fn read_identity(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|iter| iter.collect::<Result<_, _>>())
        .map_err(|e| format!("cannot read certificates from {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no PEM certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read a private key from {}: {e}", key.display()))?;
    Ok((chain, key))
}

/// A server's certificate chain and key from PEM files, ready for a certificate resolver: the key
/// must be one the provider signs with and must belong to the first certificate.
pub fn certified_key(cert: &Path, key: &Path) -> Result<rustls::sign::CertifiedKey, String> {
    let (chain, key_der) = read_identity(cert, key)?;
    let signing = provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| format!("unsupported private key in {}: {e}", key.display()))?;
    let certified = rustls::sign::CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| format!("the key in {} does not match the certificate: {e}", key.display()))?;
    Ok(certified)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn a_server_key_must_belong_to_its_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (cert, key, other) = (
            dir.path().join("tls.crt"),
            dir.path().join("tls.key"),
            dir.path().join("other.key"),
        );
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        std::fs::write(&other, rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
        assert!(certified_key(&cert, &key).is_ok());
        let error = certified_key(&cert, &other).unwrap_err();
        assert!(error.contains("does not match the certificate"), "{error}");
    }

    #[test]
    fn a_bundle_without_a_usable_certificate_is_an_error_for_every_trust_that_reads_one() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        for trust in [Trust::Only(&empty), Trust::WebRootsAnd(&empty)] {
            let error = client_config(ClientSettings::new(trust)).unwrap_err();
            assert!(error.contains("holds no usable CA certificate"), "{error}");
        }
        let missing = dir.path().join("missing.pem");
        let error = client_config(ClientSettings::new(Trust::Only(&missing))).unwrap_err();
        assert!(error.contains("cannot read trust bundle"), "{error}");
    }

    #[test]
    fn only_a_private_bundle_means_no_web_root_is_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("ca.pem");
        std::fs::write(&bundle, ca_pem()).unwrap();
        assert_eq!(Trust::Only(&bundle).roots().unwrap().len(), 1);
        let web = Trust::WebRoots.roots().unwrap().len();
        assert!(web > 100);
        assert_eq!(Trust::WebRootsAnd(&bundle).roots().unwrap().len(), web + 1);
    }

    #[test]
    fn every_client_speaks_tls_1_3_and_1_2_only_and_offers_the_alpn_asked_for() {
        let config = client_config(ClientSettings {
            alpn: &[b"http/1.1"],
            ..ClientSettings::new(Trust::WebRoots)
        })
        .unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        let versions: Vec<_> = PROTOCOL_VERSIONS.iter().map(|v| v.version).collect();
        assert_eq!(
            versions,
            [rustls::ProtocolVersion::TLSv1_3, rustls::ProtocolVersion::TLSv1_2]
        );
    }
}
