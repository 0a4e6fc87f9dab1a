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
//! Every frame carries, after its Ethernet header (and, with
//! [`Frames::Ipv4Udp`], IPv4 and UDP headers), a stamp: a magic number, the
//! low 32 bits of a sequence number and of the send time (nanoseconds since
//! the trial started, taken once per burst); the receiver records
//! `now - sent` of one frame in `LATENCY_SAMPLE` (by sequence number) in an
//! hdrhistogram. Everything it reads sits in the frontend's peek, the first
//! cache line of the buffer.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dataplane::time::cycles;
use hdrhistogram::Histogram;
use vhost_user::frontend::{VirtioNetFrontend, RX_PEEK_BYTES};

/// EtherType of [`Frames::Raw`] frames: IEEE 802 local experimental 1.
pub const ETHERTYPE: u16 = 0x88b5;
/// UDP destination port of [`Frames::Ipv4Udp`] frames.
pub const UDP_DST_PORT: u16 = 7777;
/// Marks a bench payload: "we".
const MAGIC: u16 = 0x7765;
const ETH_BYTES: usize = 14;
/// IPv4 header without options, then the UDP header.
const IPV4_UDP_BYTES: usize = 20 + 8;
/// Magic (2 bytes), sequence number (4), send time (4).
const STAMP_BYTES: usize = 2 + 4 + 4;
/// Most bytes written per frame: the headers and the stamp.
const MAX_HEAD: usize = ETH_BYTES + IPV4_UDP_BYTES + STAMP_BYTES;
const _: () = assert!(MAX_HEAD <= RX_PEEK_BYTES, "the stamp must be in the peek");
// Offsets in a [`Frames::Ipv4Udp`] frame.
const OFF_IP_LEN: usize = 16;
const OFF_IP_CSUM: usize = 24;
const OFF_UDP_SRC: usize = 34;
const OFF_UDP_LEN: usize = 38;

/// What bench frames carry between their Ethernet header and the stamp.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Frames {
    /// Nothing: EtherType [`ETHERTYPE`], what a learning switch forwards on
    /// MACs alone.
    #[default]
    Raw,
    /// IPv4 ([`station_ip`]) and UDP (from [`station_udp_port`] to
    /// [`UDP_DST_PORT`], no checksum): what port security and ACLs look into.
    Ipv4Udp,
}

impl Frames {
    /// Where the stamp starts.
    fn stamp_at(self) -> usize {
        match self {
            Frames::Raw => ETH_BYTES,
            Frames::Ipv4Udp => ETH_BYTES + IPV4_UDP_BYTES,
        }
    }

    /// Bytes written per frame.
    fn head_len(self) -> usize {
        self.stamp_at() + STAMP_BYTES
    }

    /// The head of `side`'s frames: the EtherType, the IP addresses, the UDP
    /// destination port and the magic; the rest is written per frame.
    fn head(self, side: usize) -> [u8; MAX_HEAD] {
        let mut h = [0u8; MAX_HEAD];
        let at = self.stamp_at();
        h[at..at + 2].copy_from_slice(&MAGIC.to_be_bytes());
        match self {
            Frames::Raw => h[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes()),
            Frames::Ipv4Udp => {
                h[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
                h[14] = 0x45;
                // Don't fragment.
                h[20] = 0x40;
                h[22] = 64;
                h[23] = 17;
                h[26..30].copy_from_slice(&station_ip(side).octets());
                h[30..34].copy_from_slice(&station_ip(1 - side).octets());
                h[36..38].copy_from_slice(&UDP_DST_PORT.to_be_bytes());
            }
        }
        h
    }

    /// The per-size fields of `side`'s `len`-byte frames (without FCS): IPv4
    /// total length, header checksum and UDP length.
    fn length_fields(self, head: &[u8; MAX_HEAD], len: u32) -> LengthFields {
        let ip_len = (len as usize).saturating_sub(ETH_BYTES) as u16;
        let mut ip = [0u8; 20];
        ip.copy_from_slice(&head[ETH_BYTES..ETH_BYTES + 20]);
        ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
        ip[10..12].fill(0);
        LengthFields {
            ip_len: ip_len.to_be_bytes(),
            ip_csum: ipv4_checksum(&ip).to_be_bytes(),
            udp_len: ip_len.saturating_sub(20).to_be_bytes(),
        }
    }
}

/// The IPv4 header fields that depend on a frame's size, in wire order.
#[derive(Clone, Copy, Debug)]
struct LengthFields {
    ip_len: [u8; 2],
    ip_csum: [u8; 2],
    udp_len: [u8; 2],
}

impl LengthFields {
    /// Writes them, and station `i`'s UDP source port, into `head`.
    #[inline]
    fn write(&self, head: &mut [u8; MAX_HEAD], i: u32) {
        head[OFF_IP_LEN..OFF_IP_LEN + 2].copy_from_slice(&self.ip_len);
        head[OFF_IP_CSUM..OFF_IP_CSUM + 2].copy_from_slice(&self.ip_csum);
        head[OFF_UDP_LEN..OFF_UDP_LEN + 2].copy_from_slice(&self.udp_len);
        head[OFF_UDP_SRC..OFF_UDP_SRC + 2].copy_from_slice(&station_udp_port(i).to_be_bytes());
    }
}

/// The one's complement checksum of an IPv4 header (RFC 1071) whose
/// checksum field is zero.
fn ipv4_checksum(header: &[u8; 20]) -> u16 {
    let mut sum: u32 = header
        .chunks_exact(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The IPv4 address of every station of `side` (0 = A, 1 = B) in
/// [`Frames::Ipv4Udp`] frames: 10.77.0.1 and 10.77.0.2.
pub fn station_ip(side: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, 1 + side as u8)
}

/// The UDP source port of station `i` (of either side): 1024 upwards,
/// wrapping below 65536.
pub fn station_udp_port(i: u32) -> u16 {
    1024 + (i % (65536 - 1024)) as u16
}

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
    /// What the frames carry.
    pub frames: Frames,
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

impl Live {
    /// Publishes the counts so far.
    fn show(&self, tx: u64, rx: u64) {
        // Relaxed: display only.
        self.tx.store(tx, Ordering::Relaxed);
        self.rx.store(rx, Ordering::Relaxed);
    }
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
    /// Rounds in which the generator was off its CPU (see `STALL_MIN_NS`).
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
    frames: Frames,
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
                let mut head = frames.head(side);
                head[..6].copy_from_slice(&[0xff; 6]);
                head[6..12].copy_from_slice(&station_mac(side, i));
                if frames == Frames::Ipv4Udp {
                    frames.length_fields(&head, 60).write(&mut head, i);
                }
                if ports[side].tx_push(&head[..frames.head_len()], 60) {
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
    frames: Frames,
    /// Per side, the bytes written into each frame (the first
    /// `frames.head_len()`); the rest was filled in advance.
    heads: [[u8; MAX_HEAD]; 2],
    /// Per side and entry of `pattern`, the length fields ([`Frames::Ipv4Udp`]
    /// only).
    lengths: [Vec<LengthFields>; 2],
}

impl Sender<'_> {
    /// Queues and publishes `n` frames (at most the free descriptors) on
    /// `side`'s port. Not inlined: its cost per frame is what the generator
    /// callgrind script measures.
    #[inline(never)]
    fn send_burst(&mut self, p: &mut VirtioNetFrontend, side: usize, n: usize, now_ns: u64) {
        let head = &mut self.heads[side];
        let stamp = self.frames.stamp_at();
        let head_len = self.frames.head_len();
        // The low 32 bits: latencies are far below the 4.3 s they cover.
        head[stamp + 6..stamp + 10].copy_from_slice(&(now_ns as u32).to_le_bytes());
        for _ in 0..n {
            let f = self.flow[side] as usize;
            head[..6].copy_from_slice(&self.macs[1 - side][f]);
            head[6..12].copy_from_slice(&self.macs[side][f]);
            head[stamp + 2..stamp + 6].copy_from_slice(&(self.seq[side] as u32).to_le_bytes());
            if let Some(l) = self.lengths[side].get(self.size_at[side]) {
                l.write(head, self.flow[side]);
            }
            let len = self.pattern[self.size_at[side]];
            p.tx_push(&head[..head_len], len);
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
    /// Where the frames' stamp starts.
    stamp: usize,
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
            stamp,
            ..
        } = self;
        let at = *stamp;
        let got = p.rx_harvest(BURST * 2, |len, peek: &[u8; RX_PEEK_BYTES]| {
            *rx_bytes += u64::from(len);
            let word = |off: usize| {
                u32::from_le_bytes([peek[off], peek[off + 1], peek[off + 2], peek[off + 3]])
            };
            if u16::from_be_bytes([peek[at], peek[at + 1]]) != MAGIC {
                *foreign += 1;
                return;
            }
            if !word(at + 2).is_multiple_of(LATENCY_SAMPLE as u32) {
                return;
            }
            let ns = (now_ns as u32).wrapping_sub(word(at + 6));
            latency.saturating_record(u64::from(ns).max(1));
        });
        self.rx[side] += got as u64;
        got
    }
}

impl<'a> Sender<'a> {
    /// A sender from the stations of each side and the sizes to cycle.
    fn new(
        macs: &'a [Vec<[u8; 6]>; 2],
        pattern: &'a [u32],
        flows: u32,
        frames: Frames,
    ) -> Sender<'a> {
        let heads = [frames.head(0), frames.head(1)];
        let lengths = [0, 1].map(|side| match frames {
            Frames::Raw => Vec::new(),
            Frames::Ipv4Udp => pattern
                .iter()
                .map(|&len| frames.length_fields(&heads[side], len))
                .collect(),
        });
        Sender {
            frames,
            heads,
            lengths,
            macs,
            pattern,
            flows,
            seq: [0; 2],
            flow: [0; 2],
            size_at: [0; 2],
            tx_bytes: 0,
        }
    }

    /// Frames sent, both sides.
    fn sent(&self) -> u64 {
        self.seq[0] + self.seq[1]
    }
}

impl Receiver {
    /// A receiver with an empty latency histogram.
    ///
    /// # Panics
    /// Never: the histogram's bounds are constant and valid.
    fn new(frames: Frames) -> Receiver {
        Receiver {
            latency: Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_NS, 3)
                .expect("constant histogram bounds are valid"),
            rx: [0; 2],
            rx_bytes: 0,
            foreign: 0,
            stamp: frames.stamp_at(),
        }
    }

    /// Frames received, both sides.
    fn received(&self) -> u64 {
        self.rx[0] + self.rx[1]
    }
}

/// The trial's clock: the TSC, read once per round (a clock_gettime per
/// round cost the generator a quarter of its time), as nanoseconds since the
/// start; `tsc_hz` was measured against the monotonic clock.
struct Clock {
    /// TSC at the start of the trial.
    start: u64,
    /// TSC at the last tick: the start of the current round.
    last: u64,
    ns_per_cycle: f64,
    /// Nanoseconds from the start to the last tick.
    now_ns: u64,
}

impl Clock {
    fn start(tsc_hz: f64) -> Clock {
        let start = cycles();
        Clock {
            start,
            last: start,
            ns_per_cycle: 1e9 / tsc_hz,
            now_ns: 0,
        }
    }

    /// Ends the current round: moves `now_ns` on and returns the round's
    /// length in cycles.
    #[inline]
    fn tick(&mut self) -> u64 {
        let now = cycles();
        let round = now.wrapping_sub(self.last);
        self.last = now;
        self.now_ns = (now.wrapping_sub(self.start) as f64 * self.ns_per_cycle) as u64;
        round
    }
}

/// How many frames the offered rate asks for, and what became of those that
/// were due but not sent on time.
struct Pacing {
    /// Offered frames per second; None: as fast as the switch takes them.
    rate_pps: Option<f64>,
    catch_up: bool,
    /// End of the sending phase, ns from the start.
    end_ns: u64,
    /// See [`TrialResult::refused`].
    refused: u64,
    /// See [`TrialResult::skipped`].
    skipped: u64,
    /// See [`TrialResult::late`].
    late: u64,
    /// See [`TrialResult::stalls`].
    stalls: u64,
    /// See [`TrialResult::stall_max_ns`].
    stall_max_ns: u64,
}

impl Pacing {
    fn new(spec: &TrialSpec) -> Pacing {
        Pacing {
            rate_pps: spec.rate_pps,
            catch_up: spec.catch_up,
            end_ns: spec.duration.as_nanos() as u64,
            refused: 0,
            skipped: 0,
            late: 0,
            stalls: 0,
            stall_max_ns: 0,
        }
    }

    /// Frames the rate `r` asks for from the start to `ns` (or to the end,
    /// if that is earlier: only catching up sends past it).
    #[inline]
    fn due(&self, r: f64, ns: u64) -> u64 {
        (r * ns.min(self.end_ns) as f64 / 1e9) as u64
    }

    /// Frames due by `now_ns` and neither sent (`sent`) nor given up;
    /// unlimited without a rate.
    #[inline]
    fn budget(&self, now_ns: u64, sent: u64) -> u64 {
        match self.rate_pps {
            Some(r) => self
                .due(r, now_ns)
                .saturating_sub(sent + self.refused + self.skipped),
            None => u64::MAX,
        }
    }

    /// How many frames `side` sends this round, at most a burst: with a
    /// rate, the due frames split between the sides, A first.
    #[inline]
    fn share(&self, budget: u64, side: usize) -> usize {
        if self.rate_pps.is_some() {
            (budget / 2 + (budget % 2) * (side == 0) as u64).min(BURST as u64) as usize
        } else {
            BURST
        }
    }

    /// `sent` of a side's `share` fitted in its ring: the rest is refused,
    /// lost to the switch as RFC 2544 counts it, unless catching up (then
    /// it stays due).
    #[inline]
    fn fitted(&mut self, share: usize, sent: usize) {
        if self.rate_pps.is_some() && sent < share && !self.catch_up {
            self.refused += (share - sent) as u64;
        }
    }

    /// The generator was off its CPU from `was_ns` to `now_ns`. A generator
    /// on its own CPU would have sent the frames due meanwhile evenly;
    /// sending them now as one burst would queue them in the switch or
    /// overflow the ring (counted as the switch's loss), so they are
    /// skipped, or sent late when catching up.
    fn stall(&mut self, was_ns: u64, now_ns: u64, sending: bool) {
        self.stalls += 1;
        self.stall_max_ns = self.stall_max_ns.max(now_ns - was_ns);
        if let (Some(r), true) = (self.rate_pps, sending) {
            let missed = self.due(r, now_ns) - self.due(r, was_ns);
            if self.catch_up {
                self.late += missed;
            } else {
                self.skipped += missed;
            }
        }
    }

    /// Frames due by the end that were neither sent (`sent`) nor given up.
    fn owed(&self, sent: u64) -> u64 {
        self.rate_pps.map_or(0, |r| {
            self.due(r, self.end_ns)
                .saturating_sub(sent + self.refused + self.skipped)
        })
    }

    /// Whether sending is over at `now_ns`: at the end; catching up, once
    /// what came due by then is sent, for at most [`CATCH_UP_GRACE_NS`]
    /// more (the rest is `unsent`).
    fn sending_ends(&self, now_ns: u64, sent: u64) -> bool {
        now_ns >= self.end_ns
            && (!self.catch_up || now_ns >= self.end_ns + CATCH_UP_GRACE_NS || self.owed(sent) == 0)
    }
}

/// The sending part of a round: reclaims each side's sent buffers and sends
/// what the pacing allows and the ring takes. Returns frames sent.
#[inline]
fn send_round(
    ports: &mut [VirtioNetFrontend; 2],
    tx: &mut Sender<'_>,
    pacing: &mut Pacing,
    now_ns: u64,
) -> usize {
    let budget = pacing.budget(now_ns, tx.sent());
    let mut moved = 0;
    for (side, p) in ports.iter_mut().enumerate() {
        p.tx_reclaim();
        let share = pacing.share(budget, side);
        let n = share.min(p.tx_free());
        pacing.fitted(share, n);
        if n > 0 {
            tx.send_burst(p, side, n, now_ns);
        }
        moved += n;
    }
    moved
}

/// The receiving part of a round: harvests each side that has frames.
/// Returns frames received.
#[inline]
fn receive_round(ports: &mut [VirtioNetFrontend; 2], rcv: &mut Receiver, now_ns: u64) -> usize {
    let mut moved = 0;
    for (side, p) in ports.iter_mut().enumerate() {
        if p.rx_pending() > 0 {
            moved += rcv.harvest(p, side, now_ns);
        }
    }
    moved
}

/// Prepares both ports for a trial: takes back what a previous trial left in
/// the tx rings and fills every tx buffer with a frame template, so that a
/// send writes only the head ([`Frames::head_len`] bytes).
fn prepare_ports(ports: &mut [VirtioNetFrontend; 2], sizes: &SizeMix) {
    let mut template = vec![0u8; sizes.max_frame() as usize];
    template[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
    for p in ports.iter_mut() {
        p.tx_reclaim();
        p.tx_fill_all(&template);
    }
}

/// Runs one trial on the calling thread (pin it first). Once `stop` is set
/// (Ctrl-C) it returns within a few rounds, without the drain.
///
/// Each round sends what is due, receives what arrived and reads the clock
/// once. After sending, it drains: it goes on receiving until nothing
/// arrived for 50 ms (frames still in the switch's rings), at most 2 s.
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
    let mut gen = Generator {
        tx: Sender::new(&macs, &spec.sizes.pattern, flows, spec.frames),
        rcv: Receiver::new(spec.frames),
        pacing: Pacing::new(spec),
        busy_cycles: 0,
    };
    prepare_ports(ports, &spec.sizes);
    live.show(0, 0);
    let cpu0 = super::cpu::this_thread_ns();
    let wall0 = Instant::now();
    let mut clock = Clock::start(tsc_hz);
    let mut round = 0u64;
    // When sending ended, ns from the start; None while sending.
    let mut stopped_ns: Option<u64> = None;
    let mut last_rx_ns = 0u64;
    loop {
        let moved = gen.round(ports, stopped_ns.is_none(), clock.now_ns);
        let was_ns = clock.now_ns;
        let round_cycles = clock.tick();
        let now_ns = clock.now_ns;
        if moved > 0 {
            gen.busy_cycles += round_cycles;
            last_rx_ns = was_ns;
        }
        round += 1;
        if round.is_multiple_of(64) {
            gen.show(live);
            // Relaxed: a plain flag, checked every 64 rounds.
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
        if is_stall(now_ns.saturating_sub(was_ns), moved) {
            gen.pacing.stall(was_ns, now_ns, stopped_ns.is_none());
        }
        match stopped_ns {
            None if gen.pacing.sending_ends(now_ns, gen.tx.sent()) => {
                stopped_ns = Some(now_ns);
                last_rx_ns = now_ns;
            }
            Some(_) if now_ns.saturating_sub(last_rx_ns) > 50_000_000 => break,
            Some(at) if now_ns > at + 2_000_000_000 => break,
            _ => {}
        }
    }
    gen.show(live);
    let gen_cpu_ns = match (cpu0, super::cpu::this_thread_ns()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    gen.into_result(ports, spec, gen_cpu_ns, wall0.elapsed())
}

/// A trial's generator: what it sends, receives and counts.
struct Generator<'a> {
    tx: Sender<'a>,
    rcv: Receiver,
    pacing: Pacing,
    /// Cycles of rounds that moved frames.
    busy_cycles: u64,
}

impl Generator<'_> {
    /// One round at `now_ns`: sends what is due (while `sending`; else only
    /// reclaims sent buffers), then receives. Returns frames moved.
    #[inline]
    fn round(&mut self, ports: &mut [VirtioNetFrontend; 2], sending: bool, now_ns: u64) -> usize {
        let sent = if sending {
            send_round(ports, &mut self.tx, &mut self.pacing, now_ns)
        } else {
            for p in ports.iter_mut() {
                p.tx_reclaim();
            }
            0
        };
        sent + receive_round(ports, &mut self.rcv, now_ns)
    }

    /// Publishes the counts so far for the progress display.
    fn show(&self, live: &Live) {
        live.show(self.tx.sent(), self.rcv.received());
    }

    /// The trial's figures.
    fn into_result(
        self,
        ports: &[VirtioNetFrontend; 2],
        spec: &TrialSpec,
        gen_cpu_ns: Option<u64>,
        wall: Duration,
    ) -> TrialResult {
        let Generator {
            tx,
            rcv,
            pacing,
            busy_cycles,
        } = self;
        let sent = tx.sent();
        TrialResult {
            gen_cpu_ns,
            wall,
            tx_frames: sent,
            rx_frames: rcv.received(),
            tx_bytes: tx.tx_bytes,
            rx_bytes: rcv.rx_bytes,
            refused: pacing.refused,
            skipped: pacing.skipped,
            late: pacing.late,
            unsent: if pacing.catch_up {
                pacing.owed(sent)
            } else {
                0
            },
            stalls: pacing.stalls,
            stall_max_ns: pacing.stall_max_ns,
            foreign: rcv.foreign,
            elapsed: spec.duration,
            latency: rcv.latency,
            gen_busy_cycles: busy_cycles,
            per_side: [(tx.seq[0], rcv.rx[0]), (tx.seq[1], rcv.rx[1])],
            tx_unconsumed: ports.iter().map(|p| p.tx_in_flight() as u64).sum(),
        }
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
    fn ipv4_udp_heads_are_valid_headers_for_every_size() {
        let f = Frames::Ipv4Udp;
        assert_eq!(f.head_len(), 52);
        for side in 0..2 {
            for len in [60u32, 566, 1514, 8996] {
                let mut h = f.head(side);
                f.length_fields(&h, len).write(&mut h, 3);
                let ip: [u8; 20] = h[14..34].try_into().unwrap();
                // A header with its checksum in place sums to all ones.
                assert_eq!(ipv4_checksum(&ip), 0, "side {side} len {len}");
                assert_eq!(u16::from_be_bytes([h[12], h[13]]), 0x0800);
                assert_eq!(u16::from_be_bytes([ip[2], ip[3]]) as u32, len - 14);
                assert_eq!((ip[9], &ip[12..16]), (17, &station_ip(side).octets()[..]));
                assert_eq!(&ip[16..20], &station_ip(1 - side).octets()[..]);
                let udp = &h[34..42];
                assert_eq!(u16::from_be_bytes([udp[0], udp[1]]), 1027);
                assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), UDP_DST_PORT);
                assert_eq!(u16::from_be_bytes([udp[4], udp[5]]) as u32, len - 34);
                assert_eq!(u16::from_be_bytes([h[42], h[43]]), MAGIC);
            }
        }
        // Raw frames: the stamp follows the Ethernet header.
        let raw = Frames::Raw.head(0);
        assert_eq!(Frames::Raw.head_len(), 24);
        assert_eq!(u16::from_be_bytes([raw[12], raw[13]]), ETHERTYPE);
        assert_eq!(u16::from_be_bytes([raw[14], raw[15]]), MAGIC);
        assert_eq!(station_udp_port(64_512), 1024);
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
    fn pacing_splits_due_frames_and_counts_those_not_sent() {
        let spec = |catch_up| TrialSpec {
            sizes: SizeMix::fixed(64),
            flows: 1,
            frames: Frames::Raw,
            rate_pps: Some(1e6),
            catch_up,
            duration: Duration::from_millis(10),
        };
        let mut p = Pacing::new(&spec(false));
        // 1 Mpps: 5 frames due after 5 µs, A gets the odd one.
        assert_eq!(p.budget(5_000, 0), 5);
        assert_eq!((p.share(5, 0), p.share(5, 1)), (3, 2));
        p.fitted(3, 1);
        assert_eq!(p.refused, 2);
        assert_eq!(p.budget(5_000, 1), 2);
        // A stall of 100 µs skips the frames due in it.
        p.stall(5_000, 105_000, true);
        assert_eq!((p.stalls, p.skipped, p.stall_max_ns), (1, 100, 100_000));
        assert!(p.sending_ends(10_000_000, 0));
        let mut c = Pacing::new(&spec(true));
        c.fitted(3, 1);
        c.stall(5_000, 105_000, true);
        assert_eq!((c.refused, c.skipped, c.late), (0, 0, 100));
        // Catching up, sending goes on past the end while frames are owed.
        assert_eq!(c.owed(9_000), 1_000);
        assert!(!c.sending_ends(10_000_000, 9_000));
        assert!(c.sending_ends(10_000_000, 10_000));
        assert!(c.sending_ends(10_000_000 + CATCH_UP_GRACE_NS, 0));
    }

    #[test]
    fn stations_differ_per_side_and_index() {
        assert_eq!(station_mac(0, 0x010203), [0x02, 0x77, 0x0a, 1, 2, 3]);
        assert_eq!(station_mac(1, 0), [0x02, 0x77, 0x0b, 0, 0, 0]);
    }
}
