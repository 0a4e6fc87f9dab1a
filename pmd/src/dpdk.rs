//! DPDK backend: ports driven by DPDK's own poll-mode drivers, for NICs (and
//! DPDK virtual devices) weir has no native driver for. Built only with the
//! `dpdk` feature, against the system's libdpdk (>= 22.11) via `weir-dpdk-sys`.
//!
//! Layer: ports. Depends on `dataplane` (port trait, mbufs, stats) and
//! `weir-dpdk-sys`. `rx_burst`, `tx_burst` and `housekeeping` are on the packet
//! path; [`eal_init`] and [`DpdkPort::open`] are not. This module is the boundary
//! to DPDK's C API, so it allows `unsafe`, each block with a `// SAFETY:` note.
//!
//! # Data path
//!
//! ```text
//!   DPDK PMD -> rte_mbuf (DPDK pool) -> copy -> weir Mbuf -> rx_burst
//!   DPDK PMD <- rte_mbuf (DPDK pool) <- copy <- weir Mbuf <- tx_burst
//! ```
//!
//! Each device gets a private DPDK mbuf pool, and every frame is **copied** once
//! between a DPDK mbuf and a weir mbuf in each direction. That keeps weir's
//! mempool independent of DPDK's memory layout and lets any weir mbuf go to any
//! port. Zero copy (attaching weir's mbuf memory to DPDK mbufs as external
//! buffers with `rte_pktmbuf_attach_extbuf`, after registering the mempool
//! region with `rte_extmem_register` and the device's DMA map) is future work.
//!
//! # EAL
//!
//! DPDK's environment abstraction layer is initialised once per process, by the
//! first [`eal_init`] (later calls return the first result and ignore their
//! arguments). weir always adds `--no-telemetry`, a per-process `--file-prefix`
//! (unless one is given) and `-l 0` (unless a core list is given), and restores
//! the calling thread's CPU affinity afterwards, since EAL pins it to its main
//! lcore. weir's workers are not EAL threads; DPDK's per-lcore mempool caches are
//! therefore unused, which is why the DPDK pools are created without one.
//!
//! # Counters
//!
//! The worker counts rx/tx packets and bytes. This driver counts `NoBuffers` (weir
//! pool empty on receive), `Malformed` (a multi-segment frame received, or a
//! frame larger than a DPDK mbuf on transmit), and tx errors (DPDK pool empty on
//! transmit: the frames stay in the burst).
#![allow(unsafe_code)]

use std::ffi::{c_char, CStr, CString};
use std::ptr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dataplane::port::MAX_BURST;
use dataplane::{Burst, DropReason, LinkState, Mempool, Port, QueueStats};
use weir_dpdk_sys as sys;

/// Receive and transmit descriptors asked for per queue (the PMD may adjust).
const RING_DESCS: u16 = 1024;

/// DPDK mbufs per queue pair in the device's pool: both rings plus bursts in
/// flight.
const POOL_MBUFS_PER_QUEUE: u32 = 2 * RING_DESCS as u32 + 2 * MAX_BURST as u32;

/// How often `housekeeping` re-reads link state.
const LINK_REFRESH: Duration = Duration::from_millis(100);

/// `SOCKET_ID_ANY` from `rte_memory.h`.
const SOCKET_ID_ANY: i32 = -1;

/// Errors initialising DPDK or opening a DPDK port.
#[derive(Debug, thiserror::Error)]
pub enum DpdkError {
    /// An argument or device string contains a NUL byte.
    #[error("argument {arg:?} contains a NUL byte")]
    Nul {
        /// The argument.
        arg: String,
    },
    /// `rte_eal_init` failed (this time or in an earlier call in this process).
    #[error("DPDK EAL initialisation failed with arguments {args:?}: {reason}")]
    EalInit {
        /// Arguments passed to the EAL (of the first call).
        args: Vec<String>,
        /// DPDK's error string.
        reason: String,
    },
    /// A port was opened before the EAL was initialised.
    #[error("DPDK EAL is not initialised (call pmd::dpdk::eal_init first)")]
    EalNotReady,
    /// `rte_dev_probe` failed.
    #[error("probing DPDK device {devargs:?}: {reason}")]
    Probe {
        /// Device arguments as given.
        devargs: String,
        /// DPDK's error string.
        reason: String,
    },
    /// No ethdev port carries the device's name after probing.
    #[error("no DPDK ethdev port named {name:?} (for PCI devices use the full DDDD:BB:DD.F form)")]
    NoSuchPort {
        /// Device name (devargs up to the first ',').
        name: String,
    },
    /// The device supports fewer queues than asked for.
    #[error("DPDK port {name:?} has at most {max} queue pairs, {requested} requested")]
    TooManyQueues {
        /// Device name.
        name: String,
        /// Queues asked for.
        requested: u16,
        /// Queues the device offers.
        max: u16,
    },
    /// Creating the device's DPDK mbuf pool failed.
    #[error("creating DPDK mbuf pool {pool} ({mbufs} mbufs): {reason}")]
    Pool {
        /// Pool name.
        pool: String,
        /// Mbufs asked for.
        mbufs: u32,
        /// DPDK's error string.
        reason: String,
    },
    /// An ethdev call failed while configuring or starting the port.
    #[error("DPDK port {name:?}: {op} failed: {reason}")]
    Ethdev {
        /// Device name.
        name: String,
        /// The failing call.
        op: &'static str,
        /// DPDK's error string.
        reason: String,
    },
}

/// DPDK's message for `errno` (positive or negative).
fn strerror(errno: i32) -> String {
    // SAFETY: `rte_strerror` returns a pointer to a static or thread-local
    // NUL-terminated string for any value; it is copied out at once.
    let msg = unsafe { CStr::from_ptr(sys::rte_strerror(errno.abs())) };
    format!("{} (errno {})", msg.to_string_lossy(), errno.abs())
}

/// The current `rte_errno`.
fn rte_errno() -> i32 {
    // SAFETY: reads a thread-local int; no preconditions.
    unsafe { sys::weir_errno() }
}

fn cstring(s: &str) -> Result<CString, DpdkError> {
    CString::new(s).map_err(|_| DpdkError::Nul { arg: s.to_owned() })
}

/// Result of the process's one `rte_eal_init`: the arguments, and the error if any.
static EAL: OnceLock<(Vec<String>, Result<(), String>)> = OnceLock::new();

/// The EAL arguments weir passes: `extra` plus `--no-telemetry`, and a file
/// prefix and core list unless `extra` names them. `argv[0]` is included.
pub fn eal_args(extra: &[String]) -> Vec<String> {
    let has = |names: &[&str]| {
        extra.iter().any(|a| {
            names
                .iter()
                .any(|n| a == n || a.starts_with(&format!("{n}=")))
        })
    };
    let mut args = vec!["weir".to_owned()];
    if !has(&["--no-telemetry", "--telemetry"]) {
        args.push("--no-telemetry".to_owned());
    }
    if !has(&["--file-prefix"]) {
        args.push(format!("--file-prefix=weir-{}", std::process::id()));
    }
    if !has(&["-l", "-c", "--lcores"]) {
        args.extend(["-l".to_owned(), "0".to_owned()]);
    }
    args.extend(extra.iter().cloned());
    args
}

/// Initialises DPDK's EAL once per process with [`eal_args`]`(extra)`. Later
/// calls return the first call's result and ignore `extra`.
///
/// # Errors
/// [`DpdkError::EalInit`] if `rte_eal_init` failed (now or in the first call);
/// [`DpdkError::Nul`] for an argument with a NUL byte.
pub fn eal_init(extra: &[String]) -> Result<(), DpdkError> {
    let args = eal_args(extra);
    let cargs = args
        .iter()
        .map(|a| cstring(a))
        .collect::<Result<Vec<_>, _>>()?;
    let (first_args, result) = EAL.get_or_init(|| {
        let saved = current_affinity();
        // EAL may keep pointers into argv (it permutes it with getopt), so the
        // strings and the array are leaked: this runs once per process.
        let mut argv: Vec<*mut c_char> = cargs.into_iter().map(CString::into_raw).collect();
        let argc = argv.len() as i32;
        argv.push(ptr::null_mut());
        let argv = Box::leak(argv.into_boxed_slice());
        // SAFETY: `argv` holds `argc` valid NUL-terminated strings and a final
        // NULL, all leaked above so they outlive the EAL; OnceLock makes this the
        // only call in the process, as DPDK requires.
        let ret = unsafe { sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if let Some(set) = saved {
            restore_affinity(&set);
        }
        let result = if ret < 0 {
            Err(strerror(rte_errno()))
        } else {
            Ok(())
        };
        (args.clone(), result)
    });
    result.clone().map_err(|reason| DpdkError::EalInit {
        args: first_args.clone(),
        reason,
    })
}

fn current_affinity() -> Option<libc::cpu_set_t> {
    // SAFETY: `cpu_set_t` is plain data; all-zero is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable `cpu_set_t` of the size passed; pid 0
    // is the calling thread.
    let ret = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    (ret == 0).then_some(set)
}

fn restore_affinity(set: &libc::cpu_set_t) {
    // SAFETY: `set` is a valid `cpu_set_t` read by `sched_getaffinity`; pid 0 is
    // the calling thread. Failure leaves EAL's pinning, which is harmless.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(set), set) };
}

static POOL_SEQ: AtomicU32 = AtomicU32::new(0);

/// One started DPDK ethdev port and its DPDK mbuf pool; stopped, closed and
/// removed when the last queue drops.
#[derive(Debug)]
struct Device {
    name: String,
    port_id: u16,
    rte_pool: *mut sys::rte_mempool,
    rte_device: *mut sys::rte_device,
}

// SAFETY: the raw pointers name DPDK objects that are valid from any thread
// (DPDK's pools and devices are process-global); `Device` only uses them in
// `Drop`, after every queue is gone.
unsafe impl Send for Device {}
// SAFETY: `Device` has no `&self` methods that touch the pointers.
unsafe impl Sync for Device {}

impl Drop for Device {
    fn drop(&mut self) {
        // SAFETY: `port_id` was started by `DpdkPort::open` and no queue uses it
        // any more (each holds an `Arc<Device>`). The pool is freed after the
        // device is closed and removed, so no PMD still holds its mbufs in a ring.
        unsafe {
            sys::rte_eth_dev_stop(self.port_id);
            sys::rte_eth_dev_close(self.port_id);
            if !self.rte_device.is_null() {
                sys::rte_dev_remove(self.rte_device);
            }
            sys::rte_mempool_free(self.rte_pool);
        }
        tracing::debug!(port = %self.name, "DPDK port closed");
    }
}

/// One queue pair of a DPDK ethdev port.
pub struct DpdkPort {
    dev: Arc<Device>,
    port_id: u16,
    queue: u16,
    pool: &'static Mempool,
    stats: Arc<QueueStats>,
    link: LinkState,
    link_checked: Instant,
}

impl std::fmt::Debug for DpdkPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpdkPort")
            .field("name", &self.dev.name)
            .field("port_id", &self.port_id)
            .field("queue", &self.queue)
            .finish()
    }
}

// SAFETY: a `DpdkPort` is one queue pair used by one thread at a time (the
// `Port` contract); DPDK allows different queues of a port, and its mbuf pools,
// to be used from different threads. The raw pointers it reaches through `dev`
// are process-global DPDK objects.
unsafe impl Send for DpdkPort {}

impl DpdkPort {
    /// Probes the device `devargs` (a vdev such as `net_ring0` or
    /// `net_pcap0,iface=eth0`, or a PCI address with optional `,key=value`
    /// arguments), configures `queues` queue pairs with a private DPDK mbuf pool,
    /// starts it and returns one [`DpdkPort`] per queue. A device already probed
    /// (e.g. by `--vdev` in the EAL arguments) is used as is.
    ///
    /// # Errors
    /// [`DpdkError::EalNotReady`] before [`eal_init`]; otherwise the failing
    /// step with DPDK's error string.
    pub fn open(
        devargs: &str,
        queues: u16,
        pool: &'static Mempool,
    ) -> Result<Vec<DpdkPort>, DpdkError> {
        match EAL.get() {
            Some((_, Ok(()))) => {}
            Some((args, Err(reason))) => {
                return Err(DpdkError::EalInit {
                    args: args.clone(),
                    reason: reason.clone(),
                })
            }
            None => return Err(DpdkError::EalNotReady),
        }
        let queues = queues.max(1);
        let name = devargs.split(',').next().unwrap_or_default().to_owned();
        let c_devargs = cstring(devargs)?;
        let c_name = cstring(&name)?;
        let eth = |op: &'static str, ret: i32| -> Result<(), DpdkError> {
            if ret < 0 {
                Err(DpdkError::Ethdev {
                    name: name.clone(),
                    op,
                    reason: strerror(ret),
                })
            } else {
                Ok(())
            }
        };

        let mut port_id = 0u16;
        // SAFETY: `c_name` is NUL-terminated; `port_id` is a valid out-pointer.
        let found = unsafe { sys::rte_eth_dev_get_port_by_name(c_name.as_ptr(), &mut port_id) };
        if found != 0 {
            // SAFETY: `c_devargs` is a NUL-terminated string; EAL is initialised.
            let ret = unsafe { sys::rte_dev_probe(c_devargs.as_ptr()) };
            if ret < 0 && ret != -libc::EEXIST {
                return Err(DpdkError::Probe {
                    devargs: devargs.to_owned(),
                    reason: strerror(ret),
                });
            }
            // SAFETY: as above.
            let found = unsafe { sys::rte_eth_dev_get_port_by_name(c_name.as_ptr(), &mut port_id) };
            if found != 0 {
                return Err(DpdkError::NoSuchPort { name });
            }
        }

        let mut info = sys::rte_eth_dev_info::default();
        // SAFETY: `port_id` names a probed port; `info` is a valid out-pointer.
        eth("rte_eth_dev_info_get", unsafe {
            sys::rte_eth_dev_info_get(port_id, &mut info)
        })?;
        let max = info.max_rx_queues.min(info.max_tx_queues);
        if queues > max {
            return Err(DpdkError::TooManyQueues {
                name,
                requested: queues,
                max,
            });
        }

        // SAFETY: `port_id` names a probed port.
        let socket = unsafe { sys::rte_eth_dev_socket_id(port_id) };
        let socket = if socket < 0 { SOCKET_ID_ANY } else { socket };
        let pool_name = format!("weir{}", POOL_SEQ.fetch_add(1, Ordering::Relaxed));
        let c_pool = cstring(&pool_name)?;
        let mbufs = POOL_MBUFS_PER_QUEUE * u32::from(queues);
        // SAFETY: `c_pool` is NUL-terminated and unique in this process; sizes
        // are DPDK's defaults. No per-lcore cache: weir's workers are not lcores.
        let rte_pool = unsafe {
            sys::rte_pktmbuf_pool_create(
                c_pool.as_ptr(),
                mbufs,
                0,
                0,
                sys::RTE_MBUF_DEFAULT_BUF_SIZE as u16,
                socket,
            )
        };
        if rte_pool.is_null() {
            return Err(DpdkError::Pool {
                pool: pool_name,
                mbufs,
                reason: strerror(rte_errno()),
            });
        }
        // From here on, `dev` stops, closes and frees everything on error.
        let dev = Arc::new(Device {
            name: name.clone(),
            port_id,
            rte_pool,
            rte_device: info.device,
        });

        let conf = sys::rte_eth_conf::default();
        // SAFETY: `port_id` names a probed, stopped port; `conf` is a valid
        // zeroed configuration (no offloads, no RSS) that outlives the call.
        eth("rte_eth_dev_configure", unsafe {
            sys::rte_eth_dev_configure(port_id, queues, queues, &conf)
        })?;
        let (mut nb_rx, mut nb_tx) = (RING_DESCS, RING_DESCS);
        // SAFETY: valid port; both out-pointers are valid.
        eth("rte_eth_dev_adjust_nb_rx_tx_desc", unsafe {
            sys::rte_eth_dev_adjust_nb_rx_tx_desc(port_id, &mut nb_rx, &mut nb_tx)
        })?;
        for q in 0..queues {
            // SAFETY: configured port, `q` below the configured count; NULL asks
            // for the PMD's default queue configuration; `rte_pool` is a live
            // pktmbuf pool that outlives the port (freed in `Device::drop`).
            eth("rte_eth_rx_queue_setup", unsafe {
                sys::rte_eth_rx_queue_setup(port_id, q, nb_rx, socket as u32, ptr::null(), rte_pool)
            })?;
            // SAFETY: as above.
            eth("rte_eth_tx_queue_setup", unsafe {
                sys::rte_eth_tx_queue_setup(port_id, q, nb_tx, socket as u32, ptr::null())
            })?;
        }
        // SAFETY: configured port. Some PMDs (net_ring) have no promiscuous mode;
        // a switch port wants every frame, so failure is only logged.
        if unsafe { sys::rte_eth_promiscuous_enable(port_id) } < 0 {
            tracing::debug!(port = %name, "DPDK port has no promiscuous mode");
        }
        // SAFETY: configured port with every queue set up.
        eth("rte_eth_dev_start", unsafe {
            sys::rte_eth_dev_start(port_id)
        })?;
        tracing::info!(port = %name, port_id, queues, "DPDK port started");

        let link = read_link(port_id);
        Ok((0..queues)
            .map(|queue| DpdkPort {
                dev: dev.clone(),
                port_id,
                queue,
                pool,
                stats: Arc::new(QueueStats::default()),
                link,
                link_checked: Instant::now(),
            })
            .collect())
    }

    /// DPDK's ethdev port id.
    pub fn port_id(&self) -> u16 {
        self.port_id
    }

    /// Queue pair index.
    pub fn queue(&self) -> u16 {
        self.queue
    }
}

fn read_link(port_id: u16) -> LinkState {
    let mut link = sys::rte_eth_link::default();
    // SAFETY: `port_id` names a started port; `link` is a valid out-pointer.
    let ret = unsafe { sys::rte_eth_link_get_nowait(port_id, &mut link) };
    if ret == 0 && u32::from(link.link_status()) == sys::RTE_ETH_LINK_UP {
        LinkState::Up
    } else {
        LinkState::Down
    }
}

impl Port for DpdkPort {
    fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        let room = burst.remaining_capacity().min(MAX_BURST);
        if room == 0 {
            return 0;
        }
        let mut pkts = [ptr::null_mut::<sys::rte_mbuf>(); MAX_BURST];
        // SAFETY: this value is the only user of (port_id, queue); `pkts` has room
        // for `room` pointers.
        let n = usize::from(unsafe {
            sys::weir_rx_burst(self.port_id, self.queue, pkts.as_mut_ptr(), room as u16)
        });
        let stats = &*self.stats;
        let before = burst.len();
        for &m in &pkts[..n] {
            // SAFETY: `m` is an mbuf the PMD just handed us; we own it until the
            // bulk free below.
            let (segs, len, data) = unsafe {
                (
                    sys::weir_pktmbuf_nb_segs(m),
                    usize::from(sys::weir_pktmbuf_data_len(m)),
                    sys::weir_pktmbuf_mtod(m).cast::<u8>(),
                )
            };
            if segs != 1 {
                // Scatter is not enabled, so this is a PMD surprise; drop it.
                stats.drop_one(DropReason::Malformed);
                continue;
            }
            // SAFETY: a single-segment mbuf's first `data_len` bytes from `mtod`
            // are initialised frame data, valid until the mbuf is freed below.
            let bytes = unsafe { std::slice::from_raw_parts(data, len) };
            let Some(mut mb) = self.pool.alloc() else {
                stats.drop_one(DropReason::NoBuffers);
                continue;
            };
            if mb.extend_from_slice(bytes).is_err() {
                stats.drop_one(DropReason::Malformed);
                continue;
            }
            // Cannot fail: at most `room` frames were received.
            if burst.try_push(mb).is_err() {
                stats.drop_one(DropReason::NoBuffers);
            }
        }
        // SAFETY: `pkts[..n]` are the mbufs received above, not used after this.
        unsafe { sys::weir_pktmbuf_free_bulk(pkts.as_mut_ptr(), n as u32) };
        burst.len() - before
    }

    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        let want = burst.len().min(MAX_BURST);
        if want == 0 {
            return 0;
        }
        let rte_pool = self.dev.rte_pool;
        let mut pkts = [ptr::null_mut::<sys::rte_mbuf>(); MAX_BURST];
        // Burst index of each DPDK mbuf in `pkts`; oversize frames get none.
        let mut origin = [0u8; MAX_BURST];
        let mut oversize = [false; MAX_BURST];
        let mut filled = 0usize;
        let mut processed = 0usize;
        for (i, mb) in burst.iter().take(want).enumerate() {
            // SAFETY: `rte_pool` is the device's live pktmbuf pool.
            let m = unsafe { sys::weir_pktmbuf_alloc(rte_pool) };
            if m.is_null() {
                // DPDK pool empty: this and later frames stay in the burst.
                self.stats.tx_errors.inc();
                break;
            }
            processed = i + 1;
            let bytes = mb.data();
            let appended = u16::try_from(bytes.len())
                .ok()
                // SAFETY: `m` is a fresh mbuf we own.
                .map(|len| unsafe { sys::weir_pktmbuf_append(m, len) })
                .unwrap_or(ptr::null_mut());
            if appended.is_null() {
                oversize[i] = true;
                // SAFETY: `m` is ours and unused.
                unsafe { sys::weir_pktmbuf_free(m) };
                continue;
            }
            // SAFETY: `append` returned `bytes.len()` writable bytes in `m`'s
            // single segment; the weir mbuf and the DPDK mbuf do not overlap.
            unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), appended.cast::<u8>(), bytes.len()) };
            pkts[filled] = m;
            origin[filled] = i as u8;
            filled += 1;
        }
        let sent = if filled == 0 {
            0
        } else {
            // SAFETY: this value is the only user of (port_id, queue); `pkts[..filled]`
            // are filled mbufs we own; the PMD takes the first `sent`.
            usize::from(unsafe {
                sys::weir_tx_burst(self.port_id, self.queue, pkts.as_mut_ptr(), filled as u16)
            })
        };
        // Frames before the first unsent one are taken (sent, or dropped as
        // oversize); the rest stay in the burst, in order.
        let taken = if sent < filled {
            usize::from(origin[sent])
        } else {
            processed
        };
        if sent < filled {
            // SAFETY: `pkts[sent..filled]` were not taken by the PMD and are ours.
            unsafe {
                sys::weir_pktmbuf_free_bulk(pkts[sent..].as_mut_ptr(), (filled - sent) as u32)
            };
        }
        let dropped = oversize[..taken].iter().filter(|&&o| o).count();
        if dropped > 0 {
            self.stats.drop_n(DropReason::Malformed, dropped as u64);
        }
        burst.drain(..taken);
        taken
    }

    fn link(&self) -> LinkState {
        self.link
    }

    fn stats(&self) -> &Arc<QueueStats> {
        &self.stats
    }

    fn housekeeping(&mut self) {
        let now = Instant::now();
        if now.duration_since(self.link_checked) >= LINK_REFRESH {
            self.link_checked = now;
            self.link = read_link(self.port_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eal_args_add_defaults_unless_given() {
        let a = eal_args(&["--no-huge".into()]);
        assert_eq!(a[0], "weir");
        assert!(a.contains(&"--no-telemetry".to_owned()));
        assert!(a.iter().any(|x| x.starts_with("--file-prefix=weir-")));
        assert!(a.windows(2).any(|w| w == ["-l", "0"]));
        assert_eq!(a.last().unwrap(), "--no-huge");

        let b = eal_args(&["--file-prefix=x".into(), "--lcores=1".into()]);
        assert_eq!(
            b.iter().filter(|x| x.starts_with("--file-prefix")).count(),
            1
        );
        assert!(!b.contains(&"-l".to_owned()));
    }

    /// Every test asks for the same EAL (the first call wins): no hugepages, no
    /// PCI scan, and `net_ring0` probed at start-up (`net_ring1` is probed by
    /// `DpdkPort::open`).
    fn test_eal() {
        eal_init(&[
            "--no-huge".into(),
            "-m".into(),
            "256".into(),
            "--no-pci".into(),
            "--vdev=net_ring0".into(),
        ])
        .expect("EAL init");
    }

    fn frame(i: u8, len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len];
        f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
        f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
        f[12..14].copy_from_slice(&[0x88, 0xb5]);
        for (k, b) in f[14..].iter_mut().enumerate() {
            *b = i.wrapping_add(k as u8);
        }
        f
    }

    /// `net_ring0` created without arguments uses one ring per queue for both
    /// directions, so whatever queue `q` transmits, queue `q` receives.
    #[test]
    fn net_ring_loops_frames_back_byte_exact() {
        test_eal();
        let pool = Mempool::for_tests(256);
        let mut qs = DpdkPort::open("net_ring0", 2, pool).expect("open net_ring0");
        assert_eq!(qs.len(), 2);
        assert_eq!(qs[0].link(), LinkState::Up);

        for (qi, q) in qs.iter_mut().enumerate() {
            let sent: Vec<Vec<u8>> = (0..5u8)
                .map(|i| frame(i + 10 * qi as u8, 60 + 100 * i as usize))
                .collect();
            let mut burst = Burst::new();
            for f in &sent {
                let mut m = pool.alloc().unwrap();
                m.extend_from_slice(f).unwrap();
                burst.push(m);
            }
            assert_eq!(q.tx_burst(&mut burst), 5);
            assert!(burst.is_empty());

            let mut rx = Burst::new();
            assert_eq!(q.rx_burst(&mut rx), 5);
            let got: Vec<Vec<u8>> = rx.iter().map(|m| m.data().to_vec()).collect();
            assert_eq!(got, sent);
            assert_eq!(q.rx_burst(&mut rx), 0);
        }
        drop(qs);
        assert_eq!(pool.in_use(), 0);
    }

    /// A frame too large for a DPDK mbuf (weir's pool here has 4 KiB buffers)
    /// is taken and counted as malformed; the frames around it are sent.
    #[test]
    fn oversize_frame_is_taken_and_counted() {
        test_eal();
        let pool = Mempool::create(&dataplane::mempool::MempoolConfig {
            name: "big".into(),
            n_mbufs: 64,
            data_room: 4096,
            cache_size: 0,
            hugepages: dataplane::mempool::HugepagePolicy::Never,
            ..Default::default()
        })
        .unwrap();
        let mut qs = DpdkPort::open("net_ring1", 1, pool).expect("open net_ring1");
        let q = &mut qs[0];
        let sent = [frame(1, 64), frame(2, 3000), frame(3, 1514)];
        let mut burst = Burst::new();
        for f in &sent {
            let mut m = pool.alloc().unwrap();
            m.extend_from_slice(f).unwrap();
            burst.push(m);
        }
        assert_eq!(q.tx_burst(&mut burst), 3);
        assert!(burst.is_empty());
        let mut rx = Burst::new();
        assert_eq!(q.rx_burst(&mut rx), 2);
        assert_eq!(rx[0].data(), &sent[0][..]);
        assert_eq!(rx[1].data(), &sent[2][..]);
        assert_eq!(q.stats().drops(DropReason::Malformed), 1);
    }
}
