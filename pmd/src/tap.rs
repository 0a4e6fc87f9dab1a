//! A port on a TAP interface: the host kernel (or a namespace the interface is
//! moved to) sees an Ethernet device whose wire is this port.
//!
//! Layer: ports. Depends on `dataplane` and the crate's OS boundary
//! `crate::sys`. `rx_burst`/`tx_burst` are on the packet path.
//!
//! The interface is opened with `IFF_TAP | IFF_NO_PI` (bare Ethernet frames, no
//! packet-information prefix), non-blocking, and `IFF_MULTI_QUEUE` when more than
//! one queue is asked for; each queue is its own descriptor. It is brought up on
//! creation and is not made persistent, so the kernel removes it when the last
//! queue closes (an existing persistent TAP is attached to and left in place).
//!
//! # Link state
//! `link()` is `IFF_UP && IFF_RUNNING` as read in `housekeeping` (every 100 ms)
//! through a socket in the namespace the port was created in. Once the interface
//! has been moved to another network namespace its flags cannot be read from
//! there; the port then reports `Up`, since the interface exists and the kernel
//! keeps its carrier on for as long as a queue is attached.
//!
//! # Syscalls per burst
//! A TAP descriptor moves one frame per `read`/`write`; `readv`/`writev` gather
//! the pieces of one frame, and there is no batched call for TAP without the
//! vhost-net machinery. So `rx_burst` makes one `read` per frame plus the one
//! that returns `EAGAIN`, and `tx_burst` one `write` per frame: the per-frame
//! syscall is inherent to this port type.
//!
//! # Offloads
//! Each queue is opened with `IFF_VNET_HDR`: every frame read or written
//! starts with a `virtio_net_hdr`, mapped onto the mbuf's metadata as
//! vhost-user and AF_PACKET map theirs ([`dataplane::wire::vnet`]).
//! `TUNSETOFFLOAD` tells the kernel it may hand over partial checksums
//! (`TUN_F_CSUM`) and, with a TSO pool (`create_queues_with_tso`), TCP
//! super-frames (`TUN_F_TSO4/6`, `TUN_F_TSO_ECN`), which are read into a
//! buffer of that pool. Written frames carry their metadata in the header, so
//! the port accepts partial checksums and TSO frames: the stack behind the
//! TAP takes both as they are. A header weir refuses drops the frame as
//! `Malformed`.
//!
//! # Drops and errors
//! - `NoBuffers`: a frame was pending while the mempool was empty; it is read
//!   into a small scratch buffer and dropped, so the kernel queue keeps draining.
//! - `Malformed`: a frame longer than an mbuf (the kernel truncates it on read and
//!   reports the full length).
//! - `rx_errors`/`tx_errors`: other read/write failures (e.g. `EIO` while the
//!   interface is down); a frame that fails to write is taken and dropped.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::wire::vnet::{self, VnetAccept, VNET_HDR_LEN};
use dataplane::{Burst, DropReason, LinkState, Mbuf, Mempool, Port, QueueStats};
use rustix::io::Errno;

use crate::sys::netdev::{self, IfName};
use crate::sys::tun::{self, TunError};

/// How often `housekeeping` refreshes the link state.
const REFRESH_PERIOD: Duration = Duration::from_millis(100);

/// Errors creating or attaching to a TAP interface.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The name cannot be a Linux interface name.
    #[error("invalid interface name {name:?}: must be 1 to 15 bytes without '/', ':', whitespace or NUL")]
    InvalidName {
        /// The name given.
        name: String,
    },
    /// `/dev/net/tun` could not be opened.
    #[error("cannot open /dev/net/tun (is the tun module loaded?)")]
    NoTunDevice {
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The process lacks `CAP_NET_ADMIN`.
    #[error("permission denied creating TAP interface {name}: needs CAP_NET_ADMIN")]
    PermissionDenied {
        /// The interface.
        name: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The interface exists and takes no more queues.
    #[error("TAP interface {name} is busy: a single-queue TAP already has its queue attached")]
    Busy {
        /// The interface.
        name: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// An interface of that name exists but does not match.
    #[error("interface {name} exists but is not a TAP, or its multi-queue setting differs")]
    Mismatch {
        /// The interface.
        name: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Attaching the queue failed otherwise.
    #[error("attaching a queue to TAP interface {name} failed")]
    Attach {
        /// The interface.
        name: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Bringing the interface up failed.
    #[error("bringing TAP interface {name} up failed")]
    BringUp {
        /// The interface.
        name: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Zero queues were asked for.
    #[error("TAP interface {name} needs at least one queue")]
    NoQueues {
        /// The interface.
        name: String,
    },
}

/// One queue of a TAP interface; see the module docs.
#[derive(Debug)]
pub struct TapPort {
    fd: OwnedFd,
    /// Socket for interface ioctls, in the namespace the port was created in.
    ctl: OwnedFd,
    name: IfName,
    pool: &'static Mempool,
    stats: Arc<QueueStats>,
    link: LinkState,
    last_refresh: Instant,
    /// Receives (and so discards) a frame when the pool is empty; the kernel
    /// truncates to fit, so a few bytes suffice.
    scratch: [u8; 64],
    /// What the kernel was told it may send (`TUNSETOFFLOAD`).
    accept: VnetAccept,
    /// Buffers for super-frames longer than a normal mbuf.
    tso_pool: Option<&'static Mempool>,
    /// A TSO buffer kept ready for the next read.
    tso_spare: Option<Mbuf>,
}

impl TapPort {
    /// Creates TAP interface `name` (or attaches to an existing persistent one)
    /// with one queue, brings it up, and returns the port. `name` may be a pattern
    /// such as `"tap%d"`; [`TapPort::name`] has the result.
    ///
    /// # Errors
    /// See [`TapError`].
    pub fn create(name: &str, pool: &'static Mempool) -> Result<TapPort, TapError> {
        let mut q = Self::create_queues(name, 1, pool)?;
        q.pop().ok_or_else(|| TapError::NoQueues {
            name: name.to_owned(),
        })
    }

    /// Creates TAP interface `name` with `n` queues (`IFF_MULTI_QUEUE` when
    /// `n > 1`); the kernel spreads the flows it sends over the queues.
    ///
    /// # Errors
    /// See [`TapError`]; [`TapError::NoQueues`] for `n == 0`.
    pub fn create_queues(
        name: &str,
        n: usize,
        pool: &'static Mempool,
    ) -> Result<Vec<TapPort>, TapError> {
        Self::create_queues_with_tso(name, n, pool, None)
    }

    /// As [`TapPort::create_queues`], with `tso_pool` holding buffers for TSO
    /// super-frames from the kernel; without it the kernel is asked for
    /// partial checksums only and segments before handing frames over.
    ///
    /// # Errors
    /// As [`TapPort::create_queues`].
    pub fn create_queues_with_tso(
        name: &str,
        n: usize,
        pool: &'static Mempool,
        tso_pool: Option<&'static Mempool>,
    ) -> Result<Vec<TapPort>, TapError> {
        let mut ifname = IfName::new(name).ok_or_else(|| TapError::InvalidName {
            name: name.to_owned(),
        })?;
        if n == 0 {
            return Err(TapError::NoQueues {
                name: name.to_owned(),
            });
        }
        let mut queues = Vec::with_capacity(n);
        for _ in 0..n {
            let (fd, actual) = tun::open_tap(&ifname, n > 1, true)
                .map_err(|e| map_tun_error(ifname.as_str(), e))?;
            let tso = tso_pool.is_some();
            let mut offload = tun::TUN_F_CSUM;
            if tso {
                offload |= tun::TUN_F_TSO4 | tun::TUN_F_TSO6 | tun::TUN_F_TSO_ECN;
            }
            // A kernel that refuses leaves the frames it sends complete.
            let accept = match tun::set_offload(&fd, offload) {
                Ok(()) => VnetAccept {
                    csum: true,
                    tso4: tso,
                    tso6: tso,
                    // TUN_F_USO4/6 are not set: the kernel segments UDP
                    // before handing it over.
                    uso: false,
                    ecn: tso,
                },
                Err(_) => VnetAccept::default(),
            };
            // Later queues attach to the interface the first one created.
            ifname = actual;
            let ctl = netdev::control_socket().map_err(|source| TapError::BringUp {
                name: ifname.as_str().to_owned(),
                source,
            })?;
            queues.push(TapPort {
                fd,
                ctl,
                name: ifname,
                pool,
                stats: Arc::new(QueueStats::default()),
                link: LinkState::Down,
                last_refresh: Instant::now(),
                scratch: [0; 64],
                accept,
                tso_pool,
                tso_spare: None,
            });
        }
        if let Some(first) = queues.first_mut() {
            netdev::set_if_up(first.ctl.as_fd(), &first.name).map_err(|source| {
                TapError::BringUp {
                    name: first.name.as_str().to_owned(),
                    source,
                }
            })?;
        }
        for q in &mut queues {
            q.refresh();
        }
        Ok(queues)
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    fn refresh(&mut self) {
        self.last_refresh = Instant::now();
        self.link = match netdev::if_flags(self.ctl.as_fd(), &self.name) {
            Ok(f) if f.up() && f.running() => LinkState::Up,
            Ok(_) => LinkState::Down,
            // Not visible from here: the interface was moved to another network
            // namespace. It exists while our queue is attached, and the kernel
            // keeps its carrier on as long as a queue is attached.
            Err(_) => LinkState::Up,
        };
    }
}

fn map_tun_error(name: &str, e: TunError) -> TapError {
    let name = name.to_owned();
    match e {
        TunError::Open(source) => TapError::NoTunDevice { source },
        TunError::SetIff(source) => match source.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => TapError::PermissionDenied { name, source },
            Some(libc::EBUSY) => TapError::Busy { name, source },
            Some(libc::EINVAL) => TapError::Mismatch { name, source },
            _ => TapError::Attach { name, source },
        },
    }
}

impl TapPort {
    /// Reads one frame with its virtio-net header into `m`, or into the TSO
    /// spare when it is longer than `m`. Returns the mbuf holding the frame,
    /// `Ok(None)` for a frame dropped (counted), or the read error.
    fn read_vnet(&mut self, mut m: Mbuf) -> Result<Option<Mbuf>, Errno> {
        use std::io::IoSliceMut;
        if self.tso_spare.is_none() {
            self.tso_spare = self.tso_pool.and_then(|p| p.alloc());
        }
        let mut hdr = [0u8; VNET_HDR_LEN];
        let small = m.room_mut().len();
        let n = match self.tso_spare.as_mut() {
            Some(big) if big.capacity() > small => {
                let tail = &mut big.room_mut()[small..];
                let mut iov = [
                    IoSliceMut::new(&mut hdr),
                    IoSliceMut::new(m.room_mut()),
                    IoSliceMut::new(tail),
                ];
                rustix::io::readv(&self.fd, &mut iov)?
            }
            _ => {
                let mut iov = [IoSliceMut::new(&mut hdr), IoSliceMut::new(m.room_mut())];
                rustix::io::readv(&self.fd, &mut iov)?
            }
        };
        let Some(len) = n.checked_sub(VNET_HDR_LEN) else {
            self.stats.drop_one(DropReason::Malformed);
            return Ok(None);
        };
        let meta = match vnet::decode(&hdr, len, self.accept) {
            Ok(meta) => meta,
            Err(_) => {
                self.stats.drop_one(DropReason::Malformed);
                return Ok(None);
            }
        };
        if len > small {
            // Only a super-frame may be longer than a normal mbuf.
            let big = match (meta.gso, self.tso_spare.take()) {
                (Some(_), Some(mut big)) => {
                    big.room_mut()[..small].copy_from_slice(m.room_mut());
                    big
                }
                (Some(_), None) => {
                    self.stats.drop_one(DropReason::NoTsoBuffers);
                    return Ok(None);
                }
                (None, spare) => {
                    self.tso_spare = spare;
                    self.stats.drop_one(DropReason::Malformed);
                    return Ok(None);
                }
            };
            m = big;
        }
        if m.set_len(len).is_err() {
            // Longer than the TSO buffer too: the kernel truncated it.
            self.stats.drop_one(DropReason::Malformed);
            return Ok(None);
        }
        m.set_partial_csum(meta.partial);
        m.set_gso(meta.gso);
        Ok(Some(m))
    }
}

impl Port for TapPort {
    fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        let start = burst.len();
        let mut budget = burst.remaining_capacity();
        while budget > 0 {
            budget -= 1;
            let Some(m) = self.pool.alloc() else {
                match rustix::io::read(&self.fd, &mut self.scratch) {
                    Ok(_) => {
                        self.stats.drop_one(DropReason::NoBuffers);
                        continue;
                    }
                    Err(Errno::AGAIN) => break,
                    Err(Errno::INTR) => continue,
                    Err(_) => {
                        self.stats.rx_errors.inc();
                        break;
                    }
                }
            };
            match self.read_vnet(m) {
                Ok(Some(m)) => {
                    // Cannot fail: `budget` never exceeds the free capacity.
                    let _ = burst.try_push(m);
                }
                Ok(None) => {}
                Err(Errno::AGAIN) => break,
                Err(Errno::INTR) => {}
                Err(_) => {
                    self.stats.rx_errors.inc();
                    break;
                }
            }
        }
        burst.len() - start
    }

    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        let mut taken = 0;
        for m in burst.iter() {
            let Ok(hdr) = vnet::encode(m.partial_csum(), m.gso(), m.data()) else {
                self.stats.tx_errors.inc();
                taken += 1;
                continue;
            };
            let iov = [std::io::IoSlice::new(&hdr), std::io::IoSlice::new(m.data())];
            match rustix::io::writev(&self.fd, &iov) {
                Ok(_) => taken += 1,
                Err(Errno::AGAIN) | Err(Errno::INTR) => break,
                Err(_) => {
                    self.stats.tx_errors.inc();
                    taken += 1;
                }
            }
        }
        burst.drain(..taken);
        taken
    }

    fn accepts_partial_csum(&self) -> bool {
        true
    }

    fn accepts_gso(&self, kind: dataplane::wire::GsoKind) -> bool {
        // UDP trains are cut by weir: not every kernel takes GSO_UDP_L4
        // from a TAP.
        kind != dataplane::wire::GsoKind::Udp
    }

    fn link(&self) -> LinkState {
        self.link
    }

    fn stats(&self) -> &Arc<QueueStats> {
        &self.stats
    }

    fn housekeeping(&mut self) {
        if self.last_refresh.elapsed() >= REFRESH_PERIOD {
            self.refresh();
        }
    }
}
