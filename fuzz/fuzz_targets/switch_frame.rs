//! libFuzzer target: frames through the wire parsers and a bridge's
//! forwarding (learning, lookup, flooding, drops).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir_fuzz::targets::switch_frame(data));
