//! `palisade inject` from the command line and as a webhook over HTTPS: the webhook's patch,
//! applied, equals what `palisade inject` writes for the same pod; malformed reviews get a 400 and
//! never take the webhook down.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use support::palisade;

fn has_curl() -> bool {
    Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn ca_bundle(dir: &Path) -> std::path::PathBuf {
    let ca = dir.join("ca");
    let init = palisade()
        .args(["ca", "init", "--trust-domain", "cluster.local", "--dir"])
        .arg(&ca)
        .output()
        .unwrap();
    assert!(init.status.success());
    ca.join("bundle.pem")
}

/// `palisade inject` on `input` (stdin) with the test's options; stdout.
fn inject_cli(bundle: &Path, input: &str) -> String {
    let mut child = palisade()
        .args(["inject", "--namespace", "shop", "--trust-bundle"])
        .arg(bundle)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

fn pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "orders-7c9d5-", "labels": {"app": "orders"}, "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "orders-7c9d5", "uid": "0c1b7a8e-1111-4c4d-8e9f-000000000001", "controller": true}]},
        "spec": {
            "serviceAccountName": "orders",
            "containers": [{"name": "orders", "image": "registry.example.org/shop/orders:1.4.2", "ports": [{"name": "http", "containerPort": 8080}],
                "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}}}],
            "volumes": [{"name": "kube-api-access-x1", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}]}}]
        }
    })
}

#[test]
fn the_webhook_over_https_patches_pods_exactly_as_the_cli_injects_them() {
    if !has_curl() {
        eprintln!("SKIPPED: curl is needed (.ci/run installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bundle = ca_bundle(dir.path());
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let webhook = support::start_logging_address(
        palisade()
            .args(["inject", "--webhook", "--listen", "127.0.0.1:0", "--tls-cert"])
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .arg("--trust-bundle")
            .arg(&bundle),
        "injector webhook listening",
    );
    let address = webhook.address.clone();
    let post = |body: &[u8]| -> (u16, String) {
        let file = dir.path().join("body");
        std::fs::write(&file, body).unwrap();
        let output = Command::new("curl")
            .args(["-sS", "--cacert"])
            .arg(&cert)
            .args([
                "-H",
                "content-type: application/json",
                "-w",
                "\n%{http_code}",
                "--data-binary",
            ])
            .arg(format!("@{}", file.display()))
            .arg(format!("https://{address}/inject"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        let (body, status) = text.rsplit_once('\n').unwrap();
        (status.parse().unwrap(), body.to_string())
    };

    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod(),
            "dryRun": false
        }
    });
    let (status, body) = post(review.to_string().as_bytes());
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    use base64::Engine;
    let patch = base64::engine::general_purpose::STANDARD
        .decode(answer["response"]["patch"].as_str().unwrap())
        .unwrap();
    let operations: Vec<Value> = serde_json::from_slice(&patch).unwrap();
    let mut patched = pod();
    palisade_kubernetes::webhook::apply_json_patch(&mut patched, &operations).unwrap();
    let by_cli: Value = serde_json::from_str(&inject_cli(&bundle, &pod().to_string())).unwrap();
    assert_eq!(patched, by_cli, "the webhook and the CLI inject the same pod");

    for (garbage, wanted) in [
        (b"{".to_vec(), "not JSON"),
        (
            br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}"#.to_vec(),
            "no request",
        ),
    ] {
        let (status, body) = post(&garbage);
        assert_eq!(status, 400, "{body}");
        assert!(body.contains(wanted), "{body}");
    }
    // Past the size limit the answer is 413, or the connection closes while curl is still sending.
    let (status, body) = post(&vec![b'x'; 5 * 1024 * 1024]);
    assert!(status == 413 || status == 0, "{status} {body}");
    let (status, _) = post(review.to_string().as_bytes());
    assert_eq!(status, 200, "still serving after malformed reviews");
    drop(webhook);
}

#[test]
fn inject_reads_stdin_and_reports_each_workload() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = ca_bundle(dir.path());
    let yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata: { name: web, namespace: shop }\nspec:\n  selector: { matchLabels: { app: web } }\n  template:\n    metadata: { labels: { app: web } }\n    spec:\n      containers:\n        - name: web\n          image: web:1\n          ports: [{ name: http, containerPort: 3000 }]\n---\napiVersion: v1\nkind: Service\nmetadata: { name: web }\nspec: { ports: [{ port: 80, targetPort: http }] }\n";
    let mut child = palisade()
        .args(["inject", "-", "--trust-bundle"])
        .arg(&bundle)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(yaml.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stdout.contains("palisade-sidecar") && stdout.contains("kind: Service"),
        "{stdout}"
    );
    assert!(stderr.contains("deployment/web: injected"), "{stderr}");

    let bad = palisade()
        .args(["inject", "--trust-bundle"])
        .arg(&bundle)
        .arg(dir.path().join("missing.yaml"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

fn repository() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every YAML document in `path` (a file) as JSON values.
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    palisade_kubernetes::inject::parse_documents(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .1
}

fn yaml_files(dir: &Path, into: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, into);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "json") {
            into.push(path);
        }
    }
    into.sort();
}

#[test]
fn the_deploy_bundle_and_the_injected_goldens_pass_the_scanner_at_medium() {
    for target in ["deploy/kubernetes", "crates/palisade-kubernetes/tests/inject"] {
        let output = palisade()
            .args(["scan", "--fail-on", "medium", "--skip", "vulnerabilities"])
            .arg(repository().join(target))
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{target}:\n{report}");
        assert!(!report.contains(" 0 files scanned"), "{report}");
    }
}

#[test]
fn the_deploy_bundle_and_the_goldens_validate_against_the_kubernetes_schemas() {
    let validator = Command::new("kubernetes-validate").arg("--version").output();
    if !validator.is_ok_and(|o| o.status.success()) {
        eprintln!("SKIPPED: kubernetes-validate is needed (pip install kubernetes-validate; .ci/run installs it)");
        return;
    }
    let mut files = Vec::new();
    yaml_files(&repository().join("deploy/kubernetes"), &mut files);
    yaml_files(
        &repository().join("crates/palisade-kubernetes/tests/inject"),
        &mut files,
    );
    // Kustomize's own files and the overlays' partial patches are not Kubernetes objects.
    let objects: Vec<_> = files
        .into_iter()
        .filter(|f| {
            let name = f.file_name().unwrap().to_string_lossy().to_string();
            name != "kustomization.yaml" && !name.starts_with("delete-") && name != "gateway-egress.yaml"
        })
        .collect();
    assert!(objects.len() >= 12, "{objects:?}");
    // The oldest release with native sidecars (restartPolicy on init containers), and the newest.
    for version in ["1.29.0", "1.37.0"] {
        let output = Command::new("kubernetes-validate")
            .args(["--strict", "--quiet", "-k", version])
            .args(&objects)
            .output()
            .unwrap();
        let text = support::output_text(&output);
        assert!(
            output.status.success() && !text.contains("ERROR"),
            "Kubernetes {version}:\n{text}"
        );
    }
}

#[test]
fn install_yaml_is_the_kustomize_base_in_one_file() {
    let base = repository().join("deploy/kubernetes/base");
    let kustomization = documents(&base.join("kustomization.yaml"));
    let mut expected = Vec::new();
    for resource in kustomization[0]["resources"].as_array().unwrap() {
        expected.extend(documents(&base.join(resource.as_str().unwrap())));
    }
    let install = documents(&repository().join("deploy/kubernetes/install.yaml"));
    assert_eq!(
        install, expected,
        "regenerate install.yaml from base/ (docs/kubernetes.md)"
    );
    let kinds: Vec<&str> = install.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in [
        "Namespace",
        "Deployment",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "MutatingWebhookConfiguration",
        "ClusterRole",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing: {kinds:?}");
    }
    // The webhook never injects the control plane into itself, and fails closed.
    let webhook = install
        .iter()
        .find(|d| d["kind"] == "MutatingWebhookConfiguration")
        .unwrap();
    assert_eq!(webhook["webhooks"][0]["failurePolicy"], "Fail");
    assert_eq!(webhook["webhooks"][0]["sideEffects"], "None");
    // RBAC: no Secrets, no wildcards.
    let role = install.iter().find(|d| d["kind"] == "ClusterRole").unwrap();
    let text = role.to_string();
    assert!(!text.contains("secrets") && !text.contains("\"*\""), "{text}");
}

#[test]
fn the_injected_files_in_deploy_are_exactly_what_palisade_inject_writes() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = ca_bundle(dir.path());
    let shop = repository().join("deploy/kubernetes/examples/shop");
    let run = |file: &Path| {
        let output = palisade()
            .args(["inject", "--trust-bundle-config-map", "palisade-trust-bundle"])
            .arg(file)
            .output()
            .unwrap();
        assert!(output.status.success());
        String::from_utf8(output.stdout).unwrap()
    };
    let injected = std::fs::read_to_string(shop.join("app.injected.yaml")).unwrap();
    let body: String = injected
        .lines()
        .skip_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        body,
        run(&shop.join("app.yaml")),
        "regenerate app.injected.yaml (its first lines say how)"
    );
    // Injecting what is already injected changes nothing, the gateway in base/ included.
    for file in [
        shop.join("app.injected.yaml"),
        repository().join("deploy/kubernetes/base/gateway.yaml"),
    ] {
        let again = run(&file);
        assert_eq!(
            documents(&file),
            palisade_kubernetes::inject::parse_documents(&again).unwrap().1
        );
    }
    // The gateway's sidecar is the injector's: strip it and inject again.
    let gateway = documents(&repository().join("deploy/kubernetes/base/gateway.yaml"));
    let deployment = gateway.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let mut stripped = deployment.clone();
    let template = stripped.pointer_mut("/spec/template").unwrap();
    template["spec"].as_object_mut().unwrap().remove("initContainers");
    let volumes = template["spec"]["volumes"].as_array_mut().unwrap();
    volumes.retain(|v| !v["name"].as_str().unwrap().starts_with("palisade-"));
    template["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("palisade.dev/injected");
    let mut options = palisade_kubernetes::inject::InjectOptions::new(
        "https://palisade-ca.palisade-system.svc:8443",
        "cluster.local",
        &std::fs::read_to_string(&bundle).unwrap(),
    );
    options.trust_bundle_config_map = Some("palisade-trust-bundle".into());
    palisade_kubernetes::inject::inject_object(&mut stripped, &options, &mut Vec::new());
    assert_eq!(&stripped, deployment);
}

/// The configs the bundle ships (in ConfigMaps and annotations) load, with identity files where
/// the pods have them.
#[test]
fn the_configs_inside_the_bundle_load() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    assert!(palisade()
        .args(["ca", "init", "--trust-domain", "cluster.local", "--dir"])
        .arg(&ca)
        .output()
        .unwrap()
        .status
        .success());
    let identity = dir.path().join("identity");
    let issued = palisade()
        .args([
            "ca",
            "issue",
            "--spiffe-id",
            "spiffe://cluster.local/ns/palisade-system/sa/palisade-gateway",
            "--dir",
        ])
        .arg(&ca)
        .arg("--out")
        .arg(&identity)
        .output()
        .unwrap();
    assert!(issued.status.success(), "{}", String::from_utf8_lossy(&issued.stderr));
    let localize = |text: &str| text.replace("/var/run/palisade/identity", identity.to_str().unwrap());

    let mut checked = 0;
    let mut files = Vec::new();
    yaml_files(&repository().join("deploy/kubernetes"), &mut files);
    for file in files {
        for document in documents(&file) {
            let name = document
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let data = document
                .get("data")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let annotation = document
                .pointer("/spec/template/metadata/annotations/palisade.dev~1sidecar-config")
                .and_then(Value::as_str)
                .map(|text| ("sidecar.yaml".to_string(), Value::String(text.to_string())));
            for (key, text) in data.into_iter().chain(annotation) {
                let text = localize(text.as_str().unwrap());
                let path = dir.path().join(format!("{name}-{key}"));
                std::fs::write(&path, &text).unwrap();
                let output = match key.as_str() {
                    "gateway.yaml" => palisade().arg("check-config").arg(&path).output().unwrap(),
                    "sidecar.yaml" => palisade()
                        .args(["check-config", "--sidecar"])
                        .arg(&path)
                        .output()
                        .unwrap(),
                    "identity.yaml" => {
                        palisade_kubernetes::config::load(&path)
                            .unwrap_or_else(|e| panic!("{}: {name}: {e}", file.display()))
                            .expect("a kubernetes section");
                        checked += 1;
                        continue;
                    }
                    _ => continue,
                };
                assert!(
                    output.status.success(),
                    "{}: {name}/{key}:\n{}",
                    file.display(),
                    String::from_utf8_lossy(&output.stderr)
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 7, "{checked} configs checked");
}

/// kubernetes-validate's strict schemas for one release, when it is installed.
fn kubernetes_schemas() -> Option<std::path::PathBuf> {
    let output = Command::new("python3")
        .args([
            "-c",
            "import kubernetes_validate, os; print(os.path.dirname(kubernetes_validate.__file__))",
        ])
        .output()
        .ok()?;
    let dir = std::path::PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
        .join("kubernetes-json-schema/v1.31.0-local-strict");
    dir.join("_definitions.json").is_file().then_some(dir)
}

#[test]
fn check_kubernetes_passes_the_bundle_and_names_each_mistake() {
    let Some(schemas) = kubernetes_schemas() else {
        eprintln!(
            "SKIPPED: kubernetes-validate's schemas are needed (pip install kubernetes-validate; .ci/run installs it)"
        );
        return;
    };
    let check = |target: &Path, extra: &[&str]| {
        let output = palisade()
            .arg("check-kubernetes")
            .arg(target)
            .arg("--schemas")
            .arg(&schemas)
            .args(extra)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).to_string(),
        )
    };
    let (code, text) = check(&repository().join("deploy/kubernetes"), &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("0 problems, 0 scanner findings"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mistakes.yaml"),
        r#"apiVersion: apps/v1
kind: Deployment
metadata: { name: typo, namespace: team }
spec:
  replica: 2
  selector: { matchLabels: { app: typo } }
  template:
    metadata:
      labels: { app: typo }
      annotations:
        palisade.dev/sidecar-config: |
          trust_domain: cluster.local
          identity: { cert: /var/run/palisade/identity/svid.pem, key: /var/run/palisade/identity/svid.key, bundle: /var/run/palisade/identity/bundle.pem }
          inbound:
            address: 0.0.0.0:15006
            app: 127.0.0.1:8080
            routes:
              - { name: all, match: { prefix: / }, allow: ["spiffe://other.domain/ns/x/*"] }
    spec:
      containers:
        - name: app
          image: app:1.0.0
          securityContext: { privileged: true }
---
apiVersion: v1
kind: ConfigMap
metadata: { name: identity, namespace: team }
data:
  identity.yaml: |
    kubernetes:
      issuer: https://kubernetes.default.svc.cluster.local
      keys: { discovery: true }
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: all, namespace: team }
spec: { podSelector: {}, policyTypes: [Ingress] }
"#,
    )
    .unwrap();
    let (code, text) = check(dir.path(), &[]);
    assert_eq!(code, Some(1), "{text}");
    for wanted in [
        "Deployment/typo: /spec: Additional properties are not allowed ('replica' was unexpected)",
        "Deployment/typo: palisade.dev/sidecar-config:",
        "other.domain",
        "ConfigMap/identity: identity.yaml:",
        "allow",
        "K8S001 Critical",
    ] {
        assert!(text.contains(wanted), "{wanted:?} missing in:\n{text}");
    }

    // Without schemas the check says how to get them, unless told to go without.
    let output = palisade()
        .arg("check-kubernetes")
        .arg(dir.path())
        .env_remove("PALISADE_KUBERNETES_SCHEMAS")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--schemas"));
    let output = palisade()
        .arg("check-kubernetes")
        .arg(dir.path())
        .arg("--no-schemas")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1));
    assert!(text.contains("no schemas: not checked against the API"), "{text}");
    assert!(!text.contains("replica"), "{text}");
}
