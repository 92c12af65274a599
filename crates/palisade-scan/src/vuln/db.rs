//! The local advisory database: one JSON-lines file per ecosystem family (`crates.io.jsonl`,
//! `Debian.jsonl`…) under a directory, filled by `palisade db import` from OSV JSON files or the
//! per-ecosystem `all.zip` archives, read by every scan without network access.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::osv::{Entry, Record};
use super::packages::Package;
use super::version::Scheme;
use crate::finding::{Finding, Severity, Vulnerability};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not an OSV record: {message}")]
    Record { path: String, message: String },
    #[error("{path}: not a zip archive: {message}")]
    Zip { path: PathBuf, message: String },
    #[error("no advisory database at {0}: run `palisade db import PATH` (offline) or `palisade db update`")]
    Missing(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DbError + '_ {
    move |source| DbError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What an import added, per ecosystem family.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ImportSummary {
    pub records: usize,
    pub entries_by_family: BTreeMap<String, usize>,
}

pub struct Database {
    dir: PathBuf,
}

/// The largest OSV file accepted (the biggest published records are a few hundred KiB).
const MAX_RECORD_BYTES: u64 = 16 * 1024 * 1024;

impl Database {
    pub fn open(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// `$PALISADE_DB`, else `$XDG_CACHE_HOME/palisade/osv`, else `~/.cache/palisade/osv`.
    pub fn default_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("PALISADE_DB") {
            return dir.into();
        }
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
            .unwrap_or_else(|| PathBuf::from(".cache"));
        cache.join("palisade").join("osv")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn exists(&self) -> bool {
        self.dir.join("meta.json").is_file()
    }

    /// Reads every source first; only when all parsed are the family files rewritten (each through a
    /// temporary file and a rename), so a bad archive changes nothing.
    pub fn import(&self, sources: &[PathBuf]) -> Result<ImportSummary, DbError> {
        let mut records = Vec::new();
        for source in sources {
            read_source(source, &mut records)?;
        }
        let mut summary = ImportSummary {
            records: records.len(),
            ..ImportSummary::default()
        };
        let mut by_family: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        for record in &records {
            for entry in record.entries() {
                by_family
                    .entry(family(&entry.ecosystem).to_string())
                    .or_default()
                    .push(entry);
            }
        }
        fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        for (family, entries) in by_family {
            summary.entries_by_family.insert(family.clone(), entries.len());
            self.merge_family(&family, entries)?;
        }
        let meta = self.dir.join("meta.json");
        let stamp = serde_json::json!({ "schema": 1, "families": self.families()? });
        fs::write(&meta, stamp.to_string()).map_err(io(&meta))?;
        Ok(summary)
    }

    fn family_path(&self, family: &str) -> PathBuf {
        self.dir.join(format!("{family}.jsonl"))
    }

    fn families(&self) -> Result<Vec<String>, DbError> {
        let mut families: Vec<String> = fs::read_dir(&self.dir)
            .map_err(io(&self.dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".jsonl").map(str::to_string))
            .collect();
        families.sort();
        Ok(families)
    }

    /// Newer `modified` wins for the same (package, ecosystem, advisory).
    fn merge_family(&self, family: &str, entries: Vec<Entry>) -> Result<(), DbError> {
        let path = self.family_path(family);
        let mut merged: BTreeMap<(String, String, String), Entry> = BTreeMap::new();
        for entry in self.read_family(family, |_| true)?.into_iter().chain(entries) {
            let key = (entry.package.clone(), entry.ecosystem.clone(), entry.id.clone());
            match merged.get(&key) {
                Some(existing) if existing.modified > entry.modified => {}
                _ => {
                    merged.insert(key, entry);
                }
            }
        }
        let temporary = path.with_extension("jsonl.tmp");
        let mut out = std::io::BufWriter::new(fs::File::create(&temporary).map_err(io(&temporary))?);
        for entry in merged.values() {
            let line = serde_json::to_string(entry).map_err(|e| DbError::Record {
                path: entry.id.clone(),
                message: e.to_string(),
            })?;
            writeln!(out, "{line}").map_err(io(&temporary))?;
        }
        out.flush().map_err(io(&temporary))?;
        drop(out);
        fs::rename(&temporary, &path).map_err(io(&path))
    }

    /// Entries of one family whose package name passes `wanted`, decoding only those lines fully.
    fn read_family(&self, family: &str, wanted: impl Fn(&str) -> bool) -> Result<Vec<Entry>, DbError> {
        #[derive(Deserialize)]
        struct Head<'a> {
            #[serde(borrow)]
            package: std::borrow::Cow<'a, str>,
        }
        let path = self.family_path(family);
        let file = match fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&path)(e)),
        };
        let mut entries = Vec::new();
        for line in BufReader::new(file).lines() {
            let line = line.map_err(io(&path))?;
            let Ok(head) = serde_json::from_str::<Head<'_>>(&line) else {
                continue;
            };
            if wanted(&head.package) {
                if let Ok(entry) = serde_json::from_str::<Entry>(&line) {
                    entries.push(entry);
                }
            }
        }
        Ok(entries)
    }

    /// Findings for every installed package an advisory covers.
    pub fn check(&self, packages: &[Package]) -> Result<Vec<Finding>, DbError> {
        if !self.exists() {
            return Err(DbError::Missing(self.dir.clone()));
        }
        let mut by_family: HashMap<&str, HashMap<String, Vec<&Package>>> = HashMap::new();
        for package in packages {
            by_family
                .entry(family(&package.ecosystem))
                .or_default()
                .entry(super::osv::normalize_name(&package.ecosystem, &package.name))
                .or_default()
                .push(package);
        }
        let mut findings = Vec::new();
        for (family, names) in by_family {
            for entry in self.read_family(family, |name| names.contains_key(name))? {
                for package in names.get(&entry.package).into_iter().flatten() {
                    if let Some(finding) = match_entry(&entry, package) {
                        // Binary packages built from one source (curl, libcurl) make one finding.
                        let same = |f: &Finding| {
                            f.rule == finding.rule && f.path == finding.path && f.vulnerability == finding.vulnerability
                        };
                        if !findings.iter().any(same) {
                            findings.push(finding);
                        }
                    }
                }
            }
        }
        Ok(findings)
    }
}

/// `Debian:12` → `Debian`; `crates.io` → `crates.io`.
fn family(ecosystem: &str) -> &str {
    ecosystem.split(':').next().unwrap_or(ecosystem)
}

/// The advisory's ecosystem names the package's release, or a more specific one of it
/// (`Ubuntu:22.04:LTS` for `Ubuntu:22.04`).
fn same_release(advisory: &str, package: &str) -> bool {
    advisory == package || advisory.strip_prefix(package).is_some_and(|rest| rest.starts_with(':'))
}

fn match_entry(entry: &Entry, package: &Package) -> Option<Finding> {
    if !same_release(&entry.ecosystem, &package.ecosystem) {
        return None;
    }
    let scheme = Scheme::of(&package.ecosystem)?;
    if !entry.affects(scheme, &package.version) {
        return None;
    }
    let fixed = entry.fixed_after(scheme, &package.version);
    let severity = entry.severity.unwrap_or(Severity::Medium);
    let rated = if entry.severity.is_some() {
        ""
    } else {
        " (severity not rated by the advisory)"
    };
    let fix = fixed
        .as_deref()
        .map_or_else(|| "no fixed version published".to_string(), |f| format!("fixed in {f}"));
    Some(Finding {
        rule: entry.id.clone(),
        severity,
        title: if entry.summary.is_empty() {
            entry.id.clone()
        } else {
            entry.summary.clone()
        },
        path: package.path.clone(),
        line: package.line,
        message: format!(
            "{} {} is affected by {}{rated}; {fix}",
            package.name, package.version, entry.id
        ),
        vulnerability: Some(Vulnerability {
            ecosystem: package.ecosystem.clone(),
            package: package.name.clone(),
            installed: package.version.clone(),
            fixed,
            aliases: entry.aliases.clone(),
            summary: entry.summary.clone(),
        }),
        layer: package.layer.clone(),
    })
}

fn parse_record(path: &str, bytes: &[u8]) -> Result<Record, DbError> {
    serde_json::from_slice(bytes).map_err(|e| DbError::Record {
        path: path.to_string(),
        message: e.to_string(),
    })
}

/// A `.json` file, a `.zip` of them (OSV's `all.zip`), or a directory holding either.
fn read_source(source: &Path, records: &mut Vec<Record>) -> Result<(), DbError> {
    let metadata = fs::metadata(source).map_err(io(source))?;
    if metadata.is_dir() {
        let mut children: Vec<PathBuf> = fs::read_dir(source)
            .map_err(io(source))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        children.sort();
        for child in children {
            let is_source = child.is_dir() || child.extension().is_some_and(|e| e == "json" || e == "zip");
            if is_source {
                read_source(&child, records)?;
            }
        }
        return Ok(());
    }
    if source.extension().is_some_and(|e| e == "zip") {
        return read_zip(source, records);
    }
    if metadata.len() > MAX_RECORD_BYTES {
        return Err(DbError::Record {
            path: source.display().to_string(),
            message: "larger than 16 MiB".into(),
        });
    }
    let bytes = fs::read(source).map_err(io(source))?;
    records.push(parse_record(&source.display().to_string(), &bytes)?);
    Ok(())
}

fn read_zip(source: &Path, records: &mut Vec<Record>) -> Result<(), DbError> {
    let zip_error = |e: zip::result::ZipError| DbError::Zip {
        path: source.to_path_buf(),
        message: e.to_string(),
    };
    let file = fs::File::open(source).map_err(io(source))?;
    let mut archive = zip::ZipArchive::new(file).map_err(zip_error)?;
    for index in 0..archive.len() {
        let member = archive.by_index(index).map_err(zip_error)?;
        let member_name = member.name().map(|n| n.to_string()).unwrap_or_default();
        if !member.is_file() || !member_name.ends_with(".json") {
            continue;
        }
        let name = format!("{}!{member_name}", source.display());
        let mut bytes = Vec::new();
        member
            .take(MAX_RECORD_BYTES)
            .read_to_end(&mut bytes)
            .map_err(io(source))?;
        records.push(parse_record(&name, &bytes)?);
    }
    Ok(())
}
