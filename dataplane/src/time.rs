//! Cheap cycle counter for busy/idle accounting.
//!
//! Layer: shared utility. On the packet path (read once per poll round, never per
//! packet). On x86-64 this is `rdtsc` (constant-rate on every CPU weir targets);
//! elsewhere it falls back to a monotonic clock in nanoseconds.
#![allow(unsafe_code)]

/// Current value of the cycle counter. Units are TSC ticks on x86-64 and
/// nanoseconds elsewhere; only differences are meaningful.
#[inline]
pub fn cycles() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `rdtsc` is available on every x86-64 CPU and has no memory
        // effects; it only reads the time-stamp counter.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        use std::sync::OnceLock;
        static START: OnceLock<std::time::Instant> = OnceLock::new();
        START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_nanos() as u64
    }
}
