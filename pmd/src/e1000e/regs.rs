//! Intel 82574L register offsets, bits and descriptor layouts.
//!
//! Source: *Intel 82574 GbE Controller Family Datasheet*, chapter 10 (Device
//! Registers: offsets and bit fields, by register name) and chapter 7 (Inline
//! Functions: "Legacy Receive Descriptor Format", "Legacy Transmit Descriptor
//! Format"). Cross-checked against Linux `drivers/net/ethernet/intel/e1000e/`
//! `regs.h`/`defines.h` and QEMU's `hw/net/e1000_regs.h`, which emulates the
//! same layout. All offsets are bytes into BAR0 (memory BAR, 128 KiB).

/// PCI vendor id (Intel).
pub const VENDOR_ID: u16 = 0x8086;
/// PCI device id of the 82574L.
pub const DEVICE_ID_82574L: u16 = 0x10d3;

/// Device Control (ch. 10, CTRL).
pub const CTRL: usize = 0x0000;
/// CTRL: GIO Master Disable: stop issuing DMA before a reset.
pub const CTRL_GIO_MASTER_DISABLE: u32 = 1 << 2;
/// CTRL: Set Link Up. Forces the MAC's link indication up (copper, with ASDE).
pub const CTRL_SLU: u32 = 1 << 6;
/// CTRL: Auto-Speed Detection Enable.
pub const CTRL_ASDE: u32 = 1 << 5;
/// CTRL: device reset; self-clearing. Software waits 1 ms before touching
/// other registers.
pub const CTRL_RST: u32 = 1 << 26;
/// CTRL: PHY reset.
pub const CTRL_PHY_RST: u32 = 1 << 31;

/// Device Status (ch. 10, STATUS).
pub const STATUS: usize = 0x0008;
/// STATUS: Link Up.
pub const STATUS_LU: u32 = 1 << 1;
/// STATUS: GIO Master Enable status; clears once outstanding DMA has drained
/// after CTRL.GIO_MASTER_DISABLE.
pub const STATUS_GIO_MASTER_ENABLE: u32 = 1 << 19;

/// EEPROM/Flash Control (ch. 10, EECD).
pub const EECD: usize = 0x0010;
/// EECD: the NVM auto-read after reset is done (MAC address and defaults are
/// loaded).
pub const EECD_AUTO_RD: u32 = 1 << 9;

/// Interrupt Cause Read; reading clears it.
pub const ICR: usize = 0x00c0;
/// Interrupt Mask Clear: writing 1s masks those causes.
pub const IMC: usize = 0x00d8;

/// Receive Control (ch. 10, RCTL).
pub const RCTL: usize = 0x0100;
/// RCTL: receiver enable.
pub const RCTL_EN: u32 = 1 << 1;
/// RCTL: unicast promiscuous.
pub const RCTL_UPE: u32 = 1 << 3;
/// RCTL: multicast promiscuous.
pub const RCTL_MPE: u32 = 1 << 4;
/// RCTL: accept broadcast.
pub const RCTL_BAM: u32 = 1 << 15;
/// RCTL: buffer size 2048 bytes (BSIZE = 00b with BSEX = 0).
pub const RCTL_BSIZE_2048: u32 = 0;
/// RCTL: strip the Ethernet CRC from received frames.
pub const RCTL_SECRC: u32 = 1 << 26;

/// Transmit Control (ch. 10, TCTL).
pub const TCTL: usize = 0x0400;
/// TCTL: transmitter enable.
pub const TCTL_EN: u32 = 1 << 1;
/// TCTL: pad short packets to 64 bytes.
pub const TCTL_PSP: u32 = 1 << 3;
/// TCTL: collision threshold (bits 11:4), the datasheet's recommended 0x0f.
pub const TCTL_CT_DEFAULT: u32 = 0x0f << 4;
/// TCTL: collision distance (bits 21:12), 0x3f for full duplex.
pub const TCTL_COLD_FD: u32 = 0x3f << 12;

/// Transmit Inter-Packet Gap.
pub const TIPG: usize = 0x0410;
/// TIPG for IEEE 802.3 copper: IPGT 8, IPGR1 8, IPGR2 6 (ch. 10, TIPG).
pub const TIPG_DEFAULT: u32 = 8 | (8 << 10) | (6 << 20);

/// Receive Descriptor Base Address Low, queue 0.
pub const RDBAL: usize = 0x2800;
/// Receive Descriptor Base Address High, queue 0.
pub const RDBAH: usize = 0x2804;
/// Receive Descriptor ring Length in bytes (multiple of 128), queue 0.
pub const RDLEN: usize = 0x2808;
/// Receive Descriptor Head, queue 0 (hardware's next descriptor).
pub const RDH: usize = 0x2810;
/// Receive Descriptor Tail, queue 0: hardware owns descriptors [RDH, RDT).
pub const RDT: usize = 0x2818;

/// Transmit Descriptor Base Address Low, queue 0.
pub const TDBAL: usize = 0x3800;
/// Transmit Descriptor Base Address High, queue 0.
pub const TDBAH: usize = 0x3804;
/// Transmit Descriptor ring Length in bytes (multiple of 128), queue 0.
pub const TDLEN: usize = 0x3808;
/// Transmit Descriptor Head, queue 0.
pub const TDH: usize = 0x3810;
/// Transmit Descriptor Tail, queue 0: software's next free descriptor.
pub const TDT: usize = 0x3818;

/// Missed Packets Count (clear on read): frames lost for lack of descriptors.
pub const MPC: usize = 0x4010;

/// Multicast Table Array, 128 dwords.
pub const MTA: usize = 0x5200;
/// Number of MTA entries.
pub const MTA_LEN: usize = 128;
/// Receive Address Low, entry 0: MAC bytes 0..4.
pub const RAL0: usize = 0x5400;
/// Receive Address High, entry 0: MAC bytes 4..6, plus the valid bit.
pub const RAH0: usize = 0x5404;
/// RAH: Address Valid.
pub const RAH_AV: u32 = 1 << 31;

/// Bytes per legacy descriptor (receive and transmit).
pub const DESC_BYTES: usize = 16;

/// Legacy receive descriptor ("Legacy Receive Descriptor Format"): buffer
/// address at 0 (u64), length at 8 (u16), checksum at 10, status at 12 (u8),
/// errors at 13 (u8), special at 14 (u16).
pub mod rxd {
    /// Offset of the buffer address.
    pub const ADDR: usize = 0;
    /// Offset of the received length.
    pub const LEN: usize = 8;
    /// Offset of the status byte.
    pub const STATUS: usize = 12;
    /// Offset of the errors byte.
    pub const ERRORS: usize = 13;
    /// Status: Descriptor Done.
    pub const STATUS_DD: u8 = 1 << 0;
    /// Status: End Of Packet.
    pub const STATUS_EOP: u8 = 1 << 1;
    /// Errors that make the frame unusable: CRC/alignment (CE), symbol (SE),
    /// sequence (SEQ), carrier extension (CXE), RX data error (RXE). The TCP/UDP
    /// (bit 5) and IP (bit 6) checksum errors are left to the stack.
    pub const ERRORS_FRAME: u8 = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 4) | (1 << 7);
}

/// Legacy transmit descriptor ("Legacy Transmit Descriptor Format"): buffer
/// address at 0 (u64), length at 8 (u16), CSO at 10, CMD at 11, STATUS at 12,
/// CSS at 13, special at 14.
pub mod txd {
    /// Offset of the buffer address.
    pub const ADDR: usize = 0;
    /// Offset of the length.
    pub const LEN: usize = 8;
    /// Offset of the command byte.
    pub const CMD: usize = 11;
    /// Offset of the status byte.
    pub const STATUS: usize = 12;
    /// CMD: End Of Packet.
    pub const CMD_EOP: u8 = 1 << 0;
    /// CMD: Insert FCS (Ethernet CRC).
    pub const CMD_IFCS: u8 = 1 << 1;
    /// CMD: Report Status: write DD back when done.
    pub const CMD_RS: u8 = 1 << 3;
    /// STATUS: Descriptor Done.
    pub const STATUS_DD: u8 = 1 << 0;
    /// Largest length of one legacy descriptor.
    pub const MAX_LEN: usize = 16288;
}
