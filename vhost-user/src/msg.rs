//! vhost-user message framing and the checks weir makes on a frontend's message
//! before rust-vmm's `vhost` library sees it.
//!
//! Layer: protocol. Never on the packet path; runs on a connection's relay thread
//! (`relay`). Pure functions over bytes and file facts, so they can be fuzzed.
//!
//! The library trusts some things a hostile frontend controls: it maps a memory
//! region of the size the frontend claims without looking at the file behind it
//! (a region longer than its file raises SIGBUS on first touch), accepts any queue
//! size up to the maximum (6 is not a valid split-ring size), and takes any file
//! as a call "eventfd" (a full pipe blocks the writer). [`check`] refuses such
//! messages; the relay then answers them itself and never forwards them.

use crate::defs::MIN_GUEST_MTU;

/// vhost-user spec "Header": request (u32), flags (u32), size (u32).
pub const HDR_BYTES: usize = 12;
/// Largest payload the library accepts (vhost crate `MAX_MSG_SIZE`).
pub const MAX_PAYLOAD_BYTES: usize = 0x1000;
/// Most fds one message may carry (vhost crate `MAX_ATTACHED_FD_ENTRIES`).
pub const MAX_FDS: usize = 32;
/// fds a relay leaves free for the rest of the process: a message whose fds
/// would cut into them is refused ([`Refusal::FdReserve`]).
pub const FD_RESERVE: u64 = 64;
/// vhost-user spec: `VHOST_MEMORY_BASELINE_NREGIONS`, the most regions in one
/// SET_MEM_TABLE.
pub const MAX_REGIONS: usize = 8;

/// vhost-user spec "Header": version bits of `flags` (must be 1).
pub const FLAG_VERSION_MASK: u32 = 0x3;
/// vhost-user spec: the message is a reply.
pub const FLAG_REPLY: u32 = 0x4;
/// vhost-user spec: the sender wants a REPLY_ACK.
pub const FLAG_NEED_REPLY: u32 = 0x8;

/// vhost-user spec "Front-end message types" used here.
pub mod req {
    /// VHOST_USER_SET_FEATURES.
    pub const SET_FEATURES: u32 = 2;
    /// VHOST_USER_GET_PROTOCOL_FEATURES.
    pub const GET_PROTOCOL_FEATURES: u32 = 15;
    /// VHOST_USER_SET_PROTOCOL_FEATURES.
    pub const SET_PROTOCOL_FEATURES: u32 = 16;
    /// VHOST_USER_SET_VRING_ENABLE.
    pub const SET_VRING_ENABLE: u32 = 18;
    /// VHOST_USER_NET_SET_MTU.
    pub const NET_SET_MTU: u32 = 20;
    /// VHOST_USER_SET_MEM_TABLE.
    pub const SET_MEM_TABLE: u32 = 5;
    /// VHOST_USER_SET_LOG_BASE.
    pub const SET_LOG_BASE: u32 = 6;
    /// VHOST_USER_SET_LOG_FD.
    pub const SET_LOG_FD: u32 = 7;
    /// VHOST_USER_SET_VRING_NUM.
    pub const SET_VRING_NUM: u32 = 8;
    /// VHOST_USER_SET_VRING_KICK.
    pub const SET_VRING_KICK: u32 = 12;
    /// VHOST_USER_SET_VRING_CALL.
    pub const SET_VRING_CALL: u32 = 13;
    /// VHOST_USER_SET_VRING_ERR.
    pub const SET_VRING_ERR: u32 = 14;
    /// VHOST_USER_ADD_MEM_REG.
    pub const ADD_MEM_REG: u32 = 37;
}

/// vhost-user spec "Protocol features" bits the relay looks at.
pub mod proto {
    /// VHOST_USER_PROTOCOL_F_REPLY_ACK.
    pub const REPLY_ACK: u64 = 1 << 3;
    /// VHOST_USER_PROTOCOL_F_NET_MTU.
    pub const NET_MTU: u64 = 1 << 4;
}

/// vhost-user spec: bit 8 of a vring fd message's u64 says "no fd attached".
pub const VRING_NOFD: u64 = 1 << 8;
/// vhost-user spec: bits 0..8 of a vring fd message's u64 are the vring index.
pub const VRING_IDX_MASK: u64 = 0xff;

/// A message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Request code.
    pub request: u32,
    /// Flags (version, reply, need-reply).
    pub flags: u32,
    /// Payload bytes that follow.
    pub size: u32,
}

impl Header {
    /// Decodes the 12 header bytes (little endian).
    pub fn parse(b: &[u8; HDR_BYTES]) -> Header {
        let w = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Header {
            request: w(0),
            flags: w(4),
            size: w(8),
        }
    }

    /// Encodes the header.
    pub fn to_bytes(self) -> [u8; HDR_BYTES] {
        let mut b = [0u8; HDR_BYTES];
        b[..4].copy_from_slice(&self.request.to_le_bytes());
        b[4..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..].copy_from_slice(&self.size.to_le_bytes());
        b
    }

    /// Whether the frontend asked for a REPLY_ACK.
    pub fn need_reply(&self) -> bool {
        self.flags & FLAG_NEED_REPLY != 0
    }

    /// The REPLY_ACK for this request: `0` success, non-zero failure
    /// (vhost-user spec "REPLY_ACK").
    pub fn ack(&self, ok: bool) -> [u8; HDR_BYTES + 8] {
        let h = Header {
            request: self.request,
            flags: 1 | FLAG_REPLY,
            size: 8,
        };
        let mut b = [0u8; HDR_BYTES + 8];
        b[..HDR_BYTES].copy_from_slice(&h.to_bytes());
        b[HDR_BYTES..].copy_from_slice(&u64::from(!ok).to_le_bytes());
        b
    }
}

/// What weir knows about a file descriptor a frontend attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdKind {
    /// A regular file (memfd, hugetlbfs or tmpfs file) of this many bytes.
    Regular {
        /// Its size (`fstat`).
        len_bytes: u64,
    },
    /// An eventfd.
    EventFd,
    /// Anything else (pipe, socket, device, ...).
    Other,
}

/// Why a frontend message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Header flags carry a version other than 1.
    #[error("message {request}: protocol version {version} is not 1")]
    Version {
        /// Request code.
        request: u32,
        /// The version bits.
        version: u32,
    },
    /// The payload is larger than any valid message.
    #[error("message {request}: payload of {size} bytes exceeds {MAX_PAYLOAD_BYTES}")]
    TooLarge {
        /// Request code.
        request: u32,
        /// Claimed size.
        size: u32,
    },
    /// The payload is too short for the request.
    #[error("message {request}: payload of {size} bytes is too short")]
    Short {
        /// Request code.
        request: u32,
        /// Actual size.
        size: usize,
    },
    /// Wrong number of attached fds.
    #[error("message {request}: {got} file descriptors attached, {want} expected")]
    FdCount {
        /// Request code.
        request: u32,
        /// Expected count.
        want: usize,
        /// Attached count.
        got: usize,
    },
    /// A memory table with no regions or more than [`MAX_REGIONS`].
    #[error("memory table with {0} regions (1..={MAX_REGIONS} allowed)")]
    RegionCount(u32),
    /// A region of zero bytes.
    #[error("memory region at {gpa:#x} has size 0")]
    RegionEmpty {
        /// Guest-physical start.
        gpa: u64,
    },
    /// A region whose end overflows u64 (guest, user or file address).
    #[error("memory region at {gpa:#x}+{size:#x} overflows the address space")]
    RegionOverflow {
        /// Guest-physical start.
        gpa: u64,
        /// Its size.
        size: u64,
    },
    /// Two regions overlap in guest-physical or frontend-virtual space.
    #[error("memory regions at {a:#x} and {b:#x} overlap")]
    RegionOverlap {
        /// One region's guest-physical start.
        a: u64,
        /// The other's.
        b: u64,
    },
    /// A region's fd is not a regular file.
    #[error("memory region at {gpa:#x}: its fd is not a regular file")]
    RegionFdKind {
        /// Guest-physical start.
        gpa: u64,
    },
    /// A region extends past the end of its file: touching the tail would SIGBUS.
    #[error(
        "memory region at {gpa:#x} needs {need_bytes} bytes of its file, which has {file_bytes}"
    )]
    RegionPastFile {
        /// Guest-physical start.
        gpa: u64,
        /// `mmap_offset + size`.
        need_bytes: u64,
        /// The file's size.
        file_bytes: u64,
    },
    /// A vring index beyond the device's queues.
    #[error("virtqueue {index} does not exist ({queues} queues)")]
    QueueIndex {
        /// The index.
        index: u64,
        /// Queues of the device.
        queues: u16,
    },
    /// A queue size that is not a power of two in 1..=max.
    #[error("virtqueue {index}: size {size} is not a power of two in 1..={max}")]
    QueueSize {
        /// Vring index.
        index: u32,
        /// Requested size.
        size: u32,
        /// Largest accepted.
        max: u16,
    },
    /// A call fd that is not an eventfd (writes to it could block or fail).
    #[error("virtqueue {index}: call fd is not an eventfd")]
    CallNotEventFd {
        /// Vring index.
        index: u64,
    },
    /// A dirty-log fd (live migration logging is not offered).
    #[error("message {0}: dirty logging is not supported")]
    Unsupported(u32),
    /// Keeping the message's fds would leave fewer than [`FD_RESERVE`] fds
    /// free for the process (`RLIMIT_NOFILE`): the reserve keeps the control
    /// socket and the other ports working.
    #[error("message {request}: refused, only {free} file descriptors left")]
    FdReserve {
        /// Request code.
        request: u32,
        /// fds the process could still open.
        free: u64,
    },
    /// A request whose protocol feature the frontend did not ack.
    #[error("message {request}: protocol feature {feature} was not negotiated")]
    NotNegotiated {
        /// Request code.
        request: u32,
        /// The feature's name.
        feature: &'static str,
    },
    /// NET_SET_MTU outside what weir's buffers hold or the port's MTU cap allows.
    #[error("NET_SET_MTU {mtu}: outside {MIN_GUEST_MTU}..={max} (the mbuf data room, or the cap of the MTU the port offers)")]
    Mtu {
        /// The requested MTU.
        mtu: u64,
        /// Largest accepted (0 when NET_MTU is not offered).
        max: u16,
    },
}

/// The device's limits the checks need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Number of virtqueues.
    pub queues: u16,
    /// Largest queue size.
    pub max_queue_size: u16,
    /// Largest MTU NET_SET_MTU may set ([`crate::defs::max_guest_mtu`]); 0 when
    /// NET_MTU is not offered.
    pub max_mtu: u16,
}

fn u32_at(p: &[u8], off: usize) -> Option<u32> {
    let b = p.get(off..off + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The little-endian u64 at `off`, if `p` holds one.
pub(crate) fn u64_at(p: &[u8], off: usize) -> Option<u64> {
    let b = p.get(off..off + 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Some(u64::from_le_bytes(a))
}

/// One memory region of SET_MEM_TABLE / ADD_MEM_REG (vhost-user spec "Memory
/// region description": guest address, size, user address, mmap offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Region {
    gpa: u64,
    size: u64,
    uaddr: u64,
    offset: u64,
}

impl Region {
    const BYTES: usize = 32;

    fn parse(p: &[u8], off: usize) -> Option<Region> {
        Some(Region {
            gpa: u64_at(p, off)?,
            size: u64_at(p, off + 8)?,
            uaddr: u64_at(p, off + 16)?,
            offset: u64_at(p, off + 24)?,
        })
    }

    fn check(&self, fd: FdKind) -> Result<(), Refusal> {
        let gpa = self.gpa;
        if self.size == 0 {
            return Err(Refusal::RegionEmpty { gpa });
        }
        let overflow = Refusal::RegionOverflow {
            gpa,
            size: self.size,
        };
        self.gpa.checked_add(self.size).ok_or(overflow)?;
        self.uaddr.checked_add(self.size).ok_or(overflow)?;
        let need_bytes = self.offset.checked_add(self.size).ok_or(overflow)?;
        // Host mappings are indexed with usize; refuse what cannot be mapped.
        if usize::try_from(self.size).is_err() {
            return Err(overflow);
        }
        match fd {
            FdKind::Regular { len_bytes } if len_bytes >= need_bytes => Ok(()),
            FdKind::Regular { len_bytes } => Err(Refusal::RegionPastFile {
                gpa,
                need_bytes,
                file_bytes: len_bytes,
            }),
            _ => Err(Refusal::RegionFdKind { gpa }),
        }
    }
}

fn overlaps(a0: u64, a_len: u64, b0: u64, b_len: u64) -> bool {
    // Ends were checked not to overflow.
    a0 < b0.saturating_add(b_len) && b0 < a0.saturating_add(a_len)
}

/// Checks one complete frontend message. `fds` describes the attached fds in
/// order. Ok means: forward it to the library.
///
/// # Errors
/// The [`Refusal`] to report; the message must then not be forwarded.
pub fn check(hdr: &Header, payload: &[u8], fds: &[FdKind], lim: &Limits) -> Result<(), Refusal> {
    let request = hdr.request;
    let version = hdr.flags & FLAG_VERSION_MASK;
    if version != 1 {
        return Err(Refusal::Version { request, version });
    }
    if hdr.size as usize > MAX_PAYLOAD_BYTES {
        return Err(Refusal::TooLarge {
            request,
            size: hdr.size,
        });
    }
    let short = Refusal::Short {
        request,
        size: payload.len(),
    };
    let fd_count = |want: usize| {
        if fds.len() == want {
            Ok(())
        } else {
            Err(Refusal::FdCount {
                request,
                want,
                got: fds.len(),
            })
        }
    };
    match request {
        req::SET_MEM_TABLE => {
            let n = u32_at(payload, 0).ok_or(short)?;
            if n == 0 || n as usize > MAX_REGIONS {
                return Err(Refusal::RegionCount(n));
            }
            let n = n as usize;
            if payload.len() < 8 + n * Region::BYTES {
                return Err(short);
            }
            fd_count(n)?;
            let mut regions = [None; MAX_REGIONS];
            for i in 0..n {
                let r = Region::parse(payload, 8 + i * Region::BYTES).ok_or(short)?;
                r.check(fds[i])?;
                for o in regions[..i].iter().flatten() {
                    let o: &Region = o;
                    if overlaps(r.gpa, r.size, o.gpa, o.size)
                        || overlaps(r.uaddr, r.size, o.uaddr, o.size)
                    {
                        return Err(Refusal::RegionOverlap { a: o.gpa, b: r.gpa });
                    }
                }
                regions[i] = Some(r);
            }
            Ok(())
        }
        req::ADD_MEM_REG => {
            // u64 padding, then one region.
            let r = Region::parse(payload, 8).ok_or(short)?;
            fd_count(1)?;
            r.check(fds[0])
        }
        req::SET_LOG_BASE | req::SET_LOG_FD => Err(Refusal::Unsupported(request)),
        req::NET_SET_MTU => {
            let mtu = u64_at(payload, 0).ok_or(short)?;
            fd_count(0)?;
            net_mtu(mtu, lim).map(|_| ())
        }
        req::SET_VRING_NUM => {
            let index = u32_at(payload, 0).ok_or(short)?;
            let size = u32_at(payload, 4).ok_or(short)?;
            fd_count(0)?;
            if index >= u32::from(lim.queues) {
                return Err(Refusal::QueueIndex {
                    index: u64::from(index),
                    queues: lim.queues,
                });
            }
            if size == 0 || !size.is_power_of_two() || size > u32::from(lim.max_queue_size) {
                return Err(Refusal::QueueSize {
                    index,
                    size,
                    max: lim.max_queue_size,
                });
            }
            Ok(())
        }
        req::SET_VRING_KICK | req::SET_VRING_CALL | req::SET_VRING_ERR => {
            let v = u64_at(payload, 0).ok_or(short)?;
            let index = v & VRING_IDX_MASK;
            if index >= u64::from(lim.queues) {
                return Err(Refusal::QueueIndex {
                    index,
                    queues: lim.queues,
                });
            }
            if v & VRING_NOFD != 0 {
                return fd_count(0);
            }
            fd_count(1)?;
            if request == req::SET_VRING_CALL && fds[0] != FdKind::EventFd {
                return Err(Refusal::CallNotEventFd { index });
            }
            Ok(())
        }
        req::SET_VRING_ENABLE => {
            // The relay may hold this message until SET_FEATURES, one per
            // ring: the index bounds what it holds.
            let index = u32_at(payload, 0).ok_or(short)?;
            u32_at(payload, 4).ok_or(short)?;
            fd_count(0)?;
            if index >= u32::from(lim.queues) {
                return Err(Refusal::QueueIndex {
                    index: u64::from(index),
                    queues: lim.queues,
                });
            }
            Ok(())
        }
        // Every other message weir accepts carries no fd: the ones that do
        // (SET_BACKEND_REQ_FD, SET_INFLIGHT_FD, ...) belong to protocol
        // features weir does not offer.
        _ => fd_count(0),
    }
}

/// The MTU of a NET_SET_MTU payload `mtu`, if weir's buffers hold frames of
/// that size: [`MIN_GUEST_MTU`]..=`lim.max_mtu`.
///
/// # Errors
/// [`Refusal::Mtu`] outside that range (always, when NET_MTU is not offered).
pub fn net_mtu(mtu: u64, lim: &Limits) -> Result<u16, Refusal> {
    match u16::try_from(mtu) {
        Ok(m) if (MIN_GUEST_MTU..=lim.max_mtu).contains(&m) => Ok(m),
        _ => Err(Refusal::Mtu {
            mtu,
            max: lim.max_mtu,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIM: Limits = Limits {
        queues: 3,
        max_queue_size: 1024,
        max_mtu: 2030,
    };

    fn hdr(request: u32, size: usize) -> Header {
        Header {
            request,
            flags: 1,
            size: size as u32,
        }
    }

    fn file(len_bytes: u64) -> FdKind {
        FdKind::Regular { len_bytes }
    }

    fn mt(regions: &[(u64, u64, u64, u64)], fds: &[FdKind]) -> Result<(), Refusal> {
        let p = crate::testguest::mem_table_payload(regions);
        check(&hdr(req::SET_MEM_TABLE, p.len()), &p, fds, &LIM)
    }

    #[test]
    fn memory_tables_must_fit_their_files_and_not_overlap() {
        let r = (0x0, 0x10000, 0x7f00_0000_0000, 0);
        assert_eq!(mt(&[r], &[file(0x10000)]), Ok(()));
        assert!(matches!(
            mt(&[r], &[file(0x8000)]),
            Err(Refusal::RegionPastFile { .. })
        ));
        assert!(matches!(
            mt(&[(0, 0x1000, 0, 0x1000)], &[file(0x1800)]),
            Err(Refusal::RegionPastFile { .. })
        ));
        assert!(matches!(
            mt(&[r], &[FdKind::EventFd]),
            Err(Refusal::RegionFdKind { .. })
        ));
        assert!(matches!(
            mt(&[(0, 0, 0, 0)], &[file(0x1000)]),
            Err(Refusal::RegionEmpty { .. })
        ));
        assert!(matches!(
            mt(&[(u64::MAX - 0xfff, 0x2000, 0, 0)], &[file(0x2000)]),
            Err(Refusal::RegionOverflow { .. })
        ));
        let a = (0x0, 0x2000, 0x10_0000, 0);
        let b = (0x1000, 0x2000, 0x20_0000, 0);
        assert!(matches!(
            mt(&[a, b], &[file(0x2000), file(0x2000)]),
            Err(Refusal::RegionOverlap { .. })
        ));
        let c = (0x4000, 0x2000, 0x10_1000, 0); // overlaps `a` in user space
        assert!(matches!(
            mt(&[a, c], &[file(0x2000), file(0x2000)]),
            Err(Refusal::RegionOverlap { .. })
        ));
        let nine: Vec<_> = (0..9u64).map(|i| (i << 20, 0x1000, i << 20, 0)).collect();
        assert_eq!(mt(&nine, &[file(0x1000); 9]), Err(Refusal::RegionCount(9)));
        assert!(matches!(mt(&[r], &[]), Err(Refusal::FdCount { .. })));
    }

    #[test]
    fn queue_sizes_must_be_powers_of_two_within_the_maximum() {
        let num = |index: u32, size: u32| {
            let mut p = index.to_le_bytes().to_vec();
            p.extend_from_slice(&size.to_le_bytes());
            check(&hdr(req::SET_VRING_NUM, 8), &p, &[], &LIM)
        };
        assert_eq!(num(0, 256), Ok(()));
        for bad in [0, 6, 2048, 32769, 65536, u32::MAX] {
            assert!(
                matches!(num(1, bad), Err(Refusal::QueueSize { .. })),
                "{bad}"
            );
        }
        assert!(matches!(num(3, 256), Err(Refusal::QueueIndex { .. })));
    }

    #[test]
    fn vring_fds_follow_the_nofd_flag_and_call_fds_must_be_eventfds() {
        let fdmsg = |request: u32, v: u64, fds: &[FdKind]| {
            check(&hdr(request, 8), &v.to_le_bytes(), fds, &LIM)
        };
        assert_eq!(fdmsg(req::SET_VRING_CALL, 1, &[FdKind::EventFd]), Ok(()));
        assert!(matches!(
            fdmsg(req::SET_VRING_CALL, 1, &[]),
            Err(Refusal::FdCount { .. })
        ));
        assert_eq!(fdmsg(req::SET_VRING_CALL, 1 | VRING_NOFD, &[]), Ok(()));
        assert_eq!(
            fdmsg(req::SET_VRING_CALL, 1, &[FdKind::Other]),
            Err(Refusal::CallNotEventFd { index: 1 })
        );
        assert!(matches!(
            fdmsg(req::SET_VRING_KICK, 7, &[FdKind::EventFd]),
            Err(Refusal::QueueIndex { .. })
        ));
        assert!(matches!(
            check(&hdr(req::SET_VRING_CALL, 2), &[1, 0], &[], &LIM),
            Err(Refusal::Short { .. })
        ));
    }

    #[test]
    fn held_vring_enables_name_an_existing_ring() {
        let enable = |index: u32, payload_len: usize| {
            let mut p = index.to_le_bytes().to_vec();
            p.extend_from_slice(&1u32.to_le_bytes());
            p.truncate(payload_len);
            check(&hdr(req::SET_VRING_ENABLE, p.len()), &p, &[], &LIM)
        };
        assert_eq!(enable(2, 8), Ok(()));
        assert!(matches!(enable(3, 8), Err(Refusal::QueueIndex { .. })));
        assert!(matches!(
            enable(u32::MAX, 8),
            Err(Refusal::QueueIndex { .. })
        ));
        assert!(matches!(enable(0, 4), Err(Refusal::Short { .. })));
    }

    #[test]
    fn messages_that_take_no_fds_carry_none() {
        for request in [
            req::SET_FEATURES,
            3,
            1,
            req::SET_VRING_NUM,
            req::SET_VRING_ENABLE,
        ] {
            let r = check(&hdr(request, 8), &[0; 8], &[FdKind::EventFd], &LIM);
            assert!(
                matches!(
                    r,
                    Err(Refusal::FdCount {
                        want: 0,
                        got: 1,
                        ..
                    })
                ),
                "request {request}: {r:?}"
            );
        }
    }

    #[test]
    fn header_round_trips_and_acks_carry_the_result() {
        let h = Header {
            request: 8,
            flags: 1 | FLAG_NEED_REPLY,
            size: 8,
        };
        assert_eq!(Header::parse(&h.to_bytes()), h);
        assert!(h.need_reply());
        let nack = h.ack(false);
        assert_eq!(&nack[..12], &[8, 0, 0, 0, 5, 0, 0, 0, 8, 0, 0, 0]);
        assert_eq!(&nack[12..], &1u64.to_le_bytes());
        let bad = Header { flags: 2, ..h };
        assert!(matches!(
            check(&bad, &[0; 8], &[], &LIM),
            Err(Refusal::Version { .. })
        ));
    }

    #[test]
    fn net_set_mtu_is_checked_against_the_data_room() {
        let mtu = |v: u64| check(&hdr(req::NET_SET_MTU, 8), &v.to_le_bytes(), &[], &LIM);
        assert_eq!(mtu(68), Ok(()));
        assert_eq!(mtu(1500), Ok(()));
        assert_eq!(mtu(2030), Ok(()));
        for v in [0, 67, 2031, 65535, 65536, u64::MAX] {
            assert_eq!(mtu(v), Err(Refusal::Mtu { mtu: v, max: 2030 }), "{v}");
        }
        assert!(matches!(
            check(&hdr(req::NET_SET_MTU, 4), &[0xdc, 5, 0, 0], &[], &LIM),
            Err(Refusal::Short { .. })
        ));
        assert!(matches!(
            check(
                &hdr(req::NET_SET_MTU, 8),
                &1500u64.to_le_bytes(),
                &[FdKind::EventFd],
                &LIM
            ),
            Err(Refusal::FdCount { .. })
        ));
        let off = Limits { max_mtu: 0, ..LIM };
        assert_eq!(net_mtu(1500, &off), Err(Refusal::Mtu { mtu: 1500, max: 0 }));
    }
}
