#!/usr/bin/env bash
# Prosody and ejabberd from Debian's packages, on loopback ports, with the same accounts and rosters
# and comparable features (TLS, SCRAM with stored keys, archive on mam.$DOMAIN, MUC with archive),
# benchmarked with the same scenarios. The server (and PostgreSQL) run on CPU $SERVER_CPU, the load
# generator on CPU $LOADGEN_CPU, both via taskset.
#
#   bench/others.sh [prosody|ejabberd|all]      setup, start, run $SCENARIOS, stop
#   bench/others.sh start prosody|ejabberd       setup and start one, leave it running
#   bench/others.sh stop                        stop whatever this script started
#
# Ports: Prosody c2s 15222 (Direct TLS 15223), ejabberd c2s 25222 (Direct TLS 25223); XMPP over
# WebSocket (messages-ws) on HTTPS at /xmpp-websocket: Prosody 15281, ejabberd 25281.
# State under bench/out/{prosody,ejabberd}; PostgreSQL is bench/pg.sh's private cluster.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

PROSODY_PORT=15222
EJABBERD_PORT=25222
PROSODY_HTTPS_PORT=15281
EJABBERD_HTTPS_PORT=25281
PROSODY_STORAGE="${PROSODY_STORAGE:-sql}"   # sql (PostgreSQL) or internal (files)
P="$OUT/prosody"
E="$OUT/ejabberd"
# As the ejabberd user through setpriv, not through ejabberdctl's own `su`: su applies PAM's limits
# (1024 descriptors), and 10,000 idle sessions need more. setpriv keeps ours.
EJ=(env HOME=/var/lib/ejabberd setpriv --reuid ejabberd --regid ejabberd --init-groups
    ejabberdctl --config-dir "$E" --config "$E/ejabberd.yml" --ctl-config "$E/ejabberdctl.cfg"
    --logs "$E/logs" --spool "$E/spool")

install() {
    local missing=()
    command -v prosody >/dev/null || missing+=(prosody lua-dbi-postgresql)
    command -v ejabberdctl >/dev/null || missing+=(ejabberd erlang-p1-pgsql)
    [ -d /usr/lib/erlang/lib/p1_pgsql-* ] 2>/dev/null || ls -d /usr/lib/erlang/lib/p1_pgsql-* >/dev/null 2>&1 ||
        missing+=(erlang-p1-pgsql)
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        apt-get update -q >/dev/null
        # policy-rc.d or no systemd keeps the packaged services (on 5222) from starting.
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
    fi
}

certs() {
    if [ ! -f "$OUT/certs/bench.crt" ]; then
        mkdir -p "$OUT/certs"
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=$DOMAIN" \
            -addext "subjectAltName=DNS:$DOMAIN,DNS:*.$DOMAIN" \
            -keyout "$OUT/certs/bench.key" -out "$OUT/certs/bench.crt" 2>/dev/null
    fi
    chmod 644 "$OUT/certs/bench.key" "$OUT/certs/bench.crt"  # test-only key, read by daemons' users
}

hash_name() { [ "$MECH" = SCRAM-SHA-1 ] && echo "$1" || echo "$2"; }

# --- Prosody ---------------------------------------------------------------------------------------

prosody_setup() {
    mkdir -p "$P/data" "$P/certs"
    "$PY" -m bench.render "$HERE/templates/prosody.cfg.lua" "$P/prosody.cfg.lua" OUT="$OUT" DOMAIN="$DOMAIN" \
        C2S_PORT=$PROSODY_PORT C2S_TLS_PORT=$((PROSODY_PORT + 1)) HTTPS_PORT=$PROSODY_HTTPS_PORT PG_PORT="$PG_PORT" \
        STORAGE="$PROSODY_STORAGE" PASSWORD_HASH="$(hash_name SHA-1 SHA-256)"
    local prov=(--prefix u --password "$PASSWORD" --mechanism "$MECH" --roster-pool "$ROSTER_POOL")
    if [ "$PROSODY_STORAGE" = sql ]; then
        pg_createdb prosody
        # prosodyctl creates Prosody's own tables the first time storage is used.
        prosodyctl --config "$P/prosody.cfg.lua" register bench-setup "$DOMAIN" "$PASSWORD" >/dev/null 2>&1 || true
        for d in "$DOMAIN:$ACCOUNTS" "mam.$DOMAIN:$MAM_ACCOUNTS"; do
            (cd "$ROOT" && "$PY" -m bench.provision prosody-sql --domain "${d%:*}" --count "${d#*:}" \
                --dsn "$PG_DSN_BASE/prosody" "${prov[@]}")
        done
        (cd "$ROOT" && "$PY" -m bench.provision prosody-archive --domain "mam.$DOMAIN" --archive "$MAM_ARCHIVE" \
            --dsn "$PG_DSN_BASE/prosody")
    else
        for d in "$DOMAIN:$ACCOUNTS" "mam.$DOMAIN:$MAM_ACCOUNTS"; do
            (cd "$ROOT" && "$PY" -m bench.provision prosody-files --domain "${d%:*}" --count "${d#*:}" \
                --data-dir "$P/data" "${prov[@]}")
        done
    fi
}

prosody_start() {
    taskset -c "$SERVER_CPU" prosody -F --config "$P/prosody.cfg.lua" >"$P/stdout.log" 2>&1 &
    local pid=$! listener
    echo "$pid" >"$P/run.pid"
    listener=$(wait_port_pid $PROSODY_PORT 30) || { log "prosody did not listen on $PROSODY_PORT"; return 1; }
    # Someone else's listener would be measured in its place: refuse.
    [ "$listener" = "$pid" ] || { log "port $PROSODY_PORT belongs to pid $listener, not ours"; return 1; }
}

prosody_stop() {
    if [ -f "$P/run.pid" ]; then
        local pid
        pid=$(cat "$P/run.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        rm -f "$P/run.pid"
    fi
}

prosody_restart() { prosody_stop; prosody_start; RESTARTED_PID=$(cat "$P/run.pid"); }

prosody_run() {
    prosody_setup
    prosody_stop
    prosody_start
    restart_server() { prosody_restart; }
    local ver
    ver=$(dpkg-query -W -f='${Version}' prosody)
    WS_PORT=$PROSODY_HTTPS_PORT WS_PATH=/xmpp-websocket bench_target "prosody $ver ($PROSODY_STORAGE)" $PROSODY_PORT $((PROSODY_PORT + 1)) \
        "$(cat "$P/run.pid")" "$("$HERE/pg.sh" pid)"
    prosody_stop
}

# --- ejabberd --------------------------------------------------------------------------------------

ejabberd_setup() {
    mkdir -p "$E/logs" "$E/spool"
    "$PY" -m bench.render "$HERE/templates/ejabberd.yml" "$E/ejabberd.yml" OUT="$OUT" DOMAIN="$DOMAIN" \
        C2S_PORT=$EJABBERD_PORT C2S_TLS_PORT=$((EJABBERD_PORT + 1)) HTTPS_PORT=$EJABBERD_HTTPS_PORT PG_PORT="$PG_PORT" \
        SCRAM_HASH="$(hash_name sha sha256)"
    cp "$HERE/templates/ejabberdctl.cfg" "$E/ejabberdctl.cfg"
    printf '{lookup,["file","native"]}.\n{host,{127,0,0,1}, ["localhost"]}.\n' >"$E/inetrc"
    rm -f "$E"/logs/erl_crash_*.dump
    chown -R ejabberd "$E"
    pg_createdb ejabberd
    "$HERE/pg.sh" psql -d ejabberd -tc "SELECT to_regclass('users')" | grep -q users ||
        "$HERE/pg.sh" psql -d ejabberd -f /usr/share/ejabberd/sql/pg.new.sql >/dev/null
    # Before the start: ejabberd caches accounts and rosters it has read.
    for d in "$DOMAIN:$ACCOUNTS" "mam.$DOMAIN:$MAM_ACCOUNTS"; do
        (cd "$ROOT" && "$PY" -m bench.provision ejabberd-sql --domain "${d%:*}" --count "${d#*:}" \
            --dsn "$PG_DSN_BASE/ejabberd" --prefix u --password "$PASSWORD" --mechanism "$MECH" \
            --roster-pool "$ROSTER_POOL")
    done
    (cd "$ROOT" && "$PY" -m bench.provision ejabberd-archive --domain "mam.$DOMAIN" --archive "$MAM_ARCHIVE" \
        --dsn "$PG_DSN_BASE/ejabberd")
}

ejabberd_start() {
    taskset -c "$SERVER_CPU" "${EJ[@]}" start
    timeout 90 "${EJ[@]}" started
    wait_port_pid $EJABBERD_PORT 30 >"$E/beam.pid"
}

ejabberd_stop() {
    if "${EJ[@]}" status >/dev/null 2>&1; then
        "${EJ[@]}" stop >/dev/null || true
        timeout 60 "${EJ[@]}" stopped >/dev/null || true
    fi
}

ejabberd_restart() { ejabberd_stop; ejabberd_start; RESTARTED_PID=$(cat "$E/beam.pid"); }

ejabberd_run() {
    ejabberd_setup
    ejabberd_stop
    ejabberd_start
    restart_server() { ejabberd_restart; }
    local ver
    ver=$(dpkg-query -W -f='${Version}' ejabberd)
    WS_PORT=$EJABBERD_HTTPS_PORT WS_PATH=/xmpp-websocket bench_target "ejabberd $ver (pgsql)" $EJABBERD_PORT $((EJABBERD_PORT + 1)) \
        "$(cat "$E/beam.pid")" "$("$HERE/pg.sh" pid)"
    ejabberd_stop
}

main() {
    local what=${1:-all}
    if [ "$what" = stop ]; then
        prosody_stop
        ejabberd_stop
        return
    fi
    install
    certs
    "$HERE/pg.sh" start
    if [ "$what" = start ]; then  # leave one running for manual runs: others.sh start prosody|ejabberd
        "${2:?start prosody|ejabberd}_setup"
        "${2}_stop"
        "${2}_start"
        return
    fi
    trap 'prosody_stop; ejabberd_stop' EXIT
    case $what in
    prosody) prosody_run ;;
    ejabberd) ejabberd_run ;;
    all) prosody_run; ejabberd_run ;;
    *) echo "usage: $0 [prosody|ejabberd|all|stop]" >&2; exit 2 ;;
    esac
}

main "$@"
