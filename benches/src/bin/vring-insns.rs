//! Runs weir's split-ring fast path against an in-process guest for an exact
//! number of frames, for instruction counting under
//! `valgrind --tool=callgrind` (see `benches/vring-callgrind.sh`).
//!
//! ```text
//! vring-insns <layout> <frame-bytes> <frames>
//!   layout: single | chain | indirect | empty (polls of an empty ring; <frames> polls)
//! ```
//!
//! Set-up costs the same for any frame count, so the difference of two runs'
//! totals divided by the difference of their frame counts is the per-frame cost.

use std::hint::black_box;

use anyhow::{bail, Context, Result};
use weir_benches::vring::{Layout, VringRig, BURST};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [layout, len, frames] = args.as_slice() else {
        bail!("usage: vring-insns <single|chain|indirect|empty> <frame-bytes> <frames>");
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
    let mut rig = VringRig::new(l, len, pool);
    let mut done = 0usize;
    while done < frames {
        let n = black_box(rig.step());
        if n != BURST {
            bail!("a step moved {n} frames, not {BURST}");
        }
        done += n;
    }
    if let Err(e) = rig.verify() {
        bail!("{layout} {len} B: {e}");
    }
    println!("{layout} len={len} frames={done}");
    Ok(())
}
