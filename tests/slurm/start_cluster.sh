#!/usr/bin/env bash
# Start a one-node SLURM cluster with accounting on this machine, for tests and for trying the
# slurm profile locally: munged + MariaDB + slurmdbd + slurmctld + slurmd, all private to STATE_DIR
# (own munge key and socket, own database on 127.0.0.1:$LLARA_SLURM_DB_PORT). The only file outside it
# is the link /etc/slurm/slurm.conf -> STATE_DIR/etc/slurm.conf (jobs need the default path); it is
# never made over an existing configuration, and stop_cluster.sh removes it.
#
# Usage (as root):   tests/slurm/start_cluster.sh            # then: source $STATE_DIR/env.sh
#                    tests/slurm/stop_cluster.sh             # stops every daemon started here
# Environment (all optional):
#   LLARA_SLURM_DIR        state folder (default /var/lib/llara-slurm); wiped and rebuilt on each start
#   LLARA_SLURM_ACCOUNT    account created for the users (default llara)
#   LLARA_SLURM_PARTITION  the one partition, default partition of the cluster (default debug)
#   LLARA_SLURM_USERS      users added to the account (default: root and $SUDO_USER)
#   LLARA_SLURM_DB_PORT    MariaDB TCP port (default 3307); slurm ports LLARA_SLURM_PORT_{CTLD,D,DBD}
#                          (defaults 6817, 6818, 6819)
#   LLARA_SLURM_NO_INSTALL=1  never apt-get install the missing Debian packages (exit 3 instead)
# Exit codes: 0 cluster up (or already up), 2 not root, 3 packages missing and not installable,
# 4 /etc/slurm/slurm.conf belongs to another SLURM set-up, 1 anything else (the daemons' logs are printed).
#
# Works in containers without systemd or cgroups: proctrack/linuxproc, task/none, no cgroup plugin.
# Tested with Debian 12's slurm-wlm 22.05, slurmdbd, munge 0.5.15 and mariadb-server 10.11.
set -euo pipefail

DIR="${LLARA_SLURM_DIR:-/var/lib/llara-slurm}"
ACCOUNT="${LLARA_SLURM_ACCOUNT:-llara}"
PARTITION="${LLARA_SLURM_PARTITION:-debug}"
USERS="${LLARA_SLURM_USERS:-root ${SUDO_USER:-}}"
DB_PORT="${LLARA_SLURM_DB_PORT:-3307}"
CTLD_PORT="${LLARA_SLURM_PORT_CTLD:-6817}"
D_PORT="${LLARA_SLURM_PORT_D:-6818}"
DBD_PORT="${LLARA_SLURM_PORT_DBD:-6819}"
CLUSTER=llara
DB_PASS="llara-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"

log() { echo "[start_cluster] $*" >&2; }
die() {  # print the daemons' logs, stop whatever this script started, exit 1
    log "ERROR: $*"
    for f in "$DIR"/log/*.log; do [ -s "$f" ] && { echo "--- $f" >&2; tail -n 30 "$f" >&2; }; done
    "$(dirname "$0")/stop_cluster.sh" >&2 || true
    exit 1
}
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: retry COMMAND (10 s each) until it succeeds
    local secs=$1 what=$2; shift 2
    local deadline=$((SECONDS + secs))
    while ((SECONDS < deadline)); do timeout 10 "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
    die "timed out after ${secs}s waiting for $what"
}

[ "$(id -u)" -eq 0 ] || { log "must run as root (it starts system daemons)"; exit 2; }

if alive "$DIR/run/slurm/slurmctld.pid" && alive "$DIR/run/slurm/slurmd.pid"; then
    log "already running (state in $DIR); stop it with tests/slurm/stop_cluster.sh"
    echo "export SLURM_CONF=$DIR/etc/slurm.conf"
    exit 0
fi

# --- packages ------------------------------------------------------------------------------------
need=()
for bin in slurmctld slurmd slurmdbd sbatch sacct sacctmgr munged mariadbd mariadb-install-db; do
    command -v "$bin" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$bin" >/dev/null 2>&1 || need+=("$bin")
done
export PATH="$PATH:/usr/sbin:/sbin"
if [ ${#need[@]} -gt 0 ]; then
    if [ "${LLARA_SLURM_NO_INSTALL:-0}" = 1 ] || ! command -v apt-get >/dev/null 2>&1; then
        log "missing ${need[*]} and cannot install them (no apt-get or LLARA_SLURM_NO_INSTALL=1)"
        exit 3
    fi
    log "installing slurm-wlm slurmdbd munge mariadb-server with apt-get (missing: ${need[*]})"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || { log "apt-get update failed"; exit 3; }
    apt-get install -y -qq --no-install-recommends slurm-wlm slurmdbd munge mariadb-server mariadb-client >/dev/null \
        || { log "apt-get install failed"; exit 3; }
    # Debian's postinst may start the packaged services; this cluster uses private instances
    for svc in slurmctld slurmd slurmdbd munge mariadb; do service "$svc" stop >/dev/null 2>&1 || true; done
fi
id slurm >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin slurm
id munge >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin munge

# Jobs must find the configuration at the compiled-in default path: the executor plugin's job step
# removes SLURM_* variables (SLURM_CONF too) before its nested `srun`. So the configuration is linked
# there, never over a file or link that is not ours.
ETC_CONF=/etc/slurm/slurm.conf
if [ -e "$ETC_CONF" ] || [ -L "$ETC_CONF" ]; then
    case "$(readlink "$ETC_CONF" 2>/dev/null)" in
        "$DIR"/*) ;;
        *) log "$ETC_CONF exists and is not a link into $DIR: this machine has a SLURM configuration of its own; not touching it"
           exit 4 ;;
    esac
fi

# --- a fresh state folder (stop leftovers of an earlier start first) ------------------------------
"$(dirname "$0")/stop_cluster.sh" >/dev/null 2>&1 || true
rm -rf "$DIR"
mkdir -p "$DIR"/{etc,log,run/slurm,run/mysql,spool/slurmctld,spool/slurmd,munge,munge-run,mysql}
chmod 0755 "$DIR" "$DIR"/{etc,log,run,run/slurm,run/mysql,spool}
chown slurm:slurm "$DIR"/spool/slurmctld "$DIR"/run/slurm
# each daemon's log file, created here and owned by the user the daemon runs as
for f in slurmctld slurmdbd slurmd munged mariadb; do touch "$DIR/log/$f.log"; done
chown slurm:slurm "$DIR"/log/{slurmctld,slurmdbd}.log
chown munge:munge "$DIR"/log/munged.log
chown munge:munge "$DIR"/munge "$DIR"/munge-run
chmod 0700 "$DIR"/munge
chown mysql:mysql "$DIR"/mysql "$DIR"/run/mysql "$DIR"/log/mariadb.log
HOST="$(hostname -s)"

# --- munge: private key and socket ---------------------------------------------------------------
MUNGE_SOCKET="$DIR/munge-run/munge.socket"
dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
chown munge:munge "$DIR/munge/munge.key"
chmod 0400 "$DIR/munge/munge.key"
log "starting munged"
runuser -u munge -- munged --key-file="$DIR/munge/munge.key" --socket="$MUNGE_SOCKET" \
    --pid-file="$DIR/munge-run/munged.pid" --log-file="$DIR/log/munged.log" \
    --seed-file="$DIR/munge/munged.seed" || die "munged did not start"
wait_for 15 munged sh -c "munge -S '$MUNGE_SOCKET' -n | unmunge -S '$MUNGE_SOCKET'"

# --- MariaDB: private datadir, TCP on 127.0.0.1 only ---------------------------------------------
log "starting MariaDB on 127.0.0.1:$DB_PORT"
mariadb-install-db --user=mysql --datadir="$DIR/mysql" --auth-root-authentication-method=socket \
    --skip-test-db >"$DIR/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed ($DIR/log/mariadb-install.log)"
DB_SOCKET="$DIR/run/mysql/mysqld.sock"
setsid mariadbd --no-defaults --user=mysql --datadir="$DIR/mysql" --socket="$DB_SOCKET" \
    --pid-file="$DIR/run/mysql/mariadbd.pid" --bind-address=127.0.0.1 --port="$DB_PORT" \
    --log-error="$DIR/log/mariadb.log" --innodb-buffer-pool-size=64M --skip-log-bin \
    </dev/null >/dev/null 2>&1 &
wait_for 60 MariaDB mariadb --no-defaults -S "$DB_SOCKET" -u root -e "SELECT 1"
mariadb --no-defaults -S "$DB_SOCKET" -u root <<SQL || die "could not create the accounting database"
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
SQL

# --- configuration -------------------------------------------------------------------------------
# the node's real CPUs and memory (slurmd -C), a little memory kept back for the daemons
read -r CPUS BOARDS SOCKETS CORES THREADS MEM < <(slurmd -C | awk '/^NodeName/ {
    for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    print v["CPUs"], v["Boards"], v["SocketsPerBoard"], v["CoresPerSocket"], v["ThreadsPerCore"], v["RealMemory"] }')
[ -n "${MEM:-}" ] || die "could not read the node's resources from 'slurmd -C'"
MEM=$((MEM > 2048 ? MEM - 1024 : MEM))

cat >"$DIR/etc/slurm.conf" <<CONF
# written by tests/slurm/start_cluster.sh: a one-node cluster with accounting, no cgroups
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=slurm
SlurmctldPort=$CTLD_PORT
SlurmdPort=$D_PORT
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$DIR/spool/slurmctld
SlurmdSpoolDir=$DIR/spool/slurmd
SlurmctldPidFile=$DIR/run/slurm/slurmctld.pid
SlurmdPidFile=$DIR/run/slurm/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# with slurmdbd, this names the munge socket used to talk to it (the private munged here)
AccountingStoragePass=$MUNGE_SOCKET
AccountingStorageEnforce=associations
AccountingStoreFlags=job_comment
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
MpiDefault=none
ReturnToService=2
SlurmdTimeout=120
InactiveLimit=0
MinJobAge=300
KillWait=10
Waittime=0
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS Boards=$BOARDS SocketsPerBoard=$SOCKETS CoresPerSocket=$CORES ThreadsPerCore=$THREADS RealMemory=$MEM State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF

cat >"$DIR/etc/slurmdbd.conf" <<CONF
# written by tests/slurm/start_cluster.sh
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=$HOST
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=slurm
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/run/slurm/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
CONF
chown slurm:slurm "$DIR/etc/slurmdbd.conf"
chmod 0600 "$DIR/etc/slurmdbd.conf"
chmod 0644 "$DIR/etc/slurm.conf"
export SLURM_CONF="$DIR/etc/slurm.conf"
echo "export SLURM_CONF=$SLURM_CONF" >"$DIR/env.sh"
mkdir -p /etc/slurm
ln -sfn "$SLURM_CONF" "$ETC_CONF"

# --- slurmdbd, then the cluster's account and users, then slurmctld and slurmd --------------------
log "starting slurmdbd"
slurmdbd || die "slurmdbd did not start"
wait_for 60 slurmdbd sacctmgr -n list cluster
sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr add cluster failed"
sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" description="llara tests" organization=llara >/dev/null \
    || die "sacctmgr add account failed"
for u in $USERS; do
    sacctmgr -i add user "$u" account="$ACCOUNT" cluster="$CLUSTER" >/dev/null || die "sacctmgr add user $u failed"
done

log "starting slurmctld and slurmd"
slurmctld || die "slurmctld did not start"
wait_for 60 slurmctld scontrol ping
slurmd || die "slurmd did not start"
wait_for 60 "node $HOST to be idle" sh -c "sinfo -h -N -n '$HOST' -o %t | grep -qx idle"

log "cluster '$CLUSTER' up: partition $PARTITION, node $HOST ($CPUS CPUs, $MEM MB), account $ACCOUNT for: $USERS"
echo "export SLURM_CONF=$SLURM_CONF"
