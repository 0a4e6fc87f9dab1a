//! The device handle and its control thread: the vhost-user socket (server or
//! client), one `VhostUserDaemon` per connection, reconnects, and cleanup.
//!
//! Layer: control. Not on the packet path.

use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dataplane::{LinkState, Mempool};
use vhost::vhost_user::Listener;
use vhost_user_backend::{ShutdownHandle, VhostUserDaemon};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use crate::backend::{with_bindings, Binding, NetBackend, SharedBackend};
use crate::shared::{DeviceShared, PairShared};
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
    /// Queue pairs (only 1 is supported so far).
    pub queues: u16,
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
    conn: Arc<Mutex<Option<ShutdownHandle>>>,
    thread: Option<JoinHandle<()>>,
    ports: Vec<VhostUserPort>,
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
    if cfg.queues != 1 {
        return Err(VhostUserError::Config {
            name: name.to_owned(),
            why: "only one queue pair is supported",
        });
    }
    let listener = match cfg.mode {
        Mode::Server => Some(bind(&cfg.socket).map_err(|source| VhostUserError::Socket {
            name: name.to_owned(),
            path: cfg.socket.clone(),
            source,
        })?),
        Mode::Client => None,
    };
    let pairs: Vec<Arc<PairShared>> = (0..cfg.queues).map(|_| Arc::default()).collect();
    let shared = Arc::new(DeviceShared {
        pairs: pairs.clone(),
        ..DeviceShared::default()
    });
    let conn = Arc::new(Mutex::new(None));
    let ctl = Control {
        name: name.to_owned(),
        socket: cfg.socket.clone(),
        shared: Arc::clone(&shared),
        conn: Arc::clone(&conn),
    };
    let thread = std::thread::Builder::new()
        .name(format!("vhost-{name}"))
        .spawn(move || ctl.run(listener))
        .map_err(|source| VhostUserError::Thread {
            name: name.to_owned(),
            source,
        })?;
    let ports = pairs
        .into_iter()
        .enumerate()
        .map(|(q, p)| VhostUserPort::new(name, q as u16, p, pool))
        .collect();
    Ok(VhostUserDevice {
        name: name.to_owned(),
        cfg: cfg.clone(),
        shared,
        conn,
        thread: Some(thread),
        ports,
    })
}

/// Binds the server socket, replacing a stale socket file (never another kind of
/// file).
fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Ok(md) = std::fs::symlink_metadata(path) {
        if md.file_type().is_socket() {
            std::fs::remove_file(path)?;
        } else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "path exists and is not a socket",
            ));
        }
    }
    UnixListener::bind(path)
}

impl VhostUserDevice {
    /// Device name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Up when a frontend is connected, every queue has a started ring, and
    /// none is in the error state.
    pub fn link(&self) -> LinkState {
        let up = self.is_connected()
            && self
                .shared
                .pairs
                .iter()
                .all(|p| p.guest_rx.usable() && p.guest_tx.usable());
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
    /// control-side failure. None if healthy.
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
            if let Some(h) = g.as_ref() {
                h.shutdown();
            }
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if self.cfg.mode == Mode::Server {
            let _ = std::fs::remove_file(&self.cfg.socket);
        }
    }
}

/// The control thread's state.
struct Control {
    name: String,
    socket: PathBuf,
    shared: Arc<DeviceShared>,
    conn: Arc<Mutex<Option<ShutdownHandle>>>,
}

const POLL_MS: u64 = 100;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

impl Control {
    fn stopping(&self) -> bool {
        // Relaxed: a flag polled every POLL_MS.
        self.shared.stop.load(Ordering::Relaxed)
    }

    fn run(self, listener: Option<UnixListener>) {
        // A second handle on the same socket, for polling with a timeout.
        let poller = listener.as_ref().and_then(|l| l.try_clone().ok());
        let mut listener = listener.map(Listener::from);
        let mut backoff = BACKOFF_MIN;
        while !self.stopping() {
            let features = Arc::new(AtomicU64::new(0));
            let bindings: Vec<Arc<Binding>> = self
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
                    )
                })
                .collect();
            let backend: SharedBackend =
                Arc::new(Mutex::new(NetBackend::new(bindings.clone(), features)));
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
            // Accept or connect, reusing the daemon until a connection is made.
            let connected = loop {
                if self.stopping() {
                    break false;
                }
                let r = match (listener.as_mut(), poller.as_ref()) {
                    (Some(l), Some(p)) => {
                        if !wait_readable(p, POLL_MS) {
                            continue;
                        }
                        daemon.start(l)
                    }
                    _ => daemon.start_client(&self.socket.to_string_lossy()),
                };
                match r {
                    Ok(()) => break true,
                    Err(e) => {
                        if listener.is_some() {
                            self.shared
                                .set_error(format!("accepting a connection: {e}"));
                        }
                        self.sleep(backoff);
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            };
            if connected {
                backoff = BACKOFF_MIN;
                tracing::info!("vhost-user {}: frontend connected", self.name);
                if let Ok(mut g) = self.shared.control_error.lock() {
                    *g = None;
                }
                // Relaxed: status flag.
                self.shared.connected.store(true, Ordering::Relaxed);
                if let Ok(mut g) = self.conn.lock() {
                    *g = daemon.shutdown_handle();
                    if self.stopping() {
                        if let Some(h) = g.as_ref() {
                            h.shutdown();
                        }
                    }
                }
                if let Err(e) = daemon.wait() {
                    tracing::info!("vhost-user {}: connection ended: {e}", self.name);
                }
                if let Ok(mut g) = self.conn.lock() {
                    *g = None;
                }
                self.shared.connected.store(false, Ordering::Relaxed);
                tracing::info!("vhost-user {}: frontend disconnected", self.name);
            }
            // The frontend is gone: no ring may stay with a worker.
            for b in &bindings {
                b.stop();
            }
            for h in daemon.get_epoll_handlers() {
                h.send_exit_event();
            }
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
