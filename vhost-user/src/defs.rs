//! virtio and vhost-user constants used by the device, each with the spec clause it
//! comes from (virtio 1.2, "Virtual I/O Device (VIRTIO) Version 1.2").
//!
//! Layer: protocol. Not on the packet path by itself; the values are inlined.

use virtio_bindings::bindings::{virtio_config, virtio_net, virtio_ring};

/// virtio 1.2 §6 "Reserved Feature Bits": VIRTIO_F_VERSION_1.
pub const F_VERSION_1: u64 = 1 << virtio_config::VIRTIO_F_VERSION_1;
/// virtio 1.2 §6: VIRTIO_F_NOTIFY_ON_EMPTY (legacy; accepted and ignored).
pub const F_NOTIFY_ON_EMPTY: u64 = 1 << virtio_config::VIRTIO_F_NOTIFY_ON_EMPTY;
/// virtio 1.2 §6: VIRTIO_F_RING_INDIRECT_DESC.
pub const F_INDIRECT_DESC: u64 = 1 << virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;
/// virtio 1.2 §6: VIRTIO_F_RING_EVENT_IDX.
pub const F_EVENT_IDX: u64 = 1 << virtio_ring::VIRTIO_RING_F_EVENT_IDX;
/// virtio 1.2 §6 and §2.7.9: VIRTIO_F_IN_ORDER: the device uses buffers in
/// the order they were made available, so the driver may reclaim and
/// refill them without a free list.
pub const F_IN_ORDER: u64 = 1 << virtio_config::VIRTIO_F_IN_ORDER;
/// virtio 1.2 §5.1.3: VIRTIO_NET_F_CSUM: the device takes frames with a
/// partial checksum (the driver may set [`NET_HDR_F_NEEDS_CSUM`] on TX).
pub const F_CSUM: u64 = 1 << virtio_net::VIRTIO_NET_F_CSUM;
/// virtio 1.2 §5.1.3: VIRTIO_NET_F_GUEST_CSUM: the driver takes frames with a
/// partial checksum (the device may set [`NET_HDR_F_NEEDS_CSUM`] on RX).
pub const F_GUEST_CSUM: u64 = 1 << virtio_net::VIRTIO_NET_F_GUEST_CSUM;
/// virtio 1.2 §5.1.3: VIRTIO_NET_F_MTU: config `mtu` is the largest frame the
/// driver may send, not counting the Ethernet header.
pub const F_MTU: u64 = 1 << virtio_net::VIRTIO_NET_F_MTU;
/// virtio 1.2 §5.1.3: VIRTIO_NET_F_MRG_RXBUF.
pub const F_MRG_RXBUF: u64 = 1 << virtio_net::VIRTIO_NET_F_MRG_RXBUF;
/// virtio 1.2 §5.1.3: VIRTIO_NET_F_STATUS (config `status` is valid).
pub const F_STATUS: u64 = 1 << virtio_net::VIRTIO_NET_F_STATUS;
/// virtio 1.2 §5.1.3: VIRTIO_NET_F_MAC (config space `mac` holds the
/// device's address).
pub const F_MAC: u64 = 1 << virtio_net::VIRTIO_NET_F_MAC;
/// virtio 1.2 §5.1.3: VIRTIO_NET_F_CTRL_VQ (control virtqueue present).
pub const F_CTRL_VQ: u64 = 1 << virtio_net::VIRTIO_NET_F_CTRL_VQ;
/// virtio 1.2 §5.1.3: VIRTIO_NET_F_CTRL_RX (control channel RX mode and
/// MAC filter commands, §5.1.6.5.1 and §5.1.6.5.2).
pub const F_CTRL_RX: u64 = 1 << virtio_net::VIRTIO_NET_F_CTRL_RX;
/// virtio 1.2 §5.1.3: VIRTIO_NET_F_MQ (multiple queue pairs).
pub const F_MQ: u64 = 1 << virtio_net::VIRTIO_NET_F_MQ;
/// vhost-user spec "Feature bits": VHOST_USER_F_PROTOCOL_FEATURES (bit 30).
pub const F_PROTOCOL_FEATURES: u64 = 1 << 30;

/// virtio 1.2 §2.7.5: descriptor continues via `next`.
pub const DESC_F_NEXT: u16 = 1;
/// virtio 1.2 §2.7.5: buffer is device write-only.
pub const DESC_F_WRITE: u16 = 2;
/// virtio 1.2 §2.7.5.3: buffer holds an indirect descriptor table.
pub const DESC_F_INDIRECT: u16 = 4;

/// virtio 1.2 §2.7.6: driver asks for no interrupts (without EVENT_IDX).
pub const AVAIL_F_NO_INTERRUPT: u16 = 1;
/// virtio 1.2 §2.7.8: device asks for no notifications (without EVENT_IDX).
pub const USED_F_NO_NOTIFY: u16 = 1;

/// virtio 1.2 §2.7.5: a split-ring descriptor is 16 bytes.
pub const DESC_BYTES: u64 = 16;
/// virtio 1.2 §2.7.8: a used-ring element is 8 bytes (id: le32, len: le32).
pub const USED_ELEM_BYTES: u64 = 8;
/// virtio 1.2 §2.7: largest split queue size.
pub const MAX_QUEUE_SIZE: u16 = 32768;

/// virtio 1.2 §5.1.6: `struct virtio_net_hdr` with VERSION_1 (or MRG_RXBUF) is 12
/// bytes; `num_buffers` (le16) is its last field.
pub const NET_HDR_BYTES: usize = 12;
/// Offset of `num_buffers` in the virtio-net header.
pub const NET_HDR_NUM_BUFFERS_OFF: usize = 10;
/// Offset of `flags` (u8) in the virtio-net header (virtio 1.2 §5.1.6).
pub const NET_HDR_FLAGS_OFF: usize = 0;
/// Offset of `gso_type` (u8).
pub const NET_HDR_GSO_TYPE_OFF: usize = 1;
/// Offset of `csum_start` (le16): where checksumming starts, from the first
/// byte of the Ethernet header.
pub const NET_HDR_CSUM_START_OFF: usize = 6;
/// Offset of `csum_offset` (le16): where, after `csum_start`, the checksum goes.
pub const NET_HDR_CSUM_OFFSET_OFF: usize = 8;
/// virtio 1.2 §5.1.6: `flags` bit VIRTIO_NET_HDR_F_NEEDS_CSUM: the checksum
/// field holds the pseudo-header sum; `csum_start`/`csum_offset` are valid.
pub const NET_HDR_F_NEEDS_CSUM: u8 = virtio_net::VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
/// virtio 1.2 §5.1.6: `gso_type` VIRTIO_NET_HDR_GSO_NONE (the only value weir
/// accepts: no TSO/UFO feature is offered).
pub const NET_HDR_GSO_NONE: u8 = virtio_net::VIRTIO_NET_HDR_GSO_NONE as u8;

/// virtio 1.2 §5.1.3: the driver may send TSO frames over IPv4 (HOST_TSO4)
/// and IPv6 (HOST_TSO6); it takes them (GUEST_TSO4, GUEST_TSO6).
pub const F_HOST_TSO4: u64 = 1 << virtio_net::VIRTIO_NET_F_HOST_TSO4;
/// See [`F_HOST_TSO4`].
pub const F_HOST_TSO6: u64 = 1 << virtio_net::VIRTIO_NET_F_HOST_TSO6;
/// See [`F_HOST_TSO4`].
pub const F_GUEST_TSO4: u64 = 1 << virtio_net::VIRTIO_NET_F_GUEST_TSO4;
/// See [`F_HOST_TSO4`].
pub const F_GUEST_TSO6: u64 = 1 << virtio_net::VIRTIO_NET_F_GUEST_TSO6;
/// All four TSO features, offered when the daemon has a TSO buffer pool.
pub const F_TSO_ALL: u64 = F_HOST_TSO4 | F_HOST_TSO6 | F_GUEST_TSO4 | F_GUEST_TSO6;
/// virtio 1.2 §5.1.6: `gso_type` TCPV4 / TCPV6.
pub const NET_HDR_GSO_TCPV4: u8 = virtio_net::VIRTIO_NET_HDR_GSO_TCPV4 as u8;
/// See [`NET_HDR_GSO_TCPV4`].
pub const NET_HDR_GSO_TCPV6: u8 = virtio_net::VIRTIO_NET_HDR_GSO_TCPV6 as u8;
/// `gso_type` bit ECN (not offered: such a frame is refused).
pub const NET_HDR_GSO_ECN: u8 = virtio_net::VIRTIO_NET_HDR_GSO_ECN as u8;
/// Offset of `hdr_len` (le16) in the virtio-net header.
pub const NET_HDR_HDR_LEN_OFF: usize = 2;
/// Offset of `gso_size` (le16) in the virtio-net header.
pub const NET_HDR_GSO_SIZE_OFF: usize = 4;

/// Largest frame accepted from a guest (a 64 KiB TSO frame).
pub const MAX_FRAME_BYTES: usize = 65535;

/// Size of the descriptor table in bytes (virtio 1.2 §2.7.5).
pub const fn desc_table_bytes(size: u16) -> u64 {
    DESC_BYTES * size as u64
}

/// Size of the available ring in bytes: flags, idx, `ring[size]`, used_event
/// (virtio 1.2 §2.7.6).
pub const fn avail_ring_bytes(size: u16) -> u64 {
    6 + 2 * size as u64
}

/// Size of the used ring in bytes: flags, idx, `ring[size]`, avail_event
/// (virtio 1.2 §2.7.8).
pub const fn used_ring_bytes(size: u16) -> u64 {
    6 + USED_ELEM_BYTES * size as u64
}

/// virtio 1.2 §5.1.4: config `status` bit VIRTIO_NET_S_LINK_UP.
pub const NET_S_LINK_UP: u16 = 1;
/// virtio 1.2 §5.1.4: config space layout: `mac[6]`, `status` (le16),
/// `max_virtqueue_pairs` (le16), `mtu` (le16).
pub const NET_CONFIG_BYTES: usize = 12;
/// Offset of `status` in the config space.
pub const NET_CONFIG_STATUS_OFF: usize = 6;
/// Offset of `max_virtqueue_pairs` in the config space.
pub const NET_CONFIG_MAX_PAIRS_OFF: usize = 8;
/// Offset of `mtu` in the config space.
pub const NET_CONFIG_MTU_OFF: usize = 10;

/// The MTU offered by default: Ethernet's, so guests bridged to kernel or
/// physical ports with the usual MTU do not send frames those ports refuse
/// (a Linux driver adopts the offered `mtu` as its interface MTU).
pub const DEFAULT_GUEST_MTU: u16 = 1500;
/// Smallest MTU a driver accepts (IPv4's 68 bytes, RFC 791); below it the
/// feature is not offered.
pub const MIN_GUEST_MTU: u16 = 68;
/// Ethernet header with one 802.1Q tag: a guest's VLAN sub-interface sends
/// frames of MTU + 18 bytes.
const ETH_VLAN_HDR_BYTES: u32 = 18;

/// The `mtu` to offer with VIRTIO_NET_F_MTU when every frame must fit an mbuf
/// data room of `data_room` bytes: [`DEFAULT_GUEST_MTU`], lowered so that a
/// full frame with one VLAN tag still fits. None (do not offer the feature)
/// if that leaves less than [`MIN_GUEST_MTU`].
pub fn guest_mtu(data_room: u32) -> Option<u16> {
    let fits = data_room.saturating_sub(ETH_VLAN_HDR_BYTES);
    let mtu = fits.min(u32::from(DEFAULT_GUEST_MTU)) as u16;
    (mtu >= MIN_GUEST_MTU).then_some(mtu)
}

/// `mtu` lowered to `cap`, if given; None (do not offer the feature, refuse
/// every NET_SET_MTU) if that leaves less than [`MIN_GUEST_MTU`].
pub fn capped_mtu(mtu: Option<u16>, cap: Option<u16>) -> Option<u16> {
    let m = match cap {
        Some(c) => mtu?.min(c),
        None => mtu?,
    };
    (m >= MIN_GUEST_MTU).then_some(m)
}

/// The largest MTU a frontend may set with VHOST_USER_NET_SET_MTU (QEMU's
/// `host_mtu`) for a data room of `data_room` bytes: a frame of that MTU with
/// an Ethernet header and one VLAN tag must fit one mbuf. Unlike
/// [`guest_mtu`] not capped at 1500: the frontend's user asked for it. None
/// if that leaves less than [`MIN_GUEST_MTU`].
pub fn max_guest_mtu(data_room: u32) -> Option<u16> {
    let fits = data_room
        .saturating_sub(ETH_VLAN_HDR_BYTES)
        .min(u32::from(u16::MAX)) as u16;
    (fits >= MIN_GUEST_MTU).then_some(fits)
}

/// virtio 1.2 §5.1.6.5: control command classes and acks.
pub mod ctrl {
    /// VIRTIO_NET_OK.
    pub const OK: u8 = 0;
    /// VIRTIO_NET_ERR.
    pub const ERR: u8 = 1;
    /// VIRTIO_NET_CTRL_RX (promiscuous / all-multicast modes).
    pub const CLASS_RX: u8 = 0;
    /// VIRTIO_NET_CTRL_MAC (MAC filter table, address).
    pub const CLASS_MAC: u8 = 1;
    /// VIRTIO_NET_CTRL_VLAN (VLAN filter).
    pub const CLASS_VLAN: u8 = 2;
    /// VIRTIO_NET_CTRL_MQ.
    pub const CLASS_MQ: u8 = 4;
    /// VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET.
    pub const MQ_VQ_PAIRS_SET: u8 = 0;
    /// VIRTIO_NET_CTRL_RX_PROMISC (§5.1.6.5.1).
    pub const RX_PROMISC: u8 = 0;
    /// VIRTIO_NET_CTRL_RX_ALLMULTI (§5.1.6.5.1).
    pub const RX_ALLMULTI: u8 = 1;
    /// VIRTIO_NET_CTRL_MAC_TABLE_SET (§5.1.6.5.2).
    pub const MAC_TABLE_SET: u8 = 0;
    /// VIRTIO_NET_CTRL_MAC_ADDR_SET (§5.1.6.5.2).
    pub const MAC_ADDR_SET: u8 = 1;
}

/// Bytes `offset..offset + size` of the virtio-net config space (virtio 1.2
/// §5.1.4): `mac` (zero when VIRTIO_NET_F_MAC is not offered), link up,
/// `queue_pairs`, `mtu` (0 when VIRTIO_NET_F_MTU is not offered). Bytes past
/// the structure read as zero.
pub fn net_config(
    offset: u32,
    size: u32,
    queue_pairs: u16,
    mtu: u16,
    mac: Option<[u8; 6]>,
) -> Vec<u8> {
    let mut cfg = [0u8; NET_CONFIG_BYTES];
    cfg[..6].copy_from_slice(&mac.unwrap_or_default());
    cfg[NET_CONFIG_STATUS_OFF..NET_CONFIG_STATUS_OFF + 2]
        .copy_from_slice(&NET_S_LINK_UP.to_le_bytes());
    cfg[NET_CONFIG_MAX_PAIRS_OFF..NET_CONFIG_MAX_PAIRS_OFF + 2]
        .copy_from_slice(&queue_pairs.to_le_bytes());
    cfg[NET_CONFIG_MTU_OFF..NET_CONFIG_MTU_OFF + 2].copy_from_slice(&mtu.to_le_bytes());
    // The library caps `size` at its config limit (256 bytes).
    let mut out = vec![0u8; size.min(256) as usize];
    for (i, b) in out.iter_mut().enumerate() {
        if let Some(v) = (offset as usize).checked_add(i).and_then(|at| cfg.get(at)) {
            *b = *v;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_space_reports_link_up_queue_pairs_and_mtu() {
        let c = net_config(0, 12, 4, 1500, None);
        assert_eq!(&c[..12], &[0, 0, 0, 0, 0, 0, 1, 0, 4, 0, 0xdc, 0x05]);
        assert_eq!(net_config(8, 2, 4, 1500, None), vec![4, 0]);
        assert_eq!(net_config(10, 4, 4, 1500, None), vec![0xdc, 0x05, 0, 0]);
        assert_eq!(net_config(u32::MAX, 4, 4, 1500, None), vec![0; 4]);
        assert_eq!(net_config(0, 10_000, 1, 1500, None).len(), 256);
        let mac = [2, 0, 0, 0, 0, 5];
        assert_eq!(net_config(0, 6, 1, 1500, Some(mac)), mac.to_vec());
        assert_eq!(net_config(4, 4, 1, 1500, Some(mac)), vec![0, 5, 1, 0]);
    }

    #[test]
    fn offered_mtu_fits_the_data_room_with_a_vlan_tag() {
        assert_eq!(guest_mtu(2048), Some(1500));
        assert_eq!(guest_mtu(9216), Some(1500));
        assert_eq!(guest_mtu(1518), Some(1500));
        assert_eq!(guest_mtu(1024), Some(1006));
        assert_eq!(guest_mtu(86), Some(68));
        assert_eq!(guest_mtu(85), None);
        assert_eq!(guest_mtu(0), None);
    }

    #[test]
    fn a_cap_lowers_the_mtu_and_never_raises_it() {
        assert_eq!(capped_mtu(Some(1500), Some(1450)), Some(1450));
        assert_eq!(capped_mtu(Some(1400), Some(1450)), Some(1400));
        assert_eq!(capped_mtu(Some(1500), None), Some(1500));
        assert_eq!(capped_mtu(None, Some(1450)), None);
        // A cap below the least IPv4 MTU: nothing offered, nothing accepted.
        assert_eq!(capped_mtu(Some(1500), Some(67)), None);
        assert_eq!(capped_mtu(Some(1500), Some(68)), Some(68));
    }

    #[test]
    fn max_guest_mtu_is_the_data_room_less_a_vlan_tagged_header() {
        assert_eq!(max_guest_mtu(2048), Some(2030));
        assert_eq!(max_guest_mtu(9216), Some(9198));
        assert_eq!(max_guest_mtu(86), Some(68));
        assert_eq!(max_guest_mtu(85), None);
        assert_eq!(max_guest_mtu(u32::MAX), Some(u16::MAX));
    }
}

/// Feature bits by the name `weir port show` gives them (the spec's name
/// without its `VIRTIO_F_`, `VIRTIO_NET_F_` or `VIRTIO_RING_F_` prefix).
const FEATURE_NAMES: [(u64, &str); 18] = [
    (F_VERSION_1, "VERSION_1"),
    (F_NOTIFY_ON_EMPTY, "NOTIFY_ON_EMPTY"),
    (F_INDIRECT_DESC, "INDIRECT_DESC"),
    (F_EVENT_IDX, "EVENT_IDX"),
    (F_IN_ORDER, "IN_ORDER"),
    (F_PROTOCOL_FEATURES, "PROTOCOL_FEATURES"),
    (F_CSUM, "CSUM"),
    (F_GUEST_CSUM, "GUEST_CSUM"),
    (F_MTU, "MTU"),
    (F_MAC, "MAC"),
    (F_MRG_RXBUF, "MRG_RXBUF"),
    (F_STATUS, "STATUS"),
    (F_CTRL_VQ, "CTRL_VQ"),
    (F_MQ, "MQ"),
    (F_HOST_TSO4, "HOST_TSO4"),
    (F_HOST_TSO6, "HOST_TSO6"),
    (F_GUEST_TSO4, "GUEST_TSO4"),
    (F_GUEST_TSO6, "GUEST_TSO6"),
];

/// The names of the bits set in `features`, in [`FEATURE_NAMES`] order;
/// a bit without a name shows as `bit<N>`.
pub fn feature_names(features: u64) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = FEATURE_NAMES
        .iter()
        .filter(|(bit, _)| features & bit != 0)
        .map(|&(_, name)| name)
        .collect();
    let known = FEATURE_NAMES.iter().fold(0, |a, (bit, _)| a | bit);
    let mut rest = features & !known;
    while rest != 0 {
        let bit = rest.trailing_zeros();
        names.push(UNNAMED[bit as usize]);
        rest &= rest - 1;
    }
    names
}

/// `bit0` .. `bit63`.
const UNNAMED: [&str; 64] = [
    "bit0", "bit1", "bit2", "bit3", "bit4", "bit5", "bit6", "bit7", "bit8", "bit9", "bit10",
    "bit11", "bit12", "bit13", "bit14", "bit15", "bit16", "bit17", "bit18", "bit19", "bit20",
    "bit21", "bit22", "bit23", "bit24", "bit25", "bit26", "bit27", "bit28", "bit29", "bit30",
    "bit31", "bit32", "bit33", "bit34", "bit35", "bit36", "bit37", "bit38", "bit39", "bit40",
    "bit41", "bit42", "bit43", "bit44", "bit45", "bit46", "bit47", "bit48", "bit49", "bit50",
    "bit51", "bit52", "bit53", "bit54", "bit55", "bit56", "bit57", "bit58", "bit59", "bit60",
    "bit61", "bit62", "bit63",
];

#[cfg(test)]
mod feature_name_tests {
    use super::*;

    #[test]
    fn names_every_set_bit_and_numbers_the_unknown_ones() {
        assert!(feature_names(0).is_empty());
        assert_eq!(
            feature_names(F_VERSION_1 | F_MRG_RXBUF | F_GUEST_TSO4),
            ["VERSION_1", "MRG_RXBUF", "GUEST_TSO4"]
        );
        assert_eq!(feature_names(1 << 63 | F_MQ), ["MQ", "bit63"]);
    }
}
