//! weir's view of the host it runs on: sysfs under an injectable root, PCI
//! functions and their binding to `vfio-pci` (`weir devbind`), SR-IOV virtual
//! functions (`weir sriov`), CPU affinity of weir's own control threads and of
//! the host's (`weir bench --isolate`), the checks of `weir doctor`, and
//! readiness notifications to systemd.
//!
//! Control plane only, never on the packet path. Everything that reads sysfs
//! takes its root as a parameter and every external command goes through a
//! [`nic::Runner`], so the tests run against fake trees and record argv
//! instead of changing the host.
#![deny(unsafe_code)]

pub mod affinity;
pub mod doctor;
pub mod nic;
pub mod notify;
