//! End to end: rate limits of the real `weir run` daemon, on afpacket ports
//! into network namespaces whose kernels keep their default offloads (TCP
//! hands weir 64 KiB TSO frames).
//!
//! - Policing: iperf3 (TCP) from one namespace to another through a port
//!   with `ingress_policing_rate`, then through one with `egress_rate`: the
//!   throughput is within 10 % of the configured rate.
//! - Storm control: a namespace floods broadcasts through a port with
//!   `storm_pps`: what reaches the other ports is that many frames a second,
//!   the rest is counted as `storm`, and a TCP transfer between two other
//!   namespaces keeps its throughput (against the same flood sent where
//!   weir does not see it, so that the cost of making the flood on the
//!   test's own CPUs is left out; the rate without any flood is shown).
//!
//! The two tests measure throughput, so they take turns. Needs root and
//! iperf3; fails, never skips, without them.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vhost_user::testguest::wait_until;
use weir_testkit::frame::{self, Mac};
use weir_testkit::packet::RawSocket;
use weir_testkit::{require_root_and_ip, Netns, VethHost};

mod common;
use common::{kernel_config, kernel_port, serial, test_dir, Daemon, NsProcess};

/// The configured rate of both policing checks, kbit/s: far below what
/// weir and two namespaces sustain on any machine the tests run on (the
/// test checks that first).
const RATE_KBPS: u64 = 30_000;

/// The policer's burst: 80 % of the rate, what Open vSwitch's documentation
/// recommends for TCP (ovs-vswitchd.conf.db(5), `ingress_policing_burst`).
/// A tenth of the rate is not enough for a sender with TSO: see
/// docs/pipeline.md, "Rate limits".
const BURST_KBIT: u64 = 24_000;

/// Seconds of each iperf3 measurement, after the first ones it omits (TCP's
/// slow start and the bucket's initial burst).
const MEASURE_SECS: u32 = 6;
const OMIT_SECS: u32 = 2;

/// Storm control: frames a second the flooding port may send, and how fast
/// it floods.
const STORM_PPS: u64 = 1_000;
const FLOOD_PPS: u64 = 20_000;

/// One-second slots of TCP measured of each kind: without a flood, with one
/// outside weir, with one through weir.
const SLOTS: usize = 8;

/// An iperf3 server in `ns`, ready when this returns. Both ends of iperf3
/// run on CPU 0 (weir's worker runs on the last CPU): where the scheduler
/// puts them otherwise changes a TCP transfer's rate between namespaces by
/// half from one run to the next.
fn iperf_server(ns: &Netns, dir: &Path) -> NsProcess {
    let log = dir.join(format!("iperf3-{}.log", ns.name()));
    let server = NsProcess::start(
        ns,
        &[
            "taskset",
            "-c",
            "0",
            "iperf3",
            "-s",
            "-i",
            "0",
            "--forceflush",
        ],
        &log,
    );
    let ready = wait_until(10, || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("Server listening"))
    });
    assert!(ready, "iperf3 -s did not start in {}", ns.name());
    server
}

/// TCP goodput from `from` to `to_ip` (an iperf3 server), in Mbit/s: what
/// the receiver got over `secs` seconds after `omit` seconds.
fn iperf(from: &Netns, to_ip: &str, secs: u32, omit: u32) -> f64 {
    let out = from
        .exec(&[
            "taskset",
            "-c",
            "0",
            "iperf3",
            "-c",
            to_ip,
            "-t",
            &secs.to_string(),
            "-O",
            &omit.to_string(),
            "-J",
        ])
        .unwrap_or_else(|e| panic!("iperf3 to {to_ip}: {e:#}"));
    let json: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("iperf3 -J: {e}: {out}"));
    json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("no receiver rate in {json}"))
        / 1e6
}

/// A port's frames dropped for `reason`.
fn drops(d: &Daemon, port: &str, reason: &str) -> u64 {
    d.port_json(port)["stats"]["drops"][reason]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn policing_and_egress_rate_hold_tcp_to_the_configured_rate() {
    require_root_and_ip().expect("the rate limit tests need root and iproute2");
    let _turn = serial();
    let t0 = Instant::now();
    let tag = format!("wp{}", std::process::id() % 100_000);
    let a = VethHost::create(&format!("{tag}-a"), &format!("{tag}a"), "198.18.61.1").unwrap();
    let b = VethHost::create(&format!("{tag}-b"), &format!("{tag}b"), "198.18.61.2").unwrap();
    let mut config = kernel_config("", &[]);
    config += &kernel_port("a", "afpacket", &a.host_if, "");
    config += &kernel_port("b", "afpacket", &b.host_if, "");
    let dir = test_dir(&format!("limits-{tag}"));
    let d = Daemon::start(&dir, &config);
    d.wait_up(&["a", "b"]);
    let _server = iperf_server(&b.ns, &dir);
    let rate = RATE_KBPS as f64 / 1000.0;

    // Without limits the path carries far more than the rate, so what the
    // limits let through is theirs, not the machine's.
    let free = iperf(&a.ns, &b.ip, 2, 1);
    eprintln!("no limit: {free:.0} Mbit/s");
    assert!(
        free > 4.0 * rate,
        "without limits TCP gets {free:.0} Mbit/s: too little to check a limit of {rate} Mbit/s"
    );

    // Ingress policing on a, set while it runs.
    d.ok(&[
        "port",
        "set",
        "a",
        &format!("ingress_policing_rate={RATE_KBPS}"),
        &format!("ingress_policing_burst={BURST_KBIT}"),
    ]);
    let policed = iperf(&a.ns, &b.ip, MEASURE_SECS, OMIT_SECS);
    let dropped = drops(&d, "a", "policed");
    eprintln!(
        "ingress_policing_rate {rate} Mbit/s, burst {BURST_KBIT} kbit: {policed:.1} Mbit/s \
         ({:+.1} %), {dropped} frames policed",
        (policed / rate - 1.0) * 100.0
    );
    assert!(
        (policed / rate - 1.0).abs() <= 0.10,
        "ingress policing at {rate} Mbit/s let TCP through at {policed:.1} Mbit/s"
    );
    assert!(dropped > 0, "nothing counted as policed: {}", d.ports());

    // Egress rate on b instead (counted on a, where the frames came in).
    d.ok(&[
        "port",
        "clear",
        "a",
        "ingress_policing_rate",
        "ingress_policing_burst",
    ]);
    d.ok(&["port", "set", "b", &format!("egress_rate={RATE_KBPS}")]);
    let shaped = iperf(&a.ns, &b.ip, MEASURE_SECS, OMIT_SECS);
    let dropped = drops(&d, "a", "egress-rate");
    eprintln!(
        "egress_rate {rate} Mbit/s: {shaped:.1} Mbit/s ({:+.1} %), {dropped} frames over it",
        (shaped / rate - 1.0) * 100.0
    );
    assert!(
        (shaped / rate - 1.0).abs() <= 0.10,
        "egress rate {rate} Mbit/s let TCP through at {shaped:.1} Mbit/s"
    );
    assert!(dropped > 0, "nothing counted as egress-rate: {}", d.ports());
    assert_eq!(
        drops(&d, "b", "egress-rate"),
        0,
        "counted where they came in"
    );
    eprintln!("{:.1} s in all", t0.elapsed().as_secs_f64());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sends broadcast ARP requests out of a raw socket at `pps` from a thread,
/// while switched on, until dropped.
struct Flood {
    on: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flood {
    /// A flood from `src` out of `sock`, off until [`Flood::set`].
    fn new(sock: RawSocket, src: Mac, pps: u64) -> Flood {
        let on = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (on2, stop2, sent2) = (Arc::clone(&on), Arc::clone(&stop), Arc::clone(&sent));
        // Who-has for an address nobody holds, as a looping or misconfigured
        // host sends them.
        let f = frame::arp_request(
            src,
            Ipv4Addr::new(198, 18, 62, 200),
            Ipv4Addr::new(198, 18, 62, 250),
        );
        let thread = std::thread::spawn(move || {
            // Relaxed: flags and a count, with nothing published alongside.
            let mut since: Option<(Instant, u64)> = None;
            while !stop2.load(Ordering::Relaxed) {
                if !on2.load(Ordering::Relaxed) {
                    since = None;
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                let n = sent2.load(Ordering::Relaxed);
                let (t0, n0) = *since.get_or_insert((Instant::now(), n));
                // Rounds of a hundred frames, paced against the clock so the
                // rate holds whatever a round costs.
                let ok = (0..100).filter(|_| sock.send(&f).is_ok()).count() as u64;
                sent2.store(n + ok, Ordering::Relaxed);
                let due = Duration::from_secs_f64((n + ok - n0) as f64 / pps as f64);
                if let Some(wait) = due.checked_sub(t0.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        });
        Flood {
            on,
            stop,
            sent,
            thread: Some(thread),
        }
    }

    fn set(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One reading of weir's counters: when, bytes weir sent to port y,
/// frames it sent to port w, frames it received from port s, and s's storm
/// drops.
#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    to_y_bytes: u64,
    to_w: u64,
    from_s: u64,
    storm: u64,
}

fn sample(d: &Daemon) -> Sample {
    let ports = d.ports();
    let n = |port: &str, path: &[&str]| {
        let mut v = &common::port_entry(&ports, port)["stats"];
        for k in path {
            v = &v[*k];
        }
        v.as_u64().unwrap_or(0)
    };
    Sample {
        at: Instant::now(),
        to_y_bytes: n("y", &["tx_bytes"]),
        to_w: n("w", &["tx_packets"]),
        from_s: n("s", &["rx_packets"]),
        storm: n("s", &["drops", "storm"]),
    }
}

/// Seconds between two samples.
fn secs(a: &Sample, b: &Sample) -> f64 {
    (b.at - a.at).as_secs_f64()
}

#[test]
fn storm_control_cuts_a_broadcast_flood_and_a_neighbour_keeps_its_throughput() {
    require_root_and_ip().expect("the rate limit tests need root and iproute2");
    let _turn = serial();
    let t0 = Instant::now();
    let tag = format!("ws{}", std::process::id() % 100_000);
    let host = |n: &str, last: u8| {
        VethHost::create_quiet(
            &format!("{tag}-{n}"),
            &format!("{tag}{n}"),
            &format!("198.18.62.{last}"),
        )
        .unwrap()
    };
    // s floods; x sends to y over TCP; w only listens.
    let (s, x, y, w) = (host("s", 1), host("x", 2), host("y", 3), host("w", 4));
    let mut config = kernel_config("", &[]);
    config += &kernel_port(
        "s",
        "afpacket",
        &s.host_if,
        &format!("storm_pps = {STORM_PPS}\n"),
    );
    for (name, h) in [("x", &x), ("y", &y), ("w", &w)] {
        config += &kernel_port(name, "afpacket", &h.host_if, "");
    }
    let dir = test_dir(&format!("limits-{tag}"));
    let d = Daemon::start(&dir, &config);
    d.wait_up(&["s", "x", "y", "w"]);
    let _server = iperf_server(&y.ns, &dir);
    let src = Mac::parse(&s.mac().unwrap()).unwrap();
    let flood = Flood::new(
        RawSocket::open_sender_in(&s.ns, "eth0").unwrap(),
        src,
        FLOOD_PPS,
    );
    // The same flood from a namespace whose link weir does not use.
    let decoy = host("d", 5);
    let decoy_flood = Flood::new(
        RawSocket::open_sender_in(&decoy.ns, "eth0").unwrap(),
        Mac::parse(&decoy.mac().unwrap()).unwrap(),
        FLOOD_PPS,
    );

    // 1. The flood, cut to storm_pps. It is on once weir counts storm
    //    drops; the bucket's initial burst is spent by then.
    flood.set(true);
    let counted = wait_until(10, || drops(&d, "s", "storm") > 0);
    assert!(counted, "no storm drops while flooding: {}", d.ports());
    let a = sample(&d);
    std::thread::sleep(Duration::from_secs(3));
    let b = sample(&d);
    flood.set(false);
    let t = secs(&a, &b);
    let (from_s, to_w, storm) = (b.from_s - a.from_s, b.to_w - a.to_w, b.storm - a.storm);
    let per_sec = to_w as f64 / t;
    eprintln!(
        "in {t:.2} s weir took {from_s} frames from s ({:.0}/s), sent {to_w} to w \
         ({per_sec:.0}/s), dropped {storm} as storm",
        from_s as f64 / t
    );
    // The flood reached weir much faster than the limit ...
    assert!(
        from_s as f64 / t > 5.0 * STORM_PPS as f64,
        "the flood was too slow to test storm control: {from_s} frames in {t:.2} s"
    );
    // ... and what it passed on is the limit (a few frames of the other
    // hosts reach w too, and the counters are read a moment apart: 15 %),
    // the rest storm drops.
    assert!(
        (per_sec / STORM_PPS as f64 - 1.0).abs() <= 0.15,
        "w received {per_sec:.0} frames/s with storm_pps = {STORM_PPS}"
    );
    let passed = from_s.saturating_sub(storm);
    assert!(
        (passed as f64 - to_w as f64).abs() <= 0.15 * STORM_PPS as f64 * t,
        "s: {from_s} in, {storm} storm drops, so {passed} flooded, but w got {to_w}"
    );
    assert_eq!(drops(&d, "x", "storm"), 0, "x sends no storm");

    // 2. A TCP transfer from x to y, measured in one-second slots of three
    //    kinds in turn: calm; the same flood sent from a namespace that is
    //    no port of weir's (what generating it costs the machine, weir
    //    untouched); the flood through s. The rate of a slot is what weir
    //    sent to y in it. Interleaved slots see the same load from elsewhere
    //    on the machine, and the medians of each kind are compared.
    let _tcp = NsProcess::start(
        &x.ns,
        &[
            "taskset", "-c", "0", "iperf3", "-c", &y.ip, "-t", "40", "-i", "0",
        ],
        &dir.join("iperf3-client.log"),
    );
    let first = sample(&d);
    let flowing = wait_until(10, || {
        sample(&d).to_y_bytes > first.to_y_bytes + (100 << 20)
    });
    assert!(flowing, "no TCP from x to y: {}", d.ports());
    let floods = [None, Some(&decoy_flood), Some(&flood)];
    let mut rates: [Vec<f64>; 3] = Default::default();
    for slot in 0..3 * SLOTS {
        let kind = slot % 3;
        for (k, f) in floods.iter().enumerate() {
            if let Some(f) = f {
                f.set(k == kind);
            }
        }
        let a = sample(&d);
        std::thread::sleep(Duration::from_secs(1));
        let b = sample(&d);
        rates[kind].push((b.to_y_bytes - a.to_y_bytes) as f64 * 8.0 / secs(&a, &b) / 1e6);
    }
    flood.set(false);
    decoy_flood.set(false);
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let [calm, decoy, stormy] = rates.each_ref().map(|v| median(v));
    let ratio = stormy / decoy;
    eprintln!(
        "TCP x -> y, Mbit/s per second: calm {:.0?}, flood outside weir {:.0?}, flood \
         through s {:.0?}; medians {calm:.0}, {decoy:.0} ({:.2} of calm), {stormy:.0} ({:.2} \
         of calm, {ratio:.2} of the flood outside); {} frames flooded through s; {:.1} s in all",
        rates[0],
        rates[1],
        rates[2],
        decoy / calm,
        stormy / calm,
        flood.sent(),
        t0.elapsed().as_secs_f64()
    );
    // On a machine of two CPUs, where this transfer is CPU-bound, making
    // the flood costs TCP part of its rate wherever the flood goes (the
    // sending thread and the kernel's path for its frames): from nothing on
    // a quiet machine to 40 % on a loaded one, the machine's cost, not
    // weir's. Against the same flood outside weir, storm control left TCP
    // 0.84 to 1.14 of its rate in 12 runs (0.57 to 0.94 of calm); without
    // storm_pps the flood reaches every port and TCP keeps 0.62 to 0.70
    // (release build; a debug build's slower worker blurs it to 0.85).
    assert!(
        ratio >= 0.8,
        "TCP between x and y fell to {ratio:.2} of its rate while s flooded through weir \
         (against the same flood outside weir): {rates:.0?} Mbit/s"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
