//! IEEE 802.1Q VLAN tags (C-TAG, and the S-TAG of 802.1ad Q-in-Q).
//!
//! Layer: wire (lowest). No I/O or allocation. On the packet path.
//!
//! The view starts right after the tag's TPID (the 0x8100 / 0x88a8 EtherType
//! that [`super::EthFrame::ethertype`] returns), i.e. at byte 14 of a tagged
//! frame (IEEE 802.1Q-2018 clause 9.6):
//!
//! ```text
//! 0                   2          4
//! | PCP:3 DEI:1 VID:12 | ethertype | payload ...
//! ```

use crate::ids::VlanId;

use super::{need, WireError};

/// Length of the tag after the TPID: TCI and encapsulated EtherType.
pub const HEADER_LEN: usize = 4;

/// Bits of the TCI holding the VLAN id.
pub const VID_MASK: u16 = 0x0fff;

const DEI_BIT: u16 = 0x1000;
const PCP_SHIFT: u32 = 13;

mod field {
    pub const TCI: usize = 0;
    pub const ETHERTYPE: usize = 2;
}

header_view! {
    /// A view of an 802.1Q tag's TCI and encapsulated EtherType.
    pub struct VlanTag;

    /// Wraps `buf` without checking its length.
    ///
    /// Accessors panic if `buf` is shorter than [`HEADER_LEN`].
    fn new_unchecked;

    /// Wraps `buf` after checking it holds a full tag.
    ///
    /// # Errors
    ///
    /// [`WireError::Truncated`] if `buf` is shorter than [`HEADER_LEN`].
    fn new_checked = check_len;
}

fields! {
    VlanTag {
        /// The raw 16-bit Tag Control Information.
        tci, set_tci: u16 = field::TCI;
        /// EtherType of what follows the tag (the L3 protocol, or another TPID
        /// when tags are stacked).
        ethertype, set_ethertype: u16 = field::ETHERTYPE;
    }
}

impl<T: AsRef<[u8]>> VlanTag<T> {
    /// Checks that the buffer holds a full tag.
    ///
    /// # Errors
    ///
    /// [`WireError::Truncated`] if it does not.
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        need(self.buf.as_ref().len(), HEADER_LEN)
    }

    /// Priority Code Point (0..=7).
    #[inline]
    pub fn pcp(&self) -> u8 {
        (self.tci() >> PCP_SHIFT) as u8
    }

    /// Drop Eligible Indicator.
    #[inline]
    pub fn dei(&self) -> bool {
        self.tci() & DEI_BIT != 0
    }

    /// VLAN id (0..=4095); 0 marks a priority-only tag.
    #[inline]
    pub fn vid(&self) -> VlanId {
        VlanId(self.tci() & VID_MASK)
    }

    /// Everything after the tag.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VlanTag<T> {
    /// Sets the Priority Code Point; only the low three bits of `pcp` are used.
    #[inline]
    pub fn set_pcp(&mut self, pcp: u8) {
        let keep = self.tci() & !(0x7 << PCP_SHIFT);
        self.set_tci(keep | (u16::from(pcp & 0x7) << PCP_SHIFT));
    }

    /// Sets the Drop Eligible Indicator.
    #[inline]
    pub fn set_dei(&mut self, dei: bool) {
        let keep = self.tci() & !DEI_BIT;
        self.set_tci(if dei { keep | DEI_BIT } else { keep });
    }

    /// Sets the VLAN id, keeping PCP and DEI; only the low 12 bits of `vid`
    /// are used.
    #[inline]
    pub fn set_vid(&mut self, vid: VlanId) {
        let keep = self.tci() & !VID_MASK;
        self.set_tci(keep | (vid.0 & VID_MASK));
    }

    /// Mutable access to everything after the tag.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buf.as_mut()[HEADER_LEN..]
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::ethernet::{self, ethertype, EthFrame};
    use std::hint::black_box;

    /// Reads every field; used by the prefix and random-buffer tests.
    pub(crate) fn read_all_fields<T: AsRef<[u8]>>(t: &VlanTag<T>) {
        black_box((t.tci(), t.pcp(), t.dei(), t.vid(), t.ethertype()));
        black_box(t.payload().len());
    }

    /// Tagged frame: C-TAG with PCP 3, DEI 1, VID 42, carrying ARP.
    #[rustfmt::skip]
    const TAGGED_ARP_HEAD: [u8; 22] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56,
        0x81, 0x00,
        // TCI 0b011_1_0000_0010_1010 = 0x702a
        0x70, 0x2a,
        0x08, 0x06,
        0x00, 0x01, 0x08, 0x00,
    ];

    #[test]
    fn tci_fields_decode() {
        let eth = EthFrame::new_checked(&TAGGED_ARP_HEAD[..]).unwrap();
        assert_eq!(eth.ethertype(), ethertype::VLAN);
        let tag = VlanTag::new_checked(eth.payload()).unwrap();
        assert_eq!(tag.tci(), 0x702a);
        assert_eq!(tag.pcp(), 3);
        assert!(tag.dei());
        assert_eq!(tag.vid(), VlanId(42));
        assert_eq!(tag.ethertype(), ethertype::ARP);
        assert_eq!(tag.payload(), &[0x00, 0x01, 0x08, 0x00]);
    }

    #[test]
    fn truncated_vlan_header_is_rejected() {
        let after_tpid = &TAGGED_ARP_HEAD[ethernet::HEADER_LEN..];
        for len in 0..HEADER_LEN {
            assert_eq!(
                VlanTag::new_checked(&after_tpid[..len]),
                Err(WireError::Truncated {
                    needed: 4,
                    got: len
                })
            );
        }
        let t = VlanTag::new_checked(&after_tpid[..HEADER_LEN]).unwrap();
        assert!(t.payload().is_empty());
    }

    #[test]
    fn every_prefix_parses_or_fails_cleanly() {
        let after_tpid = &TAGGED_ARP_HEAD[ethernet::HEADER_LEN..];
        for len in 0..=after_tpid.len() {
            if let Ok(t) = VlanTag::new_checked(&after_tpid[..len]) {
                read_all_fields(&t);
            }
        }
    }

    #[test]
    fn setters_round_trip_without_disturbing_other_fields() {
        let mut buf = [0u8; 6];
        let mut t = VlanTag::new_checked(&mut buf[..]).unwrap();
        t.set_vid(VlanId(4095));
        t.set_pcp(7);
        t.set_dei(true);
        t.set_ethertype(ethertype::IPV4);
        assert_eq!(t.tci(), 0xffff);

        t.set_pcp(2);
        assert_eq!((t.pcp(), t.dei(), t.vid()), (2, true, VlanId(4095)));
        t.set_dei(false);
        assert_eq!((t.pcp(), t.dei(), t.vid()), (2, false, VlanId(4095)));
        t.set_vid(VlanId(100));
        assert_eq!((t.pcp(), t.dei(), t.vid()), (2, false, VlanId(100)));
        assert_eq!(t.ethertype(), ethertype::IPV4);

        t.payload_mut().copy_from_slice(&[0xab, 0xcd]);
        assert_eq!(t.into_inner(), &[0x40, 0x64, 0x08, 0x00, 0xab, 0xcd]);
    }

    #[test]
    fn out_of_range_inputs_are_masked() {
        let mut buf = [0u8; 4];
        let mut t = VlanTag::new_unchecked(&mut buf);
        t.set_vid(VlanId(0x1064));
        t.set_pcp(0xff);
        assert_eq!(t.vid(), VlanId(0x064));
        assert_eq!(t.pcp(), 7);
        assert!(!t.dei());
    }

    #[test]
    fn building_tag_reproduces_fixture() {
        let mut buf = TAGGED_ARP_HEAD;
        buf[14..18].fill(0);
        let mut t = VlanTag::new_unchecked(&mut buf[14..]);
        t.set_pcp(3);
        t.set_dei(true);
        t.set_vid(VlanId(42));
        t.set_ethertype(ethertype::ARP);
        assert_eq!(buf, TAGGED_ARP_HEAD);
    }
}
