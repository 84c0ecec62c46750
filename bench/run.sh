#!/usr/bin/env bash
# Gatehouse vs nginx, side by side in one run, on loopback.
# Upstream: nginx `return 200` pinned to CPU 1. Proxies (nginx with 1 worker, gatehouse with
# --workers 1) pinned to CPU 0. Load: wrk pinned to CPU 1. Rounds alternate nginx and
# gatehouse, so drift of this shared machine hits both. Besides requests/s and latency, each
# row gives the proxy's CPU time per request (user + system, from /proc/PID/stat over the
# run): it moves far less with machine noise than requests/s does. Writes a markdown table
# to bench/results.md (and stdout). Ratios between rows are the figure to report.
#
#   bench/run.sh                                   # plain proxy, bench/proxy.yaml
#   CONFIG=bench/plugins.yaml HEADER="apikey: bench-key" ROUNDS=5 bench/run.sh
#   DUR=20 CONN=128 ROUNDS=3 BIN=path/to/gatehouse bench/run.sh
# Needs: apt-get install -y nginx wrk
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${DUR:-10}; CONN=${CONN:-64}; ROUNDS=${ROUNDS:-2}
CONFIG=${CONFIG:-bench/proxy.yaml}; HEADER=${HEADER:-}
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
taskset -c 0 "$BIN" serve --config "$CONFIG" --workers 1 --listen 127.0.0.1:9102 \
  --admin-listen 127.0.0.1:0 --status-listen 127.0.0.1:0 --data-dir "$D" --log-level warn >"$D/gw.log" 2>&1 &
GW=$!
sleep 1.5
NG=$(pgrep -P "$(cat "$D/ng.pid")" | head -1)   # the nginx worker
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
run() { # port pid [header] -> "rps p50 p99 non2xx cpu_us_per_request"
  local hdr=() out t0 t1 rps
  [ -n "${3:-}" ] && hdr=(-H "$3")
  t0=$(ticks "$2")
  out=$(taskset -c 1 wrk -t1 -c"$CONN" -d"${DUR}s" --latency "${hdr[@]}" "http://127.0.0.1:$1/" 2>&1)
  t1=$(ticks "$2")
  rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
  echo "$rps $(echo "$out" | awk '$1=="50%"{print $2}') $(echo "$out" | awk '$1=="99%"{print $2}') \
$(echo "$out" | awk '/Non-2xx/{print $NF}' | grep . || echo 0) \
$(awk -v a="$t0" -v b="$t1" -v hz="$HZ" -v r="$rps" -v d="$DUR" 'BEGIN{ printf "%.2f", (b-a)/hz*1e6/(r*d) }')"
}
{
  echo "config: $CONFIG${HEADER:+ (header: $HEADER)}, ${DUR}s x $ROUNDS rounds, $CONN connections"
  echo
  echo "| round | proxy | requests/s | p50 | p99 | non-2xx | CPU µs/request | ratio to nginx |"
  echo "|---|---|---|---|---|---|---|---|"
  for r in $(seq 1 "$ROUNDS"); do
    read -r nr n50 n99 nerr ncpu <<<"$(run 9101 "$NG")"
    read -r gr g50 g99 gerr gcpu <<<"$(run 9102 "$GW" "$HEADER")"
    ratio=$(awk -v g="$gr" -v n="$nr" 'BEGIN{ if (n>0) printf "%.2f", g/n; else print "-" }')
    echo "| $r | nginx | $nr | $n50 | $n99 | $nerr | $ncpu | 1.00 |"
    echo "| $r | gatehouse | $gr | $g50 | $g99 | $gerr | $gcpu | $ratio |"
  done
} | tee bench/results.md
