//! weir's runtime: what `weir run` is once the configuration is read. It
//! owns the mbuf pools, the switch and its workers, opens ports through
//! the drivers (`pmd`, `vhost-user`) and adds or removes them while traffic
//! flows, publishing each change to the workers as a new table generation;
//! it serves the control socket, answering [`weir_api::Request`]s.
//!
//! Control plane only: the workers never take its lock and see its changes
//! through the switch's published tables and their command rings.
//!
//! - [`runtime`]: the [`Dataplane`] (start, port and bridge add/del, stats)
//!   and [`run`], the daemon's life from configuration to shutdown.
//! - [`ports`]: builds a port's queues from a [`weir_config::PortSpec`], the
//!   one place that knows every driver.
//! - [`server`]: the control socket's server side.
#![deny(unsafe_code)]

pub mod ports;
pub mod runtime;
pub mod server;

pub use runtime::{run, spawn_housekeeping, Dataplane};
