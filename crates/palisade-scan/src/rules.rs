//! The rule table: every misconfiguration and secret rule as data. The checks refer to these
//! constants, SARIF's `rules` array and `docs/scan-rules.md` are generated from [`ALL`], so the
//! documentation cannot drift from what the scanner reports.

use crate::finding::Severity;
use Severity::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Dockerfile,
    Kubernetes,
    PalisadeConfig,
    Secret,
    Image,
}

impl Target {
    pub fn heading(self) -> &'static str {
        match self {
            Self::Dockerfile => "Dockerfile",
            Self::Kubernetes => "Kubernetes",
            Self::PalisadeConfig => "Palisade configuration",
            Self::Secret => "Secrets",
            Self::Image => "Container images",
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct Rule {
    pub id: &'static str,
    pub target: Target,
    pub severity: Severity,
    pub title: &'static str,
    pub rationale: &'static str,
    pub remediation: &'static str,
}

macro_rules! rules {
    ($($name:ident = $id:literal, $target:ident, $severity:ident, $title:literal, $rationale:literal, $remediation:literal;)*) => {
        $(pub static $name: Rule = Rule {
            id: $id,
            target: Target::$target,
            severity: $severity,
            title: $title,
            rationale: $rationale,
            remediation: $remediation,
        };)*
        /// Every rule, in documentation order.
        pub static ALL: &[&Rule] = &[$(&$name),*];
    };
}

rules! {
    DOCKER_RUNS_AS_ROOT = "DF001", Dockerfile, High, "Container runs as root",
        "Without a USER instruction (or with USER root/0 last) the process runs as root: a code-execution bug in the service becomes root in the container, one kernel or runtime flaw away from the host.",
        "Add `USER <non-root name or uid>` after the last step that needs root, e.g. `USER 10001:10001`.";
    DOCKER_UNPINNED_TAG = "DF002", Dockerfile, Medium, "Base image uses `latest` or no tag",
        "`latest` and untagged images change under you: builds are not reproducible and a compromised or broken upstream image is pulled silently.",
        "Name an explicit version tag (`FROM debian:12.8-slim`), ideally with a digest.";
    DOCKER_NO_DIGEST = "DF003", Dockerfile, Info, "Base image not pinned by digest",
        "A tag can be moved to different content; only a digest names exactly the bytes you reviewed.",
        "Append the digest: `FROM debian:12.8-slim@sha256:…` and let a bot update it.";
    DOCKER_SECRET_IN_ENV = "DF004", Dockerfile, High, "Secret value in ENV or ARG",
        "ENV values are stored in the image config and ARG values in the build history: anyone who can pull the image can read them.",
        "Pass secrets at run time (orchestrator secrets) or at build time with `RUN --mount=type=secret`.";
    DOCKER_SECRET_BUILD_ARG = "DF005", Dockerfile, Medium, "Secret passed as a build argument",
        "A build argument's value is recorded in `docker history` for every RUN that uses it, even without a default in the Dockerfile.",
        "Use BuildKit secret mounts: `RUN --mount=type=secret,id=token …`.";
    DOCKER_ADD_REMOTE = "DF006", Dockerfile, Medium, "ADD fetches a remote URL",
        "ADD downloads without verifying integrity and the result is cached by URL, not content.",
        "Download with curl and verify a checksum in the same RUN, or use `ADD --checksum=sha256:…`.";
    DOCKER_PIPE_TO_SHELL = "DF007", Dockerfile, High, "Remote script piped into a shell",
        "`curl … | sh` runs whatever the server returns at build time, with no integrity check.",
        "Download the script, verify its checksum or signature, then run it.";
    DOCKER_UNPINNED_PACKAGES = "DF008", Dockerfile, Low, "Packages installed without version pins",
        "Unpinned installs make builds non-reproducible and pull whatever the mirror serves that day.",
        "Pin versions (`apt-get install curl=7.88.1-10+deb12u8`, `apk add curl=8.5.0-r0`, `pip install x==1.2`).";
    DOCKER_SUDO = "DF009", Dockerfile, Medium, "sudo used in a build step",
        "Build steps already run as the current USER; sudo in an image means a setuid-root binary and a sudoers policy that outlive the build.",
        "Run root steps before `USER`, and do not install sudo in the image.";
    DOCKER_NO_HEALTHCHECK = "DF010", Dockerfile, Low, "No HEALTHCHECK",
        "Without a health check a hung process keeps receiving traffic until someone notices.",
        "Add `HEALTHCHECK CMD …` (or rely on orchestrator probes and suppress this rule with a reason).";
    DOCKER_EXPOSES_SSH = "DF011", Dockerfile, Medium, "SSH port exposed",
        "An SSH server in a container is an extra, long-lived credential surface; containers are entered with `exec`, not SSH.",
        "Remove the SSH server and `EXPOSE 22`.";
    DOCKER_VERIFICATION_OFF = "DF012", Dockerfile, High, "TLS or signature verification turned off",
        "`curl -k`, `wget --no-check-certificate`, `pip --trusted-host`, `--nogpgcheck`, `apk --allow-untrusted`, `npm config set strict-ssl false` or `git -c http.sslVerify=false` accept whatever a man in the middle serves, into the image.",
        "Trust the right CA instead (copy it into the image and update the trust store), and keep signature checks on.";

    K8S_PRIVILEGED = "K8S001", Kubernetes, Critical, "Privileged container",
        "A privileged container has every capability and access to the host's devices: it is root on the node.",
        "Remove `privileged: true`; grant the specific capability needed instead.";
    K8S_PRIVILEGE_ESCALATION = "K8S002", Kubernetes, Medium, "Privilege escalation not disabled",
        "Unless `allowPrivilegeEscalation: false`, a process can gain privileges through setuid binaries.",
        "Set `securityContext.allowPrivilegeEscalation: false` on every container.";
    K8S_RUNS_AS_ROOT = "K8S003", Kubernetes, Medium, "Container may run as root",
        "Without `runAsNonRoot: true` (or with `runAsUser: 0`) the container runs as root whenever the image says so.",
        "Set `runAsNonRoot: true` and a non-zero `runAsUser` in the pod or container securityContext.";
    K8S_DANGEROUS_CAPABILITY = "K8S004", Kubernetes, High, "Dangerous capability added",
        "Capabilities such as SYS_ADMIN, NET_ADMIN, SYS_PTRACE, SYS_MODULE or NET_RAW give a container powers over the node or its network.",
        "Remove the capability from `capabilities.add`; redesign what needs it.";
    K8S_CAPABILITIES_NOT_DROPPED = "K8S005", Kubernetes, Low, "Capabilities not dropped",
        "The runtime's default capability set (including NET_RAW) stays unless the container drops ALL.",
        "Set `capabilities.drop: [ALL]` and add back only what the process needs.";
    K8S_HOST_NETWORK = "K8S006", Kubernetes, High, "Host network namespace shared",
        "With `hostNetwork: true` the pod sees every interface of the node and can bind its ports, bypassing NetworkPolicies.",
        "Remove `hostNetwork: true`.";
    K8S_HOST_PID = "K8S007", Kubernetes, High, "Host PID namespace shared",
        "With `hostPID: true` the pod sees and can signal every process on the node.",
        "Remove `hostPID: true`.";
    K8S_HOST_IPC = "K8S008", Kubernetes, High, "Host IPC namespace shared",
        "With `hostIPC: true` the pod can read the node's shared memory.",
        "Remove `hostIPC: true`.";
    K8S_HOST_PATH = "K8S009", Kubernetes, Medium, "hostPath volume",
        "A hostPath volume exposes part of the node's filesystem to the pod.",
        "Use emptyDir, a ConfigMap/Secret or a PersistentVolume instead.";
    K8S_SENSITIVE_HOST_PATH = "K8S010", Kubernetes, Critical, "Sensitive host path mounted",
        "Mounting `/`, `/etc`, `/proc`, `/root`, `/var/lib/kubelet` or a container runtime socket hands the node to the pod.",
        "Remove the mount; talk to the runtime through an API with its own authorization.";
    K8S_NO_LIMITS = "K8S011", Kubernetes, Low, "No CPU or memory limit",
        "A container without limits can starve its neighbours on the node (a denial of service from one bug or one attacker).",
        "Set `resources.limits.cpu` and `resources.limits.memory`.";
    K8S_WRITABLE_ROOT_FS = "K8S012", Kubernetes, Low, "Root filesystem writable",
        "A writable root filesystem lets an intruder drop tools and persist changes inside the container.",
        "Set `readOnlyRootFilesystem: true`; mount an emptyDir where the process must write.";
    K8S_UNPINNED_IMAGE = "K8S013", Kubernetes, Medium, "Image uses `latest` or no tag",
        "`latest` and untagged images make rollouts non-reproducible and roll back to unknown content.",
        "Name an explicit tag, ideally with a digest (`image: registry/app:1.4.2@sha256:…`).";
    K8S_SECRET_IN_ENV = "K8S014", Kubernetes, High, "Secret in an environment value",
        "A literal value in `env` is stored in the manifest, in etcd unencrypted and in every `kubectl get -o yaml`.",
        "Use `valueFrom.secretKeyRef` (and a secret manager) instead of `value:`.";
    K8S_DEFAULT_SERVICE_ACCOUNT = "K8S015", Kubernetes, Low, "Default service account token mounted",
        "Pods on the default service account with an automounted token carry API credentials they rarely need.",
        "Set `automountServiceAccountToken: false`, or give the workload its own service account.";
    K8S_NO_SECCOMP = "K8S016", Kubernetes, Low, "No seccomp profile",
        "Without a seccomp profile every system call is open to the container (Unconfined on most runtimes).",
        "Set `securityContext.seccompProfile.type: RuntimeDefault` on the pod.";
    K8S_RBAC_WILDCARD = "K8S020", Kubernetes, High, "RBAC rule grants `*`",
        "A `*` verb, resource or API group grants everything, including what is added to the API later.",
        "List the verbs and resources the subject needs.";
    K8S_RBAC_SECRETS = "K8S021", Kubernetes, Medium, "RBAC rule reads secrets",
        "get/list/watch on secrets reads every credential in the namespace (or cluster).",
        "Restrict with `resourceNames`, or redesign so the subject does not read secrets.";
    K8S_CLUSTER_ADMIN_BINDING = "K8S022", Kubernetes, High, "Binding to cluster-admin",
        "cluster-admin is unrestricted control of the cluster.",
        "Bind a role with only the permissions needed.";
    K8S_NO_NETWORK_POLICY = "K8S023", Kubernetes, Medium, "Workload no NetworkPolicy selects",
        "Without a NetworkPolicy whose podSelector matches its pods, every pod in the cluster can reach the workload, and it can reach anything.",
        "Add a default-deny NetworkPolicy for the namespace (`podSelector: {}`) and allow the flows you need.";
    K8S_EXPOSED_ADMIN_PORT = "K8S024", Kubernetes, High, "Admin port exposed outside the cluster",
        "A NodePort or LoadBalancer Service on an administrative port (SSH, Docker, kubelet, etcd, Envoy or Palisade admin…) publishes it to the network.",
        "Expose admin ports as ClusterIP only and reach them through `kubectl port-forward` or a bastion.";
    K8S_HOST_PORT = "K8S025", Kubernetes, Medium, "Host port bound",
        "A `hostPort` binds the node's own interface: it bypasses Services and NetworkPolicies and pins the pod to nodes with the port free (Pod Security baseline).",
        "Remove `hostPort` and expose the port through a Service.";
    K8S_UNSAFE_SYSCTL = "K8S026", Kubernetes, High, "Unsafe sysctl",
        "Sysctls outside the namespaced safe set change the kernel for every pod on the node (Pod Security baseline).",
        "Use only the safe sysctls (`net.ipv4.ip_local_port_range`, `net.ipv4.ping_group_range`…), or tune the node instead.";
    K8S_UNMASKED_PROC = "K8S027", Kubernetes, High, "Unmasked /proc",
        "`procMount: Unmasked` exposes the host's kernel interfaces under /proc that the runtime normally masks (Pod Security baseline).",
        "Remove `procMount`, or set it to `Default`.";
    K8S_SELINUX_OPTIONS = "K8S028", Kubernetes, Medium, "Custom SELinux user, role or type",
        "An SELinux user, role or a type other than the container types (`container_t`, `container_init_t`, `container_kvm_t`, `container_engine_t`) can lift the container's confinement (Pod Security baseline).",
        "Remove `seLinuxOptions.user`/`role`, and use one of the container types.";
    K8S_APPARMOR_UNCONFINED = "K8S029", Kubernetes, Medium, "AppArmor turned off",
        "An `Unconfined` AppArmor profile (field or `container.apparmor.security.beta.kubernetes.io` annotation) removes the runtime's default confinement (Pod Security baseline).",
        "Use `RuntimeDefault` or a `Localhost` profile.";
    K8S_SECCOMP_UNCONFINED = "K8S030", Kubernetes, High, "Seccomp turned off",
        "An `Unconfined` seccomp profile (field or legacy `seccomp.security.alpha.kubernetes.io` annotation) lets the container make every system call (Pod Security baseline).",
        "Use `seccompProfile: {type: RuntimeDefault}` or a `Localhost` profile.";
    K8S_VOLUME_TYPE = "K8S031", Kubernetes, Low, "Volume type outside the restricted profile",
        "Pod Security restricted allows only configMap, csi, downwardAPI, emptyDir, ephemeral, persistentVolumeClaim, projected and secret volumes; others (nfs, iscsi, rbd, gitRepo…) reach node or network storage directly.",
        "Use a PersistentVolumeClaim (the volume type belongs to the PersistentVolume).";
    K8S_RESTRICTED_CAPABILITY = "K8S032", Kubernetes, Low, "Capability beyond the restricted profile",
        "Pod Security restricted allows adding only NET_BIND_SERVICE.",
        "Drop the capability, or run the workload under the baseline profile knowingly.";
    K8S_NO_PROBES = "K8S033", Kubernetes, Low, "No liveness or readiness probe",
        "Without probes a hung or not-yet-ready container keeps receiving traffic and is never restarted.",
        "Add `readinessProbe` and `livenessProbe` (or a `startupProbe` for slow starts).";
    K8S_NO_REQUESTS = "K8S034", Kubernetes, Low, "No CPU or memory request",
        "Without requests the scheduler places the pod blind, and it is the first to be evicted under pressure.",
        "Set `resources.requests.cpu` and `resources.requests.memory`.";
    K8S_RBAC_ESCALATION = "K8S035", Kubernetes, High, "RBAC escalation path",
        "`bind`, `escalate` and `impersonate`, `pods/exec`, `pods/attach`, `nodes/proxy` and `serviceaccounts/token` let the subject gain permissions it was not granted.",
        "Remove the verb or resource; grant the specific permissions needed instead.";
    K8S_HOST_PROCESS = "K8S036", Kubernetes, High, "Windows HostProcess container",
        "A HostProcess container runs as a process on the Windows node, with the node's privileges (Pod Security baseline).",
        "Remove `windowsOptions.hostProcess`.";

    PALISADE_PUBLIC_SENSITIVE_ROUTE = "PAL001", PalisadeConfig, High, "Sensitive path is public",
        "A route marked `public: true` whose path looks administrative (admin, internal, debug, actuator, metrics…) is reachable without credentials.",
        "Remove `public: true` and add `authentication` and `authorization`.";
    PALISADE_PUBLIC_CATCH_ALL = "PAL002", PalisadeConfig, Medium, "Catch-all route is public",
        "A public route on prefix `/` answers every path no other route claims: a new upstream endpoint becomes public without anyone deciding so.",
        "Make the catch-all route authenticated, or list the public paths one by one.";
    PALISADE_WEAK_HMAC_SECRET = "PAL003", PalisadeConfig, High, "HMAC JWT secret short or inline",
        "An HS256 secret shorter than 32 bytes can be brute-forced offline from one token; one written in the file is leaked with it.",
        "Use asymmetric keys (JWKS), or a `${ENV}`/`file:` secret of at least 32 random bytes.";
    PALISADE_CORS_WILDCARD_CREDENTIALS = "PAL004", PalisadeConfig, High, "CORS `*` with credentials",
        "Allowing any origin together with credentials lets every website call the API as the logged-in user.",
        "List the exact origins that need credentials.";
    PALISADE_PUBLIC_ADMIN = "PAL005", PalisadeConfig, High, "Admin listener on a public address",
        "The admin listener serves metrics, alerts and response controls; on a non-loopback address it is reachable from the network.",
        "Bind `admin.address` to 127.0.0.1 (or a pod-local address) and scrape through a sidecar or port-forward.";
    PALISADE_UNLIMITED_AUTH_ENDPOINT = "PAL006", PalisadeConfig, Medium, "Authentication endpoint without rate limit",
        "Login, token and password endpoints without a rate limit invite credential stuffing and brute force.",
        "Add a `rate_limits` entry keyed by `client_ip` to the route.";

    SECRET_AWS_ACCESS_KEY = "SEC001", Secret, High, "AWS access key id",
        "An AWS access key id; with its secret key it signs API calls as its IAM user.",
        "Revoke the key in IAM, then load credentials from the environment or an instance role.";
    SECRET_AWS_SECRET_KEY = "SEC002", Secret, Critical, "AWS secret access key",
        "An AWS secret access key signs API calls as its IAM user.",
        "Revoke the key in IAM now; use roles or a secret manager.";
    SECRET_GITHUB_TOKEN = "SEC003", Secret, Critical, "GitHub token",
        "A GitHub personal, OAuth, app or fine-grained token acts as its owner on GitHub.",
        "Revoke it at github.com/settings/tokens; use the CI's own token or a secret store.";
    SECRET_GITLAB_TOKEN = "SEC004", Secret, Critical, "GitLab token",
        "A GitLab personal access token acts as its owner.",
        "Revoke it in GitLab's access token settings.";
    SECRET_SLACK_TOKEN = "SEC005", Secret, High, "Slack token or webhook",
        "A Slack bot/user token or incoming webhook URL posts (and may read) as the workspace app.",
        "Revoke it in the Slack app settings.";
    SECRET_STRIPE_KEY = "SEC006", Secret, Critical, "Stripe live secret key",
        "A Stripe live secret or restricted key moves real money.",
        "Roll the key in the Stripe dashboard.";
    SECRET_PRIVATE_KEY = "SEC007", Secret, Critical, "Private key",
        "A PEM private key lets its holder impersonate the certificate's owner or decrypt its traffic.",
        "Replace the key pair, revoke the certificate, and keep keys out of source and images.";
    SECRET_JWT = "SEC008", Secret, Medium, "JSON Web Token",
        "A JWT is a bearer credential until it expires; committed tokens often never do.",
        "Remove it; if it was issued by a real issuer, revoke its signing key or session.";
    SECRET_GOOGLE_API_KEY = "SEC009", Secret, High, "Google API key",
        "A Google Cloud API key bills and authorizes calls to the APIs it is enabled for.",
        "Delete or restrict the key in the Cloud console.";
    SECRET_GENERIC_ASSIGNMENT = "SEC010", Secret, Medium, "High-entropy value assigned to a secret name",
        "A random-looking value assigned to `password`, `secret`, `token`, `api_key` and the like is most likely a real credential.",
        "Move it to a secret store and reference it (`${ENV}`, `secretKeyRef`); rotate it.";
    SECRET_AZURE_STORAGE_KEY = "SEC011", Secret, Critical, "Azure storage account key",
        "An Azure storage connection string's `AccountKey` reads and writes every blob, queue and table of the account.",
        "Rotate the key in the storage account; use a managed identity or a SAS with an expiry.";
    SECRET_SENDGRID_KEY = "SEC012", Secret, High, "SendGrid API key",
        "A SendGrid API key sends mail as the account (phishing from a trusted domain).",
        "Delete the key in SendGrid's API key settings.";
    SECRET_URL_PASSWORD = "SEC013", Secret, High, "Password in a URL",
        "`scheme://user:password@host` carries the password wherever the URL goes: logs, process lists, error messages.",
        "Take the password from a secret (an environment variable or a mounted file) and build the URL at runtime.";

    IMAGE_RUNS_AS_ROOT = "IMG001", Image, High, "Image runs as root",
        "The image config has no `User` (or `root`/0): containers run as root unless the orchestrator overrides it.",
        "Set `USER` in the Dockerfile's final stage.";
    IMAGE_SECRET_IN_ENV = "IMG002", Image, High, "Secret in the image environment",
        "Environment values in the image config are readable by anyone who can pull the image.",
        "Inject secrets at run time instead of baking them into the image.";
    IMAGE_EXPOSES_SSH = "IMG003", Image, Medium, "Image exposes SSH",
        "The image declares port 22: an SSH server in a container is a long-lived credential surface.",
        "Remove the SSH server from the image.";
}

pub fn find(id: &str) -> Option<&'static Rule> {
    ALL.iter().copied().find(|rule| rule.id == id)
}

/// `docs/scan-rules.md`, generated from the table (`palisade scan --list-rules markdown`); a test
/// checks that the committed file is up to date.
pub fn markdown() -> String {
    let mut out = String::from(
        "# Scan rules\n\n<!-- Generated from crates/palisade-scan/src/rules.rs by `palisade scan --list-rules markdown`. \
         Do not edit by hand: a test compares this file with the rule table. -->\n\n\
         `palisade scan` reports the rules below, plus one finding per known-vulnerable package (rule id = the \
         OSV advisory id, severity from the advisory). See [scan.md](scan.md) for usage.\n",
    );
    let mut target = None;
    for rule in ALL {
        if target != Some(rule.target) {
            target = Some(rule.target);
            out.push_str(&format!(
                "\n## {}\n\n| id | severity | title |\n|---|---|---|\n",
                rule.target.heading()
            ));
            for same in ALL.iter().filter(|r| r.target == rule.target) {
                out.push_str(&format!(
                    "| [{}](#{}) | {} | {} |\n",
                    same.id,
                    same.id.to_ascii_lowercase(),
                    same.severity,
                    same.title
                ));
            }
        }
        out.push_str(&format!(
            "\n### {}\n\n**{}** · {}\n\n{}\n\n*Fix:* {}\n",
            rule.id, rule.title, rule.severity, rule.rationale, rule.remediation
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique() {
        let mut ids: Vec<_> = ALL.iter().map(|r| r.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), ALL.len());
    }
}
