//! `weir bench` smoke test: a short run through an in-process switch over two
//! vhost-user ports (weir's own frontend on each), with an RFC 2544 search,
//! writing JSON and an SVG. It asserts only that frames were forwarded and
//! that the outputs are well-formed; it never compares a rate to a threshold.

use std::process::Command;

use serde_json::Value;

#[test]
fn short_bench_forwards_frames_and_writes_json_and_svg() {
    let dir = std::env::temp_dir().join(format!("weir-bench-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("bench.json");
    let svg = dir.join("bench.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["bench", "--quiet", "--duration", "1", "--size", "64,imix"])
        .args(["--flows", "4", "--repeat", "2", "--ndr", "--trial", "0.2"])
        .args(["--resolution", "25", "--json"])
        .arg(&json)
        .arg("--plot")
        .arg(&svg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "weir bench failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Mpps min/median/max"), "{stdout}");

    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["params"]["sizes"], serde_json::json!(["64", "imix"]));
    assert!(report["machine"]["tsc_hz"].as_f64().unwrap() > 0.0);
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
