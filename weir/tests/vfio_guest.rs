//! The daemon on emulated hardware: boots a QEMU guest with an Intel vIOMMU in
//! which `weir run` (this build's binary) drives an e1000e and a modern
//! virtio-net NIC through VFIO and bridges them, between two e1000 NICs that
//! the guest kernel drives from two network namespaces. Runs
//! `scripts/vfio-daemon-test.sh`, which checks ping both ways, TCP transfers
//! with verified checksums, weir's counters, QEMU's packet dumps on the host,
//! and that bad input (malformed config, wrong or already used PCI address,
//! unsupported device, device bound to a kernel driver) is refused with a clear
//! error while the running ports keep forwarding, and ports removed and added
//! at run time.
//!
//! Needs root, QEMU, tcpdump and the tools `scripts/setup.sh` installs; fails
//! (does not skip) without them. TCG only: no KVM needed. About a minute.

use std::path::{Path, PathBuf};
use std::process::Command;

#[test]
fn daemon_forwards_between_kernel_nics_through_its_vfio_drivers_in_a_viommu_guest() {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_weir"));
    // <target>/<profile>/weir: the guest is cached in <target>/vfio-guest, as
    // for pmd's VFIO test.
    let target = bin
        .parent()
        .and_then(Path::parent)
        .expect("weir binary in <target>/<profile>");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("bash")
        .arg(root.join("scripts/vfio-daemon-test.sh"))
        .arg("--bin")
        .arg(&bin)
        .arg("--guest-dir")
        .arg(target.join("vfio-guest"))
        .args(["--timeout", "480"])
        .output()
        .expect("running scripts/vfio-daemon-test.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "VFIO daemon guest test failed");
    for step in [
        "ok ping A -> B: 5 packets transmitted, 5 packets received, 0% packet loss",
        "ok ping B -> A: 5 packets transmitted, 5 packets received, 0% packet loss",
        "ok TCP B -> A verified",
        "ok TCP A -> B verified",
        "ok malformed config (run) refused",
        "ok run with the virtio NIC bound to its kernel driver refused",
        "ok port add with a wrong PCI address refused",
        "ok port add of an unsupported device (rtl8139 on vfio-pci) refused",
        "ok port add of a NIC a port already drives refused",
        "ok ping A -> B after the bad input",
        "ok TCP after the bad input verified",
        "ok ping A -> B after re-adding nic1",
        "ok TCP after re-adding both ports verified",
        "ok weir run stopped",
        "vfio-daemon-test: PASS",
    ] {
        assert!(stdout.contains(step), "missing `{step}`");
    }
}
