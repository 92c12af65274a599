//! The injector as a mutating admission webhook: AdmissionReview v1 in, a JSONPatch out, computed
//! by [`crate::inject`] exactly as `palisade inject` does it.
//!
//! The webhook never refuses a pod: it only adds to it. A pod it cannot inject is admitted
//! unchanged with a warning (kubectl shows it); a review it cannot read is answered 400, and what
//! the API server then does is the `failurePolicy` of the MutatingWebhookConfiguration (see
//! docs/kubernetes.md: `Fail` for namespaces that must never run without the sidecar).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::inject::{inject_object, InjectOptions, Outcome};
use palisade_core::problem::{self, Problem};

/// The API server sends at most 3 MiB of object; the review around it is a little more.
const MAX_REVIEW_BYTES: usize = 4 * 1024 * 1024;
const CERTIFICATE_CHECK: Duration = Duration::from_secs(10);

/// Answers one AdmissionReview (the body of the API server's POST): the review to send back, or
/// an error for a review that cannot be read (answered 400).
pub fn review(body: &[u8], options: &InjectOptions) -> Result<Value, String> {
    let review: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    if review.get("apiVersion").and_then(Value::as_str) != Some("admission.k8s.io/v1")
        || review.get("kind").and_then(Value::as_str) != Some("AdmissionReview")
    {
        return Err("expected an admission.k8s.io/v1 AdmissionReview".into());
    }
    let request = review.get("request").ok_or("the review has no request")?;
    let uid = request
        .get("uid")
        .and_then(Value::as_str)
        .ok_or("the request has no uid")?;
    let mut response = json!({ "uid": uid, "allowed": true });
    let kind = request
        .pointer("/kind/kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let object = request.get("object").filter(|o| o.is_object());
    let (Some(object), "Pod") = (object, kind) else {
        return Ok(answer(response));
    };
    let mut options = options.clone();
    options.namespace = request.get("namespace").and_then(Value::as_str).map(str::to_string);
    let mut injected = object.clone();
    let mut reports = Vec::new();
    inject_object(&mut injected, &options, &mut reports);
    match reports.first().map(|r| &r.outcome) {
        Some(Outcome::Injected) => {
            let patch = json_patch(object, &injected);
            let text = serde_json::to_vec(&patch).map_err(|e| e.to_string())?;
            response["patchType"] = json!("JSONPatch");
            response["patch"] = json!(STANDARD.encode(text));
        }
        Some(Outcome::Skipped(reason)) => {
            response["warnings"] = json!([format!("palisade: sidecar not injected: {reason}")]);
        }
        _ => {}
    }
    Ok(answer(response))
}

fn answer(response: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    })
}

/// RFC 6902 operations that turn `from` into `to`: objects are compared key by key, anything else
/// that differs is replaced whole.
pub fn json_patch(from: &Value, to: &Value) -> Vec<Value> {
    let mut operations = Vec::new();
    diff(from, to, &mut String::new(), &mut operations);
    operations
}

fn diff(from: &Value, to: &Value, path: &mut String, operations: &mut Vec<Value>) {
    match (from, to) {
        (Value::Object(old), Value::Object(new)) => {
            for (key, value) in old {
                if !new.contains_key(key) {
                    operations.push(json!({"op": "remove", "path": format!("{path}/{}", escape(key))}));
                } else if new[key] != *value {
                    let length = path.len();
                    path.push('/');
                    path.push_str(&escape(key));
                    diff(value, &new[key], path, operations);
                    path.truncate(length);
                }
            }
            for (key, value) in new {
                if !old.contains_key(key) {
                    operations.push(json!({"op": "add", "path": format!("{path}/{}", escape(key)), "value": value}));
                }
            }
        }
        _ if from != to => operations.push(json!({"op": "replace", "path": path.clone(), "value": to})),
        _ => {}
    }
}

/// Applies the operations [`json_patch`] emits (`add`, `replace`, `remove`), as the API server
/// does with the webhook's answer: for checking a patch without a cluster.
pub fn apply_json_patch(document: &mut Value, patch: &[Value]) -> Result<(), String> {
    for operation in patch {
        let path = operation
            .get("path")
            .and_then(Value::as_str)
            .ok_or("an operation without a path")?;
        let (parent, key) = path
            .rsplit_once('/')
            .ok_or_else(|| format!("{path}: not a JSON pointer"))?;
        let key = key.replace("~1", "/").replace("~0", "~");
        let target = if parent.is_empty() {
            &mut *document
        } else {
            document
                .pointer_mut(parent)
                .ok_or_else(|| format!("{parent}: no such place"))?
        };
        let value = || {
            operation
                .get("value")
                .cloned()
                .ok_or_else(|| format!("{path}: no value"))
        };
        match (operation.get("op").and_then(Value::as_str), target) {
            (Some("add" | "replace"), Value::Object(map)) => {
                map.insert(key, value()?);
            }
            (Some(op @ ("add" | "replace")), Value::Array(items)) => {
                let index: usize = key.parse().map_err(|_| format!("{path}: not an index"))?;
                if op == "add" && index <= items.len() {
                    items.insert(index, value()?);
                } else if op == "replace" && index < items.len() {
                    items[index] = value()?;
                } else {
                    return Err(format!("{path}: out of range"));
                }
            }
            (Some("remove"), Value::Object(map)) => {
                map.remove(&key).ok_or_else(|| format!("{path}: nothing to remove"))?;
            }
            (op, _) => return Err(format!("{path}: cannot apply {op:?}")),
        }
    }
    Ok(())
}

/// RFC 6901: `~` and `/` in a key.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

pub struct WebhookOptions {
    pub listen: SocketAddr,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// Re-read for every review, so that a rotated trust bundle reaches new pods.
    pub trust_bundle: PathBuf,
    pub inject: InjectOptions,
    /// A connection that has not sent a whole request head by then is closed.
    pub header_read_timeout: Duration,
}

pub struct Webhook {
    pub address: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Webhook {
    pub async fn start(options: WebhookOptions) -> Result<Webhook, String> {
        let certificate = Arc::new(CertificateFiles::load(&options.tls_cert, &options.tls_key)?);
        std::fs::read_to_string(&options.trust_bundle)
            .map_err(|e| format!("{}: {e}", options.trust_bundle.display()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(palisade_tls::provider()))
            .with_protocol_versions(palisade_tls::PROTOCOL_VERSIONS)
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(certificate.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind(options.listen)
            .await
            .map_err(|e| format!("{}: {e}", options.listen))?;
        let address = listener.local_addr().map_err(|e| e.to_string())?;
        let (stop, mut stopped) = watch::channel(false);
        let options = Arc::new(options);
        let task = tokio::spawn(async move {
            let mut check = tokio::time::interval(CERTIFICATE_CHECK);
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = check.tick() => {
                        certificate.reload_if_changed();
                        continue;
                    }
                    _ = stopped.wait_for(|s| *s) => break,
                };
                let Ok((stream, _)) = accepted else { continue };
                let (acceptor, options) = (acceptor.clone(), options.clone());
                tokio::spawn(async move {
                    let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
                    else {
                        return;
                    };
                    let header_read_timeout = options.header_read_timeout;
                    let service = hyper::service::service_fn(move |request| {
                        let options = options.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(&options, request).await) }
                    });
                    // A connection that stops sending mid-request is closed, not held open.
                    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    builder
                        .http1()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(header_read_timeout);
                    let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Ok(Webhook { address, stop, task })
    }

    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn handle(options: &WebhookOptions, request: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/healthz") => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        (&Method::POST, "/inject") => {
            let body = match Limited::new(request.into_body(), MAX_REVIEW_BYTES).collect().await {
                Ok(body) => body.to_bytes(),
                Err(_) => return problem(StatusCode::PAYLOAD_TOO_LARGE, "the review is too large"),
            };
            let bundle = match std::fs::read_to_string(&options.trust_bundle) {
                Ok(bundle) => bundle,
                Err(error) => {
                    tracing::error!(%error, "webhook: cannot read the trust bundle");
                    return problem(StatusCode::SERVICE_UNAVAILABLE, "the trust bundle is unreadable");
                }
            };
            let mut inject = options.inject.clone();
            inject.trust_bundle = bundle;
            match review(&body, &inject) {
                Ok(answer) => reply(
                    StatusCode::OK,
                    "application/json",
                    serde_json::to_vec(&answer).unwrap_or_default(),
                ),
                Err(message) => {
                    tracing::warn!(%message, "webhook: unreadable AdmissionReview");
                    problem(StatusCode::BAD_REQUEST, &message)
                }
            }
        }
        _ => problem(StatusCode::NOT_FOUND, "not found"),
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    response
}

fn problem(status: StatusCode, detail: &str) -> Response<Full<Bytes>> {
    let body = Problem::new(
        status,
        "invalid-admission-review",
        status.canonical_reason().unwrap_or("Error"),
    )
    .with_detail(detail.chars().take(300).collect::<String>());
    reply(status, problem::CONTENT_TYPE, body.to_json())
}

/// The webhook's certificate, taken again when its files change (cert-manager renews them).
#[derive(Debug)]
struct CertificateFiles {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<CertifiedKey>,
    loaded_from: ArcSwap<Option<SystemTime>>,
}

impl CertificateFiles {
    fn load(cert: &Path, key: &Path) -> Result<CertificateFiles, String> {
        let certified = palisade_tls::certified_key(cert, key)?;
        Ok(CertificateFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: ArcSwap::from_pointee(certified),
            loaded_from: ArcSwap::from_pointee(modified(cert)),
        })
    }

    fn reload_if_changed(&self) {
        let now = modified(&self.cert);
        if now == **self.loaded_from.load() {
            return;
        }
        match palisade_tls::certified_key(&self.cert, &self.key) {
            Ok(certified) => {
                self.current.store(Arc::new(certified));
                self.loaded_from.store(Arc::new(now));
                tracing::info!("webhook: certificate reloaded");
            }
            Err(error) => tracing::warn!(%error, "webhook: the new certificate does not load; keeping the current one"),
        }
    }
}

impl ResolvesServerCert for CertificateFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
