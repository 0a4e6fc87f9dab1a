//! The `weir` daemon and CLI: configuration, control API, control socket and
//! command line. Top layer: depends on `dataplane` and `pmd`, never the
//! other way round, and is never on the packet path.
//!
//! Modules:
//! - [`config`]: the TOML configuration file.
//! - [`api`]: control requests, responses and the views they carry.
//! - [`control`]: the control socket server and client.
//! - [`cli`]: command-line arguments and output.
//! - [`daemon`]: `weir run`.
//! - [`demo`]: `weir demo`.
//! - [`bench`]: `weir bench`.
//! - [`nic`]: `weir devbind` and `weir sriov` (sysfs, vfio-pci, SR-IOV).
//! - [`doctor`]: `weir doctor`.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod affinity;
pub mod api;
pub mod bench;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod demo;
pub mod doctor;
pub mod netns;
pub mod nic;
pub mod ports;
