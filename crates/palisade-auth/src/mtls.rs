//! Client certificates at the edge: the verifier a TLS listener uses (chains to the configured CA
//! bundles, checked by rustls/webpki during the handshake), and the principal read from a verified
//! certificate: its URI SAN (a SPIFFE ID), DNS SAN or subject CN, as configured.

use std::sync::Arc;

use palisade_core::config::auth::{CertificateSubject, ClientCertificateMode, ClientCertificatesConfig};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::principal::{AuthMethodKind, PrincipalKind};
use crate::{AuthFailure, Principal};

/// The verifier for a listener's `client_certificates`. `Err` names the unreadable bundle.
pub fn client_verifier(config: &ClientCertificatesConfig) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for file in &config.ca {
        roots.roots.extend(palisade_tls::load_bundle(&file.value)?.roots);
    }
    let provider = Arc::new(palisade_tls::provider());
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let builder = match config.mode {
        ClientCertificateMode::Request => builder.allow_unauthenticated(),
        ClientCertificateMode::Require => builder,
    };
    let verifier = builder
        .build()
        .map_err(|e| format!("cannot build the client certificate verifier: {e}"))?;
    if config.trust_domains.is_empty() {
        return Ok(verifier);
    }
    let domains = config.trust_domains.iter().map(|d| d.value.clone()).collect();
    Ok(Arc::new(palisade_tls::TrustDomainClientVerifier::new(
        verifier, domains,
    )))
}

/// The principal of a certificate the handshake already verified.
pub fn principal_from_certificate(der: &[u8], subject_from: &[CertificateSubject]) -> Result<Principal, AuthFailure> {
    let (_, certificate) = X509Certificate::from_der(der).map_err(|_| AuthFailure::CertificateWithoutIdentity)?;
    let subject = subject_from
        .iter()
        .find_map(|source| subject_of(&certificate, *source))
        .ok_or(AuthFailure::CertificateWithoutIdentity)?;
    let expires_at = u64::try_from(certificate.validity().not_after.timestamp()).ok();
    Ok(Principal {
        kind: PrincipalKind::Service,
        method: AuthMethodKind::Mtls,
        subject,
        issuer: certificate.issuer().to_string(),
        scopes: Vec::new(),
        roles: Vec::new(),
        groups: Vec::new(),
        claims: Default::default(),
        expires_at,
    })
}

fn subject_of(certificate: &X509Certificate<'_>, source: CertificateSubject) -> Option<String> {
    let names = || {
        certificate
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| san.value.general_names.clone())
            .unwrap_or_default()
    };
    match source {
        CertificateSubject::UriSan => names().into_iter().find_map(|name| match name {
            GeneralName::URI(uri) => Some(uri.to_string()),
            _ => None,
        }),
        CertificateSubject::DnsSan => names().into_iter().find_map(|name| match name {
            GeneralName::DNSName(dns) => Some(dns.to_string()),
            _ => None,
        }),
        CertificateSubject::CommonName => certificate
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(sans: Vec<rcgen::SanType>, cn: &str) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = sans;
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_subject_comes_from_the_first_configured_source_present() {
        let spiffe = "spiffe://example.org/ns/shop/sa/orders";
        let der = certificate(
            vec![
                rcgen::SanType::URI(spiffe.try_into().unwrap()),
                rcgen::SanType::DnsName("orders.shop".try_into().unwrap()),
            ],
            "orders",
        );
        let all = [
            CertificateSubject::UriSan,
            CertificateSubject::DnsSan,
            CertificateSubject::CommonName,
        ];
        let principal = principal_from_certificate(&der, &all).unwrap();
        assert_eq!(principal.subject, spiffe);
        assert_eq!(principal.kind, PrincipalKind::Service);
        let dns_first = principal_from_certificate(&der, &[CertificateSubject::DnsSan]).unwrap();
        assert_eq!(dns_first.subject, "orders.shop");
        let cn_only = certificate(vec![], "billing");
        assert_eq!(principal_from_certificate(&cn_only, &all).unwrap().subject, "billing");
        assert_eq!(
            principal_from_certificate(&cn_only, &[CertificateSubject::UriSan]),
            Err(AuthFailure::CertificateWithoutIdentity)
        );
    }
}
