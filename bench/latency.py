#!/usr/bin/env python3
"""Latency added by each proxy when the load generator does not share the proxy's core.

On a 2-core machine bench/drive.py runs wrk or oha, the echo upstream and a proxy on the same two
cores, so a p99 there mostly measures the scheduler. Here every proxy (Palisade, nginx, HAProxy, each
as configured for bench/drive.py) is pinned to CPU 0 and the echo upstream and the load generator to
CPU 1 (taskset). Palisade starts one worker (it sizes itself to the CPUs it may use); nginx and
HAProxy keep their configs' two workers, both on CPU 0.

1. Maximum throughput of each target, wrk -t1 -c64 (pinned to CPU 1 with the echo).
2. p50/p99 at a fixed rate of half Palisade's maximum, oha with latency correction, ROUNDS rounds
   interleaved; medians, and the p99 added over direct.

    python3 bench/latency.py            # after `cargo build --release`; ROUNDS=3 DURATION=10 by default
"""
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import drive  # noqa: E402

ROOT, OUT, BIN = drive.ROOT, drive.OUT, drive.BIN
PROXY_CPU, LOAD_CPU = "0", "1"


def pinned(cpu, command):
    return ["taskset", "-c", cpu] + command


def start(processes):
    os.makedirs(OUT, exist_ok=True)
    log = lambda name: open(os.path.join(OUT, f"latency-{name}.log"), "w")
    processes["echo"] = subprocess.Popen(pinned(LOAD_CPU, [BIN, "echo", "--listen", "127.0.0.1:19000"]), stdout=log("echo"), stderr=subprocess.STDOUT)
    drive.wait_for_port(19000)
    config = os.path.join(ROOT, "bench", "palisade.yaml")
    processes["palisade"] = subprocess.Popen(pinned(PROXY_CPU, [BIN, "gateway", "--config", config]), stdout=log("palisade"), stderr=subprocess.STDOUT)
    for name in ("nginx", "nginx-plain"):
        command = ["nginx", "-p", OUT, "-c", os.path.join(ROOT, "bench", f"{name}.conf"), "-g", "daemon off;"]
        processes[name] = subprocess.Popen(pinned(PROXY_CPU, command), stdout=log(name), stderr=subprocess.STDOUT)
    for name in ("haproxy", "haproxy-plain"):
        command = ["haproxy", "-f", os.path.join(ROOT, "bench", f"{name}.cfg")]
        processes[name] = subprocess.Popen(pinned(PROXY_CPU, command), stdout=log(name), stderr=subprocess.STDOUT)
    for port in drive.TARGETS.values():
        drive.wait_for_port(port)


def maximum(port):
    output = subprocess.run(
        pinned(LOAD_CPU, ["wrk", "-t1", "-c64", f"-d{drive.DURATION}s", f"http://127.0.0.1:{port}{drive.PATH}"]),
        capture_output=True, text=True, check=True,
    ).stdout
    return float(output.split("Requests/sec:")[1].split()[0])


def at_rate(port, rate):
    return drive.oha_path(port, drive.PATH, rate, 64, prefix=pinned(LOAD_CPU, []))


def main():
    processes = {}
    lines = []
    try:
        start(processes)
        time.sleep(1)
        subprocess.run(pinned(LOAD_CPU, ["wrk", "-t1", "-c64", "-d3s", f"http://127.0.0.1:19080{drive.PATH}"]), capture_output=True)
        targets = list(drive.TARGETS)
        peak = {target: maximum(drive.TARGETS[target]) for target in targets}
        print(f"maximum: {peak}", file=sys.stderr)
        rate = int(peak["palisade"] / 2)
        results = {}
        for round_number in range(drive.ROUNDS):
            shift = round_number % len(targets)
            for target in targets[shift:] + targets[:shift]:
                results.setdefault(target, []).append(at_rate(drive.TARGETS[target], rate))
                print(f"round {round_number + 1} {target}: {results[target][-1]}", file=sys.stderr)
        median = lambda target, i: statistics.median(r[i] for r in results[target])
        lines.append(f"Machine: {drive.machine()}. Proxies pinned to CPU {PROXY_CPU}; echo upstream and load generator to CPU {LOAD_CPU}.")
        lines.append(f"Maximum: wrk -t1 -c64, {drive.DURATION} s. Fixed rate {rate:,} req/s (half of Palisade's maximum), oha -c64 with latency")
        lines.append(f"correction, {drive.DURATION} s per run, {drive.ROUNDS} rounds interleaved, medians.")
        lines.append("")
        lines.append("| target | maximum req/s | achieved req/s at the fixed rate | p50 ms | p99 ms | p99 added over direct ms |")
        lines.append("|---|---:|---:|---:|---:|---:|")
        for target in targets:
            p99 = median(target, 2)
            lines.append(f"| {target} | {peak[target]:,.0f} | {median(target, 0):,.0f} | {median(target, 1):.3f} | {p99:.3f} | {p99 - median('direct', 2):+.3f} |")
    finally:
        drive.stop(processes)
    drive.write_report("latency.md", lines)


if __name__ == "__main__":
    main()
