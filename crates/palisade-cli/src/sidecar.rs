//! `palisade sidecar`: the gateway pipeline on a sidecar config, plus (with `identity.ca`) the agent
//! that obtains the workload's certificate before the listeners open and renews it afterwards.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use palisade_core::config::sidecar::SidecarConfig;
use palisade_gateway::{ConfigSource, Gateway};
use palisade_mesh::agent::{Agent, AgentConfig};
use palisade_mesh::{IdentityPaths, SpiffePattern};

pub async fn run(config: PathBuf) -> anyhow::Result<ExitCode> {
    let signals = palisade_gateway::StopSignals::install()?;
    let sidecar = palisade_core::load_sidecar(&config)?;
    let agent = agent_for(&sidecar)?;
    if let Some(agent) = &agent {
        let validity = agent
            .ensure_identity()
            .await
            .context("cannot obtain this workload's certificate")?;
        tracing::info!(
            expires_at = %palisade_mesh::ca::humanize(palisade_mesh::ca::unix_seconds(validity.not_after)),
            "identity ready"
        );
    }
    if sidecar.identity_only() {
        let Some(agent) = agent else {
            anyhow::bail!("a sidecar without inbound or outbound needs identity.ca");
        };
        return identity_only(agent, &sidecar.admin.address.value, signals).await;
    }
    let gateway = Gateway::start(ConfigSource::SidecarFile(config)).await?;
    if let Some(agent) = agent {
        let shared = gateway.shared().clone();
        let audit = shared.runtime.load().audit.clone();
        let agent = agent
            .report_status_to(Arc::new(move |status| {
                shared.metrics.identity_expiry_seconds.set(status.seconds_left);
                shared.set_identity(palisade_gateway::IdentityHealth {
                    seconds_left: status.seconds_left,
                    renewal_failing: status.renewal_failing,
                });
            }))
            .audit_to(audit);
        // The agent stops with the process; it holds nothing that needs draining.
        let (_keep, stop) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let _keep = _keep;
            agent.run(stop).await;
        });
    }
    crate::run_gateway(gateway, signals).await
}

/// No listeners: keep the certificate fresh in the identity files (for the pod's other containers)
/// and answer probes and metrics on the admin address, until SIGTERM.
async fn identity_only(agent: Agent, admin: &str, signals: palisade_gateway::StopSignals) -> anyhow::Result<ExitCode> {
    let listener = tokio::net::TcpListener::bind(admin)
        .await
        .with_context(|| format!("admin.address {admin}"))?;
    tracing::info!(address = %listener.local_addr()?, "admin listening");
    let status = Arc::new(palisade_mesh::status::SharedStatus::default());
    let reported = status.clone();
    let agent = agent.report_status_to(Arc::new(move |now| reported.set(now)));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let admin = tokio::spawn(palisade_mesh::status::serve(listener, status));
    let renewing = tokio::spawn(agent.run(stopped));
    signals.wait().await;
    let _ = stop.send(true);
    let _ = renewing.await;
    admin.abort();
    Ok(ExitCode::SUCCESS)
}

fn agent_for(sidecar: &SidecarConfig) -> anyhow::Result<Option<Agent>> {
    let Some(service) = &sidecar.identity.ca else {
        return Ok(None);
    };
    let service = &service.value;
    let server_id = match &service.server_id {
        Some(id) => id.value.clone(),
        None => format!(
            "spiffe://{}{}",
            sidecar.trust_domain.value,
            palisade_mesh::server::SERVICE_PATH
        ),
    };
    let server_id = SpiffePattern::parse(&server_id).with_context(|| format!("identity.ca.server_id {server_id:?}"))?;
    let join_token = match &service.join_token {
        Some(reference) => match reference.value.resolve() {
            Ok(secret) => Some(secret.expose().to_string()),
            // Only needed without a valid certificate; `ensure_identity` says so if it is.
            Err(error) => {
                tracing::warn!(%error, "identity.ca.join_token cannot be resolved");
                None
            }
        },
        None => None,
    };
    let identity = &sidecar.identity;
    Ok(Some(Agent::new(AgentConfig {
        url: service.url.value.clone(),
        server_id,
        paths: IdentityPaths {
            cert: identity.cert.value.clone(),
            key: identity.key.value.clone(),
            bundle: identity.bundle.value.clone(),
        },
        join_token,
        service_account_token_file: service.service_account_token.as_ref().map(|f| f.value.clone()),
        bootstrap_bundle: service.bootstrap_bundle.as_ref().map(|f| f.value.clone()),
        ttl: service.ttl.map(|ttl| ttl.get()),
        on_status: None,
        audit: None,
    })))
}
