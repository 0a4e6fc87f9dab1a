//! libFuzzer target: a frame through the tunnel's outer header parsing as
//! received, then encapsulated, decapsulated and damaged.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir_fuzz::targets::tunnel_frame(data));
