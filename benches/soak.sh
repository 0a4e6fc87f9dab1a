#!/usr/bin/env bash
# Soak: a running weir under a hostile tenant, for minutes to an hour.
#
#   one weir daemon, one worker (SOAK_SW_CPU), bridge br0 with
#     evil    vhost-user server port, driven by benches/src/bin/hostile-frontend.rs,
#             which cycles through every attack it knows (reconnect storm, closed
#             eventfds, a blocking call eventfd, indirect-table and zero-length
#             descriptor amplification, TSO with mss 1, fd floods, garbage)
#     flood   afpacket port on a veth into namespace weir-soak; mausezahn there
#             sends frames from random source MACs (an FDB flood)
#     a, b    two healthy vhost-user ports added by `weir bench --socket`, which
#             forwards known-unicast traffic at a fixed rate between them
#
# Phases: baseline (healthy traffic alone, SOAK_BASELINE_CHUNKS measurements),
# attack (attackers running, healthy traffic measured in chunks of SOAK_CHUNK s
# for --duration s), recovery (attackers stopped, SOAK_SETTLE s, one more
# measurement). Every SOAK_INTERVAL s a sampler records the daemon's RSS, open
# fds, threads, mapped regions, free mbufs in both pools, FDB entries, and every
# port's counters.
#
# Fails (exit 1) if
#   - a healthy measurement forwards less than 90 % of the baseline's median rate;
#   - after recovery the daemon holds more fds, threads or named mappings (guest
#     memory files, hugepages, libraries) than at the end of the baseline, fewer
#     free mbufs (either pool), or its RSS grew by more than SOAK_RSS_SLACK_KB;
#   - the daemon died, or the evil port cannot serve a well-behaved frontend at
#     the end (one clean `reconnect` cycle of hostile-frontend).
#
# The offered rate (SOAK_RATE) is meant to sit well below what weir forwards and
# what the generator sustains on this host, so that a lower rate under attack
# means harm done by the attacker and not a saturated worker or a starved
# generator; the attackers run at nice 19 on the generator's CPU.
#
# Usage: benches/soak.sh [--duration SECONDS] [--out DIR]   (root: namespaces, apt)
# Environment (defaults in brackets):
#   SOAK_RATE [0.2mpps]  SOAK_CHUNK [10]  SOAK_BASELINE_CHUNKS [3]  SOAK_INTERVAL [2]
#   SOAK_SETTLE [5]  SOAK_SW_CPU [last CPU]  SOAK_GEN_CPU [0]  SOAK_FLOOD_GAP_US [100]
#   SOAK_RSS_SLACK_KB [16384]  WEIR_BIN [built with cargo]
# Output in DIR [/tmp/weir-soak]: samples.tsv (one line per sample), healthy.tsv
# (one line per measurement), soak.png (plot), hostile.log, weir.log, summary.txt.
set -Eeuo pipefail

DURATION=120
OUT=/tmp/weir-soak
while [ $# -gt 0 ]; do
    case $1 in
        --duration) DURATION=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -E/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (--duration SECONDS, --out DIR)" >&2; exit 2 ;;
    esac
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=benches/lib.sh
. "$root/benches/lib.sh"

SOAK_RATE=${SOAK_RATE:-0.2mpps}
SOAK_CHUNK=${SOAK_CHUNK:-10}
SOAK_BASELINE_CHUNKS=${SOAK_BASELINE_CHUNKS:-3}
SOAK_INTERVAL=${SOAK_INTERVAL:-2}
SOAK_SETTLE=${SOAK_SETTLE:-5}
SOAK_SW_CPU=${SOAK_SW_CPU:-$(($(nproc) - 1))}
SOAK_GEN_CPU=${SOAK_GEN_CPU:-0}
SOAK_FLOOD_GAP_US=${SOAK_FLOOD_GAP_US:-100}
SOAK_RSS_SLACK_KB=${SOAK_RSS_SLACK_KB:-16384}
NS=weir-soak
VETH=wsoak-fl

die() { echo "soak.sh: $*" >&2; exit 1; }
log() { echo "[$(date +%T)] $*"; }

[ "$(id -u)" -eq 0 ] || die "needs root (network namespace, apt)"
need=()
command -v mausezahn >/dev/null || need+=(netsniff-ng)
command -v gnuplot >/dev/null || need+=(gnuplot-nox)
command -v jq >/dev/null || need+=(jq)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; }
fi

if [ -n "${WEIR_BIN:-}" ]; then
    WEIR=$WEIR_BIN
else
    cargo build --release --manifest-path "$root/Cargo.toml" -p weir >&2
    WEIR="$root/target/release/weir"
    [ -x "$WEIR" ] || WEIR=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)/release/weir
fi
HOSTILE=$(build_bench_bin hostile-frontend)

rm -rf "$OUT"; mkdir -p "$OUT"
CTRL="$OUT/weir.sock"
EVIL="$OUT/evil.sock"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -n "${WEIR_PID:-}" ] && kill -TERM "$WEIR_PID" 2>/dev/null && wait "$WEIR_PID" 2>/dev/null
    ip netns del "$NS" 2>/dev/null || true
    ip link del "$VETH" 2>/dev/null || true
}
trap cleanup EXIT

ip netns del "$NS" 2>/dev/null || true
ip link del "$VETH" 2>/dev/null || true
ip netns add "$NS"
ip link add "$VETH" type veth peer name eth0 netns "$NS"
ip link set "$VETH" up
ip -n "$NS" link set eth0 up

cat > "$OUT/weir.toml" <<EOF
[dataplane]
workers = "$SOAK_SW_CPU"

[control]
socket = "$CTRL"

[[bridge]]
name = "br0"

[[port]]
name = "evil"
type = "vhost-user"
socket = "$EVIL"
bridge = "br0"

[[port]]
name = "flood"
type = "afpacket"
iface = "$VETH"
bridge = "br0"
EOF

RUST_LOG=${RUST_LOG:-warn} "$WEIR" --socket "$CTRL" run --config "$OUT/weir.toml" \
    < /dev/null > "$OUT/weir.log" 2>&1 &
WEIR_PID=$!
for _ in $(seq 100); do
    "$WEIR" --socket "$CTRL" port list >/dev/null 2>&1 && break
    kill -0 "$WEIR_PID" 2>/dev/null || { tail -n 20 "$OUT/weir.log" >&2; die "weir exited at start"; }
    sleep 0.1
done
"$WEIR" --socket "$CTRL" port list >/dev/null || die "weir did not answer on $CTRL"

# One sample: time, RSS, fds, threads, maps, free mbufs, FDB size, per-port counters.
echo -e "t_s\tphase\trss_kb\tfds\tthreads\tmaps\tpool_free\ttso_free\tfdb\tports" > "$OUT/samples.tsv"
PHASE_FILE="$OUT/.phase"
echo baseline > "$PHASE_FILE"
T0=$(date +%s.%N)
sample() {
    local t rss fds thr maps stats pool tso fdb ports
    t=$(echo "$(date +%s.%N) - $T0" | bc)
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$WEIR_PID/status")
    fds=$(find "/proc/$WEIR_PID/fd" -mindepth 1 -maxdepth 1 | wc -l)
    thr=$(find "/proc/$WEIR_PID/task" -mindepth 1 -maxdepth 1 | wc -l)
    maps=$(wc -l < "/proc/$WEIR_PID/maps")
    stats=$("$WEIR" --socket "$CTRL" stats --json 2>/dev/null) || stats='{}'
    pool=$(jq -r '.mempool.available // "-"' <<< "$stats")
    tso=$(jq -r '.tso_pool.available // "-"' <<< "$stats")
    fdb=$("$WEIR" --socket "$CTRL" fdb show --json 2>/dev/null | jq 'length' 2>/dev/null || echo -)
    ports=$(jq -r '[.ports[]? | "\(.name):rx=\(.stats.rx_packets // 0),tx=\(.stats.tx_packets // 0),drop=\([.stats.drops // {} | .[]?] | add // 0)"] | join(" ")' <<< "$stats" 2>/dev/null || echo -)
    echo -e "$t\t$(cat "$PHASE_FILE")\t$rss\t$fds\t$thr\t$maps\t$pool\t$tso\t$fdb\t$ports" >> "$OUT/samples.tsv"
}
( while kill -0 "$WEIR_PID" 2>/dev/null; do sample; sleep "$SOAK_INTERVAL"; done ) &
PIDS+=($!)

# min median max of the numbers on stdin, three decimals.
stat3() {
    sort -n | awk '{ v[NR] = $1 } END {
        printf "%.3f %.3f %.3f\n", v[1], (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2, v[NR] }'
}

echo -e "t_s\tphase\tmpps\tloss_pct" > "$OUT/healthy.tsv"
# One healthy measurement of SOAK_CHUNK seconds; prints the forwarded Mpps.
measure() {
    local phase=$1 json="$OUT/bench-$2.json" t mpps loss
    t=$(echo "$(date +%s.%N) - $T0" | bc)
    taskset -c "$SOAK_GEN_CPU" "$WEIR" bench --socket "$CTRL" --bridge br0 --rate "$SOAK_RATE" \
        --duration "$SOAK_CHUNK" --quiet --json "$json" --gen-cpu "$SOAK_GEN_CPU" \
        --worker-cpu "$SOAK_SW_CPU" >> "$OUT/bench.log" 2>&1 || die "weir bench failed (bench.log)"
    # Bench frames only: floods from the attackers reach the bench ports too
    # and are counted apart as foreign.
    mpps=$(jq -r '.runs[0].main | (.rx_frames - .foreign_frames) / .duration_s / 1e6' "$json")
    loss=$(jq -r '.runs[0].main.loss_pct' "$json")
    echo -e "$t\t$phase\t$mpps\t$loss" >> "$OUT/healthy.tsv"
    echo "$mpps"
}

log "baseline: $SOAK_BASELINE_CHUNKS x ${SOAK_CHUNK}s at $SOAK_RATE without attackers"
base=()
for i in $(seq "$SOAK_BASELINE_CHUNKS"); do base+=("$(measure baseline "base$i")"); done
BASE=$(printf '%s\n' "${base[@]}" | stat3 | awk '{print $2}')
log "baseline median ${BASE} Mpps"
sample
read -r _ _ RSS0 FDS0 THR0 MAPS0 POOL0 TSO0 _ < <(tail -n 1 "$OUT/samples.tsv")
cp "/proc/$WEIR_PID/maps" "$OUT/maps-baseline.txt"

log "attack: ${DURATION}s (hostile frontend on evil, MAC flood from $NS)"
echo attack > "$PHASE_FILE"
nice -n 19 taskset -c "$SOAK_GEN_CPU" "$HOSTILE" "$EVIL" "$DURATION" > "$OUT/hostile.log" 2>&1 &
HPID=$!; PIDS+=("$HPID")
ip netns exec "$NS" nice -n 19 taskset -c "$SOAK_GEN_CPU" \
    mausezahn eth0 -q -a rand -b ff:ff:ff:ff:ff:ff -t udp "dp=9" -c 0 -d "${SOAK_FLOOD_GAP_US}usec" \
    > "$OUT/flood.log" 2>&1 &
FPID=$!; PIDS+=("$FPID")
end=$(( $(date +%s) + DURATION ))
attack=()
i=0
while [ "$(date +%s)" -lt "$end" ]; do
    i=$((i + 1))
    attack+=("$(measure attack "attack$i")")
    kill -0 "$WEIR_PID" 2>/dev/null || die "weir died under attack (weir.log)"
done
kill "$FPID" 2>/dev/null || true
wait "$HPID" 2>/dev/null || true

log "recovery: ${SOAK_SETTLE}s, then one more measurement"
echo recovery > "$PHASE_FILE"
sleep "$SOAK_SETTLE"
after=$(measure recovery after)
"$HOSTILE" "$EVIL" 0.001 reconnect > "$OUT/final-connect.log" 2>&1
grep -q ' ok$' "$OUT/final-connect.log" || die "the evil port no longer serves a frontend: $(cat "$OUT/final-connect.log")"
sleep "$SOAK_INTERVAL"
sample
read -r _ _ RSS1 FDS1 THR1 MAPS1 POOL1 TSO1 _ < <(tail -n 1 "$OUT/samples.tsv")
cp "/proc/$WEIR_PID/maps" "$OUT/maps-after.txt"
# Mappings with a name (guest memory files, hugepages, the binary and its
# libraries) must all be back. Anonymous ones are left to the RSS check: the C
# library keeps per-thread heaps (at most 8 per CPU) and the stacks of ended
# threads (up to 40 MiB) for reuse, so their count follows the peak number of
# threads, not a leak.
named() { awk '$6 != ""' "$1" | wc -l; }
MAPS0=$(named "$OUT/maps-baseline.txt"); MAPS1=$(named "$OUT/maps-after.txt")

gnuplot <<EOF 2>/dev/null || log "gnuplot failed; the data is in $OUT/*.tsv"
set terminal pngcairo size 1200,1200
set output "$OUT/soak.png"
set multiplot layout 4,1 title "weir soak: healthy traffic at $SOAK_RATE with a hostile tenant"
set datafile separator "\t"
set key top left
set xlabel "seconds"
set ylabel "healthy Mpps"
plot "$OUT/healthy.tsv" using 1:3 every ::1 with linespoints title "forwarded"
set ylabel "count"
plot "$OUT/samples.tsv" using 1:4 every ::1 with lines title "fds", "" using 1:5 every ::1 with lines title "threads", "" using 1:6 every ::1 with lines title "mapped regions"
plot "$OUT/samples.tsv" using 1:9 every ::1 with lines title "fdb entries", "" using 1:7 every ::1 with lines title "free mbufs", "" using 1:8 every ::1 with lines title "free TSO mbufs"
set ylabel "KiB"
plot "$OUT/samples.tsv" using 1:3 every ::1 with lines title "RSS"
unset multiplot
EOF

cycles=$(grep -c '^cycle' "$OUT/hostile.log" || true)
fail=()
worst=$(printf '%s\n' "${attack[@]}" "$after" | sort -n | head -n 1)
awk -v w="$worst" -v b="$BASE" 'BEGIN { exit !(w >= 0.9 * b) }' ||
    fail+=("healthy rate fell to $worst Mpps, below 90 % of the baseline $BASE")
[ "$FDS1" -le "$FDS0" ] || fail+=("fds $FDS0 -> $FDS1")
[ "$THR1" -le "$THR0" ] || fail+=("threads $THR0 -> $THR1")
[ "$MAPS1" -le "$MAPS0" ] || fail+=("named mappings $MAPS0 -> $MAPS1")
[ "$POOL1" = "-" ] || [ "$POOL1" -ge "$POOL0" ] || fail+=("free mbufs $POOL0 -> $POOL1")
[ "$TSO1" = "-" ] || [ "$TSO0" = "-" ] || [ "$TSO1" -ge "$TSO0" ] || fail+=("free TSO mbufs $TSO0 -> $TSO1")
[ "$RSS1" -le $((RSS0 + SOAK_RSS_SLACK_KB)) ] || fail+=("RSS $RSS0 -> $RSS1 KiB")

{
    echo "weir soak, $(date -u +%FT%TZ), ${DURATION}s of attack, healthy traffic at $SOAK_RATE"
    echo "attack cycles run: $cycles ($(awk '{print $4}' "$OUT/hostile.log" | sort | uniq -c | tr -s ' ' | paste -sd, -))"
    echo "healthy Mpps: baseline median $BASE (${base[*]}); under attack min/median/max $(printf '%s\n' "${attack[@]}" | stat3)"
    echo "after recovery: $after Mpps"
    echo "daemon:  baseline end -> after recovery"
    echo "  rss_kb     $RSS0 -> $RSS1"
    echo "  fds        $FDS0 -> $FDS1"
    echo "  threads    $THR0 -> $THR1"
    echo "  named maps $MAPS0 -> $MAPS1"
    echo "  pool free  $POOL0 -> $POOL1"
    echo "  tso free   $TSO0 -> $TSO1"
    echo "ports at the end:"
    "$WEIR" --socket "$CTRL" port list 2>&1 | sed 's/^/  /'
    if [ ${#fail[@]} -eq 0 ]; then echo "PASS"; else printf 'FAIL: %s\n' "${fail[@]}"; fi
} | tee "$OUT/summary.txt"
echo
column -t -s $'\t' "$OUT/samples.tsv" | cut -c1-160 | awk 'NR == 1 || NR % 5 == 2'
[ ${#fail[@]} -eq 0 ]
