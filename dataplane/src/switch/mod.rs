//! L2 switch: MAC learning, forwarding and flooding.
//!
//! Layer: switch. Sees ports only as [`PortId`](crate::PortId).

pub mod fdb;
