#!/usr/bin/env bash
# Local accounts for the security tests (tests/test_security.py): a second, unprivileged account that plants
# run directories, work_dirs and symlinks the way another user of a shared cluster could.
#
#   accounts.sh up       create the account if it is missing (idempotent: re-running changes nothing)
#   accounts.sh status   exit 0 when the account exists, is unprivileged and can run a command (runuser)
#   accounts.sh env      the export lines the tests read (CF_OTHER_USER, CF_OTHER_UID)
#   accounts.sh down     nothing: an account is kept (removing it could orphan files it owns in /tmp)
#
# The account has no password and no login shell (/usr/sbin/nologin): the tests reach it only through
# `runuser -u cfother -s /bin/sh --` as root. Needs root (useradd, runuser).
set -euo pipefail

OTHER_USER="${CF_OTHER_USER:-cfother}"

log() { echo "accounts.sh: $*" >&2; }
die() { log "$*"; exit 1; }

up() {
    [[ "$(id -u)" == 0 ]] || die "must run as root (useradd)"
    if ! id -u "$OTHER_USER" >/dev/null 2>&1; then
        log "creating the unprivileged account $OTHER_USER"
        useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$OTHER_USER"
    fi
    status
}

status() {
    local uid
    uid="$(id -u "$OTHER_USER" 2>/dev/null)" || { log "no account $OTHER_USER"; return 1; }
    [[ "$uid" != 0 ]] || { log "$OTHER_USER has uid 0"; return 1; }
    [[ "$(runuser -u "$OTHER_USER" -- /bin/sh -c 'id -u' 2>/dev/null)" == "$uid" ]] \
        || { log "runuser -u $OTHER_USER fails"; return 1; }
}

env_lines() {
    echo "export CF_OTHER_USER=$OTHER_USER"
    echo "export CF_OTHER_UID=$(id -u "$OTHER_USER")"
}

case "${1:-}" in
    up) up ;;
    status) status ;;
    env) env_lines ;;
    down) log "keeping the account $OTHER_USER (see the header)" ;;
    *) die "usage: $0 up|status|env|down" ;;
esac
