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
//! - [`ports`]: builds a port's queues from a [`weir_config::PortConfig`], the
//!   one place that knows every driver, behind the [`PortFactory`] seam.
//! - [`server`]: the control socket's server side.
//! - [`state`]: the state file, the running configuration saved after each
//!   change ([`Dataplane::save_state`]).
//! - [`metrics`] and [`http`]: the OpenMetrics endpoint (`[metrics] listen`):
//!   the families a scrape reads from the dataplane, and the small HTTP/1.1
//!   server that answers `GET /metrics`.
//!
//! Errors are typed per boundary: [`ControlError`] (the runtime and its
//! requests), [`OpenError`] (a driver opening a port) and [`ServerError`]
//! (the control socket); [`error_chain`] renders one with its causes.
#![deny(unsafe_code)]

pub mod http;
pub mod metrics;
pub mod ports;
pub mod runtime;
pub mod server;
pub mod state;

pub use http::MetricsError;
pub use ports::{OpenError, PortDevice, PortFactory};
pub use runtime::{error_chain, run, spawn_housekeeping, ControlError, Dataplane};
pub use server::ServerError;
pub use state::StateError;
