//! Kubernetes manifest rules (K8S0xx): workloads, RBAC, Services, and one rule across the whole
//! scan (namespaces with workloads but no NetworkPolicy).

use std::collections::BTreeMap;

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

/// (namespace, pod labels, path, line, description) of a workload.
type SeenWorkload = (String, BTreeMap<String, String>, String, usize, String);

/// What the whole scan saw of workloads and NetworkPolicies, for K8S023 (a workload no policy's
/// podSelector selects).
#[derive(Default)]
pub struct Namespaces {
    workloads: Vec<SeenWorkload>,
    /// (namespace, podSelector) of each NetworkPolicy.
    policies: Vec<(String, Node)>,
}

impl Namespaces {
    pub fn findings(&self) -> Vec<Finding> {
        self.workloads
            .iter()
            .filter(|(namespace, labels, ..)| {
                !self
                    .policies
                    .iter()
                    .any(|(policy_namespace, selector)| policy_namespace == namespace && selects(selector, labels))
            })
            .map(|(namespace, _, path, line, what)| {
                let policies = self.policies.iter().filter(|(n, _)| n == namespace).count();
                let message = if policies == 0 {
                    format!("{what}: namespace `{namespace}` has no NetworkPolicy in the scanned files")
                } else {
                    format!("{what}: no NetworkPolicy of namespace `{namespace}` selects its pods ({policies} checked)")
                };
                Finding::of(&rules::K8S_NO_NETWORK_POLICY, path, *line, message)
            })
            .collect()
    }
}

/// A label selector (`matchLabels`, `matchExpressions`) against a pod's labels; `{}` selects all.
fn selects(selector: &Node, labels: &BTreeMap<String, String>) -> bool {
    let match_labels = selector
        .get("matchLabels")
        .entries()
        .iter()
        .all(|(key, value)| labels.get(key).map(String::as_str) == value.text().as_deref());
    let match_expressions = selector.get("matchExpressions").items().iter().all(|expression| {
        let key = expression.get("key").as_str().unwrap_or_default();
        let values = strings(expression.get("values"));
        let value = labels.get(key);
        match expression.get("operator").as_str().unwrap_or_default() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    match_labels && match_expressions
}

/// The metadata of a workload's pods: a Pod's own, or its pod template's.
fn pod_metadata<'a>(object: &'a Node, kind: &str) -> &'a Node {
    match kind {
        "Pod" => object.get("metadata"),
        "PodTemplate" => object.at(&["template", "metadata"]),
        _ => {
            let direct = object.at(&["spec", "template", "metadata"]);
            if direct.is_present() {
                direct
            } else {
                object.at(&["spec", "jobTemplate", "spec", "template", "metadata"])
            }
        }
    }
}

/// The labels of a workload's pods, as NetworkPolicy selectors see them.
fn pod_labels(object: &Node, kind: &str) -> BTreeMap<String, String> {
    pod_metadata(object, kind)
        .get("labels")
        .entries()
        .iter()
        .filter_map(|(key, value)| Some((key.clone(), value.text()?)))
        .collect()
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
            namespaces.workloads.push((
                namespace,
                pod_labels(object, kind),
                path.to_string(),
                object.line,
                what.clone(),
            ));
            let runs_to_completion = kind == "Job" || object.at(&["spec", "jobTemplate"]).is_present();
            let workload = Workload {
                // AppArmor and legacy seccomp profiles live in the pods' annotations.
                annotations: pod_metadata(object, kind).get("annotations"),
                // Jobs and bare Pods run to completion or are managed by hand: no probes expected.
                long_running: !runs_to_completion && kind != "Pod",
            };
            check_pod(pod, object.line, &workload, &mut report);
            continue;
        }
        match kind {
            "NetworkPolicy" => {
                namespaces
                    .policies
                    .push((namespace, object.at(&["spec", "podSelector"]).clone()));
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

/// Host paths that are the node itself: the path or anything under it (the runtime sockets in
/// `/var/run` and `/run/containerd`, the kubelet's credentials, the API server's certificates).
const SENSITIVE_HOST_PREFIXES: &[&str] = &[
    "/etc",
    "/proc",
    "/sys",
    "/root",
    "/boot",
    "/dev",
    "/home",
    "/var/run",
    "/run",
    "/var/lib/kubelet",
    "/var/lib/docker",
    "/var/lib/containerd",
    "/var/lib/etcd",
    "/var/log",
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
];

fn is_sensitive_host_path(path: &str) -> bool {
    // `/var/run/../../etc` and `//etc/` are the same paths as the kubelet resolves them.
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    let normalized = format!("/{}", parts.join("/"));
    normalized == "/"
        || SENSITIVE_HOST_PREFIXES
            .iter()
            .any(|prefix| normalized == *prefix || normalized.starts_with(&format!("{prefix}/")))
}

/// Capabilities Pod Security baseline allows a container to add; anything else is K8S004.
const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Sysctls Pod Security baseline calls safe (namespaced, no effect on other pods).
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// Volume types Pod Security restricted allows.
const RESTRICTED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

const CONTAINER_SELINUX_TYPES: &[&str] = &[
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

/// What the pod's object says beyond its spec.
struct Workload<'a> {
    annotations: &'a Node,
    long_running: bool,
}

fn check_pod(pod: &Node, object_line: usize, workload: &Workload<'_>, report: &mut impl FnMut(&Rule, usize, String)) {
    let pod_line = pod.line_or(object_line);
    check_pod_security(pod, pod_line, workload, report);
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
            if is_sensitive_host_path(path) {
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
            check_container(container, pod_security, workload, report);
            if list == "containers" && workload.long_running {
                check_probes(container, report);
            }
        }
    }
}

/// Pod Security baseline and restricted controls that are not about one container alone.
fn check_pod_security(
    pod: &Node,
    pod_line: usize,
    workload: &Workload<'_>,
    report: &mut impl FnMut(&Rule, usize, String),
) {
    let security = pod.get("securityContext");
    for sysctl in security.get("sysctls").items() {
        let name = sysctl.get("name");
        if let Some(text) = name.as_str() {
            if !SAFE_SYSCTLS.contains(&text) {
                report(&rules::K8S_UNSAFE_SYSCTL, name.line, format!("sets sysctl {text}"));
            }
        }
    }
    for volume in pod.get("volumes").items() {
        let kind = volume
            .entries()
            .iter()
            .map(|(key, _)| key.as_str())
            .find(|key| *key != "name");
        // hostPath has rules of its own (K8S009/K8S010).
        if let Some(kind) = kind.filter(|k| *k != "hostPath" && !RESTRICTED_VOLUMES.contains(k)) {
            let name = volume.get("name").as_str().unwrap_or("(unnamed)");
            report(
                &rules::K8S_VOLUME_TYPE,
                volume.line,
                format!("volume `{name}` is of type {kind}"),
            );
        }
    }
    for (key, value) in workload.annotations.entries() {
        let text = value.as_str().unwrap_or_default();
        if key.starts_with("container.apparmor.security.beta.kubernetes.io/") && text == "unconfined" {
            report(
                &rules::K8S_APPARMOR_UNCONFINED,
                value.line,
                format!("annotation {key}: unconfined"),
            );
        }
        if (key == "seccomp.security.alpha.kubernetes.io/pod"
            || key.starts_with("container.seccomp.security.alpha.kubernetes.io/"))
            && text == "unconfined"
        {
            report(
                &rules::K8S_SECCOMP_UNCONFINED,
                value.line,
                format!("annotation {key}: unconfined"),
            );
        }
    }
    check_security_context_profiles(security, pod_line, "the pod", report);
}

/// seccomp, AppArmor, SELinux, procMount and HostProcess settings of a pod's or container's
/// securityContext.
fn check_security_context_profiles(
    security: &Node,
    line: usize,
    who: &str,
    report: &mut impl FnMut(&Rule, usize, String),
) {
    let seccomp = security.at(&["seccompProfile", "type"]);
    if seccomp.as_str() == Some("Unconfined") {
        report(
            &rules::K8S_SECCOMP_UNCONFINED,
            seccomp.line,
            format!("{who} sets seccompProfile Unconfined"),
        );
    }
    let apparmor = security.at(&["appArmorProfile", "type"]);
    if apparmor.as_str() == Some("Unconfined") {
        report(
            &rules::K8S_APPARMOR_UNCONFINED,
            apparmor.line,
            format!("{who} sets appArmorProfile Unconfined"),
        );
    }
    let selinux = security.get("seLinuxOptions");
    for key in ["user", "role"] {
        let value = selinux.get(key);
        if value.is_present() {
            report(
                &rules::K8S_SELINUX_OPTIONS,
                value.line,
                format!("{who} sets seLinuxOptions.{key}"),
            );
        }
    }
    let selinux_type = selinux.get("type");
    if let Some(kind) = selinux_type.as_str() {
        if !CONTAINER_SELINUX_TYPES.contains(&kind) {
            report(
                &rules::K8S_SELINUX_OPTIONS,
                selinux_type.line,
                format!("{who} sets seLinuxOptions.type {kind}"),
            );
        }
    }
    let proc_mount = security.get("procMount");
    if proc_mount.as_str().is_some_and(|p| p != "Default") {
        report(
            &rules::K8S_UNMASKED_PROC,
            proc_mount.line,
            format!("{who} sets procMount {}", proc_mount.as_str().unwrap_or_default()),
        );
    }
    let host_process = security.at(&["windowsOptions", "hostProcess"]);
    if host_process.as_bool() == Some(true) {
        report(
            &rules::K8S_HOST_PROCESS,
            host_process.line.max(line),
            format!("{who} is a Windows HostProcess container"),
        );
    }
}

fn check_probes(container: &Node, report: &mut impl FnMut(&Rule, usize, String)) {
    let name = container.get("name").as_str().unwrap_or("(unnamed)");
    let missing: Vec<&str> = ["livenessProbe", "readinessProbe"]
        .into_iter()
        .filter(|probe| !container.get(probe).is_present())
        .collect();
    if !missing.is_empty() {
        report(
            &rules::K8S_NO_PROBES,
            container.line,
            format!("container `{name}` has no {}", missing.join(" or ")),
        );
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

fn check_container(
    container: &Node,
    pod_security: &Node,
    workload: &Workload<'_>,
    report: &mut impl FnMut(&Rule, usize, String),
) {
    let name = container.get("name").as_str().unwrap_or("(unnamed)");
    let line = container.line;
    let security = container.get("securityContext");
    check_security_context_profiles(security, line, &format!("container `{name}`"), report);
    for port in container.get("ports").items() {
        let host_port = port.get("hostPort");
        if host_port.as_int().is_some_and(|p| p != 0) {
            report(
                &rules::K8S_HOST_PORT,
                host_port.line,
                format!(
                    "container `{name}` binds hostPort {}",
                    host_port.as_int().unwrap_or_default()
                ),
            );
        }
    }
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
        if DANGEROUS_CAPABILITIES.contains(&cap) || !BASELINE_CAPABILITIES.contains(&cap) {
            say(
                &rules::K8S_DANGEROUS_CAPABILITY,
                added.line,
                &format!("adds capability {cap}"),
            );
        } else if cap != "NET_BIND_SERVICE" {
            say(
                &rules::K8S_RESTRICTED_CAPABILITY,
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
    let requests = container.at(&["resources", "requests"]);
    let missing_requests: Vec<&str> = ["cpu", "memory"]
        .into_iter()
        // A limit without a request makes the request equal to the limit.
        .filter(|k| !requests.get(k).is_present() && !limits.get(k).is_present())
        .collect();
    if !missing_requests.is_empty() {
        say(
            &rules::K8S_NO_REQUESTS,
            requests.line_or(line),
            &format!("has no {} request", missing_requests.join(" or ")),
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
    // The legacy annotations still count where the field is not set.
    let annotated = |key: &str| {
        workload
            .annotations
            .get(key)
            .as_str()
            .is_some_and(|v| v == "runtime/default" || v == "docker/default" || v.starts_with("localhost/"))
    };
    let by_annotation = !seccomp.is_present()
        && (annotated(&format!("container.seccomp.security.alpha.kubernetes.io/{name}"))
            || annotated("seccomp.security.alpha.kubernetes.io/pod"));
    if !matches!(seccomp.as_str(), Some("RuntimeDefault" | "Localhost"))
        && !by_annotation
        && seccomp.as_str() != Some("Unconfined")
    {
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
        let groups = strings(rule.get("apiGroups"));
        if verbs.iter().any(|v| v == "*") || resources.iter().any(|r| r == "*") || groups.iter().any(|g| g == "*") {
            report(
                &rules::K8S_RBAC_WILDCARD,
                rule.line,
                format!(
                    "grants verbs [{}] on [{}] in API groups [{}]",
                    verbs.join(", "),
                    resources.join(", "),
                    groups.join(", ")
                ),
            );
            continue;
        }
        let escalation = verbs
            .iter()
            .filter(|v| matches!(v.as_str(), "bind" | "escalate" | "impersonate"))
            .map(|v| v.to_string())
            .chain(
                resources
                    .iter()
                    .filter(|r| {
                        matches!(
                            r.as_str(),
                            "pods/exec" | "pods/attach" | "nodes/proxy" | "serviceaccounts/token"
                        )
                    })
                    .map(|r| r.to_string()),
            )
            .collect::<Vec<_>>();
        if !escalation.is_empty() {
            report(
                &rules::K8S_RBAC_ESCALATION,
                rule.line,
                format!(
                    "grants {} (verbs [{}] on [{}])",
                    escalation.join(", "),
                    verbs.join(", "),
                    resources.join(", ")
                ),
            );
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
