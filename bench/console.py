#!/usr/bin/env python3
"""Console benchmark: does the web console slow the request path? One Palisade process (bench/palisade.yaml
with an admin token and detection on) under wrk, with the console closed, and with CONSOLE_TABS
browser tabs open, each refreshing every view of the console every 2 s (the page refreshes only the
one it shows, so this is a harsher load than a person). Interleaved rounds, medians.

    bash bench/run.sh console
"""
import http.client
import json
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import auth  # noqa: E402
import drive  # noqa: E402

ROOT, OUT, BIN = drive.ROOT, drive.OUT, drive.BIN
PORT, ADMIN = 19080, 19901
TABS = int(os.environ.get("CONSOLE_TABS", "4"))
VIEWS = ["traffic", "decisions", "alerts", "upstreams", "mesh", "config", "audit"]
TOKEN = "bench-console-admin-token"


def config():
    with open(os.path.join(ROOT, "bench", "palisade.yaml")) as f:
        text = f.read()
    token_file = os.path.join(OUT, "console-admin.token")
    with open(token_file, "w") as f:
        f.write(TOKEN)
    text = text.replace("admin:\n  address: 127.0.0.1:19901\n", f"admin:\n  address: 127.0.0.1:19901\n  token: file:{token_file}\n")
    text += "detection:\n  enabled: true\n"
    path = os.path.join(OUT, "palisade-console.yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


def login():
    connection = http.client.HTTPConnection("127.0.0.1", ADMIN, timeout=5)
    connection.request("POST", "/ui/login", body=f"token={TOKEN}",
                       headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": f"http://127.0.0.1:{ADMIN}"})
    response = connection.getresponse()
    response.read()
    if response.status != 204:
        raise SystemExit(f"console login refused: {response.status}")
    return response.getheader("Set-Cookie").split(";")[0]


def tab(stop, fetched):
    """One open console tab: every view, every 2 s, on a kept-alive connection."""
    cookie = login()
    connection = http.client.HTTPConnection("127.0.0.1", ADMIN, timeout=5)
    while not stop.is_set():
        started = time.time()
        for view in VIEWS:
            connection.request("GET", f"/ui/api/{view}", headers={"Cookie": cookie})
            response = connection.getresponse()
            body = response.read()
            if response.status != 200:
                raise SystemExit(f"/ui/api/{view}: {response.status}")
            fetched.append(len(body))
        stop.wait(max(0.0, 2.0 - (time.time() - started)))


def run(console_open):
    stop = threading.Event()
    fetched = []
    threads = [threading.Thread(target=tab, args=(stop, fetched), daemon=True) for _ in range(TABS if console_open else 0)]
    for thread in threads:
        thread.start()
    try:
        return auth.wrk(PORT, drive.PATH, None), len(fetched)
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def main():
    os.makedirs(OUT, exist_ok=True)
    log = lambda name: open(os.path.join(OUT, f"{name}.log"), "w")
    processes = {}
    results = {"console closed": [], f"console open ({TABS} tabs)": []}
    calls = []
    try:
        processes["echo"] = drive.subprocess.Popen([BIN, "echo", "--listen", "127.0.0.1:19000"], stdout=log("echo"), stderr=drive.subprocess.STDOUT)
        processes["palisade"] = drive.subprocess.Popen([BIN, "gateway", "--config", config()], stdout=log("palisade-console"), stderr=drive.subprocess.STDOUT)
        drive.wait_for_port(19000)
        drive.wait_for_port(PORT)
        drive.wait_for_port(ADMIN)
        time.sleep(6)  # a console sample or two exists
        auth.wrk(PORT, drive.PATH, None)  # warm-up
        names = list(results)
        for round_number in range(drive.ROUNDS):
            order = names if round_number % 2 == 0 else names[::-1]
            for name in order:
                result, fetched = run(name != "console closed")
                results[name].append(result)
                if fetched:
                    calls.append(fetched)
                print(f"round {round_number + 1} {name}: {result} ({fetched} console calls)", file=sys.stderr)
    finally:
        drive.stop(processes)
    median = lambda name, i: statistics.median(r[i] for r in results[name])
    closed = "console closed"
    lines = [
        f"Machine: {drive.machine()}; wrk -t2 -c{auth.CONNECTIONS}, {drive.DURATION} s per run, {drive.ROUNDS} rounds interleaved, medians;"
        f" open: {TABS} tabs each fetching all {len(VIEWS)} views every 2 s ({statistics.median(calls) if calls else 0:.0f} console calls per run).",
        "",
        "| console | req/s | p50 ms | p99 ms | ÷ closed |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in results:
        lines.append(f"| {name} | {median(name, 0):,.0f} | {median(name, 1):.3f} | {median(name, 2):.3f} | {median(name, 0) / median(closed, 0):.3f} |")
    drive.write_report("console-report.md", lines)


if __name__ == "__main__":
    main()
