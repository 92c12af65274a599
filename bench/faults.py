#!/usr/bin/env python3
"""Faults beside nginx and HAProxy (issue #34): what clients see when a target dies under load, and
when the proxy is stopped while clients keep opening connections.

kill-one-target: two echo targets behind each proxy, each proxy with its stock retry behaviour
(Palisade: retries.on [connect_failure, reset]; nginx: proxy_next_upstream error timeout; HAProxy:
retries 3, option redispatch, retry-on conn-failure). wrk (2 threads, 32 keep-alive connections, GET)
runs for DURATION seconds; after KILL_AT seconds one target is killed with SIGKILL. Reported: requests
served, and client-visible failures (non-2xx answers plus wrk's socket errors).

stop-under-churn: one target; CLIENTS asyncio clients each open a new connection per request
(`Connection: close`) as fast as they can; after STOP_AT seconds the proxy gets its graceful-stop
signal (Palisade SIGTERM, nginx SIGQUIT, HAProxy SIGUSR1). Each attempt is: answered (a whole 200),
refused (the connect failed: the listener had closed, the client goes elsewhere) or lost (connected,
then closed or reset without a whole answer). Lost connections are the failure.

Every scenario runs ROUNDS rounds, the proxies interleaved within a round; medians are reported.
Writes a markdown report to bench/out/faults.md.
"""
import asyncio
import os
import re
import signal
import statistics
import subprocess
import sys
import time

import benchlib
from benchlib import free, wait_for_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "bench", "out", "faults")
BIN = os.environ.get("PALISADE", os.path.join(ROOT, "target", "release", "palisade"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
DURATION = int(os.environ.get("DURATION", "6"))
KILL_AT = float(os.environ.get("KILL_AT", "2"))
STOP_AT = float(os.environ.get("STOP_AT", "1.5"))
CLIENTS = int(os.environ.get("CLIENTS", "32"))
TARGET_PORTS = (19200, 19201)
PROXY_PORT = 19210
PROXIES = ("palisade", "nginx", "haproxy")


def wait_until_free(port, timeout=10.0):
    deadline = time.time() + timeout
    while not free(port):
        if time.time() > deadline:
            raise SystemExit(f"port {port} is still taken (a process left over from an earlier run?)")
        time.sleep(0.05)


def write(name, text):
    return benchlib.write(OUT, name, text)


def palisade_config(targets):
    listed = ", ".join(f'"127.0.0.1:{p}"' for p in targets)
    return write(
        "palisade.yaml",
        f"""listeners:
  - {{ name: public, address: 127.0.0.1:{PROXY_PORT} }}
admin: {{ address: 127.0.0.1:19219 }}
access_log: {{ enabled: false }}
clusters:
  echo:
    targets: [{listed}]
routes:
  - {{ name: all, match: {{ prefix: / }}, cluster: echo, public: true }}
""",
    )


def nginx_config(targets):
    servers = "\n".join(f"        server 127.0.0.1:{p};" for p in targets)
    return write(
        "nginx.conf",
        f"""worker_processes 2;
pid nginx.pid;
error_log nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    upstream echo {{
{servers}
        keepalive 512;
    }}
    server {{
        listen 127.0.0.1:{PROXY_PORT};
        location / {{
            proxy_pass http://echo;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
""",
    )


def haproxy_config(targets):
    servers = "\n".join(f"    server t{i} 127.0.0.1:{p}" for i, p in enumerate(targets))
    return write(
        "haproxy.cfg",
        f"""global
    nbthread 2
    maxconn 8000
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    retries 3
    option redispatch
    option http-keep-alive
    http-reuse always
frontend bench
    bind 127.0.0.1:{PROXY_PORT}
    default_backend echo
backend echo
{servers}
""",
    )


def start_targets(count):
    targets = []
    for port in TARGET_PORTS[:count]:
        wait_until_free(port)
        process = subprocess.Popen(
            [BIN, "echo", "--listen", f"127.0.0.1:{port}", "--name", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        targets.append(process)
    for port in TARGET_PORTS[:count]:
        wait_for_port(port)
    return targets


def start_proxy(name, ports):
    wait_until_free(PROXY_PORT)
    log = open(os.path.join(OUT, f"{name}.log"), "w")
    if name == "palisade":
        command = [BIN, "gateway", "--config", palisade_config(ports)]
    elif name == "nginx":
        command = ["nginx", "-p", OUT, "-c", nginx_config(ports), "-g", "daemon off;"]
    else:
        command = ["haproxy", "-f", haproxy_config(ports)]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    wait_for_port(PROXY_PORT)
    return process


def stop(process, sig=signal.SIGTERM):
    """Stops a process and waits for it. SIGTERM by default: nginx's master stops its workers on it
    (killing only the master would leave them holding the port)."""
    if process.poll() is None:
        process.send_signal(sig)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wrk_failures(output):
    served = int(re.search(r"(\d+) requests in", output).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    failed = int(non_2xx.group(1)) if non_2xx else 0
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if errors:
        failed += sum(int(n) for n in errors.groups())
    return served, failed


def kill_one_target(name):
    targets = start_targets(2)
    proxy = start_proxy(name, TARGET_PORTS)
    wrk = subprocess.Popen(
        ["wrk", "-t2", "-c32", f"-d{DURATION}s", f"http://127.0.0.1:{PROXY_PORT}/item"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(KILL_AT)
    stop(targets[1], signal.SIGKILL)
    output, _ = wrk.communicate()
    stop(proxy)
    stop(targets[0])
    return wrk_failures(output)


REQUEST = b"GET /churn HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"


async def one_attempt():
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", PROXY_PORT)
    except OSError:
        return "refused"
    try:
        writer.write(REQUEST)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(-1), timeout=10)
    except (OSError, asyncio.TimeoutError):
        return "lost"
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        return "lost"
    length = re.search(rb"(?i)content-length:\s*(\d+)", head)
    if length and len(body) < int(length.group(1)):
        return "lost"
    return "answered"


async def churn(proxy, signal_to_send):
    counts = {"answered": 0, "refused": 0, "lost": 0}
    loop = asyncio.get_running_loop()
    started = loop.time()
    stopped = False

    async def client():
        while True:
            outcome = await one_attempt()
            counts[outcome] += 1
            # After the stop, each client keeps trying until the listener refuses it.
            if stopped and outcome == "refused":
                return
            if loop.time() - started > STOP_AT + 20:
                return

    tasks = [asyncio.create_task(client()) for _ in range(CLIENTS)]
    await asyncio.sleep(STOP_AT)
    stopped = True
    proxy.send_signal(signal_to_send)
    await asyncio.gather(*tasks)
    return counts


def stop_under_churn(name):
    targets = start_targets(1)
    proxy = start_proxy(name, TARGET_PORTS[:1])
    graceful = {"palisade": signal.SIGTERM, "nginx": signal.SIGQUIT, "haproxy": signal.SIGUSR1}[name]
    counts = asyncio.run(churn(proxy, graceful))
    stop(proxy)
    stop(targets[0])
    return counts


def median(values):
    return statistics.median(values) if values else float("nan")


def main():
    os.makedirs(OUT, exist_ok=True)
    kills = {name: [] for name in PROXIES}
    stops = {name: [] for name in PROXIES}
    for round_number in range(ROUNDS):
        for name in PROXIES:
            kills[name].append(kill_one_target(name))
            print(f"round {round_number + 1} {name} kill-one-target: {kills[name][-1]}", file=sys.stderr)
        for name in PROXIES:
            stops[name].append(stop_under_churn(name))
            print(f"round {round_number + 1} {name} stop-under-churn: {stops[name][-1]}", file=sys.stderr)
    lines = [
        f"kill-one-target: wrk -t2 -c32 -d{DURATION}s GET, one of two targets SIGKILLed after {KILL_AT:g} s; "
        f"{ROUNDS} rounds, medians (and every round)",
        "",
        "| proxy | requests served | client-visible failures | per round |",
        "|---|---:|---:|---|",
    ]
    for name in PROXIES:
        served = median([s for s, _ in kills[name]])
        failed = median([f for _, f in kills[name]])
        rounds = ", ".join(str(f) for _, f in kills[name])
        lines.append(f"| {name} | {served:,.0f} | {failed:g} | {rounds} |")
    lines += [
        "",
        f"stop-under-churn: {CLIENTS} clients, a new connection per request, graceful stop after {STOP_AT:g} s "
        f"(Palisade SIGTERM, nginx SIGQUIT, HAProxy SIGUSR1); {ROUNDS} rounds, medians (and every round)",
        "",
        "| proxy | answered | refused after the stop | lost (accepted, not answered) | lost per round |",
        "|---|---:|---:|---:|---|",
    ]
    for name in PROXIES:
        answered = median([c["answered"] for c in stops[name]])
        refused = median([c["refused"] for c in stops[name]])
        lost = median([c["lost"] for c in stops[name]])
        rounds = ", ".join(str(c["lost"]) for c in stops[name])
        lines.append(f"| {name} | {answered:,.0f} | {refused:g} | {lost:g} | {rounds} |")
    report = "\n".join(lines) + "\n"
    print(report)
    write("../faults.md", report)


if __name__ == "__main__":
    main()
