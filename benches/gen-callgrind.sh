#!/usr/bin/env bash
# Instructions per frame of weir-bench's traffic generator (`weir bench`),
# counted by callgrind on a short real run (in-process weir, 64 B, one flow).
#
# The generator's work per frame is in two out-of-line functions of
# weir-bench/src/traffic.rs, each called only when there is work: Sender's
# `send_burst` (write the frame's first bytes, the descriptor and the avail
# slot, publish) and Receiver's `harvest` (read the used ring, peek at the
# frame, record its latency, repost the buffer). The loop's empty polls are
# outside both, so the figures do not depend on how often valgrind's
# serialised threads left the generator waiting. For each run:
#
#   send     Ir(send_burst) / frames sent
#   receive  Ir(harvest) / frames received
#   frame    send + receive: the generator's cost of one forwarded frame
#
# callgrind's inclusive counts; frame counts from the run's JSON (the main
# trial only calls these functions). RUNS runs (default 3); the table shows
# min / median / max.
#
# Usage: bash benches/gen-callgrind.sh
# Environment: RUNS, DURATION (seconds per run, default 5); CARGO_TARGET_DIR
# is honoured if set.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
runs=${RUNS:-3}
duration=${DURATION:-5}

# shellcheck source=benches/lib.sh
. "$root/benches/lib.sh"
# The generator is weir-bench's own program (`weir bench` only execs it):
# valgrind runs it directly, so the counts are of the process that sends.
callgrind_setup weir weir-bench

inclusive() { # FILE PATTERN: callgrind's inclusive Ir of the function matching PATTERN
    callgrind_annotate --inclusive=yes --auto=no --threshold=100 "$1" 2>/dev/null |
        grep -E "$2" | head -n 1 | awk '{ gsub(",", "", $1); print $1 }'
}

for i in $(seq "$runs"); do
    out=$work/cg.$i
    callgrind_run "$out" --quiet --size 64 --duration "$duration" --json "$work/b.$i.json" \
        >/dev/null || exit 1
    send=$(inclusive "$out" 'Sender.*send_burst')
    recv=$(inclusive "$out" 'Receiver.*harvest')
    tx=$(jq '.runs[0].main.tx_frames' "$work/b.$i.json")
    rx=$(jq '.runs[0].main.rx_frames' "$work/b.$i.json")
    if [ -z "$send" ] || [ -z "$recv" ] || [ "$tx" -eq 0 ] || [ "$rx" -eq 0 ]; then
        echo "run $i: no generator counts (send '$send', receive '$recv', tx $tx, rx $rx)" >&2
        exit 1
    fi
    awk -v s="$send" -v r="$recv" -v t="$tx" -v x="$rx" \
        'BEGIN { printf "%.1f %.1f %.1f\n", s / t, r / x, s / t + r / x }' >>"$work/per-frame"
    echo "run $i: $tx sent, $rx received, send $send Ir, receive $recv Ir" >&2
done

printf '%-8s %8s %8s %8s   (instructions per frame, %s runs)\n' "" min median max "$runs"
for col in 1 2 3; do
    name=$(echo "send receive frame" | cut -d' ' -f"$col")
    printf '%-8s %s\n' "$name" "$(cut -d' ' -f"$col" "$work/per-frame" | summary)"
done
