#!/usr/bin/env bash
# Runs every fuzz target for N executions (default 10 million) and fails on a
# crash; prints each target's executions and wall time.
#
# With cargo-fuzz installed, targets run under libFuzzer (stable rustc with
# RUSTC_BOOTSTRAP=1, since cargo-fuzz passes nightly-only -Z flags); the corpus
# goes to fuzz/corpus/<target>, crashes to fuzz/artifacts/<target>. Without
# cargo-fuzz, or with FUZZ_REPLAY=1, the deterministic xorshift replay runs the
# same targets for N inputs each instead.
#
# Usage: fuzz/run.sh [N] [TARGET...]   (default: every target)
set -euo pipefail
runs="${1:-10000000}"
shift || true
cd "$(dirname "$0")"
targets=(vring_chain vhost_msg tso_header switch_frame tunnel_frame)
if [[ $# -gt 0 ]]; then
    targets=("$@")
fi

report=()
if [[ "${FUZZ_REPLAY:-0}" != 1 ]] && cargo fuzz --version >/dev/null 2>&1; then
    for t in "${targets[@]}"; do
        echo "== libFuzzer: $t for $runs executions"
        mkdir -p "corpus/$t"
        start=$(date +%s)
        log=$(mktemp)
        rc_file=$(mktemp)
        # The exit status goes through a file: the pipe's own status is the
        # filter's. Progress lines stay in the log only.
        echo 1 >"$rc_file"
        {
            if RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" "corpus/$t" -- \
                -runs="$runs" -rss_limit_mb=2048 -print_final_stats=1; then
                echo 0 >"$rc_file"
            else
                echo $? >"$rc_file"
            fi
        } 2>&1 | tee "$log" | grep -v '^#[0-9]*\s*\(NEW\|REDUCE\|pulse\)' || true
        rc=$(cat "$rc_file")
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
        rm -f "$log" "$rc_file"
        [[ $rc -eq 0 ]] || { echo "fuzz: $t failed (exit $rc)"; exit 1; }
        report+=("$t: ${execs:-?} executions in $(($(date +%s) - start)) s (libFuzzer)")
    done
else
    echo "== cargo-fuzz not available: deterministic replay"
    cargo build --release --no-default-features --bin replay
    for t in "${targets[@]}"; do
        start=$(date +%s)
        "${CARGO_TARGET_DIR:-target}/release/replay" --iters "$runs" "$t"
        report+=("$t: $runs executions in $(($(date +%s) - start)) s (replay)")
    done
fi
printf '%s\n' "${report[@]}"
echo "fuzz: no crash"
