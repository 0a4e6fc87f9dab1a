//! Fixed-size packet buffer pools, allocated once at start-up.
//!
//! Layer: buffers. `alloc`/free are on the packet path; `Mempool::create` is not.
//!
//! Layout: one [`hugepage::Region`] cut into `n` slots of `stride` bytes. Each slot
//! is a 64-byte header (see `mbuf`), then `headroom` bytes, then the data room:
//!
//! ```text
//! | hdr 64 B | headroom (128 B) | data room (2048 B)          | ... next slot
//! ^ slot start                  ^ data_off (initially)
//! ```
//!
//! Free buffers live in a lock-free [`Ring`] of slot indices shared by all threads,
//! fronted by a per-thread cache (up to `cache_size` indices) so that the common
//! alloc/free touches only thread-local memory; the shared ring is hit in bulk, once
//! per `cache_size / 2` buffers. Pools live for the rest of the process: `create`
//! returns `&'static Mempool`, which is what lets an [`Mbuf`] return itself to its
//! pool on drop without a reference count.
//!
//! # Per-port shares
//!
//! A pool created with [`MempoolConfig::port_share`] keeps a count of the
//! buffers each of its users holds (a [`PoolShare`], one per port) and refuses
//! a charged allocation beyond that share, so that one port cannot take the
//! whole pool. A charged buffer records its share in its header; its copies
//! ([`Mbuf::try_clone`], flooding) are charged to the same share, and it is
//! refunded when it is freed, on whatever thread that happens. Each share's
//! count is an atomic in a cache line of its own: one read-modify-write on
//! alloc and one on free, which suits pools of few, large buffers (TSO frames,
//! each a copy of up to 64 KiB). Pools without shares pay one test of the
//! header on free and nothing on alloc.
#![allow(unsafe_code)]

pub mod hugepage;

use std::cell::RefCell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrayvec::ArrayVec;

use crate::mbuf::{Mbuf, MbufHdr, HDR_BYTES};
use crate::ring::Ring;
pub use hugepage::{Backing, HugepageError, Region};

/// Whether pool memory must, may or must not come from hugepages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum HugepagePolicy {
    /// Try hugepages; fall back to normal pages with one warning.
    #[default]
    Auto,
    /// Hugepages or an error that says how many to reserve.
    Required,
    /// Normal pages only.
    Never,
}

/// Sizing of a pool.
#[derive(Clone, Debug)]
pub struct MempoolConfig {
    /// Name, for logs and stats.
    pub name: String,
    /// Number of buffers.
    pub n_mbufs: u32,
    /// Bytes of packet data per buffer.
    pub data_room: u32,
    /// Bytes reserved in front of the data for prepending headers.
    pub headroom: u32,
    /// Per-thread cache size (buffers).
    pub cache_size: u32,
    /// Hugepage policy.
    pub hugepages: HugepagePolicy,
    /// Most buffers one [`PoolShare`] may hold at once (0, or the whole pool
    /// or more: no shares, every allocation is uncharged). See the module
    /// docs, "Per-port shares".
    pub port_share: u32,
}

/// Default bytes of packet data per buffer: a 1500-byte MTU frame with room
/// to spare, as DPDK's `RTE_MBUF_DEFAULT_DATAROOM`.
pub const DEFAULT_DATA_ROOM: u32 = 2048;
/// Default bytes in front of the data for prepending headers (a VLAN tag, a
/// virtio-net header), as DPDK's `RTE_PKTMBUF_HEADROOM`.
pub const DEFAULT_HEADROOM: u32 = 128;
/// Largest data room with the default headroom: headroom and data room
/// together must fit the header's 16-bit buffer length.
pub const MAX_DATA_ROOM: u32 = u16::MAX as u32 - DEFAULT_HEADROOM;
/// Slots start on cache lines, so that no two buffers share one.
const SLOT_ALIGN_BYTES: usize = 64;

impl Default for MempoolConfig {
    fn default() -> Self {
        MempoolConfig {
            name: "mbufs".into(),
            n_mbufs: 16384,
            data_room: DEFAULT_DATA_ROOM,
            headroom: DEFAULT_HEADROOM,
            cache_size: 256,
            hugepages: HugepagePolicy::Auto,
            port_share: 0,
        }
    }
}

impl MempoolConfig {
    /// Bytes of one slot: the mbuf header, the headroom and the data room,
    /// rounded up to a cache line. [`Mempool::create`] lays slots out at
    /// this stride.
    pub fn stride_bytes(&self) -> usize {
        (HDR_BYTES + (self.headroom + self.data_room) as usize).next_multiple_of(SLOT_ALIGN_BYTES)
    }

    /// Bytes of memory the pool asks for: `n_mbufs` slots (the mapping
    /// itself is rounded up to its page size).
    pub fn region_bytes(&self) -> usize {
        self.stride_bytes() * self.n_mbufs as usize
    }

    /// 2 MiB hugepages the pool takes when hugepage-backed.
    pub fn hugepages_needed(&self) -> usize {
        hugepage::pages_2m(self.region_bytes())
    }
}

/// Errors creating a pool.
#[derive(Debug, thiserror::Error)]
pub enum MempoolError {
    /// Sizes out of range.
    #[error("invalid mempool {name:?}: {why}")]
    Invalid {
        /// Pool name.
        name: String,
        /// What is wrong.
        why: &'static str,
    },
    /// Backing memory could not be had.
    #[error("allocating memory for mempool {name:?}")]
    Memory {
        /// Pool name.
        name: String,
        /// Cause.
        #[source]
        source: HugepageError,
    },
    /// Too many pools in one process.
    #[error("too many mempools (max {MAX_POOLS})")]
    TooMany,
}

/// Most pools one process may create.
pub const MAX_POOLS: usize = 64;

/// Most [`PoolShare`]s one pool keeps at once (as many as the switch has
/// ports).
pub const MAX_SHARES: usize = 4096;

/// Why a charged allocation ([`PoolShare::alloc`]) failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// The pool has no free buffer.
    #[error("the pool is empty")]
    Empty,
    /// The share already holds as many buffers as it may.
    #[error("the port holds its whole share of the pool")]
    OverShare,
}

/// One share's count of buffers held, in a cache line of its own: shares
/// are charged and refunded by different threads, and neighbours must not
/// bounce each other's lines.
#[derive(Debug, Default)]
#[repr(align(64))]
struct ShareCount {
    held: AtomicU32,
}

/// The per-port shares of a pool (see the module docs).
#[derive(Debug)]
struct Shares {
    /// Most buffers one share may hold.
    limit: u32,
    counts: Box<[ShareCount]>,
    /// Which counts belong to a live [`PoolShare`] (control path only).
    taken: Mutex<Vec<bool>>,
    /// Charged allocations refused because the share was used up.
    refused: AtomicU64,
}
static NEXT_POOL_ID: AtomicU16 = AtomicU16::new(0);

/// A pool of fixed-size packet buffers. See the module docs.
pub struct Mempool {
    id: u16,
    name: String,
    region: Region,
    stride: usize,
    n: u32,
    headroom: u32,
    data_room: u32,
    cache_size: u32,
    free: Ring<u32>,
    alloc_failures: AtomicU64,
    /// Fill level of each thread's cache, so `available()` is exact when quiescent.
    cache_levels: Mutex<Vec<Arc<AtomicU32>>>,
    /// Where segments of this pool's TSO frames are allocated (see
    /// [`Mempool::set_segment_pool`]).
    segment_pool: std::sync::OnceLock<&'static Mempool>,
    /// Per-port shares, if the pool was created with `port_share`.
    shares: Option<Shares>,
}

impl std::fmt::Debug for Mempool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mempool")
            .field("name", &self.name)
            .field("n", &self.n)
            .field("available", &self.available())
            .field("backing", &self.region.backing())
            .finish()
    }
}

impl Mempool {
    /// Names the pool that segments of this pool's TSO frames are cut into
    /// (a large-buffer pool for TSO frames sets the normal pool here, so that
    /// segmenting does not spend large buffers on MTU-sized frames). Set once
    /// at start-up; later calls are ignored.
    pub fn set_segment_pool(&self, pool: &'static Mempool) {
        let _ = self.segment_pool.set(pool);
    }

    /// The pool segments of this pool's TSO frames are allocated from: the one
    /// given to [`Mempool::set_segment_pool`], or this pool itself.
    #[inline]
    pub fn segment_pool(&'static self) -> &'static Mempool {
        self.segment_pool.get().copied().unwrap_or(self)
    }

    /// Allocates and initialises a pool that lives for the rest of the process.
    ///
    /// # Errors
    /// Invalid sizes, or no memory (with `Required`, the error says how many
    /// hugepages to reserve).
    pub fn create(cfg: &MempoolConfig) -> Result<&'static Mempool, MempoolError> {
        let invalid = |why| MempoolError::Invalid {
            name: cfg.name.clone(),
            why,
        };
        if cfg.n_mbufs == 0 || cfg.n_mbufs > 1 << 24 {
            return Err(invalid("n_mbufs must be 1..=16777216"));
        }
        if cfg.data_room < 64 || cfg.headroom + cfg.data_room > u32::from(u16::MAX) {
            return Err(invalid(
                "data_room must be >= 64 and headroom + data_room < 65536",
            ));
        }
        let stride = cfg.stride_bytes();
        let len = cfg.region_bytes();
        let mem = |source| MempoolError::Memory {
            name: cfg.name.clone(),
            source,
        };
        let region = match cfg.hugepages {
            HugepagePolicy::Never => Region::anonymous(len).map_err(mem)?,
            HugepagePolicy::Required => Region::hugepages(len).map_err(mem)?,
            HugepagePolicy::Auto => match Region::hugepages(len) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(
                        pool = %cfg.name,
                        "no hugepages for mbufs ({e}); using normal pages, expect lower throughput"
                    );
                    Region::anonymous(len).map_err(mem)?
                }
            },
        };
        // Relaxed: a unique counter, no data published through it.
        let id = NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed);
        if id as usize >= MAX_POOLS {
            return Err(MempoolError::TooMany);
        }
        let pool: &'static Mempool = Box::leak(Box::new(Mempool {
            id,
            name: cfg.name.clone(),
            region,
            stride,
            n: cfg.n_mbufs,
            headroom: cfg.headroom,
            data_room: cfg.data_room,
            cache_size: cfg.cache_size.clamp(1, 4096),
            free: Ring::new(cfg.n_mbufs as usize),
            alloc_failures: AtomicU64::new(0),
            cache_levels: Mutex::new(Vec::new()),
            segment_pool: std::sync::OnceLock::new(),
            shares: (cfg.port_share > 0 && cfg.port_share < cfg.n_mbufs).then(|| Shares {
                limit: cfg.port_share,
                counts: (0..MAX_SHARES).map(|_| ShareCount::default()).collect(),
                taken: Mutex::new(vec![false; MAX_SHARES]),
                refused: AtomicU64::new(0),
            }),
        }));
        let buf_len = (cfg.headroom + cfg.data_room) as u16;
        for idx in 0..pool.n {
            let hdr = pool.hdr_ptr(idx);
            // SAFETY: `hdr_ptr` is in bounds of the region and 64-byte aligned (slot
            // starts are multiples of the 64-byte stride from a page-aligned base);
            // no Mbuf exists yet, so nothing else accesses this header.
            unsafe {
                hdr.as_ptr()
                    .write(MbufHdr::new(pool, idx, cfg.headroom as u16, buf_len));
            }
            pool.free.push(idx).expect("ring sized for every buffer");
        }
        Ok(pool)
    }

    /// A small heap-backed (normal pages) pool for tests and tools.
    ///
    /// # Panics
    /// If memory cannot be mapped.
    pub fn for_tests(n_mbufs: u32) -> &'static Mempool {
        Mempool::create(&MempoolConfig {
            name: "test".into(),
            n_mbufs,
            hugepages: HugepagePolicy::Never,
            cache_size: 32,
            ..MempoolConfig::default()
        })
        .expect("test mempool")
    }

    #[inline]
    fn hdr_ptr(&self, idx: u32) -> NonNull<MbufHdr> {
        debug_assert!(idx < self.n);
        let off = idx as usize * self.stride;
        // SAFETY: idx < n, so off + stride <= region.len(): the result is inside the
        // mapping and non-null.
        unsafe { self.region.as_ptr().add(off).cast() }
    }

    /// Pool name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of buffers.
    pub fn capacity(&self) -> u32 {
        self.n
    }

    /// Data room per buffer.
    pub fn data_room(&self) -> u32 {
        self.data_room
    }

    /// Headroom per buffer.
    pub fn headroom(&self) -> u32 {
        self.headroom
    }

    /// What backs the pool.
    pub fn backing(&self) -> Backing {
        self.region.backing()
    }

    /// The pool's memory region (for DMA mapping or sharing by fd).
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// Bytes between slot starts.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Failed allocations so far.
    pub fn alloc_failures(&self) -> u64 {
        // Relaxed: a statistic.
        self.alloc_failures.load(Ordering::Relaxed)
    }

    /// Free buffers: shared ring plus every thread's cache. Exact when no thread is
    /// allocating or freeing at the moment.
    pub fn available(&self) -> u32 {
        let cached: u32 = self
            .cache_levels
            .lock()
            .map(|v| v.iter().map(|c| c.load(Ordering::Relaxed)).sum())
            .unwrap_or(0);
        self.free.len() as u32 + cached
    }

    /// Buffers handed out and not yet returned.
    pub fn in_use(&self) -> u32 {
        self.n.saturating_sub(self.available())
    }

    /// Allocates one buffer, empty, with `data_off` at the headroom.
    #[inline]
    pub fn alloc(&'static self) -> Option<Mbuf> {
        let idx = match with_cache(self, |c| c.pop()) {
            Some(from_cache) => from_cache,
            None => self.free.pop(),
        };
        match idx {
            Some(idx) => Some(self.mbuf_from_idx(idx)),
            None => {
                // Relaxed: a statistic.
                self.alloc_failures.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Allocates up to `n` buffers onto the end of `dst`; returns how many.
    /// One access to the thread's cache for all of them; a shortfall counts as
    /// one allocation failure.
    #[inline]
    pub fn alloc_bulk<const N: usize>(
        &'static self,
        dst: &mut ArrayVec<Mbuf, N>,
        n: usize,
    ) -> usize {
        let want = n.min(dst.remaining_capacity());
        if want == 0 {
            return 0;
        }
        let cached = with_cache(self, |c| {
            let mut got = 0;
            while got < want {
                let Some(idx) = c.pop_idx() else { break };
                dst.push(self.mbuf_from_idx(idx));
                got += 1;
            }
            c.set_level();
            got
        });
        let mut got = cached.unwrap_or(0);
        // No usable cache (thread exiting) or it ran dry: the shared ring.
        while got < want {
            let Some(idx) = self.free.pop() else { break };
            dst.push(self.mbuf_from_idx(idx));
            got += 1;
        }
        if got < want {
            // Relaxed: a statistic.
            self.alloc_failures.fetch_add(1, Ordering::Relaxed);
        }
        got
    }

    #[inline]
    fn mbuf_from_idx(&'static self, idx: u32) -> Mbuf {
        let hdr = self.hdr_ptr(idx);
        // SAFETY: idx came off the free list, so no other Mbuf refers to this slot
        // and we may hand out the unique handle; the header was initialised in
        // `create` and is reset here.
        unsafe { Mbuf::from_raw_reset(hdr, self.headroom as u16) }
    }

    /// A share of this pool for one port (control path). Without shares
    /// (no `port_share`), or with all [`MAX_SHARES`] in use, the share charges
    /// nothing and its allocations are plain ones.
    pub fn share(&'static self) -> PoolShare {
        let slot = self.shares.as_ref().and_then(|s| {
            let mut taken = s.taken.lock().unwrap_or_else(|e| e.into_inner());
            // A slot given up while its buffers are still out is not reused
            // until they are back, so that they are refunded to the right count.
            // Relaxed: a count; a stale non-zero only skips the slot.
            let i = (0..MAX_SHARES)
                .find(|&i| !taken[i] && s.counts[i].held.load(Ordering::Relaxed) == 0)?;
            taken[i] = true;
            Some(i as u16)
        });
        if slot.is_none() && self.shares.is_some() {
            tracing::warn!(pool = %self.name, "no free share: a port's buffers go uncounted");
        }
        PoolShare {
            pool: self,
            slot: slot.unwrap_or(crate::mbuf::NO_SHARE),
        }
    }

    /// Most buffers one share may hold (None: the pool has no shares).
    pub fn share_limit(&self) -> Option<u32> {
        self.shares.as_ref().map(|s| s.limit)
    }

    /// Charged allocations refused so far because the share was used up.
    pub fn share_refusals(&self) -> u64 {
        // Relaxed: a statistic.
        self.shares
            .as_ref()
            .map_or(0, |s| s.refused.load(Ordering::Relaxed))
    }

    /// Allocates one buffer charged to share `share` (a slot of a live or
    /// retiring [`PoolShare`] of this pool).
    #[inline]
    pub(crate) fn alloc_charged(&'static self, share: u16) -> Result<Mbuf, AllocError> {
        let Some(s) = self
            .shares
            .as_ref()
            .filter(|_| share != crate::mbuf::NO_SHARE)
        else {
            return self.alloc().ok_or(AllocError::Empty);
        };
        let count = &s.counts[share as usize].held;
        // Reserve first, then allocate: several workers may charge one share
        // (a port with queues on several workers), and the limit holds
        // exactly. Relaxed: the count bounds buffers; no data is published
        // through it (the buffer itself travels through rings that do).
        if count.fetch_add(1, Ordering::Relaxed) >= s.limit {
            count.fetch_sub(1, Ordering::Relaxed);
            // Relaxed: a statistic.
            s.refused.fetch_add(1, Ordering::Relaxed);
            return Err(AllocError::OverShare);
        }
        match self.alloc() {
            Some(mut m) => {
                m.set_share(share);
                Ok(m)
            }
            None => {
                // Relaxed: as above.
                count.fetch_sub(1, Ordering::Relaxed);
                Err(AllocError::Empty)
            }
        }
    }

    /// Gives back one buffer's charge to share `share` (its header field is
    /// already cleared).
    #[inline]
    pub(crate) fn refund(&self, share: u16) {
        if let Some(c) = self
            .shares
            .as_ref()
            .and_then(|s| s.counts.get(share as usize))
        {
            // Relaxed: see `alloc_charged`.
            c.held.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Whether share `share` holds its whole limit now.
    pub(crate) fn share_exhausted(&self, share: u16) -> bool {
        self.shares.as_ref().is_some_and(|s| {
            s.counts
                .get(share as usize)
                // Relaxed: a statistic-grade check (classifying a drop).
                .is_some_and(|c| c.held.load(Ordering::Relaxed) >= s.limit)
        })
    }

    /// Gives the charge of the buffer in slot `idx` back to share `share`,
    /// and clears its header's record of it (the state of a free slot).
    #[cold]
    #[inline(never)]
    fn refund_slot(&self, idx: u32, share: u16) {
        // SAFETY: idx < n (the buffer being freed is ours), so the header is
        // in bounds and initialised; its Mbuf is being dropped, so nothing
        // else accesses it.
        unsafe { (*self.hdr_ptr(idx).as_ptr()).clear_share() };
        self.refund(share);
    }

    /// Returns a buffer's slot to the pool, refunding `share` (the header's
    /// record of it) if it is charged to one. Called from `Mbuf::drop` only.
    #[inline]
    pub(crate) fn put(&'static self, idx: u32, share: u16) {
        if share != crate::mbuf::NO_SHARE {
            self.refund_slot(idx, share);
        }
        if with_cache(self, |c| c.push(idx)).is_none() {
            // No usable thread cache (thread exiting): straight to the shared ring.
            if self.free.push(idx).is_err() {
                debug_assert!(false, "free ring overflow: double free of mbuf {idx}");
            }
        }
    }
}

/// Frees the first `n` buffers of `bufs` (fewer if it holds fewer) and moves
/// the rest to the front, as `bufs.drain(..n)` would, but with one access to
/// the thread's cache when they all come from one pool (the packet path's
/// case: a transmitted burst).
#[inline]
pub fn free_front<const N: usize>(bufs: &mut ArrayVec<Mbuf, N>, n: usize) {
    let n = n.min(bufs.len());
    let Some(first) = bufs.first() else { return };
    let pool = first.pool();
    // A pool with shares: each buffer refunds its own share as it drops.
    if pool.shares.is_some() || !bufs[..n].iter().all(|m| std::ptr::eq(m.pool(), pool)) {
        bufs.drain(..n);
        return;
    }
    let done = with_cache(pool, |c| {
        for m in bufs.drain(..n) {
            c.push_idx(m.into_slot_index());
        }
        c.set_level();
    });
    if done.is_none() {
        // No usable thread cache (thread exiting): each returns by itself.
        bufs.drain(..n);
    }
}

/// One port's share of a pool: allocations through it are charged to the
/// port and refused beyond the pool's `port_share` (see the module docs). A
/// port's queues may share one (`Arc`); dropping it gives the share up once
/// every buffer charged to it is back.
#[derive(Debug)]
pub struct PoolShare {
    pool: &'static Mempool,
    slot: u16,
}

impl PoolShare {
    /// The pool.
    pub fn pool(&self) -> &'static Mempool {
        self.pool
    }

    /// Allocates one buffer charged to this share.
    ///
    /// # Errors
    /// [`AllocError::OverShare`] if the share holds its limit already,
    /// [`AllocError::Empty`] if the pool has no free buffer.
    #[inline]
    pub fn alloc(&self) -> Result<Mbuf, AllocError> {
        self.pool.alloc_charged(self.slot)
    }

    /// Buffers charged to this share and not yet freed.
    pub fn held(&self) -> u32 {
        self.pool
            .shares
            .as_ref()
            .and_then(|s| s.counts.get(self.slot as usize))
            // Relaxed: a statistic.
            .map_or(0, |c| c.held.load(Ordering::Relaxed))
    }
}

impl Drop for PoolShare {
    fn drop(&mut self) {
        if let Some(s) = &self.pool.shares {
            let mut taken = s.taken.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(t) = taken.get_mut(self.slot as usize) {
                *t = false;
            }
        }
    }
}

/// One thread's cache for one pool.
struct LocalCache {
    pool: &'static Mempool,
    items: ArrayVec<u32, 8192>,
    level: Arc<AtomicU32>,
}

impl LocalCache {
    fn new(pool: &'static Mempool) -> Box<LocalCache> {
        let level = Arc::new(AtomicU32::new(0));
        if let Ok(mut v) = pool.cache_levels.lock() {
            v.push(level.clone());
        }
        Box::new(LocalCache {
            pool,
            items: ArrayVec::new(),
            level,
        })
    }

    #[inline]
    fn set_level(&self) {
        // Relaxed: a statistic read by control; single writer (this thread).
        self.level.store(self.items.len() as u32, Ordering::Relaxed);
    }

    #[inline]
    fn pop(&mut self) -> Option<u32> {
        let v = self.pop_idx();
        self.set_level();
        v
    }

    /// Pops one index, refilling from the shared ring when empty; the caller
    /// updates the level.
    #[inline]
    fn pop_idx(&mut self) -> Option<u32> {
        if self.items.is_empty() {
            self.refill();
        }
        self.items.pop()
    }

    #[cold]
    fn refill(&mut self) {
        let refill = self.pool.cache_size as usize / 2 + 1;
        let mut tmp: ArrayVec<u32, 2048> = ArrayVec::new();
        self.pool.free.dequeue_burst(&mut tmp, refill.min(2048));
        self.items.extend(tmp);
    }

    #[inline]
    fn push(&mut self, idx: u32) {
        self.push_idx(idx);
        self.set_level();
    }

    /// Pushes one index, flushing half to the shared ring when full; the caller
    /// updates the level.
    #[inline]
    fn push_idx(&mut self, idx: u32) {
        if self.items.len() >= self.pool.cache_size as usize {
            self.flush(self.pool.cache_size as usize / 2);
        }
        self.items.push(idx);
    }

    fn flush(&mut self, keep: usize) {
        while self.items.len() > keep {
            let take = (self.items.len() - keep).min(2048);
            let start = self.items.len() - take;
            let mut tmp: ArrayVec<u32, 2048> = self.items.drain(start..).collect();
            while !tmp.is_empty() {
                if self.pool.free.enqueue_burst(&mut tmp) == 0 {
                    debug_assert!(false, "free ring overflow");
                    break;
                }
            }
        }
        self.set_level();
    }
}

impl Drop for LocalCache {
    fn drop(&mut self) {
        self.flush(0);
    }
}

thread_local! {
    static CACHES: RefCell<Vec<Option<Box<LocalCache>>>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's cache for `pool`, creating it on first use. Returns
/// None when the thread's caches are being torn down.
#[inline]
fn with_cache<R>(pool: &'static Mempool, f: impl FnOnce(&mut LocalCache) -> R) -> Option<R> {
    CACHES
        .try_with(|c| {
            let mut c = c.try_borrow_mut().ok()?;
            let i = pool.id as usize;
            if c.len() <= i {
                c.resize_with(i + 1, || None);
            }
            let cache = c[i].get_or_insert_with(|| LocalCache::new(pool));
            Some(f(cache))
        })
        .ok()
        .flatten()
}

/// Moves this thread's cached free buffers back to their pools' shared rings (for
/// a worker that is about to idle for a long time, and for exact accounting).
pub fn flush_thread_caches() {
    let _ = CACHES.try_with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            for cache in c.iter_mut().flatten() {
                cache.flush(0);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn alloc_until_empty_then_all_come_back() {
        let pool = Mempool::for_tests(100);
        let mut v = Vec::new();
        while let Some(m) = pool.alloc() {
            v.push(m);
        }
        assert_eq!(v.len(), 100);
        assert_eq!(pool.available(), 0);
        assert!(pool.alloc_failures() >= 1);
        drop(v);
        assert_eq!(pool.available(), 100);
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn bulk_alloc_and_free_front_keep_the_count() {
        let pool = Mempool::for_tests(40);
        let other = Mempool::for_tests(4);
        let mut b: ArrayVec<Mbuf, 64> = ArrayVec::new();
        assert_eq!(pool.alloc_bulk(&mut b, 30), 30);
        assert_eq!(pool.in_use(), 30);
        // Only 10 left: a shortfall is one failure, and every buffer is reset.
        let failures = pool.alloc_failures();
        assert_eq!(pool.alloc_bulk(&mut b, 20), 10);
        assert_eq!(pool.alloc_failures(), failures + 1);
        assert!(b.iter().all(|m| m.is_empty() && m.headroom() == 128));
        let mut slots: Vec<u32> = b.iter().map(Mbuf::slot_index).collect();
        slots.sort_unstable();
        slots.dedup();
        assert_eq!(slots.len(), 40);
        // The front 25 go back in one go; the rest keep their order.
        let rest: Vec<u32> = b[25..].iter().map(Mbuf::slot_index).collect();
        free_front(&mut b, 25);
        assert_eq!(b.iter().map(Mbuf::slot_index).collect::<Vec<_>>(), rest);
        assert_eq!(pool.in_use(), 15);
        // Mixed pools fall back to one at a time; n beyond the length is clamped.
        b.push(other.alloc().unwrap());
        free_front(&mut b, 100);
        assert!(b.is_empty());
        assert_eq!((pool.in_use(), other.in_use()), (0, 0));
        free_front(&mut b, 1);
    }

    fn shared_pool(n_mbufs: u32, port_share: u32) -> &'static Mempool {
        Mempool::create(&MempoolConfig {
            name: "shared".into(),
            n_mbufs,
            hugepages: HugepagePolicy::Never,
            cache_size: 4,
            port_share,
            ..MempoolConfig::default()
        })
        .expect("test mempool")
    }

    #[test]
    fn a_port_past_its_share_is_refused_and_another_port_still_allocates() {
        let pool = shared_pool(16, 4);
        let (a, b) = (pool.share(), pool.share());
        let held: Vec<Mbuf> = (0..4).map(|_| a.alloc().unwrap()).collect();
        assert_eq!(a.alloc().unwrap_err(), AllocError::OverShare);
        assert_eq!((a.held(), pool.share_refusals()), (4, 1));
        // A copy of a charged buffer is charged too: refused as well.
        assert!(held[0].try_clone().is_none());
        assert!(held[0].share_exhausted());
        assert_eq!(pool.share_refusals(), 2);
        let other: Vec<Mbuf> = (0..4).map(|_| b.alloc().unwrap()).collect();
        assert_eq!((b.held(), pool.in_use()), (4, 8));
        // Freed on another thread (a worker that sent the frames): refunded.
        std::thread::spawn(move || drop(held)).join().unwrap();
        assert_eq!(a.held(), 0);
        let copy = {
            let m = a.alloc().unwrap();
            m.try_clone().unwrap()
        };
        assert_eq!(a.held(), 1);
        drop((copy, other));
        assert_eq!((a.held(), b.held(), pool.in_use()), (0, 0, 0));
        // Plain allocations are charged to nobody.
        let plain: Vec<Mbuf> = (0..16).map(|_| pool.alloc().unwrap()).collect();
        assert_eq!(a.alloc().unwrap_err(), AllocError::Empty);
        drop(plain);
    }

    #[test]
    fn a_share_given_up_with_buffers_out_is_not_reused_until_they_return() {
        let pool = shared_pool(16, 2);
        let a = pool.share();
        let out = a.alloc().unwrap();
        let slot = a.slot;
        drop(a);
        let b = pool.share();
        assert_ne!(b.slot, slot);
        drop(out);
        let c = pool.share();
        let (x, y) = (c.alloc().unwrap(), c.alloc().unwrap());
        assert_eq!(c.alloc().unwrap_err(), AllocError::OverShare);
        drop((x, y, b, c));
        assert_eq!(pool.in_use(), 0);
        // A pool without shares: a share that charges nothing.
        let plain = Mempool::for_tests(2).share();
        let v = (plain.alloc().unwrap(), plain.alloc().unwrap());
        assert_eq!(
            (plain.held(), plain.alloc().unwrap_err()),
            (0, AllocError::Empty)
        );
        drop(v);
    }

    #[test]
    fn free_front_refunds_charged_buffers() {
        let pool = shared_pool(16, 8);
        let a = pool.share();
        let mut b: ArrayVec<Mbuf, 8> = (0..8).map(|_| a.alloc().unwrap()).collect();
        free_front(&mut b, 5);
        assert_eq!((a.held(), b.len()), (3, 3));
        drop(b);
        assert_eq!((a.held(), pool.in_use()), (0, 0));
    }

    #[test]
    fn buffers_are_distinct_and_sized() {
        let pool = Mempool::for_tests(64);
        let mut a = pool.alloc().unwrap();
        let mut b = pool.alloc().unwrap();
        assert_eq!(a.len(), 0);
        assert_eq!(a.tailroom(), 2048);
        assert_eq!(a.headroom(), 128);
        a.extend_from_slice(&[1; 100]).unwrap();
        b.extend_from_slice(&[2; 100]).unwrap();
        assert!(a.data().iter().all(|&x| x == 1));
        assert!(b.data().iter().all(|&x| x == 2));
    }

    #[test]
    fn the_computed_layout_is_the_layout_of_an_allocated_pool() {
        for (data_room, headroom) in [
            (DEFAULT_DATA_ROOM, DEFAULT_HEADROOM),
            (9216, DEFAULT_HEADROOM),
            (1000, 0),
            (MAX_DATA_ROOM, DEFAULT_HEADROOM),
        ] {
            let cfg = MempoolConfig {
                name: "layout".into(),
                n_mbufs: 8,
                data_room,
                headroom,
                hugepages: HugepagePolicy::Never,
                ..MempoolConfig::default()
            };
            let pool = Mempool::create(&cfg).unwrap();
            assert_eq!(pool.stride(), cfg.stride_bytes());
            assert_eq!(cfg.stride_bytes() % 64, 0);
            assert!(cfg.stride_bytes() >= HDR_BYTES + (headroom + data_room) as usize);
            let region = pool.region().len();
            assert!(
                (cfg.region_bytes()..cfg.region_bytes() + 4096).contains(&region),
                "{region} for {}",
                cfg.region_bytes()
            );
            let bufs: Vec<Mbuf> = (0..8).map(|_| pool.alloc().unwrap()).collect();
            let base = pool.region().as_ptr().as_ptr() as usize;
            let mut offsets: Vec<usize> = bufs
                .iter()
                .map(|m| m.data().as_ptr() as usize - base)
                .collect();
            offsets.sort_unstable();
            for (i, off) in offsets.iter().enumerate() {
                assert_eq!(*off, i * cfg.stride_bytes() + HDR_BYTES + headroom as usize);
            }
            let last = offsets[7] + data_room as usize;
            assert!(last <= cfg.region_bytes(), "data room past the region");
            assert_eq!(
                (bufs[0].headroom(), bufs[0].tailroom()),
                (headroom as usize, data_room as usize)
            );
            assert_eq!(
                cfg.hugepages_needed(),
                cfg.region_bytes().div_ceil(hugepage::HUGEPAGE_2M)
            );
        }
        // The default pool: 16384 slots of 64 + 128 + 2048 bytes, 35 MiB.
        let cfg = MempoolConfig::default();
        assert_eq!(cfg.stride_bytes(), 2240);
        assert_eq!(cfg.region_bytes(), 35 << 20);
        assert_eq!(cfg.hugepages_needed(), 18);
    }

    #[test]
    fn required_hugepages_error_says_how_to_reserve() {
        let err = Mempool::create(&MempoolConfig {
            name: "huge".into(),
            n_mbufs: 1 << 24,
            data_room: 60000,
            hugepages: HugepagePolicy::Required,
            ..Default::default()
        })
        .unwrap_err();
        let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert!(chain.contains("nr_hugepages"), "{chain}");
    }

    #[test]
    fn two_threads_exchanging_buffers_lose_none_and_double_free_none() {
        let pool = Mempool::for_tests(512);
        let ring: &'static Ring<Mbuf> = Box::leak(Box::new(Ring::new(256)));
        const ROUNDS: usize = 100_000;
        let sent = Arc::new(AtomicUsize::new(0));
        let producer = {
            let sent = sent.clone();
            std::thread::spawn(move || {
                let mut n = 0usize;
                while n < ROUNDS {
                    if let Some(mut m) = pool.alloc() {
                        m.extend_from_slice(&(n as u64).to_le_bytes()).unwrap();
                        let mut m = Some(m);
                        while let Some(x) = m.take() {
                            if let Err(x) = ring.push(x) {
                                m = Some(x);
                                std::thread::yield_now();
                            }
                        }
                        n += 1;
                    } else {
                        std::thread::yield_now();
                    }
                }
                sent.store(n, Ordering::Release);
                flush_thread_caches();
            })
        };
        let consumer = std::thread::spawn(move || {
            let mut expect = 0u64;
            while expect < ROUNDS as u64 {
                let mut b: ArrayVec<Mbuf, 32> = ArrayVec::new();
                if ring.dequeue_burst(&mut b, 32) == 0 {
                    std::thread::yield_now();
                    continue;
                }
                for m in b {
                    let v = u64::from_le_bytes(m.data()[..8].try_into().unwrap());
                    assert_eq!(v, expect);
                    expect += 1;
                }
            }
            flush_thread_caches();
        });
        producer.join().unwrap();
        consumer.join().unwrap();
        assert_eq!(sent.load(Ordering::Acquire), ROUNDS);
        assert_eq!(pool.available(), 512);
        // Every slot is on the free list exactly once: draining yields 512 distinct.
        let mut held = Vec::new();
        while let Some(m) = pool.alloc() {
            held.push(m);
        }
        let mut all: Vec<u32> = held.iter().map(Mbuf::slot_index).collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 512);
    }
}
