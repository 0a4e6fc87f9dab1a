#!/usr/bin/env bash
# TCP and 64 B UDP between two network namespaces through weir, per kernel port
# type, and through the Linux bridge and Open vSwitch on the same kind of
# veths, in one run.
#
#   ns A (eth0) --veth-- [switch] --veth-- ns B (eth0)
#
# Switches (interleaved inside every rep, so that slow phases of a shared host
# hit all of them):
#   bridge      a Linux bridge with both host ends
#   afpacket    weir, one worker, two `afpacket` ports on the host ends
#   afxdp       weir, one worker, two `afxdp` ports on the host ends
#   tap         weir, one worker, two `tap` ports, moved into the namespaces as eth0
#   ovs-kernel  Open vSwitch, kernel datapath (needs the openvswitch module;
#               reported as n/a when the kernel has none)
#   ovs-netdev  Open vSwitch, userspace datapath (datapath_type=netdev), two
#               `system` ports (AF_PACKET), userspace-tso-enable=true
#   ovs-afxdp   Open vSwitch, userspace datapath, two `afxdp` ports, one PMD thread
# Every namespace keeps Linux's default offloads (nothing is tuned with ethtool).
#
# CPU budget: weir runs one worker, pinned to the last online CPU (its default).
# ovs-vswitchd runs with all its threads on that same CPU (taskset), one PMD
# thread (pmd-cpu-mask) and one handler and revalidator thread. The Linux
# bridge and OVS's kernel datapath forward in softirq context, on whichever CPU
# sends, and have no such limit.
#
# OVS runs privately: its own database, sockets, pidfiles and logs under
# KP_DIR/ovs, ovs-vswitchd inside its own network namespace (kps) that holds
# the host ends of the veths, so it touches no system service and no other
# OVS instance; it is stopped at exit. The userspace datapath uses Debian's
# DPDK build (openvswitch-switch-dpdk) with dpdk-init=false: system and afxdp
# ports need neither hugepages nor DPDK.
#
# Each rep, for each switch: iperf3 -c from A to B for KP_SECONDS with 1 and
# with 4 streams (-P), then iperf3 -u -l 18 -b 0 (18 B of UDP payload: 64 B
# frames with the FCS) for KP_SECONDS; the UDP figure is what B's iperf3
# received per second (its eth0's count and the sender's are in runs.tsv and
# the summary too). A cell is the median of KP_REPS runs; ratios are
# medians over the Linux bridge's and over ovs-netdev's.
#
# KP_PROFILE=1 adds, after the reps, one TCP (-P 1) and one UDP run per weir
# port type with the worker thread measured over KP_SECONDS - 2 s: syscalls
# (perf stat -e raw_syscalls:sys_enter -t), context switches (/proc), busy %,
# frames and frames per busy poll round (weir stats).
#
# Usage: benches/kernel-ports.sh (root; needs iperf3, iproute2, python3;
#   openvswitch-switch for ovs-kernel, openvswitch-switch-dpdk for ovs-netdev
#   and ovs-afxdp, linux-perf for KP_PROFILE; it installs none of them)
# Environment [defaults]: KP_REPS [3] KP_SECONDS [5] KP_STREAMS ["1 4"]
#   KP_UDP [1] (0 skips the UDP runs) KP_PROFILE [0]
#   KP_SWITCHES ["bridge afpacket afxdp tap ovs-kernel ovs-netdev ovs-afxdp"]
#   KP_DIR [/tmp/weir-kernel-ports]
#   WEIR_BIN [target/release/weir, built with cargo if missing]
#   KP_OVS_USERSPACE [/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk]
#   KP_OVS_KERNEL [/usr/lib/openvswitch-switch/ovs-vswitchd]
# Output: a table on stdout and in KP_DIR/summary.txt (medians, then
# min/median/max), one line per run in KP_DIR/runs.tsv, profiles in
# KP_DIR/profile.txt.
set -euo pipefail

REPS=${KP_REPS:-3}
SECONDS_PER_RUN=${KP_SECONDS:-5}
STREAMS=${KP_STREAMS:-"1 4"}
UDP=${KP_UDP:-1}
PROFILE=${KP_PROFILE:-0}
SWITCHES=${KP_SWITCHES:-"bridge afpacket afxdp tap ovs-kernel ovs-netdev ovs-afxdp"}
DIR=${KP_DIR:-/tmp/weir-kernel-ports}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WEIR=${WEIR_BIN:-$ROOT/target/release/weir}
OVS_USERSPACE=${KP_OVS_USERSPACE:-/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk}
OVS_KERNEL=${KP_OVS_KERNEL:-/usr/lib/openvswitch-switch/ovs-vswitchd}
OVS_SCHEMA=/usr/share/openvswitch/vswitch.ovsschema
UDP_LEN=18 # 14 Ethernet + 20 IPv4 + 8 UDP + 18 + 4 FCS = 64 B
PORT=5299

die() { echo "$*" >&2; exit 1; }
has() { case " $SWITCHES " in *" $1 "*) return 0 ;; esac; return 1; }

[ "$(id -u)" = 0 ] || die "needs root (namespaces)"
command -v iperf3 >/dev/null || die "needs iperf3 (apt-get install iperf3)"
for s in $SWITCHES; do
    case $s in
    bridge | afpacket | afxdp | tap | ovs-kernel | ovs-netdev | ovs-afxdp) ;;
    *) die "unknown switch '$s'" ;;
    esac
done
missing=()
if has ovs-kernel || has ovs-netdev || has ovs-afxdp; then
    command -v ovsdb-server >/dev/null && command -v ovs-vsctl >/dev/null || missing+=(openvswitch-switch)
fi
if has ovs-kernel && [ ! -x "$OVS_KERNEL" ]; then missing+=(openvswitch-switch); fi
if { has ovs-netdev || has ovs-afxdp; } && [ ! -x "$OVS_USERSPACE" ]; then
    missing+=(openvswitch-switch-dpdk)
fi
if [ "$PROFILE" = 1 ] && ! command -v perf >/dev/null; then missing+=(linux-perf); fi
if [ ${#missing[@]} -gt 0 ]; then
    die "missing: apt-get install $(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')(or leave those switches out of KP_SWITCHES)"
fi
if [ ! -x "$WEIR" ]; then
    (cd "$ROOT" && cargo build --release -p weir)
fi
mkdir -p "$DIR"
: > "$DIR/notes.txt"
printf 'rep\tswitch\ttest\tvalue\tretransmits\tsent_kpps\tlost_pct\tb_eth0_kpps\n' > "$DIR/runs.tsv"

# The CPU weir's worker takes by default (the last online one); OVS gets it too.
CPU=$(sed 's/.*[,-]//' /sys/devices/system/cpu/online)

NS_A=kpa NS_B=kpb NS_S=kps
SW_NS= # namespace of the veths' host ends: the host's, or NS_S for OVS
WEIR_PID=
SERVER_PID=
OVSD=$DIR/ovs
export OVS_RUNDIR=$OVSD OVS_LOGDIR=$OVSD OVS_DBDIR=$OVSD OVS_SYSCONFDIR=$OVSD
VSCTL=(ovs-vsctl --db="unix:$OVSD/db.sock" --timeout=20)

# Whether this kernel has OVS's datapath (asking for its generic netlink
# family loads the module where modules can be loaded).
OVS_KERNEL_OK=1
if has ovs-kernel; then
    if ! genl ctrl get name ovs_datapath > /dev/null 2>&1 && [ ! -d /sys/module/openvswitch ]; then
        OVS_KERNEL_OK=0
        echo "ovs-kernel: n/a: this kernel has no openvswitch module (no ovs_datapath generic netlink family, no /sys/module/openvswitch)" |
            tee -a "$DIR/notes.txt" >&2
    fi
fi

pid_alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

stop_ovs() {
    [ -d "$OVSD" ] || return 0
    local p
    if [ -S "$OVSD/ovs-vswitchd.ctl" ]; then
        timeout 10 ovs-appctl -t "$OVSD/ovs-vswitchd.ctl" exit --cleanup > /dev/null 2>&1 || true
    fi
    if [ -S "$OVSD/ovsdb-server.ctl" ]; then
        timeout 5 ovs-appctl -t "$OVSD/ovsdb-server.ctl" exit > /dev/null 2>&1 || true
    fi
    for f in ovs-vswitchd ovsdb-server; do
        p=$(cat "$OVSD/$f.pid" 2>/dev/null || true)
        # Only if the pid is still ours (its command line names OVSD).
        if pid_alive "$p" && tr '\0' ' ' < "/proc/$p/cmdline" | grep -qF -- "$OVSD/"; then
            kill "$p" 2> /dev/null || true
        fi
        rm -f "$OVSD/$f.pid"
    done
}

cleanup() {
    kill "$SERVER_PID" 2> /dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
    if [ -n "$WEIR_PID" ]; then
        kill "$WEIR_PID" 2>/dev/null || true
        wait "$WEIR_PID" 2>/dev/null || true
        WEIR_PID=
    fi
    stop_ovs
    ip link del kpbr 2>/dev/null || true
    ip link del kpa0 2>/dev/null || true
    ip link del kpb0 2>/dev/null || true
    ip netns del $NS_A 2>/dev/null || true
    ip netns del $NS_B 2>/dev/null || true
    ip netns del $NS_S 2>/dev/null || true
    SW_NS=
}
trap cleanup EXIT

sip() { # ip(8) in the namespace of the veths' host ends
    if [ -n "$SW_NS" ]; then ip -n "$SW_NS" "$@"; else ip "$@"; fi
}

address() { # ns ip
    ip -n "$1" addr add "$2/24" dev eth0
    ip -n "$1" link set eth0 up
    ip -n "$1" link set lo up
}

veths() {
    ip netns add $NS_A
    ip netns add $NS_B
    local in=()
    [ -z "$SW_NS" ] || in=(netns "$SW_NS")
    ip link add kpa0 "${in[@]}" type veth peer name eth0 netns $NS_A
    ip link add kpb0 "${in[@]}" type veth peer name eth0 netns $NS_B
    sip link set kpa0 up
    sip link set kpb0 up
    address $NS_A 198.18.40.1
    address $NS_B 198.18.40.2
}

start_weir() { # config
    echo "$1" > "$DIR/weir.toml"
    "$WEIR" run -c "$DIR/weir.toml" --socket "$DIR/weir.sock" > "$DIR/weir.log" 2>&1 &
    WEIR_PID=$!
    for _ in $(seq 100); do
        [ -S "$DIR/weir.sock" ] && "$WEIR" --socket "$DIR/weir.sock" stats > /dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "weir did not start:" >&2
    cat "$DIR/weir.log" >&2
    exit 1
}

weir_config() { # type iface_a iface_b
    cat <<EOF
[dataplane]
[[bridge]]
name = "br0"
[[port]]
name = "pa"
type = "$1"
iface = "$2"
bridge = "br0"
[[port]]
name = "pb"
type = "$1"
iface = "$3"
bridge = "br0"
EOF
}

start_ovs() { # kernel|netdev|afxdp
    local bin=$OVS_USERSPACE dp=netdev cfg ports
    cfg=(other_config:n-handler-threads=1 other_config:n-revalidator-threads=1)
    case $1 in
    kernel) bin=$OVS_KERNEL dp=system ;;
    netdev)
        # Without userspace TSO the userspace datapath neither takes
        # super-frames nor finishes partial checksums: no TCP gets through.
        cfg+=(other_config:dpdk-init=false other_config:userspace-tso-enable=true) ;;
    afxdp) cfg+=(other_config:dpdk-init=false "other_config:pmd-cpu-mask=$(printf '0x%x' $((1 << CPU)))") ;;
    esac
    rm -rf "$OVSD"
    mkdir -p "$OVSD"
    ovsdb-tool create "$OVSD/conf.db" "$OVS_SCHEMA"
    ovsdb-server "$OVSD/conf.db" --remote="punix:$OVSD/db.sock" --unixctl="$OVSD/ovsdb-server.ctl" \
        --pidfile="$OVSD/ovsdb-server.pid" --log-file="$OVSD/ovsdb-server.log" -vconsole:off \
        --detach --no-chdir 2> "$OVSD/ovsdb-server.err"
    "${VSCTL[@]}" --no-wait init
    "${VSCTL[@]}" --no-wait set Open_vSwitch . "${cfg[@]}"
    ip netns exec $NS_S taskset -c "$CPU" "$bin" "unix:$OVSD/db.sock" \
        --unixctl="$OVSD/ovs-vswitchd.ctl" --pidfile="$OVSD/ovs-vswitchd.pid" \
        --log-file="$OVSD/ovs-vswitchd.log" -vconsole:off --detach --no-chdir 2> "$OVSD/ovs-vswitchd.err"
    ports=(-- add-port kpovs kpa0 -- add-port kpovs kpb0)
    [ "$1" != afxdp ] ||
        ports+=(-- set Interface kpa0 type=afxdp -- set Interface kpb0 type=afxdp)
    if ! "${VSCTL[@]}" add-br kpovs -- set Bridge kpovs "datapath_type=$dp" "${ports[@]}"; then
        tail -n 20 "$OVSD/ovs-vswitchd.log" >&2
        exit 1
    fi
    # Flooding to the bridge's own (LOCAL) port would cost OVS a write per frame.
    ovs-ofctl mod-port kpovs kpovs no-flood
}

setup() { # switch
    rm -f "$DIR/weir.sock"
    case $1 in
    bridge)
        veths
        ip link add kpbr type bridge
        ip link set kpa0 master kpbr
        ip link set kpb0 master kpbr
        ip link set kpbr up
        ;;
    afpacket | afxdp)
        veths
        start_weir "$(weir_config "$1" kpa0 kpb0)"
        ;;
    tap)
        ip netns add $NS_A
        ip netns add $NS_B
        start_weir "$(weir_config tap kpa0 kpb0)"
        ip link set kpa0 netns $NS_A name eth0
        ip link set kpb0 netns $NS_B name eth0
        address $NS_A 198.18.40.1
        address $NS_B 198.18.40.2
        ;;
    ovs-*)
        ip netns add $NS_S
        SW_NS=$NS_S
        veths
        start_ovs "${1#ovs-}"
        ;;
    esac
    # Both ways resolved before measuring.
    for _ in $(seq 50); do
        ip netns exec $NS_A ping -c1 -W1 198.18.40.2 > /dev/null 2>&1 && return 0
    done
    echo "$1: no ping through the switch" >&2
    exit 1
}

start_server() {
    ip netns exec $NS_B iperf3 -s -1 -p $PORT > /dev/null 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 50); do
        ip netns exec $NS_B ss -Hltn "sport = :$PORT" | grep -q . && return 0
        sleep 0.1
    done
    die "iperf3 server did not start"
}

stop_server() {
    kill "$SERVER_PID" 2> /dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

# Why a run moved nothing: checksum errors in B mean partial checksums
# crossed the switch unfinished.
why_failed() {
    ip netns exec $NS_B cat /proc/net/snmp |
        awk '$1 == "Tcp:" || $1 == "Udp:" { if (!h[$1]++) { for (i = 2; i <= NF; i++) n[$1, i] = $i; next }
             for (i = 2; i <= NF; i++) if (n[$1, i] == "InCsumErrors") printf "%s InCsumErrors %s; ", $1, $i }'
}

b_rx_packets() { ip netns exec $NS_B cat /sys/class/net/eth0/statistics/rx_packets; }

# One iperf3 run; prints "value retransmits sent_kpps lost_pct b_kpps", or "fail".
measure() { # tcp STREAMS | udp
    local args out rx0 rx1
    if [ "$1" = tcp ]; then args=(-P "$2"); else args=(-u -l "$UDP_LEN" -b 0); fi
    start_server
    rx0=$(b_rx_packets)
    out=$(timeout $((SECONDS_PER_RUN + 20)) ip netns exec $NS_A iperf3 -c 198.18.40.2 -p $PORT \
        --connect-timeout 3000 -t "$SECONDS_PER_RUN" "${args[@]}" -J 2>&1) || true
    rx1=$(b_rx_packets)
    stop_server
    python3 -c '
import json, sys
try:
    e = json.loads(sys.argv[1])["end"]
    r, s = e["sum_received"], e["sum_sent"]
except (ValueError, KeyError):
    print("fail"); sys.exit()
if sys.argv[2] == "tcp":
    print("%.3f %d - - -" % (r["bits_per_second"] / 1e9, s.get("retransmits", 0)))
else:
    got = r["bytes"] / int(sys.argv[3])  # datagrams the iperf3 server received
    at_b = int(sys.argv[5]) - int(sys.argv[4])  # frames the eth0 of B received
    print("%.1f - %.1f %.1f %.1f" % (got / r["seconds"] / 1e3, s["packets"] / s["seconds"] / 1e3,
                                     100 * (1 - got / s["packets"]) if s["packets"] else 0,
                                     at_b / s["seconds"] / 1e3))
' "$out" "$1" $UDP_LEN "$rx0" "$rx1"
}

record() { # rep switch test result
    local v
    read -r -a v <<< "$4"
    if [ "${v[0]}" = fail ]; then
        v=(fail - - - -)
        echo "rep $1 $2 $3: no traffic through the switch ($(why_failed))" >&2
    else
        echo "rep $1 $2 $3: ${v[0]} $([ "$3" = udp64 ] && echo "kpps received, ${v[2]} kpps sent, ${v[4]} kpps at B's eth0" || echo Gbit/s)" >&2
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${v[@]}" >> "$DIR/runs.tsv"
}

for rep in $(seq "$REPS"); do
    for sw in $SWITCHES; do
        [ "$sw" != ovs-kernel ] || [ "$OVS_KERNEL_OK" = 1 ] || continue
        setup "$sw"
        for p in $STREAMS; do
            record "$rep" "$sw" "tcp$p" "$(measure tcp "$p")"
        done
        if [ "$UDP" = 1 ]; then record "$rep" "$sw" udp64 "$(measure udp)"; fi
        cleanup
    done
done

# ------------------------------------------------------------------ profile
worker_stats() { # -> "busy_cycles idle_cycles rx_packets busy_rounds reason:drops,..."
    "$WEIR" --socket "$DIR/weir.sock" stats --json | python3 -c '
import json, sys
w = json.load(sys.stdin)["workers"]
drops = {}
for x in w:
    for r, n in x["drops"].items():
        drops[r] = drops.get(r, 0) + n
print(*(sum(x[k] for x in w) for k in ("busy_cycles", "idle_cycles", "rx_packets", "busy_rounds")),
      ",".join("%s:%d" % d for d in drops.items()) or "-")'
}

ctxt() { # tid -> "voluntary nonvoluntary" context switches
    awk '/^voluntary_ctxt_switches/ { v = $2 } /^nonvoluntary_ctxt_switches/ { n = $2 } END { print v, n }' \
        "/proc/$WEIR_PID/task/$1/status"
}

profile() { # switch test
    local tid="" t window=$((SECONDS_PER_RUN - 2)) a b perf_out client cpid
    for t in /proc/"$WEIR_PID"/task/*; do
        [ "$(cat "$t/comm")" = weir-worker-0 ] && tid=${t##*/}
    done
    [ -n "$tid" ] || die "no weir-worker-0 thread"
    start_server
    if [ "$2" = tcp ]; then client=(-P 1); else client=(-u -l "$UDP_LEN" -b 0); fi
    ip netns exec $NS_A iperf3 -c 198.18.40.2 -p $PORT -t "$SECONDS_PER_RUN" "${client[@]}" > /dev/null &
    cpid=$!
    sleep 1
    a="$(ctxt "$tid") $(worker_stats)"
    perf_out=$(perf stat -x, -e raw_syscalls:sys_enter,task-clock -t "$tid" \
        -- sleep "$window" 2>&1 > /dev/null)
    b="$(ctxt "$tid") $(worker_stats)"
    wait "$cpid" || true
    stop_server
    python3 -c '
import sys
sw, test, window = sys.argv[1], sys.argv[2], float(sys.argv[3])
a, b = sys.argv[4].split(), sys.argv[5].split()
vol, invol, busy, idle, frames, rounds = (int(y) - int(x) for x, y in zip(a[:6], b[:6]))
def drops(tok):
    return {} if tok == "-" else {r: int(n) for r, n in (d.split(":") for d in tok.split(","))}
da, db = drops(a[6]), drops(b[6])
lost = " ".join("%s %.0fk/s" % (r, (n - da.get(r, 0)) / window / 1e3)
                for r, n in sorted(db.items()) if n > da.get(r, 0)) or "-"
ev = {}
for line in sys.argv[6].splitlines():
    f = line.split(",")
    if len(f) > 2 and f[0].replace(".", "").isdigit():
        ev[f[2]] = float(f[0])
sc = ev.get("raw_syscalls:sys_enter", 0)
cpu = ev.get("task-clock", 0) / 1e3 / window  # task-clock is in ms
print("%-9s %-4s %8.0f %9.0f %10.2f %7.0f %7.0f %6.1f %5.0f %9.1f  %s" % (
    sw, test, frames / window / 1e3, sc / window / 1e3, frames / sc if sc else 0,
    vol / window, invol / window, 100.0 * busy / (busy + idle) if busy + idle else 0,
    100 * cpu, frames / rounds if rounds else 0, lost))
' "$1" "$2" "$window" "$a" "$b" "$perf_out"
}

if [ "$PROFILE" = 1 ]; then
    {
        echo "weir's worker thread over $((SECONDS_PER_RUN - 2)) s of an iperf3 run: frames it received"
        echo "(kfps), syscalls (perf stat -t), frames per syscall, voluntary and involuntary"
        echo "context switches per second, busy % (weir stats), share of a CPU it ran (cpu%),"
        echo "frames per busy poll round, drops per second by reason"
        printf '%-9s %-4s %8s %9s %10s %7s %7s %6s %5s %9s  %s\n' port test kfps ksysc/s fr/syscall \
            vcs/s ivcs/s busy% cpu% fr/round drops
    } > "$DIR/profile.txt"
    for sw in afpacket afxdp tap; do
        has "$sw" || continue
        for t in tcp udp; do
            setup "$sw"
            profile "$sw" "$t" >> "$DIR/profile.txt"
            cleanup
        done
    done
fi

python3 - "$DIR/runs.tsv" "$SWITCHES" "$STREAMS" "$UDP" "$REPS" <<'EOF' | tee "$DIR/summary.txt"
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])][1:]
switches, streams = sys.argv[2].split(), sys.argv[3].split()
tests = ["tcp" + p for p in streams] + (["udp64"] if sys.argv[4] == "1" else [])
title = {t: "TCP -P %s Gbit/s" % t[3:] for t in tests}
title["udp64"] = "UDP 64 B kpps"
vals, lost = {}, {}
for s in switches:
    for t in tests:
        rs = [r for r in rows if r[1] == s and r[2] == t]
        vals[s, t] = [float(r[3]) if r[3] != "fail" else None for r in rs]
        lost[s, t] = [(float(r[5]), float(r[6]), float(r[7])) for r in rs if r[6] not in ("-", "")]

def med(s, t):
    v = vals.get((s, t), [])
    if not v:
        return None  # not run
    ok = [x for x in v if x is not None]
    return statistics.median(ok) if len(ok) * 2 > len(v) else 0.0

def cell(x, fmt):
    return "n/a" if x is None else ("fail" if x == 0.0 else fmt % x)

def ratio(s, t, ref):
    a, b = med(s, t), med(ref, t)
    return "n/a" if a is None or not b else ("fail" if a == 0.0 else "%.2f" % (a / b))

print("Medians of %s interleaved runs (iperf3, ns A -> ns B); fail = no traffic" % sys.argv[5])
if "udp64" in tests:
    print("UDP: kpps B's iperf3 received; sent kpps, lost %, kpps B's eth0 received")
head = "%-10s" % "switch"
for t in tests:
    head += " | %16s %7s %7s" % (title[t], "/bridge", "/ovs-nd")
head += " | %6s %6s %6s" % ("sent", "lost%", "at B") if "udp64" in tests else ""
print(head)
for s in switches:
    line = "%-10s" % s
    for t in tests:
        line += " | %16s %7s %7s" % (cell(med(s, t), "%.2f" if t != "udp64" else "%.0f"),
                                     ratio(s, t, "bridge"), ratio(s, t, "ovs-netdev"))
    if "udp64" in tests:
        l = lost.get((s, "udp64"), [])
        line += " | " + (" ".join("%6.0f" % statistics.median(x) for x in zip(*l)) if l else "%6s" % "n/a")
    print(line)
print()
print("min / median / max per switch")
for s in switches:
    line = "%-10s" % s
    for t in tests:
        v = vals.get((s, t), [])
        ok = [x for x in v if x is not None]
        f = "%.2f" if t != "udp64" else "%.0f"
        line += " | %-6s %s" % (t, "/".join(f % x for x in (min(ok), statistics.median(ok), max(ok)))
                                if ok else "fail" if v else "n/a")
    print(line)
EOF
cat "$DIR/notes.txt"
[ "$PROFILE" != 1 ] || cat "$DIR/profile.txt"
