#!/usr/bin/env python3
"""Mesh benchmark: what the mTLS hop through a sidecar adds, beside HAProxy doing the same hop.

    bash bench/run.sh mesh

Paths (all on 127.0.0.1, identities from a CA made for the run):
  direct                      client → app
  palisade 1 hop              client → gateway → app                       (plain)
  palisade 2 hops, mTLS       client → gateway ⇒ sidecar → app             (⇒: mTLS, SPIFFE IDs verified)
  haproxy 1 hop / 2 hops mTLS the same shapes with HAProxy (chain verified, no SPIFFE ID check)

Throughput: wrk -t2 -c64; latency: oha at a fixed moderate rate (RATE req/s, 16 connections, latency
correction). Rounds interleaved, medians. The added latency of the mTLS hop is p(2 hops) − p(1 hop).
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
BENCH = os.path.join(ROOT, "bench")
MESH = os.path.join(OUT, "mesh")
RATE = int(os.environ.get("RATE", "2000"))


def sh(*args):
    subprocess.run(args, check=True, capture_output=True)


def make_identities():
    subprocess.run(["rm", "-rf", MESH], check=True)
    sh(BIN, "ca", "init", "--trust-domain", "bench.local", "--dir", os.path.join(MESH, "ca"))
    for name, spiffe_id in (("gateway", "spiffe://bench.local/gateway"), ("orders", "spiffe://bench.local/ns/shop/sa/orders")):
        out = os.path.join(MESH, name)
        sh(BIN, "ca", "issue", "--dir", os.path.join(MESH, "ca"), "--spiffe-id", spiffe_id, "--out", out, "--ttl", "24h")
        with open(os.path.join(out, "haproxy.pem"), "w") as combined:
            for part in ("svid.pem", "svid.key"):
                with open(os.path.join(out, part)) as f:
                    combined.write(f.read())


def render(template):
    with open(os.path.join(BENCH, template)) as f:
        text = f.read().replace("@MESH@", MESH)
    path = os.path.join(OUT, template.removesuffix(".in"))
    with open(path, "w") as f:
        f.write(text)
    return path


def latency(port, path):
    return drive.oha_path(port, path, RATE, 16)


def main():
    os.makedirs(OUT, exist_ok=True)
    make_identities()
    cases = {
        "direct": (19000, "/item"),
        "palisade 1 hop": (19280, "/plain/item"),
        "palisade 2 hops, mTLS": (19280, "/mesh/item"),
        "haproxy 1 hop": (19284, "/plain/item"),
        "haproxy 2 hops, mTLS": (19282, "/mesh/item"),
    }
    log = lambda name: open(os.path.join(OUT, f"{name}.log"), "w")
    processes = {}
    throughput, latencies = {}, {}
    try:
        processes["echo"] = subprocess.Popen([BIN, "echo", "--listen", "127.0.0.1:19000"], stdout=log("echo"), stderr=subprocess.STDOUT)
        processes["sidecar"] = subprocess.Popen([BIN, "sidecar", "--config", render("palisade-mesh-sidecar.yaml.in")],
                                                stdout=log("palisade-sidecar"), stderr=subprocess.STDOUT)
        processes["gateway"] = subprocess.Popen([BIN, "gateway", "--config", render("palisade-mesh-gateway.yaml.in")],
                                                stdout=log("palisade-mesh-gateway"), stderr=subprocess.STDOUT)
        processes["haproxy"] = subprocess.Popen(["haproxy", "-f", render("haproxy-mesh.cfg.in")], stdout=log("haproxy-mesh"), stderr=subprocess.STDOUT)
        for port in (19000, 19281, 19280, 19282, 19283, 19284):
            drive.wait_for_port(port)
        time.sleep(1)
        for name, (port, path) in cases.items():  # warm-up, and a check that every path answers 2xx
            auth.wrk(port, path, None)
        names = list(cases)
        for round_number in range(drive.ROUNDS):
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                port, path = cases[name]
                throughput.setdefault(name, []).append(auth.wrk(port, path, None))
                latencies.setdefault(name, []).append(latency(port, path))
                print(f"round {round_number + 1} {name}: {throughput[name][-1]} {latencies[name][-1]}", file=sys.stderr)
    finally:
        drive.stop(processes)
    median = lambda table, name, i: statistics.median(r[i] for r in table[name])
    lines = [
        f"Machine: {drive.machine()}; load generator on the same machine. Throughput: wrk -t2 -c{auth.CONNECTIONS}, "
        f"{drive.DURATION} s; latency: oha at {RATE} req/s, 16 connections, latency correction, {drive.DURATION} s; "
        f"{drive.ROUNDS} rounds interleaved, medians. Palisade: gateway and sidecar 1 worker each; HAProxy: one process, 2 threads.",
        "",
        "| path | req/s (wrk) | ÷ direct | p50 ms at fixed rate | p99 ms at fixed rate |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in cases:
        lines.append(
            f"| {name} | {median(throughput, name, 0):,.0f} | {median(throughput, name, 0) / median(throughput, 'direct', 0):.2f} "
            f"| {median(latencies, name, 1):.3f} | {median(latencies, name, 2):.3f} |"
        )
    lines += ["", "Added by the mTLS hop through the sidecar (2 hops − 1 hop, medians):", ""]
    for peer in ("palisade", "haproxy"):
        p50 = median(latencies, f"{peer} 2 hops, mTLS", 1) - median(latencies, f"{peer} 1 hop", 1)
        p99 = median(latencies, f"{peer} 2 hops, mTLS", 2) - median(latencies, f"{peer} 1 hop", 2)
        lines.append(f"- {peer}: p50 +{p50:.3f} ms, p99 +{p99:.3f} ms")
    drive.write_report("mesh-report.md", lines)


if __name__ == "__main__":
    main()
