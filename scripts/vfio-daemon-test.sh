#!/usr/bin/env bash
# Runs the weir daemon inside a QEMU guest on two NICs it drives through VFIO,
# forwarding between two NICs driven by the guest kernel:
#
#   netns A: e1000 (kernel, 10.99.0.1) -- hub0 -- e1000e (weir, vfio) ]
#                                                                     ] bridge br0
#   netns B: e1000 (kernel, 10.99.0.2) -- hub1 -- virtio-net (weir, vfio) ]
#
# q35 TCG guest with an Intel vIOMMU (intel_iommu=on); the virtio-net NIC is
# modern-only with iommu_platform=on and mq=on. The guest binds the weir NICs to
# vfio-pci with `weir devbind`, runs `weir run`, pings both ways and fetches a
# file over TCP (busybox httpd/wget) in each direction, comparing checksums. It
# also feeds weir bad input and checks each is refused with a clear message
# while the running ports keep forwarding:
#   * a malformed config (`weir config check`, `weir run`);
#   * `weir run` while the virtio NIC is still bound to its kernel driver;
#   * `weir run` with a PCI address that does not exist;
#   * `weir port add` (running daemon) of a wrong PCI address, of an unsupported
#     device (an rtl8139 10ec:8139 bound to vfio-pci), of a device bound to its
#     kernel driver (the kernel e1000 NIC A's id is refused first), of a NIC one
#     of the daemon's ports already drives; and a second `weir run` on the same
#     NICs; more queue pairs than the NIC has.
# Then it removes and adds the ports at run time and checks traffic again.
#
#   scripts/vfio-daemon-test.sh [--no-build | --bin PATH] [--guest-dir DIR] [--keep]
#                               [--timeout SEC] [--xfer KB]
#
# --bin uses an already built weir (the weir integration test passes the one
# cargo built); --no-build takes it from the target dir.
#
# PASS needs all of:
#   * every guest step printed `WEIR-GUEST: ok ...` and the script ended rc=0;
#   * the counters weir reports (`weir port list --json`, copied to the host)
#     moved on both vfio ports, in and out;
#   * QEMU's filter-dump of each weir NIC's netdev (pcaps on the host) holds the
#     ICMP echo requests and replies between 10.99.0.1 and 10.99.0.2 and the TCP
#     segments of both transfers, with the kernel NICs' MAC addresses, i.e. the
#     frames weir forwarded from one hub to the other.
# Needs root (9p shares, QEMU), qemu-system-x86, tcpdump, and what
# scripts/vfio-guest/build.sh needs. TCG only; a few minutes on a loaded 2-core
# host. The guest is cached as for scripts/vfio-guest-test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/vfio-guest/lib.sh
. scripts/vfio-guest/lib.sh

build=1 keep=0 timeout=420 xfer_kb=512 bin='' guest=''
vfio_args --xfer KB xfer_kb "$@"
say() { echo "vfio-daemon-test: $*"; }

for tool in qemu-system-x86_64 tcpdump ldd; do
  command -v "$tool" >/dev/null || { say "$tool missing (scripts/setup.sh installs it)"; exit 1; }
done
vfio_prepare weir -p weir

work=$(mktemp -d /tmp/weir-vfio-daemon.XXXXXX)
mkdir -p "$work/share/lib" "$work/out"
# weir is linked against the host's glibc (and libelf/zlib for AF_XDP): ship
# the host's own copies and start it through the host's dynamic loader, so the
# guest's libraries do not have to match.
cp "$bin" "$work/share/weir.bin"
loader=''
while read -r lib; do
  cp -L "$lib" "$work/share/lib/"
  case $lib in */ld-linux*) loader=$(basename "$lib") ;; esac
done < <(ldd "$bin" | grep -o '/[^ ]*')
[ -n "$loader" ] || { say "no dynamic loader in ldd $bin"; exit 1; }
cat > "$work/share/weir" <<EOF
#!/bin/sh
exec /mnt/weir/lib/$loader --library-path /mnt/weir/lib /mnt/weir/weir.bin "\$@"
EOF
chmod +x "$work/share/weir"

{ echo "XFER_KB=$xfer_kb"; cat; } > "$work/guest.sh" <<'EOF'
set -u
export NO_COLOR=1
weir() { /mnt/weir/weir --socket /tmp/weir.sock "$@"; }
say() { echo "WEIR-GUEST: $*"; }
fail() { say "FAIL $*"; exit 1; }
E1000E=0000:00:01.0 VIRTIO=0000:00:02.0 KNIC_A=0000:00:03.0 RTL=0000:00:05.0
mkdir -p /mnt/out
mount -t 9p -o trans=virtio,version=9p2000.L weirout /mnt/out || fail "no output share"
# expect_err NAME PATTERN CMD...: CMD must fail and its output match PATTERN.
expect_err() {
  name=$1 pat=$2; shift 2
  if "$@" > /tmp/err.txt 2>&1; then cat /tmp/err.txt; fail "$name: accepted"; fi
  grep -q -- "$pat" /tmp/err.txt || { cat /tmp/err.txt; fail "$name: no '$pat' in the error"; }
  # Tearing down what a failed start had opened must be quiet too.
  grep -E 'WARN|ERROR' /tmp/err.txt && fail "$name: warnings on the way out"
  say "ok $name refused: $(grep -m1 '^weir: ' /tmp/err.txt || grep -m1 -- "$pat" /tmp/err.txt)"
}

# The kernel NICs (e1000, found by MAC) go to namespaces A and B.
ifa='' ifb=''
for n in /sys/class/net/*; do
  case $(cat "$n/address") in
    52:54:00:00:0a:01) ifa=${n##*/} ;;
    52:54:00:00:0b:01) ifb=${n##*/} ;;
  esac
done
[ -n "$ifa" ] && [ -n "$ifb" ] || { ls /sys/class/net; fail "kernel e1000 NICs not found"; }
unshare -n sleep 100000 & nsa=$!
unshare -n sleep 100000 & nsb=$!
# Until unshare has run, the pids are still in this namespace.
root_ns=$(readlink /proc/self/ns/net) i=0
while [ "$(readlink /proc/$nsa/ns/net)" = "$root_ns" ] || [ "$(readlink /proc/$nsb/ns/net)" = "$root_ns" ]; do
  i=$((i + 1)); [ $i -lt 100 ] || fail "network namespaces not created"
  sleep 0.2
done
A() { nsenter -t $nsa -n "$@"; }
B() { nsenter -t $nsb -n "$@"; }
ip link set "$ifa" netns $nsa && ip link set "$ifb" netns $nsb || fail "moving NICs to namespaces"
A ip addr add 10.99.0.1/24 dev "$ifa"; A ip link set lo up; A ip link set "$ifa" up
B ip addr add 10.99.0.2/24 dev "$ifb"; B ip link set lo up; B ip link set "$ifb" up
say "ok namespaces: A $ifa 10.99.0.1, B $ifb 10.99.0.2"

cat > /tmp/guest.toml <<TOML
[dataplane]
workers = "0"
mbufs = 2048
hugepages = "required"
idle_sleep_us = 200

[[bridge]]
name = "br0"

[[port]]
name = "nic0"
type = "vfio"
pci = "$E1000E"
bridge = "br0"

[[port]]
name = "nic1"
type = "vfio"
pci = "$VIRTIO"
bridge = "br0"
TOML
# The mbuf pool of each run (no vhost-user port, so no pool of 64 KiB TSO
# buffers), and a second run that must fail quietly: room for both, with slack.
echo 40 > /proc/sys/vm/nr_hugepages

# Bad input before the daemon runs.
printf '[dataplane]\nmbufs = 2048\n[[port]]\nname = "nic0"\ntype = "vfio"\npci = "0000:00:01.0\n' > /tmp/bad.toml
expect_err "malformed config (config check)" "bad.toml" weir config check /tmp/bad.toml
expect_err "malformed config (run)" "bad.toml" weir run --config /tmp/bad.toml
sed 's/^pci = "0000:00:01.0"/pci = "0000:00:1f.7"/' /tmp/guest.toml > /tmp/nodev.toml
expect_err "run with a wrong PCI address" "0000:00:1f.7 not found" weir run --config /tmp/nodev.toml
expect_err "run with the e1000e bound to no driver" "0000:00:01.0 is bound to no driver" \
  weir run --config /tmp/guest.toml
weir devbind --list | sed 's/^/WEIR-GUEST: devbind: /'
for bdf in $E1000E $RTL; do
  weir devbind "$bdf" | sed 's/^/WEIR-GUEST: /' || fail "devbind $bdf"
done
# nic0 opens now; nic1 fails, and nic0 must be released again for the real run.
expect_err "run with the virtio NIC bound to its kernel driver" "0000:00:02.0 is bound to virtio-pci" \
  weir run --config /tmp/guest.toml
[ -e /tmp/weir.sock ] && fail "a failed weir run left its control socket"
weir devbind $VIRTIO | sed 's/^/WEIR-GUEST: /' || fail "devbind $VIRTIO"
weir doctor --config /tmp/guest.toml > /tmp/doctor.txt 2>&1; rc=$?
sed 's/^/WEIR-GUEST: doctor: /' /tmp/doctor.txt
[ $rc = 0 ] || fail "weir doctor exited $rc"

# Not through the shell function: $! must be weir itself, for the signal.
/mnt/weir/weir --socket /tmp/weir.sock run --config /tmp/guest.toml > /mnt/out/weir.log 2>&1 &
wpid=$!
i=0
until weir stats > /dev/null 2>&1; do
  kill -0 $wpid 2>/dev/null || { cat /mnt/out/weir.log; fail "weir run exited"; }
  i=$((i + 1)); [ $i -lt 120 ] || fail "weir run did not come up"
  sleep 1
done
grep -E 'port up|port added' /mnt/out/weir.log | sed 's/^/WEIR-GUEST: /'
say "ok weir run up (pid $wpid)"

# ping_ok NS DST: the first pings may be lost while ARP and the bridge learn.
ping_ok() {
  i=0
  until $1 ping -c 1 -W 3 "$2" > /dev/null 2>&1; do
    i=$((i + 1)); [ $i -lt 20 ] || return 1
  done
  $1 ping -c 5 -W 5 "$2" > /tmp/ping.txt 2>&1 || { cat /tmp/ping.txt; return 1; }
  grep -q ' 0% packet loss' /tmp/ping.txt || { cat /tmp/ping.txt; return 1; }
}
ping_ok A 10.99.0.2 || fail "ping A -> B"
say "ok ping A -> B: $(grep -o '[0-9]* packets transmitted.*' /tmp/ping.txt)"
ping_ok B 10.99.0.1 || fail "ping B -> A"
say "ok ping B -> A: $(grep -o '[0-9]* packets transmitted.*' /tmp/ping.txt)"

# TCP: each namespace serves a file with a known pattern (busybox httpd), the
# other fetches it; the checksums must match.
mkdir -p /tmp/wwwA /tmp/wwwB
awk -v kb="$XFER_KB" 'BEGIN { for (i = 0; i < kb * 16; i++) printf "weir-vfio-tcp %015d %32s\n", i, "A" }' > /tmp/wwwA/blob
awk -v kb="$XFER_KB" 'BEGIN { for (i = 0; i < kb * 16; i++) printf "weir-vfio-tcp %015d %32s\n", i, "B" }' > /tmp/wwwB/blob
A httpd -p 10.99.0.1:80 -h /tmp/wwwA
B httpd -p 10.99.0.2:80 -h /tmp/wwwB
xfer() { # NS URL SRC
  rm -f /tmp/got
  case $1 in A) pid=$nsa ;; *) pid=$nsb ;; esac
  # busybox wget -T is broken in bookworm; bound it with timeout instead.
  timeout 120 nsenter -t $pid -n wget -q -O /tmp/got "$2" || return 1
  want=$(md5sum < "$3" | cut -d' ' -f1) got=$(md5sum < /tmp/got | cut -d' ' -f1)
  say "xfer $2: $(wc -c < /tmp/got) bytes md5 $got (want $want)"
  [ "$want" = "$got" ]
}
xfer A http://10.99.0.2/blob /tmp/wwwB/blob || fail "TCP transfer B -> A"
say "ok TCP B -> A verified"
xfer B http://10.99.0.1/blob /tmp/wwwA/blob || fail "TCP transfer A -> B"
say "ok TCP A -> B verified"

# Bad input to the running daemon: each refused, nothing else disturbed.
expect_err "port add with a wrong PCI address" "not found" \
  weir port add bad0 --type vfio --pci 0000:00:1e.0 --bridge br0
expect_err "port add with a malformed PCI address" "invalid PCI address" \
  weir port add bad1 --type vfio --pci 00:zz.0 --bridge br0
expect_err "port add of an unsupported device (rtl8139 on vfio-pci)" "10ec:8139" \
  weir port add bad2 --type vfio --pci $RTL --bridge br0
expect_err "port add of a kernel-driven NIC (e1000)" "8086:100e" \
  weir port add bad3 --type vfio --pci $KNIC_A --bridge br0
expect_err "port add of a NIC a port already drives" "already" \
  weir port add bad4 --type vfio --pci $VIRTIO --bridge br0
expect_err "second weir run on the same NICs" "already open" \
  /mnt/weir/weir --socket /tmp/weir2.sock run --config /tmp/guest.toml
weir port list | grep -q bad && fail "a refused port is listed"
kill -0 $wpid || fail "weir run died"
ping_ok A 10.99.0.2 || fail "ping A -> B after the bad input"
say "ok ping A -> B after the bad input: $(grep -o '[0-9]* packets transmitted.*' /tmp/ping.txt)"
xfer B http://10.99.0.1/blob /tmp/wwwA/blob || fail "TCP transfer after the bad input"
say "ok TCP after the bad input verified"

weir port list --json > /mnt/out/ports.json || fail "port list"
weir stats | sed 's/^/WEIR-GUEST: stats: /'

# Ports removed and added at run time: the virtio NIC alone (its group leaves
# the container while the e1000e's stays), then both (the container empties),
# the last one added by its short PCI address.
weir port del nic1 || fail "port del nic1"
# The hub gives the NIC one queue pair; the refused open leaves the device
# FAILED, which the next open's reset must clear.
expect_err "port add with more queue pairs than the NIC has" "supports 1 queue pair(s); 4 requested" \
  weir port add nic1 --type vfio --pci $VIRTIO --queues 4 --bridge br0
weir port add nic1 --type vfio --pci $VIRTIO --bridge br0 || fail "port add nic1"
ping_ok A 10.99.0.2 || fail "ping A -> B after re-adding nic1"
say "ok ping A -> B after re-adding nic1: $(grep -o '[0-9]* packets transmitted.*' /tmp/ping.txt)"
weir port del nic0 && weir port del nic1 || fail "port del nic0, nic1"
weir port add nic0 --type vfio --pci $E1000E --bridge br0 || fail "port add nic0"
weir port add nic1 --type vfio --pci 00:02.0 --bridge br0 || fail "port add nic1 by 00:02.0"
ping_ok B 10.99.0.1 || fail "ping B -> A after re-adding both ports"
say "ok ping B -> A after re-adding both ports: $(grep -o '[0-9]* packets transmitted.*' /tmp/ping.txt)"
xfer A http://10.99.0.2/blob /tmp/wwwB/blob || fail "TCP transfer after re-adding both ports"
say "ok TCP after re-adding both ports verified"

weir port list --json > /mnt/out/ports-readded.json || fail "port list"
weir port list | sed 's/^/WEIR-GUEST: ports: /'
kill -INT $wpid
i=0
while kill -0 $wpid 2>/dev/null; do
  i=$((i + 1)); [ $i -lt 60 ] || fail "weir run still running 60 s after SIGINT"
  sleep 1
done
wait $wpid; rc=$?
[ $rc = 0 ] || fail "weir run exited $rc on SIGINT"
tail -n 3 /mnt/out/weir.log | sed 's/^/WEIR-GUEST: /'
grep -E 'WARN|ERROR' /mnt/out/weir.log && fail "warnings in the daemon's log"
say "ok weir run stopped"
sync
umount /mnt/out
EOF

# The NICs have fixed PCI slots (the guest script names them); the 9p shares
# come after them and take the next free ones.
vfio_boot 768 \
  -netdev hubport,id=ka,hubid=0 -netdev hubport,id=wa,hubid=0 \
  -netdev hubport,id=wb,hubid=1 -netdev hubport,id=kb,hubid=1 \
  -device e1000e,netdev=wa,mac=52:54:00:00:0e:01,addr=0x1,romfile= \
  -device virtio-net-pci,netdev=wb,mac=52:54:00:00:0e:02,addr=0x2,disable-legacy=on,iommu_platform=on,mq=on,romfile= \
  -device e1000,netdev=ka,mac=52:54:00:00:0a:01,addr=0x3,romfile= \
  -device e1000,netdev=kb,mac=52:54:00:00:0b:01,addr=0x4,romfile= \
  -device rtl8139,mac=52:54:00:00:0c:01,addr=0x5,romfile= \
  -object "filter-dump,id=dumpa,netdev=wa,file=$work/hub0.pcap" \
  -object "filter-dump,id=dumpb,netdev=wb,file=$work/hub1.pcap" \
  -virtfs "local,path=$work/share,mount_tag=weir,security_model=none,readonly=on" \
  -virtfs "local,path=$work/out,mount_tag=weirout,security_model=none"

vfio_guest_result 'WEIR-GUEST|Error|error|panicked'

# weir's own counters, from the guest: after the first run of traffic, and on
# the ports added again at run time.
counters() { # FILE MIN
  [ -s "$work/out/$1" ] || { say "no $1 from the guest"; ok=0; return; }
  for port in nic0 nic1; do
    line=$(tr -d ' \n' < "$work/out/$1" | grep -o "\"name\":\"$port\"[^]]*" | head -n1)
    rx=$(echo "$line" | grep -o '"rx_packets":[0-9]*' | head -n1 | cut -d: -f2)
    tx=$(echo "$line" | grep -o '"tx_packets":[0-9]*' | head -n1 | cut -d: -f2)
    say "$1: weir port $port: rx_packets=${rx:-?} tx_packets=${tx:-?}"
    [ "${rx:-0}" -ge "$2" ] && [ "${tx:-0}" -ge "$2" ] || ok=0
  done
}
counters ports.json 100
counters ports-readded.json 10

# The frames on the wire, as QEMU saw them at each weir NIC.
count() { tcpdump -nn -r "$1" "$2" 2>/dev/null | wc -l; }
for hub in hub0 hub1; do
  f=$work/$hub.pcap
  [ -s "$f" ] || { say "no $f"; ok=0; continue; }
  req=$(count "$f" 'ether src 52:54:00:00:0a:01 and icmp[icmptype] = icmp-echo and src 10.99.0.1 and dst 10.99.0.2')
  rep=$(count "$f" 'ether src 52:54:00:00:0b:01 and icmp[icmptype] = icmp-echoreply and src 10.99.0.2 and dst 10.99.0.1')
  req2=$(count "$f" 'ether src 52:54:00:00:0b:01 and icmp[icmptype] = icmp-echo and src 10.99.0.2')
  tab=$(count "$f" 'ether src 52:54:00:00:0a:01 and tcp and src 10.99.0.1 and dst 10.99.0.2')
  tba=$(count "$f" 'ether src 52:54:00:00:0b:01 and tcp and src 10.99.0.2 and dst 10.99.0.1')
  pat=$(grep -ac 'weir-vfio-tcp' "$f" || true)
  say "host pcap $hub: ICMP echo A->B $req, reply B->A $rep, echo B->A $req2; TCP A->B $tab, B->A $tba segments; $pat frame(s) with the transfer pattern"
  [ "$req" -ge 10 ] && [ "$rep" -ge 10 ] && [ "$req2" -ge 5 ] && [ "$tab" -ge 20 ] && [ "$tba" -ge 20 ] && [ "$pat" -ge 20 ] || ok=0
done
vfio_finish "console.log qemu.log hub0.pcap hub1.pcap out/"
