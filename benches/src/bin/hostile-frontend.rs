//! A hostile vhost-user frontend for `benches/soak.sh`: connects to one of a
//! running weir's vhost-user server sockets and cycles through attacks that a
//! tenant's guest could mount, until its time is up.
//!
//! Each attack is a complete connection: weir must drop it, count what it
//! refused, and serve the next one. What the attacks aim at is in
//! `docs/security.md`; the unit and integration tests check each defence on its
//! own, this program keeps them all busy for minutes to an hour so that
//! `soak.sh` can watch for leaks and for harm to the healthy ports.
//!
//! Usage: `hostile-frontend SOCKET SECONDS [ATTACK,...]`. Attacks: `reconnect`,
//! `closed-fds`, `blocking-call`, `indirect`, `zero-len`, `tso-mss1`,
//! `fd-flood`, `garbage` (default: all). Prints one line per cycle:
//! `cycle N attack NAME ok|refused|error: ...`; exits 0 at the end (an attack
//! being refused is the expected outcome, not a failure).

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost::vhost_user::Frontend;
use vhost_user::defs::{
    DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE, F_CSUM, F_HOST_TSO4, F_INDIRECT_DESC, NET_HDR_BYTES,
};
use vhost_user::testguest::{self, Guest, Handshake, Layout, RawFrontend};

/// Descriptors per virtqueue.
const QSIZE: u16 = 256;
/// Per-descriptor TX frame buffers start here, 2 KiB each.
const TX_BUF: u64 = 0x10_0000;
/// Guest memory: one memfd at guest address 0.
const LAYOUT: Layout = Layout {
    mem_bytes: 0x60_0000,
    queue_size: QSIZE,
    tx_buf: TX_BUF,
    tx_stride: 0x800,
};
/// Receive buffers, 2 KiB each.
const RX_BUF: u64 = 0x20_0000;
/// One 64 KiB TSO frame.
const TSO_BUF: u64 = 0x30_0000;
/// Indirect tables, 4 KiB each.
const INDIRECT: u64 = 0x40_0000;

const ATTACKS: [&str; 8] = [
    "reconnect",
    "closed-fds",
    "blocking-call",
    "indirect",
    "zero-len",
    "tso-mss1",
    "fd-flood",
    "garbage",
];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        bail!("usage: hostile-frontend SOCKET SECONDS [ATTACK,...]; attacks: {ATTACKS:?}");
    }
    let sock = PathBuf::from(&args[1]);
    let secs: f64 = args[2].parse().context("SECONDS")?;
    let attacks: Vec<String> = match args.get(3) {
        Some(list) => list.split(',').map(str::to_owned).collect(),
        None => ATTACKS.iter().map(|s| (*s).to_owned()).collect(),
    };
    if let Some(bad) = attacks.iter().find(|a| !ATTACKS.contains(&a.as_str())) {
        bail!("unknown attack {bad:?}; attacks: {ATTACKS:?}");
    }
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut cycle = 0u64;
    while Instant::now() < end {
        for attack in &attacks {
            if Instant::now() >= end {
                break;
            }
            cycle += 1;
            let outcome = match run(&sock, attack) {
                Ok(()) => "ok".to_owned(),
                Err(e) => format!("error: {e:#}"),
            };
            println!("cycle {cycle} attack {attack} {outcome}");
            std::io::stdout().flush().ok();
        }
    }
    Ok(())
}

fn run(sock: &Path, attack: &str) -> Result<()> {
    match attack {
        "reconnect" => {
            let mut g = Guest::new(LAYOUT, 0)?;
            let fe = attach(&g, sock, 0)?;
            for i in 0..8 {
                tx_frame(&mut g, &frame(i as u8));
            }
            std::thread::sleep(Duration::from_millis(20));
            drop(fe);
        }
        "closed-fds" => {
            let mut g = Guest::new(LAYOUT, 0)?;
            let fe = attach(&g, sock, 0)?;
            // Our copies of the kick and call eventfds go away; weir holds its own.
            g.kick = [None, None];
            g.call = [None, None];
            for i in 0..8 {
                tx_frame(&mut g, &frame(i as u8));
            }
            std::thread::sleep(Duration::from_millis(20));
            drop(fe);
        }
        "blocking-call" => {
            let mut g = Guest::new(LAYOUT, 0)?;
            let fe = attach(&g, sock, 0)?;
            for call in g.call.iter().flatten() {
                // Clear O_NONBLOCK on the description weir shares, and fill the
                // counter so that one more signal would block its writer.
                // SAFETY: `call` owns this fd and outlives the borrow.
                let fd = unsafe { BorrowedFd::borrow_raw(call.as_raw_fd()) };
                rustix::fs::fcntl_setfl(fd, rustix::fs::OFlags::empty())?;
                call.write(0xffff_ffff_ffff_fffe)?;
            }
            post_rx(&mut g, 64);
            for i in 0..64 {
                tx_frame(&mut g, &frame(i as u8));
            }
            std::thread::sleep(Duration::from_millis(500));
            drop(fe);
        }
        "indirect" => {
            let mut g = Guest::new(LAYOUT, 0)?;
            let fe = attach(&g, sock, F_INDIRECT_DESC)?;
            // Every head is an indirect table of 256 descriptors chained through
            // each other in a loop; the last one points back at the first.
            for h in 0..QSIZE {
                let table = INDIRECT + 0x1000 * u64::from(h);
                for i in 0..256u16 {
                    let next = (i + 1) % 256;
                    g.put_desc(table + 16 * u64::from(i), TX_BUF, 1, DESC_F_NEXT, next);
                }
                g.desc(1, h, table, 256 * 16, DESC_F_INDIRECT, 0);
                g.push(1, h);
            }
            g.kick(1);
            std::thread::sleep(Duration::from_millis(200));
            drop(fe);
        }
        "zero-len" => {
            let mut g = Guest::new(LAYOUT, 0)?;
            let fe = attach(&g, sock, 0)?;
            // One chain through the whole ring, every descriptor empty.
            for i in 0..QSIZE {
                g.desc(1, i, TX_BUF, 0, DESC_F_NEXT, (i + 1) % QSIZE);
            }
            for _ in 0..QSIZE {
                g.push(1, 0);
            }
            g.kick(1);
            std::thread::sleep(Duration::from_millis(200));
            drop(fe);
        }
        "tso-mss1" => {
            let want = F_CSUM | F_HOST_TSO4;
            let mut g = Guest::new(LAYOUT, 0)?;
            let fe = attach(&g, sock, want)?;
            let f = tso_frame(65_000);
            let mut hdr = [0u8; NET_HDR_BYTES];
            hdr[0] = 1; // NEEDS_CSUM
            hdr[1] = 1; // GSO_TCPV4
            hdr[2..4].copy_from_slice(&54u16.to_le_bytes()); // hdr_len
            hdr[4..6].copy_from_slice(&1u16.to_le_bytes()); // gso_size: mss 1
            hdr[6..8].copy_from_slice(&34u16.to_le_bytes()); // csum_start
            hdr[8..10].copy_from_slice(&16u16.to_le_bytes()); // csum_offset
            let mut b = hdr.to_vec();
            b.extend_from_slice(&f);
            for i in 0..8u16 {
                g.write(TSO_BUF, &b);
                g.desc(1, i, TSO_BUF, b.len() as u32, 0, 0);
                g.push(1, i);
            }
            g.kick(1);
            std::thread::sleep(Duration::from_millis(200));
            drop(fe);
        }
        "fd-flood" => {
            // Messages carrying as many fds as one SCM_RIGHTS takes, again
            // and again, without waiting for any answer.
            let s = RawFrontend(UnixStream::connect(sock)?);
            let ev: Vec<_> = (0..250)
                .map(|_| rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC))
                .collect::<Result<_, _>>()?;
            let fds: Vec<BorrowedFd<'_>> = ev.iter().map(|e| e.as_fd()).collect();
            for _ in 0..64 {
                // GET_FEATURES carries no fd: each message's fds are surplus.
                if s.send(1, 0, &[], &fds).is_err() {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        "garbage" => {
            let s = UnixStream::connect(sock)?;
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            let mut b = [0u8; 4096];
            for chunk in b.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
            }
            let _ = (&s).write_all(&b);
            std::thread::sleep(Duration::from_millis(20));
        }
        other => bail!("unknown attack {other:?}"),
    }
    Ok(())
}

/// `n` receive buffers on the RX queue (vq 0) of `g`.
fn post_rx(g: &mut Guest, n: u16) {
    for i in 0..n.min(QSIZE) {
        g.desc(0, i, RX_BUF + 0x800 * u64::from(i), 0x800, DESC_F_WRITE, 0);
        g.push(0, i);
    }
    g.kick(0);
}

/// A valid handshake and both rings enabled, with `want` features on top of
/// VERSION_1 where weir offers them.
fn attach(g: &Guest, sock: &Path, want: u64) -> Result<Frontend> {
    let how = Handshake {
        features: want,
        protocol: VhostUserProtocolFeatures::MQ,
        enable: true,
    };
    Ok(g.attach_with(connect(sock)?, &how)?)
}

/// One frame on the TX queue (vq 1), kicked.
fn tx_frame(g: &mut Guest, f: &[u8]) {
    g.send_frame(f);
    g.kick(1);
}

/// Connects, retrying for a few seconds while weir still tears down the
/// previous connection.
fn connect(sock: &Path) -> Result<Frontend> {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        match Frontend::connect(sock, 3) {
            Ok(fe) => return Ok(fe),
            Err(e) if Instant::now() >= end => {
                return Err(e).with_context(|| format!("connecting to {}", sock.display()))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// A 64-byte broadcast frame from a fixed guest MAC.
fn frame(seq: u8) -> [u8; 64] {
    testguest::frame([0x02, 0x66, 0, 0, 0, seq])
}

/// An IPv4 TCP frame with `payload` bytes, addressed to a MAC nobody has, so
/// that weir floods it to every port.
fn tso_frame(payload: usize) -> Vec<u8> {
    let mut f = vec![0u8; 54 + payload];
    f[..6].copy_from_slice(&[0x02, 0x77, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&[0x02, 0x66, 0, 0, 0, 0xee]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&[10, 66, 0, 1]);
    ip[16..20].copy_from_slice(&[10, 66, 0, 2]);
    let tcp = &mut f[34..54];
    tcp[0..2].copy_from_slice(&4321u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x18;
    tcp[14..16].copy_from_slice(&1024u16.to_be_bytes());
    f
}
