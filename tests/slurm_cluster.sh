#!/usr/bin/env bash
# A real single-node Slurm cluster on 127.0.0.1 for the tests: partitions `cpu` (default) and `gpu`,
# one fake GPU (GRES backed by /dev/null, so jobs see CUDA_VISIBLE_DEVICES=0 but torch stays on the CPU).
#
#   sudo tests/slurm_cluster.sh start     # install Debian's munge + Slurm if missing, start, wait until idle
#   tests/slurm_cluster.sh status         # daemons, partitions, node state
#   sudo tests/slurm_cluster.sh stop      # stop the daemons this script started (by PID), remove the symlink
#
# Everything lives in $SLURM_TEST_DIR (default /tmp/cifar100-slurm): config, munge key, spool, logs, PIDs.
# Daemons are started by hand (no systemd), as root, and only ever addressed on 127.0.0.1.
# Why /etc/slurm/slurm.conf is a symlink: the plugin's job step strips every SLURM_* variable,
# SLURM_CONF included, before its inner `srun`, so the config must sit at the compiled-in path.
#
# Test-cluster-only choices: no slurmdbd (so no sacct: the test profile uses the squeue status command
# and MinJobAge keeps finished jobs visible to squeue; a --qos is accepted but not kept). The node
# is a small real one, 4 CPUs and 16 GB with node features a100 and skylake (config_overrides lets it
# advertise more than a 2-core machine has): a job asking for more can never run, and sbatch refuses it.
set -euo pipefail

DIR=${SLURM_TEST_DIR:-/tmp/cifar100-slurm}
GPU_TYPE=${SLURM_TEST_GPU_TYPE:-}          # e.g. a100: the GRES type the profile's gpu_model asks for
NODE=${SLURM_TEST_NODE:-localnode}
CPUS=${SLURM_TEST_CPUS:-4}
MEM_MB=${SLURM_TEST_MEM_MB:-16384}
CTLD_PORT=${SLURM_TEST_CTLD_PORT:-6817}
SLURMD_PORT=${SLURM_TEST_SLURMD_PORT:-6818}
CONF=/etc/slurm/slurm.conf

die() { echo "slurm_cluster.sh: $*" >&2; exit 1; }

pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

install_packages() {
    local missing=()
    for pair in munged:munge slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
    done
    ((${#missing[@]} == 0)) && return 0
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
    echo "installing ${missing[*]} with apt-get"
    apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed"
}

write_config() {
    mkdir -p "$DIR"/{munge,spool/ctld,spool/d,log}
    chmod 755 "$DIR/munge"  # munged needs others to traverse to its socket; the key stays 0400
    if [[ ! -f $DIR/munge/munge.key ]]; then
        dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
    fi
    chmod 400 "$DIR/munge/munge.key"
    local gres="gpu:1" gres_type=""
    [[ -n $GPU_TYPE ]] && gres="gpu:$GPU_TYPE:1" && gres_type="Type=$GPU_TYPE "
    cat >"$DIR/slurm.conf" <<EOF
# Written by tests/slurm_cluster.sh: a throwaway one-node test cluster on loopback.
ClusterName=cifar100test
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$DIR/spool/ctld
SlurmdSpoolDir=$DIR/spool/d
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
MailProg=/bin/true
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# No slurmdbd here: keep finished jobs visible to squeue long enough for the status checks.
MinJobAge=600
ReturnToService=2
SlurmdParameters=config_overrides
GresTypes=gpu
SchedulerParameters=sched_interval=1
# Listen on one address, never on every interface: slurmctld on SlurmctldHost's 127.0.0.1, slurmd
# and srun on what this host's name resolves to (127.0.0.1 on most CI runners and containers).
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE CPUs=$CPUS RealMemory=$MEM_MB Gres=$gres Features=a100,skylake State=UNKNOWN
PartitionName=cpu Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$NODE Default=NO MaxTime=INFINITE State=UP
EOF
    # A GPU GRES without a device file is dropped (node INVAL); /dev/null stands in for one fake GPU.
    echo "NodeName=$NODE Name=gpu ${gres_type}File=/dev/null" >"$DIR/gres.conf"
}

link_config() {
    mkdir -p /etc/slurm
    if [[ -e $CONF || -L $CONF ]]; then
        local target
        target=$(readlink "$CONF" || true)
        [[ $target == "$DIR/slurm.conf" ]] && return 0
        if [[ -n $target ]] && head -n 1 "$target" 2>/dev/null | grep -q '^# Written by tests/slurm_cluster.sh'; then
            die "$CONF points to another test cluster's config ($target), left running or by a killed run: stop it with" \
                "'sudo SLURM_TEST_DIR=$(dirname "$target") $0 stop' (or remove the symlink if nothing runs), then start again"
        fi
        die "$CONF belongs to another Slurm installation on this machine; refusing to replace it. To free the" \
            "machine for the tests: stop that cluster's daemons (systemctl stop slurmd slurmctld), move its" \
            "config aside (sudo mv $CONF $CONF.site), run the tests, then move it back and restart them;" \
            "or run the tests on a machine without a Slurm of its own"
    fi
    ln -s "$DIR/slurm.conf" "$CONF"
    ln -sfn "$DIR/gres.conf" /etc/slurm/gres.conf
}

wait_idle() {
    local deadline=$((SECONDS + 60))
    while ((SECONDS < deadline)); do
        pid_alive "$DIR/slurmctld.pid" || break
        if timeout 5 sinfo -h -N -o '%T' 2>/dev/null | grep -qx 'idle'; then return 0; fi
        sleep 1
    done
    timeout 5 sinfo -N -l >&2 || true
    tail -n 20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
    die "the node did not become idle within 60 s (logs above, all in $DIR/log)"
}

start() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (starts munged, slurmctld and slurmd)"
    if pid_alive "$DIR/slurmctld.pid" && pid_alive "$DIR/slurmd.pid"; then
        echo "already running"; wait_idle; return 0
    fi
    install_packages
    write_config
    link_config
    pid_alive "$DIR/munged.pid" || munged --force --key-file="$DIR/munge/munge.key" \
        --socket="$DIR/munge/munge.socket" --pid-file="$DIR/munged.pid" \
        --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munge.seed" </dev/null >/dev/null 2>&1
    pid_alive "$DIR/slurmctld.pid" || slurmctld -c -i </dev/null >/dev/null 2>&1
    pid_alive "$DIR/slurmd.pid" || slurmd -N "$NODE" </dev/null >/dev/null 2>&1
    wait_idle
    scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
    echo "slurm test cluster up: $(sinfo -h -o '%P %a %D %T' | tr '\n' ';') config $CONF -> $DIR/slurm.conf"
}

stop() {
    local name pidfile pid i
    for name in slurmd slurmctld munged; do
        pidfile=$DIR/$name.pid
        pid_alive "$pidfile" || continue
        pid=$(cat "$pidfile")
        kill "$pid"
        for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        rm -f "$pidfile"
    done
    for f in "$CONF" /etc/slurm/gres.conf; do
        [[ -L $f && $(readlink "$f") == "$DIR"/* ]] && rm -f "$f"
    done
    echo "slurm test cluster stopped"
}

status() {
    local name
    for name in munged slurmctld slurmd; do
        if pid_alive "$DIR/$name.pid"; then echo "$name: running (pid $(cat "$DIR/$name.pid"))"
        else echo "$name: not running"; fi
    done
    pid_alive "$DIR/slurmctld.pid" && sinfo -N -o '%N %P %T %c %m %G'
    return 0
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
