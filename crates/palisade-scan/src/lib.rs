//! `palisade scan`: the pipeline check. Finds insecure Dockerfiles, Kubernetes manifests and
//! Palisade configs, hard-coded secrets and known-vulnerable packages in a tree, a file or an
//! image tarball, and reports them as a table, JSON or SARIF.
#![forbid(unsafe_code)]

pub mod dockerfile;
pub mod finding;
#[doc(hidden)]
pub mod fuzzing;
pub mod image;
pub mod kubernetes;
pub mod palisade_config;
pub mod registry;
pub mod report;
pub mod rules;
pub mod sbom;
pub mod secrets;
pub mod suppress;
pub mod vuln;
pub mod yaml;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use finding::{Finding, Severity};
use suppress::{Suppression, Suppressions};
use vuln::{Database, Lockfile, Package};

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error(transparent)]
    Image(#[from] image::ImageError),
    #[error(transparent)]
    IgnoreFile(#[from] suppress::IgnoreFileError),
    #[error(transparent)]
    Database(#[from] vuln::DbError),
    #[error("{0}")]
    Walk(String),
}

/// Which checks run; all by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checks {
    pub misconfigurations: bool,
    pub secrets: bool,
    pub vulnerabilities: bool,
}

impl Default for Checks {
    fn default() -> Self {
        Self {
            misconfigurations: true,
            secrets: true,
            vulnerabilities: true,
        }
    }
}

pub struct Options {
    pub checks: Checks,
    /// Honour `.gitignore` (and `.ignore`) files while walking a directory.
    pub gitignore: bool,
    /// An explicit ignore file; otherwise `.palisadeignore.yaml` at the root of a scanned directory.
    pub ignore_file: Option<PathBuf>,
    pub database: Database,
    /// Called with (layers done, layers) while an image is read.
    pub progress: Box<dyn Fn(usize, usize)>,
    /// `YYYY-MM-DD`, for ignore-file expiry.
    pub today: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            checks: Checks::default(),
            gitignore: true,
            ignore_file: None,
            database: Database::open(Database::default_dir()),
            progress: Box::new(|_, _| {}),
            today: suppress::today(),
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Suppressed {
    #[serde(flatten)]
    pub finding: Finding,
    pub suppression: Suppression,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub target: String,
    pub files_scanned: usize,
    pub packages_checked: usize,
    pub findings: Vec<Finding>,
    pub suppressed: Vec<Suppressed>,
    /// Files that could not be read or parsed, expired ignores: reported, never fatal.
    pub warnings: Vec<String>,
    /// Every package found (for SBOMs); not part of the JSON report.
    #[serde(skip)]
    pub packages: Vec<Package>,
}

impl Report {
    /// The worst unsuppressed severity.
    pub fn worst(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }
}

/// Files larger than this are skipped (with a warning): no configuration or lockfile is this big.
const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// UTF-8 text without NUL bytes (binaries are skipped).
pub(crate) fn as_text(bytes: &[u8]) -> Option<&str> {
    if bytes.iter().take(8192).any(|&b| b == 0) {
        return None;
    }
    std::str::from_utf8(bytes).ok()
}

pub fn scan(target: &Path, options: &Options) -> Result<Report, ScanError> {
    let metadata = std::fs::metadata(target).map_err(|e| ScanError::Io(target.display().to_string(), e))?;
    let ignore_file = options.ignore_file.clone().or_else(|| {
        metadata
            .is_dir()
            .then(|| target.join(suppress::IGNORE_FILE))
            .filter(|p| p.is_file())
    });
    let suppressions = load_suppressions(ignore_file.as_deref(), options)?;
    let root = if metadata.is_dir() {
        target.to_path_buf()
    } else {
        PathBuf::new()
    };
    let mut scanner = Scanner::new(options, &suppressions, &target.display().to_string(), root);
    if metadata.is_dir() {
        scanner.walk(target)?;
    } else if let Some(mut image) = image::open(target) {
        let display = target
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        scanner.image(&display, &mut image)?;
    } else {
        let display = target.display().to_string();
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        scanner.file(target, &display, &name);
    }
    scanner.finish()
}

/// A `.json` file that holds Kubernetes objects (`kubectl get -o json`, generated manifests); other
/// JSON (package.json, tsconfig) is left to the secret and lockfile checks.
fn is_kubernetes_json(name: &str, text: &str) -> bool {
    name.ends_with(".json") && text.contains("\"apiVersion\"") && text.contains("\"kind\"")
}

/// Text that is no file: stdin (`kubectl get -A -o yaml | palisade scan -`). Read as a Dockerfile
/// when its first instruction is `FROM` or `ARG`, otherwise as YAML or JSON manifests; findings
/// are named `display`.
pub fn scan_text(display: &str, text: &str, options: &Options) -> Result<Report, ScanError> {
    let suppressions = load_suppressions(options.ignore_file.as_deref(), options)?;
    let mut scanner = Scanner::new(options, &suppressions, display, PathBuf::new());
    scanner.in_memory.insert(display.to_string(), text.to_string());
    let first_instruction = text
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with('#'))
        .and_then(|line| line.split_whitespace().next())
        .map(str::to_ascii_uppercase);
    let name = match first_instruction.as_deref() {
        Some("FROM" | "ARG") => "Dockerfile",
        _ => "stdin.yaml",
    };
    scanner.report.files_scanned = 1;
    let findings = scanner.analyze(display, name, text);
    scanner.report.findings.extend(findings);
    scanner.finish()
}

/// An image from elsewhere than a file (a registry): findings are named after `display`, the
/// reference. Only the ignore file given in the options applies.
pub fn scan_image(display: &str, image: &mut dyn image::Source, options: &Options) -> Result<Report, ScanError> {
    let suppressions = load_suppressions(options.ignore_file.as_deref(), options)?;
    let mut scanner = Scanner::new(options, &suppressions, display, PathBuf::new());
    scanner.image(display, image)?;
    scanner.finish()
}

struct Scanner<'a> {
    options: &'a Options,
    suppressions: &'a Suppressions,
    report: Report,
    packages: Vec<Package>,
    namespaces: kubernetes::Namespaces,
    /// What finding paths are relative to (empty for a single-file target, whose path is as given).
    root: PathBuf,
    /// Texts that are not files (stdin), by display name, for inline suppressions.
    in_memory: HashMap<String, String>,
}

fn load_suppressions(file: Option<&Path>, options: &Options) -> Result<Suppressions, ScanError> {
    Ok(match file {
        Some(file) => Suppressions::load(file, &options.today)?,
        None => Suppressions::default(),
    })
}

impl<'a> Scanner<'a> {
    /// A scan of `target` whose finding paths are relative to `root`; the ignore file's warnings
    /// come first.
    fn new(options: &'a Options, suppressions: &'a Suppressions, target: &str, root: PathBuf) -> Self {
        Self {
            options,
            suppressions,
            report: Report {
                target: target.to_string(),
                warnings: suppressions.warnings.clone(),
                ..Report::default()
            },
            packages: Vec::new(),
            namespaces: kubernetes::Namespaces::default(),
            root,
            in_memory: HashMap::new(),
        }
    }
}

impl Scanner<'_> {
    fn walk(&mut self, root: &Path) -> Result<(), ScanError> {
        let walker = ignore::WalkBuilder::new(root)
            .hidden(false)
            .git_ignore(self.options.gitignore)
            .git_global(false)
            .git_exclude(self.options.gitignore)
            .ignore(self.options.gitignore)
            .require_git(false)
            .filter_entry(|entry| entry.file_name() != ".git")
            .sort_by_file_path(|a, b| a.cmp(b))
            .build();
        for entry in walker {
            let entry = match entry {
                Ok(entry) => entry,
                Err(error) => {
                    self.report.warnings.push(error.to_string());
                    continue;
                }
            };
            if !entry.file_type().is_some_and(|t| t.is_file()) {
                continue;
            }
            let path = entry.path();
            let display = path
                .strip_prefix(root)
                .unwrap_or(path)
                .to_string_lossy()
                .replace('\\', "/");
            let name = entry.file_name().to_string_lossy().to_string();
            self.file(path, &display, &name);
        }
        Ok(())
    }

    fn file(&mut self, path: &Path, display: &str, name: &str) {
        let bytes = match std::fs::metadata(path) {
            Ok(m) if m.len() > MAX_FILE_BYTES => {
                self.report
                    .warnings
                    .push(format!("{display}: skipped, larger than 8 MiB"));
                return;
            }
            Ok(_) => match std::fs::read(path) {
                Ok(bytes) => bytes,
                Err(e) => {
                    self.report.warnings.push(format!("{display}: {e}"));
                    return;
                }
            },
            Err(e) => {
                self.report.warnings.push(format!("{display}: {e}"));
                return;
            }
        };
        let Some(text) = as_text(&bytes) else { return };
        self.report.files_scanned += 1;
        let findings = self.analyze(display, name, text);
        self.report.findings.extend(findings);
    }

    /// The checks that apply to one text file, by its name and content.
    fn analyze(&mut self, display: &str, name: &str, text: &str) -> Vec<Finding> {
        let checks = self.options.checks;
        let mut findings = Vec::new();
        if checks.secrets {
            findings.extend(secrets::check(display, text, &self.suppressions.secrets));
        }
        if let Some(lockfile) = Lockfile::from_name(name) {
            self.packages.extend(lockfile.packages(display, text));
        }
        if sbom::is_sbom(name, text) {
            // Another tool's inventory (or ours): its packages meet the advisory database.
            self.packages.extend(sbom::packages(display, text));
            return findings;
        }
        if !checks.misconfigurations {
            return findings;
        }
        if dockerfile::is_dockerfile_name(name) {
            findings.extend(dockerfile::check(display, text));
        } else if name.ends_with(".yaml") || name.ends_with(".yml") || is_kubernetes_json(name, text) {
            // YAML is a superset of JSON: one reader for both, with lines.
            findings.extend(self.yaml(display, text));
        }
        findings
    }

    fn yaml(&mut self, display: &str, text: &str) -> Vec<Finding> {
        let documents = match yaml::parse_documents(text) {
            Ok(documents) => documents,
            Err(error) => {
                // Reported, never dropped: a file that does not parse is a file nothing checked.
                let hint = if text.contains("{{") {
                    " (a Helm template? it is YAML only once rendered: scan `helm template` output)"
                } else {
                    ""
                };
                self.report.warnings.push(format!(
                    "{display}:{}:{}: not checked: {}{hint}",
                    error.line, error.column, error.message
                ));
                return Vec::new();
            }
        };
        let mut findings = kubernetes::check(display, &documents, &mut self.namespaces);
        for document in documents.iter().filter(|d| palisade_config::is_config(d)) {
            findings.extend(palisade_config::check(display, document));
        }
        findings
    }

    fn image(&mut self, display: &str, image: &mut dyn image::Source) -> Result<(), ScanError> {
        let scanned = image::scan(image, display, &self.suppressions.secrets, &*self.options.progress)?;
        self.report.files_scanned += scanned.files;
        self.report.warnings.extend(scanned.warnings);
        let checks = self.options.checks;
        self.report.findings.extend(scanned.findings.into_iter().filter(|f| {
            let is_secret = rules::find(&f.rule).is_some_and(|r| r.target == rules::Target::Secret);
            if is_secret {
                checks.secrets
            } else {
                checks.misconfigurations
            }
        }));
        self.packages.extend(scanned.packages);
        Ok(())
    }

    fn finish(mut self) -> Result<Report, ScanError> {
        if self.options.checks.misconfigurations {
            self.report.findings.extend(self.namespaces.findings());
        }
        self.report.packages_checked = self.packages.len();
        self.report.packages = self.packages.clone();
        if self.options.checks.vulnerabilities && !self.packages.is_empty() {
            self.report
                .findings
                .extend(self.options.database.check(&self.packages)?);
        }
        self.apply_suppressions();
        let report = &mut self.report;
        report
            .findings
            .sort_by(|a, b| (&a.path, a.line, &a.rule).cmp(&(&b.path, b.line, &b.rule)));
        Ok(self.report)
    }

    /// Inline comments are read from the files that have findings, once each, after every check
    /// ran: findings that come late (vulnerable packages, namespaces without a NetworkPolicy) can be
    /// suppressed where they point like any other. Members of images have no comments to read.
    fn apply_suppressions(&mut self) {
        let findings = std::mem::take(&mut self.report.findings);
        let mut texts: HashMap<String, String> = HashMap::new();
        // A whole-file finding (line 0: an image config) has no line to annotate.
        for finding in findings.iter().filter(|f| f.line > 0) {
            if !texts.contains_key(&finding.path) {
                let text = match self.in_memory.get(&finding.path) {
                    Some(text) => text.clone(),
                    None => std::fs::read_to_string(self.root.join(&finding.path)).unwrap_or_default(),
                };
                texts.insert(finding.path.clone(), text);
            }
        }
        let lines: HashMap<&str, Vec<&str>> = texts
            .iter()
            .map(|(path, text)| (path.as_str(), text.lines().collect()))
            .collect();
        for finding in findings {
            let in_file = lines.get(finding.path.as_str()).map(Vec::as_slice).unwrap_or_default();
            let suppression = suppress::inline(in_file, &finding).or_else(|| self.suppressions.external(&finding));
            match suppression {
                Some(suppression) => self.report.suppressed.push(Suppressed { finding, suppression }),
                None => self.report.findings.push(finding),
            }
        }
    }
}
