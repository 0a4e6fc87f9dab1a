//! `weir bench` smoke tests: a short run through an in-process switch over two
//! vhost-user ports (weir's own frontend on each), with an RFC 2544 search,
//! writing JSON and an SVG; and runs against a `weir run` daemon (`--socket`),
//! which must get back exactly the ports and bridge it had, also after
//! Ctrl-C. They assert only that frames were forwarded and that the outputs
//! are well-formed; they never compare a rate to a threshold.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{vhost_config, Daemon, BIN};
use dataplane::DropReason;
use serde_json::Value;

/// The tests of this file run one at a time: OVS's DPDK (`--peer ovs`)
/// needs every hugepage `weir bench` adds for it, and a weir starting
/// meanwhile would take free ones as it finds them.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Holds [`ONE_AT_A_TIME`] for the rest of a test (also after another test
/// failed while holding it).
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `weir bench --quiet ARGS --json JSON`; fails the test with its output
/// and `context()` unless it succeeds.
fn bench(args: &[&str], json: &Path, context: impl Fn() -> String) -> Ran {
    let out = Command::new(BIN)
        .args(["bench", "--quiet"])
        .args(args)
        .arg("--json")
        .arg(json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "weir bench {args:?} failed:\n{stdout}\n{stderr}\n{}",
        context()
    );
    let report = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    Ran {
        stdout,
        stderr,
        report,
    }
}

/// What a successful [`bench`] printed and wrote.
struct Ran {
    stdout: String,
    stderr: String,
    report: Value,
}

/// Runs `weir bench --quiet ARGS`, which must fail; returns its stderr.
fn bench_refused(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["bench", "--quiet"])
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "weir bench {args:?} accepted");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn short_bench_forwards_frames_and_writes_json_and_svg() {
    let _one = one_at_a_time();
    let dir = std::env::temp_dir().join(format!("weir-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("bench.json");
    let svg = dir.join("bench.svg");
    let plot = format!("--plot={}", svg.display());
    let ran = bench(
        &[
            "--duration=1",
            "--size=64,imix",
            "--flows=4",
            "--repeat=2",
            "--latency-at=50",
            "--trial=0.2",
            "--isolate",
            "--resolution=25",
            &plot,
        ],
        &json,
        String::new,
    );
    assert!(ran.stdout.contains("Mpps min/median/max"), "{}", ran.stdout);
    let report = &ran.report;

    assert_eq!(report["params"]["sizes"], serde_json::json!(["64", "imix"]));
    assert_eq!(report["params"]["ndr"], true, "--latency-at implies --ndr");
    assert_eq!(report["params"]["latency_at_pct_of_ndr"], 50.0);
    assert!(report["machine"]["tsc_hz"].as_f64().unwrap() > 0.0);
    // --isolate reports what it did (the moving itself is tested in
    // weir_host::affinity's unit tests, with processes of its own).
    let iso = &report["isolation"];
    for k in ["moved", "pinned", "refused"] {
        assert!(iso[k].is_u64(), "{k} in {iso}");
    }
    assert!(ran.stderr.contains("--isolate: moved"), "{}", ran.stderr);
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4, "2 sizes x 2 repeats");
    for r in runs {
        assert_eq!(r["switch"], "weir");
        let m = &r["main"];
        assert!(m["tx_frames"].as_u64().unwrap() > 0, "{m}");
        assert!(
            m["rx_frames"].as_u64().unwrap() > 0,
            "nothing forwarded: {m}"
        );
        assert_eq!(m["foreign_frames"], 0, "frames that were not sent: {m}");
        for k in ["rx_mpps", "rx_gbps", "loss_pct", "tx_mpps"] {
            assert!(m[k].is_f64(), "{k} in {m}");
        }
        let lat = &m["latency"];
        assert!(lat["samples"].as_u64().unwrap() > 0);
        for k in ["p50_ns", "p99_ns", "p999_ns", "max_ns"] {
            assert!(lat[k].is_u64(), "{k} in {lat}");
        }
        assert!(!lat["cdf"].as_array().unwrap().is_empty());
        assert!(m["switch_cycles"]["busy_per_packet"].is_f64(), "{m}");
        for s in ["ndr", "pdr"] {
            assert!(r[s]["rate_mpps"].is_f64(), "{s} in {r}");
            assert!(r[s]["trials"].as_u64().unwrap() >= 1);
        }
        // The latency trial runs at half the NDR found; with an NDR of 0 (a
        // host too noisy for any lossless trial) there is none.
        let ndr = r["ndr"]["rate_mpps"].as_f64().unwrap();
        // A rate without loss is within the PDR's loss limit: the PDR search
        // starts from the NDR and never reports less.
        let pdr = r["pdr"]["rate_mpps"].as_f64().unwrap();
        assert!(pdr >= ndr, "PDR {pdr} below NDR {ndr}: {r}");
        let at = &r["at_ndr"];
        if ndr > 0.0 {
            assert_eq!(at["pct_of_ndr"], 50.0, "{r}");
            let offered = at["trial"]["offered_mpps"].as_f64().unwrap();
            assert!((offered - ndr / 2.0).abs() < 1e-6 * ndr, "{at}");
            assert!(at["trial"]["latency"]["p99_ns"].is_u64(), "{at}");
        } else {
            assert!(at.is_null(), "{r}");
        }
    }
    let aggs = report["aggregates"].as_array().unwrap();
    assert_eq!(aggs.len(), 2);
    for a in aggs {
        for k in ["min", "median", "max"] {
            assert!(a["rx_mpps"][k].as_f64().unwrap() > 0.0, "{a}");
        }
    }
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("latency"),
        "not our SVG"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn latency_at_outside_0_to_100_percent_is_refused() {
    let _one = one_at_a_time();
    for bad in ["0", "150", "-5"] {
        let err = bench_refused(&[&format!("--latency-at={bad}")]);
        assert!(err.contains("--latency-at"), "{err}");
    }
}

/// With `--catch-up`, every frame the rate asks for is sent or accounted
/// for: `--isolate` puts every other thread of the host on the generator's
/// CPU, so it is preempted, and the frames due meanwhile are sent late, never
/// skipped.
#[test]
fn catch_up_sends_every_frame_the_rate_asks_for() {
    let _one = one_at_a_time();
    let dir = std::env::temp_dir().join(format!("weir-bench-catchup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("bench.json");
    let report = bench(
        &["--duration=1", "--rate=0.1mpps", "--catch-up", "--isolate"],
        &json,
        String::new,
    )
    .report;
    let m = &report["runs"][0]["main"];
    let loss = &m["loss"];
    assert_eq!(loss["skipped"], 0, "{m}");
    // 0.1 Mpps for one second: sent, refused or still owed at the end.
    let accounted = m["tx_frames"].as_u64().unwrap()
        + loss["refused"].as_u64().unwrap()
        + loss["unsent"].as_u64().unwrap();
    assert_eq!(accounted, 100_000, "{m}");
    assert!(loss["late"].is_u64(), "{m}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn catch_up_is_refused_with_a_search() {
    let _one = one_at_a_time();
    for extra in [&["--ndr"][..], &["--latency-at", "50"]] {
        let err = bench_refused(&[&["--catch-up"][..], extra].concat());
        assert!(err.contains("--catch-up"), "{err}");
    }
}

/// Port names and bridge names the daemon has.
fn daemon_state(d: &Daemon) -> (Vec<String>, Vec<String>) {
    let names = |v: Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    };
    (names(d.ports()), names(d.json(&["bridge", "list"])))
}

fn bench_against(d: &Daemon, dir: &Path, extra: &[&str]) -> Value {
    let json = dir.join("bench.json");
    let socket = format!("--socket={}", d.socket.display());
    let args = [&["--duration=0.5", &socket][..], extra].concat();
    bench(&args, &json, || format!("daemon: {}", d.log())).report
}

#[test]
fn bench_against_a_daemon_reports_its_cpu_and_removes_what_it_added() {
    let _one = one_at_a_time();
    let dir = std::env::temp_dir().join(format!("weir-bench-daemon-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = Daemon::start(&dir, &vhost_config(&dir, &[], "server", 1, 4096));
    let before = daemon_state(&d);
    assert_eq!(before, (vec![], vec!["br0".to_owned()]));

    // A bridge of its own ("bench"), created and removed again.
    let report = bench_against(&d, &dir, &[]);
    assert!(report["isolation"].is_null(), "no --isolate, nothing moved");
    let m = &report["runs"][0]["main"];
    assert!(
        m["rx_frames"].as_u64().unwrap() > 0,
        "nothing forwarded: {m}"
    );
    assert!(m["switch_cycles"]["busy_per_packet"].is_f64(), "{m}");
    assert!(
        m["switch_cpu"]["cycles_per_frame"].is_f64(),
        "no CPU time of the daemon's workers: {m}"
    );
    assert!(m["loss"]["switch_rx"].as_u64().unwrap() > 0, "{m}");
    assert_eq!(daemon_state(&d), before, "bench left ports or a bridge");

    // The daemon's own bridge: the bench's ports go, the bridge stays. This
    // run draws a PNG.
    let png = dir.join("bench.png");
    bench_against(
        &d,
        &dir,
        &["--bridge", "br0", "--plot", png.to_str().unwrap()],
    );
    assert_eq!(daemon_state(&d), before, "bench left ports or removed br0");
    let png = std::fs::read(&png).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    // IHDR: width and height, big-endian, after the signature and chunk head.
    assert_eq!(png[16..24], [0, 0, 5, 0, 0, 0, 2, 8], "not 1280 x 520");
    // Drawn, not blank: black pixels (axes, text) and coloured ones (bars).
    let mut dec = png::Decoder::new(std::io::Cursor::new(png))
        .read_info()
        .unwrap();
    let mut rgb = vec![0u8; dec.output_buffer_size()];
    dec.next_frame(&mut rgb).unwrap();
    let px = || rgb.chunks_exact(3);
    assert!(px().any(|p| p == [0, 0, 0]), "no black pixels");
    assert!(px().any(|p| p == [31, 119, 180]), "no bar in weir's colour");
    drop(d);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn interrupted_bench_removes_its_ports_from_the_daemon() {
    let _one = one_at_a_time();
    let dir = std::env::temp_dir().join(format!("weir-bench-int-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = Daemon::start(&dir, &vhost_config(&dir, &[], "server", 1, 4096));
    let before = daemon_state(&d);
    let mut bench = Command::new(BIN)
        .args(["bench", "--quiet", "--duration", "600", "--socket"])
        .arg(&d.socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once the bench's ports forward traffic.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ports = d.ports();
        let busy = ports.as_array().unwrap().iter().any(|p| {
            p["name"].as_str().unwrap().starts_with("bench-")
                && p["stats"]["rx_packets"].as_u64().unwrap() > 0
        });
        if busy {
            break;
        }
        assert!(
            bench.try_wait().unwrap().is_none(),
            "bench exited before sending"
        );
        assert!(Instant::now() < deadline, "bench never sent: {ports}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = Command::new("kill")
        .args(["-INT", &bench.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(st) = bench.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            common::reap(&mut bench, Duration::ZERO);
            panic!("bench did not stop after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut bench.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!exit.success(), "an interrupted run is not a result");
    assert!(err.contains("interrupted"), "{err}");
    assert_eq!(daemon_state(&d), before, "bench left ports or a bridge");
    drop(d);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The drop reasons of the pipeline's stages: `--features` sets every stage
/// up so that the bench's traffic passes it.
const FEATURE_DROPS: [DropReason; 13] = [
    DropReason::TunnelMtu,
    DropReason::TunnelVni,
    DropReason::TunnelRemote,
    DropReason::TunnelHeader,
    DropReason::NotLocal,
    DropReason::NoBridge,
    DropReason::VlanFiltered,
    DropReason::SpoofedMac,
    DropReason::SpoofedIp,
    DropReason::AclDeny,
    DropReason::Policed,
    DropReason::Storm,
    DropReason::EgressRate,
];

/// Asserts that `report`'s runs forwarded frames with `features` and that no
/// stage dropped any.
fn assert_features_passed(report: &Value, features: &str) {
    assert_eq!(report["params"]["features"], features);
    for r in report["runs"].as_array().unwrap() {
        let m = &r["main"];
        assert!(
            m["rx_frames"].as_u64().unwrap() > 0,
            "nothing forwarded: {m}"
        );
        assert_eq!(m["foreign_frames"], 0, "{m}");
        let drops = &m["loss"]["switch_drops"];
        for reason in FEATURE_DROPS {
            let reason = reason.name();
            assert!(drops[reason].is_null(), "{reason} drops: {m}");
        }
    }
}

#[test]
fn bench_features_pass_the_traffic_in_process_and_through_a_daemon() {
    let _one = one_at_a_time();
    let dir = std::env::temp_dir().join(format!("weir-bench-features-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("bench.json");
    let ran = bench(
        &[
            "--duration=0.5",
            "--features=all",
            "--flows=3",
            "--acl-rules=100",
        ],
        &json,
        String::new,
    );
    assert!(
        ran.stdout
            .contains("features: ip+vlan+security+acl-100+police"),
        "{}",
        ran.stdout
    );
    assert_features_passed(&ran.report, "ip+vlan+security+acl-100+police");
    assert!(bench_refused(&["--features=security", "--flows=65"]).contains("lower --flows"));

    // Through a VXLAN tunnel over a patch pair: every frame encapsulated,
    // decapsulated and switched twice; nothing dropped by the tunnel's
    // checks (the first frames may find the remote not yet resolved).
    let ran = bench(
        &["--duration=0.5", "--features=ip,vlan,vxlan"],
        &json,
        String::new,
    );
    assert_features_passed(&ran.report, "ip+vlan+vxlan");
    assert!(bench_refused(&["--features=vxlan", "--peer=testpmd"]).contains("has none"));
    assert!(bench_refused(&["--features=patch", "--socket=/nonexistent"]).contains("--socket"));
    // Its baseline: the same two bridges joined by the patch pair alone.
    let ran = bench(
        &["--duration=0.5", "--features=ip,vlan,patch"],
        &json,
        String::new,
    );
    assert_features_passed(&ran.report, "ip+vlan+patch");
    assert!(bench_refused(&["--features=vxlan,patch"]).contains("two runs to compare"));
    assert!(bench_refused(&["--acl-rules=0"]).contains("--acl-rules must be"));

    // Through a daemon: the bench's security group goes again with its ports.
    let d = Daemon::start(&dir, &vhost_config(&dir, &[], "server", 1, 4096));
    let before = daemon_state(&d);
    let report = bench_against(&d, &dir, &["--features=ip,acl,security"]);
    assert_features_passed(&report, "ip+security+acl-10");
    assert_eq!(daemon_state(&d), before, "bench left ports or a bridge");
    assert_eq!(
        d.json(&["acl", "list"]),
        serde_json::json!([]),
        "bench left its ACL"
    );
    drop(d);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Asserts that `report`'s OVS runs forwarded frames (the bench's warm-up
/// fails a switch unless frames came back on both ports).
fn assert_ovs_forwarded(report: &Value) {
    let ovs: Vec<&Value> = report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["switch"] == "ovs")
        .collect();
    assert!(!ovs.is_empty(), "no OVS run: {report}");
    for r in ovs {
        let m = &r["main"];
        assert!(
            m["rx_frames"].as_u64().unwrap() > 0,
            "OVS forwarded nothing: {m}"
        );
        assert_eq!(m["foreign_frames"], 0, "{m}");
    }
}

/// `--peer ovs` with `--features vxlan` and `patch`: OVS-DPDK gets the same
/// two bridges, joined by its userspace VXLAN tunnel over patched underlay
/// bridges, or by a patch pair. Its datapath must really encapsulate and
/// decapsulate the frames (the bench fails a run that bypassed the tunnel,
/// and records the counters it checked).
#[test]
fn ovs_peer_tunnels_and_patches_the_frames_both_ways() {
    let _one = one_at_a_time();
    let dir = std::env::temp_dir().join(format!("weir-bench-ovs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("bench.json");
    let ran = bench(
        &["--duration=0.5", "--features=ip,vlan,vxlan", "--peer=ovs"],
        &json,
        String::new,
    );
    assert_features_passed(&ran.report, "ip+vlan+vxlan");
    assert_ovs_forwarded(&ran.report);
    let tunnels = ran.report["peer_tunnels"].as_array().unwrap();
    assert_eq!(tunnels.len(), 1, "{}", ran.report);
    // OVS's datapath encapsulated and decapsulated both directions.
    let c = &tunnels[0]["counters"];
    for k in ["encapsulated", "decapsulated"] {
        for side in 0..2 {
            assert!(c[k][side].as_u64().unwrap() > 0, "{k}: {c}");
        }
    }
    // OVS's network namespace (`wb<pid>x<n>`) went with it.
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let netns = String::from_utf8_lossy(&netns.stdout);
    let ours = |l: &str| {
        l.strip_prefix("wb")
            .and_then(|r| r.split_whitespace().next())
            .and_then(|r| r.split_once('x'))
            .is_some_and(|(p, n)| {
                [p, n]
                    .iter()
                    .all(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            })
    };
    assert!(!netns.lines().any(ours), "OVS's namespace left: {netns}");

    let ran = bench(
        &["--duration=0.5", "--features=ip,patch", "--peer=ovs"],
        &json,
        String::new,
    );
    assert_features_passed(&ran.report, "ip+patch");
    assert_ovs_forwarded(&ran.report);
    assert_eq!(ran.report["peer_tunnels"], serde_json::json!([]));
    std::fs::remove_dir_all(&dir).unwrap();
}
