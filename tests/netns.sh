#!/usr/bin/env bash
# Run a command inside a fresh, loopback-only network namespace.
#
#   usage: tests/netns.sh <command> [args...]
#
# Inside the namespace:
#   - `lo` is up (127.0.0.1/8, ::1) and carries 192.0.2.1/32, an RFC 5737
#     documentation address that is never routed. Go's netmon/magicsock treat a
#     host with only 127.0.0.1/::1 as "network down"; this address fixes that
#     without adding any interface or route (docs/protocol.md §18.1).
#   - there is no other interface and no route, so any connect() to an address
#     outside 127.0.0.0/8, ::1 and 192.0.2.1 fails at once with ENETUNREACH.
#   - if `nft` is installed, an output filter additionally drops every packet
#     whose destination is not 127.0.0.0/8, 192.0.2.1 or ::1 (belt and braces in
#     case something adds a route). Skipped silently when `nft` is missing or
#     when TW_NETNS_NO_FILTER=1.
#
# Everything that must talk to each other (control server, DERP, Go and Rust
# clients, the test driver) has to run inside the *same* invocation, e.g.
#   tests/netns.sh tests/e2e/run.sh
# Build first: nothing inside the namespace can reach a package registry.
#
# The command replaces this script (exec, no fork), so its PID is the PID the
# caller started, signals reach it directly, and its exit status is ours.
# Needs root (or falls back to an unprivileged user namespace via `unshare -r`).
# With TW_NETNS_REPORT=1 the command runs as a child instead, and afterwards
# the packets dropped by the filter are reported on stderr (status preserved).

set -euo pipefail

readonly inner_marker="__tailwarden_netns_inner__"

if [[ $# -eq 0 ]]; then
    echo "usage: $0 <command> [args...]" >&2
    exit 2
fi

if [[ "$1" != "$inner_marker" ]]; then
    self="$(readlink -f -- "${BASH_SOURCE[0]}")"
    if [[ "$(id -u)" -eq 0 ]]; then
        exec unshare --net -- "$self" "$inner_marker" "$@"
    else
        exec unshare --map-root-user --net -- "$self" "$inner_marker" "$@"
    fi
fi
shift

if [[ $# -eq 0 ]]; then
    echo "netns.sh: no command given" >&2
    exit 2
fi

ip link set lo up
ip addr add 192.0.2.1/32 dev lo

filter=0
if [[ "${TW_NETNS_NO_FILTER:-0}" != 1 ]] && command -v nft >/dev/null 2>&1; then
    if nft -f - 2>/dev/null <<'EOF'
table inet tailwarden_netns {
    chain output {
        type filter hook output priority filter; policy accept;
        ip daddr { 127.0.0.0/8, 192.0.2.1 } accept
        ip6 daddr ::1 accept
        counter drop
    }
}
EOF
    then
        filter=1
    fi
fi

if [[ "${TW_NETNS_REPORT:-0}" != 1 ]]; then
    exec "$@"
fi

set +e
"$@"
status=$?
set -e
if [[ $filter -eq 1 ]]; then
    dropped="$(nft list chain inet tailwarden_netns output 2>/dev/null |
        sed -n 's/.*counter packets \([0-9]*\) bytes.*/\1/p')"
    if [[ -n "$dropped" && "$dropped" != 0 ]]; then
        echo "netns.sh: output filter dropped $dropped packet(s) to non-loopback destinations" >&2
    fi
fi
exit "$status"
