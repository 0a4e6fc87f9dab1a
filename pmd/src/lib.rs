//! weir's port drivers: every [`dataplane::Port`] implementation that is not a VM
//! vNIC (kernel interfaces, and in-memory and pcap ports for tests and benches).
//!
//! Layer: ports. Depends on `dataplane` (the port trait, mbufs, mempools, stats);
//! nothing in `dataplane` depends on this crate, and it never depends on
//! `vhost-user` or the daemon. The burst functions of every driver are on the
//! packet path and follow its rules: no heap allocation, no locks, no logging, at
//! most one syscall per burst where the kernel interface allows batching.
//!
//! Unsafe code is denied at the crate root; only the modules at an OS boundary
//! (`afxdp::umem` for AF_XDP rings and UMEM frames, `sys` for sockets and ioctls)
//! may allow it, each block with a `// SAFETY:` note.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod afpacket;
pub mod afxdp;
pub mod memport;
pub mod pcap;
mod sys;
pub mod tap;

pub use afpacket::{AfPacketConfig, AfPacketError, AfPacketPort};
pub use tap::{TapError, TapPort};
