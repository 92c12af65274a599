//! `palisade check-kubernetes DIR`: what a platform engineer runs before `kubectl apply`. Every
//! manifest (YAML, multi-document, `List`, JSON) parsed; every object checked against the
//! Kubernetes API's JSON schemas (strict: unknown fields are errors); the Palisade configs inside
//! them (sidecar configs in annotations and ConfigMaps, gateway and identity service configs in
//! ConfigMaps) checked as Palisade reads them; and the whole tree scanned (`palisade scan`).
//! Exit 0 clean, 1 problems or findings at or above `--fail-on`, 2 usage error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use palisade_core::ConfigKind;
use palisade_kubernetes::inject::{annotations, parse_documents};
use palisade_kubernetes::schema::{Schemas, Verdict};
use palisade_scan::Severity;
use serde_json::Value;

#[derive(Args)]
pub struct CheckKubernetesArgs {
    /// A directory of manifests (walked recursively) or one file.
    target: PathBuf,
    /// The Kubernetes JSON schemas: a directory such as kubernetes-validate's
    /// `kubernetes-json-schema/v1.31.0-local-strict` (default $PALISADE_KUBERNETES_SCHEMAS).
    #[arg(long, env = "PALISADE_KUBERNETES_SCHEMAS")]
    schemas: Option<PathBuf>,
    /// Check without the schemas (say so in the output) when none are at hand.
    #[arg(long, conflicts_with = "schemas")]
    no_schemas: bool,
    /// Scanner findings at least this severe fail the check.
    #[arg(long, value_enum, default_value_t = FailOn::Medium)]
    fail_on: FailOn,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum FailOn {
    Low,
    Medium,
    High,
    Critical,
}

impl FailOn {
    fn threshold(self) -> Severity {
        match self {
            FailOn::Low => Severity::Low,
            FailOn::Medium => Severity::Medium,
            FailOn::High => Severity::High,
            FailOn::Critical => Severity::Critical,
        }
    }
}

/// One object's place, for messages: `file: Kind/name`.
struct Place<'a> {
    file: &'a Path,
    kind: String,
    name: String,
}

impl std::fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}/{}", self.file.display(), self.kind, self.name)
    }
}

pub async fn run(args: CheckKubernetesArgs) -> anyhow::Result<ExitCode> {
    let schemas = match (&args.schemas, args.no_schemas) {
        (Some(dir), _) => match Schemas::open(dir) {
            Ok(schemas) => Some(schemas),
            Err(error) => {
                eprintln!("palisade check-kubernetes: --schemas: {error}");
                return Ok(ExitCode::from(2));
            }
        },
        (None, true) => None,
        (None, false) => {
            eprintln!(
                "palisade check-kubernetes: give --schemas DIR (e.g. `pip install kubernetes-validate`, then its kubernetes-json-schema/v1.31.0-local-strict), or --no-schemas"
            );
            return Ok(ExitCode::from(2));
        }
    };
    let mut files = Vec::new();
    manifests(&args.target, &mut files);
    let patches = kustomize_patches(&files);
    let mut problems = 0usize;
    let mut objects = 0usize;
    let work = tempfile::tempdir()?;
    for file in &files {
        if patches.contains(file) {
            // Part of an object, merged by kustomize into the base's: not a whole object.
            continue;
        }
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(error) => {
                println!("{}: cannot read: {error}", file.display());
                problems += 1;
                continue;
            }
        };
        let documents = match parse_documents(&text) {
            Ok((_, documents)) => documents,
            Err(error) => {
                println!("{}: {error}", file.display());
                problems += 1;
                continue;
            }
        };
        let mut stack: Vec<Value> = documents.into_iter().rev().collect();
        while let Some(object) = stack.pop() {
            if let Some(items) = object.get("items").and_then(Value::as_array) {
                stack.extend(items.iter().rev().cloned());
                continue;
            }
            let kind = object.get("kind").and_then(Value::as_str).unwrap_or("?").to_string();
            if kind == "Kustomization" || kind == "Component" {
                continue;
            }
            objects += 1;
            let place = Place {
                file,
                name: object
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string(),
                kind,
            };
            if let Some(schemas) = &schemas {
                match schemas.check(&object) {
                    Verdict::Valid => {}
                    Verdict::NoSchema(what) => println!("{place}: note: no schema for {what}; not checked"),
                    Verdict::Invalid(errors) => {
                        for error in errors {
                            println!("{place}: {error}");
                            problems += 1;
                        }
                    }
                }
            }
            problems += palisade_configs(&place, &object, work.path()).await;
        }
    }
    let report = palisade_scan::scan(
        &args.target,
        &palisade_scan::Options {
            checks: palisade_scan::Checks {
                misconfigurations: true,
                secrets: true,
                vulnerabilities: false,
            },
            ..Default::default()
        },
    )?;
    let threshold = args.fail_on.threshold();
    let mut findings = 0usize;
    for finding in report.findings.iter().filter(|f| f.severity >= threshold) {
        println!(
            "{}:{}: {} {:?}: {}",
            finding.path, finding.line, finding.rule, finding.severity, finding.message
        );
        findings += 1;
    }
    let schema_note = if schemas.is_some() {
        ""
    } else {
        " (no schemas: not checked against the API)"
    };
    println!(
        "{objects} objects in {} files: {problems} problems, {findings} scanner findings at {:?} or above{schema_note}",
        files.len(),
        threshold
    );
    Ok(if problems + findings == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The patch files the kustomizations among `files` name (`patches`, `patchesStrategicMerge`,
/// `patchesJson6902`), as paths comparable with `files`.
fn kustomize_patches(files: &[PathBuf]) -> std::collections::BTreeSet<PathBuf> {
    let mut patches = std::collections::BTreeSet::new();
    for file in files {
        let is_kustomization = file.file_name().is_some_and(|n| {
            ["kustomization.yaml", "kustomization.yml", "Kustomization"].contains(&&*n.to_string_lossy())
        });
        let (Some(dir), true) = (file.parent(), is_kustomization) else {
            continue;
        };
        let Ok((_, documents)) = std::fs::read_to_string(file)
            .map_err(|e| e.to_string())
            .and_then(|text| parse_documents(&text).map_err(|e| e.to_string()))
        else {
            continue;
        };
        for document in documents {
            let listed = ["patches", "patchesJson6902"]
                .iter()
                .flat_map(|key| document.get(*key).and_then(Value::as_array).into_iter().flatten())
                .filter_map(|entry| entry.get("path").and_then(Value::as_str))
                .chain(
                    document
                        .get("patchesStrategicMerge")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str),
                );
            for path in listed {
                patches.insert(dir.join(path));
            }
        }
    }
    patches
}

/// YAML and JSON files under `target` (or `target` itself), sorted; hidden directories skipped.
fn manifests(target: &Path, into: &mut Vec<PathBuf>) {
    if target.is_file() {
        into.push(target.to_path_buf());
        return;
    }
    let Ok(entries) = std::fs::read_dir(target) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for path in entries {
        let hidden = path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if path.is_dir() && !hidden {
            manifests(&path, into);
        } else if path
            .extension()
            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        {
            into.push(path);
        }
    }
}

/// The Palisade configs an object carries, each checked as Palisade will read it. Returns the
/// number of problems printed.
async fn palisade_configs(place: &Place<'_>, object: &Value, work: &Path) -> usize {
    let mut problems = 0;
    let pod_annotations = [
        "/spec/template/metadata/annotations",
        "/spec/jobTemplate/spec/template/metadata/annotations",
        "/metadata/annotations",
    ]
    .iter()
    .find_map(|p| object.pointer(p).and_then(Value::as_object));
    if let Some(annotations) = pod_annotations {
        if let Some(config) = annotations.get(annotations::CONFIG).and_then(Value::as_str) {
            problems += check_text(place, annotations::CONFIG, config, Embedded::Sidecar, work).await;
        }
        if let Some(bundle) = annotations.get(annotations::TRUST_BUNDLE).and_then(Value::as_str) {
            let certificates = rustls_pki_types::pem::PemObject::pem_slice_iter(bundle.as_bytes())
                .filter(|c: &Result<rustls_pki_types::CertificateDer<'static>, _>| c.is_ok())
                .count();
            if certificates == 0 {
                println!("{place}: {}: holds no certificate", annotations::TRUST_BUNDLE);
                problems += 1;
            }
        }
    }
    if object.get("kind").and_then(Value::as_str) == Some("ConfigMap") {
        for (key, value) in object.get("data").and_then(Value::as_object).into_iter().flatten() {
            let embedded = match key.as_str() {
                "sidecar.yaml" => Embedded::Sidecar,
                "gateway.yaml" => Embedded::Gateway,
                "identity.yaml" => Embedded::IdentityService,
                _ => continue,
            };
            if let Some(text) = value.as_str() {
                problems += check_text(place, key, text, embedded, work).await;
            }
        }
    }
    problems
}

#[derive(Clone, Copy)]
enum Embedded {
    Sidecar,
    Gateway,
    IdentityService,
}

async fn check_text(place: &Place<'_>, key: &str, text: &str, kind: Embedded, work: &Path) -> usize {
    let file = work.join(format!("{}-{}-{key}", place.kind, place.name).replace('/', "_"));
    if std::fs::write(&file, text).is_err() {
        return 0;
    }
    let errors: Vec<String> = match kind {
        // Everything the sidecar checks at start. Its identity files live in the pod: a throwaway
        // identity of the same trust domain stands in for them.
        Embedded::Sidecar => match stand_in_identity(&file, work) {
            Err(errors) => errors,
            Ok(()) => match palisade_gateway::check_config_with(&file, ConfigKind::Sidecar, false).await {
                Ok(_) => Vec::new(),
                Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
            },
        },
        // Every field, with its line and column; checks that read files named in the config (TLS
        // material inside the pod) are the gateway's at start.
        Embedded::Gateway => match palisade_core::load_yaml_file::<palisade_core::Config>(&file) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
        },
        Embedded::IdentityService => match palisade_kubernetes::config::load(&file) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
        },
    };
    for error in &errors {
        // The temporary file's name says nothing to the user: name the object and key instead.
        let error = error.replace(&file.display().to_string(), key);
        println!("{place}: {error}");
    }
    errors.len()
}

/// Rewrites the sidecar config at `file` so that its identity files (which exist only inside the
/// pod) point at a throwaway identity of its trust domain; line and column numbers stay as they
/// were. A config that does not parse is reported as it is.
fn stand_in_identity(file: &Path, work: &Path) -> Result<(), Vec<String>> {
    let to_strings = |errors: palisade_core::ConfigErrors| errors.0.iter().map(ToString::to_string).collect::<Vec<_>>();
    let sidecar = palisade_core::load_sidecar(file).map_err(to_strings)?;
    let trust_domain = sidecar.trust_domain.value.clone();
    let dir = work.join(format!("identity-{trust_domain}"));
    let paths = palisade_mesh::IdentityPaths::in_dir(&dir);
    if !paths.cert.is_file() {
        let ca_dir = work.join(format!("ca-{trust_domain}"));
        let stand_in = palisade_mesh::SpiffeId::parse(&format!("spiffe://{trust_domain}/palisade/check-kubernetes"))
            .map_err(|e| vec![format!("trust_domain {trust_domain:?}: {e}")])?;
        let issue = || -> Result<(), palisade_mesh::CaError> {
            let mut ca = palisade_mesh::CertificateAuthority::init(&ca_dir, &trust_domain, Default::default())?;
            let issued = ca.issue(&palisade_mesh::LeafRequest::new(
                stand_in,
                std::time::Duration::from_secs(3600),
            ))?;
            paths.write(
                &issued.issued.chain_pem,
                &issued.key_pem,
                &issued.issued.bundle_pem,
                false,
            )
        };
        issue().map_err(|e| vec![format!("cannot make a stand-in identity: {e}")])?;
    }
    let text = std::fs::read_to_string(file).map_err(|e| vec![e.to_string()])?;
    let identity = &sidecar.identity;
    let mut rewritten = text.clone();
    for (written, stand_in) in [
        (&identity.cert, &paths.cert),
        (&identity.key, &paths.key),
        (&identity.bundle, &paths.bundle),
    ] {
        let original = written.value.display().to_string();
        if !original.is_empty() {
            rewritten = rewritten.replace(&original, &stand_in.display().to_string());
        }
    }
    std::fs::write(file, rewritten).map_err(|e| vec![e.to_string()])
}
