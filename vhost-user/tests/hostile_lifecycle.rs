//! A hostile frontend against the lifecycle of weir's vhost-user device:
//! connections that come and go, eventfds the frontend closes or turns
//! blocking, and messages that carry more fds than any message may.
//!
//! The device's ports are polled by a "worker" thread of the test, as weir's
//! workers poll them. Guest memory is a memfd written with `pwrite`, as in
//! `hostile.rs`. Cases run one at a time: fd, thread and mapping counts need
//! a quiet process.

use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dataplane::{Burst, LinkState, Mempool, Port};
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost::vhost_user::Frontend;
use vhost_user::testguest::spec::{GET_FEATURES, SET_OWNER};
use vhost_user::testguest::{self, wait_until, Guest, Handshake, Layout, RawFrontend};
use vhost_user::{create, VhostUserDevice, VhostUserPort};
use vmm_sys_util::eventfd::EventFd;

/// Guest memory layout: one memfd-backed region at guest address 0.
const LAYOUT: Layout = Layout {
    mem_bytes: 0x10_0000,
    queue_size: 8,
    tx_buf: 0x1_0000,
    tx_stride: 0x1000,
};
/// The eventfd counter's largest value: a write of 1 onto it blocks.
const EVENTFD_FULL: u64 = 0xffff_ffff_ffff_fffe;

fn pool() -> &'static Mempool {
    static POOL: OnceLock<&'static Mempool> = OnceLock::new();
    POOL.get_or_init(|| Mempool::for_tests(2048))
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

/// A guest with non-blocking eventfds.
fn guest() -> Guest {
    Guest::new(LAYOUT, libc::EFD_NONBLOCK).unwrap()
}

/// Handshake and both rings, not yet enabled, through the `vhost` crate's
/// frontend.
fn attach(g: &Guest, sock: &Path) -> Frontend {
    let how = Handshake {
        features: 0,
        protocol: VhostUserProtocolFeatures::REPLY_ACK | VhostUserProtocolFeatures::MQ,
        enable: false,
    };
    g.attach(sock, &how).unwrap()
}

fn enable(fe: &mut Frontend) {
    Guest::enable(fe).unwrap();
}

/// A device, its socket, and frames its port received (counted by the worker).
struct Dev {
    dev: VhostUserDevice,
    sock: PathBuf,
    rx: Arc<AtomicU64>,
}

/// A test "worker": one thread polling every port it was given, as weir's
/// workers do (frames received are counted and freed).
struct Worker {
    stop: Arc<AtomicBool>,
    /// Rounds completed: proof the thread is not blocked.
    rounds: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    fn spawn(ports: Vec<(VhostUserPort, Arc<AtomicU64>)>) -> Worker {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let (s, r) = (Arc::clone(&stop), Arc::clone(&rounds));
        let thread = std::thread::spawn(move || {
            let mut ports = ports;
            let mut burst = Burst::new();
            while !s.load(Ordering::Relaxed) {
                for (p, n) in &mut ports {
                    let got = p.rx_burst(&mut burst);
                    burst.clear();
                    n.fetch_add(got as u64, Ordering::Relaxed);
                    p.housekeeping();
                }
                r.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_micros(200));
            }
            drop(ports);
            dataplane::mempool::flush_thread_caches();
        });
        Worker {
            stop,
            rounds,
            thread: Some(thread),
        }
    }

    /// True if the thread completes a few more rounds within `secs`.
    fn alive_within(&self, secs: u64) -> bool {
        let r0 = self.rounds.load(Ordering::Relaxed);
        wait_until(secs, || self.rounds.load(Ordering::Relaxed) >= r0 + 3)
    }

    /// Stops the thread; false if it did not end within 5 s (it is then left
    /// behind).
    fn stop(mut self) -> bool {
        self.stop.store(true, Ordering::Relaxed);
        let t = self.thread.take().unwrap();
        if !wait_until(5, || t.is_finished()) {
            return false;
        }
        t.join().is_ok()
    }
}

fn device(dir: &Path, name: &str) -> (Dev, VhostUserPort) {
    let sock = dir.join(format!("{name}.sock"));
    let cfg = testguest::server_config(sock.clone());
    let mut dev = create(name, &cfg, pool()).unwrap();
    let port = dev.take_queues().pop().unwrap();
    let d = Dev {
        dev,
        sock,
        rx: Arc::new(AtomicU64::new(0)),
    };
    (d, port)
}

/// A device whose port a worker of its own polls.
fn polled_device(dir: &Path, name: &str) -> (Dev, Worker) {
    let (d, port) = device(dir, name);
    let w = Worker::spawn(vec![(port, Arc::clone(&d.rx))]);
    (d, w)
}

fn raw(sock: &Path) -> RawFrontend {
    RawFrontend::connect(sock).unwrap()
}

/// A guest attached to `d` with both rings enabled, once the link is up.
fn connected(d: &Dev) -> (Guest, Frontend) {
    let g = guest();
    let mut fe = attach(&g, &d.sock);
    enable(&mut fe);
    assert!(
        wait_until(5, || d.dev.link() == LinkState::Up),
        "link not up; error {:?}",
        d.dev.error()
    );
    (g, fe)
}

/// One well-behaved session: setup, `frames` frames through the worker,
/// disconnect, and the device seen idle again.
fn session(d: &Dev, frames: u8) {
    let (mut g, fe) = connected(d);
    let before = d.rx.load(Ordering::Relaxed);
    g.send_frames(frames);
    assert!(
        wait_until(5, || d.rx.load(Ordering::Relaxed)
            == before + u64::from(frames)
            && g.used_idx(1) == u16::from(frames)),
        "frames not received; error {:?}",
        d.dev.error()
    );
    drop(fe);
    assert!(
        wait_until(5, || !d.dev.is_connected()),
        "disconnect not seen"
    );
}

/// What must come back to its baseline after frontends come and go.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct Level {
    fds: usize,
    threads: usize,
    mappings: usize,
}

fn level() -> Level {
    Level {
        fds: testguest::open_fds(),
        threads: threads(),
        mappings: mappings(),
    }
}

/// Waits (bounded) until the process is back at `base`; the last level seen.
fn settles_at(base: Level) -> Level {
    let mut now = level();
    wait_until(5, || {
        now = level();
        now == base
    });
    now
}

#[test]
fn reconnect_soak_returns_fds_threads_mappings_and_mbufs_to_baseline() {
    let _s = testguest::serial();
    let dir = tempfile::tempdir().unwrap();
    let (d, w) = polled_device(dir.path(), "soak");
    // The first session installs what lives for the process (the SIGBUS
    // handler, the pool's thread caches).
    session(&d, 2);
    settled_fds();
    let base = level();
    let pool_base = pool().available();
    for i in 0..500 {
        session(&d, 2);
        if i == 9 {
            // A leak shows after a few cycles already; fail fast.
            assert_eq!(settles_at(base), base, "after 10 cycles");
        }
    }
    assert_eq!(settles_at(base), base, "after 500 cycles");
    assert!(w.stop(), "worker did not stop");
    assert!(
        wait_until(5, || pool().available() >= pool_base),
        "mbufs not returned: {} free, {pool_base} at baseline",
        pool().available()
    );
    assert_eq!(d.dev.error(), None);
}

/// `port add` and `port del` over and over (as `weir bench --socket` does for
/// every measurement), with and without a frontend in between: a device
/// dropped while it waits for its next frontend leaves nothing behind either.
#[test]
fn devices_added_and_removed_leave_no_fds_threads_or_mappings() {
    let _s = testguest::serial();
    let dir = tempfile::tempdir().unwrap();
    let cycle = |name: &str, with_session: bool| {
        let (d, port) = device(dir.path(), name);
        if with_session {
            session_without_worker(&d, port);
        } else {
            drop(port);
        }
    };
    // What lives for the process is installed by the first devices: the
    // SIGBUS handler, and the C library's per-thread heaps (bounded by the
    // number of CPUs) and cached thread stacks, which show as mappings.
    for i in 0..WARM_DEVICES {
        cycle(&format!("warm{i}"), i % 2 == 1);
    }
    settled_fds();
    let base = level();
    for i in 0..40 {
        cycle(&format!("d{i}"), i % 2 == 1);
    }
    assert_eq!(settles_at(base), base, "after 40 devices added and removed");
}

/// Devices added and removed before the baseline is taken.
const WARM_DEVICES: usize = 40;

/// One session whose frames are taken by a short-lived worker, which is gone
/// again when this returns.
fn session_without_worker(d: &Dev, port: VhostUserPort) {
    let w = Worker::spawn(vec![(port, Arc::clone(&d.rx))]);
    session(d, 2);
    assert!(w.stop(), "worker did not stop");
}

#[test]
fn a_frontend_that_closes_its_eventfds_does_not_wedge_the_port() {
    let _s = testguest::serial();
    let dir = tempfile::tempdir().unwrap();
    let (d, w) = polled_device(dir.path(), "wedge");
    for round in 0..3 {
        let mut g = Guest::new(LAYOUT, 0).unwrap();
        let mut fe = attach(&g, &d.sock);
        // The frontend's own copies of kick and call go away before the
        // rings are enabled; weir keeps its own.
        g.call = [None, None];
        g.kick = [None, None];
        enable(&mut fe);
        assert!(
            wait_until(5, || d.dev.link() == LinkState::Up),
            "round {round}"
        );
        let before = d.rx.load(Ordering::Relaxed);
        g.send_frames(4);
        assert!(
            wait_until(5, || d.rx.load(Ordering::Relaxed) == before + 4),
            "round {round}: frames not received"
        );
        drop(fe);
        assert!(wait_until(5, || !d.dev.is_connected()), "round {round}");
        // The next frontend is answered at once.
        let mut r = raw(&d.sock);
        assert!(
            r.answers(),
            "round {round}: no reply to a new frontend; error {:?}",
            d.dev.error()
        );
        drop(r);
        assert!(wait_until(5, || !d.dev.is_connected()), "round {round}");
    }
    session(&d, 4);
    assert_eq!(d.dev.error(), None);
    assert!(w.stop(), "worker did not stop");
}

/// The fd of `ev`, borrowed.
fn borrow(ev: &EventFd) -> BorrowedFd<'_> {
    use std::os::fd::AsRawFd;
    // SAFETY: `ev` owns the fd and outlives the borrow.
    unsafe { BorrowedFd::borrow_raw(ev.as_raw_fd()) }
}

/// Clears O_NONBLOCK on the file description behind `fd` (shared with weir's
/// copy) and fills its counter.
fn make_blocking_and_full(fd: &EventFd) {
    let fl = rustix::fs::fcntl_getfl(borrow(fd)).unwrap();
    rustix::fs::fcntl_setfl(borrow(fd), fl - rustix::fs::OFlags::NONBLOCK).unwrap();
    fd.write(EVENTFD_FULL).unwrap();
}

#[test]
fn a_blocking_full_call_eventfd_never_blocks_the_worker_or_shutdown() {
    let _s = testguest::serial();
    let dir = tempfile::tempdir().unwrap();
    let (b, b_port) = device(dir.path(), "bystander");
    let (h, h_port) = device(dir.path(), "hostile");
    // Both ports on one worker, as two guests on one weir worker.
    let w = Worker::spawn(vec![
        (b_port, Arc::clone(&b.rx)),
        (h_port, Arc::clone(&h.rx)),
    ]);
    let (mut bg, bfe) = connected(&b);

    let (mut g, fe) = connected(&h);
    for call in g.call.iter().flatten() {
        make_blocking_and_full(call);
    }
    // Frames the guest wants an interrupt for.
    g.send_frames(4);
    assert!(
        wait_until(5, || h.rx.load(Ordering::Relaxed) == 4),
        "hostile frames not received"
    );
    assert!(w.alive_within(5), "the worker is blocked");
    // The neighbour on the same worker keeps forwarding.
    bg.send_frames(4);
    assert!(
        wait_until(5, || b.rx.load(Ordering::Relaxed) == 4),
        "bystander stopped forwarding"
    );
    // The hostile frontend leaves; the port serves the next one.
    drop(fe);
    assert!(wait_until(5, || !h.dev.is_connected()));
    let mut r = raw(&h.sock);
    assert!(r.answers(), "hostile port wedged");
    drop(r);
    // A guest that keeps its counter full while connected: shutting the
    // device down still completes.
    let (mut g2, fe2) = connected(&h);
    for call in g2.call.iter().flatten() {
        make_blocking_and_full(call);
    }
    g2.send_frames(4);
    assert!(wait_until(5, || h.rx.load(Ordering::Relaxed) == 8));
    assert!(w.alive_within(5), "the worker is blocked");
    let t = Instant::now();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let Dev { dev, .. } = h;
    std::thread::spawn(move || {
        drop(dev);
        let _ = done_tx.send(());
    });
    assert!(
        done_rx.recv_timeout(Duration::from_secs(5)).is_ok(),
        "device shutdown blocked by a guest eventfd"
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    // ... and its interrupt thread ended rather than being left behind,
    // blocked for good in the write (with the fd) while the guest lives.
    assert!(
        wait_until(5, || threads_named("vhost-irq-hosti") == 0),
        "the hostile port's interrupt thread outlived its device"
    );
    drop(fe2);
    assert!(w.alive_within(5), "the worker is blocked");
    assert!(w.stop(), "worker did not stop");
    drop(bfe);
}

/// Threads of this process whose name (as the kernel keeps it: 15 bytes)
/// starts with `prefix`.
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.starts_with(prefix))
                })
                .count()
        })
        .unwrap_or(0)
}

/// The process's fd count once it held still for 50 ms (bounded: 5 s).
fn settled_fds() -> usize {
    let mut last = testguest::open_fds();
    let mut since = Instant::now();
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end && since.elapsed() < Duration::from_millis(50) {
        std::thread::sleep(Duration::from_millis(1));
        let now = testguest::open_fds();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    last
}

/// A message spread over many `recvmsg` calls, each carrying fds: weir must
/// not hold more than one message's worth of them, and drops the connection.
#[test]
fn fds_spread_over_one_message_are_bounded_and_closed() {
    let _s = testguest::serial();
    let dir = tempfile::tempdir().unwrap();
    let (d, w) = polled_device(dir.path(), "fds");
    let ev = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    // Idle: after a session, the device has built the library instance for
    // the next connection once the count stops moving.
    session(&d, 2);
    let base = settled_fds();
    let fds: Vec<BorrowedFd<'_>> = (0..32).map(|_| borrow(&ev)).collect();
    let mut r = raw(&d.sock);
    assert!(wait_until(5, || d.dev.is_connected()));
    // A header promising 4 KiB, then the payload a byte at a time, each byte
    // with 32 fds: on their own, the kernel would let weir collect 131 072.
    let mut peak = 0;
    let mut sent = 0;
    if r.send_bytes(&RawFrontend::header(GET_FEATURES, 0, 4096), &fds)
        .is_ok()
    {
        for _ in 0..64 {
            if r.send_bytes(&[0], &fds).is_err() {
                break;
            }
            sent += 1;
            peak = peak.max(testguest::open_fds().saturating_sub(base));
        }
    }
    // Until weir drops the connection, sample what it holds.
    let end = Instant::now() + Duration::from_secs(3);
    let mut closed = false;
    while !closed && Instant::now() < end {
        peak = peak.max(testguest::open_fds().saturating_sub(base));
        closed = r.closed_within(Duration::from_millis(5));
    }
    assert!(closed, "connection kept after {sent} fd-laden chunks");
    assert!(peak <= 3 * 32, "weir held {peak} fds of one message");
    drop(r);
    assert!(wait_until(5, || !d.dev.is_connected()));
    assert_fds_back_to(base);
    // A message that takes no fds but carries some is refused, its fds closed.
    let mut r = raw(&d.sock);
    assert!(r
        .send_bytes(&RawFrontend::header(SET_OWNER, 0, 0), &fds[..8])
        .is_ok());
    assert!(r.answers() || r.closed_within(Duration::from_secs(3)));
    drop(r);
    assert!(wait_until(5, || !d.dev.is_connected()));
    assert_fds_back_to(base);
    session(&d, 2);
    assert!(w.stop(), "worker did not stop");
}

/// Asserts that the process's fd count drops back to `base` within 5 s.
fn assert_fds_back_to(base: usize) {
    assert!(
        wait_until(5, || testguest::open_fds() <= base),
        "fds not closed: {} open, {base} before",
        testguest::open_fds()
    );
}

/// The `eventfd-id` of an open fd (unique among live eventfds).
fn eventfd_id(fd: &str) -> Option<String> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("eventfd-id:"))
        .map(|v| v.trim().to_owned())
}

/// How many of this process's fds refer to the eventfd behind `ev`.
fn references(ev: &EventFd) -> usize {
    use std::os::fd::AsRawFd;
    let id = eventfd_id(&ev.as_raw_fd().to_string()).unwrap();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| eventfd_id(&e.file_name().to_string_lossy()).as_deref() == Some(&*id))
        .count()
}

/// A data queue's kick is never read by weir (workers poll): weir keeps no
/// reference to the guest's eventfd, so a frontend that makes it blocking and
/// reads it first cannot block a thread of weir's in a read.
#[test]
fn weir_keeps_no_reference_to_a_data_queue_kick() {
    let _s = testguest::serial();
    let dir = tempfile::tempdir().unwrap();
    let (d, w) = polled_device(dir.path(), "kick");
    let (mut g, fe) = connected(&d);
    for kick in g.kick.iter().flatten() {
        assert_eq!(references(kick), 1, "weir holds the guest's kick eventfd");
        // Kicks are harmless: frames still flow.
        kick.write(1).unwrap();
    }
    g.send_frames(2);
    assert!(wait_until(5, || d.rx.load(Ordering::Relaxed) == 2));
    drop(fe);
    assert!(wait_until(5, || !d.dev.is_connected()));
    assert!(w.stop(), "worker did not stop");
}
