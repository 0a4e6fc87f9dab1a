//! Poll-mode workers: one pinned thread per configured CPU, each polling the port
//! queues assigned to it: `rx_burst` → [`Forwarder::process`] → `tx_burst`.
//!
//! Layer: workers (top of the dataplane). On the packet path. The control plane
//! talks to a worker only through its command [`Ring`] and the switch's published
//! tables; the worker never blocks on the control plane.
//!
//! Ownership: every port queue (a [`Port`] value) lives on exactly one worker. A
//! worker sends to an egress port through its own queue of that port if it has one;
//! otherwise it puts the frames on the port's handoff ring, which the port's owner
//! (the worker holding its first queue) drains each round.
//!
//! Idle behaviour: by default a worker busy-polls. With `idle_sleep_us > 0` it
//! sleeps that long after [`IDLE_POLLS_BEFORE_SLEEP`] consecutive empty rounds,
//! which costs latency only when there was no traffic at all (useful on shared
//! hosts and in tests).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::capture::{unix_time_ns, Direction, PortTaps};
use crate::ids::{PortId, QueueId, WorkerId};
use crate::mbuf::Mbuf;
use crate::port::{Burst, LinkState, Port, MAX_BURST};
use crate::ring::Ring;
use crate::stats::{Counter, QueueStats};
use crate::switch::{Forwarder, PortEntry, Switch, SwitchTables};
use crate::time::cycles;
use crate::tunnel::{Decapped, Encapsulated, HostPort, TunnelShared};
use crate::wire::Gso;

/// Empty poll rounds before an idle worker starts sleeping (when enabled).
pub const IDLE_POLLS_BEFORE_SLEEP: u32 = 2048;
/// Poll rounds between housekeeping calls on every queue.
pub const HOUSEKEEPING_EVERY: u64 = 1024;
/// One poll round in this many is timed stage by stage (see
/// [`WorkerStats::rx_cycles`]); a power of two.
pub const STAGE_SAMPLE_EVERY: u64 = 16;

/// Worker settings.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Worker index.
    pub id: WorkerId,
    /// CPU to pin to (None: not pinned).
    pub cpu: Option<usize>,
    /// Microseconds to sleep when idle (0 = pure busy polling).
    pub idle_sleep_us: u32,
}

/// A request from the control plane.
pub enum WorkerCmd {
    /// Start polling a queue.
    AddQueue {
        /// The port it belongs to.
        port: PortId,
        /// Its queue index.
        queue: QueueId,
        /// The queue itself.
        dev: Box<dyn Port>,
    },
    /// Stop polling every queue of `port` and give them back.
    RemovePort {
        /// Which port.
        port: PortId,
        /// Where to send the queues.
        reply: mpsc::Sender<Vec<Box<dyn Port>>>,
    },
}

/// Worker-level counters (single writer: the worker).
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// TSC cycles spent in rounds that moved packets.
    pub busy_cycles: Counter,
    /// TSC cycles spent in empty rounds.
    pub idle_cycles: Counter,
    /// Poll rounds.
    pub iterations: Counter,
    /// Frames received from all queues.
    pub rx_packets: Counter,
    /// Frames dropped because an egress port's handoff ring, or the handoff
    /// budget of its owner ([`crate::switch::HandoffBudget`]), was full.
    pub handoff_full: Counter,
    /// Frames taken from handoff rings and sent.
    pub handoff_tx: Counter,
    /// Rounds that moved packets: `rx_packets / busy_rounds` is the mean burst.
    pub busy_rounds: Counter,
    /// Per-stage TSC cycles, measured in one poll round of every
    /// [`STAGE_SAMPLE_EVERY`] (four clock reads per queue that received
    /// something; the other rounds read the clock twice in all), for bursts
    /// that received frames: `rx_burst` (the port driver, guest or NIC ring
    /// to mbufs) ...
    pub rx_cycles: Counter,
    /// ... the switch (parse, learn, look up, stage) ...
    pub switch_cycles: Counter,
    /// ... and transmission of the staged frames (the egress drivers, mbufs
    /// to rings, handoffs to other workers). Handoff rings drained in a
    /// sampled round count as tx too.
    pub tx_cycles: Counter,
    /// Frames received in the sampled rounds: divide the stage cycles by this.
    pub sampled_packets: Counter,
}

/// State shared between a worker thread and the control plane.
pub struct WorkerShared {
    /// Settings.
    pub cfg: WorkerConfig,
    cmds: Ring<WorkerCmd>,
    stop: AtomicBool,
    seen_generation: AtomicU64,
    /// Counters.
    pub stats: WorkerStats,
    /// CPU the thread is pinned to, if pinning succeeded.
    pub pinned: AtomicBool,
    /// Queues polled, updated by the worker when it handles a command.
    assigned: std::sync::Mutex<Vec<(PortId, QueueId)>>,
}

impl WorkerShared {
    /// The (port, queue) pairs this worker polls.
    pub fn assigned(&self) -> Vec<(PortId, QueueId)> {
        self.assigned.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// Control-plane handle on a running worker.
pub struct WorkerHandle {
    shared: Arc<WorkerShared>,
    thread: Option<JoinHandle<()>>,
}

/// Errors talking to a worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Thread creation failed.
    #[error("starting worker {id}")]
    Spawn {
        /// Worker index.
        id: u16,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The command ring stayed full.
    #[error("worker {0} is not taking commands (command ring full)")]
    Busy(u16),
    /// No answer in time.
    #[error("worker {0} did not answer within {1:?}")]
    Timeout(u16, Duration),
}

impl WorkerHandle {
    /// Starts a worker thread polling nothing yet.
    ///
    /// # Errors
    /// If the thread cannot be created.
    pub fn spawn(cfg: WorkerConfig, switch: Arc<Switch>) -> Result<WorkerHandle, WorkerError> {
        let id = cfg.id.0;
        let shared = Arc::new(WorkerShared {
            cfg,
            cmds: Ring::new(256),
            stop: AtomicBool::new(false),
            seen_generation: AtomicU64::new(0),
            stats: WorkerStats::default(),
            pinned: AtomicBool::new(false),
            assigned: std::sync::Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        // Measured here, on the control side: its first use takes 10 ms.
        let to_ns = crate::stats::CyclesToNs::measured();
        let thread = std::thread::Builder::new()
            .name(format!("weir-worker-{id}"))
            .spawn(move || run(s, switch, to_ns))
            .map_err(|source| WorkerError::Spawn { id, source })?;
        Ok(WorkerHandle {
            shared,
            thread: Some(thread),
        })
    }

    /// The shared state (config and counters).
    pub fn shared(&self) -> &Arc<WorkerShared> {
        &self.shared
    }

    /// Worker index.
    pub fn id(&self) -> WorkerId {
        self.shared.cfg.id
    }

    fn send(&self, mut cmd: WorkerCmd) -> Result<(), WorkerError> {
        for _ in 0..1000 {
            match self.shared.cmds.push(cmd) {
                Ok(()) => return Ok(()),
                Err(c) => cmd = c,
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Err(WorkerError::Busy(self.shared.cfg.id.0))
    }

    /// Hands a queue to the worker.
    ///
    /// # Errors
    /// If the worker does not take commands.
    pub fn add_queue(
        &self,
        port: PortId,
        queue: QueueId,
        dev: Box<dyn Port>,
    ) -> Result<(), WorkerError> {
        self.send(WorkerCmd::AddQueue { port, queue, dev })
    }

    /// Takes every queue of `port` away from the worker and returns them.
    ///
    /// # Errors
    /// If the worker does not answer within `timeout`.
    pub fn remove_port(
        &self,
        port: PortId,
        timeout: Duration,
    ) -> Result<Vec<Box<dyn Port>>, WorkerError> {
        let (tx, rx) = mpsc::channel();
        self.send(WorkerCmd::RemovePort { port, reply: tx })?;
        rx.recv_timeout(timeout)
            .map_err(|_| WorkerError::Timeout(self.shared.cfg.id.0, timeout))
    }

    /// Waits until the worker has seen table generation `generation` (so it no
    /// longer uses anything an older table referred to).
    pub fn wait_generation(&self, generation: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            // Acquire: pairs with the worker's Release store after it switched tables.
            if self.shared.seen_generation.load(Ordering::Acquire) >= generation {
                return true;
            }
            if Instant::now() >= deadline || self.thread.as_ref().is_none_or(|t| t.is_finished()) {
                return false;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Stops the worker and waits for its thread; its queues are dropped.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        // Relaxed: the worker polls the flag; join() below synchronises.
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

struct LocalQueue {
    port: PortId,
    queue: QueueId,
    dev: Box<dyn Port>,
    stats: Arc<QueueStats>,
    /// For a tunnel port's queue: the tunnel, and the queue's counters
    /// again (both taken out while [`Queues::send_tunnel`] sends on).
    tunnel: Option<(Arc<TunnelShared>, Arc<QueueStats>)>,
}

/// The worker's mutable state, kept apart from the forwarder so both can be
/// borrowed at once.
struct Queues {
    list: Vec<LocalQueue>,
    /// Per port id: index in `list` of the local queue used for tx.
    tx_index: Vec<Option<usize>>,
    /// The ports whose handoff ring this worker drains (it owns them and holds
    /// their first local queue), with that queue's index: worked out when the
    /// tables or the queues change, not in every round.
    drains: Vec<(usize, Arc<PortEntry>)>,
}

impl Queues {
    /// Rebuilds `drains` for tables `t` (after a queue or table change).
    fn find_drains(&mut self, t: &SwitchTables, me: WorkerId) {
        self.drains.clear();
        for (qi, q) in self.list.iter().enumerate() {
            if self.tx_index.get(q.port.index()) != Some(&Some(qi)) {
                continue;
            }
            if let Some(e) = t.port(q.port) {
                if e.owner == me {
                    self.drains.push((qi, Arc::clone(e)));
                }
            }
        }
    }

    fn reindex(&mut self) {
        self.tx_index.clear();
        for (i, q) in self.list.iter().enumerate() {
            let p = q.port.index();
            if self.tx_index.len() <= p {
                self.tx_index.resize(p + 1, None);
            }
            if self.tx_index[p].is_none() {
                self.tx_index[p] = Some(i);
            }
        }
    }

    /// Sends `b` to `out` through a local queue or the port's handoff ring; leaves
    /// `b` empty, counting what could not be sent. Frames the handoff ring or
    /// its budget refuses count as `handoff_full` for the worker and, when
    /// they came from local queue `from`, as `HandoffFull` drops of that
    /// port.
    #[inline]
    fn transmit(
        &mut self,
        t: &SwitchTables,
        out: PortId,
        b: &mut Burst,
        ws: &WorkerStats,
        from: Option<usize>,
    ) {
        if let Some(taps) = t.taps(out) {
            if let Some(Some(_)) = self.tx_index.get(out.index()) {
                self.tap(t, taps, out, Direction::Tx, b, ws);
            }
        }
        self.route(t, out, b, ws, from);
    }

    /// [`Queues::transmit`] without the taps: mirror copies go out this way,
    /// so a copy is never copied again at its output port. (A copy sent
    /// into a tunnel is tapped once more as an outer packet on the
    /// underlay; one that would come back into the same tunnel is dropped,
    /// see [`Queues::send_tunnel`].)
    #[inline]
    fn route(
        &mut self,
        t: &SwitchTables,
        out: PortId,
        b: &mut Burst,
        ws: &WorkerStats,
        from: Option<usize>,
    ) {
        if let Some(&Some(i)) = self.tx_index.get(out.index()) {
            if self.list[i].tunnel.is_some() {
                self.send_tunnel(t, i, b, ws);
            } else {
                send_local(&mut self.list[i], b);
            }
        } else if let Some(e) = t.port(out) {
            e.hand_off(b);
            if !b.is_empty() {
                ws.handoff_full.add(b.len() as u64);
                if let Some(q) = from.and_then(|i| self.list.get(i)) {
                    q.stats
                        .drop_n(crate::stats::DropReason::HandoffFull, b.len() as u64);
                }
                b.clear();
            }
        } else {
            b.clear();
        }
    }
}

impl Queues {
    /// Sends `b` into the tunnel whose queue is local queue `i`: the frames
    /// are made ready (TSO frames segmented, partial checksums completed: a
    /// tunnel takes neither), encapsulated, and the outer packets go on to
    /// the underlay port from here, through this worker's queue of it or its
    /// handoff ring ([`Queues::transmit`], with the underlay's taps). Leaves
    /// `b` empty; the tunnel queue counts what went in and what was dropped.
    #[inline(never)]
    fn send_tunnel(&mut self, t: &SwitchTables, i: usize, b: &mut Burst, ws: &WorkerStats) {
        let Some((tun, stats)) = self.list[i].tunnel.take() else {
            // The tunnel reached again while it sends: a mirror of its own
            // underlay's traffic into it. The copies would loop; dropped.
            self.list[i]
                .stats
                .drop_n(crate::stats::DropReason::PortError, b.len() as u64);
            b.clear();
            return;
        };
        let tso = b.iter().any(|m| m.gso().is_some());
        let mut emit = |u: &PortEntry, out: &mut Burst| self.transmit(t, u.id, out, ws, Some(i));
        let (sent, done) = if tso {
            encap_segmented(&tun, &stats, b, &mut emit)
        } else {
            crate::port::complete_partial_csums(b);
            let n = b.len() as u64;
            (n, tun.encap_burst(b, &stats, &mut emit))
        };
        stats.tx_packets.add(sent - done.failed);
        stats.tx_bytes.add(done.bytes);
        if done.failed > 0 {
            stats.tx_errors.add(done.failed);
        }
        self.list[i].tunnel = Some((tun, stats));
    }

    /// Copies a burst seen on `port` into the captures watching it (one
    /// clock read for the burst) and sends a copy to each mirror's output
    /// port (see [`crate::capture`]). A copy that finds no free buffer is
    /// counted as lost by its mirror; the burst itself is not touched. Out
    /// of line: only ports with taps come here.
    #[cold]
    #[inline(never)]
    fn tap(
        &mut self,
        t: &SwitchTables,
        taps: &PortTaps,
        port: PortId,
        direction: Direction,
        b: &Burst,
        ws: &WorkerStats,
    ) {
        if !taps.captures.is_empty() {
            taps.record_burst(port, direction, unix_time_ns(), b.iter().map(|m| m.data()));
        }
        for mirror in taps.mirrors(direction) {
            let mut copies = Burst::new();
            let mut lost = 0u64;
            for m in b.iter() {
                match m.try_clone() {
                    Some(c) => copies.push(c),
                    None => lost += 1,
                }
            }
            mirror.count(copies.len() as u64, lost);
            self.route(t, mirror.to, &mut copies, ws, None);
        }
    }
}

/// Sends `b` on a local queue; leaves `b` empty, counting what could not be
/// sent. TSO frames the port cannot take whole are segmented first
/// ([`segment_and_send`]). One pass over the burst before the driver sees it
/// (bytes, and whether any frame needs segmenting), and another after it only
/// when the driver left frames behind.
#[inline]
fn send_local(q: &mut LocalQueue, b: &mut Burst) {
    let mut bytes_before = 0usize;
    let mut tso_before = 0usize;
    let mut needs_segmenting = false;
    for m in b.iter() {
        bytes_before += m.len();
        if let Some(g) = m.gso() {
            tso_before += 1;
            needs_segmenting |= !q.dev.accepts_gso(g.kind);
        }
    }
    if needs_segmenting {
        segment_and_send(q, b);
        return;
    }
    // Partial checksums are finished here, once per frame, for every
    // port that cannot pass them on (see `Port`, "Checksum offload").
    if !q.dev.accepts_partial_csum() {
        crate::port::complete_partial_csums(b);
    }
    // Frames a driver takes but cannot send (too large, a write error) it
    // counts as tx_errors; they are not transmitted packets.
    let errors_before = q.stats.tx_errors.get();
    let taken = q.dev.tx_burst(b);
    let (bytes_left, tso_left) = if b.is_empty() {
        (0, 0)
    } else {
        b.iter().fold((0usize, 0usize), |(n, t), m| {
            (n + m.len(), t + usize::from(m.gso().is_some()))
        })
    };
    let failed = q.stats.tx_errors.get().saturating_sub(errors_before) as usize;
    q.stats.tx_packets.add(taken.saturating_sub(failed) as u64);
    q.stats.tx_bytes.add((bytes_before - bytes_left) as u64);
    if tso_before > 0 {
        q.stats.tx_tso_packets.add((tso_before - tso_left) as u64);
    }
    if !b.is_empty() {
        q.stats
            .drop_n(crate::stats::DropReason::TxFull, b.len() as u64);
        b.clear();
    }
}

/// The slow path of [`send_local`] for a burst holding TSO frames the
/// port cannot take whole (see `Port`, "Segmentation offload"): each such frame
/// is cut into segments allocated from its pool's segment pool, and everything
/// goes out in order, a burst at a time. A frame that does not parse is dropped
/// as `Malformed`; segments that cannot be allocated (or do not fit a buffer)
/// are dropped as `NoBuffers`. No heap allocation: the second burst lives on
/// the stack.
#[cold]
#[inline(never)]
fn segment_and_send(q: &mut LocalQueue, b: &mut Burst) {
    let stats = Arc::clone(&q.stats);
    let mut out = Burst::new();
    for m in b.drain(..) {
        match m.gso() {
            Some(g) if !q.dev.accepts_gso(g.kind) => for_each_segment(m, g, &stats, |seg| {
                if out.is_full() {
                    send_local(q, &mut out);
                }
                out.push(seg);
            }),
            _ => {
                if out.is_full() {
                    send_local(q, &mut out);
                }
                out.push(m);
            }
        }
    }
    send_local(q, &mut out);
}

/// Cuts TSO frame `m` into MSS-sized frames with complete checksums,
/// allocated from its pool's segment pool, and hands each to `each`, in
/// order. A frame that does not parse is dropped as `Malformed`; segments
/// that cannot be allocated (or do not fit a buffer) are dropped as
/// `NoBuffers`; both counted in `stats`.
#[inline]
fn for_each_segment(m: Mbuf, gso: Gso, stats: &QueueStats, mut each: impl FnMut(Mbuf)) {
    use crate::stats::DropReason;
    use crate::wire::TsoPlan;
    let plan = match TsoPlan::new(m.data(), gso) {
        Ok(p) => p,
        Err(e) => {
            stats.drop_one(e.into());
            return;
        }
    };
    stats.tso_segmented.inc();
    let pool = m.pool().segment_pool();
    for i in 0..plan.segments() {
        let Some(mut seg) = pool.alloc() else {
            stats.drop_one(DropReason::NoBuffers);
            continue;
        };
        let n = plan.write_segment(m.data(), i, seg.room_mut());
        if n == 0 || seg.set_len(n).is_err() {
            stats.drop_one(DropReason::NoBuffers);
            continue;
        }
        seg.set_port(m.port());
        each(seg);
    }
}

/// [`Queues::send_tunnel`] for a burst holding TSO frames: they are
/// segmented ([`for_each_segment`]) and everything is encapsulated in order,
/// a burst at a time. Returns the frames (segments) given to the tunnel and
/// what it took of them.
#[cold]
#[inline(never)]
fn encap_segmented(
    tun: &TunnelShared,
    stats: &QueueStats,
    b: &mut Burst,
    emit: &mut impl FnMut(&PortEntry, &mut Burst),
) -> (u64, Encapsulated) {
    let mut sent = 0u64;
    let mut done = Encapsulated::default();
    let mut go = |chunk: &mut Burst| {
        crate::port::complete_partial_csums(chunk);
        sent += chunk.len() as u64;
        let d = tun.encap_burst(chunk, stats, &mut *emit);
        done.failed += d.failed;
        done.bytes += d.bytes;
    };
    let mut chunk = Burst::new();
    for m in b.drain(..) {
        match m.gso() {
            Some(g) => for_each_segment(m, g, stats, |seg| {
                if chunk.is_full() {
                    go(&mut chunk);
                }
                chunk.push(seg);
            }),
            None => {
                if chunk.is_full() {
                    go(&mut chunk);
                }
                chunk.push(m);
            }
        }
    }
    go(&mut chunk);
    (sent, done)
}

fn run(shared: Arc<WorkerShared>, switch: Arc<Switch>, to_ns: crate::stats::CyclesToNs) {
    let cfg = shared.cfg.clone();
    pin(&shared);
    let mut cache = arc_swap::Cache::new(switch.tables());
    let mut queues = Queues {
        list: Vec::new(),
        tx_index: Vec::new(),
        drains: Vec::new(),
    };
    let mut drains_stale = true;
    let mut fwd = Forwarder::new();
    let mut burst = Burst::new();
    let mut generation = u64::MAX;
    let mut idle_rounds = 0u32;
    let ws = &shared.stats;
    let mut round: u64 = 0;
    // Each round starts where the previous one ended (one clock read per
    // round), so that busy plus idle cycles are all of the worker's time: a
    // round of an idle worker is only a few dozen cycles, and reading the
    // clock at both ends left the time between rounds, over half of it at
    // low rates, out of both counts.
    let mut end = cycles();
    // Relaxed: stop is a plain flag; thread join provides the synchronisation.
    while !shared.stop.load(Ordering::Relaxed) {
        let start = end;
        round += 1;
        // 1. Between two rounds: take or give back a queue.
        if let Some(cmd) = shared.cmds.pop() {
            handle_cmd(cmd, &mut queues);
            drains_stale = true;
            if let Ok(mut a) = shared.assigned.lock() {
                *a = queues.list.iter().map(|q| (q.port, q.queue)).collect();
            }
        }
        // 2. The current tables; a new generation is acknowledged.
        let t: &Arc<SwitchTables> = cache.load();
        if t.generation != generation {
            generation = t.generation;
            fwd.prepare(t);
            drains_stale = true;
            // Release: everything we did under older tables happens before the
            // control plane sees this generation acknowledged.
            shared.seen_generation.store(generation, Ordering::Release);
        }
        if drains_stale {
            queues.find_drains(t, cfg.id);
            drains_stale = false;
        }
        let sample = round & (STAGE_SAMPLE_EVERY - 1) == 0;
        // 3. Poll every queue, switch its burst, send the results.
        let mut moved = poll_queues(
            t,
            &mut queues,
            &mut fwd,
            &mut burst,
            switch.now_secs(),
            ws,
            sample.then_some(to_ns),
        );
        // 4. Frames other workers handed to ports whose first queue is ours.
        moved += drain_handoffs(t, &mut queues, &mut burst, ws, sample);
        // 5. Now and then, or when idle: driver upkeep and link state.
        if round.is_multiple_of(HOUSEKEEPING_EVERY) || idle_rounds > IDLE_POLLS_BEFORE_SLEEP {
            housekeep(t, &mut queues, cfg.id);
        }
        // 6. Account the round; sleep if idle long enough and allowed to.
        ws.iterations.inc();
        end = cycles();
        let spent = end.wrapping_sub(start);
        if moved > 0 {
            ws.busy_rounds.inc();
            ws.busy_cycles.add(spent);
            idle_rounds = 0;
        } else {
            ws.idle_cycles.add(spent);
            idle_rounds = idle_rounds.saturating_add(1);
            if cfg.idle_sleep_us > 0 && idle_rounds > IDLE_POLLS_BEFORE_SLEEP {
                std::thread::sleep(Duration::from_micros(cfg.idle_sleep_us as u64));
                // Time asleep is neither busy nor idle polling.
                end = cycles();
            }
        }
    }
    // Give back cached buffers so the pool's level is exact after shutdown.
    drop(queues);
    crate::mempool::flush_thread_caches();
}

/// Pins the calling worker thread to its CPU, if it has one.
fn pin(shared: &WorkerShared) {
    let Some(cpu) = shared.cfg.cpu else { return };
    let ok = core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
    // Relaxed: informational.
    shared.pinned.store(ok, Ordering::Relaxed);
    if !ok {
        tracing::warn!(worker = shared.cfg.id.0, cpu, "could not pin worker to CPU");
    }
}

/// A stage boundary's time in a sampled round; 0 (no clock read) in the
/// others.
#[inline(always)]
fn stamp(sample: bool) -> u64 {
    if sample {
        cycles()
    } else {
        0
    }
}

/// Receives a burst from each local queue, switches it and transmits the
/// results; returns the frames received. In a sampled round (`sampled`:
/// the clock's conversion to ns) it times the stages and each burst's
/// receive-to-transmit latency.
#[inline(always)]
fn poll_queues(
    t: &SwitchTables,
    queues: &mut Queues,
    fwd: &mut Forwarder,
    burst: &mut Burst,
    now: u32,
    ws: &WorkerStats,
    sampled: Option<crate::stats::CyclesToNs>,
) -> usize {
    let sample = sampled.is_some();
    let mut moved = 0usize;
    for qi in 0..queues.list.len() {
        let q = &mut queues.list[qi];
        let t0 = stamp(sample);
        let n = q.dev.rx_burst(burst);
        if n == 0 {
            continue;
        }
        let t1 = stamp(sample);
        moved += n;
        received(t, queues, qi, burst, ws);
        let q = &queues.list[qi];
        let port = q.port;
        let host = t.host(port);
        let mut dec = Decapped::default();
        if let Some(host) = host {
            host.demux(burst, &q.stats, now, &mut dec);
        }
        fwd.process(t, q.port, burst, now, &q.stats);
        let t2 = stamp(sample);
        fwd.drain(|out, b| queues.transmit(t, out, b, ws, Some(qi)));
        if let (Some(host), false) = (host, dec.is_empty()) {
            switch_decapped(t, queues, fwd, host, &mut dec, qi, now, ws);
        }
        if let Some(to_ns) = sampled {
            let t3 = cycles();
            ws.rx_cycles.add(t1.wrapping_sub(t0));
            ws.switch_cycles.add(t2.wrapping_sub(t1));
            ws.tx_cycles.add(t3.wrapping_sub(t2));
            ws.sampled_packets.add(n as u64);
            // Receive to transmit of this burst, counted on the queue it
            // came from: once per sampled burst, nothing per frame.
            queues.list[qi]
                .stats
                .record_latency(to_ns.ns(t3.wrapping_sub(t1)), n as u64);
        }
    }
    ws.rx_packets.add(moved as u64);
    moved
}

/// Takes in burst `b`, received on local queue `qi`: stamps each frame
/// with the queue's port, counts the burst on the queue, and copies it to
/// the port's receive captures and mirrors.
#[inline(always)]
fn received(t: &SwitchTables, queues: &mut Queues, qi: usize, b: &mut Burst, ws: &WorkerStats) {
    let q = &queues.list[qi];
    let port = q.port;
    let mut bytes = 0usize;
    let mut tso = 0usize;
    for m in b.iter_mut() {
        m.set_port(port.0);
        bytes += m.len();
        tso += usize::from(m.gso().is_some());
    }
    q.stats.rx_packets.add(b.len() as u64);
    q.stats.rx_bytes.add(bytes as u64);
    if tso > 0 {
        q.stats.rx_tso_packets.add(tso as u64);
    }
    if let Some(taps) = t.taps(port) {
        queues.tap(t, taps, port, Direction::Rx, b, ws);
    }
}

/// Switches the frames `host` decapsulated from a burst of local queue
/// `from` (an underlay port's), tunnel by tunnel, as received on this
/// worker's queue of the tunnel port (which counts them). A tunnel this
/// worker has no queue of yet (it was just added) gets them on its ring;
/// what the ring refuses is counted as `handoff-full` on `from`.
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn switch_decapped(
    t: &SwitchTables,
    queues: &mut Queues,
    fwd: &mut Forwarder,
    host: &HostPort,
    dec: &mut Decapped,
    from: usize,
    now: u32,
    ws: &WorkerStats,
) {
    let mut inner = Burst::new();
    while let Some(k) = dec.take_next(&mut inner) {
        let Some(tun) = host.tunnels.get(k) else {
            inner.clear();
            continue;
        };
        let port = tun.id;
        let Some(&Some(qi)) = queues.tx_index.get(port.index()) else {
            let refused = tun.push_rx(&mut inner);
            if refused > 0 {
                queues.list[from]
                    .stats
                    .drop_n(crate::stats::DropReason::HandoffFull, refused as u64);
            }
            continue;
        };
        received(t, queues, qi, &mut inner, ws);
        let q = &queues.list[qi];
        fwd.process(t, port, &mut inner, now, &q.stats);
        fwd.drain(|out, b| queues.transmit(t, out, b, ws, Some(qi)));
    }
}

/// Transmits what other workers handed off to the ports this worker drains;
/// returns the frames sent on.
#[inline(always)]
fn drain_handoffs(
    t: &SwitchTables,
    queues: &mut Queues,
    burst: &mut Burst,
    ws: &WorkerStats,
    sample: bool,
) -> usize {
    let mut moved = 0usize;
    // Taken out while `transmit` borrows the queues (moves the Vec, no
    // allocation); put back below.
    let drains = std::mem::take(&mut queues.drains);
    for (qi, e) in &drains {
        if e.handoff.is_empty() {
            continue;
        }
        let t0 = stamp(sample);
        let port = queues.list[*qi].port;
        let n = e.take_handoff(burst, MAX_BURST);
        ws.handoff_tx.add(n as u64);
        moved += n;
        queues.transmit(t, port, burst, ws, None);
        if sample {
            ws.tx_cycles.add(cycles().wrapping_sub(t0));
        }
    }
    queues.drains = drains;
    moved
}

/// Driver upkeep of every local queue, and the link state of the ports this
/// worker owns.
#[cold]
fn housekeep(t: &SwitchTables, queues: &mut Queues, me: WorkerId) {
    for q in &mut queues.list {
        q.dev.housekeeping();
        if let Some(e) = t.port(q.port) {
            if e.owner == me {
                // Relaxed: advisory link state (see PortEntry::is_up).
                e.link_up
                    .store(q.dev.link() == LinkState::Up, Ordering::Relaxed);
            }
        }
    }
}

fn handle_cmd(cmd: WorkerCmd, queues: &mut Queues) {
    match cmd {
        WorkerCmd::AddQueue { port, queue, dev } => {
            let stats = dev.stats().clone();
            let tunnel = dev.tunnel().map(|t| (Arc::clone(t), Arc::clone(&stats)));
            queues.list.push(LocalQueue {
                port,
                queue,
                dev,
                stats,
                tunnel,
            });
            queues.reindex();
        }
        WorkerCmd::RemovePort { port, reply } => {
            let mut removed = Vec::new();
            let mut i = 0;
            while i < queues.list.len() {
                if queues.list[i].port == port {
                    removed.push(queues.list.remove(i).dev);
                } else {
                    i += 1;
                }
            }
            queues.reindex();
            let _ = reply.send(removed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{BridgeId, MacAddr};
    use crate::mbuf::Mbuf;
    use crate::mempool::Mempool;
    use crate::switch::{Bridge, Fdb, FdbConfig, HandoffBudget, PortEntry};

    /// A port backed by two rings: the test pushes into `rx`, reads from `tx`.
    struct RingPort {
        rx: Arc<Ring<Mbuf>>,
        tx: Arc<Ring<Mbuf>>,
        stats: Arc<QueueStats>,
        /// Claims to pass partial checksums on (like a GUEST_CSUM guest).
        accepts_partial: bool,
    }

    impl Port for RingPort {
        fn rx_burst(&mut self, b: &mut Burst) -> usize {
            let room = b.remaining_capacity();
            self.rx.dequeue_burst(b, room)
        }
        fn tx_burst(&mut self, b: &mut Burst) -> usize {
            self.tx.enqueue_burst(b)
        }
        fn stats(&self) -> &Arc<QueueStats> {
            &self.stats
        }
        fn accepts_partial_csum(&self) -> bool {
            self.accepts_partial
        }
    }

    struct Ends {
        rx: Arc<Ring<Mbuf>>,
        tx: Arc<Ring<Mbuf>>,
        stats: Arc<QueueStats>,
    }

    fn ring_port() -> (RingPort, Ends) {
        let (rx, tx) = (Arc::new(Ring::new(1024)), Arc::new(Ring::new(1024)));
        let stats = Arc::new(QueueStats::default());
        (
            RingPort {
                rx: rx.clone(),
                tx: tx.clone(),
                stats: stats.clone(),
                accepts_partial: false,
            },
            Ends { rx, tx, stats },
        )
    }

    /// Adds ring ports `ids` to worker `w` (queue 0 each) and returns their
    /// test ends in order.
    fn add_ring_ports(w: &WorkerHandle, ids: std::ops::Range<u16>) -> Vec<Ends> {
        add_ring_ports_with(w, ids, |_| false)
    }

    /// As [`add_ring_ports`], port `i` claiming to pass partial checksums on
    /// if `accepts_partial(i)`.
    fn add_ring_ports_with(
        w: &WorkerHandle,
        ids: std::ops::Range<u16>,
        accepts_partial: impl Fn(u16) -> bool,
    ) -> Vec<Ends> {
        ids.map(|i| {
            let (mut p, e) = ring_port();
            p.accepts_partial = accepts_partial(i);
            w.add_queue(PortId(i), QueueId(0), Box::new(p)).unwrap();
            e
        })
        .collect()
    }

    fn frame(pool: &'static Mempool, dst: MacAddr, src: MacAddr) -> Mbuf {
        let mut m = pool.alloc().unwrap();
        let mut b = vec![0u8; 60];
        b[..6].copy_from_slice(&dst.0);
        b[6..12].copy_from_slice(&src.0);
        m.extend_from_slice(&b).unwrap();
        m
    }

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }

    fn setup(owners: &[u16]) -> Arc<Switch> {
        setup_with(owners, |_, e| e)
    }

    /// One bridge of ports `p0`.. owned by `owners`' workers, each entry
    /// passed through `entry` (with its worker) first.
    fn setup_with(owners: &[u16], entry: impl Fn(u16, PortEntry) -> PortEntry) -> Arc<Switch> {
        let sw = Switch::new();
        sw.update(|t| {
            t.bridges.push(Some(Bridge {
                id: BridgeId(0),
                name: "br0".into(),
                ports: (0..owners.len() as u16).map(PortId).collect(),
                fdb: Arc::new(Fdb::new(&FdbConfig::default())),
            }));
            for (i, &w) in owners.iter().enumerate() {
                let e = PortEntry::new(
                    PortId(i as u16),
                    &format!("p{i}"),
                    Some(BridgeId(0)),
                    WorkerId(w),
                );
                t.ports.push(Some(Arc::new(entry(w, e))));
            }
        });
        sw
    }

    fn worker(id: u16, sw: &Arc<Switch>) -> WorkerHandle {
        worker_sleeping(id, sw, 50)
    }

    fn worker_sleeping(id: u16, sw: &Arc<Switch>, idle_sleep_us: u32) -> WorkerHandle {
        WorkerHandle::spawn(
            WorkerConfig {
                id: WorkerId(id),
                cpu: None,
                idle_sleep_us,
            },
            sw.clone(),
        )
        .unwrap()
    }

    /// Waits until every port of `sw` is up (link state is published by the
    /// workers' housekeeping).
    fn wait_all_up(sw: &Switch) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !sw.load().ports.iter().flatten().all(|p| p.is_up()) {
            assert!(Instant::now() < deadline, "ports never came up");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits until worker `w` has finished `n` more poll rounds: whatever it
    /// was going to do with frames already in its rings is done by then.
    fn wait_rounds(w: &WorkerHandle, n: u64) {
        let iterations = &w.shared().stats.iterations;
        let target = iterations.get() + n;
        let deadline = Instant::now() + Duration::from_secs(10);
        while iterations.get() < target {
            assert!(Instant::now() < deadline, "worker stopped polling");
            std::thread::yield_now();
        }
    }

    fn wait_for(ring: &Ring<Mbuf>, n: usize) -> Vec<Mbuf> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        while got.len() < n && Instant::now() < deadline {
            match ring.pop() {
                Some(m) => got.push(m),
                None => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        got
    }

    #[test]
    fn partial_checksums_are_completed_only_for_ports_that_cannot_pass_them_on() {
        use crate::wire::offload::tests::partial_udp4;
        use crate::wire::PartialCsum;
        let pool = Mempool::for_tests(64);
        let sw = setup(&[0, 0, 0]);
        let w = worker(0, &sw);
        let ends = add_ring_ports_with(&w, 0..3, |i| i == 1);
        wait_all_up(&sw);
        // A broadcast UDP frame with a pending checksum floods to ports 1 and 2:
        // one of them gets a copy, and the copy must keep the metadata.
        let partial = PartialCsum {
            start: 34,
            offset: 6,
        };
        let mut m = pool.alloc().unwrap();
        m.extend_from_slice(&partial_udp4()).unwrap();
        m.set_partial_csum(Some(partial));
        ends[0].rx.push(m).unwrap();
        let passed = wait_for(&ends[1].tx, 1);
        let completed = wait_for(&ends[2].tx, 1);
        assert_eq!(passed.len(), 1);
        assert_eq!(passed[0].partial_csum(), Some(partial));
        assert_eq!(passed[0].data(), &partial_udp4()[..]);
        assert_eq!(completed.len(), 1);
        assert_eq!(completed[0].partial_csum(), None);
        let mut want = partial_udp4();
        want[40..42].copy_from_slice(&[0x64, 0xb0]);
        assert_eq!(completed[0].data(), &want[..]);
        w.stop();
    }

    #[test]
    fn busy_and_idle_cycles_add_up_to_the_time_that_passed() {
        let sw = setup(&[0]);
        // Busy polling: every round is counted, none sleeps.
        let w = worker_sleeping(0, &sw, 0);
        let (p, _end) = ring_port();
        w.add_queue(PortId(0), QueueId(0), Box::new(p)).unwrap();
        wait_all_up(&sw);
        let ws = &w.shared().stats;
        let counted = || ws.busy_cycles.get() + ws.idle_cycles.get();
        // Every cycle of the worker's time is in one of the two counts. They
        // lag by the round in progress, under a microsecond unless the thread
        // is preempted in it (the round then counts that time when it ends),
        // so a window may come out off by a preemption on a loaded machine:
        // one of three must be within 3 %. Counting from each round's own
        // start instead left the time between rounds out: 9-65 % of it.
        let mut shares = Vec::new();
        for _ in 0..3 {
            let (c0, t0) = (counted(), cycles());
            std::thread::sleep(Duration::from_millis(300));
            let (c1, t1) = (counted(), cycles());
            let share = (c1 - c0) as f64 / (t1 - t0) as f64;
            if (0.97..1.03).contains(&share) {
                return;
            }
            shares.push(share);
        }
        panic!("busy + idle cycles were {shares:.3?} of the time passed");
    }

    #[test]
    fn worker_floods_then_forwards_learned_unicast() {
        let pool = Mempool::for_tests(256);
        let sw = setup(&[0, 0, 0]);
        let w = worker(0, &sw);
        let ends = add_ring_ports(&w, 0..3);
        // Link state is published by housekeeping; wait until all three are up.
        wait_all_up(&sw);
        ends[1]
            .rx
            .push(frame(pool, MacAddr::BROADCAST, mac(2)))
            .unwrap();
        assert_eq!(wait_for(&ends[0].tx, 1).len(), 1);
        assert_eq!(wait_for(&ends[2].tx, 1).len(), 1);
        ends[0].rx.push(frame(pool, mac(2), mac(1))).unwrap();
        let got = wait_for(&ends[1].tx, 1);
        assert_eq!(got[0].data()[..6], mac(2).0);
        // Two whole rounds after the one that forwarded it: a flooded copy
        // would be in port 2's ring and out of the pool by now.
        wait_rounds(&w, 2);
        assert!(ends[2].tx.is_empty(), "learned unicast must not flood");
        assert_eq!(pool.in_use(), 1, "only the delivered frame is held");
        assert_eq!(ends[0].stats.rx_packets.get(), 1);
        assert_eq!(ends[1].stats.tx_packets.get(), 1);
        assert_eq!(ends[2].stats.tx_packets.get(), 1);
        let mut a = w.shared().assigned();
        a.sort();
        assert_eq!(a.len(), 3);
    }

    #[test]
    fn taps_copy_what_a_port_receives_and_sends_to_mirrors_and_captures() {
        use crate::capture::{Capture, CaptureFilter, Mirror};
        let pool = Mempool::for_tests(256);
        let sw = setup(&[0, 0, 0]);
        let w = worker(0, &sw);
        let ends = add_ring_ports(&w, 0..3);
        wait_all_up(&sw);
        // Learn mac(1) on p0 and mac(2) on p1 (the floods reach p2 too).
        for (p, m) in [(0, 1), (1, 2)] {
            ends[p]
                .rx
                .push(frame(pool, MacAddr::BROADCAST, mac(m)))
                .unwrap();
            assert_eq!(wait_for(&ends[2].tx, 1).len(), 1);
        }
        let _ = wait_for(&ends[0].tx, 1);
        let _ = wait_for(&ends[1].tx, 1);
        // Mirror what p0 receives and what p1 sends to p2; capture what p1
        // sends.
        let mirror = Mirror::new("m", PortId(2));
        let tx_only = CaptureFilter {
            tx: true,
            ..CaptureFilter::default()
        };
        let cap = Capture::new(tx_only, 8, 64);
        let generation = sw.update(|t| {
            t.set_taps(
                PortId(0),
                Some(Arc::new(PortTaps {
                    mirror_rx: vec![Arc::clone(&mirror)],
                    ..PortTaps::default()
                })),
            );
            t.set_taps(
                PortId(1),
                Some(Arc::new(PortTaps {
                    captures: vec![Arc::clone(&cap)],
                    mirror_tx: vec![Arc::clone(&mirror)],
                    ..PortTaps::default()
                })),
            );
        });
        assert!(w.wait_generation(generation, Duration::from_secs(5)));
        ends[0].rx.push(frame(pool, mac(2), mac(1))).unwrap();
        let original = wait_for(&ends[1].tx, 1);
        assert_eq!(original[0].data()[..6], mac(2).0);
        // Two copies, in the order they were made: p0's rx, then p1's tx.
        let copies = wait_for(&ends[2].tx, 2);
        assert!(copies.iter().all(|c| c.data() == original[0].data()));
        assert_eq!((mirror.copied(), mirror.lost()), (2, 0));
        let slot = cap.take().expect("p1's transmit was captured");
        assert_eq!((slot.port, slot.direction), (PortId(1), Direction::Tx));
        assert_eq!(slot.data(), original[0].data());
        assert!(cap.take().is_none());
        assert_eq!(ends[2].stats.tx_packets.get(), 4, "2 floods, 2 copies");
    }

    /// A port whose `rx_burst` blocks its worker once `stall` is set (a
    /// worker stuck in a driver), until `release` is; `stalled` tells the
    /// test it happened.
    struct StallingPort {
        stall: Arc<AtomicBool>,
        stalled: Arc<AtomicBool>,
        release: Arc<AtomicBool>,
        stats: Arc<QueueStats>,
    }

    impl Port for StallingPort {
        fn rx_burst(&mut self, _: &mut Burst) -> usize {
            if self.stall.load(Ordering::Acquire) {
                self.stalled.store(true, Ordering::Release);
                let deadline = Instant::now() + Duration::from_secs(60);
                while !self.release.load(Ordering::Acquire) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            0
        }
        fn tx_burst(&mut self, b: &mut Burst) -> usize {
            let n = b.len();
            b.clear();
            n
        }
        fn stats(&self) -> &Arc<QueueStats> {
            &self.stats
        }
    }

    #[test]
    fn a_stuck_worker_pins_no_more_than_its_handoff_budget() {
        // Ports 0 and 1 on worker 0; ports 2-6 on worker 1, whose handoff
        // rings share a budget of 64 frames (as the daemon sizes it: a
        // quarter of the pool over two workers).
        let pool = Mempool::for_tests(512);
        let owners = [0, 0, 1, 1, 1, 1, 1];
        let budgets = [HandoffBudget::new(64), HandoffBudget::new(64)];
        let sw = setup_with(&owners, |w, e| {
            e.with_handoff_budget(budgets[usize::from(w)].clone())
        });
        let (w0, w1) = (worker(0, &sw), worker(1, &sw));
        let (p0, a) = ring_port();
        let (p1, b) = ring_port();
        w0.add_queue(PortId(0), QueueId(0), Box::new(p0)).unwrap();
        w0.add_queue(PortId(1), QueueId(0), Box::new(p1)).unwrap();
        let far = add_ring_ports(&w1, 2..6);
        let [stall, stalled, release] = [(); 3].map(|_| Arc::new(AtomicBool::new(false)));
        let staller = StallingPort {
            stall: stall.clone(),
            stalled: stalled.clone(),
            release: release.clone(),
            stats: Arc::new(QueueStats::default()),
        };
        w1.add_queue(PortId(6), QueueId(0), Box::new(staller))
            .unwrap();
        wait_all_up(&sw);
        stall.store(true, Ordering::Release);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !stalled.load(Ordering::Acquire) {
            assert!(Instant::now() < deadline, "worker 1 never stalled");
            std::thread::sleep(Duration::from_millis(1));
        }
        // Port 0 broadcasts: each frame goes to port 1 (same worker) and is
        // handed off to ports 2-6, which nobody drains now. Without a
        // budget their rings (1024 each) take the whole pool after about a
        // hundred frames, and port 1 starves with them.
        const FRAMES: usize = 2000;
        let (mut sent, mut got) = (0usize, 0usize);
        let deadline = Instant::now() + Duration::from_secs(20);
        while got < FRAMES && Instant::now() < deadline {
            if sent < FRAMES && a.rx.len() < 64 {
                if let Some(mut m) = pool.alloc() {
                    m.extend_from_slice(&[0xff; 6]).unwrap();
                    m.extend_from_slice(&mac(1).0).unwrap();
                    m.extend_from_slice(&[0; 48]).unwrap();
                    if a.rx.push(m).is_ok() {
                        sent += 1;
                    }
                }
            }
            match b.tx.pop() {
                Some(_) => got += 1,
                None => std::thread::yield_now(),
            }
        }
        let held = budgets[1].held();
        release.store(true, Ordering::Release);
        assert_eq!(got, FRAMES, "port 1 starved: {sent} sent, pool {pool:?}");
        assert!(held <= 64, "{held} frames held in handoff rings");
        let refused = w0.shared().stats.handoff_full.get();
        assert!(refused > 0);
        assert_eq!(
            a.stats.drops(crate::stats::DropReason::HandoffFull),
            refused
        );
        assert!(far.iter().all(|e| e.tx.is_empty()));
        // Once worker 1 runs again it drains what it held.
        w1.stop();
        w0.stop();
        drop(sw);
        assert_eq!(budgets[1].held(), 0);
    }

    #[test]
    fn frames_cross_workers_through_the_handoff_ring() {
        let pool = Mempool::for_tests(256);
        let sw = setup(&[0, 1]);
        let (w0, w1) = (worker(0, &sw), worker(1, &sw));
        let (pa, a) = ring_port();
        let (pb, b) = ring_port();
        w0.add_queue(PortId(0), QueueId(0), Box::new(pa)).unwrap();
        w1.add_queue(PortId(1), QueueId(0), Box::new(pb)).unwrap();
        wait_all_up(&sw);
        for i in 0..100u8 {
            let mut f = frame(pool, MacAddr::BROADCAST, mac(1));
            f.data_mut()[20] = i;
            let mut f = Some(f);
            while let Some(x) = f.take() {
                if let Err(x) = a.rx.push(x) {
                    f = Some(x);
                    std::thread::yield_now();
                }
            }
        }
        let got = wait_for(&b.tx, 100);
        assert_eq!(got.len(), 100);
        assert!(
            got.iter().enumerate().all(|(i, m)| m.data()[20] == i as u8),
            "order kept"
        );
        assert_eq!(w1.shared().stats.handoff_tx.get(), 100);
        assert_eq!(b.stats.tx_packets.get(), 100);
    }

    #[test]
    fn removed_port_is_returned_and_others_keep_forwarding() {
        let pool = Mempool::for_tests(256);
        let sw = setup(&[0, 0, 0]);
        let w = worker(0, &sw);
        let ends = add_ring_ports(&w, 0..3);
        let generation = sw.update(|t| {
            t.ports[2] = None;
            t.bridges[0].as_mut().unwrap().ports.retain(|p| p.0 != 2);
        });
        assert!(w.wait_generation(generation, Duration::from_secs(5)));
        let removed = w.remove_port(PortId(2), Duration::from_secs(5)).unwrap();
        assert_eq!(removed.len(), 1);
        drop(removed);
        wait_all_up(&sw);
        ends[0]
            .rx
            .push(frame(pool, MacAddr::BROADCAST, mac(1)))
            .unwrap();
        let delivered = wait_for(&ends[1].tx, 1);
        assert_eq!(delivered.len(), 1);
        wait_rounds(&w, 2);
        // The flood went to port 1 only: no copy for the removed port was
        // made, sent or left behind.
        assert!(ends[2].tx.is_empty());
        assert_eq!(pool.in_use(), 1, "frames other than the delivered one");
        drop(delivered);
        assert_eq!(pool.in_use(), 0);
    }

    /// A tunnel's queue and its underlay's on one worker: a frame switched
    /// to the tunnel leaves on the underlay in the same round (no handoff
    /// ring), and a tunnel packet received on the underlay is switched as
    /// received on the tunnel port, counted there, its source learned
    /// against the remote.
    #[test]
    fn a_worker_encapsulates_and_decapsulates_in_its_own_round() {
        use crate::testutil::eth_frame;
        use crate::tunnel::{Remote, TunnelState, Vnis};
        use crate::wire::tunnel::{OuterHeader, TunnelKind, MTU_OVERHEAD, OUTER_LEN};
        use std::net::Ipv4Addr;
        let pool = Mempool::for_tests(256);
        let (a, b) = (Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2));
        let (mac_a, mac_b) = (mac(0xa1), mac(0xb2));
        // Ports 0 (the VM's) and 1 (the tunnel) on br0; the underlay, 2, on
        // no bridge, with weir's address and the tunnel.
        let sw = setup(&[0, 0]);
        let tun = TunnelShared::new(
            "vx0",
            PortId(1),
            TunnelKind::Vxlan,
            4789,
            a,
            vec![b],
            Vnis::Single(5000),
            &FdbConfig::default(),
        );
        let underlay = Arc::new(PortEntry::new(PortId(2), "uplink", None, WorkerId(0)));
        sw.update(|t| {
            t.ports.push(Some(Arc::clone(&underlay)));
            t.set_host(
                PortId(2),
                Some(Arc::new(HostPort {
                    mac: mac_a,
                    v4: vec![a],
                    v6: Vec::new(),
                    bridged: false,
                    to_host: Arc::new(Ring::new(16)),
                    tunnels: vec![Arc::clone(&tun)],
                })),
            );
        });
        tun.publish(TunnelState::new(
            Some(Arc::clone(&underlay)),
            vec![Remote {
                ip: b,
                header: Some(OuterHeader::new(
                    TunnelKind::Vxlan,
                    mac_a,
                    mac_b,
                    a,
                    b,
                    4789,
                )),
            }],
            1500 - MTU_OVERHEAD,
        ));
        let w = worker(0, &sw);
        let (vm, vm_end) = ring_port();
        let (up, up_end) = ring_port();
        let tun_stats = Arc::new(QueueStats::default());
        w.add_queue(PortId(0), QueueId(0), Box::new(vm)).unwrap();
        w.add_queue(
            PortId(1),
            QueueId(0),
            Box::new(tun.port(0, Arc::clone(&tun_stats))),
        )
        .unwrap();
        w.add_queue(PortId(2), QueueId(0), Box::new(up)).unwrap();
        wait_all_up(&sw);

        // Out: a broadcast from the VM leaves the underlay encapsulated.
        let hello = eth_frame(MacAddr::BROADCAST, mac(0x10), 0x0800, 100);
        let mut m = pool.alloc().unwrap();
        m.extend_from_slice(&hello).unwrap();
        vm_end.rx.push(m).unwrap();
        let wire = wait_for(&up_end.tx, 1);
        assert_eq!(wire.len(), 1);
        let d = wire[0].data();
        assert_eq!(d.len(), hello.len() + OUTER_LEN);
        assert_eq!(&d[30..34], &b.octets(), "to the remote");
        assert_eq!(&d[OUTER_LEN..], &hello[..]);
        assert_eq!(tun_stats.tx_packets.get(), 1);
        assert_eq!(w.shared().stats.handoff_tx.get(), 0, "no handoff ring");

        // In: the remote's answer reaches the VM, counted on the tunnel.
        let reply = eth_frame(mac(0x10), mac(0x20), 0x0800, 80);
        let mut m = pool.alloc().unwrap();
        m.extend_from_slice(&reply).unwrap();
        OuterHeader::new(TunnelKind::Vxlan, mac_b, mac_a, b, a, 4789)
            .encap(&mut m, 5000, 50000)
            .unwrap();
        up_end.rx.push(m).unwrap();
        let got = wait_for(&vm_end.tx, 1);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].data(), &reply[..]);
        assert_eq!(got[0].port(), 1, "received on the tunnel port");
        assert_eq!(tun_stats.rx_packets.get(), 1);
        assert_eq!(tun.rx_pending(), 0, "not through the ring");
        assert_eq!(
            tun.fdb.lookup(crate::ids::VlanId(0), mac(0x20)),
            Some(PortId(0)),
            "learned against remote 0"
        );
        assert_eq!(up_end.stats.snapshot().total_drops(), 0);
        assert_eq!(tun_stats.snapshot().total_drops(), 0);

        // A TSO frame from the VM is cut to MSS-sized segments first, and
        // each crosses the tunnel on its own, in order.
        let payload = 1400usize;
        let mut f = eth_frame(mac(0x20), mac(0x10), 0x0800, 40 + payload);
        f[14..54].fill(0);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
        f[22] = 64;
        f[23] = 6;
        f[46] = 5 << 4;
        for (i, b) in f[54..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let mut m = pool.alloc().unwrap();
        m.extend_from_slice(&f).unwrap();
        m.set_gso(Some(Gso {
            kind: crate::wire::GsoKind::Tcp4,
            mss: 500,
        }));
        vm_end.rx.push(m).unwrap();
        let wire = wait_for(&up_end.tx, 3);
        assert_eq!(wire.len(), 3, "three segments");
        let mut carried = Vec::new();
        for (i, s) in wire.iter().enumerate() {
            let inner = &s.data()[OUTER_LEN..];
            assert_eq!(
                &inner[..6],
                &mac(0x20).0,
                "segment {i} to the learned station"
            );
            assert_eq!(&s.data()[30..34], &b.octets());
            carried.extend_from_slice(&inner[54..]);
        }
        assert_eq!(carried, f[54..].to_vec(), "the payload, whole and in order");
        assert_eq!(tun_stats.tso_segmented.get(), 1);
        assert_eq!(tun_stats.tx_packets.get(), 1 + 3);
        let segment_bytes: usize = wire.iter().map(|s| s.len() - OUTER_LEN).sum();
        assert_eq!(
            tun_stats.tx_bytes.get(),
            (hello.len() + segment_bytes) as u64,
            "the bytes of what went in: the broadcast and the three segments"
        );
        assert_eq!(tun_stats.snapshot().total_drops(), 0);
        w.stop();
    }
}
