#!/usr/bin/env bash
# The whole test suite. Installs what the tests need on a fresh Debian machine (curl as the
# real client), then runs every test of the workspace against the real binary.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/gatehouse-target}"
if ! command -v curl >/dev/null 2>&1; then
  echo "installing curl (end-to-end tests use it as the client)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl) >/dev/null
fi
cargo test --workspace --locked "$@"
