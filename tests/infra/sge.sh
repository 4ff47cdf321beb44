#!/usr/bin/env bash
# Bring up / tear down a real single-host Son of Grid Engine 8.1.9 (Debian 12: gridengine-master,
# gridengine-exec, gridengine-client) on this machine for the clustrix-futures test suite.  Runs as root,
# without systemd or Docker: Debian's package scripts never start the daemons (policy-rc.d denies it), so
# sge_qmaster and sge_execd are started by hand, their pids recorded under $CF_SGE_RUN, and stopped by pid.
#
#   tests/infra/sge.sh up      # install if needed, configure, start (or reuse) the daemons, wait for the queue
#   tests/infra/sge.sh down    # delete all jobs, stop the daemons this script started (by recorded pid)
#   tests/infra/sge.sh status  # print the queue; exit 0 if healthy, 1 otherwise
#   tests/infra/sge.sh env     # print the environment the SGE clients need (SGE_ROOT, SGE_CELL)
#
# It coexists with tests/infra/slurm.sh (different daemons, ports 6444/6445, no shared state).
# Facts and pitfalls: tests/infra/README.md, section "sge.sh".
set -euo pipefail

export SGE_ROOT=${SGE_ROOT:-/var/lib/gridengine}
export SGE_CELL=${SGE_CELL:-default}
CF_SGE_RUN=${CF_SGE_RUN:-/var/run/clustrix-sge}
CF_SGE_LOG=${CF_SGE_LOG:-/var/log/clustrix-sge}
CF_SGE_SLOTS=${CF_SGE_SLOTS:-16}     # job slots on the one exec host: many array tasks at once on 2 cores
CF_SGE_WAIT=${CF_SGE_WAIT:-60}       # seconds to wait for the daemons and the queue
CF_SGE_USER=${CF_SGE_USER:-cfuser}
QMASTER_SPOOL=/var/spool/gridengine/qmaster
EXECD_SPOOL=/var/spool/gridengine/execd
COMMON=$SGE_ROOT/$SGE_CELL/common
HOST=$(hostname)

log() { printf '[sge.sh] %s\n' "$*" >&2; }

# ---------------------------------------------------------------------------------------------- helpers

# pid_alive PID NAME: true if PID is a live process whose command name is NAME.
pid_alive() {
    local pid=$1 name=$2 comm
    [[ -n "$pid" && "$pid" =~ ^[0-9]+$ ]] || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [[ "$comm" == "$name" ]]
}

# recorded_pid NAME: the pid this script recorded for NAME, if that process is alive.
recorded_pid() {
    local pid
    pid=$(cat "$CF_SGE_RUN/$1.pid" 2>/dev/null || true)
    pid_alive "$pid" "$1" && echo "$pid"
}

# daemon_pid NAME PIDFILE: the daemon's own pid file (it daemonizes itself), if that process is alive.
daemon_pid() {
    local pid
    pid=$(cat "$2" 2>/dev/null || true)
    pid_alive "$pid" "$1" && echo "$pid"
}

# adopt NAME PIDFILE: record a live daemon found by its own pid file (from an earlier run whose record was
# lost), so that it is reused now and stopped by pid on down.
adopt() {
    local pid
    recorded_pid "$1" >/dev/null && return 0
    pid=$(daemon_pid "$1" "$2") || return 1
    log "adopting running $1 (pid $pid)"
    echo "$pid" >"$CF_SGE_RUN/$1.pid"
}

# stop_pid NAME: SIGTERM the recorded daemon NAME, wait (bounded) for it to exit, SIGKILL as a last resort.
stop_pid() {
    local name=$1 pid i
    pid=$(recorded_pid "$name") || { rm -f "$CF_SGE_RUN/$name.pid"; return 0; }
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do            # up to 20 s
        pid_alive "$pid" "$name" || break
        sleep 0.2
    done
    if pid_alive "$pid" "$name"; then
        log "$name (pid $pid) did not exit after SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$CF_SGE_RUN/$name.pid"
}

# The exec daemon's spool directory is named by the name it resolves for itself (often "localhost").
execd_pidfile() { ls "$EXECD_SPOOL"/*/execd.pid 2>/dev/null | head -n1; }

qmaster_answers() { timeout 10 qconf -sconf global >/dev/null 2>&1; }

# The queue instance on this host, as qstat -f shows its state column ("" when fine, 'u' unknown, 'E' error...).
queue_state() {
    timeout 10 qstat -f -q "all.q@$HOST" 2>/dev/null | awk '$1 ~ /^all\.q@/ {print ($6 == "" ? "ok" : $6); exit}'
}

healthy() {
    recorded_pid sge_qmaster >/dev/null && recorded_pid sge_execd >/dev/null || return 1
    [[ "$(queue_state)" == ok ]]
}

dump_logs() {
    local f
    for f in "$QMASTER_SPOOL/messages" "$EXECD_SPOOL"/*/messages "$CF_SGE_LOG"/*.out; do
        [[ -s "$f" ]] || continue
        echo "----- tail -n 40 $f -----" >&2
        tail -n 40 "$f" >&2 || true
    done
}

# ---------------------------------------------------------------------------------------------- install

install_packages() {
    local c missing=0
    for c in /usr/sbin/sge_qmaster /usr/sbin/sge_execd /usr/bin/qsub /usr/bin/qacct; do
        [[ -x $c ]] || missing=1
    done
    ((missing)) || return 0
    log "installing gridengine-master gridengine-exec gridengine-client"
    export DEBIAN_FRONTEND=noninteractive
    # The packages' own set-up (spool database, manager user) runs from debconf answers, given here.
    local p
    for p in gridengine-common gridengine-master gridengine-exec gridengine-client; do
        printf '%s shared/gridengineconfig boolean true\n%s shared/gridenginecell string %s\n%s shared/gridenginemaster string %s\n' \
            "$p" "$p" "$SGE_CELL" "$p" "$HOST"
    done | debconf-set-selections
    local tmp_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        tmp_policy=1
    fi
    local rc=0 pkgs=(gridengine-master gridengine-exec gridengine-client)
    if ! apt-get install -y -q --no-install-recommends "${pkgs[@]}"; then
        apt-get update -q && apt-get install -y -q --no-install-recommends "${pkgs[@]}" || rc=$?
    fi
    ((tmp_policy)) && rm -f /usr/sbin/policy-rc.d
    return "$rc"
}

ensure_user() {
    local name=$1
    if ! getent passwd "$name" >/dev/null; then
        log "creating user $name"
        useradd -m -s /bin/bash "$name"
    fi
    [[ "$(getent shadow "$name" | cut -d: -f2 || true)" == "*" ]] || usermod -p '*' "$name"
}

# ---------------------------------------------------------------------------------------------- host names

# The clients must find the master under this machine's name, and the name 127.0.0.1 resolves to
# ("localhost") must be the same host: otherwise "client IP resolved to host name localhost. This is not
# identical to clients host name".
write_host_files() {
    mkdir -p "$COMMON"
    [[ "$(cat "$COMMON/act_qmaster" 2>/dev/null)" == "$HOST" ]] || echo "$HOST" >"$COMMON/act_qmaster"
    if [[ "$HOST" != localhost ]]; then
        [[ "$(cat "$COMMON/host_aliases" 2>/dev/null)" == "$HOST localhost" ]] ||
            echo "$HOST localhost" >"$COMMON/host_aliases"
    fi
}

# ---------------------------------------------------------------------------------------------- daemons

start_qmaster() {
    mkdir -p /var/run/gridengine
    chown sgeadmin:sgeadmin /var/run/gridengine
    log "starting sge_qmaster"
    # sge_qmaster daemonizes itself (and drops to the admin user); its pid file tells what to record.
    rm -f "$QMASTER_SPOOL/qmaster.pid"
    /usr/sbin/sge_qmaster </dev/null >>"$CF_SGE_LOG/sge_qmaster.out" 2>&1
    local i pid
    for ((i = 0; i < CF_SGE_WAIT * 5; i++)); do
        if pid=$(daemon_pid sge_qmaster "$QMASTER_SPOOL/qmaster.pid") && qmaster_answers; then
            echo "$pid" >"$CF_SGE_RUN/sge_qmaster.pid"
            return 0
        fi
        sleep 0.2
    done
    log "sge_qmaster did not come up"
    return 1
}

start_execd() {
    log "starting sge_execd"
    rm -f "$EXECD_SPOOL"/*/execd.pid
    /usr/sbin/sge_execd </dev/null >>"$CF_SGE_LOG/sge_execd.out" 2>&1
    local i pid
    for ((i = 0; i < CF_SGE_WAIT * 5; i++)); do
        if pid=$(daemon_pid sge_execd "$(execd_pidfile)"); then
            echo "$pid" >"$CF_SGE_RUN/sge_execd.pid"
            return 0
        fi
        sleep 0.2
    done
    log "sge_execd did not come up"
    return 1
}

wait_queue() {
    local deadline=$((SECONDS + CF_SGE_WAIT)) st=""
    while ((SECONDS < deadline)); do
        st=$(queue_state || true)
        case "$st" in
            ok) return 0 ;;
            *E*) timeout 10 qmod -c "all.q@$HOST" >/dev/null 2>&1 || true ;;   # clear an error state
        esac
        sleep 0.5
    done
    log "queue all.q@$HOST did not become usable within ${CF_SGE_WAIT}s (state '${st:-none}')"
    return 1
}

# ---------------------------------------------------------------------------------------------- config

# apply SHOW_CMD MODIFY_CMD FILE: load FILE with MODIFY_CMD unless SHOW_CMD already shows every "key value"
# line of FILE. Prints "changed" when it loaded something.
apply() {
    local show=$1 modify=$2 file=$3
    if ! diff -q <(eval "$show" 2>/dev/null | normalize | keys_of "$file") <(normalize <"$file") >/dev/null; then
        eval "$modify \"\$file\"" >/dev/null
        echo changed
    fi
}

# keys_of FILE: the lines of stdin whose key is a key of FILE.
keys_of() { awk 'NR == FNR {keys[$1] = 1; next} $1 in keys' "$1" -; }

# Configuration listings as "key value" lines, continuation lines joined, comments and blanks dropped.
normalize() { sed -e ':a' -e '/\\$/N; s/\\\n//; ta' | grep -v '^#' | awk 'NF {$1 = $1; print}' | sort; }

# set_keys FILE KEY VALUE...: replace the value of each KEY in a configuration listing.
set_keys() {
    local file=$1
    shift
    local tmp
    tmp=$(mktemp)
    normalize <"$file" >"$tmp"
    while (($#)); do
        awk -v k="$1" -v v="$2" '$1 == k {print k, v; found = 1; next} {print} END {if (!found) print k, v}' \
            "$tmp" >"$tmp.new"
        mv "$tmp.new" "$tmp"
        shift 2
    done
    mv "$tmp" "$file"
}

configure() {
    local dir changed=""
    dir=$(mktemp -d)
    # Global configuration. qconf -Mconf takes the configuration's name from the file name: "global".
    timeout 10 qconf -sconf global >"$dir/global"
    set_keys "$dir/global" min_uid 0 min_gid 0 load_report_time 00:00:10 \
        reporting_params "accounting=true reporting=false flush_time=00:00:01 joblog=false sharelog=00:00:00 accounting_flush_time=00:00:00"
    changed+=$(apply "qconf -sconf global" "qconf -Mconf" "$dir/global")

    # Scheduler: dispatch every second, and right after submissions and job ends.
    timeout 10 qconf -ssconf >"$dir/sched"
    set_keys "$dir/sched" schedule_interval 0:0:1 flush_submit_sec 1 flush_finish_sec 1
    apply "qconf -ssconf" "qconf -Msconf" "$dir/sched" >/dev/null

    # This host administers, submits and executes.
    timeout 10 qconf -sh 2>/dev/null | grep -qx "$HOST" || timeout 10 qconf -ah "$HOST" >/dev/null
    timeout 10 qconf -ss 2>/dev/null | grep -qx "$HOST" || timeout 10 qconf -as "$HOST" >/dev/null
    printf 'hostname %s\nload_scaling NONE\ncomplex_values NONE\nuser_lists NONE\nxuser_lists NONE\nprojects NONE\nxprojects NONE\nusage_scaling NONE\nreport_variables NONE\n' \
        "$HOST" >"$dir/exechost"
    if timeout 10 qconf -sel 2>/dev/null | grep -qx "$HOST"; then
        apply "qconf -se $HOST" "qconf -Me" "$dir/exechost" >/dev/null
    else
        qconf -Ae "$dir/exechost" >/dev/null
    fi

    # A shared-memory parallel environment, for `-pe smp N` (the backend's `pe` option).
    printf 'pe_name smp\nslots 999\nuser_lists NONE\nxuser_lists NONE\nstart_proc_args NONE\nstop_proc_args NONE\nallocation_rule $pe_slots\ncontrol_slaves FALSE\njob_is_first_task TRUE\nurgency_slots min\naccounting_summary FALSE\nqsort_args NONE\n' \
        >"$dir/smp"
    if timeout 10 qconf -spl 2>/dev/null | grep -qx smp; then
        apply "qconf -sp smp" "qconf -Mp" "$dir/smp" >/dev/null
    else
        qconf -Ap "$dir/smp" >/dev/null
    fi

    # The queue: from the default template, on this host, with many slots, no load thresholds (a busy
    # 2-core machine trips the default np_load_avg=1.75), only the PE that exists, and bash.
    timeout 10 qconf -sq "" >"$dir/all.q"    # qconf -sq with an empty name prints the template
    set_keys "$dir/all.q" qname all.q hostlist "$HOST" slots "$CF_SGE_SLOTS" pe_list smp load_thresholds NONE \
        shell /bin/bash
    if timeout 10 qconf -sql 2>/dev/null | grep -qx all.q; then
        apply "qconf -sq all.q" "qconf -Mq" "$dir/all.q" >/dev/null
    else
        qconf -Aq "$dir/all.q" >/dev/null
    fi
    rm -rf "$dir"
    echo "$changed"
}

# ---------------------------------------------------------------------------------------------- commands

cmd_up() {
    local t0=$SECONDS
    install_packages
    mkdir -p "$CF_SGE_RUN" "$CF_SGE_LOG"
    ensure_user "$CF_SGE_USER"
    write_host_files

    adopt sge_qmaster "$QMASTER_SPOOL/qmaster.pid" || true
    adopt sge_execd "$(execd_pidfile)" || true
    if ! recorded_pid sge_qmaster >/dev/null || ! qmaster_answers; then
        stop_pid sge_qmaster
        start_qmaster
    fi
    local changed
    changed=$(configure)
    # The exec daemon caches min_uid/min_gid: (re)start it after the global configuration changed.
    if [[ -n "$changed" ]]; then
        stop_pid sge_execd
    fi
    if ! recorded_pid sge_execd >/dev/null; then
        start_execd
    fi
    if ! wait_queue; then
        log "Grid Engine failed to come up"
        timeout 10 qstat -f >&2 2>&1 || true
        dump_logs
        return 1
    fi
    log "Grid Engine up in $((SECONDS - t0))s (all.q@$HOST: $CF_SGE_SLOTS slots)"
}

cmd_down() {
    if recorded_pid sge_qmaster >/dev/null; then
        # Shepherds of running jobs outlive the exec daemon: delete the jobs first, wait for them to go.
        timeout 10 qdel -f -u '*' >/dev/null 2>&1 || true
        local i
        for ((i = 0; i < 40; i++)); do
            [[ -z "$(timeout 5 qstat -u '*' 2>/dev/null || true)" ]] && break
            sleep 0.5
        done
    fi
    stop_pid sge_execd
    stop_pid sge_qmaster
    log "Grid Engine down"
}

cmd_status() {
    local rc=0 d pid
    echo "== qstat -f"
    timeout 10 qstat -f 2>&1 || rc=1
    echo "== qstat -u '*'"
    timeout 10 qstat -u '*' 2>&1 || rc=1
    for d in sge_qmaster sge_execd; do
        if pid=$(recorded_pid "$d"); then echo "$d: pid $pid"; else echo "$d: not started by sge.sh"; fi
    done
    healthy || rc=1
    if ((rc == 0)); then echo "healthy"; else echo "NOT healthy"; fi
    return "$rc"
}

main() {
    if [[ "${1:-}" != status && "${1:-}" != env && $(id -u) -ne 0 ]]; then
        echo "sge.sh ${1:-} must run as root" >&2
        exit 2
    fi
    case "${1:-}" in
        up) cmd_up ;;
        down) cmd_down ;;
        status) cmd_status ;;
        env) printf 'export SGE_ROOT=%s\nexport SGE_CELL=%s\n' "$SGE_ROOT" "$SGE_CELL" ;;
        *)
            echo "usage: $0 up|down|status|env" >&2
            exit 2
            ;;
    esac
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
