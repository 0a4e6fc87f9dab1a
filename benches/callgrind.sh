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
# Usage: bash benches/callgrind.sh
# Environment: P1, P2 (packet counts, multiples of 32), REPEATS; CARGO_TARGET_DIR
# is honoured if set, otherwise cargo's default (the workspace target/).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
p1=${P1:-131072}
p2=${P2:-655360}
repeats=${REPEATS:-3}

if ! command -v valgrind >/dev/null 2>&1; then
    echo "valgrind not found; installing it with apt-get" >&2
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq valgrind >/dev/null
fi

# Build, and take the binary's path from cargo itself, so any target directory
# (CARGO_TARGET_DIR, .cargo/config) works.
bin=$(cargo build --release --manifest-path "$root/Cargo.toml" -p weir-benches \
        --bin switch-insns --message-format=json-render-diagnostics |
      sed -n 's/.*"executable":"\([^"]*switch-insns\)".*/\1/p' | tail -n 1)
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "could not find the switch-insns binary after building" >&2
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Total instructions of one run: callgrind's summary line.
count() {
    local case=$1 macs=$2 packets=$3 out="$work/cg.out"
    valgrind --tool=callgrind --callgrind-out-file="$out" \
        "$bin" "$case" "$macs" "$packets" >/dev/null 2>"$work/valgrind.log" || {
        cat "$work/valgrind.log" >&2
        return 1
    }
    sed -n 's/^summary: //p' "$out"
}

echo "switch core, instructions per packet: (Ir(P2) - Ir(P1)) / (P2 - P1), P1=$p1 P2=$p2, $repeats runs"
echo "binary: $bin"
echo
printf '%-14s %9s %9s %9s %9s\n' case macs min median max
cases=(
    "unicast 1000"
    "unicast 1000000"
    "unicast-pool 1000"
    "unicast-pool 1000000"
    "flood 1000"
    "vlan 1000"
)
for c in "${cases[@]}"; do
    read -r case macs <<<"$c"
    per=()
    for _ in $(seq "$repeats"); do
        a=$(count "$case" "$macs" "$p1")
        b=$(count "$case" "$macs" "$p2")
        per+=("$(awk -v a="$a" -v b="$b" -v p1="$p1" -v p2="$p2" \
            'BEGIN { printf "%.1f", (b - a) / (p2 - p1) }')")
    done
    printf '%s\n' "${per[@]}" | sort -n | awk -v case="$case" -v macs="$macs" '
        { v[NR] = $1 }
        END {
            med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf "%-14s %9s %9.1f %9.1f %9.1f\n", case, macs, v[1], med, v[NR]
        }'
done
