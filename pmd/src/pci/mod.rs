//! PCI device access shared by the VFIO drivers: config space and capability
//! walking ([`config`]) and memory-mapped BARs ([`bar`]).
//!
//! Layer: ports. Not on the packet path except the BAR accessors, which drivers
//! call for doorbells (one write per burst). Only `bar` contains `unsafe`.

pub mod bar;
pub mod config;

pub use bar::{Bar, RegisterFile};
pub use config::{capabilities, ConfigSpace, PciCap};
