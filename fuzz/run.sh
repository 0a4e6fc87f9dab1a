#!/usr/bin/env bash
# Runs every fuzz target for N seconds (default 20) and fails on a crash.
#
# With cargo-fuzz installed, targets run under libFuzzer (stable rustc with
# RUSTC_BOOTSTRAP=1, since cargo-fuzz passes nightly-only -Z flags); the corpus
# goes to fuzz/corpus/<target>, crashes to fuzz/artifacts/<target>. Without
# cargo-fuzz, or with FUZZ_REPLAY=1, the deterministic xorshift replay runs the
# same targets for N seconds each instead.
set -euo pipefail
secs="${1:-20}"
cd "$(dirname "$0")"
targets=(vring_chain vhost_msg)

if [[ "${FUZZ_REPLAY:-0}" != 1 ]] && cargo fuzz --version >/dev/null 2>&1; then
    for t in "${targets[@]}"; do
        echo "== libFuzzer: $t for ${secs}s"
        mkdir -p "corpus/$t"
        RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" "corpus/$t" -- \
            -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1
    done
else
    echo "== cargo-fuzz not available: deterministic replay"
    cargo build --release --no-default-features --bin replay
    for t in "${targets[@]}"; do
        "${CARGO_TARGET_DIR:-target}/release/replay" --seconds "$secs" "$t"
    done
fi
echo "fuzz: no crash"
