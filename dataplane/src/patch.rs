//! Patch ports: two ports joined in memory, as Open vSwitch's patch ports
//! join two bridges. What one side transmits, the other receives.
//!
//! Layer: ports. A [`PatchLink`] holds a ring per direction; each side's
//! [`PatchPort`] is an ordinary one-queue port, so the switch, the taps and
//! the host demultiplexing treat it like any other. A side whose peer is
//! missing has its link down and drops what it is given (`port-down`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::mbuf::Mbuf;
use crate::port::{Burst, LinkState, Port, MAX_BURST};
use crate::ring::Ring;
use crate::stats::{DropReason, QueueStats};

/// Frames in flight per direction.
pub const PATCH_RING: usize = 1024;

/// The wire between two patch ports.
#[derive(Debug)]
pub struct PatchLink {
    /// `to[i]`: frames for side `i`.
    to: [Ring<Mbuf>; 2],
    /// Whether side `i` has a port.
    present: [AtomicBool; 2],
}

impl PatchLink {
    /// A link with neither side attached.
    pub fn new() -> Arc<PatchLink> {
        Arc::new(PatchLink {
            to: [Ring::new(PATCH_RING), Ring::new(PATCH_RING)],
            present: [AtomicBool::new(false), AtomicBool::new(false)],
        })
    }

    /// Whether side `side` (0 or 1) has a port.
    pub fn attached(&self, side: usize) -> bool {
        // Acquire: pairs with the release in `attach` and `Drop`.
        self.present[side & 1].load(Ordering::Acquire)
    }

    /// The port of side `side` (0 or 1), or None if that side has one.
    pub fn attach(self: &Arc<Self>, side: usize, stats: Arc<QueueStats>) -> Option<PatchPort> {
        let side = side & 1;
        // AcqRel: claims the side once; see `attached`.
        if self.present[side].swap(true, Ordering::AcqRel) {
            return None;
        }
        Some(PatchPort {
            link: Arc::clone(self),
            side,
            stats,
        })
    }
}

/// One side of a [`PatchLink`].
#[derive(Debug)]
pub struct PatchPort {
    link: Arc<PatchLink>,
    side: usize,
    stats: Arc<QueueStats>,
}

impl Port for PatchPort {
    fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        let room = MAX_BURST - burst.len();
        self.link.to[self.side].dequeue_burst(burst, room)
    }

    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        let n = burst.len();
        if !self.link.attached(1 - self.side) {
            self.stats.drop_n(DropReason::PortDown, n as u64);
            self.stats.tx_errors.add(n as u64);
            burst.clear();
            return n;
        }
        // What the peer's ring cannot take stays in `burst` (`tx-full`).
        self.link.to[1 - self.side].enqueue_burst(burst)
    }

    fn link(&self) -> LinkState {
        if self.link.attached(1 - self.side) {
            LinkState::Up
        } else {
            LinkState::Down
        }
    }

    fn stats(&self) -> &Arc<QueueStats> {
        &self.stats
    }
}

impl Drop for PatchPort {
    fn drop(&mut self) {
        // Release: see `PatchLink::attached`.
        self.link.present[self.side].store(false, Ordering::Release);
        // Frames for this side are freed now rather than when the link goes.
        while self.link.to[self.side].pop().is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mempool::Mempool;
    use crate::testutil::{burst_of, eth_frame, mac};

    #[test]
    fn what_one_side_sends_the_other_receives_and_a_lone_side_is_down() {
        let pool = Mempool::for_tests(64);
        let link = PatchLink::new();
        let mut a = link.attach(0, Arc::default()).unwrap();
        assert!(
            link.attach(0, Arc::default()).is_none(),
            "a side is taken once"
        );
        assert_eq!(a.link(), LinkState::Down);
        let frame = eth_frame(mac(2), mac(1), 0x0800, 60);
        let mut b_out = burst_of(pool, std::slice::from_ref(&frame));
        a.tx_burst(&mut b_out);
        assert_eq!(a.stats().drops(DropReason::PortDown), 1);
        let mut b = link.attach(1, Arc::default()).unwrap();
        assert_eq!((a.link(), b.link()), (LinkState::Up, LinkState::Up));
        let mut out = burst_of(pool, &[frame.clone(), frame.clone()]);
        assert_eq!(a.tx_burst(&mut out), 2);
        let mut got = Burst::new();
        assert_eq!(b.rx_burst(&mut got), 2);
        assert_eq!(got[0].data(), &frame[..]);
        drop(b);
        assert_eq!(a.link(), LinkState::Down);
        assert!(
            link.attach(1, Arc::default()).is_some(),
            "the side is free again"
        );
    }
}
