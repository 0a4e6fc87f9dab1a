//! Physical NIC set-up through sysfs: binding PCI functions to vfio-pci
//! (`weir devbind`) and SR-IOV virtual functions (`weir sriov`).
//!
//! Control plane only, never on the packet path; runs locally, not through
//! the daemon. Every function takes the sysfs root (`/sys` on a real host) so
//! tests run against a fake tree in a temporary directory, and external
//! commands (`modprobe`, `ip`) go through a [`Runner`] so tests can record
//! the exact argv instead of running them.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

/// Where `weir devbind` records the driver a device had before it was bound
/// to vfio-pci, one file per PCI address.
pub const DEFAULT_STATE_DIR: &str = "/run/weir/devbind";

/// The kernel driver that hands devices to userspace.
pub const VFIO_PCI: &str = "vfio-pci";

/// `IFF_UP` in `/sys/class/net/IF/flags`.
const IFF_UP: u64 = 0x1;

/// Runs an external command and returns its stdout.
pub trait Runner {
    /// Runs `argv[0]` with the rest as arguments.
    ///
    /// # Errors
    ///
    /// [`NicError::Command`] if it cannot be started or exits non-zero.
    fn run(&self, argv: &[String]) -> Result<String, NicError>;
}

/// Runs commands on the host.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemRunner;

impl Runner for SystemRunner {
    fn run(&self, argv: &[String]) -> Result<String, NicError> {
        let fail = |detail: String| NicError::Command {
            argv: argv.join(" "),
            detail,
        };
        let (prog, args) = argv
            .split_first()
            .ok_or_else(|| fail("empty command".into()))?;
        let out = Command::new(prog)
            .args(args)
            .output()
            .map_err(|e| fail(e.to_string()))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            return Err(fail(format!("{}: {stderr}", out.status)));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Errors from NIC set-up.
#[derive(Debug, thiserror::Error)]
pub enum NicError {
    /// No such PCI function in sysfs.
    #[error("no PCI device {pci} (no {}); list candidates with `weir devbind --list`", path.display())]
    NoSuchDevice {
        /// The PCI address asked for.
        pci: String,
        /// The sysfs directory that was checked.
        path: PathBuf,
    },
    /// The device has no IOMMU group, so VFIO cannot use it.
    #[error(
        "{pci} has no IOMMU group: the IOMMU is off; boot with `intel_iommu=on` \
         (Intel) or `amd_iommu=on` (AMD) and enable VT-d/AMD-Vi in the firmware"
    )]
    NoIommuGroup {
        /// The PCI address.
        pci: String,
    },
    /// A kernel interface on the device is up.
    #[error(
        "{pci} is in use: its interface `{iface}` is up; take it down \
         (`ip link set {iface} down`) or pass --force"
    )]
    InUse {
        /// The PCI address.
        pci: String,
        /// The interface that is up.
        iface: String,
    },
    /// vfio-pci is not loaded and could not be loaded.
    #[error("the vfio-pci driver is not available after `modprobe vfio-pci`; install the kernel's vfio modules")]
    NoVfioDriver,
    /// `devbind --unbind` on a device that is not bound to vfio-pci.
    #[error("{pci} is not bound to vfio-pci (driver: {driver})")]
    NotBoundToVfio {
        /// The PCI address.
        pci: String,
        /// Its current driver, or `none`.
        driver: String,
    },
    /// The device has no SR-IOV capability.
    #[error("{pci} does not support SR-IOV (no sriov_totalvfs); pass the physical function of an SR-IOV NIC")]
    NoSriov {
        /// The PCI address.
        pci: String,
    },
    /// More VFs asked for than the device has.
    #[error("{pci} supports at most {total} VFs, not {wanted}")]
    TooManyVfs {
        /// The PCI address.
        pci: String,
        /// `sriov_totalvfs`.
        total: u32,
        /// The count asked for.
        wanted: u32,
    },
    /// No such VF.
    #[error("{pci} has no VF {vf} ({numvfs} enabled); create it with `weir sriov {pci} --vfs N`")]
    NoSuchVf {
        /// The PF's PCI address.
        pci: String,
        /// The VF index asked for.
        vf: u32,
        /// VFs enabled.
        numvfs: u32,
    },
    /// VF settings need the PF's kernel interface.
    #[error("{pci} has no kernel interface; VF MAC/VLAN are set through the PF's driver, so bind it back (`weir devbind --unbind {pci}`)")]
    NoPfInterface {
        /// The PF's PCI address.
        pci: String,
    },
    /// A bad argument (MAC, VLAN).
    #[error("{0}")]
    Invalid(String),
    /// A sysfs file could not be read or written.
    #[error("{op} {}", path.display())]
    Io {
        /// What was being done (`reading`, `writing ... to`).
        op: String,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// An external command failed.
    #[error("`{argv}` failed: {detail}")]
    Command {
        /// The command line.
        argv: String,
        /// Exit status and stderr, or why it could not start.
        detail: String,
    },
}

/// sysfs paths under one root.
#[derive(Debug, Clone)]
pub struct Sysfs {
    root: PathBuf,
}

impl Sysfs {
    /// sysfs rooted at `root` (`/sys` on a real host).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Sysfs { root: root.into() }
    }

    /// The root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `bus/pci/devices/PCI`.
    pub fn device(&self, pci: &str) -> PathBuf {
        self.root.join("bus/pci/devices").join(pci)
    }

    /// `bus/pci/drivers/DRIVER`.
    pub fn driver_dir(&self, driver: &str) -> PathBuf {
        self.root.join("bus/pci/drivers").join(driver)
    }

    fn existing_device(&self, pci: &str) -> Result<PathBuf, NicError> {
        let path = self.device(pci);
        if path.exists() {
            Ok(path)
        } else {
            Err(NicError::NoSuchDevice {
                pci: pci.to_owned(),
                path,
            })
        }
    }

    /// The driver bound to `pci`, if any.
    pub fn driver(&self, pci: &str) -> Option<String> {
        link_name(&self.device(pci).join("driver"))
    }

    /// The IOMMU group of `pci`, if any.
    pub fn iommu_group(&self, pci: &str) -> Option<String> {
        link_name(&self.device(pci).join("iommu_group"))
    }

    /// The NUMA node of `pci` (`-1` means none).
    pub fn numa_node(&self, pci: &str) -> Option<i32> {
        read_trim(&self.device(pci).join("numa_node")).and_then(|s| s.parse().ok())
    }

    /// `vendor:device` of `pci` in lowercase hex without `0x`.
    pub fn id(&self, pci: &str) -> Option<String> {
        let dev = self.device(pci);
        let hex = |f: &str| read_trim(&dev.join(f)).map(|s| s.trim_start_matches("0x").to_owned());
        Some(format!("{}:{}", hex("vendor")?, hex("device")?))
    }

    /// Kernel interfaces of `pci`: `devices/PCI/net/*`, or one level down
    /// for drivers with a bus of their own (virtio: `devices/PCI/virtio0/net`).
    pub fn ifaces(&self, pci: &str) -> Vec<String> {
        let dev = self.device(pci);
        let mut ifaces = dir_names(&dev.join("net"));
        for sub in dir_names(&dev).iter().filter(|n| n.starts_with("virtio")) {
            ifaces.extend(dir_names(&dev.join(sub).join("net")));
        }
        ifaces
    }

    /// Whether interface `iface` is administratively up.
    pub fn iface_up(&self, iface: &str) -> bool {
        read_trim(&self.root.join("class/net").join(iface).join("flags"))
            .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
            .is_some_and(|flags| flags & IFF_UP != 0)
    }

    /// PCI addresses of the devices in IOMMU group `group`.
    pub fn group_devices(&self, group: &str) -> Vec<String> {
        dir_names(
            &self
                .root
                .join("kernel/iommu_groups")
                .join(group)
                .join("devices"),
        )
    }

    /// Whether vfio-pci is loaded.
    pub fn has_vfio_pci(&self) -> bool {
        self.driver_dir(VFIO_PCI).exists()
    }

    fn write(&self, path: &Path, value: &str) -> Result<(), NicError> {
        tracing::debug!("echo {value} > {}", path.display());
        // No `create`: a missing attribute is an error, not a new file.
        fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(path)
            .and_then(|mut f| f.write_all(value.as_bytes()))
            .map_err(|source| NicError::Io {
                op: format!("writing `{}` to", value.trim_end()),
                path: path.to_owned(),
                source,
            })
    }
}

/// The last component of the symlink at `path`.
fn link_name(path: &Path) -> Option<String> {
    fs::read_link(path)
        .ok()
        .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
}

fn read_trim(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

/// Sorted entry names of a directory (empty if it does not exist).
pub(crate) fn dir_names(path: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_owned()).collect()
}

// ---------------------------------------------------------------- devbind

/// A network-class PCI function, as `weir devbind --list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PciNic {
    /// PCI address.
    pub pci: String,
    /// `vendor:device`.
    pub id: String,
    /// Bound driver.
    pub driver: Option<String>,
    /// IOMMU group.
    pub iommu_group: Option<String>,
    /// NUMA node (`None` when the platform reports none).
    pub numa_node: Option<i32>,
    /// Kernel interfaces.
    pub ifaces: Vec<String>,
    /// Whether weir's vfio port type has a driver for this id.
    pub weir_driver: bool,
}

/// Whether `pmd` has a driver for `vendor:device` (an entry of
/// [`pmd::SUPPORTED_NICS`]).
pub fn weir_supports(id: &str) -> bool {
    pmd::SupportedNic::lookup_id(id).is_some()
}

/// Network-class (PCI class 0x02) functions, sorted by address.
pub fn list_nics(sys: &Sysfs) -> Vec<PciNic> {
    dir_names(&sys.root.join("bus/pci/devices"))
        .into_iter()
        .filter(|pci| {
            read_trim(&sys.device(pci).join("class")).is_some_and(|c| c.starts_with("0x02"))
        })
        .map(|pci| {
            let id = sys.id(&pci).unwrap_or_else(|| "?".into());
            PciNic {
                weir_driver: weir_supports(&id),
                id,
                driver: sys.driver(&pci),
                iommu_group: sys.iommu_group(&pci),
                numa_node: sys.numa_node(&pci).filter(|n| *n >= 0),
                ifaces: sys.ifaces(&pci),
                pci,
            }
        })
        .collect()
}

/// What [`bind_vfio`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindOutcome {
    /// The driver before (recorded for `--unbind`).
    pub previous: Option<String>,
    /// Whether it was already bound to vfio-pci (nothing done).
    pub already: bool,
    /// Whether `modprobe vfio-pci` was run.
    pub loaded_module: bool,
}

/// Binds `pci` to vfio-pci: `driver_override`, unbind from the current
/// driver, `drivers_probe`. The previous driver is recorded in
/// `state_dir/PCI` for [`unbind_vfio`]. Loads vfio-pci with `modprobe`
/// through `runner` if it is not loaded. Refuses when one of the device's
/// kernel interfaces is up unless `force`.
///
/// # Errors
///
/// [`NicError::NoSuchDevice`], [`NicError::NoIommuGroup`],
/// [`NicError::InUse`], [`NicError::NoVfioDriver`], and I/O errors.
pub fn bind_vfio(
    sys: &Sysfs,
    state_dir: &Path,
    runner: &dyn Runner,
    pci: &str,
    force: bool,
) -> Result<BindOutcome, NicError> {
    let dev = sys.existing_device(pci)?;
    if sys.iommu_group(pci).is_none() {
        return Err(NicError::NoIommuGroup { pci: pci.into() });
    }
    let previous = sys.driver(pci);
    if previous.as_deref() == Some(VFIO_PCI) {
        return Ok(BindOutcome {
            previous,
            already: true,
            loaded_module: false,
        });
    }
    if !force {
        if let Some(iface) = sys.ifaces(pci).into_iter().find(|i| sys.iface_up(i)) {
            return Err(NicError::InUse {
                pci: pci.into(),
                iface,
            });
        }
    }
    let mut loaded_module = false;
    if !sys.has_vfio_pci() {
        runner.run(&argv(&["modprobe", VFIO_PCI]))?;
        loaded_module = true;
        if !sys.has_vfio_pci() {
            return Err(NicError::NoVfioDriver);
        }
    }
    let state = state_dir.join(pci);
    fs::create_dir_all(state_dir)
        .and_then(|()| fs::write(&state, format!("{}\n", previous.as_deref().unwrap_or(""))))
        .map_err(|source| NicError::Io {
            op: "recording the previous driver in".into(),
            path: state.clone(),
            source,
        })?;
    sys.write(&dev.join("driver_override"), VFIO_PCI)?;
    if let Some(driver) = &previous {
        sys.write(&sys.driver_dir(driver).join("unbind"), pci)?;
    }
    sys.write(&sys.root.join("bus/pci/drivers_probe"), pci)?;
    Ok(BindOutcome {
        previous,
        already: false,
        loaded_module,
    })
}

/// Gives `pci` back to the driver recorded by [`bind_vfio`]: clears
/// `driver_override`, unbinds from vfio-pci, then binds the recorded driver
/// (or lets the kernel probe when none was recorded). Returns that driver.
///
/// # Errors
///
/// [`NicError::NoSuchDevice`], [`NicError::NotBoundToVfio`], and I/O errors.
pub fn unbind_vfio(sys: &Sysfs, state_dir: &Path, pci: &str) -> Result<Option<String>, NicError> {
    let dev = sys.existing_device(pci)?;
    let current = sys.driver(pci);
    if current.as_deref() != Some(VFIO_PCI) {
        return Err(NicError::NotBoundToVfio {
            pci: pci.into(),
            driver: current.unwrap_or_else(|| "none".into()),
        });
    }
    let state = state_dir.join(pci);
    let previous = read_trim(&state).filter(|s| !s.is_empty());
    // An empty write clears the override (the kernel strips the newline).
    sys.write(&dev.join("driver_override"), "\n")?;
    sys.write(&sys.driver_dir(VFIO_PCI).join("unbind"), pci)?;
    match &previous {
        Some(driver) if sys.driver_dir(driver).exists() => {
            sys.write(&sys.driver_dir(driver).join("bind"), pci)?;
        }
        _ => sys.write(&sys.root.join("bus/pci/drivers_probe"), pci)?,
    }
    let _ = fs::remove_file(&state);
    Ok(previous)
}

// ---------------------------------------------------------------- sriov

/// A virtual function, as `weir sriov PF --list` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VfInfo {
    /// Index K (`virtfnK`).
    pub vf: u32,
    /// PCI address.
    pub pci: String,
    /// Bound driver.
    pub driver: Option<String>,
    /// IOMMU group.
    pub iommu_group: Option<String>,
    /// NUMA node.
    pub numa_node: Option<i32>,
    /// MAC set on the PF for this VF.
    pub mac: Option<String>,
    /// VLAN set on the PF for this VF.
    pub vlan: Option<u16>,
    /// Spoof checking.
    pub spoofchk: Option<bool>,
}

fn sriov_counts(sys: &Sysfs, pf: &str) -> Result<(u32, u32), NicError> {
    let dev = sys.existing_device(pf)?;
    let read = |f: &str| read_trim(&dev.join(f)).and_then(|s| s.parse::<u32>().ok());
    let total = read("sriov_totalvfs").ok_or_else(|| NicError::NoSriov { pci: pf.into() })?;
    Ok((read("sriov_numvfs").unwrap_or(0), total))
}

/// Sets the number of VFs of `pf` to `n`. The kernel rejects changing a
/// non-zero count to another non-zero one, so this writes 0 first. Returns
/// the values written, in order.
///
/// # Errors
///
/// [`NicError::NoSuchDevice`], [`NicError::NoSriov`],
/// [`NicError::TooManyVfs`], and I/O errors.
pub fn set_num_vfs(sys: &Sysfs, pf: &str, n: u32) -> Result<Vec<u32>, NicError> {
    let (current, total) = sriov_counts(sys, pf)?;
    if n > total {
        return Err(NicError::TooManyVfs {
            pci: pf.into(),
            total,
            wanted: n,
        });
    }
    let path = sys.device(pf).join("sriov_numvfs");
    let mut writes = Vec::new();
    if current == n {
        return Ok(writes);
    }
    if current != 0 && n != 0 {
        sys.write(&path, "0")?;
        writes.push(0);
    }
    sys.write(&path, &n.to_string())?;
    writes.push(n);
    Ok(writes)
}

/// The PF's first kernel interface, if it has one.
pub fn pf_iface(sys: &Sysfs, pf: &str) -> Option<String> {
    sys.ifaces(pf).into_iter().next()
}

/// The VFs of `pf` (`virtfnK` links). MAC, VLAN and spoof checking come from
/// `ip link show PF_IFACE` when the PF has an interface and `ip` works.
///
/// # Errors
///
/// [`NicError::NoSuchDevice`], [`NicError::NoSriov`].
pub fn list_vfs(sys: &Sysfs, runner: &dyn Runner, pf: &str) -> Result<Vec<VfInfo>, NicError> {
    sriov_counts(sys, pf)?;
    let dev = sys.device(pf);
    let mut vfs: Vec<VfInfo> = dir_names(&dev)
        .into_iter()
        .filter_map(|name| {
            let k: u32 = name.strip_prefix("virtfn")?.parse().ok()?;
            let pci = link_name(&dev.join(&name))?;
            Some(VfInfo {
                vf: k,
                driver: sys.driver(&pci),
                iommu_group: sys.iommu_group(&pci),
                numa_node: sys.numa_node(&pci).filter(|n| *n >= 0),
                pci,
                ..VfInfo::default()
            })
        })
        .collect();
    vfs.sort_by_key(|v| v.vf);
    if let Some(iface) = pf_iface(sys, pf) {
        match runner.run(&argv(&["ip", "link", "show", &iface])) {
            Ok(text) => {
                for (k, set) in parse_ip_link_vfs(&text) {
                    if let Some(vf) = vfs.iter_mut().find(|v| v.vf == k) {
                        vf.mac = set.mac;
                        vf.vlan = set.vlan;
                        vf.spoofchk = set.spoofchk;
                    }
                }
            }
            Err(e) => tracing::warn!("VF settings unavailable: {e}"),
        }
    }
    Ok(vfs)
}

/// Parses the `vf K ...` lines of `ip link show`. Handles both the current
/// format (`vf 0     link/ether MAC brd ..., vlan 10, spoof checking on`)
/// and the older one (`vf 0 MAC MAC, vlan 10, spoof checking on`).
pub fn parse_ip_link_vfs(text: &str) -> Vec<(u32, VfSettings)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("vf") {
            continue;
        }
        let Some(k) = words.next().and_then(|w| w.parse().ok()) else {
            continue;
        };
        let words: Vec<&str> = words.map(|w| w.trim_end_matches(',')).collect();
        let after = |key: &str| {
            words
                .windows(2)
                .find(|w| w[0] == key)
                .map(|w| w[1].to_owned())
        };
        let mac = after("link/ether").or_else(|| after("MAC"));
        let vlan = after("vlan").and_then(|v| v.parse().ok());
        let spoofchk = words
            .windows(3)
            .find(|w| w[0] == "spoof" && w[1] == "checking")
            .map(|w| w[2] == "on");
        out.push((
            k,
            VfSettings {
                mac,
                vlan,
                spoofchk,
            },
        ));
    }
    out
}

/// Settings for one VF.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VfSettings {
    /// MAC address.
    pub mac: Option<String>,
    /// VLAN id (0 removes the tag).
    pub vlan: Option<u16>,
    /// Spoof checking.
    pub spoofchk: Option<bool>,
}

/// Sets VF `vf` of `pf` through `ip link set PF_IFACE vf K ...`. Returns the
/// argv that was run.
///
/// # Errors
///
/// [`NicError::NoSuchVf`], [`NicError::NoPfInterface`],
/// [`NicError::Invalid`] for a bad MAC or VLAN, and the command's failure.
pub fn set_vf(
    sys: &Sysfs,
    runner: &dyn Runner,
    pf: &str,
    vf: u32,
    settings: &VfSettings,
) -> Result<Vec<String>, NicError> {
    let (numvfs, _) = sriov_counts(sys, pf)?;
    if vf >= numvfs {
        return Err(NicError::NoSuchVf {
            pci: pf.into(),
            vf,
            numvfs,
        });
    }
    let iface = pf_iface(sys, pf).ok_or_else(|| NicError::NoPfInterface { pci: pf.into() })?;
    let mut cmd = argv(&["ip", "link", "set", &iface, "vf", &vf.to_string()]);
    if let Some(mac) = &settings.mac {
        if !is_mac(mac) {
            return Err(NicError::Invalid(format!(
                "invalid MAC `{mac}`: expected six hex bytes like 52:54:00:12:34:56"
            )));
        }
        cmd.extend(argv(&["mac", mac]));
    }
    if let Some(vlan) = settings.vlan {
        if vlan > 4094 {
            return Err(NicError::Invalid(format!(
                "invalid VLAN {vlan}: expected 0 (untagged) to 4094"
            )));
        }
        cmd.extend(argv(&["vlan", &vlan.to_string()]));
    }
    if let Some(on) = settings.spoofchk {
        cmd.extend(argv(&["spoofchk", if on { "on" } else { "off" }]));
    }
    if cmd.len() == 6 {
        return Err(NicError::Invalid(
            "nothing to set: give --mac, --vlan or --spoofchk".into(),
        ));
    }
    runner.run(&cmd)?;
    Ok(cmd)
}

fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// A fake sysfs tree for tests (here and in `doctor`).
#[cfg(test)]
pub(crate) mod fake {
    use super::*;
    use std::cell::RefCell;
    use std::os::unix::fs::symlink;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A temporary directory holding `sys/` and `run/`, removed on drop.
    pub struct Tree {
        pub dir: PathBuf,
    }

    impl Tree {
        pub fn new() -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            // Relaxed: only uniqueness matters.
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("weir-sysfs-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(dir.join("sys/bus/pci/devices")).unwrap();
            fs::create_dir_all(dir.join("sys/class/net")).unwrap();
            fs::write(dir.join("sys/bus/pci/drivers_probe"), "").unwrap();
            Tree { dir }
        }

        pub fn sys(&self) -> Sysfs {
            Sysfs::new(self.dir.join("sys"))
        }

        pub fn state_dir(&self) -> PathBuf {
            self.dir.join("run/devbind")
        }

        pub fn path(&self, rel: &str) -> PathBuf {
            self.dir.join("sys").join(rel)
        }

        pub fn write(&self, rel: &str, text: &str) {
            let p = self.path(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        }

        pub fn read(&self, rel: &str) -> String {
            fs::read_to_string(self.path(rel)).unwrap_or_default()
        }

        pub fn driver(&self, name: &str) {
            for f in ["bind", "unbind"] {
                self.write(&format!("bus/pci/drivers/{name}/{f}"), "");
            }
        }

        /// Points `devices/PCI/driver` at `driver` (or removes it), as the
        /// kernel does after a bind or unbind.
        pub fn set_driver(&self, pci: &str, driver: Option<&str>) {
            let link = self.path(&format!("bus/pci/devices/{pci}/driver"));
            let _ = fs::remove_file(&link);
            if let Some(d) = driver {
                self.driver(d);
                symlink(self.path(&format!("bus/pci/drivers/{d}")), link).unwrap();
            }
        }

        /// A PCI function with `id` (`vendor:device`), in IOMMU `group` if any.
        pub fn nic(&self, pci: &str, id: &str, driver: Option<&str>, group: Option<&str>) {
            let dev = format!("bus/pci/devices/{pci}");
            let (v, d) = id.split_once(':').unwrap();
            self.write(&format!("{dev}/vendor"), &format!("0x{v}\n"));
            self.write(&format!("{dev}/device"), &format!("0x{d}\n"));
            self.write(&format!("{dev}/class"), "0x020000\n");
            self.write(&format!("{dev}/numa_node"), "0\n");
            self.write(&format!("{dev}/driver_override"), "(null)\n");
            self.set_driver(pci, driver);
            if let Some(g) = group {
                let gdir = format!("kernel/iommu_groups/{g}");
                fs::create_dir_all(self.path(&format!("{gdir}/devices"))).unwrap();
                symlink(self.path(&gdir), self.path(&format!("{dev}/iommu_group"))).unwrap();
                symlink(self.path(&dev), self.path(&format!("{gdir}/devices/{pci}"))).unwrap();
            }
        }

        /// A kernel interface `iface` on `pci`, up or down.
        pub fn iface(&self, pci: &str, iface: &str, up: bool) {
            fs::create_dir_all(self.path(&format!("bus/pci/devices/{pci}/net/{iface}"))).unwrap();
            let flags = if up { "0x1003\n" } else { "0x1002\n" };
            self.write(&format!("class/net/{iface}/flags"), flags);
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }

    /// Records every command; `modprobe vfio-pci` creates the driver
    /// directory, `ip link show` prints `ip_show`.
    pub struct FakeRunner<'a> {
        pub tree: Option<&'a Tree>,
        pub ip_show: String,
        pub calls: RefCell<Vec<Vec<String>>>,
    }

    impl<'a> FakeRunner<'a> {
        pub fn new(tree: Option<&'a Tree>) -> Self {
            FakeRunner {
                tree,
                ip_show: String::new(),
                calls: RefCell::new(Vec::new()),
            }
        }
    }

    impl Runner for FakeRunner<'_> {
        fn run(&self, argv: &[String]) -> Result<String, NicError> {
            self.calls.borrow_mut().push(argv.to_vec());
            if argv[0] == "modprobe" {
                if let Some(t) = self.tree {
                    t.driver(VFIO_PCI);
                }
            }
            if argv.get(2).map(String::as_str) == Some("show") {
                return Ok(self.ip_show.clone());
            }
            Ok(String::new())
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn weir_supports_exactly_the_pmd_table() {
        for nic in pmd::SUPPORTED_NICS {
            assert!(weir_supports(&format!(
                "{:04x}:{:04x}",
                nic.vendor, nic.device
            )));
        }
        assert!(weir_supports("8086:10d3"));
        assert!(!weir_supports("8086:100e"));
        assert!(!weir_supports("?"));
    }

    use super::fake::*;
    use super::*;

    const NIC: &str = "0000:01:00.0";

    fn tree_with_e1000e(up: bool) -> Tree {
        let t = Tree::new();
        t.nic(NIC, "8086:10d3", Some("e1000e"), Some("7"));
        t.iface(NIC, "enp1s0", up);
        t
    }

    #[test]
    fn bind_then_unbind_restores_previous_driver() {
        let t = tree_with_e1000e(false);
        let sys = t.sys();
        let runner = FakeRunner::new(Some(&t));
        let out = bind_vfio(&sys, &t.state_dir(), &runner, NIC, false).unwrap();
        assert_eq!(out.previous.as_deref(), Some("e1000e"));
        assert!(out.loaded_module);
        assert_eq!(
            *runner.calls.borrow(),
            vec![vec!["modprobe".to_owned(), "vfio-pci".to_owned()]]
        );
        assert_eq!(
            t.read(&format!("bus/pci/devices/{NIC}/driver_override")),
            "vfio-pci"
        );
        assert_eq!(t.read("bus/pci/drivers/e1000e/unbind"), NIC);
        assert_eq!(t.read("bus/pci/drivers_probe"), NIC);
        assert_eq!(
            fs::read_to_string(t.state_dir().join(NIC)).unwrap(),
            "e1000e\n"
        );

        // What the kernel does on drivers_probe with the override set.
        t.set_driver(NIC, Some(VFIO_PCI));
        let again = bind_vfio(&sys, &t.state_dir(), &runner, NIC, false).unwrap();
        assert!(again.already);

        let prev = unbind_vfio(&sys, &t.state_dir(), NIC).unwrap();
        assert_eq!(prev.as_deref(), Some("e1000e"));
        assert_eq!(
            t.read(&format!("bus/pci/devices/{NIC}/driver_override")),
            "\n"
        );
        assert_eq!(t.read("bus/pci/drivers/vfio-pci/unbind"), NIC);
        assert_eq!(t.read("bus/pci/drivers/e1000e/bind"), NIC);
        assert!(!t.state_dir().join(NIC).exists());
    }

    #[test]
    fn unbind_without_record_reprobes() {
        let t = Tree::new();
        t.nic(NIC, "1af4:1041", Some(VFIO_PCI), Some("3"));
        fs::write(t.path("bus/pci/drivers_probe"), "").unwrap();
        assert_eq!(unbind_vfio(&t.sys(), &t.state_dir(), NIC).unwrap(), None);
        assert_eq!(t.read("bus/pci/drivers_probe"), NIC);
    }

    #[test]
    fn virtio_interfaces_count_as_in_use() {
        let t = Tree::new();
        t.nic(NIC, "1af4:1041", Some("virtio-pci"), Some("3"));
        t.driver(VFIO_PCI);
        fs::create_dir_all(t.path(&format!("bus/pci/devices/{NIC}/virtio0/net/eth0"))).unwrap();
        t.write("class/net/eth0/flags", "0x1003\n");
        assert_eq!(t.sys().ifaces(NIC), vec!["eth0"]);
        let runner = FakeRunner::new(Some(&t));
        let err = bind_vfio(&t.sys(), &t.state_dir(), &runner, NIC, false).unwrap_err();
        assert!(
            matches!(err, NicError::InUse { ref iface, .. } if iface == "eth0"),
            "{err}"
        );
    }

    #[test]
    fn unbind_refuses_device_not_on_vfio() {
        let t = tree_with_e1000e(false);
        let err = unbind_vfio(&t.sys(), &t.state_dir(), NIC).unwrap_err();
        assert!(matches!(err, NicError::NotBoundToVfio { .. }), "{err}");
    }

    #[test]
    fn bind_refuses_up_interface_without_force() {
        let t = tree_with_e1000e(true);
        t.driver(VFIO_PCI);
        let runner = FakeRunner::new(Some(&t));
        let err = bind_vfio(&t.sys(), &t.state_dir(), &runner, NIC, false).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("enp1s0") && msg.contains("--force"), "{msg}");
        assert_eq!(t.read("bus/pci/drivers/e1000e/unbind"), "");
        assert!(!t.state_dir().join(NIC).exists());

        bind_vfio(&t.sys(), &t.state_dir(), &runner, NIC, true).unwrap();
        assert_eq!(t.read("bus/pci/drivers/e1000e/unbind"), NIC);
        assert!(runner.calls.borrow().is_empty(), "vfio-pci was loaded");
    }

    #[test]
    fn bind_errors_name_the_fix() {
        let t = Tree::new();
        t.nic(NIC, "8086:10d3", None, None);
        let runner = FakeRunner::new(Some(&t));
        let err = bind_vfio(&t.sys(), &t.state_dir(), &runner, NIC, false).unwrap_err();
        assert!(err.to_string().contains("intel_iommu=on"), "{err}");
        let err = bind_vfio(&t.sys(), &t.state_dir(), &runner, "0000:09:00.0", false).unwrap_err();
        assert!(matches!(err, NicError::NoSuchDevice { .. }), "{err}");
        // modprobe that does not produce the driver.
        let t2 = tree_with_e1000e(false);
        let none = FakeRunner::new(None);
        let err = bind_vfio(&t2.sys(), &t2.state_dir(), &none, NIC, false).unwrap_err();
        assert!(matches!(err, NicError::NoVfioDriver), "{err}");
    }

    #[test]
    fn list_shows_network_functions_only() {
        let t = tree_with_e1000e(false);
        t.nic("0000:02:00.0", "15b3:1017", None, Some("8"));
        t.write("bus/pci/devices/0000:00:1f.0/class", "0x060100\n");
        let nics = list_nics(&t.sys());
        assert_eq!(nics.len(), 2);
        assert_eq!(nics[0].pci, NIC);
        assert_eq!(nics[0].id, "8086:10d3");
        assert_eq!(nics[0].driver.as_deref(), Some("e1000e"));
        assert_eq!(nics[0].iommu_group.as_deref(), Some("7"));
        assert_eq!(nics[0].numa_node, Some(0));
        assert_eq!(nics[0].ifaces, vec!["enp1s0"]);
        assert!(nics[0].weir_driver);
        assert!(!nics[1].weir_driver);
        assert_eq!(nics[1].driver, None);
    }

    const PF: &str = "0000:03:00.0";

    fn sriov_tree(numvfs: u32) -> Tree {
        let t = Tree::new();
        t.nic(PF, "8086:1521", Some("igb"), Some("10"));
        t.iface(PF, "enp3s0f0", true);
        t.write(&format!("bus/pci/devices/{PF}/sriov_totalvfs"), "7\n");
        t.write(
            &format!("bus/pci/devices/{PF}/sriov_numvfs"),
            &format!("{numvfs}\n"),
        );
        for k in 0..numvfs {
            let vf = format!("0000:03:10.{k}");
            t.nic(&vf, "8086:1520", Some("igbvf"), Some(&(20 + k).to_string()));
            std::os::unix::fs::symlink(
                t.path(&format!("bus/pci/devices/{vf}")),
                t.path(&format!("bus/pci/devices/{PF}/virtfn{k}")),
            )
            .unwrap();
        }
        t
    }

    #[test]
    fn changing_vf_count_goes_through_zero() {
        let t = sriov_tree(2);
        assert_eq!(set_num_vfs(&t.sys(), PF, 4).unwrap(), vec![0, 4]);
        assert_eq!(t.read(&format!("bus/pci/devices/{PF}/sriov_numvfs")), "4");
        let t = sriov_tree(0);
        assert_eq!(set_num_vfs(&t.sys(), PF, 3).unwrap(), vec![3]);
        let t = sriov_tree(2);
        assert_eq!(set_num_vfs(&t.sys(), PF, 2).unwrap(), Vec::<u32>::new());
        assert_eq!(set_num_vfs(&t.sys(), PF, 0).unwrap(), vec![0]);
        let err = set_num_vfs(&t.sys(), PF, 8).unwrap_err();
        assert!(
            matches!(err, NicError::TooManyVfs { total: 7, .. }),
            "{err}"
        );
        let err = set_num_vfs(&t.sys(), "0000:03:10.0", 1).unwrap_err();
        assert!(matches!(err, NicError::NoSriov { .. }), "{err}");
    }

    const IP_SHOW: &str = "\
2: enp3s0f0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc mq state UP mode DEFAULT group default qlen 1000
    link/ether a0:36:9f:00:00:01 brd ff:ff:ff:ff:ff:ff
    vf 0     link/ether 52:54:00:00:00:10 brd ff:ff:ff:ff:ff:ff, vlan 100, spoof checking on, link-state auto, trust off
    vf 1 MAC 00:00:00:00:00:00, spoof checking off, link-state auto
";

    #[test]
    fn lists_vfs_with_ip_link_settings() {
        let t = sriov_tree(2);
        let mut runner = FakeRunner::new(Some(&t));
        runner.ip_show = IP_SHOW.into();
        let vfs = list_vfs(&t.sys(), &runner, PF).unwrap();
        assert_eq!(
            *runner.calls.borrow(),
            vec![argv(&["ip", "link", "show", "enp3s0f0"])]
        );
        assert_eq!(vfs.len(), 2);
        assert_eq!(
            vfs[0],
            VfInfo {
                vf: 0,
                pci: "0000:03:10.0".into(),
                driver: Some("igbvf".into()),
                iommu_group: Some("20".into()),
                numa_node: Some(0),
                mac: Some("52:54:00:00:00:10".into()),
                vlan: Some(100),
                spoofchk: Some(true),
            }
        );
        assert_eq!(vfs[1].pci, "0000:03:10.1");
        assert_eq!(vfs[1].mac.as_deref(), Some("00:00:00:00:00:00"));
        assert_eq!(vfs[1].vlan, None);
        assert_eq!(vfs[1].spoofchk, Some(false));
    }

    #[test]
    fn vf_settings_run_ip_link_set() {
        let t = sriov_tree(2);
        let runner = FakeRunner::new(Some(&t));
        let settings = VfSettings {
            mac: Some("52:54:00:aa:bb:cc".into()),
            vlan: Some(10),
            spoofchk: Some(true),
        };
        let cmd = set_vf(&t.sys(), &runner, PF, 1, &settings).unwrap();
        let want = argv(&[
            "ip",
            "link",
            "set",
            "enp3s0f0",
            "vf",
            "1",
            "mac",
            "52:54:00:aa:bb:cc",
            "vlan",
            "10",
            "spoofchk",
            "on",
        ]);
        assert_eq!(cmd, want);
        assert_eq!(*runner.calls.borrow(), vec![want]);

        let err = set_vf(&t.sys(), &runner, PF, 2, &settings).unwrap_err();
        assert!(matches!(err, NicError::NoSuchVf { numvfs: 2, .. }), "{err}");
        let bad = VfSettings {
            mac: Some("52:54:00".into()),
            ..VfSettings::default()
        };
        assert!(matches!(
            set_vf(&t.sys(), &runner, PF, 0, &bad),
            Err(NicError::Invalid(_))
        ));
        assert_eq!(runner.calls.borrow().len(), 1);
    }
}
