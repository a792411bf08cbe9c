#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine (127.0.0.1), for `make test-slurm` and for trying
# `lossbench compare --launcher slurm` without a cluster. Needs root and Debian/Ubuntu (apt-get):
# installs slurm-wlm and munge when missing, writes /etc/slurm/slurm.conf for this host, and starts
# munged, slurmctld and slurmd. No accounting daemon (submitit warns about sacct and falls back).
# Idempotent: running it again with the daemons up only checks them. Stop them: scripts/slurm-down.sh
set -euo pipefail

if [ "$(id -u)" != 0 ]; then echo "slurm-up: needs root (apt-get, daemons under /etc and /var)"; exit 1; fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  echo "slurm-up: installing slurm-wlm and munge"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q slurm-wlm munge >/dev/null; }
fi

HOST=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
CONF=/etc/slurm/slurm.conf
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /var/lib/munge /var/log/munge
cat > "$CONF.new" <<CONF
# Written by lossbench scripts/slurm-up.sh: one node, this machine.
ClusterName=lossbench
SlurmctldHost=${HOST}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobRequeue=1
KillWait=30
MinJobAge=60
InactiveLimit=0
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEM_MB} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
if ! cmp -s "$CONF.new" "$CONF" 2>/dev/null; then mv "$CONF.new" "$CONF"; CHANGED=1; else rm "$CONF.new"; CHANGED=0; fi

if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key
pgrep -x munged >/dev/null || runuser -u munge -- munged

if [ "$CHANGED" = 1 ]; then pkill -x slurmctld || true; pkill -x slurmd || true; sleep 1; fi
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd

for _ in $(seq 60); do
  if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
    echo "slurm-up: cluster up on ${HOST} (${CPUS} CPUs): $(sinfo -h -o '%P %D %T')"; exit 0
  fi
  scontrol update NodeName="${HOST}" State=RESUME >/dev/null 2>&1 || true
  sleep 1
done
echo "slurm-up: the node did not come up; see /var/log/slurm/slurmctld.log and slurmd.log"; sinfo || true; exit 1
