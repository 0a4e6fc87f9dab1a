//! Handing rings from the control thread to the worker that owns a queue, and
//! taking them back with a confirmed stop.
//!
//! Layer: device. The worker side ([`VqWorker::sync`]) is on the packet path: one
//! atomic load per burst, plus an `ArcSwap` load when the generation changed.
//!
//! Protocol, per virtqueue ([`VqShared`]):
//! - publish (control): store the [`ReadyVring`] in `slot`, then bump `gen`.
//! - withdraw (control): empty `slot`, bump `gen`, then wait (bounded) until the
//!   worker stored that generation in `ack_gen`. The worker acks in every
//!   `rx_burst`/`tx_burst`/`housekeeping`, after storing its ring position in
//!   `progress`. Only then does control answer the frontend (GET_VRING_BASE,
//!   memory table change, disconnect), so the frontend never sees an index still in
//!   use. Memory safety does not depend on the wait: a `ReadyVring` keeps its
//!   guest mapping alive through `Arc`s.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use vmm_sys_util::event::EventNotifier;

use crate::guest_mem::guard;
use crate::notify::Doorbell;
use crate::vring::{Completed, Cursor, Offload, RingFault, SplitRing};

/// How long control waits for a worker to let go of a ring.
pub(crate) const STOP_TIMEOUT: Duration = Duration::from_secs(1);

/// A ring ready for a worker: validated addresses, position and call eventfd.
#[derive(Debug)]
pub(crate) struct ReadyVring {
    pub ring: SplitRing,
    /// The guest's call eventfd (our own dup); None if it polls. Moved into
    /// [`VqShared`] by `publish`, for the device's interrupt thread: a worker
    /// never writes it.
    pub call: Option<EventNotifier>,
    /// Where the worker asks for an interrupt (None if the guest polls).
    pub doorbell: Option<Arc<Doorbell>>,
    /// Where to start.
    pub base: Cursor,
    /// MRG_RXBUF negotiated (guest RX queues only).
    pub mrg_rxbuf: bool,
    /// Offloads that may cross this ring: on a guest TX queue
    /// VIRTIO_NET_F_CSUM and HOST_TSO4/6, on a guest RX queue GUEST_CSUM and
    /// GUEST_TSO4/6, as negotiated.
    pub off: Offload,
    /// The generation this ring was published under.
    pub pub_gen: u64,
}

impl ReadyVring {
    /// Asks the device's interrupt thread to kick the guest (at most once per
    /// burst; never blocks, whatever the guest did to its eventfd).
    #[inline]
    pub fn notify(&self, sh: &VqShared) {
        if let Some(d) = &self.doorbell {
            d.request(sh);
        }
    }
}

/// Shared state of one virtqueue.
#[derive(Debug, Default)]
pub(crate) struct VqShared {
    slot: ArcSwapOption<ReadyVring>,
    gen: AtomicU64,
    ack_gen: AtomicU64,
    /// `(pub_gen << 16) | last_avail` of the ring the worker last used.
    progress: AtomicU64,
    /// Non-zero [`RingFault`] code once the worker found the ring broken.
    fault: AtomicU8,
    /// A worker holds the queue's port value.
    attached: AtomicBool,
    /// A ring is published (control's view).
    live: AtomicBool,
    /// The guest's call eventfd while a ring is published (the control queue:
    /// while the connection lasts); written only by the interrupt thread.
    call: ArcSwapOption<EventNotifier>,
    /// An interrupt was asked for and not yet sent.
    irq: AtomicBool,
}

impl VqShared {
    /// True while a ring is published and not faulted.
    pub fn usable(&self) -> bool {
        // Relaxed: link state is advisory.
        self.live.load(Ordering::Relaxed) && self.fault.load(Ordering::Relaxed) == 0
    }

    /// Whether a ring is published.
    pub fn is_live(&self) -> bool {
        // Relaxed: only the control thread changes `live`.
        self.live.load(Ordering::Relaxed)
    }

    /// The fault the worker reported, if any.
    pub fn fault(&self) -> Option<RingFault> {
        // Relaxed: a status read.
        RingFault::from_code(self.fault.load(Ordering::Relaxed))
    }

    /// Worker: marks an interrupt pending; true if one already was.
    #[inline]
    pub fn request_irq(&self) -> bool {
        // AcqRel: the used ring the worker published before is visible to the
        // interrupt thread that takes the flag, and so to the guest it kicks.
        self.irq.swap(true, Ordering::AcqRel)
    }

    /// Interrupt thread: takes a pending interrupt and the fd to kick for it.
    pub fn take_irq(&self) -> Option<Arc<EventNotifier>> {
        // Relaxed first: most queues have nothing pending.
        if !self.irq.load(Ordering::Relaxed) {
            return None;
        }
        // AcqRel: pairs with `request_irq`.
        self.irq.swap(false, Ordering::AcqRel);
        self.call.load_full()
    }

    /// Control: the call eventfd the interrupt thread kicks (the control
    /// queue's, which is never published).
    pub fn set_call(&self, call: Option<EventNotifier>) {
        self.call.store(call.map(Arc::new));
    }

    /// Control: hands `ring` to the worker.
    pub fn publish(&self, mut ring: ReadyVring) {
        // Relaxed: `gen` has a single writer, the control thread.
        let g = self.gen.load(Ordering::Relaxed) + 1;
        ring.pub_gen = g;
        // Relaxed: ordered before the Release store of `gen` below.
        self.progress
            .store(g << 16 | u64::from(ring.base.last_avail), Ordering::Relaxed);
        self.fault.store(0, Ordering::Relaxed);
        self.set_call(ring.call.take());
        self.slot.store(Some(Arc::new(ring)));
        // Release: the worker's Acquire load of `gen` then sees the new slot.
        self.gen.store(g, Ordering::Release);
        self.live.store(true, Ordering::Relaxed);
    }

    /// Control: takes the ring back and returns the position to report to the
    /// frontend (None if nothing was published). Waits up to `timeout` for the
    /// worker's ack; on timeout uses the position from its last burst.
    pub fn withdraw(&self, timeout: Duration) -> Option<u16> {
        let old = self.slot.swap(None)?;
        // No interrupt for a stopped ring (the interrupt thread may still
        // hold the fd for a moment; `Notifier::unstick` ends a blocked write).
        self.set_call(None);
        let g = self.gen.load(Ordering::Relaxed) + 1;
        // Release: pairs with the worker's Acquire load of `gen`.
        self.gen.store(g, Ordering::Release);
        self.live.store(false, Ordering::Relaxed);
        let start = Instant::now();
        // Acquire: the worker stores `progress` before acking.
        while self.attached.load(Ordering::Acquire) && self.ack_gen.load(Ordering::Acquire) < g {
            if start.elapsed() >= timeout {
                tracing::warn!(
                    "worker did not release a vhost-user ring within {timeout:?}; \
                     reporting its last known position"
                );
                break;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        // Acquire: see the position stored before the ack.
        let p = self.progress.load(Ordering::Acquire);
        Some(if p >> 16 == old.pub_gen {
            p as u16
        } else {
            old.base.last_avail
        })
    }
}

/// Shared state of one queue pair (the value behind one [`crate::VhostUserPort`]).
#[derive(Debug, Default)]
pub(crate) struct PairShared {
    /// Guest TX virtqueue (odd index): what the port receives from.
    pub guest_tx: Arc<VqShared>,
    /// Guest RX virtqueue (even index): where the port transmits to.
    pub guest_rx: Arc<VqShared>,
}

/// Shared state of a whole device.
#[derive(Debug, Default)]
pub(crate) struct DeviceShared {
    pub pairs: Vec<Arc<PairShared>>,
    /// The control virtqueue (served on the control side; only its
    /// interrupts go through [`VqShared`]).
    pub ctrl: Arc<VqShared>,
    /// The device's interrupt thread's doorbell.
    pub doorbell: Option<Arc<Doorbell>>,
    /// The `mtu` offered with VIRTIO_NET_F_MTU (None: not offered); set once
    /// when the device is created.
    pub offered_mtu: Option<u16>,
    /// A frontend is connected.
    pub connected: AtomicBool,
    /// Drop asked the control thread to stop.
    pub stop: AtomicBool,
    /// Last control-side error (bad ring setup, failed connection, ...).
    pub control_error: Mutex<Option<String>>,
    /// MTU set by the frontend with NET_SET_MTU; 0 if none. Shared with the
    /// device's ports, which drop longer frames on the way to the guest.
    pub mtu: Arc<AtomicU16>,
    /// virtio features the connected frontend acked; 0 when none is.
    pub acked: AtomicU64,
    /// Frontends that connected, since the device was created.
    pub connects: AtomicU64,
    /// Frontends that disconnected.
    pub disconnects: AtomicU64,
    /// Control-side errors ([`DeviceShared::set_error`] calls).
    pub errors: AtomicU64,
    /// The guest's receive filter commands (control queue).
    pub rx: Mutex<crate::ctrlq::RxState>,
    /// Bumped at every change of `rx`.
    pub rx_gen: AtomicU64,
}

impl DeviceShared {
    /// Forgets the guest's receive filter (a new or reset driver starts
    /// without one).
    pub fn reset_rx(&self) {
        let mut rx = self.rx.lock().unwrap_or_else(|e| e.into_inner());
        if rx.mode.is_some() {
            rx.mode = None;
            // Release: the cleared state is in `rx` before the generation.
            self.rx_gen.fetch_add(1, Ordering::Release);
        }
    }

    pub fn set_error(&self, e: String) {
        // Relaxed: a counter read by the metrics endpoint, ordered with nothing.
        self.errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!("{e}");
        if let Ok(mut g) = self.control_error.lock() {
            *g = Some(e);
        }
    }
}

/// The worker's side of one virtqueue.
#[derive(Debug, Default)]
pub(crate) struct VqWorker {
    seen_gen: u64,
    pub ring: Option<Arc<ReadyVring>>,
    pub cur: Cursor,
    faulted: bool,
    /// The SIGBUS guard's epoch when we last checked our ring's memory.
    seen_epoch: u64,
}

impl VqWorker {
    /// Marks the queue as attached to a worker.
    pub fn attach(sh: &VqShared) {
        // Release: pairs with control's Acquire when deciding to wait.
        sh.attached.store(true, Ordering::Release);
    }

    /// Picks up a newly published or withdrawn ring and acks it. Once per burst:
    /// one atomic load and compare, inlined; the change itself is out of line.
    #[inline]
    pub fn sync(&mut self, sh: &VqShared) {
        // Acquire: pairs with control's Release store after changing `slot`.
        let g = sh.gen.load(Ordering::Acquire);
        if g != self.seen_gen {
            self.take_change(sh, g);
        }
    }

    #[cold]
    #[inline(never)]
    fn take_change(&mut self, sh: &VqShared, g: u64) {
        let new = sh.slot.load_full();
        let same = matches!((&self.ring, &new), (Some(a), Some(b)) if a.pub_gen == b.pub_gen);
        if !same {
            self.save_progress(sh);
            if let Some(r) = &new {
                self.cur = r.base;
                self.faulted = false;
                // Check the new ring's memory after its first burst, even if
                // the epoch moved before we took it.
                self.seen_epoch = u64::MAX;
            }
            self.ring = new;
        }
        self.seen_gen = g;
        // Release: `progress` above is visible to control before the ack.
        sh.ack_gen.store(g, Ordering::Release);
    }

    /// Stores our position for control (after a burst that moved it, and when
    /// leaving a ring).
    #[inline]
    pub fn save_progress(&self, sh: &VqShared) {
        if let Some(r) = &self.ring {
            // Relaxed: published to control by the Release store of `ack_gen`, or
            // read only after the worker has gone quiet (stop timeout).
            sh.progress.store(
                r.pub_gen << 16 | u64::from(self.cur.last_avail),
                Ordering::Relaxed,
            );
        }
    }

    /// Runs `f` on the ring, unless there is none or it faulted; afterwards
    /// records progress and a fault. A ring whose memory was lost to a shrunk
    /// file (the guard's epoch moved and the ring's table is poisoned) reports
    /// [`RingFault::MemoryLost`], whatever `f` found on the zero pages.
    #[inline]
    pub fn with_active(
        &mut self,
        sh: &VqShared,
        f: impl FnOnce(&ReadyVring, &mut Cursor) -> Completed,
    ) -> Option<Completed> {
        if self.faulted {
            return None;
        }
        let ring = self.ring.as_deref()?;
        let mut done = f(ring, &mut self.cur);
        // After the burst, so a fault during it is seen now: one load of a
        // rarely written word; the table is asked only when it moved.
        let epoch = guard::epoch();
        if epoch != self.seen_epoch {
            self.seen_epoch = epoch;
            if ring.ring.memory_lost() {
                done.fault = Some(RingFault::MemoryLost);
            }
        }
        if done.notify {
            ring.notify(sh);
        }
        if done.frames > 0 {
            self.save_progress(sh);
        }
        if let Some(fault) = done.fault {
            self.fault(sh, fault);
        }
        Some(done)
    }

    /// Puts the queue into the error state.
    pub fn fault(&mut self, sh: &VqShared, f: RingFault) {
        self.faulted = true;
        // Relaxed: a status flag for control and link().
        sh.fault.store(f.code(), Ordering::Relaxed);
    }

    /// Lets go of the queue (the port is dropped).
    pub fn detach(&mut self, sh: &VqShared) {
        self.save_progress(sh);
        self.ring = None;
        // Acquire: pairs with control's Release store of `gen`.
        let g = sh.gen.load(Ordering::Acquire);
        // Release: progress before the ack, the ack before detaching.
        sh.ack_gen.store(g, Ordering::Release);
        sh.attached.store(false, Ordering::Release);
    }
}
