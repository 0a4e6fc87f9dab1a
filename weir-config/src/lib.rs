//! weir's configuration: the TOML schema, parsing and validation. Linked by
//! the control API (a `port add` carries a [`PortSpec`]), the runtime, the host
//! checks (`weir doctor`) and the CLI.
//!
//! Control-plane only; never on the packet path. Parsing (`Config::parse`)
//! checks syntax and the schema (unknown keys, types, enum values) and
//! reports errors as `origin:line:col: message`. Validation
//! (`Config::validate_with`) checks what the schema cannot: duplicate names,
//! dangling bridge references, keys required by a port type, CPU lists
//! against the online CPUs and interfaces against sysfs.
//!
//! [`PortSpec`] is shared with the control API (`port add`): the TOML keys,
//! each optional. [`PortSpec::validate`] turns one into a [`PortConfig`], whose
//! [`PortKind`] holds exactly the settings its driver needs, checked and
//! parsed ([`PciAddr`], socket permission bits); [`Config::validate_with`]
//! returns the configuration's ports in that form, and [`ValidConfig::new`]
//! keeps them (and the compiled `[[acl]]` tables) with it as the
//! configuration the daemon starts from. The daemon builds configured and
//! added ports from `PortConfig`s through one code path.
//!
//! A port's switch settings (how the switch treats its frames, whatever its
//! type: VLAN keys `tag`, `trunks`, `vlan_mode`; `mac` and port security,
//! `port_security`, `allowed_macs`, `ips`; a vhost-user guest's receive
//! filter `rx_filter`; rate limits
//! `ingress_policing_rate`, `ingress_policing_burst`, `egress_rate`,
//! `storm_pps`) are [`PortSettings`], the keys `port set` and `port clear`
//! change ([`SETTING_KEYS`]). Validation checks them with the switch's own
//! rules and keeps both forms in the `PortConfig`: as given, and as the
//! switch's `PortPolicy`.
//!
//! Security groups are `[[acl]]` tables ([`acl`]), which ports name in their
//! `acl_in` and `acl_out` settings; [`Config::validated`] compiles them and
//! attaches each port's ([`PortConfig::attach_acls`]).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use dataplane::mempool::{self, HugepagePolicy, MempoolConfig};
use dataplane::switch::police::PortLimits;
/// The burst of a policer without `ingress_policing_burst`, in kbit.
pub use dataplane::switch::police::DEFAULT_POLICING_BURST_KBIT;
use dataplane::switch::security::{PortSecurity, SecurityError, MAX_ALLOWED};
/// The values of `vlan_mode` ([`PortSpec::vlan_mode`]).
pub use dataplane::switch::vlan::VlanMode;
use dataplane::switch::vlan::{PortVlan, VlanError};
use dataplane::switch::Acl;
use dataplane::switch::PortPolicy;
/// The values of `mac` and `allowed_macs` ([`PortSettings::mac`]).
pub use dataplane::MacAddr;
use serde::{Deserialize, Serialize};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

pub mod acl;
pub use acl::{AclAction, AclDirection, AclRuleSpec, AclSpec, AclSpecError};
pub mod fdb;
pub use fdb::{StaticFdb, StaticFdbError, StaticFdbSpec};
pub mod mirror;
pub use mirror::{MirrorError, MirrorSpec};
pub mod overlay;
pub use overlay::{parse_remote_ips, HostIp, IfAddr, TunnelConfig, TunnelKind, VniMap};

/// Default control socket path.
pub const DEFAULT_SOCKET: &str = "/run/weir/weir.sock";
/// Default number of mbufs in the pool.
pub const DEFAULT_MBUFS: u32 = 16384;
/// Largest accepted mbuf pool size.
pub const MAX_MBUFS: u32 = 16 * 1024 * 1024;
/// Default mbuf data room in bytes (the pool's default).
pub const DEFAULT_MBUF_SIZE: u32 = mempool::DEFAULT_DATA_ROOM;
/// Smallest accepted mbuf data room in bytes.
pub const MIN_MBUF_SIZE: u32 = 256;
/// Headroom reserved in front of the data room of every mbuf.
pub const MBUF_HEADROOM: u32 = mempool::DEFAULT_HEADROOM;
/// Largest accepted mbuf data room: the buffer length (headroom included)
/// must fit the 16-bit length fields.
pub const MAX_MBUF_SIZE: u32 = mempool::MAX_DATA_ROOM;
/// Longest accepted idle sleep of a worker, in microseconds.
pub const MAX_IDLE_SLEEP_US: u32 = 100_000;
/// Most 64 KiB TSO buffers (1 GiB).
pub const MAX_TSO_MBUFS: u32 = 16_384;
/// Largest number of queues a port may ask for.
pub const MAX_QUEUES: u16 = 64;
/// Largest accepted FDB size.
pub const MAX_FDB_ENTRIES: u32 = 16 * 1024 * 1024;
/// CPU ids at or above this are rejected as a typo (Linux `NR_CPUS` limit).
pub const MAX_CPU_ID: usize = 8192;
/// Longest Linux interface name (`IFNAMSIZ - 1`).
pub const MAX_IFACE_LEN: usize = 15;
/// Longest port or bridge name.
pub const MAX_NAME_LEN: usize = 32;
/// Most bridges a daemon holds (config and `bridge add` together), well
/// inside what a 16-bit bridge id can name.
pub const MAX_BRIDGES: usize = 4096;
/// Smallest accepted `max_bytes` of a pcap capture file.
pub const MIN_PCAP_MAX_BYTES: u64 = 4096;
/// Default `max_bytes` of a pcap capture file (1 GiB).
pub const DEFAULT_PCAP_MAX_BYTES: u64 = 1 << 30;
/// What a valid port or bridge name looks like, for error messages.
pub const NAME_RULE: &str = "1-32 characters from [A-Za-z0-9_.-]";

/// The whole configuration file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[dataplane]`: workers and buffers.
    #[serde(default)]
    pub dataplane: DataplaneConfig,
    /// `[control]`: the control socket.
    #[serde(default)]
    pub control: ControlConfig,
    /// `[fdb]`: MAC learning table limits, and `[[fdb.static]]` entries.
    #[serde(default)]
    pub fdb: FdbConfig,
    /// `[dpdk]`: DPDK EAL arguments, for `dpdk` ports.
    #[serde(default, skip_serializing_if = "DpdkConfig::is_default")]
    pub dpdk: DpdkConfig,
    /// `[metrics]`: the OpenMetrics endpoint; None (no section) serves none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsConfig>,
    /// `[[bridge]]` tables, in file order.
    #[serde(default, rename = "bridge")]
    pub bridges: Vec<BridgeSpec>,
    /// `[[port]]` tables, in file order.
    #[serde(default, rename = "port")]
    pub ports: Vec<PortSpec>,
    /// `[[acl]]` tables: security groups that ports name in `acl_in` and
    /// `acl_out`.
    #[serde(default, rename = "acl", skip_serializing_if = "Vec::is_empty")]
    pub acls: Vec<AclSpec>,
    /// `[[mirror]]` tables: port mirrors (SPAN).
    #[serde(default, rename = "mirror", skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<MirrorSpec>,
    /// Where the config came from, to point validation errors at lines.
    #[serde(skip)]
    source: Source,
}

/// `[dataplane]` section.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataplaneConfig {
    /// CPUs to run poll-mode workers on, one worker per CPU. `None` means
    /// the last online CPU (see [`DataplaneConfig::worker_cpus`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<CpuList>,
    /// Number of mbufs in the packet buffer pool.
    #[serde(default = "default_mbufs")]
    pub mbufs: u32,
    /// Data room per mbuf in bytes (headroom not included).
    #[serde(default = "default_mbuf_size")]
    pub mbuf_size: u32,
    /// Whether the pool must, may or must not use hugepages.
    #[serde(default)]
    pub hugepages: HugepageMode,
    /// Microseconds a worker sleeps after a long run of empty polls; 0 (the
    /// default) busy-polls without ever sleeping, for the lowest latency.
    #[serde(default)]
    pub idle_sleep_us: u32,
    /// Buffers of 64 KiB for TSO frames from VMs (vhost-user HOST_TSO4/6)
    /// and from the kernel behind `afpacket` and `tap` ports; 0 turns TSO off
    /// on every such port (docs/operations.md, "Kernel ports and offloads").
    #[serde(default = "default_tso_mbufs")]
    pub tso_mbufs: u32,
}

/// Default number of 64 KiB TSO buffers (16 MiB).
pub const DEFAULT_TSO_MBUFS: u32 = 256;

fn default_tso_mbufs() -> u32 {
    DEFAULT_TSO_MBUFS
}

fn default_mbufs() -> u32 {
    DEFAULT_MBUFS
}

fn default_mbuf_size() -> u32 {
    DEFAULT_MBUF_SIZE
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        DataplaneConfig {
            workers: None,
            mbufs: DEFAULT_MBUFS,
            mbuf_size: DEFAULT_MBUF_SIZE,
            hugepages: HugepageMode::default(),
            idle_sleep_us: 0,
            tso_mbufs: DEFAULT_TSO_MBUFS,
        }
    }
}

impl DataplaneConfig {
    /// The packet buffer pool this configuration asks for: the one the
    /// runtime creates and the one `weir doctor` sizes hugepages and locked
    /// memory for.
    pub fn mempool_config(&self) -> MempoolConfig {
        MempoolConfig {
            name: "mbufs".into(),
            n_mbufs: self.mbufs,
            data_room: self.mbuf_size,
            hugepages: self.hugepages.policy(),
            ..MempoolConfig::default()
        }
    }

    /// The CPUs to start workers on: the configured list, or the last
    /// online CPU of `host` when none is configured.
    pub fn worker_cpus(&self, host: &Host) -> Vec<usize> {
        match &self.workers {
            Some(list) => list.cpus().to_vec(),
            None => host.online_cpus().last().copied().into_iter().collect(),
        }
    }
}

/// Hugepage policy for the mbuf pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HugepageMode {
    /// Use hugepages if available, else fall back to normal pages and warn once.
    #[default]
    Auto,
    /// Fail start-up if hugepages cannot be mapped.
    Required,
    /// Always use normal pages.
    Never,
}

impl HugepageMode {
    /// The pool's policy for this mode.
    pub fn policy(self) -> HugepagePolicy {
        match self {
            HugepageMode::Auto => HugepagePolicy::Auto,
            HugepageMode::Required => HugepagePolicy::Required,
            HugepageMode::Never => HugepagePolicy::Never,
        }
    }
}

/// `[control]` section.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// Path of the control socket. `--socket`/`WEIR_SOCKET` override it.
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// Group (name or number) given the control socket, which is then mode
    /// 0660: its members may use every `weir` verb without being root
    /// (monitoring, say). None: mode 0600, the daemon's user only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_group: Option<String>,
    /// The state file: where the daemon saves its running configuration
    /// after every change made over the control socket, and whose bridges,
    /// ports and ACLs replace the file's at start ([`Config::apply_state`];
    /// docs/operations.md, "Persistence"). An absolute path; `None`: changes
    /// last until the daemon stops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<PathBuf>,
}

fn default_socket() -> PathBuf {
    PathBuf::from(DEFAULT_SOCKET)
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            socket: default_socket(),
            socket_group: None,
            state: None,
        }
    }
}

/// `[metrics]` section: the OpenMetrics endpoint (`GET /metrics`), served
/// over HTTP on a control thread. The section's presence turns it on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address and port to listen on; loopback by default, since the
    /// endpoint has no authentication. `weir run --metrics-listen` overrides
    /// it.
    #[serde(default = "default_metrics_listen")]
    pub listen: SocketAddr,
}

/// Where `[metrics]` listens unless `listen` says otherwise.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9477";

fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9477))
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: default_metrics_listen(),
        }
    }
}

/// `[dpdk]` section: settings of the DPDK backend (weir built with the `dpdk`
/// feature), used when the first `dpdk` port opens.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpdkConfig {
    /// Extra DPDK EAL arguments, e.g. `["--no-huge", "-m", "512"]` or
    /// `["-a", "0000:01:00.0"]`. weir always adds `--no-telemetry`, and a
    /// per-process `--file-prefix` and `-l 0` unless given here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub eal_args: Vec<String>,
}

impl DpdkConfig {
    /// Whether no key is set (an empty `[dpdk]` is not written out).
    fn is_default(&self) -> bool {
        *self == DpdkConfig::default()
    }
}

/// `[fdb]` section: limits of the MAC learning table, and the static
/// entries (`[[fdb.static]]` tables, [`fdb`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FdbConfig {
    /// Most entries over all bridges, `1..=16M`.
    #[serde(default = "default_fdb_entries")]
    pub max_entries: u32,
    /// Most learned entries per port; 0 means no per-port limit. Default
    /// 4096, so that one port cannot fill the default table.
    #[serde(default = "default_max_per_port")]
    pub max_per_port: u32,
    /// Seconds after which an unrefreshed learned entry expires (at least 1).
    #[serde(default = "default_aging")]
    pub aging_secs: u32,
    /// New addresses plus station moves one port may learn per second; 0
    /// means no limit. Default 1024.
    #[serde(default = "default_learn_per_sec")]
    pub learn_per_sec: u32,
    /// `[[fdb.static]]` tables: static entries, set once the bridges and
    /// ports are up.
    #[serde(default, rename = "static", skip_serializing_if = "Vec::is_empty")]
    pub statics: Vec<StaticFdbSpec>,
}

fn default_max_per_port() -> u32 {
    dataplane::switch::fdb::DEFAULT_MAX_PER_PORT
}

fn default_learn_per_sec() -> u32 {
    dataplane::switch::fdb::DEFAULT_LEARN_PER_SEC
}

fn default_fdb_entries() -> u32 {
    65536
}

fn default_aging() -> u32 {
    300
}

impl Default for FdbConfig {
    fn default() -> Self {
        FdbConfig {
            max_entries: default_fdb_entries(),
            max_per_port: default_max_per_port(),
            aging_secs: default_aging(),
            learn_per_sec: default_learn_per_sec(),
            statics: Vec::new(),
        }
    }
}

/// One `[[bridge]]` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeSpec {
    /// Bridge name ([`NAME_RULE`]).
    pub name: String,
}

/// Port driver type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PortType {
    /// `AF_PACKET` socket bound to an existing interface (`iface`).
    Afpacket,
    /// `AF_XDP` socket on an existing interface (`iface`).
    Afxdp,
    /// TAP interface created by the daemon (`iface` is its name).
    Tap,
    /// In-memory ring port, for tests and benchmarks.
    Ring,
    /// Replays `rx_path` into the switch and/or captures into `tx_path`.
    Pcap,
    /// vhost-user backend for a VM vNIC (`socket`, `mode`).
    VhostUser,
    /// NIC bound to `vfio-pci` (`pci`).
    Vfio,
    /// Device driven by one of DPDK's PMDs (`devargs`); needs weir built with
    /// the `dpdk` feature.
    Dpdk,
    /// VXLAN tunnel port (RFC 7348) over an underlay port with an `ip`.
    Vxlan,
    /// Geneve tunnel port (RFC 8926) over an underlay port with an `ip`.
    Geneve,
    /// One end of a pair of ports joined in memory (`peer`), as Open
    /// vSwitch's patch ports join bridges.
    Patch,
}

impl PortType {
    /// Every type, in schema order.
    pub const ALL: [PortType; 11] = [
        PortType::Afpacket,
        PortType::Afxdp,
        PortType::Tap,
        PortType::Ring,
        PortType::Pcap,
        PortType::VhostUser,
        PortType::Vfio,
        PortType::Dpdk,
        PortType::Vxlan,
        PortType::Geneve,
        PortType::Patch,
    ];

    /// The name used in configs and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            PortType::Afpacket => "afpacket",
            PortType::Afxdp => "afxdp",
            PortType::Tap => "tap",
            PortType::Ring => "ring",
            PortType::Pcap => "pcap",
            PortType::VhostUser => "vhost-user",
            PortType::Vfio => "vfio",
            PortType::Dpdk => "dpdk",
            PortType::Vxlan => "vxlan",
            PortType::Geneve => "geneve",
            PortType::Patch => "patch",
        }
    }

    /// The type-specific keys this type accepts (besides `name`, `type`,
    /// `bridge` and `queues`, which every type accepts).
    pub fn allowed_keys(self) -> &'static [&'static str] {
        match self {
            PortType::Afpacket | PortType::Afxdp | PortType::Tap => &["iface"],
            PortType::Ring => &[],
            PortType::Pcap => &["rx_path", "tx_path", "max_bytes"],
            PortType::VhostUser => &["socket", "mode", "socket_mode", "socket_group"],
            PortType::Vfio => &["pci"],
            PortType::Dpdk => &["devargs"],
            PortType::Vxlan | PortType::Geneve => &TUNNEL_KEYS,
            PortType::Patch => &["peer"],
        }
    }
}

/// The keys of the tunnel port types.
const TUNNEL_KEYS: [&str; 6] = [
    "underlay",
    "local_ip",
    "remote_ips",
    "vni",
    "vlan_vni",
    "dst_port",
];

impl fmt::Display for PortType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PortType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PortType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = PortType::ALL.iter().map(|t| t.as_str()).collect();
                format!(
                    "unknown port type `{s}`, expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// Which side of a vhost-user connection the daemon plays.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VhostMode {
    /// The daemon listens on `socket`; QEMU connects (the default).
    #[default]
    Server,
    /// The daemon connects to a socket QEMU listens on.
    Client,
}

impl VhostMode {
    /// The name used in configs and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            VhostMode::Server => "server",
            VhostMode::Client => "client",
        }
    }
}

impl fmt::Display for VhostMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for VhostMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [VhostMode::Server, VhostMode::Client]
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| format!("unknown vhost-user mode `{s}`, expected server or client"))
    }
}

/// Declares the keys of a `[[port]]` table once. [`PortSpec`] gets the
/// driver's keys, then every switch setting; [`PortSettings`] the switch
/// settings alone, with the same docs and serde attributes, so that both
/// read and write a key alike; [`SETTING_KEYS`] how `port set` parses each
/// setting (`parse`, an expression of the field's type over the text `v`)
/// and that `port clear` gives it its `Default`. (`#[serde(flatten)]`
/// would share the fields too, but it loses `deny_unknown_fields` and the
/// positions of errors.)
macro_rules! port_keys {
    (
        $(#[$spec_attr:meta])*
        pub struct PortSpec {
            $(#[$name_attr:meta])*
            pub name: String,
            $(#[$kind_attr:meta])*
            pub kind: PortType,
            $(
                $(#[$driver_attr:meta])*
                pub $driver:ident: $driver_ty:ty,
            )*
        }

        $(#[$settings_attr:meta])*
        pub struct PortSettings {
            $(
                $(#[$attr:meta])*
                pub $key:ident: $ty:ty {
                    syntax: $syntax:expr,
                    parse: |$v:ident| $parse:expr,
                }
            )*
        }

        $(#[$keys_attr:meta])*
        pub const SETTING_KEYS;
    ) => {
        $(#[$spec_attr])*
        pub struct PortSpec {
            $(#[$name_attr])*
            pub name: String,
            $(#[$kind_attr])*
            pub kind: PortType,
            $(
                $(#[$driver_attr])*
                pub $driver: $driver_ty,
            )*
            $(
                $(#[$attr])*
                pub $key: $ty,
            )*
        }

        $(#[$settings_attr])*
        pub struct PortSettings {
            $(
                $(#[$attr])*
                pub $key: $ty,
            )*
        }

        impl PortSpec {
            /// A spec with only `name` and `type` set.
            pub fn new(name: impl Into<String>, kind: PortType) -> Self {
                PortSpec {
                    name: name.into(),
                    kind,
                    $($driver: Default::default(),)*
                    $($key: Default::default(),)*
                }
            }

            /// The switch settings among the keys, as written.
            fn written_settings(&self) -> PortSettings {
                PortSettings {
                    $($key: self.$key.clone(),)*
                }
            }

            /// This spec's name, type and driver keys, with `settings` as
            /// its switch settings.
            pub fn with_settings(&self, settings: &PortSettings) -> PortSpec {
                PortSpec {
                    name: self.name.clone(),
                    kind: self.kind,
                    $($driver: self.$driver.clone(),)*
                    $($key: settings.$key.clone(),)*
                }
            }
        }

        $(#[$keys_attr])*
        pub const SETTING_KEYS: &[SettingKey] = &[
            $(
                SettingKey {
                    name: stringify!($key),
                    syntax: $syntax,
                    set: |s, $v| {
                        s.$key = $parse;
                        Ok(())
                    },
                    clear: |s| s.$key = Default::default(),
                },
            )*
        ];
    };
}

port_keys! {
    /// One `[[port]]` table, and the body of a `port-add` request.
    ///
    /// The switch settings ([`PortSettings`]) follow the driver's keys.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct PortSpec {
        /// Port name ([`NAME_RULE`]).
        pub name: String,
        /// Driver type.
        #[serde(rename = "type")]
        pub kind: PortType,
        /// Interface to attach to (afpacket, afxdp) or to create (tap).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub iface: Option<String>,
        /// Bridge to attach the port to; `None` leaves it unattached.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub bridge: Option<String>,
        /// Number of rx/tx queue pairs (`1..=64`); `None` lets the driver choose.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub queues: Option<u16>,
        /// vhost-user socket path.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub socket: Option<PathBuf>,
        /// vhost-user role; `None` means [`VhostMode::Server`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub mode: Option<VhostMode>,
        /// pcap file replayed as received traffic.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub rx_path: Option<PathBuf>,
        /// pcap file that transmitted traffic is written to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub tx_path: Option<PathBuf>,
        /// PCI address of a vfio NIC, `DDDD:BB:DD.F` or `BB:DD.F`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub pci: Option<String>,
        /// DPDK device arguments of a `dpdk` port: a vdev (`net_ring0`,
        /// `net_pcap0,iface=eth0`) or a PCI address, with optional `,key=value`s.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub devargs: Option<String>,
        /// Permissions of a vhost-user server socket, octal (e.g. `"0660"`), so a
        /// QEMU running as another user can connect.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub socket_mode: Option<String>,
        /// Group (name or number) to own a vhost-user server socket.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub socket_group: Option<String>,
        /// Largest size of a pcap port's capture file (`tx_path`), in bytes;
        /// `None` means [`DEFAULT_PCAP_MAX_BYTES`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub max_bytes: Option<u64>,
        /// weir's own addresses on the port's segment, with prefix lengths
        /// (`"192.0.2.1/24"`, or a list with IPv6 too): weir answers ARP, ND
        /// and ping for them, and tunnel ports use the port as their underlay.
        #[serde(default, skip_serializing_if = "Vec::is_empty", with = "overlay::ip_list_key")]
        pub ip: Vec<String>,
        /// IPv4 next hop for addresses outside the port's subnets.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub gateway: Option<std::net::Ipv4Addr>,
        /// IPv6 next hop for addresses outside the port's subnets.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub gateway6: Option<std::net::Ipv6Addr>,
        /// Tunnel: the port (with an `ip`) that carries its packets.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub underlay: Option<String>,
        /// Tunnel: the source address of its packets, one of the underlay's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub local_ip: Option<std::net::Ipv4Addr>,
        /// Tunnel: the remote endpoints, where unknown and broadcast frames
        /// are replicated to.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub remote_ips: Vec<std::net::Ipv4Addr>,
        /// Tunnel: the one VNI of every frame.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub vni: Option<u32>,
        /// Tunnel: a VNI per bridge VLAN (`{ 10 = 5010, 20 = 5020 }`).
        #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        pub vlan_vni: std::collections::BTreeMap<String, u32>,
        /// Tunnel: the UDP destination port; the IANA port of the type by
        /// default (4789, 6081).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub dst_port: Option<u16>,
        /// Patch port: the name of the patch port at the other end.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub peer: Option<String>,
    }

    /// A port's switch settings as given: the keys of a `[[port]]` table (and
    /// of `port add`) that say how the switch treats the port's frames rather
    /// than how its driver opens it. Every port type takes them, and they are
    /// the keys `port set` and `port clear` change at run time
    /// ([`SETTING_KEYS`]). The meaning is Open vSwitch's (`Port` table columns
    /// of the same names); [`PortSettings::validate`] checks them.
    #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct PortSettings {
        /// The access VLAN, or the native VLAN (that of untagged frames) of a
        /// native mode, `1..=4094`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub tag: Option<u16> {
            syntax: "a VLAN id",
            parse: |v| Some(parse_vid("tag", v)?),
        }
        /// The VLANs a trunk or native-mode port carries, ascending, without
        /// duplicates; empty means every VLAN.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub trunks: Vec<u16> {
            syntax: "VLAN ids separated by commas, e.g. 10,20",
            parse: |v| parse_trunks(v)?,
        }
        /// How the port treats VLAN tags; `None` means access if `tag` is set,
        /// trunk otherwise.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "vlan_mode_key"
        )]
        pub vlan_mode: Option<VlanMode> {
            syntax: "access, trunk, native-tagged or native-untagged",
            parse: |v| Some(parse_vlan_mode(v)?),
        }
        /// The security group ([`AclSpec`]) of what the port sends into the
        /// switch, by name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub acl_in: Option<String> {
            syntax: ACL_NAME_SYNTAX,
            parse: |v| Some(parse_acl_name("acl_in", v)?),
        }
        /// The security group of what the switch sends to the port, by name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub acl_out: Option<String> {
            syntax: ACL_NAME_SYNTAX,
            parse: |v| Some(parse_acl_name("acl_out", v)?),
        }
        /// The port's MAC address: what port security allows when
        /// `allowed_macs` is empty, and what a vhost-user port offers its
        /// guest (VIRTIO_NET_F_MAC, to frontends that read the device's
        /// config; QEMU takes its own `-device ...,mac=`).
        #[serde(default, skip_serializing_if = "Option::is_none", with = "mac_key")]
        pub mac: Option<MacAddr> {
            syntax: "a MAC address such as 02:00:00:00:00:05",
            parse: |v| Some(parse_mac("mac", v)?),
        }
        /// Port security: frames from the port must come from its MACs
        /// (`allowed_macs`, else `mac`) and, if `ips` is not empty, from those
        /// addresses; others are dropped.
        #[serde(default, skip_serializing_if = "is_false")]
        pub port_security: bool {
            syntax: "true or false",
            parse: |v| match v.trim() {
                "true" => true,
                "false" => false,
                _ => return Err(invalid("port_security", v)),
            },
        }
        /// The source MACs port security allows; empty means `[mac]`.
        #[serde(default, skip_serializing_if = "Vec::is_empty", with = "macs_key")]
        pub allowed_macs: Vec<MacAddr> {
            syntax: "MAC addresses separated by commas, e.g. 02:00:00:00:00:05,02:00:00:00:00:06",
            parse: |v| parse_list(v, |m| parse_mac("allowed_macs", m))?,
        }
        /// The source IP addresses port security allows; empty means the MAC
        /// alone is checked.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub ips: Vec<IpAddr> {
            syntax: "IPv4 or IPv6 addresses separated by commas, e.g. 10.0.0.5,fd00::5",
            parse: |v| parse_list(v, |a| a.trim().parse().map_err(|_| invalid("ips", v)))?,
        }
        /// Receive filter: `false` lets a vhost-user guest receive every
        /// frame the switch would send it (a nested bridge, VRRP, a guest
        /// running its own switch); none or `true` filters what it gets to
        /// unicast for its `mac` and `allowed_macs`, broadcast and the
        /// multicast it asked for. Ignored on other port types, which are
        /// never filtered.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub rx_filter: Option<bool> {
            syntax: "true or false",
            parse: |v| match v.trim() {
                "true" => Some(true),
                "false" => Some(false),
                _ => return Err(invalid("rx_filter", v)),
            },
        }
        /// Ingress policing: kbit/s the port may send into the switch; 0 or
        /// none is no limit.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub ingress_policing_rate: Option<u64> {
            syntax: "a rate in kbit/s (0: no limit)",
            parse: |v| Some(parse_count("ingress_policing_rate", v)?),
        }
        /// The policer's burst in kbit; 0 or none means
        /// [`DEFAULT_POLICING_BURST_KBIT`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub ingress_policing_burst: Option<u64> {
            syntax: "a burst in kbit (0: the default, 8000)",
            parse: |v| Some(parse_count("ingress_policing_burst", v)?),
        }
        /// Egress rate: kbit/s the switch may send to the port; 0 or none is
        /// no limit.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub egress_rate: Option<u64> {
            syntax: "a rate in kbit/s (0: no limit)",
            parse: |v| Some(parse_count("egress_rate", v)?),
        }
        /// Storm control: broadcast, multicast and unknown unicast frames per
        /// second the port may send into the switch; 0 or none is no limit.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub storm_pps: Option<u64> {
            syntax: "frames per second (0: no limit)",
            parse: |v| Some(parse_count("storm_pps", v)?),
        }
    }

    /// Every key `port set` and `port clear` take, in the order help texts list
    /// them.
    pub const SETTING_KEYS;
}

impl PortSpec {
    /// The switch settings among the keys (the ones `port set` changes),
    /// with `trunks` in order and without duplicates.
    pub fn settings(&self) -> PortSettings {
        let settings = self.written_settings();
        PortSettings {
            trunks: vid_set(settings.trunks),
            ..settings
        }
    }

    /// `max_bytes`, or its default.
    pub fn pcap_max_bytes(&self) -> u64 {
        self.max_bytes.unwrap_or(DEFAULT_PCAP_MAX_BYTES)
    }

    /// `pci` in the form sysfs and VFIO name it ([`PciAddr`]'s display), for
    /// `vfio` ports with a valid address.
    pub fn pci_address(&self) -> Option<String> {
        if self.kind != PortType::Vfio {
            return None;
        }
        let pci: PciAddr = self.pci.as_deref()?.parse().ok()?;
        Some(pci.to_string())
    }

    /// `socket_mode` as permission bits, if set.
    ///
    /// # Errors
    /// Not an octal number of at most 0o777.
    pub fn socket_mode_bits(&self) -> Result<Option<u32>, PortError> {
        let Some(m) = &self.socket_mode else {
            return Ok(None);
        };
        match u32::from_str_radix(m.trim_start_matches("0o"), 8) {
            Ok(bits) if bits <= 0o777 => Ok(Some(bits)),
            _ => Err(PortError::InvalidSocketMode { mode: m.clone() }),
        }
    }

    /// Type-specific keys that are set, by config key name.
    fn present_keys(&self) -> [(&'static str, bool); 17] {
        [
            ("max_bytes", self.max_bytes.is_some()),
            ("socket_mode", self.socket_mode.is_some()),
            ("socket_group", self.socket_group.is_some()),
            ("iface", self.iface.is_some()),
            ("socket", self.socket.is_some()),
            ("mode", self.mode.is_some()),
            ("rx_path", self.rx_path.is_some()),
            ("tx_path", self.tx_path.is_some()),
            ("pci", self.pci.is_some()),
            ("devargs", self.devargs.is_some()),
            ("underlay", self.underlay.is_some()),
            ("local_ip", self.local_ip.is_some()),
            ("remote_ips", !self.remote_ips.is_empty()),
            ("vni", self.vni.is_some()),
            ("vlan_vni", !self.vlan_vni.is_empty()),
            ("dst_port", self.dst_port.is_some()),
            ("peer", self.peer.is_some()),
        ]
    }

    /// Checks the spec on its own and builds its typed form: name, queues,
    /// the keys its type requires or rejects, and (if `host.check_ifaces`)
    /// that afpacket/afxdp interfaces exist. Bridge references are not
    /// checked here: the caller knows which bridges exist.
    ///
    /// # Errors
    ///
    /// The first problem found, as a [`PortError`].
    pub fn validate(&self, host: &Host) -> Result<PortConfig, PortError> {
        if !is_valid_name(&self.name) {
            return Err(PortError::InvalidName {
                name: self.name.clone(),
            });
        }
        if let Some(queues) = self.queues {
            if queues == 0 || queues > MAX_QUEUES {
                return Err(PortError::InvalidQueues { queues });
            }
        }
        let allowed = self.kind.allowed_keys();
        for (key, present) in self.present_keys() {
            if present && !allowed.contains(&key) {
                return Err(PortError::UnexpectedKey {
                    kind: self.kind,
                    key,
                });
            }
        }
        let kind = self.port_kind(host)?;
        let host_ip = HostIp::parse(&self.ip, self.gateway, self.gateway6)?;
        if host_ip.is_some() && matches!(kind, PortKind::Tunnel(_)) {
            return Err(PortError::Overlay {
                key: "ip",
                reason: "weir's addresses live on the underlay port, not on a tunnel".into(),
            });
        }
        let settings = self.settings();
        let policy = kind.policy(&settings)?;
        Ok(PortConfig {
            name: self.name.clone(),
            bridge: self.bridge.clone(),
            queues: self.queues,
            kind,
            written: self.with_settings(&PortSettings::default()),
            host: host_ip,
            settings,
            policy,
        })
    }

    /// The type-specific part of [`PortSpec::validate`]: the keys of
    /// `self.kind`, checked and typed.
    fn port_kind(&self, host: &Host) -> Result<PortKind, PortError> {
        let missing = |keys| PortError::MissingKey {
            kind: self.kind,
            keys,
        };
        let kind = match self.kind {
            PortType::Afpacket | PortType::Afxdp | PortType::Tap => {
                let iface = self.iface.clone().ok_or(missing("`iface`"))?;
                check_iface_name(&iface)?;
                if self.kind != PortType::Tap && host.check_ifaces {
                    let dir = host.sysfs.join("class/net").join(&iface);
                    if !dir.exists() {
                        return Err(PortError::NoSuchInterface { iface, sysfs: dir });
                    }
                }
                match self.kind {
                    PortType::Afpacket => PortKind::AfPacket { iface },
                    PortType::Afxdp => PortKind::AfXdp { iface },
                    _ => PortKind::Tap { iface },
                }
            }
            PortType::Ring => PortKind::Ring,
            PortType::Pcap => {
                if self.rx_path.is_none() && self.tx_path.is_none() {
                    return Err(missing("`rx_path` or `tx_path`"));
                }
                if let Some(b) = self.max_bytes {
                    if b < MIN_PCAP_MAX_BYTES {
                        return Err(PortError::InvalidMaxBytes { max_bytes: b });
                    }
                }
                if self.rx_path.is_some() && self.rx_path == self.tx_path {
                    return Err(PortError::SamePath {
                        first: "rx_path",
                        second: "tx_path",
                    });
                }
                PortKind::Pcap {
                    rx_path: self.rx_path.clone(),
                    tx_path: self.tx_path.clone(),
                    max_bytes: self.pcap_max_bytes(),
                }
            }
            PortType::VhostUser => {
                let socket = self.socket.clone().ok_or(missing("`socket`"))?;
                let socket_mode = self.socket_mode_bits()?;
                let mode = self.mode.unwrap_or_default();
                if mode == VhostMode::Client
                    && (self.socket_mode.is_some() || self.socket_group.is_some())
                {
                    return Err(PortError::ClientSocketOwner);
                }
                PortKind::VhostUser {
                    socket,
                    mode,
                    socket_mode,
                    socket_group: self.socket_group.clone(),
                }
            }
            PortType::Vfio => {
                let pci = self.pci.as_deref().ok_or(missing("`pci`"))?;
                PortKind::Vfio { pci: pci.parse()? }
            }
            PortType::Dpdk => {
                let devargs = self.devargs.as_deref().ok_or(missing("`devargs`"))?;
                let name = devargs.split(',').next().unwrap_or_default();
                if name.is_empty() || devargs.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(PortError::InvalidDevargs {
                        devargs: devargs.to_owned(),
                    });
                }
                PortKind::Dpdk {
                    devargs: devargs.to_owned(),
                }
            }
            PortType::Patch => {
                let peer = self.peer.clone().ok_or(missing("`peer`"))?;
                if !is_valid_name(&peer) || peer == self.name {
                    return Err(PortError::Overlay {
                        key: "peer",
                        reason: format!(
                            "`{peer}` cannot be the other end: it must be another port's name"
                        ),
                    });
                }
                if self.queues.is_some_and(|q| q != 1) {
                    return Err(PortError::Overlay {
                        key: "queues",
                        reason: "a patch port has one queue".into(),
                    });
                }
                PortKind::Patch { peer }
            }
            PortType::Vxlan | PortType::Geneve => {
                let kind = if self.kind == PortType::Vxlan {
                    TunnelKind::Vxlan
                } else {
                    TunnelKind::Geneve
                };
                PortKind::Tunnel(TunnelConfig::parse(
                    kind,
                    self.underlay.as_deref(),
                    self.local_ip,
                    &self.remote_ips,
                    self.vni,
                    &self.vlan_vni,
                    self.dst_port,
                    self.queues,
                )?)
            }
        };
        Ok(kind)
    }
}

/// A validated port: what [`PortSpec::validate`] makes of a `[[port]]` table
/// or a `port add` request. Only the keys its type uses exist, each already
/// checked and parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortConfig {
    /// Port name ([`NAME_RULE`]).
    pub name: String,
    /// Bridge to attach the port to; `None` leaves it unattached.
    pub bridge: Option<String>,
    /// Number of rx/tx queue pairs (`1..=64`); `None` lets the driver choose.
    pub queues: Option<u16>,
    /// The driver and its settings.
    pub kind: PortKind,
    /// The name, type and driver keys as written (socket modes, PCI
    /// addresses and paths in the user's spelling), without the switch
    /// settings (`settings` holds those): what writes the port back out as
    /// a `[[port]]` table ([`PortConfig::spec`]).
    pub written: PortSpec,
    /// weir's own addresses on the port (`ip`, `gateway`, `gateway6`).
    pub host: Option<HostIp>,
    /// The switch settings as given, kept to show them and to change them
    /// (`port set`, `port clear`).
    pub settings: PortSettings,
    /// What `settings` mean to the switch: the port's pipeline settings,
    /// checked ([`PortSettings::validate`]), with the security groups the
    /// settings name once [`PortConfig::attach_acls`] found them (until
    /// then, none).
    pub policy: PortPolicy,
}

/// A port's driver and the settings that driver needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortKind {
    /// `AF_PACKET` socket bound to an existing interface.
    AfPacket {
        /// The interface.
        iface: String,
    },
    /// `AF_XDP` socket on an existing interface.
    AfXdp {
        /// The interface.
        iface: String,
    },
    /// TAP interface created by the daemon.
    Tap {
        /// The interface's name.
        iface: String,
    },
    /// In-memory ring port, for tests and benchmarks.
    Ring,
    /// Replays `rx_path` into the switch and/or captures into `tx_path` (at
    /// least one is set, and they differ).
    Pcap {
        /// pcap file replayed as received traffic.
        rx_path: Option<PathBuf>,
        /// pcap file that transmitted traffic is written to.
        tx_path: Option<PathBuf>,
        /// Largest size of the capture file, in bytes.
        max_bytes: u64,
    },
    /// vhost-user backend for a VM vNIC.
    VhostUser {
        /// The socket path.
        socket: PathBuf,
        /// Which side of the connection the daemon plays.
        mode: VhostMode,
        /// Permission bits of a server socket (at most 0o777).
        socket_mode: Option<u32>,
        /// Group (name or number) to own a server socket.
        socket_group: Option<String>,
    },
    /// NIC bound to `vfio-pci`.
    Vfio {
        /// The PCI function.
        pci: PciAddr,
    },
    /// Device driven by one of DPDK's PMDs.
    Dpdk {
        /// Device name with optional `,key=value` arguments.
        devargs: String,
    },
    /// A VXLAN or Geneve tunnel port.
    Tunnel(TunnelConfig),
    /// One end of a patch pair.
    Patch {
        /// The other end's name.
        peer: String,
    },
}

impl PortKind {
    /// The type name this kind is configured with.
    pub fn port_type(&self) -> PortType {
        match self {
            PortKind::AfPacket { .. } => PortType::Afpacket,
            PortKind::AfXdp { .. } => PortType::Afxdp,
            PortKind::Tap { .. } => PortType::Tap,
            PortKind::Ring => PortType::Ring,
            PortKind::Pcap { .. } => PortType::Pcap,
            PortKind::VhostUser { .. } => PortType::VhostUser,
            PortKind::Vfio { .. } => PortType::Vfio,
            PortKind::Dpdk { .. } => PortType::Dpdk,
            PortKind::Patch { .. } => PortType::Patch,
            PortKind::Tunnel(t) => match t.kind {
                TunnelKind::Vxlan => PortType::Vxlan,
                TunnelKind::Geneve => PortType::Geneve,
            },
        }
    }
}

impl PortConfig {
    /// The port as a `[[port]]` table (and a `port add` request): its keys
    /// as written, with the switch settings it has now.
    pub fn spec(&self) -> PortSpec {
        self.written.with_settings(&self.settings)
    }

    /// The tunnel port with `remote_ips` for its flood list (`port set NAME
    /// remote_ips=...`), checked as a `[[port]]` table's.
    ///
    /// # Errors
    ///
    /// [`PortError::Overlay`]: not a tunnel port, or a list a tunnel cannot
    /// have.
    pub fn with_remote_ips(&self, remote_ips: &[Ipv4Addr]) -> Result<PortConfig, PortError> {
        let PortKind::Tunnel(t) = &self.kind else {
            return Err(PortError::Overlay {
                key: "remote_ips",
                reason: format!(
                    "{} is a {} port: only vxlan and geneve ports have remotes",
                    self.name,
                    self.kind.port_type()
                ),
            });
        };
        let mut p = self.clone();
        p.kind = PortKind::Tunnel(t.with_remote_ips(remote_ips)?);
        p.written.remote_ips = remote_ips.to_vec();
        Ok(p)
    }

    /// Puts the security groups the port's `acl_in` and `acl_out` name into
    /// its policy, looked up by name with `lookup`.
    ///
    /// # Errors
    ///
    /// [`PortError::UnknownAcl`] if `lookup` finds no table of a name; the
    /// policy is not changed then.
    pub fn attach_acls(
        &mut self,
        lookup: impl Fn(&str) -> Option<Arc<Acl>>,
    ) -> Result<(), PortError> {
        (self.policy.acl_in, self.policy.acl_out) = self.settings.acls(lookup)?;
        Ok(())
    }

    /// Queue pairs to open: `queues`, or one.
    pub fn queue_count(&self) -> u16 {
        self.queues.unwrap_or(1).max(1)
    }

    /// The host-side endpoint the port attaches to, as `port list` shows it:
    /// an interface name or a vhost-user socket path.
    pub fn endpoint(&self) -> Option<String> {
        match &self.kind {
            PortKind::AfPacket { iface } | PortKind::AfXdp { iface } | PortKind::Tap { iface } => {
                Some(iface.clone())
            }
            PortKind::VhostUser { socket, .. } => Some(socket.display().to_string()),
            _ => None,
        }
    }

    /// The files and sockets this port creates or uses by path, normalised
    /// lexically (`a//b/./c` is `a/b/c`): a vhost-user socket and pcap files.
    pub fn paths(&self) -> Vec<(&'static str, PathBuf)> {
        let norm = |p: &PathBuf| p.components().collect::<PathBuf>();
        let mut v = Vec::new();
        match &self.kind {
            PortKind::VhostUser { socket, .. } => v.push(("socket", norm(socket))),
            PortKind::Pcap {
                rx_path, tx_path, ..
            } => {
                if let Some(p) = rx_path {
                    v.push(("rx_path", norm(p)));
                }
                if let Some(p) = tx_path {
                    v.push(("tx_path", norm(p)));
                }
            }
            _ => {}
        }
        v
    }

    /// Whether this port and `other` would use one path in conflicting
    /// ways: any two uses of one path, except two ports replaying the same
    /// `rx_path`. Returns the two keys.
    pub fn path_conflict(
        &self,
        other: &PortConfig,
    ) -> Option<(&'static str, &'static str, PathBuf)> {
        for (k1, p1) in self.paths() {
            for (k2, p2) in other.paths() {
                if p1 == p2 && !(k1 == "rx_path" && k2 == "rx_path") {
                    return Some((k1, k2, p1));
                }
            }
        }
        None
    }

    /// The PCI function of a `vfio` port.
    pub fn pci(&self) -> Option<PciAddr> {
        match self.kind {
            PortKind::Vfio { pci } => Some(pci),
            _ => None,
        }
    }

    /// Checks `settings` as the port's new settings (`port set`, `port
    /// clear`): valid on their own ([`PortSettings::validate`]), and a
    /// change the port can take while it exists (a vhost-user port's `mac`
    /// cannot change: its device offered it to the guest). Returns what
    /// they mean to the switch.
    ///
    /// # Errors
    ///
    /// [`PortError::FixedMac`], or what [`PortSettings::validate`] reports.
    pub fn check_settings(&self, settings: &PortSettings) -> Result<PortPolicy, PortError> {
        if matches!(self.kind, PortKind::VhostUser { .. }) && settings.mac != self.settings.mac {
            return Err(PortError::FixedMac);
        }
        self.kind.policy(settings)
    }
}

impl PortKind {
    /// What `settings` mean to the switch on a port of this kind: as
    /// [`PortSettings::validate`] says, but a tunnel port with `vlan_vni`
    /// is a trunk of the VLANs it maps.
    fn policy(&self, settings: &PortSettings) -> Result<PortPolicy, PortError> {
        let mut policy = settings.validate()?;
        if let PortKind::Tunnel(t) = self {
            if let Some(vlan) = t.implied_vlan() {
                if settings.tag.is_some()
                    || !settings.trunks.is_empty()
                    || settings.vlan_mode.is_some()
                {
                    return Err(PortError::Overlay {
                        key: "vlan_vni",
                        reason: "a tunnel port with vlan_vni is a trunk of the VLANs it maps: \
                                 leave tag, trunks and vlan_mode unset"
                            .into(),
                    });
                }
                policy.vlan = vlan;
            }
        }
        Ok(policy)
    }
}

impl PortSettings {
    /// The security groups `acl_in` and `acl_out` name, looked up with
    /// `lookup`. [`PortSettings::validate`] leaves them out of the policy
    /// it builds, since the tables are the configuration's or the daemon's.
    ///
    /// # Errors
    ///
    /// [`PortError::UnknownAcl`] naming the key whose table `lookup` does not
    /// find.
    pub fn acls(&self, lookup: impl Fn(&str) -> Option<Arc<Acl>>) -> Result<PortAcls, PortError> {
        let find = |key: &'static str, name: &Option<String>| match name {
            None => Ok(None),
            Some(n) => lookup(n).map(Some).ok_or_else(|| PortError::UnknownAcl {
                key,
                name: n.clone(),
            }),
        };
        Ok((
            find("acl_in", &self.acl_in)?,
            find("acl_out", &self.acl_out)?,
        ))
    }

    /// Checks the settings together and builds the switch's form of them.
    /// The rules are the switch's own ([`PortVlan::new`],
    /// [`PortSecurity::new`], [`PortLimits::new`]).
    ///
    /// # Errors
    ///
    /// [`PortError::Vlan`] or [`PortError::Security`], naming the key at
    /// fault.
    pub fn validate(&self) -> Result<PortPolicy, PortError> {
        let vlan = PortVlan::new(self.vlan_mode, self.tag, &self.trunks).map_err(|error| {
            let key = match error {
                VlanError::OutOfRange { vid } if self.tag == Some(vid) => "tag",
                VlanError::OutOfRange { .. } | VlanError::AccessWithTrunks => "trunks",
                VlanError::TrunkWithTag => "tag",
                VlanError::NeedsTag { .. } => "vlan_mode",
            };
            PortError::Vlan { key, error }
        })?;
        let security = self.security()?;
        let limits = PortLimits::new(
            self.ingress_policing_rate,
            self.ingress_policing_burst,
            self.egress_rate,
            self.storm_pps,
        );
        Ok(PortPolicy {
            vlan,
            security,
            limits,
            ..PortPolicy::default()
        })
    }

    /// Whether a port whose peer sets receive filters (a vhost-user guest)
    /// has its receive filter: `rx_filter`, true unless set to false.
    pub fn rx_filter_on(&self) -> bool {
        self.rx_filter != Some(false)
    }

    /// The MACs port security allows: `allowed_macs`, or else `mac`.
    pub fn security_macs(&self) -> Vec<MacAddr> {
        if self.allowed_macs.is_empty() {
            self.mac.into_iter().collect()
        } else {
            self.allowed_macs.clone()
        }
    }

    /// Port security's part of [`PortSettings::validate`]: `mac` must be a
    /// station's address (the rule the allowed MACs follow); with
    /// `port_security`, the allowed addresses.
    fn security(&self) -> Result<Option<PortSecurity>, PortError> {
        if let Some(mac) = self.mac {
            PortSecurity::new(&[mac], &[]).map_err(|error| PortError::Security {
                key: "mac",
                error: Box::new(error),
            })?;
        }
        if !self.port_security {
            return Ok(None);
        }
        let macs = self.security_macs();
        PortSecurity::new(&macs, &self.ips)
            .map(Some)
            .map_err(|error| {
                let key = match error {
                    SecurityError::NoMac => "port_security",
                    SecurityError::TooMany { .. } if macs.len() <= MAX_ALLOWED => "ips",
                    SecurityError::GroupMac { .. } | SecurityError::TooMany { .. } => {
                        "allowed_macs"
                    }
                };
                PortError::Security {
                    key,
                    error: Box::new(error),
                }
            })
    }

    /// Sets `key` from its text form (`port set KEY=VALUE`). Other keys are
    /// left alone; the settings are not checked together
    /// ([`PortSettings::validate`]).
    ///
    /// # Errors
    ///
    /// [`PortError::UnknownSetting`] or [`PortError::InvalidSetting`] (and
    /// [`PortError::UnknownVlanMode`] for `vlan_mode`).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), PortError> {
        (setting_key(key)?.set)(self, value)
    }

    /// Removes `key` (`port clear`), giving it its default.
    ///
    /// # Errors
    ///
    /// [`PortError::UnknownSetting`].
    pub fn clear(&mut self, key: &str) -> Result<(), PortError> {
        (setting_key(key)?.clear)(self);
        Ok(())
    }
}

/// A port's security groups, as [`PortSettings::acls`] finds them: the
/// table of `acl_in`, then that of `acl_out`.
pub type PortAcls = (Option<Arc<Acl>>, Option<Arc<Acl>>);

/// One key of [`PortSettings`] as `port set` and `port clear` handle it.
#[derive(Clone, Copy, Debug)]
pub struct SettingKey {
    /// The key, as in a `[[port]]` table.
    pub name: &'static str,
    /// What a value looks like, for help texts and errors.
    pub syntax: &'static str,
    /// Parses a value into the settings.
    set: fn(&mut PortSettings, &str) -> Result<(), PortError>,
    /// Gives the key its default.
    clear: fn(&mut PortSettings),
}

/// What an `acl_in` or `acl_out` value looks like.
const ACL_NAME_SYNTAX: &str = "the name of an ACL (an [[acl]] table or `weir acl add`)";

/// An ACL's name as the value of `key`.
fn parse_acl_name(key: &'static str, text: &str) -> Result<String, PortError> {
    if is_valid_name(text) {
        Ok(text.to_owned())
    } else {
        Err(PortError::InvalidSetting {
            key,
            value: text.to_owned(),
        })
    }
}

/// [`PortError::InvalidSetting`] for `value` of `key`.
fn invalid(key: &'static str, value: &str) -> PortError {
    PortError::InvalidSetting {
        key,
        value: value.to_owned(),
    }
}

/// A MAC address written as six hex octets, as the value of `key`.
fn parse_mac(key: &'static str, text: &str) -> Result<MacAddr, PortError> {
    text.trim().parse().map_err(|_| invalid(key, text))
}

/// A decimal count (a rate, a burst), as the value of `key`.
fn parse_count(key: &'static str, text: &str) -> Result<u64, PortError> {
    text.trim().parse().map_err(|_| invalid(key, text))
}

/// Items separated by commas, each parsed by `item`; an empty text is the
/// empty list.
fn parse_list<T>(
    text: &str,
    item: impl Fn(&str) -> Result<T, PortError>,
) -> Result<Vec<T>, PortError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    text.split(',').map(item).collect()
}

/// `skip_serializing_if` for flags that are off by default.
fn is_false(b: &bool) -> bool {
    !*b
}

/// The entry of [`SETTING_KEYS`] named `key`.
fn setting_key(key: &str) -> Result<&'static SettingKey, PortError> {
    SETTING_KEYS
        .iter()
        .find(|k| k.name == key)
        .ok_or_else(|| PortError::UnknownSetting {
            key: key.to_owned(),
        })
}

/// What a value of `key` looks like, for messages.
fn setting_syntax(key: &str) -> &'static str {
    setting_key(key).map_or("", |k| k.syntax)
}

/// The names of [`SETTING_KEYS`], for messages.
fn setting_names() -> String {
    let names: Vec<&str> = SETTING_KEYS.iter().map(|k| k.name).collect();
    names.join(", ")
}

/// The names of the VLAN modes, for messages.
fn vlan_mode_names() -> String {
    let names: Vec<&str> = VlanMode::ALL.iter().map(|m| m.name()).collect();
    names.join(", ")
}

/// The VLAN mode named `name` (`access`, `trunk`, `native-tagged`,
/// `native-untagged`).
///
/// # Errors
///
/// [`PortError::UnknownVlanMode`], listing the names.
pub fn parse_vlan_mode(name: &str) -> Result<VlanMode, PortError> {
    VlanMode::from_name(name).ok_or_else(|| PortError::UnknownVlanMode {
        mode: name.to_owned(),
    })
}

/// A VLAN id written in decimal, as the value of `key`. The range is
/// checked with the other settings ([`PortSettings::validate`]).
fn parse_vid(key: &'static str, text: &str) -> Result<u16, PortError> {
    text.trim().parse().map_err(|_| PortError::InvalidSetting {
        key,
        value: text.to_owned(),
    })
}

/// A `trunks` value written as VLAN ids separated by commas (`10,20`),
/// sorted and without duplicates; an empty text is the empty list (every
/// VLAN).
///
/// # Errors
///
/// [`PortError::InvalidSetting`] for an item that is not a number.
pub fn parse_trunks(text: &str) -> Result<Vec<u16>, PortError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let vids = text
        .split(',')
        .map(|v| parse_vid("trunks", v))
        .collect::<Result<Vec<u16>, PortError>>()
        .map_err(|_| PortError::InvalidSetting {
            key: "trunks",
            value: text.to_owned(),
        })?;
    Ok(vid_set(vids))
}

/// `vids` sorted, without duplicates.
fn vid_set(mut vids: Vec<u16>) -> Vec<u16> {
    vids.sort_unstable();
    vids.dedup();
    vids
}

/// Serde form of `vlan_mode`: the mode's name.
mod vlan_mode_key {
    use super::{parse_vlan_mode, VlanMode};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(mode: &Option<VlanMode>, s: S) -> Result<S::Ok, S::Error> {
        match mode {
            Some(m) => s.serialize_str(m.name()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<VlanMode>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(name) => parse_vlan_mode(&name)
                .map(Some)
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

/// Serde form of `mac`: the address's text (`02:00:00:00:00:05`).
mod mac_key {
    use super::MacAddr;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(mac: &Option<MacAddr>, s: S) -> Result<S::Ok, S::Error> {
        match mac {
            Some(m) => s.collect_str(m),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<MacAddr>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(text) => text.parse().map(Some).map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

/// Serde form of `allowed_macs`: a list of addresses' texts.
mod macs_key {
    use super::MacAddr;
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(macs: &[MacAddr], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(macs.len()))?;
        for m in macs {
            seq.serialize_element(&m.to_string())?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<MacAddr>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|t| t.parse().map_err(serde::de::Error::custom))
            .collect()
    }
}

/// Why a [`PortSpec`] is invalid on its own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PortError {
    /// The name does not match [`NAME_RULE`].
    #[error("invalid port name `{name}`: must be {NAME_RULE}")]
    InvalidName {
        /// The rejected name.
        name: String,
    },
    /// A key the type needs is missing.
    #[error("port type `{kind}` requires {keys}")]
    MissingKey {
        /// The port type.
        kind: PortType,
        /// The missing key(s), already quoted.
        keys: &'static str,
    },
    /// A key that the type does not use is set.
    #[error("key `{key}` does not apply to port type `{kind}`")]
    UnexpectedKey {
        /// The port type.
        kind: PortType,
        /// The offending key.
        key: &'static str,
    },
    /// `queues` is out of range.
    #[error("queues = {queues} is out of range (1..={MAX_QUEUES})")]
    InvalidQueues {
        /// The rejected value.
        queues: u16,
    },
    /// The interface name cannot be a Linux interface name.
    #[error("invalid interface name `{iface}`: {reason}")]
    InvalidIface {
        /// The rejected name.
        iface: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An afpacket/afxdp interface does not exist.
    #[error("interface `{iface}` does not exist (no {})", sysfs.display())]
    NoSuchInterface {
        /// The missing interface.
        iface: String,
        /// The sysfs path that was checked.
        sysfs: PathBuf,
    },
    /// The PCI address is malformed.
    #[error(transparent)]
    InvalidPci(#[from] PciAddrError),
    /// `socket_mode` is not octal permission bits.
    #[error("invalid socket_mode `{mode}`: expected octal permissions such as \"0660\"")]
    InvalidSocketMode {
        /// The rejected value.
        mode: String,
    },
    /// `devargs` has no device name or contains whitespace or control characters.
    #[error(
        "invalid devargs `{devargs}`: expected a device name (e.g. `net_ring0` or \
         `0000:01:00.0`) with optional `,key=value` arguments, without whitespace"
    )]
    InvalidDevargs {
        /// The rejected value.
        devargs: String,
    },
    /// `max_bytes` is below [`MIN_PCAP_MAX_BYTES`].
    #[error("max_bytes = {max_bytes} is too small (at least {MIN_PCAP_MAX_BYTES})")]
    InvalidMaxBytes {
        /// The rejected value.
        max_bytes: u64,
    },
    /// Two keys of the port name one path.
    #[error("`{first}` and `{second}` name the same file")]
    SamePath {
        /// The first key.
        first: &'static str,
        /// The second key.
        second: &'static str,
    },
    /// Ownership keys on a socket weir does not create.
    #[error(
        "socket_mode and socket_group apply to server-mode sockets only: in client mode the \
         frontend (QEMU) creates the socket"
    )]
    ClientSocketOwner,
    /// The VLAN settings (`tag`, `trunks`, `vlan_mode`) do not go together,
    /// or name an id out of range; the reason is the switch's own.
    #[error("{error}")]
    Vlan {
        /// The key at fault.
        key: &'static str,
        /// Why the switch refuses the settings.
        error: VlanError,
    },
    /// `vlan_mode` names no mode.
    #[error("unknown vlan_mode `{mode}`, expected one of {}", vlan_mode_names())]
    UnknownVlanMode {
        /// The name given.
        mode: String,
    },
    /// `port set` or `port clear` of a key that is not a switch setting.
    #[error(
        "unknown key `{key}`: the keys a port set or clear can change are {}; \
         port set also takes remote_ips on a tunnel port",
        setting_names()
    )]
    UnknownSetting {
        /// The key given.
        key: String,
    },
    /// A `port set` value that does not parse.
    #[error("invalid {key} `{value}`: expected {}", setting_syntax(key))]
    InvalidSetting {
        /// The key.
        key: &'static str,
        /// The value given.
        value: String,
    },
    /// `acl_in` or `acl_out` names no ACL.
    #[error("{key}: no ACL named `{name}`")]
    UnknownAcl {
        /// The key.
        key: &'static str,
        /// The name given.
        name: String,
    },
    /// The port security settings (`mac`, `port_security`, `allowed_macs`,
    /// `ips`) are refused; the reason is the switch's own.
    #[error("{error}")]
    Security {
        /// The key at fault.
        key: &'static str,
        /// Why the switch refuses them (boxed: the larger reasons would
        /// make every `ConfigError` larger).
        error: Box<SecurityError>,
    },
    /// `port set` or `port clear` of `mac` on a vhost-user port.
    #[error(
        "the mac of a vhost-user port cannot change while the port exists: its device offered \
         it to the guest when it was created (delete the port and add it again with the new \
         mac; to change what port security allows, set allowed_macs)"
    )]
    FixedMac,
    /// An overlay key (`ip`, `gateway`, `gateway6`, or a tunnel's) is refused.
    #[error("{key}: {reason}")]
    Overlay {
        /// The key at fault.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

impl PortError {
    /// The config key the error is about, if it is about one key.
    pub fn key(&self) -> Option<&'static str> {
        match self {
            PortError::InvalidName { .. } => Some("name"),
            PortError::MissingKey { .. } => None,
            PortError::UnexpectedKey { key, .. } => Some(key),
            PortError::InvalidQueues { .. } => Some("queues"),
            PortError::InvalidIface { .. } | PortError::NoSuchInterface { .. } => Some("iface"),
            PortError::InvalidPci(_) => Some("pci"),
            PortError::InvalidDevargs { .. } => Some("devargs"),
            PortError::InvalidSocketMode { .. } => Some("socket_mode"),
            PortError::ClientSocketOwner => None,
            PortError::InvalidMaxBytes { .. } => Some("max_bytes"),
            PortError::SamePath { second, .. } => Some(second),
            PortError::Vlan { key, .. }
            | PortError::InvalidSetting { key, .. }
            | PortError::UnknownAcl { key, .. } => Some(key),
            PortError::UnknownVlanMode { .. } => Some("vlan_mode"),
            PortError::UnknownSetting { .. } => None,
            PortError::Security { key, .. } => Some(key),
            PortError::FixedMac => Some("mac"),
            PortError::Overlay { key, .. } => Some(key),
        }
    }
}

/// Whether `name` is a valid port or bridge name ([`NAME_RULE`]).
pub fn is_valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Checks `iface` against the kernel's rules for interface names
/// (`dev_valid_name`), which also keeps it from escaping `/sys/class/net`.
fn check_iface_name(iface: &str) -> Result<(), PortError> {
    let reason = if iface.is_empty() {
        Some("empty")
    } else if iface.len() > MAX_IFACE_LEN {
        Some("longer than 15 bytes")
    } else if iface == "." || iface == ".." {
        Some("reserved name")
    } else if iface
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        Some("contains '/', ':', whitespace or a control character")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(PortError::InvalidIface {
            iface: iface.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// A PCI function address (`domain:bus:device.function`), parsed from
/// `DDDD:BB:DD.F` or `BB:DD.F` in either case and shown as sysfs names it
/// (`0000:03:00.0`: lower-case hex, with the domain).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PciAddr {
    domain: u16,
    bus: u8,
    device: u8,
    function: u8,
}

/// Why a string is not a [`PciAddr`] (a port's `pci` key:
/// [`PortError::InvalidPci`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid PCI address `{0}`: expected DDDD:BB:DD.F or BB:DD.F (hex)")]
pub struct PciAddrError(String);

impl FromStr for PciAddr {
    type Err = PciAddrError;

    fn from_str(pci: &str) -> Result<Self, Self::Err> {
        let bad = || PciAddrError(pci.to_owned());
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        let parts: Vec<&str> = pci.split(':').collect();
        let (domain, bus, devfn) = match parts.as_slice() {
            [domain, bus, devfn] if hex(domain, 4) => (*domain, *bus, *devfn),
            [bus, devfn] => ("0000", *bus, *devfn),
            _ => return Err(bad()),
        };
        let (dev, func) = devfn.split_once('.').ok_or_else(bad)?;
        if !(hex(bus, 2) && hex(dev, 2) && func.len() == 1) {
            return Err(bad());
        }
        let num = |s: &str| u16::from_str_radix(s, 16).map_err(|_| bad());
        let (domain, bus, device, function) = (num(domain)?, num(bus)?, num(dev)?, num(func)?);
        if device >= 32 || function >= 8 {
            return Err(bad());
        }
        // In range: two hex digits, and checked above.
        Ok(PciAddr {
            domain,
            bus: bus as u8,
            device: device as u8,
            function: function as u8,
        })
    }
}

impl fmt::Display for PciAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

/// A set of CPU ids written as a Linux CPU list (`"1"`, `"0-1"`, `"2,4-5"`).
/// Sorted, without duplicates, never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuList(Vec<usize>);

impl CpuList {
    /// The CPU ids, ascending.
    pub fn cpus(&self) -> &[usize] {
        &self.0
    }
}

impl FromStr for CpuList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: String| format!("invalid CPU list `{s}`: {why}");
        let parse_id = |t: &str| -> Result<usize, String> {
            let t = t.trim();
            let id: usize = t
                .parse()
                .map_err(|_| bad(format!("`{t}` is not a CPU number")))?;
            if id >= MAX_CPU_ID {
                return Err(bad(format!(
                    "CPU {id} is out of range (max {})",
                    MAX_CPU_ID - 1
                )));
            }
            Ok(id)
        };
        let mut cpus = Vec::new();
        for item in s.split(',') {
            if item.trim().is_empty() {
                return Err(bad(
                    "empty item (expected e.g. \"1\", \"0-1\" or \"2,4-5\")".into(),
                ));
            }
            match item.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (parse_id(lo)?, parse_id(hi)?);
                    if lo > hi {
                        return Err(bad(format!("range {lo}-{hi} is reversed")));
                    }
                    cpus.extend(lo..=hi);
                }
                None => cpus.push(parse_id(item)?),
            }
        }
        cpus.sort_unstable();
        cpus.dedup();
        Ok(CpuList(cpus))
    }
}

impl fmt::Display for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut i = 0;
        while i < self.0.len() {
            let start = self.0[i];
            let mut end = start;
            while i + 1 < self.0.len() && self.0[i + 1] == end + 1 {
                i += 1;
                end = self.0[i];
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
            i += 1;
        }
        Ok(())
    }
}

impl Serialize for CpuList {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CpuList {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = CpuList;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a CPU list string such as \"1\", \"0-1\" or \"2,4-5\"")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<CpuList, E> {
                v.parse().map_err(E::custom)
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<CpuList, E> {
                v.to_string().parse().map_err(E::custom)
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<CpuList, E> {
                v.to_string().parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// The parts of the running machine that validation looks at.
#[derive(Clone, Debug)]
pub struct Host {
    /// Root of sysfs (`/sys`); tests point it at a fake tree.
    pub sysfs: PathBuf,
    /// Whether afpacket/afxdp interfaces must exist.
    pub check_ifaces: bool,
}

impl Host {
    /// The real machine: `/sys`, interface checks on.
    pub fn system() -> Self {
        Host {
            sysfs: PathBuf::from("/sys"),
            check_ifaces: true,
        }
    }

    /// Online CPU ids from `<sysfs>/devices/system/cpu/online`, or
    /// `0..available_parallelism` if that cannot be read.
    pub fn online_cpus(&self) -> Vec<usize> {
        let path = self.sysfs.join("devices/system/cpu/online");
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(list) = text.trim().parse::<CpuList>() {
                return list.0;
            }
        }
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        (0..n).collect()
    }
}

impl Default for Host {
    fn default() -> Self {
        Host::system()
    }
}

/// A position in a config file, printed as `origin:line:col` (1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// File name (or another label for where the text came from).
    pub origin: String,
    /// `(line, column)`, both 1-based, if known.
    pub pos: Option<(usize, usize)>,
}

impl Location {
    fn new(origin: &str, text: &str, span: Option<Range<usize>>) -> Self {
        Location {
            origin: origin.to_owned(),
            pos: span.map(|s| line_col(text, s.start)),
        }
    }

    /// The 1-based line, if known.
    pub fn line(&self) -> Option<usize> {
        self.pos.map(|(line, _)| line)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pos {
            Some((line, col)) => write!(f, "{}:{line}:{col}", self.origin),
            None => f.write_str(&self.origin),
        }
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

fn first_line_note(line: &Option<usize>) -> String {
    match line {
        Some(line) => format!(" (first defined on line {line})"),
        None => String::new(),
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// TOML syntax or schema error: unknown key, wrong type, bad enum
    /// value, missing required key, malformed CPU list.
    #[error("{at}: {message}")]
    Parse {
        /// Where.
        at: Location,
        /// What, naming the key.
        message: String,
    },
    /// Two ports share a name.
    #[error("{at}: duplicate port name `{name}`{}", first_line_note(.first_line))]
    DuplicatePort {
        /// The second definition.
        at: Location,
        /// The name.
        name: String,
        /// Line of the first definition.
        first_line: Option<usize>,
    },
    /// Two ports name the same PCI function.
    #[error("{at}: port `{port}` uses PCI function {pci}, as port `{first}` does; a function can back one port only")]
    DuplicatePci {
        /// The second port's `pci` key.
        at: Location,
        /// The second port.
        port: String,
        /// The function, canonical form.
        pci: String,
        /// The first port using it.
        first: String,
    },
    /// Two bridges share a name.
    #[error("{at}: duplicate bridge name `{name}`{}", first_line_note(.first_line))]
    DuplicateBridge {
        /// The second definition.
        at: Location,
        /// The name.
        name: String,
        /// Line of the first definition.
        first_line: Option<usize>,
    },
    /// A bridge name does not match [`NAME_RULE`].
    #[error("{at}: invalid bridge name `{name}`: must be {NAME_RULE}")]
    InvalidBridgeName {
        /// Where.
        at: Location,
        /// The name.
        name: String,
    },
    /// Two ports use one path (socket or capture file), or a port uses the
    /// control socket's path.
    #[error("{at}: port `{port}`: {what}")]
    DuplicatePath {
        /// The second use.
        at: Location,
        /// The second port.
        port: String,
        /// The key, the path and its first user, e.g. ``"`socket` /run/a.sock
        /// is already used as `socket` of port `p0`"``.
        what: String,
    },
    /// More bridges than [`MAX_BRIDGES`].
    #[error("{at}: {count} bridges, more than the {MAX_BRIDGES} a daemon can hold")]
    TooManyBridges {
        /// The first bridge over the limit.
        at: Location,
        /// How many the config defines.
        count: usize,
    },
    /// A port names a bridge that no `[[bridge]]` defines.
    #[error("{at}: port `{port}` refers to undefined bridge `{bridge}`")]
    UndefinedBridge {
        /// The port's `bridge` key.
        at: Location,
        /// The port.
        port: String,
        /// The missing bridge.
        bridge: String,
    },
    /// A port is invalid on its own.
    #[error("{at}: port `{port}`: {error}")]
    Port {
        /// The offending key, or the port's table.
        at: Location,
        /// The port.
        port: String,
        /// What is wrong.
        error: PortError,
    },
    /// A worker CPU is not online.
    #[error("{at}: CPU {cpu} in `dataplane.workers` is not online (online: {online})")]
    CpuNotPresent {
        /// The `workers` key.
        at: Location,
        /// The missing CPU.
        cpu: usize,
        /// The online CPUs.
        online: String,
    },
    /// Two ACLs share a name.
    #[error("{at}: duplicate ACL name `{name}`{}", first_line_note(.first_line))]
    DuplicateAcl {
        /// The second definition.
        at: Location,
        /// The name.
        name: String,
        /// Line of the first definition.
        first_line: Option<usize>,
    },
    /// An ACL is refused: its name, or a rule the switch cannot apply.
    #[error("{at}: acl `{acl}`: {error}")]
    Acl {
        /// The rule's key at fault, or the table.
        at: Location,
        /// The ACL.
        acl: String,
        /// What is wrong.
        error: AclSpecError,
    },
    /// `control.state` is a relative path.
    #[error("{at}: `control.state` {} must be an absolute path (a relative one would name another file whenever the daemon starts in another directory)", path.display())]
    RelativeState {
        /// The `state` key.
        at: Location,
        /// The path.
        path: PathBuf,
    },
    /// The state file exists but cannot be read, or is empty. The daemon
    /// refuses to start rather than drop the ports saved there.
    #[error("cannot read state file {}: {reason} (it holds the running configuration the last daemon saved; repair it, or remove it to start from the config file's bridges, ports, ACLs, mirrors and static FDB entries)", path.display())]
    ReadState {
        /// The file.
        path: PathBuf,
        /// Why (the I/O error, or that it is empty).
        reason: String,
    },
    /// Two mirrors share a name.
    #[error("{at}: duplicate mirror name `{name}`{}", first_line_note(.first_line))]
    DuplicateMirror {
        /// The second definition.
        at: Location,
        /// The name.
        name: String,
        /// Line of the first definition.
        first_line: Option<usize>,
    },
    /// A mirror is refused.
    #[error("{at}: mirror `{mirror}`: {error}")]
    Mirror {
        /// The key at fault, or the table.
        at: Location,
        /// The mirror.
        mirror: String,
        /// What is wrong (boxed: the error type stays small).
        error: Box<MirrorError>,
    },
    /// Two static FDB entries for one station (bridge, VLAN and MAC).
    #[error("{at}: a second static entry for {mac} in VLAN {vlan} of bridge `{bridge}`{}", first_line_note(.first_line))]
    DuplicateStaticFdb {
        /// The second entry's `mac`.
        at: Location,
        /// The bridge.
        bridge: String,
        /// The VLAN.
        vlan: u16,
        /// The MAC.
        mac: MacAddr,
        /// Line of the first entry.
        first_line: Option<usize>,
    },
    /// A static FDB entry is refused.
    #[error("{at}: static FDB entry: {error}")]
    StaticFdb {
        /// The key at fault.
        at: Location,
        /// What is wrong.
        error: StaticFdbError,
    },
    /// A number is out of its range.
    #[error("{at}: `{key}` = {value} is out of range ({range})")]
    OutOfRange {
        /// The key.
        at: Location,
        /// Dotted key name, e.g. `dataplane.mbufs`.
        key: &'static str,
        /// The rejected value.
        value: u64,
        /// The accepted range, for the message.
        range: String,
    },
}

/// Where a [`Config`] was parsed from.
#[derive(Clone, Debug, Default)]
struct Source {
    origin: String,
    text: Option<Arc<str>>,
}

/// Finds spans in the source text for validation errors.
struct Locator<'a> {
    origin: &'a str,
    text: &'a str,
    root: Option<DeValue<'a>>,
}

impl<'a> Locator<'a> {
    fn new(source: &'a Source) -> Self {
        Locator::of_text(&source.origin, source.text.as_deref().unwrap_or(""))
    }

    fn of_text(origin: &'a str, text: &'a str) -> Self {
        let root = DeTable::parse(text)
            .ok()
            .map(|t| DeValue::Table(t.into_inner()));
        let origin = if origin.is_empty() {
            "<config>"
        } else {
            origin
        };
        Locator { origin, text, root }
    }

    /// Location of the value at `path` (keys and array indexes from the
    /// root), falling back to the deepest enclosing value found, then to the
    /// file.
    fn at_path(&self, path: &[PathStep<'_>]) -> Location {
        let span = self.root.as_ref().and_then(|root| {
            let mut node: Option<&Spanned<DeValue<'a>>> = None;
            for step in path {
                let value = node.map_or(root, |n| n.get_ref());
                let next = match *step {
                    PathStep::Key(k) => value.get(k),
                    PathStep::Index(i) => value.get(i),
                };
                match next {
                    Some(n) => node = Some(n),
                    None => break,
                }
            }
            node.map(|n| n.span())
        });
        Location::new(self.origin, self.text, span)
    }

    /// Location of the key an [`AclSpecError`] of `[[acl]]` table `i` is
    /// about (`acl_table`: the tables' key, `acl` in a configuration; `None`
    /// for a file that holds one table's keys).
    fn at_acl(&self, acl_table: Option<usize>, error: &AclSpecError) -> Location {
        let (rule, key) = error.rule_key();
        let mut path = Vec::new();
        if let Some(i) = acl_table {
            path.extend([PathStep::Key("acl"), PathStep::Index(i)]);
        }
        if let Some(r) = rule {
            path.extend([PathStep::Key("rule"), PathStep::Index(r)]);
        }
        if let Some(k) = key {
            path.push(PathStep::Key(k));
        }
        self.at_path(&path)
    }

    /// Location of `table[idx].key` (or `table.key` when `idx` is `None`),
    /// falling back to the enclosing table, then to the file.
    fn at(&self, table: &str, idx: Option<usize>, key: Option<&str>) -> Location {
        let span = self.root.as_ref().and_then(|root| {
            let mut node: &Spanned<DeValue<'a>> = root.get(table)?;
            if let Some(i) = idx {
                node = node.get_ref().get(i)?;
            }
            let keyed = key.and_then(|k| node.get_ref().get(k));
            Some(keyed.unwrap_or(node).span())
        });
        Location::new(self.origin, self.text, span)
    }
}

/// One step of a path into the TOML document.
#[derive(Clone, Copy)]
enum PathStep<'k> {
    Key(&'k str),
    Index(usize),
}

/// The ports and security groups of a validated configuration.
#[derive(Clone, Debug)]
pub struct Validated {
    /// The ports, in file order, with their ACLs attached.
    pub ports: Vec<PortConfig>,
    /// The `[[acl]]` tables, in file order, each with its compiled form.
    pub acls: Vec<(AclSpec, Arc<Acl>)>,
    /// The `[[mirror]]` tables, in file order.
    pub mirrors: Vec<MirrorSpec>,
    /// The `[[fdb.static]]` tables, in file order.
    pub statics: Vec<StaticFdbSpec>,
}

/// The body of an `[[acl]]` table in a file of its own, without the name
/// ([`AclSpec::parse_file`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AclFile {
    #[serde(default)]
    default: Option<AclAction>,
    #[serde(default)]
    rule: Vec<AclRuleSpec>,
}

impl AclSpec {
    /// Reads table `name` from TOML `text` that holds the keys of one
    /// `[[acl]]` table but the name: `default` and `[[rule]]` tables
    /// (`weir acl add NAME --file FILE`). `default`, if given, replaces the
    /// file's. `origin` names the text in errors. The table is checked as a
    /// configuration's is.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Parse`] or [`ConfigError::Acl`], located in `text`.
    pub fn parse_file(
        name: &str,
        text: &str,
        origin: &str,
        default: Option<AclAction>,
    ) -> Result<AclSpec, ConfigError> {
        let file: AclFile = toml::from_str(text).map_err(|e| toml_error(&e, text, origin))?;
        let spec = AclSpec {
            name: name.to_owned(),
            default: default.or(file.default).unwrap_or_default(),
            rules: file.rule,
        };
        spec.compile().map_err(|error| ConfigError::Acl {
            at: Locator::of_text(origin, text).at_acl(None, &error),
            acl: name.to_owned(),
            error,
        })?;
        Ok(spec)
    }
}

/// A TOML syntax or schema error in `text`, located and naming its key.
fn toml_error(e: &toml::de::Error, text: &str, origin: &str) -> ConfigError {
    let span = e.span();
    let message = e.message().trim_end();
    let message = match span.as_ref().and_then(|s| key_path_at(text, s)) {
        // Unknown-field and missing-field messages already name the key.
        Some(path) if !message.contains(&format!("`{path}`")) => {
            format!("{path}: {message}")
        }
        _ => message.to_owned(),
    };
    ConfigError::Parse {
        at: Location::new(origin, text, span),
        message,
    }
}

/// The dotted path (`port[1].type`) of the value or key at `span`, for
/// naming the key in schema errors.
fn key_path_at(text: &str, span: &Range<usize>) -> Option<String> {
    fn search(value: &Spanned<DeValue<'_>>, path: &str, span: &Range<usize>) -> Option<String> {
        match value.get_ref() {
            DeValue::Table(table) => {
                for (key, child) in table.iter() {
                    // An unknown-field error points at the key: name its table.
                    if key.span() == *span {
                        return (!path.is_empty()).then(|| path.to_owned());
                    }
                    let child_path = if path.is_empty() {
                        key.get_ref().to_string()
                    } else {
                        format!("{path}.{}", key.get_ref())
                    };
                    if let Some(found) = search(child, &child_path, span) {
                        return Some(found);
                    }
                }
            }
            DeValue::Array(array) => {
                for (i, child) in array.iter().enumerate() {
                    if let Some(found) = search(child, &format!("{path}[{i}]"), span) {
                        return Some(found);
                    }
                }
            }
            _ => {}
        }
        // Deepest match wins: an array of tables shares its span with its
        // first element.
        (value.span() == *span && !path.is_empty()).then(|| path.to_owned())
    }
    let root = DeTable::parse(text).ok()?;
    let root = Spanned::new(root.span(), DeValue::Table(root.into_inner()));
    search(&root, "", span)
}

/// A configuration that passed validation against a [`Host`], with its ports
/// and security groups in typed form: what the runtime starts from, so that
/// nothing validates it again.
#[derive(Clone, Debug)]
pub struct ValidConfig {
    config: Config,
    validated: Validated,
    host: Host,
}

impl ValidConfig {
    /// Validates `config` against `host` ([`Config::validated`]).
    ///
    /// # Errors
    ///
    /// The first problem found, located in the source text.
    pub fn new(config: Config, host: Host) -> Result<ValidConfig, ConfigError> {
        let validated = config.validated(&host)?;
        Ok(ValidConfig {
            config,
            validated,
            host,
        })
    }

    /// The configuration as parsed.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The configuration, its typed ports and ACLs, and the host it was
    /// validated against.
    pub fn into_parts(self) -> (Config, Validated, Host) {
        (self.config, self.validated, self.host)
    }
}

impl Config {
    /// Reads and parses `path`; [`ValidConfig::new`] or
    /// [`Config::validate_with`] checks it next.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Read`] or [`ConfigError::Parse`].
    pub fn load_unvalidated(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses TOML `text`; `origin` names it in error messages. Checks the
    /// schema only; call [`Config::validate`] next.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Parse`], pointing at the offending key or value.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| toml_error(&e, text, origin))?;
        config.source = Source {
            origin: origin.to_owned(),
            text: Some(Arc::from(text)),
        };
        Ok(config)
    }

    /// Where the config was parsed from (empty if built in code).
    pub fn origin(&self) -> &str {
        &self.source.origin
    }

    /// Validates against the running machine ([`Host::system`]).
    ///
    /// # Errors
    ///
    /// The first problem found, located in the source text.
    pub fn validate(&self) -> Result<Vec<PortConfig>, ConfigError> {
        self.validate_with(&Host::system())
    }

    /// Validates against `host`: value ranges, names, duplicates, bridge
    /// references, per-type port keys, online CPUs and interfaces. Returns
    /// the typed ports, in file order.
    ///
    /// # Errors
    ///
    /// The first problem found, located in the source text.
    pub fn validate_with(&self, host: &Host) -> Result<Vec<PortConfig>, ConfigError> {
        self.validated(host).map(|v| v.ports)
    }

    /// [`Config::validate_with`], returning the compiled `[[acl]]` tables
    /// too (checked before the ports that name them).
    ///
    /// # Errors
    ///
    /// The first problem found, located in the source text.
    pub fn validated(&self, host: &Host) -> Result<Validated, ConfigError> {
        let loc = Locator::new(&self.source);
        self.validate_sections(host, &loc)?;
        let bridges = self.validate_bridges(&loc)?;
        let acls = self.validate_acls(&loc)?;
        let lookup = |name: &str| {
            acls.iter()
                .find(|(s, _)| s.name == name)
                .map(|(_, a)| Arc::clone(a))
        };
        let mut ports: Vec<PortConfig> = Vec::with_capacity(self.ports.len());
        for (i, spec) in self.ports.iter().enumerate() {
            let port = spec
                .validate(host)
                .and_then(|mut port| port.attach_acls(lookup).map(|()| port))
                .map_err(|error| ConfigError::Port {
                    at: loc.at("port", Some(i), error.key()),
                    port: spec.name.clone(),
                    error,
                })?;
            self.check_port_against(&port, i, &ports, &bridges, &loc)?;
            ports.push(port);
        }
        self.validate_mirrors(&ports, &loc)?;
        self.validate_statics(&ports, &bridges, &loc)?;
        Ok(Validated {
            ports,
            acls,
            mirrors: self.mirrors.clone(),
            statics: self.fdb.statics.clone(),
        })
    }

    /// Checks the `[[fdb.static]]` tables as `fdb add` checks an entry
    /// ([`StaticFdbSpec::check`]), and that no two are for one station.
    fn validate_statics(
        &self,
        ports: &[PortConfig],
        bridges: &[&str],
        loc: &Locator<'_>,
    ) -> Result<(), ConfigError> {
        let at = |i: usize, key: &str| {
            loc.at_path(&[
                PathStep::Key("fdb"),
                PathStep::Key("static"),
                PathStep::Index(i),
                PathStep::Key(key),
            ])
        };
        let mut checked: Vec<StaticFdb> = Vec::with_capacity(self.fdb.statics.len());
        for (i, spec) in self.fdb.statics.iter().enumerate() {
            let entry = spec
                .check(
                    |b| bridges.contains(&b),
                    |p| ports.iter().find(|c| c.name == p),
                )
                .map_err(|error| ConfigError::StaticFdb {
                    at: at(i, error.key()),
                    error,
                })?;
            if let Some(first) = checked.iter().position(|e| e.key() == entry.key()) {
                return Err(ConfigError::DuplicateStaticFdb {
                    at: at(i, "mac"),
                    bridge: entry.bridge,
                    vlan: entry.vlan.0,
                    mac: entry.mac,
                    first_line: at(first, "mac").line(),
                });
            }
            checked.push(entry);
        }
        Ok(())
    }

    /// Checks the `[[mirror]]` tables: names (each once), the ports they
    /// name, and that none mirrors into another's source.
    fn validate_mirrors(&self, ports: &[PortConfig], loc: &Locator<'_>) -> Result<(), ConfigError> {
        let exists = |name: &str| ports.iter().any(|p| p.name == name);
        for (i, m) in self.mirrors.iter().enumerate() {
            if let Some(first) = self.mirrors[..i].iter().position(|o| o.name == m.name) {
                return Err(ConfigError::DuplicateMirror {
                    at: loc.at("mirror", Some(i), Some("name")),
                    name: m.name.clone(),
                    first_line: loc.at("mirror", Some(first), Some("name")).line(),
                });
            }
            m.check(exists, &self.mirrors[..i])
                .map_err(|error| ConfigError::Mirror {
                    at: loc.at("mirror", Some(i), error.key()),
                    mirror: m.name.clone(),
                    error: Box::new(error),
                })?;
        }
        Ok(())
    }

    /// Checks what is not bridges, ports or ACLs: `[dataplane]`, `[fdb]`
    /// and `[control]`.
    fn validate_sections(&self, host: &Host, loc: &Locator<'_>) -> Result<(), ConfigError> {
        self.validate_dataplane(host, loc)?;
        self.validate_fdb(loc)?;
        self.validate_metrics(loc)?;
        if let Some(path) = self.control.state.as_ref().filter(|p| !p.is_absolute()) {
            return Err(ConfigError::RelativeState {
                at: loc.at("control", None, Some("state")),
                path: path.clone(),
            });
        }
        Ok(())
    }

    /// Puts the bridges, ports, ACLs, mirrors and static FDB entries
    /// (`[[fdb.static]]`) of the `[control] state` file, if it names one
    /// that exists, in place of this configuration's: the state file is the
    /// running configuration the last daemon saved, so ports added, changed
    /// and deleted at run time come back as they were. The other sections
    /// (the `[fdb]` limits among them) stay this configuration's. Returns
    /// whether a state file was applied.
    ///
    /// This configuration's own sections are checked first (against
    /// `host`, located in its text); what validation finds afterwards is in
    /// the bridges, ports, ACLs, mirrors and static entries, and is located
    /// in the state file.
    ///
    /// # Errors
    ///
    /// [`ConfigError::RelativeState`], an error of this configuration's
    /// sections, [`ConfigError::ReadState`] if the state file exists but
    /// cannot be read or is empty, and [`ConfigError::Parse`] at its line
    /// and column if it is not a valid configuration.
    pub fn apply_state(&mut self, host: &Host) -> Result<bool, ConfigError> {
        let Some(path) = self.control.state.clone() else {
            return Ok(false);
        };
        self.validate_sections(host, &Locator::new(&self.source))?;
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => {
                return Err(ConfigError::ReadState {
                    path,
                    reason: e.to_string(),
                })
            }
        };
        // The daemon never writes an empty file; a truncated one must not
        // pass for "no ports".
        if text.trim().is_empty() {
            return Err(ConfigError::ReadState {
                path,
                reason: "the file is empty".into(),
            });
        }
        let state = Config::parse(&text, &path.display().to_string())?;
        self.bridges = state.bridges;
        self.ports = state.ports;
        self.acls = state.acls;
        self.mirrors = state.mirrors;
        self.fdb.statics = state.fdb.statics;
        self.source = state.source;
        Ok(true)
    }

    /// The configuration as TOML that [`Config::parse`] reads back to an
    /// equal configuration (defaults written out).
    ///
    /// # Errors
    ///
    /// If a value has no TOML form (not expected of a parsed or validated
    /// configuration).
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }

    /// Checks and compiles the `[[acl]]` tables: names (valid, each once)
    /// and rules ([`AclSpec::compile`]).
    fn validate_acls(&self, loc: &Locator<'_>) -> Result<Vec<(AclSpec, Arc<Acl>)>, ConfigError> {
        let mut acls: Vec<(AclSpec, Arc<Acl>)> = Vec::with_capacity(self.acls.len());
        for (i, spec) in self.acls.iter().enumerate() {
            if let Some(first) = acls.iter().position(|(s, _)| s.name == spec.name) {
                return Err(ConfigError::DuplicateAcl {
                    at: loc.at("acl", Some(i), Some("name")),
                    name: spec.name.clone(),
                    first_line: loc.at("acl", Some(first), Some("name")).line(),
                });
            }
            let acl = spec.compile().map_err(|error| ConfigError::Acl {
                at: loc.at_acl(Some(i), &error),
                acl: spec.name.clone(),
                error,
            })?;
            acls.push((spec.clone(), Arc::new(acl)));
        }
        Ok(acls)
    }

    /// Checks the bridges' names; returns them in file order.
    fn validate_bridges(&self, loc: &Locator<'_>) -> Result<Vec<&str>, ConfigError> {
        if self.bridges.len() > MAX_BRIDGES {
            return Err(ConfigError::TooManyBridges {
                at: loc.at("bridge", Some(MAX_BRIDGES), None),
                count: self.bridges.len(),
            });
        }
        let mut bridges: Vec<&str> = Vec::new();
        for (i, bridge) in self.bridges.iter().enumerate() {
            let at = loc.at("bridge", Some(i), Some("name"));
            if !is_valid_name(&bridge.name) {
                return Err(ConfigError::InvalidBridgeName {
                    at,
                    name: bridge.name.clone(),
                });
            }
            if let Some(first) = bridges.iter().position(|n| *n == bridge.name) {
                return Err(ConfigError::DuplicateBridge {
                    at,
                    name: bridge.name.clone(),
                    first_line: loc.at("bridge", Some(first), Some("name")).line(),
                });
            }
            bridges.push(&bridge.name);
        }
        Ok(bridges)
    }

    /// Checks port `i` against the ports before it, the control socket and
    /// the bridges: names, paths and PCI functions are each one port's.
    fn check_port_against(
        &self,
        port: &PortConfig,
        i: usize,
        earlier: &[PortConfig],
        bridges: &[&str],
        loc: &Locator<'_>,
    ) -> Result<(), ConfigError> {
        if let Some(first) = earlier.iter().position(|p| p.name == port.name) {
            return Err(ConfigError::DuplicatePort {
                at: loc.at("port", Some(i), Some("name")),
                name: port.name.clone(),
                first_line: loc.at("port", Some(first), Some("name")).line(),
            });
        }
        // A socket or capture file shared by two ports lets one take the
        // other over (a server bind replaces, a capture truncates), and
        // the control socket's path is never a port's.
        let control = self.control.socket.components().collect::<PathBuf>();
        if let Some((key, _)) = port.paths().into_iter().find(|(_, p)| *p == control) {
            return Err(ConfigError::DuplicatePath {
                at: loc.at("port", Some(i), Some(key)),
                port: port.name.clone(),
                what: format!(
                    "`{key}` {} is already used as `control.socket`",
                    control.display()
                ),
            });
        }
        if let Some((first, (key, other_key, path))) = earlier
            .iter()
            .find_map(|p| port.path_conflict(p).map(|c| (p, c)))
        {
            return Err(ConfigError::DuplicatePath {
                at: loc.at("port", Some(i), Some(key)),
                port: port.name.clone(),
                what: format!(
                    "`{key}` {} is already used as `{other_key}` of port `{}`",
                    path.display(),
                    first.name
                ),
            });
        }
        if let PortKind::Tunnel(t) = &port.kind {
            let bad = |key: &'static str, reason: String| ConfigError::Port {
                at: loc.at("port", Some(i), Some(key)),
                port: port.name.clone(),
                error: PortError::Overlay { key, reason },
            };
            let Some(under) = earlier.iter().find(|p| p.name == t.underlay) else {
                return Err(bad(
                    "underlay",
                    format!(
                        "no earlier [[port]] named `{}`: the underlay comes before its tunnels",
                        t.underlay
                    ),
                ));
            };
            let Some(host_ip) = &under.host else {
                return Err(bad(
                    "underlay",
                    format!(
                        "port `{}` has no `ip`: give it weir's address on the underlay network",
                        t.underlay
                    ),
                ));
            };
            if !host_ip.has(IpAddr::V4(t.local_ip)) {
                return Err(bad(
                    "local_ip",
                    format!(
                        "{} is not one of port `{}`'s addresses",
                        t.local_ip, t.underlay
                    ),
                ));
            }
        }
        if let Some(pci) = port.pci() {
            if let Some(first) = earlier.iter().find(|p| p.pci() == Some(pci)) {
                return Err(ConfigError::DuplicatePci {
                    at: loc.at("port", Some(i), Some("pci")),
                    port: port.name.clone(),
                    pci: pci.to_string(),
                    first: first.name.clone(),
                });
            }
        }
        if let Some(bridge) = &port.bridge {
            if !bridges.contains(&bridge.as_str()) {
                return Err(ConfigError::UndefinedBridge {
                    at: loc.at("port", Some(i), Some("bridge")),
                    port: port.name.clone(),
                    bridge: bridge.clone(),
                });
            }
        }
        Ok(())
    }

    fn validate_dataplane(&self, host: &Host, loc: &Locator<'_>) -> Result<(), ConfigError> {
        let dp = &self.dataplane;
        let range = |key: &'static str, field: &str, value: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&value) {
                Ok(())
            } else {
                Err(ConfigError::OutOfRange {
                    at: loc.at("dataplane", None, Some(field)),
                    key,
                    value,
                    range: format!("{lo}..={hi}"),
                })
            }
        };
        range(
            "dataplane.mbufs",
            "mbufs",
            dp.mbufs.into(),
            1,
            MAX_MBUFS.into(),
        )?;
        range(
            "dataplane.mbuf_size",
            "mbuf_size",
            dp.mbuf_size.into(),
            MIN_MBUF_SIZE.into(),
            MAX_MBUF_SIZE.into(),
        )?;
        range(
            "dataplane.idle_sleep_us",
            "idle_sleep_us",
            dp.idle_sleep_us.into(),
            0,
            MAX_IDLE_SLEEP_US.into(),
        )?;
        range(
            "dataplane.tso_mbufs",
            "tso_mbufs",
            dp.tso_mbufs.into(),
            0,
            MAX_TSO_MBUFS.into(),
        )?;
        if let Some(workers) = &dp.workers {
            let online = host.online_cpus();
            if let Some(&cpu) = workers.cpus().iter().find(|c| !online.contains(c)) {
                return Err(ConfigError::CpuNotPresent {
                    at: loc.at("dataplane", None, Some("workers")),
                    cpu,
                    online: CpuList(online).to_string(),
                });
            }
        }
        Ok(())
    }

    fn validate_metrics(&self, loc: &Locator<'_>) -> Result<(), ConfigError> {
        match &self.metrics {
            // Port 0 would listen on a port chosen by the kernel, which no
            // scraper could be told.
            Some(m) if m.listen.port() == 0 => Err(ConfigError::OutOfRange {
                at: loc.at("metrics", None, Some("listen")),
                key: "metrics.listen",
                value: 0,
                range: "port 1..=65535".into(),
            }),
            _ => Ok(()),
        }
    }

    fn validate_fdb(&self, loc: &Locator<'_>) -> Result<(), ConfigError> {
        let checks: [(&'static str, &str, u32, u32, u32); 2] = [
            (
                "fdb.max_entries",
                "max_entries",
                self.fdb.max_entries,
                1,
                MAX_FDB_ENTRIES,
            ),
            (
                "fdb.aging_secs",
                "aging_secs",
                self.fdb.aging_secs,
                1,
                u32::MAX,
            ),
        ];
        for (key, field, value, lo, hi) in checks {
            if !(lo..=hi).contains(&value) {
                return Err(ConfigError::OutOfRange {
                    at: loc.at("fdb", None, Some(field)),
                    key,
                    value: value.into(),
                    range: format!("{lo}..={hi}"),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake sysfs with CPUs 0-3 online and interface `veth0`.
    struct FakeSys(PathBuf);

    impl FakeSys {
        fn new(tag: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("weir-config-test-{}-{tag}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("class/net/veth0")).unwrap();
            std::fs::create_dir_all(dir.join("devices/system/cpu")).unwrap();
            std::fs::write(dir.join("devices/system/cpu/online"), "0-3\n").unwrap();
            FakeSys(dir)
        }

        fn host(&self) -> Host {
            Host {
                sysfs: self.0.clone(),
                check_ifaces: true,
            }
        }
    }

    impl Drop for FakeSys {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn parse_err(text: &str) -> ConfigError {
        Config::parse(text, "t.toml").expect_err("parse should fail")
    }

    fn validate_err(text: &str, tag: &str) -> ConfigError {
        let sys = FakeSys::new(tag);
        let config = Config::parse(text, "t.toml").expect("parse should succeed");
        config
            .validate_with(&sys.host())
            .expect_err("validation should fail")
    }

    /// The error of the port that makes `text` fail validation, with a
    /// message that starts with `at` and contains `needle`.
    fn refused_port(text: &str, tag: &str, at: &str, needle: &str) -> PortError {
        let err = validate_err(text, tag);
        let msg = err.to_string();
        assert!(msg.starts_with(at), "{msg}");
        assert!(msg.contains(needle), "{msg}");
        match err {
            ConfigError::Port { error, .. } => error,
            other => panic!("not a port error: {other}"),
        }
    }

    const FULL: &str = r#"
[dataplane]
workers = "1-2"
mbufs = 8192
mbuf_size = 9216
hugepages = "never"
idle_sleep_us = 16
tso_mbufs = 0

[control]
socket = "/tmp/weir.sock"

[fdb]
max_entries = 1024
max_per_port = 64
aging_secs = 60

[[bridge]]
name = "br0"

[[bridge]]
name = "br1"

[[port]]
name = "p0"
type = "afpacket"
iface = "veth0"
bridge = "br0"
queues = 2

[[port]]
name = "tap0"
type = "tap"
iface = "weir-tap0"
bridge = "br0"

[[port]]
name = "r0"
type = "ring"

[[port]]
name = "cap"
type = "pcap"
rx_path = "in.pcap"
tx_path = "out.pcap"
bridge = "br1"

[[port]]
name = "vm1"
type = "vhost-user"
socket = "/tmp/vm1.sock"
mode = "client"

[[port]]
name = "nic0"
type = "vfio"
pci = "0000:03:00.0"
"#;

    #[test]
    fn full_config_parses_and_validates() {
        let sys = FakeSys::new("full");
        let config = Config::parse(FULL, "t.toml").unwrap();
        config.validate_with(&sys.host()).unwrap();
        assert_eq!(config.dataplane.worker_cpus(&sys.host()), vec![1, 2]);
        assert_eq!(config.dataplane.mbufs, 8192);
        assert_eq!(config.dataplane.mbuf_size, 9216);
        assert_eq!(config.dataplane.hugepages, HugepageMode::Never);
        assert_eq!(config.dataplane.idle_sleep_us, 16);
        assert_eq!(config.dataplane.tso_mbufs, 0);
        assert_eq!(config.control.socket, PathBuf::from("/tmp/weir.sock"));
        assert_eq!(config.fdb.max_per_port, 64);
        assert_eq!(config.bridges.len(), 2);
        assert_eq!(config.ports.len(), 6);
        assert_eq!(config.ports[0].kind, PortType::Afpacket);
        assert_eq!(config.ports[0].queues, Some(2));
        assert_eq!(config.ports[4].mode, Some(VhostMode::Client));
        assert_eq!(config.ports[5].pci.as_deref(), Some("0000:03:00.0"));
        // The JSON dump keeps config key names.
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["port"][0]["type"], "afpacket");
        assert_eq!(json["dataplane"]["workers"], "1-2");
    }

    #[test]
    fn empty_config_gets_defaults() {
        let sys = FakeSys::new("empty");
        let config = Config::parse("", "t.toml").unwrap();
        config.validate_with(&sys.host()).unwrap();
        assert_eq!(config.dataplane.mbufs, DEFAULT_MBUFS);
        assert_eq!(config.dataplane.mbuf_size, DEFAULT_MBUF_SIZE);
        assert_eq!(config.dataplane.idle_sleep_us, 0);
        assert_eq!(config.dataplane.tso_mbufs, DEFAULT_TSO_MBUFS);
        assert_eq!(config.dataplane.hugepages, HugepageMode::Auto);
        assert_eq!(config.control.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(config.fdb.max_entries, 65536);
        assert_eq!(config.fdb.max_per_port, 4096);
        assert_eq!(config.fdb.aging_secs, 300);
        assert_eq!(config.fdb.learn_per_sec, 1024);
        // Default worker: the last online CPU.
        assert_eq!(config.dataplane.worker_cpus(&sys.host()), vec![3]);
    }

    #[test]
    fn unknown_key_names_key_and_line_col() {
        let err = parse_err("[[port]]\nname = \"p0\"\nifcae = \"veth0\"\ntype = \"tap\"\n");
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::Parse { .. }), "{msg}");
        assert!(msg.starts_with("t.toml:3:1: "), "{msg}");
        assert!(msg.contains("unknown field `ifcae`"), "{msg}");
        assert!(msg.contains("port[0]"), "{msg}");
    }

    #[test]
    fn unknown_section_is_rejected() {
        let msg = parse_err("[dataplan]\nmbufs = 1\n").to_string();
        assert!(msg.starts_with("t.toml:1:2: "), "{msg}");
        assert!(msg.contains("unknown field `dataplan`"), "{msg}");
    }

    #[test]
    fn wrong_type_names_key() {
        let msg = parse_err("[dataplane]\nmbufs = \"lots\"\n").to_string();
        assert!(msg.starts_with("t.toml:2:9: "), "{msg}");
        assert!(msg.contains("dataplane.mbufs"), "{msg}");
        assert!(msg.contains("invalid type"), "{msg}");
    }

    #[test]
    fn bad_enum_value_lists_accepted_values() {
        let msg = parse_err("[[port]]\nname = \"p0\"\ntype = \"bogus\"\n").to_string();
        assert!(msg.starts_with("t.toml:3:8: "), "{msg}");
        assert!(msg.contains("port[0].type"), "{msg}");
        assert!(msg.contains("unknown variant `bogus`"), "{msg}");
        for name in [
            "afpacket",
            "afxdp",
            "tap",
            "ring",
            "pcap",
            "vhost-user",
            "vfio",
            "dpdk",
        ] {
            assert!(msg.contains(&format!("`{name}`")), "{msg}");
        }
        let msg = parse_err("[dataplane]\nhugepages = \"maybe\"\n").to_string();
        assert!(
            msg.contains("`auto`") && msg.contains("`required`"),
            "{msg}"
        );
    }

    #[test]
    fn missing_name_points_at_table() {
        let msg =
            parse_err("[[bridge]]\nname = \"br0\"\n\n[[port]]\ntype = \"ring\"\n").to_string();
        assert!(msg.starts_with("t.toml:4:1: "), "{msg}");
        assert!(msg.contains("missing field `name`"), "{msg}");
    }

    #[test]
    fn syntax_error_has_position() {
        let msg = parse_err("[dataplane]\nmbufs = [1,\n").to_string();
        assert!(msg.starts_with("t.toml:"), "{msg}");
        assert!(
            msg.split(':').nth(1).unwrap().parse::<usize>().is_ok(),
            "{msg}"
        );
    }

    #[test]
    fn duplicate_port_is_rejected() {
        let text = "[[port]]\nname = \"p0\"\ntype = \"ring\"\n\n[[port]]\nname = \"p0\"\ntype = \"ring\"\n";
        let err = validate_err(text, "dupport");
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::DuplicatePort { .. }), "{msg}");
        assert!(msg.starts_with("t.toml:6:8: "), "{msg}");
        assert!(msg.contains("`p0`") && msg.contains("line 2"), "{msg}");
    }

    #[test]
    fn duplicate_bridge_is_rejected() {
        let text = "[[bridge]]\nname = \"br0\"\n[[bridge]]\nname = \"br0\"\n";
        let err = validate_err(text, "dupbridge");
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::DuplicateBridge { .. }), "{msg}");
        assert!(msg.starts_with("t.toml:4:8: "), "{msg}");
    }

    #[test]
    fn undefined_bridge_is_rejected() {
        let text = "[[bridge]]\nname = \"br0\"\n\n[[port]]\nname = \"p0\"\ntype = \"ring\"\nbridge = \"br9\"\n";
        let err = validate_err(text, "undefbridge");
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::UndefinedBridge { .. }), "{msg}");
        assert!(msg.starts_with("t.toml:7:10: "), "{msg}");
        assert!(msg.contains("`br9`") && msg.contains("`p0`"), "{msg}");
    }

    #[test]
    fn missing_iface_is_rejected() {
        let text = "[[port]]\nname = \"p0\"\ntype = \"afpacket\"\n";
        let error = refused_port(text, "noiface", "t.toml:1:1: ", "requires `iface`");
        assert!(matches!(error, PortError::MissingKey { .. }), "{error}");
    }

    #[test]
    fn missing_keys_per_type() {
        for (kind, key) in [
            ("tap", "`iface`"),
            ("afxdp", "`iface`"),
            ("pcap", "`rx_path` or `tx_path`"),
            ("vhost-user", "`socket`"),
            ("vfio", "`pci`"),
            ("dpdk", "`devargs`"),
        ] {
            let text = format!("[[port]]\nname = \"p0\"\ntype = \"{kind}\"\n");
            let msg = validate_err(&text, "missingkeys").to_string();
            assert!(msg.contains(&format!("requires {key}")), "{msg}");
        }
    }

    #[test]
    fn dpdk_port_and_eal_args_parse() {
        let text = "[dpdk]\neal_args = [\"--no-huge\", \"-m\", \"256\"]\n\n\
                    [[port]]\nname = \"nic0\"\ntype = \"dpdk\"\n\
                    devargs = \"net_pcap0,iface=eth0\"\nqueues = 2\n";
        let config = Config::parse(text, "t.toml").unwrap();
        let sys = FakeSys::new("dpdk");
        config.validate_with(&sys.host()).unwrap();
        assert_eq!(config.dpdk.eal_args, ["--no-huge", "-m", "256"]);
        assert_eq!(config.ports[0].kind, PortType::Dpdk);
        assert_eq!(
            config.ports[0].devargs.as_deref(),
            Some("net_pcap0,iface=eth0")
        );
    }

    #[test]
    fn metrics_section_is_off_when_absent_and_loopback_by_default() {
        let config = Config::parse("", "t.toml").unwrap();
        assert_eq!(config.metrics, None);
        let config = Config::parse("[metrics]\n", "t.toml").unwrap();
        assert_eq!(
            config.metrics.unwrap().listen.to_string(),
            DEFAULT_METRICS_LISTEN
        );
        let config = Config::parse("[metrics]\nlisten = \"[::1]:9100\"\n", "t.toml").unwrap();
        assert_eq!(config.metrics.unwrap().listen.to_string(), "[::1]:9100");
    }

    #[test]
    fn metrics_listen_must_be_an_address_with_a_port() {
        for bad in ["localhost:9477", "127.0.0.1", "127.0.0.1:99999"] {
            let text = format!("[metrics]\nlisten = \"{bad}\"\n");
            let msg = parse_err(&text).to_string();
            assert!(msg.starts_with("t.toml:2:"), "{msg}");
            assert!(msg.contains("metrics.listen"), "{msg}");
        }
        let msg = validate_err("[metrics]\nlisten = \"127.0.0.1:0\"\n", "metrics0").to_string();
        assert!(msg.contains("t.toml:2:"), "{msg}");
        assert!(msg.contains("`metrics.listen` = 0"), "{msg}");
        let msg = parse_err("[metrics]\nport = 9477\n").to_string();
        assert!(msg.contains("unknown field `port`"), "{msg}");
    }

    #[test]
    fn dpdk_section_rejects_unknown_keys() {
        let msg = parse_err("[dpdk]\neal = [\"--no-huge\"]\n").to_string();
        assert!(msg.contains("unknown field `eal`"), "{msg}");
        assert!(msg.contains("`eal_args`"), "{msg}");
    }

    #[test]
    fn devargs_only_on_dpdk_ports_and_well_formed() {
        let text = "[[port]]\nname = \"p0\"\ntype = \"ring\"\ndevargs = \"net_null0\"\n";
        let msg = validate_err(text, "devargs-ring").to_string();
        assert!(msg.contains("key `devargs` does not apply"), "{msg}");
        for bad in ["", ",iface=eth0", "net_pcap0, iface=eth0"] {
            let text = format!("[[port]]\nname = \"p0\"\ntype = \"dpdk\"\ndevargs = \"{bad}\"\n");
            let msg = validate_err(&text, "devargs-bad").to_string();
            assert!(msg.contains("invalid devargs"), "{msg}");
        }
    }

    #[test]
    fn missing_interface_is_rejected() {
        let text = "[[port]]\nname = \"p0\"\ntype = \"afpacket\"\niface = \"veth9\"\n";
        let error = refused_port(text, "noif", "t.toml:4:9: ", "`veth9` does not exist");
        assert!(
            matches!(error, PortError::NoSuchInterface { .. }),
            "{error}"
        );

        // Without interface checks the same config passes.
        let sys = FakeSys::new("noif-skip");
        let host = Host {
            check_ifaces: false,
            ..sys.host()
        };
        Config::parse(text, "t.toml")
            .unwrap()
            .validate_with(&host)
            .unwrap();
    }

    #[test]
    fn iface_cannot_escape_sysfs() {
        let text = "[[port]]\nname = \"p0\"\ntype = \"afpacket\"\niface = \"../net\"\n";
        let msg = validate_err(text, "escape").to_string();
        assert!(msg.contains("invalid interface name"), "{msg}");
    }

    #[test]
    fn long_tap_name_is_rejected() {
        let text = "[[port]]\nname = \"t0\"\ntype = \"tap\"\niface = \"a-very-long-tap-name\"\n";
        let msg = validate_err(text, "longtap").to_string();
        assert!(msg.starts_with("t.toml:4:9: "), "{msg}");
        assert!(msg.contains("longer than 15"), "{msg}");
    }

    #[test]
    fn key_of_other_type_is_rejected() {
        let text = "[[port]]\nname = \"t0\"\ntype = \"tap\"\niface = \"t0\"\npci = \"03:00.0\"\n";
        let msg = validate_err(text, "otherkey").to_string();
        assert!(msg.starts_with("t.toml:5:7: "), "{msg}");
        assert!(
            msg.contains("`pci` does not apply to port type `tap`"),
            "{msg}"
        );
    }

    #[test]
    fn bad_cpu_list_syntax_is_rejected() {
        for bad in ["", "1,,2", "a", "3-1", "1-", "99999"] {
            let text = format!("[dataplane]\nworkers = \"{bad}\"\n");
            let err = parse_err(&text);
            let msg = err.to_string();
            assert!(matches!(err, ConfigError::Parse { .. }), "{msg}");
            assert!(msg.starts_with("t.toml:2:11: "), "{bad}: {msg}");
            assert!(msg.contains("invalid CPU list"), "{bad}: {msg}");
            assert!(msg.contains("dataplane.workers"), "{bad}: {msg}");
        }
    }

    #[test]
    fn cpu_list_forms() {
        let list: CpuList = "2,4-5, 0".parse().unwrap();
        assert_eq!(list.cpus(), &[0, 2, 4, 5]);
        assert_eq!(list.to_string(), "0,2,4-5");
        let config = Config::parse("[dataplane]\nworkers = 1\n", "t.toml").unwrap();
        assert_eq!(config.dataplane.workers.unwrap().cpus(), &[1]);
    }

    #[test]
    fn offline_cpu_is_rejected() {
        let err = validate_err("[dataplane]\nworkers = \"2-5\"\n", "offline");
        let msg = err.to_string();
        assert!(
            matches!(err, ConfigError::CpuNotPresent { cpu: 4, .. }),
            "{msg}"
        );
        assert!(msg.starts_with("t.toml:2:11: "), "{msg}");
        assert!(msg.contains("online: 0-3"), "{msg}");
    }

    #[test]
    fn zero_mbufs_is_rejected() {
        let err = validate_err("[dataplane]\nmbufs = 0\n", "mbufs0");
        let msg = err.to_string();
        assert!(
            matches!(
                err,
                ConfigError::OutOfRange {
                    key: "dataplane.mbufs",
                    ..
                }
            ),
            "{msg}"
        );
        assert!(msg.starts_with("t.toml:2:9: "), "{msg}");
        let msg = validate_err("[dataplane]\nmbufs = 100000000\n", "mbufsbig").to_string();
        assert!(msg.contains("out of range"), "{msg}");
    }

    #[test]
    fn negative_mbufs_is_a_type_error() {
        let msg = parse_err("[dataplane]\nmbufs = -1\n").to_string();
        assert!(msg.contains("dataplane.mbufs"), "{msg}");
    }

    #[test]
    fn vhost_socket_ownership_keys_are_checked() {
        let mut p = PortSpec::new("vm1", PortType::VhostUser);
        p.socket = Some("/tmp/vm1.sock".into());
        p.socket_mode = Some("0660".into());
        p.socket_group = Some("kvm".into());
        let host = Host {
            sysfs: "/nonexistent".into(),
            check_ifaces: false,
        };
        let port = p.validate(&host).unwrap();
        assert_eq!(
            port.kind,
            PortKind::VhostUser {
                socket: "/tmp/vm1.sock".into(),
                mode: VhostMode::Server,
                socket_mode: Some(0o660),
                socket_group: Some("kvm".into()),
            }
        );
        assert_eq!(p.socket_mode_bits(), Ok(Some(0o660)));
        p.socket_mode = Some("rw-rw----".into());
        let err = p.validate(&host).unwrap_err();
        assert_eq!(err.key(), Some("socket_mode"));
        assert!(err.to_string().contains("0660"), "{err}");
        p.socket_mode = Some("01777".into());
        assert!(p.validate(&host).is_err());
        p.socket_mode = Some("0600".into());
        p.mode = Some(VhostMode::Client);
        assert_eq!(p.validate(&host), Err(PortError::ClientSocketOwner));
        let mut tap = PortSpec::new("t", PortType::Tap);
        tap.iface = Some("t0".into());
        tap.socket_mode = Some("0600".into());
        assert!(matches!(
            tap.validate(&host),
            Err(PortError::UnexpectedKey {
                key: "socket_mode",
                ..
            })
        ));
    }

    #[test]
    fn out_of_range_values_are_rejected() {
        for (text, key) in [
            (
                "[dataplane]\nidle_sleep_us = 100001\n",
                "dataplane.idle_sleep_us",
            ),
            ("[dataplane]\nmbuf_size = 128\n", "dataplane.mbuf_size"),
            ("[dataplane]\ntso_mbufs = 16385\n", "dataplane.tso_mbufs"),
            ("[dataplane]\nmbuf_size = 65535\n", "dataplane.mbuf_size"),
            ("[fdb]\nmax_entries = 0\n", "fdb.max_entries"),
            ("[fdb]\naging_secs = 0\n", "fdb.aging_secs"),
        ] {
            let msg = validate_err(text, "range").to_string();
            assert!(msg.starts_with("t.toml:2:"), "{msg}");
            assert!(msg.contains(key), "{msg}");
        }
    }

    #[test]
    fn bad_port_name_is_rejected() {
        for bad in ["", "has space", "a/b", &"x".repeat(33)] {
            let text = format!("[[port]]\nname = \"{bad}\"\ntype = \"ring\"\n");
            let error = refused_port(&text, "badname", "t.toml:2:8: ", "");
            assert!(matches!(error, PortError::InvalidName { .. }), "{error}");
        }
    }

    #[test]
    fn bad_bridge_name_is_rejected() {
        let err = validate_err("[[bridge]]\nname = \"br 0\"\n", "badbridge");
        assert!(
            matches!(err, ConfigError::InvalidBridgeName { .. }),
            "{err}"
        );
    }

    #[test]
    fn bad_queues_and_pci_are_rejected() {
        let text = "[[port]]\nname = \"r\"\ntype = \"ring\"\nqueues = 0\n";
        assert!(validate_err(text, "queues").to_string().contains("queues"));
        for bad in ["03:00", "0000:03:00.8", "zz:00.0", "0000:03:20.0"] {
            let text = format!("[[port]]\nname = \"n\"\ntype = \"vfio\"\npci = \"{bad}\"\n");
            let msg = validate_err(&text, "pci").to_string();
            assert!(msg.contains("invalid PCI address"), "{bad}: {msg}");
        }
        assert!("03:00.0".parse::<PciAddr>().is_ok());
        assert!("0000:af:1f.7".parse::<PciAddr>().is_ok());
    }

    #[test]
    fn pci_addresses_are_opened_in_sysfs_form() {
        let sysfs = |pci: &str| pci.parse::<PciAddr>().ok().map(|a| a.to_string());
        assert_eq!(sysfs("03:00.0").as_deref(), Some("0000:03:00.0"));
        assert_eq!(sysfs("0000:AF:1F.7").as_deref(), Some("0000:af:1f.7"));
        assert_eq!(sysfs("0001:00:02.0").as_deref(), Some("0001:00:02.0"));
        assert_eq!(sysfs("00:02"), None);
        let mut spec = PortSpec::new("n", PortType::Vfio);
        spec.pci = Some("00:0A.0".into());
        assert_eq!(spec.pci_address().as_deref(), Some("0000:00:0a.0"));
    }

    #[test]
    fn two_ports_on_one_pci_function_are_rejected() {
        let text = "[[port]]\nname = \"a\"\ntype = \"vfio\"\npci = \"0000:00:02.0\"\n\n\
                    [[port]]\nname = \"b\"\ntype = \"vfio\"\npci = \"00:02.0\"\n";
        let err = validate_err(text, "duppci");
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::DuplicatePci { .. }), "{msg}");
        assert!(msg.starts_with("t.toml:9:7: "), "{msg}");
        assert!(
            msg.contains("port `b` uses PCI function 0000:00:02.0, as port `a` does"),
            "{msg}"
        );
    }

    #[test]
    fn read_error_names_file() {
        let err = Config::load_unvalidated(Path::new("/nonexistent/weir.toml")).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        assert!(err.to_string().contains("/nonexistent/weir.toml"));
    }

    #[test]
    fn line_col_counts_characters() {
        let text = "a\nbé c\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 2), (2, 1));
        // 'c' is at byte 6 but character column 4.
        assert_eq!(line_col(text, 6), (2, 4));
    }

    #[test]
    fn two_ports_on_one_socket_path_are_rejected() {
        let text = "[[port]]\nname = \"a\"\ntype = \"vhost-user\"\nsocket = \"/run/x/vm.sock\"\n\n\
                    [[port]]\nname = \"b\"\ntype = \"vhost-user\"\nmode = \"client\"\n\
                    socket = \"/run/x//./vm.sock\"\n";
        let err = validate_err(text, "dupsock");
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::DuplicatePath { .. }), "{msg}");
        assert!(
            msg.contains(
                "port `b`: `socket` /run/x/vm.sock is already used as `socket` of port `a`"
            ),
            "{msg}"
        );
        // A capture file on a socket's path, or two ports capturing into one
        // file, are refused too; two ports replaying one file are fine.
        let text = "[[port]]\nname = \"a\"\ntype = \"vhost-user\"\nsocket = \"/tmp/f\"\n\n\
                    [[port]]\nname = \"b\"\ntype = \"pcap\"\ntx_path = \"/tmp/f\"\n";
        assert!(matches!(
            validate_err(text, "dupsock2"),
            ConfigError::DuplicatePath { .. }
        ));
        let text = "[[port]]\nname = \"a\"\ntype = \"pcap\"\nrx_path = \"/tmp/in\"\n\n\
                    [[port]]\nname = \"b\"\ntype = \"pcap\"\nrx_path = \"/tmp/in\"\n";
        let sys = FakeSys::new("duprx");
        Config::parse(text, "t.toml")
            .unwrap()
            .validate_with(&sys.host())
            .unwrap();
    }

    #[test]
    fn a_port_on_the_control_socket_path_is_rejected() {
        let text = "[control]\nsocket = \"/run/weir/ctl.sock\"\n\
                    [[port]]\nname = \"a\"\ntype = \"vhost-user\"\nsocket = \"/run/weir/ctl.sock\"\n";
        let err = validate_err(text, "ctlsock");
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::DuplicatePath { .. }), "{msg}");
        assert!(
            msg.contains("/run/weir/ctl.sock is already used as `control.socket`"),
            "{msg}"
        );
    }

    #[test]
    fn pcap_max_bytes_is_checked() {
        let mut p = PortSpec::new("p", PortType::Pcap);
        p.tx_path = Some("/tmp/out.pcap".into());
        assert_eq!(p.pcap_max_bytes(), DEFAULT_PCAP_MAX_BYTES);
        p.max_bytes = Some(100);
        let err = p.validate(&Host::default()).unwrap_err();
        assert_eq!(err.key(), Some("max_bytes"));
        p.max_bytes = Some(1 << 20);
        p.validate(&Host::default()).unwrap();
        p.rx_path = p.tx_path.clone();
        assert!(matches!(
            p.validate(&Host::default()),
            Err(PortError::SamePath { .. })
        ));
        let mut v = PortSpec::new("v", PortType::VhostUser);
        v.socket = Some("/tmp/v.sock".into());
        v.max_bytes = Some(1 << 20);
        assert!(matches!(
            v.validate(&Host::default()),
            Err(PortError::UnexpectedKey {
                key: "max_bytes",
                ..
            })
        ));
    }

    #[test]
    fn more_bridges_than_the_limit_are_rejected() {
        let mut text = String::new();
        for i in 0..=MAX_BRIDGES {
            text += &format!("[[bridge]]\nname = \"b{i}\"\n");
        }
        let err = validate_err(&text, "bridges");
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::TooManyBridges { .. }), "{msg}");
        assert!(msg.contains("4097 bridges, more than the 4096"), "{msg}");
    }

    #[test]
    fn validation_returns_each_port_typed() {
        let text = "[[bridge]]\nname = \"br0\"\n\n\
                    [[port]]\nname = \"a\"\ntype = \"afpacket\"\niface = \"veth0\"\nbridge = \"br0\"\n\n\
                    [[port]]\nname = \"n\"\ntype = \"vfio\"\npci = \"00:0A.1\"\nqueues = 2\n\n\
                    [[port]]\nname = \"c\"\ntype = \"pcap\"\ntx_path = \"/tmp/c.pcap\"\n\n\
                    [[port]]\nname = \"v\"\ntype = \"vhost-user\"\nsocket = \"/tmp/v.sock\"\nmode = \"client\"\n\n\
                    [[port]]\nname = \"r\"\ntype = \"ring\"\n";
        let sys = FakeSys::new("typed");
        let config = Config::parse(text, "t.toml").unwrap();
        let ports = config.validate_with(&sys.host()).unwrap();
        let types: Vec<PortType> = ports.iter().map(|p| p.kind.port_type()).collect();
        let spec_types: Vec<PortType> = config.ports.iter().map(|p| p.kind).collect();
        assert_eq!(types, spec_types);
        let kinds: Vec<&PortKind> = ports.iter().map(|p| &p.kind).collect();
        assert_eq!(
            kinds,
            [
                &PortKind::AfPacket {
                    iface: "veth0".into()
                },
                &PortKind::Vfio {
                    pci: "0000:00:0a.1".parse().unwrap()
                },
                &PortKind::Pcap {
                    rx_path: None,
                    tx_path: Some("/tmp/c.pcap".into()),
                    max_bytes: DEFAULT_PCAP_MAX_BYTES,
                },
                &PortKind::VhostUser {
                    socket: "/tmp/v.sock".into(),
                    mode: VhostMode::Client,
                    socket_mode: None,
                    socket_group: None,
                },
                &PortKind::Ring,
            ]
        );
        assert_eq!(ports[0].bridge.as_deref(), Some("br0"));
        assert_eq!(ports[1].queue_count(), 2);
        assert_eq!(ports[4].queue_count(), 1);
        assert_eq!(ports[3].endpoint().as_deref(), Some("/tmp/v.sock"));
    }

    /// A host that checks no interface, for specs built in code.
    fn no_ifaces() -> Host {
        Host {
            sysfs: "/nonexistent".into(),
            check_ifaces: false,
        }
    }

    #[test]
    fn vlan_keys_validate_into_the_switch_policy() {
        let text = "[[bridge]]\nname = \"br0\"\n\n\
                    [[port]]\nname = \"a\"\ntype = \"ring\"\ntag = 10\n\n\
                    [[port]]\nname = \"t\"\ntype = \"ring\"\ntrunks = [20, 10, 20]\n\n\
                    [[port]]\nname = \"n\"\ntype = \"ring\"\ntag = 5\ntrunks = [10]\n\
                    vlan_mode = \"native-untagged\"\n\n\
                    [[port]]\nname = \"plain\"\ntype = \"ring\"\n";
        let sys = FakeSys::new("vlan");
        let config = Config::parse(text, "t.toml").unwrap();
        let ports = config.validate_with(&sys.host()).unwrap();
        let modes: Vec<VlanMode> = ports.iter().map(|p| p.policy.vlan.mode()).collect();
        assert_eq!(
            modes,
            [
                VlanMode::Access,
                VlanMode::Trunk,
                VlanMode::NativeUntagged,
                VlanMode::Trunk
            ]
        );
        assert_eq!(
            ports[0].policy,
            PortPolicy {
                vlan: PortVlan::new(None, Some(10), &[]).unwrap(),
                ..PortPolicy::default()
            }
        );
        assert_eq!(ports[1].settings.trunks, [10, 20], "sorted, no duplicates");
        assert_eq!(ports[2].settings.vlan_mode, Some(VlanMode::NativeUntagged));
        assert_eq!(ports[3].settings, PortSettings::default());
        assert_eq!(ports[3].policy, PortPolicy::default());
        // The dump keeps the key names and the mode's name.
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["port"][2]["vlan_mode"], "native-untagged");
        assert_eq!(json["port"][1]["trunks"], serde_json::json!([20, 10, 20]));
        let plain = json["port"][3].as_object().unwrap();
        assert!(
            ["tag", "trunks", "vlan_mode"]
                .iter()
                .all(|k| !plain.contains_key(*k)),
            "{plain:?}"
        );
    }

    #[test]
    fn vlan_keys_are_taken_by_every_port_type() {
        for kind in PortType::ALL {
            let mut p = PortSpec::new("p", kind);
            match kind {
                PortType::Afpacket | PortType::Afxdp | PortType::Tap => p.iface = Some("e0".into()),
                PortType::Pcap => p.tx_path = Some("/tmp/o.pcap".into()),
                PortType::VhostUser => p.socket = Some("/tmp/v.sock".into()),
                PortType::Vfio => p.pci = Some("00:02.0".into()),
                PortType::Dpdk => p.devargs = Some("net_ring0".into()),
                PortType::Patch => p.peer = Some("q".into()),
                PortType::Vxlan | PortType::Geneve => {
                    p.underlay = Some("up".into());
                    p.local_ip = Some("192.0.2.1".parse().unwrap());
                    p.remote_ips = vec!["192.0.2.2".parse().unwrap()];
                    p.vni = Some(5);
                }
                PortType::Ring => {}
            }
            p.tag = Some(7);
            p.trunks = vec![8];
            p.vlan_mode = Some(VlanMode::NativeTagged);
            let port = p
                .validate(&no_ifaces())
                .unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(port.policy.vlan.mode(), VlanMode::NativeTagged, "{kind}");
        }
    }

    #[test]
    fn bad_vlan_settings_are_refused_at_their_key() {
        let port = "[[port]]\nname = \"p\"\ntype = \"ring\"\n";
        for (keys, pos, needle) in [
            ("tag = 0\n", "4:7", "VLAN id 0 is out of range (1..=4094)"),
            (
                "tag = 4095\n",
                "4:7",
                "VLAN id 4095 is out of range (1..=4094)",
            ),
            (
                "trunks = [10, 4095]\n",
                "4:10",
                "VLAN id 4095 is out of range",
            ),
            (
                "tag = 10\ntrunks = [20]\n",
                "5:10",
                "trunks is not allowed with vlan_mode access",
            ),
            (
                "vlan_mode = \"trunk\"\ntag = 10\n",
                "5:7",
                "tag is not allowed with vlan_mode trunk",
            ),
            (
                "vlan_mode = \"native-tagged\"\ntrunks = [10]\n",
                "4:13",
                "vlan_mode native-tagged needs a tag",
            ),
            (
                "vlan_mode = \"access\"\n",
                "4:13",
                "vlan_mode access needs a tag",
            ),
        ] {
            let at = format!("t.toml:{pos}: port `p`: ");
            let error = refused_port(&format!("{port}{keys}"), "badvlan", &at, needle);
            assert!(matches!(error, PortError::Vlan { .. }), "{error}");
        }
    }

    #[test]
    fn unknown_vlan_mode_is_refused_naming_the_modes() {
        let text = "[[port]]\nname = \"p\"\ntype = \"ring\"\ntag = 3\nvlan_mode = \"hybrid\"\n";
        let msg = parse_err(text).to_string();
        assert!(msg.starts_with("t.toml:5:13: "), "{msg}");
        assert!(
            msg.contains(
                "unknown vlan_mode `hybrid`, expected one of access, trunk, native-tagged, \
                 native-untagged"
            ),
            "{msg}"
        );
        assert!(msg.contains("port[0].vlan_mode"), "{msg}");
        // A tag that is no 16-bit number is a type error at the key.
        let text = "[[port]]\nname = \"p\"\ntype = \"ring\"\ntag = 70000\n";
        let msg = parse_err(text).to_string();
        assert!(msg.starts_with("t.toml:4:7: "), "{msg}");
        assert!(msg.contains("port[0].tag"), "{msg}");
    }

    #[test]
    fn settings_are_set_and_cleared_by_key_name() {
        let mut s = PortSettings::default();
        s.set("tag", "10").unwrap();
        s.set("trunks", "30, 20,20").unwrap();
        s.set("vlan_mode", "native-tagged").unwrap();
        assert_eq!(
            s,
            PortSettings {
                tag: Some(10),
                trunks: vec![20, 30],
                vlan_mode: Some(VlanMode::NativeTagged),
                ..PortSettings::default()
            }
        );
        assert_eq!(s.validate().unwrap().vlan.mode(), VlanMode::NativeTagged);
        s.clear("vlan_mode").unwrap();
        // Now an access port (a tag, no mode) with trunks: refused as a whole.
        assert_eq!(
            s.validate(),
            Err(PortError::Vlan {
                key: "trunks",
                error: VlanError::AccessWithTrunks
            })
        );
        s.clear("trunks").unwrap();
        s.validate().unwrap();
        s.set("trunks", "").unwrap();
        assert!(s.trunks.is_empty(), "an empty list is every VLAN");
        s.clear("tag").unwrap();
        assert_eq!(s, PortSettings::default());
        let msg = s.set("tga", "10").unwrap_err().to_string();
        assert_eq!(
            msg,
            format!(
                "unknown key `tga`: the keys a port set or clear can change are {}; \
                 port set also takes remote_ips on a tunnel port",
                setting_names()
            )
        );
        assert!(setting_names().starts_with("tag, trunks, vlan_mode, "));
        assert!(matches!(
            s.clear("iface"),
            Err(PortError::UnknownSetting { .. })
        ));
        for (key, value, msg) in [
            ("tag", "ten", "invalid tag `ten`: expected a VLAN id"),
            ("tag", "70000", "invalid tag `70000`: expected a VLAN id"),
            (
                "trunks",
                "10,x",
                "invalid trunks `10,x`: expected VLAN ids separated by commas, e.g. 10,20",
            ),
            (
                "vlan_mode",
                "hybrid",
                "unknown vlan_mode `hybrid`, expected one of access, trunk, native-tagged, \
                 native-untagged",
            ),
        ] {
            let err = s.set(key, value).unwrap_err();
            assert_eq!(err.to_string(), msg);
            assert_eq!(err.key(), Some(key));
        }
        assert_eq!(
            s,
            PortSettings::default(),
            "a refused value changes nothing"
        );
        // Every key of the table can be set and cleared.
        for k in SETTING_KEYS {
            PortSettings::default().clear(k.name).unwrap();
        }
    }

    const MAC5: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 5]);
    const MAC6: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 6]);

    #[test]
    fn security_and_limit_keys_validate_into_the_switch_policy() {
        use dataplane::switch::Features;
        let text = "[[port]]\nname = \"vm\"\ntype = \"ring\"\nmac = \"02:00:00:00:00:05\"\n\
                    port_security = true\nips = [\"10.0.0.5\", \"fd00::5\"]\n\n\
                    [[port]]\nname = \"two\"\ntype = \"ring\"\nmac = \"02:00:00:00:00:05\"\n\
                    port_security = true\nallowed_macs = [\"02:00:00:00:00:06\", \"02-00-00-00-00-05\"]\n\n\
                    [[port]]\nname = \"lim\"\ntype = \"ring\"\ningress_policing_rate = 20000\n\
                    ingress_policing_burst = 2000\negress_rate = 10000\nstorm_pps = 500\n\n\
                    [[port]]\nname = \"off\"\ntype = \"ring\"\nmac = \"02:00:00:00:00:05\"\n\
                    ips = [\"10.0.0.5\"]\ningress_policing_rate = 0\nstorm_pps = 0\n";
        let sys = FakeSys::new("security");
        let config = Config::parse(text, "t.toml").unwrap();
        let ports = config.validate_with(&sys.host()).unwrap();
        let ips: Vec<IpAddr> = vec!["10.0.0.5".parse().unwrap(), "fd00::5".parse().unwrap()];
        assert_eq!(
            ports[0].policy.security,
            Some(PortSecurity::new(&[MAC5], &ips).unwrap()),
            "mac is what port security allows without allowed_macs"
        );
        assert_eq!(ports[0].settings.ips, ips);
        assert_eq!(
            ports[1].policy.security,
            Some(PortSecurity::new(&[MAC6, MAC5], &[]).unwrap()),
            "allowed_macs replaces mac, and no ips checks the MAC alone"
        );
        assert_eq!(
            ports[2].policy.limits,
            PortLimits::new(Some(20_000), Some(2_000), Some(10_000), Some(500))
        );
        assert_eq!(
            ports[2].policy.limits.ingress.as_ref().map(|b| b.burst()),
            Some(2_000 * 125)
        );
        assert!(ports[2].policy.security.is_none());
        assert!(ports[2].policy.features().contains(Features::POLICE));
        assert!(ports[2].policy.features().contains(Features::EGRESS_RATE));
        // Addresses without port security, and rates of 0, are no stage.
        assert_eq!(ports[3].policy, PortPolicy::default());
        assert!(ports[3].policy.features().is_empty());
        assert_eq!(ports[3].settings.mac, Some(MAC5));
        // The dump keeps the key names and the addresses' text.
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["port"][0]["mac"], "02:00:00:00:00:05");
        assert_eq!(json["port"][0]["port_security"], true);
        assert_eq!(
            json["port"][0]["ips"],
            serde_json::json!(["10.0.0.5", "fd00::5"])
        );
        assert_eq!(
            json["port"][1]["allowed_macs"],
            serde_json::json!(["02:00:00:00:00:06", "02:00:00:00:00:05"])
        );
        assert_eq!(json["port"][2]["storm_pps"], 500);
        let plain = json["port"][2].as_object().unwrap();
        assert!(
            ["mac", "port_security", "allowed_macs", "ips"]
                .iter()
                .all(|k| !plain.contains_key(*k)),
            "{plain:?}"
        );
        // And parses back to the same ports.
        let again: Config = serde_json::from_value(json).unwrap();
        assert_eq!(again.ports, config.ports);
    }

    #[test]
    fn bad_security_settings_are_refused_at_their_key() {
        let port = "[[port]]\nname = \"p\"\ntype = \"ring\"\n";
        let many: Vec<String> = (0..=MAX_ALLOWED)
            .map(|i| format!("\"10.0.1.{i}\""))
            .collect();
        let many = format!(
            "mac = \"02:00:00:00:00:05\"\nport_security = true\nips = [{}]\n",
            many.join(", ")
        );
        for (keys, pos, needle) in [
            (
                "port_security = true\n",
                "4:17",
                "port security needs at least one allowed MAC (set mac or allowed_macs)",
            ),
            (
                "port_security = true\nips = [\"10.0.0.5\"]\n",
                "4:17",
                "port security needs at least one allowed MAC",
            ),
            (
                "mac = \"01:00:5e:00:00:01\"\n",
                "4:7",
                "01:00:5e:00:00:01 is a multicast address and cannot be a source",
            ),
            (
                "mac = \"02:00:00:00:00:05\"\nport_security = true\n\
                 allowed_macs = [\"02:00:00:00:00:05\", \"ff:ff:ff:ff:ff:ff\"]\n",
                "6:16",
                "ff:ff:ff:ff:ff:ff is a multicast address",
            ),
            (
                many.as_str(),
                "6:7",
                "at most 64 IP addresses may be allowed per port, 65 given",
            ),
        ] {
            let at = format!("t.toml:{pos}: port `p`: ");
            let error = refused_port(&format!("{port}{keys}"), "badsec", &at, needle);
            assert!(matches!(error, PortError::Security { .. }), "{error}");
        }
        // Values that are no address or no count are refused by the parser,
        // at the value, naming the key.
        for (keys, pos, needle) in [
            (
                "mac = \"02:00:00:00:05\"\n",
                "4:7",
                "invalid MAC address \"02:00:00:00:05\"",
            ),
            (
                "allowed_macs = [\"02:00:00:00:00:05\", \"x\"]\n",
                "4:16",
                "port[0].allowed_macs",
            ),
            ("ips = [\"10.0.0.256\"]\n", "4:8", "port[0].ips[0]"),
            ("egress_rate = -1\n", "4:15", "port[0].egress_rate"),
            ("port_security = \"yes\"\n", "4:17", "port[0].port_security"),
        ] {
            let msg = parse_err(&format!("{port}{keys}")).to_string();
            assert!(msg.starts_with(&format!("t.toml:{pos}: ")), "{keys}: {msg}");
            assert!(msg.contains(needle), "{keys}: {msg}");
        }
    }

    #[test]
    fn security_and_limit_keys_are_set_and_cleared_by_key_name() {
        let mut s = PortSettings::default();
        for (key, value) in [
            ("mac", "02:00:00:00:00:05"),
            ("port_security", "true"),
            ("allowed_macs", "02:00:00:00:00:06, 02:00:00:00:00:05"),
            ("ips", "10.0.0.5,fd00::5"),
            ("ingress_policing_rate", "20000"),
            ("ingress_policing_burst", "2000"),
            ("egress_rate", "10000"),
            ("storm_pps", "500"),
        ] {
            s.set(key, value).unwrap_or_else(|e| panic!("{key}: {e}"));
        }
        assert_eq!(
            s,
            PortSettings {
                mac: Some(MAC5),
                port_security: true,
                allowed_macs: vec![MAC6, MAC5],
                ips: vec!["10.0.0.5".parse().unwrap(), "fd00::5".parse().unwrap()],
                ingress_policing_rate: Some(20_000),
                ingress_policing_burst: Some(2_000),
                egress_rate: Some(10_000),
                storm_pps: Some(500),
                ..PortSettings::default()
            }
        );
        let policy = s.validate().unwrap();
        assert!(policy.security.is_some() && !policy.limits.is_empty());
        // Without allowed_macs the port's mac is allowed; without that
        // either, port security has nothing to allow.
        s.clear("allowed_macs").unwrap();
        assert_eq!(s.security_macs(), [MAC5]);
        s.clear("mac").unwrap();
        assert_eq!(
            s.validate(),
            Err(PortError::Security {
                key: "port_security",
                error: Box::new(SecurityError::NoMac)
            })
        );
        s.set("port_security", "false").unwrap();
        assert!(s.validate().unwrap().security.is_none());
        s.set("allowed_macs", "").unwrap();
        s.set("ips", " ").unwrap();
        assert!(s.allowed_macs.is_empty() && s.ips.is_empty());
        for k in [
            "port_security",
            "ingress_policing_rate",
            "ingress_policing_burst",
            "egress_rate",
            "storm_pps",
        ] {
            s.clear(k).unwrap();
        }
        assert_eq!(s, PortSettings::default());
        for (key, value, msg) in [
            (
                "mac",
                "02:00:00:00:05",
                "invalid mac `02:00:00:00:05`: expected a MAC address such as 02:00:00:00:00:05",
            ),
            (
                "port_security",
                "yes",
                "invalid port_security `yes`: expected true or false",
            ),
            (
                "allowed_macs",
                "02:00:00:00:00:05,x",
                "invalid allowed_macs `x`: expected MAC addresses separated by commas",
            ),
            (
                "ips",
                "10.0.0.5,10.0.0",
                "invalid ips `10.0.0.5,10.0.0`: expected IPv4 or IPv6 addresses",
            ),
            (
                "ingress_policing_rate",
                "20M",
                "invalid ingress_policing_rate `20M`: expected a rate in kbit/s (0: no limit)",
            ),
            (
                "storm_pps",
                "-5",
                "invalid storm_pps `-5`: expected frames per second",
            ),
        ] {
            let err = s.set(key, value).unwrap_err();
            assert!(err.to_string().starts_with(msg), "{err}");
            assert_eq!(err.key(), Some(key));
        }
        assert_eq!(
            s,
            PortSettings::default(),
            "a refused value changes nothing"
        );
    }

    #[test]
    fn rx_filter_is_on_unless_set_to_false_in_the_file_or_by_key() {
        let port = "[[port]]\nname = \"vm\"\ntype = \"ring\"\n";
        let config = Config::parse(&format!("{port}rx_filter = false\n"), "t.toml").unwrap();
        assert!(!config.ports[0].settings().rx_filter_on());
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["port"][0]["rx_filter"], false);
        let plain = Config::parse(port, "t.toml").unwrap();
        assert!(plain.ports[0].settings().rx_filter_on());
        let json = serde_json::to_value(&plain).unwrap();
        assert!(json["port"][0].get("rx_filter").is_none(), "{json}");
        let msg = parse_err(&format!("{port}rx_filter = \"no\"\n")).to_string();
        assert!(msg.starts_with("t.toml:4:13: "), "{msg}");
        assert!(msg.contains("port[0].rx_filter"), "{msg}");

        let mut s = PortSettings::default();
        s.set("rx_filter", "false").unwrap();
        assert_eq!(s.rx_filter, Some(false));
        assert!(!s.rx_filter_on());
        s.set("rx_filter", "true").unwrap();
        assert!(s.rx_filter_on());
        let err = s.set("rx_filter", "off").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid rx_filter `off`: expected true or false"
        );
        s.clear("rx_filter").unwrap();
        assert_eq!(s, PortSettings::default());
        // Not a stage of its own: the filter comes with the guest's device.
        assert_eq!(s.validate().unwrap(), PortPolicy::default());
    }

    #[test]
    fn a_vhost_user_port_keeps_its_mac_but_not_its_other_settings() {
        let mut spec = PortSpec::new("vm", PortType::VhostUser);
        spec.socket = Some("/tmp/vm.sock".into());
        spec.mac = Some(MAC5);
        let port = spec.validate(&no_ifaces()).unwrap();
        let mut s = port.settings.clone();
        s.set("port_security", "true").unwrap();
        s.set("ips", "10.0.0.5").unwrap();
        assert!(port.check_settings(&s).unwrap().security.is_some());
        s.set("mac", "02:00:00:00:00:05").unwrap();
        assert!(port.check_settings(&s).is_ok(), "the same mac is no change");
        for change in [Some(MAC6), None] {
            s.mac = change;
            let err = port.check_settings(&s).unwrap_err();
            assert_eq!(err, PortError::FixedMac);
            assert!(
                err.to_string().contains("delete the port and add it again"),
                "{err}"
            );
        }
        // Any other port takes a new mac.
        let mut ring = PortSpec::new("r", PortType::Ring);
        ring.mac = Some(MAC5);
        let ring = ring.validate(&no_ifaces()).unwrap();
        let mut s = ring.settings.clone();
        s.mac = Some(MAC6);
        ring.check_settings(&s).unwrap();
    }

    #[test]
    fn pci_address_parses_once_into_its_parts() {
        let a: PciAddr = "0001:AF:1f.7".parse().unwrap();
        let parts = |a: PciAddr| (a.domain, a.bus, a.device, a.function);
        assert_eq!(parts(a), (1, 0xaf, 0x1f, 7));
        assert_eq!(a.to_string(), "0001:af:1f.7");
        assert_eq!(parts("af:1f.7".parse().unwrap()), (0, 0xaf, 0x1f, 7));
        for bad in [
            "",
            "03:00",
            "0000:03:00.8",
            "zz:00.0",
            "0000:03:20.0",
            "03:00.+",
            "003:00.0",
        ] {
            let err = bad.parse::<PciAddr>().unwrap_err();
            assert!(
                err.to_string().contains("invalid PCI address"),
                "{bad}: {err}"
            );
        }
    }

    /// Two `[[acl]]` tables and ports that name them.
    const ACLS: &str = r#"
[[acl]]
name = "web"
default = "deny"

[[acl.rule]]
direction = "in"
protocol = "tcp"
dst_ports = 80
action = "allow"

[[acl.rule]]
ether_type = "ipv6"
protocol = "icmpv6"
icmp_type = 128
action = "allow"

[[acl]]
name = "open"
default = "allow"

[[port]]
name = "a"
type = "ring"
acl_in = "web"
acl_out = "open"

[[port]]
name = "b"
type = "ring"
acl_out = "web"

[[port]]
name = "plain"
type = "ring"
"#;

    #[test]
    fn acl_tables_compile_and_ports_get_theirs() {
        let config = Config::parse(ACLS, "t.toml").unwrap();
        let v = config.validated(&no_ifaces()).unwrap();
        assert_eq!(v.acls.len(), 2);
        let (web, web_acl) = &v.acls[0];
        assert_eq!(web.rules.len(), 2);
        assert_eq!(web.rules[0].to_string(), "in tcp dst_ports=80 allow");
        assert_eq!(web_acl.rules().len(), 2);
        assert_eq!(v.acls[1].0.default, AclAction::Allow);
        let [a, b, plain] = &v.ports[..] else {
            panic!("{:?}", v.ports)
        };
        assert!(Arc::ptr_eq(a.policy.acl_in.as_ref().unwrap(), web_acl));
        assert!(Arc::ptr_eq(
            a.policy.acl_out.as_ref().unwrap(),
            &v.acls[1].1
        ));
        assert_eq!(a.settings.acl_in.as_deref(), Some("web"));
        assert!(b.policy.acl_in.is_none() && b.policy.acl_out.is_some());
        assert!(!b.policy.features().is_empty(), "the ACL stage is on");
        assert_eq!(plain.policy, PortPolicy::default());
        // The dump keeps the key names, with the default written out.
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["acl"][0]["rule"][0]["dst_ports"], 80);
        assert_eq!(
            json["acl"][1],
            serde_json::json!({"name": "open", "default": "allow"})
        );
        assert_eq!(json["port"][0]["acl_in"], "web");
        // Without tables, there is no `acl` key at all.
        let json = serde_json::to_value(Config::default()).unwrap();
        assert!(json.get("acl").is_none(), "{json}");
    }

    #[test]
    fn mirror_tables_are_checked_against_the_ports_at_their_key() {
        let ports =
            "[[port]]\nname = \"a\"\ntype = \"ring\"\n[[port]]\nname = \"span\"\ntype = \"ring\"\n";
        let ok = format!(
            "{ports}[[mirror]]\nname = \"m\"\nsrc = [\"a\"]\ndst = [\"a\"]\nto = \"span\"\n"
        );
        let sys = FakeSys::new("mirrorok");
        let config = Config::parse(&ok, "t.toml").unwrap();
        let v = config.validated(&sys.host()).unwrap();
        assert_eq!(v.mirrors.len(), 1);
        assert_eq!(
            (v.mirrors[0].src.as_slice(), v.mirrors[0].to.as_str()),
            (&["a".to_owned()][..], "span")
        );
        for (mirror, pos, needle) in [
            ("name = \"m\"\nsrc = [\"b\"]\nto = \"span\"\n", "9:7", "mirror `m`: `src` names no port `b`"),
            ("name = \"m\"\nsrc = [\"a\"]\nto = \"nope\"\n", "10:6", "mirror `m`: `to` names no port `nope`"),
            ("name = \"m\"\nto = \"span\"\n", "7:1", "mirror `m`: no source"),
            ("name = \"m m\"\nsrc = [\"a\"]\nto = \"span\"\n", "8:8", "invalid mirror name"),
            ("name = \"m\"\ndst = [\"span\"]\nto = \"span\"\n", "10:6", "a port cannot mirror to itself"),
            (
                "name = \"m\"\nsrc = [\"a\"]\nto = \"span\"\n[[mirror]]\nname = \"m\"\nsrc = [\"a\"]\nto = \"span\"\n",
                "12:8",
                "duplicate mirror name `m` (first defined on line 8)",
            ),
        ] {
            let text = format!("{ports}[[mirror]]\n{mirror}");
            let msg = validate_err(&text, "badmirror").to_string();
            assert!(msg.starts_with(&format!("t.toml:{pos}: ")), "{msg}");
            assert!(msg.contains(needle), "{msg}");
        }
    }

    /// Bridges, an underlay, a tunnel and a plain port, for the static
    /// FDB entry tests (21 lines).
    const FDB_PORTS: &str = "[[bridge]]\nname = \"br0\"\n\
        [[port]]\nname = \"up\"\ntype = \"ring\"\nip = \"198.18.0.1/24\"\n\
        [[port]]\nname = \"vx0\"\ntype = \"vxlan\"\nbridge = \"br0\"\nunderlay = \"up\"\n\
        local_ip = \"198.18.0.1\"\nremote_ips = [\"198.18.0.2\", \"198.18.0.3\"]\nvni = 7\n\
        [[port]]\nname = \"t0\"\ntype = \"ring\"\nbridge = \"br0\"\n\
        [[port]]\nname = \"loose\"\ntype = \"ring\"\n";

    #[test]
    fn static_fdb_tables_are_checked_at_their_key() {
        let ok = format!(
            "{FDB_PORTS}[[fdb.static]]\nbridge = \"br0\"\nmac = \"02:00:00:00:00:0B\"\nport = \"vx0\"\n\
             vlan = 10\nremote = \"198.18.0.3\"\n\
             [[fdb.static]]\nbridge = \"br0\"\nmac = \"02:00:00:00:00:0c\"\nport = \"t0\"\n"
        );
        let sys = FakeSys::new("fdbstatic-ok");
        let config = Config::parse(&ok, "t.toml").unwrap();
        let v = config.validated(&sys.host()).unwrap();
        assert_eq!(v.statics.len(), 2);
        assert_eq!(v.statics[0].remote.as_deref(), Some("198.18.0.3"));
        assert_eq!(
            (v.statics[1].port.as_str(), v.statics[1].vlan),
            ("t0", None)
        );
        // Written back out, it reads back the same.
        let back = Config::parse(&config.to_toml().unwrap(), "dump.toml").unwrap();
        assert_eq!(back.fdb.statics, config.fdb.statics);
        // The limits of `[fdb]` go with the entries in one table.
        assert_eq!(back.fdb.max_entries, config.fdb.max_entries);

        let entry = |keys: &str| format!("[[fdb.static]]\nbridge = \"br0\"\n{keys}");
        let mac = "mac = \"02:00:00:00:00:0b\"\n";
        // Entries start on line 22; their first key after `bridge` on 24.
        for (text, pos, needle) in [
            (entry("mac = \"02:00:00:00:0b\"\nport = \"t0\"\n"), "24:7", "static FDB entry: 02:00:00:00:0b is not a MAC address"),
            (entry("mac = \"ff:ff:ff:ff:ff:ff\"\nport = \"t0\"\n"), "24:7", "is a group address"),
            (entry(&format!("{mac}port = \"t0\"\nvlan = 4095\n")), "26:8", "VLAN 4095 is not 0..=4094"),
            (format!("[[fdb.static]]\nbridge = \"br9\"\n{mac}port = \"t0\"\n"), "23:10", "no bridge named br9"),
            (entry(&format!("{mac}port = \"nope\"\n")), "25:8", "no port named nope"),
            (entry(&format!("{mac}port = \"loose\"\n")), "25:8", "port loose is not on bridge br0"),
            (entry(&format!("{mac}port = \"t0\"\nremote = \"198.18.0.2\"\n")), "26:10", "remote applies to tunnel ports; t0 is not one"),
            (entry(&format!("{mac}port = \"vx0\"\nremote = \"vtep2\"\n")), "26:10", "remote vtep2 is not an IPv4 address"),
            (
                entry(&format!("{mac}port = \"vx0\"\nremote = \"198.18.0.9\"\n")),
                "26:10",
                "198.18.0.9 is not one of vx0's remote_ips (198.18.0.2, 198.18.0.3)",
            ),
            (
                // One station, spelt two ways: VLAN 0 is no VLAN, case does not matter.
                format!("{}{}", entry(&format!("{mac}port = \"t0\"\n")), entry("mac = \"02:00:00:00:00:0B\"\nport = \"vx0\"\nvlan = 0\n")),
                "28:7",
                "a second static entry for 02:00:00:00:00:0b in VLAN 0 of bridge `br0` (first defined on line 24)",
            ),
        ] {
            let text = format!("{FDB_PORTS}{text}");
            let err = validate_err(&text, "fdbstatic-bad");
            let msg = err.to_string();
            assert!(msg.starts_with(&format!("t.toml:{pos}: ")), "{msg}\n{text}");
            assert!(msg.contains(needle), "{msg}");
        }
        // A key the table does not have is a schema error, located too.
        let msg = parse_err(&format!(
            "{FDB_PORTS}{}",
            entry(&format!("{mac}port = \"t0\"\nttl = 5\n"))
        ))
        .to_string();
        assert!(msg.starts_with("t.toml:26:1: "), "{msg}");
        assert!(msg.contains("ttl"), "{msg}");
    }

    #[test]
    fn acl_mistakes_are_refused_at_their_key() {
        let web = "[[acl]]\nname = \"web\"\n[[acl.rule]]\n";
        for (text, pos, needle) in [
            // The switch's checks, at the rule's key.
            (
                format!("{web}dst_ports = 80\naction = \"allow\"\n"),
                "4:13",
                "acl `web`: rule 0: ports need protocol tcp, udp or sctp",
            ),
            (
                format!("{web}action = \"allow\"\n[[acl.rule]]\nprotocol = \"udp\"\nsrc_ports = \"99-10\"\naction = \"deny\"\n"),
                "7:13",
                "acl `web`: rule 1: port range 99-10 is empty",
            ),
            (
                format!("{web}src = \"10.0.0.0/8\"\ndst = \"fd00::1\"\naction = \"deny\"\n"),
                "5:7",
                "rule 0: mixes IPv4 and IPv6",
            ),
            (
                format!("{web}protocol = \"tcp\"\nicmp_type = 8\naction = \"deny\"\n"),
                "5:13",
                "rule 0: icmp_type and icmp_code need protocol icmp",
            ),
            (
                format!("{web}ether_type = \"arp\"\nprotocol = \"tcp\"\naction = \"deny\"\n"),
                "4:14",
                "rule 0: ether_type 0x0806 is not IP",
            ),
            (
                "[[acl]]\nname = \"w eb\"\n".to_owned(),
                "2:8",
                "invalid ACL name `w eb`",
            ),
            (
                "[[acl]]\nname = \"web\"\n[[acl]]\nname = \"web\"\n".to_owned(),
                "4:8",
                "duplicate ACL name `web` (first defined on line 2)",
            ),
            // A port naming a table that does not exist.
            (
                "[[acl]]\nname = \"web\"\n[[port]]\nname = \"p\"\ntype = \"ring\"\nacl_out = \"wbe\"\n"
                    .to_owned(),
                "6:11",
                "port `p`: acl_out: no ACL named `wbe`",
            ),
        ] {
            let msg = validate_err(&text, "badacl").to_string();
            assert!(msg.starts_with(&format!("t.toml:{pos}: ")), "{msg}");
            assert!(msg.contains(needle), "{msg}");
        }
        // Values that cannot be what their key names are refused by the
        // parser, at the value, naming the key.
        for (keys, pos, needle) in [
            (
                "src = \"10.0.0.0/33\"\n",
                "4:7",
                "prefix length must be 0..=32",
            ),
            ("dst = \"10.0.0\"\n", "4:7", "not an IP address or prefix"),
            ("protocol = \"gre\"\n", "4:12", "unknown protocol `gre`"),
            ("protocol = 300\n", "4:12", "protocol 300 is out of range"),
            ("dst_ports = \"http\"\n", "4:13", "`http` is not a port"),
            ("dst_ports = 70000\n", "4:13", "port 70000 is out of range"),
            ("ether_type = \"ip\"\n", "4:14", "unknown ether_type `ip`"),
            (
                "direction = \"ingress\"\n",
                "4:13",
                "unknown variant `ingress`",
            ),
            ("icmp_type = 256\n", "4:13", "acl[0].rule[0].icmp_type"),
            ("port = 80\n", "4:1", "unknown field `port`"),
        ] {
            let msg = parse_err(&format!("{web}{keys}action = \"deny\"\n")).to_string();
            assert!(msg.starts_with(&format!("t.toml:{pos}: ")), "{keys}: {msg}");
            assert!(msg.contains(needle), "{keys}: {msg}");
        }
        let msg = parse_err(&format!("{web}protocol = \"tcp\"\n")).to_string();
        assert!(msg.contains("missing field `action`"), "{msg}");
    }

    #[test]
    fn an_acl_file_holds_one_tables_keys() {
        let text = "default = \"allow\"\n\n[[rule]]\nprotocol = \"tcp\"\ndst_ports = 22\n\
                    action = \"deny\"\n";
        let spec = AclSpec::parse_file("ssh", text, "ssh.toml", None).unwrap();
        assert_eq!(spec.name, "ssh");
        assert_eq!(spec.default, AclAction::Allow);
        assert_eq!(spec.rules[0].to_string(), "tcp dst_ports=22 deny");
        // A default given beside the file wins.
        let spec = AclSpec::parse_file("ssh", text, "ssh.toml", Some(AclAction::Deny)).unwrap();
        assert_eq!(spec.default, AclAction::Deny);
        assert_eq!(
            AclSpec::parse_file("none", "", "e.toml", None).unwrap(),
            AclSpec::new("none", AclAction::Deny)
        );
        for (text, msg) in [
            (
                "[[rule]]\naction = \"deny\"\n[[rule]]\nicmp_code = 3\naction = \"deny\"\n",
                "f.toml:4:13: acl `x`: rule 1: icmp_type and icmp_code need protocol",
            ),
            ("name = \"x\"\n", "f.toml:1:1: unknown field `name`"),
            (
                "[[rule]]\nsrc = \"::/129\"\naction = \"deny\"\n",
                "f.toml:2:7: rule[0].src: `::/129`: prefix length must be 0..=128",
            ),
        ] {
            let err = AclSpec::parse_file("x", text, "f.toml", None).unwrap_err();
            assert!(err.to_string().starts_with(msg), "{err}");
        }
    }

    #[test]
    fn acl_settings_take_names_and_attach_what_they_name() {
        let mut s = PortSettings::default();
        s.set("acl_in", "web").unwrap();
        s.set("acl_out", "db").unwrap();
        assert_eq!(
            (s.acl_in.as_deref(), s.acl_out.as_deref()),
            (Some("web"), Some("db"))
        );
        let err = s.set("acl_in", "no such").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid acl_in `no such`: expected the name of an ACL (an [[acl]] table or \
             `weir acl add`)"
        );
        let web = Arc::new(AclSpec::new("web", AclAction::Allow).compile().unwrap());
        let only_web = |n: &str| (n == "web").then(|| Arc::clone(&web));
        assert_eq!(
            s.acls(only_web).unwrap_err(),
            PortError::UnknownAcl {
                key: "acl_out",
                name: "db".into()
            }
        );
        s.clear("acl_out").unwrap();
        let (acl_in, acl_out) = s.acls(only_web).unwrap();
        assert!(Arc::ptr_eq(&acl_in.unwrap(), &web) && acl_out.is_none());
        // A port's settings: the tables go into its policy.
        let mut spec = PortSpec::new("p", PortType::Ring);
        spec.acl_in = Some("web".into());
        let mut port = spec.validate(&no_ifaces()).unwrap();
        assert!(port.policy.acl_in.is_none(), "not attached yet");
        port.attach_acls(only_web).unwrap();
        assert!(port.policy.acl_in.is_some());
    }

    /// A configuration with `[control] state` in `sys`'s directory, and the
    /// state file's path.
    fn with_state(sys: &FakeSys, file_ports: &str) -> (Config, PathBuf) {
        let state = sys.0.join("state.toml");
        let text = format!(
            "[dataplane]\nmbufs = 2048\n\n[control]\nstate = \"{}\"\n\n{file_ports}",
            state.display()
        );
        (Config::parse(&text, "t.toml").unwrap(), state)
    }

    #[test]
    fn a_state_file_replaces_bridges_ports_acls_and_static_entries_and_keeps_the_other_sections() {
        let sys = FakeSys::new("state-apply");
        let file_ports = "[[bridge]]\nname = \"old\"\n\n[[port]]\nname = \"gone\"\ntype = \"ring\"\nbridge = \"old\"\n";
        let (mut config, state) = with_state(&sys, file_ports);
        // No state file yet: the file's ports.
        assert!(!config.apply_state(&sys.host()).unwrap());
        assert_eq!(config.ports[0].name, "gone");
        // What a daemon saves: its running configuration.
        let mut running = config.clone();
        running.dataplane.mbufs = 4096;
        running.bridges = vec![BridgeSpec { name: "br0".into() }];
        let mut p = PortSpec::new("p0", PortType::Ring);
        p.bridge = Some("br0".into());
        p.tag = Some(10);
        p.acl_in = Some("web".into());
        running.ports = vec![p.clone()];
        running.acls = vec![AclSpec::new("web", AclAction::Allow)];
        running.fdb.max_entries = 8;
        running.fdb.statics = vec![StaticFdbSpec {
            bridge: "br0".into(),
            mac: "02:00:00:00:00:01".into(),
            port: "p0".into(),
            vlan: Some(10),
            remote: None,
        }];
        std::fs::write(&state, running.to_toml().unwrap()).unwrap();
        assert!(config.apply_state(&sys.host()).unwrap());
        assert_eq!(config.bridges, running.bridges);
        assert_eq!(config.ports, vec![p]);
        assert_eq!(config.acls, running.acls);
        assert_eq!(config.fdb.statics, running.fdb.statics);
        // `[dataplane]` and the `[fdb]` limits are the config file's, not
        // the state file's.
        assert_eq!(config.dataplane.mbufs, 2048);
        assert_eq!(config.fdb.max_entries, FdbConfig::default().max_entries);
        let valid = config.validated(&sys.host()).unwrap();
        assert_eq!(valid.ports[0].settings.tag, Some(10));
        assert!(valid.ports[0].policy.acl_in.is_some());
    }

    #[test]
    fn a_corrupt_state_file_is_refused_at_its_line_and_column() {
        let sys = FakeSys::new("state-corrupt");
        let (mut config, state) = with_state(&sys, "");
        std::fs::write(
            &state,
            "[[port]]\nname = \"p0\"\ntype = \"ring\"\ntag = \"ten\"\n",
        )
        .unwrap();
        let err = config.apply_state(&sys.host()).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}:4:7: ", state.display())),
            "{err}"
        );
        assert!(err.contains("tag"), "{err}");
        // Valid TOML, invalid port: validation points into the state file.
        std::fs::write(
            &state,
            "[[port]]\nname = \"p0\"\ntype = \"ring\"\nbridge = \"nope\"\n",
        )
        .unwrap();
        let (mut config, _) = with_state(&sys, "");
        config.apply_state(&sys.host()).unwrap();
        let err = config.validated(&sys.host()).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}:4:10: ", state.display())),
            "{err}"
        );
        // An empty file is not "no ports".
        std::fs::write(&state, "\n").unwrap();
        let (mut config, _) = with_state(&sys, "");
        let err = config.apply_state(&sys.host()).unwrap_err();
        assert!(matches!(err, ConfigError::ReadState { .. }), "{err}");
        assert!(err.to_string().contains("the file is empty"), "{err}");
        // Unreadable: a directory where the file should be.
        std::fs::remove_file(&state).unwrap();
        std::fs::create_dir(&state).unwrap();
        let err = config.apply_state(&sys.host()).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("cannot read state file {}: ", state.display())),
            "{err}"
        );
    }

    #[test]
    fn a_relative_state_path_is_refused() {
        let text = "[control]\nstate = \"state.toml\"\n";
        let err = validate_err(text, "state-relative").to_string();
        assert!(
            err.starts_with("t.toml:2:9: `control.state` state.toml must be an absolute path"),
            "{err}"
        );
        let sys = FakeSys::new("state-relative-apply");
        let mut config = Config::parse(text, "t.toml").unwrap();
        assert!(config.apply_state(&sys.host()).is_err());
    }

    #[test]
    fn to_toml_reads_back_to_the_same_configuration() {
        let config = Config::parse(FULL, "t.toml").unwrap();
        let text = config.to_toml().unwrap();
        let back = Config::parse(&text, "dump.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&config).unwrap(),
            "{text}"
        );
    }
}
