//! The vhost-user protocol side: a `vhost-user-backend` device for virtio-net that
//! does no packet work itself, only turns ring state into [`ReadyVring`]s for the
//! workers and takes them back.
//!
//! Layer: protocol/control. Never on the packet path; runs on the device's control
//! thread and the library's epoll thread.
//!
//! `vhost-user-backend` keeps each virtqueue's state in a `VringT` object and
//! reports ring start/stop only by calling methods on it (`set_queue_ready`,
//! `set_enabled`, `set_call`, ...). [`CtlVring`] wraps the library's
//! `VringRwLock` and, around every such change, withdraws the ring from its worker
//! (confirmed stop) and publishes it again if it is still startable, so changes
//! never race with a worker using the old state. `GET_VRING_BASE` calls
//! `set_queue_ready(false)` before reading the position, so it reads what the
//! worker handed back.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLockReadGuard, RwLockWriteGuard};

use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{
    VhostUserBackendMut, VringRwLock, VringState, VringStateGuard, VringStateMutGuard, VringT,
};
use virtio_queue::{Error as VirtQueError, QueueT};
use vm_memory::{Bytes, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{EventConsumer, EventNotifier};

use crate::ctrlq::{ctrl_reply, MAX_CMD_BYTES};
use crate::defs::*;
use crate::guest_mem::guard::GuardError;
use crate::guest_mem::{GuestAddr, GuestMemory};
use crate::shared::{DeviceShared, ReadyVring, VqShared, STOP_TIMEOUT};
use crate::sys::ExitEvent;
use crate::vring::{Cursor, Offload, RingAddrs, SplitRing};

/// The guest memory type the library hands us.
pub(crate) type Mem = GuestMemoryAtomic<GuestMemoryMmap>;

/// Largest queue size we accept (QEMU's virtio-net allows up to 1024).
pub(crate) const MAX_QUEUE: u16 = 1024;

/// virtio features offered to the frontend, plus [`F_MTU`] when the mbufs
/// allow an MTU (see [`guest_mtu`]) and [`F_TSO_ALL`] when the daemon has a
/// pool of large buffers for TSO frames. No UFO.
///
/// [`F_IN_ORDER`] costs weir nothing: `SplitRing::dequeue` and `enqueue`
/// consume the available ring strictly in order and write a used entry for
/// every chain, dropped ones included, in that same order. Drivers that
/// know it (DPDK's virtio PMD) then take their cheaper in-order paths.
pub(crate) const OFFERED_FEATURES: u64 = F_VERSION_1
    | F_CSUM
    | F_GUEST_CSUM
    | F_MRG_RXBUF
    | F_EVENT_IDX
    | F_IN_ORDER
    | F_INDIRECT_DESC
    | F_NOTIFY_ON_EMPTY
    | F_STATUS
    | F_CTRL_VQ
    | F_CTRL_RX
    | F_MQ
    | F_PROTOCOL_FEATURES;

/// The connection's current memory table as weir reads it: guarded against
/// shrinking files ([`GuestMemory::guarded`]) and shared by every ring built
/// on it, so one table is one set of SIGBUS registrations and a table lost to
/// a shrunk file stays lost until the frontend sends a new one.
#[derive(Debug, Default)]
pub(crate) struct Table(Mutex<Option<Arc<GuestMemory>>>);

impl Table {
    /// The guarded table for `mmap`: the current one if it was built from
    /// the same mapping, else a new one that replaces it.
    fn for_mapping(&self, mmap: Arc<GuestMemoryMmap>) -> Result<Arc<GuestMemory>, GuardError> {
        let mut cur = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = cur.as_ref().filter(|t| t.backed_by(&mmap)) {
            return Ok(Arc::clone(t));
        }
        // Let go of the old table's registrations first (rings still using
        // it keep theirs until they stop).
        *cur = None;
        let t = Arc::new(GuestMemory::guarded(mmap)?);
        *cur = Some(Arc::clone(&t));
        Ok(t)
    }

    /// Forgets the current table.
    fn clear(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Ties one library vring to the virtqueue state a worker sees.
pub(crate) struct Binding {
    /// Virtqueue index (even: guest RX, odd: guest TX, last: control).
    index: u16,
    /// The control virtqueue: served on the control side, never published.
    ctrl: bool,
    vq: Arc<VqShared>,
    dev: Arc<DeviceShared>,
    /// Negotiated features (shared by all bindings of a connection).
    features: Arc<AtomicU64>,
    /// The connection's guarded memory table (shared likewise).
    table: Arc<Table>,
    /// The library's vring and memory, attached when the library creates it.
    vring: OnceLock<(VringRwLock<Mem>, Mem)>,
}

impl std::fmt::Debug for Binding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Binding")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl Binding {
    pub fn new(
        index: u16,
        vq: Arc<VqShared>,
        dev: Arc<DeviceShared>,
        features: Arc<AtomicU64>,
        table: Arc<Table>,
    ) -> Arc<Binding> {
        Arc::new(Binding {
            index,
            ctrl: false,
            vq,
            dev,
            features,
            table,
            vring: OnceLock::new(),
        })
    }

    /// The binding of the control virtqueue.
    pub fn new_ctrl(index: u16, dev: Arc<DeviceShared>, features: Arc<AtomicU64>) -> Arc<Binding> {
        Arc::new(Binding {
            index,
            ctrl: true,
            vq: Arc::clone(&dev.ctrl),
            dev,
            features,
            table: Arc::default(),
            vring: OnceLock::new(),
        })
    }

    /// Serves the control virtqueue (on a kick): answers every available
    /// command with [`ctrl_reply`]. Guest memory is read through `vm-memory`'s
    /// checked accessors; a malformed chain is completed with no reply.
    fn serve_ctrl(&self, queue_pairs: u16) {
        let Some((v, mem)) = self.vring.get() else {
            return;
        };
        let m = mem.memory();
        let mut st = v.get_mut();
        if !(st.get_queue().ready() && st.is_enabled()) {
            return;
        }
        let mut completed = false;
        // Bounded by the queue size per kick; a guest that keeps posting is
        // served on its next kick.
        for _ in 0..st.get_queue().size() {
            let Some(chain) = st.get_queue_mut().pop_descriptor_chain(&*m) else {
                break;
            };
            let head = chain.head_index();
            let mut cmd = [0u8; MAX_CMD_BYTES];
            let mut n = 0usize;
            let mut truncated = false;
            let mut unreadable = false;
            let mut ack_at = None;
            for d in chain {
                if d.is_write_only() {
                    if ack_at.is_none() && d.len() >= 1 {
                        ack_at = Some(d.addr());
                    }
                } else {
                    let take = (d.len() as usize).min(cmd.len() - n);
                    truncated |= take < d.len() as usize;
                    if m.read_slice(&mut cmd[n..n + take], d.addr()).is_ok() {
                        n += take;
                    } else {
                        // A piece that cannot be read: what was read is
                        // not the command the guest wrote; refused below.
                        unreadable = true;
                    }
                }
            }
            let ack = if unreadable {
                ctrl::ERR
            } else {
                let mut rx = self.dev.rx.lock().unwrap_or_else(|e| e.into_inner());
                let before = rx.mode.clone();
                rx.negotiated = self.features.load(Ordering::Relaxed) & F_CTRL_RX != 0;
                let ack = ctrl_reply(&cmd[..n], truncated, queue_pairs, &mut rx);
                if rx.mode != before {
                    // Release: the new state is in `rx` before the
                    // generation that announces it.
                    self.dev.rx_gen.fetch_add(1, Ordering::Release);
                }
                ack
            };
            let len = match ack_at {
                Some(a) if m.write_obj(ack, a).is_ok() => 1,
                _ => 0,
            };
            if ack != ctrl::OK {
                tracing::debug!("control command {:?} refused", &cmd[..n.min(2)]);
            }
            if st.get_queue_mut().add_used(&*m, head, len).is_err() {
                break;
            }
            completed = true;
        }
        if completed && st.get_queue_mut().needs_notification(&*m).unwrap_or(true) {
            // Through the interrupt thread: this thread is joined at
            // disconnect and must never block in a guest's eventfd.
            let call = st.get_call().as_ref().and_then(|c| c.try_clone().ok());
            if let (Some(c), Some(bell)) = (call, &self.dev.doorbell) {
                self.vq.set_call(Some(c));
                bell.request(&self.vq);
            }
        }
    }

    /// True once the library created the vring for this binding.
    pub fn is_attached(&self) -> bool {
        self.vring.get().is_some()
    }

    /// Confirmed stop: takes the ring away from the worker and writes its
    /// position back into the library's state.
    pub fn stop(&self) {
        if self.ctrl {
            self.vq.set_call(None);
            return;
        }
        if let Some(last_avail) = self.vq.withdraw(STOP_TIMEOUT) {
            if let Some((v, _)) = self.vring.get() {
                v.set_queue_next_avail(last_avail);
            }
        }
    }

    /// Publishes the ring if the frontend has made it startable (ready, enabled,
    /// memory present) and it is not published yet.
    pub fn start_if_ready(&self) {
        if self.ctrl {
            return;
        }
        let Some((v, mem)) = self.vring.get() else {
            return;
        };
        if self.vq.is_live() {
            return;
        }
        let st = v.get_ref();
        let q = st.get_queue();
        if !(q.ready() && st.is_enabled()) {
            return;
        }
        let mem = match self.table.for_mapping(mem.memory().into_inner()) {
            Ok(m) => m,
            Err(e) => {
                self.dev
                    .set_error(format!("virtqueue {}: cannot start: {e}", self.index));
                return;
            }
        };
        if mem.is_empty() {
            return;
        }
        if mem.lost() {
            self.dev.set_error(format!(
                "virtqueue {}: cannot start: guest memory was lost to a shrunk file; \
                 waiting for a new memory table",
                self.index
            ));
            return;
        }
        let features = self.features.load(Ordering::Relaxed);
        let addrs = RingAddrs {
            desc: GuestAddr(q.desc_table()),
            avail: GuestAddr(q.avail_ring()),
            used: GuestAddr(q.used_ring()),
        };
        let ring = match SplitRing::new(
            &mem,
            addrs,
            q.size(),
            q.event_idx_enabled(),
            features & F_INDIRECT_DESC != 0,
        ) {
            Ok(r) => r,
            Err(e) => {
                self.dev
                    .set_error(format!("virtqueue {}: cannot start: {e}", self.index));
                return;
            }
        };
        let call = match st.get_call().as_ref().map(EventNotifier::try_clone) {
            None => None,
            Some(Ok(c)) => Some(c),
            Some(Err(e)) => {
                self.dev.set_error(format!(
                    "virtqueue {}: cannot dup call eventfd: {e}",
                    self.index
                ));
                return;
            }
        };
        let base = Cursor {
            last_avail: q.next_avail(),
            used_idx: ring.used_idx(),
        };
        ring.suppress_kicks(base);
        drop(st);
        tracing::debug!(
            "virtqueue {} started: size {} avail {} used {}",
            self.index,
            ring.size(),
            base.last_avail,
            base.used_idx
        );
        let doorbell = call.as_ref().and(self.dev.doorbell.clone());
        self.vq.publish(ReadyVring {
            ring,
            call,
            doorbell,
            base,
            mrg_rxbuf: self.index.is_multiple_of(2) && features & F_MRG_RXBUF != 0,
            off: if self.index.is_multiple_of(2) {
                Offload {
                    csum: features & F_GUEST_CSUM != 0,
                    tso4: features & F_GUEST_TSO4 != 0,
                    tso6: features & F_GUEST_TSO6 != 0,
                }
            } else {
                Offload {
                    csum: features & F_CSUM != 0,
                    tso4: features & F_HOST_TSO4 != 0,
                    tso6: features & F_HOST_TSO6 != 0,
                }
            },
            pub_gen: 0,
        });
    }

    /// Stop, apply a change to the library's state, start again if possible.
    fn around<R>(&self, change: impl FnOnce() -> R) -> R {
        self.stop();
        let r = change();
        self.start_if_ready();
        r
    }
}

thread_local! {
    /// Bindings waiting for the library to create their vrings, in index order.
    static PENDING: RefCell<VecDeque<Arc<Binding>>> = const { RefCell::new(VecDeque::new()) };
}

/// Runs `f` (which must create the daemon) with `bindings` queued for the vrings
/// it creates; the library creates them in index order on the calling thread.
/// Returns `f`'s result and whether every binding was attached.
pub(crate) fn with_bindings<R>(bindings: &[Arc<Binding>], f: impl FnOnce() -> R) -> (R, bool) {
    PENDING.with(|p| p.borrow_mut().extend(bindings.iter().cloned()));
    let r = f();
    PENDING.with(|p| p.borrow_mut().clear());
    (r, bindings.iter().all(|b| b.is_attached()))
}

/// A library vring that keeps the worker's copy in step; see the module docs.
#[derive(Clone)]
pub(crate) struct CtlVring {
    inner: VringRwLock<Mem>,
    binding: Arc<Binding>,
}

impl<'a> VringStateGuard<'a, Mem> for CtlVring {
    type G = RwLockReadGuard<'a, VringState<Mem>>;
}

impl<'a> VringStateMutGuard<'a, Mem> for CtlVring {
    type G = RwLockWriteGuard<'a, VringState<Mem>>;
}

impl VringT<Mem> for CtlVring {
    fn new(mem: Mem, max_queue_size: u16) -> Result<Self, VirtQueError> {
        let inner = VringRwLock::new(mem.clone(), max_queue_size)?;
        let binding = PENDING
            .with(|p| p.borrow_mut().pop_front())
            .unwrap_or_else(|| {
                // Not created through `with_bindings`: a detached queue that no
                // worker sees (`with_bindings` reports it).
                Binding::new(
                    u16::MAX,
                    Arc::default(),
                    Arc::default(),
                    Arc::default(),
                    Arc::default(),
                )
            });
        let _ = binding.vring.set((inner.clone(), mem));
        Ok(CtlVring { inner, binding })
    }

    fn get_ref(&self) -> <Self as VringStateGuard<'_, Mem>>::G {
        self.inner.get_ref()
    }

    fn get_mut(&self) -> <Self as VringStateMutGuard<'_, Mem>>::G {
        self.inner.get_mut()
    }

    fn add_used(&self, desc_index: u16, len: u32) -> Result<(), VirtQueError> {
        self.inner.add_used(desc_index, len)
    }

    fn signal_used_queue(&self) -> io::Result<()> {
        self.inner.signal_used_queue()
    }

    fn enable_notification(&self) -> Result<bool, VirtQueError> {
        self.inner.enable_notification()
    }

    fn disable_notification(&self) -> Result<(), VirtQueError> {
        self.inner.disable_notification()
    }

    fn needs_notification(&self) -> Result<bool, VirtQueError> {
        self.inner.needs_notification()
    }

    fn set_enabled(&self, enabled: bool) {
        self.binding.around(|| self.inner.set_enabled(enabled))
    }

    fn set_queue_info(&self, desc: u64, avail: u64, used: u64) -> Result<(), VirtQueError> {
        self.binding
            .around(|| self.inner.set_queue_info(desc, avail, used))
    }

    fn queue_next_avail(&self) -> u16 {
        self.inner.queue_next_avail()
    }

    fn set_queue_next_avail(&self, base: u16) {
        self.binding
            .around(|| self.inner.set_queue_next_avail(base))
    }

    fn set_queue_next_used(&self, idx: u16) {
        self.inner.set_queue_next_used(idx)
    }

    fn queue_used_idx(&self) -> Result<u16, VirtQueError> {
        self.inner.queue_used_idx()
    }

    fn set_queue_size(&self, num: u16) {
        self.binding.around(|| self.inner.set_queue_size(num))
    }

    fn set_queue_event_idx(&self, enabled: bool) {
        self.binding
            .around(|| self.inner.set_queue_event_idx(enabled))
    }

    fn set_queue_ready(&self, ready: bool) {
        self.binding.around(|| self.inner.set_queue_ready(ready))
    }

    fn set_kick(&self, file: Option<File>) {
        self.inner.set_kick(file)
    }

    fn read_kick(&self) -> io::Result<bool> {
        self.inner.read_kick()
    }

    fn set_call(&self, file: Option<File>) {
        self.binding.around(|| self.inner.set_call(file))
    }

    fn set_err(&self, file: Option<File>) {
        self.inner.set_err(file)
    }
}

/// The virtio-net device as `vhost-user-backend` sees it.
#[derive(Debug)]
pub(crate) struct NetBackend {
    bindings: Vec<Arc<Binding>>,
    features: Arc<AtomicU64>,
    /// The guarded memory table the data bindings share.
    table: Arc<Table>,
    offer: Offer,
    /// The connection's exit event for the library's epoll thread.
    exit: Arc<Mutex<Option<ExitEvent>>>,
}

/// What a device offers its frontend besides [`OFFERED_FEATURES`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Offer {
    /// Queue pairs (config `max_virtqueue_pairs`).
    pub queue_pairs: u16,
    /// Config-space `mtu`; None: VIRTIO_NET_F_MTU is not offered.
    pub mtu: Option<u16>,
    /// Offer HOST_TSO4/6 and GUEST_TSO4/6 (a TSO buffer pool exists).
    pub tso: bool,
    /// Config-space `mac`; None: VIRTIO_NET_F_MAC is not offered.
    pub mac: Option<[u8; 6]>,
}

impl NetBackend {
    /// `bindings`: the data queues in index order, then the control queue.
    pub fn new(
        bindings: Vec<Arc<Binding>>,
        features: Arc<AtomicU64>,
        table: Arc<Table>,
        offer: Offer,
        exit: Arc<Mutex<Option<ExitEvent>>>,
    ) -> NetBackend {
        NetBackend {
            bindings,
            features,
            table,
            offer,
            exit,
        }
    }
}

impl VhostUserBackendMut for NetBackend {
    type Bitmap = ();
    type Vring = CtlVring;

    fn num_queues(&self) -> usize {
        self.bindings.len()
    }

    fn max_queue_size(&self) -> usize {
        usize::from(MAX_QUEUE)
    }

    fn features(&self) -> u64 {
        let o = &self.offer;
        let mtu = if o.mtu.is_some() { F_MTU } else { 0 };
        let tso = if o.tso { F_TSO_ALL } else { 0 };
        let mac = if o.mac.is_some() { F_MAC } else { 0 };
        OFFERED_FEATURES | mtu | tso | mac
    }

    fn acked_features(&mut self, features: u64) {
        // Relaxed: read by the same control thread when rings start.
        self.features.store(features, Ordering::Relaxed);
        if let Some(b) = self.bindings.first() {
            // Relaxed: a status read (`port show`).
            b.dev.acked.store(features, Ordering::Relaxed);
        }
        tracing::debug!("features acked: {features:#x}");
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::CONFIG
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        net_config(
            offset,
            size,
            self.offer.queue_pairs,
            self.offer.mtu.unwrap_or(0),
            self.offer.mac,
        )
    }

    fn set_config(&mut self, _offset: u32, _buf: &[u8]) -> io::Result<()> {
        // virtio-net's config space is read-only for the driver.
        Err(io::ErrorKind::PermissionDenied.into())
    }

    fn reset_device(&mut self) {
        for b in &self.bindings {
            b.stop();
        }
        if let Some(b) = self.bindings.first() {
            b.dev.reset_rx();
        }
    }

    fn set_event_idx(&mut self, _enabled: bool) {
        // Per-ring: the library sets it on each vring (`set_queue_event_idx`).
    }

    fn update_memory(&mut self, mem: Mem) -> io::Result<()> {
        // A region past the end of its file would SIGBUS on access: refuse the
        // table (GuestMemory also clamps regions, should rings start anyway).
        // A file that shrinks later is caught by the SIGBUS guard, which the
        // table is registered with here, before any ring or the library's
        // control-queue code can touch it.
        let refused = match crate::guest_mem::check_backing(&mem.memory()) {
            Err(e) => Some(format!("memory region not backed by its file: {e}")),
            Ok(()) => match self.table.for_mapping(mem.memory().into_inner()) {
                Err(e) => Some(format!("memory table not accepted: {e}")),
                Ok(_) => None,
            },
        };
        if let Some(why) = refused {
            // The library installed the table before asking us: take it out
            // again so nothing (its own ring setup included) touches it.
            mem.lock()
                .map_err(|_| io::Error::other("guest memory lock poisoned"))?
                .replace(GuestMemoryMmap::new());
            self.table.clear();
            for b in &self.bindings {
                b.stop();
            }
            return Err(io::Error::new(io::ErrorKind::InvalidInput, why));
        }
        // The library already swapped the mapping; re-translate live rings
        // against it (old mappings stay alive until workers drop their rings).
        for b in &self.bindings {
            b.around(|| ());
        }
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        // The library keeps the consumer's fd without ever closing it; the
        // control thread closes it after the connection (`ExitEvent::reclaim`).
        self.exit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
            .and_then(ExitEvent::hand_out)
    }

    fn handle_event(
        &mut self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[CtlVring],
        _thread_id: usize,
    ) -> io::Result<()> {
        // Data queues: kicks are suppressed and workers poll, so a stray kick
        // needs no action. The control queue is served here.
        if let Some(v) = vrings.get(usize::from(device_event)) {
            if v.binding.ctrl {
                v.binding.serve_ctrl(self.offer.queue_pairs);
            }
        }
        Ok(())
    }
}

/// The backend object the daemon owns.
pub(crate) type SharedBackend = Arc<Mutex<NetBackend>>;
