//! The guest-memory boundary: a checked view of the memory regions a vhost-user
//! frontend shared with us, and the only place in this crate that touches guest
//! memory through raw pointers.
//!
//! Layer: device, memory boundary. On the packet path (every copy and ring access
//! goes through here).
//!
//! Guest memory is untrusted and concurrently written by the guest. Nothing here
//! hands out Rust references into it: bytes are copied in and out with
//! `copy_nonoverlapping`, and ring indices are read and written as atomics. A
//! translation succeeds only if the whole `(address, length)` range lies inside one
//! region of the memory table; everything else is refused, never clamped.
//!
//! Lifetime: [`GuestMemory`] holds the `Arc` of the `vm-memory` mapping it was built
//! from, and every [`RingArea`] holds an `Arc` of its [`GuestMemory`], so a mapping
//! stays mapped while any ring built on it can still be used by a worker, even after
//! the frontend replaced the memory table.
//!
//! Shrinking files: a table built with [`GuestMemory::guarded`] registers its
//! mappings with [`guard`], whose SIGBUS handler replaces a mapping with zero
//! pages when its file was truncated under it, instead of letting the process
//! die; [`GuestMemory::lost`] then reports it.
#![allow(unsafe_code)]

pub mod guard;

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// A guest-physical address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GuestAddr(pub u64);

impl GuestAddr {
    /// `self + n`, or None on overflow.
    #[inline]
    pub fn checked_add(self, n: u64) -> Option<GuestAddr> {
        self.0.checked_add(n).map(GuestAddr)
    }
}

/// A guest range that is not entirely inside one memory region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("guest range {addr:#x}+{len_bytes} is outside the memory table")]
pub struct OutOfBounds {
    /// Start of the refused range.
    pub addr: u64,
    /// Its length.
    pub len_bytes: u64,
}

/// Why a ring area could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AreaError {
    /// The range is not inside one region.
    #[error(transparent)]
    OutOfBounds(#[from] OutOfBounds),
    /// The range is not aligned as the spec requires.
    #[error("guest address {addr:#x} is not {align}-byte aligned")]
    Misaligned {
        /// The address.
        addr: u64,
        /// Required alignment.
        align: usize,
    },
}

#[derive(Debug)]
struct HostRegion {
    gpa: u64,
    len_bytes: u64,
    host: NonNull<u8>,
}

/// Bytes of `r` that its file actually backs (all of it for anonymous memory).
fn file_backed_len(r: &vm_memory::GuestRegionMmap) -> u64 {
    match r.file_offset() {
        None => r.len(),
        Some(fo) => match fo.file().metadata() {
            Ok(md) => md.len().saturating_sub(fo.start()),
            Err(_) => 0,
        },
    }
}

/// Checks that every region of a new memory table is fully backed by its file.
///
/// # Errors
/// [`OutOfBounds`] naming the first region that extends past its file's end.
pub fn check_backing(mem: &GuestMemoryMmap) -> Result<(), OutOfBounds> {
    for r in mem.iter() {
        if file_backed_len(r) < r.len() {
            return Err(OutOfBounds {
                addr: r.start_addr().0,
                len_bytes: r.len(),
            });
        }
    }
    Ok(())
}

/// A read-only table of the guest's memory regions, translated to host addresses.
pub struct GuestMemory {
    regions: Box<[HostRegion]>,
    /// SIGBUS registrations of the mappings (empty for an unguarded table).
    /// Dropped before `_backing`, so a mapping is never registered after it
    /// may have been unmapped.
    guards: Box<[guard::Guard]>,
    /// Keeps the mappings behind `regions[..].host` alive.
    _backing: Arc<GuestMemoryMmap>,
}

// SAFETY: `GuestMemory` only holds host pointers into mappings owned by `_backing`
// (which is Send + Sync) and never gives out references into them; every access
// copies or uses atomics, so sharing it between the control thread and a worker is
// no different from sharing the `GuestMemoryMmap` itself.
unsafe impl Send for GuestMemory {}
// SAFETY: as for Send; all methods take `&self` and perform no unsynchronised
// mutation of Rust-owned state.
unsafe impl Sync for GuestMemory {}

impl std::fmt::Debug for GuestMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.regions.iter().map(|r| (r.gpa, r.len_bytes)))
            .finish()
    }
}

impl GuestMemory {
    /// Builds the table from a `vm-memory` mapping (as installed by SET_MEM_TABLE).
    pub fn new(mem: Arc<GuestMemoryMmap>) -> GuestMemory {
        let mut regions = Vec::new();
        for r in mem.iter() {
            let Some(host) = NonNull::new(r.as_ptr()) else {
                continue;
            };
            // Only bytes backed by the file are usable: touching a mapping past
            // the end of its file raises SIGBUS.
            regions.push(HostRegion {
                gpa: r.start_addr().0,
                len_bytes: r.len().min(file_backed_len(r)),
                host,
            });
        }
        GuestMemory {
            regions: regions.into_boxed_slice(),
            guards: Box::default(),
            _backing: mem,
        }
    }

    /// As [`GuestMemory::new`], with every mapping registered with the SIGBUS
    /// [`guard`] for as long as the table lives: the form for memory shared by
    /// a frontend, which may shrink its files under us.
    ///
    /// # Errors
    /// [`guard::GuardError`] if the handler cannot be installed or too many
    /// mappings are guarded already.
    pub fn guarded(mem: Arc<GuestMemoryMmap>) -> Result<GuestMemory, guard::GuardError> {
        let mut guards = Vec::with_capacity(mem.num_regions());
        for r in mem.iter() {
            // Each region is one whole mapping of `len()` bytes at `as_ptr()`,
            // unmapped only when the last `Arc` of `mem` goes, and the guards
            // are dropped before the `Arc` this table keeps (field order).
            // SAFETY: the mapping outlives its guard (above); all access through
            // this crate copies or uses atomics, so contents turning to zeros is
            // only untrusted input.
            guards.push(unsafe { guard::Guard::register(r.as_ptr(), r.len() as usize) }?);
        }
        let mut table = GuestMemory::new(mem);
        table.guards = guards.into_boxed_slice();
        Ok(table)
    }

    /// True if this table was built from `mem` (the same mapping, not just
    /// the same layout).
    pub fn backed_by(&self, mem: &Arc<GuestMemoryMmap>) -> bool {
        Arc::ptr_eq(&self._backing, mem)
    }

    /// True once a mapping of this table faulted (its file shrank) and was
    /// replaced with zero pages: what it reads is no longer the guest's.
    /// Only meaningful for a [`GuestMemory::guarded`] table.
    #[cold]
    pub fn lost(&self) -> bool {
        self.guards.iter().any(guard::Guard::poisoned)
    }

    /// True if there are no regions (before the first SET_MEM_TABLE).
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// Host address of `addr`, if `[addr, addr + len)` lies inside one region.
    /// A zero-length range must still start inside a region.
    #[inline]
    fn translate(&self, addr: GuestAddr, len_bytes: u64) -> Result<NonNull<u8>, OutOfBounds> {
        let oob = OutOfBounds {
            addr: addr.0,
            len_bytes,
        };
        let end = addr.0.checked_add(len_bytes).ok_or(oob)?;
        for r in self.regions.iter() {
            if addr.0 >= r.gpa && addr.0 - r.gpa < r.len_bytes && end - r.gpa <= r.len_bytes {
                let off = (addr.0 - r.gpa) as usize;
                // SAFETY: off < len_bytes, the size of the mapping starting at
                // `host`, so the result stays inside that mapping and is non-null.
                return Ok(unsafe { NonNull::new_unchecked(r.host.as_ptr().add(off)) });
            }
        }
        Err(oob)
    }

    /// As `translate`, trying the region `hint` names first and leaving in it
    /// the region that matched. The hint only orders the search: a stale or
    /// out-of-range hint costs a full scan, never a wrong answer.
    #[inline]
    fn translate_hinted(
        &self,
        addr: GuestAddr,
        len_bytes: u64,
        hint: &mut RegionHint,
    ) -> Result<NonNull<u8>, OutOfBounds> {
        if let Some(r) = self.regions.get(hint.0) {
            // `addr - gpa < len` and `len_bytes <= len - (addr - gpa)`: the whole
            // range is inside the region, without computing an end that could
            // overflow.
            let off = addr.0.wrapping_sub(r.gpa);
            if addr.0 >= r.gpa && off < r.len_bytes && len_bytes <= r.len_bytes - off {
                // SAFETY: off < len_bytes, the size of the mapping starting at
                // `host`, so the result stays inside that mapping and is non-null.
                return Ok(unsafe { NonNull::new_unchecked(r.host.as_ptr().add(off as usize)) });
            }
        }
        self.translate_scan(addr, len_bytes, hint)
    }

    #[cold]
    #[inline(never)]
    fn translate_scan(
        &self,
        addr: GuestAddr,
        len_bytes: u64,
        hint: &mut RegionHint,
    ) -> Result<NonNull<u8>, OutOfBounds> {
        let ptr = self.translate(addr, len_bytes)?;
        if let Some(i) = self
            .regions
            .iter()
            .position(|r| addr.0 >= r.gpa && addr.0 - r.gpa < r.len_bytes)
        {
            hint.0 = i;
        }
        Ok(ptr)
    }

    /// The guest buffer `[addr, addr + len)`, translated once and checked to lie
    /// inside one region, for copies at offsets into it. `hint` caches the
    /// region of the previous lookup (see [`RegionHint`]).
    ///
    /// # Errors
    /// [`OutOfBounds`] if the range is not inside one region.
    #[inline]
    pub fn slice(
        &self,
        addr: GuestAddr,
        len_bytes: u32,
        hint: &mut RegionHint,
    ) -> Result<GuestSlice<'_>, OutOfBounds> {
        let ptr = self.translate_hinted(addr, u64::from(len_bytes), hint)?;
        Ok(GuestSlice {
            ptr,
            len_bytes: len_bytes as usize,
            _mem: std::marker::PhantomData,
        })
    }

    /// True if `[addr, addr + len)` lies inside one region.
    #[inline]
    pub fn contains(&self, addr: GuestAddr, len_bytes: u64) -> bool {
        self.translate(addr, len_bytes).is_ok()
    }

    /// Copies `dst.len()` bytes from guest memory at `addr`.
    ///
    /// # Errors
    /// [`OutOfBounds`] if the range is not inside one region; `dst` is untouched.
    #[inline]
    pub fn read(&self, addr: GuestAddr, dst: &mut [u8]) -> Result<(), OutOfBounds> {
        let src = self.translate(addr, dst.len() as u64)?;
        // The guest may write concurrently: the bytes are untrusted input and
        // no invariant depends on them.
        // SAFETY: `translate` checked that `dst.len()` bytes from `src` lie in a
        // live mapping (kept by `_backing`); `dst` is a distinct Rust buffer.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    /// Copies `src` into guest memory at `addr`.
    ///
    /// # Errors
    /// [`OutOfBounds`] if the range is not inside one region; nothing is written.
    #[inline]
    pub fn write(&self, addr: GuestAddr, src: &[u8]) -> Result<(), OutOfBounds> {
        let dst = self.translate(addr, src.len() as u64)?;
        // SAFETY: as in `read`; the mapping is shared and writable (vhost-user
        // regions are mapped read-write), and `src` is a Rust buffer outside it.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_ptr(), src.len()) };
        Ok(())
    }

    /// A ring structure (descriptor table, available or used ring) of `len` bytes
    /// at `addr`, checked once here so the fast path only bounds-checks offsets.
    ///
    /// # Errors
    /// [`AreaError`] if the range is outside one region or misaligned.
    pub fn area(
        self: &Arc<Self>,
        addr: GuestAddr,
        len_bytes: u64,
        align: usize,
    ) -> Result<RingArea, AreaError> {
        let ptr = self.translate(addr, len_bytes)?;
        if !addr.0.is_multiple_of(align as u64) || !(ptr.as_ptr() as usize).is_multiple_of(align) {
            return Err(AreaError::Misaligned {
                addr: addr.0,
                align,
            });
        }
        Ok(RingArea {
            _mem: Arc::clone(self),
            ptr,
            len_bytes: len_bytes as usize,
        })
    }
}

/// Which region of a [`GuestMemory`] the last lookup hit: consecutive buffers of
/// a burst usually sit in the same region, so [`GuestMemory::slice`] tries it
/// first. Worker-local (a plain index, no sharing); any value is safe.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegionHint(usize);

/// A guest buffer checked to lie inside one region of a [`GuestMemory`]
/// ([`GuestMemory::slice`]): copies at offsets into it are checked against its
/// length only, without another table lookup.
///
/// Like every access here it only copies: the guest may change the bytes at
/// any time, and nothing refers into them after a call returns.
pub struct GuestSlice<'a> {
    ptr: NonNull<u8>,
    len_bytes: usize,
    /// The mapping under `ptr` lives as long as this borrow of its table.
    _mem: std::marker::PhantomData<&'a GuestMemory>,
}

impl std::fmt::Debug for GuestSlice<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GuestSlice({} bytes)", self.len_bytes)
    }
}

impl GuestSlice<'_> {
    /// Length of the buffer in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len_bytes
    }

    /// True for a zero-length buffer.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len_bytes == 0
    }

    /// True if `n` bytes at `off` are inside the buffer.
    #[inline]
    fn fits(&self, off: usize, n: usize) -> bool {
        off <= self.len_bytes && n <= self.len_bytes - off
    }

    /// Copies `dst.len()` bytes from offset `off` of the buffer.
    ///
    /// # Errors
    /// [`OutOfBounds`] (guest address unknown here: 0) if the range does not fit
    /// the buffer; `dst` is untouched.
    #[inline]
    pub fn read_at(&self, off: usize, dst: &mut [u8]) -> Result<(), OutOfBounds> {
        if !self.fits(off, dst.len()) {
            return Err(self.oob(off, dst.len()));
        }
        // `ptr` maps `len_bytes` bytes (checked against the memory table in
        // `GuestMemory::slice`, kept alive by the table the `'a` borrow refers
        // to). Concurrent guest writes only make the bytes untrusted.
        // SAFETY: `off + dst.len() <= len_bytes` was checked just above; `dst`
        // is a Rust buffer, not guest memory, so the two do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(off), dst.as_mut_ptr(), dst.len())
        };
        Ok(())
    }

    /// Copies `src` to offset `off` of the buffer.
    ///
    /// # Errors
    /// [`OutOfBounds`] if the range does not fit the buffer; nothing is written.
    #[inline]
    pub fn write_at(&self, off: usize, src: &[u8]) -> Result<(), OutOfBounds> {
        if !self.fits(off, src.len()) {
            return Err(self.oob(off, src.len()));
        }
        // SAFETY: as in `read_at`; vhost-user regions are mapped read-write and
        // `src` is a Rust buffer outside guest memory.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.as_ptr().add(off), src.len())
        };
        Ok(())
    }

    #[cold]
    fn oob(&self, off: usize, n: usize) -> OutOfBounds {
        OutOfBounds {
            addr: off as u64,
            len_bytes: n as u64,
        }
    }
}

/// A checked, aligned piece of guest memory holding a ring structure.
///
/// Offsets passed to its methods come from this crate's own index arithmetic
/// (already reduced modulo the validated queue size), so an offset out of range is
/// a bug here, not guest input, and panics.
pub struct RingArea {
    /// Keeps the mapping under `ptr` alive.
    _mem: Arc<GuestMemory>,
    ptr: NonNull<u8>,
    len_bytes: usize,
}

// SAFETY: the area points into a mapping kept alive by `_mem` (Send + Sync) and is
// accessed only through atomics and copies.
unsafe impl Send for RingArea {}
// SAFETY: as for Send.
unsafe impl Sync for RingArea {}

impl std::fmt::Debug for RingArea {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RingArea({} bytes)", self.len_bytes)
    }
}

impl RingArea {
    #[inline]
    fn at(&self, off: usize, n: usize) -> *mut u8 {
        assert!(
            off + n <= self.len_bytes,
            "ring offset {off}+{n} beyond {}",
            self.len_bytes
        );
        // SAFETY: bounds asserted above; `ptr` maps `len_bytes` bytes.
        unsafe { self.ptr.as_ptr().add(off) }
    }

    /// Loads the little-endian `u16` at `off` (must be even).
    #[inline]
    pub fn load_u16(&self, off: usize, order: Ordering) -> u16 {
        assert!(off.is_multiple_of(2));
        let p = self.at(off, 2).cast::<AtomicU16>();
        // Atomic access tolerates the guest's concurrent stores.
        // SAFETY: `p` is in bounds, 2-byte aligned (area base aligned to at least
        // 2 in `GuestMemory::area`, `off` even) and valid while `_mem` lives.
        u16::from_le(unsafe { (*p).load(order) })
    }

    /// Stores `v` as a little-endian `u16` at `off` (must be even).
    #[inline]
    pub fn store_u16(&self, off: usize, v: u16, order: Ordering) {
        assert!(off.is_multiple_of(2));
        let p = self.at(off, 2).cast::<AtomicU16>();
        // SAFETY: as in `load_u16`; the mapping is writable.
        unsafe { (*p).store(v.to_le(), order) }
    }

    /// Copies `N` bytes at `off` out of the ring (a descriptor, copied before it is
    /// validated so the guest cannot change it between check and use).
    #[inline]
    pub fn read_bytes<const N: usize>(&self, off: usize) -> [u8; N] {
        let p = self.at(off, N);
        let mut out = [0u8; N];
        // SAFETY: `p..p+N` is in bounds (checked by `at`); `out` is a local buffer.
        unsafe { std::ptr::copy_nonoverlapping(p, out.as_mut_ptr(), N) };
        out
    }

    /// Copies `bytes` into the ring at `off` (a used element).
    #[inline]
    pub fn write_bytes(&self, off: usize, bytes: &[u8]) {
        let p = self.at(off, bytes.len());
        // SAFETY: in bounds (checked by `at`), writable mapping, distinct source.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len()) };
    }

    /// The array of `entries` elements of `STRIDE` bytes at `base` in this
    /// area (a descriptor table, the available or used ring's entries),
    /// checked once here: `entries` a power of two, the array inside the area,
    /// and for `STRIDE` >= 2, `base`, `STRIDE` and the address even. None if
    /// not.
    pub fn array<const STRIDE: usize>(
        &self,
        base: usize,
        entries: u16,
    ) -> Option<RingArray<STRIDE>> {
        let end = STRIDE.checked_mul(entries as usize)?.checked_add(base)?;
        let aligned = STRIDE < 2
            || (base.is_multiple_of(2)
                && STRIDE.is_multiple_of(2)
                && (self.ptr.as_ptr() as usize).is_multiple_of(2));
        if !entries.is_power_of_two() || end > self.len_bytes || !aligned {
            return None;
        }
        Some(RingArray {
            _mem: Arc::clone(&self._mem),
            // SAFETY: base <= end <= len_bytes, inside the mapping at `ptr`.
            ptr: unsafe { NonNull::new_unchecked(self.ptr.as_ptr().add(base)) },
            mask: entries - 1,
        })
    }
}

/// An array of ring elements ([`RingArea::array`]): a power-of-two count of
/// `STRIDE`-byte elements, bounds-checked when it was made. Every index is
/// reduced modulo the count, so no access can leave the array and none needs
/// a check of its own (the index is ours or the guest's, either way masked).
pub struct RingArray<const STRIDE: usize> {
    /// Keeps the mapping under `ptr` alive.
    _mem: Arc<GuestMemory>,
    ptr: NonNull<u8>,
    mask: u16,
}

// SAFETY: as for RingArea: a pointer into a mapping kept alive by `_mem`,
// accessed only through atomics and copies.
unsafe impl<const STRIDE: usize> Send for RingArray<STRIDE> {}
// SAFETY: as for Send.
unsafe impl<const STRIDE: usize> Sync for RingArray<STRIDE> {}

impl<const STRIDE: usize> std::fmt::Debug for RingArray<STRIDE> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RingArray({} x {STRIDE} bytes)",
            u32::from(self.mask) + 1
        )
    }
}

impl<const STRIDE: usize> RingArray<STRIDE> {
    #[inline]
    fn elem(&self, i: u16) -> *mut u8 {
        // SAFETY: (i & mask) < entries and entries * STRIDE bytes from `ptr` lie
        // inside the mapping (checked in `RingArea::array`).
        unsafe { self.ptr.as_ptr().add(usize::from(i & self.mask) * STRIDE) }
    }

    /// Loads element `i` (mod the count) as a little-endian `u16` (`STRIDE` 2).
    #[inline]
    pub fn load_u16(&self, i: u16, order: Ordering) -> u16 {
        const { assert!(STRIDE == 2) };
        let p = self.elem(i).cast::<AtomicU16>();
        // SAFETY: in bounds (see `elem`), 2-byte aligned (base, stride and
        // address even, checked in `RingArea::array`), mapping alive while
        // `_mem` is. Atomic access tolerates the guest's concurrent stores.
        u16::from_le(unsafe { (*p).load(order) })
    }

    /// Copies element `i` (mod the count) out of the ring (a descriptor,
    /// copied before it is validated so the guest cannot change it between
    /// check and use).
    #[inline]
    pub fn read(&self, i: u16) -> [u8; STRIDE] {
        let mut out = [0u8; STRIDE];
        // SAFETY: STRIDE bytes at `elem(i)` are in bounds (see `elem`); `out` is
        // a local buffer.
        unsafe { std::ptr::copy_nonoverlapping(self.elem(i), out.as_mut_ptr(), STRIDE) };
        out
    }

    /// Copies `bytes` into element `i` (mod the count) (a used element).
    #[inline]
    pub fn write(&self, i: u16, bytes: &[u8; STRIDE]) {
        // SAFETY: in bounds (see `elem`), writable mapping, distinct source.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.elem(i), STRIDE) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestAddress;

    fn mem() -> Arc<GuestMemory> {
        let m = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0x1000), 0x1000),
            (GuestAddress(0x10000), 0x2000),
        ])
        .unwrap();
        Arc::new(GuestMemory::new(Arc::new(m)))
    }

    #[test]
    fn ranges_must_sit_inside_one_region() {
        let m = mem();
        assert!(m.contains(GuestAddr(0x1000), 0x1000));
        assert!(!m.contains(GuestAddr(0x1000), 0x1001));
        assert!(!m.contains(GuestAddr(0xfff), 1));
        assert!(!m.contains(GuestAddr(0x1fff), 0x10000)); // spans the gap
        assert!(!m.contains(GuestAddr(u64::MAX), 2)); // overflow
        assert!(m.contains(GuestAddr(0x11fff), 1));
        assert!(!m.contains(GuestAddr(0x12000), 0));
    }

    #[test]
    fn copies_round_trip_and_refuse_out_of_range() {
        let m = mem();
        m.write(GuestAddr(0x10ffe), &[1, 2, 3, 4]).unwrap();
        let mut b = [0u8; 4];
        m.read(GuestAddr(0x10ffe), &mut b).unwrap();
        assert_eq!(b, [1, 2, 3, 4]);
        assert!(m.write(GuestAddr(0x1ffe), &[0; 4]).is_err());
        assert!(m.read(GuestAddr(0x11ffe), &mut b).is_err());
    }

    #[test]
    fn slices_use_the_region_hint_and_check_every_access() {
        let m = mem();
        let mut hint = RegionHint::default();
        // A miss on region 0 finds region 1 and remembers it.
        let s = m.slice(GuestAddr(0x11000), 0x1000, &mut hint).unwrap();
        assert_eq!(hint, RegionHint(1));
        s.write_at(0xffc, &[1, 2, 3, 4]).unwrap();
        let mut b = [0u8; 4];
        m.read(GuestAddr(0x11ffc), &mut b).unwrap();
        assert_eq!(b, [1, 2, 3, 4]);
        assert!(s.write_at(0xffd, &[0; 4]).is_err(), "past the slice");
        assert!(s.read_at(usize::MAX, &mut b).is_err());
        // A hit in the hinted region; then region 0 through a stale hint.
        assert!(m.slice(GuestAddr(0x10000), 0x2000, &mut hint).is_ok());
        assert_eq!(hint, RegionHint(1));
        let s = m.slice(GuestAddr(0x1ffe), 2, &mut hint).unwrap();
        assert_eq!(hint, RegionHint(0));
        s.read_at(0, &mut b[..2]).unwrap();
        // Ranges are checked whatever the hint says.
        for h in [0, 1, 7] {
            let mut hint = RegionHint(h);
            assert!(
                m.slice(GuestAddr(0x1fff), 2, &mut hint).is_err(),
                "straddles the end"
            );
            assert!(m.slice(GuestAddr(0x11fff), 2, &mut hint).is_err());
            assert!(
                m.slice(GuestAddr(0x1fff), 0x10000, &mut hint).is_err(),
                "spans the gap"
            );
            assert!(m.slice(GuestAddr(u64::MAX), u32::MAX, &mut hint).is_err());
            assert!(m.slice(GuestAddr(0x12000), 0, &mut hint).is_err());
            assert!(m.slice(GuestAddr(0xfff), 1, &mut hint).is_err());
            assert!(m.slice(GuestAddr(0x11fff), 1, &mut hint).is_ok());
        }
    }

    #[test]
    fn a_file_shrunk_under_a_guarded_table_reads_zeros_instead_of_killing_us() {
        let _s = guard::tests::SERIAL
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (file, gm) = memfd_table(GuestAddress(0x1000), 0x4000);
        let m = Arc::new(GuestMemory::guarded(Arc::new(gm)).unwrap());
        let ring = m.area(GuestAddr(0x1000), 16, 16).unwrap();
        m.write(GuestAddr(0x3000), &[7; 8]).unwrap();
        ring.store_u16(2, 0xabcd, Ordering::Relaxed);
        assert!(!m.lost());
        let epoch = guard::epoch();
        // The frontend shrinks the file: the next access raises SIGBUS.
        rustix::fs::ftruncate(&file, 0).unwrap();
        let mut b = [1u8; 8];
        m.read(GuestAddr(0x3000), &mut b).unwrap();
        assert_eq!(b, [0; 8], "zero pages replaced the mapping");
        assert!(m.lost());
        assert!(guard::epoch() > epoch);
        // Everything else still works on the zero pages.
        assert_eq!(ring.load_u16(2, Ordering::Relaxed), 0);
        ring.store_u16(2, 1, Ordering::Relaxed);
        m.write(GuestAddr(0x4ff8), &[1; 8]).unwrap();
        // The frontend's file is no longer written through the old mapping.
        rustix::fs::ftruncate(&file, 0x4000).unwrap();
        let mut f = [9u8; 2];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut f, 2).unwrap();
        assert_eq!(f, [0, 0]);
        // An unguarded table of another mapping is not affected.
        assert!(!mem().lost());
    }

    /// A table over a memfd of `len` bytes at guest address `base`, and the
    /// memfd.
    fn memfd_table(base: GuestAddress, len: usize) -> (std::fs::File, GuestMemoryMmap) {
        let fd = rustix::fs::memfd_create("guest", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, len as u64).unwrap();
        let file = std::fs::File::from(fd);
        let gm = GuestMemoryMmap::from_ranges_with_files([(
            base,
            len,
            Some(vm_memory::FileOffset::new(file.try_clone().unwrap(), 0)),
        )])
        .unwrap();
        (file, gm)
    }

    #[test]
    fn a_fault_outside_guarded_memory_still_kills_the_process() {
        const CHILD: &str = "WEIR_GUARD_TEST_CHILD";
        if std::env::var_os(CHILD).is_some() {
            // In the child: the handler is installed (one guarded table), and
            // an unguarded mapping whose file shrank is touched.
            let (_g, guarded) = memfd_table(GuestAddress(0), 0x1000);
            let _guarded = GuestMemory::guarded(Arc::new(guarded)).unwrap();
            let (file, gm) = memfd_table(GuestAddress(0), 0x1000);
            let m = GuestMemory::new(Arc::new(gm));
            rustix::fs::ftruncate(&file, 0).unwrap();
            let mut b = [0u8; 8];
            let _ = m.read(GuestAddr(0), &mut b);
            std::hint::black_box(b);
            std::process::exit(0);
        }
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "guest_mem::tests::a_fault_outside_guarded_memory_still_kills_the_process",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // A handler that swallowed the fault would leave the child re-faulting
        // forever: give up on it eventually (a hang guard, not a measurement).
        let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if std::time::Instant::now() > end {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the child never died: its fault was swallowed");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGBUS), "child: {status:?}");
    }

    #[test]
    fn areas_check_alignment() {
        let m = mem();
        assert!(m.area(GuestAddr(0x1001), 16, 2).is_err());
        let a = m.area(GuestAddr(0x1000), 16, 16).unwrap();
        a.store_u16(2, 0xabcd, Ordering::Relaxed);
        assert_eq!(a.load_u16(2, Ordering::Relaxed), 0xabcd);
        assert_eq!(a.read_bytes::<2>(2), [0xcd, 0xab]);
    }

    #[test]
    fn ring_arrays_are_checked_once_and_wrap_their_index() {
        let m = mem();
        let a = m.area(GuestAddr(0x1000), 4 + 2 * 8 + 2, 2).unwrap();
        assert!(a.array::<2>(4, 6).is_none(), "not a power of two");
        assert!(a.array::<2>(4, 16).is_none(), "past the area");
        assert!(a.array::<2>(3, 8).is_none(), "odd base");
        assert!(a.array::<8>(usize::MAX, 8).is_none(), "overflow");
        let ring = a.array::<2>(4, 8).unwrap();
        a.store_u16(4 + 2 * 3, 0x1234, Ordering::Relaxed);
        assert_eq!(ring.load_u16(3, Ordering::Relaxed), 0x1234);
        assert_eq!(ring.load_u16(3 + 8 * 100, Ordering::Relaxed), 0x1234);
        let b = m.area(GuestAddr(0x1100), 4 * 16, 16).unwrap();
        let t = b.array::<16>(0, 4).unwrap();
        t.write(5, &[7; 16]);
        assert_eq!(b.read_bytes::<16>(16), [7; 16]);
        assert_eq!(t.read(u16::MAX), [0; 16]);
    }
}
