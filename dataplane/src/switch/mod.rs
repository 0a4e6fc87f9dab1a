//! The L2 learning switch: bridges, their forwarding databases, and the per-worker
//! forwarding stage.
//!
//! Layer: switch. Sees ports only as [`PortId`]s; depends on `wire`, `mbuf`,
//! `stats` and `fdb`, never on drivers. [`Forwarder::process`] is the packet path.
//!
//! # Tables and publication
//!
//! The control plane owns a [`Switch`], which holds the current [`SwitchTables`]
//! (ports, bridges, each bridge's [`Fdb`]) behind an `ArcSwap`. A change (add or
//! remove a port or bridge) builds a new `SwitchTables` and publishes it; workers
//! pick it up at their next poll round without waiting on anything. FDB contents
//! are different: they change per packet (learning), so each bridge's `Fdb` is a
//! lock-free concurrent table shared by all workers, and only wholesale
//! replacements of it (a rebuild) go through publication. Publication has one
//! writer at a time ([`Switch::update`] serialises them), so a rebuild and a
//! port or bridge change never publish over each other.
//!
//! # Pipeline
//!
//! Per received frame on a bridge whose ports use no feature, in order: parse
//! L2 (drop `Malformed`) → ingress bridge (drop `NoBridge`) → learn the source
//! (a refusal, see [`Unlearned`], is counted and the frame goes on) →
//! link-local destinations dropped (`LinkLocal`) → known unicast: one egress port
//! (drop `SamePort`, `NoRoute`, `PortDown`) → otherwise flood to every other port of
//! the bridge whose link is up. A bridge with any port using a feature (VLAN
//! port modes, and the stages that follow them) runs the [`pipeline`] for the
//! whole burst instead; which one runs is decided once per burst, so the
//! plain path pays nothing for stages it does not use.
//!
//! Output is staged per egress port in fixed bursts owned by the [`Forwarder`];
//! the worker flushes them after each input burst, so a stage never holds more
//! than one input burst's worth of frames per port.

pub mod acl;
pub mod fdb;
pub mod pipeline;
pub mod police;
pub mod rxfilter;
pub mod security;
pub mod vlan;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use arrayvec::ArrayVec;

use crate::ids::{BridgeId, PortId, WorkerId};
use crate::mbuf::Mbuf;
use crate::port::{Burst, MAX_BURST};
use crate::ring::Ring;
use crate::stats::{DropReason, QueueStats, Unlearned};
use crate::wire::parse_l2_addrs;
pub use acl::{Acl, AclRule};
pub use fdb::{Fdb, FdbConfig, FdbError, FdbKey, FdbView, Learn};
pub use pipeline::{Features, PortPolicy};

use crate::capture::PortTaps;
pub use police::{PortLimits, TokenBucket};
pub use security::PortSecurity;
pub use vlan::{PortVlan, VlanMode};

/// Most ports one switch instance supports (bounded by the FDB's port counters).
pub const MAX_PORTS: usize = fdb::MAX_PORTS;

/// Capacity of each port's handoff ring (frames sent to it by workers that do not
/// own one of its queues).
pub const HANDOFF_RING: usize = 1024;

/// How many frames the handoff rings of a group of ports (those of one owner
/// worker) may hold together. Frames in a handoff ring hold pool buffers until
/// the owner drains them; an owner that stops draining (stuck, or starved of
/// CPU) would otherwise pin up to [`HANDOFF_RING`] buffers per port, and with
/// enough ports the whole pool, stopping every worker's traffic. With a budget
/// it pins at most `limit`: frames handed off past it are dropped and counted
/// (`handoff_full`), and every other port keeps its buffers.
///
/// The count is one atomic in a cache line of its own, changed once per
/// handed-off burst by the sender and once per drained burst by the owner,
/// never per frame.
///
/// Within the budget each port's ring holds at most an equal part of it
/// (`limit / ports`, at least one burst), so that one port fed faster than
/// its owner drains it leaves the others their part.
#[derive(Debug)]
#[repr(align(64))]
pub struct HandoffBudget {
    held: AtomicU32,
    /// Ports counting against the budget (entries alive).
    ports: AtomicU32,
    limit: u32,
}

impl HandoffBudget {
    /// A budget of `limit` frames.
    pub fn new(limit: u32) -> Arc<HandoffBudget> {
        Arc::new(HandoffBudget {
            held: AtomicU32::new(0),
            ports: AtomicU32::new(0),
            limit,
        })
    }

    /// Most frames one port's ring may hold now.
    #[inline]
    fn port_part(&self) -> u32 {
        // Relaxed: the count changes only with ports added or removed; a
        // stale value misjudges one burst.
        let ports = self.ports.load(Ordering::Relaxed).max(1);
        (self.limit / ports).max(MAX_BURST as u32)
    }

    /// Frames held now by the rings sharing this budget.
    pub fn held(&self) -> u32 {
        // Relaxed: a statistic.
        self.held.load(Ordering::Relaxed)
    }

    /// Most frames the rings may hold together.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// `budget`, with one more port counting against it.
    fn joined(budget: Arc<HandoffBudget>) -> Arc<HandoffBudget> {
        // Relaxed: see `port_part`.
        budget.ports.fetch_add(1, Ordering::Relaxed);
        budget
    }
}

/// What workers need to know about one port. Shared (`Arc`) across table versions.
#[derive(Debug)]
pub struct PortEntry {
    /// The port's id (its index in [`SwitchTables::ports`]).
    pub id: PortId,
    /// Port name, for diagnostics.
    pub name: Arc<str>,
    /// Bridge the port belongs to, if any.
    pub bridge: Option<BridgeId>,
    /// Link state as last seen by the owning worker (true = up).
    pub link_up: AtomicBool,
    /// Administratively enabled.
    pub admin_up: AtomicBool,
    /// Worker that owns the port's first queue and drains [`PortEntry::handoff`].
    pub owner: WorkerId,
    /// Frames for this port from workers that own none of its queues: put
    /// there by [`PortEntry::hand_off`], taken by [`PortEntry::take_handoff`].
    pub handoff: Ring<Mbuf>,
    /// What the frames in `handoff` count against (shared by the ports of one
    /// owner; see [`HandoffBudget`]).
    handoff_budget: Arc<HandoffBudget>,
}

impl PortEntry {
    /// A new entry, link down until the owner reports otherwise.
    pub fn new(id: PortId, name: &str, bridge: Option<BridgeId>, owner: WorkerId) -> PortEntry {
        PortEntry {
            id,
            name: name.into(),
            bridge,
            link_up: AtomicBool::new(false),
            admin_up: AtomicBool::new(true),
            owner,
            handoff: Ring::new(HANDOFF_RING),
            handoff_budget: HandoffBudget::joined(HandoffBudget::new(HANDOFF_RING as u32)),
        }
    }

    /// Counts this port's handoff ring against `budget` (shared with the
    /// other ports of the same owner) instead of a budget of its own.
    #[must_use]
    pub fn with_handoff_budget(mut self, budget: Arc<HandoffBudget>) -> PortEntry {
        // The old budget is this entry's own, with nothing held yet.
        // Relaxed: see `port_part`.
        self.handoff_budget.ports.fetch_sub(1, Ordering::Relaxed);
        self.handoff_budget = HandoffBudget::joined(budget);
        self
    }

    /// The budget this port's handoff ring counts against.
    pub fn handoff_budget(&self) -> &Arc<HandoffBudget> {
        &self.handoff_budget
    }

    /// Puts frames from the front of `b` on the handoff ring, as many as the
    /// ring and the budget allow; returns how many. The rest stay in `b`.
    #[inline]
    pub fn hand_off(&self, b: &mut Burst) -> usize {
        let n = b.len() as u32;
        if n == 0 {
            return 0;
        }
        let budget = &self.handoff_budget;
        // This port's part first (a snapshot of its ring: concurrent senders
        // may pass it by a burst each, the total below holds exactly).
        let part = budget.port_part().saturating_sub(self.handoff.len() as u32);
        if part == 0 {
            return 0;
        }
        // Reserve first, so that senders on several workers cannot together
        // pass the limit; give back what did not go. Relaxed: the count
        // bounds buffers; the frames are published by the ring.
        let before = budget.held.fetch_add(n, Ordering::Relaxed);
        let room = budget.limit.saturating_sub(before).min(n).min(part) as usize;
        let sent = if room == 0 {
            0
        } else {
            self.handoff.enqueue_burst_max(b, room)
        };
        if sent < n as usize {
            // Relaxed: as above.
            budget.held.fetch_sub(n - sent as u32, Ordering::Relaxed);
        }
        sent
    }

    /// Takes up to `max` frames off the handoff ring onto `b` (the owner
    /// draining it); returns how many.
    #[inline]
    pub fn take_handoff(&self, b: &mut Burst, max: usize) -> usize {
        let n = self.handoff.dequeue_burst(b, max);
        if n > 0 {
            // Relaxed: see `hand_off`.
            self.handoff_budget
                .held
                .fetch_sub(n as u32, Ordering::Relaxed);
        }
        n
    }

    /// Whether frames may be sent to the port now.
    #[inline]
    pub fn is_up(&self) -> bool {
        // Relaxed: advisory state; a frame sent in the instant after a change is
        // harmless either way. `&`, not `&&`: both loads are cheap and side-effect
        // free, and one test is cheaper than two branches on the packet path.
        self.link_up.load(Ordering::Relaxed) & self.admin_up.load(Ordering::Relaxed)
    }
}

impl Drop for PortEntry {
    /// Frames still in the ring (a port removed under traffic) are freed
    /// with it; their count goes back to the budget, which the owner's other
    /// ports keep using.
    fn drop(&mut self) {
        let n = self.handoff.len() as u32;
        if n > 0 {
            // Relaxed: see `hand_off`; nobody else holds this entry now.
            self.handoff_budget.held.fetch_sub(n, Ordering::Relaxed);
        }
        // Relaxed: see `port_part`.
        self.handoff_budget.ports.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A bridge: a set of ports sharing one FDB.
#[derive(Debug, Clone)]
pub struct Bridge {
    /// The bridge's id (its index in [`SwitchTables::bridges`]).
    pub id: BridgeId,
    /// Bridge name.
    pub name: Arc<str>,
    /// Member ports, in flood order.
    pub ports: Vec<PortId>,
    /// Forwarding database.
    pub fdb: Arc<Fdb>,
}

/// One published version of the switch's configuration.
#[derive(Debug, Clone, Default)]
pub struct SwitchTables {
    /// Increases with every publication.
    pub generation: u64,
    /// Ports by id.
    pub ports: Vec<Option<Arc<PortEntry>>>,
    /// Bridges by id.
    pub bridges: Vec<Option<Bridge>>,
    /// Pipeline settings by port id; `None` (or missing) for a port without
    /// any. Set with [`SwitchTables::set_policy`].
    policies: Vec<Option<Arc<PortPolicy>>>,
    /// The stages each bridge's ports use together, by bridge id
    /// ([`SwitchTables::bridge_features`]); recomputed at every publication.
    bridge_features: Vec<Features>,
    /// Captures by port id; `None` (or missing) for a port nothing watches.
    /// Set with [`SwitchTables::set_taps`].
    taps: Vec<Option<Arc<PortTaps>>>,
    /// weir's addresses and tunnels by underlay port id; `None` (or
    /// missing) for a port without an `ip`. Set with
    /// [`SwitchTables::set_host`].
    hosts: Vec<Option<Arc<crate::tunnel::HostPort>>>,
}

impl SwitchTables {
    /// The entry for `id`, if the port exists.
    #[inline]
    pub fn port(&self, id: PortId) -> Option<&Arc<PortEntry>> {
        self.ports.get(id.index()).and_then(Option::as_ref)
    }

    /// The bridge `id`, if it exists.
    #[inline]
    pub fn bridge(&self, id: BridgeId) -> Option<&Bridge> {
        self.bridges.get(id.0 as usize).and_then(Option::as_ref)
    }

    /// Finds a bridge by name.
    pub fn bridge_by_name(&self, name: &str) -> Option<&Bridge> {
        self.bridges.iter().flatten().find(|b| &*b.name == name)
    }

    /// Finds a port by name.
    pub fn port_by_name(&self, name: &str) -> Option<&Arc<PortEntry>> {
        self.ports.iter().flatten().find(|p| &*p.name == name)
    }

    /// What watches port `id` (its captures), if anything. Workers test this
    /// once per burst, so a port nothing watches pays one index.
    #[inline]
    pub fn taps(&self, id: PortId) -> Option<&PortTaps> {
        self.taps.get(id.index()).and_then(Option::as_deref)
    }

    /// What weir takes from port `id`'s received frames (its addresses and
    /// tunnels), if it has an `ip`. Workers test this once per burst.
    #[inline]
    pub fn host(&self, id: PortId) -> Option<&crate::tunnel::HostPort> {
        self.hosts.get(id.index()).and_then(Option::as_deref)
    }

    /// Sets (or with `None` clears) weir's presence on port `id`. Takes
    /// effect for workers when the tables are published.
    pub fn set_host(&mut self, id: PortId, host: Option<Arc<crate::tunnel::HostPort>>) {
        let i = id.index();
        if self.hosts.len() <= i {
            self.hosts.resize(i + 1, None);
        }
        self.hosts[i] = host;
    }

    /// Sets (or with `None` or an empty set clears) what watches port `id`.
    /// Takes effect for workers when the tables are published.
    pub fn set_taps(&mut self, id: PortId, taps: Option<Arc<PortTaps>>) {
        let i = id.index();
        if self.taps.len() <= i {
            self.taps.resize(i + 1, None);
        }
        self.taps[i] = taps.filter(|t| !t.is_empty());
    }
}

/// The control plane's handle on the switch: the published tables and a clock.
#[derive(Debug)]
pub struct Switch {
    tables: ArcSwap<SwitchTables>,
    /// Held by [`Switch::update`] from its load to its store. Control-side
    /// only; workers never take it.
    writer: Mutex<()>,
    now_secs: AtomicU32,
    epoch: std::time::Instant,
}

impl Default for Switch {
    fn default() -> Self {
        Switch {
            tables: ArcSwap::from_pointee(SwitchTables::default()),
            writer: Mutex::new(()),
            now_secs: AtomicU32::new(0),
            epoch: std::time::Instant::now(),
        }
    }
}

impl Switch {
    /// An empty switch.
    pub fn new() -> Arc<Switch> {
        Arc::new(Switch::default())
    }

    /// The current tables.
    pub fn load(&self) -> Arc<SwitchTables> {
        self.tables.load_full()
    }

    /// The publication point, for workers' `arc_swap::Cache`.
    pub fn tables(&self) -> &ArcSwap<SwitchTables> {
        &self.tables
    }

    /// Publishes a modified copy of the current tables; returns the new generation.
    /// Control-side only.
    ///
    /// Updates are serialised here: `f` sees the tables as the previous update
    /// left them, and every update gets its own generation. Without that, two
    /// control threads (a command and the housekeeping rebuild) could both copy
    /// generation n, and the second store would undo the first's change while
    /// both report n + 1, so a caller waiting for workers to reach its
    /// generation would stop waiting early. `f` must not call `update`.
    pub fn update(&self, f: impl FnOnce(&mut SwitchTables)) -> u64 {
        // A panic in another update's `f` left the tables as they were
        // published: nothing to repair, so a poisoned lock is taken as is.
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut t = (*self.tables.load_full()).clone();
        f(&mut t);
        t.refresh_features();
        t.generation += 1;
        let generation = t.generation;
        self.tables.store(Arc::new(t));
        generation
    }

    /// Seconds since the switch started, as last ticked. Workers read this once per
    /// poll round for FDB timestamps (no clock read per packet).
    #[inline]
    pub fn now_secs(&self) -> u32 {
        // Relaxed: a coarse clock; staleness of one tick is irrelevant.
        self.now_secs.load(Ordering::Relaxed)
    }

    /// Advances the coarse clock; called by the control plane's housekeeping tick.
    pub fn tick(&self) -> u32 {
        let now = self.epoch.elapsed().as_secs() as u32;
        // Relaxed: see now_secs.
        self.now_secs.store(now, Ordering::Relaxed);
        now
    }

    /// Ages every bridge's FDB, makes room in those that refused learners for
    /// being full ([`Fdb::make_room`]), and swaps in rebuilt tables where
    /// tombstones have piled up or block a new address. Returns how many
    /// entries aged out.
    pub fn age_fdbs(&self) -> usize {
        let now = self.tick();
        let t = self.load();
        let mut aged = 0;
        let mut rebuild = false;
        for b in t.bridges.iter().flatten() {
            aged += b.fdb.age(now, b.fdb.config().aging_secs);
            let evicted = b.fdb.make_room();
            if evicted > 0 {
                tracing::debug!(bridge = %b.name, evicted, "fdb full: evicted from the busiest ports");
            }
            rebuild |= b.fdb.needs_rebuild();
        }
        if rebuild {
            self.update(|t| {
                for b in t.bridges.iter_mut().flatten() {
                    if b.fdb.needs_rebuild() {
                        b.fdb = Arc::new(b.fdb.rebuilt());
                    }
                }
            });
        }
        aged
    }
}

/// The I/G (group) bit of an address in [`crate::ids::MacAddr::to_u64`] form: set for multicast
/// and broadcast ([`crate::ids::MacAddr::is_multicast`]).
const GROUP_BIT: u64 = 1 << 40;

/// The IEEE 802.1D reserved range 01:80:c2:00:00:00..=0f in [`crate::ids::MacAddr::to_u64`] form
/// ([`crate::ids::MacAddr::is_link_local`]): the top 44 bits fixed, the last nibble free.
const LINK_LOCAL: u64 = 0x0180_c200_0000;
const LINK_LOCAL_MASK: u64 = 0xffff_ffff_fff0;

/// Drops `m`, counting it under `reason`. Out of line so that freeing a
/// buffer (a call into the pool) is not inlined into the forwarding loop at
/// every drop site.
#[cold]
#[inline(never)]
fn discard(m: Mbuf, in_stats: &QueueStats, reason: DropReason) {
    in_stats.drop_one(reason);
    drop(m);
}

/// Why a known unicast frame for `out` cannot be sent. Only called once the
/// fast check in [`Forwarder::process`] failed, so one of the cases holds.
#[cold]
#[inline(never)]
fn unicast_drop_reason(t: &SwitchTables, in_port: PortId, out: PortId) -> DropReason {
    if out == in_port {
        DropReason::SamePort
    } else {
        match t.port(out) {
            None => DropReason::NoRoute,
            // A port that is up again by now was down a moment ago, when the
            // fast check read it.
            Some(_) => DropReason::PortDown,
        }
    }
}

/// One egress port's output stage.
struct Stage {
    frames: Burst,
    /// The [`Forwarder::burst_seq`] of the last burst in which a known
    /// unicast frame was staged here: the port was then found up and not the
    /// ingress port, and `frames` on the pending list. Later frames of that
    /// burst for the port skip both checks. 0: never.
    ready: u64,
}

/// Queues `m` for `out`. Inlined into the per-packet loop: a call here
/// costs as much as the staging itself.
///
/// The staging helpers take the stage slice by value rather than the
/// [`Forwarder`]: a slice cannot be resized by the calls the loop makes, so
/// its base and length stay loop-invariant.
#[inline(always)]
fn stage(stages: &mut [Stage], pending: &mut Pending, out: PortId, m: Mbuf) {
    let Some(st) = stages.get_mut(out.index()) else {
        return; // table and stages out of step: prepare() not called; frame freed
    };
    pend(st, pending, out);
    // At most one input burst per port between flushes, so this always fits.
    let _ = st.frames.try_push(m);
}

/// Puts `out` on the pending list if its stage `st` holds nothing yet (the
/// first frame of a flush for it is about to be staged).
#[inline(always)]
fn pend(st: &Stage, pending: &mut Pending, out: PortId) {
    if st.frames.is_empty() && pending.list.try_push(out).is_err() {
        pending.overflow.push(out);
    }
}

/// Opens the stage of `out` for burst `seq`, before its first known unicast
/// frame: checks that the port may be sent to, puts it on the pending list
/// and marks the stage [`Stage::ready`]. Returns the drop reason if it may
/// not be sent to.
///
/// The tables are fixed for the burst, and link state is sampled here once
/// per egress port per burst rather than once per frame. Cold: it runs for a
/// few frames of a burst, and the mark keeps the loop's state in registers
/// across the other frames. The frame itself stays with the caller, so the
/// call passes only what the check needs.
#[cold]
#[inline(never)]
fn open_stage(
    stages: &mut [Stage],
    pending: &mut Pending,
    t: &SwitchTables,
    in_port: PortId,
    out: PortId,
    seq: u64,
) -> Result<(), DropReason> {
    if out == in_port || !t.port(out).is_some_and(|p| p.is_up()) {
        return Err(unicast_drop_reason(t, in_port, out));
    }
    let Some(st) = stages.get_mut(out.index()) else {
        return Err(DropReason::NoRoute); // prepare() not called
    };
    st.ready = seq;
    pend(st, pending, out);
    Ok(())
}

/// Sends a copy to every other up port of the bridge; the last one gets the
/// original buffer, so a two-port bridge floods without copying.
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn flood(
    stages: &mut [Stage],
    pending: &mut Pending,
    t: &SwitchTables,
    bridge: &Bridge,
    in_port: PortId,
    m: Mbuf,
    in_stats: &QueueStats,
) {
    let mut targets = bridge
        .ports
        .iter()
        .copied()
        .filter(|&p| p != in_port && t.port(p).is_some_and(|e| e.is_up()));
    let Some(mut prev) = targets.next() else {
        return; // nobody to flood to: not a drop, the frame simply has no receiver
    };
    for p in targets {
        match m.try_clone() {
            Some(c) => stage(stages, pending, prev, c),
            None if m.share_exhausted() => in_stats.drop_one(DropReason::PoolShare),
            None => in_stats.drop_one(DropReason::NoBuffers),
        }
        prev = p;
    }
    stage(stages, pending, prev, m);
}

/// Learns a frame's source. A refusal is counted and nothing more: the frame
/// is forwarded as if learned, as hardware switches and Open vSwitch do, so
/// that a port flooding the table with addresses cannot cut new stations on
/// other ports off the bridge.
///
/// The frame goes through and comes back as an `Option` from an out-of-line
/// call, which the caller treats as a possible drop: that keeps the
/// forwarding loop's registers as they were when refusals dropped frames
/// (`benches/callgrind.sh`: three instructions per frame fewer on the
/// repeated-pair path than letting the caller keep the frame).
#[inline(always)]
fn learn(
    fdb: &FdbView<'_>,
    src: FdbKey,
    in_port: PortId,
    now: u32,
    m: Mbuf,
    in_stats: &QueueStats,
) -> Option<Mbuf> {
    let learned = fdb.learn_key(src, in_port, now);
    if learned.is_refused() {
        return unlearned(learned, m, in_stats);
    }
    Some(m)
}

/// Counts a refused learn and hands the frame back to be forwarded.
#[cold]
#[inline(never)]
fn unlearned(learned: Learn, m: Mbuf, in_stats: &QueueStats) -> Option<Mbuf> {
    let reason = match learned {
        Learn::PortLimit => Unlearned::PortMacLimit,
        Learn::RateLimited => Unlearned::LearnRate,
        _ => Unlearned::FdbFull,
    };
    in_stats.unlearned_one(reason);
    Some(m)
}

/// Per-worker forwarding state: output stages per egress port.
pub struct Forwarder {
    stages: Vec<Stage>,
    /// Counts `process` calls; see [`Stage::ready`].
    burst_seq: u64,
    /// Frames of the current `process` call flooded and dropped. Fields, not
    /// locals: only the uncommon paths count, and in memory the counts do not
    /// take registers from the common path.
    flooded: u32,
    dropped: u32,
    pending: Pending,
    /// Recent security group verdicts ([`acl::FlowCache`]).
    flows: acl::FlowCache,
}

/// The egress ports with staged frames, in the order they were first staged.
struct Pending {
    list: ArrayVec<PortId, { MAX_BURST * 4 }>,
    overflow: Vec<PortId>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("stages", &self.stages.len())
            .finish()
    }
}

impl Default for Forwarder {
    fn default() -> Self {
        Forwarder::new()
    }
}

/// Counts of what one `process` call did, for tests and per-stage accounting.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProcessSummary {
    /// Frames sent to exactly one known port.
    pub unicast: u32,
    /// Frames flooded.
    pub flooded: u32,
    /// Frames dropped (each counted under its reason in the ingress stats).
    pub dropped: u32,
}

impl Forwarder {
    /// A forwarder with no stages yet; they grow (off the packet path) when a
    /// table with more ports is first seen.
    pub fn new() -> Forwarder {
        Forwarder {
            stages: Vec::new(),
            burst_seq: 0,
            flooded: 0,
            dropped: 0,
            pending: Pending {
                list: ArrayVec::new(),
                overflow: Vec::with_capacity(MAX_PORTS),
            },
            flows: acl::FlowCache::new(),
        }
    }

    /// Makes sure there is a stage for every port id in `t`. Call when a new table
    /// generation is seen (allocation happens here, not per packet).
    pub fn prepare(&mut self, t: &SwitchTables) {
        if self.stages.len() < t.ports.len() {
            self.stages.resize_with(t.ports.len(), || Stage {
                frames: Burst::new(),
                ready: 0,
            });
        }
    }

    /// Switches one received burst from `in_port`. Frames end up staged per egress
    /// port (see [`Forwarder::drain`]) or dropped and counted in `in_stats`.
    ///
    /// The known-unicast path (parse, learn refresh, lookup, stage) is kept
    /// inline and free of calls; floods, drops and FDB slow paths are out of
    /// line, so the loop's state stays in registers.
    #[inline]
    pub fn process(
        &mut self,
        t: &SwitchTables,
        in_port: PortId,
        burst: &mut Burst,
        now: u32,
        in_stats: &QueueStats,
    ) -> ProcessSummary {
        let bridge = t
            .port(in_port)
            .and_then(|p| p.bridge)
            .and_then(|b| t.bridge(b));
        let Some(bridge) = bridge else {
            in_stats.drop_n(DropReason::NoBridge, burst.len() as u64);
            let dropped = burst.len() as u32;
            burst.clear();
            return ProcessSummary {
                dropped,
                ..ProcessSummary::default()
            };
        };
        if !t.bridge_features(bridge.id).is_empty() {
            return self.process_pipeline(t, bridge, in_port, burst, now, in_stats);
        }
        let fdb = bridge.fdb.view();
        self.burst_seq += 1;
        let seq = self.burst_seq;
        let stages = &mut self.stages[..];
        let pending = &mut self.pending;
        // Every frame ends up unicast, flooded or dropped; the first is the
        // common case, so only the other two are counted, off its path.
        let total = burst.len() as u32;
        self.flooded = 0;
        self.dropped = 0;
        // The keys of the last frame staged as known unicast, and its stage: a
        // frame with the same source and destination (the usual case, a burst
        // from one station to one peer) needs neither the learning probe nor
        // the lookup. The source was refreshed at this same `now`, and the
        // destination's stage was checked in this burst. Any other frame
        // clears it before it learns, so a learn that moves the cached
        // destination can never be bypassed.
        const NO_KEY: u64 = FdbKey::NONE_RAW;
        let (mut last_src, mut last_dst, mut last_out) = (NO_KEY, NO_KEY, 0usize);
        for m in burst.drain(..) {
            let Some(l2) = parse_l2_addrs(m.data()) else {
                discard(m, in_stats, DropReason::Malformed);
                self.dropped += 1;
                continue;
            };
            // One test for both group bits: a group source (malformed) and a
            // group destination (flood or link-local) both leave the unicast
            // path here.
            if l2.group {
                last_src = NO_KEY;
                if l2.src & GROUP_BIT != 0 {
                    discard(m, in_stats, DropReason::Malformed);
                    self.dropped += 1;
                    continue;
                }
                let src_key = FdbKey::from_word(l2.vlan, l2.src);
                let Some(m) = learn(&fdb, src_key, in_port, now, m, in_stats) else {
                    continue; // never: see `learn`
                };
                if l2.dst & LINK_LOCAL_MASK == LINK_LOCAL {
                    discard(m, in_stats, DropReason::LinkLocal);
                    self.dropped += 1;
                    continue;
                }
                self.flooded += 1;
                flood(stages, pending, t, bridge, in_port, m, in_stats);
                continue;
            }
            let (src_key, dst_key) = FdbKey::pair(l2.vlan, l2.src, l2.dst);
            // Same addresses as the last known unicast frame: same stage.
            if src_key.raw() == last_src && dst_key.raw() == last_dst {
                if let Some(st) = stages.get_mut(last_out) {
                    let _ = st.frames.try_push(m);
                }
                continue;
            }
            last_src = NO_KEY;
            let Some(m) = learn(&fdb, src_key, in_port, now, m, in_stats) else {
                continue; // never: see `learn`
            };
            if let Some(out) = fdb.lookup_key(dst_key) {
                match stages.get_mut(out.index()) {
                    // Already checked and opened in this burst. At most one
                    // input burst per port between flushes, so the push
                    // always fits.
                    Some(st) if st.ready == seq => {
                        let _ = st.frames.try_push(m);
                    }
                    // The first frame of this burst for `out`.
                    _ => match open_stage(stages, pending, t, in_port, out, seq) {
                        Ok(()) => {
                            if let Some(st) = stages.get_mut(out.index()) {
                                let _ = st.frames.try_push(m);
                            }
                        }
                        Err(why) => {
                            discard(m, in_stats, why);
                            self.dropped += 1;
                            continue;
                        }
                    },
                }
                (last_src, last_dst, last_out) = (src_key.raw(), dst_key.raw(), out.index());
                continue;
            }
            self.flooded += 1;
            flood(stages, pending, t, bridge, in_port, m, in_stats);
        }
        ProcessSummary {
            unicast: total - self.flooded - self.dropped,
            flooded: self.flooded,
            dropped: self.dropped,
        }
    }

    /// Hands every non-empty stage to `f` (egress port, frames), in the order the
    /// ports were first staged. `f` must leave the burst empty (sent, handed off or
    /// dropped and counted); anything left is freed.
    #[inline]
    pub fn drain(&mut self, mut f: impl FnMut(PortId, &mut Burst)) {
        for i in 0..self.pending.list.len() {
            let p = self.pending.list[i];
            let st = &mut self.stages[p.index()].frames;
            f(p, st);
            st.clear();
        }
        self.pending.list.clear();
        while let Some(p) = self.pending.overflow.pop() {
            let st = &mut self.stages[p.index()].frames;
            f(p, st);
            st.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{MacAddr, VlanId};
    use crate::mempool::Mempool;

    fn mac(n: u8) -> MacAddr {
        MacAddr([0x02, 0, 0, 0, 0, n])
    }

    fn frame(pool: &'static Mempool, dst: MacAddr, src: MacAddr) -> Mbuf {
        let mut m = pool.alloc().unwrap();
        let mut b = Vec::with_capacity(60);
        b.extend_from_slice(&dst.0);
        b.extend_from_slice(&src.0);
        b.extend_from_slice(&[0x08, 0x00]);
        b.resize(60, 0xab);
        m.extend_from_slice(&b).unwrap();
        m
    }

    /// A switch with one bridge of `n` ports, all up.
    fn switch(n: u16, fdb: FdbConfig) -> Arc<Switch> {
        let sw = Switch::new();
        sw.update(|t| {
            t.bridges.push(Some(Bridge {
                id: BridgeId(0),
                name: "br0".into(),
                ports: (0..n).map(PortId).collect(),
                fdb: Arc::new(Fdb::new(&fdb)),
            }));
            for i in 0..n {
                let e = PortEntry::new(PortId(i), &format!("p{i}"), Some(BridgeId(0)), WorkerId(0));
                e.link_up.store(true, Ordering::Relaxed);
                t.ports.push(Some(Arc::new(e)));
            }
        });
        sw
    }

    /// A switch of one bridge, the tables a worker has loaded, and one
    /// worker queue's forwarder and counters, at clock second `now`.
    struct Rig {
        pool: &'static Mempool,
        sw: Arc<Switch>,
        t: Arc<SwitchTables>,
        st: QueueStats,
        fwd: Forwarder,
        now: u32,
    }

    impl Rig {
        /// `n` ports, all up, with the default FDB limits.
        fn new(n: u16) -> Self {
            Self::with_fdb(n, FdbConfig::default())
        }

        fn with_fdb(n: u16, fdb: FdbConfig) -> Self {
            let sw = switch(n, fdb);
            Self {
                pool: Mempool::for_tests(256),
                t: sw.load(),
                sw,
                st: QueueStats::default(),
                fwd: Forwarder::new(),
                now: 1,
            }
        }

        /// Loads the switch's newest tables, as a worker does per burst.
        fn reload(&mut self) {
            self.t = self.sw.load();
        }

        /// The bridge's FDB in the loaded tables.
        fn fdb(&self) -> Arc<Fdb> {
            Arc::clone(&self.t.bridges[0].as_ref().unwrap().fdb)
        }

        fn frame(&self, dst: MacAddr, src: MacAddr) -> Mbuf {
            frame(self.pool, dst, src)
        }

        /// Broadcasts from each of `srcs`.
        fn broadcasts(&self, srcs: impl IntoIterator<Item = MacAddr>) -> Vec<Mbuf> {
            srcs.into_iter()
                .map(|src| self.frame(MacAddr::BROADCAST, src))
                .collect()
        }

        /// Forwards `frames` arriving on `in_port`; returns each frame sent
        /// as (egress port, bytes), in order.
        fn run(&mut self, in_port: u16, frames: Vec<Mbuf>) -> Vec<(u16, Vec<u8>)> {
            forward(&mut self.fwd, &self.t, in_port, frames, &self.st, self.now)
        }

        /// One frame from `src` to `dst` arriving on `in_port`.
        fn send(&mut self, in_port: u16, dst: MacAddr, src: MacAddr) -> Vec<(u16, Vec<u8>)> {
            let m = self.frame(dst, src);
            self.run(in_port, vec![m])
        }

        /// `run`, counting in `st` instead of the rig's counters.
        fn run_counted(
            &mut self,
            in_port: u16,
            frames: Vec<Mbuf>,
            st: &QueueStats,
        ) -> Vec<(u16, Vec<u8>)> {
            forward(&mut self.fwd, &self.t, in_port, frames, st, self.now)
        }
    }

    fn forward(
        fwd: &mut Forwarder,
        t: &SwitchTables,
        in_port: u16,
        frames: Vec<Mbuf>,
        st: &QueueStats,
        now: u32,
    ) -> Vec<(u16, Vec<u8>)> {
        let mut b: Burst = frames.into_iter().collect();
        fwd.prepare(t);
        fwd.process(t, PortId(in_port), &mut b, now, st);
        let mut out = Vec::new();
        fwd.drain(|p, b| {
            for m in b.drain(..) {
                out.push((p.0, m.data().to_vec()));
            }
        });
        out
    }

    fn ports(out: &[(u16, Vec<u8>)]) -> Vec<u16> {
        out.iter().map(|o| o.0).collect()
    }

    fn total_drops(st: &QueueStats) -> u64 {
        st.snapshot().total_drops()
    }

    #[test]
    fn ports_sharing_a_handoff_budget_each_keep_their_part() {
        let pool = Mempool::for_tests(256);
        let budget = HandoffBudget::new(128);
        let entry = |i| {
            PortEntry::new(PortId(i), "p", None, WorkerId(1)).with_handoff_budget(budget.clone())
        };
        let (x, y) = (entry(0), entry(1));
        let burst = || -> Burst { (0..MAX_BURST).map(|_| pool.alloc().unwrap()).collect() };
        // Nobody drains: x is fed four bursts and keeps half the budget.
        let mut sent_x = 0;
        for _ in 0..4 {
            let mut b = burst();
            sent_x += x.hand_off(&mut b);
        }
        assert_eq!((sent_x, budget.held()), (64, 64));
        // y still gets its half; then both are full.
        let (mut b1, mut b2) = (burst(), burst());
        assert_eq!(y.hand_off(&mut b1) + y.hand_off(&mut b2), 64);
        let mut b = burst();
        assert_eq!((x.hand_off(&mut b), y.hand_off(&mut b)), (0, 0));
        assert_eq!(budget.held(), 128);
        // Draining gives the budget back; a removed port's frames too.
        let mut out = Burst::new();
        assert_eq!(x.take_handoff(&mut out, MAX_BURST), 32);
        assert_eq!(budget.held(), 96);
        drop((out, b, b1, b2, x));
        assert_eq!(budget.held(), 64);
        drop(y);
        assert_eq!((budget.held(), pool.in_use()), (0, 0));
    }

    #[test]
    fn flood_copies_count_against_the_senders_share_and_leave_the_pool_to_others() {
        use crate::mempool::{HugepagePolicy, MempoolConfig};
        // A pool of 32 (like the TSO pool, of few buffers) in shares of 12.
        let pool = Mempool::create(&MempoolConfig {
            name: "shared-flood".into(),
            n_mbufs: 32,
            hugepages: HugepagePolicy::Never,
            cache_size: 4,
            port_share: 12,
            ..MempoolConfig::default()
        })
        .unwrap();
        let (sender, other) = (pool.share(), pool.share());
        let mut rig = Rig::new(5);
        let (t, st, fwd) = (&rig.t, &rig.st, &mut rig.fwd);
        fwd.prepare(t);
        // Port 0 floods 8 broadcasts to 4 ports: 24 copies wanted, while the
        // staged frames hold their buffers (as a slow egress would).
        let mut bytes = [0xab; 60];
        bytes[..6].copy_from_slice(&MacAddr::BROADCAST.0);
        bytes[6..12].copy_from_slice(&mac(1).0);
        let mut b: Burst = (0..8)
            .map(|_| {
                let mut m = sender.alloc().unwrap();
                m.extend_from_slice(&bytes).unwrap();
                m
            })
            .collect();
        fwd.process(t, PortId(0), &mut b, 1, st);
        assert_eq!(sender.held(), 12, "the sender's share, no more");
        assert_eq!(st.drops(DropReason::PoolShare), 20);
        assert_eq!(st.drops(DropReason::NoBuffers), 0);
        // Another port's frames still find buffers.
        let theirs: Vec<Mbuf> = (0..12).map(|_| other.alloc().unwrap()).collect();
        let mut sent = 0;
        fwd.drain(|_, b| {
            sent += b.len();
            b.clear();
        });
        assert_eq!(sent, 12);
        drop(theirs);
        assert_eq!((sender.held(), pool.in_use()), (0, 0));
    }

    #[test]
    fn unknown_unicast_floods_all_but_ingress() {
        let mut rig = Rig::new(3);
        let out = rig.send(0, mac(9), mac(1));
        assert_eq!(ports(&out), vec![1, 2]);
        assert!(out.iter().all(|o| o.1[..6] == mac(9).0));
        drop(out);
        assert_eq!(rig.pool.in_use(), 0);
    }

    #[test]
    fn learned_unicast_goes_to_one_port_only() {
        let mut rig = Rig::new(3);
        rig.send(2, mac(1), mac(2)); // learns mac2@2
        let out = rig.send(0, mac(2), mac(1));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, 2);
        assert_eq!(rig.fdb().lookup(VlanId(0), mac(1)), Some(PortId(0)));
    }

    #[test]
    fn repeated_pairs_in_a_burst_forward_like_the_first_and_see_moves() {
        let mut rig = Rig::new(3);
        // mac2 on port 2, mac3 on port 1.
        rig.send(2, mac(1), mac(2));
        rig.send(1, mac(1), mac(3));
        // From port 0: 1->2 twice, 1->3, 1->2 again; then mac2 moves to port 0
        // (it sends from there) and 1->2 must now be a same-port drop.
        let burst = [
            (mac(2), mac(1)),
            (mac(2), mac(1)),
            (mac(3), mac(1)),
            (mac(2), mac(1)),
            (mac(3), mac(2)),
            (mac(2), mac(1)),
            (mac(2), mac(1)),
        ]
        .map(|(dst, src)| rig.frame(dst, src));
        let out = rig.run(0, burst.into());
        let ports: Vec<(u16, u8)> = out.iter().map(|o| (o.0, o.1[11])).collect();
        assert_eq!(ports, vec![(2, 1), (2, 1), (2, 1), (1, 1), (1, 2)]);
        assert_eq!(rig.st.drops(DropReason::SamePort), 2);
        let fdb = rig.fdb();
        assert_eq!(fdb.lookup(VlanId(0), mac(2)), Some(PortId(0)));
        assert_eq!(fdb.lookup(VlanId(0), mac(1)), Some(PortId(0)));
        drop(out);
        assert_eq!(rig.pool.in_use(), 0);
    }

    #[test]
    fn broadcast_floods_and_link_local_is_dropped() {
        let mut rig = Rig::new(4);
        let out = rig.send(1, MacAddr::BROADCAST, mac(1));
        assert_eq!(ports(&out), vec![0, 2, 3]);
        let stp = MacAddr([0x01, 0x80, 0xc2, 0, 0, 0]);
        assert!(rig.send(1, stp, mac(1)).is_empty());
        assert_eq!(rig.st.drops(DropReason::LinkLocal), 1);
    }

    #[test]
    fn frame_to_its_own_ingress_port_is_dropped() {
        let mut rig = Rig::new(2);
        rig.send(0, mac(9), mac(1));
        rig.send(0, mac(9), mac(2));
        assert!(rig.send(0, mac(2), mac(1)).is_empty());
        assert_eq!(rig.st.drops(DropReason::SamePort), 1);
    }

    #[test]
    fn runt_and_multicast_source_are_malformed() {
        let mut rig = Rig::new(2);
        let mut runt = rig.pool.alloc().unwrap();
        runt.extend_from_slice(&[0xff; 10]).unwrap();
        let bad_src = rig.frame(mac(1), MacAddr::BROADCAST);
        assert!(rig.run(0, vec![runt, bad_src]).is_empty());
        assert_eq!(rig.st.drops(DropReason::Malformed), 2);
        assert_eq!(rig.pool.in_use(), 0);
    }

    #[test]
    fn unlearnable_sources_are_still_forwarded_and_counted() {
        let mut rig = Rig::with_fdb(
            3,
            FdbConfig {
                max_entries: 1000,
                max_per_port: 2,
                learn_per_sec: 0,
                ..FdbConfig::default()
            },
        );
        rig.send(2, MacAddr::BROADCAST, mac(9));
        let out = rig.run(0, rig.broadcasts((1..=4).map(mac)));
        assert_eq!(out.len(), 8, "every broadcast reaches both other ports");
        assert_eq!(rig.st.unlearned(Unlearned::PortMacLimit), 2);
        // Known unicast from a source that cannot be learned goes out too.
        let out = rig.send(0, mac(9), mac(5));
        assert_eq!(ports(&out), vec![2]);
        assert_eq!(rig.st.unlearned(Unlearned::PortMacLimit), 3);
        assert_eq!(rig.fdb().lookup(VlanId(0), mac(5)), None);
        assert_eq!(total_drops(&rig.st), 0);

        rig.sw = switch(
            2,
            FdbConfig {
                max_entries: 1,
                max_per_port: 0,
                learn_per_sec: 0,
                ..FdbConfig::default()
            },
        );
        rig.reload();
        assert_eq!(rig.run(0, rig.broadcasts((1..=3).map(mac))).len(), 3);
        assert_eq!(rig.st.unlearned(Unlearned::FdbFull), 2);
        assert_eq!(total_drops(&rig.st), 0);
        assert_eq!(rig.pool.in_use(), 0);
    }

    /// A locally administered unicast address from a 48-bit random word.
    fn random_mac(x: &mut u64) -> MacAddr {
        // xorshift64
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        let w = (*x & 0xffff_ffff_ffff) | 0x0200_0000_0000;
        MacAddr::from_u64(w & !0x0100_0000_0000)
    }

    /// One port sends as many random source addresses as the table holds,
    /// a fresh clock second per burst (so the learning rate never binds):
    /// with the default limits a new station on another port is still
    /// learned, and reachable by unicast.
    #[test]
    fn mac_flood_from_one_port_leaves_new_stations_learnable() {
        let cfg = FdbConfig::default();
        let mut rig = Rig::with_fdb(3, cfg.clone());
        let mut x = 0x1234_5678_9abc_def1u64;
        let bursts = cfg.max_entries / MAX_BURST;
        for now in 0..bursts {
            rig.now = now as u32;
            let frames = rig.broadcasts((0..MAX_BURST).map(|_| random_mac(&mut x)));
            assert_eq!(rig.run(0, frames).len(), 2 * MAX_BURST);
        }
        let fdb = rig.fdb();
        rig.now = bursts as u32;
        let station = mac(77);
        let st1 = QueueStats::default();
        let out = rig.run_counted(1, rig.broadcasts([station]), &st1);
        assert_eq!(out.len(), 2);
        assert_eq!(fdb.lookup(VlanId(0), station), Some(PortId(1)));
        let st2 = QueueStats::default();
        let out = rig.run_counted(2, vec![rig.frame(station, mac(78))], &st2);
        assert_eq!(ports(&out), vec![1]);
        assert_eq!(total_drops(&st1) + total_drops(&st2), 0);
        assert!(fdb.port_count(PortId(0)) <= cfg.max_per_port);
        assert!(rig.st.unlearned(Unlearned::PortMacLimit) > 0);
    }

    /// Ports that together fill the table: a station on a third port is
    /// forwarded but not learned at first; the next housekeeping tick evicts
    /// from the port with the most entries only, and the station is learned.
    #[test]
    fn full_table_evicts_from_the_busiest_port() {
        let mut rig = Rig::with_fdb(
            4,
            FdbConfig {
                max_entries: 256,
                max_per_port: 0,
                learn_per_sec: 0,
                ..FdbConfig::default()
            },
        );
        let mut x = 0x0bad_cafe_f00d_0001u64;
        rig.now = 0;
        for (port, n) in [(0u16, 192usize), (1, 64)] {
            let mut left = n;
            while left > 0 {
                let k = left.min(MAX_BURST);
                let frames = rig.broadcasts((0..k).map(|_| random_mac(&mut x)));
                rig.run(port, frames);
                left -= k;
            }
        }
        let fdb = rig.fdb();
        // Random addresses may lose a few to full probe windows; what matters
        // is that the table is full and port 0 owns the most.
        let before = (fdb.port_count(PortId(0)), fdb.port_count(PortId(1)));
        assert_eq!(fdb.len(), 256);
        assert!(before.0 > before.1);
        let station = mac(200);
        let st2 = QueueStats::default();
        rig.now = 1;
        let out = rig.run_counted(2, rig.broadcasts([station]), &st2);
        assert_eq!(out.len(), 3, "the unlearned station's frame is flooded");
        assert_eq!(st2.unlearned(Unlearned::FdbFull), 1);
        assert_eq!(fdb.lookup(VlanId(0), station), None);

        rig.sw.age_fdbs();
        rig.reload();
        let fdb = rig.fdb();
        assert!(fdb.port_count(PortId(0)) < before.0, "no eviction");
        assert_eq!(
            fdb.port_count(PortId(1)),
            before.1,
            "evicted from the smaller port"
        );
        rig.run_counted(2, rig.broadcasts([station]), &st2);
        assert_eq!(fdb.lookup(VlanId(0), station), Some(PortId(2)));
        assert_eq!(st2.unlearned(Unlearned::FdbFull), 1);
    }

    #[test]
    fn learning_rate_is_limited_per_port_and_counted() {
        let mut rig = Rig::with_fdb(
            3,
            FdbConfig {
                learn_per_sec: 8,
                ..FdbConfig::default()
            },
        );
        let fdb = rig.fdb();
        rig.now = 5;
        // Port 1 owns mac 100 before port 0 starts.
        rig.send(1, MacAddr::BROADCAST, mac(100));
        assert_eq!(rig.run(0, rig.broadcasts((1..=12).map(mac))).len(), 24);
        assert_eq!(fdb.port_count(PortId(0)), 8);
        assert_eq!(rig.st.unlearned(Unlearned::LearnRate), 4);
        // A move is a learn too: over the budget, mac 100 stays on port 1.
        rig.send(0, MacAddr::BROADCAST, mac(100));
        assert_eq!(fdb.lookup(VlanId(0), mac(100)), Some(PortId(1)));
        assert_eq!(rig.st.unlearned(Unlearned::LearnRate), 5);
        // Known stations are refreshed whatever the budget.
        rig.send(0, MacAddr::BROADCAST, mac(1));
        assert_eq!(rig.st.unlearned(Unlearned::LearnRate), 5);
        // Other ports have their own budget.
        let st2 = QueueStats::default();
        rig.run_counted(2, rig.broadcasts([mac(50)]), &st2);
        assert_eq!(fdb.lookup(VlanId(0), mac(50)), Some(PortId(2)));
        // The next second brings a new budget.
        rig.now = 6;
        rig.send(0, MacAddr::BROADCAST, mac(100));
        assert_eq!(fdb.lookup(VlanId(0), mac(100)), Some(PortId(0)));
        assert_eq!(rig.st.unlearned(Unlearned::LearnRate), 5);
        assert_eq!(total_drops(&rig.st), 0);
        assert_eq!(rig.pool.in_use(), 0);
    }
    /// The housekeeping rebuild and port or bridge changes publish from
    /// different threads. Races a rebuild on every tick against a stream of
    /// updates: no update may be undone by a rebuild, and every publication
    /// gets its own generation (a shared one would let `wait_generation`
    /// return before workers saw the change). The table holds enough live
    /// entries that each rebuild takes a while (milliseconds) to copy them.
    #[test]
    fn rebuilds_never_publish_over_a_concurrent_update() {
        const REBUILDS: u32 = 20;
        const LIVE: u64 = 30_000;
        let sw = switch(
            1,
            FdbConfig {
                max_entries: 65536,
                max_per_port: 0,
                learn_per_sec: 0,
                ..FdbConfig::default()
            },
        );
        let fdb = Arc::clone(&sw.load().bridges[0].as_ref().unwrap().fdb);
        for i in 0..LIVE {
            let m = MacAddr::from_u64(0x0600_0000_0000 | i);
            assert_eq!(fdb.learn(VlanId(0), m, PortId(0), 0), Learn::Learned);
        }
        drop(fdb);
        let first = sw.load().generation;
        let rebuilt = Arc::new(AtomicU32::new(0));
        let rebuilder = {
            let (sw, rebuilt) = (Arc::clone(&sw), Arc::clone(&rebuilt));
            std::thread::spawn(move || {
                for n in 1..=REBUILDS {
                    // Enough tombstones that the tick rebuilds the FDB.
                    let fdb = Arc::clone(&sw.load().bridges[0].as_ref().unwrap().fdb);
                    for i in 0..(fdb.slot_count() / 4 + 1) as u64 {
                        let m = MacAddr::from_u64(0x0200_0000_0000 | i);
                        fdb.learn(VlanId(0), m, PortId(0), 0);
                        fdb.remove(VlanId(0), m);
                    }
                    assert!(fdb.needs_rebuild());
                    sw.age_fdbs();
                    // Relaxed: a progress count; the thread is joined.
                    rebuilt.store(n, Ordering::Relaxed);
                }
            })
        };
        let mut updates = 0u64;
        let mut lost = 0u64;
        // Bounded: the rebuilder ends after REBUILDS ticks.
        // Relaxed: see above.
        while rebuilt.load(Ordering::Relaxed) < REBUILDS && updates < 10_000_000 {
            updates += 1;
            let name: Arc<str> = updates.to_string().into();
            sw.update(|t| t.bridges[0].as_mut().unwrap().name = Arc::clone(&name));
            if sw.load().bridges[0].as_ref().unwrap().name != name {
                lost += 1;
            }
        }
        rebuilder.join().unwrap();
        assert_eq!(lost, 0, "updates undone by a rebuild");
        assert_eq!(
            sw.load().generation,
            first + updates + u64::from(REBUILDS),
            "publications lost or sharing a generation"
        );
    }

    #[test]
    fn down_ports_are_skipped_in_flood_and_dropped_for_unicast() {
        let mut rig = Rig::new(3);
        rig.send(2, MacAddr::BROADCAST, mac(2));
        rig.t.ports[2]
            .as_ref()
            .unwrap()
            .link_up
            .store(false, Ordering::Relaxed);
        let out = rig.send(0, MacAddr::BROADCAST, mac(1));
        assert_eq!(ports(&out), vec![1]);
        assert!(rig.send(0, mac(2), mac(1)).is_empty());
        assert_eq!(rig.st.drops(DropReason::PortDown), 1);
    }

    #[test]
    fn port_without_bridge_drops_whole_burst() {
        let mut rig = Rig::new(2);
        rig.sw.update(|t| {
            t.ports.push(Some(Arc::new(PortEntry::new(
                PortId(2),
                "lone",
                None,
                WorkerId(0),
            ))))
        });
        rig.reload();
        let frames = rig.broadcasts([mac(1); 5]);
        assert!(rig.run(2, frames).is_empty());
        assert_eq!(rig.st.drops(DropReason::NoBridge), 5);
    }

    #[test]
    fn vlans_are_separate_learning_domains() {
        let mut rig = Rig::new(3);
        let mut tagged = rig.frame(MacAddr::BROADCAST, mac(5));
        // Insert an 802.1Q tag with VID 7 after the MAC addresses.
        let mut bytes = tagged.data().to_vec();
        bytes.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
        tagged.trim(tagged.len());
        tagged.extend_from_slice(&bytes).unwrap();
        rig.run(1, vec![tagged]);
        let fdb = rig.fdb();
        assert_eq!(fdb.lookup(VlanId(7), mac(5)), Some(PortId(1)));
        assert_eq!(fdb.lookup(VlanId(0), mac(5)), None);
    }

    #[test]
    fn aging_tick_removes_stale_entries() {
        let mut rig = Rig::with_fdb(
            2,
            FdbConfig {
                aging_secs: 1,
                ..FdbConfig::default()
            },
        );
        rig.now = 0;
        rig.send(0, MacAddr::BROADCAST, mac(1));
        std::thread::sleep(std::time::Duration::from_millis(2100));
        assert_eq!(rig.sw.age_fdbs(), 1);
    }
}
