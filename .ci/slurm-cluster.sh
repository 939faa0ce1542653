#!/usr/bin/env bash
# A throw-away single-node SLURM cluster for tests (Debian slurm-wlm + munge, as root,
# without systemd): proctrack/linuxproc, task/affinity, no accounting, a fake `gpu` gres
# (two devices), the partitions `cpu` (default) and `gpu` that
# workflow/profiles/slurm/partitions.yaml names, both on the one node, and a partition
# `urgent` whose jobs preempt theirs the way many clusters do it: by cancelling them
# (PreemptType=preempt/partition_prio, PreemptMode=CANCEL).
#
#   .ci/slurm-cluster.sh install        apt-get install the packages (root only)
#   .ci/slurm-cluster.sh start DIR      write DIR/slurm.conf, start munged, slurmctld, slurmd
#   .ci/slurm-cluster.sh stop DIR       stop exactly the daemons that `start DIR` started
#
# Use the cluster with SLURM_CONF=DIR/slurm.conf. Exit status 3 means "cannot here".
set -euo pipefail

cmd=${1:-}
dir=${2:-}

need_root() {
    if [ "$(id -u)" != 0 ]; then
        echo "needs root" >&2
        exit 3
    fi
}

case "$cmd" in
install)
    need_root
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v sbatch >/dev/null && command -v munged >/dev/null; then
        exit 0
    fi
    command -v apt-get >/dev/null || { echo "no apt-get" >&2; exit 3; }
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || { echo "apt-get update failed" >&2; exit 3; }
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge \
        >/dev/null || { echo "apt-get install failed" >&2; exit 3; }
    ;;
start)
    need_root
    [ -n "$dir" ] || { echo "usage: $0 start DIR" >&2; exit 2; }
    mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
    host=$(hostname -s)
    cpus=$(nproc)
    mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
    # munge: a private key and socket, so nothing of the host's setup is touched
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    chmod 400 "$dir/munge/munge.key"
    munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/socket" \
        --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
        --seed-file="$dir/munge/seed"
    cat >"$dir/slurm.conf" <<CONF
ClusterName=eiou-test
SlurmctldHost=$host
AuthType=auth/munge
AuthInfo=socket=$dir/munge/socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
SlurmctldPort=16817
SlurmdPort=16818
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=600
KillWait=5
SlurmdTimeout=60
NodeName=$host CPUs=$cpus RealMemory=$mem Gres=gpu:2 State=UNKNOWN
PreemptType=preempt/partition_prio
PreemptMode=CANCEL
PartitionName=cpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP PriorityTier=1
PartitionName=gpu Nodes=ALL MaxTime=INFINITE State=UP PriorityTier=1
PartitionName=urgent Nodes=ALL MaxTime=INFINITE State=UP PriorityTier=2
CONF
    cat >"$dir/gres.conf" <<CONF
AutoDetect=off
NodeName=$host Name=gpu File=/dev/null
NodeName=$host Name=gpu File=/dev/zero
CONF
    # Inside a job, Snakemake's SLURM plugin unsets SLURM_CONF before calling srun, which
    # then reads the default /etc/slurm/slurm.conf: put a copy there, unless the machine
    # already has a SLURM config (then this is not a throw-away machine: refuse).
    if [ -e /etc/slurm/slurm.conf ] && ! grep -q "^ClusterName=eiou-test$" /etc/slurm/slurm.conf; then
        echo "/etc/slurm/slurm.conf exists and is not ours; not touching it" >&2
        exit 3
    fi
    mkdir -p /etc/slurm
    cp "$dir/slurm.conf" /etc/slurm/slurm.conf
    echo "$dir" >"$dir/installed-etc-slurm-conf"
    export SLURM_CONF="$dir/slurm.conf"
    slurmctld -f "$dir/slurm.conf"
    slurmd -f "$dir/slurm.conf"
    for _ in $(seq 60); do
        if sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
            exit 0
        fi
        scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
        sleep 1
    done
    echo "cluster did not come up; see $dir/*.log" >&2
    exit 1
    ;;
stop)
    [ -n "$dir" ] || { echo "usage: $0 stop DIR" >&2; exit 2; }
    for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
        if [ -s "$pidfile" ]; then
            pid=$(cat "$pidfile")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        fi
    done
    if [ -e "$dir/installed-etc-slurm-conf" ] && grep -q "^StateSaveLocation=$dir/state$" /etc/slurm/slurm.conf 2>/dev/null; then
        rm -f /etc/slurm/slurm.conf
    fi
    ;;
*)
    echo "usage: $0 install | start DIR | stop DIR" >&2
    exit 2
    ;;
esac
