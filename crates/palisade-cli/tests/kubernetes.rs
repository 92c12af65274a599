//! `palisade inject` from the command line and as a webhook over HTTPS: the webhook's patch,
//! applied, equals what `palisade inject` writes for the same pod; malformed reviews get a 400 and
//! never take the webhook down.

mod support;

use std::io::{BufRead, BufReader, Write};
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
    let mut child = palisade()
        .args(["inject", "--webhook", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .arg("--trust-bundle")
        .arg(&bundle)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let address = loop {
        let line = lines.next().expect("the webhook logs its address").unwrap();
        if let Some(start) = line.find("address=") {
            break line[start + "address=".len()..]
                .split_whitespace()
                .next()
                .unwrap()
                .to_string();
        }
    };
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    let webhook = support::Gateway {
        child,
        address: address.clone(),
        admin: String::new(),
    };
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
