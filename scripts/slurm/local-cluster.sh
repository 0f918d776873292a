#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for testing the store's cluster path against a
# real scheduler: Debian's SLURM 22.05 (slurmctld, slurmd, slurm-client) and munge, started without
# systemd or cgroups.
#
#   scripts/slurm/local-cluster.sh start    # install if needed, configure, start, wait for an idle node
#   scripts/slurm/local-cluster.sh status   # the daemons and sinfo
#   scripts/slurm/local-cluster.sh stop     # cancel every job, stop the daemons this script started
#
# Needs root (apt-get, /etc/slurm, the munge user). State, logs and pid files live in
# $TRAK_SLURM_DIR (default /var/tmp/trak-slurm); `stop` stops only the processes whose pids it
# recorded there. `start` is idempotent: daemons already running from a previous start are kept.
# Every failure exits non-zero with the reason and the end of the daemon's log.
set -euo pipefail

DIR=${TRAK_SLURM_DIR:-/var/tmp/trak-slurm}
CONF=/etc/slurm/slurm.conf
HOST=$(hostname -s)

die() {
    echo "local-cluster: $*" >&2
    exit 1
}

# A process is alive when it exists and is not a zombie (this machine's init reaps late).
alive() {
    local pid=$1
    [[ -n $pid && -d /proc/$pid ]] || return 1
    [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]
}

pid_of() {
    [[ -f $DIR/$1.pid ]] && cat "$DIR/$1.pid" || true
}

install() {
    command -v slurmctld >/dev/null && command -v munged >/dev/null && return
    echo "local-cluster: installing slurmctld, slurmd, slurm-client and munge from Debian"
    # Keep the packages from starting their services (there is no systemd to stop them).
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' RETURN
    apt-get update -qq || die "apt-get update failed"
    # The daemons, the commands and munge only (the slurm-wlm metapackage adds ~20 plugin
    # packages that a single node does not use).
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null ||
        die "apt-get install slurmctld slurmd slurm-client munge failed"
}

MARK="# Written by trak's scripts/slurm/local-cluster.sh"

# This script is for a machine without a SLURM of its own: it never replaces a configuration
# it did not write, nor runs beside daemons it did not start.
refuse_foreign() {
    if [[ -f $CONF ]] && ! head -1 "$CONF" | grep -qF "$MARK"; then
        die "$CONF was not written by this script; refusing to replace a real cluster's configuration"
    fi
    local name pid
    for name in slurmctld slurmd; do
        for pid in $(pgrep -x "$name" || true); do
            if alive "$pid" && [[ $pid != "$(pid_of "$name")" ]]; then
                die "a $name that this script did not start is running (pid $pid)"
            fi
        done
    done
}

configure() {
    mkdir -p "$DIR/state" "$DIR/spool"
    getent hosts "$HOST" >/dev/null || echo "127.0.0.1 $HOST" >>/etc/hosts
    [[ -s /etc/munge/munge.key ]] || {
        dd if=/dev/urandom of=/etc/munge/munge.key bs=128 count=1 status=none
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    }
    local cpus mem
    cpus=$(nproc)
    # A little under what is free, or slurmd registers with "Low RealMemory" and drains.
    mem=$(($(free -m | awk '/^Mem:/ {print $2}') * 9 / 10))
    cat >"$CONF.new" <<EOF
$MARK: one node, no cgroups, no accounting daemon.
ClusterName=trak-local
SlurmctldHost=$HOST
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MailProg=/bin/true
# A requeued job waits cred_expire seconds before it may start again (default 120); the main
# scheduling loop runs every sched_interval seconds (default 60), which is when it starts.
AuthInfo=cred_expire=10
SchedulerParameters=sched_interval=2
ReturnToService=2
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.txt
NodeName=$HOST CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
    if cmp -s "$CONF.new" "$CONF"; then
        rm "$CONF.new"
    else
        mv "$CONF.new" "$CONF"
        CHANGED=1
    fi
}

start_munge() {
    alive "$(pid_of munged)" && return
    mkdir -p /run/munge
    chown munge:munge /run/munge
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid ||
        die "munged did not start"
    cp /run/munge/munged.pid "$DIR/munged.pid"
    munge -n | unmunge >/dev/null || die "munge cannot encode and decode a credential"
}

start_daemon() {
    local name=$1
    alive "$(pid_of "$name")" && return
    "/usr/sbin/$name" || die "$name did not start: $(tail -5 "$DIR/$name.log" 2>/dev/null)"
    for _ in $(seq 50); do
        alive "$(pid_of "$name")" && return
        sleep 0.2
    done
    die "$name exited: $(tail -5 "$DIR/$name.log" 2>/dev/null)"
}

wait_idle() {
    local state
    for _ in $(seq 150); do
        state=$(sinfo -h -n "$HOST" -o %t 2>/dev/null || true)
        case $state in
        idle | mix | alloc) return ;;
        drain* | down*) scontrol update nodename="$HOST" state=resume 2>/dev/null || true ;;
        esac
        sleep 0.2
    done
    die "node $HOST is not idle after 30 s (state: ${state:-none}): $(tail -5 "$DIR/slurmd.log")"
}

stop_pid() {
    local name=$1 pid
    pid=$(pid_of "$name")
    if alive "$pid"; then
        kill "$pid"
        for _ in $(seq 50); do
            alive "$pid" || break
            sleep 0.2
        done
        alive "$pid" && kill -9 "$pid"
    fi
    rm -f "$DIR/$name.pid"
}

case ${1:-} in
start)
    [[ $(id -u) == 0 ]] || die "needs root"
    t0=$(date +%s%3N)
    install
    refuse_foreign
    CHANGED=0
    configure
    if [[ $CHANGED == 1 ]] && alive "$(pid_of slurmctld)"; then
        echo "local-cluster: configuration changed, restarting the daemons"
        stop_pid slurmd
        stop_pid slurmctld
    fi
    start_munge
    start_daemon slurmctld
    start_daemon slurmd
    wait_idle
    ms=$(($(date +%s%3N) - t0))
    echo "local-cluster: node $HOST idle ($(nproc) CPUs) after $((ms / 1000)).$((ms % 1000 / 100)) s"
    ;;
status)
    for d in munged slurmctld slurmd; do
        if alive "$(pid_of $d)"; then echo "$d: running ($(pid_of $d))"; else echo "$d: stopped"; fi
    done
    sinfo 2>/dev/null || true
    ;;
stop)
    # Job processes outlive slurmd: cancel them first, while the controller still runs.
    if alive "$(pid_of slurmctld)"; then
        scancel --full --quiet --user=root 2>/dev/null || true
        for _ in $(seq 50); do
            [[ -z $(squeue -h 2>/dev/null) ]] && break
            sleep 0.2
        done
    fi
    stop_pid slurmd
    stop_pid slurmctld
    stop_pid munged
    echo "local-cluster: stopped"
    ;;
*)
    echo "usage: $0 start|status|stop" >&2
    exit 2
    ;;
esac
