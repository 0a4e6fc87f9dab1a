//! The OpenMetrics families `GET /metrics` serves, built at scrape time.
//!
//! Control plane only. A scrape reads the counters the workers already keep
//! (single-writer, per queue and per worker) and the control plane's own
//! (port add and delete, vhost-user connections) into a [`Scrape`], which
//! `prometheus-client`'s encoders turn into text: the workers do nothing per
//! packet for it. The counters are read raw, never against a baseline, so
//! they only grow while a port lives.
//!
//! Every family, with its type and labels, is listed in
//! `docs/operations.md`, "Metrics"; [`FAMILIES`] names them for the tests.

use std::fmt;

use dataplane::stats::Unlearned;
use dataplane::DropReason;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use vhost_user::ConnectionEvents;
use weir_api::{BridgeInfo, MempoolView, PortInfo, VersionView, WorkerView};

/// `Content-Type` of the OpenMetrics text format, served to scrapers that
/// ask for it (Prometheus does).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `Content-Type` of the Prometheus text format 0.0.4, served to everything
/// else (curl, `promtool check metrics`).
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str =
    prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Which text format a scrape is encoded in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 (`# EOF`-terminated; counters' samples end `_total`).
    OpenMetrics,
    /// The Prometheus text format 0.0.4.
    PrometheusText,
}

impl Format {
    /// The format for a request's `Accept` header: OpenMetrics if it names
    /// it, else the Prometheus text format.
    pub fn for_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(a)
                if a.to_ascii_lowercase()
                    .contains("application/openmetrics-text") =>
            {
                Format::OpenMetrics
            }
            _ => Format::PrometheusText,
        }
    }

    /// The `Content-Type` of this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Format::PrometheusText => PROMETHEUS_TEXT_CONTENT_TYPE,
        }
    }
}

/// One port as a scrape sees it.
#[derive(Clone, Debug)]
pub struct PortSample {
    /// Its view, with raw counters per queue.
    pub info: PortInfo,
    /// Frontend connections (vhost-user ports), None for others.
    pub connection: Option<ConnectionEvents>,
    /// TSO buffers it holds of its share of the TSO pool (vhost-user ports
    /// while a TSO pool exists), None for others.
    pub tso_buffers_held: Option<u32>,
}

/// One buffer pool as a scrape sees it.
#[derive(Clone, Debug)]
pub struct PoolSample {
    /// `mbuf` (the packet pool) or `tso`.
    pub name: &'static str,
    /// Its fill level.
    pub view: MempoolView,
    /// Allocations that found it empty.
    pub alloc_failures: u64,
    /// Charged allocations refused because a port held its whole share.
    pub share_refusals: u64,
}

/// Everything one scrape reports, read from the dataplane at once.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    /// Every port.
    pub ports: Vec<PortSample>,
    /// Every worker.
    pub workers: Vec<WorkerView>,
    /// The buffer pools that exist.
    pub pools: Vec<PoolSample>,
    /// Every bridge.
    pub bridges: Vec<BridgeInfo>,
    /// Ports added since start (configured and `port add`).
    pub ports_added: u64,
    /// Ports deleted since start.
    pub ports_deleted: u64,
}

/// The name of every family a scrape can hold, as its `# TYPE` line names
/// it in the OpenMetrics format.
pub const FAMILIES: &[&str] = &[
    "weir_build",
    "weir_port",
    "weir_port_rx_packets",
    "weir_port_rx_bytes",
    "weir_port_tx_packets",
    "weir_port_tx_bytes",
    "weir_port_rx_errors",
    "weir_port_tx_errors",
    "weir_port_rx_tso_packets",
    "weir_port_tx_tso_packets",
    "weir_port_tso_segmented",
    "weir_port_drops",
    "weir_port_unlearned",
    "weir_port_link_up",
    "weir_port_error",
    "weir_port_mtu",
    "weir_port_queues",
    "weir_port_latency_seconds",
    "weir_vhost_user_connects",
    "weir_vhost_user_disconnects",
    "weir_vhost_user_errors",
    "weir_ports_added",
    "weir_ports_deleted",
    "weir_worker",
    "weir_worker_busy_cycles",
    "weir_worker_idle_cycles",
    "weir_worker_stage_cycles",
    "weir_worker_sampled_packets",
    "weir_worker_rx_packets",
    "weir_worker_busy_rounds",
    "weir_worker_drops",
    "weir_worker_rx_queues",
    "weir_mempool_mbufs",
    "weir_mempool_free",
    "weir_mempool_in_use",
    "weir_mempool_alloc_failures",
    "weir_mempool_share_refusals",
    "weir_port_pool_buffers",
    "weir_bridge_fdb_entries",
    "weir_bridge_ports",
];

type Labels = Vec<(&'static str, String)>;

/// A family read from one value per sample: name, help, the reading.
type Def<T, V = u64> = (&'static str, &'static str, fn(&T) -> V);

fn counter(m: &mut MetricEncoder<'_>, labels: &Labels, value: u64) -> fmt::Result {
    m.encode_family(labels)?
        .encode_counter::<NoLabelSet, u64, f64>(&value, None)
}

fn gauge(m: &mut MetricEncoder<'_>, labels: &Labels, value: u64) -> fmt::Result {
    m.encode_family(labels)?.encode_gauge(&value)
}

/// Writes one family: its descriptor, then `samples` into it.
fn family(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl FnOnce(&mut MetricEncoder<'_>) -> fmt::Result,
) -> fmt::Result {
    debug_assert!(FAMILIES.contains(&name), "{name} missing from FAMILIES");
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    samples(&mut m)
}

fn port_queue(port: &str, queue: usize) -> Labels {
    vec![("port", port.to_owned()), ("queue", queue.to_string())]
}

impl Scrape {
    /// A counter family per port, queue and reason: `reasons` are the
    /// reasons' names with their indexes in the counters `counts` reads.
    fn encode_by_reason(
        &self,
        enc: &mut DescriptorEncoder<'_>,
        name: &str,
        help: &str,
        reasons: impl Iterator<Item = (&'static str, usize)> + Clone,
        counts: fn(&weir_api::PortStatsView) -> &[u64],
    ) -> fmt::Result {
        family(enc, name, help, MetricType::Counter, |m| {
            for p in &self.ports {
                for (q, s) in p.info.queue_stats.iter().enumerate() {
                    for (reason, i) in reasons.clone() {
                        let mut l = port_queue(&p.info.name, q);
                        l.push(("reason", reason.to_owned()));
                        counter(m, &l, counts(s)[i])?;
                    }
                }
            }
            Ok(())
        })
    }

    fn encode_ports(&self, enc: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let per_queue: [Def<weir_api::PortStatsView>; 9] = [
            ("weir_port_rx_packets", "Frames received.", |s| s.rx_packets),
            ("weir_port_rx_bytes", "Bytes received.", |s| s.rx_bytes),
            ("weir_port_tx_packets", "Frames transmitted.", |s| {
                s.tx_packets
            }),
            ("weir_port_tx_bytes", "Bytes transmitted.", |s| s.tx_bytes),
            ("weir_port_rx_errors", "Receive errors.", |s| s.rx_errors),
            ("weir_port_tx_errors", "Transmit errors.", |s| s.tx_errors),
            (
                "weir_port_rx_tso_packets",
                "TSO super-frames received.",
                |s| s.rx_tso_packets,
            ),
            (
                "weir_port_tx_tso_packets",
                "TSO super-frames transmitted whole.",
                |s| s.tx_tso_packets,
            ),
            (
                "weir_port_tso_segmented",
                "TSO super-frames cut into segments by weir.",
                |s| s.tso_segmented,
            ),
        ];
        for (name, help, field) in per_queue {
            family(enc, name, help, MetricType::Counter, |m| {
                for p in &self.ports {
                    for (q, s) in p.info.queue_stats.iter().enumerate() {
                        counter(m, &port_queue(&p.info.name, q), field(s))?;
                    }
                }
                Ok(())
            })?;
        }
        self.encode_by_reason(
            enc,
            "weir_port_drops",
            "Frames dropped, by the queue that received them and the reason.",
            DropReason::ALL.iter().map(|&r| (r.name(), r as usize)),
            |s| &s.drops,
        )?;
        self.encode_by_reason(
            enc,
            "weir_port_unlearned",
            "Frames forwarded without learning their source address, by reason.",
            Unlearned::ALL.iter().map(|&r| (r.name(), r as usize)),
            |s| &s.unlearned,
        )?;
        let port = |p: &PortSample| -> Labels { vec![("port", p.info.name.clone())] };
        family(
            enc,
            "weir_port",
            "A port: its type and bridge.",
            MetricType::Info,
            |m| {
                for p in &self.ports {
                    let mut l = port(p);
                    l.push(("type", p.info.kind.clone()));
                    l.push(("bridge", p.info.bridge.clone().unwrap_or_default()));
                    m.encode_info(&l)?;
                }
                Ok(())
            },
        )?;
        let gauges: [Def<PortSample, Option<u64>>; 4] = [
            (
                "weir_port_link_up",
                "1 if the port's link is up, 0 if down.",
                |p| Some(u64::from(p.info.link == "up")),
            ),
            (
                "weir_port_error",
                "1 if the port is in an error state (weir port show says why), else 0.",
                |p| Some(u64::from(p.info.state != "ok")),
            ),
            (
                "weir_port_mtu",
                "MTU the port's peer set (vhost-user NET_SET_MTU); absent if none.",
                |p| p.info.mtu.map(u64::from),
            ),
            ("weir_port_queues", "Queue pairs of the port.", |p| {
                Some(u64::from(p.info.queues))
            }),
        ];
        for (name, help, value) in gauges {
            family(enc, name, help, MetricType::Gauge, |m| {
                for p in &self.ports {
                    if let Some(v) = value(p) {
                        gauge(m, &port(p), v)?;
                    }
                }
                Ok(())
            })?;
        }
        family(
            enc,
            "weir_port_latency_seconds",
            "Receive-to-transmit time of the port's frames (to the end of their \
             burst's transmission or handoff), sampled in one poll round of 16.",
            MetricType::Histogram,
            |m| {
                for p in &self.ports {
                    let Some(l) = &p.info.latency else { continue };
                    let buckets: Vec<(f64, u64)> = l
                        .buckets
                        .iter()
                        .map(|b| {
                            (
                                b.le_ns.map_or(f64::INFINITY, |ns| ns as f64 / 1e9),
                                b.frames,
                            )
                        })
                        .collect();
                    m.encode_family(&port(p))?.encode_histogram::<NoLabelSet>(
                        l.sum_ns as f64 / 1e9,
                        l.frames,
                        &buckets,
                        None,
                    )?;
                }
                Ok(())
            },
        )?;
        let events: [Def<ConnectionEvents>; 3] = [
            (
                "weir_vhost_user_connects",
                "Frontends that connected to a vhost-user port.",
                |e| e.connects,
            ),
            (
                "weir_vhost_user_disconnects",
                "Frontends that disconnected from a vhost-user port.",
                |e| e.disconnects,
            ),
            (
                "weir_vhost_user_errors",
                "Control-side errors of a vhost-user port (refused messages, rings that \
                 could not start, dropped connections).",
                |e| e.errors,
            ),
        ];
        for (name, help, value) in events {
            family(enc, name, help, MetricType::Counter, |m| {
                for p in &self.ports {
                    if let Some(e) = &p.connection {
                        counter(m, &port(p), value(e))?;
                    }
                }
                Ok(())
            })?;
        }
        family(
            enc,
            "weir_ports_added",
            "Ports added since weir started (configured and port add).",
            MetricType::Counter,
            |m| counter(m, &Vec::new(), self.ports_added),
        )?;
        family(
            enc,
            "weir_ports_deleted",
            "Ports deleted since weir started.",
            MetricType::Counter,
            |m| counter(m, &Vec::new(), self.ports_deleted),
        )
    }

    fn encode_workers(&self, enc: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let worker = |w: &WorkerView| -> Labels { vec![("worker", w.id.to_string())] };
        family(
            enc,
            "weir_worker",
            "A worker and the CPU it is pinned to.",
            MetricType::Info,
            |m| {
                for w in &self.workers {
                    let mut l = worker(w);
                    l.push(("cpu", w.cpu.to_string()));
                    m.encode_info(&l)?;
                }
                Ok(())
            },
        )?;
        let counters: [Def<WorkerView>; 5] = [
            (
                "weir_worker_busy_cycles",
                "TSC cycles spent in poll rounds that moved frames.",
                |w| w.busy_cycles,
            ),
            (
                "weir_worker_idle_cycles",
                "TSC cycles spent in empty poll rounds.",
                |w| w.idle_cycles,
            ),
            (
                "weir_worker_sampled_packets",
                "Frames received in the rounds weir_worker_stage_cycles samples.",
                |w| w.stages.packets,
            ),
            (
                "weir_worker_rx_packets",
                "Frames the worker received.",
                |w| w.rx_packets,
            ),
            (
                "weir_worker_busy_rounds",
                "Poll rounds that moved frames.",
                |w| w.busy_rounds,
            ),
        ];
        for (name, help, value) in counters {
            family(enc, name, help, MetricType::Counter, |m| {
                self.workers
                    .iter()
                    .try_for_each(|w| counter(m, &worker(w), value(w)))
            })?;
        }
        family(
            enc,
            "weir_worker_stage_cycles",
            "TSC cycles per pipeline stage (rx, switch, tx), in one poll round of 16 \
             that received frames.",
            MetricType::Counter,
            |m| {
                for w in &self.workers {
                    for (stage, v) in [
                        ("rx", w.stages.rx),
                        ("switch", w.stages.switch),
                        ("tx", w.stages.tx),
                    ] {
                        let mut l = worker(w);
                        l.push(("stage", stage.to_owned()));
                        counter(m, &l, v)?;
                    }
                }
                Ok(())
            },
        )?;
        family(
            enc,
            "weir_worker_drops",
            "Frames a worker dropped outside any port's counters, by reason.",
            MetricType::Counter,
            |m| {
                for w in &self.workers {
                    let r = DropReason::HandoffFull.name();
                    let mut l = worker(w);
                    l.push(("reason", r.to_owned()));
                    counter(m, &l, w.drops.get(r).copied().unwrap_or(0))?;
                }
                Ok(())
            },
        )?;
        family(
            enc,
            "weir_worker_rx_queues",
            "Receive queues the worker polls.",
            MetricType::Gauge,
            |m| {
                self.workers
                    .iter()
                    .try_for_each(|w| gauge(m, &worker(w), w.rx_queues.len() as u64))
            },
        )
    }

    fn encode_pools(&self, enc: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let pool = |p: &PoolSample| -> Labels { vec![("pool", p.name.to_owned())] };
        let gauges: [Def<PoolSample>; 3] = [
            ("weir_mempool_mbufs", "Buffers in the pool.", |p| {
                p.view.total.into()
            }),
            (
                "weir_mempool_free",
                "Buffers not in use (the shared ring and every thread's cache).",
                |p| p.view.available.into(),
            ),
            ("weir_mempool_in_use", "Buffers in use.", |p| {
                p.view.total.saturating_sub(p.view.available).into()
            }),
        ];
        for (name, help, value) in gauges {
            family(enc, name, help, MetricType::Gauge, |m| {
                self.pools
                    .iter()
                    .try_for_each(|p| gauge(m, &pool(p), value(p)))
            })?;
        }
        let counters: [Def<PoolSample>; 2] = [
            (
                "weir_mempool_alloc_failures",
                "Allocations that found the pool empty.",
                |p| p.alloc_failures,
            ),
            (
                "weir_mempool_share_refusals",
                "Allocations refused because the port held its whole share of the pool.",
                |p| p.share_refusals,
            ),
        ];
        for (name, help, value) in counters {
            family(enc, name, help, MetricType::Counter, |m| {
                self.pools
                    .iter()
                    .try_for_each(|p| counter(m, &pool(p), value(p)))
            })?;
        }
        family(
            enc,
            "weir_port_pool_buffers",
            "Buffers of a pool a port holds now, for pools shared out per port (tso).",
            MetricType::Gauge,
            |m| {
                for p in &self.ports {
                    if let Some(held) = p.tso_buffers_held {
                        let l = vec![("port", p.info.name.clone()), ("pool", "tso".to_owned())];
                        gauge(m, &l, held.into())?;
                    }
                }
                Ok(())
            },
        )
    }

    fn encode_bridges(&self, enc: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let bridge = |b: &BridgeInfo| -> Labels { vec![("bridge", b.name.clone())] };
        family(
            enc,
            "weir_bridge_fdb_entries",
            "Addresses in the bridge's FDB (learned and static).",
            MetricType::Gauge,
            |m| {
                self.bridges
                    .iter()
                    .try_for_each(|b| gauge(m, &bridge(b), b.fdb_entries as u64))
            },
        )?;
        family(
            enc,
            "weir_bridge_ports",
            "Ports attached to the bridge.",
            MetricType::Gauge,
            |m| {
                self.bridges
                    .iter()
                    .try_for_each(|b| gauge(m, &bridge(b), b.ports.len() as u64))
            },
        )
    }

    /// The scrape as text in `format`.
    pub fn encode(self, format: Format) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut out = String::new();
        // Writing to a String fails only if an encoder refuses a value;
        // ours are plain integers and valid names.
        let done = match format {
            Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry),
            Format::PrometheusText => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
            }
        };
        if let Err(e) = done {
            tracing::warn!("encoding metrics: {e}");
        }
        out
    }
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        family(
            &mut enc,
            "weir_build",
            "weir's build: its version.",
            MetricType::Info,
            |m| m.encode_info(&vec![("version", VersionView::current().version)]),
        )?;
        self.encode_ports(&mut enc)?;
        self.encode_workers(&mut enc)?;
        self.encode_pools(&mut enc)?;
        self.encode_bridges(&mut enc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_api::PortStatsView;

    fn sample() -> Scrape {
        let mut q0 = PortStatsView {
            rx_packets: 7,
            rx_bytes: 700,
            ..PortStatsView::default()
        };
        q0.drops[DropReason::TxFull as usize] = 2;
        let q1 = PortStatsView {
            rx_packets: 1,
            ..PortStatsView::default()
        };
        let info: PortInfo = serde_json::from_value(serde_json::json!({
            "id": 0, "name": "vm0", "kind": "vhost-user", "bridge": "br0",
            "iface": null, "link": "up", "state": "ok", "queues": 2,
            "worker": 0, "stats": {}, "mtu": 1500,
        }))
        .unwrap();
        let mut total = q0;
        total += q1;
        total.latency[dataplane::stats::latency_bucket(1_000)] = 8;
        total.latency_sum_ns = 8_000;
        Scrape {
            ports: vec![PortSample {
                info: PortInfo {
                    queue_stats: vec![q0, q1],
                    latency: Some(weir_api::LatencyView::of(&total)),
                    ..info
                },
                connection: Some(ConnectionEvents {
                    connects: 2,
                    disconnects: 1,
                    errors: 0,
                }),
                tso_buffers_held: Some(3),
            }],
            workers: vec![serde_json::from_value(serde_json::json!({
                "id": 0, "cpu": 3, "rx_queues": ["vm0:0", "vm0:1"],
                "busy_cycles": 10, "idle_cycles": 90, "busy_pct": 10.0,
                "rx_packets": 8,
            }))
            .unwrap()],
            pools: vec![PoolSample {
                name: "mbuf",
                view: MempoolView {
                    total: 100,
                    available: 60,
                    hugepages: false,
                    mbuf_size: 2048,
                    port_share: None,
                },
                alloc_failures: 0,
                share_refusals: 0,
            }],
            bridges: vec![BridgeInfo {
                name: "br0".into(),
                ports: vec!["vm0".into()],
                fdb_entries: 4,
            }],
            ports_added: 1,
            ports_deleted: 0,
        }
    }

    #[test]
    fn every_family_is_typed_once_and_samples_carry_their_labels() {
        let text = sample().encode(Format::OpenMetrics);
        for f in FAMILIES {
            let typed = text
                .lines()
                .filter(|l| l.starts_with(&format!("# TYPE {f} ")))
                .count();
            assert_eq!(typed, 1, "# TYPE of {f} in\n{text}");
        }
        for line in [
            "# TYPE weir_build info",
            &format!(
                "weir_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            ),
            "weir_port_rx_packets_total{port=\"vm0\",queue=\"0\"} 7",
            "weir_port_rx_packets_total{port=\"vm0\",queue=\"1\"} 1",
            "weir_port_rx_bytes_total{port=\"vm0\",queue=\"0\"} 700",
            "weir_port_drops_total{port=\"vm0\",queue=\"0\",reason=\"tx-full\"} 2",
            "weir_port_drops_total{port=\"vm0\",queue=\"1\",reason=\"tx-full\"} 0",
            "weir_port_info{port=\"vm0\",type=\"vhost-user\",bridge=\"br0\"} 1",
            "weir_port_mtu{port=\"vm0\"} 1500",
            "weir_vhost_user_connects_total{port=\"vm0\"} 2",
            "weir_vhost_user_disconnects_total{port=\"vm0\"} 1",
            "weir_worker_busy_cycles_total{worker=\"0\"} 10",
            "weir_worker_stage_cycles_total{worker=\"0\",stage=\"switch\"} 0",
            "weir_worker_drops_total{worker=\"0\",reason=\"handoff-full\"} 0",
            "weir_worker_rx_queues{worker=\"0\"} 2",
            "weir_mempool_in_use{pool=\"mbuf\"} 40",
            "weir_port_pool_buffers{port=\"vm0\",pool=\"tso\"} 3",
            "weir_bridge_fdb_entries{bridge=\"br0\"} 4",
            "weir_port_latency_seconds_sum{port=\"vm0\"} 0.000008",
            "weir_port_latency_seconds_count{port=\"vm0\"} 8",
            "weir_port_latency_seconds_bucket{le=\"5.12e-7\",port=\"vm0\"} 0",
            "weir_port_latency_seconds_bucket{le=\"0.000001024\",port=\"vm0\"} 8",
            "weir_port_latency_seconds_bucket{le=\"+Inf\",port=\"vm0\"} 8",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }

    #[test]
    fn the_prometheus_text_format_names_counter_families_by_their_samples() {
        let text = sample().encode(Format::PrometheusText);
        assert!(
            text.contains("# TYPE weir_port_rx_packets_total counter\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE weir_build_info gauge\n"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
    }

    #[test]
    fn an_empty_scrape_still_names_the_build() {
        let text = Scrape::default().encode(Format::OpenMetrics);
        assert!(text.contains("weir_build_info{"), "{text}");
        assert!(text.contains("weir_ports_added_total 0\n"), "{text}");
    }

    #[test]
    fn openmetrics_is_served_only_to_clients_that_ask_for_it() {
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                    version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::for_accept(Some(prom)), Format::OpenMetrics);
        assert_eq!(Format::for_accept(Some("*/*")), Format::PrometheusText);
        assert_eq!(Format::for_accept(None), Format::PrometheusText);
    }
}
