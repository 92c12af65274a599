#!/usr/bin/env python3
"""Traffic-protection benchmark: what a rate limit (local, and shared on Redis) and OpenAPI body
validation cost, beside HAProxy's stick-table limit, and how exactly a limit holds under 3x overload.

    bash bench/run.sh limits

Throughput: wrk -t2, interleaved rounds, medians. Accuracy: oha at a fixed 3000 req/s against a route
limited to 1000/s (burst 10) for DURATION seconds; accepted rate = 2xx answers / duration.
"""
import json
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
REDIS_PORT = 19379
CONNECTIONS = auth.CONNECTIONS


def config(port, admin, store):
    with open(os.path.join(BENCH, "palisade-limits.yaml.in")) as f:
        text = f.read()
    text = text.replace("@PORT@", str(port)).replace("@ADMIN@", str(admin)).replace("@STORE@", store).replace("@BENCH@", BENCH)
    text = text.replace("@OUT@", OUT)
    path = os.path.join(OUT, f"palisade-limits-{port}.yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


def accepted_rate(port):
    output = subprocess.run(
        ["oha", "--no-tui", "--output-format", "json", "-z", f"{drive.DURATION}s", "-c", "32", "-q", "3000",
         f"http://127.0.0.1:{port}/accuracy"],
        capture_output=True, text=True, check=True,
    ).stdout
    result = json.loads(output)
    codes = result["statusCodeDistribution"]
    return int(codes.get("200", 0)) / drive.DURATION, sum(int(n) for n in codes.values()) / drive.DURATION


def write_deny_list():
    """100,000 single addresses spread over 10.0.0.0/8 and 2001:db8::/32 (none of them 127.0.0.1)."""
    with open(os.path.join(OUT, "deny-100k.txt"), "w") as f:
        for i in range(50_000):
            f.write(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}/32\n")
            f.write(f"2001:db8::{i:x}/128\n")


def main():
    os.makedirs(OUT, exist_ok=True)
    write_deny_list()
    post = os.path.join(BENCH, "post-order.lua")
    distinct = os.path.join(BENCH, "distinct-clients.lua")
    cases = {
        "direct": (19000, "/open/item", None),
        "palisade open route": (19080, "/open/item", None),
        "palisade local rate limit": (19080, "/limited/item", None),
        "palisade Redis rate limit": (19084, "/limited/item", None),
        "palisade Redis rate limit, distinct keys": (19084, "/keyed/item", distinct),
        "palisade 100k-entry IP deny list": (19080, "/iplisted/item", None),
        "palisade open POST 1 KiB": (19080, "/open/orders", post),
        "palisade validated POST 1 KiB": (19080, "/orders", post),
        "haproxy open": (19082, "/open/item", None),
        "haproxy stick-table limit": (19085, "/limited/item", None),
    }
    log = lambda name: open(os.path.join(OUT, f"{name}.log"), "w")
    os.makedirs(OUT, exist_ok=True)
    processes = {}
    results = {}
    try:
        processes["redis"] = subprocess.Popen(["redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                                              stdout=log("redis"), stderr=subprocess.STDOUT)
        processes["echo"] = subprocess.Popen([BIN, "echo", "--listen", "127.0.0.1:19000"], stdout=log("echo"), stderr=subprocess.STDOUT)
        drive.wait_for_port(REDIS_PORT)
        processes["local"] = subprocess.Popen([BIN, "gateway", "--config", config(19080, 19901, "local")], stdout=log("palisade-local"), stderr=subprocess.STDOUT)
        processes["redis-gw"] = subprocess.Popen([BIN, "gateway", "--config", config(19084, 19902, f"redis://127.0.0.1:{REDIS_PORT}/")],
                                                 stdout=log("palisade-redis"), stderr=subprocess.STDOUT)
        processes["haproxy"] = subprocess.Popen(["haproxy", "-f", os.path.join(BENCH, "haproxy-limits.cfg")], stdout=log("haproxy-limits"), stderr=subprocess.STDOUT)
        for port in (19000, 19080, 19084, 19082, 19085):
            drive.wait_for_port(port)
        time.sleep(1)
        # CASES="open route,Redis" runs only the cases whose names contain one of those words.
        wanted = [w.strip() for w in os.environ.get("CASES", "").split(",") if w.strip()]
        names = [name for name in cases if not wanted or any(w in name for w in wanted)]
        for round_number in range(drive.ROUNDS):
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                port, path, script = cases[name]
                results.setdefault(name, []).append(auth.wrk(port, path, None, script))
                print(f"round {round_number + 1} {name}: {results[name][-1]}", file=sys.stderr)
        accuracy = {"local": accepted_rate(19080), "Redis": accepted_rate(19084)}
    finally:
        drive.stop(processes)
    median = lambda name, i: statistics.median(r[i] for r in results[name])
    base = {"palisade local rate limit": "palisade open route", "palisade Redis rate limit": "palisade open route",
            "palisade Redis rate limit, distinct keys": "palisade open route",
            "palisade 100k-entry IP deny list": "palisade open route",
            "palisade validated POST 1 KiB": "palisade open POST 1 KiB", "haproxy stick-table limit": "haproxy open"}
    lines = [
        f"Machine: {drive.machine()}; wrk -t2 -c{CONNECTIONS}, {drive.DURATION} s per run, {drive.ROUNDS} rounds interleaved, medians.",
        "",
        "| case | req/s | p50 ms | p99 ms | ÷ its baseline |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in (name for name in cases if name in results):
        ratio = f"{median(name, 0) / median(base[name], 0):.3f} (÷ {base[name]})" if base.get(name) in results else ""
        lines.append(f"| {name} | {median(name, 0):,.0f} | {median(name, 1):.3f} | {median(name, 2):.3f} | {ratio} |")
    lines += [
        "",
        f"Accuracy: a route limited to 1000/s (burst 10), offered 3000 req/s by oha for {drive.DURATION} s:",
        "",
        "| store | offered req/s | accepted req/s | error vs 1000/s |",
        "|---|---:|---:|---:|",
    ]
    for store, (accepted, offered) in accuracy.items():
        lines.append(f"| {store} | {offered:,.0f} | {accepted:,.1f} | {(accepted - 1000) / 10:+.2f}% |")
    drive.write_report("limits-report.md", lines)


if __name__ == "__main__":
    main()
