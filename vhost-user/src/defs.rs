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
/// virtio 1.2 §5.1.3: VIRTIO_NET_F_MRG_RXBUF.
pub const F_MRG_RXBUF: u64 = 1 << virtio_net::VIRTIO_NET_F_MRG_RXBUF;
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

/// Largest frame accepted from a guest (64 KiB TSO frames are not offered).
pub const MAX_FRAME_BYTES: usize = 65535;

/// Size of the descriptor table in bytes (virtio 1.2 §2.7.5).
pub const fn desc_table_bytes(size: u16) -> u64 {
    DESC_BYTES * size as u64
}

/// Size of the available ring in bytes: flags, idx, ring[size], used_event
/// (virtio 1.2 §2.7.6).
pub const fn avail_ring_bytes(size: u16) -> u64 {
    6 + 2 * size as u64
}

/// Size of the used ring in bytes: flags, idx, ring[size], avail_event
/// (virtio 1.2 §2.7.8).
pub const fn used_ring_bytes(size: u16) -> u64 {
    6 + USED_ELEM_BYTES * size as u64
}
