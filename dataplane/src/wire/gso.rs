//! Segmentation offload (TSO/GSO, and UDP's USO): splitting one large TCP or
//! UDP frame into MSS-sized segments in software.
//!
//! Layer: wire. No I/O, no allocation. On the packet path, but only for frames
//! that carry [`Gso`] metadata and go to a port that cannot take them whole.
//!
//! A sender with segmentation offload (a virtio-net driver that negotiated
//! VIRTIO_NET_F_HOST_TSO4/6) hands over one frame of up to 64 KiB: Ethernet,
//! IP and TCP headers once, then the payload of many segments, with the TCP
//! checksum left partial. [`TsoPlan::new`] parses and checks the headers once;
//! [`TsoPlan::write_segment`] writes segment `i` as a complete frame, the way
//! the kernel's `tcp_gso_segment` does:
//! - every segment repeats the headers; its payload is `mss` bytes of the
//!   original payload (the last one the rest);
//! - TCP sequence number advanced by the payload before it; FIN and PSH only
//!   on the last segment, CWR only on the first;
//! - IPv4: total length and header checksum per segment, the identification
//!   incremented per segment; IPv6: payload length per segment;
//! - the TCP checksum complete (pseudo header included) in every segment.
//!
//! A UDP frame with a segmentation request (Linux's `UDP_SEGMENT`, virtio
//! `GSO_UDP_L4`) is a train of datagrams sharing one header: each segment is
//! a UDP datagram of its own with `mss` payload bytes (the last one the
//! rest), its UDP length and complete checksum, and its IP header as above.
//!
//! The headers come from an untrusted sender: every length is checked against
//! the frame, and what does not parse as one of the forms below is refused
//! ([`GsoError`]), never guessed at. The sender's `hdr_len` hint (virtio) is not
//! needed: the headers are parsed here.

use super::ethernet::ethertype;
use super::ipv4::{fold, ones_complement_sum, protocol};
use super::ipv6::HEADER_LEN as IPV6_HLEN;
use super::{get_u16, get_u16_checked, put_u16};

/// Smallest TCP header.
const TCP_HLEN: usize = 20;
/// UDP header length.
const UDP_HLEN: usize = 8;
/// Offsets in the UDP header.
const UDP_LEN: usize = 4;
const UDP_CSUM: usize = 6;
/// The most datagrams one UDP segmentation request may make (Linux's
/// `UDP_MAX_SEGMENTS`, 128 since 6.4; 64 before). UDP senders may use
/// segment sizes below [`MIN_MSS`], so their work is bounded by this count
/// instead.
pub const MAX_UDP_SEGMENTS: usize = 128;
/// TCP flag bits (RFC 9293 §3.1, RFC 3168 §6.1).
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;
/// Offsets in the TCP header.
const TCP_SEQ: usize = 4;
const TCP_FLAGS: usize = 13;
const TCP_CSUM: usize = 16;

/// The smallest MSS (payload bytes per segment) a GSO frame may ask for.
///
/// Each segment costs a buffer and a pass over its headers, so the MSS sets
/// how much work one frame can demand: at 1 byte, one 64 KiB frame would be
/// about 65 000 segments. 48 is Linux's default floor for the MSS it sends
/// with (`net.ipv4.tcp_min_snd_mss`), so no Linux sender goes below it;
/// a 64 KiB frame then makes at most 1365 segments, about what the same
/// bytes cost as minimum-size frames. Below it a frame is refused
/// ([`GsoError::MssTooSmall`]); the port that accepts the metadata counts it.
pub const MIN_MSS: u16 = 48;

/// Which kind of segmentation a frame asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GsoKind {
    /// TCP over IPv4 (virtio VIRTIO_NET_HDR_GSO_TCPV4).
    Tcp4,
    /// TCP over IPv6 (virtio VIRTIO_NET_HDR_GSO_TCPV6).
    Tcp6,
    /// UDP datagrams over IPv4 or IPv6, the version from the frame (virtio
    /// VIRTIO_NET_HDR_GSO_UDP_L4, Linux `UDP_SEGMENT`).
    Udp,
}

impl GsoKind {
    /// The IP protocol number of the segments.
    fn proto(self) -> u8 {
        match self {
            GsoKind::Tcp4 | GsoKind::Tcp6 => protocol::TCP,
            GsoKind::Udp => protocol::UDP,
        }
    }
}

/// Segmentation metadata carried on an mbuf: the frame is larger than one
/// wire frame and must be cut into segments of at most `mss` payload bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gso {
    /// TCP over IPv4 or IPv6, or UDP.
    pub kind: GsoKind,
    /// Payload bytes per segment (the sender's MSS, virtio `gso_size`).
    pub mss: u16,
}

/// Why a GSO frame cannot be segmented.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GsoError {
    /// Headers truncated, or lengths that do not fit the frame.
    #[error("truncated or inconsistent headers")]
    Malformed,
    /// Not TCP over the IP version the metadata names (or IPv4 fragment,
    /// IPv6 extension headers, unknown EtherType).
    #[error("not TCP over the announced IP version")]
    Unsupported,
    /// An MSS below [`MIN_MSS`] (zero included), or for UDP a segment size
    /// that would make more than [`MAX_UDP_SEGMENTS`] datagrams.
    #[error("MSS below {MIN_MSS} bytes (UDP: over {MAX_UDP_SEGMENTS} segments)")]
    MssTooSmall,
}

/// A checked GSO frame: where its headers are and how it splits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TsoPlan {
    kind: GsoKind,
    /// IPv4 (else IPv6).
    v4: bool,
    /// Offset of the IP header.
    l3: usize,
    /// Offset of the TCP or UDP header.
    l4: usize,
    /// All headers: Ethernet through TCP options (or the UDP header).
    hdr_len: usize,
    /// Payload bytes (after the TCP or UDP header, up to the end of the IP
    /// datagram).
    payload: usize,
    mss: usize,
}

impl TsoPlan {
    /// Parses `frame`'s headers: Ethernet, up to two VLAN tags, IPv4 (not a
    /// fragment) or IPv6 (no extension headers) as `gso.kind` says, TCP (or
    /// UDP over either IP version).
    ///
    /// # Errors
    /// [`GsoError`] if the frame is not such a frame or its lengths do not fit.
    pub fn new(frame: &[u8], gso: Gso) -> Result<TsoPlan, GsoError> {
        let udp = gso.kind == GsoKind::Udp;
        if gso.mss == 0 || (!udp && gso.mss < MIN_MSS) {
            return Err(GsoError::MssTooSmall);
        }
        let proto = gso.kind.proto();
        let be16 = |off: usize| get_u16_checked(frame, off).ok_or(GsoError::Malformed);
        let (l3, ty) = super::offload::l3_start(frame).ok_or(GsoError::Malformed)?;
        let (l4, end) = match (gso.kind, ty) {
            (GsoKind::Tcp4 | GsoKind::Udp, ethertype::IPV4) => {
                let vihl = *frame.get(l3).ok_or(GsoError::Malformed)?;
                let ihl = usize::from(vihl & 0x0f) * 4;
                let (total, frag) = (usize::from(be16(l3 + 2)?), be16(l3 + 6)?);
                if vihl >> 4 != 4 || ihl < 20 {
                    return Err(GsoError::Malformed);
                }
                // MF set or a non-zero offset: a fragment, not a TCP segment.
                if frag & 0x3fff != 0 || *frame.get(l3 + 9).ok_or(GsoError::Malformed)? != proto {
                    return Err(GsoError::Unsupported);
                }
                if total < ihl {
                    return Err(GsoError::Malformed);
                }
                (l3 + ihl, l3 + total)
            }
            (GsoKind::Tcp6 | GsoKind::Udp, ethertype::IPV6) => {
                let payload = usize::from(be16(l3 + 4)?);
                if *frame.get(l3 + 6).ok_or(GsoError::Malformed)? != proto {
                    return Err(GsoError::Unsupported);
                }
                (l3 + IPV6_HLEN, l3 + IPV6_HLEN + payload)
            }
            _ => return Err(GsoError::Unsupported),
        };
        let l4_hlen = if udp {
            UDP_HLEN
        } else {
            usize::from(*frame.get(l4 + 12).ok_or(GsoError::Malformed)? >> 4) * 4
        };
        let hdr_len = l4 + l4_hlen;
        if (!udp && l4_hlen < TCP_HLEN) || hdr_len > end || end > frame.len() {
            return Err(GsoError::Malformed);
        }
        if udp && (end - hdr_len).div_ceil(usize::from(gso.mss)) > MAX_UDP_SEGMENTS {
            return Err(GsoError::MssTooSmall);
        }
        Ok(TsoPlan {
            kind: gso.kind,
            v4: ty == ethertype::IPV4,
            l3,
            l4,
            hdr_len,
            payload: end - hdr_len,
            mss: usize::from(gso.mss),
        })
    }

    /// Number of segments (at least one, even with no payload).
    pub fn segments(&self) -> usize {
        self.payload.div_ceil(self.mss).max(1)
    }

    /// Length of the headers every segment repeats.
    pub fn hdr_len(&self) -> usize {
        self.hdr_len
    }

    /// Length in bytes of segment `i`'s frame (0 if there is no such segment).
    pub fn segment_len(&self, i: usize) -> usize {
        if i >= self.segments() {
            return 0;
        }
        let from = i * self.mss;
        self.hdr_len + (self.payload - from).min(self.mss)
    }

    /// The longest segment frame (what every output buffer must hold).
    pub fn max_segment_len(&self) -> usize {
        self.segment_len(0)
    }

    /// Writes segment `i` of `frame` (the frame this plan was made from) into
    /// `out` as a complete frame and returns its length; 0, with `out` left
    /// alone, if `i` is out of range or `out` is too short.
    pub fn write_segment(&self, frame: &[u8], i: usize, out: &mut [u8]) -> usize {
        let len = self.segment_len(i);
        if len == 0 || out.len() < len || frame.len() < self.hdr_len + self.payload {
            return 0;
        }
        let from = self.hdr_len + i * self.mss;
        let data = len - self.hdr_len;
        let out = &mut out[..len];
        out[..self.hdr_len].copy_from_slice(&frame[..self.hdr_len]);
        out[self.hdr_len..].copy_from_slice(&frame[from..from + data]);
        let last = i + 1 == self.segments();
        let l4_len = len - self.l4;
        // IP lengths (and the IPv4 id and header checksum).
        let l3 = self.l3;
        let proto = self.kind.proto();
        let pseudo = if self.v4 {
            let ihl = self.l4 - l3;
            put_u16(out, l3 + 2, (len - l3) as u16);
            let id = get_u16(out, l3 + 4);
            put_u16(out, l3 + 4, id.wrapping_add(i as u16));
            put_u16(out, l3 + 10, 0);
            let csum = !ones_complement_sum(&out[l3..l3 + ihl]);
            put_u16(out, l3 + 10, csum);
            // Source, destination, protocol and TCP/UDP length (RFC 9293
            // §3.1, RFC 768).
            let addrs = u64::from(ones_complement_sum(&out[l3 + 12..l3 + 20]));
            fold(addrs + u64::from(proto) + l4_len as u64)
        } else {
            put_u16(out, l3 + 4, (len - l3 - IPV6_HLEN) as u16);
            // Source, destination, length, next header (RFC 8200 §8.1).
            let addrs = u64::from(ones_complement_sum(&out[l3 + 8..l3 + 40]));
            fold(addrs + u64::from(proto) + l4_len as u64)
        };
        let l4 = self.l4;
        if self.kind == GsoKind::Udp {
            // UDP: length and checksum; a computed 0 goes out as 0xffff
            // (RFC 768; 0 would mean "no checksum").
            put_u16(out, l4 + UDP_LEN, l4_len as u16);
            put_u16(out, l4 + UDP_CSUM, 0);
            let sum = !fold(u64::from(ones_complement_sum(&out[l4..])) + u64::from(pseudo));
            put_u16(out, l4 + UDP_CSUM, if sum == 0 { 0xffff } else { sum });
            return len;
        }
        // TCP: sequence number, flags, checksum.
        let seq = u32::from_be_bytes([
            out[l4 + TCP_SEQ],
            out[l4 + TCP_SEQ + 1],
            out[l4 + TCP_SEQ + 2],
            out[l4 + TCP_SEQ + 3],
        ]);
        let seq = seq.wrapping_add((i * self.mss) as u32);
        out[l4 + TCP_SEQ..l4 + TCP_SEQ + 4].copy_from_slice(&seq.to_be_bytes());
        if !last {
            out[l4 + TCP_FLAGS] &= !(TCP_FIN | TCP_PSH);
        }
        if i > 0 {
            out[l4 + TCP_FLAGS] &= !TCP_CWR;
        }
        put_u16(out, l4 + TCP_CSUM, 0);
        let sum = fold(u64::from(ones_complement_sum(&out[l4..])) + u64::from(pseudo));
        put_u16(out, l4 + TCP_CSUM, !sum);
        len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ipv4::{self, Ipv4Packet};
    use crate::wire::ipv6;
    use crate::wire::offload::verify_l4_checksum;
    use crate::wire::PartialCsum;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// 10.0.0.1:40000 -> 10.0.0.2:80, id 0x1234, seq 0x01020304, ack 7, flags
    /// `flags`, window 0x1000, `payload`; the TCP checksum field holds only the
    /// pseudo-header sum, as a TSO sender leaves it.
    fn tcp4(payload: &[u8], flags: u8) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        let total = (20 + 20 + payload.len()) as u16;
        f.extend_from_slice(&[0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0]);
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        f.extend_from_slice(&[0x9c, 0x40, 0, 80, 1, 2, 3, 4, 0, 0, 0, 7, 0x50, flags]);
        f.extend_from_slice(&[0x10, 0, 0, 0, 0, 0]);
        f.extend_from_slice(payload);
        f
    }

    fn tcp6(payload: &[u8], flags: u8) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
        let plen = (20 + payload.len()) as u16;
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&plen.to_be_bytes());
        f.extend_from_slice(&[6, 64]);
        f.extend_from_slice(&Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1).octets());
        f.extend_from_slice(&Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2).octets());
        f.extend_from_slice(&[0x9c, 0x40, 0, 80, 1, 2, 3, 4, 0, 0, 0, 7, 0x50, flags]);
        f.extend_from_slice(&[0x10, 0, 0, 0, 0, 0]);
        f.extend_from_slice(payload);
        f
    }

    fn segments(frame: &[u8], gso: Gso) -> Vec<Vec<u8>> {
        let plan = TsoPlan::new(frame, gso).unwrap();
        (0..plan.segments())
            .map(|i| {
                let mut out = vec![0u8; 2048];
                let n = plan.write_segment(frame, i, &mut out);
                assert_eq!(n, plan.segment_len(i));
                out.truncate(n);
                out
            })
            .collect()
    }

    fn verify4(seg: &[u8]) -> bool {
        let ip = Ipv4Packet::new_checked(&seg[14..]).unwrap();
        let l4_len = seg.len() - 34;
        let pseudo = ipv4::pseudo_header_sum(ip.src(), ip.dst(), 6, l4_len as u16);
        ip.verify_checksum()
            && verify_l4_checksum(
                seg,
                PartialCsum {
                    start: 34,
                    offset: 16,
                },
                pseudo,
            )
    }

    #[test]
    fn ipv4_frame_splits_into_exact_segments() {
        let payload: Vec<u8> = (0..120u8).collect();
        // PSH|ACK|FIN|CWR.
        let frame = tcp4(&payload, 0x80 | 0x18 | 0x01);
        let segs = segments(
            &frame,
            Gso {
                kind: GsoKind::Tcp4,
                mss: MIN_MSS,
            },
        );
        assert_eq!(segs.len(), 3);
        // Segment 0: 48 bytes, id 0x1234, seq 0x01020304, CWR|ACK, total 88.
        #[rustfmt::skip]
        let mut want0 = vec![
            2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00,
            0x45, 0, 0, 88, 0x12, 0x34, 0x40, 0, 64, 6, 0x00, 0x00,
            10, 0, 0, 1, 10, 0, 0, 2,
            0x9c, 0x40, 0, 80, 1, 2, 3, 4, 0, 0, 0, 7, 0x50, 0x90,
            0x10, 0, 0x00, 0x00, 0, 0,
        ];
        want0.extend_from_slice(&payload[..48]);
        // IPv4 header checksum of the header above, computed by hand:
        // 4500+0058+1234+4000+4006+0a00+0001+0a00+0002 = 0xeb95, inverted
        // 0x146a.
        want0[24..26].copy_from_slice(&[0x14, 0x6a]);
        let tcp_csum = [segs[0][50], segs[0][51]];
        want0[50..52].copy_from_slice(&tcp_csum);
        assert_eq!(segs[0], want0);
        // Segment 1: id +1, seq +48, ACK only (no FIN, PSH, CWR).
        assert_eq!(&segs[1][18..20], &[0x12, 0x35]);
        assert_eq!(&segs[1][38..42], &[1, 2, 3, 0x34]);
        assert_eq!(segs[1][47], 0x10);
        assert_eq!(&segs[1][54..], &payload[48..96]);
        // Segment 2: the last 24 bytes, PSH|ACK|FIN kept, total 64.
        assert_eq!(segs[2].len(), 54 + 24);
        assert_eq!(&segs[2][16..18], &[0, 64]);
        assert_eq!(&segs[2][38..42], &[1, 2, 3, 0x64]);
        assert_eq!(segs[2][47], 0x19);
        assert_eq!(&segs[2][54..], &payload[96..]);
        for s in &segs {
            assert!(verify4(s), "checksums of {s:02x?}");
        }
    }

    #[test]
    fn ipv6_segments_carry_payload_length_and_checksum() {
        let payload: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        let frame = tcp6(&payload, 0x18);
        let segs = segments(
            &frame,
            Gso {
                kind: GsoKind::Tcp6,
                mss: 1440,
            },
        );
        assert_eq!(
            segs.iter().map(Vec::len).collect::<Vec<_>>(),
            [74 + 1440, 74 + 1440, 74 + 120]
        );
        let mut joined = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            let plen = u16::from_be_bytes([s[18], s[19]]) as usize;
            assert_eq!(plen, s.len() - 54);
            let seq = u32::from_be_bytes([s[58], s[59], s[60], s[61]]);
            assert_eq!(seq, 0x01020304 + 1440 * i as u32);
            assert_eq!(s[67], if i == 2 { 0x18 } else { 0x10 });
            let src = Ipv6Addr::from(<[u8; 16]>::try_from(&s[22..38]).unwrap());
            let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&s[38..54]).unwrap());
            let pseudo = ipv6::pseudo_header_sum(src, dst, 6, plen as u32);
            let p = PartialCsum {
                start: 54,
                offset: 16,
            };
            assert!(verify_l4_checksum(s, p, pseudo), "segment {i}");
            joined.extend_from_slice(&s[74..]);
        }
        assert_eq!(joined, payload);
    }

    /// A UDP train: Ethernet, IPv4 (or IPv6 with `v6`), UDP
    /// 10.0.0.1:5000 -> 10.0.0.2:6000 (the v6 pair as in `tcp6`), `payload`,
    /// the UDP checksum field left holding the pseudo-header sum.
    fn udp(payload: &[u8], v6: bool) -> Vec<u8> {
        let udp_len = (8 + payload.len()) as u16;
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
        if v6 {
            f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
            f.extend_from_slice(&udp_len.to_be_bytes());
            f.extend_from_slice(&[17, 64]);
            f.extend_from_slice(&Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1).octets());
            f.extend_from_slice(&Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2).octets());
        } else {
            f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0]);
            f[16..18].copy_from_slice(&(20 + udp_len).to_be_bytes());
            f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        }
        f.extend_from_slice(&[0x13, 0x88, 0x17, 0x70]);
        f.extend_from_slice(&udp_len.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn udp_train_splits_into_datagrams_with_their_own_length_and_checksum() {
        let payload: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        for v6 in [false, true] {
            let frame = udp(&payload, v6);
            let (l4, mss) = (if v6 { 54 } else { 34 }, 1200);
            let segs = segments(
                &frame,
                Gso {
                    kind: GsoKind::Udp,
                    mss,
                },
            );
            assert_eq!(
                segs.iter().map(|s| s.len() - l4 - 8).collect::<Vec<_>>(),
                [1200, 1200, 600],
                "v6 {v6}"
            );
            let mut joined = Vec::new();
            for (i, s) in segs.iter().enumerate() {
                let udp_len = s.len() - l4;
                assert_eq!(
                    usize::from(u16::from_be_bytes([s[l4 + 4], s[l4 + 5]])),
                    udp_len
                );
                let pseudo = if v6 {
                    assert_eq!(usize::from(u16::from_be_bytes([s[18], s[19]])), udp_len);
                    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&s[22..38]).unwrap());
                    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&s[38..54]).unwrap());
                    ipv6::pseudo_header_sum(src, dst, 17, udp_len as u32)
                } else {
                    let ip = Ipv4Packet::new_checked(&s[14..]).unwrap();
                    assert!(ip.verify_checksum(), "segment {i} IP checksum");
                    assert_eq!(usize::from(ip.total_len()), s.len() - 14);
                    assert_eq!(&s[18..20], &(0x1234 + i as u16).to_be_bytes());
                    ipv4::pseudo_header_sum(ip.src(), ip.dst(), 17, udp_len as u16)
                };
                let p = PartialCsum {
                    start: l4 as u16,
                    offset: 6,
                };
                assert!(verify_l4_checksum(s, p, pseudo), "v6 {v6} segment {i}");
                assert_ne!(&s[l4 + 6..l4 + 8], &[0, 0], "0 would mean no checksum");
                joined.extend_from_slice(&s[l4 + 8..]);
            }
            assert_eq!(joined, payload);
        }
    }

    #[test]
    fn udp_trains_may_use_small_segments_but_not_too_many() {
        let gso = |mss| Gso {
            kind: GsoKind::Udp,
            mss,
        };
        // 64 datagrams of 20 bytes (below the TCP floor): fine.
        let frame = udp(&[7u8; 64 * 20], false);
        assert_eq!(TsoPlan::new(&frame, gso(20)).unwrap().segments(), 64);
        // More than MAX_UDP_SEGMENTS, or a zero size: refused.
        let frame = udp(&[7u8; MAX_UDP_SEGMENTS * 8 + 1], false);
        assert_eq!(TsoPlan::new(&frame, gso(8)), Err(GsoError::MssTooSmall));
        assert_eq!(TsoPlan::new(&frame, gso(0)), Err(GsoError::MssTooSmall));
        // A TCP frame asking for UDP segmentation, and the reverse: refused.
        assert_eq!(
            TsoPlan::new(&tcp4(&[1; 100], 0x10), gso(48)),
            Err(GsoError::Unsupported)
        );
        let tcp = Gso {
            kind: GsoKind::Tcp4,
            mss: 48,
        };
        assert_eq!(
            TsoPlan::new(&udp(&[1; 100], false), tcp),
            Err(GsoError::Unsupported)
        );
        // A UDP header cut short.
        let frame = udp(&[], false);
        assert_eq!(
            TsoPlan::new(&frame[..frame.len() - 2], gso(48)),
            Err(GsoError::Malformed)
        );
    }

    #[test]
    fn vlan_tagged_frame_and_small_payload_make_one_segment() {
        let mut frame = tcp4(b"hi", 0x18);
        frame.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
        let plan = TsoPlan::new(
            &frame,
            Gso {
                kind: GsoKind::Tcp4,
                mss: 1000,
            },
        )
        .unwrap();
        assert_eq!((plan.segments(), plan.hdr_len()), (1, 58));
        let mut out = [0u8; 100];
        assert_eq!(plan.write_segment(&frame, 0, &mut out), 60);
        let ip = Ipv4Packet::new_checked(&out[18..60]).unwrap();
        assert!(ip.verify_checksum());
        let pseudo = ipv4::pseudo_header_sum(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            6,
            22,
        );
        let p = PartialCsum {
            start: 38,
            offset: 16,
        };
        assert!(verify_l4_checksum(&out[..60], p, pseudo));
        assert_eq!(plan.write_segment(&frame, 1, &mut out), 0);
        assert_eq!(plan.write_segment(&frame, 0, &mut out[..59]), 0);
    }

    #[test]
    fn bad_headers_are_refused() {
        let g4 = Gso {
            kind: GsoKind::Tcp4,
            mss: 100,
        };
        let frame = tcp4(&[0; 300], 0x10);
        for mss in [0, 1, MIN_MSS - 1] {
            assert_eq!(
                TsoPlan::new(&frame, Gso { mss, ..g4 }),
                Err(GsoError::MssTooSmall),
                "mss {mss}"
            );
        }
        assert!(TsoPlan::new(&frame, Gso { mss: MIN_MSS, ..g4 }).is_ok());
        assert_eq!(
            TsoPlan::new(
                &frame,
                Gso {
                    kind: GsoKind::Tcp6,
                    mss: 100
                }
            ),
            Err(GsoError::Unsupported)
        );
        // Truncated anywhere: never a panic, always refused.
        for n in 0..54 {
            assert!(TsoPlan::new(&frame[..n], g4).is_err(), "{n} bytes");
        }
        // Total length past the frame.
        assert_eq!(TsoPlan::new(&frame[..200], g4), Err(GsoError::Malformed));
        // UDP, a fragment, a TCP data offset below 5 words.
        let mut udp = frame.clone();
        udp[23] = 17;
        assert_eq!(TsoPlan::new(&udp, g4), Err(GsoError::Unsupported));
        let mut frag = frame.clone();
        frag[20] = 0x20;
        assert_eq!(TsoPlan::new(&frag, g4), Err(GsoError::Unsupported));
        let mut doff = frame.clone();
        doff[46] = 0x40;
        assert_eq!(TsoPlan::new(&doff, g4), Err(GsoError::Malformed));
    }
}
