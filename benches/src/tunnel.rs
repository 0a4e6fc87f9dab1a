//! VXLAN encapsulation and decapsulation per frame, for the `vxlan-encap` and
//! `vxlan-decap` cases of `switch-insns` (`benches/callgrind.sh`).
//!
//! A [`TunnelRig`] holds one burst of [`BURST`] mbufs and runs the wire
//! layer's per-frame tunnel work on each, in place:
//!
//! - [`TunnelCase::Encap`]: each mbuf holds a 64-byte inner frame (IPv4/TCP,
//!   one of `flows` TCP source ports). Counted: [`source_port`] over the
//!   inner frame, then [`OuterHeader::encap`] (prepend the prebuilt 50 bytes,
//!   fill lengths, checksum, source port, VNI). What a tunnel port's
//!   `tx_burst` does per frame before the handoff; the MTU check and the
//!   choice of remote are not included.
//! - [`TunnelCase::Decap`]: each mbuf holds a prebuilt 114-byte VXLAN packet
//!   (50 + 64). Counted: [`parse_outer`] (IPv4 header checksum included),
//!   the tunnel's UDP port and local address compared, [`vxlan_vni`] and
//!   its VNI compared, trimming anything past the UDP payload and
//!   [`Mbuf::adj`] to the inner frame: what a tunnel port does per frame it
//!   receives. The table lookups of the VNI and the remote are not included
//!   (one VNI compare stands in for the first).
//!
//! To reuse the buffers, [`unwind`] then undoes what the step did to the
//! burst (strips the outer headers again, or puts them back in front: the
//! bytes are still in the headroom). It runs once per burst, out of line
//! under its own name, so that `callgrind.sh` subtracts it from the `switch`
//! column, as it does the switch cases' `recycle`: `step` is everything,
//! `switch` the tunnel work and the loop over the burst.

use std::net::Ipv4Addr;

use dataplane::ids::MacAddr;
use dataplane::wire::tunnel::{
    parse_outer, source_port, vxlan_vni, OuterHeader, TunnelKind, OUTER_LEN,
};
use dataplane::{Burst, Mbuf};

use crate::BURST;

/// The sending VTEP's address.
const LOCAL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The receiving VTEP's address: the decapsulation case plays this side.
const REMOTE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

/// Bytes of every inner frame.
pub const INNER_LEN: usize = crate::TEMPLATE_BYTES;

/// The VNI every frame is sent with.
pub const VNI: u32 = 5010;

/// Which direction a [`TunnelRig`] measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunnelCase {
    /// Flow hash and encapsulation of a 64-byte inner frame.
    Encap,
    /// Outer header checks and decapsulation of a 114-byte packet.
    Decap,
}

/// One burst of frames and a prebuilt outer header; see the module docs.
pub struct TunnelRig {
    case: TunnelCase,
    outer: OuterHeader,
    burst: Burst,
    want: Want,
    /// Frames the step could not process (should stay 0).
    failed: u64,
}

impl std::fmt::Debug for TunnelRig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelRig")
            .field("case", &self.case)
            .field("failed", &self.failed)
            .finish()
    }
}

/// A 64-byte IPv4/TCP frame of flow `flow` between two stations (the
/// switch cases' frame, `write_frame`: 10.0.0.1, TCP source port
/// 1024 + `flow`, to 10.0.0.2 port 80).
pub fn inner_frame(flow: u32) -> [u8; INNER_LEN] {
    crate::write_frame(
        MacAddr([0x02, 0, 0, 0, 0, 0x02]),
        MacAddr([0x02, 0, 0, 0, 0, 0x01]),
        None,
        flow,
    )
}

impl TunnelRig {
    /// Builds the burst: inner frames of `flows` distinct TCP flows (at least
    /// one), encapsulated once for [`TunnelCase::Decap`].
    ///
    /// # Panics
    /// If the pool cannot be created or a frame not built.
    pub fn new(case: TunnelCase, flows: u32) -> TunnelRig {
        let pool = crate::rig_pool("tunnel");
        let outer = OuterHeader::new(
            TunnelKind::Vxlan,
            MacAddr([0x02, 0, 0, 0, 0x0a, 0x01]),
            MacAddr([0x02, 0, 0, 0, 0x0a, 0x02]),
            LOCAL,
            REMOTE,
            TunnelKind::Vxlan.default_port(),
        );
        let flows = flows.max(1);
        let burst = (0..BURST as u32)
            .map(|i| {
                let inner = inner_frame(i % flows);
                let mut m = pool.alloc().expect("benchmark pool sized for a burst");
                m.extend_from_slice(&inner).expect("inner frame fits");
                if case == TunnelCase::Decap {
                    outer
                        .encap(&mut m, VNI, source_port(&inner))
                        .expect("headroom for the outer header");
                }
                m
            })
            .collect();
        TunnelRig {
            case,
            outer,
            burst,
            want: Want {
                dst_port: TunnelKind::Vxlan.default_port(),
                local: REMOTE,
                vni: VNI,
            },
            failed: 0,
        }
    }

    /// Frames the steps could not process (0 unless the rig is broken).
    pub fn failed(&self) -> u64 {
        self.failed
    }

    /// Runs the case on every frame of the burst, then [`unwind`]s the
    /// burst. Returns the number of frames.
    #[inline]
    pub fn step(&mut self) -> usize {
        // One loop per case, as a port runs one direction per burst.
        self.failed += match self.case {
            TunnelCase::Encap => encap_burst(&self.outer, &mut self.burst),
            TunnelCase::Decap => decap_burst(&self.want, &mut self.burst),
        };
        unwind(self.case, &mut self.burst);
        self.burst.len()
    }
}

/// Encapsulates every frame of `burst` in place; returns the frames
/// refused. Out of line, so that each case's loop is compiled (and its
/// registers allocated) as a port's would be, not together with the other.
#[inline(never)]
fn encap_burst(outer: &OuterHeader, burst: &mut Burst) -> u64 {
    let mut failed = 0;
    for m in burst.iter_mut() {
        let port = source_port(m.data());
        if outer.encap(m, VNI, port).is_err() {
            failed += 1;
        }
    }
    failed
}

/// Decapsulates every packet of `burst` in place; returns the packets
/// refused. Out of line, as [`encap_burst`].
#[inline(never)]
fn decap_burst(want: &Want, burst: &mut Burst) -> u64 {
    let mut failed = 0;
    for m in burst.iter_mut() {
        if decap(m, want).is_none() {
            failed += 1;
        }
    }
    failed
}

/// What a tunnel port compares a received packet with before the table
/// lookups: its UDP port, its own address (the outer destination) and, here,
/// the one VNI the rig sends (standing in for the VNI table).
#[derive(Clone, Copy, Debug)]
struct Want {
    dst_port: u16,
    local: Ipv4Addr,
    vni: u32,
}

/// Decapsulates `m` in place as a tunnel port does: the outer checks, the
/// tunnel's UDP port and local address, the VXLAN header, then the Ethernet
/// padding and the outer headers cut off. Returns the bytes stripped from
/// the front, `None` if the packet is refused or not for `want`.
#[inline]
fn decap(m: &mut Mbuf, want: &Want) -> Option<usize> {
    let o = parse_outer(m.data()).ok()?;
    if o.dst_port != want.dst_port || o.dst_ip != want.local {
        return None;
    }
    let end = o.payload_offset + o.payload_len;
    let (vni, hl) = vxlan_vni(m.data().get(o.payload_offset..end)?).ok()?;
    if vni != want.vni {
        return None;
    }
    // Ethernet padding after the datagram (none for these packets).
    m.trim(m.len() - end);
    let strip = o.payload_offset + hl;
    m.adj(strip);
    Some(strip)
}

/// Benchmark plumbing, not tunnel work: undoes one step on the burst so that
/// the buffers are reused. After encapsulation strips the outer header
/// again; after decapsulation puts it (still in the headroom) back in front.
/// A frame the step refused is left as it is. Once per burst and out of line
/// so that `callgrind.sh` can subtract it.
#[inline(never)]
pub fn unwind(case: TunnelCase, burst: &mut Burst) {
    for m in burst.iter_mut() {
        match case {
            TunnelCase::Encap => m.adj(m.len() - INNER_LEN),
            TunnelCase::Decap => {
                let _ = m.prepend(OUTER_LEN + INNER_LEN - m.len());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_leave_the_burst_as_built() {
        for case in [TunnelCase::Encap, TunnelCase::Decap] {
            let mut rig = TunnelRig::new(case, 4);
            let before: Vec<Vec<u8>> = rig.burst.iter().map(|m| m.data().to_vec()).collect();
            let want = if case == TunnelCase::Encap {
                INNER_LEN
            } else {
                OUTER_LEN + INNER_LEN
            };
            assert!(before.iter().all(|f| f.len() == want));
            for _ in 0..3 {
                assert_eq!(rig.step(), BURST);
            }
            let after: Vec<Vec<u8>> = rig.burst.iter().map(|m| m.data().to_vec()).collect();
            assert_eq!(before, after, "{case:?}");
            assert_eq!(rig.failed(), 0);
        }
    }

    #[test]
    fn decap_strips_to_the_inner_frame() {
        let mut rig = TunnelRig::new(TunnelCase::Decap, 1);
        let want = rig.want;
        let m = &mut rig.burst[0];
        assert_eq!(
            decap(
                m,
                &Want {
                    vni: VNI + 1,
                    ..want
                }
            ),
            None
        );
        assert_eq!(
            decap(
                m,
                &Want {
                    dst_port: 6081,
                    ..want
                }
            ),
            None
        );
        assert_eq!(
            decap(
                m,
                &Want {
                    local: LOCAL,
                    ..want
                }
            ),
            None
        );
        assert_eq!(decap(m, &want), Some(OUTER_LEN));
        assert_eq!(m.data(), &inner_frame(0)[..]);
        // Refused: the inner frame is not a VXLAN packet.
        assert_eq!(decap(m, &want), None);
    }
}
