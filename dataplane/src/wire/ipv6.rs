//! IPv6 fixed headers (RFC 8200 section 3).
//!
//! Layer: wire (lowest). No I/O or allocation. On the packet path.
//!
//! ```text
//! 0        1        2                 4
//! |ver| traffic cls |   flow label    |
//! | payload length  | next   | hop lim|
//! | source address (16 bytes)         |
//! | destination address (16 bytes)    |
//! ```
//!
//! Extension headers are part of the payload; this view does not walk them.

use std::net::Ipv6Addr;

use super::ipv4::fold;
use super::{need, WireError};

pub use super::ipv4::protocol;

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;

const FLOW_LABEL_MASK: u32 = 0x000f_ffff;
const TRAFFIC_CLASS_SHIFT: u32 = 20;

mod field {
    pub const VER_TC_FLOW: usize = 0;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: usize = 8;
    pub const DST: usize = 24;
}

header_view! {
    /// A view of an IPv6 packet.
    ///
    /// The buffer may extend past the payload length (Ethernet padding);
    /// [`payload`] stops at it. Jumbograms (payload length 0 with a Hop-by-Hop
    /// jumbo option, RFC 2675) show an empty payload.
    ///
    /// [`payload`]: Ipv6Packet::payload
    pub struct Ipv6Packet;

    /// Wraps `buf` without checking it.
    ///
    /// Accessors panic if `buf` is shorter than [`HEADER_LEN`].
    fn new_unchecked;

    /// Wraps `buf` after checking version and lengths.
    ///
    /// # Errors
    ///
    /// - [`WireError::Truncated`] if `buf` is shorter than the fixed header
    ///   plus the payload length.
    /// - [`WireError::BadVersion`] if the version is not 6.
    fn new_checked = check;
}

fields! {
    Ipv6Packet {
        /// Payload length in bytes (everything after the fixed header, extension
        /// headers included).
        payload_len, set_payload_len: u16 = field::PAYLOAD_LEN;
        /// Type of the header after the fixed header; see [`protocol`].
        next_header, set_next_header: u8 = field::NEXT_HEADER;
        /// Hop limit.
        hop_limit, set_hop_limit: u8 = field::HOP_LIMIT;
        /// Source address.
        src, set_src: Ipv6Addr = field::SRC;
        /// Destination address.
        dst, set_dst: Ipv6Addr = field::DST;
    }
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Checks version and lengths; see [`Ipv6Packet::new_checked`].
    ///
    /// # Errors
    ///
    /// As [`Ipv6Packet::new_checked`].
    pub fn check(&self) -> Result<(), WireError> {
        let len = self.buf.as_ref().len();
        need(len, HEADER_LEN)?;
        let version = self.version();
        if version != 6 {
            return Err(WireError::BadVersion {
                expected: 6,
                got: version,
            });
        }
        need(len, self.total_len())
    }

    #[inline]
    fn first_word(&self) -> u32 {
        let b = self.buf.as_ref();
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// IP version (6 for a checked view).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buf.as_ref()[field::VER_TC_FLOW] >> 4
    }

    /// Traffic class (DSCP and ECN).
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (self.first_word() >> TRAFFIC_CLASS_SHIFT) as u8
    }

    /// Flow label (20 bits).
    #[inline]
    pub fn flow_label(&self) -> u32 {
        self.first_word() & FLOW_LABEL_MASK
    }

    /// Fixed header plus payload length, in bytes.
    #[inline]
    pub fn total_len(&self) -> usize {
        HEADER_LEN + usize::from(self.payload_len())
    }

    /// Payload range clamped to the buffer, so that a checked view whose
    /// payload length was later rewritten by a setter never panics.
    #[inline]
    fn payload_end(&self) -> usize {
        self.total_len().min(self.buf.as_ref().len())
    }

    /// The payload: `payload_len` bytes after the fixed header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let end = self.payload_end();
        &self.buf.as_ref()[HEADER_LEN..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    #[inline]
    fn set_first_word(&mut self, w: u32) {
        self.buf.as_mut()[..4].copy_from_slice(&w.to_be_bytes());
    }

    /// Writes version 6, keeping traffic class and flow label.
    #[inline]
    pub fn init_version(&mut self) {
        let w = self.first_word() & 0x0fff_ffff;
        self.set_first_word(w | (6 << 28));
    }

    /// Sets the traffic class.
    #[inline]
    pub fn set_traffic_class(&mut self, tc: u8) {
        let w = self.first_word() & !(0xff << TRAFFIC_CLASS_SHIFT);
        self.set_first_word(w | (u32::from(tc) << TRAFFIC_CLASS_SHIFT));
    }

    /// Sets the flow label; only the low 20 bits of `label` are used.
    #[inline]
    pub fn set_flow_label(&mut self, label: u32) {
        let w = self.first_word() & !FLOW_LABEL_MASK;
        self.set_first_word(w | (label & FLOW_LABEL_MASK));
    }

    /// Mutable access to the payload (see [`Ipv6Packet::payload`]).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.payload_end();
        &mut self.buf.as_mut()[HEADER_LEN..end]
    }
}

/// One's-complement sum of the upper-layer pseudo header for IPv6 (RFC 8200
/// section 8.1): source, destination, upper-layer length, next header.
///
/// Combine it with the L4 header and payload sum, then invert.
#[inline]
pub fn pseudo_header_sum(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, l4_len: u32) -> u16 {
    // Summing 32-bit words is equivalent to summing 16-bit words modulo
    // 2^16 - 1; eight address words and two small terms fit a u64 easily.
    let words = |v: u128| -> u64 { (0..4).map(|i| u64::from((v >> (32 * i)) as u32)).sum() };
    let acc = words(u128::from(src))
        + words(u128::from(dst))
        + u64::from(l4_len)
        + u64::from(next_header);
    fold(acc)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::ipv4::{combine, ones_complement_sum};
    use std::hint::black_box;

    /// Reads every field; used by the prefix and random-buffer tests.
    pub(crate) fn read_all_fields<T: AsRef<[u8]>>(p: &Ipv6Packet<T>) {
        black_box((p.version(), p.traffic_class(), p.flow_label()));
        black_box((p.payload_len(), p.total_len(), p.next_header()));
        black_box((p.hop_limit(), p.src(), p.dst(), p.payload().len()));
    }

    /// UDP fe80::1 port 5353 -> fe80::2 port 5353, payload "weir", traffic
    /// class 0x0a, flow label 0x12345, hop limit 64; UDP checksum 0xf827.
    #[rustfmt::skip]
    const UDP6: [u8; 52] = [
        0x60, 0xa1, 0x23, 0x45, 0x00, 0x0c, 0x11, 0x40,
        0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
        0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
        // UDP header
        0x14, 0xe9, 0x14, 0xe9, 0x00, 0x0c, 0xf8, 0x27,
        // "weir"
        0x77, 0x65, 0x69, 0x72,
    ];

    fn fe80(last: u16) -> Ipv6Addr {
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, last)
    }

    #[test]
    fn udp_fixture_fields_parse() {
        let p = Ipv6Packet::new_checked(&UDP6[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0x0a);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload_len(), 12);
        assert_eq!(p.total_len(), 52);
        assert_eq!(p.next_header(), protocol::UDP);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src(), fe80(1));
        assert_eq!(p.dst(), fe80(2));
        assert_eq!(p.payload(), &UDP6[40..]);
    }

    #[test]
    fn udp_checksum_verifies_with_pseudo_header() {
        let p = Ipv6Packet::new_checked(&UDP6[..]).unwrap();
        let pseudo = pseudo_header_sum(p.src(), p.dst(), p.next_header(), 12);
        assert_eq!(pseudo, 0xfd21);
        assert_eq!(combine(pseudo, ones_complement_sum(p.payload())), 0xffff);
    }

    #[test]
    fn pseudo_header_sum_handles_all_ones_addresses() {
        let ones = Ipv6Addr::from(u128::MAX);
        let mut bytes = [0xffu8; 40];
        bytes[32..].copy_from_slice(&[0, 0, 0xff, 0xff, 0, 0, 0, 0xff]);
        assert_eq!(
            pseudo_header_sum(ones, ones, 0xff, 0xffff),
            ones_complement_sum(&bytes)
        );
    }

    #[test]
    fn version_other_than_6_is_rejected() {
        let mut buf = UDP6;
        buf[0] = 0x40;
        assert_eq!(
            Ipv6Packet::new_checked(&buf[..]),
            Err(WireError::BadVersion {
                expected: 6,
                got: 4
            })
        );
    }

    #[test]
    fn payload_len_beyond_buffer_is_truncated() {
        assert_eq!(
            Ipv6Packet::new_checked(&UDP6[..51]),
            Err(WireError::Truncated {
                needed: 52,
                got: 51
            })
        );
        for len in 0..HEADER_LEN {
            assert_eq!(
                Ipv6Packet::new_checked(&UDP6[..len]),
                Err(WireError::Truncated {
                    needed: 40,
                    got: len
                })
            );
        }
    }

    #[test]
    fn ethernet_padding_is_excluded_from_payload() {
        let mut padded = [0u8; 64];
        padded[..52].copy_from_slice(&UDP6);
        let p = Ipv6Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(p.payload(), &UDP6[40..]);
    }

    #[test]
    fn every_prefix_parses_or_fails_cleanly() {
        for len in 0..=UDP6.len() {
            match Ipv6Packet::new_checked(&UDP6[..len]) {
                Ok(p) => read_all_fields(&p),
                Err(e) => assert!(matches!(e, WireError::Truncated { .. })),
            }
            let mut buf = UDP6;
            let pl = len.saturating_sub(HEADER_LEN) as u16;
            buf[4..6].copy_from_slice(&pl.to_be_bytes());
            if let Ok(p) = Ipv6Packet::new_checked(&buf[..len]) {
                assert_eq!(p.payload().len(), usize::from(pl));
                read_all_fields(&p);
            }
        }
    }

    #[test]
    fn building_header_reproduces_fixture() {
        let mut buf = [0u8; 52];
        buf[40..].copy_from_slice(&UDP6[40..]);
        let mut p = Ipv6Packet::new_unchecked(&mut buf);
        p.init_version();
        p.set_traffic_class(0x0a);
        p.set_flow_label(0x12345);
        p.set_payload_len(12);
        p.set_next_header(protocol::UDP);
        p.set_hop_limit(64);
        p.set_src(fe80(1));
        p.set_dst(fe80(2));
        assert_eq!(buf, UDP6);
    }

    #[test]
    fn setters_round_trip_without_disturbing_neighbours() {
        let mut buf = UDP6;
        let mut p = Ipv6Packet::new_checked(&mut buf[..]).unwrap();
        p.set_traffic_class(0xff);
        assert_eq!((p.version(), p.flow_label()), (6, 0x12345));
        p.set_flow_label(0xfff_ffff);
        assert_eq!((p.version(), p.traffic_class()), (6, 0xff));
        assert_eq!(p.flow_label(), 0xf_ffff);
        p.set_traffic_class(0);
        p.set_flow_label(0);
        assert_eq!(p.version(), 6);
        p.set_hop_limit(1);
        p.set_next_header(protocol::ICMPV6);
        p.set_src(Ipv6Addr::LOCALHOST);
        p.set_dst(Ipv6Addr::UNSPECIFIED);
        p.payload_mut().fill(0xaa);
        assert_eq!(p.hop_limit(), 1);
        assert_eq!(p.next_header(), protocol::ICMPV6);
        assert_eq!(p.src(), Ipv6Addr::LOCALHOST);
        assert_eq!(p.dst(), Ipv6Addr::UNSPECIFIED);
        assert_eq!(p.payload(), &[0xaa; 12]);
        assert_eq!(p.into_inner()[..4], [0x60, 0, 0, 0]);
    }

    #[test]
    fn rewritten_payload_len_never_makes_checked_view_panic() {
        let mut buf = UDP6;
        let mut p = Ipv6Packet::new_checked(&mut buf[..]).unwrap();
        p.set_payload_len(u16::MAX);
        assert_eq!(p.payload().len(), 12);
        assert_eq!(p.payload_mut().len(), 12);
        read_all_fields(&p);
    }
}
