//! `weir-bench`'s command line (also what `weir bench` passes on).

use std::path::PathBuf;

use clap::{Args, Parser};

/// `weir-bench`: measure forwarding rate, loss and latency through
/// vhost-user ports.
#[derive(Debug, Parser)]
#[command(name = "weir bench", version)]
pub struct BenchCli {
    /// What to measure.
    #[command(flatten)]
    pub args: BenchArgs,
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

/// Switches `weir bench --peer` can measure next to weir.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchPeer {
    /// DPDK testpmd, io forwarding between two `net_vhost` ports.
    Testpmd,
    /// OVS-DPDK, two `dpdkvhostuser` ports on a bridge with the NORMAL action.
    Ovs,
    /// weir's vhost-user ports with the switch taken out (io forwarding):
    /// the generator's ceiling, and what switching costs on top.
    Loopback,
}

/// `weir bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Benchmark a running daemon through its control socket (adds two
    /// vhost-user ports to `--bridge`, removes them afterwards) instead of
    /// an in-process switch.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Bridge the traffic ports join (created if missing).
    #[arg(long, default_value = "bench")]
    pub bridge: String,
    /// Also measure these switches with the same traffic and print weir's
    /// ratio (needs dpdk-testpmd / OVS-DPDK; run as root).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub peer: Vec<BenchPeer>,
    /// Frame sizes in bytes with FCS (64..=9000), comma-separated, or `imix`.
    #[arg(long, value_delimiter = ',', default_value = "64")]
    pub size: Vec<String>,
    /// Stations (MAC addresses) per side; traffic is known unicast.
    #[arg(long, default_value_t = 1)]
    pub flows: u32,
    /// Offered rate, both directions together: `max` (as fast as the switch
    /// takes frames), `<N>mpps`, or `<N>%` of the measured maximum.
    #[arg(long, default_value = "max")]
    pub rate: String,
    /// With a rate: frames that come due while the generator is off its CPU
    /// are sent when it is back, as a source with a queue would, instead of
    /// being skipped. The offered rate then holds on a CPU the generator
    /// shares (a soak under load), at the cost of bursts after each stall:
    /// not for latency or NDR figures.
    #[arg(long, conflicts_with_all = ["ndr", "latency_at"])]
    pub catch_up: bool,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Measurements per switch and size (min/median/max are reported).
    #[arg(long, default_value_t = 1)]
    pub repeat: u32,
    /// Also search the RFC 2544 no-drop rate (NDR) and partial-drop rate (PDR).
    #[arg(long)]
    pub ndr: bool,
    /// Seconds per NDR/PDR trial.
    #[arg(long, default_value_t = 2.0)]
    pub trial: f64,
    /// NDR/PDR search resolution, percent of the maximum rate.
    #[arg(long, default_value_t = 1.0)]
    pub resolution: f64,
    /// Loss allowed at the PDR, percent.
    #[arg(long, default_value_t = 0.5)]
    pub pdr_loss: f64,
    /// Also measure latency at this percentage of the NDR found (implies
    /// `--ndr`): RFC 2544's latency test runs at the throughput rate (100);
    /// a load of 50 shows the latency with headroom left.
    #[arg(long, value_name = "PERCENT")]
    pub latency_at: Option<f64>,
    /// Write the results as JSON to this file (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Draw throughput per frame size and the latency CDF (SVG or PNG, by
    /// the file name's extension).
    #[arg(long, value_name = "FILE.svg|FILE.png")]
    pub plot: Option<PathBuf>,
    /// Descriptors per virtqueue of the traffic ports.
    #[arg(long, default_value_t = 256)]
    pub queue_size: u16,
    /// CPU of the switch's poll-mode worker [default: the last CPU].
    #[arg(long)]
    pub worker_cpu: Option<usize>,
    /// CPU of the traffic generator [default: the first CPU that is not the
    /// worker's].
    #[arg(long)]
    pub gen_cpu: Option<usize>,
    /// No live progress display.
    #[arg(long)]
    pub quiet: bool,
    /// For the length of the run, move every other thread on the host that
    /// may run elsewhere (other processes, movable kernel threads) off the
    /// worker's CPU, and put each back at the end: what `isolcpus` or a
    /// CPU-partitioning profile gives a host set up for poll-mode work.
    /// Moving other users' threads needs root.
    #[arg(long)]
    pub isolate: bool,
}
