//! Logging to stderr for both binaries (`weir`, `weir-bench`).

/// Logs to stderr at `base`, or more with `-v` (debug) and `-vv` (trace).
pub fn init(base: tracing::Level, verbose: u8) {
    let level = match verbose {
        0 => base,
        1 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
