//! Poll-mode vhost-user backend: VM vNICs (QEMU `-netdev vhost-user`) and DPDK
//! `net_virtio_user` attach to weir as ports.
//!
//! Layer: ports. Depends on `dataplane` (the [`Port`](dataplane::Port) trait,
//! mbufs, stats) and on rust-vmm's `vhost`/`vhost-user-backend` for the protocol.
//!
//! Split, bottom to top:
//! - [`guest_mem`]: the only unsafe module; checked access to guest memory.
//! - [`vring`]: weir's split-ring fast path (on the packet path).
//! - `shared`: handing rings to workers and confirmed stops.
//! - [`port`]: [`VhostUserPort`], one queue pair as a `Port`.
//! - `backend` (protocol) and `control` (socket, reconnects): the control thread,
//!   never on the packet path.
//!
//! Workers busy-poll the rings; kicks from the guest are suppressed and ignored.
//! The guest's call eventfd is kicked at most once per burst, only when the guest
//! asked for it (EVENT_IDX `used_event` or the NO_INTERRUPT flag).
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod backend;
mod control;
pub mod defs;
pub mod guest_mem;
pub mod msg;
pub mod port;
mod relay;
mod shared;
pub mod vring;

pub use control::{
    create, Mode, VhostUserConfig, VhostUserDevice, VhostUserError, MAX_QUEUE_PAIRS,
};
pub use port::VhostUserPort;
