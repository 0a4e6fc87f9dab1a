#!/usr/bin/env bash
# Instructions per frame through weir's split-ring fast path, counted by
# callgrind, against an in-process guest (benches/src/vring.rs).
#
# For each case, runs `vring-insns` under `valgrind --tool=callgrind` for F1 and
# F2 frames and reports
#
#     (Ir(F2) - Ir(F1)) / (F2 - F1)
#
# so that set-up (guest memory, descriptors, the mempool) cancels out. Each case
# is measured REPEATS times (default 3); the table shows min / median / max.
#
# Figures per case:
#   step     everything one benchmark step executes, per frame
#   weir     the step minus the guest's own work (`guest_post`, callgrind's
#            inclusive count): SplitRing::dequeue (guest TX -> mbuf, incl. mbuf
#            alloc) + SplitRing::enqueue (mbuf -> guest RX, incl. mbuf free)
#   dequeue, enqueue
#            callgrind's inclusive count of each, per frame (for dequeue, of its
#            out-of-line part when the empty-ring check is inlined)
# The `empty` case is one poll of an empty TX ring per "frame".
#
# A case with a third field, `LAYOUT:BYTES:PATH` (PATH bridge, patch or vxlan;
# BYTES 64), takes every burst across a switch between dequeue and enqueue
# (`weir_benches::path::Path::carry`, four flows): guest to guest through one
# bridge (plain L2), through two bridges joined by a patch pair, or joined by
# VXLAN tunnels over one. `weir` is then a frame's whole cost in a worker:
# dequeue, the switching (and tunnel) and enqueue.
#
# Usage: bash benches/vring-callgrind.sh
# Environment: F1, F2 (frame counts, multiples of 32), REPEATS, CASES (e.g.
# "single:60 chain:60", or "single:64:bridge single:64:patch single:64:vxlan"
# for the guest-to-guest paths); CARGO_TARGET_DIR is honoured if set.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
f1=${F1:-65536}
f2=${F2:-327680}
repeats=${REPEATS:-3}
cases=${CASES:-"single:60 single:1514 chain:60 indirect:60 empty:60"}

# shellcheck source=benches/lib.sh
. "$root/benches/lib.sh"
callgrind_setup weir-benches vring-insns

# One run: total, then the inclusive counts of guest_post, SplitRing::dequeue
# and SplitRing::enqueue (0 if inlined or never run). With --inclusive=yes,
# callgrind_annotate lists a function once per source file its inlined code
# came from; the line naming the object file (`[...]`) is the whole function.
count() {
    local layout=$1 len=$2 frames=$3 path=$4 out="$work/cg.out" total
    total=$(callgrind_run "$out" "$layout" "$len" "$frames" ${path:+"$path"}) || return 1
    (cd "$work" && callgrind_annotate --auto=no --inclusive=yes --threshold=100 "$out" 2>/dev/null) |
        awk -v t="$total" '
            function n(s) { gsub(",", "", s); return s + 0 }
            /:weir_benches::vring::guest_post \[/ { g += n($1) }
            # dequeue is inlined into its caller but for its out-of-line
            # dequeue_pending; if it shows up itself, it includes the latter.
            /:vhost_user::vring::SplitRing::dequeue(_pending)? \[/ { if (n($1) > d) d = n($1) }
            /:vhost_user::vring::SplitRing::enqueue \[/ { e += n($1) }
            END { print t, g + 0, d + 0, e + 0 }'
}

echo "vring fast path, instructions per frame: (Ir(F2) - Ir(F1)) / (F2 - F1), F1=$f1 F2=$f2, $repeats runs"
echo "binary: $bin"
echo
printf '%-9s %5s %-6s | %-23s | %-23s | %7s %7s\n' layout bytes path "step min/median/max" \
    "weir min/median/max" dequeue enqueue
for c in $cases; do
    IFS=: read -r layout len path <<<"$c"
    per=()
    for _ in $(seq "$repeats"); do
        r=$(count "$layout" "$len" "$f1" "$path")
        read -r a ag ad ae <<<"$r"
        r=$(count "$layout" "$len" "$f2" "$path")
        read -r b bg bd be <<<"$r"
        per+=("$(awk -v a="$a" -v b="$b" -v ag="$ag" -v bg="$bg" -v ad="$ad" -v bd="$bd" \
            -v ae="$ae" -v be="$be" -v f1="$f1" -v f2="$f2" 'BEGIN {
                d = f2 - f1
                printf "%.1f %.1f %.1f %.1f", (b - a) / d, ((b - bg) - (a - ag)) / d,
                    (bd - ad) / d, (be - ae) / d
            }')")
    done
    step=$(printf '%s\n' "${per[@]}" | cut -d' ' -f1 | summary 7)
    weir=$(printf '%s\n' "${per[@]}" | cut -d' ' -f2 | summary 7)
    deq=$(printf '%s\n' "${per[@]}" | cut -d' ' -f3 | sort -n | sed -n 1p)
    enq=$(printf '%s\n' "${per[@]}" | cut -d' ' -f4 | sort -n | sed -n 1p)
    printf '%-9s %5s %-6s | %s | %s | %7.1f %7.1f\n' "$layout" "$len" "${path:--}" "$step" "$weir" \
        "$deq" "$enq"
done
