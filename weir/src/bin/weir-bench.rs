//! `weir-bench`: the benchmark, also run as `weir bench` (see the
//! `weir-bench` crate). Parses the command line, runs, and reports an error
//! with its causes as `weir bench: <message>` and exit status 1.

use clap::Parser as _;
use weir_bench::BenchCli;

fn main() -> std::process::ExitCode {
    let cli = BenchCli::parse();
    let level = match cli.verbose {
        0 => tracing::Level::WARN,
        1 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    match weir_bench::run(&cli.args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir bench: {:#}", anyhow::Error::new(e));
            std::process::ExitCode::FAILURE
        }
    }
}
