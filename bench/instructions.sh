#!/usr/bin/env bash
# User-space instructions per proxied request, counted by valgrind's callgrind: repeatable for the same
# binary and inputs whatever else the machine is doing, so it shows the effect of a change on the
# request path where wrk on this noisy 2-core VM cannot (its runs vary by ±15%). Kernel work (socket
# I/O) is not counted; bench/drive.py measures the whole.
#
#   bash bench/instructions.sh [CONFIG] [REQUESTS]      # default bench/palisade.yaml, 4000 requests
#   PEER=nginx bash bench/instructions.sh               # nginx on bench/nginx.conf, one process
#   PEER=haproxy bash bench/instructions.sh             # HAProxy on bench/haproxy.cfg, one thread
#   PEER=bare bash bench/instructions.sh                # the bare hyper proxy with the same header work
#                                                       # (crates/palisade-gateway/examples/bare_proxy.rs), one thread
#
# Starts the echo upstream and the proxy (under callgrind) from target/release, sends 500 warm-up
# requests, zeroes the counters, sends REQUESTS keep-alive requests over 4 connections, and prints the
# count per request. The callgrind file stays in bench/out/ for `callgrind_annotate --inclusive=yes`.
# The peers run on the configs bench/drive.py gives them (the same per-request work as Palisade's
# defaults), in one process / thread so that all their work is in the one counted process.
set -euo pipefail
cd "$(dirname "$0")/.."
PEER=${PEER:-}
CONFIG=${1:-bench/palisade.yaml}
REQUESTS=${2:-4000}
BIN=${BIN:-target/release/palisade}
OUT=bench/out
mkdir -p "$OUT"
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind; }
[ -x "$BIN" ] || cargo build --release -q
PORT=$(grep -m1 -oE 'address: 127\.0\.0\.1:[0-9]+' "$CONFIG" | cut -d: -f3)
UPSTREAM=$(grep -m1 -oE 'targets: \["127\.0\.0\.1:[0-9]+' "$CONFIG" | cut -d'"' -f2)
case "$PEER" in
  "") PROXY=("$BIN" gateway --config "$CONFIG"); NAME="$(git rev-parse --short HEAD) $CONFIG" ;;
  nginx)
    command -v nginx >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx-light; }
    PORT=19081
    PROXY=(nginx -p "$PWD/$OUT" -c "$PWD/bench/nginx.conf" -g "daemon off; master_process off;")
    NAME="nginx $(nginx -v 2>&1 | cut -d/ -f2) bench/nginx.conf" ;;
  haproxy)
    command -v haproxy >/dev/null || { apt-get update -qq && apt-get install -y -qq haproxy; }
    PORT=19082
    sed 's/^    nbthread .*/    nbthread 1/' bench/haproxy.cfg >"$OUT/haproxy-1.cfg"
    PROXY=(haproxy -db -f "$OUT/haproxy-1.cfg")
    NAME="haproxy $(haproxy -v | head -1 | awk '{print $3}') bench/haproxy.cfg" ;;
  bare)
    [ -x target/release/examples/bare_proxy ] || cargo build --release -q -p palisade-gateway --example bare_proxy
    PORT=19090
    export BARE_HEADERS=1
    PROXY=(target/release/examples/bare_proxy "127.0.0.1:$PORT" "$UPSTREAM" 1)
    NAME="bare hyper proxy with the peers' header work" ;;
  *) echo "PEER is nginx, haproxy or bare" >&2; exit 2 ;;
esac
rm -f "$OUT"/callgrind.out*

"$BIN" echo --listen "$UPSTREAM" >"$OUT/echo.log" 2>&1 &
ECHO=$!
valgrind --tool=callgrind --dump-instr=no ${VALGRIND_ARGS:-} --callgrind-out-file="$OUT/callgrind.out" \
  "${PROXY[@]}" >"$OUT/proxy-callgrind.log" 2>&1 &
GATEWAY=$!
trap 'kill $GATEWAY $ECHO 2>/dev/null || true' EXIT

send() {
  python3 - "$PORT" "$1" <<'EOF'
import http.client, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(4)]
for i in range(count):
    connection = connections[i % 4]
    connection.request("GET", "/bench/item?x=1")
    response = connection.getresponse()
    response.read()
    if response.status != 200:
        sys.exit(f"unexpected status {response.status}")
EOF
}

for _ in $(seq 120); do
  curl -s -o /dev/null "http://127.0.0.1:$PORT/bench/item" && break
  sleep 0.5
done
send 500
callgrind_control -z "$GATEWAY" >/dev/null
send "$REQUESTS"
callgrind_control -d "$GATEWAY" >/dev/null
sleep 1
DUMP=$(ls "$OUT"/callgrind.out.* | head -1)
TOTAL=$(callgrind_annotate "$DUMP" 2>/dev/null | grep -m1 'PROGRAM TOTALS' | awk '{gsub(",", "", $1); print $1}')
echo "$NAME: $((TOTAL / REQUESTS)) instructions per request ($TOTAL over $REQUESTS; $DUMP)"
