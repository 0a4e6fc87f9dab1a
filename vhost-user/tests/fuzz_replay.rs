//! The fuzz targets of `fuzz/` (split-ring descriptor chains, vhost-user
//! messages, TSO headers and segmentation, the switch's frame parsing, the
//! tunnel's encapsulation and outer header parsing) on
//! deterministic xorshift inputs, so every test run exercises them
//! without libFuzzer. `fuzz/run.sh` runs the same targets under libFuzzer.

#[path = "../../fuzz/src/targets.rs"]
#[allow(dead_code)]
mod targets;

use targets::{run_random, Target};

#[test]
fn vring_chain_survives_random_rings() {
    assert_eq!(run_random(Target::VringChain, 7, 20_000), 20_000);
}

#[test]
fn vhost_msg_survives_random_messages() {
    assert_eq!(run_random(Target::VhostMsg, 7, 100_000), 100_000);
}

#[test]
fn tso_header_survives_random_headers_and_frames() {
    assert_eq!(run_random(Target::TsoHeader, 7, 20_000), 20_000);
}

#[test]
fn switch_frame_survives_random_frames() {
    assert_eq!(run_random(Target::SwitchFrame, 7, 20_000), 20_000);
}

#[test]
fn tunnel_frame_survives_random_frames_and_damage() {
    assert_eq!(run_random(Target::TunnelFrame, 7, 50_000), 50_000);
}
