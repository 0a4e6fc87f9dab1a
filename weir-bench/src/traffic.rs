//! The traffic generator of `weir bench`: one thread drives two frontends
//! (port A and port B), sending A→B and B→A at once and receiving both.
//!
//! Control side of weir, but its loop is a fast path of its own: the numbers
//! are only as good as the generator is fast, so the loop allocates nothing,
//! takes no locks, reads the clock once per round (not per frame) and makes a
//! syscall only for a kick the device asked for. Its own busy cycles per frame
//! are counted and reported, so a run shows whether the generator or the
//! switch was the limit.
//!
//! Every frame carries, after its Ethernet header, a magic number, the sending
//! side, a sequence number and the send time (nanoseconds since the trial
//! started, taken once per burst); the receiver records `now - sent` of one
//! frame in [`LATENCY_SAMPLE`] (by sequence number) in an hdrhistogram.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dataplane::time::cycles;
use hdrhistogram::Histogram;
use vhost_user::frontend::{VirtioNetFrontend, RX_PEEK_BYTES};

/// EtherType of bench frames: IEEE 802 local experimental 1.
pub const ETHERTYPE: u16 = 0x88b5;
/// Marks a bench payload.
const MAGIC: u32 = 0x7765_6972; // "weir"
/// Bytes written per frame: Ethernet header, magic, side, seq, timestamp.
const HEAD_BYTES: usize = 14 + 4 + 4 + 8 + 8;
const OFF_MAGIC: usize = 14;
const OFF_SIDE: usize = 18;
const OFF_SEQ: usize = 22;
const OFF_TS: usize = 30;
/// Frames per burst per side.
const BURST: usize = 32;
/// A round is a stall (the generator thread was off its CPU) when it took at
/// least this long and longer than [`WORK_NS_PER_FRAME`] per frame it moved:
/// a round moves at most a few hundred frames, at well under a microsecond
/// each even when the host is slow. On a shared CPU the thread is preempted
/// for tens of microseconds many times a second; frames due meanwhile, sent
/// on its return as one burst, queue in the switch, which a constant-rate
/// source would never make it do, and put a tail on the latency that is the
/// generator's (p99 at 1.5 Mpps: 3.9-24 µs with only 200 µs gaps counted as
/// stalls, 0.7-1.9 µs with this rule; docs/benchmarks.md).
const STALL_MIN_NS: u64 = 20_000;
/// How long a generator catching up ([`TrialSpec::catch_up`]) may go on
/// sending after the end, for frames that came due by then.
const CATCH_UP_GRACE_NS: u64 = 1_000_000_000;
/// Generous time per frame moved in a round, for telling long rounds of
/// work from stalls (see [`STALL_MIN_NS`]).
const WORK_NS_PER_FRAME: u64 = 1_000;

/// Whether a round that took `round_ns` and moved `moved` frames (sent plus
/// received) was a stall rather than work.
fn is_stall(round_ns: u64, moved: usize) -> bool {
    round_ns >= STALL_MIN_NS && round_ns >= moved as u64 * WORK_NS_PER_FRAME
}

/// One frame in this many (by sequence number) has its latency recorded:
/// recording costs the receiver more than the rest of its per-frame work,
/// and at Mpps rates the sample is still hundreds of thousands per second.
const LATENCY_SAMPLE: u64 = 16;
/// Highest latency the histogram tracks (larger values are clamped).
const MAX_LATENCY_NS: u64 = 10_000_000_000;

/// Frame sizes of one trial, cycled per frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SizeMix {
    /// Label for reports: `64`, `imix`.
    pub label: String,
    /// Frame lengths without FCS, one per frame, repeating.
    pub pattern: Vec<u32>,
}

impl SizeMix {
    /// One fixed size; `bytes` counts the 4-byte FCS, as RFC 2544 sizes do.
    pub fn fixed(bytes: u32) -> SizeMix {
        SizeMix {
            label: bytes.to_string(),
            pattern: vec![bytes - 4],
        }
    }

    /// Simple IMIX: 7 x 64, 4 x 570, 1 x 1518 bytes (with FCS), interleaved.
    pub fn imix() -> SizeMix {
        let p = [64, 570, 64, 64, 570, 64, 1518, 64, 570, 64, 570, 64];
        SizeMix {
            label: "imix".into(),
            pattern: p.iter().map(|b| b - 4).collect(),
        }
    }

    /// Average frame size in bytes, FCS included.
    pub fn mean_bytes(&self) -> f64 {
        self.pattern.iter().map(|&b| f64::from(b + 4)).sum::<f64>() / self.pattern.len() as f64
    }

    /// Largest frame without FCS.
    pub fn max_frame(&self) -> u32 {
        self.pattern.iter().copied().max().unwrap_or(60)
    }
}

/// The MAC address of station `i` on side `side` (0 = A, 1 = B):
/// `02:77:0a|0b:ii:ii:ii`, locally administered.
pub fn station_mac(side: usize, i: u32) -> [u8; 6] {
    let [_, a, b, c] = i.to_be_bytes();
    [0x02, 0x77, 0x0a + side as u8, a, b, c]
}

/// What one trial does.
#[derive(Clone, Debug)]
pub struct TrialSpec {
    /// Frame sizes.
    pub sizes: SizeMix,
    /// Stations per side; frame `k` of a side goes from its station `k % flows`
    /// to the other side's station `k % flows`.
    pub flows: u32,
    /// Offered frames per second, both directions together; None: as fast
    /// as the switch takes them.
    pub rate_pps: Option<f64>,
    /// With a rate: frames that come due while the generator is off its CPU
    /// are sent when it is back (a source with a queue) instead of skipped.
    /// The offered rate then holds whatever share of its CPU the generator
    /// gets, at the cost of bursts after each stall.
    pub catch_up: bool,
    /// How long to send.
    pub duration: Duration,
}

/// Live counters the main thread reads for the progress display.
#[derive(Debug, Default)]
pub struct Live {
    /// Frames sent so far in this trial.
    pub tx: AtomicU64,
    /// Frames received so far in this trial.
    pub rx: AtomicU64,
}

/// What one trial measured (both directions summed).
#[derive(Debug)]
pub struct TrialResult {
    /// Frames handed to the switch.
    pub tx_frames: u64,
    /// Frames received back.
    pub rx_frames: u64,
    /// Bytes sent/received (frames without FCS).
    pub tx_bytes: u64,
    /// See `tx_bytes`.
    pub rx_bytes: u64,
    /// Frames the rate asked for that could not be queued (ring full).
    pub refused: u64,
    /// Frames that came due while the generator was off its CPU (a stall);
    /// never offered, so neither sent nor lost: the offered rate was that
    /// much lower.
    pub skipped: u64,
    /// With [`TrialSpec::catch_up`]: frames that came due during a stall and
    /// were sent late instead of skipped.
    pub late: u64,
    /// With [`TrialSpec::catch_up`]: frames still due when sending ended
    /// (the switch's rings stayed full or the generator never caught up).
    pub unsent: u64,
    /// Rounds in which the generator was off its CPU (see [`STALL_MIN_NS`]).
    pub stalls: u64,
    /// The longest such round, ns.
    pub stall_max_ns: u64,
    /// Received frames without the bench payload (ignored).
    pub foreign: u64,
    /// Length of the sending phase.
    pub elapsed: Duration,
    /// One-way latency in nanoseconds.
    pub latency: Histogram<u64>,
    /// Cycles the generator spent in rounds that moved frames.
    pub gen_busy_cycles: u64,
    /// On-CPU time of the generator thread over the trial (with the drain).
    pub gen_cpu_ns: Option<u64>,
    /// Wall time of the trial including the drain.
    pub wall: Duration,
    /// Frames sent per side (A, B) and received per side.
    pub per_side: [(u64, u64); 2],
    /// Frames still in the tx rings when the trial ended (published, not
    /// taken by the switch), both sides.
    pub tx_unconsumed: u64,
}

/// Sends frames of `mix` from every station of each side (broadcast) until
/// the other side has received from each one at least once, so a learning
/// switch knows every station before a trial. Gives up after `timeout`.
///
/// Returns frames received on each side; stops early once `stop` is set.
pub fn warm_up(
    ports: &mut [VirtioNetFrontend; 2],
    flows: u32,
    timeout: Duration,
    stop: &AtomicBool,
) -> [u64; 2] {
    let end = Instant::now() + timeout;
    let mut got = [0u64; 2];
    let mut round = 0u32;
    loop {
        // One round: a broadcast from every station of both sides.
        for side in 0..2 {
            let mut i = 0;
            while i < flows {
                ports[side].tx_reclaim();
                let mut head = [0u8; HEAD_BYTES];
                head[..6].copy_from_slice(&[0xff; 6]);
                head[6..12].copy_from_slice(&station_mac(side, i));
                head[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
                if ports[side].tx_push(&head, 60) {
                    i += 1;
                } else {
                    ports[side].tx_publish();
                    drain(ports, &mut got);
                    // Relaxed: a plain flag.
                    if Instant::now() > end || stop.load(Ordering::Relaxed) {
                        return got;
                    }
                }
            }
            ports[side].tx_publish();
        }
        round += 1;
        let settle = Instant::now() + Duration::from_millis(100);
        while Instant::now() < settle {
            drain(ports, &mut got);
            std::thread::yield_now();
        }
        if (got[0] >= u64::from(flows) && got[1] >= u64::from(flows))
            || Instant::now() > end
            // Relaxed: a plain flag.
            || stop.load(Ordering::Relaxed)
        {
            return got;
        }
        let _ = round;
    }
}

fn drain(ports: &mut [VirtioNetFrontend; 2], got: &mut [u64; 2]) {
    for (side, p) in ports.iter_mut().enumerate() {
        got[side] += p.rx_harvest(usize::MAX, |_, _| {}) as u64;
        p.tx_reclaim();
    }
}

/// The sending half of a trial's state.
struct Sender<'a> {
    macs: &'a [Vec<[u8; 6]>; 2],
    pattern: &'a [u32],
    flows: u32,
    /// Frames sent per side (the next sequence number).
    seq: [u64; 2],
    /// Station of the next frame per side.
    flow: [u32; 2],
    /// Index into `pattern` of the next frame per side.
    size_at: [usize; 2],
    tx_bytes: u64,
    /// The bytes written into each frame; the rest was filled in advance.
    head: [u8; HEAD_BYTES],
}

impl Sender<'_> {
    /// Queues and publishes `n` frames (at most the free descriptors) on
    /// `side`'s port. Not inlined: its cost per frame is what the generator
    /// callgrind script measures.
    #[inline(never)]
    fn send_burst(&mut self, p: &mut VirtioNetFrontend, side: usize, n: usize, now_ns: u64) {
        let head = &mut self.head;
        head[OFF_SIDE] = side as u8;
        head[OFF_TS..OFF_TS + 8].copy_from_slice(&now_ns.to_le_bytes());
        for _ in 0..n {
            let f = self.flow[side] as usize;
            head[..6].copy_from_slice(&self.macs[1 - side][f]);
            head[6..12].copy_from_slice(&self.macs[side][f]);
            head[OFF_SEQ..OFF_SEQ + 8].copy_from_slice(&self.seq[side].to_le_bytes());
            let len = self.pattern[self.size_at[side]];
            p.tx_push(head, len);
            self.tx_bytes += u64::from(len);
            self.seq[side] += 1;
            self.flow[side] += 1;
            if self.flow[side] == self.flows {
                self.flow[side] = 0;
            }
            self.size_at[side] += 1;
            if self.size_at[side] == self.pattern.len() {
                self.size_at[side] = 0;
            }
        }
        p.tx_publish();
    }
}

/// The receiving half of a trial's state.
struct Receiver {
    latency: Histogram<u64>,
    /// Frames received per side.
    rx: [u64; 2],
    rx_bytes: u64,
    foreign: u64,
}

impl Receiver {
    /// Takes up to two bursts of frames from `side`'s port and records their
    /// latency; returns how many. Not inlined, as [`Sender::send_burst`].
    #[inline(never)]
    fn harvest(&mut self, p: &mut VirtioNetFrontend, side: usize, now_ns: u64) -> usize {
        let Receiver {
            latency,
            rx_bytes,
            foreign,
            ..
        } = self;
        let got = p.rx_harvest(BURST * 2, |len, peek: &[u8; RX_PEEK_BYTES]| {
            *rx_bytes += u64::from(len);
            let magic = u32::from_be_bytes([
                peek[OFF_MAGIC],
                peek[OFF_MAGIC + 1],
                peek[OFF_MAGIC + 2],
                peek[OFF_MAGIC + 3],
            ]);
            if magic != MAGIC {
                *foreign += 1;
                return;
            }
            let mut seq = [0u8; 8];
            seq.copy_from_slice(&peek[OFF_SEQ..OFF_SEQ + 8]);
            if !u64::from_le_bytes(seq).is_multiple_of(LATENCY_SAMPLE) {
                return;
            }
            let mut ts = [0u8; 8];
            ts.copy_from_slice(&peek[OFF_TS..OFF_TS + 8]);
            latency.saturating_record(now_ns.saturating_sub(u64::from_le_bytes(ts)).max(1));
        });
        self.rx[side] += got as u64;
        got
    }
}

/// Runs one trial on the calling thread (pin it first). Once `stop` is set
/// (Ctrl-C) it returns within a few rounds, without the drain.
///
/// # Panics
/// If the latency histogram cannot be created (fixed, valid bounds).
pub fn run_trial(
    ports: &mut [VirtioNetFrontend; 2],
    spec: &TrialSpec,
    live: &Live,
    tsc_hz: f64,
    stop: &AtomicBool,
) -> TrialResult {
    let flows = spec.flows.max(1);
    // Everything the loop needs, allocated before it starts.
    let macs: [Vec<[u8; 6]>; 2] = [
        (0..flows).map(|i| station_mac(0, i)).collect(),
        (0..flows).map(|i| station_mac(1, i)).collect(),
    ];
    let pattern = &spec.sizes.pattern;
    let latency = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_NS, 3)
        .expect("constant histogram bounds are valid");
    let mut template = vec![0u8; spec.sizes.max_frame() as usize];
    template[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
    for p in ports.iter_mut() {
        p.tx_reclaim();
        p.tx_fill_all(&template);
    }
    live.tx.store(0, Ordering::Relaxed);
    live.rx.store(0, Ordering::Relaxed);

    let mut tx = Sender {
        macs: &macs,
        pattern,
        flows,
        seq: [0; 2],
        flow: [0; 2],
        size_at: [0; 2],
        tx_bytes: 0,
        head: [0; HEAD_BYTES],
    };
    tx.head[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
    tx.head[OFF_MAGIC..OFF_MAGIC + 4].copy_from_slice(&MAGIC.to_be_bytes());
    let mut rcv = Receiver {
        latency,
        rx: [0; 2],
        rx_bytes: 0,
        foreign: 0,
    };
    let mut refused = 0u64;
    let (mut skipped, mut late) = (0u64, 0u64);
    let (mut stalls, mut stall_max_ns) = (0u64, 0u64);
    let mut busy = 0u64;

    // Time is the TSC, read once per round (a clock_gettime per round cost
    // the generator a quarter of its time); `tsc_hz` was measured against
    // the monotonic clock.
    let ns_per_cycle = 1e9 / tsc_hz;
    let cpu0 = super::cpu::this_thread_ns();
    let wall0 = Instant::now();
    let start = cycles();
    let mut c0 = start;
    let mut round = 0u64;
    let mut now_ns = 0u64;
    let end_ns = spec.duration.as_nanos() as u64;
    let mut sending = true;
    let mut stopped_ns = u64::MAX;
    let mut last_rx_ns = 0u64;
    loop {
        let mut moved = 0usize;
        if sending {
            let budget = match spec.rate_pps {
                Some(r) => {
                    // Past the end only when catching up: what came due by
                    // the end is still owed.
                    let due = (r * now_ns.min(end_ns) as f64 / 1e9) as u64;
                    due.saturating_sub(tx.seq[0] + tx.seq[1] + refused + skipped)
                }
                None => u64::MAX,
            };
            for (side, p) in ports.iter_mut().enumerate() {
                p.tx_reclaim();
                let share = if spec.rate_pps.is_some() {
                    // Split the due frames between the sides, A first.
                    (budget / 2 + (budget % 2) * (side == 0) as u64).min(BURST as u64) as usize
                } else {
                    BURST
                };
                let n = share.min(p.tx_free());
                if spec.rate_pps.is_some() && n < share && !spec.catch_up {
                    // Due but no room: the switch did not keep up; RFC 2544
                    // counts these as lost. (Catching up, they stay due.)
                    refused += (share - n) as u64;
                }
                if n > 0 {
                    tx.send_burst(p, side, n, now_ns);
                }
                moved += n;
            }
        } else {
            for p in ports.iter_mut() {
                p.tx_reclaim();
            }
        }
        for (side, p) in ports.iter_mut().enumerate() {
            if p.rx_pending() > 0 {
                moved += rcv.harvest(p, side, now_ns);
            }
        }
        let c1 = cycles();
        if moved > 0 {
            busy += c1.wrapping_sub(c0);
            last_rx_ns = now_ns;
        }
        c0 = c1;
        round += 1;
        if round.is_multiple_of(64) {
            // Relaxed: display only.
            live.tx.store(tx.seq[0] + tx.seq[1], Ordering::Relaxed);
            live.rx.store(rcv.rx[0] + rcv.rx[1], Ordering::Relaxed);
            // Relaxed: a plain flag, checked every 64 rounds.
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
        let was_ns = now_ns;
        now_ns = (c1.wrapping_sub(start) as f64 * ns_per_cycle) as u64;
        if is_stall(now_ns.saturating_sub(was_ns), moved) {
            // Off the CPU: a generator on its own CPU would have sent the
            // frames due meanwhile evenly; sending them now as one burst
            // would queue them in the switch or overflow the ring (counted
            // as the switch's loss).
            stalls += 1;
            stall_max_ns = stall_max_ns.max(now_ns - was_ns);
            if let (Some(r), true) = (spec.rate_pps, sending) {
                let due = |ns: u64| (r * ns.min(end_ns) as f64 / 1e9) as u64;
                let missed = due(now_ns) - due(was_ns);
                if spec.catch_up {
                    late += missed;
                } else {
                    skipped += missed;
                }
            }
        }
        // Catching up, sending goes on past the end until what came due by
        // then is sent, for at most a second (the rest is `unsent`).
        let owed = || {
            spec.rate_pps.is_some_and(|r| {
                (r * end_ns as f64 / 1e9) as u64 > tx.seq[0] + tx.seq[1] + refused + skipped
            })
        };
        if sending
            && now_ns >= end_ns
            && (!spec.catch_up || now_ns >= end_ns + CATCH_UP_GRACE_NS || !owed())
        {
            sending = false;
            last_rx_ns = now_ns;
            stopped_ns = now_ns;
        }
        // After sending: wait until nothing arrived for 50 ms (frames still in
        // the switch's rings), at most 2 s.
        if !sending
            && (now_ns.saturating_sub(last_rx_ns) > 50_000_000
                || now_ns > stopped_ns + 2_000_000_000)
        {
            break;
        }
    }
    live.tx.store(tx.seq[0] + tx.seq[1], Ordering::Relaxed);
    live.rx.store(rcv.rx[0] + rcv.rx[1], Ordering::Relaxed);
    let gen_cpu_ns = match (cpu0, super::cpu::this_thread_ns()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    TrialResult {
        gen_cpu_ns,
        wall: wall0.elapsed(),
        tx_frames: tx.seq[0] + tx.seq[1],
        rx_frames: rcv.rx[0] + rcv.rx[1],
        tx_bytes: tx.tx_bytes,
        rx_bytes: rcv.rx_bytes,
        refused,
        skipped,
        late,
        unsent: match (spec.rate_pps, spec.catch_up) {
            (Some(r), true) => ((r * end_ns as f64 / 1e9) as u64)
                .saturating_sub(tx.seq[0] + tx.seq[1] + refused + skipped),
            _ => 0,
        },
        stalls,
        stall_max_ns,
        foreign: rcv.foreign,
        elapsed: spec.duration,
        latency: rcv.latency,
        gen_busy_cycles: busy,
        per_side: [(tx.seq[0], rcv.rx[0]), (tx.seq[1], rcv.rx[1])],
        tx_unconsumed: ports.iter().map(|p| p.tx_in_flight() as u64).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imix_averages_the_simple_mix() {
        let m = SizeMix::imix();
        assert_eq!(m.pattern.len(), 12);
        assert!((m.mean_bytes() - (7.0 * 64.0 + 4.0 * 570.0 + 1518.0) / 12.0).abs() < 1e-9);
        assert_eq!(m.max_frame(), 1514);
        assert_eq!(SizeMix::fixed(64).pattern, vec![60]);
    }

    #[test]
    fn long_rounds_are_stalls_unless_their_frames_explain_them() {
        // Short rounds never are.
        assert!(!is_stall(19_999, 0));
        // An idle or nearly idle round of 20 µs or more: off the CPU.
        assert!(is_stall(20_000, 0));
        assert!(is_stall(25_000, 2));
        // A full round (64 frames out, 64 in) may take up to 128 µs of work.
        assert!(!is_stall(60_000, 128));
        assert!(is_stall(128_000, 128));
        assert!(is_stall(2_000_000, 128));
    }

    #[test]
    fn stations_differ_per_side_and_index() {
        assert_eq!(station_mac(0, 0x010203), [0x02, 0x77, 0x0a, 1, 2, 3]);
        assert_eq!(station_mac(1, 0), [0x02, 0x77, 0x0b, 0, 0, 0]);
    }
}
