#!/usr/bin/env bash
# build-guest.sh [OUTDIR]
#
# Builds the tiny Linux guest that weir's VM tests boot under QEMU, from Debian
# packages that are downloaded and unpacked (never installed on the host):
#
#   OUTDIR/vmlinux      uncompressed kernel ELF, booted through its PVH entry point
#   OUTDIR/vmlinuz      the same kernel as a bzImage (fallback)
#   OUTDIR/initrd.img   gzip cpio: busybox, glibc, iperf3, iproute2's ip (/sbin/ip), virtio-net
#                       and geneve modules, /init
#   OUTDIR/manifest     package versions the outputs were built from
#
# Default OUTDIR: target/vm-guest in the repository.
#
# The guest's /init mounts proc, sysfs and devtmpfs, loads the modules, and runs
# the shell script QEMU passes as the fw_cfg blob "opt/weir/script"
# (-fw_cfg name=opt/weir/script,file=X.sh). It then prints "WEIRVM: rc=N" on the
# console and powers off, so QEMU exits. Kernel command-line words weir.KEY=VAL
# become shell variables WEIR_KEY. Without a script it opens a shell on the console.
#
# Cached: when OUTDIR holds outputs built from the same package versions (and the
# same version of this script), nothing is done. Installs qemu-system-x86, cpio,
# xz-utils and kmod with apt-get if they are missing. Needs root.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/target/vm-guest}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# geneve: Linux's end of the Geneve interop test (the host may lack the module).
MODULES="virtio_pci virtio_net qemu_fw_cfg geneve"
# iproute2 and its libraries: busybox's ip cannot create geneve links.
USERLAND="busybox-static libc6 libgcc-s1 iperf3 libiperf0 libsctp1 libssl3"
USERLAND="$USERLAND iproute2 libbpf1 libelf1 libmnl0 libbsd0 libmd0 libcap2 zlib1g"

say() { echo "build-guest: $*" >&2; }
die() { say "$*"; exit 1; }
[ "$(id -u)" -eq 0 ] || die "must run as root (installs host tools with apt-get)"
export DEBIAN_FRONTEND=noninteractive
APT_OPTS=(-o DPkg::Lock::Timeout=600 -o APT::Sandbox::User=root)

# --- host tools ---------------------------------------------------------------
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v cpio >/dev/null || need+=(cpio)
command -v xz >/dev/null || need+=(xz-utils)
command -v depmod >/dev/null || need+=(kmod)
UPDATED=0
apt_update() { [ $UPDATED = 1 ] || { apt-get "${APT_OPTS[@]}" update -qq >&2; UPDATED=1; }; }
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  apt_update
  if ! apt-get "${APT_OPTS[@]}" install -y -qq --no-install-recommends "${need[@]}" >&2; then
    # A qemu-utils newer than the distribution's QEMU (from backports) declares
    # Breaks on the older qemu-system-common; align it with qemu-system-x86.
    v=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/{print $2}')
    say "retrying with qemu-utils=$v"
    apt-get "${APT_OPTS[@]}" install -y -qq --no-install-recommends --allow-downgrades \
      "${need[@]}" "qemu-utils=$v" >&2
  fi
fi
for t in qemu-system-x86_64 cpio xz depmod modprobe dpkg-deb gzip; do
  command -v "$t" >/dev/null || die "$t is missing"
done

# --- resolve package versions (cheap: local apt metadata only) ----------------
kernel_pkg() {
  apt-cache depends linux-image-amd64 2>/dev/null \
    | awk '$1=="Depends:" && $2 ~ /^linux-image-[0-9]/ {print $2; exit}'
}
KPKG=$(kernel_pkg)
if [ -z "$KPKG" ]; then
  apt_update
  KPKG=$(kernel_pkg)
fi
[ -n "$KPKG" ] || die "cannot resolve linux-image-amd64 to a kernel package"
manifest() { # one apt-cache call: it is slow on a loaded machine
  echo "script $(sha256sum "$0" | cut -d' ' -f1)"
  # shellcheck disable=SC2086
  apt-cache policy "$KPKG" $USERLAND 2>/dev/null | awk -v ARGV_LIST="$KPKG $USERLAND" '
    /^[^ ]/ { sub(/:$/, "", $1); p = $1 }
    $1 == "Candidate:" && $2 != "(none)" { v[p] = $2 }
    END { n = split(ARGV_LIST, want, " ")
          for (i = 1; i <= n; i++) print want[i], (want[i] in v ? v[want[i]] : "MISSING") }
  ' | sed 's/^\(.*\) MISSING$/missing \1/'
}
WANT=$(manifest)
if grep -q '^missing ' <<<"$WANT"; then
  apt_update
  WANT=$(manifest)
  ! grep '^missing ' <<<"$WANT" || die "packages not found in apt metadata"
fi
if [ -s "$OUT/initrd.img" ] && [ -s "$OUT/vmlinux" ] && [ -f "$OUT/manifest" ] \
  && [ "$(cat "$OUT/manifest")" = "$WANT" ]; then
  say "up to date ($KPKG) in $OUT"
  exit 0
fi

# --- download and unpack --------------------------------------------------------
DEBS=$OUT/debs
mkdir -p "$DEBS"
deb_of() { # PACKAGE -> path of its .deb at the wanted version, downloaded if needed
  local p=$1 v f
  v=$(awk -v p="$p" '$1==p{print $2}' <<<"$WANT")
  f=$(find "$DEBS" -maxdepth 1 -name "${p}_${v//:/%3a}_*.deb" | head -n1)
  if [ -z "$f" ]; then
    (cd "$DEBS" && apt-get "${APT_OPTS[@]}" download -qq "$p=$v" >&2) \
      || { apt_update; (cd "$DEBS" && apt-get "${APT_OPTS[@]}" download -qq "$p=$v" >&2); } \
      || die "apt-get download $p=$v failed"
    f=$(find "$DEBS" -maxdepth 1 -name "${p}_${v//:/%3a}_*.deb" | head -n1)
  fi
  [ -n "$f" ] || die "no .deb for $p $v"
  echo "$f"
}

WORK=$OUT/work
rm -rf "$WORK"
mkdir -p "$WORK/kernel" "$WORK/userland"
say "unpacking $KPKG"
dpkg-deb -x "$(deb_of "$KPKG")" "$WORK/kernel"
for p in $USERLAND; do dpkg-deb -x "$(deb_of "$p")" "$WORK/userland"; done
KV=$(ls "$WORK/kernel/lib/modules")
[ "$(wc -w <<<"$KV")" = 1 ] || die "expected one kernel version, got: $KV"
depmod -b "$WORK/kernel" "$KV"

# --- vmlinux for PVH boot -------------------------------------------------------
# The bzImage carries the kernel ELF compressed after its real-mode setup code
# and decompressor. Booting the ELF directly (PVH entry) skips both, which saves
# several seconds per boot under TCG. Find the payload by its magic and inflate
# it; the decompressor complains about the trailer that follows the stream, but
# the ELF is complete, which the magic check below confirms.
BZ=$WORK/kernel/boot/vmlinuz-$KV
cp "$BZ" "$OUT/vmlinuz.tmp"
extract() { # MAGIC-REGEX DECOMPRESSOR
  local off
  off=$(LC_ALL=C grep -obUaP "$1" "$BZ" | head -n1 | cut -d: -f1 || true)
  [ -n "$off" ] || return 1
  tail -c +$((off + 1)) "$BZ" | $2 > "$OUT/vmlinux.tmp" 2>/dev/null || true
  [ "$(head -c4 "$OUT/vmlinux.tmp" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ]
}
extract '\xfd7zXZ\x00' 'xz -dc' || extract '\x1f\x8b\x08' 'gzip -dc' \
  || die "could not extract an ELF vmlinux from $BZ"

# --- initramfs ------------------------------------------------------------------
R=$WORK/root
U=$WORK/userland
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,run,root,lib64,lib/x86_64-linux-gnu}
cp "$U/bin/busybox" "$R/bin/busybox"
for applet in $("$R/bin/busybox" --list); do
  [ -e "$R/bin/$applet" ] || ln -s busybox "$R/bin/$applet"
done
cp -a "$U"/lib/x86_64-linux-gnu/*.so* "$R/lib/x86_64-linux-gnu/"
cp -a "$U"/usr/lib/x86_64-linux-gnu/*.so* "$R/lib/x86_64-linux-gnu/"
ln -s ../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$R/lib64/ld-linux-x86-64.so.2"
ln -s ../lib "$R/usr/lib"
cp "$U/usr/bin/iperf3" "$R/usr/bin/iperf3"
# iproute2's ip as /sbin/ip, beside busybox's applet: busybox's sh runs its
# own applet for a bare `ip`, so guest scripts call /sbin/ip by its path
# where they need more (geneve links).
IP=$(find "$U/bin" "$U/sbin" "$U/usr/bin" "$U/usr/sbin" -name ip -type f 2>/dev/null | head -n1)
[ -n "$IP" ] || die "no ip binary in iproute2"
cp "$IP" "$R/sbin/ip"
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$R/etc/passwd"
printf 'root:x:0:\n' > "$R/etc/group"
printf '127.0.0.1 localhost\n' > "$R/etc/hosts"

# Modules and everything they depend on, in an order insmod can follow
# (modprobe --show-depends lists dependencies first).
: > "$R/etc/modules.order"
for m in $MODULES; do
  modprobe -d "$WORK/kernel" -S "$KV" --show-depends "$m" | while read -r kind path _; do
    [ "$kind" = insmod ] || continue
    rel=${path#"$WORK/kernel/"}
    [ -f "$R/$rel" ] && continue
    mkdir -p "$R/$(dirname "$rel")"
    cp "$path" "$R/$rel"
    echo "/$rel" >> "$R/etc/modules.order"
  done
done
[ -s "$R/etc/modules.order" ] || die "no modules resolved for: $MODULES"

cat > "$R/init" <<'EOF'
#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
for w in $(cat /proc/cmdline); do
  case "$w" in weir.*=*) k=${w%%=*}; export "WEIR_${k#weir.}=${w#*=}";; esac
done
while read -r ko; do insmod "$ko" || echo "WEIRVM: insmod $ko failed"; done < /etc/modules.order
ip link set lo up
echo "WEIRVM: init up=$(cut -d' ' -f1 /proc/uptime)"
FW=/sys/firmware/qemu_fw_cfg/by_name/opt/weir/script/raw
if [ -r "$FW" ]; then
  cat "$FW" > /tmp/script.sh
  sh /tmp/script.sh
  echo "WEIRVM: rc=$?"
else
  echo "WEIRVM: no opt/weir/script; shell (exit powers off)"
  setsid cttyhack sh
fi
poweroff -f
EOF
chmod 755 "$R/init"

(cd "$R" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --quiet) \
  | gzip -6 > "$OUT/initrd.img.tmp"
mv "$OUT/vmlinux.tmp" "$OUT/vmlinux"
mv "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"
mv "$OUT/initrd.img.tmp" "$OUT/initrd.img"
nmod=$(wc -l < "$R/etc/modules.order")
rm -rf "$WORK"
echo "$WANT" > "$OUT/manifest"
say "kernel $KV, initrd $(du -h "$OUT/initrd.img" | cut -f1), $nmod modules -> $OUT"
