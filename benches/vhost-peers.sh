#!/usr/bin/env bash
# vhost-user forwarding between two ports: weir against DPDK testpmd and OVS-DPDK.
#
#   cpu VP_GEN_CPU: dpdk-testpmd, two net_virtio_user ports (vhost-user servers):
#                   traffic source and sink
#   cpu VP_SW_CPU:  the switch's single polling thread (vhost-user client)
#
#     gen port0 -- p0.sock -- switch port a      switch port b -- p1.sock -- gen port1
#
# Closed loop: the generator runs testpmd's `mac` forward mode and is seeded with
# `start tx_first VP_TXFIRST` (VP_TXFIRST bursts of 32 frames per port, fewer than
# the 256-entry rings hold, so nothing is dropped). Frames then circulate
# gen0 -> a -> b -> gen1 -> gen0 and the reverse at once. Each port sends with its
# own source MAC to the other port's MAC (`mac=` devargs, `--eth-peer`), so a
# learning bridge (weir, OVS NORMAL) learns both stations and forwards unicast.
# Mpps = frames the generator receives per second on both ports (= forwarded).
#
# Peers, interleaved inside every rep so that slow phases of the host hit all
# (their order rotated from rep to rep):
#   weir     target/release/weir, one worker on VP_SW_CPU, two vhost-user client ports
#            on one bridge (MAC learning)
#   testpmd  dpdk-testpmd, two net_vhost client ports, forward-mode io
#   ovs      OVS-DPDK, netdev bridge, two dpdkvhostuserclient ports, one NORMAL flow;
#            a private instance (own db, rundir, logs) that leaves any system OVS alone
#
# Each run: VP_WARMUP s, then VP_DURATION samples of 1 s (testpmd's Rx-pps over the
# exact interval). A sample is dropped when processes outside the benchmark used
# more than VP_MAX_FOREIGN of either CPU during it (from /proc/stat minus our own
# threads). A run's rate is the mean of its clean samples (of all samples if none
# is clean); with fewer than VP_MIN_CLEAN clean samples it is flagged "noisy" and
# tried again, up to VP_TRIES times (the last try counts).
# Cycles per packet of the switch core:
#   busy   cycles of polls that moved packets / packets: testpmd --record-core-cycles,
#          OVS pmd-stats "avg processing cycles per packet", weir `pmd show` busy_cycles
#   cpu    CPU time (utime+stime) of the switch's polling thread x TSC rate / packets;
#          includes empty polls, excludes time the thread was not running (this box
#          is shared: busy cycles count TSC ticks while preempted, CPU time does not)
# Host state: right before and after each run, the round trip of one cache line
# between the two CPUs (benches/src/bin/cpu-handshake.rs; runs.tsv
# handshake_before_ns / handshake_after_ns). On a VM it shows where the hypervisor
# has put the two vCPUs (on this host 60-75 ns or 310-370 ns).
#
# Usage:
#   benches/vhost-peers.sh            full run (needs root: apt, hugepages, mounts)
#   benches/vhost-peers.sh --smoke    weir only, 64 B, a few seconds; fails if nothing
#                                     was forwarded
#   benches/vhost-peers.sh --callgrind
#                                     weir only, under valgrind --tool=callgrind, 64 B
#                                     (VP_SIZES): instructions per forwarded packet of
#                                     the worker thread and the functions they go to
# Environment (defaults in brackets):
#   VP_PEERS ["weir testpmd ovs"]  VP_SIZES ["64 1518"]  VP_REPS [3]
#   VP_DURATION [5]  VP_WARMUP [2]  VP_DIR [/tmp/weir-vhost-peers]
#   VP_GEN_CPU [0]  VP_SW_CPU [1]  VP_HUGEPAGES [1024]  VP_INSTALL [1]
#   VP_TXFIRST [6]  VP_QSIZE [256]  VP_MAX_FOREIGN [0.08]  VP_MIN_CLEAN [3]
#   VP_TRIES [2]  VP_QUIET_WAIT [60]  WEIR_BIN [built with cargo]
#   VP_CG_WARMUP [15] VP_CG_SECONDS [30]   (--callgrind: seconds before / while counting)
# Output: a table on stdout and in VP_DIR/summary.txt, one line per run in
# VP_DIR/runs.tsv, one per sample in VP_DIR/samples.tsv, the command lines in
# VP_DIR/commands.log and per-run logs under VP_DIR/logs/.
set -Eeuo pipefail

SMOKE=0
case ${1:-} in
    --smoke) SMOKE=1 ;;
    --callgrind) SMOKE=2 ;;
    "") ;;
    -h|--help) sed -n '2,/^set -E/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (use --smoke or nothing)" >&2; exit 2 ;;
esac

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VP_DIR=${VP_DIR:-/tmp/weir-vhost-peers}
VP_PEERS=${VP_PEERS:-"weir testpmd ovs"}
VP_SIZES=${VP_SIZES:-"64 1518"}
VP_REPS=${VP_REPS:-3}
VP_DURATION=${VP_DURATION:-5}
VP_WARMUP=${VP_WARMUP:-2}
VP_GEN_CPU=${VP_GEN_CPU:-0}
VP_SW_CPU=${VP_SW_CPU:-1}
VP_HUGEPAGES=${VP_HUGEPAGES:-1024}
VP_INSTALL=${VP_INSTALL:-1}
VP_TXFIRST=${VP_TXFIRST:-6}
VP_QSIZE=${VP_QSIZE:-256}
VP_MAX_FOREIGN=${VP_MAX_FOREIGN:-0.08}
VP_MIN_CLEAN=${VP_MIN_CLEAN:-3}
VP_TRIES=${VP_TRIES:-2}
VP_QUIET_WAIT=${VP_QUIET_WAIT:-60}
if [ "$SMOKE" = 1 ]; then
    VP_PEERS=weir VP_SIZES=64 VP_REPS=1 VP_DURATION=2 VP_WARMUP=1 VP_TRIES=1 VP_QUIET_WAIT=0
    VP_MIN_CLEAN=0
elif [ "$SMOKE" = 2 ]; then
    VP_PEERS=weir VP_SIZES=${VP_SIZES%% *} VP_QUIET_WAIT=0
fi
VP_CG_WARMUP=${VP_CG_WARMUP:-15}
VP_CG_SECONDS=${VP_CG_SECONDS:-30}
WEIR_WRAP=()   # --callgrind: valgrind in front of weir

HP_SYS=/sys/kernel/mm/hugepages/hugepages-2048kB
PMDS=/usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0
OVS_VSWITCHD=/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk
OVS_SCHEMA=/usr/share/openvswitch/vswitch.ovsschema
HUGE=$VP_DIR/huge
RUN=$VP_DIR/run
LOGS=$VP_DIR/logs
OVSD=$VP_DIR/ovs
RUNS_TSV=$VP_DIR/runs.tsv
SAMPLES_TSV=$VP_DIR/samples.tsv
CMDLOG=$VP_DIR/commands.log
CLK_TCK=$(getconf CLK_TCK)
MAC0=02:00:00:00:00:01
MAC1=02:00:00:00:00:02
# EAL runtime directories (/var/run/dpdk/<prefix>) of the DPDK processes started here.
PREFIXES=(vpgen vpsw vpovs)

HP_ORIG=""; HP_SET=""; MOUNTED=0
GEN_W=""; GEN_P=""; GEN_FIFO_OPEN=0
SW_W=""; SW_P=""; SW_FIFO_OPEN=0
WEIR_W=""; WEIR_P=""; WEIR_WORKER=""
OVSDB_W=""; OVSDB_P=""; OVS_W=""; OVS_P=""; OVS_PMD=""
WEIR=""
PROBE=""

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ------------------------------------------------------------------ processes
# Only processes started here are signalled, by PID: SIGINT, SIGTERM, SIGKILL.
stop_pid() {
    local p=$1 sig i
    [ -n "$p" ] || return 0
    for sig in INT TERM KILL; do
        kill -0 "$p" 2>/dev/null || return 0
        kill -s "$sig" "$p" 2>/dev/null || true
        for i in $(seq 1 25); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.2; done
    done
}
# gone_within PID SECONDS: waits for PID to exit by itself
gone_within() {
    local i
    for i in $(seq 1 $(($2 * 5))); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.2; done
    return 1
}
reap() {
    local p
    for p in "$@"; do
        if [ -n "$p" ]; then stop_pid "$p"; wait "$p" 2>/dev/null || true; fi
    done
}

# first_child PID: the process a `timeout` wrapper runs (taskset execs into its command)
first_child() {
    local c i
    for i in $(seq 1 50); do
        c=$(awk '{print $1}' "/proc/$1/task/$1/children" 2>/dev/null || true)
        [ -n "$c" ] && { echo "$c"; return 0; }
        sleep 0.1
    done
    echo "$1"
}

stop_gen() {
    if [ "$GEN_FIFO_OPEN" = 1 ]; then
        echo quit >&7 2>/dev/null || true; exec 7>&-; GEN_FIFO_OPEN=0
        gone_within "$GEN_W" 5 || true
    fi
    reap "$GEN_W"; GEN_W=""; GEN_P=""
}
stop_switch() {
    if [ "$SW_FIFO_OPEN" = 1 ]; then
        echo quit >&8 2>/dev/null || true; exec 8>&-; SW_FIFO_OPEN=0
        gone_within "$SW_W" 5 || true
    fi
    reap "$SW_W"; SW_W=""; SW_P=""
    reap "$WEIR_W"; WEIR_W=""; WEIR_P=""; WEIR_WORKER=""
    if [ -n "$OVS_P" ] && kill -0 "$OVS_P" 2>/dev/null; then
        timeout 10 ovs-appctl -t "$OVSD/ovs-vswitchd.ctl" exit --cleanup >/dev/null 2>&1 || true
    fi
    reap "$OVS_W"; OVS_W=""; OVS_P=""; OVS_PMD=""
    if [ -n "$OVSDB_P" ] && kill -0 "$OVSDB_P" 2>/dev/null; then
        timeout 5 ovs-appctl -t "$OVSD/ovsdb-server.ctl" exit >/dev/null 2>&1 || true
    fi
    reap "$OVSDB_W"; OVSDB_W=""; OVSDB_P=""
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    stop_gen
    stop_switch
    rm -f "$RUN"/*.sock "$RUN"/*.fifo
    local p; for p in "${PREFIXES[@]}"; do rm -rf "/var/run/dpdk/$p"; done
    if [ "$MOUNTED" = 1 ]; then rm -f "$HUGE"/*; umount "$HUGE"; rmdir "$HUGE"; fi
    # Give back the pages only if nobody changed the count meanwhile.
    if [ -n "$HP_SET" ] && [ "$(cat "$HP_SYS/nr_hugepages")" = "$HP_SET" ]; then
        echo "$HP_ORIG" > "$HP_SYS/nr_hugepages"
    fi
    [ "$rc" = 0 ] || log "exit status $rc; logs in $VP_DIR"
    exit "$rc"
}

# ------------------------------------------------------------------ set-up
has_peer() { [[ " $VP_PEERS " == *" $1 "* ]]; }

install_packages() {
    local pkgs=()
    command -v dpdk-testpmd >/dev/null || pkgs+=(dpdk-dev)
    [ -e "$PMDS/librte_net_vhost.so" ] || pkgs+=(librte-net-vhost23)
    [ -e "$PMDS/librte_net_virtio.so" ] || pkgs+=(librte-net-virtio23)
    [ -e "$PMDS/librte_mempool_ring.so" ] || pkgs+=(librte-mempool-ring23)
    if has_peer ovs && [ ! -x "$OVS_VSWITCHD" ]; then pkgs+=(openvswitch-switch-dpdk); fi
    [ ${#pkgs[@]} -gt 0 ] || return 0
    [ "$VP_INSTALL" = 1 ] || die "missing packages: ${pkgs[*]} (VP_INSTALL=0)"
    log "apt-get install ${pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
}

# cargo_bin PACKAGE BIN: builds one release binary and prints its path (cargo names
# the binary it built; that honours CARGO_TARGET_DIR and .cargo/config)
cargo_bin() {
    local path
    log "cargo build --release -p $1 --bin $2"
    path=$(cargo build --release --manifest-path "$ROOT/Cargo.toml" -p "$1" --bin "$2" \
               --message-format=json-render-diagnostics |
           sed -n "s/.*\"executable\":\"\\([^\"]*\\/$2\\)\".*/\\1/p" | tail -n 1)
    if [ -z "$path" ] || [ ! -x "$path" ]; then die "no $2 binary after cargo build"; fi
    echo "$path"
}

build_weir() {
    if [ -n "${WEIR_BIN:-}" ]; then WEIR=$WEIR_BIN; [ -x "$WEIR" ] || die "WEIR_BIN=$WEIR is not executable"; return; fi
    WEIR=$(cargo_bin weir weir)
}

# Median ns of a cache-line round trip between the two CPUs (benches/src/bin/cpu-handshake.rs):
# the host's state, which sets what every ring and buffer transfer costs; - if it failed.
handshake() {
    local ns
    ns=$("$PROBE" "$VP_GEN_CPU" "$VP_SW_CPU" 20000 5 2>/dev/null | awk '{ print $2 }') || ns=""
    echo "${ns:--}"
}

setup() {
    [ "$(id -u)" = 0 ] || die "run as root (apt, hugepages, hugetlbfs mount)"
    [ "$VP_GEN_CPU" != "$VP_SW_CPU" ] || die "VP_GEN_CPU and VP_SW_CPU must differ"
    local p
    for p in $VP_PEERS; do
        case $p in weir|testpmd|ovs) ;; *) die "unknown peer '$p' (weir testpmd ovs)" ;; esac
    done
    install_packages
    has_peer weir && build_weir
    PROBE=$(cargo_bin weir-benches cpu-handshake)
    mkdir -p "$RUN" "$LOGS"
    : > "$CMDLOG"
    HP_ORIG=$(cat "$HP_SYS/nr_hugepages")
    if [ "$HP_ORIG" -lt "$VP_HUGEPAGES" ]; then
        echo "$VP_HUGEPAGES" > "$HP_SYS/nr_hugepages"
        HP_SET=$(cat "$HP_SYS/nr_hugepages")
        log "2 MiB hugepages: $HP_ORIG -> $HP_SET"
    fi
    # The generator takes 512 MiB, OVS 1 GiB, weir its mbuf pool.
    local free; free=$(cat "$HP_SYS/free_hugepages")
    [ "$free" -ge 768 ] || log "warning: only $free free 2 MiB hugepages (OVS needs 512 + 256 for the generator)"
    # DPDK needs a hugetlbfs mount; a private one leaves other DPDK users alone.
    mkdir -p "$HUGE"
    mount -t hugetlbfs -o pagesize=2M nodev "$HUGE"
    MOUNTED=1
    rm -f "$RUN"/*.sock "$RUN"/*.fifo
    printf 'peer\tsize\trep\ttry\tmpps\tclean\tsamples\tforeign_max_pct\tflag\tsw_busy_cyc_pkt\tsw_cpu_cyc_pkt\tsw_busy_pct\tgen_cyc_pkt\ttsc_mhz\thandshake_before_ns\thandshake_after_ns\n' > "$RUNS_TSV"
    printf 'peer\tsize\trep\ttry\tsecond\trx_pps\tforeign_gen\tforeign_sw\tclean\n' > "$SAMPLES_TSV"
}

# ------------------------------------------------------------------ DPDK testpmd
EAL=(--no-pci --in-memory --single-file-segments --no-telemetry --huge-dir "$HUGE" -m 512)
TP=(--nb-cores=1 --rxd="$VP_QSIZE" --txd="$VP_QSIZE" --burst=32 --total-num-mbufs=8192 --record-core-cycles)

# start_testpmd gen|sw CPU LOG ARGS...: interactive testpmd fed through a FIFO
# (interactive testpmd exits at end of input, so the FIFO stays open while it runs)
start_testpmd() {
    local who=$1 cpu=$2 lf=$3; shift 3
    local fifo=$RUN/$who.fifo
    local cmd=(timeout -s INT -k 10 900 taskset -c "$cpu" dpdk-testpmd --lcores "0@$cpu,1@$cpu"
               --file-prefix="vp$who" "$@")
    rm -f "$fifo"; mkfifo "$fifo"
    echo "$who: ${cmd[*]}" >> "$CMDLOG"
    "${cmd[@]}" < "$fifo" > "$lf" 2>&1 &
    local w=$!
    if [ "$who" = gen ]; then
        exec 7> "$fifo"; GEN_FIFO_OPEN=1; GEN_W=$w; GEN_P=$(first_child "$w")
    else
        exec 8> "$fifo"; SW_FIFO_OPEN=1; SW_W=$w; SW_P=$(first_child "$w")
    fi
}
to_gen() { echo "$*" >&7; }
to_sw() { if [ "$SW_FIFO_OPEN" = 1 ]; then echo "$*" >&8; fi; }

start_gen() { # start_gen SIZE LOG
    local size=$1 lf=$2 i
    rm -f "$RUN/p0.sock" "$RUN/p1.sock"
    # --txpkts is the frame without its 4-byte FCS.
    start_testpmd gen "$VP_GEN_CPU" "$lf" "${EAL[@]}" \
        --vdev "net_virtio_user0,path=$RUN/p0.sock,server=1,queues=1,queue_size=$VP_QSIZE,mac=$MAC0" \
        --vdev "net_virtio_user1,path=$RUN/p1.sock,server=1,queues=1,queue_size=$VP_QSIZE,mac=$MAC1" \
        -- -i "${TP[@]}" --forward-mode=mac --txpkts="$((size - 4))" \
        --eth-peer="0,$MAC1" --eth-peer="1,$MAC0"
    # server=1: the probe creates p0.sock and blocks in accept() until a client comes;
    # p1.sock appears only after that.
    for i in $(seq 1 100); do
        [ -S "$RUN/p0.sock" ] && return 0
        kill -0 "$GEN_W" 2>/dev/null || break
        sleep 0.2
    done
    log "generator did not listen on $RUN/p0.sock:"; tail -n 20 "$lf" >&2
    return 1
}

start_testpmd_switch() { # start_testpmd_switch LOG
    start_testpmd sw "$VP_SW_CPU" "$1" "${EAL[@]}" \
        --vdev "net_vhost0,iface=$RUN/p0.sock,client=1,queues=1" \
        --vdev "net_vhost1,iface=$RUN/p1.sock,client=1,queues=1" \
        -- -i "${TP[@]}" --forward-mode=io
}

# ------------------------------------------------------------------ weir
start_weir() { # start_weir RUNDIR
    local dir=$1 i t
    cat > "$dir/weir.toml" <<EOF
[dataplane]
workers = "$VP_SW_CPU"
mbufs = 16384
hugepages = "auto"
idle_sleep_us = 0

[control]
socket = "$RUN/weir.sock"

[[bridge]]
name = "br0"

[[port]]
name = "a"
type = "vhost-user"
socket = "$RUN/p0.sock"
mode = "client"
bridge = "br0"

[[port]]
name = "b"
type = "vhost-user"
socket = "$RUN/p1.sock"
mode = "client"
bridge = "br0"
EOF
    # The daemon's other threads share the generator's CPU; the worker pins itself
    # to VP_SW_CPU (`workers`), as OVS's PMD does with pmd-cpu-mask.
    local cmd=(timeout -s INT -k 10 900 taskset -c "$VP_GEN_CPU" "${WEIR_WRAP[@]}" "$WEIR" --socket "$RUN/weir.sock"
               run --config "$dir/weir.toml")
    echo "weir: ${cmd[*]}" >> "$CMDLOG"
    RUST_LOG=${RUST_LOG:-info} "${cmd[@]}" < /dev/null > "$dir/weir.log" 2>&1 &
    WEIR_W=$!
    WEIR_P=$(first_child "$WEIR_W")
    for i in $(seq 1 600); do
        for t in /proc/"$WEIR_P"/task/*; do
            if [ "$(cat "$t/comm" 2>/dev/null)" = weir-worker-0 ]; then WEIR_WORKER=${t##*/}; return 0; fi
        done
        kill -0 "$WEIR_W" 2>/dev/null || break
        sleep 0.1
    done
    log "weir did not start a worker:"; tail -n 20 "$dir/weir.log" >&2
    return 1
}
# weir_counters -> "busy_cycles idle_cycles rx_packets", summed over workers
weir_counters() {
    "$WEIR" --socket "$RUN/weir.sock" pmd show --json 2>>"$VP_DIR/weir-cli.err" | tr -d ' \n' |
        awk '{ b = i = r = 0; s = $0
               while (match(s, /"(busy_cycles|idle_cycles|rx_packets)":[0-9]+/)) {
                   kv = substr(s, RSTART + 1, RLENGTH - 1); split(kv, a, "\":")
                   if (a[1] == "busy_cycles") b += a[2]; else if (a[1] == "idle_cycles") i += a[2]; else r += a[2]
                   s = substr(s, RSTART + RLENGTH) }
               printf "%.0f %.0f %.0f\n", b, i, r }'
}

# ------------------------------------------------------------------ OVS-DPDK
VSCTL=(ovs-vsctl --db="unix:$OVSD/db.sock" --timeout=20)
start_ovs() {
    local i w t
    rm -rf "$OVSD"; mkdir -p "$OVSD"
    export OVS_RUNDIR=$OVSD OVS_LOGDIR=$OVSD OVS_DBDIR=$OVSD OVS_SYSCONFDIR=$OVSD
    ovsdb-tool create "$OVSD/conf.db" "$OVS_SCHEMA"
    timeout -s TERM -k 10 3600 taskset -c "$VP_GEN_CPU" ovsdb-server "$OVSD/conf.db" \
        --remote="punix:$OVSD/db.sock" --unixctl="$OVSD/ovsdb-server.ctl" \
        --log-file="$OVSD/ovsdb-server.log" -vconsole:off < /dev/null > /dev/null 2>&1 &
    OVSDB_W=$!; OVSDB_P=$(first_child "$OVSDB_W")
    for i in $(seq 1 50); do [ -S "$OVSD/db.sock" ] && break; sleep 0.2; done
    "${VSCTL[@]}" --no-wait init
    local cfg=(other_config:dpdk-init=true other_config:dpdk-socket-mem=1024
               other_config:dpdk-hugepage-dir="$HUGE"
               "other_config:dpdk-extra=--no-pci --file-prefix=vpovs"
               other_config:pmd-cpu-mask="$(printf '0x%x' $((1 << VP_SW_CPU)))"
               other_config:n-handler-threads=1 other_config:n-revalidator-threads=1)
    "${VSCTL[@]}" --no-wait set Open_vSwitch . "${cfg[@]}"
    echo "ovs: ${VSCTL[*]} --no-wait set Open_vSwitch . ${cfg[*]}" >> "$CMDLOG"
    # Non-PMD threads stay on the generator's CPU; OVS pins its PMD (pmd-cpu-mask).
    local cmd=(timeout -s TERM -k 10 3600 taskset -c "$VP_GEN_CPU" "$OVS_VSWITCHD" "unix:$OVSD/db.sock"
               --unixctl="$OVSD/ovs-vswitchd.ctl" --log-file="$OVSD/ovs-vswitchd.log" -vconsole:off)
    echo "ovs: ${cmd[*]}" >> "$CMDLOG"
    "${cmd[@]}" < /dev/null > /dev/null 2>&1 &
    OVS_W=$!; OVS_P=$(first_child "$OVS_W")
    for i in $(seq 1 150); do
        [ "$("${VSCTL[@]}" get Open_vSwitch . dpdk_initialized 2>/dev/null)" = true ] && break
        kill -0 "$OVS_W" 2>/dev/null || { tail -n 20 "$OVSD/ovs-vswitchd.log" >&2; return 1; }
        sleep 0.2
    done
    local br=(add-br vpbr0 -- set bridge vpbr0 datapath_type=netdev
        -- add-port vpbr0 vhu0 -- set Interface vhu0 type=dpdkvhostuserclient
           options:vhost-server-path="$RUN/p0.sock" ofport_request=1
        -- add-port vpbr0 vhu1 -- set Interface vhu1 type=dpdkvhostuserclient
           options:vhost-server-path="$RUN/p1.sock" ofport_request=2)
    echo "ovs: ${VSCTL[*]} ${br[*]}" >> "$CMDLOG"
    "${VSCTL[@]}" "${br[@]}"
    # The bridge's LOCAL port is a tap in the netdev datapath: flooding to it costs a
    # write() per frame, which the learning phase would pay.
    ovs-ofctl mod-port vpbr0 vpbr0 no-flood
    ovs-ofctl del-flows vpbr0
    ovs-ofctl add-flow vpbr0 "priority=0,actions=NORMAL"
    echo "ovs: ovs-ofctl mod-port vpbr0 vpbr0 no-flood; del-flows; add-flow priority=0,actions=NORMAL" >> "$CMDLOG"
    for i in $(seq 1 50); do
        for t in /proc/"$OVS_P"/task/*; do
            case $(cat "$t/comm" 2>/dev/null) in pmd*) OVS_PMD=${t##*/}; return 0 ;; esac
        done
        sleep 0.2
    done
    log "OVS started no PMD thread"; return 1
}
ovs_appctl() { ovs-appctl -t "$OVSD/ovs-vswitchd.ctl" "$@"; }

# ------------------------------------------------------------------ CPU accounting
cpu_jiffies() { # cpu_jiffies CPU -> "busy total" (steal counts as busy: it is not ours)
    awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}
task_jiffies() { # task_jiffies /proc/PID[/task/TID] -> utime + stime
    local line
    read -r line 2>/dev/null < "$1/stat" || { echo 0; return; }
    line=${line##*) }
    awk '{ print $12 + $13 }' <<< "$line"
}
# ours_jiffies -> "on_gen_cpu on_sw_cpu": CPU time of the benchmark's own processes
ours_jiffies() {
    local g=0 s=0 all w
    [ -n "$GEN_P" ] && g=$(task_jiffies "/proc/$GEN_P")
    [ -n "$SW_P" ] && s=$(task_jiffies "/proc/$SW_P")
    if [ -n "$WEIR_WORKER" ]; then
        all=$(task_jiffies "/proc/$WEIR_P"); w=$(task_jiffies "/proc/$WEIR_P/task/$WEIR_WORKER")
        g=$((g + all - w)); s=$((s + w))
    fi
    if [ -n "$OVS_PMD" ]; then
        all=$(task_jiffies "/proc/$OVS_P"); w=$(task_jiffies "/proc/$OVS_P/task/$OVS_PMD")
        g=$((g + all - w + $(task_jiffies "/proc/$OVSDB_P"))); s=$((s + w))
    fi
    echo "$g $s"
}
# switch_jiffies: CPU time of the switch's polling thread(s), all on VP_SW_CPU
switch_jiffies() {
    if [ -n "$WEIR_WORKER" ]; then task_jiffies "/proc/$WEIR_P/task/$WEIR_WORKER"
    elif [ -n "$OVS_PMD" ]; then task_jiffies "/proc/$OVS_P/task/$OVS_PMD"
    elif [ -n "$SW_P" ]; then task_jiffies "/proc/$SW_P"
    else echo 0; fi
}
# Waits (at most VP_QUIET_WAIT s) until neither CPU is more than 10 % busy with others.
wait_quiet() {
    [ "$VP_QUIET_WAIT" -gt 0 ] || return 0
    local end=$(($(date +%s) + VP_QUIET_WAIT)) a b c d oa ob f0 f1 said=0
    while :; do
        read -r -a a <<< "$(cpu_jiffies "$VP_GEN_CPU")"; read -r -a b <<< "$(cpu_jiffies "$VP_SW_CPU")"
        read -r -a oa <<< "$(ours_jiffies)"
        sleep 1
        read -r -a c <<< "$(cpu_jiffies "$VP_GEN_CPU")"; read -r -a d <<< "$(cpu_jiffies "$VP_SW_CPU")"
        read -r -a ob <<< "$(ours_jiffies)"
        f0=$(( (c[0] - a[0] - (ob[0] - oa[0])) * 100 / (c[1] - a[1] > 0 ? c[1] - a[1] : 1) ))
        f1=$(( (d[0] - b[0] - (ob[1] - oa[1])) * 100 / (d[1] - b[1] > 0 ? d[1] - b[1] : 1) ))
        [ "$f0" -le 10 ] && [ "$f1" -le 10 ] && return 0
        [ "$said" = 1 ] || log "waiting up to ${VP_QUIET_WAIT}s for other load to stop (cpu$VP_GEN_CPU ${f0}%, cpu$VP_SW_CPU ${f1}%)"
        said=1
        [ "$(date +%s)" -lt "$end" ] || { log "still busy; measuring anyway"; return 0; }
    done
}

# ------------------------------------------------------------------ testpmd output
# testpmd's own echo of a command ("testpmd> ...") can land inside a line of output.
strip_echo() { sed -z 's/testpmd> [^\n]*\n//g' "$1"; }
# rx_pps_per_show LOG: the sum of Rx-pps over all ports, one line per "show port stats all"
rx_pps_per_show() {
    strip_echo "$1" | awk '
        /NIC statistics for port +0 / { n++ }
        match($0, /Rx-pps: +[0-9]+/) { split(substr($0, RSTART, RLENGTH), a, " "); pps[n] += a[2] }
        END { for (i = 1; i <= n; i++) print pps[i] + 0 }'
}
# rx_total_per_show LOG: cumulative RX-packets over all ports, one line per show
rx_total_per_show() {
    strip_echo "$1" | awk '
        /NIC statistics for port +0 / { n++ }
        /NIC statistics for port / { inb = 1 }
        inb && match($0, /RX-packets: +[0-9]+/) { split(substr($0, RSTART, RLENGTH), a, " "); rx[n] += a[2] }
        /^ *#+ *$/ { inb = 0 }
        END { for (i = 1; i <= n; i++) print rx[i] + 0 }'
}
tp_cycles_per_pkt() { strip_echo "$1" | grep -aoE 'CPU cycles/packet=[0-9.]+' | tail -n 1 | cut -d= -f2; }
tp_mhz() { strip_echo "$1" | grep -aoE 'at [0-9]+ MHz Clock' | tail -n 1 | awk '{print $2}'; }

wait_prompt() { # wait_prompt LOG PID TIMEOUT_S
    local end=$(($(date +%s) + $3))
    while [ "$(date +%s)" -lt "$end" ]; do
        strip_echo "$1" 2>/dev/null | grep -q 'testpmd> ' && return 0
        grep -q 'testpmd> ' "$1" 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || break
        sleep 0.2
    done
    log "no testpmd prompt in $1:"; tail -n 20 "$1" >&2
    return 1
}

# ------------------------------------------------------------------ one run
# measure PEER SIZE REP TRY: appends to runs.tsv; 0 = clean, 1 = too noisy, 2 = set-up failed
measure() {
    local peer=$1 size=$2 rep=$3 try=$4
    local dir=$LOGS/$peer-$size-r$rep-t$try
    mkdir -p "$dir"
    local glog=$dir/gen.log slog=$dir/switch.log
    : > "$slog"
    wait_quiet
    local hs0 hs1
    hs0=$(handshake)
    if [ "$peer" = ovs ]; then start_ovs || return 2; fi   # its ports reconnect by themselves
    start_gen "$size" "$glog" || return 2
    case $peer in
        weir) start_weir "$dir" || return 2 ;;
        testpmd) start_testpmd_switch "$slog" ;;
    esac
    # The generator's prompt appears once both vhost-user connections are up.
    wait_prompt "$glog" "$GEN_W" 60 || return 2
    if [ "$peer" = testpmd ]; then wait_prompt "$slog" "$SW_W" 30 || return 2; to_sw start; fi
    sleep 1
    to_gen "start tx_first $VP_TXFIRST"
    sleep "$VP_WARMUP"

    local c0 c1 o n0 n1 no w0=() w1=() wj0 wj1 i t0 now target f0 f1 foreign=()
    to_gen "show port stats all"
    [ "$peer" = ovs ] && ovs_appctl dpif-netdev/pmd-stats-clear > /dev/null
    [ "$peer" != weir ] || read -r -a w0 <<< "$(weir_counters)"
    wj0=$(switch_jiffies)
    read -r -a c0 <<< "$(cpu_jiffies "$VP_GEN_CPU")"; read -r -a c1 <<< "$(cpu_jiffies "$VP_SW_CPU")"
    read -r -a o <<< "$(ours_jiffies)"
    t0=$(date +%s%N)
    for i in $(seq 1 "$VP_DURATION"); do
        now=$(date +%s%N); target=$((t0 + i * 1000000000))
        [ "$target" -le "$now" ] || sleep "$(awk -v d=$((target - now)) 'BEGIN { printf "%.3f", d / 1e9 }')"
        to_gen "show port stats all"
        read -r -a n0 <<< "$(cpu_jiffies "$VP_GEN_CPU")"; read -r -a n1 <<< "$(cpu_jiffies "$VP_SW_CPU")"
        read -r -a no <<< "$(ours_jiffies)"
        f0=$(awk -v b=$((n0[0] - c0[0])) -v t=$((n0[1] - c0[1])) -v o=$((no[0] - o[0])) \
             'BEGIN { f = t > 0 ? (b - o) / t : 1; print (f < 0 ? 0 : f) }')
        f1=$(awk -v b=$((n1[0] - c1[0])) -v t=$((n1[1] - c1[1])) -v o=$((no[1] - o[1])) \
             'BEGIN { f = t > 0 ? (b - o) / t : 1; print (f < 0 ? 0 : f) }')
        foreign+=("$f0 $f1")
        c0=("${n0[@]}"); c1=("${n1[@]}"); o=("${no[@]}")
    done
    wj1=$(switch_jiffies)
    if [ "$peer" = weir ]; then
        read -r -a w1 <<< "$(weir_counters)"
        echo "start ${w0[*]} worker_jiffies $wj0; end ${w1[*]} worker_jiffies $wj1" > "$dir/weir-counters.txt"
        "$WEIR" --socket "$RUN/weir.sock" stats > "$dir/weir-stats.txt" 2>&1 || true
        "$WEIR" --socket "$RUN/weir.sock" port list > "$dir/weir-ports.txt" 2>&1 || true
    fi
    # pmd-stats must be read while traffic flows, or idle time dilutes them.
    [ "$peer" = ovs ] && ovs_appctl dpif-netdev/pmd-stats-show > "$dir/pmd-stats.txt" 2>&1
    to_gen stop; to_sw stop
    sleep 1
    stop_gen
    stop_switch
    hs1=$(handshake)

    # ---- evaluate
    local pps totals
    mapfile -t pps < <(rx_pps_per_show "$glog")
    mapfile -t totals < <(rx_total_per_show "$glog")
    if [ "${#pps[@]}" -lt $((VP_DURATION + 1)) ]; then
        log "$peer ${size}B: generator printed ${#pps[@]} of $((VP_DURATION + 1)) stat blocks ($glog)"
        return 2
    fi
    local mhz gen_cpp sw_busy_cpp=- sw_cpu_cpp=- sw_busy_pct=- pkts
    mhz=$(tp_mhz "$glog"); gen_cpp=$(tp_cycles_per_pkt "$glog")
    pkts=$((totals[VP_DURATION] - totals[0]))
    # CPU time of the switch thread x TSC rate / packets forwarded in the window
    sw_cpu_cpp=$(awk -v j=$((wj1 - wj0)) -v hz="$CLK_TCK" -v m="${mhz:-0}" -v p="$pkts" \
        'BEGIN { if (p > 0 && m > 0) printf "%.1f", j / hz * m * 1e6 / p; else print "-" }')
    case $peer in
        testpmd) sw_busy_cpp=$(tp_cycles_per_pkt "$slog") ;;
        ovs)
            sw_busy_cpp=$(awk '/avg processing cycles per packet/ { print $6; exit }' "$dir/pmd-stats.txt")
            sw_busy_pct=$(awk '/processing cycles:/ { gsub(/[(%)]/, "", $4); print $4; exit }' "$dir/pmd-stats.txt") ;;
        weir)
            read -r sw_busy_cpp sw_busy_pct < <(awk -v b=$((w1[0] - w0[0])) -v id=$((w1[1] - w0[1])) \
                -v r=$((w1[2] - w0[2])) 'BEGIN {
                    busy = (r > 0) ? sprintf("%.1f", b / r) : "-"
                    pct = (b + id > 0) ? sprintf("%.1f", 100 * b / (b + id)) : "-"
                    print busy, pct }') ;;
    esac
    local res
    res=$(for i in $(seq 1 "$VP_DURATION"); do echo "${pps[$i]} ${foreign[$((i - 1))]}"; done |
        awk -v peer="$peer" -v size="$size" -v rep="$rep" -v try="$try" -v lim="$VP_MAX_FOREIGN" \
            -v out="$SAMPLES_TSV" '
            { clean = ($2 <= lim && $3 <= lim)
              printf "%s\t%s\t%s\t%s\t%d\t%d\t%.3f\t%.3f\t%d\n", peer, size, rep, try, NR, $1, $2, $3, clean >> out
              n++; all += $1; if (clean) { c++; sum += $1 }
              if ($2 > fm) fm = $2; if ($3 > fm) fm = $3 }
            END { printf "%.3f %d %d %.0f\n", (c > 0 ? sum / c : all / n) / 1e6, c, n, 100 * fm }')
    local r; read -r -a r <<< "$res"
    local flag=ok
    [ "${r[1]}" -ge "$VP_MIN_CLEAN" ] || flag=noisy
    [ "$pkts" -gt 0 ] || flag=nothing-forwarded
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$peer" "$size" "$rep" "$try" \
        "${r[0]}" "${r[1]}" "${r[2]}" "${r[3]}" "$flag" "${sw_busy_cpp:--}" "$sw_cpu_cpp" "${sw_busy_pct:--}" \
        "${gen_cpp:--}" "${mhz:--}" "$hs0" "$hs1" >> "$RUNS_TSV"
    log "$(printf '%-8s %5sB rep %s try %s: %7s Mpps  switch %s busy cyc/pkt (cpu %s, busy %s%%)  gen %s cyc/pkt  clean %s/%s  foreign max %s%%  handshake %s/%s ns  %s' \
        "$peer" "$size" "$rep" "$try" "${r[0]}" "${sw_busy_cpp:--}" "$sw_cpu_cpp" "${sw_busy_pct:--}" \
        "${gen_cpp:--}" "${r[1]}" "${r[2]}" "${r[3]}" "$hs0" "$hs1" "$flag")"
    [ "$flag" = ok ]
}

run_one() { # run_one PEER SIZE REP: one measurement, tried again if noisy or failed
    local try rc
    for try in $(seq 1 "$VP_TRIES"); do
        rc=0; measure "$1" "$2" "$3" "$try" || rc=$?
        stop_gen; stop_switch
        [ "$rc" = 0 ] && return 0
        [ "$rc" = 2 ] && log "$1 ${2}B rep $3 try $try: set-up failed (logs: $LOGS/$1-$2-r$3-t$try)"
    done
    return 0
}

# ------------------------------------------------------------------ summary
summary() {
    echo "vhost-user forwarding, both directions summed; switch on cpu$VP_SW_CPU, generator on cpu$VP_GEN_CPU"
    echo "$VP_REPS reps x $VP_DURATION s per peer and size, peers interleaved (order rotated per rep); frame sizes include the FCS"
    echo
    awk -F'\t' -v peers="$VP_PEERS" -v sizes="$VP_SIZES" '
        function sort(a, m,   i, j, t) { for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t } }
        function stat(str, fmt,   a, m) {   # "median (min-max)"
            m = split(str, a, " "); if (m == 0) return "-"; sort(a, m)
            return sprintf(fmt " (" fmt "-" fmt ")", (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2, a[1], a[m]) }
        NR > 1 { last[$1 SUBSEP $2 SUBSEP $3] = $0 }   # the last try of each rep counts
        END {
            np = split(peers, P, " "); ns = split(sizes, S, " ")
            for (k in last) { split(last[k], f, "\t"); key = f[1] SUBSEP f[2]
                v[key] = v[key] " " f[5]; mpps[f[1], f[2], f[3]] = f[5]; reps[f[2] SUBSEP f[3]] = 1
                if (f[10] != "-") bc[key] = bc[key] " " f[10]
                if (f[11] != "-") cc[key] = cc[key] " " f[11]
                if (f[9] != "ok") bad[key]++ }
            printf "%-8s %6s  %-24s %-20s %-20s\n", "peer", "frame", "Mpps median (min-max)", "busy cyc/pkt", "cpu cyc/pkt"
            for (s = 1; s <= ns; s++) for (p = 1; p <= np; p++) { key = P[p] SUBSEP S[s]
                if (!(key in v)) continue
                printf "%-8s %6s  %-24s %-20s %-20s%s\n", P[p], S[s] "B", stat(v[key], "%.2f"), stat(bc[key], "%.0f"),
                    stat(cc[key], "%.0f"), bad[key] ? "  (" bad[key] " runs flagged)" : "" }
            hdr = 0
            for (s = 1; s <= ns; s++) for (p = 1; p <= np; p++) { if (P[p] == "weir") continue
                r = ""
                for (rk in reps) { split(rk, q, SUBSEP); if (q[1] != S[s]) continue
                    if ((("weir", S[s], q[2]) in mpps) && ((P[p], S[s], q[2]) in mpps) && mpps[P[p], S[s], q[2]] > 0)
                        r = r " " mpps["weir", S[s], q[2]] / mpps[P[p], S[s], q[2]] }
                if (r == "") continue
                if (!hdr) { printf "\nweir / peer, per rep (the two runs next to each other), median (min-max):\n"; hdr = 1 }
                printf "  weir/%-8s %6s  %s\n", P[p], S[s] "B", stat(r, "%.2f") }
        }' "$RUNS_TSV"
    echo
    echo "busy cyc/pkt: TSC cycles of the switch core in polls that moved packets, per forwarded packet"
    echo "(testpmd --record-core-cycles, OVS pmd-stats, weir pmd show busy_cycles / rx_packets)."
    echo "cpu cyc/pkt: CPU time of the switch's polling thread x TSC rate / packets (empty polls"
    echo "included, time preempted by other load excluded)."
    echo "runs: $RUNS_TSV  samples: $SAMPLES_TSV  commands: $CMDLOG"
}

# --callgrind: weir under callgrind with the closed loop running. Counting starts
# after VP_CG_WARMUP s (callgrind_control -z) and ends VP_CG_SECONDS s later (-d);
# instructions of the worker thread / packets the worker received meanwhile.
callgrind_weir() {
    local size=$1
    local dir=$LOGS/callgrind-$size c0 c1 out
    command -v valgrind >/dev/null || apt-get -o DPkg::Lock::Timeout=600 install -y -qq valgrind >/dev/null
    rm -rf "$dir"; mkdir -p "$dir"
    out=$dir/callgrind.out
    # --fair-sched: valgrind runs one thread at a time; without a fair lock the
    # busy-polling worker can starve the control threads (late vhost-user
    # connects, `pmd show` timing out).
    WEIR_WRAP=(valgrind --tool=callgrind --fair-sched=yes --separate-threads=yes --callgrind-out-file="$out")
    start_gen "$size" "$dir/gen.log" || return 1
    start_weir "$dir" || return 1
    wait_prompt "$dir/gen.log" "$GEN_W" 120 || return 1
    to_gen "start tx_first $VP_TXFIRST"
    sleep "$VP_CG_WARMUP"
    (cd "$dir" && callgrind_control -z "$WEIR_P" >/dev/null)
    read -r -a c0 <<< "$(weir_counters)"
    sleep "$VP_CG_SECONDS"
    read -r -a c1 <<< "$(weir_counters)"
    (cd "$dir" && callgrind_control -d "$WEIR_P" >/dev/null)
    to_gen stop
    stop_gen; stop_switch
    local pk=$((c1[2] - c0[2])) f ir
    [ "$pk" -gt 0 ] || die "weir forwarded nothing under callgrind ($dir)"
    # The dump taken by -d has one file per thread; the busy-polling worker is the
    # one that executed the most instructions.
    f=$(for g in "$out".1-*; do awk -v g="$g" '/^summary:/ { print $2, g }' "$g"; done |
        sort -n | tail -n 1 | cut -d' ' -f2-)
    [ -n "$f" ] || die "no callgrind dump in $dir"
    ir=$(awk '/^summary:/ { print $2 }' "$f")
    echo "callgrind, ${size} B frames: $pk packets in ${VP_CG_SECONDS} s under valgrind, $ir instructions on the worker thread"
    awk -v i="$ir" -v p="$pk" 'BEGIN { printf "instructions per packet (worker thread): %.1f\n", i / p }'
    echo "(includes empty polls; the per-call figures below separate them)"
    echo "calls, inclusive instructions, per call and per packet, from $f:"
    awk -v p="$pk" '
        /^c?fn=\([0-9]+\)/ { match($0, /\([0-9]+\)/); id = substr($0, RSTART, RLENGTH)
            n = $0; sub(/^c?fn=\([0-9]+\) ?/, "", n); if (n != "") name[id] = n; else n = name[id]
            if ($0 ~ /^cfn/) cfn = n }
        /^calls=/ { split($0, a, /[= ]/); calls[cfn] += a[2]; getline; split($0, b, " "); incl[cfn] += b[2] }
        END { for (k in calls) if (k ~ /rx_burst|tx_burst|SplitRing::|Chain::|VqWorker::sync|Queues::transmit|Forwarder::|drop_in_place<dataplane::mbuf|memcpy/)
                  printf "%10d calls %14d Ir %9.1f Ir/call %8.1f Ir/pkt  %s\n", calls[k], incl[k], incl[k] / calls[k], incl[k] / p, k }' "$f" |
        sort -k3 -rn
}

main() {
    trap cleanup EXIT
    trap 'log interrupted; exit 130' INT TERM
    setup
    log "peers: $VP_PEERS; sizes: $VP_SIZES; reps: $VP_REPS; ${VP_DURATION}s per run; dir: $VP_DIR"
    log "testpmd $(dpkg-query -W -f='${Version}' dpdk-dev 2>/dev/null || echo '?')"
    local rep size peer
    if [ "$SMOKE" = 2 ]; then
        callgrind_weir "$VP_SIZES" | tee "$VP_DIR/callgrind.txt"
        return
    fi
    # The order of the peers rotates from rep to rep, so that none always
    # runs first after the pause between reps (the host's speed class can
    # change whenever its CPUs idle; see docs/benchmarks.md).
    local -a order
    read -r -a order <<<"$VP_PEERS"
    local n=${#order[@]} i
    for rep in $(seq 1 "$VP_REPS"); do
        for size in $VP_SIZES; do
            for ((i = 0; i < n; i++)); do
                run_one "${order[(i + rep - 1) % n]}" "$size" "$rep"
            done
        done
    done
    summary | tee "$VP_DIR/summary.txt"
    if [ "$SMOKE" = 1 ]; then
        awk -F'\t' 'NR > 1 && $5 + 0 > 0 { ok = 1 } END { exit ok ? 0 : 1 }' "$RUNS_TSV" ||
            die "smoke: weir forwarded nothing (logs in $LOGS)"
        log "smoke: weir forwarded traffic"
    fi
}
main
