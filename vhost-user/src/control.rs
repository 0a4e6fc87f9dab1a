//! The device handle and its control thread: the vhost-user socket (server or
//! client), one `VhostUserDaemon` per connection, reconnects, and cleanup.
//!
//! Layer: control. Not on the packet path.
//!
//! Per connection: the control thread accepts (server) or connects (client) the
//! frontend's socket itself, then hands the library a private socket instead
//! (a listener nobody else can reach: [`crate::socket_path::private_listener`]) and runs
//! [`crate::relay`] between the two. Each device has its own control, relay and
//! library threads, so a frontend that stalls or misbehaves affects only its own
//! device.

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dataplane::switch::rxfilter::GuestRxMode;
use dataplane::{LinkState, Mempool};
use vhost::vhost_user::Listener;
use vhost_user_backend::{ShutdownHandle, VhostUserDaemon};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use crate::backend::{with_bindings, Binding, NetBackend, Offer, SharedBackend, Table, MAX_QUEUE};
use crate::msg::Limits;
use crate::notify::Notifier;
use crate::shared::{DeviceShared, PairShared, VqShared};
use crate::socket_path::SocketOwner;
use crate::sys::ExitEvent;
use crate::VhostUserPort;

/// Which side opens the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// weir listens; the frontend (QEMU, virtio-user) connects.
    Server,
    /// The frontend listens; weir connects, retrying until it succeeds.
    Client,
}

/// Configuration of one vhost-user device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhostUserConfig {
    /// Unix socket path.
    pub socket: PathBuf,
    /// Server or client.
    pub mode: Mode,
    /// Queue pairs, 1..=[`MAX_QUEUE_PAIRS`]. With more than one, VIRTIO_NET_F_MQ
    /// is offered and the guest picks how many it uses (control queue command
    /// VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET).
    pub queues: u16,
    /// The guest's MAC address: when set, VIRTIO_NET_F_MAC is offered with
    /// it in the config space, for frontends that read the backend's config
    /// (QEMU emulates the config space itself and takes its own `mac=`).
    pub mac: Option<[u8; 6]>,
    /// A cap on the guest's MTU, e.g. what a tunnel behind the port carries:
    /// the `mtu` offered with VIRTIO_NET_F_MTU is at most this, and so is an
    /// MTU the frontend sets with VHOST_USER_NET_SET_MTU (a larger one is
    /// refused). None: only the buffers limit it ([`crate::defs::guest_mtu`]).
    /// Read when the device is created; the guest takes it when its driver
    /// probes.
    pub mtu: Option<u16>,
}

/// Most queue pairs a device may have.
pub const MAX_QUEUE_PAIRS: u16 = 8;

/// Most fds one device with `queues` queue pairs holds, whatever its frontend
/// does: sockets, the library's epoll and eventfds, two memory tables of
/// [`crate::msg::MAX_REGIONS`] (the old one until every ring moved to the
/// new), kick, call and error fds and weir's copy of the call per virtqueue,
/// and one message's [`crate::msg::MAX_FDS`] while it arrives. A frontend
/// cannot make the device hold more: every message that carries fds either
/// replaces what an earlier one gave, or is refused and its fds closed. For
/// sizing `RLIMIT_NOFILE`.
pub const fn max_fds(queues: u16) -> u64 {
    let vqs = 2 * queues as u64 + 1;
    16 + 2 * crate::msg::MAX_REGIONS as u64 + crate::msg::MAX_FDS as u64 + 4 * vqs
}

/// Errors creating a device.
#[derive(Debug, thiserror::Error)]
pub enum VhostUserError {
    /// The configuration asks for something unsupported.
    #[error("vhost-user device {name:?}: {why}")]
    Config {
        /// Device name.
        name: String,
        /// What is wrong.
        why: &'static str,
    },
    /// The socket could not be set up.
    #[error("vhost-user device {name:?}: socket {path:?}")]
    Socket {
        /// Device name.
        name: String,
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The control thread could not be started.
    #[error("vhost-user device {name:?}: starting the control thread")]
    Thread {
        /// Device name.
        name: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// A vhost-user device: owns the control thread; yields one port per queue pair.
pub struct VhostUserDevice {
    name: String,
    cfg: VhostUserConfig,
    shared: Arc<DeviceShared>,
    conn: Arc<Mutex<Option<Conn>>>,
    thread: Option<JoinHandle<()>>,
    ports: Vec<VhostUserPort>,
    /// `(dev, ino)` of the server socket file this device created.
    socket_id: Option<(u64, u64)>,
    /// The device's share of the TSO pool (its ports hold clones).
    tso_share: Option<Arc<dataplane::mempool::PoolShare>>,
}

impl std::fmt::Debug for VhostUserDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhostUserDevice")
            .field("name", &self.name)
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// Creates device `name` and starts its control thread.
///
/// # Errors
/// [`VhostUserError`] if the configuration is unsupported, the server socket
/// cannot be bound, or the thread cannot be started. Client mode connects in the
/// background and never fails here.
pub fn create(
    name: &str,
    cfg: &VhostUserConfig,
    pool: &'static Mempool,
) -> Result<VhostUserDevice, VhostUserError> {
    create_with_tso(name, cfg, pool, None)
}

/// [`create`], with `tso_pool`, a pool of buffers large enough for 64 KiB TSO
/// frames: HOST_TSO4/6 and GUEST_TSO4/6 are offered, and TSO frames from the
/// guest are received into that pool (see docs/vhost-user.md), charged to
/// one share of it for the device (see [`Mempool::share`]). Its segment pool
/// ([`Mempool::set_segment_pool`]) should be `pool`.
///
/// # Errors
/// As [`create`].
pub fn create_with_tso(
    name: &str,
    cfg: &VhostUserConfig,
    pool: &'static Mempool,
    tso_pool: Option<&'static Mempool>,
) -> Result<VhostUserDevice, VhostUserError> {
    create_with_owner(name, cfg, pool, tso_pool, SocketOwner::default())
}

/// [`create_with_tso`], with the mode and group a server socket is created
/// with (ignored in client mode). The socket appears at its path with them
/// already set; a live socket, a symlink or any other file at the path is
/// refused and left alone, a stale socket is replaced (see
/// [`crate::socket_path::bind`]).
///
/// # Errors
/// As [`create`].
pub fn create_with_owner(
    name: &str,
    cfg: &VhostUserConfig,
    pool: &'static Mempool,
    tso_pool: Option<&'static Mempool>,
    owner: SocketOwner,
) -> Result<VhostUserDevice, VhostUserError> {
    if cfg.queues == 0 || cfg.queues > MAX_QUEUE_PAIRS {
        return Err(VhostUserError::Config {
            name: name.to_owned(),
            why: "queues must be 1..=8",
        });
    }
    let (listener, socket_id) = match cfg.mode {
        Mode::Server => {
            let b = crate::socket_path::bind(&cfg.socket, owner).map_err(|e| {
                VhostUserError::Socket {
                    name: name.to_owned(),
                    path: cfg.socket.clone(),
                    source: std::io::Error::other(e),
                }
            })?;
            (Some(b.listener), Some(b.file_id))
        }
        Mode::Client => (None, None),
    };
    let pairs: Vec<Arc<PairShared>> = (0..cfg.queues).map(|_| Arc::default()).collect();
    let ctrl: Arc<VqShared> = Arc::default();
    let vqs = pairs
        .iter()
        .flat_map(|p| [Arc::clone(&p.guest_rx), Arc::clone(&p.guest_tx)])
        .chain([Arc::clone(&ctrl)])
        .collect();
    let notifier = Notifier::start(name, vqs).map_err(|source| VhostUserError::Thread {
        name: name.to_owned(),
        source,
    })?;
    let offered_mtu = crate::defs::capped_mtu(crate::defs::guest_mtu(pool.data_room()), cfg.mtu);
    let shared = Arc::new(DeviceShared {
        pairs: pairs.clone(),
        ctrl,
        doorbell: Some(notifier.doorbell()),
        offered_mtu,
        ..DeviceShared::default()
    });
    let conn = Arc::new(Mutex::new(None));
    let internal = Internal::new().map_err(|source| VhostUserError::Socket {
        name: name.to_owned(),
        path: cfg.socket.clone(),
        source,
    })?;
    let ctl = Control {
        name: name.to_owned(),
        socket: cfg.socket.clone(),
        shared: Arc::clone(&shared),
        conn: Arc::clone(&conn),
        mtu: offered_mtu,
        max_mtu: crate::defs::capped_mtu(crate::defs::max_guest_mtu(pool.data_room()), cfg.mtu),
        tso: tso_pool.is_some(),
        mac: cfg.mac,
        notifier,
    };
    let thread = std::thread::Builder::new()
        .name(format!("vhost-{name}"))
        .spawn(move || ctl.run(listener, internal))
        .map_err(|source| VhostUserError::Thread {
            name: name.to_owned(),
            source,
        })?;
    // One share of the TSO pool for the whole device, whichever worker polls
    // each of its queues: a guest cannot take more TSO buffers than the pool
    // allows one port (its `port_share`).
    let tso_share = tso_pool.map(|p| Arc::new(p.share()));
    let ports = pairs
        .into_iter()
        .enumerate()
        .map(|(q, p)| {
            let tso = tso_share.clone();
            VhostUserPort::new(name, q as u16, p, Arc::clone(&shared.mtu), pool, tso)
        })
        .collect();
    Ok(VhostUserDevice {
        name: name.to_owned(),
        cfg: cfg.clone(),
        shared,
        conn,
        thread: Some(thread),
        ports,
        socket_id,
        tso_share,
    })
}

impl VhostUserDevice {
    /// Device name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Up when a frontend is connected, the first queue pair has started rings
    /// (the guest enables further pairs only if it uses them), and no started
    /// queue is in the error state.
    pub fn link(&self) -> LinkState {
        let pairs = &self.shared.pairs;
        let up = self.is_connected()
            && pairs[0].guest_rx.usable()
            && pairs[0].guest_tx.usable()
            && pairs
                .iter()
                .all(|p| p.guest_rx.fault().is_none() && p.guest_tx.fault().is_none());
        if up {
            LinkState::Up
        } else {
            LinkState::Down
        }
    }

    /// True while a frontend is connected.
    pub fn is_connected(&self) -> bool {
        // Relaxed: a status read.
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// Describes the error state: a queue the guest broke, or the last
    /// control-side failure (a refused frontend message, a ring that cannot
    /// start, a dropped connection). None if healthy. Cleared when a new
    /// frontend connects.
    pub fn error(&self) -> Option<String> {
        for (i, p) in self.shared.pairs.iter().enumerate() {
            for (vq, sh) in [(2 * i, &p.guest_rx), (2 * i + 1, &p.guest_tx)] {
                if let Some(f) = sh.fault() {
                    return Some(format!("virtqueue {vq}: {f}"));
                }
            }
        }
        self.shared
            .control_error
            .lock()
            .ok()
            .and_then(|g| g.clone())
    }

    /// The MTU the frontend set with VHOST_USER_NET_SET_MTU (QEMU's `host_mtu`),
    /// if it did. Frames to the guest longer than it allows are dropped as
    /// `mtu-exceeded`; frames from the guest are limited only by the mbuf
    /// data room. Cleared when a new frontend connects.
    pub fn mtu(&self) -> Option<u16> {
        // Relaxed: a status read.
        Some(self.shared.mtu.load(Ordering::Relaxed)).filter(|&m| m != 0)
    }

    /// The `mtu` the device offers with VIRTIO_NET_F_MTU (None: the feature
    /// is not offered): 1500 or what the buffers hold, capped by
    /// [`VhostUserConfig::mtu`]. Frontends that read the backend's config
    /// space give it to the guest; QEMU does not (it offers its own
    /// `host_mtu`, which must then be at most this cap).
    pub fn offered_mtu(&self) -> Option<u16> {
        self.shared.offered_mtu
    }

    /// The virtio features the connected frontend acked, by name
    /// (`VERSION_1`, `MRG_RXBUF`, `GUEST_TSO4`, ...); empty while none is
    /// connected or before it acks.
    pub fn features(&self) -> Vec<&'static str> {
        // Relaxed: a status read.
        crate::defs::feature_names(self.shared.acked.load(Ordering::Relaxed))
    }

    /// TSO buffers the device holds now, of its share of the TSO pool; None
    /// without a TSO pool.
    pub fn tso_buffers_held(&self) -> Option<u32> {
        self.tso_share.as_ref().map(|s| s.held())
    }

    /// Frontend connections and control-side errors so far: counters that
    /// only grow, for the metrics endpoint.
    pub fn events(&self) -> ConnectionEvents {
        // Relaxed: independent counters, read for display.
        ConnectionEvents {
            connects: self.shared.connects.load(Ordering::Relaxed),
            disconnects: self.shared.disconnects.load(Ordering::Relaxed),
            errors: self.shared.errors.load(Ordering::Relaxed),
        }
    }

    /// The guest's receive filter: a generation that changes whenever the
    /// filter does, and the modes and MAC tables the guest set with its
    /// control queue (None before its first RX or MAC command, and after a
    /// reset or disconnect). See [`crate::ctrlq::ctrl_reply`].
    pub fn rx_mode(&self) -> (u64, Option<GuestRxMode>) {
        let rx = self.shared.rx.lock().unwrap_or_else(|e| e.into_inner());
        // Acquire: pairs with the Release bump after `rx` changed; read
        // under the lock, so the two agree.
        (self.shared.rx_gen.load(Ordering::Acquire), rx.mode.clone())
    }

    /// The device's queue pairs as ports (once; later calls return nothing).
    pub fn take_queues(&mut self) -> Vec<VhostUserPort> {
        std::mem::take(&mut self.ports)
    }
}

impl Drop for VhostUserDevice {
    fn drop(&mut self) {
        // Relaxed: the thread polls the flag; the shutdown below wakes it.
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Ok(g) = self.conn.lock() {
            if let Some(c) = g.as_ref() {
                c.shutdown();
            }
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Only the file this device created: the path may have been taken
        // over since by something that is not ours to remove.
        if let Some(id) = self.socket_id {
            crate::socket_path::remove_if_ours(&self.cfg.socket, id);
        }
    }
}

/// The live connection: what Drop shuts down to end it.
struct Conn {
    lib: Option<ShutdownHandle>,
    front: UnixStream,
}

impl Conn {
    fn shutdown(&self) {
        if let Some(h) = &self.lib {
            h.shutdown();
        }
        let _ = self.front.shutdown(std::net::Shutdown::Both);
    }
}

/// Pairs the relay with the library. The library accepts its end of the
/// connection only from a [`Listener`]; each pairing gets a fresh listener
/// that has exactly the relay's connection queued and no name left for anyone
/// else to connect to ([`crate::socket_path::private_listener`]), so the
/// library can only ever accept the relay.
struct Internal {
    tmp: PathBuf,
}

impl Internal {
    fn new() -> std::io::Result<Internal> {
        Ok(Internal {
            tmp: std::env::temp_dir(),
        })
    }

    /// Connects our end and lets `daemon` accept it.
    fn pair(&mut self, daemon: &mut VhostUserDaemon<SharedBackend>) -> Result<UnixStream, String> {
        let (raw, ours) =
            crate::socket_path::private_listener(&self.tmp).map_err(|e| e.to_string())?;
        let mut listener = Listener::from(raw);
        daemon.start(&mut listener).map_err(|e| e.to_string())?;
        Ok(ours)
    }
}

/// The control thread's state.
struct Control {
    name: String,
    socket: PathBuf,
    shared: Arc<DeviceShared>,
    conn: Arc<Mutex<Option<Conn>>>,
    /// Offered with VIRTIO_NET_F_MTU (from the pool's data room).
    mtu: Option<u16>,
    /// Largest MTU a frontend may set with NET_SET_MTU (NET_MTU is offered only
    /// along with VIRTIO_NET_F_MTU).
    max_mtu: Option<u16>,
    /// Offer the TSO features.
    tso: bool,
    /// Offered with VIRTIO_NET_F_MAC.
    mac: Option<[u8; 6]>,
    /// The device's interrupt thread.
    notifier: Notifier,
}

/// A device's frontend connections and control-side errors since it was
/// created ([`VhostUserDevice::events`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionEvents {
    /// Frontends that connected.
    pub connects: u64,
    /// Frontends that disconnected.
    pub disconnects: u64,
    /// Control-side errors: refused frontend messages, rings that could not
    /// start, failed or dropped connections.
    pub errors: u64,
}

const POLL_MS: u64 = 100;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

impl Control {
    fn stopping(&self) -> bool {
        // Relaxed: a flag polled every POLL_MS.
        self.shared.stop.load(Ordering::Relaxed)
    }

    /// Waits for the next frontend: accepts (server) or connects with
    /// exponential backoff (client). None when stopping.
    fn next_frontend(
        &self,
        listener: Option<&UnixListener>,
        backoff: &mut Duration,
    ) -> Option<UnixStream> {
        loop {
            if self.stopping() {
                return None;
            }
            let r = match listener {
                Some(l) => {
                    if !wait_readable(l, POLL_MS) {
                        continue;
                    }
                    l.accept().map(|(s, _)| s)
                }
                None => UnixStream::connect(&self.socket),
            };
            match r {
                Ok(s) => return Some(s),
                Err(e) => {
                    if listener.is_some() {
                        self.shared
                            .set_error(format!("accepting a connection: {e}"));
                    }
                    self.sleep(*backoff);
                    *backoff = (*backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    fn run(self, listener: Option<UnixListener>, mut internal: Internal) {
        let mut backoff = BACKOFF_MIN;
        let queue_pairs = self.shared.pairs.len();
        let lim = Limits {
            queues: (2 * queue_pairs + 1) as u16,
            max_queue_size: MAX_QUEUE,
            max_mtu: self.mtu.and(self.max_mtu).unwrap_or(0),
        };
        while !self.stopping() {
            let features = Arc::new(AtomicU64::new(0));
            let table = Arc::new(Table::default());
            let mut bindings: Vec<Arc<Binding>> = self
                .shared
                .pairs
                .iter()
                // Index order: guest RX (even), then guest TX (odd).
                .flat_map(|p| [Arc::clone(&p.guest_rx), Arc::clone(&p.guest_tx)])
                .enumerate()
                .map(|(i, vq)| {
                    Binding::new(
                        i as u16,
                        vq,
                        Arc::clone(&self.shared),
                        Arc::clone(&features),
                        Arc::clone(&table),
                    )
                })
                .collect();
            // The control virtqueue comes last (virtio 1.2 §5.1.2).
            bindings.push(Binding::new_ctrl(
                (2 * queue_pairs) as u16,
                Arc::clone(&self.shared),
                Arc::clone(&features),
            ));
            let exit = match ExitEvent::new() {
                Ok(e) => Arc::new(Mutex::new(Some(e))),
                Err(e) => {
                    self.shared
                        .set_error(format!("creating the library's exit event: {e}"));
                    self.sleep(BACKOFF_MAX);
                    continue;
                }
            };
            let backend: SharedBackend = Arc::new(Mutex::new(NetBackend::new(
                bindings.clone(),
                features,
                table,
                Offer {
                    queue_pairs: queue_pairs as u16,
                    mtu: self.mtu,
                    tso: self.tso,
                    mac: self.mac,
                },
                Arc::clone(&exit),
            )));
            let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
            let (daemon, all_bound) = with_bindings(&bindings, || {
                VhostUserDaemon::new(self.name.clone(), backend, mem)
            });
            let mut daemon = match daemon {
                Ok(d) if all_bound => d,
                Ok(_) => {
                    self.shared
                        .set_error("vhost-user library created its queues unexpectedly".into());
                    return;
                }
                Err(e) => {
                    self.shared
                        .set_error(format!("creating vhost-user daemon: {e}"));
                    return;
                }
            };
            let Some(front) = self.next_frontend(listener.as_ref(), &mut backoff) else {
                // Stopping before a frontend came: the library has taken its
                // exit event already, so the fd it keeps must go here too.
                drop(daemon);
                reclaim_exit_event(&exit);
                break;
            };
            // A new frontend starts with a clean slate; errors the relay finds
            // from here on are its own.
            if let Ok(mut g) = self.shared.control_error.lock() {
                *g = None;
            }
            // Relaxed: a status value; the relay below sets it again.
            self.shared.mtu.store(0, Ordering::Relaxed);
            let relay = match (front.try_clone(), internal.pair(&mut daemon)) {
                (Ok(front_ctl), Ok(lib)) => {
                    let dev = Arc::clone(&self.shared);
                    let name = self.name.clone();
                    let spawned = std::thread::Builder::new()
                        .name(format!("vhost-relay-{name}"))
                        .spawn(move || {
                            if let Err(e) = crate::relay::run(front, lib, lim, Arc::clone(&dev)) {
                                dev.set_error(format!("connection dropped: {e}"));
                            }
                        });
                    match spawned {
                        Ok(t) => Some((t, front_ctl)),
                        Err(e) => {
                            self.shared.set_error(format!("starting the relay: {e}"));
                            daemon.request_shutdown();
                            None
                        }
                    }
                }
                (Err(e), _) => {
                    self.shared.set_error(format!("frontend socket: {e}"));
                    None
                }
                (_, Err(e)) => {
                    self.shared.set_error(format!("library socket: {e}"));
                    None
                }
            };
            if let Some((relay, front_ctl)) = relay {
                backoff = BACKOFF_MIN;
                tracing::info!("vhost-user {}: frontend connected", self.name);
                // Relaxed: status flag and counter.
                self.shared.connected.store(true, Ordering::Relaxed);
                self.shared.connects.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut g) = self.conn.lock() {
                    let c = Conn {
                        lib: daemon.shutdown_handle(),
                        front: front_ctl,
                    };
                    if self.stopping() {
                        c.shutdown();
                    }
                    *g = Some(c);
                }
                if let Err(e) = daemon.wait() {
                    tracing::info!("vhost-user {}: connection ended: {e}", self.name);
                }
                // The library is gone: end the relay too, then forget the
                // connection.
                if let Ok(mut g) = self.conn.lock() {
                    if let Some(c) = g.take() {
                        c.shutdown();
                    }
                }
                let _ = relay.join();
                // Relaxed: a status flag and a counter, read for display.
                self.shared.connected.store(false, Ordering::Relaxed);
                self.shared.acked.store(0, Ordering::Relaxed);
                self.shared.disconnects.fetch_add(1, Ordering::Relaxed);
                self.shared.reset_rx();
                tracing::info!("vhost-user {}: frontend disconnected", self.name);
            } else {
                let _ = daemon.wait();
                self.sleep(backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            // The frontend is gone: no ring may stay with a worker, and no
            // interrupt may stay blocked in its eventfds.
            for b in &bindings {
                b.stop();
            }
            self.notifier.unstick();
            for h in daemon.get_epoll_handlers() {
                h.send_exit_event();
            }
            // Joins the library's threads; then the fd it leaked can go.
            drop(daemon);
            reclaim_exit_event(&exit);
        }
    }

    /// Sleeps up to `d`, returning early when asked to stop.
    fn sleep(&self, d: Duration) {
        let end = Instant::now() + d;
        while !self.stopping() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10).min(end - Instant::now()));
        }
    }
}

/// Waits up to `ms` for a pending connection on `l`.
fn wait_readable(l: &UnixListener, ms: u64) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(l, PollFlags::IN)];
    let t = Timespec {
        tv_sec: 0,
        tv_nsec: (ms * 1_000_000) as _,
    };
    matches!(poll(&mut fds, Some(&t)), Ok(n) if n > 0)
}

/// Closes the copy of the exit event that the vhost-user library keeps and
/// never closes, once the library that took it is gone.
fn reclaim_exit_event(exit: &Mutex<Option<ExitEvent>>) {
    let handed = exit.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(e) = handed {
        e.reclaim();
    }
}
