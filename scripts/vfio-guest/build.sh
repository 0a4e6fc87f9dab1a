#!/usr/bin/env bash
# Builds the guest for the VFIO driver test: Debian's kernel and a busybox
# initramfs with only the modules the tests need (vfio-pci + type1 IOMMU backend,
# virtio-pci and 9p for the host shares, fw_cfg for the test script, e1000 for
# the kernel-driven peer NICs of scripts/vfio-daemon-test.sh).
#
#   scripts/vfio-guest/build.sh OUTDIR
#
# Writes OUTDIR/vmlinux (uncompressed ELF; QEMU starts it through its PVH entry,
# which under TCG boots seconds faster than the bzImage), OUTDIR/bzImage and
# OUTDIR/initrd.img. Downloads go through apt (`apt-get download`, nothing is
# installed on the host) and are cached in OUTDIR/debs. Needs: apt-get, dpkg-deb,
# kmod (depmod, modprobe), cpio, gzip, xz-utils.
#
# The guest's /init loads the modules, mounts the host share (9p tag `weir`) at
# /mnt/weir if there is one, runs the shell script given as the fw_cfg blob
# `opt/weir/test` and powers off. It prints `WEIR-GUEST: rc=N` with the script's
# exit status.
set -euo pipefail

out=${1:?usage: build.sh OUTDIR}
mkdir -p "$out/debs"
out=$(cd "$out" && pwd)
modules="vfio_pci vfio_iommu_type1 virtio_pci 9pnet_virtio 9p qemu_fw_cfg e1000"

for tool in apt-get dpkg-deb depmod modprobe cpio gzip xz; do
  command -v "$tool" >/dev/null || { echo "build.sh: $tool missing (apt-get install kmod cpio xz-utils)" >&2; exit 1; }
done

# deb PACKAGE -> path of its .deb in the cache, downloading it if needed.
deb() {
  local f
  f=$(compgen -G "$out/debs/$1_*.deb" | head -n1 || true)
  if [ -z "$f" ]; then
    ( cd "$out/debs" && apt-get -qq -o APT::Sandbox::User=root download "$1" >/dev/null 2>&1 ) || {
      apt-get -qq update >/dev/null 2>&1 || true
      ( cd "$out/debs" && apt-get -qq -o APT::Sandbox::User=root download "$1" >/dev/null )
    }
    f=$(compgen -G "$out/debs/$1_*.deb" | head -n1)
  fi
  echo "$f"
}

# Kernel: the version linux-image-amd64 currently points at.
meta=$(deb linux-image-amd64)
kpkg=$(dpkg-deb -f "$meta" Depends | grep -o 'linux-image-[0-9][^ ,]*' | head -n1)
kdeb=$(deb "$kpkg")
kroot=$out/kernel
if [ ! -e "$kroot/.from-$(basename "$kdeb")" ]; then
  rm -rf "$kroot" && mkdir -p "$kroot"
  dpkg-deb -x "$kdeb" "$kroot"
  touch "$kroot/.from-$(basename "$kdeb")"
fi
kver=$(basename "$(compgen -G "$kroot/lib/modules/*" | head -n1)")
[ -e "$kroot/lib/modules/$kver/modules.dep" ] || depmod -b "$kroot" "$kver"
cp "$kroot/boot/vmlinuz-$kver" "$out/bzImage"

# The bzImage carries the kernel ELF as an xz stream; cut it out. xz reports an
# error for the bytes after the stream, so judge by the ELF magic instead.
if [ ! -s "$out/vmlinux" ] || [ "$out/vmlinux" -ot "$out/bzImage" ]; then
  start=$(LC_ALL=C grep -abo $'\xfd7zXZ' "$out/bzImage" | head -n1 | cut -d: -f1)
  tail -c "+$((start + 1))" "$out/bzImage" | xz -dcq > "$out/vmlinux.part" 2>/dev/null || true
  if [ "$(head -c 4 "$out/vmlinux.part" | od -An -c | tr -d ' ')" = '177ELF' ]; then
    mv "$out/vmlinux.part" "$out/vmlinux"
  else
    rm -f "$out/vmlinux.part"
    echo "build.sh: no ELF in the bzImage; boot $out/bzImage instead" >&2
  fi
fi

# Userland: busybox and the C runtime Rust binaries link against.
ul=$out/userland
if [ ! -e "$ul/.done" ]; then
  rm -rf "$ul" && mkdir -p "$ul"
  for p in busybox-static libc6 libgcc-s1; do dpkg-deb -x "$(deb "$p")" "$ul"; done
  touch "$ul/.done"
fi

root=$out/root
rm -rf "$root"
mkdir -p "$root"/{bin,dev,proc,sys,tmp,mnt/weir,lib64,lib/x86_64-linux-gnu,etc}
cp "$ul/bin/busybox" "$root/bin/"
for applet in $("$root/bin/busybox" --list); do
  [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
cp -a "$ul"/lib/x86_64-linux-gnu/{libc.so.6,libm.so.6,libgcc_s.so.1,ld-linux-x86-64.so.2} \
  "$root/lib/x86_64-linux-gnu/"
ln -s ../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$root/lib64/ld-linux-x86-64.so.2"

# Modules with their dependencies, in load order.
: > "$root/etc/modules"
for m in $modules; do
  modprobe -d "$kroot" -S "$kver" --show-depends "$m" | while read -r verb path _; do
    [ "$verb" = insmod ] || continue
    rel=${path#"$kroot"}
    grep -qx "$rel" "$root/etc/modules" && continue
    mkdir -p "$root$(dirname "$rel")"
    cp "$path" "$root$rel"
    echo "$rel" >> "$root/etc/modules"
  done
done

cat > "$root/init" <<'EOF'
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
while read -r ko; do insmod "$ko"; done < /etc/modules
mount -t 9p -o trans=virtio,version=9p2000.L,ro weir /mnt/weir 2>/dev/null
t=/sys/firmware/qemu_fw_cfg/by_name/opt/weir/test/raw
if [ -r $t ]; then
  cat $t > /tmp/test.sh
  sh /tmp/test.sh
  echo "WEIR-GUEST: rc=$?"
else
  echo "WEIR-GUEST: no test script (fw_cfg opt/weir/test)"
fi
poweroff -f
EOF
chmod +x "$root/init"
( cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet ) | gzip -1 > "$out/initrd.img"
echo "build.sh: kernel $kver; $out/vmlinux, $out/initrd.img ($(du -h "$out/initrd.img" | cut -f1))"
