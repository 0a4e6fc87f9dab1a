//! weir's dataplane core: buffers, rings, the port trait, the L2 switch and the
//! pinned poll-mode workers.
//!
//! Layering (bottom to top; no module imports one above it):
//! `ids` → `wire` → `mbuf`/`mempool`/`ring` → `port`/`stats` → `switch`/`tunnel` → `worker`.
//! This crate depends on neither `pmd` nor `vhost-user`: drivers implement
//! [`port::Port`] and hand their queues to the workers.
//!
//! Unsafe code is confined to the buffer-memory boundary modules (`mempool::hugepage`,
//! `mbuf`, `ring`) and `time` (TSC reads); everything else is safe Rust.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod ids;
pub mod switch;
pub mod wire;

pub use ids::{BridgeId, MacAddr, PortId, QueueId, VlanId, WorkerId};
pub mod mbuf;
pub mod mempool;
pub mod ring;

pub use mbuf::Mbuf;
pub use mempool::Mempool;
pub mod capture;
pub mod patch;
pub mod port;
pub mod stats;

pub use port::{Burst, LinkState, Port, MAX_BURST};
pub use stats::{DropReason, QueueStats};
#[cfg(any(test, feature = "test-utils"))]
pub mod testutil;
pub mod time;
pub mod tunnel;
pub mod worker;
