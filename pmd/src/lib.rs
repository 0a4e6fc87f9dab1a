//! weir's port drivers: every [`dataplane::Port`] implementation that is not a VM
//! vNIC.
//!
//! Layer: ports. Depends on `dataplane` (for `Port`, `Mbuf`, `Mempool` and the
//! counters) and never on `vhost-user` or the daemon. Driver code is on the packet
//! path and follows its rules: no heap allocation, locks or logging per burst.
//!
//! Unsafe code is denied at the crate root; only the modules at a hardware or OS
//! boundary may allow it, each with `// SAFETY:` notes.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod memport;
pub mod pcap;
