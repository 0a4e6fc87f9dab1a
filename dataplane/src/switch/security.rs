//! Port security: a port whose tenant may send only from its own MAC and IP
//! addresses (anti-spoofing, as OpenStack's port security and OVS's
//! `port_security` do it).
//!
//! Layer: switch. A pure check over a frame's bytes, run by the
//! [`super::pipeline`] after the ingress VLAN stage and before learning, so
//! that a spoofed frame is neither learned nor forwarded.
//!
//! What passes, for a port with allowed MACs `M` and addresses `A`:
//!
//! - the Ethernet source must be in `M` (else `spoofed-mac`);
//! - IPv4: the source must be in `A`, or be 0.0.0.0 in a DHCP client's
//!   message (UDP to port 67);
//! - ARP: the sender hardware address must be in `M` (else `spoofed-mac`)
//!   and the sender protocol address in `A` or 0.0.0.0 (an ARP probe);
//! - IPv6: the source must be in `A`, link-local (fe80::/10, which DHCPv6
//!   clients and neighbour discovery use) or unspecified (::, duplicate
//!   address detection); a neighbour advertisement must claim a target in
//!   `A` or link-local, and any link-layer address option in it or in a
//!   solicitation must be in `M`;
//! - other EtherTypes pass on the source MAC alone (they carry no IP
//!   address to spoof).
//!
//! With `A` empty only the MAC checks apply. IP checks failing count as
//! `spoofed-ip`. A frame too short for the header it announces is
//! `malformed`.
//!
//! The other way, a port with port security receives unicast only for its
//! allowed MACs: unknown unicast flooded on the bridge skips it, so one
//! tenant does not see what another's stations were sent before they were
//! learned. Broadcast and multicast reach it as any port.

use std::net::IpAddr;

use crate::ids::MacAddr;
use crate::stats::DropReason;
use crate::wire::ethernet::ethertype;

/// Most MAC addresses and most IP addresses one port may allow.
pub const MAX_ALLOWED: usize = 64;

/// IP protocol numbers and ports the checks look at.
const PROTO_UDP: u8 = 17;
const PROTO_ICMPV6: u8 = 58;
const DHCP_SERVER_PORT: u16 = 67;
/// ICMPv6 types (RFC 4861 §4).
const ND_NEIGHBOR_SOLICIT: u8 = 135;
const ND_NEIGHBOR_ADVERT: u8 = 136;
/// ND options carrying a link-layer address (RFC 4861 §4.6.1).
const ND_OPT_SOURCE_LL: u8 = 1;
const ND_OPT_TARGET_LL: u8 = 2;

/// A port's allowed source addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSecurity {
    /// Allowed Ethernet sources, as [`MacAddr::to_u64`] words.
    macs: Vec<u64>,
    ipv4: Vec<[u8; 4]>,
    ipv6: Vec<[u8; 16]>,
    /// Whether IP sources are checked at all (some address was given).
    check_ips: bool,
}

/// Why port security settings are refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecurityError {
    /// Port security with no MAC to allow would drop everything.
    #[error("port security needs at least one allowed MAC (set mac or allowed_macs)")]
    NoMac,
    /// A group address cannot be a station's source.
    #[error("{mac} is a multicast address and cannot be a source")]
    GroupMac {
        /// The address.
        mac: MacAddr,
    },
    /// More addresses than [`MAX_ALLOWED`].
    #[error("at most {MAX_ALLOWED} {what} may be allowed per port, {given} given")]
    TooMany {
        /// `MACs` or `IP addresses`.
        what: &'static str,
        /// How many were given.
        given: usize,
    },
}

impl PortSecurity {
    /// Allows sources `macs` and, if `ips` is not empty, only the IP sources
    /// in `ips`.
    ///
    /// # Errors
    ///
    /// No MAC, a multicast MAC, or more than [`MAX_ALLOWED`] of either.
    pub fn new(macs: &[MacAddr], ips: &[IpAddr]) -> Result<PortSecurity, SecurityError> {
        if macs.is_empty() {
            return Err(SecurityError::NoMac);
        }
        for (what, given) in [("MACs", macs.len()), ("IP addresses", ips.len())] {
            if given > MAX_ALLOWED {
                return Err(SecurityError::TooMany { what, given });
            }
        }
        if let Some(&mac) = macs.iter().find(|m| m.is_multicast()) {
            return Err(SecurityError::GroupMac { mac });
        }
        let mut s = PortSecurity {
            macs: macs.iter().map(|m| m.to_u64()).collect(),
            ipv4: Vec::new(),
            ipv6: Vec::new(),
            check_ips: !ips.is_empty(),
        };
        for ip in ips {
            match ip {
                IpAddr::V4(a) => s.ipv4.push(a.octets()),
                IpAddr::V6(a) => s.ipv6.push(a.octets()),
            }
        }
        Ok(s)
    }

    /// Whether `mac` (a [`MacAddr::to_u64`] word) is one of the port's
    /// allowed addresses.
    #[inline]
    pub fn mac_ok(&self, mac: u64) -> bool {
        self.macs.contains(&mac)
    }

    /// Checks a frame whose source MAC word is `src` and whose L3 header
    /// (after any VLAN tag) starts at `l3`.
    ///
    /// # Errors
    ///
    /// The drop reason, if the frame may not pass.
    #[inline(always)]
    pub fn check(&self, data: &[u8], src: u64, l3: usize) -> Result<(), DropReason> {
        if !self.mac_ok(src) {
            return Err(DropReason::SpoofedMac);
        }
        if !self.check_ips {
            return Ok(());
        }
        let Some(&[hi, lo]) = data.get(l3 - 2..l3) else {
            return Err(DropReason::Malformed);
        };
        let l3 = data.get(l3..).unwrap_or_default();
        match u16::from_be_bytes([hi, lo]) {
            ethertype::IPV4 => self.check_ipv4(l3),
            ethertype::ARP => self.check_arp(l3),
            ethertype::IPV6 => self.check_ipv6(l3),
            _ => Ok(()),
        }
    }

    #[inline(always)]
    fn check_ipv4(&self, ip: &[u8]) -> Result<(), DropReason> {
        let (Some(&vihl), Some(&proto), Some(src)) = (
            ip.first(),
            ip.get(9),
            ip.get(12..16).and_then(|s| s.first_chunk::<4>()),
        ) else {
            return Err(DropReason::Malformed);
        };
        if self.ipv4.contains(src) {
            return Ok(());
        }
        // A DHCP client before it has an address: 0.0.0.0 to the server port.
        let ihl = usize::from(vihl & 0x0f) * 4;
        let dst_port = ip
            .get(ihl + 2..ihl + 4)
            .map(|p| u16::from_be_bytes([p[0], p[1]]));
        if *src == [0; 4] && proto == PROTO_UDP && dst_port == Some(DHCP_SERVER_PORT) {
            return Ok(());
        }
        Err(DropReason::SpoofedIp)
    }

    #[inline(never)]
    fn check_arp(&self, arp: &[u8]) -> Result<(), DropReason> {
        let (Some(sha), Some(spa)) = (
            arp.get(8..14).and_then(|s| s.first_chunk::<6>()),
            arp.get(14..18).and_then(|s| s.first_chunk::<4>()),
        ) else {
            return Err(DropReason::Malformed);
        };
        if !self.mac_ok(MacAddr(*sha).to_u64()) {
            return Err(DropReason::SpoofedMac);
        }
        if *spa == [0; 4] || self.ipv4.contains(spa) {
            Ok(())
        } else {
            Err(DropReason::SpoofedIp)
        }
    }

    fn ipv6_ok(&self, a: &[u8; 16]) -> bool {
        // fe80::/10 (link-local) and :: (unspecified).
        (a[0] == 0xfe && a[1] & 0xc0 == 0x80) || *a == [0; 16] || self.ipv6.contains(a)
    }

    #[inline(never)]
    fn check_ipv6(&self, ip: &[u8]) -> Result<(), DropReason> {
        let (Some(&next), Some(src)) = (ip.get(6), ip.get(8..24).and_then(|s| s.first_chunk()))
        else {
            return Err(DropReason::Malformed);
        };
        if !self.ipv6_ok(src) {
            return Err(DropReason::SpoofedIp);
        }
        if next != PROTO_ICMPV6 {
            return Ok(());
        }
        let icmp = ip.get(40..).unwrap_or_default();
        match icmp.first() {
            Some(&t @ (ND_NEIGHBOR_SOLICIT | ND_NEIGHBOR_ADVERT)) => {
                let Some(target) = icmp.get(8..24).and_then(|s| s.first_chunk::<16>()) else {
                    return Err(DropReason::Malformed);
                };
                if t == ND_NEIGHBOR_ADVERT && !self.ipv6_ok(target) {
                    return Err(DropReason::SpoofedIp);
                }
                self.check_nd_options(icmp.get(24..).unwrap_or_default())
            }
            _ => Ok(()),
        }
    }

    /// The link-layer address options of a neighbour solicitation or
    /// advertisement: each must name an allowed MAC.
    fn check_nd_options(&self, mut opts: &[u8]) -> Result<(), DropReason> {
        while let [kind, len8, ..] = *opts {
            let len = usize::from(len8) * 8;
            let Some(opt) = opts.get(..len).filter(|_| len > 0) else {
                return Err(DropReason::Malformed);
            };
            if matches!(kind, ND_OPT_SOURCE_LL | ND_OPT_TARGET_LL) {
                let Some(mac) = opt.get(2..8).and_then(|s| s.first_chunk::<6>()) else {
                    return Err(DropReason::Malformed);
                };
                if !self.mac_ok(MacAddr(*mac).to_u64()) {
                    return Err(DropReason::SpoofedMac);
                }
            }
            opts = &opts[len..];
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 5]);
    const OTHER: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 6]);

    fn sec() -> PortSecurity {
        PortSecurity::new(
            &[MAC],
            &["10.0.0.5".parse().unwrap(), "fd00::5".parse().unwrap()],
        )
        .unwrap()
    }

    fn eth(src: MacAddr, ty: u16, l3: &[u8]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&src.0);
        f.extend_from_slice(&ty.to_be_bytes());
        f.extend_from_slice(l3);
        f
    }

    fn ipv4(src: [u8; 4], proto: u8, dst_port: u16) -> Vec<u8> {
        let mut ip = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, proto, 0, 0];
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&[10, 0, 0, 1]);
        ip.extend_from_slice(&[0, 68]);
        ip.extend_from_slice(&dst_port.to_be_bytes());
        ip.extend_from_slice(&[0, 8, 0, 0]);
        ip
    }

    fn arp(sha: MacAddr, spa: [u8; 4]) -> Vec<u8> {
        let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
        a.extend_from_slice(&sha.0);
        a.extend_from_slice(&spa);
        a.extend_from_slice(&[0; 6]);
        a.extend_from_slice(&[10, 0, 0, 1]);
        a
    }

    fn ipv6(src: &str, icmp: &[u8]) -> Vec<u8> {
        let src: std::net::Ipv6Addr = src.parse().unwrap();
        let mut ip = vec![0x60, 0, 0, 0];
        ip.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
        ip.extend_from_slice(&[PROTO_ICMPV6, 255]);
        ip.extend_from_slice(&src.octets());
        ip.extend_from_slice(&[0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 5]);
        ip.extend_from_slice(icmp);
        ip
    }

    fn neighbor_advert(target: &str, ll: MacAddr) -> Vec<u8> {
        let target: std::net::Ipv6Addr = target.parse().unwrap();
        let mut m = vec![ND_NEIGHBOR_ADVERT, 0, 0, 0, 0x20, 0, 0, 0];
        m.extend_from_slice(&target.octets());
        m.extend_from_slice(&[ND_OPT_TARGET_LL, 1]);
        m.extend_from_slice(&ll.0);
        m
    }

    fn check(s: &PortSecurity, f: &[u8]) -> Result<(), DropReason> {
        let src = MacAddr(f[6..12].try_into().unwrap()).to_u64();
        s.check(f, src, 14)
    }

    #[test]
    fn a_station_passes_from_its_own_addresses() {
        let s = sec();
        assert_eq!(
            check(&s, &eth(MAC, ethertype::IPV4, &ipv4([10, 0, 0, 5], 6, 80))),
            Ok(())
        );
        assert_eq!(
            check(&s, &eth(MAC, ethertype::ARP, &arp(MAC, [10, 0, 0, 5]))),
            Ok(())
        );
        assert_eq!(
            check(
                &s,
                &eth(MAC, ethertype::IPV6, &ipv6("fd00::5", &[128, 0, 0, 0]))
            ),
            Ok(())
        );
        assert_eq!(
            check(&s, &eth(MAC, 0x88cc, &[0; 30])),
            Ok(()),
            "LLDP: MAC only"
        );
    }

    #[test]
    fn another_source_mac_is_spoofed_whatever_it_carries() {
        let s = sec();
        for f in [
            eth(OTHER, ethertype::IPV4, &ipv4([10, 0, 0, 5], 6, 80)),
            eth(OTHER, 0x88cc, &[0; 30]),
            eth(MAC, ethertype::ARP, &arp(OTHER, [10, 0, 0, 5])),
            eth(
                MAC,
                ethertype::IPV6,
                &ipv6("fe80::1", &neighbor_advert("fe80::1", OTHER)),
            ),
        ] {
            assert_eq!(check(&s, &f), Err(DropReason::SpoofedMac), "{f:02x?}");
        }
    }

    #[test]
    fn another_source_ip_is_spoofed_but_dhcp_and_link_local_pass() {
        let s = sec();
        let spoofed = [
            eth(MAC, ethertype::IPV4, &ipv4([10, 0, 0, 6], 6, 80)),
            eth(MAC, ethertype::IPV4, &ipv4([0, 0, 0, 0], 17, 53)),
            eth(MAC, ethertype::ARP, &arp(MAC, [10, 0, 0, 6])),
            eth(MAC, ethertype::IPV6, &ipv6("fd00::6", &[128, 0, 0, 0])),
            eth(
                MAC,
                ethertype::IPV6,
                &ipv6("fe80::1", &neighbor_advert("fd00::6", MAC)),
            ),
        ];
        for f in spoofed {
            assert_eq!(check(&s, &f), Err(DropReason::SpoofedIp), "{f:02x?}");
        }
        let allowed = [
            eth(MAC, ethertype::IPV4, &ipv4([0, 0, 0, 0], 17, 67)),
            eth(MAC, ethertype::ARP, &arp(MAC, [0, 0, 0, 0])),
            eth(MAC, ethertype::IPV6, &ipv6("fe80::1234", &[128, 0, 0, 0])),
            eth(
                MAC,
                ethertype::IPV6,
                &ipv6(
                    "::",
                    &[
                        ND_NEIGHBOR_SOLICIT,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0xfd,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        5,
                    ],
                ),
            ),
            eth(
                MAC,
                ethertype::IPV6,
                &ipv6("fe80::1", &neighbor_advert("fd00::5", MAC)),
            ),
        ];
        for f in allowed {
            assert_eq!(check(&s, &f), Ok(()), "{f:02x?}");
        }
    }

    #[test]
    fn without_ips_only_the_mac_is_checked() {
        let s = PortSecurity::new(&[MAC], &[]).unwrap();
        assert_eq!(
            check(&s, &eth(MAC, ethertype::IPV4, &ipv4([192, 0, 2, 1], 6, 80))),
            Ok(())
        );
        assert_eq!(
            check(
                &s,
                &eth(OTHER, ethertype::IPV4, &ipv4([192, 0, 2, 1], 6, 80))
            ),
            Err(DropReason::SpoofedMac)
        );
    }

    #[test]
    fn truncated_headers_are_malformed_not_a_panic() {
        let s = sec();
        let full = eth(
            MAC,
            ethertype::IPV6,
            &ipv6("fe80::1", &neighbor_advert("fd00::5", MAC)),
        );
        for len in 14..full.len() {
            let r = check(&s, &full[..len]);
            assert!(
                matches!(r, Ok(()) | Err(DropReason::Malformed)),
                "len {len}: {r:?}"
            );
        }
        let mut bad_opt = full.clone();
        let at = bad_opt.len() - 7; // the option's length byte
        bad_opt[at] = 0;
        assert_eq!(check(&s, &bad_opt), Err(DropReason::Malformed));
    }

    #[test]
    fn bad_settings_are_refused() {
        assert_eq!(PortSecurity::new(&[], &[]), Err(SecurityError::NoMac));
        assert_eq!(
            PortSecurity::new(&[MacAddr::BROADCAST], &[]),
            Err(SecurityError::GroupMac {
                mac: MacAddr::BROADCAST
            })
        );
        let many = vec![MAC; MAX_ALLOWED + 1];
        assert!(matches!(
            PortSecurity::new(&many, &[]),
            Err(SecurityError::TooMany { .. })
        ));
    }
}
