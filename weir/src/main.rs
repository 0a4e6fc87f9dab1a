//! `weir`: the daemon (`weir run`) and its command-line client.
//!
//! Client verbs send one request over the control socket and print the
//! reply; `run`, `config check`, `demo`, `bench`, `devbind`, `sriov` and `doctor`
//! work locally. Any error prints
//! `weir: <message>` on stderr and exits with status 1.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser as _};

use cli::{AclCmd, Cli, ClientCall, Command, ConfigCmd, DevbindArgs, DoctorArgs, SriovArgs};
use weir_config::{Config, Host, ValidConfig};
use weir_host::doctor;
use weir_host::nic::{self, Sysfs, SystemRunner};

mod capture;
mod cli;
mod demo;
mod logging;
mod render;

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
    logging::init(base, cli.verbose, cli.log_format);
}

fn dispatch(cli: &Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Run(args) => {
            let mut config = Config::load_unvalidated(&args.config)?;
            // The socket in use: no port may take its path.
            config.control.socket =
                cli.socket_or(args.conn.socket.clone(), config.control.socket.clone());
            if let Some(listen) = args.metrics_listen {
                config.metrics = Some(weir_config::MetricsConfig { listen });
            }
            let host = Host::system();
            if config.apply_state(&host)? {
                tracing::info!(
                    state = config.origin(),
                    bridges = config.bridges.len(),
                    ports = config.ports.len(),
                    acls = config.acls.len(),
                    "bridges, ports, ACLs, mirrors and static FDB entries come from the state file, not from {}",
                    args.config.display()
                );
            }
            Ok(weir_control::run(ValidConfig::new(config, host)?)?)
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
        Command::Bench { args } => bench(args),
        Command::Devbind(args) => devbind(args),
        Command::Sriov(args) => sriov(args),
        Command::Doctor(args) => run_doctor(args),
        Command::Version(args) => version(cli, args),
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "weir", &mut out);
            print(&String::from_utf8(out)?)
        }
        Command::Man { dir } => man(dir.as_deref()),
        Command::Acl(AclCmd::Add(args)) => send(cli, args.client_call()?),
        Command::Capture(args) => capture::run(cli, args),
        Command::Port(_)
        | Command::Config(ConfigCmd::Dump(_))
        | Command::Bridge(_)
        | Command::Fdb(_)
        | Command::Ip(_)
        | Command::Neigh(_)
        | Command::Acl(_)
        | Command::Mirror(_)
        | Command::Stats(_)
        | Command::Pmd(_) => {
            let Some(call) = cli.command.client_call() else {
                anyhow::bail!("no request for this command");
            };
            send(cli, call)
        }
    }
}

/// `weir version`: this client's, then the daemon's; fails if the daemon
/// cannot be asked (after printing the client's).
fn version(cli: &Cli, args: &cli::ShowArgs) -> anyhow::Result<()> {
    let client = weir_api::VersionView::current();
    let socket = cli.client_socket(args.conn.socket.clone());
    let daemon = weir_api::request(&socket, &weir_api::Request::Version)
        .map_err(anyhow::Error::from)
        .and_then(|r| r.into_result().map_err(anyhow::Error::msg))
        .and_then(|d| {
            Ok(serde_json::from_value::<weir_api::VersionView>(
                d.unwrap_or_default(),
            )?)
        });
    if args.json {
        let v = serde_json::json!({
            "client": client,
            "daemon": daemon.as_ref().ok(),
            "socket": socket,
        });
        print(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
    } else {
        print(&format!("client: weir {}\n", client.version))?;
        if let Ok(d) = &daemon {
            print(&format!(
                "daemon: weir {} ({})\n",
                d.version,
                socket.display()
            ))?;
        }
    }
    daemon
        .map(|_| ())
        .with_context(|| format!("daemon: cannot ask {}", socket.display()))
}

/// `weir man`: `weir.1` to stdout, or every page into `dir`.
fn man(dir: Option<&std::path::Path>) -> anyhow::Result<()> {
    let cmd = Cli::command();
    match dir {
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut out)?;
            print(&String::from_utf8(out)?)
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(cmd, dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?;
            Ok(())
        }
    }
}

/// Sends a client verb's request and prints the reply.
fn send(cli: &Cli, call: ClientCall) -> anyhow::Result<()> {
    let socket = cli.client_socket(call.socket);
    let resp = weir_api::request(&socket, &call.request)?;
    if let Some(warning) = &resp.warning {
        eprintln!("weir: warning: {warning}");
    }
    let data = resp.into_result().map_err(anyhow::Error::msg)?;
    print(&render::render(call.output, data)?)
}

/// `weir bench ARGS`: runs `weir-bench ARGS`, found beside this binary (the
/// benchmark is a program of its own, so that the daemon links none of its
/// plotting and progress-display crates), else on `PATH`.
fn bench(args: &[std::ffi::OsString]) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt as _;
    let beside = std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name("weir-bench"))
        .filter(|p| p.is_file());
    let program = beside.unwrap_or_else(|| "weir-bench".into());
    let err = std::process::Command::new(&program).args(args).exec();
    Err(err).with_context(|| {
        format!(
            "running {} (`weir bench` needs the weir-bench binary installed beside weir)",
            program.display()
        )
    })
}

fn devbind(args: &DevbindArgs) -> anyhow::Result<()> {
    let sys = Sysfs::new("/sys");
    let state = std::path::Path::new(nic::DEFAULT_STATE_DIR);
    if args.list {
        let nics = nic::list_nics(&sys);
        if args.json {
            return print(&format!("{}\n", serde_json::to_string_pretty(&nics)?));
        }
        if nics.is_empty() {
            return print("no network PCI functions\n");
        }
        return print(&render::nics(&nics));
    }
    let Some(pci) = args.pci.as_deref() else {
        anyhow::bail!("give a PCI address or --list");
    };
    if args.unbind {
        let previous = nic::unbind_vfio(&sys, state, pci)?;
        let now = sys.driver(pci).unwrap_or_else(|| "no driver".into());
        let was = previous.unwrap_or_else(|| "unrecorded; kernel probe".into());
        return print(&format!(
            "{pci}: released from vfio-pci (restored: {was}; now: {now})\n"
        ));
    }
    let out = nic::bind_vfio(&sys, state, &SystemRunner, pci, args.force)
        .with_context(|| format!("binding {pci} to vfio-pci"))?;
    if out.already {
        return print(&format!("{pci}: already bound to vfio-pci\n"));
    }
    match sys.driver(pci).as_deref() {
        Some(nic::VFIO_PCI) => {}
        other => anyhow::bail!(
            "{pci}: vfio-pci did not take the device (driver now: {}); see `dmesg`",
            other.unwrap_or("none")
        ),
    }
    let was = out.previous.unwrap_or_else(|| "no driver".into());
    print(&format!(
        "{pci}: bound to vfio-pci (was {was}; `weir devbind --unbind {pci}` restores it)\n"
    ))
}

fn sriov(args: &SriovArgs) -> anyhow::Result<()> {
    let sys = Sysfs::new("/sys");
    let pf = args.pf.as_str();
    if let Some(n) = args.vfs {
        let writes =
            nic::set_num_vfs(&sys, pf, n).with_context(|| format!("setting VFs of {pf}"))?;
        if writes.is_empty() {
            return print(&format!("{pf}: already has {n} VFs\n"));
        }
        return print(&format!("{pf}: {n} VFs\n"));
    }
    if let Some(vf) = args.vf {
        let settings = nic::VfSettings {
            mac: args.mac.clone(),
            vlan: args.vlan,
            spoofchk: args.spoofchk,
        };
        let cmd = nic::set_vf(&sys, &SystemRunner, pf, vf, &settings)?;
        return print(&format!("{}\n", cmd.join(" ")));
    }
    let vfs = nic::list_vfs(&sys, &SystemRunner, pf)?;
    if args.json {
        return print(&format!("{}\n", serde_json::to_string_pretty(&vfs)?));
    }
    if vfs.is_empty() {
        return print(&format!(
            "{pf}: no VFs; create them with `weir sriov {pf} --vfs N`\n"
        ));
    }
    print(&render::vfs(&vfs))
}

fn run_doctor(args: &DoctorArgs) -> anyhow::Result<()> {
    let env = doctor::DoctorEnv::system();
    let config = match &args.config {
        Some(file) => {
            let config = Config::load_unvalidated(file)?;
            // Interfaces are one of the checks, not a reason to stop.
            let host = Host {
                check_ifaces: false,
                sysfs: env.sysfs.clone(),
            };
            config.validate_with(&host)?;
            config
        }
        None => Config::parse("", "(defaults)")?,
    };
    let checks = doctor::run(&env, &config);
    if args.json {
        print(&format!("{}\n", serde_json::to_string_pretty(&checks)?))?;
    } else {
        print(&doctor::render(&checks))?;
    }
    if doctor::failed(&checks) {
        anyhow::bail!("this host cannot run the configuration yet; apply the fixes above");
    }
    Ok(())
}

/// Writes to stdout; a closed pipe (`weir stats | head`) is not an error.
fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to stdout"),
    }
}
