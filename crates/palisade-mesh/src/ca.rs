//! The certificate authority: a root (long-lived, its key can be kept offline) and an intermediate
//! that signs workload certificates (X.509-SVIDs), all ECDSA P-256, kept as PEM files in one directory.
//!
//! ```text
//! DIR/ca.json            trust domain and rotation state
//! DIR/root.pem|.key      the current root (the key is needed only to rotate)
//! DIR/next-root.pem|.key a staged root: already trusted (in the bundle), not yet signing
//! DIR/previous-roots.pem roots replaced by a rotation, trusted until their last leaf expires
//! DIR/intermediate.pem|.key   the signing CA, certified by the current root
//! DIR/bundle.pem         every trusted root: what workloads verify peers against
//! ```
//!
//! Root rotation is three steps so that nothing breaks: `stage_root` publishes a new root in the
//! bundle (workloads pick it up), `activate_root` makes it sign (new leaves chain to it while older
//! ones still chain to the previous root, which stays in the bundle), and `retire_previous_roots`
//! drops old roots once every leaf they vouched for has expired.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::files::{read_text, write_atomically, write_new, Access, DirectoryLock};
use crate::spiffe::{check_trust_domain, SpiffeId};
use crate::CaError;

const META: &str = "ca.json";
const ROOT: &str = "root";
const NEXT_ROOT: &str = "next-root";
const INTERMEDIATE: &str = "intermediate";
const PREVIOUS_ROOTS: &str = "previous-roots.pem";
pub const BUNDLE: &str = "bundle.pem";
/// Leaves start a minute in the past so that a peer whose clock is slightly behind accepts them.
const BACKDATE: Duration = Duration::from_secs(60);

/// Lifetimes chosen at `init` and used again by rotations.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    pub root: Duration,
    pub intermediate: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            root: Duration::from_secs(10 * 365 * 86_400),
            intermediate: Duration::from_secs(365 * 86_400),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    trust_domain: String,
    root_ttl_secs: u64,
    intermediate_ttl_secs: u64,
    /// Generation of the current root, counted from 1 (names the CA certificates).
    root_generation: u32,
    intermediate_generation: u32,
    /// The latest expiry (Unix seconds) of any leaf signed under the current root.
    leaves_valid_until: u64,
    /// Previous roots must stay in the bundle until then (Unix seconds).
    previous_roots_needed_until: u64,
}

/// What a workload certificate says: who, which extra DNS names, and when it is valid.
#[derive(Debug, Clone)]
pub struct LeafRequest {
    pub spiffe_id: SpiffeId,
    pub dns_names: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl LeafRequest {
    /// Valid from a minute ago for `ttl`.
    pub fn new(spiffe_id: SpiffeId, ttl: Duration) -> Self {
        let now = SystemTime::now();
        Self {
            spiffe_id,
            dns_names: Vec::new(),
            not_before: now - BACKDATE,
            not_after: now + ttl,
        }
    }
}

/// A signed workload certificate.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The leaf followed by the intermediate, PEM: what a workload presents.
    pub chain_pem: String,
    /// The trust bundle at the time of issuance, PEM.
    pub bundle_pem: String,
    pub serial: String,
    pub not_after: SystemTime,
}

/// A certificate with a key made here (`ca issue`); the key exists only in this value and the file it
/// is written to.
#[derive(Debug, Clone)]
pub struct IssuedWithKey {
    pub issued: Issued,
    pub key_pem: String,
}

/// An opened CA directory.
pub struct CertificateAuthority {
    dir: PathBuf,
    meta: Meta,
    /// Opened from a read-only copy (a Kubernetes Secret mounted in several replicas): signing
    /// takes no lock and writes nothing.
    read_only: bool,
}

impl CertificateAuthority {
    /// Creates the root and the first intermediate in `dir` (created if missing). Refuses if the
    /// directory already holds a CA.
    pub fn init(dir: &Path, trust_domain: &str, lifetimes: Lifetimes) -> Result<Self, CaError> {
        check_trust_domain(trust_domain).map_err(|e| CaError::Invalid(format!("trust domain: {e}")))?;
        std::fs::create_dir_all(dir).map_err(|source| CaError::io(dir, source))?;
        let _lock = DirectoryLock::acquire(dir)?;
        for existing in [META, "root.key", "intermediate.key"] {
            if dir.join(existing).exists() {
                return Err(CaError::Exists(dir.join(existing)));
            }
        }
        let meta = Meta {
            trust_domain: trust_domain.to_string(),
            root_ttl_secs: lifetimes.root.as_secs(),
            intermediate_ttl_secs: lifetimes.intermediate.as_secs(),
            root_generation: 1,
            intermediate_generation: 1,
            leaves_valid_until: 0,
            previous_roots_needed_until: 0,
        };
        let (root_params, root_key) = new_root(&meta, meta.root_generation, lifetimes.root)?;
        let root_cert = root_params.self_signed(&root_key)?;
        write_new(
            &dir.join("root.key"),
            root_key.serialize_pem().as_bytes(),
            Access::OwnerOnly,
        )?;
        write_new(&dir.join("root.pem"), root_cert.pem().as_bytes(), Access::Public)?;
        let ca = Self {
            dir: dir.to_path_buf(),
            meta,
            read_only: false,
        };
        ca.write_intermediate(&Issuer::new(root_params, root_key))?;
        ca.write_bundle()?;
        ca.save_meta()?;
        Ok(ca)
    }

    pub fn open(dir: &Path) -> Result<Self, CaError> {
        let path = dir.join(META);
        if !path.exists() {
            return Err(CaError::NotInitialized(dir.to_path_buf()));
        }
        let meta: Meta = serde_json::from_str(&read_text(&path)?)
            .map_err(|e| CaError::Invalid(format!("{}: {e}", path.display())))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            meta,
            read_only: false,
        })
    }

    /// Opens a CA directory that this process must not write to: any number of identity service
    /// replicas can sign from the same files. What is not recorded is `leaves_valid_until`, so
    /// retiring an old root must wait out the longest leaf lifetime (see docs/kubernetes.md).
    pub fn open_read_only(dir: &Path) -> Result<Self, CaError> {
        let mut ca = Self::open(dir)?;
        ca.read_only = true;
        Ok(ca)
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    pub fn trust_domain(&self) -> &str {
        &self.meta.trust_domain
    }

    pub fn bundle_pem(&self) -> Result<String, CaError> {
        read_text(&self.dir.join(BUNDLE))
    }

    /// Issues a certificate with a new key pair (for manual use; workloads send CSRs instead).
    pub fn issue(&mut self, request: &LeafRequest) -> Result<IssuedWithKey, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let issued = self.sign_leaf(request, &key)?;
        Ok(IssuedWithKey {
            issued,
            key_pem: key.serialize_pem(),
        })
    }

    /// Checks that `csr_pem` is a well-formed CSR whose signature matches its key (proof of
    /// possession), before anything is spent on it (a join token).
    pub fn check_csr(csr_pem: &str) -> Result<(), CaError> {
        CertificateSigningRequestParams::from_pem(csr_pem)
            .map(|_| ())
            .map_err(|e| CaError::Csr(format!("not a valid signed CSR: {e}")))
    }

    /// Signs the public key of a CSR for `request`'s identity. Only the key is taken from the CSR
    /// (after its proof-of-possession signature is checked); names and extensions come from the
    /// request, which the caller has authorized, never from what the CSR asks for.
    pub fn sign_csr(&mut self, csr_pem: &str, request: &LeafRequest) -> Result<Issued, CaError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CaError::Csr(format!("not a valid signed CSR: {e}")))?;
        let asked: Vec<&SanType> = csr.params.subject_alt_names.iter().collect();
        let matches_request = asked
            .iter()
            .all(|san| matches!(san, SanType::URI(uri) if uri.as_str() == request.spiffe_id.as_str()));
        if !matches_request {
            return Err(CaError::Csr(format!(
                "the CSR may name only {} (as its one URI SAN) or nothing",
                request.spiffe_id
            )));
        }
        self.sign_leaf(request, &csr.public_key)
    }

    fn sign_leaf(&mut self, request: &LeafRequest, key: &impl rcgen::PublicKeyData) -> Result<Issued, CaError> {
        if request.spiffe_id.trust_domain() != self.meta.trust_domain {
            return Err(CaError::OutsideTrustDomain {
                id: request.spiffe_id.to_string(),
                trust_domain: self.meta.trust_domain.clone(),
            });
        }
        let read_only = self.read_only;
        let _lock = if read_only {
            None
        } else {
            Some(DirectoryLock::acquire(&self.dir)?)
        };
        // Re-read: a rotation may have happened since this value was opened (`ca serve` runs for long).
        *self = Self::open(&self.dir)?;
        self.read_only = read_only;
        let intermediate_pem = read_text(&self.dir.join("intermediate.pem"))?;
        let intermediate_key = KeyPair::from_pem(&read_text(&self.dir.join("intermediate.key"))?)?;
        let intermediate_expiry = not_after_of(&intermediate_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&intermediate_pem, intermediate_key)?;
        // A leaf never outlives the CA that signed it.
        let not_after = request.not_after.min(intermediate_expiry);
        let params = leaf_params(request, not_after)?;
        let serial = serial_text(&params);
        let leaf = params.signed_by(key, &issuer)?;
        let expiry = unix_seconds(not_after);
        if !self.read_only && expiry > self.meta.leaves_valid_until {
            self.meta.leaves_valid_until = expiry;
            self.save_meta()?;
        }
        Ok(Issued {
            chain_pem: format!("{}{}", leaf.pem(), intermediate_pem),
            bundle_pem: self.bundle_pem()?,
            serial,
            not_after,
        })
    }

    /// A new intermediate certified by the current root. Leaves already issued stay valid: they carry
    /// their own intermediate and chain to the same root.
    pub fn rotate_intermediate(&mut self, root_key: Option<&Path>) -> Result<(), CaError> {
        let _lock = DirectoryLock::acquire(&self.dir)?;
        let root = self.root_issuer(ROOT, root_key)?;
        self.meta.intermediate_generation += 1;
        self.write_intermediate(&root)?;
        self.save_meta()
    }

    /// Step 1 of a root rotation: a new root, trusted (in the bundle) but not yet signing.
    pub fn stage_root(&mut self) -> Result<(), CaError> {
        let _lock = DirectoryLock::acquire(&self.dir)?;
        if self.dir.join(format!("{NEXT_ROOT}.pem")).exists() {
            return Err(CaError::Rotation(
                "a staged root exists already: activate it first (ca rotate --activate-root)".into(),
            ));
        }
        let generation = self.meta.root_generation + 1;
        let (params, key) = new_root(&self.meta, generation, Duration::from_secs(self.meta.root_ttl_secs))?;
        let cert = params.self_signed(&key)?;
        write_new(
            &self.key_path(NEXT_ROOT),
            key.serialize_pem().as_bytes(),
            Access::OwnerOnly,
        )?;
        write_atomically(&self.cert_path(NEXT_ROOT), cert.pem().as_bytes(), Access::Public)?;
        self.write_bundle()
    }

    /// Step 2: the staged root becomes the current root with a new intermediate; the old root stays
    /// trusted until every leaf issued under it has expired.
    pub fn activate_root(&mut self) -> Result<(), CaError> {
        let _lock = DirectoryLock::acquire(&self.dir)?;
        let staged_cert = self.cert_path(NEXT_ROOT);
        if !staged_cert.exists() {
            return Err(CaError::Rotation("no staged root: run ca rotate --root first".into()));
        }
        let mut previous = read_optional(&self.dir.join(PREVIOUS_ROOTS))?;
        previous.push_str(&read_text(&self.cert_path(ROOT))?);
        write_atomically(&self.dir.join(PREVIOUS_ROOTS), previous.as_bytes(), Access::Public)?;
        // The old root must never sign again; its key (unless kept offline) is set aside for the
        // operator to archive or destroy.
        if self.key_path(ROOT).exists() {
            let retired = self
                .dir
                .join(format!("retired-root-r{}.key", self.meta.root_generation));
            rename(&self.key_path(ROOT), &retired)?;
        }
        rename(&staged_cert, &self.cert_path(ROOT))?;
        rename(&self.key_path(NEXT_ROOT), &self.key_path(ROOT))?;
        self.meta.root_generation += 1;
        self.meta.intermediate_generation += 1;
        self.meta.previous_roots_needed_until = self.meta.previous_roots_needed_until.max(self.meta.leaves_valid_until);
        self.meta.leaves_valid_until = 0;
        let root = self.root_issuer(ROOT, None)?;
        self.write_intermediate(&root)?;
        self.write_bundle()?;
        self.save_meta()
    }

    /// Step 3: drop previous roots from the bundle. Refused while a leaf they signed may still be
    /// valid, unless `force`.
    pub fn retire_previous_roots(&mut self, force: bool, now: SystemTime) -> Result<(), CaError> {
        let _lock = DirectoryLock::acquire(&self.dir)?;
        let needed_until = self.meta.previous_roots_needed_until;
        if !force && unix_seconds(now) < needed_until {
            return Err(CaError::Rotation(format!(
                "leaves signed under a previous root are valid until {} (Unix time {needed_until}); \
                 retire after that or pass --force",
                humanize(needed_until)
            )));
        }
        let path = self.dir.join(PREVIOUS_ROOTS);
        if path.exists() {
            std::fs::remove_file(&path).map_err(|source| CaError::io(&path, source))?;
        }
        self.meta.previous_roots_needed_until = 0;
        self.write_bundle()?;
        self.save_meta()
    }

    fn root_issuer(&self, name: &str, key_path: Option<&Path>) -> Result<Issuer<'static, KeyPair>, CaError> {
        let default_key = self.key_path(name);
        let key_path = key_path.unwrap_or(&default_key);
        if !key_path.exists() {
            return Err(CaError::RootKeyOffline(key_path.to_path_buf()));
        }
        let key = KeyPair::from_pem(&read_text(key_path)?)?;
        let pem = read_text(&self.cert_path(name))?;
        Ok(Issuer::from_ca_cert_pem(&pem, key)?)
    }

    fn write_intermediate(&self, root: &Issuer<'_, KeyPair>) -> Result<(), CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = ca_params(
            format!(
                "Palisade intermediate CA {} r{}.{}",
                self.meta.trust_domain, self.meta.root_generation, self.meta.intermediate_generation
            ),
            Duration::from_secs(self.meta.intermediate_ttl_secs),
            0,
        );
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, root)?;
        // Key first: a certificate whose key is missing would be unusable; the reverse is harmless.
        write_atomically(
            &self.key_path(INTERMEDIATE),
            key.serialize_pem().as_bytes(),
            Access::OwnerOnly,
        )?;
        write_atomically(&self.cert_path(INTERMEDIATE), cert.pem().as_bytes(), Access::Public)
    }

    fn write_bundle(&self) -> Result<(), CaError> {
        let mut bundle = read_text(&self.cert_path(ROOT))?;
        bundle.push_str(&read_optional(&self.cert_path(NEXT_ROOT))?);
        bundle.push_str(&read_optional(&self.dir.join(PREVIOUS_ROOTS))?);
        write_atomically(&self.dir.join(BUNDLE), bundle.as_bytes(), Access::Public)
    }

    fn save_meta(&self) -> Result<(), CaError> {
        let text = serde_json::to_string_pretty(&self.meta).map_err(|e| CaError::Invalid(e.to_string()))?;
        write_atomically(&self.dir.join(META), text.as_bytes(), Access::Public)
    }

    fn cert_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pem"))
    }

    fn key_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }
}

fn new_root(meta: &Meta, generation: u32, ttl: Duration) -> Result<(CertificateParams, KeyPair), CaError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let params = ca_params(format!("Palisade root CA {} r{generation}", meta.trust_domain), ttl, 1);
    Ok((params, key))
}

fn ca_params(common_name: String, ttl: Duration, path_length: u8) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::OrganizationName, "Palisade");
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_length));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + ttl;
    params.serial_number = Some(random_serial());
    params
}

/// An X.509-SVID: exactly one URI SAN (the SPIFFE ID), no subject, not a CA, usable as both TLS
/// client and server.
fn leaf_params(request: &LeafRequest, not_after: SystemTime) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let uri = request
        .spiffe_id
        .as_str()
        .try_into()
        .map_err(|_| CaError::Invalid("SPIFFE ID is not ASCII".into()))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    for name in &request.dns_names {
        let dns = name
            .as_str()
            .try_into()
            .map_err(|_| CaError::Invalid(format!("{name:?} is not a DNS name")))?;
        params.subject_alt_names.push(SanType::DnsName(dns));
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = request.not_before.into();
    params.not_after = not_after.into();
    params.serial_number = Some(random_serial());
    Ok(params)
}

/// 128 random bits, positive (RFC 5280 §4.1.2.2 allows up to 20 octets).
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

fn serial_text(params: &CertificateParams) -> String {
    params
        .serial_number
        .as_ref()
        .map(|s| s.to_bytes().iter().map(|b| format!("{b:02x}")).collect())
        .unwrap_or_default()
}

/// The `notAfter` of the first certificate in `pem`.
pub fn not_after_of(pem: &str) -> Result<SystemTime, CaError> {
    let der = first_certificate(pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| CaError::Invalid(format!("unreadable certificate: {e}")))?;
    let seconds = u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0);
    Ok(UNIX_EPOCH + Duration::from_secs(seconds))
}

fn first_certificate(pem: &str) -> Result<Vec<u8>, CaError> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .and_then(Result::ok)
        .map(|der| der.to_vec())
        .ok_or_else(|| CaError::Invalid("no PEM certificate".into()))
}

fn read_optional(path: &Path) -> Result<String, CaError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(CaError::io(path, source)),
    }
}

fn rename(from: &Path, to: &Path) -> Result<(), CaError> {
    std::fs::rename(from, to).map_err(|source| CaError::io(from, source))
}

pub fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// RFC 3339 in UTC, for messages.
pub fn humanize(unix: u64) -> String {
    OffsetDateTime::from_unix_timestamp(i64::try_from(unix).unwrap_or(i64::MAX))
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}
