//! The driver side of a virtio-net device over vhost-user: what a VM's virtio
//! driver does, without a VM. `weir bench` uses it as a traffic port, so the
//! switch under test (weir, DPDK `net_vhost`, OVS `dpdkvhostuser`) sees exactly
//! the rings and memory table a guest would give it.
//!
//! Layer: ports (test and benchmark traffic). Depends on [`guest_mem`](crate::guest_mem) for
//! every access to the shared memory (no `unsafe` here) and on the `vhost`
//! crate's `Frontend` for the control messages. The tx/rx methods are the
//! generator's hot loop: no allocation, no locks, a syscall only for a kick the
//! device asked for.
//!
//! # Memory and rings
//!
//! One memfd (2 MiB hugetlb pages when enough are free, else normal pages) is
//! the whole "guest" memory, shared with the device as one region at guest
//! address 0:
//!
//! ```text
//!  0x0000  vq 0 (rx): descriptors | avail | used      (4 KiB aligned parts)
//!  ....    vq 1 (tx): descriptors | avail | used
//!  ....    rx buffers: queue_size x buf_bytes
//!  ....    tx buffers: queue_size x buf_bytes
//! ```
//!
//! Descriptor `i` of a queue always points at buffer `i` of that queue, and
//! every chain is one descriptor (header and frame together, as Linux does
//! with VERSION_1), so the free list holds descriptor ids only.
//!
//! # Notifications
//!
//! EVENT_IDX is not negotiated. The driver sets `VRING_AVAIL_F_NO_INTERRUPT`
//! on both queues (it polls the used rings, so the device need not write the
//! call eventfds), and kicks a queue after publishing a burst only when the
//! device has not set `VRING_USED_F_NO_NOTIFY` (a polling device sets it).

use std::fs::File;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use dataplane::mempool::hugepage;
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use crate::defs::{
    avail_ring_bytes, desc_table_bytes, used_ring_bytes, AVAIL_F_NO_INTERRUPT, DESC_BYTES,
    DESC_F_WRITE, F_MRG_RXBUF, F_PROTOCOL_FEATURES, F_VERSION_1, MAX_FRAME_BYTES, NET_HDR_BYTES,
    USED_ELEM_BYTES, USED_F_NO_NOTIFY,
};
use crate::guest_mem::{GuestAddr, GuestMemory, RingArea};

/// Largest queue size the frontend sets up.
pub const MAX_QUEUE_SIZE: u16 = 1024;
/// Bytes of a frame's start that [`VirtioNetFrontend::rx_harvest`] copies out
/// for the caller (headers and a payload stamp): with the 12-byte virtio-net
/// header in front, exactly one 64-byte cache line of a 64-byte aligned buffer.
pub const RX_PEEK_BYTES: usize = 64 - NET_HDR_BYTES;

const PAGE: u64 = 4096;
const HUGE_PAGE: u64 = hugepage::HUGEPAGE_2M as u64;
/// Virtqueue indices of a virtio-net queue pair (virtio 1.2 §5.1.2).
const RX_VQ: usize = 0;
const TX_VQ: usize = 1;

/// Frontend settings.
#[derive(Clone, Copy, Debug)]
pub struct FrontendConfig {
    /// Descriptors per queue (power of two, up to [`MAX_QUEUE_SIZE`]).
    pub queue_size: u16,
    /// Largest frame sent or received, Ethernet header to end (no FCS).
    pub max_frame_bytes: u32,
    /// Try 2 MiB hugetlb pages for the shared memory.
    pub hugepages: bool,
}

impl Default for FrontendConfig {
    fn default() -> Self {
        FrontendConfig {
            queue_size: 256,
            max_frame_bytes: 1518,
            hugepages: true,
        }
    }
}

/// Why a frontend could not attach.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    /// Queue size not a power of two in 2..=1024, or frame size out of range.
    #[error("invalid frontend configuration: {0}")]
    Config(&'static str),
    /// Creating or sizing the shared memory file failed.
    #[error("creating {len_bytes} bytes of shared memory")]
    Memory {
        /// Requested size.
        len_bytes: u64,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Mapping the shared memory failed.
    #[error("mapping the shared memory")]
    Map(#[source] vm_memory::mmap::FromRangesError),
    /// An eventfd could not be created.
    #[error("creating an eventfd")]
    EventFd(#[source] std::io::Error),
    /// The device refused or broke a control message.
    #[error("vhost-user {step} on {socket}")]
    Protocol {
        /// Which step failed.
        step: &'static str,
        /// The device socket.
        socket: String,
        /// The library's error.
        #[source]
        source: vhost::Error,
    },
    /// The device does not offer a feature the frontend needs.
    #[error("device on {socket} does not offer {feature}")]
    MissingFeature {
        /// The device socket.
        socket: String,
        /// The feature.
        feature: &'static str,
    },
    /// A ring did not fit the memory laid out for it (a bug here).
    #[error("ring layout: {0}")]
    Layout(#[from] crate::guest_mem::AreaError),
}

/// One split virtqueue, driver side.
struct DriverQueue {
    size: u16,
    desc: RingArea,
    avail: RingArea,
    used: RingArea,
    /// First buffer's guest address; buffer `i` is at `buf_base + i * buf_bytes`.
    buf_base: u64,
    buf_bytes: u32,
    /// All `size` buffers, checked once: per-frame copies only check an
    /// offset (no region lookup).
    bufs: RingArea,
    /// Next avail index to publish (free-running).
    avail_idx: u16,
    /// Avail index last published to the device.
    published: u16,
    /// Next used index to consume (free-running).
    last_used: u16,
    /// Free descriptor ids (a stack; capacity `size`, never grows past it).
    free: Vec<u16>,
    /// The length each descriptor holds now (tx): descriptor `i` always
    /// points at buffer `i` with no flags, so only a changed length is
    /// written (a 4-byte store instead of a 16-byte descriptor per frame).
    desc_len: Vec<u32>,
    kick: EventFd,
    /// Kicks written (the device asked for a notification).
    kicks: u64,
}

impl DriverQueue {
    fn buf_addr(&self, id: u16) -> u64 {
        self.buf_base + u64::from(id) * u64::from(self.buf_bytes)
    }

    /// Offset of buffer `id` in `bufs`.
    #[inline]
    fn buf_off(&self, id: u16) -> usize {
        usize::from(id) * self.buf_bytes as usize
    }

    fn write_desc(&self, id: u16, len: u32, flags: u16) {
        let mut d = [0u8; DESC_BYTES as usize];
        d[..8].copy_from_slice(&self.buf_addr(id).to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        self.desc
            .write_bytes(usize::from(id) * DESC_BYTES as usize, &d);
    }

    /// Sets descriptor `id`'s length if it differs from what it holds (the
    /// address and flags were written once, in `connect`).
    #[inline]
    fn set_desc_len(&mut self, id: u16, len: u32) {
        let i = usize::from(id);
        if self.desc_len[i] != len {
            self.desc
                .write_bytes(i * DESC_BYTES as usize + 8, &len.to_le_bytes());
            self.desc_len[i] = len;
        }
    }

    /// Before the queue is enabled: every free buffer to the device, device
    /// writable, published without a kick.
    fn post_all(&mut self) {
        while let Some(id) = self.free.pop() {
            self.write_desc(id, self.buf_bytes, DESC_F_WRITE);
            self.push_avail(id);
        }
        self.avail.store_u16(2, self.avail_idx, Ordering::Release);
        self.published = self.avail_idx;
    }

    /// Puts descriptor `id` in the next avail slot (not yet published).
    fn push_avail(&mut self, id: u16) {
        let slot = usize::from(self.avail_idx & (self.size - 1));
        self.avail.write_bytes(4 + 2 * slot, &id.to_le_bytes());
        self.avail_idx = self.avail_idx.wrapping_add(1);
    }

    /// Publishes the avail index and kicks if the device wants it.
    fn publish(&mut self) {
        if self.avail_idx == self.published {
            return;
        }
        // Release: descriptors and ring slots written above become visible to
        // the device before the index that hands them over (virtio 1.2 §2.7.13.3).
        self.avail.store_u16(2, self.avail_idx, Ordering::Release);
        self.published = self.avail_idx;
        // SeqCst fence: the index store must be visible before the flag load
        // below, or a device that just cleared NO_NOTIFY and went to sleep is
        // never kicked (virtio 1.2 §2.7.13.4: "memory barrier" before reading
        // flags).
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.used.load_u16(0, Ordering::Relaxed) & USED_F_NO_NOTIFY == 0 {
            // A failed kick only delays a device that polls anyway.
            let _ = self.kick.write(1);
            self.kicks += 1;
        }
    }

    /// Used elements the device returned and we have not consumed.
    fn pending_used(&self) -> u16 {
        // Acquire: the used elements (and for rx the buffer contents) written
        // before this index are visible once we see it (virtio 1.2 §2.7.14).
        self.used
            .load_u16(2, Ordering::Acquire)
            .wrapping_sub(self.last_used)
    }

    /// Reads used element `k` past `last_used`: (id, len). An id out of range
    /// (a misbehaving device) comes back as None.
    fn used_elem(&self, k: u16) -> Option<(u16, u32)> {
        let slot = usize::from(self.last_used.wrapping_add(k) & (self.size - 1));
        let e: [u8; USED_ELEM_BYTES as usize] =
            self.used.read_bytes(4 + USED_ELEM_BYTES as usize * slot);
        let id = u32::from_le_bytes([e[0], e[1], e[2], e[3]]);
        let len = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        (id < u32::from(self.size)).then_some((id as u16, len))
    }
}

/// Counters of one frontend, for the report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrontendStats {
    /// Frames handed to the device on the tx queue.
    pub tx_frames: u64,
    /// Frames received on the rx queue.
    pub rx_frames: u64,
    /// Used elements with an out-of-range id or length (device bugs), ignored.
    pub bad_used: u64,
    /// Kicks written (tx + rx).
    pub kicks: u64,
}

/// A virtio-net driver attached to one vhost-user device socket.
pub struct VirtioNetFrontend {
    /// The control connection; dropping it detaches the device.
    _ctl: Frontend,
    _memfd: File,
    mem: Arc<GuestMemory>,
    rx: DriverQueue,
    tx: DriverQueue,
    /// Kept open: the device may write them although we asked it not to.
    _call: [EventFd; 2],
    hugepages: bool,
    features: u64,
    stats: FrontendStats,
}

impl std::fmt::Debug for VirtioNetFrontend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioNetFrontend")
            .field("features", &format_args!("{:#x}", self.features))
            .field("hugepages", &self.hugepages)
            .field("stats", &self.stats)
            .finish()
    }
}

fn round_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

/// A memfd of `len_bytes`, hugetlb-backed if asked and enough pages are free
/// (the mapping is made with MAP_NORESERVE, so the pages must really be there:
/// touching an unbacked hugetlb page raises SIGBUS). The huge pages are
/// allocated here with `fallocate`, which fails cleanly if another process
/// took the free pages since we counted them; normal pages are used then.
fn shared_memory(len_bytes: u64, hugepages: bool) -> Result<(File, u64, bool), FrontendError> {
    use rustix::fs::{fallocate, ftruncate, memfd_create, FallocateFlags, MemfdFlags};
    let err = |source: std::io::Error| FrontendError::Memory { len_bytes, source };
    if hugepages {
        let len = round_up(len_bytes, HUGE_PAGE);
        // Leave a page of slack for whoever else uses the pool.
        if hugepage::free_hugepages_2m() as u64 > len / HUGE_PAGE {
            let flags = MemfdFlags::CLOEXEC | MemfdFlags::HUGETLB | MemfdFlags::HUGE_2MB;
            if let Ok(fd) = memfd_create("weir-frontend", flags) {
                if ftruncate(&fd, len).is_ok()
                    && fallocate(&fd, FallocateFlags::empty(), 0, len).is_ok()
                {
                    return Ok((File::from(fd), len, true));
                }
            }
        }
    }
    let len = round_up(len_bytes, PAGE);
    let fd = memfd_create("weir-frontend", MemfdFlags::CLOEXEC).map_err(|e| err(e.into()))?;
    ftruncate(&fd, len).map_err(|e| err(e.into()))?;
    Ok((File::from(fd), len, false))
}

/// Guest addresses of one queue's rings, each 4 KiB aligned.
fn ring_layout(base: u64, size: u16) -> (u64, u64, u64, u64) {
    let desc = base;
    let avail = round_up(desc + desc_table_bytes(size), PAGE);
    let used = round_up(avail + avail_ring_bytes(size), PAGE);
    let end = round_up(used + used_ring_bytes(size), PAGE);
    (desc, avail, used, end)
}

/// Where the rings and buffers of the two queues sit in the shared region:
/// rx rings, tx rings (each ring 4 KiB aligned), then rx buffers, tx buffers.
struct MemoryLayout {
    queue_size: u16,
    buf_bytes: u32,
    /// Per queue (rx, tx): descriptor table, avail ring, used ring, first buffer.
    queues: [(u64, u64, u64, u64); 2],
    /// Bytes of the whole region.
    total: u64,
}

impl MemoryLayout {
    fn new(cfg: &FrontendConfig) -> Result<MemoryLayout, FrontendError> {
        let q = cfg.queue_size;
        if !(2..=MAX_QUEUE_SIZE).contains(&q) || !q.is_power_of_two() {
            return Err(FrontendError::Config(
                "queue size must be a power of two in 2..=1024",
            ));
        }
        if !(60..=MAX_FRAME_BYTES as u32).contains(&cfg.max_frame_bytes) {
            return Err(FrontendError::Config(
                "max frame size must be in 60..=65535",
            ));
        }
        let buf_bytes = round_up(u64::from(cfg.max_frame_bytes) + NET_HDR_BYTES as u64, 64) as u32;
        let bufs_bytes = u64::from(q) * u64::from(buf_bytes);
        let (rx_desc, rx_avail, rx_used, rx_end) = ring_layout(0, q);
        let (tx_desc, tx_avail, tx_used, tx_end) = ring_layout(rx_end, q);
        let rx_bufs = tx_end;
        let tx_bufs = rx_bufs + bufs_bytes;
        Ok(MemoryLayout {
            queue_size: q,
            buf_bytes,
            queues: [
                (rx_desc, rx_avail, rx_used, rx_bufs),
                (tx_desc, tx_avail, tx_used, tx_bufs),
            ],
            total: tx_bufs + bufs_bytes,
        })
    }
}

/// The memory shared with the device: the memfd, our mapping of it and the
/// mapping's address, which ring addresses are given in.
struct SharedRegion {
    memfd: File,
    len_bytes: u64,
    hugepages: bool,
    mem: Arc<GuestMemory>,
    /// The region's host address: the device translates ring addresses
    /// given in our address space through it, as with QEMU.
    uaddr: u64,
}

impl SharedRegion {
    fn create(need: u64, hugepages: bool) -> Result<SharedRegion, FrontendError> {
        let (memfd, len_bytes, hugepages) = shared_memory(need, hugepages)?;
        let file = memfd
            .try_clone()
            .map_err(|source| FrontendError::Memory { len_bytes, source })?;
        let mmap = GuestMemoryMmap::from_ranges_with_files([(
            GuestAddress(0),
            len_bytes as usize,
            Some(FileOffset::new(file, 0)),
        )])
        .map_err(FrontendError::Map)?;
        let uaddr = mmap
            .iter()
            .next()
            .map(|r| r.as_ptr() as u64)
            .unwrap_or_default();
        Ok(SharedRegion {
            memfd,
            len_bytes,
            hugepages,
            mem: Arc::new(GuestMemory::new(Arc::new(mmap))),
            uaddr,
        })
    }
}

/// The control connection during setup, with the socket's name for errors.
struct Connection {
    ctl: Frontend,
    socket: String,
}

impl Connection {
    fn open(socket: &Path) -> Result<Connection, FrontendError> {
        let name = socket.display().to_string();
        match Frontend::connect(socket, 2) {
            Ok(ctl) => Ok(Connection { ctl, socket: name }),
            Err(source) => Err(FrontendError::Protocol {
                step: "connect",
                socket: name,
                source,
            }),
        }
    }

    /// The error of a failed `step`.
    fn proto(&self, step: &'static str) -> impl Fn(vhost::Error) -> FrontendError + '_ {
        move |source| FrontendError::Protocol {
            step,
            socket: self.socket.clone(),
            source,
        }
    }

    /// SET_OWNER, then VERSION_1 and PROTOCOL_FEATURES (required),
    /// MRG_RXBUF and the bits of `extra` if offered, and REPLY_ACK. Returns
    /// the virtio features set.
    fn negotiate(&mut self, extra: u64) -> Result<u64, FrontendError> {
        self.ctl.set_owner().map_err(self.proto("SET_OWNER"))?;
        let offered = self
            .ctl
            .get_features()
            .map_err(self.proto("GET_FEATURES"))?;
        for (bit, feature) in [
            (F_VERSION_1, "VIRTIO_F_VERSION_1"),
            (F_PROTOCOL_FEATURES, "VHOST_USER_F_PROTOCOL_FEATURES"),
        ] {
            if offered & bit == 0 {
                return Err(FrontendError::MissingFeature {
                    socket: self.socket.clone(),
                    feature,
                });
            }
        }
        let features = offered & (F_VERSION_1 | F_PROTOCOL_FEATURES | F_MRG_RXBUF | extra);
        self.ctl
            .set_features(features)
            .map_err(self.proto("SET_FEATURES"))?;
        let pf = self
            .ctl
            .get_protocol_features()
            .map_err(self.proto("GET_PROTOCOL_FEATURES"))?;
        self.ctl
            .set_protocol_features(pf & VhostUserProtocolFeatures::REPLY_ACK)
            .map_err(self.proto("SET_PROTOCOL_FEATURES"))?;
        Ok(features)
    }

    /// SET_MEM_TABLE: the whole region, at guest address 0.
    fn share(&mut self, shared: &SharedRegion) -> Result<(), FrontendError> {
        use std::os::fd::AsRawFd;
        self.ctl
            .set_mem_table(&[VhostUserMemoryRegionInfo {
                guest_phys_addr: 0,
                memory_size: shared.len_bytes,
                userspace_addr: shared.uaddr,
                mmap_offset: 0,
                mmap_handle: shared.memfd.as_raw_fd(),
            }])
            .map_err(self.proto("SET_MEM_TABLE"))?;
        Ok(())
    }

    /// Lays out virtqueue `vq` where `layout` says and hands it to the device
    /// (size, addresses, base 0, its call and kick eventfds).
    fn queue(
        &mut self,
        shared: &SharedRegion,
        layout: &MemoryLayout,
        vq: usize,
        call: &EventFd,
        kick: EventFd,
    ) -> Result<DriverQueue, FrontendError> {
        let q = layout.queue_size;
        let (desc, avail, used, buf_base) = layout.queues[vq];
        let mem = &shared.mem;
        let dq = DriverQueue {
            size: q,
            desc: mem.area(GuestAddr(desc), desc_table_bytes(q), 16)?,
            avail: mem.area(GuestAddr(avail), avail_ring_bytes(q), 2)?,
            used: mem.area(GuestAddr(used), used_ring_bytes(q), 4)?,
            buf_base,
            buf_bytes: layout.buf_bytes,
            bufs: mem.area(
                GuestAddr(buf_base),
                u64::from(q) * u64::from(layout.buf_bytes),
                64,
            )?,
            avail_idx: 0,
            published: 0,
            last_used: 0,
            free: (0..q).rev().collect(),
            desc_len: vec![0; usize::from(q)],
            kick,
            kicks: 0,
        };
        // We poll: the device need not interrupt (virtio 1.2 §2.7.7).
        dq.avail
            .store_u16(0, AVAIL_F_NO_INTERRUPT, Ordering::Relaxed);
        self.ctl
            .set_vring_num(vq, q)
            .map_err(self.proto("SET_VRING_NUM"))?;
        self.ctl
            .set_vring_addr(
                vq,
                &VringConfigData {
                    queue_max_size: q,
                    queue_size: q,
                    flags: 0,
                    desc_table_addr: shared.uaddr + desc,
                    used_ring_addr: shared.uaddr + used,
                    avail_ring_addr: shared.uaddr + avail,
                    log_addr: None,
                },
            )
            .map_err(self.proto("SET_VRING_ADDR"))?;
        self.ctl
            .set_vring_base(vq, 0)
            .map_err(self.proto("SET_VRING_BASE"))?;
        self.ctl
            .set_vring_call(vq, call)
            .map_err(self.proto("SET_VRING_CALL"))?;
        self.ctl
            .set_vring_kick(vq, &dq.kick)
            .map_err(self.proto("SET_VRING_KICK"))?;
        Ok(dq)
    }

    fn enable(&mut self, vqs: [usize; 2]) -> Result<(), FrontendError> {
        for vq in vqs {
            self.ctl
                .set_vring_enable(vq, true)
                .map_err(self.proto("SET_VRING_ENABLE"))?;
        }
        Ok(())
    }
}

impl VirtioNetFrontend {
    /// Connects to the vhost-user device listening on `socket`, negotiates
    /// VERSION_1 (and MRG_RXBUF when offered), shares the memory, sets up one
    /// rx and one tx queue and posts every rx buffer.
    ///
    /// # Errors
    /// Bad configuration, no shared memory, or the device refused a step.
    pub fn connect(socket: &Path, cfg: &FrontendConfig) -> Result<Self, FrontendError> {
        Self::connect_with_features(socket, cfg, 0)
    }

    /// [`connect`](Self::connect), also negotiating the bits of `extra`
    /// (e.g. CSUM and HOST_TSO4) that the device offers. Frames then go out
    /// with a header of the caller's choosing ([`tx_send`](Self::tx_send)).
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub fn connect_with_features(
        socket: &Path,
        cfg: &FrontendConfig,
        extra: u64,
    ) -> Result<Self, FrontendError> {
        let layout = MemoryLayout::new(cfg)?;
        let shared = SharedRegion::create(layout.total, cfg.hugepages)?;
        let mut conn = Connection::open(socket)?;
        let features = conn.negotiate(extra)?;
        conn.share(&shared)?;
        let ev = || EventFd::new(libc_nonblock()).map_err(FrontendError::EventFd);
        let call = [ev()?, ev()?];
        let mut rx = conn.queue(&shared, &layout, RX_VQ, &call[RX_VQ], ev()?)?;
        let tx = conn.queue(&shared, &layout, TX_VQ, &call[TX_VQ], ev()?)?;
        // Tx descriptor `i` points at buffer `i` for good; sends set lengths.
        for id in 0..tx.size {
            tx.write_desc(id, 0, 0);
        }
        // Every rx buffer goes to the device before the queue is enabled.
        rx.post_all();
        conn.enable([RX_VQ, TX_VQ])?;
        Ok(VirtioNetFrontend {
            _ctl: conn.ctl,
            _memfd: shared.memfd,
            mem: shared.mem,
            rx,
            tx,
            _call: call,
            hugepages: shared.hugepages,
            features,
            stats: FrontendStats::default(),
        })
    }

    /// True if the shared memory is on hugetlb pages.
    pub fn hugepages(&self) -> bool {
        self.hugepages
    }

    /// The negotiated virtio feature bits.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// Counters so far.
    pub fn stats(&self) -> FrontendStats {
        FrontendStats {
            kicks: self.tx.kicks + self.rx.kicks,
            ..self.stats
        }
    }

    /// Writes `frame` into every tx buffer, after a zeroed virtio-net header
    /// (GSO none, no checksum offload). Later sends only patch the first bytes
    /// of the frame; this sets the rest.
    pub fn tx_fill_all(&mut self, frame: &[u8]) {
        let mut hdr = [0u8; NET_HDR_BYTES];
        // num_buffers is ignored on tx; 1 as a driver would write it.
        hdr[crate::defs::NET_HDR_NUM_BUFFERS_OFF] = 1;
        let max = (self.tx.buf_bytes as usize - NET_HDR_BYTES).min(frame.len());
        for id in 0..self.tx.size {
            let at = self.tx.buf_addr(id);
            // Inside the region by construction (laid out in `connect`).
            let _ = self.mem.write(GuestAddr(at), &hdr);
            let _ = self
                .mem
                .write(GuestAddr(at + NET_HDR_BYTES as u64), &frame[..max]);
        }
    }

    /// Takes back tx descriptors the device has consumed; returns how many.
    #[inline]
    pub fn tx_reclaim(&mut self) -> usize {
        let n = self.tx.pending_used();
        for k in 0..n {
            match self.tx.used_elem(k) {
                Some((id, _)) if self.tx.free.len() < usize::from(self.tx.size) => {
                    self.tx.free.push(id)
                }
                _ => self.stats.bad_used += 1,
            }
        }
        self.tx.last_used = self.tx.last_used.wrapping_add(n);
        usize::from(n)
    }

    /// Free tx descriptors.
    #[inline]
    pub fn tx_free(&self) -> usize {
        self.tx.free.len()
    }

    /// Tx descriptors handed to the device and not yet returned: frames the
    /// device has not taken (yet).
    #[inline]
    pub fn tx_in_flight(&self) -> usize {
        usize::from(self.tx.size) - self.tx.free.len()
    }

    /// Queues one frame of `len_bytes` (clamped to the buffer): `head` is
    /// written over the frame's first bytes, the rest keeps what
    /// [`tx_fill_all`](Self::tx_fill_all) put there. Not visible to the
    /// device until [`tx_publish`](Self::tx_publish). False if no descriptor
    /// is free.
    // Always inlined: the head's length is then a constant and the copy a
    // few moves (a memcpy call and a call per frame cost the generator a
    // fifth of its send path).
    #[inline(always)]
    pub fn tx_push(&mut self, head: &[u8], len_bytes: u32) -> bool {
        let Some(id) = self.tx.free.pop() else {
            return false;
        };
        let room = self.tx.buf_bytes - NET_HDR_BYTES as u32;
        let len = len_bytes.min(room);
        let at = self.tx.buf_off(id) + NET_HDR_BYTES;
        if head.len() <= len as usize {
            self.tx.bufs.write_bytes(at, head);
        } else {
            self.tx.bufs.write_bytes(at, &head[..len as usize]);
        }
        self.tx.set_desc_len(id, len + NET_HDR_BYTES as u32);
        self.tx.push_avail(id);
        self.stats.tx_frames += 1;
        true
    }

    /// Hands the frames queued since the last call to the device.
    #[inline]
    pub fn tx_publish(&mut self) {
        self.tx.publish();
    }

    /// Queues one whole frame after the virtio-net header `hdr` (e.g. with
    /// NEEDS_CSUM and a TSO request). Not visible to the device until
    /// [`tx_publish`](Self::tx_publish). False if no descriptor is free or
    /// the frame does not fit a buffer.
    pub fn tx_send(&mut self, hdr: &[u8; NET_HDR_BYTES], frame: &[u8]) -> bool {
        if frame.len() + NET_HDR_BYTES > self.tx.buf_bytes as usize {
            return false;
        }
        let Some(id) = self.tx.free.pop() else {
            return false;
        };
        let at = self.tx.buf_addr(id);
        // Inside the region by construction (checked against buf_bytes above).
        let _ = self.mem.write(GuestAddr(at), hdr);
        let _ = self.mem.write(GuestAddr(at + NET_HDR_BYTES as u64), frame);
        // Fits a u32: at most buf_bytes.
        self.tx
            .set_desc_len(id, (frame.len() + NET_HDR_BYTES) as u32);
        self.tx.push_avail(id);
        self.stats.tx_frames += 1;
        true
    }

    /// Received frames waiting to be consumed.
    #[inline]
    pub fn rx_pending(&self) -> usize {
        usize::from(self.rx.pending_used())
    }

    /// Consumes up to `max` received frames whole: `f(header, frame)` gets
    /// each frame's virtio-net header and bytes (copied out; not for
    /// benchmarks). Frames spanning several buffers are not joined: each
    /// buffer is one call. Returns how many buffers were consumed.
    #[inline]
    pub fn rx_take(&mut self, max: usize, mut f: impl FnMut(&[u8; NET_HDR_BYTES], &[u8])) -> usize {
        let n = self
            .rx
            .pending_used()
            .min(max.min(usize::from(u16::MAX)) as u16);
        let mut hdr = [0u8; NET_HDR_BYTES];
        let mut frame = vec![0u8; self.rx.buf_bytes as usize];
        for k in 0..n {
            let Some((id, len)) = self.rx.used_elem(k) else {
                self.stats.bad_used += 1;
                continue;
            };
            if len > self.rx.buf_bytes || len < NET_HDR_BYTES as u32 {
                self.stats.bad_used += 1;
            } else {
                let at = self.rx.buf_addr(id);
                let body = &mut frame[..len as usize - NET_HDR_BYTES];
                let _ = self.mem.read(GuestAddr(at), &mut hdr);
                let _ = self.mem.read(GuestAddr(at + NET_HDR_BYTES as u64), body);
                f(&hdr, body);
                self.stats.rx_frames += 1;
            }
            self.rx.push_avail(id);
        }
        self.rx.last_used = self.rx.last_used.wrapping_add(n);
        self.rx.publish();
        usize::from(n)
    }

    /// Consumes up to `max` received frames: `f(frame_len_bytes, peek)` gets
    /// each frame's length and its first [`RX_PEEK_BYTES`] (zero past the
    /// end of a shorter frame); the buffers go straight back to the device.
    /// Returns how many frames were consumed.
    #[inline]
    pub fn rx_harvest(
        &mut self,
        max: usize,
        mut f: impl FnMut(u32, &[u8; RX_PEEK_BYTES]),
    ) -> usize {
        let n = self
            .rx
            .pending_used()
            .min(max.min(usize::from(u16::MAX)) as u16);
        let mut peek = [0u8; RX_PEEK_BYTES];
        for k in 0..n {
            let Some((id, len)) = self.rx.used_elem(k) else {
                self.stats.bad_used += 1;
                continue;
            };
            let frame_len = len.saturating_sub(NET_HDR_BYTES as u32);
            if len > self.rx.buf_bytes || len < NET_HDR_BYTES as u32 {
                self.stats.bad_used += 1;
            } else {
                let at = self.rx.buf_off(id) + NET_HDR_BYTES;
                // The usual case (a frame at least as long as the peek) copies
                // a constant length: no memcpy call.
                if frame_len as usize >= RX_PEEK_BYTES {
                    peek = self.rx.bufs.read_bytes::<RX_PEEK_BYTES>(at);
                } else {
                    let copy = frame_len as usize;
                    peek[copy..].fill(0);
                    let addr = self.rx.buf_addr(id) + NET_HDR_BYTES as u64;
                    // Inside the region by construction (laid out in `connect`).
                    let _ = self.mem.read(GuestAddr(addr), &mut peek[..copy]);
                }
                f(frame_len, &peek);
                self.stats.rx_frames += 1;
            }
            // Descriptor `id` still points at buffer `id` (the device never
            // writes descriptors): only the avail slot is new.
            self.rx.push_avail(id);
        }
        self.rx.last_used = self.rx.last_used.wrapping_add(n);
        self.rx.publish();
        usize::from(n)
    }
}

/// `EFD_NONBLOCK`: a kick must never block the generator.
fn libc_nonblock() -> i32 {
    rustix::event::EventfdFlags::NONBLOCK.bits() as i32
}
