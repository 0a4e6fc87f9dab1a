//! Command-line interface: argument definitions and the text output of the
//! client verbs.
//!
//! Control plane only. Client verbs turn into one [`Request`] each; show
//! verbs print an aligned table, or the reply's raw `data` with `--json`.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use weir_api::Request;
use weir_config::{
    AclAction, AclRuleSpec, AclSpec, MacAddr, MirrorSpec, PortSettings, PortSpec, PortType,
    VhostMode, VlanMode, DEFAULT_SOCKET,
};

/// A userspace poll-mode virtual switch: the daemon (`weir run`) and its
/// command-line client.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about, propagate_version = true)]
pub struct Cli {
    /// Control socket of the daemon [default: /run/weir/weir.sock]
    #[arg(long, value_name = "PATH", env = "WEIR_SOCKET")]
    pub socket: Option<PathBuf>,

    /// More log output (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Log lines as text or JSON objects (logs go to stderr; `RUST_LOG`
    /// filters them when no `-v` is given).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t,
        value_name = "FORMAT",
        env = "WEIR_LOG_FORMAT"
    )]
    pub log_format: crate::logging::LogFormat,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `--socket` accepted after a verb too (`weir port list --socket PATH`).
#[derive(Debug, Clone, Args)]
pub struct SocketArg {
    /// Control socket of the daemon (overrides the one before the verb).
    #[arg(long = "socket", value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

/// `--json` for show verbs.
#[derive(Debug, Clone, Args)]
pub struct ShowArgs {
    /// Print the raw JSON reply data instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: SocketArg,
}

/// Top-level verbs.
#[derive(Debug, Subcommand)]
// Parsed once per command line; the size of `Port` does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run the daemon in the foreground.
    Run(RunArgs),
    /// Manage ports.
    #[command(subcommand)]
    Port(PortCmd),
    /// Manage bridges.
    #[command(subcommand)]
    Bridge(BridgeCmd),
    /// Inspect, add to or flush MAC learning tables.
    #[command(subcommand)]
    Fdb(FdbCmd),
    /// weir's own addresses on ports (`ip` in a port's config).
    #[command(subcommand)]
    Ip(IpCmd),
    /// The neighbours (ARP, ND) weir's host addresses know.
    #[command(subcommand)]
    Neigh(NeighCmd),
    /// Manage security groups (ACLs): ordered allow/deny rules a port
    /// applies to what it sends (acl_in) or receives (acl_out).
    #[command(subcommand)]
    Acl(AclCmd),
    /// Capture a port's frames into a pcapng file (Ctrl-C stops).
    Capture(CaptureArgs),
    /// Manage port mirrors (SPAN): copies of what some ports receive or
    /// send, sent on another port.
    #[command(subcommand)]
    Mirror(MirrorCmd),
    /// Show port, worker and buffer pool counters (`stats clear` starts
    /// them again from zero).
    Stats(StatsArgs),
    /// Inspect poll-mode worker threads.
    #[command(subcommand)]
    Pmd(PmdCmd),
    /// Work with configuration files.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Run a self-contained demonstration.
    Demo,
    /// Bind a NIC to vfio-pci for a `vfio` port, or give it back.
    Devbind(DevbindArgs),
    /// Create SR-IOV virtual functions and set their MAC/VLAN.
    Sriov(SriovArgs),
    /// Check that this host can run a configuration.
    Doctor(DoctorArgs),
    /// Print the version of this client and of the daemon it talks to.
    Version(ShowArgs),
    /// Print a shell completion script (`weir completions bash >
    /// /usr/share/bash-completion/completions/weir`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write man pages: `weir.1` and one per verb (`weir-port-add.1`), into
    /// a directory, or `weir.1` alone to stdout.
    Man {
        /// Directory to write every page into (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Measure forwarding rate, loss and latency through vhost-user ports
    /// (runs `weir-bench`, installed beside `weir`; `weir bench --help` for
    /// its options).
    #[command(disable_help_flag = true)]
    Bench {
        /// `weir-bench`'s arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

/// `weir stats [--json]` or `weir stats clear [PORT]`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct StatsArgs {
    /// `clear`, or nothing to show the counters.
    #[command(subcommand)]
    pub action: Option<StatsCmd>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub show: ShowArgs,
}

/// `weir stats` actions.
#[derive(Debug, Subcommand)]
pub enum StatsCmd {
    /// Start the counters that `stats`, `port list`, `port show` and `pmd
    /// show` print again from zero: one port's, or every port's and
    /// worker's. Metrics keep the running totals.
    Clear {
        /// Port to clear (default: every port and worker).
        port: Option<String>,
        #[command(flatten)]
        #[allow(missing_docs)]
        conn: SocketArg,
    },
}

/// `weir capture`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("direction").args(["rx", "tx", "both"]))]
pub struct CaptureArgs {
    /// The port.
    pub port: String,
    /// Frames the port receives.
    #[arg(long)]
    pub rx: bool,
    /// Frames the port sends.
    #[arg(long)]
    pub tx: bool,
    /// Frames the port receives and sends (the default, unless only
    /// --drops is given).
    #[arg(long)]
    pub both: bool,
    /// Frames received on the port that the switch drops, the reason in
    /// each packet's comment; alone, only those.
    #[arg(long)]
    pub drops: bool,
    /// Stop after N frames.
    #[arg(short = 'c', long = "count", value_name = "N")]
    pub count: Option<u64>,
    /// Stop after S seconds (fractions allowed).
    #[arg(long, value_name = "S", value_parser = parse_seconds)]
    pub duration: Option<u64>,
    /// Bytes kept of each frame.
    #[arg(long, value_name = "BYTES")]
    pub snaplen: Option<u32>,
    /// The pcapng file to write (`-`: stdout).
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    pub write: PathBuf,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: SocketArg,
}

/// Seconds (`2`, `0.5`) as milliseconds.
fn parse_seconds(arg: &str) -> Result<u64, String> {
    let secs: f64 = arg
        .parse()
        .map_err(|_| format!("{arg:?} is not a number of seconds"))?;
    if !(secs.is_finite() && secs > 0.0 && secs <= 1e9) {
        return Err(format!("{arg:?}: give a duration above 0 seconds"));
    }
    Ok((secs * 1000.0).ceil() as u64)
}

impl CaptureArgs {
    /// The capture request's spec.
    ///
    /// # Errors
    /// A count of 0.
    pub fn spec(&self) -> anyhow::Result<weir_api::CaptureSpec> {
        if self.count == Some(0) {
            anyhow::bail!("-c 0 captures nothing; give at least 1");
        }
        let directions = self.rx || self.tx || self.both;
        let both = self.both || (!directions && !self.drops);
        Ok(weir_api::CaptureSpec {
            port: self.port.clone(),
            rx: self.rx || both,
            tx: self.tx || both,
            drops: self.drops,
            count: self.count,
            duration_ms: self.duration,
            snaplen: self.snaplen,
        })
    }
}

/// `weir devbind`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["pci", "list"]))]
pub struct DevbindArgs {
    /// PCI address (e.g. 0000:01:00.0).
    pub pci: Option<String>,
    /// Give the device back to the driver it had before `weir devbind`.
    #[arg(long, requires = "pci")]
    pub unbind: bool,
    /// Bind even if one of its kernel interfaces is up.
    #[arg(long)]
    pub force: bool,
    /// List network PCI functions.
    #[arg(long, conflicts_with_all = ["unbind", "force"])]
    pub list: bool,
    /// With --list: print JSON.
    #[arg(long, requires = "list")]
    pub json: bool,
}

/// `weir sriov`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("action").required(true).args(["vfs", "list", "vf"]))]
pub struct SriovArgs {
    /// PCI address of the physical function.
    pub pf: String,
    /// Set the number of VFs (0 removes them).
    #[arg(long, value_name = "N")]
    pub vfs: Option<u32>,
    /// List the VFs.
    #[arg(long)]
    pub list: bool,
    /// With --list: print JSON.
    #[arg(long, requires = "list")]
    pub json: bool,
    /// The VF to configure (with --mac, --vlan, --spoofchk).
    #[arg(long, value_name = "K")]
    pub vf: Option<u32>,
    /// MAC address of the VF.
    #[arg(long, value_name = "MAC", requires = "vf")]
    pub mac: Option<String>,
    /// VLAN the PF tags the VF's traffic with (0: none).
    #[arg(long, value_name = "ID", requires = "vf")]
    pub vlan: Option<u16>,
    /// MAC spoof checking.
    #[arg(long, value_name = "on|off", value_parser = parse_on_off, requires = "vf")]
    pub spoofchk: Option<bool>,
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("expected `on` or `off`, not `{s}`")),
    }
}

/// `weir doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Configuration file to check the host against.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the checks as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `weir run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Configuration file.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: SocketArg,
    /// Serve OpenMetrics on ADDR:PORT (e.g. 127.0.0.1:9477), overriding the
    /// file's `[metrics] listen`.
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_metrics_listen)]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// `--metrics-listen`: an address with a port other than 0.
fn parse_metrics_listen(text: &str) -> Result<std::net::SocketAddr, String> {
    let addr: std::net::SocketAddr = text.parse().map_err(|_| {
        format!("expected ADDR:PORT, e.g. 127.0.0.1:9477 or [::1]:9477, not {text:?}")
    })?;
    if addr.port() == 0 {
        return Err("port 0 is not one a scraper could find; give a port".into());
    }
    Ok(addr)
}

/// `weir port ...`.
#[derive(Debug, Subcommand)]
// Parsed once per command line; the size of `Add` does not matter.
#[allow(clippy::large_enum_variant)]
pub enum PortCmd {
    /// Add a port (same keys as a [[port]] table).
    Add(PortAddArgs),
    /// Delete a port.
    Del {
        /// Port name.
        name: String,
        #[command(flatten)]
        #[allow(missing_docs)]
        conn: SocketArg,
    },
    /// List ports.
    List(ShowArgs),
    /// Show one port: type, settings, queues and workers, counters and drops
    /// by reason.
    Show {
        /// Port name.
        name: String,
        #[command(flatten)]
        #[allow(missing_docs)]
        show: ShowArgs,
    },
    /// Change switch settings of a port while it runs (VLAN, mac, port
    /// security, rx_filter, rate limits, acl_in, acl_out: the keys of `port add`),
    /// checked together; nothing changes if they are refused. On a tunnel
    /// port, remote_ips=A,B,... replaces the flood list: remotes that stay
    /// keep the stations learned behind them.
    Set {
        /// Port name.
        name: String,
        /// KEY=VALUE, e.g. tag=10 trunks=10,20 port_security=true
        /// ips=10.0.0.5,fd00::5 egress_rate=20000 (a key given twice takes its
        /// last value).
        #[arg(required = true, value_name = "KEY=VALUE", value_parser = parse_setting)]
        settings: Vec<(String, String)>,
        #[command(flatten)]
        #[allow(missing_docs)]
        out: ReplyArgs,
    },
    /// Give switch settings of a port their defaults (as `port set` changes
    /// them).
    Clear {
        /// Port name.
        name: String,
        /// Keys to clear, e.g. tag trunks.
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
        #[command(flatten)]
        #[allow(missing_docs)]
        out: ReplyArgs,
    },
}

/// A `port set` argument: `KEY=VALUE`.
fn parse_setting(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE (e.g. tag=10), not `{arg}`")),
    }
}

/// A `--vlan-mode` value.
fn parse_vlan_mode(arg: &str) -> Result<VlanMode, String> {
    weir_config::parse_vlan_mode(arg).map_err(|e| e.to_string())
}

/// VLAN ids given as one argument (`10,20`); a name of its own so that clap
/// takes it as one value, not a list of arguments.
pub type VlanIds = Vec<u16>;

/// A `--trunks` value.
fn parse_trunks(arg: &str) -> Result<VlanIds, String> {
    weir_config::parse_trunks(arg).map_err(|e| e.to_string())
}

/// MAC addresses given as one argument (`02:00:00:00:00:05,...`).
pub type Macs = Vec<MacAddr>;

/// IP addresses given as one argument (`10.0.0.5,fd00::5`).
pub type Ips = Vec<IpAddr>;

/// The value of switch setting `key` as `port set` parses it, taken out of
/// the settings by `get`: flags and `port set` read values one way.
fn setting<T>(key: &str, arg: &str, get: fn(PortSettings) -> T) -> Result<T, String> {
    let mut s = PortSettings::default();
    s.set(key, arg).map_err(|e| e.to_string())?;
    Ok(get(s))
}

/// A `--mac` value.
fn parse_mac(arg: &str) -> Result<MacAddr, String> {
    setting("mac", arg, |s| s.mac.unwrap_or(MacAddr([0; 6])))
}

/// An `--allowed-macs` value.
fn parse_macs(arg: &str) -> Result<Macs, String> {
    setting("allowed_macs", arg, |s| s.allowed_macs)
}

/// One `--vlan-vni` pair, `VLAN=VNI`.
fn parse_vlan_vni(arg: &str) -> Result<(String, u32), String> {
    let (vlan, vni) = arg
        .split_once('=')
        .ok_or_else(|| format!("`{arg}` is not VLAN=VNI (e.g. 10=5010)"))?;
    let vni = vni
        .trim()
        .parse()
        .map_err(|_| format!("`{vni}` is not a VNI"))?;
    Ok((vlan.trim().to_owned(), vni))
}

/// An `--ips` value.
fn parse_ips(arg: &str) -> Result<Ips, String> {
    setting("ips", arg, |s| s.ips)
}

/// `weir port add`. Its `--socket` is the vhost-user socket; to pick the
/// control socket put `--socket` before `port` or set `WEIR_SOCKET`.
#[derive(Debug, Args)]
pub struct PortAddArgs {
    /// Port name.
    pub name: String,
    /// Port type.
    #[arg(long = "type", short = 't', value_name = "TYPE")]
    pub kind: PortType,
    /// Interface to attach to (afpacket, afxdp) or create (tap).
    #[arg(long, value_name = "IF")]
    pub iface: Option<String>,
    /// Bridge to attach the port to.
    #[arg(long, value_name = "BR")]
    pub bridge: Option<String>,
    /// Number of queue pairs.
    #[arg(long, value_name = "N")]
    pub queues: Option<u16>,
    /// vhost-user socket path (for the control socket, use `weir --socket PATH port add`).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// vhost-user role.
    #[arg(long)]
    pub mode: Option<VhostMode>,
    /// pcap file replayed as received traffic.
    #[arg(long, value_name = "P")]
    pub rx_path: Option<PathBuf>,
    /// pcap file transmitted traffic is written to.
    #[arg(long, value_name = "P")]
    pub tx_path: Option<PathBuf>,
    /// PCI address of a vfio NIC.
    #[arg(long, value_name = "ADDR")]
    pub pci: Option<String>,
    /// DPDK device arguments of a dpdk port (e.g. net_pcap0,iface=eth0).
    #[arg(long, value_name = "DEVARGS")]
    pub devargs: Option<String>,
    /// vhost-user server socket permissions, octal (e.g. 0660).
    #[arg(long, value_name = "MODE")]
    pub socket_mode: Option<String>,
    /// vhost-user server socket group (name or number).
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,
    /// Largest size of a pcap capture file, in bytes (default 1 GiB).
    #[arg(long, value_name = "BYTES")]
    pub max_bytes: Option<u64>,
    /// weir's own address on the port's segment, with its prefix length
    /// (e.g. 192.0.2.1/24); repeat or separate with commas for more.
    #[arg(long, value_name = "ADDR/LEN", value_delimiter = ',')]
    pub ip: Vec<String>,
    /// IPv4 next hop for addresses outside the port's subnets.
    #[arg(long, value_name = "IP")]
    pub gateway: Option<std::net::Ipv4Addr>,
    /// IPv6 next hop for addresses outside the port's subnets.
    #[arg(long, value_name = "IP")]
    pub gateway6: Option<std::net::Ipv6Addr>,
    /// Tunnel (vxlan, geneve): the port with an --ip that carries it.
    #[arg(long, value_name = "PORT")]
    pub underlay: Option<String>,
    /// Tunnel: the source address of its packets (one of the underlay's).
    #[arg(long, value_name = "IP")]
    pub local_ip: Option<std::net::Ipv4Addr>,
    /// Tunnel: the remote endpoints, e.g. 192.0.2.2,192.0.2.3.
    #[arg(long, value_name = "IPS", value_delimiter = ',')]
    pub remote_ips: Vec<std::net::Ipv4Addr>,
    /// Tunnel: the one VNI of every frame.
    #[arg(long, value_name = "VNI")]
    pub vni: Option<u32>,
    /// Tunnel: a VNI per bridge VLAN, e.g. 10=5010,20=5020.
    #[arg(long, value_name = "VLAN=VNI", value_delimiter = ',', value_parser = parse_vlan_vni)]
    pub vlan_vni: Vec<(String, u32)>,
    /// Tunnel: the UDP destination port (default 4789 for vxlan, 6081 for
    /// geneve).
    #[arg(long, value_name = "PORT")]
    pub dst_port: Option<u16>,
    /// Patch port: the patch port at the other end.
    #[arg(long, value_name = "PORT")]
    pub peer: Option<String>,
    /// Access VLAN, or the native VLAN of a native mode (1-4094).
    #[arg(long, value_name = "VLAN")]
    pub tag: Option<u16>,
    /// VLANs a trunk carries, e.g. 10,20 (default: all).
    #[arg(long, value_name = "VLANS", value_parser = parse_trunks)]
    pub trunks: Option<VlanIds>,
    /// access, trunk, native-tagged or native-untagged (default: access with
    /// --tag, trunk without).
    #[arg(long, value_name = "MODE", value_parser = parse_vlan_mode)]
    pub vlan_mode: Option<VlanMode>,
    /// ACL (security group) for what the port sends into the switch.
    #[arg(long, value_name = "ACL")]
    pub acl_in: Option<String>,
    /// ACL for what the switch sends to the port.
    #[arg(long, value_name = "ACL")]
    pub acl_out: Option<String>,
    /// The port's MAC address: what --port-security allows without
    /// --allowed-macs, and what a vhost-user port offers its guest.
    #[arg(long, value_name = "MAC", value_parser = parse_mac)]
    pub mac: Option<MacAddr>,
    /// Port security: drop frames from other source MACs (and, with --ips,
    /// other source IPs) than the port's.
    #[arg(long)]
    pub port_security: bool,
    /// Source MACs port security allows, e.g. 02:00:00:00:00:05,02:00:00:00:00:06
    /// (default: --mac).
    #[arg(long, value_name = "MACS", value_parser = parse_macs)]
    pub allowed_macs: Option<Macs>,
    /// Source IP addresses port security allows, e.g. 10.0.0.5,fd00::5
    /// (default: any; only the MAC is checked).
    #[arg(long, value_name = "IPS", value_parser = parse_ips)]
    pub ips: Option<Ips>,
    /// Receive filter of a vhost-user guest (default true): false lets it
    /// receive every frame, not only those for its MACs, broadcast and the
    /// multicast it asked for. Ignored on other port types.
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub rx_filter: Option<bool>,
    /// Ingress policing: kbit/s the port may send into the switch (0: none).
    #[arg(long, value_name = "KBPS")]
    pub ingress_policing_rate: Option<u64>,
    /// The policer's burst in kbit (0: the default, 8000).
    #[arg(long, value_name = "KBIT")]
    pub ingress_policing_burst: Option<u64>,
    /// Egress rate: kbit/s the switch may send to the port (0: none).
    #[arg(long, value_name = "KBPS")]
    pub egress_rate: Option<u64>,
    /// Storm control: broadcast, multicast and unknown unicast frames per
    /// second the port may send into the switch (0: none).
    #[arg(long, value_name = "PPS")]
    pub storm_pps: Option<u64>,
}

impl PortAddArgs {
    /// The port spec to send.
    pub fn spec(&self) -> PortSpec {
        PortSpec {
            name: self.name.clone(),
            kind: self.kind,
            iface: self.iface.clone(),
            bridge: self.bridge.clone(),
            queues: self.queues,
            socket: self.socket.clone(),
            mode: self.mode,
            rx_path: self.rx_path.clone(),
            tx_path: self.tx_path.clone(),
            pci: self.pci.clone(),
            devargs: self.devargs.clone(),
            socket_mode: self.socket_mode.clone(),
            socket_group: self.socket_group.clone(),
            max_bytes: self.max_bytes,
            ip: self.ip.clone(),
            gateway: self.gateway,
            gateway6: self.gateway6,
            underlay: self.underlay.clone(),
            local_ip: self.local_ip,
            remote_ips: self.remote_ips.clone(),
            vni: self.vni,
            vlan_vni: self.vlan_vni.iter().cloned().collect(),
            dst_port: self.dst_port,
            peer: self.peer.clone(),
            tag: self.tag,
            trunks: self.trunks.clone().unwrap_or_default(),
            vlan_mode: self.vlan_mode,
            acl_in: self.acl_in.clone(),
            acl_out: self.acl_out.clone(),
            mac: self.mac,
            port_security: self.port_security,
            allowed_macs: self.allowed_macs.clone().unwrap_or_default(),
            ips: self.ips.clone().unwrap_or_default(),
            rx_filter: self.rx_filter,
            ingress_policing_rate: self.ingress_policing_rate,
            ingress_policing_burst: self.ingress_policing_burst,
            egress_rate: self.egress_rate,
            storm_pps: self.storm_pps,
        }
    }
}

/// `weir bridge ...`.
#[derive(Debug, Subcommand)]
pub enum BridgeCmd {
    /// Add a bridge.
    Add {
        /// Bridge name.
        name: String,
        #[command(flatten)]
        #[allow(missing_docs)]
        conn: SocketArg,
    },
    /// Delete a bridge.
    Del {
        /// Bridge name.
        name: String,
        #[command(flatten)]
        #[allow(missing_docs)]
        conn: SocketArg,
    },
    /// List bridges.
    List(ShowArgs),
}

/// `weir fdb ...`.
#[derive(Debug, Subcommand)]
pub enum FdbCmd {
    /// Show MAC table entries.
    Show {
        /// Only this bridge.
        #[arg(long, value_name = "BR")]
        bridge: Option<String>,
        #[command(flatten)]
        #[allow(missing_docs)]
        show: ShowArgs,
    },
    /// Remove learned entries.
    Flush {
        /// Only this bridge.
        #[arg(long, value_name = "BR")]
        bridge: Option<String>,
        #[command(flatten)]
        #[allow(missing_docs)]
        conn: SocketArg,
    },
    /// Add a static entry: MAC is behind PORT (never aged or flushed).
    Add {
        /// Bridge.
        bridge: String,
        /// Station MAC address.
        mac: String,
        /// Port on the bridge.
        port: String,
        /// VLAN (default: untagged).
        #[arg(long, value_name = "VID")]
        vlan: Option<u16>,
        /// For a tunnel port: the remote endpoint the station is behind
        /// (one of the port's remote_ips).
        #[arg(long, value_name = "IP")]
        remote: Option<String>,
        #[command(flatten)]
        #[allow(missing_docs)]
        conn: SocketArg,
    },
    /// Remove an entry, static or learned.
    Del {
        /// Bridge.
        bridge: String,
        /// Station MAC address.
        mac: String,
        /// VLAN (default: untagged).
        #[arg(long, value_name = "VID")]
        vlan: Option<u16>,
        #[command(flatten)]
        #[allow(missing_docs)]
        conn: SocketArg,
    },
}

/// `weir ip ...`.
#[derive(Debug, Subcommand)]
pub enum IpCmd {
    /// Show weir's addresses on each port.
    Show(ShowArgs),
}

/// `weir neigh ...`.
#[derive(Debug, Subcommand)]
pub enum NeighCmd {
    /// Show the neighbours weir's host addresses know.
    Show(ShowArgs),
}

/// `weir acl ...`.
#[derive(Debug, Subcommand)]
pub enum AclCmd {
    /// Create an ACL, or replace the one of that name: every port that
    /// uses it switches to the new rules at once.
    Add(AclAddArgs),
    /// Delete an ACL (refused while a port uses it).
    Del {
        /// ACL name.
        name: String,
        #[command(flatten)]
        #[allow(missing_docs)]
        out: ReplyArgs,
    },
    /// List ACLs and the ports that use them.
    List(ShowArgs),
    /// Show an ACL's rules.
    Show {
        /// ACL name.
        name: String,
        #[command(flatten)]
        #[allow(missing_docs)]
        show: ShowArgs,
    },
}

/// `weir mirror ...`.
#[derive(Debug, Subcommand)]
pub enum MirrorCmd {
    /// Add a mirror, or replace the one of that name.
    Add {
        /// Mirror name.
        name: String,
        /// Ports whose received frames are copied (comma-separated).
        #[arg(long, value_name = "P,..", value_delimiter = ',')]
        src: Vec<String>,
        /// Ports whose sent frames are copied (comma-separated).
        #[arg(long, value_name = "P,..", value_delimiter = ',')]
        dst: Vec<String>,
        /// The port the copies are sent on.
        #[arg(long, value_name = "PORT")]
        to: String,
        #[command(flatten)]
        #[allow(missing_docs)]
        out: ReplyArgs,
    },
    /// Delete a mirror.
    Del {
        /// Mirror name.
        name: String,
        #[command(flatten)]
        #[allow(missing_docs)]
        out: ReplyArgs,
    },
    /// List mirrors with the copies each made.
    List(ShowArgs),
}

/// How `--rule` reads a rule, for `acl add --help`.
const RULE_HELP: &str = "\
A rule is words in any order: KEY=VALUE for any key of an [[acl.rule]] table
(direction, ether_type, protocol, src, dst, src_ports, dst_ports, icmp_type,
icmp_code, action), or a bare in, out, both (direction), allow, deny (action),
tcp, udp, icmp, icmpv6, sctp (protocol), ipv4, ipv6, arp (ether_type). Every
rule needs an action. The first rule that matches decides; frames no rule
matches get the default. ARP and IPv6 neighbour discovery pass unless a rule
names them.

Examples:
  weir acl add web --default deny --rule 'in tcp dst_ports=80 allow' \\
      --rule 'in icmp icmp_type=8 allow'
  weir acl add web --file web.toml      # default = \"deny\" and [[rule]] tables
  weir port set vm1 acl_in=web";

/// `weir acl add`.
#[derive(Debug, Args)]
#[command(after_help = RULE_HELP)]
pub struct AclAddArgs {
    /// ACL name.
    pub name: String,
    /// What frames no rule matches get [default: the file's, else deny].
    #[arg(long, value_name = "allow|deny", value_parser = parse_acl_action)]
    pub default: Option<AclAction>,
    /// A rule, e.g. 'in tcp dst_ports=80 allow' (see below); repeat for
    /// more, in order.
    #[arg(long = "rule", value_name = "RULE", value_parser = parse_rule, conflicts_with = "file")]
    pub rules: Vec<AclRuleSpec>,
    /// Read the rules from a TOML file: an optional `default` and
    /// [[rule]] tables with the keys of [[acl.rule]].
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub out: ReplyArgs,
}

impl AclAddArgs {
    /// The table to send: from `--rule`s, or read from `--file` (checked
    /// here, so that a mistake is reported at its line).
    ///
    /// # Errors
    /// The file cannot be read, or its table is invalid.
    pub fn spec(&self) -> anyhow::Result<AclSpec> {
        use anyhow::Context as _;
        let Some(file) = &self.file else {
            return Ok(AclSpec {
                name: self.name.clone(),
                default: self.default.unwrap_or_default(),
                rules: self.rules.clone(),
            });
        };
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        Ok(AclSpec::parse_file(
            &self.name,
            &text,
            &file.display().to_string(),
            self.default,
        )?)
    }

    /// The request `acl add` sends, once its file is read.
    ///
    /// # Errors
    /// As [`AclAddArgs::spec`].
    pub fn client_call(&self) -> anyhow::Result<ClientCall> {
        Ok(ClientCall {
            request: Request::AclAdd(self.spec()?),
            output: self.out.output(),
            socket: self.out.conn.socket.clone(),
        })
    }
}

/// `--json` for the verbs that change something and are quiet otherwise
/// (`port set`, `port clear`, `acl add`, `acl del`).
#[derive(Debug, Clone, Args)]
pub struct ReplyArgs {
    /// Print the reply as JSON: the port's settings after `port set` or
    /// `port clear`, the table after `acl add` (as it was before `acl del`).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub conn: SocketArg,
}

impl ReplyArgs {
    /// How to print the reply.
    fn output(&self) -> Output {
        if self.json {
            Output::Json
        } else {
            Output::Quiet
        }
    }
}

/// An `--default` value.
fn parse_acl_action(arg: &str) -> Result<AclAction, String> {
    arg.parse()
}

/// A `--rule` value.
fn parse_rule(arg: &str) -> Result<AclRuleSpec, String> {
    arg.parse()
}

/// `weir pmd ...`.
#[derive(Debug, Subcommand)]
pub enum PmdCmd {
    /// Show worker threads, their queues and load.
    Show(ShowArgs),
}

/// `weir config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Parse and validate a configuration file.
    Check {
        /// Configuration file.
        file: PathBuf,
        /// Do not require afpacket/afxdp interfaces to exist.
        #[arg(long)]
        no_iface_check: bool,
        /// Print the parsed configuration, defaults filled in, as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the daemon's running configuration (its bridges, ports with
    /// their settings, and ACLs as they are now) as TOML that `weir run
    /// --config` and `weir config check` accept; `--json` prints it as
    /// JSON, as `config check --json` does.
    Dump(ShowArgs),
}

/// How a client verb is carried out.
#[derive(Debug)]
pub struct ClientCall {
    /// The request to send.
    pub request: Request,
    /// How to print a successful reply.
    pub output: Output,
    /// `--socket` given after the verb.
    pub socket: Option<PathBuf>,
}

/// How to print a successful reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Print nothing.
    Quiet,
    /// Print the `data` JSON.
    Json,
    /// Print a table of ports.
    Ports,
    /// Print everything about one port.
    Port,
    /// Print a table of bridges.
    Bridges,
    /// Print a table of FDB entries.
    Fdb,
    /// Print the stats tables.
    Stats,
    /// Print a table of workers.
    Workers,
    /// Print a table of ACLs.
    Acls,
    /// Print one ACL and its rules.
    Acl,
    /// Print a configuration's TOML text as it is.
    Toml,
    /// Print a configuration's TOML text as JSON.
    ConfigJson,
    /// Print a table of mirrors.
    Mirrors,
    /// Print weir's addresses.
    HostIps,
    /// Print a table of neighbours.
    Neighbours,
}

impl Command {
    /// The request a client verb sends, or `None` for local verbs
    /// (`run`, `config check`, `demo`, `devbind`, `sriov`, `doctor`), for
    /// `capture`, which reads a stream ([`crate::capture`]), and for
    /// `acl add`, which may read a file first ([`AclAddArgs::client_call`]).
    pub fn client_call(&self) -> Option<ClientCall> {
        let show = |request, args: &ShowArgs, table| ClientCall {
            request,
            output: if args.json { Output::Json } else { table },
            socket: args.conn.socket.clone(),
        };
        let quiet = |request, conn: &SocketArg| ClientCall {
            request,
            output: Output::Quiet,
            socket: conn.socket.clone(),
        };
        Some(match self {
            Command::Config(ConfigCmd::Dump(args)) => ClientCall {
                request: Request::ConfigDump,
                output: if args.json {
                    Output::ConfigJson
                } else {
                    Output::Toml
                },
                socket: args.conn.socket.clone(),
            },
            Command::Run(_)
            | Command::Config(ConfigCmd::Check { .. })
            | Command::Demo
            | Command::Devbind(_)
            | Command::Sriov(_)
            | Command::Doctor(_)
            | Command::Bench { .. }
            | Command::Version(_)
            | Command::Completions { .. }
            | Command::Man { .. }
            | Command::Capture(_)
            | Command::Acl(AclCmd::Add(_)) => return None,
            Command::Port(PortCmd::Add(args)) => ClientCall {
                request: Request::PortAdd(Box::new(args.spec())),
                output: Output::Quiet,
                socket: None,
            },
            Command::Port(PortCmd::Del { name, conn }) => {
                quiet(Request::PortDel { name: name.clone() }, conn)
            }
            Command::Port(PortCmd::List(args)) => show(Request::PortList, args, Output::Ports),
            Command::Port(PortCmd::Show { name, show: args }) => {
                show(Request::PortShow { name: name.clone() }, args, Output::Port)
            }
            Command::Port(PortCmd::Set {
                name,
                settings,
                out,
            }) => ClientCall {
                request: Request::PortSet {
                    name: name.clone(),
                    settings: settings.iter().cloned().collect(),
                },
                output: out.output(),
                socket: out.conn.socket.clone(),
            },
            Command::Port(PortCmd::Clear { name, keys, out }) => ClientCall {
                request: Request::PortClear {
                    name: name.clone(),
                    keys: keys.clone(),
                },
                output: out.output(),
                socket: out.conn.socket.clone(),
            },
            Command::Bridge(BridgeCmd::Add { name, conn }) => {
                quiet(Request::BridgeAdd { name: name.clone() }, conn)
            }
            Command::Bridge(BridgeCmd::Del { name, conn }) => {
                quiet(Request::BridgeDel { name: name.clone() }, conn)
            }
            Command::Bridge(BridgeCmd::List(args)) => {
                show(Request::BridgeList, args, Output::Bridges)
            }
            Command::Fdb(FdbCmd::Show { bridge, show: args }) => show(
                Request::FdbShow {
                    bridge: bridge.clone(),
                },
                args,
                Output::Fdb,
            ),
            Command::Fdb(FdbCmd::Flush { bridge, conn }) => quiet(
                Request::FdbFlush {
                    bridge: bridge.clone(),
                },
                conn,
            ),
            Command::Fdb(FdbCmd::Add {
                bridge,
                mac,
                port,
                vlan,
                remote,
                conn,
            }) => quiet(
                Request::FdbAdd {
                    bridge: bridge.clone(),
                    mac: mac.clone(),
                    port: port.clone(),
                    vlan: *vlan,
                    remote: remote.clone(),
                },
                conn,
            ),
            Command::Fdb(FdbCmd::Del {
                bridge,
                mac,
                vlan,
                conn,
            }) => quiet(
                Request::FdbDel {
                    bridge: bridge.clone(),
                    mac: mac.clone(),
                    vlan: *vlan,
                },
                conn,
            ),
            Command::Ip(IpCmd::Show(args)) => show(Request::IpShow, args, Output::HostIps),
            Command::Neigh(NeighCmd::Show(args)) => {
                show(Request::NeighShow, args, Output::Neighbours)
            }
            Command::Stats(StatsArgs {
                action: None,
                show: args,
            }) => show(Request::Stats, args, Output::Stats),
            Command::Stats(StatsArgs {
                action: Some(StatsCmd::Clear { port, conn }),
                ..
            }) => quiet(Request::StatsClear { port: port.clone() }, conn),
            Command::Pmd(PmdCmd::Show(args)) => show(Request::PmdShow, args, Output::Workers),
            Command::Acl(AclCmd::Del { name, out }) => ClientCall {
                request: Request::AclDel { name: name.clone() },
                output: out.output(),
                socket: out.conn.socket.clone(),
            },
            Command::Acl(AclCmd::List(args)) => show(Request::AclList, args, Output::Acls),
            Command::Mirror(MirrorCmd::Add {
                name,
                src,
                dst,
                to,
                out,
            }) => ClientCall {
                request: Request::MirrorAdd(MirrorSpec {
                    name: name.clone(),
                    src: src.clone(),
                    dst: dst.clone(),
                    to: to.clone(),
                }),
                output: out.output(),
                socket: out.conn.socket.clone(),
            },
            Command::Mirror(MirrorCmd::Del { name, out }) => ClientCall {
                request: Request::MirrorDel { name: name.clone() },
                output: out.output(),
                socket: out.conn.socket.clone(),
            },
            Command::Mirror(MirrorCmd::List(args)) => {
                show(Request::MirrorList, args, Output::Mirrors)
            }
            Command::Acl(AclCmd::Show { name, show: args }) => {
                show(Request::AclShow { name: name.clone() }, args, Output::Acl)
            }
        })
    }
}

impl Cli {
    /// The control socket: `--socket` after the verb, else before it (or
    /// `WEIR_SOCKET`), else `fallback`.
    pub fn socket_or(&self, after_verb: Option<PathBuf>, fallback: PathBuf) -> PathBuf {
        after_verb
            .or_else(|| self.socket.clone())
            .unwrap_or(fallback)
    }

    /// The control socket for client verbs.
    pub fn client_socket(&self, after_verb: Option<PathBuf>) -> PathBuf {
        self.socket_or(after_verb, PathBuf::from(DEFAULT_SOCKET))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn try_parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("weir").chain(args.iter().copied()))
    }

    fn parse(args: &[&str]) -> Cli {
        try_parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn port_add_maps_to_spec() {
        let cli = parse(&[
            "port",
            "add",
            "vm1",
            "--type",
            "vhost-user",
            "--socket",
            "/tmp/vm1.sock",
            "--mode",
            "client",
            "--bridge",
            "br0",
            "--queues",
            "2",
        ]);
        let call = cli.command.client_call().unwrap();
        let Request::PortAdd(spec) = call.request else {
            panic!("{call:?}")
        };
        assert_eq!(spec.kind, PortType::VhostUser);
        assert_eq!(spec.socket, Some(PathBuf::from("/tmp/vm1.sock")));
        assert_eq!(spec.mode, Some(VhostMode::Client));
        assert_eq!(spec.queues, Some(2));
        // --socket after `port add` is the vhost-user socket, not the control one.
        assert_eq!(
            cli.client_socket(call.socket),
            PathBuf::from(DEFAULT_SOCKET)
        );
    }

    #[test]
    fn port_add_takes_the_vlan_keys() {
        let cli = parse(&[
            "port",
            "add",
            "up",
            "--type",
            "ring",
            "--tag",
            "5",
            "--trunks",
            "20,10",
            "--vlan-mode",
            "native-untagged",
        ]);
        let Request::PortAdd(spec) = cli.command.client_call().unwrap().request else {
            panic!("not a port add")
        };
        assert_eq!(
            (spec.tag, spec.trunks, spec.vlan_mode),
            (Some(5), vec![10, 20], Some(VlanMode::NativeUntagged))
        );
        let err =
            Cli::try_parse_from(["weir", "port", "add", "p", "-t", "ring", "--vlan-mode", "x"])
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("expected one of access, trunk, native-tagged, native-untagged"),
            "{err}"
        );
    }

    #[test]
    fn port_add_takes_the_security_and_limit_keys() {
        let cli = parse(&[
            "port",
            "add",
            "vm1",
            "--type",
            "ring",
            "--mac",
            "02:00:00:00:00:05",
            "--port-security",
            "--allowed-macs",
            "02:00:00:00:00:05,02:00:00:00:00:06",
            "--ips",
            "10.0.0.5,fd00::5",
            "--ingress-policing-rate",
            "20000",
            "--ingress-policing-burst",
            "2000",
            "--egress-rate",
            "10000",
            "--storm-pps",
            "500",
            "--rx-filter",
            "false",
        ]);
        let Request::PortAdd(spec) = cli.command.client_call().unwrap().request else {
            panic!("not a port add")
        };
        assert_eq!(spec.rx_filter, Some(false));
        let mac5 = MacAddr([2, 0, 0, 0, 0, 5]);
        assert_eq!(spec.mac, Some(mac5));
        assert!(spec.port_security);
        assert_eq!(spec.allowed_macs, [mac5, MacAddr([2, 0, 0, 0, 0, 6])]);
        let ips: Ips = vec!["10.0.0.5".parse().unwrap(), "fd00::5".parse().unwrap()];
        assert_eq!(spec.ips, ips);
        assert_eq!(
            (
                spec.ingress_policing_rate,
                spec.ingress_policing_burst,
                spec.egress_rate,
                spec.storm_pps
            ),
            (Some(20_000), Some(2_000), Some(10_000), Some(500))
        );
        // Without the flags, nothing is set.
        let cli = parse(&["port", "add", "p", "-t", "ring"]);
        let Request::PortAdd(spec) = cli.command.client_call().unwrap().request else {
            panic!("not a port add")
        };
        assert_eq!(spec.settings(), PortSettings::default());
        for (flag, value, needle) in [
            ("--mac", "02:00:00:00:05", "invalid mac `02:00:00:00:05`"),
            ("--ips", "10.0.0.5,x", "invalid ips `10.0.0.5,x`"),
            ("--allowed-macs", "x", "invalid allowed_macs `x`"),
            ("--storm-pps", "lots", "--storm-pps"),
        ] {
            let err = Cli::try_parse_from(["weir", "port", "add", "p", "-t", "ring", flag, value])
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{flag}: {err}");
        }
    }

    #[test]
    fn port_show_asks_for_one_port() {
        let call = parse(&["port", "show", "vm1"])
            .command
            .client_call()
            .unwrap();
        assert_eq!(call.output, Output::Port);
        assert_eq!(call.request, Request::PortShow { name: "vm1".into() });
        let call = parse(&["port", "show", "vm1", "--json"])
            .command
            .client_call()
            .unwrap();
        assert_eq!(call.output, Output::Json);
        assert!(Cli::try_parse_from(["weir", "port", "show"]).is_err());
    }

    #[test]
    fn port_set_and_clear_send_keys_as_given() {
        let call = parse(&["port", "set", "vm1", "tag=10", "trunks=10,20", "tag=20"])
            .command
            .client_call()
            .unwrap();
        assert_eq!(call.output, Output::Quiet);
        assert_eq!(
            call.request,
            Request::PortSet {
                name: "vm1".into(),
                settings: [("tag", "20"), ("trunks", "10,20")]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            }
        );
        let call = parse(&["port", "clear", "vm1", "tag", "trunks", "--json"])
            .command
            .client_call()
            .unwrap();
        assert_eq!(call.output, Output::Json);
        assert_eq!(
            call.request,
            Request::PortClear {
                name: "vm1".into(),
                keys: vec!["tag".into(), "trunks".into()],
            }
        );
        for bad in [
            &["port", "set", "vm1"][..],
            &["port", "set", "vm1", "tag"],
            &["port", "clear", "vm1"],
        ] {
            assert!(try_parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn acl_verbs_send_their_requests() {
        let cli = parse(&[
            "acl",
            "add",
            "web",
            "--default",
            "allow",
            "--rule",
            "in tcp dst_ports=22 deny",
            "--rule",
            "out icmp allow",
            "--json",
        ]);
        let Command::Acl(AclCmd::Add(args)) = &cli.command else {
            panic!("{cli:?}")
        };
        assert!(
            cli.command.client_call().is_none(),
            "acl add reads its file first"
        );
        let call = args.client_call().unwrap();
        assert_eq!(call.output, Output::Json);
        let Request::AclAdd(spec) = call.request else {
            panic!("{call:?}")
        };
        assert_eq!(
            (spec.name.as_str(), spec.default),
            ("web", AclAction::Allow)
        );
        let rules: Vec<String> = spec.rules.iter().map(|r| r.to_string()).collect();
        assert_eq!(rules, ["in tcp dst_ports=22 deny", "out icmp allow"]);
        // Without --default: deny.
        let cli = parse(&["acl", "add", "none"]);
        let Command::Acl(AclCmd::Add(args)) = &cli.command else {
            panic!("{cli:?}")
        };
        assert_eq!(args.spec().unwrap(), AclSpec::new("none", AclAction::Deny));
        for (args, request, output) in [
            (
                &["acl", "del", "web"][..],
                Request::AclDel { name: "web".into() },
                Output::Quiet,
            ),
            (&["acl", "list"], Request::AclList, Output::Acls),
            (
                &["acl", "show", "web"],
                Request::AclShow { name: "web".into() },
                Output::Acl,
            ),
            (
                &["acl", "show", "web", "--json"],
                Request::AclShow { name: "web".into() },
                Output::Json,
            ),
        ] {
            let call = parse(args).command.client_call().unwrap();
            assert_eq!((call.request, call.output), (request, output), "{args:?}");
        }
        for (bad, msg) in [
            (
                &["acl", "add", "w", "--rule", "tcp dst_ports=80"][..],
                "has no action",
            ),
            (
                &["acl", "add", "w", "--default", "permit"],
                "unknown action `permit`",
            ),
            (
                &["acl", "add", "w", "--rule", "deny", "--file", "x.toml"],
                "cannot be used with",
            ),
        ] {
            let err = try_parse(bad).unwrap_err().to_string();
            assert!(err.contains(msg), "{bad:?}: {err}");
        }
    }

    #[test]
    fn port_add_takes_the_acl_keys() {
        let cli = parse(&[
            "port",
            "add",
            "vm1",
            "--type",
            "ring",
            "--acl-in",
            "web",
            "--acl-out",
            "db",
        ]);
        let Request::PortAdd(spec) = cli.command.client_call().unwrap().request else {
            panic!("not a port add")
        };
        assert_eq!(
            (spec.acl_in.as_deref(), spec.acl_out.as_deref()),
            (Some("web"), Some("db"))
        );
    }

    #[test]
    fn socket_can_go_before_or_after_the_verb() {
        let cli = parse(&["--socket", "/a.sock", "port", "list"]);
        let call = cli.command.client_call().unwrap();
        assert_eq!(cli.client_socket(call.socket), PathBuf::from("/a.sock"));
        let cli = parse(&[
            "--socket", "/a.sock", "fdb", "show", "--socket", "/b.sock", "--json",
        ]);
        let call = cli.command.client_call().unwrap();
        assert_eq!(call.output, Output::Json);
        assert_eq!(cli.client_socket(call.socket), PathBuf::from("/b.sock"));
    }

    #[test]
    fn show_verbs_pick_outputs() {
        for (args, output) in [
            (&["port", "list"][..], Output::Ports),
            (&["bridge", "list"][..], Output::Bridges),
            (&["fdb", "show", "--bridge", "br0"][..], Output::Fdb),
            (&["stats"][..], Output::Stats),
            (&["pmd", "show"][..], Output::Workers),
            (&["stats", "--json"][..], Output::Json),
            (&["fdb", "flush"][..], Output::Quiet),
        ] {
            let call = parse(args).command.client_call().unwrap();
            assert_eq!(call.output, output, "{args:?}");
        }
        assert!(parse(&["config", "check", "x.toml"])
            .command
            .client_call()
            .is_none());
        for (args, output) in [
            (&["config", "dump"][..], Output::Toml),
            (&["config", "dump", "--json"][..], Output::ConfigJson),
        ] {
            let call = parse(args).command.client_call().unwrap();
            assert_eq!((call.request, call.output), (Request::ConfigDump, output));
        }
        let call = parse(&["config", "dump", "--socket", "/b.sock"])
            .command
            .client_call()
            .unwrap();
        assert_eq!(call.socket, Some(PathBuf::from("/b.sock")));
    }

    #[test]
    fn capture_takes_both_directions_unless_only_drops_are_asked_for() {
        let spec = |args: &[&str]| {
            let Command::Capture(c) = parse(args).command else {
                panic!("not a capture: {args:?}");
            };
            c.spec()
        };
        let s = spec(&["capture", "p1", "-w", "f"]).unwrap();
        assert_eq!((s.rx, s.tx, s.drops, s.count), (true, true, false, None));
        let s = spec(&["capture", "p1", "--drops", "-w", "f"]).unwrap();
        assert_eq!((s.rx, s.tx, s.drops), (false, false, true));
        let s = spec(&["capture", "p1", "--both", "--drops", "-c", "5", "-w", "f"]).unwrap();
        assert_eq!((s.rx, s.tx, s.drops, s.count), (true, true, true, Some(5)));
        let s = spec(&["capture", "p1", "--tx", "--duration", "1.5", "-w", "-"]).unwrap();
        assert_eq!((s.rx, s.tx, s.duration_ms), (false, true, Some(1500)));
        assert!(spec(&["capture", "p1", "-c", "0", "-w", "f"]).is_err());
        for bad in [
            &["capture", "p1", "--rx", "--tx", "-w", "f"][..],
            &["capture", "p1", "--duration", "0", "-w", "f"],
            &["capture", "p1", "--duration", "soon", "-w", "f"],
            &["capture", "p1"],
        ] {
            assert!(try_parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mirror_verbs_send_their_requests() {
        let call = parse(&[
            "mirror", "add", "m1", "--src", "a,b", "--dst", "c", "--to", "span",
        ])
        .command
        .client_call()
        .unwrap();
        assert_eq!(
            call.request,
            Request::MirrorAdd(MirrorSpec {
                name: "m1".into(),
                src: vec!["a".into(), "b".into()],
                dst: vec!["c".into()],
                to: "span".into(),
            })
        );
        let call = parse(&["mirror", "del", "m1"])
            .command
            .client_call()
            .unwrap();
        assert_eq!(call.request, Request::MirrorDel { name: "m1".into() });
        let call = parse(&["mirror", "list"]).command.client_call().unwrap();
        assert_eq!(
            (call.request, call.output),
            (Request::MirrorList, Output::Mirrors)
        );
        let call = parse(&["mirror", "list", "--json"])
            .command
            .client_call()
            .unwrap();
        assert_eq!(call.output, Output::Json);
    }

    #[test]
    fn bad_port_type_is_a_usage_error() {
        let err = Cli::try_parse_from(["weir", "port", "add", "p", "--type", "bogus"]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("vhost-user"), "{msg}");
    }
}
