//! The VFIO drivers on emulated hardware: boots a QEMU guest with an Intel
//! vIOMMU, an e1000e and a modern virtio-net NIC on one hub, binds both to
//! vfio-pci and runs the `vfio_fwd` example (built by this `cargo test`) on them
//! through `scripts/vfio-guest-test.sh`. The script checks frames in both
//! directions in the guest and in QEMU's packet dump on the host.
//!
//! Needs root, QEMU and the tools `scripts/setup.sh` installs; fails (does not
//! skip) without them. TCG only: no KVM needed. About 15-60 s.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn e1000e_and_virtio_net_exchange_frames_in_a_viommu_guest() {
    // <target>/<profile>/deps/vfio_guest-<hash>: the example is at
    // <target>/<profile>/examples/vfio_fwd, built by `cargo test` with the tests.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let bin = profile_dir.join("examples/vfio_fwd");
    assert!(bin.exists(), "{} not built", bin.display());
    let guest_dir = profile_dir.parent().unwrap().join("vfio-guest");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("bash")
        .arg(root.join("scripts/vfio-guest-test.sh"))
        .arg("--bin")
        .arg(&bin)
        .arg("--guest-dir")
        .arg(&guest_dir)
        .args(["--frames", "600", "--timeout", "300"])
        .output()
        .expect("running scripts/vfio-guest-test.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "VFIO guest test failed");
    assert!(stdout.contains("host pcap: 600 distinct frame(s) 'weir-vfio e1000e->virtio'"));
    assert!(stdout.contains("host pcap: 600 distinct frame(s) 'weir-vfio virtio->e1000e'"));
}
