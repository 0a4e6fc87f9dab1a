//! Deterministic stand-in for libFuzzer: runs each target on xorshift-generated
//! inputs, or on the files named on the command line (a crash reproducer).
//!
//! `replay [--iters N] [--seconds S] [TARGET] [FILE...]`; TARGET is
//! a target's name (`vring_chain`, `vhost_msg`, `tso_header`,
//! `switch_frame`, `tunnel_frame`) or `all` (default).

use std::time::{Duration, Instant};

use weir_fuzz::targets::{run_random, Target};

fn main() {
    let mut iters: u64 = 100_000;
    let mut secs: Option<u64> = None;
    let mut target = "all".to_owned();
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--iters" => iters = args.next().and_then(|v| v.parse().ok()).expect("--iters N"),
            "--seconds" => secs = args.next().and_then(|v| v.parse().ok()),
            t if files.is_empty() && (t == "all" || Target::ALL.iter().any(|x| x.name() == t)) => {
                target = t.to_owned()
            }
            f => files.push(f.to_owned()),
        }
    }
    let targets: Vec<Target> = Target::ALL
        .into_iter()
        .filter(|t| target == "all" || t.name() == target)
        .collect();
    if !files.is_empty() {
        for f in &files {
            let data = std::fs::read(f).expect("reading input");
            for t in &targets {
                t.run(&data);
            }
        }
        println!("replayed {} files", files.len());
        return;
    }
    for t in targets {
        let start = Instant::now();
        let n = match secs {
            Some(s) => {
                let end = start + Duration::from_secs(s);
                let mut seed = 1u64;
                let mut n = 0;
                while Instant::now() < end {
                    n += run_random(t, seed, 10_000);
                    seed += 1;
                }
                n
            }
            None => run_random(t, 1, iters),
        };
        println!(
            "{}: {n} inputs in {:?}, no failure",
            t.name(),
            start.elapsed()
        );
    }
}
