#!/usr/bin/env bash
# TCP between two network namespaces through weir, per kernel port type, and
# through the Linux bridge on the same kind of veths, in one run.
#
#   ns A (eth0) --veth-- [switch] --veth-- ns B (eth0)
#
# Switches (interleaved inside every rep, so that slow phases of a shared host
# hit all of them):
#   bridge    a Linux bridge with both host ends
#   afpacket  weir, one worker, two `afpacket` ports on the host ends
#   afxdp     weir, one worker, two `afxdp` ports on the host ends
#   tap       weir, one worker, two `tap` ports, moved into the namespaces as eth0
# Every namespace keeps Linux's default offloads (nothing is tuned with ethtool).
#
# Each run: iperf3 -c from A to B for KP_SECONDS, with 1 and with 4 streams
# (-P). A cell is the median of KP_REPS runs; the ratio column is weir's median
# over the bridge's.
#
# Usage: benches/kernel-ports.sh (root; needs iperf3, iproute2)
# Environment [defaults]: KP_REPS [3] KP_SECONDS [5] KP_STREAMS ["1 4"]
#   KP_SWITCHES ["bridge afpacket afxdp tap"] KP_DIR [/tmp/weir-kernel-ports]
#   WEIR_BIN [target/release/weir, built with cargo if missing]
# Output: a table on stdout and in KP_DIR/summary.txt, one line per run in
# KP_DIR/runs.tsv.
set -euo pipefail

REPS=${KP_REPS:-3}
SECONDS_PER_RUN=${KP_SECONDS:-5}
STREAMS=${KP_STREAMS:-"1 4"}
SWITCHES=${KP_SWITCHES:-"bridge afpacket afxdp tap"}
DIR=${KP_DIR:-/tmp/weir-kernel-ports}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WEIR=${WEIR_BIN:-$ROOT/target/release/weir}

[ "$(id -u)" = 0 ] || { echo "needs root (namespaces)" >&2; exit 1; }
command -v iperf3 >/dev/null || { echo "needs iperf3 (apt-get install iperf3)" >&2; exit 1; }
if [ ! -x "$WEIR" ]; then
    (cd "$ROOT" && cargo build --release -p weir)
fi
mkdir -p "$DIR"
: > "$DIR/runs.tsv"
printf 'rep\tswitch\tstreams\tgbps\n' >> "$DIR/runs.tsv"

NS_A=kpa NS_B=kpb
WEIR_PID=

cleanup() {
    if [ -n "$WEIR_PID" ]; then
        kill "$WEIR_PID" 2>/dev/null || true
        wait "$WEIR_PID" 2>/dev/null || true
        WEIR_PID=
    fi
    ip link del kpbr 2>/dev/null || true
    ip link del kpa0 2>/dev/null || true
    ip link del kpb0 2>/dev/null || true
    ip netns del $NS_A 2>/dev/null || true
    ip netns del $NS_B 2>/dev/null || true
}
trap cleanup EXIT

address() { # ns ip
    ip -n "$1" addr add "$2/24" dev eth0
    ip -n "$1" link set eth0 up
    ip -n "$1" link set lo up
}

veths() {
    ip netns add $NS_A
    ip netns add $NS_B
    ip link add kpa0 type veth peer name eth0 netns $NS_A
    ip link add kpb0 type veth peer name eth0 netns $NS_B
    ip link set kpa0 up
    ip link set kpb0 up
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
    esac
    # Both ways resolved before measuring.
    for _ in $(seq 50); do
        ip netns exec $NS_A ping -c1 -W1 198.18.40.2 > /dev/null 2>&1 && return 0
    done
    echo "$1: no ping through the switch" >&2
    exit 1
}

measure() { # streams -> Gbit/s
    ip netns exec $NS_B iperf3 -s -1 -D -p 5299 > /dev/null
    sleep 0.3
    ip netns exec $NS_A iperf3 -c 198.18.40.2 -p 5299 -t "$SECONDS_PER_RUN" -P "$1" -J |
        python3 -c 'import json,sys; print("%.3f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))'
}

for rep in $(seq "$REPS"); do
    for sw in $SWITCHES; do
        setup "$sw"
        for p in $STREAMS; do
            g=$(measure "$p")
            printf '%s\t%s\t%s\t%s\n' "$rep" "$sw" "$p" "$g" >> "$DIR/runs.tsv"
            echo "rep $rep $sw -P $p: $g Gbit/s" >&2
        done
        cleanup
    done
done

python3 - "$DIR/runs.tsv" "$SWITCHES" "$STREAMS" <<'EOF' | tee "$DIR/summary.txt"
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])][1:]
switches, streams = sys.argv[2].split(), sys.argv[3].split()
med = {}
for s in switches:
    for p in streams:
        v = [float(r[3]) for r in rows if r[1] == s and r[2] == p]
        med[s, p] = statistics.median(v) if v else float("nan")
print("TCP Gbit/s, median of %d runs (iperf3, A -> B)" % max(int(r[0]) for r in rows))
print("%-9s %s" % ("switch", "".join("%12s %9s" % ("-P %s" % p, "/bridge") for p in streams)))
for s in switches:
    cells = ""
    for p in streams:
        b = med.get(("bridge", p), float("nan"))
        cells += "%12.2f %9.2f" % (med[s, p], med[s, p] / b if b else float("nan"))
    print("%-9s %s" % (s, cells))
EOF
