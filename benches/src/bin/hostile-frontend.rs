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

use std::fs::File;
use std::io::{IoSlice, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vhost_user::defs::{
    DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE, F_CSUM, F_HOST_TSO4, F_INDIRECT_DESC,
    F_PROTOCOL_FEATURES, F_VERSION_1, NET_HDR_BYTES,
};
use vmm_sys_util::eventfd::EventFd;

/// Guest memory: one memfd at guest address 0.
const MEM_BYTES: u64 = 0x60_0000;
/// The frontend's virtual address of guest address 0 (only translated).
const UADDR: u64 = 0x7f00_0000_0000;
/// Descriptors per virtqueue.
const QSIZE: u16 = 256;
/// Per-descriptor TX frame buffers start here, 2 KiB each.
const TX_BUF: u64 = 0x10_0000;
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
            let mut g = Guest::new()?;
            let fe = g.attach(sock, 0)?;
            for i in 0..8 {
                g.tx_frame(i, &frame(64, i as u8));
            }
            std::thread::sleep(Duration::from_millis(20));
            drop(fe);
        }
        "closed-fds" => {
            let mut g = Guest::new()?;
            let fe = g.attach(sock, 0)?;
            // Our copies of the kick and call eventfds go away; weir holds its own.
            g.kick = None;
            g.call = None;
            for i in 0..8 {
                g.tx_frame(i, &frame(64, i as u8));
            }
            std::thread::sleep(Duration::from_millis(20));
            drop(fe);
        }
        "blocking-call" => {
            let mut g = Guest::new()?;
            let fe = g.attach(sock, 0)?;
            for call in g.call.iter().flatten() {
                // Clear O_NONBLOCK on the description weir shares, and fill the
                // counter so that one more signal would block its writer.
                // SAFETY: `call` owns this fd and outlives the borrow.
                let fd = unsafe { BorrowedFd::borrow_raw(call.as_raw_fd()) };
                rustix::fs::fcntl_setfl(fd, rustix::fs::OFlags::empty())?;
                call.write(0xffff_ffff_ffff_fffe)?;
            }
            g.post_rx(64);
            for i in 0..64 {
                g.tx_frame(i, &frame(64, i as u8));
            }
            std::thread::sleep(Duration::from_millis(500));
            drop(fe);
        }
        "indirect" => {
            let mut g = Guest::new()?;
            let fe = g.attach(sock, F_INDIRECT_DESC)?;
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
            let mut g = Guest::new()?;
            let fe = g.attach(sock, 0)?;
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
            let mut g = Guest::new()?;
            let fe = g.attach(sock, want)?;
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
            let s = UnixStream::connect(sock)?;
            let ev: Vec<_> = (0..250)
                .map(|_| rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC))
                .collect::<Result<_, _>>()?;
            let fds: Vec<BorrowedFd<'_>> = ev.iter().map(|e| e.as_fd()).collect();
            for _ in 0..64 {
                // GET_FEATURES carries no fd: each message's fds are surplus.
                if send_raw(&s, 1, &[], &fds).is_err() {
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

/// A raw vhost-user message with `fds` attached.
fn send_raw(s: &UnixStream, request: u32, payload: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
    let mut b = Vec::with_capacity(12 + payload.len());
    b.extend_from_slice(&request.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    b.extend_from_slice(payload);
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(250))];
    let mut cmsg = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !cmsg.push(SendAncillaryMessage::ScmRights(fds)) {
        bail!("{} fds do not fit one message", fds.len());
    }
    sendmsg(s, &[IoSlice::new(&b)], &mut cmsg, SendFlags::NOSIGNAL)?;
    Ok(())
}

/// Ring addresses (descriptors, available, used) of virtqueue `vq`.
fn ring_at(vq: u16) -> (u64, u64, u64) {
    let base = 0x4000 * u64::from(vq);
    (base, base + 0x1000, base + 0x2000)
}

/// A guest: memfd memory with the RX and TX rings, written with `pwrite`.
struct Guest {
    mem: File,
    avail_idx: [u16; 2],
    call: Option<[EventFd; 2]>,
    kick: Option<[EventFd; 2]>,
}

impl Guest {
    fn new() -> Result<Guest> {
        let fd = rustix::fs::memfd_create("hostile-guest", rustix::fs::MemfdFlags::CLOEXEC)?;
        rustix::fs::ftruncate(&fd, MEM_BYTES)?;
        Ok(Guest {
            mem: File::from(fd),
            avail_idx: [0; 2],
            call: Some([EventFd::new(0)?, EventFd::new(0)?]),
            kick: Some([EventFd::new(0)?, EventFd::new(0)?]),
        })
    }

    fn write(&self, addr: u64, b: &[u8]) {
        // Guest memory writes cannot fail short of a bug in this program's layout.
        self.mem.write_all_at(b, addr).expect("guest memory write");
    }

    fn put_desc(&self, at: u64, addr: u64, len: u32, flags: u16, next: u16) {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&addr.to_le_bytes());
        b[8..12].copy_from_slice(&len.to_le_bytes());
        b[12..14].copy_from_slice(&flags.to_le_bytes());
        b[14..].copy_from_slice(&next.to_le_bytes());
        self.write(at, &b);
    }

    fn desc(&self, vq: u16, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        self.put_desc(ring_at(vq).0 + 16 * u64::from(i), addr, len, flags, next);
    }

    fn push(&mut self, vq: u16, head: u16) {
        let (_, avail, _) = ring_at(vq);
        let k = usize::from(vq);
        let slot = u64::from(self.avail_idx[k] % QSIZE);
        self.write(avail + 4 + 2 * slot, &head.to_le_bytes());
        self.avail_idx[k] = self.avail_idx[k].wrapping_add(1);
        self.write(avail + 2, &self.avail_idx[k].to_le_bytes());
    }

    fn kick(&self, vq: usize) {
        if let Some(k) = &self.kick {
            let _ = k[vq].write(1);
        }
    }

    /// One frame on the TX queue (vq 1) in descriptor `i`'s buffer.
    fn tx_frame(&mut self, i: u16, f: &[u8]) {
        let head = i % QSIZE;
        let at = TX_BUF + 0x800 * u64::from(head);
        let mut b = vec![0u8; NET_HDR_BYTES];
        b.extend_from_slice(f);
        self.write(at, &b);
        self.desc(1, head, at, b.len() as u32, 0, 0);
        self.push(1, head);
        self.kick(1);
    }

    /// `n` receive buffers on the RX queue (vq 0).
    fn post_rx(&mut self, n: u16) {
        for i in 0..n.min(QSIZE) {
            self.desc(0, i, RX_BUF + 0x800 * u64::from(i), 0x800, DESC_F_WRITE, 0);
            self.push(0, i);
        }
        self.kick(0);
    }

    /// A valid handshake and both rings enabled, with `want` features on top of
    /// VERSION_1 where weir offers them.
    fn attach(&self, sock: &Path, want: u64) -> Result<Frontend> {
        let mut fe = connect(sock)?;
        fe.set_owner()?;
        let offered = fe.get_features()?;
        fe.set_features(F_VERSION_1 | F_PROTOCOL_FEATURES | (offered & want))?;
        let proto = fe.get_protocol_features()?;
        fe.set_protocol_features(proto & VhostUserProtocolFeatures::MQ)?;
        fe.set_mem_table(&[VhostUserMemoryRegionInfo {
            guest_phys_addr: 0,
            memory_size: MEM_BYTES,
            userspace_addr: UADDR,
            mmap_offset: 0,
            mmap_handle: self.mem.as_raw_fd(),
        }])?;
        let (Some(call), Some(kick)) = (&self.call, &self.kick) else {
            bail!("guest without eventfds");
        };
        for vq in 0..2u16 {
            let (desc, avail, used) = ring_at(vq);
            let i = usize::from(vq);
            fe.set_vring_num(i, QSIZE)?;
            fe.set_vring_addr(
                i,
                &VringConfigData {
                    queue_max_size: QSIZE,
                    queue_size: QSIZE,
                    flags: 0,
                    desc_table_addr: UADDR + desc,
                    used_ring_addr: UADDR + used,
                    avail_ring_addr: UADDR + avail,
                    log_addr: None,
                },
            )?;
            fe.set_vring_base(i, 0)?;
            fe.set_vring_call(i, &call[i])?;
            fe.set_vring_kick(i, &kick[i])?;
            fe.set_vring_enable(i, true)?;
        }
        Ok(fe)
    }
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

/// A broadcast frame of `len` bytes (without FCS) from a fixed guest MAC.
fn frame(len: usize, seq: u8) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&[0x02, 0x66, 0, 0, 0, seq]);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f
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
