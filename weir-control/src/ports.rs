//! Builds port queues from a [`PortConfig`]: the one place that knows every driver.
//!
//! Control path only. Each driver returns one [`Port`] value per queue; the daemon
//! hands them to workers.

use dataplane::switch::rxfilter::GuestRxMode;
use dataplane::{Mempool, Port};

use weir_config::{PortConfig, PortKind, VhostMode};

/// A port could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("port {port}")]
pub struct OpenError {
    /// The port.
    pub port: String,
    /// What failed.
    #[source]
    pub source: DriverError,
}

/// What a driver reported when a port was opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// A pcap port asked for more than one queue.
    #[error("pcap ports have exactly one queue")]
    PcapQueues,
    /// The pcap files could not be opened or read.
    #[error(transparent)]
    Pcap(#[from] pmd::pcap::PcapError),
    /// The AF_PACKET sockets could not be opened.
    #[error(transparent)]
    AfPacket(#[from] pmd::AfPacketError),
    /// The TAP interface could not be created.
    #[error(transparent)]
    Tap(#[from] pmd::TapError),
    /// One AF_XDP queue could not be opened.
    #[error("queue {queue}")]
    AfXdp {
        /// The queue.
        queue: usize,
        /// Why.
        #[source]
        source: pmd::afxdp::AfXdpError,
    },
    /// The vhost-user device could not be created.
    #[error(transparent)]
    VhostUser(#[from] vhost_user::VhostUserError),
    /// `socket_group` names no group.
    #[error("no group named {0}")]
    NoSuchGroup(String),
    /// `/etc/group` could not be read.
    #[error("reading /etc/group")]
    ReadGroups(#[source] std::io::Error),
    /// The VFIO device could not be opened.
    #[error(transparent)]
    Vfio(#[from] pmd::VfioError),
    /// DPDK could not start or open the device.
    #[cfg(feature = "dpdk")]
    #[error(transparent)]
    Dpdk(#[from] pmd::dpdk::DpdkError),
    /// A tunnel or patch port asked of a driver (the runtime opens them).
    #[error("tunnel and patch ports are opened by the runtime, not by a driver")]
    TunnelPort,
    /// A `dpdk` port on a build without DPDK.
    #[error("this weir was built without the dpdk feature: cargo build --features dpdk")]
    NoDpdk,
}

/// What [`open_vhost_user`] makes a device of.
struct VhostPort<'a> {
    socket: &'a std::path::Path,
    mode: VhostMode,
    queues: u16,
    mac: Option<[u8; 6]>,
    mtu: Option<u16>,
    owner: vhost_user::SocketOwner,
}

/// Port-level state a driver keeps beside its queues (a vhost-user device
/// and its control thread): kept alive as long as the port exists, dropped
/// after its queues are gone, and asked for the port's error state and MTU.
pub trait PortDevice: Send {
    /// A port-level error (None = healthy).
    fn health(&self) -> Option<String> {
        None
    }

    /// The MTU the port's peer set, if any (a vhost-user frontend's
    /// NET_SET_MTU).
    fn mtu(&self) -> Option<u16> {
        None
    }

    /// The MTU the port offers its peer (a vhost-user device's
    /// VIRTIO_NET_F_MTU `mtu`), if it offers one.
    fn offered_mtu(&self) -> Option<u16> {
        None
    }

    /// Features the port's peer negotiated, by name (a vhost-user guest's
    /// acked virtio features); empty if the port type has none.
    fn features(&self) -> Vec<&'static str> {
        Vec::new()
    }

    /// Frontend connects, disconnects and control-side errors, for devices
    /// with a peer that comes and goes (vhost-user); None for others.
    fn connection_events(&self) -> Option<vhost_user::ConnectionEvents> {
        None
    }

    /// Buffers of the TSO pool the port holds now (its share's use), for
    /// ports charged to a share (vhost-user); None for others.
    fn tso_buffers_held(&self) -> Option<u32> {
        None
    }

    /// For a port whose peer sets receive filters (a vhost-user guest):
    /// a generation that changes with them, and what the peer set (None:
    /// nothing yet). None for other ports, which are never filtered.
    fn rx_mode(&self) -> Option<(u64, Option<GuestRxMode>)> {
        None
    }
}

impl PortDevice for vhost_user::VhostUserDevice {
    fn health(&self) -> Option<String> {
        self.error()
    }

    fn mtu(&self) -> Option<u16> {
        vhost_user::VhostUserDevice::mtu(self)
    }

    fn offered_mtu(&self) -> Option<u16> {
        vhost_user::VhostUserDevice::offered_mtu(self)
    }

    fn features(&self) -> Vec<&'static str> {
        vhost_user::VhostUserDevice::features(self)
    }

    fn connection_events(&self) -> Option<vhost_user::ConnectionEvents> {
        Some(self.events())
    }

    fn tso_buffers_held(&self) -> Option<u32> {
        vhost_user::VhostUserDevice::tso_buffers_held(self)
    }

    fn rx_mode(&self) -> Option<(u64, Option<GuestRxMode>)> {
        Some(vhost_user::VhostUserDevice::rx_mode(self))
    }
}

/// A port's queues plus the device that must live as long as the port.
pub struct OpenedPort {
    /// One value per queue.
    pub queues: Vec<Box<dyn Port>>,
    /// Port-level state, if the driver has any.
    pub device: Option<Box<dyn PortDevice>>,
}

impl OpenedPort {
    /// Queues without port-level state.
    pub fn plain(queues: Vec<Box<dyn Port>>) -> OpenedPort {
        OpenedPort {
            queues,
            device: None,
        }
    }
}

/// Opens ports for the runtime: the drivers ([`DriverFactory`]), or scripted
/// ports in tests.
pub trait PortFactory: Send + Sync {
    /// Opens every queue of `port`, receiving into `pool` (and TSO frames into
    /// `tso_pool`, if given). `guest_mtu` caps the MTU a vhost-user port
    /// offers its guest (the bridge's tunnels' limit).
    ///
    /// # Errors
    /// Whatever opening the port reports.
    fn open(
        &self,
        port: &PortConfig,
        pool: &'static Mempool,
        tso_pool: Option<&'static Mempool>,
        guest_mtu: Option<u16>,
    ) -> Result<OpenedPort, OpenError>;
}

/// Opens ports through the drivers (`pmd`, `vhost-user`).
pub struct DriverFactory {
    /// `[dpdk] eal_args`, for the first `dpdk` port.
    pub eal_args: Vec<String>,
}

impl PortFactory for DriverFactory {
    fn open(
        &self,
        port: &PortConfig,
        pool: &'static Mempool,
        tso_pool: Option<&'static Mempool>,
        guest_mtu: Option<u16>,
    ) -> Result<OpenedPort, OpenError> {
        open(port, pool, tso_pool, guest_mtu, &self.eal_args).map_err(|source| OpenError {
            port: port.name.clone(),
            source,
        })
    }
}

fn boxed<P: Port + 'static>(v: Vec<P>) -> Vec<Box<dyn Port>> {
    v.into_iter()
        .map(|p| Box::new(p) as Box<dyn Port>)
        .collect()
}

/// Opens every queue of the port described by `port`.
///
/// # Errors
/// Whatever the driver reports (missing interface, permission, bad file).
///
/// `guest_mtu` caps the MTU a vhost-user port offers its guest
/// ([`vhost_user::VhostUserConfig::mtu`]); other types ignore it.
/// `eal_args` are the `[dpdk]` EAL arguments, used by the first `dpdk` port (the
/// EAL is initialised once per process).
pub fn open(
    port: &PortConfig,
    pool: &'static Mempool,
    tso_pool: Option<&'static Mempool>,
    guest_mtu: Option<u16>,
    eal_args: &[String],
) -> Result<OpenedPort, DriverError> {
    let n = usize::from(port.queue_count());
    let name = &port.name;
    let opened = match &port.kind {
        PortKind::Ring => OpenedPort::plain(
            (0..n)
                .map(|_| Box::new(pmd::memport::NullPort::new()) as Box<dyn Port>)
                .collect(),
        ),
        PortKind::Pcap {
            rx_path,
            tx_path,
            max_bytes,
        } => {
            if n != 1 {
                return Err(DriverError::PcapQueues);
            }
            let port = pmd::pcap::PcapPort::open(
                rx_path.as_deref(),
                tx_path.as_deref(),
                pool,
                pmd::pcap::PcapConfig {
                    max_tx_file_bytes: *max_bytes,
                    ..pmd::pcap::PcapConfig::default()
                },
            )?;
            OpenedPort::plain(vec![Box::new(port)])
        }
        PortKind::AfPacket { iface } => {
            let cfg = pmd::afpacket::AfPacketConfig::default();
            let qs =
                pmd::afpacket::AfPacketPort::open_queues_with_tso(iface, n, pool, tso_pool, &cfg)?;
            OpenedPort::plain(boxed(qs))
        }
        PortKind::Tap { iface } => {
            let qs = pmd::tap::TapPort::create_queues_with_tso(iface, n, pool, tso_pool)?;
            OpenedPort::plain(boxed(qs))
        }
        PortKind::AfXdp { iface } => {
            let mut qs = Vec::with_capacity(n);
            for q in 0..n {
                let cfg = pmd::afxdp::AfXdpConfig {
                    queue_id: q as u32,
                    ..Default::default()
                };
                qs.push(
                    pmd::afxdp::AfXdpPort::open(iface, pool, &cfg)
                        .map_err(|source| DriverError::AfXdp { queue: q, source })?,
                );
            }
            OpenedPort::plain(boxed(qs))
        }
        PortKind::VhostUser {
            socket,
            mode,
            socket_mode,
            socket_group,
        } => {
            let owner = socket_owner(*socket_mode, socket_group.as_deref())?;
            let mac = port.settings.mac.map(|m| m.0);
            let v = VhostPort {
                socket,
                mode: *mode,
                queues: n as u16,
                mac,
                mtu: guest_mtu,
                owner,
            };
            open_vhost_user(name, &v, pool, tso_pool)?
        }
        PortKind::Vfio { pci } => {
            // sysfs and VFIO name the function in its canonical form.
            let queues = pmd::open_vfio(&pci.to_string(), pool, n as u16)?;
            OpenedPort::plain(queues)
        }
        #[cfg(feature = "dpdk")]
        PortKind::Dpdk { devargs } => {
            pmd::dpdk::eal_init(eal_args)?;
            let qs = pmd::dpdk::DpdkPort::open(devargs, n as u16, pool)?;
            OpenedPort::plain(boxed(qs))
        }
        #[cfg(not(feature = "dpdk"))]
        PortKind::Dpdk { .. } => {
            let _ = eal_args;
            return Err(DriverError::NoDpdk);
        }
        // The runtime builds a tunnel's queue itself: it shares state with
        // the underlay port (runtime/overlay.rs).
        PortKind::Tunnel(_) | PortKind::Patch { .. } => return Err(DriverError::TunnelPort),
    };
    Ok(opened)
}

/// Creates a vhost-user device for `v.socket`; the device stays with the port.
/// With `v.mac`, the device offers it (VIRTIO_NET_F_MAC) to frontends that
/// read its config space.
/// With `v.mtu`, the MTU it offers (and accepts from the frontend) is capped.
fn open_vhost_user(
    name: &str,
    v: &VhostPort<'_>,
    pool: &'static Mempool,
    tso_pool: Option<&'static Mempool>,
) -> Result<OpenedPort, DriverError> {
    let mode = match v.mode {
        VhostMode::Server => vhost_user::Mode::Server,
        VhostMode::Client => vhost_user::Mode::Client,
    };
    let cfg = vhost_user::VhostUserConfig {
        socket: v.socket.to_owned(),
        mode,
        queues: v.queues,
        mac: v.mac,
        mtu: v.mtu,
    };
    let mut dev = vhost_user::create_with_owner(name, &cfg, pool, tso_pool, v.owner)?;
    let queues = boxed(dev.take_queues());
    Ok(OpenedPort {
        queues,
        device: Some(Box::new(dev)),
    })
}

/// The mode and group a server socket is created with: `socket_mode`
/// (default 0600, the daemon's user only) and `socket_group`. They are set
/// before the socket appears at its path, never by path afterwards.
fn socket_owner(
    socket_mode: Option<u32>,
    socket_group: Option<&str>,
) -> Result<vhost_user::SocketOwner, DriverError> {
    let mut owner = vhost_user::SocketOwner::default();
    if let Some(bits) = socket_mode {
        owner.mode = bits;
    }
    if let Some(group) = socket_group {
        owner.gid = Some(resolve_group(group)?);
    }
    Ok(owner)
}

/// A group name or number to a gid, from `/etc/group`.
pub(crate) fn resolve_group(group: &str) -> Result<u32, DriverError> {
    if let Ok(gid) = group.parse() {
        return Ok(gid);
    }
    let text = std::fs::read_to_string("/etc/group").map_err(DriverError::ReadGroups)?;
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            Some((f.next()?, f.nth(1)?))
        })
        .find(|(name, _)| *name == group)
        .and_then(|(_, gid)| gid.parse().ok())
        .ok_or_else(|| DriverError::NoSuchGroup(group.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dpdk_port(devargs: &str) -> PortConfig {
        PortConfig {
            name: "nic0".into(),
            bridge: None,
            queues: None,
            kind: PortKind::Dpdk {
                devargs: devargs.to_owned(),
            },
            written: weir_config::PortSpec {
                devargs: Some(devargs.to_owned()),
                ..weir_config::PortSpec::new("nic0", weir_config::PortType::Dpdk)
            },
            host: None,
            settings: Default::default(),
            policy: Default::default(),
        }
    }

    /// A vhost-user port with `mac` offers it (VIRTIO_NET_F_MAC and the
    /// config space's first six bytes); one without offers none.
    #[test]
    fn a_vhost_user_port_offers_its_mac_to_the_frontend() {
        use vhost_user::defs::F_MAC;
        use vhost_user::testguest::{spec, RawFrontend};
        const GET_CONFIG: u32 = 24;
        const PROTOCOL_CONFIG: u64 = 1 << 9;
        let pool = Mempool::for_tests(256);
        let dir = std::env::temp_dir().join(format!("weir-mac-offer-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mac = weir_config::MacAddr([0x02, 0, 0, 0, 0, 5]);
        for (i, offer) in [Some(mac), None].into_iter().enumerate() {
            let socket = dir.join(format!("vm{i}.sock"));
            let mut spec = weir_config::PortSpec::new("vm", weir_config::PortType::VhostUser);
            spec.socket = Some(socket.clone());
            spec.mac = offer;
            let host = weir_config::Host {
                sysfs: "/nonexistent".into(),
                check_ifaces: false,
            };
            let port = spec.validate(&host).unwrap();
            let opened = open(&port, pool, None, None, &[]).unwrap();
            let mut fe = RawFrontend::connect(&socket).unwrap();
            fe.send(spec::SET_OWNER, 0, &[], &[]).unwrap();
            let features = fe.get_u64(spec::GET_FEATURES).unwrap();
            assert_eq!(features & F_MAC != 0, offer.is_some(), "{features:#x}");
            let protocol = fe.get_u64(spec::GET_PROTOCOL_FEATURES).unwrap();
            assert_ne!(protocol & PROTOCOL_CONFIG, 0, "{protocol:#x}");
            fe.send(
                spec::SET_PROTOCOL_FEATURES,
                0,
                &PROTOCOL_CONFIG.to_le_bytes(),
                &[],
            )
            .unwrap();
            // offset 0, size 6, flags 0, then the 6 bytes asked for.
            let mut ask = [0u8; 18];
            ask[4..8].copy_from_slice(&6u32.to_le_bytes());
            fe.send(GET_CONFIG, 0, &ask, &[]).unwrap();
            let (request, reply) = fe.reply().unwrap();
            assert_eq!((request, reply.len()), (GET_CONFIG, 18));
            assert_eq!(reply[12..], offer.map_or([0; 6], |m| m.0));
            drop(fe);
            drop(opened);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(not(feature = "dpdk"))]
    #[test]
    fn dpdk_port_without_the_feature_says_how_to_build() {
        let pool = Mempool::for_tests(8);
        let err = open(&dpdk_port("net_null0"), pool, None, None, &[])
            .err()
            .expect("dpdk port must fail without the feature");
        let msg = err.to_string();
        assert!(
            msg.contains("built without the dpdk feature: cargo build --features dpdk"),
            "{msg}"
        );
    }

    /// `net_null` hands out a full burst of `size`-byte frames on every receive
    /// and discards whatever it transmits.
    #[cfg(feature = "dpdk")]
    #[test]
    fn dpdk_port_opens_through_the_factory() {
        let pool = Mempool::for_tests(256);
        let eal: Vec<String> = ["--no-huge", "-m", "256", "--no-pci"]
            .map(String::from)
            .to_vec();
        let mut spec = dpdk_port("net_null0,size=64");
        spec.queues = Some(2);
        let mut opened = open(&spec, pool, None, None, &eal).expect("open net_null0");
        assert_eq!(opened.queues.len(), 2);
        let mut burst = dataplane::Burst::new();
        assert!(opened.queues[0].rx_burst(&mut burst) > 0);
        assert!(burst.iter().all(|m| m.len() == 64));
        let n = burst.len();
        assert_eq!(opened.queues[1].tx_burst(&mut burst), n);
    }
}
