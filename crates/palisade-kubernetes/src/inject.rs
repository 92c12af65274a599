//! `palisade inject`: adds the Palisade sidecar to workloads. The same function serves the CLI
//! (files, stdin) and the admission webhook (one Pod at a time), so both produce the same pod.
//!
//! What a pod gets:
//! - the sidecar as a native sidecar (an init container with `restartPolicy: Always`, so it is
//!   ready before the app starts and does not keep a Job from completing), or as a plain container
//!   for clusters before 1.29; non-root, read-only root, no privilege escalation, every capability
//!   dropped, resources, and probes on its admin port;
//! - a projected ServiceAccount token for the identity service's audience, a memory `emptyDir`
//!   for the key and certificate, and a downward-API volume with the CA's trust bundle (and the
//!   sidecar config, when it comes from an annotation);
//! - the app's first declared TCP port handed to the sidecar (same port name, the sidecar's
//!   inbound port), with the sidecar forwarding to the app on `127.0.0.1:PORT`.
//!
//! Nothing else changes: existing containers, init containers and volumes stay as they were and
//! fields this code does not know are kept. Injecting twice changes nothing.

use serde_json::{json, Map, Value};

/// Annotations read (and written) on the workload or its pod template.
pub mod annotations {
    /// `"false"` (or `"disabled"`): leave this workload alone.
    pub const INJECT: &str = "palisade.dev/inject";
    /// A ConfigMap in the pod's namespace with the sidecar config under `sidecar.yaml`.
    pub const CONFIG_MAP: &str = "palisade.dev/sidecar-config-map";
    /// The sidecar config itself (YAML). Generated from the app's port when neither is given.
    pub const CONFIG: &str = "palisade.dev/sidecar-config";
    /// Who may call the app when the config is generated: SPIFFE ID patterns, comma-separated.
    /// Default: the pod's own namespace.
    pub const ALLOW: &str = "palisade.dev/allow";
    /// Which container is the app (default: the first).
    pub const APP_CONTAINER: &str = "palisade.dev/app-container";
    /// The CA's trust bundle (PEM), read by the sidecar through the downward API.
    pub const TRUST_BUNDLE: &str = "palisade.dev/trust-bundle";
    /// Written on injection: the app port the sidecar forwards to.
    pub const APP_PORT: &str = "palisade.dev/app-port";
    /// Written on injection: the injector's version.
    pub const INJECTED: &str = "palisade.dev/injected";
}

/// The pod label injection writes with the pod's ServiceAccount: runtime sensors (Falco's
/// `k8s.pod.label[...]`) report it, so an alert names the workload identity to quarantine.
pub const SERVICE_ACCOUNT_LABEL: &str = "palisade.dev/service-account";

pub const SIDECAR_NAME: &str = "palisade-sidecar";
const IDENTITY_VOLUME: &str = "palisade-identity";
const TOKEN_VOLUME: &str = "palisade-token";
const POD_INFO_VOLUME: &str = "palisade-pod-info";
const CONFIG_VOLUME: &str = "palisade-config";
const TRUST_VOLUME: &str = "palisade-trust";
const TRUST_DIR: &str = "/etc/palisade/trust";
const IDENTITY_DIR: &str = "/var/run/palisade/identity";
const TOKEN_DIR: &str = "/var/run/secrets/tokens";
const TOKEN_FILE: &str = "palisade-ca";
const POD_INFO_DIR: &str = "/etc/palisade/pod";
const CONFIG_DIR: &str = "/etc/palisade/sidecar";
/// The sidecar's user and group (distroless `nonroot`).
const SIDECAR_USER: u32 = 65532;

/// The kinds whose pod template this injects, and where the template is.
const WORKLOADS: &[(&str, &[&str])] = &[
    ("Pod", &[]),
    ("Deployment", &["spec", "template"]),
    ("StatefulSet", &["spec", "template"]),
    ("DaemonSet", &["spec", "template"]),
    ("ReplicaSet", &["spec", "template"]),
    ("ReplicationController", &["spec", "template"]),
    ("Job", &["spec", "template"]),
    ("CronJob", &["spec", "jobTemplate", "spec", "template"]),
];

#[derive(Debug, Clone)]
pub struct InjectOptions {
    pub image: String,
    /// `https://host:port` of the identity service.
    pub ca_url: String,
    pub trust_domain: String,
    /// The CA's trust bundle (PEM): how the sidecar recognizes the identity service. Written into
    /// the pod (an annotation the downward API reads) unless `trust_bundle_config_map` is set.
    pub trust_bundle: String,
    /// A ConfigMap in the pod's namespace with the bundle under `bundle.pem` (trust-manager
    /// distributes one to every namespace; Palisade's own namespace has `palisade-trust-bundle`).
    pub trust_bundle_config_map: Option<String>,
    /// The audience of the projected token (the identity service's `kubernetes.audience`).
    pub audience: String,
    pub token_expiration_seconds: u32,
    /// For objects without `metadata.namespace` (the webhook knows it from the request).
    pub namespace: Option<String>,
    pub inbound_port: u16,
    pub admin_port: u16,
    /// An init container with `restartPolicy: Always` (Kubernetes 1.29+); else a plain container.
    pub native_sidecar: bool,
}

impl InjectOptions {
    pub fn new(ca_url: &str, trust_domain: &str, trust_bundle: &str) -> InjectOptions {
        InjectOptions {
            image: format!("ghcr.io/palisade-dev/palisade:{}", env!("CARGO_PKG_VERSION")),
            ca_url: ca_url.to_string(),
            trust_domain: trust_domain.to_string(),
            trust_bundle: trust_bundle.to_string(),
            trust_bundle_config_map: None,
            audience: crate::config::DEFAULT_AUDIENCE.to_string(),
            token_expiration_seconds: 3600,
            namespace: None,
            inbound_port: 15006,
            admin_port: 15021,
            native_sidecar: true,
        }
    }
}

/// What happened to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Injected,
    AlreadyInjected,
    OptedOut,
    /// Not a kind with a pod template (a Service, a ConfigMap…): passed through.
    NotAWorkload,
    /// A workload that cannot be injected as it is, and why (it is passed through unchanged).
    Skipped(String),
}

/// One object's outcome, named for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub kind: String,
    pub name: String,
    pub outcome: Outcome,
}

#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("{0}")]
    Parse(String),
    #[error("{0}")]
    Invalid(String),
}

/// Injects every workload in `object` (a `List`'s items too).
pub fn inject_object(object: &mut Value, options: &InjectOptions, reports: &mut Vec<Report>) {
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if kind == "List" || kind.ends_with("List") {
        if let Some(items) = object.get_mut("items").and_then(Value::as_array_mut) {
            for item in items {
                inject_object(item, options, reports);
            }
        }
        return;
    }
    let name = object
        .pointer("/metadata/name")
        .or_else(|| object.pointer("/metadata/generateName"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let outcome = inject_workload(object, &kind, options);
    reports.push(Report { kind, name, outcome });
}

fn inject_workload(object: &mut Value, kind: &str, options: &InjectOptions) -> Outcome {
    let Some((_, template_path)) = WORKLOADS.iter().find(|(k, _)| *k == kind) else {
        return Outcome::NotAWorkload;
    };
    if opted_out(object.pointer("/metadata/annotations")) {
        return Outcome::OptedOut;
    }
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| options.namespace.clone());
    // Annotations on the workload apply to its pods unless the template says otherwise.
    let workload_annotations = object
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let Some(template) = at_mut(object, template_path) else {
        return Outcome::Skipped("no pod template".into());
    };
    if !template.is_object() {
        return Outcome::Skipped("the pod template is not an object".into());
    }
    if opted_out(template.pointer("/metadata/annotations")) {
        return Outcome::OptedOut;
    }
    let Some(spec) = template.get("spec").filter(|s| s.is_object()) else {
        return Outcome::Skipped("the pod template has no spec".into());
    };
    if has_sidecar(spec) {
        return Outcome::AlreadyInjected;
    }
    let mut pod_annotations = workload_annotations
        .into_iter()
        .filter(|(key, _)| key.starts_with("palisade.dev/"))
        .collect::<Map<String, Value>>();
    if let Some(own) = template.pointer("/metadata/annotations").and_then(Value::as_object) {
        pod_annotations.extend(own.clone());
    }
    let plan = match plan(spec, &pod_annotations, namespace.as_deref(), options) {
        Ok(plan) => plan,
        Err(reason) => return Outcome::Skipped(reason),
    };
    apply(template, plan, options);
    Outcome::Injected
}

fn opted_out(annotations: Option<&Value>) -> bool {
    annotations
        .and_then(|a| a.get(annotations::INJECT))
        .and_then(Value::as_str)
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "false" | "disabled" | "no"))
}

fn at_mut<'a>(value: &'a mut Value, path: &[&str]) -> Option<&'a mut Value> {
    path.iter().try_fold(value, |node, key| node.get_mut(*key))
}

fn has_sidecar(spec: &Value) -> bool {
    ["containers", "initContainers"].iter().any(|list| {
        spec.get(*list).and_then(Value::as_array).is_some_and(|items| {
            items
                .iter()
                .any(|c| c.get("name").and_then(Value::as_str) == Some(SIDECAR_NAME))
        })
    })
}

/// Where the sidecar's config comes from.
enum ConfigSource {
    ConfigMap(String),
    /// The pod annotation (given by the user, or generated into it).
    Annotation,
}

/// What injection will do to one pod template, decided before anything is changed.
struct Plan {
    config: ConfigSource,
    /// The app container's index and the port entry handed to the sidecar.
    takeover: Option<(usize, usize, Value)>,
    annotations: Map<String, Value>,
}

fn plan(
    spec: &Value,
    annotations: &Map<String, Value>,
    namespace: Option<&str>,
    options: &InjectOptions,
) -> Result<Plan, String> {
    let containers = spec
        .get("containers")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
        .ok_or("the pod has no containers")?;
    let text = |key: &str| annotations.get(key).and_then(Value::as_str).map(str::to_string);
    let app_index = match text(annotations::APP_CONTAINER) {
        Some(name) => containers
            .iter()
            .position(|c| c.get("name").and_then(Value::as_str) == Some(name.as_str()))
            .ok_or_else(|| format!("{} names no container {name:?}", annotations::APP_CONTAINER))?,
        None => 0,
    };
    let ports = containers[app_index].get("ports").and_then(Value::as_array);
    let port_index = ports.and_then(|ports| {
        ports.iter().position(|p| {
            p.get("protocol").and_then(Value::as_str).unwrap_or("TCP") == "TCP" && p.get("containerPort").is_some()
        })
    });
    let takeover = port_index.and_then(|i| ports.map(|p| (app_index, i, p[i].clone())));
    let app_port = takeover
        .as_ref()
        .and_then(|(_, _, port)| port.get("containerPort").and_then(Value::as_u64))
        .and_then(|p| u16::try_from(p).ok());
    let mut written = Map::new();
    // A config the workload brings says itself where the sidecar listens: its ports stay as they
    // are. Only a generated config takes over the app's port.
    let mut takeover = takeover;
    let config = if let Some(name) = text(annotations::CONFIG_MAP) {
        takeover = None;
        ConfigSource::ConfigMap(name)
    } else if let Some(config) = text(annotations::CONFIG) {
        takeover = None;
        // Given on the workload, it must be on the pod for the downward API to read it.
        written.insert(annotations::CONFIG.into(), Value::String(config));
        ConfigSource::Annotation
    } else {
        let port = app_port.ok_or(
            "no TCP port declared and no sidecar config (annotate palisade.dev/sidecar-config-map or palisade.dev/sidecar-config)",
        )?;
        if port == options.inbound_port || port == options.admin_port {
            return Err(format!("the app's port {port} is one the sidecar needs"));
        }
        let allow =
            match text(annotations::ALLOW) {
                Some(list) => list
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect(),
                // The default callers are the pod's namespace: guessing it would admit the wrong ones.
                None => match namespace {
                    Some(namespace) => vec![format!("spiffe://{}/ns/{namespace}/*", options.trust_domain)],
                    None => return Err(
                        "no namespace to admit callers from: set metadata.namespace, --namespace or palisade.dev/allow"
                            .into(),
                    ),
                },
            };
        let generated = default_config(options, port, &allow);
        written.insert(annotations::CONFIG.into(), Value::String(generated));
        ConfigSource::Annotation
    };
    if let Some((_, _, port)) = &takeover {
        if let Some(number) = port.get("containerPort") {
            written.insert(annotations::APP_PORT.into(), Value::String(number.to_string()));
        }
    }
    if options.trust_bundle_config_map.is_none() {
        written.insert(
            annotations::TRUST_BUNDLE.into(),
            Value::String(options.trust_bundle.clone()),
        );
    }
    written.insert(
        annotations::INJECTED.into(),
        Value::String(env!("CARGO_PKG_VERSION").to_string()),
    );
    Ok(Plan {
        config,
        takeover,
        annotations: written,
    })
}

/// The sidecar config when the workload brings none: inbound mTLS on the sidecar's port to the
/// app on loopback, callers from `allow` only.
fn default_config(options: &InjectOptions, app_port: u16, allow: &[String]) -> String {
    let allow = allow
        .iter()
        .map(|a| serde_json::to_string(a).unwrap_or_default())
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "trust_domain: {td}\nidentity:\n  cert: {IDENTITY_DIR}/svid.pem\n  key: {IDENTITY_DIR}/svid.key\n  bundle: {IDENTITY_DIR}/bundle.pem\n  ca:\n    url: {ca}\n    service_account_token: {TOKEN_DIR}/{TOKEN_FILE}\n    bootstrap_bundle: {bootstrap}\nadmin:\n  address: 0.0.0.0:{admin}\ninbound:\n  address: 0.0.0.0:{inbound}\n  app: 127.0.0.1:{app_port}\n  routes:\n    - name: app\n      match: {{ prefix: / }}\n      allow: [{allow}]\n",
        td = options.trust_domain,
        ca = options.ca_url,
        bootstrap = bootstrap_bundle_path(options),
        admin = options.admin_port,
        inbound = options.inbound_port,
    )
}

/// Where the sidecar finds the CA's bundle before it has its own.
pub fn bootstrap_bundle_path(options: &InjectOptions) -> String {
    match options.trust_bundle_config_map {
        Some(_) => format!("{TRUST_DIR}/bundle.pem"),
        None => format!("{POD_INFO_DIR}/bundle.pem"),
    }
}

fn apply(template: &mut Value, plan: Plan, options: &InjectOptions) {
    let Plan {
        config,
        takeover,
        annotations: written,
    } = plan;
    let service_account = template
        .pointer("/spec/serviceAccountName")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string();
    let metadata = object_at(template, "metadata");
    let annotations = object_at(metadata, "annotations");
    if let Some(annotations) = annotations.as_object_mut() {
        annotations.extend(written);
    }
    // A label value holds at most 63 characters; a longer ServiceAccount name is left unlabelled.
    if service_account.len() <= 63 {
        if let Some(labels) = object_at(metadata, "labels").as_object_mut() {
            labels.insert(SERVICE_ACCOUNT_LABEL.into(), Value::String(service_account));
        }
    }
    let spec = object_at(template, "spec");
    // The app's port entry goes to the sidecar, with the same name (Services that target it by
    // name now reach the sidecar) and the sidecar's inbound port.
    let inbound = takeover.map(|(app, index, port)| {
        if let Some(container) = spec
            .get_mut("containers")
            .and_then(|c| c.get_mut(app))
            .and_then(Value::as_object_mut)
        {
            let ports = container.get_mut("ports").and_then(Value::as_array_mut);
            let now_empty = ports.is_some_and(|ports| {
                ports.remove(index);
                ports.is_empty()
            });
            if now_empty {
                container.remove("ports");
            }
        }
        let mut entry = json!({"name": "palisade-inbound", "containerPort": options.inbound_port, "protocol": "TCP"});
        if let Some(name) = port.get("name") {
            entry["name"] = name.clone();
        }
        entry
    });
    let config_file = match &config {
        ConfigSource::ConfigMap(_) => format!("{CONFIG_DIR}/sidecar.yaml"),
        ConfigSource::Annotation => format!("{POD_INFO_DIR}/sidecar.yaml"),
    };
    let mut sidecar = sidecar_container(options, &config_file, inbound, &config);
    if options.native_sidecar {
        sidecar["restartPolicy"] = json!("Always");
        let init = array_at(spec, "initContainers");
        init.insert(0, sidecar);
    } else {
        array_at(spec, "containers").push(sidecar);
    }
    let volumes = array_at(spec, "volumes");
    for volume in sidecar_volumes(options, &config) {
        volumes.push(volume);
    }
}

fn sidecar_container(
    options: &InjectOptions,
    config_file: &str,
    inbound: Option<Value>,
    config: &ConfigSource,
) -> Value {
    let probe = |path: &str, period: u32, failures: u32| {
        json!({
            "httpGet": {"path": path, "port": options.admin_port},
            "periodSeconds": period,
            "failureThreshold": failures,
        })
    };
    let mut mounts = vec![
        json!({"name": IDENTITY_VOLUME, "mountPath": IDENTITY_DIR}),
        json!({"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true}),
    ];
    if pod_info_items(options, config).is_some() {
        mounts.push(json!({"name": POD_INFO_VOLUME, "mountPath": POD_INFO_DIR, "readOnly": true}));
    }
    if options.trust_bundle_config_map.is_some() {
        mounts.push(json!({"name": TRUST_VOLUME, "mountPath": TRUST_DIR, "readOnly": true}));
    }
    if matches!(config, ConfigSource::ConfigMap(_)) {
        mounts.push(json!({"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": true}));
    }
    json!({
        "name": SIDECAR_NAME,
        "image": options.image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["sidecar", "--config", config_file],
        "ports": inbound.into_iter().chain([
            json!({"name": "palisade-admin", "containerPort": options.admin_port, "protocol": "TCP"}),
        ]).collect::<Vec<_>>(),
        "env": [
            {"name": "RUST_LOG", "value": "info"},
        ],
        "resources": {
            "requests": {"cpu": "50m", "memory": "32Mi"},
            "limits": {"cpu": "1", "memory": "128Mi"},
        },
        "startupProbe": probe("/readyz", 1, 60),
        "readinessProbe": probe("/readyz", 5, 3),
        "livenessProbe": probe("/healthz", 10, 3),
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": SIDECAR_USER,
            "runAsGroup": SIDECAR_USER,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "privileged": false,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": mounts,
    })
}

/// What the downward-API volume carries: the bundle and the config when they are annotations.
fn pod_info_items(options: &InjectOptions, config: &ConfigSource) -> Option<Vec<Value>> {
    let mut items = Vec::new();
    if options.trust_bundle_config_map.is_none() {
        items.push(json!({
            "path": "bundle.pem",
            "fieldRef": {"fieldPath": format!("metadata.annotations['{}']", annotations::TRUST_BUNDLE)},
        }));
    }
    if matches!(config, ConfigSource::Annotation) {
        items.push(json!({
            "path": "sidecar.yaml",
            "fieldRef": {"fieldPath": format!("metadata.annotations['{}']", annotations::CONFIG)},
        }));
    }
    (!items.is_empty()).then_some(items)
}

fn sidecar_volumes(options: &InjectOptions, config: &ConfigSource) -> Vec<Value> {
    let mut volumes = vec![
        json!({"name": IDENTITY_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}),
        json!({"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": {
            "audience": options.audience,
            "expirationSeconds": options.token_expiration_seconds,
            "path": TOKEN_FILE,
        }}]}}),
    ];
    if let Some(items) = pod_info_items(options, config) {
        volumes.push(json!({"name": POD_INFO_VOLUME, "downwardAPI": {"items": items}}));
    }
    if let Some(name) = &options.trust_bundle_config_map {
        volumes.push(json!({"name": TRUST_VOLUME, "configMap": {"name": name, "items": [{"key": "bundle.pem", "path": "bundle.pem"}]}}));
    }
    if let ConfigSource::ConfigMap(name) = config {
        volumes.push(json!({"name": CONFIG_VOLUME, "configMap": {"name": name, "items": [{"key": "sidecar.yaml", "path": "sidecar.yaml"}]}}));
    }
    volumes
}

/// `value[key]` as an object, created when missing (or null).
fn object_at<'a>(value: &'a mut Value, key: &str) -> &'a mut Value {
    let map = value.as_object_mut().expect("checked to be an object");
    let entry = map.entry(key.to_string()).or_insert_with(|| json!({}));
    if !entry.is_object() {
        *entry = json!({});
    }
    entry
}

/// `value[key]` as an array, created when missing (or null).
fn array_at<'a>(value: &'a mut Value, key: &str) -> &'a mut Vec<Value> {
    let map = value.as_object_mut().expect("checked to be an object");
    let entry = map.entry(key.to_string()).or_insert_with(|| json!([]));
    if !entry.is_array() {
        *entry = json!([]);
    }
    entry.as_array_mut().expect("just made an array")
}

/// The input's format, kept for the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

/// Reads a stream of manifests: JSON (one object) or YAML (one or more documents).
pub fn parse_documents(text: &str) -> Result<(Format, Vec<Value>), InjectError> {
    if text.trim_start().starts_with(['{', '[']) {
        let value: Value = serde_json::from_str(text).map_err(|e| InjectError::Parse(format!("JSON: {e}")))?;
        let documents = match value {
            Value::Array(items) => items,
            other => vec![other],
        };
        return Ok((Format::Json, documents));
    }
    let documents: Vec<Value> =
        serde_saphyr::from_multiple(text).map_err(|e| InjectError::Parse(format!("YAML: {e}")))?;
    Ok((Format::Yaml, documents.into_iter().filter(|d| !d.is_null()).collect()))
}

pub fn render_documents(format: Format, documents: &[Value]) -> Result<String, InjectError> {
    match format {
        Format::Json => {
            let value = match documents {
                [one] => one.clone(),
                many => Value::Array(many.to_vec()),
            };
            serde_json::to_string_pretty(&value)
                .map(|text| text + "\n")
                .map_err(|e| InjectError::Invalid(e.to_string()))
        }
        Format::Yaml => {
            let mut out = String::new();
            for (index, document) in documents.iter().enumerate() {
                if index > 0 {
                    out.push_str("---\n");
                }
                let text = serde_saphyr::to_string(document).map_err(|e| InjectError::Invalid(e.to_string()))?;
                out.push_str(&text);
                if !out.ends_with('\n') {
                    out.push('\n');
                }
            }
            Ok(out)
        }
    }
}

/// The whole CLI transformation: manifests in, manifests out (same format), and what happened.
pub fn inject_text(text: &str, options: &InjectOptions) -> Result<(String, Vec<Report>), InjectError> {
    let (format, mut documents) = parse_documents(text)?;
    let mut reports = Vec::new();
    for document in &mut documents {
        inject_object(document, options, &mut reports);
    }
    Ok((render_documents(format, &documents)?, reports))
}
