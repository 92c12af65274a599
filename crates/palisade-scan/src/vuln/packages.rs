//! Installed packages: from lockfiles in a tree, and from the dpkg and apk databases of an image.

use std::collections::BTreeSet;

use serde::Deserialize;

use crate::finding::Layer;
use crate::secrets::LineIndex;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// OSV ecosystem: `crates.io`, `npm`, `PyPI`, `Go`, `Debian:12`, `Alpine:v3.19`.
    pub ecosystem: String,
    /// The name advisories use: for Debian and Alpine the source package.
    pub name: String,
    pub version: String,
    pub path: String,
    pub line: usize,
    pub layer: Option<Layer>,
    /// The installed (binary) package when advisories name another (a Debian or Alpine source).
    pub binary: Option<String>,
    /// The declared license, where the package says (SPDX expression or the package's own text).
    pub license: Option<String>,
}

impl Package {
    pub fn new(ecosystem: &str, name: String, version: String, path: &str, line: usize) -> Self {
        Self {
            ecosystem: ecosystem.to_string(),
            name,
            version,
            path: path.to_string(),
            line,
            layer: None,
            binary: None,
            license: None,
        }
    }

    pub fn with_binary(mut self, binary: Option<String>) -> Self {
        self.binary = binary.filter(|b| *b != self.name);
        self
    }

    pub fn with_license(mut self, license: Option<String>) -> Self {
        self.license = license.filter(|l| !l.trim().is_empty());
        self
    }
}

/// Lockfile kinds, recognised by file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lockfile {
    Cargo,
    NpmPackageLock,
    Yarn,
    Requirements,
    Poetry,
    GoSum,
}

impl Lockfile {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "Cargo.lock" => Some(Self::Cargo),
            "package-lock.json" | "npm-shrinkwrap.json" => Some(Self::NpmPackageLock),
            "yarn.lock" => Some(Self::Yarn),
            "poetry.lock" => Some(Self::Poetry),
            "go.sum" => Some(Self::GoSum),
            n if n.starts_with("requirements") && n.ends_with(".txt") => Some(Self::Requirements),
            _ => None,
        }
    }

    pub fn packages(self, path: &str, text: &str) -> Vec<Package> {
        let found = match self {
            Self::Cargo => toml_packages(text, "crates.io", |source| {
                source.is_some_and(|s| s.starts_with("registry+") || s.starts_with("sparse+"))
            }),
            Self::Poetry => toml_packages(text, "PyPI", |_| true),
            Self::NpmPackageLock => npm_packages(text),
            Self::Yarn => yarn_packages(text),
            Self::Requirements => requirements(text),
            Self::GoSum => go_sum(text),
        };
        found
            .into_iter()
            .map(|(ecosystem, name, version, line)| Package::new(ecosystem, name, version, path, line))
            .collect()
    }
}

type Found = (&'static str, String, String, usize);

/// Cargo.lock and poetry.lock: `[[package]]` tables with `name` and `version`.
fn toml_packages(text: &str, ecosystem: &'static str, include: fn(Option<&str>) -> bool) -> Vec<Found> {
    #[derive(Deserialize)]
    struct Lock {
        #[serde(default)]
        package: Vec<toml::Spanned<Entry>>,
    }
    #[derive(Deserialize)]
    struct Entry {
        name: String,
        version: String,
        source: Option<String>,
    }
    let Ok(lock) = toml::from_str::<Lock>(text) else {
        return Vec::new();
    };
    let lines = LineIndex::new(text);
    lock.package
        .into_iter()
        .filter(|p| include(p.get_ref().source.as_deref()))
        .map(|p| {
            let line = lines.line_of(p.span().start);
            let entry = p.into_inner();
            (ecosystem, entry.name, entry.version, line)
        })
        .collect()
}

/// package-lock.json v2/v3 (`packages`, keyed by `node_modules/…` paths) or v1 (`dependencies`).
fn npm_packages(text: &str) -> Vec<Found> {
    let Ok(lock) = serde_json::from_str::<serde_json::Value>(text) else {
        return Vec::new();
    };
    let lines = LineIndex::new(text);
    let mut found = Vec::new();
    if let Some(packages) = lock.get("packages").and_then(|p| p.as_object()) {
        for (key, package) in packages {
            let Some(name) = key
                .rsplit("node_modules/")
                .next()
                .filter(|_| key.contains("node_modules/"))
            else {
                continue;
            };
            if package.get("link").and_then(|l| l.as_bool()) == Some(true) {
                continue;
            }
            // An alias (`"lodash-old": "npm:lodash@4.17.15"`) is installed under its alias;
            // `name` is the real package, the one advisories name.
            let name = package.get("name").and_then(|n| n.as_str()).unwrap_or(name);
            if let Some(version) = package.get("version").and_then(|v| v.as_str()) {
                found.push((
                    "npm",
                    name.to_string(),
                    version.to_string(),
                    line_of_text(text, &lines, &format!("\"{key}\"")),
                ));
            }
        }
    } else if let Some(dependencies) = lock.get("dependencies") {
        npm_v1(text, &lines, dependencies, &mut found);
    }
    found
}

fn npm_v1(text: &str, lines: &LineIndex, dependencies: &serde_json::Value, found: &mut Vec<Found>) {
    for (name, dependency) in dependencies.as_object().into_iter().flatten() {
        if let Some(version) = dependency.get("version").and_then(|v| v.as_str()) {
            found.push((
                "npm",
                name.clone(),
                version.to_string(),
                line_of_text(text, lines, &format!("\"{name}\": {{")),
            ));
        }
        if let Some(nested) = dependency.get("dependencies") {
            npm_v1(text, lines, nested, found);
        }
    }
}

/// yarn.lock v1 (`"a@^1", a@~1.2:` then `  version "1.2.3"`) and Berry (`version: 1.2.3`).
fn yarn_packages(text: &str) -> Vec<Found> {
    let mut found = Vec::new();
    let mut current: Option<(String, usize)> = None;
    for (index, line) in text.lines().enumerate() {
        if !line.starts_with(' ') && line.ends_with(':') && !line.starts_with('#') && !line.starts_with("__metadata") {
            let first = line
                .trim_end_matches(':')
                .split(", ")
                .next()
                .unwrap_or_default()
                .trim_matches('"');
            current = yarn_name(first).map(|name| (name, index + 1));
        } else if let Some((name, header_line)) = &current {
            let trimmed = line.trim();
            let version = trimmed
                .strip_prefix("version ")
                .or_else(|| trimmed.strip_prefix("version: "));
            if let Some(version) = version {
                found.push(("npm", name.clone(), version.trim_matches('"').to_string(), *header_line));
                current = None;
            }
        }
    }
    found
}

/// `@scope/name@^1.0` or `name@npm:^1.0` → the package name; workspace and patch entries → none.
fn yarn_name(specifier: &str) -> Option<String> {
    // The first character may be a scope's `@`; the version separator is the next `@`.
    let at = specifier.get(1..)?.find('@')? + 1;
    let (name, range) = specifier.split_at(at);
    if range.contains("workspace:") || range.contains("patch:") || range.contains("link:") {
        return None;
    }
    Some(name.to_string())
}

/// Only exact pins (`name==1.2.3`) name a version; ranges are what a lockfile would resolve.
fn requirements(text: &str) -> Vec<Found> {
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.split(" #").next().unwrap_or_default().trim();
        if line.starts_with('#') || line.starts_with('-') {
            continue;
        }
        let line = line.split(';').next().unwrap_or_default().trim();
        let Some((name, version)) = line.split_once("===").or_else(|| line.split_once("==")) else {
            continue;
        };
        let name = name.split('[').next().unwrap_or_default().trim();
        let version = version.split([',', ' ']).next().unwrap_or_default().trim();
        if !name.is_empty() && !version.is_empty() && !version.contains('*') {
            found.push(("PyPI", name.to_string(), version.to_string(), index + 1));
        }
    }
    found
}

/// go.sum: `module version[/go.mod] hash`, each module@version once.
fn go_sum(text: &str) -> Vec<Found> {
    let mut seen = BTreeSet::new();
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let mut words = line.split_whitespace();
        let (Some(module), Some(version)) = (words.next(), words.next()) else {
            continue;
        };
        let version = version.trim_end_matches("/go.mod");
        if seen.insert((module.to_string(), version.to_string())) {
            found.push(("Go", module.to_string(), version.to_string(), index + 1));
        }
    }
    found
}

/// The line where `needle` first stands (0 when it does not): npm lockfiles are located by key.
fn line_of_text(text: &str, lines: &LineIndex, needle: &str) -> usize {
    text.find(needle).map_or(0, |offset| lines.line_of(offset))
}

/// The distribution an image runs, from `/etc/os-release`: (`ID`, `VERSION_ID`).
pub fn os_release(text: &str) -> Option<(String, String)> {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
            .map(|v| v.trim().trim_matches('"').to_string())
    };
    Some((field("ID")?, field("VERSION_ID")?))
}

/// The OSV ecosystem of an OS release: `Debian:12`, `Ubuntu:22.04`, `Alpine:v3.19`.
pub fn os_ecosystem(id: &str, version_id: &str) -> Option<String> {
    match id {
        "debian" => Some(format!("Debian:{}", version_id.split('.').next().unwrap_or(version_id))),
        "ubuntu" => Some(format!("Ubuntu:{version_id}")),
        "alpine" => {
            let mut parts = version_id.split('.');
            Some(format!("Alpine:v{}.{}", parts.next()?, parts.next()?))
        }
        _ => None,
    }
}

/// `/var/lib/dpkg/status`: installed packages, named by their source package (what Debian's
/// advisories name) with the binary's version.
pub fn dpkg_status(text: &str, ecosystem: &str, path: &str) -> Vec<Package> {
    paragraphs(text)
        .filter_map(|(line, fields)| {
            let field = |key: &str| fields.iter().find(|(k, _)| *k == key).map(|(_, v)| v.to_string());
            if !field("Status")?.ends_with(" installed") {
                return None;
            }
            let binary = field("Package")?;
            let version = field("Version")?;
            // `Source: openssl (3.0.11-1)` names the source and, when it differs, its version.
            let (name, version) = match field("Source") {
                Some(source) => match source.split_once(" (") {
                    Some((name, source_version)) => {
                        (name.to_string(), source_version.trim_end_matches(')').to_string())
                    }
                    None => (source, version),
                },
                None => (binary.clone(), version),
            };
            Some(Package::new(ecosystem, name, version, path, line).with_binary(Some(binary)))
        })
        .collect()
}

/// `/lib/apk/db/installed`: `P:` name, `V:` version, `o:` origin (source) package.
pub fn apk_installed(text: &str, ecosystem: &str, path: &str) -> Vec<Package> {
    paragraphs(text)
        .filter_map(|(line, fields)| {
            let field = |key: &str| fields.iter().find(|(k, _)| *k == key).map(|(_, v)| v.to_string());
            let name = field("o").or_else(|| field("P"))?;
            let package = Package::new(ecosystem, name, field("V")?, path, line)
                .with_binary(field("P"))
                .with_license(field("L"));
            Some(package)
        })
        .collect()
}

/// Blank-line separated `Key: value` (dpkg) or `K:value` (apk) paragraphs, with their first line.
fn paragraphs(text: &str) -> impl Iterator<Item = (usize, Vec<(&str, &str)>)> {
    let mut out = Vec::new();
    let mut current: Vec<(&str, &str)> = Vec::new();
    let mut start = 1;
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            if !current.is_empty() {
                out.push((start, std::mem::take(&mut current)));
            }
            start = index + 2;
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            continue; // continuation of a multi-line field (Description, Conffiles)
        }
        if let Some((key, value)) = line.split_once(':') {
            current.push((key, value.trim()));
        }
    }
    if !current.is_empty() {
        out.push((start, current));
    }
    out.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yarn_names_keep_scopes() {
        assert_eq!(yarn_name("@babel/core@^7.0.0").as_deref(), Some("@babel/core"));
        assert_eq!(yarn_name("lodash@npm:^4.17.21").as_deref(), Some("lodash"));
        assert_eq!(yarn_name("app@workspace:."), None);
        assert_eq!(yarn_name(""), None);
        assert_eq!(yarn_name("é@1"), None, "no panic on a multi-byte first character");
    }

    #[test]
    fn os_ecosystems() {
        assert_eq!(os_ecosystem("debian", "12").as_deref(), Some("Debian:12"));
        assert_eq!(os_ecosystem("alpine", "3.19.1").as_deref(), Some("Alpine:v3.19"));
    }
}
