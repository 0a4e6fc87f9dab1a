//! libFuzzer target: arbitrary bytes as guest memory, descriptor table and
//! available ring; runs the split ring's receive and transmit paths.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir_fuzz::targets::vring_chain(data));
