//! The virtio-net header (`struct virtio_net_hdr`, virtio 1.2 §5.1.6) as
//! offload metadata: one mapping between the header and an mbuf's
//! [`PartialCsum`] and [`Gso`], shared by every port whose peer speaks it
//! (vhost-user guests, the kernel's `PACKET_VNET_HDR` and TAP `IFF_VNET_HDR`).
//!
//! Layer: wire. No I/O, no allocation. On the packet path: one call per frame
//! whose header carries a flag or a GSO type (most carry neither).
//!
//! Only the first [`VNET_HDR_LEN`] bytes are read or written here; a
//! vhost-user header's trailing `num_buffers` is its port's business. The
//! fields are little-endian: virtio 1.x says so, and the kernel uses the
//! host's order for the legacy header of packet sockets and TAP, which is
//! little-endian on every host weir supports.
//!
//! The header comes from an untrusted sender (a guest, or a kernel peer whose
//! stack we do not control): [`decode`] checks it against the frame and
//! against what the receiving port accepts, and the caller drops a frame it
//! refuses as malformed.

use super::gso::{Gso, GsoKind, TsoPlan, MIN_MSS};
use super::offload::PartialCsum;

/// Bytes of `struct virtio_net_hdr` without `num_buffers`.
pub const VNET_HDR_LEN: usize = 10;
/// Offset of `flags` (u8).
pub const FLAGS_OFF: usize = 0;
/// Offset of `gso_type` (u8).
pub const GSO_TYPE_OFF: usize = 1;
/// Offset of `hdr_len` (le16).
pub const HDR_LEN_OFF: usize = 2;
/// Offset of `gso_size` (le16).
pub const GSO_SIZE_OFF: usize = 4;
/// Offset of `csum_start` (le16), from the first byte of the Ethernet header.
pub const CSUM_START_OFF: usize = 6;
/// Offset of `csum_offset` (le16), from `csum_start`.
pub const CSUM_OFFSET_OFF: usize = 8;

/// `flags`: the checksum field holds the pseudo-header sum; `csum_start` and
/// `csum_offset` are valid (VIRTIO_NET_HDR_F_NEEDS_CSUM).
pub const F_NEEDS_CSUM: u8 = 1;
/// `flags`: the checksum was verified (VIRTIO_NET_HDR_F_DATA_VALID; receive
/// direction only, nothing to do for a switch).
pub const F_DATA_VALID: u8 = 2;
/// `gso_type`: not a GSO frame.
pub const GSO_NONE: u8 = 0;
/// `gso_type`: TCP over IPv4.
pub const GSO_TCPV4: u8 = 1;
/// `gso_type`: UDP fragmentation offload (UFO, obsolete).
pub const GSO_UDP: u8 = 3;
/// `gso_type`: TCP over IPv6.
pub const GSO_TCPV6: u8 = 4;
/// `gso_type`: UDP segmentation (USO, `UDP_SEGMENT`).
pub const GSO_UDP_L4: u8 = 5;
/// `gso_type` bit: the sender set CWR on a TSO frame (TCP ECN).
pub const GSO_ECN: u8 = 0x80;

/// What a receiving port accepts in a header: the offloads its peer
/// negotiated (vhost-user) or the kernel may use (packet socket, TAP).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetAccept {
    /// NEEDS_CSUM (partial checksums).
    pub csum: bool,
    /// GSO type TCPV4.
    pub tso4: bool,
    /// GSO type TCPV6.
    pub tso6: bool,
    /// GSO type UDP_L4 (UDP segmentation: Linux `UDP_SEGMENT` senders
    /// behind a packet socket).
    pub uso: bool,
    /// The ECN bit on a TCP GSO type. Segmenting such a frame
    /// ([`TsoPlan`]) keeps CWR on the first segment only, as RFC 3168 asks,
    /// so the bit needs nothing more; vhost-user does not offer it
    /// (VIRTIO_NET_F_HOST_ECN) and refuses it.
    pub ecn: bool,
}

/// Why a header was refused. The packet path counts all of them as
/// `DropReason::Malformed`; the variants serve tests and diagnostics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VnetError {
    /// NEEDS_CSUM where partial checksums were not accepted.
    #[error("NEEDS_CSUM without checksum offload")]
    CsumNotAccepted,
    /// The checksum field lies outside the frame.
    #[error("checksum field outside the frame")]
    CsumOutsideFrame,
    /// A GSO type that is unknown or not accepted (UFO, USO or ECN where not
    /// offered, a TCP kind not negotiated).
    #[error("GSO type {0:#04x} not accepted")]
    GsoType(u8),
    /// A GSO frame with a `gso_size` of zero or, for TCP, below [`MIN_MSS`],
    /// which would make one frame thousands of segments.
    #[error("GSO frame with gso_size below {MIN_MSS}")]
    MssTooSmall,
    /// A GSO frame without NEEDS_CSUM (virtio 1.2 §5.1.6.2.1 requires it).
    #[error("GSO frame without NEEDS_CSUM")]
    GsoWithoutCsum,
}

/// The offload metadata a header asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetMeta {
    /// A partial checksum to complete (NEEDS_CSUM).
    pub partial: Option<PartialCsum>,
    /// A segmentation request.
    pub gso: Option<Gso>,
}

#[inline]
fn le16(hdr: &[u8; VNET_HDR_LEN], off: usize) -> u16 {
    u16::from_le_bytes([hdr[off], hdr[off + 1]])
}

/// The checksum request of `hdr` for a frame of `frame_len` bytes: `None`
/// without NEEDS_CSUM (DATA_VALID and unknown flag bits mean nothing to a
/// switch and are ignored).
///
/// # Errors
/// NEEDS_CSUM while `csum` (partial checksums accepted) is false, or a
/// checksum field outside the frame.
#[inline]
pub fn decode_csum(
    hdr: &[u8; VNET_HDR_LEN],
    frame_len: usize,
    csum: bool,
) -> Result<Option<PartialCsum>, VnetError> {
    if hdr[FLAGS_OFF] & F_NEEDS_CSUM == 0 {
        return Ok(None);
    }
    if !csum {
        return Err(VnetError::CsumNotAccepted);
    }
    PartialCsum::new_checked(
        le16(hdr, CSUM_START_OFF),
        le16(hdr, CSUM_OFFSET_OFF),
        frame_len,
    )
    .map(Some)
    .ok_or(VnetError::CsumOutsideFrame)
}

/// The segmentation request of `hdr`: `None` for GSO_NONE. `hdr_len` is only
/// a hint (the segmenter parses the headers itself) and is not checked.
///
/// # Errors
/// A GSO type that is unknown (UFO) or not accepted, a GSO frame without
/// NEEDS_CSUM, or a `gso_size` of zero or, for TCP, below [`MIN_MSS`].
#[inline]
pub fn decode_gso(hdr: &[u8; VNET_HDR_LEN], accept: VnetAccept) -> Result<Option<Gso>, VnetError> {
    let t = hdr[GSO_TYPE_OFF];
    if t == GSO_NONE {
        return Ok(None);
    }
    let ecn_ok = t & GSO_ECN == 0 || accept.ecn;
    let kind = match t & !GSO_ECN {
        GSO_TCPV4 if accept.tso4 && ecn_ok => GsoKind::Tcp4,
        GSO_TCPV6 if accept.tso6 && ecn_ok => GsoKind::Tcp6,
        GSO_UDP_L4 if accept.uso => GsoKind::Udp,
        _ => return Err(VnetError::GsoType(t)),
    };
    if hdr[FLAGS_OFF] & F_NEEDS_CSUM == 0 {
        return Err(VnetError::GsoWithoutCsum);
    }
    let mss = le16(hdr, GSO_SIZE_OFF);
    // UDP senders may use small segments; the segment count bounds their
    // work instead (`TsoPlan::new`).
    if mss == 0 || (kind != GsoKind::Udp && mss < MIN_MSS) {
        return Err(VnetError::MssTooSmall);
    }
    Ok(Some(Gso { kind, mss }))
}

/// Both requests of `hdr` for a frame of `frame_len` bytes; see
/// [`decode_csum`] and [`decode_gso`].
///
/// # Errors
/// As those two; the caller drops the frame as malformed.
#[inline]
pub fn decode(
    hdr: &[u8; VNET_HDR_LEN],
    frame_len: usize,
    accept: VnetAccept,
) -> Result<VnetMeta, VnetError> {
    Ok(VnetMeta {
        partial: decode_csum(hdr, frame_len, accept.csum)?,
        gso: decode_gso(hdr, accept)?,
    })
}

/// Writes NEEDS_CSUM and the offsets of `p` into `hdr` (other fields left
/// alone).
#[inline]
pub fn encode_csum(hdr: &mut [u8; VNET_HDR_LEN], p: PartialCsum) {
    hdr[FLAGS_OFF] |= F_NEEDS_CSUM;
    hdr[CSUM_START_OFF..CSUM_START_OFF + 2].copy_from_slice(&p.start.to_le_bytes());
    hdr[CSUM_OFFSET_OFF..CSUM_OFFSET_OFF + 2].copy_from_slice(&p.offset.to_le_bytes());
}

/// Writes the segmentation request `g` for `frame` into `hdr`: GSO type,
/// `gso_size` and `hdr_len` (the length of the headers, from parsing them).
///
/// # Errors
/// The frame's headers do not parse as `g.kind` says (the frame is dropped).
#[inline]
pub fn encode_gso(hdr: &mut [u8; VNET_HDR_LEN], frame: &[u8], g: Gso) -> Result<(), VnetError> {
    let plan = TsoPlan::new(frame, g).map_err(|_| VnetError::GsoType(hdr[GSO_TYPE_OFF]))?;
    hdr[GSO_TYPE_OFF] = match g.kind {
        GsoKind::Tcp4 => GSO_TCPV4,
        GsoKind::Tcp6 => GSO_TCPV6,
        GsoKind::Udp => GSO_UDP_L4,
    };
    hdr[HDR_LEN_OFF..HDR_LEN_OFF + 2].copy_from_slice(&(plan.hdr_len() as u16).to_le_bytes());
    hdr[GSO_SIZE_OFF..GSO_SIZE_OFF + 2].copy_from_slice(&g.mss.to_le_bytes());
    Ok(())
}

/// The header for a frame with metadata `partial` and `gso`, for a peer
/// that takes both (a kernel packet socket or TAP with offloads). A TSO
/// frame always carries its partial checksum: the worker completes a
/// checksum only when it also segments.
///
/// # Errors
/// A TSO frame whose headers do not parse, or one without a partial
/// checksum.
#[inline]
pub fn encode(
    partial: Option<PartialCsum>,
    gso: Option<Gso>,
    frame: &[u8],
) -> Result<[u8; VNET_HDR_LEN], VnetError> {
    let mut hdr = [0u8; VNET_HDR_LEN];
    if let Some(p) = partial {
        encode_csum(&mut hdr, p);
    }
    if let Some(g) = gso {
        if partial.is_none() {
            return Err(VnetError::GsoWithoutCsum);
        }
        encode_gso(&mut hdr, frame, g)?;
    }
    Ok(hdr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::offload::tests::{partial_tcp4, partial_tcp6, partial_udp4};

    const ALL: VnetAccept = VnetAccept {
        csum: true,
        tso4: true,
        tso6: true,
        uso: true,
        ecn: true,
    };

    fn hdr(flags: u8, gso_type: u8, hdr_len: u16, gso_size: u16, start: u16, off: u16) -> [u8; 10] {
        let mut h = [0u8; VNET_HDR_LEN];
        h[0] = flags;
        h[1] = gso_type;
        h[2..4].copy_from_slice(&hdr_len.to_le_bytes());
        h[4..6].copy_from_slice(&gso_size.to_le_bytes());
        h[6..8].copy_from_slice(&start.to_le_bytes());
        h[8..10].copy_from_slice(&off.to_le_bytes());
        h
    }

    #[test]
    fn plain_header_carries_no_metadata() {
        for flags in [0, F_DATA_VALID, 0x7c] {
            assert_eq!(
                decode(&hdr(flags, GSO_NONE, 0, 0, 0, 0), 60, ALL),
                Ok(VnetMeta::default())
            );
        }
        // Nothing accepted: a plain header is still fine.
        assert_eq!(
            decode(&[0; 10], 60, VnetAccept::default()),
            Ok(VnetMeta::default())
        );
    }

    #[test]
    fn needs_csum_offsets_map_onto_the_partial_checksum() {
        let f = partial_udp4(); // 47 bytes, UDP header at 34
        let h = hdr(F_NEEDS_CSUM, GSO_NONE, 0, 0, 34, 6);
        let m = decode(&h, f.len(), ALL).unwrap();
        assert_eq!(
            m.partial,
            Some(PartialCsum {
                start: 34,
                offset: 6
            })
        );
        assert_eq!(m.gso, None);
        // The last two bytes of the frame are still inside.
        assert!(decode(&hdr(F_NEEDS_CSUM, 0, 0, 0, 45, 0), 47, ALL).is_ok());
        // Outside the frame, or wrapping: refused.
        for (start, off) in [(46, 0), (34, 12), (u16::MAX, u16::MAX), (0, u16::MAX)] {
            assert_eq!(
                decode(&hdr(F_NEEDS_CSUM, 0, 0, 0, start, off), 47, ALL),
                Err(VnetError::CsumOutsideFrame),
                "start {start} offset {off}"
            );
        }
        // Not accepted.
        assert_eq!(
            decode(&h, f.len(), VnetAccept::default()),
            Err(VnetError::CsumNotAccepted)
        );
        // Round trip.
        let mut out = [0u8; 10];
        encode_csum(&mut out, m.partial.unwrap());
        assert_eq!(out, h);
    }

    #[test]
    fn every_gso_type_is_mapped_or_refused() {
        let nc = F_NEEDS_CSUM;
        let tcp4 = Gso {
            kind: GsoKind::Tcp4,
            mss: 1448,
        };
        let tcp6 = Gso {
            kind: GsoKind::Tcp6,
            mss: 1428,
        };
        type Case = (u8, u16, VnetAccept, Result<Option<Gso>, VnetError>);
        let udp = |mss| Gso {
            kind: GsoKind::Udp,
            mss,
        };
        let cases: [Case; 19] = [
            (GSO_NONE, 0, ALL, Ok(None)),
            (GSO_TCPV6, MIN_MSS - 1, ALL, Err(VnetError::MssTooSmall)),
            (
                GSO_TCPV6,
                MIN_MSS,
                ALL,
                Ok(Some(Gso {
                    kind: GsoKind::Tcp6,
                    mss: MIN_MSS,
                })),
            ),
            (GSO_TCPV4, 1448, ALL, Ok(Some(tcp4))),
            (GSO_TCPV6, 1428, ALL, Ok(Some(tcp6))),
            (GSO_TCPV4 | GSO_ECN, 1448, ALL, Ok(Some(tcp4))),
            (GSO_TCPV6 | GSO_ECN, 1428, ALL, Ok(Some(tcp6))),
            (GSO_UDP, 1472, ALL, Err(VnetError::GsoType(GSO_UDP))),
            (GSO_UDP_L4, 1472, ALL, Ok(Some(udp(1472)))),
            // UDP may use small segments (their number is bounded instead).
            (GSO_UDP_L4, 8, ALL, Ok(Some(udp(8)))),
            (GSO_UDP_L4, 0, ALL, Err(VnetError::MssTooSmall)),
            (
                GSO_UDP_L4,
                1472,
                VnetAccept { uso: false, ..ALL },
                Err(VnetError::GsoType(GSO_UDP_L4)),
            ),
            (2, 1448, ALL, Err(VnetError::GsoType(2))),
            (0x7f, 1448, ALL, Err(VnetError::GsoType(0x7f))),
            (GSO_ECN, 1448, ALL, Err(VnetError::GsoType(GSO_ECN))),
            (GSO_TCPV4, 0, ALL, Err(VnetError::MssTooSmall)),
            (
                GSO_TCPV4,
                1448,
                VnetAccept { tso4: false, ..ALL },
                Err(VnetError::GsoType(GSO_TCPV4)),
            ),
            (
                GSO_TCPV6,
                1428,
                VnetAccept { tso6: false, ..ALL },
                Err(VnetError::GsoType(GSO_TCPV6)),
            ),
            (
                GSO_TCPV4 | GSO_ECN,
                1448,
                VnetAccept { ecn: false, ..ALL },
                Err(VnetError::GsoType(GSO_TCPV4 | GSO_ECN)),
            ),
        ];
        for (t, mss, accept, want) in cases {
            let h = hdr(nc, t, 54, mss, 34, 16);
            assert_eq!(decode_gso(&h, accept), want, "gso_type {t:#x} mss {mss}");
        }
        // A GSO frame must ask for its checksum.
        assert_eq!(
            decode_gso(&hdr(0, GSO_TCPV4, 54, 1448, 0, 0), ALL),
            Err(VnetError::GsoWithoutCsum)
        );
    }

    #[test]
    fn tso_header_is_encoded_with_the_parsed_header_length() {
        let f = partial_tcp4(); // TCP at 34, 20-byte header
        let p = PartialCsum {
            start: 34,
            offset: 16,
        };
        let g = Gso {
            kind: GsoKind::Tcp4,
            mss: 1448,
        };
        let h = encode(Some(p), Some(g), &f).unwrap();
        assert_eq!(h, hdr(F_NEEDS_CSUM, GSO_TCPV4, 54, 1448, 34, 16));
        assert_eq!(
            decode(&h, f.len(), ALL),
            Ok(VnetMeta {
                partial: Some(p),
                gso: Some(g)
            })
        );
        let f6 = partial_tcp6();
        let g6 = Gso {
            kind: GsoKind::Tcp6,
            mss: 1428,
        };
        let p6 = PartialCsum {
            start: 54,
            offset: 16,
        };
        let h6 = encode(Some(p6), Some(g6), &f6).unwrap();
        assert_eq!(h6, hdr(F_NEEDS_CSUM, GSO_TCPV6, 74, 1428, 54, 16));
        // Headers that are not what the kind says, or no checksum: refused.
        assert!(encode(Some(p), Some(g6), &f).is_err());
        assert_eq!(encode(None, Some(g), &f), Err(VnetError::GsoWithoutCsum));
        assert_eq!(encode(None, None, &f), Ok([0; 10]));
    }
}
