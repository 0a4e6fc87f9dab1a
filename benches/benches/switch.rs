//! Packets per second per core through the switch core on in-memory frames.
//!
//! Each iteration switches one burst of 32 frames (parse, learn, lookup, stage,
//! drain), so divan's item rate is packets per second on one core. See
//! `docs/benchmarks.md` for the cases and how to read the figures.
//!
//! ```text
//! cargo bench -p weir-benches --bench switch -- --sample-count 20
//! ```

use divan::counter::ItemsCount;
use divan::Bencher;
use weir_benches::{Rig, Scenario, BURST};

fn main() {
    divan::main();
}

/// Station counts: one that fits in L1/L2, one whose 64 MiB table does not.
const MACS: [u32; 2] = [1_000, 1_000_000];

/// Bursts per sample: 16 Ki frames, so that 20 samples walk the 64 Ki frames
/// of the 1 M case several times over instead of timing a few cold bursts.
const SAMPLE_BURSTS: u32 = 512;

/// Known unicast, buffers recycled: the switch alone.
#[divan::bench(args = MACS, sample_size = SAMPLE_BURSTS)]
fn unicast_recycled(bencher: Bencher, macs: u32) {
    let mut rig = Rig::new(Scenario::unicast(macs));
    bencher
        .counter(ItemsCount::new(BURST))
        .bench_local(|| rig.step_recycled());
    assert_eq!(rig.drops(), 0);
}

/// Known unicast with every buffer allocated from and freed to the mempool.
#[divan::bench(args = MACS, sample_size = SAMPLE_BURSTS)]
fn unicast_pooled(bencher: Bencher, macs: u32) {
    let mut rig = Rig::new(Scenario::unicast(macs));
    bencher
        .counter(ItemsCount::new(BURST))
        .bench_local(|| rig.step_pooled());
    assert_eq!(rig.drops(), 0);
}

/// Broadcast on a 4-port bridge: two copies and the original per frame. Items
/// are input frames.
#[divan::bench(sample_size = SAMPLE_BURSTS)]
fn flood_recycled(bencher: Bencher) {
    let mut rig = Rig::new(Scenario::broadcast(1_000));
    bencher
        .counter(ItemsCount::new(BURST))
        .bench_local(|| rig.step_recycled());
    assert_eq!(rig.drops(), 0);
}

/// Known unicast in 802.1Q VLAN 100.
#[divan::bench(sample_size = SAMPLE_BURSTS)]
fn vlan_recycled(bencher: Bencher) {
    let mut rig = Rig::new(Scenario::tagged(1_000));
    bencher
        .counter(ItemsCount::new(BURST))
        .bench_local(|| rig.step_recycled());
    assert_eq!(rig.drops(), 0);
}
