//! The switch under test: weir in-process, a running weir daemon reached
//! through its control socket, a peer process (testpmd, OVS-DPDK) or the
//! loopback device pair, each listening on two vhost-user sockets; and what
//! the bench reads of its counters before and after a trial.
//!
//! Control side only.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use weir_api::{
    self as control, BridgeInfo, ClientError, PortInfo, Request, StageCycles, WorkerView,
};
use weir_config::{
    BridgeSpec, Config, ConfigError, CpuList, Host, PortSpec, PortType, ValidConfig,
};
use weir_control::{error_chain, spawn_housekeeping, Dataplane};

use crate::args::{BenchArgs, BenchPeer, Plan};
use crate::cpu;
use crate::features::Features;
use crate::loopback::{self, LoopbackError};
use crate::peer::{self, PeerError};
use crate::report::{PortDelta, WorkerCounters};
use crate::temp_dir::{TempDir, TempDirError};
use crate::Target;

/// Why a switch under test did not start.
#[derive(Debug, thiserror::Error)]
pub enum SutError {
    /// The directory of its sockets.
    #[error(transparent)]
    Dir(#[from] TempDirError),
    /// weir-config refused the worker CPU as a CPU list.
    #[error("worker CPU {cpu}: {why}")]
    WorkerCpu {
        /// The CPU.
        cpu: usize,
        /// weir-config's reason.
        why: String,
    },
    /// The in-process dataplane's configuration did not validate.
    #[error("starting weir")]
    Config(#[source] Box<ConfigError>),
    /// The in-process dataplane did not start.
    #[error("starting weir")]
    Weir(#[source] Box<weir_control::ControlError>),
    /// The in-process dataplane's housekeeping thread did not start.
    #[error("starting housekeeping")]
    Housekeeping(#[source] std::io::Error),
    /// The running daemon could not be reached.
    #[error("connecting to the daemon")]
    Connect(#[source] ClientError),
    /// The daemon did not create the bench bridge.
    #[error("creating the bench bridge")]
    AddBridge(#[source] RequestError),
    /// The daemon did not list its bridges.
    #[error("listing the daemon's bridges")]
    ListBridges(#[source] RequestError),
    /// The daemon did not add the bench's security group.
    #[error("adding the bench's security group to the daemon")]
    AddAcl(#[source] RequestError),
    /// The daemon did not add a bench port.
    #[error("adding port {name} to the daemon")]
    AddPort {
        /// The port.
        name: String,
        /// Why.
        #[source]
        source: RequestError,
    },
    /// A peer process did not start.
    #[error(transparent)]
    Peer(#[from] PeerError),
    /// The loopback device pair did not start.
    #[error(transparent)]
    Loopback(#[from] LoopbackError),
}

/// A control request to the daemon that failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// It did not reach the daemon, or its answer did not come back.
    #[error("{cmd} request")]
    Client {
        /// The request's command name.
        cmd: &'static str,
        /// Why.
        #[source]
        source: ClientError,
    },
    /// The daemon refused it.
    #[error("{cmd} request: {message}")]
    Refused {
        /// The request's command name.
        cmd: &'static str,
        /// The daemon's reason.
        message: String,
    },
}

/// A switch under test, up and listening on two vhost-user sockets.
pub(crate) enum Sut {
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

/// Names of the two bench ports (in a daemon, with the bench's process id).
const PORT_NAMES: [&str; 2] = ["bench-a", "bench-b"];

impl Sut {
    /// Starts `target`, its worker on `worker_cpu`, and returns it with the
    /// paths of its two vhost-user sockets (port A, port B).
    pub(crate) fn start(
        target: Target,
        args: &BenchArgs,
        plan: &Plan,
        worker_cpu: usize,
        confined: Option<&weir_host::affinity::Confined>,
    ) -> Result<(Sut, [PathBuf; 2]), SutError> {
        let max_frame = plan.max_frame;
        let features = &plan.features;
        if matches!(
            target,
            Target::Peer(BenchPeer::Testpmd | BenchPeer::Loopback)
        ) && *features != Features::default()
        {
            tracing::warn!(
                "{} does not switch: it forwards without the --features",
                target.name()
            );
        }
        match target {
            Target::Weir => match &args.socket {
                None => Self::in_process(args, plan, worker_cpu),
                Some(s) => Self::daemon(s, args, features),
            },
            Target::Peer(BenchPeer::Loopback) => {
                let (l, socks) = loopback::Loopback::start(worker_cpu, max_frame)?;
                Ok((Sut::Loopback(l), socks))
            }
            Target::Peer(p) => {
                // The peer picks its own CPUs (EAL lcores, pmd-cpu-mask) from
                // the mask it is started with: give it the whole one.
                let _whole = confined.map(weir_host::affinity::Confined::widen);
                let proc = peer::PeerProcess::start(
                    p,
                    worker_cpu,
                    max_frame,
                    args.queue_size,
                    features,
                    args.flows,
                )?;
                let socks = proc.sockets();
                Ok((Sut::Peer(proc), socks))
            }
        }
    }

    fn in_process(
        args: &BenchArgs,
        plan: &Plan,
        worker_cpu: usize,
    ) -> Result<(Sut, [PathBuf; 2]), SutError> {
        let max_frame = plan.max_frame;
        let dir = TempDir::new("weir")?;
        let mut cfg = Config::default();
        cfg.dataplane.workers =
            Some(
                worker_cpu
                    .to_string()
                    .parse::<CpuList>()
                    .map_err(|why| SutError::WorkerCpu {
                        cpu: worker_cpu,
                        why,
                    })?,
            );
        // Jumbo frames need a data room that holds them whole.
        if max_frame + 4 > cfg.dataplane.mbuf_size {
            cfg.dataplane.mbuf_size = (max_frame + 4).next_multiple_of(1024);
        }
        // One bridge; with a tunnel or a patch, one per side and the ports
        // that join them.
        let bridges = if plan.features.tunnel || plan.features.patch {
            let (bridges, ports) = crate::features::split_ports(&args.bridge, plan.features.tunnel);
            cfg.ports.extend(ports);
            bridges
        } else {
            vec![args.bridge.clone()]
        };
        for name in &bridges {
            cfg.bridges.push(BridgeSpec { name: name.clone() });
        }
        let socks = PORT_NAMES.map(|n| dir.path().join(format!("{n}.sock")));
        for (side, (name, sock)) in PORT_NAMES.iter().zip(&socks).enumerate() {
            let mut p = PortSpec::new(*name, PortType::VhostUser);
            p.socket = Some(sock.clone());
            p.bridge = Some(bridges[side.min(bridges.len() - 1)].clone());
            plan.features.apply(&mut p, side, args.flows);
            cfg.ports.push(p);
        }
        cfg.acls.extend(plan.features.acl_table());
        let cfg =
            ValidConfig::new(cfg, Host::system()).map_err(|e| SutError::Config(Box::new(e)))?;
        // Boxed: weir-control's error type is about to change.
        let dp = Arc::new(Dataplane::start(cfg).map_err(|e| SutError::Weir(Box::new(e)))?);
        let hk_stop = Arc::new(AtomicBool::new(false));
        let hk = spawn_housekeeping(Arc::downgrade(&dp), hk_stop.clone(), Duration::from_secs(1))
            .map_err(SutError::Housekeeping)?;
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

    fn daemon(
        socket: &Path,
        args: &BenchArgs,
        features: &Features,
    ) -> Result<(Sut, [PathBuf; 2]), SutError> {
        let dir = TempDir::new("daemon")?;
        let mut client = control::Client::connect(socket).map_err(SutError::Connect)?;
        let pid = client.peer_pid();
        if pid.is_none() {
            tracing::warn!("the daemon's process id is unknown; its CPU time is not reported");
        }
        let bridges = call(&mut client, &Request::BridgeList)
            .map_err(SutError::ListBridges)?
            .unwrap_or_default();
        let exists = bridges
            .as_array()
            .is_some_and(|a| a.iter().any(|b| b["name"] == args.bridge.as_str()));
        // From here on, whatever was added is removed again on any exit.
        let mut lease = DaemonLease {
            socket: socket.to_path_buf(),
            ports: Vec::new(),
            bridge: None,
            acl: None,
        };
        if !exists {
            call(
                &mut client,
                &Request::BridgeAdd {
                    name: args.bridge.clone(),
                },
            )
            .map_err(SutError::AddBridge)?;
            lease.bridge = Some(args.bridge.clone());
        }
        let tag = std::process::id() % 100_000;
        let acl = features.acl_table().map(|mut t| {
            t.name = format!("{}-{tag}", t.name);
            t
        });
        if let Some(t) = &acl {
            call(&mut client, &Request::AclAdd(t.clone())).map_err(SutError::AddAcl)?;
            lease.acl = Some(t.name.clone());
        }
        let socks = PORT_NAMES.map(|n| dir.path().join(format!("{n}.sock")));
        for (side, (base, sock)) in PORT_NAMES.iter().zip(&socks).enumerate() {
            let name = format!("{base}-{tag}");
            let mut p = PortSpec::new(name.clone(), PortType::VhostUser);
            p.socket = Some(sock.clone());
            p.bridge = Some(args.bridge.clone());
            features.apply(&mut p, side, args.flows);
            if let Some(t) = &acl {
                p.acl_in = Some(t.name.clone());
            }
            if let Err(source) = call(&mut client, &Request::PortAdd(Box::new(p))) {
                return Err(SutError::AddPort { name, source });
            }
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

    /// A peer's tunnel counters (`--peer ovs --features vxlan`); None for
    /// any other switch.
    pub(crate) fn tunnel_counters(&self) -> Result<Option<peer::TunnelCounters>, peer::PeerError> {
        match self {
            Sut::Peer(p) => p.tunnel_counters(),
            _ => Ok(None),
        }
    }

    /// The switch's forwarding threads, for CPU time.
    pub(crate) fn threads(&self) -> Option<cpu::Threads> {
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

    /// Stops the switch; a daemon gets its bench ports (and bridge) removed.
    pub(crate) fn stop(self) {
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
fn call(
    client: &mut control::Client,
    req: &Request,
) -> Result<Option<serde_json::Value>, RequestError> {
    let cmd = req.cmd();
    client
        .call(req)
        .map_err(|source| RequestError::Client { cmd, source })?
        .into_result()
        .map_err(|message| RequestError::Refused { cmd, message })
}

/// The ports (and the bridge, if it created it) `weir bench` added to a
/// running daemon; dropping it removes them, so they go on success, on an
/// error, on Ctrl-C and when unwinding from a panic.
pub(crate) struct DaemonLease {
    socket: PathBuf,
    ports: Vec<String>,
    bridge: Option<String>,
    /// The security group the bench added (`--features acl`).
    acl: Option<String>,
}

impl Drop for DaemonLease {
    fn drop(&mut self) {
        let mut client = match control::Client::connect(&self.socket) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("cannot remove the bench ports: {}", error_chain(&e));
                return;
            }
        };
        for name in self.ports.drain(..) {
            if let Err(e) = call(&mut client, &Request::PortDel { name: name.clone() }) {
                tracing::warn!(port = %name, "removing bench port: {}", error_chain(&e));
            }
        }
        if let Some(name) = self.acl.take() {
            if let Err(e) = call(&mut client, &Request::AclDel { name: name.clone() }) {
                tracing::warn!(acl = %name, "removing the bench's security group: {}", error_chain(&e));
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
            tracing::warn!(%bridge, "removing bench bridge: {}", error_chain(&e));
        }
    }
}

/// What the bench reads of a switch before and after a trial, and (from
/// [`Snapshot::since`]) what it did in between; any part the switch does not
/// offer is None.
pub(crate) struct Snapshot {
    /// On-CPU time of its forwarding threads.
    pub cpu_ns: Option<u64>,
    /// Its workers' cycle and packet counters.
    pub workers: Option<WorkerCounters>,
    /// Its bench ports' counters.
    pub ports: Option<PortDelta>,
}

impl Sut {
    /// Reads the counters a trial's figures are made of; `threads` as
    /// [`Sut::threads`] gave them at the start of the trial.
    pub(crate) fn snapshot(&self, threads: Option<&cpu::Threads>) -> Snapshot {
        Snapshot {
            cpu_ns: threads.and_then(cpu::Threads::cpu_ns),
            workers: self.counters(),
            ports: self.port_counters(),
        }
    }
}

impl Snapshot {
    /// What changed since `earlier`.
    pub(crate) fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot {
            cpu_ns: self
                .cpu_ns
                .zip(earlier.cpu_ns)
                .map(|(a, b)| a.saturating_sub(b)),
            workers: self
                .workers
                .as_ref()
                .zip(earlier.workers.as_ref())
                .map(|(a, b)| a.since(b)),
            ports: self
                .ports
                .as_ref()
                .zip(earlier.ports.as_ref())
                .map(|(a, b)| a.since(b)),
        }
    }
}
