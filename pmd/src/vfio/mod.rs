//! VFIO boundary: container, group and device file descriptors, IOMMU DMA
//! mappings, PCI config space and BAR mappings of a device bound to `vfio-pci`.
//!
//! Layer: ports, OS boundary. Depends on `dataplane` (mempool regions) and on
//! `vfio-bindings` for the kernel's structure layouts. Not on the packet path:
//! everything here runs when a port is opened. It exports safe types; the
//! `unsafe` blocks (ioctls, `mmap`, volatile access to DMA memory) are confined to
//! this module and `dma`, each with a `// SAFETY:` note.
//!
//! # Why not `vfio-ioctls`
//!
//! rust-vmm's `vfio-ioctls` 0.10 can be built without KVM (`default-features =
//! false`, `VfioContainer::new(None)`), so KVM is not the obstacle. It is not used
//! because (a) it pulls `vm-memory` and `vmm-sys-util` in for a handful of
//! ioctls, (b) its region accessors (`region_read`/`region_write`) log and swallow
//! I/O errors instead of returning them, and (c) its open path reports a missing
//! IOMMU group, a device bound to another driver and a non-viable group as the
//! same opaque errors, while a dataplane operator needs to be told which one it is
//! and what to run. The wrappers below are thin: one `ioctl` each, using the
//! structure definitions from `vfio-bindings`.
//!
//! # IOVA layout
//!
//! One type1v2 container per process, shared by every device opened (as DPDK
//! does): all devices see the same IOVA space, so a mempool is mapped once
//! however many NICs use it, and two functions of one NIC that share an IOMMU
//! group share the group fd. The first mempool region is mapped at
//! [`POOL_IOVA`] (later ones above it), so a buffer's bus address is the pool's
//! IOVA plus `Mbuf::data_region_offset()`; descriptor rings live in small
//! anonymous regions mapped from [`RING_IOVA`] upwards.
#![allow(unsafe_code)]

pub mod dma;

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use dataplane::mempool::{HugepageError, Region};
use dataplane::Mempool;
use vfio_bindings::bindings::vfio as sys;

use crate::pci::config::ConfigSpace;
pub use dma::{DmaMem, Iova};

/// IOVA at which a port's mbuf pool is mapped (4 GiB; below the 39-bit address
/// width of common IOMMUs, QEMU's intel-iommu included).
pub const POOL_IOVA: Iova = Iova(1 << 32);

/// IOVA of the first descriptor-ring region; later ones follow at 2 MiB steps.
pub const RING_IOVA: Iova = Iova(1 << 28);

/// Errors opening or setting up a device through VFIO. Each variant says what to
/// do about it.
#[derive(Debug, thiserror::Error)]
pub enum VfioError {
    /// No such PCI device.
    #[error("PCI device {pci} not found in /sys/bus/pci/devices (use the full address, e.g. 0000:00:01.0)")]
    NoDevice {
        /// PCI address as given.
        pci: String,
    },
    /// The device is not behind an IOMMU the kernel manages.
    #[error(
        "{pci} has no IOMMU group: the kernel runs without an IOMMU. Enable VT-d/AMD-Vi in \
         the firmware and boot with intel_iommu=on (or amd_iommu=on); in a VM, give it a \
         vIOMMU (QEMU: -device intel-iommu before the NICs, virtio NICs with \
         iommu_platform=on). weir does not use VFIO no-IOMMU mode"
    )]
    NoIommuGroup {
        /// PCI address.
        pci: String,
    },
    /// The device is bound to another driver, or to none.
    #[error(
        "{pci} is bound to {driver}, not vfio-pci: run `weir devbind {pci}`, or \
         `echo vfio-pci > /sys/bus/pci/devices/{pci}/driver_override`, unbind it from its \
         driver (`echo {pci} > /sys/bus/pci/devices/{pci}/driver/unbind`) and \
         `echo {pci} > /sys/bus/pci/drivers_probe` (modprobe vfio-pci first)"
    )]
    NotBound {
        /// PCI address.
        pci: String,
        /// Current driver, or "no driver".
        driver: String,
    },
    /// `/dev/vfio/vfio` cannot be opened.
    #[error("cannot open /dev/vfio/vfio (modprobe vfio-pci; needs root or access to /dev/vfio)")]
    NoVfio {
        /// OS error.
        #[source]
        source: io::Error,
    },
    /// The group's device node cannot be opened.
    #[error("cannot open {path} (IOMMU group of {pci}; is it already open in another process?)")]
    OpenGroup {
        /// Group node.
        path: PathBuf,
        /// PCI address.
        pci: String,
        /// OS error.
        #[source]
        source: io::Error,
    },
    /// The device is already open in this process (another port drives it).
    #[error(
        "{pci} is already driven by this process (another port uses it); \
         remove that port first"
    )]
    AlreadyOpen {
        /// PCI address.
        pci: String,
    },
    /// Other devices of the group are bound to host drivers.
    #[error(
        "IOMMU group {group} of {pci} is not viable: every device in it must be bound to \
         vfio-pci or to no driver, and these are not: {others}. Bind them to vfio-pci too \
         (`weir devbind`), or move the NIC to a slot with its own group"
    )]
    GroupNotViable {
        /// Group number.
        group: u32,
        /// PCI address.
        pci: String,
        /// `BDF=driver` of the devices bound elsewhere.
        others: String,
    },
    /// The kernel's VFIO API is not the one this code speaks.
    #[error("unsupported VFIO API version {0} (expected {expected})", expected = sys::VFIO_API_VERSION)]
    ApiVersion(i32),
    /// No type1v2 IOMMU backend.
    #[error("the VFIO container offers no type1v2 IOMMU backend (modprobe vfio_iommu_type1)")]
    NoType1,
    /// An ioctl failed.
    #[error("VFIO {op} on {pci} failed")]
    Ioctl {
        /// Which ioctl.
        op: &'static str,
        /// PCI address.
        pci: String,
        /// OS error.
        #[source]
        source: io::Error,
    },
    /// `VFIO_IOMMU_MAP_DMA` hit the locked-memory limit.
    #[error(
        "cannot pin {len_bytes} bytes at IOVA {iova} for DMA: RLIMIT_MEMLOCK is {limit_bytes} \
         bytes. Raise it (`ulimit -l unlimited`, LimitMEMLOCK=infinity in a systemd unit, \
         or run with CAP_IPC_LOCK)"
    )]
    MemlockLimit {
        /// Where the mapping was to go.
        iova: Iova,
        /// Its size.
        len_bytes: usize,
        /// The soft limit in force.
        limit_bytes: u64,
    },
    /// `VFIO_IOMMU_MAP_DMA` failed for another reason.
    #[error("VFIO_IOMMU_MAP_DMA of {len_bytes} bytes at IOVA {iova} failed")]
    MapDma {
        /// Where the mapping was to go.
        iova: Iova,
        /// Its size.
        len_bytes: usize,
        /// OS error.
        #[source]
        source: io::Error,
    },
    /// A BAR cannot be used.
    #[error("BAR{index} of {pci} {why}")]
    Bar {
        /// BAR number.
        index: u32,
        /// PCI address.
        pci: String,
        /// What is wrong.
        why: &'static str,
    },
    /// `mmap` of a BAR failed.
    #[error("mmap of BAR{index} of {pci} failed")]
    MmapBar {
        /// BAR number.
        index: u32,
        /// PCI address.
        pci: String,
        /// OS error.
        #[source]
        source: io::Error,
    },
    /// Reading or writing config space failed.
    #[error("config space access at {offset:#x} on {pci} failed")]
    Config {
        /// Byte offset.
        offset: u64,
        /// PCI address.
        pci: String,
        /// OS error.
        #[source]
        source: io::Error,
    },
    /// Reading sysfs failed.
    #[error("reading {path}")]
    Sysfs {
        /// File.
        path: PathBuf,
        /// OS error.
        #[source]
        source: io::Error,
    },
    /// No driver for this vendor:device id.
    #[error(
        "{pci} is {vendor:04x}:{device:04x}, which weir has no VFIO driver for; supported: {}",
        crate::SupportedNics
    )]
    Unsupported {
        /// PCI address.
        pci: String,
        /// Vendor id.
        vendor: u16,
        /// Device id.
        device: u16,
    },
    /// More queue pairs than the driver supports.
    #[error("{driver} supports {max} queue pair(s); {wanted} requested")]
    TooManyQueues {
        /// Driver name.
        driver: &'static str,
        /// Most supported.
        max: u16,
        /// Asked for.
        wanted: u16,
    },
    /// The pool's buffers are too small for the driver's receive buffers.
    #[error("mempool {pool:?} has {data_room} bytes of data room; the driver needs {need}")]
    PoolTooSmall {
        /// Pool name.
        pool: String,
        /// Data room per buffer.
        data_room: u32,
        /// Required.
        need: u32,
    },
    /// The pool has too few buffers to fill the receive rings.
    #[error("mempool {pool:?} ran out of buffers filling the receive ring ({need} needed)")]
    PoolEmpty {
        /// Pool name.
        pool: String,
        /// Buffers needed.
        need: usize,
    },
    /// Memory for descriptor rings could not be allocated.
    #[error("allocating {len_bytes} bytes of ring memory")]
    RingMemory {
        /// Size.
        len_bytes: usize,
        /// Cause.
        #[source]
        source: HugepageError,
    },
    /// The device did not behave as the driver expects.
    #[error("{pci}: {what}")]
    Device {
        /// PCI address (or "fake" in tests).
        pci: String,
        /// What went wrong.
        what: &'static str,
    },
}

// VFIO ioctl numbers: `_IO(VFIO_TYPE, VFIO_BASE + n)` from <linux/vfio.h>;
// `_IO(t, nr)` is `(t << 8) | nr` (no size or direction bits).
const fn vfio_io(n: u32) -> libc::c_ulong {
    (((sys::VFIO_TYPE as u32) << 8) | (sys::VFIO_BASE + n)) as libc::c_ulong
}
const VFIO_GET_API_VERSION: libc::c_ulong = vfio_io(0);
const VFIO_CHECK_EXTENSION: libc::c_ulong = vfio_io(1);
const VFIO_SET_IOMMU: libc::c_ulong = vfio_io(2);
const VFIO_GROUP_GET_STATUS: libc::c_ulong = vfio_io(3);
const VFIO_GROUP_SET_CONTAINER: libc::c_ulong = vfio_io(4);
const VFIO_GROUP_GET_DEVICE_FD: libc::c_ulong = vfio_io(6);
const VFIO_DEVICE_GET_REGION_INFO: libc::c_ulong = vfio_io(8);
const VFIO_IOMMU_MAP_DMA: libc::c_ulong = vfio_io(13);
const VFIO_IOMMU_UNMAP_DMA: libc::c_ulong = vfio_io(14);

/// Returns the ioctl's non-negative result, or the OS error.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// The process's VFIO container (type1v2 IOMMU backend); owns the IOMMU
/// mappings, which the kernel removes when the last reference closes it.
#[derive(Debug)]
pub struct Container {
    fd: OwnedFd,
    next_ring_iova: AtomicU64,
    /// Groups attached. The IOMMU backend is set when the first one attaches
    /// (it needs a group first); the kernel releases it, with every mapping, when
    /// the last one detaches.
    groups: Mutex<usize>,
    /// Mempool regions mapped so far: (start address, IOVA), and the next IOVA.
    pools: Mutex<(Vec<(usize, Iova)>, Iova)>,
}

/// The shared container, while any device holds it.
static CONTAINER: Mutex<Weak<Container>> = Mutex::new(Weak::new());

/// PCI addresses of the devices open in this process. The kernel lets a group
/// hand out a second fd for a device that is already open; a second driver
/// instance would then reset the NIC under the first one's rings.
static OPEN_DEVICES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// This process's claim on a device, released on drop.
#[derive(Debug)]
struct DeviceClaim(String);

impl DeviceClaim {
    fn new(pci: &str) -> Result<DeviceClaim, VfioError> {
        let mut open = lock(&OPEN_DEVICES);
        if open.iter().any(|p| p == pci) {
            return Err(VfioError::AlreadyOpen { pci: pci.into() });
        }
        open.push(pci.into());
        Ok(DeviceClaim(pci.into()))
    }
}

impl Drop for DeviceClaim {
    fn drop(&mut self) {
        lock(&OPEN_DEVICES).retain(|p| *p != self.0);
    }
}

/// Open groups by number, while any device holds them.
static GROUPS: Mutex<Vec<(u32, Weak<Group>)>> = Mutex::new(Vec::new());

/// An IOMMU group attached to the shared container.
#[derive(Debug)]
struct Group {
    // Field order: the group fd closes (detaching it) before the container ref
    // is released.
    fd: File,
    container: Arc<Container>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves consistent data (every
    // update is a single push or assignment), so poisoning is ignored.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Container {
    /// Maps `len_bytes` at `ptr` for device reads and writes at `iova`.
    ///
    /// # Safety
    /// `ptr..ptr + len_bytes` must be a mapping of this process that stays mapped
    /// until it is unmapped from the IOMMU (or the container is closed): the
    /// device may read and write it at any time until then.
    unsafe fn map_dma(
        &self,
        ptr: NonNull<u8>,
        len_bytes: usize,
        iova: Iova,
    ) -> Result<(), VfioError> {
        let map = sys::vfio_iommu_type1_dma_map {
            argsz: std::mem::size_of::<sys::vfio_iommu_type1_dma_map>() as u32,
            flags: sys::VFIO_DMA_MAP_FLAG_READ | sys::VFIO_DMA_MAP_FLAG_WRITE,
            vaddr: ptr.as_ptr() as u64,
            iova: iova.0,
            size: len_bytes as u64,
        };
        // SAFETY: `map` is a valid, fully initialised vfio_iommu_type1_dma_map that
        // outlives the call; the kernel only reads it. The caller guarantees the
        // memory it describes stays mapped (see `# Safety`).
        let ret = unsafe { libc::ioctl(self.fd.as_raw_fd(), VFIO_IOMMU_MAP_DMA, &map) };
        match check(ret) {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOMEM) => {
                let limit = rustix::process::getrlimit(rustix::process::Resource::Memlock)
                    .current
                    .unwrap_or(u64::MAX);
                if limit == u64::MAX {
                    Err(VfioError::MapDma {
                        iova,
                        len_bytes,
                        source: e,
                    })
                } else {
                    Err(VfioError::MemlockLimit {
                        iova,
                        len_bytes,
                        limit_bytes: limit,
                    })
                }
            }
            Err(e) => Err(VfioError::MapDma {
                iova,
                len_bytes,
                source: e,
            }),
        }
    }

    fn unmap_dma(&self, len_bytes: usize, iova: Iova) {
        if *lock(&self.groups) == 0 {
            // The last group's detach released the IOMMU backend and with it
            // every mapping (a port's device closes before its rings go, so that
            // it stops DMA first); the container has nothing left to unmap.
            return;
        }
        let mut unmap = sys::vfio_iommu_type1_dma_unmap {
            argsz: std::mem::size_of::<sys::vfio_iommu_type1_dma_unmap>() as u32,
            flags: 0,
            iova: iova.0,
            size: len_bytes as u64,
            data: Default::default(),
        };
        // SAFETY: `unmap` is a valid vfio_iommu_type1_dma_unmap (the kernel writes
        // back `size`); removing a mapping cannot affect this process's memory.
        let ret = unsafe { libc::ioctl(self.fd.as_raw_fd(), VFIO_IOMMU_UNMAP_DMA, &mut unmap) };
        if let Err(e) = check(ret) {
            tracing::warn!(%iova, "VFIO_IOMMU_UNMAP_DMA failed: {e}");
        }
    }

    /// Maps the whole region of `pool` for DMA, once per container, and returns
    /// its IOVA ([`POOL_IOVA`] for the first pool; later pools follow at 1 GiB
    /// boundaries). Pools live for the rest of the process, so the mapping is
    /// never removed before the container is closed.
    ///
    /// # Errors
    /// [`VfioError::MemlockLimit`] or [`VfioError::MapDma`].
    pub fn map_pool(&self, pool: &'static Mempool) -> Result<Iova, VfioError> {
        let region: &'static Region = pool.region();
        let start = region.as_ptr().as_ptr() as usize;
        let mut pools = lock(&self.pools);
        if let Some(&(_, iova)) = pools.0.iter().find(|p| p.0 == start) {
            return Ok(iova);
        }
        let iova = pools.1;
        // SAFETY: the region belongs to a `'static` pool, so it is never unmapped
        // while this process runs.
        unsafe { self.map_dma(region.as_ptr(), region.len(), iova)? };
        pools.0.push((start, iova));
        pools.1 = iova.offset((region.len() as u64).div_ceil(1 << 30) << 30);
        Ok(iova)
    }

    /// The process's container, opened (and checked for type1v2 support) on
    /// first use.
    fn shared() -> Result<Arc<Container>, VfioError> {
        let mut slot = lock(&CONTAINER);
        if let Some(c) = slot.upgrade() {
            return Ok(c);
        }
        let file = File::options()
            .read(true)
            .write(true)
            .open("/dev/vfio/vfio")
            .map_err(|source| VfioError::NoVfio { source })?;
        let cfd = file.as_raw_fd();
        let err = |op| {
            move |source| VfioError::Ioctl {
                op,
                pci: "/dev/vfio/vfio".into(),
                source,
            }
        };
        // SAFETY: VFIO_GET_API_VERSION takes no argument and only returns a value.
        let api = check(unsafe { libc::ioctl(cfd, VFIO_GET_API_VERSION) })
            .map_err(err("VFIO_GET_API_VERSION"))?;
        if api != sys::VFIO_API_VERSION as i32 {
            return Err(VfioError::ApiVersion(api));
        }
        // SAFETY: VFIO_CHECK_EXTENSION takes an integer by value and returns one.
        let has_type1v2 = check(unsafe {
            libc::ioctl(
                cfd,
                VFIO_CHECK_EXTENSION,
                sys::VFIO_TYPE1v2_IOMMU as libc::c_ulong,
            )
        })
        .map_err(err("VFIO_CHECK_EXTENSION"))?;
        if has_type1v2 == 0 {
            return Err(VfioError::NoType1);
        }
        let c = Arc::new(Container {
            fd: file.into(),
            next_ring_iova: AtomicU64::new(RING_IOVA.0),
            groups: Mutex::new(0),
            pools: Mutex::new((Vec::new(), POOL_IOVA)),
        });
        *slot = Arc::downgrade(&c);
        Ok(c)
    }

    /// Allocates `len_bytes` of zeroed anonymous memory for descriptor rings and
    /// maps it at the next free IOVA from [`RING_IOVA`]. The mapping is removed
    /// when the last clone of the returned [`DmaMem`] is dropped.
    ///
    /// # Errors
    /// [`VfioError::RingMemory`], [`VfioError::MemlockLimit`], [`VfioError::MapDma`].
    pub fn alloc_dma(self: &Arc<Self>, len_bytes: usize) -> Result<DmaMem, VfioError> {
        let region = Region::anonymous(len_bytes)
            .map_err(|source| VfioError::RingMemory { len_bytes, source })?;
        let step = region.len().div_ceil(2 << 20) as u64 * (2 << 20);
        // Relaxed: only a unique-address allocator, no data is published through it.
        let iova = Iova(self.next_ring_iova.fetch_add(step, Ordering::Relaxed));
        // SAFETY: `DmaMem` owns `region` and unmaps the IOVA range (through its
        // `Arc<Container>`) before the region is dropped; see `DmaMem`'s Drop.
        unsafe { self.map_dma(region.as_ptr(), region.len(), iova)? };
        Ok(DmaMem::mapped(region, iova, Arc::clone(self)))
    }
}

/// A PCI device opened through VFIO: its container, group and device fds.
#[derive(Debug)]
pub struct VfioDevice {
    pci: String,
    // Field order: the device fd closes before the group is released.
    device: File,
    config_offset: u64,
    group: Arc<Group>,
    // Released last, once the device fd is closed.
    _claim: DeviceClaim,
}

fn sysfs_dev(pci: &str) -> PathBuf {
    Path::new("/sys/bus/pci/devices").join(pci)
}

fn link_name(p: &Path) -> Option<String> {
    std::fs::read_link(p)
        .ok()
        .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
}

/// Reads a sysfs hex id file such as `vendor` (`0x8086`).
pub fn read_pci_id(pci: &str) -> Result<(u16, u16), VfioError> {
    let dev = sysfs_dev(pci);
    if !dev.exists() {
        return Err(VfioError::NoDevice { pci: pci.into() });
    }
    let read = |name: &str| -> Result<u16, VfioError> {
        let path = dev.join(name);
        let s = std::fs::read_to_string(&path).map_err(|source| VfioError::Sysfs {
            path: path.clone(),
            source,
        })?;
        u16::from_str_radix(s.trim().trim_start_matches("0x"), 16).map_err(|_| VfioError::Sysfs {
            path,
            source: io::Error::new(io::ErrorKind::InvalidData, "not a hex id"),
        })
    };
    Ok((read("vendor")?, read("device")?))
}

impl Drop for Group {
    fn drop(&mut self) {
        let mut attached = lock(&self.container.groups);
        *attached = attached.saturating_sub(1);
        if *attached == 0 {
            // Closing the fd (after this) detaches the last group: the kernel
            // drops the backend and its mappings, so pools must be mapped again
            // should another group attach to this container.
            let mut pools = lock(&self.container.pools);
            pools.0.clear();
        }
    }
}

impl Group {
    /// The open group `id`, or opens it, checks it is viable and attaches it to
    /// the shared container (setting the IOMMU backend on the first group).
    fn get(id: u32, pci: &str) -> Result<Arc<Group>, VfioError> {
        let mut groups = lock(&GROUPS);
        groups.retain(|g| g.1.strong_count() > 0);
        if let Some(g) = groups
            .iter()
            .find(|g| g.0 == id)
            .and_then(|g| g.1.upgrade())
        {
            return Ok(g);
        }
        let container = Container::shared()?;
        let ioctl_err = |op| {
            let pci = pci.to_string();
            move |source| VfioError::Ioctl { op, pci, source }
        };
        let path = PathBuf::from(format!("/dev/vfio/{id}"));
        let file = File::options()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|source| VfioError::OpenGroup {
                path: path.clone(),
                pci: pci.into(),
                source,
            })?;
        let gfd = file.as_raw_fd();
        let mut status = sys::vfio_group_status {
            argsz: std::mem::size_of::<sys::vfio_group_status>() as u32,
            flags: 0,
        };
        // SAFETY: `status` is a valid vfio_group_status the kernel fills in.
        check(unsafe { libc::ioctl(gfd, VFIO_GROUP_GET_STATUS, &mut status) })
            .map_err(ioctl_err("VFIO_GROUP_GET_STATUS"))?;
        if status.flags & sys::VFIO_GROUP_FLAGS_VIABLE == 0 {
            return Err(VfioError::GroupNotViable {
                group: id,
                pci: pci.into(),
                others: group_members_elsewhere(id),
            });
        }
        let cfd = container.fd.as_raw_fd();
        // SAFETY: VFIO_GROUP_SET_CONTAINER reads an int (the container fd) through
        // the pointer, which is valid for the call.
        check(unsafe { libc::ioctl(gfd, VFIO_GROUP_SET_CONTAINER, &cfd) })
            .map_err(ioctl_err("VFIO_GROUP_SET_CONTAINER"))?;
        let mut attached = lock(&container.groups);
        if *attached == 0 {
            // SAFETY: VFIO_SET_IOMMU takes the backend type by value.
            check(unsafe {
                libc::ioctl(
                    cfd,
                    VFIO_SET_IOMMU,
                    sys::VFIO_TYPE1v2_IOMMU as libc::c_ulong,
                )
            })
            .map_err(ioctl_err("VFIO_SET_IOMMU"))?;
        }
        *attached += 1;
        drop(attached);
        let g = Arc::new(Group {
            fd: file,
            container,
        });
        groups.push((id, Arc::downgrade(&g)));
        Ok(g)
    }
}

impl VfioDevice {
    /// Opens `pci` (e.g. `0000:00:01.0`), which must be bound to `vfio-pci`,
    /// attaching its IOMMU group to the process's type1v2 container.
    ///
    /// # Errors
    /// See [`VfioError`]: each precondition (IOMMU group, binding, viability,
    /// VFIO modules) has its own variant telling what to do.
    pub fn open(pci: &str) -> Result<VfioDevice, VfioError> {
        let dev = sysfs_dev(pci);
        if !dev.exists() {
            return Err(VfioError::NoDevice { pci: pci.into() });
        }
        let group_id: u32 = link_name(&dev.join("iommu_group"))
            .and_then(|g| g.parse().ok())
            .ok_or_else(|| VfioError::NoIommuGroup { pci: pci.into() })?;
        let driver = link_name(&dev.join("driver"));
        if driver.as_deref() != Some("vfio-pci") {
            return Err(VfioError::NotBound {
                pci: pci.into(),
                driver: driver.unwrap_or_else(|| "no driver".into()),
            });
        }
        let claim = DeviceClaim::new(pci)?;
        let group = Group::get(group_id, pci)?;
        let name =
            std::ffi::CString::new(pci).map_err(|_| VfioError::NoDevice { pci: pci.into() })?;
        // SAFETY: VFIO_GROUP_GET_DEVICE_FD reads a NUL-terminated string that lives
        // for the call, and returns a new fd.
        let dfd = check(unsafe {
            libc::ioctl(
                group.fd.as_raw_fd(),
                VFIO_GROUP_GET_DEVICE_FD,
                name.as_ptr(),
            )
        })
        .map_err(|source| VfioError::Ioctl {
            op: "VFIO_GROUP_GET_DEVICE_FD",
            pci: pci.into(),
            source,
        })?;
        // SAFETY: `dfd` is a fresh fd returned by the kernel that nothing else owns.
        let device = unsafe { File::from_raw_fd(dfd) };
        let mut dev = VfioDevice {
            pci: pci.into(),
            device,
            config_offset: 0,
            group,
            _claim: claim,
        };
        dev.config_offset = dev.region_info(sys::VFIO_PCI_CONFIG_REGION_INDEX)?.offset;
        Ok(dev)
    }

    /// The container (IOMMU mappings) of this device: the process's one.
    pub fn container(&self) -> &Arc<Container> {
        &self.group.container
    }

    /// PCI address.
    pub fn pci(&self) -> &str {
        &self.pci
    }

    fn region_info(&self, index: u32) -> Result<sys::vfio_region_info, VfioError> {
        let mut info = sys::vfio_region_info {
            argsz: std::mem::size_of::<sys::vfio_region_info>() as u32,
            index,
            ..Default::default()
        };
        // SAFETY: `info` is a valid vfio_region_info of the size given in argsz;
        // the kernel fills it in and writes nothing beyond argsz.
        check(unsafe {
            libc::ioctl(
                self.device.as_raw_fd(),
                VFIO_DEVICE_GET_REGION_INFO,
                &mut info,
            )
        })
        .map_err(|source| VfioError::Ioctl {
            op: "VFIO_DEVICE_GET_REGION_INFO",
            pci: self.pci.clone(),
            source,
        })?;
        Ok(info)
    }

    /// Turns on memory-space decoding and bus mastering (PCI command register), so
    /// the BARs respond and the device may DMA.
    ///
    /// # Errors
    /// [`VfioError::Config`].
    pub fn enable_bus_master(&self) -> Result<(), VfioError> {
        // PCI Local Bus 3.0 §6.2.2: Command register at 0x04; bit 1 memory space,
        // bit 2 bus master.
        let cmd = self.try_read(0x04, 2)? as u16;
        self.try_write(0x04, &(cmd | 0x0006).to_le_bytes())
    }

    fn try_read(&self, offset: u16, width: usize) -> Result<u32, VfioError> {
        let mut b = [0u8; 4];
        self.device
            .read_exact_at(&mut b[..width], self.config_offset + u64::from(offset))
            .map_err(|source| VfioError::Config {
                offset: offset.into(),
                pci: self.pci.clone(),
                source,
            })?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_write(&self, offset: u16, bytes: &[u8]) -> Result<(), VfioError> {
        self.device
            .write_all_at(bytes, self.config_offset + u64::from(offset))
            .map_err(|source| VfioError::Config {
                offset: offset.into(),
                pci: self.pci.clone(),
                source,
            })
    }

    /// Maps BAR `index` (0..=5) of the device.
    ///
    /// # Errors
    /// [`VfioError::Bar`] if the BAR is absent or cannot be mmap'd (an I/O port
    /// BAR), [`VfioError::MmapBar`] if `mmap` fails.
    pub fn map_bar(&self, index: u32) -> Result<MmioRegion, VfioError> {
        let bar_err = |why| VfioError::Bar {
            index,
            pci: self.pci.clone(),
            why,
        };
        if index > sys::VFIO_PCI_BAR5_REGION_INDEX {
            return Err(bar_err("does not exist"));
        }
        let info = self.region_info(index)?;
        if info.size == 0 {
            return Err(bar_err("is not implemented by the device"));
        }
        if info.flags & sys::VFIO_REGION_INFO_FLAG_MMAP == 0 {
            return Err(bar_err("cannot be mmap'd (I/O port BAR?)"));
        }
        let len = info.size as usize;
        // SAFETY: a new shared mapping of the device fd at the region's offset, of
        // the size the kernel reported, at an address of the kernel's choosing; it
        // aliases no Rust object. `MmioRegion` unmaps it on drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.device.as_raw_fd(),
                info.offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(VfioError::MmapBar {
                index,
                pci: self.pci.clone(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(MmioRegion {
            ptr: NonNull::new(ptr.cast()).ok_or_else(|| bar_err("mapped at address 0"))?,
            len,
        })
    }
}

impl ConfigSpace for VfioDevice {
    fn read_config(&self, offset: u16, width: usize) -> Option<u32> {
        self.try_read(offset, width).ok()
    }
}

/// `BDF=driver` for every device of `group` bound to a driver other than
/// vfio-pci (for the not-viable error).
fn group_members_elsewhere(group: u32) -> String {
    let dir = PathBuf::from(format!("/sys/kernel/iommu_groups/{group}/devices"));
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            let bdf = e.file_name().to_string_lossy().into_owned();
            if let Some(drv) = link_name(&sysfs_dev(&bdf).join("driver")) {
                if drv != "vfio-pci" {
                    out.push(format!("{bdf}={drv}"));
                }
            }
        }
    }
    if out.is_empty() {
        "(none found in sysfs)".into()
    } else {
        out.join(", ")
    }
}

/// A BAR mapped into this process with `mmap`, unmapped on drop.
///
/// Invariant: `ptr` maps `len` bytes of device MMIO, readable and writable, for as
/// long as the value lives.
#[derive(Debug)]
pub struct MmioRegion {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned exclusively by this value; MMIO registers may be
// accessed from any thread (the device does not care which CPU writes).
unsafe impl Send for MmioRegion {}
// SAFETY: `&MmioRegion` only hands out the address; all accesses go through
// volatile reads/writes in `pci::bar`, which are valid from several threads.
unsafe impl Sync for MmioRegion {}

impl MmioRegion {
    /// Start of the mapping.
    pub fn as_ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: a BAR of size 0 is refused by `map_bar`.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for MmioRegion {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in `map_bar`; no reference into it
        // outlives `self` (accessors copy values out).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_is_claimed_once_until_released() {
        let first = DeviceClaim::new("0000:fe:1f.7").unwrap();
        let e = DeviceClaim::new("0000:fe:1f.7").unwrap_err();
        assert!(matches!(e, VfioError::AlreadyOpen { .. }), "{e}");
        assert!(e.to_string().contains("another port uses it"), "{e}");
        let other = DeviceClaim::new("0000:fe:1f.6").unwrap();
        drop(first);
        let again = DeviceClaim::new("0000:fe:1f.7").unwrap();
        drop((again, other));
        assert!(!lock(&OPEN_DEVICES)
            .iter()
            .any(|p| p.starts_with("0000:fe:1f")));
    }

    #[test]
    fn missing_device_is_named_with_the_address_format() {
        let e = VfioDevice::open("0000:ff:1f.7").unwrap_err();
        assert!(matches!(e, VfioError::NoDevice { .. }), "{e}");
        assert!(e.to_string().contains("0000:00:01.0"));
    }

    #[test]
    fn devices_not_bound_to_vfio_pci_are_refused_with_what_to_do() {
        // Whatever this host has: each device is either outside any IOMMU group
        // or bound elsewhere, and the error says how to fix it.
        for entry in std::fs::read_dir("/sys/bus/pci/devices")
            .into_iter()
            .flatten()
            .flatten()
        {
            let bdf = entry.file_name().to_string_lossy().into_owned();
            if link_name(&entry.path().join("driver")).as_deref() == Some("vfio-pci") {
                continue;
            }
            let msg = VfioDevice::open(&bdf).unwrap_err().to_string();
            assert!(
                msg.contains("intel_iommu=on") || msg.contains("weir devbind"),
                "{bdf}: {msg}"
            );
        }
    }

    #[test]
    fn operator_errors_say_what_to_run() {
        let e = VfioError::GroupNotViable {
            group: 7,
            pci: "0000:00:01.0".into(),
            others: "0000:00:01.1=snd_hda_intel".into(),
        };
        assert!(e.to_string().contains("0000:00:01.1=snd_hda_intel"));
        let e = VfioError::MemlockLimit {
            iova: POOL_IOVA,
            len_bytes: 1 << 20,
            limit_bytes: 65536,
        };
        assert!(e.to_string().contains("ulimit -l"), "{e}");
        assert!(e.to_string().contains("0x100000000"), "{e}");
    }

    #[test]
    fn ioctl_numbers_match_linux_vfio_h() {
        // _IO(';', 100 + n): values as in <linux/vfio.h>.
        assert_eq!(VFIO_GET_API_VERSION, 0x3b64);
        assert_eq!(VFIO_GROUP_GET_DEVICE_FD, 0x3b6a);
        assert_eq!(VFIO_IOMMU_MAP_DMA, 0x3b71);
        assert_eq!(VFIO_IOMMU_UNMAP_DMA, 0x3b72);
    }
}
