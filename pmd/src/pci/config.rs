//! PCI configuration space: the [`ConfigSpace`] access trait (implemented by
//! `vfio::VfioDevice`, and by a byte array in tests) and the capability-list walk
//! that virtio uses to find its register blocks.
//!
//! Reference: PCI Local Bus Specification 3.0, §6.7 (capabilities list).

/// Status register (PCI 3.0 §6.2.3); bit 4 says a capability list exists.
pub const STATUS: u16 = 0x06;
/// Status bit: capabilities list present.
pub const STATUS_CAP_LIST: u32 = 1 << 4;
/// Pointer to the first capability (PCI 3.0 §6.7).
pub const CAPABILITY_LIST: u16 = 0x34;
/// Capability id of vendor-specific capabilities (used by virtio 1.x, §4.1.4).
pub const CAP_ID_VENDOR: u8 = 0x09;

/// Read access to a device's PCI configuration space.
pub trait ConfigSpace {
    /// Reads `width` (1, 2 or 4) bytes at `offset`, little-endian, or None if the
    /// access failed.
    fn read_config(&self, offset: u16, width: usize) -> Option<u32>;

    /// Reads one byte (0xff on failure, as a master abort would).
    fn read_config8(&self, offset: u16) -> u8 {
        self.read_config(offset, 1).map_or(0xff, |v| v as u8)
    }

    /// Reads a little-endian dword (all ones on failure).
    fn read_config32(&self, offset: u16) -> u32 {
        self.read_config(offset, 4).unwrap_or(u32::MAX)
    }
}

/// One entry of the capability list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciCap {
    /// Capability id (e.g. [`CAP_ID_VENDOR`]).
    pub id: u8,
    /// Config-space offset of the capability header.
    pub offset: u16,
}

/// Walks the capability list. Stops at a null pointer, a pointer into the
/// standard header, or after 48 entries (the most that fit in 256 bytes), so a
/// looped list cannot hang the caller.
pub fn capabilities(cfg: &dyn ConfigSpace) -> Vec<PciCap> {
    let mut caps = Vec::new();
    if cfg.read_config(STATUS, 2).unwrap_or(0) & STATUS_CAP_LIST == 0 {
        return caps;
    }
    // The bottom two bits of every pointer are reserved (PCI 3.0 §6.7).
    let mut ptr = u16::from(cfg.read_config8(CAPABILITY_LIST) & 0xfc);
    while ptr >= 0x40 && caps.len() < 48 {
        caps.push(PciCap {
            id: cfg.read_config8(ptr),
            offset: ptr,
        });
        ptr = u16::from(cfg.read_config8(ptr + 1) & 0xfc);
    }
    caps
}

/// A config space held in memory, for tests of capability parsing.
#[cfg(test)]
pub(crate) struct FakeConfig(pub Vec<u8>);

#[cfg(test)]
impl ConfigSpace for FakeConfig {
    fn read_config(&self, offset: u16, width: usize) -> Option<u32> {
        let o = offset as usize;
        let b = self.0.get(o..o + width)?;
        let mut v = [0u8; 4];
        v[..width].copy_from_slice(b);
        Some(u32::from_le_bytes(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_follows_next_pointers_and_stops_on_loops() {
        let mut c = vec![0u8; 256];
        c[0x06] = 0x10;
        c[0x34] = 0x40;
        c[0x40] = 0x11; // MSI-X
        c[0x41] = 0x50;
        c[0x50] = CAP_ID_VENDOR;
        c[0x51] = 0x00;
        assert_eq!(
            capabilities(&FakeConfig(c.clone())),
            vec![
                PciCap {
                    id: 0x11,
                    offset: 0x40
                },
                PciCap {
                    id: CAP_ID_VENDOR,
                    offset: 0x50
                }
            ]
        );
        c[0x51] = 0x40; // loop back
        assert_eq!(capabilities(&FakeConfig(c.clone())).len(), 48);
        c[0x06] = 0; // no list
        assert!(capabilities(&FakeConfig(c)).is_empty());
    }
}
