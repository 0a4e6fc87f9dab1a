//! `weir-bench`'s command line (also what `weir bench` passes on), and the
//! checks clap cannot make, done before anything starts.

use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, Parser};

use crate::features::{BenchFeature, Features, MAX_ACL_RULES};
use crate::plot::{self, PlotError};
use crate::traffic::SizeMix;

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
    /// Switch features on both traffic ports, comma-separated, to measure
    /// what they cost (`--peer ovs` gets the same set-up as port settings
    /// and flows). Any of them makes the frames IPv4/UDP; `ip` alone is the
    /// baseline with no feature.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub features: Vec<BenchFeature>,
    /// Rules of the security group of `--features acl`: all but the last
    /// are looked at and miss, the last lets the traffic through.
    #[arg(long, default_value_t = 10)]
    pub acl_rules: u32,
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

/// An argument `weir bench` refuses before measuring anything.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    /// `--rate` is not `max`, `<N>mpps` or `<N>%`.
    #[error("bad --rate {0:?}: expected max, <N>mpps or <N>%")]
    Rate(String),
    /// `--rate` is zero, negative or not finite.
    #[error("--rate must be positive")]
    RateNotPositive,
    /// `--rate` is a percentage above 100.
    #[error("--rate {0}% is above the maximum")]
    RateAbove100(f64),
    /// `--size` is neither a number nor `imix`.
    #[error("bad --size {0:?}: expected bytes (64..=9000) or imix")]
    Size(String),
    /// `--size` is outside 64..=9000.
    #[error("--size {0}: frames are 64..=9000 bytes")]
    SizeRange(u32),
    /// `--size` is empty.
    #[error("no --size given")]
    NoSize,
    /// `--duration` or `--trial` is not positive.
    #[error("--duration and --trial must be positive")]
    Durations,
    /// `--resolution` is outside (0, 50].
    #[error("--resolution must be in (0, 50] percent")]
    Resolution,
    /// `--latency-at` is outside (0, 100].
    #[error("--latency-at must be in (0, 100] percent of the NDR")]
    LatencyAt,
    /// `--flows` is outside 1..=1048576.
    #[error("--flows must be 1..=1048576")]
    Flows,
    /// `--repeat` is 0.
    #[error("--repeat must be at least 1")]
    Repeat,
    /// `--acl-rules` is outside 1..=MAX_ACL_RULES.
    #[error("--acl-rules must be 1..={MAX_ACL_RULES}")]
    AclRules,
    /// `--features security` with more stations than a port may allow.
    #[error("--features security allows at most {max} stations per port: lower --flows")]
    SecurityFlows {
        /// The most.
        max: usize,
    },
    /// `--features vxlan` or `patch` with `--socket`.
    #[error(
        "--features vxlan and patch build their own bridges, patch and tunnel ports: they run \
         on the in-process switch, not on a daemon's (drop --socket)"
    )]
    TunnelSocket,
    /// `--features vxlan` or `patch` with a peer that has no bridges.
    #[error(
        "--features vxlan and patch join two bridges, and --peer {peer} has none (it forwards \
         between its two ports): measure them with --peer ovs"
    )]
    TunnelPeer {
        /// The peer.
        peer: &'static str,
    },
    /// `--features vxlan` and `patch` together.
    #[error(
        "--features vxlan and patch are two runs to compare (the tunnel and its baseline): \
         give one of them"
    )]
    TunnelAndPatch,
    /// `--plot`'s file name has no extension a picture can be written in.
    #[error(transparent)]
    Plot(#[from] PlotError),
}

/// Offered rate of the main measurement.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rate {
    /// As fast as the switch takes frames.
    Max,
    /// Millions of frames per second, both directions together.
    Mpps(f64),
    /// Percent of the maximum rate measured just before.
    Percent(f64),
}

impl FromStr for Rate {
    type Err = ArgsError;

    /// `max` (or `unlimited`), `<N>mpps`, `<N>` (Mpps) or `<N>%`.
    fn from_str(s: &str) -> Result<Rate, ArgsError> {
        let s = s.trim().to_ascii_lowercase();
        let num = |t: &str| -> Result<f64, ArgsError> {
            let v: f64 = t.trim().parse().map_err(|_| ArgsError::Rate(s.clone()))?;
            if !(v.is_finite() && v > 0.0) {
                return Err(ArgsError::RateNotPositive);
            }
            Ok(v)
        };
        if s == "max" || s == "unlimited" {
            Ok(Rate::Max)
        } else if let Some(p) = s.strip_suffix('%') {
            let v = num(p)?;
            if v > 100.0 {
                return Err(ArgsError::RateAbove100(v));
            }
            Ok(Rate::Percent(v))
        } else if let Some(m) = s.strip_suffix("mpps") {
            Ok(Rate::Mpps(num(m)?))
        } else {
            Ok(Rate::Mpps(num(&s)?))
        }
    }
}

/// Parses `--size` values: bytes with FCS (64..=9000) or `imix`.
///
/// # Errors
/// A value that is neither, or no value.
pub fn parse_sizes(list: &[String]) -> Result<Vec<SizeMix>, ArgsError> {
    let mut out = Vec::new();
    for s in list {
        let s = s.trim();
        if s.eq_ignore_ascii_case("imix") {
            out.push(SizeMix::imix());
            continue;
        }
        let b: u32 = s.parse().map_err(|_| ArgsError::Size(s.to_owned()))?;
        if !(64..=9000).contains(&b) {
            return Err(ArgsError::SizeRange(b));
        }
        out.push(SizeMix::fixed(b));
    }
    if out.is_empty() {
        return Err(ArgsError::NoSize);
    }
    Ok(out)
}

/// What the arguments ask for, checked.
#[derive(Debug)]
pub struct Plan {
    /// Frame sizes, one measurement each.
    pub sizes: Vec<SizeMix>,
    /// Offered rate of the main measurement.
    pub rate: Rate,
    /// Largest frame of any size, without FCS.
    pub max_frame: u32,
    /// Switch features and the frames they need.
    pub features: Features,
}

impl BenchArgs {
    /// Checks every argument that clap cannot, before anything starts.
    ///
    /// # Errors
    /// The first argument out of its range.
    pub fn plan(&self) -> Result<Plan, ArgsError> {
        let sizes = parse_sizes(&self.size)?;
        let rate = self.rate.parse()?;
        if !(self.duration > 0.0 && self.trial > 0.0) {
            return Err(ArgsError::Durations);
        }
        if !(self.resolution > 0.0 && self.resolution <= 50.0) {
            return Err(ArgsError::Resolution);
        }
        if self.latency_at.is_some_and(|p| !(p > 0.0 && p <= 100.0)) {
            return Err(ArgsError::LatencyAt);
        }
        if self.flows == 0 || self.flows > 1 << 20 {
            return Err(ArgsError::Flows);
        }
        if self.repeat == 0 {
            return Err(ArgsError::Repeat);
        }
        if !(1..=MAX_ACL_RULES).contains(&self.acl_rules) {
            return Err(ArgsError::AclRules);
        }
        let features = Features::new(&self.features, self.acl_rules);
        if features.tunnel && features.patch {
            return Err(ArgsError::TunnelAndPatch);
        }
        if features.split() {
            if self.socket.is_some() {
                return Err(ArgsError::TunnelSocket);
            }
            if let Some(&p) = self.peer.iter().find(|&&p| p != BenchPeer::Ovs) {
                return Err(ArgsError::TunnelPeer {
                    peer: crate::Target::Peer(p).name(),
                });
            }
        }
        let max = dataplane::switch::security::MAX_ALLOWED;
        if features.security && self.flows as usize > max {
            return Err(ArgsError::SecurityFlows { max });
        }
        if let Some(p) = &self.plot {
            plot::format(p)?;
        }
        let max_frame = sizes.iter().map(SizeMix::max_frame).max().unwrap_or(60);
        Ok(Plan {
            sizes,
            rate,
            max_frame,
            features,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_as_max_mpps_or_percent() {
        let rate = |s: &str| s.parse::<Rate>();
        assert_eq!(rate("max").unwrap(), Rate::Max);
        assert_eq!(rate("2.5mpps").unwrap(), Rate::Mpps(2.5));
        assert_eq!(rate("3").unwrap(), Rate::Mpps(3.0));
        assert_eq!(rate("50%").unwrap(), Rate::Percent(50.0));
        assert!(matches!(rate("150%"), Err(ArgsError::RateAbove100(_))));
        assert!(matches!(rate("-1"), Err(ArgsError::RateNotPositive)));
        assert!(matches!(rate("fast"), Err(ArgsError::Rate(_))));
    }

    #[test]
    fn sizes_parse_bytes_and_imix() {
        let s = parse_sizes(&["64".into(), "imix".into(), "9000".into()]).unwrap();
        assert_eq!(s[0].pattern, vec![60]);
        assert_eq!(s[1].label, "imix");
        assert_eq!(s[2].max_frame(), 8996);
        assert!(matches!(
            parse_sizes(&["63".into()]),
            Err(ArgsError::SizeRange(63))
        ));
        assert!(parse_sizes(&["9001".into()]).is_err());
        assert!(matches!(
            parse_sizes(&["big".into()]),
            Err(ArgsError::Size(_))
        ));
        assert!(matches!(parse_sizes(&[]), Err(ArgsError::NoSize)));
    }

    #[test]
    fn tunnel_features_take_ovs_but_not_a_bridgeless_peer_or_a_daemon() {
        let plan = |extra: &[&str]| {
            let argv = [&["weir-bench", "--features", "ip,vxlan"][..], extra].concat();
            BenchCli::try_parse_from(argv).unwrap().args.plan()
        };
        assert!(plan(&["--peer", "ovs"]).is_ok());
        assert!(matches!(
            plan(&["--peer", "ovs,testpmd"]),
            Err(ArgsError::TunnelPeer { peer: "testpmd" })
        ));
        assert!(matches!(
            plan(&["--peer", "loopback"]),
            Err(ArgsError::TunnelPeer { peer: "loopback" })
        ));
        assert!(matches!(
            plan(&["--socket", "/run/weir.sock"]),
            Err(ArgsError::TunnelSocket)
        ));
    }
}
