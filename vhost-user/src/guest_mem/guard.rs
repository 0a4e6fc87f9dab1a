//! Surviving guest memory that shrinks under weir: a process-wide SIGBUS
//! handler and a fixed-size, lock-free registry of the guest mappings it may
//! rescue.
//!
//! Layer: device, memory boundary (part of [`crate::guest_mem`]). The
//! registry is written on the control side; the worker reads one atomic per
//! burst ([`epoch`]).
//!
//! A frontend can `ftruncate` a memory file after weir mapped it (the size was
//! checked at SET_MEM_TABLE, but nothing stops it shrinking later unless the
//! file carries `F_SEAL_SHRINK`). The kernel then raises SIGBUS on the next
//! access to a page past the new end of the file, which would kill the whole
//! daemon. The handler looks the faulting address up here; if it lies inside a
//! registered mapping it replaces that whole mapping with private anonymous
//! zero pages (`mmap(MAP_FIXED)`), marks the registration poisoned and bumps
//! [`epoch`]; the faulting access then retries and completes harmlessly on the
//! zero pages. The port that used the memory notices the poisoned flag after
//! its burst and goes to the error state. Faults anywhere else go to the
//! handler that was installed before (Rust's stack-overflow handler, or the
//! default action).
//!
//! Everything the handler touches is a `static` of atomics: no allocation, no
//! lock, nothing freed under it. A slot is a small seqlock: its state word
//! carries a generation (bits 2..) and a status (bits 0..2); the handler
//! reads the address range between two loads of the state word and only uses
//! it if they agree, so a slot being reused concurrently is skipped, never
//! half-read.

use std::io;
use std::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// How many mappings can be guarded at once (process-wide): a vhost-user
/// memory table has at most [`MAX_REGIONS`](crate::msg::MAX_REGIONS)
/// regions, and each connection keeps one table guarded plus, for a moment,
/// the old one its rings still hold; one connection per device, and at most
/// [`MAX_PORTS`](dataplane::switch::MAX_PORTS) ports; 256 more for guarded
/// tables outside ports (tests, tools). 24 bytes a slot (1.5 MiB of zeroed
/// static memory, touched only as far as it is used, and by a SIGBUS).
pub const SLOTS: usize = dataplane::switch::MAX_PORTS * 2 * crate::msg::MAX_REGIONS + 256;

const STATUS_MASK: u64 = 0b11;
const FREE: u64 = 0;
const BUSY: u64 = 1;
const LIVE: u64 = 2;
const POISONED: u64 = 3;
const GEN_STEP: u64 = 4;

struct Slot {
    /// `generation << 2 | status`.
    state: AtomicU64,
    start: AtomicUsize,
    len_bytes: AtomicUsize,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            state: AtomicU64::new(FREE),
            start: AtomicUsize::new(0),
            len_bytes: AtomicUsize::new(0),
        }
    }
}

static REGISTRY: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];

/// Where `register` starts looking for a free slot (so that filling the
/// registry costs O(slots), not O(slots²)).
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Bumped by the handler each time it poisons a mapping.
static EPOCH: AtomicU64 = AtomicU64::new(0);

/// The SIGBUS disposition found before ours was installed (chained to).
static PREV: OnceLock<Prev> = OnceLock::new();

/// Whether ours is installed (or the errno that prevented it).
static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();

#[derive(Clone, Copy)]
struct Prev(libc::sigaction);

// SAFETY: a `sigaction` is plain data (a handler address, flags and a signal
// mask); it is written once before our handler is installed and only read
// afterwards.
unsafe impl Send for Prev {}
// SAFETY: as for Send.
unsafe impl Sync for Prev {}

/// How many mappings the handler has rescued so far. A worker compares it
/// once per burst (one relaxed load of a rarely written word) and only then
/// asks its memory table whether it was hit.
#[inline]
pub fn epoch() -> u64 {
    // Acquire: pairs with the handler's Release increment, so the poisoned
    // flag it set before is visible to the check that follows.
    EPOCH.load(Ordering::Acquire)
}

/// Why a mapping could not be guarded.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// The SIGBUS handler could not be installed.
    #[error("cannot install the SIGBUS handler")]
    Install(#[source] io::Error),
    /// All [`SLOTS`] registrations are in use.
    #[error("more than {SLOTS} guest memory mappings are live")]
    Full,
}

/// One registered mapping; unregisters on drop. The mapping must outlive it.
#[derive(Debug)]
pub struct Guard {
    slot: usize,
    /// The state word while live (generation | LIVE).
    live: u64,
}

impl Guard {
    /// Registers the mapping `[start, start + len_bytes)`: a SIGBUS inside it
    /// from now on replaces it with zero pages instead of killing the process.
    ///
    /// # Safety
    /// `start..start + len_bytes` must be one whole mapping (as returned by
    /// `mmap`) that stays mapped, and is used by nobody but guest-memory
    /// accessors that tolerate its contents turning to zeros, until the
    /// returned [`Guard`] is dropped.
    ///
    /// # Errors
    /// [`GuardError`] if the handler cannot be installed or the registry is
    /// full.
    pub unsafe fn register(start: *mut u8, len_bytes: usize) -> Result<Guard, GuardError> {
        install()?;
        // Relaxed: only a hint.
        let from = NEXT.load(Ordering::Relaxed) % SLOTS;
        for i in (from..SLOTS).chain(0..from) {
            let s = &REGISTRY[i];
            // Relaxed: the compare-exchange below decides.
            let st = s.state.load(Ordering::Relaxed);
            if st & STATUS_MASK != FREE {
                continue;
            }
            let gen = st & !STATUS_MASK;
            // Relaxed + fence: the seqlock writer side; BUSY is visible before
            // the range changes.
            if s.state
                .compare_exchange(st, gen | BUSY, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            fence(Ordering::Release);
            // Relaxed: published by the Release store of LIVE below.
            s.start.store(start as usize, Ordering::Relaxed);
            s.len_bytes.store(len_bytes, Ordering::Relaxed);
            // Release: the handler's Acquire load of LIVE sees the range.
            s.state.store(gen | LIVE, Ordering::Release);
            // Relaxed: only a hint.
            NEXT.store(i + 1, Ordering::Relaxed);
            return Ok(Guard {
                slot: i,
                live: gen | LIVE,
            });
        }
        Err(GuardError::Full)
    }

    /// True once a SIGBUS inside the mapping replaced it with zero pages.
    #[inline]
    pub fn poisoned(&self) -> bool {
        // Relaxed: a status flag; the zero pages are already in place (the
        // handler mapped them before setting it, on whatever thread faulted).
        REGISTRY[self.slot].state.load(Ordering::Relaxed) == (self.live & !STATUS_MASK) | POISONED
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let next = (self.live & !STATUS_MASK).wrapping_add(GEN_STEP) | FREE;
        // Release: a handler that saw our range sees it withdrawn no earlier
        // than the new generation.
        REGISTRY[self.slot].state.store(next, Ordering::Release);
    }
}

/// Installs the handler once per process.
fn install() -> Result<(), GuardError> {
    let r = INSTALLED.get_or_init(|| {
        // SAFETY: an all-zero `sigaction` is a valid value (SIG_DFL, no
        // flags, empty mask), filled in by the kernel below.
        let mut prev: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: queries the current disposition into a local; no pointer
        // is kept.
        if unsafe { libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut prev) } != 0 {
            return Err(io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        // Stored before ours is installed, so the handler always finds it.
        let _ = PREV.set(Prev(prev));
        // SAFETY: as above; zeroed is a valid starting value.
        let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
        act.sa_sigaction = on_sigbus as *const () as libc::sighandler_t;
        // SA_ONSTACK: a fault on a thread near its stack limit still runs
        // (threads spawned by Rust have an alternate stack).
        act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: `act.sa_mask` is a valid sigset_t to clear.
        unsafe { libc::sigemptyset(&mut act.sa_mask) };
        // SAFETY: installs `on_sigbus`, which is async-signal-safe (atomics,
        // mmap and sigaction only; `PREV` is already set).
        if unsafe { libc::sigaction(libc::SIGBUS, &act, std::ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        Ok(())
    });
    match r {
        Ok(_) => Ok(()),
        Err(code) => Err(GuardError::Install(io::Error::from_raw_os_error(*code))),
    }
}

/// The SIGBUS handler.
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler;
    // for SIGBUS `si_addr` is the faulting address.
    let addr = unsafe { (*info).si_addr() } as usize;
    // SAFETY: `info` is valid (above); si_code is in the common header.
    let from_kernel = unsafe { (*info).si_code } > 0;
    if from_kernel && rescue(addr) {
        return;
    }
    chain(sig, info, ctx);
}

/// Looks `addr` up; if a registered mapping holds it, replaces that mapping
/// with zero pages, marks every registration of it poisoned and returns true.
/// Async-signal-safe.
fn rescue(addr: usize) -> bool {
    let mut hit = None;
    for s in REGISTRY.iter() {
        // Acquire: pairs with the Release store of LIVE in `register`.
        let st = s.state.load(Ordering::Acquire);
        if st & STATUS_MASK < LIVE {
            continue;
        }
        // Relaxed: validated by the second load of `state` below.
        let start = s.start.load(Ordering::Relaxed);
        let len = s.len_bytes.load(Ordering::Relaxed);
        // Acquire: the range loads above happen before the check below.
        fence(Ordering::Acquire);
        // Relaxed: ordered by the fence.
        if s.state.load(Ordering::Relaxed) != st || addr.wrapping_sub(start) >= len {
            continue;
        }
        if st & STATUS_MASK == LIVE {
            // Relaxed: a status flag; failure means the slot was just freed
            // or already poisoned.
            let _ = s.state.compare_exchange(
                st,
                (st & !STATUS_MASK) | POISONED,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        hit = Some((start, len));
    }
    let Some((start, len)) = hit else {
        return false;
    };
    if !zero_fill(start, len) {
        return false;
    }
    // Release: a worker that sees the new epoch sees the poisoned flag.
    EPOCH.fetch_add(1, Ordering::Release);
    true
}

/// Replaces the whole mapping at `start` with private anonymous zero pages.
/// The whole mapping, not one page: hugetlb mappings can only be replaced in
/// whole huge pages, and once one page is gone the rest is no longer the
/// frontend's memory anyway.
fn zero_fill(start: usize, len: usize) -> bool {
    // The mapping is accessed only by guest-memory accessors that accept any
    // contents, so new zero pages in its place break nothing.
    // SAFETY: `start..start + len` is a whole, still mapped mapping registered
    // under `Guard::register`'s contract; MAP_FIXED replaces it in place.
    let p = unsafe {
        libc::mmap(
            start as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    p as usize == start
}

/// Hands a fault we do not own to the previous handler, or restores the
/// default action so that returning re-runs the access and kills the process
/// as it would have without us.
fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    if let Some(Prev(prev)) = PREV.get() {
        let h = prev.sa_sigaction;
        if h != libc::SIG_DFL && h != libc::SIG_IGN {
            if prev.sa_flags & libc::SA_SIGINFO != 0 {
                type Handler = extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void);
                // SAFETY: with SA_SIGINFO the previous handler, installed by the
                // process for this signal, has this signature (sigaction(2)).
                let f: Handler = unsafe { std::mem::transmute(h) };
                f(sig, info, ctx);
            } else {
                // SAFETY: without SA_SIGINFO the handler takes the signal
                // number only.
                let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(h) };
                f(sig);
            }
            return;
        }
    }
    // SAFETY: a zeroed sigaction is SIG_DFL with no flags; resetting the
    // disposition is async-signal-safe.
    unsafe {
        let dfl: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, &dfl, std::ptr::null_mut());
    }
    // SAFETY: `info` is valid (see `on_sigbus`).
    if unsafe { (*info).si_code } <= 0 {
        // Sent by kill(2), not raised by an access: returning would not
        // repeat it, so deliver it again under the default action.
        // SAFETY: raise is async-signal-safe.
        unsafe { libc::raise(sig) };
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Tests that fill or inspect the registry run one at a time.
    pub(crate) static SERIAL: Mutex<()> = Mutex::new(());

    fn free_slots() -> usize {
        REGISTRY
            .iter()
            .filter(|s| s.state.load(Ordering::Relaxed) & STATUS_MASK == FREE)
            .count()
    }

    #[test]
    fn only_registered_live_ranges_are_rescued() {
        let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let mut buf = vec![0u8; 0x3000];
        let base = buf.as_mut_ptr();
        // A registration whose range is never faulted: lookups only.
        // SAFETY: test-only; `rescue` is never reached for this range (the
        // addresses below are outside it or unregistered), so nothing is
        // remapped over the Vec.
        let g = unsafe { Guard::register(base.wrapping_add(0x1000), 0x1000) }.unwrap();
        let outside = base as usize + 0x2000;
        assert!(!rescue(outside), "past the end");
        assert!(!rescue(base as usize + 0xfff), "before the start");
        assert!(!g.poisoned());
        let slot = g.slot;
        drop(g);
        assert_eq!(
            REGISTRY[slot].state.load(Ordering::Relaxed) & STATUS_MASK,
            FREE
        );
        assert!(!rescue(base as usize + 0x1000), "unregistered");
    }

    #[test]
    fn the_registry_holds_two_full_tables_for_every_port() {
        let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        // Every port's device with a table of the most regions, and the
        // table it is replacing.
        let want = dataplane::switch::MAX_PORTS * 2 * crate::msg::MAX_REGIONS;
        let held: Vec<Guard> = (0..want)
            .map(|i| {
                // SAFETY: no fault is ever raised in these ranges (never
                // mapped or touched); only the registry is tested.
                unsafe { Guard::register((0x1000 * (i + 1)) as *mut u8, 0x1000) }
                    .unwrap_or_else(|e| panic!("mapping {i} of {want}: {e}"))
            })
            .collect();
        assert_eq!(held.len(), want);
    }

    #[test]
    fn the_registry_refuses_more_than_its_slots_and_reuses_freed_ones() {
        let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let free = free_slots();
        let mut held = Vec::new();
        for i in 0..free {
            // SAFETY: no fault is ever raised in these ranges (address 0x1000
            // pages are never mapped or touched); only the registry is tested.
            held.push(unsafe { Guard::register((0x1000 * (i + 1)) as *mut u8, 0x1000) }.unwrap());
        }
        // SAFETY: as above.
        let full = unsafe { Guard::register(0x1000 as *mut u8, 0x1000) };
        assert!(matches!(full, Err(GuardError::Full)));
        let old = held.pop().unwrap();
        let (slot, live) = (old.slot, old.live);
        drop(old);
        // SAFETY: as above.
        let again = unsafe { Guard::register(0x1000 as *mut u8, 0x1000) }.unwrap();
        assert_eq!(again.slot, slot);
        assert_ne!(again.live, live, "a reused slot has a new generation");
        drop(held);
        drop(again);
        assert_eq!(free_slots(), free);
    }
}
