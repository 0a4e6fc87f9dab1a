//! Command-line interface: argument definitions and the text output of the
//! client verbs.
//!
//! Control plane only. Client verbs turn into one [`Request`] each; show
//! verbs print an aligned table, or the reply's raw `data` with `--json`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use weir_api::{
    BridgeInfo, FdbEntryView, MempoolView, PortInfo, PortStatsView, Request, StatsView, WorkerView,
};
use weir_config::{PortSpec, PortType, VhostMode, DEFAULT_SOCKET};

/// weir: a userspace poll-mode L2 switch.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about, propagate_version = true)]
pub struct Cli {
    /// Control socket of the daemon [default: /run/weir/weir.sock]
    #[arg(long, value_name = "PATH", env = "WEIR_SOCKET")]
    pub socket: Option<PathBuf>,

    /// More log output (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

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
pub enum Command {
    /// Run the daemon in the foreground.
    Run(RunArgs),
    /// Manage ports.
    #[command(subcommand)]
    Port(PortCmd),
    /// Manage bridges.
    #[command(subcommand)]
    Bridge(BridgeCmd),
    /// Inspect or flush MAC learning tables.
    #[command(subcommand)]
    Fdb(FdbCmd),
    /// Show port, worker and buffer pool counters.
    Stats(ShowArgs),
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
    /// Print a table of bridges.
    Bridges,
    /// Print a table of FDB entries.
    Fdb,
    /// Print the stats tables.
    Stats,
    /// Print a table of workers.
    Workers,
}

impl Command {
    /// The request a client verb sends, or `None` for local verbs
    /// (`run`, `config`, `demo`, `devbind`, `sriov`, `doctor`).
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
            Command::Run(_)
            | Command::Config(_)
            | Command::Demo
            | Command::Devbind(_)
            | Command::Sriov(_)
            | Command::Doctor(_)
            | Command::Bench { .. } => return None,
            Command::Port(PortCmd::Add(args)) => ClientCall {
                request: Request::PortAdd(Box::new(args.spec())),
                output: Output::Quiet,
                socket: None,
            },
            Command::Port(PortCmd::Del { name, conn }) => {
                quiet(Request::PortDel { name: name.clone() }, conn)
            }
            Command::Port(PortCmd::List(args)) => show(Request::PortList, args, Output::Ports),
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
            Command::Stats(args) => show(Request::Stats, args, Output::Stats),
            Command::Pmd(PmdCmd::Show(args)) => show(Request::PmdShow, args, Output::Workers),
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

/// Renders a successful reply's `data` for `output`.
///
/// # Errors
///
/// If `data` does not have the shape the output expects.
pub fn render(output: Output, data: Option<serde_json::Value>) -> anyhow::Result<String> {
    use anyhow::Context as _;
    fn decode<T: serde::de::DeserializeOwned>(
        data: Option<serde_json::Value>,
    ) -> anyhow::Result<T> {
        serde_json::from_value(data.unwrap_or(serde_json::Value::Null))
            .context("unexpected reply from weir")
    }
    Ok(match output {
        Output::Quiet => String::new(),
        Output::Json => {
            let mut s = serde_json::to_string_pretty(&data.unwrap_or(serde_json::Value::Null))?;
            s.push('\n');
            s
        }
        Output::Ports => render_ports(&decode::<Vec<PortInfo>>(data)?),
        Output::Bridges => render_bridges(&decode::<Vec<BridgeInfo>>(data)?),
        Output::Fdb => render_fdb(&decode::<Vec<FdbEntryView>>(data)?),
        Output::Stats => render_stats(&decode::<StatsView>(data)?),
        Output::Workers => render_workers(&decode::<Vec<WorkerView>>(data)?),
    })
}

/// A text table with aligned columns.
struct Table {
    headers: Vec<&'static str>,
    /// Per column: right-align (numbers).
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Columns named with a leading `>` are right-aligned.
    fn new(headers: &[&'static str]) -> Self {
        Table {
            right: headers.iter().map(|h| h.starts_with('>')).collect(),
            headers: headers.iter().map(|h| h.trim_start_matches('>')).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self) -> String {
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = widths[i].saturating_sub(width(cell));
                if self.right[i] {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

fn opt(value: &Option<impl ToString>) -> String {
    value
        .as_ref()
        .map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn total_drops(drops: &BTreeMap<String, u64>) -> u64 {
    drops.values().sum()
}

/// `name=count` pairs, or `-`.
fn drop_reasons(drops: &BTreeMap<String, u64>) -> String {
    let parts: Vec<String> = drops
        .iter()
        .filter(|(_, &n)| n > 0)
        .map(|(reason, n)| format!("{reason}={n}"))
        .collect();
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(",")
    }
}

fn render_ports(ports: &[PortInfo]) -> String {
    if ports.is_empty() {
        return "no ports\n".to_owned();
    }
    let mut t = Table::new(&[
        ">ID", "NAME", "TYPE", "BRIDGE", "IFACE", "LINK", ">MTU", ">QUEUES", ">WORKER", ">RX-PKTS",
        ">TX-PKTS", ">DROPS", "STATE",
    ]);
    for p in ports {
        t.row(vec![
            p.id.to_string(),
            p.name.clone(),
            p.kind.clone(),
            opt(&p.bridge),
            opt(&p.iface),
            p.link.clone(),
            opt(&p.mtu),
            p.queues.to_string(),
            opt(&p.worker),
            p.stats.rx_packets.to_string(),
            p.stats.tx_packets.to_string(),
            total_drops(&p.stats.drops).to_string(),
            p.state.clone(),
        ]);
    }
    t.render()
}

fn render_bridges(bridges: &[BridgeInfo]) -> String {
    if bridges.is_empty() {
        return "no bridges\n".to_owned();
    }
    let mut t = Table::new(&["NAME", ">FDB", "PORTS"]);
    for b in bridges {
        let ports = if b.ports.is_empty() {
            "-".to_owned()
        } else {
            b.ports.join(",")
        };
        t.row(vec![b.name.clone(), b.fdb_entries.to_string(), ports]);
    }
    t.render()
}

fn render_fdb(entries: &[FdbEntryView]) -> String {
    if entries.is_empty() {
        return "no FDB entries\n".to_owned();
    }
    let mut t = Table::new(&["BRIDGE", ">VLAN", "MAC", "PORT", ">AGE", "TYPE"]);
    for e in entries {
        t.row(vec![
            e.bridge.clone(),
            e.vlan.to_string(),
            e.mac.clone(),
            e.port.clone(),
            if e.is_static {
                "-".to_owned()
            } else {
                e.age_secs.to_string()
            },
            if e.is_static { "static" } else { "learned" }.to_owned(),
        ]);
    }
    t.render()
}

fn render_workers(workers: &[WorkerView]) -> String {
    if workers.is_empty() {
        return "no workers\n".to_owned();
    }
    let mut t = Table::new(&[
        ">ID",
        ">CPU",
        ">BUSY%",
        ">RX-PKTS",
        ">BURST",
        "CYC/PKT RX+SW+TX",
        "RX-QUEUES",
        "DROPS",
    ]);
    for w in workers {
        let burst = if w.busy_rounds == 0 {
            "-".to_owned()
        } else {
            format!("{:.1}", w.rx_packets as f64 / w.busy_rounds as f64)
        };
        let stages = match w.stages.per_packet() {
            Some((rx, sw, tx)) => format!("{rx:.0}+{sw:.0}+{tx:.0}"),
            None => "-".to_owned(),
        };
        let queues = if w.rx_queues.is_empty() {
            "-".to_owned()
        } else {
            w.rx_queues.join(",")
        };
        t.row(vec![
            w.id.to_string(),
            w.cpu.to_string(),
            format!("{:.1}", w.busy_pct),
            w.rx_packets.to_string(),
            burst,
            stages,
            queues,
            drop_reasons(&w.drops),
        ]);
    }
    t.render()
}

/// One line of `weir stats` for a buffer pool.
fn pool_line(out: &mut String, label: &str, unit: &str, m: &MempoolView) {
    let _ = write!(
        out,
        "{label}: {} of {} {unit} free, {} B data room, {}",
        m.available,
        m.total,
        m.mbuf_size,
        if m.hugepages {
            "hugepages"
        } else {
            "normal pages"
        }
    );
    if let Some(n) = m.port_share {
        let _ = write!(out, ", at most {n} per port");
    }
    out.push('\n');
}

/// Segmentation offload per port, for the ports that saw any: super-frames
/// in, out whole, and cut into segments by weir.
fn render_tso(out: &mut String, ports: &[PortInfo]) {
    let busy = |s: &PortStatsView| s.rx_tso_packets + s.tx_tso_packets + s.tso_segmented > 0;
    if !ports.iter().any(|p| busy(&p.stats)) {
        return;
    }
    let mut t = Table::new(&["PORT", ">RX-TSO", ">TX-TSO", ">SEGMENTED"]);
    for p in ports.iter().filter(|p| busy(&p.stats)) {
        t.row(vec![
            p.name.clone(),
            p.stats.rx_tso_packets.to_string(),
            p.stats.tx_tso_packets.to_string(),
            p.stats.tso_segmented.to_string(),
        ]);
    }
    out.push('\n');
    out.push_str(&t.render());
}

fn render_stats(stats: &StatsView) -> String {
    let mut out = String::new();
    if stats.ports.is_empty() {
        out.push_str("no ports\n");
    } else {
        let mut t = Table::new(&[
            "PORT",
            ">RX-PKTS",
            ">RX-BYTES",
            ">TX-PKTS",
            ">TX-BYTES",
            ">RX-ERR",
            ">TX-ERR",
            "DROPS",
        ]);
        let row = |name: String, s: &PortStatsView| {
            vec![
                name,
                s.rx_packets.to_string(),
                s.rx_bytes.to_string(),
                s.tx_packets.to_string(),
                s.tx_bytes.to_string(),
                s.rx_errors.to_string(),
                s.tx_errors.to_string(),
                drop_reasons(&s.drops),
            ]
        };
        for p in &stats.ports {
            t.row(row(p.name.clone(), &p.stats));
            // Multiqueue ports: one line per queue pair under the total, named
            // `port:queue` as in `pmd show`.
            if p.queue_stats.len() > 1 {
                for (q, s) in p.queue_stats.iter().enumerate() {
                    t.row(row(format!("  {}:{q}", p.name), s));
                }
            }
        }
        out.push_str(&t.render());
        render_tso(&mut out, &stats.ports);
    }
    out.push('\n');
    out.push_str(&render_workers(&stats.workers));
    out.push('\n');
    pool_line(&mut out, "mempool", "mbufs", &stats.mempool);
    if let Some(t) = &stats.tso_pool {
        pool_line(&mut out, "tso pool", "buffers", t);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use weir_api::StageCycles;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("weir").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
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
    }

    #[test]
    fn bad_port_type_is_a_usage_error() {
        let err = Cli::try_parse_from(["weir", "port", "add", "p", "--type", "bogus"]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("vhost-user"), "{msg}");
    }

    fn port(id: u16, name: &str) -> PortInfo {
        PortInfo {
            id,
            name: name.into(),
            kind: "tap".into(),
            bridge: Some("br0".into()),
            iface: None,
            link: "up".into(),
            state: "ok".into(),
            queues: 1,
            worker: Some(0),
            stats: PortStatsView {
                rx_packets: 12345,
                drops: BTreeMap::from([("no-mbuf".into(), 3)]),
                ..Default::default()
            },
            queue_stats: Vec::new(),
            mtu: None,
        }
    }

    #[test]
    fn port_table_is_aligned() {
        let out = render_ports(&[port(0, "p0"), port(1, "a-longer-name")]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ID  NAME "), "{out}");
        let col = lines[0].find("TYPE").unwrap();
        assert_eq!(lines[1].find("tap"), Some(col), "{out}");
        assert_eq!(lines[2].find("tap"), Some(col), "{out}");
        assert!(lines[1].contains("12345"), "{out}");
        assert_eq!(render_ports(&[]), "no ports\n");
    }

    #[test]
    fn port_table_shows_the_mtu_a_frontend_set() {
        let vm = PortInfo {
            kind: "vhost-user".into(),
            mtu: Some(1400),
            ..port(1, "vm1")
        };
        let out = render_ports(&[port(0, "p0"), vm]);
        let lines: Vec<&str> = out.lines().collect();
        let end = lines[0].find("MTU").unwrap() + "MTU".len();
        assert_eq!(
            lines[1][..end].trim_end().chars().last(),
            Some('-'),
            "{out}"
        );
        assert_eq!(&lines[2][end - 4..end], "1400", "{out}");
    }

    #[test]
    fn render_checks_reply_shape() {
        let data = serde_json::to_value(vec![port(0, "p0")]).unwrap();
        assert!(render(Output::Ports, Some(data.clone()))
            .unwrap()
            .contains("p0"));
        assert!(render(Output::Bridges, Some(data.clone())).is_err());
        let json = render(Output::Json, Some(data)).unwrap();
        assert!(json.contains("\"name\": \"p0\""), "{json}");
    }

    #[test]
    fn stats_render_all_sections() {
        let stats = StatsView {
            ports: vec![port(0, "p0")],
            workers: vec![WorkerView {
                id: 0,
                cpu: 3,
                rx_queues: vec!["p0:0".into()],
                busy_cycles: 10,
                idle_cycles: 30,
                busy_pct: 25.0,
                rx_packets: 7,
                drops: BTreeMap::new(),
                busy_rounds: 2,
                stages: StageCycles {
                    rx: 100,
                    switch: 40,
                    tx: 60,
                    packets: 4,
                },
            }],
            mempool: MempoolView {
                total: 1024,
                available: 1000,
                hugepages: false,
                mbuf_size: 2048,
                port_share: None,
            },
            tso_pool: Some(MempoolView {
                total: 256,
                available: 250,
                hugepages: true,
                mbuf_size: 65407,
                port_share: Some(64),
            }),
        };
        let out = render_stats(&stats);
        assert!(
            out.contains(
                "tso pool: 250 of 256 buffers free, 65407 B data room, hugepages, \
                 at most 64 per port\n"
            ),
            "{out}"
        );
        assert!(out.contains("no-mbuf=3"), "{out}");
        assert!(out.contains("25.0"), "{out}");
        assert!(out.contains("25+10+15"), "{out}");
        assert!(out.contains("3.5"), "{out}");
        assert!(out.contains("p0:0"), "{out}");
        assert!(
            out.contains("1000 of 1024 mbufs free, 2048 B data room, normal pages\n"),
            "{out}"
        );
    }

    #[test]
    fn stats_show_each_queue_of_a_multiqueue_port() {
        let mut p = port(0, "vm1");
        p.queues = 2;
        p.queue_stats = vec![
            PortStatsView {
                rx_packets: 11,
                ..Default::default()
            },
            PortStatsView {
                rx_packets: 22,
                ..Default::default()
            },
        ];
        let stats = StatsView {
            ports: vec![p, port(1, "p1")],
            workers: Vec::new(),
            mempool: MempoolView::default(),
            tso_pool: None,
        };
        let out = render_stats(&stats);
        let line = |name: &str| {
            out.lines()
                .find(|l| l.trim_start().starts_with(name))
                .unwrap_or_else(|| panic!("no line for {name}:\n{out}"))
                .to_owned()
        };
        assert!(line("vm1:0").contains(" 11 "), "{out}");
        assert!(line("vm1:1").contains(" 22 "), "{out}");
        assert!(line("vm1 ").contains("12345"), "{out}");
        assert!(
            !out.contains("p1:0"),
            "one queue, no per-queue lines:\n{out}"
        );
    }

    #[test]
    fn stats_show_a_tso_table_only_for_ports_that_saw_super_frames() {
        let mut vm = port(0, "vm");
        vm.stats.rx_tso_packets = 9408;
        vm.stats.tx_tso_packets = 10272;
        let mut pa = port(1, "pa");
        pa.stats.tso_segmented = 7;
        let mut stats = StatsView {
            ports: vec![vm, pa, port(2, "quiet")],
            workers: Vec::new(),
            mempool: MempoolView::default(),
            tso_pool: None,
        };
        let out = render_stats(&stats);
        let header = out
            .lines()
            .position(|l| l.starts_with("PORT") && l.contains("RX-TSO"))
            .unwrap_or_else(|| panic!("no TSO table:\n{out}"));
        let rows: Vec<Vec<&str>> = out.lines().collect::<Vec<_>>()[header + 1..]
            .iter()
            .take_while(|l| !l.is_empty())
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows,
            [vec!["vm", "9408", "10272", "0"], vec!["pa", "0", "0", "7"]],
            "{out}"
        );
        for p in &mut stats.ports {
            p.stats = PortStatsView::default();
        }
        assert!(!render_stats(&stats).contains("RX-TSO"));
    }
}
