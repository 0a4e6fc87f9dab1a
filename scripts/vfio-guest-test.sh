#!/usr/bin/env bash
# Runs weir's VFIO drivers against real (emulated) hardware: a QEMU q35 guest
# with an Intel vIOMMU, an e1000e (82574L) and a modern virtio-net-pci
# (iommu_platform=on) on one QEMU hub. The guest binds both NICs to vfio-pci and
# runs pmd's `vfio_fwd` example, built on the host and shared over 9p, which
# sends tagged frames from each NIC to the other through weir's drivers.
#
#   scripts/vfio-guest-test.sh [--no-build | --bin PATH] [--guest-dir DIR] [--keep]
#                              [--timeout SEC] [--frames N]
#
# --bin uses an already built vfio_fwd (the pmd integration test passes the one
# cargo built); --no-build takes it from the target dir.
#
# PASS needs all of:
#   * vfio_fwd reports every frame received in both directions (guest side);
#   * QEMU's filter-dump of the e1000e's netdev (a pcap on the host) holds the
#     frames weir's e1000e driver sent ("weir-vfio e1000e->virtio") and the ones
#     it received from the virtio NIC ("weir-vfio virtio->e1000e");
#   * the virtio driver negotiated MQ (the NIC has mq=on) and so configured its
#     queue pairs through the control queue.
# Needs root (9p share, QEMU), qemu-system-x86, and what scripts/vfio-guest/build.sh
# needs. Runs under TCG (no KVM needed); about a minute on a loaded 2-core host.
# The guest is cached in $CARGO_TARGET_DIR/vfio-guest (default target/) unless
# --guest-dir says otherwise; only its initramfs is rebuilt (a few seconds).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/vfio-guest/lib.sh
. scripts/vfio-guest/lib.sh

build=1 keep=0 timeout=240 frames=600 bin='' guest=''
vfio_args --frames N frames "$@"
say() { echo "vfio-guest-test: $*"; }

vfio_prepare examples/vfio_fwd -p pmd --example vfio_fwd

work=$(mktemp -d /tmp/weir-vfio-guest.XXXXXX)
mkdir "$work/share"
cp "$bin" "$work/share/vfio_fwd"

# The guest side: find the NICs, hand them to vfio-pci, run the driver test.
{ echo "FRAMES=$frames"; cat; } > "$work/guest.sh" <<'EOF'
e1000e="" virtio=""
for d in /sys/bus/pci/devices/*; do
  case "$(cat "$d/vendor"):$(cat "$d/device")" in
    0x8086:0x10d3) e1000e=${d##*/} ;;
    0x1af4:0x1041) virtio=${d##*/} ;;
  esac
done
echo "WEIR-GUEST: e1000e=$e1000e virtio=$virtio iommu_groups=$(ls /sys/kernel/iommu_groups | wc -l)"
# Before binding, opening must fail and say how to bind.
/mnt/weir/vfio_fwd "$e1000e" "$virtio" > /tmp/unbound.txt 2>&1
if grep -q "weir devbind" /tmp/unbound.txt; then
  echo "WEIR-GUEST: unbound device refused: $(grep -o 'is bound to [^:]*' /tmp/unbound.txt | head -n1)"
else
  echo "WEIR-GUEST: unbound device gave no binding hint:"; cat /tmp/unbound.txt; exit 1
fi
for bdf in $e1000e $virtio; do
  d=/sys/bus/pci/devices/$bdf
  [ -e "$d/driver" ] && echo "$bdf" > "$d/driver/unbind"
  echo vfio-pci > "$d/driver_override"
  echo "$bdf" > /sys/bus/pci/drivers_probe
  echo "WEIR-GUEST: $bdf driver=$(basename "$(readlink "$d/driver")") group=$(basename "$(readlink "$d/iommu_group")")"
done
echo 16 > /proc/sys/vm/nr_hugepages
/mnt/weir/vfio_fwd "$e1000e" "$virtio" --frames "$FRAMES"
EOF

# The 9p share comes first, so that it and the NICs keep their PCI slots.
vfio_boot 512 \
  -virtfs "local,path=$work/share,mount_tag=weir,security_model=none,readonly=on" \
  -netdev hubport,id=p0,hubid=0 -netdev hubport,id=p1,hubid=0 \
  -device e1000e,netdev=p0,mac=52:54:00:00:0e:01,romfile= \
  -device virtio-net-pci,netdev=p1,mac=52:54:00:00:0e:02,disable-legacy=on,iommu_platform=on,mq=on,romfile= \
  -object "filter-dump,id=dump0,netdev=p0,file=$work/e1000e.pcap"

vfio_guest_result 'WEIR-GUEST|VFIO-FWD|port up|Error|panicked'
# mq=on makes QEMU offer MQ + CTRL_VQ (with one pair behind a hub port): the
# driver must have negotiated them and had VQ_PAIRS_SET acked on the control queue.
feat=$(vfio_console | grep -ao 'virtio-net port up.*features=0x[0-9a-f]*' | grep -o '0x[0-9a-f]*$' || true)
if [ -n "$feat" ] && [ $(( (feat >> 22) & 1 )) = 1 ]; then
  say "virtio features $feat: MQ negotiated, control queue used"
else
  say "virtio features '${feat}': MQ not negotiated"; ok=0
fi
for dir in 'e1000e->virtio' 'virtio->e1000e'; do
  n=$(grep -ao "weir-vfio $dir seq=[0-9]*" "$work/e1000e.pcap" 2>/dev/null | sort -u | wc -l || true)
  say "host pcap: $n distinct frame(s) 'weir-vfio $dir'"
  [ "$n" -eq "$frames" ] || ok=0
done
vfio_finish "console.log qemu.log e1000e.pcap"
