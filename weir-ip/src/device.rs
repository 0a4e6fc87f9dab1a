//! smoltcp's view of the port: a [`smoltcp::phy::Device`] whose receive side
//! is the frames the stack thread took from the host ring, and whose
//! transmit side is the runtime's [`Link`].
//!
//! Layer: ports (slow path). Only the stack thread uses it.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use dataplane::Mbuf;
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::Instant;

use crate::snoop::{self, Tx};
use crate::{Counters, Link};

/// Ethernet header bytes above the IP MTU.
const ETH_HEADER: usize = 14;

pub(crate) struct HostDevice {
    /// Frames accepted by the snooper, in arrival order, for the next poll.
    pub rx: VecDeque<Mbuf>,
    tx_buf: Vec<u8>,
    link: Box<dyn Link>,
    mtu: usize,
}

impl HostDevice {
    pub fn new(link: Box<dyn Link>, mtu: usize, burst: usize) -> HostDevice {
        HostDevice {
            rx: VecDeque::with_capacity(burst),
            tx_buf: Vec::with_capacity(mtu + ETH_HEADER),
            link,
            mtu,
        }
    }

    /// Sends a frame built outside smoltcp (a probe); counts it.
    pub fn send(&self, counters: &Counters, frame: &[u8]) -> bool {
        send_counted(&*self.link, counters, frame)
    }

    /// The device for one poll, counting into `counters`.
    pub fn with<'a>(&'a mut self, counters: &'a Counters) -> PollDevice<'a> {
        PollDevice {
            dev: self,
            counters,
        }
    }
}

fn send_counted(link: &dyn Link, counters: &Counters, frame: &[u8]) -> bool {
    // Relaxed: independent statistics, read by other threads only for display.
    if link.send(frame) {
        counters.tx_frames.fetch_add(1, Ordering::Relaxed);
        true
    } else {
        counters.tx_failed.fetch_add(1, Ordering::Relaxed);
        false
    }
}

/// [`HostDevice`] plus the counters, for one `Interface::poll`.
pub(crate) struct PollDevice<'a> {
    dev: &'a mut HostDevice,
    counters: &'a Counters,
}

/// A received frame, held in its mbuf until smoltcp has read it.
pub(crate) struct MbufRx(Mbuf);

impl RxToken for MbufRx {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(self.0.data())
    }
}

/// A frame to send: smoltcp writes it into a reused buffer, the link copies
/// it out.
pub(crate) struct LinkTx<'a> {
    buf: &'a mut Vec<u8>,
    link: &'a dyn Link,
    counters: &'a Counters,
}

impl TxToken for LinkTx<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        self.buf.clear();
        self.buf.resize(len, 0);
        let r = f(self.buf);
        if send_counted(self.link, self.counters, self.buf) {
            // Relaxed: statistics.
            let c = match snoop::classify_tx(self.buf) {
                Tx::ArpReply => Some(&self.counters.arp_requests_answered),
                Tx::EchoReply => Some(&self.counters.echo_requests_answered),
                Tx::NeighbourAdvert => Some(&self.counters.neighbour_solicits_answered),
                Tx::Other => None,
            };
            if let Some(c) = c {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        r
    }
}

impl Device for PollDevice<'_> {
    type RxToken<'a>
        = MbufRx
    where
        Self: 'a;
    type TxToken<'a>
        = LinkTx<'a>
    where
        Self: 'a;

    fn receive(&mut self, _now: Instant) -> Option<(MbufRx, LinkTx<'_>)> {
        let m = self.dev.rx.pop_front()?;
        Some((
            MbufRx(m),
            LinkTx {
                buf: &mut self.dev.tx_buf,
                link: &*self.dev.link,
                counters: self.counters,
            },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<LinkTx<'_>> {
        Some(LinkTx {
            buf: &mut self.dev.tx_buf,
            link: &*self.dev.link,
            counters: self.counters,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        // For Ethernet media smoltcp counts the Ethernet header in the MTU.
        caps.max_transmission_unit = self.dev.mtu + ETH_HEADER;
        caps.max_burst_size = None;
        caps
    }
}
