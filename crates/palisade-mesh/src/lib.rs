//! Service identity for Palisade's mesh: SPIFFE IDs, the certificate authority that issues
//! short-lived X.509-SVIDs, one-time join tokens, and the rustls verifiers that check peers by
//! identity rather than by host name.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

pub mod agent;
pub mod attest;
pub mod ca;
pub mod dynamic;
mod files;
pub mod identity;
pub mod server;
pub mod status;
pub mod tokens;
/// Peer verification by SPIFFE ID lives in `palisade-tls` (the gateway and auth use it without the
/// rest of the mesh); kept reachable here under its old path.
pub use palisade_tls::verify;

pub use ca::{CertificateAuthority, Issued, IssuedWithKey, LeafRequest, Lifetimes};
pub use identity::IdentityPaths;
/// SPIFFE IDs live in the core crate (config validation needs them); re-exported here.
pub use palisade_core::spiffe;
pub use spiffe::{SpiffeId, SpiffeIdError, SpiffePattern};
pub use verify::{spiffe_id_of, IdentityError, SpiffeServerVerifier, TrustDomainClientVerifier};

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} exists already: refusing to overwrite it")]
    Exists(PathBuf),
    #[error("{0} holds no certificate authority (run palisade ca init)")]
    NotInitialized(PathBuf),
    #[error("the root key is not at {0} (kept offline?): pass --root-key")]
    RootKeyOffline(PathBuf),
    #[error("{id} is outside the trust domain {trust_domain}")]
    OutsideTrustDomain { id: String, trust_domain: String },
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("{0}")]
    Csr(String),
    #[error("{0}")]
    Rotation(String),
    #[error("{0}")]
    Invalid(String),
}

impl CaError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
