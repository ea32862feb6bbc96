#!/usr/bin/env bash
# A private single-node SLURM on this machine, for the cluster tests and for trying
# `nnunet-iph slurm` without a cluster.
#
#   scripts/slurm_local.sh install        apt-get install slurmctld slurmd slurm-client munge (root)
#   scripts/slurm_local.sh start DIR      write DIR/slurm.conf, start munged, slurmctld, slurmd;
#                                         prints `export SLURM_CONF=DIR/slurm.conf`
#   scripts/slurm_local.sh stop DIR       stop the three daemons by the pids recorded in DIR
#
# Everything lives in DIR: munge socket, state, spool, logs, pid files, and free TCP ports are
# picked at start, so several instances (parallel sessions, CI) never share a daemon, port or socket.
# No accounting storage: `sacct` is unavailable and `nnunet-iph slurm status` falls back to scontrol.
# Exit codes: 0 ok, 3 SLURM can't be installed/started here (callers skip), other = bug.
set -euo pipefail

SLURM_PACKAGES=(slurmctld slurmd slurm-client munge)

die_unavailable() { echo "slurm_local: $*" >&2; exit 3; }

have_binaries() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null
}

cmd_install() {
    have_binaries && return 0
    [[ $(id -u) -eq 0 ]] || die_unavailable "SLURM is not installed and we are not root (need: ${SLURM_PACKAGES[*]})"
    command -v apt-get >/dev/null || die_unavailable "SLURM is not installed and there is no apt-get"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends "${SLURM_PACKAGES[@]}" >/dev/null 2>&1; then
        apt-get update -q >/dev/null 2>&1 || true
        apt-get install -y -q --no-install-recommends "${SLURM_PACKAGES[@]}" >/dev/null \
            || die_unavailable "apt-get install ${SLURM_PACKAGES[*]} failed"
    fi
    have_binaries || die_unavailable "SLURM binaries still missing after apt-get install"
}

free_port() {
    python3 - <<'EOF'
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()
EOF
}

wait_for() {  # wait_for SECONDS CMD...: retry CMD until it succeeds
    local limit=$1; shift
    local t=0
    until "$@" >/dev/null 2>&1; do
        sleep 0.5; t=$((t + 1))
        (( t < limit * 2 )) || return 1
    done
}

cmd_start() {
    local dir=${1:?usage: slurm_local.sh start DIR}
    [[ $(id -u) -eq 0 ]] || die_unavailable "starting slurmctld/slurmd/munged needs root"
    have_binaries || die_unavailable "SLURM is not installed (run: $0 install)"
    [[ -r /etc/munge/munge.key ]] || die_unavailable "/etc/munge/munge.key is missing (reinstall munge)"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    # munged refuses a socket dir writable by others: a private dir owned by munge, 0755 parents
    chmod 755 "$dir"
    mkdir -p "$dir/munge" "$dir/state" "$dir/spool" "$dir/log"
    chown munge:munge "$dir/munge"
    chmod 755 "$dir/munge"
    local sock="$dir/munge/munge.socket"

    runuser -u munge -- /usr/sbin/munged --socket="$sock" --pid-file="$dir/munge/munged.pid" \
        --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed" \
        || die_unavailable "munged failed to start: $(tail -3 "$dir/munge/munged.log" 2>/dev/null)"
    wait_for 10 bash -c "munge -n -S '$sock' | unmunge -S '$sock'" \
        || die_unavailable "munged does not answer on $sock"
    cp "$dir/munge/munged.pid" "$dir/munged.pid"

    local cpus mem host ctl_port d_port
    read -r cpus mem < <(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*RealMemory=\([0-9]*\).*/\1 \2/p')
    host=$(hostname)
    ctl_port=$(free_port); d_port=$(free_port)
    while [[ $d_port == "$ctl_port" ]]; do d_port=$(free_port); done
    cat > "$dir/slurm.conf" <<EOF
# private single-node SLURM written by scripts/slurm_local.sh
ClusterName=iphlocal
SlurmctldHost=${host}(127.0.0.1)
SlurmctldPort=${ctl_port}
SlurmdPort=${d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=${sock}
StateSaveLocation=${dir}/state
SlurmdSpoolDir=${dir}/spool/slurmd-%n
SlurmctldPidFile=${dir}/slurmctld.pid
SlurmdPidFile=${dir}/slurmd.pid
SlurmctldLogFile=${dir}/log/slurmctld.log
SlurmdLogFile=${dir}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
MpiDefault=none
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=3600
KillWait=5
InactiveLimit=0
SlurmdTimeout=60
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF="$dir/slurm.conf"
    /usr/sbin/slurmctld -c -f "$SLURM_CONF" \
        || die_unavailable "slurmctld failed: $(tail -5 "$dir/log/slurmctld.log" 2>/dev/null)"
    wait_for 20 scontrol ping || die_unavailable "slurmctld not answering: $(tail -5 "$dir/log/slurmctld.log")"
    /usr/sbin/slurmd -f "$SLURM_CONF" \
        || die_unavailable "slurmd failed: $(tail -5 "$dir/log/slurmd.log" 2>/dev/null)"
    idle() { sinfo -h -N -o '%T' | grep -qiE '^(idle|mixed|allocated)'; }
    wait_for 30 idle || die_unavailable "node never became idle: $(sinfo -N 2>&1); $(tail -5 "$dir/log/slurmd.log")"
    echo "export SLURM_CONF=$SLURM_CONF"
}

cmd_stop() {
    local dir=${1:?usage: slurm_local.sh stop DIR}
    local name pid
    for name in slurmd slurmctld munged; do
        [[ -f "$dir/$name.pid" ]] || continue
        pid=$(cat "$dir/$name.pid")
        # only our own daemon: the pid must still run the expected program
        if [[ -n $pid ]] && grep -qs "$name" "/proc/$pid/comm"; then
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$dir/$name.pid"
    done
}

case ${1:-} in
    install) cmd_install ;;
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    *) echo "usage: $0 install | start DIR | stop DIR" >&2; exit 2 ;;
esac
