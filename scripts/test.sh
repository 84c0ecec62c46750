#!/usr/bin/env bash
# The whole test suite. Installs what the tests need on a fresh Debian machine — curl (the
# real HTTP client), openssl (test certificates, s_client), PostgreSQL and Redis (the cluster
# store and shared counters; started when not running), and a Python virtualenv with
# grpcio (the real gRPC client and server), schemathesis (checks the admin API against its
# OpenAPI document) and the openai and anthropic SDKs, and Node.js with the openai JS SDK —
# then runs every test of the workspace against the real binary.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/gatehouse-target}"
missing=""
command -v curl >/dev/null 2>&1 || missing="$missing curl"
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
command -v python3 >/dev/null 2>&1 || missing="$missing python3"
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing="$missing python3-venv"
command -v pg_ctlcluster >/dev/null 2>&1 || missing="$missing postgresql"
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
if [ -n "$missing" ]; then
  echo "installing:$missing"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing) >/dev/null
fi
# PostgreSQL (127.0.0.1:5432, user postgres, trust) and Redis (127.0.0.1:6379): each test
# makes its own database or key prefix there and removes it. Tests that stop a server run
# private ones (initdb / redis-server on free ports), never these.
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
fi
export GATEHOUSE_TEST_POSTGRES="${GATEHOUSE_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432}"
export GATEHOUSE_TEST_REDIS="${GATEHOUSE_TEST_REDIS:-redis://127.0.0.1:6379}"
# Python clients and servers the tests drive (versions pinned in scripts/requirements-test.txt).
VENV="${GATEHOUSE_TEST_VENV:-$HOME/.cache/gatehouse-venv}"
if ! "$VENV/bin/python" -c 'import grpc' >/dev/null 2>&1 \
   || ! cmp -s scripts/requirements-test.txt "$VENV/.requirements" 2>/dev/null; then
  echo "preparing the test virtualenv in $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r scripts/requirements-test.txt
  cp scripts/requirements-test.txt "$VENV/.requirements"
fi
export GATEHOUSE_TEST_PYTHON="$VENV/bin/python"
# JavaScript clients (versions pinned in scripts/js/package.json).
NODE_DIR="${GATEHOUSE_TEST_NODE:-$HOME/.cache/gatehouse-node}"
if ! cmp -s scripts/js/package.json "$NODE_DIR/package.json" 2>/dev/null \
   || [ ! -d "$NODE_DIR/node_modules/openai" ]; then
  echo "preparing the test Node.js packages in $NODE_DIR"
  mkdir -p "$NODE_DIR"
  cp scripts/js/package.json "$NODE_DIR/package.json"
  (cd "$NODE_DIR" && npm install --no-audit --no-fund --silent)
fi
export GATEHOUSE_TEST_NODE="$NODE_DIR"
cargo test --workspace --locked "$@"
