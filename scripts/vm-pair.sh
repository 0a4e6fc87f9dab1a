#!/usr/bin/env bash
# vm-pair.sh [options] SOCK1 SOCK2
#
# Boots two tiny QEMU guests whose virtio-net NICs are vhost-user ports of a
# switch (weir) at the unix sockets SOCK1 and SOCK2, and checks traffic between
# them: g1 (198.18.0.1/24, MAC 52:54:00:00:00:01) pings g2 (198.18.0.2/24,
# MAC :02), fetches a random blob from g2's HTTP server and compares md5 sums,
# then runs iperf3 against g2.
#
#   --mode server   the switch listens on the sockets, QEMU connects (default)
#   --mode client   QEMU listens on the sockets, the switch connects
#   -g DIR          guest from build-guest.sh (default target/vm-guest; built if missing)
#   -w DIR          work dir for guest scripts and logs (default: a new temp dir,
#                   removed on PASS)
#   -t SEC          deadline for the whole run (default 120)
#   --xfer MB       size of the md5-checked transfer (default 4)
#   --iperf SEC     iperf3 duration (default 3; 0 = no iperf3)
#   --mem-path DIR  back guest RAM with files in DIR, e.g. a hugetlbfs mount such
#                   as /dev/hugepages (default: memfd)
#   --smp N         vCPUs per guest (default 1)
#   --queues N      queue pairs per NIC (default 1); N > 1 turns on virtio-net
#                   multiqueue, and the guest enables min(N, vCPUs) pairs
#   --host-mtu N    give both NICs QEMU's host_mtu=N (VIRTIO_NET_F_MTU; QEMU
#                   tells the switch with VHOST_USER_NET_SET_MTU)
#   --g1 FILE, --g2 FILE  run these guest scripts instead of the built-in ones
#   --one           boot g1 alone, on SOCK1 (give one socket): its peer is not
#                   a guest (for example a network namespace on a kernel port);
#                   use with --g1
#
# Each guest: q35, 1 vCPU (--smp), 256 MB of shared memory (vhost-user needs the switch to
# map it), -nodefaults (no other NIC), console on WORKDIR/gN.console.log. Lines the
# guests print starting with "WEIRVM:" are echoed as results.
# Exit status 0 (PASS) iff g1's script exits 0 before the deadline. All QEMU
# processes are killed on exit, also on SIGINT/SIGTERM.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODE=server GDIR=$ROOT/target/vm-guest W="" DEADLINE=120 XFER=4 IPERF=3 MEMPATH="" G1="" G2=""
SMP=1 QUEUES=1 HOST_MTU="" ONE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --mode) MODE=$2; shift 2 ;;
    -g) GDIR=$2; shift 2 ;;
    -w) W=$2; shift 2 ;;
    -t) DEADLINE=$2; shift 2 ;;
    --xfer) XFER=$2; shift 2 ;;
    --iperf) IPERF=$2; shift 2 ;;
    --mem-path) MEMPATH=$2; shift 2 ;;
    --smp) SMP=$2; shift 2 ;;
    --queues) QUEUES=$2; shift 2 ;;
    --host-mtu) HOST_MTU=$2; shift 2 ;;
    --g1) G1=$2; shift 2 ;;
    --g2) G2=$2; shift 2 ;;
    --one) ONE=1; shift ;;
    -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "vm-pair: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
if [ $ONE = 1 ]; then
  [ $# -eq 1 ] || { echo "usage: vm-pair.sh --one [options] SOCK1 (--help)" >&2; exit 2; }
  [ -n "$G1" ] || { echo "vm-pair: --one needs --g1 (the built-in g1 talks to g2)" >&2; exit 2; }
  SOCK1=$1 SOCK2=""
else
  [ $# -eq 2 ] || { echo "usage: vm-pair.sh [options] SOCK1 SOCK2 (--help)" >&2; exit 2; }
  SOCK1=$1 SOCK2=$2
fi
case "$MODE" in server | client) ;; *) echo "vm-pair: --mode server|client" >&2; exit 2 ;; esac
case "$SMP$QUEUES$HOST_MTU" in *[!0-9]*) echo "vm-pair: --smp, --queues and --host-mtu take numbers" >&2; exit 2 ;; esac

say() { echo "vm-pair: $*"; }
if [ ! -s "$GDIR/vmlinux" ] || [ ! -s "$GDIR/initrd.img" ]; then
  "$ROOT/scripts/build-guest.sh" "$GDIR" >&2 || exit 1
fi
OWN_W=0
if [ -z "$W" ]; then W=$(mktemp -d /tmp/weir-vm-pair.XXXXXX); OWN_W=1; fi
mkdir -p "$W"
W=$(cd "$W" && pwd)

# KVM only where it really works (a CPU with vmx/svm); otherwise TCG. QEMU 7.2
# crashes under TCG when a vhost-user virtio-net-pci NIC uses MSI-X (the vhost
# start path wants KVM irqfds), so under TCG the NIC gets legacy INTx: vectors=0.
if [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo; then
  ACCEL=(-accel kvm -cpu host) NIC_EXTRA=""
else
  ACCEL=(-accel tcg -cpu max) NIC_EXTRA=",vectors=0"
fi
# Multiqueue: the netdev opens QUEUES pairs on the socket (vhost-user MQ), the
# device offers them with a control queue (VIRTIO_NET_F_MQ, CTRL_VQ).
NETDEV_EXTRA="" MQ_EXTRA=""
if [ "$QUEUES" -gt 1 ]; then NETDEV_EXTRA=",queues=$QUEUES" MQ_EXTRA=",mq=on"; fi
if [ -n "$HOST_MTU" ]; then NIC_EXTRA="$NIC_EXTRA,host_mtu=$HOST_MTU"; fi

# --- guest scripts ------------------------------------------------------------
if [ -z "$G2" ]; then
  G2=$W/g2.sh
  cat > "$G2" <<EOF
mkdir -p /www
dd if=/dev/urandom of=/www/blob bs=1M count=$XFER 2>/dev/null
md5sum /www/blob | cut -d' ' -f1 > /www/blob.md5
httpd -p 8080 -h /www
[ $IPERF -gt 0 ] && iperf3 -s -D
ip link set eth0 up && ip addr add 198.18.0.2/24 dev eth0 || { echo "WEIRVM: no eth0"; exit 1; }
echo "WEIRVM: g2 serving md5=\$(cat /www/blob.md5) up=\$(cut -d' ' -f1 /proc/uptime)"
# stay up until g1 is done
timeout $DEADLINE nc -l -p 7777 < /dev/null > /dev/null
EOF
fi
if [ -z "$G1" ]; then
  G1=$W/g1.sh
  cat > "$G1" <<EOF
ip link set eth0 up && ip addr add 198.18.0.1/24 dev eth0 || { echo "WEIRVM: no eth0"; exit 1; }
tries=0
until ping -c 1 -W 1 198.18.0.2 > /dev/null 2>&1; do
  tries=\$((tries + 1))
  [ \$tries -lt $DEADLINE ] || { echo "WEIRVM: FAIL no ping reply"; exit 1; }
done
echo "WEIRVM: first reply after \$tries tries up=\$(cut -d' ' -f1 /proc/uptime)"
# Negotiated virtio features, bit 0 first (CSUM is bit 0, GUEST_CSUM 1, MTU 3).
echo "WEIRVM: virtio features=\$(cat /sys/class/net/eth0/device/features 2>/dev/null) mtu=\$(cat /sys/class/net/eth0/mtu)"
fail=0
ping -c 5 -i 0.2 -W 2 198.18.0.2 > /tmp/ping 2>&1
rx=\$(sed -n 's/.* \([0-9]*\) packets received.*/\1/p' /tmp/ping)
echo "WEIRVM: ping received \${rx:-0}/5 \$(grep round-trip /tmp/ping)"
[ "\${rx:-0}" -gt 0 ] || fail=1
want=\$(timeout 20 wget -q -O - http://198.18.0.2:8080/blob.md5)
t0=\$(cut -d' ' -f1 /proc/uptime)
got=\$(timeout 60 wget -q -O - http://198.18.0.2:8080/blob | md5sum | cut -d' ' -f1)
t1=\$(cut -d' ' -f1 /proc/uptime)
echo "WEIRVM: xfer ${XFER}MB want=\${want:-none} got=\$got seconds=\$(echo "\$t1 \$t0" | awk '{print \$1 - \$2}')"
[ -n "\$want" ] && [ "\$want" = "\$got" ] || fail=1
if [ $IPERF -gt 0 ]; then
  timeout $((IPERF + 20)) iperf3 -c 198.18.0.2 -t $IPERF -f m > /tmp/iperf 2>&1
  rate=\$(awk '/receiver/ {print \$(NF-2), \$(NF-1)}' /tmp/iperf | tail -n 1)
  echo "WEIRVM: iperf3 \${rate:-none}"
  [ -n "\$rate" ] || { cat /tmp/iperf; fail=1; }
fi
echo done | timeout 5 nc 198.18.0.2 7777
exit \$fail
EOF
fi

# --- guests -------------------------------------------------------------------
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 30); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
    wait "$p" 2>/dev/null
  done
  PIDS=()
  if [ "$MODE" = client ]; then rm -f "$SOCK1" "$SOCK2"; fi
}
trap 'cleanup; exit 130' INT TERM
trap cleanup EXIT

boot() { # NAME MAC SOCKET SCRIPT
  local name=$1 mac=$2 sock=$3 script=$4 mem chr
  if [ -n "$MEMPATH" ]; then
    mem=memory-backend-file,id=mem,size=256M,mem-path=$MEMPATH,share=on,prealloc=on
  else
    mem=memory-backend-memfd,id=mem,size=256M,share=on
  fi
  if [ "$MODE" = client ]; then chr=socket,id=vu,path=$sock,server=on,wait=off
  else chr=socket,id=vu,path=$sock,reconnect=1; fi
  rm -f "$W/$name.console.log"
  qemu-system-x86_64 -machine q35 "${ACCEL[@]}" -smp "$SMP" -m 256 \
    -object "$mem" -numa node,memdev=mem \
    -nodefaults -display none -monitor none -no-reboot \
    -kernel "$GDIR/vmlinux" -initrd "$GDIR/initrd.img" \
    -append "console=ttyS0 panic=-1 quiet mitigations=off weir.name=$name" \
    -serial "file:$W/$name.console.log" \
    -fw_cfg "name=opt/weir/script,file=$script" \
    -chardev "$chr" -netdev "vhost-user,id=n0,chardev=vu$NETDEV_EXTRA" \
    -device "virtio-net-pci,netdev=n0,mac=$mac,romfile=$MQ_EXTRA$NIC_EXTRA" \
    > "$W/$name.qemu.log" 2>&1 < /dev/null &
  PIDS+=($!)
}

wait_sockets() {
  local end=$(($(date +%s) + 30))
  until [ -S "$SOCK1" ] && { [ -z "$SOCK2" ] || [ -S "$SOCK2" ]; }; do
    [ "$(date +%s)" -lt $end ] || { say "sockets $SOCK1 $SOCK2 did not appear"; return 1; }
    sleep 0.1
  done
}

T0=$(date +%s.%N)
if [ "$MODE" = server ]; then
  wait_sockets || exit 1
else
  rm -f "$SOCK1" "$SOCK2"
fi
if [ $ONE = 0 ]; then boot g2 52:54:00:00:00:02 "$SOCK2" "$G2"; fi
boot g1 52:54:00:00:00:01 "$SOCK1" "$G1"
if [ "$MODE" = client ]; then wait_sockets || exit 1; fi
say "mode=$MODE smp=$SMP queues=$QUEUES guests ${PIDS[*]} (g1 last) workdir=$W"

end=$(($(date +%s) + DEADLINE))
for p in "${PIDS[@]}"; do
  while kill -0 "$p" 2>/dev/null && [ "$(date +%s)" -lt $end ]; do sleep 0.5; done
done
timed_out=0
for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && timed_out=1; done
cleanup
wall=$(echo "$(date +%s.%N) $T0" | awk '{printf "%.1f", $1 - $2}')

GUESTS="g1 g2"
[ $ONE = 1 ] && GUESTS=g1
for g in $GUESTS; do
  tr -d '\r' 2>/dev/null < "$W/$g.console.log" | grep -a '^WEIRVM:' | sed "s/^WEIRVM:/vm-pair: $g:/"
done
rc=$(tr -d '\r' < "$W/g1.console.log" 2>/dev/null | sed -n 's/^WEIRVM: rc=\([0-9]*\).*/\1/p' | tail -n 1)
if [ "$rc" = 0 ] && [ $timed_out = 0 ]; then
  say "PASS wall=${wall}s"
  [ $OWN_W = 1 ] && rm -rf "$W"
  exit 0
fi
say "FAIL wall=${wall}s g1_rc=${rc:-none} timed_out=$timed_out; logs in $W"
exit 1
