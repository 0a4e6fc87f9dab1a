//! Text output of the client verbs: one [`Table`] renderer for every table
//! the CLI prints (ports, bridges, FDB, workers, stats, NICs, VFs).

use std::fmt::Write as _;

use weir_api::{
    AclInfo, AclView, BridgeInfo, FdbEntryView, LatencyView, MempoolView, MirrorView, PortInfo,
    PortStatsView, StatsView, WorkerView,
};
use weir_config::PortSettings;
use weir_host::nic::{PciNic, VfInfo};

use crate::cli::Output;

/// Renders a successful reply's `data` for `output`.
///
/// # Errors
///
/// If `data` does not have the shape the output expects.
pub fn render(output: Output, data: Option<serde_json::Value>) -> anyhow::Result<String> {
    use anyhow::Context as _;
    fn decode<T: serde::de::DeserializeOwned>(
        data: Option<serde_json::Value>,
    ) -> anyhow::Result<T> {
        serde_json::from_value(data.unwrap_or(serde_json::Value::Null))
            .context("unexpected reply from weir")
    }
    Ok(match output {
        Output::Quiet => String::new(),
        Output::Json => {
            let mut s = serde_json::to_string_pretty(&data.unwrap_or(serde_json::Value::Null))?;
            s.push('\n');
            s
        }
        Output::Ports => render_ports(&decode::<Vec<PortInfo>>(data)?),
        Output::Port => render_port(&decode::<PortInfo>(data)?),
        Output::Bridges => render_bridges(&decode::<Vec<BridgeInfo>>(data)?),
        Output::Fdb => render_fdb(&decode::<Vec<FdbEntryView>>(data)?),
        Output::Stats => render_stats(&decode::<StatsView>(data)?),
        Output::Workers => render_workers(&decode::<Vec<WorkerView>>(data)?),
        Output::Acls => render_acls(&decode::<Vec<AclInfo>>(data)?),
        Output::Acl => render_acl(&decode::<AclView>(data)?),
        Output::Toml => decode::<String>(data)?,
        Output::ConfigJson => {
            let text = decode::<String>(data)?;
            let config = weir_config::Config::parse(&text, "the running configuration")?;
            let mut s = serde_json::to_string_pretty(&config)?;
            s.push('\n');
            s
        }
        Output::Mirrors => render_mirrors(&decode::<Vec<MirrorView>>(data)?),
        Output::HostIps => render_host_ips(&decode::<Vec<weir_api::HostIpView>>(data)?),
        Output::Neighbours => render_neighbours(&decode::<Vec<weir_api::NeighView>>(data)?),
    })
}

/// A text table with aligned columns.
pub struct Table {
    headers: Vec<&'static str>,
    /// Per column: right-align (numbers).
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Columns named with a leading `>` are right-aligned.
    pub fn new(headers: &[&'static str]) -> Self {
        Table {
            right: headers.iter().map(|h| h.starts_with('>')).collect(),
            headers: headers.iter().map(|h| h.trim_start_matches('>')).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = widths[i].saturating_sub(width(cell));
                if self.right[i] {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

fn opt(value: &Option<impl ToString>) -> String {
    value
        .as_ref()
        .map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// `name=count` pairs, or `-`.
fn drop_reasons<'a>(drops: impl IntoIterator<Item = (&'a str, u64)>) -> String {
    let parts: Vec<String> = drops
        .into_iter()
        .filter(|&(_, n)| n > 0)
        .map(|(reason, n)| format!("{reason}={n}"))
        .collect();
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(",")
    }
}

fn render_ports(ports: &[PortInfo]) -> String {
    if ports.is_empty() {
        return "no ports\n".to_owned();
    }
    let mut t = Table::new(&[
        ">ID", "NAME", "TYPE", "BRIDGE", "VLAN", "IFACE", "LINK", ">MTU", ">QUEUES", ">WORKER",
        ">RX-PKTS", ">TX-PKTS", ">DROPS", "POLICY", "STATE",
    ]);
    for p in ports {
        t.row(vec![
            p.id.to_string(),
            p.name.clone(),
            p.kind.clone(),
            opt(&p.bridge),
            vlan(p),
            opt(&p.iface),
            p.link.clone(),
            opt(&p.mtu),
            p.queues.to_string(),
            opt(&p.worker),
            p.stats.rx_packets.to_string(),
            p.stats.tx_packets.to_string(),
            p.stats.total_drops().to_string(),
            policy(&p.settings),
            p.state.clone(),
        ]);
    }
    t.render()
}

/// A port's VLAN settings in one cell: the mode, then its tag, then its
/// trunks (`all` for a native mode's empty list): `access 10`, `trunk 10,20`,
/// `native-untagged 5 all`; `-` for a trunk of every VLAN (no VLAN
/// settings, the switch does not look at tags).
fn vlan(p: &PortInfo) -> String {
    let trunks = if p.trunks.is_empty() {
        "all".to_owned()
    } else {
        let ids: Vec<String> = p.trunks.iter().map(u16::to_string).collect();
        ids.join(",")
    };
    match p.vlan_mode.as_deref() {
        None => "-".to_owned(),
        Some("trunk") if p.trunks.is_empty() => "-".to_owned(),
        Some("trunk") => format!("trunk {trunks}"),
        Some("access") => format!("access {}", opt(&p.tag)),
        Some(mode) => format!("{mode} {} {trunks}", opt(&p.tag)),
    }
}

/// A rate limit that is on: set and not 0.
fn limit(rate: Option<u64>) -> Option<u64> {
    rate.filter(|&r| r > 0)
}

/// A port's port security and rate limits in one cell, the parts that are
/// on: `secured` (port security), `in=20000k` (ingress policing, kbit/s),
/// `out=10000k` (egress rate), `storm=500pps`; `-` for none.
fn policy(s: &PortSettings) -> String {
    let mut parts = Vec::new();
    if s.port_security {
        parts.push("secured".to_owned());
    }
    if let Some(r) = limit(s.ingress_policing_rate) {
        parts.push(format!("in={r}k"));
    }
    if let Some(r) = limit(s.egress_rate) {
        parts.push(format!("out={r}k"));
    }
    if let Some(r) = limit(s.storm_pps) {
        parts.push(format!("storm={r}pps"));
    }
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(" ")
    }
}

/// Items joined with `, `.
fn list(items: &[impl ToString]) -> String {
    let items: Vec<String> = items.iter().map(ToString::to_string).collect();
    items.join(", ")
}

/// `weir port show`: one port, everything, one `key  value` line each.
/// A port's sampled receive-to-transmit latency: the bucket bounds of its
/// median and 99th percentile.
fn latency(l: Option<&LatencyView>) -> String {
    let Some(l) = l else { return "-".into() };
    let bound = |q: f64| match l.quantile_le_ns(q) {
        Some(Some(ns)) if ns < 1_000_000 => format!("<= {:.1} us", ns as f64 / 1e3),
        Some(Some(ns)) => format!("<= {:.1} ms", ns as f64 / 1e6),
        _ => format!(
            "> {:.1} ms",
            l.buckets.iter().rev().find_map(|b| b.le_ns).unwrap_or(0) as f64 / 1e6
        ),
    };
    if l.frames == 0 {
        return "no frames sampled yet (receive to transmit, 1 poll round in 16)".into();
    }
    format!(
        "receive to transmit p50 {}, p99 {} ({} frames sampled, mean {:.1} us)",
        bound(0.5),
        bound(0.99),
        l.frames,
        l.sum_ns as f64 / l.frames as f64 / 1e3
    )
}

fn render_port(p: &PortInfo) -> String {
    let s = &p.settings;
    let mut lines: Vec<(&str, String)> = vec![
        ("name", p.name.clone()),
        ("id", p.id.to_string()),
        ("type", p.kind.clone()),
        ("bridge", opt(&p.bridge)),
        ("endpoint", opt(&p.iface)),
        ("link", p.link.clone()),
        ("state", p.state.clone()),
        ("mtu", opt(&p.mtu)),
    ];
    if let Some(m) = p.offered_mtu {
        lines.push(("offered mtu", m.to_string()));
    }
    if !p.features.is_empty() {
        lines.push(("features", p.features.join(" ")));
    }
    let queues = if p.queue_workers.is_empty() {
        format!("{}, worker {}", p.queues, opt(&p.worker))
    } else {
        let on: Vec<String> = (p.queue_workers.iter().enumerate())
            .map(|(q, w)| format!("{q} on worker {w}"))
            .collect();
        format!("{}: {}", p.queues, on.join(", "))
    };
    lines.push(("queues", queues));
    lines.push(("vlan", vlan(p)));
    lines.push(("mac", opt(&s.mac)));
    let security = if s.port_security {
        let (macs, from) = if s.allowed_macs.is_empty() {
            (s.mac.iter().copied().collect(), " (mac)")
        } else {
            (s.allowed_macs.clone(), "")
        };
        let ips = if s.ips.is_empty() {
            "any (MAC checked only)".to_owned()
        } else {
            list(&s.ips)
        };
        format!("on: MACs {}{from}; IPs {ips}", list(&macs))
    } else {
        "off".to_owned()
    };
    lines.push(("port security", security));
    let rx_filter = match (&p.rx_filter, s.rx_filter_on()) {
        (Some(f), _) => f.clone(),
        (None, false) => "off (rx_filter = false)".to_owned(),
        (None, true) => "off".to_owned(),
    };
    lines.push(("rx filter", rx_filter));
    let policing = match limit(s.ingress_policing_rate) {
        None => "off".to_owned(),
        Some(r) => match limit(s.ingress_policing_burst) {
            Some(b) => format!("{r} kbit/s, burst {b} kbit"),
            None => format!(
                "{r} kbit/s, burst {} kbit (default)",
                weir_config::DEFAULT_POLICING_BURST_KBIT
            ),
        },
    };
    lines.push(("ingress policing", policing));
    lines.push((
        "egress rate",
        limit(s.egress_rate).map_or("off".to_owned(), |r| format!("{r} kbit/s")),
    ));
    lines.push((
        "storm control",
        limit(s.storm_pps).map_or("off".to_owned(), |r| format!("{r} frames/s")),
    ));
    if let Some(h) = &p.host {
        lines.push(("ip", h.addrs.join(", ")));
        let gw: Vec<&str> = h
            .gateway
            .iter()
            .chain(&h.gateway6)
            .map(String::as_str)
            .collect();
        if !gw.is_empty() {
            lines.push(("gateway", gw.join(", ")));
        }
        lines.push(("host mac", h.mac.clone()));
        lines.push(("host mtu", h.mtu.to_string()));
        if !h.tunnels.is_empty() {
            lines.push(("tunnels", h.tunnels.join(", ")));
        }
    }
    if let Some(t) = &p.tunnel {
        lines.extend(tunnel_lines(t));
    }
    let counters = |st: &PortStatsView| {
        [
            format!(
                "rx {} packets, {} bytes, {} errors",
                st.rx_packets, st.rx_bytes, st.rx_errors
            ),
            format!(
                "tx {} packets, {} bytes, {} errors",
                st.tx_packets, st.tx_bytes, st.tx_errors
            ),
            format!("drops {}", drop_reasons(st.drops_by_name())),
        ]
    };
    let [rx, tx, drops] = counters(&p.stats);
    lines.push(("counters", rx));
    lines.push(("", tx));
    lines.push(("", drops));
    lines.push(("latency", latency(p.latency.as_ref())));
    let per_queue: Vec<(String, String)> = if p.queue_stats.len() > 1 {
        p.queue_stats
            .iter()
            .enumerate()
            .flat_map(|(q, st)| {
                let [rx, tx, drops] = counters(st);
                [
                    (format!("queue {q}"), rx),
                    (String::new(), tx),
                    (String::new(), drops),
                ]
            })
            .collect()
    } else {
        Vec::new()
    };
    let width = lines
        .iter()
        .map(|(k, _)| k.len())
        .chain(per_queue.iter().map(|(k, _)| k.len()))
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (k, v) in lines
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .chain(per_queue.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    {
        let _ = writeln!(out, "{k:width$}  {v}");
    }
    out
}

/// `port show`'s lines for a tunnel port: its keys, the MTU left for
/// tenants, and per remote its next hop and whether frames to it leave.
fn tunnel_lines(t: &weir_api::TunnelView) -> Vec<(&'static str, String)> {
    let mut lines = vec![(
        "tunnel",
        format!(
            "{} over {}, local_ip {}, dst_port {}",
            t.kind, t.underlay, t.local_ip, t.dst_port
        ),
    )];
    if let Some(v) = t.vni {
        lines.push(("vni", v.to_string()));
    }
    if !t.vlan_vni.is_empty() {
        let map: Vec<String> = t
            .vlan_vni
            .iter()
            .map(|(vlan, vni)| format!("{vlan}={vni}"))
            .collect();
        lines.push(("vlan_vni", map.join(", ")));
    }
    lines.push((
        "inner mtu",
        format!(
            "{} (frames up to {} bytes; underlay MTU {})",
            t.inner_mtu, t.max_frame_bytes, t.underlay_mtu
        ),
    ));
    if t.remotes.is_empty() {
        lines.push(("remotes", "-".to_owned()));
    }
    for (i, r) in t.remotes.iter().enumerate() {
        let via = match (&r.next_hop, &r.next_hop_mac) {
            (None, _) => "no next hop (off-link, no gateway)".to_owned(),
            (Some(nh), Some(mac)) => format!("via {nh} at {mac}"),
            (Some(nh), None) => format!("via {nh}, MAC unknown"),
        };
        let state = if r.resolved {
            "resolved"
        } else {
            "unresolved: frames dropped as tunnel-unresolved"
        };
        let key = if i == 0 { "remotes" } else { "" };
        lines.push((key, format!("{} {via}; {state}", r.ip)));
    }
    lines
}

fn render_bridges(bridges: &[BridgeInfo]) -> String {
    if bridges.is_empty() {
        return "no bridges\n".to_owned();
    }
    let mut t = Table::new(&["NAME", ">FDB", "PORTS"]);
    for b in bridges {
        let ports = if b.ports.is_empty() {
            "-".to_owned()
        } else {
            b.ports.join(",")
        };
        t.row(vec![b.name.clone(), b.fdb_entries.to_string(), ports]);
    }
    t.render()
}

/// Port names, comma-separated, or `-`.
fn names(ports: &[String]) -> String {
    if ports.is_empty() {
        "-".to_owned()
    } else {
        ports.join(",")
    }
}

fn render_acls(acls: &[AclInfo]) -> String {
    if acls.is_empty() {
        return "no ACLs\n".to_owned();
    }
    let mut t = Table::new(&["NAME", "DEFAULT", ">RULES", "ACL_IN", "ACL_OUT"]);
    for a in acls {
        t.row(vec![
            a.name.clone(),
            a.default.to_string(),
            a.rules.to_string(),
            names(&a.acl_in),
            names(&a.acl_out),
        ]);
    }
    t.render()
}

fn render_mirrors(mirrors: &[MirrorView]) -> String {
    if mirrors.is_empty() {
        return "no mirrors\n".to_owned();
    }
    let mut t = Table::new(&["NAME", "SRC", "DST", "TO", ">COPIED", ">LOST"]);
    for m in mirrors {
        t.row(vec![
            m.name.clone(),
            names(&m.src),
            names(&m.dst),
            m.to.clone(),
            m.copied.to_string(),
            m.lost.to_string(),
        ]);
    }
    t.render()
}

/// One ACL: its default and users, then its rules numbered from 0 (as
/// errors name them), each in the form `--rule` takes.
fn render_acl(acl: &AclView) -> String {
    let mut head = Table::new(&["ACL", "DEFAULT", "ACL_IN", "ACL_OUT"]);
    head.row(vec![
        acl.name.clone(),
        acl.default.to_string(),
        names(&acl.acl_in),
        names(&acl.acl_out),
    ]);
    let mut out = head.render();
    out.push('\n');
    if acl.rules.is_empty() {
        out.push_str("no rules: every frame gets the default\n");
        return out;
    }
    let mut rules = Table::new(&[">#", "RULE"]);
    for (i, r) in acl.rules.iter().enumerate() {
        rules.row(vec![i.to_string(), r.to_string()]);
    }
    out.push_str(&rules.render());
    out
}

fn render_fdb(entries: &[FdbEntryView]) -> String {
    if entries.is_empty() {
        return "no FDB entries\n".to_owned();
    }
    let remotes = entries.iter().any(|e| e.remote.is_some());
    let mut headers = vec!["BRIDGE", ">VLAN", "MAC", "PORT", ">AGE", "TYPE"];
    if remotes {
        headers.push("REMOTE");
    }
    let mut t = Table::new(&headers);
    for e in entries {
        let mut row = vec![
            e.bridge.clone(),
            e.vlan.to_string(),
            e.mac.clone(),
            e.port.clone(),
            if e.is_static {
                "-".to_owned()
            } else {
                e.age_secs.to_string()
            },
            if e.is_static { "static" } else { "learned" }.to_owned(),
        ];
        if remotes {
            row.push(e.remote.clone().unwrap_or_else(|| "-".to_owned()));
        }
        t.row(row);
    }
    t.render()
}

fn render_host_ips(ports: &[weir_api::HostIpView]) -> String {
    if ports.is_empty() {
        return "no port has an ip\n".to_owned();
    }
    let mut t = Table::new(&[
        "PORT",
        "MAC",
        "ADDRESSES",
        "GATEWAY",
        ">MTU",
        "TUNNELS",
        ">RX",
        ">TX",
        ">TX-FAILED",
    ]);
    for p in ports {
        let gw: Vec<&str> = p
            .gateway
            .iter()
            .chain(&p.gateway6)
            .map(String::as_str)
            .collect();
        t.row(vec![
            p.port.clone(),
            p.mac.clone(),
            p.addrs.join(","),
            if gw.is_empty() {
                "-".to_owned()
            } else {
                gw.join(",")
            },
            p.mtu.to_string(),
            if p.tunnels.is_empty() {
                "-".to_owned()
            } else {
                p.tunnels.join(",")
            },
            p.rx_frames.to_string(),
            p.tx_frames.to_string(),
            p.tx_failed.to_string(),
        ]);
    }
    t.render()
}

fn render_neighbours(neighbours: &[weir_api::NeighView]) -> String {
    if neighbours.is_empty() {
        return "no neighbours\n".to_owned();
    }
    let mut t = Table::new(&["PORT", "IP", "MAC", "STATE", ">AGE", "WANTED"]);
    for n in neighbours {
        t.row(vec![
            n.port.clone(),
            n.ip.clone(),
            n.mac.clone().unwrap_or_else(|| "-".to_owned()),
            n.state.clone(),
            n.age_secs.map_or_else(|| "-".to_owned(), |a| a.to_string()),
            if n.wanted { "yes" } else { "-" }.to_owned(),
        ]);
    }
    t.render()
}

fn render_workers(workers: &[WorkerView]) -> String {
    if workers.is_empty() {
        return "no workers\n".to_owned();
    }
    let mut t = Table::new(&[
        ">ID",
        ">CPU",
        ">BUSY%",
        ">RX-PKTS",
        ">BURST",
        "CYC/PKT RX+SW+TX",
        "RX-QUEUES",
        "DROPS",
    ]);
    for w in workers {
        let burst = if w.busy_rounds == 0 {
            "-".to_owned()
        } else {
            format!("{:.1}", w.rx_packets as f64 / w.busy_rounds as f64)
        };
        let stages = match w.stages.per_packet() {
            Some((rx, sw, tx)) => format!("{rx:.0}+{sw:.0}+{tx:.0}"),
            None => "-".to_owned(),
        };
        let queues = if w.rx_queues.is_empty() {
            "-".to_owned()
        } else {
            w.rx_queues.join(",")
        };
        t.row(vec![
            w.id.to_string(),
            w.cpu.to_string(),
            format!("{:.1}", w.busy_pct),
            w.rx_packets.to_string(),
            burst,
            stages,
            queues,
            drop_reasons(w.drops.iter().map(|(r, n)| (r.as_str(), *n))),
        ]);
    }
    t.render()
}

/// One line of `weir stats` for a buffer pool.
fn pool_line(out: &mut String, label: &str, unit: &str, m: &MempoolView) {
    let _ = write!(
        out,
        "{label}: {} of {} {unit} free, {} B data room, {}",
        m.available,
        m.total,
        m.mbuf_size,
        if m.hugepages {
            "hugepages"
        } else {
            "normal pages"
        }
    );
    if let Some(n) = m.port_share {
        let _ = write!(out, ", at most {n} per port");
    }
    out.push('\n');
}

/// Segmentation offload per port, for the ports that saw any: super-frames
/// in, out whole, and cut into segments by weir.
fn render_tso(out: &mut String, ports: &[PortInfo]) {
    let busy = |s: &PortStatsView| s.rx_tso_packets + s.tx_tso_packets + s.tso_segmented > 0;
    if !ports.iter().any(|p| busy(&p.stats)) {
        return;
    }
    let mut t = Table::new(&["PORT", ">RX-TSO", ">TX-TSO", ">SEGMENTED"]);
    for p in ports.iter().filter(|p| busy(&p.stats)) {
        t.row(vec![
            p.name.clone(),
            p.stats.rx_tso_packets.to_string(),
            p.stats.tx_tso_packets.to_string(),
            p.stats.tso_segmented.to_string(),
        ]);
    }
    out.push('\n');
    out.push_str(&t.render());
}

fn render_stats(stats: &StatsView) -> String {
    let mut out = String::new();
    if stats.ports.is_empty() {
        out.push_str("no ports\n");
    } else {
        let mut t = Table::new(&[
            "PORT",
            ">RX-PKTS",
            ">RX-BYTES",
            ">TX-PKTS",
            ">TX-BYTES",
            ">RX-ERR",
            ">TX-ERR",
            "DROPS",
        ]);
        let row = |name: String, s: &PortStatsView| {
            vec![
                name,
                s.rx_packets.to_string(),
                s.rx_bytes.to_string(),
                s.tx_packets.to_string(),
                s.tx_bytes.to_string(),
                s.rx_errors.to_string(),
                s.tx_errors.to_string(),
                drop_reasons(s.drops_by_name()),
            ]
        };
        for p in &stats.ports {
            t.row(row(p.name.clone(), &p.stats));
            // Multiqueue ports: one line per queue pair under the total, named
            // `port:queue` as in `pmd show`.
            if p.queue_stats.len() > 1 {
                for (q, s) in p.queue_stats.iter().enumerate() {
                    t.row(row(format!("  {}:{q}", p.name), s));
                }
            }
        }
        out.push_str(&t.render());
        render_tso(&mut out, &stats.ports);
    }
    out.push('\n');
    out.push_str(&render_workers(&stats.workers));
    out.push('\n');
    pool_line(&mut out, "mempool", "mbufs", &stats.mempool);
    if let Some(t) = &stats.tso_pool {
        pool_line(&mut out, "tso pool", "buffers", t);
    }
    out
}

/// `weir devbind --list`.
pub fn nics(nics: &[PciNic]) -> String {
    let mut t = Table::new(&["PCI", "ID", "DRIVER", ">GROUP", ">NODE", "IFACES", "WEIR"]);
    for n in nics {
        t.row(vec![
            n.pci.clone(),
            n.id.clone(),
            opt(&n.driver),
            opt(&n.iommu_group),
            opt(&n.numa_node),
            if n.ifaces.is_empty() {
                "-".into()
            } else {
                n.ifaces.join(",")
            },
            if n.weir_driver { "yes" } else { "no" }.into(),
        ]);
    }
    t.render()
}

/// `weir sriov PF` (the list of its VFs).
pub fn vfs(vfs: &[VfInfo]) -> String {
    let mut t = Table::new(&[
        ">VF", "PCI", "DRIVER", ">GROUP", ">NODE", "MAC", ">VLAN", "SPOOFCHK",
    ]);
    for v in vfs {
        t.row(vec![
            v.vf.to_string(),
            v.pci.clone(),
            opt(&v.driver),
            opt(&v.iommu_group),
            opt(&v.numa_node),
            opt(&v.mac),
            opt(&v.vlan),
            opt(&v.spoofchk.map(|on| if on { "on" } else { "off" })),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use dataplane::DropReason;
    use weir_api::StageCycles;

    fn port(id: u16, name: &str) -> PortInfo {
        PortInfo {
            id,
            name: name.into(),
            kind: "tap".into(),
            bridge: Some("br0".into()),
            iface: None,
            link: "up".into(),
            state: "ok".into(),
            queues: 1,
            worker: Some(0),
            stats: {
                let mut s = PortStatsView {
                    rx_packets: 12345,
                    ..Default::default()
                };
                s.drops[DropReason::NoBuffers as usize] = 3;
                s
            },
            queue_stats: Vec::new(),
            mtu: None,
            offered_mtu: None,
            features: Vec::new(),
            vlan_mode: Some("trunk".into()),
            tag: None,
            trunks: Vec::new(),
            acl_in: None,
            acl_out: None,
            latency: None,
            host: None,
            tunnel: None,
            rx_filter: None,
            settings: Default::default(),
            queue_workers: vec![0],
        }
    }

    #[test]
    fn acl_tables_list_users_and_number_the_rules() {
        use weir_config::AclAction;
        let list = render_acls(&[
            AclInfo {
                name: "web".into(),
                default: AclAction::Deny,
                rules: 2,
                acl_in: vec!["vm1".into(), "vm2".into()],
                acl_out: Vec::new(),
            },
            AclInfo {
                name: "open".into(),
                default: AclAction::Allow,
                rules: 0,
                acl_in: Vec::new(),
                acl_out: vec!["up".into()],
            },
        ]);
        assert_eq!(
            list,
            "NAME  DEFAULT  RULES  ACL_IN   ACL_OUT\n\
             web   deny         2  vm1,vm2  -\n\
             open  allow        0  -        up\n"
        );
        assert_eq!(render_acls(&[]), "no ACLs\n");
        let view = AclView {
            name: "web".into(),
            default: AclAction::Deny,
            rules: vec![
                "in tcp dst_ports=80 allow".parse().unwrap(),
                "in ipv6 icmpv6 icmp_type=128 allow".parse().unwrap(),
            ],
            acl_in: vec!["vm1".into()],
            acl_out: Vec::new(),
        };
        assert_eq!(
            render_acl(&view),
            "ACL  DEFAULT  ACL_IN  ACL_OUT\n\
             web  deny     vm1     -\n\
             \n\
             #  RULE\n\
             0  in tcp dst_ports=80 allow\n\
             1  in ipv6 icmpv6 icmp_type=128 allow\n"
        );
        let empty = AclView {
            rules: Vec::new(),
            ..view
        };
        assert!(render_acl(&empty).ends_with("\nno rules: every frame gets the default\n"));
    }

    #[test]
    fn port_table_is_aligned() {
        let out = render_ports(&[port(0, "p0"), port(1, "a-longer-name")]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ID  NAME "), "{out}");
        let col = lines[0].find("TYPE").unwrap();
        assert_eq!(lines[1].find("tap"), Some(col), "{out}");
        assert_eq!(lines[2].find("tap"), Some(col), "{out}");
        assert!(lines[1].contains("12345"), "{out}");
        assert_eq!(render_ports(&[]), "no ports\n");
    }

    #[test]
    fn port_table_shows_the_mtu_a_frontend_set() {
        let vm = PortInfo {
            kind: "vhost-user".into(),
            mtu: Some(1400),
            ..port(1, "vm1")
        };
        let out = render_ports(&[port(0, "p0"), vm]);
        let lines: Vec<&str> = out.lines().collect();
        let end = lines[0].find("MTU").unwrap() + "MTU".len();
        assert_eq!(
            lines[1][..end].trim_end().chars().last(),
            Some('-'),
            "{out}"
        );
        assert_eq!(&lines[2][end - 4..end], "1400", "{out}");
    }

    #[test]
    fn port_table_shows_each_vlan_mode_compactly() {
        let with = |name: &str, mode: &str, tag: Option<u16>, trunks: &[u16]| PortInfo {
            vlan_mode: Some(mode.into()),
            tag,
            trunks: trunks.to_vec(),
            ..port(0, name)
        };
        let out = render_ports(&[
            port(0, "plain"),
            with("vm1", "access", Some(10), &[]),
            with("up", "trunk", None, &[10, 20]),
            with("n1", "native-untagged", Some(5), &[]),
            with("n2", "native-tagged", Some(5), &[10, 20]),
            PortInfo {
                vlan_mode: None,
                ..port(0, "old")
            },
        ]);
        let cells: Vec<String> = out
            .lines()
            .map(|l| {
                let at = out.lines().next().unwrap().find("VLAN").unwrap();
                let end = out.lines().next().unwrap().find("IFACE").unwrap();
                l[at..end].trim_end().to_owned()
            })
            .collect();
        assert_eq!(
            cells,
            [
                "VLAN",
                "-",
                "access 10",
                "trunk 10,20",
                "native-untagged 5 all",
                "native-tagged 5 10,20",
                "-"
            ],
            "{out}"
        );
    }

    /// Settings with port security on mac 02::5 and the three limits.
    fn secured() -> PortSettings {
        let mut s = PortSettings::default();
        for (k, v) in [
            ("mac", "02:00:00:00:00:05"),
            ("port_security", "true"),
            ("ips", "10.0.0.5,fd00::5"),
            ("ingress_policing_rate", "20000"),
            ("egress_rate", "10000"),
            ("storm_pps", "500"),
        ] {
            s.set(k, v).unwrap();
        }
        s
    }

    #[test]
    fn port_table_shows_security_and_limits_compactly() {
        let mut limited = PortSettings::default();
        limited.set("egress_rate", "30000").unwrap();
        limited.set("ingress_policing_rate", "0").unwrap();
        let out = render_ports(&[
            port(0, "plain"),
            PortInfo {
                settings: secured(),
                ..port(1, "vm1")
            },
            PortInfo {
                settings: limited,
                ..port(2, "ct1")
            },
        ]);
        let header = out.lines().next().unwrap();
        let (at, end) = (
            header.find("POLICY").unwrap(),
            header.find("STATE").unwrap(),
        );
        let cells: Vec<&str> = out.lines().map(|l| l[at..end].trim_end()).collect();
        assert_eq!(
            cells,
            [
                "POLICY",
                "-",
                "secured in=20000k out=10000k storm=500pps",
                "out=30000k"
            ],
            "{out}"
        );
    }

    #[test]
    fn port_show_lists_every_setting_and_counter() {
        let mut p = PortInfo {
            settings: secured(),
            kind: "vhost-user".into(),
            iface: Some("/run/weir/vm1.sock".into()),
            vlan_mode: Some("access".into()),
            tag: Some(10),
            queues: 2,
            queue_workers: vec![0, 1],
            features: vec!["VERSION_1".into(), "MRG_RXBUF".into(), "MQ".into()],
            ..port(3, "vm1")
        };
        p.stats.drops[DropReason::SpoofedIp as usize] = 7;
        p.queue_stats = vec![p.stats, PortStatsView::default()];
        let mut sampled = PortStatsView::default();
        // 98 frames of at most 1.024 us (900 ns), 2 of at most 8.192 us (5 us).
        sampled.latency[dataplane::stats::latency_bucket(900)] = 98;
        sampled.latency[dataplane::stats::latency_bucket(5_000)] = 2;
        sampled.latency_sum_ns = 98 * 900 + 2 * 5_000;
        p.latency = Some(LatencyView::of(&sampled));
        let out = render_port(&p);
        let line = |key: &str| {
            out.lines()
                .find(|l| l.starts_with(key) && l[key.len()..].starts_with("  "))
                .unwrap_or_else(|| panic!("no {key} in\n{out}"))
                .split_at(key.len())
                .1
                .trim()
                .to_owned()
        };
        assert_eq!(line("type"), "vhost-user");
        assert_eq!(line("endpoint"), "/run/weir/vm1.sock");
        assert_eq!(line("queues"), "2: 0 on worker 0, 1 on worker 1");
        assert_eq!(line("features"), "VERSION_1 MRG_RXBUF MQ");
        assert_eq!(line("vlan"), "access 10");
        assert_eq!(line("mac"), "02:00:00:00:00:05");
        assert_eq!(
            line("port security"),
            "on: MACs 02:00:00:00:00:05 (mac); IPs 10.0.0.5, fd00::5"
        );
        assert_eq!(
            line("ingress policing"),
            "20000 kbit/s, burst 8000 kbit (default)"
        );
        assert_eq!(line("egress rate"), "10000 kbit/s");
        assert_eq!(line("storm control"), "500 frames/s");
        assert_eq!(line("counters"), "rx 12345 packets, 0 bytes, 0 errors");
        assert_eq!(
            line("latency"),
            "receive to transmit p50 <= 1.0 us, p99 <= 8.2 us (100 frames sampled, mean 1.0 us)"
        );
        assert!(
            out.contains("drops no-buffers=3,spoofed-ip=7\n"),
            "totals and queue 0:\n{out}"
        );
        assert_eq!(line("queue 1"), "rx 0 packets, 0 bytes, 0 errors");
        // Every value starts in one column.
        let col = out.lines().next().unwrap().find("vm1").unwrap();
        assert!(
            out.lines()
                .all(|l| l.len() > col && !l[..col].ends_with(|c: char| !c.is_whitespace())),
            "{out}"
        );
        let plain = render_port(&port(0, "p0"));
        assert!(!plain.contains("features"), "{plain}");
        assert!(plain.contains("port security     off\n"), "{plain}");
        assert!(plain.contains("storm control     off\n"), "{plain}");
        assert!(plain.contains("rx filter         off\n"), "{plain}");
        let mut filtered = port(0, "vm");
        filtered.rx_filter = Some("unicast 1 multicast all".into());
        assert!(
            render_port(&filtered).contains("rx filter         unicast 1 multicast all\n"),
            "{filtered:?}"
        );
        let mut open = port(0, "vm");
        open.settings.rx_filter = Some(false);
        let out = render_port(&open);
        assert!(
            out.contains("rx filter         off (rx_filter = false)\n"),
            "{out}"
        );
    }

    #[test]
    fn port_show_of_a_tunnel_lists_its_remotes_and_of_an_underlay_its_addresses() {
        let vx = PortInfo {
            kind: "vxlan".into(),
            tunnel: Some(weir_api::TunnelView {
                kind: "vxlan".into(),
                underlay: "uplink".into(),
                local_ip: "192.0.2.1".into(),
                dst_port: 4789,
                vni: None,
                vlan_vni: vec![(10, 5010), (20, 5020)],
                underlay_mtu: 1550,
                max_frame_bytes: 1514,
                inner_mtu: 1500,
                remotes: vec![
                    weir_api::TunnelRemoteView {
                        ip: "192.0.2.2".into(),
                        next_hop: Some("192.0.2.2".into()),
                        next_hop_mac: Some("02:00:00:00:00:02".into()),
                        resolved: true,
                    },
                    weir_api::TunnelRemoteView {
                        ip: "198.51.100.7".into(),
                        next_hop: Some("192.0.2.254".into()),
                        next_hop_mac: None,
                        resolved: false,
                    },
                ],
            }),
            ..port(4, "vx0")
        };
        let out = render_port(&vx);
        for want in [
            "tunnel            vxlan over uplink, local_ip 192.0.2.1, dst_port 4789\n",
            "vlan_vni          10=5010, 20=5020\n",
            "inner mtu         1500 (frames up to 1514 bytes; underlay MTU 1550)\n",
            "remotes           192.0.2.2 via 192.0.2.2 at 02:00:00:00:00:02; resolved\n",
            "                  198.51.100.7 via 192.0.2.254, MAC unknown; \
             unresolved: frames dropped as tunnel-unresolved\n",
        ] {
            assert!(out.contains(want), "no {want:?} in\n{out}");
        }
        assert!(!out.contains("\nvni "), "{out}");
        let json = serde_json::to_value(&vx).unwrap();
        assert_eq!(json["tunnel"]["vlan_vni"][1], serde_json::json!([20, 5020]));
        assert_eq!(json["tunnel"]["remotes"][1]["resolved"], false);

        let up = PortInfo {
            host: Some(weir_api::HostIpView {
                port: "uplink".into(),
                mac: "02:aa:00:00:00:01".into(),
                addrs: vec!["192.0.2.1/24".into(), "fd00::1/64".into()],
                gateway: Some("192.0.2.254".into()),
                gateway6: None,
                mtu: 1550,
                tunnels: vec!["vx0".into()],
                rx_frames: 0,
                tx_frames: 0,
                tx_failed: 0,
            }),
            ..port(5, "uplink")
        };
        let out = render_port(&up);
        for want in [
            "ip                192.0.2.1/24, fd00::1/64\n",
            "gateway           192.0.2.254\n",
            "host mac          02:aa:00:00:00:01\n",
            "tunnels           vx0\n",
        ] {
            assert!(out.contains(want), "no {want:?} in\n{out}");
        }
        // Other ports' JSON has neither key.
        let plain = serde_json::to_value(port(0, "p0")).unwrap();
        assert!(plain.get("tunnel").is_none() && plain.get("host").is_none());
        assert!(!render_port(&port(0, "p0")).contains("tunnel"));
    }

    #[test]
    fn render_checks_reply_shape() {
        let data = serde_json::to_value(vec![port(0, "p0")]).unwrap();
        assert!(render(Output::Ports, Some(data.clone()))
            .unwrap()
            .contains("p0"));
        assert!(render(Output::Bridges, Some(data.clone())).is_err());
        let json = render(Output::Json, Some(data)).unwrap();
        assert!(json.contains("\"name\": \"p0\""), "{json}");
    }

    #[test]
    fn stats_render_all_sections() {
        let stats = StatsView {
            ports: vec![port(0, "p0")],
            workers: vec![WorkerView {
                id: 0,
                cpu: 3,
                rx_queues: vec!["p0:0".into()],
                busy_cycles: 10,
                idle_cycles: 30,
                busy_pct: 25.0,
                rx_packets: 7,
                drops: BTreeMap::new(),
                busy_rounds: 2,
                stages: StageCycles {
                    rx: 100,
                    switch: 40,
                    tx: 60,
                    packets: 4,
                },
            }],
            mempool: MempoolView {
                total: 1024,
                available: 1000,
                hugepages: false,
                mbuf_size: 2048,
                port_share: None,
            },
            tso_pool: Some(MempoolView {
                total: 256,
                available: 250,
                hugepages: true,
                mbuf_size: 65407,
                port_share: Some(64),
            }),
        };
        let out = render_stats(&stats);
        assert!(
            out.contains(
                "tso pool: 250 of 256 buffers free, 65407 B data room, hugepages, \
                 at most 64 per port\n"
            ),
            "{out}"
        );
        assert!(out.contains("no-buffers=3"), "{out}");
        assert!(out.contains("25.0"), "{out}");
        assert!(out.contains("25+10+15"), "{out}");
        assert!(out.contains("3.5"), "{out}");
        assert!(out.contains("p0:0"), "{out}");
        assert!(
            out.contains("1000 of 1024 mbufs free, 2048 B data room, normal pages\n"),
            "{out}"
        );
    }

    #[test]
    fn stats_show_each_queue_of_a_multiqueue_port() {
        let mut p = port(0, "vm1");
        p.queues = 2;
        p.queue_stats = vec![
            PortStatsView {
                rx_packets: 11,
                ..Default::default()
            },
            PortStatsView {
                rx_packets: 22,
                ..Default::default()
            },
        ];
        let stats = StatsView {
            ports: vec![p, port(1, "p1")],
            workers: Vec::new(),
            mempool: MempoolView::default(),
            tso_pool: None,
        };
        let out = render_stats(&stats);
        let line = |name: &str| {
            out.lines()
                .find(|l| l.trim_start().starts_with(name))
                .unwrap_or_else(|| panic!("no line for {name}:\n{out}"))
                .to_owned()
        };
        assert!(line("vm1:0").contains(" 11 "), "{out}");
        assert!(line("vm1:1").contains(" 22 "), "{out}");
        assert!(line("vm1 ").contains("12345"), "{out}");
        assert!(
            !out.contains("p1:0"),
            "one queue, no per-queue lines:\n{out}"
        );
    }

    #[test]
    fn stats_show_a_tso_table_only_for_ports_that_saw_super_frames() {
        let mut vm = port(0, "vm");
        vm.stats.rx_tso_packets = 9408;
        vm.stats.tx_tso_packets = 10272;
        let mut pa = port(1, "pa");
        pa.stats.tso_segmented = 7;
        let mut stats = StatsView {
            ports: vec![vm, pa, port(2, "quiet")],
            workers: Vec::new(),
            mempool: MempoolView::default(),
            tso_pool: None,
        };
        let out = render_stats(&stats);
        let header = out
            .lines()
            .position(|l| l.starts_with("PORT") && l.contains("RX-TSO"))
            .unwrap_or_else(|| panic!("no TSO table:\n{out}"));
        let rows: Vec<Vec<&str>> = out.lines().collect::<Vec<_>>()[header + 1..]
            .iter()
            .take_while(|l| !l.is_empty())
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows,
            [vec!["vm", "9408", "10272", "0"], vec!["pa", "0", "0", "7"]],
            "{out}"
        );
        for p in &mut stats.ports {
            p.stats = PortStatsView::default();
        }
        assert!(!render_stats(&stats).contains("RX-TSO"));
    }

    #[test]
    fn nic_and_vf_tables_align_their_columns() {
        let nic = |pci: &str, driver: Option<&str>, ifaces: &[&str]| PciNic {
            pci: pci.into(),
            id: "8086:10fb".into(),
            driver: driver.map(Into::into),
            iommu_group: Some("12".into()),
            numa_node: None,
            ifaces: ifaces.iter().map(|s| s.to_string()).collect(),
            weir_driver: true,
        };
        let out = nics(&[
            nic("0000:01:00.0", Some("vfio-pci"), &[]),
            nic("0000:01:00.1", Some("ixgbe"), &["enp1s0f1", "x"]),
        ]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "PCI           ID         DRIVER    GROUP  NODE  IFACES      WEIR"
        );
        assert_eq!(
            lines[1],
            "0000:01:00.0  8086:10fb  vfio-pci     12     -  -           yes"
        );
        assert_eq!(
            lines[2],
            "0000:01:00.1  8086:10fb  ixgbe        12     -  enp1s0f1,x  yes"
        );
        let out = vfs(&[VfInfo {
            vf: 3,
            pci: "0000:01:10.1".into(),
            driver: None,
            iommu_group: None,
            numa_node: Some(0),
            mac: Some("02:00:00:00:00:03".into()),
            vlan: Some(100),
            spoofchk: Some(true),
        }]);
        assert_eq!(
            out,
            concat!(
                "VF  PCI           DRIVER  GROUP  NODE  MAC                VLAN  SPOOFCHK\n",
                " 3  0000:01:10.1  -           -     0  02:00:00:00:00:03   100  on\n",
            )
        );
    }
}
