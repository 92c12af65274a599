//! Secrets in configuration are references, never literals: `${ENV_VAR}` or `file:/path/to/secret`.
//! The resolved value is held in a type whose `Debug` and `Display` never show it, so that a secret
//! cannot reach a log line by accident.

use std::fmt;
use std::path::Path;

use serde::Deserialize;

/// The reference as written in the config file.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretRef(String);

/// A resolved secret value.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("environment variable {0} is not set")]
    MissingEnv(String),
    #[error("cannot read secret file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("a secret must be a reference (`${{ENV_VAR}}` or `file:/path`), not a literal value")]
    Literal,
    #[error("the secret resolved to an empty value")]
    Empty,
}

impl SecretRef {
    pub fn new(reference: impl Into<String>) -> Self {
        Self(reference.into())
    }

    /// Resolves the reference. Trailing newlines are trimmed from files (as written by `echo` or
    /// Kubernetes secret mounts).
    pub fn resolve(&self) -> Result<SecretValue, SecretError> {
        let reference = self.0.trim();
        let value = if let Some(name) = reference.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
            std::env::var(name).map_err(|_| SecretError::MissingEnv(name.to_string()))?
        } else if let Some(path) = reference.strip_prefix("file:") {
            let text = std::fs::read_to_string(Path::new(path)).map_err(|e| SecretError::File {
                path: path.to_string(),
                reason: e.kind().to_string(),
            })?;
            text.trim_end_matches(['\r', '\n']).to_string()
        } else {
            return Err(SecretError::Literal);
        };
        if value.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(SecretValue(value))
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The reference names where the secret lives, not the secret, so it may be shown.
        write!(f, "SecretRef({:?})", self.0)
    }
}

impl SecretValue {
    /// Wraps a value derived from secrets (a Basic credential) so that it cannot print either.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_and_file_references_resolve_and_literals_are_refused() {
        std::env::set_var("PALISADE_TEST_SECRET_A", "s3cr3t");
        assert_eq!(
            SecretRef::new("${PALISADE_TEST_SECRET_A}").resolve().unwrap().expose(),
            "s3cr3t"
        );
        assert_eq!(
            SecretRef::new("${PALISADE_TEST_SECRET_MISSING}").resolve(),
            Err(SecretError::MissingEnv("PALISADE_TEST_SECRET_MISSING".into()))
        );
        let dir = std::env::temp_dir().join(format!("palisade-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("s");
        std::fs::write(&file, "from-file\n").unwrap();
        let resolved = SecretRef::new(format!("file:{}", file.display())).resolve().unwrap();
        assert_eq!(resolved.expose(), "from-file");
        assert_eq!(SecretRef::new("hunter2").resolve(), Err(SecretError::Literal));
    }

    #[test]
    fn resolved_secrets_never_print() {
        let value = SecretValue("topsecret".into());
        assert!(!format!("{value:?} {value}").contains("topsecret"));
    }
}
