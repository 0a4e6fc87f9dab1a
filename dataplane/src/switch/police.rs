//! Rate limits: ingress policing, egress rate and storm control, each a
//! token bucket that drops what exceeds it.
//!
//! Layer: switch. Used by the [`super::pipeline`] for ports with
//! `ingress_policing_rate`, `egress_rate` or `storm_pps` set.
//!
//! A bucket is kept as the generic cell rate algorithm's one number, the
//! theoretical arrival time (TAT) in cycle-counter ticks: a frame of cost `c`
//! conforms if `max(TAT, now) + c·T` lies at most `τ` ahead of now (`T` the
//! ticks per unit of cost, `τ` the burst in ticks), and then moves TAT there.
//! That is a token bucket of depth `τ / T` filled at `1 / T` units per tick,
//! kept in a single atomic word, so workers that share a port share its
//! bucket without a lock. `T` is fixed point (16 fractional bits), so a
//! frame costs one multiplication and no division; the clock is read once
//! per burst.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;

use crate::time;

/// Fractional bits of [`TokenBucket`]'s ticks per unit.
const FRAC_BITS: u32 = 16;

/// Smallest burst of a byte bucket, in bytes: one largest segmentation
/// offload frame (64 KiB plus headers), so that no single frame can exceed
/// the bucket's depth and never pass.
pub const MIN_BURST_BYTES: u64 = 65_536 + 128;

/// Burst of an ingress policer whose `ingress_policing_burst` is 0, in kbit
/// (as Open vSwitch).
pub const DEFAULT_POLICING_BURST_KBIT: u64 = 8_000;

/// Ticks of [`time::cycles`] per second, measured once against the
/// monotonic clock (10 ms) on first use. Call from the control side (as
/// [`TokenBucket::new`] does) so that no worker waits for it.
pub fn cycles_per_sec() -> u64 {
    static HZ: LazyLock<u64> = LazyLock::new(|| {
        let (t0, c0) = (std::time::Instant::now(), time::cycles());
        std::thread::sleep(std::time::Duration::from_millis(10));
        let (dt, dc) = (t0.elapsed(), time::cycles().wrapping_sub(c0));
        ((dc as u128 * 1_000_000_000) / dt.as_nanos().max(1)) as u64
    });
    *HZ
}

/// A token bucket (see the module notes).
#[derive(Debug)]
pub struct TokenBucket {
    /// Theoretical arrival time, in cycle-counter ticks.
    tat: AtomicU64,
    /// Ticks per unit of cost, with [`FRAC_BITS`] fractional bits.
    ticks_per_unit: u64,
    /// Burst tolerance in ticks.
    tau: u64,
    /// The settings, for display and comparison.
    rate_per_sec: u64,
    burst: u64,
}

impl PartialEq for TokenBucket {
    /// Equal settings (the state is not compared).
    fn eq(&self, o: &Self) -> bool {
        (self.rate_per_sec, self.burst) == (o.rate_per_sec, o.burst)
    }
}

impl Eq for TokenBucket {}

impl Clone for TokenBucket {
    /// A bucket with the same settings, full.
    fn clone(&self) -> Self {
        TokenBucket::with_hz(self.rate_per_sec, self.burst, cycles_per_sec())
    }
}

impl TokenBucket {
    /// A full bucket filled at `rate_per_sec` units per second (at least 1)
    /// and holding at most `burst` units.
    pub fn new(rate_per_sec: u64, burst: u64) -> TokenBucket {
        TokenBucket::with_hz(rate_per_sec, burst, cycles_per_sec())
    }

    fn with_hz(rate_per_sec: u64, burst: u64, hz: u64) -> TokenBucket {
        let rate = rate_per_sec.max(1);
        let ticks_per_unit = ((u128::from(hz) << FRAC_BITS) / u128::from(rate)) as u64;
        let tau = ((u128::from(burst) * u128::from(ticks_per_unit)) >> FRAC_BITS) as u64;
        TokenBucket {
            tat: AtomicU64::new(0),
            ticks_per_unit,
            tau,
            rate_per_sec: rate,
            burst,
        }
    }

    /// Units per second.
    pub fn rate_per_sec(&self) -> u64 {
        self.rate_per_sec
    }

    /// Depth in units.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// Takes `cost` units at time `now` (cycle-counter ticks, read once per
    /// burst); false, and nothing taken, if the bucket does not hold them.
    #[inline]
    pub fn take(&self, now: u64, cost: u64) -> bool {
        let add = cost.saturating_mul(self.ticks_per_unit) >> FRAC_BITS;
        // Relaxed: the word is the whole state; no other memory is published
        // with it.
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let next = tat.max(now).saturating_add(add);
            if next - now > self.tau {
                return false;
            }
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(seen) => tat = seen,
            }
        }
    }
}

/// A port's rate limits. Each is `None` when not set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortLimits {
    /// Ingress policing: bytes per second received from the port.
    pub ingress: Option<TokenBucket>,
    /// Egress rate: bytes per second sent to the port.
    pub egress: Option<TokenBucket>,
    /// Storm control: broadcast, multicast and unknown unicast frames per
    /// second received from the port.
    pub storm: Option<TokenBucket>,
}

impl PortLimits {
    /// Limits from Open vSwitch's keys: `ingress_policing_rate` and
    /// `ingress_policing_burst` in kbit/s and kbit (burst 0: the default),
    /// `egress_rate` in kbit/s, `storm_pps` in frames per second. A rate of
    /// 0 (or `None`) means no limit.
    pub fn new(
        ingress_kbps: Option<u64>,
        ingress_burst_kbit: Option<u64>,
        egress_kbps: Option<u64>,
        storm_pps: Option<u64>,
    ) -> PortLimits {
        let bytes = |kbit: u64| kbit.saturating_mul(125);
        PortLimits {
            ingress: ingress_kbps.filter(|&r| r > 0).map(|r| {
                let burst = match ingress_burst_kbit {
                    Some(b) if b > 0 => b,
                    _ => DEFAULT_POLICING_BURST_KBIT,
                };
                TokenBucket::new(bytes(r), bytes(burst).max(MIN_BURST_BYTES))
            }),
            // A tenth of a second of the rate, at least one large frame.
            egress: egress_kbps
                .filter(|&r| r > 0)
                .map(|r| TokenBucket::new(bytes(r), (bytes(r) / 10).max(MIN_BURST_BYTES))),
            // A tenth of a second of frames, at least one burst.
            storm: storm_pps
                .filter(|&p| p > 0)
                .map(|p| TokenBucket::new(p, (p / 10).max(crate::port::MAX_BURST as u64))),
        }
    }

    /// Whether any limit is set.
    pub fn is_empty(&self) -> bool {
        self.ingress.is_none() && self.egress.is_none() && self.storm.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HZ: u64 = 1_000_000_000; // one tick per nanosecond

    #[test]
    fn a_full_bucket_passes_its_burst_then_its_rate() {
        // 1000 units per second, 100 deep: one unit per millisecond.
        let b = TokenBucket::with_hz(1000, 100, HZ);
        let t0 = 5 * HZ;
        let passed = (0..200).filter(|_| b.take(t0, 1)).count();
        assert_eq!(passed, 100, "the burst, at once");
        assert!(!b.take(t0, 1));
        // 10 ms later: 10 more.
        let t1 = t0 + 10_000_000;
        assert_eq!((0..50).filter(|_| b.take(t1, 1)).count(), 10);
        // Over a second at 2000 offered per second, about 1000 pass.
        let mut passed = 0;
        for i in 0..2000u64 {
            passed += usize::from(b.take(t1 + i * 500_000, 1));
        }
        assert!((995..=1005).contains(&passed), "{passed}");
    }

    #[test]
    fn a_frame_larger_than_what_is_left_waits_and_takes_nothing() {
        let b = TokenBucket::with_hz(1000, 100, HZ);
        let t0 = HZ;
        assert!(b.take(t0, 60));
        assert!(!b.take(t0, 60), "40 left");
        assert!(b.take(t0, 40), "the refused frame took nothing");
    }

    #[test]
    fn ovs_units_become_bytes_and_frames() {
        let l = PortLimits::new(Some(10_000), Some(0), Some(1_000), Some(500));
        let ing = l.ingress.as_ref().unwrap();
        assert_eq!(ing.rate_per_sec(), 1_250_000);
        assert_eq!(ing.burst(), DEFAULT_POLICING_BURST_KBIT * 125);
        assert_eq!(l.egress.as_ref().unwrap().burst(), MIN_BURST_BYTES);
        assert_eq!(l.storm.as_ref().unwrap().rate_per_sec(), 500);
        assert!(PortLimits::new(Some(0), None, None, Some(0)).is_empty());
    }

    #[test]
    fn the_counter_rate_is_measured() {
        let hz = cycles_per_sec();
        assert!(hz > 1_000_000, "{hz}");
    }
}
