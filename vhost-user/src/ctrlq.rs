//! The virtio-net control virtqueue's commands (virtio 1.2 §5.1.6.5): what
//! the device answers, and the receive modes and MAC tables a guest sets.
//!
//! Layer: device logic, control side; never on the packet path. Every
//! command is guest input: lengths are checked exactly, counts are never
//! trusted, and a refused command changes nothing.

use dataplane::switch::rxfilter::{GuestRxMode, MAX_TABLE_ENTRIES};
use dataplane::MacAddr;

use crate::defs::ctrl;

/// The longest command read from a chain: class, command and two full MAC
/// tables (a count and [`MAX_TABLE_ENTRIES`] entries each). Only a
/// VIRTIO_NET_CTRL_MAC_TABLE_SET with a longer table is longer; it is read
/// truncated (see [`ctrl_reply`]).
pub const MAX_CMD_BYTES: usize = 2 + 2 * (4 + 6 * MAX_TABLE_ENTRIES);

/// A guest's receive filter state, as its commands left it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RxState {
    /// The guest negotiated VIRTIO_NET_F_CTRL_RX (RX and MAC commands are
    /// refused otherwise).
    pub negotiated: bool,
    /// None until the guest's first RX or MAC command; then what it set,
    /// starting from non-promiscuous with empty tables.
    pub mode: Option<GuestRxMode>,
}

/// The device's answer (VIRTIO_NET_OK or VIRTIO_NET_ERR) to one command:
/// `cmd` holds its driver-readable bytes (class, command, data), cut at
/// [`MAX_CMD_BYTES`] if `truncated`.
///
/// - VIRTIO_NET_CTRL_RX: PROMISC and ALLMULTI with one byte, 0 or 1; the
///   others need VIRTIO_NET_F_CTRL_RX_EXTRA, not offered: ERR.
/// - VIRTIO_NET_CTRL_MAC: TABLE_SET (the unicast table, then the multicast
///   one, each a le32 count and that many 6-byte entries, nothing after) and
///   ADDR_SET (6 bytes, a unicast address). A table of more than
///   [`MAX_TABLE_ENTRIES`] makes its class pass whole; a truncated command
///   can only be such a table, and a table not read whole passes whole too.
/// - RX and MAC commands without CTRL_RX negotiated: ERR.
/// - VIRTIO_NET_CTRL_VLAN: acknowledged and ignored (weir forwards every
///   VLAN the port carries).
/// - VIRTIO_NET_CTRL_MQ VQ_PAIRS_SET: OK for 1..=`queue_pairs` (the pairs
///   the guest does not use stay without started rings).
/// - Anything else: ERR.
///
/// Changes `rx` only for a command it acknowledges.
pub fn ctrl_reply(cmd: &[u8], truncated: bool, queue_pairs: u16, rx: &mut RxState) -> u8 {
    let verdict = match cmd {
        [ctrl::CLASS_RX | ctrl::CLASS_MAC, ..] if !rx.negotiated => None,
        [ctrl::CLASS_RX, c, on] if !truncated => {
            let on = match on {
                0 => false,
                1 => true,
                _ => return ctrl::ERR,
            };
            let mut m = rx.mode.clone().unwrap_or_default();
            match *c {
                ctrl::RX_PROMISC => m.promisc = on,
                ctrl::RX_ALLMULTI => m.all_multi = on,
                _ => return ctrl::ERR,
            }
            Some(m)
        }
        [ctrl::CLASS_MAC, ctrl::MAC_ADDR_SET, a @ ..] if !truncated => {
            let Ok(a) = <[u8; 6]>::try_from(a) else {
                return ctrl::ERR;
            };
            let a = MacAddr(a);
            if !a.is_unicast() {
                return ctrl::ERR;
            }
            let mut m = rx.mode.clone().unwrap_or_default();
            m.addr = Some(a);
            Some(m)
        }
        [ctrl::CLASS_MAC, ctrl::MAC_TABLE_SET, data @ ..] => {
            mac_tables(data, truncated).map(|(uni, multi)| {
                let mut m = rx.mode.clone().unwrap_or_default();
                (m.uni_overflow, m.unicast) = match uni {
                    Table::Entries(e) => (false, e),
                    Table::Overflow => (true, Vec::new()),
                };
                (m.multi_overflow, m.multicast) = match multi {
                    Table::Entries(e) => (false, e),
                    Table::Overflow => (true, Vec::new()),
                };
                m
            })
        }
        [ctrl::CLASS_VLAN, _, ..] if !truncated => return ctrl::OK,
        [ctrl::CLASS_MQ, ctrl::MQ_VQ_PAIRS_SET, lo, hi] => {
            let n = u16::from_le_bytes([*lo, *hi]);
            return if (1..=queue_pairs).contains(&n) {
                ctrl::OK
            } else {
                ctrl::ERR
            };
        }
        _ => None,
    };
    match verdict {
        Some(m) => {
            rx.mode = Some(m);
            ctrl::OK
        }
        None => ctrl::ERR,
    }
}

/// One MAC table of a TABLE_SET.
#[derive(Debug, PartialEq, Eq)]
enum Table {
    Entries(Vec<MacAddr>),
    /// Longer than [`MAX_TABLE_ENTRIES`], or not read whole.
    Overflow,
}

/// Parses TABLE_SET's data: the unicast table, then the multicast one, and
/// nothing after them. None if malformed. With `truncated`, `data` is only
/// the start of the command: a table that runs past it overflowed.
fn mac_tables(data: &[u8], truncated: bool) -> Option<(Table, Table)> {
    let (uni, rest) = table(data, truncated)?;
    let (multi, rest) = match rest {
        Some(rest) => table(rest, truncated)?,
        None => (Table::Overflow, None),
    };
    match rest {
        // Nothing after the tables, or they ran past what was read.
        Some([]) | None => Some((uni, multi)),
        Some(_) => None, // bytes after the tables
    }
}

/// One table at the start of `data`: the table and what follows it (None:
/// it runs past the bytes read, `truncated` only). None if malformed.
fn table(data: &[u8], truncated: bool) -> Option<(Table, Option<&[u8]>)> {
    let Some((count, rest)) = data.split_first_chunk::<4>() else {
        return truncated.then_some((Table::Overflow, None));
    };
    let count = u32::from_le_bytes(*count) as usize;
    let len = count.checked_mul(6)?;
    if len > rest.len() {
        return truncated.then_some((Table::Overflow, None));
    }
    let (entries, after) = rest.split_at(len);
    if count > MAX_TABLE_ENTRIES {
        return Some((Table::Overflow, Some(after)));
    }
    let e = entries
        .chunks_exact(6)
        .map(|c| MacAddr([c[0], c[1], c[2], c[3], c[4], c[5]]))
        .collect();
    Some((Table::Entries(e), Some(after)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNI: [u8; 6] = [0x52, 0x54, 0, 0, 0, 7];
    const MC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];

    fn on() -> RxState {
        RxState {
            negotiated: true,
            mode: None,
        }
    }

    fn table_set(uni: &[[u8; 6]], multi: &[[u8; 6]]) -> Vec<u8> {
        let mut c = vec![ctrl::CLASS_MAC, ctrl::MAC_TABLE_SET];
        for t in [uni, multi] {
            c.extend_from_slice(&(t.len() as u32).to_le_bytes());
            for e in t {
                c.extend_from_slice(e);
            }
        }
        c
    }

    #[test]
    fn mq_within_range_is_acked_and_unknown_classes_refused() {
        let mut rx = on();
        assert_eq!(
            ctrl_reply(&[ctrl::CLASS_MQ, 0, 2, 0], false, 2, &mut rx),
            ctrl::OK
        );
        assert_eq!(
            ctrl_reply(&[ctrl::CLASS_MQ, 0, 3, 0], false, 2, &mut rx),
            ctrl::ERR
        );
        assert_eq!(
            ctrl_reply(&[ctrl::CLASS_MQ, 0, 0, 0], false, 2, &mut rx),
            ctrl::ERR
        );
        assert_eq!(
            ctrl_reply(&[ctrl::CLASS_MQ, 0], false, 2, &mut rx),
            ctrl::ERR
        );
        assert_eq!(
            ctrl_reply(&[ctrl::CLASS_VLAN, 0, 1, 0], false, 1, &mut rx),
            ctrl::OK
        );
        assert_eq!(ctrl_reply(&[9, 0], false, 1, &mut rx), ctrl::ERR);
        assert_eq!(ctrl_reply(&[], false, 1, &mut rx), ctrl::ERR);
        assert_eq!(ctrl_reply(&[ctrl::CLASS_RX], false, 1, &mut rx), ctrl::ERR);
        assert_eq!(rx, on(), "refused commands change nothing");
    }

    #[test]
    fn rx_modes_take_one_byte_of_0_or_1_and_start_from_non_promiscuous() {
        let mut rx = on();
        assert_eq!(
            ctrl_reply(&[ctrl::CLASS_RX, ctrl::RX_ALLMULTI, 1], false, 1, &mut rx),
            ctrl::OK
        );
        let m = rx.mode.clone().unwrap();
        assert!(m.all_multi && !m.promisc);
        assert_eq!(
            ctrl_reply(&[ctrl::CLASS_RX, ctrl::RX_PROMISC, 1], false, 1, &mut rx),
            ctrl::OK
        );
        assert!(rx.mode.as_ref().unwrap().promisc);
        let before = rx.clone();
        for bad in [
            &[ctrl::CLASS_RX, ctrl::RX_PROMISC][..],
            &[ctrl::CLASS_RX, ctrl::RX_PROMISC, 0, 0],
            &[ctrl::CLASS_RX, ctrl::RX_PROMISC, 2],
            &[ctrl::CLASS_RX, 2, 1], // ALLUNI: needs CTRL_RX_EXTRA
            &[ctrl::CLASS_RX, 5, 1], // NOBCAST
        ] {
            assert_eq!(ctrl_reply(bad, false, 1, &mut rx), ctrl::ERR, "{bad:?}");
        }
        assert_eq!(rx, before);
    }

    #[test]
    fn rx_and_mac_commands_are_refused_without_ctrl_rx() {
        let mut rx = RxState::default();
        assert_eq!(
            ctrl_reply(&[ctrl::CLASS_RX, 0, 0], false, 1, &mut rx),
            ctrl::ERR
        );
        assert_eq!(
            ctrl_reply(&table_set(&[], &[]), false, 1, &mut rx),
            ctrl::ERR
        );
        assert_eq!(rx, RxState::default());
    }

    #[test]
    fn mac_tables_and_address_are_recorded() {
        let mut rx = on();
        assert_eq!(
            ctrl_reply(&table_set(&[UNI], &[MC, MC]), false, 1, &mut rx),
            ctrl::OK
        );
        let m = rx.mode.clone().unwrap();
        assert_eq!(m.unicast, [MacAddr(UNI)]);
        assert_eq!(m.multicast, [MacAddr(MC), MacAddr(MC)]);
        assert!(!m.uni_overflow && !m.multi_overflow && !m.promisc);
        let mut addr = vec![ctrl::CLASS_MAC, ctrl::MAC_ADDR_SET];
        addr.extend_from_slice(&UNI);
        assert_eq!(ctrl_reply(&addr, false, 1, &mut rx), ctrl::OK);
        assert_eq!(rx.mode.as_ref().unwrap().addr, Some(MacAddr(UNI)));
        assert_eq!(rx.mode.as_ref().unwrap().multicast.len(), 2, "kept");
    }

    #[test]
    fn a_table_past_the_cap_passes_its_class_whole() {
        let mut rx = on();
        let many = vec![MC; MAX_TABLE_ENTRIES + 1];
        assert_eq!(
            ctrl_reply(&table_set(&[UNI], &many), false, 1, &mut rx),
            ctrl::OK
        );
        let m = rx.mode.clone().unwrap();
        assert!(m.multi_overflow && m.multicast.is_empty());
        assert_eq!(m.unicast, [MacAddr(UNI)]);
        // Longer than what is read: the start is parsed, the rest overflows.
        let mut rx = on();
        let many = vec![UNI; 200];
        let cmd = table_set(&many, &[MC]);
        assert_eq!(
            ctrl_reply(&cmd[..MAX_CMD_BYTES], true, 1, &mut rx),
            ctrl::OK
        );
        let m = rx.mode.clone().unwrap();
        assert!(m.uni_overflow && m.multi_overflow);
    }

    #[test]
    fn malformed_mac_commands_are_refused_and_change_nothing() {
        let mut rx = on();
        ctrl_reply(&table_set(&[UNI], &[MC]), false, 1, &mut rx);
        let before = rx.clone();
        let good = table_set(&[UNI], &[MC]);
        let mut overlong = good.clone();
        overlong.push(0);
        let mut huge_count = vec![ctrl::CLASS_MAC, ctrl::MAC_TABLE_SET];
        huge_count.extend_from_slice(&u32::MAX.to_le_bytes());
        let mut lying = table_set(&[UNI], &[MC]);
        lying[2] = 2; // two unicast entries announced, one there
        let cases: Vec<Vec<u8>> = vec![
            vec![ctrl::CLASS_MAC, ctrl::MAC_TABLE_SET],
            vec![ctrl::CLASS_MAC, ctrl::MAC_TABLE_SET, 0, 0, 0],
            good[..good.len() - 1].to_vec(),
            good[..good.len() - 10].to_vec(),
            overlong,
            huge_count,
            lying,
            vec![ctrl::CLASS_MAC, ctrl::MAC_ADDR_SET, 1, 2, 3, 4, 5],
            vec![ctrl::CLASS_MAC, ctrl::MAC_ADDR_SET, 1, 0, 0, 0, 0, 1], // multicast
            vec![ctrl::CLASS_MAC, ctrl::MAC_ADDR_SET, 2, 0, 0, 0, 0, 1, 0],
            vec![ctrl::CLASS_MAC, 7, 0],
            vec![ctrl::CLASS_MAC],
        ];
        for c in &cases {
            assert_eq!(ctrl_reply(c, false, 1, &mut rx), ctrl::ERR, "{c:?}");
        }
        assert_eq!(rx, before);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // Every short command over a small alphabet, whole and truncated.
        let alphabet = [0u8, 1, 2, 4, 6, 0x40, 0xff];
        let mut rx = on();
        for len in 0..=6 {
            let mut idx = vec![0usize; len];
            loop {
                let cmd: Vec<u8> = idx.iter().map(|&i| alphabet[i]).collect();
                let r = ctrl_reply(&cmd, false, 4, &mut rx);
                assert!(r == ctrl::OK || r == ctrl::ERR);
                let r = ctrl_reply(&cmd, true, 4, &mut rx);
                assert!(r == ctrl::OK || r == ctrl::ERR);
                let Some(p) = idx.iter().rposition(|&i| i + 1 < alphabet.len()) else {
                    break;
                };
                idx[p] += 1;
                idx[p + 1..].iter_mut().for_each(|i| *i = 0);
            }
        }
    }
}
