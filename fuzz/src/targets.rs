//! The fuzz target bodies: each takes arbitrary bytes and must never panic (an
//! assertion here states a property weir relies on, so its failure is a bug
//! too).
//!
//! Shared by libFuzzer (`fuzz_targets/`), `src/bin/replay.rs` and
//! `vhost-user/tests/fuzz_replay.rs`, which includes this file by path; it
//! therefore uses only crates both have (`dataplane`, `vhost_user`, `vm_memory`).

use std::cell::RefCell;
use std::sync::{Arc, OnceLock};

use dataplane::wire::PartialCsum;
use dataplane::{Burst, Mempool, QueueStats};
use vhost_user::defs::{ctrl_reply, net_config, MAX_FRAME_BYTES};
use vhost_user::guest_mem::{GuestAddr, GuestMemory};
use vhost_user::msg::{self, FdKind, Header, Limits, HDR_BYTES};
use vhost_user::vring::{max_frame, Cursor, Offload, RingAddrs, SplitRing};
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
}

impl Target {
    /// Every target.
    pub const ALL: [Target; 2] = [Target::VringChain, Target::VhostMsg];

    /// Its name (the cargo-fuzz target name).
    pub fn name(self) -> &'static str {
        match self {
            Target::VringChain => "vring_chain",
            Target::VhostMsg => "vhost_msg",
        }
    }

    /// Runs it on one input.
    pub fn run(self, data: &[u8]) {
        match self {
            Target::VringChain => vring_chain(data),
            Target::VhostMsg => vhost_msg(data),
        }
    }

    /// Longest input worth generating at random.
    fn max_len(self) -> usize {
        match self {
            Target::VringChain => 0x3200,
            Target::VhostMsg => 600,
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
    assert!(ctrl_reply(payload, lim.queues) <= 1);
    assert_eq!(
        net_config(hdr.flags, hdr.size, lim.queues, 1500).len(),
        hdr.size.min(256) as usize
    );
}
