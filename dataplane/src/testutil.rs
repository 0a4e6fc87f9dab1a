//! Fake ports and frame builders for tests and benchmarks, behind the `test-utils`
//! feature.
//!
//! Layer: ports (test support). Depends on `mbuf`, `mempool`, `port`, `stats` and
//! `ids`. Not on the packet path: these fakes allocate and lock freely, which is
//! fine for tests of the switch and the workers but means they must never be used
//! to measure the packet path itself (use the ports in `pmd::memport` for that).
//!
//! - [`ScriptedPort`]: receives frames queued by the test, records every frame it
//!   transmits, and can simulate a full transmit queue or a link going down. A
//!   [`ScriptHandle`] keeps access to all of that after the port has been moved
//!   into a worker.
//! - [`LoopbackPort`]: whatever is transmitted comes back on receive.
//! - [`eth_frame`], [`vlan_frame`], [`mac`]: byte-exact fixtures.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::ids::{MacAddr, VlanId};
use crate::mempool::Mempool;
use crate::port::{Burst, LinkState, Port};
use crate::stats::{DropReason, QueueStats};
use crate::wire::ethernet::{self, ethertype};
use crate::wire::vlan;
use crate::Mbuf;

/// IEEE 802 "local experimental" EtherType 1, used as the inner type of
/// [`vlan_frame`] so that no parser mistakes the filler payload for IP.
pub const EXPERIMENTAL_ETHERTYPE: u16 = 0x88b5;

/// A locally administered unicast MAC address derived from `n`:
/// `02:00:` followed by `n` in network byte order. Distinct `n` give distinct
/// addresses.
pub fn mac(n: u32) -> MacAddr {
    let b = n.to_be_bytes();
    // 0x02: U/L bit set (locally administered), I/G bit clear (unicast).
    MacAddr([0x02, 0x00, b[0], b[1], b[2], b[3]])
}

/// Filler so payloads are not all zeros: byte `i` is `i as u8`.
fn push_payload(frame: &mut Vec<u8>, payload_len: usize) {
    frame.extend((0..payload_len).map(|i| i as u8));
}

/// An untagged Ethernet II frame: `dst`, `src`, `ethertype`, then `payload_len`
/// filler bytes (byte `i` of the payload is `i as u8`). No FCS.
pub fn eth_frame(dst: MacAddr, src: MacAddr, ethertype: u16, payload_len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(ethernet::HEADER_LEN + payload_len);
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ethertype.to_be_bytes());
    push_payload(&mut f, payload_len);
    f
}

/// An 802.1Q-tagged frame: `dst`, `src`, TPID 0x8100, TCI with priority 0 and
/// VLAN `vid`, inner EtherType [`EXPERIMENTAL_ETHERTYPE`], then `payload_len`
/// filler bytes as in [`eth_frame`].
pub fn vlan_frame(dst: MacAddr, src: MacAddr, vid: VlanId, payload_len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(ethernet::TAGGED_HEADER_LEN + payload_len);
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ethertype::VLAN.to_be_bytes());
    f.extend_from_slice(&(vid.0 & vlan::VID_MASK).to_be_bytes());
    f.extend_from_slice(&EXPERIMENTAL_ETHERTYPE.to_be_bytes());
    push_payload(&mut f, payload_len);
    f
}

/// `frames` copied into mbufs of `pool`, as one burst.
///
/// # Panics
/// If the pool runs out or a frame does not fit an mbuf.
pub fn burst_of(pool: &'static Mempool, frames: &[Vec<u8>]) -> Burst {
    frames
        .iter()
        .map(|f| {
            let mut m = pool.alloc().unwrap();
            m.extend_from_slice(f).unwrap();
            m
        })
        .collect()
}

/// Locks a mutex, ignoring poisoning: a test that panicked while holding it has
/// already failed, and the data (plain frame lists) stays usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// State shared between a [`ScriptedPort`] and its [`ScriptHandle`]s.
#[derive(Debug)]
struct Script {
    rx: Mutex<VecDeque<Vec<u8>>>,
    tx: Mutex<Vec<Vec<u8>>>,
    link_up: AtomicBool,
    /// Most frames taken per `tx_burst`; `usize::MAX` for no limit.
    tx_capacity: AtomicUsize,
}

/// A scripted port: `rx_burst` delivers frames the test queued, in order, copied
/// into mbufs from a pool; `tx_burst` records a copy of every frame it takes.
///
/// Knobs, all settable through a [`ScriptHandle`] while a worker owns the port:
/// - a per-burst transmit capacity, to simulate a full queue (frames beyond it
///   stay in the burst, as the [`Port`] contract says);
/// - the link state; while the link is down `rx_burst` delivers nothing and the
///   queued frames wait. `tx_burst` still records, so tests can check that the
///   worker honours [`Port::link`].
///
/// A queued frame larger than an mbuf is dropped and counted as
/// [`DropReason::Malformed`]. If the pool is empty, the frame stays queued.
#[derive(Debug)]
pub struct ScriptedPort {
    pool: &'static Mempool,
    script: Arc<Script>,
    stats: Arc<QueueStats>,
}

/// Test-side access to a [`ScriptedPort`]: queue frames, read what was sent,
/// change the link state or the transmit capacity. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ScriptHandle {
    script: Arc<Script>,
    stats: Arc<QueueStats>,
}

impl ScriptedPort {
    /// A port with nothing queued, link up and no transmit limit, receiving into
    /// buffers from `pool`.
    pub fn new(pool: &'static Mempool) -> ScriptedPort {
        ScriptedPort {
            pool,
            script: Arc::new(Script {
                rx: Mutex::new(VecDeque::new()),
                tx: Mutex::new(Vec::new()),
                link_up: AtomicBool::new(true),
                tx_capacity: AtomicUsize::new(usize::MAX),
            }),
            stats: Arc::new(QueueStats::default()),
        }
    }

    /// Queues `frames` for receiving (builder form of [`ScriptHandle::push_rx`]).
    pub fn with_rx<I, F>(self, frames: I) -> ScriptedPort
    where
        I: IntoIterator<Item = F>,
        F: Into<Vec<u8>>,
    {
        {
            let mut rx = lock(&self.script.rx);
            rx.extend(frames.into_iter().map(Into::into));
        }
        self
    }

    /// Limits each `tx_burst` to `frames` frames (builder form of
    /// [`ScriptHandle::set_tx_capacity`]).
    pub fn with_tx_capacity(self, frames: usize) -> ScriptedPort {
        self.handle().set_tx_capacity(Some(frames));
        self
    }

    /// A handle that stays usable after the port is moved away.
    pub fn handle(&self) -> ScriptHandle {
        ScriptHandle {
            script: self.script.clone(),
            stats: self.stats.clone(),
        }
    }
}

impl ScriptHandle {
    /// Queues one frame for receiving.
    pub fn push_rx(&self, frame: impl Into<Vec<u8>>) {
        lock(&self.script.rx).push_back(frame.into());
    }

    /// Frames queued and not yet received.
    pub fn pending_rx(&self) -> usize {
        lock(&self.script.rx).len()
    }

    /// A copy of every frame transmitted so far, in order.
    pub fn transmitted(&self) -> Vec<Vec<u8>> {
        lock(&self.script.tx).clone()
    }

    /// Takes the frames transmitted so far, leaving the record empty.
    pub fn take_transmitted(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *lock(&self.script.tx))
    }

    /// Sets the link state the port reports.
    pub fn set_link(&self, state: LinkState) {
        // Relaxed: a flag polled by the port; no data is published with it.
        self.script
            .link_up
            .store(state == LinkState::Up, Ordering::Relaxed);
    }

    /// Limits each `tx_burst` to `frames` frames, or removes the limit with `None`.
    pub fn set_tx_capacity(&self, frames: Option<usize>) {
        // Relaxed: a setting polled by the port; no data is published with it.
        self.script
            .tx_capacity
            .store(frames.unwrap_or(usize::MAX), Ordering::Relaxed);
    }

    /// The port's counters.
    pub fn stats(&self) -> &Arc<QueueStats> {
        &self.stats
    }
}

impl Port for ScriptedPort {
    fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        if self.link() == LinkState::Down {
            return 0;
        }
        let mut rx = lock(&self.script.rx);
        let mut n = 0;
        while !burst.is_full() {
            let Some(frame) = rx.pop_front() else { break };
            let Some(mut m) = self.pool.alloc() else {
                rx.push_front(frame);
                break;
            };
            if m.extend_from_slice(&frame).is_err() {
                self.stats.drop_one(DropReason::Malformed);
                continue;
            }
            burst.push(m);
            n += 1;
        }
        n
    }

    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        // Relaxed: see `ScriptHandle::set_tx_capacity`.
        let cap = self.script.tx_capacity.load(Ordering::Relaxed);
        let n = burst.len().min(cap);
        let mut tx = lock(&self.script.tx);
        tx.extend(burst.drain(..n).map(|m| m.data().to_vec()));
        n
    }

    fn link(&self) -> LinkState {
        // Relaxed: see `ScriptHandle::set_link`.
        if self.script.link_up.load(Ordering::Relaxed) {
            LinkState::Up
        } else {
            LinkState::Down
        }
    }

    fn stats(&self) -> &Arc<QueueStats> {
        &self.stats
    }
}

/// A port whose transmitted frames come back on receive, in order, holding at
/// most `capacity` of them; `tx_burst` leaves whatever does not fit in the burst.
/// The mbufs themselves travel (no copy), so no pool is needed.
#[derive(Debug)]
pub struct LoopbackPort {
    queue: VecDeque<Mbuf>,
    capacity: usize,
    stats: Arc<QueueStats>,
}

impl LoopbackPort {
    /// A loopback holding up to `capacity` frames in flight.
    pub fn new(capacity: usize) -> LoopbackPort {
        LoopbackPort {
            queue: VecDeque::with_capacity(capacity),
            capacity,
            stats: Arc::new(QueueStats::default()),
        }
    }

    /// Frames transmitted and not yet received back.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }
}

impl Port for LoopbackPort {
    fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        let n = burst.remaining_capacity().min(self.queue.len());
        burst.extend(self.queue.drain(..n));
        n
    }

    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        let n = burst.len().min(self.capacity - self.queue.len());
        self.queue.extend(burst.drain(..n));
        n
    }

    fn stats(&self) -> &Arc<QueueStats> {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ethernet::EthFrame;

    #[test]
    fn frame_builders_are_byte_exact() {
        assert_eq!(mac(0x0102_0304), MacAddr([0x02, 0x00, 1, 2, 3, 4]));
        assert!(mac(7).is_unicast());
        let f = eth_frame(mac(1), mac(2), ethertype::ARP, 3);
        assert_eq!(f, [2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x06, 0, 1, 2]);
        let t = vlan_frame(mac(1), mac(2), VlanId(100), 2);
        assert_eq!(
            t,
            [2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x81, 0x00, 0x00, 0x64, 0x88, 0xb5, 0, 1]
        );
        let info = EthFrame::new_checked(&t[..]).unwrap().l2_info().unwrap();
        assert_eq!(info.vlan, VlanId(100));
        assert_eq!(info.ethertype, EXPERIMENTAL_ETHERTYPE);
    }

    #[test]
    fn scripted_rx_arrives_in_order() {
        let pool = Mempool::for_tests(64);
        let frames: Vec<Vec<u8>> = (0..40)
            .map(|i| eth_frame(mac(1), mac(i), ethertype::IPV4, 50))
            .collect();
        let mut port = ScriptedPort::new(pool).with_rx(frames.clone());
        let mut got = Vec::new();
        let mut burst = Burst::new();
        while port.rx_burst(&mut burst) > 0 {
            got.extend(burst.drain(..).map(|m| m.data().to_vec()));
        }
        assert_eq!(got, frames);
        assert_eq!(port.handle().pending_rx(), 0);
    }

    #[test]
    fn scripted_tx_is_recorded_after_the_port_moves_away() {
        let pool = Mempool::for_tests(16);
        let frames = vec![eth_frame(mac(1), mac(2), ethertype::IPV4, 10); 3];
        let mut port = ScriptedPort::new(pool);
        let h = port.handle();
        let mut burst = burst_of(pool, &frames);
        std::thread::spawn(move || assert_eq!(port.tx_burst(&mut burst), 3))
            .join()
            .unwrap();
        assert_eq!(h.transmitted(), frames);
        assert_eq!(h.take_transmitted().len(), 3);
        assert!(h.transmitted().is_empty());
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn scripted_tx_capacity_leaves_the_rest_in_the_burst() {
        let pool = Mempool::for_tests(16);
        let frames: Vec<Vec<u8>> = (0..5)
            .map(|i| eth_frame(mac(1), mac(i), ethertype::IPV4, 10))
            .collect();
        let mut port = ScriptedPort::new(pool).with_tx_capacity(2);
        let mut burst = burst_of(pool, &frames);
        assert_eq!(port.tx_burst(&mut burst), 2);
        assert_eq!(burst.len(), 3);
        assert_eq!(burst[0].data(), &frames[2][..]);
        port.handle().set_tx_capacity(None);
        assert_eq!(port.tx_burst(&mut burst), 3);
        assert_eq!(port.handle().transmitted(), frames);
    }

    #[test]
    fn scripted_link_down_holds_rx() {
        let pool = Mempool::for_tests(16);
        let port_frames = vec![eth_frame(mac(1), mac(2), ethertype::IPV4, 10)];
        let mut port = ScriptedPort::new(pool).with_rx(port_frames);
        let h = port.handle();
        h.set_link(LinkState::Down);
        assert_eq!(port.link(), LinkState::Down);
        let mut burst = Burst::new();
        assert_eq!(port.rx_burst(&mut burst), 0);
        h.set_link(LinkState::Up);
        assert_eq!(port.rx_burst(&mut burst), 1);
    }

    #[test]
    fn scripted_oversized_rx_is_dropped_as_malformed() {
        let pool = Mempool::for_tests(16);
        let ok = eth_frame(mac(1), mac(2), ethertype::IPV4, 10);
        let mut port = ScriptedPort::new(pool).with_rx([vec![0; 5000], ok.clone()]);
        let mut burst = Burst::new();
        assert_eq!(port.rx_burst(&mut burst), 1);
        assert_eq!(burst[0].data(), &ok[..]);
        assert_eq!(port.stats().drops(DropReason::Malformed), 1);
    }

    #[test]
    fn loopback_returns_tx_in_order_up_to_capacity() {
        let pool = Mempool::for_tests(16);
        let frames: Vec<Vec<u8>> = (0..5)
            .map(|i| eth_frame(mac(1), mac(i), ethertype::IPV4, 10))
            .collect();
        let mut port = LoopbackPort::new(4);
        let mut burst = burst_of(pool, &frames);
        assert_eq!(port.tx_burst(&mut burst), 4);
        assert_eq!(burst.len(), 1);
        assert_eq!(port.in_flight(), 4);
        let mut back = Burst::new();
        assert_eq!(port.rx_burst(&mut back), 4);
        let got: Vec<Vec<u8>> = back.iter().map(|m| m.data().to_vec()).collect();
        assert_eq!(got, frames[..4]);
    }
}

/// Checksum arithmetic (RFC 1071) for tests that check what the dataplane
/// wrote into frames. Written apart from `wire`'s own, plainly and slowly, so
/// that a mistake there cannot hide itself in the test that checks it.
pub mod inet {
    /// Sum of the 16-bit big-endian words of `bytes` (an odd last byte is
    /// padded with zero), carries not yet folded.
    pub fn sum16(bytes: &[u8]) -> u32 {
        bytes
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum()
    }

    /// Folds the carries of a [`sum16`] into 16 bits.
    pub fn fold(mut s: u32) -> u16 {
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    /// The TCP pseudo-header sum for untagged Ethernet frame `f` carrying
    /// IPv4 (`v6` false, 20-byte header) or IPv6, and a TCP segment of
    /// `l4_len` bytes.
    pub fn tcp_pseudo_sum(f: &[u8], v6: bool, l4_len: usize) -> u32 {
        let addrs = if v6 { &f[22..54] } else { &f[26..34] };
        sum16(addrs) + 6 + l4_len as u32
    }
}

/// xorshift64: deterministic, dependency-free noise for fuzz-style and
/// property tests. The seed must not be 0.
#[derive(Debug, Clone)]
pub struct XorShift(pub u64);

impl XorShift {
    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}
