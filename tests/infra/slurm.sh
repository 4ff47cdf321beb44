#!/usr/bin/env bash
# Bring up / tear down a real single-node SLURM (Debian 12: slurm-wlm 22.05) on this machine for the
# clustrix-futures test suite.  Runs as root, without systemd or Docker: every daemon is started by hand,
# in the background (setsid), its pid recorded under $CF_SLURM_RUN, and stopped by that pid.
#
#   tests/infra/slurm.sh up      # install if needed, configure, start (or reuse) daemons, wait for node idle
#   tests/infra/slurm.sh down    # cancel all jobs, stop the daemons this script started (by recorded pid)
#   tests/infra/slurm.sh status  # print sinfo/squeue; exit 0 if healthy, 1 otherwise
#
# Facts and pitfalls: tests/infra/README.md, section "slurm.sh".
set -euo pipefail

CF_SLURM_STATE=${CF_SLURM_STATE:-/var/lib/clustrix-slurm}
CF_SLURM_LOG=${CF_SLURM_LOG:-/var/log/clustrix-slurm}
CF_SLURM_RUN=${CF_SLURM_RUN:-/var/run/clustrix-slurm}
CF_SLURM_CONF=/etc/slurm/slurm.conf
CF_SLURM_USER=${CF_SLURM_USER:-cfuser}
CF_SLURM_WAIT=${CF_SLURM_WAIT:-60}   # seconds to wait for the node to become idle

log() { printf '[slurm.sh] %s\n' "$*" >&2; }

# ---------------------------------------------------------------------------------------------- helpers

# pid_alive PID NAME: true if PID is a live process whose command name is NAME.
pid_alive() {
    local pid=$1 name=$2 comm
    [[ -n "$pid" && "$pid" =~ ^[0-9]+$ ]] || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [[ "$comm" == "$name" ]]
}

# recorded_pid NAME: print the pid recorded for NAME (ours first, else the daemon's own pid file), if alive.
recorded_pid() {
    local name=$1 f pid
    for f in "$CF_SLURM_RUN/$name.pid" "$CF_SLURM_RUN/$name.daemon.pid"; do
        pid=$(cat "$f" 2>/dev/null || true)
        if pid_alive "$pid" "$name"; then
            echo "$pid"
            return 0
        fi
    done
    return 1
}

# stop_pid NAME: SIGTERM the recorded daemon NAME, wait (bounded) for it to exit, SIGKILL as a last resort.
stop_pid() {
    local name=$1 pid i
    pid=$(recorded_pid "$name") || { rm -f "$CF_SLURM_RUN/$name.pid"; return 0; }
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
    rm -f "$CF_SLURM_RUN/$name.pid" "$CF_SLURM_RUN/$name.daemon.pid"
}

node_state() { timeout 10 sinfo -h -N -n localhost -o %t 2>/dev/null | head -n1 | tr -d '[:space:]'; }

# healthy: both daemons alive and the node in a usable state (no '*' = not responding, not down/drain).
healthy() {
    recorded_pid slurmctld >/dev/null && recorded_pid slurmd >/dev/null || return 1
    case "$(node_state)" in
        idle | mix | mixed | alloc | allocated | comp | completing) return 0 ;;
        *) return 1 ;;
    esac
}

dump_logs() {
    local f
    for f in "$CF_SLURM_LOG"/slurmctld.log "$CF_SLURM_LOG"/slurmctld.out \
        "$CF_SLURM_LOG"/slurmd.log "$CF_SLURM_LOG"/slurmd.out "$CF_SLURM_LOG"/munged.out; do
        [[ -s "$f" ]] || continue
        echo "----- tail -n 40 $f -----" >&2
        tail -n 40 "$f" >&2 || true
    done
}

# ---------------------------------------------------------------------------------------------- install

install_packages() {
    local missing=0 c
    for c in slurmctld slurmd sbatch munged mungekey; do
        command -v "$c" >/dev/null 2>&1 || [[ -x /usr/sbin/$c ]] || missing=1
    done
    ((missing)) || return 0
    log "installing slurmctld slurmd slurm-client munge"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-cache show slurmctld slurmd slurm-client munge >/dev/null 2>&1; then
        apt-get update -q
    fi
    # Package scripts must not try to start services (no init system here). Debian images usually ship a
    # policy-rc.d that denies it; add a temporary one if this machine has none.
    local tmp_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        tmp_policy=1
    fi
    local rc=0
    local pkgs=(slurmctld slurmd slurm-client munge)
    if ! apt-get install -y -q --no-install-recommends "${pkgs[@]}"; then
        # Stale package lists (404s): refresh once and retry.
        apt-get update -q && apt-get install -y -q --no-install-recommends "${pkgs[@]}" || rc=$?
    fi
    ((tmp_policy)) && rm -f /usr/sbin/policy-rc.d
    return "$rc"
}

# ---------------------------------------------------------------------------------------------- users

# ensure_user NAME: a non-root login user with a usable (key-only) account: /etc/shadow field '*', not '!'.
ensure_user() {
    local name=${1:-$CF_SLURM_USER}
    if ! getent passwd "$name" >/dev/null; then
        log "creating user $name"
        useradd -m -s /bin/bash "$name"
    fi
    local field
    field=$(getent shadow "$name" | cut -d: -f2 || true)
    if [[ "$field" != "*" ]]; then
        usermod -p '*' "$name"
    fi
}

# ---------------------------------------------------------------------------------------------- munge

munge_works() { timeout 5 munge -n 2>/dev/null | timeout 5 unmunge >/dev/null 2>&1; }

ensure_munge() {
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating /etc/munge/munge.key"
        mkdir -p /etc/munge
        if command -v mungekey >/dev/null 2>&1 || [[ -x /usr/sbin/mungekey ]]; then
            mungekey --create --keyfile=/etc/munge/munge.key --force
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
        fi
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 755 /run/munge

    if munge_works; then
        return 0
    fi
    # A stale munged we started earlier but which no longer answers: stop it first.
    if recorded_pid munged >/dev/null; then stop_pid munged; fi
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged --force >>"$CF_SLURM_LOG/munged.out" 2>&1
    # munged daemonizes itself; its pid file tells us what to record (we started it, so we stop it on down).
    local i pid=""
    for ((i = 0; i < 50; i++)); do
        pid=$(cat /run/munge/munged.pid 2>/dev/null || true)
        if pid_alive "$pid" munged && munge_works; then
            echo "$pid" >"$CF_SLURM_RUN/munged.pid"
            return 0
        fi
        sleep 0.1
    done
    log "munged did not come up"
    return 1
}

# ---------------------------------------------------------------------------------------------- config

write_config() {
    # Prints "changed" on stdout when the config file was (re)written.
    local tmp
    tmp=$(mktemp)
    cat >"$tmp" <<EOF
# Written by clustrix-futures tests/infra/slurm.sh -- single-node test cluster. Do not edit by hand.
ClusterName=clustrix
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/cgroup
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$CF_SLURM_LOG/jobcomp.txt
MailProg=/bin/true
ReturnToService=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=500
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,default_queue_depth=2000,partition_job_depth=0,bf_interval=1
MaxArraySize=100001
MaxJobCount=200000
MinJobAge=300
KillWait=2
OverTimeLimit=0
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
StateSaveLocation=$CF_SLURM_STATE/slurmctld
SlurmdSpoolDir=$CF_SLURM_STATE/slurmd
SlurmctldPidFile=$CF_SLURM_RUN/slurmctld.daemon.pid
SlurmdPidFile=$CF_SLURM_RUN/slurmd.daemon.pid
SlurmctldLogFile=$CF_SLURM_LOG/slurmctld.log
SlurmdLogFile=$CF_SLURM_LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmdParameters=config_overrides
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs=16 RealMemory=16000 Gres=gpu:tesla:2 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=localhost Default=NO MaxTime=INFINITE State=UP
EOF
    # Two fake GPUs, so that `clustrix-futures nodes` has a GPU board to show and --gpus requests are scheduled:
    # gres/gpu needs a device file per GPU (count-only GPUs register as 0 and drain the node), and these are
    # character devices 1:3, i.e. /dev/null. Nothing here touches a real GPU.
    local i
    for i in 0 1; do
        [[ -e /dev/cf-fakegpu$i ]] || mknod -m 666 "/dev/cf-fakegpu$i" c 1 3
    done
    printf 'AutoDetect=off\nNodeName=localhost Name=gpu Type=tesla File=/dev/cf-fakegpu[0-1]\n' >"$tmp.gres"
    # Memory is enforced (tests/infra/README.md, "memory"): an element over its --mem ends OUT_OF_MEMORY.
    printf 'ConstrainRAMSpace=yes\n' >"$tmp.cgroup"
    mkdir -p /etc/slurm
    if ! cmp -s "$tmp" "$CF_SLURM_CONF" || ! cmp -s "$tmp.gres" /etc/slurm/gres.conf \
        || ! cmp -s "$tmp.cgroup" /etc/slurm/cgroup.conf; then
        install -m 644 "$tmp" "$CF_SLURM_CONF"
        install -m 644 "$tmp.gres" /etc/slurm/gres.conf
        install -m 644 "$tmp.cgroup" /etc/slurm/cgroup.conf
        echo changed
    fi
    rm -f "$tmp" "$tmp.gres" "$tmp.cgroup"
}

# ---------------------------------------------------------------------------------------------- daemons

start_daemon() {
    # start_daemon NAME ARGS...: setsid in the background, stdout/stderr to $CF_SLURM_LOG/NAME.out, pid recorded.
    local name=$1
    shift
    log "starting $name $*"
    # Not a process-group leader in a non-interactive script, so setsid execs in place and $! is the daemon.
    setsid "/usr/sbin/$name" "$@" </dev/null >>"$CF_SLURM_LOG/$name.out" 2>&1 &
    local pid=$!
    echo "$pid" >"$CF_SLURM_RUN/$name.pid"
    disown "$pid" 2>/dev/null || true
}

wait_idle() {
    local deadline=$((SECONDS + CF_SLURM_WAIT)) st resumed=0
    while ((SECONDS < deadline)); do
        if ! recorded_pid slurmctld >/dev/null || ! recorded_pid slurmd >/dev/null; then
            sleep 0.5
            if ! recorded_pid slurmctld >/dev/null || ! recorded_pid slurmd >/dev/null; then
                log "a SLURM daemon exited during start-up"
                return 1
            fi
        fi
        st=$(node_state || true)
        case "$st" in
            idle | mix | mixed | alloc | allocated | comp | completing) return 0 ;;
            down* | drain* | drng* | drained* | fail*)
                if ((resumed < 5)) && [[ "$st" != *'*' ]]; then
                    log "node is '$st'; resuming it"
                    scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true
                    resumed=$((resumed + 1))
                fi
                ;;
        esac
        sleep 0.5
    done
    log "node did not become idle within ${CF_SLURM_WAIT}s (last state: '${st:-none}')"
    return 1
}

stop_daemons() {
    stop_pid slurmd
    stop_pid slurmctld
}

# ---------------------------------------------------------------------------------------------- commands

cmd_up() {
    local t0=$SECONDS
    install_packages
    mkdir -p "$CF_SLURM_STATE/slurmctld" "$CF_SLURM_STATE/slurmd" "$CF_SLURM_LOG" "$CF_SLURM_RUN"
    chmod 755 "$CF_SLURM_STATE" "$CF_SLURM_LOG" "$CF_SLURM_RUN"
    ensure_user "$CF_SLURM_USER"
    ensure_munge

    local changed
    changed=$(write_config)

    if [[ -z "$changed" ]] && healthy; then
        log "SLURM already up and healthy; reusing it (node $(node_state))"
        return 0
    fi
    if [[ -n "$changed" ]]; then
        log "slurm.conf written"
    fi
    # Anything of ours that is running is either using an old config or unhealthy: restart it cleanly.
    # Running jobs survive a daemon restart (slurmstepd outlives slurmd).
    stop_daemons

    start_daemon slurmctld -D -i
    # Let slurmctld open its port before slurmd registers (slurmd retries anyway).
    local i
    for ((i = 0; i < 50; i++)); do
        timeout 5 scontrol ping 2>/dev/null | grep -q 'is UP' && break
        recorded_pid slurmctld >/dev/null || break
        sleep 0.2
    done
    start_daemon slurmd -D -N localhost

    if ! wait_idle; then
        log "SLURM failed to come up"
        timeout 10 sinfo -N -l >&2 2>&1 || true
        dump_logs
        return 1
    fi
    log "SLURM up in $((SECONDS - t0))s (node $(node_state))"
}

cmd_down() {
    if recorded_pid slurmctld >/dev/null; then
        # slurmstepd outlives slurmd: cancel the jobs first, give them a moment to go.
        local ids
        ids=$(timeout 10 squeue -h -o %F 2>/dev/null | sort -u || true)
        if [[ -n "$ids" ]]; then
            # shellcheck disable=SC2086
            timeout 10 scancel --quiet $ids 2>/dev/null || true
        fi
        local i
        for ((i = 0; i < 20; i++)); do
            [[ -z "$(timeout 5 squeue -h -t running,completing,pending -o %A 2>/dev/null || true)" ]] && break
            sleep 0.5
        done
    fi
    stop_daemons
    # munged: only if this script started it (it recorded its pid).
    if [[ -s "$CF_SLURM_RUN/munged.pid" ]]; then
        stop_pid munged
    fi
    log "SLURM down"
}

cmd_restart() {
    # restart slurmctld|slurmd: stop one daemon by pid and start it again, leaving jobs alone (fault tests).
    local name=$1
    case "$name" in
        slurmctld) stop_pid slurmctld; start_daemon slurmctld -D -i ;;
        slurmd) stop_pid slurmd; start_daemon slurmd -D -N localhost ;;
        *) echo "usage: $0 restart slurmctld|slurmd" >&2; return 2 ;;
    esac
    wait_idle
}

cmd_status() {
    local rc=0
    echo "== sinfo"
    timeout 10 sinfo 2>&1 || rc=1
    echo "== squeue"
    timeout 10 squeue 2>&1 || rc=1
    local d pid
    for d in slurmctld slurmd munged; do
        if pid=$(recorded_pid "$d"); then echo "$d: pid $pid"; else echo "$d: not started by slurm.sh"; fi
    done
    healthy || rc=1
    if ((rc == 0)); then echo "healthy"; else echo "NOT healthy"; fi
    return "$rc"
}

main() {
    if [[ "${1:-}" != status && $(id -u) -ne 0 ]]; then
        echo "slurm.sh ${1:-} must run as root" >&2
        exit 2
    fi
    case "${1:-}" in
        up) cmd_up ;;
        down) cmd_down ;;
        status) cmd_status ;;
        restart) cmd_restart "${2:-}" ;;
        ensure-user) ensure_user "${2:-$CF_SLURM_USER}" ;;
        *)
            echo "usage: $0 up|down|status|restart slurmctld|slurmd|ensure-user [NAME]" >&2
            exit 2
            ;;
    esac
}

# Allow other scripts to `source` this file for its functions (e.g. ensure_user) without running main.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
