//! Raw `AF_PACKET` sockets on one interface: send any frame, receive every
//! frame as it was on the wire, VLAN tag included.
//!
//! The kernel takes an 802.1Q or 802.1ad tag out of a received frame
//! before packet sockets see it and keeps it beside the frame
//! (`skb_vlan_untag`, whether or not the interface offloads VLANs), so a
//! plain `recv` cannot tell a tagged frame from an untagged one. The socket
//! asks for `PACKET_AUXDATA` and puts the tag back where it was (packet(7),
//! "Socket options").
//!
//! The crate's one OS boundary: `unsafe` is allowed here only, for what
//! `rustix` does not cover (`recvmsg` with its control messages). Options
//! and binding go through `pmd::packet_fd`, the calls weir's own AF_PACKET
//! ports make. Everything exported is safe. Control path only.
#![allow(unsafe_code)]

use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use pmd::packet_fd;
use rustix::net::{AddressFamily, SocketFlags, SocketType};

use crate::{Context, Error, Netns, Result};

/// One received frame's facts besides its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecvInfo {
    /// Bytes written to the buffer, tag included.
    pub len: usize,
    /// Length of the whole frame on the wire, tag included (more than `len`
    /// if the buffer was too short).
    pub wire_len: usize,
    /// Sent from this interface (the socket sees its host's own frames
    /// leave), rather than received by it.
    pub outgoing: bool,
}

/// An `AF_PACKET`, `SOCK_RAW` socket bound to one interface, receiving every
/// protocol, its tags given back ([module docs](self)).
#[derive(Debug)]
pub struct RawSocket {
    fd: OwnedFd,
    ifindex: u32,
}

impl RawSocket {
    /// Opens a socket on `iface` in the calling thread's network namespace.
    /// The interface is put into promiscuous mode while the socket is open,
    /// so frames for other hosts are seen too.
    ///
    /// # Errors
    /// No `CAP_NET_RAW`, or no such interface.
    pub fn open(iface: &str) -> Result<RawSocket> {
        let what = || format!("opening a packet socket on {iface}");
        let s = RawSocket::unbound(iface, &what)?;
        packet_fd::set_option(s.fd.as_fd(), libc::PACKET_AUXDATA, &1).with_context(what)?;
        s.bind_to(libc::ETH_P_ALL as u16).with_context(what)?;
        packet_fd::add_promisc(s.fd.as_fd(), s.ifindex).with_context(what)?;
        Ok(s)
    }

    /// A packet socket for `iface`, not bound yet. Protocol 0: nothing is
    /// received until `bind` names the interface, so no frame of another
    /// interface gets in first. `what` names the step for errors.
    fn unbound(iface: &str, what: &dyn Fn() -> String) -> Result<RawSocket> {
        let fd = rustix::net::socket_with(
            AddressFamily::PACKET,
            SocketType::RAW,
            SocketFlags::CLOEXEC,
            None,
        )
        .with_context(what)?;
        let ifindex = rustix::net::netdevice::name_to_index(&fd, iface).with_context(what)?;
        Ok(RawSocket { fd, ifindex })
    }

    /// [`RawSocket::open`] inside namespace `ns`: the socket stays bound to
    /// that namespace's interface whichever thread uses it afterwards.
    ///
    /// # Errors
    /// As [`RawSocket::open`], or the namespace cannot be entered.
    pub fn open_in(ns: &Netns, iface: &str) -> Result<RawSocket> {
        RawSocket::in_ns(ns, iface, RawSocket::open)
    }

    /// A socket on `iface` that only sends: bound to no protocol, it is
    /// handed no frame, not even a copy of those it sends, so a sender
    /// costs the kernel nothing on the receiving side (a traffic generator
    /// beside a measurement). [`RawSocket::recv`] on it waits in vain.
    ///
    /// # Errors
    /// As [`RawSocket::open`].
    pub fn open_sender(iface: &str) -> Result<RawSocket> {
        let what = || format!("opening a sending packet socket on {iface}");
        let s = RawSocket::unbound(iface, &what)?;
        s.bind_to(0).with_context(what)?;
        Ok(s)
    }

    /// [`RawSocket::open_sender`] inside namespace `ns`.
    ///
    /// # Errors
    /// As [`RawSocket::open_sender`], or the namespace cannot be entered.
    pub fn open_sender_in(ns: &Netns, iface: &str) -> Result<RawSocket> {
        RawSocket::in_ns(ns, iface, RawSocket::open_sender)
    }

    /// `open(iface)` run on a thread inside `ns`.
    fn in_ns(ns: &Netns, iface: &str, open: fn(&str) -> Result<RawSocket>) -> Result<RawSocket> {
        let (name, iface) = (ns.name().to_string(), iface.to_string());
        std::thread::spawn(move || {
            crate::enter(&name)?;
            open(&iface)
        })
        .join()
        .map_err(|_| Error::from_msg("the thread opening a packet socket panicked"))?
    }

    /// Binds to the interface, receiving protocol `proto` (0: none).
    fn bind_to(&self, proto: u16) -> io::Result<()> {
        packet_fd::bind(self.fd.as_fd(), self.ifindex, proto)
    }

    /// Sets the receive buffer to `len_bytes`, above the host's
    /// `net.core.rmem_max` if need be (`SO_RCVBUFFORCE`, root only), so a
    /// capture keeps up with a burst without changing the host's settings.
    ///
    /// # Errors
    /// No `CAP_NET_ADMIN`.
    pub fn set_recv_buffer(&self, len_bytes: usize) -> Result<()> {
        rustix::net::sockopt::set_socket_recv_buffer_size_force(&self.fd, len_bytes)
            .context("setting a packet socket's receive buffer")
    }

    /// Sends `frame` as it is (tags included) out of the interface.
    ///
    /// # Errors
    /// The kernel refused the frame (shorter than an Ethernet header, longer
    /// than the MTU, interface down).
    pub fn send(&self, frame: &[u8]) -> Result<()> {
        let n = rustix::net::send(&self.fd, frame, rustix::net::SendFlags::empty())
            .context("sending on a packet socket")?;
        if n != frame.len() {
            return Err(Error(format!("sent {n} of {} bytes", frame.len())));
        }
        Ok(())
    }

    /// Receives one frame into `buf`, its tag (if the kernel took one out)
    /// put back after the addresses, waiting at most `timeout`; `None` if
    /// none came.
    ///
    /// # Errors
    /// The socket failed.
    pub fn recv(&self, buf: &mut [u8], timeout: Duration) -> Result<Option<RecvInfo>> {
        rustix::net::sockopt::set_socket_timeout(
            &self.fd,
            rustix::net::sockopt::Timeout::Recv,
            Some(timeout.max(Duration::from_micros(1))),
        )
        .context("setting a receive timeout")?;
        // Room for the tag: the frame is read 4 bytes in, then its addresses
        // are moved to the front if a tag goes between them and the rest.
        if buf.len() < 4 + 14 {
            return Err(Error::from_msg("receive buffer shorter than a header"));
        }
        let (wire_len, aux, pkttype) = match self.recvmsg(&mut buf[4..]) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(None),
            Err(e) => return Err(Error(format!("receiving on a packet socket: {e}"))),
        };
        let outgoing = pkttype == libc::PACKET_OUTGOING;
        let got = wire_len.min(buf.len() - 4);
        let tag = aux
            .filter(|a| a.tp_status & libc::TP_STATUS_VLAN_VALID != 0)
            .map(|a| {
                let tpid = if a.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                    a.tp_vlan_tpid
                } else {
                    crate::frame::TPID_8021Q
                };
                (tpid, a.tp_vlan_tci)
            });
        Ok(Some(match tag {
            Some((tpid, tci)) if got >= 12 => {
                buf.copy_within(4..16, 0);
                buf[12..14].copy_from_slice(&tpid.to_be_bytes());
                buf[14..16].copy_from_slice(&tci.to_be_bytes());
                RecvInfo {
                    len: got + 4,
                    wire_len: wire_len + 4,
                    outgoing,
                }
            }
            _ => {
                buf.copy_within(4..4 + got, 0);
                RecvInfo {
                    len: got,
                    wire_len,
                    outgoing,
                }
            }
        }))
    }

    /// One `recvmsg` into `buf`: the length of the frame as the kernel hands
    /// it (tag taken out; more than `buf` holds if it did not fit), its
    /// auxiliary data if any, and its packet type (`PACKET_HOST`, ...).
    fn recvmsg(&self, buf: &mut [u8]) -> io::Result<(usize, Option<libc::tpacket_auxdata>, u8)> {
        // A control buffer of u64s, so that it is aligned for `cmsghdr`;
        // room for one `tpacket_auxdata` message and then some.
        let mut control = [0u64; 16];
        // SAFETY: `sockaddr_ll` is integers and byte arrays; all-zero is valid.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: `msghdr` is integers and pointers; all-zero (null pointers,
        // zero lengths) is valid.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&mut from as *mut libc::sockaddr_ll).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of::<[u64; 16]>() as _;
        // SAFETY: every pointer in `msg` points to a live buffer of the length
        // given beside it (`from`, `iov` over `buf`, `control`), all of which
        // outlive the call; the kernel writes at most those lengths.
        // MSG_TRUNC makes the return value the frame's full length.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_TRUNC) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let wire_len = n as usize;
        let mut aux = None;
        // SAFETY: `msg` was filled by a successful `recvmsg`: its control
        // pointer and (updated) length describe `control`, which is still
        // alive and unmoved, and CMSG_FIRSTHDR/CMSG_NXTHDR stay within it.
        let mut c = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        while !c.is_null() {
            // SAFETY: `c` is non-null and was returned by CMSG_FIRSTHDR or
            // CMSG_NXTHDR, so it points to a whole `cmsghdr` inside `control`.
            let h = unsafe { &*c };
            let data_len = (h.cmsg_len as usize).saturating_sub(
                // SAFETY: CMSG_LEN only computes a length.
                unsafe { libc::CMSG_LEN(0) } as usize,
            );
            if h.cmsg_level == libc::SOL_PACKET
                && h.cmsg_type == libc::PACKET_AUXDATA
                && data_len >= size_of::<libc::tpacket_auxdata>()
            {
                // SAFETY: the message's data holds at least a whole
                // `tpacket_auxdata` (checked above) inside `control`; it may
                // be unaligned, hence `read_unaligned`; any bit pattern is a
                // valid value of its integer fields.
                aux = Some(unsafe {
                    libc::CMSG_DATA(c)
                        .cast::<libc::tpacket_auxdata>()
                        .read_unaligned()
                });
            }
            // SAFETY: as for CMSG_FIRSTHDR; `c` is a header inside `control`.
            c = unsafe { libc::CMSG_NXTHDR(&msg, c) };
        }
        Ok((wire_len, aux, from.sll_pkttype))
    }

    /// Frames the kernel dropped for this socket, its receive buffer full,
    /// since the previous call (reading resets the kernel's count).
    ///
    /// # Errors
    /// The socket failed.
    pub fn take_drops(&self) -> Result<u32> {
        let mut st = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        packet_fd::get_option(self.fd.as_fd(), libc::PACKET_STATISTICS, &mut st)
            .context("reading a packet socket's statistics")?;
        Ok(st.tp_drops)
    }
}
