//! Fuzz targets for weir's parsers of untrusted input. The target bodies live
//! in [`targets`] so the libFuzzer binaries (`fuzz_targets/`), the
//! deterministic replay (`src/bin/replay.rs`) and `vhost-user`'s own test suite
//! (`vhost-user/tests/fuzz_replay.rs`) run the same code.
#![forbid(unsafe_code)]

pub mod targets;
