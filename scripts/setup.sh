#!/usr/bin/env bash
# Installs the Debian bookworm packages weir needs, for one of two purposes:
#   setup.sh demo   what `scripts/demo.sh` needs: build tools for the AF_XDP
#                   bindings (libbpf via xsk-rs), iproute2 and ping
#   setup.sh [test] all of that, and the peers and tools of the test suite:
#                   DPDK, QEMU, valgrind, iperf3, tcpdump, Prometheus, ...
# Says what it installs and why; runs apt only when something is missing.
# Idempotent. Run as root or as a user with sudo.
set -euo pipefail
. "$(dirname "$0")/root.sh"
become_root "$@"

profile=${1:-test}
DEMO=(
  build-essential pkg-config m4 clang llvm libelf-dev zlib1g-dev   # building weir (libbpf for AF_XDP)
  iproute2 iputils-ping ethtool                                    # namespaces, veth, ping
)
TEST=(
  python3                                                           # raw-socket MAC flood in weir/tests/fdb_flood.rs
  valgrind                                                          # benches/callgrind.sh
  dpdk-dev librte-net-vhost23 librte-mempool-ring23 librte-net-virtio23  # testpmd: a real vhost-user peer
  librte-net-ring23 librte-net-null23                               # dpdk feature tests (net_ring, net_null vdevs)
  qemu-system-x86 kmod cpio xz-utils tcpdump                        # VFIO guest tests (tcpdump reads their pcaps); weir/tests/capture.rs (mirror to a TAP)
  tshark                                                            # weir/tests/capture.rs reads what `weir capture` writes; overlay.rs decodes VXLAN
  iperf3                                                            # the namespace end of weir/tests/vm.rs's afpacket test
  iputils-arping                                                    # weir/tests/overlay.rs: ARP for weir's underlay address
  systemd man-db                                                    # systemd-analyze verify and man for contrib/weir.service
  prometheus                                                        # weir/tests/metrics.rs: a real scraper, and promtool
  openvswitch-switch-dpdk                                           # weir/tests/bench.rs: OVS-DPDK's userspace VXLAN as `weir bench --peer ovs`
)
case "$profile" in
  demo) PKGS=("${DEMO[@]}"); TOOLS=(ip ping clang) ;;
  test) PKGS=("${DEMO[@]}" "${TEST[@]}")
        TOOLS=(ip ping python3 clang dpdk-testpmd qemu-system-x86_64 cpio tcpdump tshark arping iperf3 systemd-analyze man prometheus promtool
               ovs-vsctl ovsdb-tool /usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk) ;;
  *) echo "usage: $0 [demo|test]" >&2; exit 2 ;;
esac

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "scripts/setup.sh: installing with apt, for the $profile (this can take a few minutes):"
  echo "  ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -q -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}" \
    | grep -E '^(Setting up|E:)' || true
fi

for t in "${TOOLS[@]}"; do
  command -v "$t" >/dev/null || { echo "scripts/setup.sh: $t still missing after install" >&2; exit 1; }
done
find_cargo
