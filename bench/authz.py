#!/usr/bin/env python3
"""Authorization benchmark: the same JWT route (one cached ES256 token) authorized by one scope rule,
and by a 20-policy Cedar set (bench/authz-policies.cedar), interleaved rounds, medians.

    bash bench/run.sh authz
"""
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import auth  # noqa: E402
import drive  # noqa: E402

ROOT, OUT, BIN = drive.ROOT, drive.OUT, drive.BIN


def cpu_seconds(pid):
    """User plus system CPU time of a process so far (from /proc, in clock ticks)."""
    fields = drive.stat_fields(f"/proc/{pid}/stat")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(pid, path, token, script):
    """wrk's (req/s, p50, p99) and the gateway's CPU microseconds per request over the run: less
    sensitive than req/s to a shared VM's other tenants, since time the gateway waits is not counted."""
    before = cpu_seconds(pid)
    rps, p50, p99 = auth.wrk(19080, path, token, script)
    return rps, p50, p99, (cpu_seconds(pid) - before) / (rps * drive.DURATION) * 1e6


def write_config():
    """The gateway's config for the authorization cases, filled in from bench/palisade-authz.yaml.in."""
    with open(os.path.join(ROOT, "bench", "palisade-authz.yaml.in")) as f:
        text = f.read().replace("@OUT@", OUT).replace("@BENCH@", os.path.join(ROOT, "bench"))
    config = os.path.join(OUT, "palisade-authz.yaml")
    with open(config, "w") as f:
        f.write(text)
    return config


def authz_cases():
    """(path, wrk script) by case: the same path every time (one decision input), and a different path
    for every request (no two requests share a decision input)."""
    distinct = os.path.join(ROOT, "bench", "distinct-paths.lua")
    return {
        "scope rule": ("/rules/42", None),
        "cedar, 20 policies": ("/cedar/42", None),
        "scope rule, distinct paths": ("/rules/1", distinct),
        "cedar, 20 policies, distinct paths": ("/cedar/1", distinct),
    }


def base_of(name):
    """The scope-rule case a case is compared with."""
    return "scope rule, distinct paths" if "distinct" in name else "scope rule"


def main():
    tokens = auth.prepare()
    config = write_config()
    cases = authz_cases()
    log = lambda name: open(os.path.join(OUT, f"{name}.log"), "w")
    processes = {}
    results = {}
    try:
        processes["echo"] = subprocess.Popen([BIN, "echo", "--listen", "127.0.0.1:19000"], stdout=log("echo"), stderr=subprocess.STDOUT)
        processes["palisade"] = subprocess.Popen([BIN, "gateway", "--config", config], stdout=log("palisade-authz"), stderr=subprocess.STDOUT)
        for port in (19000, 19080):
            drive.wait_for_port(port)
        time.sleep(1)
        for path, script in cases.values():
            auth.wrk(19080, path, tokens["ec"], script)  # warm-up, and proof that the token is allowed
        names = list(cases)
        for round_number in range(drive.ROUNDS):
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                path, script = cases[name]
                results.setdefault(name, []).append(measured(processes["palisade"].pid, path, tokens["ec"], script))
                print(f"round {round_number + 1} {name}: {results[name][-1]}", file=sys.stderr)
    finally:
        drive.stop(processes)
    median = lambda name, i: statistics.median(r[i] for r in results[name])
    lines = [
        f"Machine: {drive.machine()}; wrk -t2 -c{auth.CONNECTIONS}, {drive.DURATION} s per run, {drive.ROUNDS} rounds interleaved, medians; "
        "one cached ES256 token, no identity headers.",
        "",
        "| authorization | req/s | p50 ms | p99 ms | ÷ scope rule (same paths) | gateway CPU µs/request | CPU ÷ scope rule |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in cases:
        lines.append(f"| {name} | {median(name, 0):,.0f} | {median(name, 1):.3f} | {median(name, 2):.3f} | "
                     f"{median(name, 0) / median(base_of(name), 0):.2f} | {median(name, 3):.1f} | "
                     f"{median(name, 3) / median(base_of(name), 3):.2f} |")
    drive.write_report("authz-report.md", lines)


if __name__ == "__main__":
    main()
