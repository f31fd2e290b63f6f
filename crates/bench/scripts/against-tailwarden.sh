#!/usr/bin/env bash
# Runs one tailwarden-bench scenario against a fresh tailwarden server (SQLite, policy in the database) inside a
# new loopback-only network namespace, so nothing leaves the machine.
#
#   crates/bench/scripts/against-tailwarden.sh segmented --clients 10000 --source-addrs 4 --changes 100
#
# BIN: directory holding release builds of `tailwarden` and `tailwarden-bench` (default: $CARGO_TARGET_DIR/release
# or target/release). SERVER_YAML: extra config lines for the server. PERF_DATA: record the server with
# `perf record --call-graph dwarf` into that file (build the server with `--profile profiling` for line tables).
# HEAPTRACK_DATA: run the server under heaptrack, writing that file (read it with `heaptrack_print`; the default build
# uses the system allocator, which heaptrack sees).
# BENCH_WRAPPER: a command prefix for the generator, e.g. "/usr/bin/time -f %U,%S" to see its own CPU time.
set -euo pipefail
if [ -z "${TW_IN_NETNS:-}" ]; then
    exec unshare -n env TW_IN_NETNS=1 bash "$0" "$@"
fi
ip link set lo up
BIN=${BIN:-${CARGO_TARGET_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)/target}/release}
D=$(mktemp -d /tmp/twload.XXXX)
cat > "$D/config.yaml" <<YAML
server_url: http://127.0.0.1:18080
listen_addr: 127.0.0.1:18080
noise:
  private_key_path: $D/noise.key
database:
  type: sqlite
  sqlite:
    path: $D/db.sqlite
derp:
  server:
    enabled: true
    region_id: 999
    stun_listen_addr: 127.0.0.1:13478
    private_key_path: $D/derp.key
  urls: []
policy:
  mode: database
log:
  level: warn
unix_socket: $D/tw.sock
${SERVER_YAML:-}
YAML
ulimit -n "$(ulimit -Hn)"
if [ -n "${HEAPTRACK_DATA:-}" ]; then
    heaptrack -o "$HEAPTRACK_DATA" "$BIN/tailwarden" serve --config "$D/config.yaml" > "$D/heaptrack.log" 2> "$D/server.log" &
else
    "$BIN/tailwarden" serve --config "$D/config.yaml" 2> "$D/server.log" &
fi
W=$!
# The server's own pid (under heaptrack it is heaptrack's child), for CPU and RSS readings and for stopping it.
server_pid() { pgrep -f -n "^$BIN/tailwarden serve --config $D/config.yaml" || true; }
trap 'kill $(server_pid) 2>/dev/null; wait $W 2>/dev/null; rm -rf "$D"' EXIT
for _ in $(seq 300); do [ -S "$D/tw.sock" ] && break; sleep 0.1; done
P=$(server_pid)
K=$("$BIN/tailwarden" apikeys create --config "$D/config.yaml" 2>/dev/null | tail -1 | tr -d '[:space:]')
if [ -n "${PERF_DATA:-}" ]; then
    perf record -q --call-graph dwarf,16384 -F 199 -p "$P" -o "$PERF_DATA" 2>/dev/null &
    PERF=$!
fi
status=0
${BENCH_WRAPPER:-} "$BIN/tailwarden-bench" "$@" --control-url http://127.0.0.1:18080 --api-key "$K" --server-pid "$P" --strict || status=$?
if [ -n "${PERF_DATA:-}" ]; then kill -INT "$PERF"; wait "$PERF" || true; fi
exit $status
