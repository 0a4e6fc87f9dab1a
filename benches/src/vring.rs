//! A vhost-user frontend in process memory, for measuring weir's split-ring
//! fast path ([`vhost_user::vring::SplitRing`]) without sockets, guests or
//! other processes.
//!
//! Layer: tooling above `dataplane` and `vhost-user`; not part of the
//! dataplane. Used by the `vring-insns` binary that `vring-callgrind.sh` runs
//! under valgrind.
//!
//! # What one step measures
//!
//! A [`VringRig`] owns guest memory (`vm-memory`, normal pages) holding two
//! split rings of [`QUEUE_SIZE`] entries, as one queue pair of a virtio-net
//! device: the guest's TX ring, which weir dequeues from, and its RX ring,
//! which weir enqueues to. One [`VringRig::step`] is what a worker does for one
//! port pair, minus the switch:
//!
//! 1. the guest posts [`BURST`] TX chains and [`BURST`] RX buffers
//!    (`guest_post`, out of line so that its instructions can be subtracted);
//! 2. `SplitRing::dequeue` copies the TX chains into mbufs;
//! 3. `SplitRing::enqueue` copies those mbufs into the RX buffers and frees
//!    them.
//!
//! The descriptors are built once, one fixed chain per ring slot, and the
//! guest reposts the same heads every step, as DPDK's `virtio_user` driver
//! does in steady state. Layouts ([`Layout`]):
//!
//! - `single`: one descriptor per TX frame (virtio-net header and frame
//!   together) and one writable descriptor per RX buffer. This is DPDK's
//!   layout (`virtio_user` pushes the header into the mbuf headroom, and posts
//!   one mbuf per RX descriptor with MRG_RXBUF).
//! - `chain`: TX header and frame in two descriptors; RX header and data room
//!   in two (the layout of drivers that keep the header apart).
//! - `indirect`: the `chain` TX layout behind one indirect descriptor; RX as
//!   `single`.
//!
//! Rings sit in the first memory region and buffers in the second, as in a
//! guest whose rings and packet buffers come from different memory slots.

use std::sync::Arc;

use dataplane::stats::QueueStats;
use dataplane::{Burst, Mempool, MAX_BURST};
use vhost_user::defs::{DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE, NET_HDR_BYTES};
use vhost_user::guest_mem::{GuestAddr, GuestMemory};
use vhost_user::vring::{Cursor, Offload, RingAddrs, SplitRing};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Frames per burst.
pub const BURST: usize = MAX_BURST;
/// Entries per ring (the size DPDK's `virtio_user` and QEMU use by default).
pub const QUEUE_SIZE: u16 = 256;

/// Bytes of each guest RX buffer's data room (after the header).
const RX_ROOM: u64 = 2048;
/// Bytes reserved per slot for a buffer (header, frame, indirect table).
const SLOT_BYTES: u64 = 4096;

/// Guest-physical layout: rings in region 0, buffers in region 1.
const RING_BASE: u64 = 0x10_0000;
const RING_REGION_BYTES: u64 = 0x10_0000;
const BUF_BASE: u64 = 0x100_0000;
const TX_BUFS: u64 = BUF_BASE;
const RX_BUFS: u64 = BUF_BASE + SLOT_BYTES * QUEUE_SIZE as u64;
const BUF_REGION_BYTES: u64 = 2 * SLOT_BYTES * QUEUE_SIZE as u64;

/// Where a ring's three parts live (each page-aligned, generous).
fn ring_addrs(ring: u64) -> RingAddrs {
    let base = RING_BASE + ring * 0x4_0000;
    RingAddrs {
        desc: GuestAddr(base),
        avail: GuestAddr(base + 0x1_0000),
        used: GuestAddr(base + 0x2_0000),
    }
}

/// How the guest lays out its descriptor chains (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// One descriptor per TX frame and per RX buffer.
    Single,
    /// Header and data in separate descriptors, both directions.
    Chain,
    /// TX header and frame behind an indirect descriptor; RX single.
    Indirect,
}

impl Layout {
    /// Parses `single`, `chain` or `indirect`.
    pub fn parse(s: &str) -> Option<Layout> {
        Some(match s {
            "single" => Layout::Single,
            "chain" => Layout::Chain,
            "indirect" => Layout::Indirect,
            _ => return None,
        })
    }
}

/// One guest ring as the driver sees it.
struct DriverRing {
    addrs: RingAddrs,
    avail_idx: u16,
    /// Next descriptor head to post (heads are posted round-robin).
    next_head: u16,
    /// Descriptors per chain in the table (heads are multiples of this).
    per_chain: u16,
}

impl DriverRing {
    fn new(ring: u64, per_chain: u16) -> DriverRing {
        DriverRing {
            addrs: ring_addrs(ring),
            avail_idx: 0,
            next_head: 0,
            per_chain,
        }
    }
}

/// Guest memory with one TX and one RX ring, weir's two `SplitRing`s on them,
/// and a mempool to dequeue into. See the module docs.
pub struct VringRig {
    gm: Arc<GuestMemoryMmap>,
    tx: DriverRing,
    rx: DriverRing,
    /// weir's view of the guest's TX ring (it dequeues).
    dev_tx: SplitRing,
    /// weir's view of the guest's RX ring (it enqueues).
    dev_rx: SplitRing,
    tx_cur: Cursor,
    rx_cur: Cursor,
    pool: &'static Mempool,
    burst: Burst,
    stats: QueueStats,
    /// The frames the TX chains hold, chain `c` frame `c % frames.len()`.
    frames: Vec<Vec<u8>>,
    moved: u64,
}

fn write_desc(
    gm: &GuestMemoryMmap,
    table: u64,
    i: u16,
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
) {
    let b = vhost_user::testguest::desc_bytes(addr, len, flags, next);
    gm.write_slice(&b, GuestAddress(table + 16 * u64::from(i)))
        .expect("descriptor inside guest memory");
}

/// Writes a two-descriptor chain at `i` and `i + 1` of `table`: the virtio-net
/// header at `buf`, then `data_len` bytes right after it; `flags` go on both
/// (`DESC_F_WRITE` for an RX buffer).
fn write_hdr_data_chain(
    gm: &GuestMemoryMmap,
    table: u64,
    i: u16,
    buf: u64,
    data_len: u32,
    flags: u16,
) {
    write_desc(
        gm,
        table,
        i,
        buf,
        NET_HDR_BYTES as u32,
        flags | DESC_F_NEXT,
        i + 1,
    );
    write_desc(
        gm,
        table,
        i + 1,
        buf + NET_HDR_BYTES as u64,
        data_len,
        flags,
        0,
    );
}

/// The 60-byte test frame (or `len` bytes): broadcast-free unicast between two
/// locally administered MACs, IPv4 ethertype, a counting payload.
pub fn test_frame(len: usize) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| i as u8).collect();
    f[..12].copy_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
    f[12] = 0x08;
    f[13] = 0x00;
    f
}

impl VringRig {
    /// Builds the guest memory, both rings and their descriptors for `layout`,
    /// carrying frames of `frame_len` bytes (without virtio-net header or FCS).
    ///
    /// # Panics
    /// If the memory or a ring cannot be set up (a bug in this set-up).
    pub fn new(layout: Layout, frame_len: usize, pool: &'static Mempool) -> VringRig {
        VringRig::with_frames(layout, vec![test_frame(frame_len)], pool)
    }

    /// [`VringRig::new`] with the guest sending `frames` in turn (chain `c`
    /// holds frame `c % frames.len()`; all of one length, and their number
    /// a divisor of the ring's chains so that every lap sends the same).
    ///
    /// # Panics
    /// As [`VringRig::new`], or if the frames break those rules.
    pub fn with_frames(layout: Layout, frames: Vec<Vec<u8>>, pool: &'static Mempool) -> VringRig {
        let frame_len = frames.first().map_or(0, Vec::len);
        assert!(
            !frames.is_empty()
                && frames.iter().all(|f| f.len() == frame_len)
                && (QUEUE_SIZE as usize / 2).is_multiple_of(frames.len()),
            "frames of one length, a divisor of {} of them",
            QUEUE_SIZE / 2
        );
        let gm = Arc::new(
            GuestMemoryMmap::from_ranges(&[
                (GuestAddress(RING_BASE), RING_REGION_BYTES as usize),
                (GuestAddress(BUF_BASE), BUF_REGION_BYTES as usize),
            ])
            .expect("guest memory"),
        );
        let mem = Arc::new(GuestMemory::new(Arc::clone(&gm)));
        let (tx_per, rx_per) = match layout {
            Layout::Single | Layout::Indirect => (1, 1),
            Layout::Chain => (2, 2),
        };
        let tx = DriverRing::new(1, tx_per);
        let rx = DriverRing::new(0, rx_per);
        let hdr = [0u8; NET_HDR_BYTES];
        let n = QUEUE_SIZE / tx_per;
        for c in 0..n {
            let buf = TX_BUFS + SLOT_BYTES * u64::from(c);
            let head = c * tx_per;
            let frame = &frames[usize::from(c) % frames.len()];
            gm.write_slice(&hdr, GuestAddress(buf)).unwrap();
            gm.write_slice(frame, GuestAddress(buf + NET_HDR_BYTES as u64))
                .unwrap();
            let total = (NET_HDR_BYTES + frame_len) as u32;
            let desc = tx.addrs.desc.0;
            match layout {
                Layout::Single => write_desc(&gm, desc, head, buf, total, 0, 0),
                Layout::Chain => {
                    write_hdr_data_chain(&gm, desc, head, buf, frame_len as u32, 0);
                }
                Layout::Indirect => {
                    let table = buf + SLOT_BYTES - 32;
                    write_hdr_data_chain(&gm, table, 0, buf, frame_len as u32, 0);
                    write_desc(&gm, desc, head, table, 32, DESC_F_INDIRECT, 0);
                }
            }
        }
        let n = QUEUE_SIZE / rx_per;
        for c in 0..n {
            let buf = RX_BUFS + SLOT_BYTES * u64::from(c);
            let head = c * rx_per;
            let desc = rx.addrs.desc.0;
            if rx_per == 1 {
                write_desc(
                    &gm,
                    desc,
                    head,
                    buf,
                    NET_HDR_BYTES as u32 + RX_ROOM as u32,
                    DESC_F_WRITE,
                    0,
                );
            } else {
                write_hdr_data_chain(&gm, desc, head, buf, RX_ROOM as u32, DESC_F_WRITE);
            }
        }
        let indirect = layout == Layout::Indirect;
        let dev_tx = SplitRing::new(&mem, tx.addrs, QUEUE_SIZE, false, indirect).expect("tx ring");
        let dev_rx = SplitRing::new(&mem, rx.addrs, QUEUE_SIZE, false, indirect).expect("rx ring");
        // DPDK's virtio_user polls: it sets NO_INTERRUPT, so weir never kicks.
        for r in [&tx, &rx] {
            gm.write_obj(1u16, GuestAddress(r.addrs.avail.0)).unwrap();
        }
        dev_tx.suppress_kicks(Cursor::default());
        dev_rx.suppress_kicks(Cursor::default());
        VringRig {
            gm,
            tx,
            rx,
            dev_tx,
            dev_rx,
            tx_cur: Cursor::default(),
            rx_cur: Cursor::default(),
            pool,
            burst: Burst::new(),
            stats: QueueStats::default(),
            frames,
            moved: 0,
        }
    }

    /// One burst through both rings (see the module docs); returns the frames
    /// that reached the guest's RX ring.
    #[inline]
    pub fn step(&mut self) -> usize {
        self.step_through(|_| {})
    }

    /// [`VringRig::step`] with `through` between dequeue and enqueue: what
    /// a worker does with the burst on its way from one guest's port to the
    /// other's (a switch's, say). It must leave the frames in the burst,
    /// as the guest sent them, in order.
    #[inline]
    pub fn step_through(&mut self, through: impl FnOnce(&mut Burst)) -> usize {
        guest_post(&self.gm, &mut self.tx, BURST as u16);
        guest_post(&self.gm, &mut self.rx, BURST as u16);
        self.dequeue_tx();
        through(&mut self.burst);
        let done = self.dev_rx.enqueue(
            &mut self.rx_cur,
            &mut self.burst,
            true,
            Offload::default(),
            usize::MAX,
            &self.stats,
        );
        self.moved += done.frames as u64;
        done.frames
    }

    /// One poll of an empty TX ring (what a worker does when no frame came).
    #[inline]
    pub fn empty_poll(&mut self) -> usize {
        self.dequeue_tx()
    }

    /// weir's dequeue from the guest's TX ring into `burst`, without
    /// offloads; returns the frames it took.
    #[inline(always)]
    fn dequeue_tx(&mut self) -> usize {
        self.dev_tx
            .dequeue(
                &mut self.tx_cur,
                self.pool,
                &mut self.burst,
                Offload::default(),
                None,
                &self.stats,
            )
            .frames
    }

    /// Checks the run: every frame arrived with a correct header and body, no
    /// drops, both used indices where they should be.
    ///
    /// # Errors
    /// What is wrong, as text.
    pub fn verify(&self) -> Result<(), String> {
        let drops = self.stats.snapshot().total_drops();
        if drops != 0 {
            return Err(format!("{drops} frames dropped"));
        }
        if !self.burst.is_empty() {
            return Err(format!("{} frames left in the burst", self.burst.len()));
        }
        for r in [&self.tx, &self.rx] {
            let used: u16 = self.gm.read_obj(GuestAddress(r.addrs.used.0 + 2)).unwrap();
            if used != r.avail_idx {
                return Err(format!("used index {used}, posted {}", r.avail_idx));
            }
        }
        if self.moved == 0 {
            return Ok(());
        }
        // Every RX buffer written: its header and the frame that chain `c`
        // of the TX ring sent (both rings take one chain per frame, in
        // order, so RX chain `c` holds what TX chain `c` held).
        let chains = u64::from(QUEUE_SIZE / self.rx.per_chain);
        for c in 0..self.moved.min(chains) {
            let frame = &self.frames[c as usize % self.frames.len()];
            let buf = RX_BUFS + SLOT_BYTES * c;
            let mut got = vec![0u8; NET_HDR_BYTES + frame.len()];
            self.gm.read_slice(&mut got, GuestAddress(buf)).unwrap();
            let mut want = vec![0u8; NET_HDR_BYTES];
            want[10] = 1; // num_buffers
            want.extend_from_slice(frame);
            if got != want {
                return Err(format!("RX buffer {c} does not hold its header and frame"));
            }
        }
        Ok(())
    }
}

/// The guest's side of a step: posts `n` chains to the available ring (one
/// index store). Frontend work, not weir's: out of line under its own name so
/// that `vring-callgrind.sh` can subtract it.
#[inline(never)]
fn guest_post(gm: &GuestMemoryMmap, r: &mut DriverRing, n: u16) {
    for _ in 0..n {
        let slot = u64::from(r.avail_idx % QUEUE_SIZE);
        gm.write_obj(r.next_head, GuestAddress(r.addrs.avail.0 + 4 + 2 * slot))
            .unwrap();
        r.next_head = (r.next_head + r.per_chain) % QUEUE_SIZE;
        r.avail_idx = r.avail_idx.wrapping_add(1);
    }
    std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
    gm.write_obj(r.avail_idx, GuestAddress(r.addrs.avail.0 + 2))
        .unwrap();
}
