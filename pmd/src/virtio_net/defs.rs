//! virtio 1.x constants for the modern PCI transport and the network device.
//!
//! Source: *Virtual I/O Device (VIRTIO) Version 1.1*, OASIS, sections cited per
//! item (§2.6 split virtqueues, §3.1 device initialisation, §4.1.4 PCI
//! capabilities, §5.1 network device, §6 reserved feature bits).

/// PCI vendor id of virtio devices (§4.1.2).
pub const VENDOR_ID: u16 = 0x1af4;
/// PCI device id of a modern (non-transitional) network device: 0x1040 + 1
/// (§4.1.2.1).
pub const DEVICE_ID_NET_MODERN: u16 = 0x1041;

/// `virtio_pci_cap.cfg_type` values (§4.1.4).
pub mod cap {
    /// Common configuration.
    pub const COMMON_CFG: u8 = 1;
    /// Notifications.
    pub const NOTIFY_CFG: u8 = 2;
    /// ISR status.
    pub const ISR_CFG: u8 = 3;
    /// Device-specific configuration.
    pub const DEVICE_CFG: u8 = 4;
    /// Offset of `cfg_type` in the capability.
    pub const CFG_TYPE: u16 = 3;
    /// Offset of `bar`.
    pub const BAR: u16 = 4;
    /// Offset of `offset` (le32) within the BAR.
    pub const OFFSET: u16 = 8;
    /// Offset of `length` (le32).
    pub const LENGTH: u16 = 12;
    /// Offset of `notify_off_multiplier` (le32) in the notify capability
    /// (§4.1.4.4).
    pub const NOTIFY_OFF_MULTIPLIER: u16 = 16;
}

/// `virtio_pci_common_cfg` field offsets (§4.1.4.3).
pub mod common {
    /// le32: selects which 32 feature bits `DEVICE_FEATURE` shows.
    pub const DEVICE_FEATURE_SELECT: usize = 0x00;
    /// le32, read-only: device feature bits.
    pub const DEVICE_FEATURE: usize = 0x04;
    /// le32: selects which 32 bits `DRIVER_FEATURE` sets.
    pub const DRIVER_FEATURE_SELECT: usize = 0x08;
    /// le32: driver (accepted) feature bits.
    pub const DRIVER_FEATURE: usize = 0x0c;
    /// le16: configuration-change MSI-X vector.
    pub const MSIX_CONFIG: usize = 0x10;
    /// le16, read-only: number of virtqueues.
    pub const NUM_QUEUES: usize = 0x12;
    /// u8: device status (§2.1).
    pub const DEVICE_STATUS: usize = 0x14;
    /// u8: configuration generation.
    pub const CONFIG_GENERATION: usize = 0x15;
    /// le16: queue the `QUEUE_*` fields refer to.
    pub const QUEUE_SELECT: usize = 0x16;
    /// le16: queue size (device's maximum on read; the driver may lower it).
    pub const QUEUE_SIZE: usize = 0x18;
    /// le16: queue MSI-X vector.
    pub const QUEUE_MSIX_VECTOR: usize = 0x1a;
    /// le16: 1 enables the queue.
    pub const QUEUE_ENABLE: usize = 0x1c;
    /// le16, read-only: this queue's notify offset, in multiplier units.
    pub const QUEUE_NOTIFY_OFF: usize = 0x1e;
    /// le64: descriptor table address.
    pub const QUEUE_DESC: usize = 0x20;
    /// le64: available (driver) ring address.
    pub const QUEUE_DRIVER: usize = 0x28;
    /// le64: used (device) ring address.
    pub const QUEUE_DEVICE: usize = 0x30;
    /// "No MSI-X vector" (§4.1.5.1.2).
    pub const NO_VECTOR: u16 = 0xffff;
}

/// Device status bits (§2.1).
pub mod status {
    /// The guest OS has noticed the device.
    pub const ACKNOWLEDGE: u8 = 1;
    /// The driver knows how to drive it.
    pub const DRIVER: u8 = 2;
    /// The driver is ready.
    pub const DRIVER_OK: u8 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u8 = 8;
    /// The device hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u8 = 64;
    /// The driver gave up on the device.
    pub const FAILED: u8 = 128;
}

/// Feature bits (§5.1.3 network, §6 reserved).
pub mod feature {
    /// Device has a given MAC address (§5.1.3).
    pub const NET_MAC: u64 = 1 << 5;
    /// Device cfg `status` field (link state) is valid (§5.1.3).
    pub const NET_STATUS: u64 = 1 << 16;
    /// Control virtqueue available (§5.1.3).
    pub const NET_CTRL_VQ: u64 = 1 << 17;
    /// Multiple queue pairs, switched on with a control command (§5.1.3).
    pub const NET_MQ: u64 = 1 << 22;
    /// Device follows virtio 1.x (§6).
    pub const VERSION_1: u64 = 1 << 32;
    /// Device DMA goes through the platform IOMMU (§6): required when the
    /// driver gives it IOVAs, as a VFIO driver does.
    pub const ACCESS_PLATFORM: u64 = 1 << 33;
}

/// Network device configuration layout (§5.1.4).
pub mod netcfg {
    /// 6 bytes: MAC address (valid with `NET_MAC`).
    pub const MAC: usize = 0;
    /// le16: status (valid with `NET_STATUS`).
    pub const STATUS: usize = 6;
    /// `STATUS` bit: link is up.
    pub const STATUS_LINK_UP: u16 = 1;
    /// le16: most queue pairs (valid with `NET_MQ`).
    pub const MAX_VIRTQUEUE_PAIRS: usize = 8;
}

/// Control-queue commands (§5.1.6.5).
pub mod ctrl_cmd {
    /// `VIRTIO_NET_CTRL_MQ` class.
    pub const CLASS_MQ: u8 = 4;
    /// `VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET`: le16 number of pairs to use.
    pub const MQ_VQ_PAIRS_SET: u8 = 0;
    /// Ack value for success (`VIRTIO_NET_OK`).
    pub const OK: u8 = 0;
}

/// Bytes of `struct virtio_net_hdr` when `VERSION_1` is negotiated: flags,
/// gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers (§5.1.6).
pub const NET_HDR_BYTES: usize = 12;

/// Split virtqueue layout (§2.6).
pub mod vring {
    /// Bytes per descriptor: addr le64, len le32, flags le16, next le16 (§2.6.5).
    pub const DESC_BYTES: usize = 16;
    /// Offset of `len` in a descriptor.
    pub const DESC_LEN: usize = 8;
    /// Offset of `flags` in a descriptor.
    pub const DESC_FLAGS: usize = 12;
    /// Offset of `next` in a descriptor.
    pub const DESC_NEXT: usize = 14;
    /// Descriptor flag: buffer continues in `next`.
    pub const DESC_F_NEXT: u16 = 1;
    /// Descriptor flag: device writes (receive) rather than reads the buffer.
    pub const DESC_F_WRITE: u16 = 2;
    /// Available ring: flags le16, idx le16, `ring[size]` le16, used_event (§2.6.6).
    pub const AVAIL_IDX: usize = 2;
    /// Offset of the available ring's entries.
    pub const AVAIL_RING: usize = 4;
    /// Available flag: the driver wants no interrupts (it polls).
    pub const AVAIL_F_NO_INTERRUPT: u16 = 1;
    /// Used ring: flags le16, idx le16, `ring[size]` of {id le32, len le32} (§2.6.8).
    pub const USED_IDX: usize = 2;
    /// Offset of the used ring's entries.
    pub const USED_RING: usize = 4;
    /// Bytes per used element.
    pub const USED_ELEM_BYTES: usize = 8;
    /// Used flag: the device does not need notifications (§2.6.10).
    pub const USED_F_NO_NOTIFY: u16 = 1;
    /// Largest queue size this driver uses.
    pub const MAX_QUEUE_SIZE: u16 = 256;
    /// Bytes of ring memory per queue: descriptor table, available ring and used
    /// ring each in their own 4 KiB page (enough for 256 entries, and above the
    /// 16/2/4-byte alignments of §2.6).
    pub const QUEUE_BYTES: usize = 3 * 4096;
    /// Offset of the available ring in a queue's memory.
    pub const AVAIL_OFF: usize = 4096;
    /// Offset of the used ring in a queue's memory.
    pub const USED_OFF: usize = 8192;
}
