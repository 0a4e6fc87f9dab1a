//! Live capture and port mirroring: copies of the frames a port receives,
//! transmits or drops, handed from the workers to a control thread that
//! writes them out ([`Capture`]), or sent on another port ([`Mirror`]).
//!
//! Layer: buffers/ports (depends on `ids`, `ring`, `stats`). On the packet
//! path, but only for ports with a capture on: the switch's tables hold a
//! port's [`PortTaps`] only while a capture runs on it, and a worker tests for
//! them once per burst. A capture owns a fixed set of slots allocated when it
//! starts; a worker takes a free slot, copies the frame into it (up to the
//! capture's snap length) and queues it for the reader, which gives it back.
//! With no free slot the copy is not made and counted as lost: a slow reader
//! (or disk) loses capture copies, never the frames themselves.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::ids::PortId;
use crate::ring::Ring;
use crate::stats::DropReason;

/// Which way a captured frame went through its port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Received on the port.
    Rx,
    /// Sent on the port.
    Tx,
}

/// What a capture takes from its port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureFilter {
    /// Frames received on the port.
    pub rx: bool,
    /// Frames sent on the port.
    pub tx: bool,
    /// Frames received on the port and dropped by the switch, with the reason.
    pub drops: bool,
}

/// One captured frame: where and when it was seen, and its first bytes.
#[derive(Debug)]
pub struct CaptureSlot {
    /// The port it was seen on.
    pub port: PortId,
    /// Received or sent.
    pub direction: Direction,
    /// Why the switch dropped it, for a frame captured as a drop.
    pub drop: Option<DropReason>,
    /// When the worker saw it (the burst's time), nanoseconds since the Unix
    /// epoch.
    pub timestamp_ns: u64,
    /// The frame's length on the wire.
    pub orig_len_bytes: u32,
    len: usize,
    data: Box<[u8]>,
}

impl CaptureSlot {
    fn new(snaplen_bytes: usize) -> Box<CaptureSlot> {
        Box::new(CaptureSlot {
            port: PortId(0),
            direction: Direction::Rx,
            drop: None,
            timestamp_ns: 0,
            orig_len_bytes: 0,
            len: 0,
            data: vec![0; snaplen_bytes].into_boxed_slice(),
        })
    }

    /// The captured bytes (the frame, cut at the capture's snap length).
    pub fn data(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

/// One capture session: its slots, the queue of filled ones and its counts.
#[derive(Debug)]
pub struct Capture {
    filter: CaptureFilter,
    /// Slots ready to be filled by a worker.
    free: Ring<Box<CaptureSlot>>,
    /// Filled slots waiting for the reader.
    full: Ring<Box<CaptureSlot>>,
    captured: AtomicU64,
    lost: AtomicU64,
    stopped: AtomicBool,
}

/// Smallest and largest snap length a capture takes.
pub const SNAPLEN_RANGE: std::ops::RangeInclusive<usize> = 64..=65535;

impl Capture {
    /// A capture with `slots` slots (rounded up to a power of two) of
    /// `snaplen_bytes` each, all allocated here.
    ///
    /// # Panics
    /// If `slots` is 0 or above 2^20, or `snaplen_bytes` is outside
    /// [`SNAPLEN_RANGE`] (the control plane checks both first).
    pub fn new(filter: CaptureFilter, slots: usize, snaplen_bytes: usize) -> Arc<Capture> {
        assert!(slots > 0 && slots <= 1 << 20, "capture slots {slots}");
        assert!(
            SNAPLEN_RANGE.contains(&snaplen_bytes),
            "snaplen {snaplen_bytes}"
        );
        let free = Ring::new(slots);
        let full = Ring::new(slots);
        for _ in 0..free.capacity() {
            // Cannot fail: the ring has room for exactly this many.
            let _ = free.push(CaptureSlot::new(snaplen_bytes));
        }
        Arc::new(Capture {
            filter,
            free,
            full,
            captured: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        })
    }

    /// What this capture takes.
    #[inline]
    pub fn filter(&self) -> CaptureFilter {
        self.filter
    }

    /// Copies `frame` (whole length `orig_len_bytes`) into a free slot and
    /// queues it for the reader; with no free slot, counts it as lost.
    /// Worker side; no allocation.
    pub fn record(
        &self,
        port: PortId,
        direction: Direction,
        drop: Option<DropReason>,
        timestamp_ns: u64,
        frame: &[u8],
    ) {
        // Relaxed: a flag the reader sets once; a few frames more are harmless.
        if self.stopped.load(Ordering::Relaxed) {
            return;
        }
        let Some(mut slot) = self.free.pop() else {
            // Relaxed: a statistic.
            self.lost.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let n = frame.len().min(slot.data.len());
        slot.data[..n].copy_from_slice(&frame[..n]);
        slot.len = n;
        slot.port = port;
        slot.direction = direction;
        slot.drop = drop;
        slot.timestamp_ns = timestamp_ns;
        slot.orig_len_bytes = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        match self.full.push(slot) {
            // Relaxed: a statistic.
            Ok(()) => {
                self.captured.fetch_add(1, Ordering::Relaxed);
            }
            Err(slot) => {
                // Cannot happen (both rings hold every slot), but never leak one.
                let _ = self.free.push(slot);
                // Relaxed: a statistic.
                self.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The oldest captured frame, if any. Reader side; give the slot back
    /// with [`Capture::recycle`] once written.
    pub fn take(&self) -> Option<Box<CaptureSlot>> {
        self.full.pop()
    }

    /// Returns a slot from [`Capture::take`] to the workers.
    pub fn recycle(&self, slot: Box<CaptureSlot>) {
        let _ = self.free.push(slot);
    }

    /// Tells the workers to copy no more frames (they stop at their next
    /// frame; the tables drop the capture at the next publication).
    pub fn stop(&self) {
        // Relaxed: see `record`.
        self.stopped.store(true, Ordering::Relaxed);
    }

    /// Frames copied into a slot so far.
    pub fn captured(&self) -> u64 {
        // Relaxed: a statistic.
        self.captured.load(Ordering::Relaxed)
    }

    /// Frames that found no free slot so far.
    pub fn lost(&self) -> u64 {
        // Relaxed: a statistic.
        self.lost.load(Ordering::Relaxed)
    }
}

/// A port mirror (SPAN): copies of the frames some ports receive or send,
/// transmitted on an output port. The switch's tables list it in the
/// [`PortTaps`] of each of its source ports.
#[derive(Debug)]
pub struct Mirror {
    /// Its name.
    pub name: Arc<str>,
    /// The port the copies go to.
    pub to: PortId,
    copied: AtomicU64,
    lost: AtomicU64,
}

impl Mirror {
    /// A mirror named `name` to port `to`.
    pub fn new(name: &str, to: PortId) -> Arc<Mirror> {
        Arc::new(Mirror {
            name: name.into(),
            to,
            copied: AtomicU64::new(0),
            lost: AtomicU64::new(0),
        })
    }

    /// Counts a burst's copies: `copied` made, `lost` not (no free buffer).
    /// Copies the output port could not send are counted there (`tx-full`).
    pub fn count(&self, copied: u64, lost: u64) {
        // Relaxed: statistics; once per burst, and only for mirrored ports.
        if copied > 0 {
            self.copied.fetch_add(copied, Ordering::Relaxed);
        }
        if lost > 0 {
            self.lost.fetch_add(lost, Ordering::Relaxed);
        }
    }

    /// Copies made so far.
    pub fn copied(&self) -> u64 {
        // Relaxed: a statistic.
        self.copied.load(Ordering::Relaxed)
    }

    /// Copies that found no free buffer so far.
    pub fn lost(&self) -> u64 {
        // Relaxed: a statistic.
        self.lost.load(Ordering::Relaxed)
    }
}

/// What watches a port: the captures running on it and the mirrors it is a
/// source of. Present in the switch's tables only for ports that have one;
/// see [`crate::switch::SwitchTables::taps`].
#[derive(Debug, Clone, Default)]
pub struct PortTaps {
    /// The captures on the port.
    pub captures: Vec<Arc<Capture>>,
    /// Mirrors of what the port receives.
    pub mirror_rx: Vec<Arc<Mirror>>,
    /// Mirrors of what the port sends.
    pub mirror_tx: Vec<Arc<Mirror>>,
}

impl PortTaps {
    /// Whether nothing watches the port.
    pub fn is_empty(&self) -> bool {
        self.captures.is_empty() && self.mirror_rx.is_empty() && self.mirror_tx.is_empty()
    }

    /// The mirrors of `direction`.
    pub fn mirrors(&self, direction: Direction) -> &[Arc<Mirror>] {
        match direction {
            Direction::Rx => &self.mirror_rx,
            Direction::Tx => &self.mirror_tx,
        }
    }

    /// Whether some capture takes the port's drops.
    pub fn wants_drops(&self) -> bool {
        self.captures.iter().any(|c| c.filter.drops)
    }

    /// Records `frames` seen on `port` going `direction` in every capture
    /// that takes them, stamped `timestamp_ns`.
    pub fn record_burst<'a>(
        &self,
        port: PortId,
        direction: Direction,
        timestamp_ns: u64,
        frames: impl Iterator<Item = &'a [u8]> + Clone,
    ) {
        for c in &self.captures {
            let wanted = match direction {
                Direction::Rx => c.filter.rx,
                Direction::Tx => c.filter.tx,
            };
            if wanted {
                for f in frames.clone() {
                    c.record(port, direction, None, timestamp_ns, f);
                }
            }
        }
    }

    /// Records `frame`, received on `port` and dropped for `reason`, in every
    /// capture that takes drops.
    pub fn record_drop(&self, port: PortId, reason: DropReason, timestamp_ns: u64, frame: &[u8]) {
        for c in &self.captures {
            if c.filter.drops {
                c.record(port, Direction::Rx, Some(reason), timestamp_ns, frame);
            }
        }
    }
}

/// Nanoseconds since the Unix epoch, read once per burst by a worker that
/// has a capture to stamp (a vDSO call, no system call).
pub fn unix_time_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: CaptureFilter = CaptureFilter {
        rx: true,
        tx: true,
        drops: true,
    };

    #[test]
    fn frames_come_out_in_order_cut_at_the_snap_length() {
        let c = Capture::new(ALL, 4, 64);
        let long = [7u8; 100];
        c.record(PortId(3), Direction::Rx, None, 10, &[1, 2, 3]);
        c.record(
            PortId(4),
            Direction::Tx,
            Some(DropReason::AclDeny),
            11,
            &long,
        );
        let a = c.take().unwrap();
        assert_eq!(
            (a.port, a.direction, a.data(), a.orig_len_bytes),
            (PortId(3), Direction::Rx, &[1u8, 2, 3][..], 3)
        );
        let b = c.take().unwrap();
        assert_eq!(b.data().len(), 64);
        assert_eq!(b.orig_len_bytes, 100);
        assert_eq!(b.drop, Some(DropReason::AclDeny));
        assert!(c.take().is_none());
        assert_eq!((c.captured(), c.lost()), (2, 0));
    }

    #[test]
    fn a_full_ring_counts_lost_frames_and_recycled_slots_are_reused() {
        let c = Capture::new(ALL, 4, 64);
        for i in 0..10u8 {
            c.record(PortId(0), Direction::Rx, None, 0, &[i; 60]);
        }
        assert_eq!((c.captured(), c.lost()), (4, 6));
        let first = c.take().unwrap();
        assert_eq!(first.data()[0], 0);
        c.recycle(first);
        c.record(PortId(0), Direction::Rx, None, 0, &[42; 60]);
        assert_eq!((c.captured(), c.lost()), (5, 6));
        let got: Vec<u8> = std::iter::from_fn(|| c.take())
            .map(|s| s.data()[0])
            .collect();
        assert_eq!(got, [1, 2, 3, 42]);
    }

    #[test]
    fn a_stopped_capture_copies_nothing() {
        let c = Capture::new(ALL, 4, 64);
        c.stop();
        c.record(PortId(0), Direction::Rx, None, 0, &[0; 60]);
        assert!(c.take().is_none());
        assert_eq!((c.captured(), c.lost()), (0, 0));
    }

    #[test]
    fn taps_record_only_the_directions_a_capture_asked_for() {
        let rx_only = Capture::new(
            CaptureFilter {
                rx: true,
                ..Default::default()
            },
            8,
            64,
        );
        let taps = PortTaps {
            captures: vec![Arc::clone(&rx_only)],
            ..PortTaps::default()
        };
        let frames: [&[u8]; 2] = [&[1; 20], &[2; 20]];
        taps.record_burst(PortId(1), Direction::Tx, 5, frames.iter().copied());
        taps.record_drop(PortId(1), DropReason::VlanFiltered, 5, &[3; 20]);
        assert_eq!(rx_only.captured(), 0);
        taps.record_burst(PortId(1), Direction::Rx, 5, frames.iter().copied());
        assert_eq!(rx_only.captured(), 2);
        assert!(!taps.wants_drops());
    }
}
