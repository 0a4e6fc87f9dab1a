//! Poll-mode driver for modern virtio-net PCI devices (1af4:1041, virtio 1.x)
//! over VFIO, with split virtqueues.
//!
//! Layer: ports. Depends on `dataplane` (port trait, mbufs, stats), `pci`
//! (config-space capabilities, registers) and `vfio::dma` (ring memory).
//! `rx_burst`, `tx_burst` and `housekeeping` are on the packet path;
//! [`Layout::from_config`] and [`VirtioNetPort::open`] are not. No `unsafe` here.
//!
//! # Transport
//!
//! The modern PCI transport (§4.1.4) describes its register blocks with
//! vendor-specific capabilities: common configuration, notification, ISR and
//! device configuration, each at an offset inside a BAR. [`Layout`] is the
//! result of walking them; this driver requires the blocks it uses to share one
//! BAR (QEMU puts them all in BAR 4).
//!
//! # Features
//!
//! `VERSION_1` is required; `ACCESS_PLATFORM` is required when the device is
//! driven through VFIO, because without it the device DMAs to guest-physical
//! addresses and bypasses the IOMMU mapping that gives our IOVAs meaning (QEMU:
//! `iommu_platform=on`, which in turn needs `disable-legacy=on`). `MAC` and
//! `STATUS` are taken when offered, `MQ` with `CTRL_VQ` when both are. No offloads, no mergeable buffers: every
//! frame is one 12-byte header plus the Ethernet frame in one buffer.
//!
//! # Queues
//!
//! Up to `max_virtqueue_pairs` queue pairs (1 without `MQ`), one [`Port`] each:
//! pair `n` is receiveq `2n` and transmitq `2n + 1`. With `MQ`, the control
//! queue (index `2 * max_virtqueue_pairs`) carries one command at open,
//! `VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET`; the device is reset when the last pair is
//! dropped. Each pair's queues are its own, so pairs run on different workers
//! without sharing state beyond the BAR (doorbells are per queue). Receive: every descriptor
//! holds one mbuf (device-writable, the mbuf's whole capacity); the header is
//! stripped with `Mbuf::adj`. Transmit: the header is prepended into the mbuf's
//! headroom, so each frame is one device-readable descriptor. Both queues publish
//! the available index once per burst and notify only when the device has not
//! set `VIRTQ_USED_F_NO_NOTIFY`.
//!
//! # Counters
//!
//! Used elements with an unknown id or a length outside the buffer count as
//! `rx_errors`/`tx_errors` and `PortError` drops; a frame whose buffer cannot be
//! replaced is dropped as `NoBuffers` and its buffer re-posted; transmit mbufs
//! that are empty or lack 12 bytes of headroom are dropped as `Malformed`.

pub mod defs;

use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::ids::MacAddr;
use dataplane::{Burst, DropReason, LinkState, Mbuf, Mempool, Port, QueueStats};

use crate::pci::config::CAP_ID_VENDOR;
use crate::pci::{capabilities, ConfigSpace, RegisterFile};
use crate::vfio::{DmaMem, Iova, VfioError};
use defs::{cap, common, ctrl_cmd, feature, netcfg, status, vring, NET_HDR_BYTES};

/// Where the modern transport's register blocks are, from the PCI capabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// BAR holding all the blocks.
    pub bar: u8,
    /// Offset of the common configuration in the BAR.
    pub common: usize,
    /// Offset of the notification area.
    pub notify: usize,
    /// `notify_off_multiplier`: bytes per unit of `queue_notify_off`.
    pub notify_multiplier: u32,
    /// Offset of the ISR status byte.
    pub isr: usize,
    /// Offset of the device-specific (network) configuration.
    pub device: usize,
}

impl Layout {
    /// Walks the vendor capabilities (§4.1.4). The first capability of each type
    /// is used, as the spec asks of drivers.
    ///
    /// # Errors
    /// [`VfioError::Device`] if a block is missing or the blocks are spread over
    /// several BARs.
    pub fn from_config(cfg: &dyn ConfigSpace, name: &str) -> Result<Layout, VfioError> {
        let err = |what| VfioError::Device {
            pci: name.into(),
            what,
        };
        let mut found: [Option<(u8, usize)>; 5] = [None; 5];
        let mut multiplier = 0;
        for c in capabilities(cfg).iter().filter(|c| c.id == CAP_ID_VENDOR) {
            let ty = cfg.read_config8(c.offset + cap::CFG_TYPE);
            if !(cap::COMMON_CFG..=cap::DEVICE_CFG).contains(&ty) || found[ty as usize].is_some() {
                continue;
            }
            let bar = cfg.read_config8(c.offset + cap::BAR);
            if bar > 5 {
                continue;
            }
            let off = cfg.read_config32(c.offset + cap::OFFSET) as usize;
            if ty == cap::NOTIFY_CFG {
                multiplier = cfg.read_config32(c.offset + cap::NOTIFY_OFF_MULTIPLIER);
            }
            found[ty as usize] = Some((bar, off));
        }
        let get = |ty: u8, what| found[ty as usize].ok_or_else(|| err(what));
        let c = get(
            cap::COMMON_CFG,
            "virtio common configuration capability missing (legacy-only device?)",
        )?;
        let n = get(cap::NOTIFY_CFG, "virtio notification capability missing")?;
        let i = get(cap::ISR_CFG, "virtio ISR capability missing")?;
        let d = get(
            cap::DEVICE_CFG,
            "virtio device configuration capability missing",
        )?;
        if [n.0, i.0, d.0].iter().any(|&b| b != c.0) {
            return Err(err(
                "virtio register blocks in several BARs are not supported",
            ));
        }
        Ok(Layout {
            bar: c.0,
            common: c.1,
            notify: n.1,
            notify_multiplier: multiplier,
            isr: i.1,
            device: d.1,
        })
    }
}

/// One split virtqueue in DMA memory, driver side.
struct VirtQueue {
    mem: DmaMem,
    /// Byte offset of this queue's memory in `mem`.
    base: usize,
    size: u16,
    /// Next available-ring slot (free-running, wraps at 2^16 as the spec's idx).
    avail_idx: u16,
    /// Next used element to consume.
    last_used: u16,
    /// Byte offset of this queue's doorbell in the BAR.
    notify_at: usize,
    index: u16,
}

impl VirtQueue {
    fn desc_off(&self, id: u16) -> usize {
        self.base + id as usize * vring::DESC_BYTES
    }

    fn set_desc(&self, id: u16, addr: u64, len: u32, flags: u16) {
        let d = self.desc_off(id);
        self.mem.write_u64(d, addr);
        self.mem.write_u32(d + vring::DESC_LEN, len);
        self.mem.write_u16(d + vring::DESC_FLAGS, flags);
    }

    /// Puts descriptor `id` in the next available slot; visible at `publish`.
    fn push_avail(&mut self, id: u16) {
        let slot = (self.avail_idx % self.size) as usize;
        let at = self.base + vring::AVAIL_OFF + vring::AVAIL_RING + 2 * slot;
        self.mem.write_u16(at, id);
        self.avail_idx = self.avail_idx.wrapping_add(1);
    }

    fn publish(&self) {
        // Release: ring entries and descriptors before the index (§2.6.13.2).
        fence(Ordering::Release);
        self.mem.write_u16(
            self.base + vring::AVAIL_OFF + vring::AVAIL_IDX,
            self.avail_idx,
        );
    }

    fn needs_notify(&self) -> bool {
        // SeqCst: the idx store must be visible before we read the device's
        // flags, or we may miss a device that just re-enabled notifications
        // (§2.6.13.6 asks for a full barrier here).
        fence(Ordering::SeqCst);
        self.mem.read_u16(self.base + vring::USED_OFF) & vring::USED_F_NO_NOTIFY == 0
    }

    /// The next used element `(id, len)`, if the device returned one.
    fn pop_used(&mut self) -> Option<(u32, u32)> {
        let used_idx = self
            .mem
            .read_u16(self.base + vring::USED_OFF + vring::USED_IDX);
        if used_idx == self.last_used {
            return None;
        }
        // Acquire: the element (and the buffer it describes) after the index.
        fence(Ordering::Acquire);
        let slot = (self.last_used % self.size) as usize;
        let e = self.base + vring::USED_OFF + vring::USED_RING + slot * vring::USED_ELEM_BYTES;
        self.last_used = self.last_used.wrapping_add(1);
        Some((self.mem.read_u32(e), self.mem.read_u32(e + 4)))
    }
}

/// Resets the device when the last queue pair of it is dropped, which stops
/// all its DMA before rings and buffers are freed (§2.1.2).
struct ResetOnDrop<R: RegisterFile> {
    regs: R,
    common: usize,
}

impl<R: RegisterFile> Drop for ResetOnDrop<R> {
    fn drop(&mut self) {
        self.regs.write8(self.common + common::DEVICE_STATUS, 0);
    }
}

/// One virtio-net queue pair as a [`Port`].
pub struct VirtioNetPort<R: RegisterFile> {
    regs: R,
    layout: Layout,
    rx: VirtQueue,
    tx: VirtQueue,
    rx_bufs: Vec<Option<Mbuf>>,
    tx_bufs: Vec<Option<Mbuf>>,
    /// Free transmit descriptor ids (a stack; capacity fixed at the queue size).
    tx_free: Vec<u16>,
    pool: &'static Mempool,
    pool_iova: Iova,
    features: u64,
    mac: MacAddr,
    link: LinkState,
    stats: Arc<QueueStats>,
    _reset: Arc<ResetOnDrop<R>>,
}

fn pool_addr(pool_iova: Iova, m: &Mbuf) -> u64 {
    pool_iova.offset(m.data_region_offset() as u64).0
}

/// Bytes of ring memory [`VirtioNetPort::open`] needs for `queues` pairs: two
/// queues per pair, then the control queue and a page for its command buffer.
pub fn ring_bytes(queues: u16) -> usize {
    (2 * queues as usize + 1) * vring::QUEUE_BYTES + 4096
}

/// The memory [`VirtioNetPort::open`] gives the device: ring memory (at least
/// [`ring_bytes`], visible to the device at its IOVA) and the pool the
/// receive queues are filled from, mapped at `pool_iova`.
pub struct QueueMemory {
    /// Descriptor tables, rings and the control queue's command buffer.
    pub ring: DmaMem,
    /// Receive buffers.
    pub pool: &'static Mempool,
    /// Where the device sees `pool`.
    pub pool_iova: Iova,
}

/// The device during bring-up: its registers, where they are, and the name
/// errors give it.
struct Bringup<'a, R> {
    regs: &'a R,
    layout: Layout,
    name: &'a str,
}

impl<R: RegisterFile> Bringup<'_, R> {
    fn status(&self) -> u8 {
        self.regs.read8(self.layout.common + common::DEVICE_STATUS)
    }

    fn set_status(&self, st: u8) {
        self.regs
            .write8(self.layout.common + common::DEVICE_STATUS, st);
    }

    /// Tells the device we gave up (§3.1.1 step 8 on failure).
    fn give_up(&self) {
        self.set_status(self.status() | status::FAILED);
    }

    /// [`give_up`](Self::give_up), saying why.
    fn fail(&self, what: &'static str) -> VfioError {
        self.give_up();
        VfioError::Device {
            pci: self.name.into(),
            what,
        }
    }

    /// §3.1.1: reset, then ACKNOWLEDGE, DRIVER.
    fn reset(&self) -> Result<(), VfioError> {
        self.set_status(0);
        let deadline = Instant::now() + Duration::from_millis(100);
        while self.status() != 0 {
            if Instant::now() > deadline {
                return Err(self.fail("virtio reset did not complete in 100 ms"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        self.set_status(status::ACKNOWLEDGE);
        self.set_status(status::ACKNOWLEDGE | status::DRIVER);
        Ok(())
    }

    /// Reads the offered features, picks ours, checks that `queues` pairs
    /// exist and sets FEATURES_OK. Returns the features and the device's
    /// queue pairs.
    fn negotiate(
        &self,
        queues: u16,
        require_access_platform: bool,
    ) -> Result<(u64, u16), VfioError> {
        let c = self.layout.common;
        let mut offered = 0u64;
        for half in 0..2u32 {
            self.regs.write32(c + common::DEVICE_FEATURE_SELECT, half);
            offered |= u64::from(self.regs.read32(c + common::DEVICE_FEATURE)) << (32 * half);
        }
        if offered & feature::VERSION_1 == 0 {
            return Err(self.fail("virtio device does not offer VERSION_1 (legacy only)"));
        }
        if require_access_platform && offered & feature::ACCESS_PLATFORM == 0 {
            return Err(self.fail(
                "virtio device does not offer ACCESS_PLATFORM: its DMA would bypass the IOMMU \
                 (QEMU: virtio-net-pci,disable-legacy=on,iommu_platform=on)",
            ));
        }
        let mut wanted =
            feature::VERSION_1 | feature::ACCESS_PLATFORM | feature::NET_MAC | feature::NET_STATUS;
        // MQ needs the control queue to switch pairs on (§5.1.5.1).
        let mq = feature::NET_MQ | feature::NET_CTRL_VQ;
        if offered & mq == mq {
            wanted |= mq;
        }
        let features = offered & wanted;
        let max_pairs = if features & feature::NET_MQ != 0 {
            self.regs
                .read16(self.layout.device + netcfg::MAX_VIRTQUEUE_PAIRS)
                .max(1)
        } else {
            1
        };
        if queues > max_pairs {
            self.give_up();
            return Err(VfioError::TooManyQueues {
                driver: "virtio-net",
                max: max_pairs,
                wanted: queues,
            });
        }
        for half in 0..2u32 {
            self.regs.write32(c + common::DRIVER_FEATURE_SELECT, half);
            self.regs
                .write32(c + common::DRIVER_FEATURE, (features >> (32 * half)) as u32);
        }
        self.set_status(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
        if self.status() & status::FEATURES_OK == 0 {
            return Err(self.fail("virtio device refused the negotiated features"));
        }
        Ok((features, max_pairs))
    }

    /// Sets up the virtqueues `indices`, in that order in `ring`, and enables
    /// them.
    fn virtqueues(&self, ring: &DmaMem, indices: &[u16]) -> Result<Vec<VirtQueue>, VfioError> {
        let c = self.layout.common;
        if self.regs.read16(c + common::NUM_QUEUES) <= *indices.iter().max().expect("queues") {
            return Err(self.fail("virtio-net device has fewer queues than it advertises"));
        }
        let mut vqs = Vec::with_capacity(indices.len());
        for (k, &index) in indices.iter().enumerate() {
            self.regs.write16(c + common::QUEUE_SELECT, index);
            let max = self.regs.read16(c + common::QUEUE_SIZE);
            let size = max.min(vring::MAX_QUEUE_SIZE);
            if size == 0 || !size.is_power_of_two() {
                return Err(self.fail("virtio queue size is 0 or not a power of two"));
            }
            let base = k * vring::QUEUE_BYTES;
            ring.zero(base, vring::QUEUE_BYTES);
            // We poll: ask the device not to interrupt.
            ring.write_u16(base + vring::AVAIL_OFF, vring::AVAIL_F_NO_INTERRUPT);
            let at = |off: usize| ring.iova().offset((base + off) as u64).0;
            self.regs.write16(c + common::QUEUE_SIZE, size);
            self.regs
                .write16(c + common::QUEUE_MSIX_VECTOR, common::NO_VECTOR);
            self.regs.write64_split(c + common::QUEUE_DESC, at(0));
            self.regs
                .write64_split(c + common::QUEUE_DRIVER, at(vring::AVAIL_OFF));
            self.regs
                .write64_split(c + common::QUEUE_DEVICE, at(vring::USED_OFF));
            let notify_off = self.regs.read16(c + common::QUEUE_NOTIFY_OFF) as usize;
            self.regs.write16(c + common::QUEUE_ENABLE, 1);
            vqs.push(VirtQueue {
                mem: ring.clone(),
                base,
                size,
                avail_idx: 0,
                last_used: 0,
                notify_at: self.layout.notify + notify_off * self.layout.notify_multiplier as usize,
                index,
            });
        }
        Ok(vqs)
    }

    /// The device's MAC address, or a locally administered placeholder
    /// without `NET_MAC` (the port is promiscuous anyway).
    fn mac(&self, features: u64) -> MacAddr {
        if features & feature::NET_MAC == 0 {
            return MacAddr([0x02, 0, 0, 0, 0, 0x01]);
        }
        let mut b = [0u8; 6];
        for (i, x) in b.iter_mut().enumerate() {
            *x = self.regs.read8(self.layout.device + netcfg::MAC + i);
        }
        MacAddr(b)
    }
}

/// Posts a buffer from `mem.pool` in every descriptor of receive queue `rx`;
/// returns them by descriptor id. `need` is what all the port's receive
/// queues take, for the error.
fn fill_rx(
    rx: &mut VirtQueue,
    mem: &QueueMemory,
    need: usize,
) -> Result<Vec<Option<Mbuf>>, VfioError> {
    let mut bufs = Vec::with_capacity(rx.size as usize);
    for id in 0..rx.size {
        let m = mem.pool.alloc().ok_or_else(|| VfioError::PoolEmpty {
            pool: mem.pool.name().into(),
            need,
        })?;
        rx.set_desc(
            id,
            pool_addr(mem.pool_iova, &m),
            m.capacity() as u32,
            vring::DESC_F_WRITE,
        );
        rx.push_avail(id);
        bufs.push(Some(m));
    }
    rx.publish();
    Ok(bufs)
}

impl<R: RegisterFile + Clone> VirtioNetPort<R> {
    /// Resets the device, negotiates features, sets up `queues` receive/transmit
    /// queue pairs (and, with `MQ`, the control queue, which it uses to enable
    /// them) in `mem.ring`, fills the receive queues from `mem.pool` and sets
    /// DRIVER_OK. Returns one port per pair; the device is reset when the last
    /// of them is dropped. `name` (the PCI address) names the device in errors.
    ///
    /// `require_access_platform` must be true when the device reaches memory
    /// through an IOMMU mapping (always, under VFIO).
    ///
    /// # Errors
    /// [`VfioError::Device`] when the device does not reset, lacks `VERSION_1` or
    /// (if required) `ACCESS_PLATFORM`, refuses the features or the queue-pair
    /// command; [`VfioError::TooManyQueues`] beyond the device's pairs (1 without
    /// `MQ`); [`VfioError::PoolTooSmall`], [`VfioError::PoolEmpty`].
    pub fn open(
        regs: R,
        layout: Layout,
        mem: QueueMemory,
        queues: u16,
        require_access_platform: bool,
        name: &str,
    ) -> Result<Vec<Self>, VfioError> {
        // Header plus a full 1514-byte frame (§5.1.6.3.1 without MRG_RXBUF).
        let need = (NET_HDR_BYTES + 1514) as u32;
        if mem.pool.data_room() < need {
            return Err(VfioError::PoolTooSmall {
                pool: mem.pool.name().into(),
                data_room: mem.pool.data_room(),
                need,
            });
        }
        assert!(queues >= 1, "at least one queue pair");
        assert!(
            mem.ring.len() >= ring_bytes(queues),
            "ring memory too small"
        );
        let dev = Bringup {
            regs: &regs,
            layout,
            name,
        };
        dev.reset()?;
        let (features, max_pairs) = dev.negotiate(queues, require_access_platform)?;
        // Queues: receiveqN = 2(N-1), transmitqN = 2(N-1)+1, controlq = 2 *
        // max_virtqueue_pairs (§5.1.2); ring memory in that order, control last.
        let has_ctrl = features & feature::NET_CTRL_VQ != 0;
        let mut indices: Vec<u16> = (0..2 * queues).collect();
        if has_ctrl {
            indices.push(2 * max_pairs);
        }
        let mut vqs = dev.virtqueues(&mem.ring, &indices)?;
        let ctrl = if has_ctrl { vqs.pop() } else { None };
        let mac = dev.mac(features);

        let reset = Arc::new(ResetOnDrop {
            regs: regs.clone(),
            common: layout.common,
        });
        let mut ports = Vec::with_capacity(queues as usize);
        let mut vqs = vqs.into_iter();
        while let (Some(mut rx), Some(tx)) = (vqs.next(), vqs.next()) {
            let need = rx.size as usize * queues as usize;
            let rx_bufs = fill_rx(&mut rx, &mem, need)?;
            let tx_size = tx.size;
            ports.push(VirtioNetPort {
                regs: regs.clone(),
                layout,
                rx,
                tx,
                rx_bufs,
                tx_bufs: (0..tx_size).map(|_| None).collect(),
                tx_free: (0..tx_size).rev().collect(),
                pool: mem.pool,
                pool_iova: mem.pool_iova,
                features,
                mac,
                link: LinkState::Up,
                stats: Arc::new(QueueStats::default()),
                _reset: Arc::clone(&reset),
            });
        }
        dev.set_status(
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
        );
        if let Some(mut ctrl) = ctrl {
            let cmd_off = indices.len() * vring::QUEUE_BYTES;
            if !set_queue_pairs(&regs, &mut ctrl, &mem.ring, cmd_off, queues) {
                return Err(dev.fail("virtio-net refused VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET"));
            }
        }
        for p in &mut ports {
            // The device may not have looked at the ring before DRIVER_OK.
            regs.write16(p.rx.notify_at, p.rx.index);
            p.refresh_link();
        }
        Ok(ports)
    }
}

/// Sends VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET(`pairs`) on the control queue and waits
/// up to a second for the device's ack (§5.1.6.5.5). The command (class, cmd,
/// le16 pairs) is one device-readable descriptor, the ack byte a writable one.
fn set_queue_pairs<R: RegisterFile>(
    regs: &R,
    ctrl: &mut VirtQueue,
    mem: &DmaMem,
    cmd_off: usize,
    pairs: u16,
) -> bool {
    let ack_off = cmd_off + 16;
    mem.write_u8(cmd_off, ctrl_cmd::CLASS_MQ);
    mem.write_u8(cmd_off + 1, ctrl_cmd::MQ_VQ_PAIRS_SET);
    mem.write_u16(cmd_off + 2, pairs);
    mem.write_u8(ack_off, 0xff);
    let iova = |off: usize| mem.iova().offset(off as u64).0;
    ctrl.set_desc(0, iova(cmd_off), 4, vring::DESC_F_NEXT);
    mem.write_u16(ctrl.desc_off(0) + vring::DESC_NEXT, 1);
    ctrl.set_desc(1, iova(ack_off), 1, vring::DESC_F_WRITE);
    ctrl.push_avail(0);
    ctrl.publish();
    regs.write16(ctrl.notify_at, ctrl.index);
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        if ctrl.pop_used().is_some() {
            return mem.read_u8(ack_off) == ctrl_cmd::OK;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

impl<R: RegisterFile> VirtioNetPort<R> {
    /// The device's MAC address (from its config space, when it offers one).
    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    /// The negotiated feature bits.
    pub fn features(&self) -> u64 {
        self.features
    }

    fn refresh_link(&mut self) {
        self.link = if self.features & feature::NET_STATUS == 0
            || self.regs.read16(self.layout.device + netcfg::STATUS) & netcfg::STATUS_LINK_UP != 0
        {
            LinkState::Up
        } else {
            LinkState::Down
        };
    }

    fn reclaim_tx(&mut self) {
        while let Some((id, _)) = self.tx.pop_used() {
            match self.tx_bufs.get_mut(id as usize).and_then(Option::take) {
                Some(m) => {
                    drop(m);
                    self.tx_free.push(id as u16);
                }
                None => {
                    self.stats.tx_errors.inc();
                    self.stats.drop_one(DropReason::PortError);
                }
            }
        }
    }

    fn post_rx(&mut self, id: u16, m: Mbuf) {
        let addr = pool_addr(self.pool_iova, &m);
        self.rx
            .set_desc(id, addr, m.capacity() as u32, vring::DESC_F_WRITE);
        self.rx.push_avail(id);
        self.rx_bufs[id as usize] = Some(m);
    }

    fn kick(&self, q: &VirtQueue) {
        if q.needs_notify() {
            self.regs.write16(q.notify_at, q.index);
        }
    }
}

impl<R: RegisterFile> Port for VirtioNetPort<R> {
    fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        let mut n = 0;
        let mut reposted = false;
        while !burst.is_full() {
            let Some((id, len)) = self.rx.pop_used() else {
                break;
            };
            let Some(mut m) = self.rx_bufs.get_mut(id as usize).and_then(Option::take) else {
                self.stats.rx_errors.inc();
                self.stats.drop_one(DropReason::PortError);
                continue;
            };
            let id = id as u16;
            let len = len as usize;
            reposted = true;
            if len < NET_HDR_BYTES || len > m.capacity() {
                self.stats.rx_errors.inc();
                self.stats.drop_one(DropReason::PortError);
                self.post_rx(id, m);
                continue;
            }
            match self.pool.alloc() {
                Some(fresh) => {
                    self.post_rx(id, fresh);
                    // len <= capacity was checked above.
                    let _ = m.set_len(len);
                    m.adj(NET_HDR_BYTES);
                    burst.push(m);
                    n += 1;
                }
                None => {
                    self.stats.drop_one(DropReason::NoBuffers);
                    self.post_rx(id, m);
                }
            }
        }
        if reposted {
            self.rx.publish();
            self.kick(&self.rx);
        }
        n
    }

    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        self.reclaim_tx();
        let take = burst.len().min(self.tx_free.len());
        if take == 0 {
            return 0;
        }
        let mut queued = false;
        for mut m in burst.drain(..take) {
            if m.is_empty() {
                self.stats.tx_errors.inc();
                self.stats.drop_one(DropReason::Malformed);
                continue;
            }
            match m.prepend(NET_HDR_BYTES) {
                // No offloads: an all-zero header (§5.1.6.2).
                Ok(hdr) => hdr.fill(0),
                Err(_) => {
                    self.stats.tx_errors.inc();
                    self.stats.drop_one(DropReason::Malformed);
                    continue;
                }
            }
            let id = self.tx_free.pop().expect("take <= free descriptors");
            self.tx
                .set_desc(id, pool_addr(self.pool_iova, &m), m.len() as u32, 0);
            self.tx.push_avail(id);
            self.tx_bufs[id as usize] = Some(m);
            queued = true;
        }
        if queued {
            self.tx.publish();
            self.kick(&self.tx);
        }
        take
    }

    fn link(&self) -> LinkState {
        self.link
    }

    fn stats(&self) -> &Arc<QueueStats> {
        &self.stats
    }

    fn housekeeping(&mut self) {
        self.reclaim_tx();
        self.refresh_link();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::Mutex;

    use dataplane::testutil::{eth_frame, mac};

    use super::*;
    use crate::pci::bar::FakeBar;
    use crate::pci::config::FakeConfig;
    use crate::vfio::dma::PoolWindow;

    const RING_IOVA: Iova = Iova(0x1000_0000);
    const POOL_IOVA: Iova = Iova(0x1_0000_0000);
    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x57];
    const LAYOUT: Layout = Layout {
        bar: 4,
        common: 0x0,
        notify: 0x3000,
        notify_multiplier: 4,
        isr: 0x1000,
        device: 0x2000,
    };

    #[derive(Default)]
    struct DevQueue {
        desc: u64,
        avail: u64,
        used: u64,
        size: u16,
        last_avail: u16,
        used_idx: u16,
    }

    /// A fake virtio-net device: feature registers per select, queue registers
    /// per queue_select, a transmit doorbell that consumes the available ring
    /// and records frames, and `deliver` for frames from the wire.
    struct Fake {
        bar: Arc<FakeBar>,
        ring: DmaMem,
        win: Arc<PoolWindow>,
        queues: Arc<Mutex<Vec<DevQueue>>>,
        sent: Arc<Mutex<Vec<Vec<u8>>>>,
        stall_tx: Arc<AtomicBool>,
        cmds: Arc<Mutex<Vec<Vec<u8>>>>,
    }

    fn off(ring: &DmaMem, iova: u64) -> usize {
        (iova - ring.iova().0) as usize
    }

    /// Pops the next available descriptor of `q`: (id, addr, len).
    fn pop_avail(ring: &DmaMem, q: &mut DevQueue) -> Option<(u16, u64, u32)> {
        let a = off(ring, q.avail);
        if ring.read_u16(a + vring::AVAIL_IDX) == q.last_avail {
            return None;
        }
        let id = ring.read_u16(a + vring::AVAIL_RING + 2 * (q.last_avail % q.size) as usize);
        q.last_avail = q.last_avail.wrapping_add(1);
        let d = off(ring, q.desc) + id as usize * vring::DESC_BYTES;
        Some((id, ring.read_u64(d), ring.read_u32(d + vring::DESC_LEN)))
    }

    fn push_used(ring: &DmaMem, q: &mut DevQueue, id: u16, len: u32) {
        let u = off(ring, q.used);
        let e = u + vring::USED_RING + (q.used_idx % q.size) as usize * vring::USED_ELEM_BYTES;
        ring.write_u32(e, id.into());
        ring.write_u32(e + 4, len);
        q.used_idx = q.used_idx.wrapping_add(1);
        ring.write_u16(u + vring::USED_IDX, q.used_idx);
    }

    impl Fake {
        fn new(pool: &'static Mempool, offered: u64) -> Fake {
            let bar = Arc::new(FakeBar::new(0x4000));
            let ring = DmaMem::for_tests(ring_bytes(8), RING_IOVA);
            let win = Arc::new(PoolWindow::new(pool, POOL_IOVA));
            let queues: Arc<Mutex<Vec<DevQueue>>> =
                Arc::new(Mutex::new((0..16).map(|_| DevQueue::default()).collect()));
            let sent = Arc::new(Mutex::new(Vec::new()));
            bar.set16(common::NUM_QUEUES, 9);
            bar.set16(LAYOUT.device + netcfg::MAX_VIRTQUEUE_PAIRS, 4);
            for (i, b) in MAC.iter().enumerate() {
                bar.set8(LAYOUT.device + netcfg::MAC + i, *b);
            }
            bar.set16(LAYOUT.device + netcfg::STATUS, netcfg::STATUS_LINK_UP);
            bar.on_write(
                common::DEVICE_FEATURE_SELECT,
                Box::new(move |r, sel| {
                    r.set32(
                        common::DEVICE_FEATURE,
                        (offered >> (32 * sel.min(1))) as u32,
                    )
                }),
            );
            bar.on_write(
                common::QUEUE_SELECT,
                Box::new(|r, q| {
                    r.set16(common::QUEUE_SIZE, 1024);
                    r.set16(common::QUEUE_NOTIFY_OFF, q as u16);
                }),
            );
            let qs = queues.clone();
            bar.on_write(
                common::QUEUE_ENABLE,
                Box::new(move |r, _| {
                    let sel = r.get16(common::QUEUE_SELECT) as usize;
                    let get64 = |o| u64::from(r.get32(o)) | u64::from(r.get32(o + 4)) << 32;
                    qs.lock().unwrap()[sel] = DevQueue {
                        desc: get64(common::QUEUE_DESC),
                        avail: get64(common::QUEUE_DRIVER),
                        used: get64(common::QUEUE_DEVICE),
                        size: r.get16(common::QUEUE_SIZE),
                        ..DevQueue::default()
                    };
                }),
            );
            let stall_tx = Arc::new(AtomicBool::new(false));
            let (qs, rg, w, s) = (queues.clone(), ring.clone(), win.clone(), sent.clone());
            let st = stall_tx.clone();
            bar.on_write(
                LAYOUT.notify + 4,
                Box::new(move |_, _| {
                    if st.load(Ordering::Relaxed) {
                        return;
                    }
                    let q = &mut qs.lock().unwrap()[1];
                    while let Some((id, addr, len)) = pop_avail(&rg, q) {
                        s.lock().unwrap().push(w.read(addr, len as usize));
                        push_used(&rg, q, id, 0);
                    }
                }),
            );
            // Control queue (index 8 with 4 pairs): ack every command, record it.
            let (qs, rg) = (queues.clone(), ring.clone());
            let cmds = Arc::new(Mutex::new(Vec::new()));
            let cm = cmds.clone();
            bar.on_write(
                LAYOUT.notify + 32,
                Box::new(move |_, _| {
                    let q = &mut qs.lock().unwrap()[8];
                    while let Some((id, addr, len)) = pop_avail(&rg, q) {
                        let d = off(&rg, q.desc) + id as usize * vring::DESC_BYTES;
                        let next = rg.read_u16(d + vring::DESC_NEXT);
                        let ack = off(&rg, q.desc) + next as usize * vring::DESC_BYTES;
                        let a = off(&rg, addr);
                        cm.lock()
                            .unwrap()
                            .push((0..len as usize).map(|i| rg.read_u8(a + i)).collect());
                        rg.write_u8(off(&rg, rg.read_u64(ack)), ctrl_cmd::OK);
                        push_used(&rg, q, id, 1);
                    }
                }),
            );
            Fake {
                bar,
                ring,
                win,
                queues,
                sent,
                stall_tx,
                cmds,
            }
        }

        fn ports(
            &self,
            pool: &'static Mempool,
            queues: u16,
        ) -> Result<Vec<VirtioNetPort<Arc<FakeBar>>>, VfioError> {
            VirtioNetPort::open(
                self.bar.clone(),
                LAYOUT,
                QueueMemory {
                    ring: self.ring.clone(),
                    pool,
                    pool_iova: POOL_IOVA,
                },
                queues,
                true,
                "fake",
            )
        }

        fn port(&self, pool: &'static Mempool) -> Result<VirtioNetPort<Arc<FakeBar>>, VfioError> {
            self.ports(pool, 1).map(|mut v| v.pop().unwrap())
        }

        /// A frame arrives from the wire: header + frame into the next buffer.
        fn deliver(&self, frame: &[u8]) -> bool {
            let q = &mut self.queues.lock().unwrap()[0];
            let Some((id, addr, len)) = pop_avail(&self.ring, q) else {
                return false;
            };
            assert!(len as usize >= NET_HDR_BYTES + frame.len());
            let mut bytes = vec![0u8; NET_HDR_BYTES];
            bytes.extend_from_slice(frame);
            self.win.write(addr, &bytes);
            push_used(&self.ring, q, id, bytes.len() as u32);
            true
        }
    }

    const ALL: u64 = feature::VERSION_1
        | feature::ACCESS_PLATFORM
        | feature::NET_MAC
        | feature::NET_STATUS
        | (1 << 0);

    fn frame(n: u16) -> Vec<u8> {
        let mut f = eth_frame(mac(1), mac(2), 0x88b5, 46);
        f[14..16].copy_from_slice(&n.to_be_bytes());
        f
    }

    #[test]
    fn layout_is_read_from_vendor_capabilities() {
        let mut c = vec![0u8; 256];
        c[0x06] = 0x10;
        c[0x34] = 0x40;
        // (cap offset, cfg_type, bar offset, extra)
        let caps = [
            (0x40u8, 1u8, 0x0u32),
            (0x54, 3, 0x1000),
            (0x68, 4, 0x2000),
            (0x7c, 2, 0x3000),
        ];
        for (k, (at, ty, bar_off)) in caps.iter().enumerate() {
            let a = *at as usize;
            c[a] = CAP_ID_VENDOR;
            c[a + 1] = caps.get(k + 1).map_or(0, |n| n.0);
            c[a + 2] = if *ty == 2 { 20 } else { 16 };
            c[a + 3] = *ty;
            c[a + 4] = 4;
            c[a + 8..a + 12].copy_from_slice(&bar_off.to_le_bytes());
            c[a + 12..a + 16].copy_from_slice(&0x1000u32.to_le_bytes());
            if *ty == 2 {
                c[a + 16..a + 20].copy_from_slice(&4u32.to_le_bytes());
            }
        }
        assert_eq!(
            Layout::from_config(&FakeConfig(c.clone()), "t").unwrap(),
            LAYOUT
        );
        c[0x68 + 4] = 2; // device cfg in another BAR
        assert!(Layout::from_config(&FakeConfig(c), "t").is_err());
    }

    #[test]
    fn negotiation_accepts_only_known_features_and_reaches_driver_ok() {
        let pool = Mempool::for_tests(1024);
        let fake = Fake::new(pool, ALL);
        let port = fake.port(pool).unwrap();
        assert_eq!(port.features(), ALL & !1);
        let drv = fake.bar.writes_to(common::DRIVER_FEATURE);
        assert_eq!(
            drv,
            vec![(feature::NET_MAC | feature::NET_STATUS) as u32, 0b11]
        );
        let st = fake.bar.writes_to(common::DEVICE_STATUS);
        assert_eq!(st[0], 0, "reset first");
        assert_eq!(
            *st.last().unwrap() as u8,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK
        );
        assert_eq!(port.mac(), MacAddr(MAC));
        assert_eq!(port.link(), LinkState::Up);
        // Queue size capped at 256 and every rx buffer posted.
        let q = &fake.queues.lock().unwrap()[0];
        assert_eq!(
            (q.size, q.desc, q.avail),
            (256, RING_IOVA.0, RING_IOVA.0 + 4096)
        );
        assert_eq!(fake.ring.read_u16(vring::AVAIL_OFF + vring::AVAIL_IDX), 256);
    }

    #[test]
    fn missing_access_platform_or_version_1_is_refused() {
        let pool = Mempool::for_tests(1024);
        let fake = Fake::new(pool, ALL & !feature::ACCESS_PLATFORM);
        let e = fake.port(pool).err().unwrap().to_string();
        assert!(e.contains("ACCESS_PLATFORM"), "{e}");
        assert_ne!(fake.bar.read8(common::DEVICE_STATUS) & status::FAILED, 0);
        let fake = Fake::new(pool, ALL & !feature::VERSION_1);
        assert!(fake
            .port(pool)
            .err()
            .unwrap()
            .to_string()
            .contains("VERSION_1"));
    }

    #[test]
    fn device_refusing_features_fails_the_open() {
        let pool = Mempool::for_tests(1024);
        let fake = Fake::new(pool, ALL);
        fake.bar.on_write(
            common::DEVICE_STATUS,
            Box::new(|r, v| r.set8(common::DEVICE_STATUS, v as u8 & !status::FEATURES_OK)),
        );
        assert!(fake
            .port(pool)
            .err()
            .unwrap()
            .to_string()
            .contains("refused"));
    }

    #[test]
    fn rx_strips_the_header_and_reposts_buffers() {
        let pool = Mempool::for_tests(1024);
        let fake = Fake::new(pool, ALL);
        let mut port = fake.port(pool).unwrap();
        for n in 0..3 {
            assert!(fake.deliver(&frame(n)));
        }
        let mut b = Burst::new();
        assert_eq!(port.rx_burst(&mut b), 3);
        for (n, m) in b.iter().enumerate() {
            assert_eq!(m.data(), &frame(n as u16)[..]);
        }
        assert_eq!(fake.ring.read_u16(vring::AVAIL_OFF + vring::AVAIL_IDX), 259);
        assert_eq!(pool.in_use(), 256 + 3);
    }

    #[test]
    fn tx_prepends_a_zero_header_and_notifies_once_per_burst() {
        let pool = Mempool::for_tests(1024);
        let fake = Fake::new(pool, ALL);
        let mut port = fake.port(pool).unwrap();
        fake.bar.clear_writes();
        let mut b = Burst::new();
        for n in 0..5 {
            let mut m = pool.alloc().unwrap();
            m.extend_from_slice(&frame(n)).unwrap();
            b.push(m);
        }
        assert_eq!(port.tx_burst(&mut b), 5);
        assert_eq!(fake.bar.writes_to(LAYOUT.notify + 4), vec![1]);
        let sent = fake.sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 5);
        for (n, f) in sent.iter().enumerate() {
            assert_eq!(&f[..NET_HDR_BYTES], &[0u8; NET_HDR_BYTES]);
            assert_eq!(&f[NET_HDR_BYTES..], &frame(n as u16)[..]);
        }
        // With NO_NOTIFY set by the device, no doorbell.
        let used = fake.queues.lock().unwrap()[1].used;
        fake.ring
            .write_u16(off(&fake.ring, used), vring::USED_F_NO_NOTIFY);
        let mut m = pool.alloc().unwrap();
        m.extend_from_slice(&frame(9)).unwrap();
        b.push(m);
        assert_eq!(port.tx_burst(&mut b), 1);
        assert_eq!(fake.bar.writes_to(LAYOUT.notify + 4).len(), 1);
    }

    #[test]
    fn rings_wrap_and_a_full_tx_queue_leaves_frames_in_the_burst() {
        let pool = Mempool::for_tests(2048);
        let fake = Fake::new(pool, ALL);
        let mut port = fake.port(pool).unwrap();
        let mut b = Burst::new();
        for round in 0..40u16 {
            for k in 0..32 {
                assert!(fake.deliver(&frame(round * 32 + k)));
            }
            assert_eq!(port.rx_burst(&mut b), 32);
            for (k, m) in b.drain(..).enumerate() {
                assert_eq!(m.data(), &frame(round * 32 + k as u16)[..]);
            }
        }
        // A stalled device: the transmit queue fills at its size (256).
        fake.stall_tx.store(true, Ordering::Relaxed);
        let mut taken = 0;
        for round in 0..9u16 {
            let mut b = Burst::new();
            for k in 0..32 {
                let mut m = pool.alloc().unwrap();
                m.extend_from_slice(&frame(round * 32 + k)).unwrap();
                b.push(m);
            }
            taken += port.tx_burst(&mut b);
            if round == 8 {
                assert_eq!(b.len(), 32);
                assert_eq!(b[0].data(), &frame(256)[..]);
            }
        }
        assert_eq!(taken, 256);
    }

    #[test]
    fn bogus_used_id_is_a_counted_error_not_a_panic() {
        let pool = Mempool::for_tests(1024);
        let fake = Fake::new(pool, ALL);
        let mut port = fake.port(pool).unwrap();
        {
            let q = &mut fake.queues.lock().unwrap()[0];
            push_used(&fake.ring, q, 999, 60);
        }
        let mut b = Burst::new();
        assert_eq!(port.rx_burst(&mut b), 0);
        assert_eq!(port.stats().drops(DropReason::PortError), 1);
    }

    const MQ: u64 = feature::NET_MQ | feature::NET_CTRL_VQ;

    #[test]
    fn mq_opens_each_pair_and_enables_them_with_a_control_command() {
        let pool = Mempool::for_tests(1024);
        let fake = Fake::new(pool, ALL | MQ);
        let mut ports = fake.ports(pool, 2).unwrap();
        assert_eq!(ports.len(), 2);
        assert_eq!(ports[0].features() & MQ, MQ);
        // VIRTIO_NET_CTRL_MQ, VQ_PAIRS_SET, le16 2.
        assert_eq!(*fake.cmds.lock().unwrap(), vec![vec![4u8, 0, 2, 0]]);
        {
            let qs = fake.queues.lock().unwrap();
            // receiveq2 (index 2) is set up and filled; controlq is 2 * max pairs.
            assert_eq!(qs[2].size, 256);
            let avail = off(&fake.ring, qs[2].avail);
            assert_eq!(fake.ring.read_u16(avail + vring::AVAIL_IDX), 256);
            assert_eq!(qs[8].size, 256);
            assert_eq!(qs[4].size, 0, "pairs beyond the requested ones stay off");
        }
        // The second pair transmits on transmitq2 (index 3).
        fake.bar.clear_writes();
        let mut b = Burst::new();
        let mut m = pool.alloc().unwrap();
        m.extend_from_slice(&frame(1)).unwrap();
        b.push(m);
        assert_eq!(ports[1].tx_burst(&mut b), 1);
        assert_eq!(fake.bar.writes_to(LAYOUT.notify + 12), vec![3]);
    }

    #[test]
    fn more_pairs_than_the_device_offers_are_refused() {
        let pool = Mempool::for_tests(1024);
        let fake = Fake::new(pool, ALL | MQ);
        let e = fake.ports(pool, 5).err().unwrap();
        assert!(
            matches!(
                e,
                VfioError::TooManyQueues {
                    max: 4,
                    wanted: 5,
                    ..
                }
            ),
            "{e}"
        );
        let fake = Fake::new(pool, ALL);
        let e = fake.ports(pool, 2).err().unwrap();
        assert!(
            matches!(
                e,
                VfioError::TooManyQueues {
                    max: 1,
                    wanted: 2,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn device_is_reset_when_the_last_pair_is_dropped() {
        let pool = Mempool::for_tests(1024);
        let fake = Fake::new(pool, ALL | MQ);
        let mut ports = fake.ports(pool, 2).unwrap();
        fake.bar.clear_writes();
        drop(ports.pop());
        assert!(fake.bar.writes_to(common::DEVICE_STATUS).is_empty());
        drop(ports);
        assert_eq!(fake.bar.writes_to(common::DEVICE_STATUS), vec![0]);
    }
}
