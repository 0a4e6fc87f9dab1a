//! `weir doctor`: checks that this host can run a configuration, and says
//! how to fix what is missing.
//!
//! Control plane only; runs locally. Reads sysfs under an injectable root
//! (see [`DoctorEnv`]) so tests run against a fake tree. A check is `ok`,
//! `warn` (runs, but slower or less isolated) or `fail` (the configuration
//! cannot start).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;

use serde::Serialize;

use crate::nic::{self, dir_names, Sysfs, VFIO_PCI};
use dataplane::wire::tunnel::MTU_OVERHEAD;
use dataplane::wire::{ethernet, vlan};
use pmd::afxdp::AfXdpConfig;
use weir_config::{Config, CpuList, Host, HugepageMode, PortSpec, PortType};

/// What the checks look at.
#[derive(Debug, Clone)]
pub struct DoctorEnv {
    /// sysfs root (`/sys`).
    pub sysfs: PathBuf,
    /// `/lib/modules/$(uname -r)`, to tell whether vfio-pci can be loaded.
    pub modules_dir: Option<PathBuf>,
    /// The locked-memory limit that applies: the hard `RLIMIT_MEMLOCK`
    /// (ports raise the soft limit to it), `None` when unlimited or the
    /// process has CAP_IPC_LOCK (root).
    pub memlock_bytes: Option<u64>,
}

impl DoctorEnv {
    /// The running host.
    pub fn system() -> Self {
        let modules_dir = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .map(|r| Path::new("/lib/modules").join(r.trim()));
        let memlock_bytes = if rustix::process::geteuid().is_root() {
            None
        } else {
            rustix::process::getrlimit(rustix::process::Resource::Memlock).maximum
        };
        DoctorEnv {
            sysfs: Host::system().sysfs,
            modules_dir,
            memlock_bytes,
        }
    }
}

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Runs, but not as well as it could.
    Warn,
    /// The configuration cannot run.
    Fail,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// Result.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// The command or change that fixes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn new(name: impl Into<String>, status: Status, detail: impl Into<String>) -> Self {
        Check {
            name: name.into(),
            status,
            detail: detail.into(),
            fix: None,
        }
    }

    fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// Whether any check failed.
pub fn failed(checks: &[Check]) -> bool {
    checks.iter().any(|c| c.status == Status::Fail)
}

/// One line per check: `ok`, `warn` or `FAIL`, what was found, the fix.
pub fn render(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        let status = match c.status {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        let _ = write!(out, "{status:<4}  {}: {}", c.name, c.detail);
        if let Some(fix) = &c.fix {
            let _ = write!(out, "; fix: {fix}");
        }
        out.push('\n');
    }
    let count = |s| checks.iter().filter(|c| c.status == s).count();
    let _ = writeln!(
        out,
        "{} checks: {} failed, {} warnings",
        checks.len(),
        count(Status::Fail),
        count(Status::Warn)
    );
    out
}

/// 2 MiB pages the mbuf pool of `config` needs, laid out as the runtime
/// creates it. Guest memory is not included.
pub fn pool_hugepages(config: &Config) -> u64 {
    config.dataplane.mempool_config().hugepages_needed() as u64
}

fn pool_bytes(config: &Config) -> u64 {
    config.dataplane.mempool_config().region_bytes() as u64
}

/// Runs every check for `config` on `env`.
pub fn run(env: &DoctorEnv, config: &Config) -> Vec<Check> {
    let sys = Sysfs::new(&env.sysfs);
    let vfio: Vec<(&str, String)> = config
        .ports
        .iter()
        .filter_map(|p| Some((p.name.as_str(), p.pci_address()?)))
        .collect();
    let mut checks = vec![check_iommu(&sys, !vfio.is_empty())];
    checks.push(check_vfio_module(env, &sys, !vfio.is_empty()));
    for (name, pci) in &vfio {
        checks.push(check_vfio_port(&sys, name, pci));
    }
    let nodes: Vec<i32> = vfio
        .iter()
        .filter_map(|(_, pci)| sys.numa_node(pci))
        .filter(|n| *n >= 0)
        .collect();
    checks.push(check_hugepages(&sys, config, &nodes));
    checks.push(check_socket_dir(&config.control.socket));
    checks.push(check_isolated(&sys, config));
    for port in &config.ports {
        if matches!(port.kind, PortType::Afpacket | PortType::Afxdp) {
            if let Some(iface) = &port.iface {
                checks.push(check_iface(&sys, &port.name, iface));
            }
        }
    }
    if let Some(c) = check_memlock(env, config) {
        checks.push(c);
    }
    for port in &config.ports {
        if matches!(port.kind, PortType::Vxlan | PortType::Geneve) {
            checks.push(check_tunnel_mtu(&sys, config, port));
        }
    }
    checks
}

fn check_iommu(sys: &Sysfs, needed: bool) -> Check {
    let units = dir_names(&sys.root().join("class/iommu")).len();
    let groups = dir_names(&sys.root().join("kernel/iommu_groups")).len();
    if units > 0 || groups > 0 {
        return Check::new("iommu", Status::Ok, format!("on ({groups} groups)"));
    }
    let fix = "boot with `intel_iommu=on` (Intel) or `amd_iommu=on` (AMD) and enable VT-d/AMD-Vi in the firmware";
    if needed {
        Check::new("iommu", Status::Fail, "off; vfio ports need it").fix(fix)
    } else {
        Check::new(
            "iommu",
            Status::Ok,
            "off (not needed: no vfio ports in the configuration)",
        )
    }
}

fn check_vfio_module(env: &DoctorEnv, sys: &Sysfs, needed: bool) -> Check {
    const NAME: &str = "vfio-pci module";
    if sys.has_vfio_pci() || sys.root().join("module/vfio_pci").exists() {
        return Check::new(NAME, Status::Ok, "loaded");
    }
    let available = env.modules_dir.as_ref().is_some_and(|dir| {
        ["modules.dep", "modules.builtin"].iter().any(|f| {
            std::fs::read_to_string(dir.join(f))
                .is_ok_and(|t| t.contains("/vfio-pci.ko") || t.contains("/vfio_pci.ko"))
        })
    });
    if available {
        Check::new(NAME, Status::Ok, "available, not loaded")
            .fix("`weir devbind` loads it, or `sudo modprobe vfio-pci`")
    } else if needed {
        Check::new(
            NAME,
            Status::Fail,
            "not loaded and not found in the kernel's modules",
        )
        .fix("install the kernel's extra modules (vfio-pci), then `sudo modprobe vfio-pci`")
    } else {
        Check::new(NAME, Status::Ok, "not loaded (not needed: no vfio ports)")
    }
}

fn check_vfio_port(sys: &Sysfs, name: &str, pci: &str) -> Check {
    let label = format!("port {name} ({pci})");
    if !sys.device(pci).exists() {
        return Check::new(label, Status::Fail, "no such PCI device")
            .fix("fix `pci` in the configuration; `weir devbind --list` shows the NICs");
    }
    if let Some(id) = sys.id(pci) {
        if !nic::weir_supports(&id) {
            return Check::new(label, Status::Fail, format!("no weir driver for {id}")).fix(
                format!(
                    "use a supported NIC ({}) or an afxdp/afpacket port",
                    pmd::SupportedNics
                ),
            );
        }
    }
    let Some(group) = sys.iommu_group(pci) else {
        return Check::new(label, Status::Fail, "no IOMMU group")
            .fix("boot with `intel_iommu=on` or `amd_iommu=on` and enable VT-d/AMD-Vi");
    };
    let driver = sys.driver(pci);
    if driver.as_deref() != Some(VFIO_PCI) {
        return Check::new(
            label,
            Status::Fail,
            format!(
                "bound to {}, not vfio-pci",
                driver.as_deref().unwrap_or("no driver")
            ),
        )
        .fix(format!("weir devbind {pci}"));
    }
    let blocking: Vec<(String, String)> = sys
        .group_devices(&group)
        .into_iter()
        .filter_map(|other| {
            let d = sys.driver(&other)?;
            (d != VFIO_PCI).then_some((other, d))
        })
        .collect();
    if !blocking.is_empty() {
        let who: Vec<String> = blocking.iter().map(|(p, d)| format!("{p} ({d})")).collect();
        let fix: Vec<String> = blocking
            .iter()
            .map(|(p, _)| format!("weir devbind {p}"))
            .collect();
        return Check::new(
            label,
            Status::Fail,
            format!(
                "IOMMU group {group} not viable: {} bound to a kernel driver",
                who.join(", ")
            ),
        )
        .fix(fix.join(" && "));
    }
    Check::new(
        label,
        Status::Ok,
        format!("bound to vfio-pci, IOMMU group {group} viable"),
    )
}

/// Free 2 MiB pages per NUMA node (`None` node: no per-node data).
fn free_hugepages(sys: &Sysfs) -> Vec<(Option<i32>, u64)> {
    let read = |p: PathBuf| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    let node_root = sys.root().join("devices/system/node");
    let per_node: Vec<(Option<i32>, u64)> = dir_names(&node_root)
        .into_iter()
        .filter_map(|n| {
            let id: i32 = n.strip_prefix("node")?.parse().ok()?;
            let free = read(
                node_root
                    .join(&n)
                    .join("hugepages/hugepages-2048kB/free_hugepages"),
            )?;
            Some((Some(id), free))
        })
        .collect();
    if !per_node.is_empty() {
        return per_node;
    }
    let global = read(
        sys.root()
            .join("kernel/mm/hugepages/hugepages-2048kB/free_hugepages"),
    )
    .unwrap_or(0);
    vec![(None, global)]
}

fn check_hugepages(sys: &Sysfs, config: &Config, nic_nodes: &[i32]) -> Check {
    const NAME: &str = "hugepages";
    let mode = config.dataplane.hugepages;
    if mode == HugepageMode::Never {
        return Check::new(NAME, Status::Ok, "not used (hugepages = \"never\")");
    }
    let need = pool_hugepages(config);
    let free = free_hugepages(sys);
    let total: u64 = free.iter().map(|(_, n)| n).sum();
    let per_node: Vec<String> = free
        .iter()
        .map(|(node, n)| match node {
            Some(id) => format!("node{id} {n}"),
            None => format!("{n}"),
        })
        .collect();
    let detail = format!(
        "pool needs {need} x 2 MiB ({} mbufs of {} B); free: {}",
        config.dataplane.mbufs,
        config.dataplane.mbuf_size,
        per_node.join(", ")
    );
    let short_status = if mode == HugepageMode::Required {
        Status::Fail
    } else {
        Status::Warn
    };
    if total < need {
        let detail = if mode == HugepageMode::Required {
            detail
        } else {
            format!("{detail}; falls back to normal pages")
        };
        return Check::new(NAME, short_status, detail).fix(format!(
            "echo {} | sudo tee /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages \
             (adds {} pages; or reserve at boot with `hugepages={}`)",
            need - total + current_nr(sys),
            need - total,
            need
        ));
    }
    // The NICs DMA into the pool; pages on their node avoid cross-socket traffic.
    for node in nic_nodes {
        let on_node = free
            .iter()
            .find(|(n, _)| *n == Some(*node))
            .map_or(0, |(_, f)| *f);
        if on_node < need {
            return Check::new(
                NAME,
                Status::Warn,
                format!("{detail}; the vfio NICs are on node{node}"),
            )
            .fix(format!(
                "echo {need} | sudo tee /sys/devices/system/node/node{node}/hugepages/hugepages-2048kB/nr_hugepages"
            ));
        }
    }
    Check::new(NAME, Status::Ok, detail)
}

fn current_nr(sys: &Sysfs) -> u64 {
    std::fs::read_to_string(
        sys.root()
            .join("kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"),
    )
    .ok()
    .and_then(|s| s.trim().parse().ok())
    .unwrap_or(0)
}

fn check_socket_dir(socket: &Path) -> Check {
    use rustix::fs::{access, Access};
    const NAME: &str = "control socket";
    let dir = socket.parent().unwrap_or(Path::new("/"));
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let writable = |p: &Path| access(p, Access::WRITE_OK | Access::EXEC_OK).is_ok();
    let fix = format!(
        "run as root, or `sudo install -d -o $USER {}`, or set `[control] socket`",
        dir.display()
    );
    if dir.is_dir() {
        return if writable(dir) {
            Check::new(NAME, Status::Ok, format!("{} writable", dir.display()))
        } else {
            Check::new(
                NAME,
                Status::Fail,
                format!("{} is not writable", dir.display()),
            )
            .fix(fix)
        };
    }
    // `weir run` creates the missing directories under the nearest one that exists.
    match dir.ancestors().skip(1).find(|a| a.exists()) {
        Some(parent) if parent.is_dir() && writable(parent) => Check::new(
            NAME,
            Status::Ok,
            format!("{} will be created", dir.display()),
        ),
        _ => Check::new(
            NAME,
            Status::Fail,
            format!("{} does not exist and cannot be created", dir.display()),
        )
        .fix(fix),
    }
}

fn check_isolated(sys: &Sysfs, config: &Config) -> Check {
    const NAME: &str = "worker CPUs";
    let host = Host {
        sysfs: sys.root().to_owned(),
        check_ifaces: false,
    };
    let workers = config.dataplane.worker_cpus(&host);
    let text =
        std::fs::read_to_string(sys.root().join("devices/system/cpu/isolated")).unwrap_or_default();
    let isolated: Vec<usize> = match text.trim() {
        "" => Vec::new(),
        t => CpuList::from_str(t)
            .map(|l| l.cpus().to_vec())
            .unwrap_or_default(),
    };
    let list = |cpus: &[usize]| {
        cpus.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let shared: Vec<usize> = workers
        .iter()
        .copied()
        .filter(|c| !isolated.contains(c))
        .collect();
    if workers.is_empty() {
        return Check::new(NAME, Status::Warn, "no online CPU found for the workers");
    }
    if shared.is_empty() {
        Check::new(NAME, Status::Ok, format!("{} isolated", list(&workers)))
    } else {
        Check::new(
            NAME,
            Status::Warn,
            format!(
                "CPU {} not isolated; the scheduler may run other tasks there",
                list(&shared)
            ),
        )
        .fix(format!(
            "add `isolcpus={0} nohz_full={0} rcu_nocbs={0}` to the kernel command line",
            list(&workers)
        ))
    }
}

fn check_iface(sys: &Sysfs, port: &str, iface: &str) -> Check {
    let name = format!("port {port} ({iface})");
    if sys.root().join("class/net").join(iface).exists() {
        Check::new(name, Status::Ok, "interface exists")
    } else {
        Check::new(name, Status::Fail, "no such interface").fix(format!(
            "create `{iface}` or fix `iface` of port {port} (`ip link` lists interfaces)"
        ))
    }
}

/// The IP MTU weir assumes for an underlay it cannot read one for (as the
/// runtime does).
const ASSUMED_MTU: usize = 1500;

/// What a tenant's IP MTU gives up to the tunnel: the outer IPv4, UDP and
/// VXLAN/Geneve headers, plus the inner frame's own Ethernet header (both
/// count against the underlay's IP MTU). 50 bytes.
const TENANT_OVERHEAD: usize = MTU_OVERHEAD + ethernet::HEADER_LEN;

/// The kernel interface of an afpacket, afxdp or tap port.
fn kernel_iface(port: &PortSpec) -> Option<&str> {
    match port.kind {
        PortType::Afpacket | PortType::Afxdp | PortType::Tap => port.iface.as_deref(),
        _ => None,
    }
}

/// The IP MTU of interface `iface`, if sysfs has it.
fn iface_mtu(sys: &Sysfs, iface: &str) -> Option<usize> {
    std::fs::read_to_string(sys.root().join("class/net").join(iface).join("mtu"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// A tunnel's underlay must carry the largest frame of every kernel
/// interface on the tunnel's bridge: the underlay's MTU less
/// [`TENANT_OVERHEAD`] is what is left for the tenants' IP MTU. A larger
/// tenant frame is dropped at the tunnel port (`tunnel-mtu`), so small
/// packets pass and bulk TCP stalls: a warning, as the configuration runs.
fn check_tunnel_mtu(sys: &Sysfs, config: &Config, tunnel: &PortSpec) -> Check {
    let name = format!("tunnel {} MTU", tunnel.name);
    let Some(underlay_name) = tunnel.underlay.as_deref() else {
        return Check::new(name, Status::Fail, "no `underlay`");
    };
    let Some(underlay) = config.ports.iter().find(|p| p.name == underlay_name) else {
        return Check::new(
            name,
            Status::Fail,
            format!("underlay {underlay_name} is not a port of the configuration"),
        );
    };
    let underlay_iface = kernel_iface(underlay);
    let (underlay_mtu, how) = match underlay_iface.and_then(|i| iface_mtu(sys, i)) {
        Some(m) => (m, String::new()),
        None => (
            ASSUMED_MTU,
            " (assumed: no interface MTU to read)".to_owned(),
        ),
    };
    let room = underlay_mtu.saturating_sub(TENANT_OVERHEAD);
    let underlay_label = match underlay_iface {
        Some(i) => format!("{underlay_name} ({i})"),
        None => underlay_name.to_owned(),
    };
    // With `vni`, a frame of a VLAN leaves a trunk tunnel port tagged and its
    // tag travels inside; with `vlan_vni` the inner frame is untagged.
    let tags_inside = tunnel.vni.is_some() && tunnel.tag.is_none();
    // Ports over the limit: name, interface, MTU, the most they may have.
    let mut over: Vec<(&str, &str, usize, usize)> = Vec::new();
    let mut vhost = Vec::new();
    let tenants = config
        .ports
        .iter()
        .filter(|p| p.name != tunnel.name && p.bridge.is_some() && p.bridge == tunnel.bridge);
    for p in tenants {
        if p.kind == PortType::VhostUser {
            vhost.push(p.name.as_str());
            continue;
        }
        let Some(iface) = kernel_iface(p) else {
            continue;
        };
        // A TAP weir has yet to create gets the kernel's default.
        let Some(mtu) = iface_mtu(sys, iface).or((p.kind == PortType::Tap).then_some(ASSUMED_MTU))
        else {
            continue;
        };
        let tagged = tags_inside && (p.tag.is_some() || !p.trunks.is_empty());
        let limit = if tagged {
            room.saturating_sub(vlan::HEADER_LEN)
        } else {
            room
        };
        if mtu > limit {
            over.push((p.name.as_str(), iface, mtu, limit));
        }
    }
    let mut detail =
        format!("underlay {underlay_label} MTU {underlay_mtu}{how}, {room} left for tenants");
    if !vhost.is_empty() {
        let _ = write!(
            detail,
            "; vhost-user ports are offered MTU {room}: {}",
            vhost.join(", ")
        );
    }
    if over.is_empty() {
        return Check::new(name, Status::Ok, detail);
    }
    let larger: Vec<String> = over
        .iter()
        .map(|&(port, iface, mtu, limit)| {
            let tagged = if limit < room {
                ", its VLAN tag inside"
            } else {
                ""
            };
            format!("{port} ({iface}) MTU {mtu}{tagged}")
        })
        .collect();
    let _ = write!(detail, "; larger: {}", larger.join(", "));
    let lower: Vec<String> = over
        .iter()
        .map(|&(_, iface, _, limit)| format!("ip link set {iface} mtu {limit}"))
        .collect();
    let lower = format!("lower the tenants' MTU: `{}`", lower.join(" && "));
    let fix = match underlay_iface {
        Some(i) => {
            // The underlay MTU that fits the largest of them.
            let needed = over
                .iter()
                .map(|&(_, _, mtu, limit)| mtu + (room - limit) + TENANT_OVERHEAD)
                .max()
                .unwrap_or(underlay_mtu);
            format!(
                "raise the underlay's MTU to tenant MTU + {TENANT_OVERHEAD}: \
                 `ip link set {i} mtu {needed}` (on every host and switch of the underlay), \
                 or {lower}"
            )
        }
        None => format!("{lower} (the underlay's MTU is not weir's to raise)"),
    };
    Check::new(name, Status::Warn, detail).fix(fix)
}

/// Locked memory: AF_XDP UMEMs count against it, and so does the pool
/// once VFIO pins it for DMA.
fn check_memlock(env: &DoctorEnv, config: &Config) -> Option<Check> {
    let mut need = 0u64;
    let mut users = Vec::new();
    for p in &config.ports {
        if p.kind == PortType::Afxdp {
            need += u64::from(p.queues.unwrap_or(1)) * AfXdpConfig::default().umem_bytes();
            users.push("afxdp");
        }
    }
    if config.ports.iter().any(|p| p.kind == PortType::Vfio) {
        need += pool_bytes(config);
        users.push("vfio");
    }
    if need == 0 {
        return None;
    }
    users.dedup();
    let name = "memlock limit";
    let mib = |b: u64| b.div_ceil(1 << 20);
    Some(match env.memlock_bytes {
        None => Check::new(name, Status::Ok, "unlimited (or CAP_IPC_LOCK)"),
        Some(limit) if limit >= need => Check::new(
            name,
            Status::Ok,
            format!("{} MiB, {} ports need {} MiB", mib(limit), users.join("/"), mib(need)),
        ),
        Some(limit) => Check::new(
            name,
            Status::Fail,
            format!(
                "{} MiB but {} ports need {} MiB",
                mib(limit),
                users.join("/"),
                mib(need)
            ),
        )
        .fix("run as root, `LimitMEMLOCK=infinity` in the systemd unit, or raise the hard limit in /etc/security/limits.conf"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nic::fake::Tree;
    use std::fs;

    const NIC: &str = "0000:01:00.0";

    /// A host that can run [`config`]: IOMMU on, vfio-pci loaded, the NIC
    /// bound, enough hugepages, CPU 3 isolated, eth1 present.
    fn healthy() -> Tree {
        let t = Tree::new();
        t.write("class/iommu/dmar0/x", "");
        t.nic(NIC, "8086:10d3", Some(VFIO_PCI), Some("7"));
        free_hugepages(&t, 0, 64);
        free_hugepages(&t, 1, 0);
        cpus(&t, "2-3");
        t.write("class/net/eth1/flags", "0x1003\n");
        t
    }

    /// NUMA node `node` of `t` has `pages` free 2 MiB hugepages.
    fn free_hugepages(t: &Tree, node: u32, pages: u32) {
        t.write(
            &format!("devices/system/node/node{node}/hugepages/hugepages-2048kB/free_hugepages"),
            &format!("{pages}\n"),
        );
    }

    /// CPUs 0-3 of `t` are online, those in the list `isolated` isolated.
    fn cpus(t: &Tree, isolated: &str) {
        t.write("devices/system/cpu/online", "0-3\n");
        t.write("devices/system/cpu/isolated", &format!("{isolated}\n"));
    }

    fn config(t: &Tree, hugepages: &str) -> Config {
        let text = format!(
            r#"
            [dataplane]
            workers = "3"
            mbufs = 16384
            hugepages = "{hugepages}"
            [control]
            socket = "{}/run/weir.sock"
            [[bridge]]
            name = "br0"
            [[port]]
            name = "nic0"
            type = "vfio"
            pci = "{NIC}"
            bridge = "br0"
            [[port]]
            name = "up"
            type = "afxdp"
            iface = "eth1"
            bridge = "br0"
            "#,
            t.dir.display()
        );
        Config::parse(&text, "test.toml").unwrap()
    }

    fn env(t: &Tree) -> DoctorEnv {
        DoctorEnv {
            sysfs: t.path(""),
            modules_dir: None,
            memlock_bytes: Some(1 << 30),
        }
    }

    fn find<'a>(checks: &'a [Check], name: &str) -> &'a Check {
        checks
            .iter()
            .find(|c| c.name.starts_with(name))
            .unwrap_or_else(|| panic!("no check {name}: {checks:?}"))
    }

    #[test]
    fn pool_size_rounds_up_to_pages() {
        let t = Tree::new();
        let c = config(&t, "auto");
        // 16384 × (2048 + 128 + 64) = 36 700 160 bytes = 17.5 pages.
        assert_eq!(pool_hugepages(&c), 18);
        let pool = dataplane::Mempool::create(&dataplane::mempool::MempoolConfig {
            n_mbufs: 64,
            hugepages: dataplane::mempool::HugepagePolicy::Never,
            ..c.dataplane.mempool_config()
        })
        .unwrap();
        assert_eq!(pool.stride() * 16384, pool_bytes(&c) as usize);
    }

    #[test]
    fn healthy_host_is_all_ok() {
        let t = healthy();
        let checks = run(&env(&t), &config(&t, "required"));
        assert!(
            checks.iter().all(|c| c.status == Status::Ok),
            "{}",
            render(&checks)
        );
        assert!(!failed(&checks));
        assert_eq!(checks.len(), 8, "{}", render(&checks));
        let out = render(&checks);
        assert!(out.starts_with("ok    iommu: on"), "{out}");
        assert!(out.ends_with("8 checks: 0 failed, 0 warnings\n"), "{out}");
    }

    #[test]
    fn finds_each_problem_with_its_fix() {
        let t = Tree::new();
        t.nic(NIC, "8086:10d3", Some("e1000e"), None);
        free_hugepages(&t, 0, 4);
        t.write("kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", "4\n");
        cpus(&t, "");
        let mut e = env(&t);
        e.memlock_bytes = Some(8 << 20);
        let checks = run(&e, &config(&t, "required"));
        let out = render(&checks);
        assert!(failed(&checks));

        let c = find(&checks, "iommu");
        assert_eq!(c.status, Status::Fail, "{out}");
        assert!(c.fix.as_ref().unwrap().contains("intel_iommu=on"));
        assert_eq!(find(&checks, "vfio-pci module").status, Status::Fail);
        let c = find(&checks, "port nic0");
        assert_eq!(c.status, Status::Fail);
        assert_eq!(c.detail, "no IOMMU group");
        let c = find(&checks, "hugepages");
        assert_eq!(c.status, Status::Fail, "{out}");
        assert!(c.fix.as_ref().unwrap().starts_with("echo 18 "), "{out}");
        let c = find(&checks, "worker CPUs");
        assert_eq!(c.status, Status::Warn);
        assert!(c.fix.as_ref().unwrap().contains("isolcpus=3"), "{out}");
        let c = find(&checks, "port up (eth1)");
        assert_eq!(c.status, Status::Fail);
        let c = find(&checks, "memlock");
        assert_eq!(c.status, Status::Fail, "{out}");
        assert!(
            out.contains("FAIL  port up (eth1): no such interface; fix: "),
            "{out}"
        );

        // With hugepages = "auto" a shortage is only a warning.
        let checks = run(&e, &config(&t, "auto"));
        assert_eq!(find(&checks, "hugepages").status, Status::Warn);
    }

    #[test]
    fn vfio_port_must_be_bound_and_group_viable() {
        let t = healthy();
        t.set_driver(NIC, Some("e1000e"));
        let checks = run(&env(&t), &config(&t, "auto"));
        let c = find(&checks, "port nic0");
        assert_eq!(c.status, Status::Fail);
        assert_eq!(c.fix.as_deref(), Some("weir devbind 0000:01:00.0"));

        t.set_driver(NIC, Some(VFIO_PCI));
        // A second function in the same group, still on its kernel driver.
        let other = "0000:01:00.1";
        t.nic(other, "8086:10d3", Some("e1000e"), None);
        std::os::unix::fs::symlink(
            t.path(&format!("bus/pci/devices/{other}")),
            t.path(&format!("kernel/iommu_groups/7/devices/{other}")),
        )
        .unwrap();
        let checks = run(&env(&t), &config(&t, "auto"));
        let c = find(&checks, "port nic0");
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("0000:01:00.1 (e1000e)"), "{c:?}");
        assert_eq!(c.fix.as_deref(), Some("weir devbind 0000:01:00.1"));

        // Unsupported device ids are reported before binding.
        t.write(&format!("bus/pci/devices/{NIC}/device"), "0x1533\n");
        let checks = run(&env(&t), &config(&t, "auto"));
        assert!(find(&checks, "port nic0").detail.contains("8086:1533"));
    }

    #[test]
    fn iommu_off_is_fine_without_vfio_ports() {
        let t = Tree::new();
        let checks = run(&env(&t), &Config::parse("", "empty").unwrap());
        assert_eq!(find(&checks, "iommu").status, Status::Ok);
        assert_eq!(find(&checks, "vfio-pci module").status, Status::Ok);
        assert!(checks.iter().all(|c| !c.name.starts_with("memlock")));
    }

    #[test]
    fn socket_dir_must_be_writable_or_creatable() {
        let t = Tree::new();
        let sock = t.dir.join("a/b/weir.sock");
        assert_eq!(check_socket_dir(&sock).status, Status::Ok);
        fs::create_dir_all(t.dir.join("a/b")).unwrap();
        assert_eq!(check_socket_dir(&sock).status, Status::Ok);
        fs::write(t.dir.join("file"), "").unwrap();
        let c = check_socket_dir(&t.dir.join("file/x/weir.sock"));
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(c.fix.is_some());
    }

    /// A VXLAN tunnel over `uplink` (afpacket on u1) on bridge br0, with
    /// an afpacket port t1 (iface t1), a TAP t2, a vhost-user vm0 and a
    /// ring port on it; `vni` is the tunnel's VNI key.
    fn overlay(t: &Tree, vni: &str) -> Config {
        let text = format!(
            r#"
            [control]
            socket = "{}/run/weir.sock"
            [[bridge]]
            name = "br0"
            [[port]]
            name = "uplink"
            type = "afpacket"
            iface = "u1"
            ip = "192.0.2.1/24"
            [[port]]
            name = "vx0"
            type = "vxlan"
            bridge = "br0"
            underlay = "uplink"
            local_ip = "192.0.2.1"
            remote_ips = ["192.0.2.2"]
            {vni}
            [[port]]
            name = "t1"
            type = "afpacket"
            iface = "t1"
            bridge = "br0"
            tag = 10
            [[port]]
            name = "t2"
            type = "tap"
            iface = "t2"
            bridge = "br0"
            [[port]]
            name = "vm0"
            type = "vhost-user"
            socket = "{}/vm0.sock"
            bridge = "br0"
            [[port]]
            name = "r0"
            type = "ring"
            bridge = "br0"
            "#,
            t.dir.display(),
            t.dir.display()
        );
        Config::parse(&text, "overlay.toml").unwrap()
    }

    fn mtu(t: &Tree, iface: &str, mtu: usize) {
        t.write(&format!("class/net/{iface}/mtu"), &format!("{mtu}\n"));
    }

    #[test]
    fn underlay_mtu_leaves_room_for_tenant_frames() {
        let t = Tree::new();
        mtu(&t, "u1", 1550);
        mtu(&t, "t1", 1500);
        // t2 is not created yet: a new TAP gets 1500.
        let checks = run(&env(&t), &overlay(&t, "vni = 5000"));
        let c = find(&checks, "tunnel vx0 MTU");
        assert_eq!(c.status, Status::Warn, "{}", render(&checks));
        // t1 is an access port of VLAN 10: with `vni` its tag travels inside.
        assert_eq!(
            c.detail,
            "underlay uplink (u1) MTU 1550, 1500 left for tenants; \
             vhost-user ports are offered MTU 1500: vm0; larger: t1 (t1) MTU 1500, its VLAN tag inside"
        );
        let fix = c.fix.as_deref().unwrap();
        assert!(fix.contains("`ip link set u1 mtu 1554`"), "{fix}");
        assert!(fix.contains("`ip link set t1 mtu 1496`"), "{fix}");

        // With `vlan_vni` the inner frames are untagged: 1500 fits 1550.
        let checks = run(&env(&t), &overlay(&t, "vlan_vni = { 10 = 5010 }"));
        let c = find(&checks, "tunnel vx0 MTU");
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(c.fix.is_none());
    }

    #[test]
    fn tenants_over_a_1500_underlay_are_named_with_both_fixes() {
        let t = Tree::new();
        mtu(&t, "u1", 1500);
        mtu(&t, "t1", 1450);
        mtu(&t, "t2", 9000);
        let checks = run(&env(&t), &overlay(&t, "vlan_vni = { 10 = 5010 }"));
        let c = find(&checks, "tunnel vx0 MTU");
        assert_eq!(c.status, Status::Warn);
        let out = render(&checks);
        assert!(
            out.contains(
                "warn  tunnel vx0 MTU: underlay uplink (u1) MTU 1500, 1450 left for tenants; \
                 vhost-user ports are offered MTU 1450: vm0; larger: t2 (t2) MTU 9000; \
                 fix: raise the underlay's MTU to tenant MTU + 50: `ip link set u1 mtu 9050` \
                 (on every host and switch of the underlay), \
                 or lower the tenants' MTU: `ip link set t2 mtu 1450`\n"
            ),
            "{out}"
        );
        // t1 at exactly the limit fits.
        assert!(!c.detail.contains("t1 (t1)"), "{c:?}");
    }

    #[test]
    fn underlay_without_an_interface_is_taken_as_1500() {
        let t = Tree::new();
        mtu(&t, "t1", 1500);
        let text = format!(
            r#"
            [[bridge]]
            name = "br0"
            [[port]]
            name = "uplink"
            type = "ring"
            ip = "192.0.2.1/24"
            [[port]]
            name = "vx0"
            type = "geneve"
            bridge = "br0"
            underlay = "uplink"
            local_ip = "192.0.2.1"
            remote_ips = ["192.0.2.2"]
            vni = 7
            [[port]]
            name = "t1"
            type = "afxdp"
            iface = "t1"
            bridge = "br0"
            [control]
            socket = "{}/weir.sock"
            "#,
            t.dir.display()
        );
        let checks = run(&env(&t), &Config::parse(&text, "x.toml").unwrap());
        let c = find(&checks, "tunnel vx0 MTU");
        assert_eq!(c.status, Status::Warn);
        assert!(
            c.detail.starts_with(
                "underlay uplink MTU 1500 (assumed: no interface MTU to read), 1450 left"
            ),
            "{c:?}"
        );
        assert_eq!(
            c.fix.as_deref(),
            Some(
                "lower the tenants' MTU: `ip link set t1 mtu 1450` \
                 (the underlay's MTU is not weir's to raise)"
            )
        );
        // No tunnel, no check.
        let checks = run(&env(&t), &config(&t, "auto"));
        assert!(checks.iter().all(|c| !c.name.starts_with("tunnel")));
    }

    #[test]
    fn json_output_names_status_in_lowercase() {
        let c = Check::new("iommu", Status::Fail, "off").fix("x");
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["status"], "fail");
        assert_eq!(v["fix"], "x");
    }
}
