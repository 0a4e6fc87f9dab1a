//! Peers for `weir bench --peer`: the same two vhost-user ports served by DPDK
//! testpmd (io forwarding) or OVS-DPDK (a netdev bridge with the NORMAL
//! action), each polling on the worker CPU, so the generator measures all
//! switches the same way.
//!
//! Control side only. Both are started as child processes of `weir bench`
//! from Debian's `dpdk-dev`/`librte-net-vhost23` and
//! `openvswitch-switch-dpdk` packages (`benches/vhost-peers.sh` installs
//! them; `scripts/setup.sh` installs the testpmd ones), with a
//! private `--file-prefix` and, for OVS, a private database, run and log
//! directory. testpmd runs with `--no-huge` (the frontends' memory is a memfd
//! the peers map themselves). OVS always adds `--in-memory`, which DPDK
//! refuses with `--no-huge`, so for OVS `weir bench` raises the 2 MiB
//! hugepage count by [`OVS_HUGEPAGES`], mounts a private hugetlbfs, and
//! undoes both afterwards (root only). Only the processes started here are
//! signalled when the run ends.
//!
//! With `--features patch` or `vxlan`, OVS gets two bridges joined by patch
//! ports or by its userspace VXLAN tunnel, as weir does. The tunnel's
//! endpoint addresses sit on the underlay bridges' tap devices, which OVS
//! reads from the kernel: for it, ovs-vswitchd runs in a network namespace
//! the bench creates and deletes, so the host's addresses and routes stay
//! as they are. The datapath's flows then show the frames encapsulated and
//! decapsulated ([`TunnelCounters`]).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::args::BenchPeer;
use crate::features::{tunnel_endpoint, Features, BENCH_VLAN, TUNNEL_VNI};
use crate::temp_dir::{TempDir, TempDirError};

const OVS_VSWITCHD: &str = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk";
const OVS_SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
/// 2 MiB pages added for OVS's DPDK memory (512 MiB).
pub const OVS_HUGEPAGES: u64 = 256;
const NR_HUGEPAGES: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";

/// With `--features patch` or `vxlan`: the port of side A's and of side B's
/// bridge that joins it to the other (a patch or a VXLAN port).
const JOIN_PORT: [&str; 2] = ["join-a", "join-b"];
/// Their OpenFlow port numbers: the one their bridge's traffic port does
/// not have (side A's is 1, side B's 2), so that the flows of
/// [`Features::ovs_flows`] name each traffic port by the same number.
const JOIN_OFPORT: [u16; 2] = [2, 1];
/// The patch ports that join the two underlay bridges of `--features
/// vxlan`, and their OpenFlow port number.
const UNDERLAY_PORT: [&str; 2] = ["under-a", "under-b"];
const UNDERLAY_PATCH_OFPORT: u16 = 1;
/// The underlay bridges' MAC addresses (the tunnel endpoints' neighbours).
const UNDERLAY_MAC: [&str; 2] = ["02:77:fe:00:00:01", "02:77:fe:00:00:02"];
/// VXLAN's UDP port (RFC 7348).
const VXLAN_PORT: u16 = 4789;

/// What OVS's datapath did with `--features vxlan`, per sending side (0 =
/// A, 1 = B); see [`PeerProcess::tunnel_counters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TunnelCounters {
    /// Packets of flows that take the side's traffic port's frames and
    /// encapsulate them (`tnl_push`), then decapsulate them where they
    /// reach the other endpoint (`tnl_pop`).
    pub encapsulated: [u64; 2],
    /// Packets of flows that take decapsulated frames from the side's
    /// endpoint (the tunnel's source address) on to a traffic port.
    pub decapsulated: [u64; 2],
}

impl TunnelCounters {
    /// Sums `ovs-appctl dpctl/dump-flows --names` lines by what they do.
    fn from_flows(text: &str) -> TunnelCounters {
        let mut c = TunnelCounters::default();
        for line in text.lines() {
            let packets = line
                .split_once("packets:")
                .and_then(|(_, rest)| rest.split(',').next())
                .and_then(|n| n.trim().parse::<u64>().ok())
                .unwrap_or(0);
            let (key, actions) = line.split_once("actions:").unwrap_or((line, ""));
            for side in 0..2 {
                let encapsulates = actions.contains("tnl_push(") && actions.contains("tnl_pop(");
                if encapsulates && key.contains(&format!("in_port(vhu{side})")) {
                    c.encapsulated[side] += packets;
                }
                let src = format!("src={},", tunnel_endpoint(side as u8));
                // On to the other side's traffic port, not back to the sender.
                let far = format!("vhu{}", 1 - side);
                if key.contains("tunnel(") && key.contains(&src) && actions.contains(&far) {
                    c.decapsulated[side] += packets;
                }
            }
        }
        c
    }

    /// Whether both directions were encapsulated and decapsulated.
    pub fn both_ways(&self) -> bool {
        self.encapsulated
            .iter()
            .chain(&self.decapsulated)
            .all(|&n| n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_counters_sum_encapsulating_and_decapsulating_flows_per_side() {
        let push = |side: usize, n: u64| {
            let (src, dst) = (tunnel_endpoint(side as u8), tunnel_endpoint(1 - side as u8));
            format!(
                "recirc_id(0),in_port(vhu{side}),eth_type(0x0800), packets:{n}, bytes:0, \
                 used:0.1s, actions:tnl_push(tnl_port(vxlan_sys_4789),header(size=50,type=4,\
                 ipv4(src={src},dst={dst},proto=17),udp(src=0,dst=4789)),out_port(u)),\
                 tnl_pop(vxlan_sys_4789)"
            )
        };
        let pop = |side: usize, n: u64, out: &str| {
            let (src, dst) = (tunnel_endpoint(side as u8), tunnel_endpoint(1 - side as u8));
            format!(
                "tunnel(tun_id=0x1388,src={src},dst={dst},flags(+key)),recirc_id(0),\
                 in_port(vxlan_sys_4789),eth_type(0x0800), packets:{n}, bytes:0, \
                 used:0.1s, actions:{out}"
            )
        };
        let dump = [
            "flow-dump from pmd on cpu core: 1".to_string(),
            push(0, 5),
            push(0, 2),
            push(1, 7),
            pop(0, 6, "vhu1"),
            pop(1, 7, "vhu0"),
            pop(1, 100, "drop"),
            "recirc_id(0),in_port(vhu0),eth_type(0x0806), packets:9, bytes:0, used:0.1s, \
             actions:vhu1"
                .to_string(),
        ]
        .join("\n");
        let c = TunnelCounters::from_flows(&dump);
        assert_eq!(c.encapsulated, [7, 7]);
        assert_eq!(c.decapsulated, [6, 7]);
        assert!(c.both_ways());
        // Frames switched without the tunnel count nothing.
        let bypass = TunnelCounters::from_flows(
            "recirc_id(0),in_port(vhu0),eth(), packets:9, bytes:0, used:0.1s, actions:vhu1",
        );
        assert_eq!(bypass, TunnelCounters::default());
        assert!(!bypass.both_ways());
    }
}

/// Why a peer did not start.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The peer failed after it wrote logs: the failure with their last lines.
    #[error("{peer} did not start; its logs end with:\n{log_tail}")]
    Start {
        /// testpmd or ovs.
        peer: &'static str,
        /// The last lines of each log the peer wrote.
        log_tail: String,
        /// What failed.
        #[source]
        source: Box<PeerError>,
    },
    /// `--peer loopback` runs in-process (see [`crate::loopback`]).
    #[error("loopback is not a peer process")]
    NotAProcess,
    /// A program of the peer is not installed.
    #[error("{bin} not found; install the Debian package {package} (`apt-get install {package}`, or `bash benches/vhost-peers.sh`, which installs what its peers need)")]
    Missing {
        /// The program.
        bin: &'static str,
        /// The Debian package(s) that have it.
        package: &'static str,
    },
    /// The peer's directory.
    #[error(transparent)]
    Dir(#[from] TempDirError),
    /// Creating a file or directory in the peer's directory.
    #[error("creating {}", path.display())]
    Create {
        /// What was being created.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// Reading the 2 MiB hugepage count.
    #[error("reading {NR_HUGEPAGES}")]
    ReadHugepageCount(#[source] std::io::Error),
    /// Raising the 2 MiB hugepage count.
    #[error("raising {NR_HUGEPAGES} (OVS needs root)")]
    RaiseHugepageCount(#[source] std::io::Error),
    /// The hugepage count is not a number.
    #[error("parsing {NR_HUGEPAGES}")]
    ParseHugepageCount(#[source] std::num::ParseIntError),
    /// The kernel reserved fewer hugepages than asked for.
    #[error("the kernel could not reserve {pages} more 2 MiB hugepages")]
    HugepagesShort {
        /// Pages asked for.
        pages: u64,
    },
    /// A command could not be run.
    #[error("running {cmd}")]
    Run {
        /// The command, as `Command`'s `Debug` shows it.
        cmd: String,
        /// Why it did not run.
        #[source]
        source: std::io::Error,
    },
    /// A command ran and failed.
    #[error("{cmd} failed: {stderr}")]
    Failed {
        /// The command, as `Command`'s `Debug` shows it.
        cmd: String,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// A process of the peer could not be started.
    #[error("starting {name}")]
    Spawn {
        /// Its name (and log file's).
        name: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A process of the peer exited while it was awaited.
    #[error("{name} exited ({status}) before {what}")]
    Exited {
        /// The process.
        name: String,
        /// Its exit status.
        status: ExitStatus,
        /// What it was expected to do.
        what: &'static str,
    },
    /// A frame traced through OVS's tunnel set-up is not encapsulated and
    /// decapsulated.
    #[error("OVS's VXLAN set-up does not tunnel: a traced frame gets {trace}")]
    NoTunnel {
        /// `ovs-appctl ofproto/trace`'s output.
        trace: String,
    },
    /// The peer did not get ready in time.
    #[error("timed out waiting for {what}")]
    Timeout {
        /// What it was expected to do.
        what: &'static str,
    },
}

/// Hugepages reserved and mounted for a peer; undone by [`Hugepages::release`]
/// or on drop.
struct Hugepages {
    mount: PathBuf,
    mounted: bool,
    /// (count before, count we set).
    raised: Option<(u64, u64)>,
}

impl Hugepages {
    fn read_nr() -> Result<u64, PeerError> {
        std::fs::read_to_string(NR_HUGEPAGES)
            .map_err(PeerError::ReadHugepageCount)?
            .trim()
            .parse()
            .map_err(PeerError::ParseHugepageCount)
    }

    fn reserve(mount: PathBuf, pages: u64) -> Result<Hugepages, PeerError> {
        let mut h = Hugepages {
            mount,
            mounted: false,
            raised: None,
        };
        let before = Self::read_nr()?;
        let want = before + pages;
        std::fs::write(NR_HUGEPAGES, want.to_string()).map_err(PeerError::RaiseHugepageCount)?;
        h.raised = Some((before, want));
        // On an error from here on, `h` is released as it drops.
        if Self::read_nr()? < want {
            return Err(PeerError::HugepagesShort { pages });
        }
        std::fs::create_dir_all(&h.mount).map_err(|source| PeerError::Create {
            path: h.mount.clone(),
            source,
        })?;
        run(Command::new("mount")
            .args(["-t", "hugetlbfs", "-o", "pagesize=2M", "weirbench"])
            .arg(&h.mount))?;
        h.mounted = true;
        Ok(h)
    }

    fn release(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.mount).status();
            self.mounted = false;
        }
        if let Some((before, set)) = self.raised.take() {
            // Only if nobody changed it since.
            if Self::read_nr().ok() == Some(set) {
                let _ = std::fs::write(NR_HUGEPAGES, before.to_string());
            }
        }
    }
}

impl Drop for Hugepages {
    fn drop(&mut self) {
        self.release();
    }
}

/// A running peer switch.
pub struct PeerProcess {
    kind: BenchPeer,
    dir: TempDir,
    /// Children in start order (stopped in reverse).
    children: Vec<(String, Child)>,
    socks: [PathBuf; 2],
    hugepages: Option<Hugepages>,
    /// OVS bridge name, unique per start: the tap of a bridge of the previous
    /// OVS instance can linger for a moment after it exited.
    bridge: String,
    /// The network namespace OVS runs in with `--features vxlan` (named
    /// like [`PeerProcess::bridge`]), deleted when it stops.
    netns: Option<String>,
}

fn require(bin: &'static str, package: &'static str) -> Result<(), PeerError> {
    let found = if bin.starts_with('/') {
        Path::new(bin).exists()
    } else {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).exists()))
    };
    if found {
        Ok(())
    } else {
        Err(PeerError::Missing { bin, package })
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

fn run(cmd: &mut Command) -> Result<String, PeerError> {
    let out = cmd.output().map_err(|source| PeerError::Run {
        cmd: format!("{cmd:?}"),
        source,
    })?;
    if !out.status.success() {
        return Err(PeerError::Failed {
            cmd: format!("{cmd:?}"),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl PeerProcess {
    /// Starts the peer with its poll loop on `worker_cpu` and waits until its
    /// two vhost-user sockets exist. OVS gets `features` as port settings and
    /// flows for `flows` stations per side; testpmd has no use for them.
    ///
    /// # Errors
    /// Missing packages, or the peer exits or does not come up in 60 s.
    pub fn start(
        kind: BenchPeer,
        worker_cpu: usize,
        max_frame: u32,
        queue_size: u16,
        features: &Features,
        flows: u32,
    ) -> Result<PeerProcess, PeerError> {
        let dir = TempDir::new(match kind {
            BenchPeer::Testpmd => "testpmd",
            BenchPeer::Ovs => "ovs",
            BenchPeer::Loopback => return Err(PeerError::NotAProcess),
        })?;
        let mut p = PeerProcess {
            kind,
            socks: [dir.path().join("vhu0"), dir.path().join("vhu1")],
            dir,
            children: Vec::new(),
            hugepages: None,
            bridge: {
                static STARTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                // Relaxed: a counter for unique names only.
                let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                format!("wb{}x{n}", std::process::id() % 100_000)
            },
            netns: None,
        };
        let started = match kind {
            BenchPeer::Testpmd => p.start_testpmd(worker_cpu, max_frame, queue_size),
            BenchPeer::Ovs => p.start_ovs(worker_cpu, max_frame, features, flows),
            BenchPeer::Loopback => Ok(()),
        };
        if let Err(e) = started {
            let log_tail = p.logs();
            let peer = p.kind_name();
            p.stop();
            return Err(if log_tail.is_empty() {
                e
            } else {
                PeerError::Start {
                    peer,
                    log_tail,
                    source: Box::new(e),
                }
            });
        }
        Ok(p)
    }

    /// The forwarding threads: testpmd's whole process, OVS's PMD threads.
    pub fn threads(&self) -> Option<crate::cpu::Threads> {
        let (child, prefix) = match self.kind {
            BenchPeer::Testpmd => ("testpmd", None),
            BenchPeer::Ovs => ("ovs-vswitchd-console", Some("pmd".to_string())),
            BenchPeer::Loopback => return None,
        };
        let pid = self
            .children
            .iter()
            .find(|(n, _)| n == child)
            .map(|(_, c)| c.id())?;
        Some(crate::cpu::Threads {
            pid: Some(pid),
            name_prefix: prefix,
        })
    }

    /// The two vhost-user sockets (port A, port B).
    pub fn sockets(&self) -> [PathBuf; 2] {
        self.socks.clone()
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for name in ["testpmd.log", "ovs-vswitchd.log", "ovsdb-server.log"] {
            let p = self.dir.path().join(name);
            if p.exists() {
                out.push_str(&format!("--- {name} (last lines)\n{}\n", log_tail(&p)));
            }
        }
        out.truncate(out.trim_end().len());
        out
    }

    fn spawn(&mut self, name: &str, cmd: &mut Command) -> Result<(), PeerError> {
        let path = self.dir.path().join(format!("{name}.log"));
        let log = File::create(&path)
            .and_then(|log| Ok((log.try_clone()?, log)))
            .map_err(|source| PeerError::Create { path, source });
        let (out, err) = log?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| PeerError::Spawn {
                name: name.to_owned(),
                source,
            })?;
        tracing::debug!(?cmd, pid = child.id(), "started");
        self.children.push((name.to_string(), child));
        Ok(())
    }

    fn wait_for(
        &mut self,
        what: &'static str,
        mut ready: impl FnMut(&Self) -> bool,
    ) -> Result<(), PeerError> {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            if ready(self) {
                return Ok(());
            }
            for (name, c) in &mut self.children {
                if let Ok(Some(status)) = c.try_wait() {
                    return Err(PeerError::Exited {
                        name: name.clone(),
                        status,
                        what,
                    });
                }
            }
            if Instant::now() > end {
                return Err(PeerError::Timeout { what });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn eal_prefix(&self) -> String {
        format!("weirbench-{}-{}", self.kind_name(), std::process::id())
    }

    fn kind_name(&self) -> &'static str {
        crate::Target::Peer(self.kind).name()
    }

    fn start_testpmd(&mut self, cpu: usize, max_frame: u32, qsize: u16) -> Result<(), PeerError> {
        require("dpdk-testpmd", "dpdk-dev and librte-net-vhost23")?;
        let mut cmd = Command::new("dpdk-testpmd");
        // Main lcore and forwarding lcore both on the worker CPU (the main
        // one sleeps).
        cmd.arg(format!("--lcores=0@{cpu},1@{cpu}"))
            .arg(format!("--file-prefix={}", self.eal_prefix()))
            .args(["--no-pci", "--no-huge", "-m", "1024", "--no-telemetry"]);
        for (i, s) in self.socks.iter().enumerate() {
            cmd.arg("--vdev")
                .arg(format!("net_vhost{i},iface={},queues=1", s.display()));
        }
        cmd.args(["--", "--auto-start", "--stats-period=3600", "--nb-cores=1"])
            .arg(format!("--rxd={qsize}"))
            .arg(format!("--txd={qsize}"))
            .args(["--burst=32", "--total-num-mbufs=16384", "--forward-mode=io"]);
        if max_frame > 1514 {
            cmd.arg(format!("--max-pkt-len={}", max_frame + 4))
                .arg(format!(
                    "--mbuf-size={}",
                    (max_frame + 4 + 128).next_multiple_of(1024)
                ));
        }
        self.spawn("testpmd", &mut cmd)?;
        self.wait_for("testpmd's vhost-user sockets", |p| {
            p.socks.iter().all(|s| s.exists())
        })
    }

    fn ovs_cmd(&self, bin: &str) -> Command {
        let d = self.dir.path();
        let mut c = Command::new(bin);
        for v in ["OVS_RUNDIR", "OVS_LOGDIR", "OVS_DBDIR", "OVS_SYSCONFDIR"] {
            c.env(v, d);
        }
        c
    }

    fn vsctl(&self, args: &[&str]) -> Result<String, PeerError> {
        let db = format!("--db=unix:{}", self.dir.path().join("db.sock").display());
        run(self
            .ovs_cmd("ovs-vsctl")
            .arg(db)
            .arg("--timeout=30")
            .args(args))
    }

    /// An OVS daemon `bin` serving or using the database `db` (`name` names
    /// its control socket and log in the peer's directory), logging to its
    /// file only.
    fn ovs_daemon(&self, bin: &str, name: &str, db: &std::ffi::OsStr) -> Command {
        let d = self.dir.path();
        let mut c = self.ovs_cmd(bin);
        c.arg(db)
            .arg(format!(
                "--unixctl={}",
                d.join(format!("{name}.ctl")).display()
            ))
            .arg(format!(
                "--log-file={}",
                d.join(format!("{name}.log")).display()
            ))
            .arg("-vconsole:off");
        c
    }

    fn start_ovs(
        &mut self,
        cpu: usize,
        max_frame: u32,
        features: &Features,
        flows: u32,
    ) -> Result<(), PeerError> {
        require(OVS_VSWITCHD, "openvswitch-switch-dpdk")?;
        require("ovsdb-tool", "openvswitch-common")?;
        if features.tunnel {
            require("ip", "iproute2")?;
        }
        self.start_ovsdb()?;
        self.configure_dpdk(cpu)?;
        if features.tunnel {
            // The tunnel endpoints' addresses sit on the underlay bridges'
            // tap devices, in a namespace of their own so that the host's
            // addresses and routes stay as they are.
            run(Command::new("ip").args(["netns", "add", &self.bridge]))?;
            self.netns = Some(self.bridge.clone());
        }
        self.start_vswitchd()?;
        self.add_ovs_ports(max_frame, features)?;
        if features.tunnel {
            self.set_up_underlay()?;
        }
        self.add_ovs_flows(features, flows)
    }

    /// The bridges of side A's and side B's traffic port: the one bridge
    /// twice, or with `--features patch` or `vxlan` one each.
    fn side_bridges(&self, features: &Features) -> [String; 2] {
        if features.split() {
            [format!("{}a", self.bridge), format!("{}b", self.bridge)]
        } else {
            [self.bridge.clone(), self.bridge.clone()]
        }
    }

    /// The underlay bridge of side `side`'s tunnel endpoint.
    fn underlay_bridge(&self, side: usize) -> String {
        format!("{}u{}", self.bridge, ["a", "b"][side])
    }

    /// Replaces each bridge's NORMAL flow with `features`' flows, if they
    /// have any; the two bridges of `--features patch` or `vxlan` pass what
    /// comes from the other bridge straight on.
    fn add_ovs_flows(&mut self, features: &Features, flows: u32) -> Result<(), PeerError> {
        let bridges = self.side_bridges(features);
        for (side, bridge) in bridges.iter().enumerate() {
            if side == 1 && !features.split() {
                break;
            }
            let join = features.split().then_some(JOIN_OFPORT[side]);
            let Some(text) = features.ovs_flows_joined(flows, join) else {
                return Ok(());
            };
            self.replace_flows(bridge, &text)?;
        }
        Ok(())
    }

    /// Replaces the flows of `bridge` with `text` (`ovs-ofctl add-flows`
    /// lines).
    fn replace_flows(&self, bridge: &str, text: &str) -> Result<(), PeerError> {
        let file = self.dir.path().join(format!("flows-{bridge}.txt"));
        std::fs::write(&file, text).map_err(|source| PeerError::Create {
            path: file.clone(),
            source,
        })?;
        run(self.ovs_cmd("ovs-ofctl").args(["del-flows", bridge]))?;
        run(self
            .ovs_cmd("ovs-ofctl")
            .arg("add-flows")
            .arg(bridge)
            .arg(&file))?;
        Ok(())
    }

    /// `ovs-appctl` to the running ovs-vswitchd.
    fn appctl(&self, args: &[&str]) -> Result<String, PeerError> {
        run(self
            .ovs_cmd("ovs-appctl")
            .arg("-t")
            .arg(self.dir.path().join("ovs-vswitchd.ctl"))
            .args(args))
    }

    /// `ip -n <namespace> ARGS`.
    fn ip(&self, args: &[&str]) -> Result<String, PeerError> {
        let ns = self.netns.as_deref().unwrap_or_default();
        run(Command::new("ip").args(["-n", ns]).args(args))
    }

    /// OVS's userspace tunnelling between the two sides: each underlay
    /// bridge passes frames between its own (tap) port and the patch port
    /// to the other one, and its tap carries the side's endpoint address.
    /// A VXLAN port's frames are encapsulated (`tnl_push`) towards the
    /// route's bridge, cross the patch, and are decapsulated (`tnl_pop`)
    /// where they are output to the other bridge's own port, whose address
    /// they are sent to. Checked with a traced frame before any is sent.
    fn set_up_underlay(&mut self) -> Result<(), PeerError> {
        for side in 0..2 {
            let bridge = self.underlay_bridge(side);
            self.replace_flows(
                &bridge,
                &format!(
                    "in_port=LOCAL,actions=output:{UNDERLAY_PATCH_OFPORT}\n\
                     in_port={UNDERLAY_PATCH_OFPORT},actions=LOCAL\n"
                ),
            )?;
            let addr = format!("{}/24", tunnel_endpoint(side as u8));
            self.ip(&["addr", "add", &addr, "dev", &bridge, "noprefixroute"])?;
        }
        // Both endpoints live in the one namespace, and OVS ranks the
        // kernel's local route of an address above a route added to it: the
        // local routes would send each side's tunnel to its own bridge.
        for side in 0..2 {
            let local = tunnel_endpoint(side as u8).to_string();
            let bridge = self.underlay_bridge(side);
            self.ip(&[
                "route", "del", "local", &local, "dev", &bridge, "table", "local",
            ])?;
        }
        // OVS drops the endpoints of a bridge whose last route went: route
        // only once it saw the local routes go.
        let locals = [0, 1].map(|side| format!("{}/32 dev", tunnel_endpoint(side)));
        self.wait_for("OVS to drop the underlay's local routes", |p| {
            p.appctl(&["ovs/route/show"]).is_ok_and(|t| {
                !t.lines()
                    .any(|l| l.ends_with(" local") && locals.iter().any(|a| l.contains(a)))
            })
        })?;
        for side in 0..2 {
            let bridge = self.underlay_bridge(side);
            let remote = tunnel_endpoint(1 - side as u8).to_string();
            self.appctl(&["ovs/route/add", &format!("{remote}/32"), &bridge])?;
            self.appctl(&["tnl/arp/set", &bridge, &remote, UNDERLAY_MAC[1 - side]])?;
        }
        // A frame from each side's traffic port (`vhu0` is ofport 1, `vhu1`
        // ofport 2) to the other side's station must be encapsulated and
        // decapsulated.
        let mac = |side: usize| format!("02:77:0{}:00:00:00", ["a", "b"][side]);
        for side in 0..2 {
            let trace = self.appctl(&[
                "ofproto/trace",
                &format!("{}{}", self.bridge, ["a", "b"][side]),
                &format!(
                    "in_port={},dl_src={},dl_dst={}",
                    side + 1,
                    mac(side),
                    mac(1 - side)
                ),
            ])?;
            let actions = trace
                .lines()
                .find(|l| l.starts_with("Datapath actions:"))
                .unwrap_or_default();
            if !(actions.contains("tnl_push") && actions.contains("tnl_pop")) {
                return Err(PeerError::NoTunnel { trace });
            }
        }
        Ok(())
    }

    /// Creates a private database and serves it on `db.sock`.
    fn start_ovsdb(&mut self) -> Result<(), PeerError> {
        let d = self.dir.path().to_path_buf();
        let db = d.join("conf.db");
        run(self
            .ovs_cmd("ovsdb-tool")
            .arg("create")
            .arg(&db)
            .arg(OVS_SCHEMA))?;
        let mut server = self.ovs_daemon("ovsdb-server", "ovsdb-server", db.as_os_str());
        server.arg(format!("--remote=punix:{}", d.join("db.sock").display()));
        self.spawn("ovsdb-server-console", &mut server)?;
        self.wait_for("ovsdb-server", |p| p.dir.path().join("db.sock").exists())?;
        self.vsctl(&["--no-wait", "init"]).map(drop)
    }

    /// Reserves OVS's hugepages and writes its DPDK settings: a private
    /// file prefix, no PCI, the PMD thread on `cpu`.
    fn configure_dpdk(&mut self, cpu: usize) -> Result<(), PeerError> {
        let huge = Hugepages::reserve(self.dir.path().join("huge"), OVS_HUGEPAGES)?;
        let huge_dir = format!("other_config:dpdk-hugepage-dir={}", huge.mount.display());
        self.hugepages = Some(huge);
        let extra = format!(
            "other_config:dpdk-extra=--no-pci --file-prefix={}",
            self.eal_prefix()
        );
        let socket_mem = format!("other_config:dpdk-socket-mem={}", OVS_HUGEPAGES * 2);
        let mask = format!("other_config:pmd-cpu-mask={:#x}", 1u128 << cpu);
        self.vsctl(&[
            "--no-wait",
            "set",
            "Open_vSwitch",
            ".",
            "other_config:dpdk-init=true",
            &extra,
            &huge_dir,
            &socket_mem,
            &mask,
            "other_config:n-handler-threads=1",
            "other_config:n-revalidator-threads=1",
        ])
        .map(drop)
    }

    /// Starts ovs-vswitchd and waits until DPDK is initialised.
    fn start_vswitchd(&mut self) -> Result<(), PeerError> {
        let db = format!("unix:{}", self.dir.path().join("db.sock").display());
        let mut vswitchd = self.ovs_daemon(OVS_VSWITCHD, "ovs-vswitchd", db.as_ref());
        if let Some(ns) = &self.netns {
            // `ip netns exec` enters the namespace and execs the daemon in
            // its own process, so the process id stays the daemon's.
            let mut inside = self.ovs_cmd("ip");
            inside
                .args(["netns", "exec", ns])
                .arg(vswitchd.get_program())
                .args(vswitchd.get_args());
            vswitchd = inside;
        }
        self.spawn("ovs-vswitchd-console", &mut vswitchd)?;
        self.wait_for("OVS DPDK initialisation", |p| {
            p.vsctl(&["get", "Open_vSwitch", ".", "dpdk_initialized"])
                .is_ok_and(|v| v == "true")
        })
    }

    /// A netdev bridge with the two `dpdkvhostuser` ports (OpenFlow ports 1
    /// and 2); with `--features patch` or `vxlan`, a bridge per port (side
    /// A's port 1, side B's port 2) and the patch or VXLAN ports that join
    /// them (the other number), and for VXLAN the two underlay bridges
    /// joined by patch ports. Waits for the vhost-user sockets.
    fn add_ovs_ports(&mut self, max_frame: u32, features: &Features) -> Result<(), PeerError> {
        let mtu = (max_frame.saturating_sub(14)).max(1500).to_string();
        let sides = self.side_bridges(features);
        let mut args: Vec<String> = Vec::new();
        let add_bridge = |args: &mut Vec<String>, name: &str, extra: Option<String>| {
            args.extend(
                [
                    "--",
                    "add-br",
                    name,
                    "--",
                    "set",
                    "bridge",
                    name,
                    "datapath_type=netdev",
                ]
                .map(String::from),
            );
            args.extend(extra);
        };
        // A port on a bridge, then the Interface settings the caller appends.
        let add_port = |args: &mut Vec<String>, bridge: &str, port: &str| {
            args.extend(
                [
                    "--",
                    "add-port",
                    bridge,
                    port,
                    "--",
                    "set",
                    "Interface",
                    port,
                ]
                .map(String::from),
            );
        };
        add_bridge(&mut args, &sides[0], None);
        if features.split() {
            add_bridge(&mut args, &sides[1], None);
        }
        for (i, bridge) in sides.iter().enumerate() {
            let port = format!("vhu{i}");
            add_port(&mut args, bridge, &port);
            args.extend([
                "type=dpdkvhostuser".into(),
                format!("ofport_request={}", i + 1),
                format!("mtu_request={mtu}"),
            ]);
            args.extend(features.ovs_settings(&port));
        }
        if features.split() {
            for (side, bridge) in sides.iter().enumerate() {
                let port = JOIN_PORT[side];
                add_port(&mut args, bridge, port);
                args.push(format!("ofport_request={}", JOIN_OFPORT[side]));
                if features.tunnel {
                    args.extend([
                        "type=vxlan".into(),
                        format!("options:remote_ip={}", tunnel_endpoint(1 - side as u8)),
                        format!("options:key={TUNNEL_VNI}"),
                        format!("options:dst_port={VXLAN_PORT}"),
                    ]);
                } else {
                    args.extend([
                        "type=patch".into(),
                        format!("options:peer={}", JOIN_PORT[1 - side]),
                    ]);
                }
                // The traffic ports' VLAN is the one the bridges share, as
                // weir maps it to the tunnel's VNI: frames cross untagged.
                if features.vlan {
                    args.extend(["--", "set", "Port", port].map(String::from));
                    args.push(format!("tag={BENCH_VLAN}"));
                }
            }
        }
        if features.tunnel {
            for side in 0..2 {
                let bridge = self.underlay_bridge(side);
                let hwaddr = format!("other_config:hwaddr={}", UNDERLAY_MAC[side]);
                add_bridge(&mut args, &bridge, Some(hwaddr));
                let port = UNDERLAY_PORT[side];
                add_port(&mut args, &bridge, port);
                args.extend([
                    "type=patch".into(),
                    format!("options:peer={}", UNDERLAY_PORT[1 - side]),
                    format!("ofport_request={UNDERLAY_PATCH_OFPORT}"),
                ]);
            }
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.vsctl(&args)?;
        // NORMAL floods to the bridge's own (tap) port too, a syscall per
        // flooded frame; bench traffic never needs it.
        for (i, bridge) in sides.iter().enumerate() {
            if i == 0 || features.split() {
                run(self
                    .ovs_cmd("ovs-ofctl")
                    .args(["mod-port", bridge, bridge, "no-flood"]))?;
            }
        }
        self.wait_for("OVS's vhost-user sockets", |p| {
            p.socks.iter().all(|s| s.exists())
        })
    }

    /// What OVS's datapath did with `--features vxlan` since it started,
    /// from its flows' packet counts (OVS's userspace tunnel ports count
    /// nothing themselves). None without the tunnel.
    ///
    /// # Errors
    /// `ovs-appctl` failed.
    pub fn tunnel_counters(&self) -> Result<Option<TunnelCounters>, PeerError> {
        if self.netns.is_none() {
            return Ok(None);
        }
        let flows = self.appctl(&["dpctl/dump-flows", "--names"])?;
        tracing::debug!(%flows, "OVS datapath flows");
        Ok(Some(TunnelCounters::from_flows(&flows)))
    }

    /// Stops everything this peer started: OVS is asked to exit, then every
    /// child is sent SIGINT, then SIGKILL after 5 s. Dropping a peer does
    /// the same (a bench that fails or panics half way leaves no switch,
    /// hugepages or namespace behind).
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        if self.kind == BenchPeer::Ovs && !self.children.is_empty() {
            let d = self.dir.path().to_path_buf();
            for ctl in ["ovs-vswitchd.ctl", "ovsdb-server.ctl"] {
                let t = d.join(ctl);
                if t.exists() {
                    let mut c = self.ovs_cmd("ovs-appctl");
                    // A daemon that does not answer is killed below.
                    c.arg("--timeout=5").arg("-t").arg(&t).arg("exit");
                    if ctl == "ovs-vswitchd.ctl" {
                        c.arg("--cleanup");
                    }
                    let _ = c.stdout(Stdio::null()).stderr(Stdio::null()).status();
                }
            }
        }
        for (name, mut child) in self.children.drain(..).rev() {
            if let Ok(Some(_)) = child.try_wait() {
                continue;
            }
            if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
            }
            let end = Instant::now() + Duration::from_secs(5);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > end => {
                        tracing::warn!(%name, "did not exit on SIGINT; killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
        if let Some(mut h) = self.hugepages.take() {
            h.release();
        }
        if let Some(ns) = self.netns.take() {
            if let Err(e) = run(Command::new("ip").args(["netns", "del", &ns])) {
                tracing::warn!(netns = %ns, "removing OVS's network namespace: {e}");
            }
        }
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        self.shut_down();
    }
}
