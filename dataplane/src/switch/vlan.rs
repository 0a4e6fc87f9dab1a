//! VLAN port modes: which VLAN a received frame belongs to, and how a frame
//! of a VLAN leaves a port (untagged, tagged, or not at all).
//!
//! Layer: switch. Pure decisions over VLAN ids; the frame edits that follow
//! from them (pushing and popping tags) are in [`super::pipeline`].
//!
//! The meaning follows Open vSwitch's `Port` table (`tag`, `trunks`,
//! `vlan_mode`):
//!
//! | mode | untagged frame in | tagged frame in (VID v ≠ 0) | frame of VLAN v out |
//! |---|---|---|---|
//! | access (`tag` T) | VLAN T | dropped | untagged if v = T, else not sent |
//! | trunk (`trunks` S, empty = all) | VLAN 0 if 0 is trunked (S empty), else dropped | VLAN v if v ∈ S, else dropped | tagged if v ∈ S (untagged for VLAN 0) |
//! | native-tagged (T, S) | VLAN T | VLAN v if v ∈ S ∪ {T} | tagged if v ∈ S ∪ {T} |
//! | native-untagged (T, S) | VLAN T | VLAN v if v ∈ S ∪ {T} | untagged if v = T, tagged if v ∈ S |
//!
//! A port with no VLAN settings is a trunk of every VLAN, so a bridge whose
//! ports have none switches frames exactly as a plain learning bridge does,
//! keyed on the frame's own tag. A priority tag (VID 0) counts as untagged.

use crate::ids::VlanId;
use crate::mbuf::{Mbuf, NoRoom};
use crate::wire::ethertype;

/// Number of 802.1Q VLAN ids.
pub const VLAN_IDS: usize = 4096;

/// Highest VLAN id a port may be configured with (4095 is reserved, 0 means
/// untagged).
pub const MAX_VID: u16 = 4094;

/// How a port treats VLAN tags (OVS's `vlan_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VlanMode {
    /// One VLAN (`tag`), untagged on the wire.
    Access,
    /// The VLANs in `trunks` (all if empty), tagged on the wire.
    Trunk,
    /// A trunk whose untagged frames belong to `tag`; frames of `tag` leave
    /// tagged.
    NativeTagged,
    /// A trunk whose untagged frames belong to `tag`; frames of `tag` leave
    /// untagged.
    NativeUntagged,
}

impl VlanMode {
    /// Every mode, for parsers and help texts.
    pub const ALL: [VlanMode; 4] = [
        VlanMode::Access,
        VlanMode::Trunk,
        VlanMode::NativeTagged,
        VlanMode::NativeUntagged,
    ];

    /// The configuration name (`access`, `trunk`, `native-tagged`,
    /// `native-untagged`).
    pub fn name(self) -> &'static str {
        match self {
            VlanMode::Access => "access",
            VlanMode::Trunk => "trunk",
            VlanMode::NativeTagged => "native-tagged",
            VlanMode::NativeUntagged => "native-untagged",
        }
    }

    /// The mode named `name`, if any.
    pub fn from_name(name: &str) -> Option<VlanMode> {
        VlanMode::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// A set of VLAN ids, one bit each. Held inline (512 bytes), so that a
/// membership test on the packet path is one load from the port's settings.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct VlanSet([u64; VLAN_IDS / 64]);

impl VlanSet {
    /// No VLAN.
    pub fn empty() -> VlanSet {
        VlanSet([0; VLAN_IDS / 64])
    }

    /// Every VLAN id, 0 (untagged) included.
    pub fn all() -> VlanSet {
        VlanSet([u64::MAX; VLAN_IDS / 64])
    }

    /// Adds `vid` (only its low 12 bits count).
    pub fn insert(&mut self, vid: u16) {
        let v = usize::from(vid) % VLAN_IDS;
        self.0[v / 64] |= 1 << (v % 64);
    }

    /// Whether `vid` is in the set.
    #[inline]
    pub fn contains(&self, vid: u16) -> bool {
        let v = usize::from(vid) % VLAN_IDS;
        self.0[v / 64] & (1 << (v % 64)) != 0
    }

    /// The ids in the set, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0..VLAN_IDS as u16).filter(|&v| self.contains(v))
    }
}

impl std::fmt::Debug for VlanSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// A port's VLAN settings as the packet path uses them: built once from the
/// mode, the tag and the trunks ([`PortVlan::new`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortVlan {
    mode: VlanMode,
    /// VLANs whose frames the port takes in and sends out.
    members: VlanSet,
    /// The VLAN an untagged (or priority-tagged) frame received belongs to.
    native: u16,
    /// Tagged frames (VID ≠ 0) are taken in (every mode but access).
    takes_tagged: bool,
    /// The VLAN, besides 0, whose frames leave untagged; 0 if none.
    untagged_out: u16,
}

/// What a port does with a frame of some VLAN on its way out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Egress {
    /// The port is no member of the VLAN: the frame does not leave here.
    Filtered,
    /// The frame leaves without a tag.
    Untagged,
    /// The frame leaves tagged with its VLAN.
    Tagged,
}

/// Why a port's VLAN settings are refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VlanError {
    /// A tag or trunk outside `1..=4094`.
    #[error("VLAN id {vid} is out of range (1..={MAX_VID})")]
    OutOfRange {
        /// The id given.
        vid: u16,
    },
    /// Access and native modes need `tag`.
    #[error("vlan_mode {} needs a tag", mode.name())]
    NeedsTag {
        /// The mode.
        mode: VlanMode,
    },
    /// An access port carries one VLAN: `trunks` makes no sense on it.
    #[error("an access port carries only its tag: trunks is not allowed with vlan_mode access")]
    AccessWithTrunks,
    /// A trunk's untagged frames are VLAN 0: a tag makes no sense on it.
    #[error("a trunk port has no native VLAN: tag is not allowed with vlan_mode trunk (use native-tagged or native-untagged)")]
    TrunkWithTag,
}

impl PortVlan {
    /// The settings of a port with none: a trunk of every VLAN.
    pub fn trunk_all() -> PortVlan {
        PortVlan {
            mode: VlanMode::Trunk,
            members: VlanSet::all(),
            native: 0,
            takes_tagged: true,
            untagged_out: 0,
        }
    }

    /// Builds the settings from OVS's three keys. `mode` `None` means access
    /// if `tag` is set, trunk otherwise (as in OVS); an empty `trunks` means
    /// every VLAN.
    ///
    /// # Errors
    ///
    /// Ids outside `1..=4094`, a native or access mode without a tag, an
    /// access port with trunks, a trunk with a tag.
    pub fn new(
        mode: Option<VlanMode>,
        tag: Option<u16>,
        trunks: &[u16],
    ) -> Result<PortVlan, VlanError> {
        for &vid in tag.iter().chain(trunks) {
            if vid == 0 || vid > MAX_VID {
                return Err(VlanError::OutOfRange { vid });
            }
        }
        let mode = mode.unwrap_or(if tag.is_some() {
            VlanMode::Access
        } else {
            VlanMode::Trunk
        });
        let trunked = || {
            if trunks.is_empty() {
                VlanSet::all()
            } else {
                let mut s = VlanSet::empty();
                trunks.iter().for_each(|&v| s.insert(v));
                s
            }
        };
        Ok(match (mode, tag) {
            (VlanMode::Access, Some(t)) => {
                if !trunks.is_empty() {
                    return Err(VlanError::AccessWithTrunks);
                }
                let mut members = VlanSet::empty();
                members.insert(t);
                PortVlan {
                    mode,
                    members,
                    native: t,
                    takes_tagged: false,
                    untagged_out: t,
                }
            }
            (VlanMode::Trunk, None) => PortVlan {
                mode,
                members: trunked(),
                native: 0,
                takes_tagged: true,
                untagged_out: 0,
            },
            (VlanMode::Trunk, Some(_)) => return Err(VlanError::TrunkWithTag),
            (VlanMode::NativeTagged | VlanMode::NativeUntagged, Some(t)) => {
                let mut members = trunked();
                members.insert(t);
                PortVlan {
                    mode,
                    members,
                    native: t,
                    takes_tagged: true,
                    untagged_out: if mode == VlanMode::NativeUntagged {
                        t
                    } else {
                        0
                    },
                }
            }
            (mode, None) => return Err(VlanError::NeedsTag { mode }),
        })
    }

    /// The mode.
    pub fn mode(&self) -> VlanMode {
        self.mode
    }

    /// Whether these are the settings of a port with none
    /// ([`PortVlan::trunk_all`]).
    pub fn is_trunk_all(&self) -> bool {
        *self == PortVlan::trunk_all()
    }

    /// The VLAN a frame received with outer VLAN id `tagged` belongs to
    /// (`None`: untagged or priority-tagged), or `None` if the port does not
    /// take it.
    #[inline]
    pub fn ingress(&self, tagged: Option<VlanId>) -> Option<VlanId> {
        let vid = match tagged {
            Some(VlanId(v)) if v != 0 => {
                if !self.takes_tagged {
                    return None;
                }
                v
            }
            _ => self.native,
        };
        self.members.contains(vid).then_some(VlanId(vid))
    }

    /// How a frame of `vlan` leaves the port.
    #[inline]
    pub fn egress(&self, vlan: VlanId) -> Egress {
        let v = vlan.0;
        if !self.members.contains(v) {
            Egress::Filtered
        } else if v == 0 || v == self.untagged_out {
            Egress::Untagged
        } else {
            Egress::Tagged
        }
    }

    /// Whether the port carries `vlan` at all.
    pub fn is_member(&self, vlan: VlanId) -> bool {
        self.members.contains(vlan.0)
    }
}

/// Removes the 802.1Q tag at offset 12 of a tagged frame: the addresses
/// move 4 bytes on, over the tag, and the data then starts 4 bytes later.
#[inline]
pub(crate) fn pop_tag(m: &mut Mbuf) {
    m.data_mut().copy_within(0..12, 4);
    m.adj(4);
}

/// Inserts an 802.1Q tag of `vlan` (PCP and DEI 0) at offset 12.
///
/// # Errors
///
/// [`NoRoom`] if the buffer has no 4 bytes of headroom; the frame is
/// unchanged then.
#[inline]
pub(crate) fn push_tag(m: &mut Mbuf, vlan: VlanId) -> Result<(), NoRoom> {
    m.prepend(4)?;
    let d = m.data_mut();
    d.copy_within(4..16, 0);
    d[12..14].copy_from_slice(&ethertype::VLAN.to_be_bytes());
    d[14..16].copy_from_slice(&vlan.0.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: u16) -> Option<VlanId> {
        Some(VlanId(n))
    }

    #[test]
    fn access_port_takes_untagged_into_its_vlan_and_refuses_tags() {
        let p = PortVlan::new(None, Some(10), &[]).unwrap();
        assert_eq!(p.mode(), VlanMode::Access);
        assert_eq!(p.ingress(None), v(10));
        assert_eq!(p.ingress(v(0)), v(10), "a priority tag is untagged");
        assert_eq!(p.ingress(v(10)), None);
        assert_eq!(p.ingress(v(20)), None);
        assert_eq!(p.egress(VlanId(10)), Egress::Untagged);
        assert_eq!(p.egress(VlanId(20)), Egress::Filtered);
        assert_eq!(p.egress(VlanId(0)), Egress::Filtered);
    }

    #[test]
    fn trunk_port_carries_its_trunks_tagged() {
        let p = PortVlan::new(Some(VlanMode::Trunk), None, &[10, 20]).unwrap();
        assert_eq!(p.ingress(v(10)), v(10));
        assert_eq!(p.ingress(v(20)), v(20));
        assert_eq!(p.ingress(v(30)), None);
        assert_eq!(p.ingress(None), None, "VLAN 0 is not trunked");
        assert_eq!(p.egress(VlanId(10)), Egress::Tagged);
        assert_eq!(p.egress(VlanId(30)), Egress::Filtered);
        assert_eq!(p.egress(VlanId(0)), Egress::Filtered);
    }

    #[test]
    fn a_port_without_settings_trunks_everything_and_untagged_is_vlan_0() {
        let p = PortVlan::new(None, None, &[]).unwrap();
        assert!(p.is_trunk_all());
        assert_eq!(p.ingress(None), v(0));
        assert_eq!(p.ingress(v(4094)), v(4094));
        assert_eq!(p.egress(VlanId(0)), Egress::Untagged);
        assert_eq!(p.egress(VlanId(7)), Egress::Tagged);
    }

    #[test]
    fn native_modes_put_untagged_frames_in_the_tag_vlan() {
        let t = PortVlan::new(Some(VlanMode::NativeTagged), Some(5), &[10]).unwrap();
        let u = PortVlan::new(Some(VlanMode::NativeUntagged), Some(5), &[10]).unwrap();
        for p in [&t, &u] {
            assert_eq!(p.ingress(None), v(5));
            assert_eq!(p.ingress(v(5)), v(5), "the native VLAN is trunked too");
            assert_eq!(p.ingress(v(10)), v(10));
            assert_eq!(p.ingress(v(11)), None);
            assert_eq!(p.egress(VlanId(10)), Egress::Tagged);
            assert_eq!(p.egress(VlanId(11)), Egress::Filtered);
        }
        assert_eq!(t.egress(VlanId(5)), Egress::Tagged);
        assert_eq!(u.egress(VlanId(5)), Egress::Untagged);
    }

    #[test]
    fn bad_settings_are_refused_with_their_reason() {
        assert_eq!(
            PortVlan::new(None, Some(0), &[]),
            Err(VlanError::OutOfRange { vid: 0 })
        );
        assert_eq!(
            PortVlan::new(None, None, &[4095]),
            Err(VlanError::OutOfRange { vid: 4095 })
        );
        assert_eq!(
            PortVlan::new(Some(VlanMode::Access), None, &[]),
            Err(VlanError::NeedsTag {
                mode: VlanMode::Access
            })
        );
        assert_eq!(
            PortVlan::new(Some(VlanMode::NativeTagged), None, &[1]),
            Err(VlanError::NeedsTag {
                mode: VlanMode::NativeTagged
            })
        );
        assert_eq!(
            PortVlan::new(Some(VlanMode::Access), Some(3), &[4]),
            Err(VlanError::AccessWithTrunks)
        );
        assert_eq!(
            PortVlan::new(Some(VlanMode::Trunk), Some(3), &[]),
            Err(VlanError::TrunkWithTag)
        );
        for m in VlanMode::ALL {
            assert_eq!(VlanMode::from_name(m.name()), Some(m));
        }
        assert_eq!(VlanMode::from_name("hybrid"), None);
    }
}
