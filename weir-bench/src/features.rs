//! `weir bench --features`: switch features turned on on both traffic ports,
//! to measure what each costs, and the same set-up written as OVS's port
//! settings and OpenFlow flows for `--peer ovs`.
//!
//! Every feature is set up so that the bench's traffic passes it: the
//! station addresses are the ones port security allows, the last ACL rule is
//! the one that lets the traffic through (every rule before it is looked at
//! and does not match), and the policer's rate is far above what the
//! generator can send. A frame dropped by a feature is a bench bug, and the
//! report's per-reason drop counts show it.

use std::fmt::Write as _;

use weir_config::{AclAction, AclRuleSpec, AclSpec, MacAddr, PortSpec};

use crate::traffic::{station_ip, station_mac, Frames, UDP_DST_PORT};

/// What `--features` can turn on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchFeature {
    /// IPv4/UDP frames and no switch feature: the baseline of the others.
    Ip,
    /// Both ports access ports of VLAN [`BENCH_VLAN`] (OVS: `tag`).
    Vlan,
    /// Port security: each port allows only its side's station MACs and
    /// IPv4 address (OVS: a table of `in_port,dl_src,nw_src` flows).
    Security,
    /// An ingress security group of `--acl-rules` rules on both ports
    /// (OVS: the same rules as flows, by priority).
    Acl,
    /// Ingress policing at [`POLICE_RATE_KBIT`] on both ports (OVS:
    /// `ingress_policing_rate`).
    Police,
    /// All of the above (but not `vxlan`).
    All,
    /// The two traffic ports on bridges of their own, joined by a VXLAN
    /// tunnel over a pair of patch ports: every frame is encapsulated on
    /// one side, crosses the patch, and is checked and decapsulated on the
    /// other (OVS: its userspace VXLAN ports over two patched underlay
    /// bridges).
    Vxlan,
    /// The two traffic ports on bridges of their own, joined by a pair of
    /// patch ports: the path of `vxlan` without the tunnel (two switchings
    /// and a patch crossing), so that the two runs' ratio is what
    /// encapsulation and decapsulation cost (OVS: the same with its patch
    /// ports).
    Patch,
}

/// The bridges, patch and tunnel ports of `--features vxlan` (`tunnel`) or
/// `--features patch` (not `tunnel`), after the traffic ports' own bridge
/// (`bridge`): side A's bridge is `bridge`, side B's `bridge-b`. Without
/// the tunnel the patch ports are members of the two bridges.
pub fn split_ports(bridge: &str, tunnel: bool) -> (Vec<String>, Vec<PortSpec>) {
    use weir_config::PortType;
    let ip = tunnel_endpoint;
    let bridges = vec![bridge.to_owned(), format!("{bridge}-b")];
    let mut ports = Vec::new();
    for side in 0..2u8 {
        let (me, other) = (format!("under-{side}"), format!("under-{}", 1 - side));
        let mut u = PortSpec::new(&me, PortType::Patch);
        u.peer = Some(other);
        if !tunnel {
            u.bridge = Some(bridges[usize::from(side)].clone());
            ports.push(u);
            continue;
        }
        u.ip = vec![format!("{}/24", ip(side))];
        ports.push(u);
        let mut t = PortSpec::new(format!("vx-{side}"), PortType::Vxlan);
        t.bridge = Some(bridges[usize::from(side)].clone());
        t.underlay = Some(me);
        t.local_ip = Some(ip(side));
        t.remote_ips = vec![ip(1 - side)];
        t.vni = Some(TUNNEL_VNI);
        ports.push(t);
    }
    (bridges, ports)
}

/// The underlay address of side `side`'s (0 = A, 1 = B) tunnel endpoint
/// in `--features vxlan` (for weir and for OVS alike).
pub fn tunnel_endpoint(side: u8) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(198, 18, 0, side + 1)
}

/// The VNI of `--features vxlan`.
pub const TUNNEL_VNI: u32 = 5000;

/// The VLAN of `--features vlan`.
pub const BENCH_VLAN: u16 = 10;
/// `ingress_policing_rate` of `--features police`, kbit/s: 100 Gbit/s, a
/// bucket that is consulted for every frame and never runs dry here.
pub const POLICE_RATE_KBIT: u64 = 100_000_000;
/// `ingress_policing_burst` of `--features police`, kbit.
pub const POLICE_BURST_KBIT: u64 = 1_000_000;
/// Name of the security group of `--features acl`.
pub const ACL_NAME: &str = "bench-acl";
/// Most rules `--acl-rules` takes (the switch's limit per table).
pub const MAX_ACL_RULES: u32 = dataplane::switch::acl::MAX_RULES as u32;

/// The features of a run, resolved from `--features` and `--acl-rules`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// Access VLAN on both ports.
    pub vlan: bool,
    /// Port security on both ports.
    pub security: bool,
    /// An ingress security group of this many rules on both ports.
    pub acl_rules: Option<u32>,
    /// Ingress policing on both ports.
    pub police: bool,
    /// The traffic crosses a VXLAN tunnel between two bridges.
    pub tunnel: bool,
    /// The traffic crosses a patch pair between two bridges.
    pub patch: bool,
    /// What the frames carry: IPv4/UDP whenever `--features` is given.
    pub frames: Frames,
}

impl Features {
    /// The features `list` names; `acl_rules` sizes the security group.
    pub fn new(list: &[BenchFeature], acl_rules: u32) -> Features {
        let has = |f: BenchFeature| list.contains(&f) || list.contains(&BenchFeature::All);
        Features {
            vlan: has(BenchFeature::Vlan),
            security: has(BenchFeature::Security),
            acl_rules: has(BenchFeature::Acl).then_some(acl_rules),
            police: has(BenchFeature::Police),
            tunnel: list.contains(&BenchFeature::Vxlan),
            patch: list.contains(&BenchFeature::Patch),
            frames: if list.is_empty() {
                Frames::Raw
            } else {
                Frames::Ipv4Udp
            },
        }
    }

    /// For reports: `ip+vlan+security+acl-10+police`, `ip`, or `none`
    /// (raw frames, no feature).
    pub fn label(&self) -> String {
        if self.frames == Frames::Raw {
            return "none".into();
        }
        let mut s = String::from("ip");
        if self.vlan {
            s.push_str("+vlan");
        }
        if self.security {
            s.push_str("+security");
        }
        if let Some(n) = self.acl_rules {
            let _ = write!(s, "+acl-{n}");
        }
        if self.police {
            s.push_str("+police");
        }
        if self.tunnel {
            s.push_str("+vxlan");
        }
        if self.patch {
            s.push_str("+patch");
        }
        s
    }

    /// Whether the traffic ports are on two bridges joined by a patch pair
    /// or a tunnel (`--features patch` or `vxlan`).
    pub fn split(&self) -> bool {
        self.tunnel || self.patch
    }

    /// Sets the features on `port`, the traffic port of `side` (0 = A,
    /// 1 = B) with `flows` stations.
    pub fn apply(&self, port: &mut PortSpec, side: usize, flows: u32) {
        if self.vlan {
            port.tag = Some(BENCH_VLAN);
        }
        if self.security {
            port.port_security = true;
            port.allowed_macs = (0..flows).map(|i| MacAddr(station_mac(side, i))).collect();
            port.ips = vec![station_ip(side).into()];
        }
        if self.acl_rules.is_some() {
            port.acl_in = Some(ACL_NAME.into());
        }
        if self.police {
            port.ingress_policing_rate = Some(POLICE_RATE_KBIT);
            port.ingress_policing_burst = Some(POLICE_BURST_KBIT);
        }
    }

    /// The security group of `--features acl`, if on.
    pub fn acl_table(&self) -> Option<AclSpec> {
        let n = self.acl_rules?;
        let mut spec = AclSpec::new(ACL_NAME, AclAction::Deny);
        spec.rules = acl_rules(n)
            .into_iter()
            .map(|r| {
                r.text
                    .parse::<AclRuleSpec>()
                    .expect("the bench's rules are valid rule text")
            })
            .collect();
        Some(spec)
    }

    /// `ovs-vsctl set` arguments for bench port `port` (the Port and its
    /// Interface have the same name).
    pub fn ovs_settings(&self, port: &str) -> Vec<String> {
        let mut out = Vec::new();
        if self.vlan {
            out.extend(["--", "set", "Port", port].map(String::from));
            out.push(format!("tag={BENCH_VLAN}"));
        }
        if self.police {
            out.extend(["--", "set", "Interface", port].map(String::from));
            out.push(format!("ingress_policing_rate={POLICE_RATE_KBIT}"));
            out.push(format!("ingress_policing_burst={POLICE_BURST_KBIT}"));
        }
        out
    }

    /// The OpenFlow flows (`ovs-ofctl add-flows` lines) for port security
    /// and the ACL, the bench ports being OpenFlow ports 1 (side A) and 2
    /// (side B); None when neither is on, and OVS keeps its single NORMAL
    /// flow. Table 0 admits each port's own stations (security), table 1
    /// holds the rules by descending priority, and what passes both goes to
    /// NORMAL (learning, VLANs).
    pub fn ovs_flows(&self, flows: u32) -> Option<String> {
        self.ovs_flows_joined(flows, None)
    }

    /// [`Features::ovs_flows`] for one of the two bridges of `--features
    /// patch` or `vxlan`, whose OpenFlow port `join` is the patch or tunnel
    /// port to the other bridge: frames from it go straight to NORMAL, as
    /// weir checks a frame at its traffic port only (the traffic ports keep
    /// their numbers, 1 on side A's bridge and 2 on side B's).
    pub fn ovs_flows_joined(&self, flows: u32, join: Option<u16>) -> Option<String> {
        if !self.security && self.acl_rules.is_none() {
            return None;
        }
        let mut out = String::new();
        if let Some(port) = join {
            let _ = writeln!(out, "table=0,priority=65535,in_port={port},actions=NORMAL");
        }
        if self.security {
            for side in 0..2 {
                for i in 0..flows {
                    let _ = writeln!(
                        out,
                        "table=0,priority=100,in_port={},dl_src={},ip,nw_src={},actions=resubmit(,1)",
                        side + 1,
                        MacAddr(station_mac(side, i)),
                        station_ip(side),
                    );
                }
            }
            out.push_str("table=0,priority=0,actions=drop\n");
        } else {
            out.push_str("table=0,priority=0,actions=resubmit(,1)\n");
        }
        match self.acl_rules {
            Some(n) => {
                let rules = acl_rules(n);
                for (k, r) in rules.iter().enumerate() {
                    let action = if r.allow { "NORMAL" } else { "drop" };
                    let _ = writeln!(
                        out,
                        "table=1,priority={},{},actions={action}",
                        60_000 - k,
                        r.ovs_match
                    );
                }
                out.push_str("table=1,priority=0,actions=drop\n");
            }
            None => out.push_str("table=1,priority=0,actions=NORMAL\n"),
        }
        Some(out)
    }
}

/// One rule of the bench's security group, as weir's rule text and as an
/// OpenFlow match.
struct BenchRule {
    text: String,
    ovs_match: String,
    allow: bool,
}

/// `n` rules: `n - 1` deny rules that the bench's traffic does not match
/// (TCP and UDP alternately, each from its own /32 of 198.18.0.0/15 to its
/// own port), then the rule that allows it (UDP to 10.77.0.0/24, port
/// [`UDP_DST_PORT`]). A frame is looked at by every rule before the last.
fn acl_rules(n: u32) -> Vec<BenchRule> {
    let mut rules: Vec<BenchRule> = (0..n.saturating_sub(1))
        .map(|i| {
            let proto = if i % 2 == 0 { "tcp" } else { "udp" };
            let src = format!("198.18.{}.{}", i / 256, i % 256);
            let port = 1000 + i;
            BenchRule {
                text: format!("{proto} src={src}/32 dst_ports={port} deny"),
                ovs_match: format!("{proto},nw_src={src},tp_dst={port}"),
                allow: false,
            }
        })
        .collect();
    if n > 0 {
        rules.push(BenchRule {
            text: format!("udp dst=10.77.0.0/24 dst_ports={UDP_DST_PORT} allow"),
            ovs_match: format!("udp,nw_dst=10.77.0.0/24,tp_dst={UDP_DST_PORT}"),
            allow: true,
        });
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_config::PortType;

    #[test]
    fn no_features_keep_raw_frames_and_the_plain_path() {
        let f = Features::new(&[], 10);
        assert_eq!(f, Features::default());
        assert_eq!(f.label(), "none");
        let mut p = PortSpec::new("a", PortType::VhostUser);
        f.apply(&mut p, 0, 4);
        assert_eq!(p, PortSpec::new("a", PortType::VhostUser));
        assert!(f.acl_table().is_none());
        assert!(f.ovs_settings("vhu0").is_empty());
        assert!(f.ovs_flows(1).is_none());
    }

    #[test]
    fn all_turns_on_every_feature_with_ip_frames() {
        let f = Features::new(&[BenchFeature::All], 100);
        assert_eq!(f.label(), "ip+vlan+security+acl-100+police");
        assert_eq!(f.frames, Frames::Ipv4Udp);
        let mut p = PortSpec::new("b", PortType::VhostUser);
        f.apply(&mut p, 1, 3);
        assert_eq!(p.tag, Some(BENCH_VLAN));
        assert!(p.port_security);
        assert_eq!(p.allowed_macs.len(), 3);
        assert_eq!(p.allowed_macs[2], MacAddr(station_mac(1, 2)));
        assert_eq!(p.ips, vec![std::net::IpAddr::from(station_ip(1))]);
        assert_eq!(p.acl_in.as_deref(), Some(ACL_NAME));
        assert_eq!(p.ingress_policing_rate, Some(POLICE_RATE_KBIT));
        assert_eq!(Features::new(&[BenchFeature::Ip], 10).label(), "ip");
    }

    #[test]
    fn the_acl_table_has_its_allow_rule_last_and_ovs_the_same_rules() {
        let f = Features::new(&[BenchFeature::Acl], 10);
        let t = f.acl_table().unwrap();
        assert_eq!(t.rules.len(), 10);
        assert_eq!(t.default, AclAction::Deny);
        assert!(t.rules[..9].iter().all(|r| r.action == AclAction::Deny));
        assert_eq!(t.rules[9].action, AclAction::Allow);
        let flows = f.ovs_flows(1).unwrap();
        let lines: Vec<&str> = flows.lines().collect();
        // The pass-through table 0, ten rules and table 1's default.
        assert_eq!(lines.len(), 12);
        assert_eq!(lines[0], "table=0,priority=0,actions=resubmit(,1)");
        assert!(
            lines[10].ends_with("tp_dst=7777,actions=NORMAL"),
            "{}",
            lines[10]
        );
        assert!(lines[1].contains("priority=60000,tcp,nw_src=198.18.0.0,tp_dst=1000"));
        assert_eq!(lines[11], "table=1,priority=0,actions=drop");
        // The largest table the switch takes is valid rule text too.
        let big = Features::new(&[BenchFeature::Acl], MAX_ACL_RULES)
            .acl_table()
            .unwrap();
        assert_eq!(big.rules.len(), MAX_ACL_RULES as usize);
    }

    #[test]
    fn security_flows_admit_each_ports_own_stations_only() {
        let f = Features::new(&[BenchFeature::Security, BenchFeature::Vlan], 10);
        let flows = f.ovs_flows(2).unwrap();
        let admits: Vec<&str> = flows.lines().filter(|l| l.contains("in_port")).collect();
        assert_eq!(admits.len(), 4);
        assert!(admits[0].contains("in_port=1,dl_src=02:77:0a:00:00:00,ip,nw_src=10.77.0.1"));
        assert!(admits[3].contains("in_port=2,dl_src=02:77:0b:00:00:01,ip,nw_src=10.77.0.2"));
        assert!(flows.contains("table=0,priority=0,actions=drop"));
        assert!(flows.contains("table=1,priority=0,actions=NORMAL"));
        let s = f.ovs_settings("vhu0");
        assert_eq!(s, ["--", "set", "Port", "vhu0", "tag=10"]);
    }

    #[test]
    fn joined_bridges_pass_the_other_bridges_frames_straight_to_normal() {
        let f = Features::new(&[BenchFeature::Security, BenchFeature::Vxlan], 10);
        assert!(f.split());
        let flows = f.ovs_flows_joined(1, Some(2)).unwrap();
        let first = flows.lines().next().unwrap();
        assert_eq!(first, "table=0,priority=65535,in_port=2,actions=NORMAL");
        // The rest is the one-bridge set-up, unchanged.
        let rest: Vec<&str> = flows.lines().skip(1).collect();
        assert_eq!(rest.join("\n") + "\n", f.ovs_flows(1).unwrap());
        // Without a flow-based feature OVS keeps NORMAL on both bridges.
        let plain = Features::new(&[BenchFeature::Patch], 10);
        assert!(plain.split());
        assert_eq!(plain.ovs_flows_joined(1, Some(1)), None);
    }
}
