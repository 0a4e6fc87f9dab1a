//! The fuzz target bodies: each takes arbitrary bytes and must never panic (an
//! assertion here states a property weir relies on, so its failure is a bug
//! too).
//!
//! Shared by libFuzzer (`fuzz_targets/`), `src/bin/replay.rs` and
//! `vhost-user/tests/fuzz_replay.rs`, which includes this file by path; it
//! therefore uses only crates both have (`dataplane`, `vhost_user`, `vm_memory`).

use std::cell::RefCell;
use std::sync::{Arc, OnceLock};

use dataplane::mempool::{HugepagePolicy, MempoolConfig};
use dataplane::switch::{Bridge, Fdb, FdbConfig, Forwarder, PortEntry, Switch};
use dataplane::wire::gso::{MAX_UDP_SEGMENTS, MIN_MSS};
use dataplane::wire::tunnel::{
    geneve_vni, parse_outer, source_port, vxlan_vni, DecapError, OuterHeader, TunnelKind, OUTER_LEN,
};
use dataplane::wire::vlan;
use dataplane::wire::{
    complete_l4_checksum, parse_l2, parse_l2_addrs, ArpPacket, EthFrame, Gso, GsoKind, Ipv4Packet,
    Ipv6Packet, PartialCsum, TsoPlan, VlanTag,
};
use dataplane::{BridgeId, Burst, DropReason, Mempool, PortId, QueueStats, WorkerId};
use vhost_user::defs::{
    net_config, DESC_F_WRITE, MAX_FRAME_BYTES, NET_HDR_BYTES, NET_HDR_GSO_NONE,
    NET_HDR_GSO_SIZE_OFF, NET_HDR_GSO_TCPV4, NET_HDR_GSO_TCPV6, NET_HDR_GSO_TYPE_OFF,
};
use vhost_user::guest_mem::{GuestAddr, GuestMemory};
use vhost_user::msg::{self, FdKind, Header, Limits, HDR_BYTES};
use vhost_user::vring::{
    max_frame, Cursor, Offload, RingAddrs, SplitRing, BURST_DESC_BUDGET, MAX_FRAME_DESCS,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Guest memory of the ring target: descriptor table, available and used
/// rings at fixed addresses, buffers anywhere.
const MEM_BYTES: usize = 0x1_0000;
const DESC: u64 = 0x0;
const AVAIL: u64 = 0x1000;
const USED: u64 = 0x2000;

/// A fuzz target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// [`vring_chain`].
    VringChain,
    /// [`vhost_msg`].
    VhostMsg,
    /// [`tso_header`].
    TsoHeader,
    /// [`switch_frame`].
    SwitchFrame,
    /// [`tunnel_frame`].
    TunnelFrame,
}

impl Target {
    /// Every target.
    pub const ALL: [Target; 5] = [
        Target::VringChain,
        Target::VhostMsg,
        Target::TsoHeader,
        Target::SwitchFrame,
        Target::TunnelFrame,
    ];

    /// Its name (the cargo-fuzz target name).
    pub fn name(self) -> &'static str {
        match self {
            Target::VringChain => "vring_chain",
            Target::VhostMsg => "vhost_msg",
            Target::TsoHeader => "tso_header",
            Target::SwitchFrame => "switch_frame",
            Target::TunnelFrame => "tunnel_frame",
        }
    }

    /// Runs it on one input.
    pub fn run(self, data: &[u8]) {
        match self {
            Target::VringChain => vring_chain(data),
            Target::VhostMsg => vhost_msg(data),
            Target::TsoHeader => tso_header(data),
            Target::SwitchFrame => switch_frame(data),
            Target::TunnelFrame => tunnel_frame(data),
        }
    }

    /// Longest input worth generating at random.
    fn max_len(self) -> usize {
        match self {
            Target::VringChain => 0x3200,
            Target::VhostMsg => 600,
            Target::TsoHeader => 3000,
            Target::SwitchFrame => 2000,
            Target::TunnelFrame => 1700,
        }
    }
}

/// xorshift64*: deterministic inputs without a dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Runs `t` on `n` inputs generated from `seed`; returns `n`.
pub fn run_random(t: Target, seed: u64, n: u64) -> u64 {
    let mut rng = XorShift(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut buf = vec![0u8; t.max_len()];
    for _ in 0..n {
        let len = (rng.next() as usize) % (t.max_len() + 1);
        // Mostly small values: lengths, indices and flags that mean something.
        for b in buf[..len].iter_mut() {
            let r = rng.next();
            *b = if r & 3 == 0 {
                (r >> 8) as u8
            } else {
                ((r >> 8) & 0x0f) as u8
            };
        }
        t.run(&buf[..len]);
    }
    n
}

fn pool() -> &'static Mempool {
    static POOL: OnceLock<&'static Mempool> = OnceLock::new();
    POOL.get_or_init(|| Mempool::for_tests(512))
}

thread_local! {
    /// One guest memory per thread, cleared for every input.
    static GUEST: RefCell<Option<Arc<GuestMemoryMmap>>> = const { RefCell::new(None) };
}

fn le16(d: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([
        d.get(at).copied().unwrap_or(0),
        d.get(at + 1).copied().unwrap_or(0),
    ])
}

/// Input: `[log2 size, flags, last_avail (le16), memory image...]`. The image
/// is copied to guest address 0 (descriptor table at 0, available ring at
/// 0x1000, used ring at 0x2000). Flags: 1 EVENT_IDX, 2 indirect, 4 mergeable
/// buffers, 8 keep descriptor addresses as given (else folded into twice the
/// memory size, so about half land inside), 16 keep the available index as
/// given (else at most `size` ahead), 32 VIRTIO_NET_F_CSUM, 64
/// VIRTIO_NET_F_GUEST_CSUM. Receives one burst, then transmits two frames
/// (with a partial checksum at offsets taken from the input, where they fit).
pub fn vring_chain(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let size = 1u16 << (data[0] % 9);
    let flags = data[1];
    let last_avail = le16(data, 2);
    let image = &data[4..data.len().min(4 + MEM_BYTES)];
    let gm = GUEST.with(|g| {
        let mut g = g.borrow_mut();
        let gm = g.get_or_insert_with(|| {
            Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_BYTES)]).unwrap())
        });
        Arc::clone(gm)
    });
    gm.write_slice(&vec![0u8; MEM_BYTES], GuestAddress(0))
        .unwrap();
    gm.write_slice(image, GuestAddress(0)).unwrap();
    if flags & 8 == 0 {
        for i in 0..u64::from(size) {
            let at = GuestAddress(DESC + 16 * i);
            let a: u64 = gm.read_obj(at).unwrap();
            gm.write_obj(a % (2 * MEM_BYTES as u64), at).unwrap();
        }
    }
    if flags & 16 == 0 {
        let ahead = u16::from(image.first().copied().unwrap_or(0)) % (size + 1);
        gm.write_obj(last_avail.wrapping_add(ahead), GuestAddress(AVAIL + 2))
            .unwrap();
    }
    let mem = Arc::new(GuestMemory::new(gm));
    let addrs = RingAddrs {
        desc: GuestAddr(DESC),
        avail: GuestAddr(AVAIL),
        used: GuestAddr(USED),
    };
    let ring = SplitRing::new(&mem, addrs, size, flags & 1 != 0, flags & 2 != 0)
        .expect("the fixed layout is valid for every size up to 256");
    let mut cur = Cursor {
        last_avail,
        used_idx: ring.used_idx(),
    };
    ring.suppress_kicks(cur);
    let stats = QueueStats::default();
    let mut burst = Burst::new();
    let before = cur;
    // TSO requests are parsed and checked; without a large-buffer pool an
    // oversize frame is dropped.
    let off = Offload {
        csum: flags & 32 != 0,
        tso4: flags & 128 != 0,
        tso6: flags & 128 != 0,
    };
    let done = ring.dequeue(&mut cur, pool(), &mut burst, off, None, &stats);
    assert_eq!(done.frames, burst.len());
    assert!(
        done.descs_walked <= BURST_DESC_BUDGET + 2 * (MAX_FRAME_DESCS + 2),
        "{} descriptors read in one burst",
        done.descs_walked
    );
    assert!(cur.last_avail.wrapping_sub(before.last_avail) <= size);
    assert_eq!(
        cur.used_idx.wrapping_sub(before.used_idx),
        cur.last_avail.wrapping_sub(before.last_avail),
        "every consumed chain is returned exactly once"
    );
    for m in burst.iter() {
        assert!(m.len() >= 14 && m.len() <= MAX_FRAME_BYTES);
        if let Some(p) = m.partial_csum() {
            assert!(flags & 32 != 0, "NEEDS_CSUM honoured without CSUM");
            assert!(usize::from(p.start) + usize::from(p.offset) + 2 <= m.len());
        }
    }
    burst.clear();

    // Transmit (guest RX) on the same ring from where receive stopped.
    let mut tx = Burst::new();
    for len in [60usize, 1 + usize::from(le16(data, 4)) % 2000] {
        if let Some(mut m) = pool().alloc() {
            let room = m.room_mut().len();
            let _ = m.extend_from_slice(&vec![0xab; len.min(room)]);
            let p = PartialCsum::new_checked(le16(data, 6) % 128, le16(data, 8) % 32, m.len());
            m.set_partial_csum(p);
            tx.push(m);
        }
    }
    let queued = tx.len();
    let before = cur;
    let off = Offload {
        csum: flags & 64 != 0,
        ..Offload::default()
    };
    // Sometimes a guest MTU (68.. bytes) that some frames exceed.
    let max = match data.get(12).copied().unwrap_or(0) {
        m if m & 1 != 0 => max_frame(68 + u16::from(m) * 8),
        _ => usize::MAX,
    };
    let done = ring.enqueue(&mut cur, &mut tx, flags & 4 != 0, off, max, &stats);
    assert_eq!(done.frames + tx.len(), queued);
    assert!(done.descs_walked <= BURST_DESC_BUDGET + 2 * (MAX_FRAME_DESCS + 2));
    assert!(cur.last_avail.wrapping_sub(before.last_avail) <= size);
    tx.clear();
}

/// Input: `[fd count and limits, fd kinds..., header (12 bytes), payload...]`.
/// The request code is taken modulo 41 (every request weir looks at is
/// below). Runs [`msg::check`] and checks what an accepted memory table
/// promises; also feeds the payload to the control-queue and config-space
/// handlers.
pub fn vhost_msg(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let nfds = usize::from(first % 5);
    if rest.len() < nfds + HDR_BYTES {
        return;
    }
    let kinds: Vec<FdKind> = rest[..nfds]
        .iter()
        .map(|&b| match b % 3 {
            0 => FdKind::Regular {
                len_bytes: u64::from(b) << 12,
            },
            1 => FdKind::EventFd,
            _ => FdKind::Other,
        })
        .collect();
    let rest = &rest[nfds..];
    let mut h = [0u8; HDR_BYTES];
    h.copy_from_slice(&rest[..HDR_BYTES]);
    let mut hdr = Header::parse(&h);
    hdr.request %= 41;
    let payload = &rest[HDR_BYTES..];
    let lim = Limits {
        queues: 1 + u16::from(first / 5 % 17),
        max_queue_size: 1024,
        // 0: NET_MTU not offered; else a data room's limit.
        max_mtu: [0, 1006, 2030, 9198][usize::from(first % 4)],
    };
    let r = msg::check(&hdr, payload, &kinds, &lim);
    if r.is_ok() && hdr.request == msg::req::SET_MEM_TABLE {
        let n = u32::from_le_bytes(payload[..4].try_into().unwrap()) as usize;
        assert!((1..=msg::MAX_REGIONS).contains(&n));
        for (i, kind) in kinds.iter().enumerate().take(n) {
            let at = 8 + 32 * i;
            let q = |k: usize| u64::from_le_bytes(payload[at + k..at + k + 8].try_into().unwrap());
            let (size, off) = (q(8), q(24));
            let FdKind::Regular { len_bytes } = *kind else {
                panic!("accepted a region backed by {kind:?}");
            };
            assert!(
                size > 0 && off + size <= len_bytes,
                "accepted an unbacked region"
            );
        }
    }
    if r.is_ok() && hdr.request == msg::req::SET_VRING_CALL {
        let v = u64::from_le_bytes(payload[..8].try_into().unwrap());
        assert!(v & msg::VRING_NOFD != 0 || kinds == [FdKind::EventFd]);
    }
    if r.is_ok() && hdr.request == msg::req::NET_SET_MTU {
        let v = u64::from_le_bytes(payload[..8].try_into().unwrap());
        assert!(
            (68..=u64::from(lim.max_mtu)).contains(&v),
            "accepted MTU {v}"
        );
    }
    let ack = hdr.ack(r.is_ok());
    assert_eq!(ack.len(), HDR_BYTES + 8);
    if let Err(e) = r {
        assert!(!e.to_string().is_empty());
    }
    let mut rx = vhost_user::ctrlq::RxState {
        negotiated: true,
        mode: None,
    };
    let cut = payload.len() > vhost_user::ctrlq::MAX_CMD_BYTES;
    let cmd = &payload[..payload.len().min(vhost_user::ctrlq::MAX_CMD_BYTES)];
    assert!(vhost_user::ctrlq::ctrl_reply(cmd, cut, lim.queues, &mut rx) <= 1);
    assert_eq!(
        net_config(hdr.flags, hdr.size, lim.queues, 1500, None).len(),
        hdr.size.min(256) as usize
    );
}

/// Guest memory of [`tso_header`]: a ring of two descriptors (a TX chain and
/// an RX buffer), each buffer large enough for a 64 KiB frame.
const TSO_MEM_BYTES: usize = 0x3_0000;
const TSO_TX_BUF: u64 = 0x4000;
const TSO_RX_BUF: u64 = 0x1_8000;

fn large_pool() -> &'static Mempool {
    static POOL: OnceLock<&'static Mempool> = OnceLock::new();
    POOL.get_or_init(|| {
        Mempool::create(&MempoolConfig {
            name: "fuzz-large".into(),
            n_mbufs: 4,
            data_room: 65535 - 128,
            hugepages: HugepagePolicy::Never,
            cache_size: 1,
            ..MempoolConfig::default()
        })
        .expect("large pool")
    })
}

thread_local! {
    static TSO_GUEST: RefCell<Option<Arc<GuestMemoryMmap>>> = const { RefCell::new(None) };
    /// Where segments are written.
    static SEGMENT: RefCell<Vec<u8>> = RefCell::new(vec![0u8; 65536]);
}

/// A TCP frame template for [`tso_header`]: Ethernet, IPv4 or IPv6, TCP,
/// `payload` bytes, with lengths that agree.
fn tcp_template(v6: bool, payload: usize, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
    if v6 {
        out.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        out.extend_from_slice(&((20 + payload) as u16).to_be_bytes());
        out.extend_from_slice(&[6, 64]);
        out.extend_from_slice(&[0xfd; 32]);
    } else {
        out.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
        out.extend_from_slice(&((40 + payload) as u16).to_be_bytes());
        out.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    }
    out.extend_from_slice(&[0x9c, 0x40, 0, 80, 1, 2, 3, 4, 0, 0, 0, 7, 0x50, 0x18]);
    out.extend_from_slice(&[0x10, 0, 0, 0, 0, 0]);
}

/// Checks a TSO plan the way the worker uses it: every segment is written
/// whole, no longer than the MSS allows, and the payloads add up.
fn check_plan(frame: &[u8], gso: Gso) {
    let Ok(plan) = TsoPlan::new(frame, gso) else {
        return;
    };
    let n = plan.segments();
    if gso.kind == GsoKind::Udp {
        assert!(gso.mss > 0 && n <= MAX_UDP_SEGMENTS, "{n} UDP segments");
    } else {
        assert!(
            gso.mss >= MIN_MSS,
            "segmentation planned for mss {}",
            gso.mss
        );
        assert!(n <= 65535 / usize::from(MIN_MSS) + 1, "{n} segments");
    }
    let hdr = plan.hdr_len();
    assert!(plan.max_segment_len() <= hdr + usize::from(gso.mss));
    SEGMENT.with(|buf| {
        let mut buf = buf.borrow_mut();
        let mut payload = 0;
        for i in 0..n {
            let len = plan.write_segment(frame, i, &mut buf[..]);
            assert_eq!(len, plan.segment_len(i), "segment {i}");
            assert!(len >= hdr && len <= plan.max_segment_len());
            payload += len - hdr;
        }
        assert_eq!(plan.write_segment(frame, n, &mut buf[..]), 0);
        assert!(payload <= frame.len() - hdr);
    });
}

/// Input: `[flags, mss (le16), payload length (le16), frame tweaks...]`.
/// A guest's TSO frame through every path that reads GSO metadata: the
/// virtio-net TX header (flags 1: NEEDS_CSUM; 2/4: GSO type TCPv4/TCPv6 in
/// the header; 8/16: HOST_TSO4/6 negotiated; 32: CSUM negotiated), the
/// segmentation the worker does ([`TsoPlan`]), and the header written for a
/// guest that takes TSO frames whole (64: GUEST_TSO4/6 and GUEST_CSUM on the
/// RX side). Flags 128: an IPv6 template (else IPv4). The frame is a TCP
/// template of the given payload length whose bytes are then overwritten
/// from the input's fifth byte on, at offsets the tweaks name.
pub fn tso_header(data: &[u8]) {
    if data.len() < 5 {
        return;
    }
    let flags = data[0];
    let mss = le16(data, 1);
    let payload = usize::from(le16(data, 3)) % 65000;
    let mut frame = Vec::new();
    tcp_template(flags & 128 != 0, payload, &mut frame);
    frame.resize(frame.len() + payload, 0x5a);
    frame.truncate(MAX_FRAME_BYTES);
    // Tweaks: (offset, byte) pairs.
    for t in data[5..].chunks_exact(2) {
        let at = usize::from(t[0]) % 80;
        if let Some(b) = frame.get_mut(at) {
            *b = t[1];
        }
    }
    let kind = if flags & 4 != 0 {
        GsoKind::Tcp6
    } else {
        GsoKind::Tcp4
    };
    // The segmentation itself, on any MSS; and as a UDP train (the tweaks
    // can make the template UDP).
    check_plan(&frame, Gso { kind, mss });
    check_plan(
        &frame,
        Gso {
            kind: GsoKind::Udp,
            mss,
        },
    );

    // The virtio-net header the guest sends with it.
    let mut hdr = [0u8; NET_HDR_BYTES];
    hdr[0] = flags & 1;
    hdr[NET_HDR_GSO_TYPE_OFF] = match flags & 6 {
        0 => NET_HDR_GSO_NONE,
        2 => NET_HDR_GSO_TCPV4,
        4 => NET_HDR_GSO_TCPV6,
        _ => 0x81, // ECN with TCPv4: refused
    };
    hdr[NET_HDR_GSO_SIZE_OFF..NET_HDR_GSO_SIZE_OFF + 2].copy_from_slice(&mss.to_le_bytes());
    let l4 = if flags & 128 != 0 { 54u16 } else { 34 };
    hdr[6..8].copy_from_slice(&l4.to_le_bytes());
    hdr[8..10].copy_from_slice(&16u16.to_le_bytes());

    let gm = TSO_GUEST.with(|g| {
        let mut g = g.borrow_mut();
        let gm = g.get_or_insert_with(|| {
            Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), TSO_MEM_BYTES)]).unwrap())
        });
        Arc::clone(gm)
    });
    // Descriptor 0: the TX chain, header and frame in one buffer; descriptor
    // 1: the RX buffer. Available ring: [0], index 1.
    gm.write_slice(&[0u8; 0x3000], GuestAddress(0)).unwrap();
    gm.write_slice(&hdr, GuestAddress(TSO_TX_BUF)).unwrap();
    gm.write_slice(&frame, GuestAddress(TSO_TX_BUF + NET_HDR_BYTES as u64))
        .unwrap();
    let desc = |i: u64, addr: u64, len: u32, flags: u16| {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&addr.to_le_bytes());
        b[8..12].copy_from_slice(&len.to_le_bytes());
        b[12..14].copy_from_slice(&flags.to_le_bytes());
        gm.write_slice(&b, GuestAddress(DESC + 16 * i)).unwrap();
    };
    desc(0, TSO_TX_BUF, (NET_HDR_BYTES + frame.len()) as u32, 0);
    desc(1, TSO_RX_BUF, 0x1_0100, DESC_F_WRITE);
    gm.write_obj(0u16, GuestAddress(AVAIL + 4)).unwrap();
    gm.write_obj(1u16, GuestAddress(AVAIL + 2)).unwrap();
    let mem = Arc::new(GuestMemory::new(Arc::clone(&gm)));
    let addrs = RingAddrs {
        desc: GuestAddr(DESC),
        avail: GuestAddr(AVAIL),
        used: GuestAddr(USED),
    };
    let ring = SplitRing::new(&mem, addrs, 2, false, false).expect("fixed layout");
    let mut cur = Cursor::default();
    let off = Offload {
        csum: flags & 32 != 0,
        tso4: flags & 8 != 0,
        tso6: flags & 16 != 0,
    };
    let stats = QueueStats::default();
    let mut burst = Burst::new();
    let large = large_pool().share();
    let done = ring.dequeue(&mut cur, pool(), &mut burst, off, Some(&large), &stats);
    assert_eq!(done.fault, None);
    assert_eq!(done.frames + stats.snapshot().total_drops() as usize, 1);
    let Some(m) = burst.first() else {
        return;
    };
    assert_eq!(m.data(), &frame[..]);
    if let Some(g) = m.gso() {
        assert!(g.mss >= MIN_MSS, "accepted mss {}", g.mss);
        assert!(off.tso(g.kind), "accepted {:?} without negotiation", g.kind);
        assert!(m.partial_csum().is_some(), "TSO without NEEDS_CSUM");
        check_plan(m.data(), g);
    } else {
        assert_eq!(stats.drops(DropReason::TsoMssTooSmall), 0);
    }

    // To a guest that takes TSO frames whole: the frame and its request go
    // into the RX buffer's header.
    gm.write_obj(1u16, GuestAddress(AVAIL + 4 + 2)).unwrap();
    gm.write_obj(2u16, GuestAddress(AVAIL + 2)).unwrap();
    let rx_off = Offload {
        csum: flags & 64 != 0,
        tso4: flags & 64 != 0,
        tso6: flags & 64 != 0,
    };
    let gso = m.gso();
    let queued = burst.len();
    let drops = stats.snapshot().total_drops();
    let done = ring.enqueue(&mut cur, &mut burst, false, rx_off, usize::MAX, &stats);
    assert_eq!(done.fault, None);
    assert_eq!(done.frames + burst.len(), queued);
    // Taken and not dropped (a frame whose headers do not parse is).
    let delivered = done.frames == 1 && stats.snapshot().total_drops() == drops;
    if let (Some(g), true, true) = (gso, delivered, rx_off.tso4) {
        let size: u16 = gm
            .read_obj(GuestAddress(TSO_RX_BUF + NET_HDR_GSO_SIZE_OFF as u64))
            .unwrap();
        let kind: u8 = gm
            .read_obj(GuestAddress(TSO_RX_BUF + NET_HDR_GSO_TYPE_OFF as u64))
            .unwrap();
        if kind != NET_HDR_GSO_NONE {
            assert_eq!(size, g.mss);
        }
    }
    burst.clear();
}

fn switch_pool() -> &'static Mempool {
    static POOL: OnceLock<&'static Mempool> = OnceLock::new();
    POOL.get_or_init(|| Mempool::for_tests(256))
}

/// Runs the wire parsers the switch and the ports use on one frame; none
/// may panic, and what they agree on must agree.
fn parse_frame(f: &[u8]) {
    let l2 = parse_l2(f);
    let addrs = parse_l2_addrs(f);
    if let (Some(a), Some(b)) = (l2, addrs) {
        assert_eq!((a.dst.to_u64(), a.src.to_u64()), (b.dst, b.src));
        assert_eq!(a.vlan, b.vlan);
    }
    let Ok(eth) = EthFrame::new_checked(f) else {
        return;
    };
    let _ = (
        eth.dst(),
        eth.src(),
        eth.vlan(),
        eth.l2_info().map(|i| i.is_tagged()),
    );
    let mut ethertype = eth.ethertype();
    let mut payload = eth.payload();
    for _ in 0..2 {
        if !matches!(ethertype, 0x8100 | 0x88a8) {
            break;
        }
        let Ok(tag) = VlanTag::new_checked(payload) else {
            return;
        };
        let _ = (tag.pcp(), tag.dei(), tag.vid());
        assert_eq!(tag.payload().len() + vlan::HEADER_LEN, payload.len());
        ethertype = tag.ethertype();
        payload = &payload[vlan::HEADER_LEN..];
    }
    match ethertype {
        0x0806 => {
            if let Ok(arp) = ArpPacket::new_checked(payload) {
                let _ = (arp.sender_hw(), arp.sender_ip(), arp.target_ip());
                let _ = (arp.opcode(), arp.is_gratuitous());
            }
        }
        0x0800 => {
            if let Ok(ip) = Ipv4Packet::new_checked(payload) {
                let _ = (ip.src(), ip.dst(), ip.protocol(), ip.is_fragment());
                let _ = (ip.options().len(), ip.payload().len(), ip.verify_checksum());
                assert!(ip.header_len() >= 20 && ip.header_len() <= payload.len());
            }
        }
        0x86dd => {
            if let Ok(ip) = Ipv6Packet::new_checked(payload) {
                let _ = (ip.src(), ip.next_header(), ip.payload().len());
                assert!(ip.total_len() <= payload.len());
            }
        }
        _ => {}
    }
    let mut copy = f.to_vec();
    if !complete_l4_checksum(&mut copy) {
        assert_eq!(copy, f, "a frame without a checksum to complete changed");
    }
}

/// Input: `[ingress port and flags, then frames: (length le16, bytes)...]`,
/// up to a burst of 32 frames. Each frame goes through the wire parsers,
/// then the burst through a bridge of four ports (port 3's link down when
/// flag 4 is set) with a small FDB (8 entries, so that it fills): every frame
/// must be forwarded, flooded or dropped and counted, never sent back out its
/// ingress port, never changed, and no buffer may leak.
pub fn switch_frame(data: &[u8]) {
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    let in_port = u16::from(first % 4);
    let sw = Switch::new();
    sw.update(|t| {
        t.bridges.push(Some(Bridge {
            id: BridgeId(0),
            name: "br0".into(),
            ports: (0..4).map(PortId).collect(),
            fdb: Arc::new(Fdb::new(&FdbConfig {
                max_entries: 8,
                max_per_port: u32::from(first >> 4),
                aging_secs: 300,
                ..FdbConfig::default()
            })),
        }));
        for i in 0..4 {
            let e = PortEntry::new(PortId(i), &format!("p{i}"), Some(BridgeId(0)), WorkerId(0));
            let up = !(i == 3 && first & 4 != 0);
            e.link_up.store(up, std::sync::atomic::Ordering::Relaxed);
            t.ports.push(Some(Arc::new(e)));
        }
    });
    let t = sw.load();
    let pool = switch_pool();
    let before = pool.in_use();
    let mut inputs = Vec::new();
    let mut burst = Burst::new();
    while rest.len() >= 2 && !burst.is_full() {
        let len = usize::from(le16(rest, 0)) % 1600;
        let f = &rest[2..(2 + len).min(rest.len())];
        rest = &rest[(2 + len).min(rest.len())..];
        parse_frame(f);
        let Some(mut m) = pool.alloc() else {
            break;
        };
        if m.extend_from_slice(f).is_err() {
            continue;
        }
        inputs.push(f.to_vec());
        burst.push(m);
    }
    let n = burst.len() as u32;
    let stats = QueueStats::default();
    let mut fwd = Forwarder::new();
    fwd.prepare(&t);
    // Twice: the second pass meets what the first one learned.
    for pass in 0..2 {
        let mut b = Burst::new();
        for m in burst.iter() {
            let Some(mut c) = pool.alloc() else {
                break;
            };
            c.extend_from_slice(m.data()).unwrap();
            b.push(c);
        }
        let k = b.len() as u32;
        let drops_before = stats.snapshot().total_drops();
        let sum = fwd.process(&t, PortId(in_port), &mut b, 1 + pass, &stats);
        assert!(b.is_empty());
        assert_eq!(sum.unicast + sum.flooded + sum.dropped, k);
        assert_eq!(
            stats.snapshot().total_drops() - drops_before,
            u64::from(sum.dropped)
        );
        fwd.drain(|p, out| {
            assert_ne!(p.0, in_port, "a frame went back out its ingress port");
            for m in out.drain(..) {
                assert!(
                    inputs.iter().any(|f| f[..] == *m.data()),
                    "a forwarded frame changed"
                );
            }
        });
    }
    assert!(n as usize == inputs.len());
    burst.clear();
    assert_eq!(pool.in_use(), before, "mbufs leaked");
}

/// The pool of [`tunnel_frame`], its own so that [`switch_frame`]'s leak
/// check is not disturbed when both run at once (the test harness's
/// threads).
fn tunnel_pool() -> &'static Mempool {
    static POOL: OnceLock<&'static Mempool> = OnceLock::new();
    POOL.get_or_init(|| Mempool::for_tests(64))
}

/// Checks what an underlay port's decapsulation relies on for one received
/// frame: the outer parser and the VXLAN/Geneve header parsers never panic
/// and never point past the frame.
fn decap_frame(f: &[u8]) {
    let _ = source_port(f);
    let Ok(o) = parse_outer(f) else {
        return;
    };
    let end = o.payload_offset + o.payload_len;
    assert!(end <= f.len(), "payload past the frame");
    let payload = &f[o.payload_offset..end];
    if let Ok((vni, hl)) = vxlan_vni(payload) {
        assert!(vni < 1 << 24 && hl <= payload.len());
    }
    if let Ok((vni, hl)) = geneve_vni(payload) {
        assert!(vni < 1 << 24 && hl <= payload.len());
    }
}

/// Input: `[flags, vni (3 bytes), addresses (8), damage (2), frame...]`.
/// Runs the decapsulation parsers on the frame as received; then
/// encapsulates it (VXLAN if flags bit 0 is clear, else Geneve) and checks
/// that decapsulation gives back the same frame and VNI; then flips one
/// bit of the encapsulated packet (at the position `damage` names) and runs
/// the parsers on that.
pub fn tunnel_frame(data: &[u8]) {
    let Some((head, frame)) = data.split_first_chunk::<14>() else {
        return;
    };
    decap_frame(frame);
    let kind = if head[0] & 1 == 0 {
        TunnelKind::Vxlan
    } else {
        TunnelKind::Geneve
    };
    let vni = u32::from_be_bytes([0, head[1], head[2], head[3]]);
    let src = std::net::Ipv4Addr::new(head[4], head[5], head[6], head[7]);
    let dst = std::net::Ipv4Addr::new(head[8], head[9], head[10], head[11]);
    let outer = OuterHeader::new(
        kind,
        dataplane::MacAddr([2, 0, 0, 0, 0, 1]),
        dataplane::MacAddr([2, 0, 0, 0, 0, 2]),
        src,
        dst,
        kind.default_port(),
    );
    let Some(mut m) = tunnel_pool().alloc() else {
        return;
    };
    if m.extend_from_slice(frame).is_err() {
        return;
    }
    let port = source_port(frame);
    assert!(port >= 49152);
    outer
        .encap(&mut m, vni, port)
        .expect("default headroom fits the outer header");
    let o = parse_outer(m.data()).expect("an encapsulated frame parses");
    assert_eq!((o.src_ip, o.dst_ip, o.src_port), (src, dst, port));
    assert_eq!(o.payload_offset + o.payload_len, m.len());
    let (got, hl) = kind
        .vni(&m.data()[o.payload_offset..])
        .expect("our own tunnel header parses");
    assert_eq!(got, vni);
    assert_eq!(&m.data()[o.payload_offset + hl..], frame);
    let at = usize::from(u16::from_be_bytes([head[12], head[13]])) % (OUTER_LEN * 8);
    m.data_mut()[at / 8] ^= 1 << (at % 8);
    // A single flipped bit changes a 16-bit word by ±2^k, which is never a
    // multiple of 0xffff, so the IPv4 header checksum catches it; except in
    // the IHL, which changes what is summed. Elsewhere (Ethernet, UDP and
    // tunnel headers) a flip may pass.
    let ihl_bit = at / 8 == 14 && at % 8 < 4;
    match parse_outer(m.data()) {
        Ok(_) => assert!(
            ihl_bit || !(14 * 8..34 * 8).contains(&at),
            "bit {at} passed"
        ),
        Err(DecapError::NotUdp) => assert!((12 * 8..24 * 8).contains(&at)),
        Err(DecapError::Header(_)) => {}
    }
    decap_frame(m.data());
}
