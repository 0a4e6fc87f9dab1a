//! Ethernet II frames and the per-packet L2 classifier [`parse_l2`].
//!
//! Layer: wire (lowest). No I/O or allocation. On the packet path: the switch
//! calls [`parse_l2`] once per received frame.
//!
//! Frame layout (IEEE 802.3 clause 3.2, Ethernet II type interpretation):
//!
//! ```text
//! 0        6        12   14
//! | dst    | src    | ty | payload ...
//! ```
//!
//! The FCS is not part of the view: NICs and vNICs strip it on receive.

use crate::ids::{MacAddr, VlanId};

use super::vlan::{self, VID_MASK};
use super::{need, WireError};

/// Length of an untagged Ethernet II header: two addresses and an EtherType.
pub const HEADER_LEN: usize = 14;

/// Length of an Ethernet header carrying one 802.1Q (or 802.1ad) tag.
pub const TAGGED_HEADER_LEN: usize = HEADER_LEN + vlan::HEADER_LEN;

/// EtherType values used by the dataplane.
///
/// Source: IEEE Registration Authority, EtherType public listing,
/// <https://standards-oui.ieee.org/ethertype/eth.txt>.
pub mod ethertype {
    /// Internet Protocol version 4 (RFC 791). IEEE RA EtherType 0x0800.
    pub const IPV4: u16 = 0x0800;
    /// Address Resolution Protocol (RFC 826). IEEE RA EtherType 0x0806.
    pub const ARP: u16 = 0x0806;
    /// Customer VLAN tag, C-TAG (IEEE 802.1Q). IEEE RA EtherType 0x8100.
    pub const VLAN: u16 = 0x8100;
    /// Service VLAN tag, S-TAG, for Q-in-Q (IEEE 802.1ad, now 802.1Q).
    /// IEEE RA EtherType 0x88A8.
    pub const QINQ: u16 = 0x88a8;
    /// Internet Protocol version 6 (RFC 8200). IEEE RA EtherType 0x86DD.
    pub const IPV6: u16 = 0x86dd;

    /// True for the EtherTypes that introduce a VLAN tag (C-TAG or S-TAG).
    #[inline]
    pub const fn is_vlan(ty: u16) -> bool {
        ty == VLAN || ty == QINQ
    }
}

/// Byte offsets of the Ethernet header fields.
mod field {
    pub const DST: usize = 0;
    pub const SRC: usize = 6;
    pub const ETHERTYPE: usize = 12;
}

header_view! {
    /// A view of an Ethernet II frame (without FCS).
    pub struct EthFrame;

    /// Wraps `buf` without checking its length.
    ///
    /// Accessors panic if `buf` is shorter than [`HEADER_LEN`]; use
    /// [`EthFrame::new_checked`] for untrusted input.
    fn new_unchecked;

    /// Wraps `buf` after checking it holds a full Ethernet header.
    ///
    /// # Errors
    ///
    /// [`WireError::Truncated`] if `buf` is shorter than [`HEADER_LEN`].
    fn new_checked = check_len;
}

fields! {
    EthFrame {
        /// Destination MAC address.
        dst, set_dst: MacAddr = field::DST;
        /// Source MAC address.
        src, set_src: MacAddr = field::SRC;
        /// The EtherType right after the addresses: for a tagged frame this is
        /// [`ethertype::VLAN`] or [`ethertype::QINQ`], not the L3 protocol.
        ethertype, set_ethertype: u16 = field::ETHERTYPE;
    }
}

impl<T: AsRef<[u8]>> EthFrame<T> {
    /// Checks that the buffer holds a full Ethernet header.
    ///
    /// # Errors
    ///
    /// [`WireError::Truncated`] if it does not.
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        need(self.buf.as_ref().len(), HEADER_LEN)
    }

    /// Everything after the 14-byte header (including any VLAN tag).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..]
    }

    /// The whole frame.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_ref()
    }

    /// Outer VLAN id if the frame carries a complete C-TAG or S-TAG; `None`
    /// if it is untagged or the tag is cut short.
    ///
    /// A priority-tagged frame (tag present, VID 0) returns `Some(VlanId(0))`.
    #[inline]
    pub fn vlan(&self) -> Option<VlanId> {
        if !ethertype::is_vlan(self.ethertype()) {
            return None;
        }
        tag_vid(self.payload())
    }

    /// The frame's [`L2Info`]; same as [`parse_l2`] on the buffer.
    #[inline]
    pub fn l2_info(&self) -> Option<L2Info> {
        parse_l2(self.buf.as_ref())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthFrame<T> {
    /// Mutable access to everything after the 14-byte header.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buf.as_mut()[HEADER_LEN..]
    }
}

/// What the switch needs from a frame's L2 header, read in one pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L2Info {
    /// Destination MAC address.
    pub dst: MacAddr,
    /// Source MAC address.
    pub src: MacAddr,
    /// Outer VLAN id; [`VlanId::NONE`] (0) for untagged and priority-tagged
    /// frames. Use [`L2Info::is_tagged`] to tell them apart.
    pub vlan: VlanId,
    /// EtherType after the outer tag (or after the addresses when untagged).
    /// For a stacked (Q-in-Q) frame this is the inner tag's EtherType.
    pub ethertype: u16,
    /// Offset of the first byte after the outer tag: the L3 header, or the
    /// inner tag of a stacked frame. 14 untagged, 18 tagged.
    pub l3_offset: usize,
}

impl L2Info {
    /// True if the frame carried a VLAN tag (even one with VID 0).
    #[inline]
    pub fn is_tagged(&self) -> bool {
        self.l3_offset != HEADER_LEN
    }
}

/// Reads the addresses, outer VLAN id, L3 EtherType and L3 offset of a frame.
///
/// Returns `None` for runts: fewer than 14 bytes, or a C-TAG/S-TAG EtherType
/// with fewer than 18 bytes. Only the outer tag is parsed; a second tag shows
/// up as `ethertype == VLAN` with `l3_offset` pointing at it.
///
/// Hot path: two bounds checks, one branch, no loops.
#[inline]
pub fn parse_l2(buf: &[u8]) -> Option<L2Info> {
    let (hdr, rest) = buf.split_first_chunk::<HEADER_LEN>()?;
    // Fixed-size arrays below: indexing compiles without bounds checks. The
    // addresses are read as two overlapping big-endian words (bytes 0..8 and
    // 4..12), one load each, rather than byte by byte.
    let head = u64::from_be_bytes([
        hdr[0], hdr[1], hdr[2], hdr[3], hdr[4], hdr[5], hdr[6], hdr[7],
    ]);
    let mid = u64::from_be_bytes([
        hdr[4], hdr[5], hdr[6], hdr[7], hdr[8], hdr[9], hdr[10], hdr[11],
    ]);
    let (dst, src) = (MacAddr::from_u64(head >> 16), MacAddr::from_u64(mid));
    // The tag test compares the raw bytes with the constants in wire order,
    // which saves swapping the field first ([`ethertype::is_vlan`] on it).
    let outer = [hdr[12], hdr[13]];
    if outer == ethertype::VLAN.to_be_bytes() || outer == ethertype::QINQ.to_be_bytes() {
        let tag = rest.first_chunk::<{ vlan::HEADER_LEN }>()?;
        Some(L2Info {
            dst,
            src,
            vlan: VlanId(u16::from_be_bytes([tag[0], tag[1]]) & VID_MASK),
            ethertype: u16::from_be_bytes([tag[2], tag[3]]),
            l3_offset: TAGGED_HEADER_LEN,
        })
    } else {
        Some(L2Info {
            dst,
            src,
            vlan: VlanId::NONE,
            ethertype: u16::from_be_bytes(outer),
            l3_offset: HEADER_LEN,
        })
    }
}

/// The addresses and outer VLAN of a frame as plain numbers: what the switch
/// keys its forwarding table on. See [`parse_l2_addrs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L2Addrs {
    /// Destination address as a big-endian 48-bit number
    /// ([`MacAddr::to_u64`]).
    pub dst: u64,
    /// Source address, in the same form.
    pub src: u64,
    /// Outer VLAN id, as in [`L2Info::vlan`].
    pub vlan: VlanId,
    /// Either address has its I/G (group) bit set: a multicast or broadcast
    /// destination, or a group source (which no station may send from).
    /// Both bits tested at once, in the frame's own byte order, so the
    /// switch's unicast path pays one test for the pair.
    pub group: bool,
}

/// The I/G bits of both addresses in the first eight bytes of a frame read
/// as a little-endian word: bit 0 of byte 0 (the destination's first octet)
/// and bit 0 of byte 6 (the source's).
const GROUP_BITS_LE: u64 = 1 | 1 << 48;

/// The switch's cut of [`parse_l2`]: the same frames are accepted and the
/// same addresses and VLAN reported, but as numbers, and without the
/// EtherType and L3 offset the switch does not use.
///
/// Both addresses come from two overlapping 8-byte big-endian loads (bytes
/// 0..8 and 4..12), so a caller that hashes or masks them never packs bytes
/// back into a word.
#[inline]
pub fn parse_l2_addrs(buf: &[u8]) -> Option<L2Addrs> {
    // Every real frame is long enough for a tag (the Ethernet minimum is 60
    // bytes): one length test covers the header and a tag, and only shorter
    // buffers go the way that tests again.
    match buf.first_chunk::<{ HEADER_LEN + vlan::HEADER_LEN }>() {
        Some(long) => l2_addrs(long),
        None => l2_addrs(buf),
    }
}

/// [`parse_l2_addrs`] proper; inlined into both of its cases so that for the
/// long one the compiler drops the tag's length test.
#[inline(always)]
fn l2_addrs(buf: &[u8]) -> Option<L2Addrs> {
    let (hdr, rest) = buf.split_first_chunk::<HEADER_LEN>()?;
    // Whole-array copies out of fixed positions of a fixed-size array: each
    // compiles to one load, where building the arrays byte by byte (as
    // `parse_l2` does) leaves the compiler assembling them from narrower
    // loads.
    let (mut head, mut mid, mut outer) = ([0u8; 8], [0u8; 8], [0u8; 2]);
    head.copy_from_slice(&hdr[0..8]);
    mid.copy_from_slice(&hdr[4..12]);
    outer.copy_from_slice(&hdr[12..14]);
    // Two tests with the same block rather than one `||` (or a `match`):
    // the switch loop counts fewer instructions per frame written so, tagged
    // or not (benches/callgrind.sh; docs/benchmarks-log.md).
    #[allow(clippy::if_same_then_else)]
    let vlan = if outer == ethertype::VLAN.to_be_bytes() {
        tag_vid(rest)?
    } else if outer == ethertype::QINQ.to_be_bytes() {
        tag_vid(rest)?
    } else {
        VlanId::NONE
    };
    Some(L2Addrs {
        dst: u64::from_be_bytes(head) >> 16,
        src: u64::from_be_bytes(mid) & 0xffff_ffff_ffff,
        vlan,
        group: u64::from_le_bytes(head) & GROUP_BITS_LE != 0,
    })
}

/// The VLAN id of the tag at the start of `rest` (what follows the outer
/// EtherType); `None` if the tag is cut short. A tag needs its inner
/// EtherType too, as in `parse_l2`; the TCI is copied out whole so that it
/// compiles to one 16-bit load.
#[inline(always)]
fn tag_vid(rest: &[u8]) -> Option<VlanId> {
    let tag = rest.first_chunk::<{ vlan::HEADER_LEN }>()?;
    let mut tci = [0u8; 2];
    tci.copy_from_slice(&tag[..2]);
    Some(VlanId(u16::from_be_bytes(tci) & VID_MASK))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::hint::black_box;

    /// Reads every field; used by the prefix and random-buffer tests.
    pub(crate) fn read_all_fields<T: AsRef<[u8]>>(f: &EthFrame<T>) {
        black_box((f.dst(), f.src(), f.ethertype(), f.payload().len()));
        black_box((f.vlan(), f.l2_info(), f.as_bytes().len()));
    }

    /// Broadcast ARP request "who has 192.168.0.1? tell 192.168.0.2" from
    /// 52:54:00:12:34:56, padded to the 60-byte Ethernet minimum.
    #[rustfmt::skip]
    pub(crate) const ARP_REQUEST_FRAME: [u8; 60] = [
        // dst, src, ethertype ARP
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56,
        0x08, 0x06,
        // htype 1, ptype 0x0800, hlen 6, plen 4, op request
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01,
        // sender 52:54:00:12:34:56 192.168.0.2
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0xc0, 0xa8, 0x00, 0x02,
        // target 00:00:00:00:00:00 192.168.0.1
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01,
        // padding
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    /// Unicast frame with a C-TAG (PCP 5, DEI 0, VID 100) carrying the start
    /// of an IPv4 header.
    #[rustfmt::skip]
    const TAGGED_FRAME: [u8; 38] = [
        0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc,
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56,
        0x81, 0x00,
        // TCI: PCP 5 (0b101), DEI 0, VID 100 (0x064)
        0xa0, 0x64,
        0x08, 0x00,
        // IPv4 header
        0x45, 0x00, 0x00, 0x3c, 0x1c, 0x46, 0x40, 0x00,
        0x40, 0x01, 0x9d, 0x27, 0xc0, 0xa8, 0x00, 0x02,
        0xc0, 0xa8, 0x00, 0x01,
    ];

    /// Q-in-Q frame: S-TAG VID 200 outside a C-TAG VID 100, then IPv6.
    #[rustfmt::skip]
    const QINQ_FRAME: [u8; 24] = [
        0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc,
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56,
        0x88, 0xa8,
        0x00, 0xc8,
        0x81, 0x00,
        0x00, 0x64,
        0x86, 0xdd,
        0x60, 0x00,
    ];

    const SRC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    const DST: MacAddr = MacAddr([0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc]);

    #[test]
    fn untagged_frame_fields_parse() {
        let f = EthFrame::new_checked(&ARP_REQUEST_FRAME[..]).unwrap();
        assert_eq!(f.dst(), MacAddr::BROADCAST);
        assert_eq!(f.src(), SRC);
        assert_eq!(f.ethertype(), ethertype::ARP);
        assert_eq!(f.payload(), &ARP_REQUEST_FRAME[14..]);
        assert_eq!(f.vlan(), None);
    }

    #[test]
    fn frame_shorter_than_header_is_rejected() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                EthFrame::new_checked(&ARP_REQUEST_FRAME[..len]),
                Err(WireError::Truncated {
                    needed: 14,
                    got: len
                })
            );
        }
        let f = EthFrame::new_checked(&ARP_REQUEST_FRAME[..HEADER_LEN]).unwrap();
        assert!(f.payload().is_empty());
    }

    #[test]
    fn parse_l2_untagged_reports_vlan_zero_and_l3_at_14() {
        let info = parse_l2(&ARP_REQUEST_FRAME).unwrap();
        assert_eq!(
            info,
            L2Info {
                dst: MacAddr::BROADCAST,
                src: SRC,
                vlan: VlanId::NONE,
                ethertype: ethertype::ARP,
                l3_offset: 14,
            }
        );
        assert!(!info.is_tagged());
    }

    #[test]
    fn parse_l2_tagged_reports_vid_inner_ethertype_and_l3_at_18() {
        let info = parse_l2(&TAGGED_FRAME).unwrap();
        assert_eq!(info.dst, DST);
        assert_eq!(info.src, SRC);
        assert_eq!(info.vlan, VlanId(100));
        assert_eq!(info.ethertype, ethertype::IPV4);
        assert_eq!(info.l3_offset, 18);
        assert!(info.is_tagged());
        assert_eq!(TAGGED_FRAME[info.l3_offset], 0x45);
    }

    #[test]
    fn parse_l2_qinq_reports_outer_vid_and_points_at_inner_tag() {
        let info = parse_l2(&QINQ_FRAME).unwrap();
        assert_eq!(info.vlan, VlanId(200));
        assert_eq!(info.ethertype, ethertype::VLAN);
        assert_eq!(info.l3_offset, 18);
        // The caller can run the same parse on the inner tag.
        let inner = parse_l2(&QINQ_FRAME[4..]).unwrap();
        assert_eq!(inner.vlan, VlanId(100));
        assert_eq!(inner.ethertype, ethertype::IPV6);
    }

    #[test]
    fn parse_l2_masks_pcp_and_dei_out_of_vid() {
        let mut f = TAGGED_FRAME;
        f[14] = 0xff; // PCP 7, DEI 1, VID high nibble 0xf
        f[15] = 0xfe;
        assert_eq!(parse_l2(&f).unwrap().vlan, VlanId(0xffe));
    }

    #[test]
    fn priority_tagged_frame_is_tagged_with_vid_zero() {
        let mut f = TAGGED_FRAME;
        f[14] = 0xa0;
        f[15] = 0x00;
        let info = parse_l2(&f).unwrap();
        assert_eq!(info.vlan, VlanId::NONE);
        assert!(info.is_tagged());
        assert_eq!(
            EthFrame::new_checked(&f[..]).unwrap().vlan(),
            Some(VlanId(0))
        );
    }

    #[test]
    fn runt_frames_are_rejected_by_parse_l2() {
        for len in 0..HEADER_LEN {
            assert_eq!(parse_l2(&ARP_REQUEST_FRAME[..len]), None, "len {len}");
        }
        assert!(parse_l2(&ARP_REQUEST_FRAME[..HEADER_LEN]).is_some());
    }

    #[test]
    fn truncated_vlan_header_is_rejected() {
        for len in 0..TAGGED_HEADER_LEN {
            assert_eq!(parse_l2(&TAGGED_FRAME[..len]), None, "len {len}");
            assert_eq!(parse_l2(&QINQ_FRAME[..len]), None, "len {len}");
        }
        for len in HEADER_LEN..TAGGED_HEADER_LEN {
            let f = EthFrame::new_checked(&TAGGED_FRAME[..len]).unwrap();
            assert_eq!(f.vlan(), None, "len {len}");
        }
        let f = EthFrame::new_checked(&TAGGED_FRAME[..TAGGED_HEADER_LEN]).unwrap();
        assert_eq!(f.vlan(), Some(VlanId(100)));
        assert_eq!(f.l2_info().unwrap().l3_offset, TAGGED_HEADER_LEN);
    }

    #[test]
    fn parse_l2_addrs_agrees_with_parse_l2_on_every_prefix() {
        for frame in [&ARP_REQUEST_FRAME[..], &TAGGED_FRAME, &QINQ_FRAME] {
            for len in 0..=frame.len() {
                let full = parse_l2(&frame[..len]).map(|i| L2Addrs {
                    dst: i.dst.to_u64(),
                    src: i.src.to_u64(),
                    vlan: i.vlan,
                    group: i.dst.is_multicast() || i.src.is_multicast(),
                });
                assert_eq!(parse_l2_addrs(&frame[..len]), full, "len {len}");
            }
        }
    }

    #[test]
    fn eth_frame_vlan_agrees_with_parse_l2() {
        for frame in [&ARP_REQUEST_FRAME[..], &TAGGED_FRAME, &QINQ_FRAME] {
            let f = EthFrame::new_checked(frame).unwrap();
            let info = parse_l2(frame).unwrap();
            assert_eq!(f.vlan().unwrap_or(VlanId::NONE), info.vlan);
            assert_eq!(f.l2_info(), Some(info));
        }
    }

    #[test]
    fn every_prefix_of_fixtures_parses_or_fails_cleanly() {
        for frame in [&ARP_REQUEST_FRAME[..], &TAGGED_FRAME, &QINQ_FRAME] {
            for len in 0..=frame.len() {
                let prefix = &frame[..len];
                let _ = parse_l2(prefix);
                match EthFrame::new_checked(prefix) {
                    Ok(f) => read_all_fields(&f),
                    Err(e) => assert!(matches!(e, WireError::Truncated { .. })),
                }
            }
        }
    }

    #[test]
    fn setters_round_trip() {
        let mut buf = [0u8; 20];
        let mut f = EthFrame::new_checked(&mut buf[..]).unwrap();
        f.set_dst(DST);
        f.set_src(SRC);
        f.set_ethertype(ethertype::IPV6);
        f.payload_mut().copy_from_slice(&[1, 2, 3, 4, 5, 6]);
        assert_eq!(f.dst(), DST);
        assert_eq!(f.src(), SRC);
        assert_eq!(f.ethertype(), ethertype::IPV6);
        assert_eq!(f.payload(), &[1, 2, 3, 4, 5, 6]);
        let buf = f.into_inner();
        assert_eq!(&buf[..6], &DST.0);
        assert_eq!(&buf[6..12], &SRC.0);
        assert_eq!(&buf[12..14], &[0x86, 0xdd]);
    }

    #[test]
    fn rewriting_untagged_frame_reproduces_fixture() {
        let mut buf = [0u8; 60];
        let mut f = EthFrame::new_unchecked(&mut buf);
        f.set_dst(MacAddr::BROADCAST);
        f.set_src(SRC);
        f.set_ethertype(ethertype::ARP);
        f.payload_mut().copy_from_slice(&ARP_REQUEST_FRAME[14..]);
        assert_eq!(buf, ARP_REQUEST_FRAME);
    }

    #[test]
    fn vlan_ethertypes_are_recognised() {
        assert!(ethertype::is_vlan(ethertype::VLAN));
        assert!(ethertype::is_vlan(ethertype::QINQ));
        assert!(!ethertype::is_vlan(ethertype::IPV4));
        assert!(!ethertype::is_vlan(ethertype::IPV6));
        assert!(!ethertype::is_vlan(ethertype::ARP));
    }
}
