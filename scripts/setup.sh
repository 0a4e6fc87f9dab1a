#!/usr/bin/env bash
# Installs what weir's demo and test suite need on a fresh Debian bookworm host:
# build tools for the AF_XDP bindings (libbpf via xsk-rs), iproute2 and ping for
# the namespace tests, valgrind for the instruction-count benchmark, and QEMU for
# the VFIO driver test in a guest.
# Idempotent; runs apt only when something is missing. Needs root.
set -euo pipefail

PKGS=(
  build-essential pkg-config m4 clang llvm libelf-dev zlib1g-dev   # xsk-rs / libbpf-sys
  iproute2 iputils-ping ethtool                                    # namespaces, veth, ping
  python3                                                           # raw-socket MAC flood in weir/tests/fdb_flood.rs
  valgrind                                                          # benches/callgrind.sh
  dpdk-dev librte-net-vhost23 librte-mempool-ring23 librte-net-virtio23  # testpmd: a real vhost-user peer
  librte-net-ring23 librte-net-null23                               # dpdk feature tests (net_ring, net_null vdevs)
  qemu-system-x86 kmod cpio xz-utils tcpdump                        # VFIO guest tests (tcpdump reads their pcaps); weir/tests/capture.rs (mirror to a TAP)
  tshark                                                            # weir/tests/capture.rs reads what `weir capture` writes
  iperf3                                                            # the namespace end of weir/tests/vm.rs's afpacket test
)

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/setup.sh: must run as root (installs packages, creates namespaces)" >&2
  exit 1
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "scripts/setup.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v cargo >/dev/null || { echo "scripts/setup.sh: cargo not found: install Rust (rustup) first" >&2; exit 1; }
for t in ip ping python3 clang dpdk-testpmd qemu-system-x86_64 cpio tcpdump iperf3 tshark; do
  command -v "$t" >/dev/null || { echo "scripts/setup.sh: $t still missing after install" >&2; exit 1; }
done
