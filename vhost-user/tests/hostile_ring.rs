//! A hostile guest's rings: descriptor chains built to make weir walk far more
//! descriptors than they carry data. Each test drives `SplitRing` the way a
//! guest driver would (descriptors, available ring and index written into
//! guest memory) at the largest queue size weir accepts, and checks what the
//! walk costs ([`Completed::descs_walked`], a count of descriptors read, not a
//! time) against the bounds [`MAX_FRAME_DESCS`] and [`BURST_DESC_BUDGET`],
//! and that a frame refused for them is dropped and counted as
//! `chain-too-long`.

use std::sync::{Arc, OnceLock};

use dataplane::{Burst, DropReason, Mempool, QueueStats};
use vhost_user::defs::{DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE, NET_HDR_BYTES};
use vhost_user::guest_mem::{GuestAddr, GuestMemory};
use vhost_user::testguest;
use vhost_user::vring::{
    Completed, Cursor, Offload, RingAddrs, SplitRing, BURST_DESC_BUDGET, MAX_FRAME_DESCS,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// The largest queue size weir accepts from a frontend.
const SIZE: u16 = 1024;
const DESC: u64 = 0;
const AVAIL: u64 = 0x4000;
const USED: u64 = 0x5000;
/// Frame buffers.
const BUF: u64 = 0x10000;
/// An indirect table of up to `SIZE` entries.
const TABLE: u64 = 0x20000;
const MEM_BYTES: usize = 0x40000;

/// What one poll may read at most: the budget, plus the frame that crosses
/// it, walked twice (see `Completed::descs_walked`).
const POLL_BOUND: u32 = BURST_DESC_BUDGET + 2 * (MAX_FRAME_DESCS + 2);

fn pool() -> &'static Mempool {
    static POOL: OnceLock<&'static Mempool> = OnceLock::new();
    POOL.get_or_init(|| Mempool::for_tests(256))
}

struct Guest {
    gm: Arc<GuestMemoryMmap>,
    ring: SplitRing,
    avail_idx: u16,
}

impl Guest {
    fn new(indirect: bool) -> Guest {
        let gm = Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_BYTES)]).unwrap());
        let mem = Arc::new(GuestMemory::new(Arc::clone(&gm)));
        let addrs = RingAddrs {
            desc: GuestAddr(DESC),
            avail: GuestAddr(AVAIL),
            used: GuestAddr(USED),
        };
        let ring = SplitRing::new(&mem, addrs, SIZE, false, indirect).unwrap();
        Guest {
            gm,
            ring,
            avail_idx: 0,
        }
    }

    fn desc_at(&self, table: u64, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let b = testguest::desc_bytes(addr, len, flags, next);
        self.gm
            .write_slice(&b, GuestAddress(table + 16 * u64::from(i)))
            .unwrap();
    }

    /// Makes `n` chains starting at `head` available (the same head may be
    /// offered many times: nothing in the ring forbids it).
    fn push(&mut self, head: u16, n: usize) {
        for _ in 0..n {
            let slot = u64::from(self.avail_idx % SIZE);
            self.gm
                .write_obj(head, GuestAddress(AVAIL + 4 + 2 * slot))
                .unwrap();
            self.avail_idx = self.avail_idx.wrapping_add(1);
        }
        self.gm
            .write_obj(self.avail_idx, GuestAddress(AVAIL + 2))
            .unwrap();
    }

    fn used_idx(&self) -> u16 {
        self.gm.read_obj(GuestAddress(USED + 2)).unwrap()
    }

    fn used_len(&self, i: u16) -> u32 {
        let at = USED + 4 + 8 * u64::from(i % SIZE) + 4;
        self.gm.read_obj(GuestAddress(at)).unwrap()
    }

    /// A TX chain at `head`: the 12-byte header, `zeros` zero-length
    /// descriptors, then a 60-byte frame. In the descriptor table, or with
    /// `indirect`, in a table that the descriptor at `head` points to.
    fn tx_chain(&self, head: u16, zeros: u16, indirect: bool) -> Vec<u8> {
        let f = frame(60);
        self.gm
            .write_slice(&[0u8; NET_HDR_BYTES], GuestAddress(BUF))
            .unwrap();
        self.gm.write_slice(&f, GuestAddress(BUF + 0x100)).unwrap();
        let (table, first) = if indirect {
            let n = u32::from(zeros) + 2;
            self.desc_at(DESC, head, TABLE, 16 * n, DESC_F_INDIRECT, 0);
            (TABLE, 0)
        } else {
            (DESC, head)
        };
        self.desc_at(
            table,
            first,
            BUF,
            NET_HDR_BYTES as u32,
            DESC_F_NEXT,
            first + 1,
        );
        for i in 1..=zeros {
            self.desc_at(table, first + i, BUF, 0, DESC_F_NEXT, first + i + 1);
        }
        self.desc_at(table, first + zeros + 1, BUF + 0x100, 60, 0, 0);
        f
    }

    /// Guest TX: one poll of the ring.
    fn dequeue(&self, cur: &mut Cursor, stats: &QueueStats) -> (Completed, Vec<Vec<u8>>) {
        let mut burst = Burst::new();
        let done = self
            .ring
            .dequeue(cur, pool(), &mut burst, Offload::default(), None, stats);
        (done, burst.iter().map(|m| m.data().to_vec()).collect())
    }
}

fn frame(n: usize) -> Vec<u8> {
    let mut f: Vec<u8> = (0..n).map(|i| i as u8).collect();
    f[12] = 0x08;
    f[13] = 0x00;
    f
}

/// A chain that goes on inside an indirect table used to start the count
/// afresh there (the queue size for the direct part, again for the table);
/// zero-length descriptors were walked like any other. One frame spread over
/// more than `MAX_FRAME_DESCS` descriptors, direct, indirect or both, is now
/// refused after reading at most that many, and counted.
#[test]
fn a_chain_over_the_frame_limit_is_dropped_after_reading_the_limit() {
    // (direct zero-length descriptors, indirect ones)
    for (direct, in_table) in [(300u16, 1000u16), (1000, 0), (0, SIZE - 2)] {
        let mut g = Guest::new(true);
        let mut cur = Cursor::default();
        // The direct part: header, zero-length descriptors, and either the
        // frame or a pointer to a table holding more of the same.
        g.gm.write_slice(&frame(60), GuestAddress(BUF + 0x100))
            .unwrap();
        g.desc_at(DESC, 0, BUF, NET_HDR_BYTES as u32, DESC_F_NEXT, 1);
        for i in 1..=direct {
            g.desc_at(DESC, i, BUF, 0, DESC_F_NEXT, i + 1);
        }
        if in_table > 0 {
            let n = u32::from(in_table) + 1;
            g.desc_at(DESC, direct + 1, TABLE, 16 * n, DESC_F_INDIRECT, 0);
            for i in 0..in_table {
                g.desc_at(TABLE, i, BUF, 0, DESC_F_NEXT, i + 1);
            }
            g.desc_at(TABLE, in_table, BUF + 0x100, 60, 0, 0);
        } else {
            g.desc_at(DESC, direct + 1, BUF + 0x100, 60, 0, 0);
        }
        g.push(0, 1);
        let stats = QueueStats::default();
        let (done, frames) = g.dequeue(&mut cur, &stats);
        let what = format!("{direct} direct and {in_table} indirect zero-length descriptors");
        assert_eq!((done.frames, done.fault), (0, None), "{what}: {frames:?}");
        assert!(
            done.descs_walked <= MAX_FRAME_DESCS + 2,
            "{what}: {} descriptors read",
            done.descs_walked
        );
        assert_eq!(stats.drops(DropReason::ChainTooLong), 1, "{what}");
        assert_eq!(stats.snapshot().total_drops(), 1, "{what}");
        // The chain is returned to the guest, empty.
        assert_eq!((g.used_idx(), g.used_len(0)), (1, 0), "{what}");
    }
}

/// A frame of exactly `MAX_FRAME_DESCS` descriptors (zero-length ones
/// included) is a frame, direct or indirect.
#[test]
fn a_chain_at_the_frame_limit_is_received() {
    for indirect in [false, true] {
        let mut g = Guest::new(indirect);
        let mut cur = Cursor::default();
        let zeros = MAX_FRAME_DESCS as u16 - 2;
        let f = g.tx_chain(0, zeros, indirect);
        g.push(0, 1);
        let stats = QueueStats::default();
        let (done, frames) = g.dequeue(&mut cur, &stats);
        assert_eq!((done.fault, frames), (None, vec![f]), "indirect {indirect}");
        assert_eq!(stats.snapshot().total_drops(), 0);
    }
}

/// Chains of many zero-length descriptors, each a valid frame, offered for a
/// whole burst: one poll used to walk all of them (32 × 256 descriptors).
/// Now a poll stops taking chains once it has read `BURST_DESC_BUDGET`
/// descriptors; the rest are taken by the next polls, none lost.
#[test]
fn one_poll_reads_at_most_the_burst_budget() {
    let mut g = Guest::new(false);
    let mut cur = Cursor::default();
    let f = g.tx_chain(0, MAX_FRAME_DESCS as u16 - 2, false);
    let offered = 96;
    g.push(0, offered);
    let stats = QueueStats::default();
    let mut got = 0;
    let mut polls = 0;
    while got < offered {
        let (done, frames) = g.dequeue(&mut cur, &stats);
        assert_eq!(done.fault, None);
        assert!(
            done.descs_walked <= POLL_BOUND,
            "poll {polls}: {} descriptors read",
            done.descs_walked
        );
        assert!(frames.iter().all(|x| *x == f));
        assert!(!frames.is_empty(), "poll {polls} made no progress");
        got += frames.len();
        polls += 1;
    }
    assert_eq!(got, offered);
    // 4 frames of 256 descriptors spend the budget.
    assert_eq!(
        polls,
        offered / (BURST_DESC_BUDGET / MAX_FRAME_DESCS) as usize
    );
    assert_eq!(stats.snapshot().total_drops(), 0);
    assert_eq!(g.used_idx(), offered as u16);
}

/// Guest RX with mergeable buffers, where no chain holds a byte: a frame
/// used to walk every chain offered (each as long as the queue), find no
/// room, roll back and leave the ring as it was, so that every poll did it
/// all again. Now a frame that has taken `MAX_FRAME_DESCS` descriptors is
/// dropped and counted, the chains it took are returned (empty), and a poll
/// reads at most the burst budget.
#[test]
fn rx_chains_that_never_hold_a_frame_cost_a_bounded_walk_and_are_used_up() {
    // (zero-length writable descriptors per chain, chains offered)
    for (len, offered) in [(SIZE - 24, 64), (1, usize::from(SIZE))] {
        let mut g = Guest::new(false);
        let mut cur = Cursor::default();
        let heads: Vec<u16> = if len == 1 {
            // Every descriptor a chain of its own.
            for i in 0..SIZE {
                g.desc_at(DESC, i, BUF, 0, DESC_F_WRITE, 0);
            }
            (0..SIZE).collect()
        } else {
            // One long chain, offered over and over.
            for i in 0..len {
                let last = i + 1 == len;
                let flags = DESC_F_WRITE | if last { 0 } else { DESC_F_NEXT };
                g.desc_at(DESC, i, BUF, 0, flags, i + 1);
            }
            vec![0; offered]
        };
        for h in &heads {
            g.push(*h, 1);
        }
        let what = format!("chains of {len} zero-length descriptors");
        let stats = QueueStats::default();
        let mut polls = 0;
        let mut dropped = 0;
        loop {
            let mut burst = Burst::new();
            for _ in 0..32 {
                let mut m = pool().alloc().unwrap();
                m.extend_from_slice(&frame(60)).unwrap();
                burst.push(m);
            }
            let done = g.ring.enqueue(
                &mut cur,
                &mut burst,
                true,
                Offload::default(),
                usize::MAX,
                &stats,
            );
            assert_eq!(done.fault, None, "{what}");
            assert!(
                done.descs_walked <= POLL_BOUND,
                "{what}, poll {polls}: {} descriptors read",
                done.descs_walked
            );
            polls += 1;
            if done.frames == 0 {
                // What is left cannot hold a frame and is too short to be
                // refused: the frame waits, having read less than a frame's
                // limit.
                assert!(done.descs_walked <= MAX_FRAME_DESCS + 1, "{what}");
                break;
            }
            dropped += done.frames;
            assert!(polls < 100, "{what}: no end");
        }
        assert_eq!(
            stats.drops(DropReason::ChainTooLong),
            dropped as u64,
            "{what}"
        );
        assert_eq!(stats.snapshot().total_drops(), dropped as u64, "{what}");
        assert!(dropped > 0, "{what}: nothing refused");
        // Every chain taken went back empty.
        let used = g.used_idx();
        assert!(
            usize::from(used) + (MAX_FRAME_DESCS as usize) >= offered,
            "{what}"
        );
        assert!((0..used).all(|i| g.used_len(i) == 0), "{what}");
    }
}
