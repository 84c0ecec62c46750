#!/usr/bin/env bash
# Gatehouse vs nginx, side by side in one run, on loopback.
# Upstream: nginx `return 200` pinned to CPU 1. Proxies (nginx with 1 worker, gatehouse with
# --workers 1) pinned to CPU 0. Load: wrk pinned to CPU 1. Writes a markdown table to
# bench/results.md (and stdout). Ratios between rows are the figure; absolute numbers on a
# shared 2-core machine are noise.
#
#   bench/run.sh                      # needs: apt-get install -y nginx wrk
#   DUR=20 CONN=128 ROUNDS=3 bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${DUR:-10}; CONN=${CONN:-64}; ROUNDS=${ROUNDS:-2}
for b in nginx wrk taskset; do command -v $b >/dev/null || { echo "missing $b: apt-get install -y nginx wrk"; exit 2; }; done
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/gatehouse-target}"
if [ -z "${BIN:-}" ]; then   # BIN=path/to/gatehouse skips the build
  cargo build --release -p gatehouse --locked >/dev/null
  BIN="$CARGO_TARGET_DIR/release/gatehouse"
fi
D=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; sleep 0.3; rm -rf "$D"' EXIT
cat > "$D/up.conf" <<C
worker_processes 1; daemon off; pid $D/up.pid; error_log $D/up.err;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:9001 reuseport backlog=4096; keepalive_requests 100000;
  location / { return 200 "hello from upstream\n"; } } }
C
cat > "$D/nginx.conf" <<C
worker_processes 1; daemon off; pid $D/ng.pid; error_log $D/ng.err;
events { worker_connections 4096; }
http { access_log off; upstream up { server 127.0.0.1:9001; keepalive 128; keepalive_requests 100000; }
  server { listen 127.0.0.1:9101 backlog=4096; keepalive_requests 100000;
  location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
C
taskset -c 1 nginx -c "$D/up.conf" & sleep 0.5
taskset -c 0 nginx -c "$D/nginx.conf" &
taskset -c 0 "$BIN" serve --config bench/proxy.yaml --workers 1 --listen 127.0.0.1:9102 \
  --admin-listen 127.0.0.1:0 --status-listen 127.0.0.1:0 --data-dir "$D" --log-level warn >"$D/gw.log" 2>&1 &
sleep 1.5
run() { # port -> "rps p50 p99"
  local out; out=$(taskset -c 1 wrk -t1 -c"$CONN" -d"${DUR}s" --latency "http://127.0.0.1:$1/" 2>&1)
  echo "$(echo "$out" | awk '/Requests\/sec/{print $2}') $(echo "$out" | awk '$1=="50%"{print $2}') $(echo "$out" | awk '$1=="99%"{print $2}') $(echo "$out" | awk '/Non-2xx/{print $NF}')"
}
{
  echo "| round | proxy | requests/s | p50 | p99 | non-2xx | ratio to nginx |"
  echo "|---|---|---|---|---|---|---|"
  for r in $(seq 1 "$ROUNDS"); do
    read -r nr n50 n99 nerr <<<"$(run 9101)"
    read -r gr g50 g99 gerr <<<"$(run 9102)"
    ratio=$(awk -v g="$gr" -v n="$nr" 'BEGIN{ if (n>0) printf "%.2f", g/n; else print "-" }')
    echo "| $r | nginx | $nr | $n50 | $n99 | ${nerr:-0} | 1.00 |"
    echo "| $r | gatehouse | $gr | $g50 | $g99 | ${gerr:-0} | $ratio |"
  done
} | tee bench/results.md
