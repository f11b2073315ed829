#!/usr/bin/env bash
# Stop the one-node SLURM cluster that tests/slurm/start_cluster.sh started: cancels its jobs, then
# stops slurmd, slurmctld, slurmdbd, MariaDB and munged by the pid files in the state folder (only
# those processes; nothing else on the machine is touched), and removes its /etc/slurm/slurm.conf link. Safe to run when nothing is running.
# Usage (as root): tests/slurm/stop_cluster.sh [--purge]   (--purge also deletes the state folder)
# Environment: LLARA_SLURM_DIR (default /var/lib/llara-slurm), as for start_cluster.sh.
set -uo pipefail

DIR="${LLARA_SLURM_DIR:-/var/lib/llara-slurm}"
export PATH="$PATH:/usr/sbin:/sbin"
log() { echo "[stop_cluster] $*" >&2; }

stop_pidfile() {  # stop_pidfile NAME PIDFILE: TERM, wait up to 20 s, then KILL
    local name=$1 pidfile=$2 pid
    [ -f "$pidfile" ] || return 0
    pid="$(cat "$pidfile" 2>/dev/null)"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null
        for ((i = 0; i < 80; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        if kill -0 "$pid" 2>/dev/null; then log "$name did not stop: SIGKILL"; kill -KILL "$pid" 2>/dev/null; fi
    fi
    rm -f "$pidfile"
}

if [ -f "$DIR/etc/slurm.conf" ]; then
    export SLURM_CONF="$DIR/etc/slurm.conf"
    # cancel whatever is still queued or running, so no slurmstepd outlives the cluster
    if [ -f "$DIR/run/slurm/slurmctld.pid" ] && kill -0 "$(cat "$DIR/run/slurm/slurmctld.pid")" 2>/dev/null; then
        jobs="$(timeout 10 squeue -h -o %i 2>/dev/null | tr '\n' ' ')"
        if [ -n "${jobs// /}" ]; then
            log "cancelling jobs: $jobs"
            # shellcheck disable=SC2086
            timeout 10 scancel $jobs 2>/dev/null
            for ((i = 0; i < 40; i++)); do [ -z "$(timeout 5 squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.25; done
        fi
    fi
fi
stop_pidfile slurmd "$DIR/run/slurm/slurmd.pid"
stop_pidfile slurmctld "$DIR/run/slurm/slurmctld.pid"
stop_pidfile slurmdbd "$DIR/run/slurm/slurmdbd.pid"
stop_pidfile mariadbd "$DIR/run/mysql/mariadbd.pid"
stop_pidfile munged "$DIR/munge-run/munged.pid"

# the link start_cluster.sh made at the default configuration path (only if it points into DIR)
case "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" in
    "$DIR"/*) rm -f /etc/slurm/slurm.conf ;;
esac

if [ "${1:-}" = "--purge" ]; then
    rm -rf "$DIR"
    log "removed $DIR"
fi
exit 0
