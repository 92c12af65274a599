//! `palisade ca …`: the certificate authority from the command line. Each subcommand opens the CA
//! directory, does one thing, and says what it wrote.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::Subcommand;
use palisade_mesh::ca::humanize;
use palisade_mesh::{tokens, CertificateAuthority, IdentityPaths, LeafRequest, Lifetimes, SpiffeId};

#[derive(Subcommand)]
pub enum CaCommand {
    /// Create a root and an intermediate signing CA (ECDSA P-256) in DIR; refuses to overwrite.
    Init {
        #[arg(long)]
        trust_domain: String,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "10y", value_parser = humantime::parse_duration)]
        root_ttl: Duration,
        #[arg(long, default_value = "365d", value_parser = humantime::parse_duration)]
        intermediate_ttl: Duration,
    },
    /// Issue a certificate and key for manual use into OUT (svid.pem, svid.key, bundle.pem).
    Issue {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        spiffe_id: String,
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Extra DNS SAN (repeatable), for clients that verify host names (curl, browsers).
        #[arg(long = "dns")]
        dns_names: Vec<String>,
        #[arg(long)]
        out: PathBuf,
        /// Replace an identity already in OUT (a renewal by hand or from cron).
        #[arg(long)]
        replace: bool,
    },
    /// Rotate: a new intermediate (default); or, for the root, `--root` (stage a new root in the
    /// bundle), then `--activate-root` (it starts signing), then `--retire-old-roots`.
    Rotate {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, group = "step")]
        root: bool,
        #[arg(long, group = "step")]
        activate_root: bool,
        #[arg(long, group = "step")]
        retire_old_roots: bool,
        /// With --retire-old-roots: even while leaves they signed may still be valid.
        #[arg(long)]
        force: bool,
        /// The root key when it is kept offline (not in DIR).
        #[arg(long)]
        root_key: Option<PathBuf>,
    },
    /// Serve the identity service: workloads send CSRs with a join token (first certificate) or
    /// over mTLS with their current certificate (renewal).
    Serve {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: std::net::SocketAddr,
        /// Lifetime of issued certificates (workloads may ask for less).
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// The longest lifetime a workload may ask for.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        max_ttl: Duration,
        /// DNS names in the service's own certificate (repeatable).
        #[arg(long = "dns", default_value = "localhost")]
        dns_names: Vec<String>,
        /// Where issuances and refusals are recorded as OCSF audit events: `stdout` or a file.
        #[arg(long, default_value = "stdout")]
        audit: String,
        /// The identity service's settings (YAML): `kubernetes:` lets pods get their first
        /// certificate with their projected ServiceAccount token (docs/kubernetes.md).
        #[arg(long)]
        config: Option<PathBuf>,
        /// DIR is a read-only copy (a Kubernetes Secret): nothing is written, join tokens are
        /// refused, and any number of replicas can serve from the same CA.
        #[arg(long)]
        read_only: bool,
    },
    /// Create a one-time join token that lets a workload obtain its first certificate for SPIFFE_ID.
    Token {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        spiffe_id: String,
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
}

/// The ServiceAccount token attestor the identity service's file configures, if any.
async fn attestor(
    path: &Path,
    dir: &Path,
    read_only: bool,
) -> anyhow::Result<Option<std::sync::Arc<dyn palisade_mesh::attest::WorkloadAttestor>>> {
    let Some(settings) = palisade_kubernetes::config::load(path)? else {
        return Ok(None);
    };
    let ca = if read_only {
        CertificateAuthority::open_read_only(dir)?
    } else {
        CertificateAuthority::open(dir)?
    };
    let mut diagnostics = palisade_core::Diagnostics::new(path.display().to_string());
    let attestor =
        palisade_kubernetes::ServiceAccountAttestor::start(ca.trust_domain(), settings, &mut diagnostics, true).await;
    match attestor {
        Some(attestor) if diagnostics.is_empty() => Ok(Some(std::sync::Arc::new(attestor))),
        _ => Err(palisade_core::ConfigErrors(diagnostics.into_errors()).into()),
    }
}

pub async fn run(command: CaCommand) -> anyhow::Result<()> {
    match command {
        CaCommand::Serve {
            dir,
            listen,
            ttl,
            max_ttl,
            dns_names,
            audit,
            config,
            read_only,
        } => {
            let signals = palisade_gateway::StopSignals::install()?;
            let attestor = match &config {
                Some(path) => attestor(path, &dir, read_only).await?,
                None => None,
            };
            let sink = match audit.as_str() {
                "stdout" | "-" => palisade_telemetry::audit::AuditSink::Stdout,
                path => palisade_telemetry::audit::AuditSink::File {
                    path: path.into(),
                    max_bytes: 100 * 1024 * 1024,
                    keep: 5,
                },
            };
            let metrics = palisade_telemetry::audit::AuditMetrics::default();
            let audit = palisade_telemetry::AuditLog::start(vec![sink], 8192, metrics).await?;
            let options = palisade_mesh::server::ServeOptions {
                dir,
                listen,
                default_ttl: ttl,
                max_ttl,
                dns_names,
                audit: Some(audit.clone()),
                attestor,
                read_only,
            };
            let server = palisade_mesh::server::CaServer::start(options).await?;
            tracing::info!(address = %server.address, "identity service listening");
            signals.wait().await;
            server.shutdown().await;
            // The last issuances' events may still be queued: write them before exiting (bounded).
            let _ = tokio::time::timeout(palisade_telemetry::FLUSH_AT_EXIT, audit.flush()).await;
        }
        CaCommand::Init {
            trust_domain,
            dir,
            root_ttl,
            intermediate_ttl,
        } => {
            let lifetimes = Lifetimes {
                root: root_ttl,
                intermediate: intermediate_ttl,
            };
            CertificateAuthority::init(&dir, &trust_domain, lifetimes)?;
            println!("created the CA for trust domain {trust_domain} in {}", dir.display());
            println!("  trust bundle: {}", dir.join("bundle.pem").display());
            println!(
                "  root key: {} (needed only to rotate: keep it offline)",
                dir.join("root.key").display()
            );
        }
        CaCommand::Issue {
            dir,
            spiffe_id,
            ttl,
            dns_names,
            out,
            replace,
        } => {
            let mut ca = CertificateAuthority::open(&dir)?;
            let mut request = LeafRequest::new(parse_id(&spiffe_id)?, ttl);
            request.dns_names = dns_names;
            let issued = ca.issue(&request)?;
            let paths = IdentityPaths::in_dir(&out);
            paths.write(
                &issued.issued.chain_pem,
                &issued.key_pem,
                &issued.issued.bundle_pem,
                replace,
            )?;
            tracing::info!(
                event = "certificate_issued",
                spiffe_id = %spiffe_id,
                serial = %issued.issued.serial,
                not_after = %humanize(palisade_mesh::ca::unix_seconds(issued.issued.not_after)),
                method = "manual",
                "certificate issued"
            );
            println!("issued {spiffe_id} (serial {})", issued.issued.serial);
            println!("  valid until {}", expiry(issued.issued.not_after));
            println!(
                "  wrote {}, {}, {}",
                paths.cert.display(),
                paths.key.display(),
                paths.bundle.display()
            );
        }
        CaCommand::Rotate {
            dir,
            root,
            activate_root,
            retire_old_roots,
            force,
            root_key,
        } => rotate(&dir, root, activate_root, retire_old_roots, force, root_key.as_deref())?,
        CaCommand::Token { dir, spiffe_id, ttl } => {
            let ca = CertificateAuthority::open(&dir)?;
            let id = parse_id(&spiffe_id)?;
            if id.trust_domain() != ca.trust_domain() {
                anyhow::bail!("{id} is outside the trust domain {}", ca.trust_domain());
            }
            let token = tokens::create(&dir, &id, ttl)?;
            eprintln!(
                "join token for {id}, valid until {} (shown once):",
                expiry(token.expires_at)
            );
            println!("{}", token.secret);
        }
    }
    Ok(())
}

fn rotate(
    dir: &Path,
    root: bool,
    activate_root: bool,
    retire_old_roots: bool,
    force: bool,
    root_key: Option<&Path>,
) -> anyhow::Result<()> {
    let mut ca = CertificateAuthority::open(dir)?;
    if root {
        ca.stage_root()?;
        println!("staged a new root; it is in {} now.", dir.join("bundle.pem").display());
        println!("once every workload has the new bundle: palisade ca rotate --activate-root");
    } else if activate_root {
        ca.activate_root()?;
        println!("the new root signs now (through a new intermediate); the previous root stays trusted.");
        println!("once the last leaf it signed has expired: palisade ca rotate --retire-old-roots");
    } else if retire_old_roots {
        ca.retire_previous_roots(force, SystemTime::now())?;
        println!("previous roots removed from {}", dir.join("bundle.pem").display());
    } else {
        ca.rotate_intermediate(root_key)?;
        println!("new intermediate in {}", dir.join("intermediate.pem").display());
    }
    Ok(())
}

fn parse_id(text: &str) -> anyhow::Result<SpiffeId> {
    SpiffeId::parse(text).with_context(|| format!("{text:?} is not a SPIFFE ID"))
}

fn expiry(time: SystemTime) -> String {
    humanize(palisade_mesh::ca::unix_seconds(time))
}
