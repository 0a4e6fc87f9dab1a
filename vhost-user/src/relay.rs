//! The relay between a frontend's socket and the `vhost` library: reads whole
//! messages from the frontend with a deadline, checks them ([`crate::msg`]), and
//! forwards only accepted ones (with their fds) to the library's end of a private
//! socket; the library's replies are copied back, message by message.
//!
//! NET_MTU: the library does not dispatch VHOST_USER_NET_SET_MTU, so the relay
//! serves that protocol feature itself. It adds the NET_MTU bit to the
//! library's GET_PROTOCOL_FEATURES reply (when VIRTIO_NET_F_MTU is offered),
//! notes whether SET_PROTOCOL_FEATURES acked it (and REPLY_ACK) and forwards
//! the features without it, and answers NET_SET_MTU itself: an MTU in
//! 68..=[`Limits::max_mtu`] is stored in [`DeviceShared::mtu`] and acked; one
//! outside, or any NET_SET_MTU without NET_MTU acked, is refused like the
//! other messages [`msg::check`] refuses.
//!
//! Layer: protocol/control. Never on the packet path; one thread per connection.
//!
//! Ordering: QEMU's virtio-net (7.2 and later) sends `SET_VRING_ENABLE` when the
//! device is created and again from `vhost_net_start`, both before `SET_FEATURES`,
//! and the library refuses that message (dropping the connection) until features
//! are set. So an enable that comes before `SET_FEATURES` is held back (and acked
//! here if the frontend asked for a reply); the latest one per ring is forwarded
//! right after `SET_FEATURES`.
//!
//! Why a relay: the library blocks reading a payload the header promised, takes
//! fds as they come and maps regions without looking at the files. Here a message
//! must arrive whole within [`MSG_TIMEOUT`] (a frontend that stalls mid-message
//! loses its connection, and only its own device's control is affected), every fd
//! is classified with `fstat` before anything maps it, refused fds are closed at
//! once, and writes to the frontend have a timeout (one that never reads cannot
//! wedge us).

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::fs::{fcntl_getfl, fcntl_setfl, fstat, FileType, OFlags};
use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};

use crate::msg::{self, FdKind, Header, Limits, Refusal, HDR_BYTES, MAX_FDS, MAX_PAYLOAD_BYTES};
use crate::shared::DeviceShared;

/// Replaces the little-endian u64 at the start of a feature message's
/// payload with `f` of it; a payload too short to hold one is left alone.
fn update_u64(payload: &mut [u8], f: impl FnOnce(u64) -> u64) {
    if let Some(v) = msg::u64_at(payload, 0) {
        payload[..8].copy_from_slice(&f(v).to_le_bytes());
    }
}

/// How long a started message may take to arrive whole, and a write to the
/// frontend may block.
pub(crate) const MSG_TIMEOUT: Duration = Duration::from_secs(2);
/// Poll period (the relay also ends when either socket is shut down).
const POLL_MS: i64 = 200;

/// Why the relay closed a connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RelayError {
    /// The frontend started a message and did not finish it in time.
    #[error("frontend sent {got} of {want} bytes of a message within {MSG_TIMEOUT:?}")]
    Truncated { got: usize, want: usize },
    /// A message whose framing cannot be trusted.
    #[error("refused message: {0}")]
    Framing(#[source] Refusal),
    /// More fds than one message may carry (or a control message the
    /// kernel had to truncate): they are closed and the connection dropped.
    #[error("frontend attached more than {MAX_FDS} file descriptors to one message")]
    TooManyFds,
    /// A socket error.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
}

/// A complete message from the frontend.
#[derive(Debug)]
pub(crate) struct Message {
    pub hdr: Header,
    pub payload: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

/// Waits until `fd` is readable or `deadline`; false on timeout.
fn wait_readable(fd: BorrowedFd<'_>, deadline: Option<Instant>) -> std::io::Result<bool> {
    loop {
        let ms = match deadline {
            None => POLL_MS,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(false);
                }
                left.as_millis().min(POLL_MS as u128) as i64
            }
        };
        let t = Timespec {
            tv_sec: 0,
            tv_nsec: ms * 1_000_000,
        };
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        match poll(&mut fds, Some(&t)) {
            Ok(n) if n > 0 => return Ok(true),
            Ok(_) if deadline.is_none() => return Ok(false),
            Ok(_) | Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// One `recvmsg`, keeping any attached fds (closed on drop if not forwarded).
/// A message's fds may come with any of its bytes, but all of them together
/// may not be more than [`MAX_FDS`]: past that the message is broken and the
/// fds are closed at once, so one frontend never holds more of weir's fds than
/// one message's worth while a message arrives.
fn recv_some(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> Result<usize, RelayError> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut cmsg = RecvAncillaryBuffer::new(&mut space);
    let r = loop {
        match recvmsg(
            sock,
            &mut [IoSliceMut::new(buf)],
            &mut cmsg,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            r => break r.map_err(std::io::Error::from)?,
        }
    };
    for m in cmsg.drain() {
        if let RecvAncillaryMessage::ScmRights(got) = m {
            fds.extend(got);
        }
    }
    if fds.len() > MAX_FDS || r.flags.contains(ReturnFlags::CTRUNC) {
        fds.clear();
        return Err(RelayError::TooManyFds);
    }
    Ok(r.bytes)
}

/// Reads exactly `buf.len()` bytes before `deadline`. Returns bytes read (less
/// only at end of stream).
fn recv_exact(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    deadline: Instant,
    already: usize,
) -> Result<usize, RelayError> {
    let mut got = 0;
    while got < buf.len() {
        if !wait_readable(sock, Some(deadline))? {
            return Err(RelayError::Truncated {
                got: already + got,
                want: already + buf.len(),
            });
        }
        let n = recv_some(sock, &mut buf[got..], fds)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(got)
}

/// Reads one message (call when the socket is readable). None at end of stream.
///
/// # Errors
/// [`RelayError::Truncated`] when it does not arrive whole within
/// [`MSG_TIMEOUT`], [`RelayError::Framing`] for a payload size no valid message
/// has.
pub(crate) fn read_message(sock: BorrowedFd<'_>) -> Result<Option<Message>, RelayError> {
    let mut fds = Vec::new();
    let mut h = [0u8; HDR_BYTES];
    let first = recv_some(sock, &mut h, &mut fds)?;
    if first == 0 {
        return Ok(None);
    }
    let deadline = Instant::now() + MSG_TIMEOUT;
    if first < HDR_BYTES {
        let n = recv_exact(sock, &mut h[first..], &mut fds, deadline, first)?;
        if first + n < HDR_BYTES {
            return Ok(None);
        }
    }
    let hdr = Header::parse(&h);
    if hdr.size as usize > MAX_PAYLOAD_BYTES {
        return Err(RelayError::Framing(Refusal::TooLarge {
            request: hdr.request,
            size: hdr.size,
        }));
    }
    let mut payload = vec![0u8; hdr.size as usize];
    let n = recv_exact(sock, &mut payload, &mut fds, deadline, HDR_BYTES)?;
    if n < payload.len() {
        return Ok(None);
    }
    Ok(Some(Message { hdr, payload, fds }))
}

/// Sends `data` and `fds` (fds with the first byte), NOSIGNAL, retrying partial
/// writes. The socket's write timeout bounds each call.
fn send_all(sock: BorrowedFd<'_>, data: &[u8], fds: &[OwnedFd]) -> std::io::Result<()> {
    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut sent = 0;
    while sent < data.len() {
        let mut cmsg = SendAncillaryBuffer::new(&mut space);
        if sent == 0 && !borrowed.is_empty() {
            cmsg.push(SendAncillaryMessage::ScmRights(&borrowed));
        }
        match sendmsg(
            sock,
            &[IoSlice::new(&data[sent..])],
            &mut cmsg,
            SendFlags::NOSIGNAL,
        ) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// What an attached fd is: `fstat` for files, the `/proc` link name for eventfds.
pub(crate) fn classify(fd: BorrowedFd<'_>) -> FdKind {
    match fstat(fd) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => FdKind::Regular {
            len_bytes: u64::try_from(st.st_size).unwrap_or(0),
        },
        Ok(_) => {
            let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()));
            match link {
                Ok(p) if p.as_os_str() == "anon_inode:[eventfd]" => FdKind::EventFd,
                _ => FdKind::Other,
            }
        }
        Err(_) => FdKind::Other,
    }
}

/// Replaces the guest's kick eventfd of a data virtqueue with one of weir's
/// own that nobody writes. Workers poll data queues and ignore kicks, and the
/// library would read the guest's eventfd on its epoll thread: a frontend
/// that clears O_NONBLOCK on it and reads its own kick first would block that
/// thread, which the control thread joins at disconnect. The control queue
/// (the last, `queues - 1`) keeps its kick: it is served on kicks.
fn private_kick(payload: &[u8], fds: &mut [OwnedFd], queues: u16) -> std::io::Result<()> {
    let index = msg::u64_at(payload, 0).map_or(u64::MAX, |v| v & msg::VRING_IDX_MASK);
    if index + 1 < u64::from(queues) {
        if let Some(fd) = fds.first_mut() {
            *fd = rustix::event::eventfd(
                0,
                rustix::event::EventfdFlags::NONBLOCK | rustix::event::EventfdFlags::CLOEXEC,
            )?;
        }
    }
    Ok(())
}

/// How many more fds the process may open (`RLIMIT_NOFILE` less those open);
/// None if unknown. Read only for messages that carry fds (a directory scan).
fn fds_free() -> Option<u64> {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current?;
    let open = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(limit.saturating_sub(open))
}

/// Relays one connection until either side closes or a message breaks framing.
pub(crate) fn run(
    front: UnixStream,
    lib: UnixStream,
    lim: Limits,
    dev: Arc<DeviceShared>,
) -> Result<(), RelayError> {
    front.set_write_timeout(Some(MSG_TIMEOUT))?;
    lib.set_write_timeout(Some(MSG_TIMEOUT))?;
    let mut features_set = false;
    // Protocol features the frontend acked that the relay itself acts on.
    let mut acked_proto = 0u64;
    // Held-back SET_VRING_ENABLE messages: (ring index, encoded message).
    let mut held: Vec<(u32, Vec<u8>)> = Vec::new();
    loop {
        let (f_in, l_in) = {
            let t = Timespec {
                tv_sec: 0,
                tv_nsec: POLL_MS * 1_000_000,
            };
            let mut fds = [
                PollFd::new(&front, PollFlags::IN),
                PollFd::new(&lib, PollFlags::IN),
            ];
            match poll(&mut fds, Some(&t)) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(std::io::Error::from(e).into()),
            }
            let ready = |p: &PollFd<'_>| !p.revents().is_empty();
            (ready(&fds[0]), ready(&fds[1]))
        };
        if l_in {
            let Some(mut r) = read_message(lib.as_fd())? else {
                return Ok(());
            };
            if r.hdr.request == msg::req::GET_PROTOCOL_FEATURES
                && r.hdr.flags & msg::FLAG_REPLY != 0
                && lim.max_mtu != 0
            {
                update_u64(&mut r.payload, |offered| offered | msg::proto::NET_MTU);
            }
            let mut bytes = r.hdr.to_bytes().to_vec();
            bytes.extend_from_slice(&r.payload);
            send_all(front.as_fd(), &bytes, &r.fds)?;
        }
        if f_in {
            let Some(mut m) = read_message(front.as_fd())? else {
                return Ok(());
            };
            let kinds: Vec<FdKind> = m.fds.iter().map(|f| classify(f.as_fd())).collect();
            let short_of_fds = if m.fds.is_empty() {
                None
            } else {
                fds_free().filter(|&free| free < msg::FD_RESERVE)
            };
            let unacked_mtu =
                m.hdr.request == msg::req::NET_SET_MTU && acked_proto & msg::proto::NET_MTU == 0;
            let verdict = msg::check(&m.hdr, &m.payload, &kinds, &lim)
                .and(if unacked_mtu {
                    Err(Refusal::NotNegotiated {
                        request: m.hdr.request,
                        feature: "NET_MTU",
                    })
                } else {
                    Ok(())
                })
                .and(match short_of_fds {
                    Some(free) => Err(Refusal::FdReserve {
                        request: m.hdr.request,
                        free,
                    }),
                    None => Ok(()),
                });
            match verdict {
                Ok(()) if m.hdr.request == msg::req::NET_SET_MTU => {
                    // The library does not dispatch NET_SET_MTU; weir answers it.
                    // msg::check guaranteed the u64 payload within range.
                    let mtu = msg::u64_at(&m.payload, 0)
                        .and_then(|v| msg::net_mtu(v, &lim).ok())
                        .unwrap_or(0);
                    // Relaxed: a status value for `VhostUserDevice::mtu`.
                    dev.mtu.store(mtu, std::sync::atomic::Ordering::Relaxed);
                    tracing::info!("frontend set MTU {mtu}");
                    if m.hdr.need_reply() && acked_proto & msg::proto::REPLY_ACK != 0 {
                        send_all(front.as_fd(), &m.hdr.ack(true), &[])?;
                    }
                }
                Ok(()) => {
                    if m.hdr.request == msg::req::SET_VRING_CALL
                        || m.hdr.request == msg::req::SET_VRING_KICK
                    {
                        // Best effort, for frontends that pass blocking
                        // eventfds by mistake (QEMU and DPDK make theirs
                        // non-blocking). The flag is shared with the
                        // frontend, which can clear it again: calls are
                        // written only by the interrupt thread (`notify`),
                        // which the control thread can interrupt.
                        for f in &m.fds {
                            if let Ok(fl) = fcntl_getfl(f) {
                                let _ = fcntl_setfl(f, fl | OFlags::NONBLOCK);
                            }
                        }
                    }
                    if m.hdr.request == msg::req::SET_VRING_ENABLE && !features_set {
                        let mut hdr = m.hdr;
                        if hdr.need_reply() {
                            send_all(front.as_fd(), &hdr.ack(true), &[])?;
                            hdr.flags &= !msg::FLAG_NEED_REPLY;
                        }
                        // msg::check guaranteed the 8-byte vring state payload.
                        let ring = m
                            .payload
                            .get(..4)
                            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(u32::MAX);
                        let mut bytes = hdr.to_bytes().to_vec();
                        bytes.extend_from_slice(&m.payload);
                        held.retain(|(r, _)| *r != ring);
                        held.push((ring, bytes));
                        continue;
                    }
                    let mut payload = m.payload;
                    if m.hdr.request == msg::req::SET_PROTOCOL_FEATURES {
                        update_u64(&mut payload, |mut acked| {
                            if lim.max_mtu == 0 {
                                acked &= !msg::proto::NET_MTU;
                            }
                            acked_proto = acked;
                            // The library never offered NET_MTU and need not
                            // know it was acked; the relay serves it.
                            acked & !msg::proto::NET_MTU
                        });
                    }
                    let mut bytes = m.hdr.to_bytes().to_vec();
                    bytes.extend_from_slice(&payload);
                    if m.hdr.request == msg::req::SET_VRING_KICK {
                        private_kick(&payload, &mut m.fds, lim.queues)?;
                    }
                    send_all(lib.as_fd(), &bytes, &m.fds)?;
                    if m.hdr.request == msg::req::SET_FEATURES {
                        features_set = true;
                        for (_, b) in held.drain(..) {
                            send_all(lib.as_fd(), &b, &[])?;
                        }
                    }
                }
                Err(r @ Refusal::Version { .. }) => return Err(RelayError::Framing(r)),
                Err(r) => {
                    dev.set_error(format!("refused frontend message: {r}"));
                    drop(m.fds);
                    if m.hdr.need_reply() {
                        send_all(front.as_fd(), &m.hdr.ack(false), &[])?;
                    }
                }
            }
        }
    }
}
