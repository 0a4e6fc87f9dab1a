//! `weir-bench`: the benchmark, also run as `weir bench` (see the
//! `weir-bench` crate). Parses the command line, runs, and reports an error
//! with its causes as `weir bench: <message>` and exit status 1.

#[path = "../logging.rs"]
mod logging;

use clap::Parser as _;
use weir_bench::BenchCli;

fn main() -> std::process::ExitCode {
    let cli = BenchCli::parse();
    logging::init(tracing::Level::WARN, cli.verbose, logging::LogFormat::Text);
    match weir_bench::run(&cli.args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir bench: {:#}", anyhow::Error::new(e));
            std::process::ExitCode::FAILURE
        }
    }
}
