//! Images straight from a registry, through the OCI distribution API (`oci-client`): anonymous,
//! basic and bearer-token challenges with credentials from the Docker config, TLS with extra
//! roots, plain HTTP only for registries the user names, a platform chosen from multi-arch
//! indexes, every blob's digest verified and layers streamed chunk by chunk into the image scan.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{OciDescriptor, OciImageManifest, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};

use crate::image::{ImageError, Source};

/// Manifests and configs are small; a registry that sends more is refused rather than trusted.
const MAX_CONFIG_BYTES: i64 = 16 * 1024 * 1024;

/// How to reach registries, from the command line.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `os/arch[/variant]`; `linux/amd64` when unset.
    pub platform: Option<String>,
    /// Registries (`host` or `host:port`) reached over plain HTTP. Only these.
    pub insecure: Vec<String>,
    /// PEM certificates trusted besides the system's roots.
    pub ca_files: Vec<PathBuf>,
    /// The Docker config directory (`config.json`); `$DOCKER_CONFIG` or `~/.docker` when unset.
    pub docker_config: Option<PathBuf>,
}

/// Why an image could not be read from its registry; each names the reference and what to do.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}: not an image reference ({1})")]
    Reference(String, String),
    #[error("--platform {0}: expected os/arch or os/arch/variant, such as linux/amd64 or linux/arm64/v8")]
    Platform(String),
    #[error("{0}: {1}")]
    Settings(String, String),
    #[error("{registry}: cannot connect ({detail})")]
    Unreachable { registry: String, detail: String },
    #[error("{registry}: TLS failed ({detail}); trust its CA with --registry-ca FILE, or name a plain-HTTP registry with --insecure {registry}")]
    Tls { registry: String, detail: String },
    #[error(
        "{reference}: not authorized ({detail}); add credentials with `docker login {registry}` (read from {config})"
    )]
    Unauthorized {
        reference: String,
        registry: String,
        config: String,
        detail: String,
    },
    #[error("{reference}: not found ({detail})")]
    NotFound { reference: String, detail: String },
    #[error("{reference}: no image for {wanted} in its index (it has: {available}); choose one with --platform")]
    NoPlatform {
        reference: String,
        wanted: String,
        available: String,
    },
    #[error("{reference}: digest mismatch, refused ({detail})")]
    Digest { reference: String, detail: String },
    #[error("{reference}: {detail}")]
    Protocol { reference: String, detail: String },
}

/// `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn parse(text: &str) -> Result<Self, RegistryError> {
        let parts: Vec<&str> = text.split('/').collect();
        let valid = |s: &&str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        match parts.as_slice() {
            [os, arch] if valid(os) && valid(arch) => Ok(Self {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] if valid(os) && valid(arch) && valid(variant) => Ok(Self {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(variant.to_string()),
            }),
            _ => Err(RegistryError::Platform(text.to_string())),
        }
    }

    /// An unset variant matches any; arm64's implied variant is v8 (as containerd reads it).
    fn matches(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        let implied = |arch: &str, v: Option<&str>| match (arch, v) {
            ("arm64", None) => Some("v8".to_string()),
            (_, v) => v.map(str::to_string),
        };
        self.os == os
            && self.architecture == architecture
            && match &self.variant {
                None => true,
                Some(wanted) => implied(architecture, variant).as_deref() == Some(wanted.as_str()),
            }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// The text looks like an image reference (and not like a path someone mistyped): it parses as
/// one and has a tag, a digest or a registry host.
pub fn looks_like_reference(text: &str) -> bool {
    if Reference::try_from(text).is_err() || text.starts_with('.') || text.starts_with('/') {
        return false;
    }
    let first = text.split('/').next().unwrap_or("");
    let has_host = text.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    // The parser fills in `latest`: a tag counts only when it is written.
    let has_tag = text.rsplit('/').next().is_some_and(|last| last.contains(':'));
    has_host || has_tag || text.contains('@')
}

/// An image in a registry: its manifest read and verified, its blobs fetched on demand.
pub struct RegistryImage {
    runtime: tokio::runtime::Runtime,
    client: Client,
    reference: Reference,
    manifest: OciImageManifest,
    /// The digest of the image manifest that was read (the platform's, for an index).
    pub manifest_digest: String,
    name: String,
    /// Where credentials were read from, for "not authorized" messages.
    credentials_file: String,
}

impl RegistryImage {
    /// Resolves `reference` to one image manifest (choosing the platform from an index). Blocks
    /// on a runtime of its own: call it from plain threads (or `spawn_blocking`), not from async
    /// tasks.
    pub fn open(reference: &str, settings: &Settings) -> Result<Self, RegistryError> {
        let parsed = Reference::try_from(reference)
            .map_err(|e| RegistryError::Reference(reference.to_string(), e.to_string()))?;
        let platform = Platform::parse(settings.platform.as_deref().unwrap_or("linux/amd64"))?;
        let registry = parsed.resolve_registry().to_string();
        let config_dir = settings.docker_config.clone().or_else(default_docker_config);
        let auth = match &config_dir {
            Some(dir) => credentials(dir, &registry)
                .map_err(|detail| RegistryError::Settings(dir.join("config.json").display().to_string(), detail))?,
            None => RegistryAuth::Anonymous,
        };
        let mut roots = Vec::new();
        for file in &settings.ca_files {
            let pem =
                std::fs::read(file).map_err(|e| RegistryError::Settings(file.display().to_string(), e.to_string()))?;
            roots.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data: pem,
            });
        }
        // reqwest is built without a crypto provider of its own: it uses the process default,
        // which is ring, the one every other TLS endpoint of Palisade uses.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = ClientConfig {
            protocol: if settings.insecure.is_empty() {
                ClientProtocol::Https
            } else {
                ClientProtocol::HttpsExcept(settings.insecure.clone())
            },
            extra_root_certificates: roots,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            user_agent: concat!("palisade/", env!("CARGO_PKG_VERSION")),
            max_concurrent_download: 1,
            ..ClientConfig::default()
        };
        let client =
            Client::try_from(config).map_err(|e| RegistryError::Settings("--registry-ca".into(), e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| RegistryError::Settings("runtime".into(), e.to_string()))?;
        let failure = Failure {
            reference: reference.to_string(),
            registry: registry.clone(),
            config: config_dir
                .map(|d| d.join("config.json").display().to_string())
                .unwrap_or_else(|| "no Docker config".into()),
        };
        let credentials_file = failure.config.clone();
        let (manifest, manifest_digest) = runtime.block_on(async {
            // Authenticate first, so that a refused login is reported as such (the pulls that
            // follow would only see an anonymous 401).
            client
                .auth(&parsed, &auth, RegistryOperation::Pull)
                .await
                .map_err(|e| failure.classify(e))?;
            let (manifest, digest) = client
                .pull_manifest(&parsed, &auth)
                .await
                .map_err(|e| failure.classify(e))?;
            match manifest {
                OciManifest::Image(manifest) => Ok((manifest, digest)),
                OciManifest::ImageIndex(index) => {
                    let chosen = index.manifests.iter().find(|entry| {
                        entry.platform.as_ref().is_some_and(|p| {
                            platform.matches(&p.os.to_string(), &p.architecture.to_string(), p.variant.as_deref())
                        })
                    });
                    let Some(entry) = chosen else {
                        let available: Vec<String> = index
                            .manifests
                            .iter()
                            .filter_map(|e| e.platform.as_ref())
                            .map(|p| {
                                let mut text = format!("{}/{}", p.os, p.architecture);
                                if let Some(variant) = &p.variant {
                                    text = format!("{text}/{variant}");
                                }
                                text
                            })
                            .filter(|p| p != "unknown/unknown")
                            .collect();
                        return Err(RegistryError::NoPlatform {
                            reference: reference.to_string(),
                            wanted: platform.to_string(),
                            available: available.join(", "),
                        });
                    };
                    // Pulled by digest: oci-client checks the body against it.
                    let by_digest = parsed.clone_with_digest(entry.digest.clone());
                    match client
                        .pull_manifest(&by_digest, &auth)
                        .await
                        .map_err(|e| failure.classify(e))?
                    {
                        (OciManifest::Image(manifest), digest) => Ok((manifest, digest)),
                        (OciManifest::ImageIndex(_), _) => Err(RegistryError::Protocol {
                            reference: reference.to_string(),
                            detail: format!("{} is an index inside an index", entry.digest),
                        }),
                    }
                }
            }
        })?;
        Ok(Self {
            runtime,
            client,
            reference: parsed,
            manifest,
            manifest_digest,
            name: reference.to_string(),
            credentials_file,
        })
    }

    fn failure(&self) -> Failure {
        Failure {
            reference: self.name.clone(),
            registry: self.reference.resolve_registry().to_string(),
            config: self.credentials_file.clone(),
        }
    }
}

impl Source for RegistryImage {
    fn config(&mut self) -> Result<Vec<u8>, ImageError> {
        let descriptor = self.manifest.config.clone();
        if descriptor.size > MAX_CONFIG_BYTES {
            return Err(ImageError::Format(
                self.name.clone(),
                format!("image config of {} bytes refused", descriptor.size),
            ));
        }
        let mut bytes = Vec::new();
        let failure = self.failure();
        self.runtime
            .block_on(self.client.pull_blob(&self.reference, &descriptor, &mut bytes))
            .map_err(|e| ImageError::Registry(failure.classify(e)))?;
        Ok(bytes)
    }

    fn layers(&mut self) -> Result<Vec<String>, ImageError> {
        Ok(self.manifest.layers.iter().map(|l| l.digest.clone()).collect())
    }

    fn layer(&mut self, index: usize) -> Result<Box<dyn Read + '_>, ImageError> {
        let descriptor: OciDescriptor = self
            .manifest
            .layers
            .get(index)
            .cloned()
            .ok_or_else(|| ImageError::Format(self.name.clone(), format!("no layer {index}")))?;
        let failure = self.failure();
        let stream = self
            .runtime
            .block_on(self.client.pull_blob_stream(&self.reference, &descriptor))
            .map_err(|e| ImageError::Registry(failure.classify(e)))?;
        Ok(Box::new(BlobReader {
            runtime: &self.runtime,
            stream: stream.stream,
            chunk: bytes::Bytes::new(),
            failure,
        }))
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// A blob as `Read`: one chunk of the verifying stream at a time. The stream fails its last read
/// when the digest does not match, and the image scan reads every blob to its end.
struct BlobReader<'a> {
    runtime: &'a tokio::runtime::Runtime,
    stream: futures_util::stream::BoxStream<'static, std::io::Result<bytes::Bytes>>,
    chunk: bytes::Bytes,
    failure: Failure,
}

impl Read for BlobReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.runtime.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(error)) => {
                    let text = error.to_string();
                    let classified = if text.contains("digest") || text.contains("Digest") {
                        RegistryError::Digest {
                            reference: self.failure.reference.clone(),
                            detail: text,
                        }
                    } else {
                        RegistryError::Protocol {
                            reference: self.failure.reference.clone(),
                            detail: text,
                        }
                    };
                    return Err(std::io::Error::other(classified));
                }
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk = self.chunk.slice(n..);
        Ok(n)
    }
}

/// Turns what oci-client reports into the error a user can act on.
#[derive(Debug, Clone)]
struct Failure {
    reference: String,
    registry: String,
    config: String,
}

impl Failure {
    fn classify(&self, error: OciDistributionError) -> RegistryError {
        let reference = self.reference.clone();
        let unauthorized = |detail: String| RegistryError::Unauthorized {
            reference: reference.clone(),
            registry: self.registry.clone(),
            config: self.config.clone(),
            detail,
        };
        match error {
            OciDistributionError::AuthenticationFailure(detail) => unauthorized(one_line(&detail)),
            OciDistributionError::UnauthorizedError { url } => unauthorized(format!("401 from {url}")),
            OciDistributionError::DigestError(error) => RegistryError::Digest {
                reference,
                detail: error.to_string(),
            },
            OciDistributionError::RegistryError { envelope, .. } => {
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                let detail = envelope
                    .errors
                    .iter()
                    .map(|e| format!("{:?}: {}", e.code, e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                if codes
                    .iter()
                    .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
                {
                    unauthorized(detail)
                } else if codes.iter().any(|c| {
                    matches!(
                        c,
                        OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown | OciErrorCode::BlobUnknown
                    )
                }) {
                    RegistryError::NotFound { reference, detail }
                } else {
                    RegistryError::Protocol { reference, detail }
                }
            }
            OciDistributionError::ServerError { code, url, message } => match code {
                401 | 403 => unauthorized(format!("{code} from {url}")),
                404 => RegistryError::NotFound {
                    reference,
                    detail: format!("404 from {url}"),
                },
                _ => RegistryError::Protocol {
                    reference,
                    detail: format!("{code} from {url}: {}", one_line(&message)),
                },
            },
            OciDistributionError::ImageManifestNotFoundError(detail) => RegistryError::NotFound { reference, detail },
            OciDistributionError::RequestError(error) => {
                let detail = chain(&error);
                let tls = ["certificate", "tls", "TLS", "InvalidContentType", "corrupt message"];
                if tls.iter().any(|word| detail.contains(word)) {
                    RegistryError::Tls {
                        registry: self.registry.clone(),
                        detail,
                    }
                } else if error.is_connect() || error.is_timeout() {
                    RegistryError::Unreachable {
                        registry: self.registry.clone(),
                        detail,
                    }
                } else {
                    RegistryError::Protocol { reference, detail }
                }
            }
            other => RegistryError::Protocol {
                reference,
                detail: chain(&other),
            },
        }
    }
}

/// An error and its sources, on one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let more = inner.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = inner.source();
    }
    one_line(&text)
}

/// Registry messages can be whole HTML pages: one line, bounded.
fn one_line(text: &str) -> String {
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

fn default_docker_config() -> Option<PathBuf> {
    std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".docker")))
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuth>,
    #[serde(default)]
    creds_store: Option<String>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(serde::Deserialize, Default)]
struct DockerAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// The registry part of an `auths` key: `https://index.docker.io/v1/` → `index.docker.io`.
fn auth_key_host(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

/// Docker Hub is `docker.io` in references and `index.docker.io` in `docker login`'s config.
fn same_registry(a: &str, b: &str) -> bool {
    let canonical = |h: &str| match h {
        "docker.io" | "registry-1.docker.io" | "index.docker.io" => "docker.io".to_string(),
        other => other.to_string(),
    };
    canonical(a) == canonical(b)
}

/// Credentials for `registry` from `dir/config.json`: a credential helper (`credHelpers`, then
/// `credsStore`) or the `auths` entry. No config file means anonymous.
pub fn credentials(dir: &Path, registry: &str) -> Result<RegistryAuth, String> {
    let path = dir.join("config.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RegistryAuth::Anonymous),
        Err(e) => return Err(e.to_string()),
    };
    let config: DockerConfig = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let helper = config
        .cred_helpers
        .iter()
        .find(|(host, _)| same_registry(auth_key_host(host), registry))
        .map(|(_, helper)| helper.clone());
    if let Some(helper) = helper {
        return credential_helper(&helper, registry);
    }
    let entry = config
        .auths
        .iter()
        .find(|(key, _)| same_registry(auth_key_host(key), registry))
        .map(|(_, entry)| entry);
    if let Some(entry) = entry {
        if entry.identitytoken.is_some() {
            return Err(format!(
                "{registry}: an identity token (OAuth refresh token) is not supported; log in with a password or access token"
            ));
        }
        if let (Some(user), Some(password)) = (&entry.username, &entry.password) {
            return Ok(RegistryAuth::Basic(user.clone(), password.clone()));
        }
        if let Some(encoded) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
            return decode_auth(encoded)
                .map(|(user, password)| RegistryAuth::Basic(user, password))
                .ok_or_else(|| format!("{registry}: `auth` is not base64 of user:password"));
        }
    }
    // An entry without credentials (what `docker login` leaves beside a credsStore), or none.
    match &config.creds_store {
        Some(store) => credential_helper(store, registry),
        None => Ok(RegistryAuth::Anonymous),
    }
}

fn decode_auth(encoded: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// `docker-credential-NAME get`, the registry on stdin, `{"Username", "Secret"}` on stdout.
fn credential_helper(name: &str, registry: &str) -> Result<RegistryAuth, String> {
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(format!("credential helper name `{name}` is not a plain name"));
    }
    run_credential_helper(Path::new(&format!("docker-credential-{name}")), registry)
}

fn run_credential_helper(program: &Path, registry: &str) -> Result<RegistryAuth, String> {
    use std::io::Write as _;
    let program_name = program.display().to_string();
    let program = &program_name;
    let mut child = std::process::Command::new(program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("{program}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(registry.as_bytes());
    }
    let output = child.wait_with_output().map_err(|e| format!("{program}: {e}"))?;
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stdout);
        // "credentials not found in native keychain" means: none for this registry.
        if said.contains("not found") {
            return Ok(RegistryAuth::Anonymous);
        }
        return Err(format!("{program} get failed ({})", output.status));
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(rename = "Username")]
        username: String,
        #[serde(rename = "Secret")]
        secret: String,
    }
    let answer: Answer = serde_json::from_slice(&output.stdout).map_err(|e| {
        format!(
            "{program} get: unreadable answer (line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    if answer.username == "<token>" {
        return Err(format!(
            "{program}: an identity token (OAuth refresh token) is not supported; log in with a password or access token"
        ));
    }
    Ok(RegistryAuth::Basic(answer.username, answer.secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_and_match_as_containerd_reads_them() {
        let amd64 = Platform::parse("linux/amd64").unwrap();
        assert!(amd64.matches("linux", "amd64", None));
        assert!(!amd64.matches("linux", "arm64", None));
        let arm64 = Platform::parse("linux/arm64/v8").unwrap();
        assert!(arm64.matches("linux", "arm64", None), "arm64 implies v8");
        assert!(arm64.matches("linux", "arm64", Some("v8")));
        let armv7 = Platform::parse("linux/arm/v7").unwrap();
        assert!(!armv7.matches("linux", "arm", Some("v6")));
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux/amd64/v2/x").is_err());
        assert!(Platform::parse("linux//amd64").is_err());
    }

    #[test]
    fn references_are_told_from_paths() {
        for reference in [
            "registry.example.org/team/app:1.4",
            "127.0.0.1:5000/app@sha256:0123456789012345678901234567890123456789012345678901234567890123",
            "alpine:3.19",
            "localhost/app",
        ] {
            assert!(looks_like_reference(reference), "{reference}");
        }
        for path in ["./app", "/tmp/x.tar", "app", "deploy/kubernetes", "../x:y"] {
            assert!(!looks_like_reference(path), "{path}");
        }
    }

    #[test]
    fn credential_helpers_are_asked_with_the_registry_on_stdin() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let helper = |name: &str, script: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            path
        };
        let asked = dir.path().join("asked");
        let good = helper(
            "good",
            &format!(
                "test \"$1\" = get || exit 3\ncat > {}\necho '{{\"Username\":\"ci\",\"Secret\":\"s3\"}}'",
                asked.display()
            ),
        );
        match run_credential_helper(&good, "r.example:5000").unwrap() {
            RegistryAuth::Basic(user, secret) => assert_eq!((user.as_str(), secret.as_str()), ("ci", "s3")),
            _ => panic!("not basic"),
        }
        assert_eq!(std::fs::read_to_string(&asked).unwrap(), "r.example:5000");
        let none = helper("none", "echo 'credentials not found in native keychain'; exit 1");
        assert!(matches!(
            run_credential_helper(&none, "r.example").unwrap(),
            RegistryAuth::Anonymous
        ));
        let broken = helper("broken", "exit 1");
        assert!(run_credential_helper(&broken, "r.example")
            .unwrap_err()
            .contains("get failed"));
        // The answer holds a secret: a parse error says where, never what.
        let garbled = helper("garbled", "echo '{\"Username\": \"ci\", \"Secret\": s3cr3t}'");
        let error = run_credential_helper(&garbled, "r.example").unwrap_err();
        assert!(!error.contains("s3cr3t"), "{error}");
        let token = helper("token", "echo '{\"Username\":\"<token>\",\"Secret\":\"refresh\"}'");
        assert!(run_credential_helper(&token, "r.example")
            .unwrap_err()
            .contains("identity token"));
        assert!(credential_helper("../evil", "r.example")
            .unwrap_err()
            .contains("plain name"));
    }

    #[test]
    fn docker_config_credentials() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            credentials(dir.path(), "r.example").unwrap(),
            RegistryAuth::Anonymous
        ));
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"auths": {"https://index.docker.io/v1/": {"auth": "aHViOnB3"}, "r.example:5000": {"username": "u", "password": "p"}, "bad.example": {"auth": "!!"}}}"#,
        )
        .unwrap();
        let basic = |auth: RegistryAuth| match auth {
            RegistryAuth::Basic(u, p) => (u, p),
            _ => panic!("not basic"),
        };
        assert_eq!(
            basic(credentials(dir.path(), "docker.io").unwrap()),
            ("hub".into(), "pw".into())
        );
        assert_eq!(
            basic(credentials(dir.path(), "r.example:5000").unwrap()),
            ("u".into(), "p".into())
        );
        assert!(matches!(
            credentials(dir.path(), "other.example").unwrap(),
            RegistryAuth::Anonymous
        ));
        assert!(credentials(dir.path(), "bad.example").unwrap_err().contains("base64"));
        std::fs::write(dir.path().join("config.json"), "{\n  \"auths\": [\n}").unwrap();
        let error = credentials(dir.path(), "r.example").unwrap_err();
        assert!(error.ends_with("at line 2 column 11"), "{error}");
    }
}
