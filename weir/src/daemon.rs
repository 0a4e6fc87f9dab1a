//! `weir run`: builds the dataplane from a [`Config`] and serves the control
//! socket until SIGINT or SIGTERM.
//!
//! Placeholder: serves the control socket and answers every request with
//! "not implemented".

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context as _;

use crate::api::{Request, Response};
use crate::config::Config;
use crate::control::ControlServer;

/// Runs the daemon in the foreground until SIGINT or SIGTERM.
///
/// # Errors
///
/// If the control socket cannot be bound or signal handlers installed.
pub fn run(cfg: Config, socket: PathBuf) -> anyhow::Result<()> {
    tracing::info!(
        config = cfg.origin(),
        ports = cfg.ports.len(),
        bridges = cfg.bridges.len(),
        "starting"
    );
    let server = ControlServer::bind(&socket)?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    let handler = |_req: Request| Response::error("not implemented");
    server.serve(Arc::new(handler), stop);
    Ok(())
}
