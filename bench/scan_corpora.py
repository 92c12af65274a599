#!/usr/bin/env python3
"""Precision and recall of `palisade scan` on checkov's own labelled test inputs, beside checkov.

    python3 bench/scan_corpora.py                     # reads ../shared/corpora/checkov (skips if absent)
    PALISADE=target/release/palisade CHECKOV=bench/out/venv/bin/checkov python3 bench/scan_corpora.py

checkov's tests name their inputs `*-FAILED*` / `*-PASSED*` (Kubernetes) or put them under
`failure*/` / `success*/` (Dockerfiles). For each checkov check that a Palisade rule covers, every
labelled file of that check's directory is scanned by both tools; a file is a positive for a tool when
the tool reports the check (checkov: that check id failed; Palisade: one of the mapped rules fired).
Precision and recall are measured against the labels, which are checkov's expectations, not truth:
each disagreement is printed so that it can be read before calling either side wrong.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("CORPUS", ROOT.parent / "shared" / "corpora" / "checkov" / "tests"))
PALISADE = os.environ.get("PALISADE", str(ROOT / "target" / "debug" / "palisade"))
CHECKOV = os.environ.get("CHECKOV", str(ROOT / "bench" / "out" / "venv" / "bin" / "checkov"))

# checkov test directory → (checkov check ids, Palisade rules that check the same thing).
KUBERNETES = {
    "example_AllowPrivilegeEscalation": (["CKV_K8S_20"], ["K8S002"]),
    "example_AllowedCapabilitiesSysAdmin": (["CKV_K8S_39"], ["K8S004"]),
    "example_DockerSocketVolume": (["CKV_K8S_27"], ["K8S010"]),
    "example_DropCapabilities": (["CKV_K8S_37"], ["K8S005"]),
    "example_HostPort": (["CKV_K8S_26"], ["K8S025"]),
    "example_ImageTagFixed": (["CKV_K8S_14"], ["K8S013"]),
    "example_LivenessReadiness": (["CKV_K8S_8", "CKV_K8S_9"], ["K8S033"]),
    "example_PrivilegedContainers": (["CKV_K8S_16"], ["K8S001"]),
    "example_ReadOnlyFilesystem": (["CKV_K8S_22"], ["K8S012"]),
    "example_Requests_Limits": (["CKV_K8S_10", "CKV_K8S_11", "CKV_K8S_12", "CKV_K8S_13"], ["K8S011", "K8S034"]),
    "example_RootContainers": (["CKV_K8S_23"], ["K8S003"]),
    "example_Seccomp": (["CKV_K8S_31"], ["K8S016", "K8S030"]),
    "example_ShareHost": (["CKV_K8S_17", "CKV_K8S_18", "CKV_K8S_19"], ["K8S006", "K8S007", "K8S008"]),
    "example_WildcardRoles": (["CKV_K8S_49"], ["K8S020"]),
    "example_RbacEscalateRoles": (["CKV_K8S_158"], ["K8S035", "K8S020"]),
    "example_RbacBindRoleBindings": (["CKV_K8S_157"], ["K8S035", "K8S020"]),
}
DOCKERFILE = {
    "example_RootUser": (["CKV_DOCKER_8"], ["DF001"]),
    "example_UserExists": (["CKV_DOCKER_3"], ["DF001"]),
    "example_HealthcheckExists": (["CKV_DOCKER_2"], ["DF010"]),
    "example_ReferenceLatestTag": (["CKV_DOCKER_7"], ["DF002"]),
    "example_ExposePort22": (["CKV_DOCKER_1"], ["DF011"]),
}


def label(path: Path):
    """True (checkov expects the check to fail), False (to pass), None (unlabelled)."""
    text = "/".join(path.parts[-2:]).lower()
    if "failed" in text or "/failure" in "/" + text:
        return True
    if "passed" in text or "/success" in "/" + text:
        return False
    return None


def palisade_rules(path: Path):
    out = subprocess.run(
        [PALISADE, "scan", str(path), "--format", "json", "--fail-on", "never",
         "--skip", "vulnerabilities", "--skip", "secrets"],
        capture_output=True, text=True, check=False)
    try:
        report = json.loads(out.stdout)
    except json.JSONDecodeError:
        return None
    return {f["rule"] for f in report["findings"]}


def checkov_failed(path: Path, framework: str, checks):
    if not Path(CHECKOV).exists():
        return None
    out = subprocess.run(
        [CHECKOV, "-f", str(path), "--framework", framework, "--check", ",".join(checks),
         "-o", "json", "--quiet", "--compact", "--skip-download"],
        capture_output=True, text=True, check=False)
    try:
        report = json.loads(out.stdout or "{}")
    except json.JSONDecodeError:
        return None
    reports = report if isinstance(report, list) else [report]
    failed = set()
    for r in reports:
        for f in r.get("results", {}).get("failed_checks", []):
            failed.add(f["check_id"])
    return failed


def score(rows):
    tp = sum(1 for l, p in rows if l and p)
    fp = sum(1 for l, p in rows if not l and p)
    fn = sum(1 for l, p in rows if l and not p)
    tn = sum(1 for l, p in rows if not l and not p)
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return tp, fp, fn, tn, precision, recall


def main():
    if not CORPUS.exists():
        print(f"skipped: {CORPUS} does not exist (../shared/corpora)")
        return 0
    with_checkov = Path(CHECKOV).exists()
    print(f"palisade: {PALISADE}; checkov: {CHECKOV if with_checkov else 'not installed'}\n")
    print("| checkov test dir | checks | rules | files | palisade TP/FP/FN/TN | precision | recall | checkov TP/FP/FN/TN | precision | recall |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    totals = {"palisade": [], "checkov": []}
    disagreements = []
    for framework, table, base in [("kubernetes", KUBERNETES, "kubernetes/checks"), ("dockerfile", DOCKERFILE, "dockerfile/checks")]:
        for directory, (checks, rules) in table.items():
            folder = CORPUS / base / directory
            if not folder.exists():
                continue
            files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".yaml", ".yml", ".json", "") and label(p) is not None)
            ours, theirs = [], []
            for path in files:
                expected = label(path)
                found = palisade_rules(path)
                if found is not None:
                    hit = bool(found & set(rules))
                    ours.append((expected, hit))
                    if hit != expected:
                        disagreements.append(f"palisade {'missed' if expected else 'extra'}: {path.relative_to(CORPUS)} ({', '.join(rules)})")
                if with_checkov:
                    failed = checkov_failed(path, framework, checks)
                    if failed is not None:
                        theirs.append((expected, bool(failed & set(checks))))
            totals["palisade"] += ours
            totals["checkov"] += theirs
            p, c = score(ours), score(theirs)
            cells = f"{c[0]}/{c[1]}/{c[2]}/{c[3]} | {c[4]:.2f} | {c[5]:.2f}" if theirs else "– | – | –"
            print(f"| {directory} | {', '.join(checks)} | {', '.join(rules)} | {len(files)} | {p[0]}/{p[1]}/{p[2]}/{p[3]} | {p[4]:.2f} | {p[5]:.2f} | {cells} |")
    p, c = score(totals["palisade"]), score(totals["checkov"])
    cells = f"{c[0]}/{c[1]}/{c[2]}/{c[3]} | **{c[4]:.2f}** | **{c[5]:.2f}**" if totals["checkov"] else "– | – | –"
    print(f"| **all** | | | {len(totals['palisade'])} | {p[0]}/{p[1]}/{p[2]}/{p[3]} | **{p[4]:.2f}** | **{p[5]:.2f}** | {cells} |")
    print("\nPalisade's disagreements with the labels:")
    for line in disagreements:
        print(f"- {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
