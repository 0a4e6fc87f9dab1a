//! `weir run`: builds the dataplane from a [`ValidConfig`] (mbuf pool, switch,
//! workers, bridges, ports), serves the control socket, and tears everything down on
//! SIGINT or SIGTERM.
//!
//! Control path only. Requests are handled one at a time under one mutex (the
//! control plane's own lock); workers never take it: they see changes through the
//! switch's published tables and their command rings.

mod capture;
mod fdb;
mod mirror;
mod overlay;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dataplane::mempool::{self, HugepagePolicy, MempoolConfig};
use dataplane::stats::StatsSnapshot;
use dataplane::switch::rxfilter::RxFilter;
use dataplane::switch::{self, Acl, Bridge, Fdb, HandoffBudget, PortEntry, Switch};
use dataplane::worker::{WorkerConfig, WorkerHandle};
use dataplane::{
    BridgeId, DropReason, MacAddr, Mempool, PortId, QueueId, QueueStats, WorkerId, MAX_BURST,
};

use crate::http::{MetricsError, MetricsServer, Render};
use crate::metrics::{PoolSample, PortSample, Scrape};
use crate::ports::{DriverError, DriverFactory, OpenError, OpenedPort, PortDevice, PortFactory};
use crate::server::{ControlServer, Handler, ServerError};
use crate::state::{self, StateError};
use dataplane::mempool::MempoolError;
use dataplane::worker::WorkerError;
use weir_api::{
    AclInfo, AclView, BridgeInfo, LatencyView, MempoolView, PortInfo, Request, Response,
    StageCycles, StatsView, VersionView, WorkerView,
};
use weir_config::{
    AclSpec, AclSpecError, BridgeSpec, Config, Host, PortConfig, PortError, PortKind, PortSettings,
    PortSpec, PortType, ValidConfig, MAX_BRIDGES,
};

/// Why a dataplane could not start, or a control request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// `[control] socket_group` names no group.
    #[error("[control] socket_group = {0:?}")]
    SocketGroup(String, #[source] DriverError),
    /// The mbuf pool could not be created.
    #[error("creating the mbuf pool")]
    Pool(#[source] MempoolError),
    /// No CPU is left to run a worker on.
    #[error("no CPU to run a worker on")]
    NoWorkerCpu,
    /// A worker could not be started.
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// A bridge name does not match the naming rule.
    #[error("invalid bridge name {name:?}: use 1-32 of A-Z a-z 0-9 _ . -")]
    InvalidBridgeName {
        /// The name.
        name: String,
    },
    /// A bridge of that name exists.
    #[error("bridge {name} already exists")]
    BridgeExists {
        /// The name.
        name: String,
    },
    /// As many bridges as a daemon holds exist.
    #[error("too many bridges (max {MAX_BRIDGES}); delete one first")]
    TooManyBridges,
    /// No bridge of that name exists.
    #[error("no bridge named {name}")]
    NoSuchBridge {
        /// The name.
        name: String,
    },
    /// A bridge to delete still has ports.
    #[error("bridge {name} still has ports ({}); delete them first", ports.join(", "))]
    BridgeHasPorts {
        /// The bridge.
        name: String,
        /// Its ports.
        ports: Vec<String>,
    },
    /// A port (of a `port add` request), or the settings a `port set` or
    /// `port clear` would give it, is invalid on its own.
    #[error("port {port}")]
    InvalidPort {
        /// The port.
        port: String,
        /// What is wrong.
        #[source]
        source: PortError,
    },
    /// A port of that name exists.
    #[error("port {name} already exists")]
    PortExists {
        /// The name.
        name: String,
    },
    /// A port names a bridge that does not exist.
    #[error("port {port}: no bridge named {bridge}")]
    PortBridgeMissing {
        /// The port.
        port: String,
        /// The bridge.
        bridge: String,
    },
    /// A port would use the control socket's path.
    #[error("port {port}: `{key}` {} is the control socket's path", path.display())]
    ControlSocketPath {
        /// The port.
        port: String,
        /// Its key naming the path.
        key: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// A port would use a path another port uses.
    #[error("port {port}: `{key}` {} is already used as `{other_key}` of port {other}", path.display())]
    PathInUse {
        /// The new port.
        port: String,
        /// Its key naming the path.
        key: &'static str,
        /// The path.
        path: PathBuf,
        /// The other port's key.
        other_key: &'static str,
        /// The other port.
        other: String,
    },
    /// Every port id is taken.
    #[error("too many ports (max {})", switch::MAX_PORTS)]
    TooManyPorts,
    /// The driver could not open the port.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// A worker did not take a new port's queue.
    #[error("port {port}: starting its queues")]
    StartQueues {
        /// The port.
        port: String,
        /// Why.
        #[source]
        source: WorkerError,
    },
    /// A worker did not give a removed port's queues back.
    #[error(
        "port {port}: a worker did not give its queues back; its id {id} and \
         paths stay reserved until weir restarts"
    )]
    PortStuck {
        /// The port.
        port: String,
        /// Its id, still reserved.
        id: u16,
        /// Why.
        #[source]
        source: WorkerError,
    },
    /// No port of that name exists.
    #[error("no port named {name}")]
    NoSuchPort {
        /// The name.
        name: String,
    },
    /// SIGINT/SIGTERM handlers could not be installed.
    #[error("installing signal handlers")]
    Signals(#[source] std::io::Error),
    /// The housekeeping thread could not be started.
    #[error("starting housekeeping thread")]
    Housekeeping(#[source] std::io::Error),
    /// The control socket could not be set up.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The metrics endpoint could not be set up.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// A security group (of an `acl add` request) is refused.
    #[error("acl {name}")]
    InvalidAcl {
        /// The ACL.
        name: String,
        /// What is wrong.
        #[source]
        source: AclSpecError,
    },
    /// The running configuration has no TOML form (a daemon bug).
    #[error("writing the running configuration as TOML")]
    DumpConfig(#[source] toml::ser::Error),
    /// The state file could not be written.
    #[error("saving the running configuration to state file {}", path.display())]
    SaveState {
        /// The state file.
        path: PathBuf,
        /// Why.
        #[source]
        source: StateError,
    },
    /// No security group of that name exists.
    #[error("no ACL named {name}")]
    NoSuchAcl {
        /// The name.
        name: String,
    },
    /// A mirror is refused.
    #[error("mirror {name}")]
    InvalidMirror {
        /// The mirror.
        name: String,
        /// What is wrong.
        #[source]
        source: weir_config::MirrorError,
    },
    /// No mirror of that name exists.
    #[error("no mirror named {name}")]
    NoSuchMirror {
        /// The name.
        name: String,
    },
    /// weir's host stack on a port could not start.
    #[error("port {port}: starting weir's host stack")]
    HostStack {
        /// The port.
        port: String,
        /// Why.
        #[source]
        source: weir_ip::HostError,
    },
    /// A tunnel port does not fit its underlay.
    #[error("port {port}: {reason}")]
    Tunnel {
        /// The tunnel port.
        port: String,
        /// Why.
        reason: String,
    },
    /// An underlay port to delete carries tunnels.
    #[error("port {name} is the underlay of {}; delete those first (weir port del NAME)", tunnels.join(", "))]
    UnderlayInUse {
        /// The port.
        name: String,
        /// Its tunnels, as `tunnel NAME`.
        tunnels: Vec<String>,
    },
    /// A patch port cannot join its peer.
    #[error("port {port}: {reason}")]
    Patch {
        /// The patch port.
        port: String,
        /// Why.
        reason: String,
    },
    /// `fdb add` or `fdb del` refused.
    #[error("{0}")]
    Fdb(String),
    /// A static FDB entry is refused (the rules of `[[fdb.static]]`).
    #[error(transparent)]
    StaticFdb(#[from] weir_config::StaticFdbError),
    /// A port to delete is used by a mirror.
    #[error("port {name} is in use: {}; delete those first (weir mirror del NAME)", uses.join(", "))]
    PortInUse {
        /// The port.
        name: String,
        /// Its uses, as `mirror NAME`.
        uses: Vec<String>,
    },
    /// A security group to delete is in use.
    #[error(
        "ACL {name} is in use: {}; clear those settings first (weir port clear PORT KEY)",
        uses.join(", ")
    )]
    AclInUse {
        /// The ACL.
        name: String,
        /// Its uses, as `port PORT (KEY)`.
        uses: Vec<String>,
    },
}

/// `error` and its sources, `: `-separated, as a control reply or log line
/// shows them.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// How long control operations wait for a worker to acknowledge.
const WORKER_TIMEOUT: Duration = Duration::from_secs(5);

struct PortRecord {
    id: PortId,
    port: PortConfig,
    /// (worker index, queue stats) per queue.
    queues: Vec<(usize, Arc<QueueStats>)>,
    /// Dropped after the queues are back from the workers.
    device: Option<Box<dyn PortDevice>>,
    /// Per queue: the counters at the last `stats clear`, subtracted in
    /// what `port list`/`port show`/`stats` report (the counters themselves
    /// have one writer, the worker, and never go back).
    cleared: Vec<StatsSnapshot>,
    /// The receive filter published with the port's policy, and the
    /// device's filter generation it was built from.
    rx_filter: Option<Arc<RxFilter>>,
    rx_gen: u64,
}

/// The receive filter of a port with `settings` whose device is `device`:
/// only a port whose peer sets filters (a vhost-user guest) has one, built
/// from its own addresses (`mac`, `allowed_macs`) and what the guest set,
/// unless `rx_filter = false`; with the generation of the guest's state it
/// was built from.
fn rx_filter_of(
    settings: &PortSettings,
    device: Option<&dyn PortDevice>,
) -> (u64, Option<Arc<RxFilter>>) {
    let Some((generation, guest)) = device.and_then(|d| d.rx_mode()) else {
        return (0, None);
    };
    if !settings.rx_filter_on() {
        return (generation, None);
    }
    let own: Vec<MacAddr> = settings
        .mac
        .iter()
        .chain(&settings.allowed_macs)
        .copied()
        .collect();
    (
        generation,
        RxFilter::new(&own, guest.as_ref()).map(Arc::new),
    )
}

/// `policy` as published: with the port's receive filter.
fn published(
    policy: &switch::PortPolicy,
    rx_filter: &Option<Arc<RxFilter>>,
) -> Arc<switch::PortPolicy> {
    Arc::new(switch::PortPolicy {
        rx_filter: rx_filter.clone(),
        ..policy.clone()
    })
}

/// A security group: as given, and compiled for the switch.
struct AclRecord {
    spec: AclSpec,
    acl: Arc<Acl>,
}

struct State {
    ports: BTreeMap<String, PortRecord>,
    /// Security groups by name; ports name them in `acl_in` and `acl_out`.
    acls: BTreeMap<String, AclRecord>,
    /// Round-robin cursor for queue placement.
    next_worker: usize,
    /// Large buffers for TSO frames, created with the first vhost-user port
    /// (None: not yet, TSO off, or it could not be created).
    tso_pool: Option<&'static Mempool>,
    /// Ports a worker did not give back on `port del`: their ids and paths
    /// stay reserved.
    stuck: Vec<PortRecord>,
    /// Per worker: its counters at the last `stats clear`.
    workers_cleared: Vec<WorkerTotals>,
    /// The running configuration as the state file holds it (or as it was
    /// at start, before any change): a change is saved when it differs.
    saved: Option<String>,
    /// Ports added since start (configured and `port add`), for the metrics.
    ports_added: u64,
    /// Ports deleted since start.
    ports_deleted: u64,
    /// Port mirrors by name.
    mirrors: BTreeMap<String, mirror::MirrorRecord>,
    /// Ports with an `ip`, by name: weir's host presence on them.
    underlays: BTreeMap<String, overlay::Underlay>,
    /// Tunnel ports by name.
    tunnels: BTreeMap<String, overlay::TunnelRecord>,
    /// Patch links by the names of their two ends, in order.
    patches: BTreeMap<(String, String), Arc<dataplane::patch::PatchLink>>,
    /// Static FDB entries, as the running configuration keeps them.
    statics: BTreeMap<fdb::StaticKey, weir_config::StaticFdb>,
}

/// Which counters a view reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Counted {
    /// Since the last `stats clear` (what the CLI shows).
    SinceClear,
    /// Since the port or worker started (what metrics export: they never
    /// go back).
    Total,
}

/// A worker's counters as `weir stats` shows them.
#[derive(Clone, Copy, Debug, Default)]
struct WorkerTotals {
    busy: u64,
    idle: u64,
    rx_packets: u64,
    handoff_full: u64,
    busy_rounds: u64,
    rx: u64,
    switch: u64,
    tx: u64,
    sampled: u64,
}

impl WorkerTotals {
    fn of(w: &WorkerHandle) -> WorkerTotals {
        let s = &w.shared().stats;
        WorkerTotals {
            busy: s.busy_cycles.get(),
            idle: s.idle_cycles.get(),
            rx_packets: s.rx_packets.get(),
            handoff_full: s.handoff_full.get(),
            busy_rounds: s.busy_rounds.get(),
            rx: s.rx_cycles.get(),
            switch: s.switch_cycles.get(),
            tx: s.tx_cycles.get(),
            sampled: s.sampled_packets.get(),
        }
    }

    /// Counted since `base` (saturating, as [`StatsSnapshot::since`]).
    fn since(&self, base: &WorkerTotals) -> WorkerTotals {
        WorkerTotals {
            busy: self.busy.saturating_sub(base.busy),
            idle: self.idle.saturating_sub(base.idle),
            rx_packets: self.rx_packets.saturating_sub(base.rx_packets),
            handoff_full: self.handoff_full.saturating_sub(base.handoff_full),
            busy_rounds: self.busy_rounds.saturating_sub(base.busy_rounds),
            rx: self.rx.saturating_sub(base.rx),
            switch: self.switch.saturating_sub(base.switch),
            tx: self.tx.saturating_sub(base.tx),
            sampled: self.sampled.saturating_sub(base.sampled),
        }
    }
}

/// Most TSO buffers one port may hold: a quarter of the pool, and at least two
/// bursts' worth (a pool of no more than that is not shared out: the share
/// would be the whole pool).
fn tso_port_share(tso_mbufs: u32) -> u32 {
    (tso_mbufs / 4).max(2 * MAX_BURST as u32)
}

/// Frames the handoff rings of one worker's ports may hold together: the
/// workers' budgets add up to at most a quarter of the pool, so that stuck
/// workers never pin the buffers the others receive into; at least two
/// bursts.
fn handoff_budget(mbufs: u32, workers: usize) -> u32 {
    (mbufs / 4 / workers.max(1) as u32).max(2 * MAX_BURST as u32)
}

/// A running dataplane: the pool, the switch, the workers and the ports.
pub struct Dataplane {
    switch: Arc<Switch>,
    pool: &'static Mempool,
    /// `[dataplane] tso_mbufs` (0: TSO off).
    tso_mbufs: u32,
    /// `[dataplane] hugepages`, for the pools.
    hugepages: HugepagePolicy,
    workers: Vec<WorkerHandle>,
    /// Per worker: the budget of the handoff rings of the ports it owns.
    handoff_budgets: Vec<Arc<HandoffBudget>>,
    worker_cpus: Vec<usize>,
    fdb_cfg: switch::FdbConfig,
    /// Opens the ports.
    factory: Box<dyn PortFactory>,
    host: Host,
    state: Mutex<State>,
    /// How long a port removal waits for each worker.
    worker_timeout: Duration,
    /// The control socket's path (normalised): never a port's.
    control_socket: PathBuf,
    /// The configuration's sections other than bridges, ports, ACLs,
    /// mirrors and static FDB entries, which the running configuration
    /// takes from the switch tables and
    /// `state` ([`Dataplane::running_config`]).
    base: Config,
}

impl Dataplane {
    /// Builds the dataplane described by `cfg`: pool, workers, bridges, ports.
    /// Later `port add` requests are validated against the host `cfg` was.
    ///
    /// # Errors
    /// If the pool cannot be allocated, a worker cannot start, or any configured
    /// port cannot be opened (nothing is left running in that case).
    pub fn start(cfg: ValidConfig) -> Result<Dataplane, ControlError> {
        let factory = DriverFactory {
            eal_args: cfg.config().dpdk.eal_args.clone(),
        };
        Dataplane::start_with(cfg, Box::new(factory))
    }

    /// [`start`](Self::start), opening ports through `factory`.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_with(
        cfg: ValidConfig,
        factory: Box<dyn PortFactory>,
    ) -> Result<Dataplane, ControlError> {
        let (
            cfg,
            weir_config::Validated {
                ports,
                acls,
                mirrors,
                statics,
            },
            host,
        ) = cfg.into_parts();
        raise_memlock_limit();
        let pool_cfg = cfg.dataplane.mempool_config();
        let hugepages = pool_cfg.hugepages;
        let pool = Mempool::create(&pool_cfg).map_err(ControlError::Pool)?;
        tracing::info!(
            mbufs = pool.capacity(),
            backing = ?pool.backing(),
            "mbuf pool ready"
        );
        let switch = Switch::new();
        switch.tick();
        let worker_cpus = cfg.dataplane.worker_cpus(&host);
        if worker_cpus.is_empty() {
            return Err(ControlError::NoWorkerCpu);
        }
        let mut workers = Vec::new();
        for (i, &cpu) in worker_cpus.iter().enumerate() {
            let w = WorkerHandle::spawn(
                WorkerConfig {
                    id: WorkerId(i as u16),
                    cpu: Some(cpu),
                    idle_sleep_us: cfg.dataplane.idle_sleep_us,
                },
                switch.clone(),
            )?;
            workers.push(w);
        }
        tracing::info!(cpus = ?worker_cpus, "workers started");
        let handoff_limit = handoff_budget(pool.capacity(), workers.len());
        let handoff_budgets = (0..workers.len())
            .map(|_| HandoffBudget::new(handoff_limit))
            .collect();
        let dp = Dataplane {
            switch,
            pool,
            tso_mbufs: cfg.dataplane.tso_mbufs,
            hugepages,
            workers,
            handoff_budgets,
            worker_cpus,
            fdb_cfg: switch::FdbConfig {
                max_entries: cfg.fdb.max_entries as usize,
                max_per_port: cfg.fdb.max_per_port,
                aging_secs: cfg.fdb.aging_secs,
                learn_per_sec: cfg.fdb.learn_per_sec,
            },
            factory,
            host,
            state: Mutex::new(State {
                ports: BTreeMap::new(),
                acls: acls
                    .into_iter()
                    .map(|(spec, acl)| (spec.name.clone(), AclRecord { spec, acl }))
                    .collect(),
                next_worker: 0,
                tso_pool: None,
                stuck: Vec::new(),
                workers_cleared: Vec::new(),
                saved: None,
                ports_added: 0,
                ports_deleted: 0,
                mirrors: BTreeMap::new(),
                underlays: BTreeMap::new(),
                tunnels: BTreeMap::new(),
                patches: BTreeMap::new(),
                statics: BTreeMap::new(),
            }),
            worker_timeout: WORKER_TIMEOUT,
            control_socket: cfg.control.socket.components().collect(),
            base: {
                let mut base = cfg.clone();
                base.bridges.clear();
                base.ports.clear();
                base.acls.clear();
                base.mirrors.clear();
                base.fdb.statics.clear();
                base
            },
        };
        for b in &cfg.bridges {
            dp.bridge_add(&b.name)?;
        }
        for p in ports {
            dp.add_port(p)?;
        }
        for m in mirrors {
            dp.mirror_add(m)?;
        }
        // Static entries once their bridges and ports are there. One the
        // table has no room for (its limits lowered in the config file since
        // the state file kept it) is left out with a warning rather than
        // keeping the switch down.
        for s in &statics {
            match dp.static_add(s) {
                Err(ControlError::Fdb(why)) => tracing::warn!(
                    bridge = %s.bridge, mac = %s.mac, port = %s.port,
                    "static fdb entry left out: {why}"
                ),
                r => r?,
            }
        }
        // The starting point: only what control requests change from here
        // on is saved, so a daemon nobody changes keeps following its file.
        {
            let mut st = dp.lock();
            st.saved = Some(dp.running_text(&st)?);
        }
        Ok(dp)
    }

    /// The running configuration: the configuration the daemon started
    /// from, with the bridges, ports, security groups, mirrors and static
    /// FDB entries it has now, ports with their switch settings as `port
    /// set` and `port clear` left them.
    /// Bridges and ports are in id order, so that a daemon started from it
    /// gives them the same ids when there are no gaps.
    pub fn running_config(&self) -> Config {
        self.running_in(&self.lock())
    }

    /// [`running_config`](Self::running_config), under the control lock.
    fn running_in(&self, st: &State) -> Config {
        let t = self.switch.load();
        let bridges = t
            .bridges
            .iter()
            .flatten()
            .map(|b| BridgeSpec {
                name: b.name.to_string(),
            })
            .collect();
        let mut ports: Vec<&PortRecord> = st.ports.values().collect();
        ports.sort_by_key(|r| r.id.0);
        let mut config = self.base.clone();
        config.bridges = bridges;
        config.ports = ports.into_iter().map(|r| r.port.spec()).collect();
        config.acls = st.acls.values().map(|r| r.spec.clone()).collect();
        config.mirrors = st.mirrors.values().map(|r| r.spec.clone()).collect();
        config.fdb.statics = st.statics.values().map(|e| e.spec()).collect();
        config
    }

    /// The running configuration as TOML (`config-dump`, and what the state
    /// file holds).
    ///
    /// # Errors
    /// [`ControlError::DumpConfig`], a bug.
    pub fn config_dump(&self) -> Result<String, ControlError> {
        self.running_text(&self.lock())
    }

    fn running_text(&self, st: &State) -> Result<String, ControlError> {
        let body = self
            .running_in(st)
            .to_toml()
            .map_err(ControlError::DumpConfig)?;
        Ok(format!(
            "# The running configuration of weir {}: `weir config dump`, and\n\
             # the state file. `weir run --config` and `weir config check` take it.\n\n{body}",
            env!("CARGO_PKG_VERSION")
        ))
    }

    /// Saves the running configuration to the state file (`[control]
    /// state`), if there is one and the configuration changed since it was
    /// last saved (or since start). Atomic ([`state::write_atomic`]):
    /// the file holds the old configuration or the new, whole. Returns
    /// whether it wrote.
    ///
    /// # Errors
    /// [`ControlError::SaveState`]: the running configuration stands, the
    /// file keeps the last one saved, and the next change tries again.
    pub fn save_state(&self) -> Result<bool, ControlError> {
        let Some(path) = &self.base.control.state else {
            return Ok(false);
        };
        // Under the lock, so that saves are in the order of the changes
        // and the last one written is the configuration now.
        let mut st = self.lock();
        let text = self.running_text(&st)?;
        if st.saved.as_deref() == Some(&text) {
            return Ok(false);
        }
        state::write_atomic(path, text.as_bytes()).map_err(|source| ControlError::SaveState {
            path: path.clone(),
            source,
        })?;
        st.saved = Some(text);
        tracing::debug!(state = %path.display(), "running configuration saved");
        Ok(true)
    }

    /// The switch (tables, FDBs, clock).
    pub fn switch(&self) -> &Arc<Switch> {
        &self.switch
    }

    /// The mbuf pool.
    pub fn pool(&self) -> &'static Mempool {
        self.pool
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The TSO buffer pool for a new port: vhost-user ports (TSO frames from
    /// VMs) and AF_PACKET and TAP ports (super-frames from the kernel, with
    /// its default offloads) take TSO frames, so the pool is created with the
    /// first of them (at start or by `port add`), never for a daemon without
    /// one. If it cannot be created
    /// (hugepages short with `hugepages = "required"`, or no memory), the port
    /// comes up without offering TSO and one warning says so; the next
    /// vhost-user port tries again.
    fn tso_pool_for(&self, st: &mut State, port: &PortConfig) -> Option<&'static Mempool> {
        let takes_tso = matches!(
            port.kind,
            PortKind::VhostUser { .. } | PortKind::AfPacket { .. } | PortKind::Tap { .. }
        );
        if !takes_tso || self.tso_mbufs == 0 {
            return None;
        }
        if st.tso_pool.is_none() {
            // TSO frames (up to 64 KiB) get buffers of their own;
            // their segments are cut into the normal pool (docs/vhost-user.md).
            match Mempool::create(&MempoolConfig {
                name: "tso".into(),
                n_mbufs: self.tso_mbufs,
                // The largest a 16-bit mbuf length allows after the default
                // headroom; a Linux guest's TSO frames stay below it.
                data_room: mempool::MAX_DATA_ROOM,
                hugepages: self.hugepages,
                // Few, large buffers: a small per-thread cache, so one
                // worker cannot hold them all.
                cache_size: 8,
                // Nor can one port (docs/vhost-user.md, "Segmentation offload").
                port_share: tso_port_share(self.tso_mbufs),
                ..MempoolConfig::default()
            }) {
                Ok(p) => {
                    p.set_segment_pool(self.pool);
                    tracing::info!(
                        buffers = p.capacity(),
                        backing = ?p.backing(),
                        "TSO buffer pool ready"
                    );
                    st.tso_pool = Some(p);
                }
                Err(e) => {
                    let fix = if self.hugepages == HugepagePolicy::Required {
                        "reserve more 2 MiB hugepages or lower [dataplane] tso_mbufs"
                    } else {
                        "lower [dataplane] tso_mbufs"
                    };
                    tracing::warn!(
                        "port {} comes up without TSO: no \
                         memory for {} TSO buffers of 64 KiB ({:#}); {fix} \
                         (tso_mbufs = 0 turns TSO off without this warning)",
                        port.name,
                        self.tso_mbufs,
                        error_chain(&e),
                    );
                }
            }
        }
        st.tso_pool
    }

    /// Adds a bridge.
    ///
    /// # Errors
    /// Invalid or duplicate name.
    pub fn bridge_add(&self, name: &str) -> Result<(), ControlError> {
        if !weir_config::is_valid_name(name) {
            return Err(ControlError::InvalidBridgeName { name: name.into() });
        }
        let _g = self.lock();
        let t = self.switch.load();
        if t.bridge_by_name(name).is_some() {
            return Err(ControlError::BridgeExists { name: name.into() });
        }
        // Slots are reused, so the id of a new bridge stays below this too.
        if t.bridges.iter().flatten().count() >= MAX_BRIDGES {
            return Err(ControlError::TooManyBridges);
        }
        let fdb = Arc::new(Fdb::new(&self.fdb_cfg));
        self.switch.update(|t| {
            let slot = t
                .bridges
                .iter()
                .position(Option::is_none)
                .unwrap_or(t.bridges.len());
            let b = Bridge {
                id: BridgeId(slot as u16),
                name: name.into(),
                ports: Vec::new(),
                fdb,
            };
            if slot == t.bridges.len() {
                t.bridges.push(Some(b));
            } else {
                t.bridges[slot] = Some(b);
            }
        });
        tracing::info!(bridge = name, "bridge added");
        Ok(())
    }

    /// Removes a bridge that has no ports.
    ///
    /// # Errors
    /// Unknown bridge, or ports still attached.
    pub fn bridge_del(&self, name: &str) -> Result<(), ControlError> {
        let mut st = self.lock();
        let t = self.switch.load();
        let b = bridge_named(&t, name)?;
        if !b.ports.is_empty() {
            let ports: Vec<String> = b
                .ports
                .iter()
                .filter_map(|p| t.port(*p).map(|e| e.name.to_string()))
                .collect();
            return Err(ControlError::BridgeHasPorts {
                name: name.into(),
                ports,
            });
        }
        let id = b.id;
        self.switch.update(|t| t.bridges[id.0 as usize] = None);
        Dataplane::drop_bridge_statics(&mut st, name);
        tracing::info!(bridge = name, "bridge removed");
        Ok(())
    }

    /// Opens a port and starts switching on it. Traffic on other ports is not
    /// interrupted.
    ///
    /// # Errors
    /// Invalid spec, duplicate name, unknown bridge, or the driver fails to open.
    pub fn port_add(&self, spec: PortSpec) -> Result<(), ControlError> {
        let port = spec
            .validate(&self.host)
            .map_err(|source| ControlError::InvalidPort {
                port: spec.name.clone(),
                source,
            })?;
        self.add_port(port)
    }

    /// [`port_add`](Self::port_add) of a validated port.
    fn add_port(&self, port: PortConfig) -> Result<(), ControlError> {
        // A pcap port's files are opened (and a replay file read) before the
        // control lock is taken, so that a slow or odd file never stalls other
        // requests; the checks run again under the lock below.
        let preopened = if matches!(port.kind, PortKind::Pcap { .. }) {
            self.check_new_port(&self.lock(), &port)?;
            Some(self.factory.open(&port, self.pool, None, None)?)
        } else {
            None
        };
        self.add_opened(port, preopened)
    }

    /// [`port_add`](Self::port_add) after validation, with the port already
    /// opened or (None) to be opened under the lock.
    fn add_opened(
        &self,
        mut spec: PortConfig,
        preopened: Option<OpenedPort>,
    ) -> Result<(), ControlError> {
        let mut st = self.lock();
        self.check_new_port(&st, &spec)?;
        // The security groups the port names, as they are now.
        spec.attach_acls(|name| acl_lookup(&st.acls, name))
            .map_err(|source| ControlError::InvalidPort {
                port: spec.name.clone(),
                source,
            })?;
        let t = self.switch.load();
        let bridge = match &spec.bridge {
            Some(b) => Some(
                t.bridge_by_name(b)
                    .ok_or_else(|| ControlError::PortBridgeMissing {
                        port: spec.name.clone(),
                        bridge: b.clone(),
                    })?
                    .id,
            ),
            None => None,
        };
        let id = free_port_id(&st, &t)?;
        let tunnel = match &spec.kind {
            PortKind::Tunnel(tc) => Some((tc.clone(), self.new_tunnel(&st, id, &spec, tc)?)),
            _ => None,
        };
        let underlay = self.start_underlay(id, &spec)?;
        let tso_pool = self.tso_pool_for(&mut st, &spec);
        let OpenedPort { queues, device } = match (preopened, &tunnel, &spec.kind) {
            (Some(p), _, _) => p,
            // A queue per worker: each encapsulates what it switches to the
            // tunnel and switches what it decapsulates itself.
            (None, Some((_, shared)), _) => OpenedPort::plain(
                (0..self.workers.len())
                    .map(|q| {
                        Box::new(shared.port(q, Arc::new(QueueStats::default())))
                            as Box<dyn dataplane::port::Port>
                    })
                    .collect(),
            ),
            (None, None, PortKind::Patch { peer }) => OpenedPort::plain(vec![Box::new(
                Dataplane::patch_end(&mut st, &spec.name, peer)?,
            )]),
            (None, None, _) => {
                // A guest behind a tunnel learns an MTU whose frames fit it
                // (tunnels added later do not change it: the guest reads
                // its MTU once, when its driver probes).
                let guest_mtu = match (&spec.kind, &spec.bridge) {
                    (PortKind::VhostUser { .. }, Some(b)) => Self::tunnel_guest_mtu(&st, b),
                    _ => None,
                };
                self.factory.open(&spec, self.pool, tso_pool, guest_mtu)?
            }
        };
        // Place queues round-robin over workers; the first queue's worker owns the
        // port's handoff ring.
        let placement: Vec<usize> = (0..queues.len())
            .map(|i| (st.next_worker + i) % self.workers.len())
            .collect();
        st.next_worker = (st.next_worker + 1) % self.workers.len();
        let owner = WorkerId(placement[0] as u16);
        let entry = Arc::new(
            PortEntry::new(id, &spec.name, bridge, owner)
                .with_handoff_budget(Arc::clone(&self.handoff_budgets[placement[0]])),
        );
        // The port and its pipeline settings in one publication: no frame
        // sees the port without its VLAN mode.
        let (rx_gen, rx_filter) = rx_filter_of(&spec.settings, device.as_deref());
        let policy = published(&spec.policy, &rx_filter);
        self.switch.update(|t| {
            if t.ports.len() <= id.index() {
                t.ports.resize(id.index() + 1, None);
            }
            t.ports[id.index()] = Some(entry);
            t.set_policy(id, Some(policy));
            if let Some((_, host)) = &underlay {
                t.set_host(id, Some(Arc::clone(host)));
            }
            if let Some(b) = bridge {
                if let Some(Some(br)) = t.bridges.get_mut(b.0 as usize) {
                    br.ports.push(id);
                }
            }
        });
        let mut qrec = Vec::new();
        let mut failed = None;
        for (q, (dev, w)) in queues.into_iter().zip(placement).enumerate() {
            qrec.push((w, dev.stats().clone()));
            if let Err(e) = self.workers[w].add_queue(id, QueueId(q as u16), dev) {
                failed = Some(e);
                break;
            }
        }
        let rec = PortRecord {
            id,
            port: spec,
            cleared: vec![StatsSnapshot::default(); qrec.len()],
            queues: qrec,
            device,
            rx_filter,
            rx_gen,
        };
        if let Some(e) = failed {
            // Take back what was placed, as `port del` would; the id stays
            // reserved if a worker keeps a queue.
            let name = rec.port.name.clone();
            if let Err(e2) = self.retire(&mut st, rec) {
                tracing::warn!(port = %name, "{}", error_chain(&e2));
            }
            return Err(ControlError::StartQueues {
                port: name,
                source: e,
            });
        }
        tracing::info!(port = %rec.port.name, kind = %rec.port.kind.port_type(), id = id.0, queues = rec.queues.len(), "port added");
        let name = rec.port.name.clone();
        st.ports.insert(name.clone(), rec);
        if let Some((u, _)) = underlay {
            self.underlay_published(&u);
            st.underlays.insert(name.clone(), u);
        }
        if let Some((tc, shared)) = tunnel {
            self.tunnel_published(&mut st, &name, &tc, shared);
        }
        st.ports_added += 1;
        Ok(())
    }

    /// Refuses a port whose name is taken, or whose socket or capture file
    /// another port uses.
    fn check_new_port(&self, st: &State, spec: &PortConfig) -> Result<(), ControlError> {
        if st.ports.contains_key(&spec.name) {
            return Err(ControlError::PortExists {
                name: spec.name.clone(),
            });
        }
        if let Some((key, path)) = spec
            .paths()
            .into_iter()
            .find(|(_, p)| *p == self.control_socket)
        {
            return Err(ControlError::ControlSocketPath {
                port: spec.name.clone(),
                key,
                path,
            });
        }
        for rec in st.ports.values().chain(&st.stuck) {
            if let Some((key, other_key, path)) = spec.path_conflict(&rec.port) {
                return Err(ControlError::PathInUse {
                    port: spec.name.clone(),
                    key,
                    path,
                    other_key,
                    other: rec.port.name.clone(),
                });
            }
        }
        Ok(())
    }

    /// Stops switching on a port and closes it. Traffic on other ports is not
    /// interrupted.
    ///
    /// # Errors
    /// Unknown port, or a worker did not give the queues back in time.
    pub fn port_del(&self, name: &str) -> Result<(), ControlError> {
        let mut st = self.lock();
        let uses = Dataplane::mirrors_using(&st, name);
        if !uses.is_empty() {
            return Err(ControlError::PortInUse {
                name: name.into(),
                uses,
            });
        }
        let tunnels = Dataplane::tunnels_over(&st, name);
        if !tunnels.is_empty() {
            return Err(ControlError::UnderlayInUse {
                name: name.into(),
                tunnels,
            });
        }
        self.tunnel_removed(&mut st, name);
        let rec = st
            .ports
            .remove(name)
            .ok_or_else(|| ControlError::NoSuchPort { name: name.into() })?;
        // Deleted from the tables even if a worker keeps its queues.
        st.ports_deleted += 1;
        Dataplane::drop_port_statics(&mut st, &self.switch.load(), name, rec.id);
        let underlay = st.underlays.remove(name);
        self.retire(&mut st, rec)?;
        drop(underlay);
        // A patch link neither end uses any more goes.
        st.patches
            .retain(|_, link| link.attached(0) || link.attached(1));
        tracing::info!(port = name, "port removed");
        Ok(())
    }

    /// Unpublishes a port and takes its queues back from every worker. If a
    /// worker does not give them back in time, the record (its id, its
    /// socket path, its device) is kept in `st.stuck`, so that no new port
    /// gets an id a worker may still be running.
    fn retire(&self, st: &mut State, rec: PortRecord) -> Result<(), ControlError> {
        let id = rec.id;
        // 1. Unpublish: no worker will learn, forward or hand off to it any more.
        let generation = self.switch.update(|t| {
            if let Some(slot) = t.ports.get_mut(id.index()) {
                *slot = None;
            }
            t.set_host(id, None);
            for b in t.bridges.iter_mut().flatten() {
                b.ports.retain(|p| *p != id);
            }
        });
        // 2. Flush its addresses and wait until every worker runs on the new
        // tables.
        self.flush_port_after(id, generation);
        // 3. Take its queues back and close them; ask every worker even if
        // one fails.
        let mut workers: Vec<usize> = rec.queues.iter().map(|q| q.0).collect();
        workers.sort_unstable();
        workers.dedup();
        let mut first_err = None;
        for w in workers {
            match self.workers[w].remove_port(id, self.worker_timeout) {
                Ok(devs) => drop(devs),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            let name = rec.port.name.clone();
            st.stuck.push(rec);
            return Err(ControlError::PortStuck {
                port: name,
                id: id.0,
                source: e,
            });
        }
        drop(rec.device);
        Ok(())
    }

    /// Removes the addresses learned on port `id` once every worker runs on
    /// tables of `generation` (the update that changed the port): flushed at
    /// once, and again after the wait, since a worker still on older tables
    /// may have learned one in between.
    fn flush_port_after(&self, id: PortId, generation: u64) {
        let flush = || {
            for b in self.switch.load().bridges.iter().flatten() {
                b.fdb.flush_port(id);
            }
        };
        flush();
        self.wait_workers(generation);
        flush();
    }

    /// Waits (each up to the worker timeout) until every worker runs on
    /// tables of `generation` or later.
    fn wait_workers(&self, generation: u64) {
        for w in &self.workers {
            if !w.wait_generation(generation, self.worker_timeout) {
                tracing::warn!(worker = w.id().0, "worker slow to acknowledge table change");
            }
        }
    }

    /// Changes switch settings of a port (`port set`): each key of
    /// `settings` to its value, in `port set`'s text form. The port's
    /// settings with the changes are checked as a whole; if valid they are
    /// published in one table update (no frame sees half of them) and, if the
    /// VLAN or port security settings changed, the addresses learned on the
    /// port are flushed (they were learned in VLANs the port may no longer
    /// carry, as Open vSwitch does, or from sources it may no longer use).
    /// A change returns once every worker switches with it: the next frame
    /// is handled with the new settings. Returns the port's settings after
    /// the change.
    ///
    /// # Errors
    /// Unknown port, unknown key, a value that does not parse, or settings
    /// that do not go together; nothing changes then.
    ///
    /// On a tunnel port, `remote_ips` (the flood list) changes too, with
    /// the rest or alone: see [`Dataplane::tunnel_remotes_set`].
    pub fn port_set(
        &self,
        name: &str,
        settings: &BTreeMap<String, String>,
    ) -> Result<PortSettings, ControlError> {
        let mut st = self.lock();
        let remotes = settings
            .get(REMOTE_IPS)
            .map(|v| Dataplane::tunnel_remotes_check(&st, name, v))
            .transpose()?;
        let out = self.change_settings_in(&mut st, name, |s| {
            settings
                .iter()
                .filter(|(key, _)| *key != REMOTE_IPS)
                .try_for_each(|(key, value)| s.set(key, value))
        })?;
        if let Some(ips) = remotes {
            self.tunnel_remotes_set(&mut st, name, &ips);
        }
        Ok(out)
    }

    /// Gives switch settings of a port their defaults (`port clear`), as
    /// [`port_set`](Self::port_set) changes them.
    ///
    /// # Errors
    /// As [`port_set`](Self::port_set).
    pub fn port_clear(&self, name: &str, keys: &[String]) -> Result<PortSettings, ControlError> {
        if keys.iter().any(|k| k == REMOTE_IPS) {
            return Err(ControlError::InvalidPort {
                port: name.into(),
                source: PortError::Overlay {
                    key: REMOTE_IPS,
                    reason: "a tunnel always has remotes: `port set` gives it another list".into(),
                },
            });
        }
        let mut st = self.lock();
        self.change_settings_in(&mut st, name, |s| {
            keys.iter().try_for_each(|key| s.clear(key))
        })
    }

    /// [`port_set`](Self::port_set) and [`port_clear`](Self::port_clear):
    /// applies `change` to a copy of the port's settings, checks the result
    /// and publishes it.
    fn change_settings_in(
        &self,
        st: &mut State,
        name: &str,
        change: impl FnOnce(&mut PortSettings) -> Result<(), PortError>,
    ) -> Result<PortSettings, ControlError> {
        let State { ports, acls, .. } = st;
        let rec = ports
            .get_mut(name)
            .ok_or_else(|| ControlError::NoSuchPort { name: name.into() })?;
        let invalid = |source| ControlError::InvalidPort {
            port: name.into(),
            source,
        };
        let mut settings = rec.port.settings.clone();
        change(&mut settings).map_err(invalid)?;
        let mut policy = rec.port.check_settings(&settings).map_err(invalid)?;
        (policy.acl_in, policy.acl_out) =
            settings.acls(|n| acl_lookup(acls, n)).map_err(invalid)?;
        let (rx_gen, rx_filter) = rx_filter_of(&settings, rec.device.as_deref());
        if policy != rec.port.policy || rx_filter != rec.rx_filter {
            let id = rec.id;
            let new = published(&policy, &rx_filter);
            let generation = self.switch.update(|t| t.set_policy(id, Some(new)));
            let old = &rec.port.policy;
            if policy.vlan != old.vlan || policy.security != old.security {
                self.flush_port_after(id, generation);
            } else {
                self.wait_workers(generation);
            }
        }
        tracing::info!(port = name, ?settings, "port settings changed");
        rec.port.settings = settings.clone();
        rec.port.policy = policy;
        (rec.rx_gen, rec.rx_filter) = (rx_gen, rx_filter);
        Ok(settings)
    }

    fn port_info(&self, rec: &PortRecord, t: &switch::SwitchTables) -> PortInfo {
        self.port_info_counted(rec, t, Counted::SinceClear)
    }

    /// [`port_info`](Self::port_info) with its counters `counted` since the
    /// last `stats clear` or from the start.
    fn port_info_counted(
        &self,
        rec: &PortRecord,
        t: &switch::SwitchTables,
        counted: Counted,
    ) -> PortInfo {
        // One snapshot per queue; the port's counters are their sum, so the two
        // views always agree.
        let per_queue: Vec<StatsSnapshot> = rec
            .queues
            .iter()
            .zip(&rec.cleared)
            .map(|((_, q), base)| match counted {
                Counted::SinceClear => q.snapshot().since(base),
                Counted::Total => q.snapshot(),
            })
            .collect();
        let mut s = StatsSnapshot::default();
        for q in &per_queue {
            s += *q;
        }
        let entry = t.port(rec.id);
        let err = rec.device.as_ref().and_then(|d| d.health());
        PortInfo {
            id: rec.id.0,
            name: rec.port.name.clone(),
            kind: rec.port.kind.port_type().to_string(),
            bridge: rec.port.bridge.clone(),
            iface: rec.port.endpoint(),
            link: if entry.is_some_and(|e| e.is_up()) {
                "up"
            } else {
                "down"
            }
            .into(),
            state: match err {
                Some(e) => format!("error: {e}"),
                None => "ok".into(),
            },
            queues: rec.queues.len() as u16,
            worker: rec.queues.first().map(|q| q.0 as u16),
            stats: s,
            queue_stats: per_queue,
            mtu: rec.device.as_ref().and_then(|d| d.mtu()),
            offered_mtu: rec.device.as_ref().and_then(|d| d.offered_mtu()),
            features: rec.device.as_ref().map_or_else(Vec::new, |d| {
                d.features().into_iter().map(str::to_owned).collect()
            }),
            vlan_mode: Some(rec.port.policy.vlan.mode().name().to_owned()),
            tag: rec.port.settings.tag,
            trunks: rec.port.settings.trunks.clone(),
            acl_in: rec.port.settings.acl_in.clone(),
            acl_out: rec.port.settings.acl_out.clone(),
            rx_filter: rec.rx_filter.as_ref().map(|f| f.summary()),
            settings: rec.port.settings.clone(),
            queue_workers: rec.queues.iter().map(|q| q.0 as u16).collect(),
            latency: Some(LatencyView::of(&s)),
            host: None,
            tunnel: None,
        }
    }

    /// Republishes the policy of every port whose guest changed its receive
    /// filter since the last publication, all in one table update. The
    /// housekeeping thread calls it every 100 ms: the workers see a guest's
    /// filter only through the published tables, never its device's state.
    /// Returns once every worker switches with a change.
    pub fn refresh_rx_filters(&self) {
        let mut st = self.lock();
        let mut changed = Vec::new();
        for rec in st.ports.values_mut() {
            let Some((generation, _)) = rec.device.as_ref().and_then(|d| d.rx_mode()) else {
                continue;
            };
            if generation == rec.rx_gen {
                continue;
            }
            let (generation, rx_filter) = rx_filter_of(&rec.port.settings, rec.device.as_deref());
            rec.rx_gen = generation;
            if rx_filter != rec.rx_filter {
                tracing::debug!(port = %rec.port.name, filter = ?rx_filter, "receive filter changed");
                changed.push((rec.id, published(&rec.port.policy, &rx_filter)));
                rec.rx_filter = rx_filter;
            }
        }
        if !changed.is_empty() {
            let generation = self.switch.update(|t| {
                for (id, p) in changed {
                    t.set_policy(id, Some(p));
                }
            });
            // In effect when this returns: the next frame is filtered anew.
            self.wait_workers(generation);
        }
    }

    /// Creates security group `spec.name`, or replaces it (`acl add`). The
    /// table is compiled before anything changes; if refused, nothing does.
    /// A replaced table goes into the policy of every port that uses it,
    /// all in one table update (no frame sees some of its ports with the
    /// old table and some with the new, nor a port's `acl_in` changed and
    /// its `acl_out` not), each port keeping its other settings; this
    /// returns once every worker switches with it.
    ///
    /// # Errors
    /// An invalid name or a rule the switch refuses.
    pub fn acl_add(&self, spec: AclSpec) -> Result<AclView, ControlError> {
        // Compiling a large table takes a while: not under the lock.
        let acl = Arc::new(spec.compile().map_err(|source| ControlError::InvalidAcl {
            name: spec.name.clone(),
            source,
        })?);
        let mut st = self.lock();
        let name = spec.name.clone();
        let mut changed: Vec<(String, PortId, switch::PortPolicy)> = Vec::new();
        for rec in st.ports.values() {
            let s = &rec.port.settings;
            let (uses_in, uses_out) = (
                s.acl_in.as_deref() == Some(&name),
                s.acl_out.as_deref() == Some(&name),
            );
            if !(uses_in || uses_out) {
                continue;
            }
            let mut policy = rec.port.policy.clone();
            if uses_in {
                policy.acl_in = Some(Arc::clone(&acl));
            }
            if uses_out {
                policy.acl_out = Some(Arc::clone(&acl));
            }
            changed.push((rec.port.name.clone(), rec.id, policy));
        }
        if !changed.is_empty() {
            let to_publish: Vec<(PortId, Arc<switch::PortPolicy>)> = changed
                .iter()
                .map(|(name, id, p)| (*id, published(p, &st.ports[name].rx_filter)))
                .collect();
            let generation = self.switch.update(|t| {
                for (id, p) in to_publish {
                    t.set_policy(id, Some(p));
                }
            });
            self.wait_workers(generation);
        }
        for (port, _, policy) in changed {
            if let Some(rec) = st.ports.get_mut(&port) {
                rec.port.policy = policy;
            }
        }
        let replaced = st
            .acls
            .insert(name.clone(), AclRecord { spec, acl })
            .is_some();
        tracing::info!(acl = %name, replaced, "acl added");
        Ok(acl_view(&st, &st.acls[&name]))
    }

    /// Deletes security group `name` (`acl del`); returns it as it was.
    ///
    /// # Errors
    /// Unknown name, or ports still use it (the error names them).
    pub fn acl_del(&self, name: &str) -> Result<AclView, ControlError> {
        let mut st = self.lock();
        let rec = st
            .acls
            .get(name)
            .ok_or_else(|| ControlError::NoSuchAcl { name: name.into() })?;
        let view = acl_view(&st, rec);
        let uses: Vec<String> = [("acl_in", &view.acl_in), ("acl_out", &view.acl_out)]
            .into_iter()
            .flat_map(|(key, ports)| ports.iter().map(move |p| format!("port {p} ({key})")))
            .collect();
        if !uses.is_empty() {
            return Err(ControlError::AclInUse {
                name: name.into(),
                uses,
            });
        }
        st.acls.remove(name);
        tracing::info!(acl = name, "acl removed");
        Ok(view)
    }

    /// Every security group, by name.
    pub fn acl_list(&self) -> Vec<AclInfo> {
        let st = self.lock();
        st.acls
            .values()
            .map(|rec| {
                let v = acl_view(&st, rec);
                AclInfo {
                    name: v.name,
                    default: v.default,
                    rules: v.rules.len(),
                    acl_in: v.acl_in,
                    acl_out: v.acl_out,
                }
            })
            .collect()
    }

    /// One security group with its rules.
    ///
    /// # Errors
    /// Unknown name.
    pub fn acl_show(&self, name: &str) -> Result<AclView, ControlError> {
        let st = self.lock();
        st.acls
            .get(name)
            .map(|rec| acl_view(&st, rec))
            .ok_or_else(|| ControlError::NoSuchAcl { name: name.into() })
    }

    /// Every port, by name.
    pub fn port_list(&self) -> Vec<PortInfo> {
        let st = self.lock();
        let t = self.switch.load();
        st.ports.values().map(|r| self.port_info(r, &t)).collect()
    }

    /// One port (`port show`).
    ///
    /// # Errors
    /// Unknown port.
    pub fn port_show(&self, name: &str) -> Result<PortInfo, ControlError> {
        let st = self.lock();
        let rec = st
            .ports
            .get(name)
            .ok_or_else(|| ControlError::NoSuchPort { name: name.into() })?;
        let tunnel = match &rec.port.kind {
            PortKind::Tunnel(t) => Some(t),
            _ => None,
        };
        let (host, tunnel) = Self::overlay_views(&st, name, tunnel);
        Ok(PortInfo {
            host,
            tunnel,
            ..self.port_info(rec, &self.switch.load())
        })
    }

    /// Every bridge.
    pub fn bridge_list(&self) -> Vec<BridgeInfo> {
        let t = self.switch.load();
        t.bridges
            .iter()
            .flatten()
            .map(|b| BridgeInfo {
                name: b.name.to_string(),
                ports: b
                    .ports
                    .iter()
                    .filter_map(|p| t.port(*p).map(|e| e.name.to_string()))
                    .collect(),
                fdb_entries: b.fdb.len(),
            })
            .collect()
    }

    /// Per-worker view for `pmd show`.
    pub fn workers(&self) -> Vec<WorkerView> {
        self.workers_counted(Counted::SinceClear)
    }

    fn workers_counted(&self, counted: Counted) -> Vec<WorkerView> {
        let t = self.switch.load();
        let cleared = match counted {
            Counted::SinceClear => self.lock().workers_cleared.clone(),
            Counted::Total => Vec::new(),
        };
        self.workers
            .iter()
            .zip(&self.worker_cpus)
            .enumerate()
            .map(|(i, (w, &cpu))| {
                let s = WorkerTotals::of(w).since(&cleared.get(i).copied().unwrap_or_default());
                let (busy, idle) = (s.busy, s.idle);
                let mut drops = BTreeMap::new();
                if s.handoff_full > 0 {
                    drops.insert(DropReason::HandoffFull.name().to_string(), s.handoff_full);
                }
                WorkerView {
                    id: w.id().0,
                    cpu,
                    rx_queues: w
                        .shared()
                        .assigned()
                        .into_iter()
                        .map(|(p, q)| {
                            let name = t
                                .port(p)
                                .map(|e| e.name.to_string())
                                .unwrap_or_else(|| p.to_string());
                            format!("{name}:{}", q.0)
                        })
                        .collect(),
                    busy_cycles: busy,
                    idle_cycles: idle,
                    busy_pct: if busy + idle == 0 {
                        0.0
                    } else {
                        100.0 * busy as f64 / (busy + idle) as f64
                    },
                    rx_packets: s.rx_packets,
                    drops,
                    busy_rounds: s.busy_rounds,
                    stages: StageCycles {
                        rx: s.rx,
                        switch: s.switch,
                        tx: s.tx,
                        packets: s.sampled,
                    },
                }
            })
            .collect()
    }

    /// Starts the counters that `port list`, `port show` and `stats` report
    /// again from zero (`stats clear`): those of port `name`, or of every
    /// port and worker. Returns the ports cleared. The counters themselves
    /// keep counting (their one writer is the worker); weir subtracts what
    /// they held now.
    ///
    /// # Errors
    /// Unknown port.
    pub fn stats_clear(&self, name: Option<&str>) -> Result<Vec<String>, ControlError> {
        let mut st = self.lock();
        let snap = |rec: &mut PortRecord| {
            rec.cleared = rec.queues.iter().map(|(_, q)| q.snapshot()).collect();
            rec.port.name.clone()
        };
        let cleared = match name {
            Some(name) => {
                let rec = st
                    .ports
                    .get_mut(name)
                    .ok_or_else(|| ControlError::NoSuchPort { name: name.into() })?;
                vec![snap(rec)]
            }
            None => {
                st.workers_cleared = self.workers.iter().map(WorkerTotals::of).collect();
                st.ports.values_mut().map(snap).collect()
            }
        };
        tracing::info!(ports = ?cleared, "counters cleared");
        Ok(cleared)
    }

    /// Everything `weir stats` shows.
    pub fn stats(&self) -> StatsView {
        let tso_pool = self.lock().tso_pool;
        StatsView {
            ports: self.port_list(),
            workers: self.workers(),
            mempool: pool_view(self.pool),
            tso_pool: tso_pool.map(pool_view),
        }
    }

    /// Everything the metrics endpoint reports, read now: raw counters,
    /// which only grow while a port lives.
    pub fn scrape(&self) -> Scrape {
        let (ports, tso_pool, ports_added, ports_deleted) = {
            let st = self.lock();
            let t = self.switch.load();
            let ports = st
                .ports
                .values()
                .map(|r| PortSample {
                    info: self.port_info_counted(r, &t, Counted::Total),
                    connection: r.device.as_ref().and_then(|d| d.connection_events()),
                    tso_buffers_held: r.device.as_ref().and_then(|d| d.tso_buffers_held()),
                })
                .collect();
            (ports, st.tso_pool, st.ports_added, st.ports_deleted)
        };
        let pool = |name, p: &Mempool| PoolSample {
            name,
            view: pool_view(p),
            alloc_failures: p.alloc_failures(),
            share_refusals: p.share_refusals(),
        };
        Scrape {
            ports,
            workers: self.workers_counted(Counted::Total),
            pools: std::iter::once(pool("mbuf", self.pool))
                .chain(tso_pool.map(|p| pool("tso", p)))
                .collect(),
            bridges: self.bridge_list(),
            ports_added,
            ports_deleted,
        }
    }

    /// Stops the workers and closes every port.
    pub fn shutdown(self) {
        let Dataplane { workers, state, .. } = self;
        for w in workers {
            w.stop();
        }
        drop(state);
    }
}

/// The compiled security group named `name`.
impl Dataplane {
    /// The queue of patch port `name` whose other end is `peer`: its side
    /// of their link, which the first of the two to be added creates.
    fn patch_end(
        st: &mut State,
        name: &str,
        peer: &str,
    ) -> Result<dataplane::patch::PatchPort, ControlError> {
        let (key, side) = if name < peer {
            ((name.to_owned(), peer.to_owned()), 0)
        } else {
            ((peer.to_owned(), name.to_owned()), 1)
        };
        if let Some(other) = st.ports.get(peer) {
            if !matches!(&other.port.kind, PortKind::Patch { peer: p } if p == name) {
                return Err(ControlError::Patch {
                    port: name.into(),
                    reason: format!("port {peer} is not a patch port with peer = {name}"),
                });
            }
        }
        let link = st
            .patches
            .entry(key)
            .or_insert_with(dataplane::patch::PatchLink::new);
        link.attach(side, Arc::new(QueueStats::default()))
            .ok_or_else(|| ControlError::Patch {
                port: name.into(),
                reason: format!("the end of the link to {peer} is still held by a removed port"),
            })
    }
}

/// The bridge `name` in `t`, or [`ControlError::NoSuchBridge`].
fn bridge_named<'t>(t: &'t switch::SwitchTables, name: &str) -> Result<&'t Bridge, ControlError> {
    t.bridge_by_name(name)
        .ok_or_else(|| ControlError::NoSuchBridge { name: name.into() })
}

fn acl_lookup(acls: &BTreeMap<String, AclRecord>, name: &str) -> Option<Arc<Acl>> {
    acls.get(name).map(|r| Arc::clone(&r.acl))
}

/// A security group as `acl show` gives it, with the ports that use it.
fn acl_view(st: &State, rec: &AclRecord) -> AclView {
    let users = |key: fn(&PortSettings) -> &Option<String>| -> Vec<String> {
        st.ports
            .values()
            .filter(|p| key(&p.port.settings).as_deref() == Some(rec.spec.name.as_str()))
            .map(|p| p.port.name.clone())
            .collect()
    };
    AclView {
        name: rec.spec.name.clone(),
        default: rec.spec.default,
        rules: rec.spec.rules.clone(),
        acl_in: users(|s| &s.acl_in),
        acl_out: users(|s| &s.acl_out),
    }
}

/// The lowest port id neither in the tables nor held by a stuck port: ids
/// of ports whose queues a worker never gave back stay taken, since the
/// worker may still run them under that id.
fn free_port_id(st: &State, t: &switch::SwitchTables) -> Result<PortId, ControlError> {
    let stuck_end = st.stuck.iter().map(|r| r.id.index() + 1).max().unwrap_or(0);
    let id = (0..t.ports.len().max(stuck_end))
        .find(|&i| {
            !(t.ports.get(i).is_some_and(Option::is_some)
                || st.stuck.iter().any(|r| r.id.index() == i))
        })
        .unwrap_or(t.ports.len().max(stuck_end));
    if id >= switch::MAX_PORTS {
        return Err(ControlError::TooManyPorts);
    }
    Ok(PortId(id as u16))
}

/// AF_XDP UMEMs and BPF maps count against `RLIMIT_MEMLOCK`; lift it as far as
/// we are allowed (unlimited with CAP_SYS_RESOURCE), as DPDK and OVS do.
fn raise_memlock_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let unlimited = Rlimit {
        current: None,
        maximum: None,
    };
    if setrlimit(Resource::Memlock, unlimited).is_err() {
        let cur = getrlimit(Resource::Memlock);
        let _ = setrlimit(
            Resource::Memlock,
            Rlimit {
                current: cur.maximum,
                maximum: cur.maximum,
            },
        );
    }
}

fn result<T: serde::Serialize>(r: Result<T, ControlError>) -> Response {
    match r {
        Ok(v) => Response::with_data(&v),
        Err(e) => Response::error(error_chain(&e)),
    }
}

fn done(r: Result<(), ControlError>) -> Response {
    match r {
        Ok(()) => Response::ok(),
        Err(e) => Response::error(error_chain(&e)),
    }
}

/// The tunnel port key `port set` changes besides the switch settings.
const REMOTE_IPS: &str = "remote_ips";

/// Whether `req` may change the running configuration (on success, or in
/// part on failure, as a `port del` whose worker keeps the queues).
fn changes_config(req: &Request) -> bool {
    matches!(
        req,
        Request::PortAdd(_)
            | Request::PortDel { .. }
            | Request::PortSet { .. }
            | Request::PortClear { .. }
            | Request::BridgeAdd { .. }
            | Request::BridgeDel { .. }
            | Request::AclAdd(_)
            | Request::AclDel { .. }
            | Request::MirrorAdd(_)
            | Request::MirrorDel { .. }
            | Request::FdbAdd { .. }
            | Request::FdbDel { .. }
    )
}

impl Handler for Dataplane {
    fn handle(&self, req: Request) -> Response {
        let save = changes_config(&req);
        let mut resp = self.answer(req);
        if save {
            if let Err(e) = self.save_state() {
                let msg = format!(
                    "{}; the change is in effect but will not survive a restart",
                    error_chain(&e)
                );
                tracing::error!("{msg}");
                resp.warning = Some(msg);
            }
        }
        resp
    }

    fn stream(&self, req: Request, send: &mut dyn FnMut(&Response) -> std::io::Result<()>) {
        match req {
            Request::Capture(spec) => self.capture(spec, send),
            req => {
                let _ = send(&self.handle(req));
            }
        }
    }
}

impl Dataplane {
    /// The reply to one control request.
    fn answer(&self, req: Request) -> Response {
        match req {
            Request::PortAdd(spec) => done(self.port_add(*spec)),
            Request::PortDel { name } => done(self.port_del(&name)),
            Request::PortList => Response::with_data(&self.port_list()),
            Request::PortShow { name } => result(self.port_show(&name)),
            Request::PortSet { name, settings } => result(self.port_set(&name, &settings)),
            Request::PortClear { name, keys } => result(self.port_clear(&name, &keys)),
            Request::BridgeAdd { name } => done(self.bridge_add(&name)),
            Request::BridgeDel { name } => done(self.bridge_del(&name)),
            Request::BridgeList => Response::with_data(&self.bridge_list()),
            Request::FdbShow { bridge } => result(self.fdb_show(bridge.as_deref())),
            Request::FdbFlush { bridge } => done(self.fdb_flush(bridge.as_deref()).map(|_| ())),
            Request::FdbAdd {
                bridge,
                mac,
                port,
                vlan,
                remote,
            } => done(self.fdb_add(&bridge, &mac, &port, vlan, remote.as_deref())),
            Request::FdbDel { bridge, mac, vlan } => done(self.fdb_del(&bridge, &mac, vlan)),
            Request::IpShow => result(Ok::<_, ControlError>(self.ip_show())),
            Request::NeighShow => result(Ok::<_, ControlError>(self.neigh_show())),
            Request::Stats => Response::with_data(&self.stats()),
            Request::StatsClear { port } => result(self.stats_clear(port.as_deref())),
            Request::PmdShow => Response::with_data(&self.workers()),
            Request::Version => Response::with_data(&VersionView::current()),
            Request::AclAdd(spec) => result(self.acl_add(spec)),
            Request::AclDel { name } => result(self.acl_del(&name)),
            Request::AclList => Response::with_data(&self.acl_list()),
            Request::AclShow { name } => result(self.acl_show(&name)),
            Request::ConfigDump => result(self.config_dump()),
            Request::MirrorAdd(spec) => result(self.mirror_add(spec)),
            Request::MirrorDel { name } => result(self.mirror_del(&name)),
            Request::MirrorList => Response::with_data(&self.mirror_list()),
            Request::Capture(spec) => Response::error(format!(
                "capture of {} needs a streaming connection",
                spec.port
            )),
        }
    }
}

/// Starts the control-side housekeeping thread: every `period` it advances the
/// FDB clock, ages the FDBs and swaps in rebuilt tables. It stops when `stop` is
/// set (checked every 100 ms) or the dataplane is gone.
///
/// # Errors
/// If the thread cannot be created.
pub fn spawn_housekeeping(
    dp: std::sync::Weak<Dataplane>,
    stop: Arc<AtomicBool>,
    period: Duration,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let step = Duration::from_millis(100).min(period);
    std::thread::Builder::new()
        .name("weir-housekeeping".into())
        .spawn(move || {
            let mut waited = Duration::ZERO;
            // Relaxed: a plain flag; the caller joins the thread.
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(step);
                waited += step;
                let Some(dp) = dp.upgrade() else { return };
                dp.refresh_rx_filters();
                if waited < period {
                    continue;
                }
                waited = Duration::ZERO;
                let aged = dp.switch.age_fdbs();
                if aged > 0 {
                    tracing::debug!(aged, "fdb entries aged out");
                }
            }
        })
}

/// Runs the daemon in the foreground until SIGINT or SIGTERM. Its control
/// socket is `valid`'s `[control] socket`: a `--socket` that overrides the
/// file's is set there before validation, so that no port takes the path in
/// use.
///
/// # Errors
/// If the dataplane cannot be built or the control socket bound.
pub fn run(valid: ValidConfig) -> Result<(), ControlError> {
    let cfg = valid.config();
    tracing::info!(
        config = cfg.origin(),
        ports = cfg.ports.len(),
        bridges = cfg.bridges.len(),
        "starting"
    );
    raise_fd_limit(cfg);
    // A bad $NOTIFY_SOCKET is the service manager's mistake, not the
    // switch's: say so and run without notifications.
    let notify = weir_host::notify::Notifier::from_env().unwrap_or_else(|e| {
        tracing::warn!(%e, "not notifying the service manager");
        weir_host::notify::Notifier::none()
    });
    let socket = cfg.control.socket.clone();
    let owner = match &cfg.control.socket_group {
        None => vhost_user::SocketOwner::default(),
        Some(group) => vhost_user::SocketOwner {
            mode: 0o660,
            gid: Some(
                crate::ports::resolve_group(group)
                    .map_err(|e| ControlError::SocketGroup(group.clone(), e))?,
            ),
        },
    };
    let server = ControlServer::bind_owned(&socket, owner)?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(ControlError::Signals)?;
    }
    // Every thread started from here on (control, vhost-user, housekeeping)
    // inherits this thread's mask; workers pin themselves to their CPU.
    if let Some((_, cpus)) =
        weir_host::affinity::confine_off(&cfg.dataplane.worker_cpus(&Host::system()))
    {
        tracing::info!(?cpus, "control threads kept off the workers' CPUs");
    }
    // Bound before the dataplane starts, so that an address in use fails
    // the start at once, with nothing to tear down.
    let metrics = cfg
        .metrics
        .as_ref()
        .map(|m| MetricsServer::bind(m.listen))
        .transpose()?;
    let dp = Arc::new(Dataplane::start(valid)?);
    // Housekeeping: the FDB clock, aging and rebuilds, once a second.
    let hk = spawn_housekeeping(Arc::downgrade(&dp), stop.clone(), Duration::from_secs(1))
        .map_err(ControlError::Housekeeping)?;
    let metrics = match metrics {
        Some(server) => {
            // A weak reference: a scrape in flight at shutdown must not keep
            // the dataplane (its ports and workers) alive.
            let weak = Arc::downgrade(&dp);
            let render: Arc<Render> = Arc::new(move |format| {
                weak.upgrade()
                    .map(|dp| dp.scrape())
                    .unwrap_or_default()
                    .encode(format)
            });
            Some(server.spawn(render, stop.clone())?)
        }
        None => None,
    };
    tracing::info!(socket = %socket.display(), "control socket ready");
    // The socket is bound and listening: clients that connect now are
    // served as soon as `serve` runs.
    notify.ready(&format!(
        "{} ports, {} bridges; control socket {}",
        dp.port_list().len(),
        dp.bridge_list().len(),
        socket.display()
    ));
    server.serve(dp.clone(), stop.clone());
    notify.stopping("stopping workers and closing ports");
    stop.store(true, Ordering::Relaxed);
    let _ = hk.join();
    if let Some(m) = metrics {
        let _ = m.join();
    }
    tracing::info!("shutting down");
    match Arc::try_unwrap(dp) {
        Ok(dp) => dp.shutdown(),
        Err(_) => tracing::warn!("control connections still open at shutdown"),
    }
    Ok(())
}

/// fds for everything but the ports (control socket and its clients, logs,
/// pools, workers), and for ports added at run time.
const FD_BASE: u64 = 1024;

/// fds the configuration's ports may hold at most (vhost-user devices by
/// [`vhost_user::max_fds`], whatever their frontends do), plus [`FD_BASE`].
fn fds_needed(cfg: &Config) -> u64 {
    let ports: u64 = cfg
        .ports
        .iter()
        .map(|p| {
            let queues = p.queues.unwrap_or(1).max(1);
            match p.kind {
                PortType::VhostUser => vhost_user::max_fds(queues),
                _ => 8 + 4 * u64::from(queues),
            }
        })
        .sum();
    FD_BASE + ports
}

/// Raises the soft `RLIMIT_NOFILE` towards what the configuration needs (up
/// to the hard limit; never lowers it). The common default soft limit of
/// 1024 is too low for a few dozen VMs, and a frontend that ran the daemon out
/// of fds would stop the control socket and every other port.
fn raise_fd_limit(cfg: &Config) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let need = fds_needed(cfg);
    let lim = getrlimit(Resource::Nofile);
    let (Some(soft), hard) = (lim.current, lim.maximum) else {
        return;
    };
    let target = hard.map_or(need, |h| need.min(h));
    if hard.is_some_and(|h| need > h) {
        tracing::warn!(
            need,
            hard = hard.unwrap_or(0),
            "the configuration may need more file descriptors than RLIMIT_NOFILE allows"
        );
    }
    if target <= soft {
        return;
    }
    let new = rustix::process::Rlimit {
        current: Some(target),
        maximum: hard,
    };
    match setrlimit(Resource::Nofile, new) {
        Ok(()) => tracing::info!(from = soft, to = target, "raised RLIMIT_NOFILE"),
        Err(e) => tracing::warn!(%e, "cannot raise RLIMIT_NOFILE"),
    }
}

/// A pool's fill level and backing, as `weir stats` shows it.
fn pool_view(p: &Mempool) -> MempoolView {
    MempoolView {
        total: p.capacity(),
        available: p.available(),
        hugepages: p.backing() == dataplane::mempool::Backing::Hugepages2M,
        mbuf_size: p.data_room(),
        port_share: p.share_limit(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::testutil::{ScriptHandle, ScriptedPort};
    use dataplane::{Burst, MacAddr, Port};
    use std::net::Ipv4Addr;
    use std::sync::atomic::AtomicBool;
    use weir_config::StaticFdbSpec;

    /// A queue whose `rx_burst` does not return while `hold` is set: a worker
    /// stuck on it answers no command.
    struct Stuck {
        hold: Arc<AtomicBool>,
        entered: Arc<AtomicBool>,
        stats: Arc<QueueStats>,
    }

    impl Port for Stuck {
        fn rx_burst(&mut self, _burst: &mut Burst) -> usize {
            // Relaxed: test flags polled in a loop.
            self.entered.store(true, Ordering::Relaxed);
            while self.hold.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(1));
            }
            0
        }

        fn tx_burst(&mut self, burst: &mut Burst) -> usize {
            let n = burst.len();
            burst.clear();
            n
        }

        fn stats(&self) -> &Arc<QueueStats> {
            &self.stats
        }
    }

    struct Release(Arc<AtomicBool>);

    impl Drop for Release {
        fn drop(&mut self) {
            // Relaxed: a test flag.
            self.0.store(false, Ordering::Relaxed);
        }
    }

    fn small_dataplane() -> Dataplane {
        let mut cfg = Config::default();
        cfg.dataplane.mbufs = 256;
        cfg.dataplane.tso_mbufs = 0;
        cfg.dataplane.hugepages = weir_config::HugepageMode::Never;
        // Other tests share the CPU: the worker sleeps when idle.
        cfg.dataplane.idle_sleep_us = 50;
        cfg.fdb.max_entries = 64;
        let mut dp = Dataplane::start(ValidConfig::new(cfg, Host::system()).unwrap()).unwrap();
        dp.worker_timeout = Duration::from_millis(300);
        dp
    }

    fn port_id(dp: &Dataplane, name: &str) -> u16 {
        dp.port_list()
            .into_iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no port {name}"))
            .id
    }

    #[test]
    fn port_whose_worker_does_not_give_it_back_keeps_its_id_reserved() {
        let dp = small_dataplane();
        let hold = Arc::new(AtomicBool::new(true));
        let entered = Arc::new(AtomicBool::new(false));
        let stuck = OpenedPort {
            queues: vec![Box::new(Stuck {
                hold: Arc::clone(&hold),
                entered: Arc::clone(&entered),
                stats: Arc::default(),
            })],
            device: None,
        };
        // Declared after `dp`, so dropped first: a failed assertion releases
        // the worker before the dataplane joins it.
        let _release = Release(Arc::clone(&hold));
        let ring = PortSpec::new("p0", PortType::Ring)
            .validate(&Host::system())
            .unwrap();
        dp.add_opened(ring, Some(stuck)).unwrap();
        let stuck_id = port_id(&dp, "p0");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        // Relaxed: a test flag.
        while !entered.load(Ordering::Relaxed) {
            assert!(
                std::time::Instant::now() < deadline,
                "worker never polled p0"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let err = dp.port_del("p0").unwrap_err();
        let msg = error_chain(&err);
        assert!(msg.contains("stay reserved"), "{msg}");
        // The worker still runs p0's queue under its id: a new port must not
        // get that id.
        dp.port_add(PortSpec::new("p1", PortType::Ring)).unwrap();
        assert_ne!(port_id(&dp, "p1"), stuck_id);
        hold.store(false, Ordering::Relaxed);
        dp.shutdown();
    }

    #[test]
    fn bridges_past_the_limit_are_refused() {
        let dp = small_dataplane();
        for i in 0..MAX_BRIDGES {
            dp.bridge_add(&format!("b{i}")).unwrap();
        }
        let err = dp.bridge_add("one-more").unwrap_err();
        assert!(err.to_string().contains("too many bridges"), "{err}");
        // A freed slot can be used again, and ids stay below the limit.
        dp.bridge_del("b7").unwrap();
        dp.bridge_add("again").unwrap();
        let t = dp.switch.load();
        assert!(t.bridges.len() <= MAX_BRIDGES);
        assert_eq!(t.bridge_by_name("again").unwrap().id.0, 7);
        dp.shutdown();
    }

    /// Opens the ports a test prepared, by name; any other name fails, as a
    /// missing interface, after taking buffers from the pool, as a driver
    /// filling its rings would.
    #[derive(Default)]
    struct ScriptedFactory {
        ports: Mutex<BTreeMap<String, Vec<Box<dyn Port>>>>,
        /// The `guest_mtu` each port was opened with.
        guest_mtus: Mutex<BTreeMap<String, Option<u16>>>,
        /// A device for a scripted port, by name (a guest's receive filter).
        devices: Mutex<BTreeMap<String, Box<dyn PortDevice>>>,
    }

    /// A guest's receive filter as a vhost-user device reports it: the
    /// generation and what the guest set.
    type GuestFilter = Arc<Mutex<(u64, Option<dataplane::switch::rxfilter::GuestRxMode>)>>;

    struct FakeGuest(GuestFilter);

    impl PortDevice for FakeGuest {
        fn rx_mode(&self) -> Option<(u64, Option<dataplane::switch::rxfilter::GuestRxMode>)> {
            Some(self.0.lock().unwrap().clone())
        }
    }

    impl ScriptedFactory {
        /// Prepares a scripted port receiving into `pool` under each of
        /// `names`; returns their handles, in order.
        fn script<const N: usize>(
            &self,
            pool: &'static Mempool,
            names: [&str; N],
        ) -> [ScriptHandle; N] {
            let mut ports = self.ports.lock().unwrap();
            names.map(|name| {
                let port = ScriptedPort::new(pool);
                let handle = port.handle();
                ports.insert(name.into(), vec![Box::new(port)]);
                handle
            })
        }
    }

    impl PortFactory for Arc<ScriptedFactory> {
        fn open(
            &self,
            port: &PortConfig,
            pool: &'static Mempool,
            _tso_pool: Option<&'static Mempool>,
            guest_mtu: Option<u16>,
        ) -> Result<OpenedPort, OpenError> {
            self.guest_mtus
                .lock()
                .unwrap()
                .insert(port.name.clone(), guest_mtu);
            let queues = self.ports.lock().unwrap().remove(&port.name);
            let device = self.devices.lock().unwrap().remove(&port.name);
            match queues {
                Some(queues) => Ok(OpenedPort { queues, device }),
                None => {
                    let held: Vec<_> = (0..8).filter_map(|_| pool.alloc()).collect();
                    assert_eq!(held.len(), 8);
                    Err(OpenError {
                        port: port.name.clone(),
                        source: pmd::AfPacketError::NoSuchInterface {
                            iface: port.name.clone(),
                        }
                        .into(),
                    })
                }
            }
        }
    }

    /// The configuration of a small dataplane, one worker per CPU of
    /// `workers`, without bridges or ports.
    fn scripted_config(workers: &str) -> Config {
        let mut cfg = Config::default();
        cfg.dataplane.mbufs = 512;
        cfg.dataplane.tso_mbufs = 0;
        cfg.dataplane.hugepages = weir_config::HugepageMode::Never;
        cfg.dataplane.idle_sleep_us = 50;
        cfg.dataplane.workers = Some(workers.parse().unwrap());
        cfg.fdb.max_entries = 64;
        cfg
    }

    /// A small dataplane whose ports `factory` opens, one worker per CPU of
    /// `workers`.
    fn scripted_dataplane(factory: &Arc<ScriptedFactory>, workers: &str) -> Dataplane {
        let cfg = ValidConfig::new(scripted_config(workers), Host::system()).unwrap();
        Dataplane::start_with(cfg, Box::new(Arc::clone(factory))).unwrap()
    }

    fn ring_port(name: &str, bridge: Option<&str>) -> PortSpec {
        let mut spec = PortSpec::new(name, PortType::Ring);
        spec.bridge = bridge.map(Into::into);
        spec
    }

    /// Waits (bounded) until `done` holds.
    fn wait_for(what: &str, done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            std::thread::yield_now();
        }
    }

    /// Whether port `name`'s link is up. It is down until its worker
    /// reports it; the switch forwards to ports that are up only.
    fn is_up(dp: &Dataplane, name: &str) -> bool {
        dp.port_list()
            .iter()
            .any(|p| p.name == name && p.link == "up")
    }

    #[test]
    fn a_vhost_user_port_behind_a_tunnel_is_opened_with_the_tunnel_mtu() {
        let factory = Arc::new(ScriptedFactory::default());
        let dp = scripted_dataplane(&factory, "0");
        dp.bridge_add("br0").unwrap();
        dp.bridge_add("br1").unwrap();
        let pool = dp.pool();
        let _ = factory.script(pool, ["up", "early", "vm", "other"]);
        let vhost = |name: &str, bridge: &str| {
            let mut spec = PortSpec::new(name, PortType::VhostUser);
            spec.socket = Some(format!("/nonexistent/{name}.sock").into());
            spec.bridge = Some(bridge.into());
            spec
        };
        // Before br0 has a tunnel: no cap.
        dp.port_add(vhost("early", "br0")).unwrap();
        // The underlay (a ring port: its MTU is taken as 1500) and a VXLAN
        // tunnel over it on br0.
        let mut up = PortSpec::new("up", PortType::Ring);
        up.ip = vec!["192.0.2.1/24".into()];
        dp.port_add(up).unwrap();
        let mut vx = PortSpec::new("vx0", PortType::Vxlan);
        vx.bridge = Some("br0".into());
        vx.underlay = Some("up".into());
        vx.local_ip = Some("192.0.2.1".parse().unwrap());
        vx.remote_ips = vec!["192.0.2.2".parse().unwrap()];
        vx.vni = Some(5000);
        dp.port_add(vx).unwrap();
        dp.port_add(vhost("vm", "br0")).unwrap();
        dp.port_add(vhost("other", "br1")).unwrap();
        let mtus = factory.guest_mtus.lock().unwrap().clone();
        assert_eq!(mtus["vm"], Some(1450), "{mtus:?}");
        assert_eq!(mtus["early"], None, "{mtus:?}");
        assert_eq!(mtus["other"], None, "{mtus:?}");
        assert_eq!(mtus["up"], None, "{mtus:?}");
        dp.shutdown();
    }

    #[test]
    fn a_failed_open_leaves_no_port_no_table_entry_and_every_buffer_free() {
        let factory = Arc::new(ScriptedFactory::default());
        let dp = scripted_dataplane(&factory, "0");
        dp.bridge_add("br0").unwrap();
        let pool = dp.pool();
        let err = dp.port_add(ring_port("gone", Some("br0"))).unwrap_err();
        let msg = error_chain(&err);
        assert!(matches!(err, ControlError::Open(_)), "{msg}");
        assert!(msg.starts_with("port gone: "), "{msg}");
        assert!(dp.port_list().is_empty());
        let t = dp.switch.load();
        assert!(t.ports.iter().all(Option::is_none));
        assert!(t.bridge_by_name("br0").unwrap().ports.is_empty());
        assert_eq!(pool.available(), pool.capacity());
        // The failed port took no id: the next one gets the first.
        factory
            .ports
            .lock()
            .unwrap()
            .insert("p0".into(), vec![Box::new(pmd::memport::NullPort::new())]);
        dp.port_add(ring_port("p0", Some("br0"))).unwrap();
        assert_eq!(port_id(&dp, "p0"), 0);
        dp.shutdown();
    }

    /// An ARP reply from `ip` at `mac` to weir's `our_ip` at `our_mac`.
    fn arp_reply(mac: MacAddr, ip: Ipv4Addr, our_mac: MacAddr, our_ip: Ipv4Addr) -> Vec<u8> {
        let mut f = Vec::with_capacity(42);
        f.extend_from_slice(&our_mac.0);
        f.extend_from_slice(&mac.0);
        f.extend_from_slice(&[0x08, 0x06]);
        // Ethernet/IPv4, hlen 6, plen 4, op 2 (reply).
        f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 2]);
        f.extend_from_slice(&mac.0);
        f.extend_from_slice(&ip.octets());
        f.extend_from_slice(&our_mac.0);
        f.extend_from_slice(&our_ip.octets());
        f
    }

    #[test]
    fn port_show_of_a_tunnel_follows_its_remotes_next_hops() {
        let factory = Arc::new(ScriptedFactory::default());
        let dp = scripted_dataplane(&factory, "0");
        let [uplink] = factory.script(dp.pool(), ["uplink"]);
        dp.bridge_add("br0").unwrap();
        let mut up = ring_port("uplink", None);
        up.ip = vec!["192.0.2.1/24".into()];
        up.gateway = Some(Ipv4Addr::new(192, 0, 2, 254));
        dp.port_add(up).unwrap();
        let mut vx = PortSpec::new("vx0", PortType::Vxlan);
        vx.bridge = Some("br0".into());
        vx.underlay = Some("uplink".into());
        vx.local_ip = Some(Ipv4Addr::new(192, 0, 2, 1));
        // One remote on-link, one behind the gateway.
        vx.remote_ips = vec![Ipv4Addr::new(192, 0, 2, 2), Ipv4Addr::new(198, 51, 100, 7)];
        vx.vlan_vni = [("10".to_owned(), 5010), ("20".to_owned(), 5020)].into();
        dp.port_add(vx).unwrap();

        let host = dp
            .port_show("uplink")
            .unwrap()
            .host
            .expect("uplink has an ip");
        assert_eq!(host.addrs, ["192.0.2.1/24"]);
        assert_eq!(host.gateway.as_deref(), Some("192.0.2.254"));
        assert_eq!(host.tunnels, ["vx0"]);
        assert!(dp.port_show("uplink").unwrap().tunnel.is_none());

        let info = dp.port_show("vx0").unwrap();
        assert!(info.host.is_none());
        let t = info.tunnel.expect("vx0 is a tunnel");
        assert_eq!(
            (t.kind.as_str(), t.underlay.as_str(), t.local_ip.as_str()),
            ("vxlan", "uplink", "192.0.2.1")
        );
        assert_eq!(t.dst_port, 4789);
        assert_eq!(
            (t.vni, t.vlan_vni.as_slice()),
            (None, &[(10, 5010), (20, 5020)][..])
        );
        // A ring port has no interface MTU: 1500 assumed, 1450 for tenants.
        assert_eq!(
            (t.underlay_mtu, t.max_frame_bytes, t.inner_mtu),
            (1500, 1464, 1450)
        );
        let hops: Vec<(&str, Option<&str>, bool)> = t
            .remotes
            .iter()
            .map(|r| (r.ip.as_str(), r.next_hop.as_deref(), r.resolved))
            .collect();
        assert_eq!(
            hops,
            [
                ("192.0.2.2", Some("192.0.2.2"), false),
                ("198.51.100.7", Some("192.0.2.254"), false)
            ]
        );
        assert!(t.remotes.iter().all(|r| r.next_hop_mac.is_none()));

        // The on-link remote answers: its outer header is built.
        let our_mac: MacAddr = host.mac.parse().unwrap();
        let peer = MacAddr([0x02, 0x99, 0, 0, 0, 2]);
        uplink.push_rx(arp_reply(
            peer,
            Ipv4Addr::new(192, 0, 2, 2),
            our_mac,
            Ipv4Addr::new(192, 0, 2, 1),
        ));
        let resolved = || dp.port_show("vx0").unwrap().tunnel.unwrap().remotes;
        wait_for("192.0.2.2 resolved", || resolved()[0].resolved);
        let r = resolved();
        assert_eq!(r[0].next_hop_mac.as_deref(), Some("02:99:00:00:00:02"));
        assert!(!r[1].resolved && r[1].next_hop_mac.is_none(), "{r:?}");
        // Other ports' views carry neither.
        assert!(dp
            .port_list()
            .iter()
            .all(|p| p.tunnel.is_none() && p.host.is_none()));
        dp.shutdown();
    }

    /// A queue that sets `dropped` when it is closed.
    struct Watched {
        inner: Box<dyn Port>,
        dropped: Arc<AtomicBool>,
    }

    impl Port for Watched {
        fn rx_burst(&mut self, burst: &mut Burst) -> usize {
            self.inner.rx_burst(burst)
        }

        fn tx_burst(&mut self, burst: &mut Burst) -> usize {
            self.inner.tx_burst(burst)
        }

        fn stats(&self) -> &Arc<QueueStats> {
            self.inner.stats()
        }
    }

    impl Drop for Watched {
        fn drop(&mut self) {
            // Relaxed: a test flag.
            self.dropped.store(true, Ordering::Relaxed);
        }
    }

    #[test]
    fn port_del_closes_a_port_only_after_every_worker_runs_on_tables_without_it() {
        let factory = Arc::new(ScriptedFactory::default());
        let mut dp = scripted_dataplane(&factory, "0,1");
        // Long enough that the wait below ends because the worker answered.
        dp.worker_timeout = Duration::from_secs(30);
        let dropped = Arc::new(AtomicBool::new(false));
        let (hold, entered) = (
            Arc::new(AtomicBool::new(true)),
            Arc::new(AtomicBool::new(false)),
        );
        {
            let mut ports = factory.ports.lock().unwrap();
            ports.insert(
                "a".into(),
                vec![Box::new(Watched {
                    inner: Box::new(pmd::memport::NullPort::new()),
                    dropped: Arc::clone(&dropped),
                })],
            );
            ports.insert(
                "held".into(),
                vec![Box::new(Stuck {
                    hold: Arc::clone(&hold),
                    entered: Arc::clone(&entered),
                    stats: Arc::default(),
                })],
            );
        }
        // Released before `dp` is dropped, whatever fails below.
        let _release = Release(Arc::clone(&hold));
        // Round-robin: "a" on worker 0, "held" on worker 1.
        dp.port_add(ring_port("a", None)).unwrap();
        dp.port_add(ring_port("held", None)).unwrap();
        let a = PortId(port_id(&dp, "a"));
        // Relaxed: a test flag.
        wait_for("worker 1 held in a receive", || {
            entered.load(Ordering::Relaxed)
        });
        std::thread::scope(|s| {
            let del = s.spawn(|| dp.port_del("a"));
            // The control plane unpublishes "a"; worker 0 moves to those
            // tables, worker 1 cannot while it is held.
            wait_for("a unpublished", || dp.switch.load().port(a).is_none());
            let generation = dp.switch.load().generation;
            assert!(dp.workers[0].wait_generation(generation, Duration::from_secs(10)));
            // Everything port_del would do without waiting for worker 1 is
            // done by now; it must still be waiting, with "a" open.
            assert!(!dp.workers[1].wait_generation(generation, Duration::from_millis(200)));
            assert!(
                !del.is_finished(),
                "port_del returned before worker 1 saw the new tables"
            );
            assert!(
                !dropped.load(Ordering::Relaxed),
                "a closed while worker 1 may still send to it"
            );
            hold.store(false, Ordering::Relaxed);
            del.join().unwrap().unwrap();
        });
        assert!(
            dropped.load(Ordering::Relaxed),
            "a not closed after port_del"
        );
        assert!(dp.port_list().iter().all(|p| p.name != "a"));
        dp.shutdown();
    }

    #[test]
    fn frames_keep_flowing_while_a_third_port_is_added_and_removed() {
        use dataplane::testutil::{eth_frame, mac, EXPERIMENTAL_ETHERTYPE};
        let factory = Arc::new(ScriptedFactory::default());
        let dp = scripted_dataplane(&factory, "0");
        let [ha, hb, hc] = factory.script(dp.pool(), ["a", "b", "c"]);
        dp.bridge_add("br0").unwrap();
        dp.port_add(ring_port("a", Some("br0"))).unwrap();
        dp.port_add(ring_port("b", Some("br0"))).unwrap();
        wait_for("a and b up", || is_up(&dp, "a") && is_up(&dp, "b"));
        let frame = eth_frame(mac(2), mac(1), EXPERIMENTAL_ETHERTYPE, 46);
        let mut sent = 0;
        let mut send = |n: usize| {
            for _ in 0..n {
                ha.push_rx(frame.clone());
            }
            sent += n;
            sent
        };
        let upto = send(64);
        wait_for("b receives before the add", || {
            hb.transmitted().len() == upto
        });
        dp.port_add(ring_port("c", Some("br0"))).unwrap();
        wait_for("c up", || is_up(&dp, "c"));
        let upto = send(64);
        wait_for("b receives while c is attached", || {
            hb.transmitted().len() == upto
        });
        // Unknown unicast floods: c saw the frames sent while it was attached.
        assert!(!hc.transmitted().is_empty());
        let c_got = hc.transmitted().len();
        dp.port_del("c").unwrap();
        let upto = send(64);
        wait_for("b receives after the del", || {
            hb.transmitted().len() == upto
        });
        assert_eq!(
            hc.transmitted().len(),
            c_got,
            "c got frames after its removal"
        );
        assert!(hb.transmitted().iter().all(|f| *f == frame));
        assert_eq!(dp.port_list().len(), 2);
        dp.shutdown();
    }

    #[test]
    fn a_scrape_reads_raw_port_counters_and_counts_port_adds_and_deletes() {
        use crate::metrics::Format;
        use dataplane::testutil::{eth_frame, mac, EXPERIMENTAL_ETHERTYPE};
        let factory = Arc::new(ScriptedFactory::default());
        let dp = scripted_dataplane(&factory, "0");
        let [ha, hb, _hc] = factory.script(dp.pool(), ["a", "b", "c"]);
        dp.bridge_add("br0").unwrap();
        for p in ["a", "b", "c"] {
            dp.port_add(ring_port(p, Some("br0"))).unwrap();
        }
        dp.port_del("c").unwrap();
        wait_for("a and b up", || is_up(&dp, "a") && is_up(&dp, "b"));
        let frame = eth_frame(mac(2), mac(1), EXPERIMENTAL_ETHERTYPE, 46);
        for _ in 0..10 {
            ha.push_rx(frame.clone());
        }
        wait_for("b receives", || hb.transmitted().len() == 10);
        let scrape = dp.scrape();
        assert_eq!((scrape.ports_added, scrape.ports_deleted), (3, 1));
        let a = scrape.ports.iter().find(|p| p.info.name == "a").unwrap();
        assert_eq!(a.info.stats.rx_packets, 10);
        assert_eq!(scrape.bridges.len(), 1);
        assert_eq!(scrape.pools.len(), 1, "no TSO pool with tso_mbufs = 0");
        let text = scrape.encode(Format::OpenMetrics);
        for line in [
            "weir_port_rx_packets_total{port=\"a\",queue=\"0\"} 10\n",
            "weir_port_tx_packets_total{port=\"b\",queue=\"0\"} 10\n",
            "weir_ports_added_total 3\n",
            "weir_ports_deleted_total 1\n",
            "weir_port_link_up{port=\"a\"} 1\n",
            "weir_bridge_ports{bridge=\"br0\"} 2\n",
            "weir_worker_rx_queues{worker=\"0\"} 2\n",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        // One poll round in 16 is timed: frames one at a time until one
        // falls in a sampled round (bounded, so the assertion can fail).
        let sampled = |dp: &Dataplane| dp.port_show("a").unwrap().latency.unwrap().frames;
        let mut sent = 10;
        while sampled(&dp) == 0 && sent < 10 + 4096 {
            ha.push_rx(frame.clone());
            sent += 1;
            wait_for("b receives", || hb.transmitted().len() == sent);
        }
        let latency = dp.port_show("a").unwrap().latency.unwrap();
        assert!(latency.frames > 0, "no frame of {sent} sampled");
        assert_eq!(
            latency.frames,
            latency.buckets.iter().map(|b| b.frames).sum::<u64>()
        );
        let text = dp.scrape().encode(Format::OpenMetrics);
        let count = format!(
            "weir_port_latency_seconds_count{{port=\"a\"}} {}\n",
            latency.frames
        );
        assert!(text.contains(&count), "{count} missing from\n{text}");
        dp.shutdown();
    }

    #[test]
    fn ports_are_published_with_their_vlan_settings() {
        use dataplane::switch::{Features, VlanMode};
        use dataplane::testutil::{eth_frame, mac, vlan_frame, EXPERIMENTAL_ETHERTYPE};
        use dataplane::VlanId;
        let factory = Arc::new(ScriptedFactory::default());
        let mut cfg = scripted_config("0");
        cfg.bridges
            .push(weir_config::BridgeSpec { name: "br0".into() });
        // A configured access port on VLAN 10 ...
        let mut a = ring_port("a", Some("br0"));
        a.tag = Some(10);
        cfg.ports.push(a);
        // The ports exist before the daemon's pool does: they receive into
        // a pool of their own.
        let [ha, ht] = factory.script(Mempool::for_tests(64), ["a", "t"]);
        let dp = Dataplane::start_with(
            ValidConfig::new(cfg, Host::system()).unwrap(),
            Box::new(Arc::clone(&factory)),
        )
        .unwrap();
        // ... and a trunk of VLANs 10 and 20 added at run time.
        let mut t = ring_port("t", Some("br0"));
        t.trunks = vec![10, 20];
        dp.port_add(t).unwrap();
        let tables = dp.switch.load();
        let (ia, it) = (PortId(port_id(&dp, "a")), PortId(port_id(&dp, "t")));
        assert_eq!(tables.policy(ia).vlan.mode(), VlanMode::Access);
        assert_eq!(tables.policy(it).vlan.mode(), VlanMode::Trunk);
        assert!(!tables.policy(it).vlan.is_member(VlanId(30)));
        let br = tables.bridge_by_name("br0").unwrap().id;
        assert!(tables.bridge_features(br).contains(Features::VLAN));
        drop(tables);
        wait_for("a and t up", || is_up(&dp, "a") && is_up(&dp, "t"));
        // An untagged frame from the access port leaves the trunk tagged
        // with VLAN 10.
        ha.push_rx(eth_frame(mac(2), mac(1), EXPERIMENTAL_ETHERTYPE, 46));
        wait_for("t transmits", || !ht.transmitted().is_empty());
        assert_eq!(
            ht.transmitted(),
            [vlan_frame(mac(2), mac(1), VlanId(10), 46)]
        );
        dp.shutdown();
    }

    fn keys(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A dataplane with bridge br0 and scripted ports `a` (as `a` says)
    /// and `t` (nothing set), both up; returns their handles.
    fn a_and_t(a: PortSpec) -> (Dataplane, ScriptHandle, ScriptHandle) {
        let factory = Arc::new(ScriptedFactory::default());
        let dp = scripted_dataplane(&factory, "0");
        let [ha, ht] = factory.script(dp.pool(), ["a", "t"]);
        dp.bridge_add("br0").unwrap();
        dp.port_add(a).unwrap();
        dp.port_add(ring_port("t", Some("br0"))).unwrap();
        wait_for("a and t up", || is_up(&dp, "a") && is_up(&dp, "t"));
        (dp, ha, ht)
    }

    /// [`a_and_t`] with `a` on access VLAN 10 and `t` a trunk of every
    /// VLAN.
    fn access_and_trunk() -> (Dataplane, ScriptHandle, ScriptHandle) {
        let mut a = ring_port("a", Some("br0"));
        a.tag = Some(10);
        a_and_t(a)
    }

    #[test]
    fn port_set_publishes_the_new_settings_and_flushes_the_port() {
        use dataplane::switch::VlanMode;
        use dataplane::testutil::{eth_frame, mac, vlan_frame, EXPERIMENTAL_ETHERTYPE};
        use dataplane::VlanId;
        let (dp, ha, ht) = access_and_trunk();
        let a = PortId(port_id(&dp, "a"));
        ha.push_rx(eth_frame(mac(2), mac(1), EXPERIMENTAL_ETHERTYPE, 46));
        wait_for("t transmits", || ht.transmitted().len() == 1);
        let learned = |vlan: u16| {
            dp.fdb_show(None)
                .unwrap()
                .iter()
                .any(|e| e.port == "a" && e.vlan == vlan)
        };
        assert!(learned(10), "{:?}", dp.fdb_show(None));
        let after = dp
            .port_set(
                "a",
                &keys(&[
                    ("tag", "20"),
                    ("trunks", "30,40"),
                    ("vlan_mode", "native-tagged"),
                ]),
            )
            .unwrap();
        assert_eq!(
            after,
            PortSettings {
                tag: Some(20),
                trunks: vec![30, 40],
                vlan_mode: Some(VlanMode::NativeTagged),
                ..PortSettings::default()
            }
        );
        // All three keys in the published tables, and in the port's record.
        let t = dp.switch.load();
        let vlan = &t.policy(a).vlan;
        assert_eq!(vlan.mode(), VlanMode::NativeTagged);
        assert_eq!(vlan.ingress(None), Some(VlanId(20)));
        assert!(vlan.is_member(VlanId(40)) && !vlan.is_member(VlanId(10)));
        drop(t);
        let info = dp.port_list().into_iter().find(|p| p.name == "a").unwrap();
        assert_eq!(
            (info.vlan_mode.as_deref(), info.tag, info.trunks),
            (Some("native-tagged"), Some(20), vec![30, 40])
        );
        assert!(!learned(10), "entries of a are flushed on a VLAN change");
        // Frames now come in on VLAN 20 and leave the trunk tagged so.
        ha.push_rx(eth_frame(mac(2), mac(1), EXPERIMENTAL_ETHERTYPE, 46));
        wait_for("t transmits again", || ht.transmitted().len() == 2);
        assert_eq!(
            ht.transmitted()[1],
            vlan_frame(mac(2), mac(1), VlanId(20), 46)
        );
        // Clearing the keys makes a a trunk of every VLAN: no policy at all.
        let after = dp
            .port_clear("a", &["tag".into(), "trunks".into(), "vlan_mode".into()])
            .unwrap();
        assert_eq!(after, PortSettings::default());
        let t = dp.switch.load();
        assert!(t.policy(a).vlan.is_trunk_all());
        let br = t.bridge_by_name("br0").unwrap().id;
        assert!(t.bridge_features(br).is_empty(), "the plain path again");
        drop(t);
        dp.shutdown();
    }

    #[test]
    fn a_refused_port_set_or_clear_changes_nothing() {
        use dataplane::switch::VlanMode;
        let (dp, _ha, _ht) = access_and_trunk();
        let a = PortId(port_id(&dp, "a"));
        let before = dp.switch.load();
        for (settings, msg) in [
            (
                keys(&[("tag", "20"), ("vlan_mode", "trunk")]),
                "tag is not allowed with vlan_mode trunk",
            ),
            (
                keys(&[("tag", "4095")]),
                "VLAN id 4095 is out of range (1..=4094)",
            ),
            (
                keys(&[("trunks", "20")]),
                "trunks is not allowed with vlan_mode access",
            ),
            (
                keys(&[("tag", "20"), ("iface", "eth1")]),
                "unknown key `iface`: the keys a port set or clear can change are tag, trunks, \
                 vlan_mode, ",
            ),
            (keys(&[("tag", "ten")]), "invalid tag `ten`"),
        ] {
            let err = dp.port_set("a", &settings).unwrap_err();
            let text = error_chain(&err);
            assert!(text.starts_with("port a: ") && text.contains(msg), "{text}");
        }
        // Removing the tag of an access port leaves it without one.
        let err = dp
            .port_set("a", &keys(&[("vlan_mode", "access")]))
            .and_then(|_| dp.port_clear("a", &["tag".into()]))
            .unwrap_err();
        assert!(
            error_chain(&err).contains("vlan_mode access needs a tag"),
            "{err}"
        );
        let err = dp.port_set("nope", &keys(&[("tag", "1")])).unwrap_err();
        assert!(matches!(err, ControlError::NoSuchPort { .. }), "{err}");
        // Nothing was published, and the record is as before (vlan_mode
        // access, which the tag alone meant, is the same policy).
        let t = dp.switch.load();
        assert_eq!(t.generation, before.generation);
        assert_eq!(t.policy(a), before.policy(a));
        let info = dp.port_list().into_iter().find(|p| p.name == "a").unwrap();
        assert_eq!(
            (info.vlan_mode.as_deref(), info.tag, info.trunks.len()),
            (Some("access"), Some(10), 0)
        );
        let settings = dp.port_set("a", &BTreeMap::new()).unwrap();
        assert_eq!(settings.vlan_mode, Some(VlanMode::Access));
        dp.shutdown();
    }

    /// A bridge with a guest port `vm` (`mac` mac(1), `rx_filter` as
    /// given; its guest's filter state in the returned handle) and a plain
    /// port `t`, both up.
    fn guest_and_plain(
        rx_filter: Option<bool>,
    ) -> (Dataplane, ScriptHandle, ScriptHandle, GuestFilter) {
        let factory = Arc::new(ScriptedFactory::default());
        let dp = scripted_dataplane(&factory, "0");
        let [hv, ht] = factory.script(dp.pool(), ["vm", "t"]);
        let guest: GuestFilter = Arc::default();
        factory
            .devices
            .lock()
            .unwrap()
            .insert("vm".into(), Box::new(FakeGuest(Arc::clone(&guest))));
        dp.bridge_add("br0").unwrap();
        let mut vm = ring_port("vm", Some("br0"));
        vm.mac = Some(dataplane::testutil::mac(1));
        vm.rx_filter = rx_filter;
        dp.port_add(vm).unwrap();
        dp.port_add(ring_port("t", Some("br0"))).unwrap();
        wait_for("vm and t up", || is_up(&dp, "vm") && is_up(&dp, "t"));
        (dp, hv, ht, guest)
    }

    #[test]
    fn a_guests_receive_filter_drops_floods_for_other_macs_until_it_goes_promiscuous() {
        use dataplane::switch::rxfilter::GuestRxMode;
        use dataplane::testutil::{eth_frame, mac, EXPERIMENTAL_ETHERTYPE};
        let (dp, hv, ht, guest) = guest_and_plain(None);
        let filtered =
            |dp: &Dataplane| dp.port_show("t").unwrap().stats.drops(DropReason::RxFilter);
        // Before the guest sets anything: unicast only for the port's mac.
        let info = dp.port_show("vm").unwrap();
        assert_eq!(info.rx_filter.as_deref(), Some("unicast 1 multicast all"));
        let foreign = eth_frame(mac(5), mac(2), EXPERIMENTAL_ETHERTYPE, 46);
        let own = eth_frame(mac(1), mac(2), EXPERIMENTAL_ETHERTYPE, 46);
        let bcast = eth_frame(MacAddr([0xff; 6]), mac(2), EXPERIMENTAL_ETHERTYPE, 46);
        let group = eth_frame(
            MacAddr([0x01, 0, 0x5e, 0, 0, 1]),
            mac(2),
            EXPERIMENTAL_ETHERTYPE,
            46,
        );
        for f in [&foreign, &own, &bcast, &group] {
            ht.push_rx(f.clone());
        }
        wait_for("vm gets 3", || hv.transmitted().len() == 3);
        assert_eq!(
            hv.transmitted(),
            [own.clone(), bcast.clone(), group.clone()]
        );
        assert_eq!(filtered(&dp), 1);
        // The guest sets its tables without the group: that is filtered too.
        *guest.lock().unwrap() = (1, Some(GuestRxMode::default()));
        dp.refresh_rx_filters();
        assert_eq!(
            dp.port_show("vm").unwrap().rx_filter.as_deref(),
            Some("unicast 1 multicast 0")
        );
        ht.push_rx(group.clone());
        ht.push_rx(bcast.clone());
        wait_for("vm gets the broadcast", || hv.transmitted().len() == 4);
        assert_eq!(filtered(&dp), 2);
        // Promiscuous: no filter; the foreign frame arrives.
        *guest.lock().unwrap() = (
            2,
            Some(GuestRxMode {
                promisc: true,
                ..GuestRxMode::default()
            }),
        );
        dp.refresh_rx_filters();
        assert_eq!(dp.port_show("vm").unwrap().rx_filter, None);
        ht.push_rx(foreign.clone());
        wait_for("vm gets the foreign frame", || hv.transmitted().len() == 5);
        assert_eq!(hv.transmitted()[4], foreign);
        assert_eq!(filtered(&dp), 2);
        let br = dp.switch.load().bridge_by_name("br0").unwrap().id;
        assert!(
            dp.switch.load().bridge_features(br).is_empty(),
            "back on the plain path"
        );
        dp.shutdown();
    }

    #[test]
    fn rx_filter_false_lets_a_guest_receive_everything_until_cleared() {
        use dataplane::switch::rxfilter::GuestRxMode;
        use dataplane::testutil::{eth_frame, mac, EXPERIMENTAL_ETHERTYPE};
        let (dp, hv, ht, guest) = guest_and_plain(Some(false));
        let filtered =
            |dp: &Dataplane| dp.port_show("t").unwrap().stats.drops(DropReason::RxFilter);
        let foreign = eth_frame(mac(5), mac(2), EXPERIMENTAL_ETHERTYPE, 46);
        // Added with the filter off: no filter, even when the guest sets one.
        assert_eq!(dp.port_show("vm").unwrap().rx_filter, None);
        *guest.lock().unwrap() = (1, Some(GuestRxMode::default()));
        dp.refresh_rx_filters();
        assert_eq!(dp.port_show("vm").unwrap().rx_filter, None);
        ht.push_rx(foreign.clone());
        wait_for("vm gets the foreign frame", || hv.transmitted().len() == 1);
        // Cleared: the default, on.
        dp.port_clear("vm", &["rx_filter".into()]).unwrap();
        assert_eq!(
            dp.port_show("vm").unwrap().rx_filter.as_deref(),
            Some("unicast 1 multicast 0")
        );
        ht.push_rx(foreign.clone());
        wait_for("the foreign frame filtered", || filtered(&dp) == 1);
        // Set off again at run time.
        let settings = dp.port_set("vm", &keys(&[("rx_filter", "false")])).unwrap();
        assert_eq!(settings.rx_filter, Some(false));
        assert_eq!(dp.port_show("vm").unwrap().rx_filter, None);
        ht.push_rx(foreign.clone());
        wait_for("vm gets it again", || hv.transmitted().len() == 2);
        assert_eq!(filtered(&dp), 1);
        dp.shutdown();
    }

    /// [`a_and_t`] with `a`'s `mac` mac(1) and port security on.
    fn secured_and_plain() -> (Dataplane, ScriptHandle, ScriptHandle) {
        let mut a = ring_port("a", Some("br0"));
        a.mac = Some(dataplane::testutil::mac(1));
        a.port_security = true;
        a_and_t(a)
    }

    #[test]
    fn port_security_drops_spoofed_sources_and_a_change_flushes_the_port() {
        use dataplane::switch::Features;
        use dataplane::testutil::{eth_frame, mac, EXPERIMENTAL_ETHERTYPE};
        let (dp, ha, ht) = secured_and_plain();
        let a = PortId(port_id(&dp, "a"));
        let spoofed = |dp: &Dataplane| {
            dp.port_show("a")
                .unwrap()
                .stats
                .drops(DropReason::SpoofedMac)
        };
        // From its own MAC a frame passes and is learned; from another it is
        // dropped, counted, and not learned.
        ha.push_rx(eth_frame(mac(2), mac(1), EXPERIMENTAL_ETHERTYPE, 46));
        ha.push_rx(eth_frame(mac(2), mac(9), EXPERIMENTAL_ETHERTYPE, 46));
        wait_for("a's frames switched", || spoofed(&dp) == 1);
        wait_for("t transmits", || ht.transmitted().len() == 1);
        assert_eq!(
            ht.transmitted(),
            [eth_frame(mac(2), mac(1), EXPERIMENTAL_ETHERTYPE, 46)]
        );
        let learned = |m: u32| {
            dp.fdb_show(None)
                .unwrap()
                .iter()
                .any(|e| e.port == "a" && e.mac == mac(m).to_string())
        };
        assert!(learned(1) && !learned(9), "{:?}", dp.fdb_show(None));
        // Allowing mac(9) instead: the other way round, and what a learned
        // before is flushed.
        let after = dp
            .port_set("a", &keys(&[("allowed_macs", &mac(9).to_string())]))
            .unwrap();
        assert_eq!(after.allowed_macs, [mac(9)]);
        assert!(
            !learned(1),
            "a's entries are flushed on a port security change"
        );
        ha.push_rx(eth_frame(mac(2), mac(1), EXPERIMENTAL_ETHERTYPE, 46));
        ha.push_rx(eth_frame(mac(2), mac(9), EXPERIMENTAL_ETHERTYPE, 46));
        wait_for("a's frames switched again", || spoofed(&dp) == 2);
        wait_for("t transmits again", || ht.transmitted().len() == 2);
        assert_eq!(
            ht.transmitted()[1],
            eth_frame(mac(2), mac(9), EXPERIMENTAL_ETHERTYPE, 46)
        );
        // Rate limits are published the same way; turning port security off
        // leaves them on.
        dp.port_set(
            "a",
            &keys(&[("storm_pps", "100"), ("port_security", "false")]),
        )
        .unwrap();
        let t = dp.switch.load();
        let policy = t.policy(a);
        assert!(policy.security.is_none());
        assert_eq!(
            policy.limits.storm.as_ref().map(|b| b.rate_per_sec()),
            Some(100)
        );
        let br = t.bridge_by_name("br0").unwrap().id;
        assert_eq!(t.bridge_features(br), Features::POLICE);
        drop(t);
        let info = dp.port_show("a").unwrap();
        assert_eq!(info.settings.storm_pps, Some(100));
        assert_eq!(info.settings.mac, Some(mac(1)));
        assert_eq!(info.queue_workers, [0]);
        dp.shutdown();
    }

    #[test]
    fn a_vhost_user_port_refuses_a_new_mac_and_takes_the_rest() {
        use dataplane::testutil::mac;
        let factory = Arc::new(ScriptedFactory::default());
        let dp = scripted_dataplane(&factory, "0");
        factory.script(dp.pool(), ["vm"]);
        let mut spec = PortSpec::new("vm", PortType::VhostUser);
        spec.socket =
            Some(std::env::temp_dir().join(format!("weir-fixed-mac-{}.sock", std::process::id())));
        spec.mac = Some(mac(1));
        dp.port_add(spec).unwrap();
        let before = dp.switch.load().generation;
        // Refused even with other changes, which then do not happen either.
        let change = keys(&[("mac", &mac(2).to_string()), ("port_security", "true")]);
        let text = error_chain(&dp.port_set("vm", &change).unwrap_err());
        assert!(
            text.starts_with("port vm: the mac of a vhost-user port cannot change"),
            "{text}"
        );
        let err = dp.port_clear("vm", &["mac".into()]).unwrap_err();
        assert!(error_chain(&err).contains("cannot change"), "{err}");
        assert_eq!(dp.switch.load().generation, before, "nothing published");
        // The same mac is no change; port security on it is.
        let after = dp
            .port_set(
                "vm",
                &keys(&[("mac", &mac(1).to_string()), ("port_security", "true")]),
            )
            .unwrap();
        assert!(after.port_security);
        let t = dp.switch.load();
        let vm = PortId(port_id(&dp, "vm"));
        assert!(t
            .policy(vm)
            .security
            .as_ref()
            .is_some_and(|s| s.mac_ok(mac(1).to_u64())));
        drop(t);
        dp.shutdown();
    }

    #[test]
    fn port_show_is_served_on_the_control_socket_protocol() {
        let (dp, _ha, _ht) = secured_and_plain();
        let resp = dp.handle(Request::PortShow { name: "a".into() });
        let data = resp.data.unwrap();
        assert_eq!(data["name"], "a");
        assert_eq!(
            data["settings"],
            serde_json::json!({"mac": "02:00:00:00:00:01", "port_security": true})
        );
        assert_eq!(data["stats"]["rx_packets"], 0);
        let resp = dp.handle(Request::PortShow {
            name: "nope".into(),
        });
        assert_eq!(resp.error.as_deref(), Some("no port named nope"));
        dp.shutdown();
    }

    #[test]
    fn port_set_is_served_on_the_control_socket_protocol() {
        let (dp, _ha, _ht) = access_and_trunk();
        let resp = dp.handle(Request::PortSet {
            name: "t".into(),
            settings: keys(&[("trunks", "10,20")]),
        });
        assert!(resp.ok, "{resp:?}");
        assert_eq!(resp.data, Some(serde_json::json!({"trunks": [10, 20]})));
        let resp = dp.handle(Request::PortClear {
            name: "t".into(),
            keys: vec!["vlan_mode".into(), "bogus".into()],
        });
        let names: Vec<&str> = weir_config::SETTING_KEYS.iter().map(|k| k.name).collect();
        assert_eq!(
            resp.error,
            Some(format!(
                "port t: unknown key `bogus`: the keys a port set or clear can change are {}; \
                 port set also takes remote_ips on a tunnel port",
                names.join(", ")
            ))
        );
        let list = dp.handle(Request::PortList).data.unwrap();
        let t = list
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "t")
            .unwrap();
        assert_eq!(t["trunks"], serde_json::json!([10, 20]));
        assert_eq!(t["vlan_mode"], "trunk");
        assert_eq!(t["tag"], serde_json::Value::Null);
        dp.shutdown();
    }

    /// An IPv4 TCP segment from mac(1), 10.0.0.1:40000, to mac(2),
    /// 10.0.0.2:`dport`.
    fn tcp_frame(dport: u16) -> Vec<u8> {
        use dataplane::testutil::{eth_frame, mac};
        let mut f = eth_frame(mac(2), mac(1), 0x0800, 40);
        f[14..34].copy_from_slice(&[
            0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ]);
        f[34..36].copy_from_slice(&40000u16.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f
    }

    /// Table `name` with `default` and `rules` (in their text form).
    fn acl(name: &str, default: weir_config::AclAction, rules: &[&str]) -> AclSpec {
        let mut spec = AclSpec::new(name, default);
        spec.rules = rules.iter().map(|r| r.parse().unwrap()).collect();
        spec
    }

    /// Frames port `name` dropped as `acl-deny`.
    fn acl_denied(dp: &Dataplane, name: &str) -> u64 {
        dp.port_list()
            .into_iter()
            .find(|p| p.name == name)
            .map_or(0, |p| p.stats.drops[DropReason::AclDeny as usize])
    }

    #[test]
    fn replacing_an_acl_republishes_every_port_that_uses_it_in_one_update() {
        use dataplane::switch::VlanMode;
        use dataplane::VlanId;
        use weir_config::AclAction::Deny;
        let (dp, ha, ht) = access_and_trunk();
        let (a, t) = (PortId(port_id(&dp, "a")), PortId(port_id(&dp, "t")));
        dp.acl_add(acl(
            "web",
            Deny,
            &["in tcp dst_ports=80 allow", "out tcp dst_ports=80 allow"],
        ))
        .unwrap();
        dp.port_set("a", &keys(&[("acl_in", "web")])).unwrap();
        dp.port_set("t", &keys(&[("acl_out", "web")])).unwrap();
        // Port 80 passes a's acl_in and t's acl_out; port 22 stops at a.
        ha.push_rx(tcp_frame(80));
        wait_for("t sends the port-80 segment", || {
            ht.transmitted().len() == 1
        });
        ha.push_rx(tcp_frame(22));
        wait_for("a denies the port-22 segment", || acl_denied(&dp, "a") == 1);
        let before = dp.switch.load().generation;
        // Replaced: port 22 only, both directions.
        let view = dp
            .acl_add(acl("web", Deny, &["tcp dst_ports=22 allow"]))
            .unwrap();
        assert_eq!(
            (view.acl_in, view.acl_out),
            (vec!["a".into()], vec!["t".into()])
        );
        let tables = dp.switch.load();
        assert_eq!(tables.generation, before + 1, "both ports in one update");
        let (pa, pt) = (tables.policy(a), tables.policy(t));
        let (new_in, new_out) = (pa.acl_in.as_ref().unwrap(), pt.acl_out.as_ref().unwrap());
        assert!(Arc::ptr_eq(new_in, new_out));
        assert_eq!(new_in.rules().len(), 1);
        assert!(pa.acl_out.is_none() && pt.acl_in.is_none());
        // Each port keeps its other settings.
        assert_eq!(pa.vlan.mode(), VlanMode::Access);
        assert_eq!(pa.vlan.ingress(None), Some(VlanId(10)));
        drop(tables);
        // Every worker switched with the new table before acl_add returned.
        ha.push_rx(tcp_frame(80));
        wait_for("a denies port 80 now", || acl_denied(&dp, "a") == 2);
        ha.push_rx(tcp_frame(22));
        wait_for("t sends the port-22 segment", || {
            ht.transmitted().len() == 2
        });
        assert_eq!(
            &ht.transmitted()[1][18 + 22..18 + 24],
            &22u16.to_be_bytes(),
            "the port-22 segment, tagged for the trunk"
        );
        let info = dp.port_list().into_iter().find(|p| p.name == "a").unwrap();
        assert_eq!((info.acl_in.as_deref(), info.tag), (Some("web"), Some(10)));
        dp.shutdown();
    }

    #[test]
    fn an_acl_in_use_is_not_deleted_and_the_error_names_its_ports() {
        let (dp, _ha, _ht) = access_and_trunk();
        let a = PortId(port_id(&dp, "a"));
        dp.acl_add(acl("web", weir_config::AclAction::Allow, &[]))
            .unwrap();
        dp.port_set("a", &keys(&[("acl_in", "web"), ("acl_out", "web")]))
            .unwrap();
        dp.port_set("t", &keys(&[("acl_out", "web")])).unwrap();
        let err = dp.acl_del("web").unwrap_err();
        assert_eq!(
            error_chain(&err),
            "ACL web is in use: port a (acl_in), port a (acl_out), port t (acl_out); clear \
             those settings first (weir port clear PORT KEY)"
        );
        assert_eq!(dp.acl_show("web").unwrap().acl_out, ["a", "t"]);
        dp.port_clear("a", &["acl_in".into(), "acl_out".into()])
            .unwrap();
        assert!(dp.switch.load().policy(a).acl_in.is_none());
        assert!(dp.acl_del("web").is_err(), "t still uses it");
        dp.port_clear("t", &["acl_out".into()]).unwrap();
        let gone = dp.acl_del("web").unwrap();
        assert_eq!(gone.name, "web");
        assert!(dp.acl_list().is_empty());
        for err in [
            dp.acl_del("web").unwrap_err(),
            dp.acl_show("web").unwrap_err(),
        ] {
            assert_eq!(err.to_string(), "no ACL named web");
        }
        let err = dp.port_set("a", &keys(&[("acl_in", "web")])).unwrap_err();
        assert_eq!(error_chain(&err), "port a: acl_in: no ACL named `web`");
        dp.shutdown();
    }

    #[test]
    fn a_refused_acl_or_acl_setting_changes_nothing() {
        use weir_config::AclAction::{Allow, Deny};
        let (dp, ha, ht) = access_and_trunk();
        let a = PortId(port_id(&dp, "a"));
        dp.acl_add(acl("web", Deny, &["tcp dst_ports=80 allow"]))
            .unwrap();
        dp.port_set("a", &keys(&[("acl_in", "web")])).unwrap();
        let before = dp.switch.load();
        for (spec, msg) in [
            (
                acl(
                    "web",
                    Allow,
                    &["tcp dst_ports=80 allow", "dst_ports=22 allow"],
                ),
                "acl web: rule 1: ports need protocol tcp, udp or sctp",
            ),
            (
                acl("web", Allow, &["src=10.0.0.0/8 dst=fd00::1 allow"]),
                "acl web: rule 0: mixes IPv4 and IPv6",
            ),
            (acl("we b", Allow, &[]), "acl we b: invalid ACL name `we b`"),
        ] {
            let err = dp.acl_add(spec).unwrap_err();
            assert!(error_chain(&err).starts_with(msg), "{}", error_chain(&err));
        }
        let err = dp.port_set("a", &keys(&[("acl_out", "nope")])).unwrap_err();
        assert_eq!(error_chain(&err), "port a: acl_out: no ACL named `nope`");
        let mut x = ring_port("x", Some("br0"));
        x.acl_in = Some("nope".into());
        let err = dp.port_add(x).unwrap_err();
        assert!(
            matches!(err, ControlError::InvalidPort { .. }),
            "refused before the port is opened: {}",
            error_chain(&err)
        );
        assert!(dp.port_list().iter().all(|p| p.name != "x"));
        // Nothing was published, and the table is as it was.
        let tables = dp.switch.load();
        assert_eq!(tables.generation, before.generation);
        assert_eq!(tables.policy(a), before.policy(a));
        let web = dp.acl_show("web").unwrap();
        assert_eq!((web.default, web.rules.len()), (Deny, 1));
        assert_eq!(web.acl_in, ["a"]);
        drop((tables, before));
        // The old table still decides.
        ha.push_rx(tcp_frame(22));
        wait_for("a denies port 22", || acl_denied(&dp, "a") == 1);
        ha.push_rx(tcp_frame(80));
        wait_for("t sends port 80", || ht.transmitted().len() == 1);
        dp.shutdown();
    }

    #[test]
    fn configured_acls_are_attached_at_start_and_served_on_the_protocol() {
        let factory = Arc::new(ScriptedFactory::default());
        let mut cfg = scripted_config("0");
        cfg.bridges
            .push(weir_config::BridgeSpec { name: "br0".into() });
        cfg.acls.push(acl(
            "web",
            weir_config::AclAction::Deny,
            &["in tcp dst_ports=80 allow"],
        ));
        let mut a = ring_port("a", Some("br0"));
        a.acl_in = Some("web".into());
        cfg.ports.push(a);
        factory.script(Mempool::for_tests(16), ["a"]);
        let dp = Dataplane::start_with(
            ValidConfig::new(cfg, Host::system()).unwrap(),
            Box::new(Arc::clone(&factory)),
        )
        .unwrap();
        let id = PortId(port_id(&dp, "a"));
        assert_eq!(
            dp.switch
                .load()
                .policy(id)
                .acl_in
                .as_ref()
                .unwrap()
                .rules()
                .len(),
            1
        );
        let list = dp.handle(Request::AclList);
        assert_eq!(
            list.data,
            Some(serde_json::json!([
                {"name": "web", "default": "deny", "rules": 1, "acl_in": ["a"], "acl_out": []}
            ]))
        );
        let show = dp.handle(Request::AclShow { name: "web".into() });
        assert_eq!(
            show.data,
            Some(serde_json::json!({
                "name": "web", "default": "deny",
                "rule": [{"direction": "in", "protocol": "tcp", "dst_ports": 80, "action": "allow"}],
                "acl_in": ["a"], "acl_out": []
            }))
        );
        let add = dp.handle(Request::AclAdd(AclSpec::new(
            "db",
            weir_config::AclAction::Allow,
        )));
        assert!(add.ok, "{add:?}");
        let del = dp.handle(Request::AclDel { name: "web".into() });
        assert_eq!(
            del.error.as_deref(),
            Some(
                "ACL web is in use: port a (acl_in); clear those settings first (weir port clear \
                 PORT KEY)"
            )
        );
        let del = dp.handle(Request::AclDel { name: "db".into() });
        assert_eq!(del.data.unwrap()["name"], "db");
        dp.shutdown();
    }

    /// A small dataplane whose `[control] state` is `state`.
    fn persisted_dataplane(state: &std::path::Path) -> Dataplane {
        let mut cfg = scripted_config("0");
        cfg.control.state = Some(state.to_owned());
        Dataplane::start(ValidConfig::new(cfg, Host::system()).unwrap()).unwrap()
    }

    fn state_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("weir-rt-state-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn changes_are_saved_to_the_state_file_and_a_new_daemon_starts_from_it() {
        let dir = state_dir("saved");
        let state = dir.join("weir/state.toml");
        let dp = persisted_dataplane(&state);
        // Nothing changed yet: nothing written.
        assert!(dp.handle(Request::PortList).ok);
        assert!(!state.exists());
        let refused = dp.handle(Request::PortDel { name: "x".into() });
        assert!(!refused.ok && refused.warning.is_none());
        assert!(!state.exists(), "a refused request changes nothing");
        for req in [
            Request::BridgeAdd { name: "br0".into() },
            Request::PortAdd(Box::new(ring_port("b", Some("br0")))),
            Request::PortAdd(Box::new(ring_port("a", Some("br0")))),
            Request::AclAdd(acl(
                "web",
                weir_config::AclAction::Deny,
                &["in tcp dst_ports=80 allow"],
            )),
            Request::PortSet {
                name: "a".into(),
                settings: keys(&[("tag", "10"), ("acl_in", "web")]),
            },
            Request::PortAdd(Box::new(ring_port("gone", None))),
            Request::PortDel {
                name: "gone".into(),
            },
        ] {
            let resp = dp.handle(req.clone());
            assert!(resp.ok && resp.warning.is_none(), "{req:?}: {resp:?}");
        }
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(&state).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(&state).unwrap();
        let dump = dp.handle(Request::ConfigDump).decode::<String>().unwrap();
        assert_eq!(text, dump);
        let saved = Config::parse(&text, "state.toml").unwrap();
        let names: Vec<&str> = saved.ports.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["b", "a"], "in id order, without the deleted port");
        assert_eq!(saved.ports[1].tag, Some(10));
        assert_eq!(saved.ports[1].acl_in.as_deref(), Some("web"));
        assert_eq!(saved.bridges, [BridgeSpec { name: "br0".into() }]);
        assert_eq!(saved.acls[0].name, "web");
        assert_eq!(saved.control.state.as_deref(), Some(state.as_path()));
        let before = serde_json::to_value(dp.port_list()).unwrap();
        dp.shutdown();
        // A new daemon from a config without ports but the same state file.
        let mut cfg = scripted_config("0");
        cfg.control.state = Some(state.clone());
        assert!(cfg.apply_state(&Host::system()).unwrap());
        let dp = Dataplane::start(ValidConfig::new(cfg, Host::system()).unwrap()).unwrap();
        let after = serde_json::to_value(dp.port_list()).unwrap();
        let strip = |v: &serde_json::Value| -> Vec<(serde_json::Value, serde_json::Value, serde_json::Value)> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|p| (p["id"].clone(), p["name"].clone(), p["settings"].clone()))
                .collect()
        };
        assert_eq!(strip(&after), strip(&before));
        assert_eq!(dp.config_dump().unwrap(), text);
        dp.shutdown();
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn fdb_add(mac: &str, port: &str, vlan: Option<u16>, remote: Option<&str>) -> Request {
        Request::FdbAdd {
            bridge: "br0".into(),
            mac: mac.into(),
            port: port.into(),
            vlan,
            remote: remote.map(Into::into),
        }
    }

    /// `(mac, vlan, port, remote, static)` of each entry of `br0`.
    fn fdb_rows(dp: &Dataplane) -> Vec<(String, u16, String, Option<String>, bool)> {
        dp.fdb_show(Some("br0"))
            .unwrap()
            .into_iter()
            .map(|e| (e.mac, e.vlan, e.port, e.remote, e.is_static))
            .collect()
    }

    /// Bridge br0 with ring port b, underlay ring port up (weir at
    /// 198.18.0.1) and tunnel vx0 on br0 to 198.18.0.2 and .3, VNI 7.
    fn tunnel_rig() -> Vec<Request> {
        let mut up = ring_port("up", None);
        up.ip = vec!["198.18.0.1/24".into()];
        let vx0 = PortSpec {
            bridge: Some("br0".into()),
            underlay: Some("up".into()),
            local_ip: Some("198.18.0.1".parse().unwrap()),
            remote_ips: vec!["198.18.0.2".parse().unwrap(), "198.18.0.3".parse().unwrap()],
            vni: Some(7),
            ..PortSpec::new("vx0", PortType::Vxlan)
        };
        vec![
            Request::BridgeAdd { name: "br0".into() },
            Request::PortAdd(Box::new(ring_port("b", Some("br0")))),
            Request::PortAdd(Box::new(up)),
            Request::PortAdd(Box::new(vx0)),
        ]
    }

    #[test]
    fn port_set_changes_a_running_tunnels_remotes_and_keeps_the_stations_of_those_that_stay() {
        let dp = Dataplane::start(ValidConfig::new(scripted_config("0"), Host::system()).unwrap())
            .unwrap();
        for req in tunnel_rig().into_iter().chain([
            fdb_add("02:00:00:00:00:0c", "vx0", None, Some("198.18.0.2")),
            fdb_add("02:00:00:00:00:0d", "vx0", None, Some("198.18.0.3")),
        ]) {
            let resp = dp.handle(req.clone());
            assert!(resp.ok, "{req:?}: {resp:?}");
        }
        let tun = Dataplane::tunnel_shared(&dp.lock(), "vx0").unwrap();
        let mac = |s: &str| s.parse::<dataplane::MacAddr>().unwrap();
        // A station learned behind each remote.
        tun.fdb
            .learn(dataplane::VlanId(0), mac("02:00:00:00:00:1c"), PortId(0), 1);
        tun.fdb
            .learn(dataplane::VlanId(0), mac("02:00:00:00:00:1d"), PortId(1), 1);
        let set = |value: &str| {
            dp.handle(Request::PortSet {
                name: "vx0".into(),
                settings: [("remote_ips".to_string(), value.to_string())].into(),
            })
        };
        // A static entry pins .2.
        let resp = set("198.18.0.3,198.18.0.4");
        let err = resp.error.unwrap();
        assert!(err.contains("02:00:00:00:00:0c behind 198.18.0.2"), "{err}");
        assert!(
            dp.handle(Request::FdbDel {
                bridge: "br0".into(),
                mac: "02:00:00:00:00:0c".into(),
                vlan: None,
            })
            .ok
        );
        for (bad, why) in [
            ("198.18.0.3,nonsense", "`nonsense` is not an IPv4 address"),
            ("198.18.0.3 198.18.0.3", "listed twice"),
            ("198.18.0.1", "local_ip itself"),
            ("", "at least one remote"),
        ] {
            let err = set(bad).error.unwrap();
            assert!(err.contains(why), "{bad}: {err}");
        }
        assert_eq!(
            tun.remote_slots(),
            vec![
                Some("198.18.0.2".parse().unwrap()),
                Some("198.18.0.3".parse().unwrap())
            ]
        );
        // The list as a config file writes it.
        let resp = set(r#"["198.18.0.3", "198.18.0.4"]"#);
        assert!(resp.ok, "{resp:?}");
        let ip = |s: &str| Some(s.parse::<Ipv4Addr>().unwrap());
        assert_eq!(
            tun.remote_slots(),
            vec![None, ip("198.18.0.3"), ip("198.18.0.4")]
        );
        // .3's stations stay in their slot; .2's learned one is gone.
        assert_eq!(
            tun.fdb
                .lookup(dataplane::VlanId(0), mac("02:00:00:00:00:1c")),
            None
        );
        assert_eq!(
            tun.fdb
                .lookup(dataplane::VlanId(0), mac("02:00:00:00:00:1d")),
            Some(PortId(1))
        );
        assert_eq!(
            tun.fdb
                .lookup(dataplane::VlanId(0), mac("02:00:00:00:00:0d")),
            Some(PortId(1))
        );
        let rows = fdb_rows(&dp);
        assert!(rows.contains(&(
            "02:00:00:00:00:0d".into(),
            0,
            "vx0".into(),
            Some("198.18.0.3".into()),
            true
        )));
        // The running configuration, `port show` and the host stack's
        // wanted next hops follow.
        let cfg = dp.running_config();
        let spec = cfg.ports.iter().find(|p| p.name == "vx0").unwrap();
        assert_eq!(
            spec.remote_ips,
            vec![ip("198.18.0.3").unwrap(), ip("198.18.0.4").unwrap()]
        );
        let shown: Vec<String> = dp
            .port_show("vx0")
            .unwrap()
            .tunnel
            .unwrap()
            .remotes
            .into_iter()
            .map(|r| r.ip)
            .collect();
        assert_eq!(shown, ["198.18.0.3", "198.18.0.4"]);
        let mut wanted: Vec<String> = dp
            .neigh_show()
            .into_iter()
            .filter(|n| n.wanted)
            .map(|n| n.ip)
            .collect();
        wanted.sort();
        assert_eq!(wanted, ["198.18.0.3", "198.18.0.4"]);
        // Not on another port; not cleared.
        let err = dp
            .handle(Request::PortSet {
                name: "b".into(),
                settings: [("remote_ips".to_string(), "198.18.0.9".to_string())].into(),
            })
            .error
            .unwrap();
        assert!(
            err.contains("only vxlan and geneve ports have remotes"),
            "{err}"
        );
        let err = dp
            .handle(Request::PortClear {
                name: "vx0".into(),
                keys: vec!["remote_ips".into()],
            })
            .error
            .unwrap();
        assert!(err.contains("always has remotes"), "{err}");
        // With a switch setting in the same request, both or neither.
        let resp = dp.handle(Request::PortSet {
            name: "vx0".into(),
            settings: [
                ("remote_ips".to_string(), "198.18.0.5".to_string()),
                ("tag".to_string(), "nonsense".to_string()),
            ]
            .into(),
        });
        assert!(!resp.ok);
        assert_eq!(
            tun.remote_slots(),
            vec![None, ip("198.18.0.3"), ip("198.18.0.4")]
        );
        // Both in one request: the running configuration keeps both.
        let resp = dp.handle(Request::PortSet {
            name: "vx0".into(),
            settings: [
                (
                    "remote_ips".to_string(),
                    "198.18.0.3,198.18.0.5".to_string(),
                ),
                ("tag".to_string(), "10".to_string()),
            ]
            .into(),
        });
        assert!(resp.ok, "{resp:?}");
        let cfg = dp.running_config();
        let spec = cfg.ports.iter().find(|p| p.name == "vx0").unwrap();
        assert_eq!(
            spec.remote_ips,
            vec![ip("198.18.0.3").unwrap(), ip("198.18.0.5").unwrap()]
        );
        assert_eq!(spec.tag, Some(10));
        assert_eq!(dp.port_show("vx0").unwrap().tag, Some(10));
        dp.shutdown();
    }

    #[test]
    fn a_static_entry_the_bridge_refuses_changes_neither_table() {
        let mut cfg = scripted_config("0");
        cfg.fdb.max_per_port = 1;
        let dp = Dataplane::start(ValidConfig::new(cfg, Host::system()).unwrap()).unwrap();
        for req in tunnel_rig().into_iter().chain([
            fdb_add("02:00:00:00:00:0b", "b", None, None),
            fdb_add("02:00:00:00:00:0c", "vx0", None, Some("198.18.0.3")),
        ]) {
            let resp = dp.handle(req.clone());
            assert!(resp.ok, "{req:?}: {resp:?}");
        }
        let before = fdb_rows(&dp);
        // Port b is at its limit: moving the station behind the tunnel's
        // remote onto it is refused, and the tunnel still sends it there.
        let resp = dp.handle(fdb_add("02:00:00:00:00:0c", "b", None, None));
        assert!(!resp.ok, "{resp:?}");
        // Behind the other remote: the tunnel takes it, the bridge refuses
        // (the tunnel port is at its limit), and the old remote stays.
        let resp = dp.handle(fdb_add(
            "02:00:00:00:00:0d",
            "vx0",
            None,
            Some("198.18.0.2"),
        ));
        assert!(!resp.ok, "{resp:?}");
        assert_eq!(fdb_rows(&dp), before);
        let tun = Dataplane::tunnel_shared(&dp.lock(), "vx0").unwrap();
        let mac = |s: &str| s.parse::<dataplane::MacAddr>().unwrap();
        assert_eq!(
            tun.fdb
                .lookup(dataplane::VlanId(0), mac("02:00:00:00:00:0c")),
            Some(PortId(1))
        );
        assert_eq!(
            tun.fdb
                .lookup(dataplane::VlanId(0), mac("02:00:00:00:00:0d")),
            None
        );
        dp.shutdown();
    }

    #[test]
    fn static_fdb_entries_are_saved_restored_and_go_with_their_port() {
        let dir = state_dir("fdb");
        let state = dir.join("state.toml");
        let dp = persisted_dataplane(&state);
        for req in tunnel_rig().into_iter().chain([
            fdb_add("02:00:00:00:00:0B", "b", Some(10), None),
            fdb_add("02:00:00:00:00:0c", "vx0", None, Some("198.18.0.3")),
            fdb_add("02:00:00:00:00:0d", "b", Some(0), None),
            Request::FdbDel {
                bridge: "br0".into(),
                mac: "02:00:00:00:00:0d".into(),
                vlan: None,
            },
        ]) {
            let resp = dp.handle(req.clone());
            assert!(resp.ok && resp.warning.is_none(), "{req:?}: {resp:?}");
        }
        // Refused as a configuration file's entry would be, and not saved.
        let text = std::fs::read_to_string(&state).unwrap();
        let resp = dp.handle(fdb_add("02:00:00:00:00:0e", "b", None, Some("198.18.0.2")));
        assert_eq!(
            resp.error.as_deref(),
            Some("remote applies to tunnel ports; b is not one")
        );
        assert_eq!(std::fs::read_to_string(&state).unwrap(), text);

        let saved = Config::parse(&text, "state.toml").unwrap();
        let spec = |mac: &str, port: &str, vlan, remote: Option<&str>| StaticFdbSpec {
            bridge: "br0".into(),
            mac: mac.into(),
            port: port.into(),
            vlan,
            remote: remote.map(Into::into),
        };
        let kept = vec![
            spec("02:00:00:00:00:0c", "vx0", None, Some("198.18.0.3")),
            spec("02:00:00:00:00:0b", "b", Some(10), None),
        ];
        assert_eq!(saved.fdb.statics, kept, "in VLAN then MAC order\n{text}");
        let rows = fdb_rows(&dp);
        dp.shutdown();

        // A new daemon from the state file has the same entries.
        let mut cfg = scripted_config("0");
        cfg.control.state = Some(state.clone());
        assert!(cfg.apply_state(&Host::system()).unwrap());
        let dp = Dataplane::start(ValidConfig::new(cfg, Host::system()).unwrap()).unwrap();
        assert_eq!(fdb_rows(&dp), rows);
        assert_eq!(
            rows,
            [
                (
                    "02:00:00:00:00:0c".to_owned(),
                    0,
                    "vx0".to_owned(),
                    Some("198.18.0.3".to_owned()),
                    true
                ),
                (
                    "02:00:00:00:00:0b".to_owned(),
                    10,
                    "b".to_owned(),
                    None,
                    true
                ),
            ]
        );
        assert_eq!(dp.config_dump().unwrap(), text);

        // Set again without a remote: the tunnel forgets the old one.
        assert!(
            dp.handle(fdb_add("02:00:00:00:00:0c", "vx0", None, None))
                .ok
        );
        assert_eq!(fdb_rows(&dp)[0].3, None);
        // A deleted port takes its entries with it, from the table and the
        // file; a new port that gets its id inherits nothing.
        assert!(dp.handle(Request::PortDel { name: "b".into() }).ok);
        assert!(
            dp.handle(Request::PortAdd(Box::new(ring_port("c", Some("br0")))))
                .ok
        );
        let rows = fdb_rows(&dp);
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].2, "vx0");
        let saved = Config::parse(&std::fs::read_to_string(&state).unwrap(), "s").unwrap();
        assert_eq!(
            saved.fdb.statics,
            [spec("02:00:00:00:00:0c", "vx0", None, None)]
        );
        dp.shutdown();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failed_save_keeps_the_change_and_warns_in_the_reply() {
        let dir = state_dir("unwritable");
        let state = dir.join("state.toml");
        let dp = persisted_dataplane(&state);
        // A directory where the file goes: the rename fails.
        std::fs::create_dir_all(state.join("in-the-way")).unwrap();
        let resp = dp.handle(Request::BridgeAdd { name: "br0".into() });
        assert!(resp.ok, "{resp:?}");
        let warning = resp.warning.unwrap();
        assert!(
            warning.starts_with(&format!(
                "saving the running configuration to state file {}: replacing",
                state.display()
            )),
            "{warning}"
        );
        assert!(warning.ends_with("will not survive a restart"), "{warning}");
        assert_eq!(dp.bridge_list().len(), 1, "the change stands");
        // Once the path is free, the next change saves both.
        std::fs::remove_dir_all(&state).unwrap();
        let resp = dp.handle(Request::BridgeAdd { name: "br1".into() });
        assert!(resp.ok && resp.warning.is_none(), "{resp:?}");
        let saved = Config::parse(&std::fs::read_to_string(&state).unwrap(), "s").unwrap();
        assert_eq!(saved.bridges.len(), 2);
        dp.shutdown();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
