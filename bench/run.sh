#!/usr/bin/env bash
# The whole comparison in one command, from the repository root:
#
#   bench/run.sh                     # floor, xmppd, Prosody, ejabberd; ~10 minutes (+ first-time installs)
#   TARGETS="floor prosody" bench/run.sh
#   DURATION=20 IDLE=10000 MUC_OCCUPANTS=1000 bench/run.sh     # longer / the issue's full sizes
#
# Writes bench/out/results.jsonl (one record per scenario), bench/out/results.json (records plus
# machine, versions, date, command) and bench/out/results.md (side-by-side table with ratios).
# Pinning: every server and the PostgreSQL cluster run under `taskset -c $SERVER_CPU` (default 0),
# the load generator under `taskset -c $LOADGEN_CPU` (default 1).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

TARGETS="${TARGETS:-floor xmppd prosody ejabberd}"
FLOOR_PORT=29222

floor_run() {
    (cd "$ROOT" && exec taskset -c "$SERVER_CPU" "$PY" -m bench.floor --port $FLOOR_PORT --max-seconds 900) &
    local pid
    pid=$(wait_port_pid $FLOOR_PORT 20)  # the listener's pid, not the subshell's
    local saved=$SCENARIOS
    SCENARIOS="messages messages-rate"
    MECH=none bench_target floor $FLOOR_PORT 0 "$pid" "" --tls none
    SCENARIOS=$saved
    kill "$pid" 2>/dev/null || true
    wait 2>/dev/null || true
}

cleanup() {
    "$HERE/others.sh" stop >/dev/null 2>&1 || true
    "$HERE/xmppd.sh" stop >/dev/null 2>&1 || true
    "$HERE/pg.sh" stop
}

main() {
    local started
    started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    : >"$RESULTS"
    trap cleanup EXIT
    "$HERE/pg.sh" start
    for t in $TARGETS; do
        log "=== $t ==="
        case $t in
        floor) floor_run ;;
        xmppd)
            if (cd "$ROOT" && "$PY" -m xmppd --help >/dev/null 2>&1); then
                "$HERE/xmppd.sh" run || log "xmppd run failed"
            else
                log "xmppd not runnable yet: skipped"
            fi
            ;;
        prosody | ejabberd) "$HERE/others.sh" "$t" || log "$t run failed" ;;
        *) log "unknown target $t" ;;
        esac
    done
    (cd "$ROOT" && "$PY" -m bench.report "$RESULTS" --json "$OUT/results.json" --md "$OUT/results.md" \
        --started "$started" --command "${BENCH_COMMAND:-bench/run.sh} (TARGETS=\"$TARGETS\")")
    cat "$OUT/results.md"
}

main "$@"
