//! TLS towards upstream targets: server verification by SPIFFE ID (mesh workloads) or by DNS name
//! (any HTTPS service), and optionally a client certificate for mutual TLS. Built once per reload from
//! the files the cluster names; the cluster swaps it in place so that pooled connections survive a
//! certificate renewal and only new connections use the new certificate.

use std::path::Path;
use std::sync::Arc;

use palisade_core::config::UpstreamTlsConfig;
use palisade_core::spiffe::SpiffePattern;
use palisade_core::{Diagnostics, Spanned};
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

pub struct UpstreamTls {
    connector: TlsConnector,
    /// Fixed SNI/verified name; `None`: each target's own host.
    server_name: Option<ServerName<'static>>,
}

impl UpstreamTls {
    /// Builds the client side from the config's files; problems become diagnostics.
    pub fn load(tls: &Spanned<UpstreamTlsConfig>, diagnostics: &mut Diagnostics) -> Option<Arc<UpstreamTls>> {
        match Self::try_load(&tls.value) {
            Ok(built) => Some(Arc::new(built)),
            Err(message) => {
                diagnostics.on(tls, message);
                None
            }
        }
    }

    fn try_load(config: &UpstreamTlsConfig) -> Result<UpstreamTls, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| e.to_string())?;
        let roots = match &config.ca {
            Some(ca) => palisade_mesh::verify::load_bundle(&ca.value)?,
            None => rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        };
        let builder = match &config.spiffe_id {
            Some(id) => {
                let expected = SpiffePattern::parse(&id.value).map_err(|e| e.to_string())?;
                let verifier = palisade_mesh::SpiffeServerVerifier::new(Arc::new(roots), expected);
                builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier))
            }
            None => builder.with_root_certificates(roots),
        };
        let mut client = match (&config.cert, &config.key) {
            (Some(cert), Some(key)) => {
                let (chain, key) = read_identity(&cert.value, &key.value)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("the client certificate and key do not fit: {e}"))?
            }
            _ => builder.with_no_client_auth(),
        };
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        let server_name = match &config.server_name {
            Some(name) => Some(
                ServerName::try_from(name.value.clone())
                    .map_err(|_| format!("{:?} is not a server name", name.value))?,
            ),
            None => None,
        };
        Ok(UpstreamTls {
            connector: TlsConnector::from(Arc::new(client)),
            server_name,
        })
    }

    /// Runs the handshake on a connected stream to `address` (`host:port`).
    pub async fn connect(&self, address: &str, stream: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => target_name(address)?,
        };
        self.connector.connect(name, stream).await
    }
}

/// The host of `host:port` as a server name (an IP address sends no SNI).
fn target_name(address: &str) -> std::io::Result<ServerName<'static>> {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{host:?} is not a server name"),
        )
    })
}

pub(crate) fn read_identity(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read certificates from {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no PEM certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read a private key from {}: {e}", key.display()))?;
    Ok((chain, key))
}
