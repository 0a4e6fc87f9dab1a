//! Poll-mode port drivers: each type here implements [`dataplane::Port`] for one
//! kind of device queue.
//!
//! Layer: ports. Depends on `dataplane` only (plus OS crates); nothing in the
//! workspace below the daemon depends on this crate.
//!
//! Kernel-interface ports:
//! - [`afpacket`]: an existing interface through an `AF_PACKET` socket with
//!   `TPACKET_V3` memory-mapped rings.
//! - [`tap`]: a TAP interface created for the port.
//!
//! Unsafe code lives only in the OS-boundary module `sys` (sockets, ring
//! mapping, interface ioctls); the drivers themselves are safe Rust.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod afpacket;
mod sys;
pub mod tap;

pub use afpacket::{AfPacketConfig, AfPacketError, AfPacketPort};
pub use tap::{TapError, TapPort};
