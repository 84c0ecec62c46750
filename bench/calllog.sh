#!/usr/bin/env bash
# The call log's cost: the same gateway with the call log on and off, side by side in one
# run, alternating rounds. Upstream: nginx `return 200` on CPU 1; wrk on CPU 1; each gateway
# (--workers 1, the whole process: proxy worker, call-log writer, SQLite) on CPU 0. Reports
# requests/s, p99, CPU time per request and what the call log did (written, dropped).
# Ratios between rows are the figure to report.
#
#   bench/calllog.sh                      # plain route (bench/proxy.yaml)
#   CONFIG=bench/plugins.yaml HEADER="apikey: bench-key" bench/calllog.sh
# Env: DUR (default 10), CONN (default 64), ROUNDS (default 3), BIN (skip the build).
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${DUR:-10}; CONN=${CONN:-64}; ROUNDS=${ROUNDS:-3}
CONFIG=${CONFIG:-bench/proxy.yaml}; HEADER=${HEADER:-}
for b in nginx wrk taskset curl; do command -v $b >/dev/null || { echo "missing $b: apt-get install -y nginx wrk curl"; exit 2; }; done
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/gatehouse-target}"
if [ -z "${BIN:-}" ]; then
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
taskset -c 1 nginx -c "$D/up.conf" & sleep 0.5
mkdir -p "$D/on" "$D/off"
taskset -c 0 "$BIN" serve --config "$CONFIG" --workers 1 --listen 127.0.0.1:9102 --tls-listen off \
  --admin-listen 127.0.0.1:9112 --status-listen 127.0.0.1:9122 --admin-token calllog-bench-token \
  --data-dir "$D/on" --log-level warn --call-log on >"$D/on.log" 2>&1 &
ON=$!
taskset -c 0 "$BIN" serve --config "$CONFIG" --workers 1 --listen 127.0.0.1:9103 --tls-listen off \
  --admin-listen 127.0.0.1:9113 --status-listen 127.0.0.1:9123 \
  --data-dir "$D/off" --log-level warn --call-log off >"$D/off.log" 2>&1 &
OFF=$!
sleep 2
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
run() { # port pid -> "rps p99 cpu_us_per_request"
  local hdr=() out t0 t1 rps
  [ -n "$HEADER" ] && hdr=(-H "$HEADER")
  t0=$(ticks "$2")
  out=$(taskset -c 1 wrk -t1 -c"$CONN" -d"${DUR}s" --latency "${hdr[@]}" "http://127.0.0.1:$1/" 2>&1)
  # The writer may still be catching up: its CPU counts too.
  sleep 2
  t1=$(ticks "$2")
  rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
  echo "$rps $(echo "$out" | awk '$1=="99%"{print $2}') \
$(awk -v a="$t0" -v b="$t1" -v hz="$HZ" -v r="$rps" -v d="$DUR" 'BEGIN{ printf "%.2f", (b-a)/hz*1e6/(r*d) }')"
}
echo "config: $CONFIG${HEADER:+ (header: $HEADER)}, ${DUR}s x $ROUNDS rounds, $CONN connections"
echo
echo "| round | call log | requests/s | p99 | CPU µs/request | ratio on/off |"
echo "|---|---|---|---|---|---|"
for r in $(seq 1 "$ROUNDS"); do
  read -r fr f99 fcpu <<<"$(run 9103 "$OFF")"
  read -r nr n99 ncpu <<<"$(run 9102 "$ON")"
  ratio=$(awk -v a="$nr" -v b="$fr" 'BEGIN{ if (b>0) printf "%.2f", a/b; else print "-" }')
  echo "| $r | off | $fr | $f99 | $fcpu | |"
  echo "| $r | on | $nr | $n99 | $ncpu | $ratio |"
done
echo
curl -s -H 'Authorization: Bearer calllog-bench-token' http://127.0.0.1:9112/status \
  | python3 -c 'import json,sys; print("call log after the run:", json.load(sys.stdin)["call_log"])'
