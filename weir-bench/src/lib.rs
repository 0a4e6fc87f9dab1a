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
//! weir runs in-process (the daemon's [`weir_control::Dataplane`], one worker) or is a
//! running daemon reached with `--socket`; the peers are started by
//! [`peer`]. Every switch gets identical traffic; both directions are summed.

pub mod args;
pub mod cpu;
pub mod error;
pub mod features;
pub mod loopback;
pub mod peer;
pub mod plot;
pub mod report;
pub mod sut;
pub mod temp_dir;
pub mod traffic;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use vhost_user::frontend::{FrontendConfig, VirtioNetFrontend};
use weir_config::Host;
use weir_host::affinity::{Confined, Isolation};

pub use args::{BenchArgs, BenchCli, BenchPeer};
use args::{Plan, Rate};
pub use error::{BenchError, MeasureError};
use report::{AtNdr, Machine, Report, RunRecord, Search, SearchStep, TrialReport};
use sut::Sut;
pub use temp_dir::TempDir;
use traffic::{Live, SizeMix, TrialResult, TrialSpec};

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

/// The CPUs of a run: the switch's worker and the generator.
#[derive(Clone, Copy, Debug)]
struct Cpus {
    worker: usize,
    generator: usize,
}

impl Cpus {
    /// `--worker-cpu` (default the last online CPU) and `--gen-cpu` (default
    /// the first other one); warns if they are the same.
    fn choose(args: &BenchArgs, online: &[usize]) -> Result<Cpus, BenchError> {
        let worker = args
            .worker_cpu
            .or_else(|| online.last().copied())
            .ok_or(BenchError::NoCpu)?;
        let generator = args
            .gen_cpu
            .or_else(|| online.iter().copied().find(|&c| c != worker))
            .unwrap_or(worker);
        if generator == worker {
            eprintln!(
                "weir bench: generator and worker share CPU {generator}; figures will be low"
            );
        }
        Ok(Cpus { worker, generator })
    }

    /// `--isolate`: moves every other thread of the host off the worker's
    /// CPU until the result drops.
    fn isolate(self, online: &[usize]) -> Result<Isolation, BenchError> {
        let iso = weir_host::affinity::isolate_others(&[self.worker], online)
            .map_err(BenchError::Isolate)?;
        let s = iso.summary;
        eprintln!(
            "weir bench: --isolate: moved {} threads off CPU {}; left {} pinned there \
             and {} the kernel would not move (per-CPU kernel threads{})",
            s.moved,
            self.worker,
            s.pinned,
            s.refused,
            if rustix::process::geteuid().is_root() {
                ""
            } else {
                ", other users' processes: not root"
            },
        );
        Ok(iso)
    }
}

/// The first SIGINT/SIGTERM sets the returned flag, so that the run ends
/// cleanly (a daemon gets its bench ports back, peers are stopped); a second
/// one exits at once.
fn stop_on_signals() -> Result<Arc<AtomicBool>, BenchError> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&stop))
            .map_err(BenchError::Signals)?;
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(BenchError::Signals)?;
    }
    Ok(stop)
}

/// Connects a frontend to each socket, retrying while the switch starts.
fn connect_ports(
    socks: &[PathBuf; 2],
    cfg: &FrontendConfig,
    timeout: Duration,
    stop: &AtomicBool,
) -> Result<[VirtioNetFrontend; 2], MeasureError> {
    let end = Instant::now() + timeout;
    let connect = |s: &Path| loop {
        match VirtioNetFrontend::connect(s, cfg) {
            Ok(f) => return Ok(f),
            // Relaxed: a plain flag.
            Err(_) if stop.load(Ordering::Relaxed) => return Err(MeasureError::Interrupted),
            Err(e) if Instant::now() < end => {
                tracing::debug!("{}: {e}; retrying", s.display());
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(source) => {
                return Err(MeasureError::Attach {
                    socket: s.to_owned(),
                    source,
                })
            }
        }
    };
    Ok([connect(&socks[0])?, connect(&socks[1])?])
}

/// A progress bar for one trial of `duration`, or a hidden one.
fn progress_bar(show: bool, label: &str, duration: Duration) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(duration.as_millis() as u64);
    b.set_style(
        ProgressStyle::with_template("{prefix:>24} [{bar:30}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    b.set_prefix(label.to_string());
    b
}

/// Updates `bar` with the live rate every 100 ms until `gen` ends; returns
/// its result.
fn watch(
    gen: std::thread::ScopedJoinHandle<'_, TrialResult>,
    live: &Live,
    bar: &ProgressBar,
) -> TrialResult {
    let started = Instant::now();
    let (mut last_rx, mut last_t) = (0u64, started);
    while !gen.is_finished() {
        std::thread::sleep(Duration::from_millis(100));
        // Relaxed: display only.
        let rx = live.rx.load(Ordering::Relaxed);
        let now = Instant::now();
        let mpps = (rx - last_rx.min(rx)) as f64 / (now - last_t).as_secs_f64() / 1e6;
        (last_rx, last_t) = (rx, now);
        bar.set_position(started.elapsed().as_millis() as u64);
        bar.set_message(format!(
            "{mpps:6.2} Mpps  tx {} rx {}",
            // Relaxed: display only.
            live.tx.load(Ordering::Relaxed),
            rx
        ));
    }
    match gen.join() {
        Ok(r) => r,
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// The searches `--ndr` and `--latency-at` ask for at one frame size.
#[derive(Default)]
struct Searches {
    ndr: Option<Search>,
    pdr: Option<Search>,
    at_ndr: Option<AtNdr>,
}

/// Everything one bench invocation needs between measurements.
struct Bench<'a> {
    args: &'a BenchArgs,
    plan: &'a Plan,
    cpus: Cpus,
    /// The traffic ports' virtio-net frontends.
    frontend: FrontendConfig,
    tsc_hz: f64,
    progress: bool,
    /// Set by SIGINT/SIGTERM: end the current trial and clean up.
    stop: Arc<AtomicBool>,
}

impl Bench<'_> {
    /// Whether SIGINT or SIGTERM came.
    fn stopped(&self) -> Result<(), MeasureError> {
        // Relaxed: a plain flag.
        if self.stop.load(Ordering::Relaxed) {
            Err(MeasureError::Interrupted)
        } else {
            Ok(())
        }
    }

    /// Starts `target` afresh, measures every frame size on it into
    /// `report`, and stops it, on success or not.
    fn measure_switch(
        &self,
        target: Target,
        rep: u32,
        confined: Option<&Confined>,
        report: &mut Report,
    ) -> Result<(), BenchError> {
        let name = target.name();
        eprintln!("weir bench: {name}: starting (repeat {})", rep + 1);
        let (sut, socks) = Sut::start(target, self.args, self.plan, self.cpus.worker, confined)
            .map_err(|source| BenchError::Start {
                target: name,
                source,
            })?;
        let result = self.measure_sizes(&sut, &socks, name, rep, report);
        sut.stop();
        result.map_err(|source| BenchError::Measure {
            target: name,
            source,
        })
    }

    /// Attaches to a started switch, warms it up and measures each size.
    fn measure_sizes(
        &self,
        sut: &Sut,
        socks: &[PathBuf; 2],
        name: &'static str,
        rep: u32,
        report: &mut Report,
    ) -> Result<(), MeasureError> {
        let mut ports = connect_ports(socks, &self.frontend, Duration::from_secs(30), &self.stop)?;
        report.hugepages = ports.iter().all(VirtioNetFrontend::hugepages);
        let got = traffic::warm_up(
            &mut ports,
            self.args.flows,
            self.plan.features.frames,
            Duration::from_secs(20),
            &self.stop,
        );
        self.stopped()?;
        if got[0] == 0 || got[1] == 0 {
            return Err(MeasureError::NothingForwarded { target: name, got });
        }
        for mix in &self.plan.sizes {
            let rec = self.measure_size(&mut ports, sut, name, rep, mix)?;
            eprintln!("{}", report::line(&rec));
            report.runs.push(rec);
        }
        // A peer's tunnel must have carried the frames: both its
        // encapsulating and its decapsulating datapath flows, and its ports.
        if let Some(c) = sut
            .tunnel_counters()
            .map_err(MeasureError::TunnelCounters)?
        {
            let [a, b] = [0, 1].map(|s| (c.encapsulated[s], c.decapsulated[s]));
            eprintln!(
                "weir bench: {name}: through its tunnel A to B {} encapsulated, {} \
                 decapsulated; B to A {}, {}",
                a.0, a.1, b.0, b.1
            );
            if !c.both_ways() {
                return Err(MeasureError::TunnelBypassed {
                    target: name,
                    counters: c,
                });
            }
            report.peer_tunnels.push(report::PeerTunnel {
                switch: name.into(),
                repeat: rep + 1,
                counters: c,
            });
        }
        Ok(())
    }

    /// The main measurement of one size and, if asked for, its searches.
    fn measure_size(
        &self,
        ports: &mut [VirtioNetFrontend; 2],
        sut: &Sut,
        name: &'static str,
        rep: u32,
        mix: &SizeMix,
    ) -> Result<RunRecord, MeasureError> {
        let args = self.args;
        let base = TrialSpec {
            sizes: mix.clone(),
            flows: args.flows,
            frames: self.plan.features.frames,
            rate_pps: None,
            catch_up: args.catch_up,
            duration: Duration::from_secs_f64(args.duration),
        };
        let label = format!("{name} {} #{}", mix.label, rep + 1);
        let (max, main) = self.main_trial(ports, sut, &base, &label)?;
        let searches = if args.ndr || args.latency_at.is_some() {
            let top = max.as_ref().unwrap_or(&main).rx_mpps.max(main.tx_mpps) * 1e6;
            self.searches(ports, sut, &base, top, &label)?
        } else {
            Searches::default()
        };
        Ok(RunRecord {
            switch: name.into(),
            size: mix.label.clone(),
            mean_frame_bytes: mix.mean_bytes(),
            flows: args.flows,
            repeat: rep + 1,
            max,
            main,
            ndr: searches.ndr,
            pdr: searches.pdr,
            at_ndr: searches.at_ndr,
        })
    }

    /// The trial at `--rate`; with a percentage, also the unlimited trial
    /// it is a share of (returned first).
    fn main_trial(
        &self,
        ports: &mut [VirtioNetFrontend; 2],
        sut: &Sut,
        base: &TrialSpec,
        label: &str,
    ) -> Result<(Option<TrialReport>, TrialReport), MeasureError> {
        let at = |rate_pps: f64| TrialSpec {
            rate_pps: Some(rate_pps),
            ..base.clone()
        };
        match self.plan.rate {
            Rate::Max => Ok((None, self.trial(ports, sut, base, label)?)),
            Rate::Mpps(m) => Ok((None, self.trial(ports, sut, &at(m * 1e6), label)?)),
            Rate::Percent(p) => {
                let max = self.trial(ports, sut, base, label)?;
                let rate = max.rx_mpps * 1e6 * p / 100.0;
                Ok((Some(max), self.trial(ports, sut, &at(rate), label)?))
            }
        }
    }

    /// The NDR search up to `top` frames per second, the trial at
    /// `--latency-at` of the NDR found, then the PDR search.
    fn searches(
        &self,
        ports: &mut [VirtioNetFrontend; 2],
        sut: &Sut,
        base: &TrialSpec,
        top: f64,
        label: &str,
    ) -> Result<Searches, MeasureError> {
        let ndr = self.search(ports, sut, base, top, 0.0, None, &format!("{label} NDR"))?;
        // The latency trial right after the search it depends on, so that
        // the host has the least time to change speed in between; the PDR
        // search comes last.
        let mut at_ndr = None;
        if let Some(pct) = self.args.latency_at.filter(|_| ndr.rate_mpps > 0.0) {
            let spec = TrialSpec {
                rate_pps: Some(ndr.rate_mpps * 1e6 * pct / 100.0),
                ..base.clone()
            };
            let trial = self.trial(ports, sut, &spec, &format!("{label} {pct}% of NDR"))?;
            at_ndr = Some(AtNdr {
                pct_of_ndr: pct,
                trial,
            });
        }
        let pdr = self.search(
            ports,
            sut,
            base,
            top,
            self.args.pdr_loss,
            Some(&ndr),
            &format!("{label} PDR"),
        )?;
        Ok(Searches {
            ndr: Some(ndr),
            pdr: Some(pdr),
            at_ndr,
        })
    }

    /// Runs one trial on a pinned generator thread with a live display.
    fn trial(
        &self,
        ports: &mut [VirtioNetFrontend; 2],
        sut: &Sut,
        spec: &TrialSpec,
        label: &str,
    ) -> Result<TrialReport, MeasureError> {
        let live = Live::default();
        let bar = progress_bar(self.progress, label, spec.duration);
        let threads = sut.threads();
        let before = sut.snapshot(threads.as_ref());
        let res = std::thread::scope(|s| {
            let gen = s.spawn(|| {
                pin_to(self.cpus.generator);
                traffic::run_trial(ports, spec, &live, self.tsc_hz, &self.stop)
            });
            watch(gen, &live, &bar)
        });
        let delta = sut.snapshot(threads.as_ref()).since(&before);
        bar.finish_and_clear();
        // The generator thread was joined.
        self.stopped()?;
        let t = TrialReport::new(
            spec,
            &res,
            delta.workers,
            delta.cpu_ns,
            delta.ports.as_ref(),
            self.tsc_hz,
        );
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
    ) -> Result<Search, MeasureError> {
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
/// Bad arguments, a switch that cannot start, a switch that forwards
/// nothing, an interruption, or a report that cannot be written.
pub fn run(args: &BenchArgs) -> Result<(), BenchError> {
    let plan = args.plan()?;
    let online = Host::system().online_cpus();
    let cpus = Cpus::choose(args, &online)?;
    // The bench's own threads (vhost-user control, housekeeping, progress)
    // stay off the worker's CPU; the generator pins itself to its own.
    let confined = weir_host::affinity::confine_off(&[cpus.worker]);
    let isolation = if args.isolate {
        Some(cpus.isolate(&online)?)
    } else {
        None
    };
    let bench = Bench {
        args,
        plan: &plan,
        cpus,
        frontend: FrontendConfig {
            queue_size: args.queue_size,
            max_frame_bytes: plan.max_frame,
            hugepages: true,
        },
        tsc_hz: tsc_hz(),
        progress: !args.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        stop: stop_on_signals()?,
    };
    let mut report = Report::new(
        Machine::current(bench.tsc_hz, cpus.worker, cpus.generator),
        args,
        &plan,
    );
    report.isolation = isolation.as_ref().map(|i| i.summary);
    // Repeats are the outer loop: each switch is started afresh per repeat,
    // so a phase of host noise hits all switches rather than one.
    let targets = targets(args);
    for rep in 0..args.repeat {
        for &target in &targets {
            bench.measure_switch(target, rep, confined.as_ref().map(|c| &c.0), &mut report)?;
        }
    }
    report.finish();
    println!("{}", report.summary());
    write_outputs(&report, args)
}

/// weir, then each `--peer` once, in the order given.
fn targets(args: &BenchArgs) -> Vec<Target> {
    let mut targets = vec![Target::Weir];
    for p in &args.peer {
        if !targets.contains(&Target::Peer(*p)) {
            targets.push(Target::Peer(*p));
        }
    }
    targets
}

/// Writes `--json` and draws `--plot`, if asked for.
fn write_outputs(report: &Report, args: &BenchArgs) -> Result<(), BenchError> {
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(report).map_err(BenchError::Json)? + "\n";
        if path == Path::new("-") {
            print!("{text}");
        } else {
            std::fs::write(path, text).map_err(|source| BenchError::Write {
                path: path.clone(),
                source,
            })?;
        }
    }
    if let Some(path) = &args.plot {
        plot::draw(report, path).map_err(|source| BenchError::Plot {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}
