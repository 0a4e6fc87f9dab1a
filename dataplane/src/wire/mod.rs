//! Typed, checked views over packet bytes: Ethernet II, 802.1Q tags, ARP,
//! IPv4 and IPv6, and the VXLAN/Geneve outer headers ([`tunnel`]).
//!
//! Layer: wire, the lowest layer of the dataplane. Depends only on
//! [`crate::ids`] and `core`/`std::net` address types, except
//! [`tunnel::OuterHeader::encap`], which prepends into an [`crate::Mbuf`].
//! No I/O and no allocation. On the packet path: everything here may run once per frame.
//!
//! Every header has a view type generic over its storage, `View<T: AsRef<[u8]>>`.
//! `View::new_checked(buf)` validates lengths (and any fixed fields the view
//! relies on) exactly once and returns a [`WireError`] on bad input; after it
//! succeeds no accessor panics. `View::new_unchecked(buf)` skips the checks for
//! callers that have already validated the buffer; accessors on such a view
//! may panic if the buffer is too short. When `T: AsMut<[u8]>` the views also
//! have setters.
//!
//! The switch's per-frame classifier is [`parse_l2_addrs`] (destination,
//! source and VLAN only): a fixed number of bounds checks and no loops.
//! [`parse_l2`] also finds the payload, for callers off that path.

#[macro_use]
mod view;

pub mod arp;
pub mod ethernet;
pub mod gso;
pub mod ipv4;
pub mod ipv6;
pub mod offload;
pub mod tunnel;
pub mod vlan;
pub mod vnet;

pub use arp::ArpPacket;
pub use ethernet::{ethertype, parse_l2, parse_l2_addrs, EthFrame, L2Addrs, L2Info};
pub use gso::{Gso, GsoKind, TsoPlan};
pub use ipv4::{checksum, combine, fold, ones_complement_sum, Ipv4Packet};
pub use ipv6::Ipv6Packet;
pub use offload::{complete_l4_checksum, complete_unmarked_partial_csum, PartialCsum};
pub use vlan::VlanTag;

/// Why a buffer could not be viewed as a header.
///
/// One enum for the whole wire module. The packet path does not propagate
/// these: it maps a failure to a drop reason and counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The buffer is shorter than the header (or the length the header claims).
    #[error("truncated: need {needed} bytes, got {got}")]
    Truncated {
        /// Bytes the header requires.
        needed: usize,
        /// Bytes the buffer holds.
        got: usize,
    },
    /// The IP version nibble does not match the view.
    #[error("bad IP version {got}, expected {expected}")]
    BadVersion {
        /// Version the view parses.
        expected: u8,
        /// Version found in the packet.
        got: u8,
    },
    /// A length or offset field is internally inconsistent.
    #[error("malformed header: {0}")]
    Malformed(&'static str),
    /// The header is well formed but describes a variant this view does not
    /// parse (for example ARP over a non-Ethernet link).
    #[error("unsupported header: {0}")]
    Unsupported(&'static str),
}

/// `Ok(())` if `got >= needed`, else [`WireError::Truncated`].
#[inline]
pub(crate) fn need(got: usize, needed: usize) -> Result<(), WireError> {
    if got >= needed {
        Ok(())
    } else {
        Err(WireError::Truncated { needed, got })
    }
}

/// Big-endian `u16` at `off`. Panics if out of bounds (unchecked views only).
#[inline]
pub(crate) fn get_u16(buf: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([buf[off], buf[off + 1]])
}

/// Big-endian `u16` at `off`, or `None` if the buffer ends first: for
/// parsers that walk untrusted offsets without a checked view.
#[inline]
pub(crate) fn get_u16_checked(buf: &[u8], off: usize) -> Option<u16> {
    buf.get(off..off + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
}

/// Writes a big-endian `u16` at `off`.
#[inline]
pub(crate) fn put_u16(buf: &mut [u8], off: usize, val: u16) {
    buf[off..off + 2].copy_from_slice(&val.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testutil::XorShift;

    /// Feeds every parser the same buffer and reads every field of whatever
    /// view accepts it. Returns one bit per parser that accepted the buffer.
    fn parse_everything(buf: &mut [u8]) -> u8 {
        let mut accepted = 0;
        if let Some(info) = parse_l2(buf) {
            assert!(info.l3_offset <= buf.len());
            assert!(info.vlan.0 <= 0x0fff);
            accepted |= 1 << 0;
        }
        if let Ok(f) = EthFrame::new_checked(&*buf) {
            ethernet::tests::read_all_fields(&f);
            accepted |= 1 << 1;
        }
        if let Ok(t) = VlanTag::new_checked(&*buf) {
            vlan::tests::read_all_fields(&t);
            accepted |= 1 << 2;
        }
        if let Ok(p) = ArpPacket::new_checked(&*buf) {
            arp::tests::read_all_fields(&p);
            accepted |= 1 << 3;
        }
        if let Ok(p) = Ipv4Packet::new_checked(&*buf) {
            ipv4::tests::read_all_fields(&p);
            accepted |= 1 << 4;
        }
        if let Ok(mut p) = Ipv4Packet::new_checked(&mut *buf) {
            p.fill_checksum();
            assert!(p.verify_checksum());
        }
        if let Ok(p) = Ipv6Packet::new_checked(&*buf) {
            ipv6::tests::read_all_fields(&p);
            accepted |= 1 << 5;
        }
        let _ = checksum(buf);
        accepted
    }

    #[test]
    fn random_buffers_never_panic_any_parser() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut buf = [0u8; 200];
        let mut accepted = 0u8;
        for round in 0..20_000 {
            let len = (rng.next_u64() % 200) as usize;
            for b in buf[..len].iter_mut() {
                *b = rng.next_u64() as u8;
            }
            // Bias some rounds towards headers the parsers accept, so the
            // accessors behind `new_checked` are exercised too, not just the
            // rejection paths.
            if len >= 14 && round % 4 == 0 {
                buf[12..14].copy_from_slice(&[0x81, 0x00]);
            }
            if len >= 1 && round % 3 == 0 {
                buf[0] = if round % 2 == 0 { 0x45 } else { 0x60 };
            }
            if len >= 8 && round % 5 == 0 {
                buf[..8].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
            }
            if len >= 4 && round % 3 == 0 && buf[0] == 0x45 {
                // Total length no longer than the buffer.
                let tl = (rng.next_u64() as usize % (len + 1)) as u16;
                buf[2..4].copy_from_slice(&tl.to_be_bytes());
            }
            if len >= 6 && round % 3 == 0 && buf[0] == 0x60 {
                let pl = (rng.next_u64() as usize % (len + 1)) as u16;
                buf[4..6].copy_from_slice(&pl.to_be_bytes());
            }
            accepted |= parse_everything(&mut buf[..len]);
        }
        // Every parser must have accepted some buffers, or the test only
        // covered rejection paths.
        assert_eq!(accepted, 0b11_1111);
    }

    #[test]
    fn truncation_error_reports_needed_and_got() {
        assert_eq!(need(3, 4), Err(WireError::Truncated { needed: 4, got: 3 }));
        assert_eq!(need(4, 4), Ok(()));
        let msg = WireError::Truncated { needed: 14, got: 2 }.to_string();
        assert!(msg.contains("14") && msg.contains('2'), "{msg}");
    }
}
