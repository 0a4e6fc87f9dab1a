//! AF_PACKET sockets with a TPACKET_V3 receive ring and a transmit ring, both in
//! one shared mapping (Documentation/networking/packet_mmap.rst).
//!
//! Receive ring: `block_count` blocks of `block_size` bytes. Each block starts with
//! a `tpacket_block_desc`; the kernel fills a block with variable-length frames
//! (`tpacket3_hdr` + data), then hands the whole block over by setting
//! `block_status` to `TP_STATUS_USER`. We give it back by writing
//! `TP_STATUS_KERNEL`.
//!
//! Transmit ring: with `TPACKET_V3` the transmit ring is a ring of fixed-size
//! frames, each starting with a `tpacket3_hdr` whose `tp_next_offset` must be 0;
//! the frame data starts `TPACKET3_HDRLEN - sizeof(sockaddr_ll)` bytes in. A frame
//! we fill is marked `TP_STATUS_SEND_REQUEST`; one `send()` makes the kernel
//! transmit every requested frame, and it marks each `TP_STATUS_AVAILABLE` again
//! once the frame's buffer is released.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use rustix::net::{AddressFamily, SendFlags, SocketFlags, SocketType};

use super::packet_fd;

/// Offset of `block_status` in `tpacket_block_desc` (after `version` and
/// `offset_to_priv`).
const BLOCK_STATUS_OFF: usize = 8;
/// Offset of `tp_status` in `tpacket3_hdr`.
const FRAME_STATUS_OFF: usize = 20;
/// Offset of `tp_snaplen` in `tpacket3_hdr`.
const FRAME_SNAPLEN_OFF: usize = 12;
/// Offset of `tp_len` in `tpacket3_hdr`.
const FRAME_LEN_OFF: usize = 16;
/// Where transmit data starts in a frame: `TPACKET3_HDRLEN - sizeof(sockaddr_ll)`
/// (af_packet.c `tpacket_parse_header`, without `PACKET_TX_HAS_OFF`).
pub(crate) const TX_DATA_OFF: usize = libc::TPACKET3_HDRLEN - size_of::<libc::sockaddr_ll>();

const _: () = assert!(TX_DATA_OFF == 48);

/// `PACKET_VNET_HDR` (linux/if_packet.h): every frame, received or sent,
/// is preceded by a `struct virtio_net_hdr`.
pub(crate) const PACKET_VNET_HDR: libc::c_int = 15;
const _: () = assert!(size_of::<libc::tpacket3_hdr>() == 48);

/// Shape of one ring: `block_count` blocks of `block_size` bytes, each cut into
/// `block_size / frame_size` frames (for the V3 receive ring the frame size only
/// bounds the kernel's bookkeeping; frames are variable-length).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RingLayout {
    /// Bytes per block; a multiple of the page size.
    pub block_size: usize,
    /// Blocks in the ring.
    pub block_count: usize,
    /// Bytes per frame; a multiple of 16.
    pub frame_size: usize,
}

impl RingLayout {
    fn frames_per_block(&self) -> usize {
        self.block_size.checked_div(self.frame_size).unwrap_or(0)
    }

    /// Frames in the whole ring.
    pub(crate) fn frame_count(&self) -> usize {
        self.frames_per_block() * self.block_count
    }

    /// Bytes the ring occupies in the mapping.
    pub(crate) fn len_bytes(&self) -> usize {
        self.block_size * self.block_count
    }

    fn to_req3(self, retire_blk_tov_ms: u32) -> io::Result<libc::tpacket_req3> {
        let u =
            |v: usize| u32::try_from(v).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
        Ok(libc::tpacket_req3 {
            tp_block_size: u(self.block_size)?,
            tp_block_nr: u(self.block_count)?,
            tp_frame_size: u(self.frame_size)?,
            tp_frame_nr: u(self.frame_count())?,
            tp_retire_blk_tov: retire_blk_tov_ms,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        })
    }
}

/// Kernel drop statistics since the previous read (reading resets them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TpStats {
    /// Frames that reached the socket, including dropped ones.
    pub packets: u32,
    /// Frames dropped because the receive ring was full.
    pub drops: u32,
}

/// An `AF_PACKET`, `SOCK_RAW` socket, non-blocking and close-on-exec.
#[derive(Debug)]
pub(crate) struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// Opens the socket with protocol 0, so it receives nothing until [`bind`].
    /// `EPERM` without `CAP_NET_RAW`.
    ///
    /// [`bind`]: PacketSocket::bind
    pub(crate) fn new() -> io::Result<PacketSocket> {
        let fd = rustix::net::socket_with(
            AddressFamily::PACKET,
            SocketType::RAW,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )?;
        Ok(PacketSocket { fd })
    }

    /// The descriptor (for interface ioctls).
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Sets an integer `SOL_PACKET` option.
    pub(crate) fn set_int(&self, opt: libc::c_int, val: libc::c_int) -> io::Result<()> {
        packet_fd::set_option(self.fd(), opt, &val)
    }

    /// Selects `TPACKET_V3` for both rings. Must precede the ring set-up.
    pub(crate) fn set_version_v3(&self) -> io::Result<()> {
        self.set_int(
            libc::PACKET_VERSION,
            libc::tpacket_versions::TPACKET_V3 as libc::c_int,
        )
    }

    /// Allocates the receive ring; the kernel hands a partly filled block over
    /// after `retire_blk_tov_ms` (0: the kernel's default).
    pub(crate) fn set_rx_ring(
        &self,
        layout: &RingLayout,
        retire_blk_tov_ms: u32,
    ) -> io::Result<()> {
        packet_fd::set_option(
            self.fd(),
            libc::PACKET_RX_RING,
            &layout.to_req3(retire_blk_tov_ms)?,
        )
    }

    /// Allocates the transmit ring (the V3 block-retire fields must be 0 here).
    pub(crate) fn set_tx_ring(&self, layout: &RingLayout) -> io::Result<()> {
        packet_fd::set_option(self.fd(), libc::PACKET_TX_RING, &layout.to_req3(0)?)
    }

    /// Maps both rings (receive ring first, as the kernel lays them out).
    pub(crate) fn map_rings(&self, rx: RingLayout, tx: RingLayout) -> io::Result<RingMap> {
        let len = rx.len_bytes() + tx.len_bytes();
        // SAFETY: a fresh shared mapping chosen by the kernel (no fixed address, so
        // no existing memory is replaced); the kernel checks that `len` equals the
        // size of the rings set up on this socket.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidData))?;
        Ok(RingMap { base, len, rx, tx })
    }

    /// Binds to interface `ifindex`, receiving every protocol (`ETH_P_ALL`).
    pub(crate) fn bind(&self, ifindex: u32) -> io::Result<()> {
        packet_fd::bind(self.fd(), ifindex, libc::ETH_P_ALL as u16)
    }

    /// Binds to interface `ifindex` for transmitting only: with protocol 0 the
    /// kernel hands the socket no received frame at all.
    pub(crate) fn bind_tx_only(&self, ifindex: u32) -> io::Result<()> {
        packet_fd::bind(self.fd(), ifindex, 0)
    }

    /// Puts interface `ifindex` into promiscuous mode for as long as this socket is
    /// open (the kernel counts such memberships per interface).
    pub(crate) fn add_promisc(&self, ifindex: u32) -> io::Result<()> {
        packet_fd::add_promisc(self.fd(), ifindex)
    }

    /// Joins hash fanout group `group`, or with `group == None` creates a group
    /// with a kernel-chosen unused id. Returns the group id. The socket must be
    /// bound to an interface that is up.
    pub(crate) fn join_fanout_hash(&self, group: Option<u16>) -> io::Result<u16> {
        let (id, flags) = match group {
            Some(id) => (id, 0),
            None => (0, libc::PACKET_FANOUT_FLAG_UNIQUEID),
        };
        let arg = (libc::PACKET_FANOUT_HASH | flags) << 16 | u32::from(id);
        self.set_int(libc::PACKET_FANOUT, arg as libc::c_int)?;
        let mut got: libc::c_int = 0;
        packet_fd::get_option(self.fd(), libc::PACKET_FANOUT, &mut got)?;
        Ok(got as u32 as u16)
    }

    /// Reads and resets the kernel's receive statistics.
    pub(crate) fn take_stats(&self) -> io::Result<TpStats> {
        let mut st = libc::tpacket_stats_v3 {
            tp_packets: 0,
            tp_drops: 0,
            tp_freeze_q_cnt: 0,
        };
        packet_fd::get_option(self.fd(), libc::PACKET_STATISTICS, &mut st)?;
        Ok(TpStats {
            packets: st.tp_packets,
            drops: st.tp_drops,
        })
    }

    /// Asks the kernel to transmit every frame marked `TP_STATUS_SEND_REQUEST`,
    /// without waiting. One syscall for the whole burst.
    #[inline]
    pub(crate) fn kick_tx(&self) -> io::Result<()> {
        rustix::net::send(&self.fd, &[], SendFlags::DONTWAIT)?;
        Ok(())
    }
}

/// The shared mapping of a socket's receive and transmit rings.
///
/// Invariant: `base` maps `len == rx.len_bytes() + tx.len_bytes()` bytes shared
/// with the kernel until `Drop`; the receive ring is at offset 0, the transmit
/// ring at `rx.len_bytes()`. Ownership of each rx block / tx frame is decided by
/// its status word, which both sides access atomically; bytes of an element are
/// only touched by the side that owns it.
#[derive(Debug)]
pub(crate) struct RingMap {
    base: NonNull<u8>,
    len: usize,
    rx: RingLayout,
    tx: RingLayout,
}

// SAFETY: the mapping is owned by this value alone (the kernel side aside), so
// moving it to another thread moves that ownership; it is not `Sync`, so only one
// thread uses it at a time.
unsafe impl Send for RingMap {}

impl RingMap {
    /// The status word at byte `off` of the mapping.
    ///
    /// `off` must be 4-aligned and `off + 4 <= len` (checked by callers).
    fn status_at(&self, off: usize) -> &AtomicU32 {
        debug_assert!(off.is_multiple_of(4) && off + 4 <= self.len);
        // Blocks are page-aligned, frames 16-byte multiples, status fields at
        // 4-aligned offsets; the kernel uses only 32-bit loads/stores on it.
        // SAFETY: in bounds and 4-aligned (above), so an atomic view is sound;
        // the reference lives no longer than `&self`, the mapping as `self`.
        unsafe { AtomicU32::from_ptr(self.base.as_ptr().add(off).cast::<u32>()) }
    }

    /// Number of receive blocks.
    pub(crate) fn rx_block_count(&self) -> usize {
        self.rx.block_count
    }

    /// Receive block `idx` if the kernel has handed it to us (`TP_STATUS_USER`).
    /// The kernel does not touch a block it has handed over until
    /// [`RingMap::rx_release`].
    #[inline]
    pub(crate) fn rx_block(&self, idx: usize) -> Option<&[u8]> {
        if idx >= self.rx.block_count {
            return None;
        }
        let off = idx * self.rx.block_size;
        // Acquire: pairs with the kernel's write barrier before it sets
        // TP_STATUS_USER, so the frames it wrote are visible to us.
        let status = self
            .status_at(off + BLOCK_STATUS_OFF)
            .load(Ordering::Acquire);
        if status & libc::TP_STATUS_USER == 0 {
            return None;
        }
        // `rx_release` needs `&mut self`, so the block stays ours while this
        // shared borrow of `self` lives.
        // SAFETY: [off, off + block_size) is inside the receive ring (idx <
        // block_count) and ours (status USER): the kernel does not write it.
        Some(unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(off), self.rx.block_size) })
    }

    /// Returns receive block `idx` to the kernel.
    #[inline]
    pub(crate) fn rx_release(&mut self, idx: usize) {
        if idx >= self.rx.block_count {
            return;
        }
        let off = idx * self.rx.block_size;
        // Release: our reads of the block complete before the kernel may refill it.
        self.status_at(off + BLOCK_STATUS_OFF)
            .store(libc::TP_STATUS_KERNEL, Ordering::Release);
    }

    /// Frames in the transmit ring.
    pub(crate) fn tx_frame_count(&self) -> usize {
        self.tx.frame_count()
    }

    /// Largest frame a transmit slot holds.
    pub(crate) fn tx_data_capacity(&self) -> usize {
        self.tx.frame_size.saturating_sub(TX_DATA_OFF)
    }

    fn tx_frame_off(&self, idx: usize) -> Option<usize> {
        let fpb = self.tx.frames_per_block();
        if idx >= self.tx.frame_count() || fpb == 0 {
            return None;
        }
        // Frames never straddle blocks (af_packet.c `packet_lookup_frame`).
        Some(
            self.rx.len_bytes()
                + (idx / fpb) * self.tx.block_size
                + (idx % fpb) * self.tx.frame_size,
        )
    }

    /// Copies `prefix` (a virtio-net header with `PACKET_VNET_HDR`, else
    /// empty) and `frame` into transmit slot `idx` and marks it for sending, if
    /// the slot is free (the kernel is done with it) and both fit. Returns
    /// whether it was queued.
    #[inline]
    pub(crate) fn tx_queue(&mut self, idx: usize, prefix: &[u8], frame: &[u8]) -> bool {
        let Some(off) = self.tx_frame_off(idx) else {
            return false;
        };
        let total = prefix.len() + frame.len();
        if total > self.tx_data_capacity() {
            return false;
        }
        let status = self.status_at(off + FRAME_STATUS_OFF);
        // Acquire: the kernel's completion (AVAILABLE) happens after it last read
        // the frame, so we may overwrite it.
        let busy =
            libc::TP_STATUS_SEND_REQUEST | libc::TP_STATUS_SENDING | libc::TP_STATUS_WRONG_FORMAT;
        if status.load(Ordering::Acquire) & busy != 0 {
            return false;
        }
        let len = total as u32;
        // The header words written are 4-aligned inside the 48-byte header, the
        // data fits after it (checked above), and neither overlaps the status.
        // SAFETY: the slot [off, off + frame_size) is inside the transmit ring
        // (`tx_frame_off`) and ours (AVAILABLE: the kernel leaves it alone).
        unsafe {
            let p = self.base.as_ptr().add(off);
            p.cast::<u32>().write(0); // tp_next_offset: must be 0 on transmit
            p.add(FRAME_SNAPLEN_OFF).cast::<u32>().write(len);
            p.add(FRAME_LEN_OFF).cast::<u32>().write(len);
            let data = p.add(TX_DATA_OFF);
            std::ptr::copy_nonoverlapping(prefix.as_ptr(), data, prefix.len());
            std::ptr::copy_nonoverlapping(frame.as_ptr(), data.add(prefix.len()), frame.len());
        }
        // Release: the header and data are visible before the kernel sees the
        // request (the kick syscall that follows orders this as well).
        self.status_at(off + FRAME_STATUS_OFF)
            .store(libc::TP_STATUS_SEND_REQUEST, Ordering::Release);
        true
    }
}

impl Drop for RingMap {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly the mapping created in `map_rings`, and
        // no borrow of it can outlive `self`.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}
