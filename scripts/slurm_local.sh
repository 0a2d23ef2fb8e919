#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, from Debian's slurm-wlm and munge packages,
# for the test suite (tests/infra/test_slurm.py) and for trying `hydra/launcher=slurm` locally.
#   bash scripts/slurm_local.sh start    # install if missing, configure, start, wait until srun works; idempotent
#   bash scripts/slurm_local.sh status   # sinfo + squeue
#   bash scripts/slurm_local.sh stop     # stop slurmd, slurmctld and munged
# Needs root. No systemd here, so the daemons are started directly; they detach themselves.
set -euo pipefail

CONF=/etc/slurm/slurm.conf          # where Debian's daemons and client commands read it
STATE=/var/lib/slurm-local          # controller state + slurmd spool (survive a restart)
LOGS=/var/log/slurm-local
NODE=$(hostname -s)                 # SlurmctldHost and NodeName must be the short hostname
CTLD_PID=$STATE/slurmctld.pid
SLURMD_PID=$STATE/slurmd.pid
MUNGE_PID=/run/munge/munged.pid     # munged's default
WAIT_S=60                           # how long start waits for the node to take jobs

say() { echo "slurm_local: $*"; }

# True if pid file $1 names a live process called $2 (a stale file from a killed daemon does not count).
alive() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}

install_packages() {
  local cmd
  for cmd in /usr/sbin/munged /usr/sbin/slurmctld /usr/sbin/slurmd /usr/bin/srun; do
    if [ ! -x "$cmd" ]; then
      say "installing slurm-wlm and munge (apt-get)"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
      return
    fi
  done
}

start_munge() {
  # munge authenticates every message between the daemons and the client commands (one shared key).
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key
    else dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none; fi
    say "created /etc/munge/munge.key"
  fi
  # munged refuses to start unless its key and directories belong to the munge user.
  chown munge:munge /etc/munge /etc/munge/munge.key && chmod 700 /etc/munge && chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/lib/munge /var/log/munge
  chown munge:munge /run/munge /var/lib/munge /var/log/munge
  if munge -n >/dev/null 2>&1; then return; fi
  # --force: start even if a previous munged left its socket behind.
  runuser -u munge -- /usr/sbin/munged --force
  munge -n | unmunge >/dev/null
  say "munged started"
}

write_conf() {
  local cpus total_mb headroom_mb mem_mb
  cpus=$(nproc)
  total_mb=$(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo)
  # Leave the OS and the submitting process 10% (at least 1 GiB) of the memory.
  headroom_mb=$(( total_mb / 10 > 1024 ? total_mb / 10 : 1024 ))
  mem_mb=$(( total_mb - headroom_mb ))
  mkdir -p "$STATE/ctld" "$STATE/d" "$LOGS" "$(dirname "$CONF")"
  cat > "$CONF" <<CONF
# Written by scripts/slurm_local.sh: one node (this machine), all daemons as root, no cgroups
# (no systemd here), hence process tracking by /proc and no CPU binding.
ClusterName=pilaf-local
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job may start again after cred_expire seconds (default 120): short, so pre-emption
# tests do not wait minutes.
AuthInfo=cred_expire=10
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
# CPUs and memory are consumable, so jobs share the node (e.g. a sweep's array tasks run side by side).
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=$(( mem_mb / cpus ))
# A node that was down (e.g. after a restart) comes back by itself once slurmd registers.
ReturnToService=2
# Jobs may be requeued (submitit does so on timeout/pre-emption when max_num_timeout > 0).
JobRequeue=1
NodeName=$NODE CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
  say "wrote $CONF: node $NODE, $cpus CPUs, $mem_mb MB, partition debug"
}

# The node accepts jobs: it is idle/mixed/allocated and a one-task job runs.
node_works() {
  sinfo -h -n "$NODE" -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)' &&
    timeout 20 srun -N1 -t 1 hostname >/dev/null 2>&1
}

start() {
  install_packages
  start_munge
  if alive "$CTLD_PID" slurmctld && alive "$SLURMD_PID" slurmd && sinfo -h >/dev/null 2>&1; then
    say "already running"
    sinfo
    return 0
  fi
  write_conf
  if ! alive "$CTLD_PID" slurmctld; then
    /usr/sbin/slurmctld
    say "slurmctld started"
  fi
  if ! alive "$SLURMD_PID" slurmd; then
    /usr/sbin/slurmd
    say "slurmd started"
  fi
  for _ in $(seq "$WAIT_S"); do
    if node_works; then
      say "cluster up: srun -N1 hostname works"
      sinfo
      return 0
    fi
    # A node left down/drained by an unclean stop: put it back in service.
    if sinfo -h -n "$NODE" -o %T 2>/dev/null | grep -qE '^(down|drain)'; then
      scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
    fi
    sleep 1
  done
  echo "slurm_local: the node did not accept jobs within ${WAIT_S}s; see $LOGS/*.log" >&2
  sinfo -R >&2 || true
  exit 1
}

# Send SIGTERM to the daemon of pid file $1 (named $2) and wait for it to exit.
stop_daemon() {
  local pid
  if ! alive "$1" "$2"; then return; fi
  pid=$(cat "$1")
  kill "$pid"
  for _ in $(seq 30); do
    [ -e "/proc/$pid" ] || { say "$2 stopped"; return; }
    sleep 0.5
  done
  say "$2 (pid $pid) did not stop within 15 s" >&2
  return 1
}

stop() {
  stop_daemon "$SLURMD_PID" slurmd
  stop_daemon "$CTLD_PID" slurmctld   # saves its state; running jobs are recovered on the next start
  stop_daemon "$MUNGE_PID" munged
  say "stopped"
}

status() {
  sinfo
  squeue
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
