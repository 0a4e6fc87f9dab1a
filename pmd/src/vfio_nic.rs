//! Opening a VFIO NIC as weir ports: picks the driver by PCI vendor:device id.
//!
//! Layer: ports. Not on the packet path.

use std::fmt;
use std::sync::Arc;

use dataplane::{Mempool, Port};

use crate::e1000e::{self, E1000ePort};
use crate::pci::Bar;
use crate::vfio::{VfioDevice, VfioError};
use crate::virtio_net::{self, Layout, VirtioNetPort};

/// A VFIO poll-mode driver of this crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VfioDriver {
    /// Intel 82574L ([`crate::e1000e`]): one queue pair.
    E1000e,
    /// virtio-net over modern PCI ([`crate::virtio_net`]): as many queue
    /// pairs as the device offers.
    VirtioNet,
}

impl VfioDriver {
    /// The driver's name in logs and errors.
    pub fn name(self) -> &'static str {
        match self {
            VfioDriver::E1000e => "e1000e",
            VfioDriver::VirtioNet => "virtio-net",
        }
    }

    /// Most queue pairs the driver runs (`None`: what the device offers).
    pub fn max_queues(self) -> Option<u16> {
        match self {
            VfioDriver::E1000e => Some(1),
            VfioDriver::VirtioNet => None,
        }
    }
}

/// A PCI device [`open_vfio`] has a driver for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SupportedNic {
    /// PCI vendor id.
    pub vendor: u16,
    /// PCI device id.
    pub device: u16,
    /// The driver that runs it.
    pub driver: VfioDriver,
    /// What the device is.
    pub description: &'static str,
}

/// Every device [`open_vfio`] has a driver for: the one place support is
/// decided.
pub const SUPPORTED_NICS: &[SupportedNic] = &[
    SupportedNic {
        vendor: e1000e::regs::VENDOR_ID,
        device: e1000e::regs::DEVICE_ID_82574L,
        driver: VfioDriver::E1000e,
        description: "Intel 82574L",
    },
    SupportedNic {
        vendor: virtio_net::defs::VENDOR_ID,
        device: virtio_net::defs::DEVICE_ID_NET_MODERN,
        driver: VfioDriver::VirtioNet,
        description: "virtio 1.x network device, modern PCI",
    },
];

impl SupportedNic {
    /// The entry for `vendor:device`, if weir has a driver for it.
    pub fn lookup(vendor: u16, device: u16) -> Option<&'static SupportedNic> {
        SUPPORTED_NICS
            .iter()
            .find(|n| n.vendor == vendor && n.device == device)
    }

    /// The entry for an id written as sysfs and `lspci -n` do, `8086:10d3`.
    pub fn lookup_id(id: &str) -> Option<&'static SupportedNic> {
        let (vendor, device) = id.trim().split_once(':')?;
        let hex = |s: &str| u16::from_str_radix(s.trim_start_matches("0x"), 16).ok();
        SupportedNic::lookup(hex(vendor)?, hex(device)?)
    }

    /// The entry for the device at `pci` with id `vendor:device`, checked to
    /// run `queues` queue pairs.
    ///
    /// # Errors
    /// [`VfioError::Unsupported`] (its message lists [`SUPPORTED_NICS`]),
    /// [`VfioError::TooManyQueues`].
    pub fn select(
        pci: &str,
        vendor: u16,
        device: u16,
        queues: u16,
    ) -> Result<&'static SupportedNic, VfioError> {
        let nic = SupportedNic::lookup(vendor, device).ok_or_else(|| VfioError::Unsupported {
            pci: pci.into(),
            vendor,
            device,
        })?;
        let max = nic.driver.max_queues().unwrap_or(u16::MAX);
        if queues == 0 || queues > max {
            return Err(VfioError::TooManyQueues {
                driver: nic.driver.name(),
                max,
                wanted: queues,
            });
        }
        Ok(nic)
    }
}

impl fmt::Display for SupportedNic {
    /// `8086:10d3 (Intel 82574L, e1000e)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:04x} ({}, {})",
            self.vendor,
            self.device,
            self.description,
            self.driver.name()
        )
    }
}

/// [`SUPPORTED_NICS`] as one line for messages: entries separated by `, `.
#[derive(Clone, Copy, Debug, Default)]
pub struct SupportedNics;

impl fmt::Display for SupportedNics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, nic) in SUPPORTED_NICS.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{nic}")?;
        }
        Ok(())
    }
}

/// Opens the NIC at PCI address `pci` (e.g. `0000:00:01.0`, bound to vfio-pci)
/// with `queues` queue pairs, its receive rings filled from `pool`. The pool's
/// region is DMA-mapped in the process's VFIO container the first time any
/// device uses it (at [`crate::vfio::POOL_IOVA`] for the first pool).
///
/// The driver is the one [`SUPPORTED_NICS`] names for the device's id.
/// e1000e supports one queue pair; virtio-net as many as the device offers
/// (`MQ`), each returned port being one pair.
///
/// # Errors
/// [`VfioError::Unsupported`] (listing the supported ids) for other devices,
/// [`VfioError::TooManyQueues`], and everything [`VfioDevice::open`] and the
/// drivers report.
pub fn open_vfio(
    pci: &str,
    pool: &'static Mempool,
    queues: u16,
) -> Result<Vec<Box<dyn Port>>, VfioError> {
    let (vendor, device) = crate::vfio::read_pci_id(pci)?;
    let nic = SupportedNic::select(pci, vendor, device, queues)?;
    let dev = Arc::new(VfioDevice::open(pci)?);
    dev.enable_bus_master()?;
    let pool_iova = dev.container().map_pool(pool)?;
    let ports: Vec<Box<dyn Port>> = match nic.driver {
        VfioDriver::E1000e => {
            let bar = Bar::map(&dev, 0)?;
            let ring = dev.container().alloc_dma(e1000e::RING_BYTES)?;
            let p = E1000ePort::new(bar, ring, pool, pool_iova, pci)?;
            tracing::info!(%pci, mac = %p.mac(), "e1000e port up");
            vec![Box::new(p)]
        }
        VfioDriver::VirtioNet => {
            let layout = Layout::from_config(&*dev, pci)?;
            let bar = Arc::new(Bar::map(&dev, layout.bar.into())?);
            let ring = dev.container().alloc_dma(virtio_net::ring_bytes(queues))?;
            let mem = virtio_net::QueueMemory {
                ring,
                pool,
                pool_iova,
            };
            let ports = VirtioNetPort::open(bar, layout, mem, queues, true, pci)?;
            tracing::info!(
                %pci,
                mac = %ports[0].mac(),
                features = format_args!("{:#x}", ports[0].features()),
                queues,
                "virtio-net port up"
            );
            ports
                .into_iter()
                .map(|p| Box::new(p) as Box<dyn Port>)
                .collect()
        }
    };
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_supported_nic_selects_its_driver() {
        let expected = [
            ((0x8086, 0x10d3), VfioDriver::E1000e),
            ((0x1af4, 0x1041), VfioDriver::VirtioNet),
        ];
        assert_eq!(SUPPORTED_NICS.len(), expected.len());
        for ((vendor, device), driver) in expected {
            let nic = SupportedNic::select("0000:00:01.0", vendor, device, 1).unwrap();
            assert_eq!(
                (nic.vendor, nic.device, nic.driver),
                (vendor, device, driver)
            );
            let id = format!("{vendor:04x}:{device:04x}");
            assert_eq!(SupportedNic::lookup_id(&id), Some(nic));
            assert!(nic.to_string().starts_with(&id), "{nic}");
            assert!(nic.to_string().contains(driver.name()), "{nic}");
        }
    }

    #[test]
    fn unknown_ids_are_refused_with_the_table() {
        let e = SupportedNic::select("0000:00:03.0", 0x8086, 0x100e, 1).unwrap_err();
        assert!(matches!(
            e,
            VfioError::Unsupported {
                vendor: 0x8086,
                device: 0x100e,
                ..
            }
        ));
        let msg = e.to_string();
        assert!(msg.contains("0000:00:03.0 is 8086:100e"), "{msg}");
        for nic in SUPPORTED_NICS {
            assert!(msg.contains(&nic.to_string()), "{msg}");
        }
        assert_eq!(
            SupportedNics.to_string(),
            "8086:10d3 (Intel 82574L, e1000e), \
             1af4:1041 (virtio 1.x network device, modern PCI, virtio-net)"
        );
        for id in [
            "8086:100e",
            "1af4:1000",
            "",
            "8086",
            "zz:10d3",
            "8086:10d3:1",
        ] {
            assert_eq!(SupportedNic::lookup_id(id), None, "{id}");
        }
    }

    #[test]
    fn queue_counts_beyond_the_driver_are_refused() {
        let e = SupportedNic::select("0000:00:01.0", 0x8086, 0x10d3, 2).unwrap_err();
        assert!(matches!(
            e,
            VfioError::TooManyQueues {
                driver: "e1000e",
                max: 1,
                wanted: 2
            }
        ));
        let e = SupportedNic::select("0000:00:01.0", 0x1af4, 0x1041, 0).unwrap_err();
        assert!(matches!(e, VfioError::TooManyQueues { wanted: 0, .. }));
        assert!(SupportedNic::select("0000:00:01.0", 0x1af4, 0x1041, 8).is_ok());
    }

    #[test]
    fn missing_device_is_reported_before_anything_is_opened() {
        let pool = Mempool::for_tests(64);
        let e = open_vfio("0000:ff:1f.7", pool, 1).err().unwrap();
        assert!(matches!(e, VfioError::NoDevice { .. }), "{e}");
    }
}
