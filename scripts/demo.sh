#!/usr/bin/env bash
# Runs weir's demo on an embedded default: three network namespaces switched by
# weir over AF_PACKET, AF_XDP and TAP ports (no hardware, no config file).
# Installs what it needs first. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked -p weir
exec ./target/release/weir demo "$@"
