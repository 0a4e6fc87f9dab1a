//! Packet buffers: a unique handle ([`Mbuf`]) to one slot of a [`Mempool`], which
//! returns the slot to its pool when dropped.
//!
//! Layer: buffers, memory boundary: this module turns raw pool memory into safe
//! byte slices. On the packet path.
//!
//! Each slot starts with a 64-byte `MbufHdr` (one cache line: pool, index, data
//! offset and length, metadata), followed by the headroom and the data room. The
//! handle itself is one pointer, so a burst of 32 is 256 bytes.
#![allow(unsafe_code)]

use std::ptr::NonNull;

use crate::mempool::Mempool;
use crate::wire::{Gso, PartialCsum};

/// Size of the in-buffer header, one cache line.
pub const HDR_BYTES: usize = 64;

/// Per-buffer metadata, stored at the start of each slot.
#[repr(C, align(64))]
pub(crate) struct MbufHdr {
    pool: &'static Mempool,
    idx: u32,
    /// Offset of the first data byte from the end of the header.
    data_off: u16,
    /// Bytes of packet data.
    data_len: u16,
    /// headroom + data room.
    buf_len: u16,
    /// Ingress port, set by whoever received the frame.
    port: u16,
    /// Checksum offload metadata: the L4 checksum is still to be completed.
    /// Travels with the frame (kept by `try_clone`); reset on allocation.
    partial_csum: Option<PartialCsum>,
    /// Segmentation offload metadata: the frame is a TSO frame, to be cut
    /// into segments by whoever cannot pass it on whole. Travels with the
    /// frame (kept by `try_clone`); reset on allocation.
    gso: Option<Gso>,
    /// The pool share this buffer is charged to ([`crate::mempool::PoolShare`]),
    /// or [`NO_SHARE`]. Always `NO_SHARE` while the slot is free: set by a
    /// charged allocation, cleared when the buffer is refunded on free, so a
    /// plain allocation need not write it.
    share: u16,
}

impl MbufHdr {
    /// Marks the buffer as charged to no share (it is being freed).
    pub(crate) fn clear_share(&mut self) {
        self.share = NO_SHARE;
    }
}

/// [`MbufHdr::share`] of a buffer charged to no share.
pub(crate) const NO_SHARE: u16 = u16::MAX;

const _: () = assert!(std::mem::size_of::<MbufHdr>() == HDR_BYTES);

impl MbufHdr {
    pub(crate) fn new(pool: &'static Mempool, idx: u32, headroom: u16, buf_len: u16) -> MbufHdr {
        MbufHdr {
            pool,
            idx,
            data_off: headroom,
            data_len: 0,
            buf_len,
            port: u16::MAX,
            partial_csum: None,
            gso: None,
            share: NO_SHARE,
        }
    }
}

/// Error for an operation that does not fit the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("mbuf has no room: wanted {wanted} bytes, {room} available")]
pub struct NoRoom {
    /// Bytes wanted.
    pub wanted: usize,
    /// Bytes available.
    pub room: usize,
}

/// A unique handle to one packet buffer.
///
/// Invariant: `hdr` points to an initialised header inside a live, `'static` pool
/// region; this handle is the only one for its slot (the slot is off the free list)
/// until it is dropped, which returns the slot.
pub struct Mbuf {
    hdr: NonNull<MbufHdr>,
}

// SAFETY: an Mbuf exclusively owns its slot; moving it to another thread moves that
// ownership. The pool it refers to is `Sync`.
unsafe impl Send for Mbuf {}
// SAFETY: `&Mbuf` only allows reads of the slot.
unsafe impl Sync for Mbuf {}

impl Mbuf {
    /// Creates the handle for a slot just taken off the free list, resetting its
    /// data window to empty at `headroom`.
    ///
    /// # Safety
    /// `hdr` must point to an initialised header of a slot that was just removed from
    /// its pool's free list, so that no other `Mbuf` for it exists.
    #[inline]
    pub(crate) unsafe fn from_raw_reset(hdr: NonNull<MbufHdr>, headroom: u16) -> Mbuf {
        let mut m = Mbuf { hdr };
        let h = m.hdr_mut();
        h.data_off = headroom;
        h.data_len = 0;
        h.port = u16::MAX;
        h.partial_csum = None;
        h.gso = None;
        m
    }

    #[inline]
    fn hdr(&self) -> &MbufHdr {
        // SAFETY: see the type invariant: the header is live and we own the slot.
        unsafe { self.hdr.as_ref() }
    }

    #[inline]
    fn hdr_mut(&mut self) -> &mut MbufHdr {
        // SAFETY: see the type invariant; `&mut self` makes the access unique.
        unsafe { self.hdr.as_mut() }
    }

    #[inline]
    fn buf_ptr(&self) -> *mut u8 {
        // SAFETY: the buffer area follows the 64-byte header in the same slot.
        unsafe { self.hdr.as_ptr().cast::<u8>().add(HDR_BYTES) }
    }

    /// The packet bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        let h = self.hdr();
        // SAFETY: data_off + data_len <= buf_len is maintained by every mutator, and
        // buf_len bytes follow the header inside the slot; we own the slot.
        unsafe {
            std::slice::from_raw_parts(self.buf_ptr().add(h.data_off as usize), h.data_len as usize)
        }
    }

    /// The packet bytes, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let (off, len) = (self.hdr().data_off as usize, self.hdr().data_len as usize);
        // SAFETY: as in `data`; `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.buf_ptr().add(off), len) }
    }

    /// Everything from the data start to the end of the buffer, for receiving into;
    /// follow with [`Mbuf::set_len`].
    #[inline]
    pub fn room_mut(&mut self) -> &mut [u8] {
        let off = self.hdr().data_off as usize;
        let room = self.hdr().buf_len as usize - off;
        // SAFETY: [off, buf_len) lies inside the slot's buffer area; unique access.
        unsafe { std::slice::from_raw_parts_mut(self.buf_ptr().add(off), room) }
    }

    /// Bytes of packet data.
    #[inline]
    pub fn len(&self) -> usize {
        self.hdr().data_len as usize
    }

    /// True if there is no packet data.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes free in front of the data.
    #[inline]
    pub fn headroom(&self) -> usize {
        self.hdr().data_off as usize
    }

    /// Bytes free after the data.
    #[inline]
    pub fn tailroom(&self) -> usize {
        let h = self.hdr();
        (h.buf_len - h.data_off - h.data_len) as usize
    }

    /// Largest packet this buffer can hold from the current data start.
    #[inline]
    pub fn capacity(&self) -> usize {
        let h = self.hdr();
        (h.buf_len - h.data_off) as usize
    }

    /// Sets the data length (after writing through [`Mbuf::room_mut`]).
    ///
    /// # Errors
    /// [`NoRoom`] if `len` exceeds [`Mbuf::capacity`]; the length is unchanged.
    #[inline]
    pub fn set_len(&mut self, len: usize) -> Result<(), NoRoom> {
        let cap = self.capacity();
        if len > cap {
            return Err(NoRoom {
                wanted: len,
                room: cap,
            });
        }
        self.hdr_mut().data_len = len as u16;
        Ok(())
    }

    /// Appends bytes after the data.
    ///
    /// # Errors
    /// [`NoRoom`] if they do not fit; nothing is written.
    #[inline]
    pub fn extend_from_slice(&mut self, bytes: &[u8]) -> Result<(), NoRoom> {
        let (len, room) = (self.len(), self.tailroom());
        if bytes.len() > room {
            return Err(NoRoom {
                wanted: bytes.len(),
                room,
            });
        }
        self.room_mut()[len..len + bytes.len()].copy_from_slice(bytes);
        self.hdr_mut().data_len += bytes.len() as u16;
        Ok(())
    }

    /// Grows the data by `n` bytes at the front (into the headroom) and returns them.
    ///
    /// # Errors
    /// [`NoRoom`] if the headroom is smaller than `n`.
    #[inline]
    pub fn prepend(&mut self, n: usize) -> Result<&mut [u8], NoRoom> {
        let head = self.headroom();
        if n > head {
            return Err(NoRoom {
                wanted: n,
                room: head,
            });
        }
        let h = self.hdr_mut();
        // n <= data_off, so neither wraps: data_len + n <= data_off +
        // data_len <= buf_len.
        h.data_off -= n as u16;
        h.data_len += n as u16;
        // Offsets count from the data start, which moved back by `n`.
        // Tested first: most frames carry none.
        if let Some(p) = h.partial_csum {
            h.partial_csum = p
                .start
                .checked_add(n as u16)
                .map(|start| PartialCsum { start, ..p });
        }
        let off = usize::from(h.data_off);
        // SAFETY: [off, off + n) is the front of the data window, which
        // lies inside the slot's buffer area (data_off + data_len <= buf_len,
        // and n <= data_len now); `&mut self` makes the access unique. The
        // same slice as `&mut self.data_mut()[..n]` without the bounds check
        // that the compiler cannot drop.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.buf_ptr().add(off), n) })
    }

    /// Removes `n` bytes from the front of the data (at most all of it).
    #[inline]
    pub fn adj(&mut self, n: usize) {
        let h = self.hdr_mut();
        let len = usize::from(h.data_len);
        let rest = len.saturating_sub(n);
        let n = (len - rest) as u16;
        h.data_off += n;
        h.data_len = rest as u16;
        // Offsets count from the data start; a region cut into is
        // meaningless. Tested first: most frames carry none.
        if let Some(p) = h.partial_csum {
            h.partial_csum = p
                .start
                .checked_sub(n)
                .map(|start| PartialCsum { start, ..p });
        }
    }

    /// Removes `n` bytes from the end of the data (at most all of it).
    #[inline]
    pub fn trim(&mut self, n: usize) {
        let h = self.hdr_mut();
        h.data_len = usize::from(h.data_len).saturating_sub(n) as u16;
    }

    /// Ingress port number recorded by the receiver (`u16::MAX` if unset).
    #[inline]
    pub fn port(&self) -> u16 {
        self.hdr().port
    }

    /// Records the ingress port.
    #[inline]
    pub fn set_port(&mut self, port: u16) {
        self.hdr_mut().port = port;
    }

    /// Checksum offload metadata: `Some` while the frame's TCP/UDP checksum
    /// field holds only the pseudo-header sum (reset to `None` on allocation).
    #[inline]
    pub fn partial_csum(&self) -> Option<PartialCsum> {
        self.hdr().partial_csum
    }

    /// Records (or clears) checksum offload metadata. Offsets count from the
    /// data start; [`Mbuf::prepend`] and [`Mbuf::adj`] keep them in step.
    /// Callers validate untrusted offsets first ([`PartialCsum::new_checked`]).
    #[inline]
    pub fn set_partial_csum(&mut self, p: Option<PartialCsum>) {
        self.hdr_mut().partial_csum = p;
    }

    /// Segmentation offload metadata: `Some` for a TSO frame that is larger
    /// than one wire frame (reset to `None` on allocation).
    #[inline]
    pub fn gso(&self) -> Option<Gso> {
        self.hdr().gso
    }

    /// Records (or clears) segmentation offload metadata. The frame's headers
    /// are parsed again when it is segmented ([`crate::wire::TsoPlan`]), so
    /// [`Mbuf::prepend`] and [`Mbuf::adj`] need not adjust anything.
    #[inline]
    pub fn set_gso(&mut self, g: Option<Gso>) {
        self.hdr_mut().gso = g;
    }

    /// Completes a pending partial checksum in software and clears the
    /// metadata. Returns true if a checksum was written; false if there was
    /// none pending, or its offsets no longer fit the data (e.g. after
    /// [`Mbuf::trim`]), in which case the frame is left alone.
    #[inline]
    pub fn complete_csum(&mut self) -> bool {
        match self.hdr_mut().partial_csum.take() {
            Some(p) => p.complete(self.data_mut()),
            None => false,
        }
    }

    /// The pool this buffer belongs to.
    #[inline]
    pub fn pool(&self) -> &'static Mempool {
        self.hdr().pool
    }

    /// Index of this buffer's slot in its pool.
    #[inline]
    pub fn slot_index(&self) -> u32 {
        self.hdr().idx
    }

    /// Offset of the first data byte from the start of the pool's region (for DMA:
    /// add the IOVA at which the region is mapped).
    #[inline]
    pub fn data_region_offset(&self) -> usize {
        self.slot_index() as usize * self.pool().stride() + HDR_BYTES + self.headroom()
    }

    /// Gives up the handle without returning the slot to its pool, for the pool's
    /// bulk free ([`crate::mempool::free_front`]), which puts the index back
    /// itself.
    ///
    /// Only for buffers of pools without shares (a charged buffer refunds
    /// its share on drop; `free_front` leaves those to drop).
    #[inline]
    pub(crate) fn into_slot_index(self) -> u32 {
        let idx = self.slot_index();
        std::mem::forget(self);
        idx
    }

    /// Charges this buffer (just allocated, charged to nothing) to share
    /// `share` of its pool.
    #[inline]
    pub(crate) fn set_share(&mut self, share: u16) {
        debug_assert_eq!(self.hdr().share, NO_SHARE);
        self.hdr_mut().share = share;
    }

    /// Whether this buffer is charged to a share of its pool that is used up
    /// now, so that [`Mbuf::try_clone`] fails for that reason rather than an
    /// empty pool. For counting the drop; off the packet path's common case.
    #[cold]
    pub fn share_exhausted(&self) -> bool {
        let share = self.hdr().share;
        share != NO_SHARE && self.pool().share_exhausted(share)
    }

    /// A copy of this packet in a new buffer from the same pool (data, ingress
    /// port and checksum offload metadata), or None if the pool is empty.
    ///
    /// A buffer charged to a port's share of its pool
    /// ([`crate::mempool::PoolShare`]) has its copy charged to the same share,
    /// and gets None when that share is used up ([`Mbuf::share_exhausted`]
    /// tells the two apart): a frame flooded to many ports costs its sender,
    /// not the pool's other users.
    ///
    /// Always inlined: the flood loops that call it per copy count about 16
    /// instructions per frame more with it out of line
    /// (`benches/callgrind.sh`, case `flood`).
    #[inline(always)]
    pub fn try_clone(&self) -> Option<Mbuf> {
        let share = self.hdr().share;
        let mut m = if share == NO_SHARE {
            self.pool().alloc()?
        } else {
            self.pool().alloc_charged(share).ok()?
        };
        let len = self.len();
        if len > m.capacity() {
            return None;
        }
        m.room_mut()[..len].copy_from_slice(self.data());
        m.hdr_mut().data_len = len as u16;
        m.hdr_mut().port = self.port();
        m.hdr_mut().partial_csum = self.partial_csum();
        m.hdr_mut().gso = self.gso();
        Some(m)
    }
}

impl Drop for Mbuf {
    #[inline]
    fn drop(&mut self) {
        let h = self.hdr();
        h.pool.put(h.idx, h.share);
    }
}

impl std::fmt::Debug for Mbuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mbuf")
            .field("pool", &self.pool().name())
            .field("slot", &self.slot_index())
            .field("len", &self.len())
            .field("port", &self.port())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepend_adj_and_trim_move_the_data_window() {
        let pool = Mempool::for_tests(8);
        let mut m = pool.alloc().unwrap();
        m.extend_from_slice(&[1, 2, 3, 4]).unwrap();
        m.prepend(2).unwrap().copy_from_slice(&[9, 9]);
        assert_eq!(m.data(), &[9, 9, 1, 2, 3, 4]);
        assert_eq!(m.headroom(), 126);
        m.adj(3);
        assert_eq!(m.data(), &[2, 3, 4]);
        m.trim(1);
        assert_eq!(m.data(), &[2, 3]);
        m.adj(100);
        assert!(m.is_empty());
    }

    #[test]
    fn oversized_writes_are_refused_without_change() {
        let pool = Mempool::for_tests(8);
        let mut m = pool.alloc().unwrap();
        assert_eq!(
            m.extend_from_slice(&[0; 3000]),
            Err(NoRoom {
                wanted: 3000,
                room: 2048
            })
        );
        assert!(m.set_len(2049).is_err());
        assert!(m.prepend(129).is_err());
        assert!(m.is_empty());
        m.set_len(2048).unwrap();
        assert_eq!(m.tailroom(), 0);
    }

    #[test]
    fn reallocated_buffer_is_reset() {
        let pool = Mempool::for_tests(1);
        let mut m = pool.alloc().unwrap();
        m.extend_from_slice(&[1; 10]).unwrap();
        m.set_port(3);
        m.set_partial_csum(Some(PartialCsum {
            start: 2,
            offset: 0,
        }));
        m.adj(4);
        drop(m);
        let m = pool.alloc().unwrap();
        assert_eq!(
            (m.len(), m.headroom(), m.port(), m.partial_csum()),
            (0, 128, u16::MAX, None)
        );
    }

    #[test]
    fn clone_copies_data_into_a_new_slot() {
        let pool = Mempool::for_tests(4);
        let mut a = pool.alloc().unwrap();
        a.extend_from_slice(b"hello").unwrap();
        a.set_port(2);
        let p = PartialCsum {
            start: 1,
            offset: 2,
        };
        a.set_partial_csum(Some(p));
        let b = a.try_clone().unwrap();
        assert_ne!(a.slot_index(), b.slot_index());
        assert_eq!(b.data(), b"hello");
        assert_eq!(b.port(), 2);
        assert_eq!(b.partial_csum(), Some(p));
        assert_eq!(b.gso(), None);
        let g = Gso {
            kind: crate::wire::GsoKind::Tcp6,
            mss: 1440,
        };
        a.set_gso(Some(g));
        assert_eq!(a.try_clone().unwrap().gso(), Some(g));
        drop(a);
        assert_eq!(pool.alloc().unwrap().gso(), None, "reset on allocation");
    }

    #[test]
    fn partial_checksum_follows_the_data_window_and_completes_once() {
        use crate::wire::offload::tests::partial_udp4;
        let pool = Mempool::for_tests(4);
        let mut m = pool.alloc().unwrap();
        m.extend_from_slice(&partial_udp4()).unwrap();
        m.set_partial_csum(Some(PartialCsum {
            start: 34,
            offset: 6,
        }));
        m.prepend(4).unwrap().copy_from_slice(&[0; 4]);
        assert_eq!(m.partial_csum().map(|p| p.start), Some(38));
        m.adj(4);
        assert_eq!(m.partial_csum().map(|p| p.start), Some(34));
        assert!(m.complete_csum());
        assert_eq!(m.data()[40..42], [0x64, 0xb0]);
        assert_eq!(m.partial_csum(), None);
        assert!(!m.complete_csum(), "nothing left to do");
        assert_eq!(m.data()[40..42], [0x64, 0xb0]);
        // Cutting into the region drops the metadata; a trimmed-off field is
        // never written.
        m.set_partial_csum(Some(PartialCsum {
            start: 34,
            offset: 6,
        }));
        m.adj(35);
        assert_eq!(m.partial_csum(), None);
        let mut m = pool.alloc().unwrap();
        m.extend_from_slice(&partial_udp4()).unwrap();
        m.set_partial_csum(Some(PartialCsum {
            start: 34,
            offset: 6,
        }));
        m.trim(10);
        assert!(!m.complete_csum());
        assert_eq!(m.data(), &partial_udp4()[..37]);
    }
}
