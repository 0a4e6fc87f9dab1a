//! Proves the packet path allocates nothing on the heap in steady state: a worker
//! switches learned unicast traffic between two generator/sink ports while a
//! counting global allocator watches every thread of the process.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::ids::{BridgeId, MacAddr, PortId, QueueId, WorkerId};
use dataplane::switch::{Bridge, Fdb, FdbConfig, PortEntry, Switch};
use dataplane::worker::{WorkerConfig, WorkerHandle};
use dataplane::{Burst, Mempool, Port, QueueStats};

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Receives a full burst of frames from `me` to `peer` each poll; drops what it is
/// given to send.
struct GenSink {
    pool: &'static Mempool,
    frame: [u8; 64],
    stats: Arc<QueueStats>,
}

impl Port for GenSink {
    fn rx_burst(&mut self, b: &mut Burst) -> usize {
        let mut n = 0;
        while !b.is_full() {
            let Some(mut m) = self.pool.alloc() else {
                break;
            };
            m.extend_from_slice(&self.frame).expect("fits");
            b.push(m);
            n += 1;
        }
        n
    }
    fn tx_burst(&mut self, b: &mut Burst) -> usize {
        let n = b.len();
        b.clear();
        n
    }
    fn stats(&self) -> &Arc<QueueStats> {
        &self.stats
    }
}

fn gen(pool: &'static Mempool, me: MacAddr, peer: MacAddr) -> (GenSink, Arc<QueueStats>) {
    let mut frame = [0u8; 64];
    frame[..6].copy_from_slice(&peer.0);
    frame[6..12].copy_from_slice(&me.0);
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
    let stats = Arc::new(QueueStats::default());
    (
        GenSink {
            pool,
            frame,
            stats: stats.clone(),
        },
        stats,
    )
}

#[test]
fn steady_state_switching_allocates_nothing() {
    let pool = Mempool::for_tests(4096);
    let sw = Switch::new();
    sw.update(|t| {
        t.bridges.push(Some(Bridge {
            id: BridgeId(0),
            name: "br0".into(),
            ports: vec![PortId(0), PortId(1)],
            fdb: Arc::new(Fdb::new(&FdbConfig::default())),
        }));
        for i in 0..2 {
            let e = PortEntry::new(PortId(i), &format!("p{i}"), Some(BridgeId(0)), WorkerId(0));
            t.ports.push(Some(Arc::new(e)));
        }
    });
    let w = WorkerHandle::spawn(
        WorkerConfig {
            id: WorkerId(0),
            cpu: None,
            idle_sleep_us: 0,
        },
        sw.clone(),
    )
    .unwrap();
    let (a, b) = (MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
    let (pa, sa) = gen(pool, a, b);
    let (pb, sb) = gen(pool, b, a);
    w.add_queue(PortId(0), QueueId(0), Box::new(pa)).unwrap();
    w.add_queue(PortId(1), QueueId(0), Box::new(pb)).unwrap();

    // Warm up: learning, thread caches, link state, table generation.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sb.tx_packets.get() < 100_000 || sa.tx_packets.get() < 100_000 {
        assert!(Instant::now() < deadline, "no traffic: {:?}", sa.snapshot());
        std::thread::sleep(Duration::from_millis(10));
    }
    let before_pkts = sa.tx_packets.get() + sb.tx_packets.get();
    let drops = || sa.snapshot().total_drops() + sb.snapshot().total_drops();
    let before_drops = drops();
    let before = ALLOCS.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(500));
    let after = ALLOCS.load(Ordering::SeqCst);
    let moved = sa.tx_packets.get() + sb.tx_packets.get() - before_pkts;
    let window_drops = drops() - before_drops;
    w.stop();
    assert!(moved > 10_000, "only {moved} packets moved in the window");
    assert_eq!(
        after - before,
        0,
        "{} heap allocations while switching {moved} packets",
        after - before
    );
    // Learned unicast in both directions with both links up: nothing dropped.
    // (Before the first housekeeping round publishes link state, frames to the
    // not-yet-up peer are counted as port-down drops; that is outside the window.)
    assert_eq!(window_drops, 0);
}
