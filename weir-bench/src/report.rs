//! Results of `weir bench`: per-trial figures, min/median/max over repeats,
//! weir's ratio against each peer, the JSON document and the terminal table.
//!
//! Control side only.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use weir_api::StageCycles;

use super::traffic::{TrialResult, TrialSpec};
use crate::args::{BenchArgs, Plan};

/// Bytes on the wire per frame besides the frame itself: preamble and start
/// delimiter (8) and inter-frame gap (12).
const L1_OVERHEAD_BYTES: f64 = 20.0;
/// Latency CDF points kept in the JSON (and drawn).
const CDF_POINTS: usize = 64;

/// Worker counters of the switch (sums over workers).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct WorkerCounters {
    /// TSC cycles in poll rounds that moved packets.
    pub busy_cycles: u64,
    /// TSC cycles in empty poll rounds.
    pub idle_cycles: u64,
    /// Packets the workers received.
    pub rx_packets: u64,
    /// Per-stage cycles of the sampled rounds (see `weir pmd show`).
    pub stages: StageCycles,
}

impl WorkerCounters {
    /// The difference `self - earlier`.
    pub fn since(&self, earlier: &WorkerCounters) -> WorkerCounters {
        let (a, b) = (&self.stages, &earlier.stages);
        WorkerCounters {
            busy_cycles: self.busy_cycles.wrapping_sub(earlier.busy_cycles),
            idle_cycles: self.idle_cycles.wrapping_sub(earlier.idle_cycles),
            rx_packets: self.rx_packets.wrapping_sub(earlier.rx_packets),
            stages: StageCycles {
                rx: a.rx.wrapping_sub(b.rx),
                switch: a.switch.wrapping_sub(b.switch),
                tx: a.tx.wrapping_sub(b.tx),
                packets: a.packets.wrapping_sub(b.packets),
            },
        }
    }
}

/// Cycles per packet by stage, from one poll round in 16.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct StagePerPacket {
    /// Receiving: the ports' `rx_burst` (guest ring to mbufs).
    pub rx: f64,
    /// Switching: parse, learn, look up, stage.
    pub switch: f64,
    /// Transmitting: `tx_burst` (mbufs to guest ring) and handoffs.
    pub tx: f64,
}

/// Cycles per packet from the switch's own counters.
#[derive(Clone, Debug, Serialize)]
pub struct SwitchCycles {
    /// Busy TSC cycles per packet received by the worker (rx, switching, tx
    /// of the rounds that moved packets).
    pub busy_per_packet: f64,
    /// All worker cycles (busy and idle polls) per packet.
    pub total_per_packet: f64,
    /// Share of the worker's time in rounds that moved packets, percent.
    pub busy_pct: f64,
    /// The busy cycles split by stage (None if no round was sampled).
    pub stages: Option<StagePerPacket>,
    /// The raw counter differences.
    pub counters: WorkerCounters,
}

/// Latency percentiles, one-way, in nanoseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    /// Frames measured.
    pub samples: u64,
    /// Median.
    pub p50_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Largest.
    pub max_ns: u64,
    /// `(latency_ns, fraction of frames at or below it)`, ascending.
    pub cdf: Vec<(u64, f64)>,
}

/// The generator's own cost, to show it was not the limit.
#[derive(Clone, Debug, Serialize)]
pub struct Generator {
    /// TSC cycles of the generator's rounds that moved frames, per frame
    /// sent or received (includes time the thread was preempted).
    pub busy_cycles_per_frame: f64,
    /// Share of the trial's wall time the generator thread was on a CPU,
    /// percent (below 100: other work took its CPU).
    pub cpu_share_pct: Option<f64>,
    /// Generator CPU time per forwarded frame (its send and its receive).
    pub cpu_ns_per_frame: Option<f64>,
    /// Forwarded Mpps the generator could sustain with a whole CPU at that
    /// cost; the measured rate is the generator's if it comes close.
    pub capacity_mpps: Option<f64>,
}

/// CPU time of the switch's forwarding threads (any switch, no counters
/// needed): worker threads of weir, the forwarding process of testpmd, the
/// PMD threads of OVS.
#[derive(Clone, Debug, Serialize)]
pub struct SwitchCpu {
    /// Share of the trial's wall time they were on a CPU, percent.
    pub cpu_share_pct: f64,
    /// CPU time per forwarded frame, ns (a busy-polling switch that is not
    /// saturated also spends its idle polls here, so this is an upper bound
    /// of its cost).
    pub cpu_ns_per_frame: f64,
    /// The same in TSC cycles.
    pub cycles_per_frame: f64,
}

/// One trial's figures (both directions summed).
#[derive(Clone, Debug, Serialize)]
pub struct TrialReport {
    /// Offered rate, Mpps; None: as fast as the switch took frames.
    pub offered_mpps: Option<f64>,
    /// Sending time, seconds.
    pub duration_s: f64,
    /// Frames sent.
    pub tx_frames: u64,
    /// Frames received.
    pub rx_frames: u64,
    /// Frames due at the offered rate that found the ring full.
    pub refused_frames: u64,
    /// Sent or refused, and not received.
    pub lost_frames: u64,
    /// `lost / (sent + refused)`, percent.
    pub loss_pct: f64,
    /// Sent frames per second, millions.
    pub tx_mpps: f64,
    /// Received (forwarded) frames per second, millions.
    pub rx_mpps: f64,
    /// Forwarded Gbit/s, frames with FCS.
    pub rx_gbps: f64,
    /// Forwarded Gbit/s on an Ethernet wire (plus preamble and gap).
    pub rx_gbps_l1: f64,
    /// One-way latency.
    pub latency: Latency,
    /// Cycles per packet from the switch's counters (weir only).
    pub switch_cycles: Option<SwitchCycles>,
    /// CPU time of the switch's forwarding threads (in-process weir and peers).
    pub switch_cpu: Option<SwitchCpu>,
    /// The generator's own cost.
    pub generator: Generator,
    /// Received frames that were not bench frames.
    pub foreign_frames: u64,
    /// Where lost frames went.
    pub loss: Loss,
}

/// Counters of the switch's two bench ports over one trial (weir only).
#[derive(Clone, Debug, Default)]
pub struct PortDelta {
    /// Frames the ports received from the generator.
    pub rx_packets: u64,
    /// Frames the ports sent to the generator.
    pub tx_packets: u64,
    /// Drops by reason name, both ports.
    pub drops: BTreeMap<String, u64>,
}

impl PortDelta {
    /// The difference `self - earlier`.
    pub fn since(&self, earlier: &PortDelta) -> PortDelta {
        PortDelta {
            rx_packets: self.rx_packets.saturating_sub(earlier.rx_packets),
            tx_packets: self.tx_packets.saturating_sub(earlier.tx_packets),
            drops: self
                .drops
                .iter()
                .map(|(r, n)| {
                    let was = earlier.drops.get(r).copied().unwrap_or(0);
                    (r.clone(), n.saturating_sub(was))
                })
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }
}

/// Where the frames of one trial that did not come back went.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Loss {
    /// Sent by port A, not received on port B.
    pub a_to_b: u64,
    /// Sent by port B, not received on port A.
    pub b_to_a: u64,
    /// Due at the offered rate but not sent: the generator's tx ring was full.
    pub refused: u64,
    /// Still in the generator's tx rings when the trial ended: the switch
    /// never took them.
    pub unconsumed: u64,
    /// Frames the switch took (its bench ports' rx counters; weir only).
    pub switch_rx: Option<u64>,
    /// Frames the switch handed to the generator (its tx counters).
    pub switch_tx: Option<u64>,
    /// The switch's drops on its bench ports, by reason.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub switch_drops: BTreeMap<String, u64>,
    /// Taken by the switch, neither sent nor counted as dropped: still held
    /// when the trial ended.
    pub switch_held: Option<u64>,
    /// Sent by the switch but not received by the generator.
    pub after_switch: Option<u64>,
    /// Frames not offered because they came due while the generator was off
    /// its CPU (not counted as sent or lost).
    pub skipped: u64,
    /// With `--catch-up`: frames that came due while the generator was off
    /// its CPU and were sent late, on its return.
    pub late: u64,
    /// With `--catch-up`: frames due by the end but never sent (the tx rings
    /// stayed full): the switch did not take the offered rate.
    pub unsent: u64,
    /// Times the generator was off its CPU (rounds of 20 µs or more not
    /// explained by the frames they moved).
    pub generator_stalls: u64,
    /// The longest of those, ns.
    pub generator_stall_max_ns: u64,
}

impl Loss {
    fn new(res: &TrialResult, ports: Option<&PortDelta>) -> Loss {
        let [(a_tx, a_rx), (b_tx, b_rx)] = res.per_side;
        let dropped: u64 = ports.map_or(0, |p| p.drops.values().sum());
        Loss {
            a_to_b: a_tx.saturating_sub(b_rx),
            b_to_a: b_tx.saturating_sub(a_rx),
            refused: res.refused,
            unconsumed: res.tx_unconsumed,
            switch_rx: ports.map(|p| p.rx_packets),
            switch_tx: ports.map(|p| p.tx_packets),
            switch_drops: ports.map(|p| p.drops.clone()).unwrap_or_default(),
            switch_held: ports.map(|p| p.rx_packets.saturating_sub(p.tx_packets + dropped)),
            after_switch: ports.map(|p| p.tx_packets.saturating_sub(res.rx_frames)),
            skipped: res.skipped,
            late: res.late,
            unsent: res.unsent,
            generator_stalls: res.stalls,
            generator_stall_max_ns: res.stall_max_ns,
        }
    }

    /// One line: each place frames were lost, with the count.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if self.refused > 0 {
            parts.push(format!("{} refused (tx ring full)", self.refused));
        }
        if self.unconsumed > 0 {
            parts.push(format!("{} not taken from tx ring", self.unconsumed));
        }
        for (reason, n) in self.switch_drops.iter().filter(|(_, n)| **n > 0) {
            parts.push(format!("{n} dropped by switch: {reason}"));
        }
        if let Some(n) = self.switch_held.filter(|&n| n > 0) {
            parts.push(format!("{n} held in switch"));
        }
        if let Some(n) = self.after_switch.filter(|&n| n > 0) {
            parts.push(format!("{n} sent by switch, not received"));
        }
        if self.unsent > 0 {
            parts.push(format!("{} due but never sent (tx ring full)", self.unsent));
        }
        if self.generator_stalls > 0 {
            let missed = if self.late > 0 {
                format!("{} frames sent late", self.late)
            } else {
                format!("{} frames not offered", self.skipped)
            };
            parts.push(format!(
                "generator off CPU {} times (longest {:.1} ms, {missed})",
                self.generator_stalls,
                self.generator_stall_max_ns as f64 / 1e6,
            ));
        }
        parts.join(", ")
    }
}

impl TrialReport {
    /// Figures of `res`; `tsc_hz` converts cycles.
    pub fn new(
        spec: &TrialSpec,
        res: &TrialResult,
        cyc: Option<WorkerCounters>,
        switch_cpu_ns: Option<u64>,
        ports: Option<&PortDelta>,
        tsc_hz: f64,
    ) -> TrialReport {
        let wall_ns = res.wall.as_nanos().max(1) as f64;
        let fwd = res.rx_frames.max(1) as f64;
        let secs = res.elapsed.as_secs_f64().max(1e-9);
        let offered = res.tx_frames + res.refused;
        let lost = offered.saturating_sub(res.rx_frames);
        let h = &res.latency;
        let mut cdf = Vec::new();
        if !h.is_empty() {
            for i in 0..=CDF_POINTS {
                // Denser towards the tail: 0, 0.5, 0.75, ... and linear steps.
                let q = if i < CDF_POINTS / 2 {
                    i as f64 / (CDF_POINTS / 2) as f64 * 0.9
                } else {
                    1.0 - 0.1 * 0.8f64.powi((i - CDF_POINTS / 2) as i32)
                };
                let q = if i == CDF_POINTS { 1.0 } else { q };
                cdf.push((h.value_at_quantile(q), q));
            }
        }
        let moved = (res.tx_frames + res.rx_frames).max(1) as f64;
        let per_frame = res.gen_busy_cycles as f64 / moved;
        let rx_l2 = res.rx_bytes as f64 + 4.0 * res.rx_frames as f64;
        TrialReport {
            offered_mpps: spec.rate_pps.map(|r| r / 1e6),
            duration_s: secs,
            tx_frames: res.tx_frames,
            rx_frames: res.rx_frames,
            refused_frames: res.refused,
            lost_frames: lost,
            loss_pct: if offered == 0 {
                0.0
            } else {
                100.0 * lost as f64 / offered as f64
            },
            tx_mpps: res.tx_frames as f64 / secs / 1e6,
            rx_mpps: res.rx_frames as f64 / secs / 1e6,
            rx_gbps: rx_l2 * 8.0 / secs / 1e9,
            rx_gbps_l1: (rx_l2 + L1_OVERHEAD_BYTES * res.rx_frames as f64) * 8.0 / secs / 1e9,
            latency: Latency {
                samples: h.len(),
                p50_ns: h.value_at_quantile(0.5),
                p99_ns: h.value_at_quantile(0.99),
                p999_ns: h.value_at_quantile(0.999),
                max_ns: h.max(),
                cdf,
            },
            switch_cycles: cyc.filter(|c| c.rx_packets > 0).map(|c| SwitchCycles {
                busy_per_packet: c.busy_cycles as f64 / c.rx_packets as f64,
                total_per_packet: (c.busy_cycles + c.idle_cycles) as f64 / c.rx_packets as f64,
                busy_pct: 100.0 * c.busy_cycles as f64
                    / (c.busy_cycles + c.idle_cycles).max(1) as f64,
                stages: c
                    .stages
                    .per_packet()
                    .map(|(rx, switch, tx)| StagePerPacket { rx, switch, tx }),
                counters: c,
            }),
            switch_cpu: switch_cpu_ns.map(|ns| SwitchCpu {
                cpu_share_pct: 100.0 * ns as f64 / wall_ns,
                cpu_ns_per_frame: ns as f64 / fwd,
                cycles_per_frame: ns as f64 * tsc_hz / 1e9 / fwd,
            }),
            generator: Generator {
                busy_cycles_per_frame: per_frame,
                cpu_share_pct: res.gen_cpu_ns.map(|ns| 100.0 * ns as f64 / wall_ns),
                cpu_ns_per_frame: res.gen_cpu_ns.map(|ns| 2.0 * ns as f64 / moved),
                capacity_mpps: res
                    .gen_cpu_ns
                    .filter(|&ns| ns > 0)
                    .map(|ns| 1e3 / (2.0 * ns as f64 / moved)),
            },
            foreign_frames: res.foreign,
            loss: Loss::new(res, ports),
        }
    }
}

/// An RFC 2544 rate search.
#[derive(Clone, Debug, Serialize)]
pub struct Search {
    /// Loss allowed, percent (0 for NDR).
    pub max_loss_pct: f64,
    /// The rate found, Mpps (both directions).
    pub rate_mpps: f64,
    /// Trials run.
    pub trials: u32,
    /// The trial at that rate (None if even the lowest rate lost frames).
    pub at_rate: Option<TrialReport>,
    /// Every trial of the search, in order.
    pub steps: Vec<SearchStep>,
}

/// One trial of a rate search, in brief.
#[derive(Clone, Debug, Serialize)]
pub struct SearchStep {
    /// Offered rate, Mpps.
    pub offered_mpps: f64,
    /// Loss, percent.
    pub loss_pct: f64,
    /// Where the lost frames went ([`Loss::summary`]); empty if none.
    pub loss: String,
}

/// One measurement of one switch at one frame size.
#[derive(Clone, Debug, Serialize)]
pub struct RunRecord {
    /// `weir`, `testpmd`, `ovs`.
    pub switch: String,
    /// Frame size label (`64`, `imix`).
    pub size: String,
    /// Mean frame size with FCS.
    pub mean_frame_bytes: f64,
    /// Stations per side.
    pub flows: u32,
    /// Repeat number, from 1.
    pub repeat: u32,
    /// With `--rate N%`: the unlimited trial the percentage refers to.
    pub max: Option<TrialReport>,
    /// The measurement at `--rate`.
    pub main: TrialReport,
    /// RFC 2544 no-drop rate.
    pub ndr: Option<Search>,
    /// RFC 2544 partial-drop rate.
    pub pdr: Option<Search>,
    /// With `--latency-at`: the trial at that share of the NDR (none if the
    /// NDR was 0).
    pub at_ndr: Option<AtNdr>,
}

/// A trial at a share of the NDR (`--latency-at`), for its latency.
#[derive(Clone, Debug, Serialize)]
pub struct AtNdr {
    /// Offered load, percent of the NDR.
    pub pct_of_ndr: f64,
    /// The measurement.
    pub trial: TrialReport,
}

/// Minimum, median and maximum.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct Spread {
    /// Smallest.
    pub min: f64,
    /// Median (mean of the middle two for an even count).
    pub median: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    /// Of a non-empty list; None if empty.
    pub fn of(vals: &[f64]) -> Option<Spread> {
        if vals.is_empty() {
            return None;
        }
        let mut v = vals.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            min: v[0],
            median,
            max: v[n - 1],
        })
    }

    /// `min/median/max`, each divided by `unit` and shown with `digits`
    /// decimals.
    pub fn show(&self, unit: f64, digits: usize) -> String {
        format!(
            "{:.d$}/{:.d$}/{:.d$}",
            self.min / unit,
            self.median / unit,
            self.max / unit,
            d = digits
        )
    }
}

/// How much a switch's cpu cycles per packet may vary across repeats before
/// the summary says the host's speed changed under the run.
pub const UNSTEADY: f64 = 1.5;

/// One line per switch and size whose cpu cycles per packet varied more than
/// [`UNSTEADY`]× across the repeats.
fn unsteady(aggregates: &[Aggregate]) -> Vec<String> {
    aggregates
        .iter()
        .filter_map(|a| {
            let c = a.cpu_cycles_per_packet?;
            (c.min > 0.0 && c.max / c.min > UNSTEADY).then(|| {
                format!(
                    "{} {}: cpu cycles/pkt {:.0}-{:.0} across repeats (x{:.1})",
                    a.switch,
                    a.size,
                    c.min,
                    c.max,
                    c.max / c.min
                )
            })
        })
        .collect()
}

/// One line per latency trial that lost frames: at a share of an NDR (a
/// rate found loss-free) loss means the host slowed or stalled after the search,
/// and the trial measured a queue filling up rather than the switch.
fn overloaded_latency_trials(runs: &[RunRecord]) -> Vec<String> {
    runs.iter()
        .filter_map(|r| {
            let at = r.at_ndr.as_ref()?;
            (at.trial.loss_pct > 0.0).then(|| {
                format!(
                    "{} {} #{}: the latency trial at {}% of the NDR ({:.2} Mpps) lost {} frames \
                     ({:.4}%): the host slowed or stalled after the search",
                    r.switch,
                    r.size,
                    r.repeat,
                    at.pct_of_ndr,
                    at.trial.offered_mpps.unwrap_or(0.0),
                    at.trial.lost_frames,
                    at.trial.loss_pct
                )
            })
        })
        .collect()
}

/// [`Spread::show`] of `s`, or `none` without one.
fn show_or(s: &Option<Spread>, unit: f64, digits: usize, none: &str) -> String {
    s.map_or_else(|| none.to_owned(), |s| s.show(unit, digits))
}

/// Per switch and size over the repeats.
#[derive(Clone, Debug, Serialize)]
pub struct Aggregate {
    /// Switch.
    pub switch: String,
    /// Size label.
    pub size: String,
    /// Forwarded Mpps at `--rate`.
    pub rx_mpps: Spread,
    /// Forwarded Gbit/s.
    pub rx_gbps: Spread,
    /// NDR, Mpps.
    pub ndr_mpps: Option<Spread>,
    /// PDR, Mpps.
    pub pdr_mpps: Option<Spread>,
    /// Median latency, ns.
    pub p50_ns: Spread,
    /// 99th percentile latency, ns.
    pub p99_ns: Spread,
    /// With `--latency-at`: p50, p99 and p99.9 latency at that share of the
    /// NDR, ns.
    pub at_ndr_p50_ns: Option<Spread>,
    /// See `at_ndr_p50_ns`.
    pub at_ndr_p99_ns: Option<Spread>,
    /// See `at_ndr_p50_ns`.
    pub at_ndr_p999_ns: Option<Spread>,
    /// Busy cycles per packet (weir only).
    pub busy_cycles_per_packet: Option<Spread>,
    /// CPU cycles of the forwarding threads per packet (any switch).
    pub cpu_cycles_per_packet: Option<Spread>,
    /// Share of its CPU the switch got, percent.
    pub switch_cpu_share_pct: Option<Spread>,
}

/// weir over a peer at one size: per repeat `weir[i] / peer[i]`.
#[derive(Clone, Debug, Serialize)]
pub struct Ratio {
    /// The peer.
    pub peer: String,
    /// Size label.
    pub size: String,
    /// Forwarded rate at `--rate`, weir / peer.
    pub rx_mpps: Spread,
    /// NDR, weir / peer.
    pub ndr: Option<Spread>,
    /// CPU cycles per packet, weir / peer (below 1: weir is cheaper).
    pub cpu_cycles_per_packet: Option<Spread>,
}

/// The machine a run was on.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// CPU model from /proc/cpuinfo.
    pub cpu_model: String,
    /// Online CPUs.
    pub cpus: usize,
    /// Measured TSC rate.
    pub tsc_hz: f64,
    /// Kernel release.
    pub kernel: String,
    /// CPU of the switch's worker (testpmd's forwarding lcore, OVS's PMD).
    pub worker_cpu: usize,
    /// CPU of the generator.
    pub generator_cpu: usize,
}

impl Machine {
    /// This host.
    pub fn current(tsc_hz: f64, worker_cpu: usize, generator_cpu: usize) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
            .unwrap_or_default();
        Machine {
            cpu_model,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            tsc_hz,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            worker_cpu,
            generator_cpu,
        }
    }
}

/// The parameters of the invocation, for the JSON.
#[derive(Clone, Debug, Serialize)]
pub struct Params {
    /// Sizes.
    pub sizes: Vec<String>,
    /// Stations per side.
    pub flows: u32,
    /// `--features` on weir's ports (and OVS's), e.g. `ip+vlan+acl-10`;
    /// `none`: raw frames, the plain path.
    pub features: String,
    /// `--rate`.
    pub rate: String,
    /// Seconds per measurement.
    pub duration_s: f64,
    /// Repeats.
    pub repeat: u32,
    /// NDR/PDR searched.
    pub ndr: bool,
    /// Seconds per search trial.
    pub trial_s: f64,
    /// Search resolution, percent of the maximum.
    pub resolution_pct: f64,
    /// PDR loss, percent.
    pub pdr_loss_pct: f64,
    /// `--latency-at`: latency measured at this percentage of the NDR.
    pub latency_at_pct_of_ndr: Option<f64>,
    /// Descriptors per virtqueue.
    pub queue_size: u16,
    /// Switches.
    pub switches: Vec<String>,
    /// A running daemon was measured (its socket) rather than an in-process switch.
    pub daemon_socket: Option<String>,
}

/// The whole result of `weir bench` (the `--json` document).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// weir's version.
    pub version: String,
    /// The machine.
    pub machine: Machine,
    /// The invocation.
    pub params: Params,
    /// Whether the frontends' shared memory was on hugetlb pages.
    pub hugepages: bool,
    /// `--isolate`: the host's threads moved off the worker's CPU for the
    /// run, and those that could not be.
    pub isolation: Option<weir_host::affinity::IsolationSummary>,
    /// Every measurement.
    pub runs: Vec<RunRecord>,
    /// Per switch and size, over the repeats.
    pub aggregates: Vec<Aggregate>,
    /// weir against each peer.
    pub ratios: Vec<Ratio>,
    /// Switches and sizes whose cycles per packet varied more than
    /// [`UNSTEADY`]× across the repeats, and latency trials below the NDR
    /// that lost frames: the host's speed changed under the run (see
    /// docs/benchmarks.md, "The host's phases").
    pub unsteady: Vec<String>,
    /// `--features vxlan` with `--peer ovs`: what OVS's tunnel carried in
    /// each repeat (its datapath's encapsulating and decapsulating flows,
    /// its VXLAN ports), read after the repeat's measurements.
    pub peer_tunnels: Vec<PeerTunnel>,
}

/// What a peer's tunnel carried in one repeat.
#[derive(Clone, Debug, Serialize)]
pub struct PeerTunnel {
    /// The peer.
    pub switch: String,
    /// The repeat, from 1.
    pub repeat: u32,
    /// Its counters since it started.
    pub counters: crate::peer::TunnelCounters,
}

impl Report {
    /// An empty report for this invocation.
    pub fn new(machine: Machine, args: &BenchArgs, plan: &Plan) -> Report {
        let sizes = &plan.sizes;
        let mut switches = vec!["weir".to_string()];
        for p in &args.peer {
            let n = super::Target::Peer(*p).name().to_string();
            if !switches.contains(&n) {
                switches.push(n);
            }
        }
        Report {
            version: env!("CARGO_PKG_VERSION").into(),
            machine,
            params: Params {
                sizes: sizes.iter().map(|s| s.label.clone()).collect(),
                flows: args.flows,
                features: plan.features.label(),
                rate: args.rate.clone(),
                duration_s: args.duration,
                repeat: args.repeat,
                ndr: args.ndr || args.latency_at.is_some(),
                trial_s: args.trial,
                resolution_pct: args.resolution,
                pdr_loss_pct: args.pdr_loss,
                latency_at_pct_of_ndr: args.latency_at,
                queue_size: args.queue_size,
                switches,
                daemon_socket: args.socket.as_ref().map(|p| p.display().to_string()),
            },
            hugepages: false,
            isolation: None,
            runs: Vec::new(),
            aggregates: Vec::new(),
            ratios: Vec::new(),
            unsteady: Vec::new(),
            peer_tunnels: Vec::new(),
        }
    }

    fn runs_of<'a>(
        &'a self,
        switch: &'a str,
        size: &'a str,
    ) -> impl Iterator<Item = &'a RunRecord> {
        self.runs
            .iter()
            .filter(move |r| r.switch == switch && r.size == size)
    }

    /// Computes the aggregates and ratios from the runs.
    pub fn finish(&mut self) {
        let mut aggregates = Vec::new();
        let mut ratios = Vec::new();
        for sw in &self.params.switches {
            for size in &self.params.sizes {
                let runs: Vec<&RunRecord> = self.runs_of(sw, size).collect();
                let col = |f: &dyn Fn(&RunRecord) -> Option<f64>| -> Vec<f64> {
                    runs.iter().filter_map(|r| f(r)).collect()
                };
                let Some(rx_mpps) = Spread::of(&col(&|r| Some(r.main.rx_mpps))) else {
                    continue;
                };
                aggregates.push(Aggregate {
                    switch: sw.clone(),
                    size: size.clone(),
                    rx_mpps,
                    rx_gbps: Spread::of(&col(&|r| Some(r.main.rx_gbps))).unwrap_or(rx_mpps),
                    ndr_mpps: Spread::of(&col(&|r| r.ndr.as_ref().map(|s| s.rate_mpps))),
                    pdr_mpps: Spread::of(&col(&|r| r.pdr.as_ref().map(|s| s.rate_mpps))),
                    p50_ns: Spread::of(&col(&|r| Some(r.main.latency.p50_ns as f64)))
                        .unwrap_or(rx_mpps),
                    p99_ns: Spread::of(&col(&|r| Some(r.main.latency.p99_ns as f64)))
                        .unwrap_or(rx_mpps),
                    at_ndr_p50_ns: Spread::of(&col(&|r| {
                        r.at_ndr.as_ref().map(|a| a.trial.latency.p50_ns as f64)
                    })),
                    at_ndr_p99_ns: Spread::of(&col(&|r| {
                        r.at_ndr.as_ref().map(|a| a.trial.latency.p99_ns as f64)
                    })),
                    at_ndr_p999_ns: Spread::of(&col(&|r| {
                        r.at_ndr.as_ref().map(|a| a.trial.latency.p999_ns as f64)
                    })),
                    busy_cycles_per_packet: Spread::of(&col(&|r| {
                        r.main.switch_cycles.as_ref().map(|c| c.busy_per_packet)
                    })),
                    cpu_cycles_per_packet: Spread::of(&col(&|r| {
                        r.main.switch_cpu.as_ref().map(|c| c.cycles_per_frame)
                    })),
                    switch_cpu_share_pct: Spread::of(&col(&|r| {
                        r.main.switch_cpu.as_ref().map(|c| c.cpu_share_pct)
                    })),
                });
                if sw == "weir" {
                    continue;
                }
                let weir: Vec<&RunRecord> = self.runs_of("weir", size).collect();
                let pair = |f: &dyn Fn(&RunRecord) -> Option<f64>| -> Vec<f64> {
                    weir.iter()
                        .zip(&runs)
                        .filter_map(|(w, p)| match (f(w), f(p)) {
                            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                            _ => None,
                        })
                        .collect()
                };
                if let Some(rx) = Spread::of(&pair(&|r| Some(r.main.rx_mpps))) {
                    ratios.push(Ratio {
                        peer: sw.clone(),
                        size: size.clone(),
                        rx_mpps: rx,
                        ndr: Spread::of(&pair(&|r| r.ndr.as_ref().map(|s| s.rate_mpps))),
                        cpu_cycles_per_packet: Spread::of(&pair(&|r| {
                            r.main.switch_cpu.as_ref().map(|c| c.cycles_per_frame)
                        })),
                    });
                }
            }
        }
        self.aggregates = aggregates;
        self.unsteady = unsteady(&self.aggregates);
        self.unsteady.extend(overloaded_latency_trials(&self.runs));
        self.ratios = ratios;
    }

    /// The terminal summary.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        if self.params.features != "none" {
            let _ = write!(out, "\nfeatures: {}", self.params.features);
        }
        let _ = writeln!(
            out,
            "\n{:<8} {:>5}  {:>23}  {:>8}  {:>17}  {:>17}  {:>7}  {:>8}  {:>8}  {:>5}",
            "switch",
            "size",
            "Mpps min/median/max",
            "Gbps",
            "NDR Mpps",
            "PDR Mpps",
            "p50 us",
            "busy cyc",
            "cpu cyc",
            "cpu %"
        );
        let med = |s: &Option<Spread>| {
            s.map(|s| format!("{:.0}", s.median))
                .unwrap_or_else(|| "-".into())
        };
        for a in &self.aggregates {
            let _ = writeln!(
                out,
                "{:<8} {:>5}  {:>7.3}/{:>7.3}/{:>7.3}  {:>8.2}  {:>17}  {:>17}  {:>7.1}  {:>8}  {:>8}  {:>5}",
                a.switch,
                a.size,
                a.rx_mpps.min,
                a.rx_mpps.median,
                a.rx_mpps.max,
                a.rx_gbps.median,
                show_or(&a.ndr_mpps, 1.0, 2, "-"),
                show_or(&a.pdr_mpps, 1.0, 2, "-"),
                a.p50_ns.median / 1000.0,
                med(&a.busy_cycles_per_packet),
                med(&a.cpu_cycles_per_packet),
                med(&a.switch_cpu_share_pct),
            );
        }
        if !self.unsteady.is_empty() {
            let _ = writeln!(
                out,
                "\nthe host's speed changed during the run (cycles per packet differ by more than \
                 {UNSTEADY}x between repeats, or a latency trial below the NDR lost frames; \
                 ratios pair whatever phases the repeats caught, see docs/benchmarks.md, \
                 \"The host's phases\"):"
            );
            for l in &self.unsteady {
                let _ = writeln!(out, "  {l}");
            }
        }
        if let Some(pct) = self.params.latency_at_pct_of_ndr {
            let _ = writeln!(
                out,
                "\nlatency at {pct}% of NDR, us (per repeat; min/median/max):"
            );
            let us = |s: &Option<Spread>| show_or(s, 1e3, 1, "- (NDR 0)");
            for a in &self.aggregates {
                let _ = writeln!(
                    out,
                    "  {:<8} {:>5}: p50 {}  p99 {}  p99.9 {}",
                    a.switch,
                    a.size,
                    us(&a.at_ndr_p50_ns),
                    us(&a.at_ndr_p99_ns),
                    us(&a.at_ndr_p999_ns)
                );
            }
        }
        if !self.ratios.is_empty() {
            let _ = writeln!(out, "\nweir / peer (per repeat; min/median/max):");
            for r in &self.ratios {
                let _ = writeln!(
                    out,
                    "  vs {:<8} {:>5}: rate {}{}{}",
                    r.peer,
                    r.size,
                    r.rx_mpps.show(1.0, 2),
                    r.ndr
                        .map(|n| format!("  NDR {}", n.show(1.0, 2)))
                        .unwrap_or_default(),
                    r.cpu_cycles_per_packet
                        .map(|n| format!("  cpu cycles/pkt {}", n.show(1.0, 2)))
                        .unwrap_or_default()
                );
            }
        }
        out
    }

    /// Per (switch, size) the median-rate run, for plots.
    pub fn representative(&self) -> BTreeMap<(String, String), &RunRecord> {
        let mut out = BTreeMap::new();
        for a in &self.aggregates {
            let best = self.runs_of(&a.switch, &a.size).min_by(|x, y| {
                (x.main.rx_mpps - a.rx_mpps.median)
                    .abs()
                    .total_cmp(&(y.main.rx_mpps - a.rx_mpps.median).abs())
            });
            if let Some(r) = best {
                out.insert((a.switch.clone(), a.size.clone()), r);
            }
        }
        out
    }
}

/// One line per measurement, printed as it completes.
pub fn line(r: &RunRecord) -> String {
    let m = &r.main;
    let mut s = format!(
        "{:<8} {:>5} #{:<2} rx {:7.3} Mpps {:6.2} Gbps  tx {:7.3} Mpps  loss {:6.3}%  lat p50 {:.1} p99 {:.1} max {:.1} us",
        r.switch,
        r.size,
        r.repeat,
        m.rx_mpps,
        m.rx_gbps,
        m.tx_mpps,
        m.loss_pct,
        m.latency.p50_ns as f64 / 1e3,
        m.latency.p99_ns as f64 / 1e3,
        m.latency.max_ns as f64 / 1e3,
    );
    if let Some(c) = &m.switch_cycles {
        let _ = write!(s, "  {:.0} cyc/pkt busy", c.busy_per_packet);
        if let Some(st) = &c.stages {
            let _ = write!(
                s,
                " (rx {:.0} + switch {:.0} + tx {:.0})",
                st.rx, st.switch, st.tx
            );
        }
    }
    if let Some(c) = &m.switch_cpu {
        let _ = write!(
            s,
            "  switch cpu {:.0}% {:.0} cyc/pkt",
            c.cpu_share_pct, c.cycles_per_frame
        );
    }
    if let (Some(share), Some(cap)) = (m.generator.cpu_share_pct, m.generator.capacity_mpps) {
        let _ = write!(s, "  gen cpu {share:.0}% max {cap:.1} Mpps");
    }
    if m.lost_frames > 0 {
        let _ = write!(s, "  lost: {}", m.loss.summary());
    }
    for (name, x) in [("NDR", &r.ndr), ("PDR", &r.pdr)] {
        if let Some(x) = x {
            let _ = write!(s, "  {name} {:.3} Mpps", x.rate_mpps);
        }
    }
    if let Some(a) = &r.at_ndr {
        let l = &a.trial.latency;
        let _ = write!(
            s,
            "  at {}% NDR ({:.3} Mpps, loss {:.3}%): p50 {:.1} p99 {:.1} p99.9 {:.1} max {:.1} us",
            a.pct_of_ndr,
            a.trial.offered_mpps.unwrap_or(0.0),
            a.trial.loss_pct,
            l.p50_ns as f64 / 1e3,
            l.p99_ns as f64 / 1e3,
            l.p999_ns as f64 / 1e3,
            l.max_ns as f64 / 1e3,
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::{Frames, SizeMix};

    #[test]
    fn spread_takes_min_median_max() {
        assert_eq!(
            Spread::of(&[3.0, 1.0, 2.0]),
            Some(Spread {
                min: 1.0,
                median: 2.0,
                max: 3.0
            })
        );
        assert_eq!(Spread::of(&[4.0, 1.0]).map(|s| s.median), Some(2.5));
        assert_eq!(Spread::of(&[]), None);
        let s = Spread::of(&[9_870.0, 19_520.0, 25_580.0]);
        assert_eq!(s.unwrap().show(1e3, 1), "9.9/19.5/25.6");
        assert_eq!(show_or(&s, 1.0, 0, "-"), "9870/19520/25580");
        assert_eq!(show_or(&None, 1.0, 2, "- (NDR 0)"), "- (NDR 0)");
    }

    #[test]
    fn repeats_that_differ_by_more_than_half_again_are_called_unsteady() {
        let agg = |switch: &str, cycles: &[f64]| {
            let one = Spread::of(&[1.0]).unwrap();
            Aggregate {
                switch: switch.into(),
                size: "64".into(),
                rx_mpps: one,
                rx_gbps: one,
                ndr_mpps: None,
                pdr_mpps: None,
                p50_ns: one,
                p99_ns: one,
                at_ndr_p50_ns: None,
                at_ndr_p99_ns: None,
                at_ndr_p999_ns: None,
                busy_cycles_per_packet: None,
                cpu_cycles_per_packet: Spread::of(cycles),
                switch_cpu_share_pct: None,
            }
        };
        let lines = unsteady(&[
            agg("weir", &[145.0, 162.0, 567.0]),
            agg("testpmd", &[222.0, 245.0, 257.0]),
            agg("ovs", &[200.0, 300.0]),
            agg("loopback", &[]),
        ]);
        assert_eq!(
            lines,
            ["weir 64: cpu cycles/pkt 145-567 across repeats (x3.9)"],
            "x1.16 and exactly x1.5 are steady; no figures, no verdict"
        );
    }

    /// A one-second trial of 60-byte frames that sent `sent` and got `got`
    /// back, split evenly between the sides, with nothing else to report.
    fn plain_result(sent: u64, got: u64) -> TrialResult {
        TrialResult {
            tx_frames: sent,
            rx_frames: got,
            tx_bytes: 60 * sent,
            rx_bytes: 60 * got,
            refused: 0,
            skipped: 0,
            late: 0,
            unsent: 0,
            stalls: 0,
            stall_max_ns: 0,
            foreign: 0,
            elapsed: std::time::Duration::from_secs(1),
            latency: hdrhistogram::Histogram::new(3).unwrap(),
            gen_busy_cycles: 0,
            gen_cpu_ns: None,
            wall: std::time::Duration::from_secs(1),
            per_side: [(sent / 2, got / 2), (sent / 2, got / 2)],
            tx_unconsumed: 0,
        }
    }

    /// A latency trial below the NDR that lost frames is named; one that
    /// lost nothing, and a run without one, are not.
    #[test]
    fn latency_trials_that_lost_frames_are_called_overloaded() {
        let trial = |sent: u64, got: u64| {
            let res = plain_result(sent, got);
            let spec = TrialSpec {
                sizes: SizeMix::fixed(64),
                flows: 1,
                frames: Frames::Raw,
                rate_pps: Some(sent as f64),
                catch_up: false,
                duration: std::time::Duration::from_secs(1),
            };
            TrialReport::new(&spec, &res, None, None, None, 2.5e9)
        };
        let run = |repeat: u32, at: Option<TrialReport>| RunRecord {
            switch: "weir".into(),
            size: "64".into(),
            mean_frame_bytes: 64.0,
            flows: 1,
            repeat,
            max: None,
            main: trial(1000, 1000),
            ndr: None,
            pdr: None,
            at_ndr: at.map(|trial| AtNdr {
                pct_of_ndr: 50.0,
                trial,
            }),
        };
        let runs = [
            run(1, Some(trial(2_000_000, 2_000_000))),
            run(2, Some(trial(4_000_000, 3_000_000))),
            run(3, None),
        ];
        assert_eq!(
            overloaded_latency_trials(&runs),
            [
                "weir 64 #2: the latency trial at 50% of the NDR (4.00 Mpps) lost 1000000 \
                 frames (25.0000%): the host slowed or stalled after the search"
            ]
        );
    }

    #[test]
    fn loss_splits_by_direction_and_switch_counters() {
        let res = TrialResult {
            refused: 5,
            skipped: 40,
            late: 0,
            unsent: 0,
            stalls: 2,
            stall_max_ns: 3_000_000,
            // A sent 1000, B received 996; B sent 1000, A received 994.
            per_side: [(1000, 994), (1000, 996)],
            tx_unconsumed: 1,
            ..plain_result(2000, 1990)
        };
        let ports = PortDelta {
            rx_packets: 1999,
            tx_packets: 1992,
            drops: BTreeMap::from([("tx-full".to_owned(), 3)]),
        };
        let l = Loss::new(&res, Some(&ports));
        assert_eq!((l.a_to_b, l.b_to_a), (4, 6));
        assert_eq!(l.unconsumed, 1);
        assert_eq!(l.switch_held, Some(4), "1999 taken - 1992 sent - 3 dropped");
        assert_eq!(l.after_switch, Some(2), "1992 sent - 1990 received");
        assert_eq!(
            l.summary(),
            "5 refused (tx ring full), 1 not taken from tx ring, \
             3 dropped by switch: tx-full, 4 held in switch, \
             2 sent by switch, not received, \
             generator off CPU 2 times (longest 3.0 ms, 40 frames not offered)"
        );
        let peer = Loss::new(&res, None);
        assert_eq!((peer.switch_rx, peer.switch_held), (None, None));
    }

    #[test]
    fn port_deltas_subtract_and_keep_only_new_drops() {
        let before = PortDelta {
            rx_packets: 10,
            tx_packets: 8,
            drops: BTreeMap::from([("tx-full".to_owned(), 2), ("no-buffers".to_owned(), 1)]),
        };
        let after = PortDelta {
            rx_packets: 30,
            tx_packets: 25,
            drops: BTreeMap::from([("tx-full".to_owned(), 5), ("no-buffers".to_owned(), 1)]),
        };
        let d = after.since(&before);
        assert_eq!((d.rx_packets, d.tx_packets), (20, 17));
        assert_eq!(d.drops, BTreeMap::from([("tx-full".to_owned(), 3)]));
    }
}
