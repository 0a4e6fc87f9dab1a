#!/usr/bin/env bash
# Soak: a running weir under a hostile tenant, for minutes to an hour.
#
#   one weir daemon, one worker (SOAK_SW_CPU), bridge br0 with
#     evil     vhost-user server port, driven by benches/src/bin/hostile-frontend.rs,
#              which cycles through every attack it knows (reconnect storm, closed
#              eventfds, a blocking call eventfd, indirect-table and zero-length
#              descriptor amplification, TSO with mss 1, fd floods, garbage)
#     flood    afpacket port on a veth into namespace weir-soak; mausezahn there
#              sends broadcast frames from random source MACs (an FDB flood)
#     vm1, vm2 vhost-user server ports with two QEMU guests on them, booted by
#              scripts/vm-pair.sh (guest from scripts/build-guest.sh): g1 pings g2
#              ten times a second for the whole run, reporting every 50 pings,
#              and every SOAK_VM_XFER_EVERY s fetches SOAK_VM_XFER_MB MB from g2
#              over HTTP and checks its md5
#     a, b     two healthy vhost-user ports added by `weir bench --socket`, which
#              forwards known-unicast traffic at a fixed rate between them
#
# Phases: boot (the guests start; g1 reaches g2), baseline (healthy traffic
# alone, SOAK_BASELINE_CHUNKS measurements), attack (attackers running, healthy
# traffic measured in chunks of SOAK_CHUNK s for --duration s), recovery
# (attackers stopped, SOAK_SETTLE s, one more measurement, and at least one
# more guest transfer). Every SOAK_INTERVAL s a sampler records the daemon's
# RSS, open fds, threads, mapped regions, free mbufs in both pools, FDB
# entries, and every port's link and counters. Each guest report is stamped
# with the phase it arrived in.
#
# Fails (exit 1) if
#   - a healthy measurement forwards less than 90 % of the baseline's median rate;
#   - the guests lose more than SOAK_VM_LOSS_PCT % of their pings in any phase,
#     a guest transfer fails its md5 check or does not finish, or vm1 or vm2 is
#     ever down or its rx or tx counter stands still through a phase;
#   - after recovery the daemon holds more fds, threads or named mappings (guest
#     memory files, hugepages, libraries) than at the end of the baseline, fewer
#     free mbufs (either pool), or its RSS grew by more than SOAK_RSS_SLACK_KB;
#   - the daemon died, or the evil port cannot serve a well-behaved frontend at
#     the end (one clean `reconnect` cycle of hostile-frontend).
#
# The offered rate (SOAK_RATE) is meant to sit well below what weir forwards,
# so that a lower rate under attack means harm done by the attacker and not a
# saturated worker. The worker's CPU is left to the worker: the attackers
# (nice 19) and the guests (QEMU, under TCG without KVM; nice SOAK_VM_NICE)
# run on the generator's CPU. The generator runs with `weir bench --catch-up`:
# frames that come due while it is off its CPU are sent on its return, so the
# offered rate is the same in every phase whatever CPU share the attackers and
# guests leave it (without it the generator skips those frames and sends in
# proportion to its share: 0.89 of the baseline on 2 vCPUs, with weir dropping
# under 0.1 %). Frames the worker does not take stay due; those still due at
# the end of a measurement count as not forwarded (`unsent`, healthy.tsv).
# The guests use about 8 % of a CPU over a run, including the flood's
# broadcasts, which reach them (weir has no storm control). Other load on the host
# counts too: with autogroup scheduling (sched_autogroup_enabled, the default),
# a busy process of another login session gets as much CPU as the whole soak, nice 19
# or not. The summary shows the CPU share the generator and the worker got.
#
# Usage: benches/soak.sh [--duration SECONDS] [--out DIR]   (root: namespaces, apt, QEMU)
# Environment (defaults in brackets):
#   SOAK_RATE [0.2mpps]  SOAK_CHUNK [10]  SOAK_BASELINE_CHUNKS [3]  SOAK_INTERVAL [2]
#   SOAK_SETTLE [5]  SOAK_SW_CPU [last CPU]  SOAK_GEN_CPU [0]  SOAK_FLOOD_GAP_US [100]
#   SOAK_RSS_SLACK_KB [16384]  WEIR_BIN [built with cargo]
#   SOAK_VMS [1] (0: no guests)  SOAK_VM_CPU [SOAK_GEN_CPU]  SOAK_VM_NICE [10]
#   SOAK_VM_XFER_MB [2]  SOAK_VM_XFER_EVERY [15]  SOAK_VM_LOSS_PCT [1]
# Output in DIR [/tmp/weir-soak]: samples.tsv (one line per sample), healthy.tsv
# (one line per measurement), guests.tsv (one line per guest report), soak.png
# (plot), hostile.log, weir.log, vm/ (guest consoles), summary.txt, and the
# daemon's maps and open fds at the end of the baseline and after recovery.
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
SOAK_VMS=${SOAK_VMS:-1}
SOAK_VM_CPU=${SOAK_VM_CPU:-$SOAK_GEN_CPU}
SOAK_VM_NICE=${SOAK_VM_NICE:-10}
SOAK_VM_XFER_MB=${SOAK_VM_XFER_MB:-2}
SOAK_VM_XFER_EVERY=${SOAK_VM_XFER_EVERY:-15}
SOAK_VM_LOSS_PCT=${SOAK_VM_LOSS_PCT:-1}
NS=weir-soak
VETH=wsoak-fl

die() { echo "soak.sh: $*" >&2; exit 1; }
log() { echo "[$(date +%T)] $*"; }

[ "$(id -u)" -eq 0 ] || die "needs root (network namespace, apt, QEMU)"
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
HOSTILE=$(build_bench_bin weir-benches hostile-frontend)
if [ "$SOAK_VMS" = 1 ]; then
    # Cached in target/vm-guest; installs QEMU on first use.
    "$root/scripts/build-guest.sh" >&2 || die "scripts/build-guest.sh failed"
fi

rm -rf "$OUT"; mkdir -p "$OUT"
CTRL="$OUT/weir.sock"
EVIL="$OUT/evil.sock"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    # vm-pair.sh stops its QEMUs on TERM.
    local p
    for p in ${VM_PID:-} ${WEIR_PID:-}; do
        kill -TERM "$p" 2>/dev/null || continue
        wait "$p" 2>/dev/null || true
    done
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
if [ "$SOAK_VMS" = 1 ]; then
    for vm in vm1 vm2; do
        printf '\n[[port]]\nname = "%s"\ntype = "vhost-user"\nsocket = "%s"\nbridge = "br0"\n' \
            "$vm" "$OUT/$vm.sock" >> "$OUT/weir.toml"
    done
fi

RUST_LOG=${RUST_LOG:-warn} "$WEIR" --socket "$CTRL" run --config "$OUT/weir.toml" \
    < /dev/null > "$OUT/weir.log" 2>&1 &
WEIR_PID=$!
for _ in $(seq 100); do
    "$WEIR" --socket "$CTRL" port list >/dev/null 2>&1 && break
    kill -0 "$WEIR_PID" 2>/dev/null || { tail -n 20 "$OUT/weir.log" >&2; die "weir exited at start"; }
    sleep 0.1
done
"$WEIR" --socket "$CTRL" port list >/dev/null || die "weir did not answer on $CTRL"

# One sample: time, RSS, fds, threads, maps, free mbufs, FDB size, per-port link and counters.
echo -e "t_s\tphase\trss_kb\tfds\tthreads\tmaps\tpool_free\ttso_free\tfdb\tports" > "$OUT/samples.tsv"
PHASE_FILE="$OUT/.phase"
T0=$(date +%s.%N)
elapsed() { awk -v now="$(date +%s.%N)" -v t0="$T0" 'BEGIN { printf "%.3f", now - t0 }'; }
phase() { echo "$1" > "$PHASE_FILE"; echo -e "$(elapsed)\t$1" >> "$OUT/phases.tsv"; }
phase boot
# One at a time (flock): the fds of a sample must not include another
# sample's control connection.
sample() {
    local t rss fds thr maps stats pool tso fdb ports
    exec 9> "$OUT/.sample.lock"
    flock 9
    t=$(elapsed)
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$WEIR_PID/status")
    fds=$(find "/proc/$WEIR_PID/fd" -mindepth 1 -maxdepth 1 | wc -l)
    thr=$(find "/proc/$WEIR_PID/task" -mindepth 1 -maxdepth 1 | wc -l)
    maps=$(wc -l < "/proc/$WEIR_PID/maps")
    stats=$("$WEIR" --socket "$CTRL" stats --json 2>/dev/null) || stats='{}'
    pool=$(jq -r '.mempool.available // "-"' <<< "$stats")
    tso=$(jq -r '.tso_pool.available // "-"' <<< "$stats")
    fdb=$("$WEIR" --socket "$CTRL" fdb show --json 2>/dev/null | jq 'length' 2>/dev/null || echo -)
    ports=$(jq -r '[.ports[]? | "\(.name):link=\(.link // "-"),rx=\(.stats.rx_packets // 0),tx=\(.stats.tx_packets // 0),drop=\([.stats.drops // {} | .[]?] | add // 0)"] | join(" ")' <<< "$stats" 2>/dev/null || echo -)
    echo -e "$t\t$(cat "$PHASE_FILE")\t$rss\t$fds\t$thr\t$maps\t$pool\t$tso\t$fdb\t$ports" >> "$OUT/samples.tsv"
    exec 9>&-
}
( while kill -0 "$WEIR_PID" 2>/dev/null; do sample; sleep "$SOAK_INTERVAL"; done ) &
PIDS+=($!)

# Guests: g1 pings g2 ten times a second and reports every 50 pings; every
# SOAK_VM_XFER_EVERY s it fetches a blob from g2 and checks its md5. Each
# report (a console line starting "WEIRVM:") is stamped on arrival with the
# time and the phase into guests.tsv.
echo -e "t_s\tphase\treport" > "$OUT/guests.tsv"
if [ "$SOAK_VMS" = 1 ]; then
    mkdir -p "$OUT/vm"
    cat > "$OUT/vm/g2.sh" <<EOF
ip link set eth0 up && ip addr add 198.18.0.2/24 dev eth0 || { echo "WEIRVM: no eth0"; exit 1; }
mkdir -p /www
dd if=/dev/urandom of=/www/blob bs=1M count=$SOAK_VM_XFER_MB 2>/dev/null
md5sum /www/blob | cut -d' ' -f1 > /www/blob.md5
httpd -p 8080 -h /www
echo "WEIRVM: g2 up md5=\$(cat /www/blob.md5)"
while :; do sleep 3600; done
EOF
    cat > "$OUT/vm/g1.sh" <<EOF
ip link set eth0 up && ip addr add 198.18.0.1/24 dev eth0 || { echo "WEIRVM: no eth0"; exit 1; }
tries=0
until ping -c 1 -W 1 198.18.0.2 > /dev/null 2>&1; do
  tries=\$((tries + 1))
  [ \$tries -lt 600 ] || { echo "WEIRVM: FAIL no ping reply"; exit 1; }
done
echo "WEIRVM: g1 up after \$tries tries"
while :; do
  ping -q -c 50 -i 0.1 -W 1 198.18.0.2 > /tmp/ping 2>&1
  sent=\$(sed -n 's/^\([0-9]*\) packets transmitted.*/\1/p' /tmp/ping)
  rx=\$(sed -n 's/.* \([0-9]*\) packets received.*/\1/p' /tmp/ping)
  echo "WEIRVM: ping sent=\${sent:-0} received=\${rx:-0} \$(grep round-trip /tmp/ping)"
done &
n=0
while :; do
  sleep $SOAK_VM_XFER_EVERY
  n=\$((n + 1))
  want=\$(timeout 20 wget -q -O - http://198.18.0.2:8080/blob.md5)
  t0=\$(cut -d' ' -f1 /proc/uptime)
  got=\$(timeout 60 wget -q -O - http://198.18.0.2:8080/blob | md5sum | cut -d' ' -f1)
  t1=\$(cut -d' ' -f1 /proc/uptime)
  ok=BAD; [ -n "\$want" ] && [ "\$want" = "\$got" ] && ok=ok
  echo "WEIRVM: xfer n=\$n \$ok ${SOAK_VM_XFER_MB}MB seconds=\$(echo "\$t1 \$t0" | awk '{print \$1 - \$2}') want=\${want:-none} got=\$got"
done
EOF
    # The deadline only bounds a run that was not stopped: cleanup ends it.
    nice -n "$SOAK_VM_NICE" taskset -c "$SOAK_VM_CPU" "$root/scripts/vm-pair.sh" \
        -t $((DURATION * 2 + 3600)) -w "$OUT/vm" --g1 "$OUT/vm/g1.sh" --g2 "$OUT/vm/g2.sh" \
        "$OUT/vm1.sock" "$OUT/vm2.sock" > "$OUT/vm-pair.log" 2>&1 &
    VM_PID=$!
    (
        con="$OUT/vm/g1.console.log" seen=0
        while kill -0 "$VM_PID" 2>/dev/null; do
            # Complete lines only: QEMU writes the console byte by byte.
            if [ -s "$con" ] && [ -z "$(tail -c 1 "$con")" ]; then
                mapfile -t new < <(tr -d '\r' < "$con" | grep -a '^WEIRVM:' | tail -n +$((seen + 1)))
                now=$(elapsed) phase=$(cat "$PHASE_FILE")
                for line in "${new[@]}"; do echo -e "$now\t$phase\t${line#WEIRVM: }"; done >> "$OUT/guests.tsv"
                seen=$((seen + ${#new[@]}))
            fi
            sleep 0.5
        done
    ) &
    PIDS+=($!)
    log "booting two guests on vm1, vm2 (QEMU at nice $SOAK_VM_NICE on CPU $SOAK_VM_CPU)"
    for _ in $(seq 600); do
        grep -q 'g1 up' "$OUT/guests.tsv" && break
        kill -0 "$VM_PID" 2>/dev/null || die "vm-pair.sh exited: $(tail -n 5 "$OUT/vm-pair.log")"
        sleep 0.5
    done
    grep -q 'g1 up' "$OUT/guests.tsv" || die "g1 did not reach g2 within 300 s (vm/g1.console.log)"
    log "guests up: $(tail -n 1 "$OUT/guests.tsv" | cut -f3)"
fi
# CPU seconds the guests' QEMUs have used so far.
guest_cpu_s() {
    local p ticks=0
    for p in $(pgrep -P "$VM_PID" qemu-system); do
        ticks=$((ticks + $(awk '{ print $14 + $15 }' "/proc/$p/stat")))
    done
    echo "$ticks $(getconf CLK_TCK)" | awk '{ printf "%.1f", $1 / $2 }'
}
if [ "$SOAK_VMS" = 1 ]; then
    GCPU0=$(guest_cpu_s) GT0=$(elapsed)
fi

# The daemon's open fds: number, target, and an eventfd's id (its inode is
# shared by all).
fd_list() {
    local f
    for f in "/proc/$WEIR_PID/fd/"*; do
        echo "${f##*/} $(readlink "$f") $(awk '/^eventfd-id/ { print "eventfd-id=" $2 }' "/proc/$WEIR_PID/fdinfo/${f##*/}" 2>/dev/null)"
    done | sort -n
}

# min median max of the numbers on stdin, three decimals.
stat3() {
    sort -n | awk '{ v[NR] = $1 } END {
        printf "%.3f %.3f %.3f\n", v[1], (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2, v[NR] }'
}

echo -e "t_s\tphase\tmpps\tloss_pct\tgen_cpu_pct\tworker_cpu_pct\tlate\tunsent" > "$OUT/healthy.tsv"
# One healthy measurement of SOAK_CHUNK seconds; prints the forwarded Mpps.
measure() {
    local phase=$1 json="$OUT/bench-$2.json" t mpps loss cpu late
    t=$(elapsed)
    taskset -c "$SOAK_GEN_CPU" "$WEIR" bench --socket "$CTRL" --bridge br0 --rate "$SOAK_RATE" \
        --catch-up --duration "$SOAK_CHUNK" --quiet --json "$json" --gen-cpu "$SOAK_GEN_CPU" \
        --worker-cpu "$SOAK_SW_CPU" >> "$OUT/bench.log" 2>&1 || die "weir bench failed (bench.log)"
    # Bench frames only: floods from the attackers reach the bench ports too
    # and are counted apart as foreign.
    mpps=$(jq -r '.runs[0].main | (.rx_frames - .foreign_frames) / .duration_s / 1e6' "$json")
    loss=$(jq -r '.runs[0].main.loss_pct' "$json")
    # CPU shares of the generator and the worker: below 100 % the host took
    # CPU time from them.
    cpu=$(jq -r '.runs[0].main | "\(.generator.cpu_share_pct // "-")\t\(.switch_cpu.cpu_share_pct // "-")"' "$json")
    # Frames sent late after the generator's stalls, and frames never sent.
    late=$(jq -r '.runs[0].main.loss | "\(.late)\t\(.unsent)"' "$json")
    echo -e "$t\t$phase\t$mpps\t$loss\t$cpu\t$late" >> "$OUT/healthy.tsv"
    echo "$mpps"
}

phase baseline
log "baseline: $SOAK_BASELINE_CHUNKS x ${SOAK_CHUNK}s at $SOAK_RATE without attackers"
base=()
for i in $(seq "$SOAK_BASELINE_CHUNKS"); do base+=("$(measure baseline "base$i")"); done
BASE=$(printf '%s\n' "${base[@]}" | stat3 | awk '{print $2}')
log "baseline median ${BASE} Mpps"
sample
read -r _ _ RSS0 FDS0 THR0 MAPS0 POOL0 TSO0 _ < <(tail -n 1 "$OUT/samples.tsv")
cp "/proc/$WEIR_PID/maps" "$OUT/maps-baseline.txt"
fd_list > "$OUT/fds-baseline.txt"

log "attack: ${DURATION}s (hostile frontend on evil, MAC flood from $NS)"
phase attack
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
phase recovery
sleep "$SOAK_SETTLE"
after=$(measure recovery after)
if [ "$SOAK_VMS" = 1 ]; then
    # At least one guest transfer and one ping report after the attack.
    for _ in $(seq $(((SOAK_VM_XFER_EVERY + 90) * 2))); do
        awk -F'\t' '$2 == "recovery" && $3 ~ /^xfer/ { x = 1 } $2 == "recovery" && $3 ~ /^ping/ { p = 1 }
            END { exit !(x && p) }' "$OUT/guests.tsv" && break
        sleep 0.5
    done
fi
"$HOSTILE" "$EVIL" 0.001 reconnect > "$OUT/final-connect.log" 2>&1
grep -q ' ok$' "$OUT/final-connect.log" || die "the evil port no longer serves a frontend: $(cat "$OUT/final-connect.log")"
sleep "$SOAK_INTERVAL"
[ "$SOAK_VMS" = 1 ] && GUEST_CPU=$(awk -v c0="$GCPU0" -v c1="$(guest_cpu_s)" -v t0="$GT0" -v t1="$(elapsed)" \
    'BEGIN { printf "%.0f %% of a CPU for both (%.0f s in %.0f s)", 100 * (c1 - c0) / (t1 - t0), c1 - c0, t1 - t0 }')
sample
read -r _ _ RSS1 FDS1 THR1 MAPS1 POOL1 TSO1 _ < <(tail -n 1 "$OUT/samples.tsv")
cp "/proc/$WEIR_PID/maps" "$OUT/maps-after.txt"
fd_list > "$OUT/fds-after.txt"
# Mappings with a name (guest memory files, hugepages, the binary and its
# libraries) must all be back. Anonymous ones are left to the RSS check: the C
# library keeps per-thread heaps (at most 8 per CPU) and the stacks of ended
# threads (up to 40 MiB) for reuse, so their count follows the peak number of
# threads, not a leak.
named() { awk '$6 != ""' "$1" | wc -l; }
MAPS0=$(named "$OUT/maps-baseline.txt"); MAPS1=$(named "$OUT/maps-after.txt")

# Per-port packet rates between samples (rx, tx, drops per second; vm1 and vm2
# also apart), and the guests' ping loss per report, for the plot.
awk -F'\t' 'NR > 1 {
    n = split($10, port, " ")
    for (i = 1; i <= n; i++) {
        split(port[i], kv, /[:=,]/)
        if (kv[1] in t0 && $1 > t0[kv[1]]) {
            dt = $1 - t0[kv[1]]
            printf "%s\t%s\t%.0f\t%.0f\t%.0f\n", $1, kv[1], (kv[5] - rx[kv[1]]) / dt, (kv[7] - tx[kv[1]]) / dt, (kv[9] - dr[kv[1]]) / dt
        }
        t0[kv[1]] = $1; rx[kv[1]] = kv[5]; tx[kv[1]] = kv[7]; dr[kv[1]] = kv[9]
    }
}' "$OUT/samples.tsv" > "$OUT/port-rates.tsv"
for vm in vm1 vm2; do awk -v vm=$vm '$2 == vm' "$OUT/port-rates.tsv" > "$OUT/rates-$vm.tsv"; done
awk -F'\t' '$3 ~ /^ping / { split($3, f, /[ =]/); if (f[3]) printf "%s\t%.1f\n", $1, 100 * (f[3] - f[5]) / f[3] }' \
    "$OUT/guests.tsv" > "$OUT/ping-loss.tsv"
rows=4; [ "$SOAK_VMS" = 1 ] && rows=6
gnuplot <<EOF 2>/dev/null || log "gnuplot failed; the data is in $OUT/*.tsv"
set terminal pngcairo size 1200,$((rows * 300))
set output "$OUT/soak.png"
set multiplot layout $rows,1 title "weir soak: healthy traffic at $SOAK_RATE with a hostile tenant"
set datafile separator "\t"
set key top left
set xlabel "seconds"
set xrange [0:$(elapsed)]
$(awk -F'\t' '$2 != "boot" { printf "set arrow from %s, graph 0 to %s, graph 1 nohead dashtype 2 lc rgb \"gray\"\nset label \"%s\" at %s, graph 0.08 offset 0.5, 0 tc rgb \"gray\"\n", $1, $1, $2, $1 }' "$OUT/phases.tsv")
set ylabel "healthy Mpps"
set yrange [0:*]
plot "$OUT/healthy.tsv" using 1:3 every ::1 with linespoints title "forwarded"
set autoscale y
unset label
set ylabel "count"
plot "$OUT/samples.tsv" using 1:4 every ::1 with lines title "fds", "" using 1:5 every ::1 with lines title "threads", "" using 1:6 every ::1 with lines title "mapped regions"
plot "$OUT/samples.tsv" using 1:9 every ::1 with lines title "fdb entries", "" using 1:7 every ::1 with lines title "free mbufs", "" using 1:8 every ::1 with lines title "free TSO mbufs"
set ylabel "KiB"
plot "$OUT/samples.tsv" using 1:3 every ::1 with lines title "RSS"
if ($SOAK_VMS) {
    set ylabel "packets/s"
    set logscale y
    plot "$OUT/rates-vm1.tsv" using 1:(\$3 + 1) with lines title "vm1 rx (from g1)", \\
         "" using 1:(\$4 + 1) with lines title "vm1 tx (to g1)", \\
         "$OUT/rates-vm2.tsv" using 1:(\$3 + 1) with lines title "vm2 rx (from g2)", \\
         "" using 1:(\$5 + 1) with lines title "vm2 drops (to g2)"
    unset logscale y
    set ylabel "ping loss %"
    set yrange [0:*]
    plot "$OUT/ping-loss.tsv" using 1:2 with impulses lw 3 lc rgb "red" notitle, "" using 1:2 with points pt 7 lc rgb "red" title "g1 -> g2 ping loss per 50 pings"
}
unset multiplot
EOF

cycles=$(grep -c '^cycle' "$OUT/hostile.log" || true)
fail=()
worst=$(printf '%s\n' "${attack[@]}" "$after" | sort -n | head -n 1)
awk -v w="$worst" -v b="$BASE" 'BEGIN { exit !(w >= 0.9 * b) }' ||
    fail+=("healthy rate fell to $worst Mpps, below 90 % of the baseline $BASE")
fd_kinds() { awk '{ print $2 }' "$1" | sed 's/[0-9]\+/N/g' | sort | uniq -c; }
[ "$FDS1" -le "$FDS0" ] ||
    fail+=("fds $FDS0 -> $FDS1 (more: $({ diff <(fd_kinds "$OUT/fds-baseline.txt") <(fd_kinds "$OUT/fds-after.txt") || true; } |
        sed -n 's/^> *//p' | paste -sd, -))")
[ "$THR1" -le "$THR0" ] || fail+=("threads $THR0 -> $THR1")
[ "$MAPS1" -le "$MAPS0" ] || fail+=("named mappings $MAPS0 -> $MAPS1")
[ "$POOL1" = "-" ] || [ "$POOL1" -ge "$POOL0" ] || fail+=("free mbufs $POOL0 -> $POOL1")
[ "$TSO1" = "-" ] || [ "$TSO0" = "-" ] || [ "$TSO1" -ge "$TSO0" ] || fail+=("free TSO mbufs $TSO0 -> $TSO1")
[ "$RSS1" -le $((RSS0 + SOAK_RSS_SLACK_KB)) ] || fail+=("RSS $RSS0 -> $RSS1 KiB")

# Guests: ping loss and transfers per phase; vm1 and vm2 up in every sample
# and their counters moving in every phase.
PHASES="baseline attack recovery"
if [ "$SOAK_VMS" = 1 ]; then
    guest_report=$(awk -F'\t' -v phases="$PHASES" -v max="$SOAK_VM_LOSS_PCT" '
        $3 ~ /^ping / {
            split($3, f, /[ =]/)   # ping sent N received M ...
            sent[$2] += f[3]; recv[$2] += f[5]; reports[$2]++
            if (f[3] - f[5] > worst[$2]) worst[$2] = f[3] - f[5]
        }
        $3 ~ /^xfer / {
            xfers[$2]++
            if ($3 ~ / ok /) { ok[$2]++; match($3, /seconds=[0-9.]+/); secs[$2] = secs[$2] " " substr($3, RSTART + 8, RLENGTH - 8) }
        }
        $3 ~ /^rc=|FAIL/ { print "FAIL g1: " $3 }
        END {
            n = split(phases, ph, " ")
            for (i = 1; i <= n; i++) {
                p = ph[i]; loss = sent[p] ? 100 * (sent[p] - recv[p]) / sent[p] : 100
                printf "%-9s pings %d/%d received, loss %.2f %% (worst report %d of 50 lost); transfers %d/%d verified, seconds:%s\n",
                    p, recv[p], sent[p], loss, worst[p], ok[p], xfers[p], secs[p]
                if (!sent[p]) print "FAIL no ping report in " p
                else if (loss > max) printf "FAIL ping loss %.2f %% in %s (above %s %%)\n", loss, p, max
                if (!xfers[p]) print "FAIL no guest transfer in " p
                else if (ok[p] < xfers[p]) printf "FAIL %d of %d guest transfers in %s failed their md5 check\n", xfers[p] - ok[p], xfers[p], p
            }
        }' "$OUT/guests.tsv")
    while read -r w rest; do if [ "$w" = FAIL ]; then fail+=("$rest"); fi; done <<< "$guest_report"
    vm_report=$(awk -F'\t' -v phases="$PHASES" '
        NR > 1 && index(" " phases " ", " " $2 " ") {
            n = split($10, port, " ")
            for (i = 1; i <= n; i++) {
                split(port[i], kv, /[:=,]/)   # name link L rx R tx T drop D
                if (kv[1] != "vm1" && kv[1] != "vm2") continue
                k = kv[1] SUBSEP $2
                if (kv[3] != "up") down[kv[1]]++
                if (!(k in rx0)) { rx0[k] = kv[5]; tx0[k] = kv[7] }
                else if ($1 - t[k] >= 1 && (kv[5] == rx[k] || kv[7] == tx[k])) still[kv[1]]++
                if (!(k in t) || $1 - t[k] >= 1) { rx[k] = kv[5]; tx[k] = kv[7]; t[k] = $1 }
                drop[kv[1]] = kv[9]; seen[kv[1]]++
            }
        }
        END {
            np = split(phases, ph, " ")
            for (v = 1; v <= 2; v++) {
                vm = "vm" v
                line = sprintf("%s: %d samples, down in %d, counters still for a second or more %d times; rx/tx per phase:", vm, seen[vm], down[vm], still[vm])
                for (i = 1; i <= np; i++) {
                    k = vm SUBSEP ph[i]
                    line = line sprintf(" %s +%d/+%d", ph[i], rx[k] - rx0[k], tx[k] - tx0[k])
                    if (!(k in rx0) || rx[k] == rx0[k] || tx[k] == tx0[k]) bad = bad "\nFAIL " vm " counters stood still through " ph[i]
                }
                print line sprintf("; drops %d", drop[vm])
                if (!seen[vm]) bad = bad "\nFAIL " vm " missing from the samples"
                if (down[vm]) bad = bad sprintf("\nFAIL %s down in %d samples", vm, down[vm])
            }
            if (bad != "") print substr(bad, 2)
        }' "$OUT/samples.tsv")
    while read -r w rest; do if [ "$w" = FAIL ]; then fail+=("$rest"); fi; done <<< "$vm_report"
fi

{
    echo "weir soak, $(date -u +%FT%TZ), ${DURATION}s of attack, healthy traffic at $SOAK_RATE"
    echo "attack cycles run: $cycles ($(awk '{print $4}' "$OUT/hostile.log" | sort | uniq -c | tr -s ' ' | paste -sd, -))"
    echo "healthy Mpps: baseline median $BASE (${base[*]}); under attack min/median/max $(printf '%s\n' "${attack[@]}" | stat3)"
    echo "after recovery: $after Mpps"
    echo "CPU share of the generator / the worker, min over the measurements: $(awk -F'\t' 'NR > 1 {
        if (g == "" || $5 < g) g = $5; if (w == "" || $6 < w) w = $6 } END { printf "%.0f %% / %.0f %%", g, w }' "$OUT/healthy.tsv")"
    echo "generator frames sent late after its stalls / due but never sent, all measurements: $(awk -F'\t' 'NR > 1 {
        l += $7; u += $8 } END { printf "%d / %d", l, u }' "$OUT/healthy.tsv")"
    if [ "$SOAK_VMS" = 1 ]; then
        echo "guests (g1 -> g2, ${SOAK_VM_XFER_MB} MB transfers every ${SOAK_VM_XFER_EVERY}s; QEMU used $GUEST_CPU):"
        grep -v '^FAIL' <<< "$guest_report" | sed 's/^/  /'
        grep -v '^FAIL' <<< "$vm_report" | sed 's/^/  /'
    fi
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
# Every fifth sample: the daemon, then every port's rx/tx/drops (k = 1e3, M = 1e6).
cut -f1-9 "$OUT/samples.tsv" | awk 'NR == 1 || NR % 5 == 2' | column -t -s $'\t'
echo
awk -F'\t' '
    function k(n) { return n >= 1e7 ? sprintf("%.0fM", n / 1e6) : n >= 1e4 ? sprintf("%.0fk", n / 1e3) : n }
    NR > 1 && NR % 5 == 2 {
        rows++; t[rows] = $1; ph[rows] = $2
        n = split($10, port, " ")
        for (i = 1; i <= n; i++) {
            split(port[i], kv, /[:=,]/)
            sub(/-[0-9]+$/, "", kv[1])   # bench-a-PID: one column for every measurement
            if (!(kv[1] in col)) { col[kv[1]] = ++ncol; name[ncol] = kv[1] }
            cell[rows, col[kv[1]]] = k(kv[5]) "/" k(kv[7]) "/" k(kv[9])
        }
    }
    END {
        printf "t_s\tphase"; for (c = 1; c <= ncol; c++) printf "\t%s rx/tx/drop", name[c]; print ""
        for (r = 1; r <= rows; r++) {
            printf "%.0f\t%s", t[r], ph[r]
            for (c = 1; c <= ncol; c++) printf "\t%s", ((r, c) in cell) ? cell[r, c] : "-"
            print ""
        }
    }' "$OUT/samples.tsv" | column -t -s $'\t'
[ ${#fail[@]} -eq 0 ]
