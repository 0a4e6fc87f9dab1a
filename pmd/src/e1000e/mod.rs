//! Poll-mode driver for the Intel 82574L (e1000e, 8086:10d3) over VFIO.
//!
//! Layer: ports. Depends on `dataplane` (port trait, mbufs, stats), `pci::bar`
//! (registers) and `vfio::dma` (ring memory). `rx_burst`, `tx_burst` and
//! `housekeeping` are on the packet path; [`E1000ePort::new`] is not. No `unsafe`
//! here: registers go through [`RegisterFile`], descriptors through [`DmaMem`].
//!
//! # Rings
//!
//! One receive and one transmit queue (queue 0), legacy 16-byte descriptors, in
//! one [`DmaMem`] region: receive ring at [`RX_RING_OFF`], transmit ring at
//! [`TX_RING_OFF`]. Packet buffers are mbufs of a pool mapped at `pool_iova`; a
//! descriptor's buffer address is `pool_iova + Mbuf::data_region_offset()`, so
//! frames are received into and sent from mbufs without copying.
//!
//! ```text
//! receive:  hardware owns [RDH, RDT); the driver keeps the descriptor at RDT back
//!           (it is the last one it re-armed), so RDH == RDT means "no buffers".
//!           rx_burst: while desc[rx_next].DD: take its mbuf, post a fresh one,
//!           then RDT = last re-armed index (one MMIO write per burst).
//! transmit: software fills [TDT, ...), writes TDT once per burst; hardware sets
//!           DD (RS on every descriptor) as it sends; tx_burst and housekeeping
//!           free mbufs from tx_clean while DD is set. One slot stays empty, so a
//!           full ring holds TX_DESCS - 1 frames.
//! ```
//!
//! # Counters
//!
//! Frames with receive errors (CRC, symbol, sequence, carrier extension, RX data
//! error) or spanning several buffers are dropped as `Malformed` and counted in
//! `rx_errors`; a frame whose buffer cannot be replaced (pool empty) is dropped
//! as `NoBuffers` and its buffer re-posted; the hardware's missed-packet count
//! (MPC, no free descriptor) is added to `RxOverrun` in `housekeeping`. Empty or
//! oversized transmit mbufs are dropped as `Malformed` and counted in `tx_errors`.

pub mod regs;

use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::ids::MacAddr;
use dataplane::{Burst, DropReason, LinkState, Mbuf, Mempool, Port, QueueStats};

use crate::pci::RegisterFile;
use crate::vfio::{DmaMem, Iova, VfioError};
use regs::{rxd, txd};

/// Receive descriptors (ring length must be a multiple of 8 descriptors).
pub const RX_DESCS: usize = 512;
/// Transmit descriptors.
pub const TX_DESCS: usize = 512;
/// Byte offset of the receive ring in the ring memory.
pub const RX_RING_OFF: usize = 0;
/// Byte offset of the transmit ring in the ring memory.
pub const TX_RING_OFF: usize = RX_DESCS * regs::DESC_BYTES;
/// Bytes of ring memory the driver needs.
pub const RING_BYTES: usize = (RX_DESCS + TX_DESCS) * regs::DESC_BYTES;
/// Receive buffer size programmed in RCTL.BSIZE; every pool buffer must hold it.
pub const RX_BUF_BYTES: u32 = 2048;

const _: () = assert!(RX_DESCS.is_multiple_of(8) && TX_DESCS.is_multiple_of(8));

/// One 82574L queue pair as a [`Port`].
pub struct E1000ePort<R: RegisterFile> {
    regs: R,
    ring: DmaMem,
    pool: &'static Mempool,
    pool_iova: Iova,
    /// The mbuf posted in each receive descriptor (always one per descriptor).
    rx_bufs: Vec<Mbuf>,
    /// Next receive descriptor to check for DD.
    rx_next: usize,
    /// Inside a frame that spans buffers: drop until its EOP.
    rx_discard: bool,
    /// The mbuf of each in-flight transmit descriptor.
    tx_bufs: Vec<Option<Mbuf>>,
    /// Next free transmit descriptor (the value of TDT).
    tx_tail: usize,
    /// Oldest in-flight transmit descriptor.
    tx_clean: usize,
    /// In-flight transmit descriptors.
    tx_used: usize,
    mac: MacAddr,
    link: LinkState,
    stats: Arc<QueueStats>,
}

fn pool_addr(pool_iova: Iova, m: &Mbuf) -> u64 {
    pool_iova.offset(m.data_region_offset() as u64).0
}

impl<R: RegisterFile> E1000ePort<R> {
    /// Resets the device, brings the link up, reads the MAC address, and sets up
    /// and enables both rings, filling the receive ring from `pool`.
    ///
    /// `ring` must be at least [`RING_BYTES`], visible to the device at its IOVA;
    /// `pool` must be mapped at `pool_iova`. `name` (the PCI address) is used in
    /// errors.
    ///
    /// # Errors
    /// [`VfioError::PoolTooSmall`], [`VfioError::PoolEmpty`], or
    /// [`VfioError::Device`] if the reset does not complete or the MAC address is
    /// not valid.
    pub fn new(
        regs: R,
        ring: DmaMem,
        pool: &'static Mempool,
        pool_iova: Iova,
        name: &str,
    ) -> Result<Self, VfioError> {
        let dev_err = |what| VfioError::Device {
            pci: name.into(),
            what,
        };
        if pool.data_room() < RX_BUF_BYTES {
            return Err(VfioError::PoolTooSmall {
                pool: pool.name().into(),
                data_room: pool.data_room(),
                need: RX_BUF_BYTES,
            });
        }
        assert!(ring.len() >= RING_BYTES, "ring memory too small");

        // Reset (datasheet "Software Initialization Sequence"): mask interrupts,
        // stop bus mastering so no DMA is in flight, set CTRL.RST, wait 1 ms,
        // then poll until the bit self-clears and the NVM auto-read is done.
        regs.write32(regs::IMC, u32::MAX);
        regs.write32(
            regs::CTRL,
            regs.read32(regs::CTRL) | regs::CTRL_GIO_MASTER_DISABLE,
        );
        // Best effort: a device with a wedged master still gets reset below.
        let _ = wait_for(&regs, regs::STATUS, regs::STATUS_GIO_MASTER_ENABLE, 0, 10);
        regs.write32(regs::CTRL, regs.read32(regs::CTRL) | regs::CTRL_RST);
        std::thread::sleep(Duration::from_millis(1));
        if !wait_for(&regs, regs::CTRL, regs::CTRL_RST, 0, 100) {
            return Err(dev_err(
                "e1000e reset (CTRL.RST) did not complete in 100 ms",
            ));
        }
        // Not fatal: RAH0.AV below tells whether the address was loaded.
        let _ = wait_for(
            &regs,
            regs::EECD,
            regs::EECD_AUTO_RD,
            regs::EECD_AUTO_RD,
            10,
        );
        // Reset re-enables interrupt causes on some parts; mask again, clear ICR.
        regs.write32(regs::IMC, u32::MAX);
        let _ = regs.read32(regs::ICR);
        let ctrl = regs.read32(regs::CTRL) & !(regs::CTRL_PHY_RST | regs::CTRL_GIO_MASTER_DISABLE);
        regs.write32(regs::CTRL, ctrl | regs::CTRL_SLU | regs::CTRL_ASDE);

        let (ral, rah) = (regs.read32(regs::RAL0), regs.read32(regs::RAH0));
        if rah & regs::RAH_AV == 0 {
            return Err(dev_err(
                "e1000e receive address 0 is not valid (RAH0.AV clear)",
            ));
        }
        let [a, b, c, d] = ral.to_le_bytes();
        let [e, f, _, _] = rah.to_le_bytes();
        let mac = MacAddr([a, b, c, d, e, f]);
        for i in 0..regs::MTA_LEN {
            regs.write32(regs::MTA + 4 * i, 0);
        }

        // Receive ring: every descriptor gets a buffer.
        ring.zero(0, RING_BYTES);
        let mut rx_bufs = Vec::with_capacity(RX_DESCS);
        for i in 0..RX_DESCS {
            let m = pool.alloc().ok_or_else(|| VfioError::PoolEmpty {
                pool: pool.name().into(),
                need: RX_DESCS,
            })?;
            ring.write_u64(
                RX_RING_OFF + i * regs::DESC_BYTES + rxd::ADDR,
                pool_addr(pool_iova, &m),
            );
            rx_bufs.push(m);
        }
        let rx_base = ring.iova().offset(RX_RING_OFF as u64).0;
        regs.write32(regs::RDBAL, rx_base as u32);
        regs.write32(regs::RDBAH, (rx_base >> 32) as u32);
        regs.write32(regs::RDLEN, (RX_DESCS * regs::DESC_BYTES) as u32);
        regs.write32(regs::RDH, 0);
        regs.write32(regs::RDT, 0);
        // Promiscuous: a switch port must see every frame on the wire.
        regs.write32(
            regs::RCTL,
            regs::RCTL_EN
                | regs::RCTL_UPE
                | regs::RCTL_MPE
                | regs::RCTL_BAM
                | regs::RCTL_BSIZE_2048
                | regs::RCTL_SECRC,
        );
        // Descriptor contents before the tail that hands them over.
        fence(Ordering::Release);
        regs.write32(regs::RDT, (RX_DESCS - 1) as u32);

        let tx_base = ring.iova().offset(TX_RING_OFF as u64).0;
        regs.write32(regs::TDBAL, tx_base as u32);
        regs.write32(regs::TDBAH, (tx_base >> 32) as u32);
        regs.write32(regs::TDLEN, (TX_DESCS * regs::DESC_BYTES) as u32);
        regs.write32(regs::TDH, 0);
        regs.write32(regs::TDT, 0);
        regs.write32(regs::TIPG, regs::TIPG_DEFAULT);
        regs.write32(
            regs::TCTL,
            regs::TCTL_EN | regs::TCTL_PSP | regs::TCTL_CT_DEFAULT | regs::TCTL_COLD_FD,
        );

        let link = link_of(regs.read32(regs::STATUS));
        Ok(E1000ePort {
            regs,
            ring,
            pool,
            pool_iova,
            rx_bufs,
            rx_next: 0,
            rx_discard: false,
            tx_bufs: (0..TX_DESCS).map(|_| None).collect(),
            tx_tail: 0,
            tx_clean: 0,
            tx_used: 0,
            mac,
            link,
            stats: Arc::new(QueueStats::default()),
        })
    }

    /// The station address read from RAL0/RAH0.
    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    /// Frees the mbufs of transmit descriptors the hardware has finished.
    fn reclaim_tx(&mut self) {
        while self.tx_used > 0 {
            let d = TX_RING_OFF + self.tx_clean * regs::DESC_BYTES;
            if self.ring.read_u8(d + txd::STATUS) & txd::STATUS_DD == 0 {
                break;
            }
            // Acquire: the hardware has finished reading the buffer before we
            // hand it back to the pool for reuse.
            fence(Ordering::Acquire);
            self.tx_bufs[self.tx_clean] = None;
            self.tx_clean = (self.tx_clean + 1) % TX_DESCS;
            self.tx_used -= 1;
        }
    }
}

/// Polls `reg` until `reg & mask == want`, for up to `timeout_ms`.
fn wait_for<R: RegisterFile>(regs: &R, reg: usize, mask: u32, want: u32, timeout_ms: u64) -> bool {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    loop {
        if regs.read32(reg) & mask == want {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn link_of(status: u32) -> LinkState {
    if status & regs::STATUS_LU != 0 {
        LinkState::Up
    } else {
        LinkState::Down
    }
}

impl<R: RegisterFile> Port for E1000ePort<R> {
    fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        let mut n = 0;
        let mut rearmed = None;
        while !burst.is_full() {
            let i = self.rx_next;
            let d = RX_RING_OFF + i * regs::DESC_BYTES;
            let status = self.ring.read_u8(d + rxd::STATUS);
            if status & rxd::STATUS_DD == 0 {
                break;
            }
            // Acquire: length, errors and frame bytes are read after DD.
            fence(Ordering::Acquire);
            let len = self.ring.read_u16(d + rxd::LEN) as usize;
            let errors = self.ring.read_u8(d + rxd::ERRORS);
            let eop = status & rxd::STATUS_EOP != 0;
            let discarding = std::mem::replace(&mut self.rx_discard, !eop);
            let frame = if errors & rxd::ERRORS_FRAME != 0 {
                self.stats.rx_errors.inc();
                self.stats.drop_one(DropReason::Malformed);
                None
            } else if discarding || !eop || len > RX_BUF_BYTES as usize {
                // Only the first buffer of a multi-buffer frame counts as a drop.
                if !discarding {
                    self.stats.rx_errors.inc();
                    self.stats.drop_one(DropReason::Malformed);
                }
                None
            } else if let Some(fresh) = self.pool.alloc() {
                let mut m = std::mem::replace(&mut self.rx_bufs[i], fresh);
                // len <= RX_BUF_BYTES <= the pool's data room: cannot fail.
                let _ = m.set_len(len);
                Some(m)
            } else {
                self.stats.drop_one(DropReason::NoBuffers);
                None
            };
            // Re-arm: the buffer (fresh, or the old one when the frame was
            // dropped), with status, length and errors cleared.
            let addr = pool_addr(self.pool_iova, &self.rx_bufs[i]);
            self.ring.write_u64(d + rxd::ADDR, addr);
            self.ring.write_u64(d + rxd::LEN, 0);
            if let Some(m) = frame {
                burst.push(m);
                n += 1;
            }
            rearmed = Some(i);
            self.rx_next = (i + 1) % RX_DESCS;
        }
        if let Some(i) = rearmed {
            // Release: re-armed descriptors are visible before the tail moves.
            fence(Ordering::Release);
            self.regs.write32(regs::RDT, i as u32);
        }
        n
    }

    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        self.reclaim_tx();
        let free = TX_DESCS - 1 - self.tx_used;
        let take = burst.len().min(free);
        if take == 0 {
            return 0;
        }
        let start = self.tx_tail;
        for m in burst.drain(..take) {
            let len = m.len();
            if len == 0 || len > txd::MAX_LEN {
                self.stats.tx_errors.inc();
                self.stats.drop_one(DropReason::Malformed);
                continue;
            }
            let d = TX_RING_OFF + self.tx_tail * regs::DESC_BYTES;
            let cmd = txd::CMD_EOP | txd::CMD_IFCS | txd::CMD_RS;
            self.ring
                .write_u64(d + txd::ADDR, pool_addr(self.pool_iova, &m));
            // Second quadword: length, CSO 0, CMD, STATUS 0, CSS 0, special 0.
            self.ring
                .write_u64(d + txd::LEN, len as u64 | (u64::from(cmd) << 24));
            self.tx_bufs[self.tx_tail] = Some(m);
            self.tx_tail = (self.tx_tail + 1) % TX_DESCS;
            self.tx_used += 1;
        }
        if self.tx_tail != start {
            // Release: descriptors are written before the doorbell.
            fence(Ordering::Release);
            self.regs.write32(regs::TDT, self.tx_tail as u32);
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
        self.link = link_of(self.regs.read32(regs::STATUS));
        let missed = self.regs.read32(regs::MPC);
        if missed != 0 {
            self.stats.drop_n(DropReason::RxOverrun, missed.into());
        }
    }
}

impl<R: RegisterFile> Drop for E1000ePort<R> {
    fn drop(&mut self) {
        // Stop DMA before the rings and buffers are freed.
        self.regs.write32(regs::RCTL, 0);
        self.regs.write32(regs::TCTL, 0);
        self.regs.write32(regs::CTRL, regs::CTRL_RST);
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::Mutex;

    use dataplane::testutil::{eth_frame, mac};

    use super::*;
    use crate::pci::bar::FakeBar;
    use crate::vfio::dma::PoolWindow;

    const RING_IOVA: Iova = Iova(0x1000_0000);
    const POOL_IOVA: Iova = Iova(0x1_0000_0000);
    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    /// A fake 82574L: reset self-clears, a TDT write "sends" the new descriptors
    /// (recording the frames) and sets DD unless `stall_tx`, and `deliver` plays
    /// a frame arriving from the wire.
    struct Fake {
        bar: Arc<FakeBar>,
        ring: DmaMem,
        win: Arc<PoolWindow>,
        sent: Arc<Mutex<Vec<Vec<u8>>>>,
        stall_tx: Arc<AtomicBool>,
    }

    impl Fake {
        fn new(pool: &'static Mempool) -> Fake {
            let bar = Arc::new(FakeBar::new(0x2_0000));
            let ring = DmaMem::for_tests(RING_BYTES, RING_IOVA);
            let win = Arc::new(PoolWindow::new(pool, POOL_IOVA));
            let sent = Arc::new(Mutex::new(Vec::new()));
            let stall_tx = Arc::new(AtomicBool::new(false));
            bar.on_write(
                regs::CTRL,
                Box::new(|r, v| r.set32(regs::CTRL, v & !regs::CTRL_RST)),
            );
            bar.set32(regs::STATUS, regs::STATUS_LU);
            bar.set32(regs::EECD, regs::EECD_AUTO_RD);
            bar.set32(
                regs::RAL0,
                u32::from_le_bytes([MAC[0], MAC[1], MAC[2], MAC[3]]),
            );
            bar.set32(
                regs::RAH0,
                u32::from(MAC[4]) | u32::from(MAC[5]) << 8 | regs::RAH_AV,
            );
            let (r, w, s, st) = (ring.clone(), win.clone(), sent.clone(), stall_tx.clone());
            bar.on_write(
                regs::TDT,
                Box::new(move |regs_, tail| {
                    if st.load(Ordering::Relaxed) {
                        return;
                    }
                    let mut head = regs_.get32(regs::TDH) as usize;
                    while head != tail as usize {
                        let d = TX_RING_OFF + head * regs::DESC_BYTES;
                        let addr = r.read_u64(d + txd::ADDR);
                        let len = r.read_u16(d + txd::LEN) as usize;
                        s.lock().unwrap().push(w.read(addr, len));
                        r.write_u8(d + txd::STATUS, txd::STATUS_DD);
                        head = (head + 1) % TX_DESCS;
                    }
                    regs_.set32(regs::TDH, head as u32);
                }),
            );
            Fake {
                bar,
                ring,
                win,
                sent,
                stall_tx,
            }
        }

        /// A frame arrives: written into the descriptor at RDH if the driver gave
        /// the hardware one. Returns false when the ring had no free descriptor.
        fn deliver(&self, frame: &[u8], errors: u8) -> bool {
            let head = self.bar.read32(regs::RDH) as usize;
            if head == self.bar.read32(regs::RDT) as usize {
                return false;
            }
            let d = RX_RING_OFF + head * regs::DESC_BYTES;
            self.win.write(self.ring.read_u64(d + rxd::ADDR), frame);
            self.ring.write_u16(d + rxd::LEN, frame.len() as u16);
            self.ring.write_u8(d + rxd::ERRORS, errors);
            self.ring
                .write_u8(d + rxd::STATUS, rxd::STATUS_DD | rxd::STATUS_EOP);
            self.bar.set32(regs::RDH, ((head + 1) % RX_DESCS) as u32);
            true
        }

        fn port(&self, pool: &'static Mempool) -> E1000ePort<Arc<FakeBar>> {
            E1000ePort::new(self.bar.clone(), self.ring.clone(), pool, POOL_IOVA, "fake").unwrap()
        }
    }

    fn frame(n: u16) -> Vec<u8> {
        let mut f = eth_frame(mac(1), mac(2), 0x88b5, 46);
        f[14..16].copy_from_slice(&n.to_be_bytes());
        f
    }

    fn burst_of(pool: &'static Mempool, frames: impl IntoIterator<Item = Vec<u8>>) -> Burst {
        let mut b = Burst::new();
        for f in frames {
            let mut m = pool.alloc().unwrap();
            m.extend_from_slice(&f).unwrap();
            b.push(m);
        }
        b
    }

    #[test]
    fn init_resets_reads_mac_and_hands_all_but_one_rx_descriptor_over() {
        let pool = Mempool::for_tests(1024);
        let fake = Fake::new(pool);
        let port = fake.port(pool);
        assert_eq!(port.mac(), MacAddr(MAC));
        assert_eq!(port.link(), LinkState::Up);
        let rctl = fake.bar.read32(regs::RCTL);
        assert_eq!(
            rctl & (regs::RCTL_EN | regs::RCTL_UPE),
            regs::RCTL_EN | regs::RCTL_UPE
        );
        assert_eq!(fake.bar.read32(regs::RDT), (RX_DESCS - 1) as u32);
        assert_eq!(fake.bar.read32(regs::RDLEN), 8192);
        assert_eq!(fake.bar.read32(regs::TDBAL), RING_IOVA.0 as u32 + 8192);
        assert_eq!(fake.bar.read32(regs::TCTL) & regs::TCTL_EN, regs::TCTL_EN);
        assert_eq!(pool.in_use() as usize, RX_DESCS);
        // Every rx descriptor points into the pool at an mbuf's data start.
        let a0 = fake.ring.read_u64(RX_RING_OFF);
        assert!(a0 >= POOL_IOVA.0 && a0 < POOL_IOVA.0 + pool.region().len() as u64);
    }

    #[test]
    fn rx_of_a_device_written_descriptor_yields_the_frame() {
        let pool = Mempool::for_tests(1024);
        let fake = Fake::new(pool);
        let mut port = fake.port(pool);
        let mut b = Burst::new();
        assert_eq!(port.rx_burst(&mut b), 0);
        fake.bar.clear_writes();
        assert!(fake.deliver(&frame(7), 0));
        assert!(fake.deliver(&frame(8), 0));
        assert_eq!(port.rx_burst(&mut b), 2);
        assert_eq!(b[0].data(), &frame(7)[..]);
        assert_eq!(b[1].data(), &frame(8)[..]);
        // One tail write per burst: the last re-armed descriptor.
        assert_eq!(fake.bar.writes_to(regs::RDT), vec![1]);
        assert_eq!(fake.ring.read_u8(RX_RING_OFF + rxd::STATUS), 0);
    }

    #[test]
    fn tx_writes_legacy_descriptors_and_bumps_tdt_once_per_burst() {
        let pool = Mempool::for_tests(1024);
        let fake = Fake::new(pool);
        let mut port = fake.port(pool);
        fake.stall_tx.store(true, Ordering::Relaxed);
        let mut b = burst_of(pool, (0..3).map(frame));
        let addr0 = POOL_IOVA.0 + b[0].data_region_offset() as u64;
        fake.bar.clear_writes();
        assert_eq!(port.tx_burst(&mut b), 3);
        assert!(b.is_empty());
        assert_eq!(fake.bar.writes_to(regs::TDT), vec![3]);
        let d = TX_RING_OFF;
        assert_eq!(fake.ring.read_u64(d + txd::ADDR), addr0);
        assert_eq!(fake.ring.read_u16(d + txd::LEN), 60);
        assert_eq!(
            fake.ring.read_u8(d + txd::CMD),
            txd::CMD_EOP | txd::CMD_IFCS | txd::CMD_RS
        );
        assert_eq!(fake.ring.read_u8(d + txd::STATUS), 0);
    }

    #[test]
    fn tx_and_rx_wrap_around_the_rings() {
        let pool = Mempool::for_tests(2048);
        let fake = Fake::new(pool);
        let mut port = fake.port(pool);
        let mut next = 0u16;
        for _ in 0..40 {
            let mut b = burst_of(pool, (next..next + 32).map(frame));
            assert_eq!(port.tx_burst(&mut b), 32);
            next += 32;
        }
        let sent = fake.sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 1280);
        assert!(sent.iter().enumerate().all(|(i, f)| *f == frame(i as u16)));
        port.housekeeping();
        let mut got = 0u16;
        let mut b = Burst::new();
        for _ in 0..40 {
            for k in 0..32 {
                assert!(fake.deliver(&frame(got + k), 0));
            }
            assert_eq!(port.rx_burst(&mut b), 32);
            for m in b.drain(..) {
                assert_eq!(m.data(), &frame(got)[..]);
                got += 1;
            }
        }
        // Every buffer is back: only the rx ring's own remain in use.
        drop(b);
        assert_eq!(pool.in_use() as usize, RX_DESCS);
    }

    #[test]
    fn full_tx_ring_leaves_the_rest_of_the_burst_in_order() {
        let pool = Mempool::for_tests(2048);
        let fake = Fake::new(pool);
        let mut port = fake.port(pool);
        fake.stall_tx.store(true, Ordering::Relaxed);
        let mut taken = 0;
        let mut last = Burst::new();
        for i in 0..20u16 {
            let mut b = burst_of(pool, (i * 32..i * 32 + 32).map(frame));
            taken += port.tx_burst(&mut b);
            last = b;
        }
        assert_eq!(taken, TX_DESCS - 1);
        // The last burst hit the full ring: nothing taken, order kept.
        assert_eq!(last.len(), 32);
        assert_eq!(last[0].data(), &frame(19 * 32)[..]);
        // Completions free slots again.
        fake.stall_tx.store(false, Ordering::Relaxed);
        fake.bar.write32(regs::TDT, fake.bar.read32(regs::TDT));
        assert_eq!(port.tx_burst(&mut last), 32);
    }

    #[test]
    fn rx_descriptor_with_error_bits_is_a_counted_drop_and_rearmed() {
        let pool = Mempool::for_tests(1024);
        let fake = Fake::new(pool);
        let mut port = fake.port(pool);
        assert!(fake.deliver(&frame(1), 1 << 0)); // CE: CRC error
        assert!(fake.deliver(&frame(2), 0));
        let mut b = Burst::new();
        assert_eq!(port.rx_burst(&mut b), 1);
        assert_eq!(b[0].data(), &frame(2)[..]);
        assert_eq!(port.stats().drops(DropReason::Malformed), 1);
        assert_eq!(port.stats().rx_errors.get(), 1);
        assert_eq!(fake.ring.read_u8(RX_RING_OFF + rxd::STATUS), 0);
        assert_eq!(pool.in_use() as usize, RX_DESCS + 1);
    }

    #[test]
    fn housekeeping_follows_status_lu_and_counts_missed_frames() {
        let pool = Mempool::for_tests(1024);
        let fake = Fake::new(pool);
        let mut port = fake.port(pool);
        fake.bar.set32(regs::STATUS, 0);
        fake.bar.set32(regs::MPC, 3);
        port.housekeeping();
        assert_eq!(port.link(), LinkState::Down);
        assert_eq!(port.stats().drops(DropReason::RxOverrun), 3);
    }
}
