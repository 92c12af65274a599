//! Client certificates at the edge: a TLS listener that asks for (or requires) a certificate from
//! a configured CA, and routes that accept the certificate's identity (`mtls`).

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::AsyncWriteExt;

const SPIFFE_ID: &str = "spiffe://example.org/ns/shop/sa/orders";

struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Pki {
            ca: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// (certificate DER, PKCS#8 key DER)
    fn issue(&self, sans: Vec<SanType>, usage: ExtendedKeyUsagePurpose) -> (Vec<u8>, Vec<u8>) {
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        params.distinguished_name.push(DnType::CommonName, "leaf");
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.der().to_vec(), key.serialize_der())
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

/// Writes the server's files and returns the config for a TLS listener `secure` in `mode`.
fn write_config(dir: &Path, pki: &Pki, echo: SocketAddr, mode: &str) -> String {
    let (cert, key) = pki.issue(
        vec![SanType::DnsName("localhost".try_into().unwrap())],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    std::fs::write(dir.join("server.pem"), pem("CERTIFICATE", &cert)).unwrap();
    std::fs::write(dir.join("server.key"), pem("PRIVATE KEY", &key)).unwrap();
    std::fs::write(dir.join("ca.pem"), pem("CERTIFICATE", pki.ca.der())).unwrap();
    format!(
        "listeners:\n  - {{ name: public, address: 127.0.0.1:0 }}\n  - name: secure\n    address: 127.0.0.1:0\n    tls:\n      cert: {d}/server.pem\n      key: {d}/server.key\n      client_certificates: {{ mode: {mode}, ca: [{d}/ca.pem] }}\nclusters:\n  echo: {{ targets: [\"{echo}\"] }}\nroutes:\n  - {{ name: svc, match: {{ prefix: /svc }}, cluster: echo, authentication: [mtls], authorization: {{ allow: authenticated }} }}\n  - {{ name: open, match: {{ prefix: /open }}, cluster: echo, public: true }}\n",
        d = dir.display()
    )
}

/// GET `path` over TLS, optionally with a client certificate. `Err` when the handshake fails.
async fn tls_get(
    address: SocketAddr,
    pki: &Pki,
    client: Option<(Vec<u8>, Vec<u8>)>,
    path: &str,
) -> std::io::Result<String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(cert)],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(address).await?;
    let mut stream = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut received = Vec::new();
    // TLS 1.3 reports a refused client certificate only on the first read.
    tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut received).await?;
    Ok(String::from_utf8_lossy(&received).into_owned())
}

#[tokio::test]
async fn a_verified_client_certificate_is_the_principal_and_others_are_refused() {
    let echo = support::echo("svc").await;
    let pki = Pki::new("Test CA");
    let dir = tempfile::tempdir().unwrap();
    let gw = support::start(&write_config(dir.path(), &pki, echo, "request")).await;
    let secure = gw.gateway.listener_addr("secure").unwrap();
    let client = pki.issue(
        vec![SanType::URI(SPIFFE_ID.try_into().unwrap())],
        ExtendedKeyUsagePurpose::ClientAuth,
    );

    let response = tls_get(secure, &pki, Some(client.clone()), "/svc/x").await.unwrap();
    assert_eq!(support::status_of(&response), 200, "{response}");
    let body = &response[response.find("\r\n\r\n").unwrap() + 4..];
    let seen = &support::echoed(body)["headers"];
    assert_eq!(seen["x-palisade-subject"][0], SPIFFE_ID);
    assert_eq!(seen["x-palisade-auth"][0], "mtls");

    // `request` mode: no certificate is allowed at the handshake, but an mtls route refuses.
    let response = tls_get(secure, &pki, None, "/svc/x").await.unwrap();
    assert_eq!(support::status_of(&response), 401, "{response}");
    let response = tls_get(secure, &pki, None, "/open").await.unwrap();
    assert_eq!(support::status_of(&response), 200);

    // A certificate from another CA never gets as far as HTTP.
    let rogue = Pki::new("Rogue CA");
    let forged = rogue.issue(
        vec![SanType::URI(SPIFFE_ID.try_into().unwrap())],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let outcome = tls_get(secure, &pki, Some(forged), "/svc/x").await;
    assert!(
        outcome.is_err() || outcome.as_ref().is_ok_and(|r| r.is_empty()),
        "{outcome:?}"
    );

    // A certificate on the plain listener is impossible; the mtls route there is a 401.
    let (status, _) = support::get(&gw.url("/svc/x")).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn require_mode_refuses_the_handshake_without_a_certificate() {
    let echo = support::echo("svc").await;
    let pki = Pki::new("Test CA");
    let dir = tempfile::tempdir().unwrap();
    let gw = support::start(&write_config(dir.path(), &pki, echo, "require")).await;
    let secure = gw.gateway.listener_addr("secure").unwrap();
    let outcome = tls_get(secure, &pki, None, "/open").await;
    assert!(
        outcome.is_err() || outcome.as_ref().is_ok_and(|r| r.is_empty()),
        "{outcome:?}"
    );
    let client = pki.issue(
        vec![SanType::DnsName("billing.shop".try_into().unwrap())],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let response = tls_get(secure, &pki, Some(client), "/svc").await.unwrap();
    assert_eq!(support::status_of(&response), 200, "{response}");
    let body = &response[response.find("\r\n\r\n").unwrap() + 4..];
    assert_eq!(
        support::echoed(body)["headers"]["x-palisade-subject"][0],
        "billing.shop"
    );
}
