#!/usr/bin/env python3
"""The authorization benchmark's cases counted in instructions instead of time: the gateway runs under
callgrind, and for each case its counters are zeroed, wrk sends requests for a while, and the counters are
dumped. Instructions per request (all of the gateway's threads, kernel time excepted) do not depend on
other tenants of a shared VM, which make req/s vary by ±20% from one round to the next.

    bash bench/run.sh authz-instructions
"""
import glob
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import auth  # noqa: E402
import authz  # noqa: E402
import drive  # noqa: E402

ROOT, OUT, BIN = drive.ROOT, drive.OUT, drive.BIN
SECONDS = int(os.environ.get("SECONDS_PER_CASE", "20"))


def requests_sent(path, token, script):
    """Sends requests with wrk (one thread, 4 connections) and returns how many were answered."""
    command = ["wrk", "-t1", "-c4", f"-d{SECONDS}s", "-H", f"Authorization: Bearer {token}"]
    if script:
        command += ["-s", script]
    output = subprocess.run(command + [f"http://127.0.0.1:19080{path}"], capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in output:
        raise SystemExit(f"non-2xx answers on {path}: the token was refused\n{output}")
    return int(re.search(r"(\d+) requests in", output).group(1))


def dumped_instructions(pid, prefix):
    """Dumps callgrind's counters and returns the instructions in the newest dump."""
    before = set(glob.glob(f"{prefix}*"))
    subprocess.run(["callgrind_control", "-d", str(pid)], capture_output=True, check=True)
    for _ in range(100):
        new = set(glob.glob(f"{prefix}*")) - before
        if new:
            time.sleep(0.5)
            with open(new.pop()) as f:
                return int(re.search(r"^(?:summary|totals): (\d+)", f.read(), re.M).group(1))
        time.sleep(0.2)
    raise SystemExit("callgrind wrote no dump")


def main():
    tokens = auth.prepare()
    config = authz.write_config()
    cases = authz.authz_cases()
    prefix = os.path.join(OUT, "callgrind.authz")
    for old in glob.glob(f"{prefix}*"):
        os.remove(old)
    log = lambda name: open(os.path.join(OUT, f"{name}.log"), "w")
    processes = {}
    per_request = {}
    try:
        processes["echo"] = subprocess.Popen([BIN, "echo", "--listen", "127.0.0.1:19000"], stdout=log("echo"), stderr=subprocess.STDOUT)
        processes["palisade"] = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={prefix}", BIN, "gateway", "--config", config],
            stdout=log("palisade-authz-callgrind"),
            stderr=subprocess.STDOUT,
        )
        drive.wait_for_port(19000)
        drive.wait_for_port(19080, timeout=120)  # valgrind starts slowly
        pid = processes["palisade"].pid
        for name, (path, script) in cases.items():
            requests_sent(path, tokens["ec"], script)  # warm-up: caches, pools, the caller's first request
            subprocess.run(["callgrind_control", "-z", str(pid)], capture_output=True, check=True)
            sent = requests_sent(path, tokens["ec"], script)
            per_request[name] = dumped_instructions(pid, prefix) / sent
            print(f"{name}: {sent} requests, {per_request[name]:,.0f} instructions/request", file=sys.stderr)
    finally:
        drive.stop(processes)
    print(f"Machine: {drive.machine()}; gateway under callgrind, wrk -t1 -c4, {SECONDS} s per case after a warm-up run.")
    print()
    print("| authorization | instructions/request | ÷ scope rule (same paths) |")
    print("|---|---:|---:|")
    for name in cases:
        print(f"| {name} | {per_request[name]:,.0f} | {per_request[name] / per_request[authz.base_of(name)]:.3f} |")


if __name__ == "__main__":
    main()
