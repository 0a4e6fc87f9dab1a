//! Backing memory for mbuf pools: 2 MiB hugepages from `memfd_create(MFD_HUGETLB)`,
//! or ordinary anonymous pages as a fallback.
//!
//! Layer: buffers, OS boundary. This is the only place that calls `mmap`/`munmap`
//! for pool memory; it exports [`Region`], a safe owner of one mapping. Not on the
//! packet path (runs at start-up).
//!
//! Why not the `hugepage-rs` crate: it hands out a pointer but no file descriptor, so
//! the memory cannot be shared with another process (a vhost-user frontend, a VFIO
//! container mapping by fd) and its size cannot be checked against the hugetlb pool
//! before use. A memfd gives both.
#![allow(unsafe_code)]

use std::os::fd::OwnedFd;
use std::path::Path;
use std::ptr::NonNull;

use rustix::fs::MemfdFlags;
use rustix::mm::{MapFlags, ProtFlags};

/// Size of one x86-64 huge page as used here.
pub const HUGEPAGE_2M: usize = 2 << 20;

/// What backs a [`Region`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// 2 MiB hugetlb pages from a memfd (shareable by fd).
    Hugepages2M,
    /// Ordinary 4 KiB anonymous pages.
    Anonymous,
}

/// Errors creating pool memory.
#[derive(Debug, thiserror::Error)]
pub enum HugepageError {
    /// `memfd_create(MFD_HUGETLB)` failed (kernel without hugetlbfs support).
    #[error("memfd_create(MFD_HUGETLB) failed")]
    Memfd(#[source] std::io::Error),
    /// Not enough free 2 MiB pages to back the region.
    #[error(
        "need {needed} free 2 MiB hugepages for {len_bytes} bytes of mbufs but only {free} are free; \
         reserve them with `echo {suggest} > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages` \
         or set `hugepages = \"auto\"` to fall back to normal pages"
    )]
    NotEnoughPages {
        /// Bytes requested.
        len_bytes: usize,
        /// Pages needed.
        needed: usize,
        /// Pages free now.
        free: usize,
        /// A value for nr_hugepages that would suffice.
        suggest: usize,
    },
    /// Sizing or mapping the memory failed.
    #[error("mapping {len_bytes} bytes of {backing:?} memory failed")]
    Map {
        /// Bytes requested.
        len_bytes: usize,
        /// Which kind of memory.
        backing: Backing,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// One mapping of pool memory, unmapped on drop.
///
/// Invariant: `ptr` points to `len` bytes, readable and writable, zero-filled at
/// creation, mapped for as long as the `Region` lives.
#[derive(Debug)]
pub struct Region {
    ptr: NonNull<u8>,
    len: usize,
    backing: Backing,
    fd: Option<OwnedFd>,
}

// SAFETY: `Region` owns its mapping exclusively; the raw pointer is just its address.
// Concurrent access to the bytes is coordinated by the users (the mempool hands each
// buffer to one owner at a time).
unsafe impl Send for Region {}
// SAFETY: as above; `&Region` only exposes the address and length.
unsafe impl Sync for Region {}

/// 2 MiB pages that hold `len_bytes`.
pub fn pages_2m(len_bytes: usize) -> usize {
    len_bytes.div_ceil(HUGEPAGE_2M)
}

/// Free 2 MiB hugepages according to sysfs (0 if the file is missing).
pub fn free_hugepages_2m() -> usize {
    read_usize(Path::new(
        "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages",
    ))
}

/// Configured (reserved) 2 MiB hugepages according to sysfs.
pub fn nr_hugepages_2m() -> usize {
    read_usize(Path::new(
        "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages",
    ))
}

fn read_usize(p: &Path) -> usize {
    std::fs::read_to_string(p)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

impl Region {
    /// Maps `len_bytes` (rounded up to 2 MiB) of hugepage memory from a memfd.
    ///
    /// # Errors
    /// [`HugepageError::NotEnoughPages`] when the hugetlb pool is short (checked
    /// before mapping, and again by the kernel's reservation at `mmap` time, so the
    /// process never takes SIGBUS later); other variants for OS failures.
    pub fn hugepages(len_bytes: usize) -> Result<Region, HugepageError> {
        let needed = pages_2m(len_bytes);
        let len = needed * HUGEPAGE_2M;
        let free = free_hugepages_2m();
        let short = || HugepageError::NotEnoughPages {
            len_bytes: len,
            needed,
            free,
            suggest: nr_hugepages_2m() + needed.saturating_sub(free),
        };
        if free < needed {
            return Err(short());
        }
        let fd = rustix::fs::memfd_create(
            "weir-mbufs",
            MemfdFlags::CLOEXEC | MemfdFlags::HUGETLB | MemfdFlags::HUGE_2MB,
        )
        .map_err(|e| HugepageError::Memfd(e.into()))?;
        rustix::fs::ftruncate(&fd, len as u64).map_err(|e| HugepageError::Map {
            len_bytes: len,
            backing: Backing::Hugepages2M,
            source: e.into(),
        })?;
        // SAFETY: we map a fresh memfd we own, of exactly `len` bytes (ftruncate
        // above), at an address of the kernel's choosing; no existing Rust object
        // aliases the new mapping. MAP_SHARED lets another process map the same fd.
        let mapped = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED | MapFlags::POPULATE,
                &fd,
                0,
            )
        };
        let ptr = match mapped {
            Ok(p) => p,
            Err(rustix::io::Errno::NOMEM) => return Err(short()),
            Err(e) => {
                return Err(HugepageError::Map {
                    len_bytes: len,
                    backing: Backing::Hugepages2M,
                    source: e.into(),
                })
            }
        };
        Ok(Region {
            ptr: NonNull::new(ptr.cast()).expect("mmap returned null on success"),
            len,
            backing: Backing::Hugepages2M,
            fd: Some(fd),
        })
    }

    /// Maps `len_bytes` (rounded up to 4 KiB) of ordinary anonymous memory.
    ///
    /// # Errors
    /// [`HugepageError::Map`] if the kernel refuses the mapping.
    pub fn anonymous(len_bytes: usize) -> Result<Region, HugepageError> {
        let len = len_bytes.max(1).div_ceil(4096) * 4096;
        // SAFETY: a fresh private anonymous mapping of `len` bytes at an address of
        // the kernel's choosing; nothing else refers to it.
        let mapped = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE | MapFlags::POPULATE,
            )
        }
        .map_err(|e| HugepageError::Map {
            len_bytes: len,
            backing: Backing::Anonymous,
            source: e.into(),
        })?;
        Ok(Region {
            ptr: NonNull::new(mapped.cast()).expect("mmap returned null on success"),
            len,
            backing: Backing::Anonymous,
            fd: None,
        })
    }

    /// Start address of the mapping.
    pub fn as_ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// Length of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: regions are never empty.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// What backs this region.
    pub fn backing(&self) -> Backing {
        self.backing
    }

    /// The memfd behind a hugepage region, for sharing it with another process.
    pub fn fd(&self) -> Option<&OwnedFd> {
        self.fd.as_ref()
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping created in the constructor and
        // nothing borrows into it any more: pool memory is only reachable through
        // `Region`'s owner, which is being dropped.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_region_is_zeroed_and_rounded_to_pages() {
        let r = Region::anonymous(5000).unwrap();
        assert_eq!(r.len(), 8192);
        assert_eq!(r.backing(), Backing::Anonymous);
        assert!(r.fd().is_none());
    }

    #[test]
    fn hugepage_shortage_is_a_clear_error() {
        // Ask for far more than any test machine reserves.
        let err = Region::hugepages(1 << 50).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("nr_hugepages"), "{msg}");
        assert!(matches!(err, HugepageError::NotEnoughPages { .. }));
    }
}
