# shellcheck shell=bash
# Shared by the callgrind scripts in benches/ (sourced, not run).
#
#   need_valgrind          installs valgrind with apt-get if it is missing
#   build_bench_bin PACKAGE NAME
#                          builds the binary NAME of the workspace's PACKAGE
#                          (release) and prints its path, taken from cargo itself
#                          so that any target directory (CARGO_TARGET_DIR,
#                          .cargo/config) works
#   summary [WIDTH]        min / median / max of the numbers on stdin, one a line,
#                          each printed WIDTH wide (default 8)
#   callgrind_setup PACKAGE NAME
#                          need_valgrind, then sets `bin` to PACKAGE's binary
#                          NAME (built) and `work` to a temporary directory,
#                          removed on exit
#   callgrind_run OUT ARGS...
#                          runs `$bin ARGS` under callgrind, its profile in OUT,
#                          and prints callgrind's total instruction count; on
#                          failure prints valgrind's log to stderr and returns 1
#
# Expects `root` (the workspace root) to be set by the caller.
# shellcheck disable=SC2154

need_valgrind() {
    if ! command -v valgrind >/dev/null 2>&1; then
        echo "valgrind not found; installing it with apt-get" >&2
        local sudo=""
        if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
        $sudo apt-get update -qq
        $sudo apt-get install -y -qq valgrind >/dev/null
    fi
}

build_bench_bin() {
    local package=$1 name=$2 bin
    bin=$(cargo build --release --manifest-path "$root/Cargo.toml" -p "$package" \
            --bin "$name" --message-format=json-render-diagnostics |
          sed -n "s/.*\"executable\":\"\\([^\"]*$name\\)\".*/\\1/p" | tail -n 1)
    if [ -z "$bin" ] || [ ! -x "$bin" ]; then
        echo "could not find the $name binary after building" >&2
        return 1
    fi
    echo "$bin"
}

summary() {
    sort -n | awk -v w="${1:-8}" '
        { v[NR] = $1 }
        END {
            med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf "%*.1f %*.1f %*.1f", w, v[1], w, med, w, v[NR]
        }'
}

callgrind_setup() {
    need_valgrind
    bin=$(build_bench_bin "$1" "$2")
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
}

callgrind_run() {
    local out=$1
    shift
    # --fair-sched=yes: valgrind runs one thread at a time; without it a
    # busy-polling thread can keep the others (weir-bench's vhost-user
    # control threads) off for seconds, and gen-callgrind.sh's warm-up then
    # sees nothing forwarded. Instruction counts are unchanged by it.
    valgrind --tool=callgrind --fair-sched=yes --callgrind-out-file="$out" \
        "$bin" "$@" >/dev/null 2>"$work/valgrind.log" || {
        cat "$work/valgrind.log" >&2
        return 1
    }
    sed -n 's/^summary: //p' "$out"
}
