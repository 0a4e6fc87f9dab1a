//! Opening a VFIO NIC as weir ports: picks the driver by PCI vendor:device id.
//!
//! Layer: ports. Not on the packet path.

use std::sync::Arc;

use dataplane::{Mempool, Port};

use crate::e1000e::{self, E1000ePort};
use crate::pci::Bar;
use crate::vfio::{VfioDevice, VfioError};
use crate::virtio_net::{self, Layout, VirtioNetPort};

/// The devices [`open_vfio`] has drivers for.
pub const SUPPORTED: &str =
    "8086:10d3 (Intel 82574L, e1000e), 1af4:1041 (virtio-net, modern PCI, virtio 1.x)";

/// Opens the NIC at PCI address `pci` (e.g. `0000:00:01.0`, bound to vfio-pci)
/// with `queues` queue pairs, its receive rings filled from `pool`. The pool's
/// region is DMA-mapped in the process's VFIO container the first time any
/// device uses it (at [`crate::vfio::POOL_IOVA`] for the first pool).
///
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
    let driver = match (vendor, device) {
        (e1000e::regs::VENDOR_ID, e1000e::regs::DEVICE_ID_82574L) => "e1000e",
        (virtio_net::defs::VENDOR_ID, virtio_net::defs::DEVICE_ID_NET_MODERN) => "virtio-net",
        _ => {
            return Err(VfioError::Unsupported {
                pci: pci.into(),
                vendor,
                device,
                supported: SUPPORTED,
            })
        }
    };
    if queues == 0 || (driver == "e1000e" && queues > 1) {
        return Err(VfioError::TooManyQueues {
            driver,
            max: 1,
            wanted: queues,
        });
    }
    let dev = Arc::new(VfioDevice::open(pci)?);
    dev.enable_bus_master()?;
    let pool_iova = dev.container().map_pool(pool)?;
    let ports: Vec<Box<dyn Port>> = if driver == "e1000e" {
        let bar = Bar::map(&dev, 0)?;
        let ring = dev.container().alloc_dma(e1000e::RING_BYTES)?;
        let p = E1000ePort::new(bar, ring, pool, pool_iova, pci)?;
        tracing::info!(%pci, mac = %p.mac(), "e1000e port up");
        vec![Box::new(p)]
    } else {
        let layout = Layout::from_config(&*dev, pci)?;
        let bar = Arc::new(Bar::map(&dev, layout.bar.into())?);
        let ring = dev.container().alloc_dma(virtio_net::ring_bytes(queues))?;
        let ports = VirtioNetPort::open(bar, layout, ring, pool, pool_iova, queues, true, pci)?;
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
    };
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_ids_are_refused_with_the_supported_list() {
        let pool = Mempool::for_tests(64);
        for entry in std::fs::read_dir("/sys/bus/pci/devices")
            .into_iter()
            .flatten()
            .flatten()
        {
            let bdf = entry.file_name().to_string_lossy().into_owned();
            let Ok(id) = crate::vfio::read_pci_id(&bdf) else {
                continue;
            };
            if matches!(id, (0x8086, 0x10d3) | (0x1af4, 0x1041)) {
                continue;
            }
            let msg = open_vfio(&bdf, pool, 1).err().unwrap().to_string();
            assert!(msg.contains(&format!("{:04x}:{:04x}", id.0, id.1)), "{msg}");
            assert!(msg.contains(SUPPORTED), "{msg}");
            return;
        }
    }

    #[test]
    fn missing_device_is_reported_before_anything_is_opened() {
        let pool = Mempool::for_tests(64);
        let e = open_vfio("0000:ff:1f.7", pool, 1).err().unwrap();
        assert!(matches!(e, VfioError::NoDevice { .. }), "{e}");
    }
}
