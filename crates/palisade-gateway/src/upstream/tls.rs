//! TLS towards upstream targets: server verification by SPIFFE ID (mesh workloads) or by DNS name
//! (any HTTPS service), and optionally a client certificate for mutual TLS. Built once per reload from
//! the files the cluster names; the cluster swaps it in place so that pooled connections survive a
//! certificate renewal and only new connections use the new certificate.

use std::sync::Arc;

use palisade_core::config::UpstreamTlsConfig;
use palisade_core::spiffe::SpiffePattern;
use palisade_core::{Diagnostics, Spanned};
use rustls_pki_types::ServerName;
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
        let trust = match &config.ca {
            Some(ca) => palisade_tls::Trust::Only(&ca.value),
            None => palisade_tls::Trust::WebRoots,
        };
        let server = match &config.spiffe_id {
            Some(id) => {
                palisade_tls::ServerIdentity::Spiffe(SpiffePattern::parse(&id.value).map_err(|e| e.to_string())?)
            }
            None => palisade_tls::ServerIdentity::Name,
        };
        let identity = match (&config.cert, &config.key) {
            (Some(cert), Some(key)) => Some(palisade_tls::read_identity(&cert.value, &key.value)?),
            _ => None,
        };
        let client = palisade_tls::client_config(palisade_tls::ClientSettings {
            trust,
            server,
            identity,
            alpn: &[b"http/1.1"],
        })?;
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
