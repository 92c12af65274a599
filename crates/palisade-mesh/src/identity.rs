//! A workload's identity on disk: its certificate chain, its private key and the trust bundle, as
//! the sidecar config names them. Written whole-file-at-a-time so that a sidecar watching them never
//! reads half a certificate.

use std::path::{Path, PathBuf};

use crate::files::{write_atomically, write_new, Access};
use crate::CaError;

#[derive(Debug, Clone)]
pub struct IdentityPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub bundle: PathBuf,
}

impl IdentityPaths {
    /// `svid.pem`, `svid.key` and `bundle.pem` in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            cert: dir.join("svid.pem"),
            key: dir.join("svid.key"),
            bundle: dir.join("bundle.pem"),
        }
    }

    /// Writes a new identity. `replace: false` refuses to overwrite an existing key (manual
    /// issuance); renewals replace. The key goes first: the certificate is what announces a change.
    pub fn write(&self, chain_pem: &str, key_pem: &str, bundle_pem: &str, replace: bool) -> Result<(), CaError> {
        if let Some(dir) = self.key.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| CaError::io(dir, source))?;
        }
        if replace {
            write_atomically(&self.key, key_pem.as_bytes(), Access::OwnerOnly)?;
        } else {
            write_new(&self.key, key_pem.as_bytes(), Access::OwnerOnly)?;
        }
        write_atomically(&self.cert, chain_pem.as_bytes(), Access::Public)?;
        self.write_bundle(bundle_pem)
    }

    /// Replaces the bundle alone (when the CA publishes a new root).
    pub fn write_bundle(&self, bundle_pem: &str) -> Result<(), CaError> {
        let current = std::fs::read_to_string(&self.bundle).unwrap_or_default();
        if current == bundle_pem {
            return Ok(());
        }
        write_atomically(&self.bundle, bundle_pem.as_bytes(), Access::Public)
    }
}
