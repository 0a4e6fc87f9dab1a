//! Logging to stderr for both binaries (`weir`, `weir-bench`).
//!
//! What is logged: `-v`/`-vv` (debug, trace) if given, else `RUST_LOG`
//! (`tracing` filter directives: `info`, `weir_control=debug,warn`) if set,
//! else the binary's default level. Colour only when stderr is a terminal
//! and `NO_COLOR` is unset, so journald and files get plain text. `--log-format
//! json` writes one JSON object per event, for log shippers.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How events are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields`, `target`).
    Json,
}

/// The filter in force: `-v` beats `RUST_LOG`, which beats `base`. An
/// invalid `RUST_LOG` is reported and the default used rather than logging
/// nothing.
fn filter(
    base: tracing::Level,
    verbose: u8,
    rust_log: Option<&str>,
) -> (EnvFilter, Option<String>) {
    let level = match verbose {
        0 => None,
        1 => Some(tracing::Level::DEBUG),
        _ => Some(tracing::Level::TRACE),
    };
    if let Some(level) = level {
        return (EnvFilter::new(level.as_str()), None);
    }
    match rust_log.map(str::trim).filter(|s| !s.is_empty()) {
        None => (EnvFilter::new(base.as_str()), None),
        Some(directives) => match EnvFilter::try_new(directives) {
            Ok(f) => (f, None),
            Err(e) => (
                EnvFilter::new(base.as_str()),
                Some(format!(
                    "ignoring RUST_LOG={directives:?} ({e}); logging at {base}"
                )),
            ),
        },
    }
}

/// Whether to colour: a terminal, and no `NO_COLOR` (<https://no-color.org>).
fn colour(is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Logs to stderr at `base`, or as `-v`/`RUST_LOG` say, in `format`.
pub fn init(base: tracing::Level, verbose: u8, format: LogFormat) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let (filter, complaint) = filter(base, verbose, rust_log.as_deref());
    let ansi = colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Text => builder.with_ansi(ansi).init(),
        LogFormat::Json => builder.json().with_ansi(false).with_target(true).init(),
    }
    if let Some(complaint) = complaint {
        tracing::warn!("{complaint}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(f: &EnvFilter) -> String {
        f.to_string()
    }

    #[test]
    fn verbose_beats_rust_log_which_beats_the_default() {
        let (f, e) = filter(tracing::Level::WARN, 0, None);
        assert_eq!((shown(&f), e), ("warn".into(), None));
        let (f, e) = filter(tracing::Level::WARN, 0, Some("weir_control=debug,info"));
        assert!(e.is_none());
        assert!(shown(&f).contains("weir_control=debug"), "{f}");
        let (f, _) = filter(tracing::Level::WARN, 1, Some("error"));
        assert_eq!(shown(&f), "debug");
        let (f, _) = filter(tracing::Level::INFO, 2, None);
        assert_eq!(shown(&f), "trace");
        let (f, e) = filter(tracing::Level::INFO, 0, Some("  "));
        assert_eq!((shown(&f), e), ("info".into(), None));
    }

    #[test]
    fn a_bad_rust_log_falls_back_to_the_default_and_says_so() {
        let (f, e) = filter(tracing::Level::INFO, 0, Some("weir=loud"));
        assert_eq!(shown(&f), "info");
        let e = e.expect("a complaint");
        assert!(e.contains("RUST_LOG") && e.contains("weir=loud"), "{e}");
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(!colour(false, None));
        assert!(!colour(true, Some(std::ffi::OsStr::new("1"))));
        assert!(colour(true, Some(std::ffi::OsStr::new(""))));
    }
}
