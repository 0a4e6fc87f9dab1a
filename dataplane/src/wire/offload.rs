//! Checksum offload: finishing TCP/UDP checksums that a sender left partial.
//!
//! Layer: wire. No I/O, no allocation. On the packet path: at most one call
//! per frame, only for frames that carry a partial checksum.
//!
//! A sender with checksum offload (a virtio-net driver that negotiated
//! VIRTIO_NET_F_CSUM, a Linux socket on a veth) leaves the TCP/UDP checksum
//! field holding only the one's-complement sum of the pseudo header and names
//! where the checksummed region starts ([`PartialCsum::start`]) and where in it
//! the field is ([`PartialCsum::offset`]). Whoever cannot hand that promise on
//! to the next hop completes it: sums from `start` to the end of the frame
//! (the field included, since it already holds the pseudo-header part) and
//! stores the inverted sum at `start + offset` (virtio 1.2 §5.1.6.2, as the
//! kernel's `skb_checksum_help` does). The region is never longer than one
//! mbuf, so this costs one pass over at most a frame's payload.

use super::ethernet::{self, ethertype};
use super::ipv4::{fold, ones_complement_sum};
use super::{get_u16_checked, vlan};

/// Where the IP header of an Ethernet frame starts, behind up to two VLAN
/// tags (802.1Q or 802.1ad), and the EtherType that names it; `None` if the
/// frame ends first.
pub(crate) fn l3_start(frame: &[u8]) -> Option<(usize, u16)> {
    let be16 = |off: usize| get_u16_checked(frame, off);
    let mut l3 = ethernet::HEADER_LEN;
    let mut ty = be16(12)?;
    for _ in 0..2 {
        if !ethertype::is_vlan(ty) {
            break;
        }
        ty = be16(l3 + 2)?;
        l3 += vlan::HEADER_LEN;
    }
    Some((l3, ty))
}

/// A partial L4 checksum: the field at `start + offset` holds the
/// pseudo-header sum; the rest of the sum, from `start` to the end of the
/// frame, is still to be added. Offsets count from the first byte of the
/// Ethernet header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartialCsum {
    /// Where the checksummed region starts (the L4 header).
    pub start: u16,
    /// Where the checksum field is, relative to `start` (16 for TCP, 6 for UDP).
    pub offset: u16,
}

impl PartialCsum {
    /// Checks untrusted offsets against a frame of `frame_len` bytes: the
    /// two-byte field must lie inside the frame. `None` if it does not.
    #[inline]
    pub fn new_checked(start: u16, offset: u16, frame_len: usize) -> Option<PartialCsum> {
        let field_end = usize::from(start) + usize::from(offset) + 2;
        (field_end <= frame_len).then_some(PartialCsum { start, offset })
    }

    /// Completes the checksum in `frame` (see the module docs). Returns false
    /// and leaves the frame alone if the field does not lie inside it.
    #[inline]
    pub fn complete(self, frame: &mut [u8]) -> bool {
        let start = usize::from(self.start);
        match frame.get_mut(start..) {
            Some(region) => fill(region, usize::from(self.offset)),
            None => false,
        }
    }
}

/// Sums `region` (the field at `field` holding the pseudo-header sum) and
/// stores the checksum at `field`. False if the field is outside `region`.
#[inline]
fn fill(region: &mut [u8], field: usize) -> bool {
    if field.checked_add(2).is_none_or(|end| end > region.len()) {
        return false;
    }
    let mut csum = !ones_complement_sum(region);
    if csum == 0 {
        // A computed zero goes out as all ones: for UDP zero means "no
        // checksum" (RFC 768); for TCP both are the same one's-complement value.
        csum = 0xffff;
    }
    region[field..field + 2].copy_from_slice(&csum.to_be_bytes());
    true
}

/// Finds the TCP or UDP checksum of an Ethernet frame: IPv4 (not a fragment)
/// or IPv6 without extension headers, behind up to two VLAN tags. Returns the
/// checksum's place and the end of the IP datagram (Ethernet padding after it
/// is not summed); `None` for anything else or a truncated frame.
pub fn locate_l4_checksum(frame: &[u8]) -> Option<(PartialCsum, usize)> {
    let be16 = |off: usize| get_u16_checked(frame, off);
    let (l3, ty) = l3_start(frame)?;
    let (proto, l4, end) = match ty {
        ethertype::IPV4 => {
            let vihl = *frame.get(l3)?;
            let ihl = usize::from(vihl & 0x0f) * 4;
            let (total, frag) = (be16(l3 + 2)?, be16(l3 + 6)?);
            if vihl >> 4 != 4 || ihl < 20 || frag & 0x3fff != 0 {
                return None;
            }
            (*frame.get(l3 + 9)?, l3 + ihl, l3 + usize::from(total))
        }
        ethertype::IPV6 => {
            let payload = be16(l3 + 4)?;
            (*frame.get(l3 + 6)?, l3 + 40, l3 + 40 + usize::from(payload))
        }
        _ => return None,
    };
    let offset: u16 = match proto {
        6 => 16,
        17 => 6,
        _ => return None,
    };
    if end > frame.len() || l4 + usize::from(offset) + 2 > end {
        return None;
    }
    Some((
        PartialCsum {
            start: u16::try_from(l4).ok()?,
            offset,
        },
        end,
    ))
}

/// Completes the TCP/UDP checksum of a frame whose checksum field holds only
/// the pseudo-header sum but which came without offsets (AF_PACKET's
/// `TP_STATUS_CSUMNOTREADY`): finds the field with [`locate_l4_checksum`] and
/// sums up to the end of the IP datagram. Returns false and leaves the frame
/// alone if it is not TCP or UDP over IPv4/IPv6 as described there.
pub fn complete_l4_checksum(frame: &mut [u8]) -> bool {
    let Some((p, end)) = locate_l4_checksum(frame) else {
        return false;
    };
    match frame.get_mut(usize::from(p.start)..end) {
        Some(region) => fill(region, usize::from(p.offset)),
        None => false,
    }
}

/// Completes the TCP/UDP checksum of a frame that came without any offload
/// metadata (AF_XDP in copy mode hands over what a veth peer with checksum
/// offload sent: TCP/UDP checksums holding only the pseudo-header sum), when
/// it can be recognised as partial: the checksum field equals the
/// pseudo-header sum of the datagram, and the checksum does not verify as it
/// stands. Anything else, a correct checksum included, is left alone.
///
/// Cost: a pseudo-header sum (a few adds) per TCP/UDP frame; the pass over
/// the segment only for frames whose field matches, which are the partial
/// ones (a complete checksum equals the pseudo-header sum once in 65536
/// frames, and then verifies and is kept). A frame corrupted on the way
/// whose field happens to equal that sum would be given a fresh checksum; on
/// the links this serves (veth, a host's own stack) there is no wire to
/// corrupt it. Returns true if a checksum was written.
pub fn complete_unmarked_partial_csum(frame: &mut [u8]) -> bool {
    let Some((p, end)) = locate_l4_checksum(frame) else {
        return false;
    };
    let Some((l3, ty)) = l3_start(frame) else {
        return false;
    };
    let start = usize::from(p.start);
    let field = start + usize::from(p.offset);
    let l4_len = (end - start) as u64;
    let (addrs, proto) = match ty {
        ethertype::IPV4 => (frame.get(l3 + 12..l3 + 20), frame.get(l3 + 9)),
        _ => (frame.get(l3 + 8..l3 + 40), frame.get(l3 + 6)),
    };
    let (Some(addrs), Some(&proto)) = (addrs, proto) else {
        return false;
    };
    let pseudo = fold(u64::from(ones_complement_sum(addrs)) + u64::from(proto) + l4_len);
    if frame[field..field + 2] != pseudo.to_be_bytes() {
        return false;
    }
    let region = &mut frame[start..end];
    if fold(u64::from(ones_complement_sum(region)) + u64::from(pseudo)) == 0xffff {
        return false;
    }
    fill(region, usize::from(p.offset))
}

/// True if the TCP/UDP checksum at `p` in `frame` verifies, given the
/// pseudo-header sum `pseudo` (for tests and diagnostics; not on the packet path).
pub fn verify_l4_checksum(frame: &[u8], p: PartialCsum, pseudo: u16) -> bool {
    frame.get(usize::from(p.start)..).is_some_and(|region| {
        fold(u64::from(ones_complement_sum(region)) + u64::from(pseudo)) == 0xffff
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::{ipv4, ipv6};
    use std::net::{Ipv4Addr, Ipv6Addr};

    const SRC4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const DST4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const SRC6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
    const DST6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);

    /// 10.0.0.1:40000 -> 10.0.0.2:9 UDP "weir\n", checksum field holding the
    /// pseudo-header sum 0x1421 as a sender with checksum offload leaves it.
    /// The complete checksum is 0x64b0.
    pub(crate) fn partial_udp4() -> Vec<u8> {
        let mut f = vec![
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x00,
        ];
        f.extend_from_slice(&[
            0x45, 0, 0, 33, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ]);
        f.extend_from_slice(&[0x9c, 0x40, 0, 9, 0, 13, 0x14, 0x21]);
        f.extend_from_slice(b"weir\n");
        f
    }

    /// 10.0.0.1:40000 -> 10.0.0.2:80 TCP PSH segment with 5 bytes "weir\n",
    /// checksum field holding the pseudo-header sum 0x1422.
    pub(crate) fn partial_tcp4() -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        f.extend_from_slice(&[
            0x45, 0, 0, 45, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ]);
        f.extend_from_slice(&[
            0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x08, 0x10, 0, 0x14, 0x22, 0, 0,
        ]);
        f.extend_from_slice(b"weir\n");
        f
    }

    /// fd00::1:40000 -> fd00::2:80 TCP, 5 bytes "weir\n", field holding the
    /// pseudo-header sum 0xfa23.
    pub(crate) fn partial_tcp6() -> Vec<u8> {
        ipv6_frame(
            6,
            &[
                0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x08, 0x10, 0, 0xfa, 0x23, 0, 0,
            ],
        )
    }

    /// fd00::1:40000 -> fd00::2:9 UDP "weir\n", field holding the
    /// pseudo-header sum 0xfa22.
    pub(crate) fn partial_udp6() -> Vec<u8> {
        ipv6_frame(17, &[0x9c, 0x40, 0, 9, 0, 13, 0xfa, 0x22])
    }

    /// fd00::1 -> fd00::2 in an Ethernet frame: the L4 header `l4` of
    /// protocol `next_header`, then the payload "weir\n".
    fn ipv6_frame(next_header: u8, l4: &[u8]) -> Vec<u8> {
        let payload_len = (l4.len() + 5) as u8;
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
        f.extend_from_slice(&[0x60, 0, 0, 0, 0, payload_len, next_header, 64]);
        f.extend_from_slice(&SRC6.octets());
        f.extend_from_slice(&DST6.octets());
        f.extend_from_slice(l4);
        f.extend_from_slice(b"weir\n");
        f
    }

    fn pseudo4(proto: u8, l4_len: u16) -> u16 {
        ipv4::pseudo_header_sum(SRC4, DST4, proto, l4_len)
    }

    fn pseudo6(proto: u8, l4_len: u32) -> u16 {
        ipv6::pseudo_header_sum(SRC6, DST6, proto, l4_len)
    }

    /// Each partial fixture with its checksum's start and offset and its
    /// pseudo-header sum.
    fn partial_cases() -> [(Vec<u8>, u16, u16, u16); 4] {
        [
            (partial_udp4(), 34, 6, pseudo4(17, 13)),
            (partial_tcp4(), 34, 16, pseudo4(6, 25)),
            (partial_udp6(), 54, 6, pseudo6(17, 13)),
            (partial_tcp6(), 54, 16, pseudo6(6, 25)),
        ]
    }

    #[test]
    fn fixtures_hold_the_pseudo_header_sum() {
        assert_eq!(partial_udp4()[40..42], pseudo4(17, 13).to_be_bytes());
        assert_eq!(partial_tcp4()[50..52], pseudo4(6, 25).to_be_bytes());
        assert_eq!(partial_tcp6()[70..72], pseudo6(6, 25).to_be_bytes());
        assert_eq!(partial_udp6()[60..62], pseudo6(17, 13).to_be_bytes());
    }

    #[test]
    fn partial_checksums_over_ipv4_and_ipv6_are_completed() {
        for (before, start, offset, pseudo) in partial_cases() {
            let p = PartialCsum::new_checked(start, offset, before.len()).unwrap();
            let mut f = before.clone();
            assert!(p.complete(&mut f));
            assert!(verify_l4_checksum(&f, p, pseudo));
            // Only the two checksum bytes changed.
            let field = usize::from(start + offset);
            let mut want = before.clone();
            want[field..field + 2].copy_from_slice(&f[field..field + 2]);
            assert_eq!(f, want);
            // The parsing path finds the same field and computes the same value.
            let mut g = before.clone();
            assert_eq!(locate_l4_checksum(&g).map(|(q, _)| q), Some(p));
            assert!(complete_l4_checksum(&mut g));
            assert_eq!(f, g);
        }
        let mut f = partial_udp4();
        assert!(PartialCsum {
            start: 34,
            offset: 6
        }
        .complete(&mut f));
        assert_eq!(f[40..42], [0x64, 0xb0]);
        assert!(!verify_l4_checksum(
            &partial_udp4(),
            PartialCsum {
                start: 34,
                offset: 6
            },
            pseudo4(17, 13)
        ));
    }

    #[test]
    fn offsets_outside_the_frame_are_refused() {
        let len = partial_udp4().len(); // 47
        assert!(PartialCsum::new_checked(34, 6, len).is_some());
        assert!(PartialCsum::new_checked(45, 0, len).is_some());
        assert!(PartialCsum::new_checked(46, 0, len).is_none());
        assert!(PartialCsum::new_checked(34, 12, len).is_none());
        assert!(PartialCsum::new_checked(u16::MAX, u16::MAX, len).is_none());
        // A stale or forged value never writes outside the frame.
        let mut f = partial_udp4();
        assert!(!PartialCsum {
            start: 46,
            offset: 0
        }
        .complete(&mut f));
        assert!(!PartialCsum {
            start: 200,
            offset: 0
        }
        .complete(&mut f));
        assert!(!PartialCsum {
            start: 0,
            offset: u16::MAX
        }
        .complete(&mut f));
        assert_eq!(f, partial_udp4());
    }

    #[test]
    fn computed_zero_is_sent_as_all_ones() {
        // A region whose words sum to 0xffff: checksum 0 becomes 0xffff.
        let mut r = [0xff, 0x00, 0x00, 0x00, 0x00, 0xff];
        assert!(fill(&mut r, 2));
        assert_eq!(r[2..4], [0xff, 0xff]);
    }

    #[test]
    fn checksum_is_found_behind_a_vlan_tag_and_padding_is_ignored() {
        let plain = partial_udp4();
        let mut f = plain[..12].to_vec();
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
        f.extend_from_slice(&plain[12..]);
        f.resize(64, 0xee); // Ethernet padding after the IP datagram
        assert!(complete_l4_checksum(&mut f));
        assert_eq!(f[44..46], [0x64, 0xb0]);
    }

    #[test]
    fn unmarked_partial_checksums_are_recognised_and_completed() {
        for (before, start, offset, pseudo) in partial_cases() {
            let p = PartialCsum { start, offset };
            let mut f = before.clone();
            assert!(complete_unmarked_partial_csum(&mut f));
            assert!(verify_l4_checksum(&f, p, pseudo));
            // Complete now: a second pass leaves it alone.
            let done = f.clone();
            assert!(!complete_unmarked_partial_csum(&mut f));
            assert_eq!(f, done);
            // A field holding anything but the pseudo-header sum (a correct
            // or a corrupted checksum) is not touched.
            let mut g = before.clone();
            let field = usize::from(start + offset);
            g[field] ^= 0x40;
            let bad = g.clone();
            assert!(!complete_unmarked_partial_csum(&mut g));
            assert_eq!(g, bad);
        }
    }

    #[test]
    fn complete_checksum_equal_to_the_pseudo_header_sum_is_kept() {
        // Find a payload whose complete checksum equals the pseudo-header sum:
        // the field then matches, but the checksum verifies and is kept.
        let pseudo = pseudo4(17, 13);
        let p = PartialCsum {
            start: 34,
            offset: 6,
        };
        let found = (0..=u16::MAX).find_map(|w| {
            let mut f = partial_udp4();
            f[42..44].copy_from_slice(&w.to_be_bytes());
            assert!(p.complete(&mut f));
            (f[40..42] == pseudo.to_be_bytes()).then_some(f)
        });
        let mut f = found.expect("some payload word gives that checksum");
        let before = f.clone();
        assert!(verify_l4_checksum(&f, p, pseudo));
        assert!(!complete_unmarked_partial_csum(&mut f));
        assert_eq!(f, before);
    }

    #[test]
    fn frames_without_a_known_l4_checksum_are_left_alone() {
        let mut arp = vec![0xff; 12];
        arp.extend_from_slice(&[0x08, 0x06]);
        arp.resize(42, 0);
        assert!(!complete_l4_checksum(&mut arp));
        let mut frag = partial_udp4();
        frag[20] = 0x20; // more fragments
        let before = frag.clone();
        assert!(!complete_l4_checksum(&mut frag));
        assert_eq!(frag, before);
        let mut short = partial_udp4();
        short.truncate(40);
        assert!(!complete_l4_checksum(&mut short));
        let mut icmp = partial_udp4();
        icmp[23] = 1;
        assert!(!complete_l4_checksum(&mut icmp));
    }
}
