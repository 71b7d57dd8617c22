#!/usr/bin/env bash
# A private PostgreSQL cluster for the benchmark, so the shared one on 5432 (used by the test suites of
# other engineers) is neither disturbed nor a source of noise.
#   bench/pg.sh start|stop|status|psql [args]
# Data under bench/out/pg, port $BENCH_PG_PORT (default 15432), loopback only, pinned to $SERVER_CPU
# (the server's core: the database is part of the server's cost).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="${BENCH_OUT:-$HERE/out}"
PORT="${BENCH_PG_PORT:-15432}"
SERVER_CPU="${SERVER_CPU:-0}"
PGDATA="$OUT/pg/data"
PGBIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"

as_pg() { runuser -u postgres -- "$@"; }

ensure_installed() {
    if [ -z "$PGBIN" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null
        PGBIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
    fi
}

start() {
    ensure_installed
    mkdir -p "$OUT/pg"
    chown postgres "$OUT/pg"
    if [ ! -f "$PGDATA/PG_VERSION" ]; then
        as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres -A trust -E UTF8 >/dev/null
        # Durable commits as in production (fsync and synchronous_commit stay on); enough shared
        # buffers that a 1M-row archive stays in memory; no socket outside our directory.
        cat >>"$PGDATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$OUT/pg'
shared_buffers = 512MB
max_connections = 200
CONF
    fi
    if as_pg "$PGBIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then return 0; fi
    as_pg taskset -c "$SERVER_CPU" "$PGBIN/pg_ctl" -D "$PGDATA" -l "$OUT/pg/log" -w start >/dev/null
}

stop() {
    [ -n "$PGBIN" ] && [ -f "$PGDATA/PG_VERSION" ] || return 0
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 || true
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) as_pg "$PGBIN/pg_ctl" -D "$PGDATA" status ;;
    pid) head -1 "$PGDATA/postmaster.pid" ;;
    psql) shift; psql -h 127.0.0.1 -p "$PORT" -U postgres -v ON_ERROR_STOP=1 -q "$@" ;;
    *) echo "usage: $0 start|stop|status|pid|psql [args]" >&2; exit 2 ;;
esac
