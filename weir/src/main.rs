//! `weir`: the daemon (`weir run`) and its command-line client.
//!
//! Client verbs send one request over the control socket and print the
//! reply; `run`, `config check` and `demo` work locally. Any error prints
//! `weir: <message>` on stderr and exits with status 1.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;

use weir::cli::{self, Cli, Command, ConfigCmd};
use weir::config::{Config, Host};
use weir::{control, daemon, demo};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    match dispatch(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(cli: &Cli) {
    // Client verbs stay quiet unless asked; the daemon reports at info.
    let base = match cli.command {
        Command::Run(_) | Command::Demo => tracing::Level::INFO,
        _ => tracing::Level::WARN,
    };
    let level = match cli.verbose {
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

fn dispatch(cli: &Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Run(args) => {
            let config = Config::load(&args.config)?;
            let socket = cli.socket_or(args.conn.socket.clone(), config.control.socket.clone());
            daemon::run(config, socket)
        }
        Command::Config(ConfigCmd::Check {
            file,
            no_iface_check,
            json,
        }) => {
            let config = Config::load_unvalidated(file)?;
            let host = Host {
                check_ifaces: !no_iface_check,
                ..Host::system()
            };
            config.validate_with(&host)?;
            if *json {
                let mut text = serde_json::to_string_pretty(&config)?;
                text.push('\n');
                print(&text)
            } else {
                print(&format!("{}: ok\n", file.display()))
            }
        }
        Command::Demo => demo::run(),
        Command::Port(_)
        | Command::Bridge(_)
        | Command::Fdb(_)
        | Command::Stats(_)
        | Command::Pmd(_) => {
            let Some(call) = cli.command.client_call() else {
                anyhow::bail!("no request for this command");
            };
            let socket = cli.client_socket(call.socket);
            let data = control::request(&socket, &call.request)?
                .into_result()
                .map_err(anyhow::Error::msg)?;
            print(&cli::render(call.output, data)?)
        }
    }
}

/// Writes to stdout; a closed pipe (`weir stats | head`) is not an error.
fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to stdout"),
    }
}
