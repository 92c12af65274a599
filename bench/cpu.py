#!/usr/bin/env python3
"""CPU per request of every process in a throughput run: the proxy, the echo upstream and wrk.

On a 2-core machine the load generator, the echo upstream and the proxy share both cores, so the
maximum throughput is set by the CPU all three spend per request; this shows whose it is. For each
target in turn: start the proxy, run `wrk -t2 -c64` for DURATION seconds, and read user and system
time from /proc (every thread of the proxy and of its child processes; wrk's from getrusage). Also the
proxy's context switches per request. ROUNDS rounds, one line per target and round.

Targets: Palisade (bench/palisade.yaml), nginx and HAProxy on their bench configs (the same header
work as Palisade's defaults), the bare hyper proxy of crates/palisade-gateway/examples/bare_proxy.rs
with that header work (`bare-headers`: the floor for a hyper proxy doing the same work) and without it
(`bare`), and nginx without it (`nginx-plain`).

    cargo build --release -p palisade-cli    # the bare proxy example is built when missing
    python3 bench/cpu.py                    # ROUNDS=2 DURATION=10 by default; ONLY=palisade,nginx
"""
import glob
import os
import re
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import drive  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "2"))
DURATION = drive.DURATION  # DURATION, as drive.wrk runs it
ONLY = [name for name in os.environ.get("ONLY", "").split(",") if name]
BARE = os.path.join(drive.ROOT, "target/release/examples/bare_proxy")
BARE_PORT = 19090
TICKS = os.sysconf("SC_CLK_TCK")


def targets():
    """name → (command, environment additions, port); the ports are drive.py's."""
    bare = [BARE, f"127.0.0.1:{BARE_PORT}", f"127.0.0.1:{drive.TARGETS['direct']}"]
    nginx = lambda config: ["nginx", "-p", drive.OUT, "-c", drive.peer_config(config), "-g", "daemon off;"]
    return {
        "palisade": ([drive.BIN, "gateway", "--config", os.path.join(drive.ROOT, "bench", "palisade.yaml")], {}, drive.TARGETS["palisade"]),
        "nginx": (nginx("nginx.conf"), {}, drive.TARGETS["nginx"]),
        "haproxy": (["haproxy", "-f", drive.peer_config("haproxy.cfg")], {}, drive.TARGETS["haproxy"]),
        "bare-headers": (bare, {"BARE_HEADERS": "1"}, BARE_PORT),
        "bare": (bare, {}, BARE_PORT),
        "nginx-plain": (nginx("nginx-plain.conf"), {}, drive.TARGETS["nginx-plain"]),
    }


def process_tree(pid):
    """`pid` and its children (nginx's workers)."""
    children = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = drive.stat_fields(stat)
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.split("/")[2]))
    return [pid, *children]


def cpu_of(pids):
    """(user ticks, system ticks, voluntary switches, involuntary switches) over all threads."""
    user = system = voluntary = involuntary = 0
    for pid in pids:
        for task in glob.glob(f"/proc/{pid}/task/*"):
            try:
                fields = drive.stat_fields(f"{task}/stat")
                status = open(f"{task}/status").read()
            except OSError:
                continue
            user += int(fields[11])
            system += int(fields[12])
            voluntary += int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)", status, re.M).group(1))
            involuntary += int(re.search(r"^nonvoluntary_ctxt_switches:\s+(\d+)", status, re.M).group(1))
    return user, system, voluntary, involuntary


def measure(name, command, environment, port, echo):
    log = open(os.path.join(drive.OUT, f"cpu-{name}.log"), "w")
    proxy = subprocess.Popen(command, env={**os.environ, **environment}, stdout=log, stderr=subprocess.STDOUT)
    try:
        drive.wait_for_port(port)
        time.sleep(0.5)
        pids = process_tree(proxy.pid)
        proxy_before, echo_before = cpu_of(pids), cpu_of([echo.pid])
        wrk_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        # drive.wrk warns when the target answered errors, which would make it look cheap.
        rps, _, _ = drive.wrk(port, 64)
        wrk_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        proxy_after, echo_after = cpu_of(pids), cpu_of([echo.pid])
    finally:
        proxy.terminate()
        proxy.wait()
    requests = rps * DURATION
    per_request = lambda ticks: ticks / TICKS / requests * 1e6
    proxy_used = [after - before for after, before in zip(proxy_after, proxy_before)]
    echo_used = [after - before for after, before in zip(echo_after, echo_before)]
    print(
        f"| {name} | {rps:,.0f} | {per_request(proxy_used[0]):.2f} | {per_request(proxy_used[1]):.2f} "
        f"| {per_request(echo_used[0]):.2f} | {per_request(echo_used[1]):.2f} "
        f"| {(wrk_after.ru_utime - wrk_before.ru_utime) / requests * 1e6:.2f} "
        f"| {(wrk_after.ru_stime - wrk_before.ru_stime) / requests * 1e6:.2f} "
        f"| {(proxy_used[2] + proxy_used[3]) / requests:.3f} |",
        flush=True,
    )


def main():
    if not os.path.exists(BARE):
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "palisade-gateway", "--example", "bare_proxy"], cwd=drive.ROOT, check=True)
    os.makedirs(drive.OUT, exist_ok=True)
    echo = subprocess.Popen([drive.BIN, "echo", "--listen", f"127.0.0.1:{drive.TARGETS['direct']}"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        drive.wait_for_port(drive.TARGETS["direct"])
        print(f"Machine: {drive.machine()}. wrk -t2 -c64, {DURATION} s per run; µs of CPU per request.")
        print()
        print("| target | req/s | proxy user | proxy sys | echo user | echo sys | wrk user | wrk sys | proxy context switches |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for _ in range(ROUNDS):
            for name, (command, environment, port) in targets().items():
                if not ONLY or name in ONLY:
                    measure(name, command, environment, port, echo)
    finally:
        echo.terminate()


if __name__ == "__main__":
    main()
