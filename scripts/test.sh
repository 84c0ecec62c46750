#!/usr/bin/env bash
# The whole test suite. Installs what the tests need on a fresh Debian machine (curl as the
# real client, openssl to make test keys), then runs every test of the workspace against the
# real binary.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/gatehouse-target}"
missing=""
command -v curl >/dev/null 2>&1 || missing="$missing curl"
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
if [ -n "$missing" ]; then
  echo "installing:$missing"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing) >/dev/null
fi
cargo test --workspace --locked "$@"
