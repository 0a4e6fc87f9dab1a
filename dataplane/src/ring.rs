//! Bounded lock-free MPMC ring with burst enqueue and dequeue, for moving buffer
//! handles between cores.
//!
//! Layer: buffers. On the packet path (workers hand mbufs to each other and the
//! mempool keeps its shared free list here). No allocation after `new`.
//!
//! The algorithm is the classic head/tail reservation ring (as in DPDK's
//! `rte_ring` or the FreeBSD `buf_ring`): a producer reserves `n` slots by moving
//! `prod.head` with one compare-exchange, writes them, then waits for earlier
//! producers and publishes by moving `prod.tail`. Consumers mirror it. A burst costs
//! one CAS and one release store, not one per item, which is why this is our own
//! code rather than `crossbeam::ArrayQueue` (one CAS per element, no bulk operation).
//! The cost: a producer preempted between reserving and publishing stalls later
//! producers until it runs again, so rings are only shared by pinned workers and
//! the control thread, never by unbounded numbers of threads.
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU32, Ordering};

use arrayvec::ArrayVec;
use crossbeam_utils::CachePadded;

struct HeadTail {
    head: AtomicU32,
    tail: AtomicU32,
}

/// A bounded multi-producer multi-consumer FIFO of `T`.
///
/// Indices are free-running `u32`s; slot = index & mask. Invariant: for the
/// published window, `cons.tail <= cons.head <= prod.tail <= prod.head <=
/// cons.tail + capacity` (mod 2^32), and slots in `[cons.tail, prod.tail)` hold
/// initialised values owned by the ring.
pub struct Ring<T> {
    prod: CachePadded<HeadTail>,
    cons: CachePadded<HeadTail>,
    mask: u32,
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
}

// SAFETY: values of `T` move between threads through the ring, so `T: Send` is
// required and sufficient; slot access is serialised by the head/tail protocol
// (each slot index is reserved by exactly one producer or consumer at a time).
unsafe impl<T: Send> Send for Ring<T> {}
// SAFETY: as above; all shared mutation goes through atomics or reserved slots.
unsafe impl<T: Send> Sync for Ring<T> {}

impl<T> Ring<T> {
    /// A ring holding up to `capacity` items, rounded up to a power of two.
    ///
    /// # Panics
    /// If `capacity` is 0 or above 2^30.
    pub fn new(capacity: usize) -> Ring<T> {
        assert!(
            capacity > 0 && capacity <= 1 << 30,
            "ring capacity {capacity}"
        );
        let cap = capacity.next_power_of_two();
        let slots = (0..cap)
            .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
            .collect::<Vec<_>>()
            .into_boxed_slice();
        Ring {
            prod: CachePadded::new(HeadTail {
                head: AtomicU32::new(0),
                tail: AtomicU32::new(0),
            }),
            cons: CachePadded::new(HeadTail {
                head: AtomicU32::new(0),
                tail: AtomicU32::new(0),
            }),
            mask: (cap - 1) as u32,
            slots,
        }
    }

    /// Maximum number of items.
    pub fn capacity(&self) -> usize {
        self.mask as usize + 1
    }

    /// Items in the ring now (a snapshot; exact only when quiescent).
    pub fn len(&self) -> usize {
        // Relaxed: a statistic, not used to access slots.
        let t = self.prod.tail.load(Ordering::Relaxed);
        let h = self.cons.tail.load(Ordering::Relaxed);
        (t.wrapping_sub(h) as usize).min(self.capacity())
    }

    /// True if the ring held nothing at the time of the call.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reserves up to `want` slots on one side of the ring: `me` is the side
    /// reserving (producers or consumers), `other` the opposite side, and
    /// `room(my_head, other_tail)` how many slots that side may take. Returns
    /// (start index, count).
    #[inline]
    fn reserve(
        &self,
        me: &HeadTail,
        other: &HeadTail,
        want: u32,
        room: impl Fn(u32, u32) -> u32,
    ) -> (u32, u32) {
        // Relaxed: the CAS below validates the value we build on.
        let mut head = me.head.load(Ordering::Relaxed);
        loop {
            // Acquire: pairs with the other side's Release on its tail. For a
            // producer, the consumers' reads of the slots it is about to overwrite
            // happened before; for a consumer, the slot contents written before
            // the producers' publication are visible.
            let other_tail = other.tail.load(Ordering::Acquire);
            let n = want.min(room(head, other_tail));
            if n == 0 {
                return (head, 0);
            }
            // Relaxed on both paths: head only arbitrates slot ownership among
            // threads of the same side; data visibility is carried by tail.
            match me.head.compare_exchange_weak(
                head,
                head.wrapping_add(n),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return (head, n),
                Err(h) => head = h,
            }
        }
    }

    /// Publishes `n` slots reserved at `start` on side `me`, in reservation order.
    #[inline]
    fn publish(me: &HeadTail, start: u32, n: u32) {
        // Wait for threads of the same side that reserved before us (FIFO order).
        // Relaxed: we only need to observe the value; the Release below orders
        // our slot accesses.
        while me.tail.load(Ordering::Relaxed) != start {
            std::hint::spin_loop();
        }
        // Release: producers make their slot writes visible to consumers that
        // Acquire prod.tail; consumers finish their slot reads before producers
        // may reuse the slots.
        me.tail.store(start.wrapping_add(n), Ordering::Release);
    }

    #[inline]
    fn reserve_prod(&self, want: u32) -> (u32, u32) {
        let cap = self.mask + 1;
        self.reserve(&self.prod, &self.cons, want, |head, cons_tail| {
            cap.wrapping_sub(head.wrapping_sub(cons_tail))
        })
    }

    #[inline]
    fn publish_prod(&self, start: u32, n: u32) {
        Self::publish(&self.prod, start, n);
    }

    #[inline]
    fn reserve_cons(&self, want: u32) -> (u32, u32) {
        self.reserve(&self.cons, &self.prod, want, |head, prod_tail| {
            prod_tail.wrapping_sub(head)
        })
    }

    #[inline]
    fn publish_cons(&self, start: u32, n: u32) {
        Self::publish(&self.cons, start, n);
    }

    #[inline]
    fn slot(&self, idx: u32) -> *mut MaybeUninit<T> {
        self.slots[(idx & self.mask) as usize].get()
    }

    /// Enqueues one item; gives it back if the ring is full.
    #[inline]
    pub fn push(&self, item: T) -> Result<(), T> {
        let (start, n) = self.reserve_prod(1);
        if n == 0 {
            return Err(item);
        }
        // SAFETY: slot `start` was reserved for us alone by reserve_prod and is
        // outside the consumers' window, so it holds no live value.
        unsafe { (*self.slot(start)).write(item) };
        self.publish_prod(start, 1);
        Ok(())
    }

    /// Dequeues one item, if any.
    #[inline]
    pub fn pop(&self) -> Option<T> {
        let (start, n) = self.reserve_cons(1);
        if n == 0 {
            return None;
        }
        // SAFETY: slot `start` is inside the published window and reserved for us
        // alone, so it holds an initialised value that we now take ownership of.
        let v = unsafe { (*self.slot(start)).assume_init_read() };
        self.publish_cons(start, 1);
        Some(v)
    }

    /// Moves as many items as fit from the front of `src` into the ring, keeping
    /// their order. Returns how many moved; the rest stay in `src`.
    #[inline]
    pub fn enqueue_burst<const N: usize>(&self, src: &mut ArrayVec<T, N>) -> usize {
        self.enqueue_burst_max(src, src.len())
    }

    /// As [`Ring::enqueue_burst`], moving at most `max` items.
    #[inline]
    pub fn enqueue_burst_max<const N: usize>(&self, src: &mut ArrayVec<T, N>, max: usize) -> usize {
        let want = max.min(src.len());
        if want == 0 {
            return 0;
        }
        let (start, n) = self.reserve_prod(want as u32);
        if n == 0 {
            return 0;
        }
        for (i, item) in src.drain(..n as usize).enumerate() {
            // SAFETY: slots start..start+n were reserved for us alone and hold no
            // live values (outside the consumers' window).
            unsafe { (*self.slot(start.wrapping_add(i as u32))).write(item) };
        }
        self.publish_prod(start, n);
        n as usize
    }

    /// Moves up to `max` items from the ring to the end of `dst` (bounded by its
    /// spare capacity). Returns how many moved.
    #[inline]
    pub fn dequeue_burst<const N: usize>(&self, dst: &mut ArrayVec<T, N>, max: usize) -> usize {
        let want = max.min(dst.remaining_capacity()) as u32;
        if want == 0 {
            return 0;
        }
        let (start, n) = self.reserve_cons(want);
        for i in 0..n {
            // SAFETY: slots start..start+n are published and reserved for us alone;
            // each is read exactly once, transferring ownership.
            let v = unsafe { (*self.slot(start.wrapping_add(i))).assume_init_read() };
            dst.push(v);
        }
        if n > 0 {
            self.publish_cons(start, n);
        }
        n as usize
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // `&mut self`: no other thread can touch the ring; drop what it still holds.
        while self.pop().is_some() {}
    }
}

impl<T> std::fmt::Debug for Ring<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("capacity", &self.capacity())
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    #[test]
    fn capacity_rounds_up_and_full_ring_refuses() {
        let r = Ring::new(3);
        assert_eq!(r.capacity(), 4);
        for i in 0..4 {
            r.push(i).unwrap();
        }
        assert_eq!(r.push(9), Err(9));
        assert_eq!(r.pop(), Some(0));
        r.push(4).unwrap();
        let mut out: ArrayVec<i32, 8> = ArrayVec::new();
        assert_eq!(r.dequeue_burst(&mut out, 8), 4);
        assert_eq!(out.as_slice(), &[1, 2, 3, 4]);
        assert!(r.is_empty());
    }

    #[test]
    fn partial_burst_enqueue_keeps_rest_in_order() {
        let r = Ring::new(4);
        let mut src: ArrayVec<u32, 8> = (0..6).collect();
        assert_eq!(r.enqueue_burst(&mut src), 4);
        assert_eq!(src.as_slice(), &[4, 5]);
        let mut out: ArrayVec<u32, 8> = ArrayVec::new();
        assert_eq!(r.dequeue_burst(&mut out, 2), 2);
        assert_eq!(out.as_slice(), &[0, 1]);
    }

    #[test]
    fn indices_wrap_past_u32_max() {
        let r: Ring<u64> = Ring::new(8);
        // Start near the wrap point to exercise modular arithmetic.
        let start = u32::MAX - 3;
        r.prod.head.store(start, Ordering::Relaxed);
        r.prod.tail.store(start, Ordering::Relaxed);
        r.cons.head.store(start, Ordering::Relaxed);
        r.cons.tail.store(start, Ordering::Relaxed);
        for round in 0..10u64 {
            let mut src: ArrayVec<u64, 8> = (0..8).map(|i| round * 8 + i).collect();
            assert_eq!(r.enqueue_burst(&mut src), 8);
            let mut out: ArrayVec<u64, 8> = ArrayVec::new();
            assert_eq!(r.dequeue_burst(&mut out, 8), 8);
            assert_eq!(out[0], round * 8);
            assert_eq!(out[7], round * 8 + 7);
        }
    }

    #[test]
    fn drop_releases_items_still_queued() {
        let token = Arc::new(());
        let r = Ring::new(4);
        r.push(token.clone()).unwrap();
        r.push(token.clone()).unwrap();
        assert_eq!(Arc::strong_count(&token), 3);
        drop(r);
        assert_eq!(Arc::strong_count(&token), 1);
    }

    #[test]
    fn two_producers_two_consumers_lose_and_duplicate_nothing() {
        const PER: u64 = 200_000;
        let r = Arc::new(Ring::<u64>::new(64));
        let seen = Arc::new(
            (0..2 * PER)
                .map(|_| AtomicUsize::new(0))
                .collect::<Vec<_>>(),
        );
        let mut hs = Vec::new();
        for p in 0..2u64 {
            let r = r.clone();
            hs.push(std::thread::spawn(move || {
                let mut next = 0;
                while next < PER {
                    let mut b: ArrayVec<u64, 16> = ArrayVec::new();
                    while next < PER && !b.is_full() {
                        b.push(p * PER + next);
                        next += 1;
                    }
                    while !b.is_empty() {
                        if r.enqueue_burst(&mut b) == 0 {
                            std::thread::yield_now();
                        }
                    }
                }
            }));
        }
        let got = Arc::new(AtomicUsize::new(0));
        for _ in 0..2 {
            let (r, seen, got) = (r.clone(), seen.clone(), got.clone());
            hs.push(std::thread::spawn(move || {
                let mut last = [None::<u64>; 2];
                while got.load(Ordering::Relaxed) < (2 * PER) as usize {
                    let mut b: ArrayVec<u64, 16> = ArrayVec::new();
                    let n = r.dequeue_burst(&mut b, 16);
                    if n == 0 {
                        std::thread::yield_now();
                        continue;
                    }
                    for v in b {
                        seen[v as usize].fetch_add(1, Ordering::Relaxed);
                        // Each consumer sees each producer's items in order.
                        let p = (v / PER) as usize;
                        assert!(last[p].is_none_or(|l| l < v), "reordered");
                        last[p] = Some(v);
                    }
                    got.fetch_add(n, Ordering::Relaxed);
                }
            }));
        }
        for h in hs {
            h.join().unwrap();
        }
        assert!(seen.iter().all(|c| c.load(Ordering::Relaxed) == 1));
        assert!(r.is_empty());
    }
}
