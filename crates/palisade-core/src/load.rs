//! Reading a configuration file: strict YAML into typed structs, then validation. Nothing here is
//! called at request time; the result is swapped in whole by the gateway.

use std::path::Path;

use crate::config::Config;
use crate::diagnostic::{ConfigErrors, Diagnostic, Diagnostics};
use crate::validate;

/// Files larger than this are refused before parsing: a config is kilobytes, not megabytes.
pub const MAX_CONFIG_BYTES: u64 = 8 * 1024 * 1024;

/// Reads, parses and validates the file at `path`.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let (config, diagnostics) = load_file_partially(path)?;
    diagnostics.finish(config)
}

/// Parses and validates config text. `file` names the source in diagnostics; relative paths inside the
/// config (TLS files) are resolved against `base_dir`.
pub fn parse_str(file: &str, text: &str, base_dir: Option<&Path>) -> Result<Config, ConfigErrors> {
    let (config, diagnostics) = parse_partially(file, text, base_dir)?;
    diagnostics.finish(config)
}

/// Like [`load_file`], but hands back the validation findings unfinished, so that a later stage (the
/// gateway's route and TLS checks) can add its own and every problem is reported in one run. Only
/// errors that leave no config to look at (unreadable file, YAML syntax, wrong types) are returned
/// as `Err`.
pub fn load_file_partially(path: &Path) -> Result<(Config, Diagnostics), ConfigErrors> {
    let text = read_bounded(path)?;
    parse_partially(&path.display().to_string(), &text, path.parent())
}

/// Which kind of file a config comes from: a gateway config, or a sidecar config that is translated
/// into one (see [`crate::config::sidecar`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigKind {
    Gateway,
    Sidecar,
}

impl ConfigKind {
    /// Like [`load_file_partially`], for either kind of file.
    pub fn load_partially(self, path: &Path) -> Result<(Config, Diagnostics), ConfigErrors> {
        match self {
            Self::Gateway => load_file_partially(path),
            Self::Sidecar => load_sidecar_partially(path),
        }
    }
}

/// Reads a sidecar file as written (its identity paths resolved against the file's directory), for
/// the parts of the sidecar that live outside the gateway config (the identity agent).
pub fn load_sidecar(path: &Path) -> Result<crate::config::sidecar::SidecarConfig, ConfigErrors> {
    let text = read_bounded(path)?;
    let file = path.display().to_string();
    let mut sidecar: crate::config::sidecar::SidecarConfig =
        serde_saphyr::from_str(&text).map_err(|e| ConfigErrors(vec![parse_diagnostic(&file, &e)]))?;
    if let Some(dir) = path.parent() {
        let identity = &mut sidecar.identity;
        let mut files = vec![&mut identity.cert, &mut identity.key, &mut identity.bundle];
        if let Some(service) = identity.ca.as_mut() {
            let service = &mut service.value;
            files.extend(service.service_account_token.as_mut());
            files.extend(service.bootstrap_bundle.as_mut());
        }
        for file in files {
            if file.value.is_relative() {
                file.value = dir.join(&file.value);
            }
        }
    }
    Ok(sidecar)
}

fn load_sidecar_partially(path: &Path) -> Result<(Config, Diagnostics), ConfigErrors> {
    let sidecar = load_sidecar(path)?;
    let file = path.display().to_string();
    let mut diagnostics = Diagnostics::new(&file);
    let identity_only = sidecar.identity_only();
    let mut config = sidecar.into_gateway(&mut diagnostics);
    if let Some(dir) = path.parent() {
        validate::resolve_relative_paths(&mut config, dir);
    }
    // An identity-only sidecar runs no gateway: there is nothing to route or listen on.
    if !identity_only {
        validate::validate(&config, &mut diagnostics);
    }
    Ok((config, diagnostics))
}

/// Reads a YAML file that the config names (an API key list, a policy set) into `T`, with the same
/// size limit and `file:line:column` errors as the config itself.
pub fn load_yaml_file<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigErrors> {
    let text = read_bounded(path)?;
    serde_saphyr::from_str(&text).map_err(|e| ConfigErrors(vec![parse_diagnostic(&path.display().to_string(), &e)]))
}

/// Parses a YAML fragment into any config type (tests, and tools that check one section).
pub fn parse_fragment<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ConfigErrors> {
    serde_saphyr::from_str(text).map_err(|e| ConfigErrors(vec![parse_diagnostic("fragment", &e)]))
}

/// The file's text, refused when it is unreadable or larger than [`MAX_CONFIG_BYTES`].
fn read_bounded(path: &Path) -> Result<String, ConfigErrors> {
    let fail = |message: String| {
        ConfigErrors(vec![Diagnostic {
            file: path.display().to_string(),
            line: 0,
            column: 0,
            message,
        }])
    };
    let metadata = std::fs::metadata(path).map_err(|e| fail(format!("cannot read: {}", e.kind())))?;
    if metadata.len() > MAX_CONFIG_BYTES {
        return Err(fail(format!(
            "file is {} bytes; the limit is {MAX_CONFIG_BYTES}",
            metadata.len()
        )));
    }
    std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {}", e.kind())))
}

/// Like [`parse_str`], with the findings left unfinished (see [`load_file_partially`]).
pub fn parse_partially(file: &str, text: &str, base_dir: Option<&Path>) -> Result<(Config, Diagnostics), ConfigErrors> {
    let mut config: Config =
        serde_saphyr::from_str(text).map_err(|e| ConfigErrors(vec![parse_diagnostic(file, &e)]))?;
    let mut diagnostics = Diagnostics::new(file);
    if let Some(dir) = base_dir {
        validate::resolve_relative_paths(&mut config, dir);
    }
    validate::validate(&config, &mut diagnostics);
    Ok((config, diagnostics))
}

fn parse_diagnostic(file: &str, error: &serde_saphyr::Error) -> Diagnostic {
    let (line, column) = error.location().map(|l| (l.line(), l.column())).unwrap_or((0, 0));
    Diagnostic {
        file: file.to_string(),
        line,
        column,
        message: error_message(error),
    }
}

/// serde-saphyr renders a source snippet and its own location; we report the location ourselves in
/// `file:line:column` form, so keep only the first line of the message, without its trailing location.
fn error_message(error: &serde_saphyr::Error) -> String {
    let rendered = error.without_snippet().to_string();
    let first = rendered.lines().next().unwrap_or("invalid configuration").trim();
    let trimmed = match first.rfind(" at line ") {
        Some(at) => &first[..at],
        None => first,
    };
    trimmed.trim_end_matches(':').to_string()
}
