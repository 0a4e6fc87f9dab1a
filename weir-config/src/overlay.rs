//! The overlay keys of a `[[port]]` table: weir's own addresses on a port
//! (`ip`, `gateway`, `gateway6`) and the tunnel port types (`vxlan`,
//! `geneve`: `underlay`, `local_ip`, `remote_ips`, `vni`, `vlan_vni`,
//! `dst_port`). See docs/overlay.md.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use dataplane::switch::vlan::PortVlan;
use dataplane::switch::VlanMode;
pub use dataplane::wire::tunnel::TunnelKind;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::PortError;

/// Largest VNI (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;

/// Most remote tunnel endpoints one tunnel port replicates to.
pub const MAX_REMOTES: usize = dataplane::tunnel::MAX_REMOTES;

/// Most addresses of weir's own on one port.
pub const MAX_HOST_ADDRS: usize = 16;

/// One address of weir's own on a port, with its prefix length:
/// `192.0.2.1/24`, `fd00::1/64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IfAddr {
    /// The address.
    pub addr: IpAddr,
    /// Prefix length (0..=32 or 0..=128).
    pub prefix: u8,
}

impl IfAddr {
    /// Whether `ip` is inside this address's subnet.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for IfAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for IfAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` has no prefix length: write it as 192.0.2.1/24"))?;
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("`{a}` is not an IPv4 or IPv6 address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| format!("prefix length `{p}` is not 0..={max}"))?;
        let usable = match addr {
            IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()),
            IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
        };
        if !usable {
            return Err(format!("`{addr}` cannot be a host's address"));
        }
        Ok(IfAddr { addr, prefix })
    }
}

/// weir's own presence on a port's segment: its addresses and gateways.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostIp {
    /// The addresses, IPv4 and IPv6, in the order written.
    pub addrs: Vec<IfAddr>,
    /// The IPv4 next hop for addresses outside the port's subnets.
    pub gateway4: Option<Ipv4Addr>,
    /// The IPv6 next hop for addresses outside the port's subnets.
    pub gateway6: Option<Ipv6Addr>,
}

impl HostIp {
    /// The IPv4 addresses.
    pub fn v4(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.addrs.iter().filter_map(|a| match a.addr {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
    }

    /// Whether `ip` is one of the addresses.
    pub fn has(&self, ip: IpAddr) -> bool {
        self.addrs.iter().any(|a| a.addr == ip)
    }

    /// Checks `ip`, `gateway` and `gateway6` as written.
    pub(crate) fn parse(
        ip: &[String],
        gateway4: Option<Ipv4Addr>,
        gateway6: Option<Ipv6Addr>,
    ) -> Result<Option<HostIp>, PortError> {
        let bad = |key: &'static str, reason: String| PortError::Overlay { key, reason };
        if ip.is_empty() {
            if gateway4.is_some() {
                return Err(bad("gateway", "needs `ip` on the same port".into()));
            }
            if gateway6.is_some() {
                return Err(bad("gateway6", "needs `ip` on the same port".into()));
            }
            return Ok(None);
        }
        if ip.len() > MAX_HOST_ADDRS {
            return Err(bad("ip", format!("at most {MAX_HOST_ADDRS} addresses")));
        }
        let mut addrs: Vec<IfAddr> = Vec::with_capacity(ip.len());
        for s in ip {
            let a: IfAddr = s.trim().parse().map_err(|e| bad("ip", e))?;
            if addrs.iter().any(|b| b.addr == a.addr) {
                return Err(bad("ip", format!("`{}` is listed twice", a.addr)));
            }
            addrs.push(a);
        }
        let host = HostIp {
            addrs,
            gateway4,
            gateway6,
        };
        if let Some(g) = gateway4 {
            if !host.addrs.iter().any(|a| a.contains(IpAddr::V4(g))) || host.has(g.into()) {
                return Err(bad(
                    "gateway",
                    format!("{g} is not another address inside one of the port's IPv4 subnets"),
                ));
            }
        }
        if let Some(g) = gateway6 {
            if !host.addrs.iter().any(|a| a.contains(IpAddr::V6(g))) || host.has(g.into()) {
                return Err(bad(
                    "gateway6",
                    format!("{g} is not another address inside one of the port's IPv6 subnets"),
                ));
            }
        }
        Ok(Some(host))
    }
}

/// Which VNI a tunnel port's frames travel with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VniMap {
    /// `vni = N`: every frame, as it is.
    Single(u32),
    /// `vlan_vni = {10 = 5010, ...}`: a frame of bridge VLAN v leaves with
    /// VNI map[v], untagged inside; a VNI received enters as its VLAN.
    /// Sorted by VLAN.
    ByVlan(Vec<(u16, u32)>),
}

impl VniMap {
    /// Every VNI the port carries.
    pub fn vnis(&self) -> Vec<u32> {
        match self {
            VniMap::Single(v) => vec![*v],
            VniMap::ByVlan(m) => m.iter().map(|&(_, v)| v).collect(),
        }
    }
}

/// A validated `vxlan` or `geneve` port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelConfig {
    /// The encapsulation.
    pub kind: TunnelKind,
    /// The port (with an `ip`) whose segment carries the tunnel's packets.
    pub underlay: String,
    /// The source address of the tunnel's packets: one of the underlay's.
    pub local_ip: Ipv4Addr,
    /// The remote tunnel endpoints: the flood list.
    pub remote_ips: Vec<Ipv4Addr>,
    /// The VNIs.
    pub vni: VniMap,
    /// The UDP destination port.
    pub dst_port: u16,
}

/// Checks a tunnel's flood list: one to [`MAX_REMOTES`] unicast addresses,
/// none of them `local_ip` or listed twice.
fn check_remotes(local_ip: Ipv4Addr, remote_ips: &[Ipv4Addr]) -> Result<(), PortError> {
    let bad = |reason: String| PortError::Overlay {
        key: "remote_ips",
        reason,
    };
    if remote_ips.is_empty() {
        return Err(bad(
            "required: at least one remote tunnel endpoint (the flood list)".into(),
        ));
    }
    if remote_ips.len() > MAX_REMOTES {
        return Err(bad(format!("at most {MAX_REMOTES} remotes")));
    }
    for (i, r) in remote_ips.iter().enumerate() {
        if r.is_unspecified() || r.is_multicast() || r.is_broadcast() || r.is_loopback() {
            return Err(bad(format!("{r} cannot be a tunnel endpoint")));
        }
        if *r == local_ip {
            return Err(bad(format!("{r} is local_ip itself")));
        }
        if remote_ips[..i].contains(r) {
            return Err(bad(format!("{r} is listed twice")));
        }
    }
    Ok(())
}

/// A `remote_ips` value as `port set` takes it: addresses separated by
/// commas or spaces, optionally in brackets and quotes as in a `[[port]]`
/// table (`192.0.2.2,192.0.2.3` or `["192.0.2.2", "192.0.2.3"]`).
///
/// # Errors
///
/// [`PortError::Overlay`] for a word that is not an IPv4 address.
pub fn parse_remote_ips(text: &str) -> Result<Vec<Ipv4Addr>, PortError> {
    let inner = text.trim();
    let inner = inner
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(inner);
    inner
        .split(|c: char| c == ',' || c.is_whitespace())
        .map(|w| w.trim_matches('"'))
        .filter(|w| !w.is_empty())
        .map(|w| {
            w.parse().map_err(|_| PortError::Overlay {
                key: "remote_ips",
                reason: format!("`{w}` is not an IPv4 address"),
            })
        })
        .collect()
}

impl TunnelConfig {
    /// The tunnel keys as written, checked.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn parse(
        kind: TunnelKind,
        underlay: Option<&str>,
        local_ip: Option<Ipv4Addr>,
        remote_ips: &[Ipv4Addr],
        vni: Option<u32>,
        vlan_vni: &BTreeMap<String, u32>,
        dst_port: Option<u16>,
        queues: Option<u16>,
    ) -> Result<TunnelConfig, PortError> {
        let bad = |key: &'static str, reason: String| PortError::Overlay { key, reason };
        let underlay = underlay
            .ok_or_else(|| {
                bad(
                    "underlay",
                    "required: the port with an `ip` that carries the tunnel".into(),
                )
            })?
            .to_owned();
        let local_ip = local_ip.ok_or_else(|| {
            bad(
                "local_ip",
                "required: one of the underlay port's IPv4 addresses".into(),
            )
        })?;
        check_remotes(local_ip, remote_ips)?;
        let vni = match (vni, vlan_vni.is_empty()) {
            (Some(_), false) => {
                return Err(bad(
                    "vlan_vni",
                    "set either `vni` (one VNI for every frame) or `vlan_vni` (a VNI per bridge VLAN), not both".into(),
                ))
            }
            (None, true) => {
                return Err(bad(
                    "vni",
                    "required: `vni = N` or `vlan_vni = { VLAN = VNI, ... }`".into(),
                ))
            }
            (Some(v), true) => {
                if v > MAX_VNI {
                    return Err(bad("vni", format!("{v} is not 0..={MAX_VNI}")));
                }
                VniMap::Single(v)
            }
            (None, false) => {
                let mut m: Vec<(u16, u32)> = Vec::with_capacity(vlan_vni.len());
                for (k, &v) in vlan_vni {
                    let vid: u16 = k
                        .trim()
                        .parse()
                        .ok()
                        .filter(|n| (1..=4094).contains(n))
                        .ok_or_else(|| bad("vlan_vni", format!("`{k}` is not a VLAN id (1..=4094)")))?;
                    if v > MAX_VNI {
                        return Err(bad("vlan_vni", format!("VNI {v} is not 0..={MAX_VNI}")));
                    }
                    if m.iter().any(|&(w, _)| w == vid) {
                        return Err(bad("vlan_vni", format!("VLAN {vid} is mapped twice")));
                    }
                    if let Some(&(w, _)) = m.iter().find(|&&(_, n)| n == v) {
                        return Err(bad(
                            "vlan_vni",
                            format!("VNI {v} is mapped from VLANs {w} and {vid}"),
                        ));
                    }
                    m.push((vid, v));
                }
                m.sort_unstable();
                VniMap::ByVlan(m)
            }
        };
        let dst_port = dst_port.unwrap_or(kind.default_port());
        if dst_port == 0 {
            return Err(bad("dst_port", "0 is not a UDP port".into()));
        }
        if queues.is_some_and(|q| q != 1) {
            return Err(bad("queues", "a tunnel port has one queue".into()));
        }
        Ok(TunnelConfig {
            kind,
            underlay,
            local_ip,
            remote_ips: remote_ips.to_vec(),
            vni,
            dst_port,
        })
    }

    /// The tunnel with `remote_ips` for its remotes (`port set NAME
    /// remote_ips=...`), checked as the config file's are.
    ///
    /// # Errors
    ///
    /// [`PortError::Overlay`] for `remote_ips`.
    pub fn with_remote_ips(&self, remote_ips: &[Ipv4Addr]) -> Result<TunnelConfig, PortError> {
        check_remotes(self.local_ip, remote_ips)?;
        Ok(TunnelConfig {
            remote_ips: remote_ips.to_vec(),
            ..self.clone()
        })
    }

    /// The VLAN port mode `vlan_vni` implies: a trunk of exactly the mapped
    /// VLANs. None for `vni`.
    pub fn implied_vlan(&self) -> Option<PortVlan> {
        match &self.vni {
            VniMap::Single(_) => None,
            VniMap::ByVlan(m) => {
                let vids: Vec<u16> = m.iter().map(|&(v, _)| v).collect();
                PortVlan::new(Some(VlanMode::Trunk), None, &vids).ok()
            }
        }
    }
}

/// `ip` is written as one address or a list of them.
pub(crate) mod ip_list_key {
    use super::*;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }

    pub fn serialize<S: Serializer>(v: &[String], s: S) -> Result<S::Ok, S::Error> {
        match v {
            [one] => s.serialize_str(one),
            many => many.serialize(s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        Ok(match OneOrMany::deserialize(d)? {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_with_their_prefix_and_contain_their_subnet() {
        let a: IfAddr = "192.0.2.1/24".parse().unwrap();
        assert!(a.contains("192.0.2.200".parse().unwrap()));
        assert!(!a.contains("192.0.3.1".parse().unwrap()));
        assert!(!a.contains("fd00::1".parse().unwrap()));
        let b: IfAddr = "fd00::1/64".parse().unwrap();
        assert!(b.contains("fd00::99".parse().unwrap()));
        assert!(!b.contains("fd01::1".parse().unwrap()));
        let all: IfAddr = "10.0.0.1/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        for bad in [
            "192.0.2.1",
            "192.0.2.1/33",
            "x/24",
            "0.0.0.0/8",
            "224.0.0.1/4",
            "ff02::1/64",
        ] {
            assert!(bad.parse::<IfAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_gateway_must_be_inside_a_subnet_of_the_port() {
        let ip = vec!["192.0.2.1/24".to_owned()];
        assert!(HostIp::parse(&ip, Some("192.0.2.254".parse().unwrap()), None).is_ok());
        let e = HostIp::parse(&ip, Some("198.51.100.1".parse().unwrap()), None).unwrap_err();
        assert_eq!(e.key(), Some("gateway"));
        let e = HostIp::parse(&[], Some("192.0.2.254".parse().unwrap()), None).unwrap_err();
        assert!(e.to_string().contains("needs `ip`"), "{e}");
        let twice = vec!["192.0.2.1/24".to_owned(), "192.0.2.1/25".to_owned()];
        assert!(HostIp::parse(&twice, None, None).is_err());
    }

    fn tunnel(
        vni: Option<u32>,
        vlan_vni: &[(&str, u32)],
        remotes: &[&str],
    ) -> Result<TunnelConfig, PortError> {
        let map: BTreeMap<String, u32> = vlan_vni.iter().map(|&(k, v)| (k.to_owned(), v)).collect();
        let remotes: Vec<Ipv4Addr> = remotes.iter().map(|r| r.parse().unwrap()).collect();
        TunnelConfig::parse(
            TunnelKind::Vxlan,
            Some("uplink"),
            Some("192.0.2.1".parse().unwrap()),
            &remotes,
            vni,
            &map,
            None,
            None,
        )
    }

    #[test]
    fn a_flood_list_is_written_for_port_set_as_in_a_config_file() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let two = vec![ip("192.0.2.2"), ip("192.0.2.3")];
        for text in [
            "192.0.2.2,192.0.2.3",
            " 192.0.2.2, 192.0.2.3 ",
            "192.0.2.2 192.0.2.3",
            r#"["192.0.2.2", "192.0.2.3"]"#,
        ] {
            assert_eq!(parse_remote_ips(text).unwrap(), two, "{text}");
        }
        assert_eq!(parse_remote_ips("").unwrap(), Vec::<Ipv4Addr>::new());
        let e = parse_remote_ips("192.0.2.2,192.0.2.300").unwrap_err();
        assert!(
            e.to_string()
                .contains("`192.0.2.300` is not an IPv4 address"),
            "{e}"
        );
        // And the list is checked as a config file's.
        let t = tunnel(Some(5000), &[], &["192.0.2.2"]).unwrap();
        assert_eq!(t.with_remote_ips(&two).unwrap().remote_ips, two);
        for (list, why) in [
            (vec![], "at least one"),
            (vec![ip("192.0.2.2"), ip("192.0.2.2")], "listed twice"),
            (vec![ip("192.0.2.1")], "local_ip itself"),
            (vec![ip("224.0.0.1")], "cannot be a tunnel endpoint"),
        ] {
            let e = t.with_remote_ips(&list).unwrap_err();
            assert!(e.to_string().contains(why), "{list:?}: {e}");
        }
    }

    #[test]
    fn a_tunnel_takes_one_vni_or_a_vlan_map_and_a_flood_list() {
        let t = tunnel(Some(5000), &[], &["192.0.2.2"]).unwrap();
        assert_eq!(t.vni, VniMap::Single(5000));
        assert_eq!(t.dst_port, 4789);
        assert!(t.implied_vlan().is_none());
        let t = tunnel(None, &[("20", 5020), ("10", 5010)], &["192.0.2.2"]).unwrap();
        assert_eq!(t.vni, VniMap::ByVlan(vec![(10, 5010), (20, 5020)]));
        let vlan = t.implied_vlan().unwrap();
        assert!(vlan.is_member(dataplane::VlanId(10)) && !vlan.is_member(dataplane::VlanId(30)));
        let key = |r: Result<TunnelConfig, PortError>| r.unwrap_err().key();
        assert_eq!(key(tunnel(None, &[], &["192.0.2.2"])), Some("vni"));
        assert_eq!(
            key(tunnel(Some(1), &[("10", 2)], &["192.0.2.2"])),
            Some("vlan_vni")
        );
        assert_eq!(key(tunnel(Some(1 << 24), &[], &["192.0.2.2"])), Some("vni"));
        assert_eq!(
            key(tunnel(None, &[("0", 2)], &["192.0.2.2"])),
            Some("vlan_vni")
        );
        assert_eq!(
            key(tunnel(None, &[("10", 2), ("20", 2)], &["192.0.2.2"])),
            Some("vlan_vni")
        );
        assert_eq!(key(tunnel(Some(1), &[], &[])), Some("remote_ips"));
        assert_eq!(
            key(tunnel(Some(1), &[], &["192.0.2.1"])),
            Some("remote_ips")
        );
        assert_eq!(
            key(tunnel(Some(1), &[], &["192.0.2.2", "192.0.2.2"])),
            Some("remote_ips")
        );
        assert_eq!(
            key(tunnel(Some(1), &[], &["224.0.0.5"])),
            Some("remote_ips")
        );
    }
}
