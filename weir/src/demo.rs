//! `weir demo`: weir's main job on an embedded default, with no hardware and no
//! configuration file.
//!
//! It creates three network namespaces ("hosts"), attaches them to one weir bridge
//! through the three kernel-interface port types (AF_PACKET and AF_XDP on veth
//! pairs, and a TAP interface moved into the third namespace), pings every pair
//! both ways, moves 100 MB over TCP with every byte verified, prints the FDB and
//! the port counters, and removes everything again, also after Ctrl-C.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::cli::Output;
use crate::render::render;
use weir_config::{BridgeSpec, Config, Host, PortSpec, PortType, ValidConfig};
use weir_control::{spawn_housekeeping, Dataplane};
use weir_testkit::{adopt_into, require_root_and_ip, tcp_transfer, Netns, VethHost};

/// Bytes moved over TCP by the demo.
const TRANSFER_BYTES: u64 = 100 * 1000 * 1000;

struct Host3<'a> {
    label: &'static str,
    ns: &'a Netns,
    ip: String,
}

/// Runs the demonstration.
///
/// # Errors
/// Not root, iproute2 missing, or any step failing (everything created is removed
/// before returning).
pub fn run() -> anyhow::Result<()> {
    require_root_and_ip()?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    let check_stop = || -> anyhow::Result<()> {
        // Relaxed: a plain flag.
        if stop.load(Ordering::Relaxed) {
            bail!("interrupted; cleaning up");
        }
        Ok(())
    };
    let tag = format!("wd{}", std::process::id() % 100_000);
    println!("weir demo: three network namespaces on one weir bridge (br0)\n");

    let a = VethHost::create(&format!("{tag}-a"), &format!("{tag}a"), "198.18.10.1")?;
    let b = VethHost::create(&format!("{tag}-b"), &format!("{tag}b"), "198.18.10.2")?;
    let c_ns = Netns::create(&format!("{tag}-c"))?;
    let tap_if = format!("{tag}c");

    let mut cfg = Config::default();
    cfg.dataplane.mbufs = 8192;
    cfg.dataplane.idle_sleep_us = 20;
    cfg.bridges.push(BridgeSpec { name: "br0".into() });
    let port = |name: &str, kind, iface: &str| {
        let mut p = PortSpec::new(name, kind);
        p.iface = Some(iface.into());
        p.bridge = Some("br0".into());
        p
    };
    cfg.ports
        .push(port("host-a", PortType::Afpacket, &a.host_if));
    cfg.ports.push(port("host-b", PortType::Afxdp, &b.host_if));
    cfg.ports.push(port("host-c", PortType::Tap, &tap_if));
    let cfg = ValidConfig::new(cfg, Host::system()).context("starting the dataplane")?;
    let dp = Arc::new(Dataplane::start(cfg).context("starting the dataplane")?);
    let ticker_stop = Arc::new(AtomicBool::new(false));
    let ticker = spawn_housekeeping(
        Arc::downgrade(&dp),
        ticker_stop.clone(),
        Duration::from_millis(200),
    )
    .context("starting the FDB clock")?;
    let result = (|| -> anyhow::Result<()> {
        adopt_into(&c_ns, &tap_if, "198.18.10.3")?;
        let hosts = [
            Host3 {
                label: "a (af_packet)",
                ns: &a.ns,
                ip: a.ip.clone(),
            },
            Host3 {
                label: "b (af_xdp)",
                ns: &b.ns,
                ip: b.ip.clone(),
            },
            Host3 {
                label: "c (tap)",
                ns: &c_ns,
                ip: "198.18.10.3".into(),
            },
        ];
        wait_links_up(&dp, Duration::from_secs(10))?;

        println!("ping, every pair both ways:");
        for x in &hosts {
            for y in &hosts {
                if std::ptr::eq(x, y) {
                    continue;
                }
                check_stop()?;
                let out =
                    x.ns.exec(&["ping", "-c", "3", "-i", "0.2", "-w", "5", &y.ip])
                        .with_context(|| format!("ping from {} to {}", x.label, y.label))?;
                let summary = out
                    .lines()
                    .find(|l| l.contains("packets transmitted"))
                    .unwrap_or("")
                    .to_string();
                println!("  {:>14} -> {:<14} {summary}", x.label, y.label);
            }
        }
        check_stop()?;
        println!(
            "\nTCP, {} MB from a to c, every byte verified:",
            TRANSFER_BYTES / 1_000_000
        );
        let took = tcp_transfer(hosts[0].ns, hosts[2].ns, &hosts[2].ip, 5201, TRANSFER_BYTES)?;
        println!(
            "  {} MB in {:.2} s ({:.0} Mbit/s)",
            TRANSFER_BYTES / 1_000_000,
            took.as_secs_f64(),
            TRANSFER_BYTES as f64 * 8.0 / took.as_secs_f64() / 1e6
        );

        println!("\nweir fdb show:");
        let fdb = serde_json::to_value(dp.fdb_show(None)?)?;
        println!("{}", render(Output::Fdb, Some(fdb))?);
        println!("weir port list:");
        let list = dp.port_list();
        let ports = serde_json::to_value(&list)?;
        println!("{}", render(Output::Ports, Some(ports))?);
        for p in &list {
            let reasons: Vec<String> = p
                .stats
                .drops_by_name()
                .map(|(r, n)| format!("{r} {n}"))
                .collect();
            if !reasons.is_empty() {
                println!("drops on {}: {}", p.name, reasons.join(", "));
            }
        }
        Ok(())
    })();
    // Relaxed: a plain flag; join() synchronises.
    ticker_stop.store(true, Ordering::Relaxed);
    let _ = ticker.join();
    match Arc::try_unwrap(dp) {
        Ok(dp) => dp.shutdown(),
        Err(_) => tracing::warn!("dataplane still referenced at shutdown"),
    }
    drop(c_ns);
    drop(b);
    drop(a);
    result?;
    println!("demo finished; namespaces and interfaces removed");
    Ok(())
}

fn wait_links_up(dp: &Dataplane, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let ports = dp.port_list();
        if ports.iter().all(|p| p.link == "up") {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let down: Vec<_> = ports
                .iter()
                .filter(|p| p.link != "up")
                .map(|p| p.name.clone())
                .collect();
            bail!("ports still down after {timeout:?}: {}", down.join(", "));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
