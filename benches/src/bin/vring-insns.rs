//! Runs weir's split-ring fast path against an in-process guest for an exact
//! number of frames, for instruction counting under
//! `valgrind --tool=callgrind` (see `benches/vring-callgrind.sh`).
//!
//! ```text
//! vring-insns <layout> <frame-bytes> <frames> [<path>]
//!   layout: single | chain | indirect | empty (polls of an empty ring; <frames> polls)
//!   path:   bridge | patch | vxlan | vxlan3: the frames cross a switch on their way
//!           from the guest's TX ring to its RX ring ([`Path::carry`], four
//!           flows), guest to guest as a worker takes them; <frame-bytes>
//!           must then be 64, the length of the switch cases' frame
//! ```
//!
//! Set-up costs the same for any frame count, so the difference of two runs'
//! totals divided by the difference of their frame counts is the per-frame cost.

use std::hint::black_box;

use anyhow::{bail, Context, Result};
use weir_benches::path::{Path, PathCase};
use weir_benches::vring::{Layout, VringRig, BURST};

/// Flows of the path cases: the switch cases' and `callgrind.sh`'s `:4`.
const PATH_FLOWS: u32 = 4;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (layout, len, frames, path) = match args.as_slice() {
        [l, n, f] => (l, n, f, None),
        [l, n, f, p] => (l, n, f, Some(p.as_str())),
        _ => bail!(
            "usage: vring-insns <single|chain|indirect|empty> <frame-bytes> <frames> \
             [bridge|patch|vxlan|vxlan3]"
        ),
    };
    let len: usize = len
        .parse()
        .with_context(|| format!("parsing frame length {len:?}"))?;
    if !(14..=1514).contains(&len) {
        bail!("frame length {len} outside 14..=1514");
    }
    let frames: usize = frames
        .parse()
        .with_context(|| format!("parsing frame count {frames:?}"))?;
    if !frames.is_multiple_of(BURST) {
        bail!("frame count {frames} is not a multiple of the {BURST}-frame burst");
    }
    let pool = weir_benches::vring_pool();
    if layout == "empty" {
        let mut rig = VringRig::new(Layout::Single, len, pool);
        for _ in 0..frames {
            black_box(rig.empty_poll());
        }
        println!("empty polls={frames}");
        return Ok(());
    }
    let Some(l) = Layout::parse(layout) else {
        bail!("unknown layout {layout:?}");
    };
    let mut path = match path {
        None => None,
        Some(p) => {
            let case = match p {
                "bridge" => PathCase::Bridge,
                "patch" => PathCase::Patch,
                "vxlan" => PathCase::Vxlan,
                "vxlan3" => PathCase::Vxlan3,
                _ => bail!("unknown path {p:?} (bridge, patch, vxlan or vxlan3)"),
            };
            Some(Path::new(case, PATH_FLOWS))
        }
    };
    let mut rig = match &path {
        None => VringRig::new(l, len, pool),
        Some(p) => {
            let frames: Vec<Vec<u8>> = (0..PATH_FLOWS).map(|i| p.frame(i).to_vec()).collect();
            if frames[0].len() != len {
                bail!("the path cases carry {}-byte frames", frames[0].len());
            }
            VringRig::with_frames(l, frames, pool)
        }
    };
    let mut done = 0usize;
    while done < frames {
        let n = black_box(match &mut path {
            None => rig.step(),
            Some(p) => rig.step_through(|b| {
                p.carry(b);
            }),
        });
        if n != BURST {
            bail!("a step moved {n} frames, not {BURST}");
        }
        done += n;
    }
    if let Err(e) = rig.verify() {
        bail!("{layout} {len} B: {e}");
    }
    if let Some(p) = &path {
        if p.drops() != 0 {
            bail!("{layout} {len} B: {} frames dropped on the path", p.drops());
        }
    }
    println!("{layout} len={len} frames={done}");
    Ok(())
}
