#!/usr/bin/env bash
# xmppd under the benchmark: config from bench/templates/xmppd.toml, accounts and rosters through
# bench/xmppd_provision.py, server pinned to CPU $SERVER_CPU, then $SCENARIOS.
#   bench/xmppd.sh [run|setup|start [CONFIG]|stop]
# Ports: c2s 35222, Direct TLS 35223; HTTP 35280 and HTTPS 35281 (XMPP over WebSocket at /xmpp-websocket:
# messages-ws on wss://). XMPPD_STORAGE=postgresql (default, bench/pg.sh's cluster) or sqlite.
# The xmppd-specific commands are all in this file and the two it names: adapt them if xmppd changes.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

PORT=35222
HTTP_PORT=35280
HTTPS_PORT=35281
# messages-ws: wss://127.0.0.1:$WS_PORT$WS_PATH (read by lib.sh's bench_target)
WS_PORT=$HTTPS_PORT
WS_PATH=/xmpp-websocket
X="$OUT/xmppd"
CFG="$OUT/xmppd.toml"
XMPPD_STORAGE="${XMPPD_STORAGE:-postgresql}"
# xmppd's optional modules as in conf/xmppd.toml; the archive is added for the archive scenarios only.
# smacks (XEP-0198) is loaded for messages-sm and idle-sm; sessions that do not enable it do not use it.
XMPPD_MODULES="${XMPPD_MODULES:-ping version register caps contact_addresses offline carbons blocking pep vcard private smacks}"
ARCHIVE_SCENARIOS="messages-archive messages-archive-bare messages-archive-rate messages-archive-half mam"
# Run on xmppd's default per-session rate limits (the others raise them out of the way).
FLOOD_SCENARIOS="flood"
# The archive store alone, before any server starts.
STORAGE_SCENARIOS="mam-curve"
RAISED_LIMITS="$(cat "$HERE/templates/xmppd-raised-limits.toml")"
# [modules.offline] with the offline queue's limit raised for offline-login (OFFLINE_BACKLOG); only
# with the offline module loaded (xmppd refuses options of a module it does not load).
OFFLINE_OPTIONS="$(cat "$HERE/templates/xmppd-offline.toml")"

toml_list() { local out="" m; for m in "$@"; do out+="${out:+, }\"$m\""; done; echo "$out"; }

render() {  # render OUT LIMITS MODULES...   (LIMITS: [c2s] rate-limit lines, empty for the defaults)
    local out=$1 limits=$2 options=""
    shift 2
    if [[ " $* " == *" offline "* ]]; then options=$OFFLINE_OPTIONS; fi
    "$PY" -m bench.render "$HERE/templates/xmppd.toml" "$out" OUT="$OUT" DOMAIN="$DOMAIN" \
        C2S_PORT=$PORT C2S_TLS_PORT=$((PORT + 1)) HTTP_PORT=$HTTP_PORT HTTP_TLS_PORT=$HTTPS_PORT \
        PG_PORT="$PG_PORT" STORAGE="$XMPPD_STORAGE" \
        MODULES="$(toml_list "$@")" C2S_LIMITS="$limits" MODULE_OPTIONS="$options"
}

setup() {
    mkdir -p "$X"
    # shellcheck disable=SC2086
    render "$OUT/xmppd-noarchive.toml" "$RAISED_LIMITS" $XMPPD_MODULES
    # shellcheck disable=SC2086
    render "$CFG" "$RAISED_LIMITS" $XMPPD_MODULES mam
    # shellcheck disable=SC2086
    render "$OUT/xmppd-flood.toml" "" $XMPPD_MODULES
    [ "$XMPPD_STORAGE" = postgresql ] && pg_createdb xmppd
    (cd "$ROOT" && "$PY" -m xmppd --config "$CFG" check-config >/dev/null)
    (cd "$ROOT" && "$PY" -m xmppd --config "$OUT/xmppd-flood.toml" check-config >/dev/null)
    (cd "$ROOT" && "$PY" -m xmppd --config "$CFG" migrate >/dev/null)
    # The logins-roster ranges (r200u1.., r1000u1..: 1.2 million roster items) only when asked for.
    local curve=()
    if [[ " $SCENARIOS " == *" logins-roster "* ]]; then
        curve=(--roster-sizes "$ROSTER_SIZES" --roster-accounts "$ROSTER_CURVE_ACCOUNTS")
    fi
    (cd "$ROOT" && "$PY" -m bench.xmppd_provision --config "$CFG" --domain "$DOMAIN:$ACCOUNTS" \
        --domain "mam.$DOMAIN:$MAM_ACCOUNTS" --roster-pool "$ROSTER_POOL" --password "$PASSWORD" "${curve[@]}")
}

# mam-curve: page latency against archive size in xmppd's PostgreSQL archive store, no server running
# (bench/mam_query.py --sizes: a throwaway schema per size in the bench cluster, filled by SQL).
mam_curve() {
    local label=$1
    pg_createdb xmppd_mam
    log "$label: mam-curve, archives of $MAM_SIZES messages (PostgreSQL, filled by SQL)"
    (cd "$ROOT" && taskset -c "$LOADGEN_CPU" "$PY" -m bench.mam_query --dsn "$PG_DSN_BASE/xmppd_mam" \
        --sizes "$MAM_SIZES" --queries "$MAM_QUERIES" --json-out "$RESULTS" --label "$label") ||
        log "$label: mam-curve failed (exit $?), continuing"
}

start() {  # start [CONFIG]
    local cfg=${1:-$CFG}
    (cd "$ROOT" && exec taskset -c "$SERVER_CPU" "$PY" -m xmppd --config "$cfg" serve) >"$X/stdout.log" 2>&1 &
    if ! wait_port_pid $PORT 30 >"$X/run.pid"; then
        log "xmppd did not open port $PORT; its output:"
        tail -20 "$X/stdout.log" >&2
        return 1
    fi
    # The HTTP side starts after the c2s listeners.
    if ! wait_port_pid $HTTPS_PORT 30 >/dev/null; then
        log "xmppd did not open its HTTPS port $HTTPS_PORT; its output:"
        tail -20 "$X/stdout.log" >&2
        return 1
    fi
}

stop() {
    if [ -f "$X/run.pid" ]; then
        local pid
        pid=$(cat "$X/run.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$X/run.pid"
    fi
}

run() {
    "$HERE/pg.sh" start
    setup
    stop
    trap stop EXIT
    local rev label plain="" archive="" flood="" storage="" s
    rev=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo "uncommitted")
    label="xmppd $rev ($XMPPD_STORAGE)"
    for s in $SCENARIOS; do
        if [[ " $ARCHIVE_SCENARIOS " == *" $s "* ]]; then archive+=" $s"
        elif [[ " $FLOOD_SCENARIOS " == *" $s "* ]]; then flood+=" $s"
        elif [[ " $STORAGE_SCENARIOS " == *" $s "* ]]; then storage+=" $s"
        else plain+=" $s"; fi
    done
    if [ -n "$storage" ]; then mam_curve "$label"; fi
    if [ -n "$plain" ]; then
        start "$OUT/xmppd-noarchive.toml"
        restart_server() { stop; start "$OUT/xmppd-noarchive.toml"; RESTARTED_PID=$(cat "$X/run.pid"); }
        SCENARIOS=$plain bench_target "$label" $PORT $((PORT + 1)) "$(cat "$X/run.pid")" "$("$HERE/pg.sh" pid)"
        stop
    fi
    if [ -n "$flood" ]; then
        unset -f restart_server
        start "$OUT/xmppd-flood.toml"
        SCENARIOS=$flood bench_target "$label" $PORT $((PORT + 1)) "$(cat "$X/run.pid")" "$("$HERE/pg.sh" pid)"
        stop
    fi
    if [ -n "$archive" ]; then
        unset -f restart_server
        start "$CFG"
        SCENARIOS=$archive bench_target "$label" $PORT $((PORT + 1)) "$(cat "$X/run.pid")" "$("$HERE/pg.sh" pid)"
        stop
    fi
}

case "${1:-run}" in
run) run ;;
setup) "$HERE/pg.sh" start; setup ;;
start) shift; start "$@" ;;
stop) stop ;;
*) echo "usage: $0 [run|setup|start|stop]" >&2; exit 2 ;;
esac
