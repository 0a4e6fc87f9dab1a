//! weir's control API: the requests, responses and views that the daemon's
//! control socket carries, and a blocking [`Client`]. This is the crate a
//! controller, the CNI plugin, tests and the `weir` CLI link to drive a
//! running daemon; it knows nothing of the dataplane (serde and the socket
//! only). Port specifications are [`weir_config::PortSpec`], the same keys as
//! a config file's `[[port]]`.
//!
//! Control plane only. On the wire each [`Request`] and [`Response`] is one
//! JSON object on one line ([`framing`]). Requests are tagged by `cmd`:
//!
//! ```json
//! {"cmd":"port-add","name":"p0","type":"tap","iface":"weir0","bridge":"br0"}
//! {"cmd":"fdb-show","bridge":"br0"}
//! {"cmd":"stats"}
//! {"cmd":"acl-add","name":"web","default":"deny","rule":[{"direction":"in","protocol":"tcp","dst_ports":80,"action":"allow"}]}
//! ```
//!
//! Responses are `{"ok":true,"data":...}` or `{"ok":false,"error":"..."}`.
//! What `data` holds for each request is documented on [`Request`]; the view
//! structs below are that data, filled by the daemon and printed by the CLI.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use weir_config::{AclAction, AclRuleSpec, AclSpec, MirrorSpec, PortSettings, PortSpec};

pub mod client;
pub mod framing;
pub mod pcapng;

pub use client::{request, Client, ClientError, CLIENT_TIMEOUT};

/// A control request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Create a port, same keys as a config `[[port]]`. Data: none.
    PortAdd(Box<PortSpec>),
    /// Delete a port. Data: none.
    PortDel {
        /// Port name.
        name: String,
    },
    /// Data: `Vec<PortInfo>`, ordered by port id.
    PortList,
    /// One port. Data: `PortInfo`.
    PortShow {
        /// Port name.
        name: String,
    },
    /// Change switch settings of a port (`weir_config::SETTING_KEYS`: `tag`,
    /// `trunks`, `vlan_mode`, `mac`, `port_security`, `ips`, ...), each value
    /// written as `port set` takes it (`{"tag":"10","trunks":"10,20"}`). The
    /// port's settings with these changes are checked as a whole and, if
    /// valid, take effect at once, together; if not, nothing changes. A
    /// change of VLAN or port security settings flushes the addresses
    /// learned on the port. On a tunnel port `remote_ips` (addresses
    /// separated by commas) replaces its flood list; the stations learned
    /// behind the remotes that stay are kept. Data: the port's settings
    /// after the change (`PortSettings`: the keys that are set).
    PortSet {
        /// Port name.
        name: String,
        /// Key → value.
        settings: BTreeMap<String, String>,
    },
    /// Remove switch settings of a port (back to their defaults), as
    /// `PortSet` changes them. Data: as `PortSet`.
    PortClear {
        /// Port name.
        name: String,
        /// Keys to remove.
        keys: Vec<String>,
    },
    /// Create a bridge. Data: none.
    BridgeAdd {
        /// Bridge name.
        name: String,
    },
    /// Delete a bridge (its ports stay, detached). Data: none.
    BridgeDel {
        /// Bridge name.
        name: String,
    },
    /// Data: `Vec<BridgeInfo>`.
    BridgeList,
    /// Data: `Vec<FdbEntryView>` for one bridge, or all if `None`.
    FdbShow {
        /// Bridge name, or `None` for every bridge.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bridge: Option<String>,
    },
    /// Remove learned entries of one bridge, or all if `None`. Data: none.
    FdbFlush {
        /// Bridge name, or `None` for every bridge.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bridge: Option<String>,
    },
    /// Add a static FDB entry: `mac` (in `vlan`) is behind `port`, and, for
    /// a tunnel port, behind its remote endpoint `remote`. Data: none.
    FdbAdd {
        /// Bridge name.
        bridge: String,
        /// MAC address.
        mac: String,
        /// Port name.
        port: String,
        /// VLAN id (0 or none: untagged).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vlan: Option<u16>,
        /// A tunnel port's remote endpoint (one of its `remote_ips`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        remote: Option<String>,
    },
    /// Remove an FDB entry, static or learned. Data: none.
    FdbDel {
        /// Bridge name.
        bridge: String,
        /// MAC address.
        mac: String,
        /// VLAN id (0 or none: untagged).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vlan: Option<u16>,
    },
    /// weir's own addresses on ports. Data: `Vec<HostIpView>`.
    IpShow,
    /// The neighbours weir's host stacks know. Data: `Vec<NeighView>`.
    NeighShow,
    /// Data: `StatsView`.
    Stats,
    /// Start the counters that `PortList`, `PortShow`, `Stats` and `PmdShow`
    /// report again from zero: those of one port, or of every port and
    /// worker if `None`. Metrics endpoints keep the running totals. Data:
    /// the names of the ports cleared.
    StatsClear {
        /// Port name, or `None` for every port and worker.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<String>,
    },
    /// Data: `Vec<WorkerView>`.
    PmdShow,
    /// Data: `VersionView`.
    Version,
    /// Create a security group, or replace the one of that name: the keys of
    /// a config `[[acl]]` table (`name`, `default`, `rule`). The table is
    /// checked as a whole; if refused, nothing changes. A replaced table
    /// takes effect on every port that uses it in one table update, and the
    /// reply comes once every worker switches with it. Data: `AclView`.
    AclAdd(AclSpec),
    /// Delete a security group; refused while a port uses it (the error
    /// names the ports). Data: the deleted table's `AclView`.
    AclDel {
        /// ACL name.
        name: String,
    },
    /// Data: `Vec<AclInfo>`, by name.
    AclList,
    /// Data: `AclView`.
    AclShow {
        /// ACL name.
        name: String,
    },
    /// The running configuration: the daemon's configuration file with the
    /// bridges, ports (their switch settings as `port set` left them) and
    /// ACLs it has now, as TOML that `weir run --config` and `weir config
    /// check` accept. Data: the TOML text (a string).
    ConfigDump,
    /// Add a port mirror, or replace the one of that name: the keys of a
    /// config `[[mirror]]` table. Data: `MirrorView`.
    MirrorAdd(MirrorSpec),
    /// Delete a mirror. Data: its last `MirrorView`.
    MirrorDel {
        /// Mirror name.
        name: String,
    },
    /// Data: `Vec<MirrorView>`, by name.
    MirrorList,
    /// Capture the frames of a port. Answered by a stream of responses on
    /// the same connection, each carrying a `CaptureChunk`: the first names
    /// the port (`interfaces`), then batches of frames, and an empty batch
    /// at least every [`CAPTURE_HEARTBEAT_MS`] while nothing is captured.
    /// The last has `done` set, with why the capture ended. It ends after
    /// `count` frames, after `duration_ms`, when the port is deleted, or
    /// when the client closes the connection.
    Capture(CaptureSpec),
}

/// One port mirror, as `mirror-add`, `mirror-del` and `mirror-list` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorView {
    /// Its name.
    pub name: String,
    /// Ports whose received frames are copied.
    pub src: Vec<String>,
    /// Ports whose sent frames are copied.
    pub dst: Vec<String>,
    /// The port the copies go to.
    pub to: String,
    /// Copies made so far.
    pub copied: u64,
    /// Copies that found no free buffer (the frames themselves went on).
    pub lost: u64,
}

/// Longest gap between two chunks of a capture stream, in milliseconds.
pub const CAPTURE_HEARTBEAT_MS: u64 = 250;

/// What to capture (a [`Request::Capture`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureSpec {
    /// The port.
    pub port: String,
    /// Frames the port receives.
    #[serde(default)]
    pub rx: bool,
    /// Frames the port sends.
    #[serde(default)]
    pub tx: bool,
    /// Frames received on the port that the switch drops, with the reason.
    #[serde(default)]
    pub drops: bool,
    /// Stop after this many frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Stop after this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Bytes kept of each frame (default [`CAPTURE_SNAPLEN_DEFAULT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snaplen: Option<u32>,
}

/// Bytes of each frame a capture keeps unless told otherwise.
pub const CAPTURE_SNAPLEN_DEFAULT: u32 = 2048;

/// One frame of a capture stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedFrame {
    /// Index of the port in the stream's `interfaces`.
    pub interface: u32,
    /// `rx` or `tx`.
    pub direction: String,
    /// Why the switch dropped it (a drop reason name), for a captured drop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop: Option<String>,
    /// When a worker saw it, nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// Its length on the wire.
    pub orig_len: u32,
    /// Its first bytes (up to the snap length), in hex.
    pub data: String,
}

/// One response of a capture stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureChunk {
    /// The captured ports, by interface index; in the first chunk only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
    /// The snap length; in the first chunk only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snaplen: Option<u32>,
    /// Frames since the previous chunk.
    #[serde(default)]
    pub frames: Vec<CapturedFrame>,
    /// Frames sent so far.
    pub captured: u64,
    /// Frames lost so far (no free capture slot; the frames themselves
    /// went on).
    pub lost: u64,
    /// Set on the last chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<String>,
}

/// Lower-case hex of `bytes`.
pub fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// The bytes of lower- or upper-case hex `text`; `None` if it is not hex.
pub fn hex_decode(text: &str) -> Option<Vec<u8>> {
    let t = text.as_bytes();
    if !t.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    t.chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

impl Request {
    /// Whether the reply is a stream of responses rather than one
    /// ([`Request::Capture`]).
    pub fn streams(&self) -> bool {
        matches!(self, Request::Capture(_))
    }

    /// The `cmd` tag, for logs.
    pub fn cmd(&self) -> &'static str {
        match self {
            Request::PortAdd(_) => "port-add",
            Request::PortDel { .. } => "port-del",
            Request::PortList => "port-list",
            Request::PortShow { .. } => "port-show",
            Request::PortSet { .. } => "port-set",
            Request::PortClear { .. } => "port-clear",
            Request::BridgeAdd { .. } => "bridge-add",
            Request::BridgeDel { .. } => "bridge-del",
            Request::BridgeList => "bridge-list",
            Request::FdbShow { .. } => "fdb-show",
            Request::FdbFlush { .. } => "fdb-flush",
            Request::FdbAdd { .. } => "fdb-add",
            Request::FdbDel { .. } => "fdb-del",
            Request::IpShow => "ip-show",
            Request::NeighShow => "neigh-show",
            Request::Stats => "stats",
            Request::StatsClear { .. } => "stats-clear",
            Request::PmdShow => "pmd-show",
            Request::Version => "version",
            Request::AclAdd(_) => "acl-add",
            Request::AclDel { .. } => "acl-del",
            Request::AclList => "acl-list",
            Request::AclShow { .. } => "acl-show",
            Request::ConfigDump => "config-dump",
            Request::MirrorAdd(_) => "mirror-add",
            Request::MirrorDel { .. } => "mirror-del",
            Request::MirrorList => "mirror-list",
            Request::Capture(_) => "capture",
        }
    }
}

/// The answer to one request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// Result data on success, if the request returns any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    /// Error message on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Something the user should know of a request that did what it was
    /// asked (success or not): e.g. that the change was made but the state
    /// file could not be written, so it will not survive a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

impl Response {
    /// Success without data.
    pub fn ok() -> Self {
        Response {
            ok: true,
            data: None,
            error: None,
            warning: None,
        }
    }

    /// Success carrying `data` (a view struct or a `Vec` of them). Turns into
    /// an error response if `data` cannot be represented as JSON (a map with
    /// non-string keys, a failing `Serialize` impl).
    pub fn with_data<T: Serialize>(data: &T) -> Self {
        match serde_json::to_value(data) {
            Ok(value) => Response {
                ok: true,
                data: Some(value),
                error: None,
                warning: None,
            },
            Err(e) => Response::error(format!("internal error: cannot encode reply: {e}")),
        }
    }

    /// Failure with a message for the user.
    pub fn error(message: impl Into<String>) -> Self {
        Response {
            ok: false,
            data: None,
            error: Some(message.into()),
            warning: None,
        }
    }

    /// `Ok(data)` on success, `Err(message)` on failure.
    ///
    /// # Errors
    ///
    /// The daemon's error message when `ok` is false.
    pub fn into_result(self) -> Result<Option<serde_json::Value>, String> {
        if self.ok {
            Ok(self.data)
        } else {
            Err(self
                .error
                .unwrap_or_else(|| "request failed (no message)".to_owned()))
        }
    }

    /// Decodes `data` into `T`, treating missing data as JSON `null`.
    ///
    /// # Errors
    ///
    /// The daemon's error message, or a decoding error.
    pub fn decode<T: DeserializeOwned>(self) -> Result<T, String> {
        let data = self.into_result()?.unwrap_or(serde_json::Value::Null);
        serde_json::from_value(data).map_err(|e| format!("unexpected reply from weir: {e}"))
    }
}

/// Counters of a port or of one of its queues: the dataplane's own
/// snapshot, serialised as it is (drops and unlearned sources by reason name).
pub use dataplane::stats::StatsSnapshot as PortStatsView;

/// One port, as listed by `port-list` and `stats`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortInfo {
    /// Port id.
    pub id: u16,
    /// Port name.
    pub name: String,
    /// Port type (`tap`, `afpacket`, ...).
    pub kind: String,
    /// Bridge the port is attached to.
    pub bridge: Option<String>,
    /// Kernel interface, for types that have one.
    pub iface: Option<String>,
    /// `"up"` or `"down"`.
    pub link: String,
    /// `"ok"` or `"error: <reason>"`.
    pub state: String,
    /// Number of queue pairs.
    pub queues: u16,
    /// Worker polling the port's first queue, if any.
    pub worker: Option<u16>,
    /// Counters, summed over the queues.
    pub stats: PortStatsView,
    /// Counters of each queue pair, by queue index (`stats` is their sum).
    /// Empty in replies from daemons that predate it.
    #[serde(default)]
    pub queue_stats: Vec<PortStatsView>,
    /// MTU the port's peer set (a vhost-user frontend's NET_SET_MTU, e.g.
    /// QEMU's `host_mtu`); None if it set none. Absent from replies of daemons
    /// that predate it.
    #[serde(default)]
    pub mtu: Option<u16>,
    /// MTU the port offers its peer (a vhost-user device's VIRTIO_NET_F_MTU
    /// `mtu`: 1500, or less when the buffers or the bridge's tunnels hold
    /// less); None if it offers none. Absent from replies of daemons that
    /// predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offered_mtu: Option<u16>,
    /// Features the port's peer negotiated (a vhost-user guest's virtio
    /// features: `VERSION_1`, `MRG_RXBUF`, `GUEST_TSO4`, ...); empty when
    /// none is connected or the type has none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    /// VLAN mode in effect (`access`, `trunk`, `native-tagged`,
    /// `native-untagged`): the `vlan_mode` key, or what its absence means (a
    /// port without VLAN settings is a trunk of every VLAN). None from
    /// daemons that predate VLAN modes.
    #[serde(default)]
    pub vlan_mode: Option<String>,
    /// `tag`: the access VLAN, or the native VLAN of a native mode.
    #[serde(default)]
    pub tag: Option<u16>,
    /// `trunks`: the VLANs a trunk or native-mode port carries, ascending;
    /// empty means every VLAN.
    #[serde(default)]
    pub trunks: Vec<u16>,
    /// The port's switch settings as set (`port set` keys, those that are
    /// set): VLAN keys, `mac`, port security and rate limits. Empty from
    /// daemons that predate it.
    #[serde(default)]
    pub settings: PortSettings,
    /// The worker polling each queue, by queue index. Empty from daemons
    /// that predate it.
    #[serde(default)]
    pub queue_workers: Vec<u16>,
    /// `acl_in`: the security group of what the port sends, by name.
    #[serde(default)]
    pub acl_in: Option<String>,
    /// `acl_out`: the security group of what the port receives.
    #[serde(default)]
    pub acl_out: Option<String>,
    /// Receive-to-transmit time of the frames it received, sampled; None
    /// from daemons that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyView>,
    /// weir's own addresses on the port, for a port with an `ip` (filled by
    /// `port-show`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostIpView>,
    /// A tunnel port's keys and the state of its remotes (filled by
    /// `port-show`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelView>,
    /// The receive filter on what the switch sends to the port (a
    /// vhost-user port with a `mac`, or whose guest set its filters), in
    /// short: `unicast N|all multicast M|all`. None: not filtered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_filter: Option<String>,
}

/// A `vxlan` or `geneve` port: its keys and where its remotes stand.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelView {
    /// `vxlan` or `geneve`.
    pub kind: String,
    /// The underlay port.
    pub underlay: String,
    /// Source address of its packets.
    pub local_ip: String,
    /// UDP destination port.
    pub dst_port: u16,
    /// `vni`: the one VNI frames travel with, as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// `vlan_vni`: (bridge VLAN, VNI) pairs, by VLAN; empty with `vni`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vlan_vni: Vec<(u16, u32)>,
    /// The underlay's IP MTU.
    pub underlay_mtu: u32,
    /// Longest inner frame (with its Ethernet header, without a `vlan_vni`
    /// tag) that fits the underlay's MTU with the outer headers.
    pub max_frame_bytes: u32,
    /// The largest tenant IP MTU that fits: `max_frame_bytes` less the inner
    /// Ethernet header.
    pub inner_mtu: u32,
    /// The remote endpoints, in `remote_ips` order.
    pub remotes: Vec<TunnelRemoteView>,
}

/// One remote endpoint of a tunnel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelRemoteView {
    /// Its address.
    pub ip: String,
    /// Where its packets go on the underlay: the remote itself when on-link,
    /// else the gateway; None when it is off-link without a gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop: Option<String>,
    /// The next hop's MAC, once the host stack resolved it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop_mac: Option<String>,
    /// Whether the tunnel has an outer header for it: frames to it leave;
    /// if not, they are dropped as `tunnel-unresolved`.
    pub resolved: bool,
}

/// A port's receive-to-transmit latency histogram: the time from a burst's
/// receipt to the end of its transmission (or of its handoff to another
/// worker), measured in one poll round in 16 and counted per frame, in
/// fixed log2 buckets of nanoseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyView {
    /// Frames per bucket, by ascending bound.
    pub buckets: Vec<LatencyBucket>,
    /// Frames sampled (the buckets' sum).
    pub frames: u64,
    /// Their summed latency, ns.
    pub sum_ns: u64,
}

/// One bucket of a [`LatencyView`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyBucket {
    /// Upper bound (inclusive), ns; None for the last, unbounded bucket.
    pub le_ns: Option<u64>,
    /// Frames in it.
    pub frames: u64,
}

impl LatencyView {
    /// The histogram of a port's (or queue's) counters.
    pub fn of(stats: &PortStatsView) -> LatencyView {
        LatencyView {
            buckets: stats
                .latency
                .iter()
                .enumerate()
                .map(|(i, &frames)| LatencyBucket {
                    le_ns: dataplane::stats::latency_bucket_le_ns(i),
                    frames,
                })
                .collect(),
            frames: stats.latency.iter().sum(),
            sum_ns: stats.latency_sum_ns,
        }
    }

    /// The bound of the bucket that holds quantile `q` (0..=1): the
    /// sampled frames' `q` quantile is at most it. None if no frame was
    /// sampled; `Some(None)` if it falls in the unbounded bucket.
    pub fn quantile_le_ns(&self, q: f64) -> Option<Option<u64>> {
        if self.frames == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.frames as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for b in &self.buckets {
            seen += b.frames;
            if seen >= rank {
                return Some(b.le_ns);
            }
        }
        Some(None)
    }
}

/// One security group, as listed by `acl-list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclInfo {
    /// ACL name.
    pub name: String,
    /// What happens to frames no rule matches.
    pub default: AclAction,
    /// Number of rules.
    pub rules: usize,
    /// Ports that use it as `acl_in`, by name.
    pub acl_in: Vec<String>,
    /// Ports that use it as `acl_out`, by name.
    pub acl_out: Vec<String>,
}

/// One security group with its rules, as `acl-show`, `acl-add` and
/// `acl-del` return it: the keys of its `[[acl]]` table, and its users.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclView {
    /// ACL name.
    pub name: String,
    /// What happens to frames no rule matches.
    pub default: AclAction,
    /// The rules in order, numbered from 0 in errors.
    #[serde(default, rename = "rule")]
    pub rules: Vec<AclRuleSpec>,
    /// Ports that use it as `acl_in`, by name.
    pub acl_in: Vec<String>,
    /// Ports that use it as `acl_out`, by name.
    pub acl_out: Vec<String>,
}

/// One bridge, as listed by `bridge-list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeInfo {
    /// Bridge name.
    pub name: String,
    /// Names of the attached ports.
    pub ports: Vec<String>,
    /// Number of FDB entries.
    pub fdb_entries: usize,
}

/// One FDB entry, as listed by `fdb-show`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbEntryView {
    /// Bridge name.
    pub bridge: String,
    /// VLAN id (0 when untagged).
    pub vlan: u16,
    /// MAC address, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// Port name.
    pub port: String,
    /// Seconds since the entry was last refreshed.
    pub age_secs: u32,
    /// Whether the entry was configured rather than learned.
    pub is_static: bool,
    /// For an entry on a tunnel port: the remote endpoint the station is
    /// behind, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
}

/// weir's own addresses on one port, as listed by `ip-show`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostIpView {
    /// Port name.
    pub port: String,
    /// weir's MAC address on the port.
    pub mac: String,
    /// Addresses with prefix lengths.
    pub addrs: Vec<String>,
    /// IPv4 gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// IPv6 gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<String>,
    /// The port's IP MTU.
    pub mtu: u32,
    /// Tunnel ports over this port.
    pub tunnels: Vec<String>,
    /// Frames the host stack received.
    pub rx_frames: u64,
    /// Frames the host stack sent.
    pub tx_frames: u64,
    /// Frames the host stack could not send (no buffer, ring full).
    pub tx_failed: u64,
}

/// One neighbour of weir's host stack on a port, as listed by `neigh-show`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeighView {
    /// Port name.
    pub port: String,
    /// The neighbour's address.
    pub ip: String,
    /// Its MAC address, once resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// `reachable`, `stale`, `incomplete` or `failed`.
    pub state: String,
    /// Seconds since it last proved its MAC; none if never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_secs: Option<u64>,
    /// Whether weir keeps it resolved (the next hop of a tunnel's remote).
    pub wanted: bool,
}

/// One worker thread, as listed by `pmd-show` and `stats`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerView {
    /// Worker id.
    pub id: u16,
    /// CPU the worker is pinned to.
    pub cpu: usize,
    /// Queues polled, as `"port:queue"`.
    pub rx_queues: Vec<String>,
    /// Cycles spent in bursts that moved packets.
    pub busy_cycles: u64,
    /// Cycles spent in empty polls.
    pub idle_cycles: u64,
    /// `busy / (busy + idle) * 100`.
    pub busy_pct: f64,
    /// Packets received by this worker.
    pub rx_packets: u64,
    /// Dropped packets by drop reason name.
    #[serde(default)]
    pub drops: BTreeMap<String, u64>,
    /// Poll rounds that moved packets (`rx_packets / busy_rounds`: mean burst).
    #[serde(default)]
    pub busy_rounds: u64,
    /// Cycles per stage, from the sampled rounds.
    #[serde(default)]
    pub stages: StageCycles,
}

/// TSC cycles a worker spent per stage, measured in one poll round in 16 for
/// the bursts that received frames. Divide by `packets` for cycles per packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageCycles {
    /// The receiving port drivers (`rx_burst`).
    pub rx: u64,
    /// The switch: parse, learn, look up, stage.
    pub switch: u64,
    /// The transmitting port drivers and handoffs (`tx_burst`).
    pub tx: u64,
    /// Frames received in the sampled rounds.
    pub packets: u64,
}

impl StageCycles {
    /// Cycles per packet of (rx, switch, tx); None before any sample.
    pub fn per_packet(&self) -> Option<(f64, f64, f64)> {
        if self.packets == 0 {
            return None;
        }
        let p = self.packets as f64;
        Some((
            self.rx as f64 / p,
            self.switch as f64 / p,
            self.tx as f64 / p,
        ))
    }
}

/// The packet buffer pool.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MempoolView {
    /// Mbufs in the pool.
    pub total: u32,
    /// Mbufs not in use.
    pub available: u32,
    /// Whether the pool sits on hugepages.
    pub hugepages: bool,
    /// Data room per mbuf in bytes.
    pub mbuf_size: u32,
    /// Most buffers one port may hold (pools shared out per port: the TSO
    /// pool); absent for a pool without shares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_share: Option<u32>,
}

/// Everything `stats` reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatsView {
    /// Every port with its counters.
    pub ports: Vec<PortInfo>,
    /// Every worker.
    pub workers: Vec<WorkerView>,
    /// The mbuf pool.
    pub mempool: MempoolView,
    /// The pool of 64 KiB buffers for TSO frames from VMs, once created
    /// (with the first vhost-user port; absent with `tso_mbufs = 0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tso_pool: Option<MempoolView>,
}

/// The daemon's version, for `version`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionView {
    /// `CARGO_PKG_VERSION` of the daemon.
    pub version: String,
}

impl VersionView {
    /// This build's version.
    pub fn current() -> Self {
        VersionView {
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_config::PortType;

    #[test]
    fn requests_use_cmd_tag() {
        let json = serde_json::to_string(&Request::PortList).unwrap();
        assert_eq!(json, r#"{"cmd":"port-list"}"#);
        let json = serde_json::to_string(&Request::FdbShow {
            bridge: Some("br0".into()),
        })
        .unwrap();
        assert_eq!(json, r#"{"cmd":"fdb-show","bridge":"br0"}"#);
        let req: Request = serde_json::from_str(r#"{"cmd":"fdb-flush"}"#).unwrap();
        assert_eq!(req, Request::FdbFlush { bridge: None });
    }

    #[test]
    fn port_set_and_clear_carry_keys_as_text() {
        let req = Request::PortSet {
            name: "vm1".into(),
            settings: [("tag", "10"), ("trunks", "10,20")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        };
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(
            json,
            r#"{"cmd":"port-set","name":"vm1","settings":{"tag":"10","trunks":"10,20"}}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), req);
        let req: Request =
            serde_json::from_str(r#"{"cmd":"port-clear","name":"vm1","keys":["tag"]}"#).unwrap();
        assert_eq!(
            req,
            Request::PortClear {
                name: "vm1".into(),
                keys: vec!["tag".into()]
            }
        );
        assert_eq!(req.cmd(), "port-clear");
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"port-set","name":"vm1"}"#).is_err());
    }

    #[test]
    fn port_add_carries_vlan_keys_with_their_config_names() {
        let mut spec = PortSpec::new("vm1", PortType::Ring);
        spec.tag = Some(5);
        spec.trunks = vec![10, 20];
        spec.vlan_mode = Some(dataplane::switch::VlanMode::NativeUntagged);
        let req = Request::PortAdd(Box::new(spec));
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(
            json,
            r#"{"cmd":"port-add","name":"vm1","type":"ring","tag":5,"trunks":[10,20],"vlan_mode":"native-untagged"}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), req);
        let err = serde_json::from_str::<Request>(
            r#"{"cmd":"port-add","name":"p","type":"ring","vlan_mode":"hybrid"}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("unknown vlan_mode `hybrid`"),
            "{err}"
        );
    }

    #[test]
    fn port_add_carries_security_and_limit_keys_with_their_config_names() {
        let mut spec = PortSpec::new("vm1", PortType::Ring);
        spec.mac = Some(weir_config::MacAddr([2, 0, 0, 0, 0, 5]));
        spec.port_security = true;
        spec.ips = vec!["10.0.0.5".parse().unwrap()];
        spec.ingress_policing_rate = Some(20_000);
        spec.storm_pps = Some(500);
        let req = Request::PortAdd(Box::new(spec));
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(
            json,
            r#"{"cmd":"port-add","name":"vm1","type":"ring","mac":"02:00:00:00:00:05","port_security":true,"ips":["10.0.0.5"],"ingress_policing_rate":20000,"storm_pps":500}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), req);
        let req: Request = serde_json::from_str(r#"{"cmd":"port-show","name":"vm1"}"#).unwrap();
        assert_eq!(req, Request::PortShow { name: "vm1".into() });
        assert_eq!(req.cmd(), "port-show");
    }

    #[test]
    fn port_add_uses_config_keys() {
        let mut spec = PortSpec::new("vm1", PortType::VhostUser);
        spec.socket = Some("/tmp/vm1.sock".into());
        let req = Request::PortAdd(Box::new(spec));
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(
            json,
            r#"{"cmd":"port-add","name":"vm1","type":"vhost-user","socket":"/tmp/vm1.sock"}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), req);
    }

    #[test]
    fn acl_add_carries_the_keys_of_an_acl_table() {
        let mut spec = AclSpec::new("web", AclAction::Deny);
        spec.rules
            .push("in tcp dst_ports=80 allow".parse().unwrap());
        let req = Request::AclAdd(spec);
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(
            json,
            r#"{"cmd":"acl-add","name":"web","default":"deny","rule":[{"direction":"in","protocol":"tcp","dst_ports":80,"action":"allow"}]}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&json).unwrap(), req);
        // The default may be left out (deny), as may the rules.
        let req: Request = serde_json::from_str(r#"{"cmd":"acl-add","name":"none"}"#).unwrap();
        assert_eq!(req, Request::AclAdd(AclSpec::new("none", AclAction::Deny)));
        assert_eq!(req.cmd(), "acl-add");
        let err = serde_json::from_str::<Request>(
            r#"{"cmd":"acl-add","name":"x","rule":[{"dst_ports":"a-b","action":"allow"}]}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("`a-b` is not a port"), "{err}");
        for (json, req) in [
            (
                r#"{"cmd":"acl-del","name":"web"}"#,
                Request::AclDel { name: "web".into() },
            ),
            (r#"{"cmd":"acl-list"}"#, Request::AclList),
            (
                r#"{"cmd":"acl-show","name":"web"}"#,
                Request::AclShow { name: "web".into() },
            ),
        ] {
            assert_eq!(serde_json::from_str::<Request>(json).unwrap(), req);
            assert_eq!(serde_json::to_string(&req).unwrap(), json);
        }
    }

    #[test]
    fn config_dump_is_a_bare_command_and_a_warning_rides_on_a_reply() {
        let json = r#"{"cmd":"config-dump"}"#;
        assert_eq!(
            serde_json::from_str::<Request>(json).unwrap(),
            Request::ConfigDump
        );
        assert_eq!(Request::ConfigDump.cmd(), "config-dump");
        // No warning: not on the wire, as before.
        assert_eq!(
            serde_json::to_string(&Response::ok()).unwrap(),
            r#"{"ok":true}"#
        );
        let resp: Response =
            serde_json::from_str(r#"{"ok":true,"warning":"state file not written"}"#).unwrap();
        assert!(resp.ok);
        assert_eq!(resp.warning.as_deref(), Some("state file not written"));
    }

    #[test]
    fn unknown_cmd_and_fields_are_rejected() {
        let err = serde_json::from_str::<Request>(r#"{"cmd":"reboot"}"#).unwrap_err();
        assert!(
            err.to_string().contains("unknown variant `reboot`"),
            "{err}"
        );
        let err = serde_json::from_str::<Request>(
            r#"{"cmd":"port-add","name":"p","type":"tap","ifcae":"x"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("ifcae"), "{err}");
        let err = serde_json::from_str::<Request>(r#"{"cmd":"port-del","nme":"p"}"#).unwrap_err();
        assert!(err.to_string().contains("nme"), "{err}");
        assert!(serde_json::from_str::<Request>(r#"{"name":"p"}"#).is_err());
    }

    #[test]
    fn port_info_without_queue_stats_still_parses() {
        let json = r#"{"id":0,"name":"p0","kind":"tap","bridge":null,"iface":null,
            "link":"up","state":"ok","queues":1,"worker":0,
            "stats":{"rx_packets":1,"rx_bytes":64,"tx_packets":0,"tx_bytes":0,
            "rx_errors":0,"tx_errors":0}}"#;
        let p: PortInfo = serde_json::from_str(json).unwrap();
        assert_eq!(p.stats.rx_packets, 1);
        assert!(p.queue_stats.is_empty());
        assert_eq!(p.mtu, None);
        assert_eq!(p.vlan_mode, None);
        assert!(p.trunks.is_empty());
        assert_eq!(p.settings, PortSettings::default());
        assert!(p.queue_workers.is_empty());
    }

    #[test]
    fn port_counters_carry_drops_and_unlearned_by_name() {
        use dataplane::stats::Unlearned;
        use dataplane::DropReason;
        let mut s = PortStatsView {
            rx_packets: 5,
            ..Default::default()
        };
        s.drops[DropReason::TxFull as usize] = 2;
        let json = serde_json::to_value(s).unwrap();
        assert_eq!(json["drops"], serde_json::json!({"tx-full": 2}));
        assert!(json.get("unlearned").is_none(), "{json}");
        assert_eq!(json["rx_packets"], 5);
        s.unlearned[Unlearned::ALL[0] as usize] = 7;
        let back: PortStatsView = serde_json::from_value(serde_json::to_value(s).unwrap()).unwrap();
        assert_eq!(back, s);
        // A reason this build does not know (a newer daemon) is left out;
        // counters a daemon does not send read as zero.
        let old: PortStatsView =
            serde_json::from_str(r#"{"rx_packets":1,"drops":{"warp-drive":3,"tx-full":1}}"#)
                .unwrap();
        assert_eq!(old.total_drops(), 1);
        assert_eq!(old.tx_tso_packets, 0);
    }

    #[test]
    fn response_shapes() {
        assert_eq!(
            serde_json::to_string(&Response::ok()).unwrap(),
            r#"{"ok":true}"#
        );
        assert_eq!(
            serde_json::to_string(&Response::error("no such port `x`")).unwrap(),
            r#"{"ok":false,"error":"no such port `x`"}"#
        );
        let resp = Response::with_data(&VersionView {
            version: "1.2.3".into(),
        });
        assert_eq!(
            serde_json::to_string(&resp).unwrap(),
            r#"{"ok":true,"data":{"version":"1.2.3"}}"#
        );
        assert_eq!(resp.decode::<VersionView>().unwrap().version, "1.2.3");
        assert_eq!(
            Response::error("boom").decode::<VersionView>().unwrap_err(),
            "boom"
        );
    }
}
