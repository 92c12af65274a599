#!/usr/bin/env python3
"""palisade scan against checkov on the same generated corpus of Kubernetes manifests.

    bash bench/run.sh scan              # builds release, installs checkov from PyPI into bench/out/venv
    FILES=2000 ROUNDS=5 bash bench/run.sh scan

Generates FILES manifests (seeded, so every run scans the same corpus) mixing workloads of every kind
with insecure and secure settings, RBAC roles, bindings, Services and NetworkPolicies. Times each tool
(median of ROUNDS runs, misconfiguration checks only, JSON output), then compares findings rule by
rule on (file, kind, name) for the checks both tools have, and lists what only one of them checks.
"""
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
CORPUS = OUT / "scan-corpus"
PALISADE = Path(os.environ.get("PALISADE", ROOT / "target" / "release" / "palisade"))
FILES = int(os.environ.get("FILES", "1000"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))

# checkov check → the Palisade rule that checks the same thing.
PAIRS = {
    "CKV_K8S_16": "K8S001",  # privileged
    "CKV_K8S_20": "K8S002",  # allowPrivilegeEscalation
    "CKV_K8S_23": "K8S003",  # root containers
    "CKV_K8S_39": "K8S004",  # SYS_ADMIN (Palisade: a list of dangerous capabilities)
    "CKV_K8S_37": "K8S005",  # capabilities not dropped
    "CKV_K8S_19": "K8S006",  # hostNetwork
    "CKV_K8S_17": "K8S007",  # hostPID
    "CKV_K8S_18": "K8S008",  # hostIPC
    "CKV_K8S_27": "K8S010",  # docker socket (Palisade: every sensitive host path)
    "CKV_K8S_11": "K8S011",  # CPU limits (Palisade: CPU or memory in one rule)
    "CKV_K8S_13": "K8S011",  # memory limits
    "CKV_K8S_22": "K8S012",  # read-only root filesystem
    "CKV_K8S_14": "K8S013",  # latest / untagged image
    "CKV_K8S_38": "K8S015",  # service account token automount
    "CKV_K8S_31": "K8S016",  # seccomp
    "CKV_K8S_49": "K8S020",  # RBAC wildcards
}

KINDS = ["Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod"]
NAMESPACES = ["shop", "payments", "search", "batch", "edge"]


def maybe(p):
    return random.random() < p


def container(i):
    security = {}
    if maybe(0.08):
        security["privileged"] = True
    r = random.random()
    if r < 0.5:
        security["allowPrivilegeEscalation"] = False
    elif r < 0.6:
        security["allowPrivilegeEscalation"] = True
    if maybe(0.45):
        security["runAsNonRoot"] = True
    if maybe(0.05):
        security["runAsUser"] = 0
    elif maybe(0.3):
        security["runAsUser"] = 10001 + i % 100
    if maybe(0.5):
        security["readOnlyRootFilesystem"] = True
    caps = {}
    if maybe(0.5):
        caps["drop"] = ["ALL"]
    add = [c for c, p in (("SYS_ADMIN", 0.05), ("NET_ADMIN", 0.05), ("NET_BIND_SERVICE", 0.1)) if maybe(p)]
    if add:
        caps["add"] = add
    if caps:
        security["capabilities"] = caps
    if maybe(0.2):
        security["seccompProfile"] = {"type": "RuntimeDefault"}
    r = random.random()
    image = f"registry.example.com/app{i % 50}" + (":latest" if r < 0.1 else "" if r < 0.2 else f":1.{i % 9}.{i % 7}")
    c = {"name": f"app{i}", "image": image}
    limits = {}
    if maybe(0.7):
        limits["cpu"] = "500m"
    if maybe(0.7):
        limits["memory"] = "256Mi"
    if limits:
        c["resources"] = {"limits": limits, "requests": dict(limits)}
    if maybe(0.1):
        c["env"] = [{"name": "DB_PASSWORD", "value": f"pw-{i}-Xk9"}]
    elif maybe(0.2):
        c["env"] = [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]
    if security:
        c["securityContext"] = security
    return c


def pod_spec(i):
    spec = {"containers": [container(i)] + ([container(i + 10000)] if maybe(0.2) else [])}
    for key, p in (("hostNetwork", 0.05), ("hostPID", 0.03), ("hostIPC", 0.03)):
        if maybe(p):
            spec[key] = True
    if maybe(0.5):
        spec["serviceAccountName"] = f"sa{i}"
    if maybe(0.3):
        spec["automountServiceAccountToken"] = False
    if maybe(0.3):
        spec["securityContext"] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    volumes = []
    if maybe(0.03):
        volumes.append({"name": "docker", "hostPath": {"path": "/var/run/docker.sock"}})
    if maybe(0.05):
        volumes.append({"name": "logs", "hostPath": {"path": "/var/log"}})
    if volumes:
        spec["volumes"] = volumes
    return spec


def workload(i, kind, namespace):
    meta = {"name": f"w{i}", "namespace": namespace}
    spec = pod_spec(i)
    if kind == "Pod":
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}
    template = {"metadata": {"labels": {"app": f"w{i}"}}, "spec": spec}
    if kind == "Job":
        return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": {"template": template}}
    if kind == "CronJob":
        return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta,
                "spec": {"schedule": "0 * * * *", "jobTemplate": {"spec": {"template": template}}}}
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": meta,
            "spec": {"selector": {"matchLabels": {"app": f"w{i}"}}, "template": template}}


def extras(i, namespace):
    docs = []
    if maybe(0.15):
        verbs = ["*"] if maybe(0.3) else ["get", "list"]
        resources = ["*"] if maybe(0.2) else ["secrets"] if maybe(0.3) else ["configmaps"]
        docs.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                     "metadata": {"name": f"r{i}", "namespace": namespace},
                     "rules": [{"apiGroups": [""], "resources": resources, "verbs": verbs}]})
    if maybe(0.03):
        docs.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                     "metadata": {"name": f"b{i}"},
                     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                     "subjects": [{"kind": "Group", "name": f"g{i}"}]})
    if maybe(0.2):
        port = 22 if maybe(0.1) else 443
        docs.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"s{i}", "namespace": namespace},
                     "spec": {"type": random.choice(["ClusterIP", "NodePort", "LoadBalancer"]),
                              "ports": [{"port": port}]}})
    return docs


def generate():
    random.seed(20261123)
    if CORPUS.exists():
        shutil.rmtree(CORPUS)
    CORPUS.mkdir(parents=True)
    for i in range(FILES):
        namespace = random.choice(NAMESPACES)
        docs = [workload(i, random.choice(KINDS), namespace)] + extras(i, namespace)
        # JSON is YAML: both tools read the same bytes.
        text = "\n---\n".join(json.dumps(d, indent=2) for d in docs)
        (CORPUS / f"m{i:05}.yaml").write_text(text + "\n")
    # One namespace with a NetworkPolicy, so K8S023 fires for the other four only.
    (CORPUS / "netpol.yaml").write_text(json.dumps({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "deny", "namespace": "payments"}, "spec": {"podSelector": {}}}))


def timed(command):
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    return time.perf_counter() - start, result


def run_palisade():
    command = [str(PALISADE), "scan", str(CORPUS), "--skip", "secrets", "--skip", "vulnerabilities",
               "--format", "json", "--fail-on", "never"]
    times, output = [], None
    for _ in range(ROUNDS):
        elapsed, result = timed(command)
        times.append(elapsed)
        output = json.loads(result.stdout)
    return times, output


def checkov_binary():
    if os.environ.get("CHECKOV"):
        return Path(os.environ["CHECKOV"])
    venv = OUT / "venv"
    binary = venv / "bin" / "checkov"
    if not binary.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "checkov"], check=True)
    return binary


def run_checkov():
    binary = checkov_binary()
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True).stdout.strip()
    command = [str(binary), "-d", str(CORPUS), "--framework", "kubernetes", "-o", "json", "--quiet",
               "--compact", "--skip-download"]
    times, output = [], None
    for _ in range(ROUNDS):
        elapsed, result = timed(command)
        times.append(elapsed)
        output = json.loads(result.stdout)
    return version, times, output


def palisade_hits(report):
    hits = defaultdict(set)
    for finding in report["findings"]:
        kind_name = finding["message"].split(":", 1)[0]
        if "/" in kind_name:
            kind, name = kind_name.split("/", 1)
            hits[finding["rule"]].add((Path(finding["path"]).name, kind, name))
    return hits


def checkov_hits(report):
    hits = defaultdict(set)
    names = {}
    for block in report if isinstance(report, list) else [report]:
        for check in block["results"]["failed_checks"]:
            kind, _namespace, name = (check["resource"].split(".", 2) + ["", ""])[:3]
            hits[check["check_id"]].add((Path(check["file_path"]).name, kind, name))
            names[check["check_id"]] = check["check_name"]
    return hits, names


def main():
    generate()
    files = len(list(CORPUS.iterdir()))
    p_times, p_report = run_palisade()
    c_version, c_times, c_report = run_checkov()
    p_median, c_median = statistics.median(p_times), statistics.median(c_times)
    print(f"# palisade scan vs checkov — {time.strftime('%Y-%m-%d')}, {platform.node()}, "
          f"{os.cpu_count()} cores, {platform.platform()}")
    print(f"corpus: {files} files ({FILES} generated manifests + 1 NetworkPolicy), seed 20261123")
    print(f"palisade: median {p_median:.3f} s of {ROUNDS} ({files / p_median:,.0f} files/s)  runs {[round(t, 3) for t in p_times]}")
    print(f"checkov {c_version}: median {c_median:.2f} s of {ROUNDS} ({files / c_median:,.0f} files/s)  runs {[round(t, 2) for t in c_times]}")
    print(f"ratio: palisade is {c_median / p_median:.0f}x faster")
    ph = palisade_hits(p_report)
    ch, names = checkov_hits(c_report)
    print("\n| checkov | palisade | checkov finds | palisade finds | both | only checkov | only palisade |")
    print("|---|---|---|---|---|---|---|")
    grouped = defaultdict(set)
    for check, rule in PAIRS.items():
        grouped[rule] |= ch.get(check, set())
    for rule in sorted(set(PAIRS.values())):
        checks = "+".join(c for c, r in PAIRS.items() if r == rule)
        c, p = grouped[rule], ph.get(rule, set())
        print(f"| {checks} | {rule} | {len(c)} | {len(p)} | {len(c & p)} | {len(c - p)} | {len(p - c)} |")
    only_checkov = sorted(set(ch) - set(PAIRS))
    print("\nchecks only checkov has (objects flagged):")
    for check in only_checkov:
        print(f"  {check} {names[check]}: {len(ch[check])}")
    only_palisade = sorted(set(ph) - set(PAIRS.values()))
    print("rules only palisade has (objects flagged):")
    for rule in only_palisade:
        print(f"  {rule}: {len(ph[rule])}")
    for title, left, right in (("checkov flags and palisade does not", grouped, ph),
                               ("palisade flags and checkov does not", ph, grouped)):
        samples = {rule: sorted(left.get(rule, set()) - right.get(rule, set()))[:3] for rule in sorted(set(PAIRS.values()))}
        samples = {rule: diff for rule, diff in samples.items() if diff}
        if samples:
            print(f"\nsamples {title}:")
            for rule, diff in samples.items():
                print(f"  {rule}: {diff}")


if __name__ == "__main__":
    main()
