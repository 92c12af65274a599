//! Images scanned straight from a real registry (Debian's `docker-registry`, distribution 2.8) on
//! 127.0.0.1: images the test writes as OCI layouts are pushed with Debian's `skopeo`, then
//! scanned by reference. Anonymous over plain HTTP, htpasswd over TLS with a CA of the test's,
//! bearer tokens from a token service of the test's, a two-platform index, and tampered blobs.
//! `.ci/run` installs both tools; without them the tests say so and pass.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use palisade_scan::image::{ImageError, Source as _};
use palisade_scan::registry::{RegistryError, RegistryImage, Settings};
use palisade_scan::{scan, scan_image, ScanError};
use sha2::{Digest as _, Sha256};
use support::{gzip, options, tar_of};

mod support;

const HIDDEN_TOKEN: &[u8] = include_bytes!("fixtures/image/config.env");
const DPKG_STATUS: &str = "Package: curl\nStatus: install ok installed\nVersion: 7.88.1-10+deb12u1\n\n";
const AWS_SECRET: &[u8] = b"aws_secret_access_key = \"q8Zr2LmX0vT7pKs1aB3cD4eF5gH6iJ7kL8mN9oP0\"\n";

fn tools() -> bool {
    for tool in ["docker-registry", "skopeo"] {
        if Command::new(tool).arg("--version").output().is_err() {
            eprintln!(
                "skipped: {tool} is not installed (Debian packages docker-registry and skopeo; .ci/run installs them)"
            );
            return false;
        }
    }
    true
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// An OCI image layout directory, as skopeo reads it.
struct Layout {
    dir: PathBuf,
}

impl Layout {
    fn new(dir: PathBuf) -> Self {
        std::fs::create_dir_all(dir.join("blobs/sha256")).expect("layout");
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("layout");
        Self { dir }
    }

    fn blob(&self, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        std::fs::write(self.dir.join("blobs/sha256").join(&digest[7..]), bytes).expect("blob");
        digest
    }

    /// An image manifest: (layer bytes, media type) bottom first. Returns (digest, size).
    fn image(&self, user: &str, architecture: &str, layers: &[(Vec<u8>, &str)]) -> (String, usize) {
        let config = serde_json::json!({
            "architecture": architecture, "os": "linux",
            "config": { "User": user },
            "rootfs": { "type": "layers", "diff_ids": layers.iter().map(|(b, _)| sha256(b)).collect::<Vec<_>>() },
        })
        .to_string();
        let config_digest = self.blob(config.as_bytes());
        let layers: Vec<serde_json::Value> = layers
            .iter()
            .map(|(bytes, media_type)| serde_json::json!({ "mediaType": media_type, "digest": self.blob(bytes), "size": bytes.len() }))
            .collect();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len() },
            "layers": layers,
        })
        .to_string();
        (self.blob(manifest.as_bytes()), manifest.len())
    }

    /// `index.json` naming one manifest (an image or an index) as `tag`.
    fn tag(&self, tag: &str, digest: &str, size: usize, media_type: &str) {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{ "mediaType": media_type, "digest": digest, "size": size,
                            "annotations": { "org.opencontainers.image.ref.name": tag } }],
        });
        std::fs::write(self.dir.join("index.json"), index.to_string()).expect("index");
    }
}

const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// The Debian web image: packages and a secret in a plain-tar layer (so that tampering with it
/// keeps it a readable tar), a deleted secret in a gzip layer.
fn debian_layers() -> Vec<(Vec<u8>, &'static str)> {
    vec![
        (
            tar_of(&[
                ("etc/os-release", b"ID=debian\nVERSION_ID=\"12\"\n"),
                ("var/lib/dpkg/status", DPKG_STATUS.as_bytes()),
                ("app/settings.py", AWS_SECRET),
            ]),
            TAR,
        ),
        (gzip(&tar_of(&[("app/config.env", HIDDEN_TOKEN)])), TAR_GZIP),
    ]
}

fn arm_layers() -> Vec<(Vec<u8>, &'static str)> {
    vec![(gzip(&tar_of(&[("etc/arm.env", HIDDEN_TOKEN)])), TAR_GZIP)]
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

struct Registry {
    child: Child,
    port: u16,
    storage: PathBuf,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `extra` is YAML under the top level (tls and auth sections).
    fn start(dir: &Path, name: &str, http_extra: &str, auth: &str) -> Self {
        let storage = dir.join(format!("{name}-storage"));
        for _ in 0..5 {
            let port = free_port();
            let config = format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n{http_extra}{auth}",
                storage.display()
            );
            let config_path = dir.join(format!("{name}-config.yml"));
            std::fs::write(&config_path, config).expect("config");
            let child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config_path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("docker-registry");
            let mut registry = Registry {
                child,
                port,
                storage: storage.clone(),
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if registry.child.try_wait().expect("wait").is_some() {
                    break; // the port was taken meanwhile: try another
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return registry;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            let _ = registry.child.kill();
        }
        panic!("docker-registry did not start");
    }

    /// The data file of a blob in the registry's storage.
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = &digest[7..];
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

fn skopeo_push(layout: &Layout, tag: &str, destination: &str, extra: &[&str]) {
    let output = Command::new("skopeo")
        .args([
            "--insecure-policy",
            "copy",
            "--all",
            "--quiet",
            "--dest-tls-verify=false",
        ])
        .args(extra)
        .arg(format!("oci:{}:{tag}", layout.dir.display()))
        .arg(format!("docker://{destination}"))
        .output()
        .expect("skopeo");
    assert!(
        output.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// (path after the image's name, rule, layer) of every finding.
fn seen(report: &palisade_scan::Report, prefix: &str) -> BTreeSet<(String, String, Option<usize>)> {
    report
        .findings
        .iter()
        .map(|f| {
            let path = f.path.strip_prefix(prefix).unwrap_or(&f.path).to_string();
            (path, f.rule.clone(), f.layer.as_ref().map(|l| l.index))
        })
        .collect()
}

fn settings(dir: &Path) -> Settings {
    let docker = dir.join("docker-empty");
    std::fs::create_dir_all(&docker).expect("docker dir");
    Settings {
        docker_config: Some(docker),
        ..Settings::default()
    }
}

fn registry_error(result: Result<RegistryImage, RegistryError>) -> RegistryError {
    match result {
        Ok(_) => panic!("opened"),
        Err(error) => error,
    }
}

#[test]
fn plain_http_registry_by_tag_and_digest_finds_what_the_tarball_scan_finds() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = Registry::start(dir.path(), "plain", "", "");
    let layout = Layout::new(dir.path().join("web"));
    let (digest, size) = layout.image("", "amd64", &debian_layers());
    layout.tag("1.0", &digest, size, MANIFEST);
    skopeo_push(&layout, "1.0", &format!("{}/shop/web:1.0", registry.host()), &[]);

    let insecure = Settings {
        insecure: vec![registry.host()],
        ..settings(dir.path())
    };
    let options = options(dir.path());
    let reference = format!("{}/shop/web:1.0", registry.host());
    let mut image = RegistryImage::open(&reference, &insecure).expect("open");
    // skopeo compresses plain-tar layers on the way in: the registry's manifest is its own.
    let pushed = image.manifest_digest.clone();
    let report = scan_image(&reference, &mut image, &options).expect("scan");
    let expected: BTreeSet<(String, String, Option<usize>)> = [
        ("", "IMG001", None),
        ("!/app/settings.py", "SEC002", Some(0)),
        ("!/app/config.env", "SEC003", Some(1)),
        ("!/var/lib/dpkg/status", "DEBIAN-CVE-2023-38545", Some(0)),
    ]
    .into_iter()
    .map(|(p, r, l)| (p.to_string(), r.to_string(), l))
    .collect();
    assert_eq!(seen(&report, &reference), expected);
    let curl = report
        .findings
        .iter()
        .find(|f| f.rule.starts_with("DEBIAN-"))
        .expect("curl");
    let layer_digest = curl.layer.as_ref().map(|l| l.digest.clone()).unwrap_or_default();
    assert!(
        layer_digest.starts_with("sha256:") && layer_digest.len() == 71,
        "a package names its layer by digest: {layer_digest}"
    );

    // By digest: the same image, the same findings.
    let by_digest = format!("{}/shop/web@{pushed}", registry.host());
    let mut image = RegistryImage::open(&by_digest, &insecure).expect("open by digest");
    let report = scan_image(&by_digest, &mut image, &options).expect("scan by digest");
    assert_eq!(seen(&report, &by_digest), expected);

    // The same layout as an OCI tarball on disk: the same findings.
    let tarball = dir.path().join("web.tar");
    let mut builder = tar::Builder::new(std::fs::File::create(&tarball).expect("tarball"));
    builder.append_dir_all(".", &layout.dir).expect("append");
    builder.finish().expect("finish");
    let report = scan(&tarball, &options).expect("scan tarball");
    assert_eq!(seen(&report, "web.tar"), expected);

    // Plain HTTP only for the registries named: unnamed, it is a TLS failure with the way out.
    let error = registry_error(RegistryImage::open(&reference, &settings(dir.path())));
    assert!(matches!(error, RegistryError::Tls { .. }), "{error}");
    assert!(error.to_string().contains("--insecure 127.0.0.1:"), "{error}");
    // An unknown tag and an unknown repository are "not found".
    let missing = format!("{}/shop/web:2.0", registry.host());
    let error = registry_error(RegistryImage::open(&missing, &insecure));
    assert!(matches!(error, RegistryError::NotFound { .. }), "{error}");
    let missing = format!("{}/nobody/here:1", registry.host());
    let error = registry_error(RegistryImage::open(&missing, &insecure));
    assert!(matches!(error, RegistryError::NotFound { .. }), "{error}");
    // Nobody listening.
    let closed = format!("127.0.0.1:{}/shop/web:1.0", free_port());
    let error = registry_error(RegistryImage::open(
        &closed,
        &Settings {
            insecure: vec![closed.split('/').next().unwrap().to_string()],
            ..settings(dir.path())
        },
    ));
    assert!(matches!(error, RegistryError::Unreachable { .. }), "{error}");
}

#[test]
fn multi_arch_index_scans_the_platform_asked_for() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = Registry::start(dir.path(), "multi", "", "");
    let layout = Layout::new(dir.path().join("multi"));
    let (amd64, amd64_size) = layout.image("", "amd64", &debian_layers());
    let (arm64, arm64_size) = layout.image("10001", "arm64", &arm_layers());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [
            { "mediaType": MANIFEST, "digest": amd64, "size": amd64_size, "platform": { "os": "linux", "architecture": "amd64" } },
            { "mediaType": MANIFEST, "digest": arm64, "size": arm64_size, "platform": { "os": "linux", "architecture": "arm64", "variant": "v8" } },
        ],
    })
    .to_string();
    let index_digest = layout.blob(index.as_bytes());
    layout.tag("2.0", &index_digest, index.len(), INDEX);
    let reference = format!("{}/shop/multi:2.0", registry.host());
    skopeo_push(&layout, "2.0", &reference, &[]);
    let base = Settings {
        insecure: vec![registry.host()],
        ..settings(dir.path())
    };
    let options = options(dir.path());

    let mut image = RegistryImage::open(&reference, &base).expect("default platform");
    let report = scan_image(&reference, &mut image, &options).expect("scan");
    assert!(
        seen(&report, &reference).contains(&("!/app/settings.py".into(), "SEC002".into(), Some(0))),
        "linux/amd64 by default"
    );

    let arm = Settings {
        platform: Some("linux/arm64".into()),
        ..base.clone()
    };
    let mut image = RegistryImage::open(&reference, &arm).expect("arm64");
    let report = scan_image(&reference, &mut image, &options).expect("scan arm64");
    let expected: BTreeSet<(String, String, Option<usize>)> =
        [("!/etc/arm.env".to_string(), "SEC003".to_string(), Some(0))].into();
    assert_eq!(seen(&report, &reference), expected, "arm64's user is 10001: no IMG001");

    let s390x = Settings {
        platform: Some("linux/s390x".into()),
        ..base.clone()
    };
    let error = registry_error(RegistryImage::open(&reference, &s390x));
    assert!(
        matches!(&error, RegistryError::NoPlatform { available, .. } if available == "linux/amd64, linux/arm64/v8"),
        "{error}"
    );
    let bad = Settings {
        platform: Some("linux".into()),
        ..base
    };
    assert!(matches!(
        registry_error(RegistryImage::open(&reference, &bad)),
        RegistryError::Platform(_)
    ));
}

#[test]
fn tampered_blobs_are_refused() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = Registry::start(dir.path(), "tamper", "", "");
    let layout = Layout::new(dir.path().join("web"));
    let layers = debian_layers();
    let (digest, size) = layout.image("", "amd64", &layers);
    layout.tag("1.0", &digest, size, MANIFEST);
    let reference = format!("{}/shop/web:1.0", registry.host());
    skopeo_push(&layout, "1.0", &reference, &[]);
    let insecure = Settings {
        insecure: vec![registry.host()],
        ..settings(dir.path())
    };
    let options = options(dir.path());

    // The registry serves other content under a layer's digest: a well-formed layer of its own.
    let mut image = RegistryImage::open(&reference, &insecure).expect("open");
    let first_layer = image.layers().expect("layers")[0].clone();
    let layer_file = registry.blob_file(&first_layer);
    let planted = gzip(&tar_of(&[("etc/os-release", b"ID=debian\nVERSION_ID=\"12\"\n")]));
    std::fs::write(&layer_file, &planted).expect("tamper");
    let mut image = RegistryImage::open(&reference, &insecure).expect("the manifest is intact");
    let error = match scan_image(&reference, &mut image, &options) {
        Ok(_) => panic!("a tampered layer was scanned"),
        Err(error) => error,
    };
    assert!(
        matches!(
            &error,
            ScanError::Image(ImageError::Registry(RegistryError::Digest { .. }))
        ),
        "{error}"
    );
    assert!(error.to_string().contains(&first_layer), "names the blob: {error}");
}

/// A token service as registries delegate to: basic credentials in, an ES256 JWT (x5c header,
/// the registry trusts the certificate) out. Counts the tokens it issued.
struct TokenService {
    port: u16,
    issued: Arc<AtomicUsize>,
}

impl TokenService {
    fn start(key_pkcs8: Vec<u8>, certificate_der: Vec<u8>, user: &'static str, password: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let issued = Arc::new(AtomicUsize::new(0));
        let counter = issued.clone();
        std::thread::spawn(move || {
            let rng = ring::rand::SystemRandom::new();
            let key = ring::signature::EcdsaKeyPair::from_pkcs8(
                &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &key_pkcs8,
                &rng,
            )
            .expect("key");
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let expected = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            );
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let mut authorization = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':') {
                        if name.eq_ignore_ascii_case("authorization") {
                            authorization = value.trim().to_string();
                        }
                    }
                }
                let query = request_line.split_whitespace().nth(1).unwrap_or("").to_string();
                let scopes: Vec<String> = query
                    .split(['?', '&'])
                    .filter_map(|p| p.strip_prefix("scope="))
                    .map(|s| s.replace("%3A", ":").replace("%2F", "/").replace("%2C", ","))
                    .collect();
                let (status, body) = if authorization != expected {
                    ("401 Unauthorized", r#"{"details":"bad credentials"}"#.to_string())
                } else {
                    let access: Vec<serde_json::Value> = scopes
                        .iter()
                        .filter_map(|scope| {
                            let mut parts = scope.splitn(3, ':');
                            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                            Some(serde_json::json!({ "type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>() }))
                        })
                        .collect();
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .expect("time")
                        .as_secs();
                    let header = serde_json::json!({ "alg": "ES256", "typ": "JWT",
                        "x5c": [base64::engine::general_purpose::STANDARD.encode(&certificate_der)] });
                    let claims = serde_json::json!({ "iss": "palisade-test-issuer", "sub": user, "aud": "palisade-test",
                        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("t{now}{}", counter.load(Ordering::SeqCst)), "access": access });
                    let signing_input =
                        format!("{}.{}", b64.encode(header.to_string()), b64.encode(claims.to_string()));
                    let signature = key.sign(&rng, signing_input.as_bytes()).expect("sign");
                    let token = format!("{signing_input}.{}", b64.encode(signature.as_ref()));
                    counter.fetch_add(1, Ordering::SeqCst);
                    (
                        "200 OK",
                        serde_json::json!({ "token": token, "access_token": token, "expires_in": 300 }).to_string(),
                    )
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.flush();
                let mut rest = [0u8; 1];
                let _ = stream.set_read_timeout(Some(Duration::from_millis(1)));
                let _ = stream.read(&mut rest);
            }
        });
        Self { port, issued }
    }
}

fn docker_config(dir: &Path, registry: &str, user: &str, password: &str) -> PathBuf {
    let docker = dir.join(format!(
        "docker-{}",
        &sha256(format!("{registry}{user}{password}").as_bytes())[7..19]
    ));
    std::fs::create_dir_all(&docker).expect("docker dir");
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    std::fs::write(
        docker.join("config.json"),
        serde_json::json!({ "auths": { registry: { "auth": auth } } }).to_string(),
    )
    .expect("config.json");
    docker
}

#[test]
fn tls_with_basic_auth_and_bearer_tokens() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // A CA of the test's and a server certificate for 127.0.0.1.
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "palisade test registry CA");
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let server_key = rcgen::KeyPair::generate().expect("key");
    let server_params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server = server_params.signed_by(&server_key, &issuer).expect("server cert");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("ca");
    std::fs::write(dir.path().join("server.pem"), server.pem()).expect("cert");
    std::fs::write(dir.path().join("server.key"), server_key.serialize_pem()).expect("key");
    let tls = format!(
        "  tls:\n    certificate: {}\n    key: {}\n",
        dir.path().join("server.pem").display(),
        dir.path().join("server.key").display()
    );

    // htpasswd (bcrypt, as distribution reads it).
    let hash = bcrypt::hash_with_result("s3cret-pw", 4)
        .expect("bcrypt")
        .format_for_version(bcrypt::Version::TwoA);
    std::fs::write(dir.path().join("htpasswd"), format!("scanner:{hash}\n")).expect("htpasswd");
    let htpasswd = format!(
        "auth:\n  htpasswd:\n    realm: palisade-test\n    path: {}\n",
        dir.path().join("htpasswd").display()
    );
    let basic = Registry::start(dir.path(), "basic", &tls, &htpasswd);
    let layout = Layout::new(dir.path().join("web"));
    let (digest, size) = layout.image("", "amd64", &debian_layers());
    layout.tag("1.0", &digest, size, MANIFEST);
    let reference = format!("{}/private/web:1.0", basic.host());
    skopeo_push(&layout, "1.0", &reference, &["--dest-creds", "scanner:s3cret-pw"]);
    let options = options(dir.path());

    let good = Settings {
        ca_files: vec![ca_file.clone()],
        docker_config: Some(docker_config(dir.path(), &basic.host(), "scanner", "s3cret-pw")),
        ..Settings::default()
    };
    let mut image = RegistryImage::open(&reference, &good).expect("basic auth over TLS");
    let report = scan_image(&reference, &mut image, &options).expect("scan");
    assert!(report.findings.iter().any(|f| f.rule == "SEC002"));
    // No credentials, wrong credentials: not authorized, naming where credentials are read.
    let anonymous = Settings {
        ca_files: vec![ca_file.clone()],
        ..settings(dir.path())
    };
    let error = registry_error(RegistryImage::open(&reference, &anonymous));
    assert!(matches!(error, RegistryError::Unauthorized { .. }), "{error}");
    assert!(error.to_string().contains("docker login"), "{error}");
    let wrong = Settings {
        ca_files: vec![ca_file.clone()],
        docker_config: Some(docker_config(dir.path(), &basic.host(), "scanner", "guess")),
        ..Settings::default()
    };
    let error = registry_error(RegistryImage::open(&reference, &wrong));
    assert!(matches!(error, RegistryError::Unauthorized { .. }), "{error}");
    assert!(!error.to_string().contains("guess"), "no secret in an error: {error}");
    // Without the CA: a TLS failure that says how to trust it.
    let untrusted = Settings {
        ca_files: Vec::new(),
        ..good.clone()
    };
    let error = registry_error(RegistryImage::open(&reference, &untrusted));
    assert!(matches!(error, RegistryError::Tls { .. }), "{error}");
    assert!(error.to_string().contains("--registry-ca"), "{error}");
    drop(basic);

    // Bearer tokens: the registry sends clients to the token service with a challenge.
    let token_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut token_params = rcgen::CertificateParams::new(vec!["palisade-token".to_string()]).expect("params");
    token_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "palisade-token");
    let token_certificate = token_params.self_signed(&token_key).expect("token cert");
    std::fs::write(dir.path().join("token.pem"), token_certificate.pem()).expect("token cert");
    let tokens = TokenService::start(
        token_key.serialize_der(),
        token_certificate.der().to_vec(),
        "scanner",
        "t0ken-pw",
    );
    let token_auth = format!(
        "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: palisade-test\n    issuer: palisade-test-issuer\n    rootcertbundle: {}\n",
        tokens.port,
        dir.path().join("token.pem").display()
    );
    let bearer = Registry::start(dir.path(), "bearer", &tls, &token_auth);
    let reference = format!("{}/private/web:1.0", bearer.host());
    skopeo_push(&layout, "1.0", &reference, &["--dest-creds", "scanner:t0ken-pw"]);
    let before = tokens.issued.load(Ordering::SeqCst);
    let good = Settings {
        ca_files: vec![ca_file.clone()],
        docker_config: Some(docker_config(dir.path(), &bearer.host(), "scanner", "t0ken-pw")),
        ..Settings::default()
    };
    let mut image = RegistryImage::open(&reference, &good).expect("bearer token");
    let report = scan_image(&reference, &mut image, &options).expect("scan");
    assert!(report.findings.iter().any(|f| f.rule == "SEC002"));
    assert!(tokens.issued.load(Ordering::SeqCst) > before, "a token was asked for");
    let wrong = Settings {
        ca_files: vec![ca_file],
        docker_config: Some(docker_config(dir.path(), &bearer.host(), "scanner", "nope")),
        ..Settings::default()
    };
    let error = registry_error(RegistryImage::open(&reference, &wrong));
    assert!(matches!(error, RegistryError::Unauthorized { .. }), "{error}");
    assert!(!error.to_string().contains("nope"), "no secret in an error: {error}");
}
