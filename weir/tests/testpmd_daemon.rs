//! End to end with DPDK as the frontends: the real `weir run` daemon with a
//! bridge and two vhost-user ports (server mode), and one DPDK testpmd on each
//! socket (`net_virtio_user`, the client). A transmits a counted number of
//! bursts (`start tx_first N`, then only receives); B only receives. Every
//! frame sent at this low rate must arrive: testpmd's and weir's counters must
//! agree exactly, first for flooded frames (B's MAC unknown), then, after B has
//! sent and weir learned its MAC, for frames addressed to B.
//!
//! Needs root and the Debian packages `dpdk-dev librte-net-vhost23
//! librte-mempool-ring23 librte-net-virtio23` (`scripts/setup.sh`); fails, never
//! skips, when `dpdk-testpmd` is missing.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use vhost_user::testguest;

mod common;
use common::{tail, Daemon};

/// testpmd's default burst (`--burst`), stated explicitly on its command line.
const BURST: u64 = 32;
/// Bursts A sends per round.
const BURSTS: u64 = 10;
const MAC_A: &str = "02:00:00:00:0a:01";
const MAC_B: &str = "02:00:00:00:0b:01";

fn require_root_and_testpmd() {
    assert!(
        rustix::process::getuid().is_root(),
        "the testpmd test needs root (DPDK EAL, /var/run/dpdk)"
    );
    testguest::require_testpmd();
}

/// (link up, rx packets, tx packets, total drops) of one port.
fn port(d: &Daemon, name: &str) -> (bool, u64, u64, u64) {
    let p = d.port_json(name);
    let drops = p["stats"]["drops"]
        .as_object()
        .map(|m| m.values().filter_map(|v| v.as_u64()).sum())
        .unwrap_or(0);
    (
        p["link"] == "up",
        p["stats"]["rx_packets"].as_u64().unwrap(),
        p["stats"]["tx_packets"].as_u64().unwrap(),
        drops,
    )
}

/// An interactive testpmd (`-i`) with one `net_virtio_user` port, driven through
/// a pipe on its stdin; its output goes to a log file. On drop: `quit`, then
/// SIGKILL if needed, and its runtime directory `/var/run/dpdk/<prefix>` is
/// removed.
struct Testpmd {
    child: Child,
    stdin: Option<ChildStdin>,
    log: PathBuf,
    prefix: String,
}

/// Counters from `show port stats 0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct NicStats {
    rx: u64,
    tx: u64,
}

impl Testpmd {
    fn start(name: &str, sock: &Path, mac: &str, dir: &Path) -> Testpmd {
        let prefix = format!("weirtp{}{name}", std::process::id());
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{prefix}"));
        let log = dir.join(format!("testpmd-{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        // 1024 descriptors: a whole round (BURSTS * BURST frames) fits in the
        // receiver's ring even when its polling thread is not scheduled for a
        // while (two testpmds and weir share two cores), so nothing has to drop.
        // stdbuf: testpmd prints with stdio, fully buffered into a file; line
        // buffering makes each reply readable as soon as it is printed.
        let vdev = format!("mac={mac},queues=1,queue_size=1024");
        let mut child = Command::new("stdbuf")
            .args(["-oL", "dpdk-testpmd"])
            .args(testguest::testpmd_eal_args(&prefix, sock, &vdev))
            .args([
                "--",
                "-i",
                "--rxd=1024",
                "--txd=1024",
                "--total-num-mbufs=4096",
                "--txpkts=64",
                &format!("--burst={BURST}"),
                "--nb-cores=1",
            ])
            .stdin(Stdio::piped())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("starting dpdk-testpmd");
        let stdin = child.stdin.take();
        Testpmd {
            child,
            stdin,
            log,
            prefix,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn cmd(&mut self, line: &str) {
        if let Ok(Some(st)) = self.child.try_wait() {
            panic!("testpmd exited with {st}:\n{}", tail(&self.log(), 30));
        }
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .unwrap();
    }

    /// Runs `show port stats 0` and parses the block it prints.
    fn stats(&mut self) -> NicStats {
        const HEADER: &str = "NIC statistics for port 0";
        let before = self.log().matches(HEADER).count();
        self.cmd("show port stats 0");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if log.matches(HEADER).count() > before {
                let block = &log[log.rfind(HEADER).unwrap()..];
                let field = |key: &str| {
                    block
                        .split(key)
                        .nth(1)
                        .and_then(|r| r.split_whitespace().next())
                        .and_then(|n| n.parse::<u64>().ok())
                };
                if let (Some(rx), Some(tx)) = (field("RX-packets:"), field("TX-packets:")) {
                    return NicStats { rx, tx };
                }
            }
            assert!(
                Instant::now() < deadline,
                "no port stats from testpmd:\n{}",
                tail(&log, 30)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls the stats until `done` holds or `secs` pass; returns the last.
    fn wait_stats(&mut self, secs: u64, done: impl Fn(NicStats) -> bool) -> NicStats {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.stats();
            if done(s) || Instant::now() >= deadline {
                return s;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, "quit");
            // Dropping the pipe gives testpmd EOF, which also ends it.
        }
        common::reap(&mut self.child, Duration::from_secs(10));
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{}", self.prefix));
    }
}

#[test]
fn testpmd_pair_through_weir_counts_every_frame() {
    require_root_and_testpmd();
    let t0 = Instant::now();
    let dir = std::env::temp_dir().join("weir-testpmd");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let d = Daemon::start(
        &dir,
        &common::vhost_config(&dir, &["pa", "pb"], "server", 1, 4096),
    );
    let mut b = Testpmd::start("b", &dir.join("pb.sock"), MAC_B, &dir);
    let mut a = Testpmd::start("a", &dir.join("pa.sock"), MAC_A, &dir);

    // Both frontends have set up their rings: weir shows both links up.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(port(&d, "pa").0 && port(&d, "pb").0) {
        assert!(
            Instant::now() < deadline,
            "links not up: pa {:?} pb {:?}\nweir:\n{}\ntestpmd a:\n{}\ntestpmd b:\n{}",
            port(&d, "pa"),
            port(&d, "pb"),
            tail(&d.log(), 20),
            tail(&a.log(), 20),
            tail(&b.log(), 20)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("{:.1}s: both links up", t0.elapsed().as_secs_f64());
    // `port show` names what the frontend negotiated: virtio 1.0 at least,
    // and no bit weir did not offer.
    let show = d.json(&["port", "show", "pa"]);
    let features: Vec<&str> = show["features"]
        .as_array()
        .unwrap_or_else(|| panic!("no features in {show}"))
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(features.contains(&"VERSION_1"), "{features:?}");
    assert!(
        !features.iter().any(|f| f.starts_with("bit")),
        "a feature weir never offered: {features:?}"
    );
    let text = d.ok(&["port", "show", "pa"]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("features") && l.contains("VERSION_1")),
        "{text}"
    );
    // A link is up once the frontend has set up its rings (at DRIVER_OK), but
    // testpmd posts its receive buffers only later, when it starts the port,
    // and under CPU load that can be seconds later. Frames weir forwards to B
    // before then meet an empty ring and are dropped (`tx-full`), correctly.
    // testpmd starts its ports before it reads its first command, so a reply
    // from each means B's receive ring is filled and A is ready to send.
    b.stats();
    a.stats();
    println!("{:.1}s: both testpmds ready", t0.elapsed().as_secs_f64());
    b.cmd("set fwd rxonly");
    b.cmd("start");
    a.cmd("set fwd rxonly");

    // Round 1: A's frames go to testpmd's default peer 02:00:00:00:00:00, which
    // nobody has: weir floods them to B, the only other port.
    let round = BURSTS * BURST;
    a.cmd(&format!("start tx_first {BURSTS}"));
    b.wait_stats(15, |s| s.rx >= round);
    // A little longer: nothing extra may arrive.
    std::thread::sleep(Duration::from_millis(500));
    let (sent, got) = (a.stats(), b.stats());
    let (pa, pb) = (port(&d, "pa"), port(&d, "pb"));
    println!(
        "{:.1}s: round 1 (flooded): A {sent:?}, B {got:?}; weir pa {pa:?}, pb {pb:?}",
        t0.elapsed().as_secs_f64()
    );
    let context = |a: &Testpmd, b: &Testpmd| {
        format!(
            "\nweir ports: {}\nweir:\n{}\ntestpmd a:\n{}\ntestpmd b:\n{}",
            d.json(&["port", "list"]),
            tail(&d.log(), 20),
            tail(&a.log(), 20),
            tail(&b.log(), 20)
        )
    };
    assert_eq!(sent.tx, round, "A sent {sent:?}{}", context(&a, &b));
    assert_eq!(got.rx, round, "B received {got:?}{}", context(&a, &b));
    assert_eq!((pa.1, pb.2), (round, round), "weir: rx on pa, tx on pb");
    assert_eq!((pa.2, pb.1, pa.3, pb.3), (0, 0, 0, 0), "weir: nothing else");
    assert_eq!((sent.rx, got.tx), (0, 0));

    // B sends one burst (to the same unknown peer, flooded to A); weir learns
    // B's MAC on pb.
    b.cmd("stop");
    b.cmd("start tx_first 1");
    let back = a.wait_stats(15, |s| s.rx >= BURST);
    assert_eq!(back.rx, BURST, "A received {back:?}{}", context(&a, &b));
    let fdb = d.json(&["fdb", "show"]);
    let learned = fdb
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["mac"] == MAC_B)
        .unwrap_or_else(|| panic!("weir did not learn {MAC_B}: {fdb}"));
    assert_eq!(learned["port"], "pb", "{fdb}");

    // Round 2: A addresses B, a known unicast destination.
    a.cmd("stop");
    a.cmd(&format!("set eth-peer 0 {MAC_B}"));
    a.cmd(&format!("start tx_first {BURSTS}"));
    b.wait_stats(15, |s| s.rx >= 2 * round);
    std::thread::sleep(Duration::from_millis(500));
    let (sent, got) = (a.stats(), b.stats());
    let (pa, pb) = (port(&d, "pa"), port(&d, "pb"));
    println!(
        "{:.1}s: round 2 (to B's MAC): A {sent:?}, B {got:?}; weir pa {pa:?}, pb {pb:?}",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(
        sent,
        NicStats {
            rx: BURST,
            tx: 2 * round
        },
        "A{}",
        context(&a, &b)
    );
    assert_eq!(
        got,
        NicStats {
            rx: 2 * round,
            tx: BURST
        },
        "B{}",
        context(&a, &b)
    );
    assert_eq!(
        (pa.1, pa.2, pb.1, pb.2, pa.3, pb.3),
        (2 * round, BURST, BURST, 2 * round, 0, 0),
        "weir pa (rx, tx), pb (rx, tx), drops"
    );

    drop(a);
    drop(b);
    // Both frontends gone: links down, daemon still fine.
    let deadline = Instant::now() + Duration::from_secs(10);
    while port(&d, "pa").0 || port(&d, "pb").0 {
        assert!(
            Instant::now() < deadline,
            "links still up after testpmd quit"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(d);
    assert!(!dir.join("pa.sock").exists() && !dir.join("pb.sock").exists());
    let leftover: Vec<_> = std::fs::read_dir("/var/run/dpdk")
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("weirtp{}", std::process::id())))
                .collect()
        })
        .unwrap_or_default();
    assert!(leftover.is_empty(), "left in /var/run/dpdk: {leftover:?}");
    let _ = std::fs::remove_dir_all(&dir);
    println!("total {:.1}s", t0.elapsed().as_secs_f64());
}
