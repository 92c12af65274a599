//! `palisade scan` and `palisade db`: thin wrappers over `palisade_scan` that choose the output
//! format and the exit code (0 clean, 1 findings at or above `--fail-on`, 2 usage or input error).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use palisade_scan::vuln::Database;
use palisade_scan::{report, rules, Checks, Options, Severity};

#[derive(Args)]
pub struct ScanArgs {
    /// A directory (walked recursively, honouring .gitignore), a file, `-` for stdin (manifests or
    /// a Dockerfile), an image tarball
    /// (`docker save` or OCI layout), or an image in a registry (`registry.example.org/team/app:1.4`,
    /// `…@sha256:…`; a path that exists wins).
    #[arg(default_value = ".")]
    target: PathBuf,
    /// The platform to scan from a multi-arch image: os/arch[/variant].
    #[arg(long, default_value = "linux/amd64")]
    platform: String,
    /// A registry (host or host:port) reached over plain HTTP; repeatable. No other is.
    #[arg(long = "insecure", value_name = "REGISTRY")]
    insecure: Vec<String>,
    /// PEM certificates to trust for registries besides the system's; repeatable.
    #[arg(long = "registry-ca", value_name = "FILE")]
    registry_ca: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Exit 1 when a finding is at least this severe.
    #[arg(long, value_enum, default_value_t = FailOn::High)]
    fail_on: FailOn,
    /// Write the report here instead of stdout.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Suppressions; default `.palisadeignore.yaml` at the root of a scanned directory.
    #[arg(long)]
    ignore_file: Option<PathBuf>,
    /// Scan files that .gitignore excludes too.
    #[arg(long)]
    no_gitignore: bool,
    /// Leave out a kind of check (repeatable).
    #[arg(long = "skip", value_enum)]
    skip: Vec<Check>,
    /// The advisory database directory (default $PALISADE_DB or ~/.cache/palisade/osv).
    #[arg(long)]
    db: Option<PathBuf>,
    /// Print the rule table instead of scanning (`markdown` is docs/scan-rules.md).
    #[arg(long, value_enum)]
    list_rules: Option<RuleList>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
    Sarif,
    /// CycloneDX 1.6 JSON: every package found (advisories are not matched).
    Cyclonedx,
    /// SPDX 2.3 JSON: every package found (advisories are not matched).
    SpdxJson,
}

#[derive(Clone, Copy, ValueEnum)]
enum FailOn {
    Info,
    Low,
    Medium,
    High,
    Critical,
    Never,
}

impl FailOn {
    fn threshold(self) -> Option<Severity> {
        match self {
            Self::Info => Some(Severity::Info),
            Self::Low => Some(Severity::Low),
            Self::Medium => Some(Severity::Medium),
            Self::High => Some(Severity::High),
            Self::Critical => Some(Severity::Critical),
            Self::Never => None,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Check {
    Misconfigurations,
    Secrets,
    Vulnerabilities,
}

#[derive(Clone, Copy, ValueEnum)]
enum RuleList {
    Markdown,
    Table,
}

const INPUT_ERROR: u8 = 2;

pub fn run(args: ScanArgs) -> ExitCode {
    if let Some(list) = args.list_rules {
        let text = match list {
            RuleList::Markdown => rules::markdown(),
            RuleList::Table => rules::ALL
                .iter()
                .map(|rule| format!("{:<7} {:<8} {}\n", rule.id, rule.severity.as_str(), rule.title))
                .collect(),
        };
        if let Err(error) = crate::report::emit(&text) {
            eprintln!("palisade scan: {error}");
            return ExitCode::from(INPUT_ERROR);
        }
        return ExitCode::SUCCESS;
    }
    let options = Options {
        checks: Checks {
            misconfigurations: !args.skip.contains(&Check::Misconfigurations),
            secrets: !args.skip.contains(&Check::Secrets),
            // An SBOM lists packages; matching them is a scan of the SBOM (`palisade scan app.cdx.json`).
            vulnerabilities: !args.skip.contains(&Check::Vulnerabilities)
                && !matches!(args.format, Format::Cyclonedx | Format::SpdxJson),
        },
        gitignore: !args.no_gitignore,
        ignore_file: args.ignore_file.clone(),
        database: Database::open(args.db.clone().unwrap_or_else(Database::default_dir)),
        progress: progress_bar(),
        ..Options::default()
    };
    let report = match scan_target(&args, &options) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("palisade scan: {error}");
            if matches!(
                error,
                palisade_scan::ScanError::Database(palisade_scan::vuln::DbError::Missing(_))
            ) {
                eprintln!("  (or leave vulnerable packages out with --skip vulnerabilities)");
            }
            return ExitCode::from(INPUT_ERROR);
        }
    };
    let rendered = match args.format {
        Format::Table => report::table(&report),
        Format::Json => report::json(&report),
        Format::Sarif => report::sarif(&report),
        Format::Cyclonedx => palisade_scan::sbom::cyclonedx(&report),
        Format::SpdxJson => palisade_scan::sbom::spdx(&report),
    };
    let written = match &args.output {
        Some(path) => std::fs::write(path, rendered.as_bytes()).map_err(|e| format!("{}: {e}", path.display())),
        None => crate::report::emit(&rendered).map_err(|e| format!("stdout: {e}")),
    };
    if let Err(error) = written {
        eprintln!("palisade scan: {error}");
        return ExitCode::from(INPUT_ERROR);
    }
    if args.output.is_some() || !matches!(args.format, Format::Table) {
        for warning in &report.warnings {
            eprintln!("warning: {warning}");
        }
    }
    let failed = args
        .fail_on
        .threshold()
        .is_some_and(|threshold| report.worst().is_some_and(|worst| worst >= threshold));
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// `kubectl get -A -o yaml` of a large cluster is tens of MiB.
const MAX_STDIN_BYTES: u64 = 256 * 1024 * 1024;

fn scan_target(args: &ScanArgs, options: &Options) -> Result<palisade_scan::Report, palisade_scan::ScanError> {
    let text = args.target.to_string_lossy();
    if text == "-" {
        use std::io::Read as _;
        let mut input = String::new();
        let read = std::io::stdin()
            .take(MAX_STDIN_BYTES + 1)
            .read_to_string(&mut input)
            .map_err(|e| palisade_scan::ScanError::Io("stdin".into(), e))?;
        if read as u64 > MAX_STDIN_BYTES {
            return Err(palisade_scan::ScanError::Io(
                "stdin".into(),
                std::io::Error::other("larger than 256 MiB; scan files instead"),
            ));
        }
        return palisade_scan::scan_text("stdin", &input, options);
    }
    if args.target.exists() || !palisade_scan::registry::looks_like_reference(&text) {
        return palisade_scan::scan(&args.target, options);
    }
    let settings = palisade_scan::registry::Settings {
        platform: Some(args.platform.clone()),
        insecure: args.insecure.clone(),
        ca_files: args.registry_ca.clone(),
        docker_config: None,
    };
    let mut image = palisade_scan::registry::RegistryImage::open(&text, &settings)
        .map_err(|e| palisade_scan::ScanError::Image(e.into()))?;
    palisade_scan::scan_image(&text, &mut image, options)
}

/// A bar on stderr for image layers when stderr is a terminal; nothing otherwise (CI logs).
fn progress_bar() -> Box<dyn Fn(usize, usize)> {
    if !std::io::stderr().is_terminal() {
        return Box::new(|_, _| {});
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} layers")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message("reading image");
    Box::new(move |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        if done == total {
            bar.finish_and_clear();
        }
    })
}

#[derive(Subcommand)]
pub enum DbCommand {
    /// Import OSV advisories from JSON files, directories of them, or OSV `all.zip` archives (offline).
    Import {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[arg(long)]
        db: Option<PathBuf>,
    },
    /// Download each ecosystem's `all.zip` from OSV and import it.
    Update {
        /// OSV ecosystems (repeatable).
        #[arg(long = "ecosystem", default_values_t = ["crates.io", "npm", "PyPI", "Go", "Maven", "Packagist", "RubyGems", "Debian", "Alpine"].map(String::from))]
        ecosystems: Vec<String>,
        /// Where `<ecosystem>/all.zip` lives.
        #[arg(long, default_value = "https://osv-vulnerabilities.storage.googleapis.com")]
        source: String,
        #[arg(long)]
        db: Option<PathBuf>,
    },
}

pub async fn db(command: DbCommand) -> anyhow::Result<ExitCode> {
    match command {
        DbCommand::Import { paths, db } => import(&db, &paths),
        DbCommand::Update { ecosystems, source, db } => update(&db, &ecosystems, &source).await,
    }
}

fn import(db: &Option<PathBuf>, paths: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let database = Database::open(db.clone().unwrap_or_else(Database::default_dir));
    match database.import(paths) {
        Ok(summary) => {
            let families: Vec<String> = summary
                .entries_by_family
                .iter()
                .map(|(family, n)| format!("{family}: {n}"))
                .collect();
            println!(
                "imported {} advisories into {} ({})",
                summary.records,
                database.dir().display(),
                families.join(", ")
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("palisade db import: {error} (the database is unchanged)");
            Ok(ExitCode::from(INPUT_ERROR))
        }
    }
}

/// The largest archive accepted (npm's all.zip is the biggest, a few hundred MiB).
const MAX_ARCHIVE_BYTES: u64 = 4 * 1024 * 1024 * 1024;

async fn update(db: &Option<PathBuf>, ecosystems: &[String], source: &str) -> anyhow::Result<ExitCode> {
    let fetcher = palisade_auth::fetch::Fetcher::new(None, Duration::from_secs(30)).map_err(anyhow::Error::msg)?;
    let downloads = tempfile::tempdir()?;
    let mut archives = Vec::new();
    for ecosystem in ecosystems {
        // Ecosystem names have spaces (`Rocky Linux`, `Red Hat`).
        let uri: http::Uri = format!(
            "{}/{}/all.zip",
            source.trim_end_matches('/'),
            ecosystem.replace(' ', "%20")
        )
        .parse()?;
        let path = downloads.path().join(format!("{}.zip", ecosystem.replace(' ', "_")));
        eprintln!("downloading {uri}");
        match fetcher
            .download(&uri, &path, MAX_ARCHIVE_BYTES, Duration::from_secs(1800))
            .await
        {
            Ok(bytes) => eprintln!("  {ecosystem}: {bytes} bytes"),
            Err(error) => {
                eprintln!("palisade db update: {uri}: {error} (the database is unchanged)");
                return Ok(ExitCode::from(INPUT_ERROR));
            }
        }
        archives.push(path);
    }
    import(db, &archives)
}
