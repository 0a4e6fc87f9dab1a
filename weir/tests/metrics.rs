//! End to end: the OpenMetrics endpoint of a real `weir run` daemon, read by
//! a real Prometheus (Debian's `prometheus` package).
//!
//! Two namespaces on afpacket ports of one bridge exchange pings. Then:
//!
//! 1. `GET /metrics` answers in the Prometheus text format, which
//!    `promtool check metrics` accepts, and in OpenMetrics to a client that
//!    asks for it (as Prometheus does), with the ports' counters in both.
//! 2. A Prometheus of the test's own (its own port, its own storage in a
//!    temporary directory; never the system's service) scrapes the daemon
//!    every second; its query API returns `weir_port_rx_packets_total` of
//!    the sending port, at least what `weir stats --json` showed once the
//!    pings were done and at most what it shows after.
//!
//! Needs root (CI runs as root) and `prometheus` and `promtool`
//! (`scripts/setup.sh`); fails, never skips, without them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use weir_testkit::{require_root_and_ip, VethHost};

mod common;
use common::{kernel_config, loss_pct, ping, port_entry, reap, tail, test_dir, Daemon};

/// Pings the sender sends.
const PINGS: u32 = 20;

/// How long Prometheus is given to start and scrape the daemon.
const WAIT: Duration = Duration::from_secs(90);

/// A free TCP port on loopback: bound by the kernel's choice and released.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.0 `GET` of `path` on `addr` with `headers` (each `Name: value`):
/// (status, head, body), or why it failed.
fn http_get(
    addr: SocketAddr,
    path: &str,
    headers: &[&str],
) -> Result<(u16, String, String), String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for h in headers {
        req += h;
        req += "\r\n";
    }
    req += "\r\n";
    s.write_all(req.as_bytes())
        .map_err(|e| format!("sending to {addr}: {e}"))?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .map_err(|e| format!("reading from {addr}: {e}"))?;
    let text = String::from_utf8(out).map_err(|e| format!("reply from {addr}: {e}"))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("reply from {addr} without a head: {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line from {addr}: {head:?}"))?;
    Ok((status, head.to_owned(), body.to_owned()))
}

/// `promtool check metrics` on `text`: its output if it fails.
fn promtool_check(text: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running promtool (scripts/setup.sh installs it): {e}"))?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "promtool check metrics: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A Prometheus server of the test's own, killed on drop.
struct Prometheus {
    child: Child,
    api: SocketAddr,
}

impl Prometheus {
    /// Starts Prometheus on a free loopback port, with its configuration
    /// and storage in `dir`, scraping `target` every second.
    fn start(dir: &Path, target: SocketAddr) -> Prometheus {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: weir\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let api = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={api}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting prometheus (scripts/setup.sh installs it): {e}"));
        Prometheus { child, api }
    }

    /// The instant vector `query` returns, or why not.
    fn query(&self, query: &str) -> Result<Vec<serde_json::Value>, String> {
        let (status, _, body) = http_get(self.api, &format!("/api/v1/query?query={query}"), &[])?;
        if status != 200 {
            return Err(format!("query {query}: HTTP {status}: {body}"));
        }
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("query {query}: {e}: {body}"))?;
        v["data"]["result"]
            .as_array()
            .cloned()
            .ok_or_else(|| format!("query {query}: no result: {body}"))
    }

    /// The scrape target's health and last error, for failure messages.
    fn targets(&self) -> String {
        match http_get(self.api, "/api/v1/targets", &[]) {
            Ok((_, _, body)) => body,
            Err(e) => e,
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        reap(&mut self.child, Duration::from_secs(10));
    }
}

/// The sum over queues of the samples of port `port` in `result`.
fn port_sum(result: &[serde_json::Value], port: &str) -> Option<u64> {
    let values: Vec<u64> = result
        .iter()
        .filter(|s| s["metric"]["port"] == port)
        .filter_map(|s| s["value"][1].as_str()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// The sum over queues of `family`'s samples for `port` in exposition `text`.
fn exposed(text: &str, family: &str, port: &str) -> u64 {
    let prefix = format!("{family}{{port=\"{port}\",");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .map(|l| {
            l.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("bad sample line {l:?}"))
        })
        .sum()
}

/// Port `name`'s `rx_packets` in `weir stats --json`.
fn stats_rx(d: &Daemon, name: &str) -> u64 {
    let stats = d.json(&["stats"]);
    port_entry(&stats["ports"], name)["stats"]["rx_packets"]
        .as_u64()
        .unwrap()
}

#[test]
fn prometheus_scrapes_port_counters_from_the_metrics_endpoint() {
    require_root_and_ip().expect("the metrics test needs root and iproute2");
    for tool in ["prometheus", "promtool"] {
        let found = Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "{tool} is missing: scripts/setup.sh installs it (Debian package prometheus)"
        );
    }
    let tag = format!("wm{}", std::process::id() % 100_000);
    let a = VethHost::create_quiet(&format!("{tag}-a"), &format!("{tag}a"), "198.18.31.1").unwrap();
    let b = VethHost::create_quiet(&format!("{tag}-b"), &format!("{tag}b"), "198.18.31.2").unwrap();
    let endpoint = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = kernel_config(
        &format!("\n[metrics]\nlisten = \"{endpoint}\"\n"),
        &[("a", "afpacket", &a.host_if), ("b", "afpacket", &b.host_if)],
    );
    let dir = test_dir(&format!("metrics-{tag}"));
    let d = Daemon::start(&dir, &config);
    d.wait_up(&["a", "b"]);

    let out = ping(&a.ns, &b.ip, PINGS, "0.05")
        .unwrap_or_else(|e| panic!("ping through weir: {e}\n{}", d.log()));
    assert_eq!(loss_pct(&out), 0.0, "{out}");
    let sent = stats_rx(&d, "a");
    assert!(
        sent >= u64::from(PINGS),
        "a received {sent} frames for {PINGS} pings"
    );

    // 1. The endpoint itself, in both formats.
    let (status, head, text) = http_get(endpoint, "/metrics", &[])
        .unwrap_or_else(|e| panic!("GET /metrics: {e}\n{}", d.log()));
    assert_eq!(status, 200, "{head}\n{text}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    promtool_check(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let rx = exposed(&text, "weir_port_rx_packets_total", "a");
    assert!(
        rx >= sent,
        "weir_port_rx_packets_total of a is {rx}, weir stats showed {sent}\n{text}"
    );
    assert!(
        exposed(&text, "weir_port_tx_packets_total", "b") >= u64::from(PINGS),
        "{text}"
    );
    let (status, head, om) = http_get(
        endpoint,
        "/metrics",
        &["Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"],
    )
    .unwrap();
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{head}"
    );
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE weir_port_rx_packets counter\n"), "{om}");
    assert!(
        exposed(&om, "weir_port_rx_packets_total", "a") >= sent,
        "{om}"
    );
    let (status, _, _) = http_get(endpoint, "/", &[]).unwrap();
    assert_eq!(status, 404);
    // The sampled latency histogram of each port, and its summary in
    // `weir port show` (whether a ping fell in a sampled round is chance).
    for exposition in [&text, &om] {
        assert!(
            exposition
                .lines()
                .any(|l| l.starts_with("weir_port_latency_seconds_bucket{")
                    && l.contains("port=\"a\"")
                    && l.contains("le=\"+Inf\"")),
            "{exposition}"
        );
    }
    let shown = d.ok(&["port", "show", "a"]);
    assert!(shown.lines().any(|l| l.starts_with("latency ")), "{shown}");

    // 2. A real Prometheus scrapes it.
    let prom = Prometheus::start(&dir, endpoint);
    let deadline = Instant::now() + WAIT;
    let scraped = loop {
        let last = prom.query("weir_port_rx_packets_total");
        if let Ok(result) = &last {
            if let Some(v) = port_sum(result, "a").filter(|&v| v >= sent) {
                break v;
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not report a's rx packets >= {sent} in {WAIT:?}: {last:?}\n\
             targets: {}\nprometheus log:\n{}",
            prom.targets(),
            tail(
                &std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default(),
                20
            )
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let now = stats_rx(&d, "a");
    assert!(
        scraped <= now,
        "Prometheus has {scraped} frames received on a, more than weir stats shows ({now})"
    );
    let up = prom.query("up").unwrap();
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0]["value"][1], "1", "{up:?}\n{}", prom.targets());
    // 3. `weir stats clear` starts what the CLI shows from zero; the
    // exported counters keep their totals (a counter that went back would
    // read as a reset to Prometheus).
    d.ok(&["stats", "clear"]);
    assert_eq!(stats_rx(&d, "a"), 0);
    let (_, _, after) = http_get(endpoint, "/metrics", &[]).unwrap();
    assert!(
        exposed(&after, "weir_port_rx_packets_total", "a") >= now,
        "the exported counter went back after stats clear:\n{after}"
    );
    let built = prom.query("weir_build_info").unwrap();
    assert_eq!(
        built[0]["metric"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{built:?}"
    );
}
