//! AF_XDP port driver: one queue of a kernel network interface, driven through an
//! AF_XDP socket (`xsk-rs` over libxdp).
//!
//! Layer: ports. Depends on `dataplane` (port trait, mbufs, stats) and `xsk-rs`.
//! `rx_burst`, `tx_burst` and `housekeeping` are on the packet path; `open` is not.
//! All `unsafe` is in the boundary submodule `umem`, which owns the UMEM and the
//! four rings and tracks who owns each UMEM frame.
//!
//! # Data path
//!
//! ```text
//!            kernel                       |  AfXdpPort                | worker
//!  wire -> XDP prog (redirect) -> rx ring | copy -> Mbuf ------------> | rx_burst
//!                  fill ring <-------------- frame recycled at once   |
//!  wire <- driver xmit <------- tx ring   | <- copy from Mbuf <------- | tx_burst
//!                  completion ring ------->  frame back to free stack |
//! ```
//!
//! Each port owns a private UMEM, split once into receive frames (always either
//! on the fill ring, on the rx ring, or being copied) and transmit frames (on a
//! free stack, on the tx ring or on the completion ring). weir's mbuf pool is a
//! separate memory region, so every frame is **copied** once between UMEM and
//! mbuf in each direction. That keeps the mempool independent of AF_XDP's frame
//! layout and lets any mbuf go to any port. A zero-copy path, where the mempool
//! region itself is registered as a UMEM shared by all AF_XDP ports, is future
//! work.
//!
//! # Modes
//!
//! By default the socket binds in copy mode (`XDP_COPY`) and libxdp attaches its
//! redirect program in generic (SKB) mode (`XDP_FLAGS_SKB_MODE`), which works on
//! any interface, veth included. Checked on veth pairs (Linux 6.18): the program
//! on the receiving veth sees every frame the peer sends, and frames sent from
//! the socket reach the peer, with no XDP program on the peer end. That holds for
//! native (driver-mode) copy-mode XDP on veth too; the rule that a veth peer needs
//! an XDP program of its own applies to `XDP_REDIRECT` into a veth
//! (`ndo_xdp_xmit`), which this driver does not use. veth has no zero-copy
//! support. `AfXdpConfig::zero_copy` asks for driver-mode XDP and `XDP_ZEROCOPY`,
//! for NICs whose drivers support it.
//!
//! libxdp loads its default redirect program through its multi-program dispatcher
//! when a BPF filesystem is mounted at `/sys/fs/bpf`, and otherwise (with a
//! warning on stderr) as a single program. With `XDP_FLAGS_UPDATE_IF_NOEXIST`, an
//! unrelated XDP program already on the interface is left alone and `open` fails
//! with [`AfXdpError::XdpAttach`].
//!
//! # Checksums
//!
//! AF_XDP hands over bare frames: no checksum state, no segmentation
//! request. A veth peer with Linux's default offloads still sends TCP/UDP
//! frames whose checksum field holds only the pseudo-header sum (the skb is
//! `CHECKSUM_PARTIAL`, and copying it into the UMEM does not finish it);
//! forwarded as they are, the receiver drops them and TCP never connects.
//! Super-frames do not occur: attaching an XDP program to a veth takes the
//! segmentation offloads off its peer. So `rx_burst` recognises a partial
//! checksum by its value ([`dataplane::wire::complete_unmarked_partial_csum`]:
//! the field equals the pseudo-header sum and the checksum does not verify)
//! and completes it. That costs a pseudo-header sum per TCP/UDP frame and one
//! pass over the segment only for the partial ones; it needs no privilege
//! over the peer, works for a peer in any namespace or one weir did not
//! create, and leaves the peer's own settings alone (turning its checksum
//! offload off with `SIOCETHTOOL` would need weir to find and enter the peer's
//! namespace, and would change an interface weir does not own).
//!
//! # Kicks
//!
//! At most one syscall per burst: `rx_burst` calls `poll` only when the kernel set
//! `need_wakeup` on the fill ring; `tx_burst` calls `sendto` once after submitting,
//! when the tx ring asks for it (copy mode always does) or when `need_wakeup` is
//! off. `housekeeping` reclaims completions, re-kicks a tx ring the kernel left
//! frames on, and every 100 ms refreshes link state and kernel drop counters.
//!
//! # Counters
//!
//! The worker counts rx/tx packets and bytes. This driver counts `NoBuffers`
//! (mbuf pool empty: the frame is dropped and its UMEM frame recycled),
//! `Malformed` (frame larger than an mbuf, or larger than a UMEM frame on
//! transmit), `RxOverrun` (the kernel's `rx_dropped` plus `rx_ring_full`, which
//! includes frames lost to an empty fill ring), and rx/tx errors (invalid
//! descriptors reported by the kernel, failed kicks).

mod umem;

use std::io;
use std::num::NonZeroU32;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::{Burst, DropReason, LinkState, Mempool, Port, QueueStats};
use rustix::fs::{Mode, OFlags};
use xsk_rs::config::{FrameSize, Interface, QueueSize};
use xsk_rs::socket::SocketCreateError;
use xsk_rs::umem::UmemCreateError;

use self::umem::{OpenError, Xsk, XskParams};

/// How often `housekeeping` re-reads link state and the kernel's drop counters.
const REFRESH_INTERVAL: Duration = Duration::from_millis(100);

/// Longest interface name the kernel accepts (`IFNAMSIZ` minus the NUL).
const IFNAME_MAX_BYTES: usize = 15;

/// Smallest UMEM frame the kernel accepts (`XDP_UMEM_MIN_CHUNK_SIZE`).
const MIN_FRAME_BYTES: u32 = 2048;

/// Sizing and mode of one AF_XDP port queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AfXdpConfig {
    /// Interface receive queue to bind to.
    pub queue_id: u32,
    /// UMEM frames owned by this port, split between receiving (up to
    /// `fill_size`, at most half) and transmitting (the rest).
    pub frame_count: u32,
    /// Bytes per UMEM frame: a power of two from 2048 to the page size. The
    /// largest frame is this minus the 256-byte XDP headroom.
    pub frame_size: u32,
    /// Rx ring entries (power of two).
    pub rx_size: u32,
    /// Tx ring entries (power of two).
    pub tx_size: u32,
    /// Fill ring entries (power of two).
    pub fill_size: u32,
    /// Completion ring entries (power of two).
    pub comp_size: u32,
    /// Ask for driver-mode XDP and zero-copy binding (NIC support required). The
    /// default, copy mode with generic XDP, works on every interface. Either way
    /// frames are copied between the UMEM and mbufs (see the module docs).
    pub zero_copy: bool,
    /// Bind with `XDP_USE_NEED_WAKEUP`, so the kernel tells us when a kick is
    /// needed instead of us kicking after every transmit burst.
    pub need_wakeup: bool,
}

impl Default for AfXdpConfig {
    fn default() -> Self {
        AfXdpConfig {
            queue_id: 0,
            frame_count: 4096,
            frame_size: 2048,
            rx_size: 2048,
            tx_size: 2048,
            fill_size: 2048,
            comp_size: 2048,
            zero_copy: false,
            need_wakeup: true,
        }
    }
}

impl AfXdpConfig {
    /// Bytes of the UMEM one queue registers (and locks): `frame_count`
    /// frames of `frame_size` bytes.
    pub fn umem_bytes(&self) -> u64 {
        u64::from(self.frame_count) * u64::from(self.frame_size)
    }
}

/// Errors opening an AF_XDP port.
#[derive(Debug, thiserror::Error)]
pub enum AfXdpError {
    /// The name cannot be a kernel interface name.
    #[error(
        "invalid interface name {iface:?}: must be 1 to 15 bytes, without '/', ':', \
         whitespace or NUL, and not \".\" or \"..\""
    )]
    InvalidName {
        /// The name given.
        iface: String,
    },
    /// No interface of that name in this network namespace.
    #[error("no such network interface {iface:?}")]
    NoSuchInterface {
        /// The name given.
        iface: String,
    },
    /// The interface has fewer receive queues than `queue_id + 1`.
    #[error("network interface {iface:?} has no receive queue {queue_id}")]
    NoSuchQueue {
        /// Interface name.
        iface: String,
        /// Queue asked for.
        queue_id: u32,
    },
    /// A size in [`AfXdpConfig`] is out of range.
    #[error("invalid AF_XDP configuration for {iface:?}: {why}")]
    InvalidConfig {
        /// Interface name.
        iface: String,
        /// What is wrong.
        why: &'static str,
    },
    /// The kernel refused for lack of privilege or locked-memory allowance.
    #[error(
        "AF_XDP on {iface:?} not permitted: needs CAP_NET_ADMIN, CAP_NET_RAW and CAP_BPF \
         (or root), and RLIMIT_MEMLOCK of at least {umem_bytes} bytes unless CAP_IPC_LOCK \
         is held (raise it with `ulimit -l` or LimitMEMLOCK=)"
    )]
    NotPermitted {
        /// Interface name.
        iface: String,
        /// Bytes of UMEM the port tried to register.
        umem_bytes: u64,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// The XDP program could not be attached, or the queue is taken.
    #[error(
        "attaching the AF_XDP redirect program to {iface:?} queue {queue_id} failed: another \
         XDP program is probably already attached (check `ip link show {iface}`), or the queue \
         is already bound by another AF_XDP socket"
    )]
    XdpAttach {
        /// Interface name.
        iface: String,
        /// Queue asked for.
        queue_id: u32,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// `zero_copy` was asked for and the interface's driver cannot do it.
    #[error(
        "zero-copy AF_XDP is not supported by the driver of {iface:?}; \
         set zero_copy = false for copy mode"
    )]
    ZeroCopyUnsupported {
        /// Interface name.
        iface: String,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// Mapping or registering the UMEM failed.
    #[error("creating the UMEM for {iface:?} ({frames} frames of {frame_size} bytes)")]
    Umem {
        /// Interface name.
        iface: String,
        /// Frames asked for.
        frames: u32,
        /// Bytes per frame.
        frame_size: u32,
        /// The library's error.
        #[source]
        source: UmemCreateError,
    },
    /// Creating or binding the socket failed for another reason.
    #[error("creating the AF_XDP socket on {iface:?} queue {queue_id}")]
    Socket {
        /// Interface name.
        iface: String,
        /// Queue asked for.
        queue_id: u32,
        /// The library's error.
        #[source]
        source: SocketCreateError,
    },
    /// The interface's operstate could not be opened.
    #[error("opening the link state of {iface:?}")]
    LinkState {
        /// Interface name.
        iface: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// One queue of a kernel interface, as a [`Port`], over an AF_XDP socket.
///
/// Dropping it closes the socket; libxdp detaches its XDP program when the last
/// socket on the interface goes.
pub struct AfXdpPort {
    xsk: Xsk,
    pool: &'static Mempool,
    stats: Arc<QueueStats>,
    iface: String,
    queue_id: u32,
    link: LinkWatch,
    last_refresh: Instant,
    kernel: KernelCounters,
}

impl std::fmt::Debug for AfXdpPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfXdpPort")
            .field("iface", &self.iface)
            .field("queue_id", &self.queue_id)
            .field("link", &self.link.state)
            .finish_non_exhaustive()
    }
}

impl AfXdpPort {
    /// Opens queue `cfg.queue_id` of `iface`: creates a UMEM of `cfg.frame_count`
    /// frames, binds an AF_XDP socket, attaches libxdp's redirect program and
    /// fills the fill ring. Received frames are copied into mbufs from `pool`.
    ///
    /// Raises the soft `RLIMIT_MEMLOCK` to the hard limit first if it is below the
    /// UMEM size (kernels count UMEM pages against it unless the process has
    /// `CAP_IPC_LOCK`).
    ///
    /// # Errors
    /// See [`AfXdpError`]: a bad name or config, a missing interface or queue, a
    /// lack of privilege, an XDP program already attached, or any other UMEM or
    /// socket failure, each naming the interface.
    pub fn open(
        iface: &str,
        pool: &'static Mempool,
        cfg: &AfXdpConfig,
    ) -> Result<AfXdpPort, AfXdpError> {
        if !valid_ifname(iface) {
            return Err(AfXdpError::InvalidName {
                iface: iface.to_owned(),
            });
        }
        let mut params = validate(iface, cfg)?;
        umem::quiet_bpf_library_logs();
        let sys = PathBuf::from("/sys/class/net").join(iface);
        if !sys.exists() {
            return Err(AfXdpError::NoSuchInterface {
                iface: iface.to_owned(),
            });
        }
        if !sys.join(format!("queues/rx-{}", cfg.queue_id)).exists() {
            return Err(AfXdpError::NoSuchQueue {
                iface: iface.to_owned(),
                queue_id: cfg.queue_id,
            });
        }
        let link = LinkWatch::open(iface)?;
        // On a veth, copy mode attaches in the driver hook: the kernel then
        // takes segmentation offload off the peer, whose super-frames a
        // UMEM frame could not hold (module docs, "Checksums").
        params.native_copy = !cfg.zero_copy && is_veth(iface);

        let umem_bytes = cfg.umem_bytes();
        raise_memlock(umem_bytes);

        let name: Interface = iface.parse().map_err(|_| AfXdpError::InvalidName {
            iface: iface.to_owned(),
        })?;
        let rx_frames = cfg.fill_size.min(cfg.frame_count / 2);
        let xsk = Xsk::open(&name, &params, rx_frames)
            .map_err(|e| open_error(e, iface, cfg, umem_bytes))?;

        Ok(AfXdpPort {
            xsk,
            pool,
            stats: Arc::new(QueueStats::default()),
            iface: iface.to_owned(),
            queue_id: cfg.queue_id,
            link,
            last_refresh: Instant::now(),
            kernel: KernelCounters::default(),
        })
    }

    /// Interface name.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// Bound queue.
    pub fn queue_id(&self) -> u32 {
        self.queue_id
    }

    /// Largest frame this port transmits (UMEM frame size minus XDP headroom).
    pub fn max_frame_bytes(&self) -> usize {
        self.xsk.data_room()
    }

    /// Reads the kernel's socket counters and folds new drops and invalid
    /// descriptors into [`Port::stats`]. One `getsockopt`.
    fn fold_kernel_counters(&mut self) {
        match self.xsk.statistics() {
            Ok(s) => {
                let now = KernelCounters {
                    overrun: s.rx_dropped().wrapping_add(s.rx_ring_full()),
                    rx_invalid: s.rx_invalid_descs(),
                    tx_invalid: s.tx_invalid_descs(),
                };
                let before = std::mem::replace(&mut self.kernel, now);
                self.stats.drop_n(
                    DropReason::RxOverrun,
                    now.overrun.wrapping_sub(before.overrun),
                );
                self.stats
                    .rx_errors
                    .add(now.rx_invalid.wrapping_sub(before.rx_invalid));
                self.stats
                    .tx_errors
                    .add(now.tx_invalid.wrapping_sub(before.tx_invalid));
            }
            Err(_) => self.stats.rx_errors.inc(),
        }
    }
}

impl Port for AfXdpPort {
    fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        let room = burst.remaining_capacity();
        if room == 0 {
            return 0;
        }
        if self.xsk.rx_kick().is_err() {
            self.stats.rx_errors.inc();
        }
        let pool = self.pool;
        let stats = &*self.stats;
        let before = burst.len();
        self.xsk.rx(room, |bytes| {
            let Some(mut m) = pool.alloc() else {
                stats.drop_one(DropReason::NoBuffers);
                return;
            };
            let Some(dst) = m.room_mut().get_mut(..bytes.len()) else {
                stats.drop_one(DropReason::Malformed);
                return;
            };
            dst.copy_from_slice(bytes);
            if m.set_len(bytes.len()).is_err() {
                stats.drop_one(DropReason::Malformed);
                return;
            }
            // No metadata comes with the frame: a partial checksum left by a
            // peer's checksum offload is recognised by its value (module
            // docs, "Checksums").
            dataplane::wire::complete_unmarked_partial_csum(m.data_mut());
            // Cannot fail: the ring gave at most `room` frames.
            if burst.try_push(m).is_err() {
                stats.drop_one(DropReason::NoBuffers);
            }
        });
        burst.len() - before
    }

    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        if burst.is_empty() {
            return 0;
        }
        let done = self.xsk.tx(burst);
        if done.oversize > 0 {
            self.stats
                .drop_n(DropReason::Malformed, done.oversize as u64);
        }
        if done.ring_short > 0 {
            self.stats.tx_errors.add(done.ring_short as u64);
        }
        if done.kick_failed {
            self.stats.tx_errors.inc();
        }
        // Taken frames are ours now: their bytes are in the UMEM, so the mbufs go
        // back to the pool.
        burst.drain(..done.taken);
        done.taken
    }

    fn link(&self) -> LinkState {
        self.link.state
    }

    fn stats(&self) -> &Arc<QueueStats> {
        &self.stats
    }

    fn housekeeping(&mut self) {
        self.xsk.reclaim();
        // A kick can leave frames on the tx ring (the kernel sends a bounded batch
        // per `sendto`); send them now rather than on the next burst.
        if self.xsk.tx_outstanding() > 0
            && self.xsk.tx_ring_pending() > 0
            && self.xsk.kick_tx().is_err()
        {
            self.stats.tx_errors.inc();
        }
        let now = Instant::now();
        if now.duration_since(self.last_refresh) >= REFRESH_INTERVAL {
            self.last_refresh = now;
            self.link.refresh();
            self.fold_kernel_counters();
        }
    }
}

/// Last values of the kernel's per-socket counters, to turn them into deltas.
#[derive(Clone, Copy, Debug, Default)]
struct KernelCounters {
    overrun: u64,
    rx_invalid: u64,
    tx_invalid: u64,
}

/// Cached `operstate` of an interface, re-read through an fd kept open so that a
/// refresh is one `pread` and no allocation.
struct LinkWatch {
    fd: OwnedFd,
    state: LinkState,
}

impl LinkWatch {
    fn open(iface: &str) -> Result<LinkWatch, AfXdpError> {
        let path = format!("/sys/class/net/{iface}/operstate");
        let fd = rustix::fs::open(
            path.as_str(),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            rustix::io::Errno::NOENT => AfXdpError::NoSuchInterface {
                iface: iface.to_owned(),
            },
            e => AfXdpError::LinkState {
                iface: iface.to_owned(),
                source: e.into(),
            },
        })?;
        let mut w = LinkWatch {
            fd,
            state: LinkState::Down,
        };
        w.refresh();
        Ok(w)
    }

    /// Re-reads operstate. sysfs regenerates an attribute on every read from
    /// offset 0. A read error (the interface was deleted) means down.
    fn refresh(&mut self) {
        let mut buf = [0u8; 32];
        self.state = match rustix::io::pread(&self.fd, &mut buf, 0) {
            Ok(n) => parse_operstate(&buf[..n]),
            Err(_) => LinkState::Down,
        };
    }
}

/// `operstate` (RFC 2863 names) to link state. "unknown" is what drivers without
/// carrier reporting (tun, dummy, some virtual devices) show while passing frames,
/// so it counts as up.
fn parse_operstate(raw: &[u8]) -> LinkState {
    match raw.trim_ascii() {
        b"up" | b"unknown" => LinkState::Up,
        _ => LinkState::Down,
    }
}

/// Same rules as the kernel's `dev_valid_name`.
fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= IFNAME_MAX_BYTES
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
}

/// True if `iface` is a veth (false if that cannot be read).
fn is_veth(iface: &str) -> bool {
    let Some(name) = crate::sys::netdev::IfName::new(iface) else {
        return false;
    };
    crate::sys::netdev::control_socket()
        .and_then(|s| crate::sys::netdev::is_veth(std::os::fd::AsFd::as_fd(&s), &name))
        .unwrap_or(false)
}

fn validate(iface: &str, cfg: &AfXdpConfig) -> Result<XskParams, AfXdpError> {
    let bad = |why| AfXdpError::InvalidConfig {
        iface: iface.to_owned(),
        why,
    };
    let ring = |n: u32, why| QueueSize::new(n).map_err(|_| bad(why));
    let page = rustix::param::page_size() as u32;
    if cfg.frame_size < MIN_FRAME_BYTES || cfg.frame_size > page {
        return Err(bad("frame_size must be between 2048 and the page size"));
    }
    let frame_size = FrameSize::new(cfg.frame_size)
        .ok()
        .filter(|_| cfg.frame_size.is_power_of_two())
        .ok_or_else(|| bad("frame_size must be a power of two"))?;
    if cfg.frame_count < 2 {
        return Err(bad("frame_count must be at least 2 (receive and transmit)"));
    }
    let frame_count = NonZeroU32::new(cfg.frame_count).ok_or_else(|| bad("frame_count is 0"))?;
    let not_pow2 = "ring sizes must be non-zero powers of two";
    Ok(XskParams {
        queue_id: cfg.queue_id,
        frame_count,
        frame_size,
        rx_size: ring(cfg.rx_size, not_pow2)?,
        tx_size: ring(cfg.tx_size, not_pow2)?,
        fill_size: ring(cfg.fill_size, not_pow2)?,
        comp_size: ring(cfg.comp_size, not_pow2)?,
        zero_copy: cfg.zero_copy,
        native_copy: false,
        need_wakeup: cfg.need_wakeup,
    })
}

/// Raises the soft locked-memory limit to the hard one when below `bytes`. Best
/// effort: if it stays too low, socket creation reports `NotPermitted`.
fn raise_memlock(bytes: u64) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Memlock);
    if lim.current.is_some_and(|cur| cur < bytes) && lim.current != lim.maximum {
        lim.current = lim.maximum;
        let _ = setrlimit(Resource::Memlock, lim);
    }
}

fn open_error(e: OpenError, iface: &str, cfg: &AfXdpConfig, umem_bytes: u64) -> AfXdpError {
    let iface = iface.to_owned();
    let errno = e.errno();
    let os = |n: i32| io::Error::from_raw_os_error(n);
    match (e, errno) {
        (_, Some(n @ (libc::EPERM | libc::EACCES))) => AfXdpError::NotPermitted {
            iface,
            umem_bytes,
            source: os(n),
        },
        // Registering a UMEM beyond RLIMIT_MEMLOCK fails with ENOBUFS.
        (OpenError::Umem(_), Some(n @ libc::ENOBUFS)) => AfXdpError::NotPermitted {
            iface,
            umem_bytes,
            source: os(n),
        },
        (_, Some(libc::ENODEV)) => AfXdpError::NoSuchInterface { iface },
        (OpenError::Socket(_), Some(n @ (libc::EBUSY | libc::EEXIST))) => AfXdpError::XdpAttach {
            iface,
            queue_id: cfg.queue_id,
            source: os(n),
        },
        (OpenError::Socket(_), Some(n @ libc::EOPNOTSUPP)) if cfg.zero_copy => {
            AfXdpError::ZeroCopyUnsupported {
                iface,
                source: os(n),
            }
        }
        (OpenError::Umem(source), _) => AfXdpError::Umem {
            iface,
            frames: cfg.frame_count,
            frame_size: cfg.frame_size,
            source,
        },
        (OpenError::Socket(source), _) => AfXdpError::Socket {
            iface,
            queue_id: cfg.queue_id,
            source,
        },
        (OpenError::Layout, _) => AfXdpError::InvalidConfig {
            iface,
            why: "frame layout rejected (frame_size must be a power of two above 256)",
        },
        (OpenError::NoFillRing, _) => AfXdpError::InvalidConfig {
            iface,
            why: "socket created without its own fill and completion rings",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operstate_up_and_unknown_are_up() {
        assert_eq!(parse_operstate(b"up\n"), LinkState::Up);
        assert_eq!(parse_operstate(b"unknown\n"), LinkState::Up);
        assert_eq!(parse_operstate(b"down\n"), LinkState::Down);
        assert_eq!(parse_operstate(b"lowerlayerdown\n"), LinkState::Down);
        assert_eq!(parse_operstate(b""), LinkState::Down);
    }

    #[test]
    fn interface_names_follow_kernel_rules() {
        assert!(valid_ifname("veth0"));
        assert!(valid_ifname("a23456789012345"));
        assert!(!valid_ifname("a234567890123456"));
        assert!(!valid_ifname(""));
        assert!(!valid_ifname("."));
        assert!(!valid_ifname(".."));
        assert!(!valid_ifname("../eth0"));
        assert!(!valid_ifname("eth0:1"));
        assert!(!valid_ifname("eth 0"));
    }

    #[test]
    fn config_rejects_bad_sizes() {
        let ok = AfXdpConfig::default();
        assert!(validate("x", &ok).is_ok());
        for bad in [
            AfXdpConfig {
                frame_size: 3000,
                ..ok.clone()
            },
            AfXdpConfig {
                frame_size: 1024,
                ..ok.clone()
            },
            AfXdpConfig {
                frame_count: 1,
                ..ok.clone()
            },
            AfXdpConfig {
                rx_size: 1000,
                ..ok.clone()
            },
            AfXdpConfig {
                comp_size: 0,
                ..ok.clone()
            },
        ] {
            let e = validate("x", &bad).err().map(|e| e.to_string());
            assert!(
                e.as_deref().is_some_and(|s| s.contains("\"x\"")),
                "{bad:?} accepted or unnamed: {e:?}"
            );
        }
    }
}
