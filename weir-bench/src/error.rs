//! Why `weir bench` stopped: [`BenchError`] for a run, [`MeasureError`] for
//! the measurements of one switch. Each module's own errors (arguments,
//! switches under test, peers, plots) are their sources.

use std::path::PathBuf;

use vhost_user::frontend::FrontendError;
use weir_host::affinity::IsolateError;

use crate::args::ArgsError;
use crate::peer::{PeerError, TunnelCounters};
use crate::plot::PlotError;
use crate::sut::SutError;

/// Why a `weir bench` run failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// An argument out of its range.
    #[error(transparent)]
    Args(#[from] ArgsError),
    /// No online CPU to put the worker on.
    #[error("no online CPU")]
    NoCpu,
    /// `--isolate` could not move threads off the worker's CPU.
    #[error("--isolate")]
    Isolate(#[source] IsolateError),
    /// The SIGINT/SIGTERM handlers.
    #[error("installing signal handlers")]
    Signals(#[source] std::io::Error),
    /// A switch under test did not start.
    #[error("starting {target}")]
    Start {
        /// The switch.
        target: &'static str,
        /// Why.
        #[source]
        source: SutError,
    },
    /// Measuring a switch failed.
    #[error("benchmarking {target}")]
    Measure {
        /// The switch.
        target: &'static str,
        /// Why.
        #[source]
        source: MeasureError,
    },
    /// The report could not be encoded as JSON.
    #[error("encoding the report as JSON")]
    Json(#[source] serde_json::Error),
    /// The JSON report could not be written.
    #[error("writing {}", path.display())]
    Write {
        /// The `--json` file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The plot could not be drawn or written.
    #[error("drawing {}", path.display())]
    Plot {
        /// The `--plot` file.
        path: PathBuf,
        /// Why.
        #[source]
        source: PlotError,
    },
}

/// Why the measurements of one switch ended early.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    /// SIGINT or SIGTERM.
    #[error("interrupted")]
    Interrupted,
    /// A frontend could not attach to the switch's vhost-user socket.
    #[error("attaching to {}", socket.display())]
    Attach {
        /// The socket.
        socket: PathBuf,
        /// The last attempt's error.
        #[source]
        source: FrontendError,
    },
    /// The peer's tunnel counters could not be read.
    #[error("reading the tunnel's counters")]
    TunnelCounters(#[source] PeerError),
    /// The peer forwarded the frames without its tunnel.
    #[error(
        "{target} forwarded the frames but not through its VXLAN tunnel: \
         {counters:?}"
    )]
    TunnelBypassed {
        /// The switch.
        target: &'static str,
        /// What its datapath and tunnel ports counted.
        counters: TunnelCounters,
    },
    /// No frame came back during the warm-up.
    #[error("{target} forwarded nothing during warm-up (received {got:?} per side)")]
    NothingForwarded {
        /// The switch.
        target: &'static str,
        /// Frames received on side A and B.
        got: [u64; 2],
    },
}
