//! [`VhostUserPort`]: one queue pair of a vhost-user device as a weir [`Port`].
//!
//! Layer: ports. On the packet path. Receiving reads the guest's TX virtqueue
//! (odd index); transmitting writes the guest's RX virtqueue (even index). Each call
//! first syncs with the control thread (one atomic load), so a ring withdrawn by
//! control is released within one burst or housekeeping tick.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use dataplane::mempool::PoolShare;
use dataplane::stats::QueueStats;
use dataplane::wire::GsoKind;
use dataplane::{Burst, DropReason, LinkState, Mempool, Port};

use crate::shared::{PairShared, VqWorker};
use crate::vring::{max_frame, RingFault};

/// One queue pair of a vhost-user device, owned by one worker.
pub struct VhostUserPort {
    name: String,
    queue: u16,
    pair: Arc<PairShared>,
    /// The MTU the guest set (NET_SET_MTU), 0 if none.
    mtu: Arc<AtomicU16>,
    pool: &'static Mempool,
    /// The device's share of the pool of large buffers for TSO frames from
    /// the guest (None: TSO not offered); shared by its queues.
    tso_pool: Option<Arc<PoolShare>>,
    stats: Arc<QueueStats>,
    /// Guest TX side (we receive).
    rx: VqWorker,
    /// Guest RX side (we transmit).
    tx: VqWorker,
}

impl std::fmt::Debug for VhostUserPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhostUserPort")
            .field("name", &self.name)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl VhostUserPort {
    pub(crate) fn new(
        name: &str,
        queue: u16,
        pair: Arc<PairShared>,
        mtu: Arc<AtomicU16>,
        pool: &'static Mempool,
        tso_pool: Option<Arc<PoolShare>>,
    ) -> VhostUserPort {
        VqWorker::attach(&pair.guest_tx);
        VqWorker::attach(&pair.guest_rx);
        VhostUserPort {
            name: name.to_owned(),
            queue,
            pair,
            mtu,
            pool,
            tso_pool,
            stats: Arc::new(QueueStats::default()),
            rx: VqWorker::default(),
            tx: VqWorker::default(),
        }
    }

    /// Device name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Queue pair index within the device.
    pub fn queue(&self) -> u16 {
        self.queue
    }
}

impl Port for VhostUserPort {
    fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        let sh = &self.pair.guest_tx;
        self.rx.sync(sh);
        let (pool, stats, tso_pool) = (self.pool, &*self.stats, self.tso_pool.as_deref());
        let before = burst.len();
        let Some(done) = self.rx.with_active(sh, |r, cur| {
            let big = tso_pool.filter(|_| r.off.tso4 || r.off.tso6);
            r.ring.dequeue(cur, pool, burst, r.off, big, stats)
        }) else {
            return 0;
        };
        if done.fault.is_some() {
            self.stats.drop_one(DropReason::PortError);
            self.stats.rx_errors.inc();
        }
        if done.fault == Some(RingFault::MemoryLost) {
            // This burst may have copied zero pages rather than guest frames.
            self.stats
                .drop_n(DropReason::PortError, (burst.len() - before) as u64);
            burst.truncate(before);
            return 0;
        }
        done.frames
    }

    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        let sh = &self.pair.guest_rx;
        self.tx.sync(sh);
        let stats = &*self.stats;
        // Relaxed: set once per connection, before the rings start; a burst
        // sent under the previous value would be harmless.
        let max = max_frame(self.mtu.load(Ordering::Relaxed));
        let Some(done) = self.tx.with_active(sh, |r, cur| {
            r.ring.enqueue(cur, burst, r.mrg_rxbuf, r.off, max, stats)
        }) else {
            return 0;
        };
        if done.fault.is_some() {
            // The frame being written when the ring broke is lost.
            if !burst.is_empty() {
                burst.remove(0);
                self.stats.drop_one(DropReason::PortError);
                self.stats.tx_errors.inc();
                return done.frames + 1;
            }
        }
        done.frames
    }

    fn link(&self) -> LinkState {
        if self.pair.guest_tx.usable() && self.pair.guest_rx.usable() {
            LinkState::Up
        } else {
            LinkState::Down
        }
    }

    fn stats(&self) -> &Arc<QueueStats> {
        &self.stats
    }

    fn housekeeping(&mut self) {
        self.rx.sync(&self.pair.guest_tx);
        self.tx.sync(&self.pair.guest_rx);
    }

    /// Always: `tx_burst` decides per ring, as it writes each frame, whether the
    /// guest negotiated GUEST_CSUM (metadata into the virtio-net header) or not
    /// (checksum completed first); see [`SplitRing::enqueue`](crate::vring::SplitRing::enqueue).
    fn accepts_partial_csum(&self) -> bool {
        true
    }

    /// As the guest negotiated GUEST_TSO4/6 on the ring last synced (a ring
    /// renegotiated since is handled in `enqueue`).
    fn accepts_gso(&self, kind: GsoKind) -> bool {
        self.tx.ring.as_ref().is_some_and(|r| r.off.tso(kind))
    }
}

impl Drop for VhostUserPort {
    fn drop(&mut self) {
        self.rx.detach(&self.pair.guest_tx);
        self.tx.detach(&self.pair.guest_rx);
    }
}
