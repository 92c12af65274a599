//! `palisade`: the one binary. Subcommands are thin: each parses its arguments and calls a library.
#![forbid(unsafe_code)]

mod ca;
mod check_kubernetes;
mod credentials;
mod demo;
mod inject;
mod policy;
mod probe;
mod report;
mod scan;
mod sidecar;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use palisade_core::ConfigKind;
use palisade_gateway::{ConfigSource, Gateway};

#[derive(Parser)]
#[command(name = "palisade", version, about = "Zero-trust security layer for microservices")]
struct Cli {
    /// Log format for operational logs (stderr). The access log has its own setting.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the edge gateway. SIGHUP or a file change reloads; SIGTERM/SIGINT drains and stops.
    Gateway {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run a sidecar next to one service: mTLS in (callers authorized by SPIFFE ID) and out.
    Sidecar {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// The certificate authority: init, issue, rotate, join tokens.
    Ca {
        #[command(subcommand)]
        command: ca::CaCommand,
    },
    /// Validate a gateway (or, with --sidecar, a sidecar) config; prints every error as
    /// file:line:column and exits 1 if any.
    CheckConfig {
        file: PathBuf,
        #[arg(long)]
        sidecar: bool,
        /// Also fetch remote key sets (JWKS URLs, OIDC discovery) to see that they load. Without
        /// it the check is offline: nothing leaves the machine.
        #[arg(long)]
        online: bool,
    },
    /// Check Kubernetes manifests before applying them: the API's JSON schemas, the Palisade
    /// configs inside them, and `palisade scan`. Exit 1 on any problem.
    CheckKubernetes(check_kubernetes::CheckKubernetesArgs),
    /// Run an upstream that answers with a JSON description of each request.
    Echo {
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
        /// Reported in the `upstream` field of each answer.
        #[arg(long, default_value = "echo")]
        name: String,
    },
    /// Start an echo upstream and a gateway on an embedded config, and print commands to try.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
    },
    /// API keys: `palisade apikey new --name NAME` prints a key once and its config entry.
    Apikey {
        #[command(subcommand)]
        command: ApikeyCommand,
    },
    /// Mint a test JWT signed with a PEM private key (RSA → RS256, P-256 → ES256, P-384 → ES384,
    /// Ed25519 → EdDSA). `--jwks` prints the key's public JWK Set for the gateway config instead.
    Token {
        #[arg(long)]
        key: PathBuf,
        #[arg(long, default_value = "developer")]
        sub: String,
        #[arg(long, default_value = "https://palisade.local")]
        iss: String,
        #[arg(long)]
        aud: Option<String>,
        /// Space-separated, or repeat the flag.
        #[arg(long = "scope", num_args = 1)]
        scopes: Vec<String>,
        #[arg(long = "role")]
        roles: Vec<String>,
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// Extra claim NAME=VALUE (VALUE is JSON if it parses, else a string). Repeatable.
        #[arg(long = "claim")]
        claims: Vec<String>,
        #[arg(long)]
        jwks: bool,
    },
    /// Authorization as code: `policy test FILE.yaml` runs the cases in FILE against the gateway
    /// config it names and exits 1 on any failure; `policy explain FILE.yaml --case NAME` shows the
    /// route and the deciding rule or policies for one case.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Add the Palisade sidecar to Kubernetes workloads (stdin or FILE to stdout), or serve the
    /// same as a mutating admission webhook (`--webhook`).
    Inject(inject::InjectArgs),
    /// Check a tree, file or image tarball for insecure Dockerfiles, Kubernetes manifests and
    /// Palisade configs, secrets and vulnerable packages. Exit 0 clean, 1 findings at or above
    /// --fail-on, 2 usage or input error.
    Scan(scan::ScanArgs),
    /// The local OSV advisory database that `scan` matches packages against.
    Db {
        #[command(subcommand)]
        command: scan::DbCommand,
    },
    /// GET a loopback admin endpoint (`http://127.0.0.1:9901/readyz`); exit 0 on 2xx. For
    /// Kubernetes exec probes in the distroless image.
    Probe {
        url: String,
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Print the version.
    Version,
}

#[derive(Subcommand)]
enum PolicyCommand {
    Test {
        file: PathBuf,
    },
    Explain {
        file: PathBuf,
        #[arg(long)]
        case: String,
    },
}

#[derive(Subcommand)]
enum ApikeyCommand {
    /// Generate a key. Only its SHA-256 goes into the config.
    New {
        #[arg(long)]
        name: String,
        /// Comma-separated.
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<String>,
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        /// RFC 3339 time after which the key is refused.
        #[arg(long)]
        expires: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    // The gateway serves on its own worker threads (one event loop per core); this runtime is the
    // control plane: admin, reload, health checks, signals. The echo server has no workers of its own
    // and gets a multi-threaded runtime.
    // A scan blocks: it reads files, and registries through a runtime of its own.
    if let Command::Scan(args) = cli.command {
        return scan::run(args);
    }
    let runtime = match cli.command {
        Command::Echo { .. } => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
        _ => tokio::runtime::Builder::new_current_thread().enable_all().build(),
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("palisade: cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("palisade: {error:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Gateway { config } => serve(ConfigSource::File(config)).await,
        Command::Sidecar { config } => sidecar::run(config).await,
        Command::Ca { command } => {
            ca::run(command).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { file, sidecar, online } => {
            let kind = if sidecar {
                ConfigKind::Sidecar
            } else {
                ConfigKind::Gateway
            };
            check_config(&file, kind, online).await
        }
        Command::Echo { listen, name } => {
            let (address, task) = palisade_echo::spawn(listen, &name).await?;
            tracing::info!(%address, "echo upstream listening");
            tokio::select! {
                _ = task => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { listen, admin } => demo::run(listen, admin).await,
        Command::Apikey {
            command:
                ApikeyCommand::New {
                    name,
                    scopes,
                    roles,
                    expires,
                },
        } => {
            credentials::new_api_key(&name, &scopes, &roles, expires.as_deref())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Token {
            key,
            sub,
            iss,
            aud,
            scopes,
            roles,
            ttl,
            claims,
            jwks,
        } => {
            let request = credentials::TokenRequest {
                key: &key,
                subject: &sub,
                issuer: &iss,
                audience: aud.as_deref(),
                scopes: &scopes,
                roles: &roles,
                ttl,
                claims: &claims,
            };
            credentials::token(&request, jwks)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy {
            command: PolicyCommand::Test { file },
        } => policy::test(&file).await,
        Command::Policy {
            command: PolicyCommand::Explain { file, case },
        } => policy::explain(&file, &case).await,
        // The scanner is synchronous; nothing else runs on this runtime meanwhile.
        Command::Scan(args) => Ok(scan::run(args)),
        Command::Inject(args) => inject::run(args).await,
        Command::CheckKubernetes(args) => check_kubernetes::run(args).await,
        Command::Db { command } => scan::db(command).await,
        Command::Probe { url, timeout } => probe::run(&url, timeout).await,
        Command::Version => {
            println!("palisade {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn serve(source: ConfigSource) -> anyhow::Result<ExitCode> {
    let signals = palisade_gateway::StopSignals::install()?;
    let gateway = Gateway::start(source).await?;
    run_gateway(gateway, signals).await
}

async fn run_gateway(gateway: Gateway, signals: palisade_gateway::StopSignals) -> anyhow::Result<ExitCode> {
    for (name, address) in gateway.listeners() {
        tracing::info!(listener = %name, %address, "listening");
    }
    tracing::info!(address = %gateway.admin_addr(), "admin listening");
    let drained = gateway.run_until(signals).await;
    Ok(if drained { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

async fn check_config(file: &std::path::Path, kind: ConfigKind, online: bool) -> anyhow::Result<ExitCode> {
    match palisade_gateway::check_config_with(file, kind, online).await {
        Ok(config) => {
            for warning in palisade_core::warnings(&config, &file.display().to_string()) {
                eprintln!("warning: {warning}");
            }
            println!(
                "{}: ok ({} listeners, {} clusters, {} routes)",
                file.display(),
                config.listeners.len(),
                config.clusters.len(),
                config.routes.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{} error(s) found", errors.0.len());
            Ok(ExitCode::from(1))
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only for a person at a terminal; a pipe or a log shipper gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
