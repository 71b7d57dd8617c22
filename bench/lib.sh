# Shared settings and helpers for bench/run.sh, bench/others.sh and bench/xmppd.sh (sourced).
# Every knob is an environment variable with a short default, so a whole run fits in ~15 minutes.
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
OUT="${BENCH_OUT:-$HERE/out}"
export BENCH_OUT="$OUT"
mkdir -p "$OUT"

# Pinning: the server (and its database) on one core, the load generator on the other.
SERVER_CPU="${SERVER_CPU:-0}"
LOADGEN_CPU="${LOADGEN_CPU:-1}"
export SERVER_CPU

DOMAIN="${DOMAIN:-bench.local}"
PASSWORD="${PASSWORD:-bench-pass}"
MECH="${MECH:-SCRAM-SHA-256}"          # Prosody and ejabberd store keys for one hash only
ACCOUNTS="${ACCOUNTS:-10000}"          # on $DOMAIN (idle sessions need this many)
MAM_ACCOUNTS="${MAM_ACCOUNTS:-1000}"   # on mam.$DOMAIN (archive on)
ROSTER_POOL="${ROSTER_POOL:-2000}"     # accounts with a 20-contact roster (logins use the first 1000)
DURATION="${DURATION:-10}"             # measured seconds per throughput scenario
LOGINS="${LOGINS:-500}"
LOGIN_CONCURRENCY="${LOGIN_CONCURRENCY:-20}"
PEP_LINGER="${PEP_LINGER:-1}"          # logins-pep, logins-linger: seconds each session stays online after its login
PAIRS="${PAIRS:-50}"
RATE="${RATE:-500}"                    # fixed-rate latency test, msg/s
IDLE="${IDLE:-10000}"
MUC_OCCUPANTS="${MUC_OCCUPANTS:-100}"
MAM_QUERIES="${MAM_QUERIES:-200}"
MAM_FILL="${MAM_FILL:-1000}"             # minimum archive, filled over XMPP if short
MAM_ARCHIVE="${MAM_ARCHIVE:-1000000}"    # archive of u1@mam.$DOMAIN written by SQL (Prosody, ejabberd)
WORKERS="${WORKERS:-1}"
MUC_RATE="${MUC_RATE:-20}"             # fixed-rate MUC latency test, messages/s into the room
FLOOD_SECONDS="${FLOOD_SECONDS:-30}"   # longest iq ping flood (less when the server closes the flooder)
# logins-roster: one logins pass per roster size, on accounts whose rosters have that many contacts
# (20: the roster pool; other sizes: ranges r<size>u1.. of their own, provisioned by xmppd.sh setup).
ROSTER_SIZES="${ROSTER_SIZES:-20 200 1000}"
ROSTER_CURVE_ACCOUNTS="${ROSTER_CURVE_ACCOUNTS:-1000}"  # accounts per roster size (at least size + 1)
# idle-curve: KB per idle session at each of these session counts, TLS then plain, a freshly started
# server per point. Each session holds a descriptor in the server and in the load generator: a count
# above the file limit (ulimit -n, less 100 of headroom) of either is skipped, logged and listed under
# the table (the hard limit here is 20,000 and cannot be raised in this container).
IDLE_SIZES="${IDLE_SIZES:-1000 10000 19000}"
IDLE_SOURCE_IPS=4  # idle-curve's client addresses, 127.0.0.1..4: ~28k ephemeral ports each
OFFLINE_BACKLOG="${OFFLINE_BACKLOG:-1000}"  # offline-login: messages queued per account while it is offline
OFFLINE_ROUNDS="${OFFLINE_ROUNDS:-3}"       # offline-login: accounts that log in to such a queue
MAM_SIZES="${MAM_SIZES:-10000 1000000 10000000}"  # mam-curve: archive sizes (rows), PostgreSQL, filled by SQL
# Idle last: 10,000 sessions leave a big heap behind (each idle scenario restarts the server first).
# Idle sessions are measured this long after the last login (s): long enough for xmppd's idle
# sweep (every 30 s, a stream idle since the last look lets go of its parser) to pass twice.
IDLE_SETTLE="${IDLE_SETTLE:-65}"
SCENARIOS="${SCENARIOS:-logins logins-pep messages messages-bare messages-sm messages-ws messages-archive messages-archive-bare messages-rate messages-archive-rate messages-archive-half flood muc muc-rate mam idle-tls idle-sm idle-plain cross-node}"
# idle-curve logs in u1..u<count>: as many accounts as its largest count.
if [[ " $SCENARIOS " == *" idle-curve "* ]]; then
    for _idle_n in $IDLE_SIZES; do
        if ((_idle_n > ACCOUNTS)); then ACCOUNTS=$_idle_n; fi
    done
    unset _idle_n
fi
PG_PORT="${BENCH_PG_PORT:-15432}"
PG_DSN_BASE="postgresql://postgres@127.0.0.1:$PG_PORT"
RESULTS="$OUT/results.jsonl"
# The project's virtual environment when there is one (make bench passes it), else python3.
PY="${PYTHON:-$( [ -x "$ROOT/.venv/bin/python" ] && echo "$ROOT/.venv/bin/python" || echo python3)}"

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# pid of the process listening on a TCP port (bounded wait: up to $2 seconds).
wait_port_pid() {
    local port=$1 limit=${2:-60} i pid
    for ((i = 0; i < limit * 4; i++)); do
        pid=$(ss -ltnpH "sport = :$port" 2>/dev/null | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2 || true)
        if [ -n "$pid" ]; then echo "$pid"; return 0; fi
        sleep 0.25
    done
    return 1
}

pg_createdb() {
    "$HERE/pg.sh" psql -tc "SELECT 1 FROM pg_database WHERE datname='$1'" | grep -q 1 ||
        "$HERE/pg.sh" psql -c "CREATE DATABASE $1"
}

loadgen() {
    (cd "$ROOT" && taskset -c "$LOADGEN_CPU" "$PY" -m bench.loadgen --json-out "$RESULTS" --password "$PASSWORD" "$@")
}

# Half the archive-on saturation rate of the target LABEL in this run's results (messages-archive).
saturation_half() {
    "$PY" - "$RESULTS" "$1" <<'PY'
import json, sys
rates = [r["rate"] for r in map(json.loads, open(sys.argv[1])) if r.get("target") == sys.argv[2]
         and r.get("scenario") == "messages" and r.get("params", {}).get("archive") == "on"
         and not float(r.get("params", {}).get("rate") or 0) and r.get("params", {}).get("address", "full") == "full"
         and r.get("rate")]
if not rates:
    sys.exit(1)
print(round(rates[-1] / 2))
PY
}

# bench_target LABEL PORT TLS_PORT SERVER_PID DB_PID [extra loadgen args]
# Runs $SCENARIOS against one started server; a failing scenario is logged and the next one runs.
# WS_PORT (and WS_PATH, default /xmpp-websocket), set by the caller for a server with XMPP over
# WebSocket on TLS: the messages-ws endpoint; without WS_PORT messages-ws records "not offered".
bench_target() {
    local label=$1 port=$2 tls_port=$3 spid=$4 dbpid=$5
    shift 5
    local extra=("$@") common
    log "$label: server pid $spid pinned to CPU $SERVER_CPU (taskset), load generator on CPU $LOADGEN_CPU"
    for s in $SCENARIOS; do
        # Idle memory is measured on a fresh server: allocators (Python's, Erlang's, Lua's) keep what
        # earlier scenarios used, and a reused heap would hide the cost of new sessions.
        # idle-curve restarts the server before each of its points (below).
        if [[ $s == idle-* && $s != idle-curve ]] && declare -F restart_server >/dev/null; then
            # Called directly, not in $(...): a daemon started inside a command substitution could
            # hold its pipe open and hang the script. restart_server sets RESTARTED_PID.
            restart_server || { log "$label: restart failed"; return 1; }
            spid=$RESTARTED_PID
            log "$label: restarted for $s, server pid $spid"
        fi
        common=(--port "$port" --server-pid "$spid" --db-pid "$dbpid" --mechanism "$MECH" --label "$label" "${extra[@]}")
        log "$label: $s"
        case $s in
        logins) loadgen "${common[@]}" --scenario logins --count "$LOGINS" \
            --concurrency "$LOGIN_CONCURRENCY" --accounts 1000 --workers "$WORKERS" ;;
        # logins, once per roster size, each on the accounts whose rosters have that size.
        logins-roster)
            local size
            for size in $ROSTER_SIZES; do
                loadgen "${common[@]}" --scenario logins-roster --roster-size "$size" --count "$LOGINS" \
                    --concurrency "$LOGIN_CONCURRENCY" --accounts "$ROSTER_CURVE_ACCOUNTS" --workers "$WORKERS" ||
                    log "$label: logins-roster, $size contacts, failed (exit $?), continuing"
            done ;;
        # OFFLINE_BACKLOG messages queued for an offline account (1001..), then its login takes them.
        offline-login) loadgen "${common[@]}" --scenario offline-login --backlog "$OFFLINE_BACKLOG" \
            --rounds "$OFFLINE_ROUNDS" --first 1001 ;;
        # xmppd's archive store alone (bench/xmppd.sh runs it, before the server starts).
        mam-curve) log "$label: mam-curve measures xmppd's PostgreSQL archive store only (bench/xmppd.sh): skipped" ;;
        # logins-linger: logins-pep's control, plain logins whose sessions stay as long.
        logins-pep|logins-linger) loadgen "${common[@]}" --scenario "$s" --count "$LOGINS" \
            --concurrency "$LOGIN_CONCURRENCY" --accounts 1000 --roster-pool "$ROSTER_POOL" --linger "$PEP_LINGER" \
            --workers "$WORKERS" ;;
        messages) loadgen "${common[@]}" --scenario messages --pairs "$PAIRS" --duration "$DURATION" \
            --workers "$WORKERS" --param archive=off ;;
        # As messages, with XEP-0198 stream management (resumption, acks both ways) on every session.
        messages-sm) loadgen "${common[@]}" --scenario messages-sm --pairs "$PAIRS" --duration "$DURATION" \
            --workers "$WORKERS" --param archive=off ;;
        # As messages, over XMPP over WebSocket (RFC 7395) on the server's HTTPS port (wss://).
        messages-ws) loadgen "${common[@]}" --scenario messages-ws --ws-port "${WS_PORT:-0}" \
            --ws-path "${WS_PATH:-/xmpp-websocket}" --pairs "$PAIRS" --duration "$DURATION" --workers "$WORKERS" \
            --param archive=off ;;
        messages-archive) loadgen "${common[@]}" --domain "mam.$DOMAIN" --scenario messages --pairs "$PAIRS" \
            --duration "$DURATION" --workers "$WORKERS" --param archive=on ;;
        # As messages and messages-archive, to the partner's bare JID (as clients send chat messages).
        messages-bare) loadgen "${common[@]}" --scenario messages --address bare --pairs "$PAIRS" \
            --duration "$DURATION" --workers "$WORKERS" --param archive=off ;;
        messages-archive-bare) loadgen "${common[@]}" --domain "mam.$DOMAIN" --scenario messages --address bare \
            --pairs "$PAIRS" --duration "$DURATION" --workers "$WORKERS" --param archive=on ;;
        messages-rate) loadgen "${common[@]}" --scenario messages --pairs "$PAIRS" --rate "$RATE" \
            --duration "$DURATION" --param archive=off ;;
        # Fixed rate with the archive on: $RATE, then half of what messages-archive reached in this run.
        messages-archive-rate) loadgen "${common[@]}" --domain "mam.$DOMAIN" --scenario messages --pairs "$PAIRS" \
            --rate "$RATE" --duration "$DURATION" --param archive=on ;;
        messages-archive-half)
            local half
            half=$(saturation_half "$label") || { log "$label: no messages-archive figure in this run: run it first"; continue; }
            loadgen "${common[@]}" --domain "mam.$DOMAIN" --scenario messages --pairs "$PAIRS" --rate "$half" \
                --duration "$DURATION" --param archive=on --param load=half ;;
        idle-tls) loadgen "${common[@]}" --scenario idle --count "$IDLE" --concurrency 50 --settle "$IDLE_SETTLE" ;;
        idle-sm) loadgen "${common[@]}" --scenario idle-sm --count "$IDLE" --concurrency 50 --settle "$IDLE_SETTLE" ;;
        idle-plain) loadgen "${common[@]}" --scenario idle --count "$IDLE" --concurrency 50 --settle "$IDLE_SETTLE" --tls none ;;
        # idle at each count of IDLE_SIZES, STARTTLS then plain, each point on a freshly started server;
        # the load generator skips (and records as skipped) a count beyond either side's file limit.
        # Clients spread over IDLE_SOURCE_IPS addresses: the previous point's closed connections keep
        # many of their ports (TIME_WAIT, 60 s: ~9,700 after 19,000 sessions), and one address has ~28k.
        idle-curve)
            local n tls
            for n in $IDLE_SIZES; do
                for tls in starttls none; do
                    if declare -F restart_server >/dev/null; then
                        restart_server || { log "$label: restart failed"; return 1; }
                        spid=$RESTARTED_PID
                        common=(--port "$port" --server-pid "$spid" --db-pid "$dbpid" --mechanism "$MECH" --label "$label" "${extra[@]}")
                    fi
                    log "$label: idle-curve, $n sessions, tls $tls, server pid $spid"
                    loadgen "${common[@]}" --scenario idle-curve --count "$n" --concurrency 50 \
                        --settle "$IDLE_SETTLE" --tls "$tls" --source-ips "$IDLE_SOURCE_IPS" ||
                        log "$label: idle-curve, $n sessions, tls $tls, failed (exit $?), continuing"
                done
            done ;;
        muc) loadgen "${common[@]}" --scenario muc --occupants "$MUC_OCCUPANTS" --duration "$DURATION" \
            --param archive=on ;;
        muc-rate) loadgen "${common[@]}" --scenario muc --occupants "$MUC_OCCUPANTS" --duration "$DURATION" \
            --rate "$MUC_RATE" --param archive=on ;;
        mam) loadgen "${common[@]}" --domain "mam.$DOMAIN" --scenario mam --count "$MAM_QUERIES" \
            --mam-fill "$MAM_FILL" --duration "$DURATION" ;;
        flood) loadgen "${common[@]}" --scenario flood --duration "$DURATION" --flood-seconds "$FLOOD_SECONDS" ;;
        cross-node) loadgen "${common[@]}" --scenario cross-node --peer-port "${PEER_PORT:-0}" ;;
        *) log "unknown scenario $s" ;;
        esac || log "$label: $s failed (exit $?), continuing"
    done
}
