//! Peers for `weir bench --peer`: the same two vhost-user ports served by DPDK
//! testpmd (io forwarding) or OVS-DPDK (a netdev bridge with the NORMAL
//! action), each polling on the worker CPU, so the generator measures all
//! switches the same way.
//!
//! Control side only. Both are started as child processes of `weir bench`
//! from Debian's `dpdk-dev`/`librte-net-vhost23` and
//! `openvswitch-switch-dpdk` packages (see `scripts/setup.sh`), with a
//! private `--file-prefix` and, for OVS, a private database, run and log
//! directory. testpmd runs with `--no-huge` (the frontends' memory is a memfd
//! the peers map themselves). OVS always adds `--in-memory`, which DPDK
//! refuses with `--no-huge`, so for OVS `weir bench` raises the 2 MiB
//! hugepage count by [`OVS_HUGEPAGES`], mounts a private hugetlbfs, and
//! undoes both afterwards (root only). Only the processes started here are
//! signalled when the run ends.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use super::TempDir;
use crate::args::BenchPeer;

const OVS_VSWITCHD: &str = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk";
const OVS_SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
/// 2 MiB pages added for OVS's DPDK memory (512 MiB).
pub const OVS_HUGEPAGES: u64 = 256;
const NR_HUGEPAGES: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";

/// Hugepages reserved and mounted for a peer; undone by [`Hugepages::release`].
struct Hugepages {
    mount: PathBuf,
    mounted: bool,
    /// (count before, count we set).
    raised: Option<(u64, u64)>,
}

impl Hugepages {
    fn read_nr() -> anyhow::Result<u64> {
        std::fs::read_to_string(NR_HUGEPAGES)
            .with_context(|| format!("reading {NR_HUGEPAGES}"))?
            .trim()
            .parse()
            .with_context(|| format!("parsing {NR_HUGEPAGES}"))
    }

    fn reserve(mount: PathBuf, pages: u64) -> anyhow::Result<Hugepages> {
        let mut h = Hugepages {
            mount,
            mounted: false,
            raised: None,
        };
        let before = Self::read_nr()?;
        let want = before + pages;
        std::fs::write(NR_HUGEPAGES, want.to_string())
            .with_context(|| format!("raising {NR_HUGEPAGES} (OVS needs root)"))?;
        h.raised = Some((before, want));
        if Self::read_nr()? < want {
            h.release();
            bail!("the kernel could not reserve {pages} more 2 MiB hugepages");
        }
        std::fs::create_dir_all(&h.mount)?;
        let r = run(Command::new("mount")
            .args(["-t", "hugetlbfs", "-o", "pagesize=2M", "weirbench"])
            .arg(&h.mount));
        if let Err(e) = r {
            h.release();
            return Err(e);
        }
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
}

fn require(bin: &str, package: &str) -> anyhow::Result<()> {
    let found = if bin.starts_with('/') {
        Path::new(bin).exists()
    } else {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).exists()))
    };
    if !found {
        bail!("{bin} not found; install the Debian package {package} (scripts/setup.sh does)");
    }
    Ok(())
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl PeerProcess {
    /// Starts the peer with its poll loop on `worker_cpu` and waits until its
    /// two vhost-user sockets exist.
    ///
    /// # Errors
    /// Missing packages, or the peer exits or does not come up in 60 s.
    pub fn start(
        kind: BenchPeer,
        worker_cpu: usize,
        max_frame: u32,
        queue_size: u16,
    ) -> anyhow::Result<PeerProcess> {
        let dir = TempDir::new(match kind {
            BenchPeer::Testpmd => "testpmd",
            BenchPeer::Ovs => "ovs",
            BenchPeer::Loopback => bail!("loopback is not a peer process"),
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
        };
        let started = match kind {
            BenchPeer::Testpmd => p.start_testpmd(worker_cpu, max_frame, queue_size),
            BenchPeer::Ovs => p.start_ovs(worker_cpu, max_frame),
            BenchPeer::Loopback => Ok(()),
        };
        if let Err(e) = started {
            let logs = p.logs();
            p.stop();
            return Err(e.context(logs));
        }
        Ok(p)
    }

    /// The forwarding threads: testpmd's whole process, OVS's PMD threads.
    pub fn threads(&self) -> Option<super::cpu::Threads> {
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
        Some(super::cpu::Threads {
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
        out
    }

    fn spawn(&mut self, name: &str, cmd: &mut Command) -> anyhow::Result<()> {
        let log = File::create(self.dir.path().join(format!("{name}.log")))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        tracing::debug!(?cmd, pid = child.id(), "started");
        self.children.push((name.to_string(), child));
        Ok(())
    }

    fn wait_for(&mut self, what: &str, mut ready: impl FnMut(&Self) -> bool) -> anyhow::Result<()> {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            if ready(self) {
                return Ok(());
            }
            for (name, c) in &mut self.children {
                if let Ok(Some(st)) = c.try_wait() {
                    bail!("{name} exited ({st}) before {what}");
                }
            }
            if Instant::now() > end {
                bail!("timed out waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn eal_prefix(&self) -> String {
        format!("weirbench-{}-{}", self.kind_name(), std::process::id())
    }

    fn kind_name(&self) -> &'static str {
        super::Target::Peer(self.kind).name()
    }

    fn start_testpmd(&mut self, cpu: usize, max_frame: u32, qsize: u16) -> anyhow::Result<()> {
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

    fn vsctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let db = format!("--db=unix:{}", self.dir.path().join("db.sock").display());
        run(self
            .ovs_cmd("ovs-vsctl")
            .arg(db)
            .arg("--timeout=30")
            .args(args))
    }

    fn start_ovs(&mut self, cpu: usize, max_frame: u32) -> anyhow::Result<()> {
        require(OVS_VSWITCHD, "openvswitch-switch-dpdk")?;
        require("ovsdb-tool", "openvswitch-common")?;
        let d = self.dir.path().to_path_buf();
        let db = d.join("conf.db");
        run(self
            .ovs_cmd("ovsdb-tool")
            .arg("create")
            .arg(&db)
            .arg(OVS_SCHEMA))?;
        let mut server = self.ovs_cmd("ovsdb-server");
        server
            .arg(&db)
            .arg(format!("--remote=punix:{}", d.join("db.sock").display()))
            .arg(format!(
                "--unixctl={}",
                d.join("ovsdb-server.ctl").display()
            ))
            .arg(format!(
                "--log-file={}",
                d.join("ovsdb-server.log").display()
            ))
            .arg("-vconsole:off");
        self.spawn("ovsdb-server-console", &mut server)?;
        self.wait_for("ovsdb-server", |p| p.dir.path().join("db.sock").exists())?;
        self.vsctl(&["--no-wait", "init"])?;
        let huge = Hugepages::reserve(d.join("huge"), OVS_HUGEPAGES)?;
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
        ])?;
        let mut vswitchd = self.ovs_cmd(OVS_VSWITCHD);
        vswitchd
            .arg(format!("unix:{}", d.join("db.sock").display()))
            .arg(format!(
                "--unixctl={}",
                d.join("ovs-vswitchd.ctl").display()
            ))
            .arg(format!(
                "--log-file={}",
                d.join("ovs-vswitchd.log").display()
            ))
            .arg("-vconsole:off");
        self.spawn("ovs-vswitchd-console", &mut vswitchd)?;
        self.wait_for("OVS DPDK initialisation", |p| {
            p.vsctl(&["get", "Open_vSwitch", ".", "dpdk_initialized"])
                .is_ok_and(|v| v == "true")
        })?;
        let mtu = (max_frame.saturating_sub(14)).max(1500).to_string();
        let mut args: Vec<String> = vec![
            "add-br".into(),
            self.bridge.clone(),
            "--".into(),
            "set".into(),
            "bridge".into(),
            self.bridge.clone(),
            "datapath_type=netdev".into(),
        ];
        for i in 0..2 {
            args.extend([
                "--".to_string(),
                "add-port".into(),
                self.bridge.clone(),
                format!("vhu{i}"),
                "--".into(),
                "set".into(),
                "Interface".into(),
                format!("vhu{i}"),
                "type=dpdkvhostuser".into(),
                format!("ofport_request={}", i + 1),
                format!("mtu_request={mtu}"),
            ]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.vsctl(&args)?;
        // NORMAL floods to the bridge's own (tap) port too, a syscall per
        // flooded frame; bench traffic never needs it.
        run(self
            .ovs_cmd("ovs-ofctl")
            .args(["mod-port", &self.bridge, &self.bridge, "no-flood"]))?;
        self.wait_for("OVS's vhost-user sockets", |p| {
            p.socks.iter().all(|s| s.exists())
        })
    }

    /// Stops everything this peer started: OVS is asked to exit, then every
    /// child is sent SIGINT, then SIGKILL after 5 s.
    pub fn stop(mut self) {
        if self.kind == BenchPeer::Ovs {
            let d = self.dir.path().to_path_buf();
            for ctl in ["ovs-vswitchd.ctl", "ovsdb-server.ctl"] {
                let t = d.join(ctl);
                if t.exists() {
                    let mut c = self.ovs_cmd("ovs-appctl");
                    c.arg("-t").arg(&t).arg("exit");
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
    }
}
