//! IPv4 headers (RFC 791) and the Internet checksum (RFC 1071).
//!
//! Layer: wire (lowest). No I/O or allocation. On the packet path (the
//! checksum functions back software checksum offload).
//!
//! ```text
//! 0        1        2                 4
//! |ver|ihl | tos    | total length    |
//! | identification  |flg| frag offset |
//! | ttl    | proto  | header checksum |
//! | source address                    |
//! | destination address               |
//! | options (ihl > 5) ...             |
//! ```

use std::net::Ipv4Addr;

use super::{get_u16, need, put_u16, WireError};

/// Length of a header without options (IHL = 5).
pub const MIN_HEADER_LEN: usize = 20;

/// Longest possible header (IHL = 15).
pub const MAX_HEADER_LEN: usize = 60;

/// IP protocol numbers, shared by the IPv4 protocol field and the IPv6 next
/// header field.
///
/// Source: IANA "Assigned Internet Protocol Numbers" registry,
/// <https://www.iana.org/assignments/protocol-numbers/>.
pub mod protocol {
    /// IPv6 Hop-by-Hop Options (RFC 8200).
    pub const HOPOPT: u8 = 0;
    /// Internet Control Message Protocol (RFC 792).
    pub const ICMP: u8 = 1;
    /// Transmission Control Protocol (RFC 9293).
    pub const TCP: u8 = 6;
    /// User Datagram Protocol (RFC 768).
    pub const UDP: u8 = 17;
    /// ICMP for IPv6 (RFC 4443).
    pub const ICMPV6: u8 = 58;
}

mod field {
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const TOTAL_LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

header_view! {
    /// A view of an IPv4 packet.
    ///
    /// The buffer may extend past `total_len` (Ethernet padding); [`payload`]
    /// stops at `total_len`.
    ///
    /// [`payload`]: Ipv4Packet::payload
    pub struct Ipv4Packet;

    /// Wraps `buf` without checking it.
    ///
    /// Fixed-field accessors panic if `buf` is shorter than
    /// [`MIN_HEADER_LEN`].
    fn new_unchecked;

    /// Wraps `buf` after checking version and lengths.
    ///
    /// # Errors
    ///
    /// - [`WireError::Truncated`] if `buf` is shorter than 20 bytes, than the
    ///   header length, or than the total length.
    /// - [`WireError::BadVersion`] if the version is not 4.
    /// - [`WireError::Malformed`] if IHL < 5 or total length < header length.
    fn new_checked = check;
}

fields! {
    Ipv4Packet {
        /// Type of service byte (DSCP and ECN).
        tos, set_tos: u8 = field::TOS;
        /// Total length in bytes, header included.
        total_len, set_total_len: u16 = field::TOTAL_LEN;
        /// Identification.
        ident, set_ident: u16 = field::IDENT;
        /// Time to live.
        ttl, set_ttl: u8 = field::TTL;
        /// Protocol of the payload; see [`protocol`].
        protocol, set_protocol: u8 = field::PROTOCOL;
        /// Header checksum as stored; its setter stores a value unverified.
        checksum, set_checksum: u16 = field::CHECKSUM;
        /// Source address.
        src, set_src: Ipv4Addr = field::SRC;
        /// Destination address.
        dst, set_dst: Ipv4Addr = field::DST;
    }
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Checks version and lengths; see [`Ipv4Packet::new_checked`].
    ///
    /// # Errors
    ///
    /// As [`Ipv4Packet::new_checked`].
    pub fn check(&self) -> Result<(), WireError> {
        let len = self.buf.as_ref().len();
        need(len, MIN_HEADER_LEN)?;
        let version = self.version();
        if version != 4 {
            return Err(WireError::BadVersion {
                expected: 4,
                got: version,
            });
        }
        let header_len = self.header_len();
        if header_len < MIN_HEADER_LEN {
            return Err(WireError::Malformed("IPv4 IHL below 5"));
        }
        need(len, header_len)?;
        let total_len = usize::from(self.total_len());
        if total_len < header_len {
            return Err(WireError::Malformed(
                "IPv4 total length shorter than header",
            ));
        }
        need(len, total_len)
    }

    /// IP version (4 for a checked view).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buf.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4), options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buf.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// Differentiated Services Code Point (upper six bits of the ToS byte).
    #[inline]
    pub fn dscp(&self) -> u8 {
        self.tos() >> 2
    }

    /// Explicit Congestion Notification (lower two bits of the ToS byte).
    #[inline]
    pub fn ecn(&self) -> u8 {
        self.tos() & 0x3
    }

    /// Don't Fragment flag.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        get_u16(self.buf.as_ref(), field::FLAGS_FRAG) & FLAG_DF != 0
    }

    /// More Fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        get_u16(self.buf.as_ref(), field::FLAGS_FRAG) & FLAG_MF != 0
    }

    /// Fragment offset in bytes (the field counts 8-byte units).
    #[inline]
    pub fn frag_offset_bytes(&self) -> u16 {
        (get_u16(self.buf.as_ref(), field::FLAGS_FRAG) & FRAG_OFFSET_MASK) * 8
    }

    /// True if this packet is a fragment (MF set or a non-zero offset).
    #[inline]
    pub fn is_fragment(&self) -> bool {
        get_u16(self.buf.as_ref(), field::FLAGS_FRAG) & (FLAG_MF | FRAG_OFFSET_MASK) != 0
    }

    /// Byte range of the header and of the payload, clamped to the buffer so
    /// that a checked view whose length fields were later rewritten by a
    /// setter still never panics.
    #[inline]
    fn bounds(&self) -> (usize, usize) {
        let len = self.buf.as_ref().len();
        let start = self.header_len().min(len);
        let end = usize::from(self.total_len()).clamp(start, len);
        (start, end)
    }

    /// The header, options included.
    #[inline]
    pub fn header(&self) -> &[u8] {
        let (start, _) = self.bounds();
        &self.buf.as_ref()[..start]
    }

    /// Header options (empty when IHL = 5).
    #[inline]
    pub fn options(&self) -> &[u8] {
        let (start, _) = self.bounds();
        let b = self.buf.as_ref();
        &b[MIN_HEADER_LEN.min(start)..start]
    }

    /// The payload: from the end of the header to `total_len`.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let (start, end) = self.bounds();
        &self.buf.as_ref()[start..end]
    }

    /// True if the header checksum is correct.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum(self.header()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Writes version 4 and the IHL for a header of `len_bytes` bytes.
    ///
    /// `len_bytes` should be a multiple of 4 in 20..=60; other values are
    /// truncated to what the 4-bit IHL field can hold.
    #[inline]
    pub fn set_header_len(&mut self, len_bytes: usize) {
        let ihl = ((len_bytes / 4) & 0x0f) as u8;
        self.buf.as_mut()[field::VER_IHL] = 0x40 | ihl;
    }

    fn set_flag_bit(&mut self, bit: u16, on: bool) {
        let v = get_u16(self.buf.as_ref(), field::FLAGS_FRAG);
        let v = if on { v | bit } else { v & !bit };
        put_u16(self.buf.as_mut(), field::FLAGS_FRAG, v);
    }

    /// Sets the Don't Fragment flag.
    #[inline]
    pub fn set_dont_frag(&mut self, on: bool) {
        self.set_flag_bit(FLAG_DF, on);
    }

    /// Sets the More Fragments flag.
    #[inline]
    pub fn set_more_frags(&mut self, on: bool) {
        self.set_flag_bit(FLAG_MF, on);
    }

    /// Sets the fragment offset; `offset_bytes` is rounded down to a multiple
    /// of 8.
    #[inline]
    pub fn set_frag_offset_bytes(&mut self, offset_bytes: u16) {
        let v = get_u16(self.buf.as_ref(), field::FLAGS_FRAG) & !FRAG_OFFSET_MASK;
        put_u16(self.buf.as_mut(), field::FLAGS_FRAG, v | (offset_bytes / 8));
    }

    /// Computes the header checksum and stores it. Call after the last
    /// header change.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum(self.header());
        self.set_checksum(sum);
    }

    /// Mutable access to the payload (see [`Ipv4Packet::payload`]).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (start, end) = self.bounds();
        &mut self.buf.as_mut()[start..end]
    }
}

/// Folds a wide one's-complement accumulator to 16 bits (end-around carry).
///
/// The result is the one's-complement sum, not yet inverted.
#[inline]
pub fn fold(mut sum: u64) -> u16 {
    // At most four rounds: each one shrinks a 64-bit value by ~16 bits.
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// One's-complement sum of `a` and `b`, two folded partial sums.
///
/// To sum a message in pieces, every piece except the last must have an even
/// length, so that each starts on a 16-bit word boundary.
#[inline]
pub fn combine(a: u16, b: u16) -> u16 {
    fold(u64::from(a) + u64::from(b))
}

/// RFC 1071 one's-complement sum of `data` as big-endian 16-bit words, folded
/// but not inverted. An odd trailing byte is padded with a zero byte.
///
/// Use it for partial sums (pseudo headers, chained segments) and finish with
/// `!`; [`checksum`] does both for a contiguous buffer.
#[inline]
pub fn ones_complement_sum(data: &[u8]) -> u16 {
    // Adding 32-bit words into a 64-bit accumulator is equivalent to adding
    // 16-bit words, since 2^16 ≡ 1 (mod 2^16 - 1), and halves the iterations.
    // The accumulator cannot overflow below 16 GiB of input.
    let mut acc: u64 = 0;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    acc += match *words.remainder() {
        [] => 0,
        [a] => u64::from(a) << 8,
        [a, b] => u64::from(u16::from_be_bytes([a, b])),
        [a, b, c] => u64::from(u16::from_be_bytes([a, b])) + (u64::from(c) << 8),
        // chunks_exact(4) leaves fewer than four bytes.
        _ => 0,
    };
    fold(acc)
}

/// The Internet checksum of `data` (RFC 1071): the inverted one's-complement
/// sum. A buffer that contains its own correct checksum yields 0.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !ones_complement_sum(data)
}

/// One's-complement sum of the TCP/UDP pseudo header for IPv4 (RFC 9293
/// section 3.1, RFC 768): source, destination, zero, protocol, L4 length.
///
/// Combine it with the L4 header and payload sum, then invert.
#[inline]
pub fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, l4_len: u16) -> u16 {
    let s = u32::from(src);
    let d = u32::from(dst);
    let acc = u64::from(s) + u64::from(d) + u64::from(protocol) + u64::from(l4_len);
    fold(acc)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::hint::black_box;

    /// Reads every field; used by the prefix and random-buffer tests.
    pub(crate) fn read_all_fields<T: AsRef<[u8]>>(p: &Ipv4Packet<T>) {
        black_box((p.version(), p.header_len(), p.tos(), p.dscp(), p.ecn()));
        black_box((p.total_len(), p.ident(), p.dont_frag(), p.more_frags()));
        black_box((p.frag_offset_bytes(), p.is_fragment(), p.ttl()));
        black_box((p.protocol(), p.checksum(), p.src(), p.dst()));
        black_box((p.header().len(), p.options().len(), p.payload().len()));
        black_box(p.verify_checksum());
    }

    /// ICMP echo request 192.168.0.2 -> 192.168.0.1, DF, TTL 64, id 1 seq 7,
    /// 32 bytes of data; header checksum 0x9d27, ICMP checksum 0x4d54.
    #[rustfmt::skip]
    pub(crate) const ICMP_ECHO: [u8; 60] = [
        0x45, 0x00, 0x00, 0x3c, 0x1c, 0x46, 0x40, 0x00,
        0x40, 0x01, 0x9d, 0x27, 0xc0, 0xa8, 0x00, 0x02,
        0xc0, 0xa8, 0x00, 0x01,
        // ICMP: type 8, code 0, checksum, identifier 1, sequence 7
        0x08, 0x00, 0x4d, 0x54, 0x00, 0x01, 0x00, 0x07,
        // "abcdefghijklmnopqrstuvwabcdefghi"
        0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
        0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f, 0x70,
        0x71, 0x72, 0x73, 0x74, 0x75, 0x76, 0x77, 0x61,
        0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69,
    ];

    /// Straightforward 16-bit-at-a-time reference for the checksum tests.
    fn reference_sum(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for pair in data.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            acc += u32::from(word);
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    #[test]
    fn icmp_echo_fields_parse() {
        let p = Ipv4Packet::new_checked(&ICMP_ECHO[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.tos(), 0);
        assert_eq!(p.total_len(), 60);
        assert_eq!(p.ident(), 0x1c46);
        assert!(p.dont_frag());
        assert!(!p.more_frags());
        assert_eq!(p.frag_offset_bytes(), 0);
        assert!(!p.is_fragment());
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), protocol::ICMP);
        assert_eq!(p.checksum(), 0x9d27);
        assert_eq!(p.src(), Ipv4Addr::new(192, 168, 0, 2));
        assert_eq!(p.dst(), Ipv4Addr::new(192, 168, 0, 1));
        assert!(p.options().is_empty());
        assert_eq!(p.payload().len(), 40);
        assert_eq!(&p.payload()[..2], &[0x08, 0x00]);
    }

    #[test]
    fn fixture_header_checksum_verifies() {
        let p = Ipv4Packet::new_checked(&ICMP_ECHO[..]).unwrap();
        assert!(p.verify_checksum());
        // The ICMP checksum covers the ICMP message, so it verifies the same way.
        assert_eq!(checksum(p.payload()), 0);
    }

    #[test]
    fn corrupted_header_fails_checksum() {
        let mut buf = ICMP_ECHO;
        buf[8] = 63;
        assert!(!Ipv4Packet::new_checked(&buf[..]).unwrap().verify_checksum());
    }

    #[test]
    fn fill_checksum_reproduces_fixture_value() {
        let mut buf = ICMP_ECHO;
        buf[10..12].copy_from_slice(&[0xde, 0xad]);
        let mut p = Ipv4Packet::new_checked(&mut buf[..]).unwrap();
        assert!(!p.verify_checksum());
        p.fill_checksum();
        assert_eq!(p.checksum(), 0x9d27);
        assert!(p.verify_checksum());
    }

    #[test]
    fn fill_checksum_tracks_ttl_decrement() {
        let mut buf = ICMP_ECHO;
        let mut p = Ipv4Packet::new_checked(&mut buf[..]).unwrap();
        p.set_ttl(p.ttl() - 1);
        assert!(!p.verify_checksum());
        p.fill_checksum();
        assert!(p.verify_checksum());
        // TTL is the high byte of its word: one less TTL adds 0x0100 back.
        assert_eq!(p.checksum(), 0x9e27);
    }

    #[test]
    fn rfc1071_example_sums_as_documented() {
        // RFC 1071 section 3: 0001 f203 f4f5 f6f7 sums to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(ones_complement_sum(&data), 0xddf2);
        assert_eq!(checksum(&data), 0x220d);
    }

    #[test]
    fn odd_length_is_padded_with_zero() {
        assert_eq!(ones_complement_sum(&[0xab]), 0xab00);
        assert_eq!(checksum(&[1, 2, 3]), checksum(&[1, 2, 3, 0]));
        assert_eq!(checksum(&[1, 2, 3, 4, 5]), checksum(&[1, 2, 3, 4, 5, 0]));
        assert_eq!(checksum(&[]), 0xffff);
    }

    #[test]
    fn wide_sum_matches_word_by_word_reference() {
        let mut x: u32 = 0x1234_5678;
        let mut data = [0u8; 1500];
        for b in data.iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        for len in 0..64 {
            assert_eq!(
                ones_complement_sum(&data[..len]),
                reference_sum(&data[..len])
            );
        }
        assert_eq!(ones_complement_sum(&data), reference_sum(&data));
        // All-ones input drives every carry path.
        let ones = [0xffu8; 1501];
        assert_eq!(ones_complement_sum(&ones), reference_sum(&ones));
    }

    #[test]
    fn fold_applies_end_around_carry() {
        assert_eq!(fold(0), 0);
        assert_eq!(fold(0xffff), 0xffff);
        assert_eq!(fold(0x1_0000), 1);
        assert_eq!(fold(0x1_fffe), 0xffff);
        assert_eq!(fold(u64::MAX), 0xffff);
    }

    #[test]
    fn combining_even_split_equals_whole_sum() {
        let whole = ones_complement_sum(&ICMP_ECHO);
        for split in (0..=ICMP_ECHO.len()).step_by(2) {
            let (a, b) = ICMP_ECHO.split_at(split);
            assert_eq!(
                combine(ones_complement_sum(a), ones_complement_sum(b)),
                whole,
                "split {split}"
            );
        }
    }

    #[test]
    fn pseudo_header_sum_matches_hand_computed_value() {
        // 0a00 0001 + 0a00 0002 + 0011 + 000c = 1420
        let s = pseudo_header_sum(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            protocol::UDP,
            12,
        );
        assert_eq!(s, 0x1420);
        let bytes = [10, 0, 0, 1, 10, 0, 0, 2, 0, 17, 0, 12];
        assert_eq!(s, ones_complement_sum(&bytes));
    }

    #[test]
    fn version_other_than_4_is_rejected() {
        let mut buf = ICMP_ECHO;
        buf[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&buf[..]),
            Err(WireError::BadVersion {
                expected: 4,
                got: 6
            })
        );
    }

    #[test]
    fn ihl_below_5_is_rejected() {
        for ihl in 0..5u8 {
            let mut buf = ICMP_ECHO;
            buf[0] = 0x40 | ihl;
            assert!(matches!(
                Ipv4Packet::new_checked(&buf[..]),
                Err(WireError::Malformed(_))
            ));
        }
    }

    #[test]
    fn header_longer_than_buffer_is_rejected() {
        let mut buf = ICMP_ECHO;
        buf[0] = 0x4f; // 60-byte header
        buf[2..4].copy_from_slice(&60u16.to_be_bytes());
        for len in 20..60 {
            assert_eq!(
                Ipv4Packet::new_checked(&buf[..len]),
                Err(WireError::Truncated {
                    needed: 60,
                    got: len
                })
            );
        }
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.options().len(), 40);
        assert!(p.payload().is_empty());
    }

    #[test]
    fn total_len_beyond_buffer_is_truncated() {
        let mut buf = ICMP_ECHO;
        buf[2..4].copy_from_slice(&61u16.to_be_bytes());
        assert_eq!(
            Ipv4Packet::new_checked(&buf[..]),
            Err(WireError::Truncated {
                needed: 61,
                got: 60
            })
        );
    }

    #[test]
    fn total_len_shorter_than_header_is_malformed() {
        let mut buf = ICMP_ECHO;
        buf[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert!(matches!(
            Ipv4Packet::new_checked(&buf[..]),
            Err(WireError::Malformed(_))
        ));
    }

    #[test]
    fn ethernet_padding_is_excluded_from_payload() {
        let mut padded = [0u8; 80];
        padded[..60].copy_from_slice(&ICMP_ECHO);
        let p = Ipv4Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(p.payload(), &ICMP_ECHO[20..]);
    }

    #[test]
    fn options_sit_between_fixed_header_and_payload() {
        let mut buf = [0u8; 28];
        buf[..20].copy_from_slice(&ICMP_ECHO[..20]);
        buf[20..24].copy_from_slice(&[0x94, 0x04, 0x00, 0x00]); // Router Alert
        buf[24..].copy_from_slice(&[1, 2, 3, 4]);
        let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
        p.set_header_len(24);
        p.set_total_len(28);
        p.fill_checksum();
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.options(), &[0x94, 0x04, 0x00, 0x00]);
        assert_eq!(p.payload(), &[1, 2, 3, 4]);
        assert!(p.verify_checksum());
    }

    #[test]
    fn every_prefix_parses_or_fails_cleanly() {
        for len in 0..=ICMP_ECHO.len() {
            match Ipv4Packet::new_checked(&ICMP_ECHO[..len]) {
                Ok(p) => read_all_fields(&p),
                Err(e) => assert!(matches!(e, WireError::Truncated { .. })),
            }
            // The same prefix with total length rewritten to fit it.
            let mut buf = ICMP_ECHO;
            if len >= 4 {
                buf[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            }
            if let Ok(p) = Ipv4Packet::new_checked(&buf[..len]) {
                assert!(len >= MIN_HEADER_LEN);
                assert_eq!(p.payload().len(), len - MIN_HEADER_LEN);
                read_all_fields(&p);
            }
        }
    }

    #[test]
    fn setters_round_trip() {
        let mut buf = [0u8; 24];
        let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
        p.set_header_len(20);
        p.set_tos(0xb8);
        p.set_total_len(24);
        p.set_ident(0xbeef);
        p.set_dont_frag(true);
        p.set_more_frags(true);
        p.set_frag_offset_bytes(1480);
        p.set_ttl(1);
        p.set_protocol(protocol::UDP);
        p.set_src(Ipv4Addr::new(10, 0, 0, 1));
        p.set_dst(Ipv4Addr::new(10, 0, 0, 2));
        p.payload_mut().copy_from_slice(&[9, 8, 7, 6]);
        p.fill_checksum();
        assert!(p.check().is_ok());
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!((p.tos(), p.dscp(), p.ecn()), (0xb8, 46, 0));
        assert_eq!(p.total_len(), 24);
        assert_eq!(p.ident(), 0xbeef);
        assert!(p.dont_frag() && p.more_frags() && p.is_fragment());
        assert_eq!(p.frag_offset_bytes(), 1480);
        p.set_more_frags(false);
        assert!(p.dont_frag() && !p.more_frags());
        assert_eq!(p.frag_offset_bytes(), 1480);
        p.set_dont_frag(false);
        p.set_frag_offset_bytes(0);
        assert!(!p.is_fragment());
        assert_eq!(p.ttl(), 1);
        assert_eq!(p.protocol(), protocol::UDP);
        assert_eq!(p.src(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.dst(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(p.payload(), &[9, 8, 7, 6]);
        p.set_checksum(0x1234);
        assert_eq!(p.checksum(), 0x1234);
    }

    #[test]
    fn rewritten_lengths_never_make_checked_view_panic() {
        let mut buf = ICMP_ECHO;
        buf[2..4].copy_from_slice(&40u16.to_be_bytes());
        let mut p = Ipv4Packet::new_checked(&mut buf[..40]).unwrap();
        p.set_total_len(u16::MAX);
        assert_eq!(p.payload().len(), 20);
        p.set_header_len(MAX_HEADER_LEN);
        assert!(p.payload().is_empty());
        assert_eq!(p.header().len(), 40);
        assert_eq!(p.options().len(), 20);
        p.set_total_len(0);
        assert!(p.payload_mut().is_empty());
        p.fill_checksum();
        assert!(p.verify_checksum());
        read_all_fields(&p);
    }
}
