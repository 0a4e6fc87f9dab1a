//! Drives two VFIO NICs through weir's drivers: sends tagged frames from each to
//! the other and checks they arrive, then optionally forwards between them.
//!
//! ```text
//! vfio_fwd E1000E_BDF VIRTIO_BDF [--frames N] [--forward SECONDS]
//! ```
//!
//! The two NICs must be on one segment (in the QEMU guest test, one hub). Frames
//! are broadcast with the local experimental EtherType 0x88b5 and a payload
//! `weir-vfio <from>-><to> seq=<n>`, which the host-side test finds in QEMU's
//! packet dump. Prints `VFIO-FWD:` lines; exits 0 when every frame arrived in
//! both directions.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use dataplane::mempool::{HugepagePolicy, MempoolConfig};
use dataplane::{Burst, LinkState, Mempool, Port};

const ETHERTYPE: u16 = 0x88b5;

fn frame(pool: &'static Mempool, tag: &str, seq: u32) -> Result<dataplane::Mbuf> {
    let mut m = pool.alloc().context("mempool empty")?;
    let mut f = vec![0xffu8; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f.extend_from_slice(&ETHERTYPE.to_be_bytes());
    f.extend_from_slice(format!("weir-vfio {tag} seq={seq}").as_bytes());
    f.resize(64, 0);
    m.extend_from_slice(&f).context("frame too big")?;
    Ok(m)
}

/// Sends `n` frames from `a` (bursts of up to 32, interleaved with receiving so
/// that neither ring overflows), and counts the tagged ones `b` receives.
fn one_way(
    pool: &'static Mempool,
    a: &mut dyn Port,
    b: &mut dyn Port,
    tag: &str,
    n: u32,
) -> Result<u32> {
    let want = format!("weir-vfio {tag} seq=");
    let (mut next, mut sent, mut got) = (0u32, 0usize, 0u32);
    let (mut tx, mut rx) = (Burst::new(), Burst::new());
    let deadline = Instant::now() + Duration::from_secs(20);
    while got < n && Instant::now() < deadline {
        while next < n && !tx.is_full() {
            tx.push(frame(pool, tag, next)?);
            next += 1;
        }
        sent += a.tx_burst(&mut tx);
        let k = b.rx_burst(&mut rx);
        for m in rx.drain(..) {
            let d = m.data();
            if d.len() >= 14
                && d[12..14] == ETHERTYPE.to_be_bytes()
                && d[14..].starts_with(want.as_bytes())
            {
                got += 1;
            }
        }
        a.housekeeping();
        b.housekeeping();
        if k == 0 {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    println!("VFIO-FWD: {tag}: sent {sent}/{n}, received {got}/{n}");
    Ok(got)
}

fn main() -> Result<()> {
    // The drivers log what they negotiated (MAC, virtio features) at info.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        bail!("usage: vfio_fwd E1000E_BDF VIRTIO_BDF [--frames N] [--forward SECONDS]");
    }
    let mut frames = 8u32;
    let mut forward_s = 0u64;
    let mut i = 3;
    while i < args.len() {
        match args[i].as_str() {
            "--frames" => frames = args.get(i + 1).context("--frames N")?.parse()?,
            "--forward" => forward_s = args.get(i + 1).context("--forward S")?.parse()?,
            o => bail!("unknown option {o}"),
        }
        i += 2;
    }
    let pool = Mempool::create(&MempoolConfig {
        name: "vfio-fwd".into(),
        n_mbufs: 4096,
        hugepages: HugepagePolicy::Auto,
        ..MempoolConfig::default()
    })
    .context("creating the mempool")?;
    let mut e = pmd::open_vfio(&args[1], pool, 1)
        .with_context(|| format!("opening {}", args[1]))?
        .pop()
        .context("no queue")?;
    println!("VFIO-FWD: opened {} (e1000e)", args[1]);
    let mut v = pmd::open_vfio(&args[2], pool, 1)
        .with_context(|| format!("opening {}", args[2]))?
        .pop()
        .context("no queue")?;
    println!("VFIO-FWD: opened {} (virtio-net)", args[2]);

    let t0 = Instant::now();
    while (e.link() != LinkState::Up || v.link() != LinkState::Up)
        && t0.elapsed() < Duration::from_secs(5)
    {
        e.housekeeping();
        v.housekeeping();
        std::thread::sleep(Duration::from_millis(10));
    }
    println!(
        "VFIO-FWD: link e1000e={} virtio={} after {} ms",
        e.link().as_str(),
        v.link().as_str(),
        t0.elapsed().as_millis()
    );

    let a = one_way(pool, &mut *e, &mut *v, "e1000e->virtio", frames)?;
    let b = one_way(pool, &mut *v, &mut *e, "virtio->e1000e", frames)?;

    if forward_s > 0 {
        // A plain two-port forwarder, as a worker would run it.
        let end = Instant::now() + Duration::from_secs(forward_s);
        let (mut fwd, mut burst) = ([0u64; 2], Burst::new());
        while Instant::now() < end {
            e.rx_burst(&mut burst);
            fwd[0] += v.tx_burst(&mut burst) as u64;
            burst.clear();
            v.rx_burst(&mut burst);
            fwd[1] += e.tx_burst(&mut burst) as u64;
            burst.clear();
            e.housekeeping();
            v.housekeeping();
        }
        println!(
            "VFIO-FWD: forwarded e1000e->virtio {} virtio->e1000e {}",
            fwd[0], fwd[1]
        );
    }
    for (name, p) in [("e1000e", &e), ("virtio", &v)] {
        let s = p.stats().snapshot();
        println!(
            "VFIO-FWD: stats {name}: rx_errors {} tx_errors {} drops {}",
            s.rx_errors,
            s.tx_errors,
            s.total_drops()
        );
    }
    let ok = a == frames && b == frames;
    println!("VFIO-FWD: {}", if ok { "PASS" } else { "FAIL" });
    drop(e);
    drop(v);
    std::process::exit(if ok { 0 } else { 1 });
}
