//! libFuzzer target: arbitrary bytes as a vhost-user frontend message (header,
//! payload, attached fd kinds) through weir's own checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir_fuzz::targets::vhost_msg(data));
