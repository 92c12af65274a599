#!/usr/bin/env python3
"""Latency added by each proxy when the load generator does not share the proxy's core.

On a 2-core machine bench/drive.py runs wrk or oha, the echo upstream and a proxy on the same two
cores, so a p99 there mostly measures the scheduler. Here every proxy (Palisade, nginx, HAProxy, each
as configured for bench/drive.py) is pinned to CPU 0 and the echo upstream and the load generator to
CPU 1 (taskset). Palisade starts one worker (it sizes itself to the CPUs it may use); nginx and
HAProxy are given one worker process / thread too (PEER_WORKERS=1, the default; PEER_WORKERS=2 keeps
their configs' two, which then take turns on CPU 0).

1. Maximum throughput of each target, wrk -t1 -c64 (pinned to CPU 1 with the echo).
2. p50/p99 at a fixed rate of half Palisade's maximum, ROUNDS rounds interleaved; medians, and the
   p99 added over direct. The generator is oha with latency correction, or with GENERATOR=open-loop
   the workspace's open-loop generator (crates/palisade-echo/examples/open_loop.rs: Poisson arrivals,
   each connection's thread sleeping to its own due time, latency from the due time), which does not
   release requests in 1 ms batches as oha's timer does.

    python3 bench/latency.py                        # after `cargo build --release`; ROUNDS=3 DURATION=10 by default
    GENERATOR=open-loop python3 bench/latency.py    # also builds the generator
"""
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import drive  # noqa: E402

PROXY_CPU, LOAD_CPU = "0", "1"
PEER_WORKERS = int(os.environ.get("PEER_WORKERS", "1"))
GENERATOR = os.environ.get("GENERATOR", "oha")
OPEN_LOOP = os.path.join(drive.ROOT, "target/release/examples/open_loop")


def pinned(cpu):
    """The command prefix that runs a command on `cpu` only."""
    return ["taskset", "-c", cpu]


def start(processes):
    drive.start_servers(
        processes, proxy_prefix=pinned(PROXY_CPU), upstream_prefix=pinned(LOAD_CPU), log_prefix="latency-", peer_workers=PEER_WORKERS
    )


def maximum(port):
    return drive.wrk(port, 64, threads=1, prefix=pinned(LOAD_CPU))[0]


def at_rate(port, rate):
    """(req/s, p50 ms, p99 ms) at the fixed offered `rate` over 64 connections."""
    if GENERATOR == "oha":
        return drive.oha_path(port, drive.PATH, rate, 64, prefix=pinned(LOAD_CPU))
    output = subprocess.run(
        [*pinned(LOAD_CPU), OPEN_LOOP, f"127.0.0.1:{port}", drive.PATH, str(rate), "64", str(drive.DURATION)],
        capture_output=True, text=True, check=True,
    ).stdout
    result = json.loads(output)
    return result["achieved"], result["p50"], result["p99"]


def main():
    processes = {}
    lines = []
    if GENERATOR != "oha":
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "palisade-echo", "--example", "open_loop"], cwd=drive.ROOT, check=True)
    try:
        start(processes)
        time.sleep(1)
        subprocess.run([*pinned(LOAD_CPU), "wrk", "-t1", "-c64", "-d3s", f"http://127.0.0.1:19080{drive.PATH}"], capture_output=True)
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
        lines.append(f"nginx and HAProxy with {PEER_WORKERS} worker process(es) / thread(s); Palisade with 1 worker (it sizes itself to its CPUs).")
        generator = "oha -c64 with latency correction" if GENERATOR == "oha" else "open_loop (Poisson arrivals) over 64 connections"
        lines.append(f"Maximum: wrk -t1 -c64, {drive.DURATION} s. Fixed rate {rate:,} req/s (half of Palisade's maximum), {generator},")
        lines.append(f"{drive.DURATION} s per run, {drive.ROUNDS} rounds interleaved, medians.")
        lines.append("")
        lines.append("| target | maximum req/s | achieved req/s at the fixed rate | p50 ms | p99 ms | p99 added over direct ms |")
        lines.append("|---|---:|---:|---:|---:|---:|")
        for target in targets:
            p99 = median(target, 2)
            lines.append(f"| {target} | {peak[target]:,.0f} | {median(target, 0):,.0f} | {median(target, 1):.3f} | {p99:.3f} | {p99 - median('direct', 2):+.3f} |")
    finally:
        drive.stop(processes)
    drive.write_report("latency.md" if GENERATOR == "oha" else "latency-open-loop.md", lines)


if __name__ == "__main__":
    main()
