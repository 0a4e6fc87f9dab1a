//! Receive filters: which destination addresses a port takes, as a NIC's
//! address filter does, for the frames the switch sends to it.
//!
//! Layer: switch. [`RxFilter::admits`] runs on the packet path, at egress,
//! only for ports whose policy has a filter ([`super::pipeline::Features::RX_FILTER`]);
//! building one runs on the control side.
//!
//! A filter comes from two sources: the port's own addresses (its `mac` and
//! `allowed_macs`) and, for a virtio-net guest that negotiated
//! VIRTIO_NET_F_CTRL_RX, the modes and MAC tables the guest set
//! ([`GuestRxMode`], virtio 1.2 §5.1.6.5.1 and §5.1.6.5.2). Broadcast always
//! passes; unicast passes if promiscuous, or the address is one of the
//! port's or the guest's; multicast passes if promiscuous, all-multicast or
//! in the guest's multicast table. A port without addresses and a guest
//! that set nothing has no filter at all.

use crate::ids::MacAddr;

/// Most entries a guest's unicast or multicast table holds; a longer table
/// makes its class pass whole (as a NIC whose filter overflows goes
/// promiscuous for that class).
pub const MAX_TABLE_ENTRIES: usize = 64;

/// The receive modes and tables a guest asked for with its control queue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestRxMode {
    /// VIRTIO_NET_CTRL_RX_PROMISC: every frame.
    pub promisc: bool,
    /// VIRTIO_NET_CTRL_RX_ALLMULTI: every multicast frame.
    pub all_multi: bool,
    /// The unicast table was longer than [`MAX_TABLE_ENTRIES`]: every
    /// unicast frame.
    pub uni_overflow: bool,
    /// The multicast table was longer than [`MAX_TABLE_ENTRIES`]: every
    /// multicast frame.
    pub multi_overflow: bool,
    /// The address the guest set with VIRTIO_NET_CTRL_MAC_ADDR_SET.
    pub addr: Option<MacAddr>,
    /// The unicast table (at most [`MAX_TABLE_ENTRIES`]).
    pub unicast: Vec<MacAddr>,
    /// The multicast table (at most [`MAX_TABLE_ENTRIES`]).
    pub multicast: Vec<MacAddr>,
}

/// A port's receive filter, as the switch applies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RxFilter {
    promisc: bool,
    all_uni: bool,
    all_multi: bool,
    /// [`MacAddr::to_u64`] words.
    unicast: Box<[u64]>,
    multicast: Box<[u64]>,
}

const BROADCAST: u64 = 0xffff_ffff_ffff;
const GROUP_BIT: u64 = 1 << 40;

impl RxFilter {
    /// The filter of a port whose own addresses are `own` (its `mac` and
    /// allowed MACs) and whose guest set `guest` (None: it set nothing, or
    /// cannot). None when nothing is filtered: no own address and no guest
    /// state, or a promiscuous guest.
    pub fn new(own: &[MacAddr], guest: Option<&GuestRxMode>) -> Option<RxFilter> {
        let words = |m: &[MacAddr]| -> Box<[u64]> {
            let mut w: Vec<u64> = m.iter().map(|a| a.to_u64()).collect();
            w.sort_unstable();
            w.dedup();
            w.into_boxed_slice()
        };
        let unicast_own: Vec<MacAddr> = own.iter().copied().filter(|m| m.is_unicast()).collect();
        match guest {
            None if unicast_own.is_empty() => None,
            // Without the guest's tables, multicast is not filtered: the
            // guest may need any group (IPv6 neighbour discovery, mDNS).
            None => Some(RxFilter {
                promisc: false,
                all_uni: false,
                all_multi: true,
                unicast: words(&unicast_own),
                multicast: Box::new([]),
            }),
            Some(g) if g.promisc => None,
            Some(g) => {
                let mut uni = unicast_own;
                uni.extend(g.addr.iter().copied().filter(|m| m.is_unicast()));
                uni.extend(g.unicast.iter().copied().filter(|m| m.is_unicast()));
                let multi: Vec<MacAddr> = g
                    .multicast
                    .iter()
                    .copied()
                    .filter(|m| m.is_multicast())
                    .collect();
                Some(RxFilter {
                    promisc: false,
                    all_uni: g.uni_overflow,
                    all_multi: g.all_multi || g.multi_overflow,
                    unicast: words(&uni),
                    multicast: words(&multi),
                })
            }
        }
    }

    /// Whether a frame to destination `dst` (a [`MacAddr::to_u64`] word)
    /// passes.
    #[inline]
    pub fn admits(&self, dst: u64) -> bool {
        if dst & GROUP_BIT == 0 {
            // Both lists are sorted (`new`): up to 64 addresses a guest set,
            // plus the port's own.
            self.promisc || self.all_uni || self.unicast.binary_search(&dst).is_ok()
        } else {
            dst == BROADCAST
                || self.promisc
                || self.all_multi
                || self.multicast.binary_search(&dst).is_ok()
        }
    }

    /// One line for `weir port show`: `unicast N[+all] multicast M|all`.
    pub fn summary(&self) -> String {
        let uni = if self.all_uni {
            "all".to_owned()
        } else {
            self.unicast.len().to_string()
        };
        let multi = if self.all_multi {
            "all".to_owned()
        } else {
            self.multicast.len().to_string()
        };
        format!("unicast {uni} multicast {multi}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
    const OTHER: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 2]);
    const GUEST: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 9]);
    const MCAST: MacAddr = MacAddr([0x33, 0x33, 0, 0, 0, 1]);
    const MCAST2: MacAddr = MacAddr([0x01, 0, 0x5e, 0, 0, 0xfb]);
    const BCAST: MacAddr = MacAddr([0xff; 6]);

    fn admits(f: &RxFilter, m: MacAddr) -> bool {
        f.admits(m.to_u64())
    }

    #[test]
    fn a_port_without_addresses_or_guest_state_has_no_filter() {
        assert_eq!(RxFilter::new(&[], None), None);
        assert_eq!(
            RxFilter::new(&[MCAST], None),
            None,
            "a group address is no own MAC"
        );
    }

    #[test]
    fn without_guest_state_unicast_is_filtered_to_the_ports_mac_and_groups_pass() {
        let f = RxFilter::new(&[OWN], None).unwrap();
        assert!(admits(&f, OWN));
        assert!(!admits(&f, OTHER));
        assert!(admits(&f, BCAST));
        assert!(admits(&f, MCAST));
    }

    #[test]
    fn a_guest_that_set_its_tables_gets_its_unicast_and_multicast_only() {
        let g = GuestRxMode {
            addr: Some(GUEST),
            multicast: vec![MCAST],
            ..GuestRxMode::default()
        };
        let f = RxFilter::new(&[OWN], Some(&g)).unwrap();
        assert!(admits(&f, OWN), "the port's own mac");
        assert!(admits(&f, GUEST), "the address the guest set");
        assert!(!admits(&f, OTHER));
        assert!(admits(&f, BCAST));
        assert!(admits(&f, MCAST));
        assert!(!admits(&f, MCAST2));
        let f = RxFilter::new(
            &[],
            Some(&GuestRxMode {
                unicast: vec![OTHER],
                ..GuestRxMode::default()
            }),
        )
        .unwrap();
        assert!(admits(&f, OTHER) && !admits(&f, OWN) && admits(&f, BCAST));
        assert!(!admits(&f, MCAST));
    }

    #[test]
    fn all_multicast_and_overflow_open_one_class_and_promiscuous_both() {
        let all_multi = GuestRxMode {
            all_multi: true,
            ..GuestRxMode::default()
        };
        let f = RxFilter::new(&[OWN], Some(&all_multi)).unwrap();
        assert!(admits(&f, MCAST) && admits(&f, MCAST2) && !admits(&f, OTHER));
        let all_uni = GuestRxMode {
            uni_overflow: true,
            ..GuestRxMode::default()
        };
        let f = RxFilter::new(&[OWN], Some(&all_uni)).unwrap();
        assert!(admits(&f, OTHER) && !admits(&f, MCAST) && admits(&f, BCAST));
        let promisc = GuestRxMode {
            promisc: true,
            ..GuestRxMode::default()
        };
        assert_eq!(RxFilter::new(&[OWN], Some(&promisc)), None);
    }
}
