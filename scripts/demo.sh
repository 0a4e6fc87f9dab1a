#!/usr/bin/env bash
# Runs weir's demo on an embedded default: three network namespaces switched by
# weir over AF_PACKET, AF_XDP and TAP ports (no hardware, no config file).
# Installs only what the demo needs first (scripts/setup.sh demo). Run as root
# or as a user with sudo; needs Rust (see README).
set -euo pipefail
. "$(dirname "$0")/root.sh"
become_root "$@"
cd "$(dirname "$0")/.."
find_cargo
bash scripts/setup.sh demo
echo "scripts/demo.sh: building weir (the first build takes several minutes)"
cargo build --release --locked -p weir
exec ./target/release/weir demo "$@"
