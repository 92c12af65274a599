//! `palisade demo`: everything a newcomer needs to see the gateway work, with no files at all.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use palisade_auth::signing::SigningKey;
use palisade_gateway::{ConfigSource, Gateway};
use palisade_mesh::{CertificateAuthority, IdentityPaths, LeafRequest, Lifetimes, SpiffeId};

/// The embedded config; a test in this crate loads it so it cannot rot.
pub const DEMO_CONFIG: &str = include_str!("demo.yaml");

/// The OpenAPI contract of the demo's `/shop/orders` route, written next to nothing else at start.
const DEMO_OPENAPI: &str = include_str!("demo-openapi.yaml");

/// The credentials the demo makes at start: a signing key (its public half goes in the config) and
/// an API key (only its hash goes in the config).
pub struct DemoCredentials {
    pub key: SigningKey,
    pub api_key: String,
    pub api_key_hash: String,
}

impl DemoCredentials {
    pub fn generate() -> anyhow::Result<DemoCredentials> {
        let (api_key, api_key_hash) = palisade_auth::apikey::generate();
        Ok(DemoCredentials {
            key: SigningKey::generate_es256()?,
            api_key,
            api_key_hash,
        })
    }

    fn token(&self, subject: &str, scopes: &str) -> anyhow::Result<String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let claims = serde_json::json!({"iss": "https://palisade.demo", "aud": "demo-api", "sub": subject,
            "scope": scopes, "iat": now, "exp": now + 3600});
        Ok(self.key.sign(&claims)?)
    }
}

/// The files the demo needs (an OpenAPI contract, a CA and three workload identities) in a
/// temporary directory that is removed when the demo ends.
pub struct DemoFiles {
    dir: tempfile::TempDir,
}

/// The demo's trust domain and the identities it issues.
const TRUST_DOMAIN: &str = "demo.palisade";
const IDENTITIES: [(&str, &str); 3] = [
    ("gateway", "spiffe://demo.palisade/gateway"),
    ("orders", "spiffe://demo.palisade/ns/shop/sa/orders"),
    ("intruder", "spiffe://demo.palisade/ns/other/sa/intruder"),
];

/// A file only its owner can read (the demo's admin token).
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}

impl DemoFiles {
    pub fn create() -> anyhow::Result<DemoFiles> {
        let dir = tempfile::Builder::new().prefix("palisade-demo-").tempdir()?;
        std::fs::write(dir.path().join("openapi.yaml"), DEMO_OPENAPI)?;
        let admin_token: [u8; 16] = rand::random();
        let admin_token: String = admin_token.iter().map(|b| format!("{b:02x}")).collect();
        write_private(&dir.path().join("admin-token"), &format!("adm_{admin_token}"))?;
        let mut ca = CertificateAuthority::init(&dir.path().join("ca"), TRUST_DOMAIN, Lifetimes::default())?;
        for (name, id) in IDENTITIES {
            let request = LeafRequest::new(SpiffeId::parse(id)?, Duration::from_secs(24 * 3600));
            let issued = ca.issue(&request)?;
            let paths = IdentityPaths::in_dir(&dir.path().join(name));
            paths.write(
                &issued.issued.chain_pem,
                &issued.key_pem,
                &issued.issued.bundle_pem,
                false,
            )?;
        }
        Ok(DemoFiles { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn admin_token(&self) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(self.path().join("admin-token"))?)
    }

    /// The orders sidecar: only the gateway may call `/mesh`.
    fn sidecar_config(&self, app: SocketAddr) -> String {
        format!(
            "trust_domain: {TRUST_DOMAIN}\nidentity: {{ cert: orders/svid.pem, key: orders/svid.key, bundle: orders/bundle.pem }}\nadmin: {{ address: 127.0.0.1:0 }}\naccess_log: {{ enabled: false }}\ninbound:\n  address: 127.0.0.1:0\n  app: {app}\n  routes:\n    - name: orders\n      match: {{ prefix: /mesh }}\n      allow: [spiffe://demo.palisade/gateway]\n"
        )
    }
}

pub fn config_text(
    listen: SocketAddr,
    admin: SocketAddr,
    echo: SocketAddr,
    sidecar: SocketAddr,
    files: &DemoFiles,
    credentials: &DemoCredentials,
) -> String {
    DEMO_CONFIG
        .replace("{openapi}", &files.path().join("openapi.yaml").display().to_string())
        .replace("{mesh}", &files.path().display().to_string())
        .replace("{sidecar}", &sidecar.to_string())
        .replace("{listen}", &listen.to_string())
        .replace("{admin}", &admin.to_string())
        .replace("{echo}", &echo.to_string())
        .replace("{jwks}", &credentials.key.jwks().to_string())
        .replace("{api_key_hash}", &credentials.api_key_hash)
}

pub async fn run(listen: SocketAddr, admin: SocketAddr) -> anyhow::Result<ExitCode> {
    let local = SocketAddr::from(([127, 0, 0, 1], 0));
    let (echo, _echo_task) = palisade_echo::spawn(local, "echo").await?;
    let (orders_app, _orders_task) = palisade_echo::spawn(local, "orders-app").await?;
    let files = DemoFiles::create()?;
    let sidecar_config = files.path().join("orders-sidecar.yaml");
    std::fs::write(&sidecar_config, files.sidecar_config(orders_app))?;
    let sidecar = Gateway::start(ConfigSource::SidecarFile(sidecar_config)).await?;
    let sidecar_address = sidecar.listener_addr("inbound").unwrap_or(local);
    let credentials = DemoCredentials::generate()?;
    let text = config_text(listen, admin, echo, sidecar_address, &files, &credentials);
    let config =
        palisade_core::parse_str("demo.yaml", &text, None).map_err(|e| anyhow::anyhow!("embedded config: {e}"))?;
    let token = credentials.token("alice", "orders:read")?;
    let api_key = &credentials.api_key;
    let gateway = Gateway::start(ConfigSource::Parsed {
        name: "demo.yaml".into(),
        config: Box::new(config),
    })
    .await?;
    let base = format!("http://{}", gateway.listener_addr("public").unwrap_or(listen));
    let admin = gateway.admin_addr();
    let admin_token = files.admin_token()?;
    eprintln!("--- palisade demo: embedded config ---\n{text}--------------------------------------");
    eprintln!(
        r#"
Palisade is listening on {base} (admin on http://{admin}); the echo upstream is {echo}.
Try these in another terminal (access log lines appear here on stdout):

  curl -i {base}/api/hello                          # 200: the echo shows what the upstream received
  curl -i {base}/orders/42                          # 200: template route /orders/{{id}}
  curl -i -X POST {base}/orders/42                  # 405 with Allow: DELETE, GET
  curl -i {base}/nowhere                            # 404 problem+json
  curl -i --path-as-is '{base}/x/../api/%61bc'      # 200: the upstream sees the normalized /api/abc
  curl -i --path-as-is '{base}/api/..%2f..%2fetc'   # 400: encoded slash refused
  curl -i -H 'X-Forwarded-For: 6.6.6.6' {base}/api  # spoofed header replaced by the real client
  curl -i -X POST --data-binary @/etc/services {base}/upload   # 413: body over the 1KiB route limit

Authentication (/secure accepts a JWT from the demo issuer or an API key):
  TOKEN={token}
  curl -i -H "Authorization: Bearer $TOKEN" {base}/secure     # 200: the echo shows x-palisade-subject: alice
  curl -i {base}/secure                                       # 401 with WWW-Authenticate: Bearer
  curl -i -H "Authorization: Bearer ${{TOKEN}}x" {base}/secure  # 401: token tampered with
  curl -i -H 'X-Api-Key: {api_key}' {base}/secure   # 200 as demo-reporting
  curl -i -H "Authorization: Bearer $TOKEN" {base}/admin      # 403: authenticated, but alice is no admin
  curl -i -H 'X-Palisade-Subject: admin' {base}/api           # the forged identity never reaches the upstream

Traffic protection (/limited allows 3 requests at once, then 2 per minute per client; /shop/orders
is validated against an OpenAPI contract):
  for i in 1 2 3 4; do curl -s -o /dev/null -w '%{{http_code}} ' {base}/limited; done; echo   # 200 200 200 429
  curl -i {base}/limited                            # 429 with Retry-After, RateLimit and RateLimit-Policy
  curl -i {base}/v1/orders                          # 200 with Deprecation, Sunset and Link: </orders>
  curl -i -H 'Content-Type: application/json' -d '{{"sku":"A-1","quantity":2}}' {base}/shop/orders   # 200: matches the OpenAPI contract
  curl -i -H 'Content-Type: application/json' -d '{{"sku":"a 1","quantity":0}}' {base}/shop/orders   # 400 listing /body/sku and /body/quantity
Service mesh (gateway → orders sidecar → orders app, mutual TLS with SPIFFE identities; the
sidecar lets only spiffe://demo.palisade/gateway call it):
  curl -i {base}/mesh/orders/1                      # 200: the app sees x-palisade-peer-id: spiffe://demo.palisade/gateway
  curl -ik --cert {mesh}/intruder/svid.pem --key {mesh}/intruder/svid.key https://{sidecar_address}/mesh/orders/1   # 403: a valid identity, not allowed
  curl -ik https://{sidecar_address}/mesh/orders/1  # refused in the TLS handshake: no client certificate

Security observability (10 refused credentials from one client in a minute open an alert, and the
client is blocked for 60 s; the alert and the block are audit events on stdout):
  for i in $(seq 10); do curl -s -o /dev/null -H "Authorization: Bearer forged$i" {base}/secure; done
  curl -s -H 'Authorization: Bearer {admin_token}' http://{admin}/alerts      # the auth_failures alert
  curl -i {base}/api/hello                          # 403 temporarily-blocked: this client, for 60 s
  curl -s -H 'Authorization: Bearer {admin_token}' http://{admin}/responses   # the block, with its id
  curl -i -X DELETE -H 'Authorization: Bearer {admin_token}' http://{admin}/responses/ID   # lift it now

  curl -s http://{admin}/readyz
  curl -s http://{admin}/metrics | grep -E 'palisade_(requests|alerts|denials)'

Press Ctrl-C to stop.
"#,
        mesh = files.path().display()
    );
    let drained = gateway.run_until_signal().await?;
    sidecar.shutdown().await;
    Ok(if drained { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_demo_config_is_valid() {
        let any: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let credentials = DemoCredentials::generate().unwrap();
        let files = DemoFiles::create().unwrap();
        let text = config_text(any, any, any, any, &files, &credentials);
        let sidecar = files.path().join("sidecar.yaml");
        std::fs::write(&sidecar, files.sidecar_config(any)).unwrap();
        palisade_core::ConfigKind::Sidecar
            .load_partially(&sidecar)
            .and_then(|(config, diagnostics)| diagnostics.finish(config))
            .expect("the demo sidecar config loads");
        palisade_core::parse_str("demo.yaml", &text, None).expect("the demo config loads");
    }
}
