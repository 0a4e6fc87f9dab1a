//! In-memory ports: a virtual wire between two ports ([`RingPort`],
//! [`ring_pair`]), a discard sink ([`NullPort`]) and a traffic source
//! ([`GenPort`]).
//!
//! Layer: ports. Depends on `dataplane` only. On the packet path: these are what
//! benchmarks and multi-worker tests run the real switch and workers over, so
//! they follow the packet-path rules (no heap allocation, locks or syscalls per
//! burst). No unsafe code.

use std::sync::Arc;

use dataplane::ids::MacAddr;
use dataplane::ring::Ring;
use dataplane::stats::Counter;
use dataplane::wire::ethernet;
use dataplane::{Burst, Mbuf, Mempool, Port, QueueStats};

/// One end of an in-memory link: receives from one ring and transmits into
/// another. The rings are MPMC, so the two ends may live on different threads
/// (and several ports may even share a ring).
///
/// A full transmit ring leaves the frames that did not fit in the burst, like a
/// full NIC queue; the port counts nothing itself (the worker counts `TxFull`).
#[derive(Debug)]
pub struct RingPort {
    rx: Arc<Ring<Mbuf>>,
    tx: Arc<Ring<Mbuf>>,
    stats: Arc<QueueStats>,
}

impl RingPort {
    /// A port that receives from `rx` and transmits into `tx`.
    pub fn new(rx: Arc<Ring<Mbuf>>, tx: Arc<Ring<Mbuf>>) -> RingPort {
        RingPort {
            rx,
            tx,
            stats: Arc::new(QueueStats::default()),
        }
    }

    /// The ring this port receives from.
    pub fn rx_ring(&self) -> &Arc<Ring<Mbuf>> {
        &self.rx
    }

    /// The ring this port transmits into.
    pub fn tx_ring(&self) -> &Arc<Ring<Mbuf>> {
        &self.tx
    }
}

/// Two ports joined back to back: what `a` transmits, `b` receives, and the
/// other way round. Each direction holds up to `capacity` frames (rounded up to
/// a power of two).
///
/// # Panics
/// If `capacity` is 0 or above 2^30 (see [`Ring::new`]).
pub fn ring_pair(capacity: usize) -> (RingPort, RingPort) {
    let a_to_b = Arc::new(Ring::new(capacity));
    let b_to_a = Arc::new(Ring::new(capacity));
    let a = RingPort::new(b_to_a.clone(), a_to_b.clone());
    let b = RingPort::new(a_to_b, b_to_a);
    (a, b)
}

impl Port for RingPort {
    #[inline]
    fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        self.rx.dequeue_burst(burst, burst.remaining_capacity())
    }

    #[inline]
    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        self.tx.enqueue_burst(burst)
    }

    fn stats(&self) -> &Arc<QueueStats> {
        &self.stats
    }
}

/// A port that never receives and takes every frame offered for transmission,
/// returning its buffer to the pool at once.
///
/// The worker counts what it transmits to the port in [`Port::stats`]; the sink
/// also keeps its own total ([`NullPort::discarded`]), readable through
/// [`NullPort::discard_counter`] after the port is moved into a worker.
#[derive(Debug, Default)]
pub struct NullPort {
    discarded: Arc<Counter>,
    stats: Arc<QueueStats>,
}

impl NullPort {
    /// A new sink.
    pub fn new() -> NullPort {
        NullPort::default()
    }

    /// Frames discarded so far.
    pub fn discarded(&self) -> u64 {
        self.discarded.get()
    }

    /// A shared handle on the discard total.
    pub fn discard_counter(&self) -> Arc<Counter> {
        self.discarded.clone()
    }
}

/// Empties `burst`, freeing its buffers; returns how many there were.
#[inline]
fn discard(burst: &mut Burst, counter: &Counter) -> usize {
    let n = burst.len();
    burst.clear();
    counter.add(n as u64);
    n
}

impl Port for NullPort {
    #[inline]
    fn rx_burst(&mut self, _burst: &mut Burst) -> usize {
        0
    }

    #[inline]
    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        discard(burst, &self.discarded)
    }

    fn stats(&self) -> &Arc<QueueStats> {
        &self.stats
    }
}

/// Settings of a [`GenPort`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenConfig {
    /// Number of distinct source MACs to cycle through. Frame `i` carries the
    /// template's source MAC plus `i % n_src_macs` (as a 48-bit number). 0 and 1
    /// both leave the template's source MAC alone.
    pub n_src_macs: u32,
    /// Number of distinct destination MACs, cycled in the same way. Source and
    /// destination cycle independently, so coprime counts give
    /// `n_src_macs * n_dst_macs` distinct flows.
    pub n_dst_macs: u32,
    /// Stop after this many frames (`None`: generate for ever).
    pub max_frames: Option<u64>,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            n_src_macs: 1,
            n_dst_macs: 1,
            max_frames: None,
        }
    }
}

/// Errors creating a [`GenPort`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenError {
    /// The template does not fit in one buffer of the pool.
    #[error("template frame of {len_bytes} bytes exceeds the pool's {room_bytes}-byte buffers")]
    TemplateTooLarge {
        /// Template length.
        len_bytes: usize,
        /// Data room of one buffer.
        room_bytes: usize,
    },
    /// MAC cycling was asked for but the template has no Ethernet header.
    #[error("template frame of {len_bytes} bytes is shorter than an Ethernet header, cannot vary its MACs")]
    TemplateTooShort {
        /// Template length.
        len_bytes: usize,
    },
}

/// A traffic source: every `rx_burst` fills the burst with copies of a template
/// frame, taken from a pool, optionally varying the MAC addresses so the switch
/// sees many flows. `tx_burst` discards, like [`NullPort`].
///
/// When the pool runs dry the burst is simply shorter (the pool counts the
/// failed allocation); nothing is lost, since the source has no queue.
#[derive(Debug)]
pub struct GenPort {
    pool: &'static Mempool,
    template: Box<[u8]>,
    src_base: u64,
    dst_base: u64,
    n_src: u64,
    n_dst: u64,
    src_i: u64,
    dst_i: u64,
    remaining: u64,
    generated: Arc<Counter>,
    discarded: Counter,
    stats: Arc<QueueStats>,
}

impl GenPort {
    /// A source of copies of `template` (a whole Ethernet frame, no FCS) in
    /// buffers from `pool`.
    ///
    /// # Errors
    /// [`GenError`] if the template does not fit a buffer, or is too short to
    /// carry MACs while `cfg` asks to vary them.
    pub fn new(
        pool: &'static Mempool,
        template: &[u8],
        cfg: GenConfig,
    ) -> Result<GenPort, GenError> {
        let room_bytes = pool.data_room() as usize;
        if template.len() > room_bytes {
            return Err(GenError::TemplateTooLarge {
                len_bytes: template.len(),
                room_bytes,
            });
        }
        let n_src = u64::from(cfg.n_src_macs.max(1));
        let n_dst = u64::from(cfg.n_dst_macs.max(1));
        let (mut src_base, mut dst_base) = (0, 0);
        if n_src > 1 || n_dst > 1 {
            let eth = ethernet::EthFrame::new_checked(template).map_err(|_| {
                GenError::TemplateTooShort {
                    len_bytes: template.len(),
                }
            })?;
            src_base = eth.src().to_u64();
            dst_base = eth.dst().to_u64();
        }
        Ok(GenPort {
            pool,
            template: template.into(),
            src_base,
            dst_base,
            n_src,
            n_dst,
            src_i: 0,
            dst_i: 0,
            remaining: cfg.max_frames.unwrap_or(u64::MAX),
            generated: Arc::new(Counter::default()),
            discarded: Counter::default(),
            stats: Arc::new(QueueStats::default()),
        })
    }

    /// Frames generated so far.
    pub fn generated(&self) -> u64 {
        self.generated.get()
    }

    /// A shared handle on the generated total, readable after the port is moved
    /// into a worker.
    pub fn generated_counter(&self) -> Arc<Counter> {
        self.generated.clone()
    }

    /// Frames taken by `tx_burst` and discarded so far.
    pub fn discarded(&self) -> u64 {
        self.discarded.get()
    }

    /// Writes the next source and destination MACs into `frame`, a copy of the
    /// template at least an Ethernet header long.
    #[inline]
    fn stamp_macs(&mut self, frame: &mut [u8]) {
        let mut eth = ethernet::EthFrame::new_unchecked(frame);
        if self.n_src > 1 {
            eth.set_src(MacAddr::from_u64(self.src_base.wrapping_add(self.src_i)));
            self.src_i = (self.src_i + 1) % self.n_src;
        }
        if self.n_dst > 1 {
            eth.set_dst(MacAddr::from_u64(self.dst_base.wrapping_add(self.dst_i)));
            self.dst_i = (self.dst_i + 1) % self.n_dst;
        }
    }
}

impl Port for GenPort {
    fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        let want = (burst.remaining_capacity() as u64).min(self.remaining) as usize;
        let mut n = 0;
        while n < want {
            let Some(mut m) = self.pool.alloc() else {
                break;
            };
            // Cannot fail: `new` checked the template against the pool's data room.
            if m.extend_from_slice(&self.template).is_err() {
                break;
            }
            self.stamp_macs(m.data_mut());
            burst.push(m);
            n += 1;
        }
        self.remaining -= n as u64;
        self.generated.add(n as u64);
        n
    }

    #[inline]
    fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        discard(burst, &self.discarded)
    }

    fn stats(&self) -> &Arc<QueueStats> {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::mempool::flush_thread_caches;
    use dataplane::testutil::{eth_frame, mac};
    use dataplane::wire::ethertype;
    use dataplane::wire::EthFrame;
    use std::collections::HashSet;

    fn burst_of(pool: &'static Mempool, n: usize, tag: u32) -> Burst {
        (0..n)
            .map(|i| {
                let mut m = pool.alloc().unwrap();
                m.extend_from_slice(&eth_frame(mac(1), mac(tag + i as u32), ethertype::IPV4, 46))
                    .unwrap();
                m
            })
            .collect()
    }

    #[test]
    fn ring_pair_carries_frames_both_ways() {
        let pool = Mempool::for_tests(64);
        let (mut a, mut b) = ring_pair(16);
        let mut burst = burst_of(pool, 3, 10);
        assert_eq!(a.tx_burst(&mut burst), 3);
        let mut got = Burst::new();
        assert_eq!(b.rx_burst(&mut got), 3);
        assert_eq!(EthFrame::new_checked(got[2].data()).unwrap().src(), mac(12));
        assert_eq!(a.rx_burst(&mut Burst::new()), 0);
        assert_eq!(b.tx_burst(&mut got), 3);
        assert_eq!(a.rx_burst(&mut burst), 3);
        assert!(Arc::ptr_eq(a.tx_ring(), b.rx_ring()));
    }

    #[test]
    fn ring_pair_delivers_in_order_across_threads_and_returns_every_buffer() {
        const FRAMES: u32 = 100_000;
        let pool = Mempool::for_tests(1024);
        let start = pool.available();
        let (mut a, mut b) = ring_pair(256);
        let sender = std::thread::spawn(move || {
            let mut sent = 0u32;
            let mut burst = Burst::new();
            while sent < FRAMES || !burst.is_empty() {
                while sent < FRAMES && !burst.is_full() {
                    let Some(mut m) = pool.alloc() else { break };
                    m.extend_from_slice(&sent.to_be_bytes()).unwrap();
                    burst.push(m);
                    sent += 1;
                }
                if a.tx_burst(&mut burst) == 0 {
                    std::thread::yield_now();
                }
            }
            flush_thread_caches();
            a
        });
        let receiver = std::thread::spawn(move || {
            let mut next = 0u32;
            let mut burst = Burst::new();
            while next < FRAMES {
                if b.rx_burst(&mut burst) == 0 {
                    std::thread::yield_now();
                }
                for m in burst.drain(..) {
                    assert_eq!(m.data(), next.to_be_bytes(), "frame out of order");
                    next += 1;
                }
            }
            flush_thread_caches();
            b
        });
        let a = sender.join().unwrap();
        let b = receiver.join().unwrap();
        assert!(a.tx_ring().is_empty());
        drop((a, b));
        flush_thread_caches();
        assert_eq!(pool.available(), start);
    }

    #[test]
    fn full_ring_leaves_frames_in_the_burst() {
        let pool = Mempool::for_tests(64);
        let (mut a, mut b) = ring_pair(4);
        let mut burst = burst_of(pool, 6, 0);
        assert_eq!(a.tx_burst(&mut burst), 4);
        assert_eq!(burst.len(), 2);
        assert_eq!(
            EthFrame::new_checked(burst[0].data()).unwrap().src(),
            mac(4)
        );
        assert_eq!(a.tx_burst(&mut burst), 0);
        let mut got = Burst::new();
        assert_eq!(b.rx_burst(&mut got), 4);
        assert_eq!(a.tx_burst(&mut burst), 2);
        drop((got, burst, a, b));
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn null_port_frees_everything() {
        let pool = Mempool::for_tests(64);
        let start = pool.available();
        let mut port = NullPort::new();
        let total = port.discard_counter();
        let mut burst = burst_of(pool, 20, 0);
        assert_eq!(pool.available(), start - 20);
        assert_eq!(port.tx_burst(&mut burst), 20);
        assert!(burst.is_empty());
        assert_eq!(pool.available(), start);
        assert_eq!(port.rx_burst(&mut burst), 0);
        assert_eq!((port.discarded(), total.get()), (20, 20));
    }

    #[test]
    fn gen_port_cycles_source_and_destination_macs() {
        let pool = Mempool::for_tests(256);
        let template = eth_frame(mac(0x100), mac(0x200), ethertype::IPV4, 50);
        let cfg = GenConfig {
            n_src_macs: 3,
            n_dst_macs: 2,
            max_frames: Some(40),
        };
        let mut port = GenPort::new(pool, &template, cfg).unwrap();
        let mut burst = Burst::new();
        assert_eq!(port.rx_burst(&mut burst), 32);
        let mut flows = HashSet::new();
        for (i, m) in burst.iter().enumerate() {
            let f = EthFrame::new_checked(m.data()).unwrap();
            assert_eq!(f.src(), mac(0x200 + (i % 3) as u32));
            assert_eq!(f.dst(), mac(0x100 + (i % 2) as u32));
            assert_eq!(f.payload(), &template[14..]);
            flows.insert((f.src(), f.dst()));
        }
        assert_eq!(flows.len(), 6);
        assert_eq!(port.tx_burst(&mut burst), 32);
        assert_eq!(port.rx_burst(&mut burst), 8, "stops at max_frames");
        assert_eq!(port.rx_burst(&mut burst), 0);
        assert_eq!(port.generated(), 40);
        drop(burst);
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn gen_port_without_cycling_copies_the_template_and_stops_when_the_pool_is_dry() {
        let pool = Mempool::for_tests(10);
        let template = [0xabu8; 9];
        let mut port = GenPort::new(pool, &template, GenConfig::default()).unwrap();
        let mut burst = Burst::new();
        assert_eq!(port.rx_burst(&mut burst), 10);
        assert!(burst.iter().all(|m| m.data() == template));
        assert_eq!(port.rx_burst(&mut burst), 0);
    }

    #[test]
    fn gen_port_rejects_unusable_templates() {
        let pool = Mempool::for_tests(4);
        assert_eq!(
            GenPort::new(pool, &[0; 3000], GenConfig::default()).unwrap_err(),
            GenError::TemplateTooLarge {
                len_bytes: 3000,
                room_bytes: 2048
            }
        );
        let cfg = GenConfig {
            n_src_macs: 2,
            ..GenConfig::default()
        };
        assert_eq!(
            GenPort::new(pool, &[0; 9], cfg).unwrap_err(),
            GenError::TemplateTooShort { len_bytes: 9 }
        );
    }
}
