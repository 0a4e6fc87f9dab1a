//! Ethernet frames made and read byte by byte, for tests that talk below IP:
//! broadcast ARP requests, ICMP echo requests, UDP datagrams, VXLAN
//! headers, 802.1Q tags.
//!
//! Written apart from `dataplane::wire` on purpose: a test that read frames
//! with the switch's own parser would share its mistakes. No I/O.

use std::net::Ipv4Addr;

/// A MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: Mac = Mac([0xff; 6]);

    /// Parses `aa:bb:cc:dd:ee:ff`.
    pub fn parse(s: &str) -> Option<Mac> {
        let mut m = [0u8; 6];
        let mut parts = s.trim().split(':');
        for b in &mut m {
            *b = u8::from_str_radix(parts.next()?, 16).ok()?;
        }
        parts.next().is_none().then_some(Mac(m))
    }
}

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// TPID of an 802.1Q (customer) tag.
pub const TPID_8021Q: u16 = 0x8100;
/// TPID of an 802.1ad (service) tag.
pub const TPID_8021AD: u16 = 0x88a8;

/// Shortest Ethernet frame without FCS (IEEE 802.3 clause 3.2.8: 64 bytes
/// with it); shorter ones are padded with zeros.
pub const MIN_FRAME_BYTES: usize = 60;

/// An untagged frame `dst`, `src`, `ethertype`, `payload`, padded to
/// [`MIN_FRAME_BYTES`].
pub fn ethernet(dst: Mac, src: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity((14 + payload.len()).max(MIN_FRAME_BYTES));
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f.resize(f.len().max(MIN_FRAME_BYTES), 0);
    f
}

/// `frame` with an 802.1Q tag of VLAN `vid` (priority 0) inserted after the
/// addresses, outside any tag it has.
///
/// # Panics
/// If `frame` is shorter than the two addresses.
pub fn tagged(frame: &[u8], vid: u16) -> Vec<u8> {
    tagged_tpid(frame, TPID_8021Q, vid)
}

/// [`tagged`] with the tag's TPID given, e.g. [`TPID_8021AD`] for a service
/// tag.
///
/// # Panics
/// If `frame` is shorter than the two addresses.
pub fn tagged_tpid(frame: &[u8], tpid: u16, vid: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(frame.len() + 4);
    f.extend_from_slice(&frame[..12]);
    f.extend_from_slice(&tpid.to_be_bytes());
    f.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    f.extend_from_slice(&frame[12..]);
    f
}

/// A broadcast ARP request (RFC 826) from `src_mac`/`src_ip` asking for
/// `target_ip`, untagged.
pub fn arp_request(src_mac: Mac, src_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    let mut a = Vec::with_capacity(28);
    a.extend_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    a.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    a.extend_from_slice(&[6, 4]);
    a.extend_from_slice(&ARP_REQUEST.to_be_bytes());
    a.extend_from_slice(&src_mac.0);
    a.extend_from_slice(&src_ip.octets());
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&target_ip.octets());
    ethernet(Mac::BROADCAST, src_mac, ETHERTYPE_ARP, &a)
}

/// ARP operation code of a request.
pub const ARP_REQUEST: u16 = 1;
/// ARP operation code of a reply.
pub const ARP_REPLY: u16 = 2;

/// An ICMP echo request (RFC 792) `src` → `dst` with identifier `id`,
/// sequence number `seq` and `payload`, in an untagged frame.
pub fn icmp_echo_request(
    (src_mac, src_ip): (Mac, Ipv4Addr),
    (dst_mac, dst_ip): (Mac, Ipv4Addr),
    id: u16,
    seq: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut icmp = Vec::with_capacity(8 + payload.len());
    icmp.extend_from_slice(&[ICMP_ECHO_REQUEST, 0, 0, 0]);
    icmp.extend_from_slice(&id.to_be_bytes());
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend_from_slice(payload);
    let c = inet_checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());

    let total = u16::try_from(20 + icmp.len()).expect("an ICMP payload under 64 KiB");
    let mut ip = Vec::with_capacity(usize::from(total));
    ip.extend_from_slice(&[0x45, 0]);
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0]); // id 0, don't fragment
    ip.extend_from_slice(&[64, IPPROTO_ICMP, 0, 0]);
    ip.extend_from_slice(&src_ip.octets());
    ip.extend_from_slice(&dst_ip.octets());
    let c = inet_checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&icmp);
    ethernet(dst_mac, src_mac, ETHERTYPE_IPV4, &ip)
}

/// IANA UDP port of VXLAN (RFC 7348 section 5).
pub const VXLAN_PORT: u16 = 4789;

/// An IPv4 UDP datagram `src` → `dst` (each MAC, address, UDP port)
/// carrying `payload`, in an untagged frame: DF set, TTL 64, a correct
/// header checksum and UDP checksum 0 ("none", allowed over IPv4 by RFC 768
/// and used by VXLAN senders).
///
/// # Panics
/// If `payload` does not fit one datagram.
pub fn udp_ipv4(
    (src_mac, src_ip, src_port): (Mac, Ipv4Addr, u16),
    (dst_mac, dst_ip, dst_port): (Mac, Ipv4Addr, u16),
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = u16::try_from(8 + payload.len()).expect("a UDP payload under 64 KiB");
    let total = udp_len
        .checked_add(20)
        .expect("an IPv4 packet under 64 KiB");
    let mut ip = Vec::with_capacity(usize::from(total));
    ip.extend_from_slice(&[0x45, 0]);
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0]); // id 0, don't fragment
    ip.extend_from_slice(&[64, IPPROTO_UDP, 0, 0]);
    ip.extend_from_slice(&src_ip.octets());
    ip.extend_from_slice(&dst_ip.octets());
    let c = inet_checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&src_port.to_be_bytes());
    ip.extend_from_slice(&dst_port.to_be_bytes());
    ip.extend_from_slice(&udp_len.to_be_bytes());
    ip.extend_from_slice(&[0, 0]);
    ip.extend_from_slice(payload);
    ethernet(dst_mac, src_mac, ETHERTYPE_IPV4, &ip)
}

/// A VXLAN header (RFC 7348 section 5) with `flags` (0x08, the I bit, for
/// a valid one) and the 24-bit `vni`, followed by the `inner` frame: the
/// payload of a [`udp_ipv4`] datagram to [`VXLAN_PORT`].
pub fn vxlan(flags: u8, vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + inner.len());
    v.extend_from_slice(&[flags, 0, 0, 0]);
    v.extend_from_slice(&(vni << 8).to_be_bytes());
    v.extend_from_slice(inner);
    v
}

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_UDP: u8 = 17;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_ECHO_REPLY: u8 = 0;

/// The Internet checksum (RFC 1071) of `data`.
pub fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A frame as read from the wire, with accessors that return `None` (never
/// panic) for frames too short for what they look at.
#[derive(Clone, Copy, Debug)]
pub struct View<'a>(pub &'a [u8]);

/// The fields of an ARP packet over Ethernet and IPv4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arp {
    /// [`ARP_REQUEST`] or [`ARP_REPLY`].
    pub op: u16,
    /// Sender hardware address.
    pub sender_mac: Mac,
    /// Sender protocol address.
    pub sender_ip: Ipv4Addr,
    /// Target hardware address.
    pub target_mac: Mac,
    /// Target protocol address.
    pub target_ip: Ipv4Addr,
}

/// The fields of an ICMP echo request or reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpEcho {
    /// A reply (type 0) rather than a request (type 8).
    pub reply: bool,
    /// IPv4 source.
    pub src_ip: Ipv4Addr,
    /// IPv4 destination.
    pub dst_ip: Ipv4Addr,
    /// Identifier.
    pub id: u16,
    /// Sequence number.
    pub seq: u16,
}

impl<'a> View<'a> {
    fn mac_at(&self, off: usize) -> Option<Mac> {
        Some(Mac(self.0.get(off..off + 6)?.try_into().ok()?))
    }

    fn u16_at(&self, off: usize) -> Option<u16> {
        Some(u16::from_be_bytes(
            self.0.get(off..off + 2)?.try_into().ok()?,
        ))
    }

    /// Destination address.
    pub fn dst(&self) -> Option<Mac> {
        self.mac_at(0)
    }

    /// Source address.
    pub fn src(&self) -> Option<Mac> {
        self.mac_at(6)
    }

    /// The outer tag, as (TPID, VID), if the frame carries an 802.1Q or
    /// 802.1ad tag.
    pub fn tag(&self) -> Option<(u16, u16)> {
        let tpid = self.u16_at(12)?;
        if tpid != TPID_8021Q && tpid != TPID_8021AD {
            return None;
        }
        Some((tpid, self.u16_at(14)? & 0x0fff))
    }

    /// The VID of an outer 802.1Q tag; `None` for an untagged frame (or one
    /// with an 802.1ad tag).
    pub fn vid(&self) -> Option<u16> {
        self.tag()
            .filter(|&(tpid, _)| tpid == TPID_8021Q)
            .map(|(_, vid)| vid)
    }

    /// Where the EtherType after the outer tag (if any) sits.
    fn ethertype_off(&self) -> usize {
        if self.tag().is_some() {
            16
        } else {
            12
        }
    }

    /// The EtherType after the outer tag, if any.
    pub fn ethertype(&self) -> Option<u16> {
        self.u16_at(self.ethertype_off())
    }

    /// What follows the EtherType.
    pub fn payload(&self) -> Option<&'a [u8]> {
        self.0.get(self.ethertype_off() + 2..)
    }

    /// The ARP packet this frame carries, if any.
    pub fn arp(&self) -> Option<Arp> {
        if self.ethertype()? != ETHERTYPE_ARP {
            return None;
        }
        let p = View(self.payload()?);
        if p.u16_at(0)? != 1 || p.u16_at(2)? != ETHERTYPE_IPV4 || p.0.get(4..6)? != [6, 4] {
            return None;
        }
        let ip = |off: usize| -> Option<Ipv4Addr> {
            let o: [u8; 4] = p.0.get(off..off + 4)?.try_into().ok()?;
            Some(Ipv4Addr::from(o))
        };
        Some(Arp {
            op: p.u16_at(6)?,
            sender_mac: p.mac_at(8)?,
            sender_ip: ip(14)?,
            target_mac: p.mac_at(18)?,
            target_ip: ip(24)?,
        })
    }

    /// The ICMP echo request or reply this frame carries, if any.
    pub fn icmp_echo(&self) -> Option<IcmpEcho> {
        if self.ethertype()? != ETHERTYPE_IPV4 {
            return None;
        }
        let ip = self.payload()?;
        let ihl = usize::from(ip.first()? & 0x0f) * 4;
        if ip.first()? >> 4 != 4 || ihl < 20 || *ip.get(9)? != IPPROTO_ICMP {
            return None;
        }
        let addr = |off: usize| -> Option<Ipv4Addr> {
            let o: [u8; 4] = ip.get(off..off + 4)?.try_into().ok()?;
            Some(Ipv4Addr::from(o))
        };
        let icmp = View(ip.get(ihl..)?);
        let reply = match *icmp.0.first()? {
            ICMP_ECHO_REQUEST => false,
            ICMP_ECHO_REPLY => true,
            _ => return None,
        };
        Some(IcmpEcho {
            reply,
            src_ip: addr(12)?,
            dst_ip: addr(16)?,
            id: icmp.u16_at(4)?,
            seq: icmp.u16_at(6)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Mac = Mac([0x02, 0, 0, 0, 0, 0x0a]);
    const B: Mac = Mac([0x02, 0, 0, 0, 0, 0x0b]);

    #[test]
    fn arp_request_has_the_bytes_of_rfc_826() {
        let f = arp_request(A, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        #[rustfmt::skip]
        let want: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 0x0a, 0x08, 0x06,
            0, 1, 0x08, 0, 6, 4, 0, 1,
            2, 0, 0, 0, 0, 0x0a, 10, 0, 0, 1,
            0, 0, 0, 0, 0, 0, 10, 0, 0, 2,
        ];
        assert_eq!(&f[..42], want);
        assert_eq!(f.len(), MIN_FRAME_BYTES);
        assert!(f[42..].iter().all(|&b| b == 0));
        let a = View(&f).arp().unwrap();
        assert_eq!(a.op, ARP_REQUEST);
        assert_eq!(a.sender_mac, A);
        assert_eq!(a.target_ip, Ipv4Addr::new(10, 0, 0, 2));
    }

    #[test]
    fn a_tag_goes_after_the_addresses_and_is_read_back() {
        let f = ethernet(B, A, ETHERTYPE_IPV4, &[0x45]);
        let t = tagged(&f, 20);
        assert_eq!(&t[12..18], [0x81, 0x00, 0x00, 20, 0x08, 0x00]);
        assert_eq!(t.len(), f.len() + 4);
        let v = View(&t);
        assert_eq!((v.dst(), v.src()), (Some(B), Some(A)));
        assert_eq!(v.vid(), Some(20));
        assert_eq!(v.ethertype(), Some(ETHERTYPE_IPV4));
        assert_eq!(View(&f).vid(), None);
        let s = tagged_tpid(&t, TPID_8021AD, 10);
        assert_eq!(&s[12..16], [0x88, 0xa8, 0x00, 10]);
        assert_eq!(View(&s).tag(), Some((TPID_8021AD, 10)));
        assert_eq!(View(&s).vid(), None, "a service tag is no 802.1Q tag");
        assert_eq!(View(&f[..13]).ethertype(), None, "too short: no panic");
    }

    #[test]
    fn echo_request_checksums_verify_and_parse_back() {
        let f = icmp_echo_request(
            (A, Ipv4Addr::new(10, 0, 0, 1)),
            (B, Ipv4Addr::new(10, 0, 0, 2)),
            0x1234,
            7,
            b"weir",
        );
        let ip = &f[14..14 + 32];
        assert_eq!(inet_checksum(&ip[..20]), 0, "IPv4 header checksum");
        assert_eq!(inet_checksum(&ip[20..]), 0, "ICMP checksum");
        let e = View(&f).icmp_echo().unwrap();
        assert_eq!(
            e,
            IcmpEcho {
                reply: false,
                src_ip: Ipv4Addr::new(10, 0, 0, 1),
                dst_ip: Ipv4Addr::new(10, 0, 0, 2),
                id: 0x1234,
                seq: 7
            }
        );
    }

    #[test]
    fn vxlan_in_udp_has_the_bytes_of_rfc_7348() {
        let inner = arp_request(B, Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 1));
        let f = udp_ipv4(
            (A, Ipv4Addr::new(192, 0, 2, 9), 50000),
            (B, Ipv4Addr::new(192, 0, 2, 1), VXLAN_PORT),
            &vxlan(0x08, 5000, &inner),
        );
        assert_eq!(f.len(), 14 + 20 + 8 + 8 + inner.len());
        #[rustfmt::skip]
        let want: [u8; 50] = [
            2, 0, 0, 0, 0, 0x0b, 2, 0, 0, 0, 0, 0x0a, 0x08, 0x00,
            0x45, 0, 0, 96, 0, 0, 0x40, 0, 64, 17, 0, 0, 192, 0, 2, 9, 192, 0, 2, 1,
            0xc3, 0x50, 0x12, 0xb5, 0, 76, 0, 0,
            0x08, 0, 0, 0, 0x00, 0x13, 0x88, 0,
        ];
        let mut got = f[..50].to_vec();
        got[24..26].copy_from_slice(&[0, 0]);
        assert_eq!(got, want);
        assert_eq!(inet_checksum(&f[14..34]), 0, "IPv4 header checksum");
        assert_eq!(&f[50..], &inner[..]);
        assert_eq!(vxlan(0, 0xff_ffff, &[])[4..], [0xff, 0xff, 0xff, 0]);
    }

    #[test]
    fn checksum_of_rfc_1071_example() {
        // RFC 1071 section 3: the sum of these words is 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(inet_checksum(&data), !0xddf2);
    }

    #[test]
    fn macs_print_and_parse() {
        let m = Mac::parse("02:00:00:00:00:0a").unwrap();
        assert_eq!(m, A);
        assert_eq!(m.to_string(), "02:00:00:00:00:0a");
        assert_eq!(Mac::parse("02:00:00"), None);
        assert_eq!(Mac::parse("02:00:00:00:00:0a:01"), None);
    }
}
