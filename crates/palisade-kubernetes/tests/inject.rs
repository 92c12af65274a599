//! `palisade inject` on real-world manifests, against golden files; idempotence on each; and the
//! webhook's patches, applied, equal to the same injection. Set `PALISADE_UPDATE_GOLDEN=1` to
//! rewrite the goldens after a deliberate change (and read the diff).

use std::path::{Path, PathBuf};

use palisade_kubernetes::inject::{inject_object, inject_text, parse_documents, InjectOptions, Outcome};
use palisade_kubernetes::webhook::{apply_json_patch as apply_patch, json_patch, review};
use serde_json::{json, Value};

const BUNDLE: &str = include_str!("fixtures/trust-bundle.pem");

fn options() -> InjectOptions {
    InjectOptions::new("https://palisade-ca.palisade-system.svc:8443", "cluster.local", BUNDLE)
}

fn inputs() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/inject");
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.to_string_lossy().contains(".injected."))
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 4, "{inputs:?}");
    inputs
}

fn golden_of(input: &Path) -> PathBuf {
    let name = input.file_name().unwrap().to_string_lossy();
    let (stem, extension) = name.rsplit_once('.').unwrap();
    input.with_file_name(format!("{stem}.injected.{extension}"))
}

#[test]
fn injected_manifests_match_their_goldens_and_injecting_again_changes_nothing() {
    let update = std::env::var_os("PALISADE_UPDATE_GOLDEN").is_some();
    for input in inputs() {
        let text = std::fs::read_to_string(&input).unwrap();
        let (injected, reports) = inject_text(&text, &options()).unwrap();
        let golden = golden_of(&input);
        if update {
            std::fs::write(&golden, &injected).unwrap();
        }
        let expected = std::fs::read_to_string(&golden).unwrap_or_default();
        assert_eq!(
            injected,
            expected,
            "{} differs from {}",
            input.display(),
            golden.display()
        );
        assert!(
            reports.iter().any(|r| r.outcome == Outcome::Injected),
            "{}: {reports:?}",
            input.display()
        );
        let (again, second) = inject_text(&injected, &options()).unwrap();
        assert_eq!(again, injected, "{}: injecting twice changed it", input.display());
        assert!(
            second.iter().all(|r| r.outcome != Outcome::Injected),
            "{}: {second:?}",
            input.display()
        );
    }
}

#[test]
fn what_was_there_stays_and_the_sidecar_is_hardened() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/inject/deployment-multi-container.yaml"),
    )
    .unwrap();
    let (_, original) = parse_documents(&text).unwrap();
    let (injected, _) = inject_text(&text, &options()).unwrap();
    let (_, documents) = parse_documents(&injected).unwrap();
    let before = &original[0]["spec"]["template"]["spec"];
    let pod = &documents[0]["spec"]["template"]["spec"];
    // Unknown and untouched fields, the other containers, the init container and volumes.
    assert_eq!(pod["hostUsers"], false);
    assert_eq!(pod["securityContext"], before["securityContext"]);
    assert_eq!(pod["containers"][1], before["containers"][1]);
    assert_eq!(pod["initContainers"][1], before["initContainers"][0]);
    assert_eq!(pod["volumes"][0], before["volumes"][0]);
    assert_eq!(documents[1], original[1], "the Service passes through");
    // The app's `http` port moved to the sidecar; `metrics` stays with the app.
    assert_eq!(
        pod["containers"][0]["ports"],
        json!([{"name": "metrics", "containerPort": 9090}])
    );
    let sidecar = &pod["initContainers"][0];
    assert_eq!(sidecar["name"], "palisade-sidecar");
    assert_eq!(sidecar["restartPolicy"], "Always");
    assert_eq!(
        sidecar["ports"][0],
        json!({"name": "http", "containerPort": 15006, "protocol": "TCP"})
    );
    let security = &sidecar["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    assert!(sidecar["resources"]["limits"]["memory"].is_string());
    assert_eq!(sidecar["readinessProbe"]["httpGet"]["port"], 15021);
    let token = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "palisade-token")
        .unwrap();
    assert_eq!(
        token["projected"]["sources"][0]["serviceAccountToken"]["audience"],
        "palisade-ca"
    );
    let annotations = &documents[0]["spec"]["template"]["metadata"]["annotations"];
    let config = annotations["palisade.dev/sidecar-config"].as_str().unwrap();
    assert!(config.contains("app: 127.0.0.1:8080"), "{config}");
    assert!(
        config.contains(
            r#"allow: ["spiffe://cluster.local/ns/shop/sa/web", "spiffe://cluster.local/ns/payments/sa/checkout"]"#
        ),
        "{config}"
    );
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    // The generated config is a sidecar config that loads.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sidecar.yaml");
    std::fs::write(&file, config).unwrap();
    palisade_core::load_sidecar(&file).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn each_workload_kind_and_the_opt_out() {
    let mut reports = Vec::new();
    for (kind, template) in [
        ("Deployment", "/spec/template"),
        ("StatefulSet", "/spec/template"),
        ("DaemonSet", "/spec/template"),
        ("ReplicaSet", "/spec/template"),
        ("Job", "/spec/template"),
        ("CronJob", "/spec/jobTemplate/spec/template"),
        ("Pod", ""),
    ] {
        let pod = json!({"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "app", "image": "app:1", "ports": [{"containerPort": 80}]}]}});
        let mut object = json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": "x", "namespace": "team"}});
        if template.is_empty() {
            object["spec"] = pod["spec"].clone();
        } else {
            let parts: Vec<&str> = template.trim_start_matches('/').split('/').collect();
            let mut node = &mut object;
            for part in &parts[..parts.len() - 1] {
                node = node
                    .as_object_mut()
                    .unwrap()
                    .entry(part.to_string())
                    .or_insert(json!({}));
            }
            node[parts[parts.len() - 1]] = pod.clone();
        }
        inject_object(&mut object, &options(), &mut reports);
        let spec = object.pointer(&format!("{template}/spec")).unwrap();
        assert_eq!(spec["initContainers"][0]["name"], "palisade-sidecar", "{kind}");
        let annotations = object.pointer(&format!("{template}/metadata/annotations")).unwrap();
        assert!(
            annotations["palisade.dev/sidecar-config"]
                .as_str()
                .unwrap()
                .contains("spiffe://cluster.local/ns/team/*"),
            "{kind}: the default allow list is the pod's namespace"
        );
    }
    assert!(reports.iter().all(|r| r.outcome == Outcome::Injected), "{reports:?}");

    let mut opted = json!({"kind": "Deployment", "metadata": {"name": "x"}, "spec": {"template": {
        "metadata": {"annotations": {"palisade.dev/inject": "false"}},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]}}}});
    let before = opted.clone();
    let mut reports = Vec::new();
    inject_object(&mut opted, &options(), &mut reports);
    assert_eq!(reports[0].outcome, Outcome::OptedOut);
    assert_eq!(opted, before);

    // Nothing to protect and no config: left alone, with the reason.
    let mut portless = json!({"kind": "Job", "metadata": {"name": "x"}, "spec": {"template": {
        "spec": {"containers": [{"name": "app", "image": "app:1"}]}}}});
    let before = portless.clone();
    let mut reports = Vec::new();
    inject_object(&mut portless, &options(), &mut reports);
    assert!(
        matches!(&reports[0].outcome, Outcome::Skipped(reason) if reason.contains("no TCP port")),
        "{reports:?}"
    );
    assert_eq!(portless, before);

    // No namespace known: the default callers cannot be named, so nothing is guessed.
    let mut nowhere = json!({"kind": "Pod", "metadata": {"name": "x"}, "spec": {"containers": [{"name": "app", "image": "app:1", "ports": [{"containerPort": 80}]}]}});
    let mut reports = Vec::new();
    inject_object(&mut nowhere, &options(), &mut reports);
    assert!(
        matches!(&reports[0].outcome, Outcome::Skipped(reason) if reason.contains("no namespace")),
        "{reports:?}"
    );
    let mut named = nowhere.clone();
    named["metadata"]["annotations"] = json!({"palisade.dev/allow": "spiffe://cluster.local/ns/web/sa/frontend"});
    let mut reports = Vec::new();
    inject_object(&mut named, &options(), &mut reports);
    assert_eq!(
        reports[0].outcome,
        Outcome::Injected,
        "an explicit allow list needs no namespace"
    );

    // Classic sidecar: a container, for clusters before native sidecars.
    let mut classic = json!({"kind": "Pod", "metadata": {"name": "x", "namespace": "team"}, "spec": {"containers": [{"name": "app", "image": "app:1", "ports": [{"containerPort": 80}]}]}});
    let mut old_cluster = options();
    old_cluster.native_sidecar = false;
    inject_object(&mut classic, &old_cluster, &mut Vec::new());
    assert_eq!(classic["spec"]["containers"][1]["name"], "palisade-sidecar");
    assert!(classic["spec"]["containers"][1].get("restartPolicy").is_none());
}

#[test]
fn malformed_input_is_an_error_never_a_panic() {
    for text in ["{", "kind: [", "- a\n- : b\n  c", "\u{0}"] {
        assert!(inject_text(text, &options()).is_err() || inject_text(text, &options()).is_ok());
    }
    // Odd shapes pass through untouched rather than panic.
    for object in [
        json!({"kind": "Deployment"}),
        json!({"kind": "Deployment", "spec": {"template": 3}}),
        json!({"kind": "Deployment", "spec": {"template": {"spec": {"containers": "x"}}}}),
        json!({"kind": "Pod", "spec": {"containers": [{"ports": [{"containerPort": 99999999}]}]}}),
        json!({"kind": "Pod", "metadata": {"annotations": {"palisade.dev/app-container": "nope"}}, "spec": {"containers": [{"name": "a"}]}}),
        json!({"kind": "List", "items": [1, null, {"kind": "Pod"}]}),
    ] {
        let mut copy = object.clone();
        inject_object(&mut copy, &options(), &mut Vec::new());
    }
}

/// The pods of the golden inputs, as the API server would send them to the webhook.
fn pods_of_inputs() -> Vec<Value> {
    let mut pods = Vec::new();
    for input in inputs() {
        let (_, documents) = parse_documents(&std::fs::read_to_string(&input).unwrap()).unwrap();
        let mut stack = documents;
        while let Some(document) = stack.pop() {
            if let Some(items) = document.get("items").and_then(Value::as_array) {
                stack.extend(items.iter().cloned());
                continue;
            }
            let template = ["/spec/template", "/spec/jobTemplate/spec/template"]
                .iter()
                .find_map(|p| document.pointer(p))
                .cloned();
            let mut pod = match (document["kind"].as_str(), template) {
                (Some("Pod"), _) => document.clone(),
                (_, Some(template)) => {
                    json!({"apiVersion": "v1", "kind": "Pod", "metadata": template["metadata"].clone(), "spec": template["spec"].clone()})
                }
                _ => continue,
            };
            // Workload annotations reach pods only through the template.
            if let Some(annotations) = document.pointer("/metadata/annotations").and_then(Value::as_object) {
                for (key, value) in annotations.iter().filter(|(k, _)| k.starts_with("palisade.dev/")) {
                    pod["metadata"]["annotations"][key] = value.clone();
                }
            }
            pod["metadata"]["generateName"] = json!("pod-");
            if let Some(object) = pod["metadata"].as_object_mut() {
                object.remove("namespace");
            }
            pods.push(pod);
        }
    }
    pods
}

fn admission_review(uid: &str, pod: &Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller", "groups": ["system:serviceaccounts"]},
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
}

#[test]
fn webhook_patches_applied_equal_the_cli_injection() {
    use base64::Engine;
    let pods = pods_of_inputs();
    assert!(pods.len() >= 5, "{}", pods.len());
    for (index, pod) in pods.iter().enumerate() {
        let uid = format!("705ab4f5-6393-11e8-b7cc-42010a80000{index}");
        let answer = review(admission_review(&uid, pod).to_string().as_bytes(), &options()).unwrap();
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(answer["kind"], "AdmissionReview");
        let response = &answer["response"];
        assert_eq!(response["uid"], uid.as_str());
        assert_eq!(response["allowed"], true);
        let mut by_cli = pod.clone();
        let mut cli_options = options();
        cli_options.namespace = Some("shop".into());
        let mut reports = Vec::new();
        inject_object(&mut by_cli, &cli_options, &mut reports);
        let mut patched = pod.clone();
        if let Some(patch) = response["patch"].as_str() {
            assert_eq!(response["patchType"], "JSONPatch");
            let bytes = base64::engine::general_purpose::STANDARD.decode(patch).unwrap();
            let operations: Vec<Value> = serde_json::from_slice(&bytes).unwrap();
            apply_patch(&mut patched, &operations).unwrap();
        } else {
            assert_ne!(reports[0].outcome, Outcome::Injected);
        }
        assert_eq!(patched, by_cli, "pod {index}");
    }
    // A review of something that is not a Pod is allowed unchanged.
    let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}});
    let mut not_a_pod = admission_review("u-1", &service);
    not_a_pod["request"]["kind"]["kind"] = json!("Service");
    let answer = review(not_a_pod.to_string().as_bytes(), &options()).unwrap();
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer["response"].get("patch").is_none());
}

#[test]
fn malformed_reviews_are_refused_with_a_reason() {
    let good = admission_review("u", &json!({"kind": "Pod", "spec": {"containers": []}}));
    let mut no_uid = good.clone();
    no_uid["request"].as_object_mut().unwrap().remove("uid");
    let mut v1beta1 = good.clone();
    v1beta1["apiVersion"] = json!("admission.k8s.io/v1beta1");
    for (body, wanted) in [
        (b"not json".to_vec(), "not JSON"),
        (no_uid.to_string().into_bytes(), "uid"),
        (v1beta1.to_string().into_bytes(), "admission.k8s.io/v1"),
        (b"{}".to_vec(), "AdmissionReview"),
        (b"[1,2]".to_vec(), "AdmissionReview"),
    ] {
        let error = review(&body, &options()).unwrap_err();
        assert!(error.contains(wanted), "{error}");
    }
    // A pod that cannot be injected is admitted, unchanged, with a warning.
    let answer = review(good.to_string().as_bytes(), &options()).unwrap();
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer["response"]["warnings"][0]
        .as_str()
        .unwrap()
        .contains("not injected"));
}

#[test]
fn json_patch_escapes_keys_and_removes_what_went() {
    let from = json!({"metadata": {"annotations": {"a/b": "1", "gone": "x"}}});
    let to = json!({"metadata": {"annotations": {"a/b": "2", "new~key": "y"}}});
    let patch = json_patch(&from, &to);
    assert!(patch.contains(&json!({"op": "replace", "path": "/metadata/annotations/a~1b", "value": "2"})));
    assert!(patch.contains(&json!({"op": "remove", "path": "/metadata/annotations/gone"})));
    assert!(patch.contains(&json!({"op": "add", "path": "/metadata/annotations/new~0key", "value": "y"})));
    let mut applied = from.clone();
    apply_patch(&mut applied, &patch).unwrap();
    assert_eq!(applied, to);
}

/// The webhook over TLS: a client that stops in the middle of a request head is cut off at the
/// header read timeout instead of holding the connection.
#[tokio::test]
async fn the_webhook_closes_a_connection_that_stops_mid_head() {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (cert, key, bundle) = (
        dir.path().join("tls.crt"),
        dir.path().join("tls.key"),
        dir.path().join("bundle.pem"),
    );
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    std::fs::write(&bundle, BUNDLE).unwrap();
    let webhook = palisade_kubernetes::webhook::Webhook::start(palisade_kubernetes::webhook::WebhookOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls_cert: cert,
        tls_key: key,
        trust_bundle: bundle,
        inject: options(),
        header_read_timeout: std::time::Duration::from_millis(300),
    })
    .await
    .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(palisade_tls::provider()))
        .with_protocol_versions(palisade_tls::PROTOCOL_VERSIONS)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(webhook.address).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut stream = connector.connect(name, tcp).await.unwrap();
    stream.write_all(b"POST /inject HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut buffer = Vec::new();
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read_to_end(&mut buffer)).await;
    assert!(closed.is_ok(), "the connection was still open after 5 s");
    webhook.shutdown().await;
}
