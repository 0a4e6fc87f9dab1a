//! A first look at every frame the stack receives and sends: which received
//! frames are worth handing to smoltcp, which neighbour they reveal, and what
//! each sent frame answered (for the counters).
//!
//! Layer: wire (slow path). Every frame here is untrusted input: parsing goes
//! through smoltcp's checked wire views (`new_checked`, `Repr::parse`), so a
//! truncated or garbled frame is an error value, never a panic.

use std::net::{IpAddr, Ipv6Addr};

use dataplane::MacAddr;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetFrame, EthernetProtocol, Icmpv4Message, Icmpv4Packet,
    Icmpv6Message, Icmpv6Packet, Icmpv6Repr, IpProtocol, Ipv4Packet, Ipv6Packet, NdiscRepr,
    RawHardwareAddress,
};

/// What to do with a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rx {
    /// Its Ethernet, ARP, IPv4 (with checksum), IPv6 or ND headers do not
    /// parse: dropped and counted.
    Malformed,
    /// A protocol the stack does not speak: dropped and counted.
    Ignored,
    /// For smoltcp; the sender's address and MAC if it announced them (ARP
    /// sender, ND source or target link-layer option), not yet checked
    /// against the port's subnets.
    Stack(Option<(IpAddr, MacAddr)>),
    /// A neighbour solicitation sent to a unicast address (a neighbour
    /// confirming our MAC, as Linux does every few minutes): smoltcp only
    /// answers those sent to the solicited-node group, so the stack answers
    /// it itself (and still hands it to smoltcp, for its cache).
    UnicastSolicit {
        /// As for [`Rx::Stack`].
        sender: Option<(IpAddr, MacAddr)>,
        /// Who asked.
        from: Ipv6Addr,
        /// Where the answer goes: the source link-layer option, else the
        /// frame's source.
        from_mac: MacAddr,
        /// The address asked about.
        target: Ipv6Addr,
    },
}

/// What a sent frame was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tx {
    ArpReply,
    EchoReply,
    NeighbourAdvert,
    Other,
}

fn mac_of(raw: RawHardwareAddress) -> Option<MacAddr> {
    <[u8; 6]>::try_from(raw.as_bytes()).ok().map(MacAddr)
}

/// Classifies a received frame; see [`Rx`].
pub(crate) fn inspect(frame: &[u8]) -> Rx {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return Rx::Malformed;
    };
    match eth.ethertype() {
        EthernetProtocol::Arp => {
            let Ok(repr) = ArpPacket::new_checked(eth.payload()).and_then(|p| ArpRepr::parse(&p))
            else {
                return Rx::Malformed;
            };
            match repr {
                ArpRepr::EthernetIpv4 {
                    operation: ArpOperation::Request | ArpOperation::Reply,
                    source_hardware_addr,
                    source_protocol_addr,
                    ..
                } => Rx::Stack(Some((
                    source_protocol_addr.into(),
                    MacAddr(source_hardware_addr.0),
                ))),
                _ => Rx::Stack(None),
            }
        }
        EthernetProtocol::Ipv4 => match Ipv4Packet::new_checked(eth.payload()) {
            Ok(p) if p.version() == 4 && p.verify_checksum() => Rx::Stack(None),
            _ => Rx::Malformed,
        },
        EthernetProtocol::Ipv6 => {
            let Ok(ip) = Ipv6Packet::new_checked(eth.payload()) else {
                return Rx::Malformed;
            };
            if ip.version() != 6 {
                return Rx::Malformed;
            }
            // ND is only believed with hop limit 255 (RFC 4861 §7.1.1: it
            // cannot have crossed a router).
            if ip.next_header() != IpProtocol::Icmpv6 || ip.hop_limit() != 255 {
                return Rx::Stack(None);
            }
            let (src, dst) = (ip.src_addr(), ip.dst_addr());
            let icmp = match Icmpv6Packet::new_checked(ip.payload()) {
                Ok(p) => p,
                Err(_) => return Rx::Malformed,
            };
            let repr = match Icmpv6Repr::parse(&src, &dst, &icmp, &ChecksumCapabilities::default())
            {
                Ok(r) => r,
                Err(_) => return Rx::Malformed,
            };
            if let Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
                target_addr,
                lladdr,
            }) = repr
            {
                if !dst.is_multicast() && !src.is_unspecified() {
                    let ll = lladdr.and_then(mac_of);
                    return Rx::UnicastSolicit {
                        sender: ll.map(|m| (IpAddr::V6(src), m)),
                        from: src,
                        from_mac: ll.unwrap_or(MacAddr(eth.src_addr().0)),
                        target: target_addr,
                    };
                }
            }
            match repr {
                Icmpv6Repr::Ndisc(nd) => Rx::Stack(match nd {
                    NdiscRepr::NeighborSolicit {
                        lladdr: Some(ll), ..
                    }
                    | NdiscRepr::RouterSolicit { lladdr: Some(ll) }
                    | NdiscRepr::RouterAdvert {
                        lladdr: Some(ll), ..
                    } if !src.is_unspecified() => mac_of(ll).map(|m| (IpAddr::V6(src), m)),
                    NdiscRepr::NeighborAdvert {
                        target_addr,
                        lladdr: Some(ll),
                        ..
                    } => mac_of(ll).map(|m| (IpAddr::V6(target_addr), m)),
                    _ => None,
                }),
                _ => Rx::Stack(None),
            }
        }
        _ => Rx::Ignored,
    }
}

/// Classifies a frame smoltcp sends; see [`Tx`].
pub(crate) fn classify_tx(frame: &[u8]) -> Tx {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return Tx::Other;
    };
    match eth.ethertype() {
        EthernetProtocol::Arp => match ArpPacket::new_checked(eth.payload()) {
            Ok(p) if p.operation() == ArpOperation::Reply => Tx::ArpReply,
            _ => Tx::Other,
        },
        EthernetProtocol::Ipv4 => {
            let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
                return Tx::Other;
            };
            if ip.next_header() != IpProtocol::Icmp {
                return Tx::Other;
            }
            match Icmpv4Packet::new_checked(ip.payload()) {
                Ok(p) if p.msg_type() == Icmpv4Message::EchoReply => Tx::EchoReply,
                _ => Tx::Other,
            }
        }
        EthernetProtocol::Ipv6 => {
            let Ok(ip) = Ipv6Packet::new_checked(eth.payload()) else {
                return Tx::Other;
            };
            if ip.next_header() != IpProtocol::Icmpv6 {
                return Tx::Other;
            }
            match Icmpv6Packet::new_checked(ip.payload()).map(|p| p.msg_type()) {
                Ok(Icmpv6Message::EchoReply) => Tx::EchoReply,
                Ok(Icmpv6Message::NeighborAdvert) => Tx::NeighbourAdvert,
                _ => Tx::Other,
            }
        }
        _ => Tx::Other,
    }
}
