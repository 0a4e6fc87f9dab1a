//! ARP for IPv4 over Ethernet (RFC 826).
//!
//! Layer: wire (lowest). No I/O or allocation. On the packet path (ARP
//! snooping and proxy replies).
//!
//! Only the Ethernet/IPv4 form is parsed; [`ArpPacket::new_checked`] rejects
//! other hardware or protocol types, so the address accessors can use fixed
//! offsets:
//!
//! ```text
//! 0     2     4  5  6    8       14      18      24      28
//! | htype | ptype |hl|pl| op | sha   | spa  | tha   | tpa  |
//! ```

use std::net::Ipv4Addr;

use crate::ids::MacAddr;

use super::ethernet::ethertype;
use super::{need, put_u16, WireError};

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;

/// Length of the part that names the address types (htype..plen, op).
const FIXED_LEN: usize = 8;

/// `htype` for Ethernet (IANA "Hardware Types" registry, value 1).
pub const HTYPE_ETHERNET: u16 = 1;

/// ARP operation codes (IANA "ARP Operation Codes" registry; RFC 826).
pub mod opcode {
    /// ARP request.
    pub const REQUEST: u16 = 1;
    /// ARP reply.
    pub const REPLY: u16 = 2;
}

mod field {
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    pub const SHA: usize = 8;
    pub const SPA: usize = 14;
    pub const THA: usize = 18;
    pub const TPA: usize = 24;
}

header_view! {
    /// A view of an Ethernet/IPv4 ARP packet (the Ethernet payload).
    pub struct ArpPacket;

    /// Wraps `buf` without any checks.
    ///
    /// Accessors panic if `buf` is shorter than [`PACKET_LEN`], and address
    /// accessors return garbage if it is not Ethernet/IPv4 ARP.
    fn new_unchecked;

    /// Wraps `buf` after checking it is a complete Ethernet/IPv4 ARP packet.
    ///
    /// Trailing bytes (Ethernet padding) are allowed.
    ///
    /// # Errors
    ///
    /// - [`WireError::Truncated`] if `buf` is too short.
    /// - [`WireError::Unsupported`] unless htype = 1 (Ethernet), ptype = 0x0800
    ///   (IPv4), hlen = 6 and plen = 4.
    fn new_checked = check;
}

fields! {
    ArpPacket {
        /// Hardware type (1 = Ethernet).
        htype: u16 = field::HTYPE;
        /// Protocol type, an EtherType (0x0800 = IPv4).
        ptype: u16 = field::PTYPE;
        /// Hardware address length in bytes.
        hlen: u8 = field::HLEN;
        /// Protocol address length in bytes.
        plen: u8 = field::PLEN;
        /// Operation; see [`opcode`].
        opcode, set_opcode: u16 = field::OPER;
        /// Sender hardware address.
        sender_hw, set_sender_hw: MacAddr = field::SHA;
        /// Sender protocol address.
        sender_ip, set_sender_ip: Ipv4Addr = field::SPA;
        /// Target hardware address (all zero in a request).
        target_hw, set_target_hw: MacAddr = field::THA;
        /// Target protocol address.
        target_ip, set_target_ip: Ipv4Addr = field::TPA;
    }
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Checks length and address types; see [`ArpPacket::new_checked`].
    ///
    /// # Errors
    ///
    /// As [`ArpPacket::new_checked`].
    pub fn check(&self) -> Result<(), WireError> {
        let len = self.buf.as_ref().len();
        need(len, FIXED_LEN)?;
        if self.htype() != HTYPE_ETHERNET {
            return Err(WireError::Unsupported("ARP hardware type is not Ethernet"));
        }
        if self.ptype() != ethertype::IPV4 {
            return Err(WireError::Unsupported("ARP protocol type is not IPv4"));
        }
        if self.hlen() != 6 {
            return Err(WireError::Unsupported("ARP hardware length is not 6"));
        }
        if self.plen() != 4 {
            return Err(WireError::Unsupported("ARP protocol length is not 4"));
        }
        need(len, PACKET_LEN)
    }

    /// True for a gratuitous ARP: sender and target protocol addresses equal.
    #[inline]
    pub fn is_gratuitous(&self) -> bool {
        self.sender_ip() == self.target_ip()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Writes htype, ptype, hlen and plen for Ethernet/IPv4, as needed before
    /// building a packet in a fresh buffer.
    #[inline]
    pub fn init_eth_ipv4(&mut self) {
        let b = self.buf.as_mut();
        put_u16(b, field::HTYPE, HTYPE_ETHERNET);
        put_u16(b, field::PTYPE, ethertype::IPV4);
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::ethernet::{tests::ARP_REQUEST_FRAME, EthFrame};
    use std::hint::black_box;

    /// Reads every field; used by the prefix and random-buffer tests.
    pub(crate) fn read_all_fields<T: AsRef<[u8]>>(p: &ArpPacket<T>) {
        black_box((p.htype(), p.ptype(), p.hlen(), p.plen(), p.opcode()));
        black_box((p.sender_hw(), p.sender_ip(), p.target_hw(), p.target_ip()));
        black_box(p.is_gratuitous());
    }

    const HOST_MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    const GW_MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc]);

    /// ARP reply "192.168.0.1 is at 52:54:00:aa:bb:cc", answering the request
    /// in [`ARP_REQUEST_FRAME`].
    #[rustfmt::skip]
    const ARP_REPLY: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x02,
        0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc, 0xc0, 0xa8, 0x00, 0x01,
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0xc0, 0xa8, 0x00, 0x02,
    ];

    fn request_payload() -> &'static [u8] {
        &ARP_REQUEST_FRAME[14..]
    }

    #[test]
    fn request_in_padded_frame_parses() {
        let eth = EthFrame::new_checked(&ARP_REQUEST_FRAME[..]).unwrap();
        let arp = ArpPacket::new_checked(eth.payload()).unwrap();
        assert_eq!(arp.htype(), 1);
        assert_eq!(arp.ptype(), 0x0800);
        assert_eq!((arp.hlen(), arp.plen()), (6, 4));
        assert_eq!(arp.opcode(), opcode::REQUEST);
        assert_eq!(arp.sender_hw(), HOST_MAC);
        assert_eq!(arp.sender_ip(), Ipv4Addr::new(192, 168, 0, 2));
        assert_eq!(arp.target_hw(), MacAddr([0; 6]));
        assert_eq!(arp.target_ip(), Ipv4Addr::new(192, 168, 0, 1));
        assert!(!arp.is_gratuitous());
    }

    #[test]
    fn truncated_arp_is_rejected_at_every_length() {
        for len in 0..PACKET_LEN {
            let err = ArpPacket::new_checked(&ARP_REPLY[..len]).unwrap_err();
            let needed = if len < FIXED_LEN {
                FIXED_LEN
            } else {
                PACKET_LEN
            };
            assert_eq!(err, WireError::Truncated { needed, got: len });
        }
        assert!(ArpPacket::new_checked(&ARP_REPLY[..]).is_ok());
    }

    #[test]
    fn non_ethernet_hardware_type_is_rejected() {
        let mut p = ARP_REPLY;
        p[1] = 6; // IEEE 802 networks
        assert!(matches!(
            ArpPacket::new_checked(&p[..]),
            Err(WireError::Unsupported(_))
        ));
    }

    #[test]
    fn non_ipv4_protocol_type_is_rejected() {
        let mut p = ARP_REPLY;
        p[2..4].copy_from_slice(&[0x86, 0xdd]);
        assert!(matches!(
            ArpPacket::new_checked(&p[..]),
            Err(WireError::Unsupported(_))
        ));
    }

    #[test]
    fn wrong_address_lengths_are_rejected() {
        let mut p = ARP_REPLY;
        p[4] = 8;
        assert!(matches!(
            ArpPacket::new_checked(&p[..]),
            Err(WireError::Unsupported(_))
        ));
        let mut p = ARP_REPLY;
        p[5] = 16;
        assert!(matches!(
            ArpPacket::new_checked(&p[..]),
            Err(WireError::Unsupported(_))
        ));
    }

    #[test]
    fn every_prefix_parses_or_fails_cleanly() {
        for fixture in [request_payload(), &ARP_REPLY[..]] {
            for len in 0..=fixture.len() {
                match ArpPacket::new_checked(&fixture[..len]) {
                    Ok(p) => read_all_fields(&p),
                    Err(e) => assert!(matches!(e, WireError::Truncated { .. })),
                }
            }
        }
    }

    #[test]
    fn building_reply_from_request_reproduces_fixture() {
        let req = ArpPacket::new_checked(request_payload()).unwrap();
        let mut buf = [0u8; PACKET_LEN];
        let mut rep = ArpPacket::new_unchecked(&mut buf);
        rep.init_eth_ipv4();
        rep.set_opcode(opcode::REPLY);
        rep.set_sender_hw(GW_MAC);
        rep.set_sender_ip(req.target_ip());
        rep.set_target_hw(req.sender_hw());
        rep.set_target_ip(req.sender_ip());
        assert!(rep.check().is_ok());
        assert_eq!(buf, ARP_REPLY);
    }

    #[test]
    fn setters_round_trip() {
        let mut buf = ARP_REPLY;
        let mut p = ArpPacket::new_checked(&mut buf[..]).unwrap();
        let ip = Ipv4Addr::new(10, 1, 2, 3);
        p.set_opcode(opcode::REQUEST);
        p.set_sender_hw(HOST_MAC);
        p.set_sender_ip(ip);
        p.set_target_hw(MacAddr::BROADCAST);
        p.set_target_ip(ip);
        assert_eq!(p.opcode(), opcode::REQUEST);
        assert_eq!(p.sender_hw(), HOST_MAC);
        assert_eq!(p.sender_ip(), ip);
        assert_eq!(p.target_hw(), MacAddr::BROADCAST);
        assert_eq!(p.target_ip(), ip);
        assert!(p.is_gratuitous());
    }
}
