//! weir's split-virtqueue fast path (virtio 1.2 §2.7): moving frames between guest
//! buffers and mbufs.
//!
//! Layer: device. On the packet path; called once per burst by [`crate::port`].
//! No allocation, locks, logging or syscalls here: the caller kicks the guest's call
//! eventfd at most once per burst when [`Completed::notify`] says so.
//!
//! Everything read from guest memory is untrusted. Per burst the available index is
//! read once and must not run more than the queue size ahead; every descriptor is
//! copied out before it is checked; a chain may hold at most as many descriptors as
//! its table (which also catches loops, since a longer chain must revisit one);
//! indirect tables must be negotiated, in memory, a multiple of 16 bytes, no larger
//! than the queue and not nested; every buffer must lie inside one memory region. A
//! violation is a [`RingFault`]: the caller puts the queue into an error state.
//! Problems confined to one frame (too long, too short) drop that frame only.
//!
//! The work a guest can cause is bounded, so that a hostile ring costs its own
//! port and not the other ports of its worker: one frame may take at most
//! [`MAX_FRAME_DESCS`] buffers (its chain, indirect table included, or with
//! mergeable buffers all the chains it spans; zero-length descriptors count),
//! and a burst stops taking frames once its chain walks have read
//! [`BURST_DESC_BUDGET`] descriptors. See [`Completed::descs_walked`].

use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use dataplane::mempool::{AllocError, PoolShare};
use dataplane::stats::QueueStats;
use dataplane::wire::{vnet, Gso, GsoKind, PartialCsum};
use dataplane::{Burst, DropReason, Mempool};

use crate::defs::*;
use crate::guest_mem::{
    AreaError, GuestAddr, GuestMemory, GuestSlice, OutOfBounds, RegionHint, RingArea, RingArray,
};

/// A guest error that makes a queue unusable until the frontend sets it up again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RingFault {
    /// The available index ran more than the queue size ahead of us.
    AvailIdxJump = 1,
    /// A head or `next` index is outside its descriptor table.
    DescIndex = 2,
    /// A buffer is not inside one region of the memory table.
    BufferOutOfMemory = 3,
    /// A chain is longer than its table: it loops.
    ChainLoop = 4,
    /// An indirect table is malformed, out of memory, nested, or not negotiated.
    BadIndirect = 5,
    /// The frontend shrank a memory file under the ring's mapping: an access
    /// raised SIGBUS and the mapping now holds zero pages
    /// ([`crate::guest_mem::guard`]).
    MemoryLost = 6,
}

impl RingFault {
    /// Decodes [`RingFault::code`]; None for 0 or unknown values.
    pub fn from_code(c: u8) -> Option<RingFault> {
        Some(match c {
            1 => RingFault::AvailIdxJump,
            2 => RingFault::DescIndex,
            3 => RingFault::BufferOutOfMemory,
            4 => RingFault::ChainLoop,
            5 => RingFault::BadIndirect,
            6 => RingFault::MemoryLost,
            _ => return None,
        })
    }

    /// A non-zero code, for storing in an atomic.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// What the guest did wrong.
    pub fn describe(self) -> &'static str {
        match self {
            RingFault::AvailIdxJump => "available index moved more than the queue size",
            RingFault::DescIndex => "descriptor index outside the descriptor table",
            RingFault::BufferOutOfMemory => "descriptor buffer outside guest memory",
            RingFault::ChainLoop => "descriptor chain loops (longer than its table)",
            RingFault::BadIndirect => "invalid indirect descriptor table",
            RingFault::MemoryLost => {
                "guest memory file shrunk under its mapping (SIGBUS caught; mapping replaced)"
            }
        }
    }
}

impl std::fmt::Display for RingFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

/// Why a ring could not be set up from the frontend's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RingSetupError {
    /// Size not a power of two in 1..=32768 (virtio 1.2 §2.7).
    #[error("queue size {0} is not a power of two in 1..=32768")]
    BadSize(u16),
    /// The descriptor table is outside memory or misaligned.
    #[error("descriptor table: {0}")]
    Desc(#[source] AreaError),
    /// The available ring is outside memory or misaligned.
    #[error("available ring: {0}")]
    Avail(#[source] AreaError),
    /// The used ring is outside memory or misaligned.
    #[error("used ring: {0}")]
    Used(#[source] AreaError),
}

/// Where the ring addresses point, in guest-physical addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingAddrs {
    /// Descriptor table.
    pub desc: GuestAddr,
    /// Available (driver) ring.
    pub avail: GuestAddr,
    /// Used (device) ring.
    pub used: GuestAddr,
}

/// Our position in a ring; owned by the worker, handed back to control on stop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Next available-ring entry to consume.
    pub last_avail: u16,
    /// Next used-ring entry to fill (== the used index we last published).
    pub used_idx: u16,
}

/// Buffers (descriptors other than one pointing to an indirect table) one
/// frame may take: on guest TX its chain, on guest RX every chain it fills
/// (mergeable buffers). Zero-length descriptors count. A frame that needs more
/// is dropped and counted as [`DropReason::ChainTooLong`], and its chains are
/// returned to the guest. DPDK's vhost library has the same limit
/// (BUF_VECTOR_MAX); Linux drivers use at most MAX_SKB_FRAGS + 2 (19 by
/// default) descriptors per frame.
pub const MAX_FRAME_DESCS: u32 = 256;

/// Descriptors the chain walks of one burst may read before the burst stops
/// taking frames; the rest waits in the ring for the next burst (guest TX) or
/// stays in the caller's burst (guest RX). A burst of 32 frames of up to 32
/// descriptors each fits; a ring whose chains are long, empty or never hold a
/// frame costs at most this (plus one frame's walk) per poll.
pub const BURST_DESC_BUDGET: u32 = 1024;

/// Result of one burst.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Completed {
    /// Frames moved (received into the burst, or taken from it).
    pub frames: usize,
    /// The guest asked to be told about the used buffers: kick its call eventfd.
    pub notify: bool,
    /// The guest broke the ring; work before the fault is still completed.
    pub fault: Option<RingFault>,
    /// Descriptors read by chain walks in this burst (a frame of one
    /// descriptor on the fast path reads one and is not counted): below
    /// [`BURST_DESC_BUDGET`] plus two walks of one frame,
    /// `2 * (MAX_FRAME_DESCS + 2)` (a chain copied twice on guest TX; on guest
    /// RX, chains with an indirect descriptor each).
    pub descs_walked: u32,
}

impl Completed {
    /// A burst that did nothing but find `fault`.
    #[inline]
    fn faulted(fault: RingFault) -> Completed {
        Completed {
            fault: Some(fault),
            ..Completed::default()
        }
    }
}

/// State of the descriptor walks of one burst.
#[derive(Default)]
struct Walk {
    /// The memory region the last buffer was in.
    hint: RegionHint,
    /// Descriptors read so far (see [`Completed::descs_walked`]).
    descs: u32,
}

impl Walk {
    /// Whether the burst has spent its [`BURST_DESC_BUDGET`].
    #[inline]
    fn spent(&self) -> bool {
        self.descs >= BURST_DESC_BUDGET
    }
}

/// A validated split ring in guest memory.
#[derive(Debug)]
pub struct SplitRing {
    mem: Arc<GuestMemory>,
    /// The descriptor table.
    descs: RingArray<16>,
    /// The available ring: flags, index and `used_event`.
    avail: RingArea,
    /// Its entries (descriptor heads).
    avail_heads: RingArray<2>,
    /// The used ring: flags, index and `avail_event`.
    used: RingArea,
    /// Its elements (id, len).
    used_elems: RingArray<8>,
    size: u16,
    event_idx: bool,
    indirect: bool,
}

#[derive(Clone, Copy)]
struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

impl Desc {
    #[inline]
    fn parse(b: [u8; 16]) -> Desc {
        Desc {
            addr: u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            len: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            flags: u16::from_le_bytes([b[12], b[13]]),
            next: u16::from_le_bytes([b[14], b[15]]),
        }
    }
}

/// One buffer of a chain, already checked to be inside guest memory.
#[derive(Debug)]
struct Segment<'a> {
    addr: GuestAddr,
    len: u32,
    write: bool,
    /// The buffer, translated (once) to host memory.
    buf: GuestSlice<'a>,
}

/// Walks one descriptor chain, yielding checked data segments.
struct Chain<'a> {
    ring: &'a SplitRing,
    /// Indirect table (translated once) and its entry count, once we switched
    /// to one.
    table: Option<(GuestSlice<'a>, u16)>,
    next: Option<u16>,
    /// Descriptors still allowed in the current table: more must revisit
    /// one, a loop.
    budget: u32,
    /// Buffers the frame may still take ([`MAX_FRAME_DESCS`] over all its
    /// chains and tables): unlike `budget`, never restarts.
    left: u32,
    /// The chain had a buffer beyond `left`; the walk stopped there.
    too_long: bool,
}

impl<'a> Chain<'a> {
    /// A walk from `head` that may yield `left` buffers.
    fn new(ring: &'a SplitRing, head: u16, left: u32) -> Result<Chain<'a>, RingFault> {
        if head >= ring.size {
            return Err(RingFault::DescIndex);
        }
        Ok(Chain {
            ring,
            table: None,
            next: Some(head),
            budget: u32::from(ring.size),
            left,
            too_long: false,
        })
    }

    #[inline]
    fn next_segment(&mut self, walk: &mut Walk) -> Result<Option<Segment<'a>>, RingFault> {
        let hint = &mut walk.hint;
        loop {
            let Some(idx) = self.next else {
                return Ok(None);
            };
            if self.budget == 0 {
                return Err(RingFault::ChainLoop);
            }
            self.budget -= 1;
            walk.descs += 1;
            let (d, limit) = match &self.table {
                None => (self.ring.desc(idx), self.ring.size),
                Some((t, n)) => {
                    let mut b = [0u8; 16];
                    t.read_at(idx as usize * DESC_BYTES as usize, &mut b)
                        .map_err(|_| RingFault::BadIndirect)?;
                    (Desc::parse(b), *n)
                }
            };
            if d.flags & DESC_F_INDIRECT != 0 {
                // virtio 1.2 §2.7.5.3.1: no INDIRECT inside an indirect table, no
                // INDIRECT together with NEXT, and only when negotiated.
                if self.table.is_some() || d.flags & DESC_F_NEXT != 0 || !self.ring.indirect {
                    return Err(RingFault::BadIndirect);
                }
                let n = u64::from(d.len) / DESC_BYTES;
                if d.len == 0 || u64::from(d.len) % DESC_BYTES != 0 || n > u64::from(self.ring.size)
                {
                    return Err(RingFault::BadIndirect);
                }
                let table = self
                    .ring
                    .mem
                    .slice(GuestAddr(d.addr), d.len, hint)
                    .map_err(|_| RingFault::BadIndirect)?;
                self.table = Some((table, n as u16));
                self.next = Some(0);
                self.budget = n as u32;
                continue;
            }
            if self.left == 0 {
                self.too_long = true;
                self.next = None;
                return Ok(None);
            }
            self.left -= 1;
            self.next = if d.flags & DESC_F_NEXT != 0 {
                if d.next >= limit {
                    return Err(RingFault::DescIndex);
                }
                Some(d.next)
            } else {
                None
            };
            let buf = self
                .ring
                .mem
                .slice(GuestAddr(d.addr), d.len, hint)
                .map_err(|_| RingFault::BufferOutOfMemory)?;
            return Ok(Some(Segment {
                addr: GuestAddr(d.addr),
                len: d.len,
                write: d.flags & DESC_F_WRITE != 0,
                buf,
            }));
        }
    }
}

/// Outcome of copying one guest TX chain.
enum TxFrame {
    /// Frame length and the virtio-net header that came with it.
    Ok(usize, [u8; NET_HDR_BYTES]),
    /// Well formed, but longer than the buffer it was copied into.
    Oversize,
    /// Longer than a normal buffer, and the pool of large buffers is empty.
    NoLargeBuffer,
    Malformed,
    /// More than [`MAX_FRAME_DESCS`] buffers.
    TooLong,
    /// Not read: the burst spent its [`BURST_DESC_BUDGET`]; the chain stays
    /// in the ring.
    Deferred,
}

/// Outcome of writing one frame to guest RX buffers.
enum RxFrame {
    /// Delivered.
    Done,
    /// Dropped for this reason; the chains it took are returned empty.
    Dropped(DropReason),
    /// Not enough guest buffers (or the burst's budget is spent): nothing
    /// taken, the frame waits.
    Wait,
}

/// Offloads negotiated on one ring: on a guest TX queue what the guest may
/// send (CSUM, HOST_TSO4/6), on a guest RX queue what it takes (GUEST_CSUM,
/// GUEST_TSO4/6).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offload {
    /// Partial checksums (NEEDS_CSUM).
    pub csum: bool,
    /// TSO frames, TCP over IPv4.
    pub tso4: bool,
    /// TSO frames, TCP over IPv6.
    pub tso6: bool,
}

impl Offload {
    /// Whether any offload was negotiated for this ring. Without one the
    /// virtio-net header carries nothing for the device: a TX header is
    /// then not read at all (its cache line is the guest's, and reading it
    /// would move it to our CPU for nothing), and NEEDS_CSUM or a GSO type
    /// set there against the negotiation is ignored (as DPDK's vhost library
    /// does): the frame is forwarded as it is.
    #[inline]
    pub fn any(&self) -> bool {
        self.csum | self.tso4 | self.tso6
    }

    /// What a guest's TX header may ask for on this ring (vhost-user offers
    /// no ECN: VIRTIO_NET_F_HOST_ECN is not negotiated).
    #[inline]
    pub fn accept(&self) -> vnet::VnetAccept {
        vnet::VnetAccept {
            csum: self.csum,
            tso4: self.tso4,
            tso6: self.tso6,
            // GUEST_USO/HOST_USO are not offered.
            uso: false,
            ecn: false,
        }
    }

    /// Whether TSO frames of `kind` may cross this ring.
    #[inline]
    pub fn tso(&self, kind: GsoKind) -> bool {
        match kind {
            GsoKind::Tcp4 => self.tso4,
            GsoKind::Tcp6 => self.tso6,
            GsoKind::Udp => false,
        }
    }
}

/// The segmentation request in a guest's TX header: None for GSO_NONE;
/// `Err(Malformed)` for a kind not negotiated, ECN, or no NEEDS_CSUM (virtio
/// 1.2 §5.1.6.2.1: TSO frames must ask for a checksum);
/// `Err(TsoMssTooSmall)` for a `gso_size` below
/// [`MIN_MSS`](dataplane::wire::gso::MIN_MSS) (zero included),
/// which would make one frame thousands of segments.
#[inline]
fn tx_gso(hdr: &[u8; NET_HDR_BYTES], off: Offload) -> Result<Option<Gso>, DropReason> {
    // The mapping is the one kernel ports use ([`dataplane::wire::vnet`]).
    vnet::decode_gso(vnet_part(hdr), off.accept()).map_err(|e| match e {
        vnet::VnetError::MssTooSmall => DropReason::TsoMssTooSmall,
        _ => DropReason::Malformed,
    })
}

/// The fields of a virtio-net header before `num_buffers`.
#[inline]
fn vnet_part(hdr: &[u8; NET_HDR_BYTES]) -> &[u8; vnet::VNET_HDR_LEN] {
    // Cannot fail: NET_HDR_BYTES > VNET_HDR_LEN.
    hdr.first_chunk().unwrap_or(&[0; vnet::VNET_HDR_LEN])
}

/// Adds a TSO frame's segmentation request to the header of a frame going to
/// a guest that negotiated GUEST_TSO for its kind (virtio 1.2 §5.1.6.4).
/// `Err` if the frame's headers do not parse (it is dropped).
#[inline]
fn rx_gso_header(hdr: &mut [u8; NET_HDR_BYTES], frame: &[u8], g: Gso) -> Result<(), ()> {
    let mut h = *vnet_part(hdr);
    vnet::encode_gso(&mut h, frame, g).map_err(|_| ())?;
    hdr[..vnet::VNET_HDR_LEN].copy_from_slice(&h);
    Ok(())
}

/// The offload request in a guest's TX header, checked against the frame
/// (`len` bytes) and what was negotiated (`csum`: VIRTIO_NET_F_CSUM).
/// `Err` drops the frame as Malformed: NEEDS_CSUM without CSUM (virtio 1.2 §5.1.6.2.1 forbids
/// it), or a checksum field outside the frame.
#[inline]
fn tx_offload(
    hdr: &[u8; NET_HDR_BYTES],
    len: usize,
    csum: bool,
) -> Result<Option<PartialCsum>, ()> {
    // DATA_VALID and RSC_INFO mean nothing on TX (virtio 1.2 §5.1.6.2): ignored.
    vnet::decode_csum(vnet_part(hdr), len, csum).map_err(|_| ())
}

/// The virtio-net header for a frame going to the guest: `num_buffers` 1 (patched
/// later if the frame spans buffers) and, when the guest negotiated
/// GUEST_CSUM (`guest_csum`) and the checksum is still partial, NEEDS_CSUM with
/// its offsets (virtio 1.2 §5.1.6.4).
#[inline]
fn rx_header(partial: Option<PartialCsum>, guest_csum: bool) -> [u8; NET_HDR_BYTES] {
    let mut hdr = PLAIN_RX_HEADER;
    if let (Some(p), true) = (partial, guest_csum) {
        let mut h = [0u8; vnet::VNET_HDR_LEN];
        vnet::encode_csum(&mut h, p);
        hdr[..vnet::VNET_HDR_LEN].copy_from_slice(&h);
    }
    hdr
}

/// [`rx_header`] of a frame without offload metadata: no flags, no GSO,
/// one buffer.
const PLAIN_RX_HEADER: [u8; NET_HDR_BYTES] = {
    let mut hdr = [0u8; NET_HDR_BYTES];
    hdr[NET_HDR_NUM_BUFFERS_OFF] = 1;
    hdr
};

/// The longest untagged frame a guest with MTU `mtu` takes (its Ethernet
/// header included), for [`SplitRing::enqueue`]; no limit for an MTU of 0
/// (none set).
pub fn max_frame(mtu: u16) -> usize {
    match mtu {
        0 => usize::MAX,
        m => usize::from(m) + dataplane::wire::ethernet::HEADER_LEN,
    }
}

/// Whether `m`, longer than `max_frame`, exceeds the guest's MTU: a tagged
/// frame may be one VLAN tag longer; a segmentation offload frame is the
/// guest's to take apart (GUEST_TSO) and is never held to it.
#[cold]
fn over_mtu(m: &dataplane::Mbuf, max_frame: usize) -> bool {
    use dataplane::wire::{ethertype, vlan};
    let d = m.data();
    let tagged =
        matches!(d.get(12..14), Some(&[a, b]) if ethertype::is_vlan(u16::from_be_bytes([a, b])));
    m.gso().is_none() && (!tagged || d.len() > max_frame + vlan::HEADER_LEN)
}

impl SplitRing {
    /// Checks the frontend's ring addresses against `mem` (virtio 1.2 §2.7:
    /// descriptor table 16-byte, available ring 2-byte, used ring 4-byte aligned).
    ///
    /// # Errors
    /// [`RingSetupError`] naming the structure that does not fit.
    pub fn new(
        mem: &Arc<GuestMemory>,
        addrs: RingAddrs,
        size: u16,
        event_idx: bool,
        indirect: bool,
    ) -> Result<SplitRing, RingSetupError> {
        if size == 0 || !size.is_power_of_two() || size > MAX_QUEUE_SIZE {
            return Err(RingSetupError::BadSize(size));
        }
        let desc = mem
            .area(addrs.desc, desc_table_bytes(size), 16)
            .map_err(RingSetupError::Desc)?;
        let avail = mem
            .area(addrs.avail, avail_ring_bytes(size), 2)
            .map_err(RingSetupError::Avail)?;
        let used = mem
            .area(addrs.used, used_ring_bytes(size), 4)
            .map_err(RingSetupError::Used)?;
        // The areas were sized for `size` entries just above; None here would
        // be an arithmetic bug, reported rather than panicking.
        let whole = |addr: GuestAddr, len: u64| {
            AreaError::OutOfBounds(OutOfBounds {
                addr: addr.0,
                len_bytes: len,
            })
        };
        let descs = desc.array::<16>(0, size).ok_or(RingSetupError::Desc(whole(
            addrs.desc,
            desc_table_bytes(size),
        )))?;
        let avail_heads = avail
            .array::<2>(4, size)
            .ok_or(RingSetupError::Avail(whole(
                addrs.avail,
                avail_ring_bytes(size),
            )))?;
        let used_elems = used.array::<8>(4, size).ok_or(RingSetupError::Used(whole(
            addrs.used,
            used_ring_bytes(size),
        )))?;
        Ok(SplitRing {
            mem: Arc::clone(mem),
            descs,
            avail,
            avail_heads,
            used,
            used_elems,
            size,
            event_idx,
            indirect,
        })
    }

    /// True once the memory the ring lives in was lost to a shrunk file (see
    /// [`GuestMemory::lost`]).
    #[cold]
    pub fn memory_lost(&self) -> bool {
        self.mem.lost()
    }

    /// Queue size.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// The used index currently in guest memory (where to continue after setup).
    pub fn used_idx(&self) -> u16 {
        // Acquire: pairs with our own Release stores from an earlier owner.
        self.used.load_u16(2, Ordering::Acquire)
    }

    /// Tells the driver not to kick us: we poll. Without EVENT_IDX that is the used
    /// ring's NO_NOTIFY flag (virtio 1.2 §2.7.10); with it, an `avail_event` half
    /// the index space away (refreshed per burst by `SplitRing::publish`).
    pub fn suppress_kicks(&self, cur: Cursor) {
        if self.event_idx {
            self.write_avail_event(cur.last_avail);
        } else {
            // Relaxed: a hint the driver may read at any time; no data depends on it.
            self.used.store_u16(0, USED_F_NO_NOTIFY, Ordering::Relaxed);
        }
    }

    #[inline]
    fn write_avail_event(&self, last_avail: u16) {
        let off = 4 + USED_ELEM_BYTES as usize * self.size as usize;
        // Relaxed: only a kick-suppression hint.
        self.used
            .store_u16(off, last_avail.wrapping_add(0x8000), Ordering::Relaxed);
    }

    /// Reads the driver's available index once and checks it.
    #[inline]
    fn pending(&self, cur: &Cursor) -> Result<(u16, u16), RingFault> {
        // Acquire: ring entries and descriptors written before the index are
        // visible after it (virtio 1.2 §2.7.13.3).
        let avail_idx = self.avail.load_u16(2, Ordering::Acquire);
        let n = avail_idx.wrapping_sub(cur.last_avail);
        if n > self.size {
            return Err(RingFault::AvailIdxJump);
        }
        Ok((avail_idx, n))
    }

    /// Descriptor `i` of the ring's own table (`i` < size, from our checks).
    #[inline]
    fn desc(&self, i: u16) -> Desc {
        Desc::parse(self.descs.read(i))
    }

    /// The head descriptor of a chain, with the head index checked.
    #[inline]
    fn head_desc(&self, head: u16) -> Result<Desc, RingFault> {
        if head >= self.size {
            return Err(RingFault::DescIndex);
        }
        Ok(self.desc(head))
    }

    #[inline]
    fn avail_head(&self, i: u16) -> u16 {
        // Relaxed: ordered by the Acquire load of the available index.
        self.avail_heads.load_u16(i, Ordering::Relaxed)
    }

    #[inline]
    fn put_used(&self, cur: &mut Cursor, head: u16, len: u32) {
        let mut e = [0u8; 8];
        e[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        e[4..].copy_from_slice(&len.to_le_bytes());
        self.used_elems.write(cur.used_idx, &e);
        cur.used_idx = cur.used_idx.wrapping_add(1);
    }

    /// Makes used entries up to `cur.used_idx` visible (one index store per
    /// burst) and decides whether the guest wants an interrupt.
    #[inline]
    fn publish(&self, cur: &Cursor, old_used: u16) -> bool {
        if cur.used_idx == old_used {
            return false;
        }
        // Release: the used elements and buffer contents are visible before the
        // index that hands them to the driver.
        self.used.store_u16(2, cur.used_idx, Ordering::Release);
        if self.event_idx {
            self.write_avail_event(cur.last_avail);
        }
        // SeqCst fence: our index store must be ordered before we read the
        // driver's suppression state, or both sides can miss each other
        // (virtio 1.2 §2.7.10, the store-load case).
        fence(Ordering::SeqCst);
        if self.event_idx {
            let off = 4 + 2 * self.size as usize;
            let used_event = self.avail.load_u16(off, Ordering::Relaxed);
            // vring_need_event: did the index cross used_event in this burst?
            cur.used_idx.wrapping_sub(used_event).wrapping_sub(1)
                < cur.used_idx.wrapping_sub(old_used)
        } else {
            self.avail.load_u16(0, Ordering::Relaxed) & AVAIL_F_NO_INTERRUPT == 0
        }
    }

    /// Guest TX → mbufs: receives up to `burst.remaining_capacity()` frames,
    /// stripping the virtio-net header. Malformed frames are dropped and counted;
    /// without free mbufs, the rest stays in the guest ring. A frame longer
    /// than a normal mbuf (a TSO frame) is copied into a buffer of `gso_pool`
    /// (the port's share of the large-buffer pool); with that pool empty it is
    /// dropped and counted as [`DropReason::NoTsoBuffers`], with the share
    /// used up as [`DropReason::PoolShare`], and the ring goes on.
    ///
    /// With `csum` (VIRTIO_NET_F_CSUM negotiated), a header asking for a
    /// checksum (NEEDS_CSUM) puts its checked offsets on the mbuf
    /// ([`dataplane::Mbuf::partial_csum`]); the egress port completes it or
    /// hands it on. See `tx_offload` for what is dropped as Malformed.
    ///
    /// A fault is reported in [`Completed::fault`]: `cur` then points at the
    /// faulty chain and frames already appended stay in `burst`.
    ///
    /// An empty ring costs one index load and compare, inlined into the
    /// caller: most polls of an idle or lightly loaded queue find nothing.
    #[inline]
    pub fn dequeue(
        &self,
        cur: &mut Cursor,
        pool: &'static Mempool,
        burst: &mut Burst,
        off: Offload,
        gso_pool: Option<&PoolShare>,
        stats: &QueueStats,
    ) -> Completed {
        // Relaxed: only a hint that something arrived; `dequeue_pending` reads
        // the index again with Acquire before touching any entry.
        if self.avail.load_u16(2, Ordering::Relaxed) == cur.last_avail {
            return Completed::default();
        }
        self.dequeue_pending(cur, pool, burst, off, gso_pool, stats)
    }

    #[inline(never)]
    fn dequeue_pending(
        &self,
        cur: &mut Cursor,
        pool: &'static Mempool,
        burst: &mut Burst,
        off: Offload,
        gso_pool: Option<&PoolShare>,
        stats: &QueueStats,
    ) -> Completed {
        let pending = match self.pending(cur) {
            Ok((_, n)) => n,
            Err(f) => return Completed::faulted(f),
        };
        let want = (pending as usize).min(burst.remaining_capacity());
        if want == 0 {
            return Completed::default();
        }
        // All buffers at once; one that held a dropped frame takes the next.
        let first = burst.len();
        let n = pool.alloc_bulk(burst, want);
        let old_used = cur.used_idx;
        let mut walk = Walk::default();
        let offloads = off.any();
        let mut filled = first;
        let mut fault = None;
        for _ in 0..n {
            let head = self.avail_head(cur.last_avail);
            let m = &mut burst[filled];
            match self.copy_out(head, m.room_mut(), &mut walk, offloads) {
                // No offload asked for (flags and gso_type both 0: how
                // drivers send most frames): a fresh mbuf has no offload
                // metadata, so only the length is set. Tested here, on the
                // inlined copy's result, so that the common frame's result
                // never goes through memory.
                Ok(TxFrame::Ok(len, hdr))
                    if hdr[NET_HDR_FLAGS_OFF] | hdr[NET_HDR_GSO_TYPE_OFF] == 0 =>
                {
                    // Cannot fail: copy_out wrote at most room_mut().len() bytes.
                    let _ = m.set_len(len);
                    filled += 1;
                }
                other => {
                    match self.dequeue_other(other, head, m, gso_pool, off, &mut walk, stats) {
                        Ok(Some(true)) => filled += 1,
                        Ok(Some(false)) => {}
                        // The burst's budget is spent: the chain stays.
                        Ok(None) => break,
                        Err(f) => {
                            fault = Some(f);
                            break;
                        }
                    }
                }
            }
            self.put_used(cur, head, 0);
            cur.last_avail = cur.last_avail.wrapping_add(1);
        }
        if filled < first + n {
            // Buffers left over by drops or a fault go back to the pool.
            burst.truncate(filled);
        }
        let notify = self.publish(cur, old_used);
        Completed {
            frames: filled - first,
            notify,
            fault,
            descs_walked: walk.descs,
        }
    }

    /// What `dequeue_pending` does with a frame other than a plain one:
    /// copies a TSO frame again into a large buffer, puts offload metadata on
    /// the mbuf, or counts a drop. Ok(Some(true)): `m` holds the frame;
    /// Ok(Some(false)): dropped (counted), `m` free for the next; Ok(None):
    /// not read (the burst's budget is spent); Err: the ring is faulty.
    #[cold]
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn dequeue_other(
        &self,
        mut copied: Result<TxFrame, RingFault>,
        head: u16,
        m: &mut dataplane::Mbuf,
        gso_pool: Option<&PoolShare>,
        off: Offload,
        walk: &mut Walk,
        stats: &QueueStats,
    ) -> Result<Option<bool>, RingFault> {
        if let (Ok(TxFrame::Oversize), Some(big)) = (&copied, gso_pool) {
            // A TSO frame: copy it again into a large buffer (see
            // docs/vhost-user.md, "Segmentation offload"). The small
            // buffer goes back to its pool.
            // An empty large pool drops the frame (counted) rather than
            // leaving it at the head of the ring: the pool is shared by
            // every vhost-user port and its buffers may be held elsewhere
            // (other guests' frames, handoff rings, other workers' caches),
            // so waiting would stall this queue's small frames too, perhaps
            // for good; a dropped TCP segment is only retransmitted.
            // The second walk of the same chain: not deferred, even if the
            // first one spent the budget (it is bounded by the chain).
            // The buffer is charged to this port's share of the pool, so
            // that one guest cannot take them all (docs/vhost-user.md).
            copied = match big.alloc() {
                Ok(b) => {
                    drop(std::mem::replace(m, b));
                    let d = self.head_desc(head)?;
                    if d.flags == 0 {
                        self.copy_out_single(d, m.room_mut(), &mut walk.hint, off.any())
                    } else {
                        self.copy_out_chain(head, m.room_mut(), walk, off.any())
                    }
                }
                Err(AllocError::Empty) => Ok(TxFrame::NoLargeBuffer),
                Err(AllocError::OverShare) => {
                    stats.drop_one(DropReason::PoolShare);
                    return Ok(Some(false));
                }
            };
        }
        let reason = match copied? {
            TxFrame::Ok(len, hdr) => match (tx_offload(&hdr, len, off.csum), tx_gso(&hdr, off)) {
                (Ok(partial), Ok(gso)) => {
                    // Cannot fail: copy_out wrote at most room_mut().len() bytes.
                    let _ = m.set_len(len);
                    m.set_partial_csum(partial);
                    m.set_gso(gso);
                    return Ok(Some(true));
                }
                (Err(()), _) => DropReason::Malformed,
                (Ok(_), Err(reason)) => reason,
            },
            TxFrame::Oversize | TxFrame::Malformed => DropReason::Malformed,
            TxFrame::NoLargeBuffer => DropReason::NoTsoBuffers,
            TxFrame::TooLong => DropReason::ChainTooLong,
            TxFrame::Deferred => return Ok(None),
        };
        stats.drop_one(reason);
        Ok(Some(false))
    }

    /// Copies one TX chain, minus its virtio-net header, into `room`; returns
    /// the header separately. A chain of one descriptor (how DPDK and Linux
    /// drivers send a linear frame) takes the direct path.
    ///
    /// Inlined into `dequeue_pending` with the direct path, while the chain
    /// walk stays out of line: the loop then makes no call per frame but the
    /// buffer copy (benches/vring-callgrind.sh; docs/benchmarks-log.md).
    ///
    /// A chain is not read once the burst has spent its budget
    /// ([`TxFrame::Deferred`]); a single descriptor is always read (one
    /// descriptor per frame, at most a burst of them).
    #[inline(always)]
    fn copy_out(
        &self,
        head: u16,
        room: &mut [u8],
        walk: &mut Walk,
        read_hdr: bool,
    ) -> Result<TxFrame, RingFault> {
        let d = self.head_desc(head)?;
        if d.flags == 0 {
            return self.copy_out_single(d, room, &mut walk.hint, read_hdr);
        }
        if walk.spent() {
            return Ok(TxFrame::Deferred);
        }
        self.copy_out_chain(head, room, walk, read_hdr)
    }

    /// One device-readable descriptor holding header and frame: one
    /// translation, two copies (one without `read_hdr`). Same checks and
    /// outcomes as the chain walk.
    #[inline]
    fn copy_out_single(
        &self,
        d: Desc,
        room: &mut [u8],
        hint: &mut RegionHint,
        read_hdr: bool,
    ) -> Result<TxFrame, RingFault> {
        let oom = |_| RingFault::BufferOutOfMemory;
        let buf = self
            .mem
            .slice(GuestAddr(d.addr), d.len, hint)
            .map_err(oom)?;
        let Some(body) = (d.len as usize).checked_sub(NET_HDR_BYTES) else {
            return Ok(TxFrame::Malformed);
        };
        if !(14..=MAX_FRAME_BYTES).contains(&body) {
            return Ok(TxFrame::Malformed);
        }
        if body > room.len() {
            // Longer than a normal mbuf: a TSO frame for the large pool.
            return Ok(TxFrame::Oversize);
        }
        let mut hdr = [0u8; NET_HDR_BYTES];
        if read_hdr {
            buf.read_at(0, &mut hdr).map_err(oom)?;
        }
        buf.read_at(NET_HDR_BYTES, &mut room[..body]).map_err(oom)?;
        Ok(TxFrame::Ok(body, hdr))
    }

    /// The general TX path: any chain, direct or indirect. Out of line, see
    /// `copy_out`.
    #[inline(never)]
    fn copy_out_chain(
        &self,
        head: u16,
        room: &mut [u8],
        walk: &mut Walk,
        read_hdr: bool,
    ) -> Result<TxFrame, RingFault> {
        let mut chain = Chain::new(self, head, MAX_FRAME_DESCS)?;
        let mut hdr = [0u8; NET_HDR_BYTES];
        let mut hdr_left = NET_HDR_BYTES as u64;
        let mut written = 0usize;
        let mut total = 0u64;
        let mut bad = false;
        let mut over = false;
        let oom = |_| RingFault::BufferOutOfMemory;
        while let Some(seg) = chain.next_segment(walk)? {
            if seg.write {
                // virtio 1.2 §2.7.4.2: a TX chain is all device-readable.
                bad = true;
                continue;
            }
            let skip = hdr_left.min(u64::from(seg.len));
            if skip > 0 && !bad && read_hdr {
                let at = NET_HDR_BYTES - hdr_left as usize;
                seg.buf
                    .read_at(0, &mut hdr[at..at + skip as usize])
                    .map_err(oom)?;
            }
            hdr_left -= skip;
            let body = u64::from(seg.len) - skip;
            total += body;
            if bad || over || body == 0 {
                continue;
            }
            if written as u64 + body > room.len() as u64 {
                over = true;
                continue;
            }
            let dst = &mut room[written..written + body as usize];
            seg.buf.read_at(skip as usize, dst).map_err(oom)?;
            written += body as usize;
        }
        if chain.too_long {
            return Ok(TxFrame::TooLong);
        }
        if bad || hdr_left > 0 || total < 14 || total > MAX_FRAME_BYTES as u64 {
            return Ok(TxFrame::Malformed);
        }
        if over {
            return Ok(TxFrame::Oversize);
        }
        Ok(TxFrame::Ok(written, hdr))
    }

    /// mbufs → guest RX: takes frames from the front of `burst` while the guest
    /// has buffers, prepending a virtio-net header. With `mrg_rxbuf` a frame may
    /// span several chains (`num_buffers`); without it a frame that does not fit
    /// one chain is dropped (Malformed). Taken frames are freed.
    ///
    /// A frame whose checksum is still partial goes to the guest as it is, with
    /// NEEDS_CSUM and its offsets in the header, when `guest_csum`
    /// (VIRTIO_NET_F_GUEST_CSUM negotiated); otherwise its checksum is completed
    /// here first, so the guest never sees a partial checksum it did not ask for.
    ///
    /// A frame longer than `max_frame` (see [`max_frame`]: the guest's MTU
    /// plus the Ethernet header, one tag more for a tagged frame) is dropped
    /// and counted as [`DropReason::MtuExceeded`]; `usize::MAX` for none.
    ///
    /// A fault is reported in [`Completed::fault`]: frames before the faulty one
    /// were delivered and removed from `burst`; the faulty one is still its first.
    pub fn enqueue(
        &self,
        cur: &mut Cursor,
        burst: &mut Burst,
        mrg_rxbuf: bool,
        off: Offload,
        max_frame: usize,
        stats: &QueueStats,
    ) -> Completed {
        let guest_csum = off.csum;
        let avail_idx = match self.pending(cur) {
            Ok((i, _)) => i,
            Err(f) => return Completed::faulted(f),
        };
        let old_used = cur.used_idx;
        let mut walk = Walk::default();
        let mut taken = 0;
        let mut fault = None;
        for m in burst.iter_mut() {
            if m.len() > max_frame && over_mtu(m, max_frame) {
                stats.drop_one(DropReason::MtuExceeded);
                taken += 1;
                continue;
            }
            if !guest_csum && m.partial_csum().is_some() {
                // Clears the metadata: a frame left in the burst is not redone.
                m.complete_csum();
            }
            // A frame with no offload metadata (most) gets the constant
            // header; only the others build one.
            let built;
            let hdr = match (m.partial_csum(), m.gso()) {
                (None, None) => &PLAIN_RX_HEADER,
                (partial, gso) => {
                    let mut h = rx_header(partial, guest_csum);
                    if let Some(g) = gso {
                        // The worker segments TSO frames for guests without
                        // GUEST_TSO (Port::accepts_gso); one still here means
                        // the guest renegotiated since: it stays in the burst
                        // (tx-full).
                        if !off.tso(g.kind) {
                            break;
                        }
                        if rx_gso_header(&mut h, m.data(), g).is_err() {
                            stats.drop_one(DropReason::Malformed);
                            taken += 1;
                            continue;
                        }
                    }
                    built = h;
                    &built
                }
            };
            match self.copy_in(cur, avail_idx, hdr, m.data(), mrg_rxbuf, &mut walk) {
                Ok(RxFrame::Done) => taken += 1,
                Ok(RxFrame::Dropped(reason)) => {
                    stats.drop_one(reason);
                    taken += 1;
                }
                Ok(RxFrame::Wait) => break,
                Err(f) => {
                    fault = Some(f);
                    break;
                }
            }
        }
        let notify = self.publish(cur, old_used);
        dataplane::mempool::free_front(burst, taken);
        Completed {
            frames: taken,
            notify,
            fault,
            descs_walked: walk.descs,
        }
    }

    /// Writes one frame (see [`RxFrame`]). A frame that fits the first
    /// chain's single writable descriptor (how DPDK and Linux drivers post
    /// receive buffers) takes the direct path.
    #[inline]
    fn copy_in(
        &self,
        cur: &mut Cursor,
        avail_idx: u16,
        hdr: &[u8; NET_HDR_BYTES],
        frame: &[u8],
        mrg_rxbuf: bool,
        walk: &mut Walk,
    ) -> Result<RxFrame, RingFault> {
        if cur.last_avail == avail_idx {
            return Ok(RxFrame::Wait);
        }
        let head = self.avail_head(cur.last_avail);
        let d = self.head_desc(head)?;
        let total = NET_HDR_BYTES + frame.len();
        if d.flags != DESC_F_WRITE || (d.len as usize) < total {
            return self.copy_in_chain(cur, avail_idx, hdr, frame, mrg_rxbuf, walk);
        }
        let oom = |_| RingFault::BufferOutOfMemory;
        let buf = self
            .mem
            .slice(GuestAddr(d.addr), d.len, &mut walk.hint)
            .map_err(oom)?;
        buf.write_at(0, hdr).map_err(oom)?;
        buf.write_at(NET_HDR_BYTES, frame).map_err(oom)?;
        // total <= d.len, a u32.
        self.put_used(cur, head, total as u32);
        cur.last_avail = cur.last_avail.wrapping_add(1);
        Ok(RxFrame::Done)
    }

    /// The general RX path: any chains, direct or indirect, a frame spanning
    /// several of them with `mrg_rxbuf`. Out of line, so that `enqueue`'s loop
    /// over single-descriptor buffers stays small (benches/vring-callgrind.sh;
    /// docs/benchmarks-log.md).
    ///
    /// Bounded by [`MAX_FRAME_DESCS`] over all the chains of the frame: a
    /// frame that needs more is dropped and the chains it took are returned
    /// empty, so a ring of chains that never hold a frame is used up instead
    /// of walked again for every frame. Not started once the burst has spent
    /// its [`BURST_DESC_BUDGET`].
    #[inline(never)]
    fn copy_in_chain(
        &self,
        cur: &mut Cursor,
        avail_idx: u16,
        hdr: &[u8; NET_HDR_BYTES],
        frame: &[u8],
        mrg_rxbuf: bool,
        walk: &mut Walk,
    ) -> Result<RxFrame, RingFault> {
        if walk.spent() {
            return Ok(RxFrame::Wait);
        }
        let total = NET_HDR_BYTES + frame.len();
        let saved = *cur;
        let mut done = 0usize;
        let mut num_buffers = 0u16;
        // Guest addresses of the two num_buffers bytes, patched if > 1.
        let mut nb_at = [GuestAddr(0); 2];
        let mut last_head = 0u16;
        let mut left = MAX_FRAME_DESCS;
        let oom = |_| RingFault::BufferOutOfMemory;
        while done < total {
            if !mrg_rxbuf && num_buffers == 1 {
                // One chain must hold the whole frame: hand the buffer back empty
                // rather than a truncated frame.
                cur.used_idx = cur.used_idx.wrapping_sub(1);
                self.put_used(cur, last_head, 0);
                return Ok(RxFrame::Dropped(DropReason::Malformed));
            }
            if cur.last_avail == avail_idx {
                *cur = saved;
                return Ok(RxFrame::Wait);
            }
            let head = self.avail_head(cur.last_avail);
            last_head = head;
            let mut chain = Chain::new(self, head, left)?;
            let mut in_chain = 0u32;
            while let Some(seg) = chain.next_segment(walk)? {
                if !seg.write || done >= total {
                    continue;
                }
                let mut seg_off = 0u32;
                while seg_off < seg.len && done < total {
                    let (src, src_base) = if done < NET_HDR_BYTES {
                        (&hdr[done..], done)
                    } else {
                        (&frame[done - NET_HDR_BYTES..], done)
                    };
                    let n = src.len().min((seg.len - seg_off) as usize);
                    let at = GuestAddr(seg.addr.0 + u64::from(seg_off));
                    for (k, slot) in nb_at.iter_mut().enumerate() {
                        let want = NET_HDR_NUM_BUFFERS_OFF + k;
                        if src_base <= want && want < src_base + n && done < NET_HDR_BYTES {
                            *slot = GuestAddr(at.0 + (want - src_base) as u64);
                        }
                    }
                    seg.buf.write_at(seg_off as usize, &src[..n]).map_err(oom)?;
                    done += n;
                    seg_off += n as u32;
                    in_chain += n as u32;
                }
            }
            self.put_used(cur, head, in_chain);
            cur.last_avail = cur.last_avail.wrapping_add(1);
            num_buffers += 1;
            left = chain.left;
            if chain.too_long {
                // Every chain taken goes back empty: what was written is not
                // a frame.
                let taken = cur.used_idx.wrapping_sub(saved.used_idx);
                cur.used_idx = saved.used_idx;
                for i in 0..taken {
                    let h = self.avail_head(saved.last_avail.wrapping_add(i));
                    self.put_used(cur, h, 0);
                }
                return Ok(RxFrame::Dropped(DropReason::ChainTooLong));
            }
        }
        if num_buffers > 1 {
            let b = num_buffers.to_le_bytes();
            for (k, at) in nb_at.iter().enumerate() {
                self.mem.write(*at, &b[k..k + 1]).map_err(oom)?;
            }
        }
        Ok(RxFrame::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    const DESC: u64 = 0x1000;
    const AVAIL: u64 = 0x2000;
    const USED: u64 = 0x3000;
    const BUF: u64 = 0x10000;
    const MEM_END: u64 = 0x40000;

    fn csum_only(csum: bool) -> Offload {
        Offload {
            csum,
            ..Offload::default()
        }
    }

    /// A guest: one memory region with a ring at fixed addresses.
    struct Guest {
        gm: Arc<GuestMemoryMmap>,
        mem: Arc<GuestMemory>,
        size: u16,
        avail_idx: u16,
    }

    /// Where [`Guest::two_regions`] splits memory.
    const SPLIT: u64 = 0x20000;

    impl Guest {
        fn new(size: u16) -> Guest {
            Guest::with_ranges(size, &[(GuestAddress(0), MEM_END as usize)])
        }

        /// Memory as two adjacent regions, split at [`SPLIT`]: contiguous for the
        /// guest, but a buffer across the split is in no single region.
        fn two_regions(size: u16) -> Guest {
            Guest::with_ranges(
                size,
                &[
                    (GuestAddress(0), SPLIT as usize),
                    (GuestAddress(SPLIT), (MEM_END - SPLIT) as usize),
                ],
            )
        }

        fn with_ranges(size: u16, ranges: &[(GuestAddress, usize)]) -> Guest {
            let gm = Arc::new(GuestMemoryMmap::from_ranges(ranges).unwrap());
            let mem = Arc::new(GuestMemory::new(Arc::clone(&gm)));
            Guest {
                gm,
                mem,
                size,
                avail_idx: 0,
            }
        }

        /// The guest with its ring set up and a device cursor at the start.
        fn queue(self, event_idx: bool, indirect: bool) -> (Guest, SplitRing, Cursor) {
            let ring = self.ring(event_idx, indirect);
            (self, ring, Cursor::default())
        }

        fn ring(&self, event_idx: bool, indirect: bool) -> SplitRing {
            let addrs = RingAddrs {
                desc: GuestAddr(DESC),
                avail: GuestAddr(AVAIL),
                used: GuestAddr(USED),
            };
            SplitRing::new(&self.mem, addrs, self.size, event_idx, indirect).unwrap()
        }

        fn desc_at(&self, table: u64, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
            let b = crate::testguest::desc_bytes(addr, len, flags, next);
            self.gm
                .write_slice(&b, GuestAddress(table + 16 * u64::from(i)))
                .unwrap();
        }

        fn desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
            self.desc_at(DESC, i, addr, len, flags, next);
        }

        /// Makes descriptors `0..n` available as device-writable buffers of
        /// `len` bytes, `stride` bytes apart from [`BUF`].
        fn post_writable(&mut self, n: u16, stride: u64, len: u32) {
            for i in 0..n {
                self.post(i, BUF + stride * u64::from(i), len, DESC_F_WRITE);
            }
        }

        /// Makes descriptor `i` available as a chain of its own.
        fn post(&mut self, i: u16, addr: u64, len: u32, flags: u16) {
            self.desc(i, addr, len, flags, 0);
            self.push(i);
        }

        fn set_avail_idx(&mut self, idx: u16) {
            self.avail_idx = idx;
            self.gm.write_obj(idx, GuestAddress(AVAIL + 2)).unwrap();
        }

        fn push(&mut self, head: u16) {
            let slot = u64::from(self.avail_idx % self.size);
            self.gm
                .write_obj(head, GuestAddress(AVAIL + 4 + 2 * slot))
                .unwrap();
            let n = self.avail_idx.wrapping_add(1);
            self.set_avail_idx(n);
        }

        fn used_idx(&self) -> u16 {
            self.gm.read_obj(GuestAddress(USED + 2)).unwrap()
        }

        fn used_elem(&self, i: u16) -> (u32, u32) {
            let at = USED + 4 + 8 * u64::from(i % self.size);
            (
                self.gm.read_obj(GuestAddress(at)).unwrap(),
                self.gm.read_obj(GuestAddress(at + 4)).unwrap(),
            )
        }

        fn write(&self, addr: u64, bytes: &[u8]) {
            self.gm.write_slice(bytes, GuestAddress(addr)).unwrap();
        }

        fn read(&self, addr: u64, n: usize) -> Vec<u8> {
            let mut v = vec![0u8; n];
            self.gm.read_slice(&mut v, GuestAddress(addr)).unwrap();
            v
        }
    }

    fn frame(n: usize) -> Vec<u8> {
        let mut f: Vec<u8> = (0..n).map(|i| i as u8).collect();
        f[12] = 0x08;
        f[13] = 0x00;
        f
    }

    fn pool() -> &'static Mempool {
        // One pool for all tests: a process may create only a few pools.
        static POOL: std::sync::OnceLock<&'static Mempool> = std::sync::OnceLock::new();
        POOL.get_or_init(|| Mempool::for_tests(1024))
    }

    fn rx(g: &Guest, ring: &SplitRing, cur: &mut Cursor) -> (Completed, Vec<Vec<u8>>, QueueStats) {
        let stats = QueueStats::default();
        let mut burst = Burst::new();
        let done = ring.dequeue(cur, pool(), &mut burst, csum_only(true), None, &stats);
        let _ = g;
        (
            done,
            burst.iter().map(|m| m.data().to_vec()).collect(),
            stats,
        )
    }

    /// The fault `rx` stopped at, if any.
    fn rx_fault(g: &Guest, ring: &SplitRing, cur: &mut Cursor) -> Option<RingFault> {
        rx(g, ring, cur).0.fault
    }

    /// Dequeues without offloads, large frames into buffers of `share`: what
    /// completed, the burst and the counters.
    fn rx_large(
        ring: &SplitRing,
        cur: &mut Cursor,
        share: &dataplane::mempool::PoolShare,
    ) -> (Completed, Burst, QueueStats) {
        let stats = QueueStats::default();
        let mut burst = Burst::new();
        let done = ring.dequeue(
            cur,
            pool(),
            &mut burst,
            Offload::default(),
            Some(share),
            &stats,
        );
        (done, burst, stats)
    }

    /// A TX chain: 12-byte header descriptor, then the frame.
    fn tx_chain(g: &mut Guest, head: u16, at: u64, f: &[u8]) {
        tx_chain_hdr(g, head, at, &[0u8; NET_HDR_BYTES], f);
    }

    /// A TX chain with the given virtio-net header.
    fn tx_chain_hdr(g: &mut Guest, head: u16, at: u64, hdr: &[u8; NET_HDR_BYTES], f: &[u8]) {
        g.write(at, hdr);
        g.write(at + 0x100, f);
        g.desc(head, at, NET_HDR_BYTES as u32, DESC_F_NEXT, head + 1);
        g.desc(head + 1, at + 0x100, f.len() as u32, 0, 0);
        g.push(head);
    }

    #[test]
    fn well_formed_tx_chains_are_received_without_header() {
        let (mut g, ring, mut cur) = Guest::new(8).queue(false, false);
        tx_chain(&mut g, 0, BUF, &frame(64));
        tx_chain(&mut g, 2, BUF + 0x1000, &frame(100));
        let (done, frames, stats) = rx(&g, &ring, &mut cur);
        assert_eq!(done.fault, None);
        assert_eq!(done.frames, 2);
        assert_eq!(frames, vec![frame(64), frame(100)]);
        assert_eq!(g.used_idx(), 2);
        assert_eq!(g.used_elem(0), (0, 0));
        assert_eq!(g.used_elem(1), (2, 0));
        assert_eq!(
            cur,
            Cursor {
                last_avail: 2,
                used_idx: 2
            }
        );
        assert_eq!(stats.snapshot().total_drops(), 0);
        // Nothing new: nothing happens.
        let (done, frames, _) = rx(&g, &ring, &mut cur);
        assert_eq!((done.frames, frames.len(), done.fault), (0, 0, None));
    }

    /// A TX chain of one descriptor: header and frame together.
    fn tx_single(g: &mut Guest, head: u16, at: u64, f: &[u8]) {
        tx_single_hdr(g, head, at, &[0; NET_HDR_BYTES], f);
    }

    fn tx_single_hdr(g: &mut Guest, head: u16, at: u64, hdr: &[u8; NET_HDR_BYTES], f: &[u8]) {
        let mut all = hdr.to_vec();
        all.extend_from_slice(f);
        g.write(at, &all);
        g.post(head, at, all.len() as u32, 0);
    }

    #[test]
    fn single_descriptor_tx_frames_are_received_like_chains() {
        let (mut g, ring, mut cur) = Guest::new(8).queue(false, false);
        tx_single(&mut g, 0, BUF, &frame(60));
        tx_chain(&mut g, 1, BUF + 0x1000, &frame(61));
        tx_single(&mut g, 3, BUF + 0x2000, &frame(1514));
        let mut hdr = needs_csum_hdr(34, 6);
        hdr[NET_HDR_NUM_BUFFERS_OFF] = 7; // ignored on TX
        let mut all = hdr.to_vec();
        all.extend_from_slice(&partial_udp4());
        g.write(BUF + 0x3000, &all);
        g.post(4, BUF + 0x3000, all.len() as u32, 0);
        let (done, frames, stats) = rx(&g, &ring, &mut cur);
        assert_eq!((done.frames, done.fault), (4, None));
        assert_eq!(
            frames,
            vec![frame(60), frame(61), frame(1514), partial_udp4()]
        );
        assert_eq!(stats.snapshot().total_drops(), 0);
        assert_eq!(g.used_idx(), 4);
        assert_eq!(g.used_elem(2), (3, 0));
    }

    #[test]
    fn bad_single_descriptor_tx_frames_are_dropped() {
        let (mut g, ring, mut cur) = Guest::new(8).queue(false, false);
        // Header only; header cut short; a 13-byte frame; device-writable;
        // larger than an mbuf; then a good one, which gets a buffer used by a
        // dropped frame.
        for (i, len) in [(0u16, 12u32), (1, 11), (2, 25)] {
            g.post(i, BUF, len, 0);
        }
        g.post(3, BUF, 100, DESC_F_WRITE);
        g.post(4, BUF, 0x8000, 0);
        tx_single(&mut g, 5, BUF + 0x9000, &frame(64));
        let (done, frames, stats) = rx(&g, &ring, &mut cur);
        assert_eq!((done.frames, done.fault), (1, None));
        assert_eq!(frames, vec![frame(64)]);
        assert_eq!(stats.drops(DropReason::Malformed), 5);
        assert_eq!(g.used_idx(), 6);
    }

    /// What VIRTIO_F_IN_ORDER (offered by the backend) promises: used
    /// entries in the order the chains were made available, dropped ones
    /// included, both ways. The heads are made available out of index order
    /// so that the two orders differ.
    #[test]
    fn used_entries_follow_the_available_order() {
        let (mut g, ring, mut cur) = Guest::new(8).queue(false, false);
        let order = [5u16, 2, 7, 0];
        for (k, &head) in order.iter().enumerate() {
            let at = BUF + 0x1000 * u64::from(head);
            if k == 1 {
                g.desc(head, at, 11, 0, 0); // header cut short: dropped
                g.push(head);
            } else {
                tx_single(&mut g, head, at, &frame(64));
            }
        }
        let (done, frames, stats) = rx(&g, &ring, &mut cur);
        assert_eq!((done.frames, frames.len()), (3, 3));
        assert_eq!(stats.drops(DropReason::Malformed), 1);
        let ids: Vec<u32> = (0..4).map(|i| g.used_elem(i).0).collect();
        assert_eq!(ids, order.map(u32::from));

        let (mut g, ring, mut cur) = Guest::new(8).queue(false, false);
        for &head in &order {
            g.post(head, BUF + 0x1000 * u64::from(head), 2048, DESC_F_WRITE);
        }
        let stats = QueueStats::default();
        let mut burst = tx_frames(&[frame(64), frame(60), frame(64), frame(60)]);
        let done = enqueue(&ring, &mut cur, &mut burst, &stats);
        assert_eq!(done.frames, 4);
        let used: Vec<(u32, u32)> = (0..4).map(|i| g.used_elem(i)).collect();
        assert_eq!(used, [(5, 76), (2, 72), (7, 76), (0, 72)]);
    }

    #[test]
    fn buffers_of_dropped_frames_go_back_to_the_pool() {
        let pool = Mempool::for_tests(8);
        let (mut g, ring, mut cur) = Guest::new(8).queue(false, false);
        g.post(0, BUF, 12, 0);
        tx_single(&mut g, 1, BUF + 0x1000, &frame(60));
        g.post(2, BUF, 11, 0);
        g.desc(3, MEM_END, 100, 0, 0); // faults
        g.push(3);
        let stats = QueueStats::default();
        let mut burst = Burst::new();
        let done = ring.dequeue(&mut cur, pool, &mut burst, csum_only(false), None, &stats);
        assert_eq!(
            (done.frames, done.fault),
            (1, Some(RingFault::BufferOutOfMemory))
        );
        assert_eq!(pool.in_use(), 1);
        drop(burst);
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn buffers_in_either_region_are_found_but_never_across_them() {
        let (mut g, ring, mut cur) = Guest::two_regions(8).queue(false, false);
        // Alternating regions (the region hint misses every time), a chain with
        // one descriptor in each, and one ending exactly at the split.
        tx_single(&mut g, 0, BUF, &frame(60));
        tx_single(&mut g, 1, SPLIT + 0x1000, &frame(61));
        tx_single(&mut g, 2, BUF + 0x1000, &frame(62));
        g.write(SPLIT - 0x100, &[0u8; NET_HDR_BYTES]);
        g.write(SPLIT + 0x2000, &frame(63));
        g.desc(3, SPLIT - 0x100, NET_HDR_BYTES as u32, DESC_F_NEXT, 4);
        g.desc(4, SPLIT + 0x2000, 63, 0, 0);
        g.push(3);
        tx_single(&mut g, 5, SPLIT - 76, &frame(64));
        let (done, frames, _) = rx(&g, &ring, &mut cur);
        assert_eq!(done.fault, None);
        assert_eq!(
            frames,
            vec![frame(60), frame(61), frame(62), frame(63), frame(64)]
        );
        // One byte more and it straddles the split: a fault, nothing consumed.
        tx_single(&mut g, 6, SPLIT - 76, &frame(65));
        let (done, frames, _) = rx(&g, &ring, &mut cur);
        assert_eq!(done.fault, Some(RingFault::BufferOutOfMemory));
        assert!(frames.is_empty());
        assert_eq!(cur.last_avail, 5);
    }

    #[test]
    fn rx_buffers_in_either_region_and_across_the_split() {
        let (mut g, ring, mut cur) = Guest::two_regions(8).queue(false, false);
        let at = [BUF, SPLIT + 0x1000, SPLIT - 76];
        for (i, a) in at.iter().enumerate() {
            g.post(i as u16, *a, 76, DESC_F_WRITE);
        }
        let stats = QueueStats::default();
        let mut burst = tx_frames(&[frame(64), frame(64), frame(64)]);
        let done = enqueue(&ring, &mut cur, &mut burst, &stats);
        assert_eq!((done.frames, done.fault), (3, None));
        for (i, a) in at.iter().enumerate() {
            assert_eq!(g.used_elem(i as u16), (i as u32, 76));
            assert_eq!(g.read(a + 12, 64), frame(64));
        }
        // A buffer across the split faults before anything is written.
        g.post(3, SPLIT - 75, 76, DESC_F_WRITE);
        g.write(SPLIT - 75, &[0xee; 76]);
        let mut burst = tx_frames(&[frame(64)]);
        let done = enqueue(&ring, &mut cur, &mut burst, &stats);
        assert_eq!(done.fault, Some(RingFault::BufferOutOfMemory));
        assert_eq!(burst.len(), 1);
        assert_eq!(g.read(SPLIT - 75, 76), [0xee; 76]);
        assert_eq!(g.used_idx(), 3);
    }

    #[test]
    fn rx_single_buffer_is_used_exactly_or_falls_back() {
        let (mut g, ring, mut cur) = Guest::new(8).queue(false, false);
        // Exactly header + frame; one byte short (spans two buffers with
        // MRG_RXBUF); a read-only buffer (skipped: used with length 0, the
        // frame continues in the next one).
        g.desc(0, BUF, 76, DESC_F_WRITE, 0);
        g.desc(1, BUF + 0x1000, 75, DESC_F_WRITE, 0);
        g.desc(2, BUF + 0x2000, 2048, DESC_F_WRITE, 0);
        g.desc(3, BUF + 0x3000, 2048, 0, 0);
        g.desc(4, BUF + 0x4000, 2048, DESC_F_WRITE, 0);
        for i in 0..5 {
            g.push(i);
        }
        let stats = QueueStats::default();
        let mut burst = tx_frames(&[frame(64), frame(64), frame(64)]);
        let done = enqueue(&ring, &mut cur, &mut burst, &stats);
        assert_eq!((done.frames, done.fault), (3, None));
        assert_eq!(g.used_idx(), 5);
        assert_eq!(g.used_elem(0), (0, 76));
        assert_eq!(g.read(BUF + 12, 64), frame(64));
        assert_eq!((g.used_elem(1), g.used_elem(2)), ((1, 75), (2, 1)));
        assert_eq!(g.read(BUF + 0x1000 + 10, 2), [2, 0], "num_buffers");
        assert_eq!((g.used_elem(3), g.used_elem(4)), ((3, 0), (4, 76)));
        assert_eq!(g.read(BUF + 0x4000 + 12, 64), frame(64));
        assert_eq!(stats.snapshot().total_drops(), 0);
    }

    #[test]
    fn header_and_frame_may_be_split_and_include_zero_length_descriptors() {
        let (mut g, ring, mut cur) = Guest::new(8).queue(false, false);
        let f = frame(64);
        let mut all = vec![0u8; NET_HDR_BYTES];
        all.extend_from_slice(&f);
        g.write(BUF, &all);
        // 5 header bytes | empty | 7 header + 20 frame | rest.
        g.desc(0, BUF, 5, DESC_F_NEXT, 1);
        g.desc(1, BUF + 5, 0, DESC_F_NEXT, 2);
        g.desc(2, BUF + 5, 27, DESC_F_NEXT, 3);
        g.desc(3, BUF + 32, (all.len() - 32) as u32, 0, 0);
        g.push(0);
        let (done, frames, _) = rx(&g, &ring, &mut cur);
        assert_eq!(done.fault, None);
        assert_eq!(frames, vec![f]);
    }

    #[test]
    fn descriptor_outside_memory_faults_without_consuming() {
        let (mut g, ring, mut cur) = Guest::new(8).queue(false, false);
        g.desc(0, BUF, NET_HDR_BYTES as u32, DESC_F_NEXT, 1);
        g.desc(1, MEM_END - 10, 64, 0, 0);
        g.push(0);
        let (done, frames, _) = rx(&g, &ring, &mut cur);
        assert_eq!(done.fault, Some(RingFault::BufferOutOfMemory));
        assert!(frames.is_empty());
        assert_eq!(cur.last_avail, 0);
        assert_eq!(g.used_idx(), 0);
    }

    #[test]
    fn huge_length_descriptor_faults() {
        let (mut g, ring, mut cur) = Guest::new(8).queue(false, false);
        g.post(0, BUF, u32::MAX, 0);
        assert_eq!(
            rx_fault(&g, &ring, &mut cur),
            Some(RingFault::BufferOutOfMemory)
        );
    }

    #[test]
    fn frame_larger_than_mbuf_is_dropped_and_ring_continues() {
        let (mut g, ring, mut cur) = Guest::new(8).queue(false, false);
        g.desc(0, BUF, 0x8000, 0, 0); // inside memory, larger than an mbuf
        g.push(0);
        tx_chain(&mut g, 2, BUF + 0x9000, &frame(60));
        let (done, frames, stats) = rx(&g, &ring, &mut cur);
        assert_eq!(done.fault, None);
        assert_eq!(frames, vec![frame(60)]);
        assert_eq!(stats.drops(DropReason::Malformed), 1);
        assert_eq!(g.used_idx(), 2);
    }

    /// A pool of `n_mbufs` 64 KiB buffers (TSO frames) in shares of
    /// `port_share` (0: none), on normal pages.
    fn large_pool(name: &str, n_mbufs: u32, port_share: u32) -> &'static Mempool {
        Mempool::create(&dataplane::mempool::MempoolConfig {
            name: name.into(),
            n_mbufs,
            data_room: dataplane::mempool::MAX_DATA_ROOM,
            hugepages: dataplane::mempool::HugepagePolicy::Never,
            cache_size: 1,
            port_share,
            ..dataplane::mempool::MempoolConfig::default()
        })
        .expect("large pool")
    }

    #[test]
    fn tso_frame_without_a_large_buffer_is_dropped_and_counted() {
        // A large pool of one buffer: the first long frame takes it (it stays
        // in the burst), the second finds the pool empty and is dropped, and
        // the small frame behind it still gets through.
        static BIG: std::sync::OnceLock<&'static Mempool> = std::sync::OnceLock::new();
        let big = *BIG.get_or_init(|| large_pool("large-test", 1, 0));
        let (mut g, ring, mut cur) = Guest::new(8).queue(false, false);
        tx_single(&mut g, 0, BUF, &frame(4000));
        tx_single(&mut g, 1, BUF + 0x2000, &frame(5000));
        tx_single(&mut g, 2, BUF + 0x4000, &frame(60));
        let (done, burst, stats) = rx_large(&ring, &mut cur, &big.share());
        assert_eq!((done.frames, done.fault), (2, None));
        let frames: Vec<Vec<u8>> = burst.iter().map(|m| m.data().to_vec()).collect();
        assert_eq!(frames, vec![frame(4000), frame(60)]);
        assert!(std::ptr::eq(burst[0].pool(), big));
        assert_eq!(stats.drops(DropReason::NoTsoBuffers), 1);
        assert_eq!(stats.snapshot().total_drops(), 1);
        assert_eq!(g.used_idx(), 3);
        assert_eq!(g.used_elem(1), (1, 0));
        drop(burst);
        assert_eq!(big.in_use(), 0);
    }

    #[test]
    fn tso_frames_past_the_port_share_are_dropped_and_other_ports_still_get_buffers() {
        // A large pool of 4 in shares of 2: the first guest's TSO frames held
        // (a slow egress, a handoff ring) stop at its share; the second
        // guest's still get buffers.
        static BIG: std::sync::OnceLock<&'static Mempool> = std::sync::OnceLock::new();
        let big = *BIG.get_or_init(|| large_pool("large-shared-test", 4, 2));
        let mut held = Vec::new();
        for (guest, frames) in [(0, 4u16), (1, 2)] {
            let share = big.share();
            let (mut g, ring, mut cur) = Guest::new(8).queue(false, false);
            for i in 0..frames {
                tx_single(
                    &mut g,
                    i,
                    BUF + 0x2000 * i as u64,
                    &frame(4000 + i as usize),
                );
            }
            let (done, burst, stats) = rx_large(&ring, &mut cur, &share);
            assert_eq!((done.frames, done.fault), (2, None), "guest {guest}");
            assert_eq!(share.held(), 2);
            let dropped = if guest == 0 { 2 } else { 0 };
            assert_eq!(stats.drops(DropReason::PoolShare), dropped);
            assert_eq!(stats.drops(DropReason::NoTsoBuffers), 0);
            assert_eq!(g.used_idx(), frames);
            held.push((share, burst));
        }
        drop(held);
        assert_eq!(big.in_use(), 0);
    }

    #[test]
    fn descriptor_loop_is_detected() {
        let (mut g, ring, mut cur) = Guest::new(8).queue(false, false);
        g.desc(0, BUF, 16, DESC_F_NEXT, 1);
        g.desc(1, BUF, 16, DESC_F_NEXT, 0);
        g.push(0);
        assert_eq!(rx_fault(&g, &ring, &mut cur), Some(RingFault::ChainLoop));
    }

    #[test]
    fn chain_longer_than_queue_size_is_refused() {
        // Every descriptor of the table chained, the last back to the first.
        let (mut g, ring, mut cur) = Guest::new(4).queue(false, false);
        for i in 0..4 {
            g.desc(i, BUF, 4, DESC_F_NEXT, (i + 1) % 4);
        }
        g.push(0);
        assert_eq!(rx_fault(&g, &ring, &mut cur), Some(RingFault::ChainLoop));
    }

    #[test]
    fn next_index_outside_table_faults() {
        let (mut g, ring, mut cur) = Guest::new(4).queue(false, false);
        g.desc(0, BUF, 16, DESC_F_NEXT, 4);
        g.push(0);
        assert_eq!(rx_fault(&g, &ring, &mut cur), Some(RingFault::DescIndex));
        let (mut g, ring, mut cur) = Guest::new(4).queue(false, false);
        g.push(9); // head outside the table
        assert_eq!(rx_fault(&g, &ring, &mut cur), Some(RingFault::DescIndex));
    }

    #[test]
    fn indirect_tables_are_followed_when_valid() {
        let (mut g, ring, mut cur) = Guest::new(8).queue(false, true);
        let table = BUF + 0x8000;
        g.write(BUF, &[0u8; NET_HDR_BYTES]);
        g.write(BUF + 0x100, &frame(64));
        g.desc_at(table, 0, BUF, NET_HDR_BYTES as u32, DESC_F_NEXT, 1);
        g.desc_at(table, 1, BUF + 0x100, 64, 0, 0);
        g.post(0, table, 32, DESC_F_INDIRECT);
        let (done, frames, _) = rx(&g, &ring, &mut cur);
        assert_eq!(done.fault, None);
        assert_eq!(frames, vec![frame(64)]);
    }

    #[test]
    fn bad_indirect_tables_fault() {
        let table = BUF + 0x8000;
        let cases: [(&str, bool, u64, u32, u16); 5] = [
            ("not negotiated", false, table, 32, DESC_F_INDIRECT),
            ("outside memory", true, MEM_END - 16, 32, DESC_F_INDIRECT),
            ("not a multiple of 16", true, table, 24, DESC_F_INDIRECT),
            (
                "larger than the queue",
                true,
                table,
                16 * 9,
                DESC_F_INDIRECT,
            ),
            ("with NEXT", true, table, 32, DESC_F_INDIRECT | DESC_F_NEXT),
        ];
        for (what, negotiated, addr, len, flags) in cases {
            let (mut g, ring, mut cur) = Guest::new(8).queue(false, negotiated);
            g.desc_at(table, 0, BUF, 12, DESC_F_NEXT, 1);
            g.desc_at(table, 1, BUF + 0x100, 64, 0, 0);
            g.desc(0, addr, len, flags, 1);
            g.push(0);
            assert_eq!(
                rx_fault(&g, &ring, &mut cur),
                Some(RingFault::BadIndirect),
                "{what}"
            );
        }
        // Nested, and a loop inside the table.
        let (mut g, ring, mut cur) = Guest::new(8).queue(false, true);
        g.desc_at(table, 0, table, 32, DESC_F_INDIRECT, 0);
        g.post(0, table, 32, DESC_F_INDIRECT);
        assert_eq!(rx_fault(&g, &ring, &mut cur), Some(RingFault::BadIndirect));
        let (mut g, ring, mut cur) = Guest::new(8).queue(false, true);
        g.desc_at(table, 0, BUF, 16, DESC_F_NEXT, 1);
        g.desc_at(table, 1, BUF, 16, DESC_F_NEXT, 0);
        g.post(0, table, 32, DESC_F_INDIRECT);
        assert_eq!(rx_fault(&g, &ring, &mut cur), Some(RingFault::ChainLoop));
    }

    #[test]
    fn avail_index_jumping_past_queue_size_faults() {
        let (mut g, ring, mut cur) = Guest::new(8).queue(false, false);
        g.set_avail_idx(9);
        assert_eq!(rx_fault(&g, &ring, &mut cur), Some(RingFault::AvailIdxJump));
        let stats = QueueStats::default();
        let mut burst = Burst::new();
        let done = enqueue(&ring, &mut cur, &mut burst, &stats);
        assert_eq!(done.fault, Some(RingFault::AvailIdxJump));
    }

    #[test]
    fn ring_setup_checks_size_and_placement() {
        let g = Guest::new(8);
        let a = |desc, avail, used| RingAddrs {
            desc: GuestAddr(desc),
            avail: GuestAddr(avail),
            used: GuestAddr(used),
        };
        let ok = a(DESC, AVAIL, USED);
        assert!(matches!(
            SplitRing::new(&g.mem, ok, 6, false, false),
            Err(RingSetupError::BadSize(6))
        ));
        assert!(SplitRing::new(&g.mem, ok, 0, false, false).is_err());
        assert!(matches!(
            SplitRing::new(&g.mem, a(MEM_END - 16, AVAIL, USED), 8, false, false),
            Err(RingSetupError::Desc(_))
        ));
        assert!(matches!(
            SplitRing::new(&g.mem, a(DESC, AVAIL + 1, USED), 8, false, false),
            Err(RingSetupError::Avail(_))
        ));
        assert!(matches!(
            SplitRing::new(&g.mem, a(DESC, AVAIL, MEM_END), 8, false, false),
            Err(RingSetupError::Used(_))
        ));
    }

    /// `enqueue` as most tests call it: mergeable buffers, no offloads, no MTU.
    fn enqueue(
        ring: &SplitRing,
        cur: &mut Cursor,
        burst: &mut Burst,
        stats: &QueueStats,
    ) -> Completed {
        ring.enqueue(cur, burst, true, csum_only(false), usize::MAX, stats)
    }

    fn tx_frames(frames: &[Vec<u8>]) -> Burst {
        let p = pool();
        let mut b = Burst::new();
        for f in frames {
            let mut m = p.alloc().unwrap();
            m.extend_from_slice(f).unwrap();
            b.push(m);
        }
        b
    }

    #[test]
    fn frames_longer_than_the_guest_mtu_are_dropped_and_counted() {
        let (mut g, ring, mut cur) = Guest::new(8).queue(false, false);
        g.post_writable(4, 2048, 2048);
        let tagged = |n: usize| {
            let mut f = frame(n);
            f[12..16].copy_from_slice(&[0x81, 0x00, 0x00, 0x64]);
            f
        };
        // MTU 1400: 1414 bytes untagged, 1418 tagged.
        let frames = [
            frame(1414),
            frame(1415),
            tagged(1418),
            tagged(1419),
            frame(60),
        ];
        let mut burst = tx_frames(&frames);
        let stats = QueueStats::default();
        let max = max_frame(1400);
        let done = ring.enqueue(&mut cur, &mut burst, true, csum_only(false), max, &stats);
        assert_eq!((done.frames, done.fault), (5, None), "all taken");
        assert!(burst.is_empty());
        assert_eq!(stats.drops(DropReason::MtuExceeded), 2);
        assert_eq!(g.used_idx(), 3, "only the three that fit used a buffer");
        assert_eq!(g.used_elem(0), (0, 12 + 1414));
        assert_eq!(g.used_elem(1), (1, 12 + 1418));
        assert_eq!(g.used_elem(2), (2, 12 + 60));
        assert_eq!(g.read(BUF + 2048 + 12, 1418), tagged(1418));
        // No MTU set: no limit but the buffers.
        assert_eq!(max_frame(0), usize::MAX);
    }

    #[test]
    fn enqueue_prepends_header_with_num_buffers() {
        let (mut g, ring, mut cur) = Guest::new(8).queue(false, false);
        g.post(0, BUF, 2048, DESC_F_WRITE);
        let mut burst = tx_frames(&[frame(64), frame(64)]);
        let stats = QueueStats::default();
        let done = enqueue(&ring, &mut cur, &mut burst, &stats);
        assert_eq!((done.frames, done.fault), (1, None));
        assert_eq!(burst.len(), 1, "second frame stays: no guest buffer");
        assert_eq!(g.used_idx(), 1);
        assert_eq!(g.used_elem(0), (0, 76));
        let mut hdr = [0u8; 12];
        hdr[10] = 1;
        assert_eq!(g.read(BUF, 12), hdr);
        assert_eq!(g.read(BUF + 12, 64), frame(64));
    }

    #[test]
    fn mergeable_buffers_span_chains() {
        let (mut g, ring, mut cur) = Guest::new(8).queue(false, false);
        // Three 40-byte buffers; a 64-byte frame + header needs two.
        g.post_writable(3, 0x100, 40);
        let mut burst = tx_frames(&[frame(64)]);
        let stats = QueueStats::default();
        let done = enqueue(&ring, &mut cur, &mut burst, &stats);
        assert_eq!((done.frames, done.fault), (1, None));
        assert_eq!(g.used_idx(), 2);
        assert_eq!(g.used_elem(0), (0, 40));
        assert_eq!(g.used_elem(1), (1, 36));
        assert_eq!(g.read(BUF + 10, 2), [2, 0], "num_buffers");
        let mut got = g.read(BUF + 12, 28);
        got.extend(g.read(BUF + 0x100, 36));
        assert_eq!(got, frame(64));
        // A frame that needs more buffers than posted is not taken.
        let mut burst = tx_frames(&[frame(200)]);
        let done = enqueue(&ring, &mut cur, &mut burst, &stats);
        assert_eq!(done.frames, 0);
        assert_eq!(burst.len(), 1);
        assert_eq!(g.used_idx(), 2);
        assert_eq!(cur.last_avail, 2);
    }

    #[test]
    fn without_mergeable_buffers_a_too_small_buffer_drops_the_frame() {
        let (mut g, ring, mut cur) = Guest::new(8).queue(false, false);
        g.post(0, BUF, 40, DESC_F_WRITE);
        let mut burst = tx_frames(&[frame(64)]);
        let stats = QueueStats::default();
        let done = ring.enqueue(
            &mut cur,
            &mut burst,
            false,
            csum_only(false),
            usize::MAX,
            &stats,
        );
        assert_eq!((done.frames, done.fault), (1, None));
        assert!(burst.is_empty());
        assert_eq!(stats.drops(DropReason::Malformed), 1);
        assert_eq!(g.used_elem(0), (0, 0));
    }

    #[test]
    fn rx_buffer_outside_memory_faults() {
        let (mut g, ring, mut cur) = Guest::new(8).queue(false, false);
        g.post(0, MEM_END + 0x1000, 2048, DESC_F_WRITE);
        let mut burst = tx_frames(&[frame(64)]);
        let stats = QueueStats::default();
        let done = enqueue(&ring, &mut cur, &mut burst, &stats);
        assert_eq!(done.fault, Some(RingFault::BufferOutOfMemory));
        assert_eq!(burst.len(), 1);
    }

    /// 10.0.0.1:40000 -> 10.0.0.2:9 UDP "weir\n", checksum field holding the
    /// pseudo-header sum 0x1421; complete checksum 0x64b0.
    fn partial_udp4() -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        f.extend_from_slice(&[
            0x45, 0, 0, 33, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ]);
        f.extend_from_slice(&[0x9c, 0x40, 0, 9, 0, 13, 0x14, 0x21]);
        f.extend_from_slice(b"weir\n");
        f
    }

    const SRC6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
    const DST6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);

    /// fd00::1:40000 -> fd00::2:80 TCP, 5 bytes "weir\n", checksum field
    /// holding the pseudo-header sum.
    fn partial_tcp6() -> Vec<u8> {
        let pseudo = dataplane::wire::ipv6::pseudo_header_sum(SRC6, DST6, 6, 25);
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
        f.extend_from_slice(&[0x60, 0, 0, 0, 0, 25, 6, 64]);
        f.extend_from_slice(&SRC6.octets());
        f.extend_from_slice(&DST6.octets());
        f.extend_from_slice(&[
            0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0x10, 0, 0, 0, 0, 0,
        ]);
        f[70..72].copy_from_slice(&pseudo.to_be_bytes());
        f.extend_from_slice(b"weir\n");
        f
    }

    /// Where the checksums of [`partial_udp4`] and [`partial_tcp6`] start
    /// and are stored.
    const UDP4_CSUM: PartialCsum = PartialCsum {
        start: 34,
        offset: 6,
    };
    const TCP6_CSUM: PartialCsum = PartialCsum {
        start: 54,
        offset: 16,
    };

    fn needs_csum_hdr(start: u16, offset: u16) -> [u8; NET_HDR_BYTES] {
        let mut h = [0u8; NET_HDR_BYTES];
        h[0] = NET_HDR_F_NEEDS_CSUM;
        h[6..8].copy_from_slice(&start.to_le_bytes());
        h[8..10].copy_from_slice(&offset.to_le_bytes());
        h
    }

    /// Frames received with their checksum metadata.
    type Received = Vec<(Vec<u8>, Option<PartialCsum>)>;

    fn rx_partial(ring: &SplitRing, cur: &mut Cursor, csum: bool) -> (Received, QueueStats) {
        rx_with(ring, cur, csum_only(csum))
    }

    fn rx_with(ring: &SplitRing, cur: &mut Cursor, off: Offload) -> (Received, QueueStats) {
        let stats = QueueStats::default();
        let mut burst = Burst::new();
        let done = ring.dequeue(cur, pool(), &mut burst, off, None, &stats);
        assert_eq!(done.fault, None);
        let got = burst
            .iter()
            .map(|m| (m.data().to_vec(), m.partial_csum()))
            .collect();
        (got, stats)
    }

    #[test]
    fn needs_csum_offsets_travel_on_the_mbuf() {
        let (mut g, ring, mut cur) = Guest::new(8).queue(false, false);
        tx_chain_hdr(&mut g, 0, BUF, &needs_csum_hdr(34, 6), &partial_udp4());
        tx_chain_hdr(
            &mut g,
            2,
            BUF + 0x1000,
            &needs_csum_hdr(54, 16),
            &partial_tcp6(),
        );
        tx_chain(&mut g, 4, BUF + 0x2000, &frame(64));
        // A header split 7 | 5 bytes: csum_start straddles descriptors.
        let mut all = needs_csum_hdr(34, 6).to_vec();
        all.extend_from_slice(&partial_udp4());
        g.write(BUF + 0x3000, &all);
        g.desc(6, BUF + 0x3000, 7, DESC_F_NEXT, 7);
        g.desc(7, BUF + 0x3007, (all.len() - 7) as u32, 0, 0);
        g.push(6);
        let (got, stats) = rx_partial(&ring, &mut cur, true);
        let p = |start, offset| Some(PartialCsum { start, offset });
        assert_eq!(
            got,
            vec![
                (partial_udp4(), p(34, 6)),
                (partial_tcp6(), p(54, 16)),
                (frame(64), None),
                (partial_udp4(), p(34, 6)),
            ]
        );
        assert_eq!(stats.snapshot().total_drops(), 0);
    }

    #[test]
    fn bad_offload_requests_are_dropped_as_malformed() {
        let len = partial_udp4().len() as u16; // 47
        let mut gso = [0u8; NET_HDR_BYTES];
        gso[1] = 1; // VIRTIO_NET_HDR_GSO_TCPV4: TSO was not offered
        let tso_without_csum = Offload {
            tso4: true,
            ..Offload::default()
        };
        let cases: [(&str, [u8; NET_HDR_BYTES], Offload); 6] = [
            (
                "field past the end",
                needs_csum_hdr(len - 1, 0),
                csum_only(true),
            ),
            (
                "offset past the end",
                needs_csum_hdr(34, 12),
                csum_only(true),
            ),
            (
                "start past the end",
                needs_csum_hdr(u16::MAX, 6),
                csum_only(true),
            ),
            ("huge offset", needs_csum_hdr(0, u16::MAX), csum_only(true)),
            (
                "CSUM not negotiated",
                needs_csum_hdr(34, 6),
                tso_without_csum,
            ),
            ("segmentation request", gso, csum_only(true)),
        ];
        for (what, hdr, off) in cases {
            let (mut g, ring, mut cur) = Guest::new(8).queue(false, false);
            tx_chain_hdr(&mut g, 0, BUF, &hdr, &partial_udp4());
            tx_chain(&mut g, 2, BUF + 0x1000, &frame(60));
            let (got, stats) = rx_with(&ring, &mut cur, off);
            assert_eq!(got, vec![(frame(60), None)], "{what}");
            assert_eq!(stats.drops(DropReason::Malformed), 1, "{what}");
            assert_eq!(g.used_idx(), 2, "{what}: the bad chain is still returned");
        }
        // The last valid position: the field is the frame's last two bytes.
        let (mut g, ring, mut cur) = Guest::new(8).queue(false, false);
        tx_chain_hdr(&mut g, 0, BUF, &needs_csum_hdr(len - 2, 0), &partial_udp4());
        let (got, _) = rx_partial(&ring, &mut cur, true);
        assert_eq!(
            got[0].1,
            Some(PartialCsum {
                start: len - 2,
                offset: 0
            })
        );
    }

    #[test]
    fn without_offloads_the_tx_header_is_ignored() {
        let mut gso = [0u8; NET_HDR_BYTES];
        gso[1] = 1; // VIRTIO_NET_HDR_GSO_TCPV4
        let mut garbage = [0xa5u8; NET_HDR_BYTES];
        garbage[0] = NET_HDR_F_NEEDS_CSUM | 0xa4;
        for hdr in [
            needs_csum_hdr(34, 6),
            needs_csum_hdr(u16::MAX, 6),
            gso,
            garbage,
        ] {
            let (mut g, ring, mut cur) = Guest::new(8).queue(false, false);
            // One chain and one single-descriptor frame: both paths.
            tx_chain_hdr(&mut g, 0, BUF, &hdr, &partial_udp4());
            tx_single_hdr(&mut g, 2, BUF + 0x1000, &hdr, &frame(60));
            let (got, stats) = rx_with(&ring, &mut cur, Offload::default());
            assert_eq!(
                got,
                vec![(partial_udp4(), None), (frame(60), None)],
                "{hdr:?}"
            );
            assert_eq!(stats.drops(DropReason::Malformed), 0, "{hdr:?}");
            assert_eq!(g.used_idx(), 2);
        }
    }

    fn tx_partial(frames: &[(Vec<u8>, PartialCsum)]) -> Burst {
        let mut b = Burst::new();
        for (f, p) in frames {
            let mut m = pool().alloc().unwrap();
            m.extend_from_slice(f).unwrap();
            m.set_partial_csum(Some(*p));
            b.push(m);
        }
        b
    }

    #[test]
    fn guest_csum_guest_gets_needs_csum_and_the_frame_as_is() {
        let (mut g, ring, mut cur) = Guest::new(8).queue(false, false);
        g.post_writable(2, 0x1000, 2048);
        let (u4, t6) = (partial_udp4(), partial_tcp6());
        let mut burst = tx_partial(&[(u4.clone(), UDP4_CSUM), (t6.clone(), TCP6_CSUM)]);
        let stats = QueueStats::default();
        let done = ring.enqueue(
            &mut cur,
            &mut burst,
            true,
            csum_only(true),
            usize::MAX,
            &stats,
        );
        assert_eq!((done.frames, done.fault), (2, None));
        assert_eq!(g.read(BUF, 12), [1, 0, 0, 0, 0, 0, 34, 0, 6, 0, 1, 0]);
        assert_eq!(g.read(BUF + 12, u4.len()), u4);
        assert_eq!(
            g.read(BUF + 0x1000, 12),
            [1, 0, 0, 0, 0, 0, 54, 0, 16, 0, 1, 0]
        );
        assert_eq!(g.read(BUF + 0x1000 + 12, t6.len()), t6);
    }

    #[test]
    fn guest_without_guest_csum_gets_completed_checksums() {
        use dataplane::wire::offload::verify_l4_checksum;
        let (mut g, ring, mut cur) = Guest::new(8).queue(false, false);
        g.post_writable(2, 0x1000, 2048);
        let (u4, t6) = (partial_udp4(), partial_tcp6());
        let (pu, pt) = (UDP4_CSUM, TCP6_CSUM);
        let mut burst = tx_partial(&[(u4.clone(), pu), (t6.clone(), pt)]);
        let stats = QueueStats::default();
        let done = enqueue(&ring, &mut cur, &mut burst, &stats);
        assert_eq!((done.frames, done.fault), (2, None));
        assert_eq!(g.read(BUF, 12), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
        let got = g.read(BUF + 12, u4.len());
        let mut want = u4.clone();
        want[40..42].copy_from_slice(&[0x64, 0xb0]);
        assert_eq!(got, want);
        let got = g.read(BUF + 0x1000 + 12, t6.len());
        assert_eq!(
            g.read(BUF + 0x1000, 12),
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]
        );
        assert_eq!(got[..70], t6[..70]);
        assert_eq!(got[72..], t6[72..]);
        let pseudo = dataplane::wire::ipv6::pseudo_header_sum(SRC6, DST6, 6, 25);
        assert!(verify_l4_checksum(&got, pt, pseudo));
        assert!(!verify_l4_checksum(&t6, pt, pseudo));
        // A frame that waits for guest buffers is completed once and keeps its
        // bytes for the next attempt.
        let mut burst = tx_partial(&[(u4.clone(), pu)]);
        let done = enqueue(&ring, &mut cur, &mut burst, &stats);
        assert_eq!(done.frames, 0);
        assert_eq!(burst[0].partial_csum(), None);
        assert_eq!(burst[0].data(), &want[..]);
    }

    #[test]
    fn event_idx_interrupts_only_when_used_event_is_crossed() {
        let (mut g, ring, mut cur) = Guest::new(8).queue(true, false);
        let used_event = AVAIL + 4 + 2 * 8;
        g.gm.write_obj(5u16, GuestAddress(used_event)).unwrap();
        tx_chain(&mut g, 0, BUF, &frame(64));
        let (done, _, _) = rx(&g, &ring, &mut cur);
        assert_eq!((done.frames, done.notify), (1, false));
        // avail_event written far ahead: the driver will not kick.
        let avail_event: u16 = g.gm.read_obj(GuestAddress(USED + 4 + 8 * 8)).unwrap();
        assert_eq!(avail_event, 1u16.wrapping_add(0x8000));
        g.gm.write_obj(1u16, GuestAddress(used_event)).unwrap();
        tx_chain(&mut g, 2, BUF + 0x1000, &frame(64));
        let (done, _, _) = rx(&g, &ring, &mut cur);
        assert_eq!((done.frames, done.notify), (1, true));
    }

    #[test]
    fn no_interrupt_flag_is_honoured_without_event_idx() {
        let (mut g, ring, mut cur) = Guest::new(8).queue(false, false);
        ring.suppress_kicks(cur);
        let flags: u16 = g.gm.read_obj(GuestAddress(USED)).unwrap();
        assert_eq!(flags, USED_F_NO_NOTIFY);
        tx_chain(&mut g, 0, BUF, &frame(64));
        assert!(rx(&g, &ring, &mut cur).0.notify);
        g.gm.write_obj(AVAIL_F_NO_INTERRUPT, GuestAddress(AVAIL))
            .unwrap();
        tx_chain(&mut g, 2, BUF + 0x1000, &frame(64));
        assert!(!rx(&g, &ring, &mut cur).0.notify);
    }
}
