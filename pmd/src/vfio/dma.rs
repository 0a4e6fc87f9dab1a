//! DMA memory shared with a device: descriptor rings ([`DmaMem`]) and, for tests,
//! a device-side view of a mempool (`PoolWindow`).
//!
//! Layer: ports, memory boundary. Descriptor fields are read and written with
//! volatile accesses because the device changes them behind the compiler's back;
//! drivers order those accesses against MMIO doorbells with fences (see each
//! driver). Accessors panic on an out-of-bounds or misaligned offset: offsets come
//! from the driver's own ring layout, so that would be a driver bug.
#![allow(unsafe_code)]

use std::fmt;
use std::sync::Arc;

use dataplane::mempool::Region;

use super::Container;

/// An address in a device's DMA (IO virtual) address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Iova(pub u64);

impl Iova {
    /// This address plus `bytes`.
    #[inline]
    pub fn offset(self, bytes: u64) -> Iova {
        Iova(self.0 + bytes)
    }
}

impl fmt::Display for Iova {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

struct Inner {
    region: Region,
    iova: Iova,
    /// The container the region is mapped in; None for test memory that no
    /// device sees.
    container: Option<Arc<Container>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Unmap from the IOMMU before `region` (dropped after this) is unmapped
        // from the process, so the device can never reach freed memory.
        if let Some(c) = &self.container {
            c.unmap_dma(self.region.len(), self.iova);
        }
    }
}

/// Zeroed memory for descriptor rings, visible to a device at [`DmaMem::iova`].
/// Clones share the same memory (a fake device in tests holds one).
///
/// Invariant: `inner.region` maps `len()` bytes for as long as any clone lives.
#[derive(Clone)]
pub struct DmaMem {
    inner: Arc<Inner>,
}

impl fmt::Debug for DmaMem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaMem")
            .field("iova", &self.inner.iova)
            .field("len", &self.len())
            .finish()
    }
}

macro_rules! accessors {
    ($($read:ident, $write:ident, $t:ty;)*) => {$(
        #[doc = concat!("Volatile little-endian `", stringify!($t), "` read at byte `off`.")]
        #[inline]
        pub fn $read(&self, off: usize) -> $t {
            let p = self.ptr::<$t>(off);
            // SAFETY: `ptr` checked bounds and alignment; the region is mapped while
            // `self` lives (type invariant). Volatile: the device may write it.
            <$t>::from_le(unsafe { p.read_volatile() })
        }

        #[doc = concat!("Volatile little-endian `", stringify!($t), "` write at byte `off`.")]
        #[inline]
        pub fn $write(&self, off: usize, val: $t) {
            let p = self.ptr::<$t>(off);
            // SAFETY: as in the read; no Rust reference into the region exists
            // (all access is through these copying accessors).
            unsafe { p.write_volatile(val.to_le()) }
        }
    )*};
}

impl DmaMem {
    pub(super) fn mapped(region: Region, iova: Iova, container: Arc<Container>) -> DmaMem {
        DmaMem {
            inner: Arc::new(Inner {
                region,
                iova,
                container: Some(container),
            }),
        }
    }

    /// Ring memory that no device is given: for drivers tested against a fake
    /// device, which reads and writes it through a clone.
    ///
    /// # Panics
    /// If anonymous memory cannot be mapped.
    pub fn for_tests(len_bytes: usize, iova: Iova) -> DmaMem {
        DmaMem {
            inner: Arc::new(Inner {
                region: Region::anonymous(len_bytes).expect("anonymous memory for DmaMem"),
                iova,
                container: None,
            }),
        }
    }

    /// Bus address of byte 0.
    #[inline]
    pub fn iova(&self) -> Iova {
        self.inner.iova
    }

    /// Length in bytes (a multiple of 4 KiB).
    #[inline]
    pub fn len(&self) -> usize {
        self.inner.region.len()
    }

    /// Never true.
    #[inline]
    pub fn is_empty(&self) -> bool {
        false
    }

    #[inline]
    fn ptr<T>(&self, off: usize) -> *mut T {
        let size = std::mem::size_of::<T>();
        assert!(
            off + size <= self.len() && off.is_multiple_of(size),
            "DMA access at {off} of {size} bytes outside or misaligned in {} bytes",
            self.len()
        );
        // SAFETY: off + size <= len, so the result stays inside the mapping.
        unsafe { self.inner.region.as_ptr().as_ptr().add(off).cast() }
    }

    accessors! {
        read_u8, write_u8, u8;
        read_u16, write_u16, u16;
        read_u32, write_u32, u32;
        read_u64, write_u64, u64;
    }

    /// Zeroes `len` bytes from `off` (volatile, byte by byte is fine: only used
    /// at ring set-up).
    pub fn zero(&self, off: usize, len: usize) {
        for i in off..off + len {
            self.write_u8(i, 0);
        }
    }
}

/// A fake device's view of a mempool region mapped at `iova`: reads and writes
/// packet bytes by bus address, as a NIC's DMA engine would.
///
/// Like real DMA, it writes into buffers that a driver has posted to a ring; the
/// drivers hold no Rust borrow of a posted buffer's bytes, which is what makes
/// this sound in their tests. Test builds only.
#[cfg(test)]
pub(crate) struct PoolWindow {
    region: &'static Region,
    iova: Iova,
}

#[cfg(test)]
impl PoolWindow {
    pub(crate) fn new(pool: &'static dataplane::Mempool, iova: Iova) -> PoolWindow {
        PoolWindow {
            region: pool.region(),
            iova,
        }
    }

    fn at(&self, iova: u64, len: usize) -> *mut u8 {
        let off = iova.checked_sub(self.iova.0).expect("IOVA below the pool") as usize;
        assert!(off + len <= self.region.len(), "DMA beyond the pool");
        // SAFETY: bounds checked above against the region's length.
        unsafe { self.region.as_ptr().as_ptr().add(off) }
    }

    /// Device write of `bytes` at `iova`.
    pub(crate) fn write(&self, iova: u64, bytes: &[u8]) {
        let p = self.at(iova, bytes.len());
        // SAFETY: `at` checked the range; the pool is 'static; see the type docs
        // for why no Rust borrow aliases a posted buffer.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len()) }
    }

    /// Device read of `len` bytes at `iova`.
    pub(crate) fn read(&self, iova: u64, len: usize) -> Vec<u8> {
        let p = self.at(iova, len);
        let mut v = vec![0u8; len];
        // SAFETY: as in `write`; reading only.
        unsafe { std::ptr::copy_nonoverlapping(p, v.as_mut_ptr(), len) }
        v
    }
}
