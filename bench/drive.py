#!/usr/bin/env python3
"""Drives the benchmark: direct to the echo upstream, Palisade, nginx and HAProxy, the same load for each.

nginx and HAProxy run twice: configured to do the per-request work Palisade's hardened edge does by
default (bench/nginx.conf, bench/haproxy.cfg: forwarding headers, request id, security headers), and
as plain proxies doing none of it (bench/nginx-plain.conf, bench/haproxy-plain.cfg). The echo upstream
reflects every request header in its answer, so the headers cost the upstream and the response too.

Throughput: wrk (2 threads) at several keep-alive connection counts, ROUNDS rounds interleaved so that
drift on a shared machine hits every target alike; medians are reported. Latency under load: oha at a
fixed rate of half Palisade's maximum (with latency correction, so queueing delay is not hidden).
Prints a markdown report and writes it to bench/out/report.md.
"""
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "bench", "out")
BIN = os.path.join(ROOT, "target", "release", "palisade")
ROUNDS = int(os.environ.get("ROUNDS", "3"))
DURATION = int(os.environ.get("DURATION", "10"))
CONNECTIONS = [int(c) for c in os.environ.get("CONNECTIONS", "16 64 256").split()]
# LATENCY=0 skips the fixed-rate runs (oha), e.g. for a throughput-only run with more rounds.
LATENCY = os.environ.get("LATENCY", "1") != "0"
TARGETS = {
    "direct": 19000,
    "palisade": 19080,
    "nginx": 19081,
    "haproxy": 19082,
    "nginx-plain": 19083,
    "haproxy-plain": 19084,
}
PATH = "/bench/item?x=1"


def wait_for_port(port, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port}")


def peer_config(name, workers=None):
    """The path of a peer's config in bench/; with `workers`, a copy in bench/out/ whose worker
    processes (nginx) or threads (HAProxy) are that many instead of the checked-in 2."""
    path = os.path.join(ROOT, "bench", name)
    if workers is None:
        return path
    with open(path) as f:
        text = f.read()
    text = re.sub(r"worker_processes \d+;", f"worker_processes {workers};", text)
    text = re.sub(r"nbthread \d+", f"nbthread {workers}", text)
    copy = os.path.join(OUT, f"{workers}-workers-{name}")
    with open(copy, "w") as f:
        f.write(text)
    return copy


def start_servers(processes, proxy_prefix=(), upstream_prefix=(), log_prefix="", peer_workers=None):
    """Starts everything into `processes` (so the caller can stop what did start if one fails).
    `proxy_prefix` and `upstream_prefix` wrap the proxies' and the echo upstream's commands (taskset);
    `peer_workers` overrides nginx's and HAProxy's worker count (see `peer_config`)."""
    os.makedirs(OUT, exist_ok=True)
    log = lambda name: open(os.path.join(OUT, f"{log_prefix}{name}.log"), "w")
    processes["echo"] = subprocess.Popen([*upstream_prefix, BIN, "echo", "--listen", "127.0.0.1:19000"], stdout=log("echo"), stderr=subprocess.STDOUT)
    wait_for_port(19000)
    processes["palisade"] = subprocess.Popen(
        [*proxy_prefix, BIN, "gateway", "--config", os.path.join(ROOT, "bench", "palisade.yaml")], stdout=log("palisade"), stderr=subprocess.STDOUT
    )
    for name in ("nginx", "nginx-plain"):
        processes[name] = subprocess.Popen(
            [*proxy_prefix, "nginx", "-p", OUT, "-c", peer_config(f"{name}.conf", peer_workers), "-g", "daemon off;"], stdout=log(name), stderr=subprocess.STDOUT
        )
    for name in ("haproxy", "haproxy-plain"):
        processes[name] = subprocess.Popen([*proxy_prefix, "haproxy", "-f", peer_config(f"{name}.cfg", peer_workers)], stdout=log(name), stderr=subprocess.STDOUT)
    for port in TARGETS.values():
        wait_for_port(port)


def stat_fields(path):
    """The fields of a /proc/.../stat file after the command name (field 3 on is index 0 on), which
    may itself hold spaces and parentheses. Raises OSError when the process or thread has gone."""
    with open(path) as f:
        return f.read().rsplit(")", 1)[1].split()


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def to_ms(value):
    number, unit = re.match(r"([\d.]+)(us|ms|s)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(port, connections, threads=2, prefix=()):
    """(req/s, p50 ms, p99 ms); `prefix` wraps the command (e.g. taskset)."""
    output = subprocess.run(
        [*prefix, "wrk", f"-t{threads}", f"-c{connections}", f"-d{DURATION}s", "--latency", f"http://127.0.0.1:{port}{PATH}"],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    p50 = to_ms(re.search(r"\s50%\s+([\d.]+\w+)", output).group(1))
    p99 = to_ms(re.search(r"\s99%\s+([\d.]+\w+)", output).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", output)
    if errors:
        print(f"  warning: {errors.group(0)} (port {port}, {connections} connections)", file=sys.stderr)
    return rps, p50, p99


def oha(port, rate, connections=64):
    return oha_path(port, PATH, rate, connections)


def oha_path(port, path, rate, connections, prefix=()):
    """(req/s, p50 ms, p99 ms) at a fixed offered `rate`; `prefix` wraps the command (e.g. taskset)."""
    output = subprocess.run(
        [*prefix, "oha", "--no-tui", "--output-format", "json", "--latency-correction", "-z", f"{DURATION}s", "-c", str(connections), "-q", str(rate),
         f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, check=True,
    ).stdout
    result = json.loads(output)
    percentiles = result["latencyPercentiles"]
    return result["summary"]["requestsPerSec"], percentiles["p50"] * 1000, percentiles["p99"] * 1000


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown CPU")
    return f"{os.cpu_count()} cores ({cpu}), {round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB"


def write_report(name, lines):
    """Prints the markdown report and keeps a copy in bench/out/NAME."""
    report = "\n".join(lines)
    with open(os.path.join(OUT, name), "w") as f:
        f.write(report + "\n")
    print(report)


def stop(processes):
    for process in processes.values():
        process.terminate()
    for process in processes.values():
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def main():
    processes = {}
    lines = []
    try:
        start_servers(processes)
        time.sleep(1)
        idle_rss = rss_mib(processes["palisade"].pid)
        subprocess.run(["wrk", "-t2", "-c64", "-d3s", f"http://127.0.0.1:19080{PATH}"], capture_output=True)  # warm-up
        results = {}
        for round_number in range(ROUNDS):
            for connections in CONNECTIONS:
                shift = round_number % len(TARGETS)
                order = list(TARGETS)[shift:] + list(TARGETS)[:shift]
                for target in order:
                    results.setdefault((target, connections), []).append(wrk(TARGETS[target], connections))
                    print(f"round {round_number + 1} c={connections} {target}: {results[(target, connections)][-1]}", file=sys.stderr)
        loaded_rss = rss_mib(processes["palisade"].pid)
        median = lambda target, c, i: statistics.median(r[i] for r in results[(target, c)])

        lines.append(f"Machine: {machine()}; load generator on the same machine. wrk -t2, {DURATION} s per run, {ROUNDS} rounds, medians.")
        lines.append("")
        lines.append("| connections | target | req/s | p50 ms | p99 ms | palisade ÷ this |")
        lines.append("|---:|---|---:|---:|---:|---:|")
        for c in CONNECTIONS:
            for target in TARGETS:
                rps = median(target, c, 0)
                ratio = median("palisade", c, 0) / rps
                lines.append(f"| {c} | {target} | {rps:,.0f} | {median(target, c, 1):.3f} | {median(target, c, 2):.3f} | {ratio:.2f} |")
        # Rounds run one after the other, so a round's ratio compares targets measured minutes apart at
        # most: the median of those is less moved by the VM's drift than the ratio of the medians.
        lines.append("")
        for c in CONNECTIONS:
            for peer in ("nginx", "haproxy"):
                paired = [p[0] / q[0] for p, q in zip(results[("palisade", c)], results[(peer, c)])]
                shown = ", ".join(f"{ratio:.2f}" for ratio in paired)
                lines.append(f"- {c} connections, palisade ÷ {peer} per round: {shown} (median {statistics.median(paired):.2f})")
        if LATENCY:
            half = int(median("palisade", 64, 0) / 2)
            lines.append("")
            lines.append(f"Fixed rate {half:,} req/s (half of Palisade's maximum at 64 connections), 64 connections, oha with latency correction:")
            lines.append("")
            lines.append("| target | achieved req/s | p50 ms | p99 ms | p99 added over direct ms |")
            lines.append("|---|---:|---:|---:|---:|")
            fixed = {target: oha(port, half) for target, port in TARGETS.items()}
            for target, (rps, p50, p99) in fixed.items():
                lines.append(f"| {target} | {rps:,.0f} | {p50:.3f} | {p99:.3f} | {p99 - fixed['direct'][2]:+.3f} |")
        lines.append("")
        lines.append(f"Palisade resident memory: {idle_rss:.1f} MiB idle after start, {loaded_rss:.1f} MiB after the throughput runs.")
    finally:
        stop(processes)
    write_report("report.md", lines)


if __name__ == "__main__":
    main()
