#!/usr/bin/env python3
"""HTTP/2 clients that stop reading (issue #34), beside nginx and HAProxy: CONNECTIONS cleartext
HTTP/2 connections (prior knowledge) each open STREAMS streams for a 1 MiB answer with a 1 KiB
stream window, read the response heads and never send a WINDOW_UPDATE. Reported for each proxy: its
RSS before, while the streams are held (after HOLD seconds), and after the clients closed, and the
upstream connections it holds open while they are stalled (counted at the echo upstream with ss).

Needs `pip install h2`. Usage: python3 bench/stalled_h2.py  (CONNECTIONS=10 STREAMS=10 by default)
"""
import os
import socket
import subprocess
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.settings

import benchlib
from benchlib import rss_kib, wait_for_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "bench", "out", "stalled-h2")
BIN = os.environ.get("PALISADE", os.path.join(ROOT, "target", "release", "palisade"))
CONNECTIONS = int(os.environ.get("CONNECTIONS", "10"))
STREAMS = int(os.environ.get("STREAMS", "10"))
HOLD = float(os.environ.get("HOLD", "3"))
UPSTREAM, PROXY = 19240, 19241
BODY = 1024 * 1024


def children(pid):
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    except FileNotFoundError:
        return []
    return [int(p) for p in out.split()]


def upstream_connections():
    out = subprocess.run(["ss", "-Htn", "state", "established", f"( sport = :{UPSTREAM} )"], capture_output=True, text=True).stdout
    return len([line for line in out.splitlines() if line.strip()])


def write(name, text):
    return benchlib.write(OUT, name, text)


def start(name):
    if name == "palisade":
        config = write(
            "palisade.yaml",
            f"""listeners: [{{ name: public, address: 127.0.0.1:{PROXY} }}]
admin: {{ address: 127.0.0.1:19242 }}
access_log: {{ enabled: false }}
clusters: {{ echo: {{ targets: ["127.0.0.1:{UPSTREAM}"] }} }}
routes: [{{ name: all, match: {{ prefix: / }}, cluster: echo, public: true }}]
""",
        )
        command = [BIN, "gateway", "--config", config]
    elif name == "nginx":
        config = write(
            "nginx.conf",
            f"""worker_processes 2;
pid nginx.pid;
error_log nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    upstream echo {{ server 127.0.0.1:{UPSTREAM}; keepalive 512; }}
    server {{
        listen 127.0.0.1:{PROXY} http2;
        location / {{ proxy_pass http://echo; proxy_http_version 1.1; proxy_set_header Connection ""; }}
    }}
}}
""",
        )
        command = ["nginx", "-p", OUT, "-c", config, "-g", "daemon off;"]
    else:
        config = write(
            "haproxy.cfg",
            f"""global
    nbthread 2
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
frontend bench
    bind 127.0.0.1:{PROXY} proto h2
    default_backend echo
backend echo
    http-reuse always
    server echo 127.0.0.1:{UPSTREAM}
""",
        )
        command = ["haproxy", "-f", config]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(PROXY)
    return process


def stalled_connection():
    sock = socket.create_connection(("127.0.0.1", PROXY))
    config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    conn = h2.connection.H2Connection(config=config)
    conn.initiate_connection()
    conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1024})
    sock.sendall(conn.data_to_send())
    for n in range(STREAMS):
        stream = conn.get_next_available_stream_id()
        conn.send_headers(
            stream,
            [(":method", "GET"), (":path", f"/big/{n}"), (":scheme", "http"), (":authority", "bench"), ("x-echo-size", str(BODY))],
            end_stream=True,
        )
    sock.sendall(conn.data_to_send())
    # Read the heads (and the first KiB of each body); never acknowledge data.
    heads = 0
    sock.settimeout(5)
    try:
        while heads < STREAMS:
            data = sock.recv(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    heads += 1
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
    except socket.timeout:
        pass
    return sock, heads


def measure(name):
    upstream = subprocess.Popen([BIN, "echo", "--listen", f"127.0.0.1:{UPSTREAM}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(UPSTREAM)
    proxy = start(name)
    time.sleep(1)
    pids = [proxy.pid] + children(proxy.pid)
    before = rss_kib(*pids)
    held = [stalled_connection() for _ in range(CONNECTIONS)]
    heads = sum(h for _, h in held)
    time.sleep(HOLD)
    during = rss_kib(*pids)
    upstream_held = upstream_connections()
    for sock, _ in held:
        sock.close()
    time.sleep(2)
    after = rss_kib(*pids)
    proxy.terminate()
    proxy.wait(timeout=20)
    upstream.kill()
    upstream.wait()
    return before, during, after, heads, upstream_held


def main():
    os.makedirs(OUT, exist_ok=True)
    rows = []
    for name in ("palisade", "nginx", "haproxy"):
        before, during, after, heads, upstream_held = measure(name)
        rows.append(
            f"| {name} | {heads} | {before / 1024:.1f} | {during / 1024:.1f} | {(during - before) / (CONNECTIONS * STREAMS):.0f} | {after / 1024:.1f} | {upstream_held} |"
        )
    print(f"{CONNECTIONS} HTTP/2 connections x {STREAMS} stalled streams of 1 MiB answers, held {HOLD:g} s")
    print()
    print("| proxy | heads received | RSS before (MiB) | RSS stalled (MiB) | KiB per stalled stream | RSS after close (MiB) | upstream connections held |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    sys.exit(main())
