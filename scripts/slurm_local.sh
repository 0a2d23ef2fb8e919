#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, from Debian's slurm-wlm and munge packages,
# for the test suite and for trying `hydra/launcher=slurm` locally.
#   bash scripts/slurm_local.sh start    # install if missing, configure, start; idempotent
#   bash scripts/slurm_local.sh status
#   bash scripts/slurm_local.sh stop
set -euo pipefail

CONF=/etc/slurm/slurm.conf
STATE=/var/lib/slurm-local
LOGS=/var/log/slurm-local
NODE=$(hostname -s)

install_packages() {
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    echo "slurm_local: installing slurm-wlm and munge"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
  fi
}

start_munge() {
  # munge authenticates every message between the daemons and the client commands.
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
  fi
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge && chown munge:munge /run/munge
  if ! munge -n >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged --force
    echo "slurm_local: munged started"
  fi
}

write_conf() {
  local cpus mem
  cpus=$(nproc)
  # Leave 2 GiB to the rest of the machine.
  mem=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 2048 ))
  mkdir -p "$STATE/ctld" "$STATE/d" "$LOGS" /etc/slurm
  cat > "$CONF" <<CONF
# Written by scripts/slurm_local.sh: one node, everything local, no cgroups (no systemd here).
ClusterName=pilaf-local
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
JobRequeue=1
MpiDefault=none
SchedulerType=sched/backfill
NodeName=$NODE CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
}

running() { pgrep -x "$1" >/dev/null; }

start() {
  install_packages
  start_munge
  if running slurmctld && running slurmd && sinfo -h >/dev/null 2>&1; then
    echo "slurm_local: already running"; sinfo; return 0
  fi
  write_conf
  running slurmctld || /usr/sbin/slurmctld
  running slurmd || /usr/sbin/slurmd
  for _ in $(seq 60); do
    if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
      scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
      srun -N1 -t 1 hostname >/dev/null && { echo "slurm_local: cluster up (srun hostname works)"; sinfo; return 0; }
    fi
    sleep 1
  done
  echo "slurm_local: cluster did not come up; see $LOGS" >&2
  exit 1
}

stop() {
  pkill -x slurmd || true
  pkill -x slurmctld || true
  echo "slurm_local: stopped"
}

status() { sinfo; squeue; }

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
