//! `palisade`: the one binary. Subcommands are thin: each parses its arguments and calls a library.

mod demo;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
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
    /// Validate a gateway config; prints every error as file:line:column and exits 1 if any.
    CheckConfig { file: PathBuf },
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
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    // The gateway serves on its own worker threads (one event loop per core); this runtime is the
    // control plane: admin, reload, health checks, signals. The echo server has no workers of its own
    // and gets a multi-threaded runtime.
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
        Command::Gateway { config } => {
            let gateway = Gateway::start(ConfigSource::File(config)).await?;
            for (name, address) in gateway.listeners() {
                tracing::info!(listener = %name, %address, "listening");
            }
            tracing::info!(address = %gateway.admin_addr(), "admin listening");
            let drained = gateway.run_until_signal().await?;
            Ok(if drained { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::CheckConfig { file } => match palisade_gateway::check_config(&file).await {
            Ok(config) => {
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
        },
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
        Command::Version => {
            println!("palisade {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
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
