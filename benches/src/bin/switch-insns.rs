//! Runs the switch core for an exact number of packets, for instruction
//! counting under `valgrind --tool=callgrind` (see `benches/callgrind.sh`).
//!
//! ```text
//! switch-insns <case> <macs> <packets>
//!   case: unicast | unicast-pool | unicast-run8 | unicast-run32 | flood | vlan |
//!         vlan-access | vlan-trunk | acl-N (a security group of N rules) |
//!         acl-N-new (the same, every frame a flow the flow cache has not
//!         kept) | security | limits | all |
//!         vxlan-encap | vxlan-decap (no switch: the tunnel's per-frame
//!         work on 64-byte inner frames, see `weir_benches::tunnel`; <macs>
//!         is the number of inner flows) |
//!         patch-path | vxlan-path | vxlan3-path (two bridges joined by a
//!         patch pair or by a VXLAN tunnel, whose flood list names one
//!         remote or, vxlan3, two: a frame's whole way, see
//!         `weir_benches::path`; <macs> is the number of flows)
//! ```
//!
//! Set-up (switch, FDB pre-load, frames) costs the same for any packet count,
//! so the difference of two runs' totals divided by the difference of their
//! packet counts is the per-packet cost.

use std::hint::black_box;

use anyhow::{bail, Context, Result};
use weir_benches::path::{PathCase, PathRig};
use weir_benches::tunnel::{TunnelCase, TunnelRig};
use weir_benches::{Rig, Scenario, BURST};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [case, macs, packets] = args.as_slice() else {
        bail!(
            "usage: switch-insns <unicast|unicast-pool|unicast-run8|unicast-run32|flood|vlan|vlan-access|vlan-trunk|acl-N|acl-N-new|security|limits|all|vxlan-encap|vxlan-decap|patch-path|vxlan-path> <macs> <packets>"
        );
    };
    let macs: u32 = macs
        .parse()
        .with_context(|| format!("parsing MAC count {macs:?}"))?;
    let packets: usize = packets
        .parse()
        .with_context(|| format!("parsing packet count {packets:?}"))?;
    if !packets.is_multiple_of(BURST) {
        bail!("packet count {packets} is not a multiple of the {BURST}-frame burst");
    }
    let tunnel = match case.as_str() {
        "vxlan-encap" => Some(TunnelCase::Encap),
        "vxlan-decap" => Some(TunnelCase::Decap),
        _ => None,
    };
    if let Some(tc) = tunnel {
        let mut rig = TunnelRig::new(tc, macs);
        let mut done = 0usize;
        while done < packets {
            done += black_box(rig.step());
        }
        if rig.failed() != 0 {
            bail!("{} frames refused: the case is broken", rig.failed());
        }
        println!("{case} flows={macs} packets={done}");
        return Ok(());
    }
    let path = match case.as_str() {
        "patch-path" => Some(PathCase::Patch),
        "vxlan-path" => Some(PathCase::Vxlan),
        "vxlan3-path" => Some(PathCase::Vxlan3),
        _ => None,
    };
    if let Some(pc) = path {
        let mut rig = PathRig::new(pc, macs);
        let mut done = 0usize;
        while done < packets {
            done += black_box(rig.step());
        }
        if rig.drops() != 0 {
            bail!("{} frames dropped: the case is broken", rig.drops());
        }
        println!("{case} flows={macs} packets={done}");
        return Ok(());
    }
    let (scenario, pooled) = match case.as_str() {
        "unicast" => (Scenario::unicast(macs), false),
        "unicast-pool" => (Scenario::unicast(macs), true),
        "unicast-run8" => (Scenario::unicast_runs(macs, 8), false),
        "unicast-run32" => (Scenario::unicast_runs(macs, 32), false),
        "flood" => (Scenario::broadcast(macs), false),
        "vlan" => (Scenario::tagged(macs), false),
        "vlan-access" => (Scenario::access(macs), false),
        "vlan-trunk" => (Scenario::trunk(macs), false),
        "security" => (Scenario::secured(macs), false),
        "limits" => (Scenario::limited(macs), false),
        "all" => (Scenario::all_features(macs), false),
        other => {
            let (rules, new) = match other.strip_suffix("-new") {
                Some(r) => (r, true),
                None => (other, false),
            };
            match rules.strip_prefix("acl-").map(str::parse::<u32>) {
                Some(Ok(rules)) if new => (Scenario::acl_new_flows(macs, rules), false),
                Some(Ok(rules)) => (Scenario::acl(macs, rules), false),
                _ => bail!("unknown case {other:?}"),
            }
        }
    };
    let mut rig = Rig::new(scenario);
    let mut done = 0usize;
    while done < packets {
        done += if pooled {
            black_box(rig.step_pooled())
        } else {
            black_box(rig.step_recycled())
        };
    }
    if rig.drops() != 0 {
        bail!(
            "{} frames dropped: the case is not forwardable as built",
            rig.drops()
        );
    }
    println!("{case} macs={macs} packets={done}");
    Ok(())
}
