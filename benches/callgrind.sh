#!/usr/bin/env bash
# Instructions per packet through the switch core, counted by callgrind.
#
# For each case, runs `switch-insns` (benches/src/bin/switch-insns.rs) under
# `valgrind --tool=callgrind` for P1 and P2 packets and reports
#
#     (Ir(P2) - Ir(P1)) / (P2 - P1)
#
# so that set-up (building the switch, pre-learning the MACs, building the
# frames) cancels out. Each case is measured REPEATS times (default 3); the
# table shows min / median / max.
#
# Two figures per case: `step`, everything one benchmark step executes, and
# `switch`, the same minus the benchmark's own sink for recycled cases
# (`weir_benches::recycle`, which moves the output back into the input burst;
# callgrind's inclusive count for it). `switch` is Forwarder::process plus
# Forwarder::drain. The pooled case has no recycle sink: its step includes
# mbuf alloc, frame fill and free, by design, and both figures are equal.
# The vxlan-encap and vxlan-decap cases run no switch: `switch` is the
# tunnel's per-frame work (benches/src/tunnel.rs), without the sink that
# undoes it to reuse the buffer (`weir_benches::tunnel::unwind`); their
# `macs` column is the number of inner flows. patch-path and vxlan-path
# take a burst across two bridges joined by a patch pair or by a VXLAN
# tunnel (benches/src/path.rs): their difference is what encapsulation and
# decapsulation add to a frame's way, unicast is one bridge's switching.
# vxlan3-path is vxlan-path with a third host in the tunnels' flood lists,
# so that encapsulation looks each frame's remote up.
#
# Usage: bash benches/callgrind.sh
# Environment: P1, P2 (packet counts, multiples of 32), REPEATS; CARGO_TARGET_DIR
# is honoured if set, otherwise cargo's default (the workspace target/).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
p1=${P1:-131072}
p2=${P2:-655360}
repeats=${REPEATS:-3}

# shellcheck source=benches/lib.sh
. "$root/benches/lib.sh"
callgrind_setup weir-benches switch-insns

# Instructions of one run: callgrind's total, then the inclusive count of the
# benchmark's sinks, recycle and tunnel::unwind (0 if neither ran). With
# --inclusive=yes, callgrind_annotate lists a function once per source file its inlined code
# came from; the line naming the object file (`[...]`) is the whole function.
count() {
    local case=$1 macs=$2 packets=$3 out="$work/cg.out" total sink
    total=$(callgrind_run "$out" "$case" "$macs" "$packets") || return 1
    sink=$(callgrind_annotate --inclusive=yes --threshold=100 "$out" 2>/dev/null |
        awk '/:weir_benches::(recycle|tunnel::unwind) \[/ { gsub(",", "", $1); s += $1 } END { print s + 0 }')
    echo "$total $sink"
}

echo "switch core, instructions per packet: (Ir(P2) - Ir(P1)) / (P2 - P1), P1=$p1 P2=$p2, $repeats runs"
echo "binary: $bin"
echo
printf '%-14s %8s %8s %8s %8s   %8s %8s %8s\n' case macs \
    "step min" median max "switch min" median max
cases=(
    "unicast 1000"
    "unicast 1000000"
    "unicast-pool 1000"
    "unicast-pool 1000000"
    "unicast-run8 1000"
    "unicast-run32 1000"
    "flood 1000"
    "vlan 1000"
    "vlan-access 1000"
    "vlan-trunk 1000"
    "acl-10 1000"
    "acl-100 1000"
    "acl-1000 1000"
    "acl-10-new 1000"
    "unicast 4"
    "security 4"
    "limits 4"
    "all 4"
    "vxlan-encap 32"
    "vxlan-decap 32"
    "patch-path 32"
    "vxlan-path 32"
    "vxlan3-path 32"
)
# CASES="unicast:1000 vlan:1000" measures only those.
if [ -n "${CASES:-}" ]; then
    read -r -a cases <<<"${CASES//:/ }"
    pairs=()
    for ((i = 0; i + 1 < ${#cases[@]}; i += 2)); do pairs+=("${cases[i]} ${cases[i + 1]}"); done
    cases=("${pairs[@]}")
fi
for c in "${cases[@]}"; do
    read -r case macs <<<"$c"
    per=()
    for _ in $(seq "$repeats"); do
        r=$(count "$case" "$macs" "$p1")
        read -r a asink <<<"$r"
        r=$(count "$case" "$macs" "$p2")
        read -r b bsink <<<"$r"
        per+=("$(awk -v a="$a" -v b="$b" -v as="$asink" -v bs="$bsink" \
            -v p1="$p1" -v p2="$p2" 'BEGIN {
                d = p2 - p1
                printf "%.1f %.1f", (b - a) / d, ((b - bs) - (a - as)) / d
            }')")
    done
    step=$(printf '%s\n' "${per[@]}" | cut -d' ' -f1 | summary 8)
    switch=$(printf '%s\n' "${per[@]}" | cut -d' ' -f2 | summary 8)
    printf '%-14s %8s %s   %s\n' "$case" "$macs" "$step" "$switch"
done
