//! weir's port drivers: implementations of [`dataplane::Port`] for kernel
//! interfaces and devices.
//!
//! Layer: ports. Depends on `dataplane` (the port trait, mbufs, mempools, stats);
//! nothing in `dataplane` depends on this crate. The burst functions of every
//! driver are on the packet path and follow its rules: no allocation, no locks, no
//! logging, at most one syscall per burst.
//!
//! Unsafe code is confined to per-boundary modules (`afxdp::umem` for AF_XDP
//! rings and UMEM frames); the crate root denies it elsewhere.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod afxdp;
