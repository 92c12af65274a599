//! A certificate authority and sidecars for mesh tests: real X.509-SVIDs from `palisade-mesh`, real
//! sidecars (the gateway started on a sidecar config), and an mTLS client that verifies the sidecar
//! by SPIFFE ID.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use palisade_gateway::{ConfigSource, Gateway};
use palisade_mesh::{CertificateAuthority, IdentityPaths, LeafRequest, Lifetimes, SpiffeId, SpiffePattern};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const DOMAIN: &str = "example.org";

pub fn id(path: &str) -> String {
    format!("spiffe://{DOMAIN}{path}")
}

pub struct Mesh {
    pub ca: CertificateAuthority,
    pub dir: tempfile::TempDir,
}

impl Mesh {
    pub fn new(trust_domain: &str) -> Mesh {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::init(&dir.path().join("ca"), trust_domain, Lifetimes::default()).unwrap();
        Mesh { ca, dir }
    }

    pub fn bundle(&self) -> PathBuf {
        self.dir.path().join("ca/bundle.pem")
    }

    /// Issues `spiffe_id` valid from `not_before` to `not_after` into a directory named `name`.
    pub fn identity_valid(
        &mut self,
        name: &str,
        spiffe_id: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> IdentityPaths {
        let mut request = LeafRequest::new(SpiffeId::parse(spiffe_id).unwrap(), Duration::from_secs(3600));
        request.not_before = not_before;
        request.not_after = not_after;
        let issued = self.ca.issue(&request).unwrap();
        let paths = IdentityPaths::in_dir(&self.dir.path().join(name));
        paths
            .write(
                &issued.issued.chain_pem,
                &issued.key_pem,
                &issued.issued.bundle_pem,
                true,
            )
            .unwrap();
        paths
    }

    /// Issues `spiffe_id` for an hour into a directory named `name`.
    pub fn identity(&mut self, name: &str, spiffe_id: &str) -> IdentityPaths {
        let now = SystemTime::now();
        self.identity_valid(
            name,
            spiffe_id,
            now - Duration::from_secs(60),
            now + Duration::from_secs(3600),
        )
    }
}

pub struct Sidecar {
    pub gateway: Gateway,
    pub config: PathBuf,
}

impl Sidecar {
    pub async fn start(dir: &Path, name: &str, yaml: &str) -> Sidecar {
        let config = dir.join(format!("{name}.yaml"));
        std::fs::write(&config, yaml).unwrap();
        let gateway = Gateway::start(ConfigSource::SidecarFile(config.clone()))
            .await
            .unwrap_or_else(|e| panic!("sidecar {name} starts: {e}"));
        Sidecar { gateway, config }
    }

    pub fn inbound(&self) -> SocketAddr {
        self.gateway.listener_addr("inbound").expect("inbound listener")
    }

    pub fn outbound(&self) -> SocketAddr {
        self.gateway.listener_addr("outbound").expect("outbound listener")
    }

    pub async fn metrics(&self) -> String {
        let (status, body) = super::get(&format!("http://{}/metrics", self.gateway.admin_addr())).await;
        assert_eq!(status, 200);
        body
    }

    /// The metrics once the line starting with `prefix` shows at least `value` (the connection's
    /// task records a refusal just after the client saw it), or after two seconds.
    pub async fn metric_reaches(&self, prefix: &str, value: f64) -> String {
        for _ in 0..40 {
            let metrics = self.metrics().await;
            if metric(&metrics, prefix) >= value {
                return metrics;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.metrics().await
    }
}

/// The identity block of a sidecar config for `paths`.
pub fn identity_yaml(paths: &IdentityPaths) -> String {
    format!(
        "identity: {{ cert: {}, key: {}, bundle: {} }}\n",
        paths.cert.display(),
        paths.key.display(),
        paths.bundle.display()
    )
}

/// Sends `request` (a complete HTTP/1.1 request with `connection: close`) over mTLS to `address`,
/// presenting `client` (if any) and expecting the server to be `server_id`. `Err`: the handshake or
/// the connection failed (TLS 1.3 reports a refused client certificate only on the first read).
pub async fn mtls_exchange(
    address: SocketAddr,
    bundle: &Path,
    server_id: &str,
    client: Option<&IdentityPaths>,
    request: &str,
) -> std::io::Result<String> {
    let roots = Arc::new(palisade_mesh::verify::load_bundle(bundle).unwrap());
    let verifier = palisade_mesh::SpiffeServerVerifier::new(roots, SpiffePattern::parse(server_id).unwrap());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let config = match client {
        Some(paths) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&paths.cert)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(&paths.key).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(address).await?;
    let mut stream = connector
        .connect(ServerName::try_from("sidecar.invalid").unwrap(), tcp)
        .await?;
    stream.write_all(request.as_bytes()).await?;
    let mut received = Vec::new();
    stream.read_to_end(&mut received).await?;
    if received.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no response"));
    }
    Ok(String::from_utf8_lossy(&received).into_owned())
}

pub fn get_request(path: &str, extra_headers: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: app\r\n{extra_headers}connection: close\r\n\r\n")
}

/// The value of the metric line starting with `prefix`, or 0.
pub fn metric(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}
