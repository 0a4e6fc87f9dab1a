//! The operating-system boundary of the kernel-interface drivers: AF_PACKET sockets
//! and their shared-memory rings ([`packet`]; options and binding in [`packet_fd`],
//! public as `pmd::packet_fd`), TUN/TAP queues ([`tun`]) and interface ioctls
//! ([`netdev`]).
//!
//! Layer: ports (OS boundary). Depends on `libc` and `rustix` only. This is the one
//! place in the crate's kernel-interface drivers where `unsafe` is allowed; every
//! item exported from here is safe to use. `rustix` is used wherever it offers a
//! safe call (sockets, `read`/`write`/`send`, interface index look-up); `libc` is
//! used for what `rustix` does not cover: packet-socket options with structured
//! values, `sockaddr_ll` binding, the ring `mmap`, and the `SIOC*`/`TUNSETIFF`
//! interface ioctls.
//!
//! Packet path: [`packet::RingMap`]'s ring accessors and [`packet::PacketSocket::kick_tx`]
//! are; everything else is set-up or housekeeping.
#![allow(unsafe_code)]

pub(crate) mod netdev;
pub(crate) mod packet;
pub mod packet_fd;
pub(crate) mod tun;
