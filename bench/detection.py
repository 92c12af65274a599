#!/usr/bin/env python3
"""Detection benchmark: what feeding every answer to the anomaly detectors costs. The same plain route
(bench/palisade.yaml) served by two Palisade processes, one with `detection.enabled: false` and one
with every detector on, beside a direct connection to the echo upstream; interleaved rounds, medians.

    bash bench/run.sh detection
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
PORTS = {"direct": 19000, "palisade, detection off": 19080, "palisade, detection on": 19083}


def config(port, admin_port, detection):
    with open(os.path.join(ROOT, "bench", "palisade.yaml")) as f:
        text = f.read()
    text = text.replace("127.0.0.1:19080", f"127.0.0.1:{port}").replace("127.0.0.1:19901", f"127.0.0.1:{admin_port}")
    if detection:
        text += "detection:\n  enabled: true\n"
    path = os.path.join(OUT, f"palisade-detection-{port}.yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


def main():
    os.makedirs(OUT, exist_ok=True)
    log = lambda name: open(os.path.join(OUT, f"{name}.log"), "w")
    processes = {}
    results = {}
    try:
        processes["echo"] = subprocess.Popen([BIN, "echo", "--listen", "127.0.0.1:19000"], stdout=log("echo"), stderr=subprocess.STDOUT)
        for port, admin_port, detection in ((19080, 19901, False), (19083, 19903, True)):
            processes[f"palisade-{port}"] = subprocess.Popen(
                [BIN, "gateway", "--config", config(port, admin_port, detection)],
                stdout=log(f"palisade-detection-{port}"), stderr=subprocess.STDOUT)
        for port in PORTS.values():
            drive.wait_for_port(port)
        time.sleep(1)
        names = list(PORTS)
        for name in names:
            auth.wrk(PORTS[name], drive.PATH, None)  # warm-up
        for round_number in range(drive.ROUNDS):
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                results.setdefault(name, []).append(auth.wrk(PORTS[name], drive.PATH, None))
                print(f"round {round_number + 1} {name}: {results[name][-1]}", file=sys.stderr)
    finally:
        drive.stop(processes)
    median = lambda name, i: statistics.median(r[i] for r in results[name])
    lines = [
        f"Machine: {drive.machine()}; wrk -t2 -c{auth.CONNECTIONS}, {drive.DURATION} s per run, {drive.ROUNDS} rounds interleaved, medians.",
        "",
        "| path | req/s | p50 ms | p99 ms | ÷ detection off |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in PORTS:
        lines.append(f"| {name} | {median(name, 0):,.0f} | {median(name, 1):.3f} | {median(name, 2):.3f} | "
                     f"{median(name, 0) / median('palisade, detection off', 0):.2f} |")
    drive.write_report("detection-report.md", lines)


if __name__ == "__main__":
    main()
