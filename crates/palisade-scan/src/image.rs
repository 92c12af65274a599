//! Image tarballs (`docker save` and OCI layout), read in place: the outer tar is indexed once,
//! each layer is streamed (gzip or plain) in order with whiteouts applied, and nothing is extracted
//! to disk. Files of every layer are checked for secrets, so a secret deleted by a later layer is
//! still reported (with the layer that removed it): it remains readable in the image.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use serde::Deserialize;

use crate::dockerfile::is_secret_name;
use crate::finding::{Finding, Layer};
use crate::rules;
use crate::secrets::{self, Allowlist};
use crate::vuln::installed::{self, Installed};
use crate::vuln::packages::{self, Lockfile, Package};
use crate::vuln::rpm;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}: unreadable image ({1})")]
    Format(String, String),
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
}

/// Files larger than this are not read for secrets (binaries, archives, databases).
const MAX_SCANNED_FILE: u64 = 2 * 1024 * 1024;
/// Manifests, configs and indexes are small; refuse absurd ones instead of allocating.
const MAX_JSON: u64 = 16 * 1024 * 1024;

/// An image tarball, indexed once: a tar holding `manifest.json` or an OCI `index.json`.
pub struct Image {
    tar: OuterTar,
    /// Read on first use.
    layout: Option<Layout>,
}

/// The file as an image tarball, or `None` when it is not one (not a tar, or no image manifest).
pub fn open(path: &Path) -> Option<Image> {
    OuterTar::index(path)
        .ok()
        .filter(|tar| tar.members.contains_key("manifest.json") || tar.members.contains_key("index.json"))
        .map(|tar| Image { tar, layout: None })
}

pub struct ImageScan {
    pub findings: Vec<Finding>,
    pub packages: Vec<Package>,
    pub files: usize,
    /// Package databases that could not be read: reported, never fatal.
    pub warnings: Vec<String>,
}

struct OuterTar {
    file: File,
    /// Member name → (offset of its data, size).
    members: HashMap<String, (u64, u64)>,
    name: String,
}

impl OuterTar {
    fn index(path: &Path) -> Result<Self, ImageError> {
        let name = path.display().to_string();
        let io = |e| ImageError::Io(name.clone(), e);
        let file = File::open(path).map_err(io)?;
        let mut members = HashMap::new();
        let mut archive = tar::Archive::new(BufReader::new(file.try_clone().map_err(io)?));
        for entry in archive.entries().map_err(io)? {
            let entry = entry.map_err(io)?;
            let member = entry
                .path()
                .map_err(io)?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string();
            members.insert(member, (entry.raw_file_position(), entry.size()));
        }
        Ok(Self { file, members, name })
    }

    fn reader(&self, member: &str) -> Result<impl Read + '_, ImageError> {
        let (offset, size) = *self
            .members
            .get(member)
            .ok_or_else(|| ImageError::Format(self.name.clone(), format!("missing {member}")))?;
        let mut file = &self.file;
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| ImageError::Io(self.name.clone(), e))?;
        Ok(file.take(size))
    }

    fn json<T: for<'de> Deserialize<'de>>(&self, member: &str) -> Result<T, ImageError> {
        let mut bytes = Vec::new();
        self.reader(member)?
            .take(MAX_JSON)
            .read_to_end(&mut bytes)
            .map_err(|e| ImageError::Io(self.name.clone(), e))?;
        serde_json::from_slice(&bytes).map_err(|e| ImageError::Format(self.name.clone(), format!("{member}: {e}")))
    }
}

#[derive(Deserialize)]
struct DockerManifest {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

#[derive(Deserialize)]
struct OciIndex {
    manifests: Vec<OciDescriptor>,
}

#[derive(Deserialize)]
struct OciDescriptor {
    digest: String,
}

#[derive(Deserialize)]
struct OciManifest {
    #[serde(default)]
    manifests: Vec<OciDescriptor>,
    config: Option<OciDescriptor>,
    #[serde(default)]
    layers: Vec<OciDescriptor>,
}

#[derive(Deserialize, Default)]
struct ImageConfig {
    #[serde(default)]
    config: RunConfig,
    #[serde(default)]
    history: Vec<History>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RunConfig {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Deserialize)]
struct History {
    #[serde(default)]
    created_by: Option<String>,
}

fn blob(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

/// (config member, [(layer member, digest)]).
type Layout = (String, Vec<(String, String)>);

/// The config and layers from either layout.
fn layout(tar: &OuterTar) -> Result<Layout, ImageError> {
    if tar.members.contains_key("manifest.json") {
        let manifests: Vec<DockerManifest> = tar.json("manifest.json")?;
        let manifest = manifests
            .into_iter()
            .next()
            .ok_or_else(|| ImageError::Format(tar.name.clone(), "empty manifest.json".into()))?;
        let layers = manifest
            .layers
            .into_iter()
            .map(|member| {
                let digest = member
                    .rsplit('/')
                    .next()
                    .unwrap_or(&member)
                    .trim_end_matches(".tar")
                    .to_string();
                (member, digest)
            })
            .collect();
        return Ok((manifest.config, layers));
    }
    let index: OciIndex = tar.json("index.json")?;
    let mut digest = index.manifests.first().map(|d| d.digest.clone());
    // A multi-platform index points to further indexes or manifests: follow the first.
    for _ in 0..4 {
        let Some(current) = digest.take() else { break };
        let manifest: OciManifest = tar.json(&blob(&current))?;
        if let Some(config) = manifest.config {
            let layers = manifest
                .layers
                .into_iter()
                .map(|l| (blob(&l.digest), l.digest))
                .collect();
            return Ok((blob(&config.digest), layers));
        }
        digest = manifest.manifests.first().map(|d| d.digest.clone());
    }
    Err(ImageError::Format(
        tar.name.clone(),
        "index.json leads to no image manifest".into(),
    ))
}

/// What the scan remembers of one path of the merged filesystem.
struct PathState {
    layer: usize,
    /// Indexes into the findings of files (secrets), to re-label if the file is removed later.
    findings: Vec<usize>,
    /// Kept for package databases and lockfiles only.
    content: Option<String>,
    /// Packages read from the file's bytes as it streamed by (Java archives, Go binaries).
    binary_packages: Vec<(&'static str, String, String)>,
    /// An RPM database's packages (their ecosystem comes from os-release, read at the end).
    rpm_packages: Vec<rpm::RpmPackage>,
}

/// Where an image's config and layers come from: a tarball on disk or a registry.
pub trait Source {
    /// The image's config blob (JSON).
    fn config(&mut self) -> Result<Vec<u8>, ImageError>;
    /// The layers' digests, bottom first.
    fn layers(&mut self) -> Result<Vec<String>, ImageError>;
    /// One layer as stored (gzip or plain tar). A source that verifies digests fails the read
    /// that reaches the end of a blob whose digest does not match.
    fn layer(&mut self, index: usize) -> Result<Box<dyn Read + '_>, ImageError>;
    /// What errors about this image name.
    fn name(&self) -> &str;
}

impl Source for Image {
    fn config(&mut self) -> Result<Vec<u8>, ImageError> {
        let (config, _) = self.layout()?;
        let config = config.clone();
        let tar = &self.tar;
        let mut bytes = Vec::new();
        tar.reader(&config)?
            .take(MAX_JSON)
            .read_to_end(&mut bytes)
            .map_err(|e| ImageError::Io(tar.name.clone(), e))?;
        Ok(bytes)
    }

    fn layers(&mut self) -> Result<Vec<String>, ImageError> {
        Ok(self.layout()?.1.iter().map(|(_, digest)| digest.clone()).collect())
    }

    fn layer(&mut self, index: usize) -> Result<Box<dyn Read + '_>, ImageError> {
        let member = self
            .layout()?
            .1
            .get(index)
            .map(|(member, _)| member.clone())
            .ok_or_else(|| ImageError::Format(self.tar.name.clone(), format!("no layer {index}")))?;
        Ok(Box::new(self.tar.reader(&member)?))
    }

    fn name(&self) -> &str {
        &self.tar.name
    }
}

impl Image {
    fn layout(&mut self) -> Result<&Layout, ImageError> {
        if self.layout.is_none() {
            self.layout = Some(layout(&self.tar)?);
        }
        Ok(self.layout.as_ref().expect("set above"))
    }
}

pub fn scan(
    image: &mut dyn Source,
    display: &str,
    allow: &Allowlist,
    progress: &dyn Fn(usize, usize),
) -> Result<ImageScan, ImageError> {
    let name = image.name().to_string();
    let config_bytes = image.config()?;
    let config: ImageConfig = serde_json::from_slice(&config_bytes)
        .map_err(|e| ImageError::Format(name.clone(), format!("image config: {e}")))?;
    let layers = image.layers()?;
    let mut findings = config_findings(&config, display, allow);
    let mut state: BTreeMap<String, PathState> = BTreeMap::new();
    let mut layer_findings: Vec<Finding> = Vec::new();
    let mut files = 0;
    let mut warnings = Vec::new();
    for (index, digest) in layers.iter().enumerate() {
        progress(index, layers.len());
        let layer = Layer {
            index,
            digest: digest.clone(),
            removed_in: None,
        };
        // A registry's verdict on a blob (a digest that does not match) travels inside the
        // io::Error that tar and gzip pass along: it comes back out as what it is.
        let io = |e: std::io::Error| match e.downcast::<crate::registry::RegistryError>() {
            Ok(registry) => ImageError::Registry(registry),
            Err(e) => ImageError::Io(format!("{name}!{digest}"), e),
        };
        let mut stored = image.layer(index)?;
        let mut archive = tar::Archive::new(decompressed(&mut stored, &name)?);
        for entry in archive.entries().map_err(io)? {
            let mut entry = entry.map_err(io)?;
            let entry_path = entry
                .path()
                .map_err(io)?
                .to_string_lossy()
                .trim_start_matches("./")
                .trim_start_matches('/')
                .to_string();
            let (dir, base) = entry_path.rsplit_once('/').unwrap_or(("", entry_path.as_str()));
            if base == ".wh..wh..opq" {
                remove_under(&mut state, &mut layer_findings, dir, index, true);
                continue;
            }
            if let Some(deleted) = base.strip_prefix(".wh.") {
                let target = if dir.is_empty() {
                    deleted.to_string()
                } else {
                    format!("{dir}/{deleted}")
                };
                remove_under(&mut state, &mut layer_findings, &target, index, false);
                continue;
            }
            if !entry.header().entry_type().is_file() {
                continue;
            }
            files += 1;
            remove_under(&mut state, &mut layer_findings, &entry_path, index, false);
            let mut file_state = PathState {
                layer: index,
                findings: Vec::new(),
                content: None,
                binary_packages: Vec::new(),
                rpm_packages: Vec::new(),
            };
            let executable = entry.header().mode().is_ok_and(|mode| mode & 0o111 != 0);
            let java = Installed::of(&entry_path) == Some(Installed::JavaArchive);
            if rpm::is_rpmdb(&entry_path) && entry.size() <= MAX_WHOLE_FILE {
                // SQLite needs the whole database: read it, then open it from memory.
                let mut bytes = Vec::with_capacity(entry.size() as usize);
                entry.read_to_end(&mut bytes).map_err(io)?;
                match rpm::packages(&bytes) {
                    Ok(found) => file_state.rpm_packages = found,
                    Err(error) => warnings.push(format!("{display}!/{entry_path}: {error}")),
                }
            } else if java && entry.size() <= MAX_WHOLE_FILE {
                // An archive is read whole (zip needs its central directory): memory is bounded by
                // the largest archive, as Trivy's is.
                let mut bytes = Vec::with_capacity(entry.size() as usize);
                entry.read_to_end(&mut bytes).map_err(io)?;
                for (name, version) in installed::java_archive(&bytes) {
                    file_state.binary_packages.push(("Maven", name, version));
                }
            } else if executable && entry.size() > MAX_SCANNED_FILE && entry.size() <= MAX_WHOLE_FILE {
                // An executable is read whole (the `.dep-v0` section of a Rust binary is found
                // through the section table at its end): memory is bounded by the largest one.
                let mut magic = [0u8; 4];
                let mut bytes = Vec::new();
                if entry.read_exact(&mut magic).is_ok() && magic == *b"\x7fELF" {
                    bytes.reserve(entry.size() as usize);
                    bytes.extend_from_slice(&magic);
                    entry.read_to_end(&mut bytes).map_err(io)?;
                    file_state.binary_packages.extend(executable_packages(&bytes));
                }
            } else if entry.size() <= MAX_SCANNED_FILE {
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes).map_err(io)?;
                if executable && bytes.starts_with(b"\x7fELF") {
                    file_state.binary_packages.extend(executable_packages(&bytes));
                }
                if let Some(text) = crate::as_text(&bytes) {
                    let shown = format!("{display}!/{entry_path}");
                    for mut finding in secrets::check(&shown, text, allow) {
                        finding.layer = Some(layer.clone());
                        file_state.findings.push(layer_findings.len());
                        layer_findings.push(finding);
                    }
                    if is_package_source(&entry_path) {
                        file_state.content = Some(text.to_string());
                    }
                }
            }
            state.insert(entry_path, file_state);
        }
        drop(archive);
        // The tar ends before its blob does (padding, the gzip trailer): read the blob to its end,
        // so that a source that verifies digests has seen every byte.
        std::io::copy(&mut stored, &mut std::io::sink()).map_err(io)?;
    }
    progress(layers.len(), layers.len());
    let packages = installed_packages(&state, display, &layers);
    for finding in &mut layer_findings {
        if let Some(Layer {
            removed_in: Some(removed),
            index,
            ..
        }) = &finding.layer
        {
            finding.message = format!(
                "{} (added in layer {index}, removed in layer {removed}: still readable from the image)",
                finding.message
            );
        }
    }
    findings.extend(layer_findings);
    Ok(ImageScan {
        findings,
        packages,
        files,
        warnings,
    })
}

fn decompressed<'a>(reader: &'a mut dyn Read, name: &str) -> Result<Box<dyn Read + 'a>, ImageError> {
    let mut magic = [0u8; 4];
    let mut read = 0;
    while read < magic.len() {
        match reader
            .read(&mut magic[read..])
            .map_err(|e| ImageError::Io(name.to_string(), e))?
        {
            0 => break,
            n => read += n,
        }
    }
    let rest = std::io::Cursor::new(magic[..read].to_vec()).chain(reader);
    match magic {
        [0x1f, 0x8b, ..] => Ok(Box::new(flate2::read::GzDecoder::new(rest))),
        [0x28, 0xb5, 0x2f, 0xfd] => Err(ImageError::Format(
            name.to_string(),
            "zstd-compressed layers are not supported yet".into(),
        )),
        _ => Ok(Box::new(rest)),
    }
}

/// Removes `target` (and, for a directory, what lies under it) from the merged view; findings in
/// removed files are kept, marked with the layer that removed them.
fn remove_under(
    state: &mut BTreeMap<String, PathState>,
    findings: &mut [Finding],
    target: &str,
    layer: usize,
    only_children: bool,
) {
    let prefix = if target.is_empty() {
        String::new()
    } else {
        format!("{target}/")
    };
    let doomed: Vec<String> = state
        .range(target.to_string()..)
        .take_while(|(path, _)| path.starts_with(target))
        .filter(|(path, _)| prefix.is_empty() || path.as_str() == target || path.starts_with(&prefix))
        .filter(|(path, file)| file.layer < layer && (!only_children || path.as_str() != target))
        .map(|(path, _)| path.clone())
        .collect();
    for path in doomed {
        if let Some(removed) = state.remove(&path) {
            for index in removed.findings {
                if let Some(Layer { removed_in, .. }) = findings[index].layer.as_mut() {
                    *removed_in = Some(layer);
                }
            }
        }
    }
}

/// Package databases, Java archives and executables are read whole up to this size; larger ones
/// are not opened (nor read for secrets).
const MAX_WHOLE_FILE: u64 = 512 * 1024 * 1024;

/// What an ELF executable says it was built from: Go's build information, cargo-auditable's
/// dependency list.
fn executable_packages(bytes: &[u8]) -> Vec<(&'static str, String, String)> {
    let mut found = installed::go_buildinfo(bytes).map(go_packages).unwrap_or_default();
    for (name, version) in installed::rust_auditable(bytes).unwrap_or_default() {
        found.push(("crates.io", name, version));
    }
    found
}

/// A Go binary's modules, and the standard library it was built with as OSV names it (`stdlib`,
/// version without `go`, always three numbers).
fn go_packages(build: installed::GoBuild) -> Vec<(&'static str, String, String)> {
    let mut version = build.go_version;
    let release = version.split(['-', '+', ' ']).next().unwrap_or("").to_string();
    if release.split('.').count() == 2 {
        version = format!("{release}.0");
    }
    let mut packages = vec![("Go", "stdlib".to_string(), version)];
    packages.extend(build.modules.into_iter().map(|(name, version)| ("Go", name, version)));
    packages
}

fn is_package_source(path: &str) -> bool {
    if Installed::of(path).is_some_and(|kind| kind != Installed::JavaArchive) {
        return true;
    }
    matches!(
        path,
        "etc/os-release" | "usr/lib/os-release" | "var/lib/dpkg/status" | "lib/apk/db/installed"
    ) || path.starts_with("var/lib/dpkg/status.d/")
        || Lockfile::from_name(path.rsplit('/').next().unwrap_or(path)).is_some()
}

fn installed_packages(state: &BTreeMap<String, PathState>, display: &str, layers: &[String]) -> Vec<Package> {
    let content = |path: &str| state.get(path).and_then(|s| s.content.as_deref());
    let release = content("etc/os-release")
        .or(content("usr/lib/os-release"))
        .and_then(packages::os_release);
    let rpm_ecosystem = release
        .as_ref()
        .and_then(|(id, version)| rpm::os_ecosystem(id, version));
    let ecosystem = release.and_then(|(id, version)| packages::os_ecosystem(&id, &version));
    let mut found = Vec::new();
    for (path, file) in state {
        let shown = format!("{display}!/{path}");
        let mut from_file: Vec<Package> = file
            .binary_packages
            .iter()
            .map(|(ecosystem, name, version)| Package::new(ecosystem, name.clone(), version.clone(), &shown, 0))
            .collect();
        if let Some(ecosystem) = &rpm_ecosystem {
            from_file.extend(file.rpm_packages.iter().map(|package| {
                Package::new(ecosystem, package.name.clone(), package.evr(), &shown, 0)
                    .with_license(package.license.clone())
            }));
        }
        if let Some(text) = &file.content {
            let file_name = path.rsplit('/').next().unwrap_or(path);
            if let Some(kind) = Installed::of(path) {
                from_file.extend(
                    kind.packages(file_name, text)
                        .into_iter()
                        .map(|(name, version, license)| {
                            Package::new(kind.ecosystem(), name, version, &shown, 0).with_license(license)
                        }),
                );
            }
            from_file.extend(match (path.as_str(), &ecosystem) {
                ("var/lib/dpkg/status", Some(eco)) => packages::dpkg_status(text, eco, &shown),
                (p, Some(eco)) if p.starts_with("var/lib/dpkg/status.d/") => packages::dpkg_status(text, eco, &shown),
                ("lib/apk/db/installed", Some(eco)) => packages::apk_installed(text, eco, &shown),
                _ => Lockfile::from_name(file_name)
                    .map(|kind| kind.packages(&shown, text))
                    .unwrap_or_default(),
            });
        }
        let layer = Layer {
            index: file.layer,
            digest: layers.get(file.layer).cloned().unwrap_or_default(),
            removed_in: None,
        };
        for package in &mut from_file {
            package.layer = Some(layer.clone());
        }
        found.extend(from_file);
    }
    found
}

fn config_findings(config: &ImageConfig, display: &str, allow: &Allowlist) -> Vec<Finding> {
    let mut findings = Vec::new();
    let user = config
        .config
        .user
        .as_deref()
        .unwrap_or("")
        .split(':')
        .next()
        .unwrap_or("");
    if user.is_empty() || user == "root" || user == "0" {
        findings.push(Finding::of(
            &rules::IMAGE_RUNS_AS_ROOT,
            display,
            0,
            format!("image User is `{}`", if user.is_empty() { "(unset)" } else { user }),
        ));
    }
    for variable in config.config.env.iter().flatten() {
        let (name, value) = variable.split_once('=').unwrap_or((variable, ""));
        if is_secret_name(name) && !value.is_empty() && !allow.allows(value) {
            findings.push(Finding::of(
                &rules::IMAGE_SECRET_IN_ENV,
                display,
                0,
                format!("Env {name} = {}", secrets::mask(value)),
            ));
        }
    }
    if config
        .config
        .exposed_ports
        .as_ref()
        .is_some_and(|ports| ports.contains_key("22/tcp") || ports.contains_key("22"))
    {
        findings.push(Finding::of(
            &rules::IMAGE_EXPOSES_SSH,
            display,
            0,
            "ExposedPorts includes 22/tcp".to_string(),
        ));
    }
    let history: Vec<&str> = config.history.iter().filter_map(|h| h.created_by.as_deref()).collect();
    let history_path = format!("{display}!history");
    findings.extend(secrets::check(&history_path, &history.join("\n"), allow));
    findings
}
