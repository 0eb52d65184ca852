#!/usr/bin/env bash
# Bring up a single-node SLURM cluster on this machine (Debian/Ubuntu, root or sudo) for the
# integration test: installs slurm-wlm and munge if missing, writes /etc/slurm/slurm.conf for
# this host, starts munged, slurmctld and slurmd directly (no systemd needed) and waits until
# the node is idle. Safe to run again: a cluster that is already up is left as it is.
#
#   bash scripts/slurm_local.sh && ELIT_BENCH_SLURM=1 pytest tests/test_slurm_integration.py
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "slurm_local.sh: run as root (or install sudo)" >&2; exit 1; }
    exec sudo -E bash "$0" "$@"
fi

HOST=$(hostname -s)
CONF=/etc/slurm/slurm.conf
MARKER="# written by elit_bench scripts/slurm_local.sh"
LOGS=/var/log/slurm
WAIT_S=${SLURM_LOCAL_WAIT_S:-60}

die() {
    echo "slurm_local.sh: $*" >&2
    for log in /var/log/munge/munged.log "$LOGS/slurmctld.log" "$LOGS/slurmd.log"; do
        [ -f "$log" ] && { echo "--- tail of $log" >&2; tail -n 20 "$log" >&2; }
    done
    exit 1
}

node_state() {  # the node's state as sinfo prints it (idle, mix, alloc, down*, drain, ...), empty if unknown
    sinfo -h -N -n "$HOST" -o %t 2>/dev/null | head -n 1
}

node_ready() {
    case "$(node_state)" in idle | mix | alloc | comp) return 0 ;; *) return 1 ;; esac
}

munge_ok() {
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1
}

slurmd_running() {  # the controller reports a dead slurmd only minutes later, so look at the process
    [ "$(cat "/proc/$(cat /run/slurmd.pid 2>/dev/null)/comm" 2>/dev/null)" = slurmd ]
}

if command -v sinfo >/dev/null && [ -f "$CONF" ] && munge_ok && slurmd_running && node_ready; then
    echo "SLURM already up: node $HOST is $(node_state)"
    exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sinfo >/dev/null \
    || ! command -v munged >/dev/null; then
    echo "installing slurm-wlm and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q || die "apt-get update failed"
    apt-get install -y -q --no-install-recommends slurm-wlm munge || die "apt-get install slurm-wlm munge failed"
fi

# munge: the shared key, then the daemon (as the munge user, like the packaged service)
if [ ! -s /etc/munge/munge.key ]; then
    if [ -x /usr/sbin/mungekey ]; then
        /usr/sbin/mungekey --create --keyfile=/etc/munge/munge.key
    elif [ -x /usr/sbin/create-munge-key ]; then
        /usr/sbin/create-munge-key -f
    else
        die "no munge key and neither mungekey nor create-munge-key is installed"
    fi
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
chmod 0755 /run/munge
if ! munge_ok; then
    echo "starting munged"
    runuser -u munge -- /usr/sbin/munged || die "munged did not start"
    for _ in $(seq 20); do munge_ok && break; sleep 0.5; done
    munge -n | unmunge >/dev/null || die "munge credentials do not round-trip"
fi

# slurm.conf for this host only; a configuration written by someone else is never replaced
if [ -f "$CONF" ] && ! grep -qxF "$MARKER" "$CONF"; then
    die "$CONF exists and was not written by this script; move it away to use the local test cluster"
fi
# slurmd -C prints this machine's node line (CPUs, sockets, cores, threads, RealMemory)
NODE=$(slurmd -C | head -n 1 | sed -E "s/^NodeName=[^ ]+/NodeName=$HOST/")
[[ "$NODE" == NodeName=*CPUs=*RealMemory=* ]] || die "unexpected 'slurmd -C' output: $NODE"
# the integration test runs a job of 2 tasks (DDP on CPU): a 1-CPU machine declares 2 and shares its core
OVERRIDES=""
if [[ "$NODE" =~ CPUs=([0-9]+) ]] && [ "${BASH_REMATCH[1]}" -lt 2 ]; then
    NODE="NodeName=$HOST CPUs=2 $(grep -o 'RealMemory=[0-9]*' <<<"$NODE")"
    OVERRIDES="SlurmdParameters=config_overrides"
fi
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd "$LOGS"
cat >"$CONF.tmp" <<EOF
$MARKER
ClusterName=elit-local
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
# keep finished jobs visible to scontrol show job for an hour (the test checks their final state)
MinJobAge=3600
MailProg=/bin/true
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
$OVERRIDES
$NODE NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
mv "$CONF.tmp" "$CONF"

# the daemons fork into the background themselves; start only those not already answering
if ! scontrol ping 2>/dev/null | grep -q "is UP"; then
    echo "starting slurmctld"
    slurmctld || die "slurmctld did not start"
fi
if ! slurmd_running; then
    echo "starting slurmd"
    slurmd || die "slurmd did not start"
fi

for _ in $(seq "$WAIT_S"); do
    if node_ready; then
        echo "SLURM up: $(sinfo -h -o '%P %a %D %t %N')"
        exit 0
    fi
    sleep 1
done
die "node $HOST not idle after ${WAIT_S}s (state: '$(node_state)'; $(sinfo -h -R 2>/dev/null || true))"
