//! TLS for client listeners: TLS 1.2 and 1.3 only, ALPN `h2` and `http/1.1`, certificates from PEM
//! files. The certificate is looked up in the current runtime at every handshake, so a reload (or a
//! renewed file picked up by the watcher) takes effect for new connections without a restart.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use palisade_core::config::{Config, TlsConfig};
use palisade_core::Diagnostics;
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

pub fn server_config(listener: &str, runtime: Arc<ArcSwap<Runtime>>) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(CurrentCertificate {
            listener: listener.to_string(),
            runtime,
        }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
