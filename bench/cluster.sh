#!/usr/bin/env bash
# The cluster's benchmarks (issue 11), each side by side in one run:
#
# 1. rate-limiting `policy: redis` vs `policy: local` on one node (a limit never reached):
#    upstream nginx `return 200` and wrk on CPU 1, the gateway on CPU 0, rounds alternating
#    between two gateway processes (bench/ratelimit-local.yaml, bench/ratelimit-redis.yaml).
#    Target: redis ≥ 0.8 × local.
# 2. Scale: N routes (default 100,000; bench/gen_scale.py) with their services, consumers
#    and plugins in PostgreSQL. Node A takes the config (POST /config); node B starts on it
#    (spawn → /ready, with the load/validate/compile split from its log); one admin change on
#    A until B serves it; B's memory with the config vs a node with an empty config.
#    Targets: start < 2 s, change live on every node < 1 s.
#
#   bench/cluster.sh                      # both parts
#   PART=limits ROUNDS=4 bench/cluster.sh
#   PART=scale ROUTES=20000 bench/cluster.sh
# Needs: nginx, wrk (apt-get install -y nginx wrk), PostgreSQL at 127.0.0.1:5432 (user
# postgres, trust) and Redis at 127.0.0.1:6379 — what scripts/test.sh starts.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${DUR:-8}; CONN=${CONN:-64}; ROUNDS=${ROUNDS:-3}; PART=${PART:-all}; ROUTES=${ROUTES:-100000}
PG=${PG:-postgres://postgres@127.0.0.1:5432}; REDIS=${REDIS:-redis://127.0.0.1:6379}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/gatehouse-target}"
if [ -z "${BIN:-}" ]; then
  cargo build --release -p gatehouse --locked >/dev/null
  BIN="$CARGO_TARGET_DIR/release/gatehouse"
fi
D=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; sleep 0.3; rm -rf "$D"' EXIT
TOKEN=bench-admin-token-0123456789
now() { date +%s.%N; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN{ printf "%.0f", (b-a)*1000 }'; }
wait_ready() { # status-port → waits for /ready 200
  until curl -sf "http://127.0.0.1:$1/ready" >/dev/null; do sleep 0.01; done
}

limits() {
  for b in nginx wrk taskset; do command -v $b >/dev/null || { echo "missing $b"; exit 2; }; done
  cat > "$D/up.conf" <<C
worker_processes 1; daemon off; pid $D/up.pid; error_log $D/up.err;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:9001 reuseport backlog=4096; keepalive_requests 100000;
  location / { return 200 "hello from upstream\n"; } } }
C
  taskset -c 1 nginx -c "$D/up.conf" & sleep 0.5
  local prefix="bench$$"
  taskset -c 0 "$BIN" serve --config bench/ratelimit-local.yaml --workers 1 --listen 127.0.0.1:9102 \
    --tls-listen off --admin-listen 127.0.0.1:0 --status-listen 127.0.0.1:9192 --data-dir "$D/l" \
    --log-level warn >"$D/local.log" 2>&1 &
  local LP=$!
  taskset -c 0 "$BIN" serve --config bench/ratelimit-redis.yaml --workers 1 --listen 127.0.0.1:9103 \
    --tls-listen off --admin-listen 127.0.0.1:0 --status-listen 127.0.0.1:9193 --data-dir "$D/r" \
    --redis "$REDIS" --redis-prefix "$prefix" --log-level warn >"$D/redis.log" 2>&1 &
  local RP=$!
  wait_ready 9192; wait_ready 9193
  run() { # port → "rps p99 non2xx"
    local out
    out=$(taskset -c 1 wrk -t1 -c"$CONN" -d"${DUR}s" --latency "http://127.0.0.1:$1/" 2>&1)
    echo "$(echo "$out" | awk '/Requests\/sec/{print $2}') $(echo "$out" | awk '$1=="99%"{print $2}') \
$(echo "$out" | awk '/Non-2xx/{print $NF}' | grep . || echo 0)"
  }
  echo "## rate-limiting policy: redis vs local (one node, ${DUR}s x $ROUNDS rounds, $CONN connections)"
  echo
  echo "| round | policy | requests/s | p99 | non-2xx | ratio to local |"
  echo "|---|---|---|---|---|---|"
  for r in $(seq 1 "$ROUNDS"); do
    read -r lr l99 lerr <<<"$(run 9102)"
    read -r rr r99 rerr <<<"$(run 9103)"
    echo "| $r | local | $lr | $l99 | $lerr | 1.00 |"
    echo "| $r | redis | $rr | $r99 | $rerr | $(awk -v a="$rr" -v b="$lr" 'BEGIN{printf "%.2f", a/b}') |"
  done
  echo
  echo "Lease scripts Redis ran (all redis rounds): $(redis-cli -u "$REDIS" info commandstats | grep -E '^cmdstat_(evalsha|eval):' | sed 's/,usec=.*//' | tr '\r\n' '  ')"
  redis-cli -u "$REDIS" --scan --pattern "{$prefix:*" | xargs -r redis-cli -u "$REDIS" del >/dev/null
  kill $LP $RP 2>/dev/null || true
  echo
}

scale() {
  local db="gh_bench_scale_$$"
  psql "$PG/postgres" -qc "CREATE DATABASE $db" >/dev/null
  trap 'kill $(jobs -p) 2>/dev/null; sleep 0.5; psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS '"$db"' WITH (FORCE)" >/dev/null 2>&1; rm -rf "$D"' EXIT
  local url="$PG/$db" kr
  kr="k1:$(head -c 32 /dev/urandom | base64 -w0)"
  python3 bench/gen_scale.py "$ROUTES" > "$D/big.json"
  start_node() { # name proxy-port admin-port status-port
    GATEHOUSE_KEYRING="$kr" "$BIN" serve --store "$url" --workers 1 --listen "127.0.0.1:$2" \
      --tls-listen off --admin-listen "127.0.0.1:$3" --status-listen "127.0.0.1:$4" \
      --data-dir "$D/$1" --admin-token "$TOKEN" --log-level info >"$D/$1.log" 2>&1 &
  }
  rss() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
  start_node a 9201 9281 9291; local A=$!; wait_ready 9291
  local base; base=$(rss $A)
  local t0 t1
  t0=$(now)
  curl -sf -XPOST -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    --data-binary @"$D/big.json" http://127.0.0.1:9281/config >/dev/null
  t1=$(now)
  echo "## Scale: $ROUTES routes in PostgreSQL"
  echo
  echo "- POST /config of $(du -h "$D/big.json" | cut -f1) JSON ($ROUTES routes, $((ROUTES/100)) services, $((ROUTES/10)) consumers): $(ms "$t0" "$t1") ms (validate, write, compile on node A)"
  t0=$(now); start_node b 9202 9282 9292; local B=$!; wait_ready 9292; t1=$(now)
  echo "- node B start (spawn → ready: connect, load, validate, compile): $(ms "$t0" "$t1") ms; its log: $(grep 'config loaded' "$D/b.log" | tail -1 | grep -o 'load_ms=[0-9]* validate_ms=[0-9]* compile_ms=[0-9]*')"
  sleep 1
  echo "- memory: node A before the config $((base/1024)) MiB RSS; node B with it $(( $(rss $B) / 1024 )) MiB RSS"
  for i in 1 2 3 4 5; do
    sleep 2   # let both nodes settle (the last-good copy is written in the background)
    t0=$(now)
    curl -sf -XPOST -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
      -d "{\"name\":\"late$i\",\"paths\":[\"/late$i\"],\"service\":\"s1\"}" http://127.0.0.1:9281/routes >/dev/null
    local t2; t2=$(now)
    until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:9202/late$i")" != 404 ]; do sleep 0.005; done
    t1=$(now)
    echo "- change $i: admin write on A answered in $(ms "$t0" "$t2") ms; served by B $(ms "$t0" "$t1") ms after the write began ($(grep 'config loaded' "$D/b.log" | tail -1 | grep -o 'load_ms=[0-9]* validate_ms=[0-9]* compile_ms=[0-9]*'))"
  done
  echo
}

case "$PART" in
  limits) limits ;;
  scale) scale ;;
  *) limits; scale ;;
esac
