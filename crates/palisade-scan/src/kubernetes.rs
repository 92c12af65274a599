//! Kubernetes manifest rules (K8S0xx): workloads, RBAC, Services, and one rule across the whole
//! scan (namespaces with workloads but no NetworkPolicy).

use std::collections::{BTreeMap, BTreeSet};

use crate::dockerfile::{is_secret_name, ImageReference};
use crate::finding::Finding;
use crate::rules::{self, Rule};
use crate::yaml::Node;

/// Whether a YAML document is a Kubernetes object (or a `List` of them).
pub fn is_object(document: &Node) -> bool {
    document.get("apiVersion").as_str().is_some() && document.get("kind").as_str().is_some()
}

/// The objects of a file: documents, with `List` kinds (`kubectl get -o yaml`) expanded.
pub fn objects(documents: &[Node]) -> Vec<&Node> {
    let mut out = Vec::new();
    for document in documents.iter().filter(|d| is_object(d)) {
        if document.get("kind").as_str().is_some_and(|k| k.ends_with("List")) {
            out.extend(document.get("items").items().iter().filter(|item| is_object(item)));
        } else {
            out.push(document);
        }
    }
    out
}

/// What the whole scan saw of namespaces, for K8S023.
#[derive(Default)]
pub struct Namespaces {
    /// First workload seen in each namespace: (path, line, description).
    workloads: BTreeMap<String, (String, usize, String)>,
    with_policy: BTreeSet<String>,
}

impl Namespaces {
    pub fn findings(&self) -> Vec<Finding> {
        self.workloads
            .iter()
            .filter(|(namespace, _)| !self.with_policy.contains(*namespace))
            .map(|(namespace, (path, line, what))| {
                Finding::of(
                    &rules::K8S_NO_NETWORK_POLICY,
                    path,
                    *line,
                    format!("namespace `{namespace}` has workloads ({what}) and no NetworkPolicy in the scanned files"),
                )
            })
            .collect()
    }
}

pub fn check(path: &str, documents: &[Node], namespaces: &mut Namespaces) -> Vec<Finding> {
    let mut findings = Vec::new();
    for object in objects(documents) {
        let kind = object.get("kind").as_str().unwrap_or_default();
        let name = object.at(&["metadata", "name"]).as_str().unwrap_or("(unnamed)");
        let namespace = object
            .at(&["metadata", "namespace"])
            .as_str()
            .unwrap_or("default")
            .to_string();
        let what = format!("{kind}/{name}");
        let mut report = |rule: &Rule, line: usize, message: String| {
            findings.push(Finding::of(rule, path, line, format!("{what}: {message}")))
        };
        if let Some(pod) = pod_spec(object, kind) {
            namespaces
                .workloads
                .entry(namespace)
                .or_insert_with(|| (path.to_string(), object.line, what.clone()));
            check_pod(pod, object.line, &mut report);
            continue;
        }
        match kind {
            "NetworkPolicy" => {
                namespaces.with_policy.insert(namespace);
            }
            "Role" | "ClusterRole" => check_rbac_rules(object, &mut report),
            "RoleBinding" | "ClusterRoleBinding" => check_binding(object, &mut report),
            "Service" => check_service(object, &mut report),
            _ => {}
        }
    }
    findings
}

/// The pod spec of a workload: a Pod's own, a PodTemplate's, or the pod template of any other
/// kind, built-in or not (Deployments, CronJobs, OpenShift DeploymentConfigs, Argo Rollouts,
/// Knative Services…) at `spec.template.spec` or `spec.jobTemplate.spec.template.spec`. A
/// template counts when it lists containers, so that unrelated `template` fields are left alone.
fn pod_spec<'a>(object: &'a Node, kind: &str) -> Option<&'a Node> {
    let candidates: &[&[&str]] = match kind {
        "Pod" => &[&["spec"]],
        "PodTemplate" => &[&["template", "spec"]],
        _ => &[
            &["spec", "template", "spec"],
            &["spec", "jobTemplate", "spec", "template", "spec"],
        ],
    };
    let built_in = matches!(
        kind,
        "Pod"
            | "PodTemplate"
            | "Deployment"
            | "StatefulSet"
            | "DaemonSet"
            | "ReplicaSet"
            | "Job"
            | "CronJob"
            | "ReplicationController"
    );
    candidates.iter().map(|path| object.at(path)).find(|spec| {
        // A patch of a built-in workload (kustomize) may set pod fields without containers.
        (built_in && spec.is_present()) || matches!(spec.get("containers").value, crate::yaml::Value::Seq(_))
    })
}

const DANGEROUS_CAPABILITIES: &[&str] = &[
    "ALL",
    "SYS_ADMIN",
    "NET_ADMIN",
    "NET_RAW",
    "SYS_PTRACE",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_BOOT",
    "DAC_READ_SEARCH",
    "BPF",
    "PERFMON",
];

const SENSITIVE_HOST_PATHS: &[&str] = &[
    "/",
    "/etc",
    "/proc",
    "/sys",
    "/root",
    "/boot",
    "/dev",
    "/var/lib/kubelet",
    "/var/lib/docker",
    "/var/run/docker.sock",
    "/run/containerd/containerd.sock",
    "/var/run/containerd/containerd.sock",
    "/var/run/crio/crio.sock",
    "/etc/kubernetes",
];

fn check_pod(pod: &Node, object_line: usize, report: &mut impl FnMut(&Rule, usize, String)) {
    let pod_line = pod.line_or(object_line);
    for (key, rule) in [
        ("hostNetwork", &rules::K8S_HOST_NETWORK),
        ("hostPID", &rules::K8S_HOST_PID),
        ("hostIPC", &rules::K8S_HOST_IPC),
    ] {
        let flag = pod.get(key);
        if flag.as_bool() == Some(true) {
            report(rule, flag.line, format!("{key}: true"));
        }
    }
    for volume in pod.get("volumes").items() {
        let host_path = volume.at(&["hostPath", "path"]);
        if let Some(path) = host_path.as_str() {
            let normalized = path.trim_end_matches('/');
            let normalized = if normalized.is_empty() { "/" } else { normalized };
            if SENSITIVE_HOST_PATHS.contains(&normalized) {
                report(
                    &rules::K8S_SENSITIVE_HOST_PATH,
                    host_path.line,
                    format!("hostPath {path}"),
                );
            } else {
                report(&rules::K8S_HOST_PATH, host_path.line, format!("hostPath {path}"));
            }
        }
    }
    let account = pod
        .get("serviceAccountName")
        .as_str()
        .or(pod.get("serviceAccount").as_str());
    let automount = pod.get("automountServiceAccountToken").as_bool();
    if account.is_none_or(|a| a == "default") && automount != Some(false) {
        report(
            &rules::K8S_DEFAULT_SERVICE_ACCOUNT,
            pod_line,
            "runs as the default service account with its token mounted".into(),
        );
    }
    let pod_security = pod.get("securityContext");
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for container in pod.get(list).items() {
            check_container(container, pod_security, report);
        }
    }
}

/// A container's security setting where it sets one, else its pod's.
fn effective<'a>(container: &'a Node, pod: &'a Node, path: &[&str]) -> &'a Node {
    let own = container.at(path);
    if own.is_present() {
        own
    } else {
        pod.at(path)
    }
}

fn check_container(container: &Node, pod_security: &Node, report: &mut impl FnMut(&Rule, usize, String)) {
    let name = container.get("name").as_str().unwrap_or("(unnamed)");
    let line = container.line;
    let security = container.get("securityContext");
    let mut say = |rule: &Rule, at: usize, message: &str| report(rule, at, format!("container `{name}` {message}"));

    let privileged = security.get("privileged");
    if privileged.as_bool() == Some(true) {
        say(&rules::K8S_PRIVILEGED, privileged.line, "is privileged");
    }
    let escalation = security.get("allowPrivilegeEscalation");
    if escalation.as_bool() != Some(false) {
        say(
            &rules::K8S_PRIVILEGE_ESCALATION,
            escalation.line_or(line),
            "does not set allowPrivilegeEscalation: false",
        );
    }
    check_user(security, pod_security, line, &mut say);
    let capabilities = security.get("capabilities");
    for added in capabilities.get("add").items() {
        let cap = added.as_str().unwrap_or_default().to_ascii_uppercase();
        let cap = cap.trim_start_matches("CAP_");
        if DANGEROUS_CAPABILITIES.contains(&cap) {
            say(
                &rules::K8S_DANGEROUS_CAPABILITY,
                added.line,
                &format!("adds capability {cap}"),
            );
        }
    }
    let drops_all = capabilities
        .get("drop")
        .items()
        .iter()
        .any(|d| d.as_str().is_some_and(|s| s.eq_ignore_ascii_case("ALL")));
    if !drops_all {
        say(
            &rules::K8S_CAPABILITIES_NOT_DROPPED,
            capabilities.line_or(line),
            "does not drop ALL capabilities",
        );
    }
    let limits = container.at(&["resources", "limits"]);
    let missing: Vec<&str> = ["cpu", "memory"]
        .into_iter()
        .filter(|k| !limits.get(k).is_present())
        .collect();
    if !missing.is_empty() {
        say(
            &rules::K8S_NO_LIMITS,
            limits.line_or(line),
            &format!("has no {} limit", missing.join(" or ")),
        );
    }
    let read_only = security.get("readOnlyRootFilesystem");
    if read_only.as_bool() != Some(true) {
        say(
            &rules::K8S_WRITABLE_ROOT_FS,
            read_only.line_or(line),
            "has a writable root filesystem",
        );
    }
    let image = container.get("image");
    if let Some(reference) = image.as_str() {
        let parsed = ImageReference::parse(reference);
        if parsed.digest.is_none() && parsed.tag.as_deref().is_none_or(|t| t == "latest") {
            say(
                &rules::K8S_UNPINNED_IMAGE,
                image.line,
                &format!("uses image `{reference}`"),
            );
        }
    }
    for variable in container.get("env").items() {
        let var_name = variable.get("name").as_str().unwrap_or_default();
        let value = variable.get("value");
        if is_secret_name(var_name) && value.as_str().is_some_and(|v| !v.is_empty() && !v.starts_with('$')) {
            say(
                &rules::K8S_SECRET_IN_ENV,
                value.line,
                &format!("sets {var_name} to a literal value"),
            );
        }
    }
    let seccomp = effective(security, pod_security, &["seccompProfile", "type"]);
    if !matches!(seccomp.as_str(), Some("RuntimeDefault" | "Localhost")) {
        say(
            &rules::K8S_NO_SECCOMP,
            line,
            "has no RuntimeDefault or Localhost seccomp profile",
        );
    }
}

/// The container's settings override the pod's.
fn check_user(security: &Node, pod_security: &Node, line: usize, say: &mut impl FnMut(&Rule, usize, &str)) {
    let run_as_user = effective(security, pod_security, &["runAsUser"]);
    if run_as_user.as_int() == Some(0) {
        say(&rules::K8S_RUNS_AS_ROOT, run_as_user.line, "sets runAsUser: 0");
        return;
    }
    let non_root = effective(security, pod_security, &["runAsNonRoot"]);
    let non_zero_user = run_as_user.as_int().is_some_and(|uid| uid > 0);
    if non_root.as_bool() != Some(true) && !non_zero_user {
        say(
            &rules::K8S_RUNS_AS_ROOT,
            non_root.line_or(line),
            "does not set runAsNonRoot: true",
        );
    }
}

fn strings(node: &Node) -> Vec<String> {
    node.items()
        .iter()
        .filter_map(|n| n.as_str().map(str::to_string))
        .collect()
}

fn check_rbac_rules(role: &Node, report: &mut impl FnMut(&Rule, usize, String)) {
    for rule in role.get("rules").items() {
        let verbs = strings(rule.get("verbs"));
        let resources = strings(rule.get("resources"));
        if verbs.iter().any(|v| v == "*") || resources.iter().any(|r| r == "*") {
            report(
                &rules::K8S_RBAC_WILDCARD,
                rule.line,
                format!("grants verbs [{}] on [{}]", verbs.join(", "), resources.join(", ")),
            );
            continue;
        }
        let reads = verbs.iter().any(|v| matches!(v.as_str(), "get" | "list" | "watch"));
        if reads && resources.iter().any(|r| r == "secrets") && !rule.get("resourceNames").is_present() {
            report(
                &rules::K8S_RBAC_SECRETS,
                rule.line,
                format!("may {} secrets", verbs.join("/")),
            );
        }
    }
}

fn check_binding(binding: &Node, report: &mut impl FnMut(&Rule, usize, String)) {
    let role = binding.at(&["roleRef", "name"]);
    if role.as_str() == Some("cluster-admin") {
        report(
            &rules::K8S_CLUSTER_ADMIN_BINDING,
            role.line,
            "binds cluster-admin".into(),
        );
    }
}

/// Ports of administrative interfaces: SSH, telnet, RDP, VNC, Docker, etcd, the Kubernetes API and
/// kubelet, Envoy's and Palisade's admin listeners.
pub const ADMIN_PORTS: &[i64] = &[
    22, 23, 2375, 2376, 2379, 2380, 3389, 5900, 6443, 9901, 10250, 10255, 15000,
];

fn check_service(service: &Node, report: &mut impl FnMut(&Rule, usize, String)) {
    let service_type = service.at(&["spec", "type"]).as_str().unwrap_or("ClusterIP");
    if !matches!(service_type, "NodePort" | "LoadBalancer") {
        return;
    }
    for port in service.at(&["spec", "ports"]).items() {
        let numbers = [port.get("port"), port.get("targetPort")];
        if let Some(number) = numbers
            .iter()
            .filter_map(|n| n.as_int())
            .find(|n| ADMIN_PORTS.contains(n))
        {
            report(
                &rules::K8S_EXPOSED_ADMIN_PORT,
                port.line,
                format!("exposes port {number} as {service_type}"),
            );
        }
    }
}
