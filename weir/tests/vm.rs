//! VM end to end: two QEMU guests whose virtio-net NICs are vhost-user ports of
//! the real `weir run` daemon, in server mode (weir listens) and client mode
//! (QEMU listens, weir connects and reconnects), and with two queue pairs per
//! NIC (virtio-net multiqueue) used from two guest CPUs; port security
//! against a guest that takes its neighbour's addresses; the receive filter
//! that keeps other stations' unicast from a guest.
//!
//! The guests are built by `scripts/build-guest.sh` (cached in `target/vm-guest`;
//! the first run downloads Debian packages and installs QEMU if missing) and booted
//! by `scripts/vm-pair.sh`. They run under TCG, 1 vCPU (2 for multiqueue) and 256 MB each, so weir's
//! worker sleeps when idle (`idle_sleep_us`) to leave them CPU.
//!
//! Needs root (CI runs as root); fails, never skips, when something is missing.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

mod common;
use common::{port_entry, serial, tail, test_dir, Daemon, NsProcess};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("weir/ sits in the repository")
        .to_path_buf()
}

/// Serves `len` bytes of pattern in `dir/www/blob` over HTTP from namespace
/// `ns` at `bind`:8080 (python3's http.server); returns the server, which
/// stops when dropped, and the blob's md5.
fn serve_blob(ns: &weir_testkit::Netns, dir: &Path, len: usize, bind: &str) -> (NsProcess, String) {
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let mut blob = vec![0u8; len];
    weir_testkit::pattern_fill(u64::from(std::process::id()), 0, &mut blob);
    std::fs::write(www.join("blob"), &blob).unwrap();
    let md5 = md5_of(&www.join("blob"));
    let server = NsProcess::start(
        ns,
        &[
            "python3",
            "-m",
            "http.server",
            "8080",
            "--bind",
            bind,
            "--directory",
            www.to_str().unwrap(),
        ],
        &dir.join("http.log"),
    );
    (server, md5)
}

/// Builds (or finds cached) the guest kernel and initrd once per test binary.
fn guest_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = repo_root().join("target/vm-guest");
        let t0 = Instant::now();
        let out = Command::new("bash")
            .arg(repo_root().join("scripts/build-guest.sh"))
            .arg(&dir)
            .stdin(Stdio::null())
            .output()
            .expect("running scripts/build-guest.sh");
        assert!(
            out.status.success(),
            "scripts/build-guest.sh failed (the VM tests need root, apt and QEMU):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("guest ready in {:.1}s", t0.elapsed().as_secs_f64());
        dir
    })
}

/// One port's link and counters from `port list --json`.
#[derive(Debug, Default, Clone, Copy)]
struct PortSample {
    up: bool,
    rx: u64,
    tx: u64,
}

fn sample(ports: &serde_json::Value, name: &str) -> PortSample {
    let p = port_entry(ports, name);
    let n = |k: &str| p["stats"][k].as_u64().unwrap_or(0);
    PortSample {
        up: p["link"] == "up",
        rx: n("rx_packets"),
        tx: n("tx_packets"),
    }
}

/// vm1's and vm2's samples from one `port list`.
fn samples(d: &Daemon) -> [PortSample; 2] {
    let ports = d.ports();
    [sample(&ports, "vm1"), sample(&ports, "vm2")]
}

/// `scripts/vm-pair.sh` in its own process group; the group is terminated on drop
/// (the script then kills its QEMUs).
struct Pair {
    child: Child,
    out: PathBuf,
    dir: PathBuf,
}

impl Pair {
    /// Starts vm-pair.sh with `args`, words separated by spaces; a word
    /// `@/name` stands for `dir/name`.
    fn start(dir: &Path, args: &str) -> Pair {
        let args = args.split_whitespace().map(|w| match w.strip_prefix("@/") {
            Some(name) => dir.join(name).into_os_string(),
            None => w.into(),
        });
        let out = dir.join("vm-pair.out");
        let f = std::fs::File::create(&out).unwrap();
        let work = dir.join("pair");
        let child = Command::new("bash")
            .arg(repo_root().join("scripts/vm-pair.sh"))
            .arg("-g")
            .arg(guest_dir())
            .arg("-w")
            .arg(&work)
            .args(args)
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .process_group(0)
            .spawn()
            .expect("starting scripts/vm-pair.sh");
        Pair {
            child,
            out,
            dir: work,
        }
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits for vm-pair.sh to end; prints its output and returns it with
    /// whether the script succeeded.
    fn finish(&mut self) -> (bool, String) {
        let ok = self.child.wait().unwrap().success();
        let out = self.output();
        println!("{out}");
        (ok, out)
    }

    fn console(&self, guest: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{guest}.console.log")))
            .unwrap_or_default()
            .replace('\r', "")
    }

    /// Echo replies g1 has printed so far.
    fn replies(&self) -> usize {
        self.console("g1")
            .lines()
            .filter(|l| l.contains("bytes from 198.18.0.2"))
            .count()
    }

    fn signal_group(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        if !self.running() {
            return;
        }
        self.signal_group("-TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        self.signal_group("-KILL");
        let _ = self.child.wait();
    }
}

/// What g1 printed of its NIC: the negotiated virtio feature bits, bit 0
/// first, then ` mtu=N`.
fn g1_features(out: &str) -> &str {
    out.lines()
        .find_map(|l| l.split("g1: virtio features=").nth(1))
        .unwrap_or_else(|| panic!("no virtio features in:\n{out}"))
}

/// Whether feature bit `n` is set in [`g1_features`].
fn feature(features: &str, n: usize) -> bool {
    features.as_bytes().get(n) == Some(&b'1')
}

/// TSO both ways: GUEST_TSO4/6 (bits 7, 8) and HOST_TSO4/6 (11, 12).
fn assert_tso_negotiated(features: &str) {
    assert!(
        [7, 8, 11, 12].iter().all(|&n| feature(features, n)),
        "GUEST_TSO4/6, HOST_TSO4/6: {features}"
    );
}

/// Fails the test with the script's output and weir's log unless vm-pair.sh
/// succeeded.
fn pair_ok(ok: bool, out: &str, d: &Daemon) {
    assert!(
        ok,
        "vm-pair.sh failed:\n{out}\nweir log:\n{}",
        tail(&d.log(), 30)
    );
}

/// What every test here does first: checks for root, waits for its turn
/// ([`serial`]: four TCG guests on a small host starve each other), makes
/// sure the guest image exists, and gives it an empty directory named after
/// `tag`.
fn begin(tag: &str) -> (std::sync::MutexGuard<'static, ()>, PathBuf) {
    require_root();
    let turn = serial();
    guest_dir();
    (turn, test_dir(&format!("vm-{tag}")))
}

fn require_root() {
    let uid = rustix::process::getuid();
    assert!(
        uid.is_root(),
        "the VM tests need root (QEMU, apt-get, shared guest memory)"
    );
}

fn config(dir: &Path, mode: &str) -> String {
    config_queues(dir, mode, 1)
}

/// Two vhost-user ports vm1 and vm2 on bridge br0, `queues` pairs each.
fn config_queues(dir: &Path, mode: &str, queues: u16) -> String {
    common::vhost_config(dir, &["vm1", "vm2"], mode, queues, 8192)
}

#[test]
fn vms_ping_and_transfer_server_mode() {
    let (_one_pair, dir) = begin("server");
    let t0 = Instant::now();
    let mut d = Daemon::start(&dir, &config(&dir, "server"));
    let mut pair = Pair::start(
        &dir,
        "--mode server -t 80 --xfer 4 --iperf 3 @/vm1.sock @/vm2.sock",
    );

    // While the guests run: both links up at once, and the counters moving.
    let mut both_up_at = None;
    let mut last = [PortSample::default(); 2];
    while pair.running() {
        assert!(d.alive(), "weir died during the run: {}", d.log());
        let now = samples(&d);
        if now[0].up && now[1].up {
            both_up_at.get_or_insert(t0.elapsed());
            last = now;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "vm-pair.sh hangs");
        std::thread::sleep(Duration::from_millis(500));
    }
    let (ok, out) = pair.finish();
    println!(
        "weir, last seen with both links up: vm1 {:?}, vm2 {:?}; both up {both_up_at:?} \
         after the daemon started",
        last[0], last[1]
    );
    assert!(
        both_up_at.is_some(),
        "weir never showed both vhost-user links up while the guests ran.\n\
         weir log:\n{}\nvm-pair:\n{out}",
        tail(&d.log(), 30)
    );
    pair_ok(ok, &out, &d);
    for (name, s) in ["vm1", "vm2"].iter().zip(last) {
        assert!(s.rx > 0 && s.tx > 0, "{name} counters did not move: {s:?}");
    }
    let rate = out
        .lines()
        .find_map(|l| l.split("g1: iperf3 ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|r| r.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no iperf3 rate in:\n{out}"));
    assert!(rate > 0.0, "iperf3 rate {rate}");
    assert!(
        out.lines().any(|l| l.contains("g1: xfer 4MB want=")),
        "{out}"
    );
    // Checksum offload and TSO were negotiated, so the TCP transfers above ran
    // with partial checksums and 64 KiB TSO frames relayed guest to guest
    // (both guests take TSO: frames pass whole). (QEMU emulates the config
    // space and offers MTU only with its own `host_mtu`: see
    // `vms_with_host_mtu_tell_weir_their_mtu`.)
    let features = g1_features(&out);
    assert!(
        feature(features, 0) && feature(features, 1),
        "CSUM, GUEST_CSUM: {features}"
    );
    assert_tso_negotiated(features);
    assert!(features.ends_with("mtu=1500"), "{features}");
    println!("total {:.1}s", t0.elapsed().as_secs_f64());
}

#[test]
fn vms_client_mode_survive_weir_restart() {
    let (_one_pair, dir) = begin("client");
    let t0 = Instant::now();
    // g2 only answers; g1 pings five times a second until the test ends.
    std::fs::write(
        dir.join("g2.sh"),
        "ip link set eth0 up && ip addr add 198.18.0.2/24 dev eth0 || exit 1\n\
         echo \"WEIRVM: g2 up\"\nsleep 300\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("g1.sh"),
        "ip link set eth0 up && ip addr add 198.18.0.1/24 dev eth0 || exit 1\n\
         echo \"WEIRVM: g1 up\"\nping -i 0.2 -W 1 -c 1500 198.18.0.2\n",
    )
    .unwrap();
    let (s1, s2) = (dir.join("vm1.sock"), dir.join("vm2.sock"));
    // QEMU listens first; weir, started after, connects.
    let mut pair = Pair::start(
        &dir,
        "--mode client -t 300 --g1 @/g1.sh --g2 @/g2.sh @/vm1.sock @/vm2.sock",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(s1.exists() && s2.exists()) {
        assert!(pair.running(), "vm-pair.sh exited:\n{}", pair.output());
        assert!(Instant::now() < deadline, "QEMU did not create the sockets");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut d = Daemon::start(&dir, &config(&dir, "client"));

    let wait_replies = |pair: &mut Pair, d: &Daemon, at_least: usize, secs: u64, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let n = pair.replies();
            if n >= at_least {
                return n;
            }
            assert!(pair.running(), "vm-pair.sh exited:\n{}", pair.output());
            assert!(
                Instant::now() < deadline,
                "{what}: {n} echo replies after {secs}s (want {at_least}).\nports: {}\n\
                 weir log:\n{}\ng1 console:\n{}",
                d.ports(),
                tail(&d.log(), 30),
                tail(&pair.console("g1"), 15)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };

    let first = wait_replies(&mut pair, &d, 10, 60, "before the restart");
    let before = samples(&d);
    println!(
        "{:.1}s: {first} replies; weir run 1: vm1 {:?}, vm2 {:?}",
        t0.elapsed().as_secs_f64(),
        before[0],
        before[1]
    );
    assert!(before.iter().all(|s| s.up && s.rx > 0 && s.tx > 0));

    // Kill weir with no chance to clean up; the guests keep running.
    d.kill_hard();
    std::thread::sleep(Duration::from_millis(1500));
    let outage_start = pair.replies();
    std::thread::sleep(Duration::from_secs(3));
    let outage_end = pair.replies();
    println!(
        "{:.1}s: weir killed; replies {outage_start} -> {outage_end} during 3 s without it",
        t0.elapsed().as_secs_f64()
    );
    assert!(
        outage_end <= outage_start + 1,
        "replies kept coming with weir dead: {outage_start} -> {outage_end}"
    );

    // Same configuration again: weir reconnects to the listening QEMUs.
    d.restart();
    let after = wait_replies(&mut pair, &d, outage_end + 10, 45, "after the restart");
    let counters = samples(&d);
    println!(
        "{:.1}s: {after} replies; weir run 2: vm1 {:?}, vm2 {:?}",
        t0.elapsed().as_secs_f64(),
        counters[0],
        counters[1]
    );
    assert!(
        counters.iter().all(|s| s.up && s.rx > 0 && s.tx > 0),
        "{counters:?}"
    );
    assert!(pair.running(), "the guests were not restarted");
    assert!(d.alive(), "{}", d.log());
    println!("total {:.1}s", t0.elapsed().as_secs_f64());
}

/// Per-queue counters of one port from `port list --json`: (rx, tx) per queue,
/// and the port's totals.
fn queue_samples(ports: &serde_json::Value, name: &str) -> (Vec<(u64, u64)>, PortSample, u64) {
    let p = port_entry(ports, name);
    let per_queue = p["queue_stats"]
        .as_array()
        .unwrap_or_else(|| panic!("no queue_stats for {name}: {p}"))
        .iter()
        .map(|q| {
            (
                q["rx_packets"].as_u64().unwrap(),
                q["tx_packets"].as_u64().unwrap(),
            )
        })
        .collect();
    (
        per_queue,
        sample(ports, name),
        p["queues"].as_u64().unwrap_or(0),
    )
}

/// Multiqueue: both NICs have two queue pairs (`queues = 2` in weir, `queues=2`
/// on the netdev, `mq=on` on the device) and the guests two vCPUs, so the guest
/// driver enables both pairs and its XPS map sends from CPU n on tx queue n. g1
/// pings g2 from each CPU (`taskset`), then runs iperf3 with 4 streams; weir must
/// receive on both of vm1's queues.
#[test]
fn vm_multiqueue_uses_both_queue_pairs() {
    const PINGS: u32 = 40;
    let (_one_pair, dir) = begin("mq");
    let t0 = Instant::now();
    std::fs::write(
        dir.join("g2.sh"),
        "ip link set eth0 up && ip addr add 198.18.0.2/24 dev eth0 || exit 1\n\
         iperf3 -s -D\n\
         echo \"WEIRVM: g2 cpus=$(nproc) queues=$(ls /sys/class/net/eth0/queues | tr '\\n' ' ')\"\n\
         timeout 80 nc -l -p 7777 < /dev/null > /dev/null\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("g1.sh"),
        format!(
            r#"ip link set eth0 up && ip addr add 198.18.0.1/24 dev eth0 || exit 1
Q=/sys/class/net/eth0/queues
echo "WEIRVM: g1 cpus=$(nproc) queues=$(ls $Q | tr '\n' ' ')xps=$(cat $Q/tx-0/xps_cpus),$(cat $Q/tx-1/xps_cpus 2>/dev/null)"
[ -d $Q/tx-1 ] && [ -d $Q/rx-1 ] || {{ echo "WEIRVM: FAIL the driver enabled one queue pair"; exit 1; }}
tries=0
until ping -c 1 -W 1 198.18.0.2 > /dev/null 2>&1; do
  tries=$((tries + 1))
  [ $tries -lt 40 ] || {{ echo "WEIRVM: FAIL no ping reply"; exit 1; }}
done
echo "WEIRVM: first reply after $tries tries"
for c in 0 1; do taskset -c $c ping -c {PINGS} -i 0.05 -W 2 198.18.0.2 > /tmp/ping$c 2>&1 & done
wait
fail=0
for c in 0 1; do
  rx=$(sed -n 's/.* \([0-9]*\) packets received.*/\1/p' /tmp/ping$c)
  echo "WEIRVM: cpu$c ping received ${{rx:-0}}/{PINGS}"
  [ "${{rx:-0}}" -eq {PINGS} ] || fail=1
done
timeout 30 iperf3 -c 198.18.0.2 -t 3 -P 4 -f m > /tmp/iperf 2>&1
rate=$(awk '/SUM.*receiver/ {{print $(NF-2), $(NF-1)}}' /tmp/iperf | tail -n 1)
echo "WEIRVM: iperf3 ${{rate:-none}}"
[ -n "$rate" ] || {{ cat /tmp/iperf; fail=1; }}
echo done | timeout 5 nc 198.18.0.2 7777
exit $fail
"#
        ),
    )
    .unwrap();
    let mut d = Daemon::start(&dir, &config_queues(&dir, "server", 2));
    let mut pair = Pair::start(
        &dir,
        "--mode server -t 80 --smp 2 --queues 2 --g1 @/g1.sh --g2 @/g2.sh @/vm1.sock @/vm2.sock",
    );
    let mut both_up_at = None;
    while pair.running() {
        assert!(d.alive(), "weir died during the run: {}", d.log());
        if samples(&d).iter().all(|s| s.up) {
            both_up_at.get_or_insert(t0.elapsed());
        }
        assert!(t0.elapsed() < Duration::from_secs(100), "vm-pair.sh hangs");
        std::thread::sleep(Duration::from_millis(500));
    }
    let (ok, out) = pair.finish();
    pair_ok(ok, &out, &d);
    assert!(
        both_up_at.is_some(),
        "weir never showed both links up while the guests ran"
    );
    // The counters outlive the connections: read them once the guests are gone.
    let ports = d.ports();
    let (vm1_queues, vm1, n1) = queue_samples(&ports, "vm1");
    let (vm2_queues, vm2, n2) = queue_samples(&ports, "vm2");
    println!(
        "weir per queue (rx, tx): vm1 {vm1_queues:?} total {vm1:?}; vm2 {vm2_queues:?} \
         total {vm2:?}; both up {both_up_at:?} after the daemon started; drops: vm1 {}, vm2 {}",
        ports[0]["stats"]["drops"], ports[1]["stats"]["drops"]
    );
    assert_eq!((n1, n2), (2, 2), "queues per port");
    assert_eq!(vm1_queues.len(), 2, "{ports}");
    assert_eq!(vm2_queues.len(), 2, "{ports}");
    for (i, (rx, _)) in vm1_queues.iter().enumerate() {
        assert!(
            *rx > 0,
            "vm1 queue {i} received nothing; per queue {vm1_queues:?}\ng1:\n{}",
            tail(&pair.console("g1"), 20)
        );
    }
    // The port's counters are the sum of its queues'.
    for (q, total) in [(&vm1_queues, vm1), (&vm2_queues, vm2)] {
        assert_eq!(q.iter().map(|x| x.0).sum::<u64>(), total.rx);
        assert_eq!(q.iter().map(|x| x.1).sum::<u64>(), total.tx);
    }
    assert!(vm2.rx > 0 && vm2.tx > 0 && vm1.tx > 0, "{vm1:?} {vm2:?}");
    assert!(
        out.lines().any(|l| l.contains("g1: cpu1 ping received")),
        "{out}"
    );
    println!("total {:.1}s", t0.elapsed().as_secs_f64());
}

#[test]
fn vms_with_host_mtu_tell_weir_their_mtu() {
    let (_one_pair, dir) = begin("mtu");
    let mut d = Daemon::start(&dir, &config(&dir, "server"));
    let t0 = Instant::now();
    let mut pair = Pair::start(
        &dir,
        "--host-mtu 1400 -t 80 --xfer 1 --iperf 0 @/vm1.sock @/vm2.sock",
    );
    // QEMU sends VHOST_USER_NET_SET_MTU before it starts the rings; weir shows
    // it while the guests run.
    let mut seen = [None, None];
    while pair.running() {
        assert!(d.alive(), "weir died during the run: {}", d.log());
        let ports = d.ports();
        for (i, name) in ["vm1", "vm2"].iter().enumerate() {
            if let Some(m) = port_entry(&ports, name)["mtu"].as_u64() {
                seen[i] = Some(m);
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "vm-pair.sh hangs");
        std::thread::sleep(Duration::from_millis(500));
    }
    let (ok, out) = pair.finish();
    pair_ok(ok, &out, &d);
    assert_eq!(seen, [Some(1400), Some(1400)], "{}", tail(&d.log(), 30));
    // weir holds frames to a guest to its MTU; the guests' own full-size
    // frames (1414 bytes at MTU 1400) are exactly at the limit and pass.
    for name in ["vm1", "vm2"] {
        let drops = &d.port_json(name)["stats"]["drops"];
        assert!(drops.get("mtu-exceeded").is_none(), "{name}: {drops}");
    }
    // The guest adopted the MTU QEMU offered.
    let features = g1_features(&out);
    assert!(features.ends_with("mtu=1400"), "{features}");
}

fn md5_of(path: &Path) -> String {
    let out = Command::new("md5sum").arg(path).output().expect("md5sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A QEMU guest (vhost-user, TSO negotiated) and a network namespace on an
/// `afpacket` port, both with their default offloads: an md5-verified
/// transfer each way and iperf3 each way, and the port counters show that
/// TCP super-frames crossed whole in both directions (the guest's 64 KiB
/// frames leave through the AF_PACKET port's TSO socket, the namespace's
/// arrive with their virtio-net header and go to the guest as they are),
/// none cut by weir.
#[test]
fn vm_and_namespace_on_afpacket_exchange_tso_frames() {
    weir_testkit::require_root_and_ip().expect("needs root and iproute2");
    let (_one_pair, dir) = begin("afpacket");
    let t0 = Instant::now();
    let tag = format!("wv{}", std::process::id() % 100_000);
    let ns = weir_testkit::VethHost::create(&format!("{tag}-n"), &format!("{tag}n"), "198.18.0.2")
        .unwrap();
    let config = common::vhost_config(&dir, &["vm"], "server", 1, 8192)
        + &format!(
            "[[port]]\nname = \"pa\"\ntype = \"afpacket\"\niface = \"{}\"\nbridge = \"br0\"\n",
            ns.host_if
        );
    let mut d = Daemon::start(&dir, &config);

    // The namespace serves a blob over HTTP and runs an iperf3 server.
    let (_http, want) = serve_blob(&ns.ns, &dir, 8 << 20, "198.18.0.2");
    let _iperf = NsProcess::start(&ns.ns, &["iperf3", "-s"], &dir.join("iperf3.log"));

    // The guest: fetch the namespace's blob, iperf3 both ways, then serve a
    // blob of its own until the test has fetched it.
    let g1 = dir.join("g1.sh");
    std::fs::write(
        &g1,
        r#"ip link set eth0 up && ip addr add 198.18.0.1/24 dev eth0 || { echo "WEIRVM: no eth0"; exit 1; }
tries=0
until ping -c 1 -W 1 198.18.0.2 > /dev/null 2>&1; do
  tries=$((tries + 1))
  [ $tries -lt 60 ] || { echo "WEIRVM: FAIL no ping reply"; exit 1; }
done
echo "WEIRVM: virtio features=$(cat /sys/class/net/eth0/device/features)"
fail=0
got=$(timeout 90 wget -q -O - http://198.18.0.2:8080/blob | md5sum | cut -d' ' -f1)
echo "WEIRVM: down got=$got"
[ "$got" = "WANT" ] || fail=1
for dir in "" "-R"; do
  timeout 40 iperf3 -c 198.18.0.2 -t 3 $dir -f m > /tmp/iperf 2>&1
  rate=$(awk '/receiver/ {print $(NF-2), $(NF-1)}' /tmp/iperf | tail -n 1)
  echo "WEIRVM: iperf3$dir ${rate:-none}"
  [ -n "$rate" ] || { cat /tmp/iperf; fail=1; }
done
mkdir -p /www
dd if=/dev/urandom of=/www/blob bs=1M count=8 2>/dev/null
httpd -p 8080 -h /www
echo "WEIRVM: serving md5=$(md5sum /www/blob | cut -d' ' -f1)"
timeout 90 nc -l -p 7777 < /dev/null > /dev/null || fail=1
exit $fail
"#
        .replace("WANT", &want),
    )
    .unwrap();
    let mut pair = Pair::start(&dir, "--one --mode server -t 200 --g1 @/g1.sh @/vm.sock");

    // The upload: once the guest serves, fetch its blob from the namespace.
    let mut up = None;
    while pair.running() {
        assert!(d.alive(), "weir died during the run: {}", d.log());
        assert!(t0.elapsed() < Duration::from_secs(240), "vm-pair.sh hangs");
        let served = pair
            .console("g1")
            .lines()
            .find_map(|l| l.strip_prefix("WEIRVM: serving md5=").map(str::to_string));
        if let (Some(md5), None) = (served, &up) {
            let got = ns
                .ns
                .exec(&[
                    "python3",
                    "-c",
                    "import hashlib, urllib.request\n\
                     d = urllib.request.urlopen('http://198.18.0.1:8080/blob', timeout=90).read()\n\
                     print(hashlib.md5(d).hexdigest(), len(d))",
                ])
                .unwrap_or_else(|e| panic!("fetching the guest's blob: {e:#}\n{}", d.log()));
            let _ = ns.ns.exec(&[
                "python3",
                "-c",
                "import socket\n\
                 socket.create_connection(('198.18.0.1', 7777), 10).sendall(b'done')",
            ]);
            up = Some((md5.trim().to_string(), got));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let (ok, out) = pair.finish();
    pair_ok(ok, &out, &d);
    let (served, got) = up.unwrap_or_else(|| panic!("the guest never served its blob:\n{out}"));
    assert_eq!(
        got.split_whitespace().collect::<Vec<_>>(),
        [served.as_str(), "8388608"],
        "VM -> namespace transfer"
    );
    assert!(out.contains(&format!("g1: down got={want}")), "{out}");
    let features = g1_features(&out);
    assert_tso_negotiated(features);

    // Super-frames both ways, none segmented by weir, nothing malformed.
    let n = |port: &str, key: &str| d.port_counter(port, key);
    let stats = d.ok(&["stats"]);
    println!("{stats}");
    assert!(
        n("vm", "rx_tso_packets") > 0,
        "guest sent no TSO frames\n{stats}"
    );
    assert!(n("pa", "tx_tso_packets") > 0, "none left whole\n{stats}");
    assert!(
        n("pa", "rx_tso_packets") > 0,
        "namespace sent no TSO frames\n{stats}"
    );
    assert!(
        n("vm", "tx_tso_packets") > 0,
        "none reached the guest whole\n{stats}"
    );
    for p in ["vm", "pa"] {
        assert_eq!(n(p, "tso_segmented"), 0, "{p}: weir cut frames\n{stats}");
        let drops = &d.port_json(p)["stats"]["drops"];
        for reason in ["malformed", "no-tso-buffers", "mtu-exceeded"] {
            assert_eq!(drops[reason].as_u64().unwrap_or(0), 0, "{p}: {drops}");
        }
    }
    println!("total {:.1}s", t0.elapsed().as_secs_f64());
}

/// g1's script for [`vm_port_security_cuts_a_spoofing_guest_off_and_not_its_neighbour`]:
/// up on its own address, then g2's address, its own again, g2's MAC, its
/// own again. It goes from one step to the next when the test's ARP request
/// from 198.18.70.20N has come in, which the guest sees as a neighbour
/// entry (frames to a spoofing guest still arrive, only what it sends is
/// dropped); while it spoofs it keeps trying meanwhile (a gratuitous ARP and
/// a ping of the namespace each second or so).
const SPOOFING_GUEST: &str = r#"A=198.18.70
ip link set eth0 up && ip addr add $A.1/24 dev eth0 || exit 1
reach() { # IP TRIES: until one ping reply
  t=0
  until ping -c 1 -W 1 $1 > /dev/null 2>&1; do
    t=$((t + 1)); [ $t -lt $2 ] || return 1
  done
}
go() { ip neigh show | grep -q "^$A.20$1 .*lladdr"; }
wait_go() { # N
  n=0
  until go $1; do
    sleep 0.2; n=$((n + 1)); [ $n -lt 600 ] || { echo "WEIRVM: FAIL no go $1"; exit 1; }
  done
}
spoof_until_go() { # N WHAT CLAIMED-IP
  n=0 got=0
  until go $1; do
    arping -U -c 1 -w 1 -I eth0 $3 > /dev/null 2>&1
    ping -c 1 -W 1 $A.3 > /dev/null 2>&1 && got=$((got + 1))
    n=$((n + 1)); [ $n -lt 120 ] || { echo "WEIRVM: FAIL no go $1"; exit 1; }
  done
  echo "WEIRVM: g1 $2 replies=$got attempts=$n"
}
reach $A.2 90 || { echo "WEIRVM: FAIL g1 got no reply from g2"; exit 1; }
reach $A.3 10 || { echo "WEIRVM: FAIL g1 got no reply from the namespace"; exit 1; }
echo "WEIRVM: g1 legit"
wait_go 0
ip addr flush dev eth0 && ip addr add $A.2/24 dev eth0 || exit 1
echo "WEIRVM: g1 spoofs ip"
spoof_until_go 1 spoof-ip $A.2
ip addr flush dev eth0 && ip addr add $A.1/24 dev eth0 || exit 1
reach $A.3 20 || { echo "WEIRVM: FAIL no reply with the address restored"; exit 1; }
echo "WEIRVM: g1 restored ip"
wait_go 2
ip link set eth0 down && ip link set eth0 address 52:54:00:00:00:02 && ip link set eth0 up || exit 1
echo "WEIRVM: g1 spoofs mac"
spoof_until_go 3 spoof-mac $A.1
ip link set eth0 down && ip link set eth0 address 52:54:00:00:00:01 && ip link set eth0 up || exit 1
reach $A.3 20 || { echo "WEIRVM: FAIL no reply with the MAC restored"; exit 1; }
echo "WEIRVM: g1 restored mac"
wait_go 4
echo "WEIRVM: g1 done"
echo done | nc $A.2 7777
exit 0
"#;

/// Port security between two guests: vm1 and vm2 are vhost-user ports with
/// `mac` (QEMU's `-device ...,mac=` is the same), `port_security` and
/// `ips`; a namespace sits on an afpacket port. The guests and the
/// namespace reach each other. Then g1 takes g2's IP address, and later
/// g2's MAC: everything it sends is dropped and counted (`spoofed-ip`,
/// `spoofed-mac`), its claims reach no one (the namespace's ARP entry and
/// weir's FDB still name g2), and the namespace still reaches g2. With its
/// own addresses back, g1 is reachable again.
#[test]
fn vm_port_security_cuts_a_spoofing_guest_off_and_not_its_neighbour() {
    use weir_testkit::frame::{self, Mac};
    use weir_testkit::packet::RawSocket;
    weir_testkit::require_root_and_ip().expect("needs root and iproute2");
    let (_one_pair, dir) = begin("security");
    let t0 = Instant::now();
    let ip = |last: u8| format!("198.18.70.{last}");
    let mac = |last: u8| format!("52:54:00:00:00:{last:02x}");
    let tag = format!("wv{}", std::process::id() % 100_000);
    let ns = weir_testkit::VethHost::create_quiet(&format!("{tag}-s"), &format!("{tag}s"), &ip(3))
        .unwrap();
    // The MACs are vm-pair.sh's: QEMU gives g1 and g2 these.
    let mut config = common::vhost_config(&dir, &[], "server", 1, 8192);
    for (name, last) in [("vm1", 1), ("vm2", 2)] {
        config += &format!(
            "[[port]]\nname = \"{name}\"\ntype = \"vhost-user\"\nsocket = \"{}\"\n\
             bridge = \"br0\"\nmac = \"{}\"\nport_security = true\nips = [\"{}\"]\n",
            dir.join(format!("{name}.sock")).display(),
            mac(last),
            ip(last)
        );
    }
    config += &common::kernel_port("pa", "afpacket", &ns.host_if, "");
    let mut d = Daemon::start(&dir, &config);
    std::fs::write(
        dir.join("g2.sh"),
        "ip link set eth0 up && ip addr add 198.18.70.2/24 dev eth0 || exit 1\n\
         echo \"WEIRVM: g2 up\"\ntimeout 200 nc -l -p 7777 < /dev/null > /dev/null\n",
    )
    .unwrap();
    std::fs::write(dir.join("g1.sh"), SPOOFING_GUEST).unwrap();
    let mut pair = Pair::start(
        &dir,
        "--mode server -t 200 --g1 @/g1.sh --g2 @/g2.sh @/vm1.sock @/vm2.sock",
    );

    // Waits for g1 to print `line`.
    let wait_g1 = |pair: &mut Pair, d: &mut Daemon, line: &str| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !pair
            .console("g1")
            .lines()
            .any(|l| l == format!("WEIRVM: {line}"))
        {
            assert!(d.alive(), "weir died: {}", d.log());
            assert!(
                pair.running() && Instant::now() < deadline,
                "no `{line}` from g1:\n{}\nweir log:\n{}",
                pair.output() + &pair.console("g1"),
                tail(&d.log(), 30)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let spoofed = |d: &Daemon, port: &str, reason: &str| {
        d.port_json(port)["stats"]["drops"][reason]
            .as_u64()
            .unwrap_or(0)
    };
    // The namespace pings `last`: every echo answered.
    let reaches = |d: &Daemon, last: u8, what: &str| {
        let out = common::ping(&ns.ns, &ip(last), 3, "0.2")
            .unwrap_or_else(|e| panic!("{what}: ping {}: {e}\n{}", ip(last), d.ports()));
        assert_eq!(common::loss_pct(&out), 0.0, "{what}: {out}");
    };
    // The ports bridge br0 has learned `m` on.
    let learned_on = |d: &Daemon, m: &str| -> Vec<String> {
        d.json(&["fdb", "show", "--bridge", "br0"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["mac"] == m)
            .map(|e| e["port"].as_str().unwrap().to_string())
            .collect()
    };
    // Tells g1 to go on: ARP requests from 198.18.70.20N (for both the
    // addresses g1 may hold) until g1 prints `next`.
    let go = |pair: &mut Pair, d: &mut Daemon, n: u8, next: &str| {
        let sock = RawSocket::open_sender_in(&ns.ns, "eth0").unwrap();
        let me = Mac([0x02, 0x77, 0x73, 0, 0, n]);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !pair
            .console("g1")
            .lines()
            .any(|l| l == format!("WEIRVM: {next}"))
        {
            for target in [1, 2] {
                let req = frame::arp_request(
                    me,
                    ip(200 + n).parse().unwrap(),
                    ip(target).parse().unwrap(),
                );
                sock.send(&req).unwrap();
            }
            assert!(
                d.alive() && pair.running() && Instant::now() < deadline,
                "g1 did not go on to `{next}`:\n{}",
                pair.output() + &pair.console("g1")
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };

    // Everyone reaches everyone from their own addresses; nothing dropped.
    wait_g1(&mut pair, &mut d, "g1 legit");
    println!("{:.1}s: guests up", t0.elapsed().as_secs_f64());
    reaches(&d, 1, "g1 before");
    reaches(&d, 2, "g2 before");
    for (port, reason) in [
        ("vm1", "spoofed-ip"),
        ("vm1", "spoofed-mac"),
        ("vm2", "spoofed-ip"),
    ] {
        assert_eq!(
            spoofed(&d, port, reason),
            0,
            "{port} {reason}: {}",
            d.ports()
        );
    }

    // 1. g1 claims g2's address: cut off and counted; the namespace still
    //    reaches g2 and still has g2's MAC for it.
    go(&mut pair, &mut d, 0, "g1 spoofs ip");
    let counted = vhost_user::testguest::wait_until(30, || spoofed(&d, "vm1", "spoofed-ip") >= 3);
    assert!(counted, "g1's spoofed frames not counted: {}", d.ports());
    reaches(&d, 2, "g2 while g1 claims its address");
    let neigh = ns.ns.exec(&["ip", "neigh", "show", &ip(2)]).unwrap();
    assert!(
        neigh.contains(&mac(2)),
        "the namespace's entry for g2: {neigh}"
    );
    go(&mut pair, &mut d, 1, "g1 restored ip");
    reaches(&d, 1, "g1 with its address back");

    // 2. g1 takes g2's MAC: cut off and counted; weir still has g2's MAC
    //    on vm2 only, and the namespace still reaches g2.
    go(&mut pair, &mut d, 2, "g1 spoofs mac");
    let counted = vhost_user::testguest::wait_until(30, || spoofed(&d, "vm1", "spoofed-mac") >= 3);
    assert!(
        counted,
        "g1's frames from g2's MAC not counted: {}",
        d.ports()
    );
    assert_eq!(learned_on(&d, &mac(2)), ["vm2"], "g2's MAC moved");
    reaches(&d, 2, "g2 while g1 uses its MAC");
    go(&mut pair, &mut d, 3, "g1 restored mac");
    reaches(&d, 1, "g1 with its MAC back");
    go(&mut pair, &mut d, 4, "g1 done");

    let (ok, out) = pair.finish();
    pair_ok(ok, &out, &d);
    // g1 never got an answer while it spoofed.
    for what in ["spoof-ip", "spoof-mac"] {
        assert!(
            out.lines()
                .any(|l| l.contains(&format!("g1: g1 {what} replies=0 "))),
            "{what}:\n{out}"
        );
    }
    // `weir stats` and `weir port show` count the drops on vm1, none on vm2.
    let stats = d.json(&["stats"]);
    let show = d.json(&["port", "show", "vm1"]);
    for reason in ["spoofed-ip", "spoofed-mac"] {
        let n = port_entry(&stats["ports"], "vm1")["stats"]["drops"][reason].as_u64();
        assert!(n.is_some_and(|n| n >= 3), "{reason} in stats: {stats}");
        assert_eq!(show["stats"]["drops"][reason].as_u64(), n, "{show}");
        assert_eq!(spoofed(&d, "vm2", reason), 0, "vm2 {reason}");
    }
    assert_eq!(show["settings"]["mac"], mac(1));
    println!(
        "vm1 drops {}; total {:.1}s",
        show["stats"]["drops"],
        t0.elapsed().as_secs_f64()
    );
}

/// g1's script for [`vm_receive_filter_keeps_other_stations_unicast_from_the_guest`]:
/// up and one ping of the namespace, then the frames its NIC received (the
/// driver's count, whatever the stack does with them after) every half
/// second, until the test connects to port 7777.
const COUNTING_GUEST: &str = r#"ip link set eth0 up && ip addr add 198.18.71.1/24 dev eth0 || exit 1
t=0
until ping -c 1 -W 1 198.18.71.2 > /dev/null 2>&1; do
  t=$((t + 1)); [ $t -lt 90 ] || { echo "WEIRVM: FAIL no reply from the namespace"; exit 1; }
done
(nc -l -p 7777 < /dev/null > /dev/null; touch /tmp/done) &
n=0
until [ -e /tmp/done ]; do
  echo "WEIRVM: rx $(cat /sys/class/net/eth0/statistics/rx_packets)"
  sleep 0.5; n=$((n + 1)); [ $n -lt 400 ] || { echo "WEIRVM: FAIL never released"; exit 1; }
done
echo "WEIRVM: done"
exit 0
"#;

/// The receive filter of a vhost-user port with a `mac`, with QEMU as the
/// frontend (which serves the control queue itself, so the filter is the
/// `mac`'s): a namespace on an afpacket port of the same bridge sends raw
/// frames. Unicast to another station's MAC is dropped and counted as
/// `rx-filter` on the namespace's port, and the guest's NIC never sees it;
/// unicast to the guest's MAC and broadcast arrive. With `weir port set vm
/// rx_filter=false` the other station's unicast reaches the guest; `port
/// clear` filters it again.
#[test]
fn vm_receive_filter_keeps_other_stations_unicast_from_the_guest() {
    use weir_testkit::frame::{self, Mac};
    use weir_testkit::packet::RawSocket;
    weir_testkit::require_root_and_ip().expect("needs root and iproute2");
    let (_one_pair, dir) = begin("rxfilter");
    let t0 = Instant::now();
    let tag = format!("wv{}", std::process::id() % 100_000);
    let ns = weir_testkit::VethHost::create_quiet(
        &format!("{tag}-r"),
        &format!("{tag}r"),
        "198.18.71.2",
    )
    .unwrap();
    // vm-pair.sh's g1 has this MAC (QEMU's -device ...,mac=).
    let guest = Mac([0x52, 0x54, 0, 0, 0, 1]);
    let mut config = common::vhost_config(&dir, &[], "server", 1, 8192);
    config += &format!(
        "[[port]]\nname = \"vm\"\ntype = \"vhost-user\"\nsocket = \"{}\"\n\
         bridge = \"br0\"\nmac = \"{guest}\"\n",
        dir.join("vm.sock").display()
    );
    config += &common::kernel_port("pa", "afpacket", &ns.host_if, "");
    let mut d = Daemon::start(&dir, &config);
    std::fs::write(dir.join("g1.sh"), COUNTING_GUEST).unwrap();
    let mut pair = Pair::start(&dir, "--one --mode server -t 200 --g1 @/g1.sh @/vm.sock");

    // The guest's counts so far, one every half second.
    let counts = |pair: &Pair| -> Vec<u64> {
        pair.console("g1")
            .lines()
            .filter_map(|l| l.strip_prefix("WEIRVM: rx ")?.trim().parse().ok())
            .collect()
    };
    // The guest's count once at least `least` and steady for a second
    // (three lines alike): every frame weir gave it is counted.
    let settled = |pair: &mut Pair, d: &mut Daemon, least: u64| -> u64 {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let c = counts(pair);
            if let [.., a, b, c] = c[..] {
                if a == b && b == c && c >= least {
                    return c;
                }
            }
            assert!(d.alive(), "weir died: {}", d.log());
            assert!(
                pair.running() && Instant::now() < deadline,
                "the guest's count stayed below {least}: {c:?}\n{}\nvm: {}",
                pair.output(),
                d.json(&["port", "show", "vm"])
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let filtered = |d: &Daemon| drop_count(d, "pa", "rx-filter");
    let sock = RawSocket::open_sender_in(&ns.ns, "eth0").unwrap();
    let src = Mac([0x02, 0x77, 0x72, 0, 0, 9]);
    let other = Mac([0x52, 0x54, 0, 0, 0, 0x99]);
    // `n` frames to `dst` (IEEE local experimental EtherType), in tens.
    let send = |dst: Mac, n: usize| {
        let f = frame::ethernet(dst, src, 0x88b5, b"weir receive filter");
        for i in 0..n {
            sock.send(&f).unwrap();
            if i % 10 == 9 {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    };
    // Waits for pa's rx-filter drops to reach `n`, then checks they stay there.
    let filtered_reach = |d: &Daemon, n: u64| {
        let reached = vhost_user::testguest::wait_until(60, || filtered(d) >= n);
        assert!(
            reached,
            "rx-filter drops {} of {n}: {}",
            filtered(d),
            d.ports()
        );
    };

    wait_console(&mut pair, &mut d, "rx ", 150);
    println!("{:.1}s: guest up", t0.elapsed().as_secs_f64());
    let show = d.json(&["port", "show", "vm"]);
    assert_eq!(show["rx_filter"], "unicast 1 multicast all", "{show}");
    assert!(
        d.ok(&["port", "show", "vm"])
            .contains("unicast 1 multicast all"),
        "port show"
    );

    // 1. Filtered: 200 frames for another station, then 50 for the guest
    //    and 50 broadcast. The 200 are counted as dropped, the guest's NIC
    //    gets the 100 and not the 200.
    let base = settled(&mut pair, &mut d, 0);
    assert_eq!(filtered(&d), 0, "{}", d.ports());
    send(other, 200);
    send(guest, 50);
    send(Mac::BROADCAST, 50);
    filtered_reach(&d, 200);
    let got = settled(&mut pair, &mut d, base + 100) - base;
    assert!(got < 200, "the guest received {got} frames of 100 for it");
    assert_eq!(filtered(&d), 200, "{}", d.ports());
    println!("filtered: guest got {got}, rx-filter 200");

    // 2. rx_filter=false: the other station's frames reach the guest.
    d.ok(&["port", "set", "vm", "rx_filter=false"]);
    let show = d.json(&["port", "show", "vm"]);
    assert!(show["rx_filter"].is_null(), "{show}");
    assert_eq!(show["settings"]["rx_filter"], false, "{show}");
    assert!(
        d.ok(&["port", "show", "vm"])
            .contains("off (rx_filter = false)"),
        "port show"
    );
    let base = settled(&mut pair, &mut d, 0);
    send(other, 200);
    let got = settled(&mut pair, &mut d, base + 200) - base;
    assert_eq!(filtered(&d), 200, "none dropped: {}", d.ports());
    println!("rx_filter=false: guest got {got}");

    // 3. Cleared: filtered again.
    d.ok(&["port", "clear", "vm", "rx_filter"]);
    let show = d.json(&["port", "show", "vm"]);
    assert_eq!(show["rx_filter"], "unicast 1 multicast all", "{show}");
    send(other, 20);
    filtered_reach(&d, 220);

    ns_release(&ns.ns, "198.18.71.1");
    let (ok, out) = pair.finish();
    pair_ok(ok, &out, &d);
    println!("total {:.1}s", t0.elapsed().as_secs_f64());
}

/// The namespace pings `ip`, retrying while the path comes up (ARP on both
/// sides of the tunnel, the guest's geneve device), then asks for `count`
/// echoes, every one answered.
fn ns_pings(ns: &weir_testkit::Netns, ip: &str, d: &Daemon) {
    let first = vhost_user::testguest::wait_until(30, || {
        common::ping(ns, ip, 1, "0.2").is_ok_and(|o| common::loss_pct(&o) == 0.0)
    });
    assert!(
        first,
        "no reply from {ip}: {}\n{}",
        d.ports(),
        tail(&d.log(), 30)
    );
    let out = common::ping(ns, ip, 5, "0.2").unwrap_or_else(|e| panic!("ping {ip}: {e}"));
    assert_eq!(common::loss_pct(&out), 0.0, "ping {ip}: {out}");
}

/// The namespace fetches `url` (a guest's blob): its md5 and length.
fn ns_fetch(ns: &weir_testkit::Netns, url: &str, d: &Daemon) -> String {
    ns.exec(&[
        "python3",
        "-c",
        &format!(
            "import hashlib, urllib.request\n\
             d = urllib.request.urlopen('{url}', timeout=90).read()\n\
             print(hashlib.md5(d).hexdigest(), len(d))"
        ),
    ])
    .unwrap_or_else(|e| panic!("fetching {url}: {e:#}\n{}", tail(&d.log(), 30)))
}

/// Tells a guest waiting in `nc -l -p 7777` that the test is done.
fn ns_release(ns: &weir_testkit::Netns, ip: &str) {
    let _ = ns.exec(&[
        "python3",
        "-c",
        &format!("import socket\nsocket.create_connection(('{ip}', 7777), 10).sendall(b'done')"),
    ]);
}

/// Waits until the guest printed `WEIRVM: <prefix>...`; returns the rest of
/// that line.
fn wait_console(pair: &mut Pair, d: &mut Daemon, prefix: &str, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let want = format!("WEIRVM: {prefix}");
        if let Some(rest) = pair
            .console("g1")
            .lines()
            .find_map(|l| l.strip_prefix(&want).map(str::to_string))
        {
            return rest;
        }
        assert!(d.alive(), "weir died: {}", d.log());
        assert!(
            pair.running() && Instant::now() < deadline,
            "no `{prefix}` from the guest:\n{}{}\nweir log:\n{}",
            pair.output(),
            pair.console("g1"),
            tail(&d.log(), 30)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A drop counter of a port (0 while it has never counted).
fn drop_count(d: &Daemon, port: &str, reason: &str) -> u64 {
    d.port_json(port)["stats"]["drops"][reason]
        .as_u64()
        .unwrap_or(0)
}

/// Geneve between weir and Linux: the guest's NIC is weir's underlay (the
/// vhost-user port `vm` carries weir's address 198.18.0.1), and the guest
/// (198.18.0.9) has a Linux `geneve` device of VNI 5000 to weir with
/// 10.0.0.9 on it (made with iproute2's /sbin/ip: busybox's cannot).
/// weir's `geneve` tunnel port of that VNI shares bridge br0 with an
/// afpacket port to a namespace (10.0.0.1). The host kernel
/// needs no geneve module: the guest's kernel has it. Pings both ways, an
/// md5-verified TCP transfer each way, weir's counters on the tunnel port
/// and its neighbour table.
#[test]
fn vm_geneve_interoperates_with_linux() {
    weir_testkit::require_root_and_ip().expect("needs root and iproute2");
    let (_one_pair, dir) = begin("geneve");
    let t0 = Instant::now();
    let tag = format!("wg{}", std::process::id() % 100_000);
    let ns =
        weir_testkit::VethHost::create_quiet(&format!("{tag}-n"), &format!("{tag}n"), "10.0.0.1")
            .unwrap();
    let config = common::vhost_config(&dir, &[], "server", 1, 8192)
        + &format!(
            "[[port]]\nname = \"vm\"\ntype = \"vhost-user\"\nsocket = \"{}\"\n\
             ip = \"198.18.0.1/24\"\n\
             [[port]]\nname = \"gnv\"\ntype = \"geneve\"\nbridge = \"br0\"\nunderlay = \"vm\"\n\
             local_ip = \"198.18.0.1\"\nremote_ips = [\"198.18.0.9\"]\nvni = 5000\n",
            dir.join("vm.sock").display()
        )
        + &common::kernel_port("pa", "afpacket", &ns.host_if, "");
    let mut d = Daemon::start(&dir, &config);

    // The namespace serves a blob over HTTP.
    let (_http, want) = serve_blob(&ns.ns, &dir, 4 << 20, "10.0.0.1");

    // The guest: the geneve device, a ping of the namespace through it, the
    // namespace's blob, then a blob of its own served until the test is done.
    std::fs::write(
        dir.join("g1.sh"),
        r#"ip link set eth0 up && ip addr add 198.18.0.9/24 dev eth0 || { echo "WEIRVM: FAIL eth0"; exit 1; }
/sbin/ip link add gnv0 type geneve id 5000 remote 198.18.0.1 || { echo "WEIRVM: FAIL no geneve link"; exit 1; }
ip addr add 10.0.0.9/24 dev gnv0 && ip link set gnv0 up || exit 1
echo "WEIRVM: gnv0 $(/sbin/ip -d -o link show gnv0 | grep -o 'geneve id [0-9]* remote [0-9.]*') mtu=$(cat /sys/class/net/gnv0/mtu)"
tries=0
until ping -c 1 -W 1 10.0.0.1 > /dev/null 2>&1; do
  tries=$((tries + 1))
  [ $tries -lt 60 ] || { echo "WEIRVM: FAIL no ping reply"; exit 1; }
done
ping -c 5 -i 0.2 -W 2 10.0.0.1 > /tmp/ping 2>&1
rx=$(sed -n 's/.* \([0-9]*\) packets received.*/\1/p' /tmp/ping)
echo "WEIRVM: ping received ${rx:-0}/5"
[ "${rx:-0}" -eq 5 ] || exit 1
got=$(timeout 60 wget -q -O - http://10.0.0.1:8080/blob | md5sum | cut -d' ' -f1)
echo "WEIRVM: down got=$got"
mkdir -p /www
dd if=/dev/urandom of=/www/blob bs=1M count=4 2>/dev/null
httpd -p 10.0.0.9:8080 -h /www
echo "WEIRVM: serving md5=$(md5sum /www/blob | cut -d' ' -f1)"
timeout 90 nc -l -p 7777 < /dev/null > /dev/null || exit 1
[ "$got" = "WANT" ]
"#
        .replace("WANT", &want),
    )
    .unwrap();
    let mut pair = Pair::start(&dir, "--one --mode server -t 110 --g1 @/g1.sh @/vm.sock");

    let served = wait_console(&mut pair, &mut d, "serving md5=", 100);
    // The namespace reaches the guest through the tunnel, and gets its blob.
    ns_pings(&ns.ns, "10.0.0.9", &d);
    let got = ns_fetch(&ns.ns, "http://10.0.0.9:8080/blob", &d);
    ns_release(&ns.ns, "10.0.0.9");
    let (ok, out) = pair.finish();
    pair_ok(ok, &out, &d);
    assert!(
        out.contains("g1: gnv0 geneve id 5000 remote 198.18.0.1"),
        "{out}"
    );
    assert!(out.contains("g1: ping received 5/5"), "{out}");
    assert!(
        out.contains(&format!("g1: down got={want}")),
        "namespace -> guest\n{out}"
    );
    assert_eq!(
        got.split_whitespace().collect::<Vec<_>>(),
        [served.trim(), "4194304"],
        "guest -> namespace"
    );

    // weir counted the traffic on the tunnel port, resolved the guest's
    // address, and dropped nothing at the tunnel.
    let stats = d.ok(&["stats"]);
    let gnv = d.port_json("gnv");
    let (rx, tx) = (
        gnv["stats"]["rx_packets"].as_u64().unwrap_or(0),
        gnv["stats"]["tx_packets"].as_u64().unwrap_or(0),
    );
    assert!(
        rx > 1000 && tx > 1000,
        "gnv counters rx {rx} tx {tx}\n{stats}"
    );
    for (port, reason) in [
        ("gnv", "tunnel-mtu"),
        ("gnv", "tunnel-unresolved"),
        ("vm", "tunnel-header"),
        ("vm", "tunnel-vni"),
        ("vm", "tunnel-remote"),
    ] {
        assert_eq!(drop_count(&d, port, reason), 0, "{port} {reason}\n{stats}");
    }
    let neigh = d.json(&["neigh", "show"]);
    let guest_mac = "52:54:00:00:00:01";
    let listed = neigh.as_array().is_some_and(|a| {
        a.iter()
            .any(|n| n["ip"] == "198.18.0.9" && n["mac"] == guest_mac)
    });
    assert!(listed, "weir neigh show: {neigh}");
    println!(
        "gnv rx {rx} tx {tx}; neigh {neigh}; total {:.1}s",
        t0.elapsed().as_secs_f64()
    );
}

/// A guest behind a tunnel: bridge br0 has a VXLAN tunnel `vx0` over an
/// underlay of MTU 1500 (a veth to a namespace whose Linux `vxlan` device,
/// VNI 5000, is the other end, 10.0.0.9), so frames of a guest on br0 fit
/// the tunnel only up to an IP MTU of 1500 − 50 = 1450. The vhost-user port,
/// added after the tunnel, offers that MTU (`offered_mtu` in `port show`)
/// and accepts it from QEMU's `host_mtu`; the guest's eth0 comes up with it.
/// Full-size pings and a TCP transfer from the guest cross the tunnel with no
/// `tunnel-mtu` drop.
///
/// QEMU (7.2) emulates the virtio-net config space of a vhost-user NIC
/// itself: VIRTIO_NET_F_MTU reaches the guest only with `host_mtu`, and the
/// backend's own `mtu` is never read. So the guest is given
/// `host_mtu=1450`, the value `weir port show` offers, as a user would.
#[test]
fn vm_behind_a_tunnel_gets_the_tunnel_mtu() {
    weir_testkit::require_root_and_ip().expect("needs root and iproute2");
    let (_one_pair, dir) = begin("tunnel-mtu");
    let t0 = Instant::now();
    let tag = format!("wt{}", std::process::id() % 100_000);
    // The Linux VTEP: eth0 198.18.0.9 on the underlay veth (MTU 1500), vx
    // (MTU 1450, Linux's own arithmetic) with 10.0.0.9.
    let vtep =
        weir_testkit::VethHost::create_quiet(&format!("{tag}-l"), &format!("{tag}u"), "198.18.0.9")
            .unwrap();
    for args in [
        &[
            "ip",
            "link",
            "add",
            "vx",
            "type",
            "vxlan",
            "id",
            "5000",
            "local",
            "198.18.0.9",
            "remote",
            "198.18.0.1",
            "dstport",
            "4789",
            "dev",
            "eth0",
        ][..],
        &["ip", "addr", "add", "10.0.0.9/24", "dev", "vx"],
        &["ip", "link", "set", "vx", "up"],
    ] {
        vtep.ns.exec(args).unwrap();
    }
    let vx_mtu = vtep.ns.exec(&["cat", "/sys/class/net/vx/mtu"]).unwrap();
    assert_eq!(
        vx_mtu.trim(),
        "1450",
        "Linux's vxlan MTU over a 1500 underlay"
    );
    let config = common::vhost_config(&dir, &[], "server", 1, 8192)
        + &format!(
            "[[port]]\nname = \"uplink\"\ntype = \"afpacket\"\niface = \"{}\"\n\
             ip = \"198.18.0.1/24\"\n\
             [[port]]\nname = \"vx0\"\ntype = \"vxlan\"\nbridge = \"br0\"\nunderlay = \"uplink\"\n\
             local_ip = \"198.18.0.1\"\nremote_ips = [\"198.18.0.9\"]\nvni = 5000\n\
             [[port]]\nname = \"vm\"\ntype = \"vhost-user\"\nsocket = \"{}\"\nbridge = \"br0\"\n",
            vtep.host_if,
            dir.join("vm.sock").display()
        );
    let mut d = Daemon::start(&dir, &config);
    let show = d.json(&["port", "show", "vm"]);
    assert_eq!(show["offered_mtu"].as_u64(), Some(1450), "{show}");
    let plain = d.ok(&["port", "show", "vm"]);
    assert!(
        plain.contains("offered mtu") && plain.contains("1450"),
        "{plain}"
    );

    // The guest: its MTU, full-size pings through the tunnel, then a blob
    // served until the test has fetched it (TCP from the guest).
    std::fs::write(
        dir.join("g1.sh"),
        r#"ip link set eth0 up && ip addr add 10.0.0.2/24 dev eth0 || { echo "WEIRVM: FAIL eth0"; exit 1; }
echo "WEIRVM: mtu=$(cat /sys/class/net/eth0/mtu)"
tries=0
until ping -c 1 -W 1 10.0.0.9 > /dev/null 2>&1; do
  tries=$((tries + 1))
  [ $tries -lt 60 ] || { echo "WEIRVM: FAIL no ping reply"; exit 1; }
done
ping -c 5 -i 0.2 -W 2 -s 1422 10.0.0.9 > /tmp/ping 2>&1
rx=$(sed -n 's/.* \([0-9]*\) packets received.*/\1/p' /tmp/ping)
echo "WEIRVM: full-size ping received ${rx:-0}/5"
mkdir -p /www
dd if=/dev/urandom of=/www/blob bs=1M count=4 2>/dev/null
httpd -p 10.0.0.2:8080 -h /www
echo "WEIRVM: serving md5=$(md5sum /www/blob | cut -d' ' -f1)"
timeout 90 nc -l -p 7777 < /dev/null > /dev/null
"#,
    )
    .unwrap();
    let mut pair = Pair::start(
        &dir,
        "--one --mode server --host-mtu 1450 -t 110 --g1 @/g1.sh @/vm.sock",
    );
    let served = wait_console(&mut pair, &mut d, "serving md5=", 100);
    let got = ns_fetch(&vtep.ns, "http://10.0.0.2:8080/blob", &d);
    ns_release(&vtep.ns, "10.0.0.2");
    let (ok, out) = pair.finish();
    pair_ok(ok, &out, &d);
    assert!(out.contains("g1: mtu=1450"), "the guest's MTU:\n{out}");
    assert!(out.contains("g1: full-size ping received 5/5"), "{out}");
    assert_eq!(
        got.split_whitespace().collect::<Vec<_>>(),
        [served.trim(), "4194304"],
        "guest -> namespace through the tunnel"
    );
    // QEMU set the MTU weir offered; nothing was too long for the tunnel.
    assert_eq!(d.port_json("vm")["mtu"].as_u64(), Some(1450));
    let stats = d.ok(&["stats"]);
    assert_eq!(drop_count(&d, "vx0", "tunnel-mtu"), 0, "{stats}");
    let vx = d.port_json("vx0");
    assert!(
        vx["stats"]["tx_packets"].as_u64().unwrap_or(0) > 1000,
        "the guest's frames did not cross the tunnel: {vx}"
    );
    println!("{stats}\ntotal {:.1}s", t0.elapsed().as_secs_f64());
}
