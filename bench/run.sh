#!/usr/bin/env bash
# Benchmark harness: builds Palisade (release), installs the peers from Debian packages if missing, then
# runs bench/drive.py, which starts the echo upstream, Palisade, nginx and HAProxy and drives each the
# same way. Run by hand (never in CI); results go to bench/RESULTS.md by hand, with date and machine.
#
#   bash bench/run.sh                         # defaults: 3 rounds, 10 s per run, 16/64/256 connections
#   ROUNDS=5 DURATION=20 bash bench/run.sh
#   bash bench/run.sh auth                    # JWT routes (RS256, ES256) against HAProxy's jwt_verify
#   bash bench/run.sh authz                   # a 20-policy Cedar set against a scope rule
#   bash bench/run.sh authz-instructions      # the same, in instructions per request (callgrind)
#   bash bench/run.sh limits                  # rate limits (local, Redis), validation, HAProxy stick table
#   bash bench/run.sh mesh                    # gateway ⇒ sidecar ⇒ app over mTLS, beside HAProxy
#   bash bench/run.sh detection               # the cost of feeding every answer to the anomaly detectors
#   bash bench/run.sh console                 # proxy throughput with the web console open and refreshing vs closed
#   bash bench/run.sh latency                 # p99 added with proxies and load generator on separate cores
#   bash bench/run.sh scan                    # palisade scan vs checkov (from PyPI) on 1,000 generated manifests
#   bash bench/instructions.sh                # user-space instructions per request (callgrind; repeatable)
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
for tool in nginx haproxy wrk redis-server; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq nginx-light haproxy wrk redis-server
fi
command -v oha >/dev/null || cargo install oha --locked
cargo build --release -q
if [ "${1:-}" = scan ]; then
  shift
  exec python3 bench/scan.py "$@"
fi
if [ "${1:-}" = authz-instructions ]; then
  shift
  command -v valgrind >/dev/null || apt-get install -y -qq valgrind
  exec python3 bench/authz-instructions.py "$@"
fi
if [ "${1:-}" = authz ]; then
  shift
  exec python3 bench/authz.py "$@"
fi
if [ "${1:-}" = console ]; then
  shift
  exec python3 bench/console.py "$@"
fi
if [ "${1:-}" = detection ]; then
  shift
  exec python3 bench/detection.py "$@"
fi
if [ "${1:-}" = mesh ]; then
  shift
  exec python3 bench/mesh.py "$@"
fi
if [ "${1:-}" = limits ]; then
  shift
  exec python3 bench/limits.py "$@"
fi
if [ "${1:-}" = latency ]; then
  shift
  exec python3 bench/latency.py "$@"
fi
if [ "${1:-}" = auth ]; then
  shift
  exec python3 bench/auth.py "$@"
fi
exec python3 bench/drive.py "$@"
