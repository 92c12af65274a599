//! The CA on disk: files and modes, issuance, CSR signing, and rotations that never break a peer
//! holding the current bundle.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use palisade_mesh::verify::load_bundle;
use palisade_mesh::{
    CaError, CertificateAuthority, LeafRequest, Lifetimes, SpiffeId, SpiffePattern, SpiffeServerVerifier,
};
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

const ORDERS: &str = "spiffe://example.org/ns/shop/sa/orders";

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("palisade-ca-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn id(text: &str) -> SpiffeId {
    SpiffeId::parse(text).unwrap()
}

/// Verifies `chain_pem` as a server named `expected` against the bundle file in `dir`.
fn verify(dir: &Path, chain_pem: &str, expected: &str) -> Result<(), rustls::Error> {
    let roots = Arc::new(load_bundle(&dir.join("bundle.pem")).unwrap());
    let verifier = SpiffeServerVerifier::new(roots, SpiffePattern::parse(expected).unwrap());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let name = ServerName::try_from("ignored.invalid").unwrap();
    verifier
        .verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
        .map(|_| ())
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_writes_keys_owner_only_and_refuses_to_overwrite() {
    let dir = fresh_dir("init");
    let ca = CertificateAuthority::init(&dir, "example.org", Lifetimes::default()).unwrap();
    assert_eq!(ca.trust_domain(), "example.org");
    for file in [
        "root.pem",
        "root.key",
        "intermediate.pem",
        "intermediate.key",
        "bundle.pem",
        "ca.json",
    ] {
        assert!(dir.join(file).exists(), "{file}");
    }
    #[cfg(unix)]
    {
        assert_eq!(mode(&dir.join("root.key")), 0o600);
        assert_eq!(mode(&dir.join("intermediate.key")), 0o600);
        assert_eq!(mode(&dir.join("bundle.pem")), 0o644);
    }
    let root_before = std::fs::read(dir.join("root.key")).unwrap();
    let again = CertificateAuthority::init(&dir, "example.org", Lifetimes::default());
    assert!(matches!(again, Err(CaError::Exists(_))), "{:?}", again.err());
    assert_eq!(std::fs::read(dir.join("root.key")).unwrap(), root_before);
    assert!(matches!(
        CertificateAuthority::init(&fresh_dir("bad-domain"), "Example.org", Lifetimes::default()),
        Err(CaError::Invalid(_))
    ));
}

#[test]
fn issued_certificates_verify_as_their_spiffe_id_only() {
    let dir = fresh_dir("issue");
    let mut ca = CertificateAuthority::init(&dir, "example.org", Lifetimes::default()).unwrap();
    let issued = ca
        .issue(&LeafRequest::new(id(ORDERS), Duration::from_secs(3600)))
        .unwrap();
    verify(&dir, &issued.issued.chain_pem, ORDERS).unwrap();
    verify(&dir, &issued.issued.chain_pem, "spiffe://example.org/ns/shop/*").unwrap();
    let wrong = verify(
        &dir,
        &issued.issued.chain_pem,
        "spiffe://example.org/ns/shop/sa/payments",
    );
    assert!(wrong.unwrap_err().to_string().contains("expected"));
    let leaf = CertificateDer::pem_slice_iter(issued.issued.chain_pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(palisade_mesh::spiffe_id_of(&leaf).unwrap().as_str(), ORDERS);
    let lifetime = issued.issued.not_after.duration_since(SystemTime::now()).unwrap();
    assert!(lifetime <= Duration::from_secs(3600) && lifetime > Duration::from_secs(3500));
    let outside = ca.issue(&LeafRequest::new(id("spiffe://other.org/x"), Duration::from_secs(60)));
    assert!(matches!(outside, Err(CaError::OutsideTrustDomain { .. })));
}

#[test]
fn a_leaf_never_outlives_its_intermediate() {
    let dir = fresh_dir("clamp");
    let lifetimes = Lifetimes {
        root: Duration::from_secs(86_400 * 30),
        intermediate: Duration::from_secs(86_400),
    };
    let mut ca = CertificateAuthority::init(&dir, "example.org", lifetimes).unwrap();
    let issued = ca
        .issue(&LeafRequest::new(id(ORDERS), Duration::from_secs(86_400 * 7)))
        .unwrap();
    let lifetime = issued.issued.not_after.duration_since(SystemTime::now()).unwrap();
    assert!(lifetime <= Duration::from_secs(86_400), "{lifetime:?}");
}

#[test]
fn csrs_are_signed_for_the_authorized_id_with_only_their_key_taken() {
    let dir = fresh_dir("csr");
    let mut ca = CertificateAuthority::init(&dir, "example.org", Lifetimes::default()).unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = |sans: Vec<rcgen::SanType>| {
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = sans;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.serialize_request(&key).unwrap().pem().unwrap()
    };
    let request = LeafRequest::new(id(ORDERS), Duration::from_secs(600));
    // A CSR asking to be a CA gets an ordinary leaf: nothing but the key is taken from it.
    let plain = csr(vec![]);
    let issued = ca.sign_csr(&plain, &request).unwrap();
    verify(&dir, &issued.chain_pem, ORDERS).unwrap();
    let leaf = CertificateDer::pem_slice_iter(issued.chain_pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    let (_, parsed) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    assert!(!parsed.is_ca());
    assert_eq!(
        parsed.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw()
    );
    let matching = csr(vec![rcgen::SanType::URI(ORDERS.try_into().unwrap())]);
    assert!(ca.sign_csr(&matching, &request).is_ok());
    let other = csr(vec![rcgen::SanType::URI(
        "spiffe://example.org/admin".try_into().unwrap(),
    )]);
    assert!(matches!(ca.sign_csr(&other, &request), Err(CaError::Csr(_))));
    let dns = csr(vec![rcgen::SanType::DnsName("evil.example".try_into().unwrap())]);
    assert!(matches!(ca.sign_csr(&dns, &request), Err(CaError::Csr(_))));
    // A CSR whose signature does not match its key proves no possession.
    let mut tampered = plain.clone().into_bytes();
    let middle = tampered.len() / 2;
    tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    assert!(matches!(ca.sign_csr(&tampered, &request), Err(CaError::Csr(_))));
}

#[test]
fn intermediate_rotation_keeps_earlier_leaves_valid() {
    let dir = fresh_dir("rotate-intermediate");
    let mut ca = CertificateAuthority::init(&dir, "example.org", Lifetimes::default()).unwrap();
    let before = ca
        .issue(&LeafRequest::new(id(ORDERS), Duration::from_secs(600)))
        .unwrap();
    let old_intermediate = std::fs::read_to_string(dir.join("intermediate.pem")).unwrap();
    ca.rotate_intermediate(None).unwrap();
    assert_ne!(
        std::fs::read_to_string(dir.join("intermediate.pem")).unwrap(),
        old_intermediate
    );
    let after = ca
        .issue(&LeafRequest::new(id(ORDERS), Duration::from_secs(600)))
        .unwrap();
    verify(&dir, &before.issued.chain_pem, ORDERS).unwrap();
    verify(&dir, &after.issued.chain_pem, ORDERS).unwrap();
}

#[test]
fn root_rotation_overlaps_until_the_old_leaves_expire() {
    let dir = fresh_dir("rotate-root");
    let mut ca = CertificateAuthority::init(&dir, "example.org", Lifetimes::default()).unwrap();
    let old_leaf = ca
        .issue(&LeafRequest::new(id(ORDERS), Duration::from_secs(600)))
        .unwrap();
    let old_bundle = std::fs::read_to_string(dir.join("bundle.pem")).unwrap();

    ca.stage_root().unwrap();
    let staged_bundle = std::fs::read_to_string(dir.join("bundle.pem")).unwrap();
    assert_eq!(staged_bundle.matches("BEGIN CERTIFICATE").count(), 2);
    assert!(ca.stage_root().is_err(), "one staged root at a time");
    // Staging changes nothing about issuance.
    let still_old_root = ca
        .issue(&LeafRequest::new(id(ORDERS), Duration::from_secs(600)))
        .unwrap();
    verify(&dir, &still_old_root.issued.chain_pem, ORDERS).unwrap();

    ca.activate_root().unwrap();
    let new_leaf = ca
        .issue(&LeafRequest::new(id(ORDERS), Duration::from_secs(600)))
        .unwrap();
    verify(&dir, &old_leaf.issued.chain_pem, ORDERS).unwrap();
    verify(&dir, &new_leaf.issued.chain_pem, ORDERS).unwrap();
    // A peer that never took the new bundle would refuse new leaves: that is why staging comes first.
    let old_bundle_dir = fresh_dir("rotate-root-old-bundle");
    std::fs::create_dir_all(&old_bundle_dir).unwrap();
    std::fs::write(old_bundle_dir.join("bundle.pem"), &old_bundle).unwrap();
    assert!(verify(&old_bundle_dir, &new_leaf.issued.chain_pem, ORDERS).is_err());
    assert!(dir.join("retired-root-r1.key").exists());

    let refused = ca.retire_previous_roots(false, SystemTime::now());
    assert!(
        matches!(refused, Err(CaError::Rotation(_))),
        "old leaves are still valid"
    );
    let after_expiry = SystemTime::now() + Duration::from_secs(700);
    ca.retire_previous_roots(false, after_expiry).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("bundle.pem"))
            .unwrap()
            .matches("BEGIN CERTIFICATE")
            .count(),
        1
    );
    verify(&dir, &new_leaf.issued.chain_pem, ORDERS).unwrap();
    assert!(verify(&dir, &old_leaf.issued.chain_pem, ORDERS).is_err());
}

#[test]
fn rotation_without_the_root_key_says_where_it_looked() {
    let dir = fresh_dir("offline-root");
    let mut ca = CertificateAuthority::init(&dir, "example.org", Lifetimes::default()).unwrap();
    let offline = dir.with_extension("root.key");
    std::fs::rename(dir.join("root.key"), &offline).unwrap();
    assert!(matches!(ca.rotate_intermediate(None), Err(CaError::RootKeyOffline(_))));
    ca.rotate_intermediate(Some(&offline)).unwrap();
    // Issuance needs only the intermediate.
    ca.issue(&LeafRequest::new(id(ORDERS), Duration::from_secs(60)))
        .unwrap();
}
