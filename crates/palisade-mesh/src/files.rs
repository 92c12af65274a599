//! Writing the CA's files safely: whole files replaced by rename (a reader never sees half a
//! certificate), private keys created with mode 0600, and one lock so that two commands (or a command
//! and `ca serve`) never interleave their read-modify-write of the CA's state.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::CaError;

/// Who may read a file we write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Certificates and bundles: anyone on the machine.
    Public,
    /// Private keys and token hashes: the owner only (0600).
    OwnerOnly,
}

/// Replaces `path` with `contents` through a temporary file in the same directory and a rename.
pub fn write_atomically(path: &Path, contents: &[u8], access: Access) -> Result<(), CaError> {
    let temporary = temporary_path(path);
    let result = (|| {
        let mut file = create(&temporary, access)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result.map_err(|source| CaError::io(path, source))
}

/// Writes `path` only if it does not exist yet (keys are never overwritten by accident).
pub fn write_new(path: &Path, contents: &[u8], access: Access) -> Result<(), CaError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    set_mode(&mut options, access);
    let mut file = options.open(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::AlreadyExists => CaError::Exists(path.to_path_buf()),
        _ => CaError::io(path, source),
    })?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|source| CaError::io(path, source))
}

pub fn read_text(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(|source| CaError::io(path, source))
}

fn create(path: &Path, access: Access) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    set_mode(&mut options, access);
    options.open(path)
}

#[cfg(unix)]
fn set_mode(options: &mut OpenOptions, access: Access) {
    use std::os::unix::fs::OpenOptionsExt;
    options.mode(match access {
        Access::Public => 0o644,
        Access::OwnerOnly => 0o600,
    });
}

#[cfg(not(unix))]
fn set_mode(_options: &mut OpenOptions, _access: Access) {}

fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

/// An exclusive lock on a directory's `.lock` file, held until dropped.
pub struct DirectoryLock(#[allow(dead_code)] File);

impl DirectoryLock {
    pub fn acquire(dir: &Path) -> Result<Self, CaError> {
        let path = dir.join(".lock");
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| CaError::io(&path, source))?;
        file.lock().map_err(|source| CaError::io(&path, source))?;
        Ok(Self(file))
    }
}
