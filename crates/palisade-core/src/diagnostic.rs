//! Configuration errors that point at `file:line:column`, collected so that one run reports them all.

use std::fmt;

use serde_saphyr::{Location, Spanned};

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    /// 1-based; 0 when the problem has no single place (a missing section, a default value).
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}:{}:{}: {}", self.file, self.line, self.column, self.message)
        }
    }
}

/// All problems found in one configuration; never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<Diagnostic>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

/// Collects diagnostics for one file while validation walks the config.
#[derive(Debug)]
pub struct Diagnostics {
    file: String,
    found: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn new(file: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            found: Vec::new(),
        }
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    pub fn at(&mut self, location: Location, message: impl Into<String>) {
        let known = location != Location::UNKNOWN;
        self.found.push(Diagnostic {
            file: self.file.clone(),
            line: if known { location.line() } else { 0 },
            column: if known { location.column() } else { 0 },
            message: message.into(),
        });
    }

    /// A problem with a value, reported where the value was written.
    pub fn on<T>(&mut self, value: &Spanned<T>, message: impl Into<String>) {
        self.at(value.referenced, message);
    }

    pub fn general(&mut self, message: impl Into<String>) {
        self.at(Location::UNKNOWN, message);
    }

    /// Takes over the findings about another file (a key file the config names).
    pub fn absorb(&mut self, errors: ConfigErrors) {
        self.found.extend(errors.0);
    }

    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// How many were found so far (a check can tell whether it added any).
    pub fn len(&self) -> usize {
        self.found.len()
    }

    /// `Ok(value)` when nothing was found, otherwise every diagnostic.
    pub fn finish<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.found.is_empty() {
            Ok(value)
        } else {
            Err(ConfigErrors(self.found))
        }
    }

    pub fn into_errors(self) -> Vec<Diagnostic> {
        self.found
    }
}
