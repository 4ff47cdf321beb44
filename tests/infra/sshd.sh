#!/usr/bin/env bash
# Bring up a real OpenSSH sshd on 127.0.0.1:2222 for clustrix-futures' SSH tests.
#
# Usage: tests/infra/sshd.sh {up|down|status|env}
#
#   up      install openssh-server (and tcsh) if missing, create the test users `cfuser` (bash) and `cftcsh`
#           (login shell /usr/bin/tcsh, same key), generate keys/config
#           (kept across restarts) and start sshd; reuses a running one started from our pid file.
#   down    stop the sshd started from our pid file (and its session processes); wait for the port to close.
#   status  exit 0 if our sshd is listening on the port, 1 otherwise.
#   env     print `export` lines for the tests (eval "$(tests/infra/sshd.sh env)").
#
# State lives in $CF_SSHD_DIR (default /tmp/clustrix-sshd): host key, client key pair, authorized_keys/<user>,
# known_hosts, sshd_config, sshd.pid, sshd.log. Deleting the directory regenerates all keys.
#
# Meant for CI as root on Debian 12 without systemd: sshd is started by hand (it daemonizes itself).
# `cfuser` deliberately gets only Debian's /usr/bin/python3 (no cloudpickle): nothing is installed for it.
set -euo pipefail

DIR="${CF_SSHD_DIR:-/tmp/clustrix-sshd}"
HOST=127.0.0.1
PORT=2222
USER_NAME=cfuser
TCSH_USER=cftcsh # a second test user whose login shell is tcsh (commands must not depend on its quoting)
SSHD=/usr/sbin/sshd
CONFIG="$DIR/sshd_config"
PIDFILE="$DIR/sshd.pid"
LOGFILE="$DIR/sshd.log"
WAIT_S=20 # bound for waiting on the port to open/close

log() { printf '[sshd.sh] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# --- helpers ---------------------------------------------------------------------------------------

# Is anything listening on $HOST:$PORT?  Prefer `ss` (opens no connection, so nothing lands in sshd.log);
# fall back to bash's /dev/tcp.
port_listening() {
    if command -v ss >/dev/null 2>&1; then
        [[ -n "$(ss -Hltn "sport = :$PORT" 2>/dev/null)" ]]
    else
        (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null
    fi
}

# Is pid alive?  A zombie counts as dead: PID 1 here is not an init and reaps orphans only about once a second.
alive() {
    local state
    kill -0 "$1" 2>/dev/null || return 1
    state="$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)" || return 1
    [[ -n "$state" && "$state" != Z ]]
}

# Pid of our sshd listener: the one in our pid file if it is alive and was started with our config; otherwise
# (stale or overwritten pid file) an sshd listener whose command line names our config. Empty if none.
our_pid() {
    local pid cmdline
    if [[ -s "$PIDFILE" ]]; then
        pid="$(tr -dc '0-9' <"$PIDFILE")"
        if [[ -n "$pid" ]] && alive "$pid"; then
            cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || cmdline=""
            if [[ "$cmdline" == *"$CONFIG"* ]]; then
                echo "$pid"
                return 0
            fi
        fi
    fi
    local pattern
    pattern="$(printf '%s' "$SSHD -f $CONFIG " | sed 's/[]\/$*.^[]/\\&/g')"
    for pid in $(pgrep -f -- "$pattern" 2>/dev/null || true); do
        if alive "$pid"; then
            echo "$pid"
            return 0
        fi
    done
}

# All descendants of a pid (depth first), via pgrep -P.
descendants() {
    local child
    for child in $(pgrep -P "$1" 2>/dev/null || true); do
        echo "$child"
        descendants "$child"
    done
}

wait_until() { # wait_until <desc> <cmd...>: poll every 0.1 s up to WAIT_S seconds
    local desc="$1"; shift
    local i
    for ((i = 0; i < WAIT_S * 10; i++)); do
        if "$@"; then return 0; fi
        sleep 0.1
    done
    die "timed out after ${WAIT_S}s waiting for: $desc"
}

port_closed() { ! port_listening; }

apt_install() { # apt_install pkg...: try without `apt-get update` first, then with it
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1; then
        log "apt-get install $* failed; running apt-get update and retrying"
        apt-get update >/dev/null
        apt-get install -y --no-install-recommends "$@" >/dev/null
    fi
}

# --- up --------------------------------------------------------------------------------------------

ensure_packages() {
    local pkgs=()
    [[ -x "$SSHD" ]] || pkgs+=(openssh-server)
    command -v ssh >/dev/null 2>&1 && command -v ssh-keygen >/dev/null 2>&1 || pkgs+=(openssh-client)
    if ((${#pkgs[@]})); then
        log "installing ${pkgs[*]}"
        apt_install "${pkgs[@]}"
    fi
    [[ -x "$SSHD" ]] || die "$SSHD still missing after install"
    if [[ ! -x /usr/bin/tcsh ]]; then
        log "installing tcsh (login shell of $TCSH_USER)"
        apt_install tcsh
    fi
    if [[ ! -x /usr/bin/python3 ]]; then
        log "installing python3-minimal (for $USER_NAME's /usr/bin/python3)"
        apt_install python3-minimal
    fi
}

ensure_user() { # ensure_user NAME SHELL: a key-login account with that login shell
    local name="$1" shell="$2"
    if ! id -u "$name" >/dev/null 2>&1; then
        log "creating user $name (login shell $shell)"
        useradd -m -s "$shell" "$name"
    fi
    [[ "$(getent passwd "$name" | cut -d: -f7)" == "$shell" ]] || usermod -s "$shell" "$name"
    # With UsePAM no, sshd refuses locked accounts ('!' in /etc/shadow) even for key login: use '*'.
    local pw
    pw="$(getent shadow "$name" | cut -d: -f2)"
    if [[ "$pw" == '!'* || -z "$pw" ]]; then
        usermod -p '*' "$name"
    fi
    local home
    home="$(getent passwd "$name" | cut -d: -f6)"
    [[ -d "$home" ]] || die "home directory $home of $name is missing"
}

ensure_state() {
    mkdir -p "$DIR" "$DIR/authorized_keys"
    chmod 755 "$DIR" "$DIR/authorized_keys" # traversable by cfuser (sshd reads authorized_keys as the user)

    # Keys are generated once and kept, so a down/up keeps the same host key and client key.
    if [[ ! -s "$DIR/ssh_host_ed25519_key" || ! -s "$DIR/ssh_host_ed25519_key.pub" ]]; then
        rm -f "$DIR/ssh_host_ed25519_key" "$DIR/ssh_host_ed25519_key.pub"
        ssh-keygen -q -t ed25519 -N '' -C "clustrix-sshd-host" -f "$DIR/ssh_host_ed25519_key"
    fi
    if [[ ! -s "$DIR/client_key" || ! -s "$DIR/client_key.pub" ]]; then
        rm -f "$DIR/client_key" "$DIR/client_key.pub"
        ssh-keygen -q -t ed25519 -N '' -C "clustrix-test-client" -f "$DIR/client_key"
    fi
    chmod 600 "$DIR/ssh_host_ed25519_key" "$DIR/client_key"
    chmod 644 "$DIR/ssh_host_ed25519_key.pub" "$DIR/client_key.pub"

    local f
    for f in "$USER_NAME" "$TCSH_USER" root; do
        install -m 644 "$DIR/client_key.pub" "$DIR/authorized_keys/$f"
    done

    local hostpub
    hostpub="$(cut -d' ' -f1,2 "$DIR/ssh_host_ed25519_key.pub")"
    printf '[%s]:%s %s\n[localhost]:%s %s\n' "$HOST" "$PORT" "$hostpub" "$PORT" "$hostpub" >"$DIR/known_hosts.tmp"
    chmod 644 "$DIR/known_hosts.tmp"
    mv -f "$DIR/known_hosts.tmp" "$DIR/known_hosts"

    cat >"$CONFIG.tmp" <<EOF
# Generated by tests/infra/sshd.sh: test-only sshd for clustrix-futures.
Port $PORT
ListenAddress $HOST
HostKey $DIR/ssh_host_ed25519_key
AuthorizedKeysFile $DIR/authorized_keys/%u
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
MaxSessions 1000
MaxStartups 1000:30:2000
Subsystem sftp internal-sftp
PidFile $PIDFILE
LogLevel VERBOSE
EOF
    chmod 644 "$CONFIG.tmp"
    if [[ -f "$CONFIG" ]] && cmp -s "$CONFIG.tmp" "$CONFIG"; then
        rm -f "$CONFIG.tmp"
        CONFIG_CHANGED=0
    else
        mv -f "$CONFIG.tmp" "$CONFIG"
        CONFIG_CHANGED=1
    fi
    touch "$LOGFILE"

    # sshd reads authorized_keys with the user's uid: every parent of $DIR must be traversable by cfuser.
    if ! runuser -u "$USER_NAME" -- test -r "$DIR/authorized_keys/$USER_NAME"; then
        die "$USER_NAME cannot read $DIR/authorized_keys/$USER_NAME: pick a CF_SSHD_DIR whose parents are world-traversable"
    fi

    mkdir -p /run/sshd # privilege-separation directory
    chmod 755 /run/sshd
}

cmd_up() {
    [[ "$(id -u)" == 0 ]] || die "must run as root"
    ensure_packages
    ensure_user "$USER_NAME" /bin/bash
    ensure_user "$TCSH_USER" /usr/bin/tcsh
    CONFIG_CHANGED=0
    ensure_state

    local pid
    pid="$(our_pid)"
    if [[ -n "$pid" && "$CONFIG_CHANGED" == 1 ]]; then
        log "sshd_config changed; restarting sshd (pid $pid)"
        cmd_down
        pid=""
    fi
    if [[ -n "$pid" ]] && port_listening; then
        log "sshd already running (pid $pid) on $HOST:$PORT; reusing it"
        [[ "$(cat "$PIDFILE" 2>/dev/null)" == "$pid" ]] || echo "$pid" >"$PIDFILE"
    else
        if [[ -n "$pid" ]]; then
            log "sshd pid $pid is alive but not listening; restarting"
            cmd_down
        fi
        if port_listening; then
            die "$HOST:$PORT is already in use by a process not started from $PIDFILE"
        fi
        "$SSHD" -t -f "$CONFIG" || die "sshd rejected $CONFIG"
        rm -f "$PIDFILE"
        "$SSHD" -f "$CONFIG" -E "$LOGFILE" # daemonizes; writes PidFile
        wait_until "sshd to listen on $HOST:$PORT" port_listening
        wait_until "sshd to write $PIDFILE" test -s "$PIDFILE"
        log "sshd started (pid $(cat "$PIDFILE")) on $HOST:$PORT, state in $DIR"
    fi
    log "$USER_NAME's /usr/bin/python3: $(/usr/bin/python3 -V 2>&1)"
}

# --- down / status / env -------------------------------------------------------------------------

cmd_down() {
    local pid kids
    pid="$(our_pid)"
    if [[ -z "$pid" ]]; then
        log "no sshd running from $PIDFILE"
    else
        # Session processes ("sshd: cfuser [priv]", "sshd: cfuser@notty") are children of the listener and
        # do not carry the config path in their title; collect them first so open sessions are dropped too,
        # as in a real server restart. User processes they started are left alone.
        kids="$(descendants "$pid" | while read -r k; do
            [[ "$(cat "/proc/$k/comm" 2>/dev/null)" == sshd ]] && echo "$k"
        done || true)"
        kill -TERM "$pid" 2>/dev/null || true
        # shellcheck disable=SC2086
        [[ -z "$kids" ]] || kill -TERM $kids 2>/dev/null || true
        pkill -TERM -f -- "$CONFIG" 2>/dev/null || true
        local i
        for ((i = 0; i < WAIT_S * 10; i++)); do
            alive "$pid" || break
            sleep 0.1
        done
        if alive "$pid"; then
            log "sshd pid $pid ignored SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        log "stopped sshd (pid $pid)"
    fi
    rm -f "$PIDFILE"
    if [[ -n "$pid" ]]; then
        wait_until "$HOST:$PORT to close" port_closed
    elif port_listening; then
        log "WARNING: $HOST:$PORT is still open, held by a process not started from $PIDFILE"
    fi
}

cmd_status() {
    local pid
    pid="$(our_pid)"
    if [[ -n "$pid" ]] && port_listening; then
        echo "sshd running (pid $pid) on $HOST:$PORT, state in $DIR"
        return 0
    fi
    echo "sshd not running on $HOST:$PORT (state dir $DIR)"
    return 1
}

cmd_env() {
    cat <<EOF
export CF_SSH_HOST=$HOST
export CF_SSH_PORT=$PORT
export CF_SSH_USER=$USER_NAME
export CF_SSH_TCSH_USER=$TCSH_USER
export CF_SSH_KEY=$DIR/client_key
export CF_SSH_KNOWN_HOSTS=$DIR/known_hosts
export CF_SSHD_LOG=$LOGFILE
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
