//! End-to-end against a real vhost-user frontend: DPDK testpmd with
//! `net_virtio_user`, weir's device in server mode.
//!
//! Needs root and the Debian packages `dpdk-dev librte-net-vhost23
//! librte-mempool-ring23 librte-net-virtio23` (testpmd and its virtio-user PMD).
//! Fails with a message naming them when `dpdk-testpmd` is not installed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use dataplane::{Burst, LinkState, Mempool, Port};
use vhost_user::testguest::{self, wait_until};
use vhost_user::{create, Mode, VhostUserConfig, VhostUserDevice, VhostUserPort};

static SEQ: AtomicU32 = AtomicU32::new(0);

struct Testpmd {
    child: Child,
    log: PathBuf,
    prefix: String,
}

impl Testpmd {
    fn start(sock: &Path, dir: &Path, mode: &str) -> Testpmd {
        Testpmd::start_with(sock, dir, mode, 1, false)
    }

    /// `queues` pairs; `server`: virtio-user listens on `sock` (weir in client
    /// mode connects to it).
    fn start_with(sock: &Path, dir: &Path, mode: &str, queues: u16, server: bool) -> Testpmd {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("weirvu{}x{n}", std::process::id());
        let log = dir.join(format!("testpmd-{n}.log"));
        let out = fs::File::create(&log).unwrap();
        let vdev = format!("queues={queues},queue_size=256,server={}", u8::from(server));
        let child = Command::new("dpdk-testpmd")
            .args(testguest::testpmd_eal_args(&prefix, sock, &vdev))
            .args([
                "--",
                &format!("--rxq={queues}"),
                &format!("--txq={queues}"),
                &format!("--forward-mode={mode}"),
                "--auto-start",
                "--stats-period=1",
                "--total-num-mbufs=4096",
                "--txpkts=64",
                "--nb-cores=1",
                "--rxd=256",
                "--txd=256",
            ])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn dpdk-testpmd");
        Testpmd { child, log, prefix }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Largest "RX-packets: N" in the periodic stats.
    fn rx_packets(&self) -> u64 {
        self.log()
            .lines()
            .filter_map(|l| l.trim().strip_prefix("RX-packets:"))
            .filter_map(|r| r.split_whitespace().next()?.parse().ok())
            .max()
            .unwrap_or(0)
    }

    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(format!("/var/run/dpdk/{}", self.prefix));
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `port` until `want` frames arrived or the deadline; checks each frame.
fn receive(port: &mut VhostUserPort, want: u64, secs: u64) -> u64 {
    let mut burst = Burst::new();
    let mut got = 0u64;
    let end = Instant::now() + Duration::from_secs(secs);
    while got < want && Instant::now() < end {
        let n = port.rx_burst(&mut burst);
        for m in burst.drain(..) {
            assert_eq!(m.len(), 64, "testpmd txonly sends 64-byte frames");
            // EtherType IPv4 (testpmd txonly builds UDP/IPv4).
            assert_eq!(&m.data()[12..14], &[0x08, 0x00]);
        }
        got += n as u64;
        if n == 0 {
            port.housekeeping();
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    got
}

/// Transmits frames until `want` were taken or the deadline.
fn transmit(port: &mut VhostUserPort, pool: &'static Mempool, want: u64, secs: u64) -> u64 {
    let mut burst = Burst::new();
    let mut sent = 0u64;
    let end = Instant::now() + Duration::from_secs(secs);
    while sent < want && Instant::now() < end {
        while !burst.is_full() {
            let Some(mut m) = pool.alloc() else { break };
            m.extend_from_slice(&testguest::frame([0x02, 0, 0, 0, 0, 1]))
                .unwrap();
            burst.push(m);
        }
        let n = port.tx_burst(&mut burst);
        sent += n as u64;
        if n == 0 {
            port.housekeeping();
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    burst.clear();
    sent
}

/// Waits (10 s at most), housekeeping `port` as a worker does, until `dev`
/// has seen its frontend go; whether it did.
fn disconnected(dev: &VhostUserDevice, port: &mut VhostUserPort) -> bool {
    wait_until(10, || {
        port.housekeeping();
        !dev.is_connected()
    })
}

#[test]
fn testpmd_virtio_user_both_directions_and_reconnect() {
    testguest::require_testpmd();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("vu0.sock");
    let pool = Mempool::for_tests(4096);
    let start_avail = pool.available();
    let cfg = testguest::server_config(sock.clone());
    let mut dev = create("vu0", &cfg, pool).unwrap();
    let mut port = dev.take_queues().pop().unwrap();
    assert_eq!(dev.link(), LinkState::Down);

    // Guest TX → weir.
    let tp = Testpmd::start(&sock, dir.path(), "txonly");
    let got = receive(&mut port, 2000, 30);
    assert!(
        got >= 2000,
        "received {got} frames; testpmd log:\n{}",
        tp.log()
    );
    assert_eq!(dev.link(), LinkState::Up);
    assert_eq!(dev.error(), None);
    tp.stop();
    assert!(
        disconnected(&dev, &mut port),
        "device still connected after testpmd exited"
    );
    assert_eq!(port.link(), LinkState::Down);

    // weir → guest RX, after a reconnect.
    let tp = Testpmd::start(&sock, dir.path(), "rxonly");
    let sent = transmit(&mut port, pool, 3000, 30);
    assert!(sent >= 3000, "sent {sent}; testpmd log:\n{}", tp.log());
    assert!(
        wait_until(10, || tp.rx_packets() >= 1000),
        "testpmd saw {} frames; log:\n{}",
        tp.rx_packets(),
        tp.log()
    );
    assert_eq!(dev.error(), None);
    tp.stop();

    // And guest TX again on a third connection.
    let tp = Testpmd::start(&sock, dir.path(), "txonly");
    let got = receive(&mut port, 500, 30);
    assert!(
        got >= 500,
        "received {got} after reconnect; log:\n{}",
        tp.log()
    );
    tp.stop();
    assert!(disconnected(&dev, &mut port));

    dataplane::mempool::flush_thread_caches();
    assert_eq!(pool.available(), start_avail, "mbufs leaked");
    assert_eq!(port.stats().drops(dataplane::DropReason::PortError), 0);
    drop(port);
    drop(dev);
    assert!(!sock.exists(), "server socket removed on drop");
}

#[test]
fn testpmd_two_queue_pairs_deliver_on_both_ports() {
    testguest::require_testpmd();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("vumq.sock");
    let pool = Mempool::for_tests(4096);
    let cfg = VhostUserConfig {
        socket: sock.clone(),
        mode: Mode::Server,
        queues: 2,
        mac: None,
        mtu: None,
    };
    let mut dev = create("vumq", &cfg, pool).unwrap();
    let mut ports = dev.take_queues();
    assert_eq!(ports.len(), 2);
    assert_eq!((ports[0].queue(), ports[1].queue()), (0, 1));
    let tp = Testpmd::start_with(&sock, dir.path(), "txonly", 2, false);
    let mut got = [0u64; 2];
    let mut burst = Burst::new();
    let end = Instant::now() + Duration::from_secs(30);
    while (got[0] < 500 || got[1] < 500) && Instant::now() < end {
        let mut idle = true;
        for (i, p) in ports.iter_mut().enumerate() {
            let n = p.rx_burst(&mut burst);
            for m in burst.drain(..) {
                assert_eq!(m.len(), 64);
            }
            got[i] += n as u64;
            if n > 0 {
                idle = false;
            } else {
                p.housekeeping();
            }
        }
        if idle {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    assert!(
        got[0] >= 500 && got[1] >= 500,
        "frames per queue pair {got:?}; error {:?}; testpmd log:\n{}",
        dev.error(),
        tp.log()
    );
    assert_eq!(dev.link(), LinkState::Up);
    assert_eq!(dev.error(), None);
    tp.stop();
    dataplane::mempool::flush_thread_caches();
}

#[test]
fn client_mode_reconnects_after_the_server_restarts() {
    testguest::require_testpmd();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("vucl.sock");
    let pool = Mempool::for_tests(4096);
    let cfg = VhostUserConfig {
        socket: sock.clone(),
        mode: Mode::Client,
        queues: 1,
        mac: None,
        mtu: None,
    };
    // weir starts first and retries until testpmd listens.
    let mut dev = create("vucl", &cfg, pool).unwrap();
    let mut port = dev.take_queues().pop().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(!dev.is_connected());
    assert_eq!(dev.link(), LinkState::Down);
    let tp = Testpmd::start_with(&sock, dir.path(), "txonly", 1, true);
    let got = receive(&mut port, 1000, 30);
    assert!(got >= 1000, "received {got}; log:\n{}", tp.log());
    assert_eq!(dev.link(), LinkState::Up);
    tp.stop();
    assert!(
        disconnected(&dev, &mut port),
        "still connected after the server exited"
    );
    assert_eq!(dev.link(), LinkState::Down);
    assert_eq!(port.link(), LinkState::Down);
    // Down for a while: weir keeps retrying (with backoff) without error.
    std::thread::sleep(Duration::from_secs(2));
    let _ = std::fs::remove_file(&sock);
    let tp = Testpmd::start_with(&sock, dir.path(), "txonly", 1, true);
    let got = receive(&mut port, 1000, 30);
    assert!(
        got >= 1000,
        "received {got} after restart; log:\n{}",
        tp.log()
    );
    assert_eq!(dev.link(), LinkState::Up);
    tp.stop();
    drop(port);
    drop(dev);
    dataplane::mempool::flush_thread_caches();
}
