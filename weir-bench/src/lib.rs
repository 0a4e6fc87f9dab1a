//! `weir-bench` (also run as `weir bench`): forwarding rate, loss, RFC 2544
//! NDR/PDR, latency and cycles per packet, through the real vhost-user path,
//! with no hardware and no root. Its own binary, so that the daemon links
//! none of its plotting, font and progress-display crates.
//!
//! Control side; the generator in [`traffic`] has a fast path of its own.
//!
//! ```text
//!   generator thread (gen CPU)                    switch under test (worker CPU)
//!   ┌──────────────────────────┐  vhost-user    ┌──────────────────────────────┐
//!   │ frontend A  tx ──────────┼──────────────▶ │ port A ─┐                    │
//!   │             rx ◀─────────┼─────────────── │         │ bridge (weir),     │
//!   │ frontend B  tx ──────────┼──────────────▶ │ port B ─┘ io fwd (testpmd),  │
//!   │             rx ◀─────────┼─────────────── │           NORMAL (OVS)       │
//!   └──────────────────────────┘  shared memfd  └──────────────────────────────┘
//! ```
//!
//! The frontends are weir's own virtio-net driver
//! ([`vhost_user::frontend`]): the switch sees what a VM would give it.
//! weir runs in-process (the daemon's [`Dataplane`], one worker) or is a
//! running daemon reached with `--socket`; the peers are started by
//! [`peer`]. Every switch gets identical traffic; both directions are summed.

pub mod args;
pub mod cpu;
pub mod loopback;
pub mod peer;
pub mod plot;
pub mod report;
pub mod traffic;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use indicatif::{ProgressBar, ProgressStyle};
use vhost_user::frontend::{FrontendConfig, VirtioNetFrontend};

pub use args::{BenchArgs, BenchCli, BenchPeer};
use report::{
    Machine, PortDelta, Report, RunRecord, Search, SearchStep, TrialReport, WorkerCounters,
};
use traffic::{Live, SizeMix, TrialSpec};
use weir_api::{self as control, BridgeInfo, PortInfo, Request, StageCycles, WorkerView};
use weir_config::{BridgeSpec, Config, CpuList, Host, PortSpec, PortType};
use weir_control::{spawn_housekeeping, Dataplane};

/// `weir-bench`'s `main`: parses the command line, runs, and reports an
/// error as `weir bench: <message>` with exit status 1.
pub fn main() -> std::process::ExitCode {
    use clap::Parser as _;
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
    match run(&cli.args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Which switch a measurement is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// weir (in-process or a running daemon).
    Weir,
    /// A peer.
    Peer(BenchPeer),
}

impl Target {
    /// Name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Target::Weir => "weir",
            Target::Peer(BenchPeer::Testpmd) => "testpmd",
            Target::Peer(BenchPeer::Ovs) => "ovs",
            Target::Peer(BenchPeer::Loopback) => "loopback",
        }
    }
}

/// Offered rate of the main measurement.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Rate {
    Max,
    Mpps(f64),
    Percent(f64),
}

fn parse_rate(s: &str) -> anyhow::Result<Rate> {
    let s = s.trim().to_ascii_lowercase();
    let num = |t: &str| -> anyhow::Result<f64> {
        let v: f64 = t
            .trim()
            .parse()
            .map_err(|_| anyhow!("bad --rate {s:?}: expected max, <N>mpps or <N>%"))?;
        if !(v.is_finite() && v > 0.0) {
            bail!("--rate must be positive");
        }
        Ok(v)
    };
    if s == "max" || s == "unlimited" {
        Ok(Rate::Max)
    } else if let Some(p) = s.strip_suffix('%') {
        let v = num(p)?;
        if v > 100.0 {
            bail!("--rate {v}% is above the maximum");
        }
        Ok(Rate::Percent(v))
    } else if let Some(m) = s.strip_suffix("mpps") {
        Ok(Rate::Mpps(num(m)?))
    } else {
        Ok(Rate::Mpps(num(&s)?))
    }
}

/// Parses `--size` values: bytes with FCS (64..=9000) or `imix`.
///
/// # Errors
/// A value that is neither.
pub fn parse_sizes(list: &[String]) -> anyhow::Result<Vec<SizeMix>> {
    let mut out = Vec::new();
    for s in list {
        let s = s.trim();
        if s.eq_ignore_ascii_case("imix") {
            out.push(SizeMix::imix());
            continue;
        }
        let b: u32 = s
            .parse()
            .map_err(|_| anyhow!("bad --size {s:?}: expected bytes (64..=9000) or imix"))?;
        if !(64..=9000).contains(&b) {
            bail!("--size {b}: frames are 64..=9000 bytes");
        }
        out.push(SizeMix::fixed(b));
    }
    if out.is_empty() {
        bail!("no --size given");
    }
    Ok(out)
}

/// TSC ticks per second, measured against the monotonic clock.
fn tsc_hz() -> f64 {
    let (c0, t0) = (dataplane::time::cycles(), Instant::now());
    std::thread::sleep(Duration::from_millis(200));
    let (c1, t1) = (dataplane::time::cycles(), Instant::now());
    c1.wrapping_sub(c0) as f64 / (t1 - t0).as_secs_f64()
}

fn pin_to(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    if let Err(e) = rustix::thread::sched_setaffinity(None, &set) {
        tracing::warn!(cpu, "cannot pin the generator: {e}");
    }
}

/// A switch under test, up and listening on two vhost-user sockets.
enum Sut {
    InProcess {
        dp: Arc<Dataplane>,
        hk: Option<std::thread::JoinHandle<()>>,
        hk_stop: Arc<AtomicBool>,
        _dir: TempDir,
    },
    Daemon {
        /// Removes what the bench added when dropped.
        lease: DaemonLease,
        /// The daemon's process, for the CPU time of its workers.
        pid: Option<u32>,
        _dir: TempDir,
    },
    Peer(peer::PeerProcess),
    Loopback(loopback::Loopback),
}

/// A private directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `weir-bench-<pid>-<tag>` (mode 0755, so a daemon running as
    /// another user can create sockets only if it is root; bench as root or
    /// point `TMPDIR` at a shared place).
    ///
    /// # Errors
    /// If the directory cannot be created.
    pub fn new(tag: &str) -> anyhow::Result<TempDir> {
        let p = std::env::temp_dir().join(format!("weir-bench-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(TempDir(p))
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const PORT_NAMES: [&str; 2] = ["bench-a", "bench-b"];

impl Sut {
    fn start(
        target: Target,
        args: &BenchArgs,
        max_frame: u32,
        worker_cpu: usize,
        confined: Option<&weir_host::affinity::Confined>,
    ) -> anyhow::Result<(Sut, [PathBuf; 2])> {
        match target {
            Target::Weir => match &args.socket {
                None => Self::in_process(args, max_frame, worker_cpu),
                Some(s) => Self::daemon(s, args),
            },
            Target::Peer(BenchPeer::Loopback) => {
                let (l, socks) = loopback::Loopback::start(worker_cpu, max_frame)?;
                Ok((Sut::Loopback(l), socks))
            }
            Target::Peer(p) => {
                // The peer picks its own CPUs (EAL lcores, pmd-cpu-mask) from
                // the mask it is started with: give it the whole one.
                let _whole = confined.map(weir_host::affinity::Confined::widen);
                let proc = peer::PeerProcess::start(p, worker_cpu, max_frame, args.queue_size)?;
                let socks = proc.sockets();
                Ok((Sut::Peer(proc), socks))
            }
        }
    }

    fn in_process(
        args: &BenchArgs,
        max_frame: u32,
        worker_cpu: usize,
    ) -> anyhow::Result<(Sut, [PathBuf; 2])> {
        let dir = TempDir::new("weir")?;
        let mut cfg = Config::default();
        cfg.dataplane.workers = Some(
            worker_cpu
                .to_string()
                .parse::<CpuList>()
                .map_err(|e| anyhow!("worker CPU: {e}"))?,
        );
        // Jumbo frames need a data room that holds them whole.
        if max_frame + 4 > cfg.dataplane.mbuf_size {
            cfg.dataplane.mbuf_size = (max_frame + 4).next_multiple_of(1024);
        }
        cfg.bridges.push(BridgeSpec {
            name: args.bridge.clone(),
        });
        let socks = PORT_NAMES.map(|n| dir.path().join(format!("{n}.sock")));
        for (name, sock) in PORT_NAMES.iter().zip(&socks) {
            let mut p = PortSpec::new(*name, PortType::VhostUser);
            p.socket = Some(sock.clone());
            p.bridge = Some(args.bridge.clone());
            cfg.ports.push(p);
        }
        let dp = Arc::new(Dataplane::start(&cfg, Host::system()).context("starting weir")?);
        let hk_stop = Arc::new(AtomicBool::new(false));
        let hk = spawn_housekeeping(Arc::downgrade(&dp), hk_stop.clone(), Duration::from_secs(1))
            .context("starting housekeeping")?;
        Ok((
            Sut::InProcess {
                dp,
                hk: Some(hk),
                hk_stop,
                _dir: dir,
            },
            socks,
        ))
    }

    fn daemon(socket: &Path, args: &BenchArgs) -> anyhow::Result<(Sut, [PathBuf; 2])> {
        let dir = TempDir::new("daemon")?;
        let mut client = control::Client::connect(socket)?;
        let pid = client.peer_pid();
        if pid.is_none() {
            tracing::warn!("the daemon's process id is unknown; its CPU time is not reported");
        }
        let bridges = call(&mut client, &Request::BridgeList)?.unwrap_or_default();
        let exists = bridges
            .as_array()
            .is_some_and(|a| a.iter().any(|b| b["name"] == args.bridge.as_str()));
        // From here on, whatever was added is removed again on any exit.
        let mut lease = DaemonLease {
            socket: socket.to_path_buf(),
            ports: Vec::new(),
            bridge: None,
        };
        if !exists {
            call(
                &mut client,
                &Request::BridgeAdd {
                    name: args.bridge.clone(),
                },
            )
            .context("creating the bench bridge")?;
            lease.bridge = Some(args.bridge.clone());
        }
        let tag = std::process::id() % 100_000;
        let socks = PORT_NAMES.map(|n| dir.path().join(format!("{n}.sock")));
        for (base, sock) in PORT_NAMES.iter().zip(&socks) {
            let name = format!("{base}-{tag}");
            let mut p = PortSpec::new(name.clone(), PortType::VhostUser);
            p.socket = Some(sock.clone());
            p.bridge = Some(args.bridge.clone());
            call(&mut client, &Request::PortAdd(Box::new(p)))
                .with_context(|| format!("adding port {name} to the daemon"))?;
            lease.ports.push(name);
        }
        Ok((
            Sut::Daemon {
                lease,
                pid,
                _dir: dir,
            },
            socks,
        ))
    }

    /// The switch's worker counters (busy/idle TSC cycles, rx packets), for
    /// cycles per packet; None for peers.
    fn counters(&self) -> Option<WorkerCounters> {
        let views: Vec<WorkerView> = match self {
            Sut::InProcess { dp, .. } => dp.workers(),
            Sut::Daemon { lease, .. } => {
                let data = control::request(&lease.socket, &Request::PmdShow)
                    .ok()?
                    .into_result()
                    .ok()??;
                serde_json::from_value(data).ok()?
            }
            Sut::Peer(_) | Sut::Loopback(_) => return None,
        };
        Some(WorkerCounters {
            busy_cycles: views.iter().map(|w| w.busy_cycles).sum(),
            idle_cycles: views.iter().map(|w| w.idle_cycles).sum(),
            rx_packets: views.iter().map(|w| w.rx_packets).sum(),
            stages: views
                .iter()
                .fold(StageCycles::default(), |a, w| StageCycles {
                    rx: a.rx + w.stages.rx,
                    switch: a.switch + w.stages.switch,
                    tx: a.tx + w.stages.tx,
                    packets: a.packets + w.stages.packets,
                }),
        })
    }

    /// Counters of the two bench ports (weir only): rx, tx and drops by
    /// reason, summed.
    fn port_counters(&self) -> Option<PortDelta> {
        let (infos, names): (Vec<PortInfo>, Vec<String>) = match self {
            Sut::InProcess { dp, .. } => (
                dp.port_list(),
                PORT_NAMES.iter().map(|n| n.to_string()).collect(),
            ),
            Sut::Daemon { lease, .. } => {
                let data = control::request(&lease.socket, &Request::PortList)
                    .ok()?
                    .into_result()
                    .ok()??;
                (serde_json::from_value(data).ok()?, lease.ports.clone())
            }
            Sut::Peer(_) | Sut::Loopback(_) => return None,
        };
        let mut sum = PortDelta::default();
        for p in infos.iter().filter(|p| names.contains(&p.name)) {
            sum.rx_packets += p.stats.rx_packets;
            sum.tx_packets += p.stats.tx_packets;
            for (reason, n) in p.stats.drops_by_name() {
                *sum.drops.entry(reason.to_owned()).or_default() += n;
            }
        }
        Some(sum)
    }

    /// The switch's forwarding threads, for CPU time.
    fn threads(&self) -> Option<cpu::Threads> {
        let own = |prefix: &str| cpu::Threads {
            pid: None,
            name_prefix: Some(prefix.into()),
        };
        match self {
            Sut::InProcess { .. } => Some(own("weir-worker")),
            Sut::Loopback(_) => Some(own("bench-loopback")),
            Sut::Daemon { pid, .. } => pid.map(|pid| cpu::Threads {
                pid: Some(pid),
                name_prefix: Some("weir-worker".into()),
            }),
            Sut::Peer(p) => p.threads(),
        }
    }

    fn stop(self) {
        match self {
            Sut::InProcess {
                dp,
                mut hk,
                hk_stop,
                _dir,
            } => {
                // Relaxed: a plain flag; join() synchronises.
                hk_stop.store(true, Ordering::Relaxed);
                if let Some(h) = hk.take() {
                    let _ = h.join();
                }
                match Arc::try_unwrap(dp) {
                    Ok(dp) => dp.shutdown(),
                    Err(_) => tracing::warn!("dataplane still referenced at shutdown"),
                }
            }
            // Dropping the lease removes the ports and bridge.
            Sut::Daemon { lease, .. } => drop(lease),
            Sut::Peer(p) => p.stop(),
            Sut::Loopback(l) => l.stop(),
        }
    }
}

/// One control request; the daemon's refusal becomes an error.
fn call(client: &mut control::Client, req: &Request) -> anyhow::Result<Option<serde_json::Value>> {
    client
        .call(req)?
        .into_result()
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("{} request", req.cmd()))
}

/// The ports (and the bridge, if it created it) `weir bench` added to a
/// running daemon; dropping it removes them, so they go on success, on an
/// error, on Ctrl-C and when unwinding from a panic.
struct DaemonLease {
    socket: PathBuf,
    ports: Vec<String>,
    bridge: Option<String>,
}

impl Drop for DaemonLease {
    fn drop(&mut self) {
        let mut client = match control::Client::connect(&self.socket) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("cannot remove the bench ports: {e:#}");
                return;
            }
        };
        for name in self.ports.drain(..) {
            if let Err(e) = call(&mut client, &Request::PortDel { name: name.clone() }) {
                tracing::warn!(port = %name, "removing bench port: {e:#}");
            }
        }
        let Some(bridge) = self.bridge.take() else {
            return;
        };
        // Ports someone else attached meanwhile would be left detached: keep
        // the bridge then.
        let others = call(&mut client, &Request::BridgeList)
            .ok()
            .flatten()
            .and_then(|v| serde_json::from_value::<Vec<BridgeInfo>>(v).ok())
            .and_then(|bs| bs.into_iter().find(|b| b.name == bridge))
            .map_or(0, |b| b.ports.len());
        if others > 0 {
            tracing::warn!(%bridge, "bench bridge kept: {others} other ports joined it");
        } else if let Err(e) = call(
            &mut client,
            &Request::BridgeDel {
                name: bridge.clone(),
            },
        ) {
            tracing::warn!(%bridge, "removing bench bridge: {e:#}");
        }
    }
}

/// Connects a frontend to each socket, retrying while the switch starts.
fn connect_ports(
    socks: &[PathBuf; 2],
    cfg: &FrontendConfig,
    timeout: Duration,
    stop: &AtomicBool,
) -> anyhow::Result<[VirtioNetFrontend; 2]> {
    let end = Instant::now() + timeout;
    let connect = |s: &Path| loop {
        match VirtioNetFrontend::connect(s, cfg) {
            Ok(f) => return Ok(f),
            // Relaxed: a plain flag.
            Err(_) if stop.load(Ordering::Relaxed) => bail!("interrupted"),
            Err(e) if Instant::now() < end => {
                tracing::debug!("{}: {e:#}; retrying", s.display());
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => {
                return Err(anyhow::Error::new(e))
                    .with_context(|| format!("attaching to {}", s.display()))
            }
        }
    };
    Ok([connect(&socks[0])?, connect(&socks[1])?])
}

/// Everything one bench invocation needs between measurements.
struct Bench<'a> {
    args: &'a BenchArgs,
    gen_cpu: usize,
    tsc_hz: f64,
    progress: bool,
    /// Set by SIGINT/SIGTERM: end the current trial and clean up.
    stop: Arc<AtomicBool>,
}

impl Bench<'_> {
    /// Runs one trial on a pinned generator thread with a live display.
    fn trial(
        &self,
        ports: &mut [VirtioNetFrontend; 2],
        sut: &Sut,
        spec: &TrialSpec,
        label: &str,
    ) -> anyhow::Result<TrialReport> {
        let live = Live::default();
        let bar = if self.progress {
            let b = ProgressBar::new(spec.duration.as_millis() as u64);
            b.set_style(
                ProgressStyle::with_template("{prefix:>24} [{bar:30}] {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            b.set_prefix(label.to_string());
            b
        } else {
            ProgressBar::hidden()
        };
        let threads = sut.threads();
        let cpu_before = threads.as_ref().and_then(cpu::Threads::cpu_ns);
        let before = sut.counters();
        let ports_before = sut.port_counters();
        let started = Instant::now();
        let res = std::thread::scope(|s| {
            let gen = s.spawn(|| {
                pin_to(self.gen_cpu);
                traffic::run_trial(ports, spec, &live, self.tsc_hz, &self.stop)
            });
            let (mut last_rx, mut last_t) = (0u64, Instant::now());
            while !gen.is_finished() {
                std::thread::sleep(Duration::from_millis(100));
                let rx = live.rx.load(Ordering::Relaxed);
                let now = Instant::now();
                let mpps = (rx - last_rx.min(rx)) as f64 / (now - last_t).as_secs_f64() / 1e6;
                (last_rx, last_t) = (rx, now);
                bar.set_position(started.elapsed().as_millis() as u64);
                bar.set_message(format!(
                    "{mpps:6.2} Mpps  tx {} rx {}",
                    live.tx.load(Ordering::Relaxed),
                    rx
                ));
            }
            gen.join()
        });
        let after = sut.counters();
        let ports_after = sut.port_counters();
        let cpu_after = threads.as_ref().and_then(cpu::Threads::cpu_ns);
        bar.finish_and_clear();
        let res = match res {
            Ok(r) => r,
            Err(p) => std::panic::resume_unwind(p),
        };
        // Relaxed: a plain flag; the generator thread was joined.
        if self.stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        let cyc = match (before, after) {
            (Some(b), Some(a)) => Some(a.since(&b)),
            _ => None,
        };
        let switch_cpu = match (cpu_before, cpu_after) {
            (Some(b), Some(a)) => Some(a.saturating_sub(b)),
            _ => None,
        };
        let ports = match (ports_before, ports_after) {
            (Some(b), Some(a)) => Some(a.since(&b)),
            _ => None,
        };
        let t = TrialReport::new(spec, &res, cyc, switch_cpu, ports.as_ref(), self.tsc_hz);
        if t.lost_frames > 0 {
            tracing::info!(label, lost = t.lost_frames, "{}", t.loss.summary());
        }
        Ok(t)
    }

    /// RFC 2544 §26.1 binary search: the highest offered rate whose loss is
    /// at most `max_loss_pct`, up to `max_pps`, to `resolution` of `max_pps`.
    /// The search starts from 0, or from `floor`, a search with a stricter
    /// loss limit (the NDR for the PDR): its rate is known to pass, and the
    /// result is never below it, so the PDR is never below the NDR of the
    /// same repeat.
    #[allow(clippy::too_many_arguments)]
    fn search(
        &self,
        ports: &mut [VirtioNetFrontend; 2],
        sut: &Sut,
        base: &TrialSpec,
        max_pps: f64,
        max_loss_pct: f64,
        floor: Option<&Search>,
        label: &str,
    ) -> anyhow::Result<Search> {
        let step = max_pps * self.args.resolution / 100.0;
        let (mut lo, mut hi) = (
            floor.map_or(0.0, |f| (f.rate_mpps * 1e6).min(max_pps)),
            max_pps,
        );
        let mut best: Option<TrialReport> = floor.and_then(|f| f.at_rate.clone());
        let mut trials = 0u32;
        let mut steps = Vec::new();
        let mut rate = hi;
        loop {
            let spec = TrialSpec {
                rate_pps: Some(rate),
                // A search measures loss at a rate: stalls skip, never burst.
                catch_up: false,
                duration: Duration::from_secs_f64(self.args.trial),
                ..base.clone()
            };
            let t = self.trial(ports, sut, &spec, &format!("{label} {:.2}Mpps", rate / 1e6))?;
            trials += 1;
            steps.push(SearchStep {
                offered_mpps: rate / 1e6,
                loss_pct: t.loss_pct,
                loss: if t.lost_frames > 0 {
                    t.loss.summary()
                } else {
                    String::new()
                },
            });
            if t.loss_pct <= max_loss_pct {
                lo = rate;
                best = Some(t);
            } else {
                hi = rate;
            }
            if hi - lo <= step || trials >= 30 {
                break;
            }
            rate = (lo + hi) / 2.0;
        }
        Ok(Search {
            max_loss_pct,
            rate_mpps: lo / 1e6,
            trials,
            at_rate: best,
            steps,
        })
    }
}

/// Runs `weir bench`.
///
/// # Errors
/// Bad arguments, a switch that cannot start, or no frames forwarded.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let sizes = parse_sizes(&args.size)?;
    let rate = parse_rate(&args.rate)?;
    if !(args.duration > 0.0 && args.trial > 0.0) {
        bail!("--duration and --trial must be positive");
    }
    if !(args.resolution > 0.0 && args.resolution <= 50.0) {
        bail!("--resolution must be in (0, 50] percent");
    }
    if let Some(p) = args.latency_at {
        if !(p > 0.0 && p <= 100.0) {
            bail!("--latency-at must be in (0, 100] percent of the NDR");
        }
    }
    if args.flows == 0 || args.flows > 1 << 20 {
        bail!("--flows must be 1..=1048576");
    }
    if args.repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    if let Some(p) = &args.plot {
        plot::format(p)?;
    }
    let cpus = Host::system().online_cpus();
    let worker_cpu = args
        .worker_cpu
        .or_else(|| cpus.last().copied())
        .ok_or_else(|| anyhow!("no online CPU"))?;
    let gen_cpu = args
        .gen_cpu
        .or_else(|| cpus.iter().copied().find(|&c| c != worker_cpu))
        .unwrap_or(worker_cpu);
    if gen_cpu == worker_cpu {
        eprintln!("weir bench: generator and worker share CPU {gen_cpu}; figures will be low");
    }
    // The bench's own threads (vhost-user control, housekeeping, progress)
    // stay off the worker's CPU; the generator pins itself to its own.
    let confined = weir_host::affinity::confine_off(&[worker_cpu]);
    let isolation = if args.isolate {
        let iso = weir_host::affinity::isolate_others(&[worker_cpu], &cpus)?;
        let s = iso.summary;
        eprintln!(
            "weir bench: --isolate: moved {} threads off CPU {worker_cpu}; left {} pinned there \
             and {} the kernel would not move (per-CPU kernel threads{})",
            s.moved,
            s.pinned,
            s.refused,
            if rustix::process::geteuid().is_root() {
                ""
            } else {
                ", other users' processes: not root"
            },
        );
        Some(iso)
    } else {
        None
    };
    let max_frame = sizes.iter().map(SizeMix::max_frame).max().unwrap_or(60);
    let fe_cfg = FrontendConfig {
        queue_size: args.queue_size,
        max_frame_bytes: max_frame,
        hugepages: true,
    };
    // The first SIGINT/SIGTERM ends the run cleanly (a daemon gets its bench
    // ports back, peers are stopped); a second one exits at once.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&stop))
            .context("installing signal handlers")?;
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    let bench = Bench {
        args,
        gen_cpu,
        tsc_hz: tsc_hz(),
        progress: !args.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        stop,
    };
    let mut targets = vec![Target::Weir];
    for p in &args.peer {
        if !targets.contains(&Target::Peer(*p)) {
            targets.push(Target::Peer(*p));
        }
    }
    let mut report = Report::new(
        Machine::current(bench.tsc_hz, worker_cpu, gen_cpu),
        args,
        &sizes,
    );
    report.isolation = isolation.as_ref().map(|i| i.summary);
    // Repeats are the outer loop: each switch is started afresh per repeat,
    // so a phase of host noise hits all switches rather than one.
    for (rep, target) in (0..args.repeat).flat_map(|r| targets.iter().map(move |t| (r, *t))) {
        let name = target.name();
        eprintln!("weir bench: {name}: starting (repeat {})", rep + 1);
        let (sut, socks) = Sut::start(
            target,
            args,
            max_frame,
            worker_cpu,
            confined.as_ref().map(|c| &c.0),
        )
        .with_context(|| format!("starting {name}"))?;
        let result = (|| -> anyhow::Result<()> {
            let mut ports = connect_ports(&socks, &fe_cfg, Duration::from_secs(30), &bench.stop)?;
            report.hugepages = ports.iter().all(VirtioNetFrontend::hugepages);
            let got =
                traffic::warm_up(&mut ports, args.flows, Duration::from_secs(20), &bench.stop);
            // Relaxed: a plain flag.
            if bench.stop.load(Ordering::Relaxed) {
                bail!("interrupted");
            }
            if got[0] == 0 || got[1] == 0 {
                bail!("{name} forwarded nothing during warm-up (received {got:?} per side)");
            }
            {
                for mix in &sizes {
                    let base = TrialSpec {
                        sizes: mix.clone(),
                        flows: args.flows,
                        rate_pps: None,
                        catch_up: args.catch_up,
                        duration: Duration::from_secs_f64(args.duration),
                    };
                    let label = format!("{name} {} #{}", mix.label, rep + 1);
                    let mut max = None;
                    let main = match rate {
                        Rate::Max => bench.trial(&mut ports, &sut, &base, &label)?,
                        Rate::Mpps(m) => bench.trial(
                            &mut ports,
                            &sut,
                            &TrialSpec {
                                rate_pps: Some(m * 1e6),
                                ..base.clone()
                            },
                            &label,
                        )?,
                        Rate::Percent(p) => {
                            let m = bench.trial(&mut ports, &sut, &base, &label)?;
                            let r = m.rx_mpps * 1e6 * p / 100.0;
                            max = Some(m);
                            bench.trial(
                                &mut ports,
                                &sut,
                                &TrialSpec {
                                    rate_pps: Some(r),
                                    ..base.clone()
                                },
                                &label,
                            )?
                        }
                    };
                    let (mut ndr, mut pdr, mut at_ndr) = (None, None, None);
                    if args.ndr || args.latency_at.is_some() {
                        let top = max.as_ref().unwrap_or(&main).rx_mpps.max(main.tx_mpps) * 1e6;
                        let n = bench.search(
                            &mut ports,
                            &sut,
                            &base,
                            top,
                            0.0,
                            None,
                            &format!("{label} NDR"),
                        )?;
                        // The latency trial right after the search it depends
                        // on, so that the host has the least time to change
                        // speed in between; the PDR search comes last.
                        if let Some(pct) = args.latency_at.filter(|_| n.rate_mpps > 0.0) {
                            let rate = n.rate_mpps * 1e6 * pct / 100.0;
                            let trial = bench.trial(
                                &mut ports,
                                &sut,
                                &TrialSpec {
                                    rate_pps: Some(rate),
                                    ..base.clone()
                                },
                                &format!("{label} {pct}% of NDR"),
                            )?;
                            at_ndr = Some(report::AtNdr {
                                pct_of_ndr: pct,
                                trial,
                            });
                        }
                        let p = bench.search(
                            &mut ports,
                            &sut,
                            &base,
                            top,
                            args.pdr_loss,
                            Some(&n),
                            &format!("{label} PDR"),
                        )?;
                        ndr = Some(n);
                        pdr = Some(p);
                    }
                    let rec = RunRecord {
                        switch: name.into(),
                        size: mix.label.clone(),
                        mean_frame_bytes: mix.mean_bytes(),
                        flows: args.flows,
                        repeat: rep + 1,
                        max,
                        main,
                        ndr,
                        pdr,
                        at_ndr,
                    };
                    eprintln!("{}", report::line(&rec));
                    report.runs.push(rec);
                }
            }
            Ok(())
        })();
        sut.stop();
        result.with_context(|| format!("benchmarking {name}"))?;
    }
    report.finish();
    println!("{}", report.summary());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)? + "\n";
        if path == Path::new("-") {
            print!("{text}");
        } else {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    if let Some(path) = &args.plot {
        plot::draw(&report, path).with_context(|| format!("drawing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_as_max_mpps_or_percent() {
        assert_eq!(parse_rate("max").unwrap(), Rate::Max);
        assert_eq!(parse_rate("2.5mpps").unwrap(), Rate::Mpps(2.5));
        assert_eq!(parse_rate("3").unwrap(), Rate::Mpps(3.0));
        assert_eq!(parse_rate("50%").unwrap(), Rate::Percent(50.0));
        assert!(parse_rate("150%").is_err());
        assert!(parse_rate("-1").is_err());
        assert!(parse_rate("fast").is_err());
    }

    #[test]
    fn sizes_parse_bytes_and_imix() {
        let s = parse_sizes(&["64".into(), "imix".into(), "9000".into()]).unwrap();
        assert_eq!(s[0].pattern, vec![60]);
        assert_eq!(s[1].label, "imix");
        assert_eq!(s[2].max_frame(), 8996);
        assert!(parse_sizes(&["63".into()]).is_err());
        assert!(parse_sizes(&["9001".into()]).is_err());
        assert!(parse_sizes(&["big".into()]).is_err());
    }
}
