#!/usr/bin/env bash
# A PBS command interface for the clustrix-futures test suite: Debian's Torque-style wrappers over SLURM
# (package slurm-wlm-torque: qsub, qstat, qdel... written in Perl on SLURM's Perl API), unpacked privately.
# This is NOT a PBS server: no PBS, Torque or OpenPBS server exists in Debian 12 or on PyPI. The wrappers run
# the jobs on the SLURM of tests/infra/slurm.sh, which must be up.
#
# slurm-wlm-torque conflicts with gridengine-client (installing it removes Grid Engine), so nothing is
# installed: the .debs (the wrappers and the Perl modules they load) are fetched with `apt-get download` and
# unpacked with `dpkg -x` under $CF_PBS_DIR. `env` prints what puts them first on PATH; the tests set that
# only for the PBS tests. The wrappers run "${FindBin::Bin}/sbatch", so sbatch and friends are linked beside
# them. Nothing runs in the background: `down` has nothing to stop.
#
#   tests/infra/pbs.sh up      # fetch and unpack the wrappers if needed, check they answer
#   tests/infra/pbs.sh down    # nothing to stop (the unpacked files stay for the next run)
#   tests/infra/pbs.sh status  # exit 0 if the wrappers are unpacked and their qstat answers
#   tests/infra/pbs.sh env     # print the export lines (PATH, PERL5LIB, LD_LIBRARY_PATH)
#
# Facts and pitfalls: tests/infra/README.md, section "pbs.sh".
set -euo pipefail

CF_PBS_DIR=${CF_PBS_DIR:-/var/lib/clustrix-pbs-wrappers}
PACKAGES=(slurm-wlm-torque libslurm-perl libslurmdb-perl libswitch-perl libslurm38)
ROOT=$CF_PBS_DIR/root
BIN=$CF_PBS_DIR/bin
PERL_DIRS=$ROOT/usr/lib/x86_64-linux-gnu/perl5/5.36:$ROOT/usr/share/perl5
LIB_DIR=$ROOT/usr/lib/x86_64-linux-gnu

log() { printf '[pbs.sh] %s\n' "$*" >&2; }

print_env() {
    printf 'export PATH=%s:$PATH\n' "$BIN"
    printf 'export PERL5LIB=%s\n' "$PERL_DIRS"
    printf 'export LD_LIBRARY_PATH=%s\n' "$LIB_DIR"
}

answers() {
    [[ -x $BIN/qsub && -x $BIN/qstat && -x $BIN/qdel ]] || return 1
    PATH=$BIN:$PATH PERL5LIB=$PERL_DIRS LD_LIBRARY_PATH=$LIB_DIR timeout 20 qstat -u root >/dev/null 2>&1
}

unpack() {
    local dir p
    dir=$(mktemp -d)
    chmod 755 "$dir"   # apt-get download runs as _apt where it can
    log "fetching ${PACKAGES[*]}"
    if ! (cd "$dir" && apt-get download -q "${PACKAGES[@]}" >/dev/null 2>&1); then
        apt-get update -q >/dev/null && (cd "$dir" && apt-get download -q "${PACKAGES[@]}" >/dev/null)
    fi
    rm -rf "$ROOT"
    mkdir -p "$ROOT" "$BIN"
    for p in "$dir"/*.deb; do
        dpkg -x "$p" "$ROOT"
    done
    rm -rf "$dir"
}

link_commands() {
    local c real
    for c in "$ROOT"/usr/bin/*; do
        ln -sfn "$c" "$BIN/$(basename "$c")"
    done
    # The wrappers call ${FindBin::Bin}/sbatch (and salloc, srun): the real SLURM commands, beside them.
    for c in sbatch salloc srun squeue scancel scontrol sinfo; do
        real=$(PATH=/usr/local/bin:/usr/bin:/bin command -v "$c" || true)
        [[ -n "$real" ]] && ln -sfn "$real" "$BIN/$c"
    done
}

cmd_up() {
    if [[ ! -x $ROOT/usr/bin/qsub || ! -e $ROOT/usr/share/perl5/Switch.pm || ! -e $LIB_DIR/libslurm.so.38 ]]; then
        unpack
    fi
    link_commands
    if ! answers; then
        log "the wrappers do not answer (is SLURM up? tests/infra/slurm.sh status)"
        PATH=$BIN:$PATH PERL5LIB=$PERL_DIRS LD_LIBRARY_PATH=$LIB_DIR qstat -u root >&2 || true
        return 1
    fi
    log "PBS wrappers over SLURM ready in $BIN"
}

cmd_status() {
    if answers; then
        echo "PBS wrappers over SLURM in $BIN: answering"
        return 0
    fi
    echo "PBS wrappers over SLURM: not unpacked or not answering"
    return 1
}

main() {
    case "${1:-}" in
        up) cmd_up ;;
        down) log "nothing to stop" ;;
        status) cmd_status ;;
        env) print_env ;;
        *)
            echo "usage: $0 up|down|status|env" >&2
            exit 2
            ;;
    esac
}

main "$@"
