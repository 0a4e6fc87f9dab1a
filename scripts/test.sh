#!/usr/bin/env bash
# The whole test suite: setup, formatting, lints, every test (unit, kernel-interface
# ports in network namespaces, daemon end to end), and every example config.
# This is the command the README gives and CI runs. Run as root or as a user
# with sudo.
set -euo pipefail
. "$(dirname "$0")/root.sh"
become_root "$@"
cd "$(dirname "$0")/.."
find_cargo

bash scripts/setup.sh test

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
# Tests that create network namespaces and attach weir to them run as root here;
# they fail (never skip) when a prerequisite is missing.
cargo test --workspace --locked --release --no-fail-fast -- --test-threads=2

echo "== dpdk feature (system libdpdk, net_ring/net_null vdevs, no hugepages)"
cargo clippy -p pmd -p weir-control -p weir --all-targets --locked --features pmd/dpdk,weir-control/dpdk,weir/dpdk -- -D warnings
cargo test --release --locked -p pmd --features dpdk
cargo test --release --locked -p weir-control --features dpdk ports::

echo "== example configs"
cargo build --release --locked -p weir
for f in configs/*.toml; do
  ./target/release/weir config check --no-iface-check "$f"
done
