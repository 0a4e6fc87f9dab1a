//! weir's port drivers: every [`dataplane::Port`] implementation that is not a VM
//! vNIC (kernel interfaces, and in-memory and pcap ports for tests and benches).
//!
//! Layer: ports. Depends on `dataplane` (the port trait, mbufs, mempools, stats);
//! nothing in `dataplane` depends on this crate, and it never depends on
//! `vhost-user` or the daemon. The burst functions of every driver are on the
//! packet path and follow its rules: no heap allocation, no locks, no logging, at
//! most one syscall per burst where the kernel interface allows batching.
//!
//! VFIO poll-mode drivers (`e1000e`, `virtio_net`) sit on `vfio` (container,
//! group, device, DMA mappings) and `pci` (config space, BAR registers);
//! [`open_vfio`] picks one by PCI id from [`SUPPORTED_NICS`].
//!
//! Unsafe code is denied at the crate root; only the modules at an OS boundary
//! (`afxdp::umem` for AF_XDP rings and UMEM frames, `dpdk` for DPDK's C API
//! when the `dpdk` feature is on, `sys` for sockets and ioctls,
//! `vfio` for VFIO ioctls and DMA memory, `pci::bar` for MMIO) may allow it, each
//! block with a `// SAFETY:` note.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod afpacket;
pub mod afxdp;
#[cfg(feature = "dpdk")]
pub mod dpdk;
pub mod e1000e;
pub mod memport;
pub mod pcap;
pub mod pci;
mod sys;
pub mod tap;
pub mod vfio;
mod vfio_nic;
pub mod virtio_net;

pub use afpacket::{AfPacketConfig, AfPacketError, AfPacketPort};
pub use sys::packet_fd;
pub use tap::{TapError, TapPort};
pub use vfio::VfioError;
pub use vfio_nic::{open_vfio, SupportedNic, SupportedNics, VfioDriver, SUPPORTED_NICS};
