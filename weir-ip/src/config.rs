//! The host presence's configuration ([`HostConfig`]), checked once into
//! [`Host`]: the addresses and subnets every other module asks about.
//!
//! Layer: control (slow path). Not on the packet path.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dataplane::MacAddr;

/// Most addresses one port can carry, counting the IPv6 link-local address
/// weir adds (smoltcp's interface table is fixed at build time: the
/// `iface-max-addr-count-8` feature).
pub const MAX_ADDRS: usize = 8;

/// The IP MTU a [`HostConfig`] usually carries: Ethernet's.
pub const DEFAULT_MTU: usize = 1500;

/// weir's host presence on one port's segment, as the runtime gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// The port's name (thread name, logs).
    pub port: String,
    /// The host MAC: the port's `mac` key, or one derived from its name.
    pub mac: MacAddr,
    /// Addresses with their prefix lengths (`192.0.2.1/24` is
    /// `(192.0.2.1, 24)`), IPv4 and IPv6, at most [`MAX_ADDRS`]. With an
    /// IPv6 address and no link-local one, the stack adds `fe80::/64` with
    /// an interface identifier from the MAC (RFC 4291 appendix A), as every
    /// IPv6 host has one: neighbours and routers solicit from theirs.
    pub addrs: Vec<(IpAddr, u8)>,
    /// IPv4 default gateway; must be inside one of the IPv4 subnets.
    pub gateway4: Option<Ipv4Addr>,
    /// IPv6 default gateway; inside one of the IPv6 subnets or link-local.
    pub gateway6: Option<Ipv6Addr>,
    /// IP MTU of the port (bytes above Ethernet): the largest packet the
    /// stack sends, so the largest echo request it answers whole.
    pub mtu: usize,
}

/// A [`HostConfig`] that [`HostConfig::check`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The host MAC is a group address or all zeros.
    #[error("port {port}: host MAC {mac} is not a unicast address")]
    MacNotUnicast {
        /// Port name.
        port: String,
        /// The refused MAC.
        mac: MacAddr,
    },
    /// No address at all: there would be nothing to answer for.
    #[error("port {port}: no IP address")]
    NoAddress {
        /// Port name.
        port: String,
    },
    /// More addresses than the stack holds.
    #[error("port {port}: {count} IP addresses, at most {max} are supported")]
    TooManyAddresses {
        /// Port name.
        port: String,
        /// How many were given.
        count: usize,
        /// [`MAX_ADDRS`].
        max: usize,
    },
    /// A prefix longer than the address.
    #[error("port {port}: prefix length {prefix} is too long for {addr}")]
    BadPrefix {
        /// Port name.
        port: String,
        /// The address.
        addr: IpAddr,
        /// Its prefix length.
        prefix: u8,
    },
    /// Unspecified, multicast, broadcast or loopback address.
    #[error("port {port}: {addr} is not a unicast host address")]
    NotUnicast {
        /// Port name.
        port: String,
        /// The refused address.
        addr: IpAddr,
    },
    /// The same address twice.
    #[error("port {port}: address {addr} given twice")]
    DuplicateAddress {
        /// Port name.
        port: String,
        /// The repeated address.
        addr: IpAddr,
    },
    /// A gateway outside every subnet of the port: it could not be reached.
    #[error("port {port}: gateway {gateway} is in none of the port's subnets")]
    GatewayOffLink {
        /// Port name.
        port: String,
        /// The gateway.
        gateway: IpAddr,
    },
    /// An MTU below what IPv4 (576) or, with an IPv6 address, IPv6 (1280)
    /// requires, or above 9600.
    #[error("port {port}: MTU {mtu} is outside 576..=9600 (1280..=9600 with an IPv6 address)")]
    BadMtu {
        /// Port name.
        port: String,
        /// The refused MTU.
        mtu: usize,
    },
}

/// A checked [`HostConfig`].
#[derive(Debug, Clone)]
pub(crate) struct Host {
    pub port: String,
    pub mac: MacAddr,
    pub v4: Vec<(Ipv4Addr, u8)>,
    pub v6: Vec<(Ipv6Addr, u8)>,
    pub gateway4: Option<Ipv4Addr>,
    pub gateway6: Option<Ipv6Addr>,
    pub mtu: usize,
}

fn mask4(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask6(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

fn in4(net: Ipv4Addr, prefix: u8, ip: Ipv4Addr) -> bool {
    let m = mask4(prefix);
    u32::from(net) & m == u32::from(ip) & m
}

fn in6(net: Ipv6Addr, prefix: u8, ip: Ipv6Addr) -> bool {
    let m = mask6(prefix);
    u128::from(net) & m == u128::from(ip) & m
}

/// The link-local address of `mac`: `fe80::` and the modified EUI-64
/// (universal/local bit flipped, `ff:fe` in the middle).
pub fn link_local(mac: MacAddr) -> Ipv6Addr {
    let m = mac.0;
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        m[0] ^ 0x02,
        m[1],
        m[2],
        0xff,
        0xfe,
        m[3],
        m[4],
        m[5],
    ])
}

fn is_link_local6(ip: Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

impl HostConfig {
    /// Checks the configuration: a unicast MAC, 1 to [`MAX_ADDRS`] distinct
    /// unicast addresses with valid prefixes, on-link gateways, a sane MTU.
    ///
    /// # Errors
    /// The first [`ConfigError`] found.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.checked().map(|_| ())
    }

    pub(crate) fn checked(&self) -> Result<Host, ConfigError> {
        let port = || self.port.clone();
        if self.mac.is_multicast() || self.mac.0 == [0; 6] {
            return Err(ConfigError::MacNotUnicast {
                port: port(),
                mac: self.mac,
            });
        }
        if self.addrs.is_empty() {
            return Err(ConfigError::NoAddress { port: port() });
        }
        if self.addrs.len() > MAX_ADDRS {
            return Err(ConfigError::TooManyAddresses {
                port: port(),
                count: self.addrs.len(),
                max: MAX_ADDRS,
            });
        }
        if !(576..=9600).contains(&self.mtu) {
            return Err(ConfigError::BadMtu {
                port: port(),
                mtu: self.mtu,
            });
        }
        let mut host = Host {
            port: port(),
            mac: self.mac,
            v4: Vec::new(),
            v6: Vec::new(),
            gateway4: self.gateway4,
            gateway6: self.gateway6,
            mtu: self.mtu,
        };
        for (i, &(addr, prefix)) in self.addrs.iter().enumerate() {
            if self.addrs[..i].iter().any(|&(a, _)| a == addr) {
                return Err(ConfigError::DuplicateAddress { port: port(), addr });
            }
            let not_unicast = || ConfigError::NotUnicast { port: port(), addr };
            let bad_prefix = || ConfigError::BadPrefix {
                port: port(),
                addr,
                prefix,
            };
            match addr {
                IpAddr::V4(a) => {
                    if prefix > 32 {
                        return Err(bad_prefix());
                    }
                    if a.is_unspecified() || a.is_multicast() || a.is_broadcast() || a.is_loopback()
                    {
                        return Err(not_unicast());
                    }
                    host.v4.push((a, prefix));
                }
                IpAddr::V6(a) => {
                    if prefix > 128 {
                        return Err(bad_prefix());
                    }
                    if a.is_unspecified() || a.is_multicast() || a.is_loopback() {
                        return Err(not_unicast());
                    }
                    host.v6.push((a, prefix));
                }
            }
        }
        // IPv6 needs links of at least 1280 bytes (RFC 8200 §5).
        if !host.v6.is_empty() && self.mtu < 1280 {
            return Err(ConfigError::BadMtu {
                port: port(),
                mtu: self.mtu,
            });
        }
        if !host.v6.is_empty() && !host.v6.iter().any(|&(a, _)| is_link_local6(a)) {
            host.v6.push((link_local(self.mac), 64));
        }
        let count = host.v4.len() + host.v6.len();
        if count > MAX_ADDRS {
            return Err(ConfigError::TooManyAddresses {
                port: port(),
                count,
                max: MAX_ADDRS,
            });
        }
        if let Some(gw) = self.gateway4 {
            if !host.on_link4(gw) {
                return Err(ConfigError::GatewayOffLink {
                    port: port(),
                    gateway: gw.into(),
                });
            }
        }
        if let Some(gw) = self.gateway6 {
            if !host.on_link6(gw) && !is_link_local6(gw) {
                return Err(ConfigError::GatewayOffLink {
                    port: port(),
                    gateway: gw.into(),
                });
            }
        }
        Ok(host)
    }
}

impl Host {
    /// True if `ip` is inside one of the port's IPv4 subnets.
    pub fn on_link4(&self, ip: Ipv4Addr) -> bool {
        self.v4.iter().any(|&(net, p)| in4(net, p, ip))
    }

    /// True if `ip` is inside one of the port's IPv6 subnets.
    pub fn on_link6(&self, ip: Ipv6Addr) -> bool {
        self.v6.iter().any(|&(net, p)| in6(net, p, ip))
    }

    /// True if `ip` is one of weir's own addresses on this port.
    pub fn is_own(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self.v4.iter().any(|&(o, _)| o == a),
            IpAddr::V6(a) => self.v6.iter().any(|&(o, _)| o == a),
        }
    }

    /// The address to resolve to reach `ip`: itself when on-link, else the
    /// IPv4 gateway; none for weir's own addresses or without a gateway.
    pub fn next_hop(&self, ip: Ipv4Addr) -> Option<Ipv4Addr> {
        if self.is_own(ip.into()) || ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
            return None;
        }
        if self.on_link4(ip) {
            Some(ip)
        } else {
            self.gateway4
        }
    }

    /// weir's address in the subnet of `on_link` (the source of probes).
    pub fn source_for(&self, on_link: Ipv4Addr) -> Option<Ipv4Addr> {
        self.v4
            .iter()
            .find(|&&(net, p)| in4(net, p, on_link))
            .map(|&(a, _)| a)
    }

    /// Whether a sender seen in ARP or ND goes into the neighbour table: a
    /// unicast MAC other than ours, and an address of someone else inside
    /// one of the port's subnets.
    pub fn snoopable(&self, ip: IpAddr, mac: MacAddr) -> bool {
        if mac.is_multicast() || mac.0 == [0; 6] || mac == self.mac || self.is_own(ip) {
            return false;
        }
        match ip {
            IpAddr::V4(a) => {
                !a.is_unspecified() && !a.is_broadcast() && !a.is_multicast() && self.on_link4(a)
            }
            IpAddr::V6(a) => !a.is_unspecified() && !a.is_multicast() && self.on_link6(a),
        }
    }

    /// Every address with its prefix, IPv4 first.
    pub fn addresses(&self) -> Vec<(IpAddr, u8)> {
        self.v4
            .iter()
            .map(|&(a, p)| (IpAddr::V4(a), p))
            .chain(self.v6.iter().map(|&(a, p)| (IpAddr::V6(a), p)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(addrs: &[(&str, u8)]) -> HostConfig {
        HostConfig {
            port: "uplink".into(),
            mac: MacAddr([0x02, 0, 0, 0, 0, 1]),
            addrs: addrs
                .iter()
                .map(|(a, p)| (a.parse().unwrap(), *p))
                .collect(),
            gateway4: None,
            gateway6: None,
            mtu: DEFAULT_MTU,
        }
    }

    #[test]
    fn next_hop_is_the_address_on_link_else_the_gateway() {
        let mut c = cfg(&[("192.0.2.1", 24)]);
        let h = c.checked().unwrap();
        assert_eq!(
            h.next_hop("192.0.2.7".parse().unwrap()),
            Some("192.0.2.7".parse().unwrap())
        );
        assert_eq!(h.next_hop("198.51.100.7".parse().unwrap()), None);
        assert_eq!(
            h.next_hop("192.0.2.1".parse().unwrap()),
            None,
            "own address"
        );
        c.gateway4 = Some("192.0.2.254".parse().unwrap());
        let h = c.checked().unwrap();
        assert_eq!(
            h.next_hop("198.51.100.7".parse().unwrap()),
            Some("192.0.2.254".parse().unwrap())
        );
        assert_eq!(
            h.source_for("192.0.2.254".parse().unwrap()),
            Some("192.0.2.1".parse().unwrap())
        );
    }

    #[test]
    fn an_ipv6_port_gets_a_link_local_address_from_its_mac() {
        let h = cfg(&[("192.0.2.1", 24)]).checked().unwrap();
        assert_eq!(h.addresses().len(), 1, "IPv4 only: no link-local");
        let mut c = cfg(&[("192.0.2.1", 24), ("fd00::1", 64)]);
        c.mac = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        let ll: Ipv6Addr = "fe80::5054:ff:fe12:3456".parse().unwrap();
        assert_eq!(link_local(c.mac), ll);
        let h = c.checked().unwrap();
        assert_eq!(h.addresses().last(), Some(&(IpAddr::V6(ll), 64)));
        assert!(h.on_link6("fe80::1".parse().unwrap()));
        c.addrs.push(("fe80::99".parse().unwrap(), 64));
        let h = c.checked().unwrap();
        assert_eq!(
            h.addresses().len(),
            3,
            "a configured link-local replaces it"
        );
        // Seven addresses plus the link-local is the most.
        let mut c = cfg(&[("fd00::1", 64)]);
        c.addrs
            .extend((1..=7).map(|i| (IpAddr::V4(Ipv4Addr::new(192, 0, 2, i)), 24)));
        assert!(matches!(
            c.check(),
            Err(ConfigError::TooManyAddresses { count: 9, .. })
        ));
        c.addrs.pop();
        assert_eq!(c.check(), Ok(()));
    }

    #[test]
    fn prefix_zero_and_thirty_two_are_handled() {
        let h = cfg(&[("192.0.2.1", 32), ("10.0.0.1", 0)])
            .checked()
            .unwrap();
        assert!(h.on_link4("192.0.2.1".parse().unwrap()));
        assert!(
            h.on_link4("8.8.8.8".parse().unwrap()),
            "/0 covers everything"
        );
        let h = cfg(&[("192.0.2.1", 32)]).checked().unwrap();
        assert!(!h.on_link4("192.0.2.2".parse().unwrap()));
    }

    #[test]
    fn bad_configs_are_refused_by_name() {
        assert!(matches!(
            cfg(&[]).check(),
            Err(ConfigError::NoAddress { .. })
        ));
        assert!(matches!(
            cfg(&[("192.0.2.1", 33)]).check(),
            Err(ConfigError::BadPrefix { .. })
        ));
        assert!(matches!(
            cfg(&[("224.0.0.1", 24)]).check(),
            Err(ConfigError::NotUnicast { .. })
        ));
        assert!(matches!(
            cfg(&[("192.0.2.1", 24), ("192.0.2.1", 25)]).check(),
            Err(ConfigError::DuplicateAddress { .. })
        ));
        let nine: Vec<_> = (1..=9).map(|i| (format!("192.0.2.{i}"), 24)).collect();
        let nine: Vec<_> = nine.iter().map(|(a, p)| (a.as_str(), *p)).collect();
        assert!(matches!(
            cfg(&nine).check(),
            Err(ConfigError::TooManyAddresses { count: 9, .. })
        ));
        let mut c = cfg(&[("192.0.2.1", 24)]);
        c.gateway4 = Some("198.51.100.1".parse().unwrap());
        assert!(matches!(c.check(), Err(ConfigError::GatewayOffLink { .. })));
        let mut c = cfg(&[("fd00::1", 64)]);
        c.gateway6 = Some("fe80::1".parse().unwrap());
        assert_eq!(c.check(), Ok(()), "a link-local IPv6 gateway is on-link");
        let mut c = cfg(&[("192.0.2.1", 24)]);
        c.mac = MacAddr([0x01, 0, 0x5e, 0, 0, 1]);
        assert!(matches!(c.check(), Err(ConfigError::MacNotUnicast { .. })));
        c.mac = MacAddr([0x02, 0, 0, 0, 0, 1]);
        c.mtu = 100;
        assert!(matches!(c.check(), Err(ConfigError::BadMtu { .. })));
        c.mtu = 1000;
        assert_eq!(c.check(), Ok(()));
        c.addrs.push(("fd00::1".parse().unwrap(), 64));
        assert!(
            matches!(c.check(), Err(ConfigError::BadMtu { .. })),
            "IPv6 needs 1280"
        );
    }

    #[test]
    fn snooping_takes_only_other_hosts_inside_the_subnets() {
        let h = cfg(&[("192.0.2.1", 24), ("fd00::1", 64)])
            .checked()
            .unwrap();
        let m = MacAddr([0x02, 0, 0, 0, 0, 9]);
        assert!(h.snoopable("192.0.2.9".parse().unwrap(), m));
        assert!(h.snoopable("fd00::9".parse().unwrap(), m));
        assert!(!h.snoopable("198.51.100.9".parse().unwrap(), m), "off-link");
        assert!(!h.snoopable("fd01::9".parse().unwrap(), m), "off-link v6");
        assert!(!h.snoopable("192.0.2.1".parse().unwrap(), m), "ours");
        assert!(!h.snoopable("0.0.0.0".parse().unwrap(), m), "ARP probe");
        assert!(!h.snoopable("192.0.2.9".parse().unwrap(), MacAddr::BROADCAST));
        assert!(!h.snoopable("192.0.2.9".parse().unwrap(), h.mac), "our MAC");
    }
}
