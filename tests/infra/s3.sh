#!/usr/bin/env bash
# Bring up a real S3-compatible server (moto in server mode) on 127.0.0.1 for clustrix-futures' S3 tests.
#
# Usage: tests/infra/s3.sh {up|down|status|env}
#
#   up      install moto (and flask) if its server is missing, start it (or reuse the one from our pid file),
#           wait until it answers.
#   down    stop the moto_server started from our pid file; wait for the port to close.
#   status  exit 0 if our moto_server answers on the port, 1 otherwise.
#   env     print `export` lines for the tests: the endpoint, a bucket name and dummy credentials (moto
#           accepts any).
#
# State lives in $CF_S3_DIR (default /tmp/clustrix-s3): moto.pid, moto.log. moto keeps every object in the
# server's memory: `down` forgets them all. Facts: tests/infra/README.md, section "s3.sh".
set -euo pipefail

DIR="${CF_S3_DIR:-/tmp/clustrix-s3}"
HOST=127.0.0.1
PORT="${CF_S3_PORT:-9191}"
PIDFILE="$DIR/moto.pid"
LOGFILE="$DIR/moto.log"
WAIT_S=30

log() { printf '[s3.sh] %s\n' "$*" >&2; }

answers() { python3 -c "import urllib.request; urllib.request.urlopen('http://$HOST:$PORT/', timeout=2)" 2>/dev/null; }

our_pid() {
    local pid
    pid=$(cat "$PIDFILE" 2>/dev/null || true)
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

cmd_up() {
    mkdir -p "$DIR"
    if our_pid >/dev/null && answers; then
        log "moto_server already up on $HOST:$PORT (pid $(our_pid)); reusing it"
        return 0
    fi
    if our_pid >/dev/null; then cmd_down; fi
    if ! python3 -c "import moto.server" 2>/dev/null; then
        # moto's server for S3 needs flask and flask-cors only; moto[server] would add every service's
        # dependencies, some of which pin versions that conflict with the kubernetes client's
        log "installing moto, flask, flask-cors"
        python3 -m pip install -q 'moto>=5' flask flask-cors
    fi
    log "starting moto_server on $HOST:$PORT"
    setsid python3 -m moto.server -H "$HOST" -p "$PORT" </dev/null >>"$LOGFILE" 2>&1 &
    echo $! >"$PIDFILE"
    disown $! 2>/dev/null || true
    local i
    for ((i = 0; i < WAIT_S * 10; i++)); do
        if answers; then
            log "moto_server up (pid $(cat "$PIDFILE"))"
            return 0
        fi
        our_pid >/dev/null || break
        sleep 0.1
    done
    log "moto_server did not come up; tail of $LOGFILE:"
    tail -n 20 "$LOGFILE" >&2 || true
    return 1
}

cmd_down() {
    local pid i
    if pid=$(our_pid); then
        log "stopping moto_server (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$PIDFILE"
}

cmd_status() {
    if our_pid >/dev/null && answers; then
        echo "moto_server up on $HOST:$PORT (pid $(our_pid))"
        return 0
    fi
    echo "moto_server not up"
    return 1
}

cmd_env() {
    cat <<EOF
export CF_S3_ENDPOINT=http://$HOST:$PORT
export CF_S3_BUCKET=cf-test
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
export AWS_DEFAULT_REGION=us-east-1
EOF
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *)
        echo "usage: $0 {up|down|status|env}" >&2
        exit 2
        ;;
esac
