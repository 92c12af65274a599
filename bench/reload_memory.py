#!/usr/bin/env python3
"""Memory across reloads (issue #34): a gateway with a 100,000-entry IP deny list, RELOADS reloads
(SIGHUP) with one more long-lived keep-alive client connection opened under each config, the way
connections accepted under old configs pile up in production. Reports the gateway's RSS after start
(with the connections of the first config open), after the reloads, and the difference; before the
fix, each held connection kept its config (and its IP list) alive.

Usage: python3 bench/reload_memory.py   (RELOADS=30 by default; HOLD=0 keeps no connection open across
reloads, to separate what the reloads cost from what held connections keep; needs target/release/palisade)
"""
import os
import signal
import socket
import subprocess
import sys
import time

from benchlib import rss_kib, wait_for_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "bench", "out", "reload-memory")
BIN = os.environ.get("PALISADE", os.path.join(ROOT, "target", "release", "palisade"))
RELOADS = int(os.environ.get("RELOADS", "30"))
# HOLD=0: no connection kept open across reloads (what the reloads alone cost).
HOLD = os.environ.get("HOLD", "1") != "0"
PORT, ADMIN, TARGET = 19230, 19231, 19232


def reloads_ok():
    with socket.create_connection(("127.0.0.1", ADMIN)) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        text = b""
        while chunk := s.recv(65536):
            text += chunk
    for line in text.decode().splitlines():
        if line.startswith('palisade_config_reloads_total{outcome="ok"}'):
            return int(float(line.split()[-1]))
    return 0


def held_connection():
    """A keep-alive connection that has been served once (so it belongs to the current config)."""
    s = socket.create_connection(("127.0.0.1", PORT))
    s.sendall(b"GET /held HTTP/1.1\r\nHost: bench\r\n\r\n")
    answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:80]
    return s


def main():
    os.makedirs(OUT, exist_ok=True)
    deny = os.path.join(OUT, "deny.txt")
    with open(deny, "w") as f:
        for n in range(100_000):
            f.write(f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}/32\n")
    config = os.path.join(OUT, "gateway.yaml")

    def write_config(version):
        with open(config, "w") as f:
            f.write(
                f"""# version {version}
listeners: [{{ name: public, address: 127.0.0.1:{PORT} }}]
admin: {{ address: 127.0.0.1:{ADMIN} }}
access_log: {{ enabled: false }}
reload: {{ watch: false }}
ip_rules: {{ deny_files: [{deny}] }}
clusters: {{ echo: {{ targets: ["127.0.0.1:{TARGET}"] }} }}
routes: [{{ name: all, match: {{ prefix: / }}, cluster: echo, public: true }}]
"""
            )

    write_config(0)
    echo = subprocess.Popen([BIN, "echo", "--listen", f"127.0.0.1:{TARGET}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(TARGET)
    gateway = subprocess.Popen([BIN, "gateway", "--config", config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(PORT)
        held = [held_connection()]
        time.sleep(1)
        start = rss_kib(gateway.pid)
        for version in range(1, RELOADS + 1):
            write_config(version)
            before = reloads_ok()
            gateway.send_signal(signal.SIGHUP)
            deadline = time.time() + 30
            while reloads_ok() <= before:
                if time.time() > deadline:
                    raise SystemExit(f"reload {version} did not happen")
                time.sleep(0.05)
            if HOLD:
                held.append(held_connection())
        time.sleep(1)
        after = rss_kib(gateway.pid)
        print(f"RSS after start, 1 connection held: {start / 1024:.1f} MiB")
        print(f"RSS after {RELOADS} reloads, {len(held)} connections held: {after / 1024:.1f} MiB")
        print(f"difference: {(after - start) / 1024:+.1f} MiB")
        for s in held:
            s.close()
    finally:
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(timeout=30)
        echo.kill()
        echo.wait()


if __name__ == "__main__":
    sys.exit(main())
