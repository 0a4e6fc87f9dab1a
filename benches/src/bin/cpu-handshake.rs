//! Round-trip time of one cache line passed between two CPUs.
//!
//! Two threads, pinned to CPU A and CPU B, take turns incrementing one atomic
//! word: each waits for the other's value and writes the next. Every turn
//! moves the line from one CPU's cache to the other's, so the time per round
//! trip is twice the cost of a line transfer between them, the same transfer
//! a vhost-user ring entry or frame buffer makes between a guest's vCPU (or a
//! generator) and the switch's worker.
//!
//! On a virtual machine this cost depends on where the hypervisor has placed
//! the two vCPUs and changes while they run; `benches/vhost-peers.sh` records
//! it before and after every measurement so that runs can be compared by the
//! state the host was in (docs/benchmarks.md).
//!
//! Usage: `cpu-handshake [CPU_A CPU_B [ROUND_TRIPS [BATCHES]]]` (defaults 0 1
//! 20000 5). Prints `min median max` nanoseconds per round trip over the
//! batches.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The word the threads pass, alone on its cache line.
#[repr(align(128))]
struct Line(AtomicU64);

fn arg(args: &[String], i: usize, default: u64) -> anyhow::Result<u64> {
    match args.get(i) {
        None => Ok(default),
        Some(s) => s
            .parse()
            .map_err(|_| anyhow::anyhow!("argument {i} ({s:?}) is not a number")),
    }
}

fn pin(cpu: usize) -> anyhow::Result<()> {
    if core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
        Ok(())
    } else {
        anyhow::bail!("cannot run on CPU {cpu}")
    }
}

/// Waits until the word holds `want` (the other side's turn is done).
fn wait_for(line: &Line, want: u64) {
    // Acquire: pairs with the other thread's Release store of `want`.
    while line.0.load(Ordering::Acquire) != want {
        std::hint::spin_loop();
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let a = arg(&args, 1, 0)? as usize;
    let b = arg(&args, 2, 1)? as usize;
    let trips = arg(&args, 3, 20_000)?.max(1);
    let batches = arg(&args, 4, 5)?.max(1);
    if a == b {
        anyhow::bail!("the two CPUs must differ (got {a} twice)");
    }

    let line = Arc::new(Line(AtomicU64::new(0)));
    let total = 2 * trips * batches;
    // The peer reports whether it could pin itself before the first turn:
    // without that, a failure there would leave this thread waiting forever.
    let (pinned_tx, pinned_rx) = std::sync::mpsc::channel();
    let peer = {
        let line = Arc::clone(&line);
        std::thread::spawn(move || -> anyhow::Result<()> {
            let pinned = pin(b);
            let ok = pinned.is_ok();
            let _ = pinned_tx.send(pinned);
            if !ok {
                return Ok(());
            }
            // The main thread writes the odd values, this one the even ones.
            let mut v = 1;
            while v < total {
                wait_for(&line, v);
                // Release: the other side may go on once it sees the new value.
                line.0.store(v + 1, Ordering::Release);
                v += 2;
            }
            Ok(())
        })
    };
    pinned_rx
        .recv()
        .map_err(|_| anyhow::anyhow!("the thread for CPU {b} ended before its first turn"))??;
    pin(a)?;
    let mut per_trip = Vec::with_capacity(batches as usize);
    let mut v = 0;
    for _ in 0..batches {
        let t = Instant::now();
        for _ in 0..trips {
            // Release: handed to the peer, which answers with v + 1.
            line.0.store(v + 1, Ordering::Release);
            wait_for(&line, v + 2);
            v += 2;
        }
        per_trip.push(t.elapsed().as_nanos() as f64 / trips as f64);
    }
    peer.join()
        .map_err(|_| anyhow::anyhow!("the thread on CPU {b} panicked"))??;
    per_trip.sort_by(f64::total_cmp);
    println!(
        "{:.1} {:.1} {:.1}",
        per_trip[0],
        per_trip[per_trip.len() / 2],
        per_trip[per_trip.len() - 1]
    );
    Ok(())
}
