//! VXLAN (RFC 7348) and Geneve (RFC 8926) over IPv4/UDP: the outer header a
//! tunnel port puts in front of a frame, and the checks an underlay port runs
//! before taking it off again.
//!
//! Layer: wire (lowest). No I/O or allocation. [`OuterHeader::encap`] is the
//! wire layer's one use of the buffers layer above it, and only of
//! [`Mbuf::prepend`]; [`OuterHeader::write`] is the same on a plain slice.
//! On the packet path: [`OuterHeader::encap`] and [`source_port`] run once
//! per frame a tunnel port sends, [`parse_outer`] and
//! [`vxlan_vni`]/[`geneve_vni`] once per UDP frame an underlay port receives
//! for weir.
//!
//! The outer header is the same 50 bytes for every frame sent to one remote
//! VTEP except five fields, so it is built once per remote
//! ([`OuterHeader::new`]) and copied in front of each frame:
//!
//! ```text
//! 0      14                   34          42               50
//! | eth  | IPv4 (IHL 5, DF)   | UDP       | VXLAN / Geneve | inner frame ...
//!          ^tot len  ^csum      ^sport ^len   ^VNI
//! ```
//!
//! The marked fields change per frame: IPv4 total length and header checksum,
//! UDP source port (flow entropy) and length, and the VNI. The UDP checksum is
//! 0, which both RFCs allow over IPv4 (RFC 7348 section 5, RFC 8926 section
//! 3.3), and receivers do not check it either (see [`parse_outer`]).

use std::net::Ipv4Addr;

use crate::ids::MacAddr;
use crate::mbuf::{Mbuf, NoRoom};

use super::ethernet::{self, ethertype};
use super::ipv4::{self, ones_complement_sum, protocol};

/// Bytes of the outer header: Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8 (or a
/// Geneve header without options, also 8).
pub const OUTER_LEN: usize = ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN + UDP_LEN + TUNNEL_LEN;

/// Bytes the encapsulation adds to what counts against the underlay's IP MTU:
/// IPv4 20 + UDP 8 + VXLAN/Geneve 8 = 36. The outer Ethernet header is not
/// part of the IP MTU, while the inner frame's own Ethernet header is, so an
/// inner frame of at most MTU − 36 bytes (an inner L3 packet of at most
/// MTU − 50) fits: 1464 bytes of frame, 1450 of L3, on a 1500-byte underlay.
pub const MTU_OVERHEAD: usize = OUTER_LEN - ethernet::HEADER_LEN;

const _: () = assert!(OUTER_LEN == 50 && MTU_OVERHEAD == 36);

/// Bytes of a UDP header (RFC 768).
const UDP_LEN: usize = 8;
/// Bytes of a VXLAN header, and of a Geneve header without options.
const TUNNEL_LEN: usize = 8;

/// First UDP source port of the range used for flow entropy: the dynamic
/// range 49152–65535 that RFC 7348 section 5 recommends.
const SOURCE_PORT_BASE: u16 = 49152;
/// Mask of the entropy bits added to [`SOURCE_PORT_BASE`] (14 bits).
const SOURCE_PORT_MASK: u64 = 0x3fff;

/// VXLAN flags byte with only the I bit set (RFC 7348 section 5: "I flag MUST
/// be set to 1 for a valid VXLAN Network ID").
const VXLAN_FLAG_I: u8 = 0x08;
/// Geneve protocol type of an Ethernet payload: Transparent Ethernet Bridging
/// (RFC 8926 section 3.4, IEEE RA EtherType 0x6558).
const GENEVE_PROTO_ETHERNET: u16 = 0x6558;
/// Geneve O bit: a control packet, whose payload must not be forwarded (RFC
/// 8926 section 3.4).
const GENEVE_FLAG_O: u8 = 0x80;
/// Geneve C bit: critical options present (RFC 8926 section 3.4).
const GENEVE_FLAG_C: u8 = 0x40;

/// Offsets in the outer header (from the start of the outer Ethernet header).
mod field {
    use super::ethernet::HEADER_LEN as ETH;
    use super::ipv4::MIN_HEADER_LEN as IP;
    pub const IP_START: usize = ETH;
    pub const IP_TOTAL_LEN: usize = ETH + 2;
    pub const IP_CHECKSUM: usize = ETH + 10;
    pub const UDP_START: usize = ETH + IP;
    pub const UDP_SRC_PORT: usize = UDP_START;
    pub const UDP_DST_PORT: usize = UDP_START + 2;
    pub const UDP_LEN: usize = UDP_START + 4;
    pub const TUNNEL_START: usize = UDP_START + super::UDP_LEN;
    /// The VNI's three bytes and the reserved byte after them; the same place
    /// in VXLAN and Geneve headers.
    pub const VNI_WORD: usize = TUNNEL_START + 4;
}

/// Which encapsulation a tunnel port uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TunnelKind {
    /// VXLAN, RFC 7348.
    Vxlan,
    /// Geneve, RFC 8926 (options skipped on receive, never sent).
    Geneve,
}

impl TunnelKind {
    /// The IANA UDP destination port: 4789 for VXLAN, 6081 for Geneve.
    #[inline]
    pub const fn default_port(self) -> u16 {
        match self {
            TunnelKind::Vxlan => 4789,
            TunnelKind::Geneve => 6081,
        }
    }

    /// The name used in configuration (`type = "vxlan"`) and views.
    #[inline]
    pub const fn name(self) -> &'static str {
        match self {
            TunnelKind::Vxlan => "vxlan",
            TunnelKind::Geneve => "geneve",
        }
    }

    /// Parses the tunnel header at the start of a UDP payload; see
    /// [`vxlan_vni`] and [`geneve_vni`].
    ///
    /// # Errors
    ///
    /// As the function for this kind.
    #[inline]
    pub fn vni(self, payload: &[u8]) -> Result<(u32, usize), DecapError> {
        match self {
            TunnelKind::Vxlan => vxlan_vni(payload),
            TunnelKind::Geneve => geneve_vni(payload),
        }
    }
}

/// The outer header for one remote VTEP, prebuilt: everything but the
/// per-frame fields, plus the one's-complement sum of the IPv4 header's
/// constant words, so that [`OuterHeader::encap`] finishes the checksum with
/// one addition.
///
/// Rebuilt by the control side when the next hop's MAC changes, never per
/// frame.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct OuterHeader {
    bytes: [u8; OUTER_LEN],
    /// Folded one's-complement sum of the IPv4 header with total length and
    /// checksum zero, its bytes in wire order (as a native `u16` read from
    /// memory): the sum is byte-order independent (RFC 1071 section 2(B)),
    /// so [`OuterHeader::fill`] adds the total length as stored and stores
    /// the result without swapping either.
    ip_sum_wire: u16,
    kind: TunnelKind,
}

impl std::fmt::Debug for OuterHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OuterHeader")
            .field("kind", &self.kind)
            .field("local", &self.local())
            .field("remote", &self.remote())
            .field("dst_port", &self.dst_port())
            .finish()
    }
}

impl OuterHeader {
    /// Builds the outer header of frames from `src` (weir's address on the
    /// underlay, MAC `src_mac`) to the remote VTEP `dst`, sent to the next
    /// hop's MAC `dst_mac` at UDP port `dst_port`.
    ///
    /// IPv4 with DF set, TTL 64 and identification 0 (with DF set and no
    /// fragment the datagram is atomic, and RFC 6864 gives its ID no
    /// meaning); UDP checksum 0.
    pub fn new(
        kind: TunnelKind,
        src_mac: MacAddr,
        dst_mac: MacAddr,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        dst_port: u16,
    ) -> OuterHeader {
        let mut b = [0u8; OUTER_LEN];
        b[0..6].copy_from_slice(&dst_mac.0);
        b[6..12].copy_from_slice(&src_mac.0);
        b[12..14].copy_from_slice(&ethertype::IPV4.to_be_bytes());
        let ip = field::IP_START;
        b[ip] = 0x45;
        // TOS 0, total length per frame, identification 0.
        b[ip + 6..ip + 8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF
        b[ip + 8] = 64;
        b[ip + 9] = protocol::UDP;
        // Checksum per frame.
        b[ip + 12..ip + 16].copy_from_slice(&src.octets());
        b[ip + 16..ip + 20].copy_from_slice(&dst.octets());
        // UDP: source port and length per frame, checksum 0.
        b[field::UDP_DST_PORT..field::UDP_DST_PORT + 2].copy_from_slice(&dst_port.to_be_bytes());
        let t = field::TUNNEL_START;
        match kind {
            TunnelKind::Vxlan => b[t] = VXLAN_FLAG_I,
            // Version 0, no options, no flags, Ethernet payload.
            TunnelKind::Geneve => {
                b[t + 2..t + 4].copy_from_slice(&GENEVE_PROTO_ETHERNET.to_be_bytes());
            }
        }
        let ip_sum = ones_complement_sum(&b[ip..ip + ipv4::MIN_HEADER_LEN]);
        OuterHeader {
            bytes: b,
            ip_sum_wire: u16::from_ne_bytes(ip_sum.to_be_bytes()),
            kind,
        }
    }

    /// The encapsulation.
    #[inline]
    pub fn kind(&self) -> TunnelKind {
        self.kind
    }

    /// The remote VTEP's address (the outer destination).
    #[inline]
    pub fn remote(&self) -> Ipv4Addr {
        self.addr(field::IP_START + 16)
    }

    /// weir's address (the outer source).
    #[inline]
    pub fn local(&self) -> Ipv4Addr {
        self.addr(field::IP_START + 12)
    }

    /// The UDP destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        u16::from_be_bytes([
            self.bytes[field::UDP_DST_PORT],
            self.bytes[field::UDP_DST_PORT + 1],
        ])
    }

    /// The template: the 50 bytes with every per-frame field zero.
    #[inline]
    pub fn as_bytes(&self) -> &[u8; OUTER_LEN] {
        &self.bytes
    }

    fn addr(&self, off: usize) -> Ipv4Addr {
        let b = &self.bytes;
        Ipv4Addr::new(b[off], b[off + 1], b[off + 2], b[off + 3])
    }

    /// Puts the outer header in front of the frame in `m`: [`Mbuf::prepend`]
    /// then [`OuterHeader::write`].
    ///
    /// The frame's length is not checked against any MTU here (the caller
    /// drops oversized frames as `tunnel-mtu` first).
    ///
    /// # Errors
    ///
    /// [`NoRoom`] if the headroom is shorter than [`OUTER_LEN`]; `m` is then
    /// unchanged.
    #[inline]
    pub fn encap(&self, m: &mut Mbuf, vni: u32, src_port: u16) -> Result<(), NoRoom> {
        // If the prepend succeeds, inner + OUTER_LEN fits the mbuf's 16-bit
        // window, so the IP length (14 bytes less) fits a u16 too.
        let ip_len = (m.len() + MTU_OVERHEAD) as u16;
        let Some(h) = m.prepend(OUTER_LEN)?.first_chunk_mut::<OUTER_LEN>() else {
            // `prepend` returns exactly OUTER_LEN bytes: not reached.
            return Err(NoRoom {
                wanted: OUTER_LEN,
                room: 0,
            });
        };
        self.fill(h, ip_len, vni, src_port);
        Ok(())
    }

    /// Writes the outer header for an inner frame of `inner_len` bytes into
    /// `h`: copies the template and fills IPv4 total length and checksum,
    /// UDP source port and length, and the VNI (its low 24 bits).
    ///
    /// The checksum is the precomputed sum plus the total length, folded and
    /// inverted: the same value as summing the finished header.
    ///
    /// # Errors
    ///
    /// [`TooLong`] if the IPv4 total length (`inner_len` + 36) would not fit
    /// 16 bits; `h` is then unchanged.
    #[inline]
    pub fn write(
        &self,
        h: &mut [u8; OUTER_LEN],
        inner_len: usize,
        vni: u32,
        src_port: u16,
    ) -> Result<(), TooLong> {
        let ip_len = inner_len
            .checked_add(MTU_OVERHEAD)
            .and_then(|l| u16::try_from(l).ok())
            .ok_or(TooLong { inner_len })?;
        self.fill(h, ip_len, vni, src_port);
        Ok(())
    }

    #[inline]
    fn fill(&self, h: &mut [u8; OUTER_LEN], ip_len: u16, vni: u32, src_port: u16) {
        *h = self.bytes;
        // One's-complement addition of two 16-bit values: the carry out of
        // the add goes back in (and cannot carry again: a carry leaves at
        // most 0xfffe).
        let len_wire = u16::from_ne_bytes(ip_len.to_be_bytes());
        let (sum, carry) = self.ip_sum_wire.overflowing_add(len_wire);
        let csum_wire = !(sum + u16::from(carry));
        let udp_len = ip_len - ipv4::MIN_HEADER_LEN as u16;
        h[field::IP_TOTAL_LEN..field::IP_TOTAL_LEN + 2].copy_from_slice(&len_wire.to_ne_bytes());
        h[field::IP_CHECKSUM..field::IP_CHECKSUM + 2].copy_from_slice(&csum_wire.to_ne_bytes());
        h[field::UDP_SRC_PORT..field::UDP_SRC_PORT + 2].copy_from_slice(&src_port.to_be_bytes());
        h[field::UDP_LEN..field::UDP_LEN + 2].copy_from_slice(&udp_len.to_be_bytes());
        // VNI in the top three bytes; the shift clears the reserved byte.
        h[field::VNI_WORD..field::VNI_WORD + 4].copy_from_slice(&(vni << 8).to_be_bytes());
    }
}

/// An inner frame too long for one IPv4 packet with the outer headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("inner frame of {inner_len} bytes too long for an IPv4 packet")]
pub struct TooLong {
    /// Bytes of the inner frame.
    pub inner_len: usize,
}

/// Multiplier of the flow hash's final step: 2^64 / φ, odd, spreads every
/// input bit over the high bits of the product.
const HASH_MUL: u64 = 0x9e37_79b9_7f4a_7c15;

/// The flow hash's multipliers, one per word of the flow ([`Word`]): odd,
/// different so that words that change together (a MAC that embeds the
/// IPv4 address) do not cancel out, and each a sign-extended 32-bit value,
/// which x86-64 multiplies by as an immediate (no constant to load). Each
/// word's bits still reach the sum's high half, from which [`finish`]'s
/// full 64-bit multiply takes the port.
const HASH_KEYS: [u64; 8] = [
    0xffff_ffff_a537_7f09,
    0xffff_ffff_ba6d_b5bb,
    0xffff_ffff_94bb_b6af,
    0xffff_ffff_d880_248b,
    0xffff_ffff_dfa3_0777,
    0xffff_ffff_829e_61b9,
    0xffff_ffff_adce_6a41,
    0xffff_ffff_c7d3_3645,
];

/// The words of a flow, each read little-endian (one load, no byte swap).
#[derive(Clone, Copy)]
enum Word {
    /// Bytes 0..8: the destination MAC and the source's first two bytes.
    Macs = 0,
    /// Bytes 8..12: the source MAC's other four.
    SrcMacTail = 1,
    /// IPv4 source and destination.
    Ipv4Addrs = 2,
    /// IPv6 source and destination, four words.
    Ipv6Addrs = 3,
    /// TCP or UDP source and destination ports, the protocol above them.
    Ports = 7,
}

/// Word `w` of a flow (`Word::Ipv6Addrs` + 0..4 for the IPv6 words) as its
/// term of the hash.
#[inline(always)]
fn term(w: usize, x: u64) -> u64 {
    x.wrapping_mul(HASH_KEYS[w & 7])
}

#[inline(always)]
fn le_u32(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(*b.get(off..)?.first_chunk()?))
}

#[inline]
fn be_u16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_be_bytes(*b.get(off..)?.first_chunk()?))
}

/// The UDP source port for an inner frame: 49152 + 14 bits of a hash of its
/// flow (RFC 7348 section 5), so that the underlay's ECMP spreads flows and
/// keeps each one on one path.
///
/// The flow is the two MACs and, for IPv4 and IPv6 (untagged or under one
/// VLAN tag), the addresses and, for TCP and UDP, the ports; IPv4 fragments
/// hash without ports so that all fragments of a datagram agree. A frame too
/// short for a field hashes without it.
///
/// The hash sums each word of the flow times its own odd constant (a
/// multilinear hash: one multiply per word, no dependency between them),
/// then folds the high half onto the low, multiplies once more and keeps the
/// top 14 bits, which every input bit reaches. No loop.
#[inline]
pub fn source_port(inner: &[u8]) -> u16 {
    // The common frame, untagged IPv4 without options, read at constant
    // offsets: the same hash as the general walk, with fewer tests.
    if let Some(f) = inner.first_chunk::<{ ethernet::HEADER_LEN + 24 }>() {
        let le32 = |i: usize| u32::from_le_bytes([f[i], f[i + 1], f[i + 2], f[i + 3]]);
        let le64 = |i: usize| u64::from(le32(i)) | u64::from(le32(i + 4)) << 32;
        // EtherType 0x0800, version 4, IHL 5.
        const ETH_IPV4_IHL5: u32 = u32::from_le_bytes([0x08, 0x00, 0x45, 0]);
        if le32(12) & 0x00ff_ffff == ETH_IPV4_IHL5 {
            let mut h = term(Word::Macs as usize, le64(0))
                .wrapping_add(term(Word::SrcMacTail as usize, u64::from(le32(8))))
                .wrapping_add(term(Word::Ipv4Addrs as usize, le64(26)));
            // Flags and fragment offset (MF and offset: 20..22 under
            // 0x3fff), TTL, protocol.
            let frag_proto = le32(20) & u32::from_le_bytes([0x3f, 0xff, 0, 0xff]);
            const TCP: u32 = u32::from_le_bytes([0, 0, 0, protocol::TCP]);
            const UDP: u32 = u32::from_le_bytes([0, 0, 0, protocol::UDP]);
            if frag_proto == TCP || frag_proto == UDP {
                // `frag_proto` is the protocol alone, in its top byte.
                let ports = u64::from(le32(34)) | u64::from(frag_proto) << 8;
                h = h.wrapping_add(term(Word::Ports as usize, ports));
            }
            return finish(h);
        }
    }
    source_port_walk(inner)
}

/// [`source_port`] for any frame: each field read only if the frame holds
/// it.
#[inline]
fn source_port_walk(inner: &[u8]) -> u16 {
    let mut h = 0u64;
    let mut add = |w: usize, x: u64| h = h.wrapping_add(term(w, x));
    if let (Some(a), Some(b)) = (le64(inner, 0), le_u32(inner, 8)) {
        add(Word::Macs as usize, a);
        add(Word::SrcMacTail as usize, u64::from(b));
    }
    let (ty, l3) = match be_u16(inner, 12) {
        Some(t) if ethertype::is_vlan(t) => (be_u16(inner, 16), 18),
        t => (t, ethernet::HEADER_LEN),
    };
    let l4 = match ty {
        Some(ethertype::IPV4) => le64(inner, l3 + 12).and_then(|addrs| {
            add(Word::Ipv4Addrs as usize, addrs);
            let proto = *inner.get(l3 + 9)?;
            let frag = be_u16(inner, l3 + 6)? & 0x3fff;
            let ihl = usize::from(*inner.get(l3)? & 0x0f) * 4;
            (frag == 0 && ihl >= ipv4::MIN_HEADER_LEN).then_some((proto, l3 + ihl))
        }),
        Some(ethertype::IPV6) => {
            // Source and destination, four 64-bit words at 8..40.
            match (
                le64(inner, l3 + 8),
                le64(inner, l3 + 16),
                le64(inner, l3 + 24),
                le64(inner, l3 + 32),
            ) {
                (Some(a), Some(b), Some(c), Some(d)) => {
                    for (i, x) in [a, b, c, d].into_iter().enumerate() {
                        add(Word::Ipv6Addrs as usize + i, x);
                    }
                    inner.get(l3 + 6).map(|&nh| (nh, l3 + 40))
                }
                _ => None,
            }
        }
        _ => None,
    };
    if let Some((proto, off)) = l4 {
        if proto == protocol::TCP || proto == protocol::UDP {
            if let Some(ports) = le_u32(inner, off) {
                add(
                    Word::Ports as usize,
                    u64::from(ports) | u64::from(proto) << 32,
                );
            }
        }
    }
    finish(h)
}

/// The port for flow hash state `h`: folds the high half down, multiplies
/// once more and keeps the top 14 bits, which every input bit reaches.
#[inline]
fn finish(mut h: u64) -> u16 {
    h ^= h >> 32;
    SOURCE_PORT_BASE + ((h.wrapping_mul(HASH_MUL) >> 50) & SOURCE_PORT_MASK) as u16
}

/// What [`parse_outer`] found in a frame's outer IPv4/UDP headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outer {
    /// Outer source address: the sending VTEP.
    pub src_ip: Ipv4Addr,
    /// Outer destination address.
    pub dst_ip: Ipv4Addr,
    /// UDP source port (flow entropy).
    pub src_port: u16,
    /// UDP destination port: selects the tunnel.
    pub dst_port: u16,
    /// Offset of the UDP payload (the VXLAN or Geneve header) in the frame.
    pub payload_offset: usize,
    /// Bytes of UDP payload (from the UDP length; Ethernet padding after it
    /// excluded).
    pub payload_len: usize,
}

/// Why a frame was not decapsulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecapError {
    /// Not an untagged IPv4 frame carrying UDP: not for the tunnel stage at
    /// all (the host stack or the switch handles it).
    #[error("not an IPv4/UDP frame")]
    NotUdp,
    /// IPv4/UDP, but a header is wrong: dropped and counted `tunnel-header`.
    #[error("bad tunnel packet header: {0}")]
    Header(#[source] BadHeader),
}

/// What was wrong with the headers of an IPv4/UDP frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadHeader {
    /// The frame ends inside a header.
    #[error("truncated")]
    Truncated,
    /// IPv4 IHL below 5.
    #[error("IPv4 IHL below 5")]
    Ihl,
    /// IPv4 header checksum does not verify.
    #[error("IPv4 header checksum")]
    Checksum,
    /// IPv4 total length shorter than its headers or longer than the frame.
    #[error("IPv4 total length")]
    TotalLength,
    /// An IPv4 fragment (MF set or a non-zero offset): weir does not
    /// reassemble, and the outer header is sent with DF.
    #[error("IPv4 fragment")]
    Fragment,
    /// UDP length shorter than its header or longer than the IPv4 payload.
    #[error("UDP length")]
    UdpLength,
    /// VXLAN flags without the I bit.
    #[error("VXLAN flags without I")]
    VxlanFlags,
    /// Geneve version other than 0.
    #[error("Geneve version")]
    GeneveVersion,
    /// Geneve control packet (O bit): its payload must not be forwarded.
    #[error("Geneve control packet")]
    GeneveControl,
    /// Geneve critical options (C bit), which weir does not understand.
    #[error("Geneve critical options")]
    GeneveCritical,
    /// Geneve protocol type other than Ethernet (0x6558).
    #[error("Geneve protocol type")]
    GeneveProtocol,
    /// Geneve options run past the UDP payload.
    #[error("Geneve options length")]
    GeneveOptions,
}

impl From<BadHeader> for DecapError {
    fn from(b: BadHeader) -> DecapError {
        DecapError::Header(b)
    }
}

/// Parses an untagged Ethernet frame's outer IPv4 and UDP headers.
///
/// The IPv4 header checksum is verified (the header only: one pass over 20
/// bytes). The UDP checksum is not: the senders this talks to send 0, and a
/// non-zero one would cost a pass over the whole frame; the inner frame
/// carries its own L3/L4 checksums.
///
/// # Errors
///
/// - [`DecapError::NotUdp`] if the frame is not IPv4 carrying UDP, or too
///   short to tell (shorter than the IPv4 protocol byte).
/// - [`DecapError::Header`] for an IPv4/UDP frame with IHL < 5, a bad header
///   checksum, a total length shorter than its headers or beyond the frame,
///   a fragment, a UDP length shorter than 8 or beyond the IPv4 payload, or a
///   frame that ends inside a header.
#[inline]
pub fn parse_outer(frame: &[u8]) -> Result<Outer, DecapError> {
    match parse_plain(frame) {
        Some(o) => Ok(o),
        None => parse_outer_general(frame),
    }
}

/// Bytes up to the end of an option-less IPv4 header's UDP header.
const PLAIN_LEN: usize = ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN + UDP_LEN;

/// The eight bytes at `i` as a little-endian `u64`: one load, no byte swap.
/// For equality with constants written in the same byte order and for
/// one's-complement sums (see [`end_around_sum`]).
#[inline(always)]
fn le64(b: &[u8], i: usize) -> Option<u64> {
    Some(u64::from_le_bytes(*b.get(i..)?.first_chunk()?))
}

/// [`parse_outer`] for the frame every tunnel packet is: untagged IPv4
/// without options, not a fragment, carrying UDP, with no bytes after the
/// IPv4 packet and no IPv4 payload after the UDP datagram. The same checks
/// in fewer tests: the fields as two masked 32-bit words in one branch, the
/// header checksum over three words without a loop or a byte swap, and the
/// two lengths compared with what the frame's length implies instead of
/// checked against ranges.
/// `None` for any other frame, good or bad, which [`parse_outer_general`]
/// then takes (and names the fault of); a frame this accepts,
/// [`parse_outer_general`] accepts with the same result.
#[inline(always)]
fn parse_plain(frame: &[u8]) -> Option<Outer> {
    let f: &[u8; PLAIN_LEN] = frame.first_chunk()?;
    let ip = ethernet::HEADER_LEN;
    let le32 = |i: usize| u32::from_le_bytes([f[i], f[i + 1], f[i + 2], f[i + 3]]);
    // 12..16: EtherType 0x0800, version 4 and IHL 5 (TOS ignored).
    const ETH_V4_IHL5: u32 = u32::from_le_bytes([0x08, 0x00, 0x45, 0]);
    // 20..24: MF clear and offset 0 (DF and the reserved bit ignored), TTL
    // ignored, UDP.
    const FRAG_PROTO_MASK: u32 = u32::from_le_bytes([0x3f, 0xff, 0, 0xff]);
    const WHOLE_UDP: u32 = u32::from_le_bytes([0, 0, 0, protocol::UDP]);
    // One test for both: the differences from what is wanted, or-ed.
    if (le32(12) & 0x00ff_ffff ^ ETH_V4_IHL5) | (le32(20) & FRAG_PROTO_MASK ^ WHOLE_UDP) != 0 {
        return None;
    }
    // The IPv4 header as three words: 0..8, 8..16, 16..20.
    let w0 = le64(f, ip)?;
    let w1 = le64(f, ip + 8)?;
    let w2 = le32(ip + 16);
    // Version 4 is among the bytes summed: the sum is not zero.
    if !is_multiple_of_ffff(end_around_sum(w0, w1, w2)) {
        return None;
    }
    // Total length exactly to the frame's end, UDP length exactly to the
    // IPv4 packet's: so 28 <= total <= frame - 14 and 8 <= UDP <= total - 20.
    // Compared in wire byte order with what the frame's length implies.
    let udp = field::UDP_START;
    let total_len = u16::try_from(frame.len() - ip).ok()?;
    let udp_len = total_len - ipv4::MIN_HEADER_LEN as u16;
    if [f[ip + 2], f[ip + 3]] != total_len.to_be_bytes()
        || [f[udp + 4], f[udp + 5]] != udp_len.to_be_bytes()
    {
        return None;
    }
    Some(Outer {
        src_ip: Ipv4Addr::new(f[ip + 12], f[ip + 13], f[ip + 14], f[ip + 15]),
        dst_ip: Ipv4Addr::new(f[ip + 16], f[ip + 17], f[ip + 18], f[ip + 19]),
        src_port: u16::from_be_bytes([f[udp], f[udp + 1]]),
        dst_port: u16::from_be_bytes([f[udp + 2], f[udp + 3]]),
        payload_offset: PLAIN_LEN,
        payload_len: frame.len() - PLAIN_LEN,
    })
}

/// [`parse_outer`] for any frame: each check in turn, with its own error.
#[inline(always)]
fn parse_outer_general(frame: &[u8]) -> Result<Outer, DecapError> {
    let ip = ethernet::HEADER_LEN;
    if be_u16(frame, 12) != Some(ethertype::IPV4) {
        return Err(DecapError::NotUdp);
    }
    let (Some(&ver_ihl), Some(&proto)) = (frame.get(ip), frame.get(ip + 9)) else {
        return Err(DecapError::NotUdp);
    };
    if ver_ihl >> 4 != 4 || proto != protocol::UDP {
        return Err(DecapError::NotUdp);
    }
    let ihl = usize::from(ver_ihl & 0x0f) * 4;
    if ihl < ipv4::MIN_HEADER_LEN {
        return Err(BadHeader::Ihl.into());
    }
    let header = frame.get(ip..ip + ihl).ok_or(BadHeader::Truncated)?;
    // `ihl` >= 20: the fixed part, read below at constant offsets.
    let fixed: &[u8; ipv4::MIN_HEADER_LEN] = header.first_chunk().ok_or(BadHeader::Truncated)?;
    let sum_ok = if ihl == ipv4::MIN_HEADER_LEN {
        ipv4_header_sums_to_ones(fixed)
    } else {
        ones_complement_sum(header) == 0xffff
    };
    if !sum_ok {
        return Err(BadHeader::Checksum.into());
    }
    let total_len = usize::from(u16::from_be_bytes([fixed[2], fixed[3]]));
    if total_len < ihl + UDP_LEN || ip + total_len > frame.len() {
        return Err(BadHeader::TotalLength.into());
    }
    if u16::from_be_bytes([fixed[6], fixed[7]]) & 0x3fff != 0 {
        return Err(BadHeader::Fragment.into());
    }
    let udp = ip + ihl;
    // Within the frame: total_len >= ihl + 8 and the frame holds total_len.
    let udp_hdr: &[u8; UDP_LEN] = frame
        .get(udp..)
        .and_then(|b| b.first_chunk())
        .ok_or(BadHeader::Truncated)?;
    let udp_len = usize::from(u16::from_be_bytes([udp_hdr[4], udp_hdr[5]]));
    if udp_len < UDP_LEN || udp_len > total_len - ihl {
        return Err(BadHeader::UdpLength.into());
    }
    Ok(Outer {
        src_ip: Ipv4Addr::new(fixed[12], fixed[13], fixed[14], fixed[15]),
        dst_ip: Ipv4Addr::new(fixed[16], fixed[17], fixed[18], fixed[19]),
        src_port: u16::from_be_bytes([udp_hdr[0], udp_hdr[1]]),
        dst_port: u16::from_be_bytes([udp_hdr[2], udp_hdr[3]]),
        payload_offset: udp + UDP_LEN,
        payload_len: udp_len - UDP_LEN,
    })
}

/// True if an option-less IPv4 header's checksum verifies: its
/// one's-complement sum is 0xffff (RFC 1071).
///
/// Its 20 bytes are summed as three little-endian words, 0..8, 8..16 and
/// 16..20 ([`end_around_sum`]); the folded sum is 0xffff exactly when that
/// sum is a multiple of 0xffff ([`is_multiple_of_ffff`]) and not zero (it
/// is zero only for twenty zero bytes, whose folded sum is 0).
#[inline]
fn ipv4_header_sums_to_ones(h: &[u8; ipv4::MIN_HEADER_LEN]) -> bool {
    let (w0, rest) = h.split_first_chunk::<8>().unwrap_or((&[0; 8], &[]));
    let (w1, w2) = rest.split_first_chunk::<8>().unwrap_or((&[0; 8], &[]));
    let w2 = w2.first_chunk::<4>().unwrap_or(&[0; 4]);
    let s = end_around_sum(
        u64::from_le_bytes(*w0),
        u64::from_le_bytes(*w1),
        u32::from_le_bytes(*w2),
    );
    s != 0 && is_multiple_of_ffff(s)
}

/// The one's-complement sum of 20 bytes read as three little-endian words
/// (bytes 0..8, 8..16, 16..20), modulo 0xffff and not folded. Zero only if
/// all three are.
///
/// Two additions with end-around carry: no loop and no byte swap.
/// One's-complement addition is addition modulo 0xffff (2^16 ≡ 1, so also
/// 2^64 ≡ 1: the end-around carry of 64-bit words), and a little-endian
/// word is 2^8 times the big-endian one modulo 0xffff (the byte order
/// independence of RFC 1071 section 2(B)), 2^8 being invertible modulo
/// 0xffff: the big-endian sum is 0 modulo 0xffff exactly when this one is.
#[inline(always)]
fn end_around_sum(w0: u64, w1: u64, w2: u32) -> u64 {
    // A carry out leaves at most 2^64 − 2, or below 2^32: adding it back
    // cannot carry again.
    let (s, carry) = w0.overflowing_add(w1);
    let (s, carry) = (s + u64::from(carry)).overflowing_add(u64::from(w2));
    s + u64::from(carry)
}

/// `s % 0xffff == 0` as one multiply by the inverse of 0xffff modulo 2^64
/// and one compare: multiples of 0xffff, and only they, map to at most
/// (2^64 − 1) / 0xffff.
#[inline(always)]
fn is_multiple_of_ffff(s: u64) -> bool {
    s.wrapping_mul(INV_0XFFFF) <= u64::MAX / 0xffff
}

/// The inverse of 0xffff modulo 2^64: 0xffff × this ≡ 1.
const INV_0XFFFF: u64 = 0xfffe_fffe_fffe_ffff;
const _: () = assert!(INV_0XFFFF.wrapping_mul(0xffff) == 1);

/// Parses a VXLAN header (RFC 7348 section 5) at the start of a UDP payload.
///
/// Returns the VNI and the header length (8). Only the I flag is checked:
/// the reserved bits are ignored on receipt, as the RFC says.
///
/// # Errors
///
/// [`DecapError::Header`] with [`BadHeader::Truncated`] if the payload is
/// shorter than 8 bytes, [`BadHeader::VxlanFlags`] if the I flag is clear.
#[inline]
pub fn vxlan_vni(payload: &[u8]) -> Result<(u32, usize), DecapError> {
    let h: &[u8; TUNNEL_LEN] = payload.first_chunk().ok_or(BadHeader::Truncated)?;
    if h[0] & VXLAN_FLAG_I == 0 {
        return Err(BadHeader::VxlanFlags.into());
    }
    Ok((vni_of(h), TUNNEL_LEN))
}

/// The VNI of a VXLAN or Geneve header: bytes 4..7, then a reserved byte;
/// one 32-bit load.
#[inline(always)]
fn vni_of(h: &[u8; TUNNEL_LEN]) -> u32 {
    u32::from_be_bytes([h[4], h[5], h[6], h[7]]) >> 8
}

/// Parses a Geneve header (RFC 8926 section 3.4) at the start of a UDP
/// payload.
///
/// Returns the VNI and the header length, options included (options are
/// skipped, not read).
///
/// # Errors
///
/// [`DecapError::Header`] with [`BadHeader::Truncated`] if the payload is
/// shorter than 8 bytes, [`BadHeader::GeneveVersion`] for a version other
/// than 0, [`BadHeader::GeneveControl`] for a control packet (O bit),
/// [`BadHeader::GeneveCritical`] if the C bit is set,
/// [`BadHeader::GeneveProtocol`] for a payload other than Ethernet, and
/// [`BadHeader::GeneveOptions`] if the options run past the payload.
#[inline]
pub fn geneve_vni(payload: &[u8]) -> Result<(u32, usize), DecapError> {
    let h: &[u8; TUNNEL_LEN] = payload.first_chunk().ok_or(BadHeader::Truncated)?;
    if h[0] >> 6 != 0 {
        return Err(BadHeader::GeneveVersion.into());
    }
    if h[1] & GENEVE_FLAG_O != 0 {
        return Err(BadHeader::GeneveControl.into());
    }
    if h[1] & GENEVE_FLAG_C != 0 {
        return Err(BadHeader::GeneveCritical.into());
    }
    if u16::from_be_bytes([h[2], h[3]]) != GENEVE_PROTO_ETHERNET {
        return Err(BadHeader::GeneveProtocol.into());
    }
    let len = TUNNEL_LEN + usize::from(h[0] & 0x3f) * 4;
    if len > payload.len() {
        return Err(BadHeader::GeneveOptions.into());
    }
    Ok((vni_of(h), len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mempool::Mempool;
    use crate::wire::{checksum, Ipv4Packet};

    const LOCAL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const REMOTE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
    const LOCAL_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0a, 0x01]);
    const NEXT_HOP_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0a, 0x02]);

    /// VXLAN outer header laid out field by field from RFC 7348 section 5
    /// (figure 1, IPv4): VNI 5010, UDP 50000 -> 4789, inner frame of 64
    /// bytes. IPv4 header checksum 0xb685 computed by hand (RFC 1071) over
    /// 4500 0064 0000 4000 4011 0000 c000 0201 c000 0202.
    #[rustfmt::skip]
    const VXLAN_OUTER: [u8; OUTER_LEN] = [
        // Outer Ethernet: next hop, weir's MAC, IPv4.
        0x02, 0x00, 0x00, 0x00, 0x0a, 0x02,
        0x02, 0x00, 0x00, 0x00, 0x0a, 0x01,
        0x08, 0x00,
        // Outer IPv4: 0x45, TOS 0, total 100, id 0, DF, TTL 64, UDP.
        0x45, 0x00, 0x00, 0x64, 0x00, 0x00, 0x40, 0x00,
        0x40, 0x11, 0xb6, 0x85,
        192, 0, 2, 1,
        192, 0, 2, 2,
        // Outer UDP: 50000 -> 4789, length 80, checksum 0.
        0xc3, 0x50, 0x12, 0xb5, 0x00, 0x50, 0x00, 0x00,
        // VXLAN: flags I, reserved, VNI 0x001392 (5010), reserved.
        0x08, 0x00, 0x00, 0x00, 0x00, 0x13, 0x92, 0x00,
    ];

    /// A 64-byte inner frame: IPv4/TCP 10.0.0.1:1000 -> 10.0.0.2:80.
    fn inner_frame(tcp_src: u16) -> [u8; 64] {
        let mut f = [0u8; 64];
        f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
        f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&50u16.to_be_bytes());
        f[22] = 64;
        f[23] = protocol::TCP;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f[34..36].copy_from_slice(&tcp_src.to_be_bytes());
        f[36..38].copy_from_slice(&80u16.to_be_bytes());
        for (i, b) in f[38..].iter_mut().enumerate() {
            *b = i as u8;
        }
        f
    }

    fn vxlan_header() -> OuterHeader {
        OuterHeader::new(
            TunnelKind::Vxlan,
            LOCAL_MAC,
            NEXT_HOP_MAC,
            LOCAL,
            REMOTE,
            TunnelKind::Vxlan.default_port(),
        )
    }

    /// The fixture followed by the inner frame, as received.
    fn vxlan_packet() -> [u8; OUTER_LEN + 64] {
        let mut p = [0u8; OUTER_LEN + 64];
        p[..OUTER_LEN].copy_from_slice(&VXLAN_OUTER);
        p[OUTER_LEN..].copy_from_slice(&inner_frame(1000));
        p
    }

    /// Recomputes the outer IPv4 checksum after a test edits the header.
    fn refill_ip_checksum(frame: &mut [u8]) {
        let ihl = usize::from(frame[14] & 0x0f) * 4;
        Ipv4Packet::new_unchecked(&mut frame[14..14 + ihl]).fill_checksum();
    }

    fn header_fault(frame: &[u8]) -> BadHeader {
        match parse_outer(frame) {
            Err(DecapError::Header(b)) => b,
            other => panic!("expected a header error, got {other:?}"),
        }
    }

    fn mbuf_with(pool: &'static Mempool, bytes: &[u8]) -> Mbuf {
        let mut m = pool.alloc().unwrap();
        m.extend_from_slice(bytes).unwrap();
        m
    }

    #[test]
    fn kinds_have_iana_ports_and_config_names() {
        assert_eq!(TunnelKind::Vxlan.default_port(), 4789);
        assert_eq!(TunnelKind::Geneve.default_port(), 6081);
        assert_eq!(TunnelKind::Vxlan.name(), "vxlan");
        assert_eq!(TunnelKind::Geneve.name(), "geneve");
    }

    #[test]
    fn encap_writes_rfc7348_layout_byte_for_byte() {
        let pool = pool();
        let inner = inner_frame(1000);
        let mut m = mbuf_with(pool, &inner);
        vxlan_header().encap(&mut m, 5010, 50000).unwrap();
        assert_eq!(m.len(), OUTER_LEN + 64);
        assert_eq!(&m.data()[..OUTER_LEN], &VXLAN_OUTER[..]);
        assert_eq!(&m.data()[OUTER_LEN..], &inner[..]);
    }

    #[test]
    fn rfc7348_packet_decodes() {
        let p = vxlan_packet();
        let o = parse_outer(&p).unwrap();
        assert_eq!(
            o,
            Outer {
                src_ip: LOCAL,
                dst_ip: REMOTE,
                src_port: 50000,
                dst_port: 4789,
                payload_offset: 42,
                payload_len: 8 + 64,
            }
        );
        let payload = &p[o.payload_offset..o.payload_offset + o.payload_len];
        assert_eq!(vxlan_vni(payload), Ok((5010, 8)));
        assert_eq!(TunnelKind::Vxlan.vni(payload), Ok((5010, 8)));
        assert_eq!(&payload[8..], &inner_frame(1000)[..]);
    }

    #[test]
    fn round_trip_gives_back_inner_frame_and_vni() {
        let pool = pool();
        let mut inner = [0u8; 1600];
        for (i, b) in inner.iter_mut().enumerate() {
            *b = (i * 7 + 3) as u8;
        }
        for kind in [TunnelKind::Vxlan, TunnelKind::Geneve] {
            let hdr = OuterHeader::new(kind, LOCAL_MAC, NEXT_HOP_MAC, LOCAL, REMOTE, 7000);
            assert_eq!(hdr.remote(), REMOTE);
            assert_eq!(hdr.local(), LOCAL);
            assert_eq!(hdr.dst_port(), 7000);
            assert_eq!(hdr.kind(), kind);
            for len in [0usize, 14, 60, 64, 1464, 1600] {
                let mut m = mbuf_with(pool, &inner[..len]);
                let port = source_port(&inner[..len]);
                hdr.encap(&mut m, 0x00ab_cdef, port).unwrap();
                let f = m.data();
                assert_eq!(f.len(), OUTER_LEN + len);
                assert_eq!(&f[..6], &NEXT_HOP_MAC.0);
                assert_eq!(&f[6..12], &LOCAL_MAC.0);
                let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
                assert!(ip.verify_checksum(), "{kind:?} len {len}");
                assert_eq!(checksum(&f[14..34]), 0);
                assert!(ip.dont_frag() && !ip.is_fragment());
                assert_eq!((ip.ttl(), ip.ident(), ip.tos()), (64, 0, 0));
                assert_eq!(usize::from(ip.total_len()), MTU_OVERHEAD + len);
                assert_eq!(
                    usize::from(u16::from_be_bytes([f[38], f[39]])),
                    16 + len,
                    "UDP length"
                );
                assert_eq!(&f[40..42], &[0, 0], "UDP checksum");
                let o = parse_outer(f).unwrap();
                assert_eq!((o.src_ip, o.dst_ip), (LOCAL, REMOTE));
                assert_eq!((o.src_port, o.dst_port), (port, 7000));
                let payload = &f[o.payload_offset..o.payload_offset + o.payload_len];
                let (vni, hl) = kind.vni(payload).unwrap();
                assert_eq!((vni, hl), (0x00ab_cdef, 8));
                assert_eq!(&payload[hl..], &inner[..len]);
                // What the decap path does to the mbuf.
                m.adj(o.payload_offset + hl);
                assert_eq!(m.data(), &inner[..len]);
            }
        }
    }

    #[test]
    fn vni_keeps_its_low_24_bits_and_reserved_byte_stays_zero() {
        let mut h = [0xffu8; OUTER_LEN];
        vxlan_header()
            .write(&mut h, 64, 0xff12_3456, 50000)
            .unwrap();
        assert_eq!(&h[46..50], &[0x12, 0x34, 0x56, 0x00]);
        assert_eq!(vxlan_vni(&h[42..]), Ok((0x12_3456, 8)));
    }

    #[test]
    fn write_refuses_inner_frames_beyond_ipv4_length() {
        let mut h = [0u8; OUTER_LEN];
        let hdr = vxlan_header();
        assert!(hdr.write(&mut h, 65535 - 36, 1, 50000).is_ok());
        assert_eq!(u16::from_be_bytes([h[16], h[17]]), 65535);
        assert!(checksum(&h[14..34]) == 0);
        let mut h2 = [7u8; OUTER_LEN];
        assert_eq!(
            hdr.write(&mut h2, 65535 - 35, 1, 50000),
            Err(TooLong {
                inner_len: 65535 - 35
            })
        );
        assert_eq!(h2, [7u8; OUTER_LEN]);
        assert!(hdr.write(&mut h2, usize::MAX, 1, 50000).is_err());
    }

    /// One pool for these tests: a process has at most
    /// [`crate::mempool::MAX_POOLS`], and pools live for good. Large enough
    /// for the tests that run at once: each test thread's cache keeps up to
    /// 32 freed buffers from the others.
    fn pool() -> &'static Mempool {
        static POOL: std::sync::OnceLock<&'static Mempool> = std::sync::OnceLock::new();
        POOL.get_or_init(|| Mempool::for_tests(256))
    }

    use crate::testutil::XorShift;

    #[test]
    fn incremental_checksum_equals_full_checksum_for_any_header() {
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        let mut checked = 0;
        for round in 0..20_000 {
            let r = rng.next_u64();
            // Some rounds with all-ones addresses drive the carries.
            let (src, dst) = if round % 7 == 0 {
                (Ipv4Addr::BROADCAST, Ipv4Addr::BROADCAST)
            } else {
                (Ipv4Addr::from(r as u32), Ipv4Addr::from((r >> 32) as u32))
            };
            let kind = if round % 2 == 0 {
                TunnelKind::Vxlan
            } else {
                TunnelKind::Geneve
            };
            let port = rng.next_u64() as u16;
            let hdr = OuterHeader::new(kind, LOCAL_MAC, NEXT_HOP_MAC, src, dst, port);
            let len = (rng.next_u64() % (65535 - 36 + 1)) as usize;
            let mut h = [0u8; OUTER_LEN];
            hdr.write(&mut h, len, rng.next_u64() as u32, rng.next_u64() as u16)
                .unwrap();
            let mut full = h;
            Ipv4Packet::new_unchecked(&mut full[14..34]).fill_checksum();
            assert_eq!(h, full, "src {src} dst {dst} len {len}");
            checked += 1;
        }
        assert_eq!(checked, 20_000);
    }

    #[test]
    fn encap_without_headroom_is_refused_and_leaves_the_frame() {
        let pool = pool();
        let mut m = pool.alloc().unwrap();
        // Use up all but 49 bytes of headroom.
        let head = m.headroom();
        m.prepend(head - (OUTER_LEN - 1)).unwrap();
        m.extend_from_slice(&inner_frame(1)).unwrap();
        let before: Vec<u8> = m.data().to_vec();
        assert_eq!(
            vxlan_header().encap(&mut m, 1, 50000),
            Err(NoRoom {
                wanted: OUTER_LEN,
                room: OUTER_LEN - 1
            })
        );
        assert_eq!(m.data(), &before[..]);
        // One more byte of headroom is enough.
        m.adj(1);
        assert!(vxlan_header().encap(&mut m, 1, 50000).is_ok());
    }

    #[test]
    fn vxlan_without_i_flag_is_refused_and_reserved_bits_ignored() {
        let mut h = [0x08, 0, 0, 0, 0, 0, 1, 0];
        assert_eq!(vxlan_vni(&h), Ok((1, 8)));
        h[0] = 0xf7; // every flag but I
        assert_eq!(vxlan_vni(&h), Err(BadHeader::VxlanFlags.into()));
        h = [0xff, 0xff, 0xff, 0xff, 0, 0, 2, 0xff];
        assert_eq!(vxlan_vni(&h), Ok((2, 8)));
        assert_eq!(vxlan_vni(&h[..7]), Err(BadHeader::Truncated.into()));
    }

    /// A Geneve header with `opt_words` 4-byte words of options, VNI 0x123456.
    fn geneve(opt_words: u8, flags: u8, proto: u16) -> [u8; 8] {
        let p = proto.to_be_bytes();
        [opt_words, flags, p[0], p[1], 0x12, 0x34, 0x56, 0]
    }

    #[test]
    fn geneve_with_options_decodes_past_them() {
        let mut payload = [0u8; 8 + 12 + 14];
        payload[..8].copy_from_slice(&geneve(3, 0, 0x6558));
        // One option: class 0x0102, type 3, length 2 words, 8 bytes data; and
        // an empty option 4 bytes. The parser skips them.
        payload[8..20].copy_from_slice(&[1, 2, 3, 2, 9, 9, 9, 9, 9, 9, 9, 9]);
        payload[20..].copy_from_slice(&[0xee; 14]);
        assert_eq!(geneve_vni(&payload), Ok((0x12_3456, 20)));
        assert_eq!(&payload[20..], &[0xee; 14]);
        // Options exactly filling the payload are fine; one byte short is not.
        assert_eq!(geneve_vni(&payload[..20]), Ok((0x12_3456, 20)));
        assert_eq!(
            geneve_vni(&payload[..19]),
            Err(BadHeader::GeneveOptions.into())
        );
        // The largest option length, 63 words.
        let mut big = [0u8; 8 + 252];
        big[..8].copy_from_slice(&geneve(63, 0, 0x6558));
        assert_eq!(geneve_vni(&big), Ok((0x12_3456, 260)));
    }

    #[test]
    fn geneve_refuses_critical_control_other_versions_and_protocols() {
        let ok = geneve(0, 0, 0x6558);
        assert_eq!(geneve_vni(&ok), Ok((0x12_3456, 8)));
        assert_eq!(
            geneve_vni(&geneve(0, 0x40, 0x6558)),
            Err(BadHeader::GeneveCritical.into())
        );
        assert_eq!(
            geneve_vni(&geneve(1, 0x40, 0x6558)),
            Err(BadHeader::GeneveCritical.into())
        );
        assert_eq!(
            geneve_vni(&geneve(0, 0x80, 0x6558)),
            Err(BadHeader::GeneveControl.into())
        );
        // Reserved flag bits are ignored.
        assert_eq!(geneve_vni(&geneve(0, 0x3f, 0x6558)), Ok((0x12_3456, 8)));
        for ver in 1..4u8 {
            assert_eq!(
                geneve_vni(&geneve(ver << 6, 0, 0x6558)),
                Err(BadHeader::GeneveVersion.into())
            );
        }
        assert_eq!(
            geneve_vni(&geneve(0, 0, 0x0800)),
            Err(BadHeader::GeneveProtocol.into())
        );
        // A VXLAN header is not a Geneve one.
        assert!(geneve_vni(&VXLAN_OUTER[42..]).is_err());
    }

    #[test]
    fn frames_that_are_not_ipv4_udp_are_not_for_the_tunnel() {
        let p = vxlan_packet();
        let mut arp = p;
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(parse_outer(&arp), Err(DecapError::NotUdp));
        let mut tcp = p;
        tcp[23] = protocol::TCP;
        refill_ip_checksum(&mut tcp);
        assert_eq!(parse_outer(&tcp), Err(DecapError::NotUdp));
        let mut v6 = p;
        v6[14] = 0x65;
        assert_eq!(parse_outer(&v6), Err(DecapError::NotUdp));
        // A VLAN tag in front of the IPv4 header.
        let mut tagged = [0u8; OUTER_LEN + 4];
        tagged[..12].copy_from_slice(&p[..12]);
        tagged[12..16].copy_from_slice(&[0x81, 0x00, 0x00, 0x0a]);
        tagged[16..].copy_from_slice(&p[12..OUTER_LEN]);
        assert_eq!(parse_outer(&tagged), Err(DecapError::NotUdp));
        assert_eq!(parse_outer(&[]), Err(DecapError::NotUdp));
    }

    #[test]
    fn bad_outer_headers_are_header_errors() {
        let p = vxlan_packet();

        let mut bad_sum = p;
        bad_sum[24] ^= 1;
        assert_eq!(header_fault(&bad_sum), BadHeader::Checksum);

        for ihl in 0..5u8 {
            let mut f = p;
            f[14] = 0x40 | ihl;
            assert_eq!(header_fault(&f), BadHeader::Ihl);
        }

        let mut mf = p;
        mf[20] |= 0x20;
        refill_ip_checksum(&mut mf);
        assert_eq!(header_fault(&mf), BadHeader::Fragment);
        let mut offset = p;
        offset[21] = 1;
        refill_ip_checksum(&mut offset);
        assert_eq!(header_fault(&offset), BadHeader::Fragment);

        // Total length beyond the frame, and too short for the UDP header.
        for total in [101u16, 27, 0] {
            let mut f = p;
            f[16..18].copy_from_slice(&total.to_be_bytes());
            refill_ip_checksum(&mut f);
            assert_eq!(header_fault(&f), BadHeader::TotalLength, "total {total}");
        }

        for udp_len in [0u16, 7, 81, 0xffff] {
            let mut f = p;
            f[38..40].copy_from_slice(&udp_len.to_be_bytes());
            assert_eq!(header_fault(&f), BadHeader::UdpLength, "udp {udp_len}");
        }

        // The IPv4 header runs past the frame.
        let mut opts = p;
        opts[14] = 0x4f;
        assert_eq!(header_fault(&opts[..60]), BadHeader::Truncated);
    }

    #[test]
    fn padding_and_ip_options_are_handled() {
        // Ethernet padding after the UDP datagram is not payload.
        let mut padded = [0u8; OUTER_LEN + 64 + 10];
        padded[..OUTER_LEN + 64].copy_from_slice(&vxlan_packet());
        let o = parse_outer(&padded).unwrap();
        assert_eq!(o.payload_len, 8 + 64);
        // A UDP length shorter than the IP payload bounds the payload.
        let mut short_udp = vxlan_packet();
        short_udp[38..40].copy_from_slice(&70u16.to_be_bytes());
        assert_eq!(parse_outer(&short_udp).unwrap().payload_len, 62);

        // Four bytes of IPv4 options (Router Alert) move the UDP header.
        let p = vxlan_packet();
        let mut f = [0u8; OUTER_LEN + 64 + 4];
        f[..34].copy_from_slice(&p[..34]);
        f[34..38].copy_from_slice(&[0x94, 0x04, 0x00, 0x00]);
        f[38..].copy_from_slice(&p[34..]);
        f[14] = 0x46;
        f[16..18].copy_from_slice(&104u16.to_be_bytes());
        refill_ip_checksum(&mut f);
        let o = parse_outer(&f).unwrap();
        assert_eq!(o.payload_offset, 46);
        assert_eq!((o.src_port, o.dst_port), (50000, 4789));
        assert_eq!(
            vxlan_vni(&f[o.payload_offset..][..o.payload_len]),
            Ok((5010, 8))
        );
    }

    #[test]
    fn every_prefix_parses_or_fails_without_panic() {
        let p = vxlan_packet();
        let mut geneve_packet = p;
        geneve_packet[42..50].copy_from_slice(&geneve(2, 0, 0x6558));
        for frame in [&p[..], &geneve_packet[..]] {
            for len in 0..=frame.len() {
                let f = &frame[..len];
                let r = parse_outer(f);
                if len < OUTER_LEN + 64 {
                    assert!(r.is_err(), "prefix {len} accepted");
                } else {
                    assert!(r.is_ok());
                }
                if len < 24 {
                    assert_eq!(r, Err(DecapError::NotUdp), "prefix {len}");
                }
                let _ = vxlan_vni(f);
                let _ = geneve_vni(f);
                let port = source_port(f);
                assert!(port >= 49152);
                // Also the UDP payload's prefixes.
                let tail = &frame[42.min(len)..len];
                let _ = vxlan_vni(tail);
                if let Ok((_, hl)) = geneve_vni(tail) {
                    assert!(hl <= tail.len());
                }
            }
        }
    }

    #[test]
    fn divisibility_by_ffff_agrees_with_remainder() {
        let mut rng = XorShift(0x5eed_f00d_1234_4321);
        for i in 0..200_000u64 {
            let s = match i % 4 {
                0 => rng.next_u64(),
                1 => rng.next_u64() >> 14,
                2 => (rng.next_u64() >> 17) * 0xffff,
                _ => (rng.next_u64() >> 17) * 0xffff + 1 + i % 0xfffe,
            };
            assert_eq!(is_multiple_of_ffff(s), s % 0xffff == 0, "{s:#x}");
        }
        for s in [0, 1, 0xfffe, 0xffff, 0x1_0000, u64::MAX, u64::MAX - 1] {
            assert_eq!(is_multiple_of_ffff(s), s % 0xffff == 0, "{s:#x}");
        }
    }

    /// Checks the fast parser against the general one on `f`: whatever it
    /// accepts, the general one accepts alike; a frame of the shape it
    /// serves that the general one accepts, it accepts. Returns whether it
    /// accepted.
    fn plain_agrees(f: &[u8]) -> bool {
        let general = parse_outer_general(f);
        match parse_plain(f) {
            Some(o) => {
                assert_eq!(general, Ok(o), "{f:02x?}");
                true
            }
            None => {
                if let Ok(o) = general {
                    let shape = f[14] == 0x45
                        && o.payload_offset == OUTER_LEN - TUNNEL_LEN
                        && usize::from(u16::from_be_bytes([f[16], f[17]])) + 14 == f.len()
                        && o.payload_offset + o.payload_len == f.len();
                    assert!(!shape, "plain refused a frame it serves: {f:02x?}");
                }
                false
            }
        }
    }

    #[test]
    fn plain_path_agrees_with_the_general_parser() {
        let p = vxlan_packet();
        assert!(plain_agrees(&p));
        // Every single bit flipped, and every length.
        for bit in 0..p.len() * 8 {
            let mut f = p;
            f[bit / 8] ^= 1 << (bit % 8);
            plain_agrees(&f);
            // With the checksum made right again, so that the checks after
            // it are reached.
            if (14..34).contains(&(bit / 8)) && f[14] & 0x0f == 5 {
                refill_ip_checksum(&mut f);
                plain_agrees(&f);
            }
        }
        for len in 0..=p.len() {
            plain_agrees(&p[..len]);
        }
        // Random lengths, fields and damage, consistent more often than not.
        let mut rng = XorShift(0x0dd_ba11_cafe_f00d);
        let mut accepted = 0;
        let mut buf = [0u8; 200];
        for round in 0..100_000 {
            let len = 34 + (rng.next_u64() % 160) as usize;
            buf[..OUTER_LEN].copy_from_slice(&VXLAN_OUTER);
            for b in buf[OUTER_LEN..len.max(OUTER_LEN)].iter_mut() {
                *b = rng.next_u64() as u8;
            }
            let total = len as u64 - 14 + [0, 0, 0, 1, 2, 0x10000 - 1][round % 6];
            buf[16..18].copy_from_slice(&(total as u16).to_be_bytes());
            let udp = total - 20 + [0, 0, 1, 0xfff8][round % 4];
            buf[38..40].copy_from_slice(&(udp as u16).to_be_bytes());
            let r = rng.next_u64();
            if round % 3 == 0 {
                let at = (r % (len as u64 * 8)) as usize;
                buf[at / 8] ^= 1 << (at % 8);
            }
            if round % 5 != 0 && buf[14] & 0x0f >= 5 && len >= 14 + usize::from(buf[14] & 0x0f) * 4
            {
                refill_ip_checksum(&mut buf[..len]);
            }
            accepted += usize::from(plain_agrees(&buf[..len]));
        }
        assert!(accepted > 10_000, "{accepted} accepted");
    }

    #[test]
    fn unrolled_header_check_agrees_with_checksum() {
        let mut rng = XorShift(0x1234_5678_9abc_def1);
        let mut valid = 0;
        for round in 0..100_000 {
            let mut h = [0u8; 20];
            for b in h.iter_mut() {
                *b = rng.next_u64() as u8;
            }
            if round % 2 == 0 {
                // fill_checksum sums IHL words: make it the whole 20 bytes.
                h[0] = 0x45;
                Ipv4Packet::new_unchecked(&mut h[..]).fill_checksum();
            }
            let want = checksum(&h) == 0;
            assert_eq!(ipv4_header_sums_to_ones(&h), want, "{h:02x?}");
            valid += usize::from(want);
        }
        assert!(valid >= 50_000);
        for h in [[0u8; 20], [0xff; 20]] {
            assert_eq!(ipv4_header_sums_to_ones(&h), checksum(&h) == 0);
        }
    }

    #[test]
    fn random_garbage_never_panics() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut buf = [0u8; 160];
        let mut parsed = 0;
        for round in 0..50_000 {
            let len = (rng.next_u64() % 161) as usize;
            for b in buf[..len].iter_mut() {
                *b = rng.next_u64() as u8;
            }
            // Bias rounds towards frames that pass the early checks.
            if round % 2 == 0 && len >= 34 {
                buf[12..14].copy_from_slice(&[0x08, 0x00]);
                buf[14] = 0x45;
                buf[23] = protocol::UDP;
                let total = (rng.next_u64() % (len as u64 - 13)) as u16;
                buf[16..18].copy_from_slice(&total.to_be_bytes());
                buf[20..22].copy_from_slice(&[0x40, 0]);
                if total >= 28 && round % 4 == 0 {
                    buf[38..40].copy_from_slice(&(total - 20).to_be_bytes());
                }
                refill_ip_checksum(&mut buf[..len]);
            }
            if let Ok(o) = parse_outer(&buf[..len]) {
                let end = o.payload_offset + o.payload_len;
                assert!(end <= len);
                let payload = &buf[o.payload_offset..end];
                if let Ok((_, hl)) = geneve_vni(payload) {
                    assert!(hl <= payload.len());
                }
                let _ = vxlan_vni(payload);
                parsed += 1;
            }
            let _ = source_port(&buf[..len]);
        }
        // Some random frames must get through, or only the rejections ran.
        assert!(parsed > 100, "{parsed} parsed");
    }

    #[test]
    fn source_port_is_stable_per_flow_and_in_range() {
        let a = inner_frame(1000);
        assert_eq!(source_port(&a), source_port(&a));
        // Payload bytes are not part of the flow.
        let mut a2 = a;
        a2[60] ^= 0xff;
        assert_eq!(source_port(&a), source_port(&a2));
        // The TCP source port is.
        assert_ne!(source_port(&a), source_port(&inner_frame(1001)));
        for f in [&a[..], &[][..], &a[..13], &a[..20]] {
            assert!(source_port(f) >= 49152);
        }
    }

    #[test]
    fn fast_path_hashes_as_the_general_walk() {
        let mut rng = XorShift(0x0bad_5eed_0bad_5eed);
        let mut fast = 0;
        for round in 0..20_000 {
            let mut f = [0u8; 64];
            for b in f.iter_mut() {
                *b = rng.next_u64() as u8;
            }
            if round % 4 != 0 {
                f[12..15].copy_from_slice(&[0x08, 0x00, 0x45]);
                f[23] = [protocol::TCP, protocol::UDP, 1][round % 3];
                if round % 5 == 0 {
                    f[20..22].copy_from_slice(&[0x40, 0]);
                }
            }
            let len = 14 + (rng.next_u64() % 51) as usize;
            let f = &f[..len];
            assert_eq!(source_port(f), source_port_walk(f), "{f:02x?}");
            fast += usize::from(len >= 38 && f[12..15] == [0x08, 0x00, 0x45]);
        }
        assert!(fast > 5_000, "{fast} frames took the fast path");
    }

    #[test]
    fn ipv4_fragments_hash_without_ports() {
        let first = {
            let mut f = inner_frame(1000);
            f[20] = 0x20; // MF, offset 0: carries the ports
            f
        };
        let mut later = inner_frame(4242); // other bytes where ports would be
        later[21] = 0x10; // offset 128 bytes
        assert_eq!(source_port(&first), source_port(&later));
    }

    /// Counts distinct ports and checks that no 16th of the range gets more
    /// than twice its share.
    fn assert_spread(ports: &[u16]) {
        let mut seen = std::collections::HashSet::new();
        let mut buckets = [0usize; 16];
        for &p in ports {
            assert!(p >= 49152);
            seen.insert(p);
            buckets[usize::from((p - 49152) >> 10)] += 1;
        }
        let n = ports.len();
        // 4096 flows into 16384 ports: about 3 600 distinct if uniform.
        assert!(seen.len() > n * 8 / 10, "{} distinct of {n}", seen.len());
        for (i, &b) in buckets.iter().enumerate() {
            assert!(b < 2 * n / 16 && b > n / 32, "bucket {i}: {b} of {n}");
        }
    }

    #[test]
    fn different_flows_spread_over_the_port_range() {
        // TCP source ports.
        let tcp: Vec<u16> = (0..4096u16)
            .map(|i| source_port(&inner_frame(1000 + i)))
            .collect();
        assert_spread(&tcp);
        // Inner source addresses only (same ports and MACs).
        let addrs: Vec<u16> = (0..4096u32)
            .map(|i| {
                let mut f = inner_frame(1000);
                f[26..30].copy_from_slice(&(0x0a00_0000 + i).to_be_bytes());
                source_port(&f)
            })
            .collect();
        assert_spread(&addrs);
        // MACs only (not IP).
        let macs: Vec<u16> = (0..4096u32)
            .map(|i| {
                let mut f = [0u8; 60];
                f[6..12].copy_from_slice(&[2, 0, 0, 0, (i >> 8) as u8, i as u8]);
                f[12..14].copy_from_slice(&[0x08, 0x06]);
                source_port(&f)
            })
            .collect();
        assert_spread(&macs);
        // Source MAC and address changing together, the MAC embedding the
        // address (02:42:ac:11:x:y for 172.17.x.y, as container runtimes
        // assign them).
        let embedded: Vec<u16> = (0..4096u32)
            .map(|i| {
                let mut f = inner_frame(1000);
                let ip = [172, 17, (i >> 8) as u8, i as u8];
                f[6..12].copy_from_slice(&[0x02, 0x42, ip[0], ip[1], ip[2], ip[3]]);
                f[26..30].copy_from_slice(&ip);
                source_port(&f)
            })
            .collect();
        assert_spread(&embedded);
    }

    #[test]
    fn tagged_and_ipv6_flows_hash_their_l4_ports() {
        // 802.1Q tag, then the same IPv4/TCP packet.
        let tagged = |port: u16| {
            let f = inner_frame(port);
            let mut t = [0u8; 68];
            t[..12].copy_from_slice(&f[..12]);
            t[12..16].copy_from_slice(&[0x81, 0x00, 0x00, 0x0a]);
            t[16..].copy_from_slice(&f[12..]);
            t
        };
        let v: Vec<u16> = (0..4096).map(|i| source_port(&tagged(i))).collect();
        assert_spread(&v);
        // IPv6/UDP: ports at 54..58.
        let v6 = |port: u16| {
            let mut f = [0u8; 80];
            f[12..14].copy_from_slice(&[0x86, 0xdd]);
            f[14] = 0x60;
            f[20] = protocol::UDP;
            f[22..38].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            f[38..54].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
            f[54..56].copy_from_slice(&port.to_be_bytes());
            f[56..58].copy_from_slice(&53u16.to_be_bytes());
            f
        };
        assert_eq!(source_port(&v6(7)), source_port(&v6(7)));
        let v: Vec<u16> = (0..4096).map(|i| source_port(&v6(i))).collect();
        assert_spread(&v);
    }
}
