//! Memory-mapped device registers: the [`RegisterFile`] trait drivers are written
//! against, the real [`Bar`] (a VFIO BAR mapping, volatile accesses) and, for
//! tests, `FakeBar` (a byte array with write hooks that play the hardware).
//!
//! Layer: ports, MMIO boundary. `Bar`'s accessors are the only `unsafe` here.
//! Register offsets come from the drivers' `regs.rs`/`defs.rs`; an offset outside
//! the BAR or misaligned is a driver bug and panics.
#![allow(unsafe_code)]

use std::sync::Arc;

use crate::vfio::{MmioRegion, VfioDevice};

/// Byte-addressed device registers, as the drivers see them. Accesses take
/// `&self`: registers are device state, not Rust state, and a device's queues may
/// share one BAR across threads.
pub trait RegisterFile: Send + Sync {
    /// Reads the byte at `off`.
    fn read8(&self, off: usize) -> u8;
    /// Writes the byte at `off`.
    fn write8(&self, off: usize, val: u8);
    /// Reads the little-endian u16 at `off` (2-byte aligned).
    fn read16(&self, off: usize) -> u16;
    /// Writes the little-endian u16 at `off` (2-byte aligned).
    fn write16(&self, off: usize, val: u16);
    /// Reads the little-endian u32 at `off` (4-byte aligned).
    fn read32(&self, off: usize) -> u32;
    /// Writes the little-endian u32 at `off` (4-byte aligned).
    fn write32(&self, off: usize, val: u32);

    /// Writes a 64-bit register as two dwords, low half first (virtio 1.x §4.1.3.1
    /// allows this for the common configuration's 64-bit fields).
    fn write64_split(&self, off: usize, val: u64) {
        self.write32(off, val as u32);
        self.write32(off + 4, (val >> 32) as u32);
    }
}

impl<T: RegisterFile + ?Sized> RegisterFile for Arc<T> {
    fn read8(&self, off: usize) -> u8 {
        (**self).read8(off)
    }
    fn write8(&self, off: usize, val: u8) {
        (**self).write8(off, val)
    }
    fn read16(&self, off: usize) -> u16 {
        (**self).read16(off)
    }
    fn write16(&self, off: usize, val: u16) {
        (**self).write16(off, val)
    }
    fn read32(&self, off: usize) -> u32 {
        (**self).read32(off)
    }
    fn write32(&self, off: usize, val: u32) {
        (**self).write32(off, val)
    }
}

/// A mapped BAR of a VFIO device.
///
/// Invariant: `mmio` maps the whole BAR (`mmio.len()` bytes) while `self` lives;
/// the device fd is kept open alongside.
#[derive(Debug)]
pub struct Bar {
    mmio: MmioRegion,
    _device: Arc<VfioDevice>,
}

impl Bar {
    /// Maps BAR `index` of `device`.
    ///
    /// # Errors
    /// See [`VfioDevice::map_bar`].
    pub fn map(device: &Arc<VfioDevice>, index: u32) -> Result<Bar, crate::vfio::VfioError> {
        Ok(Bar {
            mmio: device.map_bar(index)?,
            _device: Arc::clone(device),
        })
    }

    /// Size of the BAR in bytes.
    pub fn len(&self) -> usize {
        self.mmio.len()
    }

    /// Never true (empty BARs are refused when mapping).
    pub fn is_empty(&self) -> bool {
        self.mmio.is_empty()
    }

    #[inline]
    fn ptr<T>(&self, off: usize) -> *mut T {
        let size = std::mem::size_of::<T>();
        assert!(
            off + size <= self.mmio.len() && off.is_multiple_of(size),
            "MMIO access at {off:#x} ({size} bytes) outside or misaligned in a BAR of {:#x}",
            self.mmio.len()
        );
        // SAFETY: bounds checked above, so the result lies inside the mapping.
        unsafe { self.mmio.as_ptr().as_ptr().add(off).cast() }
    }
}

macro_rules! bar_access {
    ($($read:ident, $write:ident, $t:ty;)*) => {$(
        #[inline]
        fn $read(&self, off: usize) -> $t {
            let p = self.ptr::<$t>(off);
            // SAFETY: `mmio` maps the BAR while `self` lives (type invariant); `ptr`
            // checked bounds and natural alignment. Volatile: every read is a bus
            // transaction the device sees; the compiler must neither drop nor merge it.
            <$t>::from_le(unsafe { p.read_volatile() })
        }
        #[inline]
        fn $write(&self, off: usize, val: $t) {
            let p = self.ptr::<$t>(off);
            // SAFETY: as in the read.
            unsafe { p.write_volatile(val.to_le()) }
        }
    )*};
}

impl RegisterFile for Bar {
    bar_access! {
        read8, write8, u8;
        read16, write16, u16;
        read32, write32, u32;
    }
}

#[cfg(any(test, feature = "test-utils"))]
pub use fake::{FakeBar, FakeRegs, WriteHook};

/// The fake register file (tests and the `test-utils` feature only).
#[cfg(any(test, feature = "test-utils"))]
mod fake {
    use super::RegisterFile;

    /// Register state handed to [`FakeBar`] hooks.
    pub struct FakeRegs<'a>(&'a mut [u8]);

    impl FakeRegs<'_> {
        /// Reads a little-endian u32.
        pub fn get32(&self, off: usize) -> u32 {
            u32::from_le_bytes(self.0[off..off + 4].try_into().expect("4 bytes"))
        }
        /// Writes a little-endian u32.
        pub fn set32(&mut self, off: usize, val: u32) {
            self.0[off..off + 4].copy_from_slice(&val.to_le_bytes());
        }
        /// Reads a little-endian u16.
        pub fn get16(&self, off: usize) -> u16 {
            u16::from_le_bytes([self.0[off], self.0[off + 1]])
        }
        /// Writes a little-endian u16.
        pub fn set16(&mut self, off: usize, val: u16) {
            self.0[off..off + 2].copy_from_slice(&val.to_le_bytes());
        }
        /// Reads a byte.
        pub fn get8(&self, off: usize) -> u8 {
            self.0[off]
        }
        /// Writes a byte.
        pub fn set8(&mut self, off: usize, val: u8) {
            self.0[off] = val;
        }
    }

    /// A hook run after a write to its register: gets the register file (already
    /// holding the written value) and the value.
    pub type WriteHook = Box<dyn FnMut(&mut FakeRegs<'_>, u32) + Send>;

    struct FakeState {
        regs: Vec<u8>,
        hooks: Vec<(usize, WriteHook)>,
        writes: Vec<(usize, u32)>,
    }

    /// A register file in memory for driver unit tests: registers hold what was
    /// written (or set with [`FakeBar::set32`]), every write is logged, and a hook per
    /// register simulates the device's reaction (a reset bit that self-clears, a
    /// doorbell that completes descriptors).
    pub struct FakeBar {
        state: std::sync::Mutex<FakeState>,
    }

    impl FakeBar {
        /// `len_bytes` of zeroed registers.
        pub fn new(len_bytes: usize) -> FakeBar {
            FakeBar {
                state: std::sync::Mutex::new(FakeState {
                    regs: vec![0; len_bytes],
                    hooks: Vec::new(),
                    writes: Vec::new(),
                }),
            }
        }

        fn with<R>(&self, f: impl FnOnce(&mut FakeState) -> R) -> R {
            f(&mut self.state.lock().expect("FakeBar lock"))
        }

        /// Runs `hook` after every write to register `off`.
        pub fn on_write(&self, off: usize, hook: WriteHook) {
            self.with(|s| s.hooks.push((off, hook)));
        }

        /// Sets a register as the device would (no hook, not logged).
        pub fn set32(&self, off: usize, val: u32) {
            self.with(|s| FakeRegs(&mut s.regs).set32(off, val));
        }

        /// Sets a 16-bit register as the device would.
        pub fn set16(&self, off: usize, val: u16) {
            self.with(|s| FakeRegs(&mut s.regs).set16(off, val));
        }

        /// Sets a byte register as the device would.
        pub fn set8(&self, off: usize, val: u8) {
            self.with(|s| s.regs[off] = val);
        }

        /// Every write so far as `(offset, value)`, in order.
        pub fn writes(&self) -> Vec<(usize, u32)> {
            self.with(|s| s.writes.clone())
        }

        /// Writes so far to register `off`.
        pub fn writes_to(&self, off: usize) -> Vec<u32> {
            self.with(|s| {
                s.writes
                    .iter()
                    .filter(|w| w.0 == off)
                    .map(|w| w.1)
                    .collect()
            })
        }

        /// Forgets the write log.
        pub fn clear_writes(&self) {
            self.with(|s| s.writes.clear());
        }

        fn write(&self, off: usize, bytes: &[u8], val: u32) {
            self.with(|s| {
                s.regs[off..off + bytes.len()].copy_from_slice(bytes);
                s.writes.push((off, val));
                let FakeState { regs, hooks, .. } = s;
                for (o, h) in hooks.iter_mut() {
                    if *o == off {
                        h(&mut FakeRegs(regs), val);
                    }
                }
            });
        }
    }

    impl RegisterFile for FakeBar {
        fn read8(&self, off: usize) -> u8 {
            self.with(|s| s.regs[off])
        }
        fn write8(&self, off: usize, val: u8) {
            self.write(off, &[val], val.into());
        }
        fn read16(&self, off: usize) -> u16 {
            self.with(|s| FakeRegs(&mut s.regs).get16(off))
        }
        fn write16(&self, off: usize, val: u16) {
            self.write(off, &val.to_le_bytes(), val.into());
        }
        fn read32(&self, off: usize) -> u32 {
            self.with(|s| FakeRegs(&mut s.regs).get32(off))
        }
        fn write32(&self, off: usize, val: u32) {
            self.write(off, &val.to_le_bytes(), val);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_bar_logs_writes_and_runs_hooks() {
        let bar = FakeBar::new(64);
        // A self-clearing reset bit, as on the 82574's CTRL.RST.
        bar.on_write(0, Box::new(|r, v| r.set32(0, v & !(1 << 26))));
        bar.write32(0, (1 << 26) | 1);
        assert_eq!(bar.read32(0), 1);
        bar.write16(8, 0xbeef);
        assert_eq!((bar.read8(8), bar.read8(9)), (0xef, 0xbe));
        assert_eq!(bar.writes(), vec![(0, (1 << 26) | 1), (8, 0xbeef)]);
        assert_eq!(bar.writes_to(8), vec![0xbeef]);
    }
}
