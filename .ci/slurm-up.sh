#!/usr/bin/env bash
# Bring up a one-node SLURM cluster on this Debian/Ubuntu machine for CI: munged, slurmctld, slurmd.
# No accounting daemon (the profile polls with squeue), no cgroups, no systemd.
#
#   .ci/slurm-up.sh            (as root, or through sudo)
#
# SEGBENCH_SLURM_DIR  state, logs and pid files (default /tmp/segbench-slurm)
# Writes /etc/slurm/slurm.conf (clients find the cluster there, also inside jobs) and records every daemon
# it starts in $SEGBENCH_SLURM_DIR/started, which .ci/slurm-down.sh reads to stop exactly those, by pid.
set -euo pipefail
if [[ $EUID -ne 0 ]]; then exec sudo -E "$0" "$@"; fi

DIR=${SEGBENCH_SLURM_DIR:-/tmp/segbench-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by segbench .ci/slurm-up.sh"
T0=$(date +%s%N)
say() { local ms=$((($(date +%s%N) - T0) / 1000000)); printf '[%s %d.%03ds] %s\n' slurm-up $((ms / 1000)) $((ms % 1000)) "$*"; }
running() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
wait_for_pidfile() { # the daemons fork; their pid file appears once they are up
    for _ in $(seq 100); do running "$1" && return 0; sleep 0.1; done
    echo "no live process in $1 after 10 s; see $DIR/log" >&2
    exit 1
}

if [[ -f $CONF ]] && ! grep -qF "$MARK" "$CONF"; then
    echo "$CONF exists and was not written by this script: this machine has its own SLURM setup." >&2
    echo "Run the workflow against it directly, or move $CONF away to let CI start a private cluster." >&2
    exit 1
fi

missing=()
for exe in slurmctld slurmd sbatch munged; do command -v "$exe" >/dev/null || missing+=("$exe"); done
if ((${#missing[@]})); then
    say "installing slurmctld slurmd slurm-client munge (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
    say "installed slurm $(dpkg-query -W -f='${Version}' slurmctld), munge $(dpkg-query -W -f='${Version}' munge)"
fi

# A cluster of our own starts empty: jobs saved by an earlier run that was killed (or a machine that
# restarted with /tmp kept) would be recovered as still running, and the node would never become idle.
mkdir -p "$DIR"
if ! running "$DIR/run/slurmctld.pid"; then
    rm -rf "$DIR/ctld" "$DIR/spool"
    [[ -s $DIR/started ]] && say "clearing state left by an earlier run in $DIR"
    : >"$DIR/started"
fi
mkdir -p "$DIR"/{ctld,spool,log,run} /etc/slurm
touch "$DIR/started"

# munge: authenticates every SLURM message. It must run as the munge user and find /run/munge.
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    head -c 1024 /dev/urandom >/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
fi
if running /run/munge/munged.pid; then
    say "munged already running (pid $(cat /run/munge/munged.pid)); leaving it alone"
else
    rm -f /run/munge/munged.pid
    runuser -u munge -- /usr/sbin/munged
    wait_for_pidfile /run/munge/munged.pid
    echo "munged /run/munge/munged.pid" >>"$DIR/started"
    say "munged started (pid $(cat /run/munge/munged.pid))"
fi

# slurm.conf: one node (this machine, as `slurmd -C` sees it) in one default partition, `debug`.
read -r CPUS MEM < <(slurmd -C | sed -nE 's/.*CPUs=([0-9]+).*RealMemory=([0-9]+).*/\1 \2/p')
HOST=$(hostname -s)
cat >"$CONF" <<EOF
$MARK
ClusterName=segbench-ci
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# containers and CI VMs have no usable cgroups: track job processes through /proc instead
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# no slurmdbd: sacct cannot work, so the profile sets slurm-status-command: squeue
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# finished jobs stay visible to 'squeue --states=all' for 30 min: the plugin's squeue status query needs
# them (it falls back to sacct when MinJobAge < 3 x its initial status delay)
MinJobAge=1800
ReturnToService=2
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$((MEM * 9 / 10)) State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
say "wrote $CONF: node $HOST, $CPUS CPUs, $((MEM * 9 / 10)) MB"

for daemon in slurmctld slurmd; do
    pidfile=$DIR/run/$daemon.pid
    if running "$pidfile"; then
        say "$daemon already running (pid $(cat "$pidfile")); reconfiguring"
        scontrol reconfigure
    else
        "$daemon"
        wait_for_pidfile "$pidfile"
        echo "$daemon $pidfile" >>"$DIR/started"
        say "$daemon started (pid $(cat "$pidfile"))"
    fi
done

for _ in $(seq 100); do
    state=$(sinfo -h -n "$HOST" -o %t 2>/dev/null | head -1 || true)
    [[ $state == idle ]] && break
    sleep 0.2
done
if [[ $state != idle ]]; then
    echo "node $HOST is '$state', not idle, after 20 s. Jobs known to the cluster:" >&2
    squeue -h -t all -o '  %i %T %j %M' 2>&1 | tail -20 >&2
    echo "last lines of $DIR/log/slurmctld.log and slurmd.log:" >&2
    tail -n 15 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2
    exit 1
fi
srun --time=1 --ntasks=1 true
say "cluster up: $(sinfo -h -o '%P %D nodes %C cpus(A/I/O/T) %t')"
