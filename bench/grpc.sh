#!/usr/bin/env bash
# gRPC unary latency at concurrency 1: direct, through nginx (`grpc_pass`, when nginx is
# installed) and through gatehouse — the figure is the p50/p99 each proxy adds. A python
# grpcio server (the one the tests use) is the upstream; the client is grpcio too, so its
# own overhead is in every row alike.
#   bench/grpc.sh                      N=20000 by default; BIN=path/to/gatehouse skips the build
# Needs the test virtualenv (./scripts/test.sh makes it) or GATEHOUSE_TEST_PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-20000}
PY=${GATEHOUSE_TEST_PYTHON:-$HOME/.cache/gatehouse-venv/bin/python}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/gatehouse-target}"
if [ -z "${BIN:-}" ]; then
  cargo build --release -p gatehouse --locked >/dev/null
  BIN="$CARGO_TARGET_DIR/release/gatehouse"
fi
D=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; sleep 0.3; rm -rf "$D"' EXIT
taskset -c 1 "$PY" crates/gatehouse/tests/grpc/server.py > "$D/port" &
for _ in $(seq 50); do [ -s "$D/port" ] && break; sleep 0.1; done
PORT=$(head -1 "$D/port")
cat > "$D/g.yaml" <<Y
_format_version: "1"
services:
  - url: grpc://127.0.0.1:$PORT
    routes: [{ paths: ["/test.Echo/"], protocols: [grpc] }]
Y
taskset -c 0 "$BIN" serve --config "$D/g.yaml" --workers 1 --listen 127.0.0.1:9110 --tls-listen off \
  --admin-listen 127.0.0.1:0 --status-listen 127.0.0.1:0 --data-dir "$D" >/dev/null 2>&1 &
if command -v nginx >/dev/null; then
  cat > "$D/ng.conf" <<C
worker_processes 1; daemon off; pid $D/ng.pid; error_log $D/ng.err;
events { worker_connections 1024; }
http { access_log off; upstream g { server 127.0.0.1:$PORT; keepalive 16; }
  server { listen 127.0.0.1:9111 http2; location / { grpc_pass grpc://g; } } }
C
  taskset -c 0 nginx -c "$D/ng.conf" &
fi
sleep 1
echo "direct   $(taskset -c 1 "$PY" bench/grpc_latency.py 127.0.0.1:$PORT "$N")"
command -v nginx >/dev/null && echo "nginx    $(taskset -c 1 "$PY" bench/grpc_latency.py 127.0.0.1:9111 "$N")"
echo "gateway  $(taskset -c 1 "$PY" bench/grpc_latency.py 127.0.0.1:9110 "$N")"
