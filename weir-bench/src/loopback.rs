//! `weir bench --peer loopback`: weir's two vhost-user ports with the switch
//! taken out. One pinned thread on the worker CPU moves every burst from A's
//! rx to B's tx and back (io forwarding, as testpmd's `io` mode does).
//!
//! Control side; the forwarding loop mirrors a worker's (bursts, no
//! allocation, housekeeping every few rounds). It shows two things in the same
//! run as weir: the rate the generator reaches when the device in the middle
//! does the least weir can do, and, against the full switch, what MAC
//! learning, lookup and the worker's bookkeeping cost.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use dataplane::mempool::{MempoolConfig, MempoolError};
use dataplane::{Burst, Mempool, Port};
use vhost_user::{create, Mode, VhostUserConfig, VhostUserDevice, VhostUserError};

use crate::temp_dir::{TempDir, TempDirError};

/// Rounds between housekeeping calls (ring hand-over, link state).
const HOUSEKEEPING_EVERY: u64 = 1024;

/// Why the loopback device pair did not start.
#[derive(Debug, thiserror::Error)]
pub enum LoopbackError {
    /// The sockets' directory.
    #[error(transparent)]
    Dir(#[from] TempDirError),
    /// The mbuf pool of both devices.
    #[error("creating the loopback mbuf pool")]
    Pool(#[source] MempoolError),
    /// A vhost-user device.
    #[error("creating {}", socket.display())]
    Device {
        /// Its socket.
        socket: PathBuf,
        /// Why it failed.
        #[source]
        source: VhostUserError,
    },
    /// A device came without a queue pair.
    #[error("vhost-user device {} without a queue", socket.display())]
    NoQueue {
        /// Its socket.
        socket: PathBuf,
    },
    /// The forwarding thread.
    #[error("starting the loopback thread")]
    Thread(#[source] std::io::Error),
}

/// The running loopback device pair.
pub struct Loopback {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _devices: [VhostUserDevice; 2],
    _dir: TempDir,
}

fn pool(data_room: u32) -> Result<&'static Mempool, LoopbackError> {
    static POOL: OnceLock<&'static Mempool> = OnceLock::new();
    if let Some(p) = POOL.get() {
        return Ok(p);
    }
    let p = Mempool::create(&MempoolConfig {
        name: "bench-loopback".into(),
        data_room: data_room.max(2048),
        ..MempoolConfig::default()
    })
    .map_err(LoopbackError::Pool)?;
    Ok(*POOL.get_or_init(|| p))
}

impl Loopback {
    /// Creates the two server sockets and starts forwarding on `cpu`.
    ///
    /// # Errors
    /// If the pool, a device or the thread cannot be created.
    pub fn start(cpu: usize, max_frame: u32) -> Result<(Loopback, [PathBuf; 2]), LoopbackError> {
        let dir = TempDir::new("loopback")?;
        let pool = pool((max_frame + 4).next_multiple_of(1024))?;
        let socks = ["a", "b"].map(|n| dir.path().join(format!("{n}.sock")));
        let mk = |i: usize| -> Result<(VhostUserDevice, Box<dyn Port>), LoopbackError> {
            let socket = socks[i].clone();
            let cfg = VhostUserConfig {
                socket: socket.clone(),
                mode: Mode::Server,
                queues: 1,
                mac: None,
                mtu: None,
            };
            let mut dev = match create(&format!("loop{i}"), &cfg, pool) {
                Ok(dev) => dev,
                Err(source) => return Err(LoopbackError::Device { socket, source }),
            };
            match dev.take_queues().pop() {
                Some(q) => Ok((dev, Box::new(q))),
                None => Err(LoopbackError::NoQueue { socket }),
            }
        };
        let (da, pa) = mk(0)?;
        let (db, pb) = mk(1)?;
        let mut ports = [pa, pb];
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("bench-loopback".into())
            .spawn(move || {
                crate::pin_to(cpu);
                let mut burst = Burst::new();
                let mut round = 0u64;
                // Relaxed: a plain flag; join() synchronises.
                while !flag.load(Ordering::Relaxed) {
                    for from in 0..2 {
                        if ports[from].rx_burst(&mut burst) > 0 {
                            ports[1 - from].tx_burst(&mut burst);
                            // Whatever tx refused is dropped (freed) here.
                            burst.clear();
                        }
                    }
                    round += 1;
                    if round.is_multiple_of(HOUSEKEEPING_EVERY) {
                        for p in &mut ports {
                            p.housekeeping();
                        }
                    }
                }
            })
            .map_err(LoopbackError::Thread)?;
        Ok((
            Loopback {
                stop,
                thread: Some(thread),
                _devices: [da, db],
                _dir: dir,
            },
            socks,
        ))
    }

    /// Stops forwarding and closes both devices.
    pub fn stop(mut self) {
        // Relaxed: a plain flag; join() synchronises.
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
