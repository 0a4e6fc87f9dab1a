# shellcheck shell=bash
# Shared by scripts/vfio-guest-test.sh and scripts/vfio-daemon-test.sh (sourced,
# not run): their common options, the q35 vIOMMU guest they boot under TCG, and
# how they wait for it and report.
#
#   vfio_args OPT META VAR ARGS...
#           parses [--no-build | --bin PATH] [--guest-dir DIR] [--keep]
#           [--timeout SEC] and the script's own `OPT META`, whose value goes to
#           the variable VAR; sets build, bin, guest, keep, timeout
#   vfio_prepare BIN CARGO_ARGS...
#           builds the binary under test (`cargo build --release CARGO_ARGS`)
#           unless --no-build or --bin, takes it from BIN under the release
#           target dir unless --bin, builds or reuses the guest; sets target,
#           guest, bin, kernel
#   vfio_boot MEM_MB QEMU_ARGS...
#           boots the guest (kernel, initramfs, vIOMMU, console in
#           $work/console.log, $work/guest.sh as its test script) with
#           QEMU_ARGS added, and waits up to $timeout seconds for it to power
#           off; sets start (the time it was started)
#   vfio_console
#           prints the guest's console, without carriage returns
#   vfio_guest_result PATTERN
#           prints the console lines matching PATTERN (grep -E) and sets ok to 1
#           if the guest's test script ended with rc=0, else to 0
#   vfio_finish FILES
#           reports the wall time and PASS (removing $work unless --keep) or
#           FAIL, naming FILES among the logs kept in $work, and exits
#
# Expects the caller to define `say` and to set the defaults of build, keep,
# timeout, bin and guest before vfio_args, and `work` before vfio_boot.
# shellcheck disable=SC2154

vfio_args() {
  local opt=$1 meta=$2 var=$3
  shift 3
  while [ $# -gt 0 ]; do
    case $1 in
      --no-build) build=0 ;;
      --keep) keep=1 ;;
      --timeout) timeout=$2; shift ;;
      "$opt") printf -v "$var" '%s' "$2"; shift ;;
      --bin) bin=$2; build=0; shift ;;
      --guest-dir) guest=$2; shift ;;
      *) echo "usage: $0 [--no-build | --bin PATH] [--guest-dir DIR] [--keep] [--timeout SEC] [$opt $meta]" >&2; exit 2 ;;
    esac
    shift
  done
}

vfio_prepare() {
  local rel=$1
  shift
  target=${CARGO_TARGET_DIR:-$PWD/target}
  guest=${guest:-$target/vfio-guest}
  if [ "$build" = 1 ]; then cargo build --release "$@"; fi
  bin=${bin:-$target/release/$rel}
  bash scripts/vfio-guest/build.sh "$guest" >/dev/null
  [ -x "$bin" ] || { say "missing $bin (run without --no-build)"; exit 1; }
  kernel=$guest/vmlinux
  [ -s "$kernel" ] || kernel=$guest/bzImage
}

vfio_boot() {
  local mem_mb=$1
  shift
  qemu-system-x86_64 -machine q35,kernel-irqchip=split -accel tcg -cpu max -smp 1 -m "$mem_mb" \
    -nodefaults -no-reboot -display none -monitor none \
    -device intel-iommu,intremap=on \
    -kernel "$kernel" -initrd "$guest/initrd.img" \
    -append "console=ttyS0 quiet panic=-1 mitigations=off intel_iommu=on" \
    -serial "file:$work/console.log" \
    -fw_cfg "name=opt/weir/test,file=$work/guest.sh" \
    "$@" \
    > "$work/qemu.log" 2>&1 < /dev/null &
  qemu=$!
  trap 'kill $qemu 2>/dev/null || true' EXIT
  start=$(date +%s)
  while kill -0 $qemu 2>/dev/null && [ $(( $(date +%s) - start )) -lt "$timeout" ]; do sleep 1; done
  if kill -0 $qemu 2>/dev/null; then
    say "timed out after ${timeout}s"
    kill $qemu; wait $qemu 2>/dev/null || true
  fi
  wait $qemu 2>/dev/null || true
  trap - EXIT
}

vfio_console() {
  tr -d '\r' < "$work/console.log"
}

vfio_guest_result() {
  vfio_console | grep -aE "$1" | sed 's/^/  guest: /' || true
  ok=1
  vfio_console | grep -aq 'WEIR-GUEST: rc=0' || { say "guest test failed"; ok=0; }
}

vfio_finish() {
  say "wall $(( $(date +%s) - start ))s"
  if [ "$ok" = 1 ]; then
    say PASS
    if [ "$keep" = 1 ]; then say "logs in $work"; else rm -rf "$work"; fi
    exit 0
  fi
  say "FAIL (logs in $work: $1)"
  exit 1
}
