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

use weir_config::{AclAction, AclRuleSpec, AclSpec, PortSettings, PortSpec};

pub mod client;
pub mod framing;

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
    /// learned on the port. Data: the port's settings after the change
    /// (`PortSettings`: the keys that are set).
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
    /// Data: `StatsView`.
    Stats,
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
}

impl Request {
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
            Request::Stats => "stats",
            Request::PmdShow => "pmd-show",
            Request::Version => "version",
            Request::AclAdd(_) => "acl-add",
            Request::AclDel { .. } => "acl-del",
            Request::AclList => "acl-list",
            Request::AclShow { .. } => "acl-show",
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
}

impl Response {
    /// Success without data.
    pub fn ok() -> Self {
        Response {
            ok: true,
            data: None,
            error: None,
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
    /// The receive filter on what the switch sends to the port (a
    /// vhost-user port with a `mac`, or whose guest set its filters), in
    /// short: `unicast N|all multicast M|all`. None: not filtered.
    #[serde(default)]
    pub rx_filter: Option<String>,
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
