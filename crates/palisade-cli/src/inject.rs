//! `palisade inject`: the sidecar added to Kubernetes workloads, from a file or stdin to stdout, or
//! (`--webhook`) as a mutating admission webhook.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use palisade_kubernetes::inject::{inject_text, InjectOptions, Outcome};

#[derive(Args)]
pub struct InjectArgs {
    /// Manifests to inject (YAML, multi-document or `List`, or JSON); `-` or nothing for stdin.
    file: Option<PathBuf>,
    /// The identity service, as pods reach it.
    #[arg(long, default_value = "https://palisade-ca.palisade-system.svc:8443")]
    ca_url: String,
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
    /// The CA's trust bundle (PEM), e.g. from the `palisade-trust-bundle` ConfigMap; written into
    /// each pod (read through the downward API).
    #[arg(long, required_unless_present = "trust_bundle_config_map")]
    trust_bundle: Option<PathBuf>,
    /// Mount the bundle from this ConfigMap of the pod's namespace (key `bundle.pem`) instead of
    /// writing it into the pod.
    #[arg(long)]
    trust_bundle_config_map: Option<String>,
    /// The sidecar image.
    #[arg(long)]
    image: Option<String>,
    /// For objects without `metadata.namespace` (the default allow list names it).
    #[arg(long)]
    namespace: Option<String>,
    /// The audience of the projected ServiceAccount token (the identity service's).
    #[arg(long, default_value = palisade_kubernetes::config::DEFAULT_AUDIENCE)]
    audience: String,
    #[arg(long, default_value_t = 15006)]
    inbound_port: u16,
    #[arg(long, default_value_t = 15021)]
    admin_port: u16,
    /// Add the sidecar as a plain container (clusters before Kubernetes 1.29) instead of a native
    /// sidecar (an init container with `restartPolicy: Always`).
    #[arg(long)]
    classic_sidecar: bool,
    /// Serve as a mutating admission webhook (POST /inject) instead of reading FILE.
    #[arg(long, requires_all = ["listen", "tls_cert", "tls_key"])]
    webhook: bool,
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    #[arg(long)]
    tls_key: Option<PathBuf>,
}

pub async fn run(args: InjectArgs) -> anyhow::Result<ExitCode> {
    let bundle = match &args.trust_bundle {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("--trust-bundle {}", path.display()))?,
        None => String::new(),
    };
    let mut options = InjectOptions::new(&args.ca_url, &args.trust_domain, &bundle);
    if let Some(image) = &args.image {
        options.image = image.clone();
    }
    options.namespace = args.namespace.clone();
    options.trust_bundle_config_map = args.trust_bundle_config_map.clone();
    options.audience = args.audience.clone();
    options.inbound_port = args.inbound_port;
    options.admin_port = args.admin_port;
    options.native_sidecar = !args.classic_sidecar;
    if args.webhook {
        return webhook(args, options).await;
    }
    let mut text = String::new();
    match args.file.as_deref() {
        None => std::io::stdin().read_to_string(&mut text).context("stdin")?,
        Some(path) if path.as_os_str() == "-" => std::io::stdin().read_to_string(&mut text).context("stdin")?,
        Some(path) => {
            text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
            text.len()
        }
    };
    let (output, reports) = match inject_text(&text, &options) {
        Ok(done) => done,
        Err(error) => {
            eprintln!("palisade inject: {error}");
            return Ok(ExitCode::from(2));
        }
    };
    std::io::stdout().write_all(output.as_bytes())?;
    for report in &reports {
        let what = format!("{}/{}", report.kind.to_lowercase(), report.name);
        match &report.outcome {
            Outcome::Injected => eprintln!("{what}: injected"),
            Outcome::AlreadyInjected => eprintln!("{what}: already injected"),
            Outcome::OptedOut => eprintln!("{what}: skipped (palisade.dev/inject: \"false\")"),
            Outcome::Skipped(reason) => eprintln!("{what}: not injected: {reason}"),
            Outcome::NotAWorkload => {}
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn webhook(args: InjectArgs, inject: InjectOptions) -> anyhow::Result<ExitCode> {
    let signals = palisade_gateway::StopSignals::install()?;
    let (Some(listen), Some(tls_cert), Some(tls_key), Some(trust_bundle)) =
        (args.listen, args.tls_cert, args.tls_key, args.trust_bundle)
    else {
        anyhow::bail!("--webhook needs --listen, --tls-cert, --tls-key and --trust-bundle");
    };
    let webhook = palisade_kubernetes::webhook::Webhook::start(palisade_kubernetes::webhook::WebhookOptions {
        listen,
        tls_cert,
        tls_key,
        trust_bundle,
        inject,
        header_read_timeout: std::time::Duration::from_secs(10),
    })
    .await
    .map_err(anyhow::Error::msg)?;
    tracing::info!(address = %webhook.address, "injector webhook listening");
    signals.wait().await;
    webhook.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
