#!/usr/bin/env bash
# Starts a throwaway PostgreSQL for tailwarden's store tests and prints how to reach it.
#
#   eval "$(.ci/postgres.sh)"      # sets TAILWARDEN_TEST_POSTGRES_URL
#   cargo test -p tailwarden-store
#
# Idempotent: installs PostgreSQL (Debian's `postgresql` package) only if no server binaries are found, creates
# the cluster only once, starts it only if it is not running. The cluster lives in ${TAILWARDEN_PG_DIR:-/tmp/tailwarden-pg}
# (the path must be reachable by the `postgres` OS user when run as root), is owned by `postgres`, listens on
# 127.0.0.1:${TAILWARDEN_PG_PORT:-5433} only with trust authentication, and runs with durability switched off:
# it is for tests, never for data. Logs go to stderr; stdout carries only the `export` line.
set -euo pipefail

PORT="${TAILWARDEN_PG_PORT:-5433}"
DIR="${TAILWARDEN_PG_DIR:-/tmp/tailwarden-pg}"
DATA="$DIR/data"
URL="postgres://postgres@127.0.0.1:${PORT}/postgres"

log() { echo "postgres.sh: $*" >&2; }

# The newest installed server's bin directory (Debian keeps them in /usr/lib/postgresql/<major>/bin).
find_bin() {
    local d
    d="$(for c in /usr/lib/postgresql/*/bin; do
        [ -x "$c/pg_ctl" ] && [ -x "$c/initdb" ] && echo "$c"
    done | sort -V | tail -n1)"
    if [ -z "$d" ] && command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
        d="$(dirname "$(readlink -f "$(command -v pg_ctl)")")"
    fi
    echo "$d"
}

BIN="$(find_bin)"
if [ -z "$BIN" ]; then
    if [ "$(id -u)" != 0 ]; then
        log "PostgreSQL server binaries not found and not root: install the 'postgresql' package first"
        exit 1
    fi
    log "installing postgresql (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update >&2
    # Debian's package may try to start its own cluster on 5432; that is harmless (or denied in containers).
    apt-get install -y postgresql >&2 || true
    BIN="$(find_bin)"
    if [ -z "$BIN" ]; then
        log "apt-get install postgresql did not provide pg_ctl/initdb"
        exit 1
    fi
fi
log "using $BIN"

as_pg() {
    if [ "$(id -u)" = 0 ]; then
        if command -v runuser >/dev/null 2>&1; then
            runuser -u postgres -- "$@"
        else
            su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
        fi
    else
        "$@"
    fi
}

if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    log "creating the postgres OS user"
    useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres >&2
fi

mkdir -p "$DIR"
if [ "$(id -u)" = 0 ]; then
    chown postgres:postgres "$DIR"
fi
chmod 700 "$DIR"

MAJOR="$("$BIN/pg_ctl" --version | awk '{print $3}' | cut -d. -f1)"
if [ -s "$DATA/PG_VERSION" ] && [ "$(cat "$DATA/PG_VERSION")" != "$MAJOR" ]; then
    log "cluster in $DATA is from PostgreSQL $(cat "$DATA/PG_VERSION"), server is $MAJOR: recreating it"
    as_pg "$BIN/pg_ctl" -D "$DATA" -m immediate stop >&2 2>&1 || true
    rm -rf "$DATA"
fi

if [ ! -s "$DATA/PG_VERSION" ]; then
    log "creating cluster in $DATA"
    rm -rf "$DATA"
    as_pg "$BIN/initdb" -D "$DATA" -U postgres --auth-local=trust --auth-host=trust \
        --encoding=UTF8 --no-locale >&2
    # Only loopback, one port, test-friendly settings. Written once; start options below enforce the essentials.
    cat >>"$DATA/postgresql.conf" <<EOF

# tailwarden test cluster (.ci/postgres.sh)
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$DIR'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
fi

OPTS="-c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories=$DIR"
if as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    log "already running"
elif "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" 2>/dev/null; then
    log "another server already answers on 127.0.0.1:$PORT; using it"
else
    log "starting on 127.0.0.1:$PORT (log: $DIR/server.log)"
    as_pg "$BIN/pg_ctl" -D "$DATA" -l "$DIR/server.log" -o "$OPTS" -w -t 60 start >&2 || {
        log "start failed; last log lines:"
        tail -n 30 "$DIR/server.log" >&2 || true
        exit 1
    }
fi

for _ in $(seq 1 60); do
    if "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
        log "ready"
        echo "export TAILWARDEN_TEST_POSTGRES_URL=$URL"
        exit 0
    fi
    sleep 0.5
done
log "server did not become ready on 127.0.0.1:$PORT"
tail -n 30 "$DIR/server.log" >&2 || true
exit 1
